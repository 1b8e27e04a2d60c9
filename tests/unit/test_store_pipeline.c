/*
 * Unit tests of the SQLite backend (schema versions, idempotent writes, connection upsert)
 * and of the batcher (every report completes exactly once, on the loop thread; batches split
 * by size; the in-flight budget and shutdown refuse without calling back; retries).
 */
#include <event2/event.h>
#include <event2/thread.h>
#include <pthread.h>
#include <setjmp.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/config.h"
#include "core/errors.h"
#include "pipeline/batcher.h"
#include "sora/envelope.h"
#include "sora/schema.h"
#include "store/store.h"

static struct kh_report *report(const char *conn, const char *ts)
{
    char body[1024];
    snprintf(body, sizeof(body),
             "{\"type\":\"connection.user-agent\",\"id\":\"R\",\"timestamp\":\"%s\","
             "\"label\":\"l\",\"version\":\"v\",\"node_name\":\"n\",\"multistream\":true,"
             "\"simulcast\":false,\"spotlight\":false,\"role\":\"recvonly\",\"channel_id\":\"c\","
             "\"session_id\":\"SSSSSSSSSSSSSSSSSSSSSSSSSS\",\"client_id\":\"x\","
             "\"connection_id\":\"%s\",\"stats\":[{\"id\":\"T\",\"type\":\"transport\","
             "\"timestamp\":1,\"bytesSent\":5},{\"id\":\"C\",\"type\":\"codec\",\"timestamp\":1,"
             "\"mimeType\":\"audio/opus\"}]}",
             ts, conn);
    struct kh_envelope *e = kh_envelope_new(KH_REPORT_CONNECTION, KH_FLAVOR_EXPORTER, NULL);
    assert_int_equal(kh_envelope_feed(e, body, strlen(body)), 0);
    assert_int_equal(kh_envelope_finish(e), 0);
    struct kh_report *r = kh_envelope_take_report(e);
    kh_envelope_free(e);
    return r;
}

