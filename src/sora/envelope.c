/*
 * envelope: yajl callbacks driving a small state machine over the report body.
 *
 *   S_START -> {          -> S_TOP (envelope keys)
 *   S_TOP   -> "stats": [ -> S_STATS
 *   S_STATS -> {          -> S_OBJ (members are collected, then mapped at "}")
 *   any unknown envelope value is skipped; a nested member value (object/array) is
 *   re-serialised into `cap` and kept as JSON text.
 *
 * Fast path: once an object's "type" has arrived (browsers send it third, after id and
 * timestamp) its table is known, so each following member is looked up as its key arrives
 * and its value converted straight into the row. Everything else (members before "type",
 * media-source objects whose table depends on "kind", names without a column, values whose
 * JSON type does not fit the column) is collected and mapped when the object ends.
 * Strings kept are copied into the report's arena; yajl has already checked UTF-8.
 */
#include "sora/envelope.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_parse.h>
#include <yajl/yajl_tree.h>
#include <yajl/yajl_version.h>

#include "core/buf.h"
#include "core/errors.h"
#include "core/jsonw.h"
#include "core/numparse.h"
#include "core/text.h"
#include "sora/schema.h"

const struct kh_envelope_limits kh_envelope_default_limits = {
    .max_depth = 32, .max_stats = 10000, .max_members = 1000, .arena_max = 64u << 20};

enum ekey {
    K_UNKNOWN,
    K_TYPE,
    K_ID,
    K_TIMESTAMP,
    K_LABEL,
    K_VERSION,
    K_NODE_NAME,
    K_MULTISTREAM,
    K_SIMULCAST,
    K_SPOTLIGHT,
    K_ROLE,
    K_CHANNEL_ID,
    K_CLIENT_ID,
    K_SESSION_ID,
    K_CONNECTION_ID,
    K_BUNDLE_ID,
    K_STATS,
    K_COUNT
};

static const char *const key_names[K_COUNT] = {
    "",          "type",        "id",        "timestamp",  "label",         "version",
    "node_name", "multistream", "simulcast", "spotlight",  "role",          "channel_id",
    "client_id", "session_id",  "connection_id", "bundle_id", "stats"};

enum state { S_START, S_TOP, S_STATS, S_OBJ, S_DONE };
enum jtype { J_NULL, J_BOOL, J_NUM, J_STR, J_JSON };

static const char *const jtype_names[] = {"null", "boolean", "number", "string", "object"};

/* Members every stats object has, found when their key arrives. */
enum special { SP_NONE, SP_TYPE, SP_ID, SP_TIMESTAMP, SP_KIND, SP_COUNT };

struct pmember {
    struct kh_str name;
    enum jtype type;
    enum special special;
    bool b;
    struct kh_str text; /* number text, string, or JSON */
};

struct kh_envelope {
    yajl_handle y;
    enum kh_report_kind kind;
    enum kh_envelope_flavor flavor;
    struct kh_envelope_limits lim;
    struct kh_report *r;
    enum state st;
    enum ekey key;
    size_t depth;     /* current JSON nesting */
    size_t skip;      /* > 0 while skipping an unknown envelope value */
    size_t cap_depth; /* > 0 while capturing a nested member value */
    bool cap_first[64]; /* per open container of the capture: nothing written in it yet */
    bool cap_map[64];   /* per open container of the capture: it is an object */
    struct kh_buf cap;
    struct kh_buf extra;
    size_t stats_index;
    struct pmember *mem;
    size_t nmem, mem_cap;
    struct kh_str cur_name;
    enum special cur_special;
    int sp_index[SP_COUNT]; /* index in mem of the last member of each kind, or -1 */
    struct kh_row *row;     /* the current object's row once its table is known */
    int cur_col;            /* fast path: member index of the current key, or -1 */
    char fast_key[128];     /* fast path: the current key, kept in case it must go to extra */
    uint32_t fast_key_len;
    bool seen[K_COUNT];
    size_t fed;
    int rc;
    char err[384];
};

static int fail(struct kh_envelope *e, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(struct kh_envelope *e, int rc, const char *fmt, ...)
{
    if (e->rc == 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->err, sizeof(e->err), fmt, ap);
        va_end(ap);
        e->rc = rc;
    }
    return 0; /* tells yajl to stop */
}

static int oom(struct kh_envelope *e) { return fail(e, KH_ENOMEM, "body: out of memory"); }

static enum ekey lookup_key(const unsigned char *k, size_t n)
{
    for (int i = 1; i < K_COUNT; i++)
        if (strlen(key_names[i]) == n && memcmp(key_names[i], k, n) == 0)
            return (enum ekey)i;
    return K_UNKNOWN;
}

/* Keys of the node.erlang-vm envelope; the others are ignored there. */
static bool node_key(enum ekey k)
{
    return k == K_TYPE || k == K_ID || k == K_TIMESTAMP || k == K_LABEL || k == K_VERSION ||
           k == K_NODE_NAME || k == K_STATS;
}

