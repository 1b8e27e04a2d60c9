/*
 * sample: a report's RTP streams and transport, read from its rows. See sample.h.
 *
 * Links are by id, never by position (Firefox and Chromium order objects differently and
 * repeat ids between connections): an outbound stream's remote-inbound-rtp is the one whose
 * localId is the stream's id, an inbound stream's remote-outbound-rtp likewise; its codec is
 * codecId, its media source mediaSourceId. The selected candidate pair is the transport's
 * selectedCandidatePairId, or (Firefox, which has no such member) the pair marked selected or
 * nominated and succeeded.
 */
#include "quality/sample.h"

#include <math.h>
#include <string.h>

#include "core/errors.h"
#include "sora/envelope.h"
#include "sora/schema.h"

/* What is read, by table and member. */
enum m {
    IN_SSRC, OUT_SSRC,
    IN_KIND, IN_CODEC, IN_PACKETS, IN_LOST, IN_DISCARDED, IN_BYTES, IN_JITTER, IN_JB_DELAY,
    IN_JB_EMITTED, IN_CONCEALED, IN_SAMPLES, IN_FRAMES, IN_FPS, IN_WIDTH, IN_HEIGHT, IN_FREEZES,
    IN_FREEZE_S, IN_PAUSES, IN_PAUSE_S, IN_DECODE_S,
    OUT_KIND, OUT_CODEC, OUT_SOURCE, OUT_PACKETS, OUT_BYTES, OUT_FRAMES, OUT_FPS, OUT_WIDTH,
    OUT_HEIGHT, OUT_ENCODE_S, OUT_TARGET, OUT_QL,
    RI_LOCAL, RI_RTT, RI_FRACTION, RI_LOST, RI_JITTER,
    RO_LOCAL, RO_RTT,
    VS_WIDTH, VS_HEIGHT, VS_FPS,
    CODEC_MIME,
    TR_PAIR, TR_DTLS, TR_ICE, TR_CHANGES,
    CP_STATE, CP_NOMINATED, CP_SELECTED, CP_RTT, CP_AOB, CP_SENT, CP_RECEIVED, CP_LOCAL,
    LC_TYPE, LC_RELAY,
    M_COUNT
};

enum t {
    T_IN, T_OUT, T_RI, T_RO, T_VSRC, T_CODEC, T_TRANSPORT, T_PAIR, T_CAND, T_CERT, T_COUNT
};

static const struct {
    const char *type, *kind;
} table_types[T_COUNT] = {
    [T_IN] = {"inbound-rtp", NULL},        [T_OUT] = {"outbound-rtp", NULL},
    [T_RI] = {"remote-inbound-rtp", NULL}, [T_RO] = {"remote-outbound-rtp", NULL},
    [T_VSRC] = {"media-source", "video"},  [T_CODEC] = {"codec", NULL},
    [T_TRANSPORT] = {"transport", NULL},   [T_PAIR] = {"candidate-pair", NULL},
    [T_CAND] = {"local-candidate", NULL},    [T_CERT] = {"certificate", NULL},
};

