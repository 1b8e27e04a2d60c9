/*
 * Unit tests of src/core/buf.c, jsonw.c and arena.c: the hard maximum of a buffer
 * (KH_ENOSPC, never a realloc past it), JSON string escaping, and the arena's bound.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/arena.h"
#include "core/buf.h"
#include "core/errors.h"
#include "core/jsonw.h"

static void test_buf_max_enforced(void **state)
{
    (void)state;
    struct kh_buf b;
    kh_buf_init(&b, 10);
    assert_int_equal(b.len, 0);
    assert_int_equal(kh_buf_append(&b, "0123456", 7), 0);
    assert_int_equal(kh_buf_append(&b, "789", 3), 0);
    assert_int_equal(b.len, 10);
    assert_memory_equal(b.data, "0123456789", 10);
    assert_true(b.cap <= 10);
    assert_int_equal(kh_buf_append(&b, "x", 1), KH_ENOSPC);
    assert_int_equal(b.len, 10); /* unchanged */
    assert_memory_equal(b.data, "0123456789", 10);
    assert_int_equal(kh_buf_reserve(&b, 1), KH_ENOSPC);
    assert_int_equal(kh_buf_reserve(&b, 0), 0);
    kh_buf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_int_equal(kh_buf_append(&b, "abc", 3), 0);
    assert_memory_equal(b.data, "abc", 3);
    kh_buf_cleanup(&b);
    assert_null(b.data);
    /* a single append larger than the max fails at once */
    kh_buf_init(&b, 4);
    assert_int_equal(kh_buf_append(&b, "hello", 5), KH_ENOSPC);
    assert_int_equal(b.len, 0);
    kh_buf_cleanup(&b);
}

static void test_buf_grows_in_steps(void **state)
{
    (void)state;
    struct kh_buf b;
    kh_buf_init(&b, 1u << 20);
    static char chunk[1 << 16];
    memset(chunk, 'z', sizeof(chunk));
    for (int i = 0; i < 1000; i++)
        assert_int_equal(kh_buf_append(&b, chunk, 1000), 0);
    assert_int_equal(b.len, 1000000);
    assert_true(b.cap >= b.len && b.cap <= b.max);
    assert_int_equal(kh_buf_append(&b, chunk, 48576), 0); /* exactly to the max */
    assert_int_equal(b.len, 1u << 20);
    assert_int_equal(kh_buf_append(&b, chunk, 1), KH_ENOSPC);
    assert_true(b.data[0] == 'z' && b.data[b.len - 1] == 'z');
    kh_buf_cleanup(&b);
}

/* kh_buf_printf: appends whole, grows past the first capacity, refuses past max (appending
 * nothing: no cut-off text as the old per-module helpers did), and keeps a C string. */
static void test_buf_printf(void **state)
{
    (void)state;
    struct kh_buf b;
    kh_buf_init(&b, 1200);
    assert_int_equal(kh_buf_printf(&b, "%s=%d", "a", 1), 0);
    assert_int_equal(b.len, 3);
    assert_string_equal(b.data, "a=1");
    char big[700];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(kh_buf_printf(&b, ",%s", big), 0); /* past the first 256 bytes */
    assert_int_equal(b.len, 3 + 700);
    assert_int_equal(b.data[b.len], '\0');
    assert_int_equal(kh_buf_printf(&b, ",%s", big), KH_ENOSPC); /* 1,403 > 1,200 */
    assert_int_equal(b.len, 703);
    assert_int_equal(strlen(b.data), 703);
    assert_int_equal(kh_buf_printf(&b, "%s", ""), 0);
    assert_int_equal(b.len, 703);
    kh_buf_cleanup(&b);
}

static void expect_json_str(const char *in, size_t n, const char *want)
{
    struct kh_buf b;
    kh_buf_init(&b, 4096);
    assert_int_equal(kh_buf_put_json_str(&b, in, n), 0);
    assert_int_equal(b.len, strlen(want));
    assert_memory_equal(b.data, want, b.len);
    kh_buf_cleanup(&b);
}

static void test_json_escaping(void **state)
{
    (void)state;
    expect_json_str("plain", 5, "\"plain\"");
    expect_json_str("", 0, "\"\"");
    expect_json_str("say \"hi\"", 8, "\"say \\\"hi\\\"\"");
    expect_json_str("a\\b", 3, "\"a\\\\b\"");
    expect_json_str("\x01", 1, "\"\\u0001\"");
    expect_json_str("\x1f\x7f", 2, "\"\\u001f\x7f\"");
    expect_json_str("\n\r\t\b\f", 5, "\"\\n\\r\\t\\b\\f\"");
    expect_json_str("a\0b", 3, "\"a\\u0000b\"");
    /* UTF-8 and '/' pass through unchanged */
    expect_json_str("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x8e\xa5 /", 16,
                    "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x8e\xa5 /\"");
    /* appends after what is there */
    struct kh_buf b;
    kh_buf_init(&b, 64);
    assert_int_equal(kh_buf_append(&b, "{", 1), 0);
    assert_int_equal(kh_buf_put_json_str(&b, "k", 1), 0);
    assert_int_equal(b.len, 4);
    assert_memory_equal(b.data, "{\"k\"", 4);
    kh_buf_cleanup(&b);
}

static void test_json_str_respects_max(void **state)
{
    (void)state;
    struct kh_buf b;
    kh_buf_init(&b, 16);
    char big[100];
    memset(big, 'a', sizeof(big));
    assert_int_equal(kh_buf_put_json_str(&b, big, sizeof(big)), KH_ENOSPC);
    assert_int_equal(b.len, 0);
    assert_true(b.cap <= 16);
    kh_buf_cleanup(&b);
}

static void test_json_escape_partial(void **state)
{
    (void)state;
    char out[16];
    size_t used;
    /* stops before an escape that does not fit */
    size_t w = kh_json_escape(out, 2, "a\"b", 3, &used);
    assert_int_equal(w, 1);
    assert_int_equal(used, 1);
    assert_memory_equal(out, "a", 1);
    w = kh_json_escape(out, 3, "a\"b", 3, &used);
    assert_int_equal(w, 3);
    assert_int_equal(used, 2);
    assert_memory_equal(out, "a\\\"", 3);
    w = kh_json_escape(out, 6, "\x02", 1, &used);
    assert_int_equal(w, 6);
    assert_int_equal(used, 1);
    assert_memory_equal(out, "\\u0002", 6);
    w = kh_json_escape(out, 5, "\x02", 1, &used);
    assert_int_equal(w, 0);
    assert_int_equal(used, 0);
    w = kh_json_escape(out, sizeof(out), "xyz", 3, &used);
    assert_int_equal(w, 3);
    assert_int_equal(used, 3);
}

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
        cmocka_unit_test(test_buf_max_enforced),
        cmocka_unit_test(test_buf_grows_in_steps),
        cmocka_unit_test(test_buf_printf),
        cmocka_unit_test(test_json_escaping),
        cmocka_unit_test(test_json_str_respects_max),
        cmocka_unit_test(test_json_escape_partial),
        cmocka_unit_test(test_arena_bound),
        cmocka_unit_test(test_arena_strndup_and_large),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
