/*
 * metrics: Prometheus text exposition. See metrics.h.
 */
#include "core/metrics.h"

#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

struct kh_metrics kh_metrics;

static struct {
    const char *const *routes, *const *tables;
    size_t nroutes, ntables;
} labels;

static const int statuses[KH_METRICS_STATUSES] = {200, 204, 400, 404, 405, 408,
                                                  413, 431, 500, 503, 0,   0};
static const char *const reject_names[KH_REJECT_COUNT] = {
    "invalid", "too_large", "headers_too_large", "timeout", "storage_refused", "unavailable"};
static const double batch_bounds[KH_METRICS_BUCKETS] = {1,  2,   4,   8,    16,   32,
                                                        64, 128, 256, 512, 1024, 4096};
static const double commit_bounds[KH_METRICS_BUCKETS] = {0.0005, 0.001, 0.0025, 0.005,
                                                         0.01,   0.025, 0.05,   0.1,
                                                         0.25,   0.5,   1,      5};

static int status_index(int status)
{
    for (int i = 0; i < KH_METRICS_STATUSES - 2; i++)
        if (statuses[i] == status)
            return i;
    return KH_METRICS_STATUSES - 1; /* other */
}

void kh_metrics_set_labels(const char *const *routes, size_t nroutes, const char *const *tables,
                           size_t ntables)
{
    labels.routes = routes;
    labels.nroutes = nroutes < KH_METRICS_ROUTES ? nroutes : KH_METRICS_ROUTES;
    labels.tables = tables;
    labels.ntables = ntables < KH_METRICS_TABLES ? ntables : KH_METRICS_TABLES;
}

void kh_metrics_request(int route, int proto, int status)
{
    size_t r = route >= 0 && (size_t)route < labels.nroutes ? (size_t)route : KH_METRICS_ROUTES;
    kh_metrics.requests[r][proto == 2][status_index(status)]++;
}

static const char *route_name(size_t r)
{
    return r < labels.nroutes ? labels.routes[r] : "other";
}

static void observe(struct kh_histogram *h, const double *bounds, double v)
{
    int i = 0;
    while (i < KH_METRICS_BUCKETS && v > bounds[i])
        i++;
    h->counts[i]++;
    h->sum += v;
    h->n++;
}

void kh_metrics_batch(size_t reports, double seconds, int ok)
{
    observe(&kh_metrics.batch_reports, batch_bounds, (double)reports);
    observe(&kh_metrics.commit_seconds, commit_bounds, seconds);
    if (!ok)
        kh_metrics.batches_failed++;
}

void kh_metrics_storage_mode(const char *mode)
{
    atomic_store(&kh_metrics.storage_mode, mode);
}

void kh_metrics_retention_rows(uint64_t rows)
{
    atomic_fetch_add(&kh_metrics.retention_rows, rows);
}

void kh_metrics_retention_pass(uint64_t partitions, uint64_t usec, uint64_t end_unix)
{
    atomic_fetch_add(&kh_metrics.retention_partitions, partitions);
    atomic_store(&kh_metrics.retention_last_usec, usec);
    atomic_store(&kh_metrics.retention_last_end, end_unix);
    atomic_fetch_add(&kh_metrics.retention_passes, 1);
}

static int head(struct kh_buf *b, const char *name, const char *type, const char *help)
{
    return kh_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static int histogram(struct kh_buf *b, const char *name, const char *help,
                     const struct kh_histogram *h, const double *bounds)
{
    int rc = head(b, name, "histogram", help);
    uint64_t cum = 0;
    for (int i = 0; rc == 0 && i < KH_METRICS_BUCKETS; i++) {
        cum += h->counts[i];
        rc = kh_buf_printf(b, "%s_bucket{le=\"%g\"} %llu\n", name, bounds[i],
                           (unsigned long long)cum);
    }
    cum += h->counts[KH_METRICS_BUCKETS];
    if (rc == 0)
        rc = kh_buf_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %g\n%s_count %llu\n", name,
                 (unsigned long long)cum, name, h->sum, name, (unsigned long long)h->n);
    return rc;
}

static long rss_bytes(void)
{
    long pages = 0, resident = 0;
    FILE *fp = fopen("/proc/self/statm", "r");
    if (fp) {
        if (fscanf(fp, "%ld %ld", &pages, &resident) != 2)
            resident = 0;
        fclose(fp);
    }
    return resident * sysconf(_SC_PAGESIZE);
}

