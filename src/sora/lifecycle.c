/*
 * lifecycle: yajl callbacks driving a small state machine over a session or event webhook
 * body (see lifecycle.h), then the checks that need all of it.
 *
 *   S_START -> {                     -> S_TOP (body members)   or S_LINE (a log line's)
 *   S_LINE  -> "req": {              -> S_TOP, back to S_LINE at its "}"
 *   S_TOP   -> "data": {             -> S_DATA (its members; the whole object is also
 *                                       re-serialised into `cap` and kept as JSON)
 *   S_TOP   -> "connections": [      -> S_CONNS -> { -> S_CONN (one entry's members)
 *   any other value kohaku does not read is skipped.
 *
 * Members are looked up in a table per place (top level, data, a connections entry) that
 * says where each goes and how strictly it is held: the ids, the times and the counts that
 * merge rules rely on must have their JSON type (or be null: absent), descriptive members
 * of another type are ignored, so a body Sora shapes a little differently from its
 * documentation still stores what it can. Every string kept passes kh_text_problem.
 */
#include "sora/lifecycle.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_parse.h>

#include "core/buf.h"
#include "core/errors.h"
#include "core/jsonw.h"
#include "core/numparse.h"
#include "core/text.h"
#include "sora/lifecycle_body.h"

enum state { S_START, S_LINE, S_TOP, S_DATA, S_CONNS, S_CONN, S_DONE };
enum jtype { J_NULL, J_BOOL, J_NUM, J_STR, J_OBJ, J_ARR };
static const char *const jtype_names[] = {"null", "boolean", "number", "string", "object",
                                          "array"};

enum ftype { F_STR, F_TIME, F_FLAG, F_INT };
static const char *const ftype_names[] = {"a string", "an RFC 3339 time string", "a boolean",
                                          "a non-negative integer"};

struct fdesc {
    const char *name;
    enum ftype type;
    size_t off;  /* in struct kh_lc_fields or struct kh_lc_conn */
    bool strict; /* another JSON type is refused, not ignored */
};

#define FF(name, type, field, strict) {name, type, offsetof(struct kh_lc_fields, field), strict}
static const struct fdesc body_fields[] = {
    FF("type", F_STR, type, true),
    FF("id", F_STR, id, true),
    FF("timestamp", F_TIME, timestamp, true),
    FF("label", F_STR, label, false),
    FF("version", F_STR, version, false),
    FF("node_name", F_STR, node_name, false),
    FF("channel_id", F_STR, channel_id, true),
    FF("session_id", F_STR, session_id, true),
    FF("connection_id", F_STR, connection_id, true),
    FF("client_id", F_STR, client_id, true),
    FF("bundle_id", F_STR, bundle_id, true),
    FF("role", F_STR, role, true),
    FF("reason", F_STR, reason, false),
    FF("turn_transport_type", F_STR, turn_transport_type, false),
    FF("created_timestamp", F_TIME, created, true),
    FF("destroyed_timestamp", F_TIME, destroyed, true),
    FF("multistream", F_FLAG, multistream, false),
    FF("simulcast", F_FLAG, simulcast, false),
    FF("spotlight", F_FLAG, spotlight, false),
    FF("audio", F_FLAG, audio, false),
    FF("video", F_FLAG, video, false),
    FF("max_connections", F_INT, max_connections, true),
    FF("total_connections", F_INT, total_connections, true),
    FF("minutes", F_INT, minutes, false),
    FF("total_received_bytes", F_INT, total_received_bytes, false),
    FF("total_sent_bytes", F_INT, total_sent_bytes, false),
};

/* In "data" (the event webhook's details of the connection) only these are read; the ids
 * that count are the top level's. */
static const struct fdesc data_fields[] = {
    FF("created_timestamp", F_TIME, created, true),
    FF("destroyed_timestamp", F_TIME, destroyed, true),
    FF("reason", F_STR, reason, false),
    FF("turn_transport_type", F_STR, turn_transport_type, false),
    FF("multistream", F_FLAG, multistream, false),
    FF("simulcast", F_FLAG, simulcast, false),
    FF("spotlight", F_FLAG, spotlight, false),
    FF("audio", F_FLAG, audio, false),
    FF("video", F_FLAG, video, false),
    FF("minutes", F_INT, minutes, false),
    FF("total_received_bytes", F_INT, total_received_bytes, false),
    FF("total_sent_bytes", F_INT, total_sent_bytes, false),
};

