/*
 * lifecycle_body: what the webhook parser (lifecycle.c) reads out of a session or event
 * webhook body and hands the row builder (lifecycle_rows.c): the members kohaku uses, each as
 * found, already checked. Internal to the two; nothing else includes it.
 */
#ifndef KH_LIFECYCLE_BODY_H
#define KH_LIFECYCLE_BODY_H

#include <stdbool.h>
#include <stdint.h>

#include "core/timeutil.h"
#include "sora/report.h"

/* A time member: RFC 3339, kept as kohaku's text form (in the report's arena, like every
 * string here: the rows point at them). */
struct kh_lc_time {
    bool set;
    int64_t usec;
    const char *text; /* KH_TIME_TEXT_LEN characters */
};

struct kh_lc_int {
    bool set;
    int64_t v;
};

/* The members read from the body's top level, or from its "data" object (the event
 * webhook's connection details; what the top level has wins). Strings are in the report's
 * arena; p NULL when absent, null, or (for the descriptive ones) of another JSON type. */
struct kh_lc_fields {
    struct kh_str type, id, label, version, node_name;
    struct kh_str channel_id, session_id, connection_id, client_id, bundle_id, role;
    struct kh_str reason, turn_transport_type;
    struct kh_lc_time timestamp, created, destroyed; /* timestamp, created/destroyed_timestamp */
    int8_t multistream, simulcast, spotlight, audio, video; /* -1 = absent */
    struct kh_lc_int max_connections, total_connections;
    struct kh_lc_int minutes, total_received_bytes, total_sent_bytes;
};

/* One entry of a session webhook's "connections". */
struct kh_lc_conn {
    struct kh_str connection_id, client_id, bundle_id, role, audio_codec_type, video_codec_type;
    struct kh_lc_time created, destroyed; /* connection_created/destroyed_timestamp */
    int8_t audio, video, simulcast, spotlight;
    struct kh_lc_int video_bit_rate;
};

struct kh_lc_body {
    struct kh_lc_fields top, data;
    struct kh_str data_json; /* the "data" object as JSON text (p NULL: none) */
    struct kh_lc_conn *conns;
    size_t nconns;
};

/* Adds the lifecycle rows the body gives (sora_session, sora_connection_lifecycle) to r, a
 * webhook report whose envelope (kind, type, ids, time) is filled. 0 or KH_ENOMEM (the
 * report's arena is full). */
int kh_lifecycle_rows(struct kh_report *r, const struct kh_lc_body *b);

#endif
