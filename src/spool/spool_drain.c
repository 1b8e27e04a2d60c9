/*
 * spool_drain: the drainer. On the loop thread it reads durable records in order and hands
 * each to the replay function (parse + submit to the batcher), at most max_out at once and
 * DRAIN_STEP_RECORDS per loop turn, so new reports keep their share of the loop and of the
 * storage queue. It owns the read position, the replay counts and the deletion of segments.
 *
 * Rules:
 *  - A replay that fails (KH_ERETRY from storage) sends the drainer back to the start of the
 *    oldest segment once no replay is out: storage is idempotent, so records stored before
 *    the failure are stored again as no-ops, and none is skipped. Until then nothing is
 *    deleted, and nothing new is read.
 *  - A record that can never be stored (refused as bad data, or found damaged on disk) is
 *    dropped and logged: it counts as settled.
 *  - A segment is deleted only when it is sealed (no longer appended to), the drainer has
 *    passed its end and every record in it has settled.
 * It must not read past a segment's durable end: what lies beyond is not synced yet.
 */
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "core/errors.h"
#include "core/log.h"
#include "core/metrics.h"
#include "spool/spool_internal.h"

#define DRAIN_STEP_RECORDS 64 /* records replayed per loop turn */
#define DRAIN_WAIT_MS 200     /* storage not ready: look again after this */

/* How one step over the records ended. */
enum step {
    STEP_NEXT,      /* go on with the next record */
    STEP_CAUGHT_UP, /* at the durable end: the next group's completion calls us again */
    STEP_WAIT       /* storage or the disk cannot take it now: look again after a pause */
};

struct replay_ctx {
    struct kh_spool *sp;
    struct kh_spool_seg *seg;
};

/* A deferred call of drain_step from the loop thread to itself (no other thread wakes the
 * drainer), so it runs after the loop has served what is ready. */
void kh_spool_drain_schedule(struct kh_spool *sp)
{
    struct kh_spool_drainer *d = &sp->drain;
    if (d->state != KH_SPOOL_DRAIN_STOPPED && d->ev)
        event_active(d->ev, EV_READ, 0);
}

static void drain_wait(struct kh_spool *sp)
{
    struct timeval tv = {0, DRAIN_WAIT_MS * 1000};
    if (!evtimer_pending(sp->drain.timer, NULL))
        evtimer_add(sp->drain.timer, &tv);
}

/* Records settled: stored, or dropped for good. */
static void settle(struct kh_spool *sp, struct kh_spool_seg *s, uint64_t n)
{
    s->done += n;
    sp->done += n;
}

/* --- deletion ------------------------------------------------------------------------- */

static void seg_delete(struct kh_spool *sp, struct kh_spool_seg *s)
{
    char name[64];
    kh_spool_seg_name(name, sizeof(name), s->seq);
    if (s->rfd >= 0)
        close(s->rfd);
    if (unlinkat(sp->dirfd, name, 0) != 0)
        kh_spool_log_errno("spool: cannot delete a drained segment", name, errno);
    sp->used -= s->end;
    sp->records -= s->records;
    sp->done -= s->done;
    kh_metrics.spool_bytes = sp->used;
    free(s->held_bits);
    free(s);
}

static bool deletable(const struct kh_spool *sp, const struct kh_spool_seg *s)
{
    const struct kh_spool_drainer *d = &sp->drain;
    if (!s->sealed || s->held > 0 || s->done < s->records)
        return false;
    if (!s->replay) /* every record its holder's, and stored */
        return true;
    return (d->seg != NULL && d->seg != s) || (d->seg == s && d->off >= s->end);
}

/* Deletes sealed segments at the head whose every record is settled; when everything is
 * replayed and nothing is coming, asks for the active file to be sealed so it can go too. */
static void free_drained(struct kh_spool *sp)
{
    struct kh_spool_drainer *d = &sp->drain;
    while (d->state == KH_SPOOL_DRAIN_READING && sp->segs && deletable(sp, sp->segs)) {
        struct kh_spool_seg *s = sp->segs;
        sp->segs = s->next;
        if (sp->segs == NULL)
            sp->segs_tail = &sp->segs;
        if (d->seg == s) {
            d->seg = NULL;
            d->rd.fd = -1;
        }
        seg_delete(sp, s);
    }
    struct kh_spool_seg *l = kh_spool_seg_last(sp);
    if (l && !l->sealed && sp->records == sp->done && sp->held == 0 && sp->pending == 0 &&
        !sp->group_out && d->out == 0)
        kh_spool_io_rotate(sp);
}

/* --- replay ----------------------------------------------------------------------------- */

