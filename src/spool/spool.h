/*
 * spool: the durable on-disk queue that lets kohaku acknowledge reports while the database is
 * away or behind, and replays them into it later.
 *
 * Appends come from the loop thread. An I/O thread writes them to the active segment file in
 * groups and fdatasyncs each group; only then does the append's callback run (on the loop)
 * with 0, and only then may the report be answered 204. Group commit: while one group is
 * being written and synced the next one gathers (spool_fsync = batch), or groups go at most
 * every spool_fsync_interval_ms (spool_fsync = interval).
 *
 * The drainer (loop thread) reads durable records in order and hands each to a replay
 * function (parse + submit to the batcher). A segment is deleted only when it is sealed (no
 * longer appended to) and every record in it has been committed. A failed replay rewinds the
 * drainer to the start of the oldest segment: storage is idempotent, so records stored
 * before the failure are stored again as no-ops, and none is skipped.
 *
 * Recovery at open: every segment is scanned; a record whose length or CRC does not check
 * out ends the segment, and the file is cut there (a torn tail from a crash mid-write was
 * never acknowledged: its group had not been synced). See spool_format.h for the bytes.
 */
#ifndef KH_SPOOL_H
#define KH_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/config.h"
#include "spool/spool_format.h"

struct event_base;
struct kh_spool;

/* An append is durable (0) or failed (KH_EIO: nothing was acknowledged). Loop thread. */
typedef void (*kh_spool_cb)(void *arg, int result);
/* The outcome of one replayed record: 0 stored, KH_EREJECT refused as bad data (dropped and
 * logged), KH_ERETRY not stored (the drainer rewinds and tries again later). */
typedef void (*kh_spool_done_cb)(void *ctx, int result, const char *err);
/* Hands one record to storage. Returns 0 when submitted (done(ctx, ...) follows exactly once,
 * later, on the loop thread), KH_ERETRY when storage cannot take it now (the drainer waits
 * and tries the same record again) or KH_EINVAL when the record can never be stored (it is
 * dropped and logged; *why says why). body is valid during the call only. */
typedef int (*kh_spool_replay_fn)(void *arg, const struct kh_spool_meta *m, const uint8_t *body,
                                  size_t len, kh_spool_done_cb done, void *ctx,
                                  const char **why);

/* Opens spool_dir (creating it), takes its lock, and recovers what is in it. NULL with *err
 * set on failure (kh_errf text or a literal). Main thread, before the loop. */
struct kh_spool *kh_spool_open(const struct kh_config *cfg, const char **err);
/* Starts the I/O thread and the drainer. 0 or KH_ENOMEM. */
int kh_spool_start(struct kh_spool *sp, struct event_base *base, kh_spool_replay_fn replay,
                   void *arg);
/* Queues a record. 0: cb follows. KH_ENOSPC: the spool is full (spool_max_bytes).
 * KH_ENOMEM. The body is copied. */
int kh_spool_append(struct kh_spool *sp, const struct kh_spool_meta *m, const void *body,
                    size_t len, kh_spool_cb cb, void *arg);
/* Log-first acknowledgement (ack_mode = log): a held record is its caller's to settle. Its
 * report, parsed already, goes to storage from memory, and the drainer passes over it; if it
 * is released (not stored), the drainer replays it from disk as a spooled one. A segment goes
 * once it is sealed and every record in it is settled, by its holder or by the drainer. At
 * the next start every record on disk is replayed, held or not (storage is idempotent). */
struct kh_spool_seg;
struct kh_spool_held {
    struct kh_spool_seg *seg; /* where the record is */
    uint64_t index;           /* its place in the segment */
};
/* result as for kh_spool_cb; h (with 0 only) is for settle or release. */
typedef void (*kh_spool_held_cb)(void *arg, int result, struct kh_spool_held h);
int kh_spool_append_held(struct kh_spool *sp, const struct kh_spool_meta *m, const void *body,
                         size_t len, kh_spool_held_cb cb, void *arg);
/* A held record is stored (or refused for good): it needs no replay. Loop thread. */
void kh_spool_settle(struct kh_spool *sp, struct kh_spool_held h);
/* A held record was not stored: the drainer replays it from disk. Loop thread. */
void kh_spool_release(struct kh_spool *sp, struct kh_spool_held h);
/* Held records not yet settled or released. */
uint64_t kh_spool_held_out(const struct kh_spool *sp);

/* For /metrics: segment files, and durable records not yet replayed into storage. */
void kh_spool_gauges(const struct kh_spool *sp, uint64_t *segments, uint64_t *waiting);
/* Appends queued or being written, not yet completed. */
size_t kh_spool_pending(const struct kh_spool *sp);
/* Stops replaying (shutdown): records not yet replayed stay on disk for the next start. */
void kh_spool_stop_drain(struct kh_spool *sp);
/* Writes what is queued, joins the I/O thread, closes files. Callbacks of queued appends
 * run before it returns. */
void kh_spool_free(struct kh_spool *sp);

#endif
