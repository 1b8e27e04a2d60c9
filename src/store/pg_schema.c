/*
 * pg_schema: the postgres backend's schema work. Owns the migrations (the schema module's
 * DDL, applied in one transaction under an advisory lock, so several kohaku processes can
 * start together on an empty database), the TimescaleDB decision (facts read from the
 * server, the plan from pg_timescale.c, CREATE EXTENSION at most once per process) and the
 * hypertable set-up; in a database with citus, pg_citus distributes the tables instead. It
 * never drops data and builds no SQL from anything but the schema.
 */
#include <stdio.h>
#include <string.h>

#include "core/errors.h"
#include "core/log.h"
#include "core/metrics.h"
#include "sora/schema.h"
#include "store/pg_internal.h"

/* "kohaku schema": any constant that every kohaku shares */
#define ADVISORY_LOCK "BEGIN; SELECT pg_advisory_xact_lock(7164746341)"

/* --- time series and hypertables ---------------------------------------------------------- */

/* Every stats table, then the envelope tables that are time series (a segment_by:
 * sora_report). TimescaleDB makes them hypertables; kohaku's retention deletes from them.
 * Compression keeps each table's unique key together: the key's first column segments, the
 * rest orders (TimescaleDB checks a key on compressed chunks through them). */
bool kh_pg_time_series(size_t i, struct kh_pg_ts_table *out)
{
    if (i < kh_stats_ntables) {
        const struct kh_scope_desc *sc = kh_schema_scope((int)i);
        out->table = kh_stats_tables[i].table;
        out->segmentby = sc->segment_by;
        out->orderby = sc->compress_orderby;
        return true;
    }
    for (size_t t = 0, n = kh_stats_ntables; t < kh_env_ntables; t++) {
        if (kh_env_tables[t].segment_by == NULL || n++ != i)
            continue;
        out->table = kh_env_tables[t].table;
        out->segmentby = kh_env_tables[t].segment_by;
        out->orderby = kh_env_tables[t].compress_orderby;
        return true;
    }
    return false;
}

static int timescale_tables(struct kh_pg *pg, PGconn *c, char *err, size_t errlen)
{
    struct kh_buf b;
    kh_buf_init(&b, 1u << 20);
    struct kh_pg_ts_table t = {.mode = pg->ts_mode,
                               .chunk_hours = pg->chunk_hours,
                               .compress_days = pg->compress_days,
                               .retention_days = pg->retention_days};
    int rc = 0;
    for (size_t i = 0; rc == 0 && kh_pg_time_series(i, &t); i++)
        rc = kh_pg_ts_table_sql(&b, &t);
    if (rc == 0)
        rc = kh_buf_append(&b, "", 1);
    if (rc != 0)
        snprintf(err, errlen, "out of memory building the TimescaleDB set-up");
    if (rc == 0)
        rc = kh_pg_exec(c, b.data, err, errlen);
    kh_buf_cleanup(&b);
    return rc;
}

/* --- the TimescaleDB decision ------------------------------------------------------------- */

/* What pg_timescale decides from. Only catalogs and settings any role may read: a role
 * without pg_read_all_settings sees no shared_preload_libraries, but the loader's own
 * setting timescaledb.disable_load exists exactly when the loader is preloaded. */
static const char ts_facts_sql[] =
    "SELECT (SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'), "
    "(SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'), "
    "(SELECT setting FROM pg_settings WHERE name = 'shared_preload_libraries'), "
    "EXISTS (SELECT 1 FROM pg_settings WHERE name = 'timescaledb.disable_load'), "
    "current_setting('timescaledb.license', true)";

static const char *field(const PGresult *r, int col)
{
    return PQgetisnull(r, 0, col) ? NULL : PQgetvalue(r, 0, col);
}

