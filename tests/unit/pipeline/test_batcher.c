/*
 * Unit tests of src/pipeline/batcher.c with a real libevent loop and a fake storage backend
 * defined here: every submitted report completes exactly once on the loop thread (0, or
 * KH_ERETRY when storage fails), batch_max_reports splits batches, and the in-flight budget
 * and shutdown refuse a report without ever calling back. Most tests submit empty reports;
 * two submit reports parsed from a real envelope, whose arenas the in-flight budget counts.
 */
#include <event2/event.h>
#include <event2/thread.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/config.h"
#include "core/errors.h"
#include "core/log.h"
#include "kh_test.h"
#include "pipeline/batcher.h"
#include "pipeline/dedup.h"
#include "store/store.h"

/* --- the fake backend ------------------------------------------------------------------- */

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int writers;   /* what ops->writers answers */
    bool healthy;  /* what ops->healthy answers */
    int fail_next; /* writes still to fail with KH_ERETRY; -1: all */
    bool gate;     /* while true, write waits */
    size_t sizes[64];
    size_t written[64]; /* rows the write would store (kh_row_written) */
    size_t nwrites;
    bool wrote_off_loop, wrote_on_loop;
} fake = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static pthread_t loop_thread;

static int fake_open(struct kh_store *s, const struct kh_config *cfg, const char **err)
{
    return 0;
}
static int fake_migrate(struct kh_store *s, int target, const char **err) { return 0; }
static int fake_start(struct kh_store *s) { return 0; }
static int fake_writers(struct kh_store *s) { return fake.writers; }
static bool fake_healthy(struct kh_store *s) { return fake.healthy; }
static uint64_t fake_reconnects(struct kh_store *s) { return 0; }
static void fake_close(struct kh_store *s) {}

static int fake_write(struct kh_store *s, int slot, struct kh_batch *b, const char **err)
{
    pthread_mutex_lock(&fake.mu);
    while (fake.gate)
        pthread_cond_wait(&fake.cv, &fake.mu);
    if (fake.nwrites < 64) {
        fake.sizes[fake.nwrites] = b->nreports;
        fake.written[fake.nwrites] = 0;
        for (size_t i = 0; i < b->nreports; i++)
            for (const struct kh_row *row = b->reports[i]->rows; row; row = row->next)
                fake.written[fake.nwrites] += kh_row_written(row);
    }
    fake.nwrites++;
    if (pthread_equal(pthread_self(), loop_thread))
        fake.wrote_on_loop = true;
    else
        fake.wrote_off_loop = true;
    bool fail = fake.fail_next != 0;
    if (fake.fail_next > 0)
        fake.fail_next--;
    pthread_mutex_unlock(&fake.mu);
    for (size_t i = 0; i < b->nreports; i++)
        b->results[i] = 0;
    if (fail) {
        *err = "fake: storage down";
        return KH_ERETRY;
    }
    return 0;
}

static const struct kh_store_ops fake_ops = {
    .name = "fake",
    .open = fake_open,
    .migrate = fake_migrate,
    .start = fake_start,
    .writers = fake_writers,
    .write = fake_write,
    .healthy = fake_healthy,
    .reconnects = fake_reconnects,
    .close = fake_close,
};

static void set_gate(bool closed)
{
    pthread_mutex_lock(&fake.mu);
    fake.gate = closed;
    pthread_cond_broadcast(&fake.cv);
    pthread_mutex_unlock(&fake.mu);
}

/* --- fixture: a loop, a config, the fake store, per-report completions ------------------ */

struct done {
    int calls;
    int result;
    bool on_loop;
    char err[64];
};

struct ctx {
    struct event_base *base;
    struct event *tick; /* keeps EVLOOP_ONCE from blocking for long */
    struct kh_config cfg;
    struct kh_store store;
    struct done done[64];
    int completed;
};

static void on_tick(evutil_socket_t fd, short what, void *arg) {}

static void on_stored(void *arg, int result, const char *err)
{
    struct done *d = arg;
    d->calls++;
    d->result = result;
    d->on_loop = pthread_equal(pthread_self(), loop_thread);
    snprintf(d->err, sizeof(d->err), "%s", err ? err : "");
}

