/*
 * import_jobs: a report of `kohaku import` from its parse to its batch's outcome.
 *
 * Jobs wait in the order queue in file order. A parsed job at its head goes to the batcher;
 * one refused by the envelope parser is noted (for rtc-stats, at the line of the stats
 * object the reason names: "stats[3]..." is the report's fourth line). So the batcher gets
 * each connection's reports in file order, whatever the parse pool's threads do.
 *
 * With several writers (PostgreSQL's pool) two batches may be written at once, and the
 * quality stage of the later one would not see the earlier one's reports of the same
 * connection. So a connection's next report joins only the batch that gathers its previous
 * ones; while they are in a batch that is out, it waits (and the queue behind it) until that
 * batch is done. With one writer (SQLite) batches are written one after the other and
 * nothing waits.
 *
 * What a batch stored comes from the batcher's stage steps (counts of the batch: rows,
 * reports already present), what each report became from its completion.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/import_internal.h"
#include "core/errors.h"
#include "sora/lifecycle.h"
#include "sora/schema.h"

/* --- connections with reports out (ordered mode) ------------------------------------------ */

static size_t bucket(const char *id, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)id[i]) * 16777619u;
    return h % KH_IMPORT_CONN_BUCKETS;
}

static struct kh_import_conn *conn_find(struct importer *im, const struct kh_str *id)
{
    for (struct kh_import_conn *c = im->conns[bucket(id->p, id->len)]; c; c = c->next)
        if (c->len == id->len && memcmp(c->id, id->p, id->len) == 0)
            return c;
    return NULL;
}

static struct kh_import_conn *conn_get(struct importer *im, const struct kh_str *id)
{
    struct kh_import_conn *c = conn_find(im, id);
    if (c)
        return c;
    c = calloc(1, sizeof(*c) + id->len);
    if (c == NULL)
        return NULL;
    c->len = id->len;
    memcpy(c->id, id->p, id->len);
    size_t b = bucket(id->p, id->len);
    c->next = im->conns[b];
    im->conns[b] = c;
    return c;
}

/* Forgets a connection with nothing out. */
static void conn_put(struct importer *im, struct kh_import_conn *c)
{
    if (c == NULL || c->inflight > 0)
        return;
    struct kh_import_conn **p = &im->conns[bucket(c->id, c->len)];
    while (*p != c)
        p = &(*p)->next;
    *p = c->next;
    free(c);
}

void kh_import_conns_free(struct importer *im)
{
    for (size_t b = 0; b < KH_IMPORT_CONN_BUCKETS; b++) {
        while (im->conns[b]) {
            struct kh_import_conn *c = im->conns[b];
            im->conns[b] = c->next;
            free(c);
        }
    }
}

/* A connection report waits while its connection's reports are in a batch that is out. */
static bool waits(struct importer *im, const struct job *j)
{
    if (!im->ordered || j->r->kind != KH_REPORT_CONNECTION)
        return false;
    const struct kh_import_conn *c = conn_find(im, &j->r->connection_id);
    return c && c->inflight > 0 && c->batch < kh_batcher_dispatched(im->batcher);
}

/* --- jobs ------------------------------------------------------------------------------- */

struct job *kh_import_job_new(struct importer *im, uint64_t line, enum kh_report_kind kind,
                              enum kh_envelope_flavor flavor)
{
    struct job *j = calloc(1, sizeof(*j));
    if (j == NULL)
        return NULL;
    j->im = im;
    j->file = im->name;
    j->line = j->last_line = line;
    j->kind = kind;
    j->flavor = flavor;
    kh_buf_init(&j->body, (size_t)im->cfg->max_body_bytes);
    return j;
}

void kh_import_job_free(struct job *j)
{
    if (j == NULL)
        return;
    kh_buf_cleanup(&j->body);
    kh_report_free(j->r);
    free(j->lines);
    free(j->why);
    free(j);
}

static void account(struct importer *im, struct job *j, size_t bytes)
{
    im->job_bytes = im->job_bytes - j->bytes + bytes;
    j->bytes = bytes;
}

/* The job is over: its room goes back to the pump. */
static void finish(struct importer *im, struct job *j)
{
    account(im, j, 0);
    im->jobs--;
    kh_import_job_free(j);
    kh_import_resume(im);
    kh_import_check_done(im);
}

