/*
 * parsepool: see parsepool.h. The threads and the hand-over are a kh_workq's.
 *
 * A job belongs to the worker that parses it (the parser and the body with it) until its
 * done function runs on the loop thread; the loop never touches either meanwhile.
 */
#include "pipeline/parsepool.h"

#include <stdlib.h>

#include "core/errors.h"
#include "core/workq.h"

struct job {
    struct kh_workq_item node;
    struct kh_envelope *e;
    const uint8_t *body;
    size_t len;
    kh_parse_cb cb;
    void *arg;
    int rc;
    struct kh_report *r;
};

struct kh_parsepool {
    struct kh_workq *q;
};

/* Worker thread. */
static void parse(struct kh_workq_item *it, int worker, void *arg)
{
    struct job *j = KH_WORKQ_ENTRY(it, struct job, node);
    j->rc = kh_envelope_feed(j->e, j->body, j->len);
    if (j->rc == 0)
        j->rc = kh_envelope_finish(j->e);
    if (j->rc == 0) {
        j->r = kh_envelope_take_report(j->e);
        kh_envelope_free(j->e);
        j->e = NULL;
    }
}

/* Loop thread. */
static void on_parsed(struct kh_workq_item *it, void *arg)
{
    struct job *j = KH_WORKQ_ENTRY(it, struct job, node);
    j->cb(j->arg, j->rc, j->r, j->e);
    kh_envelope_free(j->e);
    free(j);
}

struct kh_parsepool *kh_parsepool_new(struct event_base *base, int nthreads)
{
    if (nthreads < 1)
        return NULL;
    struct kh_parsepool *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    p->q = kh_workq_new(base, "kh-parse", nthreads, parse, on_parsed, p);
    if (p->q == NULL) {
        free(p);
        return NULL;
    }
    return p;
}

int kh_parsepool_submit(struct kh_parsepool *p, struct kh_envelope *e, const uint8_t *body,
                        size_t len, kh_parse_cb cb, void *arg)
{
    struct job *j = malloc(sizeof(*j));
    if (j == NULL)
        return KH_ENOMEM;
    *j = (struct job){.e = e, .body = body, .len = len, .cb = cb, .arg = arg};
    kh_workq_submit(p->q, &j->node);
    return 0;
}

size_t kh_parsepool_pending(const struct kh_parsepool *p)
{
    return p ? kh_workq_pending(p->q) : 0;
}

void kh_parsepool_free(struct kh_parsepool *p)
{
    if (p == NULL)
        return;
    kh_workq_free(p->q); /* parses what is queued and runs every remaining callback */
    free(p);
}
