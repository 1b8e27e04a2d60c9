/*
 * workq: see workq.h.
 *
 * Threads: `todo` and `finished` are under `mu` (with threads; in zero-thread mode the loop
 * thread alone uses `todo` and no lock is taken). A worker takes one item at a time and
 * owns it until it is on `finished`; it writes the eventfd when `finished` was empty, so a
 * burst of items costs the loop one wake-up. `pending` is the loop thread's alone.
 *
 * The eventfd, not event_active: event_active takes libevent's base lock, which the loop
 * thread holds for every event it adds or removes; under h2load, futex calls took 8.4% of
 * the loop thread's time with event_active and 4.6% with the eventfd (perf, measured on the
 * parse pool).
 *
 * Zero-thread mode has no other thread to wake the loop: the loop defers the work to itself
 * with event_active on the same event, uncontended, and the work runs in the same loop turn.
 * Through the eventfd instead (a write, a turn of epoll, a read per batch), the null backend
 * under h2load did 25,765 reports/s at 54.6 us of CPU each, against 31,761 and 46.9 us this
 * way (medians of 6 interleaved runs of 40,000 reports).
 */
#include "core/workq.h"

#include <errno.h>
#include <event2/event.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

struct worker {
    struct kh_workq *q;
    int index;
    pthread_t thread;
    char name[16]; /* the thread's, as the kernel keeps it: 15 bytes and a NUL */
};

struct kh_workq {
    kh_workq_work_fn work;
    kh_workq_done_fn done;
    void *arg;
    int efd;
    struct event *ev;
    size_t pending; /* loop thread only */
    int nthreads;   /* started */
    struct worker *workers;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct kh_workq_item *todo, **todo_tail;
    struct kh_workq_item *finished, **finished_tail;
    bool quit;
};

static void wake_loop(struct kh_workq *q)
{
    uint64_t one = 1;
    while (write(q->efd, &one, sizeof(one)) < 0 && errno == EINTR)
        ;
}

