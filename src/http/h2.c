/*
 * h2: the HTTP/2 codec on libnghttp2 (server side, prior knowledge). Each stream is a
 * kh_request; frames are fed with nghttp2_session_mem_recv and output is drained with
 * nghttp2_session_mem_send into the connection's buffer. Answers may come later than the
 * frame that completed the request (after a batch commits): they are submitted then and the
 * session is flushed, unless we are inside nghttp2's own callbacks, where the flush happens
 * after mem_recv returns. This module is the only user of nghttp2.
 *
 * Draining (h2_drain) is nghttp2's and h2o's two-step GOAWAY: a shutdown notice (GOAWAY with
 * last-stream-id 2^31-1: the peer stops opening streams, those already on their way are
 * still taken) with a PING behind it; when the PING's ACK is back (one round trip: the peer
 * has seen the notice, so every stream it opened before it has arrived) or after
 * DRAIN_NOTICE_USEC, the final GOAWAY names the last stream processed. Streams up to it are
 * answered; the connection closes once none is left.
 */
#include <event2/buffer.h>
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "core/log.h"
#include "core/timeutil.h"
#include "http/codecs.h"
#include "http/http.h"
#include "http/request.h"
#include "net/server.h"

#define CONN_WINDOW (16 * 1024 * 1024)
/* PING and SETTINGS frames a client may send: a burst of CONTROL_BURST, then CONTROL_RATE a
 * second. Beyond that the connection is closed with ENHANCE_YOUR_CALM. */
#define CONTROL_BURST 100
#define CONTROL_RATE 20
/* Response headers a handler may add (kh_request_add_header) beyond the codec's own. */
#define MAX_EXTRA_HEADERS 16
/* An early answer (a complete response while the request body is still coming, RFC 9113
 * 8.1) gives the client this long to end its stream itself, as curl does at once, before the
 * stream is reset with NO_ERROR. Resetting at once would be as correct, but curl (7.88, the
 * one Debian 12 ships) then reports the upload as failed and never shows the answer. */
#define EARLY_ANSWER_GRACE_USEC 1000000
/* A drain's final GOAWAY goes out at the PING ACK, or this long after the notice (h2o waits
 * one second). The sweep checks it once a second, so it may come up to a second later. */
#define DRAIN_NOTICE_USEC 1000000
static const uint8_t drain_ping[8] = {'k', 'h', 'd', 'r', 'a', 'i', 'n', '!'};

struct h2 {
    struct kh_conn *conn;
    nghttp2_session *session;
    struct kh_request *reqs; /* live streams */
    size_t nreqs;
    bool in_recv;
    bool notice_sent;    /* the drain's first GOAWAY (2^31-1) and its PING */
    uint64_t notice_usec;
    bool goaway_sent;    /* the final GOAWAY: no stream above its last-stream-id */
    double control_tokens;
    uint64_t control_refill_usec;
};

/* Closes a misbehaving connection: GOAWAY with `code`, then close once it is written. */
static void abuse(struct h2 *h, uint32_t code, const char *what)
{
    struct kh_logline l;
    if (kh_log_begin(&l, KH_LOG_WARN, "http/2 peer misbehaved: closing the connection")) {
        kh_log_int(&l, "conn", (int64_t)h->conn->id);
        kh_log_str(&l, "peer", h->conn->peer);
        kh_log_str(&l, "reason", what);
        kh_log_end(&l);
    }
    nghttp2_session_terminate_session(h->session, code);
}

static bool control_frame_allowed(struct h2 *h)
{
    uint64_t now = kh_mono_usec();
    h->control_tokens += (double)(now - h->control_refill_usec) / 1e6 * CONTROL_RATE;
    if (h->control_tokens > CONTROL_BURST)
        h->control_tokens = CONTROL_BURST;
    h->control_refill_usec = now;
    if (h->control_tokens < 1)
        return false;
    h->control_tokens -= 1;
    return true;
}

