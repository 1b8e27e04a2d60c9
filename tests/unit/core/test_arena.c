/*
 * Unit tests of src/core/arena.c: allocations aligned and within the arena's total bound
 * (a chunk that would cross it is refused, the rest of the current chunk is still used),
 * strndup, and an allocation larger than a chunk.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/arena.h"

static void test_arena_bound(void **state)
{
    (void)state;
    struct kh_arena a;
    kh_arena_init(&a, 32, 64);
    char *p1 = kh_arena_alloc(&a, 16);
    char *p2 = kh_arena_alloc(&a, 13);
    assert_non_null(p1);
    assert_non_null(p2);
    assert_int_equal((uintptr_t)p1 % 8, 0);
    assert_int_equal((uintptr_t)p2 % 8, 0);
    assert_true(p2 >= p1 + 16);
    memset(p1, 1, 16);
    memset(p2, 2, 13);
    /* a new 40-byte chunk would take the total to 72 > 64 */
    assert_null(kh_arena_alloc(&a, 40));
    assert_int_equal(a.total, 32);
    /* a second default chunk still fits exactly */
    char *p3 = kh_arena_alloc(&a, 8);
    assert_non_null(p3);
    assert_int_equal(a.total, 64);
    assert_null(kh_arena_alloc(&a, 32));
    assert_non_null(kh_arena_alloc(&a, 24)); /* the rest of the current chunk */
    assert_null(kh_arena_alloc(&a, 1));
    assert_int_equal(p1[15], 1); /* earlier memory untouched */
    kh_arena_cleanup(&a);
    assert_int_equal(a.total, 0);
    assert_null(a.head);
}

static void test_arena_strndup_and_large(void **state)
{
    (void)state;
    struct kh_arena a;
    kh_arena_init(&a, 64, 4096);
    char *s = kh_arena_strndup(&a, "hello world", 5);
    assert_string_equal(s, "hello");
    char *z = kh_arena_strndup(&a, "", 0);
    assert_string_equal(z, "");
    /* larger than a chunk: gets a chunk of its own */
    char *big = kh_arena_alloc(&a, 1000);
    assert_non_null(big);
    memset(big, 7, 1000);
    assert_string_equal(s, "hello");
    assert_null(kh_arena_alloc(&a, 4096));
    assert_null(kh_arena_strndup(&a, "x", 4000));
    kh_arena_cleanup(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_arena_bound),
        cmocka_unit_test(test_arena_strndup_and_large),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
