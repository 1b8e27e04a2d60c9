/*
 * assess: a report's quality rows. See assess.h; the README's "Quality" section says what
 * each value is.
 *
 * A stream's interval starts from the previous report's sample of the same stream (by stats
 * id and direction); a stream new in this report, or any stream after a report kohaku has no
 * quality rows for, is rated since it began. An issue's span begins where its condition
 * began (the report's time less how long the condition has held) and is carried from row to
 * row while the issue lasts, so that every row of one span names the same start.
 */
#include "quality/assess.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/buf.h"
#include "core/errors.h"
#include "core/timeutil.h"
#include "sora/envelope.h"
#include "sora/schema.h"

/* The quality tables' members this module writes and reads, by name (schema_table.c). */
enum qs {
    QS_KIND, QS_SSRC, QS_MIME, QS_SINCE_START, QS_SECONDS, QS_BITRATE, QS_PACKET_RATE, QS_LOSS,
    QS_EXPECTED, QS_JITTER, QS_RTT, QS_JB, QS_CONCEALMENT, QS_FPS, QS_SOURCE_FPS, QS_WIDTH,
    QS_HEIGHT, QS_SOURCE_HEIGHT, QS_FREEZES, QS_FREEZE_S, QS_PAUSES, QS_PAUSE_S, QS_CODEC_MS,
    QS_LIMIT_BW, QS_LIMIT_CPU, QS_LIMIT_OTHER, QS_AVAILABLE, QS_R, QS_MOS, QS_VIDEO_SCORE,
    QS_SEVERITY, QS_ISSUES, QS_BEST_HEIGHT, QS_BEST_FPS, QS_STATE, QS_BYTES, QS_PACKETS,
    QS_LOST, QS_DISCARDED, QS_JB_DELAY, QS_JB_EMITTED, QS_CONCEALED, QS_SAMPLES, QS_FRAMES,
    QS_FREEZE_COUNT, QS_FREEZE_TOTAL, QS_PAUSE_COUNT, QS_PAUSE_TOTAL, QS_CODEC_S, QS_QL_BW,
    QS_QL_CPU, QS_QL_OTHER, QS_QL_NONE, QS_REMOTE_LOST, QS_REMOTE_TS, QS_COUNT
};
static const char *const qs_names[QS_COUNT] = {
    [QS_KIND] = "kind", [QS_SSRC] = "ssrc", [QS_MIME] = "mimeType",
    [QS_SINCE_START] = "sinceStart", [QS_SECONDS] = "seconds", [QS_BITRATE] = "bitrate",
    [QS_PACKET_RATE] = "packetRate", [QS_LOSS] = "lossPercent",
    [QS_EXPECTED] = "expectedPackets", [QS_JITTER] = "jitterMs", [QS_RTT] = "roundTripTimeMs",
    [QS_JB] = "jitterBufferMs", [QS_CONCEALMENT] = "concealmentPercent",
    [QS_FPS] = "framesPerSecond", [QS_SOURCE_FPS] = "sourceFramesPerSecond",
    [QS_WIDTH] = "frameWidth", [QS_HEIGHT] = "frameHeight",
    [QS_SOURCE_HEIGHT] = "sourceFrameHeight", [QS_FREEZES] = "freezes",
    [QS_FREEZE_S] = "freezeSeconds", [QS_PAUSES] = "pauses", [QS_PAUSE_S] = "pauseSeconds",
    [QS_CODEC_MS] = "codecMsPerFrame", [QS_LIMIT_BW] = "limitationBandwidthPercent",
    [QS_LIMIT_CPU] = "limitationCpuPercent", [QS_LIMIT_OTHER] = "limitationOtherPercent",
    [QS_AVAILABLE] = "availableBitrate", [QS_R] = "rFactor", [QS_MOS] = "mos",
    [QS_VIDEO_SCORE] = "videoScore", [QS_SEVERITY] = "severity", [QS_ISSUES] = "issues",
    [QS_BEST_HEIGHT] = "bestFrameHeight", [QS_BEST_FPS] = "bestFramesPerSecond",
    [QS_STATE] = "state", [QS_BYTES] = "sampleBytes", [QS_PACKETS] = "samplePackets",
    [QS_LOST] = "samplePacketsLost", [QS_DISCARDED] = "samplePacketsDiscarded",
    [QS_JB_DELAY] = "sampleJitterBufferDelay", [QS_JB_EMITTED] = "sampleJitterBufferEmitted",
    [QS_CONCEALED] = "sampleConcealedSamples", [QS_SAMPLES] = "sampleTotalSamples",
    [QS_FRAMES] = "sampleFrames", [QS_FREEZE_COUNT] = "sampleFreezes",
    [QS_FREEZE_TOTAL] = "sampleFreezeSeconds", [QS_PAUSE_COUNT] = "samplePauses",
    [QS_PAUSE_TOTAL] = "samplePauseSeconds", [QS_CODEC_S] = "sampleCodecSeconds",
    [QS_QL_BW] = "sampleLimitationBandwidth", [QS_QL_CPU] = "sampleLimitationCpu",
    [QS_QL_OTHER] = "sampleLimitationOther", [QS_QL_NONE] = "sampleLimitationNone",
    [QS_REMOTE_LOST] = "sampleRemotePacketsLost", [QS_REMOTE_TS] = "sampleRemoteTimestamp",
};