/* Reads the facts; *res holds the strings they point to (the caller clears it). */
static int timescale_facts(const struct kh_pg *pg, PGconn *c, PGresult **res,
                           struct kh_pg_ts_facts *f, char *err, size_t errlen)
{
    PGresult *r = PQexec(c, ts_facts_sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        kh_pg_error(err, errlen, "timescaledb check", c, r);
        PQclear(r);
        return KH_EIO;
    }
    *f = (struct kh_pg_ts_facts){.available = field(r, 0),
                                 .created = field(r, 1),
                                 .preload = field(r, 2),
                                 .loader = strcmp(PQgetvalue(r, 0, 3), "t") == 0,
                                 .license = field(r, 4),
                                 .create_failed = pg->ts_create_failed};
    *res = r;
    return 0;
}

/* CREATE EXTENSION, at most once per process whatever happens: a server that refused it
 * (ERROR) or ended the session over it (FATAL) will do so again. KH_EIO when the session
 * ended; the caller reconnects and goes on in plain PostgreSQL mode. */
static int timescale_create(struct kh_pg *pg, PGconn *c, char *err, size_t errlen)
{
    if (kh_pg_exec(c, "SAVEPOINT kh_ts; CREATE EXTENSION IF NOT EXISTS timescaledb", err,
                   errlen) == 0)
        return kh_pg_exec(c, "RELEASE SAVEPOINT kh_ts", err, errlen);
    pg->ts_create_failed = true;
    struct kh_logline l;
    if (kh_log_begin(&l, KH_LOG_WARN,
                     "timescaledb is available but cannot be used; using plain PostgreSQL")) {
        kh_log_str(&l, "error", err);
        kh_log_str(&l, "hint", "CREATE EXTENSION is not tried again until kohaku restarts");
        kh_log_end(&l);
    }
    if (PQstatus(c) != CONNECTION_OK)
        return KH_EIO;
    return kh_pg_exec(c, "ROLLBACK TO SAVEPOINT kh_ts", err, errlen);
}

/* The facts and the plan from them; when the plan is to create the extension, created and
 * read again. *r holds the facts' strings (the caller clears it). */
static int timescale_plan(struct kh_pg *pg, PGconn *c, PGresult **r, struct kh_pg_ts_facts *f,
                          struct kh_pg_ts_plan *p, char *err, size_t errlen)
{
    int rc = timescale_facts(pg, c, r, f, err, errlen);
    if (rc == 0)
        kh_pg_ts_plan(f, p);
    if (rc != 0 || !p->create)
        return rc;
    PQclear(*r);
    *r = NULL;
    rc = timescale_create(pg, c, err, errlen);
    if (rc == 0)
        rc = timescale_facts(pg, c, r, f, err, errlen);
    if (rc == 0)
        kh_pg_ts_plan(f, p);
    return rc;
}

/* Decides the mode (see pg_timescale.h), creating the extension when that is the plan.
 * Runs first in the migration: in a database where the extension exists but is not
 * preloaded, any DDL fires TimescaleDB's event triggers, whose library ends the session. */
static int timescale_prepare(struct kh_pg *pg, PGconn *c, char *err, size_t errlen)
{
    PGresult *r = NULL;
    struct kh_pg_ts_facts f;
    struct kh_pg_ts_plan p;
    int rc = timescale_plan(pg, c, &r, &f, &p, err, errlen);
    if (rc == 0 && p.refused) {
        snprintf(err, errlen, "%s", p.refused);
        rc = KH_EIO;
    }
    if (rc == 0 && !pg->ts_warned) { /* once per process: a retried migration plans again */
        pg->ts_warned = true;
        kh_pg_ts_warn(&f, &p, pg->retention_days);
    }
    if (rc == 0)
        pg->ts_mode = p.mode;
    PQclear(r);
    return rc;
}

/* --- migrations --------------------------------------------------------------------------- */

/* The version the database is at (0: empty), after making sure the table that records it
 * exists. KH_EIO when it is newer than this kohaku knows. */
