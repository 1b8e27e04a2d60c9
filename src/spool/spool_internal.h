/*
 * spool_internal: what the spool's files share, for them only (nothing outside src/spool
 * includes this). The public API is spool.h; the bytes are spool_format.h.
 *
 *   spool.c          open, start, free, gauges: the lifecycle, and the segment list
 *   spool_recover.c  the start-up scan: torn tails cut, unreadable files set aside
 *   spool_io.c       appends: groups gathered on the loop, written and synced on the I/O
 *                    thread, segment rotation
 *   spool_drain.c    the drainer: replay in order, rewind after a failure, deletion of
 *                    settled segments
 *   spool_reader.c   a buffered reader of records, for recovery and the drainer
 *
 * Threads: everything here is the loop thread's, except `struct kh_spool_file`, which the
 * I/O thread alone uses once the spool has started (recovery fills it before). The groups
 * cross between them through a kh_workq, one group at a time.
 */
#ifndef KH_SPOOL_INTERNAL_H
#define KH_SPOOL_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/workq.h"
#include "spool/spool.h"
#include "spool/spool_format.h"

#define KH_SPOOL_READ_CHUNK ((size_t)1 << 20) /* the reader reads this much at once */

/* One append: its callback and its bytes as they go to the file. */
struct kh_spool_rec {
    struct kh_spool_rec *next;
    kh_spool_cb cb;
    kh_spool_held_cb held_cb; /* instead of cb for a held record */
    void *arg;
    size_t len; /* of data: record header, metadata, body */
    uint8_t data[];
};

/* Appends written and synced together (group commit), or a request to seal the file. */
struct kh_spool_group {
    struct kh_workq_item node;
    struct kh_spool_rec *head, **tail;
    size_t n;
    size_t bytes;
    bool rotate_only; /* seal the active segment; no records */
    /* filled by the I/O thread */
    int rc;
    char err[200];
    uint64_t new_seq;    /* a segment this group created, 0 = none */
    uint64_t sealed_seq; /* a segment this group closed, 0 = none */
    uint64_t end;        /* the size of the active segment after the records */
};

/* A segment file as the loop knows it: what is durable in it, and the drainer's counts. */
struct kh_spool_seg {
    struct kh_spool_seg *next;
    uint64_t seq;
    uint64_t end;     /* durable size of the file */
    uint64_t records; /* durable records in it */
    uint64_t read;    /* of those, taken by the drainer since the last rewind */
    uint64_t done;    /* of those, replayed and settled since the last rewind */
    bool sealed;      /* no more appends */
    /* the drainer reads it: recovered at start, or a record in it is not held (spooled),
     * or a held one was released; otherwise every record is its holder's, passed over */
    bool replay;
    /* held records: bit i set = record i is its holder's (the drainer skips it); NULL when
     * none ever was; `held` of them not settled yet, `held_done` settled (in `done`) */
    uint8_t *held_bits;
    uint64_t held_cap; /* bits */
    uint64_t held, held_done;
    int rfd; /* the drainer's descriptor, -1 until it reads */
};

/* A buffered sequential reader over one segment file. */
struct kh_spool_reader {
    int fd;
    uint8_t *buf;
    size_t cap, len;
    uint64_t off; /* file offset of buf[0] */
};

/* The file the I/O thread appends to. */
struct kh_spool_file {
    int fd; /* -1: none open (the next group creates one) */
    uint64_t seq, size;
    uint64_t next_seq; /* for the next file: above every name recovery saw */
    bool poisoned;     /* a failed write or sync: never append to this file again */
};

enum kh_spool_drain_state {
    KH_SPOOL_DRAIN_READING,   /* replaying records in order */
    KH_SPOOL_DRAIN_REWINDING, /* a replay failed: once none is out, back to the oldest */
    KH_SPOOL_DRAIN_STOPPED    /* shutdown: nothing more is replayed */
};

