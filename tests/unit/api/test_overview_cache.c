/*
 * Unit tests of src/api/overview_cache.c: which buckets of a range have settled (whole
 * buckets only, the first one inside the range, those that ended a quarter of the hold, at
 * most 5 s, ago);
 * the cache reads only the buckets it lacks, keeps its rows between calls and drops the
 * buckets before a later range's; it starts again when the width changes, when a range
 * leaves a gap after what it holds or starts before it, and once it is `hold` old; it copies
 * node names; past its row bound it refuses a row, and once refused it is not used for a
 * hold; off (hold 0) or NULL it settles nothing; a report stored late makes it drop the
 * buckets from the one it falls into on. The live part counts each connection once per bucket
 * with its worst severity, merges an answer's newer rows without keeping them, settles the
 * buckets that ended, drops from a late report's bucket, and grows its table.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "api/overview_cache.h"
#include "core/errors.h"

#define S 1000000LL /* a second in µs */

static void settles_whole_buckets_ended_a_hold_ago(void **state)
{
    (void)state;
    struct kh_ov_cache *c = kh_ov_cache_new(60 * S);
    assert_non_null(c);
    int64_t lo, hi;
    /* range [1005 s, 2000 s), now 2000 s, buckets of 10 s: those of 1010 s to 1980 s (the
     * bucket of 1980 s ended at 1990 s, 10 s before now, more than the 5 s a bucket takes
     * to settle with this hold; the one of 1990 s has not ended) */
    kh_ov_settled(c, 10 * S, 1005 * S, 2000 * S, 2000 * S, &lo, &hi);
    assert_int_equal(lo, 1010 * S);
    assert_int_equal(hi, 1990 * S);
    /* the bucket of 1980 s 4 s after its end, and 6 s after */
    kh_ov_settled(c, 10 * S, 1005 * S, 1994 * S, 1994 * S, &lo, &hi);
    assert_int_equal(hi, 1980 * S);
    kh_ov_settled(c, 10 * S, 1005 * S, 1996 * S, 1996 * S, &lo, &hi);
    assert_int_equal(hi, 1990 * S);
    /* an aligned start is its own first whole bucket */
    kh_ov_settled(c, 10 * S, 1000 * S, 2000 * S, 2000 * S, &lo, &hi);
    assert_int_equal(lo, 1000 * S);
    /* a range that ended long ago: settled up to its end's bucket */
    kh_ov_settled(c, 10 * S, 1000 * S, 1505 * S, 9000 * S, &lo, &hi);
    assert_int_equal(hi, 1500 * S);
    /* a range of the last 15 s: nothing has settled */
    kh_ov_settled(c, 10 * S, 1985 * S, 2000 * S, 2000 * S, &lo, &hi);
    assert_true(lo >= hi);
    kh_ov_cache_free(c);
    /* a short hold: a quarter of it (2 s of 8 s), not 5 s */
    struct kh_ov_cache *brief = kh_ov_cache_new(8 * S);
    assert_non_null(brief);
    kh_ov_settled(brief, 10 * S, 1005 * S, 1993 * S, 1993 * S, &lo, &hi);
    assert_int_equal(hi, 1990 * S);
    kh_ov_settled(brief, 10 * S, 1005 * S, 1991 * S, 1991 * S, &lo, &hi);
    assert_int_equal(hi, 1980 * S);
    kh_ov_cache_free(brief);
    /* off, or no cache */
    struct kh_ov_cache *off = kh_ov_cache_new(0);
    kh_ov_settled(off, 10 * S, 1005 * S, 2000 * S, 2000 * S, &lo, &hi);
    assert_true(lo >= hi);
    kh_ov_cache_free(off);
    kh_ov_settled(NULL, 10 * S, 1005 * S, 2000 * S, 2000 * S, &lo, &hi);
    assert_true(lo >= hi);
}