enum qc {
    QC_SINCE_START, QC_SECONDS, QC_RTT, QC_AVAILABLE, QC_SEND, QC_RECEIVE, QC_PAIR_CHANGES,
    QC_CONNECTED, QC_RELAY_TCP, QC_PAIR_ID, QC_LOCAL_TYPE, QC_RELAY_PROTOCOL, QC_BROWSER,
    QC_SEVERITY,
    QC_SEVERITY_OUT, QC_SEVERITY_IN, QC_ISSUES, QC_ISSUE_NAMES, QC_STREAMS, QC_MOS_MIN,
    QC_MOS_AVG, QC_VIDEO_MIN, QC_STATE, QC_BYTES_SENT, QC_BYTES_RECEIVED, QC_CHANGES, QC_COUNT
};
static const char *const qc_names[QC_COUNT] = {
    [QC_SINCE_START] = "sinceStart", [QC_SECONDS] = "seconds", [QC_RTT] = "roundTripTimeMs",
    [QC_AVAILABLE] = "availableBitrate", [QC_SEND] = "sendBitrate",
    [QC_RECEIVE] = "receiveBitrate", [QC_PAIR_CHANGES] = "pairChanges",
    [QC_CONNECTED] = "connected", [QC_RELAY_TCP] = "relayTcp",
    [QC_PAIR_ID] = "candidatePairId", [QC_LOCAL_TYPE] = "localCandidateType",
    [QC_RELAY_PROTOCOL] = "relayProtocol", [QC_BROWSER] = "browser",
    [QC_SEVERITY] = "severity",
    [QC_SEVERITY_OUT] = "severityOutbound", [QC_SEVERITY_IN] = "severityInbound",
    [QC_ISSUES] = "issues", [QC_ISSUE_NAMES] = "issueNames", [QC_STREAMS] = "streams",
    [QC_MOS_MIN] = "mosMin", [QC_MOS_AVG] = "mosAvg", [QC_VIDEO_MIN] = "videoScoreMin",
    [QC_STATE] = "state", [QC_BYTES_SENT] = "sampleBytesSent",
    [QC_BYTES_RECEIVED] = "sampleBytesReceived", [QC_CHANGES] = "samplePairChanges",
};

static int qs_member[QS_COUNT];
static int qc_member[QC_COUNT];
/* The state object's keys: "run.<issue>" then "began.<issue>", in enum kh_q_issue order. */
static char state_key_text[2 * KH_QI_COUNT][48];
static const char *state_keys[2 * KH_QI_COUNT];

static int resolve(int table, const char *const *names, int *out, int n)
{
    for (int i = 0; i < n; i++) {
        out[i] = kh_schema_member(table, names[i], strlen(names[i]));
        if (out[i] < 0)
            return KH_EINVAL;
    }
    return 0;
}

int kh_q_assess_init(void)
{
    for (int i = 0; i < KH_QI_COUNT; i++) {
        snprintf(state_key_text[i], sizeof(state_key_text[i]), "run.%s",
                 kh_q_detectors[i].name);
        snprintf(state_key_text[KH_QI_COUNT + i], sizeof(state_key_text[0]), "began.%s",
                 kh_q_detectors[i].name);
        state_keys[i] = state_key_text[i];
        state_keys[KH_QI_COUNT + i] = state_key_text[KH_QI_COUNT + i];
    }
    if (resolve(kh_table_quality_stream, qs_names, qs_member, QS_COUNT) != 0)
        return KH_EINVAL;
    return resolve(kh_table_quality_connection, qc_names, qc_member, QC_COUNT);
}