struct kh_spool_drainer {
    enum kh_spool_drain_state state;
    kh_spool_replay_fn replay;
    void *replay_arg;
    size_t max_out;            /* replays out at once */
    size_t out;                /* replays submitted, not settled */
    struct kh_spool_seg *seg;  /* position: segment (NULL = start at the first) ... */
    uint64_t off;              /* ... and offset in it */
    struct kh_spool_reader rd;
    struct event *ev, *timer;  /* the next step: soon, or after a pause */
};

struct kh_spool {
    /* set at open */
    char *dir;
    int dirfd, lockfd;
    uint64_t max_bytes, seg_bytes;
    bool interval_mode;
    long interval_ms;
    /* appends (spool_io.c) */
    struct kh_workq *io;       /* the I/O thread */
    struct kh_spool_group *cur; /* gathering */
    bool group_out;            /* a group is with the I/O thread */
    bool rotate_wanted;
    uint64_t used;             /* bytes on disk + bytes queued */
    size_t pending;            /* appends not yet completed */
    uint64_t last_group_usec;
    struct event *group_timer;
    struct kh_spool_file file; /* the I/O thread's */
    /* the segments, oldest first */
    struct kh_spool_seg *segs, **segs_tail;
    uint64_t records, done;    /* totals over segs */
    uint64_t held;             /* held records out, over segs */
    struct kh_spool_drainer drain;
};

/* spool.c */
void kh_spool_log_errno(const char *msg, const char *path, int errnum);
void kh_spool_seg_name(char *out, size_t n, uint64_t seq);
/* Adds a segment at the tail of the list. NULL when out of memory. */
struct kh_spool_seg *kh_spool_seg_add(struct kh_spool *sp, uint64_t seq, uint64_t end,
                                      uint64_t records, bool sealed);
struct kh_spool_seg *kh_spool_seg_last(struct kh_spool *sp);

/* spool_reader.c */
void kh_spool_reader_reset(struct kh_spool_reader *r, int fd);
/* The record at `pos` (below `end`), reading as needed. *ioerr is an errno (ENOMEM too)
 * when reading failed, 0 otherwise. */
enum kh_spool_check kh_spool_reader_record(struct kh_spool_reader *r, uint64_t pos,
                                           uint64_t end, struct kh_spool_meta *m,
                                           const uint8_t **body, size_t *blen,
                                           size_t *rec_len, int *ioerr);

/* spool_recover.c: scans spool_dir, fills segs, records, used and file.next_seq. 0, or -1
 * with err set. */
int kh_spool_recover(struct kh_spool *sp, const char **err);

/* spool_io.c */
/* Starts the I/O thread. 0 or KH_ENOMEM. */
int kh_spool_io_start(struct kh_spool *sp, struct event_base *base);
/* Asks for the active segment to be sealed (so the drainer can delete it). */
void kh_spool_io_rotate(struct kh_spool *sp);
/* Writes and completes what is gathered or out, joins the I/O thread, closes the file;
 * appends gathered before the thread started complete with KH_EIO. */
void kh_spool_io_stop(struct kh_spool *sp);

/* spool_drain.c */
/* 0 or KH_ENOMEM. */
int kh_spool_drain_start(struct kh_spool *sp, struct event_base *base,
                         kh_spool_replay_fn replay, void *arg);
/* Held record i of s was released: the drainer replays it (going back if it has passed it). */
void kh_spool_drain_released(struct kh_spool *sp, struct kh_spool_seg *s, uint64_t i);
/* Whether record i of s is held (its holder's to store). */
static inline bool kh_spool_is_held(const struct kh_spool_seg *s, uint64_t i)
{
    return s->held_bits && i < s->held_cap && (s->held_bits[i / 8] >> (i % 8)) & 1;
}
/* Something changed (a group is durable, a replay settled): look again, soon. */
void kh_spool_drain_schedule(struct kh_spool *sp);
void kh_spool_drain_stop(struct kh_spool *sp);
/* Frees the drainer's events and buffer (after kh_spool_drain_stop). */
void kh_spool_drain_cleanup(struct kh_spool *sp);

#endif
