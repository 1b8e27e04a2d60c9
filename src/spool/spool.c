/*
 * spool: see spool.h. This file is the lifecycle (open: the directory, its lock and
 * recovery; start; free) and the segment list the other parts share; spool_internal.h
 * says which file does what. It owns the directory and lock descriptors and the spool
 * object; it does no I/O on segments itself.
 *
 * Files: spool_dir/NNNNNNNNNNNNNNNNNNNN.spool (20-digit sequence number), spool_dir/LOCK (an
 * flock so two processes never share a spool), and *.corrupt files set aside by recovery.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/errors.h"
#include "core/log.h"
#include "core/metrics.h"
#include "spool/spool_internal.h"

void kh_spool_log_errno(const char *msg, const char *path, int errnum)
{
    struct kh_logline l;
    if (kh_log_begin(&l, KH_LOG_ERROR, msg)) {
        kh_log_str(&l, "path", path);
        kh_log_str(&l, "error", strerror(errnum));
        kh_log_end(&l);
    }
}

void kh_spool_seg_name(char *out, size_t n, uint64_t seq)
{
    snprintf(out, n, "%020" PRIu64 ".spool", seq);
}

struct kh_spool_seg *kh_spool_seg_add(struct kh_spool *sp, uint64_t seq, uint64_t end,
                                      uint64_t records, bool sealed)
{
    struct kh_spool_seg *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    *s = (struct kh_spool_seg){
        .seq = seq, .end = end, .records = records, .sealed = sealed, .rfd = -1};
    *sp->segs_tail = s;
    sp->segs_tail = &s->next;
    sp->records += records;
    sp->used += end;
    return s;
}

struct kh_spool_seg *kh_spool_seg_last(struct kh_spool *sp)
{
    struct kh_spool_seg *s = sp->segs;
    while (s && s->next)
        s = s->next;
    return s;
}

/* Forgets the list (the files stay). */
static void segs_free(struct kh_spool *sp)
{
    for (struct kh_spool_seg *s = sp->segs, *nx; s; s = nx) {
        nx = s->next;
        if (s->rfd >= 0)
            close(s->rfd);
        free(s->held_bits);
        free(s);
    }
    sp->segs = NULL;
    sp->segs_tail = &sp->segs;
}

/* Creates and opens spool_dir and takes its lock. 0, or -1 with *err set. */
static int open_dir(struct kh_spool *sp, const char **err)
{
    if (mkdir(sp->dir, 0750) != 0 && errno != EEXIST) {
        *err = kh_errf("spool_dir: cannot create %s: %s", sp->dir, strerror(errno));
        return -1;
    }
    sp->dirfd = open(sp->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (sp->dirfd < 0) {
        *err = kh_errf("spool_dir: %s: %s", sp->dir, strerror(errno));
        return -1;
    }
    sp->lockfd = openat(sp->dirfd, "LOCK", O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    if (sp->lockfd < 0) {
        *err = kh_errf("spool_dir: %s/LOCK: %s", sp->dir, strerror(errno));
        return -1;
    }
    if (flock(sp->lockfd, LOCK_EX | LOCK_NB) != 0) {
        *err = kh_errf("spool_dir: %s is in use by another kohaku process (%s/LOCK is locked)",
                       sp->dir, sp->dir);
        return -1;
    }
    return 0;
}

static void log_ready(const struct kh_spool *sp)
{
    struct kh_logline l;
    if (kh_log_begin(&l, KH_LOG_INFO, "spool ready")) {
        kh_log_str(&l, "dir", sp->dir);
        kh_log_int(&l, "records_to_replay", (int64_t)sp->records);
        kh_log_int(&l, "bytes", (int64_t)sp->used);
        kh_log_str(&l, "fsync", sp->interval_mode ? "interval" : "batch");
        kh_log_end(&l);
    }
}

struct kh_spool *kh_spool_open(const struct kh_config *cfg, const char **err)
{
    struct kh_spool *sp = calloc(1, sizeof(*sp));
    if (sp == NULL || (sp->dir = strdup(cfg->spool_dir)) == NULL) {
        *err = "spool: out of memory";
        free(sp);
        return NULL;
    }
    sp->dirfd = sp->lockfd = sp->file.fd = -1;
    sp->segs_tail = &sp->segs;
    sp->max_bytes = (uint64_t)cfg->spool_max_bytes;
    sp->seg_bytes = (uint64_t)cfg->spool_segment_bytes;
    sp->interval_mode = strcmp(cfg->spool_fsync, "interval") == 0;
    sp->interval_ms = (long)cfg->spool_fsync_interval_ms;
    /* the drainer leaves half of the storage queue to reports arriving now */
    size_t half = (size_t)cfg->spool_backlog_reports / 2;
    sp->drain.max_out = half ? half : 1;
    sp->drain.rd.fd = -1;
    if (open_dir(sp, err) != 0 || kh_spool_recover(sp, err) != 0)
        goto fail;
    for (struct kh_spool_seg *s = sp->segs; s; s = s->next)
        s->replay = true; /* whatever a previous run left, held or not, is replayed */
    kh_metrics.spool_enabled = 1;
    kh_metrics.spool_bytes = sp->used;
    log_ready(sp);
    return sp;
fail:
    segs_free(sp);
    if (sp->lockfd >= 0)
        close(sp->lockfd);
    if (sp->dirfd >= 0)
        close(sp->dirfd);
    free(sp->dir);
    free(sp);
    return NULL;
}

int kh_spool_start(struct kh_spool *sp, struct event_base *base, kh_spool_replay_fn replay,
                   void *arg)
{
    int rc = kh_spool_io_start(sp, base);
    if (rc == 0)
        rc = kh_spool_drain_start(sp, base, replay, arg);
    return rc;
}

void kh_spool_gauges(const struct kh_spool *sp, uint64_t *segments, uint64_t *waiting)
{
    uint64_t n = 0;
    for (const struct kh_spool_seg *s = sp->segs; s; s = s->next)
        n++;
    *segments = n;
    *waiting = sp->records - sp->done;
}

size_t kh_spool_pending(const struct kh_spool *sp) { return sp->pending; }

uint64_t kh_spool_held_out(const struct kh_spool *sp) { return sp->held; }

void kh_spool_settle(struct kh_spool *sp, struct kh_spool_held h)
{
    h.seg->held--;
    h.seg->held_done++;
    h.seg->done++;
    sp->held--;
    sp->done++;
    kh_spool_drain_schedule(sp); /* its segment may go now */
}

void kh_spool_release(struct kh_spool *sp, struct kh_spool_held h)
{
    h.seg->held--;
    sp->held--;
    h.seg->held_bits[h.index / 8] &= (uint8_t)~(1u << (h.index % 8));
    kh_spool_drain_released(sp, h.seg, h.index);
}

void kh_spool_stop_drain(struct kh_spool *sp) { kh_spool_drain_stop(sp); }

void kh_spool_free(struct kh_spool *sp)
{
    if (sp == NULL)
        return;
    kh_spool_drain_stop(sp);
    kh_spool_io_stop(sp); /* every append completes here */
    kh_spool_drain_cleanup(sp);
    segs_free(sp);
    close(sp->lockfd);
    close(sp->dirfd);
    free(sp->dir);
    kh_metrics.spool_enabled = 0;
    free(sp);
}
