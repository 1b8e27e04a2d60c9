/*
 * import: see import.h. The files become jobs, the jobs reports, the reports rows:
 *
 *   pump        reads lines (a few ms a turn, while there is room), tells the file's format
 *               from its first line (auto), and makes a job of each report or webhook: a
 *               line holding a body (bodies, webhook-log), or the lines of one report
 *               regrouped (rtc-stats, sora/regroup.c); a line that is neither is refused alone
 *   job_start   a report's body goes to the envelope parser, on the parse pool when
 *               parse_threads > 0, a webhook's to the lifecycle parser, on the loop; jobs
 *               wait in file order for their parse (import_jobs.c)
 *   advance     parsed jobs go to the batcher in file order; the refused are noted
 *   on_stored   the batch's outcome, counted; the room it frees lets the pump go on
 *
 * Memory is bounded whatever the files: a chunk and the longest line allowed per file
 * (core/lines.c), the open reports of the regrouping, and the jobs alive (max_jobs reports
 * and max_job_bytes of bodies and parsed reports); the pump stops while they are full.
 * Everything runs on the loop thread but the parse (pool threads) and the writes (the
 * batcher's writers).
 */
#include "api/import.h"

#include <errno.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api/app.h"
#include "api/import_internal.h"
#include "core/errors.h"
#include "core/timeutil.h"
#include "sora/schema.h"

/* --- lines into jobs -------------------------------------------------------------------- */

static void refuse_line(struct importer *im, uint64_t line, const char *why)
{
    kh_import_refused(&im->t, KH_IMPORT_LINE, im->name, line, why);
}

/* A body of its own line (bodies) or of part of it (webhook-log): a job, unless it is over
 * max_body_bytes, which the live path would have answered with 413. */
static void body_job(struct importer *im, uint64_t line, const char *p, size_t n,
                     enum kh_report_kind kind, enum kh_envelope_flavor flavor)
{
    enum kh_import_item what = kh_import_item_of(kind);
    if (what == KH_IMPORT_WEBHOOK)
        im->t.webhooks++;
    else
        im->t.reports++;
    if ((int64_t)n > im->cfg->max_body_bytes) {
        char why[160];
        snprintf(why, sizeof(why), "body: %zu bytes is over max_body_bytes (%lld)", n,
                 (long long)im->cfg->max_body_bytes);
        kh_import_refused(&im->t, what, im->name, line, why);
        return;
    }
    struct job *j = kh_import_job_new(im, line, kind, flavor);
    if (j == NULL || kh_buf_append(&j->body, p, n) != 0) {
        kh_import_job_free(j);
        kh_import_refused(&im->t, what, im->name, line, "import: out of memory");
        return;
    }
    kh_import_job_start(im, j);
}

/* The route a body of this type is posted to live, told by its type (a header does it on
 * the live path): the exporter's, the stats webhook's, or Sora's session webhook for
 * session.* and the event webhook for any other type (connection.created, recording.* ...),
 * whose rules then apply. */
static void typed_body(struct importer *im, uint64_t line, const char *p, size_t n,
                       const char *type)
{
    if (strcmp(type, "connection.user-agent") == 0)
        body_job(im, line, p, n, KH_REPORT_CONNECTION, KH_FLAVOR_EXPORTER);
    else if (strcmp(type, "node.erlang-vm") == 0)
        body_job(im, line, p, n, KH_REPORT_NODE, KH_FLAVOR_EXPORTER);
    else if (strcmp(type, "connection.rtc") == 0)
        body_job(im, line, p, n, KH_REPORT_CONNECTION, KH_FLAVOR_WEBHOOK);
    else if (strncmp(type, "session.", 8) == 0)
        body_job(im, line, p, n, KH_REPORT_SESSION_WEBHOOK, KH_FLAVOR_WEBHOOK);
    else
        body_job(im, line, p, n, KH_REPORT_EVENT_WEBHOOK, KH_FLAVOR_WEBHOOK);
}

