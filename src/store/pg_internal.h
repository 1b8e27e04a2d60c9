/*
 * pg_internal: what the files of the PostgreSQL / TimescaleDB backend share, and nothing
 * outside the backend may include. The backend is these files, the only users of libpq:
 *   postgres.c       the store interface (kh_store_postgres_ops): open, migrate, close;
 *   pg_conn.c        connections: connect, reconnect with backoff, health, the maintenance
 *                    thread and retention;
 *   pg_schema.c      migrations under the advisory lock, TimescaleDB (pg_timescale decides);
 *   pg_citus.c       Citus mode: the tables distributed when the database has citus;
 *   pg_partition.c   plain PostgreSQL's time partitions: converting, creating ahead, dropping;
 *   pg_statements.c  the SQL text the writers send (from the schema, never from a report) and
 *                    the prepared statements of a writer's connection;
 *   pg_rows.c        a batch's values in the writers' column buffers (pg_encode encodes);
 *   pg_write.c       the write methods (unnest, copy, direct_copy), what they stored, and
 *                    the one-by-one retry that isolates a refused report;
 *   pg_read.c        reading back: the latest rows of a batch's connections (the quality
 *                    stage), and read-only queries on a connection of their own.
 * pg_encode.c and pg_timescale.c are pure and libpq-free.
 *
 * Threads: each slot (and its connection) is used by its writer thread alone; the
 * maintenance thread owns mconn and merr; query's caller qconn and qerr; healthy, migrated,
 * reconnects and lose_acks are atomics any thread reads; mu/cv guard quit and wake. ts_mode
 * is decided by a migration (the main thread, then the maintenance thread) before any writer
 * connects.
 */
#ifndef KH_PG_INTERNAL_H
#define KH_PG_INTERNAL_H

#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/buf.h"
#include "sora/report.h"
#include "store/pg_encode.h"
#include "store/pg_timescale.h"
#include "store/store.h"

/* Column buffers per writer: the most columns a table has, plus room. */
#define KH_PG_MAX_COLS 128
/* Statements the query connection keeps prepared (pg_read.c) at most. */
#define KH_PG_QPREP 128

struct kh_pg;

/* One writer: its connection and the buffers it builds a batch's parameters or COPY data in. */
struct kh_pg_slot {
    struct kh_pg *pg;
    int index;
    PGconn *conn;
    struct kh_buf cols[KH_PG_MAX_COLS]; /* one per column (arrays), or cols[0] (COPY) */
    const char *params[KH_PG_MAX_COLS];
    size_t *order; /* report indexes, for sorted upserts */
    size_t order_cap;
    char err[768];
};

struct kh_pg {
    char *uri, *ca;
    char *read_uri; /* query's (postgres_read_uri), NULL: uri */
    int nslots;
    bool use_copy;
    bool use_direct_copy;
    enum kh_pg_format copy_format; /* KH_PG_BINARY or KH_PG_COPY (text) */
    int64_t chunk_hours, compress_days, retention_days, retention_interval;
    int64_t partition_hours; /* postgres_partition_interval; 0: do not partition */
    bool partitioned;        /* the time series are partitioned: decided by the migration */
    struct kh_pg_slot *slots;
    atomic_bool healthy;
    atomic_bool migrated;
    atomic_int lose_acks; /* fault injection for tests: KOHAKU_FAULT_LOSE_COMMIT_ACKS */
    atomic_uint_fast64_t reconnects;
    enum kh_pg_ts_mode ts_mode; /* decided by the migration (main, then maintenance thread) */
    bool ts_create_failed;      /* CREATE EXTENSION failed: never run again in this process */
    bool ts_warned;             /* TimescaleDB warnings are logged once per process */
    bool citus;                 /* the database has citus: decided by the migration too */
    char citus_version[32];
    int64_t columnar_days; /* citus_columnar_after; 0: never */
    /* Citus, partitioned, and the columnar access method there: partitions may be columnar
     * (converted by this kohaku when columnar_days > 0, or by another one), so the stats
     * inserts do without ON CONFLICT (columnar has no speculative insertion): decided by
     * the migration */
    bool columnar;
    bool columnar_warned; /* the access method missing is logged once per process */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool quit;
    bool wake;
    pthread_t maint;
    bool maint_started;
    PGconn *mconn;
    char merr[768];
    PGconn *qconn; /* query's (pg_read.c), one thread at a time */
    int64_t query_timeout_ms;
    char qerr[768];
    char *qprep[KH_PG_QPREP]; /* the SQL of qconn's prepared statement "kqN", N its index */
    size_t nqprep;
};

