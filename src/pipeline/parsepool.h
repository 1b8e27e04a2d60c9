/*
 * parsepool: report bodies parsed on worker threads, off the event loop.
 *
 * The loop thread owns HTTP (nghttp2, libhttp-parser, sockets); on a machine with a second
 * core, the JSON parse and validation of a whole body (the largest single cost per report)
 * runs there in parallel. A job is a body already received in full and an envelope parser
 * made for it; its callback runs on the loop thread with the parser's result. Every submitted
 * job completes exactly once, including at kh_parsepool_free.
 */
#ifndef KH_PARSEPOOL_H
#define KH_PARSEPOOL_H

#include <stddef.h>
#include <stdint.h>

#include "sora/envelope.h"

struct event_base;
struct kh_parsepool;

/* rc 0: r is the report, now the callback's, and e NULL. Otherwise kh_envelope_feed/finish's
 * error code, r NULL and e the parser that failed (valid during the call: its message is
 * kh_envelope_error(e), what it had read is kh_envelope_ids(e)). */
typedef void (*kh_parse_cb)(void *arg, int rc, struct kh_report *r,
                            const struct kh_envelope *e);

/* NULL on failure (memory, threads). nthreads >= 1. */
struct kh_parsepool *kh_parsepool_new(struct event_base *base, int nthreads);
/* Parses body[0, len) with e (feed, then finish) on a pool thread, then calls cb on the loop.
 * The pool owns e from the call (and frees it: on the pool thread when the report is taken
 * out, so the parser's memory goes back to the allocator of the thread that took it); body
 * must stay valid and untouched until cb. 0, or KH_ENOMEM (e is then still the caller's). */
int kh_parsepool_submit(struct kh_parsepool *p, struct kh_envelope *e, const uint8_t *body,
                        size_t len, kh_parse_cb cb, void *arg);
/* Jobs submitted and not yet completed. */
size_t kh_parsepool_pending(const struct kh_parsepool *p);
/* Finishes the queued jobs, joins the threads and runs the remaining callbacks. */
void kh_parsepool_free(struct kh_parsepool *p);

#endif