static long open_fds(void)
{
    long n = 0;
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        return -1;
    while (readdir(d))
        n++;
    closedir(d);
    return n - 3; /* ".", ".." and the directory's own descriptor */
}

/* One counter or gauge without labels. */
static int scalar(struct kh_buf *b, const char *name, const char *type, const char *help,
                  uint64_t v)
{
    int rc = head(b, name, type, help);
    return rc ? rc : kh_buf_printf(b, "%s %llu\n", name, (unsigned long long)v);
}

/* kohaku's own retention (zero where TimescaleDB's policies do it, or retention_days 0) */
static int render_retention(struct kh_buf *b, const struct kh_metrics *m)
{
    uint64_t last = atomic_load(&m->retention_last_usec);
    int rc = scalar(b, "kohaku_retention_deleted_rows_total", "counter",
                    "Rows deleted by kohaku's retention (row by row: SQLite, PostgreSQL without "
                    "partitions, a DEFAULT partition).",
                    atomic_load(&m->retention_rows));
    if (rc == 0)
        rc = scalar(b, "kohaku_retention_dropped_partitions_total", "counter",
                    "Partitions (PostgreSQL) or chunks (TimescaleDB Apache build) dropped by "
                    "kohaku's retention.",
                    atomic_load(&m->retention_partitions));
    if (rc == 0)
        rc = scalar(b, "kohaku_retention_passes_total", "counter",
                    "Retention passes finished.", atomic_load(&m->retention_passes));
    if (rc == 0)
        rc = head(b, "kohaku_retention_last_pass_seconds", "gauge",
                  "Duration of the last finished retention pass, start to end.");
    if (rc == 0)
        rc = kh_buf_printf(b, "kohaku_retention_last_pass_seconds %.6f\n", (double)last / 1e6);
    if (rc == 0)
        rc = scalar(b, "kohaku_retention_last_pass_end_timestamp_seconds", "gauge",
                    "When the last retention pass ended (Unix time; 0: none yet).",
                    atomic_load(&m->retention_last_end));
    return rc;
}

static int render_spool(struct kh_buf *b, const struct kh_metrics *m)
{
    uint64_t segments = 0, waiting = 0;
    if (m->src.spool)
        m->src.spool(m->src.arg, &segments, &waiting);
    const struct {
        const char *name, *type, *help;
        uint64_t value;
    } rows[] = {
        {"kohaku_spool_bytes", "gauge", "Bytes the spool holds (on disk and queued).",
         m->spool_bytes},
        {"kohaku_spool_segments", "gauge", "Spool segment files.", segments},
        {"kohaku_spool_waiting_reports", "gauge", "Spooled reports not yet replayed into storage.",
         waiting},
        {"kohaku_spool_appended_total", "counter",
         "Reports made durable in the spool (then answered 204).", m->spool_appended},
        {"kohaku_spool_append_failed_total", "counter",
         "Reports whose spool write or sync failed (answered 503).", m->spool_append_failed},
        {"kohaku_spool_full_total", "counter",
         "Reports refused because the spool reached spool_max_bytes.", m->spool_full},
        {"kohaku_spool_fsyncs_total", "counter", "Groups of spooled reports synced.",
         m->spool_fsyncs},
        {"kohaku_spool_drained_total", "counter",
         "Spooled reports replayed and committed (rate() gives the drain rate); a report "
         "replayed again after a failed replay counts again.",
         m->spool_drained},
        {"kohaku_spool_dropped_total", "counter",
         "Spooled reports storage refused as bad data, or unreadable on disk.", m->spool_dropped},
        {"kohaku_spool_tails_cut_total", "counter",
         "Segments whose torn or corrupt tail was cut off at start-up.", m->spool_tails_cut},
        {"kohaku_log_acknowledged_total", "counter",
         "ack_mode = log: reports answered once synced to the log.", m->log_acknowledged},
        {"kohaku_log_stored_total", "counter",
         "ack_mode = log: logged reports then committed from memory.", m->log_stored},
        {"kohaku_log_released_total", "counter",
         "ack_mode = log: logged reports not stored from memory (storage failed or full), "
         "replayed from the log instead.", m->log_released},
        {"kohaku_log_refused_total", "counter",
         "ack_mode = log: logged reports storage refused as bad data after their 204 "
         "(dropped and logged).", m->log_refused},
        {"kohaku_log_held_reports", "gauge",
         "ack_mode = log: reports logged and answered, not yet committed or released.",
         m->log_held},
    };
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < sizeof(rows) / sizeof(rows[0]); i++)
        rc = scalar(b, rows[i].name, rows[i].type, rows[i].help, rows[i].value);
    return rc;
}

