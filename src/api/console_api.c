/*
 * console_api: the console's JSON API. See console_api.h; the README's "Console" section has
 * every endpoint with its parameters and an example.
 *
 * Every answer is built from the quality tables and views, sora_connection and sora_report,
 * and (samples) the stats table asked for, which is looked up among the schema's tables by
 * name: no SQL is ever made of a request's text. Times go out as RFC 3339 text; series as
 * one array per value, with times in milliseconds (what charting libraries take).
 */
#include "api/console_api.h"

#include <ctype.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/ask.h"
#include "api/overview_cache.h"
#include "api/quality_report.h"
#include "core/buf.h"
#include "core/errors.h"
#include "core/jsonw.h"
#include "core/storedtime.h"
#include "core/timeutil.h"
#include "sora/schema.h"

/* --- query strings ------------------------------------------------------------------------ */

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Decodes s[0, n) into out; -1 on a bad escape, a control character or no room. */
static int decode(const char *s, size_t n, char *out, size_t cap)
{
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)s[i];
        if (c == '+') {
            c = ' ';
        } else if (c == '%') {
            if (i + 2 >= n || hexval(s[i + 1]) < 0 || hexval(s[i + 2]) < 0)
                return -1;
            c = hexval(s[i + 1]) * 16 + hexval(s[i + 2]);
            i += 2;
        }
        if (c < 0x20 || c == 0x7f || w + 1 >= cap)
            return -1;
        out[w++] = (char)c;
    }
    out[w] = '\0';
    return 1;
}