static int setup(void **state)
{
    struct ctx *c = calloc(1, sizeof(*c));
    if (c == NULL || (c->base = event_base_new()) == NULL)
        return -1;
    c->tick = event_new(c->base, -1, EV_PERSIST, on_tick, NULL);
    struct timeval ms = {0, 1000};
    if (c->tick == NULL || event_add(c->tick, &ms) != 0 || kh_config_init(&c->cfg) != 0)
        return -1;
    c->store.ops = &fake_ops;
    pthread_mutex_lock(&fake.mu);
    fake.writers = 1;
    fake.healthy = true;
    fake.fail_next = 0;
    fake.gate = false;
    fake.nwrites = 0;
    fake.wrote_off_loop = fake.wrote_on_loop = false;
    pthread_mutex_unlock(&fake.mu);
    loop_thread = pthread_self();
    *state = c;
    return 0;
}

static int teardown(void **state)
{
    struct ctx *c = *state;
    event_free(c->tick);
    event_base_free(c->base);
    kh_config_cleanup(&c->cfg);
    free(c);
    return 0;
}

static int total_calls(const struct ctx *c)
{
    int n = 0;
    for (size_t i = 0; i < 64; i++)
        n += c->done[i].calls;
    return n;
}

/* Runs the loop until `target` completions have arrived (bounded: about 5 s at most). */
static void pump(struct ctx *c, int target)
{
    for (int i = 0; i < 5000 && total_calls(c) < target; i++)
        event_base_loop(c->base, EVLOOP_ONCE);
    if (total_calls(c) < target)
        fail_msg("only %d of %d completions arrived", total_calls(c), target);
}

static struct kh_batcher *batcher(struct ctx *c)
{
    struct kh_batcher *b = kh_batcher_new(c->base, &c->store, &c->cfg);
    assert_non_null(b);
    return b;
}

static void submit(struct ctx *c, struct kh_batcher *b, int i)
{
    struct kh_report *r = kh_report_new(KH_REPORT_CONNECTION, 1u << 16);
    assert_non_null(r);
    assert_int_equal(kh_batcher_submit(b, r, on_stored, &c->done[i]), 0);
}

static void assert_all_done(const struct ctx *c, int n, int result)
{
    for (int i = 0; i < n; i++) {
        if (c->done[i].calls != 1)
            fail_msg("report %d completed %d times", i, c->done[i].calls);
        assert_int_equal(c->done[i].result, result);
        assert_true(c->done[i].on_loop);
    }
}

static size_t writes(void)
{
    pthread_mutex_lock(&fake.mu);
    size_t n = fake.nwrites;
    pthread_mutex_unlock(&fake.mu);
    return n;
}

/* --- tests ---------------------------------------------------------------------------- */

static void test_every_report_completes_once(void **state)
{
    struct ctx *c = *state;
    struct kh_batcher *b = batcher(c);
    for (int i = 0; i < 20; i++)
        submit(c, b, i);
    assert_int_equal(kh_batcher_pending(b), 20);
    pump(c, 20);
    for (int i = 0; i < 20; i++) /* a little more loop: no second completion */
        event_base_loop(c->base, EVLOOP_NONBLOCK);
    assert_all_done(c, 20, 0);
    assert_int_equal(total_calls(c), 20);
    assert_int_equal(kh_batcher_pending(b), 0);
    struct kh_batcher_stats st;
    kh_batcher_get_stats(b, &st);
    assert_int_equal(st.reports, 20);
    assert_int_equal(st.batches, writes());
    assert_int_equal(st.failed_batches, 0);
    assert_int_equal(st.inflight_bytes, 0);
    size_t sum = 0;
    for (size_t i = 0; i < writes(); i++)
        sum += fake.sizes[i];
    assert_int_equal(sum, 20);
    assert_true(fake.wrote_off_loop);
    assert_false(fake.wrote_on_loop);
    kh_batcher_free(b);
    assert_int_equal(total_calls(c), 20);
}

static void test_inline_backend(void **state)
{
    struct ctx *c = *state;
    fake.writers = 0; /* written on the loop thread, like the null backend */
    struct kh_batcher *b = batcher(c);
    for (int i = 0; i < 5; i++)
        submit(c, b, i);
    pump(c, 5);
    assert_all_done(c, 5, 0);
    assert_true(fake.wrote_on_loop);
    assert_false(fake.wrote_off_loop);
    kh_batcher_free(b);
    assert_int_equal(total_calls(c), 5);
}

