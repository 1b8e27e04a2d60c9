/*
 * pg_partition: plain PostgreSQL's time partitions (not TimescaleDB, not Citus). Every time
 * series (kh_pg_time_series: the stats tables, the quality tables, sora_report) is a table
 * PARTITION BY RANGE ("time"), one partition per postgres_partition_interval hours, named
 * <table>_pYYYYMMDD (UTC; _pYYYYMMDD_HHMM when the interval is not whole days),
 * PARTITIONS_AHEAD intervals created ahead by the maintenance thread; a DEFAULT partition
 * (<table>_default) takes rows no partition covers (a far past or future `time`), so no
 * batch ever fails for want of a partition, and a partition created later takes its rows
 * out of it. Retention drops whole partitions older than retention_days.
 *
 * Converting a table that is not partitioned yet (a database made by an older kohaku, or by
 * this one's migrations, which create plain tables) keeps its rows: under the migration's
 * advisory lock, the table is renamed <table>_unpartitioned (its indexes too), the
 * partitioned table takes its name, columns and indexes, and the old table is attached as
 * the partition of every time up to the interval after its newest row (a CHECK constraint
 * first, validated by one scan, so that ATTACH has nothing more to check and its indexes are
 * attached, not rebuilt). Grants are copied; kohaku's views are made again on the new table.
 *
 * The work is done by PL/pgSQL functions kohaku creates (kohaku_partition_*), called with
 * the table name and intervals as parameters: no SQL here is built from anything but
 * constants.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "core/log.h"
#include "sora/schema.h"
#include "store/pg_internal.h"

#define PARTITIONS_AHEAD 3
/* How long a partition's ATTACH or DETACH may wait for its lock: writers queue behind a
 * waiting ACCESS EXCLUSIVE request, so it gives up early and tries again next time. Then
 * the migrations' advisory lock (pg_schema.c), so that two kohaku processes do not create
 * the same partition at once, nor while one converts the tables. */
#define MAINT_BEGIN                                                                            \
    "BEGIN; SET LOCAL lock_timeout = '1s'; SELECT pg_advisory_xact_lock(7164746341)"

/* The partitions of a table: the regex reads the bound PostgreSQL prints (FROM ('...') TO
 * ('...'), MINVALUE, DEFAULT) back as times, in the session's own time zone. */
