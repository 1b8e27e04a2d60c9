/*
 * Unit tests of src/sora/envelope.c: the envelope rules of DESIGN 1.3 (each broken rule gives
 * KH_EINVAL and a message that starts with the field name), body-level errors (malformed,
 * truncated, invalid UTF-8, \u0000), limits, and the body's type against its header. The
 * stats -> row mapping, chunked feeding and the node.erlang-vm payload are in
 * test_envelope_rows.c (envelope.c's tests, split by concern: together they pass 1,200 lines).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "kh_test.h"

/* Parses a body expected to fail and checks the code and the message (whole, or its start
 * when prefix is set). */
static void expect_refused(const char *body, const char *expect, bool prefix)
{
    char err[512];
    int rc = kht_parse(body, NULL, err, sizeof(err));
    if (rc != KH_EINVAL)
        fail_msg("expected KH_EINVAL for %s (want '%s'), got %d", body, expect, rc);
    if (prefix)
        kht_assert_prefix(err, expect);
    else
        assert_string_equal(err, expect);
}

static void refuse_key(const char *key, const char *value, const char *expect, bool prefix)
{
    char *body = kht_envelope(NULL, key, value);
    expect_refused(body, expect, prefix);
    free(body);
}

static void refuse_stats(const char *stats, const char *expect)
{
    char *body = kht_envelope(stats, NULL, NULL);
    expect_refused(body, expect, false);
    free(body);
}

static struct kh_report *accept_key(const char *key, const char *value)
{
    return kht_report(NULL, key, value);
}

/* A JSON string of n copies of unit (which may be multibyte). */
static char *json_repeat(const char *unit, size_t n)
{
    size_t u = strlen(unit);
    char *s = malloc(u * n + 3);
    assert_non_null(s);
    s[0] = '"';
    for (size_t i = 0; i < n; i++)
        memcpy(s + 1 + i * u, unit, u);
    s[1 + u * n] = '"';
    s[2 + u * n] = '\0';
    return s;
}

static void test_valid_report(void **state)
{
    (void)state;
    struct kh_report *r = accept_key(NULL, NULL);
    assert_int_equal(r->kind, KH_REPORT_CONNECTION);
    assert_string_equal(r->type.p, "connection.user-agent");
    assert_string_equal(r->id.p, "Q4M2G8T1ZK7B3X9H5N6R0PWC2D");
    assert_string_equal(r->label.p, "WebRTC SFU Sora");
    assert_string_equal(r->version.p, "2023.2.0");
    assert_string_equal(r->node_name.p, "sora@10.0.0.5");
    assert_string_equal(r->channel_id.p, "meeting-room-42");
    assert_int_equal(r->channel_id.len, 15);
    assert_string_equal(r->client_id.p, "alice");
    assert_string_equal(r->session_id.p, KHT_SESSION_ID);
    assert_string_equal(r->connection_id.p, KHT_CONN_ID);
    assert_int_equal(r->connection_id.len, 26);
    assert_string_equal(r->role.p, "sendrecv");
    assert_null(r->bundle_id.p);
    assert_int_equal(r->multistream, 1);
    assert_int_equal(r->simulcast, 0);
    assert_int_equal(r->spotlight, 0);
    assert_string_equal(r->time_text, "2026-11-24T06:15:42.100000Z");
    assert_int_equal(r->time_usec, 1795500942100000LL);
    assert_int_equal(strlen(r->received_text), KH_TIME_TEXT_LEN);
    assert_int_equal(r->nrows, 2);
    assert_true(r->body_bytes > 100);
    const struct kh_row *t = r->rows;
    assert_int_equal(t->table, kht_table("rtc_transport_stats"));
    assert_string_equal(t->stats_type.p, "transport");
    assert_string_equal(t->stats_id.p, "T01");
    assert_true(t->stats_timestamp == 1795500198544.297);
    assert_int_equal(kht_val(t, "bytesSent")->type, KH_COL_INT);
    assert_int_equal(kht_val(t, "bytesSent")->u.i, 56012001);
    assert_string_equal(kht_val(t, "dtlsState")->u.s, "connected");
    assert_int_equal(kht_val(t, "iceState")->type, 0);
    assert_null(t->extra.p);
    const struct kh_row *c = t->next;
    assert_int_equal(c->table, kht_table("rtc_codec_stats"));
    assert_string_equal(c->stats_id.p, "CIT01_111");
    assert_int_equal(kht_val(c, "clockRate")->u.i, 48000);
    assert_null(c->next);
    kh_report_free(r);
}

