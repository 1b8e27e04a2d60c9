/*
 * Unit tests of src/core/text.c: ASCII and well-formed multi-byte text pass (also across the
 * eight-byte fast path), U+0000 and every kind of malformed UTF-8 (stray continuation bytes,
 * truncated sequences, overlong forms, surrogates, code points past U+10FFFF) are named.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/text.h"

static const char *problem(const char *s, size_t n)
{
    return kh_text_problem((const unsigned char *)s, n);
}

static void test_good(void **state)
{
    (void)state;
    static const char *const good[] = {"", "a", "meeting-room-42", "abcdefghijklmnopqrstuvwxyz",
                                       "caf\xc3\xa9", "\xe4\xbc\x9a\xe8\xad\xb0",
                                       "12345678\xf0\x9f\x8e\x89", "\xf4\x8f\xbf\xbf"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        assert_null(problem(good[i], strlen(good[i])));
}

static void test_nul(void **state)
{
    (void)state;
    assert_string_equal(problem("ab\0cd", 5), "must not contain \\u0000");
    assert_string_equal(problem("abcdefgh\0", 9), "must not contain \\u0000");
}

static void test_bad_utf8(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "\x80",             /* a continuation byte alone */
        "abc\xc3",          /* truncated */
        "\xe4\xbc",         /* truncated */
        "\xc3\x28",         /* not a continuation */
        "\xc0\xaf",         /* overlong '/' */
        "\xe0\x80\xaf",     /* overlong */
        "\xed\xa0\x80",     /* surrogate U+D800 */
        "\xf4\x90\x80\x80", /* past U+10FFFF */
        "\xff",             /* never a lead byte */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_string_equal(problem(bad[i], strlen(bad[i])), "must be valid UTF-8");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good),
        cmocka_unit_test(test_nul),
        cmocka_unit_test(test_bad_utf8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