static int schema_version(PGconn *c, int latest, long long *have, char *err, size_t errlen)
{
    int rc = kh_pg_exec(c,
                        "CREATE TABLE IF NOT EXISTS kohaku_schema_version (version integer "
                        "PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
                        err, errlen);
    if (rc == 0)
        rc = kh_pg_query_int(c, "SELECT coalesce(max(version), 0) FROM kohaku_schema_version",
                             have, err, errlen);
    if (rc == 0 && *have > latest) {
        snprintf(err, errlen, "database schema version %lld is newer than this kohaku knows (%d)",
                 *have, latest);
        rc = KH_EIO;
    }
    return rc;
}

/* Runs the statements built in sql, if any (rc: how building them went): in one text, or
 * with each one at a time (each ends in ";\n", as kh_schema's do). Citus sends the text of a
 * command on a distributed table (CREATE INDEX, ALTER TABLE ... SET) to the workers as it
 * came, and a worker refuses a text of several commands. */
static int run_built(PGconn *c, int rc, struct kh_buf *sql, bool each, char *err,
                     size_t errlen)
{
    if (rc == 0 && sql->len == 0)
        return 0;
    if (rc == 0)
        rc = kh_buf_append(sql, "", 1);
    if (rc != 0) {
        snprintf(err, errlen, "out of memory building the migration");
        return rc;
    }
    for (char *s = sql->data, *end; rc == 0 && *s; s = end) {
        end = each ? strstr(s, ";\n") : NULL;
        end = end ? end + 2 : s + strlen(s);
        char keep = *end;
        *end = '\0';
        rc = kh_pg_exec(c, s, err, errlen);
        *end = keep;
    }
    kh_buf_reset(sql);
    return rc;
}

/* With Citus, a version's new tables are distributed before its views are made on them, so
 * that the views are created on the workers too. Its tables' statements run one at a time
 * (run_built), over one connection to each worker: after a modification of many shards in
 * parallel (version 9's UPDATE), Citus refuses the transaction's later DDL and functions. */
static int citus_tables_first(struct kh_pg *pg, PGconn *c, int v, struct kh_buf *sql,
                              char *err, size_t errlen)
{
    int rc = kh_pg_exec(c, "SET LOCAL citus.multi_shard_modify_mode TO 'sequential'", err,
                        errlen);
    rc = rc ? rc : run_built(c, kh_schema_migration_tables_sql(KH_DIALECT_POSTGRES, v, sql),
                             sql, true, err, errlen);
    if (rc == 0)
        rc = kh_pg_citus_tables(pg, c, v - 1, err, errlen);
    return rc ? rc : kh_schema_migration_views_sql(KH_DIALECT_POSTGRES, v, sql);
}

/* One version's DDL and its record in kohaku_schema_version. */
static int apply_version(struct kh_pg *pg, PGconn *c, int v, struct kh_buf *sql, char *err,
                         size_t errlen)
{
    kh_buf_reset(sql);
    int rc = pg->citus ? citus_tables_first(pg, c, v, sql, err, errlen)
                       : kh_schema_migration_sql(KH_DIALECT_POSTGRES, v, sql);
    if (rc == KH_EIO)
        return rc;
    if (rc == 0)
        rc = kh_buf_printf(sql, "INSERT INTO kohaku_schema_version (version) VALUES (%d);", v);
    rc = run_built(c, rc, sql, false, err, errlen);
    struct kh_logline l;
    if (rc == 0 && kh_log_begin(&l, KH_LOG_INFO, "schema migrated")) {
        kh_log_str(&l, "storage", "postgres");
        kh_log_int(&l, "version", v);
        kh_log_end(&l);
    }
    return rc;
}

static int apply_versions(struct kh_pg *pg, PGconn *c, int from, int to, char *err,
                          size_t errlen)
{
    struct kh_buf sql;
    kh_buf_init(&sql, 16u << 20);
    int rc = 0;
    for (int v = from + 1; rc == 0 && v <= to; v++)
        rc = apply_version(pg, c, v, &sql, err, errlen);
    kh_buf_cleanup(&sql);
    return rc;
}

