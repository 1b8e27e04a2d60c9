/*
 * metrics: the counters, gauges and histograms kohaku exposes in Prometheus text format at
 * /metrics on exporter_listen_addr:exporter_listen_port. Counters are updated on the loop
 * thread only (requests, batches, rows); the few values other threads own are read through
 * callbacks at scrape time. No label ever carries a connection or channel id.
 */
#ifndef KH_METRICS_H
#define KH_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

/* Labels are handed in by the program (kh_metrics_set_labels): route names for the request
 * counter, table names for the rows counter. Up to these many of each. */
#define KH_METRICS_ROUTES 8

enum kh_reject {
    KH_REJECT_INVALID,     /* 400: envelope, JSON, headers of the protocol */
    KH_REJECT_TOO_LARGE,   /* 413 */
    KH_REJECT_HEADERS,     /* 431 */
    KH_REJECT_TIMEOUT,     /* 408 */
    KH_REJECT_STORAGE,     /* 400: storage refused a value */
    KH_REJECT_UNAVAILABLE, /* 503 */
    KH_REJECT_COUNT
};

#define KH_METRICS_STATUSES 12
#define KH_METRICS_TABLES 32
#define KH_METRICS_BUCKETS 12

struct kh_histogram {
    uint64_t counts[KH_METRICS_BUCKETS + 1]; /* the last one is +Inf */
    double sum;
    uint64_t n;
};

/* Gauges owned elsewhere, read at scrape time. */
struct kh_metrics_sources {
    void *arg;
    int (*storage_up)(void *arg);
    uint64_t (*storage_reconnects)(void *arg);
    uint64_t (*inflight_bytes)(void *arg);
    uint64_t (*pending_reports)(void *arg);
    uint64_t (*connections)(void *arg, int proto); /* 1 = HTTP/1.1, 2 = HTTP/2 */
    uint64_t (*streams)(void *arg);
    /* with a spool: segment files and records waiting to be replayed */
    void (*spool)(void *arg, uint64_t *segments, uint64_t *waiting);
    /* more series, appended whole (the quality stage's); 0 or KH_ENOSPC/KH_ENOMEM */
    int (*more)(void *arg, struct kh_buf *b);
};

struct kh_metrics {
    /* by route (the last slot: requests on no known route, "other"), protocol, status */
    uint64_t requests[KH_METRICS_ROUTES + 1][2][KH_METRICS_STATUSES];
    uint64_t reports_stored[2]; /* connection, node: newly stored */
    uint64_t reports_duplicate; /* accepted, and found stored already (redelivered) */
    uint64_t webhooks_stored[2]; /* session and event webhooks newly stored */
    uint64_t webhooks_duplicate; /* session and event webhooks found stored already */
    uint64_t rows_stored[KH_METRICS_TABLES]; /* rows inserted, by table */
    uint64_t rejected[KH_REJECT_COUNT];
    uint64_t batches_failed;
    struct kh_histogram batch_reports;
    struct kh_histogram commit_seconds;
    /* spool (loop thread) */
    int spool_enabled;
    uint64_t spool_bytes;         /* gauge: on disk and queued */
    uint64_t spool_appended;      /* reports made durable in the spool */
    uint64_t spool_append_failed; /* reports whose spool write failed (503) */
    uint64_t spool_full;          /* appends refused: spool_max_bytes reached */
    uint64_t spool_fsyncs;        /* groups written and synced */
    uint64_t spool_drained;       /* spooled reports replayed and committed */
    uint64_t spool_dropped;       /* spooled reports storage refused or could not be read */
    uint64_t spool_tails_cut;   /* segments whose torn/corrupt tail was cut at start-up */
    /* log-first acknowledgement (ack_mode = log; loop thread) */
    uint64_t log_acknowledged; /* reports answered 204 once logged */
    uint64_t log_stored;       /* of those, stored from memory */
    uint64_t log_released;     /* not stored from memory: replayed from the log */
    uint64_t log_refused;      /* refused by storage as bad data after their 204 */
    uint64_t log_held;         /* gauge: logged, not yet stored or released */
    struct kh_metrics_sources src;
    /* the storage backend's mode (a string literal), set by the backend from any thread */
    _Atomic(const char *) storage_mode;
    /* kohaku's own retention (any thread: the SQLite writer, the PostgreSQL maintenance) */
    _Atomic uint64_t retention_rows;       /* rows deleted */
    _Atomic uint64_t retention_partitions; /* partitions (or chunks) dropped */
    _Atomic uint64_t retention_passes;     /* passes finished */
    _Atomic uint64_t retention_last_usec;  /* the last finished pass: start to end */
    _Atomic uint64_t retention_last_end;   /* when it ended, seconds since the epoch */
};

extern struct kh_metrics kh_metrics;

/* The label sets: routes[i] names route i of kh_metrics_request, tables[t] the t-th slot of
 * rows_stored (and the storage layer's table index). The arrays must outlive the metrics;
 * counts beyond KH_METRICS_ROUTES / KH_METRICS_TABLES are not kept. */
void kh_metrics_set_labels(const char *const *routes, size_t nroutes, const char *const *tables,
                           size_t ntables);
/* One answered request: route index (-1: no known route), protocol (1 or 2), status. */
void kh_metrics_request(int route, int proto, int status);
void kh_metrics_batch(size_t reports, double seconds, int ok);
/* Sets the mode kohaku_storage_mode{mode} reports ("sqlite", "null", "postgresql",
 * "timescaledb", "timescaledb-apache"); `mode` must outlive the process (a literal). Until it
 * is set (PostgreSQL not reached yet) the gauge has no sample. Any thread. */
void kh_metrics_storage_mode(const char *mode);
/* Retention: rows deleted (as they go, so a long pass shows progress), then each finished
 * pass: partitions or chunks dropped in it, how long it took, when it ended (Unix seconds).
 * Any thread. */
void kh_metrics_retention_rows(uint64_t rows);
void kh_metrics_retention_pass(uint64_t partitions, uint64_t usec, uint64_t end_unix);
/* Appends the exposition text. 0 or KH_ENOSPC/KH_ENOMEM. */
int kh_metrics_render(struct kh_buf *out);

#endif