static void test_time_text_normalised(void **state)
{
    (void)state;
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"\"2026-11-24T06:15:42.1Z\"", "2026-11-24T06:15:42.100000Z"},
        {"\"2026-11-24T06:15:42.123456Z\"", "2026-11-24T06:15:42.123456Z"},
        {"\"2026-11-24T06:15:42.123456789Z\"", "2026-11-24T06:15:42.123456Z"},
        {"\"2026-11-24T06:15:42.5+00:00\"", "2026-11-24T06:15:42.500000Z"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct kh_report *r = accept_key("timestamp", cases[i].in);
        assert_string_equal(r->time_text, cases[i].out);
        kh_report_free(r);
    }
}

struct rule {
    const char *key, *value; /* value NULL: key removed */
    const char *expect;
    bool prefix;
};

static const struct rule rules[] = {
    {"type", NULL, "type: required", false},
    {"type", "5", "type: must be a string, got number", false},
    {"timestamp", NULL, "timestamp: required", false},
    {"timestamp", "null", "timestamp: must be a string, got null", false},
    {"timestamp", "1795500198544", "timestamp: must be a string, got number", false},
    {"timestamp", "\"2026-11-24T06:15:42Z\"", "timestamp: must be RFC 3339", true},
    {"timestamp", "\"2026-11-24 06:15:42.1Z\"", "timestamp: must be RFC 3339", true},
    {"timestamp", "\"2026-02-30T06:15:42.1Z\"", "timestamp: must be RFC 3339", true},
    {"timestamp", "\"2026-11-24T15:15:42.1+09:00\"", "timestamp: must be UTC", true},
    {"timestamp", "\"2026-02-30T06:15:42.1Z\"", "timestamp: ", true},
    {"timestamp", "\"yesterday\"", "timestamp: ", true},
    {"label", NULL, "label: required", false},
    {"label", "\"\"", "label: must not be empty", false},
    {"label", "[]", "label: must be a string, got array", false},
    {"version", NULL, "version: required", false},
    {"version", "\"\"", "version: must not be empty", false},
    {"node_name", NULL, "node_name: required", false},
    {"node_name", "\"\"", "node_name: must not be empty", false},
    {"node_name", "{}", "node_name: must be a string, got object", false},
    {"node_name", "[]", "node_name: must be a string, got array", false},
    {"multistream", NULL, "multistream: required boolean", false},
    {"multistream", "null", "multistream: must be a boolean, got null", false},
    {"multistream", "\"true\"", "multistream: must be a boolean, got string", false},
    {"multistream", "1", "multistream: must be a boolean, got number", false},
    {"simulcast", NULL, "simulcast: required boolean", false},
    {"simulcast", "null", "simulcast: must be a boolean, got null", false},
    {"simulcast", "\"false\"", "simulcast: must be a boolean, got string", false},
    {"spotlight", NULL, "spotlight: required boolean", false},
    {"spotlight", "0", "spotlight: must be a boolean, got number", false},
    {"role", NULL, "role: required", false},
    {"role", "\"viewer\"", "role: must be sendrecv, sendonly or recvonly, got 'viewer'", false},
    {"role", "\"SENDRECV\"", "role: must be sendrecv, sendonly or recvonly", true},
    {"role", "\"\"", "role: must be sendrecv, sendonly or recvonly", true},
    {"role", "true", "role: must be a string, got boolean", false},
    {"channel_id", NULL, "channel_id: required", false},
    {"channel_id", "\"\"", "channel_id: must not be empty", false},
    {"channel_id", "42", "channel_id: must be a string, got number", false},
    {"client_id", NULL, "client_id: required", false},
    {"client_id", "\"\"", "client_id: must not be empty", false},
    {"session_id", NULL, "session_id: required", false},
    {"session_id", "\"7H3KQ2M9ZV1B8C4X6N0R5T2W9\"", "session_id: must be 26 characters, got 25",
     false},
    {"connection_id", NULL, "connection_id: required", false},
    {"connection_id", "\"F2ZK8Q1M7C3V9B5X0N6T4R2W8HX\"",
     "connection_id: must be 26 characters, got 27", false},
    {"connection_id", "null", "connection_id: must be a string, got null", false},
    {"stats", NULL, "stats: required", false},
    {"stats", "{}", "stats: must be an array, got object", false},
    {"stats", "\"[]\"", "stats: must be an array, got string", false},
    {"stats", "null", "stats: must be an array, got null", false},
    {"id", "5", "id: must be a string, got number", false},
    {"bundle_id", "{}", "bundle_id: must be a string, got object", false},
};