/* Strings kohaku keeps must be text PostgreSQL accepts (core/text.h). */
static const char *string_problem(const unsigned char *s, size_t n)
{
    return kh_text_problem(s, n);
}

static bool copy_str(struct kh_envelope *e, struct kh_str *dst, const unsigned char *s, size_t n)
{
    char *p = kh_arena_strndup(&e->r->arena, (const char *)s, n);
    if (p == NULL)
        return false;
    dst->p = p;
    dst->len = (uint32_t)n;
    return true;
}

/* A string value that goes into JSON (extra, or a nested value): an IP literal as the privacy
 * policy has it (README, "IP privacy"). */
static int put_string(struct kh_envelope *e, struct kh_buf *x, const char *s, size_t n)
{
    char repl[KH_PRIVACY_ADDR_LEN];
    size_t len;
    switch (kh_privacy_address(e->lim.privacy, s, n, repl, &len)) {
    case KH_PRIVACY_CHANGED: return kh_buf_put_json_str(x, repl, len);
    case KH_PRIVACY_NULL: return kh_buf_append(x, "null", 4);
    default: return kh_buf_put_json_str(x, s, n);
    }
}

/* --- capture of nested member values ------------------------------------------------ */

static bool cap_prefix(struct kh_envelope *e)
{
    /* in an object the key has written the separator already */
    if (e->cap_depth == 0 || e->cap_map[e->cap_depth - 1])
        return true;
    bool *first = &e->cap_first[e->cap_depth - 1];
    if (!*first && kh_buf_append(&e->cap, ",", 1) != 0)
        return false;
    *first = false;
    return true;
}

static int cap_scalar(struct kh_envelope *e, const char *text, size_t n, bool quote)
{
    if (!cap_prefix(e))
        return oom(e);
    int rc = quote ? put_string(e, &e->cap, text, n) : kh_buf_append(&e->cap, text, n);
    return rc == 0 ? 1 : fail(e, rc, "body: nested value too large");
}

static int cap_open(struct kh_envelope *e, char c)
{
    if (!cap_prefix(e) || kh_buf_append(&e->cap, &c, 1) != 0)
        return oom(e);
    e->cap_map[e->cap_depth] = c == '{';
    e->cap_first[e->cap_depth++] = true;
    return 1;
}

/* --- stats objects -------------------------------------------------------------------- */

static struct pmember *new_member(struct kh_envelope *e)
{
    if (e->nmem == e->lim.max_members) {
        fail(e, KH_EINVAL, "stats[%zu]: more than %zu members", e->stats_index,
             e->lim.max_members);
        return NULL;
    }
    if (e->nmem == e->mem_cap) {
        struct pmember *m = kh_grow(e->mem, &e->mem_cap, 64, sizeof(*m));
        if (m == NULL) {
            oom(e);
            return NULL;
        }
        e->mem = m;
    }
    if (e->cur_special != SP_NONE)
        e->sp_index[e->cur_special] = (int)e->nmem; /* the last one wins, as in JSON.parse */
    struct pmember *m = &e->mem[e->nmem++];
    m->name = e->cur_name;
    m->special = e->cur_special;
    m->b = false;
    m->text.p = NULL;
    m->text.len = 0;
    return m;
}

static enum special classify(const unsigned char *k, size_t n)
{
    switch (n) {
    case 2: return memcmp(k, "id", 2) == 0 ? SP_ID : SP_NONE;
    case 4:
        return memcmp(k, "type", 4) == 0 ? SP_TYPE : memcmp(k, "kind", 4) == 0 ? SP_KIND : SP_NONE;
    case 9: return memcmp(k, "timestamp", 9) == 0 ? SP_TIMESTAMP : SP_NONE;
    default: return SP_NONE;
    }
}

static const struct pmember *special_member(const struct kh_envelope *e, enum special sp)
{
    return e->sp_index[sp] >= 0 ? &e->mem[e->sp_index[sp]] : NULL;
}

/* Converts a member to its column's type; false when it does not fit (then it goes to
 * extra, so nothing the client sent is lost). */
static bool to_value(const struct pmember *m, enum kh_coltype t, struct kh_value *v)
{
    switch (m->type) {
    case J_NULL: v->type = 0; return true;
    case J_BOOL:
        if (t != KH_COL_BOOL)
            return false;
        v->type = KH_COL_BOOL;
        v->u.b = m->b;
        return true;
    case J_NUM:
        if (t == KH_COL_INT) {
            v->type = KH_COL_INT;
            return kh_parse_int64(m->text.p, m->text.len, &v->u.i);
        }
        if (t == KH_COL_REAL) {
            v->type = KH_COL_REAL;
            return kh_parse_double(m->text.p, m->text.len, &v->u.d);
        }
        return false;
    case J_STR:
    case J_JSON:
        if ((m->type == J_STR && t != KH_COL_TEXT) || (m->type == J_JSON && t != KH_COL_JSON))
            return false;
        v->type = (uint8_t)t;
        v->u.s = m->text.p;
        v->len = m->text.len;
        return true;
    }
    return false;
}

