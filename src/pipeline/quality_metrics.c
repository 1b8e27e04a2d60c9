/*
 * quality_metrics: per-node quality histograms and connections by verdict. See
 * quality_metrics.h. Loop thread only: no locks.
 */
#include "pipeline/quality_metrics.h"

#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"

/* Bucket bounds (le) of the three histograms. */
static const double loss_bounds[] = {0, 0.5, 1, 2, 3, 5, 10, 20, 50};
static const double rtt_bounds[] = {25, 50, 100, 150, 200, 250, 300, 400, 500, 750, 1000, 2000};
static const double mos_bounds[] = {1.5, 2, 2.5, 3, 3.5, 3.8, 4, 4.2, 4.4, 4.5};
#define N(a) (sizeof(a) / sizeof(a[0]))
#define MAX_BUCKETS 13

struct hist {
    uint64_t counts[MAX_BUCKETS + 1];
    double sum;
    uint64_t n;
};

struct node {
    char name[128];
    bool used;
    struct hist loss, rtt, mos;
};

struct slot {
    uint64_t key; /* hash of the connection id; 0 = empty */
    int64_t last_report_usec;
    uint64_t seen_usec; /* monotonic */
    uint8_t severity, node;
};

struct kh_qm {
    int64_t window_usec;
    struct node nodes[KH_QM_NODES + 1]; /* the last one: "other" */
    struct slot *slots;
    uint64_t untracked;
};

struct kh_qm *kh_qm_new(int64_t window_usec)
{
    struct kh_qm *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return NULL;
    m->slots = calloc(KH_QM_CONNECTIONS, sizeof(*m->slots));
    if (m->slots == NULL) {
        free(m);
        return NULL;
    }
    m->window_usec = window_usec;
    strcpy(m->nodes[KH_QM_NODES].name, "other");
    m->nodes[KH_QM_NODES].used = true;
    return m;
}

void kh_qm_free(struct kh_qm *m)
{
    if (m == NULL)
        return;
    free(m->slots);
    free(m);
}

static void observe(struct hist *h, const double *bounds, size_t nb, double v)
{
    if (!isfinite(v))
        return;
    size_t i = 0;
    while (i < nb && v > bounds[i])
        i++;
    h->counts[i]++;
    h->sum += v;
    h->n++;
}

/* The node's index: its slot, a new one, or "other" when they are taken (or the name is
 * longer than a label kohaku keeps). */
static size_t node_of(struct kh_qm *m, struct kh_str name)
{
    if (name.p == NULL || name.len >= sizeof(m->nodes[0].name))
        return KH_QM_NODES;
    for (size_t i = 0; i < KH_QM_NODES; i++) {
        struct node *n = &m->nodes[i];
        if (n->used && strlen(n->name) == name.len && memcmp(n->name, name.p, name.len) == 0)
            return i;
        if (!n->used) {
            memcpy(n->name, name.p, name.len);
            n->name[name.len] = '\0';
            n->used = true;
            return i;
        }
    }
    return KH_QM_NODES;
}

/* FNV-1a, never 0. */
static uint64_t hash(struct kh_str s)
{
    uint64_t h = 1469598103934665603ULL;
    for (uint32_t i = 0; i < s.len; i++)
        h = (h ^ (uint8_t)s.p[i]) * 1099511628211ULL;
    return h ? h : 1;
}

#define PROBES 16

/* The connection's slot, or a free (or expired) one for it; NULL when all are live. */
static struct slot *slot_of(struct kh_qm *m, uint64_t key, uint64_t now, bool *fresh)
{
    struct slot *spare = NULL;
    for (uint32_t p = 0; p < PROBES; p++) {
        struct slot *s = &m->slots[(key + p) & (KH_QM_CONNECTIONS - 1)];
        if (s->key == key) {
            *fresh = false;
            return s;
        }
        bool expired = s->key == 0 || now - s->seen_usec > (uint64_t)m->window_usec;
        if (expired && spare == NULL)
            spare = s;
    }
    if (spare) {
        *spare = (struct slot){.key = key};
        *fresh = true;
    }
    return spare;
}

void kh_qm_observe(struct kh_qm *m, const struct kh_report *r, const struct kh_quality_note *n,
                   uint64_t now_usec)
{
    bool fresh = false;
    struct slot *s = slot_of(m, hash(r->connection_id), now_usec, &fresh);
    if (s == NULL) {
        m->untracked++;
    } else {
        if (!fresh && r->time_usec <= s->last_report_usec)
            return; /* counted already: a redelivery or a replay */
        s->last_report_usec = r->time_usec;
        s->seen_usec = now_usec;
        if (n->severity > s->severity)
            s->severity = n->severity;
    }
    size_t ni = node_of(m, r->node_name);
    if (s)
        s->node = (uint8_t)ni;
    struct node *node = &m->nodes[ni];
    for (uint16_t i = 0; i < n->n; i++) {
        observe(&node->loss, loss_bounds, N(loss_bounds), n->streams[i].loss_percent);
        observe(&node->rtt, rtt_bounds, N(rtt_bounds), n->streams[i].rtt_ms);
        observe(&node->mos, mos_bounds, N(mos_bounds), n->streams[i].mos);
    }
}

