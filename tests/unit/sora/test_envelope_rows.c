/*
 * Unit tests of the stats -> row mapping done by src/sora/envelope.c with the table of
 * src/sora/schema_table.c: every real browser fixture maps each stats object to one row of
 * the right table with every member in a typed column (nothing in extra), and members
 * without a column, or with a value of the wrong JSON type, are kept in extra as valid JSON.
 * The fixtures are read independently with yajl's tree API to know what to expect. Also:
 * a body fed in 1- and 7-byte pieces gives the same rows, and node.erlang-vm reports.
 * The envelope rules are in test_envelope.c: this file is the other half of envelope.c's
 * tests, split off by concern since together they pass 1,200 lines.
 */
#include <glob.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <yajl/yajl_tree.h>

#include <cmocka.h>

#include "kh_test.h"

static yajl_val tree(const char *text)
{
    char err[256];
    yajl_val v = yajl_tree_parse(text, err, sizeof(err));
    if (v == NULL)
        fail_msg("not valid JSON (%s): %s", err, text);
    return v;
}

static const char *member_str(yajl_val obj, const char *name)
{
    const char *path[] = {name, NULL};
    yajl_val v = yajl_tree_get(obj, path, yajl_t_string);
    return v ? v->u.string : NULL;
}

/* Deep equality; numbers compare by their text, which kohaku copies unchanged. */
static bool json_equal(yajl_val a, yajl_val b)
{
    if (a->type != b->type)
        return false;
    switch (a->type) {
    case yajl_t_string: return strcmp(a->u.string, b->u.string) == 0;
    case yajl_t_number: return strcmp(a->u.number.r, b->u.number.r) == 0;
    case yajl_t_object:
        if (a->u.object.len != b->u.object.len)
            return false;
        for (size_t i = 0; i < a->u.object.len; i++)
            if (strcmp(a->u.object.keys[i], b->u.object.keys[i]) != 0 ||
                !json_equal(a->u.object.values[i], b->u.object.values[i]))
                return false;
        return true;
    case yajl_t_array:
        if (a->u.array.len != b->u.array.len)
            return false;
        for (size_t i = 0; i < a->u.array.len; i++)
            if (!json_equal(a->u.array.values[i], b->u.array.values[i]))
                return false;
        return true;
    default: return true; /* true, false, null */
    }
}

/* The table a stats object belongs in, from DESIGN 2 (written out here, not derived). */
static const char *expected_table(const char *type, const char *kind)
{
    static const struct {
        const char *type, *table;
    } map[] = {
        {"codec", "rtc_codec_stats"},
        {"inbound-rtp", "rtc_inbound_rtp_stream_stats"},
        {"outbound-rtp", "rtc_outbound_rtp_stream_stats"},
        {"remote-inbound-rtp", "rtc_remote_inbound_rtp_stream_stats"},
        {"remote-outbound-rtp", "rtc_remote_outbound_rtp_stream_stats"},
        {"media-playout", "rtc_audio_playout_stats"},
        {"data-channel", "rtc_data_channel_stats"},
        {"transport", "rtc_transport_stats"},
        {"candidate-pair", "rtc_ice_candidate_pair_stats"},
        {"local-candidate", "rtc_ice_candidate_stats"},
        {"remote-candidate", "rtc_ice_candidate_stats"},
        {"certificate", "rtc_certificate_stats"},
        {"peer-connection", "rtc_peer_connection_stats"},
    };
    if (strcmp(type, "media-source") == 0 && kind && strcmp(kind, "audio") == 0)
        return "rtc_audio_source_stats";
    if (strcmp(type, "media-source") == 0 && kind && strcmp(kind, "video") == 0)
        return "rtc_video_source_stats";
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
        if (strcmp(map[i].type, type) == 0)
            return map[i].table;
    return "rtc_other_stats";
}

