/*
 * Unit tests of src/pipeline/dedup.c: the content hash ignores the stats timestamp and
 * sees every member, the extra JSON, NULL against empty; an unchanged object is skipped
 * only after its batch-mate committed, a changed one (or one changed back) is stored; a
 * failed batch teaches the map nothing; a key held by a batch still out is stored by the
 * next batch, and in one batch a later report's by the earlier's; an older
 * (redelivered) report is stored, and one with another content makes the map forget; the
 * refresh stores again; the bound evicts the least recently used, a map of 0 bytes stores
 * everything; other tables are left alone; decisions wait for dispatch order.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "kh_test.h"

#include "core/errors.h"
#include "pipeline/dedup.h"
#include "sora/schema.h"

#define SEC 1000000LL

static int table_of(const char *type)
{
    int t = kh_schema_table_for(type, strlen(type), NULL, 0);
    assert_true(t >= 0);
    return t;
}

/* A row of `type` with every member NULL but one text member set to `text` (when any). */
static struct kh_row *row_new(struct kh_report *r, const char *type, const char *id,
                              const char *text)
{
    int t = table_of(type);
    size_t nm = kh_stats_tables[t].nmembers;
    struct kh_row *row = kh_arena_alloc(&r->arena, sizeof(*row));
    struct kh_value *vals = kh_arena_alloc(&r->arena, (nm ? nm : 1) * sizeof(*vals));
    assert_non_null(row);
    assert_non_null(vals);
    memset(row, 0, sizeof(*row));
    memset(vals, 0, (nm ? nm : 1) * sizeof(*vals));
    for (size_t m = 0; text && m < nm; m++)
        if (kh_stats_tables[t].members[m].type == KH_COL_TEXT) {
            vals[m] = (struct kh_value){.type = KH_COL_TEXT, .len = (uint32_t)strlen(text),
                                        .u.s = text};
            break;
        }
    *row = (struct kh_row){.table = t, .stats_type = {type, (uint32_t)strlen(type)},
                           .stats_id = {id, (uint32_t)strlen(id)}, .vals = vals,
                           .stats_timestamp = 1.0};
    kh_report_add_row(r, row);
    return row;
}

/* A connection report at `sec` with one codec row (content `codec`) and one inbound-rtp. */
static struct kh_report *report(const char *conn, int64_t sec, const char *codec)
{
    struct kh_report *r = kh_report_new(KH_REPORT_CONNECTION, 1 << 16);
    assert_non_null(r);
    r->connection_id = (struct kh_str){conn, (uint32_t)strlen(conn)};
    r->time_usec = sec * SEC;
    row_new(r, "codec", "C1", codec);
    row_new(r, "inbound-rtp", "I1", "x");
    return r;
}

struct batch {
    struct kh_report *reports[4];
    int results[4];
    struct kh_batch b;
};

static struct kh_batch *batch(struct batch *bt, struct kh_report *r1, struct kh_report *r2)
{
    memset(bt, 0, sizeof(*bt));
    bt->reports[0] = r1;
    bt->reports[1] = r2;
    bt->b = (struct kh_batch){.reports = bt->reports, .results = bt->results,
                              .nreports = r2 ? 2 : 1};
    return &bt->b;
}

static void batch_free(struct batch *bt)
{
    for (size_t i = 0; i < bt->b.nreports; i++)
        kh_report_free(bt->reports[i]);
}

static uint64_t seq;

/* One report through a batch that commits (or fails with rc): its codec row's decision. */
static int one(struct kh_dedup *d, const char *conn, int64_t sec, const char *codec, int rc)
{
    struct batch bt;
    struct kh_batch *b = batch(&bt, report(conn, sec, codec), NULL);
    kh_dedup_decide(d, seq, b);
    int got = bt.reports[0]->rows->dedup;
    assert_int_equal(bt.reports[0]->rows->next->dedup, KH_DEDUP_NONE); /* inbound-rtp */
    seq++;
    kh_dedup_settle(d, b, rc);
    batch_free(&bt);
    return got;
}

