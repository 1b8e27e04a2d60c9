/*
 * overview_cache: the overview's settled buckets. See overview_cache.h.
 */
#include "api/overview_cache.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "core/buf.h"
#include "core/errors.h"
#include "core/siphash.h"

/* Rows held at most: 300 buckets for a few hundred Sora nodes; past it a call reads its
 * whole range, as without the cache. */
#define MAX_ROWS 100000
/* A bucket settles a quarter of the hold, at most SETTLE_MAX, after it ended: a report
 * reaches the database when its batch commits (with ack_mode = log, a larger batch), and
 * the rows of the unsettled buckets, read on every call, are as many
 * as ingest writes in that long plus the newest bucket's (with 15 s and buckets of 12 s,
 * 27 to 39 s of rows; with 5 s, 12 to 17 s). A row later than that is counted within the
 * hold, as any late row. */
#define SETTLE_PART 4
#define SETTLE_MAX (5 * 1000000LL)

/* Connections counted in the live buckets at most (a few buckets of a large fleet's). */
#define MAX_LIVE 400000

/* A connection's rows in a live bucket; a slot of the open-addressed table (conn NULL: empty,
 * and no slot is ever deleted in place: the table is built again). */
struct live_ent {
    int64_t bucket;
    char *conn, *node;
    int64_t severity;
};

struct kh_ov_cache {
    int64_t hold;
    int64_t width;    /* of the buckets held; 0: nothing held */
    int64_t lo, hi;   /* the span held */
    int64_t built;    /* when the span was started */
    int64_t off_until; /* not used before (kh_ov_cache_refused) */
    struct kh_ov_row *rows;
    size_t n, cap;
    /* the live part: the rows of [hi, frontier), per connection and bucket */
    int64_t frontier;
    struct live_ent *slots;
    size_t nslots, nlive; /* nslots a power of two, at least twice nlive */
    struct kh_ov_rep *reps;
    size_t nreps, cap_reps;
    uint8_t key[16]; /* the table's hash key: connection ids come from reports */
};

struct kh_ov_cache *kh_ov_cache_new(int64_t hold_usec)
{
    struct kh_ov_cache *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->hold = hold_usec;
    if (getrandom(c->key, sizeof(c->key), 0) != (ssize_t)sizeof(c->key))
        memset(c->key, 0x5a, sizeof(c->key)); /* still correct, only open to aimed ids */
    return c;
}

/* --- the live part's table -------------------------------------------------------------- */

static uint64_t live_hash(const struct kh_ov_cache *c, int64_t bucket, const char *conn)
{
    struct kh_siphash h;
    uint64_t out[2];
    kh_siphash_init(&h, c->key);
    kh_siphash_update(&h, &bucket, sizeof(bucket));
    kh_siphash_update(&h, conn, strlen(conn));
    kh_siphash_final(&h, out);
    return out[0];
}

/* The slot of (bucket, conn), or the empty one where it would go. nslots > 0. */
static size_t live_slot(const struct kh_ov_cache *c, int64_t bucket, const char *conn)
{
    size_t mask = c->nslots - 1, i = (size_t)live_hash(c, bucket, conn) & mask;
    while (c->slots[i].conn &&
           (c->slots[i].bucket != bucket || strcmp(c->slots[i].conn, conn) != 0))
        i = (i + 1) & mask;
    return i;
}

/* The table again with n slots (a power of two above the entries), keeping the entries of
 * buckets in [lo, hi) and freeing the others. On KH_ENOMEM nothing changed. */
static int live_rebuild(struct kh_ov_cache *c, size_t n, int64_t lo, int64_t hi)
{
    struct live_ent *slots = calloc(n, sizeof(*slots)), *old = c->slots;
    if (slots == NULL)
        return KH_ENOMEM;
    size_t nold = c->nslots;
    c->slots = slots;
    c->nslots = n;
    c->nlive = 0;
    for (size_t i = 0; i < nold; i++) {
        struct live_ent *e = &old[i];
        if (e->conn == NULL)
            continue;
        if (e->bucket < lo || e->bucket >= hi) {
            free(e->conn);
            free(e->node);
            continue;
        }
        c->slots[live_slot(c, e->bucket, e->conn)] = *e;
        c->nlive++;
    }
    free(old);
    return 0;
}

