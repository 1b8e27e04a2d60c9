/*
 * sqlite: the embedded storage backend (default). One connection, used by the writer thread
 * for writes; WAL mode so readers (Grafana, the sqlite3 shell) never block the writer.
 * A batch is one IMMEDIATE transaction (its webhooks' lifecycle rows included, each upserted
 * on its own: the statement's merge rules apply to them in turn); any failure rolls the whole
 * batch back and is reported as KH_ERETRY (values are already typed, and the parsers fill
 * every NOT NULL column, so SQLite has no per-row data errors to refuse). Prepared statements
 * are cached per table. This module is the only user of SQLite.
 *
 * Checkpoints are SQLite's own automatic ones, on the writer, every 1,000 WAL pages. (A
 * separate checkpointer thread measured about 45% more reports/s here but 80-100 ms writer
 * stalls about once a second, four times the p99 at half load: see BENCHMARKS.md.)
 *
 * Retention (serve only, retention_days > 0) runs on the writer too, in the batches'
 * transactions: after a batch's rows, under a savepoint (a failed delete undoes only
 * itself), DELETEs of RETENTION_CHUNK rows at a time by each time series' "time" index,
 * oldest first, until the budget is spent (RETENTION_BUDGET_USEC; more for a batch that
 * wrote many rows, see there); the rest waits for the next batch. So a pass never holds the
 * write lock on its own, never stalls a batch by more than the budget, and shares the
 * batch's commit (no extra fsync). The file does not shrink: freed pages are
 * reused by new rows (README, Retention).
 */
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/errors.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/timeutil.h"
#include "sora/schema.h"
#include "store/store.h"

/* Rows per retention DELETE, and the time retention may add to one batch: 4 ms, or longer
 * (up to 50 ms) while it has deleted fewer than twice the rows the batch wrote, so that a
 * pass keeps pace with any ingest rate (in steady state the rows going past the cutoff come
 * as fast as new ones came retention_days ago) and still gains on a backlog. */
#define RETENTION_CHUNK 500
#define RETENTION_BUDGET_USEC 4000
#define RETENTION_MAX_USEC 50000
#define RETENTION_PROGRESS_USEC 10000000

/* A retention pass in progress: the time series (ts_table) being cleared of rows older than
 * cutoff; what the batch's transaction deleted is counted once it commits. */
struct sq_retention {
    int64_t days, interval_usec;
    bool on, active;
    size_t table, table_before; /* the time series now, and before the batch's step */
    char cutoff[KH_TIME_TEXT_LEN + 1];
    uint64_t started, next_due, last_progress; /* kh_mono_usec */
    uint64_t deleted, uncommitted;
    sqlite3_stmt **del; /* per time series, prepared when first needed */
    sqlite3_stmt *savepoint, *release, *rollback_to;
};

struct sq {
    sqlite3 *db;
    sqlite3_stmt **insert; /* per stats table */
    sqlite3_stmt **env;    /* per envelope table (kh_env_tables) */
    sqlite3_stmt *begin, *commit, *rollback;
    /* others_wrote: PRAGMA data_version on the writer's connection, and its last value */
    sqlite3_stmt *data_version;
    int64_t last_data_version; /* -1: not read yet */
    /* latest (the writer's connection): per stats table, prepared when first needed */
    sqlite3_stmt **anchor, **at_time;
    /* query: a read-only connection of its own, opened when first needed */
    sqlite3 *rdb;
    char *path;
    int64_t query_timeout_usec;
    uint64_t deadline; /* of the query running on rdb (kh_mono_usec) */
    atomic_bool healthy;
    struct sq_retention ret;
    char err[512];
};

static const char *set_err(struct sq *q, const char *what)
{
    snprintf(q->err, sizeof(q->err), "%s: %s", what, sqlite3_errmsg(q->db));
    return q->err;
}

