/*
 * emodel: the ITU-T G.107 E-model (06/2015 edition's equations, Annex B's MOS) as kohaku rates a
 * WebRTC audio stream on the narrowband scale. Pure arithmetic, unit-tested against the
 * recommendation's reference points (README, "Audio MOS").
 *
 * What is assumed, because a browser's stats cannot tell: every G.107 default (Table 3),
 * echo controlled by the browser's canceller (T = Tr = 0, so the talker and listener echo
 * terms stay at their default-free values: Id = Idle(0) + Idd(Ta)), random loss (BurstR 1),
 * no advantage factor (A 0). At all defaults R = 93.2062 (G.107 7.7: 93.2), MOS 4.41.
 */
#ifndef KH_EMODEL_H
#define KH_EMODEL_H

/* A codec's equipment impairment Ie, packet-loss robustness Bpl (G.113 Appendix I) and the
 * delay it adds (algorithmic look-ahead and packet time). */
struct kh_emodel_codec {
    const char *name;
    double ie;
    double bpl;
    double lookahead_ms;
    double ptime_ms;
};

/* The codec parameters for an RTP mime type ("audio/opus", "audio/PCMU" ..., any case);
 * unknown audio codecs get Opus's (the browsers' default). Never NULL. */
const struct kh_emodel_codec *kh_emodel_codec(const char *mime_type);

/* Idd(Ta), G.107 (7-27)/(7-28) with the default delay sensitivity (mT 100 ms, sT 1). */
double kh_emodel_idd(double ta_ms);
/* Ie,eff = Ie + (95 - Ie) * Ppl / (Ppl / BurstR + Bpl), (7-29); ppl in percent. */
double kh_emodel_ie_eff(const struct kh_emodel_codec *c, double ppl_percent, double burst_r);
/* R for a one-way mouth-to-ear delay ta_ms and a loss ppl_percent (BurstR 1). */
double kh_emodel_r(const struct kh_emodel_codec *c, double ta_ms, double ppl_percent);
/* MOS-CQE from R, G.107 Annex B (B-4), clamped to [1, 4.5]. */
double kh_emodel_mos(double r);
/* The one-way delay kohaku estimates for a stream: half the round trip, the receiver's
 * jitter-buffer delay, the packet time and the codec's look-ahead (all ms). */
double kh_emodel_mouth_to_ear(const struct kh_emodel_codec *c, double rtt_ms,
                              double jitter_buffer_ms);

#endif
