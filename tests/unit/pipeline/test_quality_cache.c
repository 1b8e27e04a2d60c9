/*
 * Unit tests of src/pipeline/quality_cache.c: a put and a get give back the quality rows
 * (values and strings copied, rows of other tables left out); an older report never
 * replaces a later one; confirm moves an entry to a new epoch only for its own time; the
 * bound evicts the least recently used entries (a get counts as a use), an entry over the
 * bound alone is not kept, a cache of 0 bytes keeps nothing; drop forgets; a full arena is
 * KH_ENOMEM; the counts add up.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kh_test.h"

#include "core/arena.h"
#include "core/errors.h"
#include "pipeline/quality_cache.h"
#include "sora/schema.h"

/* --- rows ---------------------------------------------------------------------------------- */

struct rows {
    struct kh_row row[3];
    struct kh_value vals[3][64];
    char text[3][32];
};

/* A quality_connection row, a quality_stream row and (left out by the cache) a stats row of
 * another table; `tag` goes into the text values. */
static struct kh_row *make(struct rows *r, const char *tag, int64_t n)
{
    memset(r, 0, sizeof(*r));
    int tables[3] = {kh_table_quality_connection, kh_table_quality_stream, 0};
    for (int k = 0; k < 3; k++) {
        size_t nm = kh_stats_tables[tables[k]].nmembers;
        assert_true(nm <= 64);
        snprintf(r->text[k], sizeof(r->text[k]), "%s-%d", tag, k);
        for (size_t m = 0; m < nm; m++) {
            struct kh_value *v = &r->vals[k][m];
            v->type = (uint8_t)kh_stats_tables[tables[k]].members[m].type;
            if (v->type == KH_COL_TEXT || v->type == KH_COL_JSON) {
                v->u.s = r->text[k];
                v->len = (uint32_t)strlen(r->text[k]);
            } else if (v->type == KH_COL_REAL) {
                v->u.d = (double)n + 0.5;
            } else {
                v->u.i = n;
            }
        }
        r->row[k] = (struct kh_row){.table = tables[k], .vals = r->vals[k],
                                    .stats_type = {"inbound-rtp", 11},
                                    .stats_id = {r->text[k], (uint32_t)strlen(r->text[k])},
                                    .stats_timestamp = (double)n};
        if (k > 0)
            r->row[k - 1].next = &r->row[k];
    }
    return &r->row[0];
}

static struct kh_str id(const char *s) { return (struct kh_str){s, (uint32_t)strlen(s)}; }

/* What came back is a copy of the two quality rows, not the stats row. */
static void assert_copy_of(const struct kh_row *got, const struct kh_row *want)
{
    size_t n = 0;
    for (; got; got = got->next, want = want->next, n++) {
        assert_int_equal(got->table, want->table);
        assert_ptr_not_equal(got->vals, want->vals);
        assert_memory_equal(got->stats_id.p, want->stats_id.p, want->stats_id.len);
        assert_int_equal(got->stats_id.len, want->stats_id.len);
        assert_true(got->stats_timestamp == want->stats_timestamp);
        for (size_t m = 0; m < kh_stats_tables[got->table].nmembers; m++) {
            const struct kh_value *a = &got->vals[m], *b = &want->vals[m];
            assert_int_equal(a->type, b->type);
            if (a->type == KH_COL_TEXT || a->type == KH_COL_JSON) {
                assert_ptr_not_equal(a->u.s, b->u.s);
                assert_int_equal(a->len, b->len);
                assert_memory_equal(a->u.s, b->u.s, a->len);
                assert_int_equal(a->u.s[a->len], '\0');
            } else if (a->type == KH_COL_REAL) {
                assert_true(a->u.d == b->u.d);
            } else {
                assert_int_equal(a->u.i, b->u.i);
            }
        }
    }
    assert_int_equal(n, 2);
}

static void test_put_and_get(void **state)
{
    (void)state;
    struct kh_qcache *c = kh_qcache_new(1u << 20);
    struct rows r;
    struct kh_row *rows = make(&r, "a", 7);
    kh_qcache_put(c, id("conn-a"), 1000, 3, rows);
    struct kh_arena a;
    kh_arena_init(&a, 4096, 1u << 20);
    int64_t t;
    uint64_t epoch;
    struct kh_row *got;
    assert_int_equal(kh_qcache_get(c, id("conn-a"), &a, &t, &epoch, &got), 0);
    assert_int_equal(t, 1000);
    assert_int_equal(epoch, 3);
    memset(r.text, 'x', sizeof(r.text)); /* the cache kept copies */
    struct rows fresh;
    assert_copy_of(got, make(&fresh, "a", 7));
    assert_int_equal(kh_qcache_get(c, id("conn-b"), &a, &t, &epoch, &got), 0);
    assert_int_equal(t, 0);
    assert_null(got);
    kh_arena_cleanup(&a);
    kh_qcache_free(c);
}

