/*
 * pg_encode: turns report values into PostgreSQL's text forms: elements of array literals
 * (for INSERT ... SELECT FROM unnest($1::bigint[], ...)) and fields of COPY text format.
 * Pure string work; no libpq here.
 */
#ifndef KH_PG_ENCODE_H
#define KH_PG_ENCODE_H

#include "core/buf.h"
#include "sora/report.h"

enum kh_pg_format { KH_PG_ARRAY, KH_PG_COPY };

/* Appends one value. In KH_PG_ARRAY format each element is preceded by ',' unless it is the
 * first (the caller writes the braces); in KH_PG_COPY format by '\t' unless it is first. */
int kh_pg_put_value(struct kh_buf *b, enum kh_pg_format f, bool first, const struct kh_value *v);
int kh_pg_put_text(struct kh_buf *b, enum kh_pg_format f, bool first, const char *s, size_t n);
int kh_pg_put_null(struct kh_buf *b, enum kh_pg_format f, bool first);
int kh_pg_put_int(struct kh_buf *b, enum kh_pg_format f, bool first, int64_t i);
int kh_pg_put_real(struct kh_buf *b, enum kh_pg_format f, bool first, double d);

#endif