static int exec(struct sq *q, const char *sql, const char **err)
{
    char *msg = NULL;
    if (sqlite3_exec(q->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(q->err, sizeof(q->err), "%s", msg ? msg : sqlite3_errmsg(q->db));
        sqlite3_free(msg);
        *err = q->err;
        return KH_EIO;
    }
    return 0;
}

/* WAL, the configured synchronous, a 16 MiB page cache. */
#define PRAGMAS(sync)                                                                          \
    "PRAGMA journal_mode=WAL; PRAGMA synchronous=" sync "; PRAGMA cache_size=-16384;"

static int sq_open(struct kh_store *s, const struct kh_config *cfg, const char **err)
{
    struct sq *q = calloc(1, sizeof(*q));
    if (q == NULL) {
        *err = "out of memory";
        return KH_ENOMEM;
    }
    s->impl = q;
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    if (sqlite3_open_v2(cfg->sqlite_path, &q->db, flags, NULL) != SQLITE_OK) {
        snprintf(q->err, sizeof(q->err), "%s: %s", cfg->sqlite_path,
                 q->db ? sqlite3_errmsg(q->db) : "cannot open");
        *err = q->err;
        return KH_EIO;
    }
    sqlite3_busy_timeout(q->db, 5000);
    q->path = strdup(cfg->sqlite_path);
    q->ret.days = cfg->retention_days;
    q->ret.interval_usec = cfg->retention_interval * 1000000;
    q->query_timeout_usec = cfg->query_timeout * 1000;
    q->anchor = calloc(kh_stats_ntables, sizeof(*q->anchor));
    q->at_time = calloc(kh_stats_ntables, sizeof(*q->at_time));
    if (q->path == NULL || q->anchor == NULL || q->at_time == NULL) {
        *err = "out of memory";
        return KH_ENOMEM;
    }
    bool normal = strcmp(cfg->sqlite_synchronous, "normal") == 0;
    if (exec(q, normal ? PRAGMAS("NORMAL") : PRAGMAS("FULL"), err) != 0)
        return KH_EIO;
    atomic_store(&q->healthy, true);
    kh_metrics_storage_mode("sqlite");
    return 0;
}

static int current_version(struct sq *q, int *version, const char **err)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(q->db, "SELECT coalesce(max(version), 0) FROM kohaku_schema_version",
                           -1, &st, NULL) != SQLITE_OK) {
        *err = set_err(q, "schema version");
        return KH_EIO;
    }
    int rc = sqlite3_step(st);
    *version = rc == SQLITE_ROW ? sqlite3_column_int(st, 0) : 0;
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW) {
        *err = set_err(q, "schema version");
        return KH_EIO;
    }
    return 0;
}

static int apply_migrations(struct sq *q, int from, int to, const char **err)
{
    struct kh_buf sql;
    kh_buf_init(&sql, 16u << 20);
    int rc = 0;
    for (int v = from + 1; rc == 0 && v <= to; v++) {
        kh_buf_reset(&sql);
        if (kh_schema_migration_sql(KH_DIALECT_SQLITE, v, &sql) != 0 ||
            kh_buf_printf(&sql,
                          "INSERT INTO kohaku_schema_version (version, applied_at) VALUES "
                          "(%d, strftime('%%Y-%%m-%%dT%%H:%%M:%%fZ', 'now'));\n",
                          v) != 0) {
            *err = "out of memory building the migration";
            rc = KH_ENOMEM;
            break;
        }
        rc = exec(q, sql.data, err);
        if (rc == 0) {
            struct kh_logline l;
            if (kh_log_begin(&l, KH_LOG_INFO, "schema migrated")) {
                kh_log_str(&l, "storage", "sqlite");
                kh_log_int(&l, "version", v);
                kh_log_end(&l);
            }
        }
    }
    kh_buf_cleanup(&sql);
    return rc;
}

static int prepare(struct sq *q, const char *sql, sqlite3_stmt **st, const char **err)
{
    if (sqlite3_prepare_v3(q->db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL) != SQLITE_OK) {
        *err = set_err(q, "prepare");
        return KH_EIO;
    }
    return 0;
}

/* A derived statement: which (stats or envelope table) and how come from the caller. */
static int prepare_derived(struct sq *q, int (*sql_of)(enum kh_dialect, int, struct kh_buf *),
                           int t, sqlite3_stmt **st, struct kh_buf *sql, const char **err)
{
    kh_buf_reset(sql);
    int rc = sql_of(KH_DIALECT_SQLITE, t, sql);
    if (rc == 0)
        rc = kh_buf_append(sql, "", 1);
    if (rc != 0) {
        *err = "out of memory building a statement";
        return rc;
    }
    return prepare(q, sql->data, st, err);
}

static int prepare_all(struct sq *q, const char **err)
{
    q->insert = calloc(kh_stats_ntables, sizeof(*q->insert));
    q->env = calloc(kh_env_ntables, sizeof(*q->env));
    if (q->insert == NULL || q->env == NULL)
        return KH_ENOMEM;
    struct kh_buf sql;
    kh_buf_init(&sql, 1u << 20);
    int rc = 0;
    for (size_t t = 0; rc == 0 && t < kh_stats_ntables; t++)
        rc = prepare_derived(q, kh_schema_insert_sql, (int)t, &q->insert[t], &sql, err);
    for (size_t t = 0; rc == 0 && t < kh_env_ntables; t++)
        rc = prepare_derived(q, kh_schema_env_sql, (int)t, &q->env[t], &sql, err);
    kh_buf_cleanup(&sql);
    if (rc == 0)
        rc = prepare(q, "BEGIN IMMEDIATE", &q->begin, err);
    if (rc == 0)
        rc = prepare(q, "COMMIT", &q->commit, err);
    if (rc == 0)
        rc = prepare(q, "ROLLBACK", &q->rollback, err);
    if (rc == 0)
        rc = prepare(q, "PRAGMA data_version", &q->data_version, err);
    q->last_data_version = -1;
    return rc;
}