static const char functions_sql[] =
    "CREATE OR REPLACE FUNCTION kohaku_partition_bounds(t regclass)\n"
    "RETURNS TABLE (part regclass, name name, lo timestamptz, hi timestamptz, is_default bool)\n"
    "LANGUAGE sql STABLE AS $kh$\n"
    "  SELECT c.oid::regclass, c.relname,\n"
    "    substring(b FROM 'FROM \\(''([^'']*)''\\)')::timestamptz,\n"
    "    substring(b FROM 'TO \\(''([^'']*)''\\)')::timestamptz, b = 'DEFAULT'\n"
    "  FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid,\n"
    "    LATERAL pg_get_expr(c.relpartbound, c.oid) AS b WHERE i.inhparent = t\n"
    "$kh$;\n"
    /* Table t (not partitioned) renamed `old`, its indexes given `suffix`, and a table
     * partitioned by time made in its place: its columns, indexes and grants. */
    "CREATE OR REPLACE FUNCTION kohaku_partition_parent(t text, old text, suffix text)\n"
    "RETURNS void LANGUAGE plpgsql AS $kh$\n"
    "DECLARE defs text[]; d text; r record;\n"
    "BEGIN\n"
    "  SELECT array_agg(pg_get_indexdef(indexrelid)) INTO defs FROM pg_index\n"
    "    WHERE indrelid = to_regclass(quote_ident(t));\n"
    "  FOR r IN SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid\n"
    "      WHERE i.indrelid = to_regclass(quote_ident(t)) LOOP\n"
    "    EXECUTE format('ALTER INDEX %I RENAME TO %I', r.relname,\n"
    "                   left(r.relname, 48) || suffix);\n"
    "  END LOOP;\n"
    "  EXECUTE format('ALTER TABLE %I RENAME TO %I', t, old);\n"
    "  EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS '\n"
    "                 'INCLUDING STORAGE) PARTITION BY RANGE (\"time\")', t, old);\n"
    "  FOREACH d IN ARRAY coalesce(defs, '{}') LOOP EXECUTE d; END LOOP;\n"
    "  FOR r IN SELECT a.privilege_type AS p, a.grantee AS g FROM pg_class c,\n"
    "      aclexplode(c.relacl) a WHERE c.oid = to_regclass(quote_ident(old))\n"
    "      AND a.grantee <> c.relowner LOOP\n"
    "    EXECUTE format('GRANT %s ON %I TO %s', r.p, t, CASE WHEN r.g = 0 THEN 'PUBLIC'\n"
    "                   ELSE quote_ident(pg_get_userbyid(r.g)) END);\n"
    "  END LOOP;\n"
    "END $kh$;\n"
    /* An unpartitioned table t becomes the partitioned parent (see the top of the file). */
    "CREATE OR REPLACE FUNCTION kohaku_partition_table(t text, iv interval) RETURNS bool\n"
    "LANGUAGE plpgsql AS $kh$\n"
    "DECLARE\n"
    "  old text := t || '_unpartitioned';\n"
    "  chk text := left(t, 40) || '_unpartitioned_range';\n"
    "  hi timestamptz;\n"
    "BEGIN\n"
    "  IF (SELECT relkind FROM pg_class WHERE oid = to_regclass(quote_ident(t)))\n"
    "     IS DISTINCT FROM 'r' THEN RETURN false; END IF;\n"
    "  EXECUTE format('LOCK TABLE %I IN ACCESS EXCLUSIVE MODE', t);\n"
    "  EXECUTE format('SELECT max(\"time\") FROM %I', t) INTO hi;\n"
    "  hi := CASE WHEN hi IS NULL THEN timestamptz '1970-01-01 00:00:00+00'\n"
    "        ELSE date_bin(iv, hi, timestamptz '1970-01-01 00:00:00+00') + iv END;\n"
    "  PERFORM kohaku_partition_parent(t, old, '_unpartitioned');\n"
    "  EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I CHECK (\"time\" < %L)', old, chk, hi);\n"
    "  EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (MINVALUE) TO (%L)',\n"
    "                 t, old, hi);\n"
    "  EXECUTE format('ALTER TABLE %I DROP CONSTRAINT %I', old, chk);\n"
    "  RETURN true;\n"
    "END $kh$;\n"
    /* The DEFAULT partition, then partitions over the gaps from the current interval to
     * `ahead` intervals on, aligned on iv (since the epoch, UTC); a gap's rows move out of
     * the DEFAULT partition into its new partition. The count made. */
    "CREATE OR REPLACE FUNCTION kohaku_partitions_ahead(t text, iv interval, ahead int)\n"
    "RETURNS int LANGUAGE plpgsql AS $kh$\n"
    "DECLARE\n"
    "  epoch timestamptz := timestamptz '1970-01-01 00:00:00+00';\n"
    "  s timestamptz := date_bin(iv, now(), epoch);\n"
    "  stop timestamptz := s + (ahead + 1) * iv;\n"
    "  e timestamptz; nxt timestamptz; p text; made int := 0;\n"
    "  def text := t || '_default'; rel regclass := to_regclass(quote_ident(t));\n"
    "BEGIN\n"
    "  IF to_regclass(quote_ident(def)) IS NULL THEN\n"
    "    EXECUTE format('CREATE TABLE %I PARTITION OF %I DEFAULT', def, t);\n"
    "  END IF;\n"
    "  WHILE s < stop LOOP\n"
    "    SELECT b.hi INTO e FROM kohaku_partition_bounds(rel) b\n"
    "      WHERE NOT b.is_default AND (b.lo IS NULL OR b.lo <= s) AND s < b.hi;\n"
    "    IF e IS NOT NULL THEN s := e; CONTINUE; END IF;\n"
    "    SELECT min(b.lo) INTO nxt FROM kohaku_partition_bounds(rel) b WHERE b.lo > s;\n"
    "    e := date_bin(iv, s, epoch) + iv;\n"
    "    IF nxt IS NOT NULL AND nxt < e THEN e := nxt; END IF;\n"
    "    p := t || '_p' || to_char(s AT TIME ZONE 'UTC', CASE WHEN extract(epoch FROM iv)\n"
    "      ::bigint % 86400 = 0 AND s = date_bin('1 day', s, epoch) THEN 'YYYYMMDD'\n"
    "      ELSE 'YYYYMMDD_HH24MI' END);\n"
    "    EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS '\n"
    "                   'INCLUDING STORAGE)', p, t);\n"
    "    EXECUTE format('WITH m AS (DELETE FROM %I WHERE \"time\" >= %L AND \"time\" < %L '\n"
    "                   'RETURNING *) INSERT INTO %I SELECT * FROM m', def, s, e, p);\n"
    "    EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I CHECK (\"time\" >= %L AND '\n"
    "                   '\"time\" < %L)', p, p || '_range', s, e);\n"
    "    EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',\n"
    "                   t, p, s, e);\n"
    "    EXECUTE format('ALTER TABLE %I DROP CONSTRAINT %I', p, p || '_range');\n"
    "    made := made + 1;\n"
    "    s := e;\n"
    "  END LOOP;\n"
    "  RETURN made;\n"
    "END $kh$;\n"
    /* Partitions whose every time is older than `older`: detached and dropped; the count
     * and the rows they held by the planner's estimate (reltuples). */
    "CREATE OR REPLACE FUNCTION kohaku_partitions_drop(t text, older interval,\n"
    "  OUT partitions int, OUT rows_estimate bigint) LANGUAGE plpgsql AS $kh$\n"
    "DECLARE r record;\n"
    "BEGIN\n"
    "  partitions := 0; rows_estimate := 0;\n"
    "  FOR r IN SELECT b.part, greatest(c.reltuples, 0)::bigint AS n\n"
    "      FROM kohaku_partition_bounds(to_regclass(quote_ident(t))) b\n"
    "      JOIN pg_class c ON c.oid = b.part\n"
    "      WHERE NOT b.is_default AND b.hi <= now() - older ORDER BY b.hi LOOP\n"
    "    EXECUTE format('ALTER TABLE %I DETACH PARTITION %s', t, r.part);\n"
    "    EXECUTE format('DROP TABLE %s', r.part);\n"
    "    partitions := partitions + 1;\n"
    "    rows_estimate := rows_estimate + r.n;\n"
    "  END LOOP;\n"
    "END $kh$;\n";

