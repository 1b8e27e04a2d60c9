/*
 * spool_io: appends, group commit and the I/O thread.
 *
 * The loop thread gathers appends into a group (`cur`) and hands it to the I/O thread (a
 * one-thread kh_workq), which writes it to the active segment, fdatasyncs it, and opens a
 * new segment when the active one is full or was poisoned by a failed write; back on the
 * loop, the group's records are counted into the segment list and their callbacks run.
 *
 * At most one group is out at a time, so the loop knows the order in which records reach
 * the disk; the next one gathers meanwhile (spool_fsync = batch), or goes at most every
 * spool_fsync_interval_ms (interval). The I/O thread owns sp->file and nothing else: it
 * must not touch the segment list, the counters or any callback.
 */
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "core/errors.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/timeutil.h"
#include "spool/spool_internal.h"

#define IOV_MAX_PER_WRITE 64

/* --- the I/O thread ------------------------------------------------------------------- */

static void io_fail(struct kh_spool_group *g, const char *what, int errnum)
{
    g->rc = KH_EIO;
    snprintf(g->err, sizeof(g->err), "%s: %s", what, strerror(errnum));
}

static void io_close(struct kh_spool *sp, struct kh_spool_group *g)
{
    struct kh_spool_file *f = &sp->file;
    if (f->fd < 0)
        return;
    close(f->fd);
    f->fd = -1;
    g->sealed_seq = f->seq;
}