static int sq_migrate(struct kh_store *s, int target, const char **err)
{
    struct sq *q = s->impl;
    if (exec(q,
             "CREATE TABLE IF NOT EXISTS kohaku_schema_version (version INTEGER PRIMARY KEY, "
             "applied_at TEXT NOT NULL)",
             err) != 0)
        return KH_EIO;
    if (exec(q, "BEGIN IMMEDIATE", err) != 0)
        return KH_EIO;
    int have, latest = kh_schema_latest_version();
    if (target > 0 && target < latest)
        latest = target;
    int rc = current_version(q, &have, err);
    if (rc == 0 && have > latest) {
        snprintf(q->err, sizeof(q->err),
                 "database schema version %d is newer than this kohaku knows (%d)", have, latest);
        *err = q->err;
        rc = KH_EIO;
    }
    if (rc == 0)
        rc = apply_migrations(q, have, latest, err);
    const char *ignored;
    if (rc != 0) {
        exec(q, "ROLLBACK", &ignored);
        return rc;
    }
    if (exec(q, "COMMIT", err) != 0)
        return KH_EIO;
    if (latest < kh_schema_latest_version() || q->insert != NULL)
        return 0; /* an older schema on request (tests), or statements ready already */
    return prepare_all(q, err);
}

static void bind_text(sqlite3_stmt *st, int i, const struct kh_str *s)
{
    if (s->p)
        sqlite3_bind_text(st, i, s->p, (int)s->len, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, i);
}

static void bind_value(sqlite3_stmt *st, int i, const struct kh_value *v)
{
    switch (v->type) {
    case KH_COL_INT: sqlite3_bind_int64(st, i, v->u.i); break;
    case KH_COL_REAL: sqlite3_bind_double(st, i, v->u.d); break;
    case KH_COL_BOOL: sqlite3_bind_int(st, i, v->u.b); break;
    case KH_COL_TEXT:
    case KH_COL_JSON:
    case KH_COL_TIME: sqlite3_bind_text(st, i, v->u.s, (int)v->len, SQLITE_STATIC); break;
    default: sqlite3_bind_null(st, i);
    }
}

static int step(struct sq *q, sqlite3_stmt *st, const char **err, const char *what)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        *err = set_err(q, what);
        return KH_ERETRY;
    }
    return 0;
}

/* A step of an INSERT OR IGNORE: adds 1 to *stored when it inserted its row. */
static int insert(struct sq *q, sqlite3_stmt *st, const char **err, const char *what,
                  uint64_t *stored)
{
    int rc = step(q, st, err, what);
    if (rc == 0)
        *stored += (uint64_t)sqlite3_changes(q->db);
    return rc;
}

static int write_row(struct sq *q, struct kh_batch *b, const struct kh_report *r,
                     const struct kh_row *row, const char **err)
{
    sqlite3_stmt *st = q->insert[row->table];
    const struct kh_scope_desc *sc = kh_schema_scope(row->table);
    int i = 1;
    for (size_t c = 0; c < sc->ncols; c++) {
        struct kh_value v = kh_report_common_value(r, row, (int)sc->cols[c].src);
        bind_value(st, i++, &v);
    }
    size_t nm = kh_stats_tables[row->table].nmembers;
    for (size_t m = 0; m < nm; m++)
        bind_value(st, i++, &row->vals[m]);
    if (kh_schema_has_extra(row->table))
        bind_text(st, i, &row->extra);
    return insert(q, st, err, kh_stats_tables[row->table].table, &b->rows_stored[row->table]);
}

/* What the insert of a report's sora_report or sora_webhook row says: new, or a
 * redelivery. */
static void count_report(struct kh_batch *b, const struct kh_report *r, int t, uint64_t inserted)
{
    if (t == kh_env_report && inserted > 0)
        b->reports_stored[r->kind == KH_REPORT_NODE]++;
    else if (t == kh_env_report)
        b->reports_duplicate++;
    else if (t == kh_env_webhook && inserted > 0)
        b->webhooks_stored[r->kind == KH_REPORT_EVENT_WEBHOOK]++;
    else if (t == kh_env_webhook)
        b->webhooks_duplicate++;
}

/* The report's rows in the envelope tables: its connection's (or node's) upsert and its
 * sora_report row, or a webhook's sora_webhook row; the insert of either says whether the
 * report was new or a redelivery. */
