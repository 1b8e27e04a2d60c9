/*
 * report: allocation of reports and their rows. See report.h.
 */
#include "sora/report.h"

#include <stdlib.h>
#include <string.h>

struct kh_report *kh_report_new(enum kh_report_kind kind, size_t arena_max)
{
    struct kh_report *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    r->kind = kind;
    kh_arena_init(&r->arena, 16384, arena_max);
    r->rows_tail = &r->rows;
    r->multistream = r->simulcast = r->spotlight = -1;
    return r;
}

void kh_report_free(struct kh_report *r)
{
    if (r == NULL)
        return;
    kh_arena_cleanup(&r->arena);
    free(r);
}

void kh_report_add_row(struct kh_report *r, struct kh_row *row)
{
    row->next = NULL;
    *r->rows_tail = row;
    r->rows_tail = &row->next;
    r->nrows++;
    if (row->table >= 0 && row->table < KH_REPORT_MAX_TABLES)
        r->table_rows[row->table]++;
}