#define FC(name, type, field, strict) {name, type, offsetof(struct kh_lc_conn, field), strict}
static const struct fdesc conn_fields[] = {
    FC("connection_id", F_STR, connection_id, true),
    FC("client_id", F_STR, client_id, true),
    FC("bundle_id", F_STR, bundle_id, true),
    FC("role", F_STR, role, true),
    FC("audio_codec_type", F_STR, audio_codec_type, false),
    FC("video_codec_type", F_STR, video_codec_type, false),
    FC("connection_created_timestamp", F_TIME, created, true),
    FC("connection_destroyed_timestamp", F_TIME, destroyed, true),
    FC("audio", F_FLAG, audio, false),
    FC("video", F_FLAG, video, false),
    FC("simulcast", F_FLAG, simulcast, false),
    FC("spotlight", F_FLAG, spotlight, false),
    FC("video_bit_rate", F_INT, video_bit_rate, false),
};

#define NELEM(a) (sizeof(a) / sizeof(a[0]))
#define MAX_CAP_DEPTH 64

struct kh_lifecycle {
    yajl_handle y;
    enum kh_lifecycle_flavor flavor;
    enum kh_lifecycle_input input;
    struct kh_envelope_limits lim;
    const char *header, *header_type; /* kh_lifecycle_expect_type */
    struct kh_report *r;
    struct kh_lc_body body;
    size_t conn_cap;
    enum state st;
    size_t depth;             /* current JSON nesting */
    size_t skip;              /* > 0 while skipping a value kohaku does not read */
    const struct fdesc *cur;  /* the member the next value is for, or NULL */
    bool key_req, key_data, key_conns;
    bool have_body;
    size_t at_conn;   /* the entry of "connections" messages name */
    size_t cap_depth; /* > 0 while "data" is being re-serialised */
    bool cap_first[MAX_CAP_DEPTH], cap_map[MAX_CAP_DEPTH];
    struct kh_buf cap;
    size_t fed;
    int rc;
    char err[384];
};

