/*
 * quality_report: what `kohaku quality` and the console say about a connection, a channel or
 * the worst connections. See quality_report.h; the README's "Quality" section shows the
 * output and the SQL.
 *
 * Everything is read with the store's query, one statement per question, from the quality
 * tables and views; nothing is recomputed here but the channel's attribution: a participant's
 * inbound issues that overlap another participant's outbound (uplink) issues in time are put
 * down to that participant's uplink, the others to the participant's own downlink.
 *
 * SQL is built from constants; the ids and times are parameters. Times come back as
 * microseconds (kh_schema_time_usec_sql) so both dialects give the same numbers.
 */
#include "api/quality_report.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/ask.h"
#include "core/arena.h"
#include "core/errors.h"
#include "core/jsonw.h"
#include "core/timeutil.h"
#include "sora/schema.h"

/* --- what is read ------------------------------------------------------------------------ */

enum { V_FIRST, V_LAST, V_SECONDS, V_SEV, V_VERDICT, V_SEV_OUT, V_SEV_IN, V_MOS_MIN, V_MOS_AVG,
       V_VIDEO_MIN, V_REPORTS, V_CHANNEL };
static const char verdict_sql[] =
    "SELECT #(first_report), #(last_report), seconds, severity, verdict, severity_outbound, "
    "severity_inbound, mos_min, mos_avg, video_score_min, reports, channel_id "
    "FROM quality_connection_verdict WHERE connection_id = @1";

enum { S_TYPE, S_ID, S_KIND, S_ISSUE, S_BEGAN, S_ENDED, S_SEV, S_INTERVALS, S_MIN, S_MAX };
static const char spans_sql[] =
    "SELECT stats_type, stats_id, kind, issue, #(began), #(ended), severity, intervals, "
    "value_min, value_max FROM quality_issue_span WHERE connection_id = @1 ORDER BY 5, 4, 2";

enum { ST_TYPE, ST_ID, ST_KIND, ST_MIME, ST_SAMPLES, ST_INTERVALS, ST_LOSS, ST_LOSS_MAX, ST_RTT,
       ST_JITTER, ST_MOS, ST_MOS_MIN, ST_VS, ST_VS_MIN, ST_BITRATE, ST_FPS, ST_HEIGHT,
       ST_FROZEN, ST_LIM_BW, ST_LIM_CPU, ST_SEV };
#define RATED(x) "CASE WHEN since_start THEN NULL ELSE " x " END"
static const char streams_sql[] =
    "SELECT stats_type, stats_id, kind, max(mime_type), count(*), "
    "sum(" RATED("1") "), avg(" RATED("loss_percent") "), max(" RATED("loss_percent") "), "
    "avg(round_trip_time_ms), avg(jitter_ms), avg(" RATED("mos") "), min(" RATED("mos") "), "
    "avg(video_score), min(video_score), avg(bitrate), avg(" RATED("frames_per_second") "), "
    "max(frame_height), sum(" RATED("freeze_seconds") "), "
    "avg(" RATED("limitation_bandwidth_percent") "), avg(" RATED("limitation_cpu_percent") "), "
    "max(severity) FROM quality_stream WHERE connection_id = @1 "
    "GROUP BY stats_type, stats_id, kind ORDER BY 1, 3, 2";

enum { I_TIME, I_TYPE, I_ID, I_KIND, I_SINCE, I_SECONDS, I_BITRATE, I_LOSS, I_RTT, I_JITTER,
       I_MOS, I_VS, I_FPS, I_HEIGHT, I_SEV, I_ISSUES };
static const char intervals_sql[] =
    "SELECT #(\"time\"), stats_type, stats_id, kind, since_start, seconds, bitrate, "
    "loss_percent, round_trip_time_ms, jitter_ms, mos, video_score, frames_per_second, "
    "frame_height, severity, issues FROM quality_stream WHERE connection_id = @1 "
    "ORDER BY 1, 2, 4, 3";

enum { C_CHANNEL, C_CLIENT, C_ROLE };
static const char info_sql[] =
    "SELECT channel_id, client_id, role FROM sora_connection WHERE connection_id = @1";

enum { M_ID, M_CLIENT, M_ROLE };
static const char members_sql[] =
    "SELECT connection_id, client_id, role FROM sora_connection WHERE channel_id = @1 "
    "ORDER BY first_seen, connection_id";

/* PostgreSQL: a channel's participants' verdicts and spans in two questions for all of them,
 * not two per participant (48 round trips to the server for a channel of 24: under ingest
 * the channel took 32-131 ms, median 68, against 23-104, median 45, so): verdict_sql's and
 * spans_sql's columns, then connection_id, ordered by it first. SQLite asks per participant:
 * it does not push "connection_id IN (...)" into the views' grouped arms and read the whole
 * quality tables (453 ms against 4-7 for a channel of 24 over a million stats rows), and its
 * questions cost no round trip. */
static const char channel_verdicts_sql[] =
    "SELECT #(first_report), #(last_report), seconds, severity, verdict, severity_outbound, "
    "severity_inbound, mos_min, mos_avg, video_score_min, reports, channel_id, connection_id "
    "FROM quality_connection_verdict WHERE connection_id " KH_QR_CHANNEL_MEMBERS_PG
    " ORDER BY connection_id";