static long long scalar(const char *db, const char *sql, char *text, size_t len)
{
    sqlite3 *h;
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_open(db, &h), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(h, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    long long v = sqlite3_column_int64(st, 0);
    if (text)
        snprintf(text, len, "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    sqlite3_close(h);
    return v;
}

static void sqlite_writes_are_idempotent(void **state)
{
    char db[64], err_path[80];
    snprintf(db, sizeof(db), "/tmp/kh-unit-%d.db", (int)getpid());
    struct kh_config cfg;
    kh_config_init(&cfg);
    free(cfg.sqlite_path);
    cfg.sqlite_path = strdup(db);
    struct kh_store s = {.ops = &kh_store_sqlite_ops};
    const char *err = NULL;
    assert_int_equal(s.ops->open(&s, &cfg, &err), 0);
    assert_int_equal(s.ops->migrate(&s, 0, &err), 0);
    assert_int_equal(s.ops->migrate(&s, 0, &err), 0); /* nothing left to do */
    assert_int_equal(scalar(db, "SELECT max(version) FROM kohaku_schema_version", NULL, 0),
                     kh_schema_latest_version());
    struct kh_report *r[3] = {report("AAAAAAAAAAAAAAAAAAAAAAAAAA", "2026-11-24T06:00:00.5Z"),
                              report("AAAAAAAAAAAAAAAAAAAAAAAAAA", "2026-11-24T07:00:00.5Z"),
                              report("AAAAAAAAAAAAAAAAAAAAAAAAAA", "2026-11-24T05:00:00.5Z")};
    int results[3];
    struct kh_batch b = {.reports = r, .results = results, .nreports = 2, .nrows = 4};
    assert_int_equal(s.ops->write(&s, 0, &b, &err), 0);
    assert_int_equal(s.ops->write(&s, 0, &b, &err), 0); /* delivered twice */
    assert_int_equal(scalar(db, "SELECT count(*) FROM rtc_transport_stats", NULL, 0), 2);
    assert_int_equal(scalar(db, "SELECT count(*) FROM rtc_codec_stats", NULL, 0), 2);
    assert_int_equal(scalar(db, "SELECT count(*) FROM sora_report", NULL, 0), 2);
    assert_int_equal(scalar(db, "SELECT sum(bytes_sent) FROM rtc_transport_stats", NULL, 0), 10);
    /* an older report replayed: first_seen moves back, last_seen stays */
    struct kh_batch old = {.reports = &r[2], .results = results, .nreports = 1, .nrows = 2};
    assert_int_equal(s.ops->write(&s, 0, &old, &err), 0);
    char text[64];
    scalar(db, "SELECT first_seen FROM sora_connection", text, sizeof(text));
    assert_string_equal(text, "2026-11-24T05:00:00.500000Z");
    scalar(db, "SELECT last_seen FROM sora_connection", text, sizeof(text));
    assert_string_equal(text, "2026-11-24T07:00:00.500000Z");
    assert_int_equal(scalar(db, "SELECT count(*) FROM sora_connection", NULL, 0), 1);
    assert_true(s.ops->healthy(&s));
    s.ops->close(&s);
    for (int i = 0; i < 3; i++)
        kh_report_free(r[i]);
    kh_config_cleanup(&cfg);
    snprintf(err_path, sizeof(err_path), "%s-wal", db);
    unlink(err_path);
    snprintf(err_path, sizeof(err_path), "%s-shm", db);
    unlink(err_path);
    unlink(db);
}

/* --- a fake backend for the batcher --------------------------------------------------- */

static struct {
    pthread_mutex_t mu;
    int batches, reports, fail_next, healthy;
    size_t max_batch;
} fake = {PTHREAD_MUTEX_INITIALIZER, 0, 0, 0, 1, 0};

static int fake_open(struct kh_store *s, const struct kh_config *c, const char **e) { return 0; }
static int fake_migrate(struct kh_store *s, int t, const char **e) { return 0; }
static int fake_start(struct kh_store *s) { return 0; }
static int fake_writers(struct kh_store *s) { return 1; }
static bool fake_healthy(struct kh_store *s) { return fake.healthy; }
static void fake_close(struct kh_store *s) {}

static int fake_write(struct kh_store *s, int slot, struct kh_batch *b, const char **err)
{
    pthread_mutex_lock(&fake.mu);
    int fail = fake.fail_next > 0 ? fake.fail_next-- : 0;
    fake.batches++;
    if (!fail)
        fake.reports += (int)b->nreports;
    if (b->nreports > fake.max_batch)
        fake.max_batch = b->nreports;
    pthread_mutex_unlock(&fake.mu);
    usleep(2000); /* let reports gather while "writing" */
    *err = "fake failure";
    return fail ? KH_ERETRY : 0;
}

static const struct kh_store_ops fake_ops = {
    .name = "fake", .open = fake_open, .migrate = fake_migrate, .start = fake_start,
    .writers = fake_writers, .write = fake_write, .healthy = fake_healthy, .close = fake_close};

struct done {
    int calls, ok, retry;
    pthread_t loop;
    bool wrong_thread;
};

static void on_done(void *arg, int result, const char *err)
{
    struct done *d = arg;
    d->calls++;
    if (!pthread_equal(pthread_self(), d->loop))
        d->wrong_thread = true;
    if (result == 0)
        d->ok++;
    else if (result == KH_ERETRY)
        d->retry++;
}

static void run_until(struct event_base *base, struct kh_batcher *b, int want, struct done *d)
{
    for (int i = 0; i < 5000 && kh_batcher_pending(b) > 0; i++)
        event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK), usleep(200);
    assert_int_equal(kh_batcher_pending(b), 0);
    assert_int_equal(d->calls, want);
}

static struct kh_batcher *new_batcher(struct event_base *base, struct kh_store *s,
                                      struct kh_config *cfg, const char *max_reports,
                                      const char *retry_ms, const char *inflight)
{
    char err[128];
    kh_config_init(cfg);
    kh_config_set(cfg, "batch_max_reports", max_reports, err, sizeof(err));
    kh_config_set(cfg, "storage_retry_ms", retry_ms, err, sizeof(err));
    kh_config_set(cfg, "max_inflight_bytes", inflight, err, sizeof(err));
    kh_config_set(cfg, "batch_max_delay_ms", "0", err, sizeof(err));
    return kh_batcher_new(base, s, cfg);
}

static void batcher_completes_each_report_once(void **state)
{
    struct event_base *base = event_base_new();
    struct kh_store s = {.ops = &fake_ops};
    struct kh_config cfg;
    struct kh_batcher *b = new_batcher(base, &s, &cfg, "8", "0", "268435456");
    struct done d = {.loop = pthread_self()};
    fake.batches = fake.reports = 0;
    fake.max_batch = 0;
    for (int i = 0; i < 50; i++)
        assert_int_equal(kh_batcher_submit(b, report("BBBBBBBBBBBBBBBBBBBBBBBBBB",
                                                     "2026-11-24T06:00:00.5Z"),
                                           on_done, &d),
                         0);
    run_until(base, b, 50, &d);
    assert_int_equal(d.ok, 50);
    assert_false(d.wrong_thread);
    assert_int_equal(fake.reports, 50);
    assert_true(fake.max_batch <= 8);
    assert_true(fake.batches >= 7); /* 50 reports, 8 at most per batch */
    kh_batcher_stop(b);
    struct kh_report *r = report("BBBBBBBBBBBBBBBBBBBBBBBBBB", "2026-11-24T06:00:00.5Z");
    assert_int_equal(kh_batcher_submit(b, r, on_done, &d), KH_ESHUTDOWN);
    kh_report_free(r);
    kh_batcher_free(b);
    assert_int_equal(d.calls, 50); /* the refused one never called back */
    kh_config_cleanup(&cfg);
    event_base_free(base);
}

static void batcher_failures_and_budget(void **state)
{
    struct event_base *base = event_base_new();
    struct kh_store s = {.ops = &fake_ops};
    struct kh_config cfg;
    /* storage known down: no retries, the report gets KH_ERETRY (503) */
    struct kh_batcher *b = new_batcher(base, &s, &cfg, "8", "5000", "268435456");
    struct done d = {.loop = pthread_self()};
    fake.healthy = 0;
    fake.fail_next = 1;
    kh_batcher_submit(b, report("CCCCCCCCCCCCCCCCCCCCCCCCCC", "2026-11-24T06:00:00.5Z"), on_done,
                      &d);
    run_until(base, b, 1, &d);
    assert_int_equal(d.retry, 1);
    /* a new failure while healthy: retried, then stored */
    fake.healthy = 1;
    fake.fail_next = 2;
    kh_batcher_submit(b, report("CCCCCCCCCCCCCCCCCCCCCCCCCC", "2026-11-24T06:00:01.5Z"), on_done,
                      &d);
    run_until(base, b, 2, &d);
    assert_int_equal(d.ok, 1);
    assert_int_equal(fake.fail_next, 0);
    kh_batcher_free(b);
    kh_config_cleanup(&cfg);
    /* the in-flight budget: the second report does not fit */
    b = new_batcher(base, &s, &cfg, "8", "0", "65536");
    struct done d2 = {.loop = pthread_self()};
    /* each report holds at least one 16 KiB arena chunk: 6 cannot all fit in 64 KiB */
    int accepted = 0, refused = 0;
    for (int i = 0; i < 6; i++) {
        char ts[64];
        snprintf(ts, sizeof(ts), "2026-11-24T06:00:0%d.5Z", i);
        struct kh_report *r = report("DDDDDDDDDDDDDDDDDDDDDDDDDD", ts);
        int rc = kh_batcher_submit(b, r, on_done, &d2);
        if (rc == 0)
            accepted++;
        else {
            assert_int_equal(rc, KH_ENOSPC);
            kh_report_free(r);
            refused++;
        }
    }
    assert_true(accepted >= 1);
    assert_true(refused >= 1);
    run_until(base, b, accepted, &d2);
    kh_batcher_free(b);
    kh_config_cleanup(&cfg);
    event_base_free(base);
}

static int setup(void **state)
{
    evthread_use_pthreads();
    return kh_schema_init();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sqlite_writes_are_idempotent),
        cmocka_unit_test(batcher_completes_each_report_once),
        cmocka_unit_test(batcher_failures_and_budget),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
