/*
 * Unit tests of src/pipeline/quality.c with a fake backend whose `latest` answers from the
 * reports "stored" before (the quality rows of earlier batches, kept here): the batch's
 * reports are rated in (connection, time) order whatever order they came in, the first of a
 * connection after the database's latest report and the next ones after the one before
 * them in the batch; one query per connection; a redelivered report gets no rows; a retried
 * write does not rate a report twice; KH_ERETRY from the read holds the batch back while a
 * refused read (KH_EIO) rates it without history. Also the settings from the config: the
 * keys are the detectors' names, their defaults the detectors', a bad threshold on the good
 * side of its warning is refused with the key named. With the cache of the latest rows: it
 * stands in without a read when the store says nobody else wrote, after a read of the times
 * when it cannot say, and a later report of another instance in the database wins over it;
 * the rows come out the same as from the database.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/config.h"
#include "core/errors.h"
#include "kh_test.h"
#include "pipeline/quality.h"
#include "quality/assess.h"
#include "sora/schema.h"

/* --- the fake backend: "stored" reports and what latest answers --------------------------- */

#define MAX_STORED 64

static struct {
    struct kh_report *stored[MAX_STORED]; /* reports whose quality rows are "in the database" */
    size_t nstored;
    int latest_calls;
    size_t last_n;       /* queries in the last call */
    size_t last_ntables; /* tables asked for in the last call (0: the times only) */
    int times_calls;     /* calls for the times only */
    int fail;            /* what latest returns (0: answers) */
    bool others;         /* what others_wrote says */
} fake;

static struct kh_row *copy_row(struct kh_arena *a, const struct kh_row *src)
{
    struct kh_row *row = kh_arena_alloc(a, sizeof(*row));
    size_t n = kh_stats_tables[src->table].nmembers;
    struct kh_value *vals = kh_arena_alloc(a, n * sizeof(*vals));
    assert_non_null(row);
    assert_non_null(vals);
    memcpy(vals, src->vals, n * sizeof(*vals)); /* strings stay the stored report's */
    *row = *src;
    row->vals = vals;
    row->next = NULL;
    return row;
}

static int fake_latest(struct kh_store *s, int slot, struct kh_latest_query *q,
                       const char **err)
{
    fake.latest_calls++;
    fake.last_n = q->n;
    fake.last_ntables = q->ntables;
    fake.times_calls += q->ntables == 0;
    if (fake.fail) {
        *err = "fake: no";
        return fake.fail;
    }
    for (size_t i = 0; i < q->n; i++) {
        q->found_usec[i] = 0;
        q->rows[i] = NULL;
        const struct kh_report *best = NULL;
        for (size_t k = 0; k < fake.nstored; k++) {
            const struct kh_report *r = fake.stored[k];
            if (r->connection_id.len == q->connection_ids[i].len &&
                memcmp(r->connection_id.p, q->connection_ids[i].p, r->connection_id.len) == 0 &&
                r->time_usec < q->before_usec[i] &&
                r->time_usec >= kh_latest_after(q, i) &&
                (best == NULL || r->time_usec > best->time_usec))
                best = r;
        }
        if (best == NULL)
            continue;
        q->found_usec[i] = best->time_usec;
        if (q->ntables == 0)
            continue;
        struct kh_row **tail = &q->rows[i];
        for (const struct kh_row *row = best->rows; row; row = row->next)
            if (kh_stats_tables[row->table].computed) {
                *tail = copy_row(q->arena, row);
                tail = &(*tail)->next;
            }
    }
    return 0;
}

static bool fake_others_wrote(struct kh_store *s, int slot)
{
    (void)s;
    (void)slot;
    return fake.others;
}

static const struct kh_store_ops fake_ops = {
    .name = "fake", .latest = fake_latest, .others_wrote = fake_others_wrote};
static struct kh_store store = {.ops = &fake_ops};

/* --- reports ------------------------------------------------------------------------------ */

