/*
 * Unit tests of src/quality/interval.c against hand-computed values: rates over the client's
 * elapsed time, inbound loss with late (discarded) packets and a packetsLost that goes down,
 * outbound loss between two RTCP receiver reports (and nothing when no new report came),
 * jitter-buffer delay and concealment per emitted sample, decode time per frame, limitation
 * shares, counter resets giving NAN, since-start averages for a first sample, the RTT
 * fallback to the candidate pair, and the MOS that follows.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "quality/emodel.h"
#include "quality/interval.h"

#define near(a, b, eps) assert_true(fabs((a) - (b)) < (eps))

static struct kh_q_stream blank(enum kh_q_kind kind, enum kh_q_dir dir)
{
    struct kh_q_stream s;
    memset(&s, 0, sizeof(s));
    kh_q_stream_blank(&s);
    s.kind = kind;
    s.dir = dir;
    s.mime_type = (struct kh_str){"audio/opus", 10};
    return s;
}

static void test_inbound_audio_interval(void **state)
{
    struct kh_q_stream a = blank(KH_Q_AUDIO, KH_Q_IN), b;
    a.ts_ms = 10000;
    a.bytes = 100000, a.packets = 1000, a.packets_lost = 10, a.packets_discarded = 2;
    a.jb_delay = 48, a.jb_emitted = 960000, a.concealed = 4800, a.samples = 960000;
    a.jitter_s = 0.004;
    b = a;
    b.ts_ms = 12000; /* 2 s later */
    b.bytes += 5000, b.packets += 100, b.packets_lost += 3, b.packets_discarded += 1;
    b.jb_delay += 4800, b.jb_emitted += 96000, b.concealed += 1920, b.samples += 96000;
    b.rtt_s = 0.1;
    struct kh_q_interval iv;
    kh_q_interval(&a, &b, NULL, NULL, &iv);
    assert_false(iv.since_start);
    near(iv.seconds, 2, 1e-9);
    near(iv.bitrate, 5000 * 8 / 2.0, 1e-9);
    near(iv.packet_rate, 50, 1e-9);
    near(iv.expected_packets, 103, 1e-9);             /* 100 received + 3 lost */
    near(iv.loss_percent, 100.0 * (3 + 1) / 103, 1e-9); /* the late one counts */
    near(iv.jitter_buffer_ms, 50, 1e-9);
    near(iv.concealment_percent, 2, 1e-9);
    near(iv.jitter_ms, 4, 1e-9);
    near(iv.rtt_ms, 100, 1e-9);
    const struct kh_emodel_codec *opus = kh_emodel_codec("audio/opus");
    near(iv.mos, kh_emodel_mos(kh_emodel_r(opus, 50 + 50 + 26.5, 400.0 / 103)), 1e-9);
}

/* packetsLost going down (a duplicate arrived after it was counted lost) is no loss; the
 * packets counter going down is a reset: nothing from it. */
static void test_lost_down_and_resets(void **state)
{
    struct kh_q_stream a = blank(KH_Q_VIDEO, KH_Q_IN), b;
    a.ts_ms = 0, a.bytes = 1000, a.packets = 100, a.packets_lost = 5, a.frames = 60;
    a.codec_s = 0.3;
    b = a;
    b.ts_ms = 1000, b.bytes = 2000, b.packets = 150, b.packets_lost = 4, b.frames = 90;
    b.codec_s = 0.45;
    struct kh_q_interval iv;
    kh_q_interval(&a, &b, NULL, NULL, &iv);
    near(iv.loss_percent, 0, 1e-12);
    near(iv.expected_packets, 50, 1e-12);
    near(iv.fps, 30, 1e-9);
    near(iv.codec_ms_per_frame, 5, 1e-9);
    b.packets = 10, b.bytes = 100, b.frames = 5; /* the client restarted its counters */
    kh_q_interval(&a, &b, NULL, NULL, &iv);
    assert_true(isnan(iv.loss_percent));
    assert_true(isnan(iv.bitrate));
    assert_true(isnan(iv.fps));
    assert_true(isnan(iv.codec_ms_per_frame));
}