static struct job *pop(struct importer *im)
{
    struct job *j = im->head;
    im->head = j->next;
    if (im->head == NULL)
        im->tail = NULL;
    j->next = NULL;
    return j;
}

/* The envelope parser's reason, where the line says it: rtc-stats names the stats object's
 * line and calls it rtc_data; a report of several lines says which. */
static void refuse_parsed(struct importer *im, struct job *j)
{
    const char *why = j->why ? j->why : "import: out of memory";
    uint64_t line = j->line;
    char text[700], suffix[80] = "";
    snprintf(text, sizeof(text), "%s", why);
    if (j->lines && strncmp(why, "stats[", 6) == 0) {
        char *end;
        unsigned long long n = strtoull(why + 6, &end, 10);
        if (*end == ']' && n < j->nlines) {
            line = j->lines[n];
            snprintf(text, sizeof(text), "rtc_data%s", end + 1);
        }
    }
    if (j->last_line > j->line)
        snprintf(suffix, sizeof(suffix), " (the report of lines %llu-%llu)",
                 (unsigned long long)j->line, (unsigned long long)j->last_line);
    size_t n = strlen(text);
    snprintf(text + n, sizeof(text) - n, "%s", suffix);
    kh_import_refused(&im->t, kh_import_item_of(j->kind), j->file, line, text);
}

static void stop(struct importer *im, const char *err)
{
    if (im->stopping)
        return;
    im->stopping = true;
    char why[600];
    snprintf(why, sizeof(why), "database: %s; the import stopped there", err ? err : "failed");
    kh_import_error(&im->t, NULL, 0, why);
    kh_import_stop_input(im);
}

static void advance(struct importer *im);

/* Loop thread: the batch holding the job's report is done. */
static void on_stored(void *arg, int result, const char *err)
{
    struct job *j = arg;
    struct importer *im = j->im;
    if (j->conn) {
        j->conn->inflight--;
        conn_put(im, j->conn);
    }
    enum kh_import_item what = kh_import_item_of(j->kind);
    if (result == 0 && what == KH_IMPORT_WEBHOOK)
        im->t.webhooks_accepted++;
    else if (result == 0)
        im->t.accepted++;
    else if (result == KH_EREJECT)
        kh_import_refused(&im->t, what, j->file, j->line, err ? err : "storage: refused");
    else {
        im->t.not_stored++;
        stop(im, err);
    }
    finish(im, j);
    advance(im);
}

/* 0: the batcher has it. KH_ENOSPC: no room for now. */
static int submit(struct importer *im, struct job *j)
{
    struct kh_import_conn *c = NULL;
    if (im->ordered && j->r->kind == KH_REPORT_CONNECTION &&
        (c = conn_get(im, &j->r->connection_id)) == NULL)
        return KH_ENOMEM;
    uint64_t batch = kh_batcher_dispatched(im->batcher);
    int rc = kh_batcher_submit(im->batcher, j->r, on_stored, j);
    if (rc != 0) {
        conn_put(im, c);
        return rc;
    }
    j->r = NULL; /* the batcher's until on_stored */
    if (c) {
        c->inflight++;
        c->batch = batch;
        j->conn = c;
    }
    return 0;
}

/* The parsed jobs at the head of the queue, in order. */
static void advance(struct importer *im)
{
    while (im->head && im->head->parsed) {
        struct job *j = im->head;
        if (j->rc != 0 || im->stopping) {
            pop(im);
            if (j->rc != 0)
                refuse_parsed(im, j);
            else
                im->t.not_stored++;
            finish(im, j);
            continue;
        }
        if (waits(im, j))
            return;
        int rc = submit(im, j);
        if (rc == KH_ENOSPC && kh_batcher_pending(im->batcher) > 0)
            return; /* a completion makes room */
        pop(im);
        if (rc != 0) {
            kh_import_refused(&im->t, kh_import_item_of(j->kind), j->file, j->line,
                              rc == KH_ENOSPC ? "import: the report is larger than "
                                                "max_inflight_bytes"
                                              : "import: out of memory");
            finish(im, j);
        }
    }
}