static int write_envelope(struct sq *q, struct kh_batch *b, const struct kh_report *r,
                          const char **err)
{
    int rc = 0;
    for (size_t t = 0; rc == 0 && t < kh_env_ntables; t++) {
        if (!kh_schema_env_applies((int)t, (int)r->kind))
            continue;
        const struct kh_env_table *et = &kh_env_tables[t];
        sqlite3_stmt *st = q->env[t];
        for (size_t c = 0; c < et->ncols; c++) {
            struct kh_value v = kh_report_common_value(r, NULL, (int)et->cols[c].src);
            bind_value(st, (int)c + 1, &v);
        }
        uint64_t inserted = 0;
        rc = insert(q, st, err, et->table, &inserted);
        if (rc == 0)
            count_report(b, r, (int)t, inserted);
    }
    return rc;
}

/* The rows a webhook carries, each upserted by its table's merge rules. */
static int write_env_rows(struct sq *q, const struct kh_report *r, const char **err)
{
    int rc = 0;
    for (const struct kh_env_row *row = r->env_rows; rc == 0 && row; row = row->next) {
        const struct kh_env_table *et = &kh_env_tables[row->table];
        sqlite3_stmt *st = q->env[row->table];
        for (size_t c = 0; c < et->ncols; c++)
            bind_value(st, (int)c + 1, &row->vals[c]);
        rc = step(q, st, err, et->table);
    }
    return rc;
}

/* --- retention ---------------------------------------------------------------------------- */

/* The time series, i from 0: every stats table, then the envelope tables that are one (the
 * set PostgreSQL's retention and TimescaleDB's hypertables cover); NULL past the last. */
static const char *time_series(size_t i)
{
    if (i < kh_stats_ntables)
        return kh_stats_tables[i].table;
    for (size_t t = 0, n = kh_stats_ntables; t < kh_env_ntables; t++)
        if (kh_env_tables[t].segment_by != NULL && n++ == i)
            return kh_env_tables[t].table;
    return NULL;
}

static int prepare_sql(struct sq *q, struct kh_buf *sql, sqlite3_stmt **st, const char **err);

static int retention_prepare(struct sq *q, size_t i, const char **err)
{
    struct sq_retention *rt = &q->ret;
    if (rt->savepoint == NULL &&
        (prepare(q, "SAVEPOINT kh_retention", &rt->savepoint, err) != 0 ||
         prepare(q, "RELEASE kh_retention", &rt->release, err) != 0 ||
         prepare(q, "ROLLBACK TO kh_retention", &rt->rollback_to, err) != 0))
        return KH_EIO;
    if (rt->del[i] != NULL)
        return 0;
    struct kh_buf sql;
    kh_buf_init(&sql, 4096);
    const char *t = time_series(i);
    int rc = kh_buf_printf(&sql, "DELETE FROM \"%s\" WHERE rowid IN (SELECT rowid FROM \"%s\" "
                                 "WHERE \"time\" < ?1 ORDER BY \"time\" LIMIT %d)",
                           t, t, RETENTION_CHUNK);
    rc = rc ? rc : prepare_sql(q, &sql, &rt->del[i], err);
    kh_buf_cleanup(&sql);
    if (rc == KH_ENOSPC)
        *err = "out of memory building a statement";
    return rc;
}

/* One DELETE of up to RETENTION_CHUNK old rows of time series i: the rows it deleted, or -1
 * with *err set. */
static int retention_delete(struct sq *q, size_t i, const char **err)
{
    if (retention_prepare(q, i, err) != 0)
        return -1;
    sqlite3_stmt *st = q->ret.del[i];
    sqlite3_bind_text(st, 1, q->ret.cutoff, KH_TIME_TEXT_LEN, SQLITE_STATIC);
    if (step(q, st, err, time_series(i)) != 0)
        return -1;
    return sqlite3_changes(q->db);
}

/* Whether a pass is running, or starts now (its cutoff fixed for the whole pass). */
static bool retention_due(struct sq *q)
{
    struct sq_retention *rt = &q->ret;
    if (!rt->on || rt->days <= 0)
        return false;
    uint64_t now = kh_mono_usec();
    if (rt->active || now < rt->next_due)
        return rt->active;
    kh_time_format(kh_time_now_usec() - rt->days * 86400 * 1000000, rt->cutoff);
    rt->active = true;
    rt->table = 0;
    rt->deleted = 0;
    rt->started = rt->last_progress = now;
    struct kh_logline l;
    if (kh_log_begin(&l, KH_LOG_DEBUG, "retention pass started")) {
        kh_log_str(&l, "storage", "sqlite");
        kh_log_str(&l, "older_than", rt->cutoff);
        kh_log_end(&l);
    }
    return true;
}

/* The pass's step in the batch's transaction: old rows deleted, table by table, until the
 * budget is spent or every table is done. A failure undoes the step alone (the batch goes
 * on) and ends the pass until the next interval. */
static bool step_more(const struct sq_retention *rt, uint64_t spent, uint64_t written)
{
    return spent < RETENTION_BUDGET_USEC ||
           (spent < RETENTION_MAX_USEC && rt->uncommitted < 2 * written);
}

