/*
 * postgres: the PostgreSQL / TimescaleDB backend. This module is the only user of libpq.
 *
 * Connections: one per writer slot (postgres_pool_size), each used only by its writer thread,
 * plus one for the maintenance thread, which (re)connects with jittered backoff while the
 * database is away, applies the schema on first contact (under an advisory lock, so several
 * kohaku processes can start together), and runs retention on plain PostgreSQL. healthy()
 * is true once the schema is in place and the last contact worked.
 *
 * Writes (postgres_write_method):
 *   unnest: per table one prepared INSERT ... SELECT * FROM unnest($1::type[], ...)
 *           ON CONFLICT DO NOTHING, all statements of a batch pipelined and committed
 *           together at the pipeline's Sync: one round trip per batch.
 *   copy:   BEGIN; COPY into per-connection temporary staging tables; INSERT ... SELECT
 *           ON CONFLICT DO NOTHING; COMMIT (a few round trips per batch).
 *   direct_copy: BEGIN; the envelope statements; COPY straight into each stats table;
 *           COMMIT. COPY has no ON CONFLICT: a row already stored (a replay, a redelivery)
 *           fails the batch with unique_violation, which is rolled back and written again
 *           with the unnest statements. Fast when replays are rare, as they are.
 * Rows are only ever sent as parameters or COPY data: no SQL is built from payload text.
 * A data error (a value PostgreSQL refuses) makes the backend write the batch's reports one
 * by one, so only the offending reports are refused (KH_EREJECT).
 */
#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/buf.h"
#include "core/errors.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/timeutil.h"
#include "sora/schema.h"
#include "store/pg_encode.h"
#include "store/pg_timescale.h"
#include "store/store.h"

#define ADVISORY_LOCK_KEY 7164746341LL /* "kohaku schema": any constant shared by all */
#define RETENTION_BATCH 5000
#define MAX_COLS 128

struct slot {
    struct pg *pg;
    int index;
    PGconn *conn;
    struct kh_buf cols[MAX_COLS];
    const char *params[MAX_COLS];
    size_t *order; /* report indexes, for sorted upserts */
    size_t order_cap;
    char err[768];
};

struct pg {
    char *uri, *ca;
    int nslots;
    bool use_copy;
    bool use_direct_copy;
    enum kh_pg_format copy_format; /* KH_PG_BINARY or KH_PG_COPY (text) */
    int64_t chunk_hours, compress_days, retention_days, retention_interval;
    struct slot *slots;
    atomic_bool healthy;
    atomic_bool migrated;
    atomic_int lose_acks; /* fault injection for tests: KOHAKU_FAULT_LOSE_COMMIT_ACKS */
    atomic_uint_fast64_t reconnects;
    enum kh_pg_ts_mode ts_mode; /* decided by the migration (main, then maintenance thread) */
    bool ts_create_failed;      /* CREATE EXTENSION failed: never run again in this process */
    bool ts_warned;             /* TimescaleDB warnings are logged once per process */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool quit;
    bool wake;
    pthread_t maint;
    bool maint_started;
    PGconn *mconn;
    char merr[768];
};

/* --- connections ------------------------------------------------------------------------ */

static void copy_pq_error(char *dst, size_t len, const char *what, PGconn *c, PGresult *r)
{
    const char *msg = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (msg == NULL)
        msg = r ? PQresultErrorMessage(r) : PQerrorMessage(c);
    snprintf(dst, len, "%s: %s", what, msg && *msg ? msg : "unknown error");
    size_t n = strlen(dst);
    while (n > 0 && (dst[n - 1] == '\n' || dst[n - 1] == ' '))
        dst[--n] = '\0';
}

/* Server notices and warnings become log lines (libpq would print them on stderr, outside
 * the JSON log): warnings at warn level, the rest at debug. */
static void on_notice(void *arg, const PGresult *r)
{
    const char *sev = PQresultErrorField(r, PG_DIAG_SEVERITY_NONLOCALIZED);
    const char *msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
    bool warning = sev && strcmp(sev, "WARNING") == 0;
    kh_log(warning ? KH_LOG_WARN : KH_LOG_DEBUG, "postgres notice", msg ? msg : "");
}

static PGconn *connect_db(struct pg *pg, char *err, size_t errlen)
{
    const char *keys[6], *vals[6];
    int n = 0;
    keys[n] = "application_name", vals[n++] = "kohaku";
    keys[n] = "connect_timeout", vals[n++] = "5"; /* the URI's own value overrides it */
    keys[n] = "dbname", vals[n++] = pg->uri;
    if (pg->ca[0])
        keys[n] = "sslrootcert", vals[n++] = pg->ca;
    keys[n] = NULL, vals[n] = NULL;
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (c == NULL) {
        snprintf(err, errlen, "connect: out of memory");
        return NULL;
    }
    if (PQstatus(c) != CONNECTION_OK) {
        copy_pq_error(err, errlen, "connect", c, NULL);
        PQfinish(c);
        return NULL;
    }
    PQsetNoticeReceiver(c, on_notice, NULL);
    return c;
}

static int exec_ok(PGconn *c, const char *sql, char *err, size_t errlen)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    int rc = (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) ? 0 : KH_EIO;
    if (rc != 0)
        copy_pq_error(err, errlen, "query", c, r);
    PQclear(r);
    return rc;
}

static int query_int(PGconn *c, const char *sql, long long *out, char *err, size_t errlen)
{
    PGresult *r = PQexec(c, sql);
    int rc = 0;
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        copy_pq_error(err, errlen, "query", c, r);
        rc = KH_EIO;
    } else {
        *out = atoll(PQgetvalue(r, 0, 0));
    }
    PQclear(r);
    return rc;
}

/* --- schema ----------------------------------------------------------------------------- */

/* The time series, i from 0: every stats table, then the envelope tables that are one (with
 * a segment_by: sora_report). TimescaleDB makes them hypertables; kohaku's retention deletes
 * from them. Compression keeps each table's unique key together: the key's first column
 * segments, the rest orders (TimescaleDB checks a key on compressed chunks through them).
 * False past the last. */
static bool time_series(size_t i, struct kh_pg_ts_table *out)
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

