/*
 * pg_statements: the SQL text the postgres writers send, all of it derived from the schema
 * (table and column names from the declarative tables, never from a report: rows travel as
 * parameters or COPY data), and the prepared statements of a writer's connection: per stats
 * table its unnest insert ("i<t>"), per envelope table its statement ("e<t>"), and for the
 * copy method the connection's temporary staging tables.
 */
#include <stdio.h>

#include "core/errors.h"
#include "sora/schema.h"
#include "store/pg_internal.h"

int kh_pg_ncols(int t)
{
    return kh_schema_ncommon(t) + (int)kh_stats_tables[t].nmembers + kh_schema_has_extra(t);
}

/* The type of column i of stats table t, as a cast names it. */
static const char *col_type(int t, int i)
{
    int nc = kh_schema_ncommon(t);
    if (i < nc)
        return kh_schema_pg_cast(kh_schema_scope(t)->cols[i].type);
    if (i - nc < (int)kh_stats_tables[t].nmembers)
        return kh_schema_pg_cast(kh_stats_tables[t].members[i - nc].type);
    return "jsonb";
}

static const char *col_name(int t, int i)
{
    int nc = kh_schema_ncommon(t);
    if (i < nc)
        return kh_schema_scope(t)->cols[i].name;
    if (i - nc < (int)kh_stats_tables[t].nmembers)
        return kh_schema_column(t, i - nc);
    return "extra";
}

/* The column list "time", ..., "extra" of a stats table. */
static int column_list(int t, struct kh_buf *b)
{
    int rc = 0;
    for (int i = 0; rc == 0 && i < kh_pg_ncols(t); i++)
        rc = kh_buf_printf(b, "%s\"%s\"", i ? ", " : "", col_name(t, i));
    return rc;
}

/* TimescaleDB 2.17 (timescale/timescaledb#7672): an INSERT ... ON CONFLICT DO NOTHING that
 * meets a row already stored in a compressed chunk ends there, and the rows after it are
 * silently not inserted. So with compression, rows already stored are left out first, each
 * by its own probe of its key (LATERAL ... LIMIT 1: a nested loop with runtime chunk
 * exclusion and the compressed chunks' segmentby index, never a scan of the table); ON
 * CONFLICT still covers a concurrent writer. `key` is NULL-terminated. */
static int skip_stored(struct kh_buf *b, const char *table, const char *const *key)
{
    int rc = kh_buf_printf(b, " LEFT JOIN LATERAL (SELECT 1 AS hit FROM \"%s\" x WHERE ", table);
    for (int i = 0; rc == 0 && key[i]; i++)
        rc = kh_buf_printf(b, "%sx.\"%s\" = u.\"%s\"", i ? " AND " : "", key[i], key[i]);
    return rc ? rc : kh_buf_printf(b, " LIMIT 1) e ON TRUE WHERE e.hit IS NULL");
}

/* The rest of a stats table's insert after its row source "u": the stored-row filter with
 * compression, then ON CONFLICT DO NOTHING. */
static int insert_tail(const struct kh_pg *pg, int t, struct kh_buf *b)
{
    const char *table = kh_stats_tables[t].table;
    int rc = pg->ts_mode == KH_PG_TS_FULL ? skip_stored(b, table, kh_schema_scope(t)->key) : 0;
    return rc ? rc : kh_buf_printf(b, " ON CONFLICT DO NOTHING");
}

/* "a.k1 = b.k1 AND ..." over stats table t's key. */
static int key_equal(int t, const char *a, const char *b_, struct kh_buf *b)
{
    const char *const *key = kh_schema_scope(t)->key;
    int rc = 0;
    for (int i = 0; rc == 0 && key[i]; i++)
        rc = kh_buf_printf(b, "%s%s.\"%s\" = %s.\"%s\"", i ? " AND " : "", a, key[i], b_,
                           key[i]);
    return rc;
}

/* Citus with columnar partitions (pg->columnar): columnar has no speculative insertion, so no
 * ON CONFLICT. The rows (`source`, one per key) are materialised, the keys already stored
 * among them read with a join (Citus sends the rows to the shards), and the others
 * inserted; a concurrent writer's row fails the batch with unique_violation, and the retry
 * finds it stored. */
