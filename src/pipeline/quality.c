/*
 * quality: the quality stage. See quality.h.
 *
 * A batch's connection reports are taken in (connection, time) order. The first report of
 * each connection asks the database for its previous one (one store latest call for the
 * whole batch); each later report of the same connection in the batch follows the one before
 * it, read through the same kh_q_prev_read as the database's rows. Two reports of one
 * connection with the same time are a redelivery: the second gets no rows (its first's stand).
 *
 * The database's rows are asked for only where the cache (quality_cache.h) cannot stand in:
 * a connection it holds, whose cached report is older than the first report of the batch and
 * within quality_max_gap, is taken from memory when the store says nobody else wrote since
 * this slot's last batch, or after a read of the connections' latest times agrees (another
 * instance's later report makes it stale: read as before). The after step puts each stored
 * report's rows in, on the writer thread, so the slot's next batch sees them.
 *
 * Each writer slot has its own work area (the sample and the previous report are large);
 * nothing is shared between slots but the counters and the cache.
 */
#include "pipeline/quality.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "core/errors.h"
#include "core/log.h"
#include "core/timeutil.h"
#include "pipeline/quality_cache.h"
#include "pipeline/quality_metrics.h"
#include "quality/assess.h"
#include "sora/schema.h"

struct slot {
    struct kh_q_work work;
    struct kh_q_summary sum;
    struct kh_arena arena; /* rows read back, for one batch */
    size_t cap;
    size_t *order;
    struct kh_str *ids;
    int64_t *before, *found;
    struct kh_row **rows;
    size_t *query_of; /* per report in order: its query, or SIZE_MAX */
    int64_t *cached;  /* per query: the time of the cache's report standing in (0: none) */
    uint64_t *cached_epoch;
    bool *trusted;  /* per query: the cache stands in, as the connection's latest of all */
    uint64_t epoch; /* the epoch of the slot's last batch */
    size_t planned; /* reports in order (its last run): the after step's */
    struct kh_row **cached_rows;
    /* a subset of the queries asked of the store: which query, and the query's arrays */
    size_t *sub_of;
    struct kh_str *sub_ids;
    int64_t *sub_before, *sub_found;
    struct kh_row **sub_rows;
};

/* Where the previous reports came from, for the metrics. */
enum { FROM_CACHE, FROM_CACHE_CHECKED, FROM_CACHE_STALE, FROM_DATABASE, FROM_COUNT };
static const char *const from_names[FROM_COUNT] = {"cache", "cache_checked", "cache_stale",
                                                   "database"};

struct kh_quality_stage {
    struct kh_store *store;
    struct kh_quality_settings set;
    int nslots;
    struct slot **slots;
    atomic_uint_fast64_t assessed, skipped, read_failures;
    atomic_uint_fast64_t last_warned; /* kh_mono_usec of the last warning (one a minute) */
    atomic_uint_fast64_t from[FROM_COUNT];
    struct kh_qm *qm; /* the loop thread's */
    struct kh_qcache *cache; /* NULL: none (quality_cache_mb = 0) */
    /* a new epoch whenever a slot's store says someone else wrote: a cached report is
     * trusted without a read only in the epoch it was stored or confirmed in (from 1) */
    atomic_uint_fast64_t epoch;
};

_Static_assert(KH_QI_COUNT <= KH_CONFIG_DETECTORS, "raise KH_CONFIG_DETECTORS in config.h");