static void test_types(void **state)
{
    (void)state;
    assert_true(kh_dedup_table(table_of("codec")));
    assert_true(kh_dedup_table(table_of("certificate")));
    assert_true(kh_dedup_table(table_of("local-candidate")));
    assert_true(kh_dedup_table(table_of("remote-candidate")));
    const char *kept[] = {"inbound-rtp", "outbound-rtp", "remote-inbound-rtp", "transport",
                          "candidate-pair", "peer-connection", "data-channel"};
    for (size_t i = 0; i < sizeof(kept) / sizeof(kept[0]); i++)
        assert_false(kh_dedup_table(table_of(kept[i])));
    assert_false(kh_dedup_table(kh_table_quality_stream));
    assert_false(kh_dedup_table(-1));
}

static void test_hash(void **state)
{
    (void)state;
    uint8_t key[16] = {1, 2, 3};
    struct kh_report *r = kh_report_new(KH_REPORT_CONNECTION, 1 << 16);
    struct kh_row *a = row_new(r, "codec", "C1", "audio/opus");
    struct kh_row *b = row_new(r, "codec", "C1", "audio/opus");
    b->stats_timestamp = 12345.678; /* not content */
    uint64_t ha[2], hb[2];
    kh_dedup_row_hash(key, a, ha);
    kh_dedup_row_hash(key, b, hb);
    assert_true(ha[0] == hb[0] && ha[1] == hb[1]);
    /* every member counts: walk them, setting one at a time */
    size_t nm = kh_stats_tables[a->table].nmembers;
    for (size_t m = 0; m < nm; m++) {
        struct kh_value keep = b->vals[m];
        b->vals[m] = (struct kh_value){.type = KH_COL_INT, .u.i = 7};
        kh_dedup_row_hash(key, b, hb);
        assert_false(ha[0] == hb[0] && ha[1] == hb[1]);
        b->vals[m] = keep;
    }
    /* the extra JSON counts, and NULL is not the empty string */
    b->extra = (struct kh_str){"{\"x\":1}", 7};
    kh_dedup_row_hash(key, b, hb);
    assert_false(ha[0] == hb[0] && ha[1] == hb[1]);
    b->extra = (struct kh_str){"", 0};
    kh_dedup_row_hash(key, b, hb);
    assert_false(ha[0] == hb[0] && ha[1] == hb[1]);
    b->extra = (struct kh_str){NULL, 0};
    struct kh_row *c = row_new(r, "codec", "C1", "");
    kh_dedup_row_hash(key, c, hb);
    assert_false(ha[0] == hb[0] && ha[1] == hb[1]);
    /* the type counts (local and remote candidates share a table) */
    struct kh_row *l = row_new(r, "local-candidate", "X", "udp");
    struct kh_row *rc = row_new(r, "remote-candidate", "X", "udp");
    kh_dedup_row_hash(key, l, ha);
    kh_dedup_row_hash(key, rc, hb);
    assert_false(ha[0] == hb[0] && ha[1] == hb[1]);
    /* another key, another hash */
    uint8_t key2[16] = {1, 2, 4};
    kh_dedup_row_hash(key2, l, hb);
    assert_false(ha[0] == hb[0] && ha[1] == hb[1]);
    kh_report_free(r);
}

static void test_unchanged_skipped_changed_stored(void **state)
{
    (void)state;
    struct kh_dedup *d = kh_dedup_new(1 << 20, 3600 * SEC);
    seq = 0;
    assert_int_equal(one(d, "A", 10, "opus", 0), KH_DEDUP_STORED);
    assert_int_equal(one(d, "A", 20, "opus", 0), KH_DEDUP_SKIPPED);
    assert_int_equal(one(d, "A", 30, "opus", 0), KH_DEDUP_SKIPPED);
    assert_int_equal(one(d, "A", 40, "vp8", 0), KH_DEDUP_STORED);   /* changed */
    assert_int_equal(one(d, "A", 50, "opus", 0), KH_DEDUP_STORED);  /* changed back */
    assert_int_equal(one(d, "B", 50, "opus", 0), KH_DEDUP_STORED);  /* another connection */
    assert_int_equal(one(d, "A", 60, "opus", 0), KH_DEDUP_SKIPPED);
    struct kh_dedup_counts c;
    kh_dedup_counts(d, &c);
    assert_int_equal(c.skipped, 3);
    assert_int_equal(c.stored, 4);
    assert_int_equal(c.entries, 2);
    assert_int_equal(c.bytes, kh_dedup_entry_bytes((struct kh_str){"A", 1},
                                                   (struct kh_str){"C1", 2}) * 2);
    kh_dedup_free(d);
}