static int extra_add(struct kh_envelope *e, const struct pmember *m)
{
    struct kh_buf *x = &e->extra;
    int rc = kh_buf_append(x, x->len ? "," : "{", 1);
    if (rc == 0)
        rc = kh_buf_put_json_str(x, m->name.p, m->name.len);
    if (rc == 0)
        rc = kh_buf_append(x, ":", 1);
    if (rc != 0)
        return rc;
    switch (m->type) {
    case J_NULL: return kh_buf_append(x, "null", 4);
    case J_BOOL: return kh_buf_append(x, m->b ? "true" : "false", m->b ? 4 : 5);
    case J_STR: return put_string(e, x, m->text.p, m->text.len);
    case J_NUM:
    case J_JSON: return kh_buf_append(x, m->text.p, m->text.len);
    }
    return 0;
}

/* type, id and timestamp have columns of their own (stats_type ...); a node report keeps
 * id and timestamp, if any, in extra. */
static bool is_common(const struct kh_envelope *e, const struct pmember *m)
{
    if (m->special == SP_TYPE)
        return true;
    return e->kind == KH_REPORT_CONNECTION &&
           (m->special == SP_ID || m->special == SP_TIMESTAMP);
}

static int map_members(struct kh_envelope *e, struct kh_row *row)
{
    const struct kh_stats_table *st = &kh_stats_tables[row->table];
    kh_buf_reset(&e->extra);
    for (size_t i = 0; i < e->nmem; i++) {
        const struct pmember *m = &e->mem[i];
        if (is_common(e, m))
            continue;
        int idx = kh_schema_member(row->table, m->name.p, m->name.len);
        if (idx >= 0 && to_value(m, st->members[idx].type, &row->vals[idx]))
            continue;
        if (idx >= 0)
            row->vals[idx].type = 0;
        if (extra_add(e, m) != 0)
            return fail(e, KH_ENOMEM, "stats[%zu]: out of memory", e->stats_index);
    }
    if (e->extra.len) {
        if (kh_buf_append(&e->extra, "}", 1) != 0 ||
            !copy_str(e, &row->extra, (const unsigned char *)e->extra.data, e->extra.len))
            return oom(e);
    }
    return 1;
}

static const struct pmember *need(struct kh_envelope *e, enum special sp, const char *name,
                                  enum jtype t)
{
    const struct pmember *m = special_member(e, sp);
    if (m == NULL) {
        fail(e, KH_EINVAL, "stats[%zu].%s: required", e->stats_index, name);
        return NULL;
    }
    if (m->type != t) {
        const char *got = m->type == J_JSON && m->text.p && m->text.p[0] == '['
                              ? "array"
                              : jtype_names[m->type];
        fail(e, KH_EINVAL, "stats[%zu].%s: must be a %s, got %s", e->stats_index, name,
             jtype_names[t], got);
        return NULL;
    }
    return m;
}

static struct kh_row *alloc_row(struct kh_envelope *e, int table)
{
    size_t nm = kh_stats_tables[table].nmembers;
    struct kh_row *row = kh_arena_alloc(&e->r->arena, sizeof(*row));
    struct kh_value *vals = kh_arena_alloc(&e->r->arena, sizeof(*vals) * (nm ? nm : 1));
    if (row == NULL || vals == NULL)
        return NULL;
    memset(row, 0, sizeof(*row));
    memset(vals, 0, sizeof(*vals) * nm);
    row->table = table;
    row->vals = vals;
    return row;
}

/* "type" has arrived: when it alone decides the table, the fast path starts. */
static int start_row(struct kh_envelope *e, const unsigned char *s, size_t n)
{
    int table;
    if (e->row != NULL)
        return 1;
    if (e->kind == KH_REPORT_NODE) {
        if (n != 16 || memcmp(s, "erlang-vm-memory", 16) != 0)
            return 1;
        table = kh_table_erlang_vm_memory;
    } else {
        if (kh_schema_kind_dependent((const char *)s, n))
            return 1;
        table = kh_schema_table_for((const char *)s, n, NULL, 0);
    }
    e->row = alloc_row(e, table);
    return e->row ? 1 : oom(e);
}

/* The current key cannot take the fast path after all: keep it for the end of the object. */
static int demote(struct kh_envelope *e)
{
    e->cur_col = -1;
    return copy_str(e, &e->cur_name, (const unsigned char *)e->fast_key, e->fast_key_len) ? 1
                                                                                       : oom(e);
}