static void h2_respond(struct kh_request *req);
static const struct kh_transport_ops h2_transport = {.respond = h2_respond};

static void link_req(struct h2 *h, struct kh_request *req)
{
    req->next = h->reqs;
    if (h->reqs)
        h->reqs->prev = req;
    h->reqs = req;
    h->nreqs++;
}

static void unlink_req(struct h2 *h, struct kh_request *req)
{
    if (req->prev)
        req->prev->next = req->next;
    else
        h->reqs = req->next;
    if (req->next)
        req->next->prev = req->prev;
    req->prev = req->next = NULL;
    h->nreqs--;
}

/* Moves what nghttp2 has to send into the connection; closes it when the session is over. */
static void flush(struct h2 *h)
{
    struct kh_conn *c = h->conn;
    if (h->in_recv || c->dead)
        return;
    for (;;) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(h->session, &data);
        if (n < 0) {
            kh_conn_close(c);
            return;
        }
        if (n == 0)
            break;
        if (kh_conn_write(c, data, (size_t)n) != 0) {
            kh_conn_close(c);
            return;
        }
    }
    if ((!nghttp2_session_want_read(h->session) && !nghttp2_session_want_write(h->session)) ||
        (h->goaway_sent && h->nreqs == 0))
        kh_conn_close_after_write(c);
}

static void final_goaway(struct h2 *h);

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *frame, void *user)
{
    struct h2 *h = user;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    struct kh_conn *c = h->conn;
    struct kh_request *req = kh_request_new(c->ctx, KH_PROTO_H2, &h2_transport, c, c->id,
                                            c->peer, c->tls, c->subject);
    if (req == NULL)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* resets this stream only */
    req->stream_id = frame->hd.stream_id;
    link_req(h, req);
    nghttp2_session_set_stream_user_data(s, frame->hd.stream_id, req);
    return 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user)
{
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    struct kh_request *req = nghttp2_session_get_stream_user_data(s, frame->hd.stream_id);
    if (req == NULL)
        return 0;
    if (namelen == 7 && memcmp(name, ":method", 7) == 0)
        kh_request_set_method(req, (const char *)value, valuelen);
    else if (namelen == 5 && memcmp(name, ":path", 5) == 0)
        kh_request_append_path(req, (const char *)value, valuelen);
    else
        kh_request_header(req, (const char *)name, namelen, (const char *)value, valuelen);
    return 0;
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *frame, void *user)
{
    struct h2 *h = user;
    if (frame->hd.type == NGHTTP2_PING && (frame->hd.flags & NGHTTP2_FLAG_ACK) &&
        h->notice_sent && !h->goaway_sent &&
        memcmp(frame->ping.opaque_data, drain_ping, sizeof(drain_ping)) == 0) {
        final_goaway(h); /* flushed after mem_recv */
        return 0;
    }
    if ((frame->hd.type == NGHTTP2_PING || frame->hd.type == NGHTTP2_SETTINGS) &&
        !(frame->hd.flags & NGHTTP2_FLAG_ACK) && !control_frame_allowed(h)) {
        abuse(h, NGHTTP2_ENHANCE_YOUR_CALM,
              frame->hd.type == NGHTTP2_PING ? "PING flood" : "SETTINGS flood");
        return 0;
    }
    if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA)
        return 0;
    struct kh_request *req = nghttp2_session_get_stream_user_data(s, frame->hd.stream_id);
    if (req == NULL)
        return 0;
    if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST)
        kh_request_headers_done(req);
    if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)
        kh_request_end(req);
    return 0;
}

static int on_data_chunk(nghttp2_session *s, uint8_t flags, int32_t stream_id,
                         const uint8_t *data, size_t len, void *user)
{
    struct kh_request *req = nghttp2_session_get_stream_user_data(s, stream_id);
    if (req)
        kh_request_body(req, data, len);
    return 0;
}

