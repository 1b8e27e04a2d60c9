/*
 * quality_cache: see quality_cache.h.
 *
 * An entry is one allocation: its header, the connection id, then a copy of the rows laid
 * out as the rows themselves (the row structs and their values first, every string after
 * them), so a copy in an arena is the same walk as the copy into the entry. A chained hash
 * table finds entries; a list in use order (most recent first) says which to evict.
 */
#include "pipeline/quality_cache.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "sora/schema.h"

struct entry {
    struct entry *chain;       /* the bucket's next */
    struct entry *prev, *next; /* use order */
    uint64_t hash;
    int64_t time_usec;
    uint64_t epoch;
    size_t bytes;            /* the whole allocation */
    size_t structs, strings; /* of the rows' copy (measure) */
    struct kh_row *rows;
    uint32_t keylen;
    char key[];
};

struct kh_qcache {
    pthread_mutex_t mu;
    struct entry **buckets;
    size_t nbuckets; /* a power of two */
    struct entry *first, *last;
    size_t entries, bytes, max_bytes;
    uint64_t evictions;
};

/* FNV-1a. */
static uint64_t hash_of(struct kh_str s)
{
    uint64_t h = 1469598103934665603ULL;
    for (uint32_t i = 0; i < s.len; i++)
        h = (h ^ (uint8_t)s.p[i]) * 1099511628211ULL;
    return h;
}

static bool kept(const struct kh_row *r)
{
    return r->table == kh_table_quality_connection || r->table == kh_table_quality_stream;
}

static bool is_text(uint8_t type) { return type == KH_COL_TEXT || type == KH_COL_JSON; }

static size_t nvals(const struct kh_row *r)
{
    size_t n = kh_stats_tables[r->table].nmembers;
    return n ? n : 1;
}

/* The bytes of the copy of the kept rows: structs (8-byte multiples) and strings. */
static void measure(const struct kh_row *rows, size_t *structs, size_t *strings)
{
    size_t s = 0, t = 0;
    for (const struct kh_row *r = rows; r; r = r->next) {
        if (!kept(r))
            continue;
        size_t nm = kh_stats_tables[r->table].nmembers;
        s += sizeof(*r) + nvals(r) * sizeof(struct kh_value);
        t += r->stats_type.len + 1 + r->stats_id.len + 1 + (r->extra.p ? r->extra.len + 1 : 0);
        for (size_t m = 0; m < nm; m++)
            if (r->vals[m].type && is_text(r->vals[m].type) && r->vals[m].u.s)
                t += r->vals[m].len + 1;
    }
    *structs = s;
    *strings = t;
}

static const char *put_str(char **tp, const char *p, uint32_t len)
{
    char *o = *tp;
    if (len)
        memcpy(o, p, len);
    o[len] = '\0';
    *tp = o + len + 1;
    return o;
}

/* Lays the kept rows out at dst (measure's structs + strings bytes); the copy's head. */
static struct kh_row *lay_out(const struct kh_row *rows, char *dst, size_t structs)
{
    char *sp = dst, *tp = dst + structs;
    struct kh_row *head = NULL, **tail = &head;
    for (const struct kh_row *r = rows; r; r = r->next) {
        if (!kept(r))
            continue;
        size_t nm = kh_stats_tables[r->table].nmembers;
        struct kh_row *o = (struct kh_row *)(void *)sp;
        struct kh_value *v = (struct kh_value *)(void *)(sp + sizeof(*o));
        sp += sizeof(*o) + nvals(r) * sizeof(*v);
        *o = *r;
        o->next = NULL;
        o->vals = v;
        o->stats_type.p = put_str(&tp, r->stats_type.p, r->stats_type.len);
        o->stats_id.p = put_str(&tp, r->stats_id.p, r->stats_id.len);
        if (r->extra.p)
            o->extra.p = put_str(&tp, r->extra.p, r->extra.len);
        for (size_t m = 0; m < nm; m++) {
            v[m] = r->vals[m];
            if (v[m].type && is_text(v[m].type) && v[m].u.s)
                v[m].u.s = put_str(&tp, r->vals[m].u.s, r->vals[m].len);
        }
        if (nm == 0)
            v[0] = (struct kh_value){.type = 0};
        *tail = o;
        tail = &o->next;
    }
    return head;
}

static size_t header_bytes(uint32_t keylen)
{
    return (sizeof(struct entry) + keylen + 7) & ~(size_t)7;
}

size_t kh_qcache_entry_bytes(struct kh_str connection_id, const struct kh_row *rows)
{
    size_t s, t;
    measure(rows, &s, &t);
    return header_bytes(connection_id.len) + s + t;
}

struct kh_qcache *kh_qcache_new(size_t max_bytes)
{
    struct kh_qcache *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->nbuckets = 1024;
    c->buckets = calloc(c->nbuckets, sizeof(*c->buckets));
    if (c->buckets == NULL) {
        free(c);
        return NULL;
    }
    c->max_bytes = max_bytes;
    pthread_mutex_init(&c->mu, NULL);
    return c;
}

