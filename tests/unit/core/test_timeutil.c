/*
 * Unit tests of src/core/timeutil.c: strict RFC 3339 UTC parsing (fraction of 1..9 digits,
 * 'Z' or +00:00), the canonical microsecond text form, and their round trip.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "core/errors.h"
#include "core/timeutil.h"

static int parse(const char *s, int64_t *usec, const char **why)
{
    *why = NULL;
    return kh_time_parse_rfc3339(s, strlen(s), usec, why);
}

static void expect_usec(const char *s, int64_t want)
{
    int64_t usec = -1;
    const char *why;
    if (parse(s, &usec, &why) != 0)
        fail_msg("'%s' refused: %s", s, why);
    if (usec != want)
        fail_msg("'%s' -> %lld, expected %lld", s, (long long)usec, (long long)want);
}

static void expect_refused(const char *s)
{
    int64_t usec = 12345;
    const char *why;
    if (parse(s, &usec, &why) != KH_EINVAL)
        fail_msg("'%s' accepted as %lld", s, (long long)usec);
    assert_non_null(why);
    assert_true(strlen(why) > 0);
}

static void test_known_epoch_values(void **state)
{
    (void)state;
    expect_usec("1970-01-01T00:00:00.0Z", 0);
    expect_usec("1970-01-01T00:00:01.000001Z", 1000001);
    expect_usec("2026-11-24T06:15:42.123456Z", 1795500942123456LL);
    expect_usec("2000-02-29T23:59:59.999999Z", 951868799999999LL);
    expect_usec("2024-02-29T00:00:00.000001Z", 1709164800000001LL);
    expect_usec("1969-12-31T23:59:59.5Z", -500000);
}

static void test_fraction_digits(void **state)
{
    (void)state;
    static const char *const cases[] = {
        "2026-11-24T06:15:42.1Z",         "2026-11-24T06:15:42.12Z",
        "2026-11-24T06:15:42.123Z",       "2026-11-24T06:15:42.1234Z",
        "2026-11-24T06:15:42.12345Z",     "2026-11-24T06:15:42.123456Z",
        "2026-11-24T06:15:42.1234567Z",   "2026-11-24T06:15:42.12345678Z",
        "2026-11-24T06:15:42.123456789Z",
    };
    static const int64_t frac[] = {100000, 120000, 123000, 123400, 123450,
                                   123456, 123456, 123456, 123456};
    const int64_t base = 1795500942000000LL;
    for (size_t i = 0; i < 9; i++)
        expect_usec(cases[i], base + frac[i]);
    expect_refused("2026-11-24T06:15:42.1234567890Z"); /* 10 digits */
    expect_refused("2026-11-24T06:15:42.Z");           /* no digit */
}

static void test_utc_forms(void **state)
{
    (void)state;
    const int64_t want = 1795500942500000LL;
    expect_usec("2026-11-24T06:15:42.5Z", want);
    expect_usec("2026-11-24T06:15:42.5+00:00", want);
    expect_usec("2026-11-24t06:15:42.5z", want);
    int64_t usec;
    const char *why;
    assert_int_equal(parse("2026-11-24T15:15:42.5+09:00", &usec, &why), KH_EINVAL);
    assert_string_equal(why, "must be UTC (end in Z or +00:00)");
    expect_refused("2026-11-24T01:15:42.5-05:00");
    expect_refused("2026-11-24T06:15:42.5+0000");
    expect_refused("2026-11-24T06:15:42.5");  /* no zone */
    expect_refused("2026-11-24T06:15:42.5ZZ");
    expect_refused("2026-11-24T06:15:42.5Z "); /* trailing space */
}

