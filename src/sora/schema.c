/*
 * schema: lookups and SQL derived from the declarative table in schema_table.c.
 * Owns the flattened tables (kh_stats_tables: each table's dictionaries' members in column
 * order), the derived column names and the member lookup hash (built once by kh_schema_init,
 * read-only afterwards, so any thread may use them).
 */
#include "sora/schema.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "sora/report.h"

struct derived {
    size_t type_len, type2_len, kind_len;
    char **columns; /* snake_case name per member */
};

static struct derived *derived;

const struct kh_stats_table *kh_stats_tables;
static struct kh_stats_table *tables; /* what kh_stats_tables points to, members filled */

static int since(int v) { return v ? v : 1; }

/* Member lookup: one open-addressing hash over (table, member name) for all tables. */
struct slot {
    const char *name;
    uint32_t len;
    int16_t table, member;
};
static struct slot *hash_slots;
static size_t hash_mask;

/* Names differ early or late, so the first and last 8 bytes and the length are enough to
 * spread them; equal hashes are told apart by memcmp. */
static uint32_t hash_name(int table, const char *s, size_t n)
{
    uint64_t a = 0, b = 0;
    memcpy(&a, s, n < 8 ? n : 8);
    if (n > 8)
        memcpy(&b, s + n - 8, 8);
    uint64_t h = (a ^ (b * 0x9e3779b97f4a7c15ULL) ^ ((uint64_t)n << 56) ^ (uint64_t)table) *
                 0xff51afd7ed558ccdULL;
    return (uint32_t)(h >> 32);
}

static int build_hash(void)
{
    size_t total = 0;
    for (size_t t = 0; t < kh_stats_ntables; t++)
        total += kh_stats_tables[t].nmembers;
    size_t cap = 64;
    while (cap < total * 4)
        cap *= 2;
    hash_slots = calloc(cap, sizeof(*hash_slots));
    if (hash_slots == NULL)
        return -1;
    hash_mask = cap - 1;
    for (size_t t = 0; t < kh_stats_ntables; t++)
        for (size_t m = 0; m < kh_stats_tables[t].nmembers; m++) {
            const char *name = kh_stats_tables[t].members[m].name;
            size_t len = strlen(name);
            size_t i = hash_name((int)t, name, len) & hash_mask;
            while (hash_slots[i].name)
                i = (i + 1) & hash_mask;
            hash_slots[i] = (struct slot){name, (uint32_t)len, (int16_t)t, (int16_t)m};
        }
    return 0;
}

void kh_schema_snake_case(const char *in, char *out, size_t cap)
{
    size_t w = 0;
    for (size_t i = 0; in[i] && w + 2 < cap; i++) {
        char c = in[i];
        if (c >= 'A' && c <= 'Z') {
            if (i > 0)
                out[w++] = '_';
            out[w++] = (char)(c - 'A' + 'a');
        } else {
            out[w++] = c;
        }
    }
    out[w] = '\0';
}

/* A table's dictionaries' members in column order (see struct kh_stats_table). 0 or
 * KH_ENOMEM. */
static int flatten(struct kh_stats_table *t)
{
    size_t total = 0;
    int last = 1;
    for (const struct kh_stats_dict *const *d = t->dicts; *d; d++) {
        total += (*d)->nmembers;
        for (size_t m = 0; m < (*d)->nmembers; m++)
            if (since((*d)->members[m].since) > last)
                last = since((*d)->members[m].since);
    }
    struct kh_member *out = calloc(total ? total : 1, sizeof(*out));
    if (out == NULL)
        return KH_ENOMEM;
    size_t w = 0;
    for (int v = 1; v <= last; v++)
        for (const struct kh_stats_dict *const *d = t->dicts; *d; d++)
            for (size_t m = 0; m < (*d)->nmembers; m++)
                if (since((*d)->members[m].since) == v)
                    out[w++] = (*d)->members[m];
    t->members = out;
    t->nmembers = total;
    return 0;
}

static int build_tables(void)
{
    tables = calloc(kh_stats_ntables, sizeof(*tables));
    if (tables == NULL)
        return KH_ENOMEM;
    for (size_t t = 0; t < kh_stats_ntables; t++) {
        tables[t] = kh_stats_table_defs[t];
        if (flatten(&tables[t]) != 0)
            return KH_ENOMEM;
    }
    kh_stats_tables = tables;
    return 0;
}

static void free_tables(void)
{
    for (size_t t = 0; tables && t < kh_stats_ntables; t++)
        free((void *)tables[t].members);
    free(tables);
    tables = NULL;
    kh_stats_tables = NULL;
}

int kh_schema_init(void)
{
    if (derived)
        return 0;
    derived = calloc(kh_stats_ntables, sizeof(*derived));
    if (derived == NULL || build_tables() != 0)
        goto fail;
    for (size_t t = 0; t < kh_stats_ntables; t++) {
        const struct kh_stats_table *st = &kh_stats_tables[t];
        size_t n = st->nmembers;
        derived[t].type_len = st->type ? strlen(st->type) : 0;
        derived[t].type2_len = st->type2 ? strlen(st->type2) : 0;
        derived[t].kind_len = st->kind ? strlen(st->kind) : 0;
        derived[t].columns = calloc(n + 1, sizeof(char *));
        if (!derived[t].columns)
            goto fail;
        for (size_t m = 0; m < n; m++) {
            char col[128];
            kh_schema_snake_case(st->members[m].name, col, sizeof(col));
            derived[t].columns[m] = strdup(col);
            if (derived[t].columns[m] == NULL)
                goto fail;
        }
    }
    if (build_hash() != 0)
        goto fail;
    return 0;
fail:
    kh_schema_cleanup();
    return KH_ENOMEM;
}

void kh_schema_cleanup(void)
{
    for (size_t t = 0; derived && t < kh_stats_ntables; t++) {
        if (derived[t].columns)
            for (size_t m = 0; m < kh_stats_tables[t].nmembers; m++)
                free(derived[t].columns[m]);
        free(derived[t].columns);
    }
    free(derived);
    derived = NULL;
    free_tables();
    free(hash_slots);
    hash_slots = NULL;
}

