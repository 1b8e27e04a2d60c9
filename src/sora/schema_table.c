/*
 * schema_table: everything kohaku stores, declaratively. Each stats table is a list of W3C
 * webrtc-stats dictionaries (Editor's Draft), its base dictionaries first (RTCRtpStreamStats,
 * RTCReceivedRtpStreamStats ... each written once), then its own, then the members the
 * project's browser fixtures carry that the draft does not have (legacy or vendor ones, in a
 * "browsers" group). kh_schema_init flattens a table's dictionaries into its columns, in
 * that order. Types: unsigned long / long long / unsigned long long -> INT, double and
 * DOMHighResTimeStamp -> REAL, DOMString and enums -> TEXT, boolean -> BOOL, records -> JSON.
 * The common members type, id and timestamp are stored in stats_type, stats_id and
 * stats_timestamp and are not listed. A member added later carries the schema version that
 * adds its column as a third field; its column comes after those of earlier versions,
 * whatever dictionary it is in (ALTER TABLE ADD COLUMN puts it at the end).
 * Then the envelope tables (sora_connection, sora_node, sora_report), column by column, and
 * those of Sora's session and event webhooks (sora_webhook, sora_session,
 * sora_connection_lifecycle; schema version 6). Nothing here is code: schema.c derives the
 * rest.
 */
#include "sora/schema.h"

#include "sora/report.h"

#define N(a) (sizeof(a) / sizeof(a[0]))
#define DICT(name, arr) {name, true, arr, N(arr)}
/* Members browsers send that the W3C draft does not have (legacy, vendor, removed). */
#define BROWSERS(arr) {"browsers", false, arr, N(arr)}

/* --- base dictionaries, each written once ----------------------------------------------- */

static const struct kh_member rtp_stream[] = {
    {"ssrc", KH_COL_INT},
    {"kind", KH_COL_TEXT},
    {"transportId", KH_COL_TEXT},
    {"codecId", KH_COL_TEXT},
};
static const struct kh_stats_dict rtp_stream_dict = DICT("RTCRtpStreamStats", rtp_stream);

static const struct kh_member received_rtp_stream[] = {
    {"packetsReceived", KH_COL_INT},
    {"packetsReceivedWithEct1", KH_COL_INT},
    {"packetsReceivedWithCe", KH_COL_INT},
    {"packetsReportedAsLost", KH_COL_INT},
    {"packetsReportedAsLostButRecovered", KH_COL_INT},
    {"packetsLost", KH_COL_INT},
    {"jitter", KH_COL_REAL},
};
static const struct kh_stats_dict received_rtp_stream_dict =
    DICT("RTCReceivedRtpStreamStats", received_rtp_stream);

static const struct kh_member sent_rtp_stream[] = {
    {"packetsSent", KH_COL_INT},
    {"bytesSent", KH_COL_INT},
};
static const struct kh_stats_dict sent_rtp_stream_dict =
    DICT("RTCSentRtpStreamStats", sent_rtp_stream);

/* The legacy alias of kind, in every RTP stream table of the fixtures */
static const struct kh_member legacy_rtp_stream[] = {
    {"mediaType", KH_COL_TEXT},
};
static const struct kh_stats_dict legacy_rtp_stream_dict = BROWSERS(legacy_rtp_stream);

static const struct kh_member media_source[] = {
    {"trackIdentifier", KH_COL_TEXT},
    {"kind", KH_COL_TEXT},
};
static const struct kh_stats_dict media_source_dict = DICT("RTCMediaSourceStats", media_source);

/* --- the tables' own dictionaries ------------------------------------------------------- */

static const struct kh_member codec[] = {
    {"payloadType", KH_COL_INT},  {"transportId", KH_COL_TEXT}, {"mimeType", KH_COL_TEXT},
    {"clockRate", KH_COL_INT},    {"channels", KH_COL_INT},     {"sdpFmtpLine", KH_COL_TEXT},
};
static const struct kh_member codec_browsers[] = {
    {"codecType", KH_COL_TEXT}, /* Firefox; removed from the spec */
};

static const struct kh_member inbound_rtp[] = {
    {"trackIdentifier", KH_COL_TEXT},
    {"mid", KH_COL_TEXT},
    {"remoteId", KH_COL_TEXT},
    {"framesDecoded", KH_COL_INT},
    {"keyFramesDecoded", KH_COL_INT},
    {"framesRendered", KH_COL_INT},
    {"framesDropped", KH_COL_INT},
    {"frameWidth", KH_COL_INT},
    {"frameHeight", KH_COL_INT},
    {"framesPerSecond", KH_COL_REAL},
    {"qpSum", KH_COL_INT},
    {"totalDecodeTime", KH_COL_REAL},
    {"totalInterFrameDelay", KH_COL_REAL},
    {"totalSquaredInterFrameDelay", KH_COL_REAL},
    {"pauseCount", KH_COL_INT},
    {"totalPausesDuration", KH_COL_REAL},
    {"freezeCount", KH_COL_INT},
    {"totalFreezesDuration", KH_COL_REAL},
    {"lastPacketReceivedTimestamp", KH_COL_REAL},
    {"headerBytesReceived", KH_COL_INT},
    {"packetsDiscarded", KH_COL_INT},
    {"fecBytesReceived", KH_COL_INT},
    {"fecPacketsReceived", KH_COL_INT},
    {"fecPacketsDiscarded", KH_COL_INT},
    {"bytesReceived", KH_COL_INT},
    {"nackCount", KH_COL_INT},
    {"firCount", KH_COL_INT},
    {"pliCount", KH_COL_INT},
    {"totalProcessingDelay", KH_COL_REAL},
    {"estimatedPlayoutTimestamp", KH_COL_REAL},
    {"jitterBufferDelay", KH_COL_REAL},
    {"jitterBufferTargetDelay", KH_COL_REAL},
    {"jitterBufferEmittedCount", KH_COL_INT},
    {"jitterBufferMinimumDelay", KH_COL_REAL},
    {"totalSamplesReceived", KH_COL_INT},
    {"concealedSamples", KH_COL_INT},
    {"silentConcealedSamples", KH_COL_INT},
    {"concealmentEvents", KH_COL_INT},
    {"insertedSamplesForDeceleration", KH_COL_INT},
    {"removedSamplesForAcceleration", KH_COL_INT},
    {"audioLevel", KH_COL_REAL},
    {"totalAudioEnergy", KH_COL_REAL},
    {"totalSamplesDuration", KH_COL_REAL},
    {"framesReceived", KH_COL_INT},
    {"decoderImplementation", KH_COL_TEXT},
    {"playoutId", KH_COL_TEXT},
    {"powerEfficientDecoder", KH_COL_BOOL},
    {"framesAssembledFromMultiplePackets", KH_COL_INT},
    {"totalAssemblyTime", KH_COL_REAL},
    {"retransmittedPacketsReceived", KH_COL_INT},
    {"retransmittedBytesReceived", KH_COL_INT},
    {"rtxSsrc", KH_COL_INT},
    {"fecSsrc", KH_COL_INT},
    {"totalCorruptionProbability", KH_COL_REAL},
    {"totalSquaredCorruptionProbability", KH_COL_REAL},
    {"corruptionMeasurements", KH_COL_INT},
};
static const struct kh_member inbound_rtp_browsers[] = {
    {"discardedPackets", KH_COL_INT},     /* Firefox legacy */
    {"googTimingFrameInfo", KH_COL_TEXT}, /* Chromium, non-standard */
};

