/*
 * report: one validated Sora report turned into rows, ready for storage. Everything it points
 * to lives in its arena; kh_report_free releases it all at once. A report is built on the
 * loop thread or a parse pool thread, read by a writer thread while its batch is stored, then
 * freed on the loop. A session or event webhook is a report too: its envelope (type, id,
 * timestamp, ids) and the lifecycle rows it carries (env_rows), and no stats rows.
 */
#ifndef KH_REPORT_H
#define KH_REPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/arena.h"
#include "core/timeutil.h"

enum kh_report_kind {
    KH_REPORT_CONNECTION,      /* connection.user-agent (exporter) or connection.rtc (webhook) */
    KH_REPORT_NODE,            /* node.erlang-vm */
    KH_REPORT_SESSION_WEBHOOK, /* Sora's session webhook: session.created ... */
    KH_REPORT_EVENT_WEBHOOK    /* Sora's event webhook: connection.created ... */
};
#define KH_REPORT_KINDS 4

struct kh_str {
    const char *p; /* NUL-terminated, in the arena */
    uint32_t len;
};

/* A column value. type 0 = SQL NULL, otherwise enum kh_coltype. */
struct kh_value {
    uint8_t type;
    uint32_t len; /* TEXT and JSON */
    union {
        int64_t i;
        double d;
        const char *s;
        bool b;
    } u;
};

struct kh_row {
    struct kh_row *next;
    int table;                /* index in kh_stats_tables */
    struct kh_str stats_type; /* connection scope */
    struct kh_str stats_id;   /* connection scope */
    double stats_timestamp;   /* connection scope */
    uint32_t stats_index;     /* node item scope: the object's position in "stats" */
    struct kh_value *vals;    /* one per member of the table */
    struct kh_str extra;      /* JSON object text, or p == NULL when nothing is left over */
};

/* A row of an envelope table the report carries (a KH_ENV_CARRIED table: a webhook's
 * session and connections), one value per column of the table. */
struct kh_env_row {
    struct kh_env_row *next;
    int table;             /* index in kh_env_tables */
    struct kh_value *vals; /* one per column */
};

/* Tables counted per report (kh_stats_ntables is below this). */
#define KH_REPORT_MAX_TABLES 32

struct kh_report {
    enum kh_report_kind kind;
    struct kh_arena arena;
    /* envelope */
    struct kh_str type, id, label, version, node_name;
    struct kh_str channel_id, client_id, session_id, connection_id, bundle_id, role;
    int8_t multistream, simulcast, spotlight; /* -1 = absent */
    int64_t time_usec;
    char time_text[KH_TIME_TEXT_LEN + 1];
    char received_text[KH_TIME_TEXT_LEN + 1]; /* when kohaku finished reading it */
    /* rows, in report order */
    struct kh_row *rows;
    struct kh_row **rows_tail;
    size_t nrows;
    /* rows per table, counted as they are added: whoever tallies them later (metrics) need
     * not walk rows that may be cold in another core's cache */
    uint32_t table_rows[KH_REPORT_MAX_TABLES];
    size_t body_bytes;
    /* the quality stage has been over it (its rows are in `rows`, unless its arena was
     * full): a retried write does not assess it twice; what it noted for the metrics (in
     * the arena; pipeline/quality_metrics.h), or NULL */
    bool assessed;
    const void *quality_note;
    /* its quality_connection row (among `rows`), NULL without one: the sources KH_SRC_Q_* */
    const struct kh_row *rating;
    /* the envelope rows it carries (webhooks), in the order they were added */
    struct kh_env_row *env_rows;
    struct kh_env_row **env_tail;
    size_t nenv;
};

/* NULL on allocation failure. arena_max bounds everything the report may hold. */
struct kh_report *kh_report_new(enum kh_report_kind kind, size_t arena_max);
void kh_report_free(struct kh_report *r);
void kh_report_add_row(struct kh_report *r, struct kh_row *row);
void kh_report_add_env_row(struct kh_report *r, struct kh_env_row *row);
/* A session or event webhook (no stats rows; env_rows instead). */
static inline bool kh_report_is_webhook(const struct kh_report *r)
{
    return r->kind == KH_REPORT_SESSION_WEBHOOK || r->kind == KH_REPORT_EVENT_WEBHOOK;
}

/* The rows of the report's own stats objects: nrows without those kohaku computed (the
 * quality rows). */
size_t kh_report_stats_rows(const struct kh_report *r);

/* The value of a column (enum kh_common_src in sora/schema.h) for one row: from the
 * envelope or from the row (row may be NULL for the sources of the envelope alone, those of
 * the envelope tables). Strings point into the report. KH_SRC_TIME gives the envelope time
 * as KH_COL_TIME with its text (r->time_usec is the same instant); KH_SRC_RECEIVED_AT
 * gives r->received_text, with no microseconds beside it. */
struct kh_value kh_report_common_value(const struct kh_report *r, const struct kh_row *row,
                                       int src);

#endif