static bool same(const char *a, size_t alen, const char *s, size_t n)
{
    return a && alen == n && memcmp(a, s, n) == 0;
}

int kh_schema_table_for(const char *type, size_t type_len, const char *kind, size_t kind_len)
{
    for (size_t t = 0; t < kh_stats_ntables; t++) {
        const struct kh_stats_table *st = &kh_stats_tables[t];
        const struct derived *d = &derived[t];
        if (st->scope != KH_SCOPE_CONNECTION || st->type == NULL)
            continue;
        if (!same(st->type, d->type_len, type, type_len) &&
            !same(st->type2, d->type2_len, type, type_len))
            continue;
        if (st->kind && (kind == NULL || !same(st->kind, d->kind_len, kind, kind_len)))
            continue;
        return (int)t;
    }
    return kh_table_other;
}

bool kh_schema_kind_dependent(const char *type, size_t type_len)
{
    for (size_t t = 0; t < kh_stats_ntables; t++) {
        const struct kh_stats_table *st = &kh_stats_tables[t];
        if (st->kind && (same(st->type, derived[t].type_len, type, type_len) ||
                         same(st->type2, derived[t].type2_len, type, type_len)))
            return true;
    }
    return false;
}

int kh_schema_member(int table, const char *name, size_t len)
{
    for (size_t i = hash_name(table, name, len) & hash_mask; hash_slots[i].name;
         i = (i + 1) & hash_mask) {
        const struct slot *sl = &hash_slots[i];
        if (sl->table == table && sl->len == len && memcmp(sl->name, name, len) == 0)
            return sl->member;
    }
    return -1;
}

const char *kh_schema_column(int table, int member) { return derived[table].columns[member]; }

/* The schema version of the rate views (written out below); the tables' versions come from
 * the declarative tables. */
#define RATE_VIEWS_VERSION 3
/* Version 8 changes no table here: PostgreSQL's time series become partitioned after it
 * (store/pg_partition.c). It is a version so that a kohaku from before refuses such a
 * database: its retention deletes by ctid through the parent table, and a ctid is unique
 * only within one partition. */
#define PARTITIONS_VERSION 8

int kh_schema_latest_version(void)
{
    int latest = PARTITIONS_VERSION;
    for (size_t t = 0; t < kh_env_ntables; t++) {
        if (kh_env_tables[t].since > latest)
            latest = kh_env_tables[t].since;
        for (size_t c = 0; c < kh_env_tables[t].ncols; c++)
            if (kh_env_tables[t].cols[c].since > latest)
                latest = kh_env_tables[t].cols[c].since;
    }
    for (size_t t = 0; t < kh_stats_ntables; t++) {
        const struct kh_stats_table *st = &kh_stats_tables[t];
        if (since(st->since) > latest)
            latest = since(st->since);
        for (size_t m = 0; m < st->nmembers; m++)
            if (since(st->members[m].since) > latest)
                latest = since(st->members[m].since);
    }
    return latest;
}

const char *kh_schema_sqltype(enum kh_dialect d, enum kh_coltype t)
{
    bool pg = d == KH_DIALECT_POSTGRES;
    switch (t) {
    case KH_COL_INT: return pg ? "bigint" : "INTEGER";
    case KH_COL_REAL: return pg ? "double precision" : "REAL";
    case KH_COL_TEXT: return pg ? "text" : "TEXT";
    case KH_COL_BOOL: return pg ? "boolean" : "INTEGER";
    case KH_COL_JSON: return pg ? "jsonb" : "TEXT";
    case KH_COL_TIME: return pg ? "timestamptz" : "TEXT";
    }
    return "TEXT";
}

/* The envelope tables were written by hand at first, their text columns "text" in SQLite
 * too; the same spelling keeps their DDL byte for byte what databases were made with. */
const char *kh_schema_env_sqltype(enum kh_dialect d, enum kh_coltype t)
{
    return t == KH_COL_TEXT ? "text" : kh_schema_sqltype(d, t);
}

const char *kh_schema_pg_cast(enum kh_coltype t)
{
    switch (t) {
    case KH_COL_INT: return "int8";
    case KH_COL_REAL: return "float8";
    case KH_COL_BOOL: return "bool";
    case KH_COL_JSON: return "jsonb";
    case KH_COL_TIME: return "timestamptz";
    default: return "text";
    }
}

/* The common columns of each scope (enum kh_scope order). Every stats table starts with its
 * scope's columns; the natural key makes redelivery idempotent. The connection key is
 * ordered (connection_id, time, stats_id) so that it also serves per-connection time ranges
 * and a connection's new rows land next to its old ones (the random part is only
 * connection_id). */
static const struct kh_common_column conn_cols[] = {
    {"time", KH_COL_TIME, KH_SRC_TIME, true},
    {"channel_id", KH_COL_TEXT, KH_SRC_CHANNEL_ID, true},
    {"connection_id", KH_COL_TEXT, KH_SRC_CONNECTION_ID, true},
    {"stats_type", KH_COL_TEXT, KH_SRC_STATS_TYPE, true},
    {"stats_id", KH_COL_TEXT, KH_SRC_STATS_ID, true},
    {"stats_timestamp", KH_COL_REAL, KH_SRC_STATS_TIMESTAMP, false},
};
static const struct kh_common_column node_cols[] = {
    {"time", KH_COL_TIME, KH_SRC_TIME, true},
    {"label", KH_COL_TEXT, KH_SRC_LABEL, false},
    {"node_name", KH_COL_TEXT, KH_SRC_NODE_NAME, true},
};
static const struct kh_common_column node_item_cols[] = {
    {"time", KH_COL_TIME, KH_SRC_TIME, true},
    {"label", KH_COL_TEXT, KH_SRC_LABEL, false},
    {"node_name", KH_COL_TEXT, KH_SRC_NODE_NAME, true},
    {"stats_type", KH_COL_TEXT, KH_SRC_STATS_TYPE, true},
    {"stats_index", KH_COL_INT, KH_SRC_STATS_INDEX, true},
};
static const char *const conn_key[] = {"connection_id", "time", "stats_id", NULL};
static const char *const node_key[] = {"node_name", "time", NULL};
static const char *const node_item_key[] = {"node_name", "time", "stats_index", NULL};

