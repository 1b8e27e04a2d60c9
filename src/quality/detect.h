/*
 * detect: the named issues kohaku finds in a stream's interval (or the connection's), each
 * one entry of kh_q_detectors: its name, what it measures, the streams it applies to, how
 * long the condition must last (sustained), and default warning and bad thresholds (config
 * keys quality_<name>_warning and quality_<name>_bad, in the detector's unit). Also the video
 * score. A detector that needs history (sustained ones, a stream's best resolution) keeps it in
 * a kh_q_state carried from one interval of the stream to the next.
 */
#ifndef KH_QUALITY_DETECT_H
#define KH_QUALITY_DETECT_H

#include <stdbool.h>
#include <stdint.h>

#include "quality/interval.h"

enum kh_q_severity { KH_Q_OK, KH_Q_WARNING, KH_Q_BAD };

enum kh_q_issue {
    KH_QI_LOSS,
    KH_QI_RTT,
    KH_QI_JITTER,
    KH_QI_CONCEALMENT,
    KH_QI_FREEZES,
    KH_QI_LOW_FPS,
    KH_QI_CPU,
    KH_QI_BANDWIDTH,
    KH_QI_RESOLUTION,
    KH_QI_NO_MEDIA,
    KH_QI_RELAY_TCP,
    KH_QI_NOT_CONNECTED,
    KH_QI_PAIR_CHANGED,
    KH_QI_COUNT
};

/* What a detector judges: streams by kind and direction, or the connection. */
enum {
    KH_QS_AUDIO_IN = 1,
    KH_QS_AUDIO_OUT = 2,
    KH_QS_VIDEO_IN = 4,
    KH_QS_VIDEO_OUT = 8,
    KH_QS_STREAM = 15,
    KH_QS_CONNECTION = 16
};

/* The connection's own interval: its transport between two reports. */
struct kh_q_conn {
    bool since_start;
    double seconds;
    double rtt_ms, available_bitrate, send_bitrate, receive_bitrate;
    double pair_changes; /* in the interval (since start: 0) */
    bool connected;      /* DTLS and ICE, as far as the report says */
    bool relay_tcp;      /* the local candidate in use is a TURN relay over TCP or TLS */
};

/* History of one stream (or the connection) from its earlier intervals. */
struct kh_q_state {
    double run_s[KH_QI_COUNT]; /* how long each condition has held, up to this interval */
    double max_height, max_fps; /* the best the stream has had */
};

struct kh_q_verdict {
    uint32_t warnings, bads; /* issue bits (1 << enum kh_q_issue) */
    enum kh_q_severity severity;
    double video_score; /* video streams: 1 to 5, NAN otherwise */
};

struct kh_q_thresholds;

struct kh_q_detector {
    const char *name;  /* quality_<name>_warning / _bad in the config */
    const char *title; /* what it means, for people */
    const char *unit;
    unsigned scope;
    bool lower_is_worse;
    double warning, bad; /* defaults; a flag detector has no configurable threshold */
    bool flag;
    double sustain_s; /* 0: judged on the interval alone */
    bool by_duration; /* the condition is value > 0; what is judged is how long it has held */
    /* The measured value, NAN when the interval has none (the detector does not apply). */
    double (*value)(const struct kh_q_interval *iv, const struct kh_q_conn *cn,
                    const struct kh_q_state *st, const struct kh_q_thresholds *th);
};

extern const struct kh_q_detector kh_q_detectors[KH_QI_COUNT];

struct kh_q_thresholds {
    double warning[KH_QI_COUNT], bad[KH_QI_COUNT];
    double bandwidth_headroom; /* quality_bandwidth_headroom: see bandwidth_limited */
};

/* The detectors' defaults. */
void kh_q_thresholds_default(struct kh_q_thresholds *th);

/* The scope bit of a stream. */
unsigned kh_q_scope(enum kh_q_kind kind, enum kh_q_dir dir);

/* Judges a stream's interval (cn NULL) or the connection's (iv NULL, scope
 * KH_QS_CONNECTION), advancing *st (zeroed for the first interval). */
void kh_q_judge(const struct kh_q_interval *iv, const struct kh_q_conn *cn, unsigned scope,
                const struct kh_q_thresholds *th, struct kh_q_state *st,
                struct kh_q_verdict *out);

/* The connection's interval from its transport in two reports (prev NULL: the first). */
void kh_q_conn_interval(const struct kh_q_transport *prev, const struct kh_q_transport *cur,
                        struct kh_q_conn *out);

#endif