static const struct {
    enum t table;
    const char *name;
} members[M_COUNT] = {
    [IN_SSRC] = {T_IN, "ssrc"},
    [OUT_SSRC] = {T_OUT, "ssrc"},
    [IN_KIND] = {T_IN, "kind"},
    [IN_CODEC] = {T_IN, "codecId"},
    [IN_PACKETS] = {T_IN, "packetsReceived"},
    [IN_LOST] = {T_IN, "packetsLost"},
    [IN_DISCARDED] = {T_IN, "packetsDiscarded"},
    [IN_BYTES] = {T_IN, "bytesReceived"},
    [IN_JITTER] = {T_IN, "jitter"},
    [IN_JB_DELAY] = {T_IN, "jitterBufferDelay"},
    [IN_JB_EMITTED] = {T_IN, "jitterBufferEmittedCount"},
    [IN_CONCEALED] = {T_IN, "concealedSamples"},
    [IN_SAMPLES] = {T_IN, "totalSamplesReceived"},
    [IN_FRAMES] = {T_IN, "framesDecoded"},
    [IN_FPS] = {T_IN, "framesPerSecond"},
    [IN_WIDTH] = {T_IN, "frameWidth"},
    [IN_HEIGHT] = {T_IN, "frameHeight"},
    [IN_FREEZES] = {T_IN, "freezeCount"},
    [IN_FREEZE_S] = {T_IN, "totalFreezesDuration"},
    [IN_PAUSES] = {T_IN, "pauseCount"},
    [IN_PAUSE_S] = {T_IN, "totalPausesDuration"},
    [IN_DECODE_S] = {T_IN, "totalDecodeTime"},
    [OUT_KIND] = {T_OUT, "kind"},
    [OUT_CODEC] = {T_OUT, "codecId"},
    [OUT_SOURCE] = {T_OUT, "mediaSourceId"},
    [OUT_PACKETS] = {T_OUT, "packetsSent"},
    [OUT_BYTES] = {T_OUT, "bytesSent"},
    [OUT_FRAMES] = {T_OUT, "framesEncoded"},
    [OUT_FPS] = {T_OUT, "framesPerSecond"},
    [OUT_WIDTH] = {T_OUT, "frameWidth"},
    [OUT_HEIGHT] = {T_OUT, "frameHeight"},
    [OUT_ENCODE_S] = {T_OUT, "totalEncodeTime"},
    [OUT_TARGET] = {T_OUT, "targetBitrate"},
    [OUT_QL] = {T_OUT, "qualityLimitationDurations"},
    [RI_LOCAL] = {T_RI, "localId"},
    [RI_RTT] = {T_RI, "roundTripTime"},
    [RI_FRACTION] = {T_RI, "fractionLost"},
    [RI_LOST] = {T_RI, "packetsLost"},
    [RI_JITTER] = {T_RI, "jitter"},
    [RO_LOCAL] = {T_RO, "localId"},
    [RO_RTT] = {T_RO, "roundTripTime"},
    [VS_WIDTH] = {T_VSRC, "width"},
    [VS_HEIGHT] = {T_VSRC, "height"},
    [VS_FPS] = {T_VSRC, "framesPerSecond"},
    [CODEC_MIME] = {T_CODEC, "mimeType"},
    [TR_PAIR] = {T_TRANSPORT, "selectedCandidatePairId"},
    [TR_DTLS] = {T_TRANSPORT, "dtlsState"},
    [TR_ICE] = {T_TRANSPORT, "iceState"},
    [TR_CHANGES] = {T_TRANSPORT, "selectedCandidatePairChanges"},
    [CP_STATE] = {T_PAIR, "state"},
    [CP_NOMINATED] = {T_PAIR, "nominated"},
    [CP_SELECTED] = {T_PAIR, "selected"},
    [CP_RTT] = {T_PAIR, "currentRoundTripTime"},
    [CP_AOB] = {T_PAIR, "availableOutgoingBitrate"},
    [CP_SENT] = {T_PAIR, "bytesSent"},
    [CP_RECEIVED] = {T_PAIR, "bytesReceived"},
    [CP_LOCAL] = {T_PAIR, "localCandidateId"},
    [LC_TYPE] = {T_CAND, "candidateType"},
    [LC_RELAY] = {T_CAND, "relayProtocol"},
};

static int table_of[T_COUNT];
static int member_of[M_COUNT];

int kh_q_sample_init(void)
{
    for (int t = 0; t < T_COUNT; t++) {
        const char *ty = table_types[t].type, *kd = table_types[t].kind;
        table_of[t] = kh_schema_table_for(ty, strlen(ty), kd, kd ? strlen(kd) : 0);
        if (table_of[t] == kh_table_other)
            return KH_EINVAL; /* the schema table lost a type this module reads */
    }
    for (int m = 0; m < M_COUNT; m++) {
        const char *name = members[m].name;
        member_of[m] = kh_schema_member(table_of[members[m].table], name, strlen(name));
        if (member_of[m] < 0)
            return KH_EINVAL;
    }
    return 0;
}

static double num(const struct kh_row *row, enum m m)
{
    const struct kh_value *v = &row->vals[member_of[m]];
    if (v->type == KH_COL_INT)
        return (double)v->u.i;
    if (v->type == KH_COL_REAL)
        return v->u.d;
    return NAN;
}

/* A duration a report gives directly (a round-trip time): negative is no value (a client's
 * bug, or a counter-extrapolating load generator), never a delay below zero. */
static double duration(const struct kh_row *row, enum m m)
{
    double d = num(row, m);
    return d >= 0 ? d : NAN;
}

static struct kh_str str(const struct kh_row *row, enum m m)
{
    const struct kh_value *v = &row->vals[member_of[m]];
    if (v->type != KH_COL_TEXT)
        return (struct kh_str){NULL, 0};
    return (struct kh_str){v->u.s, v->len};
}

static bool flag(const struct kh_row *row, enum m m)
{
    const struct kh_value *v = &row->vals[member_of[m]];
    return v->type == KH_COL_BOOL && v->u.b;
}

static bool same(struct kh_str a, struct kh_str b)
{
    return a.p && b.p && a.len == b.len && memcmp(a.p, b.p, a.len) == 0;
}

static bool is(struct kh_str a, const char *s)
{
    return a.p && a.len == strlen(s) && memcmp(a.p, s, a.len) == 0;
}

