/*
 * jsonw: JSON text output helpers (escaping, and appending JSON values to a kh_buf).
 * Input strings are assumed to be valid UTF-8 (yajl has validated them); only the
 * characters JSON requires are escaped.
 */
#ifndef KH_JSONW_H
#define KH_JSONW_H

#include <stddef.h>

#include "core/buf.h"

/* Escapes src[0..n) into dst (no quotes added), stopping before an escape that would not
 * fit. Returns bytes written; *consumed gets the source bytes used. */
size_t kh_json_escape(char *dst, size_t cap, const char *src, size_t n, size_t *consumed);

/* Appends "escaped string" with quotes. Returns 0 or KH_ENOSPC / KH_ENOMEM. */
int kh_buf_put_json_str(struct kh_buf *b, const char *s, size_t n);

#endif
