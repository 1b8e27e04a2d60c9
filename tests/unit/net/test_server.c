/*
 * Unit tests of src/net/server.c over real loopback sockets, with a fake codec: the
 * listener's pick function sees the first bytes (and is asked again while it cannot tell),
 * the codec gets the connection's input and its context, close-after-write closes once the
 * answer is out, connections are counted by the codec's protocol, max_connections closes the
 * ones over it, a connection that never starts is closed after start_timeout, a drain asks
 * every codec to wind down (and each connection accepted while draining), a connection
 * closed while draining lingers until the peer's EOF, the listener closed refuses, and a bad
 * address or a port in use is refused naming it.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include <event2/buffer.h>

#include "core/log.h"
#include "core/timeutil.h"
#include "net/server.h"

static int inits, reads, shutdowns, drains, frees, picks;
static char got[256];
static size_t got_len;
static void *seen_ctx;

static int fake_init(struct kh_conn *c)
{
    inits++;
    seen_ctx = c->ctx;
    return 0;
}

/* Echoes "ok" and closes after the write once a '\n' arrives. */
static int fake_read(struct kh_conn *c, struct evbuffer *in)
{
    reads++;
    size_t n = evbuffer_get_length(in);
    if (got_len + n < sizeof(got))
        got_len += (size_t)evbuffer_remove(in, got + got_len, n);
    else
        evbuffer_drain(in, n);
    if (memchr(got, '\n', got_len)) {
        kh_conn_write(c, "ok", 2);
        kh_conn_close_after_write(c);
    }
    return 0;
}

static void fake_drained(struct kh_conn *c) {}
static void fake_shutdown(struct kh_conn *c) { shutdowns++; }
static void fake_drain(struct kh_conn *c) { drains++; }
static bool fake_idle(struct kh_conn *c) { return true; }
static size_t fake_active(struct kh_conn *c) { return 0; }
static void fake_free(struct kh_conn *c) { frees++; }

static const struct kh_codec_ops fake_codec = {
    .name = "fake", .proto = 2, .init = fake_init, .on_read = fake_read,
    .on_drained = fake_drained, .shutdown = fake_shutdown, .drain = fake_drain, .idle = fake_idle,
    .active = fake_active, .free = fake_free};

/* Decides on the third byte. */
static const struct kh_codec_ops *pick(const uint8_t *p, size_t n)
{
    picks++;
    return n >= 3 ? &fake_codec : NULL;
}

static struct event_base *base;
static struct kh_net_limits limits;
static int ctx_token;

static int setup(void **state)
{
    inits = reads = shutdowns = drains = frees = picks = 0;
    got_len = 0;
    seen_ctx = NULL;
    limits = (struct kh_net_limits){.max_connections = 8, .start_timeout = 10,
                                    .idle_timeout = 60};
    base = event_base_new();
    assert_non_null(base);
    return 0;
}

static int teardown(void **state)
{
    event_base_free(base);
    return 0;
}

static struct kh_server *start(int *port)
{
    struct kh_listen spec = {.addr = "127.0.0.1", .port = 0, .key = "listen",
                             .limits = &limits, .pick = pick, .ctx = &ctx_token};
    const char *err = NULL;
    struct kh_server *srv = kh_server_new(base, &spec, &err);
    assert_non_null(srv);
    *port = kh_server_port(srv);
    assert_true(*port > 0);
    return srv;
}

static int client(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    return fd;
}

/* Runs the loop until cond() or the deadline (seconds). */
static bool run_until(bool (*cond)(void), double seconds)
{
    uint64_t end = kh_mono_usec() + (uint64_t)(seconds * 1e6);
    while (!cond() && kh_mono_usec() < end) {
        struct timeval tv = {0, 10000};
        event_base_loopexit(base, &tv);
        event_base_dispatch(base);
    }
    return cond();
}

static bool two_inits(void) { return inits == 2; }
static bool one_init(void) { return inits == 1; }
static bool one_free(void) { return frees >= 1; }
static bool answered(void) { return memchr(got, '\n', got_len) != NULL; }

static void test_pick_read_answer_close(void **state)
{
    int port;
    struct kh_server *srv = start(&port);
    int fd = client(port);
    assert_int_equal(write(fd, "ab", 2), 2);
    run_until(one_init, 0.3);
    assert_int_equal(inits, 0); /* two bytes: the pick function cannot tell yet */
    assert_true(picks >= 1);
    assert_int_equal(write(fd, "c\n", 2), 2);
    assert_true(run_until(answered, 2));
    assert_int_equal(inits, 1);
    assert_ptr_equal(seen_ctx, &ctx_token);
    assert_memory_equal(got, "abc\n", 4);
    assert_true(run_until(one_free, 2)); /* closed after the write */
    char buf[8];
    assert_int_equal(read(fd, buf, sizeof(buf)), 2);
    assert_memory_equal(buf, "ok", 2);
    assert_int_equal(read(fd, buf, sizeof(buf)), 0); /* then EOF */
    close(fd);
    assert_int_equal(kh_server_nconns(srv), 0);
    kh_server_free(srv);
}