int kh_q_init(void)
{
    int rc = kh_q_sample_init();
    return rc ? rc : kh_q_assess_init();
}

const char *kh_q_severity_name(enum kh_q_severity s)
{
    return s == KH_Q_BAD ? "bad" : s == KH_Q_WARNING ? "warning" : "ok";
}

/* --- reading rows back --------------------------------------------------------------------- */

static double num(const struct kh_value *v)
{
    if (v->type == KH_COL_REAL)
        return v->u.d;
    if (v->type == KH_COL_INT)
        return (double)v->u.i;
    return NAN;
}

static struct kh_str text(const struct kh_value *v)
{
    if (v->type != KH_COL_TEXT && v->type != KH_COL_JSON)
        return (struct kh_str){NULL, 0};
    return (struct kh_str){v->u.s, v->len};
}

static bool is(struct kh_str s, const char *want)
{
    return s.p && s.len == strlen(want) && memcmp(s.p, want, s.len) == 0;
}

/* run_s and span starts from a state object (NULL: all zero). */
static void read_state(const struct kh_value *v, struct kh_q_state *st, int64_t *began)
{
    double d[2 * KH_QI_COUNT];
    struct kh_str json = text(v);
    bool ok = json.p && kh_envelope_json_numbers(json.p, json.len, state_keys, d,
                                                 2 * KH_QI_COUNT);
    for (int i = 0; i < KH_QI_COUNT; i++) {
        st->run_s[i] = ok && d[i] > 0 ? d[i] : 0;
        began[i] = ok && d[KH_QI_COUNT + i] > 0 ? (int64_t)d[KH_QI_COUNT + i] : 0;
    }
}

static void read_stream(const struct kh_row *row, struct kh_q_prev_stream *p)
{
    const struct kh_value *v = row->vals;
    struct kh_q_stream *s = &p->s;
    kh_q_stream_blank(s);
    s->stats_id = row->stats_id;
    s->dir = is(row->stats_type, "outbound-rtp") ? KH_Q_OUT : KH_Q_IN;
    s->kind = is(text(&v[qs_member[QS_KIND]]), "video") ? KH_Q_VIDEO : KH_Q_AUDIO;
    s->ts_ms = row->stats_timestamp;
    s->ssrc = num(&v[qs_member[QS_SSRC]]);
    struct {
        double *to;
        enum qs from;
    } counters[] = {
        {&s->bytes, QS_BYTES},          {&s->packets, QS_PACKETS},
        {&s->packets_lost, QS_LOST},    {&s->packets_discarded, QS_DISCARDED},
        {&s->jb_delay, QS_JB_DELAY},    {&s->jb_emitted, QS_JB_EMITTED},
        {&s->concealed, QS_CONCEALED},  {&s->samples, QS_SAMPLES},
        {&s->frames, QS_FRAMES},        {&s->freezes, QS_FREEZE_COUNT},
        {&s->freeze_s, QS_FREEZE_TOTAL}, {&s->pauses, QS_PAUSE_COUNT},
        {&s->pause_s, QS_PAUSE_TOTAL},  {&s->codec_s, QS_CODEC_S},
        {&s->ql_bandwidth_s, QS_QL_BW}, {&s->ql_cpu_s, QS_QL_CPU},
        {&s->ql_other_s, QS_QL_OTHER},  {&s->ql_none_s, QS_QL_NONE},
        {&s->remote_lost, QS_REMOTE_LOST}, {&s->remote_ts_ms, QS_REMOTE_TS},
    };
    for (size_t i = 0; i < sizeof(counters) / sizeof(counters[0]); i++)
        *counters[i].to = num(&v[qs_member[counters[i].from]]);
    memset(&p->st, 0, sizeof(p->st));
    double h = num(&v[qs_member[QS_BEST_HEIGHT]]), f = num(&v[qs_member[QS_BEST_FPS]]);
    p->st.max_height = h > 0 ? h : 0;
    p->st.max_fps = f > 0 ? f : 0;
    read_state(&v[qs_member[QS_STATE]], &p->st, p->began_usec);
}

