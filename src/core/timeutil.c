/*
 * timeutil: strict RFC 3339 (UTC) parsing without locale or timezone state.
 */
#include "core/timeutil.h"

#include "core/numparse.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/errors.h"

static int digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

/* days since 1970-01-01 for a proleptic Gregorian date (Howard Hinnant's algorithm). */
static int64_t days_from_civil(int y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int days_in_month(int y, int m)
{
    static const int dm[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
        return 29;
    return dm[m - 1];
}

int kh_time_parse_rfc3339(const char *s, size_t n, int64_t *usec, const char **why)
{
    int Y, M, D, h, mi, sec;
    *why = "must be RFC 3339 UTC with a fraction, like 2026-11-24T06:15:42.123456Z";
    if (n < 21 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't') ||
        s[13] != ':' || s[16] != ':')
        return KH_EINVAL;
    if (digits(s, 4, &Y) || digits(s + 5, 2, &M) || digits(s + 8, 2, &D) ||
        digits(s + 11, 2, &h) || digits(s + 14, 2, &mi) || digits(s + 17, 2, &sec))
        return KH_EINVAL;
    if (M < 1 || M > 12 || D < 1 || D > days_in_month(Y, M) || h > 23 || mi > 59 || sec > 60)
        return KH_EINVAL;
    if (Y < 1) {
        /* RFC 3339 has a year 0000; SQL timestamps (and PostgreSQL's text input) do not */
        *why = "must be in the years 0001 to 9999";
        return KH_EINVAL;
    }
    size_t i = 19;
    if (s[i] != '.')
        return KH_EINVAL;
    i++;
    int64_t frac = 0;
    int nd = 0;
    while (i < n && s[i] >= '0' && s[i] <= '9') {
        if (nd < 6)
            frac = frac * 10 + (s[i] - '0');
        nd++;
        i++;
    }
    if (nd == 0 || nd > 9)
        return KH_EINVAL;
    for (int k = nd; k < 6; k++)
        frac *= 10;
    size_t rest = n - i;
    if (!((rest == 1 && (s[i] == 'Z' || s[i] == 'z')) ||
          (rest == 6 && (s[i] == '+' || s[i] == '-') && s[i + 1] == '0' && s[i + 2] == '0' &&
           s[i + 3] == ':' && s[i + 4] == '0' && s[i + 5] == '0'))) {
        *why = "must be UTC (end in Z or +00:00)";
        return KH_EINVAL;
    }
    if (sec == 60)
        sec = 59; /* a leap second is kept inside its minute */
    int64_t days = days_from_civil(Y, M, D);
    *usec = ((days * 86400 + h * 3600 + mi * 60 + sec) * 1000000) + frac;
    return 0;
}

void kh_time_format(int64_t usec, char *out)
{
    /* Most calls fall in a second formatted just before on the same thread (a report's own
     * time and its received_at; log lines): the date and time of day of the last two seconds
     * seen are kept per thread. */
    static _Thread_local int64_t cached_secs[2] = {INT64_MIN, INT64_MIN};
    static _Thread_local char cached[2][20]; /* "YYYY-MM-DDTHH:MM:SS" */
    static _Thread_local int older;
    int64_t secs = usec >= 0 ? usec / 1000000 : -((-usec + 999999) / 1000000);
    int64_t frac = usec - secs * 1000000;
    int slot = secs == cached_secs[0] ? 0 : secs == cached_secs[1] ? 1 : -1;
    if (slot < 0) {
        slot = older;
        older ^= 1;
        time_t t = (time_t)secs;
        struct tm tm;
        gmtime_r(&t, &tm);
        char tmp[64];
        snprintf(tmp, sizeof(tmp), "%04d-%02d-%02dT%02d:%02d:%02d", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
        memcpy(cached[slot], tmp, 19);
        cached_secs[slot] = secs;
    }
    memcpy(out, cached[slot], 19);
    out[19] = '.';
    kh_format_digits(out + 20, (uint64_t)frac, 6);
    out[26] = 'Z';
    out[KH_TIME_TEXT_LEN] = '\0';
}

int64_t kh_time_now_usec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

uint64_t kh_mono_usec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}
