/*
 * kohaku-benchtool: the storage ceilings the benchmark compares kohaku against, made from
 * the same reports kohaku receives (loadgen templates, parsed by kohaku's own envelope
 * parser, outside the timed part):
 *
 *   sqlite-direct N DB   loads N reports' rows straight into SQLite with kohaku's schema and
 *                        prepared statements, in one transaction; prints rows/s.
 *   writer N DB          runs a kohaku writer thread's steps alone on N reports, batch after
 *                        batch as the batcher hands them over (dedup's decision, the quality
 *                        stage, the SQLite write and its commit), with no HTTP, no parse
 *                        and no other process on the cores: what one writer costs per report
 *                        with quality on or off; prints the time and CPU of each step.
 *                        KOHAKU_BENCH_BATCH, _QUALITY, _DEDUP and _QUALITY_ROWS: below.
 *   copy-files N DIR     writes the rows of N reports as one COPY text file per table into
 *                        DIR (for `psql \copy`), and DIR/tables with "table file" lines.
 *
 * Each prints one JSON line with what was measured or written.
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <yajl/yajl_parse.h>

#include "core/buf.h"
#include "core/config.h"
#include "core/timeutil.h"
#include "pipeline/dedup.h"
#include "pipeline/quality.h"
#include "quality/assess.h"
#include "template.h"
#include "sora/envelope.h"
#include "sora/schema.h"
#include "store/pg_encode.h"
#include "store/store.h"

#define MAX_TPL 64

static int load_templates(const char *dir, struct lg_template **t)
{
    static const char *const kinds[] = {"chromium-av-sender",   "chromium-av-receiver",
                                        "chromium-audio-sender", "chromium-audio-receiver",
                                        "firefox-av-sender",     "firefox-av-receiver",
                                        "firefox-audio-sender",  "firefox-audio-receiver"};
    int n = 0;
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        char early[1024], late[1024], err[512];
        snprintf(early, sizeof(early), "%s/%s-t3.json", dir, kinds[i]);
        snprintf(late, sizeof(late), "%s/%s-t10.json", dir, kinds[i]);
        struct lg_template *x = lg_template_load(early, late, err, sizeof(err));
        if (x)
            t[n++] = x;
    }
    return n;
}

/* A unique id of 26 characters for n whose order is not n's: the key indexes then scatter
 * a batch's connections over their leaves as kohaku-loadgen's random ids (and Sora's) do;
 * consecutive ids would put a batch's consecutive connections on shared leaves. */
static void scattered_id(char out[27], char tag, uint64_t n)
{
    uint64_t x = n + 0x9e3779b97f4a7c15u; /* splitmix64's finaliser */
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9u;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebu;
    x ^= x >> 31;
    snprintf(out, 27, "%c%016" PRIx64 "%09" PRIu64, tag, x, n % 1000000000u);
}

/* Builds n parsed reports: `clients` emulated connections taking turns. */
static struct kh_report **make_reports(const char *dir, long n, int clients)
{
    struct lg_template *tpl[MAX_TPL];
    int ntpl = load_templates(dir, tpl);
    if (ntpl == 0) {
        fprintf(stderr, "kohaku-benchtool: no fixtures in %s\n", dir);
        return NULL;
    }
    struct kh_report **out = calloc((size_t)n, sizeof(*out));
    struct kh_buf body, stats;
    kh_buf_init(&body, 64u << 20);
    kh_buf_init(&stats, 64u << 20);
    int64_t t0 = kh_time_now_usec();
    for (long i = 0; i < n; i++) {
        int c = (int)(i % clients);
        kh_buf_reset(&stats);
        double elapsed = (double)(i / clients) * 5000.0;
        lg_template_render(tpl[c % ntpl], elapsed, (double)t0 / 1000 + elapsed, &stats);
        char ts[KH_TIME_TEXT_LEN + 1], head[768], rid[27], sid[27], cid[27];
        kh_time_format(t0 + (int64_t)(i / clients) * 5000000, ts);
        scattered_id(rid, 'R', (uint64_t)i);
        scattered_id(sid, 'S', (uint64_t)c);
        scattered_id(cid, 'C', (uint64_t)c);
        int hl = snprintf(head, sizeof(head),
                          "{\"type\":\"connection.user-agent\",\"id\":\"%s\","
                          "\"timestamp\":\"%s\",\"label\":\"WebRTC SFU Sora\","
                          "\"version\":\"2024.1.0\",\"node_name\":\"sora@127.0.0.1\","
                          "\"multistream\":true,\"simulcast\":false,\"spotlight\":false,"
                          "\"role\":\"sendrecv\",\"channel_id\":\"bench-%d\","
                          "\"session_id\":\"%s\",\"client_id\":\"client-%d\","
                          "\"connection_id\":\"%s\",\"stats\":",
                          rid, ts, c / 4, sid, c, cid);
        kh_buf_reset(&body);
        kh_buf_append(&body, head, (size_t)hl);
        kh_buf_append(&body, stats.data, stats.len);
        kh_buf_append(&body, "}", 1);
        struct kh_envelope *e = kh_envelope_new(KH_REPORT_CONNECTION, KH_FLAVOR_EXPORTER, NULL);
        if (kh_envelope_feed(e, body.data, body.len) != 0 || kh_envelope_finish(e) != 0) {
            fprintf(stderr, "kohaku-benchtool: report %ld invalid: %s\n", i,
                    kh_envelope_error(e));
            exit(1);
        }
        out[i] = kh_envelope_take_report(e);
        kh_envelope_free(e);
    }
    kh_buf_cleanup(&body);
    kh_buf_cleanup(&stats);
    for (int i = 0; i < ntpl; i++)
        lg_template_free(tpl[i]);
    return out;
}

