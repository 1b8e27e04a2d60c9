/*
 * buf: bounded growable buffer. See buf.h.
 */
#include "core/buf.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void kh_buf_init(struct kh_buf *b, size_t max)
{
    b->data = NULL;
    b->len = b->cap = 0;
    b->max = max;
}

void kh_buf_cleanup(struct kh_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

int kh_buf_reserve(struct kh_buf *b, size_t n)
{
    if (b->len + n <= b->cap)
        return 0;
    if (b->len + n > b->max)
        return KH_ENOSPC;
    size_t ncap = b->cap ? b->cap : 256;
    while (ncap < b->len + n)
        ncap *= 2;
    if (ncap > b->max)
        ncap = b->max;
    char *p = realloc(b->data, ncap);
    if (p == NULL)
        return KH_ENOMEM;
    b->data = p;
    b->cap = ncap;
    return 0;
}

int kh_buf_append(struct kh_buf *b, const void *p, size_t n)
{
    if (n == 0)
        return 0; /* b->data may still be NULL */
    int rc = kh_buf_reserve(b, n);
    if (rc != 0)
        return rc;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

int kh_buf_printf(struct kh_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    size_t room = b->cap - b->len;
    int n = vsnprintf(room ? b->data + b->len : NULL, room, fmt, ap);
    va_end(ap);
    if (n < 0)
        return KH_EINVAL;
    if ((size_t)n < room) { /* it fitted, with its NUL */
        b->len += (size_t)n;
        return 0;
    }
    int rc = kh_buf_reserve(b, (size_t)n + 1);
    if (rc != 0) {
        if (room)
            b->data[b->len] = '\0'; /* undo the partial write's effect on the C string */
        return rc;
    }
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

void *kh_grow(void *v, size_t *cap, size_t first, size_t size)
{
    if (*cap > SIZE_MAX / 2)
        return NULL;
    size_t n = *cap ? *cap * 2 : first;
    if (n == 0 || size == 0 || n > SIZE_MAX / size)
        return NULL;
    void *p = realloc(v, n * size);
    if (p != NULL)
        *cap = n;
    return p;
}