/* Keeps the live part's buckets in [lo, hi). */
static void live_keep(struct kh_ov_cache *c, int64_t lo, int64_t hi)
{
    if (c->nslots && live_rebuild(c, c->nslots, lo, hi) != 0) {
        /* no memory for a new table: empty this one in place */
        for (size_t i = 0; i < c->nslots; i++)
            if (c->slots[i].conn && (c->slots[i].bucket < lo || c->slots[i].bucket >= hi)) {
                free(c->slots[i].conn);
                free(c->slots[i].node);
            }
        free(c->slots);
        c->slots = NULL;
        c->nslots = c->nlive = 0;
    }
    size_t w = 0;
    for (size_t i = 0; i < c->nreps; i++)
        if (c->reps[i].bucket >= lo && c->reps[i].bucket < hi)
            c->reps[w++] = c->reps[i];
    c->nreps = w;
}

static void live_clear(struct kh_ov_cache *c)
{
    live_keep(c, 0, 0);
    c->frontier = c->hi;
}

static void drop_rows(struct kh_ov_cache *c, size_t from)
{
    for (size_t i = from; i < c->n; i++)
        free((char *)c->rows[i].node);
    c->n = from;
}

void kh_ov_cache_reset(struct kh_ov_cache *c)
{
    drop_rows(c, 0);
    c->width = 0;
    c->lo = c->hi = 0;
    live_clear(c);
}

void kh_ov_cache_free(struct kh_ov_cache *c)
{
    if (c == NULL)
        return;
    drop_rows(c, 0);
    free(c->rows);
    live_clear(c);
    free(c->slots);
    free(c->reps);
    free(c);
}

/* floor(a / b) * b for any sign of a (b > 0). */
static int64_t floor_to(int64_t a, int64_t b)
{
    int64_t q = a / b;
    if (a % b != 0 && a < 0)
        q--;
    return q * b;
}

/* How long after its time a row is taken to be stored: a quarter of the hold, at most
 * SETTLE_MAX. */
static int64_t settle_lag(const struct kh_ov_cache *c)
{
    return c->hold / SETTLE_PART < SETTLE_MAX ? c->hold / SETTLE_PART : SETTLE_MAX;
}

int64_t kh_ov_front(const struct kh_ov_cache *c, int64_t to, int64_t now)
{
    int64_t f = now - settle_lag(c);
    return f < to ? f : to;
}

void kh_ov_settled(const struct kh_ov_cache *c, int64_t width, int64_t from, int64_t to,
                   int64_t now, int64_t *lo, int64_t *hi)
{
    *lo = *hi = 0;
    if (c == NULL || c->hold <= 0 || width <= 0)
        return;
    int64_t first = floor_to(from, width);
    if (first < from)
        first += width;
    int64_t settled = floor_to(now - settle_lag(c), width);
    int64_t last = floor_to(to, width);
    *lo = first;
    *hi = settled < last ? settled : last;
}

/* Keeps the rows of the buckets in [lo, hi), packed (the rows are in no order). */
static void keep_rows(struct kh_ov_cache *c, int64_t lo, int64_t hi)
{
    size_t w = 0;
    for (size_t i = 0; i < c->n; i++) {
        if (c->rows[i].bucket < lo || c->rows[i].bucket >= hi)
            free((char *)c->rows[i].node);
        else
            c->rows[w++] = c->rows[i];
    }
    c->n = w;
}

bool kh_ov_cache_begin(struct kh_ov_cache *c, int64_t width, int64_t lo, int64_t hi,
                       int64_t mono, int64_t *need)
{
    if (mono < c->off_until)
        return false;
    if (c->width != width || mono - c->built >= c->hold || lo < c->lo || lo > c->hi) {
        kh_ov_cache_reset(c);
        c->width = width;
        c->lo = c->hi = c->frontier = lo;
        c->built = mono;
    }
    keep_rows(c, lo, INT64_MAX); /* the buckets before the span go */
    c->lo = lo;
    *need = c->hi < hi ? c->hi : hi;
    return true;
}

void kh_ov_cache_refused(struct kh_ov_cache *c, int64_t mono)
{
    kh_ov_cache_reset(c);
    c->off_until = mono + c->hold;
}