/* The outcome of one replay, later, on the loop thread. */
static void replay_done(void *arg, int result, const char *err)
{
    struct replay_ctx *c = arg;
    struct kh_spool *sp = c->sp;
    struct kh_spool_seg *s = c->seg;
    struct kh_spool_drainer *d = &sp->drain;
    free(c);
    d->out--;
    if (result == 0 || result == KH_EREJECT) {
        settle(sp, s, 1);
        if (result == 0)
            kh_metrics.spool_drained++;
        else {
            kh_metrics.spool_dropped++;
            kh_log(KH_LOG_ERROR, "spool: storage refused a spooled report; dropped", err);
        }
    } else if (d->state == KH_SPOOL_DRAIN_READING) {
        d->state = KH_SPOOL_DRAIN_REWINDING;
        struct kh_logline l;
        if (kh_log_begin(&l, KH_LOG_WARN, "spool: replay failed; will start over from the "
                                          "oldest segment")) {
            kh_log_int(&l, "segment", (int64_t)s->seq);
            kh_log_end(&l);
        }
    }
    kh_spool_drain_schedule(sp);
}

/* REWINDING: once every replay out has settled, start again from the oldest segment, with
 * the counts of the segments it replays cleared, after a pause. */
static void rewind_when_settled(struct kh_spool *sp)
{
    struct kh_spool_drainer *d = &sp->drain;
    if (d->out > 0)
        return;
    sp->done = 0;
    for (struct kh_spool_seg *s = sp->segs; s; s = s->next) {
        s->read = 0;
        s->done = s->held_done; /* held records settled by their holders stay settled */
        sp->done += s->done;
    }
    d->seg = NULL;
    d->rd.fd = -1;
    d->state = KH_SPOOL_DRAIN_READING;
    drain_wait(sp);
}

static void start_at(struct kh_spool_drainer *d, struct kh_spool_seg *s)
{
    d->seg = s;
    d->off = KH_SPOOL_FILE_HEADER;
    d->rd.fd = -1;
}

static int seg_rfd(struct kh_spool *sp, struct kh_spool_seg *s)
{
    if (s->rfd < 0) {
        char name[64];
        kh_spool_seg_name(name, sizeof(name), s->seq);
        s->rfd = openat(sp->dirfd, name, O_RDONLY | O_CLOEXEC);
        if (s->rfd < 0)
            kh_spool_log_errno("spool: cannot open a segment to replay it", name, errno);
    }
    return s->rfd;
}

/* A synced record no longer checks out (changed on disk since): the rest of its segment is
 * dropped, and the drainer moves past it. */
static void skip_damaged(struct kh_spool *sp, struct kh_spool_seg *s)
{
    struct kh_spool_drainer *d = &sp->drain;
    struct kh_logline l;
    if (kh_log_begin(&l, KH_LOG_ERROR, "spool: a synced record no longer checks out; "
                                       "skipping the rest of its segment")) {
        kh_log_int(&l, "segment", (int64_t)s->seq);
        kh_log_int(&l, "offset", (int64_t)d->off);
        kh_log_end(&l);
    }
    uint64_t left = 0; /* the rest, but the held ones: their holders settle them */
    for (uint64_t i = s->read; i < s->records; i++)
        left += !kh_spool_is_held(s, i);
    kh_metrics.spool_dropped += left;
    settle(sp, s, left);
    s->read = s->records;
    d->off = s->end;
}

static void log_unstorable(const struct kh_spool_seg *s, const char *why)
{
    struct kh_logline l;
    if (kh_log_begin(&l, KH_LOG_ERROR, "spool: a spooled report cannot be stored; dropped")) {
        kh_log_int(&l, "segment", (int64_t)s->seq);
        kh_log_str(&l, "error", why ? why : "unknown");
        kh_log_end(&l);
    }
}

/* Hands the record at the read position (rlen bytes in the file) to the replay function. */
static enum step hand_over(struct kh_spool *sp, struct kh_spool_seg *s,
                           const struct kh_spool_meta *m, const uint8_t *body, size_t blen,
                           size_t rlen)
{
    struct kh_spool_drainer *d = &sp->drain;
    struct replay_ctx *ctx = malloc(sizeof(*ctx));
    if (ctx == NULL)
        return STEP_WAIT;
    *ctx = (struct replay_ctx){.sp = sp, .seg = s};
    const char *why = NULL;
    int rc = d->replay(d->replay_arg, m, body, blen, replay_done, ctx, &why);
    if (rc == KH_ERETRY) {
        free(ctx); /* the same record again, later */
        return STEP_WAIT;
    }
    d->off += rlen;
    s->read++;
    if (rc == 0) {
        d->out++; /* replay_done follows */
        return STEP_NEXT;
    }
    free(ctx);
    log_unstorable(s, why);
    kh_metrics.spool_dropped++;
    settle(sp, s, 1);
    return STEP_NEXT;
}

/* Reads the record at the read position in s and hands it over. */
static enum step replay_next(struct kh_spool *sp, struct kh_spool_seg *s)
{
    struct kh_spool_drainer *d = &sp->drain;
    int fd = seg_rfd(sp, s);
    if (fd < 0)
        return STEP_WAIT;
    if (d->rd.fd != fd)
        kh_spool_reader_reset(&d->rd, fd);
    struct kh_spool_meta m;
    const uint8_t *body;
    size_t blen, rlen;
    int ioerr;
    enum kh_spool_check c =
        kh_spool_reader_record(&d->rd, d->off, s->end, &m, &body, &blen, &rlen, &ioerr);
    if (c == KH_SPOOL_REC_OK && kh_spool_is_held(s, s->read)) {
        d->off += rlen; /* its holder stores it from memory */
        s->read++;
        return STEP_NEXT;
    }
    if (c == KH_SPOOL_REC_OK)
        return hand_over(sp, s, &m, body, blen, rlen);
    if (ioerr || c == KH_SPOOL_REC_SHORT) {
        kh_spool_log_errno("spool: cannot read a segment", "", ioerr ? ioerr : EIO);
        return STEP_WAIT;
    }
    skip_damaged(sp, s);
    return STEP_NEXT;
}