static void test_failed_batch_teaches_nothing(void **state)
{
    (void)state;
    struct kh_dedup *d = kh_dedup_new(1 << 20, 3600 * SEC);
    seq = 0;
    assert_int_equal(one(d, "A", 10, "opus", KH_ERETRY), KH_DEDUP_STORED);
    assert_int_equal(one(d, "A", 20, "opus", 0), KH_DEDUP_STORED); /* the first was lost */
    assert_int_equal(one(d, "A", 30, "vp8", KH_ERETRY), KH_DEDUP_STORED);
    assert_int_equal(one(d, "A", 40, "opus", 0), KH_DEDUP_SKIPPED); /* vp8 never stored */
    /* a rejected report's rows are not learnt; its batch-mate's are */
    struct batch bt;
    struct kh_batch *b = batch(&bt, report("A", 50, "h264"), report("B", 50, "h264"));
    kh_dedup_decide(d, seq, b);
    bt.results[0] = KH_EREJECT;
    seq++;
    kh_dedup_settle(d, b, KH_EREJECT);
    batch_free(&bt);
    assert_int_equal(one(d, "A", 60, "opus", 0), KH_DEDUP_SKIPPED);
    assert_int_equal(one(d, "B", 60, "h264", 0), KH_DEDUP_SKIPPED);
    kh_dedup_free(d);
}

static void test_key_held_by_a_batch_out(void **state)
{
    (void)state;
    struct kh_dedup *d = kh_dedup_new(1 << 20, 3600 * SEC);
    seq = 0;
    assert_int_equal(one(d, "A", 10, "opus", 0), KH_DEDUP_STORED);
    /* batch 1 (a change) and batch 2 (back to opus) out at once */
    struct batch b1, b2;
    struct kh_batch *k1 = batch(&b1, report("A", 20, "vp8"), NULL);
    struct kh_batch *k2 = batch(&b2, report("A", 30, "opus"), NULL);
    kh_dedup_decide(d, 1, k1);
    kh_dedup_decide(d, 2, k2);
    assert_int_equal(b1.reports[0]->rows->dedup, KH_DEDUP_STORED);
    assert_int_equal(b2.reports[0]->rows->dedup, KH_DEDUP_STORED); /* not skipped */
    kh_dedup_settle(d, k2, 0); /* settled out of order */
    kh_dedup_settle(d, k1, 0);
    batch_free(&b1);
    batch_free(&b2);
    seq = 3;
    assert_int_equal(one(d, "A", 40, "opus", 0), KH_DEDUP_SKIPPED); /* the newest: opus */
    kh_dedup_free(d);
}

/* Two reports of one connection in one batch: the later is not skipped against the
 * earlier, which a backend meeting bad data may refuse alone (store.h, KH_EREJECT). */
