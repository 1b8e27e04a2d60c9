/*
 * quality_cache: each connection's latest quality rows as this process stored them, so the
 * quality stage need not read them back from the database for every batch.
 *
 * The cache is a shortcut, never the truth: an entry says "the report at time T had these
 * rows", and the stage uses it only when the database agrees that T is still the
 * connection's latest report (a cheap check of times, or none when the store knows nobody
 * else wrote). A miss (a restart, a connection new to this process, an eviction, another
 * kohaku instance's newer report) reads the database as before.
 *
 * Each entry carries the epoch it was last known to be the database's latest in (the
 * caller's counter: a new epoch whenever someone else may have written), so the caller can
 * tell which entries it must check.
 *
 * Bounded by bytes: the least recently used entries go first. Any thread (one mutex).
 */
#ifndef KH_PIPELINE_QUALITY_CACHE_H
#define KH_PIPELINE_QUALITY_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "core/arena.h"
#include "sora/report.h"

struct kh_qcache;

/* max_bytes: the bound of the entries' memory (0: a cache that keeps nothing). NULL when
 * memory is short. */
struct kh_qcache *kh_qcache_new(size_t max_bytes);
void kh_qcache_free(struct kh_qcache *c);

/* The cached report of the connection: its time (0: none), its epoch and a copy of its rows
 * in arena (*rows; NULL with 0). KH_ENOMEM when the arena is full (nothing copied, 0 in
 * *time). */
int kh_qcache_get(struct kh_qcache *c, struct kh_str connection_id, struct kh_arena *arena,
                  int64_t *time_usec, uint64_t *epoch, struct kh_row **rows);

/* Keeps the quality rows of `rows` (rows of other tables are left out) as the connection's
 * report at time_usec, latest in `epoch`, unless the cache holds a later one. Nothing when
 * memory is short or the entry alone is over the bound. */
void kh_qcache_put(struct kh_qcache *c, struct kh_str connection_id, int64_t time_usec,
                   uint64_t epoch, const struct kh_row *rows);

/* The database confirmed the report at time_usec as the connection's latest in `epoch`. */
void kh_qcache_confirm(struct kh_qcache *c, struct kh_str connection_id, int64_t time_usec,
                       uint64_t epoch);

/* Forgets the connection (its cached report is no longer the latest). */
void kh_qcache_drop(struct kh_qcache *c, struct kh_str connection_id);

struct kh_qcache_counts {
    uint64_t entries, bytes, max_bytes, evictions;
};
void kh_qcache_counts(struct kh_qcache *c, struct kh_qcache_counts *out);

/* The bytes one entry with these rows takes (for the bound; exposed for the unit test). */
size_t kh_qcache_entry_bytes(struct kh_str connection_id, const struct kh_row *rows);

#endif
