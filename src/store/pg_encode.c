/*
 * pg_encode: text encodings for PostgreSQL. See pg_encode.h.
 * Array literal elements are double-quoted with '"' and '\' escaped (so NULL-looking text,
 * braces and commas stay data). COPY text fields escape '\', tab, newline and CR. COPY binary
 * fields are length-prefixed and need no escaping.
 */
#include "store/pg_encode.h"

#include "core/numparse.h"
#include "sora/schema.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* PostgreSQL's timestamp epoch, 2000-01-01 00:00:00 UTC, in microseconds after 1970's. */
#define PG_EPOCH_UNIX_USEC 946684800000000LL

static int put_be(struct kh_buf *b, uint64_t v, int bytes)
{
    int rc = kh_buf_reserve(b, (size_t)bytes);
    if (rc != 0)
        return rc;
    for (int i = bytes - 1; i >= 0; i--)
        b->data[b->len++] = (char)(v >> (8 * i));
    return 0;
}

/* A binary field: its length, then `n` bytes of `p` (after `prefix` bytes of `pre`). */
static int put_field(struct kh_buf *b, const void *pre, size_t prefix, const void *p, size_t n)
{
    int rc = put_be(b, (uint32_t)(prefix + n), 4);
    if (rc == 0 && prefix)
        rc = kh_buf_append(b, pre, prefix);
    return rc == 0 && n ? kh_buf_append(b, p, n) : rc;
}

/* An 8-byte binary field (int8, float8, timestamptz): length 8, then the value. */
static int put_field8(struct kh_buf *b, uint64_t v)
{
    int rc = put_be(b, 8, 4);
    return rc ? rc : put_be(b, v, 8);
}

int kh_pg_binary_header(struct kh_buf *b)
{
    /* signature, flags (no OIDs), header extension length */
    return kh_buf_append(b, "PGCOPY\n\377\r\n\0\0\0\0\0\0\0\0\0", 19);
}

int kh_pg_binary_row(struct kh_buf *b, int nfields) { return put_be(b, (uint16_t)nfields, 2); }

int kh_pg_binary_trailer(struct kh_buf *b) { return put_be(b, 0xFFFF, 2); }

static int sep(struct kh_buf *b, enum kh_pg_format f, bool first)
{
    if (first || f == KH_PG_BINARY)
        return 0;
    return kh_buf_append(b, f == KH_PG_ARRAY ? "," : "\t", 1);
}

int kh_pg_put_null(struct kh_buf *b, enum kh_pg_format f, bool first)
{
    if (f == KH_PG_BINARY)
        return put_be(b, 0xFFFFFFFFu, 4);
    int rc = sep(b, f, first);
    if (rc == 0)
        rc = f == KH_PG_ARRAY ? kh_buf_append(b, "NULL", 4) : kh_buf_append(b, "\\N", 2);
    return rc;
}

int kh_pg_put_text(struct kh_buf *b, enum kh_pg_format f, bool first, const char *s, size_t n)
{
    if (s == NULL)
        return kh_pg_put_null(b, f, first);
    if (f == KH_PG_BINARY)
        return put_field(b, NULL, 0, s, n);
    int rc = sep(b, f, first);
    if (rc == 0)
        rc = kh_buf_reserve(b, n * 2 + 2);
    if (rc != 0)
        return rc;
    char *p = b->data + b->len;
    if (f == KH_PG_ARRAY) {
        *p++ = '"';
        for (size_t i = 0; i < n; i++) {
            if (s[i] == '"' || s[i] == '\\')
                *p++ = '\\';
            *p++ = s[i];
        }
        *p++ = '"';
    } else {
        for (size_t i = 0; i < n; i++) {
            char c = s[i];
            if (c == '\\' || c == '\t' || c == '\n' || c == '\r') {
                *p++ = '\\';
                c = c == '\t' ? 't' : c == '\n' ? 'n' : c == '\r' ? 'r' : '\\';
            }
            *p++ = c;
        }
    }
    b->len = (size_t)(p - b->data);
    return 0;
}

int kh_pg_put_int(struct kh_buf *b, enum kh_pg_format f, bool first, int64_t i)
{
    if (f == KH_PG_BINARY)
        return put_field8(b, (uint64_t)i);
    char tmp[24];
    size_t n = kh_format_int64(tmp, i);
    int rc = sep(b, f, first);
    return rc ? rc : kh_buf_append(b, tmp, n);
}

int kh_pg_put_real(struct kh_buf *b, enum kh_pg_format f, bool first, double d)
{
    if (f == KH_PG_BINARY) {
        uint64_t bits;
        memcpy(&bits, &d, sizeof(bits)); /* float8send: the IEEE 754 bits, big-endian */
        return put_field8(b, bits);
    }
    char tmp[32];
    int n = snprintf(tmp, sizeof(tmp), "%.17g", d);
    int rc = sep(b, f, first);
    return rc ? rc : kh_buf_append(b, tmp, (size_t)n);
}

int kh_pg_put_value(struct kh_buf *b, enum kh_pg_format f, bool first, const struct kh_value *v)
{
    switch (v->type) {
    case KH_COL_INT: return kh_pg_put_int(b, f, first, v->u.i);
    case KH_COL_REAL: return kh_pg_put_real(b, f, first, v->u.d);
    case KH_COL_BOOL: {
        if (f == KH_PG_BINARY)
            return put_field(b, NULL, 0, v->u.b ? "\1" : "\0", 1);
        int rc = sep(b, f, first);
        return rc ? rc : kh_buf_append(b, v->u.b ? "t" : "f", 1);
    }
    case KH_COL_TEXT: return kh_pg_put_text(b, f, first, v->u.s, v->len);
    case KH_COL_JSON: return kh_pg_put_jsonb(b, f, first, v->u.s, v->len);
    case KH_COL_TIME: /* binary needs the microseconds: kh_pg_put_time */
        return f == KH_PG_BINARY ? KH_EINVAL : kh_pg_put_text(b, f, first, v->u.s, v->len);
    default: return kh_pg_put_null(b, f, first);
    }
}

int kh_pg_put_time(struct kh_buf *b, enum kh_pg_format f, bool first, int64_t unix_usec,
                   const char *text)
{
    if (f != KH_PG_BINARY)
        return kh_pg_put_text(b, f, first, text, KH_TIME_TEXT_LEN);
    /* timestamptz_send: int64 microseconds since PostgreSQL's epoch */
    return put_field8(b, (uint64_t)(unix_usec - PG_EPOCH_UNIX_USEC));
}

int kh_pg_put_jsonb(struct kh_buf *b, enum kh_pg_format f, bool first, const char *s, size_t n)
{
    if (f != KH_PG_BINARY || s == NULL)
        return kh_pg_put_text(b, f, first, s, n);
    return put_field(b, "\1", 1, s, n); /* jsonb_send: version 1, then the JSON text */
}
