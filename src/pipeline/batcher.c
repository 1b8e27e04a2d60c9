/*
 * batcher: group commit over the backend's writer threads (one per slot: one for SQLite,
 * postgres_pool_size for PostgreSQL). See batcher.h.
 *
 * Threads: the loop thread owns `cur`, the counters and all callbacks. A batch handed to the
 * work queue belongs to the writer that takes it (the queue's worker index is the backend's
 * writer slot) until its done function runs on the loop; the loop does not touch its
 * reports meanwhile. At most `parallel` batches are out at once; the next one grows.
 *
 * A backend with no writers (the null backend) gets a zero-thread queue: the batch is
 * written inline on the loop thread, from the same wake-up that completes it, so its cost
 * is only what the backend does itself.
 *
 * Retries live here, not in the backends: a write that fails with KH_ERETRY is tried again
 * with backoff for up to storage_retry_ms, when storage was healthy before the batch (a new
 * failure: a lost connection, a busy database). When storage was already known to be down,
 * the batch fails at once so its reports get their 503 without waiting.
 */
#include "pipeline/batcher.h"

#include <event2/event.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/storedtime.h"
#include "core/timeutil.h"
#include "core/workq.h"
#include "pipeline/dedup.h"

struct entry {
    kh_batch_cb cb;
    void *arg;
    size_t bytes;
};

struct batch {
    struct kh_workq_item node;
    struct kh_batch b; /* reports, results, counts */
    struct entry *entries;
    size_t cap;
    int rc;
    const char *err;
    char errbuf[256];
    uint64_t write_usec;
    uint64_t seq; /* its number in dispatch order (from 0) */
};

struct kh_batcher {
    struct kh_store *store;
    size_t max_reports, max_rows, max_inflight;
    long delay_ms;
    uint64_t retry_usec;
    size_t parallel;    /* batches that may be out at once: max(writers, 1) */
    struct kh_workq *q; /* the writers; its pending count is the batches out */
    kh_batch_stage_fn stage; /* before each write attempt, on the writer */
    kh_batch_done_fn stage_done; /* after the write, on the loop */
    kh_batch_after_fn stage_after; /* after the write, on the writer */
    struct kh_dedup *dedup;        /* NULL: every sample stored */
    void *stage_arg;
    /* loop side */
    struct batch *cur;
    size_t pending;  /* reports submitted, not completed */
    size_t inflight; /* bytes of those reports */
    uint64_t dispatched; /* batches handed to the writers */
    bool stopping;
    struct event *timer;
    struct kh_batcher_stats stats;
};

static struct batch *batch_new(size_t cap)
{
    struct batch *bt = calloc(1, sizeof(*bt));
    if (bt == NULL)
        return NULL;
    bt->b.reports = calloc(cap, sizeof(*bt->b.reports));
    bt->b.results = calloc(cap, sizeof(*bt->b.results));
    bt->entries = calloc(cap, sizeof(*bt->entries));
    if (!bt->b.reports || !bt->b.results || !bt->entries) {
        free(bt->b.reports);
        free(bt->b.results);
        free(bt->entries);
        free(bt);
        return NULL;
    }
    bt->cap = cap;
    return bt;
}

static void batch_free(struct batch *bt)
{
    if (bt == NULL)
        return;
    for (size_t i = 0; i < bt->b.nreports; i++)
        kh_report_free(bt->b.reports[i]);
    free(bt->b.reports);
    free(bt->b.results);
    free(bt->entries);
    free(bt);
}

