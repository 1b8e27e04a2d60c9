/*
 * detect: the detectors and the video score. See detect.h; the README's "Quality" section
 * documents each detector, its default thresholds and why.
 */
#include "quality/detect.h"

#include <math.h>
#include <string.h>

/* A sustained condition counts from the client's timestamps, which move a millisecond or
 * two off the report period: five 2 s intervals may add up to 9.9998 s. */
#define SUSTAIN_SLACK_S 0.05

/* Loss over fewer packets than this says too little (1 packet of 30 is 3 %). */
#define MIN_EXPECTED_PACKETS 50

static double v_loss(const struct kh_q_interval *iv, const struct kh_q_conn *cn,
                     const struct kh_q_state *st, const struct kh_q_thresholds *th)
{
    return iv->expected_packets >= MIN_EXPECTED_PACKETS ? iv->loss_percent : NAN;
}

static double v_rtt(const struct kh_q_interval *iv, const struct kh_q_conn *cn,
                    const struct kh_q_state *st, const struct kh_q_thresholds *th)
{
    return iv->rtt_ms;
}

static double v_jitter(const struct kh_q_interval *iv, const struct kh_q_conn *cn,
                       const struct kh_q_state *st, const struct kh_q_thresholds *th)
{
    return iv->jitter_ms;
}

/* Not judged since a stream began: a receiver conceals while its jitter buffer fills at the
 * start of a stream, and the first report's average since then is mostly that. */
static double v_concealment(const struct kh_q_interval *iv, const struct kh_q_conn *cn,
                            const struct kh_q_state *st, const struct kh_q_thresholds *th)
{
    return iv->since_start ? NAN : iv->concealment_percent;
}

/* The share of the interval the picture was frozen, in percent (a freeze lasts at least
 * about 150 ms, webrtc-stats). */
static double v_freezes(const struct kh_q_interval *iv, const struct kh_q_conn *cn,
                        const struct kh_q_state *st, const struct kh_q_thresholds *th)
{
    if (iv->since_start || !(iv->seconds > 0) || isnan(iv->freeze_seconds))
        return NAN;
    return 100 * iv->freeze_seconds / iv->seconds;
}

/* Frame rate against what it should be: what is captured (outbound), the best the stream has
 * had (inbound), in percent. */
static double v_low_fps(const struct kh_q_interval *iv, const struct kh_q_conn *cn,
                        const struct kh_q_state *st, const struct kh_q_thresholds *th)
{
    double ref = iv->source_fps > 0 ? iv->source_fps : st->max_fps;
    return ref > 0 && !isnan(iv->fps) ? 100 * iv->fps / ref : NAN;
}

static double v_cpu(const struct kh_q_interval *iv, const struct kh_q_conn *cn,
                    const struct kh_q_state *st, const struct kh_q_thresholds *th)
{
    return isnan(iv->limit_cpu) ? NAN : 100 * iv->limit_cpu;
}

/* Bandwidth-limited, and limited by the network: the path's estimate
 * (availableOutgoingBitrate) leaves less than quality_bandwidth_headroom times what the
 * connection sends. At the start of a call the encoder also reports "bandwidth" while it
 * ramps up its resolution with the estimate far above what it sends: that is not a
 * network limit and gives 0 here. */
static double v_bandwidth(const struct kh_q_interval *iv, const struct kh_q_conn *cn,
                          const struct kh_q_state *st, const struct kh_q_thresholds *th)
{
    if (isnan(iv->limit_bandwidth) || isnan(iv->available_bitrate) ||
        !(iv->transport_send_bitrate > 0))
        return NAN;
    if (iv->available_bitrate >= th->bandwidth_headroom * iv->transport_send_bitrate)
        return 0;
    return 100 * iv->limit_bandwidth;
}

