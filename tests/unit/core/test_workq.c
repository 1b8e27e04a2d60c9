/*
 * Unit tests of src/core/workq.c with a real libevent loop: every item's done function runs
 * exactly once, on the loop thread, in the order the work finished; the work runs on the
 * workers (with their index) or, with zero threads, inline on the loop but never inside
 * kh_workq_submit; kh_workq_free works and completes what is queued, and what done functions
 * submit while it runs; the workers' threads are named (NAME, or NAME-K with several).
 */
#include <event2/event.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/workq.h"

#define NITEMS 200
#define MAXWORKERS 4

struct item {
    struct kh_workq_item node; /* first: the tests cast back */
    int id;
    int worked, done;
    int worker;
    bool worked_on_loop, done_on_loop;
    char thread_name[16]; /* of the thread that worked it */
    int resubmit; /* done submits the item again this many more times */
};

static struct {
    pthread_t loop_thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool gate_closed;  /* item 0's work waits while true */
    int barrier;       /* items below this id wait until this many works have begun */
    int started;       /* works that have begun */
    int order[NITEMS * 4];
    int norder;
    int by_worker[MAXWORKERS];
    struct kh_workq *q;
} t = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static void work(struct kh_workq_item *node, int worker, void *arg)
{
    struct item *it = (struct item *)node;
    it->worked++;
    it->worker = worker;
    it->worked_on_loop = pthread_equal(pthread_self(), t.loop_thread);
    pthread_getname_np(pthread_self(), it->thread_name, sizeof(it->thread_name));
    pthread_mutex_lock(&t.mu);
    t.started++;
    if (worker >= 0 && worker < MAXWORKERS)
        t.by_worker[worker]++;
    pthread_cond_broadcast(&t.cv);
    while ((it->id == 0 && t.gate_closed) || (it->id < t.barrier && t.started < t.barrier))
        pthread_cond_wait(&t.cv, &t.mu);
    pthread_mutex_unlock(&t.mu);
}

static void done(struct kh_workq_item *node, void *arg)
{
    struct item *it = (struct item *)node;
    it->done++;
    it->done_on_loop = pthread_equal(pthread_self(), t.loop_thread);
    t.order[t.norder++] = it->id;
    if (it->resubmit > 0) {
        it->resubmit--;
        kh_workq_submit(t.q, &it->node);
    }
}

static void set_gate(bool closed)
{
    pthread_mutex_lock(&t.mu);
    t.gate_closed = closed;
    pthread_cond_broadcast(&t.cv);
    pthread_mutex_unlock(&t.mu);
}

static int setup(void **state)
{
    t.loop_thread = pthread_self();
    t.gate_closed = false;
    t.barrier = 0;
    t.started = 0;
    t.norder = 0;
    memset(t.by_worker, 0, sizeof(t.by_worker));
    struct event_base *base = event_base_new();
    *state = base;
    return base ? 0 : -1;
}

static int teardown(void **state)
{
    event_base_free(*state);
    return 0;
}

static struct kh_workq *workq(struct event_base *base, int nthreads)
{
    t.q = kh_workq_new(base, "kh-test", nthreads, work, done, NULL);
    assert_non_null(t.q);
    return t.q;
}

static void submit_all(struct kh_workq *q, struct item *items, int n)
{
    for (int i = 0; i < n; i++) {
        items[i] = (struct item){.id = i, .worker = -1};
        kh_workq_submit(q, &items[i].node);
    }
}

/* Runs the loop until n done functions have run (it blocks on the eventfd in between). */
static void run_until(struct event_base *base, int n)
{
    for (int spins = 0; t.norder < n && spins < 100000; spins++)
        event_base_loop(base, EVLOOP_ONCE);
    assert_int_equal(t.norder, n);
}

static void assert_once_on_loop(const struct item *items, int n, bool worked_on_loop)
{
    for (int i = 0; i < n; i++) {
        if (items[i].worked != 1 || items[i].done != 1)
            fail_msg("item %d: worked %d times, done %d times", i, items[i].worked,
                     items[i].done);
        assert_true(items[i].done_on_loop);
        assert_int_equal(items[i].worked_on_loop, worked_on_loop);
    }
}

static void one_worker_completes_in_submission_order(void **state)
{
    struct event_base *base = *state;
    struct kh_workq *q = workq(base, 1);
    static struct item items[NITEMS];
    submit_all(q, items, NITEMS);
    assert_int_equal(kh_workq_pending(q), NITEMS);
    run_until(base, NITEMS);
    assert_int_equal(kh_workq_pending(q), 0);
    assert_once_on_loop(items, NITEMS, false);
    for (int i = 0; i < NITEMS; i++) {
        assert_int_equal(t.order[i], i);
        assert_int_equal(items[i].worker, 0);
        assert_string_equal(items[i].thread_name, "kh-test"); /* one thread: no index */
    }
    for (int i = 0; i < 20; i++) /* more loop turns: nothing runs twice */
        event_base_loop(base, EVLOOP_NONBLOCK);
    kh_workq_free(q);
    assert_int_equal(t.norder, NITEMS);
    assert_once_on_loop(items, NITEMS, false);
}

