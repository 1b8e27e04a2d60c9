/*
 * Unit tests of src/pipeline/parsepool.c with a real libevent loop and the real envelope
 * parser: every job completes exactly once, on the loop thread, with the parser's result (a
 * report, or the same error the loop-thread parse gives); kh_parsepool_free completes jobs
 * still queued. The pool frees the parsers (ASan in the test command checks it).
 */
#include <event2/event.h>
#include <event2/thread.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kh_test.h"
#include "pipeline/parsepool.h"

#define NJOBS 64

struct job {
    char *body;
    int calls;
    int rc;
    struct kh_report *r;
    char err[512];
    bool on_loop;
};

static pthread_t loop_thread;
static int completed;

static void on_parsed(void *arg, int rc, struct kh_report *r, const struct kh_envelope *e)
{
    const char *err = e ? kh_envelope_error(e) : NULL;
    struct job *j = arg;
    j->calls++;
    j->rc = rc;
    j->r = r;
    snprintf(j->err, sizeof(j->err), "%s", err ? err : "");
    assert_true((rc == 0) == (r != NULL) && (rc == 0) == (err == NULL));
    j->on_loop = pthread_equal(pthread_self(), loop_thread);
    completed++;
}

static void run_until(struct event_base *base, int n)
{
    for (int spins = 0; completed < n && spins < 100000; spins++)
        event_base_loop(base, EVLOOP_ONCE);
    assert_int_equal(completed, n);
}

/* Every other body is valid; the odd ones each break a different rule. */
static char *body_for(int i)
{
    if (i % 2 == 0)
        return kht_envelope(NULL, NULL, NULL);
    switch (i % 6) {
    case 1: return kht_envelope(NULL, "connection_id", "42");
    case 3: return kht_envelope("[{\"id\":1}]", NULL, NULL);
    default: return strdup("{\"type\": ");
    }
}

static void test_jobs_complete_once_with_parser_result(void **state)
{
    for (int threads = 1; threads <= 3; threads++) {
        struct event_base *base = event_base_new();
        assert_non_null(base);
        struct kh_parsepool *p = kh_parsepool_new(base, threads);
        assert_non_null(p);
        static struct job jobs[NJOBS];
        memset(jobs, 0, sizeof(jobs));
        completed = 0;
        for (int i = 0; i < NJOBS; i++) {
            jobs[i].body = body_for(i);
            struct kh_envelope *e =
                kh_envelope_new(KH_REPORT_CONNECTION, KH_FLAVOR_EXPORTER, NULL);
            assert_non_null(e);
            assert_int_equal(kh_parsepool_submit(p, e, (const uint8_t *)jobs[i].body,
                                                 strlen(jobs[i].body), on_parsed, &jobs[i]),
                             0);
        }
        assert_int_equal(kh_parsepool_pending(p), NJOBS);
        run_until(base, NJOBS);
        assert_int_equal(kh_parsepool_pending(p), 0);
        for (int i = 0; i < NJOBS; i++) {
            assert_int_equal(jobs[i].calls, 1);
            assert_true(jobs[i].on_loop);
            /* the same verdict and message as parsing on the loop thread */
            char want[512];
            int want_rc = kht_parse(jobs[i].body, NULL, want, sizeof(want));
            assert_int_equal(jobs[i].rc, want_rc);
            if (want_rc == 0)
                assert_int_equal(jobs[i].r->nrows, 2);
            else
                assert_string_equal(jobs[i].err, want);
            kh_report_free(jobs[i].r);
            free(jobs[i].body);
        }
        kh_parsepool_free(p);
        event_base_free(base);
    }
}

/* Jobs still queued when the pool is freed are parsed and called back, once each. */
static void test_free_completes_queued_jobs(void **state)
{
    struct event_base *base = event_base_new();
    assert_non_null(base);
    struct kh_parsepool *p = kh_parsepool_new(base, 1);
    assert_non_null(p);
    static struct job jobs[NJOBS];
    memset(jobs, 0, sizeof(jobs));
    completed = 0;
    for (int i = 0; i < NJOBS; i++) {
        jobs[i].body = kht_envelope(NULL, NULL, NULL);
        struct kh_envelope *e = kh_envelope_new(KH_REPORT_CONNECTION, KH_FLAVOR_EXPORTER, NULL);
        assert_int_equal(kh_parsepool_submit(p, e, (const uint8_t *)jobs[i].body,
                                             strlen(jobs[i].body), on_parsed, &jobs[i]),
                         0);
    }
    kh_parsepool_free(p); /* no loop turn in between */
    assert_int_equal(completed, NJOBS);
    for (int i = 0; i < NJOBS; i++) {
        assert_int_equal(jobs[i].calls, 1);
        assert_int_equal(jobs[i].rc, 0);
        assert_non_null(jobs[i].r);
        kh_report_free(jobs[i].r);
        free(jobs[i].body);
    }
    event_base_free(base);
}

static void test_bad_thread_count(void **state)
{
    struct event_base *base = event_base_new();
    assert_null(kh_parsepool_new(base, 0));
    assert_int_equal(kh_parsepool_pending(NULL), 0);
    kh_parsepool_free(NULL);
    event_base_free(base);
}

int main(void)
{
    loop_thread = pthread_self();
    if (evthread_use_pthreads() != 0)
        return 1;
    kh_schema_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_jobs_complete_once_with_parser_result),
        cmocka_unit_test(test_free_completes_queued_jobs),
        cmocka_unit_test(test_bad_thread_count),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