/* Height against the best the stream has had (a drop; a ramp-up only goes up), in percent. */
static double v_resolution(const struct kh_q_interval *iv, const struct kh_q_conn *cn,
                           const struct kh_q_state *st, const struct kh_q_thresholds *th)
{
    return st->max_height > 0 && iv->height > 0 ? 100 * iv->height / st->max_height : NAN;
}

/* Seconds of this interval without a byte on a stream that exists. */
static double v_no_media(const struct kh_q_interval *iv, const struct kh_q_conn *cn,
                         const struct kh_q_state *st, const struct kh_q_thresholds *th)
{
    if (iv->since_start || isnan(iv->bitrate))
        return NAN;
    return iv->bitrate == 0 ? iv->seconds : 0;
}

static double v_relay_tcp(const struct kh_q_interval *iv, const struct kh_q_conn *cn,
                          const struct kh_q_state *st, const struct kh_q_thresholds *th)
{
    return cn->relay_tcp ? 1 : 0;
}

static double v_not_connected(const struct kh_q_interval *iv, const struct kh_q_conn *cn,
                              const struct kh_q_state *st, const struct kh_q_thresholds *th)
{
    return cn->connected ? 0 : 1;
}

static double v_pair_changed(const struct kh_q_interval *iv, const struct kh_q_conn *cn,
                             const struct kh_q_state *st, const struct kh_q_thresholds *th)
{
    return cn->pair_changes;
}

#define AUDIO (KH_QS_AUDIO_IN | KH_QS_AUDIO_OUT)
#define VIDEO (KH_QS_VIDEO_IN | KH_QS_VIDEO_OUT)

/* The detectors: one entry each. Thresholds are in the unit; lower_is_worse compares the
 * other way; sustain_s is how long the condition must hold before it is an issue. */
const struct kh_q_detector kh_q_detectors[KH_QI_COUNT] = {
    [KH_QI_LOSS] = {.name = "high_loss", .title = "packet loss", .unit = "%",
                    .scope = KH_QS_STREAM, .warning = 2, .bad = 10, .value = v_loss},
    [KH_QI_RTT] = {.name = "high_rtt", .title = "round-trip time", .unit = "ms",
                   .scope = KH_QS_STREAM, .warning = 250, .bad = 500, .value = v_rtt},
    [KH_QI_JITTER] = {.name = "high_jitter", .title = "audio jitter", .unit = "ms",
                      .scope = AUDIO, .warning = 30, .bad = 100, .value = v_jitter},
    [KH_QI_CONCEALMENT] = {.name = "audio_concealment", .title = "concealed audio",
                           .unit = "%", .scope = KH_QS_AUDIO_IN, .warning = 3, .bad = 10,
                           .value = v_concealment},
    [KH_QI_FREEZES] = {.name = "video_freezes", .title = "time frozen", .unit = "%",
                       .scope = KH_QS_VIDEO_IN, .warning = 0.1, .bad = 5, .value = v_freezes},
    [KH_QI_LOW_FPS] = {.name = "low_frame_rate", .title = "frame rate of the expected",
                       .unit = "%", .scope = VIDEO, .lower_is_worse = true, .warning = 70,
                       .bad = 40, .sustain_s = 10, .value = v_low_fps},
    [KH_QI_CPU] = {.name = "cpu_limited", .title = "time the encoder was limited by CPU",
                   .unit = "%", .scope = KH_QS_VIDEO_OUT, .warning = 50, .bad = 90,
                   .sustain_s = 10, .value = v_cpu},
    [KH_QI_BANDWIDTH] = {.name = "bandwidth_limited",
                         .title = "time the encoder was limited by the network", .unit = "%",
                         .scope = KH_QS_VIDEO_OUT, .warning = 50, .bad = 90, .sustain_s = 10,
                         .value = v_bandwidth},
    [KH_QI_RESOLUTION] = {.name = "resolution_dropped", .title = "height of the stream's best",
                          .unit = "%", .scope = VIDEO, .lower_is_worse = true, .warning = 67,
                          .bad = 34, .value = v_resolution},
    [KH_QI_NO_MEDIA] = {.name = "no_media", .title = "seconds without media on a stream",
                        .unit = "s", .scope = KH_QS_STREAM, .warning = 5, .bad = 20,
                        .by_duration = true, .value = v_no_media},
    [KH_QI_RELAY_TCP] = {.name = "relay_tcp", .title = "media relayed over TURN TCP or TLS",
                         .unit = "", .scope = KH_QS_CONNECTION, .warning = 1, .bad = INFINITY,
                         .flag = true, .value = v_relay_tcp},
    [KH_QI_NOT_CONNECTED] = {.name = "not_connected", .title = "ICE or DTLS not connected",
                             .unit = "", .scope = KH_QS_CONNECTION, .warning = 1, .bad = 1,
                             .flag = true, .value = v_not_connected},
    [KH_QI_PAIR_CHANGED] = {.name = "pair_changed", .title = "selected candidate pair changes",
                            .unit = "", .scope = KH_QS_CONNECTION, .warning = 1,
                            .bad = INFINITY, .flag = true, .value = v_pair_changed},
};