/* One request counter line per route, protocol and status seen. */
static int render_request_row(struct kh_buf *b, const struct kh_metrics *m, size_t r, int p)
{
    int rc = 0;
    for (int i = 0; rc == 0 && i < KH_METRICS_STATUSES; i++) {
        uint64_t v = m->requests[r][p][i];
        if (v == 0)
            continue;
        char status[8] = "other";
        if (statuses[i])
            snprintf(status, sizeof(status), "%d", statuses[i]);
        rc = kh_buf_printf(b,
                           "kohaku_http_requests_total{route=\"%s\",protocol=\"%s\","
                           "status=\"%s\"} %llu\n",
                           route_name(r), p ? "h2" : "h1", status, (unsigned long long)v);
    }
    return rc;
}

static int render_requests(struct kh_buf *b, const struct kh_metrics *m)
{
    int rc = head(b, "kohaku_http_requests_total", "counter",
                  "Requests answered, by route, protocol and status.");
    for (size_t r = 0; rc == 0 && r <= KH_METRICS_ROUTES; r++)
        if (r < labels.nroutes || r == KH_METRICS_ROUTES)
            for (int p = 0; rc == 0 && p < 2; p++)
                rc = render_request_row(b, m, r, p);
    return rc;
}

/* Sora's session and event webhooks stored, and those stored already. */
static int render_webhooks(struct kh_buf *b, const struct kh_metrics *m)
{
    int rc = head(b, "kohaku_webhooks_stored_total", "counter",
                  "Session and event webhooks stored (committed, not there before), by kind.");
    if (rc == 0)
        rc = kh_buf_printf(b, "kohaku_webhooks_stored_total{kind=\"session\"} %llu\n"
                              "kohaku_webhooks_stored_total{kind=\"event\"} %llu\n",
                           (unsigned long long)m->webhooks_stored[0],
                           (unsigned long long)m->webhooks_stored[1]);
    if (rc == 0)
        rc = scalar(b, "kohaku_webhooks_duplicate_total", "counter",
                    "Session and event webhooks accepted that were stored already: their "
                    "lifecycle rows merged to what they were.",
                    m->webhooks_duplicate);
    return rc;
}

