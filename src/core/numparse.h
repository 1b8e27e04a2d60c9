/*
 * numparse: JSON number text to int64 or double, without a NUL terminator and without
 * locale. Common short numbers take a fast exact path; the rest fall back to strtod/strtoll,
 * so results are always the correctly rounded value. And the way back for integers.
 */
#ifndef KH_NUMPARSE_H
#define KH_NUMPARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A whole number in int64 range ("42", "-7", "1.5e3", "42.0"). false otherwise. */
bool kh_parse_int64(const char *s, size_t n, int64_t *out);
/* A finite double. false for out-of-range values (1e999) and malformed text. */
bool kh_parse_double(const char *s, size_t n, double *out);
/* Writes v in decimal (what printf's %lld gives) into out, which has room for 20 chars;
 * no NUL. Returns the length. */
size_t kh_format_int64(char *out, int64_t v);
/* Writes v as exactly `width` decimal digits, zero-padded (v < 10^width). No NUL. */
void kh_format_digits(char *out, uint64_t v, int width);

#endif
