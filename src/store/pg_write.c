/*
 * pg_write: how a postgres writer stores a batch (postgres_write_method), on its own slot's
 * connection. Owns the three methods, what each stored (rows per table from command tags,
 * new reports from sora_report's RETURNING), and the retry that isolates refused reports:
 *   unnest: per table one prepared INSERT ... SELECT * FROM unnest($1::type[], ...)
 *           ON CONFLICT DO NOTHING, all statements of a batch pipelined and committed
 *           together at the pipeline's Sync: one round trip per batch.
 *   copy:   BEGIN; COPY into per-connection temporary staging tables; INSERT ... SELECT
 *           ON CONFLICT DO NOTHING; COMMIT (a few round trips per batch).
 *   direct_copy: BEGIN; the envelope statements; COPY straight into each stats table;
 *           COMMIT. COPY has no ON CONFLICT: a row already stored (a replay, a redelivery)
 *           fails the batch with unique_violation, which is rolled back and written again
 *           with the unnest statements. Fast when replays are rare, as they are. (Citus
 *           reports that unique_violation as XX000: see maybe_stored_already.)
 * A data error (a value PostgreSQL refuses) makes it write the batch's reports one by one,
 * so only the offending reports are refused (KH_EREJECT). It does not retry a batch that
 * could not be stored: the batcher owns retries.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "core/log.h"
#include "sora/schema.h"
#include "store/pg_internal.h"

/* What a pipelined statement's result counts towards. */
enum { LBL_NONE = -1, LBL_REPORTS = -2, LBL_WEBHOOKS = -3 }; /* >= 0: rows of a stats table */
#define MAX_PIPELINE 64

/* Result of an exchange: the first error's SQLSTATE and message, and what it stored: rows
 * per table from each statement's command tag, reports from sora_report's RETURNING,
 * webhooks (session, event) from sora_webhook's. */
struct outcome {
    bool failed;
    char state[6];
    int labels[MAX_PIPELINE]; /* of the pipelined statements, in the order sent */
    size_t nlabels, next_label;
    uint64_t rows[KH_REPORT_MAX_TABLES];
    uint64_t reports[2];
    uint64_t webhooks[2];
};

static void tally(struct outcome *o, int label, PGresult *r)
{
    if (label >= 0 && label < KH_REPORT_MAX_TABLES) {
        o->rows[label] += strtoull(PQcmdTuples(r), NULL, 10);
    } else if (label == LBL_REPORTS) {
        /* RETURNING kind: one row per report inserted */
        for (int i = 0, n = PQntuples(r); i < n; i++)
            o->reports[PQgetvalue(r, i, 0)[0] == 'n']++;
    } else if (label == LBL_WEBHOOKS) {
        /* RETURNING type: session.* from the session webhook, the rest from the event one */
        for (int i = 0, n = PQntuples(r); i < n; i++)
            o->webhooks[strncmp(PQgetvalue(r, i, 0), "session.", 8) != 0]++;
    }
}

/* The first failure of an exchange is the one that counts. */
static void fail(struct kh_pg_slot *s, struct outcome *o, const char *what)
{
    if (o->failed)
        return;
    o->failed = true;
    o->state[0] = '\0';
    kh_pg_error(s->err, sizeof(s->err), what, s->conn, NULL);
}

static void note_result(struct kh_pg_slot *s, struct outcome *o, PGresult *r, const char *what)
{
    ExecStatusType st = PQresultStatus(r);
    if (o->failed || st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK ||
        st == PGRES_PIPELINE_SYNC || st == PGRES_PIPELINE_ABORTED)
        return;
    o->failed = true;
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    snprintf(o->state, sizeof(o->state), "%s", state ? state : "");
    kh_pg_error(s->err, sizeof(s->err), what, s->conn, r);
}

static void out_of_memory(struct kh_pg_slot *s, struct outcome *o)
{
    if (o->failed)
        return;
    o->failed = true;
    snprintf(s->err, sizeof(s->err), "out of memory building the batch");
}

/* --- pipelines ---------------------------------------------------------------------------- */

/* Sends what pg_rows left in the column buffers as one pipelined statement whose result
 * counts towards `label`. */
static int send_prepared(struct kh_pg_slot *s, struct outcome *o, const char *name, int nparams,
                         int label)
{
    if (o->nlabels == MAX_PIPELINE) {
        o->failed = true;
        snprintf(s->err, sizeof(s->err), "too many statements in one pipeline");
        return KH_EIO;
    }
    if (PQsendQueryPrepared(s->conn, name, nparams, s->params, NULL, NULL, 0) == 1) {
        o->labels[o->nlabels++] = label;
        return 0;
    }
    fail(s, o, "send");
    return KH_EIO;
}

