/*
 * request: shared request flow for both codecs. See request.h.
 */
#include "http/request.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/buf.h"
#include "core/jsonw.h"
#include "core/log.h"
#include "core/timeutil.h"
#include "http/http.h"
#include "http/router.h"

struct kh_request *kh_request_new(const struct kh_http_site *site, enum kh_proto proto,
                                  const struct kh_transport_ops *tp, void *conn,
                                  uint64_t conn_id, const char *peer, bool tls,
                                  const char *client)
{
    struct kh_request *req = calloc(1, sizeof(*req));
    if (req == NULL)
        return NULL;
    req->site = site;
    req->proto = proto;
    req->tp = tp;
    req->conn = conn;
    req->conn_id = conn_id;
    snprintf(req->peer, sizeof(req->peer), "%s", peer);
    req->tls = tls;
    if (client && client[0])
        snprintf(req->client, sizeof(req->client), "%s", client);
    req->content_length = -1;
    req->route_label = -1; /* until the router matches a route */
    /* bounded by the limit (and a little for the separators): more is refused with 431 */
    kh_buf_init(&req->headers, (size_t)site->limits->max_header_bytes + 1024);
    kh_buf_init(&req->resp_headers, 4096);
    kh_buf_init(&req->log_fields, 3072);
    req->refs = 1;
    req->start_usec = kh_mono_usec();
    return req;
}

void kh_request_retain(struct kh_request *req) { req->refs++; }

void kh_request_release(struct kh_request *req)
{
    if (--req->refs > 0)
        return;
    if (req->handler && req->handler->on_free)
        req->handler->on_free(req);
    free(req->resp_body);
    kh_buf_cleanup(&req->headers);
    kh_buf_cleanup(&req->resp_headers);
    kh_buf_cleanup(&req->log_fields);
    free(req);
}

/* Appends "a\0b\0" to b, or nothing when it does not fit. */
static void put_pair(struct kh_buf *b, const char *a, const char *v, size_t vlen)
{
    size_t alen = strlen(a) + 1;
    if (kh_buf_reserve(b, alen + vlen + 1) != 0)
        return;
    kh_buf_append(b, a, alen);
    kh_buf_append(b, v, vlen);
    kh_buf_append(b, "", 1);
}

static bool next_pair(const struct kh_buf *b, size_t *pos, const char **a, const char **v)
{
    if (*pos >= b->len)
        return false;
    *a = b->data + *pos;
    *v = *a + strlen(*a) + 1;
    *pos = (size_t)(*v - b->data) + strlen(*v) + 1;
    return true;
}

void kh_request_add_header(struct kh_request *req, const char *name, const char *value)
{
    put_pair(&req->resp_headers, name, value, strlen(value));
}

bool kh_request_next_header(const struct kh_request *req, size_t *pos, const char **name,
                            const char **value)
{
    return next_pair(&req->resp_headers, pos, name, value);
}

void kh_request_log_field(struct kh_request *req, const char *key, const char *value,
                          size_t len)
{
    put_pair(&req->log_fields, key, value, strnlen(value, len < 512 ? len : 512));
}

void kh_request_detach(struct kh_request *req) { req->conn = NULL; }

void kh_request_set_method(struct kh_request *req, const char *m, size_t n)
{
    snprintf(req->method_text, sizeof(req->method_text), "%.*s", (int)n, m);
    if (n == 3 && memcmp(m, "GET", 3) == 0)
        req->method = KH_METHOD_GET;
    else if (n == 4 && memcmp(m, "POST", 4) == 0)
        req->method = KH_METHOD_POST;
    else if (n == 4 && memcmp(m, "HEAD", 4) == 0)
        req->method = KH_METHOD_HEAD;
    else
        req->method = KH_METHOD_OTHER;
}

void kh_request_append_path(struct kh_request *req, const char *p, size_t n)
{
    if (req->path_len + n > KH_MAX_PATH) {
        req->path_too_long = true;
        n = KH_MAX_PATH - req->path_len;
    }
    memcpy(req->path + req->path_len, p, n);
    req->path_len += n;
    req->path[req->path_len] = '\0';
}

