/*
 * Unit tests of src/quality/assess.c on the real impaired fixtures, each call's reports
 * chained as the pipeline chains them: a report's quality rows are read back with
 * kh_q_prev_read and become the next report's previous. A first report is rated since its
 * streams began; later ones per interval; the clean call has no bad issue and a good MOS,
 * the lossy one a loss warning on the receiver and a lower MOS; a span keeps the start it
 * began with while the issue lasts; the state (runs, span starts, best height) survives the
 * round trip; a negative round-trip time is no value; a previous report that is not older is
 * not used; and a full arena leaves the report as it was.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kh_test.h"
#include "quality/assess.h"
#include "sora/envelope.h"
#include "sora/schema.h"

static struct kh_q_thresholds th;
static struct kh_q_work *work;
static struct kh_q_prev *prev;

static int setup(void **state)
{
    (void)state;
    assert_int_equal(kh_schema_init(), 0);
    assert_int_equal(kh_q_sample_init(), 0);
    assert_int_equal(kh_q_assess_init(), 0);
    kh_q_thresholds_default(&th);
    work = calloc(1, sizeof(*work));
    prev = calloc(1, sizeof(*prev));
    return work && prev ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    free(work);
    free(prev);
    kh_schema_cleanup();
    return 0;
}

/* The report of fixture <name>-tNN.json, its envelope timestamp NN seconds into the call. */
static struct kh_report *fixture(const char *name, int t)
{
    char path[512], when[64];
    snprintf(path, sizeof(path), "%s/%s-t%02d.json", KH_IMPAIRED_DIR, name, t);
    char *stats = kht_read_file(path, NULL);
    snprintf(when, sizeof(when), "\"2026-12-01T10:00:%02d.000Z\"", t);
    struct kh_report *r = kht_report(stats, "timestamp", when);
    free(stats);
    return r;
}

#define NSNAP 18

/* Every report of a call, assessed in order, each after the one before. */
struct call {
    struct kh_report *r[NSNAP];
};

static void assess_call(const char *name, struct call *c)
{
    for (int i = 0; i < NSNAP; i++) {
        c->r[i] = fixture(name, 2 * (i + 1));
        const struct kh_q_prev *p = NULL;
        if (i > 0) {
            kh_q_prev_read(c->r[i - 1]->rows, c->r[i - 1]->time_usec, prev);
            p = prev;
        }
        assert_int_equal(kh_q_assess(c->r[i], p, &th, work, NULL), 0);
    }
}

static void free_call(struct call *c)
{
    for (int i = 0; i < NSNAP; i++)
        kh_report_free(c->r[i]);
}

static double real(const struct kh_row *row, const char *name)
{
    const struct kh_value *v = kht_val(row, name);
    if (v->type == KH_COL_REAL)
        return v->u.d;
    if (v->type == KH_COL_INT)
        return (double)v->u.i;
    return NAN;
}

static const char *text(const struct kh_row *row, const char *name)
{
    const struct kh_value *v = kht_val(row, name);
    return v->type == KH_COL_TEXT || v->type == KH_COL_JSON ? v->u.s : NULL;
}

static bool flag(const struct kh_row *row, const char *name)
{
    const struct kh_value *v = kht_val(row, name);
    assert_int_equal(v->type, KH_COL_BOOL);
    return v->u.b;
}

/* The quality_stream row of the report for this kind and stats type, or NULL. */
static const struct kh_row *stream(const struct kh_report *r, const char *kind,
                                   const char *type)
{
    for (const struct kh_row *row = r->rows; row; row = row->next)
        if (row->table == kh_table_quality_stream && strcmp(row->stats_type.p, type) == 0 &&
            strcmp(text(row, "kind"), kind) == 0)
            return row;
    return NULL;
}

static const struct kh_row *connection(const struct kh_report *r)
{
    for (const struct kh_row *row = r->rows; row; row = row->next)
        if (row->table == kh_table_quality_connection)
            return row;
    return NULL;
}

