/*
 * timeutil: RFC 3339 parsing and the canonical text form kohaku stores
 * ("YYYY-MM-DDTHH:MM:SS.ffffffZ", UTC, microseconds), plus monotonic clocks.
 */
#ifndef KH_TIMEUTIL_H
#define KH_TIMEUTIL_H

#include <stddef.h>
#include <stdint.h>

#define KH_TIME_TEXT_LEN 27 /* without the NUL */
/* The first instant kohaku stores, 0001-01-01T00:00:00Z (SQL has no year 0), in µs. */
#define KH_TIME_MIN_USEC (-62135596800LL * 1000000)

/* Parses an RFC 3339 UTC timestamp with a fraction (1..9 digits; 'Z' or +00:00).
 * Returns 0 and microseconds since the Unix epoch, or KH_EINVAL with *why set. */
int kh_time_parse_rfc3339(const char *s, size_t n, int64_t *usec, const char **why);
/* Writes KH_TIME_TEXT_LEN chars and a NUL into out (at least 28 bytes). */
void kh_time_format(int64_t usec, char *out);
int64_t kh_time_now_usec(void);
/* The hour of an instant: hours since 1970-01-01T00:00Z, rounded down (before 1970 too). */
static inline int64_t kh_time_hour(int64_t usec)
{
    int64_t h = usec / 3600000000LL;
    return h - (usec % 3600000000LL < 0);
}
uint64_t kh_mono_usec(void);

#endif