static struct kh_report *report(const char *conn, int t)
{
    char path[512], when[64], cid[64];
    snprintf(path, sizeof(path), "%s/chromium-loss3-receiver-t%02d.json", KH_IMPAIRED_DIR, t);
    char *stats = kht_read_file(path, NULL);
    snprintf(when, sizeof(when), "\"2026-12-01T10:00:%02d.000Z\"", t);
    /* a Sora id: 26 characters, here the letter repeated */
    snprintf(cid, sizeof(cid), "\"%.26s\"", "");
    memset(cid + 1, conn[0], 26);
    cid[27] = '"';
    cid[28] = '\0';
    /* the base envelope with this connection id, and this timestamp */
    struct kht_kv base[32];
    size_t n = 0;
    for (const struct kht_kv *p = kht_conn_base; p->key; p++) {
        base[n] = *p;
        if (strcmp(p->key, "connection_id") == 0)
            base[n].value = cid;
        n++;
    }
    base[n] = (struct kht_kv){NULL, NULL};
    char *body = kht_build(base, stats, "timestamp", when);
    struct kh_report *r = NULL;
    char err[256];
    if (kht_parse(body, &r, err, sizeof(err)) != 0)
        fail_msg("%s", err);
    free(body);
    free(stats);
    return r;
}

static size_t quality_rows(const struct kh_report *r)
{
    return r->table_rows[kh_table_quality_stream] + r->table_rows[kh_table_quality_connection];
}

static bool since_start(const struct kh_report *r)
{
    for (const struct kh_row *row = r->rows; row; row = row->next)
        if (row->table == kh_table_quality_connection)
            return kht_val(row, "sinceStart")->u.b;
    fail_msg("no quality_connection row");
    return false;
}

static struct kh_quality_stage *stage, *cached; /* without a cache, with one */
static struct kh_quality_settings cached_set;

static int setup(void **state)
{
    (void)state;
    assert_int_equal(kh_schema_init(), 0);
    assert_int_equal(kh_q_init(), 0);
    struct kh_quality_settings set;
    kh_q_thresholds_default(&set.th);
    set.max_gap_usec = 300 * 1000000LL;
    set.cache_bytes = 0;
    stage = kh_quality_stage_new(&store, 2, &set);
    set.cache_bytes = 1u << 20;
    cached_set = set;
    cached = kh_quality_stage_new(&store, 2, &set);
    return stage && cached ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    kh_quality_stage_free(stage);
    kh_quality_stage_free(cached);
    kh_schema_cleanup();
    return 0;
}

static int reset(void **state)
{
    (void)state;
    for (size_t i = 0; i < fake.nstored; i++)
        kh_report_free(fake.stored[i]);
    memset(&fake, 0, sizeof(fake));
    kh_quality_stage_free(cached); /* a cache and counters of its own for each test */
    cached = kh_quality_stage_new(&store, 2, &cached_set);
    assert_non_null(cached);
    return 0;
}

static void run_on(struct kh_quality_stage *st, struct kh_report **reports, size_t n,
                   int want)
{
    int results[16] = {0};
    struct kh_batch b = {.reports = reports, .results = results, .nreports = n};
    const char *err = NULL;
    assert_int_equal(kh_quality_stage_run(st, 1, &b, &err), want);
}

static void run(struct kh_report **reports, size_t n, int want) { run_on(stage, reports, n, want); }

/* Rated by st, "committed" (the fake database has it) and st's after step. */
static void store_on(struct kh_quality_stage *st, struct kh_report *r)
{
    run_on(st, &r, 1, 0);
    int results[1] = {0};
    struct kh_batch b = {.reports = &r, .results = results, .nreports = 1};
    kh_quality_stage_after(st, 1, &b, 0);
    fake.stored[fake.nstored++] = r;
}

/* The two reports' quality rows hold the same values. */
static void assert_same_quality(const struct kh_report *a, const struct kh_report *b)
{
    const struct kh_row *x = a->rows, *y = b->rows;
    size_t n = 0;
    for (;; x = x->next, y = y->next) {
        while (x && !kh_stats_tables[x->table].computed)
            x = x->next;
        while (y && !kh_stats_tables[y->table].computed)
            y = y->next;
        if (x == NULL || y == NULL)
            break;
        assert_int_equal(x->table, y->table);
        for (size_t m = 0; m < kh_stats_tables[x->table].nmembers; m++) {
            const struct kh_value *u = &x->vals[m], *v = &y->vals[m];
            assert_int_equal(u->type, v->type);
            if (u->type == KH_COL_TEXT || u->type == KH_COL_JSON)
                assert_memory_equal(u->u.s, v->u.s, u->len);
            else if (u->type == KH_COL_REAL)
                assert_true(u->u.d == v->u.d || (isnan(u->u.d) && isnan(v->u.d)));
            else if (u->type)
                assert_int_equal(u->u.i, v->u.i);
        }
        n++;
    }
    assert_null(x);
    assert_null(y);
    assert_int_equal(n, 3);
}