/* Some of a batch's reports, written in one transaction. */
struct kh_pg_subset {
    struct kh_report **reports;
    size_t n;
};

/* --- pg_conn.c ---------------------------------------------------------------------------- */

/* "what: the server's primary message" into dst (from r, else from the connection). */
void kh_pg_error(char *dst, size_t len, const char *what, PGconn *c, PGresult *r);
/* The application_name of kohaku's sessions (pg_stat_activity, the server's log) unless the
 * URI names one: its writers' and maintenance's, and the read connection's (the console's
 * and the other questions kh_pg_query asks). */
#define KH_PG_APP "kohaku"
#define KH_PG_APP_READ "kohaku read"
/* A new connection to uri (pg->uri, or pg->read_uri for the read connection) with the
 * backend's settings, named app, or NULL with err set. */
PGconn *kh_pg_connect(struct kh_pg *pg, const char *uri, const char *app, char *err,
                      size_t errlen);
void kh_pg_drop_conn(PGconn **c);
/* Runs sql (any number of statements). 0, or with err set KH_ERETRY when the server rolled
 * the transaction back as a conflict (SQLSTATE class 40: deadlock, serialization), else
 * KH_EIO. */
int kh_pg_exec(PGconn *c, const char *sql, char *err, size_t errlen);
/* The one integer sql returns. 0, or KH_ERETRY or KH_EIO with err set, as kh_pg_exec. */
int kh_pg_query_int(PGconn *c, const char *sql, long long *out, char *err, size_t errlen);
/* The writer's connection, (re)connected and prepared if need be. 0 or KH_ERETRY. */
int kh_pg_ensure_conn(struct kh_pg_slot *s);
/* A writer lost the database: unhealthy until the maintenance thread has contact again. */
void kh_pg_mark_down(struct kh_pg *pg, const char *why);
/* The maintenance thread: start (0 or KH_ENOMEM) and stop (joins it). */
int kh_pg_maint_start(struct kh_pg *pg);
void kh_pg_maint_stop(struct kh_pg *pg);

/* --- pg_citus.c --------------------------------------------------------------------------- */

/* Reads whether the database has citus (pg->citus, pg->citus_version). KH_EIO when the
 * query fails, or when timescaledb is created there as well (refused, err says why). */
int kh_pg_citus_check(struct kh_pg *pg, PGconn *c, char *err, size_t errlen);
/* Distributes the tables not distributed yet (in the caller's transaction), each time series
 * first partitioned by time (pg_partition.c) when partition_hours > 0; when one was, the
 * views of versions 1..upto are made again. 0 or KH_EIO. */
int kh_pg_citus_tables(struct kh_pg *pg, PGconn *c, int upto, char *err, size_t errlen);

/* --- pg_partition.c ------------------------------------------------------------------------ */

/* In the migration's transaction (plain PostgreSQL only): the partition functions, the time
 * series converted when partition_hours > 0 (rows kept; views made again), their DEFAULT
 * partitions and the partitions ahead; pg->partitioned set. 0 or KH_EIO with err. */
int kh_pg_partition_setup(struct kh_pg *pg, PGconn *c, char *err, size_t errlen);
/* On the maintenance connection, each in a transaction of its own with a short lock_timeout:
 * the partitions ahead of table (*made: how many were created); its partitions older than
 * `older` (an interval) dropped, added to *partitions and *rows (the planner's estimate).
 * 0 or KH_EIO with pg->merr. */
int kh_pg_partitions_ahead(struct kh_pg *pg, const char *table, int *made);
int kh_pg_partitions_drop(struct kh_pg *pg, const char *table, const char *older,
                          long long *partitions, long long *rows);
/* The partitions of table retention deletes rows from: the one of all times before the
 * conversion (<table>_unpartitioned), then the DEFAULT one. Their count, or -1. */
int kh_pg_partitions_unbounded(struct kh_pg *pg, const char *table, char names[2][64]);
/* 0 when no time series is partitioned; KH_EIO with err saying why TimescaleDB cannot take
 * the database otherwise. */
