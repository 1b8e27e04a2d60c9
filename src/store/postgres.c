/*
 * postgres: the PostgreSQL / TimescaleDB storage backend, the store interface's side of it
 * (kh_store_postgres_ops). Owns the backend's state (struct kh_pg, pg_internal.h): opening
 * it from the config, the migration `kohaku migrate` and start-up ask for, starting and
 * stopping the maintenance thread, closing. The work is in pg_conn.c (connections, health,
 * retention), pg_schema.c (migrations, TimescaleDB), pg_statements.c and pg_rows.c (what
 * the writers send) and pg_write.c (the write methods).
 *
 * Connections: one per writer slot (postgres_pool_size), each used only by its writer thread,
 * plus one for the maintenance thread. healthy() is true once the schema is in place and the
 * last contact worked. Rows are only ever sent as parameters or COPY data: no SQL is built
 * from payload text.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/errors.h"
#include "core/log.h"
#include "sora/schema.h"
#include "store/pg_internal.h"

/* The settings a backend takes from the config. */
static void configure(struct kh_pg *pg, const struct kh_config *cfg)
{
    pg->nslots = (int)cfg->postgres_pool_size;
    pg->use_copy = strcmp(cfg->postgres_write_method, "copy") == 0;
    pg->use_direct_copy = strcmp(cfg->postgres_write_method, "direct_copy") == 0;
    pg->copy_format = strcmp(cfg->postgres_copy_format, "text") == 0 ? KH_PG_COPY : KH_PG_BINARY;
    pg->chunk_hours = cfg->timescaledb_chunk_interval;
    pg->compress_days = cfg->timescaledb_compress_after;
    pg->retention_days = cfg->retention_days;
    pg->retention_interval = cfg->retention_interval;
    pg->partition_hours = cfg->postgres_partition_interval;
    pg->columnar_days = cfg->citus_columnar_after;
    pg->query_timeout_ms = cfg->query_timeout;
    const char *fault = getenv("KOHAKU_FAULT_LOSE_COMMIT_ACKS");
    atomic_store(&pg->lose_acks, fault ? atoi(fault) : 0);
}

static void init_slots(struct kh_pg *pg)
{
    for (int i = 0; i < pg->nslots; i++) {
        pg->slots[i].pg = pg;
        pg->slots[i].index = i;
        for (int c = 0; c < KH_PG_MAX_COLS; c++)
            kh_buf_init(&pg->slots[i].cols[c], 1u << 30);
    }
}

/* No connection yet: the first contact is migrate's, or the maintenance thread's. */
static int pg_open(struct kh_store *s, const struct kh_config *cfg, const char **err)
{
    struct kh_pg *pg = calloc(1, sizeof(*pg));
    if (pg == NULL)
        goto fail_alloc;
    s->impl = pg;
    configure(pg, cfg);
    pg->uri = strdup(cfg->postgres_uri);
    pg->ca = strdup(cfg->postgres_ca_cert_file);
    if (cfg->postgres_read_uri[0] && (pg->read_uri = strdup(cfg->postgres_read_uri)) == NULL)
        goto fail_alloc;
    pg->slots = calloc((size_t)pg->nslots, sizeof(*pg->slots));
    if (pg->uri == NULL || pg->ca == NULL || pg->slots == NULL)
        goto fail_alloc;
    init_slots(pg);
    pthread_mutex_init(&pg->mu, NULL);
    pthread_cond_init(&pg->cv, NULL);
    return 0;
fail_alloc:
    *err = "out of memory";
    return KH_ENOMEM;
}

/* KH_ERETRY when the database could not be reached (or went away while migrating, or the
 * migration kept conflicting with another transaction, such as a TimescaleDB job). */
static int pg_migrate(struct kh_store *s, int target, const char **err)
{
    struct kh_pg *pg = s->impl;
    PGconn *c = kh_pg_connect(pg, pg->uri, KH_PG_APP, pg->merr, sizeof(pg->merr));
    int rc = c ? kh_pg_migrate_conn(pg, c, target, pg->merr, sizeof(pg->merr)) : KH_ERETRY;
    /* a conflict rolled the migration back as a whole: run it again at once, twice */
    for (int again = 0; rc == KH_ERETRY && c && PQstatus(c) == CONNECTION_OK && again < 2;
         again++) {
        struct kh_logline l;
        if (kh_log_begin(&l, KH_LOG_WARN, "schema migration conflicted; running it again")) {
            kh_log_str(&l, "error", pg->merr);
            kh_log_end(&l);
        }
        nanosleep(&(struct timespec){.tv_nsec = 200 * 1000000L}, NULL);
        rc = kh_pg_migrate_conn(pg, c, target, pg->merr, sizeof(pg->merr));
    }
    if (c && rc != 0 && PQstatus(c) != CONNECTION_OK)
        rc = KH_ERETRY;
    kh_pg_drop_conn(&c);
    if (rc == 0 && (target == 0 || target >= kh_schema_latest_version())) {
        atomic_store(&pg->migrated, true);
        atomic_store(&pg->healthy, true);
        kh_pg_log_schema_ready(pg);
    }
    *err = pg->merr;
    return rc;
}

static int pg_start(struct kh_store *s) { return kh_pg_maint_start(s->impl); }

static void pg_close(struct kh_store *s)
{
    struct kh_pg *pg = s->impl;
    if (pg == NULL)
        return;
    kh_pg_maint_stop(pg);
    kh_pg_drop_conn(&pg->qconn);
    for (size_t i = 0; i < pg->nqprep; i++)
        free(pg->qprep[i]);
    for (int i = 0; pg->slots && i < pg->nslots; i++) {
        kh_pg_drop_conn(&pg->slots[i].conn);
        for (int c = 0; c < KH_PG_MAX_COLS; c++)
            kh_buf_cleanup(&pg->slots[i].cols[c]);
        free(pg->slots[i].order);
    }
    free(pg->slots);
    free(pg->uri);
    free(pg->read_uri);
    free(pg->ca);
    free(pg);
    s->impl = NULL;
}

static bool pg_healthy(struct kh_store *s)
{
    struct kh_pg *pg = s->impl;
    return atomic_load(&pg->healthy);
}

static uint64_t pg_reconnects(struct kh_store *s)
{
    struct kh_pg *pg = s->impl;
    return atomic_load(&pg->reconnects);
}

static int pg_writers(struct kh_store *s)
{
    struct kh_pg *pg = s->impl;
    return pg->nslots;
}

const struct kh_store_ops kh_store_postgres_ops = {
    .name = "postgres",
    .dialect = KH_DIALECT_POSTGRES,
    .open = pg_open,
    .migrate = pg_migrate,
    .start = pg_start,
    .writers = pg_writers,
    .write = kh_pg_write,
    .latest = kh_pg_latest,
    .query = kh_pg_query,
    .healthy = pg_healthy,
    .reconnects = pg_reconnects,
    .close = pg_close,
};

const char *kh_store_postgres_library(void)
{
    static char v[32];
    int pq = PQlibVersion();
    snprintf(v, sizeof(v), "libpq %d.%d", pq / 10000, pq % 10000);
    return v;
}
