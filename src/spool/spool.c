/*
 * spool: see spool.h.
 *
 * Threads: the loop thread owns the segment list, the counters, the group being gathered and
 * every callback. The I/O thread owns the file it appends to (fd, seq, size); it takes groups
 * from `todo` and hands them back through `done` (both under `mu`), then wakes the loop with
 * event_active, as the batcher's writers do. At most one group is out at a time, so the
 * loop knows the order in which records reach the disk.
 *
 * Files: spool_dir/NNNNNNNNNNNNNNNNNNNN.spool (20-digit sequence number), spool_dir/LOCK (an
 * flock so two processes never share a spool). A file whose header does not check out is
 * renamed to *.corrupt and left for an operator; kohaku never deletes what it cannot read.
 */
#include "spool/spool.h"

#include <dirent.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "core/errors.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/timeutil.h"

#define DRAIN_STEP_RECORDS 64           /* records replayed per loop turn */
#define DRAIN_WAIT_MS 200               /* storage not ready: look again after this */
#define READ_CHUNK ((size_t)1 << 20)    /* drainer and recovery read this much at once */

struct rec {
    struct rec *next;
    kh_spool_cb cb;
    void *arg;
    size_t len; /* of data: record header, metadata, body */
    uint8_t data[];
};

struct group {
    struct group *next;
    struct rec *head, **tail;
    size_t n;
    size_t bytes;
    bool rotate_only; /* seal the active segment; no records */
    /* filled by the I/O thread */
    int rc;
    char err[200];
    uint64_t new_seq;    /* a segment this group created, 0 = none */
    uint64_t sealed_seq; /* a segment this group closed, 0 = none */
    uint64_t seq, end;   /* where the records went: segment and its size after them */
};

struct seg {
    struct seg *next;
    uint64_t seq;
    uint64_t end;     /* durable size of the file */
    uint64_t records; /* durable records in it */
    uint64_t read;    /* of those, taken by the drainer since the last rewind */
    uint64_t done;    /* of those, replayed and settled since the last rewind */
    bool sealed;      /* no more appends */
    int rfd;          /* the drainer's descriptor, -1 until it reads */
};

/* A buffered sequential reader over one segment file. */
struct reader {
    int fd;
    uint8_t *buf;
    size_t cap, len;
    uint64_t off; /* file offset of buf[0] */
};

struct kh_spool {
    char *dir;
    int dirfd, lockfd;
    uint64_t max_bytes, seg_bytes;
    bool interval_mode;
    long interval_ms;
    size_t max_drain; /* replayed records out at once */
    struct event_base *base;
    struct event *done_ev, *drain_ev, *drain_timer, *group_timer;
    kh_spool_replay_fn replay;
    void *replay_arg;
    /* loop side: appends */
    struct group *cur;
    bool group_out;  /* a group is with the I/O thread */
    bool rotate_wanted;
    uint64_t used;   /* bytes on disk + bytes queued */
    size_t pending;  /* appends not yet completed */
    uint64_t last_group_usec;
    /* loop side: segments and the drainer */
    struct seg *segs, **segs_tail;
    uint64_t next_seq;
    uint64_t records, done; /* totals over segs */
    struct seg *rseg;       /* drainer position: segment (NULL = the first) ... */
    uint64_t roff;          /* ... and offset in it */
    struct reader rd;
    size_t drain_out;       /* replays submitted, not settled */
    bool rewind;            /* a replay failed: start over once drain_out is 0 */
    bool drain_stopped;
    bool in_step;
    /* I/O thread */
    pthread_t thread;
    bool started;
    int fd;
    uint64_t seq, size;
    bool poisoned; /* a failed write or sync: never append to this file again */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct group *todo, *done_list;
    bool quit;
};

static void log_err(const char *msg, const char *path, int errnum)
{
    struct kh_logline l;
    if (kh_log_begin(&l, KH_LOG_ERROR, msg)) {
        kh_log_str(&l, "path", path);
        kh_log_str(&l, "error", strerror(errnum));
        kh_log_end(&l);
    }
}

static void seg_name(char *out, size_t n, uint64_t seq)
{
    snprintf(out, n, "%020" PRIu64 ".spool", seq);
}

