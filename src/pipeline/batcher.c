/*
 * batcher: group commit over one writer thread. See batcher.h.
 *
 * Threads: the loop thread owns `cur`, the counters and all callbacks. Writer threads (one
 * per backend slot) only touch the batches handed to them through `todo` and hand them back
 * through `done` (both under `mu`), then wake the loop with event_active (libevent is set up
 * for pthreads in main). A batch's reports are not touched by the loop while a writer has it.
 *
 * A backend with no writers (the null backend) is written inline on the loop thread, from the
 * same deferred event that completes batches: its cost is then only what it does itself.
 *
 * Retries live here, not in the backends: a write that fails with KH_ERETRY is tried again
 * with backoff for up to storage_retry_ms, when storage was healthy before the batch (a new
 * failure: a lost connection, a busy database). When storage was already known to be down,
 * the batch fails at once so its reports get their 503 without waiting.
 */
#include "pipeline/batcher.h"

#include <event2/event.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/timeutil.h"

struct entry {
    kh_batch_cb cb;
    void *arg;
    size_t bytes;
};

struct batch {
    struct batch *next;
    struct kh_batch b; /* reports, results, counts */
    struct entry *entries;
    size_t cap;
    int rc;
    const char *err;
    char errbuf[256];
    uint64_t write_usec;
};

