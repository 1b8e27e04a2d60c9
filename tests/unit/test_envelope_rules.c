/*
 * Unit tests of the envelope rules (DESIGN 1.3) for both payload types: each rule broken
 * gives KH_EINVAL and a message that starts with the field name; valid edge cases pass.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/errors.h"
#include "sora/envelope.h"
#include "sora/schema.h"

struct kv {
    const char *key;
    const char *value; /* JSON text */
};

static const struct kv conn_base[] = {
    {"type", "\"connection.user-agent\""},
    {"id", "\"Q4M2G8T1ZK7B3X9H5N6R0PWC2D\""},
    {"timestamp", "\"2026-11-24T06:15:42.123456Z\""},
    {"label", "\"WebRTC SFU Sora\""},
    {"version", "\"2024.1.0\""},
    {"node_name", "\"sora@10.0.0.5\""},
    {"multistream", "true"},
    {"simulcast", "false"},
    {"spotlight", "false"},
    {"role", "\"sendrecv\""},
    {"channel_id", "\"room\""},
    {"session_id", "\"7H3KQ2M9ZV1B8C4X6N0R5T2W9E\""},
    {"client_id", "\"alice\""},
    {"connection_id", "\"F2ZK8Q1M7C3V9B5X0N6T4R2W8H\""},
    {"stats", "[{\"id\":\"T01\",\"type\":\"transport\",\"timestamp\":1795500198544.297,"
              "\"bytesSent\":56012001}]"},
    {NULL, NULL},
};

/* The stats webhook's envelope: type connection.rtc and a bundle_id. */
static const struct kv webhook_base[] = {
    {"type", "\"connection.rtc\""},
    {"id", "\"Q4M2G8T1ZK7B3X9H5N6R0PWC2D\""},
    {"timestamp", "\"2026-11-24T06:15:42.123456Z\""},
    {"label", "\"WebRTC SFU Sora\""},
    {"version", "\"2024.1.0\""},
    {"node_name", "\"sora@10.0.0.5\""},
    {"multistream", "true"},
    {"simulcast", "false"},
    {"spotlight", "false"},
    {"role", "\"sendrecv\""},
    {"channel_id", "\"room\""},
    {"session_id", "\"7H3KQ2M9ZV1B8C4X6N0R5T2W9E\""},
    {"client_id", "\"alice\""},
    {"bundle_id", "\"alice-bundle\""},
    {"connection_id", "\"F2ZK8Q1M7C3V9B5X0N6T4R2W8H\""},
    {"stats", "[]"},
    {NULL, NULL},
};

static const struct kv node_base[] = {
    {"type", "\"node.erlang-vm\""},
    {"timestamp", "\"2026-11-24T06:15:42.5Z\""},
    {"label", "\"WebRTC SFU Sora\""},
    {"version", "\"2024.1.0\""},
    {"node_name", "\"sora@10.0.0.5\""},
    {"id", "\"Q4M2G8T1ZK7B3X9H5N6R0PWC2D\""},
    {"stats", "[{\"type\":\"erlang-vm-memory\",\"total\":100,\"processes\":1,"
              "\"processes_used\":2,\"system\":3,\"atom\":4,\"atom_used\":5,\"binary\":6,"
              "\"code\":7,\"ets\":8},{\"type\":\"erlang-vm-other\",\"x\":1}]"},
    {NULL, NULL},
};

/* The base envelope with `key` set to `value` (NULL value: key removed; key not in the base:
 * added at the end). */
static char *build(const struct kv *base, const char *key, const char *value)
{
    static char buf[1 << 16];
    size_t n = 0;
    bool found = false;
    n += (size_t)snprintf(buf + n, sizeof(buf) - n, "{");
    for (const struct kv *p = base; p->key; p++) {
        const char *v = p->value;
        if (key && strcmp(p->key, key) == 0) {
            found = true;
            v = value;
        }
        if (v)
            n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%s\"%s\":%s", n > 1 ? "," : "",
                                  p->key, v);
    }
    if (key && !found && value)
        n += (size_t)snprintf(buf + n, sizeof(buf) - n, ",\"%s\":%s", key, value);
    snprintf(buf + n, sizeof(buf) - n, "}");
    return buf;
}

