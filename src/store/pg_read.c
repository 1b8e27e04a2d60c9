/*
 * pg_read: reading back. `latest` finds, for a batch's connections at once, the rows their
 * latest stored report before a time left (the quality stage's previous state): one
 * statement per table, the connections and times as array parameters, unnest'ed and joined
 * LATERAL to the newest anchor row of each (an index probe on the key's (connection_id,
 * time) prefix). `query` runs one read-only statement for the command line or the console on
 * a connection of its own. Values come back in text format and are decoded by their column
 * type; SQL text comes from the schema or the caller's constants, values only as parameters.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "core/timeutil.h"
#include "sora/schema.h"
#include "store/pg_internal.h"

/* PostgreSQL's type OIDs (pg_type.dat) of what a result cell may be. */
#define OID_BOOL 16
#define OID_INT8 20
#define OID_INT2 21
#define OID_INT4 23
#define OID_FLOAT4 700
#define OID_FLOAT8 701
#define OID_NUMERIC 1700

/* A text-format cell as a value of type `want`: strings copied into the arena when there is
 * one (else pointing into the result). 0, KH_EINVAL (not a number) or KH_ENOMEM. */
static int decode(const char *s, int len, enum kh_coltype want, struct kh_arena *a,
                  struct kh_value *v)
{
    *v = (struct kh_value){.type = (uint8_t)want};
    char *end;
    errno = 0;
    switch (want) {
    case KH_COL_INT:
        v->u.i = strtoll(s, &end, 10);
        return errno || end == s ? KH_EINVAL : 0;
    case KH_COL_REAL:
        v->u.d = strtod(s, &end); /* "NaN", "Infinity" too */
        return end == s ? KH_EINVAL : 0;
    case KH_COL_BOOL: v->u.b = s[0] == 't'; return 0;
    default:
        v->len = (uint32_t)len;
        v->u.s = a ? kh_arena_strndup(a, s, (size_t)len) : s;
        return v->u.s ? 0 : KH_ENOMEM;
    }
}

static int cell(PGresult *r, int row, int col, enum kh_coltype want, struct kh_arena *a,
                struct kh_value *v)
{
    if (PQgetisnull(r, row, col)) {
        *v = (struct kh_value){.type = 0};
        return 0;
    }
    return decode(PQgetvalue(r, row, col), PQgetlength(r, row, col), want, a, v);
}

/* --- latest ----------------------------------------------------------------------------- */

/* SELECT q.i, the anchor's time (µs), the row's columns FROM the queries, each joined to its
 * newest anchor row in its window, joined to table t's rows at that time. */
static int latest_sql(int anchor, int t, struct kh_buf *b)
{
    int rc = kh_buf_printf(b, "SELECT q.i, ");
    rc = rc ? rc : kh_schema_time_usec_sql(KH_DIALECT_POSTGRES, "a.\"time\"", b);
    rc = rc ? rc : kh_buf_printf(b, ", ");
    rc = rc ? rc : kh_schema_select_columns(t, "x", b);
    rc = rc ? rc
            : kh_buf_printf(b,
                            " FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[]) "
                            "WITH ORDINALITY AS q(cid, t, lo, i) CROSS JOIN LATERAL (SELECT "
                            "\"time\" FROM \"%s\" WHERE \"connection_id\" = q.cid AND \"time\" "
                            "< q.t AND \"time\" >= q.lo ORDER BY \"time\" DESC LIMIT 1) a JOIN "
                            "\"%s\" x ON x.\"connection_id\" = q.cid AND x.\"time\" = a.\"time\"",
                            kh_stats_tables[anchor].table, kh_stats_tables[t].table);
    return rc;
}

/* Citus cannot plan the LATERAL join above (a correlated subquery on a distributed table):
 * the queries are materialised (Citus sends them to the shards as an intermediate result)
 * and each one's newest anchor time is a max() grouped by the distribution column, so that
 * the anchor and table t join on it shard by shard. The same rows as latest_sql. */
static int citus_anchor_sql(int anchor, struct kh_buf *b)
{
    return kh_buf_printf(b,
                         "WITH q AS MATERIALIZED (SELECT * FROM unnest($1::text[], "
                         "$2::timestamptz[], $3::timestamptz[]) WITH ORDINALITY AS q(cid, t, lo, "
                         "i)) SELECT q.i, n.\"connection_id\", max(n.\"time\") AS \"time\" FROM "
                         "\"%s\" n JOIN q ON n.\"connection_id\" = q.cid AND n.\"time\" < q.t "
                         "AND n.\"time\" >= q.lo WHERE n.\"connection_id\" = ANY($1::text[]) "
                         "GROUP BY n.\"connection_id\", q.i",
                         kh_stats_tables[anchor].table);
}