/* Citus mode (pg_citus.c distributes the tables; these run on the coordinator). Citus's
 * create_time_partitions takes only partitions of one size without gaps, and crashes the
 * backend on a MINVALUE bound (seen with Citus 13.2), so a table not distributed yet becomes
 * the parent with its old table, rows and all, as its DEFAULT partition <t>_default: the
 * times before the first partition, and any time no partition covers. */
static const char citus_functions_sql[] =
    "CREATE OR REPLACE FUNCTION kohaku_citus_partition_table(t text) RETURNS bool\n"
    "LANGUAGE plpgsql AS $kh$\n"
    "DECLARE rel regclass := to_regclass(quote_ident(t));\n"
    "BEGIN\n"
    "  IF (SELECT relkind FROM pg_class WHERE oid = rel) IS DISTINCT FROM 'r' OR EXISTS\n"
    "     (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = rel) THEN RETURN false; END IF;\n"
    "  EXECUTE format('LOCK TABLE %I IN ACCESS EXCLUSIVE MODE', t);\n"
    "  PERFORM kohaku_partition_parent(t, t || '_default', '_default');\n"
    "  EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I DEFAULT', t, t || '_default');\n"
    "  RETURN true;\n"
    "END $kh$;\n"
    /* Citus's create_time_partitions from the current interval to `ahead` intervals on (UTC,
     * the first aligned on iv since the epoch). Rows the DEFAULT partition holds for those
     * times would make the new partition fail: they move into it. The count made. */
    "CREATE OR REPLACE FUNCTION kohaku_citus_partitions_ahead(t text, iv interval, ahead int)\n"
    "RETURNS int LANGUAGE plpgsql AS $kh$\n"
    "DECLARE\n"
    "  rel regclass := to_regclass(quote_ident(t)); def text := t || '_default';\n"
    "  s timestamptz := date_bin(iv, now(), timestamptz '1970-01-01 00:00:00+00');\n"
    "  stop timestamptz := s + (ahead + 1) * iv;\n"
    "  before int; strays bigint;\n"
    "BEGIN\n"
    "  PERFORM set_config('timezone', 'UTC', true);\n"
    /* before any query: a distributed table cannot be made after a parallel one */
    "  PERFORM set_config('citus.multi_shard_modify_mode', 'sequential', true);\n"
    "  IF to_regclass(quote_ident(def)) IS NULL THEN\n"
    "    EXECUTE format('CREATE TABLE %I PARTITION OF %I DEFAULT', def, t);\n"
    "  END IF;\n"
    "  SELECT count(*) INTO before FROM pg_inherits WHERE inhparent = rel;\n"
    "  EXECUTE format('SELECT count(*) FROM %I WHERE \"time\" >= %L AND \"time\" < %L', def, s,\n"
    "                 stop) INTO strays;\n"
    /* in one statement: the rows moved are exactly the rows deleted (a row a writer adds
     * meanwhile stays, and fails the new partition: tried again) */
    "  IF strays > 0 THEN\n"
    "    EXECUTE format('CREATE TEMP TABLE kohaku_strays (LIKE %I) ON COMMIT DROP', t);\n"
    "    EXECUTE format('WITH m AS (DELETE FROM %I WHERE \"time\" >= %L AND \"time\" < %L '\n"
    "                   'RETURNING *) INSERT INTO kohaku_strays SELECT * FROM m', def, s, stop);\n"
    "  END IF;\n"
    "  PERFORM create_time_partitions(rel, iv, stop, s);\n"
    "  IF strays > 0 THEN\n"
    "    EXECUTE format('INSERT INTO %I SELECT * FROM kohaku_strays', t);\n"
    "    DROP TABLE kohaku_strays;\n"
    "  END IF;\n"
    "  RETURN (SELECT count(*) FROM pg_inherits WHERE inhparent = rel) - before;\n"
    "END $kh$;\n"
    /* Citus's drop_old_time_partitions: the partitions whose every time is older than
     * `older`; the count dropped (the coordinator holds no rows to estimate). */
    "CREATE OR REPLACE FUNCTION kohaku_citus_partitions_drop(t text, older interval,\n"
    "  OUT partitions int, OUT rows_estimate bigint) LANGUAGE plpgsql AS $kh$\n"
    "DECLARE rel regclass := to_regclass(quote_ident(t)); before int;\n"
    "BEGIN\n"
    "  SELECT count(*) INTO before FROM pg_inherits WHERE inhparent = rel;\n"
    "  CALL drop_old_time_partitions(rel, now() - older);\n"
    "  partitions := before - (SELECT count(*) FROM pg_inherits WHERE inhparent = rel);\n"
    "  rows_estimate := NULL;\n"
    "END $kh$;\n";