static void test_later_wins_and_confirm(void **state)
{
    (void)state;
    struct kh_qcache *c = kh_qcache_new(1u << 20);
    struct rows r1, r2;
    kh_qcache_put(c, id("c"), 2000, 0, make(&r1, "late", 2));
    kh_qcache_put(c, id("c"), 1000, 5, make(&r2, "early", 1)); /* older: ignored */
    struct kh_arena a;
    kh_arena_init(&a, 4096, 1u << 20);
    int64_t t;
    uint64_t epoch;
    struct kh_row *got;
    assert_int_equal(kh_qcache_get(c, id("c"), &a, &t, &epoch, &got), 0);
    assert_int_equal(t, 2000);
    assert_int_equal(epoch, 0);
    assert_string_equal(got->stats_id.p, "late-0");
    kh_qcache_confirm(c, id("c"), 1000, 9); /* not its time */
    kh_qcache_get(c, id("c"), &a, &t, &epoch, &got);
    assert_int_equal(epoch, 0);
    kh_qcache_confirm(c, id("c"), 2000, 9);
    kh_qcache_get(c, id("c"), &a, &t, &epoch, &got);
    assert_int_equal(epoch, 9);
    kh_qcache_drop(c, id("c"));
    kh_qcache_get(c, id("c"), &a, &t, &epoch, &got);
    assert_int_equal(t, 0);
    struct kh_qcache_counts n;
    kh_qcache_counts(c, &n);
    assert_int_equal(n.entries, 0);
    assert_int_equal(n.bytes, 0);
    kh_arena_cleanup(&a);
    kh_qcache_free(c);
}

static void test_bound_evicts_least_recently_used(void **state)
{
    (void)state;
    struct rows r;
    size_t one = kh_qcache_entry_bytes(id("c0"), make(&r, "x", 1));
    struct kh_qcache *c = kh_qcache_new(3 * one); /* room for three */
    char name[8];
    for (int i = 0; i < 3; i++) {
        snprintf(name, sizeof(name), "c%d", i);
        kh_qcache_put(c, id(name), 1000 + i, 1, make(&r, "x", i));
    }
    struct kh_arena a;
    kh_arena_init(&a, 4096, 1u << 20);
    int64_t t;
    uint64_t epoch;
    struct kh_row *got;
    kh_qcache_get(c, id("c0"), &a, &t, &epoch, &got); /* c0 used: c1 is the oldest now */
    kh_qcache_put(c, id("c3"), 1003, 1, make(&r, "x", 3));
    struct kh_qcache_counts n;
    kh_qcache_counts(c, &n);
    assert_int_equal(n.entries, 3);
    assert_int_equal(n.evictions, 1);
    assert_true(n.bytes <= n.max_bytes);
    kh_qcache_get(c, id("c1"), &a, &t, &epoch, &got);
    assert_int_equal(t, 0);
    kh_qcache_get(c, id("c0"), &a, &t, &epoch, &got);
    assert_int_equal(t, 1000);
    kh_arena_cleanup(&a);
    kh_qcache_free(c);

    c = kh_qcache_new(one - 1); /* an entry over the bound alone */
    kh_qcache_put(c, id("c0"), 1000, 1, make(&r, "x", 1));
    kh_qcache_counts(c, &n);
    assert_int_equal(n.entries, 0);
    kh_qcache_free(c);
}

static void test_many_entries_grow_the_table(void **state)
{
    (void)state;
    struct kh_qcache *c = kh_qcache_new(64u << 20);
    struct rows r;
    char name[16];
    for (int i = 0; i < 5000; i++) {
        snprintf(name, sizeof(name), "conn-%d", i);
        kh_qcache_put(c, id(name), 1000 + i, 1, make(&r, "x", i));
    }
    struct kh_arena a;
    kh_arena_init(&a, 4096, 64u << 20);
    for (int i = 0; i < 5000; i += 499) {
        snprintf(name, sizeof(name), "conn-%d", i);
        int64_t t;
        uint64_t epoch;
        struct kh_row *got;
        assert_int_equal(kh_qcache_get(c, id(name), &a, &t, &epoch, &got), 0);
        assert_int_equal(t, 1000 + i);
    }
    struct kh_qcache_counts n;
    kh_qcache_counts(c, &n);
    assert_int_equal(n.entries, 5000);
    assert_int_equal(n.evictions, 0);
    kh_arena_cleanup(&a);
    kh_qcache_free(c);
}

static void test_full_arena(void **state)
{
    (void)state;
    struct kh_qcache *c = kh_qcache_new(1u << 20);
    struct rows r;
    kh_qcache_put(c, id("c"), 1000, 1, make(&r, "x", 1));
    struct kh_arena a;
    kh_arena_init(&a, 64, 64);
    int64_t t;
    uint64_t epoch;
    struct kh_row *got;
    assert_int_equal(kh_qcache_get(c, id("c"), &a, &t, &epoch, &got), KH_ENOMEM);
    assert_int_equal(t, 0);
    assert_null(got);
    kh_arena_cleanup(&a);
    kh_qcache_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_and_get),
        cmocka_unit_test(test_later_wins_and_confirm),
        cmocka_unit_test(test_bound_evicts_least_recently_used),
        cmocka_unit_test(test_many_entries_grow_the_table),
        cmocka_unit_test(test_full_arena),
    };
    return cmocka_run_group_tests(tests, kht_schema_setup, kht_schema_teardown);
}
