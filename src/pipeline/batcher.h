/*
 * batcher: gathers reports from many requests into batches and stores each batch in one
 * transaction on a writer thread, off the event loop. Every submitted report completes
 * exactly once, on the loop thread, through its callback: 0 (stored), KH_ERETRY (storage
 * failed: answer 503) or KH_EREJECT (refused as bad data: answer 400).
 *
 * Batching is group commit: a batch goes to a writer as soon as one is idle (after
 * batch_max_delay_ms, default 0, when set), or when it reaches batch_max_reports /
 * batch_max_rows; while the writers are busy the next batch keeps growing.
 */
#ifndef KH_BATCHER_H
#define KH_BATCHER_H

#include <stddef.h>
#include <stdint.h>

#include "core/config.h"
#include "sora/report.h"
#include "store/store.h"

struct event_base;
struct kh_batcher;

typedef void (*kh_batch_cb)(void *arg, int result, const char *err);

/* NULL on failure (threads or memory). Starts the writer threads. */
struct kh_batcher *kh_batcher_new(struct event_base *base, struct kh_store *store,
                                  const struct kh_config *cfg);
/* A step run on the writer thread before each write attempt of a batch (the quality stage):
 * 0 to go on, or KH_ERETRY with *err to fail the attempt as a write would (retried alike).
 * It may add rows to the batch's reports. Set before the first submit. */
typedef int (*kh_batch_stage_fn)(void *arg, int slot, struct kh_batch *b, const char **err);
/* Its counterpart on the loop thread once the batch's write is over (rc: the write's result;
 * with KH_EREJECT, b->results says which reports were stored), before the reports complete. */
typedef void (*kh_batch_done_fn)(void *arg, const struct kh_batch *b, int rc);
void kh_batcher_set_stage(struct kh_batcher *b, kh_batch_stage_fn fn, kh_batch_done_fn done,
                          void *arg);

/* A step on the writer thread once a batch's write attempts are over, before the next batch
 * of the slot (rc as for done; the stage's arg): what must follow a commit at once. Set
 * before the first submit. */
typedef void (*kh_batch_after_fn)(void *arg, int slot, const struct kh_batch *b, int rc);
void kh_batcher_set_after(struct kh_batcher *b, kh_batch_after_fn after);

/* Leaves unchanged stats objects out of the writes (pipeline/dedup.h; NULL: none, the
 * default): each batch is decided once before its first attempt, in dispatch order, and
 * settled after its last, on its writer. The batcher does not own d. Set before the first
 * submit. */
struct kh_dedup;
void kh_batcher_set_dedup(struct kh_batcher *b, struct kh_dedup *d);

/* Takes the report on success (0). KH_ENOSPC when the in-flight byte budget is full,
 * KH_ESHUTDOWN after kh_batcher_stop: the report stays the caller's and cb is never called. */
int kh_batcher_submit(struct kh_batcher *b, struct kh_report *r, kh_batch_cb cb, void *arg);
/* Sends what is gathered now and refuses new reports. */
void kh_batcher_stop(struct kh_batcher *b);
/* Reports submitted and not yet completed. */
size_t kh_batcher_pending(const struct kh_batcher *b);
/* Batches handed to the writers so far. A report submitted now goes into the batch that
 * gathers, number kh_batcher_dispatched() counting from 0; once the count has passed it,
 * that batch is out (being written, or waiting for a writer). */
uint64_t kh_batcher_dispatched(const struct kh_batcher *b);
/* Joins the writer threads; reports still queued are written and completed first. */
void kh_batcher_free(struct kh_batcher *b);

struct kh_batcher_stats {
    uint64_t batches, reports, rows, failed_batches;
    size_t inflight_bytes;
};
void kh_batcher_get_stats(const struct kh_batcher *b, struct kh_batcher_stats *out);

#endif