static int on_frame_send(nghttp2_session *s, const nghttp2_frame *frame, void *user)
{
    struct h2 *h = user;
    /* the PING goes behind the notice, once the notice is out: nghttp2 sends a PING queued
     * beside a GOAWAY first, and its ACK would then prove nothing about the notice */
    if (frame->hd.type == NGHTTP2_GOAWAY && frame->goaway.last_stream_id == INT32_MAX &&
        h->notice_sent && !h->goaway_sent &&
        nghttp2_submit_ping(s, NGHTTP2_FLAG_NONE, drain_ping) != 0)
        final_goaway(h);
    struct kh_request *req = nghttp2_session_get_stream_user_data(s, frame->hd.stream_id);
    /* nghttp2 resets a malformed request (DATA past content-length, bad pseudo-headers ...)
     * with PROTOCOL_ERROR: such a peer is not a Sora node; close the whole connection. Not
     * so for a stream already answered in full: its client may end the body we no longer
     * want short of its content-length (curl sends an empty DATA with END_STREAM), which
     * nghttp2 takes for a malformed request; the stream is over, nothing else is. */
    if (frame->hd.type == NGHTTP2_RST_STREAM &&
        frame->rst_stream.error_code == NGHTTP2_PROTOCOL_ERROR) {
        if (req == NULL || req->early_answer_usec == 0)
            abuse(user, NGHTTP2_PROTOCOL_ERROR, "malformed request");
        return 0;
    }
    /* The complete answer went out before the request body ended: from now on the body is
     * discarded as it comes (the request layer ignores it), and h2_sweep resets the stream
     * with NO_ERROR if the client has not ended it within EARLY_ANSWER_GRACE_USEC. */
    if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
        (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) && req && !req->body_complete)
        req->early_answer_usec = kh_mono_usec();
    return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t stream_id, uint32_t error_code,
                           void *user)
{
    struct h2 *h = user;
    struct kh_request *req = nghttp2_session_get_stream_user_data(s, stream_id);
    if (req == NULL)
        return 0;
    nghttp2_session_set_stream_user_data(s, stream_id, NULL);
    unlink_req(h, req);
    kh_request_detach(req);
    kh_request_release(req);
    return 0;
}

