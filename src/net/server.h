/*
 * server: a listener and its connections, protocol-blind. Accepts on an address, does TLS
 * when asked, and hands each connection to the codec that the listener's pick function
 * chooses from the first bytes (the HTTP layer's: HTTP/2 preface or HTTP/1.1); it knows no
 * protocol above TCP and TLS, and nothing of what is served. Owns every connection; frees
 * them only at a safe point (a deferred event), never inside a callback running for them.
 * Drains gracefully (kh_server_drain): the listener keeps accepting, so that what a load
 * balancer or a client has already queued is served rather than reset, each codec winds its
 * connection down in its own steps (HTTP/2: a GOAWAY notice, then the final GOAWAY), closing
 * connections linger for the peer's last bytes; kh_server_close_listener then stops accepting
 * (the backlog still taken) and kh_server_close_all ends what is left.
 */
#ifndef KH_SERVER_H
#define KH_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net/tls.h"

struct event_base;
struct evbuffer;
struct kh_server;
struct kh_conn;

/* What the server enforces itself. The owner keeps it and may change it at run time (SIGHUP):
 * it is read where it is used. */
struct kh_net_limits {
    int64_t max_connections;
    int64_t start_timeout; /* seconds for a connection's TLS handshake and first bytes */
    int64_t idle_timeout;  /* seconds without input before an idle connection is closed */
};

struct kh_codec_ops {
    const char *name;
    int proto; /* what kh_server_count counts it as: 1 = HTTP/1.1, 2 = HTTP/2 */
    /* Sets up codec state for c. 0 or KH_ENOMEM. */
    int (*init)(struct kh_conn *c);
    /* New input is in `in`. Consume what can be used now. <0: close the connection. */
    int (*on_read)(struct kh_conn *c, struct evbuffer *in);
    /* Everything queued has been written. */
    void (*on_drained)(struct kh_conn *c);
    /* Shutdown now: finish what is in progress, accept nothing new (idle timeout). */
    void (*shutdown)(struct kh_conn *c);
    /* Graceful drain: announce that the connection is going, let the peer's requests already
     * on their way in, finish what is in progress, then close. NULL: shutdown. */
    void (*drain)(struct kh_conn *c);
    /* True when no request is in progress (an idle timeout may close it). */
    bool (*idle)(struct kh_conn *c);
    /* Requests in progress on the connection. */
    size_t (*active)(struct kh_conn *c);
    /* About once a second: enforce the request header/body timeouts. */
    void (*sweep)(struct kh_conn *c, uint64_t now_usec);
    /* Detaches the requests and frees codec state; the connection is going away. */
    void (*free)(struct kh_conn *c);
};

struct kh_conn {
    struct kh_server *srv;
    struct bufferevent *bev;
    const struct kh_codec_ops *codec;
    void *codec_data;
    void *ctx; /* the listener's kh_listen.ctx, for the codec (what it serves) */
    uint64_t id;
    uint64_t accepted_usec;
    char peer[64];
    bool tls;
    bool handshake_done;
    char subject[256]; /* client certificate subject (mTLS), "" otherwise */
    bool dead;
    bool close_after_write;
    bool lingering;        /* our side shut down (draining): reading the peer's last bytes */
    uint64_t linger_usec;  /* since when */
    struct kh_conn *prev, *next;
};

/* Picks the codec of a new connection from its first n bytes (n > 0); NULL while they are
 * not enough to tell. */
typedef const struct kh_codec_ops *(*kh_codec_pick_fn)(const uint8_t *p, size_t n);

/* Where a server listens and what it hands connections to. */
struct kh_listen {
    const char *addr;
    int port;                       /* 0: any free port */
    const char *key;                /* config key prefix for messages: "listen" names
                                       listen_addr, listen_port */
    const struct kh_tls_files *tls; /* NULL: plaintext */
    const struct kh_net_limits *limits;
    kh_codec_pick_fn pick;
    void *ctx; /* each connection's ctx */
};

/* NULL with the reason in *err on failure (bind, listen, TLS files, memory). The spec's limits
 * and ctx must outlive the server. */
struct kh_server *kh_server_new(struct event_base *base, const struct kh_listen *spec,
                                const char **err);
/* Open connections by protocol (1 = HTTP/1.1, 2 = HTTP/2) and open HTTP/2 streams. */
size_t kh_server_count(const struct kh_server *srv, int proto);
size_t kh_server_streams(const struct kh_server *srv);
void kh_server_free(struct kh_server *srv);
/* Takes a connection that did not come through the listener (an in-process bufferevent, for
 * fuzzing and tests) as if it had just been accepted. */
void kh_server_adopt(struct kh_server *srv, struct bufferevent *bev, const char *peer);
/* Starts the drain: every connection is asked to wind down (codec drain), and so is each one
 * accepted from now on; the listener still accepts. */
void kh_server_drain(struct kh_server *srv);
/* Stops accepting for good: what is in the listen backlog is accepted first (and drained),
 * then the socket is closed, so that a new connection is refused (a load balancer retries
 * it elsewhere) rather than reset. */
void kh_server_close_listener(struct kh_server *srv);
/* Closes every connection now (the drain's time is over); requests in progress are
 * detached. Returns how many were closed. */
size_t kh_server_close_all(struct kh_server *srv);
size_t kh_server_nconns(const struct kh_server *srv);
/* The port the listener is bound to (what port 0 became), or 0. */
int kh_server_port(const struct kh_server *srv);
/* Rebuilds the TLS context from these files (SIGHUP); the old one stays on error. A
 * plaintext server ignores it. */
int kh_server_reload_tls(struct kh_server *srv, const struct kh_tls_files *f, const char **err);

/* For codecs. */
int kh_conn_write(struct kh_conn *c, const void *data, size_t len);
/* Closes once everything queued has been written. */
void kh_conn_close_after_write(struct kh_conn *c);
/* Closes now (deferred free). */
void kh_conn_close(struct kh_conn *c);
/* Runs on_read again soon (input left in the buffer after a pause). */
void kh_conn_resume_read(struct kh_conn *c);
bool kh_conn_stopping(const struct kh_conn *c);

#endif
