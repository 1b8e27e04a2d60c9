/*
 * import_summary: see import_summary.h.
 */
#include "api/import_summary.h"

#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/jsonw.h"
#include "core/timeutil.h"

void kh_import_tally_init(struct kh_import_tally *t)
{
    memset(t, 0, sizeof(*t));
    t->start_usec = kh_mono_usec();
}

void kh_import_tally_cleanup(struct kh_import_tally *t)
{
    for (size_t i = 0; i < t->nrefused; i++)
        free(t->refused[i].reason);
    for (size_t i = 0; i < t->nerrors; i++)
        free(t->errors[i].reason);
    t->nrefused = t->nerrors = 0;
    free(t->opened);
    t->opened = NULL;
}

void kh_import_file_opened(struct kh_import_tally *t, const char *name)
{
    if (t->nopened == t->cap_opened) {
        const char **p = kh_grow(t->opened, &t->cap_opened, 16, sizeof(*p));
        if (p == NULL)
            return; /* its notes are listed last */
        t->opened = p;
    }
    t->opened[t->nopened++] = name;
}

static size_t file_rank(const struct kh_import_tally *t, const char *name)
{
    for (size_t i = 0; name && i < t->nopened; i++)
        if (t->opened[i] == name)
            return i;
    return name ? t->nopened : 0; /* the database's notes first */
}

/* The notes in file order, then line order. */
static void sort_notes(const struct kh_import_tally *t, struct kh_import_note *list, size_t n)
{
    for (size_t i = 1; i < n; i++) { /* insertion sort: 100 at most, nearly in order */
        struct kh_import_note x = list[i];
        size_t rx = file_rank(t, x.file), j = i;
        while (j > 0) {
            size_t r = file_rank(t, list[j - 1].file);
            if (r < rx || (r == rx && list[j - 1].line <= x.line))
                break;
            list[j] = list[j - 1];
            j--;
        }
        list[j] = x;
    }
}

static void note(struct kh_import_note *list, size_t *n, const char *file, uint64_t line,
                 const char *reason)
{
    if (*n == KH_IMPORT_LISTED)
        return;
    char *copy = strndup(reason ? reason : "unknown", 400);
    if (copy == NULL)
        return; /* counted all the same */
    list[(*n)++] = (struct kh_import_note){.file = file, .line = line, .reason = copy};
}

void kh_import_refused(struct kh_import_tally *t, enum kh_import_item what, const char *file,
                       uint64_t line, const char *reason)
{
    if (what == KH_IMPORT_REPORT)
        t->refused_reports++;
    else if (what == KH_IMPORT_WEBHOOK)
        t->refused_webhooks++;
    else
        t->refused_lines++;
    note(t->refused, &t->nrefused, file, line, reason);
}

void kh_import_error(struct kh_import_tally *t, const char *file, uint64_t line,
                     const char *reason)
{
    t->errors_total++;
    note(t->errors, &t->nerrors, file, line, reason);
}

uint64_t kh_import_stored(const struct kh_import_tally *t) { return t->accepted - t->present; }

uint64_t kh_import_webhooks_stored(const struct kh_import_tally *t)
{
    return t->webhooks_accepted - t->webhooks_present;
}

static uint64_t refused_total(const struct kh_import_tally *t)
{
    return t->refused_reports + t->refused_webhooks + t->refused_lines;
}

int kh_import_status(const struct kh_import_tally *t)
{
    if (t->errors_total || t->not_stored)
        return 2;
    return refused_total(t) ? 1 : 0;
}

static double seconds(const struct kh_import_tally *t)
{
    double s = (double)(kh_mono_usec() - t->start_usec) / 1e6;
    return s > 1e-6 ? s : 1e-6;
}

static void mib(char *out, size_t n, uint64_t bytes)
{
    snprintf(out, n, "%.1f MiB", (double)bytes / 1048576.0);
}

void kh_import_progress(const struct kh_import_tally *t, FILE *fp)
{
    double s = seconds(t);
    char done[32], total[32], eta[48] = "";
    mib(done, sizeof(done), t->bytes_done);
    if (t->bytes_total) {
        mib(total, sizeof(total), t->bytes_total);
        double rate = (double)t->bytes_done / s;
        if (rate > 0 && t->bytes_done <= t->bytes_total) {
            long left = (long)((double)(t->bytes_total - t->bytes_done) / rate + 0.5);
            snprintf(eta, sizeof(eta), ", ETA %ldm%02lds", left / 60, left % 60);
        }
        fprintf(fp, "\r\033[Kimport: %s of %s (%.0f%%), %llu lines, %llu reports, "
                    "%.0f reports/s%s",
                done, total, 100.0 * (double)t->bytes_done / (double)t->bytes_total,
                (unsigned long long)t->lines, (unsigned long long)t->reports,
                (double)t->accepted / s, eta);
    } else {
        fprintf(fp, "\r\033[Kimport: %s, %llu lines, %llu reports, %.0f reports/s", done,
                (unsigned long long)t->lines, (unsigned long long)t->reports,
                (double)t->accepted / s);
    }
    fflush(fp);
}

void kh_import_progress_clear(FILE *fp)
{
    fputs("\r\033[K", fp);
    fflush(fp);
}

