/*
 * pg_conn: the postgres backend's connections. Owns connecting (libpq settings, notices into
 * the log), each writer's reconnect on demand, the health flag, and the maintenance thread:
 * it (re)connects with jittered exponential backoff while the database is away, applies the
 * schema on first contact (pg_schema.c), and runs kohaku's retention where TimescaleDB's
 * policies do not (with partitions, pg_partition.c's: partitions created ahead, old ones
 * dropped). It writes no report data; retention deletes by time only, from tables the schema
 * names (or their partitions).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/errors.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/timeutil.h"
#include "sora/schema.h"
#include "store/pg_internal.h"

#define RETENTION_BATCH 5000
#define BACKOFF_FIRST_MS 200
#define BACKOFF_MAX_MS 30000
#define CONTACT_EVERY_MS 2000

void kh_pg_error(char *dst, size_t len, const char *what, PGconn *c, PGresult *r)
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

PGconn *kh_pg_connect(struct kh_pg *pg, const char *uri, const char *app, char *err,
                      size_t errlen)
{
    const char *keys[6], *vals[6];
    int n = 0;
    keys[n] = "application_name", vals[n++] = app; /* the URI's own value overrides it */
    keys[n] = "connect_timeout", vals[n++] = "5"; /* the URI's own value overrides it */
    keys[n] = "dbname", vals[n++] = uri;
    if (pg->ca[0])
        keys[n] = "sslrootcert", vals[n++] = pg->ca;
    keys[n] = NULL, vals[n] = NULL;
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (c == NULL) {
        snprintf(err, errlen, "connect: out of memory");
        return NULL;
    }
    if (PQstatus(c) != CONNECTION_OK) {
        kh_pg_error(err, errlen, "connect", c, NULL);
        PQfinish(c);
        return NULL;
    }
    PQsetNoticeReceiver(c, on_notice, NULL);
    return c;
}

void kh_pg_drop_conn(PGconn **c)
{
    if (*c)
        PQfinish(*c);
    *c = NULL;
}

/* A failed statement's code: class 40, transaction rollback (a deadlock, a serialization
 * failure), is KH_ERETRY, as the same statements are expected to succeed when run again. */
static int failed(PGconn *c, PGresult *r, char *err, size_t errlen)
{
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    kh_pg_error(err, errlen, "query", c, r);
    return state && strncmp(state, "40", 2) == 0 ? KH_ERETRY : KH_EIO;
}

int kh_pg_exec(PGconn *c, const char *sql, char *err, size_t errlen)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    int rc = (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) ? 0 : failed(c, r, err, errlen);
    PQclear(r);
    return rc;
}

int kh_pg_query_int(PGconn *c, const char *sql, long long *out, char *err, size_t errlen)
{
    PGresult *r = PQexec(c, sql);
    int rc = 0;
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        rc = failed(c, r, err, errlen);
    } else if (PQntuples(r) != 1) {
        kh_pg_error(err, errlen, "query", c, r);
        rc = KH_EIO;
    } else {
        *out = atoll(PQgetvalue(r, 0, 0));
    }
    PQclear(r);
    return rc;
}

/* --- health ------------------------------------------------------------------------------- */

static void wake_maint(struct kh_pg *pg)
{
    pthread_mutex_lock(&pg->mu);
    pg->wake = true;
    pthread_cond_signal(&pg->cv);
    pthread_mutex_unlock(&pg->mu);
}

void kh_pg_mark_down(struct kh_pg *pg, const char *why)
{
    if (atomic_exchange(&pg->healthy, false)) {
        kh_log(KH_LOG_ERROR, "postgres unavailable", why);
        wake_maint(pg);
    }
}

/* A writer connects only while the maintenance thread says the database is there, so that
 * writers do not pile up connection attempts on a database that is away. */
int kh_pg_ensure_conn(struct kh_pg_slot *s)
{
    struct kh_pg *pg = s->pg;
    if (s->conn && PQstatus(s->conn) == CONNECTION_OK)
        return 0;
    kh_pg_drop_conn(&s->conn);
    if (!atomic_load(&pg->healthy)) {
        snprintf(s->err, sizeof(s->err), "postgres unavailable");
        return KH_ERETRY;
    }
    s->conn = kh_pg_connect(pg, pg->uri, KH_PG_APP, s->err, sizeof(s->err));
    if (s->conn == NULL || kh_pg_prepare_slot(s) != 0) {
        kh_pg_drop_conn(&s->conn);
        kh_pg_mark_down(pg, s->err);
        return KH_ERETRY;
    }
    return 0;
}