#define NELEM(a) (sizeof(a) / sizeof(a[0]))
static const struct kh_scope_desc scopes[] = {
    [KH_SCOPE_CONNECTION] = {conn_cols, NELEM(conn_cols), conn_key, NELEM(conn_key) - 1,
                             "connection_id", "time, stats_id"},
    [KH_SCOPE_NODE] = {node_cols, NELEM(node_cols), node_key, NELEM(node_key) - 1, "node_name",
                       "time"},
    [KH_SCOPE_NODE_ITEM] = {node_item_cols, NELEM(node_item_cols), node_item_key,
                            NELEM(node_item_key) - 1, "node_name", "time, stats_index"},
};

const struct kh_scope_desc *kh_schema_scope(int table)
{
    return &scopes[kh_stats_tables[table].scope];
}

int kh_schema_ncommon(int table) { return (int)kh_schema_scope(table)->ncols; }

bool kh_schema_has_extra(int table) { return !kh_stats_tables[table].computed; }

static int put_names(struct kh_buf *b, const char *const *names, size_t n)
{
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = kh_buf_printf(b, "%s\"%s\"", i ? ", " : "", names[i]);
    return rc;
}

static int create_stats_table(enum kh_dialect d, int t, int version, struct kh_buf *b)
{
    const struct kh_stats_table *st = &kh_stats_tables[t];
    const struct kh_scope_desc *sc = kh_schema_scope(t);
    int rc = kh_buf_printf(b, "CREATE TABLE IF NOT EXISTS \"%s\" (", st->table);
    for (size_t c = 0; rc == 0 && c < sc->ncols; c++)
        rc = kh_buf_printf(b, "%s\n  \"%s\" %s%s", c ? "," : "", sc->cols[c].name,
                           kh_schema_sqltype(d, sc->cols[c].type),
                           sc->cols[c].not_null ? " NOT NULL" : "");
    for (size_t m = 0; rc == 0 && m < st->nmembers; m++)
        if (since(st->members[m].since) <= version)
            rc = kh_buf_printf(b, ",\n  \"%s\" %s", derived[t].columns[m],
                               kh_schema_sqltype(d, st->members[m].type));
    if (rc == 0 && !st->computed)
        rc = kh_buf_printf(b, ",\n  \"extra\" %s", kh_schema_sqltype(d, KH_COL_JSON));
    if (rc == 0)
        rc = kh_buf_printf(b, "\n);\n");
    if (rc == 0)
        rc = kh_buf_printf(b, "CREATE UNIQUE INDEX IF NOT EXISTS \"%s_key\" ON \"%s\" (", st->table,
                  st->table);
    if (rc == 0)
        rc = put_names(b, sc->key, sc->nkey);
    if (rc == 0)
        rc = kh_buf_printf(b, ");\nCREATE INDEX IF NOT EXISTS \"%s_time\" ON \"%s\" (\"time\");\n",
                  st->table, st->table);
    return rc;
}

/* The schema version that adds an envelope table's column. */
static int env_since(const struct kh_env_table *et, const struct kh_env_column *col)
{
    return col->since ? col->since : et->since;
}

static int put_column_def(enum kh_dialect d, const struct kh_env_table *et, size_t c,
                          bool last, struct kh_buf *b)
{
    const struct kh_env_column *col = &et->cols[c];
    bool primary = et->upsert && strcmp(col->name, et->key[0]) == 0;
    return kh_buf_printf(b, "  \"%s\" %s%s%s\n", col->name, kh_schema_env_sqltype(d, col->type),
                         primary ? " PRIMARY KEY" : col->not_null ? " NOT NULL" : "",
                         last ? "" : ",");
}

static size_t count_names(const char *const *names)
{
    size_t n = 0;
    while (names[n])
        n++;
    return n;
}

static int create_index(const char *unique, const char *table, const char *suffix,
                        const char *const *cols, struct kh_buf *b)
{
    int rc = kh_buf_printf(b, "CREATE %sINDEX IF NOT EXISTS \"%s_%s\" ON \"%s\" (", unique,
                           table, suffix, table);
    if (rc == 0)
        rc = put_names(b, cols, count_names(cols));
    return rc ? rc : kh_buf_printf(b, ");\n");
}

/* An envelope table: the columns, then an inserted table's unique key, then its indexes. */
static int create_env_table(enum kh_dialect d, const struct kh_env_table *et, struct kh_buf *b)
{
    int rc = kh_buf_printf(b, "CREATE TABLE IF NOT EXISTS \"%s\" (\n", et->table);
    size_t n = 0; /* the columns of the table's own version; later ones are added later */
    for (size_t c = 0; c < et->ncols; c++)
        n += env_since(et, &et->cols[c]) == et->since;
    for (size_t c = 0, k = 0; rc == 0 && c < et->ncols; c++)
        if (env_since(et, &et->cols[c]) == et->since)
            rc = put_column_def(d, et, c, ++k == n, b);
    if (rc == 0)
        rc = kh_buf_printf(b, ");\n");
    if (rc == 0 && !et->upsert)
        rc = create_index("UNIQUE ", et->table, "key", et->key, b);
    for (size_t i = 0; rc == 0 && i < et->nindexes; i++)
        if (et->indexes[i].since == 0 || et->indexes[i].since == et->since)
            rc = create_index("", et->table, et->indexes[i].suffix, et->indexes[i].cols, b);
    return rc;
}

/* SQLite: exact microseconds from the time text (kh_schema_time_usec_sql's expression). */
#define SQLITE_USEC(t)                                                                         \
    "(CAST(strftime('%s', substr(" t ", 1, 19)) AS INTEGER) * 1000000 + "                      \
    "CAST(substr(" t ", 21, 6) AS INTEGER))"

