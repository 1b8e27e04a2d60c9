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
static inline void kh_buf_reset(struct kh_buf *b) { b->len = 0; }

#endif
