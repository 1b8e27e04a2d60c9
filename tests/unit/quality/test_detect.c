/*
 * Unit tests of src/quality/detect.c: every detector at and around its thresholds (just
 * under the warning, at it, at the bad one), sustained detectors only after their time,
 * the ramp-up that is not a bandwidth limit (the estimate far above what is sent), a drop of
 * resolution against the stream's best (a rise is none), no media judged on how long it has
 * lasted, the connection's flags, configured thresholds replacing the defaults, the video
 * score's factors, and the connection interval.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "quality/detect.h"

#define near(a, b, eps) assert_true(fabs((a) - (b)) < (eps))
#define BIT(i) (1u << (i))

static struct kh_q_thresholds th;

static int setup(void **state)
{
    kh_q_thresholds_default(&th);
    return 0;
}

static struct kh_q_interval iv0(double seconds)
{
    struct kh_q_interval iv;
    memset(&iv, 0, sizeof(iv));
    double *d = &iv.seconds;
    for (double *x = d; x <= &iv.mos; x++)
        *x = NAN;
    iv.seconds = seconds;
    return iv;
}

/* The verdict of one interval of a stream of this scope, from a fresh state. */
static struct kh_q_verdict judge(const struct kh_q_interval *iv, unsigned scope)
{
    struct kh_q_state st;
    memset(&st, 0, sizeof(st));
    struct kh_q_verdict v;
    kh_q_judge(iv, NULL, scope, &th, &st, &v);
    return v;
}

static void test_loss_around_thresholds(void **state)
{
    struct kh_q_interval iv = iv0(2);
    iv.expected_packets = 100;
    iv.loss_percent = 1.99;
    struct kh_q_verdict v = judge(&iv, KH_QS_AUDIO_IN);
    assert_int_equal(v.warnings | v.bads, 0);
    assert_int_equal(v.severity, KH_Q_OK);
    iv.loss_percent = 2;
    v = judge(&iv, KH_QS_AUDIO_IN);
    assert_int_equal(v.warnings, BIT(KH_QI_LOSS));
    assert_int_equal(v.severity, KH_Q_WARNING);
    iv.loss_percent = 10;
    v = judge(&iv, KH_QS_VIDEO_OUT);
    assert_int_equal(v.bads, BIT(KH_QI_LOSS));
    assert_int_equal(v.severity, KH_Q_BAD);
    iv.expected_packets = 49; /* too few packets to say */
    v = judge(&iv, KH_QS_VIDEO_OUT);
    assert_int_equal(v.warnings | v.bads, 0);
}

static void test_rtt_jitter_concealment(void **state)
{
    struct kh_q_interval iv = iv0(2);
    iv.rtt_ms = 249.9;
    assert_int_equal(judge(&iv, KH_QS_VIDEO_IN).warnings, 0);
    iv.rtt_ms = 250;
    assert_int_equal(judge(&iv, KH_QS_VIDEO_IN).warnings, BIT(KH_QI_RTT));
    iv.rtt_ms = 500;
    assert_int_equal(judge(&iv, KH_QS_AUDIO_OUT).bads, BIT(KH_QI_RTT));
    iv.rtt_ms = NAN;
    iv.jitter_ms = 30;
    assert_int_equal(judge(&iv, KH_QS_AUDIO_IN).warnings, BIT(KH_QI_JITTER));
    assert_int_equal(judge(&iv, KH_QS_VIDEO_IN).warnings, 0); /* audio only */
    iv.jitter_ms = 100;
    assert_int_equal(judge(&iv, KH_QS_AUDIO_IN).bads, BIT(KH_QI_JITTER));
    iv.jitter_ms = NAN;
    iv.concealment_percent = 2.9;
    assert_int_equal(judge(&iv, KH_QS_AUDIO_IN).warnings, 0);
    iv.concealment_percent = 3;
    assert_int_equal(judge(&iv, KH_QS_AUDIO_IN).warnings, BIT(KH_QI_CONCEALMENT));
    assert_int_equal(judge(&iv, KH_QS_AUDIO_OUT).warnings, 0); /* the receiver's own */
    iv.concealment_percent = 10;
    assert_int_equal(judge(&iv, KH_QS_AUDIO_IN).bads, BIT(KH_QI_CONCEALMENT));
    iv.since_start = true; /* the start of a stream conceals while its buffer fills */
    assert_int_equal(judge(&iv, KH_QS_AUDIO_IN).bads | judge(&iv, KH_QS_AUDIO_IN).warnings, 0);
}