/* One fixture member against its column: typed, with the fixture's value. */
static void check_member(const char *file, const struct kh_row *row, const char *name,
                         yajl_val v)
{
    const struct kh_stats_table *st = &kh_stats_tables[row->table];
    int idx = kh_schema_member(row->table, name, strlen(name));
    if (idx < 0)
        fail_msg("%s: %s.%s has no column in %s", file, row->stats_type.p, name, st->table);
    enum kh_coltype ct = st->members[idx].type;
    const struct kh_value *val = &row->vals[idx];
    if (val->type != ct)
        fail_msg("%s: %s.%s stored as type %d, column type %d", file, row->stats_type.p, name,
                 val->type, ct);
    switch (v->type) {
    case yajl_t_string:
        assert_int_equal(ct, KH_COL_TEXT);
        assert_int_equal(val->len, strlen(v->u.string));
        assert_string_equal(val->u.s, v->u.string);
        break;
    case yajl_t_true:
    case yajl_t_false:
        assert_int_equal(ct, KH_COL_BOOL);
        assert_int_equal(val->u.b, v->type == yajl_t_true);
        break;
    case yajl_t_number:
        if (ct == KH_COL_INT) {
            /* integers keep every digit, also above 2^53 */
            assert_true(YAJL_IS_INTEGER(v));
            assert_true(val->u.i == v->u.number.i);
        } else {
            assert_int_equal(ct, KH_COL_REAL);
            assert_true(val->u.d == strtod(v->u.number.r, NULL));
        }
        break;
    case yajl_t_object: {
        assert_int_equal(ct, KH_COL_JSON);
        yajl_val stored = tree(val->u.s);
        if (!json_equal(stored, v))
            fail_msg("%s: %s.%s stored as %s", file, row->stats_type.p, name, val->u.s);
        yajl_tree_free(stored);
        break;
    }
    default: fail_msg("%s: unexpected JSON type for %s", file, name);
    }
}

static struct kh_report *parse_stats(const char *stats)
{
    return kht_report(stats, NULL, NULL);
}

static void check_fixture(const char *path, size_t *objects, size_t *json_cols)
{
    char *text = kht_read_file(path, NULL);
    yajl_val arr = tree(text);
    assert_true(YAJL_IS_ARRAY(arr));
    struct kh_report *r = parse_stats(text);
    assert_int_equal(r->nrows, arr->u.array.len);
    /* the per-table tally (read by the metrics) matches the rows themselves */
    uint32_t tally[KH_REPORT_MAX_TABLES] = {0};
    for (const struct kh_row *x = r->rows; x; x = x->next)
        tally[x->table]++;
    assert_memory_equal(tally, r->table_rows, sizeof(tally));
    const struct kh_row *row = r->rows;
    for (size_t i = 0; i < arr->u.array.len; i++, row = row->next) {
        yajl_val obj = arr->u.array.values[i];
        const char *type = member_str(obj, "type");
        assert_non_null(type);
        const char *want = expected_table(type, member_str(obj, "kind"));
        if (strcmp(kh_stats_tables[row->table].table, want) != 0)
            fail_msg("%s: stats[%zu] (%s) in %s, expected %s", path, i, type,
                     kh_stats_tables[row->table].table, want);
        assert_string_equal(row->stats_type.p, type);
        assert_string_equal(row->stats_id.p, member_str(obj, "id"));
        const char *ts[] = {"timestamp", NULL};
        assert_true(row->stats_timestamp ==
                    strtod(yajl_tree_get(obj, ts, yajl_t_number)->u.number.r, NULL));
        if (row->extra.p != NULL)
            fail_msg("%s: stats[%zu] (%s) left members in extra: %s", path, i, type,
                     row->extra.p);
        for (size_t m = 0; m < obj->u.object.len; m++) {
            const char *name = obj->u.object.keys[m];
            if (strcmp(name, "type") && strcmp(name, "id") && strcmp(name, "timestamp"))
                check_member(path, row, name, obj->u.object.values[m]);
            *json_cols += YAJL_IS_OBJECT(obj->u.object.values[m]);
        }
        (*objects)++;
    }
    assert_null(row);
    kh_report_free(r);
    yajl_tree_free(arr);
    free(text);
}

static void test_every_fixture_maps_to_typed_columns(void **state)
{
    (void)state;
    assert_true(kh_stats_ntables <= KH_REPORT_MAX_TABLES);
    glob_t g;
    assert_int_equal(glob(KH_FIXTURES_DIR "/*-t*.json", 0, NULL, &g), 0);
    assert_true(g.gl_pathc >= 8);
    size_t objects = 0, json_cols = 0;
    for (size_t i = 0; i < g.gl_pathc; i++)
        check_fixture(g.gl_pathv[i], &objects, &json_cols);
    assert_true(objects >= g.gl_pathc * 10);
    assert_true(json_cols > 0); /* qualityLimitationDurations was seen and checked */
    globfree(&g);
}

