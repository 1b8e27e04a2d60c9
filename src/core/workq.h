/*
 * workq: the one work queue. The loop thread submits items; worker threads run the queue's
 * work function on them; the queue's done function then runs on the loop thread, once per
 * item, in the order the work finished. Items are the caller's structs with a struct
 * kh_workq_item embedded (the queue allocates nothing per item, so a submit cannot fail).
 *
 * Workers wake the loop through one eventfd, registered on the loop's event_base. With zero
 * threads the work runs inline on the loop, deferred to the callback that runs the done
 * functions (never inside kh_workq_submit).
 *
 * Policies (how many items out at once, what to batch) are the caller's. Loop thread only,
 * except the work function, which runs on a worker and must not touch what the loop owns.
 */
#ifndef KH_WORKQ_H
#define KH_WORKQ_H

#include <stddef.h>

struct event_base;
struct kh_workq;

struct kh_workq_item {
    struct kh_workq_item *next; /* the queue's while the item is submitted */
};

/* The caller's struct around an item: KH_WORKQ_ENTRY(it, struct job, node). */
#define KH_WORKQ_ENTRY(it, type, member) ((type *)(void *)((char *)(it)-offsetof(type, member)))

/* Runs on worker `worker` (0 .. nthreads - 1; 0 in zero-thread mode). */
typedef void (*kh_workq_work_fn)(struct kh_workq_item *it, int worker, void *arg);
/* Runs on the loop thread once the work is done; the item is the caller's again. It may
 * submit more items. */
typedef void (*kh_workq_done_fn)(struct kh_workq_item *it, void *arg);

/* nthreads >= 0 (0: work inline on the loop). name: the threads' name as ps and top show
 * it, "NAME" with one thread, "NAME-K" (K from 0) with several, cut to 15 bytes. NULL on
 * failure (memory, eventfd, threads, the event). */
struct kh_workq *kh_workq_new(struct event_base *base, const char *name, int nthreads,
                              kh_workq_work_fn work, kh_workq_done_fn done, void *arg);
/* Queues it; its done function follows exactly once, later, on the loop thread. */
void kh_workq_submit(struct kh_workq *q, struct kh_workq_item *it);
/* Items submitted whose done function has not run yet. */
size_t kh_workq_pending(const struct kh_workq *q);
/* Loop thread, outside the loop's callbacks for q. Blocks until nothing is pending: every
 * item queued is worked (on the workers) and its done function run, items that done
 * functions submit meanwhile too; then joins the workers and frees q. NULL is a no-op. */
void kh_workq_free(struct kh_workq *q);

#endif