int kh_quality_settings_from(const struct kh_config *cfg, struct kh_quality_settings *out,
                             const char **err)
{
    kh_q_thresholds_default(&out->th);
    for (int i = 0; i < KH_QI_COUNT; i++) {
        const struct kh_q_detector *d = &kh_q_detectors[i];
        if (d->flag)
            continue; /* no threshold to set */
        double w = cfg->quality_warning[i], b = cfg->quality_bad[i];
        if (d->lower_is_worse ? b > w : b < w) {
            *err = kh_errf("quality_%s_bad: %g is on the good side of quality_%s_warning "
                           "(%g): for %s %s is worse",
                           d->name, b, d->name, w, d->name, d->lower_is_worse ? "lower" : "higher");
            return KH_EINVAL;
        }
        out->th.warning[i] = w;
        out->th.bad[i] = b;
    }
    out->th.bandwidth_headroom = cfg->quality_bandwidth_headroom;
    out->max_gap_usec = cfg->quality_max_gap * 1000000;
    out->cache_bytes = (size_t)cfg->quality_cache_mb << 20;
    return 0;
}

int kh_quality_stage_fn(void *arg, int slot, struct kh_batch *b, const char **err)
{
    return kh_quality_stage_run(arg, slot, b, err);
}

/* Rows read back per batch at most (a report's quality rows are a few hundred bytes). */
#define READ_ARENA_MAX (256u << 20)

struct kh_quality_stage *kh_quality_stage_new(struct kh_store *store, int nslots,
                                              const struct kh_quality_settings *set)
{
    struct kh_quality_stage *q = calloc(1, sizeof(*q));
    if (q == NULL)
        return NULL;
    q->store = store;
    q->set = *set;
    q->qm = kh_qm_new(set->max_gap_usec);
    q->cache = set->cache_bytes ? kh_qcache_new(set->cache_bytes) : NULL;
    atomic_store(&q->epoch, 1); /* 0: an entry never trusted */
    q->nslots = nslots > 0 ? nslots : 1;
    q->slots = calloc((size_t)q->nslots, sizeof(*q->slots));
    if (q->slots == NULL || q->qm == NULL || (set->cache_bytes && q->cache == NULL)) {
        kh_quality_stage_free(q);
        return NULL;
    }
    for (int i = 0; i < q->nslots; i++) {
        q->slots[i] = calloc(1, sizeof(struct slot));
        if (q->slots[i] == NULL) {
            kh_quality_stage_free(q);
            return NULL;
        }
        kh_arena_init(&q->slots[i]->arena, 65536, READ_ARENA_MAX);
    }
    return q;
}

static void slot_free(struct slot *s)
{
    if (s == NULL)
        return;
    kh_arena_cleanup(&s->arena);
    free(s->order);
    free(s->ids);
    free(s->before);
    free(s->found);
    free(s->rows);
    free(s->query_of);
    free(s->cached);
    free(s->cached_epoch);
    free(s->trusted);
    free(s->cached_rows);
    free(s->sub_of);
    free(s->sub_ids);
    free(s->sub_before);
    free(s->sub_found);
    free(s->sub_rows);
    free(s);
}

void kh_quality_stage_free(struct kh_quality_stage *q)
{
    if (q == NULL)
        return;
    for (int i = 0; q->slots && i < q->nslots; i++)
        slot_free(q->slots[i]);
    free(q->slots);
    kh_qm_free(q->qm);
    kh_qcache_free(q->cache);
    free(q);
}

void kh_quality_stage_counts(const struct kh_quality_stage *q, uint64_t *assessed,
                             uint64_t *skipped)
{
    *assessed = atomic_load(&q->assessed);
    *skipped = atomic_load(&q->skipped);
}

static int reserve(struct slot *s, size_t n)
{
    if (n <= s->cap)
        return 0;
    size_t cap = n < 64 ? 64 : n;
#define GROW(p) ((p) = realloc((p), cap * sizeof(*(p))))
    if (!GROW(s->order) || !GROW(s->ids) || !GROW(s->before) || !GROW(s->found) ||
        !GROW(s->rows) || !GROW(s->query_of) || !GROW(s->cached) || !GROW(s->cached_epoch) ||
        !GROW(s->trusted) || !GROW(s->cached_rows) || !GROW(s->sub_of) || !GROW(s->sub_ids) ||
        !GROW(s->sub_before) || !GROW(s->sub_found) || !GROW(s->sub_rows))
        return KH_ENOMEM;
#undef GROW
    s->cap = cap;
    return 0;
}