/* bodies: one body a line, of any route. */
static void body_line(struct importer *im, const struct kh_line *ln)
{
    struct kh_soraline *l = &im->line;
    if (kh_soraline_parse(l, ln->p, ln->len, true) != 0) {
        im->t.reports++;
        char why[300];
        /* the message the envelope parser would give: the line is the body */
        snprintf(why, sizeof(why), "body:%s", strncmp(l->err, "line:", 5) ? l->err : l->err + 5);
        kh_import_refused(&im->t, KH_IMPORT_REPORT, im->name, ln->number, why);
        return;
    }
    if (!l->has_type) {
        im->t.reports++;
        kh_import_refused(&im->t, KH_IMPORT_REPORT, im->name, ln->number, "type: required");
        return;
    }
    typed_body(im, ln->number, ln->p, ln->len, l->type);
}

/* webhook-log: {"id", "timestamp", "req": body}, the body of any webhook Sora logs: the
 * stats webhook's (stats_webhook.jsonl), the session and event webhooks' (their .jsonl). */
static void webhook_line(struct importer *im, const struct kh_line *ln)
{
    struct kh_soraline *l = &im->line;
    if (kh_soraline_parse(l, ln->p, ln->len, false) != 0) {
        refuse_line(im, ln->number, l->err);
        return;
    }
    const struct kh_span *req = &l->value[KH_SK_REQ];
    if (req->len == 0)
        refuse_line(im, ln->number, "req: required (a line of a webhook log holds the "
                                    "webhook's body there)");
    else if (!l->req_object)
        refuse_line(im, ln->number, "req: must be an object");
    else if (!l->has_req_type)
        refuse_line(im, ln->number, "req.type: required");
    else
        typed_body(im, ln->number, ln->p + req->off, req->len, l->req_type);
}

/* rtc-stats: the line joins its report; reports come out through on_regrouped. */
static void rtc_line(struct importer *im, const struct kh_line *ln)
{
    struct kh_soraline *l = &im->line;
    if (kh_soraline_parse(l, ln->p, ln->len, false) != 0) {
        refuse_line(im, ln->number, l->err);
        return;
    }
    const char *why = NULL;
    int rc = kh_regroup_add(im->regroup, ln->p, l, ln->number, &why);
    if (rc == KH_EINVAL)
        refuse_line(im, ln->number, why);
    else if (rc != 0)
        refuse_line(im, ln->number, "import: out of memory");
}

static int on_regrouped(void *arg, struct kh_regroup_report *rep)
{
    struct importer *im = arg;
    im->t.reports++;
    if (rep->too_large) {
        char why[200];
        snprintf(why, sizeof(why), "body: %zu bytes is over max_body_bytes (%lld) (the report "
                                   "of lines %llu-%llu)",
                 rep->too_large, (long long)im->cfg->max_body_bytes,
                 (unsigned long long)rep->first_line, (unsigned long long)rep->last_line);
        kh_import_refused(&im->t, KH_IMPORT_REPORT, im->name, rep->first_line, why);
        kh_regroup_report_free(rep);
        return 0;
    }
    struct job *j = kh_import_job_new(im, rep->first_line, KH_REPORT_CONNECTION,
                                      KH_FLAVOR_WEBHOOK);
    if (j == NULL) {
        kh_import_refused(&im->t, KH_IMPORT_REPORT, im->name, rep->first_line,
                          "import: out of memory");
        kh_regroup_report_free(rep);
        return 0;
    }
    j->last_line = rep->last_line;
    j->body = rep->body;
    j->lines = rep->lines;
    j->nlines = rep->nlines;
    kh_buf_init(&rep->body, 0);
    rep->lines = NULL;
    kh_regroup_report_free(rep);
    kh_import_job_start(im, j);
    return 0;
}

static bool blank(const struct kh_line *ln)
{
    for (size_t i = 0; i < ln->len; i++)
        if (ln->p[i] != ' ' && ln->p[i] != '\t' && ln->p[i] != '\r')
            return false;
    return true;
}

