/*
 * pg_rows: a batch's values, laid out for the postgres writers in the slot's buffers: per
 * stats table either one array literal per column (the unnest statements' parameters) or
 * COPY data (text or binary) in cols[0]; per envelope table one array per column. Columns
 * come from the schema's descriptions, values from the reports (kh_report_common_value) or,
 * for the tables a webhook carries rows of, from those rows; encodings from pg_encode.
 * Nothing here talks to the server.
 */
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "sora/schema.h"
#include "store/pg_internal.h"

static void cols_begin(struct kh_pg_slot *s, int n)
{
    for (int i = 0; i < n; i++) {
        kh_buf_reset(&s->cols[i]);
        kh_buf_append(&s->cols[i], "{", 1);
    }
}

static int cols_end(struct kh_pg_slot *s, int n)
{
    for (int i = 0; i < n; i++) {
        if (kh_buf_append(&s->cols[i], "}", 2) != 0) /* with the NUL */
            return KH_ENOMEM;
        s->params[i] = s->cols[i].data;
    }
    return 0;
}

/* --- stats tables ------------------------------------------------------------------------- */

/* Field i of a row: its column's own buffer as arrays, the row's buffer in COPY. The
 * separator goes before every array element but a column's first (first row) and before
 * every COPY field but the row's first. */
static struct kh_buf *field(struct kh_pg_slot *s, enum kh_pg_format f, size_t i)
{
    return &s->cols[f == KH_PG_ARRAY ? i : 0];
}

static bool leads(enum kh_pg_format f, bool first_row, size_t i)
{
    return f == KH_PG_ARRAY ? first_row : i == 0;
}

/* A common column's value; the time goes as microseconds in binary. */
static int put_common(struct kh_buf *b, enum kh_pg_format f, bool first,
                      const struct kh_report *r, const struct kh_row *row, int src)
{
    if (src == KH_SRC_TIME)
        return kh_pg_put_time(b, f, first, r->time_usec, r->time_text);
    struct kh_value v = kh_report_common_value(r, row, src);
    return kh_pg_put_value(b, f, first, &v);
}

/* Appends one row's fields: common columns, members, extra (if the table has it). */
static int put_row(struct kh_pg_slot *s, enum kh_pg_format f, bool first_row,
                   const struct kh_report *r, const struct kh_row *row)
{
    const struct kh_scope_desc *sc = kh_schema_scope(row->table);
    size_t nm = kh_stats_tables[row->table].nmembers, i = 0;
    int rc = f == KH_PG_BINARY ? kh_pg_binary_row(&s->cols[0], kh_pg_ncols(row->table)) : 0;
    for (size_t k = 0; k < sc->ncols; k++, i++)
        rc |= put_common(field(s, f, i), f, leads(f, first_row, i), r, row, (int)sc->cols[k].src);
    for (size_t m = 0; m < nm; m++, i++)
        rc |= kh_pg_put_value(field(s, f, i), f, leads(f, first_row, i), &row->vals[m]);
    if (kh_schema_has_extra(row->table))
        rc |= kh_pg_put_jsonb(field(s, f, i), f, leads(f, first_row, i), row->extra.p,
                              row->extra.len);
    if (f == KH_PG_COPY)
        rc |= kh_buf_append(&s->cols[0], "\n", 1);
    return rc ? KH_ENOMEM : 0;
}

size_t kh_pg_build_table(struct kh_pg_slot *s, enum kh_pg_format f, int t,
                         const struct kh_pg_subset *sub, int *rc)
{
    size_t count = 0;
    if (f == KH_PG_ARRAY)
        cols_begin(s, kh_pg_ncols(t));
    else
        kh_buf_reset(&s->cols[0]);
    if (f == KH_PG_BINARY)
        *rc = kh_pg_binary_header(&s->cols[0]);
    for (size_t i = 0; *rc == 0 && i < sub->n; i++)
        if (sub->reports[i]->table_rows[t] > 0) /* the rows counted as they were added */
            for (const struct kh_row *row = sub->reports[i]->rows; *rc == 0 && row;
                 row = row->next)
                if (row->table == t && kh_row_written(row))
                    *rc = put_row(s, f, count++ == 0, sub->reports[i], row);
    if (*rc == 0 && f == KH_PG_ARRAY)
        *rc = cols_end(s, kh_pg_ncols(t));
    if (*rc == 0 && f == KH_PG_BINARY)
        *rc = kh_pg_binary_trailer(&s->cols[0]);
    return count;
}