static const char channel_spans_sql[] =
    "SELECT stats_type, stats_id, kind, issue, #(began), #(ended), severity, intervals, "
    "value_min, value_max, connection_id FROM quality_issue_span WHERE connection_id "
    KH_QR_CHANNEL_MEMBERS_PG " ORDER BY connection_id, 5, 4, 2";

enum { W_ID, W_CHANNEL, W_SEV, W_MOS_MIN, W_MOS_AVG, W_VIDEO_MIN, W_REPORTS, W_LAST, W_CLIENT,
       W_SEV_OUT, W_SEV_IN };
/* The connections seen since the bound with a verdict, worst first, from sora_connection's
 * verdict columns (kept at ingest, schema version 7: one row per connection, however often
 * it reports), found by the hour of their last report (@3, the bound's: last_seen itself is
 * not indexed, schema version 9); then the chosen ones' reports since the bound, their mean
 * MOS and the latest, from their own quality rows. */
#define WORST_SQL(order)                                                                       \
    "WITH w AS (SELECT connection_id, channel_id, client_id, severity, mos_min, "              \
    "video_score_min, severity_outbound, severity_inbound FROM sora_connection "               \
    "WHERE last_seen_hour >= @3 AND last_seen >= @1 AND severity IS NOT NULL "                 \
    "ORDER BY " order " LIMIT @2) "                                                            \
    "SELECT w.connection_id, w.channel_id, w.severity, w.mos_min, a.mos_avg, "                 \
    "w.video_score_min, a.reports, #(a.last_report), w.client_id, w.severity_outbound, "       \
    "w.severity_inbound FROM w LEFT JOIN (SELECT connection_id AS qid, avg(mos_avg) AS "       \
    "mos_avg, count(*) AS reports, max(\"time\") AS last_report FROM quality_connection "      \
    "WHERE \"time\" >= @1 AND connection_id IN (SELECT connection_id FROM w) "                 \
    "GROUP BY connection_id) a ON a.qid = w.connection_id ORDER BY " order
static const char worst_sql_pg[] = WORST_SQL(
    "severity DESC, mos_min ASC NULLS LAST, video_score_min ASC NULLS LAST, connection_id");
static const char worst_sql_sqlite[] = WORST_SQL(
    "severity DESC, mos_min IS NULL, mos_min, video_score_min IS NULL, video_score_min, "
    "connection_id");

/* One connection's verdict and spans (its own tables; for a channel on PostgreSQL, views into
 * the channel's: split_rows). */
struct conn {
    const char *id, *client;
    struct kh_ask_table verdict, spans;
};

static int read_conn(struct kh_ask *c, struct conn *k)
{
    struct kh_value id = kh_ask_text(k->id);
    int rc = kh_ask_sql(c, verdict_sql);
    rc = rc ? rc : kh_ask_run(c, &k->verdict, &id, 1);
    rc = rc ? rc : kh_ask_sql(c, spans_sql);
    return rc ? rc : kh_ask_run(c, &k->spans, &id, 1);
}

static void free_conn(struct conn *k)
{
    kh_ask_table_free(&k->verdict);
    kh_ask_table_free(&k->spans);
}

/* --- words --------------------------------------------------------------------------------- */

static const char *severity_name(int64_t s) { return s >= 2 ? "bad" : s == 1 ? "warning" : "ok"; }

static const char *direction(const char *stats_type)
{
    if (stats_type && strcmp(stats_type, "outbound-rtp") == 0)
        return "outbound";
    if (stats_type && strcmp(stats_type, "inbound-rtp") == 0)
        return "inbound";
    return "connection";
}

static void time_text(int64_t usec, char *out)
{
    kh_time_format(usec, out);
    out[19] = '\0'; /* "YYYY-MM-DDTHH:MM:SS" */
    out[10] = ' ';
}

/* prefix, v with this many decimals, suffix ("MOS 4.21"), or "-" when v is unknown */
static void fmt3(char *out, size_t len, double v, int decimals, const char *prefix,
                 const char *suffix)
{
    if (isfinite(v))
        snprintf(out, len, "%s%.*f%s", prefix, decimals, v, suffix);
    else
        snprintf(out, len, "-");
}

static void fmt(char *out, size_t len, double v, int decimals)
{
    fmt3(out, len, v, decimals, "", "");
}

/* --- JSON ---------------------------------------------------------------------------------- */