/* --- retention ---------------------------------------------------------------------------- */

/* One retention statement on one table: a batch of old rows deleted (plain PostgreSQL) or
 * its old chunks dropped (timescaledb-apache, where TimescaleDB's policies are not there).
 * Citus: every old row at once, each shard deleting its own in parallel (a batch by ctid is
 * not plannable on a distributed table). The table name comes from the schema; the age is
 * a parameter. */
static int retention_sql(const struct kh_pg *pg, const char *table, struct kh_buf *b)
{
    if (pg->ts_mode == KH_PG_TS_APACHE)
        return kh_buf_printf(b, "SELECT count(*) FROM drop_chunks('\"%s\"', older_than => "
                                "$1::interval)",
                             table);
    if (pg->citus)
        return kh_buf_printf(b, "DELETE FROM \"%s\" WHERE \"time\" < now() - $1::interval",
                             table);
    return kh_buf_printf(b, "DELETE FROM \"%s\" WHERE ctid = ANY(ARRAY(SELECT ctid FROM \"%s\" "
                            "WHERE \"time\" < now() - $1::interval LIMIT %d))",
                         table, table, RETENTION_BATCH);
}

/* The rows deleted or chunks dropped, or -1 with pg->merr set. */
static long long retention_step(struct kh_pg *pg, const char *table, const char *interval)
{
    struct kh_buf sql;
    kh_buf_init(&sql, 4096);
    if (retention_sql(pg, table, &sql) != 0) {
        kh_buf_cleanup(&sql);
        snprintf(pg->merr, sizeof(pg->merr), "retention: out of memory");
        return -1;
    }
    const char *params[1] = {interval};
    PGresult *r = PQexecParams(pg->mconn, sql.data, 1, NULL, params, NULL, NULL, 0);
    kh_buf_cleanup(&sql);
    long long n = -1;
    if (PQresultStatus(r) == PGRES_COMMAND_OK)
        n = atoll(PQcmdTuples(r));
    else if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
        n = atoll(PQgetvalue(r, 0, 0));
    else
        kh_pg_error(pg->merr, sizeof(pg->merr), "retention", pg->mconn, r);
    PQclear(r);
    return n;
}

static bool quitting(struct kh_pg *pg)
{
    pthread_mutex_lock(&pg->mu);
    bool quit = pg->quit;
    pthread_mutex_unlock(&pg->mu);
    return quit;
}

/* One table's old rows, RETENTION_BATCH at a time (chunks go at once), added to *total.
 * False when a statement failed (logged) or the backend is stopping. */
static bool retention_table(struct kh_pg *pg, const char *table, const char *interval,
                            long long *total)
{
    for (;;) {
        long long n = retention_step(pg, table, interval);
        if (n < 0) {
            kh_log(KH_LOG_WARN, "retention pass failed", pg->merr);
            return false;
        }
        *total += n;
        if (pg->ts_mode == KH_PG_TS_APACHE || pg->citus || n < RETENTION_BATCH)
            return true;
        if (quitting(pg))
            return false;
    }
}

/* What a pass did, for its log line and the metrics. */
struct pass {
    long long deleted, dropped, dropped_rows, created, columnar;
};

/* A partitioned table: partitions ahead, then (retention_days > 0) its old partitions
 * dropped whole and old rows deleted from the partitions no drop can take (the one of all
 * times before the conversion, the DEFAULT one). False when a step failed (logged). */
static bool partitioned_table(struct kh_pg *pg, const char *table, const char *interval,
                              struct pass *p)
{
    int made = 0;
    /* once more at once: a row a writer put in the DEFAULT partition for the interval being
     * made, after it was looked at, fails the new partition; the second try moves it */
    if (kh_pg_partitions_ahead(pg, table, &made) != 0 &&
        (PQstatus(pg->mconn) != CONNECTION_OK || kh_pg_partitions_ahead(pg, table, &made) != 0)) {
        kh_log(KH_LOG_WARN, "creating partitions failed", pg->merr);
        return false;
    }
    p->created += made;
    if (pg->retention_days <= 0)
        return true;
    if (kh_pg_partitions_drop(pg, table, interval, &p->dropped, &p->dropped_rows) != 0) {
        kh_log(KH_LOG_WARN, "retention pass failed", pg->merr);
        return false;
    }
    char names[2][64];
    int n = kh_pg_partitions_unbounded(pg, table, names);
    if (n < 0)
        kh_log(KH_LOG_WARN, "retention pass failed", pg->merr);
    for (int i = 0; i < n; i++)
        if (!retention_table(pg, names[i], interval, &p->deleted))
            return false;
    return n >= 0;
}

