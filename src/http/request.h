/*
 * request: the one request/response abstraction both HTTP codecs (h1.c, h2.c) feed, and the
 * only thing handlers see. A codec creates a request, reports headers, body chunks and the
 * end; this module routes it, enforces the body limit while the body streams, calls the
 * handler, and turns a handler's answer into a response the codec sends.
 *
 * Lifetime: reference counted. The codec holds one reference until the stream (HTTP/2) or
 * message (HTTP/1.1) is over; a handler holds one while work is pending elsewhere (a batch).
 * When the connection goes away first, the codec detaches the request (conn = NULL) and the
 * handler's later answer is only logged.
 */
#ifndef KH_REQUEST_H
#define KH_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

enum kh_proto { KH_PROTO_H1 = 1, KH_PROTO_H2 };
enum kh_method { KH_METHOD_OTHER, KH_METHOD_GET, KH_METHOD_HEAD, KH_METHOD_POST };

#define KH_MAX_PATH 1024

struct kh_request;
struct kh_http_site;

struct kh_handler {
    const char *name;
    /* All headers are in. The handler may answer at once (then the body is discarded). */
    void (*on_headers)(struct kh_request *req);
    /* A body chunk, within the size limit. Not called once the request has an answer. */
    void (*on_body)(struct kh_request *req, const uint8_t *data, size_t len);
    /* The body is complete. Not called once the request has an answer. */
    void (*on_end)(struct kh_request *req);
    /* The request has its answer (status set, access line written), whoever gave it: the
     * handler, or the request layer (413, 431, 408). May be NULL. */
    void (*on_answered)(struct kh_request *req);
    /* Releases handler state (hstate). Called when the last reference goes. */
    void (*on_free)(struct kh_request *req);
};

struct kh_transport_ops {
    /* Sends req's response (status, resp_body, retry_after) on its connection. */
    void (*respond)(struct kh_request *req);
};

struct kh_request {
    const struct kh_transport_ops *tp;
    void *conn; /* the codec's connection state; NULL once detached */
    const struct kh_http_site *site;
    enum kh_proto proto;
    int32_t stream_id;
    uint64_t conn_id;
    char peer[64];
    bool tls;
    int route_label;  /* of the route matched, set by the router (metrics) */
    char client[256]; /* client certificate subject with mTLS */
    /* request line and headers: every header is kept ("name\0value\0", names in lower case,
     * as many as max_header_bytes allows) for kh_request_header_value */
    enum kh_method method;
    char method_text[16];
    char path[KH_MAX_PATH + 1];
    size_t path_len;
    bool path_too_long;
    struct kh_buf headers;
    int64_t content_length; /* -1 when absent */
    bool upgrade_h2c;
    size_t header_bytes;
    size_t header_count;
    bool headers_done;
    /* body */
    size_t body_len;
    bool body_complete;
    /* handler */
    const struct kh_handler *handler;
    void *handler_arg; /* the route's arg (kh_router_add) */
    void *hstate;      /* the handler's per-request state */
    /* response */
    bool responded;
    int status;
    char *resp_body;
    size_t resp_len;
    size_t resp_sent;
    int retry_after; /* seconds, 0 = no header */
    const char *resp_type; /* content-type of resp_body; NULL = application/json */
    struct kh_buf resp_headers; /* more response headers: "name\0value\0" pairs */
    struct kh_buf log_fields;   /* more access-log fields: "key\0value\0" pairs */
    bool close_connection;
    /* HTTP/2: when the complete answer went out while the request body was still coming
     * (an early answer; 0 otherwise), and whether the stream has been reset since */
    uint64_t early_answer_usec;
    bool reset_sent;
    uint64_t start_usec;
    int refs;
    struct kh_request *prev, *next; /* the connection's list, owned by the codec */
};

/* NULL on allocation failure. The new request holds the codec's reference. */
struct kh_request *kh_request_new(const struct kh_http_site *site, enum kh_proto proto,
                                  const struct kh_transport_ops *tp, void *conn,
                                  uint64_t conn_id, const char *peer, bool tls,
                                  const char *client);
void kh_request_retain(struct kh_request *req);
void kh_request_release(struct kh_request *req);
/* The connection is gone: later answers are only logged. */
void kh_request_detach(struct kh_request *req);

void kh_request_set_method(struct kh_request *req, const char *m, size_t n);
void kh_request_append_path(struct kh_request *req, const char *p, size_t n);
/* A request header from the codec: counted against the limits, kept, and read for what HTTP
 * itself needs (content-length, upgrade). */
void kh_request_header(struct kh_request *req, const char *name, size_t nlen, const char *value,
                       size_t vlen);
/* The value of a header (name in lower case), or NULL when the request has none. */
const char *kh_request_header_value(const struct kh_request *req, const char *name);

/* Codec events, in this order; each is a no-op once the request has an answer. */
void kh_request_headers_done(struct kh_request *req);
void kh_request_body(struct kh_request *req, const uint8_t *data, size_t len);
void kh_request_end(struct kh_request *req);

/* Called about once a second by the codecs: answers 408 to a request that has taken longer
 * than request_header_timeout for its headers or request_body_timeout for its body. Returns
 * true when it did. */
bool kh_request_check_timeouts(struct kh_request *req, uint64_t now_usec);

/* Adds a response header (before the answer). Copied; at most 4 KiB of them per request,
 * more are dropped. */
void kh_request_add_header(struct kh_request *req, const char *name, const char *value);
/* Walks the added response headers: *pos starts at 0; false at the end. */
bool kh_request_next_header(const struct kh_request *req, size_t *pos, const char **name,
                            const char **value);
/* Adds a string field to the request's access-log line (a report's channel_id ...): copied,
 * the value cut at 512 bytes, at most 3 KiB of them; the logger escapes it. */
void kh_request_log_field(struct kh_request *req, const char *key, const char *value,
                          size_t len);

/* Answers the request once (later calls are ignored). body may be NULL. */
void kh_request_respond(struct kh_request *req, int status, const char *body, size_t len);
/* 4xx/5xx with {"message": message}; the message also goes to the access line (reason). */
void kh_request_respond_error(struct kh_request *req, int status, const char *message);

const char *kh_status_text(int status);

#endif