static void test_first_report_is_since_start(void **state)
{
    (void)state;
    struct kh_report *r = fixture("chromium-clean-receiver", 2);
    size_t rows = r->nrows;
    assert_int_equal(kh_q_assess(r, NULL, &th, work, NULL), 0);
    const struct kh_row *a = stream(r, "audio", "inbound-rtp");
    const struct kh_row *v = stream(r, "video", "inbound-rtp");
    const struct kh_row *c = connection(r);
    assert_non_null(a);
    assert_non_null(v);
    assert_non_null(c);
    assert_null(stream(r, "audio", "outbound-rtp")); /* the receiver sends nothing */
    assert_int_equal(r->nrows, rows + 3);
    assert_true(flag(a, "sinceStart"));
    assert_true(isnan(real(a, "bitrate"))); /* a rate needs two samples */
    assert_true(isnan(real(a, "seconds")));
    assert_true(real(a, "sampleBytes") > 0); /* what the next interval starts from */
    assert_true(real(a, "ssrc") > 0);
    assert_string_equal(text(a, "mimeType"), "audio/opus");
    assert_true(flag(c, "sinceStart"));
    assert_true(flag(c, "connected"));
    assert_false(flag(c, "relayTcp"));
    assert_non_null(text(c, "candidatePairId"));
    assert_int_equal(real(c, "streams"), 2);
    assert_string_equal(text(c, "browser"), "libwebrtc");
    /* the rows carry the stream's own id, type and timestamp */
    const struct kh_row *in = kht_row(r, a->stats_id.p);
    assert_int_equal(in->table, kht_table("rtc_inbound_rtp_stream_stats"));
    assert_true(a->stats_timestamp == in->stats_timestamp);
    kh_report_free(r);
}

static void test_clean_call(void **state)
{
    (void)state;
    struct call c;
    assess_call("chromium-clean-receiver", &c);
    for (int i = 1; i < NSNAP; i++) {
        const struct kh_row *a = stream(c.r[i], "audio", "inbound-rtp");
        const struct kh_row *v = stream(c.r[i], "video", "inbound-rtp");
        assert_false(flag(a, "sinceStart"));
        assert_true(fabs(real(a, "seconds") - 2) < 0.1);
        assert_true(real(a, "bitrate") > 10000);
        assert_true(real(v, "bitrate") > 10000);
        assert_true(real(a, "mos") >= 4.0);
        assert_true(real(a, "rFactor") > 80);
        assert_true(real(v, "framesPerSecond") > 0);
        assert_true(real(v, "videoScore") >= 1 && real(v, "videoScore") <= 5);
        assert_true(real(connection(c.r[i]), "severity") < KH_Q_BAD);
        assert_true(real(connection(c.r[i]), "mosMin") >= 4.0);
    }
    free_call(&c);
}

static void test_clean_sender_ramp_up_not_reported(void **state)
{
    (void)state;
    struct call c;
    assess_call("chromium-clean-sender", &c);
    for (int i = 0; i < NSNAP; i++) {
        const char *names = text(connection(c.r[i]), "issueNames");
        if (names && strstr(names, "bandwidth_limited"))
            fail_msg("t%02d: %s", 2 * (i + 1), names);
        assert_true(real(connection(c.r[i]), "severity") < KH_Q_BAD);
    }
    free_call(&c);
}

/* A loss warning on the receiving side at some interval, and a lower MOS than the clean
 * call's lowest. */
static void test_loss_call(void **state)
{
    (void)state;
    struct call clean, lossy;
    assess_call("chromium-clean-receiver", &clean);
    assess_call("chromium-loss3-receiver", &lossy);
    double clean_min = INFINITY, lossy_sum = 0, clean_sum = 0;
    int warned = 0;
    for (int i = 1; i < NSNAP; i++) {
        const struct kh_row *a = stream(lossy.r[i], "audio", "inbound-rtp");
        const char *issues = text(a, "issues");
        if (issues && strstr(issues, "\"high_loss\""))
            warned++;
        clean_min = fmin(clean_min, real(stream(clean.r[i], "audio", "inbound-rtp"), "mos"));
        lossy_sum += real(a, "mos");
        clean_sum += real(stream(clean.r[i], "audio", "inbound-rtp"), "mos");
    }
    assert_true(warned > 0);
    assert_true(lossy_sum < clean_sum);
    assert_true(lossy_sum / (NSNAP - 1) < clean_min);
    free_call(&clean);
    free_call(&lossy);
}

