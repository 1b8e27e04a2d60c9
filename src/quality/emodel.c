/*
 * emodel: ITU-T G.107 arithmetic. See emodel.h. The constants below are G.107's defaults
 * (06/2015, Table 3) and G.113 Appendix I's codec values; the values derived from them (Ro,
 * Is, Idle at T = Tr = 0) are computed once from the defaults by the same equations, so
 * the code and the recommendation can be compared line by line.
 */
#include "quality/emodel.h"

#include <math.h>
#include <pthread.h>
#include <strings.h>

/* G.107 Table 3 defaults. */
#define SLR 8.0
#define RLR 2.0
#define STMR 15.0
#define LSTR 18.0
#define DS 3.0
#define TELR 65.0
#define WEPL 110.0
#define QDU 1.0
#define NC (-70.0)
#define NFOR (-64.0)
#define PS 35.0
#define PR 35.0

static double lg(double x) { return log10(x); }

/* No, (7-3) to (7-7). */
static double noise(void)
{
    double olr = SLR + RLR;
    double nos = PS - SLR - DS - 100 + 0.004 * pow(PS - olr - DS - 14, 2);
    double pre = PR + 10 * lg(1 + pow(10, (10 - LSTR) / 10));
    double nor = RLR - 121 + pre + 0.008 * pow(pre - 35, 2);
    double nfo = NFOR + RLR;
    return 10 * lg(pow(10, NC / 10) + pow(10, nos / 10) + pow(10, nor / 10) + pow(10, nfo / 10));
}

/* Is, (7-8) to (7-17), with T = 0 (no echo delay). */
static double simultaneous(double no, double ro)
{
    double olr = SLR + RLR;
    double xolr = olr + 0.2 * (64 + no - RLR);
    double iolr = 20 * (pow(1 + pow(xolr / 8, 8), 1.0 / 8) - xolr / 8);
    /* e^(-T/4) with T = 0 is 1 */
    double stmro = -10 * lg(pow(10, -STMR / 10) + pow(10, -TELR / 10));
    double ist = 12 * pow(1 + pow((stmro - 13) / 6, 8), 1.0 / 8) -
                 28 * pow(1 + pow((stmro + 1) / 19.4, 35), 1.0 / 35) -
                 13 * pow(1 + pow((stmro - 3) / 33, 13), 1.0 / 13) + 29;
    double q = 37 - 15 * lg(QDU);
    double g = 1.07 + 0.258 * q + 0.0602 * q * q;
    double y = (ro - 100) / 15 + 46 / 8.4 - g / 9;
    double z = 46.0 / 30 - g / 40;
    double iq = 15 * lg(1 + pow(10, y) + pow(10, z));
    return iolr + ist + iq;
}

/* Idle, (7-25)/(7-26), with Tr = 0. */
static double listener_echo(double ro)
{
    double rle = 10.5 * (WEPL + 7); /* (Tr + 1)^-0.25 with Tr = 0 is 1 */
    return (ro - rle) / 2 + sqrt(pow(ro - rle, 2) / 4 + 169);
}

/* Ro - Is - Idle: the part of R that does not depend on delay or loss (93.2062), computed
 * once (writer threads rate streams at the same time). */
static double base;
static pthread_once_t base_once = PTHREAD_ONCE_INIT;

static void compute_base(void)
{
    double no = noise();
    double ro = 15 - 1.5 * (SLR + no);
    base = ro - simultaneous(no, ro) - listener_echo(ro);
}

static double base_rating(void)
{
    pthread_once(&base_once, compute_base);
    return base;
}

double kh_emodel_idd(double ta_ms)
{
    if (!(ta_ms > 100))
        return 0;
    double x = lg(ta_ms / 100) / lg(2);
    return 25 * (pow(1 + pow(x, 6), 1.0 / 6) - 3 * pow(1 + pow(x / 3, 6), 1.0 / 6) + 2);
}

double kh_emodel_ie_eff(const struct kh_emodel_codec *c, double ppl, double burst_r)
{
    if (!(ppl > 0))
        return c->ie;
    if (ppl > 100)
        ppl = 100;
    return c->ie + (95 - c->ie) * ppl / (ppl / burst_r + c->bpl);
}

double kh_emodel_r(const struct kh_emodel_codec *c, double ta_ms, double ppl)
{
    return base_rating() - kh_emodel_idd(ta_ms) - kh_emodel_ie_eff(c, ppl, 1);
}

double kh_emodel_mos(double r)
{
    if (!(r > 0))
        return 1;
    if (r >= 100)
        return 4.5;
    double mos = 1 + 0.035 * r + r * (r - 60) * (100 - r) * 7e-6;
    return mos < 1 ? 1 : mos; /* the polynomial dips below 1 just above R = 0 */
}

double kh_emodel_mouth_to_ear(const struct kh_emodel_codec *c, double rtt_ms,
                              double jitter_buffer_ms)
{
    double d = c->ptime_ms + c->lookahead_ms;
    if (rtt_ms > 0)
        d += rtt_ms / 2;
    if (jitter_buffer_ms > 0)
        d += jitter_buffer_ms;
    return d;
}

/* G.711 (PCMU, PCMA) with the G.711 Appendix I concealment browsers use: G.113 Appendix I,
 * Ie 0, Bpl 25.1. Opus has no ITU-T value; on this narrowband scale it is rated as G.711
 * with concealment (its own concealment is at least as good; measured values exist only on
 * the wideband scales, Alahmadi et al. 2021), plus its 6.5 ms look-ahead (libopus
 * OPUS_GET_LOOKAHEAD, VOIP mode). WebRTC sends 20 ms packets. */
static const struct kh_emodel_codec codecs[] = {
    {"opus", 0, 25.1, 6.5, 20},
    {"pcmu", 0, 25.1, 0, 20},
    {"pcma", 0, 25.1, 0, 20},
};

const struct kh_emodel_codec *kh_emodel_codec(const char *mime_type)
{
    const char *sub = mime_type ? mime_type : "";
    if (strncasecmp(sub, "audio/", 6) == 0)
        sub += 6;
    for (size_t i = 0; i < sizeof(codecs) / sizeof(codecs[0]); i++)
        if (strcasecmp(sub, codecs[i].name) == 0)
            return &codecs[i];
    return &codecs[0];
}
