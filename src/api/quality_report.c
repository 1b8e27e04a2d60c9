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

#include "core/arena.h"
#include "core/errors.h"
#include "core/jsonw.h"
#include "core/timeutil.h"
#include "sora/schema.h"

/* --- result tables: every row of a query, its cells copied ------------------------------- */

struct table {
    struct kh_arena *arena;
    int ncols;
    size_t n, cap;
    struct kh_value *cells; /* n * ncols */
};

static int collect(void *arg, const struct kh_value *cells, int ncells)
{
    struct table *t = arg;
    if (t->n == 0 && t->cap == 0)
        t->ncols = ncells;
    if (ncells != t->ncols)
        return KH_EIO;
    if (t->n == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 16;
        struct kh_value *c = realloc(t->cells, cap * (size_t)t->ncols * sizeof(*c));
        if (c == NULL)
            return KH_ENOMEM;
        t->cells = c;
        t->cap = cap;
    }
    struct kh_value *row = &t->cells[t->n * (size_t)t->ncols];
    for (int i = 0; i < ncells; i++) {
        row[i] = cells[i];
        if (cells[i].type == KH_COL_TEXT || cells[i].type == KH_COL_JSON) {
            row[i].u.s = kh_arena_strndup(t->arena, cells[i].u.s, cells[i].len);
            if (row[i].u.s == NULL)
                return KH_ENOMEM;
        }
    }
    t->n++;
    return 0;
}

static const struct kh_value *cell(const struct table *t, size_t row, int col)
{
    return &t->cells[row * (size_t)t->ncols + (size_t)col];
}

static double num(const struct table *t, size_t row, int col)
{
    const struct kh_value *v = cell(t, row, col);
    if (v->type == KH_COL_REAL)
        return v->u.d;
    if (v->type == KH_COL_INT)
        return (double)v->u.i;
    if (v->type == KH_COL_BOOL)
        return v->u.b;
    return NAN;
}

static int64_t inum(const struct table *t, size_t row, int col)
{
    double d = num(t, row, col);
    return isfinite(d) ? (int64_t)llround(d) : 0;
}

static const char *str(const struct table *t, size_t row, int col)
{
    const struct kh_value *v = cell(t, row, col);
    return v->type == KH_COL_TEXT || v->type == KH_COL_JSON ? v->u.s : NULL;
}

/* --- asking ---------------------------------------------------------------------------- */

struct ctx {
    struct kh_store *st;
    bool pg;
    struct kh_arena arena;
    struct kh_buf sql;
    const char **err;
};

static struct kh_value text_param(const char *s)
{
    struct kh_value v = {.type = KH_COL_TEXT, .len = (uint32_t)strlen(s)};
    v.u.s = s;
    return v;
}

/* Runs ctx->sql into t (emptied first). */
static int ask(struct ctx *c, struct table *t, const struct kh_value *params, int n)
{
    free(t->cells);
    *t = (struct table){.arena = &c->arena};
    if (kh_buf_append(&c->sql, "", 1) != 0) {
        *c->err = "out of memory";
        return KH_ENOMEM;
    }
    return c->st->ops->query(c->st, c->sql.data, params, n, collect, t, c->err);
}

/* Appends fmt to the SQL, with each "@N" a placeholder (?N or $N) and each "#(expr)" the
 * expression's time in microseconds. */
static int sql(struct ctx *c, const char *fmt)
{
    int rc = 0;
    for (const char *p = fmt; rc == 0 && *p; p++) {
        if (*p == '@') {
            rc = kh_buf_printf(&c->sql, "%c%c", c->pg ? '$' : '?', p[1]);
            p++;
        } else if (*p == '#' && p[1] == '(') {
            const char *end = strchr(p, ')');
            char expr[128];
            snprintf(expr, sizeof(expr), "%.*s", (int)(end - p - 2), p + 2);
            rc = kh_schema_time_usec_sql(c->pg ? KH_DIALECT_POSTGRES : KH_DIALECT_SQLITE,
                                         expr, &c->sql);
            p = end;
        } else {
            rc = kh_buf_append(&c->sql, p, 1);
        }
    }
    return rc;
}