static int citus_latest_sql(int anchor, int t, struct kh_buf *b)
{
    int rc = kh_buf_printf(b, "SELECT a.i, ");
    rc = rc ? rc : kh_schema_time_usec_sql(KH_DIALECT_POSTGRES, "a.\"time\"", b);
    rc = rc ? rc : kh_buf_printf(b, ", ");
    rc = rc ? rc : kh_schema_select_columns(t, "x", b);
    rc = rc ? rc : kh_buf_printf(b, " FROM (");
    rc = rc ? rc : citus_anchor_sql(anchor, b);
    rc = rc ? rc
            : kh_buf_printf(b,
                            ") a JOIN \"%s\" x ON x.\"connection_id\" = a.\"connection_id\" "
                            "AND x.\"time\" = a.\"time\"",
                            kh_stats_tables[t].table);
    return rc;
}

/* SELECT q.i, the anchor's time (µs) of every query that has one: times only. */
static int times_sql(bool citus, int anchor, struct kh_buf *b)
{
    if (citus) {
        int rc = kh_buf_printf(b, "SELECT a.i, ");
        rc = rc ? rc : kh_schema_time_usec_sql(KH_DIALECT_POSTGRES, "a.\"time\"", b);
        rc = rc ? rc : kh_buf_printf(b, " FROM (");
        rc = rc ? rc : citus_anchor_sql(anchor, b);
        return rc ? rc : kh_buf_printf(b, ") a");
    }
    int rc = kh_buf_printf(b, "SELECT q.i, ");
    rc = rc ? rc : kh_schema_time_usec_sql(KH_DIALECT_POSTGRES, "a.\"time\"", b);
    rc = rc ? rc
            : kh_buf_printf(b,
                            " FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[]) "
                            "WITH ORDINALITY AS q(cid, t, lo, i) CROSS JOIN LATERAL (SELECT "
                            "\"time\" FROM \"%s\" WHERE \"connection_id\" = q.cid AND \"time\" "
                            "< q.t AND \"time\" >= q.lo ORDER BY \"time\" DESC LIMIT 1) a",
                            kh_stats_tables[anchor].table);
    return rc;
}

/* The three array parameters: connection ids, before and window start, as array text. */
static int latest_params(struct kh_pg_slot *s, const struct kh_latest_query *q)
{
    int rc = 0;
    for (int c = 0; c < 3; c++) {
        kh_buf_reset(&s->cols[c]);
        rc |= kh_buf_append(&s->cols[c], "{", 1);
    }
    for (size_t i = 0; rc == 0 && i < q->n; i++) {
        char t[KH_TIME_TEXT_LEN + 1], lo[KH_TIME_TEXT_LEN + 1];
        kh_time_format(q->before_usec[i], t);
        kh_time_format(kh_latest_after(q, i), lo);
        rc |= kh_pg_put_text(&s->cols[0], KH_PG_ARRAY, i == 0, q->connection_ids[i].p,
                             q->connection_ids[i].len);
        rc |= kh_pg_put_time(&s->cols[1], KH_PG_ARRAY, i == 0, q->before_usec[i], t);
        rc |= kh_pg_put_time(&s->cols[2], KH_PG_ARRAY, i == 0, q->before_usec[i], lo);
    }
    for (int c = 0; rc == 0 && c < 3; c++) {
        rc = kh_buf_append(&s->cols[c], "}", 2); /* with the NUL */
        s->params[c] = s->cols[c].data;
    }
    return rc ? KH_ENOMEM : 0;
}

/* Row k of a times-only result: its query's time. */
static int latest_time(PGresult *r, int k, struct kh_latest_query *q)
{
    struct kh_value idx, when;
    if (cell(r, k, 0, KH_COL_INT, NULL, &idx) != 0 || cell(r, k, 1, KH_COL_INT, NULL, &when) ||
        idx.u.i < 1 || (size_t)idx.u.i > q->n)
        return KH_EINVAL;
    q->found_usec[idx.u.i - 1] = when.u.i;
    return 0;
}