static size_t count_in(const struct kh_ov_cache *c, int64_t lo, int64_t hi)
{
    size_t n, k = 0;
    const struct kh_ov_row *r = kh_ov_cache_rows(c, &n);
    for (size_t i = 0; i < n; i++)
        k += r[i].bucket >= lo && r[i].bucket < hi;
    return k;
}

/* Adds a reports row and a node's row for each bucket of [lo, hi). */
static void fill(struct kh_ov_cache *c, int64_t lo, int64_t hi, int64_t width)
{
    char node[32];
    for (int64_t b = lo; b < hi; b += width) {
        struct kh_ov_row rep = {b, NULL, {(double)(b / S), 0, 0}};
        snprintf(node, sizeof(node), "sora@%lld", (long long)(b / S));
        struct kh_ov_row nd = {b, node, {3, 2, 1}};
        assert_int_equal(kh_ov_cache_add(c, &rep), 0);
        assert_int_equal(kh_ov_cache_add(c, &nd), 0);
    }
}

static void reads_only_what_it_lacks(void **state)
{
    (void)state;
    int64_t w = 10 * S, mono = 5 * S;
    struct kh_ov_cache *c = kh_ov_cache_new(60 * S);
    /* first call: holds nothing, reads all of [1000, 1500) */
    int64_t need = 0;
    assert_true(kh_ov_cache_begin(c, w, 1000 * S, 1500 * S, mono, &need));
    assert_int_equal(need, 1000 * S);
    fill(c, need, 1500 * S, w);
    kh_ov_cache_end(c, 1500 * S);
    assert_int_equal(count_in(c, 1000 * S, 1500 * S), 100);
    /* 20 s later the range moved on by 20 s: the two new buckets only, the two first gone */
    assert_true(kh_ov_cache_begin(c, w, 1020 * S, 1520 * S, mono + 20 * S, &need));
    assert_int_equal(need, 1500 * S);
    assert_int_equal(count_in(c, 0, 1020 * S), 0);
    assert_int_equal(count_in(c, 1020 * S, 1500 * S), 96);
    fill(c, need, 1520 * S, w);
    kh_ov_cache_end(c, 1520 * S);
    assert_int_equal(count_in(c, 1020 * S, 1520 * S), 100);
    /* the names are the cache's own copies */
    size_t n;
    const struct kh_ov_row *r = kh_ov_cache_rows(c, &n);
    int named = 0;
    for (size_t i = 0; i < n; i++)
        if (r[i].node && r[i].bucket == 1500 * S) {
            assert_string_equal(r[i].node, "sora@1500");
            assert_true(r[i].n[0] == 3 && r[i].n[1] == 2 && r[i].n[2] == 1);
            named++;
        }
    assert_int_equal(named, 1);
    /* a range that ends before what it holds: nothing to read */
    assert_true(kh_ov_cache_begin(c, w, 1020 * S, 1400 * S, mono + 21 * S, &need));
    assert_int_equal(need, 1400 * S);
    kh_ov_cache_free(c);
}