static void test_freezes(void **state)
{
    struct kh_q_interval iv = iv0(60);
    iv.freeze_seconds = 0.05; /* 0.083 % of the minute */
    assert_int_equal(judge(&iv, KH_QS_VIDEO_IN).warnings, 0);
    iv.freeze_seconds = 0.2; /* 0.33 % */
    assert_int_equal(judge(&iv, KH_QS_VIDEO_IN).warnings, BIT(KH_QI_FREEZES));
    iv.freeze_seconds = 3; /* 5 % */
    assert_int_equal(judge(&iv, KH_QS_VIDEO_IN).bads, BIT(KH_QI_FREEZES));
}

/* A sustained detector: the condition must have held for sustain_s (10 s). */
static void test_cpu_limited_is_sustained(void **state)
{
    struct kh_q_state st;
    memset(&st, 0, sizeof(st));
    struct kh_q_interval iv = iv0(4);
    iv.limit_cpu = 0.6;
    struct kh_q_verdict v;
    kh_q_judge(&iv, NULL, KH_QS_VIDEO_OUT, &th, &st, &v); /* 4 s */
    assert_int_equal(v.warnings, 0);
    kh_q_judge(&iv, NULL, KH_QS_VIDEO_OUT, &th, &st, &v); /* 8 s */
    assert_int_equal(v.warnings, 0);
    kh_q_judge(&iv, NULL, KH_QS_VIDEO_OUT, &th, &st, &v); /* 12 s */
    assert_int_equal(v.warnings, BIT(KH_QI_CPU));
    iv.limit_cpu = 0.95;
    kh_q_judge(&iv, NULL, KH_QS_VIDEO_OUT, &th, &st, &v);
    assert_int_equal(v.bads, BIT(KH_QI_CPU));
    iv.limit_cpu = 0.4; /* below: the run ends */
    kh_q_judge(&iv, NULL, KH_QS_VIDEO_OUT, &th, &st, &v);
    assert_int_equal(v.warnings | v.bads, 0);
    assert_true(st.run_s[KH_QI_CPU] == 0);
    iv.limit_cpu = 0.6;
    kh_q_judge(&iv, NULL, KH_QS_VIDEO_OUT, &th, &st, &v);
    assert_int_equal(v.warnings, 0); /* a new run starts from 0 */
}

/* Bandwidth-limited by the network, sustained; not the ramp-up, where the estimate is far
 * above what is sent. */
static void test_bandwidth_limit_not_ramp_up(void **state)
{
    struct kh_q_state st;
    memset(&st, 0, sizeof(st));
    struct kh_q_interval iv = iv0(6);
    iv.limit_bandwidth = 1;
    iv.available_bitrate = 3716307; /* a clean call's start: 12 times what it sends */
    iv.transport_send_bitrate = 300000;
    struct kh_q_verdict v;
    for (int i = 0; i < 5; i++)
        kh_q_judge(&iv, NULL, KH_QS_VIDEO_OUT, &th, &st, &v);
    assert_int_equal(v.warnings | v.bads, 0);
    memset(&st, 0, sizeof(st));
    iv.available_bitrate = 250000; /* a 250 kbit/s link: 1.4 times */
    iv.transport_send_bitrate = 180000;
    iv.limit_bandwidth = 0.6;
    kh_q_judge(&iv, NULL, KH_QS_VIDEO_OUT, &th, &st, &v); /* 6 s: not yet */
    assert_int_equal(v.warnings, 0);
    kh_q_judge(&iv, NULL, KH_QS_VIDEO_OUT, &th, &st, &v); /* 12 s */
    assert_int_equal(v.warnings, BIT(KH_QI_BANDWIDTH));
    iv.limit_bandwidth = 1;
    kh_q_judge(&iv, NULL, KH_QS_VIDEO_OUT, &th, &st, &v);
    assert_int_equal(v.bads, BIT(KH_QI_BANDWIDTH));
    iv.available_bitrate = 3 * iv.transport_send_bitrate; /* at the headroom: not limited */
    kh_q_judge(&iv, NULL, KH_QS_VIDEO_OUT, &th, &st, &v);
    assert_int_equal(v.warnings | v.bads, 0);
}

