/*
 * numparse: JSON number text to int64 or double, without a NUL terminator and without
 * locale. Common short numbers take a fast exact path; the rest fall back to strtod/strtoll,
 * so results are always the correctly rounded value.
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

#endif