static int run(enum kh_report_kind kind, enum kh_envelope_flavor flavor, const char *body,
               char *msg, size_t msglen, struct kh_report **out)
{
    struct kh_envelope *e = kh_envelope_new(kind, flavor, NULL);
    assert_non_null(e);
    int rc = kh_envelope_feed(e, body, strlen(body));
    if (rc == 0)
        rc = kh_envelope_finish(e);
    snprintf(msg, msglen, "%s", rc ? kh_envelope_error(e) : "");
    if (out)
        *out = rc == 0 ? kh_envelope_take_report(e) : NULL;
    kh_envelope_free(e);
    return rc;
}

static void expect_refused(const struct kv *base, enum kh_report_kind kind, const char *key,
                           const char *value, const char *prefix)
{
    char msg[512];
    int rc = run(kind, KH_FLAVOR_EXPORTER, build(base, key, value), msg, sizeof(msg), NULL);
    if (rc != KH_EINVAL || strncmp(msg, prefix, strlen(prefix)) != 0)
        fail_msg("%s=%s: rc %d, message '%s', wanted '%s...'", key, value ? value : "(absent)",
                 rc, msg, prefix);
}

static void expect_ok(const struct kv *base, enum kh_report_kind kind, const char *key,
                      const char *value)
{
    char msg[512];
    struct kh_report *r = NULL;
    int rc = run(kind, KH_FLAVOR_EXPORTER, build(base, key, value), msg, sizeof(msg), &r);
    if (rc != 0)
        fail_msg("%s=%s refused: %s", key, value ? value : "(absent)", msg);
    kh_report_free(r);
}