static int j_span(struct kh_buf *b, const struct kh_ask_table *s, size_t i)
{
    bool f = true;
    int rc = kh_buf_append(b, "{", 1);
    rc |= kh_json_str_member(b, &f, "issue", kh_ask_str(s, i, S_ISSUE));
    rc |= kh_json_str_member(b, &f, "severity", kh_ask_str(s, i, S_SEV));
    rc |= kh_json_str_member(b, &f, "direction", direction(kh_ask_str(s, i, S_TYPE)));
    rc |= kh_json_str_member(b, &f, "kind", kh_ask_str(s, i, S_KIND));
    rc |= kh_json_str_member(b, &f, "stats_id", kh_ask_str(s, i, S_ID));
    rc |= kh_json_time_member(b, &f, "began", kh_ask_int(s, i, S_BEGAN));
    rc |= kh_json_time_member(b, &f, "ended", kh_ask_int(s, i, S_ENDED));
    rc |= kh_json_num_member(b, &f, "intervals", kh_ask_num(s, i, S_INTERVALS));
    rc |= kh_json_num_member(b, &f, "value_min", kh_ask_num(s, i, S_MIN));
    rc |= kh_json_num_member(b, &f, "value_max", kh_ask_num(s, i, S_MAX));
    return rc | kh_buf_append(b, "}", 1);
}

static int j_verdict(struct kh_buf *b, bool *f, const struct kh_ask_table *v)
{
    int rc = kh_json_str_member(b, f, "verdict", kh_ask_str(v, 0, V_VERDICT));
    rc |= kh_json_num_member(b, f, "severity", kh_ask_num(v, 0, V_SEV));
    rc |= kh_json_str_member(b, f, "uplink", severity_name(kh_ask_int(v, 0, V_SEV_OUT)));
    rc |= kh_json_str_member(b, f, "downlink", severity_name(kh_ask_int(v, 0, V_SEV_IN)));
    rc |= kh_json_num_member(b, f, "mos_min", kh_ask_num(v, 0, V_MOS_MIN));
    rc |= kh_json_num_member(b, f, "mos_avg", kh_ask_num(v, 0, V_MOS_AVG));
    rc |= kh_json_num_member(b, f, "video_score_min", kh_ask_num(v, 0, V_VIDEO_MIN));
    rc |= kh_json_time_member(b, f, "first_report", kh_ask_int(v, 0, V_FIRST));
    rc |= kh_json_time_member(b, f, "last_report", kh_ask_int(v, 0, V_LAST));
    rc |= kh_json_num_member(b, f, "seconds", kh_ask_num(v, 0, V_SECONDS));
    return rc | kh_json_num_member(b, f, "reports", kh_ask_num(v, 0, V_REPORTS));
}

static int j_spans(struct kh_buf *b, bool *f, const struct kh_ask_table *s)
{
    int rc = kh_json_key(b, f, "issues") | kh_buf_append(b, "[", 1);
    for (size_t i = 0; rc == 0 && i < s->n; i++)
        rc = (i ? kh_buf_append(b, ",", 1) : 0) | j_span(b, s, i);
    return rc | kh_buf_append(b, "]", 1);
}

static int j_stream(struct kh_buf *b, const struct kh_ask_table *t, size_t i)
{
    bool f = true;
    int rc = kh_buf_append(b, "{", 1);
    rc |= kh_json_str_member(b, &f, "direction", direction(kh_ask_str(t, i, ST_TYPE)));
    rc |= kh_json_str_member(b, &f, "kind", kh_ask_str(t, i, ST_KIND));
    rc |= kh_json_str_member(b, &f, "stats_id", kh_ask_str(t, i, ST_ID));
    rc |= kh_json_str_member(b, &f, "codec", kh_ask_str(t, i, ST_MIME));
    rc |= kh_json_num_member(b, &f, "reports", kh_ask_num(t, i, ST_SAMPLES));
    rc |= kh_json_num_member(b, &f, "intervals", kh_ask_num(t, i, ST_INTERVALS));
    const struct {
        const char *key;
        int col;
    } nums[] = {{"loss_percent_avg", ST_LOSS}, {"loss_percent_max", ST_LOSS_MAX},
                {"round_trip_time_ms_avg", ST_RTT}, {"jitter_ms_avg", ST_JITTER},
                {"mos_avg", ST_MOS}, {"mos_min", ST_MOS_MIN}, {"video_score_avg", ST_VS},
                {"video_score_min", ST_VS_MIN}, {"bitrate_avg", ST_BITRATE},
                {"frames_per_second_avg", ST_FPS}, {"frame_height_max", ST_HEIGHT},
                {"freeze_seconds", ST_FROZEN}, {"limitation_bandwidth_percent_avg", ST_LIM_BW},
                {"limitation_cpu_percent_avg", ST_LIM_CPU}, {"severity", ST_SEV}};
    for (size_t k = 0; k < sizeof(nums) / sizeof(nums[0]); k++)
        rc |= kh_json_num_member(b, &f, nums[k].key, kh_ask_num(t, i, nums[k].col));
    return rc | kh_buf_append(b, "}", 1);
}