static void starts_again(void **state)
{
    (void)state;
    int64_t w = 10 * S, mono = 5 * S, need = 0;
    struct kh_ov_cache *c = kh_ov_cache_new(60 * S);
    assert_true(kh_ov_cache_begin(c, w, 1000 * S, 1500 * S, mono, &need));
    fill(c, 1000 * S, 1500 * S, w);
    kh_ov_cache_end(c, 1500 * S);
    /* another width (another range length) */
    assert_true(kh_ov_cache_begin(c, 20 * S, 1000 * S, 1500 * S, mono, &need));
    assert_int_equal(need, 1000 * S);
    size_t n;
    kh_ov_cache_rows(c, &n);
    assert_int_equal(n, 0);
    fill(c, 1000 * S, 1500 * S, 20 * S);
    kh_ov_cache_end(c, 1500 * S);
    /* a range that starts after what it holds ends (a gap) */
    assert_true(kh_ov_cache_begin(c, 20 * S, 1600 * S, 1800 * S, mono, &need));
    assert_int_equal(need, 1600 * S);
    fill(c, 1600 * S, 1800 * S, 20 * S);
    kh_ov_cache_end(c, 1800 * S);
    /* a range that starts before it */
    assert_true(kh_ov_cache_begin(c, 20 * S, 1500 * S, 1800 * S, mono, &need));
    assert_int_equal(need, 1500 * S);
    kh_ov_cache_rows(c, &n);
    assert_int_equal(n, 0);
    fill(c, 1500 * S, 1800 * S, 20 * S);
    kh_ov_cache_end(c, 1800 * S);
    /* a hold later, everything is read again (rows stored late into old buckets show) */
    assert_true(kh_ov_cache_begin(c, 20 * S, 1500 * S, 1800 * S, mono + 59 * S, &need));
    assert_int_equal(need, 1800 * S);
    assert_true(kh_ov_cache_begin(c, 20 * S, 1500 * S, 1800 * S, mono + 60 * S, &need));
    assert_int_equal(need, 1500 * S);
    kh_ov_cache_rows(c, &n);
    assert_int_equal(n, 0);
    /* reset forgets */
    fill(c, 1500 * S, 1800 * S, 20 * S);
    kh_ov_cache_end(c, 1800 * S);
    kh_ov_cache_reset(c);
    assert_true(kh_ov_cache_begin(c, 20 * S, 1500 * S, 1800 * S, mono + 61 * S, &need));
    assert_int_equal(need, 1500 * S);
    kh_ov_cache_free(c);
}

static void bounded(void **state)
{
    (void)state;
    struct kh_ov_cache *c = kh_ov_cache_new(60 * S);
    int64_t need = 0;
    assert_true(kh_ov_cache_begin(c, S, 0, 1000000 * S, 1, &need));
    struct kh_ov_row r = {0, "sora@x", {1, 0, 0}};
    int rc = 0;
    size_t added = 0;
    while ((rc = kh_ov_cache_add(c, &r)) == 0 && added < 1000000) {
        added++;
        r.bucket += S;
    }
    assert_int_equal(rc, KH_ENOSPC);
    assert_true(added >= 10000 && added < 1000000);
    /* refused: nothing held, and not used for a hold */
    kh_ov_cache_refused(c, 10 * S);
    size_t n;
    kh_ov_cache_rows(c, &n);
    assert_int_equal(n, 0);
    assert_false(kh_ov_cache_begin(c, S, 0, 1000 * S, 69 * S, &need));
    assert_true(kh_ov_cache_begin(c, S, 0, 1000 * S, 70 * S, &need));
    assert_int_equal(need, 0);
    kh_ov_cache_free(c);
}

static void reads_again_from_a_late_report(void **state)
{
    (void)state;
    int64_t w = 10 * S, mono = 5 * S, need = 0;
    struct kh_ov_cache *c = kh_ov_cache_new(600 * S);
    assert_true(kh_ov_cache_begin(c, w, 1000 * S, 1500 * S, mono, &need));
    fill(c, 1000 * S, 1500 * S, w);
    kh_ov_cache_end(c, 1500 * S);
    /* none stored, or only after what it holds: all stays */
    kh_ov_cache_stored(c, INT64_MAX);
    kh_ov_cache_stored(c, 1500 * S);
    kh_ov_cache_stored(NULL, 1000 * S);
    assert_true(kh_ov_cache_begin(c, w, 1000 * S, 1500 * S, mono + S, &need));
    assert_int_equal(need, 1500 * S);
    /* a report of 1234.5 s: the buckets from 1230 s on go, those before stay */
    kh_ov_cache_stored(c, 1234 * S + S / 2);
    assert_int_equal(count_in(c, 1000 * S, 1230 * S), 46);
    assert_int_equal(count_in(c, 1230 * S, 1500 * S), 0);
    assert_true(kh_ov_cache_begin(c, w, 1000 * S, 1500 * S, mono + 2 * S, &need));
    assert_int_equal(need, 1230 * S);
    fill(c, need, 1500 * S, w);
    kh_ov_cache_end(c, 1500 * S);
    assert_int_equal(count_in(c, 1000 * S, 1500 * S), 100);
    /* at a bucket's start: that bucket goes */
    kh_ov_cache_stored(c, 1490 * S);
    assert_int_equal(count_in(c, 1490 * S, 1500 * S), 0);
    assert_int_equal(count_in(c, 1480 * S, 1490 * S), 2);
    /* before the span: all of it, and the next call reads it whole without starting again */
    kh_ov_cache_stored(c, 10 * S);
    assert_int_equal(count_in(c, 0, 2000 * S), 0);
    assert_true(kh_ov_cache_begin(c, w, 1000 * S, 1500 * S, mono + 3 * S, &need));
    assert_int_equal(need, 1000 * S);
    kh_ov_cache_free(c);
}