/* Row k of the result as a row of table t, appended to query i's list. */
static int latest_row(PGresult *r, int k, int t, struct kh_latest_query *q, int64_t *i_out,
                      struct kh_row **out)
{
    struct kh_value idx, when, v[3];
    if (cell(r, k, 0, KH_COL_INT, NULL, &idx) != 0 || cell(r, k, 1, KH_COL_INT, NULL, &when) ||
        idx.u.i < 1 || (size_t)idx.u.i > q->n)
        return KH_EINVAL;
    size_t nm = kh_stats_tables[t].nmembers;
    struct kh_row *row = kh_arena_alloc(q->arena, sizeof(*row));
    struct kh_value *vals = kh_arena_alloc(q->arena, (nm ? nm : 1) * sizeof(*vals));
    if (row == NULL || vals == NULL)
        return KH_ENOMEM;
    int rc = cell(r, k, 2, KH_COL_TEXT, q->arena, &v[0]);
    rc |= cell(r, k, 3, KH_COL_TEXT, q->arena, &v[1]);
    rc |= cell(r, k, 4, KH_COL_REAL, NULL, &v[2]);
    *row = (struct kh_row){.table = t, .vals = vals};
    row->stats_type = (struct kh_str){v[0].type ? v[0].u.s : "", v[0].len};
    row->stats_id = (struct kh_str){v[1].type ? v[1].u.s : "", v[1].len};
    row->stats_timestamp = v[2].type ? v[2].u.d : 0;
    for (size_t m = 0; rc == 0 && m < nm; m++)
        rc = cell(r, k, 5 + (int)m, kh_stats_tables[t].members[m].type, q->arena, &vals[m]);
    *i_out = idx.u.i - 1;
    q->found_usec[idx.u.i - 1] = when.u.i;
    *out = row;
    return rc;
}

/* Table t's rows for every query, in one statement (t < 0: the anchor's times only). */
static int latest_table(struct kh_pg_slot *s, struct kh_latest_query *q, int t,
                        struct kh_row ***tails, const char **err)
{
    struct kh_buf sql;
    kh_buf_init(&sql, 1u << 20);
    bool citus = s->pg->citus;
    int rc = t < 0              ? times_sql(citus, q->anchor, &sql)
             : citus ? citus_latest_sql(q->anchor, t, &sql)
                     : latest_sql(q->anchor, t, &sql);
    PGresult *r = NULL;
    if (rc == 0)
        r = PQexecParams(s->conn, sql.data, 3, NULL, s->params, NULL, NULL, 0);
    kh_buf_cleanup(&sql);
    if (rc != 0) {
        *err = "out of memory building a statement";
        return KH_ENOMEM;
    }
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        kh_pg_error(s->err, sizeof(s->err), "reading back", s->conn, r);
        PQclear(r);
        *err = s->err;
        if (PQstatus(s->conn) == CONNECTION_OK)
            return KH_EIO; /* the statement failed, not the database */
        kh_pg_mark_down(s->pg, s->err);
        return KH_ERETRY;
    }
    for (int k = 0; rc == 0 && k < PQntuples(r); k++) {
        int64_t i;
        struct kh_row *row;
        if (t < 0) {
            rc = latest_time(r, k, q);
            continue;
        }
        rc = latest_row(r, k, t, q, &i, &row);
        if (rc == 0) {
            *tails[i] = row;
            tails[i] = &row->next;
        }
    }
    PQclear(r);
    if (rc != 0)
        *err = rc == KH_ENOMEM ? "out of memory reading back" : "reading back: a bad value";
    return rc == KH_EINVAL ? KH_EIO : rc;
}

int kh_pg_latest(struct kh_store *st, int slot, struct kh_latest_query *q, const char **err)
{
    struct kh_pg *pg = st->impl;
    struct kh_pg_slot *s = &pg->slots[slot];
    for (size_t i = 0; i < q->n; i++) {
        q->found_usec[i] = 0;
        q->rows[i] = NULL;
    }
    if (q->n == 0)
        return 0;
    int rc = kh_pg_ensure_conn(s);
    if (rc != 0) {
        *err = s->err;
        return rc;
    }
    struct kh_row ***tails = malloc(q->n * sizeof(*tails));
    if (tails == NULL || latest_params(s, q) != 0) {
        free(tails);
        *err = "out of memory reading back";
        return KH_ENOMEM;
    }
    for (size_t i = 0; i < q->n; i++)
        tails[i] = &q->rows[i];
    if (q->ntables == 0)
        rc = latest_table(s, q, -1, tails, err);
    for (size_t k = 0; rc == 0 && k < q->ntables; k++)
        rc = latest_table(s, q, q->tables[k], tails, err);
    free(tails);
    return rc;
}