static int j_interval(struct kh_buf *b, const struct kh_ask_table *t, size_t i)
{
    bool f = true;
    int rc = kh_buf_append(b, "{", 1);
    rc |= kh_json_time_member(b, &f, "time", kh_ask_int(t, i, I_TIME));
    rc |= kh_json_str_member(b, &f, "direction", direction(kh_ask_str(t, i, I_TYPE)));
    rc |= kh_json_str_member(b, &f, "kind", kh_ask_str(t, i, I_KIND));
    rc |= kh_json_str_member(b, &f, "stats_id", kh_ask_str(t, i, I_ID));
    rc |= kh_json_key(b, &f, "since_start") |
          kh_buf_printf(b, kh_ask_num(t, i, I_SINCE) > 0 ? "true" : "false");
    const struct {
        const char *key;
        int col;
    } nums[] = {{"seconds", I_SECONDS},     {"bitrate", I_BITRATE},
                {"loss_percent", I_LOSS},   {"round_trip_time_ms", I_RTT},
                {"jitter_ms", I_JITTER},    {"mos", I_MOS},
                {"video_score", I_VS},      {"frames_per_second", I_FPS},
                {"frame_height", I_HEIGHT}, {"severity", I_SEV}};
    for (size_t k = 0; k < sizeof(nums) / sizeof(nums[0]); k++)
        rc |= kh_json_num_member(b, &f, nums[k].key, kh_ask_num(t, i, nums[k].col));
    const char *issues = kh_ask_str(t, i, I_ISSUES);
    rc |= kh_json_key(b, &f, "issues");
    rc |= issues ? kh_buf_append(b, issues, strlen(issues)) : kh_buf_printf(b, "null");
    return rc | kh_buf_append(b, "}", 1);
}

/* --- text ---------------------------------------------------------------------------------- */

static int t_spans(struct kh_buf *b, const struct kh_ask_table *s, const char *indent)
{
    if (s->n == 0)
        return kh_buf_printf(b, "%sno issues\n", indent);
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < s->n; i++) {
        char from[KH_TIME_TEXT_LEN + 1], to[KH_TIME_TEXT_LEN + 1], lo[32], hi[32];
        int64_t began = kh_ask_int(s, i, S_BEGAN), ended = kh_ask_int(s, i, S_ENDED);
        time_text(began, from);
        time_text(ended, to);
        fmt(lo, sizeof(lo), kh_ask_num(s, i, S_MIN), 2);
        fmt(hi, sizeof(hi), kh_ask_num(s, i, S_MAX), 2);
        const char *kind = kh_ask_str(s, i, S_KIND);
        rc = kh_buf_printf(b, "%s%-7s %-19s %-10s %-5s %s..%s (%.0f s, %lld intervals) value "
                              "%s..%s  [%s]\n",
                           indent, kh_ask_str(s, i, S_SEV), kh_ask_str(s, i, S_ISSUE),
                           direction(kh_ask_str(s, i, S_TYPE)), kind ? kind : "", from, to + 11,
                           (double)(ended - began) / 1e6, (long long)kh_ask_int(s, i, S_INTERVALS),
                           lo, hi, kh_ask_str(s, i, S_ID));
    }
    return rc;
}

static int t_verdict(struct kh_buf *b, const struct kh_ask_table *v)
{
    char from[KH_TIME_TEXT_LEN + 1], to[KH_TIME_TEXT_LEN + 1], mmin[32], mavg[32], vmin[32];
    time_text(kh_ask_int(v, 0, V_FIRST), from);
    time_text(kh_ask_int(v, 0, V_LAST), to);
    fmt(mmin, sizeof(mmin), kh_ask_num(v, 0, V_MOS_MIN), 2);
    fmt(mavg, sizeof(mavg), kh_ask_num(v, 0, V_MOS_AVG), 2);
    fmt(vmin, sizeof(vmin), kh_ask_num(v, 0, V_VIDEO_MIN), 2);
    return kh_buf_printf(b,
                         "Reports: %lld, %s .. %s UTC (%.0f s)\n"
                         "Verdict: %s (uplink %s, downlink %s)\n"
                         "Audio MOS: min %s, mean %s   Video score: min %s\n",
                         (long long)kh_ask_int(v, 0, V_REPORTS), from, to + 11,
                         kh_ask_num(v, 0, V_SECONDS), kh_ask_str(v, 0, V_VERDICT),
                         severity_name(kh_ask_int(v, 0, V_SEV_OUT)),
                         severity_name(kh_ask_int(v, 0, V_SEV_IN)), mmin, mavg, vmin);
}