struct got {
    struct kh_ov_row rows[64];
    char names[64][32];
    int n;
};

static int collect(void *arg, const struct kh_ov_row *r)
{
    struct got *g = arg;
    assert_true(g->n < 64);
    g->rows[g->n] = *r;
    if (r->node) {
        snprintf(g->names[g->n], sizeof(g->names[0]), "%s", r->node);
        g->rows[g->n].node = g->names[g->n];
    }
    g->n++;
    return 0;
}

/* The row of (bucket, node) (node NULL: the bucket's reports), or NULL. */
static const struct kh_ov_row *find(const struct kh_ov_row *rows, size_t n, int64_t bucket,
                                    const char *node)
{
    for (size_t i = 0; i < n; i++)
        if (rows[i].bucket == bucket && (node ? rows[i].node && strcmp(rows[i].node, node) == 0
                                              : rows[i].node == NULL))
            return &rows[i];
    return NULL;
}

static void live_part_counts_each_connection_once(void **state)
{
    (void)state;
    int64_t w = 10 * S, need = 0;
    struct kh_ov_cache *c = kh_ov_cache_new(600 * S);
    assert_true(kh_ov_cache_begin(c, w, 1000 * S, 1500 * S, S, &need));
    kh_ov_cache_end(c, 1500 * S);
    assert_true(kh_ov_live_frontier(c) == 1500 * S);
    /* rows of [1500, 1515): a, b in bucket 1500 (a twice, worst 1), a in 1510 */
    struct kh_ov_conn rows[] = {{1500 * S, "a", "n1", 0}, {1500 * S, "a", "n1", 1},
                                {1500 * S, "b", "n2", 2}, {1510 * S, "a", "n1", 0}};
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(kh_ov_live_add(c, &rows[i]), 0);
    assert_int_equal(kh_ov_live_reports(c, 1500 * S, 3), 0);
    assert_int_equal(kh_ov_live_reports(c, 1510 * S, 1), 0);
    assert_int_equal(kh_ov_live_settle(c, 1500 * S, 1515 * S), 0); /* nothing ended yet */
    assert_true(kh_ov_live_frontier(c) == 1515 * S);
    /* after the frontier: a worse in 1510, c new in 1510, b again (no worse) in 1500 */
    struct kh_ov_conn extra[] = {{1510 * S, "a", "n1", 2}, {1510 * S, "c", "n1", 0},
                                 {1500 * S, "b", "n2", 1}};
    struct kh_ov_rep er[] = {{1510 * S, 2}};
    struct got g = {.n = 0};
    assert_int_equal(kh_ov_live_answer(c, extra, 3, er, 1, collect, &g), 0);
    const struct kh_ov_row *r = find(g.rows, (size_t)g.n, 1500 * S, "n1");
    assert_non_null(r);
    assert_true(r->n[0] == 1 && r->n[1] == 1 && r->n[2] == 0);
    r = find(g.rows, (size_t)g.n, 1500 * S, "n2");
    assert_true(r && r->n[0] == 1 && r->n[1] == 1 && r->n[2] == 1);
    r = find(g.rows, (size_t)g.n, 1510 * S, "n1");
    assert_true(r && r->n[0] == 2 && r->n[1] == 1 && r->n[2] == 1);
    r = find(g.rows, (size_t)g.n, 1500 * S, NULL);
    assert_true(r && r->n[0] == 3);
    r = find(g.rows, (size_t)g.n, 1510 * S, NULL);
    assert_true(r && r->n[0] == 3);
    /* the answer changed nothing: without extra, a's worst in 1510 is 0 again */
    g.n = 0;
    assert_int_equal(kh_ov_live_answer(c, NULL, 0, NULL, 0, collect, &g), 0);
    r = find(g.rows, (size_t)g.n, 1510 * S, "n1");
    assert_true(r && r->n[0] == 1 && r->n[1] == 0);
    /* 1500 ends before the next frontier: it settles into the span held, 1510 stays live */
    assert_int_equal(kh_ov_live_settle(c, 1510 * S, 1516 * S), 0);
    size_t n;
    const struct kh_ov_row *held = kh_ov_cache_rows(c, &n);
    r = find(held, n, 1500 * S, "n2");
    assert_true(r && r->n[0] == 1 && r->n[2] == 1);
    r = find(held, n, 1500 * S, NULL);
    assert_true(r && r->n[0] == 3);
    assert_null(find(held, n, 1510 * S, "n1"));
    g.n = 0;
    assert_int_equal(kh_ov_live_answer(c, NULL, 0, NULL, 0, collect, &g), 0);
    assert_null(find(g.rows, (size_t)g.n, 1500 * S, "n1"));
    assert_non_null(find(g.rows, (size_t)g.n, 1510 * S, "n1"));
    /* a report stored late into 1510: the live part from there goes, the frontier with it */
    kh_ov_cache_stored(c, 1512 * S);
    assert_true(kh_ov_live_frontier(c) == 1510 * S);
    g.n = 0;
    assert_int_equal(kh_ov_live_answer(c, NULL, 0, NULL, 0, collect, &g), 0);
    assert_int_equal(g.n, 0);
    /* one into a settled bucket: those from it on, and the whole live part */
    assert_int_equal(kh_ov_live_add(c, &rows[3]), 0);
    kh_ov_cache_stored(c, 1490 * S);
    assert_true(kh_ov_live_frontier(c) == 1490 * S);
    held = kh_ov_cache_rows(c, &n);
    assert_null(find(held, n, 1500 * S, "n2"));
    kh_ov_cache_free(c);
}