static void test_one_batch_two_reports(void **state)
{
    (void)state;
    struct kh_dedup *d = kh_dedup_new(1 << 20, 3600 * SEC);
    seq = 0;
    assert_int_equal(one(d, "A", 10, "opus", 0), KH_DEDUP_STORED);
    struct batch bt;
    struct kh_batch *b = batch(&bt, report("A", 20, "opus"), report("A", 30, "opus"));
    kh_dedup_decide(d, seq++, b);
    assert_int_equal(bt.reports[0]->rows->dedup, KH_DEDUP_SKIPPED); /* against what committed */
    assert_int_equal(bt.reports[1]->rows->dedup, KH_DEDUP_STORED);
    kh_dedup_settle(d, b, 0);
    batch_free(&bt);
    assert_int_equal(one(d, "A", 40, "opus", 0), KH_DEDUP_SKIPPED);
    /* a new object twice in one batch, the first report refused: the second was stored */
    b = batch(&bt, report("B", 10, "opus"), report("B", 20, "opus"));
    kh_dedup_decide(d, seq++, b);
    assert_int_equal(bt.reports[0]->rows->dedup, KH_DEDUP_STORED);
    assert_int_equal(bt.reports[1]->rows->dedup, KH_DEDUP_STORED);
    bt.results[0] = KH_EREJECT;
    kh_dedup_settle(d, b, KH_EREJECT);
    batch_free(&bt);
    assert_int_equal(one(d, "B", 30, "opus", 0), KH_DEDUP_SKIPPED); /* B@20 is stored */
    kh_dedup_free(d);
}

static void test_older_reports(void **state)
{
    (void)state;
    struct kh_dedup *d = kh_dedup_new(1 << 20, 3600 * SEC);
    seq = 0;
    assert_int_equal(one(d, "A", 10, "opus", 0), KH_DEDUP_STORED);
    assert_int_equal(one(d, "A", 20, "opus", 0), KH_DEDUP_SKIPPED);
    /* a redelivery of either is stored (the database keeps one copy) */
    assert_int_equal(one(d, "A", 20, "opus", 0), KH_DEDUP_STORED);
    assert_int_equal(one(d, "A", 10, "opus", 0), KH_DEDUP_STORED);
    struct kh_dedup_counts c;
    kh_dedup_counts(d, &c);
    assert_int_equal(c.late, 0);
    assert_int_equal(one(d, "A", 30, "opus", 0), KH_DEDUP_SKIPPED);
    /* a late report with another content: counted, and the next sample is stored */
    assert_int_equal(one(d, "A", 15, "vp8", 0), KH_DEDUP_STORED);
    kh_dedup_counts(d, &c);
    assert_int_equal(c.late, 1);
    assert_int_equal(one(d, "A", 40, "opus", 0), KH_DEDUP_STORED);
    assert_int_equal(one(d, "A", 50, "opus", 0), KH_DEDUP_SKIPPED);
    kh_dedup_free(d);
}

static void test_refresh(void **state)
{
    (void)state;
    struct kh_dedup *d = kh_dedup_new(1 << 20, 60 * SEC);
    seq = 0;
    assert_int_equal(one(d, "A", 0, "opus", 0), KH_DEDUP_STORED);
    assert_int_equal(one(d, "A", 30, "opus", 0), KH_DEDUP_SKIPPED);
    assert_int_equal(one(d, "A", 59, "opus", 0), KH_DEDUP_SKIPPED);
    assert_int_equal(one(d, "A", 60, "opus", 0), KH_DEDUP_STORED);
    assert_int_equal(one(d, "A", 100, "opus", 0), KH_DEDUP_SKIPPED);
    kh_dedup_free(d);
}

