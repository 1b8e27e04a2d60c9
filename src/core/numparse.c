/*
 * numparse: see numparse.h. The fast double path is Clinger's: a decimal mantissa below 2^53
 * and a power of ten up to 10^22 are both exact doubles, so one multiplication or division
 * gives the correctly rounded result.
 */
#include "core/numparse.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const double pow10_exact[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                     1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                     1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* The C library wants a terminated string: copy s into buf (false when it does not fit). */
static bool terminate(const char *s, size_t n, char *buf, size_t cap)
{
    if (n >= cap)
        return false;
    memcpy(buf, s, n);
    buf[n] = '\0';
    return true;
}

static bool slow_double(const char *s, size_t n, double *out)
{
    char buf[512];
    if (!terminate(s, n, buf, sizeof(buf)))
        return false;
    char *end;
    errno = 0;
    double d = strtod(buf, &end);
    if (*end != '\0' || !isfinite(d))
        return false;
    *out = d;
    return true;
}

bool kh_parse_double(const char *s, size_t n, double *out)
{
    size_t i = 0;
    bool neg = false;
    if (i < n && s[i] == '-')
        neg = true, i++;
    uint64_t m = 0;
    int digits = 0, frac = 0;
    for (; i < n && s[i] >= '0' && s[i] <= '9'; i++, digits++)
        m = m * 10 + (uint64_t)(s[i] - '0');
    if (i < n && s[i] == '.')
        for (i++; i < n && s[i] >= '0' && s[i] <= '9'; i++, digits++, frac++)
            m = m * 10 + (uint64_t)(s[i] - '0');
    if (i != n || digits == 0 || digits > 19 || frac > 22 || m > (1ULL << 53))
        return slow_double(s, n, out); /* exponents, long mantissas */
    double d = (double)m;
    if (frac)
        d /= pow10_exact[frac];
    *out = neg ? -d : d;
    return true;
}

bool kh_parse_int64(const char *s, size_t n, int64_t *out)
{
    size_t i = 0;
    bool neg = false;
    if (i < n && s[i] == '-')
        neg = true, i++;
    if (i == n || n - i > 18) {
        /* long or odd: let the C library decide, then the double path */
        char buf[64];
        if (!terminate(s, n, buf, sizeof(buf)))
            return false;
        char *end;
        errno = 0;
        long long v = strtoll(buf, &end, 10);
        if (errno == 0 && *end == '\0' && end != buf) {
            *out = v;
            return true;
        }
        if (errno == ERANGE)
            return false;
    } else {
        int64_t v = 0;
        size_t j = i;
        for (; j < n && s[j] >= '0' && s[j] <= '9'; j++)
            v = v * 10 + (s[j] - '0');
        if (j == n) {
            *out = neg ? -v : v;
            return true;
        }
    }
    /* 1.5e3, 42.0: accept when the value is a whole number in range */
    double d;
    if (!kh_parse_double(s, n, &d) || d != floor(d) || d < -9.2e18 || d > 9.2e18)
        return false;
    *out = (int64_t)d;
    return true;
}

size_t kh_format_int64(char *out, int64_t v)
{
    char tmp[20];
    size_t n = 0;
    /* the magnitude as unsigned, so INT64_MIN needs no special case */
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    size_t len = 0;
    if (v < 0)
        out[len++] = '-';
    while (n)
        out[len++] = tmp[--n];
    return len;
}

void kh_format_digits(char *out, uint64_t v, int width)
{
    for (int i = width - 1; i >= 0; i--) {
        out[i] = (char)('0' + v % 10);
        v /= 10;
    }
}
