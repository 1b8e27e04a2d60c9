/*
 * quality: the quality stage of the write path. On a writer thread, before a batch is
 * written, each connection report of it gets its quality rows (quality/assess.h), after
 * what the previous report of its connection left: the one before it in the same batch, or
 * what the database holds (store latest: written by this process or by another kohaku
 * instance sharing the database, or before a restart). The rows go into the same transaction
 * as the report, so stored quality always belongs to a stored report.
 *
 * What this process stored last for each connection is kept in memory (quality_cache.h) and
 * stands in for the database's rows when the database still has that report as the latest:
 * no read at all when the store knows nobody else wrote since the last batch (SQLite), else
 * one read of the latest times.
 */
#ifndef KH_PIPELINE_QUALITY_H
#define KH_PIPELINE_QUALITY_H

#include <stdint.h>

#include "core/buf.h"
#include "core/config.h"
#include "quality/detect.h"
#include "store/store.h"

struct kh_quality_stage;

struct kh_quality_settings {
    struct kh_q_thresholds th;
    int64_t max_gap_usec; /* a previous report older than this is not used */
    size_t cache_bytes;   /* quality_cache.h's bound; 0: no cache */
};

/* The settings from the config: the thresholds (quality_<name>_warning/_bad; a bad one on
 * the good side of its warning is refused), the headroom and the gap. 0, or KH_EINVAL with
 * *err naming the key. */
int kh_quality_settings_from(const struct kh_config *cfg, struct kh_quality_settings *out,
                             const char **err);

/* The step kh_batcher_set_stage takes (arg: the stage). */
int kh_quality_stage_fn(void *arg, int slot, struct kh_batch *b, const char **err);

/* NULL on allocation failure. One work area per writer slot (nslots >= 1). */
struct kh_quality_stage *kh_quality_stage_new(struct kh_store *store, int nslots,
                                              const struct kh_quality_settings *set);
void kh_quality_stage_free(struct kh_quality_stage *q);

/* Writer thread `slot`: the batch's connection reports not assessed yet get their rows
 * (b->nrows grows by them). A report whose arena is full is left without (counted). 0, or
 * KH_ERETRY with *err when the database could not be read (the batch waits, as its write
 * would). */
int kh_quality_stage_run(struct kh_quality_stage *q, int slot, struct kh_batch *b,
                         const char **err);

/* The batcher's done step (loop thread, once a batch's write is over with result rc): the
 * stored reports' notes go into the metrics. */
void kh_quality_stage_done(void *arg, const struct kh_batch *b, int rc);
/* The batcher's after step (the writer thread, once the batch is committed or given up):
 * the stored reports' rows go into the cache. */
void kh_quality_stage_after(void *arg, int slot, const struct kh_batch *b, int rc);
/* The quality series of /metrics (loop thread). 0 or KH_ENOSPC/KH_ENOMEM. */
int kh_quality_stage_render(const struct kh_quality_stage *q, struct kh_buf *b);

/* Reports assessed and reports left without quality rows, since start (any thread). */
void kh_quality_stage_counts(const struct kh_quality_stage *q, uint64_t *assessed,
                             uint64_t *skipped);

#endif