/* --- reader --------------------------------------------------------------------------- */

/* The record at `pos` (below `end`), reading as needed. */
static enum kh_spool_check reader_record(struct reader *r, uint64_t pos, uint64_t end,
                                         struct kh_spool_meta *m, const uint8_t **body,
                                         size_t *blen, size_t *rec_len, int *ioerr)
{
    *ioerr = 0;
    for (int pass = 0;; pass++) {
        enum kh_spool_check c = KH_SPOOL_REC_SHORT;
        *rec_len = 0;
        if (pos >= r->off && pos < r->off + r->len)
            c = kh_spool_decode(r->buf + (pos - r->off), (size_t)(r->off + r->len - pos), m,
                                body, blen, rec_len);
        if (c != KH_SPOOL_REC_SHORT || pass == 2)
            return c;
        size_t want = *rec_len > READ_CHUNK ? *rec_len : READ_CHUNK;
        if (want > end - pos)
            want = (size_t)(end - pos);
        if (want < KH_SPOOL_REC_HEADER || (*rec_len && want < *rec_len))
            return KH_SPOOL_REC_SHORT; /* the file ends inside this record */
        if (want > r->cap) {
            uint8_t *nb = realloc(r->buf, want);
            if (nb == NULL) {
                *ioerr = ENOMEM;
                return KH_SPOOL_REC_SHORT;
            }
            r->buf = nb;
            r->cap = want;
        }
        size_t got = 0;
        while (got < want) {
            ssize_t n = pread(r->fd, r->buf + got, want - got, (off_t)(pos + got));
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                *ioerr = n < 0 ? errno : 0;
                break;
            }
            got += (size_t)n;
        }
        r->off = pos;
        r->len = got;
        if (*ioerr)
            return KH_SPOOL_REC_SHORT;
    }
}

static void reader_reset(struct reader *r, int fd)
{
    r->fd = fd;
    r->len = 0;
    r->off = 0;
}

