/*
 * store: the storage backend interface. A backend is a table of function pointers
 * (sqlite.c, postgres.c, null.c). open/migrate/close run on the main thread before and after
 * the loop. write runs on the batcher's writer threads: `writers` of them, each passing its
 * own slot number (0..writers-1) and writing one batch at a time. healthy may be called from
 * any thread and must not block.
 *
 * Results of write, by class (the batcher, not the backend, owns retries):
 *   0            every report of the batch is stored;
 *   KH_ERETRY    nothing is stored, try later (database busy, unreachable, disk full ...);
 *   KH_EREJECT   some reports were refused as bad data: their results[] entries are
 *                KH_EREJECT, the others are stored.
 */
#ifndef KH_STORE_H
#define KH_STORE_H

#include <stdbool.h>
#include <stddef.h>

#include "core/config.h"
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
};

/* Zeroes what a write stored (the start of every write). */
void kh_batch_reset_counts(struct kh_batch *b);

struct kh_store;

struct kh_store_ops {
    const char *name;
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