static void read_connection(const struct kh_row *row, struct kh_q_prev *out)
{
    const struct kh_value *v = row->vals;
    struct kh_q_transport *t = &out->tr;
    *t = (struct kh_q_transport){.present = true, .ts_ms = row->stats_timestamp,
                                 .pair_rtt_s = NAN, .available_outgoing_bitrate = NAN};
    t->bytes_sent = num(&v[qc_member[QC_BYTES_SENT]]);
    t->bytes_received = num(&v[qc_member[QC_BYTES_RECEIVED]]);
    t->pair_changes = num(&v[qc_member[QC_CHANGES]]);
    t->pair_id = text(&v[qc_member[QC_PAIR_ID]]);
    memset(&out->tr_st, 0, sizeof(out->tr_st));
    read_state(&v[qc_member[QC_STATE]], &out->tr_st, out->tr_began_usec);
    out->present = true;
}

void kh_q_prev_read(const struct kh_row *rows, int64_t time_usec, struct kh_q_prev *out)
{
    out->present = false;
    out->time_usec = time_usec;
    out->nstreams = 0;
    out->tr = (struct kh_q_transport){.present = false};
    memset(&out->tr_st, 0, sizeof(out->tr_st));
    memset(out->tr_began_usec, 0, sizeof(out->tr_began_usec));
    for (const struct kh_row *row = rows; row; row = row->next) {
        if (row->table == kh_table_quality_connection)
            read_connection(row, out);
        else if (row->table == kh_table_quality_stream && out->nstreams < KH_Q_MAX_STREAMS)
            read_stream(row, &out->streams[out->nstreams++]);
    }
}

/* --- writing rows -------------------------------------------------------------------------- */

static struct kh_value real_value(double d)
{
    struct kh_value v = {.type = isfinite(d) ? KH_COL_REAL : 0};
    v.u.d = d;
    return v;
}

static struct kh_value int_value(double d)
{
    struct kh_value v = {.type = isfinite(d) ? KH_COL_INT : 0};
    v.u.i = isfinite(d) ? llround(d) : 0;
    return v;
}

static struct kh_value bool_value(bool b)
{
    struct kh_value v = {.type = KH_COL_BOOL};
    v.u.b = b;
    return v;
}

static struct kh_value str_value(struct kh_str s, uint8_t type)
{
    struct kh_value v = {.type = s.p ? type : 0, .len = s.len};
    v.u.s = s.p;
    return v;
}

/* A copy of b's text in r's arena as a value of this type (NULL when b is empty). */
static int buf_value(struct kh_report *r, const struct kh_buf *b, uint8_t type,
                     struct kh_value *out)
{
    *out = (struct kh_value){.type = 0};
    if (b->len == 0)
        return 0;
    char *p = kh_arena_strndup(&r->arena, b->data, b->len);
    if (p == NULL)
        return KH_ENOMEM;
    *out = str_value((struct kh_str){p, (uint32_t)b->len}, type);
    return 0;
}

static struct kh_row *new_row(struct kh_report *r, int table, const char *type,
                              struct kh_str id, double ts_ms)
{
    struct kh_row *row = kh_arena_alloc(&r->arena, sizeof(*row));
    size_t n = kh_stats_tables[table].nmembers;
    struct kh_value *vals = kh_arena_alloc(&r->arena, n * sizeof(*vals));
    if (row == NULL || vals == NULL)
        return NULL;
    memset(vals, 0, n * sizeof(*vals));
    *row = (struct kh_row){.table = table, .stats_type = {type, (uint32_t)strlen(type)},
                           .stats_id = id, .stats_timestamp = ts_ms, .vals = vals};
    return row;
}

/* Where the scratch text of one row is built (issues, state, names). */
struct texts {
    struct kh_buf issues, state, names;
};

/* Where each condition began, while it holds (run_s > 0): carried from the previous report,
 * else the start of this interval (the previous report's time; this one's, for a first
 * report). An issue's span begins where its condition did (a sustained one is reported
 * once it has held long enough, from its start). */
static void spans(const struct kh_q_verdict *v, const struct kh_q_state *st,
                  const int64_t *prev_began, int64_t start_usec, int64_t *began)
{
    for (int i = 0; i < KH_QI_COUNT; i++) {
        /* a first interval has no length: its run is 0 while its issue stands */
        if (!(st->run_s[i] > 0) && !((v->warnings | v->bads) & (1u << i)))
            began[i] = 0;
        else if (prev_began && prev_began[i] > 0)
            began[i] = prev_began[i];
        else
            began[i] = start_usec;
    }
}

