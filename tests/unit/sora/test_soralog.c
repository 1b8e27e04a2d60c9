/*
 * Unit tests of src/sora/soralog.c: format detection from a line (rtc_stats.jsonl, webhook
 * logs, bodies, and what is none of them), the spans of a line's members and values as
 * written (exponents, escapes, blanks, nested values), the type of "req" (and not a type
 * nested deeper), stopping at the type, and the refusals (malformed, truncated, not an
 * object, too many members) with the byte they name. The format names.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "core/errors.h"
#include "sora/soralog.h"

static struct kh_soraline l;

static int parse(const char *line, bool stop)
{
    return kh_soraline_parse(&l, line, strlen(line), stop);
}

static void assert_span(const char *line, struct kh_span s, const char *want)
{
    if (s.len != strlen(want) || memcmp(line + s.off, want, s.len) != 0)
        fail_msg("span '%.*s' is not '%s'", (int)s.len, line + s.off, want);
}

static const char rtc_line[] =
    "{\"connection_id\":\"W56JLRJEYNIZ4TOADMXTOE3RRU\",\"id\":\"ACXBNIPYCRTBDNXON2AWZUEUGI\","
    "\"label\":\"WebRTC SFU Sora\",\"timestamp\":\"2026-11-30T09:00:00.123456Z\","
    "\"type\":\"connection.rtc\",\"spotlight\":false,\"simulcast\": false ,"
    "\"rtc_data\":{\"id\":\"T01\",\"timestamp\":1.75342361155652490234e+12,"
    "\"type\":\"transport\",\"nested\":{\"type\":\"x\"},\"list\":[1,{\"a\":[]}]},"
    "\"rtc_id\":\"T01\",\"rtc_timestamp\":1.75342361155652490234e+12,\"rtc_type\":\"transport\"}";

static void test_detect(void **state)
{
    (void)state;
    assert_int_equal(parse(rtc_line, false), 0);
    assert_int_equal(kh_soralog_detect(&l), KH_SORALOG_RTC_STATS);
    assert_int_equal(parse("{\"id\":\"X\",\"timestamp\":\"t\",\"req\":{\"type\":"
                           "\"session.created\"}}", false), 0);
    assert_int_equal(kh_soralog_detect(&l), KH_SORALOG_WEBHOOK_LOG);
    assert_int_equal(parse("{\"type\":\"connection.user-agent\",\"stats\":[]}", false), 0);
    assert_int_equal(kh_soralog_detect(&l), KH_SORALOG_BODIES);
    assert_int_equal(parse("{\"stats\":[], \"type\": 3}", false), 0);
    assert_int_equal(kh_soralog_detect(&l), KH_SORALOG_AUTO); /* a type that is no string */
    assert_int_equal(parse("{}", false), 0);
    assert_int_equal(kh_soralog_detect(&l), KH_SORALOG_AUTO);
}

static void test_members(void **state)
{
    (void)state;
    assert_int_equal(parse(rtc_line, false), 0);
    assert_int_equal(l.nmembers, 11);
    assert_span(rtc_line, l.member[0], "\"connection_id\":\"W56JLRJEYNIZ4TOADMXTOE3RRU\"");
    assert_int_equal(l.key[0], KH_SK_CONNECTION_ID);
    assert_span(rtc_line, l.member[6], "\"simulcast\": false");
    assert_int_equal(l.key[6], KH_SK_OTHER);
    assert_span(rtc_line, l.value[KH_SK_CONNECTION_ID], "\"W56JLRJEYNIZ4TOADMXTOE3RRU\"");
    assert_span(rtc_line, l.value[KH_SK_ID], "\"ACXBNIPYCRTBDNXON2AWZUEUGI\"");
    assert_span(rtc_line, l.value[KH_SK_TIMESTAMP], "\"2026-11-30T09:00:00.123456Z\"");
    assert_span(rtc_line, l.value[KH_SK_RTC_TIMESTAMP], "1.75342361155652490234e+12");
    assert_span(rtc_line, l.value[KH_SK_RTC_DATA],
                "{\"id\":\"T01\",\"timestamp\":1.75342361155652490234e+12,\"type\":\"transport\","
                "\"nested\":{\"type\":\"x\"},\"list\":[1,{\"a\":[]}]}");
    assert_int_equal(l.key[7], KH_SK_RTC_DATA);
    assert_true(l.has_type);
    assert_string_equal(l.type, "connection.rtc");
    assert_false(l.has_req_type);
}