static size_t want_conns;
static struct kh_server *counted;
static bool conns_are(void) { return kh_server_nconns(counted) == want_conns; }

static void test_counts_and_max_connections(void **state)
{
    int port;
    limits.max_connections = 2;
    struct kh_server *srv = start(&port);
    counted = srv;
    int a = client(port), b = client(port);
    assert_int_equal(write(a, "xyz", 3), 3);
    assert_int_equal(write(b, "xyz", 3), 3);
    want_conns = 2;
    assert_true(run_until(conns_are, 2));
    assert_true(run_until(two_inits, 2));
    assert_int_equal(kh_server_count(srv, 2), 2);
    assert_int_equal(kh_server_count(srv, 1), 0);
    int c = client(port); /* the third: closed at once */
    char buf[4];
    struct timeval tv = {2, 0};
    setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    for (int i = 0; i < 50; i++) {
        struct timeval t = {0, 10000};
        event_base_loopexit(base, &t);
        event_base_dispatch(base);
    }
    assert_int_equal(read(c, buf, sizeof(buf)), 0);
    assert_int_equal(kh_server_nconns(srv), 2);
    kh_server_drain(srv); /* every codec is asked to wind down */
    assert_int_equal(drains, inits);
    assert_int_equal(shutdowns, 0);
    close(a);
    close(b);
    close(c);
    kh_server_free(srv);
}

static void test_silent_connection_closed_after_start_timeout(void **state)
{
    int port;
    limits.start_timeout = 1;
    struct kh_server *srv = start(&port);
    counted = srv;
    int fd = client(port);
    want_conns = 1;
    assert_true(run_until(conns_are, 2));
    want_conns = 0;
    assert_true(run_until(conns_are, 4)); /* the once-a-second sweep, past 1 s */
    assert_int_equal(inits, 0);
    close(fd);
    kh_server_free(srv);
}

static struct kh_server *drained_srv;
static bool one_conn_left(void) { return kh_server_nconns(drained_srv) == 1; }

static void test_drain_accepts_lingers_then_refuses(void **state)
{
    int port;
    struct kh_server *srv = start(&port);
    drained_srv = counted = srv;
    int a = client(port);
    assert_int_equal(write(a, "xyz", 3), 3);
    assert_true(run_until(one_init, 2));
    kh_server_drain(srv);
    assert_int_equal(drains, 1);
    /* accepted while draining: served, and drained as soon as its protocol is known */
    int b = client(port);
    assert_int_equal(write(b, "abc", 3), 3);
    assert_true(run_until(two_inits, 2));
    assert_int_equal(drains, 2);
    /* its answer, then EOF from our shut-down side while the connection still lingers */
    assert_int_equal(write(b, "\n", 1), 1);
    assert_true(run_until(answered, 2));
    want_conns = 2;
    run_until(conns_are, 0.2);
    assert_int_equal(kh_server_nconns(srv), 2);
    char buf[8];
    struct timeval tv = {2, 0};
    setsockopt(b, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    assert_int_equal(read(b, buf, sizeof(buf)), 2);
    assert_int_equal(read(b, buf, sizeof(buf)), 0);
    assert_int_equal(write(b, "late", 4), 4); /* read and dropped, no reset */
    close(b);
    assert_true(run_until(one_conn_left, 2)); /* the peer's EOF ends the linger */
    /* the listener closed: a new connection is refused */
    kh_server_close_listener(srv);
    int c = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(c, (struct sockaddr *)&sa, sizeof(sa)), -1);
    assert_int_equal(errno, ECONNREFUSED);
    close(c);
    assert_int_equal(kh_server_close_all(srv), 1);
    assert_int_equal(kh_server_nconns(srv), 0);
    close(a);
    kh_server_free(srv);
}

static void test_bad_address_and_port_in_use(void **state)
{
    struct kh_listen spec = {.addr = "localhost", .port = 0, .key = "exporter_listen",
                             .limits = &limits, .pick = pick};
    const char *err = NULL;
    assert_null(kh_server_new(base, &spec, &err));
    assert_non_null(strstr(err, "exporter_listen_addr: 'localhost' is not a numeric address"));
    int port;
    struct kh_server *srv = start(&port);
    spec.addr = "127.0.0.1";
    spec.port = port;
    err = NULL;
    assert_null(kh_server_new(base, &spec, &err));
    char want[64];
    snprintf(want, sizeof(want), "cannot listen on 127.0.0.1:%d: ", port);
    assert_non_null(strstr(err, want));
    kh_server_free(srv);
}

int main(void)
{
    kh_log_set_level(KH_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_pick_read_answer_close, setup, teardown),
        cmocka_unit_test_setup_teardown(test_counts_and_max_connections, setup, teardown),
        cmocka_unit_test_setup_teardown(test_silent_connection_closed_after_start_timeout,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_drain_accepts_lingers_then_refuses, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_bad_address_and_port_in_use, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