#define CP "{\"id\":\"CP1\",\"timestamp\":1,\"type\":\"candidate-pair\""

static void test_numbers(void **state)
{
    (void)state;
    struct kh_report *r = parse_stats(
        "[" CP ",\"priority\":9114756780654345000,\"currentRoundTripTime\":0,"
        "\"bytesSent\":42.0,\"totalRoundTripTime\":0.000083},"
        "{\"priority\":9114756780654345000,\"id\":\"CP2\",\"timestamp\":1,"
        "\"type\":\"candidate-pair\"},"
        "{\"id\":\"IR\",\"timestamp\":1795500198544.297,\"type\":\"inbound-rtp\",\"jitter\":0,"
        "\"jitterBufferMinimumDelay\":22003.2,\"ssrc\":4294967295,\"packetsLost\":-3},"
        "{\"id\":\"MS\",\"kind\":\"audio\",\"timestamp\":1,\"type\":\"media-source\","
        "\"echoReturnLoss\":-30,\"audioLevel\":1e-3}]");
    for (int k = 0; k < 2; k++) { /* fast path (after type) and slow path (before) */
        const struct kh_value *p = kht_val(kht_row(r, k ? "CP2" : "CP1"), "priority");
        assert_int_equal(p->type, KH_COL_INT);
        assert_true(p->u.i == 9114756780654345000LL);
    }
    const struct kh_row *cp = kht_row(r, "CP1");
    assert_int_equal(kht_val(cp, "currentRoundTripTime")->type, KH_COL_REAL);
    assert_true(kht_val(cp, "currentRoundTripTime")->u.d == 0.0);
    assert_int_equal(kht_val(cp, "bytesSent")->type, KH_COL_INT);
    assert_true(kht_val(cp, "bytesSent")->u.i == 42);
    assert_true(kht_val(cp, "totalRoundTripTime")->u.d == 0.000083);
    const struct kh_row *in = kht_row(r, "IR");
    assert_true(in->stats_timestamp == 1795500198544.297);
    assert_int_equal(kht_val(in, "jitter")->type, KH_COL_REAL);
    assert_true(kht_val(in, "jitter")->u.d == 0.0);
    assert_true(kht_val(in, "jitterBufferMinimumDelay")->u.d == 22003.2);
    assert_true(kht_val(in, "ssrc")->u.i == 4294967295LL);
    assert_true(kht_val(in, "packetsLost")->u.i == -3);
    const struct kh_row *ms = kht_row(r, "MS");
    assert_int_equal(ms->table, kht_table("rtc_audio_source_stats"));
    assert_int_equal(kht_val(ms, "echoReturnLoss")->type, KH_COL_REAL);
    assert_true(kht_val(ms, "echoReturnLoss")->u.d == -30.0);
    assert_true(kht_val(ms, "audioLevel")->u.d == 0.001);
    kh_report_free(r);
}

static void test_media_source_split_and_tables(void **state)
{
    (void)state;
    struct kh_report *r = parse_stats(
        "[{\"id\":\"A\",\"timestamp\":1,\"type\":\"media-source\",\"kind\":\"audio\"},"
        "{\"kind\":\"video\",\"id\":\"V\",\"timestamp\":1,\"type\":\"media-source\",\"width\":640},"
        "{\"id\":\"N\",\"timestamp\":1,\"type\":\"media-source\"},"
        "{\"id\":\"L\",\"timestamp\":1,\"type\":\"local-candidate\",\"port\":5000},"
        "{\"id\":\"R\",\"timestamp\":1,\"type\":\"remote-candidate\",\"port\":5001},"
        "{\"id\":\"F\",\"timestamp\":1,\"type\":\"future-thing\",\"size\":3}]");
    assert_int_equal(r->nrows, 6);
    assert_int_equal(kht_row(r, "A")->table, kht_table("rtc_audio_source_stats"));
    assert_int_equal(kht_row(r, "V")->table, kht_table("rtc_video_source_stats"));
    assert_true(kht_val(kht_row(r, "V"), "width")->u.i == 640);
    assert_int_equal(kht_row(r, "N")->table, kh_table_other);
    assert_int_equal(kht_row(r, "L")->table, kht_table("rtc_ice_candidate_stats"));
    assert_int_equal(kht_row(r, "R")->table, kht_table("rtc_ice_candidate_stats"));
    assert_string_equal(kht_row(r, "R")->stats_type.p, "remote-candidate");
    assert_int_equal(kht_row(r, "F")->table, kht_table("rtc_other_stats"));
    assert_string_equal(kht_row(r, "F")->stats_type.p, "future-thing");
    assert_string_equal(kht_row(r, "F")->extra.p, "{\"size\":3}");
    kh_report_free(r);
    /* the same split with the body fed in 3-byte pieces, kind after type */
    char *body = kht_envelope(
        "[{\"type\":\"media-source\",\"id\":\"a\",\"timestamp\":1,\"audioLevel\":0.5,"
        "\"kind\":\"audio\"},{\"kind\":\"video\",\"type\":\"media-source\",\"id\":\"v\","
        "\"timestamp\":1,\"width\":640},{\"type\":\"media-source\",\"id\":\"x\","
        "\"timestamp\":1}]",
        NULL, NULL);
    char err[256];
    assert_int_equal(kht_parse_ex(body, strlen(body), 3, KH_REPORT_CONNECTION,
                                  KH_FLAVOR_EXPORTER, NULL, &r, err, sizeof(err)),
                     0);
    assert_string_equal(kh_stats_tables[r->rows->table].table, "rtc_audio_source_stats");
    assert_string_equal(kh_stats_tables[r->rows->next->table].table, "rtc_video_source_stats");
    assert_int_equal(r->rows->next->next->table, kh_table_other);
    kh_report_free(r);
    free(body);
}

