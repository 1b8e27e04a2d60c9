/*
 * Unit tests of src/store/pg_encode.c: the exact bytes of each value in the three forms
 * kohaku sends PostgreSQL (array literal elements, COPY text fields, COPY binary fields).
 * The end-to-end tests then check what a real PostgreSQL stores from them.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "core/buf.h"
#include "sora/schema.h"
#include "store/pg_encode.h"

static struct kh_buf b;

static int setup(void **state)
{
    kh_buf_init(&b, 1u << 20);
    return 0;
}

static int teardown(void **state)
{
    kh_buf_cleanup(&b);
    return 0;
}

static void expect(const void *want, size_t n)
{
    if (b.len != n || memcmp(b.data, want, n) != 0) {
        char got[256] = "", w[256] = "";
        for (size_t i = 0; i < b.len && i < 80; i++)
            snprintf(got + strlen(got), sizeof(got) - strlen(got), "%02x",
                     (unsigned char)b.data[i]);
        for (size_t i = 0; i < n && i < 80; i++)
            snprintf(w + strlen(w), sizeof(w) - strlen(w), "%02x",
                     ((const unsigned char *)want)[i]);
        fail_msg("got %zu bytes %s, want %zu bytes %s", b.len, got, n, w);
    }
    kh_buf_reset(&b);
}
#define EXPECT(lit) expect(lit, sizeof(lit) - 1)

static void test_text_forms_escape(void **state)
{
    assert_int_equal(kh_pg_put_text(&b, KH_PG_ARRAY, true, "a\"b\\c,{}", 8), 0);
    assert_int_equal(kh_pg_put_null(&b, KH_PG_ARRAY, false), 0);
    EXPECT("\"a\\\"b\\\\c,{}\",NULL");
    assert_int_equal(kh_pg_put_text(&b, KH_PG_COPY, true, "a\tb\nc\\d\re", 9), 0);
    assert_int_equal(kh_pg_put_null(&b, KH_PG_COPY, false), 0);
    assert_int_equal(kh_pg_put_int(&b, KH_PG_COPY, false, -42), 0);
    assert_int_equal(kh_pg_put_real(&b, KH_PG_COPY, false, 0.1), 0);
    EXPECT("a\\tb\\nc\\\\d\\re\t\\N\t-42\t0.10000000000000001");
    assert_int_equal(kh_pg_put_time(&b, KH_PG_COPY, true, 0, "2026-11-24T06:15:42.123456Z"), 0);
    assert_int_equal(kh_pg_put_jsonb(&b, KH_PG_COPY, false, "{\"a\":1}", 7), 0);
    EXPECT("2026-11-24T06:15:42.123456Z\t{\"a\":1}");
    /* a time value (the envelope tables') is its text; binary needs kh_pg_put_time */
    struct kh_value tv = {.type = KH_COL_TIME, .u.s = "2026-11-24T06:15:42.123456Z", .len = 27};
    assert_int_equal(kh_pg_put_value(&b, KH_PG_ARRAY, true, &tv), 0);
    assert_int_equal(kh_pg_put_value(&b, KH_PG_COPY, false, &tv), 0);
    EXPECT("\"2026-11-24T06:15:42.123456Z\"\t2026-11-24T06:15:42.123456Z");
    assert_int_equal(kh_pg_put_value(&b, KH_PG_BINARY, true, &tv), KH_EINVAL);
}

static void test_binary_fields(void **state)
{
    assert_int_equal(kh_pg_binary_header(&b), 0);
    EXPECT("PGCOPY\n\377\r\n\0" "\0\0\0\0" "\0\0\0\0");
    assert_int_equal(kh_pg_binary_row(&b, 3), 0);
    assert_int_equal(kh_pg_binary_trailer(&b), 0);
    EXPECT("\0\3\377\377");

    /* text: length, raw bytes (nothing escaped); NULL: length -1 */
    assert_int_equal(kh_pg_put_text(&b, KH_PG_BINARY, true, "a\tb\\", 4), 0);
    assert_int_equal(kh_pg_put_text(&b, KH_PG_BINARY, false, NULL, 0), 0);
    assert_int_equal(kh_pg_put_text(&b, KH_PG_BINARY, false, "", 0), 0);
    EXPECT("\0\0\0\4a\tb\\" "\377\377\377\377" "\0\0\0\0");

    /* int8, big-endian two's complement */
    assert_int_equal(kh_pg_put_int(&b, KH_PG_BINARY, true, -2), 0);
    assert_int_equal(kh_pg_put_int(&b, KH_PG_BINARY, false, 0x0102030405060708LL), 0);
    EXPECT("\0\0\0\10" "\377\377\377\377\377\377\377\376" "\0\0\0\10" "\1\2\3\4\5\6\7\10");

    /* float8: IEEE 754 bits, big-endian (1.0 = 0x3ff0000000000000) */
    assert_int_equal(kh_pg_put_real(&b, KH_PG_BINARY, true, 1.0), 0);
    assert_int_equal(kh_pg_put_real(&b, KH_PG_BINARY, false, -0.0), 0);
    EXPECT("\0\0\0\10" "\77\360\0\0\0\0\0\0" "\0\0\0\10" "\200\0\0\0\0\0\0\0");

    /* timestamptz: microseconds since 2000-01-01 UTC; 2000-01-01 + 1 s, and 1970 itself */
    assert_int_equal(kh_pg_put_time(&b, KH_PG_BINARY, true, 946684801000000LL, "unused"), 0);
    EXPECT("\0\0\0\10" "\0\0\0\0\0\17\102\100");
    assert_int_equal(kh_pg_put_time(&b, KH_PG_BINARY, true, 0, "unused"), 0);
    EXPECT("\0\0\0\10" "\377\374\242\376\304\310\40\0"); /* -946684800000000 */

    /* jsonb: version byte 1, then the text; bool: one byte */
    assert_int_equal(kh_pg_put_jsonb(&b, KH_PG_BINARY, true, "{}", 2), 0);
    assert_int_equal(kh_pg_put_jsonb(&b, KH_PG_BINARY, false, NULL, 0), 0);
    EXPECT("\0\0\0\3\1{}" "\377\377\377\377");
    struct kh_value t = {.type = KH_COL_BOOL, .u.b = true};
    struct kh_value j = {.type = KH_COL_JSON, .u.s = "[1]", .len = 3};
    struct kh_value n = {.type = 0};
    assert_int_equal(kh_pg_put_value(&b, KH_PG_BINARY, true, &t), 0);
    assert_int_equal(kh_pg_put_value(&b, KH_PG_BINARY, false, &j), 0);
    assert_int_equal(kh_pg_put_value(&b, KH_PG_BINARY, false, &n), 0);
    EXPECT("\0\0\0\1\1" "\0\0\0\4\1[1]" "\377\377\377\377");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_text_forms_escape, setup, teardown),
        cmocka_unit_test_setup_teardown(test_binary_fields, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