static size_t count_rows(struct kh_report **r, long n)
{
    size_t rows = 0;
    for (long i = 0; i < n; i++)
        rows += r[i]->nrows;
    return rows;
}

/* Opens PATH with kohaku's SQLite store and its schema, as a writer would. */
static int open_sqlite(struct kh_store *st, struct kh_config *cfg, const char *path)
{
    free(cfg->sqlite_path);
    cfg->sqlite_path = strdup(path);
    st->ops = &kh_store_sqlite_ops;
    const char *err = NULL;
    if (cfg->sqlite_path == NULL || st->ops->open(st, cfg, &err) != 0 ||
        st->ops->migrate(st, 0, &err) != 0) {
        fprintf(stderr, "kohaku-benchtool: %s\n", err ? err : "out of memory");
        return -1;
    }
    return 0;
}

static void free_reports(struct kh_report **r, long n)
{
    for (long i = 0; i < n; i++)
        kh_report_free(r[i]);
    free(r);
}

static int sqlite_direct(const char *dir, long n, int clients, const char *path)
{
    struct kh_report **reports = make_reports(dir, n, clients);
    if (reports == NULL)
        return 1;
    struct kh_config cfg;
    kh_config_init(&cfg);
    struct kh_store st = {0};
    if (open_sqlite(&st, &cfg, path) != 0)
        return 1;
    const char *err = NULL;
    int *results = calloc((size_t)n, sizeof(int));
    if (results == NULL) {
        fprintf(stderr, "kohaku-benchtool: out of memory\n");
        return 1;
    }
    struct kh_batch b = {.reports = reports, .results = results, .nreports = (size_t)n,
                         .nrows = count_rows(reports, n)};
    uint64_t t0 = kh_mono_usec();
    int rc = st.ops->write(&st, 0, &b, &err);
    double secs = (double)(kh_mono_usec() - t0) / 1e6;
    st.ops->close(&st);
    if (rc != 0) {
        fprintf(stderr, "kohaku-benchtool: write failed: %s\n", err ? err : "?");
        return 1;
    }
    printf("{\"reports\":%ld,\"rows\":%zu,\"seconds\":%.3f,\"reports_per_s\":%.1f,"
           "\"rows_per_s\":%.1f}\n",
           n, b.nrows, secs, (double)n / secs, (double)b.nrows / secs);
    free_reports(reports, n);
    free(results);
    kh_config_cleanup(&cfg);
    return 0;
}

