/*
 * Unit tests of src/http/request.c, the request abstraction both codecs feed: headers kept
 * (names lowered) and found by name, content-length read, 431 over max_header_bytes or
 * max_headers (naming the limit), 413 on an announced or a streamed body over max_body_bytes
 * (naming the size seen), the handler's callbacks in order and none after an answer, its
 * on_answered hook and the site's on_answer once per answer, response headers and log
 * fields, the error body's JSON, and the 408 timeouts. A fake transport records what would
 * be sent.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "core/log.h"
#include "core/timeutil.h"
#include "http/http.h"
#include "http/router.h"

static struct kh_http_limits limits;
static int sent, answered_hook, site_hook, bodies, ends;
static size_t body_bytes;

static void fake_respond(struct kh_request *req) { sent++; }
static const struct kh_transport_ops fake_tp = {.respond = fake_respond};
static int conn_token;

static void on_body(struct kh_request *req, const uint8_t *d, size_t n)
{
    bodies++;
    body_bytes += n;
}
static void on_end(struct kh_request *req)
{
    ends++;
    kh_request_respond(req, 204, NULL, 0);
}
static void on_answered(struct kh_request *req) { answered_hook++; }
static const struct kh_handler handler = {
    .name = "t", .on_body = on_body, .on_end = on_end, .on_answered = on_answered};
static void on_answer(const struct kh_request *req) { site_hook++; }

static const char *path = "/in";
static struct kh_router *router;
static struct kh_http_site site;

static int setup(void **state)
{
    limits = (struct kh_http_limits){.max_body_bytes = 100, .max_header_bytes = 200,
                                     .max_headers = 4, .request_header_timeout = 10,
                                     .request_body_timeout = 60};
    router = kh_router_new();
    assert_int_equal(kh_router_add(router, &path, KH_METHOD_POST, &handler, NULL, 0), 0);
    site = (struct kh_http_site){&limits, router, on_answer};
    sent = answered_hook = site_hook = bodies = ends = 0;
    body_bytes = 0;
    return 0;
}

static int teardown(void **state)
{
    kh_router_free(router);
    return 0;
}

static struct kh_request *start(void)
{
    struct kh_request *req = kh_request_new(&site, KH_PROTO_H1, &fake_tp, &conn_token, 7,
                                            "127.0.0.1:9", false, NULL);
    assert_non_null(req);
    kh_request_set_method(req, "POST", 4);
    kh_request_append_path(req, path, strlen(path));
    return req;
}

static void header(struct kh_request *req, const char *name, const char *value)
{
    kh_request_header(req, name, strlen(name), value, strlen(value));
}

static void assert_message(const struct kh_request *req, const char *message)
{
    char want[512];
    snprintf(want, sizeof(want), "{\"message\":\"%s\"}", message);
    assert_int_equal(req->resp_len, strlen(want));
    assert_memory_equal(req->resp_body, want, req->resp_len);
}

static void test_headers_kept_and_found(void **state)
{
    struct kh_request *req = start();
    header(req, "X-Sora-Stats-Exporter-Type", "connection.user-agent");
    header(req, "content-length", "12");
    header(req, "Content-Type", "application/json");
    assert_string_equal(kh_request_header_value(req, "x-sora-stats-exporter-type"),
                        "connection.user-agent");
    assert_string_equal(kh_request_header_value(req, "content-type"), "application/json");
    assert_null(kh_request_header_value(req, "X-Sora-Stats-Exporter-Type")); /* lower case */
    assert_null(kh_request_header_value(req, "absent"));
    assert_int_equal(req->content_length, 12);
    header(req, "empty", "");
    assert_string_equal(kh_request_header_value(req, "empty"), "");
    kh_request_release(req);
}

static void test_content_length_forms(void **state)
{
    const char *bad[] = {"", "-1", "1x", " 5", "99999999999999999999999"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct kh_request *req = start();
        header(req, "content-length", bad[i]);
        assert_int_equal(req->content_length, -1);
        kh_request_release(req);
    }
}