/* Fast path: 1 stored in the row, 0 the value does not fit the column, -1 out of memory. */
static int fast_value(struct kh_envelope *e, enum jtype t, const unsigned char *s, size_t n,
                      int b)
{
    struct kh_value *v = &e->row->vals[e->cur_col];
    enum kh_coltype ct = kh_stats_tables[e->row->table].members[e->cur_col].type;
    switch (t) {
    case J_NULL: v->type = 0; return 1;
    case J_BOOL:
        if (ct != KH_COL_BOOL)
            return 0;
        v->type = KH_COL_BOOL;
        v->u.b = b != 0;
        return 1;
    case J_NUM:
        if (ct == KH_COL_INT && kh_parse_int64((const char *)s, n, &v->u.i)) {
            v->type = KH_COL_INT;
            return 1;
        }
        if (ct == KH_COL_REAL && kh_parse_double((const char *)s, n, &v->u.d)) {
            v->type = KH_COL_REAL;
            return 1;
        }
        return 0;
    case J_STR:
    case J_JSON:
        if ((t == J_STR && ct != KH_COL_TEXT) || (t == J_JSON && ct != KH_COL_JSON))
            return 0;
        {
            struct kh_str copy;
            if (!copy_str(e, &copy, s, n))
                return -1;
            v->type = (uint8_t)ct;
            v->u.s = copy.p;
            v->len = copy.len;
        }
        return 1;
    }
    return 0;
}

static int end_stats_object(struct kh_envelope *e)
{
    const struct pmember *type = need(e, SP_TYPE, "type", J_STR);
    if (type == NULL)
        return 0;
    int table;
    if (e->kind == KH_REPORT_NODE) {
        /* other node stats types are kept whole, one row per object */
        table = strcmp(type->text.p, "erlang-vm-memory") == 0 ? kh_table_erlang_vm_memory
                                                               : kh_table_node_other;
    } else {
        const struct pmember *kind = special_member(e, SP_KIND);
        bool kind_str = kind && kind->type == J_STR;
        table = kh_schema_table_for(type->text.p, type->text.len, kind_str ? kind->text.p : NULL,
                                    kind_str ? kind->text.len : 0);
    }
    /* a fast row keeps the table of the first "type" (a repeated key is the only way the
     * two can differ) */
    struct kh_row *row = e->row ? e->row : alloc_row(e, table);
    e->row = NULL;
    if (row == NULL)
        return oom(e);
    row->stats_type = type->text;
    row->stats_index = (uint32_t)e->stats_index;
    if (e->kind == KH_REPORT_CONNECTION) {
        const struct pmember *id = need(e, SP_ID, "id", J_STR);
        const struct pmember *ts = id ? need(e, SP_TIMESTAMP, "timestamp", J_NUM) : NULL;
        if (ts == NULL)
            return 0;
        row->stats_id = id->text;
        if (!kh_parse_double(ts->text.p, ts->text.len, &row->stats_timestamp))
            return fail(e, KH_EINVAL, "stats[%zu].timestamp: must be a finite number",
                        e->stats_index);
    }
    if (!map_members(e, row))
        return 0;
    if (kh_privacy_row(e->lim.privacy, row, &e->r->arena) != 0)
        return oom(e);
    kh_report_add_row(e->r, row);
    return 1;
}

/* --- envelope values ------------------------------------------------------------------ */

/* The body's "type" must be the one its header announced: a node report sent as a client's
 * (or the reverse) is refused, not stored in the wrong tables. */
static int check_type(struct kh_envelope *e, const struct kh_str *type)
{
    const char *want = e->flavor == KH_FLAVOR_WEBHOOK ? "connection.rtc"
                       : e->kind == KH_REPORT_NODE    ? "node.erlang-vm"
                                                      : "connection.user-agent";
    const char *header = e->flavor == KH_FLAVOR_WEBHOOK ? "sora-stats-webhook-type"
                                                        : "x-sora-stats-exporter-type";
    if (strcmp(type->p, want) == 0)
        return 1;
    return fail(e, KH_EINVAL, "type: '%.*s' does not match the %s header '%s'",
                (int)(type->len > 64 ? 64 : type->len), type->p, header, want);
}


static int wrong_type(struct kh_envelope *e, const char *want, const char *got)
{
    return fail(e, KH_EINVAL, "%s: must be %s, got %s", key_names[e->key], want, got);
}