static void test_every_rule_broken(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(rules) / sizeof(rules[0]); i++)
        refuse_key(rules[i].key, rules[i].value, rules[i].expect, rules[i].prefix);
}

#define OBJ(members) "{\"id\":\"A\",\"type\":\"codec\",\"timestamp\":1" members "}"

static void test_stats_rules(void **state)
{
    (void)state;
    refuse_stats("[1]", "stats[0]: must be an object, got number");
    refuse_stats("[" OBJ("") ",[]]", "stats[1]: must be an object, got array");
    refuse_stats("[" OBJ("") ",\"x\"]", "stats[1]: must be an object, got string");
    refuse_stats("[" OBJ("") "," OBJ("") ",7]", "stats[2]: must be an object, got number");
    refuse_stats("[null]", "stats[0]: must be an object, got null");
    refuse_stats("[[]]", "stats[0]: must be an object, got array");
    refuse_stats("[{\"id\":\"A\",\"timestamp\":1}]", "stats[0].type: required");
    refuse_stats("[{\"id\":\"A\",\"type\":5,\"timestamp\":1}]",
                 "stats[0].type: must be a string, got number");
    refuse_stats("[{\"type\":\"codec\",\"timestamp\":1}]", "stats[0].id: required");
    refuse_stats("[{\"id\":7,\"type\":\"codec\",\"timestamp\":1}]",
                 "stats[0].id: must be a string, got number");
    refuse_stats("[{\"id\":\"A\",\"type\":\"codec\"}]", "stats[0].timestamp: required");
    refuse_stats("[{\"id\":\"A\",\"type\":\"codec\",\"timestamp\":\"1\"}]",
                 "stats[0].timestamp: must be a number, got string");
    refuse_stats("[{\"id\":\"A\",\"type\":\"codec\",\"timestamp\":null}]",
                 "stats[0].timestamp: must be a number, got null");
    refuse_stats("[" OBJ("") ",{\"id\":\"B\",\"type\":\"codec\",\"timestamp\":1e999}]",
                 "stats[1].timestamp: must be a finite number");
}

/* An array where a string is required is reported as an array, as the envelope keys are. */
static void test_stats_member_array_named_array(void **state)
{
    (void)state;
    refuse_stats("[{\"id\":[],\"type\":\"codec\",\"timestamp\":1}]",
                 "stats[0].id: must be a string, got array");
}

static void test_empty_stats_accepted(void **state)
{
    (void)state;
    char *body = kht_envelope("[]", NULL, NULL);
    struct kh_report *r = NULL;
    assert_int_equal(kht_parse(body, &r, NULL, 0), 0);
    assert_int_equal(r->nrows, 0);
    assert_null(r->rows);
    kh_report_free(r);
    free(body);
}

static void test_byte_lengths(void **state)
{
    (void)state;
    const char *keys[] = {"channel_id", "client_id"};
    for (size_t k = 0; k < 2; k++) {
        char *s1 = json_repeat("a", 1), *s255 = json_repeat("b", 255);
        char *s256 = json_repeat("c", 256), *wide = json_repeat("\xc3\xa9", 128);
        struct kh_report *r = accept_key(keys[k], s1);
        kh_report_free(r);
        r = accept_key(keys[k], s255);
        const struct kh_str *v = k == 0 ? &r->channel_id : &r->client_id;
        assert_int_equal(v->len, 255);
        kh_report_free(r);
        char want[64];
        snprintf(want, sizeof(want), "%s: must be 1..255 bytes, got 256", keys[k]);
        refuse_key(keys[k], s256, want, false);
        /* 128 characters, 256 bytes: the limit counts bytes */
        refuse_key(keys[k], wide, want, false);
        snprintf(want, sizeof(want), "%s: must not be empty", keys[k]);
        refuse_key(keys[k], "\"\"", want, false);
        free(s1), free(s255), free(s256), free(wide);
    }
}

