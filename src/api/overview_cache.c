/*
 * overview_cache: the overview's settled buckets. See overview_cache.h.
 */
#include "api/overview_cache.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"

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

struct kh_ov_cache {
    int64_t hold;
    int64_t width;    /* of the buckets held; 0: nothing held */
    int64_t lo, hi;   /* the span held */
    int64_t built;    /* when the span was started */
    int64_t off_until; /* not used before (kh_ov_cache_refused) */
    struct kh_ov_row *rows;
    size_t n, cap;
};

struct kh_ov_cache *kh_ov_cache_new(int64_t hold_usec)
{
    struct kh_ov_cache *c = calloc(1, sizeof(*c));
    if (c)
        c->hold = hold_usec;
    return c;
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
}

void kh_ov_cache_free(struct kh_ov_cache *c)
{
    if (c == NULL)
        return;
    drop_rows(c, 0);
    free(c->rows);
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

void kh_ov_settled(const struct kh_ov_cache *c, int64_t width, int64_t from, int64_t to,
                   int64_t now, int64_t *lo, int64_t *hi)
{
    *lo = *hi = 0;
    if (c == NULL || c->hold <= 0 || width <= 0)
        return;
    int64_t first = floor_to(from, width);
    if (first < from)
        first += width;
    int64_t lag = c->hold / SETTLE_PART < SETTLE_MAX ? c->hold / SETTLE_PART : SETTLE_MAX;
    int64_t settled = floor_to(now - lag, width);
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
        c->lo = c->hi = lo;
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
    if (c == NULL || c->width == 0 || earliest >= c->hi)
        return;
    int64_t from = earliest < c->lo ? c->lo : floor_to(earliest, c->width);
    keep_rows(c, INT64_MIN, from);
    c->hi = from;
}

void kh_ov_cache_end(struct kh_ov_cache *c, int64_t hi)
{
    if (hi > c->hi)
        c->hi = hi;
}

const struct kh_ov_row *kh_ov_cache_rows(const struct kh_ov_cache *c, size_t *n)
{
    *n = c->n;
    return c->rows;
}