/* --- envelope tables ---------------------------------------------------------------------- */

/* Upserted rows are sorted by their key's value (text), then by time. */
struct env_order {
    struct kh_report **reports;
    int key_src; /* enum kh_common_src of the key's column */
};

static int cmp_text(const struct kh_value *a, const struct kh_value *b)
{
    size_t n = a->len < b->len ? a->len : b->len;
    int c = memcmp(a->u.s, b->u.s, n);
    return c ? c : (a->len > b->len) - (a->len < b->len);
}

static struct kh_value key_of(const struct env_order *eo, size_t i)
{
    return kh_report_common_value(eo->reports[i], NULL, eo->key_src);
}

static int cmp_report(const void *a, const void *b, void *arg)
{
    const struct env_order *eo = arg;
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    struct kh_value kx = key_of(eo, x), ky = key_of(eo, y);
    int c = cmp_text(&kx, &ky);
    return c ? c : strcmp(eo->reports[x]->time_text, eo->reports[y]->time_text);
}

static bool same_key(const struct env_order *eo, size_t x, size_t y)
{
    struct kh_value kx = key_of(eo, x), ky = key_of(eo, y);
    return cmp_text(&kx, &ky) == 0;
}

/* The source of the table's key column (an upsert's key is one column). */
static int key_src(const struct kh_env_table *et)
{
    for (size_t c = 0; c < et->ncols; c++)
        if (strcmp(et->cols[c].name, et->key[0]) == 0)
            return (int)et->cols[c].src;
    return KH_SRC_CONNECTION_ID;
}

/* s->order gets the indexes of the subset's reports that have a row in the table: for an
 * upsert sorted by key, so that concurrent writers lock rows in the same order. */
static int select_reports(struct kh_pg_slot *s, const struct kh_pg_subset *sub, int t,
                          size_t *n)
{
    const struct kh_env_table *et = &kh_env_tables[t];
    if (s->order_cap < sub->n) {
        size_t *o = realloc(s->order, sub->n * sizeof(*o));
        if (o == NULL)
            return KH_ENOMEM;
        s->order = o;
        s->order_cap = sub->n;
    }
    *n = 0;
    for (size_t i = 0; i < sub->n; i++)
        if (kh_schema_env_applies(t, (int)sub->reports[i]->kind))
            s->order[(*n)++] = i;
    struct env_order eo = {sub->reports, key_src(et)};
    if (et->upsert)
        qsort_r(s->order, *n, sizeof(size_t), cmp_report, &eo);
    return 0;
}

/* a < b for two non-NULL values of one column's type */
static bool value_less(const struct kh_value *a, const struct kh_value *b)
{
    switch (a->type) {
    case KH_COL_INT: return a->u.i < b->u.i;
    case KH_COL_REAL: return a->u.d < b->u.d;
    case KH_COL_BOOL: return !a->u.b && b->u.b;
    default: {
        int c = memcmp(a->u.s, b->u.s, a->len < b->len ? a->len : b->len);
        return c < 0 || (c == 0 && a->len < b->len);
    }
    }
}

/* The report of one key's run (reports[run[0..n)], sorted by time) whose value a column
 * takes, merged as the upsert merges reports stored one after the other: the earliest for a
 * kept column, the smallest or largest non-NULL value for min and max (the envelope's time
 * is the earliest and latest report's), the earliest non-NULL one for fill, the latest
 * non-NULL one for coalesce, the latest for replace. */