static bool metric_is(struct kh_quality_stage *st, const char *line)
{
    struct kh_buf b;
    kh_buf_init(&b, 1u << 20);
    assert_int_equal(kh_quality_stage_render(st, &b), 0);
    assert_int_equal(kh_buf_append(&b, "", 1), 0);
    bool found = strstr(b.data, line) != NULL;
    kh_buf_cleanup(&b);
    return found;
}

/* The batch's order does not matter: t04 follows t02 of the same batch, and t02 follows
 * the stored t00 (none: since start). One query per connection. */
static void test_batch_order_and_chain(void **state)
{
    struct kh_report *r[3] = {report("A", 6), report("A", 2), report("A", 4)};
    run(r, 3, 0);
    assert_int_equal(fake.latest_calls, 1);
    assert_int_equal(fake.last_n, 1);
    assert_true(since_start(r[1]));
    assert_false(since_start(r[2]));
    assert_false(since_start(r[0]));
    for (int i = 0; i < 3; i++) {
        assert_true(r[i]->assessed);
        assert_int_equal(quality_rows(r[i]), 3); /* two streams and the connection */
        kh_report_free(r[i]);
    }
}

/* The first report of a connection follows the database's latest report before it. */
static void test_follows_the_database(void **state)
{
    struct kh_report *first = report("B", 2);
    run(&first, 1, 0);
    fake.stored[fake.nstored++] = first;
    struct kh_report *r[2] = {report("B", 4), report("C", 4)};
    run(r, 2, 0);
    assert_int_equal(fake.last_n, 2);
    assert_false(since_start(r[0])); /* B after the stored t02 */
    assert_true(since_start(r[1]));  /* C has nothing before it */
    kh_report_free(r[0]);
    kh_report_free(r[1]);
}

static void test_redelivery_gets_no_rows(void **state)
{
    struct kh_report *r[2] = {report("D", 2), report("D", 2)};
    run(r, 2, 0);
    assert_int_equal(quality_rows(r[0]), 3);
    assert_int_equal(quality_rows(r[1]), 0);
    assert_true(r[1]->assessed);
    kh_report_free(r[0]);
    kh_report_free(r[1]);
}

static void test_retried_write_rates_once(void **state)
{
    struct kh_report *r = report("E", 2);
    run(&r, 1, 0);
    size_t rows = r->nrows;
    run(&r, 1, 0);
    assert_int_equal(r->nrows, rows);
    assert_int_equal(fake.latest_calls, 1); /* nothing left to rate: no read */
    kh_report_free(r);
}

static void test_read_failures(void **state)
{
    struct kh_report *first = report("F", 2);
    run(&first, 1, 0);
    fake.stored[fake.nstored++] = first;
    struct kh_report *r = report("F", 4);
    fake.fail = KH_ERETRY; /* the database is away: the batch waits, nothing rated */
    run(&r, 1, KH_ERETRY);
    assert_false(r->assessed);
    assert_int_equal(quality_rows(r), 0);
    fake.fail = KH_EIO; /* it refused the read: rated without history */
    run(&r, 1, 0);
    assert_true(r->assessed);
    assert_true(since_start(r));
    uint64_t assessed, skipped;
    kh_quality_stage_counts(stage, &assessed, &skipped);
    assert_true(assessed >= 2);
    kh_report_free(r);
}

/* Nobody else wrote (the store says so): a report read from the database is checked once
 * (is it the latest of all?), the next one stands in without any read, and the rows are
 * those the database's copy gives. */
static void test_cache_stands_in_without_a_read(void **state)
{
    store_on(cached, report("G", 2)); /* nothing before it: the database is asked */
    int calls = fake.latest_calls;
    store_on(cached, report("G", 4)); /* t02 came from a miss: checked, then trusted */
    assert_int_equal(fake.latest_calls, calls + 1);
    assert_int_equal(fake.last_ntables, 0);
    calls = fake.latest_calls;
    struct kh_report *r = report("G", 6), *ref = report("G", 6);
    run_on(cached, &r, 1, 0);
    assert_int_equal(fake.latest_calls, calls); /* t04 stands in: no read */
    assert_false(since_start(r));
    run(&ref, 1, 0); /* the uncached stage reads the fake database */
    assert_int_equal(fake.latest_calls, calls + 1);
    assert_same_quality(r, ref);
    assert_true(metric_is(cached, "kohaku_quality_previous_total{from=\"cache\"} 1\n"));
    assert_true(metric_is(cached, "kohaku_quality_previous_total{from=\"cache_checked\"} 1\n"));
    assert_true(metric_is(cached, "kohaku_quality_cache_entries 1\n"));
    kh_report_free(r);
    kh_report_free(ref);
}