/* qsort's context: the batch being sorted (one writer per slot, so per thread). */
static _Thread_local struct kh_report **sorting;

static int by_connection_time(const void *a, const void *b)
{
    const struct kh_report *x = sorting[*(const size_t *)a], *y = sorting[*(const size_t *)b];
    uint32_t n = x->connection_id.len < y->connection_id.len ? x->connection_id.len
                                                              : y->connection_id.len;
    int c = memcmp(x->connection_id.p, y->connection_id.p, n);
    if (c == 0 && x->connection_id.len != y->connection_id.len)
        c = x->connection_id.len < y->connection_id.len ? -1 : 1;
    if (c == 0 && x->time_usec != y->time_usec)
        c = x->time_usec < y->time_usec ? -1 : 1;
    if (c == 0) /* stable: the batch's order */
        c = *(const size_t *)a < *(const size_t *)b ? -1 : 1;
    return c;
}

static bool same_connection(const struct kh_report *a, const struct kh_report *b)
{
    return a->connection_id.len == b->connection_id.len &&
           memcmp(a->connection_id.p, b->connection_id.p, a->connection_id.len) == 0;
}

/* The reports to assess, in order; the first of each connection gets a query. */
static size_t plan(struct slot *s, struct kh_batch *b, size_t *nqueries)
{
    size_t n = 0;
    for (size_t i = 0; i < b->nreports; i++) {
        const struct kh_report *r = b->reports[i];
        if (r->kind == KH_REPORT_CONNECTION && !r->assessed && r->connection_id.p)
            s->order[n++] = i;
    }
    sorting = b->reports;
    qsort(s->order, n, sizeof(*s->order), by_connection_time);
    size_t nq = 0;
    for (size_t k = 0; k < n; k++) {
        struct kh_report *r = b->reports[s->order[k]];
        s->query_of[k] = SIZE_MAX;
        if (k > 0 && same_connection(b->reports[s->order[k - 1]], r))
            continue;
        s->ids[nq] = r->connection_id;
        s->before[nq] = r->time_usec;
        s->query_of[k] = nq++;
    }
    *nqueries = nq;
    return n;
}

/* The time before which the latest-time check looks: the last second kh_time_format writes
 * (9999-12-31T23:59:59Z), so it finds a connection's latest report of all. */
#define CHECK_BEFORE_USEC (253402300799LL * 1000000)

/* Asks the store about the queries in sub_of[0..n): their rows as for a previous report, or
 * (check) the time of each connection's latest report of all. The answers land in the
 * subset's arrays. */
static int ask(struct kh_quality_stage *q, int slot, struct slot *s, size_t n, bool check,
               const char **err)
{
    const int tables[2] = {kh_table_quality_connection, kh_table_quality_stream};
    for (size_t k = 0; k < n; k++) {
        s->sub_ids[k] = s->ids[s->sub_of[k]];
        s->sub_before[k] = check ? CHECK_BEFORE_USEC : s->before[s->sub_of[k]];
    }
    struct kh_latest_query lq = {
        .n = n, .connection_ids = s->sub_ids, .before_usec = s->sub_before,
        .window_usec = check ? INT64_MAX : q->set.max_gap_usec,
        .anchor = kh_table_quality_connection, .tables = tables, .ntables = check ? 0 : 2,
        .arena = &s->arena, .found_usec = s->sub_found, .rows = s->sub_rows};
    return n ? q->store->ops->latest(q->store, slot, &lq, err) : 0;
}