static void test_low_fps_against_source_and_best(void **state)
{
    struct kh_q_state st;
    memset(&st, 0, sizeof(st));
    struct kh_q_interval iv = iv0(10);
    iv.source_fps = 30;
    iv.fps = 21.1; /* 70.3 % */
    struct kh_q_verdict v;
    kh_q_judge(&iv, NULL, KH_QS_VIDEO_OUT, &th, &st, &v);
    assert_int_equal(v.warnings, 0);
    iv.fps = 21; /* 70 %, held 10 s */
    memset(&st, 0, sizeof(st));
    kh_q_judge(&iv, NULL, KH_QS_VIDEO_OUT, &th, &st, &v);
    assert_int_equal(v.warnings, BIT(KH_QI_LOW_FPS));
    iv.fps = 12; /* 40 % */
    kh_q_judge(&iv, NULL, KH_QS_VIDEO_OUT, &th, &st, &v);
    assert_int_equal(v.bads, BIT(KH_QI_LOW_FPS));
    /* inbound: against the best the stream has had */
    memset(&st, 0, sizeof(st));
    iv = iv0(10);
    iv.fps = 30;
    kh_q_judge(&iv, NULL, KH_QS_VIDEO_IN, &th, &st, &v);
    assert_int_equal(v.warnings | v.bads, 0);
    near(st.max_fps, 30, 1e-9);
    iv.fps = 15;
    kh_q_judge(&iv, NULL, KH_QS_VIDEO_IN, &th, &st, &v);
    assert_int_equal(v.warnings, BIT(KH_QI_LOW_FPS));
}

static void test_resolution_drop_not_rise(void **state)
{
    struct kh_q_state st;
    memset(&st, 0, sizeof(st));
    struct kh_q_interval iv = iv0(2);
    struct kh_q_verdict v;
    const double heights[] = {270, 360, 540, 720}; /* a ramp-up: only rises */
    for (int i = 0; i < 4; i++) {
        iv.height = heights[i];
        kh_q_judge(&iv, NULL, KH_QS_VIDEO_OUT, &th, &st, &v);
        assert_int_equal(v.warnings | v.bads, 0);
    }
    iv.height = 540; /* 75 % of the best */
    kh_q_judge(&iv, NULL, KH_QS_VIDEO_OUT, &th, &st, &v);
    assert_int_equal(v.warnings | v.bads, 0);
    iv.height = 480; /* 66.7 % */
    kh_q_judge(&iv, NULL, KH_QS_VIDEO_OUT, &th, &st, &v);
    assert_int_equal(v.warnings, BIT(KH_QI_RESOLUTION));
    iv.height = 240; /* 33 % */
    kh_q_judge(&iv, NULL, KH_QS_VIDEO_IN, &th, &st, &v);
    assert_int_equal(v.bads, BIT(KH_QI_RESOLUTION));
    near(st.max_height, 720, 1e-9);
}

static void test_no_media_by_duration(void **state)
{
    struct kh_q_state st;
    memset(&st, 0, sizeof(st));
    struct kh_q_interval iv = iv0(2);
    iv.bitrate = 0;
    struct kh_q_verdict v;
    kh_q_judge(&iv, NULL, KH_QS_AUDIO_IN, &th, &st, &v); /* 2 s */
    assert_int_equal(v.warnings, 0);
    kh_q_judge(&iv, NULL, KH_QS_AUDIO_IN, &th, &st, &v); /* 4 s */
    assert_int_equal(v.warnings, 0);
    kh_q_judge(&iv, NULL, KH_QS_AUDIO_IN, &th, &st, &v); /* 6 s */
    assert_int_equal(v.warnings, BIT(KH_QI_NO_MEDIA));
    for (int i = 0; i < 7; i++) /* 20 s */
        kh_q_judge(&iv, NULL, KH_QS_AUDIO_IN, &th, &st, &v);
    assert_int_equal(v.bads, BIT(KH_QI_NO_MEDIA));
    iv.bitrate = 32000;
    kh_q_judge(&iv, NULL, KH_QS_AUDIO_IN, &th, &st, &v);
    assert_int_equal(v.warnings | v.bads, 0);
    struct kh_q_interval one = iv0(60); /* a whole minute without media at once */
    one.bitrate = 0;
    assert_int_equal(judge(&one, KH_QS_VIDEO_IN).bads, BIT(KH_QI_NO_MEDIA));
}

static void test_connection_flags(void **state)
{
    struct kh_q_state st;
    memset(&st, 0, sizeof(st));
    struct kh_q_conn cn = {.seconds = 2, .connected = true};
    struct kh_q_verdict v;
    kh_q_judge(NULL, &cn, KH_QS_CONNECTION, &th, &st, &v);
    assert_int_equal(v.warnings | v.bads, 0);
    cn.relay_tcp = true;
    cn.pair_changes = 1;
    kh_q_judge(NULL, &cn, KH_QS_CONNECTION, &th, &st, &v);
    assert_int_equal(v.warnings, BIT(KH_QI_RELAY_TCP) | BIT(KH_QI_PAIR_CHANGED));
    assert_int_equal(v.bads, 0);
    cn.connected = false;
    kh_q_judge(NULL, &cn, KH_QS_CONNECTION, &th, &st, &v);
    assert_int_equal(v.bads, BIT(KH_QI_NOT_CONNECTED));
    assert_int_equal(v.severity, KH_Q_BAD);
}