/* Resets the eventfd's counter (it is nonblocking: an empty one just says EAGAIN). */
static void clear_wake(struct kh_workq *q)
{
    uint64_t n;
    (void)!read(q->efd, &n, sizeof(n));
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct kh_workq *q = w->q;
    (void)pthread_setname_np(pthread_self(), w->name); /* only for ps and top */
    pthread_mutex_lock(&q->mu);
    for (;;) {
        while (q->todo == NULL && !q->quit)
            pthread_cond_wait(&q->cv, &q->mu);
        struct kh_workq_item *it = q->todo;
        if (it == NULL)
            break; /* quit, and nothing left */
        q->todo = it->next;
        if (q->todo == NULL)
            q->todo_tail = &q->todo;
        pthread_mutex_unlock(&q->mu);

        q->work(it, w->index, q->arg);

        pthread_mutex_lock(&q->mu);
        it->next = NULL;
        bool wake = q->finished == NULL;
        *q->finished_tail = it;
        q->finished_tail = &it->next;
        if (wake) {
            pthread_mutex_unlock(&q->mu);
            wake_loop(q);
            pthread_mutex_lock(&q->mu);
        }
    }
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

/* Loop thread: the done functions of a list taken from `finished`, in its order. */
static void complete(struct kh_workq *q, struct kh_workq_item *it)
{
    while (it) {
        struct kh_workq_item *next = it->next;
        q->pending--;
        q->done(it, q->arg);
        it = next;
    }
}

static struct kh_workq_item *take_finished(struct kh_workq *q)
{
    pthread_mutex_lock(&q->mu);
    struct kh_workq_item *list = q->finished;
    q->finished = NULL;
    q->finished_tail = &q->finished;
    pthread_mutex_unlock(&q->mu);
    return list;
}

/* Zero-thread mode: work and complete what is queued now; what the done functions submit
 * waits for the next wake-up. */
static void run_inline(struct kh_workq *q)
{
    struct kh_workq_item *it = q->todo;
    q->todo = NULL;
    q->todo_tail = &q->todo;
    while (it) {
        struct kh_workq_item *next = it->next;
        q->work(it, 0, q->arg);
        q->pending--;
        q->done(it, q->arg);
        it = next;
    }
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    struct kh_workq *q = arg;
    if (q->nthreads == 0) {
        run_inline(q);
        return;
    }
    clear_wake(q);
    complete(q, take_finished(q));
}

static void stop_workers(struct kh_workq *q)
{
    pthread_mutex_lock(&q->mu);
    q->quit = true;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
    for (int i = 0; i < q->nthreads; i++)
        pthread_join(q->workers[i].thread, NULL);
}

struct kh_workq *kh_workq_new(struct event_base *base, const char *name, int nthreads,
                              kh_workq_work_fn work, kh_workq_done_fn done, void *arg)
{
    if (nthreads < 0)
        return NULL;
    struct kh_workq *q = calloc(1, sizeof(*q));
    if (q == NULL)
        goto fail_alloc;
    *q = (struct kh_workq){.work = work, .done = done, .arg = arg, .efd = -1};
    q->todo_tail = &q->todo;
    q->finished_tail = &q->finished;
    q->workers = calloc((size_t)nthreads + 1, sizeof(*q->workers));
    if (q->workers == NULL)
        goto fail_workers;
    q->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (q->efd < 0)
        goto fail_efd;
    q->ev = event_new(base, q->efd, EV_READ | EV_PERSIST, on_wake, q);
    if (q->ev == NULL)
        goto fail_event;
    if (event_add(q->ev, NULL) != 0)
        goto fail_add;
    if (pthread_mutex_init(&q->mu, NULL) != 0)
        goto fail_add;
    if (pthread_cond_init(&q->cv, NULL) != 0)
        goto fail_cond;
    for (; q->nthreads < nthreads; q->nthreads++) {
        struct worker *w = &q->workers[q->nthreads];
        *w = (struct worker){.q = q, .index = q->nthreads};
        char name_k[32] = {0};
        if (nthreads == 1)
            snprintf(name_k, sizeof(name_k), "%.15s", name);
        else
            snprintf(name_k, sizeof(name_k), "%.12s-%d", name, q->nthreads);
        memcpy(w->name, name_k, sizeof(w->name) - 1); /* cut to what the kernel keeps */
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0)
            goto fail_threads;
    }
    return q;
fail_threads:
    stop_workers(q);
    pthread_cond_destroy(&q->cv);
fail_cond:
    pthread_mutex_destroy(&q->mu);
fail_add:
    event_free(q->ev);
fail_event:
    close(q->efd);
fail_efd:
    free(q->workers);
fail_workers:
    free(q);
fail_alloc:
    return NULL;
}

void kh_workq_submit(struct kh_workq *q, struct kh_workq_item *it)
{
    it->next = NULL;
    q->pending++;
    if (q->nthreads == 0) {
        bool wake = q->todo == NULL;
        *q->todo_tail = it;
        q->todo_tail = &it->next;
        if (wake)
            event_active(q->ev, EV_READ, 1);
        return;
    }
    pthread_mutex_lock(&q->mu);
    *q->todo_tail = it;
    q->todo_tail = &it->next;
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
}

size_t kh_workq_pending(const struct kh_workq *q) { return q ? q->pending : 0; }

/* Blocks until a worker has finished something (or a wake-up is left over: harmless). */
static void wait_wake(struct kh_workq *q)
{
    struct pollfd pfd = {.fd = q->efd, .events = POLLIN};
    while (poll(&pfd, 1, -1) < 0 && errno == EINTR)
        ;
    clear_wake(q);
}

void kh_workq_free(struct kh_workq *q)
{
    if (q == NULL)
        return;
    while (q->pending > 0) {
        if (q->nthreads == 0) {
            run_inline(q);
            continue;
        }
        struct kh_workq_item *list = take_finished(q);
        if (list == NULL)
            wait_wake(q);
        else
            complete(q, list);
    }
    stop_workers(q);
    event_free(q->ev);
    close(q->efd);
    pthread_cond_destroy(&q->cv);
    pthread_mutex_destroy(&q->mu);
    free(q->workers);
    free(q);
}
