/*
 * siphash: SipHash-2-4 with its 128-bit output (Aumasson and Bernstein), fed incrementally.
 * A keyed hash: with a secret random key an outsider cannot aim for a collision, and two
 * different inputs share an output with probability about 2^-128. It owns nothing; any
 * thread, one state per caller.
 */
#ifndef KH_SIPHASH_H
#define KH_SIPHASH_H

#include <stddef.h>
#include <stdint.h>

struct kh_siphash {
    uint64_t v0, v1, v2, v3;
    uint64_t tail; /* the bytes of an unfinished 8-byte word, little-endian */
    size_t len;    /* every byte fed so far */
};

void kh_siphash_init(struct kh_siphash *s, const uint8_t key[16]);
void kh_siphash_update(struct kh_siphash *s, const void *p, size_t n);
/* The 128-bit result (out[0] the first 8 bytes of the reference output, little-endian). */
void kh_siphash_final(struct kh_siphash *s, uint64_t out[2]);

#endif