/* Version 7 fills the connections' verdict columns from the quality rows stored before it
 * (UPDATE ... FROM: SQLite 3.33 and later, PostgreSQL, and Citus, co-located on
 * connection_id). */
static const char verdict_backfill[] =
    "UPDATE sora_connection SET severity = q.severity, severity_outbound = q.so, "
    "severity_inbound = q.si, mos_min = q.mos_min, video_score_min = q.vs, browser = q.browser "
    "FROM (SELECT connection_id, max(severity) AS severity, max(severity_outbound) AS so, "
    "max(severity_inbound) AS si, min(mos_min) AS mos_min, min(video_score_min) AS vs, "
    "max(browser) AS browser FROM quality_connection GROUP BY connection_id) q "
    "WHERE q.connection_id = sora_connection.connection_id;\n";

/* Version 9 fills last_seen_hour of the connections stored before it (floor division,
 * before 1970 too; in PostgreSQL through the UTC timestamp, whose epoch is an immutable
 * function, as Citus wants of an UPDATE's), and leaves 30% of each new page of
 * sora_connection free in PostgreSQL, so that the upserts of its rows, which no longer
 * change an indexed column, find room in their page (HOT updates: 75% of them, against none,
 * in BENCHMARKS.md's run M8's probe). */
static const char hour_backfill_sqlite[] =
    "UPDATE sora_connection SET last_seen_hour = " SQLITE_USEC("last_seen") " / 3600000000 - "
    "(" SQLITE_USEC("last_seen") " % 3600000000 < 0);\n";
static const char hour_backfill_pg[] =
    "UPDATE sora_connection SET last_seen_hour = "
    "floor(extract(epoch FROM last_seen AT TIME ZONE 'UTC') / 3600)::bigint;\n"
    "ALTER TABLE sora_connection SET (fillfactor = 70);\n";

/* What a version fills in the columns it adds to an older table, in each dialect, before the
 * version's indexes are made on them. */
static const struct {
    int version;
    const char *table;
    const char *sqlite, *pg;
} backfills[] = {
    {7, "sora_connection", verdict_backfill, verdict_backfill},
    {9, "sora_connection", hour_backfill_sqlite, hour_backfill_pg},
};

/* What a version does to an older envelope table: drops the indexes it retires, adds its
 * columns and fills them, then creates its indexes (on the filled columns). */
static int alter_env_table(enum kh_dialect d, const struct kh_env_table *et, int version,
                           struct kh_buf *b)
{
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < et->nindexes; i++)
        if (et->indexes[i].dropped == version)
            rc = kh_buf_printf(b, "DROP INDEX IF EXISTS \"%s_%s\";\n", et->table,
                               et->indexes[i].suffix);
    for (size_t c = 0; rc == 0 && c < et->ncols; c++)
        if (et->cols[c].since == version)
            rc = kh_buf_printf(b, "ALTER TABLE \"%s\" ADD COLUMN \"%s\" %s;\n", et->table,
                               et->cols[c].name, kh_schema_env_sqltype(d, et->cols[c].type));
    for (size_t f = 0; rc == 0 && f < NELEM(backfills); f++)
        if (backfills[f].version == version && strcmp(backfills[f].table, et->table) == 0) {
            const char *sql = d == KH_DIALECT_POSTGRES ? backfills[f].pg : backfills[f].sqlite;
            rc = kh_buf_append(b, sql, strlen(sql));
        }
    for (size_t i = 0; rc == 0 && i < et->nindexes; i++)
        if (et->indexes[i].since == version)
            rc = create_index("", et->table, et->indexes[i].suffix, et->indexes[i].cols, b);
    return rc;
}

/* A version's new envelope tables, and what it does to older ones. */
static int create_env_tables(enum kh_dialect d, int version, struct kh_buf *b)
{
    int rc = 0;
    for (size_t t = 0; rc == 0 && t < kh_env_ntables; t++) {
        const struct kh_env_table *et = &kh_env_tables[t];
        if (et->since == version)
            rc = create_env_table(d, et, b);
        else if (et->since < version)
            rc = alter_env_table(d, et, version, b);
    }
    return rc;
}

/* Version 3: rates between consecutive samples of one stats object, as views, so dashboards
 * and any SQL user read bitrate, loss, frame rate ... with a plain SELECT. The elapsed time
 * is the client's own (stats_timestamp, ms); a counter that went down (a reset) gives NULL,
 * never a negative spike; the first sample of an object has no rate. The same text runs in
 * SQLite and PostgreSQL (window functions; 1.0 * keeps divisions fractional). */