static int t_streams(struct kh_buf *b, const struct kh_ask_table *t)
{
    int rc = kh_buf_printf(b, "Streams (means over the rated intervals):\n");
    for (size_t i = 0; rc == 0 && i < t->n; i++) {
        char loss[32], lmax[32], rtt[32], jit[32], mos[32], vs[32], rate[32], fps[80];
        fmt3(loss, sizeof(loss), kh_ask_num(t, i, ST_LOSS), 2, "", "%");
        fmt3(lmax, sizeof(lmax), kh_ask_num(t, i, ST_LOSS_MAX), 2, "", "%");
        fmt3(rtt, sizeof(rtt), kh_ask_num(t, i, ST_RTT), 0, "", " ms");
        fmt3(jit, sizeof(jit), kh_ask_num(t, i, ST_JITTER), 1, "", " ms");
        fmt3(rate, sizeof(rate), kh_ask_num(t, i, ST_BITRATE) / 1000, 0, "", " kbit/s");
        bool audio = kh_ask_str(t, i, ST_KIND) && strcmp(kh_ask_str(t, i, ST_KIND), "audio") == 0;
        if (audio) {
            fmt3(mos, sizeof(mos), kh_ask_num(t, i, ST_MOS), 2, "MOS ", "");
            fmt3(vs, sizeof(vs), kh_ask_num(t, i, ST_MOS_MIN), 2, "(min ", ")");
            fps[0] = '\0';
        } else {
            fmt3(mos, sizeof(mos), kh_ask_num(t, i, ST_VS), 2, "score ", "");
            fmt3(vs, sizeof(vs), kh_ask_num(t, i, ST_VS_MIN), 2, "(min ", ")");
            char f[32], h[32];
            fmt3(f, sizeof(f), kh_ask_num(t, i, ST_FPS), 1, "", " fps");
            fmt3(h, sizeof(h), kh_ask_num(t, i, ST_HEIGHT), 0, "", "p");
            snprintf(fps, sizeof(fps), "  %s %s", f, h);
        }
        const char *codec = kh_ask_str(t, i, ST_MIME);
        rc = kh_buf_printf(b,
                           "  %-5s %-8s %-10s %-10s %lld intervals  %s  loss %s (max %s)  rtt %s"
                           "  jitter %s  %s %s%s  [%s]\n",
                           kh_ask_str(t, i, ST_KIND), direction(kh_ask_str(t, i, ST_TYPE)),
                           codec ? codec : "-", severity_name(kh_ask_int(t, i, ST_SEV)),
                           (long long)kh_ask_int(t, i, ST_INTERVALS), rate, loss, lmax, rtt, jit,
                           mos, vs, fps, kh_ask_str(t, i, ST_ID));
    }
    return rc;
}

static int t_intervals(struct kh_buf *b, const struct kh_ask_table *t)
{
    int rc = kh_buf_printf(b,
                           "Intervals:\n  time      dir      kind  seconds  kbit/s  loss%%  rtt ms"
                           "  jitter ms  mos   score  fps   height  severity\n");
    for (size_t i = 0; rc == 0 && i < t->n; i++) {
        char when[KH_TIME_TEXT_LEN + 1], c[10][24];
        time_text(kh_ask_int(t, i, I_TIME), when);
        fmt(c[0], sizeof(c[0]), kh_ask_num(t, i, I_SECONDS), 1);
        fmt(c[1], sizeof(c[1]), kh_ask_num(t, i, I_BITRATE) / 1000, 0);
        fmt(c[2], sizeof(c[2]), kh_ask_num(t, i, I_LOSS), 2);
        fmt(c[3], sizeof(c[3]), kh_ask_num(t, i, I_RTT), 0);
        fmt(c[4], sizeof(c[4]), kh_ask_num(t, i, I_JITTER), 1);
        fmt(c[5], sizeof(c[5]), kh_ask_num(t, i, I_MOS), 2);
        fmt(c[6], sizeof(c[6]), kh_ask_num(t, i, I_VS), 2);
        fmt(c[7], sizeof(c[7]), kh_ask_num(t, i, I_FPS), 1);
        fmt(c[8], sizeof(c[8]), kh_ask_num(t, i, I_HEIGHT), 0);
        rc = kh_buf_printf(b, "  %s %-8s %-5s %7s %7s %6s %7s %10s %5s %6s %5s %7s  %s%s\n",
                           when + 11, direction(kh_ask_str(t, i, I_TYPE)), kh_ask_str(t, i, I_KIND),
                           c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8],
                           severity_name(kh_ask_int(t, i, I_SEV)),
                           kh_ask_num(t, i, I_SINCE) > 0 ? " (since start)" : "");
    }
    return rc;
}

/* --- the three answers ----------------------------------------------------------------------- */

