/*
 * pg_encode: turns report values into what PostgreSQL reads: elements of array literals (for
 * INSERT ... SELECT FROM unnest($1::bigint[], ...)), fields of COPY text format, and fields of
 * COPY binary format (PostgreSQL documentation, COPY, "Binary Format": a header, then per
 * row an int16 field count and per field an int32 length and the type's binary form, all
 * big-endian; -1 for NULL; an int16 -1 trailer). Binary needs no number formatting here and
 * no number or timestamp parsing in the server. Pure byte work; no libpq here.
 */
#ifndef KH_PG_ENCODE_H
#define KH_PG_ENCODE_H

#include "core/buf.h"
#include "sora/report.h"

enum kh_pg_format { KH_PG_ARRAY, KH_PG_COPY, KH_PG_BINARY };

/* Appends one value. In KH_PG_ARRAY format each element is preceded by ',' unless it is the
 * first (the caller writes the braces); in KH_PG_COPY format by '\t' unless it is first; in
 * KH_PG_BINARY format `first` is unused (the caller starts each row with kh_pg_binary_row).
 * In binary, a KH_COL_JSON value is written as jsonb (the type of JSON columns here). A
 * KH_COL_TIME value (its text) goes in the text formats only: KH_EINVAL in binary, which
 * needs the microseconds (kh_pg_put_time). */
int kh_pg_put_value(struct kh_buf *b, enum kh_pg_format f, bool first, const struct kh_value *v);
int kh_pg_put_text(struct kh_buf *b, enum kh_pg_format f, bool first, const char *s, size_t n);
int kh_pg_put_null(struct kh_buf *b, enum kh_pg_format f, bool first);
int kh_pg_put_int(struct kh_buf *b, enum kh_pg_format f, bool first, int64_t i);
int kh_pg_put_real(struct kh_buf *b, enum kh_pg_format f, bool first, double d);
/* A timestamptz: `text` (KH_TIME_TEXT_LEN chars) in the text formats, `unix_usec` in binary. */
int kh_pg_put_time(struct kh_buf *b, enum kh_pg_format f, bool first, int64_t unix_usec,
                   const char *text);
/* JSON text for a jsonb column (NULL pointer: SQL NULL). */
int kh_pg_put_jsonb(struct kh_buf *b, enum kh_pg_format f, bool first, const char *s, size_t n);

/* COPY binary framing: the signature and header, a row's field count, the trailer. */
int kh_pg_binary_header(struct kh_buf *b);
int kh_pg_binary_row(struct kh_buf *b, int nfields);
int kh_pg_binary_trailer(struct kh_buf *b);

#endif
