/*
 * Unit tests of src/sora/lifecycle.c: the session and event webhook bodies of the sample logs
 * (tests/fixtures/sora-logs-sample) parse as bodies and as log lines, in one piece and a
 * byte at a time, into reports of the right kind with the envelope filled; which webhook a
 * body is (flavor, header, the stats types refused); every rule's refusal names its field,
 * in the body, in "data", in "connections" and in a log line; descriptive members of another
 * JSON type are ignored, not refused; "data" is kept whole as JSON; the limits. The rows the
 * bodies give are tested in test_lifecycle_rows.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "kh_test.h"
#include "sora/lifecycle.h"

#define SESSION_LOG KH_SORA_LOGS_DIR "/session_webhook.jsonl"
#define EVENT_LOG KH_SORA_LOGS_DIR "/event_webhook.jsonl"
#define SID "H45PD3HLXUKBBK2BP3ANE657ZM"
#define CID "W56JLRJEYNIZ4TOADMXTOE3RRU"

/* Parses text whole (chunk 0) or chunk bytes at a time; the report or the message. */
static int parse(enum kh_lifecycle_flavor f, enum kh_lifecycle_input in, const char *text,
                 size_t chunk, struct kh_report **out, char *err, size_t errlen)
{
    struct kh_lifecycle *lc = kh_lifecycle_new(f, in, NULL);
    assert_non_null(lc);
    size_t n = strlen(text);
    int rc = 0;
    for (size_t at = 0; rc == 0 && at < n; at += chunk ? chunk : n)
        rc = kh_lifecycle_feed(lc, text + at, chunk && n - at > chunk ? chunk : n - at);
    if (rc == 0)
        rc = kh_lifecycle_finish(lc);
    *out = rc == 0 ? kh_lifecycle_take_report(lc) : NULL;
    if (rc != 0 && err)
        snprintf(err, errlen, "%s", kh_lifecycle_error(lc));
    kh_lifecycle_free(lc);
    return rc;
}

/* The body ("req") of line n of a log, as text. */
static char *body_of_line(const char *path, int n)
{
    char *line = kht_read_line(path, n, NULL);
    char *req = strstr(line, "\"req\":");
    assert_non_null(req);
    req += 6;
    size_t len = strlen(req);
    assert_true(len > 0 && req[len - 1] == '}');
    char *body = strndup(req, len - 1); /* the line's own closing brace */
    free(line);
    return body;
}

static void expect_refused(enum kh_lifecycle_flavor f, enum kh_lifecycle_input in,
                           const char *text, const char *message)
{
    struct kh_report *r;
    char err[512] = "";
    if (parse(f, in, text, 0, &r, err, sizeof(err)) != KH_EINVAL)
        fail_msg("accepted: %s", text);
    if (strcmp(err, message) != 0)
        fail_msg("for %s\n  got  '%s'\n  want '%s'", text, err, message);
    assert_null(r);
    /* the same a byte at a time */
    err[0] = '\0';
    assert_int_equal(parse(f, in, text, 1, &r, err, sizeof(err)), KH_EINVAL);
    assert_string_equal(err, message);
}

static void test_sample_logs(void **state)
{
    (void)state;
    static const char *const session_types[] = {"session.created", "session.updated",
                                                "session.destroyed"};
    for (int i = 0; i < 3; i++) {
        char *line = kht_read_line(SESSION_LOG, i, NULL);
        for (size_t chunk = 0; chunk <= 7; chunk += 7) {
            struct kh_report *r;
            char err[256] = "";
            if (parse(KH_LC_ANY, KH_LC_LOG_LINE, line, chunk, &r, err, sizeof(err)) != 0)
                fail_msg("line %d: %s", i, err);
            assert_int_equal(r->kind, KH_REPORT_SESSION_WEBHOOK);
            assert_string_equal(r->type.p, session_types[i]);
            assert_string_equal(r->session_id.p, SID);
            assert_string_equal(r->channel_id.p, "sample-room");
            assert_string_equal(r->node_name.p, "sora@192.0.2.10");
            assert_null(r->connection_id.p);
            assert_int_equal(strlen(r->id.p), 26);
            assert_int_equal(r->nrows, 0);
            assert_true(r->nenv >= 1);
            kh_report_free(r);
        }
        free(line);
    }
    for (int i = 0; i < 5; i++) {
        char *line = kht_read_line(EVENT_LOG, i, NULL);
        struct kh_report *r;
        char err[256] = "";
        if (parse(KH_LC_EVENT, KH_LC_LOG_LINE, line, 0, &r, err, sizeof(err)) != 0)
            fail_msg("event line %d: %s", i, err);
        assert_int_equal(r->kind, KH_REPORT_EVENT_WEBHOOK);
        assert_true(strncmp(r->type.p, "connection.", 11) == 0);
        assert_int_equal(strlen(r->connection_id.p), 26);
        kh_report_free(r);
        free(line);
    }
}