int kh_pg_partitions_none(PGconn *c, char *err, size_t errlen);
/* kohaku's views of versions 1..upto made again (after tables were converted). */
int kh_pg_partition_views(PGconn *c, int upto, char *err, size_t errlen);
/* Citus, in the migration's transaction, before the tables are distributed: the partition
 * functions, and (partition_hours > 0) each time series not distributed yet made a parent
 * partitioned by time whose DEFAULT partition is the old table (*converted: how many). */
int kh_pg_citus_partition_tables(struct kh_pg *pg, PGconn *c, int *converted, char *err,
                                 size_t errlen);
/* Citus, after the tables are distributed: pg->partitioned when every time series is
 * partitioned (refused when only some are, or when plain PostgreSQL mode partitioned them),
 * their partitions ahead, and pg->columnar. 0 or KH_EIO with err. */
int kh_pg_citus_partition_setup(struct kh_pg *pg, PGconn *c, char *err, size_t errlen);
/* Citus, on the maintenance connection: table's partitions older than columnar_days
 * converted to columnar, one per transaction with the table's writes held off meanwhile;
 * their count added to *converted. 0 or KH_EIO with pg->merr. */
int kh_pg_citus_columnar(struct kh_pg *pg, const char *table, long long *converted);

/* --- pg_schema.c -------------------------------------------------------------------------- */

/* Applies migrations up to target (0 = newest) in one transaction under the advisory lock,
 * deciding the Citus and TimescaleDB modes first. 0 or KH_EIO with err set. */
int kh_pg_migrate_conn(struct kh_pg *pg, PGconn *c, int target, char *err, size_t errlen);
/* The start-up line that says which mode is in use; the metrics' mode gauge follows it. */
void kh_pg_log_schema_ready(const struct kh_pg *pg);
/* The time series, i from 0: table, segmentby and orderby into *out; false past the last. */
bool kh_pg_time_series(size_t i, struct kh_pg_ts_table *out);

/* --- pg_statements.c ---------------------------------------------------------------------- */

/* Columns of stats table t: common ones, members, extra. */
int kh_pg_ncols(int t);
/* The name of a prepared statement: a stats table's insert (env false) or an envelope
 * table's (env true), table index t. */
const char *kh_pg_statement(bool env, size_t t, char name[16]);
/* Prepares every statement on the writer's new connection (and the copy method's staging
 * tables). 0, or KH_ERETRY with s->err set. */
int kh_pg_prepare_slot(struct kh_pg_slot *s);
/* COPY into stats table t (or its staging table), in the configured format. */
int kh_pg_copy_sql(const struct kh_pg *pg, int t, bool staging, struct kh_buf *b);
/* The copy method's move from the staging table into stats table t. */
int kh_pg_move_sql(const struct kh_pg *pg, int t, struct kh_buf *b);

/* --- pg_rows.c ---------------------------------------------------------------------------- */

/* Stats table t's rows of the subset in format f: one array per column in s->cols (and
 * s->params) for KH_PG_ARRAY, COPY data in s->cols[0] otherwise. The row count; *rc 0 or
 * KH_ENOMEM/KH_ENOSPC. */
size_t kh_pg_build_table(struct kh_pg_slot *s, enum kh_pg_format f, int t,
                         const struct kh_pg_subset *sub, int *rc);
/* Envelope table t's rows of the subset as arrays (see pg_rows.c). 0 or KH_ENOMEM. */
int kh_pg_build_envelopes(struct kh_pg_slot *s, const struct kh_pg_subset *sub, int t,
                          size_t *count);

/* --- pg_read.c ---------------------------------------------------------------------------- */

/* The store's latest and query (see store.h). */
int kh_pg_latest(struct kh_store *st, int slot, struct kh_latest_query *q, const char **err);
int kh_pg_query(struct kh_store *st, const char *sql, const struct kh_value *params,
                int nparams, unsigned flags, kh_store_row_fn fn, void *arg, const char **err);

/* --- pg_write.c --------------------------------------------------------------------------- */

/* The store's write (see store.h): the batch with the configured method on writer slot's
 * connection, b's counts and results filled. 0, KH_EREJECT (some reports refused; their
 * results say which) or KH_ERETRY; *err says why. */
int kh_pg_write(struct kh_store *st, int slot, struct kh_batch *b, const char **err);

#endif