static const char inbound_rates_view[] =
    "VIEW \"rtc_inbound_rtp_rates\" AS SELECT \"time\", channel_id, connection_id, "
    "stats_id, kind, ssrc, mid, track_identifier, codec_id, dt AS seconds,\n"
    "  CASE WHEN dt > 0 AND d_bytes >= 0 THEN 8.0 * d_bytes / dt END AS bitrate,\n"
    "  CASE WHEN dt > 0 AND d_packets >= 0 THEN 1.0 * d_packets / dt END AS packets_per_second,\n"
    "  CASE WHEN d_packets >= 0 AND d_lost >= 0 AND d_packets + d_lost > 0 "
    "THEN 100.0 * d_lost / (d_packets + d_lost) END AS loss_percent,\n"
    "  1000.0 * jitter AS jitter_ms,\n"
    "  CASE WHEN d_emitted > 0 AND d_jb >= 0 THEN 1000.0 * d_jb / d_emitted END "
    "AS jitter_buffer_delay_ms,\n"
    "  CASE WHEN d_samples > 0 AND d_concealed >= 0 THEN 100.0 * d_concealed / d_samples END "
    "AS concealment_percent,\n"
    "  CASE WHEN dt > 0 AND d_frames >= 0 THEN 1.0 * d_frames / dt END AS frames_per_second,\n"
    "  frame_width, frame_height, decoder_implementation,\n"
    "  CASE WHEN d_freezes >= 0 THEN d_freezes END AS freezes,\n"
    "  CASE WHEN d_frames > 0 AND d_decode >= 0 THEN 1000.0 * d_decode / d_frames END "
    "AS decode_ms_per_frame\n"
    "FROM (SELECT *, (stats_timestamp - lag(stats_timestamp) OVER w) / 1000.0 AS dt,\n"
    "  bytes_received - lag(bytes_received) OVER w AS d_bytes,\n"
    "  packets_received - lag(packets_received) OVER w AS d_packets,\n"
    "  packets_lost - lag(packets_lost) OVER w AS d_lost,\n"
    "  jitter_buffer_delay - lag(jitter_buffer_delay) OVER w AS d_jb,\n"
    "  jitter_buffer_emitted_count - lag(jitter_buffer_emitted_count) OVER w AS d_emitted,\n"
    "  concealed_samples - lag(concealed_samples) OVER w AS d_concealed,\n"
    "  total_samples_received - lag(total_samples_received) OVER w AS d_samples,\n"
    "  frames_decoded - lag(frames_decoded) OVER w AS d_frames,\n"
    "  freeze_count - lag(freeze_count) OVER w AS d_freezes,\n"
    "  total_decode_time - lag(total_decode_time) OVER w AS d_decode\n"
    "  FROM \"rtc_inbound_rtp_stream_stats\"\n"
    "  WINDOW w AS (PARTITION BY connection_id, stats_id ORDER BY \"time\")) s;\n";

static const char outbound_rates_view[] =
    "VIEW \"rtc_outbound_rtp_rates\" AS SELECT \"time\", channel_id, connection_id, "
    "stats_id, kind, ssrc, mid, rid, codec_id, dt AS seconds,\n"
    "  CASE WHEN dt > 0 AND d_bytes >= 0 THEN 8.0 * d_bytes / dt END AS bitrate,\n"
    "  CASE WHEN dt > 0 AND d_rtx >= 0 THEN 8.0 * d_rtx / dt END AS retransmitted_bitrate,\n"
    "  target_bitrate,\n"
    "  CASE WHEN dt > 0 AND d_packets >= 0 THEN 1.0 * d_packets / dt END AS packets_per_second,\n"
    "  CASE WHEN dt > 0 AND d_frames >= 0 THEN 1.0 * d_frames / dt END AS frames_per_second,\n"
    "  frame_width, frame_height, encoder_implementation, scalability_mode,\n"
    "  quality_limitation_reason, quality_limitation_durations,\n"
    "  CASE WHEN d_frames > 0 AND d_encode >= 0 THEN 1000.0 * d_encode / d_frames END "
    "AS encode_ms_per_frame\n"
    "FROM (SELECT *, (stats_timestamp - lag(stats_timestamp) OVER w) / 1000.0 AS dt,\n"
    "  bytes_sent - lag(bytes_sent) OVER w AS d_bytes,\n"
    "  retransmitted_bytes_sent - lag(retransmitted_bytes_sent) OVER w AS d_rtx,\n"
    "  packets_sent - lag(packets_sent) OVER w AS d_packets,\n"
    "  frames_encoded - lag(frames_encoded) OVER w AS d_frames,\n"
    "  total_encode_time - lag(total_encode_time) OVER w AS d_encode\n"
    "  FROM \"rtc_outbound_rtp_stream_stats\"\n"
    "  WINDOW w AS (PARTITION BY connection_id, stats_id ORDER BY \"time\")) s;\n";

static const char pair_rates_view[] =
    "VIEW \"rtc_ice_candidate_pair_rates\" AS SELECT \"time\", channel_id, connection_id, "
    "stats_id, state, nominated, local_candidate_id, remote_candidate_id, dt AS seconds,\n"
    "  1000.0 * current_round_trip_time AS current_rtt_ms, available_outgoing_bitrate,\n"
    "  CASE WHEN dt > 0 AND d_sent >= 0 THEN 8.0 * d_sent / dt END AS sent_bitrate,\n"
    "  CASE WHEN dt > 0 AND d_received >= 0 THEN 8.0 * d_received / dt END "
    "AS received_bitrate\n"
    "FROM (SELECT *, (stats_timestamp - lag(stats_timestamp) OVER w) / 1000.0 AS dt,\n"
    "  bytes_sent - lag(bytes_sent) OVER w AS d_sent,\n"
    "  bytes_received - lag(bytes_received) OVER w AS d_received\n"
    "  FROM \"rtc_ice_candidate_pair_stats\"\n"
    "  WINDOW w AS (PARTITION BY connection_id, stats_id ORDER BY \"time\")) s;\n";

static int create_rate_views(enum kh_dialect d, struct kh_buf *b)
{
    const char *create = d == KH_DIALECT_POSTGRES ? "CREATE OR REPLACE " : "CREATE ";
    const char *const views[] = {inbound_rates_view, outbound_rates_view, pair_rates_view};
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < sizeof(views) / sizeof(views[0]); i++) {
        rc = kh_buf_append(b, create, strlen(create));
        if (rc == 0)
            rc = kh_buf_append(b, views[i], strlen(views[i]));
    }
    return rc;
}

/* The quality views (schema version 5, after the quality tables): each issue's spans, from
 * the issues of the rows (every row of a span names the start it began with), and a verdict
 * per connection over all its reports. The issue objects are read with each dialect's JSON
 * functions. */
#define QUALITY_VIEWS_VERSION 5

/* One arm per quality table, each grouped on its own, so that a filter on connection_id (or
 * channel_id) is pushed into both arms down to the tables' keys (SQLite does not push a
 * filter through an aggregate over a UNION ALL). */
