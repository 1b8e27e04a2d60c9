/*
 * interval: one RTP stream's quality over one interval, between the previous report's sample
 * of the stream and this report's, or, for a stream seen for the first time, since it began
 * (what cumulative counters allow on their own; bitrates and rates need two samples and stay
 * NAN). A counter that went down (a reset) gives NAN for what it feeds, never a spike. Pure
 * arithmetic (README, "Quality").
 */
#ifndef KH_QUALITY_INTERVAL_H
#define KH_QUALITY_INTERVAL_H

#include <stdbool.h>

#include "quality/sample.h"

struct kh_q_interval {
    bool since_start;
    double seconds;                  /* client time between the two samples */
    double bitrate, packet_rate;     /* bits/s, packets/s */
    double loss_percent;             /* lost (and discarded as late) of the packets expected */
    double expected_packets;         /* what loss_percent is a share of */
    double jitter_ms;                /* the receiver's (outbound: the remote's) */
    double rtt_ms;                   /* the stream's RTCP round trip, else the pair's */
    double jitter_buffer_ms;         /* per emitted sample or frame (inbound) */
    double concealment_percent;      /* concealed of the samples received (inbound audio) */
    double fps, width, height;
    double source_fps, source_width, source_height; /* outbound video: what is captured */
    double freezes, freeze_seconds, pauses, pause_seconds; /* inbound video */
    double codec_ms_per_frame;       /* decode (inbound) or encode (outbound) time per frame */
    double limit_bandwidth, limit_cpu, limit_other; /* shares of the interval, 0 to 1 */
    double available_bitrate;        /* the pair's availableOutgoingBitrate */
    double transport_send_bitrate;   /* what the pair sent, all streams together */
    double r_factor;                 /* audio: G.107 R of this direction ... */
    double mos;                      /* ... and its MOS */
};

/* The interval of cur after prev (NULL: since the stream began). tr and tr_prev (either may
 * be NULL) are the connection's transport in the same two reports. */
void kh_q_interval(const struct kh_q_stream *prev, const struct kh_q_stream *cur,
                   const struct kh_q_transport *tr_prev, const struct kh_q_transport *tr,
                   struct kh_q_interval *out);

#endif