static int exec_params(PGconn *c, const char *sql, int n, const char *const *params,
                       PGresult **out, char *err, size_t errlen)
{
    PGresult *r = PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK && PQresultStatus(r) != PGRES_COMMAND_OK) {
        kh_pg_error(err, errlen, "partitions", c, r);
        PQclear(r);
        return KH_EIO;
    }
    if (out)
        *out = r;
    else
        PQclear(r);
    return 0;
}

static void interval_text(const struct kh_pg *pg, char out[32])
{
    int64_t hours = pg->partition_hours > 0 ? pg->partition_hours : 24;
    snprintf(out, 32, "%lld hours", (long long)hours);
}

/* Whether table is partitioned (relkind 'p'). -1 on error. */
static int is_partitioned(PGconn *c, const char *table, char *err, size_t errlen)
{
    const char *params[1] = {table};
    PGresult *r;
    if (exec_params(c,
                    "SELECT relkind = 'p' FROM pg_class WHERE oid = to_regclass(quote_ident($1))",
                    1, params, &r, err, errlen) != 0)
        return -1;
    int yes = PQntuples(r) == 1 && strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    return yes;
}

/* Converts table (when configured and not partitioned yet). 1 converted, 0 not, -1 error. */
static int convert(struct kh_pg *pg, PGconn *c, const char *table, char *err, size_t errlen)
{
    char iv[32];
    interval_text(pg, iv);
    const char *params[2] = {table, iv};
    PGresult *r;
    uint64_t start = kh_mono_usec();
    if (exec_params(c, "SELECT kohaku_partition_table($1, $2::interval)", 2, params, &r, err,
                    errlen) != 0)
        return -1;
    int converted = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    struct kh_logline l;
    if (converted && kh_log_begin(&l, KH_LOG_INFO, "table partitioned")) {
        kh_log_str(&l, "table", table);
        kh_log_str(&l, "old_rows_in", "<table>_unpartitioned");
        kh_log_dbl(&l, "seconds", (double)(kh_mono_usec() - start) / 1e6);
        kh_log_end(&l);
    }
    return converted;
}