static const struct kh_member outbound_rtp[] = {
    {"packetsSentWithEct1", KH_COL_INT},
    {"mid", KH_COL_TEXT},
    {"mediaSourceId", KH_COL_TEXT},
    {"remoteId", KH_COL_TEXT},
    {"rid", KH_COL_TEXT},
    {"encodingIndex", KH_COL_INT},
    {"headerBytesSent", KH_COL_INT},
    {"retransmittedPacketsSent", KH_COL_INT},
    {"retransmittedBytesSent", KH_COL_INT},
    {"rtxSsrc", KH_COL_INT},
    {"targetBitrate", KH_COL_REAL},
    {"totalEncodedBytesTarget", KH_COL_INT},
    {"frameWidth", KH_COL_INT},
    {"frameHeight", KH_COL_INT},
    {"framesPerSecond", KH_COL_REAL},
    {"framesSent", KH_COL_INT},
    {"hugeFramesSent", KH_COL_INT},
    {"framesEncoded", KH_COL_INT},
    {"keyFramesEncoded", KH_COL_INT},
    {"qpSum", KH_COL_INT},
    {"psnrSum", KH_COL_JSON},
    {"psnrMeasurements", KH_COL_INT},
    {"totalEncodeTime", KH_COL_REAL},
    {"totalPacketSendDelay", KH_COL_REAL},
    {"qualityLimitationReason", KH_COL_TEXT},
    {"qualityLimitationDurations", KH_COL_JSON},
    {"qualityLimitationResolutionChanges", KH_COL_INT},
    {"nackCount", KH_COL_INT},
    {"firCount", KH_COL_INT},
    {"pliCount", KH_COL_INT},
    {"encoderImplementation", KH_COL_TEXT},
    {"powerEfficientEncoder", KH_COL_BOOL},
    {"active", KH_COL_BOOL},
    {"scalabilityMode", KH_COL_TEXT},
};

static const struct kh_member remote_inbound_rtp[] = {
    {"localId", KH_COL_TEXT},
    {"roundTripTime", KH_COL_REAL},
    {"totalRoundTripTime", KH_COL_REAL},
    {"fractionLost", KH_COL_REAL},
    {"roundTripTimeMeasurements", KH_COL_INT},
    {"packetsWithBleachedEct1Marking", KH_COL_INT},
};

static const struct kh_member remote_outbound_rtp[] = {
    {"localId", KH_COL_TEXT},
    {"remoteTimestamp", KH_COL_REAL},
    {"reportsSent", KH_COL_INT},
    {"roundTripTime", KH_COL_REAL},
    {"totalRoundTripTime", KH_COL_REAL},
    {"roundTripTimeMeasurements", KH_COL_INT},
};

static const struct kh_member audio_source[] = {
    {"audioLevel", KH_COL_REAL},           {"totalAudioEnergy", KH_COL_REAL},
    {"totalSamplesDuration", KH_COL_REAL}, {"echoReturnLoss", KH_COL_REAL},
    {"echoReturnLossEnhancement", KH_COL_REAL},
};

static const struct kh_member video_source[] = {
    {"width", KH_COL_INT},
    {"height", KH_COL_INT},
    {"frames", KH_COL_INT},
    {"framesPerSecond", KH_COL_REAL},
};

static const struct kh_member audio_playout[] = {
    {"kind", KH_COL_TEXT},
    {"synthesizedSamplesDuration", KH_COL_REAL},
    {"synthesizedSamplesEvents", KH_COL_INT},
    {"totalSamplesDuration", KH_COL_REAL},
    {"totalPlayoutDelay", KH_COL_REAL},
    {"totalSamplesCount", KH_COL_INT},
};

static const struct kh_member peer_connection[] = {
    {"dataChannelsOpened", KH_COL_INT},
    {"dataChannelsClosed", KH_COL_INT},
};

static const struct kh_member data_channel[] = {
    {"label", KH_COL_TEXT},           {"protocol", KH_COL_TEXT},
    {"dataChannelIdentifier", KH_COL_INT}, {"state", KH_COL_TEXT},
    {"messagesSent", KH_COL_INT},     {"bytesSent", KH_COL_INT},
    {"messagesReceived", KH_COL_INT}, {"bytesReceived", KH_COL_INT},
};

static const struct kh_member transport[] = {
    {"packetsSent", KH_COL_INT},
    {"packetsReceived", KH_COL_INT},
    {"bytesSent", KH_COL_INT},
    {"bytesReceived", KH_COL_INT},
    {"iceRole", KH_COL_TEXT},
    {"iceLocalUsernameFragment", KH_COL_TEXT},
    {"dtlsState", KH_COL_TEXT},
    {"iceState", KH_COL_TEXT},
    {"selectedCandidatePairId", KH_COL_TEXT},
    {"localCertificateId", KH_COL_TEXT},
    {"remoteCertificateId", KH_COL_TEXT},
    {"tlsVersion", KH_COL_TEXT},
    {"dtlsCipher", KH_COL_TEXT},
    {"dtlsRole", KH_COL_TEXT},
    {"srtpCipher", KH_COL_TEXT},
    {"selectedCandidatePairChanges", KH_COL_INT},
    {"ccfbMessagesSent", KH_COL_INT},
    {"ccfbMessagesReceived", KH_COL_INT},
};