static bool name_is(const char *name, size_t nlen, const char *want)
{
    return strlen(want) == nlen && strncasecmp(name, want, nlen) == 0;
}

/* Keeps the header, its name in lower case (HTTP/2's are already). Headers past the buffer's
 * bound are not kept; the request is then over max_header_bytes and gets its 431. */
static void keep_header(struct kh_request *req, const char *name, size_t nlen, const char *value,
                        size_t vlen)
{
    struct kh_buf *b = &req->headers;
    if (memchr(name, '\0', nlen) || memchr(value, '\0', vlen) ||
        kh_buf_reserve(b, nlen + vlen + 2) != 0)
        return;
    for (size_t i = 0; i < nlen; i++)
        b->data[b->len++] = (char)(name[i] >= 'A' && name[i] <= 'Z' ? name[i] + 32 : name[i]);
    b->data[b->len++] = '\0';
    memcpy(b->data + b->len, value, vlen);
    b->len += vlen;
    b->data[b->len++] = '\0';
}

const char *kh_request_header_value(const struct kh_request *req, const char *name)
{
    const char *key, *value;
    for (size_t pos = 0; next_pair(&req->headers, &pos, &key, &value);)
        if (strcmp(key, name) == 0)
            return value;
    return NULL;
}

void kh_request_header(struct kh_request *req, const char *name, size_t nlen, const char *value,
                       size_t vlen)
{
    req->header_bytes += nlen + vlen;
    req->header_count++;
    keep_header(req, name, nlen, value, vlen);
    if (name_is(name, nlen, "content-length")) {
        int64_t v = 0;
        for (size_t i = 0; i < vlen && v >= 0; i++)
            v = (value[i] >= '0' && value[i] <= '9' && v < INT64_MAX / 10)
                    ? v * 10 + (value[i] - '0')
                    : -1;
        req->content_length = vlen ? v : -1;
    } else if (name_is(name, nlen, "upgrade")) {
        /* any token naming h2c, e.g. "h2c" or "websocket, h2c" */
        for (size_t i = 0; i + 3 <= vlen; i++)
            if (strncasecmp(value + i, "h2c", 3) == 0)
                req->upgrade_h2c = true;
    }
}

/* 413, naming the limit and the size seen (announced, or received so far). */
static void too_large(struct kh_request *req, int64_t seen, const char *so_far)
{
    char msg[160];
    snprintf(msg, sizeof(msg), "body: %lld bytes%s is over max_body_bytes (%lld)",
             (long long)seen, so_far, (long long)req->site->limits->max_body_bytes);
    req->close_connection = true;
    kh_request_respond_error(req, 413, msg);
}

/* 431 for headers over max_header_bytes (the path counts) or max_headers. */
static bool headers_too_large(struct kh_request *req)
{
    const struct kh_http_limits *cfg = req->site->limits;
    size_t bytes = req->header_bytes + req->path_len;
    char msg[160];
    if (req->path_too_long)
        snprintf(msg, sizeof(msg), "path: longer than %d bytes", KH_MAX_PATH);
    else if (bytes > (size_t)cfg->max_header_bytes)
        snprintf(msg, sizeof(msg), "headers: %zu bytes is over max_header_bytes (%lld)", bytes,
                 (long long)cfg->max_header_bytes);
    else if (req->header_count > (size_t)cfg->max_headers)
        snprintf(msg, sizeof(msg), "headers: %zu is over max_headers (%lld)", req->header_count,
                 (long long)cfg->max_headers);
    else
        return false;
    req->close_connection = true;
    kh_request_respond_error(req, 431, msg);
    return true;
}

void kh_request_headers_done(struct kh_request *req)
{
    req->headers_done = true;
    if (req->responded)
        return;
    const struct kh_http_limits *cfg = req->site->limits;
    if (!req->path_too_long)
        kh_router_dispatch(req->site->router, req); /* first: refusals count on their route */
    if (req->responded)
        return;
    if (headers_too_large(req))
        return;
    if (req->content_length > cfg->max_body_bytes) {
        too_large(req, req->content_length, "");
        return;
    }
    if (req->handler && req->handler->on_headers)
        req->handler->on_headers(req);
}