/* kohaku's views again, every version's up to `upto` in turn, now on the partitioned tables
 * (a view follows the table it was made on through a rename: the old one, now a partition). */
int kh_pg_partition_views(PGconn *c, int upto, char *err, size_t errlen)
{
    struct kh_buf sql;
    kh_buf_init(&sql, 16u << 20);
    int rc = 0;
    for (int v = 1; rc == 0 && v <= upto; v++)
        rc = kh_schema_migration_views_sql(KH_DIALECT_POSTGRES, v, &sql);
    if (rc == 0)
        rc = kh_buf_append(&sql, "", 1);
    if (rc != 0)
        snprintf(err, errlen, "out of memory building the views");
    else if (sql.len > 1)
        rc = kh_pg_exec(c, sql.data, err, errlen);
    kh_buf_cleanup(&sql);
    return rc;
}

/* Partitions ahead for one table; the count made, or -1. */
static int ahead(struct kh_pg *pg, PGconn *c, const char *table, char *err, size_t errlen)
{
    char iv[32], n[16];
    interval_text(pg, iv);
    snprintf(n, sizeof(n), "%d", PARTITIONS_AHEAD);
    const char *params[3] = {table, iv, n};
    PGresult *r;
    if (exec_params(c,
                    pg->citus ? "SELECT kohaku_citus_partitions_ahead($1, $2::interval, $3::int)"
                              : "SELECT kohaku_partitions_ahead($1, $2::interval, $3::int)",
                    3, params, &r, err, errlen) != 0)
        return -1;
    int made = atoi(PQgetvalue(r, 0, 0));
    PQclear(r);
    return made;
}

/* Whether every time series is partitioned: 1, 0 when none is, -1 with err (saying `what`
 * to do) when only some are, or on error. */
static int all_partitioned(PGconn *c, const char *what, char *err, size_t errlen)
{
    struct kh_pg_ts_table ts;
    int partitioned = 0, tables = 0;
    for (size_t i = 0; kh_pg_time_series(i, &ts); i++, tables++) {
        int p = is_partitioned(c, ts.table, err, errlen);
        if (p < 0)
            return -1;
        partitioned += p;
    }
    if (partitioned != 0 && partitioned != tables) {
        snprintf(err, errlen, "partitions: %d of the %d time series tables are partitioned; %s",
                 partitioned, tables, what);
        return -1;
    }
    return partitioned != 0;
}