static int build(struct ctx *c, const char *fmt)
{
    kh_buf_reset(&c->sql);
    int rc = sql(c, fmt);
    if (rc != 0)
        *c->err = "out of memory";
    return rc;
}

/* The schema must have the quality tables (version 5). */
static int check_schema(struct ctx *c)
{
    struct table t = {0};
    int rc = build(c, "SELECT coalesce(max(version), 0) FROM kohaku_schema_version");
    rc = rc ? rc : ask(c, &t, NULL, 0);
    int64_t v = rc == 0 && t.n ? inum(&t, 0, 0) : 0;
    free(t.cells);
    if (rc == 0 && v < 5) {
        *c->err = kh_errf("the database's schema is version %lld, without quality tables "
                          "(version 5): run kohaku migrate",
                          (long long)v);
        rc = KH_EIO;
    }
    return rc;
}

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

enum { W_ID, W_CHANNEL, W_SEV, W_MOS_MIN, W_MOS_AVG, W_VIDEO_MIN, W_REPORTS, W_LAST, W_CLIENT,
       W_SEV_OUT, W_SEV_IN };
#define WORST_SQL(order)                                                                       \
    "SELECT w.connection_id, w.channel_id, w.severity, w.mos_min, w.mos_avg, "                 \
    "w.video_score_min, w.reports, #(w.last_report), c.client_id, w.severity_outbound, "       \
    "w.severity_inbound FROM (SELECT connection_id, channel_id, max(severity) AS severity, "   \
    "min(mos_min) AS mos_min, avg(mos_avg) AS mos_avg, min(video_score_min) AS "               \
    "video_score_min, count(*) AS reports, max(\"time\") AS last_report, "                     \
    "max(severity_outbound) AS severity_outbound, max(severity_inbound) AS severity_inbound "  \
    "FROM quality_connection WHERE \"time\" >= @1 GROUP BY connection_id, channel_id) w "      \
    "LEFT JOIN sora_connection c ON c.connection_id = w.connection_id ORDER BY " order         \
    " LIMIT @2"
static const char worst_sql_pg[] = WORST_SQL(
    "w.severity DESC, w.mos_min ASC NULLS LAST, w.video_score_min ASC NULLS LAST, 1");
static const char worst_sql_sqlite[] = WORST_SQL(
    "w.severity DESC, w.mos_min IS NULL, w.mos_min, w.video_score_min IS NULL, "
    "w.video_score_min, 1");

/* One connection's verdict and spans (for the channel and the worst list too). */
struct conn {
    const char *id, *client;
    struct table verdict, spans;
};

static int read_conn(struct ctx *c, struct conn *k)
{
    struct kh_value id = text_param(k->id);
    int rc = build(c, verdict_sql);
    rc = rc ? rc : ask(c, &k->verdict, &id, 1);
    rc = rc ? rc : build(c, spans_sql);
    return rc ? rc : ask(c, &k->spans, &id, 1);
}