static void sleep_usec(uint64_t usec)
{
    struct timespec ts = {(time_t)(usec / 1000000), (long)(usec % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

/* One batch, with retries (see the top of the file). Runs on a writer thread. */
static void write_batch(struct kh_batcher *b, int slot, struct batch *bt)
{
    struct kh_store *st = b->store;
    bool was_healthy = st->ops->healthy(st);
    uint64_t t0 = kh_mono_usec();
    uint64_t backoff = 20000;
    if (b->dedup) /* once, before the first attempt: a retry writes what was decided */
        kh_dedup_decide(b->dedup, bt->seq, &bt->b);
    for (int attempt = 1;; attempt++) {
        const char *err = NULL;
        bt->rc = b->stage ? b->stage(b->stage_arg, slot, &bt->b, &err) : 0;
        if (bt->rc == 0)
            bt->rc = st->ops->write(st, slot, &bt->b, &err);
        if (bt->rc != 0 && err) {
            /* the backend's message may be overwritten by its next batch: copy it */
            snprintf(bt->errbuf, sizeof(bt->errbuf), "%s", err);
            bt->err = bt->errbuf;
        }
        uint64_t elapsed = kh_mono_usec() - t0;
        if (bt->rc != KH_ERETRY || !was_healthy || elapsed + backoff > b->retry_usec)
            break;
        struct kh_logline l;
        if (kh_log_begin(&l, KH_LOG_WARN, "batch write failed, retrying")) {
            kh_log_int(&l, "attempt", attempt);
            kh_log_int(&l, "reports", (int64_t)bt->b.nreports);
            kh_log_str(&l, "error", bt->err ? bt->err : "unknown");
            kh_log_end(&l);
        }
        /* jitter: 75%..125% of the step, so writers do not retry in lockstep */
        sleep_usec(backoff * 3 / 4 + (uint64_t)rand() % (backoff / 2 + 1));
        if (backoff < 1000000)
            backoff *= 2;
    }
    if (b->dedup) /* what committed, before the next batch of any slot reads the map */
        kh_dedup_settle(b->dedup, &bt->b, bt->rc);
    if (b->stage_after)
        b->stage_after(b->stage_arg, slot, &bt->b, bt->rc);
    bt->write_usec = kh_mono_usec() - t0;
}

/* Work queue: writer thread `slot` (or the loop, with no writers). */
static void on_write(struct kh_workq_item *it, int slot, void *arg)
{
    write_batch(arg, slot, KH_WORKQ_ENTRY(it, struct batch, node));
}

void kh_batcher_set_after(struct kh_batcher *b, kh_batch_after_fn after)
{
    b->stage_after = after;
}

void kh_batcher_set_dedup(struct kh_batcher *b, struct kh_dedup *d) { b->dedup = d; }

void kh_batcher_set_stage(struct kh_batcher *b, kh_batch_stage_fn fn, kh_batch_done_fn done,
                          void *arg)
{
    b->stage = fn;
    b->stage_done = done;
    b->stage_arg = arg;
}

static void dispatch(struct kh_batcher *b)
{
    struct batch *bt = b->cur;
    if (bt == NULL || bt->b.nreports == 0)
        return;
    b->cur = NULL;
    bt->seq = b->dispatched++;
    evtimer_del(b->timer);
    kh_workq_submit(b->q, &bt->node);
}

static bool writer_idle(const struct kh_batcher *b)
{
    return kh_workq_pending(b->q) < b->parallel;
}

static void log_failure(const struct batch *bt)
{
    struct kh_logline l;
    if (kh_log_begin(&l, KH_LOG_ERROR, "batch write failed")) {
        kh_log_int(&l, "reports", (int64_t)bt->b.nreports);
        kh_log_int(&l, "rows", (int64_t)bt->b.nrows);
        kh_log_bool(&l, "retryable", bt->rc == KH_ERETRY);
        kh_log_str(&l, "error", bt->err ? bt->err : "unknown");
        kh_log_end(&l);
    }
}

/* The metrics count what the backend says it stored, not what the batch held: a
 * redelivered report adds no rows. */
static void count_stored(const struct kh_batch *kb)
{
    kh_metrics.reports_stored[0] += kb->reports_stored[0];
    kh_metrics.reports_stored[1] += kb->reports_stored[1];
    kh_metrics.reports_duplicate += kb->reports_duplicate;
    kh_metrics.webhooks_stored[0] += kb->webhooks_stored[0];
    kh_metrics.webhooks_stored[1] += kb->webhooks_stored[1];
    kh_metrics.webhooks_duplicate += kb->webhooks_duplicate;
    for (size_t t = 0; t < KH_REPORT_MAX_TABLES && t < KH_METRICS_TABLES; t++)
        kh_metrics.rows_stored[t] += kb->rows_stored[t];
}

/* The earliest time of the reports a batch stored, for the console's overview to read its
 * bucket again (core/storedtime.h): after the commit, before any answer, so that a client
 * that asks once answered sees it. */
static void note_stored(const struct batch *bt)
{
    int64_t earliest = INT64_MAX;
    for (size_t i = 0; i < bt->b.nreports; i++) {
        bool stored = bt->rc == 0 || (bt->rc == KH_EREJECT && bt->b.results[i] == 0);
        if (stored && bt->b.reports[i]->time_usec < earliest)
            earliest = bt->b.reports[i]->time_usec;
    }
    if (earliest != INT64_MAX)
        kh_storedtime_note(earliest);
}

static void complete(struct kh_batcher *b, struct batch *bt)
{
    b->stats.batches++;
    kh_metrics_batch(bt->b.nreports, (double)bt->write_usec / 1e6,
                     bt->rc == 0 || bt->rc == KH_EREJECT);
    if (bt->rc != 0 && bt->rc != KH_EREJECT) {
        b->stats.failed_batches++;
        log_failure(bt);
    }
    if (bt->rc == 0 || bt->rc == KH_EREJECT)
        count_stored(&bt->b);
    if (b->stage_done)
        b->stage_done(b->stage_arg, &bt->b, bt->rc);
    note_stored(bt);
    for (size_t i = 0; i < bt->b.nreports; i++) {
        int res = bt->rc == 0 ? 0 : bt->rc == KH_EREJECT ? bt->b.results[i] : KH_ERETRY;
        if (res == 0) {
            b->stats.reports++;
            b->stats.rows += bt->b.reports[i]->nrows;
        }
        b->pending--;
        b->inflight -= bt->entries[i].bytes;
        bt->entries[i].cb(bt->entries[i].arg, res, bt->err);
    }
    if (kh_log_enabled(KH_LOG_DEBUG)) {
        struct kh_logline l;
        kh_log_begin(&l, KH_LOG_DEBUG, "batch written");
        kh_log_int(&l, "reports", (int64_t)bt->b.nreports);
        kh_log_int(&l, "rows", (int64_t)bt->b.nrows);
        kh_log_int(&l, "usec", (int64_t)bt->write_usec);
        kh_log_end(&l);
    }
    batch_free(bt);
}

/* Loop thread: a batch is back from its writer. */
static void on_written(struct kh_workq_item *it, void *arg)
{
    struct kh_batcher *b = arg;
    complete(b, KH_WORKQ_ENTRY(it, struct batch, node));
    /* a writer is idle: what gathered meanwhile goes now */
    if (writer_idle(b))
        dispatch(b);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct kh_batcher *b = arg;
    if (writer_idle(b))
        dispatch(b);
}

struct kh_batcher *kh_batcher_new(struct event_base *base, struct kh_store *store,
                                  const struct kh_config *cfg)
{
    struct kh_batcher *b = calloc(1, sizeof(*b));
    if (b == NULL)
        goto fail_alloc;
    b->store = store;
    b->max_reports = (size_t)cfg->batch_max_reports;
    b->max_rows = (size_t)cfg->batch_max_rows;
    b->max_inflight = (size_t)cfg->max_inflight_bytes;
    b->delay_ms = (long)cfg->batch_max_delay_ms;
    b->retry_usec = (uint64_t)cfg->storage_retry_ms * 1000;
    int writers = store->ops->writers(store);
    if (writers < 0)
        writers = 0;
    b->parallel = writers ? (size_t)writers : 1;
    b->timer = evtimer_new(base, on_timer, b);
    if (b->timer == NULL)
        goto fail_timer;
    b->q = kh_workq_new(base, "kh-writer", writers, on_write, on_written, b);
    if (b->q == NULL)
        goto fail_workq;
    return b;
fail_workq:
    event_free(b->timer);
fail_timer:
    free(b);
fail_alloc:
    return NULL;
}

int kh_batcher_submit(struct kh_batcher *b, struct kh_report *r, kh_batch_cb cb, void *arg)
{
    if (b->stopping)
        return KH_ESHUTDOWN;
    size_t bytes = r->arena.total + sizeof(*r);
    if (b->inflight + bytes > b->max_inflight)
        return KH_ENOSPC;
    if (b->cur == NULL && (b->cur = batch_new(b->max_reports)) == NULL)
        return KH_ENOMEM;
    struct batch *bt = b->cur;
    size_t i = bt->b.nreports++;
    bt->b.reports[i] = r;
    bt->b.nrows += r->nrows;
    bt->entries[i] = (struct entry){.cb = cb, .arg = arg, .bytes = bytes};
    b->pending++;
    b->inflight += bytes;
    if (bt->b.nreports >= b->max_reports || bt->b.nrows >= b->max_rows)
        dispatch(b);
    else if (writer_idle(b)) {
        if (b->delay_ms == 0)
            dispatch(b);
        else if (!evtimer_pending(b->timer, NULL)) {
            struct timeval tv = {b->delay_ms / 1000, (b->delay_ms % 1000) * 1000};
            evtimer_add(b->timer, &tv);
        }
    }
    return 0;
}

void kh_batcher_stop(struct kh_batcher *b)
{
    b->stopping = true;
    dispatch(b);
}

size_t kh_batcher_pending(const struct kh_batcher *b) { return b->pending; }

uint64_t kh_batcher_dispatched(const struct kh_batcher *b) { return b->dispatched; }

void kh_batcher_get_stats(const struct kh_batcher *b, struct kh_batcher_stats *out)
{
    *out = b->stats;
    out->inflight_bytes = b->inflight;
}

void kh_batcher_free(struct kh_batcher *b)
{
    if (b == NULL)
        return;
    kh_batcher_stop(b);
    kh_workq_free(b->q); /* writes what is queued, completes it, joins the writers */
    batch_free(b->cur);
    event_free(b->timer);
    free(b);
}
