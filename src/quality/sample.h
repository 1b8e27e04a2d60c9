/*
 * sample: what the quality computation reads of one report: each RTP stream's counters and
 * gauges (inbound-rtp or outbound-rtp, with what the report links to it: the remote side's
 * view, the codec, the media source) and the connection's transport (the selected candidate
 * pair and its local candidate). Taken from the report's rows by member name, once per
 * report; nothing here allocates. A value the report does not carry is NAN.
 */
#ifndef KH_QUALITY_SAMPLE_H
#define KH_QUALITY_SAMPLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sora/report.h"

enum kh_q_kind { KH_Q_AUDIO, KH_Q_VIDEO };
enum kh_q_dir { KH_Q_IN, KH_Q_OUT };

/* One RTP stream in one report. Counters are cumulative since the stream began. */
struct kh_q_stream {
    struct kh_str stats_id;
    enum kh_q_kind kind;
    enum kh_q_dir dir;
    double ts_ms; /* the stats object's own timestamp (the client's clock) */
    double ssrc;
    /* counters */
    double bytes, packets, packets_lost, packets_discarded;
    double jb_delay, jb_emitted, concealed, samples;
    double frames, freezes, freeze_s, pauses, pause_s, codec_s; /* decode or encode time */
    double ql_bandwidth_s, ql_cpu_s, ql_other_s, ql_none_s;    /* qualityLimitationDurations */
    double remote_lost;  /* outbound: remote-inbound packetsLost ... */
    double remote_ts_ms; /* ... as of the RTCP report it came with (its timestamp) */
    /* gauges */
    double jitter_s, fps, width, height, target_bitrate;
    double rtt_s; /* remote-inbound (outbound) or remote-outbound (inbound) roundTripTime */
    double fraction_lost; /* outbound: remote-inbound fractionLost (the last RTCP interval) */
    double source_fps, source_width, source_height; /* outbound video: its media-source */
    struct kh_str mime_type;                          /* its codec's */
};

/* The connection's transport in one report. */
struct kh_q_transport {
    bool present;
    double ts_ms;
    double pair_rtt_s, available_outgoing_bitrate; /* the selected candidate pair */
    double bytes_sent, bytes_received;             /* of that pair */
    double pair_changes;                           /* selectedCandidatePairChanges */
    struct kh_str pair_id; /* the selected pair's stats id */
    struct kh_str dtls_state, ice_state, pair_state;
    struct kh_str local_type, relay_protocol; /* its local candidate */
};

#define KH_Q_MAX_STREAMS 64

/* Which WebRTC stack the stats come from, by what only it reports: Firefox marks its
 * candidate pairs `selected`; libwebrtc (Chromium and the browsers built on it, Safari, the
 * native SDKs) does not, and reports certificates. */
enum kh_q_browser { KH_Q_BROWSER_UNKNOWN, KH_Q_BROWSER_LIBWEBRTC, KH_Q_BROWSER_FIREFOX };

struct kh_q_report {
    struct kh_q_stream streams[KH_Q_MAX_STREAMS];
    size_t nstreams; /* beyond KH_Q_MAX_STREAMS, streams are not rated */
    struct kh_q_transport transport;
    enum kh_q_browser browser;
};

/* Looks up the member indexes it reads. Call once after kh_schema_init; 0 or KH_ENOMEM. */
int kh_q_sample_init(void);
/* Every value of s unknown (NAN), no codec. */
void kh_q_stream_blank(struct kh_q_stream *s);
/* Fills out from r's rows. */
void kh_q_sample_report(const struct kh_report *r, struct kh_q_report *out);

#endif
