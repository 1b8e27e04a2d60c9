/*
 * dedup: see dedup.h.
 *
 * An entry is one allocation: its header, then its key (connection_id, a NUL, stats_id). A
 * chained hash table finds entries; a list in use order (most recent first) says which to
 * evict. An entry holds what committed (the content hash, the time of the report that last
 * stored a row of it, the newest report time known to carry it) and how many rows of
 * dispatched batches not settled yet have its key (pending; such an entry is not evicted, so
 * the count stays true). A row is skipped only against what committed, never against an
 * earlier report of its own batch: a backend that meets bad data writes the batch's reports
 * one by one (store.h, KH_EREJECT), and the earlier report may be the one refused.
 */
#include "pipeline/dedup.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "core/errors.h"
#include "core/siphash.h"
#include "sora/schema.h"

struct entry {
    struct entry *chain;       /* the bucket's next */
    struct entry *prev, *next; /* use order */
    uint64_t bucket_hash;
    bool known;                /* content/stored/seen hold a committed row */
    uint64_t content[2];
    int64_t stored_usec, seen_usec;
    uint32_t pending;          /* rows of batches out with this key */
    size_t bytes;
    uint32_t keylen;
    char key[];
};

struct kh_dedup {
    pthread_mutex_t mu;
    pthread_cond_t turn;
    uint64_t next_seq; /* the batch whose decision is due */
    uint8_t key[16];
    int64_t refresh_usec;
    struct entry **buckets;
    size_t nbuckets; /* a power of two */
    struct entry *first, *last;
    size_t entries, bytes, max_bytes;
    uint64_t evictions, skipped, stored, late;
};

static bool dedup_type(const char *type)
{
    return type && (strcmp(type, "codec") == 0 || strcmp(type, "certificate") == 0 ||
                    strcmp(type, "local-candidate") == 0);
}

bool kh_dedup_table(int table)
{
    return table >= 0 && (size_t)table < kh_stats_ntables &&
           kh_stats_tables[table].scope == KH_SCOPE_CONNECTION &&
           !kh_stats_tables[table].computed && dedup_type(kh_stats_tables[table].type);
}

/* --- content hash ------------------------------------------------------------------------- */

static void feed_u32(struct kh_siphash *s, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    kh_siphash_update(s, b, sizeof(b));
}

static void feed_u64(struct kh_siphash *s, uint64_t v)
{
    feed_u32(s, (uint32_t)v);
    feed_u32(s, (uint32_t)(v >> 32));
}

/* Length first, so no two sequences of strings feed the same bytes. */
static void feed_str(struct kh_siphash *s, const char *p, uint32_t len)
{
    feed_u32(s, len);
    kh_siphash_update(s, p, len);
}

static void feed_value(struct kh_siphash *s, const struct kh_value *v)
{
    uint8_t t = v->type;
    kh_siphash_update(s, &t, 1);
    switch (v->type) {
    case 0:
        break;
    case KH_COL_TEXT:
    case KH_COL_JSON:
        feed_str(s, v->u.s ? v->u.s : "", v->u.s ? v->len : 0);
        break;
    case KH_COL_REAL: {
        uint64_t bits;
        memcpy(&bits, &v->u.d, sizeof(bits));
        feed_u64(s, bits);
        break;
    }
    case KH_COL_BOOL:
        feed_u64(s, v->u.b ? 1 : 0);
        break;
    default: /* INT, TIME */
        feed_u64(s, (uint64_t)v->u.i);
        break;
    }
}

void kh_dedup_row_hash(const uint8_t key[16], const struct kh_row *r, uint64_t out[2])
{
    struct kh_siphash s;
    kh_siphash_init(&s, key);
    feed_u32(&s, (uint32_t)r->table);
    feed_str(&s, r->stats_type.p ? r->stats_type.p : "", r->stats_type.len);
    size_t nm = kh_stats_tables[r->table].nmembers;
    feed_u32(&s, (uint32_t)nm);
    for (size_t m = 0; m < nm; m++)
        feed_value(&s, &r->vals[m]);
    uint8_t has_extra = r->extra.p != NULL;
    kh_siphash_update(&s, &has_extra, 1);
    if (has_extra)
        feed_str(&s, r->extra.p, r->extra.len);
    kh_siphash_final(&s, out);
}

/* --- the map ------------------------------------------------------------------------------ */