/* One step: a record replayed (or dropped), or a move to the next segment. */
static enum step drain_one(struct kh_spool *sp)
{
    struct kh_spool_drainer *d = &sp->drain;
    if (d->seg == NULL) {
        if (sp->segs == NULL)
            return STEP_CAUGHT_UP;
        start_at(d, sp->segs);
    }
    struct kh_spool_seg *s = d->seg;
    if (!s->replay) {
        /* every record its holder's, stored from memory: passed over unread (a release of
         * one of them sends the drainer back to the start) */
        d->off = s->end;
        s->read = s->records; /* the record at the end is number `records` */
        if (s->sealed && s->next) {
            start_at(d, s->next);
            return STEP_NEXT;
        }
        return STEP_CAUGHT_UP;
    }
    if (d->off < s->end)
        return replay_next(sp, s);
    if (s->sealed && s->next) {
        start_at(d, s->next);
        return STEP_NEXT;
    }
    return STEP_CAUGHT_UP;
}

/* More to read now, and room for it. */
static bool more_now(const struct kh_spool *sp)
{
    const struct kh_spool_drainer *d = &sp->drain;
    const struct kh_spool_seg *s = d->seg;
    return s && d->state == KH_SPOOL_DRAIN_READING && d->out < d->max_out &&
           (d->off < s->end || (s->sealed && s->next));
}

static void drain_step(struct kh_spool *sp)
{
    struct kh_spool_drainer *d = &sp->drain;
    switch (d->state) {
    case KH_SPOOL_DRAIN_STOPPED:
        return;
    case KH_SPOOL_DRAIN_REWINDING:
        rewind_when_settled(sp);
        return;
    case KH_SPOOL_DRAIN_READING:
        break;
    }
    enum step st = STEP_NEXT;
    for (int i = 0; i < DRAIN_STEP_RECORDS && d->out < d->max_out && st == STEP_NEXT; i++)
        st = drain_one(sp);
    if (st == STEP_WAIT)
        drain_wait(sp);
    free_drained(sp);
    /* come back after the loop has served the network (unless a pause is under way) */
    if (more_now(sp) && !evtimer_pending(d->timer, NULL))
        event_active(d->ev, EV_READ, 0);
}

static void on_drain(evutil_socket_t fd, short what, void *arg) { drain_step(arg); }

void kh_spool_drain_released(struct kh_spool *sp, struct kh_spool_seg *s, uint64_t i)
{
    struct kh_spool_drainer *d = &sp->drain;
    s->replay = true;
    /* whether the drainer still comes to record i: it has not started, or is at s before
     * it, or at an older segment */
    bool reaches = d->seg == NULL || (d->seg == s && s->read <= i);
    for (const struct kh_spool_seg *t = d->seg ? d->seg->next : NULL; t && !reaches && d->seg != s;
         t = t->next)
        reaches = t == s;
    if (!reaches && d->state == KH_SPOOL_DRAIN_READING) {
        d->state = KH_SPOOL_DRAIN_REWINDING;
        struct kh_logline l;
        if (kh_log_begin(&l, KH_LOG_WARN, "log: a report could not be stored from memory; "
                                          "replaying it from the log")) {
            kh_log_int(&l, "segment", (int64_t)s->seq);
            kh_log_end(&l);
        }
    }
    kh_spool_drain_schedule(sp);
}

int kh_spool_drain_start(struct kh_spool *sp, struct event_base *base,
                         kh_spool_replay_fn replay, void *arg)
{
    struct kh_spool_drainer *d = &sp->drain;
    d->replay = replay;
    d->replay_arg = arg;
    d->rd.fd = -1;
    d->ev = event_new(base, -1, 0, on_drain, sp);
    d->timer = evtimer_new(base, on_drain, sp);
    if (d->ev == NULL || d->timer == NULL)
        return KH_ENOMEM;
    kh_spool_drain_schedule(sp);
    return 0;
}

void kh_spool_drain_stop(struct kh_spool *sp)
{
    sp->drain.state = KH_SPOOL_DRAIN_STOPPED;
    if (sp->drain.timer)
        evtimer_del(sp->drain.timer);
}

void kh_spool_drain_cleanup(struct kh_spool *sp)
{
    struct kh_spool_drainer *d = &sp->drain;
    free(d->rd.buf);
    d->rd.buf = NULL;
    if (d->ev)
        event_free(d->ev);
    if (d->timer)
        event_free(d->timer);
    d->ev = d->timer = NULL;
}