static int answer_connection(struct kh_ask *c, const struct kh_qr_request *q, struct kh_buf *out)
{
    struct conn k = {.id = q->id};
    struct kh_ask_table info = {0}, streams = {0}, ivs = {0};
    struct kh_value id = kh_ask_text(q->id);
    int rc = read_conn(c, &k);
    rc = rc ? rc : kh_ask_sql(c, info_sql);
    rc = rc ? rc : kh_ask_run(c, &info, &id, 1);
    rc = rc ? rc : kh_ask_sql(c, streams_sql);
    rc = rc ? rc : kh_ask_run(c, &streams, &id, 1);
    if (rc == 0 && q->intervals)
        rc = kh_ask_sql(c, intervals_sql) ? KH_ENOMEM : kh_ask_run(c, &ivs, &id, 1);
    if (rc == 0 && k.verdict.n == 0) {
        *c->err = kh_errf("no quality rows for connection %s%s", q->id,
                          info.n ? " (its reports are stored: were they rated? quality = "
                                   "false, or stored before schema version 5)"
                                 : "");
        rc = KH_EINVAL;
    }
    const char *client = rc == 0 && info.n ? kh_ask_str(&info, 0, C_CLIENT) : NULL;
    const char *role = rc == 0 && info.n ? kh_ask_str(&info, 0, C_ROLE) : NULL;
    if (rc == 0 && q->json) {
        bool f = true;
        rc = kh_buf_append(out, "{", 1);
        rc |= kh_json_str_member(out, &f, "connection_id", q->id);
        rc |= kh_json_str_member(out, &f, "channel_id", kh_ask_str(&k.verdict, 0, V_CHANNEL));
        rc |= kh_json_str_member(out, &f, "client_id", client);
        rc |= kh_json_str_member(out, &f, "role", role);
        rc |= j_verdict(out, &f, &k.verdict);
        rc |= j_spans(out, &f, &k.spans);
        rc |= kh_json_key(out, &f, "streams") | kh_buf_append(out, "[", 1);
        for (size_t i = 0; i < streams.n; i++)
            rc |= (i ? kh_buf_append(out, ",", 1) : 0) | j_stream(out, &streams, i);
        rc |= kh_buf_append(out, "]", 1);
        if (q->intervals) {
            rc |= kh_json_key(out, &f, "intervals") | kh_buf_append(out, "[", 1);
            for (size_t i = 0; i < ivs.n; i++)
                rc |= (i ? kh_buf_append(out, ",", 1) : 0) | j_interval(out, &ivs, i);
            rc |= kh_buf_append(out, "]", 1);
        }
        rc |= kh_buf_append(out, "}\n", 2);
    } else if (rc == 0) {
        rc = kh_buf_printf(out, "Connection %s  channel %s  client %s  role %s\n", q->id,
                           kh_ask_str(&k.verdict, 0, V_CHANNEL), client ? client : "-",
                           role ? role : "-");
        rc |= t_verdict(out, &k.verdict);
        rc |= kh_buf_printf(out, "Issues:\n");
        rc |= t_spans(out, &k.spans, "  ");
        rc |= t_streams(out, &streams);
        if (q->intervals)
            rc |= t_intervals(out, &ivs);
    }
    if (rc > 0 || (rc < 0 && rc != KH_EINVAL && rc != KH_EIO && rc != KH_ERETRY)) {
        *c->err = "out of memory writing the answer";
        rc = KH_ENOMEM;
    }
    free_conn(&k);
    kh_ask_table_free(&info);
    kh_ask_table_free(&streams);
    kh_ask_table_free(&ivs);
    return rc;
}

/* Whose uplink the participant's inbound span i is put down to: the first other participant
 * with an outbound span overlapping it, or NULL (its own downlink). */
static const struct conn *blame(const struct conn *ks, size_t n, size_t self,
                                const struct kh_ask_table *s, size_t i)
{
    int64_t began = kh_ask_int(s, i, S_BEGAN), ended = kh_ask_int(s, i, S_ENDED);
    for (size_t o = 0; o < n; o++) {
        if (o == self)
            continue;
        const struct kh_ask_table *t = &ks[o].spans;
        for (size_t k = 0; k < t->n; k++)
            if (strcmp(direction(kh_ask_str(t, k, S_TYPE)), "outbound") == 0 &&
                kh_ask_int(t, k, S_BEGAN) <= ended && kh_ask_int(t, k, S_ENDED) >= began)
                return &ks[o];
    }
    return NULL;
}

/* Issue names of the participant's spans in one direction, space-separated, once each. */
static void names(const struct kh_ask_table *s, const char *dir, char *out, size_t len)
{
    out[0] = '\0';
    for (size_t i = 0; i < s->n; i++) {
        const char *issue = kh_ask_str(s, i, S_ISSUE);
        if (strcmp(direction(kh_ask_str(s, i, S_TYPE)), dir) != 0 || strstr(out, issue))
            continue;
        size_t used = strlen(out);
        snprintf(out + used, len - used, "%s%s", used ? " " : "", issue);
    }
}

static int channel_participant(struct kh_buf *out, bool json, const struct conn *ks, size_t n,
                               size_t p)
{
    const struct conn *k = &ks[p];
    const struct kh_ask_table *v = &k->verdict, *s = &k->spans;
    char up[512], down[512], conn[512], others[512] = "", own[512] = "";
    names(s, "outbound", up, sizeof(up));
    names(s, "inbound", down, sizeof(down));
    names(s, "connection", conn, sizeof(conn));
    for (size_t i = 0; i < s->n; i++) {
        if (strcmp(direction(kh_ask_str(s, i, S_TYPE)), "inbound") != 0)
            continue;
        const struct conn *who = blame(ks, n, p, s, i);
        char *into = who ? others : own;
        size_t used = strlen(into);
        const char *what = who ? (who->client ? who->client : who->id) : kh_ask_str(s, i, S_ISSUE);
        if (!strstr(into, what))
            snprintf(into + used, sizeof(others) - used, "%s%s", used ? " " : "", what);
    }
    if (json) {
        bool f = true;
        int rc = kh_buf_append(out, "{", 1);
        rc |= kh_json_str_member(out, &f, "connection_id", k->id);
        rc |= kh_json_str_member(out, &f, "client_id", k->client);
        if (v->n)
            rc |= j_verdict(out, &f, v);
        rc |= kh_json_str_member(out, &f, "uplink_issues", up);
        rc |= kh_json_str_member(out, &f, "downlink_issues", down);
        rc |= kh_json_str_member(out, &f, "connection_issues", conn);
        rc |= kh_json_str_member(out, &f, "downlink_from_others_uplink", others);
        rc |= kh_json_str_member(out, &f, "downlink_own", own);
        rc |= j_spans(out, &f, s);
        return rc | kh_buf_append(out, "}", 1);
    }
    if (v->n == 0)
        return kh_buf_printf(out, "  %s (%s): no quality rows\n", k->client ? k->client : "-",
                             k->id);
    int rc = kh_buf_printf(out, "  %s (%s): %s; uplink %s%s%s%s, downlink %s%s%s%s\n",
                           k->client ? k->client : "-", k->id, kh_ask_str(v, 0, V_VERDICT),
                           severity_name(kh_ask_int(v, 0, V_SEV_OUT)), up[0] ? " (" : "", up,
                           up[0] ? ")" : "", severity_name(kh_ask_int(v, 0, V_SEV_IN)),
                           down[0] ? " (" : "", down, down[0] ? ")" : "");
    if (rc == 0 && others[0])
        rc = kh_buf_printf(out, "    its downlink issues overlap the uplink issues of: %s\n",
                           others);
    if (rc == 0 && own[0])
        rc = kh_buf_printf(out, "    its own downlink: %s\n", own);
    if (rc == 0 && conn[0])
        rc = kh_buf_printf(out, "    its connection: %s\n", conn);
    return rc;
}

