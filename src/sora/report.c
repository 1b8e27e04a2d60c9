/*
 * report: allocation of reports and their rows. See report.h.
 */
#include "sora/report.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "sora/schema.h"

struct kh_report *kh_report_new(enum kh_report_kind kind, size_t arena_max)
{
    struct kh_report *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    r->kind = kind;
    kh_arena_init(&r->arena, 16384, arena_max);
    r->rows_tail = &r->rows;
    r->env_tail = &r->env_rows;
    r->multistream = r->simulcast = r->spotlight = -1;
    return r;
}

void kh_report_free(struct kh_report *r)
{
    if (r == NULL)
        return;
    kh_arena_cleanup(&r->arena);
    free(r);
}

void kh_report_add_row(struct kh_report *r, struct kh_row *row)
{
    row->next = NULL;
    *r->rows_tail = row;
    r->rows_tail = &row->next;
    r->nrows++;
    if (row->table >= 0 && row->table < KH_REPORT_MAX_TABLES)
        r->table_rows[row->table]++;
}

void kh_report_add_env_row(struct kh_report *r, struct kh_env_row *row)
{
    row->next = NULL;
    *r->env_tail = row;
    r->env_tail = &row->next;
    r->nenv++;
}

size_t kh_report_stats_rows(const struct kh_report *r)
{
    size_t n = r->nrows;
    for (size_t t = 0; t < kh_stats_ntables && t < KH_REPORT_MAX_TABLES; t++)
        if (kh_stats_tables[t].computed)
            n -= r->table_rows[t];
    return n;
}

static struct kh_value text_value(const struct kh_str *s)
{
    struct kh_value v = {.type = s->p ? KH_COL_TEXT : 0, .len = s->len};
    v.u.s = s->p;
    return v;
}

static struct kh_value int_value(int64_t i)
{
    struct kh_value v = {.type = KH_COL_INT};
    v.u.i = i;
    return v;
}

static struct kh_value flag_value(int8_t flag)
{
    struct kh_value v = {.type = flag < 0 ? 0 : KH_COL_BOOL};
    v.u.b = flag > 0;
    return v;
}

static struct kh_value time_value(const char *text)
{
    struct kh_value v = {.type = KH_COL_TIME, .len = KH_TIME_TEXT_LEN};
    v.u.s = text;
    return v;
}

/* A member of the report's own rating (its quality_connection row). */
static struct kh_value rating_value(const struct kh_report *r, enum kh_common_src src)
{
    static const char *const names[] = {
        [KH_SRC_Q_SEVERITY - KH_SRC_Q_SEVERITY] = "severity",
        [KH_SRC_Q_SEVERITY_OUTBOUND - KH_SRC_Q_SEVERITY] = "severityOutbound",
        [KH_SRC_Q_SEVERITY_INBOUND - KH_SRC_Q_SEVERITY] = "severityInbound",
        [KH_SRC_Q_MOS_MIN - KH_SRC_Q_SEVERITY] = "mosMin",
        [KH_SRC_Q_VIDEO_SCORE_MIN - KH_SRC_Q_SEVERITY] = "videoScoreMin",
        [KH_SRC_Q_BROWSER - KH_SRC_Q_SEVERITY] = "browser",
    };
    /* quality_connection's member index of each, looked up once (index + 1; 0 until then):
     * the schema never changes, so threads that race here store the same value */
    static atomic_int members[sizeof(names) / sizeof(names[0])];
    if (r->rating == NULL)
        return (struct kh_value){0};
    int slot = src - KH_SRC_Q_SEVERITY;
    int m;
    if (r->rating->table != kh_table_quality_connection) {
        m = kh_schema_member(r->rating->table, names[slot], strlen(names[slot]));
    } else if ((m = atomic_load_explicit(&members[slot], memory_order_relaxed) - 1) < 0) {
        m = kh_schema_member(r->rating->table, names[slot], strlen(names[slot]));
        atomic_store_explicit(&members[slot], m + 1, memory_order_relaxed);
    }
    return m < 0 ? (struct kh_value){0} : r->rating->vals[m];
}

/* The sources that need the report alone. */
static struct kh_value envelope_value(const struct kh_report *r, enum kh_common_src src)
{
    bool conn = r->kind != KH_REPORT_NODE;
    static const struct kh_str kinds[KH_REPORT_KINDS] = {
        {"connection", 10}, {"node", 4}, {"session_webhook", 15}, {"event_webhook", 13}};
    switch (src) {
    case KH_SRC_SESSION_ID: return text_value(&r->session_id);
    case KH_SRC_CLIENT_ID: return text_value(&r->client_id);
    case KH_SRC_BUNDLE_ID: return text_value(&r->bundle_id);
    case KH_SRC_ROLE: return text_value(&r->role);
    case KH_SRC_VERSION: return text_value(&r->version);
    case KH_SRC_MULTISTREAM: return flag_value(r->multistream);
    case KH_SRC_SIMULCAST: return flag_value(r->simulcast);
    case KH_SRC_SPOTLIGHT: return flag_value(r->spotlight);
    case KH_SRC_REPORT_ID: return text_value(&r->id);
    case KH_SRC_SOURCE: return text_value(conn ? &r->connection_id : &r->node_name);
    case KH_SRC_KIND: return text_value(&kinds[r->kind]);
    case KH_SRC_TYPE: return text_value(&r->type);
    case KH_SRC_STATS_COUNT: return int_value((int64_t)kh_report_stats_rows(r));
    case KH_SRC_BODY_BYTES: return int_value((int64_t)r->body_bytes);
    case KH_SRC_RECEIVED_AT: return time_value(r->received_text);
    case KH_SRC_TIME_HOUR: return int_value(kh_time_hour(r->time_usec));
    case KH_SRC_Q_SEVERITY:
    case KH_SRC_Q_SEVERITY_OUTBOUND:
    case KH_SRC_Q_SEVERITY_INBOUND:
    case KH_SRC_Q_MOS_MIN:
    case KH_SRC_Q_VIDEO_SCORE_MIN:
    case KH_SRC_Q_BROWSER: return rating_value(r, src);
    default: return (struct kh_value){0};
    }
}

struct kh_value kh_report_common_value(const struct kh_report *r, const struct kh_row *row,
                                       int src)
{
    struct kh_value v = {0};
    switch ((enum kh_common_src)src) {
    case KH_SRC_TIME: return time_value(r->time_text);
    case KH_SRC_CHANNEL_ID: return text_value(&r->channel_id);
    case KH_SRC_CONNECTION_ID: return text_value(&r->connection_id);
    case KH_SRC_LABEL: return text_value(&r->label);
    case KH_SRC_NODE_NAME: return text_value(&r->node_name);
    case KH_SRC_STATS_TYPE: return text_value(&row->stats_type);
    case KH_SRC_STATS_ID: return text_value(&row->stats_id);
    case KH_SRC_STATS_TIMESTAMP:
        v.type = KH_COL_REAL;
        v.u.d = row->stats_timestamp;
        return v;
    case KH_SRC_STATS_INDEX: return int_value(row->stats_index);
    default: return envelope_value(r, (enum kh_common_src)src);
    }
}