static void test_sora_ids_count_characters(void **state)
{
    (void)state;
    const char *keys[] = {"session_id", "connection_id"};
    for (size_t k = 0; k < 2; k++) {
        /* 25 ASCII + one 2-byte character: 26 characters, 27 bytes */
        const char *ok = "\"ABCDEFGHIJKLMNOPQRSTUVWXY\xc3\xa9\"";
        struct kh_report *r = accept_key(keys[k], ok);
        const struct kh_str *v = k == 0 ? &r->session_id : &r->connection_id;
        assert_int_equal(v->len, 27);
        kh_report_free(r);
        /* 26 ASCII + a 3-byte character */
        char want[64];
        snprintf(want, sizeof(want), "%s: must be 26 characters, got 27", keys[k]);
        refuse_key(keys[k], "\"ABCDEFGHIJKLMNOPQRSTUVWXYZ\xe2\x82\xac\"", want, false);
        snprintf(want, sizeof(want), "%s: must be 26 characters, got 25", keys[k]);
        refuse_key(keys[k], "\"ABCDEFGHIJKLMNOPQRSTUVWX\xc3\xa9\"", want, false);
    }
}

static void test_false_flags_and_roles(void **state)
{
    (void)state;
    char *body = kht_envelope(NULL, "multistream", "false");
    struct kh_report *r = NULL;
    assert_int_equal(kht_parse(body, &r, NULL, 0), 0);
    assert_int_equal(r->multistream, 0);
    assert_int_equal(r->simulcast, 0);
    assert_int_equal(r->spotlight, 0);
    kh_report_free(r);
    free(body);
    r = accept_key("spotlight", "true");
    assert_int_equal(r->spotlight, 1);
    kh_report_free(r);
    const char *roles[] = {"\"sendonly\"", "\"recvonly\"", "\"sendrecv\""};
    for (size_t i = 0; i < 3; i++) {
        r = accept_key("role", roles[i]);
        assert_int_equal(strncmp(r->role.p, roles[i] + 1, 8), 0);
        kh_report_free(r);
    }
}

static void test_webhook_multistream_optional(void **state)
{
    (void)state;
    char *body = kht_build(kht_webhook_base, KHT_DEFAULT_STATS, "multistream", NULL);
    char *with_bundle = kht_build(kht_webhook_base, KHT_DEFAULT_STATS, "bundle_id", "\"B1\"");
    struct kh_report *r = NULL;
    char err[256];
    assert_int_equal(kht_parse_ex(body, strlen(body), 0, KH_REPORT_CONNECTION, KH_FLAVOR_WEBHOOK,
                                  NULL, &r, err, sizeof(err)),
                     0);
    assert_int_equal(r->multistream, -1);
    assert_int_equal(r->nrows, 2);
    kh_report_free(r);
    free(body);
    body = kht_envelope(NULL, "multistream", NULL);
    assert_int_equal(kht_parse(body, NULL, err, sizeof(err)), KH_EINVAL);
    assert_string_equal(err, "multistream: required boolean");
    assert_int_equal(kht_parse_ex(with_bundle, strlen(with_bundle), 0, KH_REPORT_CONNECTION,
                                  KH_FLAVOR_WEBHOOK, NULL, &r, err, sizeof(err)),
                     0);
    assert_string_equal(r->bundle_id.p, "B1");
    kh_report_free(r);
    free(body);
    free(with_bundle);
    /* the webhook still requires the other flags */
    body = kht_build(kht_webhook_base, KHT_DEFAULT_STATS, "simulcast", NULL);
    assert_int_equal(kht_parse_ex(body, strlen(body), 0, KH_REPORT_CONNECTION, KH_FLAVOR_WEBHOOK,
                                  NULL, NULL, err, sizeof(err)),
                     KH_EINVAL);
    assert_string_equal(err, "simulcast: required boolean");
    free(body);
}

static void test_unknown_keys_ignored(void **state)
{
    (void)state;
    static const char *values[] = {
        "{\"a\":[1,{\"b\":[true,null,\"x\\\"y\"]}],\"c\":{},\"stats\":7}",
        "[[[]],{\"role\":\"bogus\"},\"\\u0000\"]",
        "null",
        "-1.5e300",
        "\"anything\"",
    };
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        struct kh_report *r = accept_key("sora_extension", values[i]);
        assert_int_equal(r->nrows, 2);
        assert_string_equal(r->role.p, "sendrecv");
        kh_report_free(r);
    }
    /* an unknown key before a known one does not disturb it */
    char *body = kht_envelope(NULL, NULL, NULL);
    char *shifted = malloc(strlen(body) + 64);
    if (shifted == NULL)
        abort();
    sprintf(shifted, "{\"z\":{\"channel_id\":\"no\"},%s", body + 1);
    struct kh_report *r = NULL;
    assert_int_equal(kht_parse(shifted, &r, NULL, 0), 0);
    assert_string_equal(r->channel_id.p, "meeting-room-42");
    kh_report_free(r);
    free(shifted);
    free(body);
}