int kh_metrics_render(struct kh_buf *b)
{
    const struct kh_metrics *m = &kh_metrics;
    const struct kh_metrics_sources *s = &m->src;
    int rc = head(b, "kohaku_build_info", "gauge", "Always 1; the version is in the label.");
    if (rc == 0)
        rc = kh_buf_printf(b, "kohaku_build_info{version=\"%s\"} 1\n", KOHAKU_VERSION);
    if (rc == 0)
        rc = render_requests(b, m);
    if (rc == 0)
        rc = head(b, "kohaku_reports_stored_total", "counter",
                  "Reports stored (committed, not there before), by kind.");
    if (rc == 0)
        rc = kh_buf_printf(b, "kohaku_reports_stored_total{kind=\"connection\"} %llu\n"
                    "kohaku_reports_stored_total{kind=\"node\"} %llu\n",
                 (unsigned long long)m->reports_stored[0],
                 (unsigned long long)m->reports_stored[1]);
    if (rc == 0)
        rc = scalar(b, "kohaku_reports_duplicate_total", "counter",
                    "Reports accepted that were stored already (a redelivery or a replay): "
                    "nothing was written for them.",
                    m->reports_duplicate);
    if (rc == 0)
        rc = render_webhooks(b, m);
    if (rc == 0)
        rc = head(b, "kohaku_rows_stored_total", "counter",
                  "Stats rows inserted, by table (rows already stored are not counted).");
    for (size_t t = 0; rc == 0 && t < labels.ntables; t++)
        rc = kh_buf_printf(b, "kohaku_rows_stored_total{table=\"%s\"} %llu\n", labels.tables[t],
                 (unsigned long long)m->rows_stored[t]);
    if (rc == 0)
        rc = head(b, "kohaku_reports_rejected_total", "counter",
                  "Reports refused (not stored), by reason.");
    for (int i = 0; rc == 0 && i < KH_REJECT_COUNT; i++)
        rc = kh_buf_printf(b, "kohaku_reports_rejected_total{reason=\"%s\"} %llu\n",
                           reject_names[i], (unsigned long long)m->rejected[i]);
    if (rc == 0)
        rc = histogram(b, "kohaku_batch_reports", "Reports per storage transaction.",
                       &m->batch_reports, batch_bounds);
    if (rc == 0)
        rc = histogram(b, "kohaku_batch_commit_seconds",
                       "Time to write and commit one batch, retries included.",
                       &m->commit_seconds, commit_bounds);
    if (rc == 0)
        rc = head(b, "kohaku_batches_failed_total", "counter", "Batches that were not stored.");
    if (rc == 0)
        rc = kh_buf_printf(b, "kohaku_batches_failed_total %llu\n",
                 (unsigned long long)m->batches_failed);
    if (rc == 0 && s->storage_up) {
        rc = head(b, "kohaku_storage_up", "gauge", "1 while the database takes writes.");
        if (rc == 0)
            rc = kh_buf_printf(b, "kohaku_storage_up %d\n", s->storage_up(s->arg));
        if (rc == 0)
            rc = head(b, "kohaku_storage_reconnects_total", "counter",
                      "Times a database connection was (re)established after a failure.");
        if (rc == 0)
            rc = kh_buf_printf(b, "kohaku_storage_reconnects_total %llu\n",
                     (unsigned long long)s->storage_reconnects(s->arg));
        if (rc == 0)
            rc = head(b, "kohaku_inflight_bytes", "gauge",
                      "Memory held by reports waiting for storage.");
        if (rc == 0)
            rc = kh_buf_printf(b, "kohaku_inflight_bytes %llu\n",
                     (unsigned long long)s->inflight_bytes(s->arg));
        if (rc == 0)
            rc = head(b, "kohaku_pending_reports", "gauge", "Reports waiting for storage.");
        if (rc == 0)
            rc = kh_buf_printf(b, "kohaku_pending_reports %llu\n",
                     (unsigned long long)s->pending_reports(s->arg));
        if (rc == 0)
            rc = head(b, "kohaku_connections", "gauge", "Open client connections by protocol.");
        if (rc == 0)
            rc = kh_buf_printf(b, "kohaku_connections{protocol=\"h1\"} %llu\n"
                        "kohaku_connections{protocol=\"h2\"} %llu\n",
                     (unsigned long long)s->connections(s->arg, 1),
                     (unsigned long long)s->connections(s->arg, 2));
        if (rc == 0)
            rc = head(b, "kohaku_http2_streams", "gauge", "Open HTTP/2 streams.");
        if (rc == 0)
            rc = kh_buf_printf(b, "kohaku_http2_streams %llu\n",
                               (unsigned long long)s->streams(s->arg));
    }
    const char *mode = atomic_load(&kh_metrics.storage_mode);
    if (rc == 0)
        rc = head(b, "kohaku_storage_mode", "gauge",
                  "1 for the storage mode in use (sqlite, null, postgresql, timescaledb, "
                  "timescaledb-apache, citus).");
    if (rc == 0 && mode)
        rc = kh_buf_printf(b, "kohaku_storage_mode{mode=\"%s\"} 1\n", mode);
    if (rc == 0 && m->spool_enabled)
        rc = render_spool(b, m);
    if (rc == 0)
        rc = render_retention(b, m);
    if (rc == 0 && s->more)
        rc = s->more(s->arg, b);
    if (rc == 0)
        rc = head(b, "kohaku_process_resident_memory_bytes", "gauge", "Resident set size.");
    if (rc == 0)
        rc = kh_buf_printf(b, "kohaku_process_resident_memory_bytes %ld\n", rss_bytes());
    if (rc == 0)
        rc = head(b, "kohaku_process_open_fds", "gauge", "Open file descriptors.");
    if (rc == 0)
        rc = kh_buf_printf(b, "kohaku_process_open_fds %ld\n", open_fds());
    return rc;
}