/* The envelope tables' statements, in kh_env_tables order (every writer the same). */
static int send_envelopes(struct kh_pg_slot *s, const struct kh_pg_subset *sub,
                          struct outcome *o)
{
    char name[16];
    int rc = 0;
    for (size_t t = 0; rc == 0 && t < kh_env_ntables; t++) {
        size_t n;
        rc = kh_pg_build_envelopes(s, sub, (int)t, &n);
        int label = (int)t == kh_env_report    ? LBL_REPORTS
                    : (int)t == kh_env_webhook ? LBL_WEBHOOKS
                                               : LBL_NONE;
        if (rc == 0 && n > 0)
            rc = send_prepared(s, o, kh_pg_statement(true, t, name),
                               (int)kh_env_tables[t].ncols, label);
    }
    return rc;
}

/* Reads results up to the pipeline's Sync. */
static void drain_pipeline(struct kh_pg_slot *s, struct outcome *o)
{
    int idle = 0;
    for (;;) {
        PGresult *r = PQgetResult(s->conn);
        if (r == NULL) {
            /* NULL ends one statement's results; a broken connection yields only NULLs */
            if (PQstatus(s->conn) != CONNECTION_OK || ++idle > 1000) {
                fail(s, o, "pipeline");
                return;
            }
            continue;
        }
        idle = 0;
        ExecStatusType st = PQresultStatus(r);
        note_result(s, o, r, "insert");
        if ((st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) && o->next_label < o->nlabels)
            tally(o, o->labels[o->next_label++], r);
        PQclear(r);
        if (st == PGRES_PIPELINE_SYNC)
            return;
    }
}

/* Ends a pipeline: Sync, its results, out of pipeline mode. */
static void finish_pipeline(struct kh_pg_slot *s, struct outcome *o)
{
    if (PQpipelineSync(s->conn) == 1)
        drain_pipeline(s, o);
    else
        fail(s, o, "sync");
    if (PQstatus(s->conn) == CONNECTION_OK)
        PQexitPipelineMode(s->conn);
}

/* The envelope statements in a pipeline of their own, inside the caller's transaction. */
static void pipeline_envelopes(struct kh_pg_slot *s, const struct kh_pg_subset *sub,
                               struct outcome *o)
{
    if (o->failed || PQenterPipelineMode(s->conn) != 1)
        return;
    send_envelopes(s, sub, o);
    if (PQpipelineSync(s->conn) == 1)
        drain_pipeline(s, o);
    if (PQstatus(s->conn) == CONNECTION_OK)
        PQexitPipelineMode(s->conn);
}

/* unnest method: every statement of the subset pipelined, committed at Sync. */
static void write_unnest(struct kh_pg_slot *s, const struct kh_pg_subset *sub,
                         struct outcome *o)
{
    if (PQenterPipelineMode(s->conn) != 1) {
        fail(s, o, "pipeline");
        return;
    }
    int rc = send_envelopes(s, sub, o);
    char name[16];
    for (size_t t = 0; rc == 0 && t < kh_stats_ntables; t++) {
        size_t rows = kh_pg_build_table(s, KH_PG_ARRAY, (int)t, sub, &rc);
        if (rc == 0 && rows > 0)
            rc = send_prepared(s, o, kh_pg_statement(false, t, name), kh_pg_ncols((int)t),
                               (int)t);
    }
    if (rc == KH_ENOMEM)
        out_of_memory(s, o);
    finish_pipeline(s, o);
}

/* --- COPY --------------------------------------------------------------------------------- */

/* One statement outside a pipeline; its result counts towards `label`. */
static void exec_counted(struct kh_pg_slot *s, struct outcome *o, const char *sql,
                         const char *what, int label)
{
    if (o->failed)
        return;
    PGresult *r = PQexec(s->conn, sql);
    note_result(s, o, r, what);
    if (PQresultStatus(r) == PGRES_COMMAND_OK)
        tally(o, label, r);
    PQclear(r);
}

static void exec_step(struct kh_pg_slot *s, struct outcome *o, const char *sql, const char *what)
{
    exec_counted(s, o, sql, what, LBL_NONE);
}

/* COMMIT, or ROLLBACK when anything failed (and the connection is still there). */
static void end_transaction(struct kh_pg_slot *s, struct outcome *o)
{
    exec_step(s, o, "COMMIT", "commit");
    if (o->failed && PQstatus(s->conn) == CONNECTION_OK) {
        PGresult *r = PQexec(s->conn, "ROLLBACK");
        PQclear(r);
    }
}