/* --- open and recovery ----------------------------------------------------------------- */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static bool parse_name(const char *name, uint64_t *seq)
{
    size_t n = strlen(name);
    if (n != 26 || strcmp(name + 20, ".spool") != 0)
        return false;
    uint64_t v = 0;
    for (int i = 0; i < 20; i++) {
        if (name[i] < '0' || name[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(name[i] - '0');
    }
    *seq = v;
    return v > 0;
}

static void set_corrupt_aside(struct kh_spool *sp, const char *name)
{
    char to[96];
    snprintf(to, sizeof(to), "%s.corrupt", name);
    if (renameat(sp->dirfd, name, sp->dirfd, to) != 0)
        log_err("spool: cannot rename an unreadable segment", name, errno);
    struct kh_logline l;
    if (kh_log_begin(&l, KH_LOG_ERROR, "spool: segment header unreadable; set aside")) {
        kh_log_str(&l, "dir", sp->dir);
        kh_log_str(&l, "file", to);
        kh_log_end(&l);
    }
}

/* Scans one segment, cuts a bad tail, and adds it to the list. 0 or -1 (I/O error). */
static int recover_segment(struct kh_spool *sp, uint64_t seq, bool last, char *err,
                           size_t errlen)
{
    char name[64];
    seg_name(name, sizeof(name), seq);
    int fd = openat(sp->dirfd, name, O_RDWR | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        snprintf(err, errlen, "spool_dir: %s/%s: %s", sp->dir, name, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    uint64_t size = (uint64_t)st.st_size;
    uint8_t hdr[KH_SPOOL_FILE_HEADER];
    ssize_t n = size >= KH_SPOOL_FILE_HEADER ? pread(fd, hdr, sizeof(hdr), 0) : 0;
    if (size < KH_SPOOL_FILE_HEADER || n != (ssize_t)sizeof(hdr) ||
        !kh_spool_check_file_header(hdr, sizeof(hdr))) {
        close(fd);
        if (size < KH_SPOOL_FILE_HEADER) {
            /* created and never synced with its header: nothing in it was acknowledged */
            unlinkat(sp->dirfd, name, 0);
            return 0;
        }
        set_corrupt_aside(sp, name);
        return 0;
    }
    struct reader rd = {0};
    reader_reset(&rd, fd);
    uint64_t pos = KH_SPOOL_FILE_HEADER, records = 0;
    int ioerr = 0;
    enum kh_spool_check c = KH_SPOOL_REC_OK;
    while (pos < size) {
        struct kh_spool_meta m;
        const uint8_t *body;
        size_t blen, rlen;
        c = reader_record(&rd, pos, size, &m, &body, &blen, &rlen, &ioerr);
        if (c != KH_SPOOL_REC_OK)
            break;
        pos += rlen;
        records++;
    }
    free(rd.buf);
    if (ioerr) {
        snprintf(err, errlen, "spool_dir: %s/%s: %s", sp->dir, name, strerror(ioerr));
        close(fd);
        return -1;
    }
    if (pos < size) {
        struct kh_logline l;
        if (kh_log_begin(&l, last ? KH_LOG_WARN : KH_LOG_ERROR,
                         last ? "spool: cut a torn tail (a write a crash interrupted; it was "
                                "never acknowledged)"
                              : "spool: cut a corrupt record and what follows it")) {
            kh_log_str(&l, "file", name);
            kh_log_int(&l, "offset", (int64_t)pos);
            kh_log_int(&l, "bytes_cut", (int64_t)(size - pos));
            kh_log_str(&l, "reason", c == KH_SPOOL_REC_BAD ? "bad length or checksum"
                                                            : "record cut short");
            kh_log_int(&l, "records_kept", (int64_t)records);
            kh_log_end(&l);
        }
        if (ftruncate(fd, (off_t)pos) != 0 || fsync(fd) != 0) {
            snprintf(err, errlen, "spool_dir: cutting %s/%s: %s", sp->dir, name,
                     strerror(errno));
            close(fd);
            return -1;
        }
        kh_metrics.spool_tails_cut++;
    }
    close(fd);
    if (records == 0) {
        unlinkat(sp->dirfd, name, 0);
        return 0;
    }
    struct seg *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        snprintf(err, errlen, "spool: out of memory");
        return -1;
    }
    *s = (struct seg){.seq = seq, .end = pos, .records = records, .sealed = true, .rfd = -1};
    *sp->segs_tail = s;
    sp->segs_tail = &s->next;
    sp->records += records;
    sp->used += pos;
    return 0;
}

static int recover(struct kh_spool *sp, char *err, size_t errlen)
{
    int fd = dup(sp->dirfd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (d == NULL) {
        snprintf(err, errlen, "spool_dir: %s: %s", sp->dir, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    uint64_t *seqs = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    int rc = 0;
    while ((de = readdir(d)) != NULL) {
        uint64_t seq;
        if (!parse_name(de->d_name, &seq))
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            uint64_t *ns = realloc(seqs, cap * sizeof(*ns));
            if (ns == NULL) {
                snprintf(err, errlen, "spool: out of memory");
                rc = -1;
                break;
            }
            seqs = ns;
        }
        seqs[n++] = seq;
    }
    closedir(d);
    if (rc == 0) {
        if (n > 0)
            qsort(seqs, n, sizeof(*seqs), cmp_u64);
        for (size_t i = 0; i < n && rc == 0; i++)
            rc = recover_segment(sp, seqs[i], i + 1 == n, err, errlen);
        sp->next_seq = n ? seqs[n - 1] + 1 : 1;
    }
    free(seqs);
    return rc;
}

struct kh_spool *kh_spool_open(const struct kh_config *cfg, char *err, size_t errlen)
{
    struct kh_spool *sp = calloc(1, sizeof(*sp));
    if (sp == NULL || (sp->dir = strdup(cfg->spool_dir)) == NULL) {
        snprintf(err, errlen, "spool: out of memory");
        free(sp);
        return NULL;
    }
    sp->dirfd = sp->lockfd = sp->fd = -1;
    sp->segs_tail = &sp->segs;
    sp->max_bytes = (uint64_t)cfg->spool_max_bytes;
    sp->seg_bytes = (uint64_t)cfg->spool_segment_bytes;
    sp->interval_mode = strcmp(cfg->spool_fsync, "interval") == 0;
    sp->interval_ms = (long)cfg->spool_fsync_interval_ms;
    /* the drainer leaves half of the storage queue to reports arriving now */
    sp->max_drain = (size_t)cfg->spool_backlog_reports / 2 ? (size_t)cfg->spool_backlog_reports / 2 : 1;
    if (mkdir(sp->dir, 0750) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "spool_dir: cannot create %s: %s", sp->dir, strerror(errno));
        goto fail;
    }
    sp->dirfd = open(sp->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (sp->dirfd < 0) {
        snprintf(err, errlen, "spool_dir: %s: %s", sp->dir, strerror(errno));
        goto fail;
    }
    sp->lockfd = openat(sp->dirfd, "LOCK", O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    if (sp->lockfd < 0) {
        snprintf(err, errlen, "spool_dir: %s/LOCK: %s", sp->dir, strerror(errno));
        goto fail;
    }
    if (flock(sp->lockfd, LOCK_EX | LOCK_NB) != 0) {
        snprintf(err, errlen, "spool_dir: %s is in use by another kohaku process (%s/LOCK is "
                              "locked)", sp->dir, sp->dir);
        goto fail;
    }
    if (recover(sp, err, errlen) != 0)
        goto fail;
    if (pthread_mutex_init(&sp->mu, NULL) != 0 || pthread_cond_init(&sp->cv, NULL) != 0) {
        snprintf(err, errlen, "spool: cannot create its lock");
        goto fail;
    }
    kh_metrics.spool_enabled = 1;
    kh_metrics.spool_bytes = sp->used;
    struct kh_logline l;
    if (kh_log_begin(&l, KH_LOG_INFO, "spool ready")) {
        kh_log_str(&l, "dir", sp->dir);
        kh_log_int(&l, "records_to_replay", (int64_t)sp->records);
        kh_log_int(&l, "bytes", (int64_t)sp->used);
        kh_log_str(&l, "fsync", sp->interval_mode ? "interval" : "batch");
        kh_log_end(&l);
    }
    return sp;
fail:
    for (struct seg *s = sp->segs, *nx; s; s = nx) {
        nx = s->next;
        free(s);
    }
    if (sp->lockfd >= 0)
        close(sp->lockfd);
    if (sp->dirfd >= 0)
        close(sp->dirfd);
    free(sp->dir);
    free(sp);
    return NULL;
}

/* --- the I/O thread ------------------------------------------------------------------- */

static void io_fail(struct group *g, const char *what, int errnum)
{
    g->rc = KH_EIO;
    snprintf(g->err, sizeof(g->err), "%s: %s", what, strerror(errnum));
}

static void io_close(struct kh_spool *sp, struct group *g)
{
    if (sp->fd < 0)
        return;
    close(sp->fd);
    sp->fd = -1;
    g->sealed_seq = sp->seq;
}

static int io_create(struct kh_spool *sp, struct group *g, uint64_t seq)
{
    char name[64];
    seg_name(name, sizeof(name), seq);
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
    sp->fd = fd;
    sp->seq = seq;
    sp->size = KH_SPOOL_FILE_HEADER;
    sp->poisoned = false;
    g->new_seq = seq;
    return 0;
}

static int io_write_all(int fd, struct rec *head, uint64_t off)
{
    struct iovec iov[64];
    struct rec *r = head;
    size_t skip = 0; /* bytes of r already written */
    while (r) {
        int n = 0;
        struct rec *q = r;
        for (size_t sk = skip; q && n < 64; q = q->next, sk = 0) {
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

static void io_group(struct kh_spool *sp, struct group *g, uint64_t next_seq)
{
    if (g->rotate_only) {
        io_close(sp, g);
        return;
    }
    if (sp->fd >= 0 &&
        (sp->poisoned || (sp->size > KH_SPOOL_FILE_HEADER && sp->size + g->bytes > sp->seg_bytes)))
        io_close(sp, g);
    if (sp->fd < 0 && io_create(sp, g, next_seq) != 0)
        return;
    int e = io_write_all(sp->fd, g->head, sp->size);
    if (e == 0 && fdatasync(sp->fd) != 0)
        e = errno;
    if (e != 0) {
        io_fail(g, "spool: writing records", e);
        /* whatever reached the file of this group must not sit between acknowledged
         * records: cut it, and after a failed sync never trust this file again */
        if (ftruncate(sp->fd, (off_t)sp->size) != 0 || fdatasync(sp->fd) != 0)
            sp->poisoned = true;
        sp->poisoned = true;
        return;
    }
    sp->size += g->bytes;
    g->seq = sp->seq;
    g->end = sp->size;
}

static void *io_main(void *arg)
{
    struct kh_spool *sp = arg;
    pthread_mutex_lock(&sp->mu);
    for (;;) {
        while (sp->todo == NULL && !sp->quit)
            pthread_cond_wait(&sp->cv, &sp->mu);
        struct group *g = sp->todo;
        if (g == NULL)
            break;
        sp->todo = NULL; /* one group at a time */
        uint64_t next_seq = sp->next_seq;
        pthread_mutex_unlock(&sp->mu);
        io_group(sp, g, next_seq);
        pthread_mutex_lock(&sp->mu);
        if (g->new_seq)
            sp->next_seq = g->new_seq + 1;
        g->next = sp->done_list;
        sp->done_list = g;
        pthread_cond_broadcast(&sp->cv); /* kh_spool_free may be waiting for it */
        event_active(sp->done_ev, EV_READ, 0);
    }
    pthread_mutex_unlock(&sp->mu);
    return NULL;
}

/* --- loop side: appends ----------------------------------------------------------------- */

static struct group *group_new(void)
{
    struct group *g = calloc(1, sizeof(*g));
    if (g)
        g->tail = &g->head;
    return g;
}

static void dispatch(struct kh_spool *sp)
{
    if (sp->group_out)
        return;
    struct group *g = sp->cur;
    if (g == NULL || g->n == 0) {
        if (!sp->rotate_wanted)
            return;
        if (g == NULL && (g = group_new()) == NULL)
            return;
        g->rotate_only = true;
        sp->rotate_wanted = false;
    }
    if (sp->interval_mode && !g->rotate_only) {
        uint64_t due = sp->last_group_usec + (uint64_t)sp->interval_ms * 1000;
        uint64_t now = kh_mono_usec();
        if (now < due) {
            if (!evtimer_pending(sp->group_timer, NULL)) {
                uint64_t wait = due - now;
                struct timeval tv = {(time_t)(wait / 1000000), (long)(wait % 1000000)};
                evtimer_add(sp->group_timer, &tv);
            }
            return;
        }
        sp->last_group_usec = now;
    }
    sp->cur = NULL;
    sp->group_out = true;
    pthread_mutex_lock(&sp->mu);
    sp->todo = g;
    pthread_cond_signal(&sp->cv);
    pthread_mutex_unlock(&sp->mu);
}

static void on_group_timer(evutil_socket_t fd, short what, void *arg) { dispatch(arg); }

int kh_spool_append(struct kh_spool *sp, const struct kh_spool_meta *m, const void *body,
                    size_t len, kh_spool_cb cb, void *arg)
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
    struct rec *r = malloc(sizeof(*r) + rlen);
    if (r == NULL)
        return KH_ENOMEM;
    r->next = NULL;
    r->cb = cb;
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

static struct seg *last_seg(struct kh_spool *sp)
{
    struct seg *s = sp->segs;
    while (s && s->next)
        s = s->next;
    return s;
}

static void schedule_drain(struct kh_spool *sp)
{
    if (!sp->drain_stopped && sp->drain_ev)
        event_active(sp->drain_ev, EV_READ, 0);
}

static void group_settled(struct kh_spool *sp, struct group *g)
{
    if (g->sealed_seq)
        for (struct seg *s = sp->segs; s; s = s->next)
            if (s->seq == g->sealed_seq)
                s->sealed = true;
    if (g->new_seq) {
        struct seg *s = calloc(1, sizeof(*s));
        if (s == NULL) {
            /* cannot track the new file: treat the group as failed (its records may
             * still be replayed at the next start, which is harmless) */
            if (g->rc == 0)
                io_fail(g, "spool: out of memory", ENOMEM);
        } else {
            *s = (struct seg){.seq = g->new_seq, .end = KH_SPOOL_FILE_HEADER, .rfd = -1};
            *sp->segs_tail = s;
            sp->segs_tail = &s->next;
            sp->used += KH_SPOOL_FILE_HEADER;
        }
    }
    if (g->rc == 0 && g->n) {
        struct seg *s = last_seg(sp);
        s->end = g->end;
        s->records += g->n;
        sp->records += g->n;
        kh_metrics.spool_appended += g->n;
        kh_metrics.spool_fsyncs++;
    } else if (g->rc != 0) {
        sp->used -= g->bytes;
        kh_metrics.spool_append_failed += g->n;
        struct kh_logline l;
        if (kh_log_begin(&l, KH_LOG_ERROR, "spool write failed")) {
            kh_log_str(&l, "dir", sp->dir);
            kh_log_int(&l, "reports", (int64_t)g->n);
            kh_log_str(&l, "error", g->err);
            kh_log_end(&l);
        }
    }
    kh_metrics.spool_bytes = sp->used;
    for (struct rec *r = g->head, *nx; r; r = nx) {
        nx = r->next;
        sp->pending--;
        r->cb(r->arg, g->rc);
        free(r);
    }
    free(g);
}

static void on_io_done(evutil_socket_t fd, short what, void *arg)
{
    struct kh_spool *sp = arg;
    pthread_mutex_lock(&sp->mu);
    struct group *g = sp->done_list;
    sp->done_list = NULL;
    pthread_mutex_unlock(&sp->mu);
    if (g == NULL)
        return;
    sp->group_out = false;
    group_settled(sp, g);
    dispatch(sp);
    schedule_drain(sp);
}

/* --- loop side: the drainer -------------------------------------------------------------- */

static void seg_free(struct kh_spool *sp, struct seg *s)
{
    char name[64];
    seg_name(name, sizeof(name), s->seq);
    if (s->rfd >= 0)
        close(s->rfd);
    if (unlinkat(sp->dirfd, name, 0) != 0)
        log_err("spool: cannot delete a drained segment", name, errno);
    sp->used -= s->end;
    sp->records -= s->records;
    sp->done -= s->done;
    kh_metrics.spool_bytes = sp->used;
    free(s);
}

/* Deletes sealed segments at the head whose every record is settled. */
static void free_drained(struct kh_spool *sp)
{
    while (!sp->rewind && sp->segs) {
        struct seg *s = sp->segs;
        bool passed = (sp->rseg != NULL && sp->rseg != s) || (sp->rseg == s && sp->roff >= s->end);
        if (!s->sealed || !passed || s->done < s->records)
            break;
        sp->segs = s->next;
        if (sp->segs == NULL)
            sp->segs_tail = &sp->segs;
        if (sp->rseg == s) {
            sp->rseg = NULL;
            sp->rd.fd = -1;
        }
        seg_free(sp, s);
    }
    /* everything replayed and nothing coming: seal the active file so it can go too */
    struct seg *l = last_seg(sp);
    if (l && !l->sealed && sp->records == sp->done && sp->pending == 0 && !sp->group_out &&
        sp->drain_out == 0) {
        sp->rotate_wanted = true;
        dispatch(sp);
    }
}

struct replay_ctx {
    struct kh_spool *sp;
    struct seg *seg;
};

static void replay_done(void *arg, int result, const char *err)
{
    struct replay_ctx *c = arg;
    struct kh_spool *sp = c->sp;
    struct seg *s = c->seg;
    free(c);
    sp->drain_out--;
    if (result == 0 || result == KH_EREJECT) {
        s->done++;
        sp->done++;
        if (result == 0)
            kh_metrics.spool_drained++;
        else {
            kh_metrics.spool_dropped++;
            kh_log(KH_LOG_ERROR, "spool: storage refused a spooled report; dropped", err);
        }
    } else if (!sp->rewind) {
        sp->rewind = true;
        struct kh_logline l;
        if (kh_log_begin(&l, KH_LOG_WARN, "spool: replay failed; will start over from the "
                                          "oldest segment")) {
            kh_log_int(&l, "segment", (int64_t)s->seq);
            kh_log_end(&l);
        }
    }
    schedule_drain(sp);
}

static void drain_wait(struct kh_spool *sp)
{
    struct timeval tv = {0, DRAIN_WAIT_MS * 1000};
    if (!evtimer_pending(sp->drain_timer, NULL))
        evtimer_add(sp->drain_timer, &tv);
}

static int seg_rfd(struct kh_spool *sp, struct seg *s)
{
    if (s->rfd < 0) {
        char name[64];
        seg_name(name, sizeof(name), s->seq);
        s->rfd = openat(sp->dirfd, name, O_RDONLY | O_CLOEXEC);
        if (s->rfd < 0)
            log_err("spool: cannot open a segment to replay it", name, errno);
    }
    return s->rfd;
}

static void drain_step(struct kh_spool *sp)
{
    if (sp->drain_stopped || sp->in_step)
        return;
    sp->in_step = true;
    if (sp->rewind) {
        if (sp->drain_out > 0)
            goto out;
        /* every replay is settled: start again from the oldest segment, after a pause */
        sp->rewind = false;
        for (struct seg *s = sp->segs; s; s = s->next)
            s->done = s->read = 0;
        sp->done = 0;
        sp->rseg = NULL;
        sp->rd.fd = -1;
        drain_wait(sp);
        goto out;
    }
    for (int i = 0; i < DRAIN_STEP_RECORDS && sp->drain_out < sp->max_drain; i++) {
        if (sp->rseg == NULL) {
            if (sp->segs == NULL)
                break;
            sp->rseg = sp->segs;
            sp->roff = KH_SPOOL_FILE_HEADER;
            sp->rd.fd = -1;
        }
        struct seg *s = sp->rseg;
        if (sp->roff >= s->end) {
            if (s->sealed && s->next) {
                sp->rseg = s->next;
                sp->roff = KH_SPOOL_FILE_HEADER;
                sp->rd.fd = -1;
                continue;
            }
            break; /* caught up with the durable end */
        }
        int fd = seg_rfd(sp, s);
        if (fd < 0) {
            drain_wait(sp);
            break;
        }
        if (sp->rd.fd != fd)
            reader_reset(&sp->rd, fd);
        struct kh_spool_meta m;
        const uint8_t *body;
        size_t blen, rlen;
        int ioerr;
        enum kh_spool_check c = reader_record(&sp->rd, sp->roff, s->end, &m, &body, &blen,
                                              &rlen, &ioerr);
        if (c != KH_SPOOL_REC_OK) {
            if (ioerr || c == KH_SPOOL_REC_SHORT) {
                log_err("spool: cannot read a segment", "", ioerr ? ioerr : EIO);
                drain_wait(sp);
                break;
            }
            /* changed on disk since it was written and synced: skip the rest of the file */
            struct kh_logline l;
            if (kh_log_begin(&l, KH_LOG_ERROR, "spool: a synced record no longer checks out; "
                                               "skipping the rest of its segment")) {
                kh_log_int(&l, "segment", (int64_t)s->seq);
                kh_log_int(&l, "offset", (int64_t)sp->roff);
                kh_log_end(&l);
            }
            uint64_t left = s->records - s->read;
            kh_metrics.spool_dropped += left;
            sp->done += left;
            s->done += left;
            s->read = s->records;
            sp->roff = s->end;
            continue;
        }
        struct replay_ctx *ctx = malloc(sizeof(*ctx));
        if (ctx == NULL) {
            drain_wait(sp);
            break;
        }
        *ctx = (struct replay_ctx){.sp = sp, .seg = s};
        const char *why = NULL;
        int rc = sp->replay(sp->replay_arg, &m, body, blen, replay_done, ctx, &why);
        if (rc == KH_ERETRY) {
            free(ctx);
            drain_wait(sp);
            break;
        }
        sp->roff += rlen;
        s->read++;
        if (rc == 0) {
            sp->drain_out++;
            continue;
        }
        free(ctx);
        struct kh_logline l;
        if (kh_log_begin(&l, KH_LOG_ERROR, "spool: a spooled report cannot be stored; dropped")) {
            kh_log_int(&l, "segment", (int64_t)s->seq);
            kh_log_str(&l, "error", why ? why : "unknown");
            kh_log_end(&l);
        }
        kh_metrics.spool_dropped++;
        s->done++;
        sp->done++;
    }
    free_drained(sp);
    /* more to read and room for it: come back after the loop has served the network */
    if (sp->rseg && !sp->rewind && sp->drain_out < sp->max_drain &&
        (sp->roff < sp->rseg->end || (sp->rseg->sealed && sp->rseg->next)) &&
        !evtimer_pending(sp->drain_timer, NULL))
        event_active(sp->drain_ev, EV_READ, 0);
out:
    sp->in_step = false;
}

static void on_drain(evutil_socket_t fd, short what, void *arg) { drain_step(arg); }

int kh_spool_start(struct kh_spool *sp, struct event_base *base, kh_spool_replay_fn replay,
                   void *arg)
{
    sp->base = base;
    sp->replay = replay;
    sp->replay_arg = arg;
    sp->rd.fd = -1;
    sp->done_ev = event_new(base, -1, 0, on_io_done, sp);
    sp->drain_ev = event_new(base, -1, 0, on_drain, sp);
    sp->drain_timer = evtimer_new(base, on_drain, sp);
    sp->group_timer = evtimer_new(base, on_group_timer, sp);
    if (!sp->done_ev || !sp->drain_ev || !sp->drain_timer || !sp->group_timer)
        return KH_ENOMEM;
    if (pthread_create(&sp->thread, NULL, io_main, sp) != 0)
        return KH_ENOMEM;
    sp->started = true;
    schedule_drain(sp);
    return 0;
}

void kh_spool_gauges(const struct kh_spool *sp, uint64_t *segments, uint64_t *waiting)
{
    uint64_t n = 0;
    for (const struct seg *s = sp->segs; s; s = s->next)
        n++;
    *segments = n;
    *waiting = sp->records - sp->done;
}

size_t kh_spool_pending(const struct kh_spool *sp) { return sp->pending; }

void kh_spool_stop_drain(struct kh_spool *sp)
{
    sp->drain_stopped = true;
    if (sp->drain_timer)
        evtimer_del(sp->drain_timer);
}

void kh_spool_free(struct kh_spool *sp)
{
    if (sp == NULL)
        return;
    sp->drain_stopped = true;
    if (sp->started) {
        /* what is gathered or waiting for the interval goes now; then the thread ends */
        while (sp->group_out || (sp->cur && sp->cur->n)) {
            if (!sp->group_out) {
                sp->interval_mode = false;
                dispatch(sp);
            }
            pthread_mutex_lock(&sp->mu);
            while (sp->done_list == NULL)
                pthread_cond_wait(&sp->cv, &sp->mu);
            pthread_mutex_unlock(&sp->mu);
            on_io_done(-1, 0, sp);
        }
        pthread_mutex_lock(&sp->mu);
        sp->quit = true;
        pthread_cond_broadcast(&sp->cv);
        pthread_mutex_unlock(&sp->mu);
        pthread_join(sp->thread, NULL);
    }
    if (sp->fd >= 0)
        close(sp->fd);
    free(sp->cur);
    for (struct seg *s = sp->segs, *nx; s; s = nx) {
        nx = s->next;
        if (s->rfd >= 0)
            close(s->rfd);
        free(s);
    }
    free(sp->rd.buf);
    if (sp->done_ev)
        event_free(sp->done_ev);
    if (sp->drain_ev)
        event_free(sp->drain_ev);
    if (sp->drain_timer)
        event_free(sp->drain_timer);
    if (sp->group_timer)
        event_free(sp->group_timer);
    pthread_mutex_destroy(&sp->mu);
    pthread_cond_destroy(&sp->cv);
    close(sp->lockfd);
    close(sp->dirfd);
    free(sp->dir);
    kh_metrics.spool_enabled = 0;
    free(sp);
}