static void test_configured_thresholds(void **state)
{
    struct kh_q_interval iv = iv0(2);
    iv.expected_packets = 500;
    iv.loss_percent = 3;
    th.warning[KH_QI_LOSS] = 5;
    th.bad[KH_QI_LOSS] = 20;
    assert_int_equal(judge(&iv, KH_QS_AUDIO_IN).warnings, 0);
    iv.loss_percent = 5;
    assert_int_equal(judge(&iv, KH_QS_AUDIO_IN).warnings, BIT(KH_QI_LOSS));
}

static void test_video_score(void **state)
{
    struct kh_q_state st;
    memset(&st, 0, sizeof(st));
    struct kh_q_interval iv = iv0(2);
    iv.height = 720, iv.source_height = 720, iv.fps = 30, iv.source_fps = 30;
    iv.limit_bandwidth = 0, iv.limit_cpu = 0, iv.freeze_seconds = 0;
    struct kh_q_verdict v;
    kh_q_judge(&iv, NULL, KH_QS_VIDEO_OUT, &th, &st, &v);
    near(v.video_score, 5, 1e-9);
    iv.height = 180; /* a quarter of the height: sqrt -> half */
    kh_q_judge(&iv, NULL, KH_QS_VIDEO_OUT, &th, &st, &v);
    near(v.video_score, 1 + 4 * 0.5, 1e-9);
    iv.height = 720, iv.fps = 7.5, iv.freeze_seconds = 0.5, iv.limit_bandwidth = 1;
    kh_q_judge(&iv, NULL, KH_QS_VIDEO_OUT, &th, &st, &v);
    near(v.video_score, 1 + 4 * 1 * 0.5 * 0.75 * 0.75, 1e-9);
    kh_q_judge(&iv, NULL, KH_QS_AUDIO_IN, &th, &st, &v);
    assert_true(isnan(v.video_score));
}

static void test_connection_interval(void **state)
{
    struct kh_q_transport a = {.present = true, .ts_ms = 1000, .bytes_sent = 0,
                               .bytes_received = 0, .pair_changes = 1, .pair_rtt_s = 0.05,
                               .available_outgoing_bitrate = 1e6,
                               .dtls_state = {"connected", 9}, .ice_state = {"connected", 9}};
    struct kh_q_transport b = a;
    b.ts_ms = 3000, b.bytes_sent = 25000, b.bytes_received = 50000, b.pair_changes = 2;
    b.local_type = (struct kh_str){"relay", 5};
    b.relay_protocol = (struct kh_str){"tls", 3};
    struct kh_q_conn cn;
    kh_q_conn_interval(&a, &b, &cn);
    assert_false(cn.since_start);
    near(cn.seconds, 2, 1e-9);
    near(cn.send_bitrate, 100000, 1e-9);
    near(cn.receive_bitrate, 200000, 1e-9);
    near(cn.pair_changes, 1, 1e-9);
    near(cn.rtt_ms, 50, 1e-9);
    assert_true(cn.connected && cn.relay_tcp);
    b.dtls_state = (struct kh_str){"closed", 6};
    kh_q_conn_interval(NULL, &b, &cn);
    assert_true(cn.since_start);
    assert_false(cn.connected);
    near(cn.pair_changes, 0, 1e-9); /* the first selection is no change */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_loss_around_thresholds, setup),
        cmocka_unit_test_setup(test_rtt_jitter_concealment, setup),
        cmocka_unit_test_setup(test_freezes, setup),
        cmocka_unit_test_setup(test_cpu_limited_is_sustained, setup),
        cmocka_unit_test_setup(test_bandwidth_limit_not_ramp_up, setup),
        cmocka_unit_test_setup(test_low_fps_against_source_and_best, setup),
        cmocka_unit_test_setup(test_resolution_drop_not_rise, setup),
        cmocka_unit_test_setup(test_no_media_by_duration, setup),
        cmocka_unit_test_setup(test_connection_flags, setup),
        cmocka_unit_test_setup(test_configured_thresholds, setup),
        cmocka_unit_test_setup(test_video_score, setup),
        cmocka_unit_test_setup(test_connection_interval, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