/* A log line's body posted as it is parses to the same report. */
static void test_bodies(void **state)
{
    (void)state;
    char *body = body_of_line(SESSION_LOG, 1);
    struct kh_report *r;
    char err[256] = "";
    if (kh_lifecycle_parse(KH_LC_SESSION, KH_LC_BODY, body, strlen(body), NULL, &r, err,
                           sizeof(err)) != 0)
        fail_msg("%s", err);
    assert_string_equal(r->type.p, "session.updated");
    assert_string_equal(r->time_text, "2026-11-30T09:00:35.123456Z");
    assert_int_equal(r->body_bytes, strlen(body));
    assert_int_equal(r->nenv, 3); /* the session and its two connections */
    assert_int_equal(strlen(r->received_text), KH_TIME_TEXT_LEN);
    kh_report_free(r);
    free(body);
    body = body_of_line(EVENT_LOG, 3);
    assert_int_equal(kh_lifecycle_parse(KH_LC_ANY, KH_LC_BODY, body, strlen(body), NULL, &r,
                                        err, sizeof(err)),
                     0);
    assert_int_equal(r->kind, KH_REPORT_EVENT_WEBHOOK);
    assert_string_equal(r->type.p, "connection.destroyed");
    assert_string_equal(r->connection_id.p, CID);
    assert_string_equal(r->client_id.p, CID);
    assert_string_equal(r->role.p, "sendrecv");
    assert_int_equal(r->multistream, 1);
    kh_report_free(r);
    free(body);
}

#define EV_HEAD "{\"type\":\"connection.destroyed\",\"id\":\"X1Z4C7V0B3N6M9Q2W5E8R1T4Y7\","
#define EV_IDS                                                                                \
    "\"timestamp\":\"2026-11-30T09:01:14.123456Z\",\"channel_id\":\"sample-room\","          \
    "\"session_id\":\"" SID "\",\"connection_id\":\"" CID "\""

/* What a webhook is: the flavor, the header, and never a stats report. */
static void test_which_webhook(void **state)
{
    (void)state;
    expect_refused(KH_LC_EVENT, KH_LC_BODY,
                   "{\"type\":\"session.created\",\"id\":\"x\",\"session_id\":\"" SID "\"}",
                   "type: 'session.created' is a session webhook type; the event webhook's "
                   "are connection.* and the others");
    expect_refused(KH_LC_SESSION, KH_LC_BODY, EV_HEAD EV_IDS "}",
                   "type: 'connection.destroyed' is not a session webhook type (session.*)");
    expect_refused(KH_LC_ANY, KH_LC_BODY, "{\"type\":\"connection.rtc\",\"stats\":[]}",
                   "type: 'connection.rtc' is a stats report, not a session or event webhook");
    expect_refused(KH_LC_EVENT, KH_LC_BODY, "{\"id\":\"x\"}", "type: required");
    struct kh_lifecycle *lc = kh_lifecycle_new(KH_LC_EVENT, KH_LC_BODY, NULL);
    kh_lifecycle_expect_type(lc, "sora-event-webhook-type", "connection.created");
    const char *body = EV_HEAD EV_IDS "}";
    assert_int_equal(kh_lifecycle_feed(lc, body, strlen(body)), 0);
    assert_int_equal(kh_lifecycle_finish(lc), KH_EINVAL);
    assert_string_equal(kh_lifecycle_error(lc),
                        "type: 'connection.destroyed' does not match the "
                        "sora-event-webhook-type header 'connection.created'");
    struct kh_str type, sid, cid;
    kh_lifecycle_ids(lc, &type, &sid, &cid);
    assert_string_equal(type.p, "connection.destroyed");
    assert_string_equal(cid.p, CID);
    kh_lifecycle_free(lc);
    /* other event types need no connection */
    struct kh_report *r;
    assert_int_equal(parse(KH_LC_EVENT, KH_LC_BODY,
                           "{\"type\":\"recording.started\",\"id\":\"R1\",\"timestamp\":"
                           "\"2026-11-30T09:00:00.5Z\",\"channel_id\":\"sample-room\"}",
                           0, &r, NULL, 0),
                     0);
    assert_int_equal(r->nenv, 0);
    kh_report_free(r);
}