static void test_missing_fraction_and_bad_dates(void **state)
{
    (void)state;
    int64_t usec;
    const char *why;
    assert_int_equal(parse("2026-11-24T06:15:42Z", &usec, &why), KH_EINVAL);
    assert_string_equal(why, "must be RFC 3339 UTC with a fraction, like "
                             "2026-11-24T06:15:42.123456Z");
    expect_refused("2026-11-24T06:15:42+00:00");
    expect_refused("2026-02-30T00:00:00.0Z");
    expect_refused("2026-04-31T00:00:00.0Z");
    expect_refused("2023-02-29T00:00:00.0Z");
    expect_refused("2100-02-29T00:00:00.0Z"); /* not a leap year */
    expect_refused("2026-13-01T00:00:00.0Z");
    expect_refused("2026-00-01T00:00:00.0Z");
    expect_refused("2026-11-00T00:00:00.0Z");
    expect_refused("2026-11-24T24:00:00.0Z");
    expect_refused("2026-11-24T06:60:00.0Z");
    expect_refused("2026-11-24T06:15:61.0Z");
    /* year 0000 is RFC 3339, but no SQL timestamp; 0001 is the first year kept */
    assert_int_equal(parse("0000-01-01T00:00:00.000001Z", &usec, &why), KH_EINVAL);
    assert_string_equal(why, "must be in the years 0001 to 9999");
    expect_usec("0001-01-01T00:00:00.0Z", -62135596800000000LL);
    /* a leap second is accepted and kept inside its minute */
    expect_usec("2016-12-31T23:59:60.5Z", 1483228799500000LL);
}