/* A connection report parsed from an envelope, as the collector hands it over. */
static struct kh_report *parsed(const char *timestamp)
{
    return kht_report(NULL, "timestamp", timestamp);
}

static void test_parsed_reports_complete_once(void **state)
{
    struct ctx *c = *state;
    c->cfg.batch_max_reports = 8;
    c->cfg.storage_retry_ms = 0;
    c->cfg.max_inflight_bytes = 268435456;
    c->cfg.batch_max_delay_ms = 0;
    struct kh_batcher *b = batcher(c);
    for (int i = 0; i < 50; i++)
        assert_int_equal(kh_batcher_submit(b, parsed("\"2026-11-24T06:00:00.5Z\""), on_stored,
                                           &c->done[i]),
                         0);
    pump(c, 50);
    assert_all_done(c, 50, 0);
    size_t sum = 0, max = 0;
    for (size_t i = 0; i < writes(); i++) {
        sum += fake.sizes[i];
        max = fake.sizes[i] > max ? fake.sizes[i] : max;
    }
    assert_int_equal(sum, 50);
    assert_true(max <= 8);
    assert_true(writes() >= 7); /* 50 reports, 8 at most per batch */
    kh_batcher_stop(b);
    struct kh_report *r = parsed("\"2026-11-24T06:00:00.5Z\"");
    assert_int_equal(kh_batcher_submit(b, r, on_stored, &c->done[50]), KH_ESHUTDOWN);
    kh_report_free(r);
    kh_batcher_free(b);
    assert_int_equal(total_calls(c), 50); /* the refused one never called back */
}

static void test_parsed_reports_retry_and_budget(void **state)
{
    struct ctx *c = *state;
    c->cfg.batch_max_reports = 8;
    c->cfg.storage_retry_ms = 5000;
    c->cfg.batch_max_delay_ms = 0;
    /* storage known down: no retries, the report gets KH_ERETRY (503) */
    fake.healthy = false;
    fake.fail_next = 1;
    struct kh_batcher *b = batcher(c);
    assert_int_equal(
        kh_batcher_submit(b, parsed("\"2026-11-24T06:00:00.5Z\""), on_stored, &c->done[0]), 0);
    pump(c, 1);
    assert_all_done(c, 1, KH_ERETRY);
    /* a new failure while healthy: retried, then stored */
    fake.healthy = true;
    fake.fail_next = 2;
    assert_int_equal(
        kh_batcher_submit(b, parsed("\"2026-11-24T06:00:01.5Z\""), on_stored, &c->done[1]), 0);
    pump(c, 2);
    assert_int_equal(c->done[1].calls, 1);
    assert_int_equal(c->done[1].result, 0);
    assert_int_equal(fake.fail_next, 0);
    kh_batcher_free(b);
    /* the in-flight budget: each report holds at least one 16 KiB arena chunk, so 6 cannot
     * all fit in 64 KiB */
    memset(c->done, 0, sizeof(c->done));
    c->cfg.storage_retry_ms = 0;
    c->cfg.max_inflight_bytes = 65536;
    b = batcher(c);
    int accepted = 0, refused = 0;
    for (int i = 0; i < 6; i++) {
        char ts[64];
        snprintf(ts, sizeof(ts), "\"2026-11-24T06:00:0%d.5Z\"", i);
        struct kh_report *r = parsed(ts);
        int rc = kh_batcher_submit(b, r, on_stored, &c->done[accepted]);
        if (rc == 0) {
            accepted++;
        } else {
            assert_int_equal(rc, KH_ENOSPC);
            kh_report_free(r);
            refused++;
        }
    }
    assert_true(accepted >= 1);
    assert_true(refused >= 1);
    pump(c, accepted);
    assert_all_done(c, accepted, 0);
    kh_batcher_free(b);
    assert_int_equal(total_calls(c), accepted);
}