/* Every row of one issue's span names the same start, and the state carries it. */
static void test_span_start_carried(void **state)
{
    (void)state;
    struct call c;
    assess_call("chromium-bw-sender", &c);
    char began[64] = "";
    int rows = 0;
    for (int i = 0; i < NSNAP; i++) {
        const struct kh_row *v = stream(c.r[i], "video", "outbound-rtp");
        const char *issues = text(v, "issues");
        const char *at = issues ? strstr(issues, "\"bandwidth_limited\"") : NULL;
        if (at == NULL)
            continue;
        const char *b = strstr(at, "\"began\":\"");
        assert_non_null(b);
        char this[64];
        snprintf(this, sizeof(this), "%.27s", b + 9);
        if (rows++ == 0)
            snprintf(began, sizeof(began), "%s", this);
        else
            assert_string_equal(this, began);
        assert_non_null(strstr(text(v, "state"), "\"began.bandwidth_limited\""));
        assert_non_null(strstr(text(v, "state"), "\"run.bandwidth_limited\""));
        assert_non_null(strstr(text(connection(c.r[i]), "issueNames"), "bandwidth_limited"));
    }
    assert_true(rows >= 2); /* sustained: found, and lasting */
    /* the span began before its first row: the condition had held 10 s by then */
    assert_true(strcmp(began, "2026-12-01T10:00:00") > 0);
    free_call(&c);
}

/* kh_q_prev_read gives back what assess wrote: counters, best height and frame rate, runs
 * and span starts. */
static void test_prev_round_trip(void **state)
{
    (void)state;
    struct call c;
    assess_call("chromium-bw-sender", &c);
    const struct kh_report *last = c.r[NSNAP - 1];
    kh_q_prev_read(last->rows, last->time_usec, prev);
    assert_true(prev->present);
    assert_int_equal(prev->time_usec, last->time_usec);
    assert_int_equal(prev->nstreams, 2);
    const struct kh_q_prev_stream *video = NULL;
    for (size_t i = 0; i < prev->nstreams; i++)
        if (prev->streams[i].s.kind == KH_Q_VIDEO)
            video = &prev->streams[i];
    assert_non_null(video);
    assert_int_equal(video->s.dir, KH_Q_OUT);
    const struct kh_row *row = stream(last, "video", "outbound-rtp");
    assert_true(video->s.bytes == real(row, "sampleBytes"));
    assert_true(video->s.ts_ms == row->stats_timestamp);
    assert_true(video->st.max_height == real(row, "bestFrameHeight"));
    assert_true(video->st.run_s[KH_QI_BANDWIDTH] >= 10);
    assert_true(video->began_usec[KH_QI_BANDWIDTH] > 0);
    assert_true(video->began_usec[KH_QI_BANDWIDTH] < last->time_usec);
    assert_true(prev->tr.present);
    assert_true(prev->tr.bytes_sent > 0);
    free_call(&c);
}

/* Every occurrence of `from` in s replaced by `to` (a new string). */
static char *replace_all(const char *s, const char *from, const char *to)
{
    size_t n = 0, fl = strlen(from), tl = strlen(to);
    for (const char *p = strstr(s, from); p; p = strstr(p + fl, from))
        n++;
    char *out = malloc(strlen(s) + n * (tl > fl ? tl - fl : 0) + 1), *w = out;
    assert_non_null(out);
    for (const char *p; (p = strstr(s, from)) != NULL; s = p + fl) {
        memcpy(w, s, (size_t)(p - s));
        w += p - s;
        memcpy(w, to, tl);
        w += tl;
    }
    strcpy(w, s);
    return out;
}

/* The delay call's sender with its round-trip times as reported, then made negative: those
 * are no value (NULL), not a delay below zero, and the MOS is still rated. */
static void test_negative_round_trip_is_no_value(void **state)
{
    (void)state;
    char path[512];
    snprintf(path, sizeof(path), "%s/chromium-delay-sender-t10.json", KH_IMPAIRED_DIR);
    char *stats = kht_read_file(path, NULL);
    char *neg1 = replace_all(stats, "\"roundTripTime\": ", "\"roundTripTime\": -");
    char *neg = replace_all(neg1, "\"currentRoundTripTime\": ", "\"currentRoundTripTime\": -");
    for (int negated = 0; negated < 2; negated++) {
        struct kh_report *r = kht_report(negated ? neg : stats, "timestamp",
                                         "\"2026-12-01T10:00:10.000Z\"");
        assert_int_equal(kh_q_assess(r, NULL, &th, work, NULL), 0);
        const struct kh_row *audio = stream(r, "audio", "outbound-rtp");
        assert_non_null(audio);
        double rtt = real(audio, "roundTripTimeMs"), pair = real(connection(r),
                                                                   "roundTripTimeMs");
        if (negated) {
            assert_true(isnan(rtt) && isnan(pair));
        } else {
            assert_true(rtt > 250 && rtt < 400); /* 150 ms each way, and more */
            assert_true(pair > 250 && pair < 400);
        }
        assert_true(real(audio, "mos") >= 1 && real(audio, "mos") <= 4.5);
        kh_report_free(r);
    }
    free(stats);
    free(neg1);
    free(neg);
}