static void test_refusals_name_the_field(void **state)
{
    (void)state;
    static const struct {
        const char *body, *message;
    } cases[] = {
        {"", "body: empty; expected a JSON object"},
        {"[1]", "body: must be a JSON object, got array"},
        {"\"x\"", "body: must be a JSON object, got string"},
        {"{\"type\":", "body: truncated JSON (ends after 8 bytes)"},
        {EV_HEAD EV_IDS ",\"role\":\"viewer\"}",
         "role: must be sendrecv, sendonly or recvonly, got 'viewer'"},
        {EV_HEAD "\"timestamp\":\"yesterday\"}", NULL},
        {EV_HEAD "\"channel_id\":\"c\",\"session_id\":\"" SID "\",\"connection_id\":\"" CID "\"}",
         "timestamp: required"},
        {"{\"type\":\"connection.created\",\"timestamp\":\"2026-11-30T09:01:14.5Z\"}",
         "id: required"},
        {EV_HEAD EV_IDS ",\"session_id\":\"SHORT\"}", "session_id: must be 26 characters, got 5"},
        {EV_HEAD "\"timestamp\":\"2026-11-30T09:01:14.5Z\",\"session_id\":\"" SID
                 "\",\"connection_id\":\"" CID "\"}",
         "channel_id: required"},
        {EV_HEAD "\"timestamp\":\"2026-11-30T09:01:14.5Z\",\"channel_id\":\"c\","
                 "\"session_id\":\"" SID "\"}",
         "connection_id: required"},
        {EV_HEAD EV_IDS ",\"channel_id\":\"\"}", "channel_id: must not be empty"},
        {EV_HEAD EV_IDS ",\"client_id\":7}", "client_id: must be a string, got number"},
        {EV_HEAD EV_IDS ",\"session_id\":{\"a\":1}}", "session_id: must be a string, got object"},
        {EV_HEAD EV_IDS ",\"client_id\":\"a\\u0000b\"}", "client_id: must not contain \\u0000"},
        {EV_HEAD EV_IDS ",\"data\":{\"destroyed_timestamp\":1796029274}}",
         "data.destroyed_timestamp: must be an RFC 3339 time string, got number"},
        {EV_HEAD EV_IDS ",\"data\":{\"note\":\"a\\u0000\"}}",
         "data: strings must not contain \\u0000"},
        {EV_HEAD EV_IDS ",\"data\":{\"\xc0\xaf\":1}}", "data: member names must be valid UTF-8"},
        {EV_HEAD EV_IDS ",\"client_id\":\"\\udc00\"}", "client_id: must be valid UTF-8"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (cases[i].message == NULL) { /* the time parser's own words */
            struct kh_report *r;
            char err[256];
            assert_int_equal(parse(KH_LC_EVENT, KH_LC_BODY, cases[i].body, 0, &r, err,
                                   sizeof(err)),
                             KH_EINVAL);
            assert_true(strncmp(err, "timestamp: ", 11) == 0 && strstr(err, "'yesterday'"));
            continue;
        }
        expect_refused(KH_LC_EVENT, KH_LC_BODY, cases[i].body, cases[i].message);
    }
}

#define SESS_HEAD                                                                             \
    "{\"type\":\"session.updated\",\"id\":\"ZBFAS5L6XKWT3POAPVCV3IFWEQ\",\"timestamp\":"     \
    "\"2026-11-30T09:00:35.123456Z\",\"channel_id\":\"sample-room\",\"session_id\":\"" SID "\""

static void test_session_refusals(void **state)
{
    (void)state;
    static const struct {
        const char *body, *message;
    } cases[] = {
        {SESS_HEAD ",\"connections\":{}}", "connections: must be an array, got object"},
        {SESS_HEAD ",\"connections\":\"none\"}", "connections: must be an array, got string"},
        {SESS_HEAD ",\"connections\":[1]}", "connections: entries must be objects, got number"},
        {SESS_HEAD ",\"connections\":[{\"connection_id\":\"" CID "\"},{\"role\":\"sendrecv\"}]}",
         "connections[1].connection_id: required"},
        {SESS_HEAD ",\"connections\":[{\"connection_id\":\"" CID
                   "\",\"connection_created_timestamp\":\"soon\"}]}",
         NULL},
        {SESS_HEAD ",\"connections\":[{\"connection_id\":\"" CID "\",\"role\":\"x\"}]}",
         "connections[0].role: must be sendrecv, sendonly or recvonly, got 'x'"},
        {SESS_HEAD ",\"max_connections\":-1}",
         "max_connections: must be a non-negative integer, got -1"},
        {SESS_HEAD ",\"max_connections\":\"2\"}",
         "max_connections: must be a non-negative integer, got string"},
        {SESS_HEAD ",\"created_timestamp\":false}",
         "created_timestamp: must be an RFC 3339 time string, got boolean"},
        {"{\"type\":\"session.created\",\"id\":\"x\",\"timestamp\":\"2026-11-30T09:00:35.5Z\","
         "\"channel_id\":\"c\"}",
         "session_id: required"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (cases[i].message == NULL) {
            struct kh_report *r;
            char err[256];
            assert_int_equal(parse(KH_LC_SESSION, KH_LC_BODY, cases[i].body, 0, &r, err,
                                   sizeof(err)),
                             KH_EINVAL);
            const char *want = "connections[0].connection_created_timestamp: ";
            if (strncmp(err, want, strlen(want)) != 0)
                fail_msg("got '%s'", err);
            continue;
        }
        expect_refused(KH_LC_SESSION, KH_LC_BODY, cases[i].body, cases[i].message);
    }
}

static void test_log_lines(void **state)
{
    (void)state;
    expect_refused(KH_LC_ANY, KH_LC_LOG_LINE, "{\"id\":\"x\",\"timestamp\":\"t\"}",
                   "req: required");
    expect_refused(KH_LC_ANY, KH_LC_LOG_LINE, "{\"id\":\"x\",\"req\":[]}",
                   "req: must be an object, got array");
    expect_refused(KH_LC_ANY, KH_LC_LOG_LINE, "{\"id\":\"x\",\"req\":\"body\"}",
                   "req: must be an object, got string");
    expect_refused(KH_LC_ANY, KH_LC_LOG_LINE, "[]", "line: must be a JSON object, got array");
    expect_refused(KH_LC_ANY, KH_LC_LOG_LINE, "{\"req\":" SESS_HEAD ",\"session_id\":\"S\"}}",
                   "req.session_id: must be 26 characters, got 1");
    expect_refused(KH_LC_ANY, KH_LC_LOG_LINE,
                   "{\"req\":" SESS_HEAD ",\"connections\":[{\"connection_id\":\"C\"}]}}",
                   "req.connections[0].connection_id: must be 26 characters, got 1");
    /* the line's other members, and ones after "req", are ignored */
    struct kh_report *r;
    assert_int_equal(parse(KH_LC_ANY, KH_LC_LOG_LINE,
                           "{\"id\":{\"x\":[1]},\"req\":" SESS_HEAD "},\"extra\":[null]}", 0, &r,
                           NULL, 0),
                     0);
    assert_string_equal(r->type.p, "session.updated");
    kh_report_free(r);
}

/* Members kohaku only describes with are ignored when their type is another; unknown members
 * and nested values anywhere are skipped. */
static void test_tolerated(void **state)
{
    (void)state;
    const char *body = EV_HEAD EV_IDS
        ",\"audio\":{\"codec_type\":\"OPUS\"},\"video\":\"yes\",\"label\":5,\"reason\":[1],"
        "\"metadata\":{\"deep\":[{\"a\":[1,2,{\"b\":null}]}]},\"minutes\":1.5,"
        "\"data\":{\"minutes\":\"one\",\"audio\":{\"x\":1},\"session_id\":7}}";
    struct kh_report *r;
    char err[256] = "";
    if (parse(KH_LC_EVENT, KH_LC_BODY, body, 0, &r, err, sizeof(err)) != 0)
        fail_msg("%s", err);
    assert_null(r->label.p);
    const struct kh_env_row *row = kht_env_row(r, kh_env_lifecycle, CID);
    assert_non_null(row);
    assert_int_equal(row->vals[KH_LIFE_AUDIO].type, 0);
    assert_int_equal(row->vals[KH_LIFE_VIDEO].type, 0);
    assert_int_equal(row->vals[KH_LIFE_END_REASON].type, 0);
    assert_int_equal(row->vals[KH_LIFE_MINUTES].type, 0);
    kh_report_free(r);
}

/* "data" is kept as it came (re-serialised), nested values included. */
static void test_data_kept_whole(void **state)
{
    (void)state;
    const char *body = EV_HEAD EV_IDS ",\"data\":{\"reason\":\"normal\",\"n\":1.5e3,"
                                      "\"nested\":{\"a\":[true,null,\"x\\\"y\"]},\"e\":{}}}";
    struct kh_report *r;
    assert_int_equal(parse(KH_LC_EVENT, KH_LC_BODY, body, 3, &r, NULL, 0), 0);
    const struct kh_env_row *row = kht_env_row(r, kh_env_lifecycle, CID);
    const struct kh_value *v = &row->vals[KH_LIFE_END_DATA];
    assert_int_equal(v->type, KH_COL_JSON);
    assert_string_equal(v->u.s, "{\"reason\":\"normal\",\"n\":1.5e3,"
                                "\"nested\":{\"a\":[true,null,\"x\\\"y\"]},\"e\":{}}");
    assert_string_equal(row->vals[KH_LIFE_END_REASON].u.s, "normal");
    kh_report_free(r);
}

static void test_limits(void **state)
{
    (void)state;
    struct kh_envelope_limits lim = kh_envelope_default_limits;
    lim.max_stats = 2;
    lim.max_depth = 6;
    const char *three = SESS_HEAD ",\"connections\":[{\"connection_id\":\"" CID "\"},"
                                  "{\"connection_id\":\"" CID "\"},"
                                  "{\"connection_id\":\"" CID "\"}]}";
    struct kh_report *r;
    char err[256];
    assert_int_equal(kh_lifecycle_parse(KH_LC_SESSION, KH_LC_BODY, three, strlen(three), &lim,
                                        &r, err, sizeof(err)),
                     KH_EINVAL);
    assert_string_equal(err, "connections: more than 2 entries");
    const char *deep = SESS_HEAD ",\"x\":[[[[[[1]]]]]]}";
    assert_int_equal(kh_lifecycle_parse(KH_LC_SESSION, KH_LC_BODY, deep, strlen(deep), &lim, &r,
                                        err, sizeof(err)),
                     KH_EINVAL);
    assert_string_equal(err, "body: JSON nested deeper than 6 levels");
    lim = kh_envelope_default_limits;
    lim.arena_max = 4096;
    char big[10000];
    snprintf(big, sizeof(big), SESS_HEAD ",\"node_name\":\"%04000d\",\"label\":\"%04000d\"}", 1,
             2);
    assert_int_equal(kh_lifecycle_parse(KH_LC_SESSION, KH_LC_BODY, big, strlen(big), &lim, &r,
                                        err, sizeof(err)),
                     KH_ENOMEM);
    assert_null(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sample_logs),
        cmocka_unit_test(test_bodies),
        cmocka_unit_test(test_which_webhook),
        cmocka_unit_test(test_refusals_name_the_field),
        cmocka_unit_test(test_session_refusals),
        cmocka_unit_test(test_log_lines),
        cmocka_unit_test(test_tolerated),
        cmocka_unit_test(test_data_kept_whole),
        cmocka_unit_test(test_limits),
    };
    return cmocka_run_group_tests(tests, kht_schema_setup, kht_schema_teardown);
}
