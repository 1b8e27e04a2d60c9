/*
 * spool_reader: reads records out of a segment file in order, through one buffer that grows
 * to the largest record seen. Recovery and the drainer use it, each with its own reader.
 * It owns its buffer, not the descriptor; it decides nothing about what a bad record means.
 */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "spool/spool_internal.h"

void kh_spool_reader_reset(struct kh_spool_reader *r, int fd)
{
    r->fd = fd;
    r->len = 0;
    r->off = 0;
}

/* Fills the buffer with up to `want` bytes from `pos`. 0 or an errno. */
static int fill(struct kh_spool_reader *r, uint64_t pos, size_t want)
{
    if (want > r->cap) {
        uint8_t *nb = realloc(r->buf, want);
        if (nb == NULL)
            return ENOMEM;
        r->buf = nb;
        r->cap = want;
    }
    size_t got = 0;
    int e = 0;
    while (got < want) {
        ssize_t n = pread(r->fd, r->buf + got, want - got, (off_t)(pos + got));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            e = n < 0 ? errno : 0;
            break;
        }
        got += (size_t)n;
    }
    r->off = pos;
    r->len = got;
    return e;
}

enum kh_spool_check kh_spool_reader_record(struct kh_spool_reader *r, uint64_t pos,
                                           uint64_t end, struct kh_spool_meta *m,
                                           const uint8_t **body, size_t *blen,
                                           size_t *rec_len, int *ioerr)
{
    *ioerr = 0;
    /* pass 0: what is buffered; 1: a fresh chunk from pos; 2: the whole record */
    for (int pass = 0;; pass++) {
        enum kh_spool_check c = KH_SPOOL_REC_SHORT;
        *rec_len = 0;
        if (pos >= r->off && pos < r->off + r->len)
            c = kh_spool_decode(r->buf + (pos - r->off), (size_t)(r->off + r->len - pos), m,
                                body, blen, rec_len);
        if (c != KH_SPOOL_REC_SHORT || pass == 2)
            return c;
        size_t want = *rec_len > KH_SPOOL_READ_CHUNK ? *rec_len : KH_SPOOL_READ_CHUNK;
        if (want > end - pos)
            want = (size_t)(end - pos);
        if (want < KH_SPOOL_REC_HEADER || (*rec_len && want < *rec_len))
            return KH_SPOOL_REC_SHORT; /* the file ends inside this record */
        *ioerr = fill(r, pos, want);
        if (*ioerr)
            return KH_SPOOL_REC_SHORT;
    }
}