/* The cache's report for each query that it can stand in for (cached[i], else 0). */
static void from_cache(struct kh_quality_stage *q, struct slot *s, size_t nq)
{
    for (size_t i = 0; i < nq; i++) {
        s->cached[i] = 0;
        s->cached_rows[i] = NULL;
        s->trusted[i] = false;
        int64_t t;
        struct kh_row *rows;
        if (q->cache == NULL ||
            kh_qcache_get(q->cache, s->ids[i], &s->arena, &t, &s->cached_epoch[i], &rows) != 0 ||
            t == 0)
            continue;
        if (t < s->before[i] && t >= s->before[i] - q->set.max_gap_usec) {
            s->cached[i] = t;
            s->cached_rows[i] = rows;
        }
    }
}

/* found/rows of every query: the cache's where it stands in, the database's elsewhere. A
 * cached report stands in when it is the connection's latest report of all: known so in
 * this epoch, or checked now. trusted[i] says so (then the batch's last report of the
 * connection is the latest of all once it commits: the after step trusts it in turn). */
static int previous(struct kh_quality_stage *q, int slot, struct slot *s, size_t nq,
                    const char **err)
{
    bool others = q->store->ops->others_wrote == NULL ||
                  q->store->ops->others_wrote(q->store, slot);
    uint64_t epoch = others ? atomic_fetch_add(&q->epoch, 1) + 1 : atomic_load(&q->epoch);
    s->epoch = epoch;
    from_cache(q, s, nq);
    size_t n = 0;
    for (size_t i = 0; i < nq; i++) {
        if (s->cached[i] == 0)
            continue;
        if (s->cached_epoch[i] == epoch) {
            s->trusted[i] = true;
            atomic_fetch_add(&q->from[FROM_CACHE], 1);
        } else {
            s->sub_of[n++] = i; /* to check */
        }
    }
    int rc = ask(q, slot, s, n, true, err);
    for (size_t k = 0; rc == 0 && k < n; k++) {
        size_t i = s->sub_of[k];
        bool same = s->sub_found[k] == s->cached[i];
        atomic_fetch_add(&q->from[same ? FROM_CACHE_CHECKED : FROM_CACHE_STALE], 1);
        s->trusted[i] = same;
        if (same)
            kh_qcache_confirm(q->cache, s->ids[i], s->cached[i], epoch);
    }
    n = 0;
    for (size_t i = 0; rc == 0 && i < nq; i++) {
        if (s->trusted[i]) {
            s->found[i] = s->cached[i];
            s->rows[i] = s->cached_rows[i];
            continue;
        }
        s->sub_of[n++] = i;
        if (s->cached[i] == 0) /* not in memory (stale ones are counted above) */
            atomic_fetch_add(&q->from[FROM_DATABASE], 1);
    }
    rc = rc ? rc : ask(q, slot, s, n, false, err);
    for (size_t k = 0; rc == 0 && k < n; k++) {
        s->found[s->sub_of[k]] = s->sub_found[k];
        s->rows[s->sub_of[k]] = s->sub_rows[k];
    }
    return rc;
}

static int read_back(struct kh_quality_stage *q, int slot, struct slot *s, size_t nq,
                     const char **err)
{
    int rc = previous(q, slot, s, nq, err);
    if (rc == 0 || rc == KH_ERETRY)
        return rc; /* the database is away: the batch waits, as its write would */
    /* too much to read back, or a read the database refused: rated without it (since its
     * streams began), never a batch held back for its quality */
    for (size_t i = 0; i < nq; i++)
        s->found[i] = 0, s->rows[i] = NULL;
    atomic_fetch_add(&q->read_failures, 1);
    uint64_t now = kh_mono_usec(), last = atomic_load(&q->last_warned);
    if (now - last > 60000000 && atomic_compare_exchange_strong(&q->last_warned, &last, now)) {
        struct kh_logline l;
        if (kh_log_begin(&l, KH_LOG_WARN, "quality: previous reports not read back")) {
            kh_log_str(&l, "error", *err ? *err : "unknown");
            kh_log_int(&l, "failures", (int64_t)atomic_load(&q->read_failures));
            kh_log_end(&l);
        }
    }
    return 0;
}

