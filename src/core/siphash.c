/*
 * siphash: see siphash.h. The reference implementation's rounds and finalisation
 * (github.com/veorq/SipHash, siphash.c with cROUNDS 2, dROUNDS 4, 16-byte output), reshaped
 * to take its input in pieces.
 */
#include "core/siphash.h"

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))

static void round_(struct kh_siphash *s)
{
    s->v0 += s->v1;
    s->v1 = ROTL(s->v1, 13);
    s->v1 ^= s->v0;
    s->v0 = ROTL(s->v0, 32);
    s->v2 += s->v3;
    s->v3 = ROTL(s->v3, 16);
    s->v3 ^= s->v2;
    s->v0 += s->v3;
    s->v3 = ROTL(s->v3, 21);
    s->v3 ^= s->v0;
    s->v2 += s->v1;
    s->v1 = ROTL(s->v1, 17);
    s->v1 ^= s->v2;
    s->v2 = ROTL(s->v2, 32);
}

static uint64_t le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static void compress(struct kh_siphash *s, uint64_t m)
{
    s->v3 ^= m;
    round_(s);
    round_(s);
    s->v0 ^= m;
}

void kh_siphash_init(struct kh_siphash *s, const uint8_t key[16])
{
    uint64_t k0 = le64(key), k1 = le64(key + 8);
    s->v0 = 0x736f6d6570736575ULL ^ k0;
    s->v1 = 0x646f72616e646f6dULL ^ k1 ^ 0xee; /* 0xee: the 128-bit output variant */
    s->v2 = 0x6c7967656e657261ULL ^ k0;
    s->v3 = 0x7465646279746573ULL ^ k1;
    s->tail = 0;
    s->len = 0;
}

void kh_siphash_update(struct kh_siphash *s, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n > 0 && (s->len & 7) != 0) { /* finish the word in hand */
        s->tail |= (uint64_t)*b++ << (8 * (s->len & 7));
        s->len++;
        n--;
        if ((s->len & 7) == 0) {
            compress(s, s->tail);
            s->tail = 0;
        }
    }
    for (; n >= 8; n -= 8, b += 8, s->len += 8)
        compress(s, le64(b));
    for (; n > 0; n--, s->len++)
        s->tail |= (uint64_t)*b++ << (8 * (s->len & 7));
}

void kh_siphash_final(struct kh_siphash *s, uint64_t out[2])
{
    compress(s, s->tail | ((uint64_t)(s->len & 0xff) << 56));
    s->v2 ^= 0xee;
    for (int i = 0; i < 4; i++)
        round_(s);
    out[0] = s->v0 ^ s->v1 ^ s->v2 ^ s->v3;
    s->v1 ^= 0xdd;
    for (int i = 0; i < 4; i++)
        round_(s);
    out[1] = s->v0 ^ s->v1 ^ s->v2 ^ s->v3;
}