static int fail(struct kh_lifecycle *lc, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(struct kh_lifecycle *lc, int rc, const char *fmt, ...)
{
    if (lc->rc == 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(lc->err, sizeof(lc->err), fmt, ap);
        va_end(ap);
        lc->rc = rc;
    }
    return 0; /* tells yajl to stop */
}

static int oom(struct kh_lifecycle *lc) { return fail(lc, KH_ENOMEM, "body: out of memory"); }

/* What a field's name is prefixed with in messages: "req." in a log line, then "data." or
 * "connections[i]." where it is. */
static void path_of(const struct kh_lifecycle *lc, const char *name, char *out, size_t cap)
{
    const char *req = lc->input == KH_LC_LOG_LINE ? "req." : "";
    if (lc->st == S_DATA)
        snprintf(out, cap, "%sdata.%s", req, name);
    else if (lc->st == S_CONN)
        snprintf(out, cap, "%sconnections[%zu].%s", req, lc->at_conn, name);
    else
        snprintf(out, cap, "%s%s", req, name);
}

static int refuse(struct kh_lifecycle *lc, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int refuse(struct kh_lifecycle *lc, const char *name, const char *fmt, ...)
{
    char where[96], why[256];
    path_of(lc, name, where, sizeof(where));
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    return fail(lc, KH_EINVAL, "%s: %s", where, why);
}

static bool copy_str(struct kh_lifecycle *lc, struct kh_str *dst, const unsigned char *s,
                     size_t n)
{
    char *p = kh_arena_strndup(&lc->r->arena, (const char *)s, n);
    if (p == NULL)
        return false;
    *dst = (struct kh_str){p, (uint32_t)n};
    return true;
}

/* --- the re-serialisation of "data" ---------------------------------------------------- */

/* A string or member name in "data" that kohaku could not keep. */
static int refuse_data(struct kh_lifecycle *lc, const char *what, const char *bad)
{
    return fail(lc, KH_EINVAL, "%sdata: %s %s", lc->input == KH_LC_LOG_LINE ? "req." : "", what,
                bad);
}

static bool cap_prefix(struct kh_lifecycle *lc)
{
    /* in an object the key has written the separator already */
    if (lc->cap_depth == 0 || lc->cap_map[lc->cap_depth - 1])
        return true;
    bool *first = &lc->cap_first[lc->cap_depth - 1];
    if (!*first && kh_buf_append(&lc->cap, ",", 1) != 0)
        return false;
    *first = false;
    return true;
}

static int cap_scalar(struct kh_lifecycle *lc, enum jtype t, const unsigned char *s, size_t n,
                      int b)
{
    if (!cap_prefix(lc))
        return oom(lc);
    const char *bad = t == J_STR ? kh_text_problem(s, n) : NULL;
    if (bad)
        return refuse_data(lc, "strings", bad);
    int rc = 0;
    switch (t) {
    case J_NULL: rc = kh_buf_append(&lc->cap, "null", 4); break;
    case J_BOOL: rc = kh_buf_append(&lc->cap, b ? "true" : "false", b ? 4 : 5); break;
    case J_NUM: rc = kh_buf_append(&lc->cap, s, n); break;
    default: rc = kh_buf_put_json_str(&lc->cap, (const char *)s, n); break;
    }
    return rc == 0 ? 1 : oom(lc);
}

static int cap_open(struct kh_lifecycle *lc, char c)
{
    if (!cap_prefix(lc) || kh_buf_append(&lc->cap, &c, 1) != 0)
        return oom(lc);
    lc->cap_map[lc->cap_depth] = c == '{';
    lc->cap_first[lc->cap_depth++] = true;
    return 1;
}

static int cap_key(struct kh_lifecycle *lc, const unsigned char *k, size_t n)
{
    const char *bad = kh_text_problem(k, n);
    if (bad)
        return refuse_data(lc, "member names", bad);
    bool *first = &lc->cap_first[lc->cap_depth - 1];
    int rc = *first ? 0 : kh_buf_append(&lc->cap, ",", 1);
    *first = false;
    if (rc == 0)
        rc = kh_buf_put_json_str(&lc->cap, (const char *)k, n);
    if (rc == 0)
        rc = kh_buf_append(&lc->cap, ":", 1);
    return rc == 0 ? 1 : oom(lc);
}

static int cap_close(struct kh_lifecycle *lc, char c)
{
    if (kh_buf_append(&lc->cap, &c, 1) != 0)
        return oom(lc);
    lc->cap_depth--;
    return 1;
}

/* --- members ---------------------------------------------------------------------------- */

static const struct fdesc *lookup(const struct fdesc *table, size_t n, const unsigned char *k,
                                  size_t len)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(table[i].name) == len && memcmp(table[i].name, k, len) == 0)
            return &table[i];
    return NULL;
}

/* The struct the current member's value goes into. */
static void *base_of(struct kh_lifecycle *lc)
{
    switch (lc->st) {
    case S_TOP: return &lc->body.top;
    case S_DATA: return &lc->body.data;
    case S_CONN: return &lc->body.conns[lc->body.nconns - 1];
    default: return NULL;
    }
}

static int wrong_type(struct kh_lifecycle *lc, const struct fdesc *d, enum jtype t)
{
    if (!d->strict)
        return 1;
    return refuse(lc, d->name, "must be %s, got %s", ftype_names[d->type], jtype_names[t]);
}

static int set_time(struct kh_lifecycle *lc, const struct fdesc *d, struct kh_lc_time *dst,
                    const unsigned char *s, size_t n)
{
    const char *why;
    char text[KH_TIME_TEXT_LEN + 1];
    if (kh_time_parse_rfc3339((const char *)s, n, &dst->usec, &why) != 0)
        return refuse(lc, d->name, "%s, got '%.*s'", why, (int)(n > 64 ? 64 : n),
                      (const char *)s);
    kh_time_format(dst->usec, text);
    dst->text = kh_arena_strndup(&lc->r->arena, text, KH_TIME_TEXT_LEN);
    dst->set = dst->text != NULL;
    return dst->set ? 1 : oom(lc);
}