int kh_ov_cache_add(struct kh_ov_cache *c, const struct kh_ov_row *r)
{
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 256;
        if (cap > MAX_ROWS)
            cap = MAX_ROWS;
        if (c->n == cap)
            return KH_ENOSPC;
        struct kh_ov_row *rows = realloc(c->rows, cap * sizeof(*rows));
        if (rows == NULL)
            return KH_ENOMEM;
        c->rows = rows;
        c->cap = cap;
    }
    struct kh_ov_row *d = &c->rows[c->n];
    *d = *r;
    if (r->node && (d->node = strdup(r->node)) == NULL)
        return KH_ENOMEM;
    c->n++;
    return 0;
}

void kh_ov_cache_stored(struct kh_ov_cache *c, int64_t earliest)
{
    if (c == NULL || c->width == 0 || earliest >= kh_ov_live_frontier(c))
        return;
    int64_t from = earliest < c->lo ? c->lo : floor_to(earliest, c->width);
    if (from < c->hi) { /* settled buckets, and the whole live part */
        keep_rows(c, INT64_MIN, from);
        c->hi = from;
        live_clear(c);
    } else { /* the live part from that bucket on */
        live_keep(c, INT64_MIN, from);
        c->frontier = from;
    }
}

void kh_ov_cache_end(struct kh_ov_cache *c, int64_t hi)
{
    if (hi > c->hi)
        c->hi = hi;
    if (c->frontier < c->hi)
        c->frontier = c->hi;
}

/* --- the live part ------------------------------------------------------------------------ */

int64_t kh_ov_live_frontier(const struct kh_ov_cache *c)
{
    return c->frontier > c->hi ? c->frontier : c->hi;
}

void kh_ov_live_drop(struct kh_ov_cache *c)
{
    live_clear(c);
}

int kh_ov_live_add(struct kh_ov_cache *c, const struct kh_ov_conn *r)
{
    if ((c->nlive + 1) * 2 > c->nslots) {
        if (c->nlive >= MAX_LIVE)
            return KH_ENOSPC;
        if (live_rebuild(c, c->nslots ? c->nslots * 2 : 1024, INT64_MIN, INT64_MAX) != 0)
            return KH_ENOMEM;
    }
    struct live_ent *e = &c->slots[live_slot(c, r->bucket, r->conn)];
    if (e->conn) {
        if (r->severity > e->severity)
            e->severity = r->severity;
        return 0;
    }
    char *conn = strdup(r->conn), *node = strdup(r->node ? r->node : "");
    if (conn == NULL || node == NULL) {
        free(conn);
        free(node);
        return KH_ENOMEM;
    }
    *e = (struct live_ent){r->bucket, conn, node, r->severity};
    c->nlive++;
    return 0;
}

/* Adds k reports of a bucket to reps, summed in place by bucket. */
static int add_rep(struct kh_ov_rep **reps, size_t *n, size_t *cap, int64_t bucket, double k)
{
    for (size_t i = 0; i < *n; i++)
        if ((*reps)[i].bucket == bucket) {
            (*reps)[i].n += k;
            return 0;
        }
    if (*n == *cap) {
        struct kh_ov_rep *p = kh_grow(*reps, cap, 16, sizeof(*p));
        if (p == NULL)
            return KH_ENOMEM;
        *reps = p;
    }
    (*reps)[(*n)++] = (struct kh_ov_rep){bucket, k};
    return 0;
}

int kh_ov_live_reports(struct kh_ov_cache *c, int64_t bucket, double n)
{
    return add_rep(&c->reps, &c->nreps, &c->cap_reps, bucket, n);
}

/* A connection of a live bucket as the answer counts it. */
struct item {
    int64_t bucket;
    const char *node;
    int64_t severity;
};

static int item_cmp(const void *x, const void *y)
{
    const struct item *a = x, *b = y;
    if (a->bucket != b->bucket)
        return a->bucket < b->bucket ? -1 : 1;
    return strcmp(a->node, b->node);
}