/* {"high_loss": {"severity": "warning", "value": 3.2, "began": "..."}, ...} */
static int put_issues(struct kh_buf *b, const struct kh_q_verdict *v, const double *values,
                      const int64_t *began)
{
    int rc = 0;
    for (int i = 0; rc == 0 && i < KH_QI_COUNT; i++) {
        bool bad = v->bads & (1u << i);
        if (!bad && !(v->warnings & (1u << i)))
            continue;
        char when[KH_TIME_TEXT_LEN + 1];
        kh_time_format(began[i], when);
        rc = kh_buf_printf(b, "%s\"%s\":{\"severity\":\"%s\"", b->len ? "," : "{",
                           kh_q_detectors[i].name, bad ? "bad" : "warning");
        if (rc == 0 && isfinite(values[i]))
            rc = kh_buf_printf(b, ",\"value\":%.6g", values[i]);
        if (rc == 0)
            rc = kh_buf_printf(b, ",\"began\":\"%s\"}", when);
    }
    return rc == 0 && b->len ? kh_buf_append(b, "}", 1) : rc;
}

/* {"run.low_frame_rate": 4, "began.high_loss": 1764...}: what is not zero. */
static int put_state(struct kh_buf *b, const struct kh_q_state *st, const int64_t *began)
{
    int rc = 0;
    for (int i = 0; rc == 0 && i < KH_QI_COUNT; i++) {
        if (st->run_s[i] > 0)
            rc = kh_buf_printf(b, "%s\"%s\":%.17g", b->len ? "," : "{", state_keys[i],
                               st->run_s[i]);
        if (rc == 0 && began[i] > 0)
            rc = kh_buf_printf(b, "%s\"%s\":%lld", b->len ? "," : "{",
                               state_keys[KH_QI_COUNT + i], (long long)began[i]);
    }
    return rc == 0 && b->len ? kh_buf_append(b, "}", 1) : rc;
}

/* "high_loss high_rtt": the issues of these bits, in detector order. */
static int put_names(struct kh_buf *b, uint32_t issues)
{
    int rc = 0;
    for (int i = 0; rc == 0 && i < KH_QI_COUNT; i++)
        if (issues & (1u << i))
            rc = kh_buf_printf(b, "%s%s", b->len ? " " : "", kh_q_detectors[i].name);
    return rc;
}

/* The detectors' values of an interval, for the issues' "value". */
static void detector_values(const struct kh_q_interval *iv, const struct kh_q_conn *cn,
                            unsigned scope, const struct kh_q_state *st,
                            const struct kh_q_thresholds *th, double *out)
{
    for (int i = 0; i < KH_QI_COUNT; i++) {
        const struct kh_q_detector *d = &kh_q_detectors[i];
        out[i] = d->scope & scope ? d->value(iv, cn, st, th) : NAN;
        if (d->by_duration)
            out[i] = NAN; /* replaced by the run below */
    }
}

static const struct kh_q_prev_stream *prev_stream(const struct kh_q_prev *prev,
                                                  const struct kh_q_stream *s)
{
    for (size_t i = 0; prev && i < prev->nstreams; i++) {
        const struct kh_q_stream *p = &prev->streams[i].s;
        if (p->dir == s->dir && p->kind == s->kind && p->stats_id.len == s->stats_id.len &&
            memcmp(p->stats_id.p, s->stats_id.p, s->stats_id.len) == 0)
            return &prev->streams[i];
    }
    return NULL;
}