static const struct kh_member ice_candidate_pair[] = {
    {"transportId", KH_COL_TEXT},
    {"localCandidateId", KH_COL_TEXT},
    {"remoteCandidateId", KH_COL_TEXT},
    {"state", KH_COL_TEXT},
    {"nominated", KH_COL_BOOL},
    {"packetsSent", KH_COL_INT},
    {"packetsReceived", KH_COL_INT},
    {"bytesSent", KH_COL_INT},
    {"bytesReceived", KH_COL_INT},
    {"lastPacketSentTimestamp", KH_COL_REAL},
    {"lastPacketReceivedTimestamp", KH_COL_REAL},
    {"totalRoundTripTime", KH_COL_REAL},
    {"currentRoundTripTime", KH_COL_REAL},
    {"availableOutgoingBitrate", KH_COL_REAL},
    {"availableIncomingBitrate", KH_COL_REAL},
    {"requestsReceived", KH_COL_INT},
    {"requestsSent", KH_COL_INT},
    {"responsesReceived", KH_COL_INT},
    {"responsesSent", KH_COL_INT},
    {"consentRequestsSent", KH_COL_INT},
    {"packetsDiscardedOnSend", KH_COL_INT},
    {"bytesDiscardedOnSend", KH_COL_INT},
};
static const struct kh_member ice_candidate_pair_browsers[] = {
    {"priority", KH_COL_INT},  /* removed from the spec; above 2^53 */
    {"writable", KH_COL_BOOL}, /* Chromium, legacy */
    {"readable", KH_COL_BOOL}, /* Firefox, non-standard */
    {"selected", KH_COL_BOOL}, /* Firefox, non-standard */
};

/* local-candidate and remote-candidate */
static const struct kh_member ice_candidate[] = {
    {"transportId", KH_COL_TEXT},
    {"address", KH_COL_TEXT},
    {"port", KH_COL_INT},
    {"protocol", KH_COL_TEXT},
    {"candidateType", KH_COL_TEXT},
    {"priority", KH_COL_INT},
    {"url", KH_COL_TEXT},
    {"relayProtocol", KH_COL_TEXT},
    {"foundation", KH_COL_TEXT},
    {"relatedAddress", KH_COL_TEXT},
    {"relatedPort", KH_COL_INT},
    {"usernameFragment", KH_COL_TEXT},
    {"tcpType", KH_COL_TEXT},
};
static const struct kh_member ice_candidate_browsers[] = {
    {"ip", KH_COL_TEXT},          /* Chromium; deprecated alias of address */
    {"isRemote", KH_COL_BOOL},    /* Chromium, legacy */
    {"networkType", KH_COL_TEXT}, /* Chromium, legacy */
};

static const struct kh_member certificate[] = {
    {"fingerprint", KH_COL_TEXT},
    {"fingerprintAlgorithm", KH_COL_TEXT},
    {"base64Certificate", KH_COL_TEXT},
    {"issuerCertificateId", KH_COL_TEXT},
};

/* Sora's node.erlang-vm report: byte counts of erlang:memory(). */
static const struct kh_member erlang_vm_memory[] = {
    {"total", KH_COL_INT},  {"processes", KH_COL_INT}, {"processes_used", KH_COL_INT},
    {"system", KH_COL_INT}, {"atom", KH_COL_INT},      {"atom_used", KH_COL_INT},
    {"binary", KH_COL_INT}, {"code", KH_COL_INT},      {"ets", KH_COL_INT},
};

/* --- the tables: each a list of dictionaries, base ones first ------------------------------ */

#define OWN(var, name, arr) static const struct kh_stats_dict var = DICT(name, arr)
OWN(codec_dict, "RTCCodecStats", codec);
OWN(inbound_rtp_dict, "RTCInboundRtpStreamStats", inbound_rtp);
OWN(outbound_rtp_dict, "RTCOutboundRtpStreamStats", outbound_rtp);
OWN(remote_inbound_rtp_dict, "RTCRemoteInboundRtpStreamStats", remote_inbound_rtp);
OWN(remote_outbound_rtp_dict, "RTCRemoteOutboundRtpStreamStats", remote_outbound_rtp);
OWN(audio_source_dict, "RTCAudioSourceStats", audio_source);
OWN(video_source_dict, "RTCVideoSourceStats", video_source);
OWN(audio_playout_dict, "RTCAudioPlayoutStats", audio_playout);
OWN(peer_connection_dict, "RTCPeerConnectionStats", peer_connection);
OWN(data_channel_dict, "RTCDataChannelStats", data_channel);
OWN(transport_dict, "RTCTransportStats", transport);
OWN(ice_candidate_pair_dict, "RTCIceCandidatePairStats", ice_candidate_pair);
OWN(ice_candidate_dict, "RTCIceCandidateStats", ice_candidate);
OWN(certificate_dict, "RTCCertificateStats", certificate);
static const struct kh_stats_dict erlang_vm_memory_dict = {"Sora erlang-vm-memory", false,
                                                           erlang_vm_memory, N(erlang_vm_memory)};
static const struct kh_stats_dict codec_browsers_dict = BROWSERS(codec_browsers);
static const struct kh_stats_dict inbound_rtp_browsers_dict = BROWSERS(inbound_rtp_browsers);
static const struct kh_stats_dict ice_candidate_pair_browsers_dict =
    BROWSERS(ice_candidate_pair_browsers);
static const struct kh_stats_dict ice_candidate_browsers_dict = BROWSERS(ice_candidate_browsers);

/* --- kohaku's own: the quality tables (schema version 5) ----------------------------------
 * Rows kohaku computes from two consecutive reports of a connection (quality/assess.c); the
 * README's "Quality" section says how. Units are in the names; NULL where a value does not
 * apply or is not known. Each group's members carry what they are for the docs. */
#define Q(name, type, doc) {name, type, 0, doc}