/* Gives each participant the rows of t (ordered by its column col, the connection id, a key
 * column: never NULL) that are its own, as a view into t's cells: t keeps them, the views
 * are not freed. */
static void split_rows(const struct kh_ask_table *t, int col, struct conn *ks, size_t n,
                       bool spans)
{
    for (size_t lo = 0, hi; lo < t->n; lo = hi) {
        const char *id = kh_ask_str(t, lo, col);
        for (hi = lo + 1; hi < t->n && strcmp(kh_ask_str(t, hi, col), id) == 0; hi++)
            ;
        for (size_t k = 0; k < n; k++) {
            if (strcmp(ks[k].id, id) != 0)
                continue;
            *(spans ? &ks[k].spans : &ks[k].verdict) = (struct kh_ask_table){
                .arena = t->arena, .ncols = t->ncols, .n = hi - lo,
                .cells = t->cells + lo * (size_t)t->ncols};
            break;
        }
    }
}

static int answer_channel(struct kh_ask *c, const struct kh_qr_request *q, struct kh_buf *out)
{
    struct kh_ask_table members = {0}, verdicts = {0}, spans = {0};
    struct kh_value id = kh_ask_text(q->id);
    int rc = kh_ask_sql(c, members_sql);
    rc = rc ? rc : kh_ask_run(c, &members, &id, 1);
    if (rc == 0 && members.n == 0) {
        *c->err = kh_errf("no connections stored for channel %s", q->id);
        rc = KH_EINVAL;
    }
    if (c->pg) {
        rc = rc ? rc : kh_ask_sql(c, channel_verdicts_sql);
        rc = rc ? rc : kh_ask_run(c, &verdicts, &id, 1);
        rc = rc ? rc : kh_ask_sql(c, channel_spans_sql);
        rc = rc ? rc : kh_ask_run(c, &spans, &id, 1);
    }
    size_t n = rc == 0 ? members.n : 0;
    struct conn *ks = calloc(n ? n : 1, sizeof(*ks));
    if (ks == NULL)
        rc = KH_ENOMEM;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        ks[i].id = kh_ask_str(&members, i, M_ID);
        ks[i].client = kh_ask_str(&members, i, M_CLIENT);
        if (!c->pg)
            rc = read_conn(c, &ks[i]);
    }
    if (rc == 0 && c->pg) {
        split_rows(&verdicts, V_CHANNEL + 1, ks, n, false);
        split_rows(&spans, S_MAX + 1, ks, n, true);
    }
    if (rc == 0) {
        rc = q->json ? kh_buf_printf(out, "{\"channel_id\":") |
                           kh_buf_put_json_str(out, q->id, strlen(q->id)) |
                           kh_buf_printf(out, ",\"participants\":[")
                     : kh_buf_printf(out, "Channel %s: %zu connections\n", q->id, n);
        for (size_t i = 0; rc == 0 && i < n; i++)
            rc = (q->json && i ? kh_buf_append(out, ",", 1) : 0) |
                 channel_participant(out, q->json, ks, n, i);
        if (rc == 0 && q->json)
            rc = kh_buf_append(out, "]}\n", 3);
    }
    for (size_t i = 0; ks && !c->pg && i < n; i++)
        free_conn(&ks[i]); /* on PostgreSQL, views into verdicts' and spans' */
    free(ks);
    kh_ask_table_free(&spans);
    kh_ask_table_free(&verdicts);
    kh_ask_table_free(&members);
    return rc;
}