static ssize_t read_body(nghttp2_session *s, int32_t stream_id, uint8_t *buf, size_t length,
                         uint32_t *data_flags, nghttp2_data_source *source, void *user)
{
    struct kh_request *req = source->ptr;
    size_t left = req->resp_len - req->resp_sent;
    size_t n = left < length ? left : length;
    memcpy(buf, req->resp_body + req->resp_sent, n);
    req->resp_sent += n;
    if (req->resp_sent == req->resp_len)
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

#define NV(n, v, vl) {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, (vl), NGHTTP2_NV_FLAG_NONE}

static void h2_respond(struct kh_request *req)
{
    struct kh_conn *c = req->conn;
    struct h2 *h = c->codec_data;
    char status[8], retry[16], clen[24];
    int sl = snprintf(status, sizeof(status), "%d", req->status);
    nghttp2_nv nva[5 + MAX_EXTRA_HEADERS] = {NV(":status", status, (size_t)sl),
                                             NV("server", "kohaku", 6)};
    size_t n = 2;
    if (req->retry_after > 0) {
        int rl = snprintf(retry, sizeof(retry), "%d", req->retry_after);
        nva[n++] = (nghttp2_nv)NV("retry-after", retry, (size_t)rl);
    }
    nghttp2_data_provider prd = {.source.ptr = req, .read_callback = read_body};
    if (req->resp_len) {
        int cl = snprintf(clen, sizeof(clen), "%zu", req->resp_len);
        const char *type = req->resp_type ? req->resp_type : "application/json";
        nva[n++] = (nghttp2_nv)NV("content-type", type, strlen(type));
        nva[n++] = (nghttp2_nv)NV("content-length", clen, (size_t)cl);
    }
    const char *name, *value;
    for (size_t pos = 0, k = 0; k < MAX_EXTRA_HEADERS &&
                                kh_request_next_header(req, &pos, &name, &value);
         k++)
        nva[n++] = (nghttp2_nv){(uint8_t *)name, (uint8_t *)value, strlen(name), strlen(value),
                                NGHTTP2_NV_FLAG_NONE};
    int rv = nghttp2_submit_response(h->session, req->stream_id, nva, n,
                                     req->resp_len && req->method != KH_METHOD_HEAD ? &prd : NULL);
    if (rv != 0) {
        struct kh_logline l;
        if (kh_log_begin(&l, KH_LOG_WARN, "http/2 response failed")) {
            kh_log_int(&l, "conn", (int64_t)c->id);
            kh_log_int(&l, "stream", req->stream_id);
            kh_log_str(&l, "error", nghttp2_strerror(rv));
            kh_log_end(&l);
        }
        nghttp2_submit_rst_stream(h->session, NGHTTP2_FLAG_NONE, req->stream_id,
                                  NGHTTP2_INTERNAL_ERROR);
    }
    flush(h);
}

static int h2_init(struct kh_conn *c)
{
    struct h2 *h = calloc(1, sizeof(*h));
    if (h == NULL)
        goto fail_alloc;
    h->conn = c;
    nghttp2_session_callbacks *cbs;
    if (nghttp2_session_callbacks_new(&cbs) != 0)
        goto fail_callbacks;
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    int rv = nghttp2_session_server_new(&h->session, cbs, h);
    nghttp2_session_callbacks_del(cbs);
    if (rv != 0)
        goto fail_session;
    const struct kh_http_limits *cfg = ((const struct kh_http_site *)c->ctx)->limits;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, (uint32_t)cfg->http2_max_concurrent_streams},
        {NGHTTP2_SETTINGS_MAX_FRAME_SIZE, (uint32_t)cfg->http2_max_read_frame_size},
    };
    if (nghttp2_submit_settings(h->session, NGHTTP2_FLAG_NONE, iv, 2) != 0 ||
        nghttp2_session_set_local_window_size(h->session, NGHTTP2_FLAG_NONE, 0, CONN_WINDOW) != 0)
        goto fail_settings;
    h->control_tokens = CONTROL_BURST;
    h->control_refill_usec = kh_mono_usec();
    c->codec_data = h;
    return 0;
fail_settings:
    nghttp2_session_del(h->session);
fail_session:
fail_callbacks:
    free(h);
fail_alloc:
    return KH_ENOMEM;
}

static int h2_on_read(struct kh_conn *c, struct evbuffer *in)
{
    struct h2 *h = c->codec_data;
    while (evbuffer_get_length(in) > 0) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            break;
        h->in_recv = true;
        ssize_t n = nghttp2_session_mem_recv(h->session, v.iov_base, v.iov_len);
        h->in_recv = false;
        if (n < 0) {
            struct kh_logline l;
            if (kh_log_begin(&l, KH_LOG_DEBUG, "http/2 session error")) {
                kh_log_int(&l, "conn", (int64_t)c->id);
                kh_log_str(&l, "error", nghttp2_strerror((int)n));
                kh_log_end(&l);
            }
            return -1;
        }
        evbuffer_drain(in, (size_t)n);
        if (c->dead)
            return 0;
    }
    flush(h);
    return 0;
}

static void h2_on_drained(struct kh_conn *c) { flush(c->codec_data); }

static void log_goaway(struct h2 *h, const char *msg, int32_t last)
{
    struct kh_logline l;
    if (kh_log_begin(&l, KH_LOG_DEBUG, msg)) {
        kh_log_int(&l, "conn", (int64_t)h->conn->id);
        kh_log_str(&l, "peer", h->conn->peer);
        kh_log_int(&l, "last_stream_id", last);
        kh_log_int(&l, "streams", (int64_t)h->nreqs);
        kh_log_end(&l);
    }
}

