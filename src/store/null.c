/*
 * null: a backend that stores nothing. Used by benchmarks to measure receive, parse,
 * validate and row building without a database.
 */
#include "core/metrics.h"
#include "store/store.h"

static int null_open(struct kh_store *s, const struct kh_config *cfg, const char **err)
{
    s->impl = NULL;
    kh_metrics_storage_mode("null");
    return 0;
}

static int null_migrate(struct kh_store *s, int target, const char **err) { return 0; }

static int null_start(struct kh_store *s) { return 0; }

static uint64_t null_reconnects(struct kh_store *s) { return 0; }

/* no writer thread: the batcher calls write inline on the loop */
static int null_writers(struct kh_store *s) { return 0; }

/* Every report is accepted and nothing is stored (the stored counts stay 0). */
static int null_write(struct kh_store *s, int slot, struct kh_batch *b, const char **err)
{
    kh_batch_reset_counts(b);
    for (size_t i = 0; i < b->nreports; i++)
        b->results[i] = 0;
    return 0;
}

static bool null_healthy(struct kh_store *s) { return true; }

static void null_close(struct kh_store *s) {}

const struct kh_store_ops kh_store_null_ops = {
    .name = "null",
    .dialect = -1,
    .open = null_open,
    .migrate = null_migrate,
    .start = null_start,
    .writers = null_writers,
    .write = null_write,
    .healthy = null_healthy,
    .reconnects = null_reconnects,
    .close = null_close,
};
