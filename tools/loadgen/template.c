/*
 * template: fixture snapshots compiled to text pieces and growing numbers. See template.h.
 */
#include "template.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yajl/yajl_tree.h>

#include "core/jsonw.h"

enum piece_kind { P_TEXT, P_INT, P_REAL, P_CLOCK };

struct piece {
    enum piece_kind kind;
    size_t off, len;   /* P_TEXT: range in `text` */
    double base, rate; /* value at elapsed 0, growth per ms */
};

struct lg_template {
    char name[128];
    char role[16];
    struct kh_buf text;
    struct piece *pieces;
    size_t npieces, cap;
    size_t objects;
    double ref_ms; /* the early snapshot's first timestamp */
};

static char *read_file(const char *path, char *err, size_t errlen)
{
    FILE *fp = fopen(path, "rb");
    if (fp == NULL) {
        snprintf(err, errlen, "%s: cannot open", path);
        return NULL;
    }
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *buf = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (buf && fread(buf, 1, (size_t)n, fp) == (size_t)n)
        buf[n] = '\0';
    else {
        free(buf);
        buf = NULL;
        snprintf(err, errlen, "%s: cannot read", path);
    }
    fclose(fp);
    return buf;
}

static yajl_val parse_array(const char *path, char *err, size_t errlen)
{
    char *text = read_file(path, err, errlen);
    if (text == NULL)
        return NULL;
    char yerr[256];
    yajl_val v = yajl_tree_parse(text, yerr, sizeof(yerr));
    free(text);
    if (v == NULL || !YAJL_IS_ARRAY(v)) {
        snprintf(err, errlen, "%s: not a JSON array of stats objects%s%s", path, v ? "" : ": ",
                 v ? "" : yerr);
        yajl_tree_free(v);
        return NULL;
    }
    return v;
}

static int add_piece(struct lg_template *t, struct piece p)
{
    if (t->npieces == t->cap) {
        size_t ncap = t->cap ? t->cap * 2 : 256;
        struct piece *np = realloc(t->pieces, ncap * sizeof(*np));
        if (np == NULL)
            return -1;
        t->pieces = np;
        t->cap = ncap;
    }
    /* merge consecutive text */
    if (p.kind == P_TEXT && t->npieces && t->pieces[t->npieces - 1].kind == P_TEXT) {
        t->pieces[t->npieces - 1].len += p.len;
        return 0;
    }
    t->pieces[t->npieces++] = p;
    return 0;
}

static int lit(struct lg_template *t, const char *s, size_t n)
{
    struct piece p = {.kind = P_TEXT, .off = t->text.len, .len = n};
    if (kh_buf_append(&t->text, s, n) != 0)
        return -1;
    return add_piece(t, p);
}

static int lit_json_str(struct lg_template *t, const char *s)
{
    size_t before = t->text.len;
    if (kh_buf_put_json_str(&t->text, s, strlen(s)) != 0)
        return -1;
    struct piece p = {.kind = P_TEXT, .off = before, .len = t->text.len - before};
    return add_piece(t, p);
}

static yajl_val member(yajl_val obj, const char *key)
{
    for (size_t i = 0; i < obj->u.object.len; i++)
        if (strcmp(obj->u.object.keys[i], key) == 0)
            return obj->u.object.values[i];
    return NULL;
}

static yajl_val find_by_id(yajl_val arr, const char *id)
{
    if (arr == NULL)
        return NULL;
    for (size_t i = 0; i < arr->u.array.len; i++) {
        yajl_val o = arr->u.array.values[i];
        yajl_val v = YAJL_IS_OBJECT(o) ? member(o, "id") : NULL;
        const char *vs = v && YAJL_IS_STRING(v) ? YAJL_GET_STRING(v) : NULL;
        if (vs && strcmp(vs, id) == 0)
            return o;
    }
    return NULL;
}