/* FNV-1a of the key, for the buckets only. */
static uint64_t key_hash(struct kh_str a, struct kh_str b)
{
    uint64_t h = 1469598103934665603ULL;
    for (uint32_t i = 0; i < a.len; i++)
        h = (h ^ (uint8_t)a.p[i]) * 1099511628211ULL;
    h = (h ^ 0xff) * 1099511628211ULL;
    for (uint32_t i = 0; i < b.len; i++)
        h = (h ^ (uint8_t)b.p[i]) * 1099511628211ULL;
    return h;
}

size_t kh_dedup_entry_bytes(struct kh_str connection_id, struct kh_str stats_id)
{
    size_t n = sizeof(struct entry) + connection_id.len + 1 + stats_id.len + 1;
    return (n + 15) & ~(size_t)15;
}

struct kh_dedup *kh_dedup_new(size_t max_bytes, int64_t refresh_usec)
{
    struct kh_dedup *d = calloc(1, sizeof(*d));
    if (d == NULL)
        goto fail_alloc;
    if (getrandom(d->key, sizeof(d->key), 0) != (ssize_t)sizeof(d->key))
        goto fail_key;
    d->nbuckets = 1024;
    d->buckets = calloc(d->nbuckets, sizeof(*d->buckets));
    if (d->buckets == NULL)
        goto fail_buckets;
    if (pthread_mutex_init(&d->mu, NULL) != 0)
        goto fail_mutex;
    if (pthread_cond_init(&d->turn, NULL) != 0)
        goto fail_cond;
    d->max_bytes = max_bytes;
    d->refresh_usec = refresh_usec;
    return d;
fail_cond:
    pthread_mutex_destroy(&d->mu);
fail_mutex:
    free(d->buckets);
fail_buckets:
fail_key:
    free(d);
fail_alloc:
    return NULL;
}

void kh_dedup_free(struct kh_dedup *d)
{
    if (d == NULL)
        return;
    for (struct entry *e = d->first, *n; e; e = n) {
        n = e->next;
        free(e);
    }
    free(d->buckets);
    pthread_cond_destroy(&d->turn);
    pthread_mutex_destroy(&d->mu);
    free(d);
}

static bool same_key(const struct entry *e, struct kh_str c, struct kh_str s)
{
    return e->keylen == c.len + 1 + s.len && memcmp(e->key, c.p, c.len) == 0 &&
           e->key[c.len] == '\0' && memcmp(e->key + c.len + 1, s.p, s.len) == 0;
}

static struct entry **slot_of(struct kh_dedup *d, uint64_t h, struct kh_str c, struct kh_str s)
{
    struct entry **p = &d->buckets[h & (d->nbuckets - 1)];
    while (*p && !((*p)->bucket_hash == h && same_key(*p, c, s)))
        p = &(*p)->chain;
    return p;
}

static void unlink_use(struct kh_dedup *d, struct entry *e)
{
    *(e->prev ? &e->prev->next : &d->first) = e->next;
    *(e->next ? &e->next->prev : &d->last) = e->prev;
    e->prev = e->next = NULL;
}

static void link_front(struct kh_dedup *d, struct entry *e)
{
    e->next = d->first;
    e->prev = NULL;
    *(d->first ? &d->first->prev : &d->last) = e;
    d->first = e;
}

static void remove_entry(struct kh_dedup *d, struct entry *e)
{
    struct entry **p = &d->buckets[e->bucket_hash & (d->nbuckets - 1)];
    while (*p != e)
        p = &(*p)->chain;
    *p = e->chain;
    unlink_use(d, e);
    d->entries--;
    d->bytes -= e->bytes;
    free(e);
}

/* Least recently used first, never an entry a batch out still counts on. */
static void make_room(struct kh_dedup *d, size_t need)
{
    struct entry *e = d->last;
    while (e && d->bytes + need > d->max_bytes) {
        struct entry *prev = e->prev;
        if (e->pending == 0) {
            remove_entry(d, e);
            d->evictions++;
        }
        e = prev;
    }
}