static int envelope_string(struct kh_envelope *e, const unsigned char *s, size_t n)
{
    struct kh_report *r = e->r;
    struct kh_str *dst = NULL;
    switch (e->key) {
    case K_TYPE: dst = &r->type; break;
    case K_ID: dst = &r->id; break;
    case K_LABEL: dst = &r->label; break;
    case K_VERSION: dst = &r->version; break;
    case K_NODE_NAME: dst = &r->node_name; break;
    case K_ROLE: dst = &r->role; break;
    case K_CHANNEL_ID: dst = &r->channel_id; break;
    case K_CLIENT_ID: dst = &r->client_id; break;
    case K_SESSION_ID: dst = &r->session_id; break;
    case K_CONNECTION_ID: dst = &r->connection_id; break;
    case K_BUNDLE_ID: dst = &r->bundle_id; break;
    case K_TIMESTAMP: {
        const char *why;
        if (kh_time_parse_rfc3339((const char *)s, n, &r->time_usec, &why) != 0)
            return fail(e, KH_EINVAL, "timestamp: %s, got '%.*s'", why, (int)(n > 64 ? 64 : n),
                        (const char *)s);
        kh_time_format(r->time_usec, r->time_text);
        return 1;
    }
    case K_MULTISTREAM:
    case K_SIMULCAST:
    case K_SPOTLIGHT: return wrong_type(e, "a boolean", "string");
    case K_STATS: return wrong_type(e, "an array", "string");
    default: return 1;
    }
    const char *bad = string_problem(s, n);
    if (bad)
        return fail(e, KH_EINVAL, "%s: %s", key_names[e->key], bad);
    if (!copy_str(e, dst, s, n))
        return oom(e);
    /* a type that contradicts the header is refused as soon as it is read (Sora sends it
     * first), before stats objects are held to the wrong kind's rules */
    return e->key == K_TYPE ? check_type(e, dst) : 1;
}

static int envelope_bool(struct kh_envelope *e, int b)
{
    switch (e->key) {
    case K_MULTISTREAM: e->r->multistream = (int8_t)b; return 1;
    case K_SIMULCAST: e->r->simulcast = (int8_t)b; return 1;
    case K_SPOTLIGHT: e->r->spotlight = (int8_t)b; return 1;
    case K_STATS: return wrong_type(e, "an array", "boolean");
    case K_ID:
    case K_BUNDLE_ID:
    case K_UNKNOWN: return 1;
    default: return wrong_type(e, "a string", "boolean");
    }
}

/* A scalar other than a string or boolean arrived for an envelope key. */
static int envelope_other(struct kh_envelope *e, const char *got, bool is_null)
{
    switch (e->key) {
    case K_UNKNOWN: return 1;
    case K_ID:
    case K_BUNDLE_ID:
        if (is_null)
            return 1; /* optional */
        return wrong_type(e, "a string", got);
    case K_MULTISTREAM:
    case K_SIMULCAST:
    case K_SPOTLIGHT: return wrong_type(e, "a boolean", got);
    case K_STATS: return wrong_type(e, "an array", got);
    default: return wrong_type(e, "a string", got);
    }
}

/* --- yajl callbacks ------------------------------------------------------------------- */

static int scalar_in_stats(struct kh_envelope *e, const char *got)
{
    return fail(e, KH_EINVAL, "stats[%zu]: must be an object, got %s", e->stats_index, got);
}

static int member_scalar(struct kh_envelope *e, enum jtype t, const unsigned char *s, size_t n,
                         int b)
{
    const char *bad = t == J_STR ? string_problem(s, n) : NULL;
    if (bad) {
        bool fast = e->cur_col >= 0;
        return fail(e, KH_EINVAL, "stats[%zu].%.*s: %s", e->stats_index,
                    (int)(fast ? e->fast_key_len : e->cur_name.len),
                    fast ? e->fast_key : e->cur_name.p, bad);
    }
    if (e->cap_depth == 0 && e->cur_col >= 0) {
        int rc = fast_value(e, t, s, n, b);
        if (rc != 0)
            return rc > 0 ? 1 : oom(e);
        e->row->vals[e->cur_col].type = 0;
        if (!demote(e))
            return 0;
    }
    if (e->cap_depth > 0) {
        switch (t) {
        case J_NULL: return cap_scalar(e, "null", 4, false);
        case J_BOOL: return cap_scalar(e, b ? "true" : "false", b ? 4 : 5, false);
        case J_NUM: return cap_scalar(e, (const char *)s, n, false);
        default: return cap_scalar(e, (const char *)s, n, true);
        }
    }
    struct pmember *m = new_member(e);
    if (m == NULL)
        return 0;
    m->type = t;
    m->b = b != 0;
    if ((t == J_NUM || t == J_STR) && !copy_str(e, &m->text, s, n))
        return oom(e);
    if (m->special == SP_TYPE && t == J_STR)
        return start_row(e, s, n);
    return 1;
}

static int on_null(void *ctx)
{
    struct kh_envelope *e = ctx;
    if (e->skip)
        return 1;
    switch (e->st) {
    case S_TOP: return envelope_other(e, "null", true);
    case S_STATS: return scalar_in_stats(e, "null");
    case S_OBJ: return member_scalar(e, J_NULL, NULL, 0, 0);
    default: return fail(e, KH_EINVAL, "body: must be a JSON object, got null");
    }
}