static void test_quality_limitation_durations_json(void **state)
{
    (void)state;
    struct kh_report *r = parse_stats(
        "[{\"id\":\"O\",\"timestamp\":1,\"type\":\"outbound-rtp\",\"qualityLimitationDurations\":"
        " {\"bandwidth\": 1.5, \"cpu\": 0, \"none\": 2.25, \"other\": 0},"
        "\"qualityLimitationReason\":\"bandwidth\"},"
        "{\"qualityLimitationDurations\":{\"none\":9},\"id\":\"P\",\"timestamp\":1,"
        "\"type\":\"outbound-rtp\"}]");
    const struct kh_value *v = kht_val(kht_row(r, "O"), "qualityLimitationDurations");
    assert_int_equal(v->type, KH_COL_JSON);
    assert_string_equal(v->u.s, "{\"bandwidth\":1.5,\"cpu\":0,\"none\":2.25,\"other\":0}");
    assert_int_equal(v->len, strlen(v->u.s));
    v = kht_val(kht_row(r, "P"), "qualityLimitationDurations");
    assert_int_equal(v->type, KH_COL_JSON);
    assert_string_equal(v->u.s, "{\"none\":9}");
    assert_null(kht_row(r, "O")->extra.p);
    kh_report_free(r);
}

#define UNKNOWN                                                                              \
    "\"xNum\":-1.5e3,\"xStr\":\"say \\\"hi\\\" \\\\ \\u00e9\\n\",\"xTrue\":true,"            \
    "\"xFalse\":false,\"xNull\":null,"                                                       \
    "\"xObj\":{\"k\":[1,\"two\",{\"q\":\"\\\"quoted\\\"\"},[]],\"e\":{},\"n\":null}"

static void test_unknown_members_in_extra(void **state)
{
    (void)state;
    /* after "type" (fast path) and before it */
    struct kh_report *r = parse_stats(
        "[{\"id\":\"T1\",\"timestamp\":1,\"type\":\"transport\",\"bytesSent\":5," UNKNOWN "},"
        "{" UNKNOWN ",\"id\":\"T2\",\"timestamp\":1,\"type\":\"transport\",\"bytesSent\":5}]");
    yajl_val want = tree("{" UNKNOWN "}");
    for (int k = 0; k < 2; k++) {
        const struct kh_row *row = kht_row(r, k ? "T2" : "T1");
        assert_non_null(row->extra.p);
        assert_int_equal(row->extra.len, strlen(row->extra.p));
        yajl_val got = tree(row->extra.p);
        if (!json_equal(got, want))
            fail_msg("extra is %s", row->extra.p);
        assert_true(kht_val(row, "bytesSent")->u.i == 5);
        yajl_tree_free(got);
    }
    yajl_tree_free(want);
    kh_report_free(r);
}