static void test_write_failure_gives_retry(void **state)
{
    struct ctx *c = *state;
    fake.fail_next = -1;
    fake.healthy = false; /* known down: fail at once, no retries */
    struct kh_batcher *b = batcher(c);
    for (int i = 0; i < 3; i++)
        submit(c, b, i);
    pump(c, 3);
    assert_all_done(c, 3, KH_ERETRY);
    assert_string_equal(c->done[0].err, "fake: storage down");
    struct kh_batcher_stats st;
    kh_batcher_get_stats(b, &st);
    assert_int_equal(st.reports, 0);
    assert_true(st.failed_batches >= 1);
    assert_int_equal(st.failed_batches, writes());
    assert_int_equal(kh_batcher_pending(b), 0);
    kh_batcher_free(b);
    assert_int_equal(total_calls(c), 3);
}

static void test_retry_then_success(void **state)
{
    struct ctx *c = *state;
    fake.fail_next = 1; /* a new failure while healthy: retried within storage_retry_ms */
    c->cfg.storage_retry_ms = 5000;
    struct kh_batcher *b = batcher(c);
    submit(c, b, 0);
    pump(c, 1);
    assert_all_done(c, 1, 0);
    assert_int_equal(writes(), 2);
    kh_batcher_free(b);
}

/* With a dedup map: a connection's unchanged codec is left out of its second report's write,
 * decided once before the first attempt (a retried write leaves it out too), and a failed
 * batch's rows teach the map nothing (the codec it left out is still the stored one). */
static void test_dedup_leaves_unchanged_objects_out(void **state)
{
    struct ctx *c = *state;
    c->cfg.storage_retry_ms = 5000;
    fake.writers = 2;
    struct kh_dedup *d = kh_dedup_new(1 << 20, 3600LL * 1000000);
    assert_non_null(d);
    struct kh_batcher *b = batcher(c);
    kh_batcher_set_dedup(b, d);
    const char *times[] = {"\"2026-11-24T06:00:01.5Z\"", "\"2026-11-24T06:00:02.5Z\"",
                           "\"2026-11-24T06:00:03.5Z\"", "\"2026-11-24T06:00:04.5Z\""};
    /* 1: stored; 2: the codec left out; 3: fails once, retried, the codec left out both
     * times; 4: storage known down, fails; 5 (after): the codec still left out */
    for (int i = 0; i < 3; i++) {
        if (i == 2)
            fake.fail_next = 1;
        assert_int_equal(kh_batcher_submit(b, parsed(times[i]), on_stored, &c->done[i]), 0);
        pump(c, i + 1);
    }
    assert_all_done(c, 3, 0);
    assert_int_equal(writes(), 4);
    assert_int_equal(fake.written[0], 2); /* transport and codec */
    assert_int_equal(fake.written[1], 1); /* transport */
    assert_int_equal(fake.written[2], 1);
    assert_int_equal(fake.written[3], 1);
    fake.healthy = false;
    fake.fail_next = -1;
    assert_int_equal(kh_batcher_submit(b, parsed(times[3]), on_stored, &c->done[3]), 0);
    pump(c, 4);
    assert_int_equal(c->done[3].result, KH_ERETRY);
    fake.healthy = true;
    fake.fail_next = 0;
    assert_int_equal(
        kh_batcher_submit(b, parsed("\"2026-11-24T06:00:05.5Z\""), on_stored, &c->done[4]), 0);
    pump(c, 5);
    assert_int_equal(c->done[4].result, 0);
    assert_int_equal(fake.written[writes() - 1], 1);
    struct kh_dedup_counts n;
    kh_dedup_counts(d, &n);
    assert_int_equal(n.stored, 1);
    assert_int_equal(n.skipped, 4);
    kh_batcher_free(b);
    kh_dedup_free(d);
}

static void assert_sizes(const size_t *want, size_t n)
{
    pthread_mutex_lock(&fake.mu);
    size_t got = fake.nwrites;
    char text[256] = "";
    for (size_t i = 0; i < got && i < 64; i++)
        snprintf(text + strlen(text), sizeof(text) - strlen(text), " %zu", fake.sizes[i]);
    bool same = got == n;
    for (size_t i = 0; same && i < n; i++)
        same = fake.sizes[i] == want[i];
    pthread_mutex_unlock(&fake.mu);
    if (!same)
        fail_msg("batch sizes:%s", text);
}