static void stream_values(struct kh_value *v, const struct kh_q_stream *s,
                          const struct kh_q_interval *iv)
{
    static const struct kh_str kinds[] = {{"audio", 5}, {"video", 5}};
    v[qs_member[QS_KIND]] = str_value(kinds[s->kind], KH_COL_TEXT);
    v[qs_member[QS_MIME]] = str_value(s->mime_type, KH_COL_TEXT);
    v[qs_member[QS_SINCE_START]] = bool_value(iv->since_start);
    const struct {
        enum qs to;
        double d;
    } reals[] = {
        {QS_SECONDS, iv->seconds},         {QS_BITRATE, iv->bitrate},
        {QS_PACKET_RATE, iv->packet_rate}, {QS_LOSS, iv->loss_percent},
        {QS_EXPECTED, iv->expected_packets}, {QS_JITTER, iv->jitter_ms},
        {QS_RTT, iv->rtt_ms},              {QS_JB, iv->jitter_buffer_ms},
        {QS_CONCEALMENT, iv->concealment_percent}, {QS_FPS, iv->fps},
        {QS_SOURCE_FPS, iv->source_fps},   {QS_FREEZE_S, iv->freeze_seconds},
        {QS_PAUSE_S, iv->pause_seconds},   {QS_CODEC_MS, iv->codec_ms_per_frame},
        {QS_LIMIT_BW, 100 * iv->limit_bandwidth}, {QS_LIMIT_CPU, 100 * iv->limit_cpu},
        {QS_LIMIT_OTHER, 100 * iv->limit_other}, {QS_AVAILABLE, iv->available_bitrate},
        {QS_R, iv->r_factor},              {QS_MOS, iv->mos},
        {QS_BYTES, s->bytes},              {QS_PACKETS, s->packets},
        {QS_LOST, s->packets_lost},        {QS_DISCARDED, s->packets_discarded},
        {QS_JB_DELAY, s->jb_delay},        {QS_JB_EMITTED, s->jb_emitted},
        {QS_CONCEALED, s->concealed},      {QS_SAMPLES, s->samples},
        {QS_FRAMES, s->frames},            {QS_FREEZE_COUNT, s->freezes},
        {QS_FREEZE_TOTAL, s->freeze_s},    {QS_PAUSE_COUNT, s->pauses},
        {QS_PAUSE_TOTAL, s->pause_s},      {QS_CODEC_S, s->codec_s},
        {QS_QL_BW, s->ql_bandwidth_s},     {QS_QL_CPU, s->ql_cpu_s},
        {QS_QL_OTHER, s->ql_other_s},      {QS_QL_NONE, s->ql_none_s},
        {QS_REMOTE_LOST, s->remote_lost},  {QS_REMOTE_TS, s->remote_ts_ms},
    };
    for (size_t i = 0; i < sizeof(reals) / sizeof(reals[0]); i++)
        v[qs_member[reals[i].to]] = real_value(reals[i].d);
    v[qs_member[QS_SSRC]] = int_value(s->ssrc);
    v[qs_member[QS_WIDTH]] = int_value(iv->width);
    v[qs_member[QS_HEIGHT]] = int_value(iv->height);
    v[qs_member[QS_SOURCE_HEIGHT]] = int_value(iv->source_height);
    v[qs_member[QS_FREEZES]] = int_value(iv->freezes);
    v[qs_member[QS_PAUSES]] = int_value(iv->pauses);
}

/* What the connection row sums up of its streams. */
struct totals {
    enum kh_q_severity worst, worst_out, worst_in;
    uint32_t issues; /* every issue bit of the report */
    double mos_min, mos_sum, video_min;
    int mos_n, streams;
};

static enum kh_q_severity max_sev(enum kh_q_severity a, enum kh_q_severity b)
{
    return a > b ? a : b;
}

static int stream_row(struct kh_report *r, const struct kh_q_stream *s,
                      const struct kh_q_transport *tr, const struct kh_q_prev *prev,
                      const struct kh_q_thresholds *th, struct texts *tx, struct totals *tot,
                      struct kh_q_summary *sum)
{
    const struct kh_q_prev_stream *ps = prev_stream(prev, s);
    struct kh_q_interval iv;
    kh_q_interval(ps ? &ps->s : NULL, s, ps && prev->tr.present ? &prev->tr : NULL,
                  tr, &iv);
    struct kh_q_state st;
    if (ps)
        st = ps->st;
    else
        memset(&st, 0, sizeof(st));
    unsigned scope = kh_q_scope(s->kind, s->dir);
    double values[KH_QI_COUNT];
    detector_values(&iv, NULL, scope, &st, th, values);
    struct kh_q_verdict v;
    kh_q_judge(&iv, NULL, scope, th, &st, &v);
    int64_t began[KH_QI_COUNT];
    spans(&v, &st, ps ? ps->began_usec : NULL, ps ? prev->time_usec : r->time_usec, began);
    for (int i = 0; i < KH_QI_COUNT; i++)
        if (kh_q_detectors[i].by_duration && st.run_s[i] > 0)
            values[i] = st.run_s[i];