/* --- query ------------------------------------------------------------------------------ */

static enum kh_coltype type_of(Oid oid)
{
    switch (oid) {
    case OID_BOOL: return KH_COL_BOOL;
    case OID_INT2:
    case OID_INT4:
    case OID_INT8: return KH_COL_INT;
    case OID_FLOAT4:
    case OID_FLOAT8:
    case OID_NUMERIC: return KH_COL_REAL;
    default: return KH_COL_TEXT;
    }
}

/* Parameters as text: numbers formatted, booleans t/f, strings as they are. */
static int text_params(const struct kh_value *params, int n, char (*num)[32],
                       const char **out)
{
    for (int i = 0; i < n; i++) {
        const struct kh_value *v = &params[i];
        switch (v->type) {
        case 0: out[i] = NULL; break;
        case KH_COL_INT: snprintf(num[i], 32, "%lld", (long long)v->u.i), out[i] = num[i]; break;
        case KH_COL_REAL: snprintf(num[i], 32, "%.17g", v->u.d), out[i] = num[i]; break;
        case KH_COL_BOOL: out[i] = v->u.b ? "t" : "f"; break;
        default:
            if (memchr(v->u.s, '\0', v->len) != NULL)
                return KH_EINVAL; /* libpq takes text to its NUL (store.h: NUL-terminated) */
            out[i] = v->u.s;
        }
    }
    return 0;
}

#define MAX_PARAMS 16

/* How the read connection's errors begin: naming postgres_read_uri when it is another
 * database, so that an operator knows which one failed. */
static const char *read_key(const struct kh_pg *pg)
{
    return pg->read_uri ? "postgres_read_uri: " : "";
}

static const char *read_what(const struct kh_pg *pg)
{
    return pg->read_uri ? "postgres_read_uri: query" : "query";
}

static void forget_prepared(struct kh_pg *pg)
{
    for (size_t i = 0; i < pg->nqprep; i++)
        free(pg->qprep[i]);
    pg->nqprep = 0;
}

/* The query connection's prepared statement of sql, prepared now if it is not yet: its
 * index (name "kqN"), or -1 with pg->qerr set. The console asks the same few dozen questions
 * again and again, many over partitioned tables and views whose planning costs more than the
 * answer (a channel's 24 participants: 48 questions of 3-8 ms planning, 0.5-3 ms running);
 * prepared, PostgreSQL plans each once for good or from the parameters, as its plan cache
 * decides. */
static int prepared(struct kh_pg *pg, const char *sql, int nparams)
{
    for (size_t i = 0; i < pg->nqprep; i++)
        if (strcmp(pg->qprep[i], sql) == 0)
            return (int)i;
    if (pg->nqprep == KH_PG_QPREP) {
        if (kh_pg_exec(pg->qconn, "DEALLOCATE ALL", pg->qerr, sizeof(pg->qerr)) != 0)
            return -1;
        forget_prepared(pg);
    }
    char *copy = strdup(sql);
    if (copy == NULL) {
        snprintf(pg->qerr, sizeof(pg->qerr), "query: out of memory");
        return -1;
    }
    char name[16];
    snprintf(name, sizeof(name), "kq%zu", pg->nqprep);
    PGresult *r = PQprepare(pg->qconn, name, sql, nparams, NULL);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        kh_pg_error(pg->qerr, sizeof(pg->qerr), read_what(pg), pg->qconn, r);
        PQclear(r);
        free(copy);
        return -1;
    }
    PQclear(r);
    pg->qprep[pg->nqprep] = copy;
    return (int)pg->nqprep++;
}

/* The read connection to postgres_read_uri's database when one is set (a replica, say),
 * else postgres_uri's. 0, or -1 with qerr set: the server away or refusing, or, for another
 * database, its schema not this kohaku's version (a replica that has not replayed the
 * migration yet, a database kohaku never migrated), which the console's questions assume. */