static void free_conn(struct conn *k)
{
    free(k->verdict.cells);
    free(k->spans.cells);
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

static int j_key(struct kh_buf *b, bool *first, const char *key)
{
    int rc = kh_buf_printf(b, "%s\"%s\":", *first ? "" : ",", key);
    *first = false;
    return rc;
}

static int j_str(struct kh_buf *b, bool *first, const char *key, const char *v)
{
    int rc = j_key(b, first, key);
    if (rc == 0 && v == NULL)
        return kh_buf_printf(b, "null");
    return rc ? rc : kh_buf_put_json_str(b, v, strlen(v));
}

static int j_num(struct kh_buf *b, bool *first, const char *key, double v)
{
    int rc = j_key(b, first, key);
    return rc ? rc : isfinite(v) ? kh_buf_printf(b, "%.10g", v) : kh_buf_printf(b, "null");
}

static int j_time(struct kh_buf *b, bool *first, const char *key, int64_t usec)
{
    char t[KH_TIME_TEXT_LEN + 1];
    kh_time_format(usec, t);
    return j_str(b, first, key, t);
}

static int j_span(struct kh_buf *b, const struct table *s, size_t i)
{
    bool f = true;
    int rc = kh_buf_append(b, "{", 1);
    rc |= j_str(b, &f, "issue", str(s, i, S_ISSUE));
    rc |= j_str(b, &f, "severity", str(s, i, S_SEV));
    rc |= j_str(b, &f, "direction", direction(str(s, i, S_TYPE)));
    rc |= j_str(b, &f, "kind", str(s, i, S_KIND));
    rc |= j_str(b, &f, "stats_id", str(s, i, S_ID));
    rc |= j_time(b, &f, "began", inum(s, i, S_BEGAN));
    rc |= j_time(b, &f, "ended", inum(s, i, S_ENDED));
    rc |= j_num(b, &f, "intervals", num(s, i, S_INTERVALS));
    rc |= j_num(b, &f, "value_min", num(s, i, S_MIN));
    rc |= j_num(b, &f, "value_max", num(s, i, S_MAX));
    return rc | kh_buf_append(b, "}", 1);
}

static int j_verdict(struct kh_buf *b, bool *f, const struct table *v)
{
    int rc = j_str(b, f, "verdict", str(v, 0, V_VERDICT));
    rc |= j_num(b, f, "severity", num(v, 0, V_SEV));
    rc |= j_str(b, f, "uplink", severity_name(inum(v, 0, V_SEV_OUT)));
    rc |= j_str(b, f, "downlink", severity_name(inum(v, 0, V_SEV_IN)));
    rc |= j_num(b, f, "mos_min", num(v, 0, V_MOS_MIN));
    rc |= j_num(b, f, "mos_avg", num(v, 0, V_MOS_AVG));
    rc |= j_num(b, f, "video_score_min", num(v, 0, V_VIDEO_MIN));
    rc |= j_time(b, f, "first_report", inum(v, 0, V_FIRST));
    rc |= j_time(b, f, "last_report", inum(v, 0, V_LAST));
    rc |= j_num(b, f, "seconds", num(v, 0, V_SECONDS));
    return rc | j_num(b, f, "reports", num(v, 0, V_REPORTS));
}

static int j_spans(struct kh_buf *b, bool *f, const struct table *s)
{
    int rc = j_key(b, f, "issues") | kh_buf_append(b, "[", 1);
    for (size_t i = 0; rc == 0 && i < s->n; i++)
        rc = (i ? kh_buf_append(b, ",", 1) : 0) | j_span(b, s, i);
    return rc | kh_buf_append(b, "]", 1);
}

static int j_stream(struct kh_buf *b, const struct table *t, size_t i)
{
    bool f = true;
    int rc = kh_buf_append(b, "{", 1);
    rc |= j_str(b, &f, "direction", direction(str(t, i, ST_TYPE)));
    rc |= j_str(b, &f, "kind", str(t, i, ST_KIND));
    rc |= j_str(b, &f, "stats_id", str(t, i, ST_ID));
    rc |= j_str(b, &f, "codec", str(t, i, ST_MIME));
    rc |= j_num(b, &f, "reports", num(t, i, ST_SAMPLES));
    rc |= j_num(b, &f, "intervals", num(t, i, ST_INTERVALS));
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
        rc |= j_num(b, &f, nums[k].key, num(t, i, nums[k].col));
    return rc | kh_buf_append(b, "}", 1);
}

static int j_interval(struct kh_buf *b, const struct table *t, size_t i)
{
    bool f = true;
    int rc = kh_buf_append(b, "{", 1);
    rc |= j_time(b, &f, "time", inum(t, i, I_TIME));
    rc |= j_str(b, &f, "direction", direction(str(t, i, I_TYPE)));
    rc |= j_str(b, &f, "kind", str(t, i, I_KIND));
    rc |= j_str(b, &f, "stats_id", str(t, i, I_ID));
    rc |= j_key(b, &f, "since_start") | kh_buf_printf(b, num(t, i, I_SINCE) > 0 ? "true" : "false");
    const struct {
        const char *key;
        int col;
    } nums[] = {{"seconds", I_SECONDS}, {"bitrate", I_BITRATE}, {"loss_percent", I_LOSS},
                {"round_trip_time_ms", I_RTT}, {"jitter_ms", I_JITTER}, {"mos", I_MOS},
                {"video_score", I_VS}, {"frames_per_second", I_FPS},
                {"frame_height", I_HEIGHT}, {"severity", I_SEV}};
    for (size_t k = 0; k < sizeof(nums) / sizeof(nums[0]); k++)
        rc |= j_num(b, &f, nums[k].key, num(t, i, nums[k].col));
    const char *issues = str(t, i, I_ISSUES);
    rc |= j_key(b, &f, "issues");
    rc |= issues ? kh_buf_append(b, issues, strlen(issues)) : kh_buf_printf(b, "null");
    return rc | kh_buf_append(b, "}", 1);
}

/* --- text ---------------------------------------------------------------------------------- */

static int t_spans(struct kh_buf *b, const struct table *s, const char *indent)
{
    if (s->n == 0)
        return kh_buf_printf(b, "%sno issues\n", indent);
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < s->n; i++) {
        char from[KH_TIME_TEXT_LEN + 1], to[KH_TIME_TEXT_LEN + 1], lo[32], hi[32];
        int64_t began = inum(s, i, S_BEGAN), ended = inum(s, i, S_ENDED);
        time_text(began, from);
        time_text(ended, to);
        fmt(lo, sizeof(lo), num(s, i, S_MIN), 2);
        fmt(hi, sizeof(hi), num(s, i, S_MAX), 2);
        const char *kind = str(s, i, S_KIND);
        rc = kh_buf_printf(b, "%s%-7s %-19s %-10s %-5s %s..%s (%.0f s, %lld intervals) value "
                              "%s..%s  [%s]\n",
                           indent, str(s, i, S_SEV), str(s, i, S_ISSUE),
                           direction(str(s, i, S_TYPE)), kind ? kind : "", from, to + 11,
                           (double)(ended - began) / 1e6, (long long)inum(s, i, S_INTERVALS),
                           lo, hi, str(s, i, S_ID));
    }
    return rc;
}

