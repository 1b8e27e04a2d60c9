/*
 * Unit tests of src/core/numparse.c: kh_format_int64 gives what printf's %lld gives, the
 * extremes included, and kh_format_digits pads with zeros to its width. Number parsing is
 * tested through the envelope (tests/unit/sora/test_envelope_rows.c, test_numbers).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "core/numparse.h"

static void test_format_int64(void **state)
{
    (void)state;
    static const int64_t v[] = {0, 1, -1, 9, 10, -10, 1234567890123LL, INT64_MAX, INT64_MIN,
                                INT64_MIN + 1, 1000000000000000000LL};
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        char want[32], got[32];
        snprintf(want, sizeof(want), "%lld", (long long)v[i]);
        size_t n = kh_format_int64(got, v[i]);
        got[n] = '\0';
        assert_string_equal(got, want);
    }
    char d[7] = {0};
    kh_format_digits(d, 42, 6);
    assert_string_equal(d, "000042");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format_int64),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
