/*
 * envelope: the streaming parser and validator of a Sora report body (the envelope rules
 * are in the README, "What it accepts"). Bytes are fed as they arrive (yajl, one pass, no
 * DOM); stats objects become rows of a kh_report while the body streams. On the first
 * problem parsing stops and kh_envelope_error() names the field and the rule
 * ("connection_id: must be 26 characters, got 27"); nothing of a failed report is handed
 * out. This module is the only user of yajl.
 */
#ifndef KH_ENVELOPE_H
#define KH_ENVELOPE_H

#include <stdbool.h>
#include <stddef.h>

#include "sora/privacy.h"
#include "sora/report.h"

struct kh_envelope_limits {
    size_t max_depth;   /* JSON nesting */
    size_t max_stats;   /* objects in "stats" */
    size_t max_members; /* members in one stats object */
    size_t arena_max;   /* memory one report may hold */
    /* not a limit but goes with them to every parser: what is done to IP addresses as each
     * row is finished (NULL: nothing). Read only, by any thread; outlives the parser. */
    const struct kh_privacy *privacy;
};

enum kh_envelope_flavor {
    KH_FLAVOR_EXPORTER, /* stats exporter: every envelope flag required */
    KH_FLAVOR_WEBHOOK   /* stats webhook: multistream optional */
};

struct kh_envelope;

extern const struct kh_envelope_limits kh_envelope_default_limits;

/* NULL on allocation failure. limits may be NULL for the defaults. */
struct kh_envelope *kh_envelope_new(enum kh_report_kind kind, enum kh_envelope_flavor flavor,
                                    const struct kh_envelope_limits *limits);
void kh_envelope_free(struct kh_envelope *e);
/* 0, or KH_EINVAL (see kh_envelope_error) / KH_ENOMEM. Feeding after a failure is a no-op
 * that returns the same error. */
int kh_envelope_feed(struct kh_envelope *e, const void *data, size_t len);
/* Ends the body and runs the checks that need all of it. 0 or KH_EINVAL / KH_ENOMEM. */
int kh_envelope_finish(struct kh_envelope *e);
/* After a successful finish: hands the report out (the caller frees it). */
struct kh_report *kh_envelope_take_report(struct kh_envelope *e);
const char *kh_envelope_error(const struct kh_envelope *e);
/* Reads the numbers at keys[0..n) of a JSON object's text (a record member the parser kept
 * as JSON, such as qualityLimitationDurations) into out[]; a key without a number gives NAN.
 * False when the text is not a JSON object (out is all NAN then). */
bool kh_envelope_json_numbers(const char *json, size_t len, const char *const *keys, double *out,
                              size_t n);
/* yajl's run-time version, "yajl X.Y.Z" (--version). */
const char *kh_envelope_library(void);
/* The channel_id, connection_id and node_name read so far, also after a failure (p NULL when
 * not read). Untrusted text: valid UTF-8, but not checked against the envelope rules. */
void kh_envelope_ids(const struct kh_envelope *e, struct kh_str *channel_id,
                     struct kh_str *connection_id, struct kh_str *node_name);

#endif