static void connection_rules(void **state)
{
    static const struct {
        const char *key, *value, *prefix;
    } cases[] = {
        {"type", NULL, "type: required"},
        {"type", "1", "type: must be a string, got number"},
        {"timestamp", NULL, "timestamp: required"},
        {"timestamp", "\"2026-11-24T06:15:42Z\"", "timestamp: must be RFC 3339"},
        {"timestamp", "\"2026-11-24 06:15:42.1Z\"", "timestamp: must be RFC 3339"},
        {"timestamp", "\"2026-02-30T06:15:42.1Z\"", "timestamp: must be RFC 3339"},
        {"timestamp", "\"2026-11-24T06:15:42.1+09:00\"", "timestamp: must be UTC"},
        {"timestamp", "1795500198544", "timestamp: must be a string, got number"},
        {"label", NULL, "label: required"},
        {"label", "\"\"", "label: must not be empty"},
        {"version", NULL, "version: required"},
        {"version", "\"\"", "version: must not be empty"},
        {"node_name", NULL, "node_name: required"},
        {"node_name", "[]", "node_name: must be a string, got array"},
        {"multistream", NULL, "multistream: required boolean"},
        {"multistream", "null", "multistream: must be a boolean, got null"},
        {"simulcast", NULL, "simulcast: required boolean"},
        {"simulcast", "\"false\"", "simulcast: must be a boolean, got string"},
        {"spotlight", NULL, "spotlight: required boolean"},
        {"spotlight", "0", "spotlight: must be a boolean, got number"},
        {"role", NULL, "role: required"},
        {"role", "\"viewer\"", "role: must be sendrecv, sendonly or recvonly, got 'viewer'"},
        {"channel_id", NULL, "channel_id: required"},
        {"channel_id", "\"\"", "channel_id: must not be empty"},
        {"channel_id",
         "\"cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
         "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
         "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
         "cccccccccccccccc\"",
         "channel_id: must be 1..255 bytes, got 256"},
        {"client_id", NULL, "client_id: required"},
        {"client_id", "\"\"", "client_id: must not be empty"},
        {"client_id", "\"a\\u0000b\"", "client_id: must not contain \\u0000"},
        {"session_id", NULL, "session_id: required"},
        {"session_id", "\"7H3KQ2M9ZV1B8C4X6N0R5T2W9\"", "session_id: must be 26 characters, got 25"},
        {"connection_id", NULL, "connection_id: required"},
        {"connection_id", "\"F2ZK8Q1M7C3V9B5X0N6T4R2W8HX\"",
         "connection_id: must be 26 characters, got 27"},
        {"stats", NULL, "stats: required"},
        {"stats", "{}", "stats: must be an array, got object"},
        {"stats", "null", "stats: must be an array, got null"},
        {"stats", "[1]", "stats[0]: must be an object, got number"},
        {"stats", "[{\"id\":\"a\",\"type\":\"codec\",\"timestamp\":1},[]]",
         "stats[1]: must be an object, got array"},
        {"stats", "[{\"id\":\"a\",\"timestamp\":1}]", "stats[0].type: required"},
        {"stats", "[{\"id\":\"a\",\"type\":7,\"timestamp\":1}]",
         "stats[0].type: must be a string, got number"},
        {"stats", "[{\"type\":\"codec\",\"timestamp\":1}]", "stats[0].id: required"},
        {"stats", "[{\"type\":\"codec\",\"id\":\"a\"}]", "stats[0].timestamp: required"},
        {"stats", "[{\"type\":\"codec\",\"id\":\"a\",\"timestamp\":\"1\"}]",
         "stats[0].timestamp: must be a number, got string"},
        {"stats", "[{\"type\":\"codec\",\"id\":\"a\",\"timestamp\":1,\"mimeType\":\"a\\u0000\"}]",
         "stats[0].mimeType: must not contain \\u0000"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        expect_refused(conn_base, KH_REPORT_CONNECTION, cases[i].key, cases[i].value,
                       cases[i].prefix);
}

static void connection_edges_accepted(void **state)
{
    expect_ok(conn_base, KH_REPORT_CONNECTION, NULL, NULL);
    expect_ok(conn_base, KH_REPORT_CONNECTION, "multistream", "false");
    expect_ok(conn_base, KH_REPORT_CONNECTION, "stats", "[]");
    expect_ok(conn_base, KH_REPORT_CONNECTION, "channel_id", "\"c\"");
    expect_ok(conn_base, KH_REPORT_CONNECTION, "id", NULL);        /* optional */
    expect_ok(conn_base, KH_REPORT_CONNECTION, "id", "null");      /* optional */
    expect_ok(conn_base, KH_REPORT_CONNECTION, "bundle_id", "\"b\"");
    expect_ok(conn_base, KH_REPORT_CONNECTION, "future", "{\"a\":[1,{\"b\":null}]}");
    expect_ok(conn_base, KH_REPORT_CONNECTION, "timestamp", "\"2026-11-24T06:15:42.1+00:00\"");
    expect_ok(conn_base, KH_REPORT_CONNECTION, "timestamp", "\"2026-11-24T06:15:42.123456789Z\"");
    /* 26 characters, one of them two bytes long */
    expect_ok(conn_base, KH_REPORT_CONNECTION, "connection_id",
              "\"\xc3\xa9" "2ZK8Q1M7C3V9B5X0N6T4R2W8H\"");
    /* 255 bytes */
    char v[300];
    memset(v, 'c', sizeof(v));
    v[0] = '"';
    v[256] = '"';
    v[257] = '\0';
    expect_ok(conn_base, KH_REPORT_CONNECTION, "client_id", v);
}

static void connection_fields_reported(void **state)
{
    char msg[256];
    struct kh_report *r;
    assert_int_equal(run(KH_REPORT_CONNECTION, KH_FLAVOR_EXPORTER,
                         build(conn_base, "timestamp", "\"2026-11-24T06:15:42.1Z\""), msg,
                         sizeof(msg), &r),
                     0);
    assert_string_equal(r->time_text, "2026-11-24T06:15:42.100000Z");
    assert_string_equal(r->connection_id.p, "F2ZK8Q1M7C3V9B5X0N6T4R2W8H");
    assert_string_equal(r->role.p, "sendrecv");
    assert_int_equal(r->multistream, 1);
    assert_int_equal(r->simulcast, 0);
    assert_int_equal(r->nrows, 1);
    assert_string_equal(kh_stats_tables[r->rows->table].table, "rtc_transport_stats");
    kh_report_free(r);
}

static void webhook_flavor_makes_multistream_optional(void **state)
{
    char msg[256];
    const char *body = build(conn_base, "multistream", NULL);
    assert_int_equal(run(KH_REPORT_CONNECTION, KH_FLAVOR_EXPORTER, body, msg, sizeof(msg), NULL),
                     KH_EINVAL);
    body = build(webhook_base, "multistream", NULL);
    assert_int_equal(run(KH_REPORT_CONNECTION, KH_FLAVOR_WEBHOOK, body, msg, sizeof(msg), NULL),
                     0);
    body = build(webhook_base, "simulcast", NULL);
    assert_int_equal(run(KH_REPORT_CONNECTION, KH_FLAVOR_WEBHOOK, body, msg, sizeof(msg), NULL),
                     KH_EINVAL);
}

/* The body's type must be the one its header announced, naming both when it is not. */
static void type_matches_header(void **state)
{
    expect_refused(conn_base, KH_REPORT_CONNECTION, "type", "\"node.erlang-vm\"",
                   "type: 'node.erlang-vm' does not match the x-sora-stats-exporter-type "
                   "header 'connection.user-agent'");
    expect_refused(conn_base, KH_REPORT_CONNECTION, "type", "\"connection.rtc\"",
                   "type: 'connection.rtc' does not match the x-sora-stats-exporter-type");
    expect_refused(node_base, KH_REPORT_NODE, "type", "\"connection.user-agent\"",
                   "type: 'connection.user-agent' does not match the x-sora-stats-exporter-type "
                   "header 'node.erlang-vm'");
    char msg[256];
    assert_int_equal(run(KH_REPORT_CONNECTION, KH_FLAVOR_WEBHOOK, build(conn_base, NULL, NULL),
                         msg, sizeof(msg), NULL),
                     KH_EINVAL);
    assert_string_equal(msg, "type: 'connection.user-agent' does not match the "
                             "sora-stats-webhook-type header 'connection.rtc'");
    assert_int_equal(run(KH_REPORT_CONNECTION, KH_FLAVOR_WEBHOOK,
                         build(webhook_base, NULL, NULL), msg, sizeof(msg), NULL),
                     0);
}

static void node_rules(void **state)
{
    expect_refused(node_base, KH_REPORT_NODE, "node_name", NULL, "node_name: required");
    expect_refused(node_base, KH_REPORT_NODE, "label", NULL, "label: required");
    expect_refused(node_base, KH_REPORT_NODE, "version", NULL, "version: required");
    expect_refused(node_base, KH_REPORT_NODE, "timestamp", NULL, "timestamp: required");
    expect_refused(node_base, KH_REPORT_NODE, "type", NULL, "type: required");
    expect_refused(node_base, KH_REPORT_NODE, "stats", NULL, "stats: required");
    expect_refused(node_base, KH_REPORT_NODE, "stats", "[{\"total\":1}]", "stats[0].type: required");
    /* connection keys mean nothing in a node report */
    expect_ok(node_base, KH_REPORT_NODE, "multistream", "\"x\"");
    char msg[256];
    struct kh_report *r;
    assert_int_equal(run(KH_REPORT_NODE, KH_FLAVOR_EXPORTER, build(node_base, NULL, NULL), msg,
                         sizeof(msg), &r),
                     0);
    /* the unknown node stats type is kept in node_other_stats, members in extra */
    assert_int_equal(r->nrows, 2);
    assert_int_equal(r->rows->table, kh_table_erlang_vm_memory);
    const struct kh_row *other = r->rows->next;
    assert_int_equal(other->table, kh_table_node_other);
    assert_string_equal(other->stats_type.p, "erlang-vm-other");
    assert_int_equal(other->stats_index, 1);
    assert_string_equal(other->extra.p, "{\"x\":1}");
    static const char *names[] = {"total",     "processes", "processes_used",
                                  "system",    "atom",      "atom_used",
                                  "binary",    "code",      "ets"};
    for (int i = 0; i < 9; i++) {
        int m = kh_schema_member(kh_table_erlang_vm_memory, names[i], strlen(names[i]));
        assert_true(m >= 0);
        assert_int_equal(r->rows->vals[m].type, KH_COL_INT);
        assert_int_equal(r->rows->vals[m].u.i, i == 0 ? 100 : i);
    }
    kh_report_free(r);
}

static void body_errors(void **state)
{
    static const struct {
        const char *body, *prefix;
    } cases[] = {
        {"", "body: empty"},
        {"[]", "body: must be a JSON object, got array"},
        {"\"x\"", "body: must be a JSON object, got string"},
        {"{\"type\":", "body: truncated JSON"},
        {"{\"type\": x}", "body: malformed JSON at byte"},
        {"{\"type\":\"\xff\"}", "body: malformed JSON"},
        {"{\"type\":\"connection.user-agent\"} {}", "body: malformed JSON"},
    };
    char msg[512];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int rc = run(KH_REPORT_CONNECTION, KH_FLAVOR_EXPORTER, cases[i].body, msg, sizeof(msg),
                     NULL);
        if (rc != KH_EINVAL || strncmp(msg, cases[i].prefix, strlen(cases[i].prefix)) != 0)
            fail_msg("body %zu: rc %d '%s', wanted '%s'", i, rc, msg, cases[i].prefix);
    }
}

static void limits(void **state)
{
    struct kh_envelope_limits lim = kh_envelope_default_limits;
    lim.max_stats = 2;
    lim.max_depth = 5;
    char msg[256];
    struct kh_envelope *e = kh_envelope_new(KH_REPORT_CONNECTION, KH_FLAVOR_EXPORTER, &lim);
    const char *three = build(conn_base, "stats",
                              "[{\"id\":\"a\",\"type\":\"x\",\"timestamp\":1},{\"id\":\"b\","
                              "\"type\":\"x\",\"timestamp\":1},{\"id\":\"c\",\"type\":\"x\","
                              "\"timestamp\":1}]");
    assert_int_equal(kh_envelope_feed(e, three, strlen(three)), KH_EINVAL);
    snprintf(msg, sizeof(msg), "%s", kh_envelope_error(e));
    assert_string_equal(msg, "stats: more than 2 objects");
    kh_envelope_free(e);
    e = kh_envelope_new(KH_REPORT_CONNECTION, KH_FLAVOR_EXPORTER, &lim);
    const char *deep = build(conn_base, "x", "[[[[[[1]]]]]]");
    assert_int_equal(kh_envelope_feed(e, deep, strlen(deep)), KH_EINVAL);
    assert_string_equal(kh_envelope_error(e), "body: JSON nested deeper than 5 levels");
    kh_envelope_free(e);
}

static int setup(void **state) { return kh_schema_init(); }

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(connection_rules),
        cmocka_unit_test(connection_edges_accepted),
        cmocka_unit_test(connection_fields_reported),
        cmocka_unit_test(webhook_flavor_makes_multistream_optional),
        cmocka_unit_test(type_matches_header),
        cmocka_unit_test(node_rules),
        cmocka_unit_test(body_errors),
        cmocka_unit_test(limits),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
