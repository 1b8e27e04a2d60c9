/*
 * pg_timescale: TimescaleDB decisions of the postgres backend. See pg_timescale.h.
 */
#include "store/pg_timescale.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "core/log.h"

/* One list item, spaces and double quotes trimmed, directory and ".so" cut off. */
static bool item_is_timescaledb(const char *p, size_t n)
{
    while (n > 0 && (*p == ' ' || *p == '\t' || *p == '"'))
        p++, n--;
    while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t' || p[n - 1] == '"'))
        n--;
    for (size_t i = n; i > 0; i--)
        if (p[i - 1] == '/') {
            p += i, n -= i;
            break;
        }
    if (n > 3 && memcmp(p + n - 3, ".so", 3) == 0)
        n -= 3;
    return n == 11 && memcmp(p, "timescaledb", 11) == 0;
}

bool kh_pg_ts_preloaded(const char *list)
{
    for (const char *p = list; p && *p;) {
        size_t n = strcspn(p, ",");
        if (item_is_timescaledb(p, n))
            return true;
        p += n + (p[n] == ',');
    }
    return false;
}

void kh_pg_ts_plan(const struct kh_pg_ts_facts *f, struct kh_pg_ts_plan *p)
{
    bool preloaded = f->loader || kh_pg_ts_preloaded(f->preload);
    *p = (struct kh_pg_ts_plan){.mode = KH_PG_TS_OFF};
    if (f->created == NULL) {
        p->not_preloaded = f->available && !preloaded;
        p->create = f->available && preloaded && !f->create_failed;
        return;
    }
    if (!preloaded) {
        p->refused = "timescaledb is created in this database but PostgreSQL does not preload "
                     "it: add 'timescaledb' to shared_preload_libraries and restart PostgreSQL";
        return;
    }
    p->mode = f->license && strcmp(f->license, "apache") == 0 ? KH_PG_TS_APACHE : KH_PG_TS_FULL;
    p->other_version = f->available && strcmp(f->available, f->created) != 0;
}

static void warn_not_preloaded(const struct kh_pg_ts_facts *f)
{
    struct kh_logline l;
    if (kh_log_begin(&l, KH_LOG_WARN,
                     "timescaledb is installed but not in shared_preload_libraries; using plain "
                     "PostgreSQL")) {
        kh_log_str(&l, "shared_preload_libraries", f->preload ? f->preload : "(not readable)");
        kh_log_str(&l, "installed_version", f->available);
        kh_log_str(&l, "hint", "add 'timescaledb' to shared_preload_libraries, restart "
                               "PostgreSQL, then kohaku, for hypertables and compression");
        kh_log_end(&l);
    }
}

void kh_pg_ts_warn(const struct kh_pg_ts_facts *f, const struct kh_pg_ts_plan *p,
                   int64_t retention_days)
{
    struct kh_logline l;
    if (p->not_preloaded)
        warn_not_preloaded(f);
    if (p->other_version &&
        kh_log_begin(&l, KH_LOG_WARN, "timescaledb in this database is at another version than "
                                      "the installed default; using it as it is")) {
        kh_log_str(&l, "version", f->created);
        kh_log_str(&l, "installed_default", f->available);
        kh_log_str(&l, "hint", "ALTER EXTENSION timescaledb UPDATE, as the first statement of "
                               "a new session");
        kh_log_end(&l);
    }
    if (p->mode == KH_PG_TS_APACHE &&
        kh_log_begin(&l, KH_LOG_WARN, "timescaledb runs with timescaledb.license = apache: "
                                      "hypertables without compression; kohaku drops old "
                                      "chunks itself")) {
        kh_log_int(&l, "retention_days", retention_days);
        kh_log_end(&l);
    }
}

/* The table's policy of a kind (compression, retention) with its interval argument (in days),
 * unless one is already as wanted. */
static int policy_sql(struct kh_buf *b, const char *table, const char *kind, const char *arg,
                      int64_t days)
{
    return kh_buf_printf(b,
                 "DO $kh$ BEGIN IF NOT EXISTS (SELECT 1 FROM timescaledb_information.jobs "
                 "WHERE proc_name = 'policy_%s' AND hypertable_name = '%s' AND "
                 "(config->>'%s')::interval = INTERVAL '%lld days') THEN "
                 "PERFORM remove_%s_policy('\"%s\"', if_exists => TRUE); "
                 "PERFORM add_%s_policy('\"%s\"', %s => INTERVAL '%lld days'); END IF; "
                 "END $kh$;\n",
                 kind, table, arg, (long long)days, kind, table, kind, table, arg,
                 (long long)days);
}

/* The classic create_hypertable signature works on every 2.x release, so a database whose
 * extension is older than the installed default is served as it is. */
int kh_pg_ts_table_sql(struct kh_buf *b, const struct kh_pg_ts_table *t)
{
    const char *n = t->table;
    int rc = kh_buf_printf(b,
                     "SELECT create_hypertable('\"%s\"', 'time', chunk_time_interval => INTERVAL "
                     "'%lld hours', create_default_indexes => FALSE, if_not_exists => TRUE, "
                     "migrate_data => TRUE);\n"
                     "SELECT set_chunk_time_interval('\"%s\"', INTERVAL '%lld hours');\n",
                     n, (long long)t->chunk_hours, n, (long long)t->chunk_hours);
    if (rc != 0 || t->mode != KH_PG_TS_FULL)
        return rc;
    rc = kh_buf_printf(b,
                 "DO $kh$ BEGIN IF NOT EXISTS (SELECT 1 FROM "
                 "timescaledb_information.hypertables WHERE hypertable_name = '%s' AND "
                 "compression_enabled) THEN ALTER TABLE \"%s\" SET (timescaledb.compress, "
                 "timescaledb.compress_segmentby = '%s', timescaledb.compress_orderby = "
                 "'%s'); END IF; END $kh$;\n",
                 n, n, t->segmentby, t->orderby);
    /* A policy already as wanted is left alone: removing one cancels its job if it runs,
     * and a compression job cancelled in the middle of its chunk deadlocked this
     * transaction (seen at a restart right after the policy was added). */
    if (rc == 0)
        rc = policy_sql(b, n, "compression", "compress_after", t->compress_days);
    if (rc == 0 && t->retention_days > 0)
        rc = policy_sql(b, n, "retention", "drop_after", t->retention_days);
    else if (rc == 0)
        rc = kh_buf_printf(b,
                     "DO $kh$ BEGIN IF EXISTS (SELECT 1 FROM timescaledb_information.jobs "
                     "WHERE proc_name = 'policy_retention' AND hypertable_name = '%s') THEN "
                     "PERFORM remove_retention_policy('\"%s\"'); END IF; END $kh$;\n",
                     n, n);
    return rc;
}

const char *kh_pg_ts_mode_name(enum kh_pg_ts_mode m)
{
    switch (m) {
    case KH_PG_TS_FULL: return "timescaledb";
    case KH_PG_TS_APACHE: return "timescaledb-apache";
    default: return "postgresql";
    }
}