    struct kh_row *row = new_row(r, kh_table_quality_stream,
                                 s->dir == KH_Q_IN ? "inbound-rtp" : "outbound-rtp",
                                 s->stats_id, s->ts_ms);
    if (row == NULL)
        return KH_ENOMEM;
    stream_values(row->vals, s, &iv);
    row->vals[qs_member[QS_VIDEO_SCORE]] = real_value(v.video_score);
    row->vals[qs_member[QS_SEVERITY]] = int_value(v.severity);
    row->vals[qs_member[QS_BEST_HEIGHT]] = real_value(st.max_height > 0 ? st.max_height : NAN);
    row->vals[qs_member[QS_BEST_FPS]] = real_value(st.max_fps > 0 ? st.max_fps : NAN);
    kh_buf_reset(&tx->issues);
    kh_buf_reset(&tx->state);
    int rc = put_issues(&tx->issues, &v, values, began);
    if (rc == 0)
        rc = put_state(&tx->state, &st, began);
    if (rc == 0)
        rc = buf_value(r, &tx->issues, KH_COL_JSON, &row->vals[qs_member[QS_ISSUES]]);
    if (rc == 0)
        rc = buf_value(r, &tx->state, KH_COL_JSON, &row->vals[qs_member[QS_STATE]]);
    if (rc != 0)
        return KH_ENOMEM;
    kh_report_add_row(r, row);

    tot->worst = max_sev(tot->worst, v.severity);
    tot->issues |= v.warnings | v.bads;
    if (s->dir == KH_Q_OUT)
        tot->worst_out = max_sev(tot->worst_out, v.severity);
    else
        tot->worst_in = max_sev(tot->worst_in, v.severity);
    if (isfinite(iv.mos)) {
        tot->mos_min = fmin(tot->mos_min, iv.mos);
        tot->mos_sum += iv.mos;
        tot->mos_n++;
    }
    if (isfinite(v.video_score))
        tot->video_min = fmin(tot->video_min, v.video_score);
    tot->streams++;
    if (sum && !iv.since_start && sum->nstreams < KH_Q_MAX_STREAMS) {
        sum->streams[sum->nstreams].loss_percent = iv.loss_percent;
        sum->streams[sum->nstreams].rtt_ms = iv.rtt_ms;
        sum->streams[sum->nstreams++].mos = iv.mos;
    }
    return 0;
}

static struct kh_str browser_name(enum kh_q_browser b)
{
    if (b == KH_Q_BROWSER_FIREFOX)
        return (struct kh_str){"firefox", 7};
    if (b == KH_Q_BROWSER_LIBWEBRTC)
        return (struct kh_str){"libwebrtc", 9};
    return (struct kh_str){NULL, 0};
}