static bool is_clock_member(const char *key)
{
    size_t n = strlen(key);
    return strcmp(key, "timestamp") == 0 || strcmp(key, "lastPacketReceivedTimestamp") == 0 ||
           strcmp(key, "lastPacketSentTimestamp") == 0 || strcmp(key, "remoteTimestamp") == 0 ||
           (n > 9 && strcmp(key + n - 9, "Timestamp") == 0 &&
            strcmp(key, "estimatedPlayoutTimestamp") != 0);
}

static bool integral_text(yajl_val v)
{
    const char *s = v->u.number.r;
    return strpbrk(s, ".eE") == NULL;
}

static int compile_value(struct lg_template *t, const char *key, yajl_val v, yajl_val late,
                         double span_ms);

static int compile_plain(struct lg_template *t, yajl_val v)
{
    if (YAJL_IS_STRING(v))
        return lit_json_str(t, YAJL_GET_STRING(v));
    if (YAJL_IS_NUMBER(v))
        return lit(t, v->u.number.r, strlen(v->u.number.r));
    if (YAJL_IS_TRUE(v))
        return lit(t, "true", 4);
    if (YAJL_IS_FALSE(v))
        return lit(t, "false", 5);
    if (YAJL_IS_NULL(v))
        return lit(t, "null", 4);
    if (YAJL_IS_ARRAY(v)) {
        int rc = lit(t, "[", 1);
        for (size_t i = 0; rc == 0 && i < v->u.array.len; i++) {
            if (i)
                rc = lit(t, ",", 1);
            if (rc == 0)
                rc = compile_plain(t, v->u.array.values[i]);
        }
        return rc ? rc : lit(t, "]", 1);
    }
    return compile_value(t, NULL, v, NULL, 0);
}

/* Objects (the stats object itself, or a nested record such as qualityLimitationDurations). */
static int compile_object(struct lg_template *t, yajl_val obj, yajl_val late, double span_ms)
{
    int rc = lit(t, "{", 1);
    for (size_t i = 0; rc == 0 && i < obj->u.object.len; i++) {
        const char *key = obj->u.object.keys[i];
        if (i)
            rc = lit(t, ",", 1);
        if (rc == 0)
            rc = lit_json_str(t, key);
        if (rc == 0)
            rc = lit(t, ":", 1);
        if (rc == 0)
            rc = compile_value(t, key, obj->u.object.values[i], late ? member(late, key) : NULL,
                               span_ms);
    }
    return rc ? rc : lit(t, "}", 1);
}

static int compile_value(struct lg_template *t, const char *key, yajl_val v, yajl_val late,
                         double span_ms)
{
    if (t->ref_ms == 0 && key && strcmp(key, "timestamp") == 0 && YAJL_IS_NUMBER(v))
        t->ref_ms = YAJL_GET_DOUBLE(v);
    if (YAJL_IS_OBJECT(v))
        return compile_object(t, v, late && YAJL_IS_OBJECT(late) ? late : NULL, span_ms);
    if (!YAJL_IS_NUMBER(v))
        return compile_plain(t, v);
    double base = YAJL_GET_DOUBLE(v);
    if (key && is_clock_member(key))
        return add_piece(t, (struct piece){.kind = P_CLOCK, .base = base - t->ref_ms});
    double rate = 0;
    bool integral = integral_text(v);
    if (late && YAJL_IS_NUMBER(late) && span_ms > 0) {
        rate = (YAJL_GET_DOUBLE(late) - base) / span_ms;
        integral = integral && integral_text(late);
    }
    if (rate == 0)
        return lit(t, v->u.number.r, strlen(v->u.number.r));
    return add_piece(t, (struct piece){.kind = integral ? P_INT : P_REAL, .base = base,
                                       .rate = rate});
}

static double object_ts(yajl_val o)
{
    yajl_val ts = o ? member(o, "timestamp") : NULL;
    return ts && YAJL_IS_NUMBER(ts) ? YAJL_GET_DOUBLE(ts) : 0;
}

