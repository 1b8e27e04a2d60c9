/*
 * server: listener and connection lifetime. See server.h.
 */
#include "net/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "core/errors.h"
#include "core/log.h"
#include "core/timeutil.h"
#include "net/tls.h"

#define READ_HIGH_WATERMARK (256 * 1024)
/* How long a draining connection that we have shut down keeps reading the peer's last bytes
 * (a WINDOW_UPDATE, a request that crossed our GOAWAY) before the socket is closed: closing
 * with unread input sends a reset, which can destroy the answers still in the peer's receive
 * buffer (the lingering close of h2o and nginx). */
#define LINGER_USEC 2000000

struct kh_server {
    struct event_base *base;
    const struct kh_net_limits *limits;
    kh_codec_pick_fn pick;
    void *ctx;
    struct evconnlistener *listener;
    struct kh_conn *conns;
    size_t nconns;
    struct kh_conn *reap;   /* dead connections waiting to be freed */
    struct event *reap_ev;
    uint64_t next_id;
    bool stopping;
    struct kh_tls *tls; /* NULL without https */
    struct event *sweep_ev;
    uint64_t refused_logged_usec;
    uint64_t refused;
};

static void unlink_conn(struct kh_server *srv, struct kh_conn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

static void log_conn(const struct kh_conn *c, const char *msg)
{
    struct kh_logline l;
    if (kh_log_begin(&l, KH_LOG_DEBUG, msg)) {
        kh_log_int(&l, "conn", (int64_t)c->id);
        kh_log_str(&l, "peer", c->peer);
        kh_log_str(&l, "proto", c->codec ? c->codec->name : "none");
        kh_log_end(&l);
    }
}

void kh_conn_close(struct kh_conn *c)
{
    if (c->dead)
        return;
    c->dead = true;
    struct kh_server *srv = c->srv;
    unlink_conn(srv, c);
    srv->nconns--;
    bufferevent_disable(c->bev, EV_READ | EV_WRITE);
    c->next = srv->reap;
    srv->reap = c;
    event_active(srv->reap_ev, EV_READ, 0);
}

static void on_reap(evutil_socket_t fd, short what, void *arg)
{
    struct kh_server *srv = arg;
    while (srv->reap) {
        struct kh_conn *c = srv->reap;
        srv->reap = c->next;
        log_conn(c, "connection closed");
        if (c->codec)
            c->codec->free(c);
        bufferevent_free(c->bev);
        free(c);
    }
}

int kh_conn_write(struct kh_conn *c, const void *data, size_t len)
{
    if (c->dead)
        return KH_EIO;
    return bufferevent_write(c->bev, data, len) == 0 ? 0 : KH_ENOMEM;
}

/* Everything is written and the connection is to close. While draining, a plaintext one
 * first lingers: our side is shut down (the peer reads EOF after our last bytes) and its input
 * is read and dropped until it closes too, or LINGER_USEC. A TLS connection closes at once: a
 * shutdown under the TLS layer would cut its close_notify. */
static void close_written(struct kh_conn *c)
{
    int fd = (int)bufferevent_getfd(c->bev);
    if (!c->srv->stopping || c->tls || fd < 0 || shutdown(fd, SHUT_WR) != 0) {
        kh_conn_close(c);
        return;
    }
    c->lingering = true;
    c->linger_usec = kh_mono_usec();
    bufferevent_disable(c->bev, EV_WRITE);
    struct evbuffer *in = bufferevent_get_input(c->bev);
    evbuffer_drain(in, evbuffer_get_length(in));
    log_conn(c, "connection lingering");
}

void kh_conn_close_after_write(struct kh_conn *c)
{
    c->close_after_write = true;
    if (!c->lingering && evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
        close_written(c);
}

void kh_conn_resume_read(struct kh_conn *c)
{
    if (!c->dead)
        bufferevent_trigger(c->bev, EV_READ, BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
}

bool kh_conn_stopping(const struct kh_conn *c) { return c->srv->stopping; }

static void drain_conn(struct kh_conn *c)
{
    if (c->codec->drain)
        c->codec->drain(c);
    else
        c->codec->shutdown(c);
}

/* The listener's pick function chooses the codec from the first bytes; 0 while it cannot
 * tell yet. */
static int sniff(struct kh_conn *c, struct evbuffer *in)
{
    size_t have = evbuffer_get_length(in);
    if (have == 0)
        return 0; /* a read event with nothing in it (a pair's EOF flush) */
    /* a protocol's first bytes say what it is: the first 64 are enough to tell */
    size_t n = have < 64 ? have : 64;
    const uint8_t *p = evbuffer_pullup(in, (ev_ssize_t)n);
    c->codec = c->srv->pick(p, n);
    if (c->codec == NULL)
        return 0; /* undecided: wait for more */
    log_conn(c, "connection protocol");
    if (c->codec->init(c) != 0) {
        c->codec = NULL;
        return KH_ENOMEM;
    }
    if (c->srv->stopping)
        drain_conn(c);
    return 1;
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct kh_conn *c = arg;
    if (c->dead)
        return;
    struct evbuffer *in = bufferevent_get_input(bev);
    if (c->lingering) {
        evbuffer_drain(in, evbuffer_get_length(in));
        return;
    }
    if (c->codec == NULL) {
        int rc = sniff(c, in);
        if (rc < 0) {
            kh_conn_close(c);
            return;
        }
        if (rc == 0)
            return;
    }
    if (c->codec->on_read(c, in) < 0)
        kh_conn_close(c);
}

static void on_write(struct bufferevent *bev, void *arg)
{
    struct kh_conn *c = arg;
    if (c->dead)
        return;
    if (c->close_after_write) {
        if (!c->lingering)
            close_written(c);
        return;
    }
    if (c->codec)
        c->codec->on_drained(c);
}

static void tls_connected(struct kh_conn *c)
{
    struct ssl_st *ssl = bufferevent_openssl_get_ssl(c->bev);
    kh_tls_peer_subject(ssl, c->subject, sizeof(c->subject));
    struct kh_logline l;
    if (kh_log_begin(&l, KH_LOG_DEBUG, "tls handshake done")) {
        const char *version, *alpn;
        size_t alpn_len;
        kh_tls_session_info(ssl, &version, &alpn, &alpn_len);
        kh_log_int(&l, "conn", (int64_t)c->id);
        kh_log_str(&l, "peer", c->peer);
        kh_log_str(&l, "version", version);
        kh_log_strn(&l, "alpn", alpn ? alpn : "", alpn_len);
        kh_log_str(&l, "client", c->subject);
        kh_log_end(&l);
    }
}

static void tls_failed(struct kh_conn *c)
{
    struct kh_logline l;
    char why[256];
    kh_tls_error_string(bufferevent_get_openssl_error(c->bev), why, sizeof(why));
    while (bufferevent_get_openssl_error(c->bev) != 0)
        ; /* the first error says it; drop the rest */
    if (kh_log_begin(&l, KH_LOG_INFO, "tls handshake failed")) {
        kh_log_int(&l, "conn", (int64_t)c->id);
        kh_log_str(&l, "peer", c->peer);
        kh_log_str(&l, "error", why);
        kh_log_end(&l);
    }
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct kh_conn *c = arg;
    if (c->dead)
        return;
    if (what & BEV_EVENT_CONNECTED) {
        c->handshake_done = true;
        tls_connected(c);
        return;
    }
    if (c->tls && !c->handshake_done && (what & (BEV_EVENT_ERROR | BEV_EVENT_EOF)))
        tls_failed(c);
    if ((what & BEV_EVENT_TIMEOUT) && (what & BEV_EVENT_READING) && !c->lingering) {
        if (c->codec && !c->codec->idle(c)) {
            /* requests are waiting for storage: not idle, keep reading */
            bufferevent_enable(bev, EV_READ);
            return;
        }
        log_conn(c, "idle timeout");
        if (c->codec)
            c->codec->shutdown(c);
        if (!c->dead)
            kh_conn_close_after_write(c);
        return;
    }
    kh_conn_close(c);
}

static void peer_name(const struct sockaddr *sa, char *out, size_t len)
{
    char host[INET6_ADDRSTRLEN] = "?", port[8] = "?";
    getnameinfo(sa, sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                              : sizeof(struct sockaddr_in),
                host, sizeof(host), port, sizeof(port), NI_NUMERICHOST | NI_NUMERICSERV);
    snprintf(out, len, sa->sa_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, port);
}

/* Once a second: connections that have not started (TLS handshake, protocol preface) within
 * request_header_timeout are closed, and the codecs time out slow requests. */
static void on_sweep(evutil_socket_t fd, short what, void *arg)
{
    struct kh_server *srv = arg;
    uint64_t now = kh_mono_usec();
    uint64_t limit = (uint64_t)srv->limits->start_timeout * 1000000;
    struct kh_conn *c = srv->conns;
    while (c) {
        struct kh_conn *next = c->next;
        bool started = c->codec && (!c->tls || c->handshake_done);
        if (c->lingering) {
            if (now - c->linger_usec > LINGER_USEC)
                kh_conn_close(c);
        } else if (!started && now - c->accepted_usec > limit) {
            log_conn(c, "connection did not start in time");
            kh_conn_close(c);
        } else if (c->codec && c->codec->sweep) {
            c->codec->sweep(c, now);
        }
        c = next;
    }
}

static bool over_limit(struct kh_server *srv)
{
    if (srv->nconns < (size_t)srv->limits->max_connections)
        return false;
    srv->refused++;
    uint64_t now = kh_mono_usec();
    if (now - srv->refused_logged_usec > 1000000) { /* one line a second at most */
        struct kh_logline l;
        if (kh_log_begin(&l, KH_LOG_WARN, "max_connections reached: closing new connections")) {
            kh_log_int(&l, "connections", (int64_t)srv->nconns);
            kh_log_int(&l, "refused", (int64_t)srv->refused);
            kh_log_end(&l);
        }
        srv->refused_logged_usec = now;
    }
    return true;
}

/* Links a new connection in and starts reading: shared by accept and adopt. */
static void attach(struct kh_server *srv, struct kh_conn *c)
{
    c->srv = srv;
    c->ctx = srv->ctx;
    c->id = ++srv->next_id;
    c->accepted_usec = kh_mono_usec();
    c->next = srv->conns;
    if (srv->conns)
        srv->conns->prev = c;
    srv->conns = c;
    srv->nconns++;
    long idle = (long)srv->limits->idle_timeout;
    struct timeval tv = {idle, 0};
    bufferevent_set_timeouts(c->bev, &tv, NULL);
    bufferevent_setwatermark(c->bev, EV_READ, 0, READ_HIGH_WATERMARK);
    bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    log_conn(c, "connection accepted");
}

void kh_server_adopt(struct kh_server *srv, struct bufferevent *bev, const char *peer)
{
    struct kh_conn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        bufferevent_free(bev);
        return;
    }
    c->bev = bev;
    snprintf(c->peer, sizeof(c->peer), "%s", peer);
    attach(srv, c);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg)
{
    struct kh_server *srv = arg;
    if (over_limit(srv)) {
        evutil_closesocket(fd);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct kh_conn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        evutil_closesocket(fd);
        kh_log(KH_LOG_ERROR, "accept: out of memory", NULL);
        return;
    }
    if (srv->tls) {
        struct ssl_st *ssl = kh_tls_new_ssl(srv->tls);
        /* with BEV_OPT_CLOSE_ON_FREE the bufferevent owns the SSL object and the socket */
        c->bev = ssl ? bufferevent_openssl_socket_new(srv->base, fd, ssl,
                                                      BUFFEREVENT_SSL_ACCEPTING,
                                                      BEV_OPT_CLOSE_ON_FREE)
                     : NULL;
        if (c->bev == NULL && ssl)
            kh_tls_free_ssl(ssl);
        c->tls = true;
    } else {
        c->bev = bufferevent_socket_new(srv->base, fd, BEV_OPT_CLOSE_ON_FREE);
    }
    if (c->bev == NULL) {
        evutil_closesocket(fd);
        free(c);
        return;
    }
    c->srv = srv;
    peer_name(sa, c->peer, sizeof(c->peer));
    attach(srv, c);
}

static void on_accept_error(struct evconnlistener *l, void *arg)
{
    int err = EVUTIL_SOCKET_ERROR();
    struct kh_logline line;
    if (kh_log_begin(&line, KH_LOG_WARN, "accept failed")) {
        kh_log_str(&line, "error", evutil_socket_error_to_string(err));
        kh_log_end(&line);
    }
}

struct kh_server *kh_server_new(struct event_base *base, const struct kh_listen *spec,
                                const char **err)
{
    struct kh_server *srv = calloc(1, sizeof(*srv));
    if (srv == NULL) {
        *err = "out of memory";
        return NULL;
    }
    srv->base = base;
    srv->limits = spec->limits;
    srv->pick = spec->pick;
    srv->ctx = spec->ctx;
    srv->reap_ev = event_new(base, -1, 0, on_reap, srv);
    if (spec->tls && kh_tls_new(spec->tls, &srv->tls, err) != 0)
        goto fail;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    char port[8];
    snprintf(port, sizeof(port), "%d", spec->port);
    int gai = getaddrinfo(spec->addr, port, &hints, &ai);
    if (gai != 0) {
        *err = kh_errf("%s_addr: '%s' is not a numeric address: %s", spec->key, spec->addr,
                       gai_strerror(gai));
        goto fail;
    }
    srv->listener = evconnlistener_new_bind(
        base, on_accept, srv, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC,
        1024, ai->ai_addr, (int)ai->ai_addrlen);
    freeaddrinfo(ai);
    if (srv->listener == NULL) {
        *err = kh_errf("cannot listen on %s:%s: %s", spec->addr, port, strerror(errno));
        goto fail;
    }
    evconnlistener_set_error_cb(srv->listener, on_accept_error);
    srv->sweep_ev = event_new(base, -1, EV_PERSIST, on_sweep, srv);
    struct timeval second = {1, 0};
    event_add(srv->sweep_ev, &second);
    return srv;
fail:
    if (srv->reap_ev)
        event_free(srv->reap_ev);
    kh_tls_free(srv->tls);
    free(srv);
    return NULL;
}

void kh_server_drain(struct kh_server *srv)
{
    if (srv->stopping)
        return;
    srv->stopping = true;
    struct kh_conn *c = srv->conns;
    while (c) {
        struct kh_conn *next = c->next; /* a drain may close c */
        /* one whose first bytes have not come yet is drained once they tell its protocol */
        if (c->codec && !c->dead)
            drain_conn(c);
        c = next;
    }
}

void kh_server_close_listener(struct kh_server *srv)
{
    if (srv->listener == NULL)
        return;
    /* the connections the kernel has completed already would be reset by the close */
    evutil_socket_t lfd = evconnlistener_get_fd(srv->listener);
    for (;;) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        int fd = accept4(lfd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            break;
        on_accept(srv->listener, fd, (struct sockaddr *)&ss, (int)len, srv);
    }
    evconnlistener_free(srv->listener);
    srv->listener = NULL;
}

size_t kh_server_close_all(struct kh_server *srv)
{
    size_t n = 0;
    while (srv->conns) {
        kh_conn_close(srv->conns);
        n++;
    }
    return n;
}

size_t kh_server_nconns(const struct kh_server *srv) { return srv->nconns; }

int kh_server_port(const struct kh_server *srv)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (srv->listener == NULL ||
        getsockname(evconnlistener_get_fd(srv->listener), (struct sockaddr *)&ss, &len) != 0)
        return 0;
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

size_t kh_server_count(const struct kh_server *srv, int proto)
{
    size_t n = 0;
    for (const struct kh_conn *c = srv->conns; c; c = c->next)
        n += c->codec && c->codec->proto == proto;
    return n;
}

size_t kh_server_streams(const struct kh_server *srv)
{
    size_t n = 0;
    for (struct kh_conn *c = srv->conns; c; c = c->next)
        if (c->codec && c->codec->proto == 2)
            n += c->codec->active(c);
    return n;
}

void kh_server_free(struct kh_server *srv)
{
    if (srv == NULL)
        return;
    while (srv->conns)
        kh_conn_close(srv->conns);
    on_reap(-1, 0, srv);
    if (srv->listener)
        evconnlistener_free(srv->listener);
    event_free(srv->reap_ev);
    if (srv->sweep_ev)
        event_free(srv->sweep_ev);
    kh_tls_free(srv->tls);
    free(srv);
}

int kh_server_reload_tls(struct kh_server *srv, const struct kh_tls_files *f, const char **err)
{
    if (srv->tls == NULL)
        return 0;
    return kh_tls_reload(srv->tls, f, err);
}