/* auto: the first line that is not blank says it. False when it cannot (the file is then
 * left, as a file not read). */
static bool detect(struct importer *im, const struct kh_line *ln)
{
    struct kh_soraline *l = &im->line;
    int rc = kh_soraline_parse(l, ln->p, ln->len, false);
    im->fmt = rc == 0 ? kh_soralog_detect(l) : KH_SORALOG_AUTO;
    if (im->fmt != KH_SORALOG_AUTO)
        return true;
    char why[400];
    snprintf(why, sizeof(why), "cannot tell the format from its first line (%s); name it "
                               "with --format rtc-stats, webhook-log or bodies",
             rc ? l->err : "no rtc_data, req or type in it");
    kh_import_error(&im->t, im->name, ln->number, why);
    return false;
}

/* False when the rest of the file is to be left. */
static bool handle_line(struct importer *im, const struct kh_line *ln)
{
    im->t.lines++;
    im->file_lines = ln->number;
    if (ln->too_long) {
        char why[200];
        snprintf(why, sizeof(why), "line: %zu bytes is over the longest a report may take "
                                   "(max_body_bytes %lld)",
                 ln->len, (long long)im->cfg->max_body_bytes);
        refuse_line(im, ln->number, why);
        return true;
    }
    if (blank(ln))
        return true;
    if (im->fmt == KH_SORALOG_AUTO && !detect(im, ln))
        return false;
    switch (im->fmt) {
    case KH_SORALOG_RTC_STATS: rtc_line(im, ln); break;
    case KH_SORALOG_WEBHOOK_LOG: webhook_line(im, ln); break;
    default: body_line(im, ln); break;
    }
    return true;
}

/* --- files -------------------------------------------------------------------------------- */

static bool open_next(struct importer *im)
{
    while (im->next_file < im->opt->nfiles) {
        const char *path = im->opt->files[im->next_file++];
        const char *err = NULL;
        size_t max_line = (size_t)im->cfg->max_body_bytes + (64u << 10);
        if (kh_lines_open(&im->in, path, max_line, &err) != 0) {
            kh_import_error(&im->t, NULL, 0, err);
            continue;
        }
        im->name = strcmp(path, "-") == 0 ? "(stdin)" : path;
        im->fmt = im->opt->format;
        im->file_lines = 0;
        im->t.files++;
        kh_import_file_opened(&im->t, im->name);
        struct kh_regroup_limits lim = {.max_open = 256, .max_open_bytes = 32u << 20,
                                        .max_body = (size_t)im->cfg->max_body_bytes};
        im->regroup = kh_regroup_new(&lim, on_regrouped, im);
        if (im->regroup == NULL) {
            kh_import_error(&im->t, im->name, 0, "import: out of memory");
            kh_lines_close(im->in);
            im->in = NULL;
            continue;
        }
        return true;
    }
    return false;
}

/* The file is over (flush: hand out its open reports). */
static void close_file(struct importer *im, bool flush)
{
    if (flush)
        kh_regroup_flush(im->regroup);
    kh_regroup_free(im->regroup);
    im->regroup = NULL;
    im->offset_done += kh_lines_offset(im->in);
    kh_lines_close(im->in);
    im->in = NULL;
}

/* One line of the current file; false at its end. */
static bool read_line(struct importer *im)
{
    struct kh_line ln;
    const char *err = NULL;
    int rc = kh_lines_next(im->in, &ln, &err);
    if (rc == 1)
        return handle_line(im, &ln);
    if (rc < 0) /* a read error or a cut gzip stream: what came before stands */
        refuse_line(im, im->file_lines + 1, err);
    return false;
}

void kh_import_stop_input(struct importer *im)
{
    if (im->in)
        close_file(im, false);
    im->input_done = true;
}

static bool room(const struct importer *im)
{
    return im->jobs < im->max_jobs && im->job_bytes < im->max_job_bytes;
}