/* Loop thread: the job's body is parsed (why: the reason when rc != 0, NULL for none). */
static void parsed(struct job *j, int rc, struct kh_report *r, const char *why)
{
    struct importer *im = j->im;
    j->parsed = true;
    j->rc = rc;
    if (rc != 0)
        j->why = strdup(why ? why : "import: out of memory");
    j->r = r;
    kh_buf_cleanup(&j->body);
    account(im, j, r ? r->arena.total + sizeof(*r) : 0);
    advance(im);
}

static void on_parsed(void *arg, int rc, struct kh_report *r, const struct kh_envelope *e)
{
    parsed(arg, rc, r, rc != 0 && e ? kh_envelope_error(e) : NULL);
}

/* A session or event webhook: parsed on the loop, as the live path does (they are small and
 * few beside the stats), by the rules of the webhook its type says. */
static void parse_lifecycle(struct job *j)
{
    char err[400];
    struct kh_report *r = NULL;
    enum kh_lifecycle_flavor lf = j->kind == KH_REPORT_SESSION_WEBHOOK ? KH_LC_SESSION
                                                                        : KH_LC_EVENT;
    int rc = kh_lifecycle_parse(lf, KH_LC_BODY, j->body.data, j->body.len, &j->im->lim, &r,
                                err, sizeof(err));
    parsed(j, rc, r, rc != 0 ? err : NULL);
}

void kh_import_job_start(struct importer *im, struct job *j)
{
    if (im->tail)
        im->tail->next = j;
    else
        im->head = j;
    im->tail = j;
    im->jobs++;
    account(im, j, j->body.cap);
    if (kh_import_item_of(j->kind) == KH_IMPORT_WEBHOOK) {
        parse_lifecycle(j);
        return;
    }
    struct kh_envelope *e = kh_envelope_new(j->kind, j->flavor, &im->lim);
    if (e == NULL) {
        on_parsed(j, KH_ENOMEM, NULL, NULL);
        return;
    }
    if (im->pool && kh_parsepool_submit(im->pool, e, (const uint8_t *)j->body.data, j->body.len,
                                        on_parsed, j) == 0)
        return;
    int rc = kh_envelope_feed(e, j->body.data, j->body.len);
    if (rc == 0)
        rc = kh_envelope_finish(e);
    on_parsed(j, rc, rc == 0 ? kh_envelope_take_report(e) : NULL, e);
    kh_envelope_free(e);
}

/* --- the batcher's stage steps ------------------------------------------------------------ */

static int stage(void *arg, int slot, struct kh_batch *b, const char **err)
{
    struct importer *im = arg;
    return im->quality ? kh_quality_stage_run(im->quality, slot, b, err) : 0;
}

static void stage_done(void *arg, const struct kh_batch *b, int rc)
{
    struct importer *im = arg;
    if (im->quality)
        kh_quality_stage_done(im->quality, b, rc);
    if (rc != 0 && rc != KH_EREJECT)
        return;
    im->t.present += b->reports_duplicate;
    im->t.webhooks_present += b->webhooks_duplicate;
    for (size_t t = 0; t < kh_stats_ntables && t < KH_REPORT_MAX_TABLES; t++) {
        if (kh_stats_tables[t].computed)
            im->t.quality_rows += b->rows_stored[t];
        else
            im->t.rows += b->rows_stored[t];
    }
}

static void stage_after(void *arg, int slot, const struct kh_batch *b, int rc)
{
    struct importer *im = arg;
    if (im->quality)
        kh_quality_stage_after(im->quality, slot, b, rc);
}

int kh_import_open_quality(struct importer *im)
{
    const struct kh_config *cfg = im->cfg;
    struct kh_store *st = &im->store;
    if (cfg->quality && st->ops->latest != NULL) {
        struct kh_quality_settings set;
        const char *err = NULL;
        if (kh_quality_settings_from(cfg, &set, &err) != 0) {
            fprintf(stderr, "kohaku: %s\n", err);
            return KH_EINVAL;
        }
        int writers = st->ops->writers(st);
        im->quality = kh_quality_stage_new(st, writers > 0 ? writers : 1, &set);
        if (im->quality == NULL)
            return KH_ENOMEM;
    }
    kh_batcher_set_stage(im->batcher, stage, stage_done, im);
    kh_batcher_set_after(im->batcher, stage_after);
    return 0;
}

void kh_import_close_quality(struct importer *im)
{
    kh_quality_stage_free(im->quality);
    im->quality = NULL;
}