/* A late report (older than the cached one) is rated after the database's and does not
 * replace the cached latest: the next report follows the latest. */
static void test_cache_keeps_the_latest_of_late_reports(void **state)
{
    store_on(cached, report("K", 2));
    store_on(cached, report("K", 6));
    store_on(cached, report("K", 4)); /* late: read from the database (t02 before it) */
    assert_int_equal(fake.last_ntables, 2);
    int calls = fake.latest_calls;
    struct kh_report *r = report("K", 8), *ref = report("K", 8);
    run_on(cached, &r, 1, 0);
    assert_int_equal(fake.latest_calls, calls);
    run(&ref, 1, 0);
    assert_same_quality(r, ref); /* after t06, not t04 */
    kh_report_free(r);
    kh_report_free(ref);
}

/* The store cannot tell: one read of the times confirms the cached report; no rows read. */
static void test_cache_checked_by_the_times(void **state)
{
    fake.others = true;
    store_on(cached, report("H", 2));
    int calls = fake.latest_calls, times = fake.times_calls;
    struct kh_report *r = report("H", 4), *ref = report("H", 4);
    run_on(cached, &r, 1, 0);
    assert_int_equal(fake.latest_calls, calls + 1);
    assert_int_equal(fake.times_calls, times + 1);
    assert_int_equal(fake.last_ntables, 0);
    run(&ref, 1, 0);
    assert_same_quality(r, ref);
    assert_true(metric_is(cached, "kohaku_quality_previous_total{from=\"cache_checked\"} 1\n"));
    kh_report_free(r);
    kh_report_free(ref);
}

/* Another instance stored a later report of the connection: the cached one is stale, the
 * database's is read and followed, as without a cache. */
static void test_cache_stale_after_another_instance(void **state)
{
    fake.others = true;
    store_on(cached, report("I", 2));
    store_on(stage, report("I", 4)); /* "another instance": not in the cache */
    struct kh_report *r = report("I", 6), *ref = report("I", 6);
    run_on(cached, &r, 1, 0);
    assert_int_equal(fake.last_ntables, 2); /* the rows, after the times */
    run(&ref, 1, 0);
    assert_same_quality(r, ref);
    assert_true(metric_is(cached, "kohaku_quality_previous_total{from=\"cache_stale\"} 1\n"));
    kh_report_free(r);
    kh_report_free(ref);
}

/* A report older than the cached one (out of order) or past quality_max_gap is not stood in
 * for: the database answers. */
static void test_cache_not_for_older_reports(void **state)
{
    store_on(cached, report("J", 6));
    int calls = fake.latest_calls;
    struct kh_report *r = report("J", 4);
    run_on(cached, &r, 1, 0);
    assert_int_equal(fake.latest_calls, calls + 1);
    assert_int_equal(fake.last_ntables, 2);
    assert_true(since_start(r)); /* nothing before t04 */
    kh_report_free(r);
}

/* Node reports are not rated. */
static void test_node_reports_left_alone(void **state)
{
    char *body = kht_build(kht_node_base, "[{\"type\":\"erlang-vm-memory\",\"total\":1}]",
                           NULL, NULL);
    struct kh_report *r = NULL;
    char err[256];
    assert_int_equal(kht_parse_ex(body, strlen(body), 0, KH_REPORT_NODE, KH_FLAVOR_EXPORTER,
                                  NULL, &r, err, sizeof(err)),
                     0);
    free(body);
    run(&r, 1, 0);
    assert_int_equal(fake.latest_calls, 0);
    assert_int_equal(quality_rows(r), 0);
    kh_report_free(r);
}

/* --- settings ------------------------------------------------------------------------------ */

