/*
 * Unit tests of the stats-to-row mapping over every browser fixture: each stats object
 * becomes one row in the table of its type, every fixture member lands in a typed column
 * (nothing in extra), and values keep their type and value.
 */
#include <glob.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <yajl/yajl_tree.h>

#include "core/errors.h"
#include "sora/envelope.h"
#include "sora/schema.h"

static char *slurp(const char *path)
{
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    assert_int_equal(fread(buf, 1, (size_t)n, fp), (size_t)n);
    buf[n] = '\0';
    fclose(fp);
    return buf;
}

static const char head[] =
    "{\"type\":\"connection.user-agent\",\"id\":\"Q4M2G8T1ZK7B3X9H5N6R0PWC2D\","
    "\"timestamp\":\"2026-11-24T06:15:42.123456Z\",\"label\":\"WebRTC SFU Sora\","
    "\"version\":\"2024.1.0\",\"node_name\":\"sora@10.0.0.5\",\"multistream\":true,"
    "\"simulcast\":false,\"spotlight\":false,\"role\":\"sendrecv\",\"channel_id\":\"room\","
    "\"session_id\":\"7H3KQ2M9ZV1B8C4X6N0R5T2W9E\",\"client_id\":\"alice\","
    "\"connection_id\":\"F2ZK8Q1M7C3V9B5X0N6T4R2W8H\",\"stats\":";

/* Parses head + stats + "}" fed in chunks of `chunk` bytes. */
static struct kh_report *parse(const char *stats, size_t chunk)
{
    size_t n = strlen(head) + strlen(stats) + 2;
    char *body = malloc(n);
    snprintf(body, n, "%s%s}", head, stats);
    struct kh_envelope *e = kh_envelope_new(KH_REPORT_CONNECTION, KH_FLAVOR_EXPORTER, NULL);
    assert_non_null(e);
    size_t len = strlen(body);
    for (size_t off = 0; off < len; off += chunk) {
        size_t k = len - off < chunk ? len - off : chunk;
        if (kh_envelope_feed(e, body + off, k) != 0)
            fail_msg("feed: %s", kh_envelope_error(e));
    }
    if (kh_envelope_finish(e) != 0)
        fail_msg("finish: %s", kh_envelope_error(e));
    struct kh_report *r = kh_envelope_take_report(e);
    kh_envelope_free(e);
    free(body);
    return r;
}

static const char *expected_table(yajl_val obj)
{
    const char *path_type[] = {"type", NULL};
    const char *path_kind[] = {"kind", NULL};
    const char *type = YAJL_GET_STRING(yajl_tree_get(obj, path_type, yajl_t_string));
    yajl_val kind = yajl_tree_get(obj, path_kind, yajl_t_string);
    const char *ks = kind ? YAJL_GET_STRING(kind) : NULL;
    int t = kh_schema_table_for(type, strlen(type), ks, ks ? strlen(ks) : 0);
    return kh_stats_tables[t].table;
}

static void check_value(int table, yajl_val obj, const char *key, yajl_val v,
                        const struct kh_row *row)
{
    if (strcmp(key, "type") == 0 || strcmp(key, "id") == 0 || strcmp(key, "timestamp") == 0)
        return;
    int m = kh_schema_member(table, key, strlen(key));
    if (m < 0)
        fail_msg("%s.%s has no column", kh_stats_tables[table].table, key);
    const struct kh_value *val = &row->vals[m];
    enum kh_coltype ct = kh_stats_tables[table].members[m].type;
    assert_int_equal(val->type, ct);
    switch (ct) {
    case KH_COL_INT:
        /* integers above 2^53 (candidate-pair priority) must not go through a double */
        assert_int_equal(val->u.i, strtoll(v->u.number.r, NULL, 10));
        break;
    case KH_COL_REAL: assert_true(val->u.d == YAJL_GET_DOUBLE(v)); break;
    case KH_COL_TEXT: assert_string_equal(val->u.s, YAJL_GET_STRING(v)); break;
    case KH_COL_BOOL: assert_int_equal(val->u.b, YAJL_IS_TRUE(v)); break;
    case KH_COL_JSON: {
        char err[128];
        yajl_val got = yajl_tree_parse(val->u.s, err, sizeof(err));
        assert_non_null(got);
        assert_int_equal(got->u.object.len, v->u.object.len);
        for (size_t i = 0; i < v->u.object.len; i++) {
            const char *p[] = {v->u.object.keys[i], NULL};
            yajl_val x = yajl_tree_get(got, p, yajl_t_number);
            assert_non_null(x);
            assert_true(YAJL_GET_DOUBLE(x) == YAJL_GET_DOUBLE(v->u.object.values[i]));
        }
        yajl_tree_free(got);
        break;
    }
    case KH_COL_TIME: fail_msg("%s.%s: no member is a time", kh_stats_tables[table].table, key);
    }
    (void)obj;
}