static int set_int(struct kh_lifecycle *lc, const struct fdesc *d, struct kh_lc_int *dst,
                   const unsigned char *s, size_t n)
{
    int64_t v;
    if (!kh_parse_int64((const char *)s, n, &v) || v < 0)
        return d->strict ? refuse(lc, d->name, "must be a non-negative integer, got "
                                                      "%.*s",
                                         (int)(n > 32 ? 32 : n), (const char *)s)
                                : 1;
    *dst = (struct kh_lc_int){true, v};
    return 1;
}

/* A scalar value for member d of the struct at base. */
static int assign(struct kh_lifecycle *lc, const struct fdesc *d, enum jtype t,
                  const unsigned char *s, size_t n, int b)
{
    char *field = (char *)base_of(lc) + d->off;
    if (t == J_NULL)
        return 1; /* null is absent */
    bool want_string = d->type == F_STR || d->type == F_TIME;
    if ((want_string && t != J_STR) || (d->type == F_FLAG && t != J_BOOL) ||
        (d->type == F_INT && t != J_NUM))
        return wrong_type(lc, d, t);
    if (t == J_STR) {
        const char *bad = kh_text_problem(s, n);
        if (bad)
            return refuse(lc, d->name, "%s", bad);
    }
    switch (d->type) {
    case F_STR: return copy_str(lc, (struct kh_str *)(void *)field, s, n) ? 1 : oom(lc);
    case F_TIME: return set_time(lc, d, (struct kh_lc_time *)(void *)field, s, n);
    case F_FLAG: *(int8_t *)field = (int8_t)(b != 0); return 1;
    case F_INT: return set_int(lc, d, (struct kh_lc_int *)(void *)field, s, n);
    }
    return 1;
}

/* --- yajl callbacks --------------------------------------------------------------------- */

static int scalar(struct kh_lifecycle *lc, enum jtype t, const unsigned char *s, size_t n, int b)
{
    if (lc->cap_depth > 0 && !cap_scalar(lc, t, s, n, b))
        return 0;
    if (lc->skip)
        return 1;
    switch (lc->st) {
    case S_START:
        return fail(lc, KH_EINVAL, "%s: must be a JSON object, got %s",
                    lc->input == KH_LC_LOG_LINE ? "line" : "body", jtype_names[t]);
    case S_LINE:
        return lc->key_req && t != J_NULL
                   ? fail(lc, KH_EINVAL, "req: must be an object, got %s", jtype_names[t])
                   : 1;
    case S_CONNS:
        return refuse(lc, "connections", "entries must be objects, got %s", jtype_names[t]);
    case S_TOP:
        if (lc->key_conns && t != J_NULL)
            return refuse(lc, "connections", "must be an array, got %s", jtype_names[t]);
        return lc->cur ? assign(lc, lc->cur, t, s, n, b) : 1;
    default: return lc->cur ? assign(lc, lc->cur, t, s, n, b) : 1;
    }
}

static int on_null(void *ctx) { return scalar(ctx, J_NULL, NULL, 0, 0); }
static int on_boolean(void *ctx, int b) { return scalar(ctx, J_BOOL, NULL, 0, b); }

static int on_number(void *ctx, const char *s, size_t n)
{
    return scalar(ctx, J_NUM, (const unsigned char *)s, n, 0);
}

static int on_string(void *ctx, const unsigned char *s, size_t n)
{
    return scalar(ctx, J_STR, s, n, 0);
}

static int on_map_key(void *ctx, const unsigned char *k, size_t n)
{
    struct kh_lifecycle *lc = ctx;
    if (lc->cap_depth > 0 && !cap_key(lc, k, n))
        return 0;
    if (lc->skip)
        return 1;
    lc->cur = NULL;
    lc->key_req = lc->key_data = lc->key_conns = false;
    switch (lc->st) {
    case S_LINE: lc->key_req = n == 3 && memcmp(k, "req", 3) == 0; return 1;
    case S_TOP:
        lc->key_data = n == 4 && memcmp(k, "data", 4) == 0;
        lc->key_conns = n == 11 && memcmp(k, "connections", 11) == 0;
        lc->cur = lookup(body_fields, NELEM(body_fields), k, n);
        return 1;
    case S_DATA: lc->cur = lookup(data_fields, NELEM(data_fields), k, n); return 1;
    case S_CONN: lc->cur = lookup(conn_fields, NELEM(conn_fields), k, n); return 1;
    default: return 1;
    }
}