/* COPY of the rows kh_pg_build_table left in cols[0] into table t, or its staging table. */
static void copy_table(struct kh_pg_slot *s, struct outcome *o, int t, bool staging,
                       struct kh_buf *sql)
{
    kh_buf_reset(sql);
    if (kh_pg_copy_sql(s->pg, t, staging, sql) != 0) {
        out_of_memory(s, o);
        return;
    }
    PGresult *r = PQexec(s->conn, sql->data);
    if (PQresultStatus(r) != PGRES_COPY_IN) {
        note_result(s, o, r, "copy");
        PQclear(r);
        return;
    }
    PQclear(r);
    struct kh_buf *data = &s->cols[0];
    if (PQputCopyData(s->conn, data->data, (int)data->len) != 1 ||
        PQputCopyEnd(s->conn, NULL) != 1)
        fail(s, o, "copy");
    while ((r = PQgetResult(s->conn)) != NULL) {
        note_result(s, o, r, "copy");
        if (!staging && PQresultStatus(r) == PGRES_COMMAND_OK)
            tally(o, t, r);
        PQclear(r);
    }
}

/* The copy method's move of table t's staged rows; it counts what it inserted. */
static void move_staged(struct kh_pg_slot *s, struct outcome *o, int t, struct kh_buf *sql)
{
    kh_buf_reset(sql);
    if (kh_pg_move_sql(s->pg, t, sql) == 0)
        exec_counted(s, o, sql->data, "insert", t);
    else
        out_of_memory(s, o);
}

/* copy method: COPY each table's rows into its staging table, then move them over. */
static void write_copy(struct kh_pg_slot *s, const struct kh_pg_subset *sub, struct outcome *o)
{
    struct kh_buf sql;
    kh_buf_init(&sql, 1u << 20);
    exec_step(s, o, "BEGIN", "begin");
    for (size_t t = 0; !o->failed && t < kh_stats_ntables; t++) {
        int rc = 0;
        size_t rows = kh_pg_build_table(s, s->pg->copy_format, (int)t, sub, &rc);
        if (rc != 0)
            out_of_memory(s, o); /* never commit a batch without some of its rows */
        if (rows == 0 || rc != 0)
            continue;
        copy_table(s, o, (int)t, true, &sql);
        move_staged(s, o, (int)t, &sql);
    }
    /* the envelope tables: the same pipelined unnest statements as the other methods */
    pipeline_envelopes(s, sub, o);
    end_transaction(s, o);
    kh_buf_cleanup(&sql);
}

/* direct_copy method: see the top of the file. */
static void write_direct_copy(struct kh_pg_slot *s, const struct kh_pg_subset *sub,
                              struct outcome *o)
{
    struct kh_buf sql;
    kh_buf_init(&sql, 1u << 20);
    exec_step(s, o, "BEGIN", "begin");
    pipeline_envelopes(s, sub, o);
    for (size_t t = 0; !o->failed && t < kh_stats_ntables; t++) {
        int rc = 0;
        if (kh_pg_build_table(s, s->pg->copy_format, (int)t, sub, &rc) > 0 && rc == 0)
            copy_table(s, o, (int)t, false, &sql);
        else if (rc != 0)
            out_of_memory(s, o);
    }
    end_transaction(s, o);
    kh_buf_cleanup(&sql);
}

/* --- a batch ------------------------------------------------------------------------------ */

/* Values PostgreSQL refuses (class 22 data exception, 23 integrity, 54 program limit):
 * retrying cannot help; the report that carries them is refused. */
static bool is_data_error(const char *state)
{
    return state && (strncmp(state, "22", 2) == 0 || strncmp(state, "23", 2) == 0 ||
                     strncmp(state, "54", 2) == 0);
}

/* What a committed subset stored goes into the batch's counts. */
static void count_stored(struct kh_batch *b, const struct kh_pg_subset *sub,
                         const struct outcome *o)
{
    size_t webhooks = 0;
    for (size_t i = 0; i < sub->n; i++)
        webhooks += kh_report_is_webhook(sub->reports[i]);
    for (size_t t = 0; t < KH_REPORT_MAX_TABLES; t++)
        b->rows_stored[t] += o->rows[t];
    b->reports_stored[0] += o->reports[0];
    b->reports_stored[1] += o->reports[1];
    b->reports_duplicate += sub->n - webhooks - o->reports[0] - o->reports[1];
    b->webhooks_stored[0] += o->webhooks[0];
    b->webhooks_stored[1] += o->webhooks[1];
    b->webhooks_duplicate += webhooks - o->webhooks[0] - o->webhooks[1];
}