/* The partitions ahead of every time series. 0 or KH_EIO with err. */
static int ahead_all(struct kh_pg *pg, PGconn *c, char *err, size_t errlen)
{
    struct kh_pg_ts_table ts;
    for (size_t i = 0; kh_pg_time_series(i, &ts); i++)
        if (ahead(pg, c, ts.table, err, errlen) < 0)
            return KH_EIO;
    return 0;
}

int kh_pg_partition_setup(struct kh_pg *pg, PGconn *c, char *err, size_t errlen)
{
    pg->partitioned = false;
    if (kh_pg_exec(c, functions_sql, err, errlen) != 0)
        return KH_EIO;
    struct kh_pg_ts_table ts;
    int converted = 0;
    for (size_t i = 0; kh_pg_time_series(i, &ts); i++) {
        int rc = pg->partition_hours > 0 ? convert(pg, c, ts.table, err, errlen) : 0;
        if (rc < 0)
            return KH_EIO;
        converted += rc;
    }
    if (converted > 0 && kh_pg_partition_views(c, kh_schema_latest_version(), err, errlen) != 0)
        return KH_EIO;
    int all = all_partitioned(c, "set postgres_partition_interval to partition the rest", err,
                              errlen);
    if (all < 0)
        return KH_EIO;
    pg->partitioned = all;
    return pg->partitioned ? ahead_all(pg, c, err, errlen) : 0;
}

/* MAINT_BEGIN; a failure (the advisory lock not had within lock_timeout, say) leaves no
 * transaction open. */
static int maint_begin(struct kh_pg *pg)
{
    if (kh_pg_exec(pg->mconn, MAINT_BEGIN, pg->merr, sizeof(pg->merr)) == 0)
        return 0;
    char ignored[256];
    kh_pg_exec(pg->mconn, "ROLLBACK", ignored, sizeof(ignored));
    return KH_EIO;
}

int kh_pg_partitions_ahead(struct kh_pg *pg, const char *table, int *made)
{
    if (maint_begin(pg) != 0)
        return KH_EIO;
    int n = ahead(pg, pg->mconn, table, pg->merr, sizeof(pg->merr));
    char ignored[256];
    if (n < 0) {
        kh_pg_exec(pg->mconn, "ROLLBACK", ignored, sizeof(ignored));
        return KH_EIO;
    }
    *made = n;
    return kh_pg_exec(pg->mconn, "COMMIT", pg->merr, sizeof(pg->merr));
}

int kh_pg_partitions_drop(struct kh_pg *pg, const char *table, const char *older,
                          long long *partitions, long long *rows)
{
    const char *params[2] = {table, older};
    if (maint_begin(pg) != 0)
        return KH_EIO;
    PGresult *r;
    char ignored[256];
    if (exec_params(pg->mconn,
                    pg->citus ? "SELECT * FROM kohaku_citus_partitions_drop($1, $2::interval)"
                              : "SELECT * FROM kohaku_partitions_drop($1, $2::interval)",
                    2, params, &r, pg->merr, sizeof(pg->merr)) != 0) {
        kh_pg_exec(pg->mconn, "ROLLBACK", ignored, sizeof(ignored));
        return KH_EIO;
    }
    *partitions += atoll(PQgetvalue(r, 0, 0));
    *rows += atoll(PQgetvalue(r, 0, 1));
    PQclear(r);
    return kh_pg_exec(pg->mconn, "COMMIT", pg->merr, sizeof(pg->merr));
}