static void test_body_errors(void **state)
{
    (void)state;
    char *good = kht_envelope(NULL, NULL, NULL);
    size_t n = strlen(good);
    char err[512];
    /* truncated inside a structure or a string, and right before the last brace */
    size_t cuts[] = {1, (size_t)(strstr(good, "WebRTC") - good) + 3,
                     (size_t)(strstr(good, "\"stats\"") - good), n - 1};
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(kht_parse_ex(good, cuts[i], 0, KH_REPORT_CONNECTION,
                                      KH_FLAVOR_EXPORTER, NULL, NULL, err, sizeof(err)),
                         KH_EINVAL);
        kht_assert_prefix(err, "body: truncated JSON");
    }
    /* inside a literal: yajl calls it a lexical error, still a body error */
    size_t lit = (size_t)(strstr(good, ": tru") - good) + 4;
    assert_int_equal(kht_parse_ex(good, lit, 0, KH_REPORT_CONNECTION, KH_FLAVOR_EXPORTER, NULL,
                                  NULL, err, sizeof(err)),
                     KH_EINVAL);
    kht_assert_prefix(err, "body: ");
    assert_int_equal(kht_parse_ex("", 0, 0, KH_REPORT_CONNECTION, KH_FLAVOR_EXPORTER, NULL,
                                  NULL, err, sizeof(err)),
                     KH_EINVAL);
    kht_assert_prefix(err, "body: empty");
    expect_refused("[]", "body: must be a JSON object, got array", false);
    expect_refused("\"report\"", "body: must be a JSON object, got string", false);
    expect_refused("42", "body: must be a JSON object, got number", false);
    expect_refused("null", "body: must be a JSON object, got null", false);
    expect_refused("{\"type\" \"x\"}", "body: malformed JSON", true);
    expect_refused("{'type': 'x'}", "body: malformed JSON", true);
    expect_refused("{\"type\":\"connection.user-agent\",}", "body: malformed JSON", true);
    expect_refused("{\"stats\":[NaN]}", "body: malformed JSON", true);
    expect_refused("{\"type\": x}", "body: malformed JSON at byte", true);
    expect_refused("{\"type\":\"\xff\"}", "body: malformed JSON", true);
    expect_refused("{\"type\":\"connection.user-agent\"} {}", "body: malformed JSON", true);
    /* a complete envelope followed by more */
    char *twice = malloc(2 * n + 1);
    if (twice == NULL)
        abort();
    sprintf(twice, "%s%s", good, good);
    expect_refused(twice, "body: ", true);
    sprintf(twice, "%s x", good);
    expect_refused(twice, "body: ", true);
    free(twice);
    free(good);
}

static void test_invalid_utf8(void **state)
{
    (void)state;
    refuse_key("label", "\"Sora \xff\"", "body: malformed JSON", true);
    refuse_key("client_id", "\"\x80\"", "body: malformed JSON", true); /* lone continuation */
    refuse_key("role", "\"\xf8\x88\x80\x80\x80\"", "body: malformed JSON", true);
    char *body = kht_envelope("[{\"id\":\"A\",\"type\":\"codec\",\"timestamp\":1,"
                              "\"mimeType\":\"x\xe2\x82\"}]", /* cut 3-byte sequence */
                              NULL, NULL);
    expect_refused(body, "body: malformed JSON", true);
    free(body);
}

/* Strict UTF-8 (RFC 3629): what PostgreSQL text and jsonb accept. */
static bool utf8_valid(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        size_t k = c < 0x80 ? 0 : c >= 0xC2 && c <= 0xDF ? 1 : c >= 0xE0 && c <= 0xEF ? 2
                               : c >= 0xF0 && c <= 0xF4 ? 3 : 9;
        if (k == 9 || i + k >= n + (k == 0))
            return false;
        unsigned lo = 0x80, hi = 0xBF;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
        for (size_t j = 1; j <= k; j++, lo = 0x80, hi = 0xBF)
            if (s[i + j] < lo || s[i + j] > hi)
                return false;
        i += k + 1;
    }
    return true;
}

/* The same checks at every position of a longer string: the checker skips runs of plain
 * ASCII eight bytes at a time, so a bad byte must be caught wherever it falls in a run. */