static void name_from_path(struct lg_template *t, const char *path)
{
    const char *slash = strrchr(path, '/');
    snprintf(t->name, sizeof(t->name), "%s", slash ? slash + 1 : path);
    snprintf(t->role, sizeof(t->role), "%s",
             strstr(t->name, "sender") ? "sendonly"
             : strstr(t->name, "receiver") ? "recvonly" : "sendrecv");
}

struct lg_template *lg_template_load(const char *early, const char *late, char *err,
                                     size_t errlen)
{
    yajl_val a = parse_array(early, err, errlen);
    if (a == NULL)
        return NULL;
    yajl_val b = late ? parse_array(late, err, errlen) : NULL;
    if (late && b == NULL) {
        yajl_tree_free(a);
        return NULL;
    }
    struct lg_template *t = calloc(1, sizeof(*t));
    if (t == NULL)
        goto out;
    kh_buf_init(&t->text, 64u << 20);
    name_from_path(t, early);
    int rc = lit(t, "[", 1);
    for (size_t i = 0; rc == 0 && i < a->u.array.len; i++) {
        yajl_val o = a->u.array.values[i];
        if (!YAJL_IS_OBJECT(o))
            continue;
        yajl_val id = member(o, "id");
        yajl_val lo = id && YAJL_IS_STRING(id) ? find_by_id(b, YAJL_GET_STRING(id)) : NULL;
        double span = lo ? object_ts(lo) - object_ts(o) : 0;
        if (t->objects++)
            rc = lit(t, ",", 1);
        if (rc == 0)
            rc = compile_object(t, o, lo, span);
    }
    if (rc == 0)
        rc = lit(t, "]", 1);
    if (rc != 0) {
        snprintf(err, errlen, "%s: out of memory", early);
        lg_template_free(t);
        t = NULL;
    }
out:
    yajl_tree_free(a);
    yajl_tree_free(b);
    return t;
}

void lg_template_free(struct lg_template *t)
{
    if (t == NULL)
        return;
    kh_buf_cleanup(&t->text);
    free(t->pieces);
    free(t);
}

const char *lg_template_name(const struct lg_template *t) { return t->name; }
const char *lg_template_role(const struct lg_template *t) { return t->role; }
size_t lg_template_objects(const struct lg_template *t) { return t->objects; }

static int put_int(struct kh_buf *out, long long v)
{
    char tmp[24];
    char *p = tmp + sizeof(tmp);
    bool neg = v < 0;
    unsigned long long u = neg ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (neg)
        *--p = '-';
    return kh_buf_append(out, p, (size_t)(tmp + sizeof(tmp) - p));
}

int lg_template_render(const struct lg_template *t, double elapsed_ms, double now_ms,
                       struct kh_buf *out)
{
    int rc = 0;
    char tmp[40];
    for (size_t i = 0; rc == 0 && i < t->npieces; i++) {
        const struct piece *p = &t->pieces[i];
        switch (p->kind) {
        case P_TEXT: rc = kh_buf_append(out, t->text.data + p->off, p->len); break;
        case P_INT: rc = put_int(out, llround(p->base + p->rate * elapsed_ms)); break;
        case P_REAL: {
            int n = snprintf(tmp, sizeof(tmp), "%.9g", p->base + p->rate * elapsed_ms);
            rc = kh_buf_append(out, tmp, (size_t)n);
            break;
        }
        case P_CLOCK: {
            /* keep the snapshot's offset from the report time (RTCP-based stats lag) */
            int n = snprintf(tmp, sizeof(tmp), "%.3f", now_ms + p->base);
            rc = kh_buf_append(out, tmp, (size_t)n);
            break;
        }
        }
    }
    return rc;
}

const char *lg_default_fixtures(void)
{
    if (KH_SOURCE_FIXTURES[0] && access(KH_SOURCE_FIXTURES, R_OK | X_OK) == 0)
        return KH_SOURCE_FIXTURES;
    return KH_INSTALLED_FIXTURES;
}
