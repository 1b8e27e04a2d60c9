/*
 * Unit tests of src/core/buf.c: the hard maximum of a buffer (KH_ENOSPC, never a realloc
 * past it), growth up to exactly that maximum, kh_buf_printf, and kh_grow (arrays doubled,
 * their size checked). JSON escaping into a
 * buffer is in test_jsonw.c, the arena in test_arena.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/buf.h"
#include "core/errors.h"

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

static void test_grow_doubles(void **state)
{
    (void)state;
    size_t cap = 0;
    int *v = kh_grow(NULL, &cap, 4, sizeof(*v)); /* none yet: `first` */
    assert_non_null(v);
    assert_int_equal(cap, 4);
    for (int i = 0; i < 4; i++)
        v[i] = i;
    int *w = kh_grow(v, &cap, 4, sizeof(*v)); /* then twice what it was, the values kept */
    assert_non_null(w);
    assert_int_equal(cap, 8);
    for (int i = 0; i < 4; i++)
        assert_int_equal(w[i], i);
    /* past SIZE_MAX bytes: NULL, the array and its capacity as they were */
    size_t big = SIZE_MAX / 2 + 1;
    assert_null(kh_grow(w, &big, 4, sizeof(*w)));
    assert_true(big == SIZE_MAX / 2 + 1);
    big = SIZE_MAX / 8;
    assert_null(kh_grow(w, &big, 4, 8));
    assert_true(big == SIZE_MAX / 8);
    size_t none = 0;
    assert_null(kh_grow(NULL, &none, 0, 8)); /* no first size */
    assert_int_equal(none, 0);
    assert_int_equal(w[3], 3);
    free(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buf_max_enforced),
        cmocka_unit_test(test_buf_grows_in_steps),
        cmocka_unit_test(test_buf_printf),
        cmocka_unit_test(test_grow_doubles),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