static const struct kh_member q_stream_interval[] = {
    Q("kind", KH_COL_TEXT, "`audio` or `video`"),
    Q("ssrc", KH_COL_INT, "the stream's SSRC"),
    Q("mimeType", KH_COL_TEXT, "its codec's `mimeType`"),
    Q("sinceStart", KH_COL_BOOL,
      "true when no earlier sample of the stream was found: the values are averages since the "
      "stream began, and what needs two samples (rates) is NULL"),
    Q("seconds", KH_COL_REAL, "the interval, by the client's clock"),
    Q("bitrate", KH_COL_REAL, "bits/s of RTP payload received (inbound) or sent (outbound)"),
    Q("packetRate", KH_COL_REAL, "packets/s"),
    Q("lossPercent", KH_COL_REAL,
      "inbound: packets lost or discarded of those expected; outbound: lost as the remote "
      "reports, of those sent between its two RTCP receiver reports"),
    Q("expectedPackets", KH_COL_REAL, "the packets `loss_percent` is a share of"),
    Q("jitterMs", KH_COL_REAL, "interarrival jitter, ms (outbound: the remote's)"),
    Q("roundTripTimeMs", KH_COL_REAL,
      "the stream's RTCP round trip (remote-inbound or remote-outbound), else the selected "
      "candidate pair's, ms (NULL where the report's is negative)"),
    Q("jitterBufferMs", KH_COL_REAL, "jitter-buffer delay per emitted sample or frame, ms"),
    Q("concealmentPercent", KH_COL_REAL, "inbound audio: concealed samples of those received"),
    Q("framesPerSecond", KH_COL_REAL, "frames decoded (inbound) or encoded (outbound) per second"),
    Q("sourceFramesPerSecond", KH_COL_REAL, "outbound video: frames per second captured"),
    Q("frameWidth", KH_COL_INT, "video"),
    Q("frameHeight", KH_COL_INT, "video"),
    Q("sourceFrameHeight", KH_COL_INT, "outbound video: the captured height"),
    Q("freezes", KH_COL_INT, "inbound video: freezes in the interval"),
    Q("freezeSeconds", KH_COL_REAL, "inbound video: time frozen in the interval"),
    Q("pauses", KH_COL_INT, "inbound video: pauses in the interval"),
    Q("pauseSeconds", KH_COL_REAL, "inbound video: time paused in the interval"),
    Q("codecMsPerFrame", KH_COL_REAL, "decode (inbound) or encode (outbound) time per frame, ms"),
    Q("limitationBandwidthPercent", KH_COL_REAL,
      "outbound video: share of the interval limited by bandwidth"),
    Q("limitationCpuPercent", KH_COL_REAL, "outbound video: share limited by CPU"),
    Q("limitationOtherPercent", KH_COL_REAL, "outbound video: share limited otherwise"),
    Q("availableBitrate", KH_COL_REAL, "the selected pair's `availableOutgoingBitrate`"),
};
static const struct kh_member q_stream_rating[] = {
    Q("rFactor", KH_COL_REAL, "audio: the G.107 E-model's R"),
    Q("mos", KH_COL_REAL, "audio: the MOS from R (1 to 4.5)"),
    Q("videoScore", KH_COL_REAL, "video: kohaku's video score, 1 to 5 (not a MOS)"),
    Q("severity", KH_COL_INT, "the worst issue: 0 none, 1 warning, 2 bad"),
    Q("issues", KH_COL_JSON,
      "the issues found: an object keyed by issue name, each with `severity`, `value` and "
      "`began` (the span's start)"),
};
/* The sample the interval ends at, which the next interval starts from (read back when the
 * previous report reached another kohaku instance or came before a restart). */
static const struct kh_member q_stream_state[] = {
    Q("bestFrameHeight", KH_COL_REAL, "state: the highest the stream has had"),
    Q("bestFramesPerSecond", KH_COL_REAL, "state: the best frame rate the stream has had"),
    Q("state", KH_COL_JSON, "state: how long each condition has held, when each span began"),
    Q("sampleBytes", KH_COL_REAL, "state: cumulative counter"),
    Q("samplePackets", KH_COL_REAL, "state: cumulative counter"),
    Q("samplePacketsLost", KH_COL_REAL, "state: cumulative counter"),
    Q("samplePacketsDiscarded", KH_COL_REAL, "state: cumulative counter"),
    Q("sampleJitterBufferDelay", KH_COL_REAL, "state: cumulative counter"),
    Q("sampleJitterBufferEmitted", KH_COL_REAL, "state: cumulative counter"),
    Q("sampleConcealedSamples", KH_COL_REAL, "state: cumulative counter"),
    Q("sampleTotalSamples", KH_COL_REAL, "state: cumulative counter"),
    Q("sampleFrames", KH_COL_REAL, "state: cumulative counter"),
    Q("sampleFreezes", KH_COL_REAL, "state: cumulative counter"),
    Q("sampleFreezeSeconds", KH_COL_REAL, "state: cumulative counter"),
    Q("samplePauses", KH_COL_REAL, "state: cumulative counter"),
    Q("samplePauseSeconds", KH_COL_REAL, "state: cumulative counter"),
    Q("sampleCodecSeconds", KH_COL_REAL, "state: cumulative decode or encode time"),
    Q("sampleLimitationBandwidth", KH_COL_REAL, "state: cumulative seconds"),
    Q("sampleLimitationCpu", KH_COL_REAL, "state: cumulative seconds"),
    Q("sampleLimitationOther", KH_COL_REAL, "state: cumulative seconds"),
    Q("sampleLimitationNone", KH_COL_REAL, "state: cumulative seconds"),
    Q("sampleRemotePacketsLost", KH_COL_REAL, "state: the remote's cumulative count"),
    Q("sampleRemoteTimestamp", KH_COL_REAL, "state: the RTCP report it came with"),
};
static const struct kh_member q_conn_interval[] = {
    Q("sinceStart", KH_COL_BOOL, "true when no earlier report of the connection was found"),
    Q("seconds", KH_COL_REAL, "the interval, by the client's clock"),
    Q("roundTripTimeMs", KH_COL_REAL,
      "the selected candidate pair's current round trip, ms (NULL where it is negative)"),
    Q("availableBitrate", KH_COL_REAL, "its `availableOutgoingBitrate`, bits/s"),
    Q("sendBitrate", KH_COL_REAL, "bits/s the pair sent (every stream, headers included)"),
    Q("receiveBitrate", KH_COL_REAL, "bits/s the pair received"),
    Q("pairChanges", KH_COL_INT, "changes of the selected candidate pair in the interval"),
    Q("connected", KH_COL_BOOL, "ICE and DTLS connected, as far as the report says"),
    Q("relayTcp", KH_COL_BOOL, "the local candidate in use is a TURN relay over TCP or TLS"),
    Q("candidatePairId", KH_COL_TEXT, "the selected candidate pair's `id`"),
    Q("localCandidateType", KH_COL_TEXT, "its local candidate's `candidateType`"),
    Q("relayProtocol", KH_COL_TEXT, "its local candidate's `relayProtocol`"),
    Q("browser", KH_COL_TEXT,
      "the WebRTC stack by what only it reports: `firefox` (candidate pairs marked "
      "`selected`), `libwebrtc` (Chromium-based browsers, Safari, native SDKs: certificates, "
      "no `selected`), NULL when neither shows"),
};
static const struct kh_member q_conn_rating[] = {
    Q("severity", KH_COL_INT, "the worst of the connection's and its streams' issues"),
    Q("severityOutbound", KH_COL_INT, "the worst of its outbound streams' (its uplink)"),
    Q("severityInbound", KH_COL_INT, "the worst of its inbound streams' (what it receives)"),
    Q("issues", KH_COL_JSON, "the connection's own issues, as in `quality_stream`"),
    Q("issueNames", KH_COL_TEXT, "every issue of the report, streams' too, space-separated"),
    Q("streams", KH_COL_INT, "the RTP streams rated"),
    Q("mosMin", KH_COL_REAL, "the lowest audio MOS of the report, either direction"),
    Q("mosAvg", KH_COL_REAL, "the mean audio MOS of the report's audio streams"),
    Q("videoScoreMin", KH_COL_REAL, "the lowest video score of the report"),
};
static const struct kh_member q_conn_state[] = {
    Q("state", KH_COL_JSON, "state: how long each condition has held, when each span began"),
    Q("sampleBytesSent", KH_COL_REAL, "state: the pair's cumulative count"),
    Q("sampleBytesReceived", KH_COL_REAL, "state: the pair's cumulative count"),
    Q("samplePairChanges", KH_COL_REAL, "state: `selectedCandidatePairChanges`"),
};
#define KOHAKU(var, name, arr) static const struct kh_stats_dict var = {name, false, arr, N(arr)}
KOHAKU(q_stream_interval_dict, "kohaku: the interval", q_stream_interval);
KOHAKU(q_stream_rating_dict, "kohaku: the rating", q_stream_rating);
KOHAKU(q_stream_state_dict, "kohaku: the next interval's start", q_stream_state);
KOHAKU(q_conn_interval_dict, "kohaku: the interval", q_conn_interval);
KOHAKU(q_conn_rating_dict, "kohaku: the rating", q_conn_rating);
KOHAKU(q_conn_state_dict, "kohaku: the next interval's start", q_conn_state);