static void test_browser_told_apart(void **state)
{
    (void)state;
    struct kh_report *r = fixture("firefox-clean-sender", 2);
    assert_int_equal(kh_q_assess(r, NULL, &th, work, NULL), 0);
    assert_string_equal(text(connection(r), "browser"), "firefox");
    kh_report_free(r);
    r = kht_report(NULL, NULL, NULL); /* a transport and a codec: neither shows */
    assert_int_equal(kh_q_assess(r, NULL, &th, work, NULL), 0);
    assert_null(text(connection(r), "browser"));
    kh_report_free(r);
}

static void test_prev_not_older_is_ignored(void **state)
{
    (void)state;
    struct kh_report *a = fixture("chromium-clean-receiver", 4);
    struct kh_report *b = fixture("chromium-clean-receiver", 2);
    assert_int_equal(kh_q_assess(a, NULL, &th, work, NULL), 0);
    kh_q_prev_read(a->rows, a->time_usec, prev);
    assert_int_equal(kh_q_assess(b, prev, &th, work, NULL), 0); /* a is later than b */
    assert_true(flag(stream(b, "audio", "inbound-rtp"), "sinceStart"));
    kh_report_free(a);
    kh_report_free(b);
}

static void test_full_arena_leaves_report_alone(void **state)
{
    (void)state;
    struct kh_report *r = fixture("chromium-clean-receiver", 2);
    size_t rows = r->nrows;
    struct kh_row **tail = r->rows_tail;
    r->arena.max = r->arena.total; /* no room for another chunk */
    int rc = 0;
    /* a chunk may have room left: fill it first */
    while (kh_arena_alloc(&r->arena, 64) != NULL)
        ;
    rc = kh_q_assess(r, NULL, &th, work, NULL);
    assert_int_equal(rc, KH_ENOMEM);
    assert_int_equal(r->nrows, rows);
    assert_ptr_equal(r->rows_tail, tail);
    assert_null(*tail);
    assert_int_equal(r->table_rows[kh_table_quality_stream], 0);
    assert_int_equal(r->table_rows[kh_table_quality_connection], 0);
    assert_null(connection(r));
    kh_report_free(r);
}

static void test_summary(void **state)
{
    (void)state;
    struct kh_report *a = fixture("chromium-loss3-receiver", 10);
    struct kh_report *b = fixture("chromium-loss3-receiver", 12);
    struct kh_q_summary sum;
    assert_int_equal(kh_q_assess(a, NULL, &th, work, NULL), 0);
    kh_q_prev_read(a->rows, a->time_usec, prev);
    assert_int_equal(kh_q_assess(b, prev, &th, work, &sum), 0);
    assert_int_equal(sum.nstreams, 2);
    assert_int_equal((int)sum.severity, (int)real(connection(b), "severity"));
    bool mos = false;
    for (size_t i = 0; i < sum.nstreams; i++)
        mos |= isfinite(sum.streams[i].mos);
    assert_true(mos);
    kh_report_free(a);
    kh_report_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_first_report_is_since_start),
        cmocka_unit_test(test_clean_call),
        cmocka_unit_test(test_clean_sender_ramp_up_not_reported),
        cmocka_unit_test(test_loss_call),
        cmocka_unit_test(test_span_start_carried),
        cmocka_unit_test(test_prev_round_trip),
        cmocka_unit_test(test_negative_round_trip_is_no_value),
        cmocka_unit_test(test_browser_told_apart),
        cmocka_unit_test(test_prev_not_older_is_ignored),
        cmocka_unit_test(test_full_arena_leaves_report_alone),
        cmocka_unit_test(test_summary),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