static int open_read(struct kh_pg *pg)
{
    char why[sizeof(pg->qerr) - 64];
    pg->qconn = kh_pg_connect(pg, pg->read_uri ? pg->read_uri : pg->uri, KH_PG_APP_READ, why,
                              sizeof(why));
    /* No parallel workers and no JIT: the console's questions are small lookups whose
     * plans the estimates of jsonb_each make look large (a channel's issue spans cost
     * 170k), so a worker's start (15-20 ms here) would cost ten times the query and
     * JIT would compile some 90 functions at each call (most of a 300-600 ms answer
     * under ingest); workers would also take CPUs from ingest. */
    char set[160];
    snprintf(set, sizeof(set),
             "SET statement_timeout = %lld; SET max_parallel_workers_per_gather = 0; "
             "SET jit = off",
             (long long)pg->query_timeout_ms);
    if (pg->qconn && kh_pg_exec(pg->qconn, set, why, sizeof(why)) != 0)
        kh_pg_drop_conn(&pg->qconn);
    if (pg->qconn == NULL) {
        snprintf(pg->qerr, sizeof(pg->qerr), "%s%s", read_key(pg), why);
        return -1;
    }
    if (pg->read_uri == NULL)
        return 0; /* postgres_uri's database: the writers migrated it */
    /* the table's absence first, so that a failure of the read itself (the connection
     * dropped, a permission) is not reported as a database kohaku never migrated */
    long long found = 0, have = 0;
    if (kh_pg_query_int(pg->qconn,
                        "SELECT (to_regclass('kohaku_schema_version') IS NOT NULL)::int", &found,
                        why, sizeof(why)) != 0 ||
        (found && kh_pg_query_int(pg->qconn,
                                  "SELECT coalesce(max(version), 0) FROM kohaku_schema_version",
                                  &have, why, sizeof(why)) != 0))
        snprintf(pg->qerr, sizeof(pg->qerr),
                 "postgres_read_uri: cannot read the schema version there (%s)", why);
    else if (!found)
        snprintf(pg->qerr, sizeof(pg->qerr),
                 "postgres_read_uri: no kohaku schema there (no table kohaku_schema_version)");
    else if (have != kh_schema_latest_version())
        snprintf(pg->qerr, sizeof(pg->qerr),
                 "postgres_read_uri: the database there is at schema version %lld, this "
                 "kohaku's is %d",
                 have, kh_schema_latest_version());
    else
        return 0;
    kh_pg_drop_conn(&pg->qconn);
    return -1;
}

int kh_pg_query(struct kh_store *st, const char *sql, const struct kh_value *params,
                int nparams, unsigned flags, kh_store_row_fn fn, void *arg, const char **err)
{
    struct kh_pg *pg = st->impl;
    char num[MAX_PARAMS][32];
    const char *text[MAX_PARAMS];
    if (nparams > MAX_PARAMS || text_params(params, nparams, num, text) != 0) {
        *err = "query: bad parameters";
        return KH_EINVAL;
    }
    if (pg->qconn == NULL || PQstatus(pg->qconn) != CONNECTION_OK) {
        kh_pg_drop_conn(&pg->qconn);
        forget_prepared(pg); /* they went with the connection */
        if (open_read(pg) != 0) {
            *err = pg->qerr;
            return KH_ERETRY;
        }
    }
    PGresult *r;
    if (flags & KH_QUERY_PLAN_EACH) { /* the unnamed statement: planned for these values */
        r = PQexecParams(pg->qconn, sql, nparams, NULL, text, NULL, NULL, 0);
    } else {
        int stmt = prepared(pg, sql, nparams);
        if (stmt < 0) {
            *err = pg->qerr;
            return PQstatus(pg->qconn) == CONNECTION_OK ? KH_EIO : KH_ERETRY;
        }
        char name[16];
        snprintf(name, sizeof(name), "kq%d", stmt);
        r = PQexecPrepared(pg->qconn, name, nparams, text, NULL, NULL, 0);
    }
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        kh_pg_error(pg->qerr, sizeof(pg->qerr), read_what(pg), pg->qconn, r);
        PQclear(r);
        *err = pg->qerr;
        return PQstatus(pg->qconn) == CONNECTION_OK ? KH_EIO : KH_ERETRY;
    }
    int ncols = PQnfields(r), rc = 0;
    struct kh_value cells[KH_STORE_MAX_CELLS];
    if (ncols > KH_STORE_MAX_CELLS) {
        PQclear(r);
        *err = "query: more columns than kohaku reads at once";
        return KH_EINVAL;
    }
    for (int k = 0; rc == 0 && k < PQntuples(r); k++) {
        for (int c = 0; rc == 0 && c < ncols; c++)
            rc = cell(r, k, c, type_of(PQftype(r, c)), NULL, &cells[c]);
        if (rc != 0) {
            *err = "query: a value kohaku cannot read";
            rc = KH_EIO;
        }
        rc = rc ? rc : fn(arg, cells, ncols);
    }
    PQclear(r);
    return rc;
}
