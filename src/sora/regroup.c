/*
 * regroup: see regroup.h.
 *
 * The open reports are a list, the one that took a line last at its head, so the lines of
 * one report (which mostly follow each other) find theirs at the first comparison, and the
 * report to hand out when too many are open is the tail. A connection has at most one open
 * report: a line of its next report closes the one before. Nothing here reads the values:
 * keys are compared as the line wrote them.
 */
#include "sora/regroup.h"

#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/errors.h"

struct kh_regroup {
    struct kh_regroup_limits lim;
    kh_regroup_cb cb;
    void *arg;
    struct kh_regroup_report *head, *tail;
    size_t nopen, open_bytes;
};

/* The parts of a line's key: its connection_id, id and timestamp, as written. */
struct key {
    const char *p[3];
    size_t n[3];
};

static struct key key_of(const char *line, const struct kh_soraline *l)
{
    static const enum kh_soralog_key parts[3] = {KH_SK_CONNECTION_ID, KH_SK_ID, KH_SK_TIMESTAMP};
    struct key k;
    for (int i = 0; i < 3; i++) {
        k.p[i] = line + l->value[parts[i]].off;
        k.n[i] = l->value[parts[i]].len;
    }
    return k;
}

static size_t key_len(const struct key *k) { return k->n[0] + k->n[1] + k->n[2] + 2; }

static void key_write(char *dst, const struct key *k)
{
    for (int i = 0; i < 3; i++) {
        memcpy(dst, k->p[i], k->n[i]);
        dst += k->n[i];
        if (i < 2)
            *dst++ = '\0';
    }
}

static bool same_connection(const struct kh_regroup_report *r, const struct key *k)
{
    return r->conn_len == k->n[0] && memcmp(r->key, k->p[0], k->n[0]) == 0;
}

static bool same_report(const struct kh_regroup_report *r, const struct key *k)
{
    if (r->key_len != key_len(k))
        return false;
    const char *p = r->key + k->n[0] + 1;
    return memcmp(p, k->p[1], k->n[1]) == 0 && p[k->n[1]] == '\0' &&
           memcmp(p + k->n[1] + 1, k->p[2], k->n[2]) == 0;
}

static size_t cost(const struct kh_regroup_report *r)
{
    return r->body.len + r->cap_lines * sizeof(*r->lines);
}

static void unlink_report(struct kh_regroup *g, struct kh_regroup_report *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        g->head = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        g->tail = r->prev;
    r->prev = r->next = NULL;
    g->nopen--;
    g->open_bytes -= cost(r);
}

static void push_head(struct kh_regroup *g, struct kh_regroup_report *r)
{
    r->prev = NULL;
    r->next = g->head;
    if (g->head)
        g->head->prev = r;
    else
        g->tail = r;
    g->head = r;
    g->nopen++;
    g->open_bytes += cost(r);
}

/* Appends to the body, or, past max_body, drops it and only counts (too large). */
static int body_add(struct kh_regroup_report *r, const char *p, size_t n)
{
    if (r->too_large) {
        r->too_large += n;
        return 0;
    }
    int rc = kh_buf_append(&r->body, p, n);
    if (rc == KH_ENOSPC) {
        r->too_large = r->body.len + n;
        kh_buf_cleanup(&r->body);
        free(r->lines);
        r->lines = NULL;
        r->cap_lines = 0;
        return 0;
    }
    return rc;
}

static int emit(struct kh_regroup *g, struct kh_regroup_report *r)
{
    unlink_report(g, r);
    int rc = body_add(r, "]}", 2);
    if (rc != 0) {
        kh_regroup_report_free(r);
        return rc;
    }
    return g->cb(g->arg, r);
}

/* The envelope: the first line's members but the stats object's own and "stats". */
static int open_body(struct kh_regroup_report *r, const char *line, const struct kh_soraline *l)
{
    int rc = body_add(r, "{", 1);
    bool first = true;
    for (size_t i = 0; rc == 0 && i < l->nmembers; i++) {
        enum kh_soralog_key k = l->key[i];
        if (k == KH_SK_RTC_DATA || k == KH_SK_RTC_ID || k == KH_SK_RTC_TIMESTAMP ||
            k == KH_SK_RTC_TYPE || k == KH_SK_STATS)
            continue;
        if (!first)
            rc = body_add(r, ",", 1);
        if (rc == 0)
            rc = body_add(r, line + l->member[i].off, l->member[i].len);
        first = false;
    }
    if (rc == 0)
        rc = body_add(r, first ? "\"stats\":[" : ",\"stats\":[", first ? 9 : 10);
    return rc;
}

