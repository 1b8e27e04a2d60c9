/*
 * Unit tests of src/core/jsonw.c: JSON string escaping (quotes, backslashes, control
 * characters as \u00XX, UTF-8 passed through), kh_buf_put_json_str within the buffer's
 * maximum, and kh_json_escape stopping before an escape that does not fit.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/buf.h"
#include "core/errors.h"
#include "core/jsonw.h"

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_escaping),
        cmocka_unit_test(test_json_str_respects_max),
        cmocka_unit_test(test_json_escape_partial),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