static void test_invalid_utf8_at_every_offset(void **state)
{
    (void)state;
    /* the sequences yajl itself lets through (it refuses stray bytes like \xff on its own) */
    static const char *bad[] = {"\xc0\xaf", "\xed\xa0\x80", "\xe0\x80\xaf",
                                "\xf4\x90\x80\x80", "\\u0000"};
    for (size_t b = 0; b < sizeof(bad) / sizeof(bad[0]); b++)
        for (int off = 0; off < 20; off++) {
            char label[96];
            snprintf(label, sizeof(label), "\"%.*s%sbbbbbbbbb\"", off,
                     "aaaaaaaaaaaaaaaaaaaaaaaa", bad[b]);
            char *body = kht_envelope(NULL, "label", label);
            struct kh_report *r = NULL;
            char err[256] = "";
            int rc = kht_parse(body, &r, err, sizeof(err));
            if (rc == 0)
                fail_msg("bad byte %zu at offset %d accepted", b, off);
            if (strstr(err, "label: must") == NULL)
                fail_msg("bad byte %zu at offset %d: %s", b, off, err);
            free(body);
        }
    /* and a long clean string, multi-byte characters included, passes */
    char *body = kht_envelope(NULL, "label", "\"WebRTC SFU Sora \xc3\xa9\xe2\x82\xac "
                                             "0123456789abcdef\xf0\x90\x8d\x88xyz\"");
    struct kh_report *r = NULL;
    assert_int_equal(kht_parse(body, &r, NULL, 0), 0);
    assert_int_equal(r->label.len, 45);
    kh_report_free(r);
    free(body);
}

/* Byte sequences yajl lets through although they are not UTF-8 (overlong forms, UTF-16
 * surrogates, code points above U+10FFFF, a lone surrogate escape). DESIGN 4: PostgreSQL
 * rejects them, so kohaku must refuse them (or store valid text), never pass them on. */
static void test_invalid_utf8_strict(void **state)
{
    (void)state;
    static const struct {
        const char *name, *json;
    } bad[] = {{"overlong C0 AF", "\"\xc0\xaf\""},
               {"overlong E0 80 AF", "\"\xe0\x80\xaf\""},
               {"surrogate ED A0 80", "\"\xed\xa0\x80\""},
               {"above U+10FFFF F4 90 80 80", "\"\xf4\x90\x80\x80\""},
               {"escape \\udc00", "\"\\udc00\""}};
    /* the checker itself accepts real UTF-8 */
    assert_true(utf8_valid((const unsigned char *)"a\xc3\xa9\xe2\x82\xac\xf0\x90\x8d\x88", 10));
    assert_false(utf8_valid((const unsigned char *)"\xc3", 1));
    char failures[4096] = "";
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        for (int where = 0; where < 3; where++) {
            char stats[256];
            snprintf(stats, sizeof(stats),
                     "[{\"id\":\"A\",\"type\":\"codec\",\"timestamp\":1,\"%s\":%s}]",
                     where == 1 ? "mimeType" : "vendorText", bad[i].json);
            char *body = where == 0 ? kht_envelope(NULL, "label", bad[i].json)
                                    : kht_envelope(stats, NULL, NULL);
            struct kh_report *r = NULL;
            if (kht_parse(body, &r, NULL, 0) == 0) {
                const struct kh_str *s = where == 0 ? &r->label : &r->rows->extra;
                const struct kh_value *v = where == 1 ? kht_val(r->rows, "mimeType") : NULL;
                bool ok = v ? utf8_valid((const unsigned char *)v->u.s, v->len)
                            : utf8_valid((const unsigned char *)s->p, s->len);
                if (!ok)
                    snprintf(failures + strlen(failures), sizeof(failures) - strlen(failures),
                             "%s%s stored as invalid UTF-8 in %s", failures[0] ? "; " : "",
                             bad[i].name, where == 0 ? "label" : where == 1 ? "mimeType" : "extra");
                kh_report_free(r);
            }
            free(body);
        }
    }
    if (failures[0])
        fail_msg("%s", failures);
}