/* NULL-terminated lists: a table's columns are its dictionaries' members in this order. */
#define DICTS(...) ((const struct kh_stats_dict *const[]){__VA_ARGS__, NULL})
#define T(tbl, ty, ty2, kd, ...)                                                               \
    {.table = tbl, .type = ty, .type2 = ty2, .kind = kd, .scope = KH_SCOPE_CONNECTION,         \
     .dicts = DICTS(__VA_ARGS__), .since = 1}

const struct kh_stats_table kh_stats_table_defs[] = {
    T("rtc_codec_stats", "codec", NULL, NULL, &codec_dict, &codec_browsers_dict),
    T("rtc_inbound_rtp_stream_stats", "inbound-rtp", NULL, NULL, &rtp_stream_dict,
      &received_rtp_stream_dict, &inbound_rtp_dict, &legacy_rtp_stream_dict,
      &inbound_rtp_browsers_dict),
    T("rtc_outbound_rtp_stream_stats", "outbound-rtp", NULL, NULL, &rtp_stream_dict,
      &sent_rtp_stream_dict, &outbound_rtp_dict, &legacy_rtp_stream_dict),
    T("rtc_remote_inbound_rtp_stream_stats", "remote-inbound-rtp", NULL, NULL, &rtp_stream_dict,
      &received_rtp_stream_dict, &remote_inbound_rtp_dict, &legacy_rtp_stream_dict),
    T("rtc_remote_outbound_rtp_stream_stats", "remote-outbound-rtp", NULL, NULL,
      &rtp_stream_dict, &sent_rtp_stream_dict, &remote_outbound_rtp_dict,
      &legacy_rtp_stream_dict),
    T("rtc_audio_source_stats", "media-source", NULL, "audio", &media_source_dict,
      &audio_source_dict),
    T("rtc_video_source_stats", "media-source", NULL, "video", &media_source_dict,
      &video_source_dict),
    T("rtc_audio_playout_stats", "media-playout", NULL, NULL, &audio_playout_dict),
    T("rtc_peer_connection_stats", "peer-connection", NULL, NULL, &peer_connection_dict),
    T("rtc_data_channel_stats", "data-channel", NULL, NULL, &data_channel_dict),
    T("rtc_transport_stats", "transport", NULL, NULL, &transport_dict),
    T("rtc_ice_candidate_pair_stats", "candidate-pair", NULL, NULL, &ice_candidate_pair_dict,
      &ice_candidate_pair_browsers_dict),
    T("rtc_ice_candidate_stats", "local-candidate", "remote-candidate", NULL,
      &ice_candidate_dict, &ice_candidate_browsers_dict),
    T("rtc_certificate_stats", "certificate", NULL, NULL, &certificate_dict),
    {.table = "rtc_other_stats", .scope = KH_SCOPE_CONNECTION, .dicts = DICTS(NULL), .since = 1},
    {.table = "erlang_vm_memory_stats", .type = "erlang-vm-memory", .scope = KH_SCOPE_NODE,
     .dicts = DICTS(&erlang_vm_memory_dict), .since = 1},
    /* node.erlang-vm items of any other type, all members in extra (schema version 4) */
    {.table = "node_other_stats", .scope = KH_SCOPE_NODE_ITEM, .dicts = DICTS(NULL),
     .since = 4},
    {.table = "quality_stream", .scope = KH_SCOPE_CONNECTION, .computed = true,
     .about = "Kohaku's rating of one RTP stream over one interval: a row per stream "
              "(`stats_type`, `stats_id` and `stats_timestamp` are the inbound-rtp or "
              "outbound-rtp object's) per report",
     .dicts = DICTS(&q_stream_interval_dict, &q_stream_rating_dict, &q_stream_state_dict),
     .since = 5},
    {.table = "quality_connection", .scope = KH_SCOPE_CONNECTION, .computed = true,
     .about = "Kohaku's rating of a connection over one interval: a row per report "
              "(`stats_type` and `stats_id` are `connection`, `stats_timestamp` the "
              "transport's), its transport and the worst of its streams",
     .dicts = DICTS(&q_conn_interval_dict, &q_conn_rating_dict, &q_conn_state_dict),
     .since = 5},
};