static int on_boolean(void *ctx, int b)
{
    struct kh_envelope *e = ctx;
    if (e->skip)
        return 1;
    switch (e->st) {
    case S_TOP: return envelope_bool(e, b);
    case S_STATS: return scalar_in_stats(e, "boolean");
    case S_OBJ: return member_scalar(e, J_BOOL, NULL, 0, b);
    default: return fail(e, KH_EINVAL, "body: must be a JSON object, got boolean");
    }
}

static int on_number(void *ctx, const char *s, size_t n)
{
    struct kh_envelope *e = ctx;
    if (e->skip)
        return 1;
    switch (e->st) {
    case S_TOP: return envelope_other(e, "number", false);
    case S_STATS: return scalar_in_stats(e, "number");
    case S_OBJ: return member_scalar(e, J_NUM, (const unsigned char *)s, n, 0);
    default: return fail(e, KH_EINVAL, "body: must be a JSON object, got number");
    }
}

static int on_string(void *ctx, const unsigned char *s, size_t n)
{
    struct kh_envelope *e = ctx;
    if (e->skip)
        return 1;
    switch (e->st) {
    case S_TOP: return envelope_string(e, s, n);
    case S_STATS: return scalar_in_stats(e, "string");
    case S_OBJ: return member_scalar(e, J_STR, s, n, 0);
    default: return fail(e, KH_EINVAL, "body: must be a JSON object, got string");
    }
}

static int on_map_key(void *ctx, const unsigned char *k, size_t n)
{
    struct kh_envelope *e = ctx;
    if (e->skip)
        return 1;
    if (e->st == S_TOP) {
        e->key = lookup_key(k, n);
        if (e->kind == KH_REPORT_NODE && !node_key(e->key))
            e->key = K_UNKNOWN;
        e->seen[e->key] = true;
        return 1;
    }
    /* S_OBJ. A name equal to a known one (a special or a column) is ASCII by construction;
     * any other name is checked for UTF-8 before it is kept. */
    const char *bad;
    if (e->cap_depth > 0) {
        if ((bad = string_problem(k, n)) != NULL)
            return fail(e, KH_EINVAL, "stats[%zu]: member names %s", e->stats_index, bad);
        bool *first = &e->cap_first[e->cap_depth - 1];
        int rc = *first ? 0 : kh_buf_append(&e->cap, ",", 1);
        *first = false;
        if (rc == 0)
            rc = kh_buf_put_json_str(&e->cap, (const char *)k, n);
        if (rc == 0)
            rc = kh_buf_append(&e->cap, ":", 1);
        return rc == 0 ? 1 : fail(e, rc, "body: nested value too large");
    }
    e->cur_special = classify(k, n);
    e->cur_col = -1;
    bool common = e->cur_special == SP_TYPE || e->cur_special == SP_ID ||
                  e->cur_special == SP_TIMESTAMP;
    if (e->row && !common && n <= sizeof(e->fast_key)) {
        int idx = kh_schema_member(e->row->table, (const char *)k, n);
        if (idx >= 0) {
            e->cur_col = idx;
            memcpy(e->fast_key, k, n);
            e->fast_key_len = (uint32_t)n;
            return 1;
        }
    }
    if (e->cur_special == SP_NONE && (bad = string_problem(k, n)) != NULL)
        return fail(e, KH_EINVAL, "stats[%zu]: member names %s", e->stats_index, bad);
    return copy_str(e, &e->cur_name, k, n) ? 1 : oom(e);
}

static bool deeper(struct kh_envelope *e)
{
    if (++e->depth > e->lim.max_depth) {
        fail(e, KH_EINVAL, "body: JSON nested deeper than %zu levels", e->lim.max_depth);
        return false;
    }
    return true;
}

static int open_container(struct kh_envelope *e, bool is_map)
{
    if (!deeper(e))
        return 0;
    if (e->skip) {
        e->skip++;
        return 1;
    }
    switch (e->st) {
    case S_START:
        if (!is_map)
            return fail(e, KH_EINVAL, "body: must be a JSON object, got array");
        e->st = S_TOP;
        return 1;
    case S_TOP:
        if (e->key == K_STATS && !is_map) {
            e->st = S_STATS;
            return 1;
        }
        if (e->key == K_UNKNOWN) {
            e->skip = 1;
            return 1;
        }
        return envelope_other(e, is_map ? "object" : "array", false);
    case S_STATS:
        if (!is_map)
            return scalar_in_stats(e, "array");
        if (e->stats_index >= e->lim.max_stats)
            return fail(e, KH_EINVAL, "stats: more than %zu objects", e->lim.max_stats);
        e->nmem = 0;
        for (int i = 0; i < SP_COUNT; i++)
            e->sp_index[i] = -1;
        e->row = NULL;
        e->cur_col = -1;
        e->st = S_OBJ;
        return 1;
    case S_OBJ:
        if (e->cap_depth == 0)
            kh_buf_reset(&e->cap);
        return cap_open(e, is_map ? '{' : '[');
    default: return fail(e, KH_EINVAL, "body: trailing data");
    }
}