/* The report's summary for the metrics, in its arena (NULL when it is full: not counted). */
static const struct kh_quality_note *note(struct kh_report *r, const struct kh_q_summary *sum)
{
    size_t n = sum->nstreams;
    struct kh_quality_note *o =
        kh_arena_alloc(&r->arena, sizeof(*o) + n * sizeof(o->streams[0]));
    if (o == NULL)
        return NULL;
    o->severity = (uint8_t)sum->severity;
    o->n = (uint16_t)n;
    for (size_t i = 0; i < n; i++) {
        o->streams[i].loss_percent = (float)sum->streams[i].loss_percent;
        o->streams[i].rtt_ms = (float)sum->streams[i].rtt_ms;
        o->streams[i].mos = (float)sum->streams[i].mos;
    }
    return o;
}

static void assess(struct kh_quality_stage *q, struct slot *s, struct kh_batch *b, size_t n)
{
    const struct kh_report *before = NULL; /* the last report assessed, of this connection */
    for (size_t k = 0; k < n; k++) {
        struct kh_report *r = b->reports[s->order[k]];
        size_t qi = s->query_of[k];
        const struct kh_q_prev *prev = NULL;
        if (qi != SIZE_MAX) {
            before = NULL;
            kh_q_prev_read(s->rows[qi], s->found[qi], &s->work.prev);
            prev = s->found[qi] ? &s->work.prev : NULL;
        } else if (before && before->time_usec == r->time_usec) {
            r->assessed = true; /* the same report again: its first's rows stand */
            continue;
        } else if (before) {
            kh_q_prev_read(before->rows, before->time_usec, &s->work.prev);
            prev = &s->work.prev;
        }
        size_t rows = r->nrows;
        int rc = kh_q_assess(r, prev, &q->set.th, &s->work, &s->sum);
        r->assessed = true;
        if (rc == 0)
            r->quality_note = note(r, &s->sum);
        if (rc != 0) {
            atomic_fetch_add(&q->skipped, 1);
            continue; /* arena full: this report goes without; the next one follows the
                       * last one that has rows */
        }
        atomic_fetch_add(&q->assessed, 1);
        b->nrows += r->nrows - rows;
        before = r;
    }
}

int kh_quality_stage_run(struct kh_quality_stage *q, int slot, struct kh_batch *b,
                         const char **err)
{
    if (slot < 0 || slot >= q->nslots)
        slot = 0;
    struct slot *s = q->slots[slot];
    if (reserve(s, b->nreports) != 0) {
        *err = "quality: out of memory";
        return KH_ERETRY;
    }
    s->planned = 0;
    size_t nq, n = plan(s, b, &nq);
    if (n == 0)
        return 0;
    int rc = read_back(q, slot, s, nq, err);
    if (rc == 0) {
        assess(q, s, b, n);
        s->planned = n;
    }
    kh_arena_cleanup(&s->arena);
    kh_arena_init(&s->arena, 65536, READ_ARENA_MAX);
    return rc;
}

void kh_quality_stage_done(void *arg, const struct kh_batch *b, int rc)
{
    struct kh_quality_stage *q = arg;
    uint64_t now = kh_mono_usec();
    for (size_t i = 0; i < b->nreports; i++) {
        const struct kh_report *r = b->reports[i];
        bool stored = rc == 0 || (rc == KH_EREJECT && b->results[i] == 0);
        if (stored && r->quality_note)
            kh_qm_observe(q->qm, r, r->quality_note, now);
    }
}