/* A new segment with its header, durable (file and directory entry) before any record. */
static int io_create(struct kh_spool *sp, struct kh_spool_group *g)
{
    struct kh_spool_file *f = &sp->file;
    uint64_t seq = f->next_seq;
    char name[64];
    kh_spool_seg_name(name, sizeof(name), seq);
    int fd = openat(sp->dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
    if (fd < 0) {
        io_fail(g, "spool: creating a segment", errno);
        return -1;
    }
    uint8_t hdr[KH_SPOOL_FILE_HEADER];
    kh_spool_file_header(hdr);
    if (pwrite(fd, hdr, sizeof(hdr), 0) != (ssize_t)sizeof(hdr) || fdatasync(fd) != 0 ||
        fsync(sp->dirfd) != 0) {
        io_fail(g, "spool: writing a segment header", errno);
        close(fd);
        unlinkat(sp->dirfd, name, 0);
        return -1;
    }
    *f = (struct kh_spool_file){.fd = fd, .seq = seq, .size = KH_SPOOL_FILE_HEADER,
                                .next_seq = seq + 1};
    g->new_seq = seq;
    return 0;
}

/* Writes the records from `off` on. 0 or an errno. */
static int io_write_all(int fd, struct kh_spool_rec *head, uint64_t off)
{
    struct iovec iov[IOV_MAX_PER_WRITE];
    struct kh_spool_rec *r = head;
    size_t skip = 0; /* bytes of r already written */
    while (r) {
        int n = 0;
        struct kh_spool_rec *q = r;
        for (size_t sk = skip; q && n < IOV_MAX_PER_WRITE; q = q->next, sk = 0) {
            iov[n].iov_base = q->data + sk;
            iov[n].iov_len = q->len - sk;
            n++;
        }
        ssize_t w = pwritev(fd, iov, n, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return w < 0 ? errno : EIO;
        off += (uint64_t)w;
        size_t left = (size_t)w;
        while (r && left >= r->len - skip) {
            left -= r->len - skip;
            r = r->next;
            skip = 0;
        }
        skip += left;
    }
    return 0;
}

static bool io_needs_new_file(const struct kh_spool *sp, const struct kh_spool_group *g)
{
    const struct kh_spool_file *f = &sp->file;
    return f->poisoned ||
           (f->size > KH_SPOOL_FILE_HEADER && f->size + g->bytes > sp->seg_bytes);
}

/* Work queue, I/O thread: one group. */
static void io_group(struct kh_workq_item *it, int worker, void *arg)
{
    struct kh_spool *sp = arg;
    struct kh_spool_group *g = KH_WORKQ_ENTRY(it, struct kh_spool_group, node);
    struct kh_spool_file *f = &sp->file;
    if (g->rotate_only) {
        io_close(sp, g);
        return;
    }
    if (f->fd >= 0 && io_needs_new_file(sp, g))
        io_close(sp, g);
    if (f->fd < 0 && io_create(sp, g) != 0)
        return;
    int e = io_write_all(f->fd, g->head, f->size);
    if (e == 0 && fdatasync(f->fd) != 0)
        e = errno;
    if (e != 0) {
        io_fail(g, "spool: writing records", e);
        /* whatever of this group reached the file must not sit between acknowledged
         * records: cut it (best effort); and after a failed write or sync never trust this
         * file again: the next group starts a new one */
        if (ftruncate(f->fd, (off_t)f->size) == 0)
            (void)fdatasync(f->fd);
        f->poisoned = true;
        return;
    }
    f->size += g->bytes;
    g->end = f->size;
}

/* --- the loop side ---------------------------------------------------------------------- */

static struct kh_spool_group *group_new(void)
{
    struct kh_spool_group *g = calloc(1, sizeof(*g));
    if (g)
        g->tail = &g->head;
    return g;
}

/* interval mode: true when the last group went out less than the interval ago (the timer
 * then sends this one). */
static bool too_soon(struct kh_spool *sp)
{
    uint64_t due = sp->last_group_usec + (uint64_t)sp->interval_ms * 1000;
    uint64_t now = kh_mono_usec();
    if (now < due) {
        if (!evtimer_pending(sp->group_timer, NULL)) {
            uint64_t wait = due - now;
            struct timeval tv = {(time_t)(wait / 1000000), (long)(wait % 1000000)};
            evtimer_add(sp->group_timer, &tv);
        }
        return true;
    }
    sp->last_group_usec = now;
    return false;
}

/* Sends the gathered group (or a rotation) to the I/O thread unless one is out. */
static void dispatch(struct kh_spool *sp)
{
    if (sp->group_out || sp->io == NULL)
        return;
    struct kh_spool_group *g = sp->cur;
    if (g == NULL || g->n == 0) {
        if (!sp->rotate_wanted)
            return;
        if (g == NULL && (g = group_new()) == NULL)
            return;
        g->rotate_only = true;
        sp->rotate_wanted = false;
    }
    if (sp->interval_mode && !g->rotate_only && too_soon(sp))
        return;
    sp->cur = NULL;
    sp->group_out = true;
    kh_workq_submit(sp->io, &g->node);
}

static void on_group_timer(evutil_socket_t fd, short what, void *arg) { dispatch(arg); }

void kh_spool_io_rotate(struct kh_spool *sp)
{
    sp->rotate_wanted = true;
    dispatch(sp);
}

static int append(struct kh_spool *sp, const struct kh_spool_meta *m, const void *body,
                  size_t len, kh_spool_cb cb, kh_spool_held_cb held_cb, void *arg)
{
    size_t rlen = kh_spool_record_size(len);
    if (len > KH_SPOOL_MAX_PAYLOAD - KH_SPOOL_META)
        return KH_ENOSPC;
    if (sp->used + rlen > sp->max_bytes) {
        kh_metrics.spool_full++;
        return KH_ENOSPC;
    }
    if (sp->cur == NULL && (sp->cur = group_new()) == NULL)
        return KH_ENOMEM;
    struct kh_spool_rec *r = malloc(sizeof(*r) + rlen);
    if (r == NULL)
        return KH_ENOMEM;
    r->next = NULL;
    r->cb = cb;
    r->held_cb = held_cb;
    r->arg = arg;
    r->len = rlen;
    kh_spool_encode(r->data, m, body, len);
    memcpy(r->data + KH_SPOOL_REC_HEADER + KH_SPOOL_META, body, len);
    *sp->cur->tail = r;
    sp->cur->tail = &r->next;
    sp->cur->n++;
    sp->cur->bytes += rlen;
    sp->used += rlen;
    sp->pending++;
    kh_metrics.spool_bytes = sp->used;
    dispatch(sp);
    return 0;
}

int kh_spool_append(struct kh_spool *sp, const struct kh_spool_meta *m, const void *body,
                    size_t len, kh_spool_cb cb, void *arg)
{
    return append(sp, m, body, len, cb, NULL, arg);
}

int kh_spool_append_held(struct kh_spool *sp, const struct kh_spool_meta *m, const void *body,
                         size_t len, kh_spool_held_cb cb, void *arg)
{
    return append(sp, m, body, len, NULL, cb, arg);
}

static void mark_sealed(struct kh_spool *sp, uint64_t seq)
{
    for (struct kh_spool_seg *s = sp->segs; s; s = s->next)
        if (s->seq == seq)
            s->sealed = true;
}

static void log_write_failed(const struct kh_spool *sp, const struct kh_spool_group *g)
{
    struct kh_logline l;
    if (kh_log_begin(&l, KH_LOG_ERROR, "spool write failed")) {
        kh_log_str(&l, "dir", sp->dir);
        kh_log_int(&l, "reports", (int64_t)g->n);
        kh_log_str(&l, "error", g->err);
        kh_log_end(&l);
    }
}

/* Before the group's records are counted into s: the bits of its held ones set, and s
 * marked for the drainer if any is not held (a spooled report). 0 or KH_ENOMEM. */
static int mark_held(struct kh_spool_seg *s, const struct kh_spool_group *g)
{
    uint64_t i = s->records;
    bool any = false;
    for (const struct kh_spool_rec *r = g->head; r; r = r->next) {
        if (r->held_cb == NULL)
            s->replay = true;
        any |= r->held_cb != NULL;
    }
    if (!any)
        return 0;
    uint64_t need = i + g->n;
    if (need > s->held_cap) {
        uint64_t cap = s->held_cap ? s->held_cap : 1024;
        while (cap < need)
            cap *= 2;
        uint8_t *bits = realloc(s->held_bits, (size_t)(cap / 8));
        if (bits == NULL)
            return KH_ENOMEM;
        memset(bits + s->held_cap / 8, 0, (size_t)((cap - s->held_cap) / 8));
        s->held_bits = bits;
        s->held_cap = cap;
    }
    for (const struct kh_spool_rec *r = g->head; r; r = r->next, i++)
        if (r->held_cb)
            s->held_bits[i / 8] |= (uint8_t)(1u << (i % 8));
    return 0;
}

/* The segment list and the counters learn what the group did; its callbacks run. */
static void group_settled(struct kh_spool *sp, struct kh_spool_group *g)
{
    if (g->sealed_seq)
        mark_sealed(sp, g->sealed_seq);
    if (g->new_seq) {
        if (kh_spool_seg_add(sp, g->new_seq, KH_SPOOL_FILE_HEADER, 0, false) == NULL &&
            g->rc == 0) {
            /* cannot track the new file: treat the group as failed (its records may
             * still be replayed at the next start, which is harmless) */
            io_fail(g, "spool: out of memory", ENOMEM);
        }
    }
    struct kh_spool_seg *s = NULL;
    uint64_t first = 0; /* the group's first record's place in s */
    int held_rc = 0;    /* KH_ENOMEM: the held records cannot be tracked; the drainer's now */
    if (g->rc == 0 && g->n && mark_held(kh_spool_seg_last(sp), g) != 0) {
        kh_spool_seg_last(sp)->replay = true;
        held_rc = KH_ENOMEM;
    }
    if (g->rc == 0 && g->n) {
        s = kh_spool_seg_last(sp);
        first = s->records;
        s->end = g->end;
        s->records += g->n;
        sp->records += g->n;
        kh_metrics.spool_appended += g->n;
        kh_metrics.spool_fsyncs++;
    } else if (g->rc != 0) {
        sp->used -= g->bytes;
        kh_metrics.spool_append_failed += g->n;
        log_write_failed(sp, g);
    }
    kh_metrics.spool_bytes = sp->used;
    for (struct kh_spool_rec *r = g->head, *nx; r; r = nx) {
        nx = r->next;
        sp->pending--;
        if (r->held_cb && g->rc == 0 && held_rc != 0) {
            r->held_cb(r->arg, held_rc, (struct kh_spool_held){NULL, 0});
        } else if (r->held_cb && g->rc == 0) {
            s->held++;
            sp->held++;
            r->held_cb(r->arg, 0, (struct kh_spool_held){s, first});
        } else if (r->held_cb) {
            r->held_cb(r->arg, g->rc, (struct kh_spool_held){NULL, 0});
        } else {
            r->cb(r->arg, g->rc);
        }
        free(r);
        first++;
    }
    free(g);
}

/* Work queue, loop thread: the group is back from the I/O thread. */
static void on_group_done(struct kh_workq_item *it, void *arg)
{
    struct kh_spool *sp = arg;
    sp->group_out = false;
    group_settled(sp, KH_WORKQ_ENTRY(it, struct kh_spool_group, node));
    dispatch(sp);
    kh_spool_drain_schedule(sp);
}

int kh_spool_io_start(struct kh_spool *sp, struct event_base *base)
{
    sp->group_timer = evtimer_new(base, on_group_timer, sp);
    if (sp->group_timer == NULL)
        return KH_ENOMEM;
    sp->io = kh_workq_new(base, "kh-spool", 1, io_group, on_group_done, sp);
    if (sp->io == NULL)
        return KH_ENOMEM;
    return 0;
}

void kh_spool_io_stop(struct kh_spool *sp)
{
    if (sp->io) {
        /* what is gathered or waiting for the interval goes now; the group each completion
         * sends next too, until nothing is left; then the thread ends */
        sp->interval_mode = false;
        dispatch(sp);
        kh_workq_free(sp->io);
        sp->io = NULL;
    } else if (sp->cur && sp->cur->n) {
        /* appended before the thread could start: nothing was written */
        io_fail(sp->cur, "spool: not started", EIO);
        group_settled(sp, sp->cur);
        sp->cur = NULL;
    }
    free(sp->cur); /* a group that gathered nothing */
    sp->cur = NULL;
    if (sp->group_timer)
        event_free(sp->group_timer);
    sp->group_timer = NULL;
    if (sp->file.fd >= 0)
        close(sp->file.fd);
    sp->file.fd = -1;
}