static void log_pass(const struct kh_pg *pg, const struct pass *p, uint64_t usec)
{
    struct kh_logline l;
    bool did = p->deleted || p->dropped || p->created || p->columnar;
    if (!kh_log_begin(&l, did ? KH_LOG_INFO : KH_LOG_DEBUG, "retention pass"))
        return;
    kh_log_str(&l, "storage", "postgres");
    if (pg->ts_mode == KH_PG_TS_APACHE) {
        kh_log_int(&l, "dropped_chunks", p->deleted);
    } else {
        kh_log_int(&l, "deleted_rows", p->deleted);
    }
    if (pg->partitioned) {
        kh_log_int(&l, "dropped_partitions", p->dropped);
        if (!pg->citus) /* Citus: the coordinator's partitions hold no rows to count */
            kh_log_int(&l, "dropped_rows_estimate", p->dropped_rows);
        kh_log_int(&l, "created_partitions", p->created);
    }
    if (pg->columnar && pg->columnar_days > 0)
        kh_log_int(&l, "columnar_partitions", p->columnar);
    kh_log_dbl(&l, "seconds", (double)usec / 1e6);
    kh_log_int(&l, "retention_days", pg->retention_days);
    kh_log_end(&l);
}

static void retention_pass(struct kh_pg *pg)
{
    char interval[32];
    snprintf(interval, sizeof(interval), "%lld days", (long long)pg->retention_days);
    struct pass p = {0};
    uint64_t start = kh_mono_usec();
    struct kh_pg_ts_table ts;
    bool ok = true;
    for (size_t t = 0; ok && kh_pg_time_series(t, &ts); t++)
        ok = pg->partitioned ? partitioned_table(pg, ts.table, interval, &p)
                             : retention_table(pg, ts.table, interval, &p.deleted);
    /* Citus: the stats tables' old partitions to columnar (quality and node series
     * included); sora_report, small and written with ON CONFLICT ... RETURNING, stays heap */
    for (size_t t = 0; ok && pg->columnar && pg->columnar_days > 0 && t < kh_stats_ntables;
         t++) {
        kh_pg_time_series(t, &ts);
        if (kh_pg_citus_columnar(pg, ts.table, &p.columnar) != 0) {
            kh_log(KH_LOG_WARN, "converting partitions to columnar failed", pg->merr);
            ok = false;
        }
    }
    bool chunks = pg->ts_mode == KH_PG_TS_APACHE;
    kh_metrics_retention_rows(chunks ? 0 : (uint64_t)p.deleted);
    if (!ok)
        return;
    uint64_t usec = kh_mono_usec() - start;
    kh_metrics_retention_pass((uint64_t)(chunks ? p.deleted : p.dropped), usec,
                              (uint64_t)(kh_time_now_usec() / 1000000));
    log_pass(pg, &p, usec);
}

/* --- the maintenance thread --------------------------------------------------------------- */

/* Citus: the coordinator answering is not enough, every write needs the workers that hold
 * its shards. False, with merr set, when one does not answer. */
static bool citus_workers_reachable(struct kh_pg *pg)
{
    long long away = 0;
    if (kh_pg_query_int(pg->mconn,
                        "SELECT count(*) FROM run_command_on_workers('SELECT 1') WHERE NOT success",
                        &away, pg->merr, sizeof(pg->merr)) != 0) {
        kh_pg_drop_conn(&pg->mconn);
        return false;
    }
    if (away > 0)
        snprintf(pg->merr, sizeof(pg->merr), "citus: %lld worker node(s) not answering", away);
    return away == 0;
}

/* One contact attempt: connect (if needed), migrate (once), check the connection (and with
 * Citus, the workers). */
static bool maint_contact(struct kh_pg *pg)
{
    if (pg->mconn && PQstatus(pg->mconn) != CONNECTION_OK)
        kh_pg_drop_conn(&pg->mconn);
    if (pg->mconn == NULL &&
        (pg->mconn = kh_pg_connect(pg, pg->uri, KH_PG_APP, pg->merr, sizeof(pg->merr))) == NULL)
        return false;
    if (!atomic_load(&pg->migrated)) {
        if (kh_pg_migrate_conn(pg, pg->mconn, 0, pg->merr, sizeof(pg->merr)) != 0) {
            kh_pg_drop_conn(&pg->mconn);
            return false;
        }
        atomic_store(&pg->migrated, true);
        kh_pg_log_schema_ready(pg);
    }
    if (kh_pg_exec(pg->mconn, "SELECT 1", pg->merr, sizeof(pg->merr)) != 0) {
        kh_pg_drop_conn(&pg->mconn);
        return false;
    }
    return !pg->citus || citus_workers_reachable(pg);
}