static struct kh_regroup_report *open_report(struct kh_regroup *g, const char *line,
                                             const struct kh_soraline *l, const struct key *k,
                                             uint64_t lineno)
{
    struct kh_regroup_report *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    kh_buf_init(&r->body, g->lim.max_body);
    r->key_len = key_len(k);
    r->conn_len = k->n[0];
    r->key = malloc(r->key_len);
    r->first_line = lineno;
    if (r->key == NULL || open_body(r, line, l) != 0) {
        kh_regroup_report_free(r);
        return NULL;
    }
    key_write(r->key, k);
    return r;
}

static int add_object(struct kh_regroup_report *r, const char *line, const struct kh_span *data,
                      uint64_t lineno)
{
    bool first = r->last_line == 0;
    r->last_line = lineno;
    int rc = first ? 0 : body_add(r, ",", 1);
    if (rc == 0)
        rc = body_add(r, line + data->off, data->len);
    if (rc != 0 || r->too_large)
        return rc;
    if (r->nlines == r->cap_lines) {
        uint64_t *p = kh_grow(r->lines, &r->cap_lines, 32, sizeof(*p));
        if (p == NULL)
            return KH_ENOMEM;
        r->lines = p;
    }
    r->lines[r->nlines++] = lineno;
    return 0;
}

/* The open report the line belongs to, or a new one (after closing its connection's
 * previous report, and the oldest when too many are open). NULL with *rc. */
static struct kh_regroup_report *find(struct kh_regroup *g, const char *line,
                                      const struct kh_soraline *l, uint64_t lineno, int *rc)
{
    struct key k = key_of(line, l);
    *rc = 0;
    for (struct kh_regroup_report *r = g->head; r; r = r->next) {
        if (!same_connection(r, &k))
            continue;
        if (same_report(r, &k)) {
            unlink_report(g, r);
            return r;
        }
        if ((*rc = emit(g, r)) != 0)
            return NULL;
        break;
    }
    while (*rc == 0 && g->nopen >= g->lim.max_open && g->tail)
        *rc = emit(g, g->tail);
    struct kh_regroup_report *r = *rc ? NULL : open_report(g, line, l, &k, lineno);
    if (r == NULL && *rc == 0)
        *rc = KH_ENOMEM;
    return r;
}

int kh_regroup_add(struct kh_regroup *g, const char *line, const struct kh_soraline *l,
                   uint64_t lineno, const char **err)
{
    const struct kh_span *data = &l->value[KH_SK_RTC_DATA];
    if (data->len == 0) {
        *err = "rtc_data: required (a line of rtc_stats.jsonl holds one stats object there)";
        return KH_EINVAL;
    }
    int rc;
    struct kh_regroup_report *r = find(g, line, l, lineno, &rc);
    if (r == NULL)
        return rc;
    rc = add_object(r, line, data, lineno);
    push_head(g, r);
    /* the other open reports give way when the bodies together pass their budget */
    while (rc == 0 && g->open_bytes > g->lim.max_open_bytes && g->tail != r)
        rc = emit(g, g->tail);
    return rc;
}

int kh_regroup_flush(struct kh_regroup *g)
{
    int rc = 0;
    while (rc == 0 && g->tail)
        rc = emit(g, g->tail);
    return rc;
}

size_t kh_regroup_open(const struct kh_regroup *g) { return g->nopen; }

struct kh_regroup *kh_regroup_new(const struct kh_regroup_limits *lim, kh_regroup_cb cb,
                                  void *arg)
{
    struct kh_regroup *g = calloc(1, sizeof(*g));
    if (g == NULL)
        return NULL;
    g->lim = *lim;
    if (g->lim.max_open < 1)
        g->lim.max_open = 1;
    g->cb = cb;
    g->arg = arg;
    return g;
}

void kh_regroup_report_free(struct kh_regroup_report *rep)
{
    if (rep == NULL)
        return;
    kh_buf_cleanup(&rep->body);
    free(rep->lines);
    free(rep->key);
    free(rep);
}

void kh_regroup_free(struct kh_regroup *g)
{
    if (g == NULL)
        return;
    while (g->head) {
        struct kh_regroup_report *r = g->head;
        unlink_report(g, r);
        kh_regroup_report_free(r);
    }
    free(g);
}