#define SPAN_ARM(table, kind, each, began, bad, value)                                         \
    "SELECT q.connection_id, q.channel_id, q.stats_type, q.stats_id, " kind " AS kind,\n"      \
    "  i.key AS issue, " began " AS began, max(q.\"time\") AS ended,\n"                        \
    "  CASE WHEN " bad " THEN 'bad' ELSE 'warning' END AS severity,\n"                         \
    "  count(*) AS intervals, min(" value ") AS value_min, max(" value ") AS value_max\n"      \
    "FROM \"" table "\" q, " each "(q.issues) i WHERE q.issues IS NOT NULL\n"                  \
    "GROUP BY q.connection_id, q.channel_id, q.stats_type, q.stats_id, i.key, " began

#define SPAN_VIEW(create, each, began, bad, value)                                             \
    create " \"quality_issue_span\" AS\n"                                                     \
    SPAN_ARM("quality_stream", "max(q.kind)", each, began, bad, value) "\nUNION ALL\n"        \
    SPAN_ARM("quality_connection", "NULL", each, began, bad, value) ";\n"

static const char issue_span_pg[] =
    SPAN_VIEW("CREATE OR REPLACE VIEW", "jsonb_each", "(i.value->>'began')::timestamptz",
              "bool_or(i.value->>'severity' = 'bad')", "(i.value->>'value')::float8");
static const char issue_span_sqlite[] =
    SPAN_VIEW("CREATE VIEW", "json_each", "json_extract(i.value, '$.began')",
              "max(json_extract(i.value, '$.severity') = 'bad')",
              "json_extract(i.value, '$.value')");

/* The dialects differ in the duration only. */
#define VERDICT_VIEW(create, duration)                                                         \
    create " \"quality_connection_verdict\" AS SELECT connection_id, channel_id,\n"            \
           "  min(\"time\") AS first_report, max(\"time\") AS last_report,\n"                  \
           "  " duration " AS seconds,\n"                                                      \
           "  max(severity) AS severity,\n"                                                    \
           "  CASE max(severity) WHEN 2 THEN 'bad' WHEN 1 THEN 'warning' ELSE 'ok' END "       \
           "AS verdict,\n"                                                                     \
           "  max(severity_outbound) AS severity_outbound,\n"                                  \
           "  max(severity_inbound) AS severity_inbound,\n"                                    \
           "  min(mos_min) AS mos_min, avg(mos_avg) AS mos_avg,\n"                             \
           "  min(video_score_min) AS video_score_min, count(*) AS reports\n"                  \
           "FROM \"quality_connection\" GROUP BY connection_id, channel_id;\n"

static const char verdict_pg[] =
    VERDICT_VIEW("CREATE OR REPLACE VIEW", "extract(epoch FROM max(\"time\") - min(\"time\"))");
static const char verdict_sqlite[] =
    VERDICT_VIEW("CREATE VIEW",
                 "(" SQLITE_USEC("max(\"time\")") " - " SQLITE_USEC("min(\"time\")") ") / 1e6");

static int create_quality_views(enum kh_dialect d, struct kh_buf *b)
{
    bool pg = d == KH_DIALECT_POSTGRES;
    const char *span = pg ? issue_span_pg : issue_span_sqlite;
    const char *verdict = pg ? verdict_pg : verdict_sqlite;
    int rc = kh_buf_append(b, span, strlen(span));
    return rc ? rc : kh_buf_append(b, verdict, strlen(verdict));
}

/* A version's new stats tables and columns. */
static int stats_migration_sql(enum kh_dialect d, int version, struct kh_buf *out)
{
    int rc = 0;
    for (size_t t = 0; rc == 0 && t < kh_stats_ntables; t++) {
        const struct kh_stats_table *st = &kh_stats_tables[t];
        if (since(st->since) == version) {
            rc = create_stats_table(d, (int)t, version, out);
            continue;
        }
        if (since(st->since) > version)
            continue;
        for (size_t m = 0; rc == 0 && m < st->nmembers; m++)
            if (since(st->members[m].since) == version)
                rc = kh_buf_printf(out, "ALTER TABLE \"%s\" ADD COLUMN \"%s\" %s;\n", st->table,
                          derived[t].columns[m], kh_schema_sqltype(d, st->members[m].type));
    }
    return rc;
}

int kh_schema_migration_sql(enum kh_dialect d, int version, struct kh_buf *out)
{
    int rc = create_env_tables(d, version, out);
    if (rc == 0 && version == RATE_VIEWS_VERSION)
        rc = create_rate_views(d, out);
    if (rc == 0)
        rc = stats_migration_sql(d, version, out);
    if (rc == 0 && version == QUALITY_VIEWS_VERSION)
        rc = create_quality_views(d, out);
    return rc;
}

int kh_schema_migration_tables_sql(enum kh_dialect d, int version, struct kh_buf *out)
{
    int rc = create_env_tables(d, version, out);
    return rc ? rc : stats_migration_sql(d, version, out);
}

int kh_schema_migration_views_sql(enum kh_dialect d, int version, struct kh_buf *out)
{
    if (version == RATE_VIEWS_VERSION)
        return create_rate_views(d, out);
    if (version == QUALITY_VIEWS_VERSION)
        return create_quality_views(d, out);
    return 0;
}

int kh_schema_insert_sql(enum kh_dialect d, int table, struct kh_buf *out)
{
    const struct kh_stats_table *st = &kh_stats_tables[table];
    const struct kh_scope_desc *sc = kh_schema_scope(table);
    int ncommon = (int)sc->ncols;
    const char *ignore = d == KH_DIALECT_SQLITE ? "OR IGNORE " : "";
    int rc = kh_buf_printf(out, "INSERT %sINTO \"%s\" (", ignore, st->table);
    for (int i = 0; rc == 0 && i < ncommon; i++)
        rc = kh_buf_printf(out, "%s\"%s\"", i ? ", " : "", sc->cols[i].name);
    for (size_t m = 0; rc == 0 && m < st->nmembers; m++)
        rc = kh_buf_printf(out, ", \"%s\"", derived[table].columns[m]);
    if (rc == 0 && kh_schema_has_extra(table))
        rc = kh_buf_printf(out, ", \"extra\"");
    if (rc == 0)
        rc = kh_buf_printf(out, ") VALUES (");
    size_t ncols = (size_t)ncommon + st->nmembers + (kh_schema_has_extra(table) ? 1 : 0);
    for (size_t i = 0; rc == 0 && i < ncols; i++) {
        if (d == KH_DIALECT_SQLITE)
            rc = kh_buf_printf(out, "%s?", i ? "," : "");
        else
            rc = kh_buf_printf(out, "%s$%zu", i ? "," : "", i + 1);
    }
    if (rc == 0)
        rc = kh_buf_printf(out, ")%s", d == KH_DIALECT_POSTGRES ? " ON CONFLICT DO NOTHING" : "");
    return rc;
}

