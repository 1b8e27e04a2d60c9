/*
 * import_summary: what `kohaku import` counts and says. The tally of a run (files, lines,
 * reports, stored, already present, refused; the same of session and event webhooks), the
 * refused reports, webhooks and lines with their FILE:LINE and reason (the first
 * KH_IMPORT_LISTED of them; the rest counted), the files that could not be read at all, the
 * progress line for a terminal, and the summary as text or JSON. Loop thread only.
 */
#ifndef KH_IMPORT_SUMMARY_H
#define KH_IMPORT_SUMMARY_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "core/buf.h"

#define KH_IMPORT_LISTED 100

struct kh_import_note {
    const char *file; /* the name as given (it outlives the tally) */
    uint64_t line;    /* 0: the file as a whole */
    char *reason;
};

/* What a refusal is of. */
enum kh_import_item {
    KH_IMPORT_LINE,   /* a line that is no report or webhook at all */
    KH_IMPORT_REPORT, /* a stats report (exporter, stats webhook, node) */
    KH_IMPORT_WEBHOOK /* a session or event webhook */
};

struct kh_import_tally {
    uint64_t files, lines, reports;
    uint64_t accepted;        /* reports the batches took (stored or already present) */
    uint64_t present;         /* of those, stored already (sora_report had them) */
    uint64_t refused_reports; /* by the envelope rules, the size limit or the database */
    uint64_t refused_lines;   /* lines that hold no report or webhook at all */
    /* session and event webhooks: read, taken by the batches, of those stored already
     * (sora_webhook had their id), refused (the lifecycle rules, the size, the database) */
    uint64_t webhooks, webhooks_accepted, webhooks_present, refused_webhooks;
    uint64_t not_stored;      /* reports and webhooks the database failed to take */
    uint64_t rows, quality_rows; /* rows inserted: of the reports' stats objects; quality */
    uint64_t bytes_done;      /* of the files, as read (compressed bytes for gzip) */
    uint64_t bytes_total;     /* 0: not known (a pipe) */
    uint64_t start_usec;      /* kh_mono_usec at the start */
    struct kh_import_note refused[KH_IMPORT_LISTED];
    size_t nrefused;          /* listed */
    struct kh_import_note errors[KH_IMPORT_LISTED]; /* files not read, the database */
    size_t nerrors;
    uint64_t errors_total;
    const char **opened; /* the files in the order they were opened (the lists' order) */
    size_t nopened, cap_opened;
};

void kh_import_tally_init(struct kh_import_tally *t);
void kh_import_tally_cleanup(struct kh_import_tally *t);
/* A file is being read (name outlives the tally): the notes are listed by file in this
 * order, then by line, whatever order they came in. */
void kh_import_file_opened(struct kh_import_tally *t, const char *name);
/* A refused report, webhook or line. The reason is copied. */
void kh_import_refused(struct kh_import_tally *t, enum kh_import_item what, const char *file,
                       uint64_t line, const char *reason);
/* A file that could not be read (line 0: at all), or the database failing (file NULL). */
void kh_import_error(struct kh_import_tally *t, const char *file, uint64_t line,
                     const char *reason);
/* Reports stored by this run; webhooks stored by it. */
uint64_t kh_import_stored(const struct kh_import_tally *t);
uint64_t kh_import_webhooks_stored(const struct kh_import_tally *t);
/* The exit status the tally gives: 0 everything stored or already present, 1 some report,
 * webhook or line refused, 2 a file not read or the database failing. */
int kh_import_status(const struct kh_import_tally *t);

/* The progress line, over the one before ("\r", cleared to the end). */
void kh_import_progress(const struct kh_import_tally *t, FILE *fp);
void kh_import_progress_clear(FILE *fp);
/* The summary into out: text for people, or one JSON object (the lists sorted first). 0 or
 * KH_ENOSPC/KH_ENOMEM. */
int kh_import_summary(struct kh_import_tally *t, bool json, struct kh_buf *out);

#endif
