/*
 * http: what the HTTP layer offers the program that serves with it. A site is what one
 * listener serves: its routes (router.h) and the limits its requests are held to; the owner
 * builds it, hands it to the listener as the connections' context (kh_listen.ctx) with
 * kh_http_pick_codec as the listener's pick function, and may change the limits at run time.
 * This layer knows HTTP only: nothing of what is served or of who serves it.
 */
#ifndef KH_HTTP_H
#define KH_HTTP_H

#include <stddef.h>
#include <stdint.h>

struct kh_codec_ops;
struct kh_request;
struct kh_router;

/* Read where they are used: a change (SIGHUP) applies to what comes next. */
struct kh_http_limits {
    int64_t max_body_bytes;
    int64_t max_header_bytes; /* name and value bytes of all headers, the path included */
    int64_t max_headers;
    int64_t request_header_timeout; /* seconds, from a request's start to its last header */
    int64_t request_body_timeout;   /* seconds, from a request's start to its body's end */
    int64_t http2_max_concurrent_streams; /* announced in SETTINGS (new connections) */
    int64_t http2_max_read_frame_size;    /* announced in SETTINGS (new connections) */
};

struct kh_http_site {
    const struct kh_http_limits *limits;
    const struct kh_router *router;
    /* After every answer of the site (its access line written), with the status known: for
     * the owner's counters. May be NULL. */
    void (*on_answer)(const struct kh_request *req);
};

/* The codec for a connection that starts with p[0, n): HTTP/2 with prior knowledge when it
 * opens with the connection preface, HTTP/1.1 otherwise; NULL while n bytes are a prefix of
 * the preface (wait for more). A kh_codec_pick_fn. */
const struct kh_codec_ops *kh_http_pick_codec(const uint8_t *p, size_t n);

/* The protocol libraries' run-time versions, "name version" each (--version): h1.c's
 * http_parser, h2.c's nghttp2. */
const char *kh_h1_library(void);
const char *kh_h2_library(void);

#endif