/* Doubles the buckets when the chains grow long (nothing when memory is short). */
static void grow(struct kh_dedup *d)
{
    if (d->entries < d->nbuckets * 2)
        return;
    size_t n = d->nbuckets * 2;
    struct entry **b = calloc(n, sizeof(*b));
    if (b == NULL)
        return;
    for (size_t i = 0; i < d->nbuckets; i++)
        for (struct entry *e = d->buckets[i], *next; e; e = next) {
            next = e->chain;
            e->chain = b[e->bucket_hash & (n - 1)];
            b[e->bucket_hash & (n - 1)] = e;
        }
    free(d->buckets);
    d->buckets = b;
    d->nbuckets = n;
}

/* The key's entry, made (empty) when create and there is room; NULL otherwise. */
static struct entry *find(struct kh_dedup *d, struct kh_str c, struct kh_str s, bool create)
{
    uint64_t h = key_hash(c, s);
    struct entry **p = slot_of(d, h, c, s);
    if (*p) {
        unlink_use(d, *p);
        link_front(d, *p);
        return *p;
    }
    if (!create)
        return NULL;
    size_t bytes = kh_dedup_entry_bytes(c, s);
    if (bytes > d->max_bytes)
        return NULL;
    make_room(d, bytes);
    if (d->bytes + bytes > d->max_bytes)
        return NULL;
    struct entry *e = calloc(1, bytes);
    if (e == NULL)
        return NULL;
    e->bucket_hash = h;
    e->bytes = bytes;
    e->keylen = c.len + 1 + s.len;
    memcpy(e->key, c.p, c.len);
    memcpy(e->key + c.len + 1, s.p, s.len);
    p = slot_of(d, h, c, s); /* make_room may have changed the chain */
    e->chain = *p;
    *p = e;
    link_front(d, e);
    d->entries++;
    d->bytes += bytes;
    grow(d);
    return e;
}

/* --- decide and settle -------------------------------------------------------------------- */

static bool content_is(const uint64_t a[2], const uint64_t b[2])
{
    return a[0] == b[0] && a[1] == b[1];
}

/* Whether the row at time t may be left out, by the view (known, content, stored, seen). */
static bool may_skip(const struct kh_dedup *d, bool known, const uint64_t content[2],
                     int64_t stored, int64_t seen, const struct kh_row *row, int64_t t)
{
    return known && content_is(content, row->content) && t > seen &&
           t - stored < d->refresh_usec;
}

static void decide_row(struct kh_dedup *d, const struct kh_report *r, struct kh_row *row)
{
    int64_t t = r->time_usec;
    struct entry *e = find(d, r->connection_id, row->stats_id, true);
    if (e == NULL) { /* no room: stored, and the map learns nothing of it */
        row->dedup = KH_DEDUP_UNTRACKED;
        d->stored++;
        return;
    }
    /* with a batch out holding the key (or an earlier report of this one), what the entry
     * says may not be what the database will hold: store */
    bool skip = e->pending == 0 &&
                may_skip(d, e->known, e->content, e->stored_usec, e->seen_usec, row, t);
    e->pending++;
    row->dedup = skip ? KH_DEDUP_SKIPPED : KH_DEDUP_STORED;
    if (skip)
        d->skipped++;
    else
        d->stored++;
}

void kh_dedup_decide(struct kh_dedup *d, uint64_t seq, struct kh_batch *b)
{
    /* the hashes outside the lock */
    for (size_t i = 0; i < b->nreports; i++) {
        if (b->reports[i]->kind != KH_REPORT_CONNECTION)
            continue;
        for (struct kh_row *row = b->reports[i]->rows; row; row = row->next)
            if (kh_dedup_table(row->table))
                kh_dedup_row_hash(d->key, row, row->content);
    }
    pthread_mutex_lock(&d->mu);
    while (d->next_seq != seq)
        pthread_cond_wait(&d->turn, &d->mu);
    for (size_t i = 0; i < b->nreports; i++) {
        struct kh_report *r = b->reports[i];
        if (r->kind != KH_REPORT_CONNECTION)
            continue;
        for (struct kh_row *row = r->rows; row; row = row->next)
            if (kh_dedup_table(row->table))
                decide_row(d, r, row);
    }
    d->next_seq = seq + 1;
    pthread_cond_broadcast(&d->turn);
    pthread_mutex_unlock(&d->mu);
}