const size_t kh_stats_ntables = N(kh_stats_table_defs);
const int kh_table_other = 14;
const int kh_table_erlang_vm_memory = 15;
const int kh_table_node_other = 16;
const int kh_table_quality_stream = 17;
const int kh_table_quality_connection = 18;

/* The envelope tables. Column order is the tables' order in the database (created by schema
 * versions 1 and 2); a column added later goes at the end, with a migration of its own. */
#define ENV(name, type, not_null, src, merge) {name, type, not_null, src, KH_MERGE_##merge}
#define VERDICT(name, type, src, merge, doc) {name, type, false, src, KH_MERGE_##merge, doc, 7}

/* One row per connection_id, upserted by each of its reports: the connection's ids and
 * flags as its first stored report had them (they do not change), a bundle_id once one is
 * known, first_seen the earliest report, last_seen the newest. (PRIMARY KEY stands in the
 * DDL for connection_id's NOT NULL.) */
static const struct kh_env_column connection_cols[] = {
    ENV("connection_id", KH_COL_TEXT, true, KH_SRC_CONNECTION_ID, KEEP),
    ENV("channel_id", KH_COL_TEXT, true, KH_SRC_CHANNEL_ID, KEEP),
    ENV("session_id", KH_COL_TEXT, true, KH_SRC_SESSION_ID, KEEP),
    ENV("client_id", KH_COL_TEXT, true, KH_SRC_CLIENT_ID, KEEP),
    ENV("bundle_id", KH_COL_TEXT, false, KH_SRC_BUNDLE_ID, COALESCE),
    ENV("role", KH_COL_TEXT, true, KH_SRC_ROLE, KEEP),
    ENV("multistream", KH_COL_BOOL, false, KH_SRC_MULTISTREAM, KEEP),
    ENV("simulcast", KH_COL_BOOL, false, KH_SRC_SIMULCAST, KEEP),
    ENV("spotlight", KH_COL_BOOL, false, KH_SRC_SPOTLIGHT, KEEP),
    ENV("label", KH_COL_TEXT, true, KH_SRC_LABEL, KEEP),
    ENV("version", KH_COL_TEXT, true, KH_SRC_VERSION, KEEP),
    ENV("node_name", KH_COL_TEXT, true, KH_SRC_NODE_NAME, KEEP),
    ENV("first_seen", KH_COL_TIME, true, KH_SRC_TIME, MIN),
    ENV("last_seen", KH_COL_TIME, true, KH_SRC_TIME, MAX),
    /* Schema version 7: the connection's verdict so far, merged from each report's rating
     * (its quality_connection row) with MAX, MIN and FILL alone, so that it is the same
     * whichever instance stored which report, in whatever order, and a redelivery changes
     * nothing. The connection list and the worst connections read it: 10,000 rows, not every
     * quality row of the range. */
    VERDICT("severity", KH_COL_INT, KH_SRC_Q_SEVERITY, MAX,
            "the worst `quality_connection.severity` of its reports: 0 ok, 1 warning, 2 bad; "
            "NULL while none was rated"),
    VERDICT("severity_outbound", KH_COL_INT, KH_SRC_Q_SEVERITY_OUTBOUND, MAX,
            "the worst `severity_outbound` (its uplink)"),
    VERDICT("severity_inbound", KH_COL_INT, KH_SRC_Q_SEVERITY_INBOUND, MAX,
            "the worst `severity_inbound` (what it received)"),
    VERDICT("mos_min", KH_COL_REAL, KH_SRC_Q_MOS_MIN, MIN, "the lowest `mos_min` of its reports"),
    VERDICT("video_score_min", KH_COL_REAL, KH_SRC_Q_VIDEO_SCORE_MIN, MIN,
            "the lowest `video_score_min`"),
    VERDICT("browser", KH_COL_TEXT, KH_SRC_Q_BROWSER, FILL,
            "the first `quality_connection.browser` known"),
    /* Schema version 9: last_seen's hour, indexed in place of last_seen. last_seen changes
     * with every report, and an index on it made every upsert write each index of the row
     * and a new row version elsewhere (PostgreSQL); the hour changes once an hour, so an
     * upsert leaves the indexes alone and PostgreSQL updates the row in its page (a HOT
     * update). A range question bounds both: last_seen_hour >= the hour of its start. */
    {"last_seen_hour", KH_COL_INT, false, KH_SRC_TIME_HOUR, KH_MERGE_MAX,
     "`last_seen`'s hour, in hours since 1970-01-01T00:00Z rounded down: indexed, where "
     "`last_seen` is not, so ask `last_seen_hour >= HOUR AND last_seen >= T` with HOUR "
     "`T`'s hour",
     9},
};
static const char *const connection_key[] = {"connection_id", NULL};
static const char *const connection_by_channel[] = {"channel_id", "last_seen", NULL};
static const char *const connection_by_last_seen[] = {"last_seen", NULL};
static const char *const connection_by_channel_id[] = {"channel_id", NULL};
static const char *const connection_by_hour[] = {"last_seen_hour", NULL};
/* Version 9 drops the two indexes on last_seen (see last_seen_hour). */
static const struct kh_env_index connection_indexes[] = {
    {"channel", connection_by_channel, 0, 9},
    {"last_seen", connection_by_last_seen, 0, 9},
    {"channel_id", connection_by_channel_id, 9, 0},
    {"last_seen_hour", connection_by_hour, 9, 0},
};

/* One row per Sora node, upserted by each of its node.erlang-vm reports. */
static const struct kh_env_column node_cols[] = {
    ENV("node_name", KH_COL_TEXT, true, KH_SRC_NODE_NAME, KEEP),
    ENV("label", KH_COL_TEXT, true, KH_SRC_LABEL, REPLACE),
    ENV("version", KH_COL_TEXT, true, KH_SRC_VERSION, REPLACE),
    ENV("first_seen", KH_COL_TIME, true, KH_SRC_TIME, MIN),
    ENV("last_seen", KH_COL_TIME, true, KH_SRC_TIME, MAX),
};
static const char *const node_key[] = {"node_name", NULL};