static void test_garbage(void **state)
{
    (void)state;
    static const char *const cases[] = {
        "",
        "Z",
        "now",
        "2026-11-24",
        "2026-11-24 06:15:42.1Z",
        "2026/11/24T06:15:42.1Z",
        "26-11-24T06:15:42.1Z",
        "2026-11-24T06:15:42,1Z",
        "+2026-11-24T06:15:42.1Z",
        "2026-1a-24T06:15:42.1Z",
        "2026-11-24T6:15:42.12Z",
        "1795500942",
        "2026-11-24T06:15:42.1x2Z",
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        expect_refused(cases[i]);
    /* the length is honoured: a valid time followed by bytes outside n */
    const char *s = "2026-11-24T06:15:42.1Zjunk";
    int64_t usec;
    const char *why;
    assert_int_equal(kh_time_parse_rfc3339(s, 22, &usec, &why), 0);
    assert_true(usec == 1795500942100000LL);
    assert_int_equal(kh_time_parse_rfc3339(s, 21, &usec, &why), KH_EINVAL);
}

static void test_format_and_round_trip(void **state)
{
    (void)state;
    char out[KH_TIME_TEXT_LEN + 1];
    memset(out, 'x', sizeof(out));
    kh_time_format(1795500942123456LL, out);
    assert_string_equal(out, "2026-11-24T06:15:42.123456Z");
    assert_int_equal(strlen(out), KH_TIME_TEXT_LEN);
    kh_time_format(0, out);
    assert_string_equal(out, "1970-01-01T00:00:00.000000Z");
    kh_time_format(-500000, out);
    assert_string_equal(out, "1969-12-31T23:59:59.500000Z");
    static const char *const canon[] = {
        "2026-11-24T06:15:42.123456Z", "2000-02-29T23:59:59.999999Z",
        "1999-12-31T00:00:00.000001Z", "2038-01-19T03:14:08.000000Z",
        "2262-04-11T23:47:16.854775Z",
    };
    for (size_t i = 0; i < sizeof(canon) / sizeof(canon[0]); i++) {
        int64_t usec;
        const char *why;
        assert_int_equal(parse(canon[i], &usec, &why), 0);
        kh_time_format(usec, out);
        assert_string_equal(out, canon[i]);
    }
    /* a short fraction comes back with six digits */
    int64_t usec;
    const char *why;
    assert_int_equal(parse("2026-11-24T06:15:42.1+00:00", &usec, &why), 0);
    kh_time_format(usec, out);
    assert_string_equal(out, "2026-11-24T06:15:42.100000Z");
    /* the same second again (the date part is reused), then the one before it */
    kh_time_format(1795500942000001LL, out);
    assert_string_equal(out, "2026-11-24T06:15:42.000001Z");
    kh_time_format(1795500941999999LL, out);
    assert_string_equal(out, "2026-11-24T06:15:41.999999Z");
    kh_time_format(1795500942999999LL, out);
    assert_string_equal(out, "2026-11-24T06:15:42.999999Z");
    /* a third second, then each of the earlier ones: every answer is its own second's */
    static const struct { int64_t usec; const char *text; } seq[] = {
        {1795500940000000LL, "2026-11-24T06:15:40.000000Z"},
        {1795500941000002LL, "2026-11-24T06:15:41.000002Z"},
        {1795500942000003LL, "2026-11-24T06:15:42.000003Z"},
        {1795500940500000LL, "2026-11-24T06:15:40.500000Z"},
        {-1LL, "1969-12-31T23:59:59.999999Z"},
        {1795500942000004LL, "2026-11-24T06:15:42.000004Z"},
    };
    for (size_t i = 0; i < sizeof(seq) / sizeof(seq[0]); i++) {
        kh_time_format(seq[i].usec, out);
        assert_string_equal(out, seq[i].text);
    }
}

/* A few values end to end: parse, format, accept, truncate to microseconds, refuse. */
static void test_parse_and_format_examples(void **state)
{
    (void)state;
    int64_t us;
    const char *why;
    char out[KH_TIME_TEXT_LEN + 1];
    assert_int_equal(kh_time_parse_rfc3339("1970-01-01T00:00:00.000001Z", 27, &us, &why), 0);
    assert_int_equal(us, 1);
    assert_int_equal(kh_time_parse_rfc3339("2026-11-24T06:15:42.123456Z", 27, &us, &why), 0);
    assert_int_equal(us, 1795500942123456LL);
    kh_time_format(us, out);
    assert_string_equal(out, "2026-11-24T06:15:42.123456Z");
    static const char *ok[] = {"2026-11-24T06:15:42.1Z", "2026-11-24T06:15:42.123456789Z",
                               "2024-02-29T23:59:59.9+00:00", "2026-11-24t06:15:42.5z"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        assert_int_equal(kh_time_parse_rfc3339(ok[i], strlen(ok[i]), &us, &why), 0);
    kh_time_parse_rfc3339("2026-11-24T06:15:42.123456789Z", 30, &us, &why);
    kh_time_format(us, out);
    assert_string_equal(out, "2026-11-24T06:15:42.123456Z"); /* truncated to microseconds */
    static const char *bad[] = {"2026-11-24T06:15:42Z",        "2026-11-24 06:15:42.1Z",
                                "2025-02-29T00:00:00.1Z",      "2026-13-01T00:00:00.1Z",
                                "2026-11-24T24:00:00.1Z",      "2026-11-24T06:15:42.1+09:00",
                                "2026-11-24T06:15:42.1",       "2026-11-24T06:15:42.1234567890Z",
                                "yesterday",                   ""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (kh_time_parse_rfc3339(bad[i], strlen(bad[i]), &us, &why) != KH_EINVAL)
            fail_msg("accepted '%s'", bad[i]);
}

static void test_clocks(void **state)
{
    (void)state;
    int64_t now = kh_time_now_usec();
    assert_true(now > 1700000000000000LL); /* after 2023 */
    uint64_t a = kh_mono_usec(), b = kh_mono_usec();
    assert_true(b >= a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_epoch_values),
        cmocka_unit_test(test_fraction_digits),
        cmocka_unit_test(test_utc_forms),
        cmocka_unit_test(test_missing_fraction_and_bad_dates),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_format_and_round_trip),
        cmocka_unit_test(test_parse_and_format_examples),
        cmocka_unit_test(test_clocks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
