/*
 * interval: one stream's metrics over one interval. See interval.h.
 */
#include "quality/interval.h"

#include <math.h>

#include "quality/emodel.h"

/* b - a for a counter: NAN when either is unknown or it went down (a counter reset). */
static double delta(double a, double b)
{
    if (isnan(a) || isnan(b) || b < a)
        return NAN;
    return b - a;
}

static double ratio(double num, double den, double scale)
{
    return den > 0 && !isnan(num) ? scale * num / den : NAN;
}

static double ms(double s) { return isnan(s) ? NAN : 1000 * s; }

/* Lost, and discarded as too late, of the packets expected. packetsLost may go down (a
 * duplicate or a late packet after it was counted lost): that is no loss, not a reset. */
static void loss(const struct kh_q_stream *p, const struct kh_q_stream *c,
                 struct kh_q_interval *o)
{
    double lost, base;
    if (c->dir == KH_Q_IN) {
        double received = p ? delta(p->packets, c->packets) : c->packets;
        lost = p ? c->packets_lost - p->packets_lost : c->packets_lost;
        double late = p ? delta(p->packets_discarded, c->packets_discarded) : c->packets_discarded;
        if (isnan(received) || isnan(lost))
            return;
        lost = lost > 0 ? lost : 0;
        base = received + lost;          /* late packets were received: they are in it */
        lost += late > 0 ? late : 0;
    } else {
        /* The remote's counters move only when an RTCP receiver report arrives (every few
         * seconds): the loss is over the time between the two reports, against what was
         * sent in that time (the interval's sending, scaled to it). No new report in the
         * interval: nothing is known, which is not "no loss". */
        double sent = p ? delta(p->packets, c->packets) : c->packets;
        lost = p ? c->remote_lost - p->remote_lost : c->remote_lost;
        if (p) {
            double covered = c->remote_ts_ms - p->remote_ts_ms, dt = c->ts_ms - p->ts_ms;
            if (!(covered > 0) || !(dt > 0))
                return;
            sent = sent * covered / dt;
        }
        if (isnan(sent) || isnan(lost))
            return;
        lost = lost > 0 ? lost : 0;
        base = sent;
    }
    o->expected_packets = base;
    o->loss_percent = base > 0 ? 100 * (lost < base ? lost : base) / base : NAN;
}

/* Shares of the interval in each quality limitation (outbound video). */
static void limitation(const struct kh_q_stream *p, const struct kh_q_stream *c,
                       struct kh_q_interval *o)
{
    double bw = p ? delta(p->ql_bandwidth_s, c->ql_bandwidth_s) : c->ql_bandwidth_s;
    double cpu = p ? delta(p->ql_cpu_s, c->ql_cpu_s) : c->ql_cpu_s;
    double other = p ? delta(p->ql_other_s, c->ql_other_s) : c->ql_other_s;
    double none = p ? delta(p->ql_none_s, c->ql_none_s) : c->ql_none_s;
    double total = (isnan(bw) ? 0 : bw) + (isnan(cpu) ? 0 : cpu) + (isnan(other) ? 0 : other) +
                   (isnan(none) ? 0 : none);
    o->limit_bandwidth = ratio(bw, total, 1);
    o->limit_cpu = ratio(cpu, total, 1);
    o->limit_other = ratio(other, total, 1);
}

/* Values that two samples give: rates over the client's elapsed time. */
static void rates(const struct kh_q_stream *p, const struct kh_q_stream *c,
                  struct kh_q_interval *o)
{
    double dt = (c->ts_ms - p->ts_ms) / 1000;
    o->seconds = dt > 0 ? dt : NAN;
    o->bitrate = ratio(delta(p->bytes, c->bytes), o->seconds, 8);
    o->packet_rate = ratio(delta(p->packets, c->packets), o->seconds, 1);
    double frames = delta(p->frames, c->frames);
    o->fps = ratio(frames, o->seconds, 1);
    o->jitter_buffer_ms = ratio(delta(p->jb_delay, c->jb_delay),
                                delta(p->jb_emitted, c->jb_emitted), 1000);
    o->concealment_percent = ratio(delta(p->concealed, c->concealed),
                                   delta(p->samples, c->samples), 100);
    o->codec_ms_per_frame = ratio(delta(p->codec_s, c->codec_s), frames, 1000);
    o->freezes = delta(p->freezes, c->freezes);
    o->freeze_seconds = delta(p->freeze_s, c->freeze_s);
    o->pauses = delta(p->pauses, c->pauses);
    o->pause_seconds = delta(p->pause_s, c->pause_s);
}

