/*
 * pg_encode: text encodings for PostgreSQL. See pg_encode.h.
 * Array literal elements are double-quoted with '"' and '\' escaped (so NULL-looking text,
 * braces and commas stay data). COPY text fields escape '\', tab, newline and CR.
 */
#include "store/pg_encode.h"

#include "sora/schema.h"

#include <stdio.h>
#include <string.h>

static int sep(struct kh_buf *b, enum kh_pg_format f, bool first)
{
    if (first)
        return 0;
    return kh_buf_append(b, f == KH_PG_ARRAY ? "," : "\t", 1);
}

int kh_pg_put_null(struct kh_buf *b, enum kh_pg_format f, bool first)
{
    int rc = sep(b, f, first);
    if (rc == 0)
        rc = f == KH_PG_ARRAY ? kh_buf_append(b, "NULL", 4) : kh_buf_append(b, "\\N", 2);
    return rc;
}

int kh_pg_put_text(struct kh_buf *b, enum kh_pg_format f, bool first, const char *s, size_t n)
{
    if (s == NULL)
        return kh_pg_put_null(b, f, first);
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
    char tmp[24];
    int n = snprintf(tmp, sizeof(tmp), "%lld", (long long)i);
    int rc = sep(b, f, first);
    return rc ? rc : kh_buf_append(b, tmp, (size_t)n);
}

int kh_pg_put_real(struct kh_buf *b, enum kh_pg_format f, bool first, double d)
{
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
        int rc = sep(b, f, first);
        return rc ? rc : kh_buf_append(b, v->u.b ? "t" : "f", 1);
    }
    case KH_COL_TEXT:
    case KH_COL_JSON: return kh_pg_put_text(b, f, first, v->u.s, v->len);
    default: return kh_pg_put_null(b, f, first);
    }
}