static int timescale_tables(struct pg *pg, PGconn *c, char *err, size_t errlen)
{
    struct kh_buf b;
    kh_buf_init(&b, 1u << 20);
    struct kh_pg_ts_table t = {.mode = pg->ts_mode,
                               .chunk_hours = pg->chunk_hours,
                               .compress_days = pg->compress_days,
                               .retention_days = pg->retention_days};
    int rc = 0;
    for (size_t i = 0; rc == 0 && time_series(i, &t); i++)
        rc = kh_pg_ts_table_sql(&b, &t);
    if (rc == 0)
        rc = kh_buf_append(&b, "", 1);
    if (rc == 0)
        rc = exec_ok(c, b.data, err, errlen);
    kh_buf_cleanup(&b);
    return rc;
}

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
static int timescale_facts(const struct pg *pg, PGconn *c, PGresult **res,
                           struct kh_pg_ts_facts *f, char *err, size_t errlen)
{
    PGresult *r = PQexec(c, ts_facts_sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        copy_pq_error(err, errlen, "timescaledb check", c, r);
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
static int timescale_create(struct pg *pg, PGconn *c, char *err, size_t errlen)
{
    if (exec_ok(c, "SAVEPOINT kh_ts; CREATE EXTENSION IF NOT EXISTS timescaledb", err, errlen) ==
        0)
        return exec_ok(c, "RELEASE SAVEPOINT kh_ts", err, errlen);
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
    return exec_ok(c, "ROLLBACK TO SAVEPOINT kh_ts", err, errlen);
}

/* Decides the mode (see pg_timescale.h), creating the extension when that is the plan.
 * Runs first in the migration: in a database where the extension exists but is not
 * preloaded, any DDL fires TimescaleDB's event triggers, whose library ends the session. */
static int timescale_prepare(struct pg *pg, PGconn *c, char *err, size_t errlen)
{
    PGresult *r = NULL;
    struct kh_pg_ts_facts f;
    struct kh_pg_ts_plan p;
    int rc = timescale_facts(pg, c, &r, &f, err, errlen);
    if (rc == 0)
        kh_pg_ts_plan(&f, &p);
    if (rc == 0 && p.create) {
        PQclear(r);
        r = NULL;
        rc = timescale_create(pg, c, err, errlen);
        if (rc == 0)
            rc = timescale_facts(pg, c, &r, &f, err, errlen);
        if (rc == 0)
            kh_pg_ts_plan(&f, &p);
    }
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

/* Applies migrations up to target (0 = newest) in one transaction under the advisory lock. */
static int migrate_conn(struct pg *pg, PGconn *c, int target, char *err, size_t errlen)
{
    int latest = kh_schema_latest_version();
    int want = target > 0 && target < latest ? target : latest;
    long long have = 0;
    char lock[128];
    snprintf(lock, sizeof(lock), "BEGIN; SELECT pg_advisory_xact_lock(%lld)", ADVISORY_LOCK_KEY);
    if (exec_ok(c, lock, err, errlen) != 0)
        return KH_EIO;
    int rc = timescale_prepare(pg, c, err, errlen);
    if (rc == 0)
        rc = exec_ok(c,
                     "CREATE TABLE IF NOT EXISTS kohaku_schema_version (version integer PRIMARY "
                     "KEY, applied_at timestamptz NOT NULL DEFAULT now())",
                     err, errlen);
    if (rc == 0)
        rc = query_int(c, "SELECT coalesce(max(version), 0) FROM kohaku_schema_version", &have,
                       err, errlen);
    if (rc == 0 && have > latest) {
        snprintf(err, errlen, "database schema version %lld is newer than this kohaku knows (%d)",
                 have, latest);
        rc = KH_EIO;
    }
    struct kh_buf sql;
    kh_buf_init(&sql, 16u << 20);
    for (int v = (int)have + 1; rc == 0 && v <= want; v++) {
        kh_buf_reset(&sql);
        rc = kh_schema_migration_sql(KH_DIALECT_POSTGRES, v, &sql);
        if (rc == 0)
            rc = kh_buf_printf(&sql, "INSERT INTO kohaku_schema_version (version) VALUES (%d);", v);
        if (rc == 0)
            rc = kh_buf_append(&sql, "", 1);
        if (rc == 0)
            rc = exec_ok(c, sql.data, err, errlen);
        if (rc == 0) {
            struct kh_logline l;
            if (kh_log_begin(&l, KH_LOG_INFO, "schema migrated")) {
                kh_log_str(&l, "storage", "postgres");
                kh_log_int(&l, "version", v);
                kh_log_end(&l);
            }
        }
    }
    kh_buf_cleanup(&sql);
    if (rc == 0 && want == latest && pg->ts_mode != KH_PG_TS_OFF)
        rc = timescale_tables(pg, c, err, errlen);
    if (rc == 0)
        rc = exec_ok(c, "COMMIT", err, errlen);
    if (rc != 0) {
        char ignored[256];
        exec_ok(c, "ROLLBACK", ignored, sizeof(ignored));
    }
    return rc;
}

/* --- statements ------------------------------------------------------------------------- */

static int ncols(int t) { return kh_schema_ncommon(t) + (int)kh_stats_tables[t].nmembers + 1; }

static const char *col_type(int t, int i)
{
    int nc = kh_schema_ncommon(t);
    if (i < nc)
        return kh_schema_pg_cast(kh_schema_scope(t)->cols[i].type);
    if (i - nc < (int)kh_stats_tables[t].nmembers)
        return kh_schema_pg_cast(kh_stats_tables[t].members[i - nc].type);
    return "jsonb";
}

/* The column list "time", ..., "extra" of a stats table. */
static int column_list(int t, struct kh_buf *b)
{
    int nc = kh_schema_ncommon(t), rc = 0;
    for (int i = 0; rc == 0 && i < ncols(t); i++) {
        const char *name = i < nc ? kh_schema_scope(t)->cols[i].name
                           : i - nc < (int)kh_stats_tables[t].nmembers
                               ? kh_schema_column(t, i - nc)
                               : "extra";
        rc = kh_buf_printf(b, "%s\"%s\"", i ? ", " : "", name);
    }
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

/* The natural key of a stats table (NULL-terminated). */
static const char *const *stats_key(int t) { return kh_schema_scope(t)->key; }

/* The rest of an insert after its row source "u": the stored-row filter with compression,
 * then ON CONFLICT DO NOTHING. */
static int insert_tail(const struct pg *pg, struct kh_buf *b, const char *table,
                       const char *const *key)
{
    int rc = pg->ts_mode == KH_PG_TS_FULL ? skip_stored(b, table, key) : 0;
    return rc ? rc : kh_buf_printf(b, " ON CONFLICT DO NOTHING");
}

static int unnest_sql(const struct pg *pg, int t, struct kh_buf *b)
{
    int rc = kh_buf_printf(b, "INSERT INTO \"%s\" (", kh_stats_tables[t].table);
    if (rc == 0)
        rc = column_list(t, b);
    if (rc == 0)
        rc = kh_buf_printf(b, ") SELECT u.* FROM unnest(");
    for (int i = 0; rc == 0 && i < ncols(t); i++)
        rc = kh_buf_printf(b, "%s$%d::%s[]", i ? ", " : "", i + 1, col_type(t, i));
    if (rc == 0)
        rc = kh_buf_printf(b, ") AS u(");
    if (rc == 0)
        rc = column_list(t, b);
    if (rc == 0)
        rc = kh_buf_printf(b, ")");
    if (rc == 0)
        rc = insert_tail(pg, b, kh_stats_tables[t].table, stats_key(t));
    return rc == 0 ? kh_buf_append(b, "", 1) : rc;
}

/* An envelope table's statement (see kh_schema_env_sql). sora_report's inserts leave out,
 * with compression, reports that are stored (see skip_stored) and return the kind of each
 * report they inserted: what the write stored, counted by kind. */
static int env_sql(const struct pg *pg, int t, struct kh_buf *b)
{
    const struct kh_env_table *et = &kh_env_tables[t];
    int rc = kh_schema_env_rows_sql(KH_DIALECT_POSTGRES, t, b);
    if (rc == 0 && !et->upsert && pg->ts_mode == KH_PG_TS_FULL)
        rc = skip_stored(b, et->table, et->key);
    if (rc == 0)
        rc = kh_schema_env_conflict_sql(KH_DIALECT_POSTGRES, t, b);
    if (rc == 0 && t == kh_env_report)
        rc = kh_buf_printf(b, " RETURNING \"kind\"");
    return rc == 0 ? kh_buf_append(b, "", 1) : rc;
}

static int prepare(struct slot *s, const char *name, const char *sql)
{
    PGresult *r = PQprepare(s->conn, name, sql, 0, NULL);
    int rc = PQresultStatus(r) == PGRES_COMMAND_OK ? 0 : KH_ERETRY;
    if (rc != 0)
        copy_pq_error(s->err, sizeof(s->err), "prepare", s->conn, r);
    PQclear(r);
    return rc;
}

static int prepare_slot(struct slot *s)
{
    struct kh_buf b;
    kh_buf_init(&b, 1u << 20);
    char name[24];
    int rc = 0;
    for (size_t t = 0; rc == 0 && t < kh_stats_ntables; t++) {
        kh_buf_reset(&b);
        snprintf(name, sizeof(name), "i%zu", t);
        rc = unnest_sql(s->pg, (int)t, &b);
        if (rc == 0)
            rc = prepare(s, name, b.data);
        if (rc == 0 && s->pg->use_copy) {
            kh_buf_reset(&b);
            rc = kh_buf_printf(&b,
                         "CREATE TEMP TABLE IF NOT EXISTS \"s_%s\" (LIKE \"%s\") ON COMMIT "
                         "DELETE ROWS",
                         kh_stats_tables[t].table, kh_stats_tables[t].table);
            if (rc == 0 && kh_buf_append(&b, "", 1) == 0)
                rc = exec_ok(s->conn, b.data, s->err, sizeof(s->err)) ? KH_ERETRY : 0;
        }
    }
    for (size_t t = 0; rc == 0 && t < kh_env_ntables; t++) {
        kh_buf_reset(&b);
        snprintf(name, sizeof(name), "e%zu", t);
        rc = env_sql(s->pg, (int)t, &b) ? KH_ENOMEM : prepare(s, name, b.data);
    }
    kh_buf_cleanup(&b);
    return rc;
}

/* --- health and the maintenance thread -------------------------------------------------- */

static void wake_maint(struct pg *pg)
{
    pthread_mutex_lock(&pg->mu);
    pg->wake = true;
    pthread_cond_signal(&pg->cv);
    pthread_mutex_unlock(&pg->mu);
}

static void mark_down(struct pg *pg, const char *why)
{
    if (atomic_exchange(&pg->healthy, false)) {
        kh_log(KH_LOG_ERROR, "postgres unavailable", why);
        wake_maint(pg);
    }
}

static void drop_conn(PGconn **c)
{
    if (*c)
        PQfinish(*c);
    *c = NULL;
}

/* The start-up line that says which mode is in use; the metrics' mode gauge follows it. */
static void log_schema_ready(const struct pg *pg)
{
    static const char *const retention[] = {
        [KH_PG_TS_OFF] = "kohaku", [KH_PG_TS_FULL] = "timescaledb policy",
        [KH_PG_TS_APACHE] = "kohaku drop_chunks"};
    kh_metrics_storage_mode(kh_pg_ts_mode_name(pg->ts_mode));
    struct kh_logline l;
    if (kh_log_begin(&l, KH_LOG_INFO, "postgres schema ready")) {
        kh_log_str(&l, "mode", kh_pg_ts_mode_name(pg->ts_mode));
        kh_log_bool(&l, "compression", pg->ts_mode == KH_PG_TS_FULL);
        kh_log_str(&l, "retention", retention[pg->ts_mode]);
        kh_log_int(&l, "retention_days", pg->retention_days);
        kh_log_int(&l, "schema_version", kh_schema_latest_version());
        kh_log_str(&l, "write_method", pg->use_direct_copy ? "direct_copy"
                                       : pg->use_copy           ? "copy"
                                                                : "unnest");
        if (pg->use_copy || pg->use_direct_copy)
            kh_log_str(&l, "copy_format", pg->copy_format == KH_PG_BINARY ? "binary" : "text");
        kh_log_end(&l);
    }
}

/* One contact attempt: connect (if needed), migrate (once), check the connection. */
static bool maint_contact(struct pg *pg)
{
    if (pg->mconn && PQstatus(pg->mconn) != CONNECTION_OK)
        drop_conn(&pg->mconn);
    if (pg->mconn == NULL && (pg->mconn = connect_db(pg, pg->merr, sizeof(pg->merr))) == NULL)
        return false;
    if (!atomic_load(&pg->migrated)) {
        if (migrate_conn(pg, pg->mconn, 0, pg->merr, sizeof(pg->merr)) != 0) {
            drop_conn(&pg->mconn);
            return false;
        }
        atomic_store(&pg->migrated, true);
        log_schema_ready(pg);
    }
    if (exec_ok(pg->mconn, "SELECT 1", pg->merr, sizeof(pg->merr)) != 0) {
        drop_conn(&pg->mconn);
        return false;
    }
    return true;
}

/* One retention statement on one table: a batch of old rows deleted (plain PostgreSQL) or
 * its old chunks dropped (timescaledb-apache, where TimescaleDB's policies are not there).
 * The count, or -1 with pg->merr set. */
static long long retention_step(struct pg *pg, const char *table, const char *interval)
{
    char sql[512];
    if (pg->ts_mode == KH_PG_TS_APACHE)
        snprintf(sql, sizeof(sql),
                 "SELECT count(*) FROM drop_chunks('\"%s\"', older_than => $1::interval)", table);
    else
        snprintf(sql, sizeof(sql),
                 "DELETE FROM \"%s\" WHERE ctid = ANY(ARRAY(SELECT ctid FROM \"%s\" WHERE "
                 "\"time\" < now() - $1::interval LIMIT %d))",
                 table, table, RETENTION_BATCH);
    const char *params[1] = {interval};
    PGresult *r = PQexecParams(pg->mconn, sql, 1, NULL, params, NULL, NULL, 0);
    long long n = -1;
    if (PQresultStatus(r) == PGRES_COMMAND_OK)
        n = atoll(PQcmdTuples(r));
    else if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
        n = atoll(PQgetvalue(r, 0, 0));
    else
        copy_pq_error(pg->merr, sizeof(pg->merr), "retention", pg->mconn, r);
    PQclear(r);
    return n;
}

static bool quitting(struct pg *pg)
{
    pthread_mutex_lock(&pg->mu);
    bool quit = pg->quit;
    pthread_mutex_unlock(&pg->mu);
    return quit;
}

static void retention_pass(struct pg *pg)
{
    char interval[32];
    snprintf(interval, sizeof(interval), "%lld days", (long long)pg->retention_days);
    bool chunks = pg->ts_mode == KH_PG_TS_APACHE;
    long long total = 0;
    struct kh_pg_ts_table ts;
    for (size_t t = 0; time_series(t, &ts); t++) {
        for (;;) {
            long long n = retention_step(pg, ts.table, interval);
            if (n < 0) {
                kh_log(KH_LOG_WARN, "retention pass failed", pg->merr);
                return;
            }
            total += n;
            if (chunks || n < RETENTION_BATCH)
                break;
            if (quitting(pg))
                return;
        }
    }
    struct kh_logline l;
    if (kh_log_begin(&l, total ? KH_LOG_INFO : KH_LOG_DEBUG, "retention pass")) {
        kh_log_int(&l, chunks ? "dropped_chunks" : "deleted_rows", total);
        kh_log_int(&l, "retention_days", pg->retention_days);
        kh_log_end(&l);
    }
}

static void *maint_main(void *arg)
{
    struct pg *pg = arg;
    uint64_t backoff_ms = 200;
    uint64_t next_retention = kh_mono_usec();
    pthread_mutex_lock(&pg->mu);
    while (!pg->quit) {
        pg->wake = false;
        pthread_mutex_unlock(&pg->mu);
        uint64_t wait_ms;
        if (maint_contact(pg)) {
            if (!atomic_exchange(&pg->healthy, true)) {
                kh_log(KH_LOG_INFO, "postgres available", NULL);
                atomic_fetch_add(&pg->reconnects, 1);
            }
            backoff_ms = 200;
            wait_ms = 2000;
            if (pg->ts_mode != KH_PG_TS_FULL && pg->retention_days > 0 &&
                kh_mono_usec() >= next_retention) {
                retention_pass(pg);
                next_retention = kh_mono_usec() + (uint64_t)pg->retention_interval * 1000000;
            }
        } else {
            if (atomic_exchange(&pg->healthy, false) || backoff_ms == 200)
                kh_log(KH_LOG_ERROR, "postgres unavailable, retrying", pg->merr);
            /* jittered exponential backoff: 75%..125% of the step, at most 30 s */
            wait_ms = backoff_ms * 3 / 4 + (uint64_t)rand() % (backoff_ms / 2 + 1);
            if (backoff_ms < 30000)
                backoff_ms *= 2;
        }
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += (time_t)(wait_ms / 1000);
        until.tv_nsec += (long)(wait_ms % 1000) * 1000000;
        if (until.tv_nsec >= 1000000000) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000;
        }
        pthread_mutex_lock(&pg->mu);
        while (!pg->quit && !pg->wake &&
               pthread_cond_timedwait(&pg->cv, &pg->mu, &until) == 0)
            ;
    }
    pthread_mutex_unlock(&pg->mu);
    drop_conn(&pg->mconn);
    return NULL;
}

/* --- open / migrate / close ------------------------------------------------------------- */

static int pg_open(struct kh_store *s, const struct kh_config *cfg, const char **err)
{
    struct pg *pg = calloc(1, sizeof(*pg));
    if (pg == NULL)
        goto fail_alloc;
    s->impl = pg;
    pg->uri = strdup(cfg->postgres_uri);
    pg->ca = strdup(cfg->postgres_ca_cert_file);
    pg->nslots = (int)cfg->postgres_pool_size;
    pg->use_copy = strcmp(cfg->postgres_write_method, "copy") == 0;
    pg->use_direct_copy = strcmp(cfg->postgres_write_method, "direct_copy") == 0;
    pg->copy_format = strcmp(cfg->postgres_copy_format, "text") == 0 ? KH_PG_COPY : KH_PG_BINARY;
    pg->chunk_hours = cfg->timescaledb_chunk_interval;
    pg->compress_days = cfg->timescaledb_compress_after;
    pg->retention_days = cfg->retention_days;
    pg->retention_interval = cfg->retention_interval;
    const char *fault = getenv("KOHAKU_FAULT_LOSE_COMMIT_ACKS");
    atomic_store(&pg->lose_acks, fault ? atoi(fault) : 0);
    pg->slots = calloc((size_t)pg->nslots, sizeof(*pg->slots));
    if (pg->uri == NULL || pg->ca == NULL || pg->slots == NULL)
        goto fail_alloc;
    for (int i = 0; i < pg->nslots; i++) {
        pg->slots[i].pg = pg;
        pg->slots[i].index = i;
        for (int c = 0; c < MAX_COLS; c++)
            kh_buf_init(&pg->slots[i].cols[c], 1u << 30);
    }
    pthread_mutex_init(&pg->mu, NULL);
    pthread_cond_init(&pg->cv, NULL);
    return 0;
fail_alloc:
    *err = "out of memory";
    return KH_ENOMEM;
}

static int pg_migrate(struct kh_store *s, int target, const char **err)
{
    struct pg *pg = s->impl;
    PGconn *c = connect_db(pg, pg->merr, sizeof(pg->merr));
    int rc = c ? migrate_conn(pg, c, target, pg->merr, sizeof(pg->merr)) : KH_ERETRY;
    if (c && rc != 0 && PQstatus(c) != CONNECTION_OK)
        rc = KH_ERETRY;
    drop_conn(&c);
    if (rc == 0 && (target == 0 || target >= kh_schema_latest_version())) {
        atomic_store(&pg->migrated, true);
        atomic_store(&pg->healthy, true);
        log_schema_ready(pg);
    }
    *err = pg->merr;
    return rc;
}

static int pg_start(struct pg *pg)
{
    if (pg->maint_started)
        return 0;
    if (pthread_create(&pg->maint, NULL, maint_main, pg) != 0)
        return KH_ENOMEM;
    pg->maint_started = true;
    return 0;
}

static void pg_close(struct kh_store *s)
{
    struct pg *pg = s->impl;
    if (pg == NULL)
        return;
    if (pg->maint_started) {
        pthread_mutex_lock(&pg->mu);
        pg->quit = true;
        pthread_cond_signal(&pg->cv);
        pthread_mutex_unlock(&pg->mu);
        pthread_join(pg->maint, NULL);
        pthread_cond_destroy(&pg->cv);
        pthread_mutex_destroy(&pg->mu);
    }
    for (int i = 0; pg->slots && i < pg->nslots; i++) {
        drop_conn(&pg->slots[i].conn);
        for (int c = 0; c < MAX_COLS; c++)
            kh_buf_cleanup(&pg->slots[i].cols[c]);
        free(pg->slots[i].order);
    }
    free(pg->slots);
    free(pg->uri);
    free(pg->ca);
    free(pg);
    s->impl = NULL;
}

static bool pg_healthy(struct kh_store *s)
{
    struct pg *pg = s->impl;
    return atomic_load(&pg->healthy);
}

/* --- writing ---------------------------------------------------------------------------- */

struct subset {
    struct kh_report **reports;
    size_t n;
};

/* Values PostgreSQL refuses (class 22 data exception, 23 integrity, 54 program limit):
 * retrying cannot help; the report that carries them is refused. */
static bool is_data_error(const char *state)
{
    return state && (strncmp(state, "22", 2) == 0 || strncmp(state, "23", 2) == 0 ||
                     strncmp(state, "54", 2) == 0);
}

static int ensure_conn(struct slot *s)
{
    struct pg *pg = s->pg;
    if (s->conn && PQstatus(s->conn) == CONNECTION_OK)
        return 0;
    drop_conn(&s->conn);
    if (!atomic_load(&pg->healthy)) {
        snprintf(s->err, sizeof(s->err), "postgres unavailable");
        return KH_ERETRY;
    }
    s->conn = connect_db(pg, s->err, sizeof(s->err));
    if (s->conn == NULL || prepare_slot(s) != 0) {
        drop_conn(&s->conn);
        mark_down(pg, s->err);
        return KH_ERETRY;
    }
    return 0;
}

static void cols_begin(struct slot *s, int n)
{
    for (int i = 0; i < n; i++) {
        kh_buf_reset(&s->cols[i]);
        kh_buf_append(&s->cols[i], "{", 1);
    }
}

static int cols_end(struct slot *s, int n)
{
    for (int i = 0; i < n; i++) {
        if (kh_buf_append(&s->cols[i], "}", 2) != 0) /* with the NUL */
            return KH_ENOMEM;
        s->params[i] = s->cols[i].data;
    }
    return 0;
}

/* Appends one row's fields: one buffer per column (ARRAY) or one row in b[0] (COPY, text or
 * binary). */
static int put_row(struct slot *s, enum kh_pg_format f, bool first, const struct kh_report *r,
                   const struct kh_row *row)
{
    bool copy = f != KH_PG_ARRAY;
    int c = 0, rc = 0;
#define COL() (&s->cols[copy ? 0 : c++])
#define FIRST(k) (copy ? (k) == 0 : first)
    if (f == KH_PG_BINARY)
        rc = kh_pg_binary_row(&s->cols[0], ncols(row->table));
    const struct kh_scope_desc *sc = kh_schema_scope(row->table);
    for (size_t k = 0; k < sc->ncols; k++) {
        if (sc->cols[k].src == KH_SRC_TIME) {
            rc |= kh_pg_put_time(COL(), f, FIRST(k), r->time_usec, r->time_text);
            continue;
        }
        struct kh_value v = kh_report_common_value(r, row, (int)sc->cols[k].src);
        rc |= kh_pg_put_value(COL(), f, FIRST(k), &v);
    }
    size_t nm = kh_stats_tables[row->table].nmembers;
    for (size_t m = 0; m < nm; m++)
        rc |= kh_pg_put_value(COL(), f, FIRST(7), &row->vals[m]);
    rc |= kh_pg_put_jsonb(COL(), f, FIRST(7), row->extra.p, row->extra.len);
    if (f == KH_PG_COPY)
        rc |= kh_buf_append(&s->cols[0], "\n", 1);
#undef COL
#undef FIRST
    return rc ? KH_ENOMEM : 0;
}

static size_t build_table(struct slot *s, enum kh_pg_format f, int t, const struct subset *sub,
                          int *rc)
{
    size_t count = 0;
    if (f == KH_PG_ARRAY)
        cols_begin(s, ncols(t));
    else
        kh_buf_reset(&s->cols[0]);
    if (f == KH_PG_BINARY)
        *rc = kh_pg_binary_header(&s->cols[0]);
    for (size_t i = 0; *rc == 0 && i < sub->n; i++)
        if (sub->reports[i]->table_rows[t] > 0)
            for (const struct kh_row *row = sub->reports[i]->rows; *rc == 0 && row;
                 row = row->next)
                if (row->table == t)
                    *rc = put_row(s, f, count++ == 0, sub->reports[i], row);
    if (*rc == 0 && f == KH_PG_ARRAY)
        *rc = cols_end(s, ncols(t));
    if (*rc == 0 && f == KH_PG_BINARY)
        *rc = kh_pg_binary_trailer(&s->cols[0]);
    return count;
}

/* Upserted rows are sorted by their key's value (text), then by time. */
struct env_order {
    struct kh_report **reports;
    int key_src; /* enum kh_common_src of the key's column */
};

static int cmp_text(const struct kh_value *a, const struct kh_value *b)
{
    size_t n = a->len < b->len ? a->len : b->len;
    int c = memcmp(a->u.s, b->u.s, n);
    return c ? c : (a->len > b->len) - (a->len < b->len);
}

static struct kh_value key_of(const struct env_order *eo, size_t i)
{
    return kh_report_common_value(eo->reports[i], NULL, eo->key_src);
}

static int cmp_report(const void *a, const void *b, void *arg)
{
    const struct env_order *eo = arg;
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    struct kh_value kx = key_of(eo, x), ky = key_of(eo, y);
    int c = cmp_text(&kx, &ky);
    return c ? c : strcmp(eo->reports[x]->time_text, eo->reports[y]->time_text);
}

static bool same_key(const struct env_order *eo, size_t x, size_t y)
{
    struct kh_value kx = key_of(eo, x), ky = key_of(eo, y);
    return cmp_text(&kx, &ky) == 0;
}

/* The column of the table's key (upserts have a one-column key). */
static int key_src(const struct kh_env_table *et)
{
    for (size_t c = 0; c < et->ncols; c++)
        if (strcmp(et->cols[c].name, et->key[0]) == 0)
            return (int)et->cols[c].src;
    return KH_SRC_CONNECTION_ID;
}

/* s->order gets the indexes of the subset's reports that have a row in the table: for an
 * upsert sorted by key, so that concurrent writers lock rows in the same order. */
static int select_reports(struct slot *s, const struct subset *sub, const struct kh_env_table *et,
                          size_t *n)
{
    if (s->order_cap < sub->n) {
        size_t *o = realloc(s->order, sub->n * sizeof(*o));
        if (o == NULL)
            return KH_ENOMEM;
        s->order = o;
        s->order_cap = sub->n;
    }
    *n = 0;
    for (size_t i = 0; i < sub->n; i++)
        if (et->kind < 0 || (int)sub->reports[i]->kind == et->kind)
            s->order[(*n)++] = i;
    struct env_order eo = {sub->reports, key_src(et)};
    if (et->upsert)
        qsort_r(s->order, *n, sizeof(size_t), cmp_report, &eo);
    return 0;
}

/* One row of an envelope table from reports first..last of one key (sorted by time): merged
 * as the upsert merges, the earliest report's value for a min column, the latest's for the
 * rest. */
static int put_env_row(struct slot *s, const struct kh_env_table *et, bool f,
                       const struct kh_report *first, const struct kh_report *last)
{
    int rc = 0;
    for (size_t c = 0; c < et->ncols; c++) {
        const struct kh_report *r = et->cols[c].merge == KH_MERGE_MIN ? first : last;
        struct kh_value v = kh_report_common_value(r, NULL, (int)et->cols[c].src);
        rc |= kh_pg_put_value(&s->cols[c], KH_PG_ARRAY, f, &v);
    }
    return rc;
}

/* The rows of envelope table t for the subset, as arrays: for an upsert one per key (a batch
 * may hold several reports of one connection), otherwise one per report. *count: the rows. */
static int build_envelopes(struct slot *s, const struct subset *sub, int t, size_t *count)
{
    const struct kh_env_table *et = &kh_env_tables[t];
    size_t n;
    int rc = select_reports(s, sub, et, &n);
    if (rc != 0)
        return rc;
    struct env_order eo = {sub->reports, key_src(et)};
    cols_begin(s, (int)et->ncols);
    *count = 0;
    for (size_t i = 0; rc == 0 && i < n;) {
        size_t j = i;
        while (et->upsert && j + 1 < n && same_key(&eo, s->order[i], s->order[j + 1]))
            j++;
        rc = put_env_row(s, et, (*count)++ == 0, sub->reports[s->order[i]],
                         sub->reports[s->order[j]]);
        i = j + 1;
    }
    return rc ? KH_ENOMEM : cols_end(s, (int)et->ncols);
}

/* What a pipelined statement's result counts towards. */
enum { LBL_NONE = -1, LBL_REPORTS = -2 }; /* >= 0: rows of that stats table */
#define MAX_PIPELINE 64

/* Result of an exchange: the first error's SQLSTATE and message, and what it stored: rows
 * per table from each statement's command tag, reports from sora_report's RETURNING. */
struct outcome {
    bool failed;
    char state[6];
    int labels[MAX_PIPELINE]; /* of the pipelined statements, in the order sent */
    size_t nlabels, next_label;
    uint64_t rows[KH_REPORT_MAX_TABLES];
    uint64_t reports[2];
};

static void tally(struct outcome *o, int label, PGresult *r)
{
    if (label >= 0 && label < KH_REPORT_MAX_TABLES) {
        o->rows[label] += strtoull(PQcmdTuples(r), NULL, 10);
    } else if (label == LBL_REPORTS) {
        /* RETURNING kind: one row per report inserted */
        for (int i = 0, n = PQntuples(r); i < n; i++)
            o->reports[PQgetvalue(r, i, 0)[0] == 'n']++;
    }
}

static void note_result(struct slot *s, struct outcome *o, PGresult *r, const char *what)
{
    ExecStatusType st = PQresultStatus(r);
    if (o->failed || st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK ||
        st == PGRES_PIPELINE_SYNC || st == PGRES_PIPELINE_ABORTED)
        return;
    o->failed = true;
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    snprintf(o->state, sizeof(o->state), "%s", state ? state : "");
    copy_pq_error(s->err, sizeof(s->err), what, s->conn, r);
}

/* Sends what build_* left in the column buffers as one pipelined statement whose result
 * counts towards `label`. */
static int send_prepared(struct slot *s, struct outcome *o, const char *name, int nparams,
                         int label)
{
    if (o->nlabels == MAX_PIPELINE) {
        o->failed = true;
        snprintf(s->err, sizeof(s->err), "too many statements in one pipeline");
        return KH_EIO;
    }
    if (PQsendQueryPrepared(s->conn, name, nparams, s->params, NULL, NULL, 0) == 1) {
        o->labels[o->nlabels++] = label;
        return 0;
    }
    o->failed = true;
    copy_pq_error(s->err, sizeof(s->err), "send", s->conn, NULL);
    return KH_EIO;
}

/* The envelope tables' statements, in kh_env_tables order (every writer the same). */
static int send_envelopes(struct slot *s, const struct subset *sub, struct outcome *o)
{
    char name[24];
    int rc = 0;
    for (size_t t = 0; rc == 0 && t < kh_env_ntables; t++) {
        size_t n;
        rc = build_envelopes(s, sub, (int)t, &n);
        snprintf(name, sizeof(name), "e%zu", t);
        if (rc == 0 && n > 0)
            rc = send_prepared(s, o, name, (int)kh_env_tables[t].ncols,
                               (int)t == kh_env_report ? LBL_REPORTS : LBL_NONE);
    }
    return rc;
}

/* Reads results up to the pipeline's Sync. */
static void drain_pipeline(struct slot *s, struct outcome *o)
{
    int idle = 0;
    for (;;) {
        PGresult *r = PQgetResult(s->conn);
        if (r == NULL) {
            /* NULL ends one statement's results; a broken connection yields only NULLs */
            if (PQstatus(s->conn) != CONNECTION_OK || ++idle > 1000) {
                if (!o->failed) {
                    o->failed = true;
                    o->state[0] = '\0';
                    copy_pq_error(s->err, sizeof(s->err), "pipeline", s->conn, NULL);
                }
                return;
            }
            continue;
        }
        idle = 0;
        bool sync = PQresultStatus(r) == PGRES_PIPELINE_SYNC;
        note_result(s, o, r, "insert");
        ExecStatusType st = PQresultStatus(r);
        if ((st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) && o->next_label < o->nlabels)
            tally(o, o->labels[o->next_label++], r);
        PQclear(r);
        if (sync)
            return;
    }
}

/* unnest method: every statement of the subset pipelined, committed at Sync. */
static void write_unnest(struct slot *s, const struct subset *sub, struct outcome *o)
{
    if (PQenterPipelineMode(s->conn) != 1) {
        o->failed = true;
        copy_pq_error(s->err, sizeof(s->err), "pipeline", s->conn, NULL);
        return;
    }
    int rc = send_envelopes(s, sub, o);
    char name[24];
    for (size_t t = 0; rc == 0 && t < kh_stats_ntables; t++) {
        size_t rows = build_table(s, KH_PG_ARRAY, (int)t, sub, &rc);
        snprintf(name, sizeof(name), "i%zu", t);
        if (rc == 0 && rows > 0)
            rc = send_prepared(s, o, name, ncols((int)t), (int)t);
    }
    if (rc == KH_ENOMEM && !o->failed) {
        o->failed = true;
        snprintf(s->err, sizeof(s->err), "out of memory building the batch");
    }
    if (PQpipelineSync(s->conn) == 1)
        drain_pipeline(s, o);
    else if (!o->failed) {
        o->failed = true;
        copy_pq_error(s->err, sizeof(s->err), "sync", s->conn, NULL);
    }
    if (PQstatus(s->conn) == CONNECTION_OK)
        PQexitPipelineMode(s->conn);
}

/* One statement outside a pipeline; its result counts towards `label`. */
static void exec_counted(struct slot *s, struct outcome *o, const char *sql, const char *what,
                         int label)
{
    if (o->failed)
        return;
    PGresult *r = PQexec(s->conn, sql);
    note_result(s, o, r, what);
    if (PQresultStatus(r) == PGRES_COMMAND_OK)
        tally(o, label, r);
    PQclear(r);
}

static void exec_step(struct slot *s, struct outcome *o, const char *sql, const char *what)
{
    exec_counted(s, o, sql, what, LBL_NONE);
}

/* COPY of the rows build_table left in cols[0] into table t, or its staging table. */
static void copy_table(struct slot *s, struct outcome *o, int t, bool staging,
                       struct kh_buf *sql)
{
    kh_buf_reset(sql);
    int rc = kh_buf_printf(sql, "COPY \"%s%s\" (", staging ? "s_" : "", kh_stats_tables[t].table);
    if (rc == 0)
        rc = column_list(t, sql);
    if (rc == 0)
        rc = kh_buf_printf(sql, ") FROM STDIN%s",
                     s->pg->copy_format == KH_PG_BINARY ? " (FORMAT binary)" : "");
    if (rc == 0)
        rc = kh_buf_append(sql, "", 1);
    PGresult *r = PQexec(s->conn, sql->data);
    if (PQresultStatus(r) != PGRES_COPY_IN) {
        note_result(s, o, r, "copy");
        PQclear(r);
        return;
    }
    PQclear(r);
    struct kh_buf *data = &s->cols[0];
    if (PQputCopyData(s->conn, data->data, (int)data->len) != 1 ||
        PQputCopyEnd(s->conn, NULL) != 1) {
        o->failed = true;
        copy_pq_error(s->err, sizeof(s->err), "copy", s->conn, NULL);
    }
    while ((r = PQgetResult(s->conn)) != NULL) {
        note_result(s, o, r, "copy");
        if (!staging && PQresultStatus(r) == PGRES_COMMAND_OK)
            tally(o, t, r);
        PQclear(r);
    }
}

/* copy method: COPY each table's rows into its staging table, then move them over. */
static void write_copy(struct slot *s, const struct subset *sub, struct outcome *o)
{
    struct kh_buf sql, move;
    kh_buf_init(&sql, 1u << 20);
    kh_buf_init(&move, 1u << 20);
    exec_step(s, o, "BEGIN", "begin");
    for (size_t t = 0; !o->failed && t < kh_stats_ntables; t++) {
        int rc = 0;
        if (build_table(s, s->pg->copy_format, (int)t, sub, &rc) == 0 || rc != 0)
            continue;
        copy_table(s, o, (int)t, true, &sql);
        const char *name = kh_stats_tables[t].table;
        kh_buf_reset(&move);
        rc = kh_buf_printf(&move, "INSERT INTO \"%s\" (", name);
        rc |= column_list((int)t, &move);
        rc |= kh_buf_printf(&move, ") SELECT ");
        rc |= column_list((int)t, &move);
        rc |= kh_buf_printf(&move, " FROM \"s_%s\" u", name);
        rc |= insert_tail(s->pg, &move, name, stats_key((int)t));
        if (rc == 0 && kh_buf_append(&move, "", 1) == 0)
            exec_counted(s, o, move.data, "insert", (int)t); /* counts what it inserted */
    }
    if (!o->failed && PQenterPipelineMode(s->conn) == 1) {
        /* the envelope tables: the same pipelined unnest statements as the other method */
        send_envelopes(s, sub, o);
        if (PQpipelineSync(s->conn) == 1)
            drain_pipeline(s, o);
        if (PQstatus(s->conn) == CONNECTION_OK)
            PQexitPipelineMode(s->conn);
    }
    exec_step(s, o, "COMMIT", "commit");
    if (o->failed && PQstatus(s->conn) == CONNECTION_OK) {
        PGresult *r = PQexec(s->conn, "ROLLBACK");
        PQclear(r);
    }
    kh_buf_cleanup(&sql);
    kh_buf_cleanup(&move);
}

/* direct_copy method: see the top of the file. */
static void write_direct_copy(struct slot *s, const struct subset *sub, struct outcome *o)
{
    struct kh_buf sql;
    kh_buf_init(&sql, 1u << 20);
    exec_step(s, o, "BEGIN", "begin");
    if (!o->failed && PQenterPipelineMode(s->conn) == 1) {
        send_envelopes(s, sub, o);
        if (PQpipelineSync(s->conn) == 1)
            drain_pipeline(s, o);
        if (PQstatus(s->conn) == CONNECTION_OK)
            PQexitPipelineMode(s->conn);
    }
    for (size_t t = 0; !o->failed && t < kh_stats_ntables; t++) {
        int rc = 0;
        if (build_table(s, s->pg->copy_format, (int)t, sub, &rc) > 0 && rc == 0)
            copy_table(s, o, (int)t, false, &sql);
        else if (rc != 0) {
            o->failed = true;
            snprintf(s->err, sizeof(s->err), "out of memory building the batch");
        }
    }
    exec_step(s, o, "COMMIT", "commit");
    if (o->failed && PQstatus(s->conn) == CONNECTION_OK) {
        PGresult *r = PQexec(s->conn, "ROLLBACK");
        PQclear(r);
    }
    kh_buf_cleanup(&sql);
}

/* What a committed subset stored goes into the batch's counts. */
static void count_stored(struct kh_batch *b, const struct subset *sub, const struct outcome *o)
{
    for (size_t t = 0; t < KH_REPORT_MAX_TABLES; t++)
        b->rows_stored[t] += o->rows[t];
    b->reports_stored[0] += o->reports[0];
    b->reports_stored[1] += o->reports[1];
    b->reports_duplicate += sub->n - o->reports[0] - o->reports[1];
}

/* Writes a subset in one transaction, adding what it stored to b's counts. 0, KH_EREJECT (a
 * data error) or KH_ERETRY. */
static int write_subset(struct slot *s, const struct subset *sub, struct kh_batch *b)
{
    struct outcome o = {0};
    int rc = ensure_conn(s);
    if (rc != 0)
        return rc;
    if (s->pg->use_direct_copy) {
        write_direct_copy(s, sub, &o);
        if (o.failed && strcmp(o.state, "23505") == 0 && PQstatus(s->conn) == CONNECTION_OK) {
            /* some of it is stored already: write it again, skipping what is there */
            kh_log(KH_LOG_DEBUG, "direct_copy: rows already stored; batch written with unnest",
                   NULL);
            o = (struct outcome){0};
            write_unnest(s, sub, &o);
        }
    } else if (s->pg->use_copy)
        write_copy(s, sub, &o);
    else
        write_unnest(s, sub, &o);
    if (!o.failed) {
        count_stored(b, sub, &o);
        return 0;
    }
    if (PQstatus(s->conn) != CONNECTION_OK) {
        drop_conn(&s->conn);
        mark_down(s->pg, s->err);
        return KH_ERETRY;
    }
    return is_data_error(o.state) ? KH_EREJECT : KH_ERETRY;
}

/* A data error somewhere in the batch: write the reports one by one to find the bad ones.
 * Reports written before are written again harmlessly (idempotent keys). */
static int isolate(struct slot *s, struct kh_batch *b)
{
    bool rejected = false;
    char first_err[sizeof(s->err)] = "";
    for (size_t i = 0; i < b->nreports; i++) {
        struct subset one = {.reports = &b->reports[i], .n = 1};
        int rc = write_subset(s, &one, b);
        if (rc == KH_ERETRY)
            return rc;
        b->results[i] = rc;
        if (rc == KH_EREJECT && !rejected) {
            rejected = true;
            snprintf(first_err, sizeof(first_err), "%s", s->err);
        }
    }
    if (rejected)
        snprintf(s->err, sizeof(s->err), "stats: PostgreSQL refused a value of this report: %.700s",
                 first_err);
    return rejected ? KH_EREJECT : 0;
}

static int pg_write(struct kh_store *st, int slot, struct kh_batch *b, const char **err)
{
    struct pg *pg = st->impl;
    struct slot *s = &pg->slots[slot];
    struct subset all = {.reports = b->reports, .n = b->nreports};
    for (size_t i = 0; i < b->nreports; i++)
        b->results[i] = 0;
    *err = s->err;
    kh_batch_reset_counts(b);
    int rc = write_subset(s, &all, b);
    if (rc == KH_EREJECT)
        return isolate(s, b);
    if (rc == 0 && atomic_load(&pg->lose_acks) > 0 && atomic_fetch_sub(&pg->lose_acks, 1) > 0) {
        /* test hook: act as if the connection died after COMMIT and before its answer */
        drop_conn(&s->conn);
        snprintf(s->err, sizeof(s->err), "fault injection: commit acknowledgement lost");
        kh_batch_reset_counts(b);
        return KH_ERETRY;
    }
    return rc;
}

static uint64_t pg_reconnects(struct kh_store *s)
{
    struct pg *pg = s->impl;
    return atomic_load(&pg->reconnects);
}

static int pg_writers(struct kh_store *s)
{
    struct pg *pg = s->impl;
    return pg->nslots;
}

static int pg_start_op(struct kh_store *s)
{
    return pg_start(s->impl);
}

const struct kh_store_ops kh_store_postgres_ops = {
    .name = "postgres",
    .open = pg_open,
    .migrate = pg_migrate,
    .start = pg_start_op,
    .writers = pg_writers,
    .write = pg_write,
    .healthy = pg_healthy,
    .reconnects = pg_reconnects,
    .close = pg_close,
};