void kh_q_thresholds_default(struct kh_q_thresholds *th)
{
    for (int i = 0; i < KH_QI_COUNT; i++) {
        th->warning[i] = kh_q_detectors[i].warning;
        th->bad[i] = kh_q_detectors[i].bad;
    }
    th->bandwidth_headroom = 3;
}

unsigned kh_q_scope(enum kh_q_kind kind, enum kh_q_dir dir)
{
    if (kind == KH_Q_AUDIO)
        return dir == KH_Q_IN ? KH_QS_AUDIO_IN : KH_QS_AUDIO_OUT;
    return dir == KH_Q_IN ? KH_QS_VIDEO_IN : KH_QS_VIDEO_OUT;
}

static bool beyond(double v, double limit, bool lower_is_worse)
{
    return lower_is_worse ? v <= limit : v >= limit;
}

static void judge_one(enum kh_q_issue i, double v, double seconds,
                      const struct kh_q_thresholds *th, struct kh_q_state *st,
                      struct kh_q_verdict *out)
{
    const struct kh_q_detector *d = &kh_q_detectors[i];
    bool on = !isnan(v) && (d->by_duration ? v > 0 : beyond(v, th->warning[i], d->lower_is_worse));
    st->run_s[i] = on ? st->run_s[i] + (seconds > 0 ? seconds : 0) : 0;
    if (!on || st->run_s[i] + SUSTAIN_SLACK_S < d->sustain_s)
        return;
    if (d->by_duration)
        v = st->run_s[i];
    if (!beyond(v, th->warning[i], d->lower_is_worse))
        return;
    if (beyond(v, th->bad[i], d->lower_is_worse))
        out->bads |= 1u << i;
    else
        out->warnings |= 1u << i;
}

/* 1 to 5: 1 + 4 x resolution factor x frame-rate factor x (1 - frozen share) x limitation
 * factor. Resolution and frame rate are taken against what is captured (outbound) or the
 * best the stream has had (inbound), square-rooted (halving the height costs 29 %, not 50 %);
 * the limitation factor takes up to a quarter off for time limited by CPU or bandwidth. */
static double video_score(const struct kh_q_interval *iv, const struct kh_q_state *st)
{
    double ref_h = iv->source_height > 0 ? iv->source_height : st->max_height;
    double ref_f = iv->source_fps > 0 ? iv->source_fps : st->max_fps;
    if (!(iv->height > 0) || !(ref_h > 0))
        return NAN;
    double res = sqrt(fmin(1, iv->height / ref_h));
    double fps = ref_f > 0 && !isnan(iv->fps) ? sqrt(fmin(1, iv->fps / ref_f)) : 1;
    double frozen = iv->seconds > 0 && iv->freeze_seconds > 0
                        ? fmin(1, iv->freeze_seconds / iv->seconds)
                        : 0;
    double limited = (isnan(iv->limit_cpu) ? 0 : iv->limit_cpu) +
                     (isnan(iv->limit_bandwidth) ? 0 : iv->limit_bandwidth);
    return 1 + 4 * res * fps * (1 - frozen) * (1 - 0.25 * fmin(1, limited));
}