/* A few milliseconds of reading a turn, so that completions are not held up. */
static void on_pump(evutil_socket_t fd, short what, void *arg)
{
    struct importer *im = arg;
    uint64_t until = kh_mono_usec() + 5000;
    while (!im->input_done && room(im) && kh_mono_usec() < until) {
        if (im->in == NULL && !open_next(im)) {
            im->input_done = true;
            break;
        }
        if (!read_line(im))
            close_file(im, true);
    }
    kh_import_resume(im);
    kh_import_check_done(im);
}

void kh_import_resume(struct importer *im)
{
    if (!im->input_done && room(im))
        event_active(im->pump, EV_TIMEOUT, 1);
}

void kh_import_check_done(struct importer *im)
{
    if (im->input_done && im->jobs == 0)
        event_base_loopbreak(im->base);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct importer *im = arg;
    im->t.bytes_done = im->offset_done + (im->in ? kh_lines_offset(im->in) : 0);
    kh_import_progress(&im->t, stderr);
}

/* --- start and end ------------------------------------------------------------------------ */

/* Every file is there to be read before anything starts; the sizes, for the progress. */
static int check_files(const struct kh_import_options *opt, uint64_t *total)
{
    *total = 0;
    bool known = true;
    for (size_t i = 0; i < opt->nfiles; i++) {
        const char *p = opt->files[i];
        if (strcmp(p, "-") == 0) {
            known = false;
            continue;
        }
        struct stat st;
        int fd = open(p, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || fstat(fd, &st) != 0 || S_ISDIR(st.st_mode)) {
            fprintf(stderr, "kohaku: %s: %s\n", p, fd < 0 ? strerror(errno) : "is a directory");
            if (fd >= 0)
                close(fd);
            return KH_EIO;
        }
        close(fd);
        known = known && S_ISREG(st.st_mode);
        *total += (uint64_t)st.st_size;
    }
    if (!known)
        *total = 0;
    return 0;
}

static int open_storage(struct importer *im)
{
    const char *err = NULL;
    struct kh_store *st = &im->store;
    st->ops = kh_store_find(im->cfg->storage);
    if (st->ops == NULL) {
        fprintf(stderr, "kohaku: storage backend '%s' not available in this build\n",
                im->cfg->storage);
        return KH_EIO;
    }
    int rc = st->ops->open(st, im->cfg, &err);
    if (rc == 0)
        rc = st->ops->migrate(st, 0, &err);
    if (rc == 0 && st->ops->start(st) != 0) {
        rc = KH_ENOMEM;
        err = "cannot start its background work";
    }
    if (rc != 0) {
        fprintf(stderr, "kohaku: storage (%s): %s\n", im->cfg->storage, err ? err : "failed");
        if (st->impl)
            st->ops->close(st);
        st->ops = NULL;
    }
    return rc;
}

static int open_runtime(struct importer *im)
{
    if (evthread_use_pthreads() != 0 || (im->base = event_base_new()) == NULL)
        return KH_ENOMEM;
    /* the batcher reads its sizes from the config at construction: a copy with the import's */
    struct kh_config bcfg = *im->cfg;
    bcfg.batch_max_reports = (int64_t)im->batch_reports;
    bcfg.batch_max_rows = (int64_t)im->batch_rows;
    im->batcher = kh_batcher_new(im->base, &im->store, &bcfg);
    if (im->batcher == NULL || kh_import_open_quality(im) != 0)
        return KH_ENOMEM;
    if (im->cfg->parse_threads > 0 &&
        (im->pool = kh_parsepool_new(im->base, (int)im->cfg->parse_threads)) == NULL)
        return KH_ENOMEM;
    im->pump = event_new(im->base, -1, 0, on_pump, im);
    if (im->pump == NULL)
        return KH_ENOMEM;
    if (im->opt->progress) {
        im->tick = event_new(im->base, -1, EV_PERSIST, on_tick, im);
        struct timeval every = {0, 250000};
        if (im->tick == NULL || event_add(im->tick, &every) != 0)
            return KH_ENOMEM;
    }
    return 0;
}