/* A label value: \, " and newline escaped (Prometheus text format). */
static int put_label(struct kh_buf *b, const char *v)
{
    int rc = 0;
    for (const char *p = v; rc == 0 && *p; p++) {
        if (*p == '\\' || *p == '"')
            rc = kh_buf_printf(b, "\\%c", *p);
        else if (*p == '\n')
            rc = kh_buf_printf(b, "\\n");
        else
            rc = kh_buf_append(b, p, 1);
    }
    return rc;
}

static int render_hist(struct kh_buf *b, const char *name, const char *node,
                       const struct hist *h, const double *bounds, size_t nb)
{
    uint64_t cum = 0;
    int rc = 0;
    for (size_t i = 0; rc == 0 && i <= nb; i++) {
        cum += h->counts[i];
        rc = kh_buf_printf(b, "%s_bucket{node=\"", name);
        rc = rc ? rc : put_label(b, node);
        if (rc == 0 && i < nb)
            rc = kh_buf_printf(b, "\",le=\"%g\"} %llu\n", bounds[i], (unsigned long long)cum);
        else if (rc == 0)
            rc = kh_buf_printf(b, "\",le=\"+Inf\"} %llu\n", (unsigned long long)cum);
    }
    const char *parts[] = {"_sum", "_count"};
    for (int k = 0; rc == 0 && k < 2; k++) {
        rc = kh_buf_printf(b, "%s%s{node=\"", name, parts[k]);
        rc = rc ? rc : put_label(b, node);
        rc = rc ? rc
                : k == 0 ? kh_buf_printf(b, "\"} %.17g\n", h->sum)
                         : kh_buf_printf(b, "\"} %llu\n", (unsigned long long)h->n);
    }
    return rc;
}

static const struct {
    const char *name, *help;
    size_t offset;
    const double *bounds;
    size_t nb;
} hists[] = {
    {"kohaku_quality_interval_loss_percent",
     "Packet loss of the rated intervals of RTP streams (percent), by Sora node.",
     offsetof(struct node, loss), loss_bounds, N(loss_bounds)},
    {"kohaku_quality_interval_rtt_ms",
     "Round-trip time of the rated intervals of RTP streams (ms), by Sora node.",
     offsetof(struct node, rtt), rtt_bounds, N(rtt_bounds)},
    {"kohaku_quality_interval_mos",
     "Audio MOS (G.107 E-model) of the rated intervals of audio streams, by Sora node.",
     offsetof(struct node, mos), mos_bounds, N(mos_bounds)},
};

int kh_qm_render(const struct kh_qm *m, struct kh_buf *b, uint64_t now_usec)
{
    int rc = 0;
    for (size_t h = 0; rc == 0 && h < N(hists); h++) {
        rc = kh_buf_printf(b, "# HELP %s %s\n# TYPE %s histogram\n", hists[h].name,
                           hists[h].help, hists[h].name);
        for (size_t i = 0; rc == 0 && i <= KH_QM_NODES; i++) {
            const struct node *n = &m->nodes[i];
            const struct hist *hist = (const struct hist *)((const char *)n + hists[h].offset);
            if (n->used && (hist->n > 0 || i < KH_QM_NODES))
                rc = render_hist(b, hists[h].name, n->name, hist, hists[h].bounds,
                                 hists[h].nb);
        }
    }
    /* connections by node and verdict */
    uint64_t (*by)[3] = calloc(KH_QM_NODES + 1, sizeof(*by));
    if (by == NULL)
        return KH_ENOMEM;
    for (uint32_t i = 0; i < KH_QM_CONNECTIONS; i++) {
        const struct slot *s = &m->slots[i];
        if (s->key && now_usec - s->seen_usec <= (uint64_t)m->window_usec)
            by[s->node][s->severity > 2 ? 2 : s->severity]++;
    }
    static const char *const verdicts[] = {"ok", "warning", "bad"};
    if (rc == 0)
        rc = kh_buf_printf(b, "# HELP kohaku_quality_connections Connections with a report "
                              "within quality_max_gap, by Sora node and their verdict so far "
                              "(the worst severity of their reports).\n"
                              "# TYPE kohaku_quality_connections gauge\n");
    for (size_t i = 0; rc == 0 && i <= KH_QM_NODES; i++)
        for (int v = 0; rc == 0 && v < 3 && m->nodes[i].used; v++) {
            rc = kh_buf_printf(b, "kohaku_quality_connections{node=\"");
            rc = rc ? rc : put_label(b, m->nodes[i].name);
            rc = rc ? rc
                    : kh_buf_printf(b, "\",verdict=\"%s\"} %llu\n", verdicts[v],
                                    (unsigned long long)by[i][v]);
        }
    free(by);
    if (rc == 0)
        rc = kh_buf_printf(b, "# HELP kohaku_quality_connections_untracked_total Reports whose "
                              "connection found no room in the verdict table.\n"
                              "# TYPE kohaku_quality_connections_untracked_total counter\n"
                              "kohaku_quality_connections_untracked_total %llu\n",
                           (unsigned long long)m->untracked);
    return rc;
}