static double cpu_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* What the writer command was asked: KOHAKU_BENCH_BATCH (reports a batch, default 128: the
 * most the loadgen's 4 x 32 streams have in flight), KOHAKU_BENCH_QUALITY and
 * KOHAKU_BENCH_DEDUP (1 or 0, default the config's defaults), KOHAKU_BENCH_QUALITY_ROWS
 * (default 1; 0: see leave_quality_rows). */
static long env_long(const char *name, long dflt)
{
    const char *v = getenv(name);
    return v && *v ? atol(v) : dflt;
}

/* An experiment (KOHAKU_BENCH_QUALITY_ROWS=0): the rows the quality stage added (the tables
 * kohaku computes) are left unwritten, as dedup leaves a row out; the rating and the verdict
 * it puts in sora_connection stay. What rating at ingest costs with no per-interval rows,
 * but for the stage: finding none of its rows in the database, its cache's check calls
 * every entry stale, and each report is read again and rated since its streams began. */
static void leave_quality_rows(struct kh_report *r)
{
    for (struct kh_row *row = r->rows; row; row = row->next)
        if (kh_stats_tables[row->table].computed)
            row->dedup = KH_ROW_SKIPPED;
}

static int writer(const char *dir, long n, int clients, const char *path)
{
    struct kh_config cfg;
    kh_config_init(&cfg);
    long batch = env_long("KOHAKU_BENCH_BATCH", 128);
    bool quality = env_long("KOHAKU_BENCH_QUALITY", cfg.quality) != 0;
    bool dedup = env_long("KOHAKU_BENCH_DEDUP", cfg.dedup) != 0 && cfg.dedup_cache_mb > 0;
    bool quality_table_rows = env_long("KOHAKU_BENCH_QUALITY_ROWS", 1) != 0;
    if (batch <= 0) {
        fprintf(stderr, "kohaku-benchtool: KOHAKU_BENCH_BATCH must be positive\n");
        return 2;
    }
    struct kh_report **reports = make_reports(dir, n, clients);
    if (reports == NULL)
        return 1;
    struct kh_store st = {0};
    if (open_sqlite(&st, &cfg, path) != 0)
        return 1;
    const char *err = NULL;
    struct kh_quality_settings set;
    struct kh_quality_stage *qs = NULL;
    if (quality && (kh_quality_settings_from(&cfg, &set, &err) != 0 ||
                    (qs = kh_quality_stage_new(&st, 1, &set)) == NULL)) {
        fprintf(stderr, "kohaku-benchtool: quality: %s\n", err ? err : "out of memory");
        return 1;
    }
    struct kh_dedup *dd =
        dedup ? kh_dedup_new((size_t)cfg.dedup_cache_mb << 20, cfg.dedup_refresh * 1000000)
              : NULL;
    if (dedup && dd == NULL) {
        fprintf(stderr, "kohaku-benchtool: dedup: out of memory\n");
        return 1;
    }
    int *results = calloc((size_t)batch, sizeof(int));
    if (results == NULL) {
        fprintf(stderr, "kohaku-benchtool: out of memory\n");
        return 1;
    }
    size_t rows_in = count_rows(reports, n);
    uint64_t stored = 0, quality_rows = 0;
    double t_dedup = 0, t_quality = 0, t_write = 0, t_after = 0;
    double c0 = cpu_seconds();
    uint64_t t0 = kh_mono_usec();
    int rc = 0;
    for (long i = 0, seq = 0; rc == 0 && i < n; i += batch, seq++) {
        size_t k = (size_t)(n - i < batch ? n - i : batch);
        struct kh_batch b = {.reports = reports + i, .results = results, .nreports = k};
        for (size_t j = 0; j < k; j++)
            b.nrows += reports[i + (long)j]->nrows;
        size_t before = b.nrows;
        uint64_t t = kh_mono_usec();
        if (dd)
            kh_dedup_decide(dd, (uint64_t)seq, &b);
        uint64_t t1 = kh_mono_usec();
        if (qs)
            rc = kh_quality_stage_run(qs, 0, &b, &err);
        quality_rows += b.nrows - before;
        if (qs && !quality_table_rows)
            for (size_t j = 0; j < k; j++)
                leave_quality_rows(reports[i + (long)j]);
        uint64_t t2 = kh_mono_usec();
        if (rc == 0)
            rc = st.ops->write(&st, 0, &b, &err);
        uint64_t t3 = kh_mono_usec();
        if (dd)
            kh_dedup_settle(dd, &b, rc);
        if (qs)
            kh_quality_stage_after(qs, 0, &b, rc);
        uint64_t t4 = kh_mono_usec();
        for (size_t x = 0; x < KH_REPORT_MAX_TABLES; x++)
            stored += b.rows_stored[x];
        t_dedup += (double)(t1 - t) / 1e6;
        t_quality += (double)(t2 - t1) / 1e6;
        t_write += (double)(t3 - t2) / 1e6;
        t_after += (double)(t4 - t3) / 1e6;
    }
    double secs = (double)(kh_mono_usec() - t0) / 1e6;
    double cpu = cpu_seconds() - c0;
    st.ops->close(&st);
    if (rc != 0) {
        fprintf(stderr, "kohaku-benchtool: batch failed: %s\n", err ? err : "?");
        return 1;
    }
    printf("{\"reports\":%ld,\"batch\":%ld,\"quality\":%s,\"dedup\":%s,\"rows_in\":%zu,"
           "\"quality_rows\":%" PRIu64 ",\"rows_stored\":%" PRIu64 ",\"seconds\":%.3f,"
           "\"cpu_seconds\":%.3f,\"reports_per_s\":%.1f,\"us_per_report\":%.1f,"
           "\"cpu_us_per_report\":%.1f,\"dedup_s\":%.3f,\"quality_s\":%.3f,"
           "\"write_s\":%.3f,\"after_s\":%.3f,\"quality_table_rows\":%s}\n",
           n, batch, qs ? "true" : "false", dd ? "true" : "false", rows_in, quality_rows,
           stored, secs, cpu, (double)n / secs, secs * 1e6 / (double)n,
           cpu * 1e6 / (double)n, t_dedup, t_quality, t_write, t_after,
           quality_table_rows ? "true" : "false");
    kh_quality_stage_free(qs);
    kh_dedup_free(dd);
    free_reports(reports, n);
    free(results);
    kh_config_cleanup(&cfg);
    return 0;
}

/* A stats row in COPY text format, its columns in the table's order. */
static int put_row(struct kh_buf *b, const struct kh_report *r, const struct kh_row *row)
{
    const struct kh_scope_desc *sc = kh_schema_scope(row->table);
    int rc = 0;
    for (size_t c = 0; c < sc->ncols; c++) {
        struct kh_value v = kh_report_common_value(r, row, (int)sc->cols[c].src);
        rc |= kh_pg_put_value(b, KH_PG_COPY, c == 0, &v);
    }
    for (size_t m = 0; m < kh_stats_tables[row->table].nmembers; m++)
        rc |= kh_pg_put_value(b, KH_PG_COPY, false, &row->vals[m]);
    if (kh_schema_has_extra(row->table))
        rc |= kh_pg_put_jsonb(b, KH_PG_COPY, false, row->extra.p, row->extra.len);
    return rc | kh_buf_append(b, "\n", 1);
}

/* An envelope table's row as kohaku stores it, in COPY text format: for an upserted table the
 * merge of a key's reports from first to last (the earliest's value in a min column, the
 * latest's in the others), otherwise first == last, one report's row. */
static int put_env_row(struct kh_buf *b, const struct kh_env_table *et,
                       const struct kh_report *first, const struct kh_report *last)
{
    int rc = 0;
    for (size_t c = 0; c < et->ncols; c++) {
        const struct kh_report *r = et->cols[c].merge == KH_MERGE_MIN ? first : last;
        struct kh_value v = kh_report_common_value(r, NULL, (int)et->cols[c].src);
        rc |= kh_pg_put_value(b, KH_PG_COPY, c == 0, &v);
    }
    return rc | kh_buf_append(b, "\n", 1);
}

/* The rows of envelope table et for the n connection reports. Report i is connection
 * i % clients' (make_reports), so the last `clients` reports are each connection's latest and
 * report i % clients its first: an upsert is written once per connection (kohaku upserts per
 * batch; a bulk load writes the end result once). */
static size_t put_env_rows(struct kh_buf *b, int t, struct kh_report **reports, long n,
                           int clients)
{
    const struct kh_env_table *et = &kh_env_tables[t];
    if (!kh_schema_env_applies(t, KH_REPORT_CONNECTION))
        return 0;
    long from = et->upsert && n > clients ? n - clients : 0;
    for (long i = from; i < n; i++)
        put_env_row(b, et, et->upsert ? reports[i % clients] : reports[i], reports[i]);
    return (size_t)(n - from);
}

static void write_table(const char *out, const char *table, const struct kh_buf *b, FILE *list)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s.copy", out, table);
    FILE *fp = fopen(path, "w");
    if (fp == NULL || fwrite(b->data, 1, b->len, fp) != b->len || fclose(fp) != 0) {
        fprintf(stderr, "kohaku-benchtool: cannot write %s\n", path);
        exit(1);
    }
    fprintf(list, "%s %s\n", table, path);
}

static int copy_files(const char *dir, long n, int clients, const char *out)
{
    struct kh_report **reports = make_reports(dir, n, clients);
    if (reports == NULL)
        return 1;
    mkdir(out, 0755);
    char path[4096];
    snprintf(path, sizeof(path), "%s/tables", out);
    FILE *list = fopen(path, "w");
    struct kh_buf b;
    kh_buf_init(&b, 1u << 30);
    size_t total = 0;
    for (size_t t = 0; t < kh_stats_ntables; t++) {
        if (kh_stats_tables[t].scope != KH_SCOPE_CONNECTION)
            continue;
        kh_buf_reset(&b);
        size_t rows = 0;
        for (long i = 0; i < n; i++)
            for (const struct kh_row *row = reports[i]->rows; row; row = row->next)
                if (row->table == (int)t) {
                    put_row(&b, reports[i], row);
                    rows++;
                }
        if (rows == 0)
            continue;
        write_table(out, kh_stats_tables[t].table, &b, list);
        total += rows;
    }
    /* the envelope rows kohaku stores beside the stats */
    for (size_t t = 0; t < kh_env_ntables; t++) {
        kh_buf_reset(&b);
        if (put_env_rows(&b, (int)t, reports, n, clients) > 0)
            write_table(out, kh_env_tables[t].table, &b, list);
    }
    fclose(list);
    printf("{\"reports\":%ld,\"rows\":%zu}\n", n, total);
    kh_buf_cleanup(&b);
    return 0;
}

/* The parse alone, without HTTP: yajl checking the syntax of the body with no callbacks (the
 * floor of any parser built on yajl), then kohaku's envelope parser (validation and rows). */
static int parse_only(const char *path, long n)
{
    FILE *fp = fopen(path, "rb");
    if (fp == NULL) {
        fprintf(stderr, "kohaku-benchtool: %s: cannot read\n", path);
        return 1;
    }
    struct kh_buf body;
    kh_buf_init(&body, 64u << 20);
    char chunk[65536];
    size_t got;
    while ((got = fread(chunk, 1, sizeof(chunk), fp)) > 0)
        kh_buf_append(&body, chunk, got);
    fclose(fp);
    uint64_t t0 = kh_mono_usec();
    for (long i = 0; i < n; i++) {
        yajl_handle h = yajl_alloc(NULL, NULL, NULL);
        if (yajl_parse(h, (const unsigned char *)body.data, body.len) != yajl_status_ok ||
            yajl_complete_parse(h) != yajl_status_ok) {
            fprintf(stderr, "kohaku-benchtool: %s is not JSON\n", path);
            return 1;
        }
        yajl_free(h);
    }
    double yajl_us = (double)(kh_mono_usec() - t0) / (double)n;
    t0 = kh_mono_usec();
    for (long i = 0; i < n; i++) {
        struct kh_envelope *e = kh_envelope_new(KH_REPORT_CONNECTION, KH_FLAVOR_EXPORTER, NULL);
        if (kh_envelope_feed(e, body.data, body.len) != 0 || kh_envelope_finish(e) != 0) {
            fprintf(stderr, "kohaku-benchtool: %s: %s\n", path, kh_envelope_error(e));
            return 1;
        }
        kh_report_free(kh_envelope_take_report(e));
        kh_envelope_free(e);
    }
    double env_us = (double)(kh_mono_usec() - t0) / (double)n;
    printf("{\"bytes\":%zu,\"yajl_us\":%.2f,\"envelope_us\":%.2f}\n", body.len, yajl_us,
           env_us);
    kh_buf_cleanup(&body);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: kohaku-benchtool sqlite-direct N DB [FIXTURES [CLIENTS]]\n"
                        "       kohaku-benchtool writer N DB [FIXTURES [CLIENTS]]\n"
                        "       kohaku-benchtool copy-files N DIR [FIXTURES [CLIENTS]]\n"
                        "       kohaku-benchtool parse N BODY.json\n");
        return 2;
    }
    /* FIXTURES empty or "-": the default, so that CLIENTS can be given alone */
    const char *fixtures =
        argc > 4 && argv[4][0] && strcmp(argv[4], "-") != 0 ? argv[4] : lg_default_fixtures();
    long n = atol(argv[2]);
    /* emulated Sora connections taking turns, as kohaku-loadgen's -n */
    int clients = argc > 5 ? atoi(argv[5]) : 200;
    if (n <= 0 || clients <= 0) {
        fprintf(stderr, "kohaku-benchtool: N and CLIENTS must be positive\n");
        return 2;
    }
    if (kh_schema_init() != 0 || kh_q_init() != 0) {
        fprintf(stderr, "kohaku-benchtool: the schema or the quality tables did not load\n");
        return 1;
    }
    if (strcmp(argv[1], "sqlite-direct") == 0)
        return sqlite_direct(fixtures, n, clients, argv[3]);
    if (strcmp(argv[1], "writer") == 0)
        return writer(fixtures, n, clients, argv[3]);
    if (strcmp(argv[1], "copy-files") == 0)
        return copy_files(fixtures, n, clients, argv[3]);
    if (strcmp(argv[1], "parse") == 0)
        return parse_only(argv[3], n);
    fprintf(stderr, "kohaku-benchtool: unknown command %s\n", argv[1]);
    return 2;
}