static int t_verdict(struct kh_buf *b, const struct table *v)
{
    char from[KH_TIME_TEXT_LEN + 1], to[KH_TIME_TEXT_LEN + 1], mmin[32], mavg[32], vmin[32];
    time_text(inum(v, 0, V_FIRST), from);
    time_text(inum(v, 0, V_LAST), to);
    fmt(mmin, sizeof(mmin), num(v, 0, V_MOS_MIN), 2);
    fmt(mavg, sizeof(mavg), num(v, 0, V_MOS_AVG), 2);
    fmt(vmin, sizeof(vmin), num(v, 0, V_VIDEO_MIN), 2);
    return kh_buf_printf(b,
                         "Reports: %lld, %s .. %s UTC (%.0f s)\n"
                         "Verdict: %s (uplink %s, downlink %s)\n"
                         "Audio MOS: min %s, mean %s   Video score: min %s\n",
                         (long long)inum(v, 0, V_REPORTS), from, to + 11,
                         num(v, 0, V_SECONDS), str(v, 0, V_VERDICT),
                         severity_name(inum(v, 0, V_SEV_OUT)),
                         severity_name(inum(v, 0, V_SEV_IN)), mmin, mavg, vmin);
}

static int t_streams(struct kh_buf *b, const struct table *t)
{
    int rc = kh_buf_printf(b, "Streams (means over the rated intervals):\n");
    for (size_t i = 0; rc == 0 && i < t->n; i++) {
        char loss[32], lmax[32], rtt[32], jit[32], mos[32], vs[32], rate[32], fps[80];
        fmt3(loss, sizeof(loss), num(t, i, ST_LOSS), 2, "", "%");
        fmt3(lmax, sizeof(lmax), num(t, i, ST_LOSS_MAX), 2, "", "%");
        fmt3(rtt, sizeof(rtt), num(t, i, ST_RTT), 0, "", " ms");
        fmt3(jit, sizeof(jit), num(t, i, ST_JITTER), 1, "", " ms");
        fmt3(rate, sizeof(rate), num(t, i, ST_BITRATE) / 1000, 0, "", " kbit/s");
        bool audio = str(t, i, ST_KIND) && strcmp(str(t, i, ST_KIND), "audio") == 0;
        if (audio) {
            fmt3(mos, sizeof(mos), num(t, i, ST_MOS), 2, "MOS ", "");
            fmt3(vs, sizeof(vs), num(t, i, ST_MOS_MIN), 2, "(min ", ")");
            fps[0] = '\0';
        } else {
            fmt3(mos, sizeof(mos), num(t, i, ST_VS), 2, "score ", "");
            fmt3(vs, sizeof(vs), num(t, i, ST_VS_MIN), 2, "(min ", ")");
            char f[32], h[32];
            fmt3(f, sizeof(f), num(t, i, ST_FPS), 1, "", " fps");
            fmt3(h, sizeof(h), num(t, i, ST_HEIGHT), 0, "", "p");
            snprintf(fps, sizeof(fps), "  %s %s", f, h);
        }
        const char *codec = str(t, i, ST_MIME);
        rc = kh_buf_printf(b,
                           "  %-5s %-8s %-10s %-10s %lld intervals  %s  loss %s (max %s)  rtt %s"
                           "  jitter %s  %s %s%s  [%s]\n",
                           str(t, i, ST_KIND), direction(str(t, i, ST_TYPE)),
                           codec ? codec : "-", severity_name(inum(t, i, ST_SEV)),
                           (long long)inum(t, i, ST_INTERVALS), rate, loss, lmax, rtt, jit, mos,
                           vs, fps, str(t, i, ST_ID));
    }
    return rc;
}

