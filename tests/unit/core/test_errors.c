/*
 * Unit tests of src/core/errors.c: kh_errf formats into the thread's buffer, cuts at 1 KiB,
 * may be given its own previous text as an argument, and each thread has its own buffer.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/errors.h"

static void test_formats_and_cuts(void **state)
{
    assert_string_equal(kh_errf("%s: %d", "listen_port", 70000), "listen_port: 70000");
    char big[3000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(strlen(kh_errf("%s", big)), 1023);
}

static void test_own_text_as_argument(void **state)
{
    const char *a = kh_errf("tls_privkey_file: %s", "/k.pem: no such file");
    const char *b = kh_errf("%s:%d: %s", "kohaku.ini", 12, a);
    assert_string_equal(b, "kohaku.ini:12: tls_privkey_file: /k.pem: no such file");
    assert_ptr_equal(a, b); /* one buffer: the earlier text is gone */
}

static void *other_thread(void *arg)
{
    *(const char **)arg = kh_errf("from the other thread");
    return NULL;
}

static void test_one_buffer_per_thread(void **state)
{
    const char *mine = kh_errf("mine");
    const char *theirs = NULL;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, other_thread, &theirs), 0);
    pthread_join(t, NULL);
    assert_ptr_not_equal(mine, theirs);
    assert_string_equal(mine, "mine");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_formats_and_cuts),
        cmocka_unit_test(test_own_text_as_argument),
        cmocka_unit_test(test_one_buffer_per_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