int kh_pg_partitions_unbounded(struct kh_pg *pg, const char *table, char names[2][64])
{
    const char *params[1] = {table};
    PGresult *r;
    if (exec_params(pg->mconn,
                    "SELECT name FROM kohaku_partition_bounds(to_regclass(quote_ident($1))) "
                    "WHERE is_default OR lo IS NULL ORDER BY is_default LIMIT 2",
                    1, params, &r, pg->merr, sizeof(pg->merr)) != 0)
        return -1;
    int n = PQntuples(r);
    for (int i = 0; i < n; i++)
        snprintf(names[i], 64, "%s", PQgetvalue(r, i, 0));
    PQclear(r);
    return n;
}

int kh_pg_partitions_none(PGconn *c, char *err, size_t errlen)
{
    struct kh_pg_ts_table ts;
    for (size_t i = 0; kh_pg_time_series(i, &ts); i++) {
        int p = is_partitioned(c, ts.table, err, errlen);
        if (p < 0)
            return KH_EIO;
        if (p) {
            snprintf(err, errlen,
                     "%s is partitioned (kohaku's plain PostgreSQL mode) and TimescaleDB "
                     "cannot make a partitioned table a hypertable: keep this database on plain "
                     "PostgreSQL, or move its rows into a new database",
                     ts.table);
            return KH_EIO;
        }
    }
    return 0;
}

/* --- Citus -------------------------------------------------------------------------------- */

int kh_pg_citus_partition_tables(struct kh_pg *pg, PGconn *c, int *converted, char *err,
                                 size_t errlen)
{
    *converted = 0;
    if (kh_pg_exec(c, functions_sql, err, errlen) != 0 ||
        kh_pg_exec(c, citus_functions_sql, err, errlen) != 0)
        return KH_EIO;
    struct kh_pg_ts_table ts;
    for (size_t i = 0; pg->partition_hours > 0 && kh_pg_time_series(i, &ts); i++) {
        const char *params[1] = {ts.table};
        PGresult *r;
        if (exec_params(c, "SELECT kohaku_citus_partition_table($1)", 1, params, &r, err,
                        errlen) != 0)
            return KH_EIO;
        bool yes = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
        PQclear(r);
        struct kh_logline l;
        if (yes && kh_log_begin(&l, KH_LOG_INFO, "table partitioned")) {
            kh_log_str(&l, "table", ts.table);
            kh_log_str(&l, "old_rows_in", "<table>_default");
            kh_log_end(&l);
        }
        *converted += yes;
    }
    return 0;
}

/* Whether the columnar access method is there (citus_columnar created). -1 on error. */
static int have_columnar(PGconn *c, char *err, size_t errlen)
{
    long long n = 0;
    if (kh_pg_query_int(c, "SELECT count(*) FROM pg_am WHERE amname = 'columnar'", &n, err,
                        errlen) != 0)
        return -1;
    return n > 0;
}

/* A partition bounded by MINVALUE (plain PostgreSQL mode's <table>_unpartitioned): the first
 * such table's name into name, 1; 0 when none; -1 on error. */
static int minvalue_partition(PGconn *c, char name[64], char *err, size_t errlen)
{
    struct kh_pg_ts_table ts;
    for (size_t i = 0; kh_pg_time_series(i, &ts); i++) {
        const char *params[1] = {ts.table};
        PGresult *r;
        if (exec_params(c,
                        "SELECT count(*) FROM kohaku_partition_bounds(to_regclass(quote_ident("
                        "$1))) WHERE NOT is_default AND lo IS NULL",
                        1, params, &r, err, errlen) != 0)
            return -1;
        int n = atoi(PQgetvalue(r, 0, 0));
        PQclear(r);
        if (n > 0) {
            snprintf(name, 64, "%s", ts.table);
            return 1;
        }
    }
    return 0;
}