static void test_settings_defaults_are_the_detectors(void **state)
{
    struct kh_config cfg;
    assert_int_equal(kh_config_init(&cfg), 0);
    struct kh_quality_settings set;
    const char *err = NULL;
    assert_int_equal(kh_quality_settings_from(&cfg, &set, &err), 0);
    struct kh_q_thresholds def;
    kh_q_thresholds_default(&def);
    for (int i = 0; i < KH_QI_COUNT; i++) {
        assert_true(set.th.warning[i] == def.warning[i]);
        assert_true(set.th.bad[i] == def.bad[i]);
    }
    assert_true(set.th.bandwidth_headroom == def.bandwidth_headroom);
    assert_int_equal(set.max_gap_usec, 300 * 1000000LL);
    kh_config_cleanup(&cfg);
}

/* Each detector with thresholds has its two keys, and they land on that detector. */
static void test_settings_keys_are_the_detectors_names(void **state)
{
    for (int i = 0; i < KH_QI_COUNT; i++) {
        const struct kh_q_detector *d = &kh_q_detectors[i];
        struct kh_config cfg;
        assert_int_equal(kh_config_init(&cfg), 0);
        char key[96];
        const char *err = NULL;
        snprintf(key, sizeof(key), "quality_%s_warning", d->name);
        int rc = kh_config_set(&cfg, key, d->lower_is_worse ? "41" : "0.5", &err);
        if (d->flag) {
            assert_int_equal(rc, KH_EINVAL); /* a flag has no threshold */
            kh_config_cleanup(&cfg);
            continue;
        }
        assert_int_equal(rc, 0);
        snprintf(key, sizeof(key), "quality_%s_bad", d->name);
        assert_int_equal(kh_config_set(&cfg, key, d->lower_is_worse ? "40.5" : "0.75", &err),
                         0);
        struct kh_quality_settings set;
        assert_int_equal(kh_quality_settings_from(&cfg, &set, &err), 0);
        assert_true(set.th.warning[i] == (d->lower_is_worse ? 41 : 0.5));
        assert_true(set.th.bad[i] == (d->lower_is_worse ? 40.5 : 0.75));
        kh_config_cleanup(&cfg);
    }
}

static void test_settings_refuse_inverted_thresholds(void **state)
{
    struct kh_config cfg;
    assert_int_equal(kh_config_init(&cfg), 0);
    const char *err = NULL;
    assert_int_equal(kh_config_set(&cfg, "quality_high_loss_bad", "1", &err), 0);
    struct kh_quality_settings set;
    assert_int_equal(kh_quality_settings_from(&cfg, &set, &err), KH_EINVAL);
    kht_assert_prefix(err, "quality_high_loss_bad: 1 is on the good side of "
                           "quality_high_loss_warning (2)");
    /* lower is worse: a bad above the warning is refused */
    assert_int_equal(kh_config_set(&cfg, "quality_high_loss_bad", "10", &err), 0);
    assert_int_equal(kh_config_set(&cfg, "quality_low_frame_rate_bad", "80", &err), 0);
    assert_int_equal(kh_quality_settings_from(&cfg, &set, &err), KH_EINVAL);
    kht_assert_prefix(err, "quality_low_frame_rate_bad: 80");
    assert_non_null(strstr(err, "lower is worse"));
    assert_int_equal(kh_config_set(&cfg, "quality_high_rtt_warning", "fast", &err), KH_EINVAL);
    kht_assert_prefix(err, "quality_high_rtt_warning: must be a number");
    kh_config_cleanup(&cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_batch_order_and_chain, reset),
        cmocka_unit_test_teardown(test_follows_the_database, reset),
        cmocka_unit_test_teardown(test_redelivery_gets_no_rows, reset),
        cmocka_unit_test_teardown(test_retried_write_rates_once, reset),
        cmocka_unit_test_teardown(test_read_failures, reset),
        cmocka_unit_test_teardown(test_node_reports_left_alone, reset),
        cmocka_unit_test_teardown(test_cache_stands_in_without_a_read, reset),
        cmocka_unit_test_teardown(test_cache_checked_by_the_times, reset),
        cmocka_unit_test_teardown(test_cache_keeps_the_latest_of_late_reports, reset),
        cmocka_unit_test_teardown(test_cache_stale_after_another_instance, reset),
        cmocka_unit_test_teardown(test_cache_not_for_older_reports, reset),
        cmocka_unit_test(test_settings_defaults_are_the_detectors),
        cmocka_unit_test(test_settings_keys_are_the_detectors_names),
        cmocka_unit_test(test_settings_refuse_inverted_thresholds),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