/* A new entry of "connections". */
static int open_conn(struct kh_lifecycle *lc)
{
    struct kh_lc_body *b = &lc->body;
    if (b->nconns >= lc->lim.max_stats)
        return refuse(lc, "connections", "more than %zu entries", lc->lim.max_stats);
    if (b->nconns == lc->conn_cap) {
        struct kh_lc_conn *c = kh_grow(b->conns, &lc->conn_cap, 16, sizeof(*c));
        if (c == NULL)
            return oom(lc);
        b->conns = c;
    }
    lc->at_conn = b->nconns;
    struct kh_lc_conn *c = &b->conns[b->nconns++];
    memset(c, 0, sizeof(*c));
    c->audio = c->video = c->simulcast = c->spotlight = -1;
    lc->st = S_CONN;
    return 1;
}

/* A container where the body's top level has a member (S_TOP). */
static int open_in_top(struct kh_lifecycle *lc, bool is_map)
{
    if (lc->key_data && is_map) {
        kh_buf_reset(&lc->cap);
        lc->st = S_DATA;
        return cap_open(lc, '{');
    }
    if (lc->key_conns) {
        if (is_map)
            return refuse(lc, "connections", "must be an array, got object");
        lc->st = S_CONNS;
        return 1;
    }
    if (lc->cur && lc->cur->strict)
        return wrong_type(lc, lc->cur, is_map ? J_OBJ : J_ARR);
    lc->skip = 1;
    return 1;
}

static int open_container(void *ctx, bool is_map)
{
    struct kh_lifecycle *lc = ctx;
    if (++lc->depth > lc->lim.max_depth)
        return fail(lc, KH_EINVAL, "body: JSON nested deeper than %zu levels", lc->lim.max_depth);
    if (lc->cap_depth > 0 && !cap_open(lc, is_map ? '{' : '['))
        return 0;
    if (lc->skip) {
        lc->skip++;
        return 1;
    }
    switch (lc->st) {
    case S_START:
        if (!is_map)
            return fail(lc, KH_EINVAL, "%s: must be a JSON object, got array",
                        lc->input == KH_LC_LOG_LINE ? "line" : "body");
        lc->st = lc->input == KH_LC_LOG_LINE ? S_LINE : S_TOP;
        return 1;
    case S_LINE:
        if (lc->key_req && !is_map)
            return fail(lc, KH_EINVAL, "req: must be an object, got array");
        lc->st = lc->key_req ? S_TOP : lc->st;
        lc->skip = lc->key_req ? 0 : 1;
        return 1;
    case S_TOP: return open_in_top(lc, is_map);
    case S_CONNS:
        if (!is_map)
            return refuse(lc, "connections", "entries must be objects, got array");
        return open_conn(lc);
    default:
        if (lc->cur && lc->cur->strict)
            return wrong_type(lc, lc->cur, is_map ? J_OBJ : J_ARR);
        lc->skip = 1;
        return 1;
    }
}

/* "data" is complete: its text goes into the report. */
static int end_data(struct kh_lifecycle *lc)
{
    lc->st = S_TOP;
    return copy_str(lc, &lc->body.data_json, (const unsigned char *)lc->cap.data, lc->cap.len)
               ? 1
               : oom(lc);
}

static int close_container(void *ctx, bool is_map)
{
    struct kh_lifecycle *lc = ctx;
    lc->depth--;
    if (lc->cap_depth > 0 && !cap_close(lc, is_map ? '}' : ']'))
        return 0;
    if (lc->skip) {
        lc->skip--;
        return 1;
    }
    lc->cur = NULL;
    switch (lc->st) {
    case S_DATA: return end_data(lc);
    case S_CONN: lc->st = S_CONNS; return 1;
    case S_CONNS: lc->st = S_TOP; return 1;
    case S_TOP:
        lc->have_body = true;
        lc->st = lc->input == KH_LC_LOG_LINE ? S_LINE : S_DONE;
        return 1;
    default: lc->st = S_DONE; return 1;
    }
}