static void test_outbound_loss_between_receiver_reports(void **state)
{
    struct kh_q_stream a = blank(KH_Q_AUDIO, KH_Q_OUT), b;
    a.ts_ms = 8000, a.packets = 400, a.remote_lost = 2, a.remote_ts_ms = 2400;
    b = a;
    b.ts_ms = 10000, b.packets = 500, b.remote_lost = 13, b.remote_ts_ms = 9700;
    b.jitter_s = 0.01, b.rtt_s = 0.05;
    struct kh_q_interval iv;
    kh_q_interval(&a, &b, NULL, NULL, &iv);
    /* 100 packets in 2 s, the reports 7.3 s apart: 365 sent between them, 11 lost */
    near(iv.expected_packets, 365, 1e-9);
    near(iv.loss_percent, 100.0 * 11 / 365, 1e-9);
    const struct kh_emodel_codec *opus = kh_emodel_codec("audio/opus");
    /* the remote's jitter buffer is taken as twice its jitter */
    near(iv.mos, kh_emodel_mos(kh_emodel_r(opus, 25 + 20 + 26.5, 100.0 * 11 / 365)), 1e-9);
    b.remote_ts_ms = a.remote_ts_ms; /* no new report: unknown, not 0 */
    b.remote_lost = a.remote_lost;
    kh_q_interval(&a, &b, NULL, NULL, &iv);
    assert_true(isnan(iv.loss_percent));
    assert_true(isnan(iv.mos));
}

static void test_limitation_shares(void **state)
{
    struct kh_q_stream a = blank(KH_Q_VIDEO, KH_Q_OUT), b;
    a.ts_ms = 0, a.ql_bandwidth_s = 10, a.ql_cpu_s = 1, a.ql_other_s = 0, a.ql_none_s = 5;
    b = a;
    b.ts_ms = 4000, b.ql_bandwidth_s = 13, b.ql_cpu_s = 1.5, b.ql_other_s = 0;
    b.ql_none_s = 5.5;
    struct kh_q_interval iv;
    kh_q_interval(&a, &b, NULL, NULL, &iv);
    near(iv.limit_bandwidth, 3.0 / 4, 1e-9);
    near(iv.limit_cpu, 0.5 / 4, 1e-9);
    near(iv.limit_other, 0, 1e-9);
    assert_true(isnan(iv.mos)); /* video */
}

static void test_first_sample_since_start(void **state)
{
    struct kh_q_stream a = blank(KH_Q_AUDIO, KH_Q_IN);
    a.ts_ms = 5000, a.packets = 990, a.packets_lost = 10, a.bytes = 1;
    a.jb_delay = 20, a.jb_emitted = 480000, a.concealed = 4800, a.samples = 480000;
    struct kh_q_interval iv;
    kh_q_interval(NULL, &a, NULL, NULL, &iv);
    assert_true(iv.since_start);
    assert_true(isnan(iv.bitrate) && isnan(iv.seconds));
    near(iv.loss_percent, 1, 1e-9);
    near(iv.jitter_buffer_ms, 1000.0 * 20 / 480000, 1e-9);
    near(iv.concealment_percent, 1, 1e-9);
    struct kh_q_stream same = a; /* an older or equal sample is no previous one */
    kh_q_interval(&same, &a, NULL, NULL, &iv);
    assert_true(iv.since_start);
}

static void test_pair_rtt_and_transport_rate(void **state)
{
    struct kh_q_stream a = blank(KH_Q_VIDEO, KH_Q_IN), b;
    a.ts_ms = 0;
    b = a;
    b.ts_ms = 2000;
    struct kh_q_transport t0 = {.present = true, .ts_ms = 0, .bytes_sent = 1000,
                                .pair_rtt_s = 0.2, .available_outgoing_bitrate = 5e5};
    struct kh_q_transport t1 = t0;
    t1.ts_ms = 2000, t1.bytes_sent = 51000, t1.pair_rtt_s = 0.3;
    struct kh_q_interval iv;
    kh_q_interval(&a, &b, &t0, &t1, &iv);
    near(iv.rtt_ms, 300, 1e-9); /* the stream has no RTCP RTT of its own */
    near(iv.transport_send_bitrate, 50000 * 8 / 2.0, 1e-9);
    near(iv.available_bitrate, 5e5, 1e-9);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_inbound_audio_interval),
        cmocka_unit_test(test_lost_down_and_resets),
        cmocka_unit_test(test_outbound_loss_between_receiver_reports),
        cmocka_unit_test(test_limitation_shares),
        cmocka_unit_test(test_first_sample_since_start),
        cmocka_unit_test(test_pair_rtt_and_transport_rate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