/* --- the envelope tables' statements ---------------------------------------------------- */

static int env_column_list(const struct kh_env_table *et, const char *sep, struct kh_buf *b)
{
    int rc = 0;
    for (size_t c = 0; rc == 0 && c < et->ncols; c++)
        rc = kh_buf_printf(b, "%s\"%s\"", c ? sep : "", et->cols[c].name);
    return rc;
}

/* VALUES (?,?,...) for SQLite; unnest($1::type[], ...) AS u (columns) for PostgreSQL. */
static int env_row_source(enum kh_dialect d, const struct kh_env_table *et, struct kh_buf *b)
{
    if (d == KH_DIALECT_SQLITE) {
        int rc = kh_buf_printf(b, "VALUES (");
        for (size_t c = 0; rc == 0 && c < et->ncols; c++)
            rc = kh_buf_printf(b, "%s?", c ? "," : "");
        return rc ? rc : kh_buf_printf(b, ")");
    }
    int rc = kh_buf_printf(b, "SELECT u.* FROM unnest(");
    for (size_t c = 0; rc == 0 && c < et->ncols; c++)
        rc = kh_buf_printf(b, "%s$%zu::%s[]", c ? ", " : "", c + 1,
                           kh_schema_pg_cast(et->cols[c].type));
    if (rc == 0)
        rc = kh_buf_printf(b, ") AS u(");
    if (rc == 0)
        rc = env_column_list(et, ", ", b);
    return rc ? rc : kh_buf_printf(b, ")");
}

/* A column of a carried table over the rows of one key, as its merge rule says: the smallest
 * or largest (NULL ignored), else the first or the last value known, in the arrays' order. */
static int grouped_value(const struct kh_env_column *c, bool key, struct kh_buf *b)
{
    if (key)
        return kh_buf_printf(b, "u.\"%s\"", c->name);
    if (c->merge == KH_MERGE_MIN || c->merge == KH_MERGE_MAX)
        return kh_buf_printf(b, "%s(u.\"%s\")", c->merge == KH_MERGE_MIN ? "min" : "max",
                             c->name);
    bool last = c->merge == KH_MERGE_COALESCE || c->merge == KH_MERGE_REPLACE;
    return kh_buf_printf(b,
                         "(array_agg(u.\"%s\" ORDER BY u.kh_ord%s) FILTER (WHERE u.\"%s\" IS "
                         "NOT NULL))[1]",
                         c->name, last ? " DESC" : "", c->name);
}

/* PostgreSQL, a carried table: the arrays' rows merged per key, in key order. */
static int grouped_row_source(const struct kh_env_table *et, struct kh_buf *b)
{
    int rc = kh_buf_printf(b, "SELECT ");
    for (size_t c = 0; rc == 0 && c < et->ncols; c++) {
        rc = c ? kh_buf_printf(b, ", ") : 0;
        if (rc == 0)
            rc = grouped_value(&et->cols[c], strcmp(et->cols[c].name, et->key[0]) == 0, b);
    }
    if (rc == 0)
        rc = kh_buf_printf(b, " FROM unnest(");
    for (size_t c = 0; rc == 0 && c < et->ncols; c++)
        rc = kh_buf_printf(b, "%s$%zu::%s[]", c ? ", " : "", c + 1,
                           kh_schema_pg_cast(et->cols[c].type));
    if (rc == 0)
        rc = kh_buf_printf(b, ") WITH ORDINALITY AS u(");
    if (rc == 0)
        rc = env_column_list(et, ", ", b);
    return rc ? rc
              : kh_buf_printf(b, ", kh_ord) GROUP BY u.\"%s\" ORDER BY u.\"%s\"", et->key[0],
                              et->key[0]);
}

bool kh_schema_env_applies(int t, int report_kind)
{
    int kind = kh_env_tables[t].kind;
    bool webhook = report_kind == KH_REPORT_SESSION_WEBHOOK ||
                   report_kind == KH_REPORT_EVENT_WEBHOOK;
    switch (kind) {
    case KH_ENV_STATS: return !webhook;
    case KH_ENV_WEBHOOKS: return webhook;
    case KH_ENV_CARRIED: return false;
    default: return kind == report_kind;
    }
}

int kh_schema_env_rows_sql(enum kh_dialect d, int t, struct kh_buf *out)
{
    const struct kh_env_table *et = &kh_env_tables[t];
    bool ignore = d == KH_DIALECT_SQLITE && !et->upsert;
    int rc = kh_buf_printf(out, "INSERT %sINTO \"%s\" (", ignore ? "OR IGNORE " : "", et->table);
    if (rc == 0)
        rc = env_column_list(et, ", ", out);
    if (rc == 0)
        rc = kh_buf_printf(out, ") ");
    if (rc == 0 && d == KH_DIALECT_POSTGRES && et->kind == KH_ENV_CARRIED)
        return grouped_row_source(et, out);
    return rc ? rc : env_row_source(d, et, out);
}

/* The stored value of a column in DO UPDATE SET (qualified in PostgreSQL, where a bare name
 * is ambiguous), and the new one. */
static int put_stored(struct kh_buf *b, enum kh_dialect d, const char *table, const char *col)
{
    if (d == KH_DIALECT_POSTGRES)
        return kh_buf_printf(b, "\"%s\".\"%s\"", table, col);
    return kh_buf_printf(b, "\"%s\"", col);
}

