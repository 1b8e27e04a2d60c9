/*
 * spool_format: see spool_format.h. CRC-32 is zlib's.
 */
#include "spool/spool_format.h"

#include <string.h>
#include <zlib.h>

static const char magic[8] = {'K', 'O', 'H', 'A', 'K', 'U', 'S', 'P'};

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put64(uint8_t *p, uint64_t v)
{
    put32(p, (uint32_t)v);
    put32(p + 4, (uint32_t)(v >> 32));
}

static uint64_t get64(const uint8_t *p)
{
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

void kh_spool_file_header(uint8_t out[KH_SPOOL_FILE_HEADER])
{
    memcpy(out, magic, sizeof(magic));
    put32(out + 8, 1);
    put32(out + 12, 0);
}

bool kh_spool_check_file_header(const uint8_t *buf, size_t len)
{
    return len >= KH_SPOOL_FILE_HEADER && memcmp(buf, magic, sizeof(magic)) == 0 &&
           get32(buf + 8) == 1;
}

/* CRC of the length field, the metadata and the body, which need not be contiguous. */
static uint32_t record_crc(const uint8_t *lenfield, const uint8_t *meta, const void *body,
                           size_t body_len)
{
    uLong crc = crc32(0L, Z_NULL, 0);
    crc = crc32(crc, lenfield, 4);
    crc = crc32(crc, meta, KH_SPOOL_META);
    /* zlib takes uInt lengths: feed big bodies in pieces */
    const uint8_t *p = body;
    while (body_len > 0) {
        uInt n = body_len > (1u << 30) ? (1u << 30) : (uInt)body_len;
        crc = crc32(crc, p, n);
        p += n;
        body_len -= n;
    }
    return (uint32_t)crc;
}

void kh_spool_encode(uint8_t *out, const struct kh_spool_meta *m, const void *body,
                     size_t body_len)
{
    uint8_t *meta = out + KH_SPOOL_REC_HEADER;
    put32(out, (uint32_t)(KH_SPOOL_META + body_len));
    meta[0] = 1;
    meta[1] = m->flavor;
    meta[2] = m->kind;
    meta[3] = 0;
    put64(meta + 4, (uint64_t)m->received_usec);
    put32(out + 4, record_crc(out, meta, body, body_len));
}

enum kh_spool_check kh_spool_decode(const uint8_t *buf, size_t len, struct kh_spool_meta *m,
                                    const uint8_t **body, size_t *body_len, size_t *rec_len)
{
    *rec_len = 0;
    if (len < KH_SPOOL_REC_HEADER)
        return KH_SPOOL_REC_SHORT;
    uint32_t plen = get32(buf);
    if (plen < KH_SPOOL_META || plen > KH_SPOOL_MAX_PAYLOAD)
        return KH_SPOOL_REC_BAD;
    size_t need = KH_SPOOL_REC_HEADER + (size_t)plen;
    *rec_len = need;
    if (len < need)
        return KH_SPOOL_REC_SHORT;
    const uint8_t *meta = buf + KH_SPOOL_REC_HEADER;
    size_t blen = plen - KH_SPOOL_META;
    if (record_crc(buf, meta, meta + KH_SPOOL_META, blen) != get32(buf + 4))
        return KH_SPOOL_REC_BAD;
    if (meta[0] != 1 || meta[3] != 0)
        return KH_SPOOL_REC_BAD;
    m->flavor = meta[1];
    m->kind = meta[2];
    m->received_usec = (int64_t)get64(meta + 4);
    *body = meta + KH_SPOOL_META;
    *body_len = blen;
    return KH_SPOOL_REC_OK;
}