static int on_start_map(void *ctx) { return open_container(ctx, true); }
static int on_end_map(void *ctx) { return close_container(ctx, true); }
static int on_start_array(void *ctx) { return open_container(ctx, false); }
static int on_end_array(void *ctx) { return close_container(ctx, false); }

static const yajl_callbacks callbacks = {
    .yajl_null = on_null,
    .yajl_boolean = on_boolean,
    .yajl_number = on_number,
    .yajl_string = on_string,
    .yajl_start_map = on_start_map,
    .yajl_map_key = on_map_key,
    .yajl_end_map = on_end_map,
    .yajl_start_array = on_start_array,
    .yajl_end_array = on_end_array,
};

/* --- the checks that need the whole body ------------------------------------------------ */

static const char *const stats_types[] = {"connection.rtc", "connection.user-agent",
                                          "node.erlang-vm"};

static bool starts_with(const struct kh_str *s, const char *prefix)
{
    size_t n = strlen(prefix);
    return s->len >= n && memcmp(s->p, prefix, n) == 0;
}

static bool equals(const struct kh_str *s, const char *text)
{
    return s->p && s->len == strlen(text) && memcmp(s->p, text, s->len) == 0;
}

static int type_refused(struct kh_lifecycle *lc, const char *why)
{
    const struct kh_str *t = &lc->body.top.type;
    return refuse(lc, "type", "'%.*s' %s", (int)(t->len > 64 ? 64 : t->len), t->p, why);
}

/* Which webhook the body is: by the flavor, and its type must agree (and the header's). */
static int check_type(struct kh_lifecycle *lc)
{
    const struct kh_str *t = &lc->body.top.type;
    if (t->p == NULL)
        return refuse(lc, "type", "required");
    for (size_t i = 0; i < NELEM(stats_types); i++)
        if (equals(t, stats_types[i]))
            return type_refused(lc, "is a stats report, not a session or event webhook");
    bool session = starts_with(t, "session.");
    if (lc->flavor == KH_LC_SESSION && !session)
        return type_refused(lc, "is not a session webhook type (session.*)");
    if (lc->flavor == KH_LC_EVENT && session)
        return type_refused(lc, "is a session webhook type; the event webhook's are "
                                "connection.* and the others");
    if (lc->header_type && !equals(t, lc->header_type))
        return refuse(lc, "type", "'%.*s' does not match the %s header '%.64s'",
                      (int)(t->len > 64 ? 64 : t->len), t->p, lc->header, lc->header_type);
    lc->r->kind = session ? KH_REPORT_SESSION_WEBHOOK : KH_REPORT_EVENT_WEBHOOK;
    return 1;
}

static size_t utf8_chars(const struct kh_str *s)
{
    size_t n = 0;
    for (uint32_t i = 0; i < s->len; i++)
        n += ((unsigned char)s->p[i] & 0xC0) != 0x80;
    return n;
}

/* A Sora id (session_id, connection_id): 26 characters; required or, when present. */
static int check_sora_id(struct kh_lifecycle *lc, const char *name, const struct kh_str *s,
                         bool required)
{
    if (s->p == NULL)
        return required ? refuse(lc, name, "required") : 1;
    size_t n = utf8_chars(s);
    return n == 26 ? 1 : refuse(lc, name, "must be 26 characters, got %zu", n);
}

/* A string of lo..hi bytes (channel_id, client_id ...). */
static int check_len(struct kh_lifecycle *lc, const char *name, const struct kh_str *s,
                     size_t lo, size_t hi, bool required)
{
    if (s->p == NULL)
        return required ? refuse(lc, name, "required") : 1;
    if (s->len == 0 && lo > 0)
        return refuse(lc, name, "must not be empty");
    if (s->len < lo || s->len > hi)
        return refuse(lc, name, "must be %zu..%zu bytes, got %u", lo, hi, s->len);
    return 1;
}

static int check_role(struct kh_lifecycle *lc, const struct kh_str *role)
{
    if (role->p == NULL || equals(role, "sendrecv") || equals(role, "sendonly") ||
        equals(role, "recvonly"))
        return 1;
    return refuse(lc, "role", "must be sendrecv, sendonly or recvonly, got '%.*s'",
                  (int)(role->len > 32 ? 32 : role->len), role->p);
}