/* Schema version 2: one row per stored report, for counting reports over time and for
 * checking that an acknowledged report is stored exactly once. */
static const struct kh_env_column report_cols[] = {
    ENV("time", KH_COL_TIME, true, KH_SRC_TIME, KEEP),
    ENV("source", KH_COL_TEXT, true, KH_SRC_SOURCE, KEEP),
    ENV("kind", KH_COL_TEXT, true, KH_SRC_KIND, KEEP),
    ENV("report_id", KH_COL_TEXT, false, KH_SRC_REPORT_ID, KEEP),
    ENV("channel_id", KH_COL_TEXT, false, KH_SRC_CHANNEL_ID, KEEP),
    ENV("connection_id", KH_COL_TEXT, false, KH_SRC_CONNECTION_ID, KEEP),
    ENV("node_name", KH_COL_TEXT, true, KH_SRC_NODE_NAME, KEEP),
    ENV("stats_count", KH_COL_INT, true, KH_SRC_STATS_COUNT, KEEP),
    ENV("body_bytes", KH_COL_INT, true, KH_SRC_BODY_BYTES, KEEP),
    ENV("received_at", KH_COL_TIME, true, KH_SRC_RECEIVED_AT, KEEP),
};
static const char *const report_key[] = {"source", "time", NULL};
static const char *const report_by_time[] = {"time", NULL};
static const char *const report_by_id[] = {"report_id", NULL};
static const struct kh_env_index report_indexes[] = {
    {"time", report_by_time},
    {"id", report_by_id},
};

/* Schema version 6: Sora's session and event webhooks. One row per webhook stored (its
 * insert says whether the webhook was new, as sora_report's does for a report). */
#define WH(name, type, not_null, src, doc) {name, type, not_null, src, KH_MERGE_KEEP, doc}
static const struct kh_env_column webhook_cols[] = {
    WH("time", KH_COL_TIME, true, KH_SRC_TIME, "the webhook's `timestamp`"),
    WH("webhook_id", KH_COL_TEXT, true, KH_SRC_REPORT_ID, "the webhook's `id`"),
    WH("type", KH_COL_TEXT, true, KH_SRC_TYPE,
       "the webhook's `type` (`session.created`, `connection.destroyed` ...)"),
    WH("channel_id", KH_COL_TEXT, false, KH_SRC_CHANNEL_ID, "its `channel_id`"),
    WH("session_id", KH_COL_TEXT, false, KH_SRC_SESSION_ID, "its `session_id`"),
    WH("connection_id", KH_COL_TEXT, false, KH_SRC_CONNECTION_ID,
       "its `connection_id` (event webhooks about a connection)"),
    WH("node_name", KH_COL_TEXT, false, KH_SRC_NODE_NAME, "its `node_name`"),
    WH("body_bytes", KH_COL_INT, true, KH_SRC_BODY_BYTES, NULL),
    WH("received_at", KH_COL_TIME, true, KH_SRC_RECEIVED_AT, "when kohaku had read the webhook"),
};
static const char *const webhook_key[] = {"webhook_id", NULL};
static const char *const webhook_by_time[] = {"time", NULL};
static const char *const webhook_by_session[] = {"session_id", NULL};
static const struct kh_env_index webhook_indexes[] = {
    {"time", webhook_by_time},
    {"session", webhook_by_session},
};

/* The lifecycle tables: rows the webhooks carry, merged column by column with MIN, MAX and
 * FILL only, so that a row is the same whatever order its webhooks came in and a webhook
 * stored twice changes nothing. (The key's merge is never used.) */
#define LIFE(name, type, not_null, merge, doc) {name, type, not_null, 0, KH_MERGE_##merge, doc}

/* One row per Sora session. */
static const struct kh_env_column session_cols[KH_SESS_NCOLS] = {
    [KH_SESS_SESSION_ID] = LIFE("session_id", KH_COL_TEXT, true, KEEP,
                                "the webhook's `session_id`"),
    [KH_SESS_CHANNEL_ID] = LIFE("channel_id", KH_COL_TEXT, true, FILL, "its `channel_id`"),
    [KH_SESS_NODE_NAME] = LIFE("node_name", KH_COL_TEXT, false, FILL,
                               "the `node_name` of the first webhook about it"),
    [KH_SESS_CREATED] = LIFE("created", KH_COL_TIME, false, MIN,
                             "session webhook: `created_timestamp`"),
    [KH_SESS_DESTROYED] = LIFE("destroyed", KH_COL_TIME, false, MAX,
                               "`session.destroyed` or `session.vanished`: "
                               "`destroyed_timestamp`, else its `timestamp`"),
    [KH_SESS_END_TYPE] = LIFE("end_type", KH_COL_TEXT, false, FILL,
                              "the `type` that ended it: `session.destroyed` or "
                              "`session.vanished`"),
    [KH_SESS_MAX_CONNECTIONS] = LIFE("max_connections", KH_COL_INT, false, MAX,
                                     "session webhook: `max_connections`, the most connections "
                                     "it had at once (its peak)"),
    [KH_SESS_TOTAL_CONNECTIONS] = LIFE("total_connections", KH_COL_INT, false, MAX,
                                       "session webhook: `total_connections`, the connections "
                                       "it has had"),
    [KH_SESS_SPOTLIGHT] = LIFE("spotlight", KH_COL_BOOL, false, FILL,
                               "session webhook: `spotlight`"),
    [KH_SESS_FIRST_WEBHOOK] = LIFE("first_webhook", KH_COL_TIME, true, MIN,
                                   "the `timestamp` of the earliest webhook about it (session "
                                   "or connection)"),
    [KH_SESS_LAST_WEBHOOK] = LIFE("last_webhook", KH_COL_TIME, true, MAX,
                                  "the `timestamp` of the latest one"),
};
static const char *const session_key[] = {"session_id", NULL};
static const char *const session_by_channel[] = {"channel_id", "first_webhook", NULL};
static const struct kh_env_index session_indexes[] = {
    {"channel", session_by_channel},
};