/* The batches, and the bounds of what is read ahead: a full batch for every writer and the
 * next one gathering, and their memory. With one writer (SQLite) batches are four times
 * batch_max_reports (and rows): nobody waits for their answer, and there each commit is what
 * costs (measured: 256-report batches 1,700 reports/s, 1,024 3,000). With several
 * (PostgreSQL) they stay as configured, so that the writers have batches to share (1,024
 * halved the rate of a 1,000-connection log: a connection's next report waits for the
 * batch of its previous one). */
static void set_limits(struct importer *im)
{
    const struct kh_config *cfg = im->cfg;
    int writers = im->store.ops->writers(&im->store);
    size_t par = writers > 0 ? (size_t)writers : 1;
    size_t scale = writers > 1 ? 1 : 4;
    im->batch_reports = (size_t)cfg->batch_max_reports * scale;
    im->batch_rows = (size_t)cfg->batch_max_rows * scale;
    im->ordered = writers > 1;
    im->max_jobs = (par + 1) * im->batch_reports + im->batch_reports / 2;
    im->max_job_bytes = 96u << 20;
    if (im->max_job_bytes < 4 * (size_t)cfg->max_body_bytes)
        im->max_job_bytes = 4 * (size_t)cfg->max_body_bytes;
    if (im->max_job_bytes > (size_t)cfg->max_inflight_bytes / 2)
        im->max_job_bytes = (size_t)cfg->max_inflight_bytes / 2;
    im->lim = kh_envelope_default_limits;
    im->lim.arena_max = (size_t)cfg->max_body_bytes * 4 + (1u << 20);
    im->lim.max_depth = (size_t)cfg->max_json_depth;
    im->lim.max_stats = (size_t)cfg->max_stats_per_report;
    im->lim.privacy = &im->privacy;
}

static void close_runtime(struct importer *im)
{
    if (im->in)
        close_file(im, false);
    kh_parsepool_free(im->pool);
    kh_batcher_free(im->batcher);
    kh_import_close_quality(im);
    if (im->pump)
        event_free(im->pump);
    if (im->tick)
        event_free(im->tick);
    if (im->base)
        event_base_free(im->base);
    kh_import_conns_free(im);
    if (im->store.ops)
        im->store.ops->close(&im->store);
}

static int print_summary(struct importer *im)
{
    struct kh_buf out;
    kh_buf_init(&out, 1u << 20);
    if (im->opt->progress)
        kh_import_progress_clear(stderr);
    im->t.bytes_done = im->offset_done;
    int rc = kh_import_summary(&im->t, im->opt->json, &out);
    if (rc == 0)
        fwrite(out.data, 1, out.len, stdout);
    fflush(stdout);
    kh_buf_cleanup(&out);
    return kh_import_status(&im->t);
}

int kh_import_run(const struct kh_config *cfg, const struct kh_import_options *opt)
{
    struct importer *im = calloc(1, sizeof(*im));
    if (im == NULL) {
        fprintf(stderr, "kohaku: out of memory\n");
        return 2;
    }
    im->cfg = cfg;
    im->opt = opt;
    kh_import_tally_init(&im->t);
    int status = 2;
    const char *err;
    if (kh_app_privacy_init(&im->privacy, cfg, &err) != 0) {
        fprintf(stderr, "kohaku: %s\n", err);
        goto out;
    }
    if (check_files(opt, &im->t.bytes_total) != 0 || open_storage(im) != 0)
        goto out;
    signal(SIGPIPE, SIG_IGN);
    set_limits(im);
    if (open_runtime(im) != 0) {
        fprintf(stderr, "kohaku: import: cannot start (out of memory or threads)\n");
        close_runtime(im);
        goto out;
    }
    im->t.start_usec = kh_mono_usec();
    event_active(im->pump, EV_TIMEOUT, 1);
    event_base_dispatch(im->base);
    close_runtime(im);
    status = print_summary(im);
out:
    kh_import_tally_cleanup(&im->t);
    free(im);
    return status;
}
