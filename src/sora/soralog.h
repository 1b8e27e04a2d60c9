/*
 * soralog: one line of Sora's log files, read for its structure only: where its top-level
 * members are, and the few values that say what the line is. The formats (README,
 * "Importing Sora's log files"):
 *   rtc-stats    rtc_stats.jsonl: a report's envelope flattened, and one stats object in
 *                `rtc_data` (with rtc_id, rtc_timestamp, rtc_type repeating its own);
 *   webhook-log  {"id": ..., "timestamp": ..., "req": <the webhook's body>} (the stats,
 *                session and event webhooks' logs);
 *   bodies       one report body per line.
 * Nothing here applies the envelope rules: the report a line gives is checked by the
 * envelope parser, as the live path's is. Positions are byte offsets into the line as
 * given, so a caller copies member text as it was written (numbers with their exponents,
 * strings with their escapes). This module and envelope.c are the users of yajl.
 */
#ifndef KH_SORALOG_H
#define KH_SORALOG_H

#include <stdbool.h>
#include <stddef.h>

enum kh_soralog_format {
    KH_SORALOG_AUTO,
    KH_SORALOG_RTC_STATS,
    KH_SORALOG_WEBHOOK_LOG,
    KH_SORALOG_BODIES,
};

/* "auto", "rtc-stats", "webhook-log", "bodies". */
const char *kh_soralog_format_name(enum kh_soralog_format f);
/* 0, or KH_EINVAL for a name that is none of them. */
int kh_soralog_format_parse(const char *name, enum kh_soralog_format *out);

/* Top-level members kept per line (a line with more is refused). */
#define KH_SORALOG_MAX_MEMBERS 128

struct kh_span {
    size_t off, len; /* len 0: absent */
};

/* A top-level member the line's kind gives a meaning to. */
enum kh_soralog_key {
    KH_SK_OTHER,
    KH_SK_TYPE,
    KH_SK_ID,
    KH_SK_TIMESTAMP,
    KH_SK_CONNECTION_ID,
    KH_SK_STATS,
    KH_SK_REQ,
    KH_SK_RTC_DATA,
    KH_SK_RTC_ID,
    KH_SK_RTC_TIMESTAMP,
    KH_SK_RTC_TYPE,
    KH_SK_COUNT
};

struct kh_soraline {
    size_t nmembers;
    /* each member's text, from its key's opening quote to the end of its value */
    struct kh_span member[KH_SORALOG_MAX_MEMBERS];
    enum kh_soralog_key key[KH_SORALOG_MAX_MEMBERS];
    /* the value text of the known members (raw JSON, e.g. "\"W56J...\"", or 1.2e+3) */
    struct kh_span value[KH_SK_COUNT];
    /* the top-level "type", and the "type" of an object "req", when they are strings:
     * decoded, cut at 47 bytes (a longer one is no type this program knows) */
    char type[48], req_type[48];
    bool has_type, has_req_type;
    bool req_object; /* "req" is an object */
    char err[256];
};

/* Reads line[0, len). stop_at_type: stop once the top-level "type" string is known (the
 * bodies format needs nothing else; the rest of the line is the envelope parser's to
 * read). 0, or KH_EINVAL with l->err ("line: malformed JSON at byte 12: ...", "line: must
 * be a JSON object, got array") / KH_ENOMEM. */
int kh_soraline_parse(struct kh_soraline *l, const char *line, size_t len, bool stop_at_type);

/* The format a line read with kh_soraline_parse is in: rtc_data -> rtc-stats, req ->
 * webhook-log, a type -> bodies; KH_SORALOG_AUTO when none of them. */
enum kh_soralog_format kh_soralog_detect(const struct kh_soraline *l);

#endif