int kh_pg_citus_partition_setup(struct kh_pg *pg, PGconn *c, char *err, size_t errlen)
{
    pg->partitioned = pg->columnar = false;
    int all = all_partitioned(c, "Citus mode partitions only tables it distributes itself", err,
                              errlen);
    if (all <= 0)
        return all < 0 ? KH_EIO : 0;
    char name[64];
    int minv = minvalue_partition(c, name, err, errlen);
    if (minv < 0)
        return KH_EIO;
    if (minv > 0) {
        snprintf(err, errlen,
                 "%s has a partition of all times before its first (<table>_unpartitioned, "
                 "made by plain PostgreSQL mode), which Citus's time partition functions "
                 "cannot manage: a database plain PostgreSQL mode has partitioned cannot "
                 "become a Citus one (README, Converting a plain PostgreSQL database to Citus)",
                 name);
        return KH_EIO;
    }
    pg->partitioned = true;
    if (ahead_all(pg, c, err, errlen) != 0)
        return KH_EIO;
    int am = have_columnar(c, err, errlen);
    if (am < 0)
        return KH_EIO;
    pg->columnar = am > 0;
    if (pg->columnar_days > 0 && !pg->columnar && !pg->columnar_warned) {
        pg->columnar_warned = true;
        kh_log(KH_LOG_WARN, "citus: old partitions stay heap",
               "citus_columnar_after is set but the columnar access method is not in this "
               "database: CREATE EXTENSION citus_columnar (or set citus_columnar_after = 0)");
    }
    return 0;
}

/* One partition to columnar, in a transaction of its own under the migrations' advisory
 * lock (MAINT_BEGIN). Citus's alter_table copies the partition's shards into new ones and
 * drops the old: a row a writer puts into an old shard meanwhile (writers route rows to the
 * partitions on the workers, and nothing there stops them) would go with it, acknowledged
 * and lost, as a test saw once. So the transaction first takes a SHARE lock on the
 * parent table on the coordinator, which every write to the table takes ROW EXCLUSIVE on:
 * the table's writes wait for the partition's conversion (waited for at most lock_timeout,
 * then tried again at the next pass). One shard at a time: in parallel the conversion of
 * some tables' partitions (the remote-*-rtp ones, seen with Citus 13.2 and two workers)
 * cancelled itself as a distributed deadlock every time. 0, or KH_EIO with pg->merr. */
static int columnar_partition(struct kh_pg *pg, const char *table, const char *partition)
{
    char lock[256];
    snprintf(lock, sizeof(lock),
             "SET LOCAL citus.multi_shard_modify_mode TO 'sequential'; LOCK TABLE \"%s\" IN "
             "SHARE MODE",
             table);
    if (maint_begin(pg) != 0)
        return KH_EIO;
    const char *params[1] = {partition};
    char ignored[256];
    if (kh_pg_exec(pg->mconn, lock, pg->merr, sizeof(pg->merr)) != 0 ||
        exec_params(pg->mconn, "SELECT alter_table_set_access_method($1::regclass, 'columnar')",
                    1, params, NULL, pg->merr, sizeof(pg->merr)) != 0) {
        kh_pg_exec(pg->mconn, "ROLLBACK", ignored, sizeof(ignored));
        return KH_EIO;
    }
    return kh_pg_exec(pg->mconn, "COMMIT", pg->merr, sizeof(pg->merr));
}

int kh_pg_citus_columnar(struct kh_pg *pg, const char *table, long long *converted)
{
    char older[32];
    snprintf(older, sizeof(older), "%lld days", (long long)pg->columnar_days);
    const char *params[2] = {table, older};
    PGresult *r;
    /* what alter_old_partitions_set_access_method would take: heap partitions whose every
     * time is older than the age */
    if (exec_params(pg->mconn,
                    "SELECT partition::text FROM time_partitions WHERE parent_table = "
                    "to_regclass(quote_ident($1)) AND access_method = 'heap' AND to_value IS "
                    "NOT NULL AND to_value::timestamptz <= now() - $2::interval ORDER BY 1",
                    2, params, &r, pg->merr, sizeof(pg->merr)) != 0)
        return KH_EIO;
    int rc = 0;
    for (int i = 0, n = PQntuples(r); rc == 0 && i < n; i++) {
        rc = columnar_partition(pg, table, PQgetvalue(r, i, 0));
        *converted += rc == 0;
    }
    PQclear(r);
    return rc;
}