static void test_nul_refused(void **state)
{
    (void)state;
    refuse_key("label", "\"Sora\\u0000\"", "label: must not contain \\u0000", false);
    refuse_key("channel_id", "\"a\\u0000b\"", "channel_id: must not contain \\u0000", false);
    refuse_key("client_id", "\"a\\u0000b\"", "client_id: must not contain \\u0000", false);
    /* a stats string member: after "type" (fast path) and before it */
    refuse_stats("[{\"id\":\"A\",\"type\":\"transport\",\"timestamp\":1,"
                 "\"dtlsState\":\"x\\u0000\"}]",
                 "stats[0].dtlsState: must not contain \\u0000");
    refuse_stats("[{\"dtlsState\":\"\\u0000\",\"id\":\"A\",\"type\":\"transport\","
                 "\"timestamp\":1}]",
                 "stats[0].dtlsState: must not contain \\u0000");
    refuse_stats("[{\"id\":\"A\",\"type\":\"codec\",\"timestamp\":1,\"mimeType\":\"a\\u0000\"}]",
                 "stats[0].mimeType: must not contain \\u0000");
    refuse_stats("[{\"id\":\"A\",\"type\":\"transport\",\"timestamp\":1,\"vendor\":\"\\u0000\"}]",
                 "stats[0].vendor: must not contain \\u0000");
    refuse_stats("[{\"id\":\"A\\u0000\",\"type\":\"codec\",\"timestamp\":1}]",
                 "stats[0].id: must not contain \\u0000");
    refuse_stats("[{\"id\":\"A\",\"type\":\"codec\",\"timestamp\":1,\"a\\u0000\":1}]",
                 "stats[0]: member names must not contain \\u0000");
    /* nested inside a member value */
    char err[256];
    char *body = kht_envelope("[{\"id\":\"A\",\"type\":\"codec\",\"timestamp\":1,"
                              "\"v\":{\"k\":[\"\\u0000\"]}}]",
                              NULL, NULL);
    assert_int_equal(kht_parse(body, NULL, err, sizeof(err)), KH_EINVAL);
    kht_assert_prefix(err, "stats[0].");
    free(body);
}

static void test_depth_limit(void **state)
{
    (void)state;
    struct kh_envelope_limits lim = kh_envelope_default_limits;
    lim.max_depth = 8;
    char err[256];
    /* body object 1, stats array 2, stats object 3, then k nested arrays */
    for (int k = 5; k <= 6; k++) {
        char v[64] = "";
        for (int i = 0; i < k; i++)
            strcat(v, "[");
        strcat(v, "1");
        for (int i = 0; i < k; i++)
            strcat(v, "]");
        char stats[160];
        snprintf(stats, sizeof(stats), "[{\"id\":\"A\",\"type\":\"codec\",\"timestamp\":1,"
                                       "\"deep\":%s}]", v);
        char *body = kht_envelope(stats, NULL, NULL);
        struct kh_report *r = NULL;
        int rc = kht_parse_ex(body, strlen(body), 0, KH_REPORT_CONNECTION, KH_FLAVOR_EXPORTER,
                              &lim, &r, err, sizeof(err));
        if (k == 5) {
            assert_int_equal(rc, 0);
            assert_string_equal(r->rows->extra.p, "{\"deep\":[[[[[1]]]]]}");
            kh_report_free(r);
        } else {
            assert_int_equal(rc, KH_EINVAL);
            assert_string_equal(err, "body: JSON nested deeper than 8 levels");
        }
        free(body);
    }
    /* the default limit also holds for skipped unknown envelope keys */
    char deep[200] = "";
    for (int i = 0; i < 40; i++)
        strcat(deep, "[");
    for (int i = 0; i < 40; i++)
        strcat(deep, "]");
    refuse_key("unknown", deep, "body: JSON nested deeper than", true);
    /* and a lower limit for them, in the body's first piece */
    lim.max_depth = 5;
    char *body = kht_envelope(NULL, "x", "[[[[[[1]]]]]]");
    struct kh_envelope *e = kh_envelope_new(KH_REPORT_CONNECTION, KH_FLAVOR_EXPORTER, &lim);
    assert_non_null(e);
    assert_int_equal(kh_envelope_feed(e, body, strlen(body)), KH_EINVAL);
    assert_string_equal(kh_envelope_error(e), "body: JSON nested deeper than 5 levels");
    kh_envelope_free(e);
    free(body);
}