static int t_intervals(struct kh_buf *b, const struct table *t)
{
    int rc = kh_buf_printf(b,
                           "Intervals:\n  time      dir      kind  seconds  kbit/s  loss%%  rtt ms"
                           "  jitter ms  mos   score  fps   height  severity\n");
    for (size_t i = 0; rc == 0 && i < t->n; i++) {
        char when[KH_TIME_TEXT_LEN + 1], c[10][24];
        time_text(inum(t, i, I_TIME), when);
        fmt(c[0], sizeof(c[0]), num(t, i, I_SECONDS), 1);
        fmt(c[1], sizeof(c[1]), num(t, i, I_BITRATE) / 1000, 0);
        fmt(c[2], sizeof(c[2]), num(t, i, I_LOSS), 2);
        fmt(c[3], sizeof(c[3]), num(t, i, I_RTT), 0);
        fmt(c[4], sizeof(c[4]), num(t, i, I_JITTER), 1);
        fmt(c[5], sizeof(c[5]), num(t, i, I_MOS), 2);
        fmt(c[6], sizeof(c[6]), num(t, i, I_VS), 2);
        fmt(c[7], sizeof(c[7]), num(t, i, I_FPS), 1);
        fmt(c[8], sizeof(c[8]), num(t, i, I_HEIGHT), 0);
        rc = kh_buf_printf(b, "  %s %-8s %-5s %7s %7s %6s %7s %10s %5s %6s %5s %7s  %s%s\n",
                           when + 11, direction(str(t, i, I_TYPE)), str(t, i, I_KIND), c[0],
                           c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8],
                           severity_name(inum(t, i, I_SEV)),
                           num(t, i, I_SINCE) > 0 ? " (since start)" : "");
    }
    return rc;
}