void kh_qcache_free(struct kh_qcache *c)
{
    if (c == NULL)
        return;
    for (struct entry *e = c->first, *n; e; e = n) {
        n = e->next;
        free(e);
    }
    free(c->buckets);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

static struct entry **find(struct kh_qcache *c, struct kh_str id, uint64_t h)
{
    struct entry **p = &c->buckets[h & (c->nbuckets - 1)];
    for (; *p; p = &(*p)->chain)
        if ((*p)->hash == h && (*p)->keylen == id.len && memcmp((*p)->key, id.p, id.len) == 0)
            break;
    return p;
}

static void unlink_use(struct kh_qcache *c, struct entry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        c->first = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        c->last = e->prev;
    e->prev = e->next = NULL;
}

static void link_first(struct kh_qcache *c, struct entry *e)
{
    e->prev = NULL;
    e->next = c->first;
    if (c->first)
        c->first->prev = e;
    else
        c->last = e;
    c->first = e;
}

/* Takes *p (a bucket link to e) out of the cache and frees it. */
static void remove_at(struct kh_qcache *c, struct entry **p)
{
    struct entry *e = *p;
    *p = e->chain;
    unlink_use(c, e);
    c->entries--;
    c->bytes -= e->bytes;
    free(e);
}

/* Doubles the buckets when entries outnumber them (nothing when memory is short). */
static void grow(struct kh_qcache *c)
{
    if (c->entries <= c->nbuckets)
        return;
    size_t n = c->nbuckets * 2;
    struct entry **b = calloc(n, sizeof(*b));
    if (b == NULL)
        return;
    for (size_t i = 0; i < c->nbuckets; i++)
        for (struct entry *e = c->buckets[i], *next; e; e = next) {
            next = e->chain;
            e->chain = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
        }
    free(c->buckets);
    c->buckets = b;
    c->nbuckets = n;
}

int kh_qcache_get(struct kh_qcache *c, struct kh_str connection_id, struct kh_arena *arena,
                  int64_t *time_usec, uint64_t *epoch, struct kh_row **rows)
{
    *time_usec = 0;
    *epoch = 0;
    *rows = NULL;
    uint64_t h = hash_of(connection_id);
    int rc = 0;
    pthread_mutex_lock(&c->mu);
    struct entry *e = *find(c, connection_id, h);
    if (e) {
        unlink_use(c, e);
        link_first(c, e);
        size_t s = e->structs, t = e->strings;
        char *dst = s + t ? kh_arena_alloc(arena, s + t) : NULL;
        if (s + t && dst == NULL)
            rc = KH_ENOMEM;
        else {
            *rows = s + t ? lay_out(e->rows, dst, s) : NULL;
            *time_usec = e->time_usec;
            *epoch = e->epoch;
        }
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

void kh_qcache_put(struct kh_qcache *c, struct kh_str connection_id, int64_t time_usec,
                   uint64_t epoch, const struct kh_row *rows)
{
    size_t s, t;
    measure(rows, &s, &t);
    size_t hb = header_bytes(connection_id.len), bytes = hb + s + t;
    uint64_t h = hash_of(connection_id);
    pthread_mutex_lock(&c->mu);
    struct entry **p = find(c, connection_id, h);
    if (*p && (*p)->time_usec >= time_usec) {
        pthread_mutex_unlock(&c->mu);
        return; /* it holds this report or a later one */
    }
    if (*p)
        remove_at(c, p);
    struct entry *e = bytes <= c->max_bytes ? malloc(bytes) : NULL;
    if (e) {
        *e = (struct entry){.hash = h, .time_usec = time_usec, .epoch = epoch,
                            .bytes = bytes, .structs = s, .strings = t,
                            .keylen = connection_id.len};
        memcpy(e->key, connection_id.p, connection_id.len);
        e->rows = lay_out(rows, (char *)e + hb, s);
        while (c->last && c->bytes + bytes > c->max_bytes) {
            struct entry *old = c->last;
            remove_at(c, find(c, (struct kh_str){old->key, old->keylen}, old->hash));
            c->evictions++;
        }
        struct entry **b = &c->buckets[h & (c->nbuckets - 1)];
        e->chain = *b;
        *b = e;
        link_first(c, e);
        c->entries++;
        c->bytes += bytes;
        grow(c);
    }
    pthread_mutex_unlock(&c->mu);
}

void kh_qcache_confirm(struct kh_qcache *c, struct kh_str connection_id, int64_t time_usec,
                       uint64_t epoch)
{
    uint64_t h = hash_of(connection_id);
    pthread_mutex_lock(&c->mu);
    struct entry *e = *find(c, connection_id, h);
    if (e && e->time_usec == time_usec && e->epoch < epoch)
        e->epoch = epoch;
    pthread_mutex_unlock(&c->mu);
}

void kh_qcache_drop(struct kh_qcache *c, struct kh_str connection_id)
{
    uint64_t h = hash_of(connection_id);
    pthread_mutex_lock(&c->mu);
    struct entry **p = find(c, connection_id, h);
    if (*p)
        remove_at(c, p);
    pthread_mutex_unlock(&c->mu);
}

void kh_qcache_counts(struct kh_qcache *c, struct kh_qcache_counts *out)
{
    pthread_mutex_lock(&c->mu);
    *out = (struct kh_qcache_counts){.entries = c->entries, .bytes = c->bytes,
                                     .max_bytes = c->max_bytes, .evictions = c->evictions};
    pthread_mutex_unlock(&c->mu);
}
