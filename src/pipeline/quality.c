/*
 * quality: the quality stage. See quality.h.
 *
 * A batch's connection reports are taken in (connection, time) order. The first report of
 * each connection asks the database for its previous one (one store latest call for the
 * whole batch); each later report of the same connection in the batch follows the one before
 * it, read through the same kh_q_prev_read as the database's rows. Two reports of one
 * connection with the same time are a redelivery: the second gets no rows (its first's stand).
 *
 * Each writer slot has its own work area (the sample and the previous report are large);
 * nothing is shared between slots but the two counters.
 */
#include "pipeline/quality.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "core/errors.h"
#include "core/log.h"
#include "core/timeutil.h"
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
};

struct kh_quality_stage {
    struct kh_store *store;
    struct kh_quality_settings set;
    int nslots;
    struct slot **slots;
    atomic_uint_fast64_t assessed, skipped, read_failures;
    atomic_uint_fast64_t last_warned; /* kh_mono_usec of the last warning (one a minute) */
    struct kh_qm *qm; /* the loop thread's */
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
    q->nslots = nslots > 0 ? nslots : 1;
    q->slots = calloc((size_t)q->nslots, sizeof(*q->slots));
    if (q->slots == NULL || q->qm == NULL) {
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
        !GROW(s->rows) || !GROW(s->query_of))
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

static int read_back(struct kh_quality_stage *q, int slot, struct slot *s, size_t nq,
                     const char **err)
{
    int tables[2] = {kh_table_quality_connection, kh_table_quality_stream};
    struct kh_latest_query lq = {
        .n = nq, .connection_ids = s->ids, .before_usec = s->before,
        .window_usec = q->set.max_gap_usec, .anchor = kh_table_quality_connection,
        .tables = tables, .ntables = 2, .arena = &s->arena, .found_usec = s->found,
        .rows = s->rows};
    int rc = q->store->ops->latest(q->store, slot, &lq, err);
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
    size_t nq, n = plan(s, b, &nq);
    if (n == 0)
        return 0;
    int rc = read_back(q, slot, s, nq, err);
    if (rc == 0)
        assess(q, s, b, n);
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
    return rc ? rc : kh_qm_render(q->qm, b, kh_mono_usec());
}