static void test_header_limits_are_431(void **state)
{
    struct kh_request *req = start();
    char big[300];
    memset(big, 'v', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    header(req, "x-big", big);
    kh_request_headers_done(req);
    assert_int_equal(req->status, 431);
    assert_message(req, "headers: 307 bytes is over max_header_bytes (200)");
    assert_int_equal(site_hook, 1);
    assert_int_equal(answered_hook, 1); /* routed before the limits: the handler hears it */
    kh_request_release(req);
    req = start();
    for (int i = 0; i < 5; i++)
        header(req, "h", "1");
    kh_request_headers_done(req);
    assert_int_equal(req->status, 431);
    assert_message(req, "headers: 5 is over max_headers (4)");
    kh_request_release(req);
}

static void test_announced_body_over_limit_is_413(void **state)
{
    struct kh_request *req = start();
    header(req, "content-length", "101");
    kh_request_headers_done(req);
    assert_int_equal(req->status, 413);
    assert_message(req, "body: 101 bytes is over max_body_bytes (100)");
    assert_true(req->close_connection);
    kh_request_body(req, (const uint8_t *)"x", 1); /* the rest is discarded */
    kh_request_end(req);
    assert_int_equal(bodies, 0);
    assert_int_equal(ends, 0);
    assert_int_equal(sent, 1);
    assert_int_equal(answered_hook, 1);
    assert_int_equal(site_hook, 1);
    kh_request_release(req);
}

static void test_streamed_body_over_limit_is_413(void **state)
{
    struct kh_request *req = start();
    kh_request_headers_done(req);
    uint8_t chunk[60] = {0};
    kh_request_body(req, chunk, sizeof(chunk));
    assert_false(req->responded);
    kh_request_body(req, chunk, sizeof(chunk));
    assert_int_equal(req->status, 413);
    assert_message(req, "body: 120 bytes received so far is over max_body_bytes (100)");
    assert_int_equal(bodies, 1); /* the chunk that crossed the limit never reached it */
    assert_int_equal(body_bytes, 60);
    kh_request_release(req);
}

static void test_body_then_end_then_answer(void **state)
{
    struct kh_request *req = start();
    kh_request_headers_done(req);
    kh_request_body(req, (const uint8_t *)"abc", 3);
    kh_request_body(req, (const uint8_t *)"de", 2);
    kh_request_end(req);
    assert_int_equal(bodies, 2);
    assert_int_equal(body_bytes, 5);
    assert_int_equal(ends, 1);
    assert_int_equal(req->status, 204);
    kh_request_respond(req, 500, NULL, 0); /* answered once: later calls are ignored */
    assert_int_equal(req->status, 204);
    assert_int_equal(sent, 1);
    assert_int_equal(answered_hook, 1);
    assert_int_equal(site_hook, 1);
    kh_request_release(req);
}

static void test_response_headers_and_log_fields(void **state)
{
    struct kh_request *req = start();
    kh_request_add_header(req, "allow", "POST");
    kh_request_add_header(req, "x-two", "2");
    kh_request_log_field(req, "channel_id", "room\"1", 6);
    size_t pos = 0;
    const char *n, *v;
    assert_true(kh_request_next_header(req, &pos, &n, &v));
    assert_string_equal(n, "allow");
    assert_string_equal(v, "POST");
    assert_true(kh_request_next_header(req, &pos, &n, &v));
    assert_string_equal(n, "x-two");
    assert_false(kh_request_next_header(req, &pos, &n, &v));
    kh_request_respond_error(req, 400, "say \"no\"\n");
    assert_message(req, "say \\\"no\\\"\\n");
    kh_request_release(req);
}

static void test_timeouts_are_408(void **state)
{
    struct kh_request *req = start();
    uint64_t t0 = req->start_usec;
    assert_false(kh_request_check_timeouts(req, t0 + 9 * 1000000ULL));
    assert_true(kh_request_check_timeouts(req, t0 + 11 * 1000000ULL));
    assert_int_equal(req->status, 408);
    assert_message(req, "headers: not complete within request_header_timeout");
    kh_request_release(req);
    req = start();
    kh_request_headers_done(req);
    t0 = req->start_usec;
    assert_false(kh_request_check_timeouts(req, t0 + 30 * 1000000ULL));
    assert_true(kh_request_check_timeouts(req, t0 + 61 * 1000000ULL));
    assert_message(req, "body: not complete within request_body_timeout");
    assert_false(kh_request_check_timeouts(req, t0 + 99 * 1000000ULL)); /* answered */
    kh_request_release(req);
}

/* A detached request (its connection went away) is answered and counted, never sent. */
static void test_detached_answer_is_not_sent(void **state)
{
    struct kh_request *req = start();
    kh_request_headers_done(req);
    kh_request_retain(req); /* the handler's reference */
    kh_request_detach(req);
    kh_request_release(req); /* the codec's */
    kh_request_respond(req, 204, NULL, 0);
    assert_int_equal(sent, 0);
    assert_int_equal(site_hook, 1);
    kh_request_release(req);
}

int main(void)
{
    kh_log_set_level(KH_LOG_ERROR); /* no access lines on the test's output */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_headers_kept_and_found, setup, teardown),
        cmocka_unit_test_setup_teardown(test_content_length_forms, setup, teardown),
        cmocka_unit_test_setup_teardown(test_header_limits_are_431, setup, teardown),
        cmocka_unit_test_setup_teardown(test_announced_body_over_limit_is_413, setup, teardown),
        cmocka_unit_test_setup_teardown(test_streamed_body_over_limit_is_413, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_then_end_then_answer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_response_headers_and_log_fields, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeouts_are_408, setup, teardown),
        cmocka_unit_test_setup_teardown(test_detached_answer_is_not_sent, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