static void test_bound(void **state)
{
    (void)state;
    size_t one_entry = kh_dedup_entry_bytes((struct kh_str){"A", 1}, (struct kh_str){"C1", 2});
    struct kh_dedup *d = kh_dedup_new(one_entry * 2, 3600 * SEC);
    seq = 0;
    assert_int_equal(one(d, "A", 10, "opus", 0), KH_DEDUP_STORED);
    assert_int_equal(one(d, "B", 10, "opus", 0), KH_DEDUP_STORED);
    assert_int_equal(one(d, "A", 20, "opus", 0), KH_DEDUP_SKIPPED); /* A used last */
    assert_int_equal(one(d, "C", 10, "opus", 0), KH_DEDUP_STORED);  /* evicts B */
    struct kh_dedup_counts c;
    kh_dedup_counts(d, &c);
    assert_int_equal(c.evictions, 1);
    assert_int_equal(c.entries, 2);
    assert_true(c.bytes <= c.max_bytes);
    assert_int_equal(one(d, "B", 20, "opus", 0), KH_DEDUP_STORED); /* forgotten: stored */
    assert_int_equal(one(d, "B", 30, "opus", 0), KH_DEDUP_SKIPPED);
    kh_dedup_free(d);
    /* an entry a batch out counts on is not evicted: the next key goes unremembered */
    d = kh_dedup_new(one_entry, 3600 * SEC);
    struct batch bt;
    struct kh_batch *b = batch(&bt, report("A", 10, "opus"), NULL);
    kh_dedup_decide(d, 0, b);
    seq = 1;
    assert_int_equal(one(d, "B", 10, "opus", 0), KH_DEDUP_UNTRACKED);
    kh_dedup_settle(d, b, 0);
    batch_free(&bt);
    assert_int_equal(one(d, "A", 20, "opus", 0), KH_DEDUP_SKIPPED);
    kh_dedup_free(d);
    /* 0 bytes: every sample is stored */
    d = kh_dedup_new(0, 3600 * SEC);
    seq = 0;
    for (int i = 1; i <= 3; i++)
        assert_int_equal(one(d, "A", i, "opus", 0), KH_DEDUP_UNTRACKED);
    kh_dedup_counts(d, &c);
    assert_int_equal(c.skipped, 0);
    assert_int_equal(c.entries, 0);
    kh_dedup_free(d);
}

static void test_many_keys(void **state)
{
    (void)state;
    struct kh_dedup *d = kh_dedup_new(64 << 20, 3600 * SEC);
    seq = 0;
    char ids[5000][16];
    for (int i = 0; i < 5000; i++) {
        snprintf(ids[i], sizeof(ids[i]), "conn%d", i);
        assert_int_equal(one(d, ids[i], 10, "opus", 0), KH_DEDUP_STORED);
    }
    for (int i = 0; i < 5000; i++)
        assert_int_equal(one(d, ids[i], 20, "opus", 0), KH_DEDUP_SKIPPED);
    kh_dedup_free(d);
}

struct later {
    struct kh_dedup *d;
    struct kh_batch *b;
    volatile int done;
};

static void *decide_later(void *arg)
{
    struct later *l = arg;
    kh_dedup_decide(l->d, 1, l->b);
    l->done = 1;
    return NULL;
}

static void test_dispatch_order(void **state)
{
    (void)state;
    struct kh_dedup *d = kh_dedup_new(1 << 20, 3600 * SEC);
    struct batch b0, b1;
    struct later l = {d, batch(&b1, report("A", 20, "opus"), NULL), 0};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, decide_later, &l), 0);
    struct timespec ts = {0, 50 * 1000 * 1000};
    nanosleep(&ts, NULL);
    assert_int_equal(l.done, 0); /* batch 1 waits for batch 0 */
    struct kh_batch *k0 = batch(&b0, report("A", 10, "opus"), NULL);
    kh_dedup_decide(d, 0, k0);
    pthread_join(th, NULL);
    assert_int_equal(l.done, 1);
    assert_int_equal(b0.reports[0]->rows->dedup, KH_DEDUP_STORED);
    assert_int_equal(b1.reports[0]->rows->dedup, KH_DEDUP_STORED); /* 0 was out */
    kh_dedup_settle(d, k0, 0);
    kh_dedup_settle(d, l.b, 0);
    batch_free(&b0);
    batch_free(&b1);
    kh_dedup_free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_types),
        cmocka_unit_test(test_hash),
        cmocka_unit_test(test_unchanged_skipped_changed_stored),
        cmocka_unit_test(test_failed_batch_teaches_nothing),
        cmocka_unit_test(test_key_held_by_a_batch_out),
        cmocka_unit_test(test_one_batch_two_reports),
        cmocka_unit_test(test_older_reports),
        cmocka_unit_test(test_refresh),
        cmocka_unit_test(test_bound),
        cmocka_unit_test(test_many_keys),
        cmocka_unit_test(test_dispatch_order),
    };
    return cmocka_run_group_tests(tests, kht_schema_setup, kht_schema_teardown);
}