int kh_pg_migrate_conn(struct kh_pg *pg, PGconn *c, int target, char *err, size_t errlen)
{
    int latest = kh_schema_latest_version();
    int want = target > 0 && target < latest ? target : latest;
    long long have = 0;
    if (kh_pg_exec(c, ADVISORY_LOCK, err, errlen) != 0)
        return KH_EIO;
    /* Citus first: with it, TimescaleDB is neither created nor used */
    int rc = kh_pg_citus_check(pg, c, err, errlen);
    if (rc == 0 && !pg->citus)
        rc = timescale_prepare(pg, c, err, errlen);
    if (rc == 0)
        rc = schema_version(c, latest, &have, err, errlen);
    if (rc == 0)
        rc = apply_versions(pg, c, (int)have, want, err, errlen);
    if (rc == 0 && want == latest && pg->ts_mode != KH_PG_TS_OFF)
        rc = kh_pg_partitions_none(c, err, errlen);
    if (rc == 0 && want == latest && pg->ts_mode != KH_PG_TS_OFF)
        rc = timescale_tables(pg, c, err, errlen);
    if (rc == 0 && want == latest && pg->citus)
        rc = kh_pg_citus_tables(pg, c, latest, err, errlen);
    if (rc == 0 && want == latest && pg->citus)
        rc = kh_pg_citus_partition_setup(pg, c, err, errlen);
    if (rc == 0 && want == latest && !pg->citus && pg->ts_mode == KH_PG_TS_OFF)
        rc = kh_pg_partition_setup(pg, c, err, errlen);
    if (rc == 0)
        rc = kh_pg_exec(c, "COMMIT", err, errlen);
    if (rc != 0) {
        char ignored[256];
        kh_pg_exec(c, "ROLLBACK", ignored, sizeof(ignored));
    }
    return rc;
}

void kh_pg_log_schema_ready(const struct kh_pg *pg)
{
    static const char *const retention[] = {[KH_PG_TS_OFF] = "kohaku",
                                            [KH_PG_TS_FULL] = "timescaledb policy",
                                            [KH_PG_TS_APACHE] = "kohaku drop_chunks"};
    const char *how = pg->partitioned && pg->citus ? "citus drop_old_time_partitions"
                      : pg->partitioned            ? "kohaku drop partitions"
                                                   : retention[pg->ts_mode];
    const char *method = pg->use_direct_copy ? "direct_copy" : pg->use_copy ? "copy" : "unnest";
    const char *mode = pg->citus ? "citus" : kh_pg_ts_mode_name(pg->ts_mode);
    kh_metrics_storage_mode(mode);
    struct kh_logline l;
    if (kh_log_begin(&l, KH_LOG_INFO, "postgres schema ready")) {
        kh_log_str(&l, "mode", mode);
        if (pg->citus)
            kh_log_str(&l, "citus_version", pg->citus_version);
        bool columnar = pg->columnar && pg->columnar_days > 0;
        kh_log_bool(&l, "compression", pg->ts_mode == KH_PG_TS_FULL || columnar);
        if (columnar)
            kh_log_int(&l, "columnar_after_days", pg->columnar_days);
        kh_log_str(&l, "retention", how);
        kh_log_bool(&l, "partitioned", pg->partitioned);
        if (pg->partitioned)
            kh_log_int(&l, "partition_hours", pg->partition_hours > 0 ? pg->partition_hours : 24);
        kh_log_int(&l, "retention_days", pg->retention_days);
        kh_log_int(&l, "schema_version", kh_schema_latest_version());
        kh_log_str(&l, "write_method", method);
        if (pg->use_copy || pg->use_direct_copy)
            kh_log_str(&l, "copy_format", pg->copy_format == KH_PG_BINARY ? "binary" : "text");
        kh_log_end(&l);
    }
}