static int columnar_insert(int t, const char *source, struct kh_buf *b)
{
    const char *table = kh_stats_tables[t].table;
    const char *const *key = kh_schema_scope(t)->key;
    int rc = kh_buf_printf(b, "WITH u AS MATERIALIZED (SELECT DISTINCT ON (");
    for (int i = 0; rc == 0 && key[i]; i++)
        rc = kh_buf_printf(b, "%s\"%s\"", i ? ", " : "", key[i]);
    if (rc == 0)
        rc = kh_buf_printf(b, ") * FROM %s), have AS (SELECT ", source);
    for (int i = 0; rc == 0 && key[i]; i++)
        rc = kh_buf_printf(b, "%sx.\"%s\"", i ? ", " : "", key[i]);
    if (rc == 0)
        rc = kh_buf_printf(b, " FROM \"%s\" x JOIN u ON ", table);
    if (rc == 0)
        rc = key_equal(t, "x", "u", b);
    if (rc == 0)
        rc = kh_buf_printf(b, ") INSERT INTO \"%s\" (", table);
    if (rc == 0)
        rc = column_list(t, b);
    if (rc == 0)
        rc = kh_buf_printf(b, ") SELECT u.* FROM u WHERE NOT EXISTS (SELECT 1 FROM have h WHERE ");
    if (rc == 0)
        rc = key_equal(t, "h", "u", b);
    return rc ? rc : kh_buf_printf(b, ")");
}

/* unnest($1::type[], ...) AS u("time", ...): a stats table's rows as parameters. */
static int unnest_source(int t, struct kh_buf *b)
{
    int rc = kh_buf_printf(b, "unnest(");
    for (int i = 0; rc == 0 && i < kh_pg_ncols(t); i++)
        rc = kh_buf_printf(b, "%s$%d::%s[]", i ? ", " : "", i + 1, col_type(t, i));
    if (rc == 0)
        rc = kh_buf_printf(b, ") AS u(");
    if (rc == 0)
        rc = column_list(t, b);
    return rc ? rc : kh_buf_printf(b, ")");
}

static int unnest_sql(const struct kh_pg *pg, int t, struct kh_buf *b)
{
    struct kh_buf src;
    kh_buf_init(&src, 1u << 20);
    int rc = unnest_source(t, &src);
    if (rc == 0)
        rc = kh_buf_append(&src, "", 1);
    if (rc == 0 && pg->columnar) {
        rc = columnar_insert(t, src.data, b);
    } else if (rc == 0) {
        rc = kh_buf_printf(b, "INSERT INTO \"%s\" (", kh_stats_tables[t].table);
        if (rc == 0)
            rc = column_list(t, b);
        if (rc == 0)
            rc = kh_buf_printf(b, ") SELECT u.* FROM %s", src.data);
        if (rc == 0)
            rc = insert_tail(pg, t, b);
    }
    kh_buf_cleanup(&src);
    return rc;
}

/* An envelope table's statement (see kh_schema_env_sql). sora_report's inserts leave out,
 * with compression, reports that are stored (see skip_stored) and return the kind of each
 * report they inserted: what the write stored, counted by kind. sora_webhook's (not a time
 * series) return the type of each webhook they inserted. */
static int env_sql(const struct kh_pg *pg, int t, struct kh_buf *b)
{
    const struct kh_env_table *et = &kh_env_tables[t];
    int rc = kh_schema_env_rows_sql(KH_DIALECT_POSTGRES, t, b);
    if (rc == 0 && !et->upsert && et->segment_by && pg->ts_mode == KH_PG_TS_FULL)
        rc = skip_stored(b, et->table, et->key);
    if (rc == 0)
        rc = kh_schema_env_conflict_sql(KH_DIALECT_POSTGRES, t, b);
    if (rc == 0 && t == kh_env_webhook)
        rc = kh_buf_printf(b, " RETURNING \"type\"");
    return rc == 0 && t == kh_env_report ? kh_buf_printf(b, " RETURNING \"kind\"") : rc;
}

