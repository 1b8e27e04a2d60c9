/*
 * h1: the HTTP/1.1 codec on libhttp-parser. One request at a time per connection: when a
 * request's answer is not ready at the end of its message (it waits for storage), parsing
 * pauses and the rest of the input stays buffered until the answer has been written, so
 * pipelined responses keep their order. Header bytes are bounded by max_header_bytes, as on
 * HTTP/2 (the request layer answers 431); the body streams into the request. This module is
 * the only user of http_parser.
 */
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/errors.h"
#include "core/log.h"
#include "http/codecs.h"
#include "http/http.h"
#include "http/request.h"
#include "net/server.h"

/* http_parser's own bound on the request line and headers, beyond max_header_bytes: what
 * lies between gets a 431 from the request layer, what lies beyond a 431 from here. */
#define PARSER_SLACK (16 * 1024)

struct h1 {
    struct kh_conn *conn;
    http_parser parser;
    struct kh_request *req; /* the request being read or answered */
    bool msg_complete;      /* req's message has been read completely */
    bool in_execute;        /* inside http_parser_execute: its callbacks finish requests */
    bool paused;
    bool keep_alive;
    uint64_t served; /* requests finished on the connection */
    struct kh_buf name, value; /* the header being read; each at most max_header_bytes */
    bool in_value;
    bool header_overflow;
};

static void h1_respond(struct kh_request *req);
static const struct kh_transport_ops h1_transport = {.respond = h1_respond};

static struct h1 *of(http_parser *p) { return p->data; }

static const struct kh_http_site *site_of(const struct kh_conn *c) { return c->ctx; }

static int64_t c_max_header_bytes(const struct kh_conn *c)
{
    return site_of(c)->limits->max_header_bytes;
}

static void finish_request(struct h1 *h)
{
    struct kh_request *req = h->req;
    h->req = NULL;
    h->msg_complete = false;
    h->served++;
    kh_request_release(req);
}

static int on_message_begin(http_parser *p)
{
    struct h1 *h = of(p);
    struct kh_conn *c = h->conn;
    h->req = kh_request_new(site_of(c), KH_PROTO_H1, &h1_transport, c, c->id, c->peer, c->tls,
                            c->subject);
    if (h->req == NULL)
        return -1;
    kh_buf_reset(&h->name);
    kh_buf_reset(&h->value);
    h->in_value = false;
    h->header_overflow = false;
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
    kh_request_append_path(of(p)->req, at, n);
    return 0;
}

/* A header is complete: the request layer counts it against max_header_bytes and
 * max_headers and keeps the ones it reads. */
static void flush_header(struct h1 *h)
{
    if (h->name.len)
        kh_request_header(h->req, h->name.data, h->name.len,
                          h->value.len ? h->value.data : "", h->value.len);
    kh_buf_reset(&h->name);
    kh_buf_reset(&h->value);
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    struct h1 *h = of(p);
    if (h->in_value) {
        flush_header(h);
        h->in_value = false;
    }
    if (kh_buf_append(&h->name, at, n) != 0)
        h->header_overflow = true;
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    struct h1 *h = of(p);
    h->in_value = true;
    if (kh_buf_append(&h->value, at, n) != 0)
        h->header_overflow = true;
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    struct h1 *h = of(p);
    struct kh_request *req = h->req;
    if (h->in_value)
        flush_header(h);
    const char *m = http_method_str((enum http_method)p->method);
    kh_request_set_method(req, m, strlen(m));
    h->keep_alive = http_should_keep_alive(p) != 0;
    if (h->header_overflow) {
        char msg[128];
        snprintf(msg, sizeof(msg), "headers: one is over max_header_bytes (%lld)",
                 (long long)c_max_header_bytes(h->conn));
        req->close_connection = true;
        kh_request_respond_error(req, 431, msg);
        return 0;
    }
    kh_request_headers_done(req);
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    kh_request_body(of(p)->req, (const uint8_t *)at, n);
    return 0;
}