/* Values one sample gives on its own: since-start averages. */
static void averages(const struct kh_q_stream *c, struct kh_q_interval *o)
{
    o->since_start = true;
    o->fps = c->fps; /* the browser's own recent rate */
    o->jitter_buffer_ms = ratio(c->jb_delay, c->jb_emitted, 1000);
    o->concealment_percent = ratio(c->concealed, c->samples, 100);
    o->codec_ms_per_frame = ratio(c->codec_s, c->frames, 1000);
    o->freezes = c->freezes;
    o->freeze_seconds = c->freeze_s;
    o->pauses = c->pauses;
    o->pause_seconds = c->pause_s;
}

static void transport_rates(const struct kh_q_transport *tp, const struct kh_q_transport *t,
                            struct kh_q_interval *o)
{
    if (t == NULL)
        return;
    o->available_bitrate = t->available_outgoing_bitrate;
    if (tp && tp->present && t->present)
        o->transport_send_bitrate =
            ratio(delta(tp->bytes_sent, t->bytes_sent), (t->ts_ms - tp->ts_ms) / 1000, 8);
    if (isnan(o->rtt_ms))
        o->rtt_ms = ms(t->pair_rtt_s);
}

/* Audio: the G.107 MOS of this direction. Inbound, the receiver's own jitter buffer; outbound,
 * the remote's is unknown and taken as twice the jitter it reports. */
static void mos(const struct kh_q_stream *c, struct kh_q_interval *o)
{
    if (c->kind != KH_Q_AUDIO || isnan(o->loss_percent))
        return;
    char mime[32] = "";
    if (c->mime_type.p && c->mime_type.len < sizeof(mime)) {
        for (uint32_t i = 0; i < c->mime_type.len; i++)
            mime[i] = c->mime_type.p[i];
        mime[c->mime_type.len] = '\0';
    }
    const struct kh_emodel_codec *codec = kh_emodel_codec(mime);
    double jb = c->dir == KH_Q_IN ? o->jitter_buffer_ms : 2 * o->jitter_ms;
    double ta = kh_emodel_mouth_to_ear(codec, o->rtt_ms, jb);
    o->r_factor = kh_emodel_r(codec, ta, o->loss_percent);
    o->mos = kh_emodel_mos(o->r_factor);
}

void kh_q_interval(const struct kh_q_stream *prev, const struct kh_q_stream *cur,
                   const struct kh_q_transport *tr_prev, const struct kh_q_transport *tr,
                   struct kh_q_interval *o)
{
    *o = (struct kh_q_interval){
        .seconds = NAN, .bitrate = NAN, .packet_rate = NAN, .loss_percent = NAN,
        .expected_packets = NAN, .jitter_buffer_ms = NAN, .concealment_percent = NAN,
        .fps = NAN, .freezes = NAN, .freeze_seconds = NAN, .pauses = NAN,
        .pause_seconds = NAN, .codec_ms_per_frame = NAN, .limit_bandwidth = NAN,
        .limit_cpu = NAN, .limit_other = NAN, .available_bitrate = NAN,
        .transport_send_bitrate = NAN, .r_factor = NAN, .mos = NAN};
    o->jitter_ms = ms(cur->jitter_s);
    o->rtt_ms = ms(cur->rtt_s);
    o->width = cur->width;
    o->height = cur->height;
    o->source_fps = cur->source_fps;
    o->source_width = cur->source_width;
    o->source_height = cur->source_height;
    if (prev && !(cur->ts_ms > prev->ts_ms))
        prev = NULL; /* the same sample again, or an older one: nothing to subtract */
    if (prev)
        rates(prev, cur, o);
    else
        averages(cur, o);
    loss(prev, cur, o);
    limitation(prev, cur, o);
    transport_rates(prev ? tr_prev : NULL, tr, o);
    mos(cur, o);
}