static void test_wrong_json_type_goes_to_extra(void **state)
{
    (void)state;
    struct kh_report *r = parse_stats(
        "[{\"id\":\"T1\",\"timestamp\":1,\"type\":\"transport\",\"bytesSent\":\"12\","
        "\"dtlsState\":5,\"packetsSent\":1.5,\"bytesReceived\":true,\"iceRole\":{\"a\":1},"
        "\"packetsReceived\":null},"
        "{\"bytesSent\":\"12\",\"dtlsState\":[1],\"id\":\"T2\",\"timestamp\":1,"
        "\"type\":\"transport\"}]");
    const struct kh_row *t1 = kht_row(r, "T1"), *t2 = kht_row(r, "T2");
    const char *nulls[] = {"bytesSent", "dtlsState", "packetsSent", "bytesReceived", "iceRole",
                           "packetsReceived"};
    for (size_t i = 0; i < 6; i++)
        assert_int_equal(kht_val(t1, nulls[i])->type, 0);
    assert_string_equal(t1->extra.p, "{\"bytesSent\":\"12\",\"dtlsState\":5,\"packetsSent\":1.5,"
                                     "\"bytesReceived\":true,\"iceRole\":{\"a\":1}}");
    assert_int_equal(kht_val(t2, "bytesSent")->type, 0);
    assert_int_equal(kht_val(t2, "dtlsState")->type, 0);
    assert_string_equal(t2->extra.p, "{\"bytesSent\":\"12\",\"dtlsState\":[1]}");
    kh_report_free(r);
    /* nested unknown values and a boolean go to extra whole; a null for a column is dropped */
    r = parse_stats(
        "[{\"id\":\"T\",\"timestamp\":1.5,\"type\":\"transport\",\"bytesSent\":\"12\","
        "\"fooNew\":{\"a\":[1,{\"b\":\"q\\\"\"}],\"n\":null},\"flag\":true,\"dtlsState\":null},"
        "{\"type\":\"track\",\"id\":\"L\",\"timestamp\":2,\"ended\":false,\"x\":1e3}]");
    assert_int_equal(r->nrows, 2);
    const struct kh_row *t = r->rows;
    assert_int_equal(kht_val(t, "bytesSent")->type, 0); /* NULL: the string went to extra */
    assert_string_equal(t->extra.p,
                        "{\"bytesSent\":\"12\",\"fooNew\":{\"a\":[1,{\"b\":\"q\\\"\"}],"
                        "\"n\":null},\"flag\":true}");
    const struct kh_row *o = t->next;
    assert_int_equal(o->table, kh_table_other);
    assert_string_equal(o->stats_type.p, "track");
    assert_string_equal(o->extra.p, "{\"ended\":false,\"x\":1e3}");
    kh_report_free(r);
}

static void test_legacy_track_kept(void **state)
{
    (void)state;
    struct kh_report *r = parse_stats(
        "[{\"id\":\"TR1\",\"timestamp\":1,\"type\":\"track\",\"trackIdentifier\":\"abc\","
        "\"frameWidth\":640,\"ended\":false,\"remoteSource\":true},"
        "{\"type\":\"stream\",\"id\":\"S1\",\"timestamp\":1,\"trackIds\":[\"TR1\"]},"
        "{\"id\":\"T01\",\"timestamp\":1,\"type\":\"transport\",\"bytesSent\":7}]");
    assert_int_equal(r->nrows, 3);
    const struct kh_row *tr = kht_row(r, "TR1");
    assert_int_equal(tr->table, kh_table_other);
    assert_string_equal(tr->stats_type.p, "track");
    assert_string_equal(tr->extra.p, "{\"trackIdentifier\":\"abc\",\"frameWidth\":640,"
                                     "\"ended\":false,\"remoteSource\":true}");
    assert_string_equal(kht_row(r, "S1")->extra.p, "{\"trackIds\":[\"TR1\"]}");
    assert_true(kht_val(kht_row(r, "T01"), "bytesSent")->u.i == 7);
    kh_report_free(r);
}

static void assert_same_value(const struct kh_value *a, const struct kh_value *b)
{
    assert_int_equal(a->type, b->type);
    switch (a->type) {
    case KH_COL_INT: assert_true(a->u.i == b->u.i); break;
    case KH_COL_REAL: assert_true(a->u.d == b->u.d); break;
    case KH_COL_BOOL: assert_int_equal(a->u.b, b->u.b); break;
    case KH_COL_TEXT:
    case KH_COL_JSON:
        assert_int_equal(a->len, b->len);
        assert_memory_equal(a->u.s, b->u.s, a->len);
        break;
    default: break;
    }
}

