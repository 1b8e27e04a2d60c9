/*
 * store: the storage backend interface. A backend is a table of function pointers
 * (sqlite.c, postgres.c, null.c). open/migrate/close run on the main thread before and after
 * the loop. write runs on the batcher's writer threads: `writers` of them, each passing its
 * own slot number (0..writers-1) and writing one batch at a time. healthy may be called from
 * any thread and must not block.
 *
 * latest runs on a writer thread too, with its slot, before the batch's write (the quality
 * stage reads what earlier reports left); query on any one thread at a time, on a
 * connection of its own (the command line, the console).
 *
 * Results of write, by class (the batcher, not the backend, owns retries):
 *   0            every report of the batch is stored;
 *   KH_ERETRY    nothing is stored, try later (database busy, unreachable, disk full ...);
 *   KH_EREJECT   some reports were refused as bad data: their results[] entries are
 *                KH_EREJECT, the others are stored.
 * A batch may hold session and event webhooks beside stats reports: each has its sora_webhook
 * row and the lifecycle rows it carries (kh_report.env_rows), upserted by the merge rules of
 * their tables, in the same transaction.
 */
#ifndef KH_STORE_H
#define KH_STORE_H

#include <stdbool.h>
#include <stddef.h>

#include "core/config.h"
#include "core/timeutil.h"
#include "sora/report.h"

struct kh_batch {
    struct kh_report **reports;
    int *results; /* per report: 0 or KH_EREJECT, filled by write */
    size_t nreports;
    size_t nrows;
    /* What the write stored, filled by write when it returns 0 or KH_EREJECT (write zeroes
     * them first): rows inserted per table, not counting rows that were there already (a
     * redelivered report's); reports stored per kind (connection, node); reports that were
     * stored already (sora_report had them: a redelivery or a replay). */
    uint64_t rows_stored[KH_REPORT_MAX_TABLES];
    uint64_t reports_stored[2];
    uint64_t reports_duplicate;
    /* the same of session and event webhooks (sora_webhook had them) */
    uint64_t webhooks_stored[2];
    uint64_t webhooks_duplicate;
};

/* Zeroes what a write stored (the start of every write). */
void kh_batch_reset_counts(struct kh_batch *b);

/* The rows the latest stored report of each of n connections before a time left in some
 * tables: for query i, the latest `time` of table `anchor` (a table with one row per report)
 * for connection_ids[i] in [before_usec[i] - window_usec, before_usec[i]) (never before
 * KH_TIME_MIN_USEC), and the rows of
 * each table of `tables` (stats tables of the connection scope) at that time. With no
 * tables (ntables 0), the times alone. */
struct kh_latest_query {
    size_t n;
    const struct kh_str *connection_ids;
    const int64_t *before_usec;
    int64_t window_usec;
    int anchor;
    const int *tables;
    size_t ntables;
    struct kh_arena *arena; /* where the rows and their strings go */
    /* filled: found_usec[i] the report's time (0: none), rows[i] its rows (a list; row->table
     * says which table, stats_type/stats_id/stats_timestamp and vals are set) */
    int64_t *found_usec;
    struct kh_row **rows;
};

/* The start of query i's window. */
static inline int64_t kh_latest_after(const struct kh_latest_query *q, size_t i)
{
    int64_t lo = q->before_usec[i] - q->window_usec;
    return lo < KH_TIME_MIN_USEC || lo > q->before_usec[i] ? KH_TIME_MIN_USEC : lo;
}

/* One row of a query's result, its cells typed as the database gave them (INT, REAL, TEXT,
 * BOOL; SQL NULL has type 0). Strings are valid during the call only. Nonzero stops the
 * query, and query returns it. */
typedef int (*kh_store_row_fn)(void *arg, const struct kh_value *cells, int ncells);

/* The most columns a query may answer (the widest stats table with its common columns fits
 * three times over); a statement with more is refused, never cut short. */
#define KH_STORE_MAX_CELLS 256

struct kh_store;

/* query's flags. PLAN_EACH: plan the statement for its parameters at every call (a backend
 * that keeps statements prepared otherwise may plan them once for any parameters). */
#define KH_QUERY_PLAN_EACH 1u

struct kh_store_ops {
    const char *name;
    int dialect; /* enum kh_dialect (sora/schema.h) of the SQL it speaks; -1: none (null) */
    /* Opens the database. 0 or KH_EIO with *err set. */
    int (*open)(struct kh_store *s, const struct kh_config *cfg, const char **err);
    /* Creates or upgrades the schema to `target` (0 = the newest version). 0 or KH_EIO with
     * *err. Backends that connect later (postgres) migrate on connect and return 0 here. */
    int (*migrate)(struct kh_store *s, int target, const char **err);
    /* Starts background work (reconnects, retention); serve only, after migrate. 0 or
     * KH_ENOMEM. */
    int (*start)(struct kh_store *s);
    /* Number of batches the backend can write in parallel (one writer thread each); 0: write
     * is cheap and is called on the loop thread. */
    int (*writers)(struct kh_store *s);
    int (*write)(struct kh_store *s, int slot, struct kh_batch *b, const char **err);
    /* Fills q (see struct kh_latest_query) on writer slot's connection. 0, KH_ERETRY (the
     * database is away), KH_EIO (it refused the read) or KH_ENOMEM (the arena is full), with
     * *err. */
    int (*latest)(struct kh_store *s, int slot, struct kh_latest_query *q, const char **err);
    /* Whether a connection other than writer slot's may have changed the database since
     * the last call for the slot (true when the backend cannot tell; NULL: always true). On
     * the slot's writer thread. */
    bool (*others_wrote)(struct kh_store *s, int slot);
    /* Runs one read-only statement with parameters ($1.. in PostgreSQL, ?1.. in SQLite: the
     * caller writes the dialect's SQL, from constants only; text parameters NUL-terminated)
     * and calls fn for each row. Its
     * own connection; one thread at a time. 0, fn's nonzero, or KH_EIO/KH_ERETRY with *err.
     * flags: KH_QUERY_*. */
    int (*query)(struct kh_store *s, const char *sql, const struct kh_value *params,
                 int nparams, unsigned flags, kh_store_row_fn fn, void *arg, const char **err);
    bool (*healthy)(struct kh_store *s);
    /* Connections (re)established after a failure, for the metrics. Any thread. */
    uint64_t (*reconnects)(struct kh_store *s);
    void (*close)(struct kh_store *s);
};

struct kh_store {
    const struct kh_store_ops *ops;
    void *impl;
};

extern const struct kh_store_ops kh_store_sqlite_ops;
extern const struct kh_store_ops kh_store_postgres_ops;
extern const struct kh_store_ops kh_store_null_ops;

/* The database libraries' run-time versions, "name version" (--version). */
const char *kh_store_sqlite_library(void);
const char *kh_store_postgres_library(void);

/* Finds the backend by name ("sqlite", "postgres", "null"); NULL when there is none. */
const struct kh_store_ops *kh_store_find(const char *name);

#endif