void kh_quality_stage_after(void *arg, int slot, const struct kh_batch *b, int rc)
{
    struct kh_quality_stage *q = arg;
    if (q->cache == NULL)
        return;
    if (slot < 0 || slot >= q->nslots)
        slot = 0;
    struct slot *s = q->slots[slot];
    /* the reports the slot's last run planned (this batch's; none when a retry found them
     * all rated: then nothing goes in, and the next batch reads the database) */
    bool trusted = false;
    for (size_t k = 0; k < s->planned; k++) {
        size_t i = s->order[k];
        const struct kh_report *r = b->reports[i];
        if (s->query_of[k] != SIZE_MAX)
            trusted = s->trusted[s->query_of[k]];
        bool stored = rc == 0 || (rc == KH_EREJECT && b->results[i] == 0);
        if (stored && r->quality_note) /* rated: its rows are in the database now */
            kh_qcache_put(q->cache, r->connection_id, r->time_usec, trusted ? s->epoch : 0,
                          r->rows);
    }
}

/* The cache's series of /metrics. */
static int render_cache(const struct kh_quality_stage *q, struct kh_buf *b)
{
    int rc = kh_buf_printf(b, "# HELP kohaku_quality_previous_total Where the quality stage "
                              "found each connection's previous report: in memory (cache), "
                              "in memory once the database confirmed it (cache_checked), in "
                              "the database (cache_stale: memory had an older one; database: "
                              "memory had none).\n"
                              "# TYPE kohaku_quality_previous_total counter\n");
    for (int f = 0; rc == 0 && f < FROM_COUNT; f++)
        rc = kh_buf_printf(b, "kohaku_quality_previous_total{from=\"%s\"} %llu\n",
                           from_names[f], (unsigned long long)atomic_load(&q->from[f]));
    struct kh_qcache_counts c = {0};
    if (q->cache)
        kh_qcache_counts(q->cache, &c);
    return rc ? rc
              : kh_buf_printf(b,
                              "# HELP kohaku_quality_cache_entries Connections whose latest "
                              "quality rows are in memory.\n"
                              "# TYPE kohaku_quality_cache_entries gauge\n"
                              "kohaku_quality_cache_entries %llu\n"
                              "# HELP kohaku_quality_cache_bytes Their memory.\n"
                              "# TYPE kohaku_quality_cache_bytes gauge\n"
                              "kohaku_quality_cache_bytes %llu\n"
                              "# HELP kohaku_quality_cache_max_bytes Its bound "
                              "(quality_cache_mb).\n"
                              "# TYPE kohaku_quality_cache_max_bytes gauge\n"
                              "kohaku_quality_cache_max_bytes %llu\n"
                              "# HELP kohaku_quality_cache_evictions_total Entries dropped "
                              "for room (least recently used first).\n"
                              "# TYPE kohaku_quality_cache_evictions_total counter\n"
                              "kohaku_quality_cache_evictions_total %llu\n",
                              (unsigned long long)c.entries, (unsigned long long)c.bytes,
                              (unsigned long long)c.max_bytes,
                              (unsigned long long)c.evictions);
}

int kh_quality_stage_render(const struct kh_quality_stage *q, struct kh_buf *b)
{

    int rc = kh_buf_printf(b,
                           "# HELP kohaku_quality_reports_total Connection reports the quality "
                           "stage rated, or left without quality rows (their memory limit).\n"
                           "# TYPE kohaku_quality_reports_total counter\n"
                           "kohaku_quality_reports_total{result=\"rated\"} %llu\n"
                           "kohaku_quality_reports_total{result=\"skipped\"} %llu\n"
                           "# HELP kohaku_quality_read_failures_total Batches rated without "
                           "their previous reports: the database refused the read.\n"
                           "# TYPE kohaku_quality_read_failures_total counter\n"
                           "kohaku_quality_read_failures_total %llu\n",
                           (unsigned long long)atomic_load(&q->assessed),
                           (unsigned long long)atomic_load(&q->skipped),
                           (unsigned long long)atomic_load(&q->read_failures));
    rc = rc ? rc : render_cache(q, b);
    return rc ? rc : kh_qm_render(q->qm, b, kh_mono_usec());
}
