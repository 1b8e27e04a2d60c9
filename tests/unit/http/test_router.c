/*
 * Unit tests of src/http/router.c: routes registered by the program (path pointer, method,
 * handler, arg, label), matching without the query string and trailing slashes, 405 with
 * Allow naming the methods of the path, 404, the h2c upgrade refusal, and a path that
 * changes at run time (a reloaded config) applying to the next request. Requests come from
 * the real request layer over a fake transport that records what would be sent.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "http/http.h"
#include "core/log.h"
#include "http/router.h"

static const struct kh_http_limits limits = {
    .max_body_bytes = 1024, .max_header_bytes = 4096, .max_headers = 16,
    .request_header_timeout = 10, .request_body_timeout = 60};

static int sent;
static void fake_respond(struct kh_request *req) { sent++; }
static const struct kh_transport_ops fake_tp = {.respond = fake_respond};

static int conn_token;
static int headers_seen;
static void on_headers(struct kh_request *req) { headers_seen++; }
static const struct kh_handler post_handler = {.name = "post", .on_headers = on_headers};
static const struct kh_handler get_handler = {.name = "get", .on_headers = on_headers};

static const char *collector = "/collector";
static const char *const ok = "/.ok";
static int arg_a, arg_b;

struct fixture {
    struct kh_router *router;
    struct kh_http_site site;
};

static int setup(void **state)
{
    static struct fixture f;
    f.router = kh_router_new();
    assert_non_null(f.router);
    assert_int_equal(kh_router_add(f.router, &collector, KH_METHOD_POST, &post_handler, &arg_a,
                                   0),
                     0);
    assert_int_equal(kh_router_add(f.router, &ok, KH_METHOD_GET, &get_handler, &arg_b, 2), 0);
    assert_int_equal(kh_router_add(f.router, &ok, KH_METHOD_HEAD, &get_handler, &arg_b, 2), 0);
    f.site = (struct kh_http_site){&limits, f.router, NULL};
    *state = &f;
    sent = headers_seen = 0;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    kh_router_free(f->router);
    return 0;
}

/* A request with this method and path through the request layer's header stage. */
static struct kh_request *request(struct fixture *f, const char *method, const char *path)
{
    struct kh_request *req = kh_request_new(&f->site, KH_PROTO_H2, &fake_tp, &conn_token, 1,
                                            "127.0.0.1:1", false, NULL);
    assert_non_null(req);
    kh_request_set_method(req, method, strlen(method));
    kh_request_append_path(req, path, strlen(path));
    kh_request_headers_done(req);
    return req;
}

static void test_match_sets_handler_arg_and_label(void **state)
{
    struct fixture *f = *state;
    const char *paths[] = {"/collector", "/collector/", "/collector//", "/collector?x=1",
                           "/collector/?x=/"};
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        struct kh_request *req = request(f, "POST", paths[i]);
        assert_false(req->responded);
        assert_ptr_equal(req->handler, &post_handler);
        assert_ptr_equal(req->handler_arg, &arg_a);
        assert_int_equal(req->route_label, 0);
        kh_request_release(req);
    }
    assert_int_equal(headers_seen, 5);
    struct kh_request *req = request(f, "HEAD", "/.ok");
    assert_ptr_equal(req->handler_arg, &arg_b);
    assert_int_equal(req->route_label, 2);
    kh_request_release(req);
}

static void test_wrong_method_is_405_with_allow(void **state)
{
    struct fixture *f = *state;
    struct kh_request *req = request(f, "GET", "/collector");
    assert_int_equal(req->status, 405);
    assert_int_equal(req->route_label, 0); /* counted on the path's route */
    const char *name, *value;
    size_t pos = 0;
    assert_true(kh_request_next_header(req, &pos, &name, &value));
    assert_string_equal(name, "allow");
    assert_string_equal(value, "POST");
    assert_memory_equal(req->resp_body,
                        "{\"message\":\"method: GET is not allowed on this path (allowed: POST)\"}",
                        req->resp_len);
    kh_request_release(req);
    req = request(f, "DELETE", "/.ok/");
    assert_int_equal(req->status, 405);
    pos = 0;
    assert_true(kh_request_next_header(req, &pos, &name, &value));
    assert_string_equal(value, "GET, HEAD");
    kh_request_release(req);
    assert_int_equal(sent, 2);
    assert_int_equal(headers_seen, 0);
}