static void assert_same_report(const struct kh_report *a, const struct kh_report *b)
{
    assert_int_equal(a->nrows, b->nrows);
    assert_string_equal(a->time_text, b->time_text);
    assert_string_equal(a->connection_id.p, b->connection_id.p);
    assert_int_equal(a->body_bytes, b->body_bytes);
    const struct kh_row *x = a->rows, *y = b->rows;
    for (; x && y; x = x->next, y = y->next) {
        assert_int_equal(x->table, y->table);
        assert_string_equal(x->stats_type.p, y->stats_type.p);
        assert_string_equal(x->stats_id.p, y->stats_id.p);
        assert_true(x->stats_timestamp == y->stats_timestamp);
        for (size_t m = 0; m < kh_stats_tables[x->table].nmembers; m++)
            assert_same_value(&x->vals[m], &y->vals[m]);
        if (x->extra.p || y->extra.p) {
            assert_non_null(x->extra.p);
            assert_non_null(y->extra.p);
            assert_string_equal(x->extra.p, y->extra.p);
        }
    }
    assert_null(x);
    assert_null(y);
}

static void test_one_byte_chunks(void **state)
{
    (void)state;
    char *fixture = kht_read_file(KH_FIXTURES_DIR "/chromium-av-sender-t10.json", NULL);
    /* plus members that take the slow path, go to extra and nest */
    char *stats = malloc(strlen(fixture) + 512);
    if (stats == NULL)
        abort();
    sprintf(stats, "[{\"bytesSent\":\"12\",\"x\":{\"a\":[1,\"\\\"q\\\"\",null]},\"id\":\"Z\","
                   "\"type\":\"transport\",\"timestamp\":2.5,\"unknownNum\":1e3},%s",
            strchr(fixture, '[') + 1);
    char *body = kht_envelope(stats, NULL, NULL);
    size_t n = strlen(body);
    struct kh_report *whole = NULL, *bytes = NULL, *sevens = NULL;
    char err[256];
    const enum kh_report_kind k = KH_REPORT_CONNECTION;
    assert_int_equal(kht_parse_ex(body, n, 0, k, KH_FLAVOR_EXPORTER, NULL, &whole, err, 256), 0);
    assert_int_equal(kht_parse_ex(body, n, 1, k, KH_FLAVOR_EXPORTER, NULL, &bytes, err, 256), 0);
    assert_int_equal(kht_parse_ex(body, n, 7, k, KH_FLAVOR_EXPORTER, NULL, &sevens, err, 256), 0);
    assert_int_equal(whole->nrows, 20);
    assert_same_report(whole, bytes);
    assert_same_report(whole, sevens);
    assert_string_equal(whole->rows->extra.p,
                        "{\"bytesSent\":\"12\",\"x\":{\"a\":[1,\"\\\"q\\\"\",null]},"
                        "\"unknownNum\":1e3}");
    kh_report_free(whole);
    kh_report_free(bytes);
    kh_report_free(sevens);
    free(body);
    free(stats);
    free(fixture);
    /* a receiver's fixture (other tables, firefox's members) in 7-byte pieces */
    fixture = kht_read_file(KH_FIXTURES_DIR "/firefox-av-receiver-t3.json", NULL);
    body = kht_envelope(fixture, NULL, NULL);
    n = strlen(body);
    assert_int_equal(kht_parse_ex(body, n, 0, k, KH_FLAVOR_EXPORTER, NULL, &whole, err, 256), 0);
    assert_int_equal(kht_parse_ex(body, n, 7, k, KH_FLAVOR_EXPORTER, NULL, &sevens, err, 256), 0);
    assert_true(whole->nrows >= 10);
    assert_same_report(whole, sevens);
    kh_report_free(whole);
    kh_report_free(sevens);
    free(body);
    free(fixture);
}

#define VM_STATS                                                                             \
    "[{\"type\":\"erlang-vm-memory\",\"total\":61439512,\"processes\":13476560,"             \
    "\"processes_used\":13475384,\"system\":47962952,\"atom\":512625,\"atom_used\":497306,"  \
    "\"binary\":1141960,\"code\":12094738,\"ets\":1317536},"                                 \
    "{\"type\":\"erlang-vm-statistics\",\"run_queue\":1,\"nested\":{\"a\":[1]}}]"