/* One row per connection, joined to the stats by connection_id. */
static const struct kh_env_column lifecycle_cols[KH_LIFE_NCOLS] = {
    [KH_LIFE_CONNECTION_ID] = LIFE("connection_id", KH_COL_TEXT, true, KEEP,
                                   "the event webhook's `connection_id`, or one of a session "
                                   "webhook's `connections`"),
    [KH_LIFE_SESSION_ID] = LIFE("session_id", KH_COL_TEXT, true, FILL, "its `session_id`"),
    [KH_LIFE_CHANNEL_ID] = LIFE("channel_id", KH_COL_TEXT, true, FILL, "its `channel_id`"),
    [KH_LIFE_CLIENT_ID] = LIFE("client_id", KH_COL_TEXT, false, FILL, "its `client_id`"),
    [KH_LIFE_BUNDLE_ID] = LIFE("bundle_id", KH_COL_TEXT, false, FILL, "its `bundle_id`"),
    [KH_LIFE_ROLE] = LIFE("role", KH_COL_TEXT, false, FILL, "its `role`"),
    [KH_LIFE_CREATED] = LIFE("created", KH_COL_TIME, false, MIN,
                             "`connection.created`: `created_timestamp` (in `data` or the "
                             "body), else its `timestamp`; session webhook: "
                             "`connection_created_timestamp`"),
    [KH_LIFE_DESTROYED] = LIFE("destroyed", KH_COL_TIME, false, MAX,
                               "`connection.destroyed` / `connection.failed`: "
                               "`destroyed_timestamp`, else its `timestamp`; session webhook: "
                               "`connection_destroyed_timestamp`"),
    [KH_LIFE_END_TYPE] = LIFE("end_type", KH_COL_TEXT, false, FILL,
                              "how it ended: the event webhook's `type`, "
                              "`connection.destroyed` or `connection.failed`"),
    [KH_LIFE_END_REASON] = LIFE("end_reason", KH_COL_TEXT, false, FILL,
                                "that webhook's `reason` (in `data` or the body)"),
    [KH_LIFE_END_DATA] = LIFE("end_data", KH_COL_JSON, false, FILL,
                              "that webhook's `data` object, whole"),
    [KH_LIFE_MULTISTREAM] = LIFE("multistream", KH_COL_BOOL, false, FILL, "`multistream`"),
    [KH_LIFE_SIMULCAST] = LIFE("simulcast", KH_COL_BOOL, false, FILL, "`simulcast`"),
    [KH_LIFE_SPOTLIGHT] = LIFE("spotlight", KH_COL_BOOL, false, FILL, "`spotlight`"),
    [KH_LIFE_AUDIO] = LIFE("audio", KH_COL_BOOL, false, FILL, "`audio`"),
    [KH_LIFE_VIDEO] = LIFE("video", KH_COL_BOOL, false, FILL, "`video`"),
    [KH_LIFE_AUDIO_CODEC_TYPE] = LIFE("audio_codec_type", KH_COL_TEXT, false, FILL,
                                      "`audio_codec_type`"),
    [KH_LIFE_VIDEO_CODEC_TYPE] = LIFE("video_codec_type", KH_COL_TEXT, false, FILL,
                                      "`video_codec_type`"),
    [KH_LIFE_VIDEO_BIT_RATE] = LIFE("video_bit_rate", KH_COL_INT, false, FILL,
                                    "`video_bit_rate` (kbps)"),
    [KH_LIFE_MINUTES] = LIFE("minutes", KH_COL_INT, false, MAX,
                             "event webhook: `minutes` connected"),
    [KH_LIFE_TOTAL_RECEIVED_BYTES] = LIFE("total_received_bytes", KH_COL_INT, false, MAX,
                                          "event webhook: `total_received_bytes`"),
    [KH_LIFE_TOTAL_SENT_BYTES] = LIFE("total_sent_bytes", KH_COL_INT, false, MAX,
                                      "event webhook: `total_sent_bytes`"),
    [KH_LIFE_TURN_TRANSPORT_TYPE] = LIFE("turn_transport_type", KH_COL_TEXT, false, FILL,
                                         "event webhook: `turn_transport_type`"),
    [KH_LIFE_FIRST_WEBHOOK] = LIFE("first_webhook", KH_COL_TIME, true, MIN,
                                   "the `timestamp` of the earliest webhook about it"),
    [KH_LIFE_LAST_WEBHOOK] = LIFE("last_webhook", KH_COL_TIME, true, MAX,
                                  "the `timestamp` of the latest one"),
};
static const char *const lifecycle_key[] = {"connection_id", NULL};
static const char *const lifecycle_by_session[] = {"session_id", NULL};
static const char *const lifecycle_by_channel[] = {"channel_id", "first_webhook", NULL};
static const struct kh_env_index lifecycle_indexes[] = {
    {"session", lifecycle_by_session},
    {"channel", lifecycle_by_channel},
};

const struct kh_env_table kh_env_tables[] = {
    {"sora_connection", "One row per connection_id, upserted by every report", 1,
     KH_REPORT_CONNECTION, true, connection_cols, N(connection_cols), connection_key,
     connection_indexes, N(connection_indexes), NULL, NULL},
    {"sora_node", "One row per Sora node, upserted by every node.erlang-vm report", 1,
     KH_REPORT_NODE, true, node_cols, N(node_cols), node_key, NULL, 0, NULL, NULL},
    {"sora_report", "One row per stored report", 2, KH_ENV_STATS,
     false, report_cols, N(report_cols), report_key, report_indexes, N(report_indexes),
     "source", "time"},
    {"sora_webhook", "One row per session or event webhook stored", 6, KH_ENV_WEBHOOKS, false,
     webhook_cols, N(webhook_cols), webhook_key, webhook_indexes, N(webhook_indexes), NULL,
     NULL},
    {"sora_session", "One row per Sora session, from the session and event webhooks", 6,
     KH_ENV_CARRIED, true, session_cols, N(session_cols), session_key, session_indexes,
     N(session_indexes), NULL, NULL},
    {"sora_connection_lifecycle",
     "One row per connection, from the session and event webhooks: when it was created and "
     "destroyed and how it ended, joined to the stats by `connection_id`",
     6, KH_ENV_CARRIED, true, lifecycle_cols, N(lifecycle_cols), lifecycle_key,
     lifecycle_indexes, N(lifecycle_indexes), NULL, NULL},
};
const size_t kh_env_ntables = N(kh_env_tables);
const int kh_env_report = 2;
const int kh_env_webhook = 3;
const int kh_env_session = 4;
const int kh_env_lifecycle = 5;
