/*
 * ask: SQL templates for both dialects and their result tables. See ask.h.
 */
#include "api/ask.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "sora/schema.h"

void kh_ask_init(struct kh_ask *a, struct kh_store *st, const char **err)
{
    *a = (struct kh_ask){.st = st, .pg = st->ops->dialect == KH_DIALECT_POSTGRES, .err = err};
    kh_arena_init(&a->arena, 65536, 256u << 20);
    kh_buf_init(&a->sql, 1u << 20);
}

void kh_ask_cleanup(struct kh_ask *a)
{
    kh_buf_cleanup(&a->sql);
    kh_arena_cleanup(&a->arena);
}

static int collect(void *arg, const struct kh_value *cells, int ncells)
{
    struct kh_ask_table *t = arg;
    if (t->n == 0 && t->cap == 0)
        t->ncols = ncells;
    if (ncells != t->ncols)
        return KH_EIO;
    if (t->n == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 16;
        struct kh_value *c = realloc(t->cells, cap * (size_t)(t->ncols ? t->ncols : 1) *
                                                   sizeof(*c));
        if (c == NULL)
            return KH_ENOMEM;
        t->cells = c;
        t->cap = cap;
    }
    struct kh_value *row = &t->cells[t->n * (size_t)t->ncols];
    for (int i = 0; i < ncells; i++) {
        row[i] = cells[i];
        if (cells[i].type == KH_COL_TEXT || cells[i].type == KH_COL_JSON) {
            row[i].u.s = kh_arena_strndup(t->arena, cells[i].u.s, cells[i].len);
            if (row[i].u.s == NULL)
                return KH_ENOMEM;
        }
    }
    t->n++;
    return 0;
}

/* Appends a template: "@N" -> ?N / $N, "#(expr)" -> expr's microseconds. */
int kh_ask_add(struct kh_ask *a, const char *tmpl)
{
    int rc = 0;
    for (const char *p = tmpl; rc == 0 && *p; p++) {
        if (*p == '@' && p[1] >= '0' && p[1] <= '9') {
            char *end;
            long n = strtol(p + 1, &end, 10);
            rc = kh_buf_printf(&a->sql, "%c%ld", a->pg ? '$' : '?', n);
            p = end - 1;
        } else if (*p == '#' && p[1] == '(') {
            const char *end = strchr(p, ')');
            char expr[128];
            if (end == NULL || end - p - 2 >= (long)sizeof(expr))
                return KH_EINVAL; /* a template bug */
            snprintf(expr, sizeof(expr), "%.*s", (int)(end - p - 2), p + 2);
            rc = kh_schema_time_usec_sql(a->pg ? KH_DIALECT_POSTGRES : KH_DIALECT_SQLITE,
                                         expr, &a->sql);
            p = end;
        } else {
            rc = kh_buf_append(&a->sql, p, 1);
        }
    }
    if (rc != 0)
        *a->err = "out of memory building a query";
    return rc;
}

int kh_ask_sql(struct kh_ask *a, const char *tmpl)
{
    kh_buf_reset(&a->sql);
    return kh_ask_add(a, tmpl);
}

int kh_ask_raw(struct kh_ask *a, const char *text)
{
    int rc = kh_buf_append(&a->sql, text, strlen(text));
    if (rc != 0)
        *a->err = "out of memory building a query";
    return rc;
}

void kh_ask_table_free(struct kh_ask_table *t)
{
    free(t->cells);
    t->cells = NULL;
    t->n = t->cap = 0;
}

int kh_ask_run(struct kh_ask *a, struct kh_ask_table *t, const struct kh_value *params, int n)
{
    kh_ask_table_free(t);
    *t = (struct kh_ask_table){.arena = &a->arena};
    if (kh_buf_append(&a->sql, "", 1) != 0) {
        *a->err = "out of memory building a query";
        return KH_ENOMEM;
    }
    a->sql.len--; /* the NUL stays after the text; more may be added */
    unsigned flags = a->plan_each ? KH_QUERY_PLAN_EACH : 0;
    a->plan_each = false;
    return a->st->ops->query(a->st, a->sql.data, params, n, flags, collect, t, a->err);
}

int kh_ask(struct kh_ask *a, const char *tmpl, struct kh_ask_table *t,
           const struct kh_value *params, int n)
{
    int rc = kh_ask_sql(a, tmpl);
    return rc ? rc : kh_ask_run(a, t, params, n);
}

int kh_ask_schema_at_least(struct kh_ask *a, int need, const char *what)
{
    struct kh_ask_table t = {0};
    int rc = kh_ask(a, "SELECT coalesce(max(version), 0) FROM kohaku_schema_version", &t, NULL,
                    0);
    int64_t v = rc == 0 && t.n ? kh_ask_int(&t, 0, 0) : 0;
    kh_ask_table_free(&t);
    if (rc == 0 && v < need) {
        *a->err = kh_errf("the database's schema is version %lld, without %s (version %d): "
                          "run kohaku migrate",
                          (long long)v, what, need);
        rc = KH_EIO;
    }
    return rc;
}

const struct kh_value *kh_ask_cell(const struct kh_ask_table *t, size_t row, int col)
{
    return &t->cells[row * (size_t)t->ncols + (size_t)col];
}

double kh_ask_num(const struct kh_ask_table *t, size_t row, int col)
{
    const struct kh_value *v = kh_ask_cell(t, row, col);
    if (v->type == KH_COL_REAL)
        return v->u.d;
    if (v->type == KH_COL_INT)
        return (double)v->u.i;
    if (v->type == KH_COL_BOOL)
        return v->u.b;
    return NAN;
}

int64_t kh_ask_int(const struct kh_ask_table *t, size_t row, int col)
{
    const struct kh_value *v = kh_ask_cell(t, row, col);
    if (v->type == KH_COL_INT)
        return v->u.i;
    double d = kh_ask_num(t, row, col);
    return isfinite(d) ? (int64_t)llround(d) : 0;
}

const char *kh_ask_str(const struct kh_ask_table *t, size_t row, int col)
{
    const struct kh_value *v = kh_ask_cell(t, row, col);
    return v->type == KH_COL_TEXT || v->type == KH_COL_JSON ? v->u.s : NULL;
}

struct kh_value kh_ask_text(const char *text)
{
    struct kh_value v = {.type = KH_COL_TEXT, .len = (uint32_t)strlen(text)};
    v.u.s = text;
    return v;
}

struct kh_value kh_ask_integer(int64_t i)
{
    struct kh_value v = {.type = KH_COL_INT};
    v.u.i = i;
    return v;
}
