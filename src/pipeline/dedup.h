/*
 * dedup: stats objects that did not change are stored once. A stats object of a
 * deduplicated type (kh_dedup_table) whose content, every member but its `timestamp`,
 * equals the last stored sample of the same (connection_id, stats_id) is marked to be left
 * out of the write (kh_row.dedup = KH_DEDUP_SKIPPED); the database then holds one row per
 * content change, and a reader takes the latest row at or before the time it asks about.
 *
 * A bounded map of content hashes (SipHash-2-4-128 under a random per-process key) decides,
 * and it is a shortcut, never the truth: no entry (a restart, another kohaku instance, an
 * eviction) means the object is stored. The map learns only what committed: the batcher
 * calls kh_dedup_decide once per batch before its first write attempt, in the order the
 * batches were dispatched, and kh_dedup_settle once its attempts are over; only a stored
 * report's rows move an entry, so a failed or retried batch never leaves the map claiming
 * rows that are not in the database. While a row of a key is out (in a batch not settled,
 * this one's earlier reports included), other rows of that key are stored: the map does not
 * know yet what will commit.
 *
 * A row is skipped only when it is newer than everything the map knows of its key, and at
 * most dedup_refresh after the key's last stored row (so a reader's look-back is bounded and
 * retention never removes the only row a later time depends on). Bounded by bytes, least
 * recently used out first. Any thread (one mutex).
 */
#ifndef KH_PIPELINE_DEDUP_H
#define KH_PIPELINE_DEDUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "sora/report.h"
#include "store/store.h"

/* kh_row.dedup: what decide made of a row (sora/report.h) */
enum {
    KH_DEDUP_NONE,      /* not a deduplicated object */
    KH_DEDUP_STORED,    /* stored; its entry counts it until settle */
    KH_DEDUP_SKIPPED = KH_ROW_SKIPPED, /* left out; its entry counts it until settle */
    KH_DEDUP_UNTRACKED  /* stored; no entry (no room) */
};

struct kh_dedup;

/* max_bytes: the bound of the entries' memory (0: a map that keeps nothing, so every row is
 * stored); refresh_usec: a key's row is stored again at least this often. NULL when memory
 * is short or no random key could be had. */
struct kh_dedup *kh_dedup_new(size_t max_bytes, int64_t refresh_usec);
void kh_dedup_free(struct kh_dedup *d);

/* Whether the stats table's rows are deduplicated (codec, certificate, candidates). */
bool kh_dedup_table(int table);

/* The content hash of a row: its table, stats type, every member's type and value, and its
 * extra JSON; not its stats_timestamp. */
void kh_dedup_row_hash(const uint8_t key[16], const struct kh_row *r, uint64_t out[2]);

/* Marks the rows of batch number `seq` (kh_batcher_dispatched's count, from 0): waits until
 * batch seq - 1 has been decided, so decisions follow dispatch order. Once per batch. */
void kh_dedup_decide(struct kh_dedup *d, uint64_t seq, struct kh_batch *b);
/* The batch's write attempts are over with rc (0, KH_EREJECT: b->results says which reports
 * were stored, or a failure): what was stored becomes what the map knows. */
void kh_dedup_settle(struct kh_dedup *d, const struct kh_batch *b, int rc);

struct kh_dedup_counts {
    uint64_t entries, bytes, max_bytes, evictions;
    uint64_t skipped, stored; /* rows decided: hits and misses */
    uint64_t late;            /* stored from a report older than the entry's newest */
};
void kh_dedup_counts(struct kh_dedup *d, struct kh_dedup_counts *out);
/* The Prometheus text of the counts. 0 or kh_buf_printf's error. */
int kh_dedup_render(struct kh_dedup *d, struct kh_buf *b);

/* The bytes one entry of this key takes (for the bound; exposed for the unit test). */
size_t kh_dedup_entry_bytes(struct kh_str connection_id, struct kh_str stats_id);

#endif
