/*
 * overview_cache: what the console's overview counted in buckets that have settled, kept
 * between calls so that a call reads only the newest rows (README, "Console":
 * console_cache_seconds). A bucket settles once it ended a quarter of `hold` (at most 5 s)
 * ago. The cache holds one span of settled buckets of one width, in one piece. A bucket
 * that this process stores a report into later is read again at the next call
 * (kh_ov_cache_stored); for rows other processes store, the cache starts again from nothing
 * every `hold`, so that such a row is counted within `hold`.
 * Used by one thread only (the console's worker).
 */
#ifndef KH_OVERVIEW_CACHE_H
#define KH_OVERVIEW_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A row of the overview: a bucket's report count (node NULL, n[0]) or a node's counts in a
 * bucket (n[0] connections, n[1] with issues, n[2] bad). Times in µs. */
struct kh_ov_row {
    int64_t bucket;
    const char *node;
    double n[3];
};

struct kh_ov_cache;

/* NULL when out of memory (the overview then reads everything, as with hold 0). */
struct kh_ov_cache *kh_ov_cache_new(int64_t hold_usec);
void kh_ov_cache_free(struct kh_ov_cache *c);

/* The settled whole buckets of [from, to) at now, as [*lo, *hi): empty (lo >= hi) when there
 * are none or c is NULL or off (hold 0). */
void kh_ov_settled(const struct kh_ov_cache *c, int64_t width, int64_t from, int64_t to,
                   int64_t now, int64_t *lo, int64_t *hi);

/* Makes the cache hold only buckets of [lo, hi) `width` wide, starting again when the width
 * differs, the span does not meet it or it is `hold` old (mono: a monotonic clock's µs).
 * Sets *need to where what it holds ends, in [lo, hi]: the caller reads the buckets from
 * there to hi, adds them, then calls kh_ov_cache_end(c, hi). false, and nothing held, for a
 * hold after kh_ov_cache_refused. */
bool kh_ov_cache_begin(struct kh_ov_cache *c, int64_t width, int64_t lo, int64_t hi,
                       int64_t mono, int64_t *need);
/* 0, or KH_ENOMEM / KH_ENOSPC (past its row bound): then the caller calls
 * kh_ov_cache_refused, and reads without the cache. */
int kh_ov_cache_add(struct kh_ov_cache *c, const struct kh_ov_row *r);
void kh_ov_cache_end(struct kh_ov_cache *c, int64_t hi);
/* A report of time `earliest` (µs) or later was stored since the last call: the buckets held
 * from the one it falls into on go, to be read again (all of them when it is before the
 * span). INT64_MAX, or c NULL: nothing. The hold goes on. */
void kh_ov_cache_stored(struct kh_ov_cache *c, int64_t earliest);
void kh_ov_cache_reset(struct kh_ov_cache *c);
/* Forgets everything and is not used for a hold (so that a fleet with more rows than the
 * bound is read once per call, not twice). */
void kh_ov_cache_refused(struct kh_ov_cache *c, int64_t mono);

/* Every row held (buckets may reach past the span a call asked for: filter by bucket). */
const struct kh_ov_row *kh_ov_cache_rows(const struct kh_ov_cache *c, size_t *n);

/* --- the live part: the buckets from the settled span's end on, still filling ---------------
 * What the rows of [hi, frontier) hold, counted per connection (a connection counts once in a
 * bucket, with its worst severity, so the counts cannot be added up from parts): a call reads
 * the rows from the frontier on, adds those older than its new frontier (now less the settle
 * lag) and reads the newer ones for its answer alone, then settles the live buckets that have
 * ended before it. A call thus reads the rows since the previous one and the lag's, not the
 * newest buckets whole. */

/* A connection's rows in a bucket as a query groups them: its node and worst severity. */
struct kh_ov_conn {
    int64_t bucket;
    const char *conn, *node;
    int64_t severity;
};

/* This call's frontier: `to`, or now less the settle lag if earlier (c not NULL). The
 * settled span of kh_ov_settled ends at its bucket's start. */
int64_t kh_ov_front(const struct kh_ov_cache *c, int64_t to, int64_t now);
/* Where the live part ends: the frontier, at least the settled span's end. */
int64_t kh_ov_live_frontier(const struct kh_ov_cache *c);
/* Forgets the live part (when a call comes long after the last one, it reads the buckets in
 * between whole, as settled ones). */
void kh_ov_live_drop(struct kh_ov_cache *c);
/* Adds a connection's rows before the new frontier; 0, or KH_ENOMEM / KH_ENOSPC (past its
 * bound: as kh_ov_cache_add's). */
int kh_ov_live_add(struct kh_ov_cache *c, const struct kh_ov_conn *r);
/* Adds `n` reports of a bucket before the new frontier. */
int kh_ov_live_reports(struct kh_ov_cache *c, int64_t bucket, double n);
/* The rows before `frontier` are all added: the live buckets that ended before `settled`
 * (a bucket start, at most the frontier) become settled rows, and the span held ends there.
 * 0, or as kh_ov_cache_add. */
int kh_ov_live_settle(struct kh_ov_cache *c, int64_t settled, int64_t frontier);
/* The reports of a live bucket. */
struct kh_ov_rep {
    int64_t bucket;
    double n;
};
/* The answer's rows of the live buckets: the live part's counts with `extra` and `extra_reps`
 * merged in (the rows after the frontier, read for this call only), each as kh_ov_row through
 * fn (node NULL: a bucket's reports). */
int kh_ov_live_answer(const struct kh_ov_cache *c, const struct kh_ov_conn *extra, size_t n,
                      const struct kh_ov_rep *extra_reps, size_t nrep,
                      int (*fn)(void *arg, const struct kh_ov_row *r), void *arg);

#endif