struct maint {
    uint64_t backoff_ms;     /* the next wait after a failed contact, before jitter */
    uint64_t next_retention; /* kh_mono_usec() when the next retention pass is due */
};

/* Jittered exponential backoff: 75%..125% of the step, the step doubling up to 30 s. */
static uint64_t backoff(struct maint *m)
{
    uint64_t wait_ms = m->backoff_ms * 3 / 4 + (uint64_t)rand() % (m->backoff_ms / 2 + 1);
    if (m->backoff_ms < BACKOFF_MAX_MS)
        m->backoff_ms *= 2;
    return wait_ms;
}

/* One round: contact and the health it says, then retention when it is due (plain
 * PostgreSQL and timescaledb-apache; TimescaleDB's own policy otherwise). The wait before
 * the next round, in ms. */
static uint64_t maint_round(struct kh_pg *pg, struct maint *m)
{
    if (!maint_contact(pg)) {
        if (atomic_exchange(&pg->healthy, false) || m->backoff_ms == BACKOFF_FIRST_MS)
            kh_log(KH_LOG_ERROR, "postgres unavailable, retrying", pg->merr);
        return backoff(m);
    }
    if (!atomic_exchange(&pg->healthy, true)) {
        kh_log(KH_LOG_INFO, "postgres available", NULL);
        atomic_fetch_add(&pg->reconnects, 1);
    }
    m->backoff_ms = BACKOFF_FIRST_MS;
    if (pg->ts_mode != KH_PG_TS_FULL && (pg->retention_days > 0 || pg->partitioned) &&
        kh_mono_usec() >= m->next_retention) {
        retention_pass(pg);
        m->next_retention = kh_mono_usec() + (uint64_t)pg->retention_interval * 1000000;
        if (PQstatus(pg->mconn) != CONNECTION_OK) /* lost during the pass: say so */
            kh_pg_mark_down(pg, pg->merr);
    }
    return CONTACT_EVERY_MS;
}

/* Waits wait_ms with pg->mu held, or less when woken (a writer lost the database) or told
 * to quit. */
static void wait_locked(struct kh_pg *pg, uint64_t wait_ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += (time_t)(wait_ms / 1000);
    until.tv_nsec += (long)(wait_ms % 1000) * 1000000;
    if (until.tv_nsec >= 1000000000) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000;
    }
    while (!pg->quit && !pg->wake && pthread_cond_timedwait(&pg->cv, &pg->mu, &until) == 0)
        ;
}

static void *maint_main(void *arg)
{
    struct kh_pg *pg = arg;
    (void)pthread_setname_np(pthread_self(), "kh-pg-maint"); /* only for ps and top */
    struct maint m = {.backoff_ms = BACKOFF_FIRST_MS, .next_retention = kh_mono_usec()};
    pthread_mutex_lock(&pg->mu);
    while (!pg->quit) {
        pg->wake = false;
        pthread_mutex_unlock(&pg->mu);
        uint64_t wait_ms = maint_round(pg, &m);
        pthread_mutex_lock(&pg->mu);
        wait_locked(pg, wait_ms);
    }
    pthread_mutex_unlock(&pg->mu);
    kh_pg_drop_conn(&pg->mconn);
    return NULL;
}

int kh_pg_maint_start(struct kh_pg *pg)
{
    if (pg->maint_started)
        return 0;
    if (pthread_create(&pg->maint, NULL, maint_main, pg) != 0)
        return KH_ENOMEM;
    pg->maint_started = true;
    return 0;
}

void kh_pg_maint_stop(struct kh_pg *pg)
{
    if (!pg->maint_started)
        return;
    pthread_mutex_lock(&pg->mu);
    pg->quit = true;
    pthread_cond_signal(&pg->cv);
    pthread_mutex_unlock(&pg->mu);
    pthread_join(pg->maint, NULL);
    pthread_cond_destroy(&pg->cv);
    pthread_mutex_destroy(&pg->mu);
    pg->maint_started = false;
}