static int answer_worst(struct kh_ask *c, const struct kh_qr_request *q, struct kh_buf *out)
{
    struct kh_ask_table w = {0};
    char since[KH_TIME_TEXT_LEN + 1];
    kh_time_format(q->since_usec, since);
    struct kh_value params[3] = {kh_ask_text(since), kh_ask_integer(q->limit),
                                 kh_ask_integer(kh_time_hour(q->since_usec))};
    int rc = kh_ask_sql(c, c->pg ? worst_sql_pg : worst_sql_sqlite);
    rc = rc ? rc : kh_ask_run(c, &w, params, 3);
    if (rc == 0 && q->json)
        rc = kh_buf_printf(out, "{\"since\":\"%s\",\"connections\":[", since);
    else if (rc == 0)
        rc = kh_buf_printf(out, "The %zu worst connections since %s:\n  %-8s %-26s %-20s %-16s "
                                "%-8s %-8s %5s %5s %5s %7s\n",
                           w.n, since, "verdict", "connection", "channel", "client", "uplink",
                           "downlink", "mos", "mean", "video", "reports");
    for (size_t i = 0; rc == 0 && i < w.n; i++) {
        if (q->json) {
            bool f = true;
            rc = (i ? kh_buf_append(out, ",", 1) : 0) | kh_buf_append(out, "{", 1);
            rc |= kh_json_str_member(out, &f, "connection_id", kh_ask_str(&w, i, W_ID));
            rc |= kh_json_str_member(out, &f, "channel_id", kh_ask_str(&w, i, W_CHANNEL));
            rc |= kh_json_str_member(out, &f, "client_id", kh_ask_str(&w, i, W_CLIENT));
            rc |= kh_json_str_member(out, &f, "verdict", severity_name(kh_ask_int(&w, i, W_SEV)));
            rc |= kh_json_num_member(out, &f, "severity", kh_ask_num(&w, i, W_SEV));
            rc |=
                kh_json_str_member(out, &f, "uplink", severity_name(kh_ask_int(&w, i, W_SEV_OUT)));
            rc |=
                kh_json_str_member(out, &f, "downlink", severity_name(kh_ask_int(&w, i, W_SEV_IN)));
            rc |= kh_json_num_member(out, &f, "mos_min", kh_ask_num(&w, i, W_MOS_MIN));
            rc |= kh_json_num_member(out, &f, "mos_avg", kh_ask_num(&w, i, W_MOS_AVG));
            rc |= kh_json_num_member(out, &f, "video_score_min", kh_ask_num(&w, i, W_VIDEO_MIN));
            rc |= kh_json_num_member(out, &f, "reports", kh_ask_num(&w, i, W_REPORTS));
            rc |= kh_json_time_member(out, &f, "last_report", kh_ask_int(&w, i, W_LAST));
            rc |= kh_buf_append(out, "}", 1);
            continue;
        }
        char mmin[16], mavg[16], vmin[16];
        fmt(mmin, sizeof(mmin), kh_ask_num(&w, i, W_MOS_MIN), 2);
        fmt(mavg, sizeof(mavg), kh_ask_num(&w, i, W_MOS_AVG), 2);
        fmt(vmin, sizeof(vmin), kh_ask_num(&w, i, W_VIDEO_MIN), 2);
        const char *client = kh_ask_str(&w, i, W_CLIENT);
        rc = kh_buf_printf(out, "  %-8s %-26s %-20s %-16s %-8s %-8s %5s %5s %5s %7lld\n",
                           severity_name(kh_ask_int(&w, i, W_SEV)), kh_ask_str(&w, i, W_ID),
                           kh_ask_str(&w, i, W_CHANNEL), client ? client : "-",
                           severity_name(kh_ask_int(&w, i, W_SEV_OUT)),
                           severity_name(kh_ask_int(&w, i, W_SEV_IN)), mmin, mavg, vmin,
                           (long long)kh_ask_int(&w, i, W_REPORTS));
    }
    if (rc == 0 && q->json)
        rc = kh_buf_append(out, "]}\n", 3);
    kh_ask_table_free(&w);
    return rc;
}

int kh_qr_answer(struct kh_store *st, const struct kh_qr_request *q, struct kh_buf *out,
                 const char **err)
{
    if (st->ops->query == NULL) {
        *err = kh_errf("storage %s keeps nothing to ask", st->ops->name);
        return KH_EINVAL;
    }
    struct kh_ask c;
    kh_ask_init(&c, st, err);
    int rc = kh_ask_schema_at_least(&c, 5, "quality tables");
    if (rc == 0 && q->what == KH_QR_CONNECTION)
        rc = answer_connection(&c, q, out);
    else if (rc == 0 && q->what == KH_QR_CHANNEL)
        rc = answer_channel(&c, q, out);
    else if (rc == 0)
        rc = answer_worst(&c, q, out);
    if (rc == KH_ENOMEM || rc == KH_ENOSPC)
        *err = "out of memory writing the answer";
    kh_ask_cleanup(&c);
    return rc;
}

int64_t kh_qr_parse_duration(const char *s)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || !(v > 0) || end[0] == '\0' || end[1] != '\0')
        return -1;
    double unit = end[0] == 's' ? 1 : end[0] == 'm' ? 60 : end[0] == 'h' ? 3600
                : end[0] == 'd' ? 86400 : 0;
    if (unit == 0 || v * unit > 3650.0 * 86400)
        return -1;
    return (int64_t)(v * unit * 1e6);
}
