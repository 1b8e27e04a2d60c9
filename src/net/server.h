/*
 * server: the listener and the connections. Accepts on listen_addr:listen_port, tells
 * HTTP/2 (prior knowledge) from HTTP/1.1 by the first bytes, and hands the connection to the
 * matching codec (h1.c, h2.c). Owns every connection; frees them only at a safe point (a
 * deferred event), never inside a callback running for them. Stops gracefully: no new
 * connections, GOAWAY / close-when-idle for the open ones.
 */
#ifndef KH_SERVER_H
#define KH_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct evbuffer;
struct kh_app;
struct kh_server;
struct kh_conn;

struct kh_codec_ops {
    const char *name;
    /* Sets up codec state for c. 0 or KH_ENOMEM. */
    int (*init)(struct kh_conn *c);
    /* New input is in `in`. Consume what can be used now. <0: close the connection. */
    int (*on_read)(struct kh_conn *c, struct evbuffer *in);
    /* Everything queued has been written. */
    void (*on_drained)(struct kh_conn *c);
    /* Graceful shutdown: finish what is in progress, accept nothing new. */
    void (*shutdown)(struct kh_conn *c);
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
    struct kh_app *app;
    uint64_t id;
    uint64_t accepted_usec;
    char peer[64];
    bool tls;
    bool metrics; /* accepted on the metrics listener */
    bool handshake_done;
    char subject[256]; /* client certificate subject (mTLS), "" otherwise */
    bool dead;
    bool close_after_write;
    struct kh_conn *prev, *next;
};

/* Where and what a server listens for. */
struct kh_listen {
    const char *addr;
    int port;      /* 0: any free port */
    bool https;    /* TLS with the tls_* keys */
    bool metrics;  /* the metrics listener: only /metrics is routed */
};

/* NULL with the reason in err on failure (bind, listen, memory). */
struct kh_server *kh_server_new(struct event_base *base, struct kh_app *app,
                                const struct kh_listen *spec, char *err, size_t errlen);
/* Open connections by protocol (1 = HTTP/1.1, 2 = HTTP/2) and open HTTP/2 streams. */
size_t kh_server_count(const struct kh_server *srv, int proto);
size_t kh_server_streams(const struct kh_server *srv);
void kh_server_free(struct kh_server *srv);
/* Takes a connection that did not come through the listener (an in-process bufferevent, for
 * fuzzing and tests) as if it had just been accepted. */
void kh_server_adopt(struct kh_server *srv, struct bufferevent *bev, const char *peer);
/* Stop accepting and ask every connection to wind down. */
void kh_server_stop(struct kh_server *srv);
size_t kh_server_nconns(const struct kh_server *srv);
/* Rebuilds the TLS context from the configured files (SIGHUP); the old one stays on error. */
int kh_server_reload_tls(struct kh_server *srv, char *err, size_t errlen);

/* For codecs. */
int kh_conn_write(struct kh_conn *c, const void *data, size_t len);
/* Closes once everything queued has been written. */
void kh_conn_close_after_write(struct kh_conn *c);
/* Closes now (deferred free). */
void kh_conn_close(struct kh_conn *c);
/* Runs on_read again soon (input left in the buffer after a pause). */
void kh_conn_resume_read(struct kh_conn *c);
bool kh_conn_stopping(const struct kh_conn *c);

extern const struct kh_codec_ops kh_h1_codec;
extern const struct kh_codec_ops kh_h2_codec;

#endif