int kh_console_param(const char *query, const char *name, char *out, size_t cap)
{
    size_t nlen = strlen(name);
    for (const char *p = query; p && *p;) {
        const char *amp = strchr(p, '&');
        size_t len = amp ? (size_t)(amp - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        size_t klen = eq ? (size_t)(eq - p) : len;
        if (klen == nlen && memcmp(p, name, nlen) == 0) {
            const char *v = eq ? eq + 1 : p + len;
            return decode(v, (size_t)(p + len - v), out, cap);
        }
        p = amp ? amp + 1 : NULL;
    }
    if (cap)
        out[0] = '\0';
    return 0;
}

/* --- answering ------------------------------------------------------------------------------ */

struct api {
    struct kh_store *st;
    struct kh_ask ask;
    const char *err;
    struct kh_buf *out;
    int status;
    const char *query;
};

/* What a step returns once it has answered with an error (0: went on; negative: out of
 * memory writing the answer). */
#define FAILED 1

/* An error answer: {"message": msg}. Returns FAILED. */
static int fail(struct api *a, int status, const char *msg)
{
    a->status = status;
    kh_buf_reset(a->out);
    bool f = true;
    kh_buf_append(a->out, "{", 1);
    kh_json_str_member(a->out, &f, "message", msg);
    kh_buf_append(a->out, "}\n", 2);
    return FAILED;
}

/* A store error: 503 when the database is away, 500 otherwise. */
static int db_fail(struct api *a, int rc)
{
    return fail(a, rc == KH_ERETRY ? 503 : 500, a->err ? a->err : "the database failed");
}

/* A parameter, or fail 400 naming it. def when absent. */
static int param(struct api *a, const char *name, char *out, size_t cap, const char *def)
{
    int rc = kh_console_param(a->query, name, out, cap);
    if (rc < 0)
        return fail(a, 400, kh_errf("%s: badly encoded, or longer than %zu bytes", name,
                                    cap - 1));
    if (rc == 0)
        snprintf(out, cap, "%s", def);
    return 0;
}

static int int_param(struct api *a, const char *name, int64_t def, int64_t lo, int64_t hi,
                     int64_t *out)
{
    char v[32], *end;
    if (param(a, name, v, sizeof(v), "") != 0)
        return FAILED;
    if (v[0] == '\0') {
        *out = def;
        return 0;
    }
    long long n = strtoll(v, &end, 10);
    if (*end != '\0' || n < lo || n > hi)
        return fail(a, 400, kh_errf("%s: must be an integer from %lld to %lld, got '%s'", name,
                                    (long long)lo, (long long)hi, v));
    *out = n;
    return 0;
}

/* The time range: from/to (RFC 3339), or last (a duration: 90s, 30m, 1h, 2d) up to now;
 * the last hour by default. Times as kohaku's time text, for both dialects. */
struct range {
    int64_t from_us, to_us;
    char from[KH_TIME_TEXT_LEN + 1], to[KH_TIME_TEXT_LEN + 1];
};

static int time_param(struct api *a, const char *name, int64_t *out)
{
    char v[64];
    const char *why;
    if (param(a, name, v, sizeof(v), "") != 0)
        return FAILED;
    if (v[0] && kh_time_parse_rfc3339(v, strlen(v), out, &why) != 0)
        return fail(a, 400, kh_errf("%s: %s", name, why));
    return v[0] ? 2 : 0;
}

static int range_param(struct api *a, struct range *r)
{
    char last[32];
    int64_t now = kh_time_now_usec();
    int has_from = time_param(a, "from", &r->from_us);
    int has_to = has_from == FAILED ? FAILED : time_param(a, "to", &r->to_us);
    if (has_from == FAILED || has_to == FAILED ||
        param(a, "last", last, sizeof(last), "1h") != 0)
        return FAILED;
    int64_t span = kh_qr_parse_duration(last);
    if (span < 0)
        return fail(a, 400, kh_errf("last: '%s' is not a duration like 90s, 30m, 1h or 2d",
                                    last));
    if (!has_to)
        r->to_us = now;
    if (!has_from)
        r->from_us = r->to_us - span;
    if (r->from_us >= r->to_us)
        return fail(a, 400, "from: must be before to");
    if (r->from_us < KH_TIME_MIN_USEC)
        r->from_us = KH_TIME_MIN_USEC;
    kh_time_format(r->from_us, r->from);
    kh_time_format(r->to_us, r->to);
    return 0;
}

static void json_range(struct kh_buf *b, bool *f, const struct range *r)
{
    kh_json_time_member(b, f, "from", r->from_us);
    kh_json_time_member(b, f, "to", r->to_us);
}

/* A cell as a JSON value: numbers (reals to the last digit), booleans, strings, null. */
static int put_cell(struct kh_buf *b, const struct kh_value *v)
{
    switch (v->type) {
    case KH_COL_INT: return kh_buf_printf(b, "%lld", (long long)v->u.i);
    case KH_COL_REAL: return isfinite(v->u.d) ? kh_buf_printf(b, "%.17g", v->u.d)
                                              : kh_buf_append(b, "null", 4);
    case KH_COL_BOOL: return kh_buf_printf(b, "%s", v->u.b ? "true" : "false");
    case KH_COL_TEXT:
    case KH_COL_JSON: return kh_buf_put_json_str(b, v->u.s, v->len);
    default: return kh_buf_append(b, "null", 4);
    }
}

/* "key": [the column's values of rows [lo, hi)], times (µs) as milliseconds. */
static int put_column(struct kh_buf *b, bool *f, const char *key, const struct kh_ask_table *t,
                      size_t lo, size_t hi, int col, bool time_ms)
{
    int rc = kh_json_key(b, f, key) | kh_buf_append(b, "[", 1);
    for (size_t i = lo; rc == 0 && i < hi; i++) {
        rc = i > lo ? kh_buf_append(b, ",", 1) : 0;
        const struct kh_value *v = kh_ask_cell(t, i, col);
        if (time_ms && v->type == KH_COL_INT)
            rc |= kh_buf_printf(b, "%lld", (long long)(v->u.i / 1000));
        else
            rc |= put_cell(b, v);
    }
    return rc | kh_buf_append(b, "]", 1);
}

/* A cell of a column of this type: SQLite keeps booleans as 0/1. */
static int put_typed(struct kh_buf *b, const struct kh_value *v, enum kh_coltype type)
{
    if (type == KH_COL_BOOL && v->type == KH_COL_INT)
        return kh_buf_printf(b, "%s", v->u.i ? "true" : "false");
    return put_cell(b, v);
}

/* "key": [the boolean column's values of rows [lo, hi)]. */
static int put_bools(struct kh_buf *b, bool *f, const char *key, const struct kh_ask_table *t,
                     size_t lo, size_t hi, int col)
{
    int rc = kh_json_key(b, f, key) | kh_buf_append(b, "[", 1);
    for (size_t i = lo; rc == 0 && i < hi; i++)
        rc = (i > lo ? kh_buf_append(b, ",", 1) : 0) |
             put_typed(b, kh_ask_cell(t, i, col), KH_COL_BOOL);
    return rc | kh_buf_append(b, "]", 1);
}

static const char *verdict_of(const struct kh_value *sev)
{
    if (sev->type != KH_COL_INT)
        return "unrated";
    return sev->u.i >= 2 ? "bad" : sev->u.i == 1 ? "warning" : "ok";
}

/* --- GET /api/connections ------------------------------------------------------------------ */

enum { L_ID, L_CHANNEL, L_CLIENT, L_ROLE, L_LABEL, L_NODE, L_BROWSER, L_FIRST, L_LAST, L_SEV,
       L_MOS_MIN, L_MOS_AVG, L_VIDEO_MIN, L_UP, L_DOWN, L_REPORTS, L_VERDICT,
       L_ALL, L_BAD, L_WARNING, L_OK, L_UNRATED, L_TOTAL };

/* The connections of the range (seen in it) with their verdict so far, kept in
 * sora_connection's verdict columns at ingest (schema version 7): the list reads one row per
 * connection, not every quality row of the range. l is read once: n counts it per verdict
 * (one aggregate, where window functions kept every row twice; MATERIALIZED, so that it is
 * computed once whatever the join's order), p is the page (a top-N sort on the stored
 * columns; times are turned into microseconds for the page's rows only). The page's rows
 * then get the mean MOS and the rated reports of the range from their own quality rows (50
 * connections' rows by the key).
 * The connections are found by the hour of their last report (@3, the range's start's:
 * last_seen itself is not indexed, schema version 9).
 * The filters asked for are written into the question, numbered from @4, and no others, and
 * it is planned for its values at every call (KH_QUERY_PLAN_EACH): PostgreSQL's generic plan
 * of the prepared question, made for any range and filters, took l for one row and counted
 * it once per row of the page, or read the quality rows of the whole range by time (75-150
 * ms against 16-25 ms over 10,000 connections); planning it costs 2-3 ms. */
static const char list_l[] =
    "WITH l AS (SELECT c.connection_id, c.channel_id, c.client_id, c.role, c.label, "
    "c.node_name, c.browser, c.first_seen, c.last_seen, c.severity, c.mos_min, "
    "c.video_score_min, c.severity_outbound AS uplink, c.severity_inbound AS downlink, "
    "CASE WHEN c.severity IS NULL THEN 'unrated' WHEN c.severity >= 2 THEN 'bad' "
    "WHEN c.severity = 1 THEN 'warning' ELSE 'ok' END AS verdict "
    "FROM sora_connection c WHERE c.last_seen_hour >= @3 AND c.last_seen >= @1 "
    "AND c.first_seen < @2";
/* ... " AND c.COLUMN = @K" per filter, then: */
static const char list_n[] =
    "), n AS MATERIALIZED (SELECT count(*) AS n_all, "
    "sum(CASE WHEN verdict = 'bad' THEN 1 ELSE 0 END) AS n_bad, "
    "sum(CASE WHEN verdict = 'warning' THEN 1 ELSE 0 END) AS n_warning, "
    "sum(CASE WHEN verdict = 'ok' THEN 1 ELSE 0 END) AS n_ok, "
    "sum(CASE WHEN verdict = 'unrated' THEN 1 ELSE 0 END) AS n_unrated, ";
/* ... the count after the verdict filter, p's head, its verdict filter, the page's order,
 * its LIMIT and OFFSET, then: */
static const char list_page[] =
    ") SELECT p.connection_id, p.channel_id, p.client_id, p.role, p.label, p.node_name, "
    "p.browser, #(p.first_seen), #(p.last_seen), p.severity, p.mos_min, a.mos_avg, "
    "p.video_score_min, p.uplink, p.downlink, a.reports, p.verdict, n.n_all, n.n_bad, "
    "n.n_warning, n.n_ok, n.n_unrated, n.n_total FROM p CROSS JOIN n LEFT JOIN (SELECT "
    "connection_id AS qid, avg(mos_avg) AS mos_avg, count(*) AS reports FROM quality_connection "
    "WHERE \"time\" >= @1 AND \"time\" < @2 AND connection_id ";
/* ... the page's connections, then: */
static const char list_tail[] = " GROUP BY connection_id) a ON a.qid = p.connection_id ORDER BY ";
/* PostgreSQL: as an array, so that they are read by the key whatever the estimates (a plan
 * of IN read the range's rows by time, 58,000 of them, and kept the page's 347). */
static const char list_ids[] = "IN (SELECT connection_id FROM p)";
static const char list_ids_pg[] = "= ANY (ARRAY(SELECT connection_id FROM p))";

/* Orders on the stored columns, in both queries' scopes (l's names). Times order as stored
 * (SQLite's text is fixed-width); a duration needs microseconds. */
static const struct {
    const char *name, *order;
} sorts[] = {
    {"worst", "severity DESC NULLS LAST, mos_min ASC NULLS LAST, video_score_min ASC NULLS "
              "LAST, last_seen DESC, connection_id"},
    {"recent", "last_seen DESC, connection_id"},
    {"longest", "#(last_seen) - #(first_seen) DESC, connection_id"},
};

/* One row of the list; its columns are the enum's (l's, the counts over l, then the count
 * after the verdict filter). */
static int list_row(struct kh_buf *b, const struct kh_ask_table *t, size_t i)
{
    bool f = true;
    int rc = kh_buf_append(b, "{", 1);
    const char *keys[] = {"connection_id", "channel_id", "client_id", "role", "label",
                          "node_name", "browser"};
    for (int k = 0; k <= L_BROWSER; k++)
        rc |= kh_json_str_member(b, &f, keys[k], kh_ask_str(t, i, k));
    rc |= kh_json_time_member(b, &f, "first_seen", kh_ask_int(t, i, L_FIRST));
    rc |= kh_json_time_member(b, &f, "last_seen", kh_ask_int(t, i, L_LAST));
    rc |= kh_json_num_member(b, &f, "seconds",
                             (double)(kh_ask_int(t, i, L_LAST) - kh_ask_int(t, i, L_FIRST)) /
                                 1e6);
    rc |= kh_json_str_member(b, &f, "verdict", kh_ask_str(t, i, L_VERDICT));
    rc |= kh_json_num_member(b, &f, "severity", kh_ask_num(t, i, L_SEV));
    rc |= kh_json_str_member(b, &f, "uplink", verdict_of(kh_ask_cell(t, i, L_UP)));
    rc |= kh_json_str_member(b, &f, "downlink", verdict_of(kh_ask_cell(t, i, L_DOWN)));
    rc |= kh_json_num_member(b, &f, "mos_min", kh_ask_num(t, i, L_MOS_MIN));
    rc |= kh_json_num_member(b, &f, "mos_avg", kh_ask_num(t, i, L_MOS_AVG));
    rc |= kh_json_num_member(b, &f, "video_score_min", kh_ask_num(t, i, L_VIDEO_MIN));
    rc |= kh_json_num_member(b, &f, "reports", kh_ask_num(t, i, L_REPORTS));
    return rc | kh_buf_append(b, "}", 1);
}

static int connections(struct api *a)
{
    struct range r;
    char filt[6][256], sort[16], verdict[16];
    static const char *const names[] = {"channel", "client", "label", "node", "browser"};
    int64_t page, per;
    if (range_param(a, &r) != 0 || param(a, "sort", sort, sizeof(sort), "worst") != 0 ||
        param(a, "verdict", verdict, sizeof(verdict), "") != 0 ||
        int_param(a, "page", 1, 1, 1000000, &page) != 0 ||
        int_param(a, "per_page", 50, 1, 500, &per) != 0)
        return FAILED;
    for (int i = 0; i < 5; i++)
        if (param(a, names[i], filt[i], sizeof(filt[i]), "") != 0)
            return FAILED;
    size_t s = 0;
    while (s < sizeof(sorts) / sizeof(sorts[0]) && strcmp(sorts[s].name, sort) != 0)
        s++;
    if (s == sizeof(sorts) / sizeof(sorts[0]))
        return fail(a, 400, kh_errf("sort: must be worst, recent or longest, got '%s'", sort));
    if (verdict[0] && strcmp(verdict, "ok") && strcmp(verdict, "warning") &&
        strcmp(verdict, "bad") && strcmp(verdict, "unrated"))
        return fail(a, 400, kh_errf("verdict: must be ok, warning, bad or unrated, got '%s'",
                                    verdict));
    static const char *const columns[] = {"channel_id", "client_id", "label", "node_name",
                                          "browser"};
    struct kh_value p[11] = {kh_ask_text(r.from), kh_ask_text(r.to),
                             kh_ask_integer(kh_time_hour(r.from_us))};
    int np = 3;
    char part[160];
    int rc = kh_ask_sql(&a->ask, list_l);
    for (int i = 0; i < 5; i++) {
        if (filt[i][0] == '\0')
            continue;
        p[np++] = kh_ask_text(filt[i]);
        snprintf(part, sizeof(part), " AND c.%s = @%d", columns[i], np);
        rc = rc ? rc : kh_ask_add(&a->ask, part);
    }
    rc = rc ? rc : kh_ask_add(&a->ask, list_n);
    if (verdict[0]) {
        p[np++] = kh_ask_text(verdict);
        snprintf(part, sizeof(part),
                 "sum(CASE WHEN verdict = @%d THEN 1 ELSE 0 END) AS n_total FROM l), "
                 "p AS (SELECT * FROM l WHERE verdict = @%d",
                 np, np);
    } else {
        snprintf(part, sizeof(part), "count(*) AS n_total FROM l), p AS (SELECT * FROM l");
    }
    rc = rc ? rc : kh_ask_add(&a->ask, part);
    rc = rc ? rc : kh_ask_add(&a->ask, " ORDER BY ");
    rc = rc ? rc : kh_ask_add(&a->ask, sorts[s].order);
    p[np] = kh_ask_integer(per);
    p[np + 1] = kh_ask_integer((page - 1) * per);
    snprintf(part, sizeof(part), " LIMIT @%d OFFSET @%d", np + 1, np + 2);
    np += 2;
    rc = rc ? rc : kh_ask_add(&a->ask, part);
    rc = rc ? rc : kh_ask_add(&a->ask, list_page);
    rc = rc ? rc : kh_ask_add(&a->ask, a->ask.pg ? list_ids_pg : list_ids);
    rc = rc ? rc : kh_ask_add(&a->ask, list_tail);
    rc = rc ? rc : kh_ask_add(&a->ask, sorts[s].order);
    struct kh_ask_table t = {0};
    a->ask.plan_each = true; /* a plan for any range took it for a few rows: see list_l */
    rc = rc ? rc : kh_ask_run(&a->ask, &t, p, np);
    if (rc != 0) {
        kh_ask_table_free(&t);
        return db_fail(a, rc);
    }
    struct kh_buf *b = a->out;
    bool f = true;
    rc = kh_buf_append(b, "{", 1);
    json_range(b, &f, &r);
    rc |= kh_json_int_member(b, &f, "page", page);
    rc |= kh_json_int_member(b, &f, "per_page", per);
    rc |= kh_json_int_member(b, &f, "total", t.n ? kh_ask_int(&t, 0, L_TOTAL) : 0);
    rc |= kh_json_key(b, &f, "counts") | kh_buf_append(b, "{", 1);
    bool cf = true;
    const char *cnames[] = {"all", "bad", "warning", "ok", "unrated"};
    for (int k = 0; k < 5; k++)
        rc |= kh_json_int_member(b, &cf, cnames[k], t.n ? kh_ask_int(&t, 0, L_ALL + k) : 0);
    rc |= kh_buf_append(b, "}", 1);
    rc |= kh_json_key(b, &f, "rows") | kh_buf_append(b, "[", 1);
    for (size_t i = 0; i < t.n; i++)
        rc |= (i ? kh_buf_append(b, ",", 1) : 0) | list_row(b, &t, i);
    rc |= kh_buf_append(b, "]}\n", 3);
    kh_ask_table_free(&t);
    return rc;
}

/* When a page asks beyond the last page the rows are empty and the counts unknown: the
 * counts come from the first row. A caller wanting counts asks page 1. */

/* --- GET /api/connections/ID --------------------------------------------------------------- */

enum { E_CHANNEL, E_SESSION, E_CLIENT, E_BUNDLE, E_ROLE, E_MULTI, E_SIMUL, E_SPOT, E_LABEL,
       E_VERSION, E_NODE, E_FIRST, E_LAST };
static const char envelope_sql[] =
    "SELECT channel_id, session_id, client_id, bundle_id, role, multistream, simulcast, "
    "spotlight, label, version, node_name, #(first_seen), #(last_seen) "
    "FROM sora_connection WHERE connection_id = @1";

enum { T_PAIR, T_LOCAL, T_RELAY, T_BROWSER, T_CONNECTED, T_RTT, T_AVAIL, T_SEND, T_RECV };
static const char transport_sql[] =
    "SELECT candidate_pair_id, local_candidate_type, relay_protocol, browser, connected, "
    "round_trip_time_ms, available_bitrate, send_bitrate, receive_bitrate "
    "FROM quality_connection WHERE connection_id = @1 ORDER BY \"time\" DESC LIMIT 1";

static int envelope(struct api *a, const char *id, struct kh_ask_table *t)
{
    struct kh_value p = kh_ask_text(id);
    int rc = kh_ask(&a->ask, envelope_sql, t, &p, 1);
    if (rc != 0)
        return db_fail(a, rc);
    if (t->n == 0)
        return fail(a, 404, kh_errf("connection %s: not stored", id));
    return 0;
}

static int put_envelope(struct kh_buf *b, bool *f, const char *id, const struct kh_ask_table *t)
{
    int rc = kh_json_key(b, f, "connection") | kh_buf_append(b, "{", 1);
    bool e = true;
    rc |= kh_json_str_member(b, &e, "connection_id", id);
    const char *keys[] = {"channel_id", "session_id", "client_id", "bundle_id", "role"};
    for (int k = 0; k <= E_ROLE; k++)
        rc |= kh_json_str_member(b, &e, keys[k], kh_ask_str(t, 0, k));
    const char *flags[] = {"multistream", "simulcast", "spotlight"};
    for (int k = 0; k < 3; k++) {
        rc |= kh_json_key(b, &e, flags[k]);
        rc |= put_typed(b, kh_ask_cell(t, 0, E_MULTI + k), KH_COL_BOOL);
    }
    rc |= kh_json_str_member(b, &e, "label", kh_ask_str(t, 0, E_LABEL));
    rc |= kh_json_str_member(b, &e, "version", kh_ask_str(t, 0, E_VERSION));
    rc |= kh_json_str_member(b, &e, "node_name", kh_ask_str(t, 0, E_NODE));
    rc |= kh_json_time_member(b, &e, "first_seen", kh_ask_int(t, 0, E_FIRST));
    rc |= kh_json_time_member(b, &e, "last_seen", kh_ask_int(t, 0, E_LAST));
    return rc | kh_buf_append(b, "}", 1);
}

static int put_transport(struct api *a, struct kh_buf *b, bool *f, const char *id)
{
    struct kh_ask_table t = {0};
    struct kh_value p = kh_ask_text(id);
    int rc = kh_ask(&a->ask, transport_sql, &t, &p, 1);
    if (rc != 0) {
        kh_ask_table_free(&t);
        return db_fail(a, rc);
    }
    rc = kh_json_key(b, f, "transport");
    if (t.n == 0) {
        kh_ask_table_free(&t);
        return rc | kh_buf_append(b, "null", 4);
    }
    bool e = true;
    const char *keys[] = {"candidate_pair_id", "local_candidate_type", "relay_protocol",
                          "browser", "connected", "round_trip_time_ms", "available_bitrate",
                          "send_bitrate", "receive_bitrate"};
    rc |= kh_buf_append(b, "{", 1);
    for (int k = 0; k <= T_RECV; k++) {
        rc |= kh_json_key(b, &e, keys[k]);
        rc |= put_typed(b, kh_ask_cell(&t, 0, k), k == T_CONNECTED ? KH_COL_BOOL : 0);
    }
    kh_ask_table_free(&t);
    return rc | kh_buf_append(b, "}", 1);
}

/* The stats tables with the connection's rows in them, and how many. */
static int put_tables(struct api *a, struct kh_buf *b, bool *f, const char *id)
{
    int rc = kh_json_key(b, f, "tables") | kh_buf_append(b, "[", 1);
    bool first = true;
    struct kh_value p = kh_ask_text(id);
    for (size_t t = 0; rc == 0 && t < kh_stats_ntables; t++) {
        if (kh_stats_tables[t].scope != KH_SCOPE_CONNECTION)
            continue;
        struct kh_ask_table n = {0};
        int qrc = kh_ask_sql(&a->ask, "SELECT count(*) FROM \"");
        qrc = qrc ? qrc : kh_ask_raw(&a->ask, kh_stats_tables[t].table);
        qrc = qrc ? qrc : kh_ask_add(&a->ask, "\" WHERE connection_id = @1");
        qrc = qrc ? qrc : kh_ask_run(&a->ask, &n, &p, 1);
        int64_t count = qrc == 0 && n.n ? kh_ask_int(&n, 0, 0) : 0;
        kh_ask_table_free(&n);
        if (qrc != 0)
            return db_fail(a, qrc);
        if (count == 0)
            continue;
        bool e = true;
        rc |= (first ? 0 : kh_buf_append(b, ",", 1)) | kh_buf_append(b, "{", 1);
        rc |= kh_json_str_member(b, &e, "table", kh_stats_tables[t].table);
        rc |= kh_json_int_member(b, &e, "rows", count);
        rc |= kh_json_bool_member(b, &e, "computed", kh_stats_tables[t].computed);
        rc |= kh_buf_append(b, "}", 1);
        first = false;
    }
    return rc | kh_buf_append(b, "]", 1);
}

/* The quality answer of kohaku quality --json, as the member "quality" (null when the
 * connection has no quality rows). */
static int put_quality(struct api *a, struct kh_buf *b, bool *f, const struct kh_qr_request *q)
{
    struct kh_buf qb;
    kh_buf_init(&qb, 64u << 20);
    const char *err = NULL;
    int rc = kh_qr_answer(a->st, q, &qb, &err);
    int out = kh_json_key(b, f, "quality");
    if (rc == 0) {
        while (qb.len && qb.data[qb.len - 1] == '\n')
            qb.len--;
        out |= kh_buf_append(b, qb.data, qb.len);
    } else if (rc == KH_EINVAL) {
        out |= kh_buf_append(b, "null", 4);
    } else {
        kh_buf_cleanup(&qb);
        a->err = err;
        return db_fail(a, rc);
    }
    kh_buf_cleanup(&qb);
    return out;
}

static int connection(struct api *a, const char *id)
{
    struct kh_ask_table env = {0};
    if (envelope(a, id, &env) != 0) {
        kh_ask_table_free(&env);
        return FAILED;
    }
    struct kh_buf *b = a->out;
    bool f = true;
    int rc = kh_buf_append(b, "{", 1) | put_envelope(b, &f, id, &env);
    kh_ask_table_free(&env);
    struct kh_qr_request q = {.what = KH_QR_CONNECTION, .id = id, .json = true};
    int step;
    if ((step = put_quality(a, b, &f, &q)) != 0 || (step = put_transport(a, b, &f, id)) != 0 ||
        (step = put_tables(a, b, &f, id)) != 0)
        return step;
    return rc | kh_buf_append(b, "}\n", 2);
}

/* --- GET /api/connections/ID/series -------------------------------------------------------- */

enum { S_TIME, S_TYPE, S_ID, S_KIND, S_MIME, S_SINCE, S_FIRST_VALUE };
static const char *const series_cols[] = {
    "bitrate", "packet_rate", "loss_percent", "jitter_ms", "round_trip_time_ms",
    "jitter_buffer_ms", "concealment_percent", "frames_per_second", "source_frames_per_second",
    "frame_width", "frame_height", "freezes", "freeze_seconds", "pauses", "pause_seconds",
    "codec_ms_per_frame", "limitation_bandwidth_percent", "limitation_cpu_percent",
    "limitation_other_percent", "r_factor", "mos", "video_score", "severity",
};
#define NSERIES (sizeof(series_cols) / sizeof(series_cols[0]))

static const char *const conn_series_cols[] = {
    "round_trip_time_ms", "available_bitrate", "send_bitrate", "receive_bitrate",
    "pair_changes", "severity", "severity_outbound", "severity_inbound", "mos_min",
    "video_score_min",
};
#define NCONN_SERIES (sizeof(conn_series_cols) / sizeof(conn_series_cols[0]))

#define MAX_POINTS 100000

static int stream_series(struct kh_buf *b, const struct kh_ask_table *t, size_t lo, size_t hi)
{
    bool f = true;
    const char *type = kh_ask_str(t, lo, S_TYPE);
    int rc = kh_buf_append(b, "{", 1);
    rc |= kh_json_str_member(b, &f, "stats_id", kh_ask_str(t, lo, S_ID));
    rc |= kh_json_str_member(b, &f, "direction",
                             type && strcmp(type, "outbound-rtp") == 0 ? "outbound" : "inbound");
    rc |= kh_json_str_member(b, &f, "kind", kh_ask_str(t, lo, S_KIND));
    rc |= kh_json_str_member(b, &f, "codec", kh_ask_str(t, lo, S_MIME));
    rc |= put_column(b, &f, "time", t, lo, hi, S_TIME, true);
    rc |= put_bools(b, &f, "since_start", t, lo, hi, S_SINCE);
    for (size_t c = 0; c < NSERIES; c++)
        rc |= put_column(b, &f, series_cols[c], t, lo, hi, S_FIRST_VALUE + (int)c, false);
    return rc | kh_buf_append(b, "}", 1);
}

static int build_select(struct api *a, const char *const *cols, size_t n, const char *head,
                        const char *tail)
{
    int rc = kh_ask_sql(&a->ask, head);
    for (size_t c = 0; rc == 0 && c < n; c++) {
        rc = kh_ask_raw(&a->ask, ", ");
        rc = rc ? rc : kh_ask_raw(&a->ask, cols[c]);
    }
    return rc ? rc : kh_ask_add(&a->ask, tail);
}

static int series(struct api *a, const char *id)
{
    struct kh_ask_table env = {0}, t = {0}, c = {0};
    if (envelope(a, id, &env) != 0) {
        kh_ask_table_free(&env);
        return FAILED;
    }
    kh_ask_table_free(&env);
    struct kh_value p[2] = {kh_ask_text(id), kh_ask_integer(MAX_POINTS)};
    int rc = build_select(a, series_cols, NSERIES,
                          "SELECT #(\"time\"), stats_type, stats_id, kind, mime_type, "
                          "since_start",
                          " FROM quality_stream WHERE connection_id = @1 "
                          "ORDER BY stats_type, kind, stats_id, \"time\" LIMIT @2");
    rc = rc ? rc : kh_ask_run(&a->ask, &t, p, 2);
    rc = rc ? rc : build_select(a, conn_series_cols, NCONN_SERIES, "SELECT #(\"time\")",
                                " FROM quality_connection WHERE connection_id = @1 "
                                "ORDER BY \"time\" LIMIT @2");
    rc = rc ? rc : kh_ask_run(&a->ask, &c, p, 2);
    if (rc != 0) {
        kh_ask_table_free(&t);
        kh_ask_table_free(&c);
        return db_fail(a, rc);
    }
    struct kh_buf *b = a->out;
    bool f = true;
    rc = kh_buf_append(b, "{", 1) | kh_json_str_member(b, &f, "connection_id", id);
    rc |= kh_json_key(b, &f, "streams") | kh_buf_append(b, "[", 1);
    for (size_t lo = 0, hi; lo < t.n; lo = hi) {
        for (hi = lo + 1; hi < t.n && strcmp(kh_ask_str(&t, hi, S_ID), kh_ask_str(&t, lo, S_ID))
                          == 0 &&
                          strcmp(kh_ask_str(&t, hi, S_TYPE), kh_ask_str(&t, lo, S_TYPE)) == 0;
             hi++)
            ;
        rc |= (lo ? kh_buf_append(b, ",", 1) : 0) | stream_series(b, &t, lo, hi);
    }
    rc |= kh_buf_append(b, "]", 1);
    rc |= kh_json_key(b, &f, "connection") | kh_buf_append(b, "{", 1);
    bool cf = true;
    rc |= put_column(b, &cf, "time", &c, 0, c.n, 0, true);
    for (size_t k = 0; k < NCONN_SERIES; k++)
        rc |= put_column(b, &cf, conn_series_cols[k], &c, 0, c.n, 1 + (int)k, false);
    rc |= kh_buf_append(b, "}}\n", 3);
    kh_ask_table_free(&t);
    kh_ask_table_free(&c);
    return rc;
}

/* --- GET /api/connections/ID/samples?table=T ------------------------------------------------- */

static int find_table(const char *name)
{
    for (size_t t = 0; t < kh_stats_ntables; t++)
        if (kh_stats_tables[t].scope == KH_SCOPE_CONNECTION &&
            strcmp(kh_stats_tables[t].table, name) == 0)
            return (int)t;
    return -1;
}

static int samples(struct api *a, const char *id)
{
    char name[128];
    int64_t limit, offset;
    if (param(a, "table", name, sizeof(name), "") != 0 ||
        int_param(a, "limit", 100, 1, 1000, &limit) != 0 ||
        int_param(a, "offset", 0, 0, 100000000, &offset) != 0)
        return FAILED;
    int t = find_table(name);
    if (t < 0)
        return fail(a, 400, kh_errf("table: '%s' is not a stats table of connections", name));
    struct kh_ask_table env = {0};
    int found = envelope(a, id, &env);
    kh_ask_table_free(&env);
    if (found != 0)
        return FAILED;
    struct kh_buf cols;
    kh_buf_init(&cols, 1u << 20);
    int rc = kh_schema_select_columns(t, NULL, &cols);
    rc = rc ? rc : kh_ask_sql(&a->ask, "SELECT #(\"time\"), ");
    rc = rc ? rc : kh_ask_raw(&a->ask, cols.data);
    if (rc == 0 && kh_schema_has_extra(t))
        rc = kh_ask_raw(&a->ask, ", extra");
    rc = rc ? rc : kh_ask_raw(&a->ask, " FROM \"");
    rc = rc ? rc : kh_ask_raw(&a->ask, kh_stats_tables[t].table);
    rc = rc ? rc : kh_ask_add(&a->ask, "\" WHERE connection_id = @1 ORDER BY \"time\", "
                                       "stats_id LIMIT @2 OFFSET @3");
    kh_buf_cleanup(&cols);
    struct kh_value p[3] = {kh_ask_text(id), kh_ask_integer(limit), kh_ask_integer(offset)};
    struct kh_ask_table rows = {0};
    rc = rc ? rc : kh_ask_run(&a->ask, &rows, p, 3);
    if (rc == 0 && rows.n &&
        rows.ncols != 4 + (int)kh_stats_tables[t].nmembers + (kh_schema_has_extra(t) ? 1 : 0)) {
        a->err = "samples: the database answered other columns than the schema's";
        rc = KH_EIO;
    }
    if (rc != 0) {
        kh_ask_table_free(&rows);
        return db_fail(a, rc);
    }
    struct kh_buf *b = a->out;
    bool f = true;
    rc = kh_buf_append(b, "{", 1) | kh_json_str_member(b, &f, "connection_id", id);
    rc |= kh_json_str_member(b, &f, "table", kh_stats_tables[t].table);
    rc |= kh_json_int_member(b, &f, "offset", offset);
    rc |= kh_json_key(b, &f, "samples") | kh_buf_append(b, "[", 1);
    const struct kh_stats_table *st = &kh_stats_tables[t];
    for (size_t i = 0; i < rows.n; i++) {
        bool e = true;
        rc |= (i ? kh_buf_append(b, ",", 1) : 0) | kh_buf_append(b, "{", 1);
        rc |= kh_json_time_member(b, &e, "time", kh_ask_int(&rows, i, 0));
        const char *common[] = {"type", "id", "timestamp"};
        for (int k = 0; k < 3; k++)
            rc |= kh_json_key(b, &e, common[k]) | put_cell(b, kh_ask_cell(&rows, i, 1 + k));
        for (size_t m = 0; m < st->nmembers; m++) {
            const struct kh_value *v = kh_ask_cell(&rows, i, 4 + (int)m);
            if (v->type) /* members the object did not have are left out */
                rc |= kh_json_key(b, &e, st->members[m].name) |
                      put_typed(b, v, st->members[m].type);
        }
        if (kh_schema_has_extra(t))
            rc |= kh_json_key(b, &e, "extra") |
                  put_cell(b, kh_ask_cell(&rows, i, 4 + (int)st->nmembers));
        rc |= kh_buf_append(b, "}", 1);
    }
    rc |= kh_buf_append(b, "]}\n", 3);
    kh_ask_table_free(&rows);
    return rc;
}

/* --- GET /api/channels/ID ------------------------------------------------------------------- */

enum { C_ID, C_TIME, C_IN, C_OUT, C_LOSS, C_RTT, C_FPS, C_SEV };
#define CHANNEL_SERIES_SQL(members)                                                            \
    "SELECT connection_id, #(\"time\"), "                                                     \
    "sum(CASE WHEN stats_type = 'inbound-rtp' THEN bitrate END), "                             \
    "sum(CASE WHEN stats_type = 'outbound-rtp' THEN bitrate END), max(loss_percent), "         \
    "avg(round_trip_time_ms), avg(frames_per_second), max(severity) FROM quality_stream "      \
    "WHERE " members " GROUP BY connection_id, \"time\" ORDER BY 1, 2 LIMIT @2"
static const char channel_series_sql[] =
    CHANNEL_SERIES_SQL("connection_id IN " KH_QR_CHANNEL_MEMBERS);
/* PostgreSQL: the members as an array, so that each partition is read by its key for them
 * (with IN, a stale row estimate made it hash-join a scan of the whole table: 94 against 3
 * ms for a channel of 24 over a million stats rows). */
static const char channel_series_sql_pg[] =
    CHANNEL_SERIES_SQL("connection_id " KH_QR_CHANNEL_MEMBERS_PG);

static int channel(struct api *a, const char *id)
{
    struct kh_qr_request q = {.what = KH_QR_CHANNEL, .id = id, .json = true};
    struct kh_buf *b = a->out;
    bool f = true;
    int rc = kh_buf_append(b, "{", 1) | kh_json_str_member(b, &f, "channel_id", id);
    struct kh_buf qb;
    kh_buf_init(&qb, 64u << 20);
    const char *err = NULL;
    int qrc = kh_qr_answer(a->st, &q, &qb, &err);
    if (qrc == KH_EINVAL) {
        kh_buf_cleanup(&qb);
        return fail(a, 404, err);
    }
    if (qrc != 0) {
        kh_buf_cleanup(&qb);
        a->err = err;
        return db_fail(a, qrc);
    }
    while (qb.len && qb.data[qb.len - 1] == '\n')
        qb.len--;
    rc |= kh_json_key(b, &f, "quality") | kh_buf_append(b, qb.data, qb.len);
    kh_buf_cleanup(&qb);
    struct kh_value p[2] = {kh_ask_text(id), kh_ask_integer(MAX_POINTS)};
    struct kh_ask_table t = {0};
    qrc = kh_ask(&a->ask, a->ask.pg ? channel_series_sql_pg : channel_series_sql, &t, p, 2);
    if (qrc != 0) {
        kh_ask_table_free(&t);
        return db_fail(a, qrc);
    }
    static const char *const keys[] = {"inbound_bitrate", "outbound_bitrate", "loss_percent",
                                       "round_trip_time_ms", "frames_per_second", "severity"};
    rc |= kh_json_key(b, &f, "series") | kh_buf_append(b, "{", 1);
    bool sf = true;
    for (size_t lo = 0, hi; lo < t.n; lo = hi) {
        for (hi = lo + 1; hi < t.n && strcmp(kh_ask_str(&t, hi, C_ID), kh_ask_str(&t, lo, C_ID))
                          == 0;
             hi++)
            ;
        rc |= kh_json_key(b, &sf, kh_ask_str(&t, lo, C_ID)) | kh_buf_append(b, "{", 1);
        bool cf = true;
        rc |= put_column(b, &cf, "time", &t, lo, hi, C_TIME, true);
        for (int k = 0; k < 6; k++)
            rc |= put_column(b, &cf, keys[k], &t, lo, hi, C_IN + k, false);
        rc |= kh_buf_append(b, "}", 1);
    }
    rc |= kh_buf_append(b, "}}\n", 3);
    kh_ask_table_free(&t);
    return rc;
}

/* --- GET /api/overview ------------------------------------------------------------------------ */

static const char reports_sql[] =
    "SELECT #(\"time\") / @3 * @3, count(*) FROM sora_report WHERE \"time\" >= @1 AND "
    "\"time\" < @2 GROUP BY 1 ORDER BY 1";
/* Per node and bucket: the connections rated in it, those with issues, those bad. Each
 * connection's rows of a bucket are grouped first (by the key's order, and where Citus keeps
 * them), then the far fewer groups are joined to their node and counted. */
static const char nodes_sql[] =
    "SELECT c.node_name, g.b, count(*), sum(CASE WHEN g.s > 0 THEN 1 ELSE 0 END), "
    "sum(CASE WHEN g.s > 1 THEN 1 ELSE 0 END) "
    "FROM (SELECT connection_id, #(\"time\") / @3 * @3 AS b, max(severity) AS s "
    "FROM quality_connection WHERE \"time\" >= @1 AND \"time\" < @2 GROUP BY 1, 2) g "
    "JOIN sora_connection c ON c.connection_id = g.connection_id GROUP BY 1, 2 ORDER BY 1, 2";

/* PostgreSQL: the same with date_bin, so that each row's time is binned as a timestamp and
 * only the buckets are turned into microseconds (extract(epoch ...) is numeric arithmetic,
 * dear over every row of the range). */
#define PG_BIN "date_bin(make_interval(secs => @3::float8 / 1000000), \"time\", " \
               "TIMESTAMPTZ '1970-01-01 00:00:00+00')"
static const char reports_sql_pg[] =
    "SELECT #(b), n FROM (SELECT " PG_BIN " AS b, count(*) AS n FROM sora_report "
    "WHERE \"time\" >= @1 AND \"time\" < @2 GROUP BY 1) x ORDER BY 1";
static const char nodes_sql_pg[] =
    "SELECT c.node_name, #(g.b), count(*), sum(CASE WHEN g.s > 0 THEN 1 ELSE 0 END), "
    "sum(CASE WHEN g.s > 1 THEN 1 ELSE 0 END) "
    "FROM (SELECT connection_id, " PG_BIN " AS b, max(severity) AS s "
    "FROM quality_connection WHERE \"time\" >= @1 AND \"time\" < @2 GROUP BY 1, 2) g "
    "JOIN sora_connection c ON c.connection_id = g.connection_id GROUP BY c.node_name, g.b "
    "ORDER BY 1, 2";

/* The live buckets' rows from a frontier on, per connection and bucket, and the reports per
 * bucket, each split at the call's new frontier (@4): p 0 before it (the cache adds them), 1
 * from it on (read for this answer only). */
#define LIVE_P "CASE WHEN \"time\" >= @4 THEN 1 ELSE 0 END"
static const char live_reports_sql[] =
    "SELECT #(\"time\") / @3 * @3, " LIVE_P ", count(*) FROM sora_report WHERE \"time\" >= @1 "
    "AND \"time\" < @2 GROUP BY 1, 2";
static const char live_conns_sql[] =
    "SELECT g.b, g.p, g.connection_id, c.node_name, g.s FROM (SELECT connection_id, "
    "#(\"time\") / @3 * @3 AS b, " LIVE_P " AS p, max(severity) AS s FROM quality_connection "
    "WHERE \"time\" >= @1 AND \"time\" < @2 GROUP BY 1, 2, 3) g "
    "JOIN sora_connection c ON c.connection_id = g.connection_id";
static const char live_reports_sql_pg[] =
    "SELECT #(b), p, n FROM (SELECT " PG_BIN " AS b, " LIVE_P " AS p, count(*) AS n "
    "FROM sora_report WHERE \"time\" >= @1 AND \"time\" < @2 GROUP BY 1, 2) x";
static const char live_conns_sql_pg[] =
    "SELECT #(g.b), g.p, g.connection_id, c.node_name, g.s FROM (SELECT connection_id, "
    PG_BIN " AS b, " LIVE_P " AS p, max(severity) AS s FROM quality_connection "
    "WHERE \"time\" >= @1 AND \"time\" < @2 GROUP BY 1, 2, 3) g "
    "JOIN sora_connection c ON c.connection_id = g.connection_id";

/* A bucket of about a 300th of the range, at least 10 s, in whole seconds (µs). */
static int64_t bucket_of(const struct range *r)
{
    int64_t b = (r->to_us - r->from_us) / 300 / 1000000 * 1000000;
    return b < 10000000 ? 10000000 : b;
}

/* The overview's rows, in the order it writes them: the reports first, then node by node
 * (bytewise), each by bucket. */
struct ov_rows {
    struct kh_ov_row *v;
    size_t n, cap;
};

static int ov_push(struct ov_rows *o, const struct kh_ov_row *r)
{
    if (o->n == o->cap) {
        struct kh_ov_row *v = kh_grow(o->v, &o->cap, 256, sizeof(*v));
        if (v == NULL)
            return KH_ENOMEM;
        o->v = v;
    }
    o->v[o->n++] = *r;
    return 0;
}

static int ov_cmp(const void *x, const void *y)
{
    const struct kh_ov_row *a = x, *b = y;
    if ((a->node == NULL) != (b->node == NULL))
        return a->node == NULL ? -1 : 1;
    int c = a->node ? strcmp(a->node, b->node) : 0;
    return c ? c : (a->bucket > b->bucket) - (a->bucket < b->bucket);
}

/* What a call asks the cache for: the settled buckets [lo, hi), of which it holds those
 * before `need`. failed: the cache refused a row (full, or out of memory). */
struct ov_span {
    struct kh_ov_cache *cache;
    int64_t lo, hi, need;
    bool failed;
};

/* A row read for [from, to): into the cache when it is a settled bucket the cache lacks, else
 * into the answer. Once the cache refuses one, the call stops using it (overview() then
 * reads the whole range again without it). */
static int ov_take(struct ov_span *sp, struct ov_rows *o, const struct kh_ov_row *r)
{
    if (sp->cache && r->bucket >= sp->need && r->bucket < sp->hi) {
        if (kh_ov_cache_add(sp->cache, r) == 0)
            return 0;
        sp->failed = true;
        sp->cache = NULL;
    }
    return ov_push(o, r);
}

/* The overview's two questions of a range, each in its store's dialect: the reports per
 * bucket into rep, the connections' rows into rows. On a failure both are empty and the call
 * has failed (db_fail). */
static int ov_ask(struct api *a, const char *const sql[2][2], const struct kh_value *p, int n,
                  struct kh_ask_table *rep, struct kh_ask_table *rows)
{
    int rc = kh_ask(&a->ask, sql[0][a->ask.pg], rep, p, n);
    rc = rc ? rc : kh_ask(&a->ask, sql[1][a->ask.pg], rows, p, n);
    if (rc != 0) {
        kh_ask_table_free(rep);
        kh_ask_table_free(rows);
        return db_fail(a, rc);
    }
    return 0;
}

/* Reads [from_us, to_us) into the answer and the cache. */
static int ov_read(struct api *a, int64_t from_us, int64_t to_us, int64_t bucket,
                   struct ov_span *sp, struct ov_rows *o)
{
    static const char *const sql[2][2] = {{reports_sql, reports_sql_pg},
                                          {nodes_sql, nodes_sql_pg}};
    char from[KH_TIME_TEXT_LEN + 1], to[KH_TIME_TEXT_LEN + 1];
    kh_time_format(from_us, from);
    kh_time_format(to_us, to);
    struct kh_value p[3] = {kh_ask_text(from), kh_ask_text(to), kh_ask_integer(bucket)};
    struct kh_ask_table rep = {0}, nodes = {0};
    int rc = ov_ask(a, sql, p, 3, &rep, &nodes);
    if (rc != 0)
        return rc;
    for (size_t i = 0; rc == 0 && i < rep.n; i++) {
        struct kh_ov_row r = {kh_ask_int(&rep, i, 0), NULL, {kh_ask_num(&rep, i, 1), 0, 0}};
        rc = ov_take(sp, o, &r);
    }
    for (size_t i = 0; rc == 0 && i < nodes.n; i++) {
        struct kh_ov_row r = {kh_ask_int(&nodes, i, 1), kh_ask_str(&nodes, i, 0),
                              {kh_ask_num(&nodes, i, 2), kh_ask_num(&nodes, i, 3),
                               kh_ask_num(&nodes, i, 4)}};
        rc = r.node ? ov_take(sp, o, &r) : 0;
    }
    /* the answer's node names point into the ask's arena, which outlives the tables */
    kh_ask_table_free(&rep);
    kh_ask_table_free(&nodes);
    return rc;
}

/* What a call reads after its new frontier, for its answer alone. */
struct ov_extra {
    struct kh_ov_conn *conns;
    size_t n, cap;
    struct kh_ov_rep *reps;
    size_t nrep, caprep;
};

static void ov_extra_free(struct ov_extra *x)
{
    free(x->conns);
    free(x->reps);
}

static int ov_extra_conn(struct ov_extra *x, const struct kh_ov_conn *c)
{
    if (x->n == x->cap) {
        struct kh_ov_conn *p = kh_grow(x->conns, &x->cap, 256, sizeof(*p));
        if (p == NULL)
            return KH_ENOMEM;
        x->conns = p;
    }
    x->conns[x->n++] = *c;
    return 0;
}

static int ov_extra_reports(struct ov_extra *x, int64_t bucket, double n)
{
    if (x->nrep == x->caprep) {
        struct kh_ov_rep *p = kh_grow(x->reps, &x->caprep, 16, sizeof(*p));
        if (p == NULL)
            return KH_ENOMEM;
        x->reps = p;
    }
    x->reps[x->nrep++] = (struct kh_ov_rep){bucket, n};
    return 0;
}

/* Reads the live buckets' rows of [from_us, to_us): those before `front` into the cache's live
 * part (sp->failed when it refuses one), the others into x. */
static int ov_read_live(struct api *a, int64_t from_us, int64_t to_us, int64_t front,
                        int64_t bucket, struct ov_span *sp, struct ov_extra *x)
{
    static const char *const sql[2][2] = {{live_reports_sql, live_reports_sql_pg},
                                          {live_conns_sql, live_conns_sql_pg}};
    char from[KH_TIME_TEXT_LEN + 1], to[KH_TIME_TEXT_LEN + 1], fr[KH_TIME_TEXT_LEN + 1];
    kh_time_format(from_us, from);
    kh_time_format(to_us, to);
    kh_time_format(front, fr);
    struct kh_value p[4] = {kh_ask_text(from), kh_ask_text(to), kh_ask_integer(bucket),
                            kh_ask_text(fr)};
    struct kh_ask_table rep = {0}, conns = {0};
    int rc = ov_ask(a, sql, p, 4, &rep, &conns);
    if (rc != 0)
        return rc;
    for (size_t i = 0; rc == 0 && i < rep.n; i++) {
        int64_t b = kh_ask_int(&rep, i, 0);
        double n = kh_ask_num(&rep, i, 2);
        if (kh_ask_int(&rep, i, 1))
            rc = ov_extra_reports(x, b, n);
        else if (kh_ov_live_reports(sp->cache, b, n) != 0)
            sp->failed = true;
    }
    for (size_t i = 0; rc == 0 && !sp->failed && i < conns.n; i++) {
        struct kh_ov_conn c = {kh_ask_int(&conns, i, 0), kh_ask_str(&conns, i, 2),
                               kh_ask_str(&conns, i, 3), kh_ask_int(&conns, i, 4)};
        if (c.conn == NULL || c.node == NULL)
            continue;
        if (kh_ask_int(&conns, i, 1))
            rc = ov_extra_conn(x, &c);
        else if (kh_ov_live_add(sp->cache, &c) != 0)
            sp->failed = true;
    }
    /* the strings x points to are in the ask's arena, which outlives the tables */
    kh_ask_table_free(&rep);
    kh_ask_table_free(&conns);
    return rc;
}

static int ov_push_fn(void *arg, const struct kh_ov_row *r)
{
    return ov_push(arg, r);
}

/* "key": [field k of rows [lo, hi)], times in ms. */
static int ov_column(struct kh_buf *b, bool *f, const char *key, const struct ov_rows *o,
                     size_t lo, size_t hi, int k, double scale)
{
    int rc = kh_json_key(b, f, key) | kh_buf_append(b, "[", 1);
    for (size_t i = lo; rc == 0 && i < hi; i++) {
        rc = i > lo ? kh_buf_append(b, ",", 1) : 0;
        rc |= k < 0 ? kh_buf_printf(b, "%lld", (long long)(o->v[i].bucket / 1000))
                    : kh_json_num(b, o->v[i].n[k] * scale);
    }
    return rc | kh_buf_append(b, "]", 1);
}

static int ov_write(struct api *a, const struct range *r, int64_t bucket,
                    const struct ov_rows *o)
{
    struct kh_buf *b = a->out;
    bool f = true;
    int rc = kh_buf_append(b, "{", 1);
    json_range(b, &f, r);
    rc |= kh_json_num_member(b, &f, "bucket_seconds", (double)bucket / 1e6);
    size_t nrep = 0;
    while (nrep < o->n && o->v[nrep].node == NULL)
        nrep++;
    rc |= kh_json_key(b, &f, "reports") | kh_buf_append(b, "{", 1);
    bool rf = true;
    rc |= ov_column(b, &rf, "time", o, 0, nrep, -1, 1);
    rc |= ov_column(b, &rf, "per_second", o, 0, nrep, 0, 1e6 / (double)bucket);
    rc |= kh_buf_append(b, "}", 1);
    rc |= kh_json_key(b, &f, "nodes") | kh_buf_append(b, "[", 1);
    for (size_t lo = nrep, hi; lo < o->n; lo = hi) {
        const char *node = o->v[lo].node;
        for (hi = lo + 1; hi < o->n && strcmp(o->v[hi].node, node) == 0; hi++)
            ;
        bool nf = true;
        rc |= (lo > nrep ? kh_buf_append(b, ",", 1) : 0) | kh_buf_append(b, "{", 1);
        rc |= kh_json_str_member(b, &nf, "node_name", node);
        rc |= ov_column(b, &nf, "time", o, lo, hi, -1, 1);
        rc |= ov_column(b, &nf, "connections", o, lo, hi, 0, 1);
        rc |= ov_column(b, &nf, "with_issues", o, lo, hi, 1, 1);
        rc |= ov_column(b, &nf, "bad", o, lo, hi, 2, 1);
        rc |= kh_buf_append(b, "}", 1);
    }
    return rc | kh_buf_append(b, "]}\n", 3);
}

/* The cached part of a call: the settled buckets the cache lacks (read whole, by node, when
 * the live part is more than two buckets behind: a new cache, a call long after the last),
 * the live rows from its frontier to the end of the range (those before the new frontier
 * into the cache), the live buckets that have ended settled; then the answer's rows from the
 * cache and the live part with what came after the frontier. */
static int ov_cached(struct api *a, const struct range *r, int64_t bucket, int64_t front,
                     struct ov_span *sp, struct ov_rows *o)
{
    struct kh_ov_cache *c = sp->cache;
    int rc = 0;
    if (kh_ov_live_frontier(c) < sp->hi - 2 * bucket) {
        kh_ov_live_drop(c);
        rc = sp->need < sp->hi ? ov_read(a, sp->need, sp->hi, bucket, sp, o) : 0;
        if (rc == 0 && !sp->failed)
            kh_ov_cache_end(c, sp->hi);
    }
    struct ov_extra x = {0};
    if (rc == 0 && !sp->failed)
        rc = ov_read_live(a, kh_ov_live_frontier(c), r->to_us, front, bucket, sp, &x);
    if (rc == 0 && !sp->failed && kh_ov_live_settle(c, sp->hi, front) != 0)
        sp->failed = true;
    if (rc == 0 && !sp->failed) {
        size_t n;
        const struct kh_ov_row *held = kh_ov_cache_rows(c, &n);
        for (size_t i = 0; rc == 0 && i < n; i++)
            if (held[i].bucket >= sp->lo && held[i].bucket < sp->hi)
                rc = ov_push(o, &held[i]);
        rc = rc ? rc : kh_ov_live_answer(c, x.conns, x.n, x.reps, x.nrep,
                                         ov_push_fn, o);
    }
    ov_extra_free(&x);
    return rc;
}

/* The settled buckets of the range come from the cache, which reads only those it lacks; of
 * the newest, still filling, a call reads the rows since the previous call's frontier and
 * those of the settle lag (the live part). Without a cache, one read of the whole range. */
static int overview(struct api *a, struct kh_ov_cache *cache)
{
    struct range r;
    if (range_param(a, &r) != 0)
        return FAILED;
    int64_t bucket = bucket_of(&r);
    /* every bucket whole: the range starts at its first bucket's start (so that it is
     * counted whole and settles, instead of part of it read at every call) */
    int64_t q = r.from_us / bucket;
    r.from_us = (q - (r.from_us % bucket < 0)) * bucket;
    struct ov_span sp = {.cache = NULL};
    /* before reading: a report stored after this reads its bucket at the next call */
    kh_ov_cache_stored(cache, kh_storedtime_take());
    int64_t now = kh_time_now_usec();
    kh_ov_settled(cache, bucket, r.from_us, r.to_us, now, &sp.lo, &sp.hi);
    int64_t mono = (int64_t)kh_mono_usec(), front = 0;
    if (sp.lo < sp.hi && kh_ov_cache_begin(cache, bucket, sp.lo, sp.hi, mono, &sp.need)) {
        sp.cache = cache;
        front = kh_ov_front(cache, r.to_us, now);
        if (front < kh_ov_live_frontier(cache)) {
            /* a range that ends before what the cache holds: start again */
            kh_ov_cache_reset(cache);
            if (!kh_ov_cache_begin(cache, bucket, sp.lo, sp.hi, mono, &sp.need))
                sp.cache = NULL;
        }
    }
    struct ov_rows o = {0};
    int rc = sp.cache ? ov_cached(a, &r, bucket, front, &sp, &o)
                      : ov_read(a, r.from_us, r.to_us, bucket, &sp, &o);
    if (rc == 0 && sp.failed) { /* the cache refused a row: none is lost, read again */
        kh_ov_cache_refused(cache, mono);
        sp.cache = NULL;
        o.n = 0;
        rc = ov_read(a, r.from_us, r.to_us, bucket, &sp, &o);
    }
    if (rc == 0) {
        qsort(o.v, o.n, sizeof(*o.v), ov_cmp);
        rc = ov_write(a, &r, bucket, &o);
    } else if (sp.cache || sp.failed) {
        kh_ov_cache_reset(cache); /* it may hold part of what it lacked */
    }
    free(o.v);
    return rc;
}

/* --- dispatch --------------------------------------------------------------------------------- */

/* An id from the path: a Sora id or a channel name, as stored (any printable text; the path
 * was split at its slashes before, so an encoded one, %2F, is part of the id). */
static int path_id(struct api *a, const char *s, size_t n, char *out, size_t cap)
{
    if (n == 0 || decode(s, n, out, cap) < 0)
        return fail(a, 400, "path: a bad or too long id");
    return 0;
}

void kh_console_api(struct kh_store *st, struct kh_ov_cache *cache, const char *path,
                    const char *query, struct kh_buf *out, int *status)
{
    struct api a = {.st = st, .out = out, .status = 200, .query = query};
    kh_ask_init(&a.ask, st, &a.err);
    kh_buf_reset(out);
    char id[512];
    const char *slash = strchr(path, '/');
    size_t head = slash ? (size_t)(slash - path) : strlen(path);
    const char *rest = slash ? slash + 1 : "";
    const char *sub = strchr(rest, '/');
    size_t idlen = sub ? (size_t)(sub - rest) : strlen(rest);
    const char *tail = sub ? sub + 1 : NULL;
    int rc;
    if (st->ops->query == NULL)
        rc = fail(&a, 404, "storage null keeps nothing to show");
    else if (kh_ask_schema_at_least(&a.ask, 5, "the quality tables") != 0)
        rc = fail(&a, 503, a.err);
    else if (head == 11 && strncmp(path, "connections", 11) == 0 && !slash)
        rc = connections(&a);
    else if (head == 11 && strncmp(path, "connections", 11) == 0 &&
             (rc = path_id(&a, rest, idlen, id, sizeof(id))) == 0)
        rc = tail == NULL ? connection(&a, id)
             : strcmp(tail, "series") == 0 ? series(&a, id)
             : strcmp(tail, "samples") == 0 ? samples(&a, id)
                                             : fail(&a, 404, "path: not found");
    else if (head == 8 && strncmp(path, "channels", 8) == 0 && slash && !tail &&
             (rc = path_id(&a, rest, idlen, id, sizeof(id))) == 0)
        rc = channel(&a, id);
    else if (strcmp(path, "overview") == 0)
        rc = overview(&a, cache);
    else if (a.status == 200)
        rc = fail(&a, 404, "path: not found");
    else
        rc = -1;
    if (rc < 0 && a.status == 200) /* FAILED: answered with its error already */
        fail(&a, 500, "console: out of memory writing the answer");
    *status = a.status;
    kh_ask_cleanup(&a.ask);
}