/* --- the three answers ----------------------------------------------------------------------- */

static int answer_connection(struct ctx *c, const struct kh_qr_request *q, struct kh_buf *out)
{
    struct conn k = {.id = q->id};
    struct table info = {0}, streams = {0}, ivs = {0};
    struct kh_value id = text_param(q->id);
    int rc = read_conn(c, &k);
    rc = rc ? rc : build(c, info_sql);
    rc = rc ? rc : ask(c, &info, &id, 1);
    rc = rc ? rc : build(c, streams_sql);
    rc = rc ? rc : ask(c, &streams, &id, 1);
    if (rc == 0 && q->intervals)
        rc = build(c, intervals_sql) ? KH_ENOMEM : ask(c, &ivs, &id, 1);
    if (rc == 0 && k.verdict.n == 0) {
        *c->err = kh_errf("no quality rows for connection %s%s", q->id,
                          info.n ? " (its reports are stored: were they rated? quality = "
                                   "false, or stored before schema version 5)"
                                 : "");
        rc = KH_EINVAL;
    }
    const char *client = rc == 0 && info.n ? str(&info, 0, C_CLIENT) : NULL;
    const char *role = rc == 0 && info.n ? str(&info, 0, C_ROLE) : NULL;
    if (rc == 0 && q->json) {
        bool f = true;
        rc = kh_buf_append(out, "{", 1);
        rc |= j_str(out, &f, "connection_id", q->id);
        rc |= j_str(out, &f, "channel_id", str(&k.verdict, 0, V_CHANNEL));
        rc |= j_str(out, &f, "client_id", client);
        rc |= j_str(out, &f, "role", role);
        rc |= j_verdict(out, &f, &k.verdict);
        rc |= j_spans(out, &f, &k.spans);
        rc |= j_key(out, &f, "streams") | kh_buf_append(out, "[", 1);
        for (size_t i = 0; i < streams.n; i++)
            rc |= (i ? kh_buf_append(out, ",", 1) : 0) | j_stream(out, &streams, i);
        rc |= kh_buf_append(out, "]", 1);
        if (q->intervals) {
            rc |= j_key(out, &f, "intervals") | kh_buf_append(out, "[", 1);
            for (size_t i = 0; i < ivs.n; i++)
                rc |= (i ? kh_buf_append(out, ",", 1) : 0) | j_interval(out, &ivs, i);
            rc |= kh_buf_append(out, "]", 1);
        }
        rc |= kh_buf_append(out, "}\n", 2);
    } else if (rc == 0) {
        rc = kh_buf_printf(out, "Connection %s  channel %s  client %s  role %s\n", q->id,
                           str(&k.verdict, 0, V_CHANNEL), client ? client : "-",
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
    free(info.cells);
    free(streams.cells);
    free(ivs.cells);
    return rc;
}

/* Whose uplink the participant's inbound span i is put down to: the first other participant
 * with an outbound span overlapping it, or NULL (its own downlink). */
static const struct conn *blame(const struct conn *ks, size_t n, size_t self,
                                const struct table *s, size_t i)
{
    int64_t began = inum(s, i, S_BEGAN), ended = inum(s, i, S_ENDED);
    for (size_t o = 0; o < n; o++) {
        if (o == self)
            continue;
        const struct table *t = &ks[o].spans;
        for (size_t k = 0; k < t->n; k++)
            if (strcmp(direction(str(t, k, S_TYPE)), "outbound") == 0 &&
                inum(t, k, S_BEGAN) <= ended && inum(t, k, S_ENDED) >= began)
                return &ks[o];
    }
    return NULL;
}

/* Issue names of the participant's spans in one direction, space-separated, once each. */
static void names(const struct table *s, const char *dir, char *out, size_t len)
{
    out[0] = '\0';
    for (size_t i = 0; i < s->n; i++) {
        const char *issue = str(s, i, S_ISSUE);
        if (strcmp(direction(str(s, i, S_TYPE)), dir) != 0 || strstr(out, issue))
            continue;
        size_t used = strlen(out);
        snprintf(out + used, len - used, "%s%s", used ? " " : "", issue);
    }
}

static int channel_participant(struct kh_buf *out, bool json, const struct conn *ks, size_t n,
                               size_t p)
{
    const struct conn *k = &ks[p];
    const struct table *v = &k->verdict, *s = &k->spans;
    char up[512], down[512], conn[512], others[512] = "", own[512] = "";
    names(s, "outbound", up, sizeof(up));
    names(s, "inbound", down, sizeof(down));
    names(s, "connection", conn, sizeof(conn));
    for (size_t i = 0; i < s->n; i++) {
        if (strcmp(direction(str(s, i, S_TYPE)), "inbound") != 0)
            continue;
        const struct conn *who = blame(ks, n, p, s, i);
        char *into = who ? others : own;
        size_t used = strlen(into);
        const char *what = who ? (who->client ? who->client : who->id) : str(s, i, S_ISSUE);
        if (!strstr(into, what))
            snprintf(into + used, sizeof(others) - used, "%s%s", used ? " " : "", what);
    }
    if (json) {
        bool f = true;
        int rc = kh_buf_append(out, "{", 1);
        rc |= j_str(out, &f, "connection_id", k->id);
        rc |= j_str(out, &f, "client_id", k->client);
        if (v->n)
            rc |= j_verdict(out, &f, v);
        rc |= j_str(out, &f, "uplink_issues", up);
        rc |= j_str(out, &f, "downlink_issues", down);
        rc |= j_str(out, &f, "connection_issues", conn);
        rc |= j_str(out, &f, "downlink_from_others_uplink", others);
        rc |= j_str(out, &f, "downlink_own", own);
        rc |= j_spans(out, &f, s);
        return rc | kh_buf_append(out, "}", 1);
    }
    if (v->n == 0)
        return kh_buf_printf(out, "  %s (%s): no quality rows\n", k->client ? k->client : "-",
                             k->id);
    int rc = kh_buf_printf(out, "  %s (%s): %s; uplink %s%s%s%s, downlink %s%s%s%s\n",
                           k->client ? k->client : "-", k->id, str(v, 0, V_VERDICT),
                           severity_name(inum(v, 0, V_SEV_OUT)), up[0] ? " (" : "", up,
                           up[0] ? ")" : "", severity_name(inum(v, 0, V_SEV_IN)),
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

static int answer_channel(struct ctx *c, const struct kh_qr_request *q, struct kh_buf *out)
{
    struct table members = {0};
    struct kh_value id = text_param(q->id);
    int rc = build(c, members_sql);
    rc = rc ? rc : ask(c, &members, &id, 1);
    if (rc == 0 && members.n == 0) {
        *c->err = kh_errf("no connections stored for channel %s", q->id);
        rc = KH_EINVAL;
    }
    size_t n = rc == 0 ? members.n : 0;
    struct conn *ks = calloc(n ? n : 1, sizeof(*ks));
    if (ks == NULL)
        rc = KH_ENOMEM;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        ks[i].id = str(&members, i, M_ID);
        ks[i].client = str(&members, i, M_CLIENT);
        rc = read_conn(c, &ks[i]);
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
    for (size_t i = 0; ks && i < n; i++)
        free_conn(&ks[i]);
    free(ks);
    free(members.cells);
    return rc;
}

static int answer_worst(struct ctx *c, const struct kh_qr_request *q, struct kh_buf *out)
{
    struct table w = {0};
    char since[KH_TIME_TEXT_LEN + 1];
    kh_time_format(q->since_usec, since);
    struct kh_value params[2] = {text_param(since), {.type = KH_COL_INT}};
    params[1].u.i = q->limit;
    int rc = build(c, c->pg ? worst_sql_pg : worst_sql_sqlite);
    rc = rc ? rc : ask(c, &w, params, 2);
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
            rc |= j_str(out, &f, "connection_id", str(&w, i, W_ID));
            rc |= j_str(out, &f, "channel_id", str(&w, i, W_CHANNEL));
            rc |= j_str(out, &f, "client_id", str(&w, i, W_CLIENT));
            rc |= j_str(out, &f, "verdict", severity_name(inum(&w, i, W_SEV)));
            rc |= j_num(out, &f, "severity", num(&w, i, W_SEV));
            rc |= j_str(out, &f, "uplink", severity_name(inum(&w, i, W_SEV_OUT)));
            rc |= j_str(out, &f, "downlink", severity_name(inum(&w, i, W_SEV_IN)));
            rc |= j_num(out, &f, "mos_min", num(&w, i, W_MOS_MIN));
            rc |= j_num(out, &f, "mos_avg", num(&w, i, W_MOS_AVG));
            rc |= j_num(out, &f, "video_score_min", num(&w, i, W_VIDEO_MIN));
            rc |= j_num(out, &f, "reports", num(&w, i, W_REPORTS));
            rc |= j_time(out, &f, "last_report", inum(&w, i, W_LAST));
            rc |= kh_buf_append(out, "}", 1);
            continue;
        }
        char mmin[16], mavg[16], vmin[16];
        fmt(mmin, sizeof(mmin), num(&w, i, W_MOS_MIN), 2);
        fmt(mavg, sizeof(mavg), num(&w, i, W_MOS_AVG), 2);
        fmt(vmin, sizeof(vmin), num(&w, i, W_VIDEO_MIN), 2);
        const char *client = str(&w, i, W_CLIENT);
        rc = kh_buf_printf(out, "  %-8s %-26s %-20s %-16s %-8s %-8s %5s %5s %5s %7lld\n",
                           severity_name(inum(&w, i, W_SEV)), str(&w, i, W_ID),
                           str(&w, i, W_CHANNEL), client ? client : "-",
                           severity_name(inum(&w, i, W_SEV_OUT)),
                           severity_name(inum(&w, i, W_SEV_IN)), mmin, mavg, vmin,
                           (long long)inum(&w, i, W_REPORTS));
    }
    if (rc == 0 && q->json)
        rc = kh_buf_append(out, "]}\n", 3);
    free(w.cells);
    return rc;
}

int kh_qr_answer(struct kh_store *st, const struct kh_qr_request *q, struct kh_buf *out,
                 const char **err)
{
    if (st->ops->query == NULL) {
        *err = kh_errf("storage %s keeps nothing to ask", st->ops->name);
        return KH_EINVAL;
    }
    struct ctx c = {.st = st, .pg = st->ops->dialect == KH_DIALECT_POSTGRES, .err = err};
    kh_arena_init(&c.arena, 65536, 256u << 20);
    kh_buf_init(&c.sql, 1u << 20);
    int rc = check_schema(&c);
    if (rc == 0 && q->what == KH_QR_CONNECTION)
        rc = answer_connection(&c, q, out);
    else if (rc == 0 && q->what == KH_QR_CHANNEL)
        rc = answer_channel(&c, q, out);
    else if (rc == 0)
        rc = answer_worst(&c, q, out);
    if (rc == KH_ENOMEM || rc == KH_ENOSPC)
        *err = "out of memory writing the answer";
    kh_buf_cleanup(&c.sql);
    kh_arena_cleanup(&c.arena);
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