static void retention_step(struct sq *q, uint64_t written)
{
    struct sq_retention *rt = &q->ret;
    uint64_t start = kh_mono_usec();
    const char *err = NULL;
    rt->table_before = rt->table;
    rt->uncommitted = 0;
    if (retention_prepare(q, 0, &err) != 0 || step(q, rt->savepoint, &err, "savepoint") != 0)
        goto failed;
    while (time_series(rt->table) != NULL && step_more(rt, kh_mono_usec() - start, written)) {
        int n = retention_delete(q, rt->table, &err);
        if (n < 0) {
            const char *ignored;
            step(q, rt->rollback_to, &ignored, "rollback to");
            step(q, rt->release, &ignored, "release");
            goto failed;
        }
        rt->uncommitted += (uint64_t)n;
        if (n < RETENTION_CHUNK)
            rt->table++;
    }
    if (step(q, rt->release, &err, "release") == 0)
        return;
failed:
    kh_log(KH_LOG_WARN, "retention pass failed", err ? err : "unknown error");
    rt->uncommitted = 0;
    rt->active = false;
    rt->next_due = kh_mono_usec() + (uint64_t)rt->interval_usec;
}

static int64_t pragma_int(struct sq *q, const char *sql)
{
    sqlite3_stmt *st;
    int64_t v = -1;
    if (sqlite3_prepare_v2(q->db, sql, -1, &st, NULL) != SQLITE_OK)
        return -1;
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static void retention_log(struct sq *q, const char *msg, enum kh_log_level level,
                          uint64_t now)
{
    struct sq_retention *rt = &q->ret;
    struct kh_logline l;
    if (!kh_log_begin(&l, level, msg))
        return;
    kh_log_str(&l, "storage", "sqlite");
    kh_log_int(&l, "deleted_rows", (int64_t)rt->deleted);
    kh_log_dbl(&l, "seconds", (double)(now - rt->started) / 1e6);
    kh_log_int(&l, "retention_days", rt->days);
    if (time_series(rt->table) != NULL)
        kh_log_str(&l, "table", time_series(rt->table));
    else /* pages the deletes freed, reused by new rows before the file grows */
        kh_log_int(&l, "free_pages", pragma_int(q, "PRAGMA freelist_count"));
    kh_log_end(&l);
}

/* After the batch's commit (ok) or rollback: what the step deleted counts, and a pass
 * whose last table is done is logged and ends. */
static void retention_after(struct sq *q, bool ok)
{
    struct sq_retention *rt = &q->ret;
    if (!rt->active)
        return;
    if (!ok) {
        rt->table = rt->table_before; /* its deletes were rolled back with the batch */
        return;
    }
    rt->deleted += rt->uncommitted;
    kh_metrics_retention_rows(rt->uncommitted);
    rt->uncommitted = 0;
    uint64_t now = kh_mono_usec();
    if (time_series(rt->table) != NULL) {
        if (now - rt->last_progress >= RETENTION_PROGRESS_USEC) {
            rt->last_progress = now;
            retention_log(q, "retention progress", KH_LOG_INFO, now);
        }
        return;
    }
    retention_log(q, "retention pass", rt->deleted ? KH_LOG_INFO : KH_LOG_DEBUG, now);
    kh_metrics_retention_pass(0, now - rt->started, (uint64_t)(kh_time_now_usec() / 1000000));
    rt->active = false;
    rt->next_due = rt->started + (uint64_t)rt->interval_usec;
}

/* Serve: retention runs from the first batch on. */
static int sq_start(struct kh_store *s)
{
    struct sq *q = s->impl;
    size_t n = 0;
    while (time_series(n) != NULL)
        n++;
    q->ret.del = calloc(n, sizeof(*q->ret.del));
    if (q->ret.del == NULL)
        return KH_ENOMEM;
    q->ret.on = true;
    q->ret.next_due = kh_mono_usec();
    return 0;
}

static uint64_t sq_reconnects(struct kh_store *s) { return 0; }

static int sq_writers(struct kh_store *s) { return 1; }

static int sq_write(struct kh_store *s, int slot, struct kh_batch *b, const char **err)
{
    struct sq *q = s->impl;
    kh_batch_reset_counts(b);
    int rc = step(q, q->begin, err, "begin");
    for (size_t i = 0; rc == 0 && i < b->nreports; i++) {
        const struct kh_report *r = b->reports[i];
        rc = write_envelope(q, b, r, err);
        if (rc == 0)
            rc = write_env_rows(q, r, err);
        for (const struct kh_row *row = r->rows; rc == 0 && row; row = row->next)
            if (kh_row_written(row))
                rc = write_row(q, b, r, row, err);
        b->results[i] = 0;
    }
    bool retention = rc == 0 && retention_due(q);
    if (retention) {
        uint64_t written = 0;
        for (size_t t = 0; t < kh_stats_ntables; t++)
            written += b->rows_stored[t];
        retention_step(q, written);
    }
    if (rc == 0)
        rc = step(q, q->commit, err, "commit");
    if (rc != 0) {
        const char *ignored;
        if (!sqlite3_get_autocommit(q->db))
            step(q, q->rollback, &ignored, "rollback");
        kh_batch_reset_counts(b); /* rolled back: nothing stored */
    }
    if (retention)
        retention_after(q, rc == 0);
    atomic_store(&q->healthy, rc == 0);
    return rc;
}

/* --- reading back ------------------------------------------------------------------------ */

/* A cell as a value: its text (or blob) copied into the arena when there is one, else
 * pointing into the statement (valid until its next step). */
static int cell(sqlite3_stmt *st, int i, enum kh_coltype want, struct kh_arena *a,
                struct kh_value *v)
{
    *v = (struct kh_value){.type = 0};
    int type = sqlite3_column_type(st, i);
    if (type == SQLITE_NULL)
        return 0;
    if (want == KH_COL_BOOL) {
        v->type = KH_COL_BOOL;
        v->u.b = sqlite3_column_int64(st, i) != 0;
    } else if (want == KH_COL_INT || (want == 0 && type == SQLITE_INTEGER)) {
        v->type = KH_COL_INT;
        v->u.i = sqlite3_column_int64(st, i);
    } else if (want == KH_COL_REAL || (want == 0 && type == SQLITE_FLOAT)) {
        v->type = KH_COL_REAL;
        v->u.d = sqlite3_column_double(st, i);
    } else {
        const char *s = (const char *)sqlite3_column_text(st, i);
        int n = sqlite3_column_bytes(st, i);
        if (s == NULL)
            return KH_ENOMEM;
        v->type = want ? (uint8_t)want : KH_COL_TEXT;
        v->len = (uint32_t)n;
        v->u.s = a ? kh_arena_strndup(a, s, (size_t)n) : s;
        if (v->u.s == NULL)
            return KH_ENOMEM;
    }
    return 0;
}

static int prepare_sql(struct sq *q, struct kh_buf *sql, sqlite3_stmt **st, const char **err)
{
    if (kh_buf_append(sql, "", 1) != 0) {
        *err = "out of memory building a statement";
        return KH_ENOMEM;
    }
    return prepare(q, sql->data, st, err);
}

/* SELECT "time" FROM anchor WHERE connection_id = ?1 AND time in [?3, ?2) latest first;
 * SELECT its row columns FROM t WHERE connection_id = ?1 AND time = ?2. */
static int latest_statements(struct sq *q, int anchor, int t, const char **err)
{
    struct kh_buf sql;
    kh_buf_init(&sql, 1u << 20);
    int rc = 0;
    if (q->anchor[anchor] == NULL) {
        rc = kh_buf_printf(&sql, "SELECT \"time\" FROM \"%s\" WHERE \"connection_id\" = ?1 "
                                 "AND \"time\" < ?2 AND \"time\" >= ?3 ORDER BY \"time\" "
                                 "DESC LIMIT 1",
                           kh_stats_tables[anchor].table);
        rc = rc ? rc : prepare_sql(q, &sql, &q->anchor[anchor], err);
    }
    if (rc == 0 && t >= 0 && q->at_time[t] == NULL) {
        kh_buf_reset(&sql);
        rc = kh_buf_printf(&sql, "SELECT ");
        rc = rc ? rc : kh_schema_select_columns(t, NULL, &sql);
        rc = rc ? rc : kh_buf_printf(&sql, " FROM \"%s\" WHERE \"connection_id\" = ?1 AND "
                                           "\"time\" = ?2", kh_stats_tables[t].table);
        rc = rc ? rc : prepare_sql(q, &sql, &q->at_time[t], err);
    }
    kh_buf_cleanup(&sql);
    if (rc == KH_ENOSPC)
        *err = "out of memory building a statement";
    return rc;
}

/* A row of table t from at_time's current result, in the arena. */
static int read_row(sqlite3_stmt *st, int t, struct kh_arena *a, struct kh_row **out)
{
    size_t nm = kh_stats_tables[t].nmembers;
    struct kh_row *row = kh_arena_alloc(a, sizeof(*row));
    struct kh_value *vals = kh_arena_alloc(a, (nm ? nm : 1) * sizeof(*vals));
    if (row == NULL || vals == NULL)
        return KH_ENOMEM;
    *row = (struct kh_row){.table = t, .vals = vals};
    struct kh_value v[3];
    int rc = cell(st, 0, KH_COL_TEXT, a, &v[0]);
    rc |= cell(st, 1, KH_COL_TEXT, a, &v[1]);
    rc |= cell(st, 2, KH_COL_REAL, a, &v[2]);
    row->stats_type = (struct kh_str){v[0].type ? v[0].u.s : "", v[0].len};
    row->stats_id = (struct kh_str){v[1].type ? v[1].u.s : "", v[1].len};
    row->stats_timestamp = v[2].type ? v[2].u.d : 0;
    for (size_t m = 0; rc == 0 && m < nm; m++)
        rc = cell(st, 3 + (int)m, kh_stats_tables[t].members[m].type, a, &vals[m]);
    *out = row;
    return rc ? KH_ENOMEM : 0;
}

/* The rows of table t at time `when` (text) of the connection, appended to *tail. */
static int rows_at(struct sq *q, int t, const struct kh_str *cid, const char *when,
                   struct kh_arena *a, struct kh_row ***tail, const char **err)
{
    sqlite3_stmt *st = q->at_time[t];
    sqlite3_bind_text(st, 1, cid->p, (int)cid->len, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, when, KH_TIME_TEXT_LEN, SQLITE_STATIC);
    int rc = 0, step_rc;
    while (rc == 0 && (step_rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct kh_row *row;
        rc = read_row(st, t, a, &row);
        if (rc == 0) {
            **tail = row;
            *tail = &row->next;
        }
    }
    if (rc == 0 && step_rc != SQLITE_DONE) {
        *err = set_err(q, "reading back");
        rc = KH_ERETRY;
    }
    if (rc == KH_ENOMEM)
        *err = "out of memory reading back";
    sqlite3_reset(st);
    return rc;
}

/* Query i: the anchor's latest time in the window, then each table's rows at it. */
static int latest_one(struct sq *q, struct kh_latest_query *lq, size_t i, const char **err)
{
    char before[KH_TIME_TEXT_LEN + 1], after[KH_TIME_TEXT_LEN + 1];
    kh_time_format(lq->before_usec[i], before);
    kh_time_format(kh_latest_after(lq, i), after);
    sqlite3_stmt *st = q->anchor[lq->anchor];
    const struct kh_str *cid = &lq->connection_ids[i];
    sqlite3_bind_text(st, 1, cid->p, (int)cid->len, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, before, KH_TIME_TEXT_LEN, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, after, KH_TIME_TEXT_LEN, SQLITE_STATIC);
    int step_rc = sqlite3_step(st);
    char when[KH_TIME_TEXT_LEN + 1] = "";
    const char *text = (const char *)sqlite3_column_text(st, 0);
    if (step_rc == SQLITE_ROW && text && sqlite3_column_bytes(st, 0) == KH_TIME_TEXT_LEN)
        memcpy(when, text, KH_TIME_TEXT_LEN + 1);
    sqlite3_reset(st);
    if (step_rc != SQLITE_ROW && step_rc != SQLITE_DONE) {
        *err = set_err(q, "reading back");
        return KH_ERETRY;
    }
    lq->found_usec[i] = 0;
    lq->rows[i] = NULL;
    const char *why;
    if (when[0] == '\0' ||
        kh_time_parse_rfc3339(when, KH_TIME_TEXT_LEN, &lq->found_usec[i], &why) != 0)
        return 0; /* no earlier report (or a time kohaku did not write) */
    struct kh_row **tail = &lq->rows[i];
    int rc = 0;
    for (size_t k = 0; rc == 0 && k < lq->ntables; k++)
        rc = rows_at(q, lq->tables[k], cid, when, lq->arena, &tail, err);
    return rc;
}

static int sq_latest(struct kh_store *s, int slot, struct kh_latest_query *lq, const char **err)
{
    struct sq *q = s->impl;
    int rc = latest_statements(q, lq->anchor, -1, err);
    for (size_t k = 0; rc == 0 && k < lq->ntables; k++)
        rc = latest_statements(q, lq->anchor, lq->tables[k], err);
    for (size_t i = 0; rc == 0 && i < lq->n; i++)
        rc = latest_one(q, lq, i, err);
    return rc;
}

/* SQLite's data_version changes when another connection (another process: a second
 * kohaku, kohaku import) commits to the file, and never for the connection's own commits. */
static bool sq_others_wrote(struct kh_store *s, int slot)
{
    (void)slot;
    struct sq *q = s->impl;
    if (q->data_version == NULL)
        return true;
    int64_t v = -1;
    if (sqlite3_step(q->data_version) == SQLITE_ROW)
        v = sqlite3_column_int64(q->data_version, 0);
    sqlite3_reset(q->data_version);
    bool changed = v < 0 || v != q->last_data_version;
    q->last_data_version = v;
    return changed;
}

/* Stops a query past its deadline (sqlite3_progress_handler: nonzero interrupts). */
static int past_deadline(void *arg)
{
    const struct sq *q = arg;
    return kh_mono_usec() > q->deadline;
}

static void bind_params(sqlite3_stmt *st, const struct kh_value *params, int n)
{
    for (int i = 0; i < n; i++)
        bind_value(st, i + 1, &params[i]);
}

static int sq_query(struct kh_store *s, const char *sql, const struct kh_value *params,
                    int nparams, unsigned flags, kh_store_row_fn fn, void *arg,
                    const char **err)
{
    (void)flags; /* every statement is prepared, so planned, at its call */
    struct sq *q = s->impl;
    if (q->rdb == NULL &&
        sqlite3_open_v2(q->path, &q->rdb, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) !=
            SQLITE_OK) {
        snprintf(q->err, sizeof(q->err), "%s: %s", q->path,
                 q->rdb ? sqlite3_errmsg(q->rdb) : "cannot open");
        sqlite3_close(q->rdb);
        q->rdb = NULL;
        *err = q->err;
        return KH_EIO;
    }
    sqlite3_busy_timeout(q->rdb, 5000);
    q->deadline = kh_mono_usec() + (uint64_t)q->query_timeout_usec;
    sqlite3_progress_handler(q->rdb, 1000, past_deadline, q);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(q->rdb, sql, -1, &st, NULL) != SQLITE_OK) {
        snprintf(q->err, sizeof(q->err), "query: %s", sqlite3_errmsg(q->rdb));
        *err = q->err;
        return KH_EIO;
    }
    bind_params(st, params, nparams);
    int ncols = sqlite3_column_count(st), rc = 0, step_rc = SQLITE_DONE;
    struct kh_value cells[KH_STORE_MAX_CELLS];
    if (ncols > KH_STORE_MAX_CELLS) {
        snprintf(q->err, sizeof(q->err), "query: %d columns, more than %d", ncols,
                 KH_STORE_MAX_CELLS);
        *err = q->err;
        rc = KH_EINVAL;
    }
    while (rc == 0 && (step_rc = sqlite3_step(st)) == SQLITE_ROW) {
        for (int c = 0; rc == 0 && c < ncols; c++)
            rc = cell(st, c, 0, NULL, &cells[c]);
        rc = rc ? rc : fn(arg, cells, ncols);
    }
    if (rc == 0 && step_rc == SQLITE_INTERRUPT) {
        snprintf(q->err, sizeof(q->err), "query: stopped after query_timeout (%lld ms)",
                 (long long)(q->query_timeout_usec / 1000));
        *err = q->err;
        rc = KH_EIO;
    } else if (rc == 0 && step_rc != SQLITE_DONE) {
        snprintf(q->err, sizeof(q->err), "query: %s", sqlite3_errmsg(q->rdb));
        *err = q->err;
        rc = KH_EIO;
    }
    sqlite3_finalize(st);
    return rc;
}

static bool sq_healthy(struct kh_store *s)
{
    struct sq *q = s->impl;
    return atomic_load(&q->healthy);
}

static void sq_close(struct kh_store *s)
{
    struct sq *q = s->impl;
    if (q == NULL)
        return;
    if (q->insert)
        for (size_t t = 0; t < kh_stats_ntables; t++)
            sqlite3_finalize(q->insert[t]);
    free(q->insert);
    if (q->env)
        for (size_t t = 0; t < kh_env_ntables; t++)
            sqlite3_finalize(q->env[t]);
    free(q->env);
    for (size_t t = 0; q->anchor && t < kh_stats_ntables; t++) {
        sqlite3_finalize(q->anchor[t]);
        sqlite3_finalize(q->at_time[t]);
    }
    free(q->anchor);
    free(q->at_time);
    for (size_t i = 0; q->ret.del && time_series(i) != NULL; i++)
        sqlite3_finalize(q->ret.del[i]);
    free(q->ret.del);
    sqlite3_finalize(q->ret.savepoint);
    sqlite3_finalize(q->ret.release);
    sqlite3_finalize(q->ret.rollback_to);
    sqlite3_finalize(q->begin);
    sqlite3_finalize(q->commit);
    sqlite3_finalize(q->rollback);
    sqlite3_finalize(q->data_version);
    sqlite3_close(q->db);
    sqlite3_close(q->rdb);
    free(q->path);
    free(q);
    s->impl = NULL;
}

const struct kh_store_ops kh_store_sqlite_ops = {
    .name = "sqlite",
    .dialect = KH_DIALECT_SQLITE,
    .open = sq_open,
    .migrate = sq_migrate,
    .start = sq_start,
    .writers = sq_writers,
    .write = sq_write,
    .latest = sq_latest,
    .others_wrote = sq_others_wrote,
    .query = sq_query,
    .healthy = sq_healthy,
    .reconnects = sq_reconnects,
    .close = sq_close,
};

const char *kh_store_sqlite_library(void)
{
    static char v[32];
    snprintf(v, sizeof(v), "SQLite %s", sqlite3_libversion());
    return v;
}