/* The last GOAWAY: streams already opened are finished; no new ones are accepted. */
static void final_goaway(struct h2 *h)
{
    if (h->goaway_sent)
        return;
    h->goaway_sent = true;
    int32_t last = nghttp2_session_get_last_proc_stream_id(h->session);
    nghttp2_submit_goaway(h->session, NGHTTP2_FLAG_NONE, last, NGHTTP2_NO_ERROR, NULL, 0);
    log_goaway(h, "http/2 goaway sent", last);
}

static void h2_shutdown(struct kh_conn *c)
{
    struct h2 *h = c->codec_data;
    final_goaway(h);
    flush(h);
}

static void h2_drain(struct kh_conn *c)
{
    struct h2 *h = c->codec_data;
    if (h->notice_sent || h->goaway_sent)
        return;
    h->notice_sent = true;
    h->notice_usec = kh_mono_usec();
    if (nghttp2_submit_shutdown_notice(h->session) != 0) {
        final_goaway(h);
    } else {
        log_goaway(h, "http/2 goaway notice sent", INT32_MAX);
    }
    flush(h);
}

static size_t h2_active(struct kh_conn *c)
{
    struct h2 *h = c->codec_data;
    return h->nreqs;
}

/* An early-answered stream whose client has not ended it within the grace: RST_STREAM
 * NO_ERROR (RFC 9113 8.1), so the rest of its body stops coming. */
static bool reset_if_overdue(struct h2 *h, struct kh_request *req, uint64_t now)
{
    if (req->early_answer_usec == 0 || req->reset_sent ||
        now - req->early_answer_usec < EARLY_ANSWER_GRACE_USEC)
        return false;
    req->reset_sent = true;
    nghttp2_submit_rst_stream(h->session, NGHTTP2_FLAG_NONE, req->stream_id, NGHTTP2_NO_ERROR);
    return true;
}

static void h2_sweep(struct kh_conn *c, uint64_t now)
{
    struct h2 *h = c->codec_data;
    bool any = false;
    /* no flush while walking the list: sending a 408 or a reset can close a stream and free
     * its request */
    h->in_recv = true;
    for (struct kh_request *req = h->reqs; req; req = req->next) {
        any |= kh_request_check_timeouts(req, now);
        any |= reset_if_overdue(h, req, now);
    }
    h->in_recv = false;
    if (h->notice_sent && !h->goaway_sent && now - h->notice_usec >= DRAIN_NOTICE_USEC) {
        final_goaway(h); /* the PING's ACK has not come */
        any = true;
    }
    if (any)
        flush(h);
}

static bool h2_idle(struct kh_conn *c)
{
    struct h2 *h = c->codec_data;
    return h->nreqs == 0;
}

static void h2_free(struct kh_conn *c)
{
    struct h2 *h = c->codec_data;
    if (h == NULL)
        return;
    while (h->reqs) {
        struct kh_request *req = h->reqs;
        unlink_req(h, req);
        nghttp2_session_set_stream_user_data(h->session, req->stream_id, NULL);
        kh_request_detach(req);
        kh_request_release(req);
    }
    nghttp2_session_del(h->session);
    free(h);
    c->codec_data = NULL;
}

const struct kh_codec_ops kh_h2_codec = {
    .name = "h2",
    .proto = 2,
    .init = h2_init,
    .on_read = h2_on_read,
    .on_drained = h2_on_drained,
    .shutdown = h2_shutdown,
    .drain = h2_drain,
    .idle = h2_idle,
    .active = h2_active,
    .sweep = h2_sweep,
    .free = h2_free,
};

const char *kh_h2_library(void)
{
    static char v[32];
    snprintf(v, sizeof(v), "nghttp2 %s", nghttp2_version(0)->version_str);
    return v;
}
