/*
 * lifecycle: the parser and validator of Sora's session and event webhook bodies, the ones
 * that tell when sessions and connections begin and end (the README, "Lifecycle webhooks",
 * has the rules). Bytes are fed as they arrive (yajl, one pass, no DOM); the result is a
 * report of kind KH_REPORT_SESSION_WEBHOOK or KH_REPORT_EVENT_WEBHOOK: its envelope (type,
 * id, timestamp, ids) for sora_webhook, and the rows it carries for sora_session and
 * sora_connection_lifecycle (kh_report.env_rows). Such a report goes through the batcher, or
 * straight to a store's write, like any other. On the first problem parsing stops and
 * kh_lifecycle_error() names the field ("connections[2].connection_id: must be 26
 * characters, got 5"); nothing of a failed body is handed out.
 *
 * The same bodies come from Sora's webhook logs (session_webhook.jsonl, event_webhook.jsonl:
 * one {"id", "timestamp", "req": body} per line): KH_LC_LOG_LINE reads such a line, the body
 * being its "req". A caller that does not know which webhook a body is from lets the body's
 * type say (KH_LC_ANY: session.* is the session webhook's, anything else the event
 * webhook's; a stats report is refused).
 *
 * lifecycle.c reads the body (with envelope.c, the only users of yajl); lifecycle_rows.c
 * turns what it read into rows.
 */
#ifndef KH_LIFECYCLE_H
#define KH_LIFECYCLE_H

#include <stddef.h>

#include "sora/envelope.h"
#include "sora/report.h"

enum kh_lifecycle_flavor {
    KH_LC_SESSION, /* the session webhook: type session.* */
    KH_LC_EVENT,   /* the event webhook: connection.*, recording.* ... */
    KH_LC_ANY      /* either, by the body's type */
};

enum kh_lifecycle_input {
    KH_LC_BODY,    /* the webhook's body, as Sora posts it */
    KH_LC_LOG_LINE /* a line of Sora's webhook log: {"id", "timestamp", "req": body} */
};

struct kh_lifecycle;

/* NULL on allocation failure. limits may be NULL for the envelope's defaults (max_stats
 * bounds the session webhook's "connections"). */
struct kh_lifecycle *kh_lifecycle_new(enum kh_lifecycle_flavor flavor,
                                      enum kh_lifecycle_input input,
                                      const struct kh_envelope_limits *limits);
void kh_lifecycle_free(struct kh_lifecycle *lc);
/* The type the request's header announced (header: its name, for the message): the body's
 * must be the same. Before the first feed; the strings must outlive the parser. */
void kh_lifecycle_expect_type(struct kh_lifecycle *lc, const char *header, const char *type);
/* 0, or KH_EINVAL (see kh_lifecycle_error) / KH_ENOMEM. Feeding after a failure is a no-op
 * that returns the same error. */
int kh_lifecycle_feed(struct kh_lifecycle *lc, const void *data, size_t len);
/* Ends the body, runs the checks that need all of it and builds the rows. 0 or KH_EINVAL /
 * KH_ENOMEM. */
int kh_lifecycle_finish(struct kh_lifecycle *lc);
/* After a successful finish: hands the report out (the caller frees it). */
struct kh_report *kh_lifecycle_take_report(struct kh_lifecycle *lc);
const char *kh_lifecycle_error(const struct kh_lifecycle *lc);
/* The type, session_id and connection_id read so far, also after a failure (p NULL when
 * not read). Untrusted text: valid UTF-8, not checked against the rules. */
void kh_lifecycle_ids(const struct kh_lifecycle *lc, struct kh_str *type,
                      struct kh_str *session_id, struct kh_str *connection_id);

/* One call: parses data[0, len) and on success hands out the report (*out, the caller's to
 * free or to submit). On failure *out is NULL and err (errlen bytes) holds the message. 0,
 * KH_EINVAL or KH_ENOMEM. */
int kh_lifecycle_parse(enum kh_lifecycle_flavor flavor, enum kh_lifecycle_input input,
                       const void *data, size_t len, const struct kh_envelope_limits *limits,
                       struct kh_report **out, char *err, size_t errlen);

#endif