static int check_conn(struct kh_lifecycle *lc, size_t i)
{
    const struct kh_lc_conn *c = &lc->body.conns[i];
    lc->st = S_CONN; /* the messages name the entry */
    lc->at_conn = i;
    return check_sora_id(lc, "connection_id", &c->connection_id, true) &&
           check_len(lc, "client_id", &c->client_id, 0, 255, false) &&
           check_len(lc, "bundle_id", &c->bundle_id, 0, 255, false) && check_role(lc, &c->role);
}

static int check_conns(struct kh_lifecycle *lc)
{
    for (size_t i = 0; i < lc->body.nconns; i++)
        if (!check_conn(lc, i))
            return 0;
    lc->st = S_DONE;
    return 1;
}

/* The members every webhook needs, and those its kind needs. */
static int check_body(struct kh_lifecycle *lc)
{
    const struct kh_lc_fields *f = &lc->body.top;
    bool session = lc->r->kind == KH_REPORT_SESSION_WEBHOOK;
    bool connection = !session && starts_with(&f->type, "connection.");
    lc->st = S_TOP;
    if (!check_len(lc, "id", &f->id, 1, 255, true))
        return 0;
    if (!f->timestamp.set)
        return refuse(lc, "timestamp", "required");
    return check_sora_id(lc, "session_id", &f->session_id, session || connection) &&
           check_len(lc, "channel_id", &f->channel_id, 1, 255, session || connection) &&
           check_sora_id(lc, "connection_id", &f->connection_id, connection) &&
           check_len(lc, "client_id", &f->client_id, 0, 255, false) &&
           check_len(lc, "bundle_id", &f->bundle_id, 0, 255, false) && check_role(lc, &f->role) &&
           check_conns(lc);
}

/* The report's envelope from the body. */
static void fill_report(struct kh_lifecycle *lc)
{
    struct kh_report *r = lc->r;
    const struct kh_lc_fields *f = &lc->body.top;
    r->type = f->type;
    r->id = f->id;
    r->label = f->label;
    r->version = f->version;
    r->node_name = f->node_name;
    r->channel_id = f->channel_id;
    r->session_id = f->session_id;
    r->connection_id = f->connection_id;
    r->client_id = f->client_id;
    r->bundle_id = f->bundle_id;
    r->role = f->role;
    r->multistream = f->multistream;
    r->simulcast = f->simulcast;
    r->spotlight = f->spotlight;
    r->time_usec = f->timestamp.usec;
    memcpy(r->time_text, f->timestamp.text, KH_TIME_TEXT_LEN + 1);
}

/* --- public API ------------------------------------------------------------------------- */

static void init_fields(struct kh_lc_fields *f)
{
    memset(f, 0, sizeof(*f));
    f->multistream = f->simulcast = f->spotlight = f->audio = f->video = -1;
}

struct kh_lifecycle *kh_lifecycle_new(enum kh_lifecycle_flavor flavor,
                                      enum kh_lifecycle_input input,
                                      const struct kh_envelope_limits *limits)
{
    struct kh_lifecycle *lc = calloc(1, sizeof(*lc));
    if (lc == NULL)
        goto fail_alloc;
    lc->flavor = flavor;
    lc->input = input;
    lc->lim = limits ? *limits : kh_envelope_default_limits;
    if (lc->lim.max_depth > MAX_CAP_DEPTH)
        lc->lim.max_depth = MAX_CAP_DEPTH;
    lc->r = kh_report_new(KH_REPORT_EVENT_WEBHOOK, lc->lim.arena_max);
    if (lc->r == NULL)
        goto fail_report;
    lc->y = yajl_alloc(&callbacks, NULL, lc);
    if (lc->y == NULL)
        goto fail_yajl;
    kh_buf_init(&lc->cap, lc->lim.arena_max);
    init_fields(&lc->body.top);
    init_fields(&lc->body.data);
    return lc;
fail_yajl:
    kh_report_free(lc->r);
fail_report:
    free(lc);
fail_alloc:
    return NULL;
}