static int put_new(struct kh_buf *b, enum kh_dialect d, const char *col)
{
    return kh_buf_printf(b, "%s.\"%s\"", d == KH_DIALECT_POSTGRES ? "EXCLUDED" : "excluded", col);
}

/* SQLite's two-argument min() and max() are NULL when either side is: for a column that may
 * be NULL the merge falls back to whichever side is not (PostgreSQL's LEAST and GREATEST
 * ignore NULLs themselves). */
static int null_safe_sqlite(const char *table, const struct kh_env_column *c, struct kh_buf *b)
{
    int rc = kh_buf_printf(b, "coalesce(%s(", c->merge == KH_MERGE_MIN ? "min" : "max");
    if (rc == 0)
        rc = put_stored(b, KH_DIALECT_SQLITE, table, c->name);
    if (rc == 0)
        rc = kh_buf_printf(b, ", ");
    if (rc == 0)
        rc = put_new(b, KH_DIALECT_SQLITE, c->name);
    if (rc == 0)
        rc = kh_buf_printf(b, "), ");
    if (rc == 0)
        rc = put_stored(b, KH_DIALECT_SQLITE, table, c->name);
    if (rc == 0)
        rc = kh_buf_printf(b, ", ");
    if (rc == 0)
        rc = put_new(b, KH_DIALECT_SQLITE, c->name);
    return rc ? rc : kh_buf_printf(b, ")");
}

/* One assignment of DO UPDATE SET: min/max/coalesce in SQLite, LEAST/GREATEST/COALESCE in
 * PostgreSQL (coalesce takes the new value first, fill the stored one). */
static int merge_sql(enum kh_dialect d, const char *table, const struct kh_env_column *c,
                     struct kh_buf *b)
{
    static const char *const fn[][2] = {[KH_MERGE_MIN] = {"min", "LEAST"},
                                        [KH_MERGE_MAX] = {"max", "GREATEST"},
                                        [KH_MERGE_COALESCE] = {"coalesce", "COALESCE"},
                                        [KH_MERGE_FILL] = {"coalesce", "COALESCE"}};
    int rc = kh_buf_printf(b, "\"%s\" = ", c->name);
    if (rc != 0 || c->merge == KH_MERGE_REPLACE)
        return rc ? rc : put_new(b, d, c->name);
    bool min_max = c->merge == KH_MERGE_MIN || c->merge == KH_MERGE_MAX;
    if (min_max && !c->not_null && d == KH_DIALECT_SQLITE)
        return null_safe_sqlite(table, c, b);
    bool new_first = c->merge == KH_MERGE_COALESCE;
    rc = kh_buf_printf(b, "%s(", fn[c->merge][d == KH_DIALECT_POSTGRES]);
    if (rc == 0)
        rc = new_first ? put_new(b, d, c->name) : put_stored(b, d, table, c->name);
    if (rc == 0)
        rc = kh_buf_printf(b, ", ");
    if (rc == 0)
        rc = new_first ? put_stored(b, d, table, c->name) : put_new(b, d, c->name);
    return rc ? rc : kh_buf_printf(b, ")");
}

int kh_schema_env_conflict_sql(enum kh_dialect d, int t, struct kh_buf *out)
{
    const struct kh_env_table *et = &kh_env_tables[t];
    if (!et->upsert)
        return d == KH_DIALECT_POSTGRES ? kh_buf_printf(out, " ON CONFLICT DO NOTHING") : 0;
    int rc = kh_buf_printf(out, " ON CONFLICT (");
    if (rc == 0)
        rc = put_names(out, et->key, count_names(et->key));
    if (rc == 0)
        rc = kh_buf_printf(out, ") DO ");
    size_t merged = 0;
    for (size_t c = 0; rc == 0 && c < et->ncols; c++) {
        if (et->cols[c].merge == KH_MERGE_KEEP)
            continue;
        rc = kh_buf_printf(out, "%s", merged++ ? ", " : "UPDATE SET ");
        if (rc == 0)
            rc = merge_sql(d, et->table, &et->cols[c], out);
    }
    return rc == 0 && merged == 0 ? kh_buf_printf(out, "NOTHING") : rc;
}

int kh_schema_env_sql(enum kh_dialect d, int t, struct kh_buf *out)
{
    int rc = kh_schema_env_rows_sql(d, t, out);
    return rc ? rc : kh_schema_env_conflict_sql(d, t, out);
}

/* --- reading rows back ------------------------------------------------------------------ */

int kh_schema_row_columns(int table) { return 3 + (int)kh_stats_tables[table].nmembers; }

int kh_schema_select_columns(int table, const char *alias, struct kh_buf *out)
{
    static const char *const common[] = {"stats_type", "stats_id", "stats_timestamp"};
    const char *a = alias ? alias : "", *dot = alias ? "." : "";
    int rc = 0;
    for (int i = 0; rc == 0 && i < 3; i++)
        rc = kh_buf_printf(out, "%s%s%s\"%s\"", i ? ", " : "", a, dot, common[i]);
    for (size_t m = 0; rc == 0 && m < kh_stats_tables[table].nmembers; m++)
        rc = kh_buf_printf(out, ", %s%s\"%s\"", a, dot, derived[table].columns[m]);
    return rc;
}

/* SQLite keeps a time as its text, "YYYY-MM-DDTHH:MM:SS.ffffffZ" (kh_time_format): whole
 * seconds from the first 19 characters, microseconds from the six after the dot, exactly. */
int kh_schema_time_usec_sql(enum kh_dialect d, const char *expr, struct kh_buf *out)
{
    if (d == KH_DIALECT_POSTGRES)
        return kh_buf_printf(out, "(extract(epoch FROM %s) * 1000000)::int8", expr);
    return kh_buf_printf(out,
                         "(CAST(strftime('%%s', substr(%s, 1, 19)) AS INTEGER) * 1000000 + "
                         "CAST(substr(%s, 21, 6) AS INTEGER))",
                         expr, expr);
}
