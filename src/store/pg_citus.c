/*
 * pg_citus: Citus mode of the postgres backend. When the database kohaku migrates has the
 * citus extension (created by the operator; kohaku never creates it), its tables are
 * distributed after the migrations, in the same transaction under the advisory lock:
 *   - every table is hash-distributed by the first column of its unique key, all of them
 *     co-located with sora_connection, so that one connection's stats, reports, quality rows
 *     and lifecycle row live on one shard (sora_report by source: the connection_id of a
 *     connection's report, the node_name of a node's; node series by node_name; sora_session
 *     by session_id and sora_webhook by webhook_id, whose rows no connection owns);
 *   - the small tables (sora_node, kohaku_schema_version) are reference tables.
 * Each key starting with the distribution column is what lets the unique indexes, ON
 * CONFLICT and COPY's unique_violation work per shard. Idempotent: a table already in
 * pg_dist_partition is left alone, so a table added by a later migration is distributed at
 * the next start. A plain PostgreSQL database converted to Citus mode (the operator creates
 * the extension and adds the workers, README) has its tables distributed with their rows
 * the same way, at the next start. TimescaleDB cannot share a database with Citus: both
 * created is refused.
 * It builds no SQL from anything but the schema's own names.
 */
#include <stdio.h>
#include <string.h>

#include "core/errors.h"
#include "sora/schema.h"
#include "store/pg_internal.h"

static const char citus_facts_sql[] =
    "SELECT (SELECT extversion FROM pg_extension WHERE extname = 'citus'), "
    "EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')";

/* The table every distributed table is co-located with: distributed first. */
#define COLOCATION_TABLE "sora_connection"

/* One row (t) when the table exists and is not distributed yet: a later schema version's
 * table is distributed after the migration that creates it. */
#define TABLE_TO_DO                                                                          \
    "(SELECT to_regclass('\"%s\"') AS t) x WHERE t IS NOT NULL AND NOT EXISTS (SELECT 1 "   \
    "FROM pg_dist_partition WHERE logicalrelid = t)"

static const char *const reference_tables[] = {"kohaku_schema_version", "sora_node"};

int kh_pg_citus_check(struct kh_pg *pg, PGconn *c, char *err, size_t errlen)
{
    PGresult *r = PQexec(c, citus_facts_sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        kh_pg_error(err, errlen, "citus check", c, r);
        PQclear(r);
        return KH_EIO;
    }
    bool citus = !PQgetisnull(r, 0, 0);
    bool timescale = strcmp(PQgetvalue(r, 0, 1), "t") == 0;
    snprintf(pg->citus_version, sizeof(pg->citus_version), "%s",
             citus ? PQgetvalue(r, 0, 0) : "");
    PQclear(r);
    if (citus && timescale) {
        snprintf(err, errlen, "citus and timescaledb are both created in this database; they "
                              "cannot share one: drop one of them (kohaku uses either)");
        return KH_EIO;
    }
    pg->citus = citus;
    return 0;
}

static int distribute(struct kh_buf *b, const char *table, const char *column)
{
    const char *colocate = strcmp(table, COLOCATION_TABLE) == 0 ? "default" : COLOCATION_TABLE;
    /* a table of a plain database converted to Citus mode has rows: create_distributed_table
     * copies them into the shards and leaves the coordinator's own copy on disk, unseen;
     * that copy goes in the same step (only for a table distributed now: at every other
     * start the truncate's lock would stop the other kohaku's writes). OFFSET 0 keeps the
     * inner query whole, so each table is distributed before it is truncated. */
    return kh_buf_printf(b,
                         "SELECT truncate_local_data_after_distributing_table(t) FROM (SELECT "
                         "t, create_distributed_table(t, '%s', colocate_with => '%s') FROM "
                         TABLE_TO_DO " OFFSET 0) d;\n",
                         column, colocate, table);
}

static bool is_reference(const char *table)
{
    for (size_t i = 0; i < sizeof(reference_tables) / sizeof(reference_tables[0]); i++)
        if (strcmp(table, reference_tables[i]) == 0)
            return true;
    return false;
}

static int reference(struct kh_buf *b, const char *table)
{
    /* as in distribute: the coordinator's own copy of the rows goes */
    return kh_buf_printf(b,
                         "SELECT truncate_local_data_after_distributing_table(t) FROM (SELECT "
                         "t, create_reference_table(t) FROM " TABLE_TO_DO " OFFSET 0) d;\n",
                         table);
}

/* The co-location table first, then the other envelope tables, the stats tables and the
 * reference tables. */
static int citus_sql(struct kh_buf *b)
{
    int rc = distribute(b, COLOCATION_TABLE, "connection_id");
    for (size_t t = 0; rc == 0 && t < kh_env_ntables; t++) {
        const struct kh_env_table *et = &kh_env_tables[t];
        if (strcmp(et->table, COLOCATION_TABLE) != 0 && !is_reference(et->table))
            rc = distribute(b, et->table, et->key[0]);
    }
    for (size_t i = 0; rc == 0 && i < kh_stats_ntables; i++)
        rc = distribute(b, kh_stats_tables[i].table, kh_schema_scope((int)i)->key[0]);
    for (size_t i = 0; rc == 0 && i < sizeof(reference_tables) / sizeof(reference_tables[0]);
         i++)
        rc = reference(b, reference_tables[i]);
    return rc ? rc : kh_buf_append(b, "", 1);
}

int kh_pg_citus_tables(struct kh_pg *pg, PGconn *c, int upto, char *err, size_t errlen)
{
    int converted = 0;
    if (kh_pg_citus_partition_tables(pg, c, &converted, err, errlen) != 0)
        return KH_EIO;
    struct kh_buf b;
    kh_buf_init(&b, 1u << 20);
    /* the shards are created over the transaction's own connection to each worker: the
     * tables were created (or changed) earlier in this transaction */
    int rc = kh_buf_printf(&b, "SET LOCAL citus.multi_shard_modify_mode TO 'sequential';\n");
    if (rc == 0)
        rc = citus_sql(&b);
    if (rc != 0)
        snprintf(err, errlen, "out of memory building the Citus set-up");
    if (rc == 0)
        rc = kh_pg_exec(c, b.data, err, errlen);
    kh_buf_cleanup(&b);
    if (rc == 0 && converted > 0)
        rc = kh_pg_partition_views(c, upto, err, errlen);
    return rc;
}
