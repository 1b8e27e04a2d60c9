/*
 * import_internal: what import.c (files, lines, formats) and import_jobs.c (parsing,
 * ordering, storing) share: the importer and its jobs. Not for other modules.
 */
#ifndef KH_IMPORT_INTERNAL_H
#define KH_IMPORT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "api/import.h"
#include "api/import_summary.h"
#include "core/buf.h"
#include "core/lines.h"
#include "pipeline/batcher.h"
#include "pipeline/parsepool.h"
#include "pipeline/quality.h"
#include "sora/envelope.h"
#include "sora/regroup.h"
#include "sora/soralog.h"
#include "store/store.h"

#define KH_IMPORT_CONN_BUCKETS 4096

/* A connection with reports submitted and not completed (writers > 1 only). */
struct kh_import_conn {
    struct kh_import_conn *next;
    uint32_t inflight; /* its reports submitted, not completed */
    uint64_t batch;    /* the batch the last of them went into (kh_batcher_dispatched) */
    uint32_t len;
    char id[];
};

/* One report, from its line(s) to its batch's outcome. */
struct job {
    struct job *next; /* in the order queue, until submitted */
    struct importer *im;
    const char *file;
    uint64_t line, last_line; /* its first and last line */
    uint64_t *lines;          /* rtc-stats: the line of each stats object */
    size_t nlines;
    struct kh_buf body;
    enum kh_report_kind kind;
    enum kh_envelope_flavor flavor;
    bool parsed;
    int rc;    /* the parse's */
    char *why; /* the envelope's reason, when rc != 0 */
    struct kh_report *r;
    struct kh_import_conn *conn;
    size_t bytes; /* counted in job_bytes */
};

struct importer {
    const struct kh_config *cfg;
    const struct kh_import_options *opt;
    struct kh_store store;
    struct event_base *base;
    struct kh_batcher *batcher;
    struct kh_parsepool *pool; /* NULL with parse_threads = 0: parsed on the loop */
    struct kh_quality_stage *quality;
    struct kh_envelope_limits lim;
    struct kh_privacy privacy; /* lim.privacy: what the parses do to IP addresses */
    struct event *pump, *tick;
    /* input */
    size_t next_file;
    struct kh_lines *in;
    const char *name;
    uint64_t file_lines; /* lines of the current file read */
    enum kh_soralog_format fmt;
    struct kh_regroup *regroup;
    struct kh_soraline line;
    uint64_t offset_done; /* bytes of the files done */
    bool input_done, stopping;
    /* jobs alive: made, not completed; the order queue holds those not yet submitted */
    struct job *head, *tail;
    size_t jobs, job_bytes, max_jobs, max_job_bytes;
    size_t batch_reports, batch_rows; /* the batcher's sizes */
    bool ordered; /* a connection's report waits while its last batch is out */
    struct kh_import_conn *conns[KH_IMPORT_CONN_BUCKETS];
    struct kh_import_tally t;
};

/* A report of this kind is a stats report or a session or event webhook. */
static inline enum kh_import_item kh_import_item_of(enum kh_report_kind kind)
{
    return kind == KH_REPORT_SESSION_WEBHOOK || kind == KH_REPORT_EVENT_WEBHOOK
               ? KH_IMPORT_WEBHOOK
               : KH_IMPORT_REPORT;
}

/* import.c */
void kh_import_resume(struct importer *im);
void kh_import_check_done(struct importer *im);
void kh_import_stop_input(struct importer *im);

/* import_jobs.c */
struct job *kh_import_job_new(struct importer *im, uint64_t line, enum kh_report_kind kind,
                              enum kh_envelope_flavor flavor);
void kh_import_job_free(struct job *j);
/* Queues the job (it is the importer's now) and starts its parse. */
void kh_import_job_start(struct importer *im, struct job *j);
/* The quality stage (when cfg->quality and the backend reads back) and the batcher's stage
 * steps that count what each batch stored. 0 or KH_ENOMEM/KH_EINVAL (printed). */
int kh_import_open_quality(struct importer *im);
void kh_import_close_quality(struct importer *im);
void kh_import_conns_free(struct importer *im);

#endif
