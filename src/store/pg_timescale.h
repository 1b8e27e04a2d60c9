/*
 * pg_timescale: what the postgres backend does with TimescaleDB on the server it finds,
 * decided from facts it reads there (pg_available_extensions, pg_extension, pg_settings).
 * Pure decisions and SQL text, no libpq here, so every state a real server can be in is
 * unit-tested, including those a test machine cannot build (an extension created at an
 * older version than the one installed).
 *
 * The states, and the mode each gives:
 *   not installed                              -> postgresql
 *   installed, not preloaded, not created here -> postgresql, a warning (no CREATE EXTENSION:
 *                                                 it would end the session with a FATAL)
 *   CREATE EXTENSION failed once in this process -> postgresql, never tried again
 *   preloaded, not created here                -> CREATE EXTENSION, then decide again
 *   preloaded, created                         -> timescaledb (timescaledb.license = apache:
 *                                                 timescaledb-apache, no compression)
 *   created at another version than the installed default -> used as it is, a warning
 *   created here but not preloaded             -> refused: no write into a hypertable works
 */
#ifndef KH_PG_TIMESCALE_H
#define KH_PG_TIMESCALE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/buf.h"

enum kh_pg_ts_mode { KH_PG_TS_OFF, KH_PG_TS_FULL, KH_PG_TS_APACHE };

struct kh_pg_ts_facts {
    const char *available; /* default_version in pg_available_extensions; NULL: not installed */
    const char *created;   /* extversion in this database's pg_extension; NULL: not created */
    const char *preload;   /* shared_preload_libraries; NULL when the role may not read it */
    bool loader;           /* the loader's own setting (timescaledb.disable_load) exists */
    const char *license;   /* current_setting('timescaledb.license', true); NULL: unset */
    bool create_failed;    /* CREATE EXTENSION failed earlier in this process */
};

struct kh_pg_ts_plan {
    enum kh_pg_ts_mode mode;
    bool create;         /* run CREATE EXTENSION, then read the facts and plan again */
    bool not_preloaded;  /* installed but not preloaded: warn, plain PostgreSQL */
    bool other_version;  /* created at another version than the installed default: warn */
    const char *refused; /* non-NULL: this database cannot be written; the reason */
};

/* True when the shared_preload_libraries list names timescaledb (quoted, with a directory or
 * a .so suffix, as PostgreSQL accepts it). */
bool kh_pg_ts_preloaded(const char *list);

/* Fills *p from *f. */
void kh_pg_ts_plan(const struct kh_pg_ts_facts *f, struct kh_pg_ts_plan *p);

/* Logs the plan's warnings (each state's one line; none for a plain or a full TimescaleDB).
 * The caller logs them once per process. */
void kh_pg_ts_warn(const struct kh_pg_ts_facts *f, const struct kh_pg_ts_plan *p,
                   int64_t retention_days);

/* One table's idempotent set-up in a mode other than KH_PG_TS_OFF: hypertable on "time" and
 * chunk interval; with KH_PG_TS_FULL also compression (segmentby, orderby), the
 * compression policy and the retention policy (none when retention_days is 0), replaced so
 * they follow the config. Compression and policies are Timescale-licensed, so
 * KH_PG_TS_APACHE gets the hypertable alone. `table` and `segmentby` come from the schema
 * table, never from a report. */
struct kh_pg_ts_table {
    enum kh_pg_ts_mode mode;
    const char *table, *segmentby, *orderby;
    int64_t chunk_hours, compress_days, retention_days;
};

/* Appends the statements to b. 0 or KH_ENOSPC/KH_ENOMEM. */
int kh_pg_ts_table_sql(struct kh_buf *b, const struct kh_pg_ts_table *t);

/* "postgresql", "timescaledb" or "timescaledb-apache": the mode in logs and metrics. */
const char *kh_pg_ts_mode_name(enum kh_pg_ts_mode m);

#endif