static void test_node_report(void **state)
{
    (void)state;
    static const int64_t want[] = {61439512, 13476560, 13475384, 47962952, 512625,
                                   497306,   1141960,  12094738, 1317536};
    static const char *const names[] = {"total",     "processes", "processes_used",
                                        "system",    "atom",      "atom_used",
                                        "binary",    "code",      "ets"};
    char *body = kht_build(kht_node_base, VM_STATS, NULL, NULL);
    struct kh_report *r = NULL;
    char err[256];
    assert_int_equal(kht_parse_ex(body, strlen(body), 0, KH_REPORT_NODE, KH_FLAVOR_EXPORTER,
                                  NULL, &r, err, sizeof(err)),
                     0);
    assert_int_equal(r->kind, KH_REPORT_NODE);
    assert_string_equal(r->node_name.p, "sora@10.0.0.5");
    assert_string_equal(r->time_text, "2026-11-24T06:15:42.500000Z");
    assert_int_equal(r->nrows, 2); /* the statistics object goes to node_other_stats */
    const struct kh_row *row = r->rows;
    assert_int_equal(row->table, kh_table_erlang_vm_memory);
    assert_string_equal(kh_stats_tables[row->table].table, "erlang_vm_memory_stats");
    for (size_t i = 0; i < 9; i++) {
        const struct kh_value *v = kht_val(row, names[i]);
        assert_int_equal(v->type, KH_COL_INT);
        assert_true(v->u.i == want[i]);
    }
    assert_null(row->extra.p);
    row = row->next;
    assert_string_equal(kh_stats_tables[row->table].table, "node_other_stats");
    assert_string_equal(row->stats_type.p, "erlang-vm-statistics");
    assert_int_equal(row->stats_index, 1);
    assert_string_equal(row->extra.p, "{\"run_queue\":1,\"nested\":{\"a\":[1]}}");
    kh_report_free(r);
    free(body);
    /* connection keys mean nothing here */
    body = kht_build(kht_node_base, VM_STATS, "role", "5");
    assert_int_equal(kht_parse_ex(body, strlen(body), 0, KH_REPORT_NODE, KH_FLAVOR_EXPORTER,
                                  NULL, NULL, err, sizeof(err)),
                     0);
    free(body);
    body = kht_build(kht_node_base, VM_STATS, "multistream", "\"x\"");
    assert_int_equal(kht_parse_ex(body, strlen(body), 0, KH_REPORT_NODE, KH_FLAVOR_EXPORTER,
                                  NULL, NULL, err, sizeof(err)),
                     0);
    free(body);
}

static void test_node_report_refused(void **state)
{
    (void)state;
    static const struct {
        const char *key, *value, *expect;
        bool prefix;
    } node_rules[] = {
        {"node_name", NULL, "node_name: required", false},
        {"node_name", "\"\"", "node_name: must not be empty", false},
        {"label", NULL, "label: required", false},
        {"version", NULL, "version: required", false},
        {"timestamp", NULL, "timestamp: required", false},
        {"type", NULL, "type: required", false},
        {"stats", NULL, "stats: required", false},
        {"stats", "[{\"total\":1}]", "stats[0].type: required", false},
    };
    char err[256];
    for (size_t i = 0; i < sizeof(node_rules) / sizeof(node_rules[0]); i++) {
        char *body = kht_build(kht_node_base, VM_STATS, node_rules[i].key, node_rules[i].value);
        assert_int_equal(kht_parse_ex(body, strlen(body), 0, KH_REPORT_NODE, KH_FLAVOR_EXPORTER,
                                      NULL, NULL, err, sizeof(err)),
                         KH_EINVAL);
        assert_string_equal(err, node_rules[i].expect);
        free(body);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_fixture_maps_to_typed_columns),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_media_source_split_and_tables),
        cmocka_unit_test(test_quality_limitation_durations_json),
        cmocka_unit_test(test_unknown_members_in_extra),
        cmocka_unit_test(test_wrong_json_type_goes_to_extra),
        cmocka_unit_test(test_legacy_track_kept),
        cmocka_unit_test(test_one_byte_chunks),
        cmocka_unit_test(test_node_report),
        cmocka_unit_test(test_node_report_refused),
    };
    return cmocka_run_group_tests(tests, kht_schema_setup, kht_schema_teardown);
}