static void check_fixture(const char *path, size_t chunk)
{
    char *stats = slurp(path);
    char err[256];
    yajl_val arr = yajl_tree_parse(stats, err, sizeof(err));
    assert_non_null(arr);
    struct kh_report *r = parse(stats, chunk);
    assert_int_equal(r->nrows, arr->u.array.len);
    const struct kh_row *row = r->rows;
    for (size_t i = 0; i < arr->u.array.len; i++, row = row->next) {
        yajl_val obj = arr->u.array.values[i];
        assert_non_null(row);
        assert_string_equal(kh_stats_tables[row->table].table, expected_table(obj));
        const char *pid[] = {"id", NULL}, *pts[] = {"timestamp", NULL};
        assert_string_equal(row->stats_id.p,
                            YAJL_GET_STRING(yajl_tree_get(obj, pid, yajl_t_string)));
        assert_true(row->stats_timestamp ==
                    YAJL_GET_DOUBLE(yajl_tree_get(obj, pts, yajl_t_number)));
        if (row->extra.p != NULL)
            fail_msg("%s: %s has extra %s", path, row->stats_id.p, row->extra.p);
        for (size_t k = 0; k < obj->u.object.len; k++)
            check_value(row->table, obj, obj->u.object.keys[k], obj->u.object.values[k], row);
    }
    assert_string_equal(r->time_text, "2026-11-24T06:15:42.123456Z");
    kh_report_free(r);
    yajl_tree_free(arr);
    free(stats);
}

static void every_fixture_maps_to_typed_columns(void **state)
{
    glob_t g;
    assert_int_equal(glob(KH_FIXTURES_DIR "/*-t*.json", 0, NULL, &g), 0);
    assert_true(g.gl_pathc >= 8);
    for (size_t i = 0; i < g.gl_pathc; i++)
        check_fixture(g.gl_pathv[i], 1u << 20);
    globfree(&g);
}

static void byte_by_byte_feeding_gives_the_same_rows(void **state)
{
    check_fixture(KH_FIXTURES_DIR "/chromium-av-sender-t10.json", 1);
    check_fixture(KH_FIXTURES_DIR "/firefox-av-receiver-t3.json", 7);
}

static void unknown_and_mistyped_members_go_to_extra(void **state)
{
    struct kh_report *r = parse(
        "[{\"id\":\"T\",\"timestamp\":1.5,\"type\":\"transport\",\"bytesSent\":\"12\","
        "\"fooNew\":{\"a\":[1,{\"b\":\"q\\\"\"}],\"n\":null},\"flag\":true,\"dtlsState\":null},"
        "{\"type\":\"track\",\"id\":\"L\",\"timestamp\":2,\"ended\":false,\"x\":1e3}]",
        1u << 20);
    assert_int_equal(r->nrows, 2);
    const struct kh_row *t = r->rows;
    int bytes_sent = kh_schema_member(t->table, "bytesSent", 9);
    assert_int_equal(t->vals[bytes_sent].type, 0); /* NULL: the string went to extra */
    assert_string_equal(t->extra.p,
                        "{\"bytesSent\":\"12\",\"fooNew\":{\"a\":[1,{\"b\":\"q\\\"\"}],"
                        "\"n\":null},\"flag\":true}");
    const struct kh_row *o = t->next;
    assert_int_equal(o->table, kh_table_other);
    assert_string_equal(o->stats_type.p, "track");
    assert_string_equal(o->extra.p, "{\"ended\":false,\"x\":1e3}");
    kh_report_free(r);
}

static void media_source_split_by_kind(void **state)
{
    struct kh_report *r =
        parse("[{\"type\":\"media-source\",\"id\":\"a\",\"timestamp\":1,\"audioLevel\":0.5,"
              "\"kind\":\"audio\"},{\"kind\":\"video\",\"type\":\"media-source\",\"id\":\"v\","
              "\"timestamp\":1,\"width\":640},{\"type\":\"media-source\",\"id\":\"x\","
              "\"timestamp\":1}]",
              3);
    assert_string_equal(kh_stats_tables[r->rows->table].table, "rtc_audio_source_stats");
    assert_string_equal(kh_stats_tables[r->rows->next->table].table, "rtc_video_source_stats");
    assert_int_equal(r->rows->next->next->table, kh_table_other);
    kh_report_free(r);
}

static int setup(void **state)
{
    return kh_schema_init();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_fixture_maps_to_typed_columns),
        cmocka_unit_test(byte_by_byte_feeding_gives_the_same_rows),
        cmocka_unit_test(unknown_and_mistyped_members_go_to_extra),
        cmocka_unit_test(media_source_split_by_kind),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
