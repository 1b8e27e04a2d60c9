/*
 * jsonw: JSON string escaping. See jsonw.h.
 */
#include "core/jsonw.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/timeutil.h"

static const char hex[] = "0123456789abcdef";

size_t kh_json_escape(char *dst, size_t cap, const char *src, size_t n, size_t *consumed)
{
    size_t w = 0, i = 0;
    for (; i < n; i++) {
        unsigned char c = (unsigned char)src[i];
        char esc = 0;
        switch (c) {
        case '"': esc = '"'; break;
        case '\\': esc = '\\'; break;
        case '\n': esc = 'n'; break;
        case '\r': esc = 'r'; break;
        case '\t': esc = 't'; break;
        case '\b': esc = 'b'; break;
        case '\f': esc = 'f'; break;
        default: break;
        }
        if (esc) {
            if (w + 2 > cap)
                break;
            dst[w++] = '\\';
            dst[w++] = esc;
        } else if (c < 0x20) {
            if (w + 6 > cap)
                break;
            dst[w++] = '\\';
            dst[w++] = 'u';
            dst[w++] = '0';
            dst[w++] = '0';
            dst[w++] = hex[c >> 4];
            dst[w++] = hex[c & 15];
        } else {
            if (w + 1 > cap)
                break;
            dst[w++] = (char)c;
        }
    }
    *consumed = i;
    return w;
}

int kh_buf_put_json_str(struct kh_buf *b, const char *s, size_t n)
{
    /* worst case 6 output bytes per input byte, plus the quotes */
    int rc = kh_buf_reserve(b, n * 6 + 2);
    if (rc != 0)
        return rc;
    char *p = b->data + b->len;
    size_t used;
    *p++ = '"';
    size_t w = kh_json_escape(p, n * 6, s, n, &used);
    p[w] = '"';
    b->len += w + 2;
    return 0;
}

int kh_json_num(struct kh_buf *b, double v)
{
    return isfinite(v) ? kh_buf_printf(b, "%.10g", v) : kh_buf_append(b, "null", 4);
}

int kh_json_key(struct kh_buf *b, bool *first, const char *key)
{
    int rc = *first ? 0 : kh_buf_append(b, ",", 1);
    *first = false;
    rc = rc ? rc : kh_buf_put_json_str(b, key, strlen(key));
    return rc ? rc : kh_buf_append(b, ":", 1);
}

int kh_json_str_member(struct kh_buf *b, bool *first, const char *key, const char *v)
{
    int rc = kh_json_key(b, first, key);
    if (rc == 0 && v == NULL)
        return kh_buf_append(b, "null", 4);
    return rc ? rc : kh_buf_put_json_str(b, v, strlen(v));
}

int kh_json_num_member(struct kh_buf *b, bool *first, const char *key, double v)
{
    int rc = kh_json_key(b, first, key);
    return rc ? rc : kh_json_num(b, v);
}

int kh_json_int_member(struct kh_buf *b, bool *first, const char *key, int64_t v)
{
    int rc = kh_json_key(b, first, key);
    return rc ? rc : kh_buf_printf(b, "%lld", (long long)v);
}

int kh_json_bool_member(struct kh_buf *b, bool *first, const char *key, bool v)
{
    int rc = kh_json_key(b, first, key);
    return rc ? rc : kh_buf_printf(b, "%s", v ? "true" : "false");
}

int kh_json_time_member(struct kh_buf *b, bool *first, const char *key, int64_t usec)
{
    char t[KH_TIME_TEXT_LEN + 1];
    kh_time_format(usec, t);
    return kh_json_str_member(b, first, key, t);
}
