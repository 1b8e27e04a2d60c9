/*
 * regroup: the lines of rtc_stats.jsonl back into reports. Each line holds one stats object
 * (`rtc_data`) and its report's envelope flattened beside it; the lines of one report share
 * the report's connection_id, id and timestamp. A report comes out as the body Sora's stats
 * webhook would have posted: the envelope members of its first line as written (all but
 * rtc_data, rtc_id, rtc_timestamp, rtc_type and stats), then "stats": [each rtc_data as
 * written, in line order]. That body is then the envelope parser's to check.
 *
 * A report is open while its lines come. It is handed out (in the order reports close) when
 * a line of the next report of the same connection arrives, when too many reports are open
 * at once (the one whose last line is oldest goes), or at the end of the file. So lines of
 * one report may be interleaved with other connections' lines, and memory is bounded by the
 * limits whatever the file. A report whose body would pass max_body is handed out without a
 * body, as too large.
 */
#ifndef KH_REGROUP_H
#define KH_REGROUP_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "sora/soralog.h"

struct kh_regroup_limits {
    size_t max_open;       /* reports open at once */
    size_t max_open_bytes; /* the bodies of the open reports, together */
    size_t max_body;       /* one report's body (max_body_bytes) */
};

struct kh_regroup_report {
    struct kh_buf body;   /* the body; empty when too large */
    uint64_t first_line;  /* the line of its first stats object */
    uint64_t last_line;   /* and of its last */
    uint64_t *lines;      /* the line of each stats object, in order (nlines of them) */
    size_t nlines;
    size_t too_large;     /* 0, or the bytes the body would have had (at least) */
    /* the regrouper's */
    size_t cap_lines;
    char *key;            /* connection_id \0 id \0 timestamp, as written */
    size_t key_len, conn_len;
    struct kh_regroup_report *prev, *next;
};

/* Called for every report handed out; the report is the callback's, which frees it with
 * kh_regroup_report_free. A nonzero return is passed back by the call that closed it. */
typedef int (*kh_regroup_cb)(void *arg, struct kh_regroup_report *rep);

struct kh_regroup;

/* NULL on allocation failure. */
struct kh_regroup *kh_regroup_new(const struct kh_regroup_limits *lim, kh_regroup_cb cb,
                                  void *arg);
/* One line, read by kh_soraline_parse from line[], numbered lineno. 0, the callback's
 * nonzero, KH_EINVAL with *err when the line has no rtc_data (it is not a line of
 * rtc_stats.jsonl; nothing is kept of it), or KH_ENOMEM. */
int kh_regroup_add(struct kh_regroup *g, const char *line, const struct kh_soraline *l,
                   uint64_t lineno, const char **err);
/* The end of the file: hands out every open report, oldest first. 0 or the callback's. */
int kh_regroup_flush(struct kh_regroup *g);
/* Reports open now. */
size_t kh_regroup_open(const struct kh_regroup *g);
/* Frees what is open without handing it out. */
void kh_regroup_free(struct kh_regroup *g);
void kh_regroup_report_free(struct kh_regroup_report *rep);

#endif