static void live_part_grows(void **state)
{
    (void)state;
    int64_t w = 10 * S, need = 0;
    struct kh_ov_cache *c = kh_ov_cache_new(600 * S);
    assert_true(kh_ov_cache_begin(c, w, 0, 10 * S, S, &need));
    kh_ov_cache_end(c, 10 * S);
    char id[32];
    /* many connections in one bucket: the table grows, each is counted once */
    for (int i = 0; i < 5000; i++) {
        snprintf(id, sizeof(id), "conn-%d", i);
        struct kh_ov_conn r = {10 * S, id, "n", i % 3};
        assert_int_equal(kh_ov_live_add(c, &r), 0);
        assert_int_equal(kh_ov_live_add(c, &r), 0); /* again: the same one */
    }
    struct got g = {.n = 0};
    assert_int_equal(kh_ov_live_answer(c, NULL, 0, NULL, 0, collect, &g), 0);
    assert_int_equal(g.n, 1);
    assert_true(g.rows[0].n[0] == 5000 && g.rows[0].n[1] == 3333 && g.rows[0].n[2] == 1666);
    kh_ov_cache_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(settles_whole_buckets_ended_a_hold_ago),
        cmocka_unit_test(reads_only_what_it_lacks),
        cmocka_unit_test(starts_again),
        cmocka_unit_test(bounded),
        cmocka_unit_test(reads_again_from_a_late_report),
        cmocka_unit_test(live_part_counts_each_connection_once),
        cmocka_unit_test(live_part_grows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