/* The first row of table t whose member m is id. */
static const struct kh_row *find(const struct kh_report *r, enum t t, enum m m, struct kh_str id)
{
    if (r->table_rows[table_of[t]] == 0 || id.p == NULL)
        return NULL;
    for (const struct kh_row *row = r->rows; row; row = row->next)
        if (row->table == table_of[t] && same(str(row, m), id))
            return row;
    return NULL;
}

/* The row of table t whose stats id is id. */
static const struct kh_row *find_id(const struct kh_report *r, enum t t, struct kh_str id)
{
    if (r->table_rows[table_of[t]] == 0 || id.p == NULL)
        return NULL;
    for (const struct kh_row *row = r->rows; row; row = row->next)
        if (row->table == table_of[t] && same(row->stats_id, id))
            return row;
    return NULL;
}

void kh_q_stream_blank(struct kh_q_stream *s)
{
    double *d[] = {&s->ssrc,
                   &s->bytes,   &s->packets,       &s->packets_lost, &s->packets_discarded,
                   &s->jb_delay, &s->jb_emitted,   &s->concealed,    &s->samples,
                   &s->frames,  &s->freezes,       &s->freeze_s,     &s->pauses,
                   &s->pause_s, &s->codec_s,       &s->ql_bandwidth_s, &s->ql_cpu_s,
                   &s->ql_other_s, &s->ql_none_s,  &s->remote_lost,  &s->remote_ts_ms,
                   &s->jitter_s,
                   &s->fps,     &s->width,         &s->height,       &s->target_bitrate,
                   &s->rtt_s,   &s->fraction_lost, &s->source_fps,   &s->source_width,
                   &s->source_height};
    for (size_t i = 0; i < sizeof(d) / sizeof(d[0]); i++)
        *d[i] = NAN;
    s->mime_type = (struct kh_str){NULL, 0};
}

static void codec_of(const struct kh_report *r, struct kh_q_stream *s, struct kh_str codec_id)
{
    const struct kh_row *c = find_id(r, T_CODEC, codec_id);
    if (c)
        s->mime_type = str(c, CODEC_MIME);
}

static void inbound(const struct kh_report *r, const struct kh_row *row, struct kh_q_stream *s)
{
    s->packets = num(row, IN_PACKETS);
    s->packets_lost = num(row, IN_LOST);
    s->packets_discarded = num(row, IN_DISCARDED);
    s->bytes = num(row, IN_BYTES);
    s->jitter_s = num(row, IN_JITTER);
    s->jb_delay = num(row, IN_JB_DELAY);
    s->jb_emitted = num(row, IN_JB_EMITTED);
    s->concealed = num(row, IN_CONCEALED);
    s->samples = num(row, IN_SAMPLES);
    s->frames = num(row, IN_FRAMES);
    s->fps = num(row, IN_FPS);
    s->width = num(row, IN_WIDTH);
    s->height = num(row, IN_HEIGHT);
    s->freezes = num(row, IN_FREEZES);
    s->freeze_s = num(row, IN_FREEZE_S);
    s->pauses = num(row, IN_PAUSES);
    s->pause_s = num(row, IN_PAUSE_S);
    s->codec_s = num(row, IN_DECODE_S);
    const struct kh_row *ro = find(r, T_RO, RO_LOCAL, row->stats_id);
    if (ro)
        s->rtt_s = duration(ro, RO_RTT);
    codec_of(r, s, str(row, IN_CODEC));
}

static void limitation(const struct kh_row *row, struct kh_q_stream *s)
{
    static const char *const keys[] = {"bandwidth", "cpu", "other", "none"};
    const struct kh_value *v = &row->vals[member_of[OUT_QL]];
    double d[4];
    if (v->type != KH_COL_JSON || !kh_envelope_json_numbers(v->u.s, v->len, keys, d, 4))
        return;
    s->ql_bandwidth_s = d[0];
    s->ql_cpu_s = d[1];
    s->ql_other_s = d[2];
    s->ql_none_s = d[3];
}

static void outbound(const struct kh_report *r, const struct kh_row *row, struct kh_q_stream *s)
{
    s->packets = num(row, OUT_PACKETS);
    s->bytes = num(row, OUT_BYTES);
    s->frames = num(row, OUT_FRAMES);
    s->fps = num(row, OUT_FPS);
    s->width = num(row, OUT_WIDTH);
    s->height = num(row, OUT_HEIGHT);
    s->codec_s = num(row, OUT_ENCODE_S);
    s->target_bitrate = num(row, OUT_TARGET);
    limitation(row, s);
    const struct kh_row *ri = find(r, T_RI, RI_LOCAL, row->stats_id);
    if (ri) {
        s->rtt_s = duration(ri, RI_RTT);
        s->fraction_lost = num(ri, RI_FRACTION);
        s->remote_lost = num(ri, RI_LOST);
        s->remote_ts_ms = ri->stats_timestamp;
        s->jitter_s = num(ri, RI_JITTER);
    }
    const struct kh_row *src = find_id(r, T_VSRC, str(row, OUT_SOURCE));
    if (src) {
        s->source_width = num(src, VS_WIDTH);
        s->source_height = num(src, VS_HEIGHT);
        s->source_fps = num(src, VS_FPS);
    }
    codec_of(r, s, str(row, OUT_CODEC));
}

