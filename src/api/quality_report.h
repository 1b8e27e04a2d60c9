/*
 * quality_report: the answers to "why was this call bad", read from the stored quality rows
 * (quality_stream, quality_connection and their views, README "Quality") through the store's
 * query: a connection's verdict, issues with their spans and per-stream summary; a channel's
 * participants and whose uplink has the problem; the worst connections of a time range. Text
 * for a terminal or JSON for scripts, into a buffer (`kohaku quality`, the console).
 */
#ifndef KH_QUALITY_REPORT_H
#define KH_QUALITY_REPORT_H

#include <stdbool.h>
#include <stdint.h>

#include "core/buf.h"
#include "store/store.h"

enum kh_qr_what { KH_QR_CONNECTION, KH_QR_CHANNEL, KH_QR_WORST };

/* SQL (an ask template): the connections of the channel @1, as a subquery. */
#define KH_QR_CHANNEL_MEMBERS "(SELECT connection_id FROM sora_connection WHERE channel_id = @1)"
/* PostgreSQL: the same as an array to compare with (connection_id = ANY ...), so that each
 * table or partition is read by its key for them. */
#define KH_QR_CHANNEL_MEMBERS_PG "= ANY (ARRAY" KH_QR_CHANNEL_MEMBERS ")"

struct kh_qr_request {
    enum kh_qr_what what;
    const char *id;     /* the connection's or the channel's id */
    int64_t since_usec; /* KH_QR_WORST: reports from this time on */
    int limit;          /* KH_QR_WORST: connections at most */
    bool json;
    bool intervals; /* KH_QR_CONNECTION: every interval of every stream too */
};

/* Writes the answer into out. 0; KH_EINVAL when nothing is stored for the id (*err says so,
 * out holds nothing); KH_EIO/KH_ERETRY with *err when the database could not answer (an
 * older schema: *err says to migrate). */
int kh_qr_answer(struct kh_store *st, const struct kh_qr_request *q, struct kh_buf *out,
                 const char **err);

/* "1h", "30m", "90s", "2d" -> microseconds; -1 when it is none of those. */
int64_t kh_qr_parse_duration(const char *s);

#endif
