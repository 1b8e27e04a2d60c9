/*
 * text: the strict UTF-8 check of the strings kohaku keeps. See text.h.
 */
#include "core/text.h"

#include <stdint.h>
#include <string.h>

/* The length, first bits and smallest code point of the sequence lead byte c starts; false
 * for a byte that starts none. */
static int lead(unsigned char c, size_t *len, uint32_t *cp, uint32_t *min)
{
    if ((c & 0xE0) == 0xC0)
        *len = 2, *cp = c & 0x1F, *min = 0x80;
    else if ((c & 0xF0) == 0xE0)
        *len = 3, *cp = c & 0x0F, *min = 0x800;
    else if ((c & 0xF8) == 0xF0)
        *len = 4, *cp = c & 0x07, *min = 0x10000;
    else
        return 0;
    return 1;
}

/* One multi-byte sequence at s[0, n): its length, or 0 when it is not valid UTF-8. */
static size_t sequence(const unsigned char *s, size_t n)
{
    size_t len;
    uint32_t cp, min;
    if (!lead(s[0], &len, &cp, &min) || len > n)
        return 0;
    for (size_t k = 1; k < len; k++) {
        if ((s[k] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[k] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

const char *kh_text_problem(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        /* eight bytes at a time while they are all ASCII and none is zero */
        if (i + 8 <= n) {
            uint64_t v;
            memcpy(&v, s + i, 8);
            const uint64_t ones = 0x0101010101010101u, highs = 0x8080808080808080u;
            if (((v | ((v - ones) & ~v)) & highs) == 0) {
                i += 8;
                continue;
            }
        }
        unsigned char c = s[i];
        if (c >= 0x01 && c < 0x80) {
            i++;
            continue;
        }
        if (c == 0)
            return "must not contain \\u0000";
        size_t len = sequence(s + i, n - i);
        if (len == 0)
            return "must be valid UTF-8";
        i += len;
    }
    return NULL;
}