static void add_stream(const struct kh_report *r, const struct kh_row *row, enum kh_q_dir dir,
                       struct kh_q_report *out)
{
    struct kh_str kind = str(row, dir == KH_Q_IN ? IN_KIND : OUT_KIND);
    if (out->nstreams == KH_Q_MAX_STREAMS || !(is(kind, "audio") || is(kind, "video")))
        return;
    struct kh_q_stream *s = &out->streams[out->nstreams++];
    kh_q_stream_blank(s);
    s->stats_id = row->stats_id;
    s->kind = is(kind, "audio") ? KH_Q_AUDIO : KH_Q_VIDEO;
    s->dir = dir;
    s->ts_ms = row->stats_timestamp;
    s->ssrc = num(row, dir == KH_Q_IN ? IN_SSRC : OUT_SSRC);
    if (dir == KH_Q_IN)
        inbound(r, row, s);
    else
        outbound(r, row, s);
}

/* The pair in use: the transport's selectedCandidatePairId, else one marked selected, else a
 * nominated one that succeeded. */
static const struct kh_row *selected_pair(const struct kh_report *r, const struct kh_row *tr)
{
    const struct kh_row *p = tr ? find_id(r, T_PAIR, str(tr, TR_PAIR)) : NULL;
    for (const struct kh_row *row = r->rows; p == NULL && row; row = row->next)
        if (row->table == table_of[T_PAIR] && flag(row, CP_SELECTED))
            p = row;
    for (const struct kh_row *row = r->rows; p == NULL && row; row = row->next)
        if (row->table == table_of[T_PAIR] && flag(row, CP_NOMINATED) &&
            is(str(row, CP_STATE), "succeeded"))
            p = row;
    return p;
}

static void transport(const struct kh_report *r, struct kh_q_transport *t)
{
    const struct kh_row *tr = NULL;
    for (const struct kh_row *row = r->rows; tr == NULL && row; row = row->next)
        if (row->table == table_of[T_TRANSPORT])
            tr = row;
    const struct kh_row *p = selected_pair(r, tr);
    *t = (struct kh_q_transport){.present = tr || p, .ts_ms = NAN, .pair_rtt_s = NAN,
                                 .available_outgoing_bitrate = NAN, .bytes_sent = NAN,
                                 .bytes_received = NAN, .pair_changes = NAN};
    if (tr) {
        t->ts_ms = tr->stats_timestamp;
        t->dtls_state = str(tr, TR_DTLS);
        t->ice_state = str(tr, TR_ICE);
        t->pair_changes = num(tr, TR_CHANGES);
    }
    if (p == NULL)
        return;
    if (tr == NULL)
        t->ts_ms = p->stats_timestamp;
    t->pair_id = p->stats_id;
    t->pair_state = str(p, CP_STATE);
    t->pair_rtt_s = duration(p, CP_RTT);
    t->available_outgoing_bitrate = num(p, CP_AOB);
    t->bytes_sent = num(p, CP_SENT);
    t->bytes_received = num(p, CP_RECEIVED);
    const struct kh_row *lc = find_id(r, T_CAND, str(p, CP_LOCAL));
    if (lc) {
        t->local_type = str(lc, LC_TYPE);
        t->relay_protocol = str(lc, LC_RELAY);
    }
}

static enum kh_q_browser browser(const struct kh_report *r, const struct kh_q_transport *t)
{
    for (const struct kh_row *row = r->rows; row; row = row->next)
        if (row->table == table_of[T_PAIR] && row->vals[member_of[CP_SELECTED]].type)
            return KH_Q_BROWSER_FIREFOX;
    if (r->table_rows[table_of[T_CERT]] > 0 || t->pair_id.p)
        return KH_Q_BROWSER_LIBWEBRTC;
    return KH_Q_BROWSER_UNKNOWN;
}

void kh_q_sample_report(const struct kh_report *r, struct kh_q_report *out)
{
    out->nstreams = 0;
    for (const struct kh_row *row = r->rows; row; row = row->next) {
        if (row->table == table_of[T_IN])
            add_stream(r, row, KH_Q_IN, out);
        else if (row->table == table_of[T_OUT])
            add_stream(r, row, KH_Q_OUT, out);
    }
    transport(r, &out->transport);
    out->browser = browser(r, &out->transport);
}