static void test_batch_max_reports_splits(void **state)
{
    struct ctx *c = *state;
    c->cfg.batch_max_reports = 3;
    c->cfg.batch_max_delay_ms = 10000; /* only size (or stop) sends a batch */
    struct kh_batcher *b = batcher(c);
    for (int i = 0; i < 7; i++)
        submit(c, b, i);
    kh_batcher_stop(b);
    pump(c, 7);
    const size_t want[] = {3, 3, 1};
    assert_sizes(want, 3);
    assert_all_done(c, 7, 0);
    kh_batcher_free(b);
}

static void test_batches_grow_while_writer_busy(void **state)
{
    struct ctx *c = *state;
    c->cfg.batch_max_reports = 3;
    set_gate(true);
    struct kh_batcher *b = batcher(c);
    for (int i = 0; i < 8; i++)
        submit(c, b, i);
    set_gate(false);
    pump(c, 8);
    const size_t want[] = {1, 3, 3, 1};
    assert_sizes(want, 4);
    assert_all_done(c, 8, 0);
    kh_batcher_free(b);
}

static void test_inflight_budget(void **state)
{
    struct ctx *c = *state;
    c->cfg.max_inflight_bytes = 2 * (int64_t)sizeof(struct kh_report) + 16;
    struct kh_batcher *b = batcher(c);
    submit(c, b, 0);
    submit(c, b, 1);
    struct kh_report *r = kh_report_new(KH_REPORT_CONNECTION, 1u << 16);
    assert_int_equal(kh_batcher_submit(b, r, on_stored, &c->done[2]), KH_ENOSPC);
    assert_int_equal(kh_batcher_pending(b), 2);
    pump(c, 2);
    for (int i = 0; i < 10; i++)
        event_base_loop(c->base, EVLOOP_NONBLOCK);
    assert_all_done(c, 2, 0);
    assert_int_equal(c->done[2].calls, 0); /* refused: never called back */
    /* the budget is free again: the same report is taken now */
    assert_int_equal(kh_batcher_submit(b, r, on_stored, &c->done[2]), 0);
    pump(c, 3);
    assert_all_done(c, 3, 0);
    struct kh_batcher_stats st;
    kh_batcher_get_stats(b, &st);
    assert_int_equal(st.inflight_bytes, 0);
    kh_batcher_free(b);
}

static void test_stop_refuses(void **state)
{
    struct ctx *c = *state;
    c->cfg.batch_max_delay_ms = 10000;
    struct kh_batcher *b = batcher(c);
    submit(c, b, 0);
    submit(c, b, 1);
    kh_batcher_stop(b); /* sends what is gathered */
    struct kh_report *r = kh_report_new(KH_REPORT_CONNECTION, 1u << 16);
    assert_int_equal(kh_batcher_submit(b, r, on_stored, &c->done[2]), KH_ESHUTDOWN);
    kh_report_free(r); /* still ours */
    pump(c, 2);
    assert_all_done(c, 2, 0);
    assert_int_equal(c->done[2].calls, 0);
    kh_batcher_free(b);
    assert_int_equal(c->done[2].calls, 0);
}

static void test_free_completes_queued_reports(void **state)
{
    struct ctx *c = *state;
    c->cfg.batch_max_delay_ms = 10000;
    struct kh_batcher *b = batcher(c);
    for (int i = 0; i < 4; i++)
        submit(c, b, i);
    kh_batcher_free(b); /* the loop never ran: free writes and completes them */
    assert_all_done(c, 4, 0);
    assert_int_equal(writes(), 1);
}

int main(void)
{
    kh_log_set_level(KH_LOG_ERROR + 1); /* the failure tests log errors on purpose */
    if (evthread_use_pthreads() != 0 || kh_schema_init() != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_every_report_completes_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_inline_backend, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parsed_reports_complete_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parsed_reports_retry_and_budget, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_failure_gives_retry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retry_then_success, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dedup_leaves_unchanged_objects_out, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_batch_max_reports_splits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batches_grow_while_writer_busy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_inflight_budget, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_refuses, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_completes_queued_reports, setup, teardown),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    kh_schema_cleanup();
    return failed;
}
