/*
 * jsonw: JSON text output helpers (escaping, and appending JSON values to a kh_buf).
 * Input strings are assumed to be valid UTF-8 (yajl has validated them); only the
 * characters JSON requires are escaped.
 */
#ifndef KH_JSONW_H
#define KH_JSONW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

/* Escapes src[0..n) into dst (no quotes added), stopping before an escape that would not
 * fit. Returns bytes written; *consumed gets the source bytes used. */
size_t kh_json_escape(char *dst, size_t cap, const char *src, size_t n, size_t *consumed);

/* Appends "escaped string" with quotes. Returns 0 or KH_ENOSPC / KH_ENOMEM. */
int kh_buf_put_json_str(struct kh_buf *b, const char *s, size_t n);

/* A number, or null when it is not finite (JSON has no NaN). */
int kh_json_num(struct kh_buf *b, double v);
/* The members of an object, each after the separator its place needs: *first starts true
 * (the caller writes the braces). A NULL string is null; a time is RFC 3339 text (UTC,
 * microseconds). 0 or KH_ENOSPC / KH_ENOMEM. */
int kh_json_key(struct kh_buf *b, bool *first, const char *key);
int kh_json_str_member(struct kh_buf *b, bool *first, const char *key, const char *v);
int kh_json_num_member(struct kh_buf *b, bool *first, const char *key, double v);
int kh_json_int_member(struct kh_buf *b, bool *first, const char *key, int64_t v);
int kh_json_bool_member(struct kh_buf *b, bool *first, const char *key, bool v);
int kh_json_time_member(struct kh_buf *b, bool *first, const char *key, int64_t usec);

#endif