static const struct kh_report *merged_from(struct kh_report **reports, const size_t *run,
                                           size_t n, const struct kh_env_column *col)
{
    if (col->merge == KH_MERGE_KEEP || (col->merge == KH_MERGE_MIN && col->src == KH_SRC_TIME))
        return reports[run[0]];
    if (col->merge == KH_MERGE_MAX && (col->src == KH_SRC_TIME || col->src == KH_SRC_TIME_HOUR))
        return reports[run[n - 1]]; /* the latest report has the largest hour too */
    if (col->merge == KH_MERGE_MIN || col->merge == KH_MERGE_MAX || col->merge == KH_MERGE_FILL) {
        size_t best = 0;
        struct kh_value bv = {0};
        for (size_t k = 0; k < n; k++) {
            struct kh_value v = kh_report_common_value(reports[run[k]], NULL, (int)col->src);
            if (v.type == 0)
                continue;
            bool better = bv.type == 0 ||
                          (col->merge == KH_MERGE_MIN && value_less(&v, &bv)) ||
                          (col->merge == KH_MERGE_MAX && value_less(&bv, &v));
            if (better)
                best = k, bv = v;
            if (col->merge == KH_MERGE_FILL)
                break;
        }
        return reports[run[best]];
    }
    if (col->merge == KH_MERGE_COALESCE)
        for (size_t k = n; k-- > 1;)
            if (kh_report_common_value(reports[run[k]], NULL, (int)col->src).type != 0)
                return reports[run[k]];
    return reports[run[n - 1]];
}

/* One row of an envelope table from a run of reports of one key. */
static int put_env_row(struct kh_pg_slot *s, const struct kh_env_table *et, bool f,
                       struct kh_report **reports, const size_t *run, size_t n)
{
    int rc = 0;
    for (size_t c = 0; c < et->ncols; c++) {
        const struct kh_report *r = merged_from(reports, run, n, &et->cols[c]);
        struct kh_value v = kh_report_common_value(r, NULL, (int)et->cols[c].src);
        rc |= kh_pg_put_value(&s->cols[c], KH_PG_ARRAY, f, &v);
    }
    return rc;
}

/* The rows of a carried table the subset's reports hold, in their order; the statement
 * merges those of one key (kh_schema_env_rows_sql). */
static int build_carried(struct kh_pg_slot *s, const struct kh_pg_subset *sub, int t,
                         size_t *count)
{
    const struct kh_env_table *et = &kh_env_tables[t];
    int rc = 0;
    cols_begin(s, (int)et->ncols);
    *count = 0;
    for (size_t i = 0; rc == 0 && i < sub->n; i++)
        for (const struct kh_env_row *row = sub->reports[i]->env_rows; rc == 0 && row;
             row = row->next) {
            if (row->table != t)
                continue;
            bool first = (*count)++ == 0;
            for (size_t c = 0; c < et->ncols; c++)
                rc |= kh_pg_put_value(&s->cols[c], KH_PG_ARRAY, first, &row->vals[c]);
        }
    return rc ? KH_ENOMEM : cols_end(s, (int)et->ncols);
}

/* For an upsert one row per key (a batch may hold several reports of one connection, and
 * one statement may not update a row twice), otherwise one per report; a carried table's
 * rows as the reports hold them. */
int kh_pg_build_envelopes(struct kh_pg_slot *s, const struct kh_pg_subset *sub, int t,
                          size_t *count)
{
    const struct kh_env_table *et = &kh_env_tables[t];
    if (et->kind == KH_ENV_CARRIED)
        return build_carried(s, sub, t, count);
    size_t n;
    int rc = select_reports(s, sub, t, &n);
    if (rc != 0)
        return rc;
    struct env_order eo = {sub->reports, key_src(et)};
    cols_begin(s, (int)et->ncols);
    *count = 0;
    for (size_t i = 0; rc == 0 && i < n;) {
        size_t j = i;
        while (et->upsert && j + 1 < n && same_key(&eo, s->order[i], s->order[j + 1]))
            j++;
        rc = put_env_row(s, et, (*count)++ == 0, sub->reports, s->order + i, j - i + 1);
        i = j + 1;
    }
    return rc ? KH_ENOMEM : cols_end(s, (int)et->ncols);
}
