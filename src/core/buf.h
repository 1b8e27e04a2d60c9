/*
 * buf: a growable byte buffer with a hard maximum fixed at init. Crossing the maximum is
 * an error (KH_ENOSPC), never a silent realloc past it.
 */
#ifndef KH_BUF_H
#define KH_BUF_H

#include <stddef.h>

#include "core/errors.h"

struct kh_buf {
    char *data;
    size_t len;
    size_t cap;
    size_t max;
};

void kh_buf_init(struct kh_buf *b, size_t max);
void kh_buf_cleanup(struct kh_buf *b);
/* Makes room for n more bytes. KH_ENOSPC past max, KH_ENOMEM on allocation failure. */
int kh_buf_reserve(struct kh_buf *b, size_t n);
int kh_buf_append(struct kh_buf *b, const void *p, size_t n);
/* Appends printf-formatted text (no NUL is counted in len; one is kept after the text, so
 * b->data is a C string afterwards). KH_ENOSPC past max (nothing is appended, never a cut
 * line), KH_ENOMEM on allocation failure. The one way to format into a buffer. */
int kh_buf_printf(struct kh_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline void kh_buf_reset(struct kh_buf *b) { b->len = 0; }

/* Grows an array of `size`-byte elements with capacity *cap (0: none yet) to twice that, or
 * to `first` elements: the array moved (realloc), *cap updated. NULL when out of memory or
 * past SIZE_MAX bytes, with v and *cap as they were. The array idiom:
 *     if (n == cap && (p = kh_grow(v, &cap, 16, sizeof(*v))) == NULL) fail; else v = p; */
void *kh_grow(void *v, size_t *cap, size_t first, size_t size);

#endif