/* Blanks anywhere, escapes in keys and strings: the spans are the text as written. */
static void test_members_as_written(void **state)
{
    (void)state;
    const char line[] = "  { \"a\\u0062\" :\t[ 1 , 2 ] ,\n\"id\" : \"x\\\"y\" , \"n\":-0.5E-3 }  ";
    assert_int_equal(parse(line, false), 0);
    assert_int_equal(l.nmembers, 3);
    assert_span(line, l.member[0], "\"a\\u0062\" :\t[ 1 , 2 ]");
    assert_span(line, l.member[1], "\"id\" : \"x\\\"y\"");
    assert_span(line, l.value[KH_SK_ID], "\"x\\\"y\"");
    assert_span(line, l.member[2], "\"n\":-0.5E-3");
    /* a key spelt with an escape is still the key */
    const char esc[] = "{\"r\\u0065q\":{\"typ\\u0065\":\"connection.rtc\"}}";
    assert_int_equal(parse(esc, false), 0);
    assert_true(l.req_object);
    assert_string_equal(l.req_type, "connection.rtc");
}

static void test_req_type(void **state)
{
    (void)state;
    /* only req's own type counts, not one nested deeper or an outer one */
    const char line[] = "{\"type\":\"outer\",\"req\":{\"x\":{\"type\":\"deep\"},\"list\":"
                        "[{\"type\":\"in-array\"}],\"type\":\"connection.rtc\",\"stats\":[]},"
                        "\"id\":\"I\"}";
    assert_int_equal(parse(line, false), 0);
    assert_string_equal(l.type, "outer");
    assert_true(l.has_req_type);
    assert_string_equal(l.req_type, "connection.rtc");
    assert_span(line, l.value[KH_SK_REQ], "{\"x\":{\"type\":\"deep\"},\"list\":[{\"type\":"
                                           "\"in-array\"}],\"type\":\"connection.rtc\","
                                           "\"stats\":[]}");
    assert_int_equal(parse("{\"req\":[{\"type\":\"connection.rtc\"}]}", false), 0);
    assert_false(l.req_object);
    assert_false(l.has_req_type);
    assert_int_equal(parse("{\"req\":{\"type\":7}}", false), 0);
    assert_true(l.req_object);
    assert_false(l.has_req_type);
    /* a long type is cut, and so matches no known one */
    assert_int_equal(parse("{\"type\":\"connection.rtc-but-far-longer-than-any-type-there-is\"}",
                           false), 0);
    assert_int_equal(strlen(l.type), 47);
}

/* bodies: the type is all that is read; a break after it is the envelope parser's. */
static void test_stop_at_type(void **state)
{
    (void)state;
    assert_int_equal(parse("{\"type\":\"node.erlang-vm\",\"stats\":[ broken", true), 0);
    assert_string_equal(l.type, "node.erlang-vm");
    assert_int_equal(parse("{\"stats\":[],\"type\":\"connection.rtc\"}", true), 0);
    assert_string_equal(l.type, "connection.rtc");
    assert_int_equal(parse("{\"stats\":[{\"type\":\"codec\"}]}", true), 0);
    assert_false(l.has_type);
}

static void refused(const char *line, const char *want)
{
    assert_int_equal(parse(line, false), KH_EINVAL);
    if (strncmp(l.err, want, strlen(want)) != 0)
        fail_msg("'%s': error '%s' does not start with '%s'", line, l.err, want);
}

static void test_refused(void **state)
{
    (void)state;
    refused("{\"a\":1,\"b\":", "line: truncated JSON (ends after 11 bytes)");
    refused("{\"connection_id\":\"W56J", "line: truncated JSON (ends after 22 bytes)");
    refused("{\"a\":1}}", "line: malformed JSON at byte");
    refused("{\"a\":tru}", "line: malformed JSON at byte");
    refused("{\"a\":\"\xff\"}", "line: malformed JSON at byte");
    refused("[1,2]", "line: must be a JSON object, got an array");
    refused("\"text\"", "line: must be a JSON object");
    refused("17", "line: must be a JSON object");
    refused("{\"a\":1} {\"b\":2}", "line: malformed JSON at byte");
    refused("", "line: truncated JSON (ends after 0 bytes)");
    char many[4096];
    size_t n = (size_t)sprintf(many, "{");
    for (int i = 0; i < 129; i++)
        n += (size_t)sprintf(many + n, "%s\"k%d\":%d", i ? "," : "", i, i);
    sprintf(many + n, "}");
    refused(many, "line: more than 128 top-level members");
}

static void test_format_names(void **state)
{
    (void)state;
    const char *names[] = {"auto", "rtc-stats", "webhook-log", "bodies"};
    for (int i = 0; i < 4; i++) {
        enum kh_soralog_format f;
        assert_int_equal(kh_soralog_format_parse(names[i], &f), 0);
        assert_int_equal(f, i);
        assert_string_equal(kh_soralog_format_name(f), names[i]);
    }
    enum kh_soralog_format f;
    assert_int_equal(kh_soralog_format_parse("jsonl", &f), KH_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_detect),
        cmocka_unit_test(test_members),
        cmocka_unit_test(test_members_as_written),
        cmocka_unit_test(test_req_type),
        cmocka_unit_test(test_stop_at_type),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_format_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
