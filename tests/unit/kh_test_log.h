/*
 * kh_test_log: what a unit test's code under test logs, as text (header only, static inline).
 * kht_log_capture() sends kohaku's log to a temporary file until kht_log_captured(), which
 * returns everything logged since (to be freed). Include after <cmocka.h>.
 */
#ifndef KH_TEST_LOG_H
#define KH_TEST_LOG_H

#include <stdio.h>
#include <stdlib.h>

#include "core/log.h"

static inline FILE *kht_log_capture(void)
{
    FILE *fp = tmpfile();
    assert_non_null(fp);
    kh_log_set_stream(fp);
    return fp;
}

static inline char *kht_log_captured(FILE *fp)
{
    kh_log_set_stream(NULL);
    long n = ftell(fp);
    assert_true(n >= 0);
    char *text = calloc(1, (size_t)n + 1);
    assert_non_null(text);
    rewind(fp);
    assert_int_equal(fread(text, 1, (size_t)n, fp), (size_t)n);
    fclose(fp);
    return text;
}

#endif