static void test_max_stats(void **state)
{
    (void)state;
    struct kh_envelope_limits lim = kh_envelope_default_limits;
    lim.max_stats = 2;
    const char *two = "[" OBJ("") "," OBJ("") "]";
    const char *three = "[" OBJ("") "," OBJ("") "," OBJ("") "]";
    char *b2 = kht_envelope(two, NULL, NULL), *b3 = kht_envelope(three, NULL, NULL);
    char err[256];
    struct kh_report *r = NULL;
    assert_int_equal(kht_parse_ex(b2, strlen(b2), 0, KH_REPORT_CONNECTION, KH_FLAVOR_EXPORTER,
                                  &lim, &r, err, sizeof(err)),
                     0);
    assert_int_equal(r->nrows, 2);
    kh_report_free(r);
    assert_int_equal(kht_parse_ex(b3, strlen(b3), 0, KH_REPORT_CONNECTION, KH_FLAVOR_EXPORTER,
                                  &lim, NULL, err, sizeof(err)),
                     KH_EINVAL);
    assert_string_equal(err, "stats: more than 2 objects");
    /* refused while the body streams in, not at its end */
    struct kh_envelope *e = kh_envelope_new(KH_REPORT_CONNECTION, KH_FLAVOR_EXPORTER, &lim);
    assert_non_null(e);
    assert_int_equal(kh_envelope_feed(e, b3, strlen(b3)), KH_EINVAL);
    assert_string_equal(kh_envelope_error(e), "stats: more than 2 objects");
    kh_envelope_free(e);
    free(b2);
    free(b3);
}

/* Keys the envelope may carry or leave out: id (absent or null), and bundle_id from the
 * exporter too. */
static void test_optional_keys(void **state)
{
    (void)state;
    struct kh_report *r = accept_key("id", NULL);
    assert_null(r->id.p);
    kh_report_free(r);
    r = accept_key("id", "null");
    assert_null(r->id.p);
    kh_report_free(r);
    r = accept_key("bundle_id", "\"b\"");
    assert_string_equal(r->bundle_id.p, "b");
    kh_report_free(r);
}

/* The body's type must be the one its header announced, naming both when it is not. */
static void test_type_matches_header(void **state)
{
    (void)state;
    refuse_key("type", "\"node.erlang-vm\"",
               "type: 'node.erlang-vm' does not match the x-sora-stats-exporter-type header "
               "'connection.user-agent'",
               false);
    refuse_key("type", "\"connection.rtc\"",
               "type: 'connection.rtc' does not match the x-sora-stats-exporter-type", true);
    char err[256];
    char *body = kht_build(kht_node_base, "[{\"type\":\"erlang-vm-memory\",\"total\":1}]", "type",
                           "\"connection.user-agent\"");
    assert_int_equal(kht_parse_ex(body, strlen(body), 0, KH_REPORT_NODE, KH_FLAVOR_EXPORTER,
                                  NULL, NULL, err, sizeof(err)),
                     KH_EINVAL);
    assert_string_equal(err, "type: 'connection.user-agent' does not match the "
                             "x-sora-stats-exporter-type header 'node.erlang-vm'");
    free(body);
    body = kht_envelope(NULL, NULL, NULL);
    assert_int_equal(kht_parse_ex(body, strlen(body), 0, KH_REPORT_CONNECTION, KH_FLAVOR_WEBHOOK,
                                  NULL, NULL, err, sizeof(err)),
                     KH_EINVAL);
    assert_string_equal(err, "type: 'connection.user-agent' does not match the "
                             "sora-stats-webhook-type header 'connection.rtc'");
    free(body);
    body = kht_build(kht_webhook_base, KHT_DEFAULT_STATS, NULL, NULL);
    assert_int_equal(kht_parse_ex(body, strlen(body), 0, KH_REPORT_CONNECTION, KH_FLAVOR_WEBHOOK,
                                  NULL, NULL, err, sizeof(err)),
                     0);
    free(body);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_report),
        cmocka_unit_test(test_time_text_normalised),
        cmocka_unit_test(test_every_rule_broken),
        cmocka_unit_test(test_stats_rules),
        cmocka_unit_test(test_stats_member_array_named_array),
        cmocka_unit_test(test_empty_stats_accepted),
        cmocka_unit_test(test_byte_lengths),
        cmocka_unit_test(test_sora_ids_count_characters),
        cmocka_unit_test(test_false_flags_and_roles),
        cmocka_unit_test(test_webhook_multistream_optional),
        cmocka_unit_test(test_unknown_keys_ignored),
        cmocka_unit_test(test_body_errors),
        cmocka_unit_test(test_invalid_utf8),
        cmocka_unit_test(test_invalid_utf8_strict),
        cmocka_unit_test(test_invalid_utf8_at_every_offset),
        cmocka_unit_test(test_nul_refused),
        cmocka_unit_test(test_depth_limit),
        cmocka_unit_test(test_max_stats),
        cmocka_unit_test(test_optional_keys),
        cmocka_unit_test(test_type_matches_header),
    };
    return cmocka_run_group_tests(tests, kht_schema_setup, kht_schema_teardown);
}
