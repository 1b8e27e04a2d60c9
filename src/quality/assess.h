/*
 * assess: a connection report's quality rows. From the report's sample (sample.h) and what
 * the previous report of the connection left, it computes each RTP stream's interval, MOS or
 * video score and issues, and the connection's, and appends them to the report as rows of
 * the computed tables quality_stream (one per stream) and quality_connection (one per
 * report), in the report's arena, so that they are stored in the same transaction as the
 * report's own rows, by every backend alike.
 *
 * What the previous report left is its quality rows: they carry the sample each interval
 * ended at and the detectors' history (how long each condition has held, when each issue's
 * span began). The caller reads them back from the database (another kohaku instance or a
 * run before a restart may have stored them) or takes those it has just computed for an
 * earlier report of the same connection; both go through kh_q_prev_read, so the result is
 * the same whichever process saw the previous report.
 */
#ifndef KH_QUALITY_ASSESS_H
#define KH_QUALITY_ASSESS_H

#include <stdbool.h>
#include <stdint.h>

#include "quality/detect.h"
#include "quality/sample.h"
#include "sora/report.h"

/* One stream as the previous report left it. */
struct kh_q_prev_stream {
    struct kh_q_stream s;
    struct kh_q_state st;
    int64_t began_usec[KH_QI_COUNT]; /* start of each issue's open span, 0 if none */
};

/* What the previous report of a connection left. */
struct kh_q_prev {
    bool present;      /* its quality_connection row was there */
    int64_t time_usec; /* its time (the envelope's) */
    size_t nstreams;
    struct kh_q_prev_stream streams[KH_Q_MAX_STREAMS];
    struct kh_q_transport tr;
    struct kh_q_state tr_st;
    int64_t tr_began_usec[KH_QI_COUNT];
};

/* What one assessed report gave, for the metrics: the values of its streams' intervals (not
 * those since a stream began; NAN unknown). */
struct kh_q_summary {
    enum kh_q_severity severity;
    size_t nstreams;
    struct {
        double loss_percent, rtt_ms, mos;
    } streams[KH_Q_MAX_STREAMS];
};

/* Everything an assessment works in (large: a report's sample and a previous one); one per
 * thread, reused. */
struct kh_q_work {
    struct kh_q_report cur;
    struct kh_q_prev prev;
};

/* Looks up the quality tables' members (after kh_schema_init and kh_q_sample_init). 0 or
 * KH_EINVAL when the schema lacks one. */
int kh_q_assess_init(void);
/* kh_q_sample_init and kh_q_assess_init: what the quality layer needs once, after
 * kh_schema_init. */
int kh_q_init(void);

/* Reads the quality rows of one report (a list; rows of other tables are skipped) into out.
 * Strings in out point into the rows. */
void kh_q_prev_read(const struct kh_row *rows, int64_t time_usec, struct kh_q_prev *out);

/* Appends r's quality rows, after prev (NULL, or not present: the first report, every
 * interval since its stream began). prev must be older than r. sum may be NULL. 0, or
 * KH_ENOMEM when r's arena is full (r is left without quality rows). */
int kh_q_assess(struct kh_report *r, const struct kh_q_prev *prev,
                const struct kh_q_thresholds *th, struct kh_q_work *w, struct kh_q_summary *sum);

/* The name of severity s ("ok", "warning", "bad"). */
const char *kh_q_severity_name(enum kh_q_severity s);

#endif
