/*
 * Unit tests of src/core/storedtime.c: a take gives the earliest time noted since the last
 * one (INT64_MAX when none) and starts again; notes from several threads at once keep the
 * earliest of them all.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "core/storedtime.h"

static void earliest_since_the_last_take(void **state)
{
    (void)state;
    (void)kh_storedtime_take();
    assert_true(kh_storedtime_take() == INT64_MAX);
    kh_storedtime_note(500);
    kh_storedtime_note(900);
    kh_storedtime_note(-20); /* before 1970: any time */
    kh_storedtime_note(300);
    assert_true(kh_storedtime_take() == -20);
    assert_true(kh_storedtime_take() == INT64_MAX);
    kh_storedtime_note(900);
    assert_true(kh_storedtime_take() == 900);
}

#define THREADS 4
#define NOTES 100000

static void *noter(void *arg)
{
    int64_t k = (int64_t)(intptr_t)arg;
    /* each thread's times go down, interleaved with the others': thread k (1 to THREADS)
     * notes k + THREADS * i for i from NOTES - 1 to 0; the earliest of all is thread 1's
     * last, 1 */
    for (int64_t i = NOTES - 1; i >= 0; i--)
        kh_storedtime_note(k + THREADS * i);
    return NULL;
}

static void threads_at_once(void **state)
{
    (void)state;
    (void)kh_storedtime_take();
    pthread_t t[THREADS];
    for (int k = 0; k < THREADS; k++)
        assert_int_equal(pthread_create(&t[k], NULL, noter, (void *)(intptr_t)(k + 1)), 0);
    for (int k = 0; k < THREADS; k++)
        assert_int_equal(pthread_join(t[k], NULL), 0);
    assert_true(kh_storedtime_take() == 1); /* thread 1's last note */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(earliest_since_the_last_take),
        cmocka_unit_test(threads_at_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