struct kh_batcher {
    struct event_base *base;
    struct kh_store *store;
    size_t max_reports, max_rows, max_inflight;
    long delay_ms;
    uint64_t retry_usec;
    int nwriters;     /* writer threads; 0 = write inline on the loop */
    size_t parallel;  /* batches that may be out at once: max(nwriters, 1) */
    /* loop side */
    struct batch *cur;
    size_t outstanding; /* batches handed to the writer and not yet back */
    size_t pending;     /* reports submitted, not completed */
    size_t inflight;    /* bytes of those reports */
    bool stopping;
    struct event *timer;
    struct event *done_ev;
    struct kh_batcher_stats stats;
    /* shared with the writer, under mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct batch *todo, **todo_tail;
    struct batch *done, **done_tail;
    bool quit;
    struct writer *writers;
};

struct writer {
    struct kh_batcher *b;
    int slot;
    pthread_t thread;
    bool started;
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
    for (int attempt = 1;; attempt++) {
        const char *err = NULL;
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
    bt->write_usec = kh_mono_usec() - t0;
}

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    struct kh_batcher *b = w->b;
    pthread_mutex_lock(&b->mu);
    for (;;) {
        while (b->todo == NULL && !b->quit)
            pthread_cond_wait(&b->cv, &b->mu);
        if (b->todo == NULL)
            break;
        struct batch *bt = b->todo;
        b->todo = bt->next;
        if (b->todo == NULL)
            b->todo_tail = &b->todo;
        pthread_mutex_unlock(&b->mu);

        write_batch(b, w->slot, bt);

        pthread_mutex_lock(&b->mu);
        bt->next = NULL;
        *b->done_tail = bt;
        b->done_tail = &bt->next;
        event_active(b->done_ev, EV_READ, 0);
    }
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

static void dispatch(struct kh_batcher *b)
{
    struct batch *bt = b->cur;
    if (bt == NULL || bt->b.nreports == 0)
        return;
    b->cur = NULL;
    evtimer_del(b->timer);
    b->outstanding++;
    pthread_mutex_lock(&b->mu);
    bt->next = NULL;
    *b->todo_tail = bt;
    b->todo_tail = &bt->next;
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
    if (b->nwriters == 0)
        event_active(b->done_ev, EV_READ, 0);
}

/* Inline mode: write what is queued, as a writer thread would, and hand it to `done`. */
static void write_inline(struct kh_batcher *b)
{
    for (;;) {
        pthread_mutex_lock(&b->mu);
        struct batch *bt = b->todo;
        if (bt) {
            b->todo = bt->next;
            if (b->todo == NULL)
                b->todo_tail = &b->todo;
        }
        pthread_mutex_unlock(&b->mu);
        if (bt == NULL)
            return;
        write_batch(b, 0, bt);
        pthread_mutex_lock(&b->mu);
        bt->next = NULL;
        *b->done_tail = bt;
        b->done_tail = &bt->next;
        pthread_mutex_unlock(&b->mu);
    }
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
    for (size_t t = 0; t < KH_REPORT_MAX_TABLES && t < KH_METRICS_TABLES; t++)
        kh_metrics.rows_stored[t] += kb->rows_stored[t];
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

static void on_done(evutil_socket_t fd, short what, void *arg)
{
    struct kh_batcher *b = arg;
    if (b->nwriters == 0)
        write_inline(b);
    pthread_mutex_lock(&b->mu);
    struct batch *list = b->done;
    b->done = NULL;
    b->done_tail = &b->done;
    pthread_mutex_unlock(&b->mu);
    while (list) {
        struct batch *next = list->next;
        b->outstanding--;
        complete(b, list);
        list = next;
    }
    /* a writer is idle: what gathered meanwhile goes now */
    if (b->outstanding < b->parallel)
        dispatch(b);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct kh_batcher *b = arg;
    if (b->outstanding < b->parallel)
        dispatch(b);
}

static void join_writers(struct kh_batcher *b)
{
    pthread_mutex_lock(&b->mu);
    b->quit = true;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
    for (int i = 0; i < b->nwriters; i++)
        if (b->writers[i].started)
            pthread_join(b->writers[i].thread, NULL);
}

struct kh_batcher *kh_batcher_new(struct event_base *base, struct kh_store *store,
                                  const struct kh_config *cfg)
{
    struct kh_batcher *b = calloc(1, sizeof(*b));
    if (b == NULL)
        goto fail_alloc;
    b->base = base;
    b->store = store;
    b->max_reports = (size_t)cfg->batch_max_reports;
    b->max_rows = (size_t)cfg->batch_max_rows;
    b->max_inflight = (size_t)cfg->max_inflight_bytes;
    b->delay_ms = (long)cfg->batch_max_delay_ms;
    b->retry_usec = (uint64_t)cfg->storage_retry_ms * 1000;
    b->nwriters = store->ops->writers(store);
    if (b->nwriters < 0)
        b->nwriters = 0;
    b->parallel = b->nwriters ? (size_t)b->nwriters : 1;
    b->todo_tail = &b->todo;
    b->done_tail = &b->done;
    b->timer = evtimer_new(base, on_timer, b);
    b->done_ev = event_new(base, -1, 0, on_done, b);
    if (b->timer == NULL || b->done_ev == NULL)
        goto fail_events;
    if (pthread_mutex_init(&b->mu, NULL) != 0)
        goto fail_events;
    if (pthread_cond_init(&b->cv, NULL) != 0)
        goto fail_cond;
    b->writers = calloc((size_t)b->nwriters + 1, sizeof(*b->writers));
    if (b->writers == NULL)
        goto fail_writers;
    for (int i = 0; i < b->nwriters; i++) {
        b->writers[i] = (struct writer){.b = b, .slot = i};
        if (pthread_create(&b->writers[i].thread, NULL, writer_main, &b->writers[i]) != 0)
            goto fail_thread;
        b->writers[i].started = true;
    }
    return b;
fail_thread:
    join_writers(b);
    free(b->writers);
fail_writers:
    pthread_cond_destroy(&b->cv);
fail_cond:
    pthread_mutex_destroy(&b->mu);
fail_events:
    if (b->timer)
        event_free(b->timer);
    if (b->done_ev)
        event_free(b->done_ev);
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
    else if (b->outstanding < b->parallel) {
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
    join_writers(b);
    free(b->writers);
    /* batches written but not yet completed on the loop: complete them now */
    on_done(-1, 0, b);
    batch_free(b->cur);
    event_free(b->timer);
    event_free(b->done_ev);
    pthread_cond_destroy(&b->cv);
    pthread_mutex_destroy(&b->mu);
    free(b);
}