/* A stored report's row: the entry learns it, when it is the newest the entry knows. */
static void learn(struct entry *e, const struct kh_report *r, const struct kh_row *row,
                  uint64_t *late)
{
    int64_t t = r->time_usec;
    if (e->known && t <= e->seen_usec) {
        /* a report older than one the map knows (late, or redelivered) with another
         * content, after the key's last stored row: it shadows the samples skipped since;
         * forget, so the next one is stored (before that row, the row hides it again) */
        if (row->dedup == KH_DEDUP_STORED && t >= e->stored_usec &&
            !content_is(e->content, row->content)) {
            e->known = false;
            (*late)++;
        }
        return;
    }
    if (row->dedup == KH_DEDUP_SKIPPED) {
        /* left out because the entry had this content (nothing else moved it since: the
         * key had no other row out) */
        if (!e->known || !content_is(e->content, row->content))
            return;
    } else {
        e->stored_usec = t;
        memcpy(e->content, row->content, sizeof(e->content));
        e->known = true;
    }
    e->seen_usec = t;
}

void kh_dedup_settle(struct kh_dedup *d, const struct kh_batch *b, int rc)
{
    pthread_mutex_lock(&d->mu);
    for (size_t i = 0; i < b->nreports; i++) {
        const struct kh_report *r = b->reports[i];
        if (r->kind != KH_REPORT_CONNECTION)
            continue;
        bool stored = rc == 0 || (rc == KH_EREJECT && b->results[i] == 0);
        for (const struct kh_row *row = r->rows; row; row = row->next) {
            if (row->dedup != KH_DEDUP_STORED && row->dedup != KH_DEDUP_SKIPPED)
                continue;
            /* counted at decide, so never evicted since */
            struct entry *e = find(d, r->connection_id, row->stats_id, false);
            if (e == NULL)
                continue;
            if (stored)
                learn(e, r, row, &d->late);
            e->pending--;
        }
    }
    pthread_mutex_unlock(&d->mu);
}

void kh_dedup_counts(struct kh_dedup *d, struct kh_dedup_counts *out)
{
    pthread_mutex_lock(&d->mu);
    *out = (struct kh_dedup_counts){.entries = d->entries, .bytes = d->bytes,
                                    .max_bytes = d->max_bytes, .evictions = d->evictions,
                                    .skipped = d->skipped, .stored = d->stored,
                                    .late = d->late};
    pthread_mutex_unlock(&d->mu);
}

int kh_dedup_render(struct kh_dedup *d, struct kh_buf *b)
{
    struct kh_dedup_counts c;
    kh_dedup_counts(d, &c);
    return kh_buf_printf(
        b,
        "# HELP kohaku_dedup_rows_total Stats objects of the deduplicated types (codec, "
        "certificate, candidates) by what was decided: skipped (unchanged since the last "
        "stored sample: a hit) or stored (changed, new, or unknown to the map: a miss).\n"
        "# TYPE kohaku_dedup_rows_total counter\n"
        "kohaku_dedup_rows_total{result=\"skipped\"} %llu\n"
        "kohaku_dedup_rows_total{result=\"stored\"} %llu\n"
        "# HELP kohaku_dedup_entries Objects whose last stored content is in memory.\n"
        "# TYPE kohaku_dedup_entries gauge\n"
        "kohaku_dedup_entries %llu\n"
        "# HELP kohaku_dedup_bytes Their memory.\n"
        "# TYPE kohaku_dedup_bytes gauge\n"
        "kohaku_dedup_bytes %llu\n"
        "# HELP kohaku_dedup_max_bytes Its bound (dedup_cache_mb).\n"
        "# TYPE kohaku_dedup_max_bytes gauge\n"
        "kohaku_dedup_max_bytes %llu\n"
        "# HELP kohaku_dedup_evictions_total Entries dropped for room (least recently used "
        "first).\n"
        "# TYPE kohaku_dedup_evictions_total counter\n"
        "kohaku_dedup_evictions_total %llu\n"
        "# HELP kohaku_dedup_late_total Objects stored from a report older than one already "
        "stored for them, with another content (the samples skipped between the two may read "
        "as the late one's: README, \"Unchanged objects\").\n"
        "# TYPE kohaku_dedup_late_total counter\n"
        "kohaku_dedup_late_total %llu\n",
        (unsigned long long)c.skipped, (unsigned long long)c.stored,
        (unsigned long long)c.entries, (unsigned long long)c.bytes,
        (unsigned long long)c.max_bytes, (unsigned long long)c.evictions,
        (unsigned long long)c.late);
}