static void test_unknown_path_is_404(void **state)
{
    struct fixture *f = *state;
    const char *paths[] = {"/collect", "/collector/x", "/", "", "/COLLECTOR"};
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        struct kh_request *req = request(f, "POST", paths[i]);
        assert_int_equal(req->status, 404);
        assert_int_equal(req->route_label, -1);
        size_t pos = 0;
        const char *name, *value;
        assert_false(kh_request_next_header(req, &pos, &name, &value)); /* no Allow */
        kh_request_release(req);
    }
}

static void test_h2c_upgrade_refused(void **state)
{
    struct fixture *f = *state;
    struct kh_request *req = kh_request_new(&f->site, KH_PROTO_H1, &fake_tp, &conn_token, 1,
                                            "127.0.0.1:1", false, NULL);
    kh_request_set_method(req, "GET", 3);
    kh_request_append_path(req, "/.ok", 4);
    kh_request_header(req, "Upgrade", 7, "websocket, h2c", 14);
    kh_request_headers_done(req);
    assert_int_equal(req->status, 400);
    assert_true(req->close_connection);
    kh_request_release(req);
}

/* The route reads its path through the pointer at each request: a new collector_path after
 * SIGHUP applies to the next request, the old one is gone. */
static void test_path_follows_its_pointer(void **state)
{
    struct fixture *f = *state;
    const char *before = collector;
    collector = "/stats/in";
    struct kh_request *req = request(f, "POST", "/stats/in");
    assert_ptr_equal(req->handler, &post_handler);
    kh_request_release(req);
    req = request(f, "POST", "/collector");
    assert_int_equal(req->status, 404);
    kh_request_release(req);
    collector = before;
}

/* A route ending in a slash and an asterisk takes every path below it, and only those. */
static void test_prefix_route(void **state)
{
    struct fixture *f = *state;
    static const char *const api = "/api/*";
    static int arg_c;
    assert_int_equal(kh_router_add(f->router, &api, KH_METHOD_GET, &get_handler, &arg_c, 5), 0);
    const char *below[] = {"/api/x", "/api/connections/ABC", "/api/x/?q=1", "/api/x/y/z"};
    for (size_t i = 0; i < sizeof(below) / sizeof(below[0]); i++) {
        struct kh_request *req = request(f, "GET", below[i]);
        assert_ptr_equal(req->handler_arg, &arg_c);
        assert_int_equal(req->route_label, 5);
        kh_request_release(req);
    }
    const char *others[] = {"/api", "/api/", "/apix", "/ap"};
    for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
        struct kh_request *req = request(f, "GET", others[i]);
        assert_int_equal(req->status, 404);
        kh_request_release(req);
    }
    struct kh_request *req = request(f, "POST", "/api/x");
    assert_int_equal(req->status, 405);
    kh_request_release(req);
}

static void test_pick_codec(void **state)
{
    (void)state;
    static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    const struct kh_codec_ops *h2 = kh_http_pick_codec((const uint8_t *)preface, 24);
    assert_non_null(h2);
    for (size_t n = 1; n < 24; n++) /* a prefix of the preface: not decided yet */
        assert_null(kh_http_pick_codec((const uint8_t *)preface, n));
    const struct kh_codec_ops *h1 = kh_http_pick_codec((const uint8_t *)"GET / HTTP/1.1", 14);
    assert_non_null(h1);
    assert_ptr_not_equal(h1, h2);
    assert_ptr_equal(kh_http_pick_codec((const uint8_t *)"PRX", 3), h1);
}

int main(void)
{
    kh_log_set_level(KH_LOG_ERROR); /* no access lines on the test's output */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_match_sets_handler_arg_and_label, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_method_is_405_with_allow, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_path_is_404, setup, teardown),
        cmocka_unit_test_setup_teardown(test_h2c_upgrade_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_path_follows_its_pointer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prefix_route, setup, teardown),
        cmocka_unit_test(test_pick_codec),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