static int connection_row(struct kh_report *r, const struct kh_q_transport *t,
                          enum kh_q_browser browser, const struct kh_q_prev *prev,
                          const struct kh_q_thresholds *th, struct texts *tx,
                          struct totals *tot)
{
    static const struct kh_str conn_id = {"connection", 10};
    struct kh_row *row = new_row(r, kh_table_quality_connection, "connection", conn_id,
                                 t->ts_ms);
    if (row == NULL)
        return KH_ENOMEM;
    struct kh_value *v = row->vals;
    const struct kh_q_transport *pt = prev && prev->tr.present ? &prev->tr : NULL;
    struct kh_q_state st;
    int64_t began[KH_QI_COUNT] = {0};
    if (pt)
        st = prev->tr_st;
    else
        memset(&st, 0, sizeof(st));
    kh_buf_reset(&tx->issues);
    kh_buf_reset(&tx->state);
    int rc = 0;
    if (t->present) {
        struct kh_q_conn cn;
        kh_q_conn_interval(pt, t, &cn);
        double values[KH_QI_COUNT];
        detector_values(NULL, &cn, KH_QS_CONNECTION, &st, th, values);
        struct kh_q_verdict cv;
        kh_q_judge(NULL, &cn, KH_QS_CONNECTION, th, &st, &cv);
        spans(&cv, &st, pt ? prev->tr_began_usec : NULL, pt ? prev->time_usec : r->time_usec,
              began);
        tot->worst = max_sev(tot->worst, cv.severity);
        tot->issues |= cv.warnings | cv.bads;
        v[qc_member[QC_SINCE_START]] = bool_value(cn.since_start);
        v[qc_member[QC_SECONDS]] = real_value(cn.seconds);
        v[qc_member[QC_RTT]] = real_value(cn.rtt_ms);
        v[qc_member[QC_AVAILABLE]] = real_value(cn.available_bitrate);
        v[qc_member[QC_SEND]] = real_value(cn.send_bitrate);
        v[qc_member[QC_RECEIVE]] = real_value(cn.receive_bitrate);
        v[qc_member[QC_PAIR_CHANGES]] = int_value(cn.pair_changes);
        v[qc_member[QC_CONNECTED]] = bool_value(cn.connected);
        v[qc_member[QC_RELAY_TCP]] = bool_value(cn.relay_tcp);
        rc = put_issues(&tx->issues, &cv, values, began);
    } else {
        v[qc_member[QC_SINCE_START]] = bool_value(pt == NULL);
    }
    v[qc_member[QC_PAIR_ID]] = str_value(t->pair_id, KH_COL_TEXT);
    v[qc_member[QC_LOCAL_TYPE]] = str_value(t->local_type, KH_COL_TEXT);
    v[qc_member[QC_RELAY_PROTOCOL]] = str_value(t->relay_protocol, KH_COL_TEXT);
    v[qc_member[QC_BROWSER]] = str_value(browser_name(browser), KH_COL_TEXT);
    v[qc_member[QC_SEVERITY]] = int_value(tot->worst);
    v[qc_member[QC_SEVERITY_OUT]] = int_value(tot->worst_out);
    v[qc_member[QC_SEVERITY_IN]] = int_value(tot->worst_in);
    v[qc_member[QC_STREAMS]] = int_value(tot->streams);
    v[qc_member[QC_MOS_MIN]] = real_value(tot->mos_n ? tot->mos_min : NAN);
    v[qc_member[QC_MOS_AVG]] = real_value(tot->mos_n ? tot->mos_sum / tot->mos_n : NAN);
    v[qc_member[QC_VIDEO_MIN]] = real_value(isfinite(tot->video_min) ? tot->video_min : NAN);
    v[qc_member[QC_BYTES_SENT]] = real_value(t->bytes_sent);
    v[qc_member[QC_BYTES_RECEIVED]] = real_value(t->bytes_received);
    v[qc_member[QC_CHANGES]] = real_value(t->pair_changes);
    if (rc == 0)
        rc = put_state(&tx->state, &st, began);
    if (rc == 0)
        rc = put_names(&tx->names, tot->issues);
    if (rc == 0)
        rc = buf_value(r, &tx->issues, KH_COL_JSON, &v[qc_member[QC_ISSUES]]);
    if (rc == 0)
        rc = buf_value(r, &tx->state, KH_COL_JSON, &v[qc_member[QC_STATE]]);
    if (rc == 0)
        rc = buf_value(r, &tx->names, KH_COL_TEXT, &v[qc_member[QC_ISSUE_NAMES]]);
    if (rc != 0)
        return KH_ENOMEM;
    kh_report_add_row(r, row);
    r->rating = row;
    return 0;
}

int kh_q_assess(struct kh_report *r, const struct kh_q_prev *prev,
                const struct kh_q_thresholds *th, struct kh_q_work *w, struct kh_q_summary *sum)
{
    if (prev && (!prev->present || prev->time_usec >= r->time_usec))
        prev = NULL;
    kh_q_sample_report(r, &w->cur);
    /* the rows are appended at the end of the list: on failure it is cut back there */
    struct kh_row **tail = r->rows_tail;
    size_t nrows = r->nrows;
    uint32_t before[2] = {r->table_rows[kh_table_quality_stream],
                          r->table_rows[kh_table_quality_connection]};
    struct texts tx;
    kh_buf_init(&tx.issues, 1u << 16);
    kh_buf_init(&tx.state, 1u << 16);
    kh_buf_init(&tx.names, 1u << 16);
    struct totals tot = {.mos_min = INFINITY, .video_min = INFINITY};
    if (sum)
        sum->nstreams = 0;
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < w->cur.nstreams; i++)
        rc = stream_row(r, &w->cur.streams[i], &w->cur.transport, prev, th, &tx, &tot, sum);
    if (rc == 0)
        rc = connection_row(r, &w->cur.transport, w->cur.browser, prev, th, &tx, &tot);
    kh_buf_cleanup(&tx.issues);
    kh_buf_cleanup(&tx.state);
    kh_buf_cleanup(&tx.names);
    if (rc != 0) {
        *tail = NULL;
        r->rows_tail = tail;
        r->nrows = nrows;
        r->table_rows[kh_table_quality_stream] = before[0];
        r->table_rows[kh_table_quality_connection] = before[1];
        return KH_ENOMEM;
    }
    if (sum)
        sum->severity = tot.worst;
    return 0;
}