static int text_notes(struct kh_buf *out, const char *title, const struct kh_import_note *list,
                      size_t n, uint64_t total)
{
    int rc = n ? kh_buf_printf(out, "%s:\n", title) : 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const struct kh_import_note *x = &list[i];
        if (x->file && x->line)
            rc = kh_buf_printf(out, "  %s:%llu: %s\n", x->file, (unsigned long long)x->line,
                               x->reason);
        else if (x->file)
            rc = kh_buf_printf(out, "  %s: %s\n", x->file, x->reason);
        else
            rc = kh_buf_printf(out, "  %s\n", x->reason);
    }
    if (rc == 0 && total > n)
        rc = kh_buf_printf(out, "  ... and %llu more\n", (unsigned long long)(total - n));
    return rc;
}

static int text(const struct kh_import_tally *t, struct kh_buf *out)
{
    double s = seconds(t);
    int rc = kh_buf_printf(
        out,
        "Imported %llu file%s: %llu lines, %llu reports in %.1f s (%.0f reports/s, %.0f rows/s)\n"
        "  stored            %llu\n"
        "  already present   %llu\n"
        "  refused           %llu (%llu reports, %llu webhooks, %llu lines holding neither)\n"
        "  webhooks          %llu (stored %llu, already present %llu)\n",
        (unsigned long long)t->files, t->files == 1 ? "" : "s", (unsigned long long)t->lines,
        (unsigned long long)t->reports, s, (double)t->accepted / s, (double)t->rows / s,
        (unsigned long long)kh_import_stored(t), (unsigned long long)t->present,
        (unsigned long long)refused_total(t), (unsigned long long)t->refused_reports,
        (unsigned long long)t->refused_webhooks, (unsigned long long)t->refused_lines,
        (unsigned long long)t->webhooks, (unsigned long long)kh_import_webhooks_stored(t),
        (unsigned long long)t->webhooks_present);
    if (rc == 0 && t->not_stored)
        rc = kh_buf_printf(out, "  not stored        %llu (the database failed)\n",
                           (unsigned long long)t->not_stored);
    uint64_t refused = refused_total(t);
    if (rc == 0)
        rc = text_notes(out, "Refused", t->refused, t->nrefused, refused);
    if (rc == 0)
        rc = text_notes(out, "Errors", t->errors, t->nerrors, t->errors_total);
    return rc;
}

static int json_notes(struct kh_buf *out, const char *name, const struct kh_import_note *list,
                      size_t n)
{
    int rc = kh_buf_printf(out, ",\"%s\":[", name);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const struct kh_import_note *x = &list[i];
        rc = kh_buf_printf(out, "%s{\"file\":", i ? "," : "");
        rc = rc ? rc : x->file ? kh_buf_put_json_str(out, x->file, strlen(x->file))
                               : kh_buf_printf(out, "null");
        rc = rc ? rc : kh_buf_printf(out, ",\"line\":%llu,\"reason\":",
                                     (unsigned long long)x->line);
        rc = rc ? rc : kh_buf_put_json_str(out, x->reason, strlen(x->reason));
        rc = rc ? rc : kh_buf_printf(out, "}");
    }
    return rc ? rc : kh_buf_printf(out, "]");
}

static int json(const struct kh_import_tally *t, struct kh_buf *out)
{
    double s = seconds(t);
    uint64_t refused = refused_total(t);
    int rc = kh_buf_printf(
        out,
        "{\"files\":%llu,\"lines\":%llu,\"reports\":%llu,\"stored\":%llu,"
        "\"already_present\":%llu,\"refused\":%llu,\"refused_reports\":%llu,"
        "\"refused_lines\":%llu,\"refused_webhooks\":%llu,\"webhooks\":%llu,"
        "\"webhooks_stored\":%llu,\"webhooks_already_present\":%llu,\"not_stored\":%llu,"
        "\"rows\":%llu,"
        "\"quality_rows\":%llu,\"bytes\":%llu,\"seconds\":%.3f,\"reports_per_s\":%.1f,"
        "\"rows_per_s\":%.1f",
        (unsigned long long)t->files, (unsigned long long)t->lines,
        (unsigned long long)t->reports, (unsigned long long)kh_import_stored(t),
        (unsigned long long)t->present, (unsigned long long)refused,
        (unsigned long long)t->refused_reports, (unsigned long long)t->refused_lines,
        (unsigned long long)t->refused_webhooks, (unsigned long long)t->webhooks,
        (unsigned long long)kh_import_webhooks_stored(t),
        (unsigned long long)t->webhooks_present, (unsigned long long)t->not_stored,
        (unsigned long long)t->rows, (unsigned long long)t->quality_rows,
        (unsigned long long)t->bytes_done, s, (double)t->accepted / s, (double)t->rows / s);
    rc = rc ? rc : json_notes(out, "refused_list", t->refused, t->nrefused);
    rc = rc ? rc : kh_buf_printf(out, ",\"refused_not_listed\":%llu",
                                 (unsigned long long)(refused - t->nrefused));
    rc = rc ? rc : json_notes(out, "errors", t->errors, t->nerrors);
    return rc ? rc : kh_buf_printf(out, ",\"exit_status\":%d}\n", kh_import_status(t));
}

int kh_import_summary(struct kh_import_tally *t, bool as_json, struct kh_buf *out)
{
    sort_notes(t, t->refused, t->nrefused);
    sort_notes(t, t->errors, t->nerrors);
    return as_json ? json(t, out) : text(t, out);
}