/* Item 0 is held while item 1 finishes on the other worker: 1 completes first. */
static void completions_follow_the_order_work_finished(void **state)
{
    struct event_base *base = *state;
    set_gate(true);
    struct kh_workq *q = workq(base, 2);
    static struct item items[2];
    submit_all(q, items, 2);
    run_until(base, 1);
    assert_int_equal(t.order[0], 1);
    assert_int_equal(items[0].done, 0);
    assert_int_equal(kh_workq_pending(q), 1);
    set_gate(false);
    run_until(base, 2);
    assert_int_equal(t.order[1], 0);
    assert_once_on_loop(items, 2, false);
    assert_int_not_equal(items[0].worker, items[1].worker);
    kh_workq_free(q);
}

static void several_workers_share_the_work(void **state)
{
    struct event_base *base = *state;
    /* items 0..3 are taken first, and each holds its worker until all four have begun */
    t.barrier = MAXWORKERS;
    struct kh_workq *q = workq(base, MAXWORKERS);
    static struct item items[NITEMS];
    submit_all(q, items, NITEMS);
    run_until(base, NITEMS);
    assert_once_on_loop(items, NITEMS, false);
    int busy = 0;
    for (int w = 0; w < MAXWORKERS; w++)
        busy += t.by_worker[w] > 0;
    assert_int_equal(busy, MAXWORKERS); /* each index 0..3 worked, none outside */
    for (int i = 0; i < NITEMS; i++) { /* each on its thread, named for its index */
        char want[16];
        snprintf(want, sizeof(want), "kh-test-%d", items[i].worker);
        assert_string_equal(items[i].thread_name, want);
    }
    int total = 0;
    for (int w = 0; w < MAXWORKERS; w++)
        total += t.by_worker[w];
    assert_int_equal(total, NITEMS);
    kh_workq_free(q);
    assert_int_equal(t.norder, NITEMS);
}

static void free_works_and_completes_what_is_queued(void **state)
{
    struct event_base *base = *state;
    for (int threads = 0; threads <= 3; threads++) {
        t.norder = 0;
        struct kh_workq *q = workq(base, threads);
        static struct item items[NITEMS];
        submit_all(q, items, NITEMS);
        kh_workq_free(q); /* no loop turn in between */
        assert_int_equal(t.norder, NITEMS);
        assert_once_on_loop(items, NITEMS, threads == 0);
    }
}

/* A done function that submits again (as the spool sends its next group): free waits for
 * those too, and each runs once more per resubmission. */
static void free_completes_what_done_functions_submit(void **state)
{
    struct event_base *base = *state;
    for (int threads = 0; threads <= 2; threads++) {
        t.norder = 0;
        struct kh_workq *q = workq(base, threads);
        static struct item items[10];
        submit_all(q, items, 10);
        for (int i = 0; i < 10; i++)
            items[i].resubmit = 3;
        kh_workq_free(q);
        assert_int_equal(t.norder, 40);
        for (int i = 0; i < 10; i++) {
            assert_int_equal(items[i].worked, 4);
            assert_int_equal(items[i].done, 4);
            assert_int_equal(items[i].resubmit, 0);
        }
    }
}

static void zero_threads_work_inline_on_the_loop(void **state)
{
    struct event_base *base = *state;
    struct kh_workq *q = workq(base, 0);
    static struct item items[NITEMS];
    submit_all(q, items, NITEMS);
    for (int i = 0; i < NITEMS; i++) /* never inside submit */
        assert_int_equal(items[i].worked + items[i].done, 0);
    assert_int_equal(kh_workq_pending(q), NITEMS);
    run_until(base, NITEMS);
    assert_int_equal(kh_workq_pending(q), 0);
    assert_once_on_loop(items, NITEMS, true);
    for (int i = 0; i < NITEMS; i++) {
        assert_int_equal(t.order[i], i);
        assert_int_equal(items[i].worker, 0);
    }
    /* submitted from a done function: the next wake-up, not the same call */
    items[0].resubmit = 1;
    kh_workq_submit(q, &items[0].node);
    run_until(base, NITEMS + 2);
    assert_int_equal(items[0].done, 3);
    kh_workq_free(q);
    assert_int_equal(t.norder, NITEMS + 2);
}

static void bad_arguments(void **state)
{
    struct event_base *base = *state;
    assert_null(kh_workq_new(base, "kh-test", -1, work, done, NULL));
    assert_int_equal(kh_workq_pending(NULL), 0);
    kh_workq_free(NULL);
    struct kh_workq *q = workq(base, 2); /* nothing submitted: free just joins */
    kh_workq_free(q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(one_worker_completes_in_submission_order, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(completions_follow_the_order_work_finished, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(several_workers_share_the_work, setup, teardown),
        cmocka_unit_test_setup_teardown(free_works_and_completes_what_is_queued, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(free_completes_what_done_functions_submit, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(zero_threads_work_inline_on_the_loop, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(bad_arguments, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
