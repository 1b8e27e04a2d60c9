/*
 * ask: read-only questions to the store, for the quality answers and the console. A question
 * is SQL written once for both dialects, with "@N" for parameter N (?N in SQLite, $N in
 * PostgreSQL) and "#(expr)" for a time expression's microseconds (kh_schema_time_usec_sql),
 * run with the store's query op; its rows are kept in a table (cells copied, strings in an
 * arena) for the caller to read by row and column. SQL text comes from the caller's
 * constants and the schema, never from a request: values go as parameters.
 */
#ifndef KH_ASK_H
#define KH_ASK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/arena.h"
#include "core/buf.h"
#include "store/store.h"

struct kh_ask {
    struct kh_store *st;
    bool pg;
    struct kh_arena arena; /* the tables' strings, until kh_ask_cleanup */
    struct kh_buf sql;
    const char **err;
    bool plan_each; /* the next question only: KH_QUERY_PLAN_EACH */
};

struct kh_ask_table {
    struct kh_arena *arena;
    int ncols;
    size_t n, cap;
    struct kh_value *cells; /* n * ncols */
};

/* Failures set *err (kh_errf text, the store's, or a literal). */
void kh_ask_init(struct kh_ask *a, struct kh_store *st, const char **err);
void kh_ask_cleanup(struct kh_ask *a);

/* The SQL of the next question: kh_ask_sql starts it from a template, kh_ask_add appends
 * another template, kh_ask_raw appends text as it is (a schema name). 0 or KH_ENOMEM. */
int kh_ask_sql(struct kh_ask *a, const char *tmpl);
int kh_ask_add(struct kh_ask *a, const char *tmpl);
int kh_ask_raw(struct kh_ask *a, const char *text);
/* Runs the SQL into t (emptied first). 0, or the store's error (KH_EIO, KH_ERETRY). */
int kh_ask_run(struct kh_ask *a, struct kh_ask_table *t, const struct kh_value *params, int n);
/* kh_ask_sql(tmpl) then kh_ask_run. */
int kh_ask(struct kh_ask *a, const char *tmpl, struct kh_ask_table *t,
           const struct kh_value *params, int n);
void kh_ask_table_free(struct kh_ask_table *t);

/* 0 when the database's schema is at least version `need`; KH_EIO with *err saying to run
 * kohaku migrate otherwise. */
int kh_ask_schema_at_least(struct kh_ask *a, int need, const char *what);

/* Cells: a number (NAN when NULL or not a number), an integer (0 then), a string (NULL). */
const struct kh_value *kh_ask_cell(const struct kh_ask_table *t, size_t row, int col);
double kh_ask_num(const struct kh_ask_table *t, size_t row, int col);
int64_t kh_ask_int(const struct kh_ask_table *t, size_t row, int col);
const char *kh_ask_str(const struct kh_ask_table *t, size_t row, int col);

/* Parameters. text must outlive the question and be NUL-terminated. */
struct kh_value kh_ask_text(const char *text);
struct kh_value kh_ask_integer(int64_t i);

#endif