/* Whether a failed direct_copy may have met rows already stored. Citus's COPY reports a
 * worker's unique_violation as internal_error (XX000), with the worker's message: then the
 * unnest way tells, as it gives any real error its own SQLSTATE. */
static bool maybe_stored_already(const struct kh_pg_slot *s, const struct outcome *o)
{
    return strcmp(o->state, "23505") == 0 || (s->pg->citus && strcmp(o->state, "XX000") == 0);
}

/* direct_copy, and when rows were there already the unnest way, which skips them. */
static void write_direct_or_unnest(struct kh_pg_slot *s, const struct kh_pg_subset *sub,
                                   struct outcome *o)
{
    write_direct_copy(s, sub, o);
    if (o->failed && maybe_stored_already(s, o) && PQstatus(s->conn) == CONNECTION_OK) {
        kh_log(KH_LOG_DEBUG, "direct_copy: rows already stored; batch written with unnest",
               NULL);
        *o = (struct outcome){0};
        write_unnest(s, sub, o);
    }
}

static void write_method(struct kh_pg_slot *s, const struct kh_pg_subset *sub,
                         struct outcome *o)
{
    if (s->pg->use_direct_copy)
        write_direct_or_unnest(s, sub, o);
    else if (s->pg->use_copy)
        write_copy(s, sub, o);
    else
        write_unnest(s, sub, o);
}

/* Writes a subset in one transaction, adding what it stored to b's counts. 0, KH_EREJECT (a
 * data error) or KH_ERETRY. */
static int write_subset(struct kh_pg_slot *s, const struct kh_pg_subset *sub, struct kh_batch *b)
{
    struct outcome o = {0};
    int rc = kh_pg_ensure_conn(s);
    if (rc != 0)
        return rc;
    write_method(s, sub, &o);
    if (!o.failed) {
        count_stored(b, sub, &o);
        return 0;
    }
    if (PQstatus(s->conn) != CONNECTION_OK) {
        kh_pg_drop_conn(&s->conn);
        kh_pg_mark_down(s->pg, s->err);
        return KH_ERETRY;
    }
    /* connection_exception with our connection fine: a node behind it (a Citus worker) is
     * away; down until the maintenance thread sees every node again */
    if (strncmp(o.state, "08", 2) == 0)
        kh_pg_mark_down(s->pg, s->err);
    return is_data_error(o.state) ? KH_EREJECT : KH_ERETRY;
}

/* A data error somewhere in the batch: write the reports one by one to find the bad ones.
 * Reports written before are written again harmlessly (idempotent keys). */
static int isolate(struct kh_pg_slot *s, struct kh_batch *b)
{
    bool rejected = false;
    char first_err[sizeof(s->err)] = "";
    for (size_t i = 0; i < b->nreports; i++) {
        struct kh_pg_subset one = {.reports = &b->reports[i], .n = 1};
        int rc = write_subset(s, &one, b);
        if (rc == KH_ERETRY)
            return rc;
        b->results[i] = rc;
        if (rc == KH_EREJECT && !rejected) {
            rejected = true;
            snprintf(first_err, sizeof(first_err), "%s", s->err);
        }
    }
    if (rejected)
        snprintf(s->err, sizeof(s->err), "stats: PostgreSQL refused a value of this report: %.700s",
                 first_err);
    return rejected ? KH_EREJECT : 0;
}

/* Test hook (KOHAKU_FAULT_LOSE_COMMIT_ACKS): act as if the connection died after COMMIT
 * and before its answer, so that the batch is retried although it is stored. */
static bool lose_ack(struct kh_pg_slot *s, struct kh_batch *b)
{
    struct kh_pg *pg = s->pg;
    if (atomic_load(&pg->lose_acks) <= 0 || atomic_fetch_sub(&pg->lose_acks, 1) <= 0)
        return false;
    kh_pg_drop_conn(&s->conn);
    snprintf(s->err, sizeof(s->err), "fault injection: commit acknowledgement lost");
    kh_batch_reset_counts(b);
    return true;
}

int kh_pg_write(struct kh_store *st, int slot, struct kh_batch *b, const char **err)
{
    struct kh_pg *pg = st->impl;
    struct kh_pg_slot *s = &pg->slots[slot];
    struct kh_pg_subset all = {.reports = b->reports, .n = b->nreports};
    for (size_t i = 0; i < b->nreports; i++)
        b->results[i] = 0;
    *err = s->err;
    kh_batch_reset_counts(b);
    int rc = write_subset(s, &all, b);
    if (rc == KH_EREJECT)
        return isolate(s, b);
    return rc == 0 && lose_ack(s, b) ? KH_ERETRY : rc;
}