static int on_message_complete(http_parser *p)
{
    struct h1 *h = of(p);
    h->msg_complete = true;
    kh_request_end(h->req);
    if (h->req->responded) {
        bool close = h->req->close_connection || !h->keep_alive;
        finish_request(h);
        if (close) {
            http_parser_pause(p, 1);
            h->paused = true;
        }
        return 0;
    }
    /* the answer comes later: hold the next request back until it is written */
    http_parser_pause(p, 1);
    h->paused = true;
    return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

static void h1_respond(struct kh_request *req)
{
    struct kh_conn *c = req->conn;
    struct h1 *h = c->codec_data;
    bool close = req->close_connection || !h->keep_alive || kh_conn_stopping(c);
    char head[512];
    int n = snprintf(head, sizeof(head), "HTTP/1.1 %d %s\r\nServer: kohaku\r\n", req->status,
                     kh_status_text(req->status));
    if (req->status != 204 && req->status != 304)
        n += snprintf(head + n, sizeof(head) - (size_t)n, "Content-Length: %zu\r\n",
                      req->resp_len);
    if (req->resp_len)
        n += snprintf(head + n, sizeof(head) - (size_t)n, "Content-Type: %s\r\n",
                      req->resp_type ? req->resp_type : "application/json");
    if (req->retry_after > 0)
        n += snprintf(head + n, sizeof(head) - (size_t)n, "Retry-After: %d\r\n", req->retry_after);
    if (close)
        n += snprintf(head + n, sizeof(head) - (size_t)n, "Connection: close\r\n");
    kh_conn_write(c, head, (size_t)n);
    const char *name, *value;
    for (size_t pos = 0; kh_request_next_header(req, &pos, &name, &value);) {
        kh_conn_write(c, name, strlen(name));
        kh_conn_write(c, ": ", 2);
        kh_conn_write(c, value, strlen(value));
        kh_conn_write(c, "\r\n", 2);
    }
    kh_conn_write(c, "\r\n", 2);
    if (req->resp_len && req->method != KH_METHOD_HEAD)
        kh_conn_write(c, req->resp_body, req->resp_len);
    if (close) {
        req->close_connection = true;
        kh_conn_close_after_write(c);
        return;
    }
    if (h->msg_complete && h->req == req && !h->in_execute) {
        /* a late answer: the next pipelined request may proceed */
        finish_request(h);
        h->paused = false;
        http_parser_pause(&h->parser, 0);
        kh_conn_resume_read(c);
    }
}

static int h1_init(struct kh_conn *c)
{
    struct h1 *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return KH_ENOMEM;
    h->conn = c;
    int64_t max = c_max_header_bytes(c);
    kh_buf_init(&h->name, (size_t)max);
    kh_buf_init(&h->value, (size_t)max);
    /* the parser's bound is process-wide; the current config sets it for new connections */
    http_parser_set_max_header_size((uint32_t)(max + PARSER_SLACK < UINT32_MAX
                                                   ? max + PARSER_SLACK
                                                   : UINT32_MAX));
    http_parser_init(&h->parser, HTTP_REQUEST);
    h->parser.data = h;
    c->codec_data = h;
    return 0;
}

static void parse_error(struct h1 *h)
{
    struct kh_conn *c = h->conn;
    enum http_errno e = HTTP_PARSER_ERRNO(&h->parser);
    struct kh_logline l;
    if (kh_log_begin(&l, KH_LOG_DEBUG, "http/1.1 parse error")) {
        kh_log_int(&l, "conn", (int64_t)c->id);
        kh_log_str(&l, "error", http_errno_description(e));
        kh_log_end(&l);
    }
    char msg[160];
    int status = 400;
    if (e == HPE_HEADER_OVERFLOW) {
        status = 431;
        snprintf(msg, sizeof(msg), "headers: over max_header_bytes (%lld)",
                 (long long)c_max_header_bytes(c));
    } else {
        snprintf(msg, sizeof(msg), "request: malformed HTTP/1.1: %s", http_errno_description(e));
    }
    if (h->req && !h->req->responded) {
        h->req->close_connection = true;
        kh_request_respond_error(h->req, status, msg);
    } else if (h->req == NULL) {
        static const char resp[] = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                                   "Connection: close\r\n\r\n";
        kh_conn_write(c, resp, sizeof(resp) - 1);
    }
    kh_conn_close_after_write(c);
}

static int h1_on_read(struct kh_conn *c, struct evbuffer *in)
{
    struct h1 *h = c->codec_data;
    while (!h->paused && !c->dead && !c->close_after_write && evbuffer_get_length(in) > 0) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            break;
        h->in_execute = true;
        size_t done = http_parser_execute(&h->parser, &settings, v.iov_base, v.iov_len);
        h->in_execute = false;
        evbuffer_drain(in, done);
        enum http_errno e = HTTP_PARSER_ERRNO(&h->parser);
        if (e == HPE_PAUSED)
            continue; /* h->paused is set; the loop ends */
        if (e != HPE_OK) {
            parse_error(h);
            return 0;
        }
        if (h->parser.upgrade) {
            /* the request carried Upgrade: it has been answered (400) and the connection
             * closes after that answer */
            kh_conn_close_after_write(c);
            return 0;
        }
    }
    return 0;
}

static void h1_on_drained(struct kh_conn *c) {}

static size_t h1_active(struct kh_conn *c)
{
    struct h1 *h = c->codec_data;
    return h->req != NULL;
}

static void h1_sweep(struct kh_conn *c, uint64_t now)
{
    struct h1 *h = c->codec_data;
    if (h->req && !h->msg_complete && kh_request_check_timeouts(h->req, now))
        kh_conn_close_after_write(c);
}

static void h1_shutdown(struct kh_conn *c)
{
    struct h1 *h = c->codec_data;
    if (h->req == NULL)
        kh_conn_close(c);
    /* otherwise the answer in progress carries Connection: close */
}

/* A connection between requests is closed (lingering: a request that crossed the close is
 * read and dropped, the client sees a clean end and sends it again elsewhere); one that has
 * not had its first request yet is new (accepted while draining): its request is answered,
 * with Connection: close, as is the one in progress. */
static void h1_drain(struct kh_conn *c)
{
    struct h1 *h = c->codec_data;
    if (h->req == NULL && h->served > 0)
        kh_conn_close_after_write(c);
}

static bool h1_idle(struct kh_conn *c)
{
    struct h1 *h = c->codec_data;
    return h->req == NULL || (h->req->responded && !h->msg_complete);
}

static void h1_free(struct kh_conn *c)
{
    struct h1 *h = c->codec_data;
    if (h == NULL)
        return;
    if (h->req) {
        kh_request_detach(h->req);
        kh_request_release(h->req);
    }
    kh_buf_cleanup(&h->name);
    kh_buf_cleanup(&h->value);
    free(h);
    c->codec_data = NULL;
}

const struct kh_codec_ops kh_h1_codec = {
    .name = "h1",
    .proto = 1,
    .init = h1_init,
    .on_read = h1_on_read,
    .on_drained = h1_on_drained,
    .shutdown = h1_shutdown,
    .drain = h1_drain,
    .idle = h1_idle,
    .active = h1_active,
    .sweep = h1_sweep,
    .free = h1_free,
};

const char *kh_h1_library(void)
{
    static char v[32];
    unsigned long hp = http_parser_version();
    snprintf(v, sizeof(v), "http-parser %lu.%lu.%lu", hp >> 16 & 255, hp >> 8 & 255, hp & 255);
    return v;
}