void kh_request_body(struct kh_request *req, const uint8_t *data, size_t len)
{
    req->body_len += len;
    if (req->responded)
        return;
    if (req->body_len > (size_t)req->site->limits->max_body_bytes) {
        too_large(req, (int64_t)req->body_len, " received so far");
        return;
    }
    if (req->handler && req->handler->on_body)
        req->handler->on_body(req, data, len);
}

void kh_request_end(struct kh_request *req)
{
    req->body_complete = true;
    if (req->responded)
        return;
    if (req->handler && req->handler->on_end)
        req->handler->on_end(req);
    else
        kh_request_respond(req, 204, NULL, 0);
}

bool kh_request_check_timeouts(struct kh_request *req, uint64_t now_usec)
{
    if (req->responded || req->body_complete)
        return false;
    const struct kh_http_limits *cfg = req->site->limits;
    uint64_t age = now_usec - req->start_usec;
    const char *why = NULL;
    if (!req->headers_done && age > (uint64_t)cfg->request_header_timeout * 1000000)
        why = "headers: not complete within request_header_timeout";
    else if (age > (uint64_t)cfg->request_body_timeout * 1000000)
        why = "body: not complete within request_body_timeout";
    if (why == NULL)
        return false;
    req->close_connection = true;
    kh_request_respond_error(req, 408, why);
    return true;
}

static void log_access(const struct kh_request *req)
{
    struct kh_logline l;
    if (!kh_log_begin(&l, KH_LOG_INFO, "access"))
        return;
    kh_log_str(&l, "method", req->method_text);
    kh_log_strn(&l, "path", req->path, req->path_len);
    kh_log_str(&l, "proto", req->proto == KH_PROTO_H2 ? "h2" : "h1");
    kh_log_int(&l, "status", req->status);
    kh_log_int(&l, "bytes_in", (int64_t)req->body_len);
    kh_log_int(&l, "bytes_out", (int64_t)req->resp_len);
    kh_log_int(&l, "usec", (int64_t)(kh_mono_usec() - req->start_usec));
    kh_log_str(&l, "peer", req->peer);
    if (req->tls)
        kh_log_bool(&l, "tls", true);
    if (req->client[0])
        kh_log_str(&l, "client", req->client);
    kh_log_int(&l, "conn", (int64_t)req->conn_id);
    if (req->proto == KH_PROTO_H2)
        kh_log_int(&l, "stream", req->stream_id);
    if (req->conn == NULL)
        kh_log_bool(&l, "client_gone", true);
    const char *key, *value;
    for (size_t pos = 0; next_pair(&req->log_fields, &pos, &key, &value);)
        kh_log_str(&l, key, value);
    kh_log_end(&l);
}

void kh_request_respond(struct kh_request *req, int status, const char *body, size_t len)
{
    if (req->responded)
        return;
    req->responded = true;
    req->status = status;
    if (body && len) {
        req->resp_body = malloc(len);
        if (req->resp_body) {
            memcpy(req->resp_body, body, len);
            req->resp_len = len;
        }
    }
    log_access(req);
    if (req->site->on_answer)
        req->site->on_answer(req);
    if (req->handler && req->handler->on_answered)
        req->handler->on_answered(req);
    if (req->conn)
        req->tp->respond(req);
}

void kh_request_respond_error(struct kh_request *req, int status, const char *message)
{
    struct kh_buf b;
    if (req->responded)
        return;
    kh_request_log_field(req, "reason", message, strlen(message));
    kh_buf_init(&b, 4096);
    if (kh_buf_append(&b, "{\"message\":", 11) == 0 &&
        kh_buf_put_json_str(&b, message, strnlen(message, 1024)) == 0 &&
        kh_buf_append(&b, "}", 1) == 0)
        kh_request_respond(req, status, b.data, b.len);
    else
        kh_request_respond(req, status, NULL, 0);
    kh_buf_cleanup(&b);
}

const char *kh_status_text(int status)
{
    switch (status) {
    case 200: return "OK";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Unknown";
    }
}