void kh_lifecycle_free(struct kh_lifecycle *lc)
{
    if (lc == NULL)
        return;
    yajl_free(lc->y);
    kh_report_free(lc->r);
    kh_buf_cleanup(&lc->cap);
    free(lc->body.conns);
    free(lc);
}

void kh_lifecycle_expect_type(struct kh_lifecycle *lc, const char *header, const char *type)
{
    lc->header = header;
    lc->header_type = type;
}

static void syntax_error(struct kh_lifecycle *lc, const unsigned char *data, size_t len)
{
    const char *what = lc->input == KH_LC_LOG_LINE ? "line" : "body";
    unsigned char *msg = yajl_get_error(lc->y, 0, data, len);
    size_t at = lc->fed + (data ? yajl_get_bytes_consumed(lc->y) : 0);
    const char *m = msg ? (const char *)msg : "syntax error";
    if (strstr(m, "premature EOF"))
        fail(lc, KH_EINVAL, "%s: truncated JSON (ends after %zu bytes)", what, lc->fed);
    else
        fail(lc, KH_EINVAL, "%s: malformed JSON at byte %zu: %s", what, at, m);
    if (msg)
        yajl_free_error(lc->y, msg);
}

int kh_lifecycle_feed(struct kh_lifecycle *lc, const void *data, size_t len)
{
    if (lc->rc != 0)
        return lc->rc;
    yajl_status s = yajl_parse(lc->y, data, len);
    if (s == yajl_status_error)
        syntax_error(lc, data, len);
    else if (s == yajl_status_client_canceled && lc->rc == 0)
        fail(lc, KH_EINVAL, "body: rejected");
    lc->fed += len;
    if (lc->r)
        lc->r->body_bytes = lc->fed;
    return lc->rc;
}

int kh_lifecycle_finish(struct kh_lifecycle *lc)
{
    if (lc->rc != 0)
        return lc->rc;
    const char *what = lc->input == KH_LC_LOG_LINE ? "line" : "body";
    if (lc->fed == 0)
        return fail(lc, KH_EINVAL, "%s: empty; expected a JSON object", what), lc->rc;
    if (yajl_complete_parse(lc->y) != yajl_status_ok) {
        if (lc->rc == 0)
            syntax_error(lc, NULL, 0);
        return lc->rc;
    }
    if (!lc->have_body)
        return fail(lc, KH_EINVAL, "req: required"), lc->rc;
    if (!check_type(lc) || !check_body(lc))
        return lc->rc;
    fill_report(lc);
    if (kh_lifecycle_rows(lc->r, &lc->body) != 0)
        return oom(lc), lc->rc;
    kh_time_format(kh_time_now_usec(), lc->r->received_text);
    return 0;
}

struct kh_report *kh_lifecycle_take_report(struct kh_lifecycle *lc)
{
    if (lc->rc != 0)
        return NULL;
    struct kh_report *r = lc->r;
    lc->r = NULL;
    return r;
}

const char *kh_lifecycle_error(const struct kh_lifecycle *lc)
{
    return lc->rc ? lc->err : NULL;
}

void kh_lifecycle_ids(const struct kh_lifecycle *lc, struct kh_str *type,
                      struct kh_str *session_id, struct kh_str *connection_id)
{
    *type = lc->body.top.type;
    *session_id = lc->body.top.session_id;
    *connection_id = lc->body.top.connection_id;
}

int kh_lifecycle_parse(enum kh_lifecycle_flavor flavor, enum kh_lifecycle_input input,
                       const void *data, size_t len, const struct kh_envelope_limits *limits,
                       struct kh_report **out, char *err, size_t errlen)
{
    *out = NULL;
    struct kh_lifecycle *lc = kh_lifecycle_new(flavor, input, limits);
    if (lc == NULL) {
        snprintf(err, errlen, "body: out of memory");
        return KH_ENOMEM;
    }
    int rc = kh_lifecycle_feed(lc, data, len);
    if (rc == 0)
        rc = kh_lifecycle_finish(lc);
    if (rc == 0)
        *out = kh_lifecycle_take_report(lc);
    else
        snprintf(err, errlen, "%s", kh_lifecycle_error(lc));
    kh_lifecycle_free(lc);
    return rc;
}
