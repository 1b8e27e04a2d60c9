/*
 * spool_format: the bytes of a spool segment file, and nothing else (no threads, no state).
 *
 * A segment is a 16-byte file header followed by records:
 *
 *   file header  "KOHAKUSP" | u32 format version (1) | u32 zero
 *   record       u32 payload length | u32 CRC-32 of (the 4 length bytes + payload) | payload
 *   payload      u8 payload version (1) | u8 flavor | u8 kind | u8 zero | u64 received usec
 *                | the request body exactly as it arrived
 *
 * Integers are little-endian. The CRC covers the length so a torn or zero-filled tail (a
 * crash in the middle of a write) never passes for a record: a reader stops at the first
 * record that does not check out, and everything before it is intact.
 */
#ifndef KH_SPOOL_FORMAT_H
#define KH_SPOOL_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KH_SPOOL_FILE_HEADER 16
#define KH_SPOOL_REC_HEADER 8
#define KH_SPOOL_META 12
/* A payload longer than this is corruption, whatever the config says today. */
#define KH_SPOOL_MAX_PAYLOAD ((uint32_t)1 << 30)

struct kh_spool_meta {
    uint8_t flavor;         /* enum kh_envelope_flavor */
    uint8_t kind;           /* enum kh_report_kind */
    int64_t received_usec;  /* when kohaku first finished reading the report */
};

void kh_spool_file_header(uint8_t out[KH_SPOOL_FILE_HEADER]);
/* true when buf holds a segment header this version can read. */
bool kh_spool_check_file_header(const uint8_t *buf, size_t len);

/* Bytes a record with a body of body_len takes in the file. */
static inline size_t kh_spool_record_size(size_t body_len)
{
    return KH_SPOOL_REC_HEADER + KH_SPOOL_META + body_len;
}

/* Writes the record header and metadata into out (KH_SPOOL_REC_HEADER + KH_SPOOL_META bytes);
 * the body follows them in the file. The CRC covers the body, so it is passed here too. */
void kh_spool_encode(uint8_t *out, const struct kh_spool_meta *m, const void *body,
                     size_t body_len);

enum kh_spool_check {
    KH_SPOOL_REC_OK,
    KH_SPOOL_REC_SHORT, /* buf ends before the record does (read more, or a torn tail) */
    KH_SPOOL_REC_BAD    /* length or CRC wrong: corruption */
};

/* Checks the record at the start of buf. On KH_SPOOL_REC_OK fills m, body, body_len and
 * the record length in rec_len. On KH_SPOOL_REC_SHORT, rec_len is the size needed when the
 * header could be read (0 otherwise). */
enum kh_spool_check kh_spool_decode(const uint8_t *buf, size_t len, struct kh_spool_meta *m,
                                    const uint8_t **body, size_t *body_len, size_t *rec_len);

#endif