int kh_pg_copy_sql(const struct kh_pg *pg, int t, bool staging, struct kh_buf *b)
{
    int rc = kh_buf_printf(b, "COPY \"%s%s\" (", staging ? "s_" : "", kh_stats_tables[t].table);
    if (rc == 0)
        rc = column_list(t, b);
    return rc ? rc
              : kh_buf_printf(b, ") FROM STDIN%s",
                              pg->copy_format == KH_PG_BINARY ? " (FORMAT binary)" : "");
}

int kh_pg_move_sql(const struct kh_pg *pg, int t, struct kh_buf *b)
{
    if (pg->columnar) {
        char src[160];
        snprintf(src, sizeof(src), "\"s_%s\"", kh_stats_tables[t].table);
        return columnar_insert(t, src, b);
    }
    int rc = kh_buf_printf(b, "INSERT INTO \"%s\" (", kh_stats_tables[t].table);
    if (rc == 0)
        rc = column_list(t, b);
    if (rc == 0)
        rc = kh_buf_printf(b, ") SELECT ");
    if (rc == 0)
        rc = column_list(t, b);
    if (rc == 0)
        rc = kh_buf_printf(b, " FROM \"s_%s\" u", kh_stats_tables[t].table);
    return rc ? rc : insert_tail(pg, t, b);
}

const char *kh_pg_statement(bool env, size_t t, char name[16])
{
    snprintf(name, 16, "%c%zu", env ? 'e' : 'i', t);
    return name;
}

/* --- preparing a connection --------------------------------------------------------------- */

static int prepare(struct kh_pg_slot *s, const char *name, const char *sql)
{
    PGresult *r = PQprepare(s->conn, name, sql, 0, NULL);
    int rc = PQresultStatus(r) == PGRES_COMMAND_OK ? 0 : KH_ERETRY;
    if (rc != 0)
        kh_pg_error(s->err, sizeof(s->err), "prepare", s->conn, r);
    PQclear(r);
    return rc;
}

/* Prepares what build made in b (KH_ERETRY with s->err set, as a failed prepare). */
static int prepare_built(struct kh_pg_slot *s, const char *name, int built, struct kh_buf *b)
{
    if (built != 0) {
        snprintf(s->err, sizeof(s->err), "out of memory building the statements");
        return KH_ERETRY;
    }
    return prepare(s, name, b->data);
}

/* The copy method's staging table of stats table t, for this connection's life. */
static int create_staging(struct kh_pg_slot *s, int t, struct kh_buf *b)
{
    const char *table = kh_stats_tables[t].table;
    kh_buf_reset(b);
    if (kh_buf_printf(b, "CREATE TEMP TABLE IF NOT EXISTS \"s_%s\" (LIKE \"%s\") ON COMMIT "
                         "DELETE ROWS",
                      table, table) != 0) {
        snprintf(s->err, sizeof(s->err), "out of memory building the statements");
        return KH_ERETRY;
    }
    return kh_pg_exec(s->conn, b->data, s->err, sizeof(s->err)) ? KH_ERETRY : 0;
}

int kh_pg_prepare_slot(struct kh_pg_slot *s)
{
    struct kh_buf b;
    kh_buf_init(&b, 1u << 20);
    char name[16];
    int rc = 0;
    for (size_t t = 0; rc == 0 && t < kh_stats_ntables; t++) {
        kh_buf_reset(&b);
        rc = prepare_built(s, kh_pg_statement(false, t, name), unnest_sql(s->pg, (int)t, &b),
                           &b);
        if (rc == 0 && s->pg->use_copy)
            rc = create_staging(s, (int)t, &b);
    }
    for (size_t t = 0; rc == 0 && t < kh_env_ntables; t++) {
        kh_buf_reset(&b);
        rc = prepare_built(s, kh_pg_statement(true, t, name), env_sql(s->pg, (int)t, &b), &b);
    }
    kh_buf_cleanup(&b);
    return rc;
}
