/*
 * quality_metrics: the fleet-level quality series on /metrics, never with a connection or
 * channel id: per Sora node, histograms of the rated intervals' loss, round-trip time and
 * audio MOS, and the connections seen within the last quality_max_gap by their verdict so
 * far (the worst severity of their reports). Fed on the loop thread with what the quality
 * stage noted in each report, once the report is stored; rendered on the loop thread.
 *
 * Bounded: at most KH_QM_NODES node names (the rest are counted as node "other"), and a
 * table of KH_QM_CONNECTIONS connections (open addressing on a hash of the id; one whose
 * slots are all taken by live connections is counted in
 * kohaku_quality_connections_untracked_total). The table also skips a report of a connection
 * that is not newer than the last one counted (a redelivery, a replay).
 */
#ifndef KH_PIPELINE_QUALITY_METRICS_H
#define KH_PIPELINE_QUALITY_METRICS_H

#include <stdint.h>

#include "core/buf.h"
#include "sora/report.h"

#define KH_QM_NODES 64
#define KH_QM_CONNECTIONS (1u << 17)

/* What the quality stage notes in a report (in its arena) for these metrics. */
struct kh_quality_note {
    uint8_t severity;
    uint16_t n;
    struct {
        float loss_percent, rtt_ms, mos; /* NAN when unknown */
    } streams[];
};

struct kh_qm;

struct kh_qm *kh_qm_new(int64_t window_usec);
void kh_qm_free(struct kh_qm *m);
/* A stored report and its note. now_usec: the monotonic clock. */
void kh_qm_observe(struct kh_qm *m, const struct kh_report *r, const struct kh_quality_note *n,
                   uint64_t now_usec);
/* Appends the series. 0 or KH_ENOSPC/KH_ENOMEM. */
int kh_qm_render(const struct kh_qm *m, struct kh_buf *b, uint64_t now_usec);

#endif
