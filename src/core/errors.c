/*
 * errors: kh_errf's per-thread buffer. See errors.h.
 */
#include "core/errors.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define ERR_MAX 1024

const char *kh_errf(const char *fmt, ...)
{
    static __thread char buf[ERR_MAX];
    char tmp[ERR_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0)
        snprintf(tmp, sizeof(tmp), "(unprintable reason)");
    memcpy(buf, tmp, sizeof(buf));
    return buf;
}