void kh_q_judge(const struct kh_q_interval *iv, const struct kh_q_conn *cn, unsigned scope,
                const struct kh_q_thresholds *th, struct kh_q_state *st,
                struct kh_q_verdict *out)
{
    *out = (struct kh_q_verdict){.video_score = NAN};
    double seconds = iv ? iv->seconds : cn->seconds;
    /* judged against the stream's past: its best so far is updated after */
    for (int i = 0; i < KH_QI_COUNT; i++) {
        const struct kh_q_detector *d = &kh_q_detectors[i];
        if (!(d->scope & scope))
            continue;
        judge_one((enum kh_q_issue)i, d->value(iv, cn, st, th), seconds, th, st, out);
    }
    if (iv && (scope & VIDEO))
        out->video_score = video_score(iv, st);
    if (iv && iv->height > st->max_height)
        st->max_height = iv->height;
    if (iv && iv->fps > st->max_fps)
        st->max_fps = iv->fps;
    out->severity = out->bads ? KH_Q_BAD : out->warnings ? KH_Q_WARNING : KH_Q_OK;
}

static bool state_is(struct kh_str s, const char *want)
{
    return s.p && s.len == strlen(want) && memcmp(s.p, want, s.len) == 0;
}

/* Not connected: DTLS known and not "connected", or ICE known and neither "connected" nor
 * "completed" (Firefox reports no iceState). */
static bool connected(const struct kh_q_transport *t)
{
    if (t->dtls_state.p && !state_is(t->dtls_state, "connected"))
        return false;
    if (t->ice_state.p && !state_is(t->ice_state, "connected") &&
        !state_is(t->ice_state, "completed"))
        return false;
    return true;
}

static bool relay_tcp(const struct kh_q_transport *t)
{
    return state_is(t->local_type, "relay") &&
           (state_is(t->relay_protocol, "tcp") || state_is(t->relay_protocol, "tls"));
}

static double rate(double a, double b, double seconds)
{
    return seconds > 0 && !isnan(a) && !isnan(b) && b >= a ? 8 * (b - a) / seconds : NAN;
}

void kh_q_conn_interval(const struct kh_q_transport *prev, const struct kh_q_transport *cur,
                        struct kh_q_conn *o)
{
    *o = (struct kh_q_conn){.seconds = NAN, .send_bitrate = NAN, .receive_bitrate = NAN,
                            .pair_changes = 0};
    o->rtt_ms = isnan(cur->pair_rtt_s) ? NAN : 1000 * cur->pair_rtt_s;
    o->available_bitrate = cur->available_outgoing_bitrate;
    o->connected = connected(cur);
    o->relay_tcp = relay_tcp(cur);
    if (prev == NULL || !prev->present || !(cur->ts_ms > prev->ts_ms)) {
        o->since_start = true;
        return;
    }
    o->seconds = (cur->ts_ms - prev->ts_ms) / 1000;
    o->send_bitrate = rate(prev->bytes_sent, cur->bytes_sent, o->seconds);
    o->receive_bitrate = rate(prev->bytes_received, cur->bytes_received, o->seconds);
    if (cur->pair_changes > prev->pair_changes)
        o->pair_changes = cur->pair_changes - prev->pair_changes;
    else if (isnan(cur->pair_changes) && cur->pair_id.p && prev->pair_id.p &&
             (cur->pair_id.len != prev->pair_id.len ||
              memcmp(cur->pair_id.p, prev->pair_id.p, cur->pair_id.len) != 0))
        o->pair_changes = 1; /* no counter (Firefox): the selected pair's id changed */
}