/* Counts items (sorted here) per bucket and node into rows through fn. */
static int count_items(struct item *it, size_t n,
                       int (*fn)(void *arg, const struct kh_ov_row *r), void *arg)
{
    qsort(it, n, sizeof(*it), item_cmp);
    int rc = 0;
    for (size_t lo = 0, hi; rc == 0 && lo < n; lo = hi) {
        struct kh_ov_row r = {it[lo].bucket, it[lo].node, {0, 0, 0}};
        for (hi = lo; hi < n && item_cmp(&it[hi], &it[lo]) == 0; hi++) {
            r.n[0]++;
            r.n[1] += it[hi].severity > 0;
            r.n[2] += it[hi].severity > 1;
        }
        if (r.node[0]) /* a connection of no known node is not a node's */
            rc = fn(arg, &r);
    }
    return rc;
}

static int settle_row(void *arg, const struct kh_ov_row *r)
{
    return kh_ov_cache_add(arg, r);
}

int kh_ov_live_settle(struct kh_ov_cache *c, int64_t settled, int64_t frontier)
{
    if (settled > c->hi) {
        struct item *it = malloc((c->nlive ? c->nlive : 1) * sizeof(*it));
        if (it == NULL)
            return KH_ENOMEM;
        size_t n = 0;
        for (size_t i = 0; i < c->nslots; i++)
            if (c->slots[i].conn && c->slots[i].bucket < settled)
                it[n++] = (struct item){c->slots[i].bucket, c->slots[i].node,
                                        c->slots[i].severity};
        int rc = count_items(it, n, settle_row, c);
        free(it);
        for (size_t i = 0; rc == 0 && i < c->nreps; i++)
            if (c->reps[i].bucket < settled) {
                struct kh_ov_row r = {c->reps[i].bucket, NULL, {c->reps[i].n, 0, 0}};
                rc = kh_ov_cache_add(c, &r);
            }
        if (rc != 0)
            return rc;
        live_keep(c, settled, INT64_MAX);
        c->hi = settled;
    }
    if (frontier > c->frontier)
        c->frontier = frontier;
    return 0;
}

int kh_ov_live_answer(const struct kh_ov_cache *c, const struct kh_ov_conn *extra, size_t n,
                      const struct kh_ov_rep *extra_reps, size_t nrep,
                      int (*fn)(void *arg, const struct kh_ov_row *r), void *arg)
{
    /* the live connections, each once, with extra's worse severities; then extra's others */
    struct item *it = malloc((c->nlive + n + 1) * sizeof(*it));
    size_t *at = c->nslots ? malloc(c->nslots * sizeof(*at)) : NULL;
    if (it == NULL || (c->nslots && at == NULL)) {
        free(it);
        free(at);
        return KH_ENOMEM;
    }
    size_t k = 0;
    for (size_t i = 0; i < c->nslots; i++)
        if (c->slots[i].conn) {
            at[i] = k;
            it[k++] = (struct item){c->slots[i].bucket, c->slots[i].node, c->slots[i].severity};
        }
    for (size_t j = 0; j < n; j++) {
        const struct kh_ov_conn *x = &extra[j];
        size_t i = c->nslots ? live_slot(c, x->bucket, x->conn) : 0;
        if (c->nslots && c->slots[i].conn) {
            if (x->severity > it[at[i]].severity)
                it[at[i]].severity = x->severity;
        } else {
            it[k++] = (struct item){x->bucket, x->node ? x->node : "", x->severity};
        }
    }
    free(at);
    int rc = count_items(it, k, fn, arg);
    free(it);
    /* the reports per bucket: the live part's and extra's */
    struct kh_ov_rep *reps = NULL;
    size_t nr = 0, cap = 0;
    for (size_t i = 0; rc == 0 && i < c->nreps; i++)
        rc = add_rep(&reps, &nr, &cap, c->reps[i].bucket, c->reps[i].n);
    for (size_t i = 0; rc == 0 && i < nrep; i++)
        rc = add_rep(&reps, &nr, &cap, extra_reps[i].bucket, extra_reps[i].n);
    for (size_t i = 0; rc == 0 && i < nr; i++) {
        struct kh_ov_row r = {reps[i].bucket, NULL, {reps[i].n, 0, 0}};
        rc = fn(arg, &r);
    }
    free(reps);
    return rc;
}

const struct kh_ov_row *kh_ov_cache_rows(const struct kh_ov_cache *c, size_t *n)
{
    *n = c->n;
    return c->rows;
}
