/*
 * jsonw: JSON string escaping. See jsonw.h.
 */
#include "core/jsonw.h"

#include <stdio.h>

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