static int close_capture(struct kh_envelope *e, char c)
{
    if (kh_buf_append(&e->cap, &c, 1) != 0)
        return oom(e);
    if (--e->cap_depth > 0)
        return 1;
    if (e->cur_col >= 0) {
        int rc = fast_value(e, J_JSON, (const unsigned char *)e->cap.data, e->cap.len, 0);
        if (rc != 0)
            return rc > 0 ? 1 : oom(e);
        e->row->vals[e->cur_col].type = 0;
        if (!demote(e))
            return 0;
    }
    struct pmember *m = new_member(e);
    if (m == NULL)
        return 0;
    m->type = J_JSON;
    return copy_str(e, &m->text, (const unsigned char *)e->cap.data, e->cap.len) ? 1 : oom(e);
}

static int close_container(struct kh_envelope *e, bool is_map)
{
    e->depth--;
    if (e->skip) {
        e->skip--;
        return 1;
    }
    switch (e->st) {
    case S_TOP: e->st = S_DONE; return 1;
    case S_STATS: e->st = S_TOP; return 1;
    case S_OBJ:
        if (e->cap_depth > 0)
            return close_capture(e, is_map ? '}' : ']');
        e->st = S_STATS;
        if (!end_stats_object(e))
            return 0;
        e->stats_index++;
        return 1;
    default: return 1;
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

/* --- public API ----------------------------------------------------------------------- */

struct kh_envelope *kh_envelope_new(enum kh_report_kind kind, enum kh_envelope_flavor flavor,
                                    const struct kh_envelope_limits *limits)
{
    struct kh_envelope *e = calloc(1, sizeof(*e));
    if (e == NULL)
        goto fail_alloc;
    e->kind = kind;
    e->flavor = flavor;
    e->lim = limits ? *limits : kh_envelope_default_limits;
    if (e->lim.max_depth > sizeof(e->cap_first))
        e->lim.max_depth = sizeof(e->cap_first);
    e->r = kh_report_new(kind, e->lim.arena_max);
    if (e->r == NULL)
        goto fail_report;
    e->y = yajl_alloc(&callbacks, NULL, e);
    if (e->y == NULL)
        goto fail_yajl;
    kh_buf_init(&e->cap, e->lim.arena_max);
    kh_buf_init(&e->extra, e->lim.arena_max);
    return e;
fail_yajl:
    kh_report_free(e->r);
fail_report:
    free(e);
fail_alloc:
    return NULL;
}

void kh_envelope_free(struct kh_envelope *e)
{
    if (e == NULL)
        return;
    yajl_free(e->y);
    kh_report_free(e->r);
    kh_buf_cleanup(&e->cap);
    kh_buf_cleanup(&e->extra);
    free(e->mem);
    free(e);
}

static void syntax_error(struct kh_envelope *e, const unsigned char *data, size_t len)
{
    unsigned char *msg = yajl_get_error(e->y, 0, data, len);
    size_t at = e->fed + (data ? yajl_get_bytes_consumed(e->y) : 0);
    const char *m = msg ? (const char *)msg : "syntax error";
    if (strstr(m, "premature EOF"))
        fail(e, KH_EINVAL, "body: truncated JSON (ends after %zu bytes)", e->fed);
    else
        fail(e, KH_EINVAL, "body: malformed JSON at byte %zu: %s", at, m);
    if (msg)
        yajl_free_error(e->y, msg);
}

int kh_envelope_feed(struct kh_envelope *e, const void *data, size_t len)
{
    if (e->rc != 0)
        return e->rc;
    yajl_status s = yajl_parse(e->y, data, len);
    if (s == yajl_status_error)
        syntax_error(e, data, len);
    else if (s == yajl_status_client_canceled && e->rc == 0)
        fail(e, KH_EINVAL, "body: rejected");
    e->fed += len;
    if (e->r)
        e->r->body_bytes = e->fed;
    return e->rc;
}

static int check_len(struct kh_envelope *e, enum ekey k, const struct kh_str *s, size_t lo,
                     size_t hi)
{
    if (s->p == NULL)
        return fail(e, KH_EINVAL, "%s: required", key_names[k]);
    if (s->len < lo || s->len > hi) {
        if (lo == 1 && s->len == 0)
            return fail(e, KH_EINVAL, "%s: must not be empty", key_names[k]);
        return fail(e, KH_EINVAL, "%s: must be %zu..%zu bytes, got %u", key_names[k], lo, hi,
                    s->len);
    }
    return 1;
}

static size_t utf8_chars(const struct kh_str *s)
{
    size_t n = 0;
    for (uint32_t i = 0; i < s->len; i++)
        n += ((unsigned char)s->p[i] & 0xC0) != 0x80;
    return n;
}

static int check_sora_id(struct kh_envelope *e, enum ekey k, const struct kh_str *s)
{
    if (s->p == NULL)
        return fail(e, KH_EINVAL, "%s: required", key_names[k]);
    size_t n = utf8_chars(s);
    if (n != 26)
        return fail(e, KH_EINVAL, "%s: must be 26 characters, got %zu", key_names[k], n);
    return 1;
}

static int check_flag(struct kh_envelope *e, enum ekey k, int8_t v)
{
    return v >= 0 ? 1 : fail(e, KH_EINVAL, "%s: required boolean", key_names[k]);
}

static int check_common(struct kh_envelope *e)
{
    struct kh_report *r = e->r;
    if (r->type.p == NULL)
        return fail(e, KH_EINVAL, "type: required");
    if (!check_type(e, &r->type))
        return 0;
    if (!e->seen[K_TIMESTAMP] || r->time_text[0] == '\0')
        return fail(e, KH_EINVAL, "timestamp: required");
    return check_len(e, K_LABEL, &r->label, 1, SIZE_MAX) &&
           check_len(e, K_VERSION, &r->version, 1, SIZE_MAX) &&
           check_len(e, K_NODE_NAME, &r->node_name, 1, SIZE_MAX);
}

static int check_connection(struct kh_envelope *e)
{
    struct kh_report *r = e->r;
    if (!((e->flavor == KH_FLAVOR_WEBHOOK || check_flag(e, K_MULTISTREAM, r->multistream)) &&
          check_flag(e, K_SIMULCAST, r->simulcast) && check_flag(e, K_SPOTLIGHT, r->spotlight)))
        return 0;
    if (r->role.p == NULL)
        return fail(e, KH_EINVAL, "role: required");
    if (strcmp(r->role.p, "sendrecv") != 0 && strcmp(r->role.p, "sendonly") != 0 &&
        strcmp(r->role.p, "recvonly") != 0)
        return fail(e, KH_EINVAL, "role: must be sendrecv, sendonly or recvonly, got '%.*s'",
                    (int)(r->role.len > 32 ? 32 : r->role.len), r->role.p);
    return check_len(e, K_CHANNEL_ID, &r->channel_id, 1, 255) &&
           check_len(e, K_CLIENT_ID, &r->client_id, 1, 255) &&
           check_sora_id(e, K_SESSION_ID, &r->session_id) &&
           check_sora_id(e, K_CONNECTION_ID, &r->connection_id);
}

int kh_envelope_finish(struct kh_envelope *e)
{
    if (e->rc != 0)
        return e->rc;
    if (e->fed == 0)
        return fail(e, KH_EINVAL, "body: empty; expected a JSON object"), e->rc;
    yajl_status s = yajl_complete_parse(e->y);
    if (s != yajl_status_ok) {
        if (e->rc == 0)
            syntax_error(e, NULL, 0);
        return e->rc;
    }
    if (!check_common(e))
        return e->rc;
    if (e->kind == KH_REPORT_CONNECTION && !check_connection(e))
        return e->rc;
    if (!e->seen[K_STATS])
        return fail(e, KH_EINVAL, "stats: required"), e->rc;
    kh_time_format(kh_time_now_usec(), e->r->received_text);
    return 0;
}

struct kh_report *kh_envelope_take_report(struct kh_envelope *e)
{
    if (e->rc != 0)
        return NULL;
    struct kh_report *r = e->r;
    e->r = NULL;
    return r;
}

const char *kh_envelope_error(const struct kh_envelope *e) { return e->rc ? e->err : NULL; }

void kh_envelope_ids(const struct kh_envelope *e, struct kh_str *channel_id,
                     struct kh_str *connection_id, struct kh_str *node_name)
{
    static const struct kh_str none = {NULL, 0};
    *channel_id = e->r ? e->r->channel_id : none;
    *connection_id = e->r ? e->r->connection_id : none;
    *node_name = e->r ? e->r->node_name : none;
}

const char *kh_envelope_library(void)
{
    static char v[32];
    int y = yajl_version();
    snprintf(v, sizeof(v), "yajl %d.%d.%d", y / 10000, y / 100 % 100, y % 100);
    return v;
}

bool kh_envelope_json_numbers(const char *json, size_t len, const char *const *keys, double *out,
                              size_t n)
{
    char text[1024]; /* the records kept this way are small; a longer one is not read */
    for (size_t i = 0; i < n; i++)
        out[i] = NAN;
    if (json == NULL || len >= sizeof(text))
        return false;
    memcpy(text, json, len);
    text[len] = '\0';
    yajl_val v = yajl_tree_parse(text, NULL, 0);
    if (v == NULL || !YAJL_IS_OBJECT(v)) {
        yajl_tree_free(v);
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        const char *path[] = {keys[i], NULL};
        yajl_val x = yajl_tree_get(v, path, yajl_t_number);
        if (x)
            out[i] = YAJL_GET_DOUBLE(x);
    }
    yajl_tree_free(v);
    return true;
}
