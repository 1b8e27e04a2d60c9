/*
 * Unit tests of src/core/siphash.c: the reference implementation's 128-bit vectors
 * (veorq/SipHash vectors.h, vectors_sip128: key 00..0f, message 00..len-1) for lengths
 * around a word's boundary, and input fed in pieces of every size gives the same output.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "core/siphash.h"

static const struct {
    size_t len;
    const char *hex;
} vectors[] = {
    {0, "a3817f04ba25a8e66df67214c7550293"}, {1, "da87c1d86b99af44347659119b22fc45"},
    {2, "8177228da4a45dc7fca38bdef60affe4"}, {7, "a1f1ebbed8dbc153c0b84aa61ff08239"},
    {8, "3b62a9ba6258f5610f83e264f31497b4"}, {9, "264499060ad9baabc47f8b02bb6d71ed"},
};

static void hex_of(const uint64_t out[2], char hex[33])
{
    for (int i = 0; i < 16; i++) {
        uint8_t byte = (uint8_t)(out[i / 8] >> (8 * (i % 8)));
        snprintf(hex + 2 * i, 3, "%02x", byte);
    }
}

static void test_reference_vectors(void **state)
{
    (void)state;
    uint8_t key[16], msg[64];
    for (int i = 0; i < 16; i++)
        key[i] = (uint8_t)i;
    for (int i = 0; i < 64; i++)
        msg[i] = (uint8_t)i;
    for (size_t v = 0; v < sizeof(vectors) / sizeof(vectors[0]); v++) {
        struct kh_siphash s;
        uint64_t out[2];
        char hex[33];
        kh_siphash_init(&s, key);
        kh_siphash_update(&s, msg, vectors[v].len);
        kh_siphash_final(&s, out);
        hex_of(out, hex);
        assert_string_equal(hex, vectors[v].hex);
    }
}

static void test_pieces_give_the_same(void **state)
{
    (void)state;
    uint8_t key[16] = {7, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    uint8_t msg[61];
    for (size_t i = 0; i < sizeof(msg); i++)
        msg[i] = (uint8_t)(i * 37 + 1);
    uint64_t whole[2];
    struct kh_siphash s;
    kh_siphash_init(&s, key);
    kh_siphash_update(&s, msg, sizeof(msg));
    kh_siphash_final(&s, whole);
    for (size_t piece = 1; piece <= 17; piece++) {
        uint64_t out[2];
        kh_siphash_init(&s, key);
        for (size_t at = 0; at < sizeof(msg); at += piece)
            kh_siphash_update(&s, msg + at,
                              at + piece <= sizeof(msg) ? piece : sizeof(msg) - at);
        kh_siphash_final(&s, out);
        assert_true(out[0] == whole[0] && out[1] == whole[1]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reference_vectors),
        cmocka_unit_test(test_pieces_give_the_same),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
