/*
 * Unit tests of src/store/sqlite.c on a real database file: migrations (idempotent, versions
 * recorded), a batch built from a parsed browser fixture (row counts per table, typed values),
 * idempotent re-delivery on the natural key, and sora_connection first_seen/last_seen.
 * Results are read back through a separate sqlite3 connection.
 */
#include <setjmp.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/config.h"
#include "core/log.h"
#include "kh_test.h"
#include "store/store.h"

#define FIXTURE KH_FIXTURES_DIR "/chromium-av-sender-t10.json"
#define T1 "\"2026-11-24T06:15:42.1Z\""
#define T2 "\"2026-11-24T06:16:42.1Z\""

struct ctx {
    char dir[64];
    char path[96];
    struct kh_config cfg;
    struct kh_store store;
    sqlite3 *db; /* reader */
};

static int setup(void **state)
{
    struct ctx *c = calloc(1, sizeof(*c));
    if (c == NULL || kh_schema_init() != 0)
        return -1;
    strcpy(c->dir, "/tmp/kohaku-sqlite-XXXXXX");
    if (mkdtemp(c->dir) == NULL)
        return -1;
    snprintf(c->path, sizeof(c->path), "%s/k.db", c->dir);
    if (kh_config_init(&c->cfg) != 0)
        return -1;
    free(c->cfg.sqlite_path);
    c->cfg.sqlite_path = strdup(c->path);
    c->store.ops = &kh_store_sqlite_ops;
    const char *err = NULL;
    if (c->store.ops->open(&c->store, &c->cfg, &err) != 0)
        return -1;
    if (sqlite3_open(c->path, &c->db) != SQLITE_OK)
        return -1;
    *state = c;
    return 0;
}

static int teardown(void **state)
{
    struct ctx *c = *state;
    sqlite3_close(c->db);
    c->store.ops->close(&c->store);
    kh_config_cleanup(&c->cfg);
    const char *suffix[] = {"", "-wal", "-shm"};
    for (size_t i = 0; i < 3; i++) {
        char p[128];
        snprintf(p, sizeof(p), "%s%s", c->path, suffix[i]);
        unlink(p);
    }
    rmdir(c->dir);
    free(c);
    kh_schema_cleanup();
    return 0;
}

static void migrate(struct ctx *c)
{
    const char *err = NULL;
    if (c->store.ops->migrate(&c->store, 0, &err) != 0)
        fail_msg("migrate: %s", err);
}

/* The first column of the first row of sql, as an integer (text into `text` if given). */
static long long query(struct ctx *c, const char *sql, char *text, size_t len)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(c->db, sql, -1, &st, NULL) != SQLITE_OK)
        fail_msg("%s: %s", sql, sqlite3_errmsg(c->db));
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    long long v = sqlite3_column_int64(st, 0);
    if (text) {
        const unsigned char *t = sqlite3_column_text(st, 0);
        snprintf(text, len, "%s", t ? (const char *)t : "(null)");
    }
    sqlite3_finalize(st);
    return v;
}

static struct kh_report *conn_report(const char *stats, const char *timestamp)
{
    char *body = kht_envelope(stats, "timestamp", timestamp);
    struct kh_report *r = NULL;
    char err[256];
    if (kht_parse(body, &r, err, sizeof(err)) != 0)
        fail_msg("refused: %s", err);
    free(body);
    return r;
}

static struct kh_report *fixture_report(const char *timestamp)
{
    char *stats = kht_read_file(FIXTURE, NULL);
    struct kh_report *r = conn_report(stats, timestamp);
    free(stats);
    return r;
}

static int write_one(struct ctx *c, struct kh_report *r)
{
    int result = 99;
    struct kh_batch b = {.reports = &r, .results = &result, .nreports = 1, .nrows = r->nrows};
    const char *err = NULL;
    int rc = c->store.ops->write(&c->store, 0, &b, &err);
    if (rc != 0)
        fail_msg("write: %d %s", rc, err ? err : "");
    assert_int_equal(result, 0);
    return rc;
}

static void test_migrate_idempotent(void **state)
{
    struct ctx *c = *state;
    int latest = kh_schema_latest_version();
    migrate(c);
    assert_int_equal(query(c, "SELECT count(*) FROM kohaku_schema_version", NULL, 0), latest);
    assert_int_equal(query(c, "SELECT count(*) FROM kohaku_schema_version WHERE version = 1",
                           NULL, 0),
                     1);
    assert_int_equal(query(c, "SELECT max(version) FROM kohaku_schema_version", NULL, 0),
                     latest);
    long long objects = query(c, "SELECT count(*) FROM sqlite_master", NULL, 0);
    migrate(c);
    assert_int_equal(query(c, "SELECT count(*) FROM kohaku_schema_version", NULL, 0), latest);
    assert_int_equal(query(c, "SELECT count(*) FROM sqlite_master", NULL, 0), objects);
    for (size_t t = 0; t < kh_stats_ntables; t++) {
        char sql[160];
        snprintf(sql, sizeof(sql), "SELECT count(*) FROM sqlite_master WHERE name = '%s'",
                 kh_stats_tables[t].table);
        assert_int_equal(query(c, sql, NULL, 0), 1);
    }
    assert_int_equal(query(c, "SELECT count(*) FROM sqlite_master WHERE name IN "
                              "('sora_connection', 'sora_node')",
                           NULL, 0),
                     2);
    assert_true(c->store.ops->healthy(&c->store));
}

static void check_counts(struct ctx *c, const struct kh_report *r, long long times)
{
    for (size_t t = 0; t < kh_stats_ntables; t++) {
        long long want = 0;
        for (const struct kh_row *row = r->rows; row; row = row->next)
            want += row->table == (int)t;
        char sql[160];
        snprintf(sql, sizeof(sql), "SELECT count(*) FROM \"%s\"", kh_stats_tables[t].table);
        long long got = query(c, sql, NULL, 0);
        if (got != want * times)
            fail_msg("%s: %lld rows, expected %lld", kh_stats_tables[t].table, got,
                     want * times);
    }
}

static void test_write_fixture_batch_idempotent(void **state)
{
    struct ctx *c = *state;
    migrate(c);
    struct kh_report *r = fixture_report(T1);
    assert_true(r->nrows >= 10);
    write_one(c, r);
    check_counts(c, r, 1);
    assert_int_equal(query(c, "SELECT count(*) FROM sora_connection", NULL, 0), 1);
    assert_int_equal(query(c, "SELECT count(*) FROM sora_report", NULL, 0), 1);
    /* the same report again: nothing new */
    write_one(c, r);
    check_counts(c, r, 1);
    assert_int_equal(query(c, "SELECT count(*) FROM sora_connection", NULL, 0), 1);
    assert_int_equal(query(c, "SELECT count(*) FROM sora_report", NULL, 0), 1);
    kh_report_free(r);
    /* the same stats at a later time are new rows */
    r = fixture_report(T2);
    write_one(c, r);
    check_counts(c, r, 2);
    kh_report_free(r);
}

static void test_values_stored(void **state)
{
    struct ctx *c = *state;
    migrate(c);
    struct kh_report *r = fixture_report(T1);
    write_one(c, r);
    char text[512];
    /* every stats row carries the envelope's ids and canonical time */
    query(c, "SELECT DISTINCT time FROM rtc_transport_stats", text, sizeof(text));
    assert_string_equal(text, "2026-11-24T06:15:42.100000Z");
    assert_int_equal(query(c, "SELECT count(*) FROM rtc_codec_stats WHERE connection_id = '"
                              KHT_CONN_ID "' AND channel_id = 'meeting-room-42'",
                           NULL, 0),
                     (long long)query(c, "SELECT count(*) FROM rtc_codec_stats", NULL, 0));
    assert_true(query(c, "SELECT count(*) FROM rtc_codec_stats", NULL, 0) > 0);
    /* a priority above 2^53 comes back as the same integer */
    const struct kh_row *pair = r->rows;
    while (pair && pair->table != kht_table("rtc_ice_candidate_pair_stats"))
        pair = pair->next;
    assert_non_null(pair);
    char sql[256];
    snprintf(sql, sizeof(sql),
             "SELECT priority FROM rtc_ice_candidate_pair_stats WHERE stats_id = '%s'",
             pair->stats_id.p);
    assert_true(query(c, sql, NULL, 0) == kht_val(pair, "priority")->u.i);
    assert_true(kht_val(pair, "priority")->u.i > (1LL << 53));
    snprintf(sql, sizeof(sql),
             "SELECT typeof(priority) FROM rtc_ice_candidate_pair_stats WHERE stats_id = '%s'",
             pair->stats_id.p);
    query(c, sql, text, sizeof(text));
    assert_string_equal(text, "integer");
    query(c, "SELECT quality_limitation_durations FROM rtc_outbound_rtp_stream_stats "
             "WHERE kind = 'video'",
          text, sizeof(text));
    assert_non_null(strstr(text, "\"bandwidth\":"));
    assert_int_equal(query(c, "SELECT count(*) FROM rtc_outbound_rtp_stream_stats WHERE "
                              "extra IS NOT NULL",
                           NULL, 0),
                     0);
    query(c, "SELECT role || ',' || multistream || ',' || simulcast || ',' || client_id || ',' "
             "|| session_id FROM sora_connection",
          text, sizeof(text));
    assert_string_equal(text, "sendrecv,1,0,alice," KHT_SESSION_ID);
    kh_report_free(r);
    /* members without a column land in extra */
    r = conn_report("[{\"id\":\"T9\",\"timestamp\":1.5,\"type\":\"transport\",\"vendorX\":[1],"
                    "\"bytesSent\":\"12\"}]",
                    T2);
    write_one(c, r);
    query(c, "SELECT extra FROM rtc_transport_stats WHERE stats_id = 'T9'", text, sizeof(text));
    assert_string_equal(text, "{\"vendorX\":[1],\"bytesSent\":\"12\"}");
    assert_int_equal(query(c, "SELECT bytes_sent IS NULL FROM rtc_transport_stats WHERE "
                              "stats_id = 'T9'",
                           NULL, 0),
                     1);
    kh_report_free(r);
}

static void seen(struct ctx *c, char *first, char *last)
{
    query(c, "SELECT first_seen FROM sora_connection", first, 64);
    query(c, "SELECT last_seen FROM sora_connection", last, 64);
}

static void test_connection_first_last_seen(void **state)
{
    struct ctx *c = *state;
    migrate(c);
    char first[64], last[64];
    struct kh_report *r1 = conn_report(NULL, T1), *r2 = conn_report(NULL, T2);
    write_one(c, r1);
    seen(c, first, last);
    assert_string_equal(first, "2026-11-24T06:15:42.100000Z");
    assert_string_equal(last, "2026-11-24T06:15:42.100000Z");
    /* a later report advances last_seen and keeps first_seen */
    write_one(c, r2);
    seen(c, first, last);
    assert_string_equal(first, "2026-11-24T06:15:42.100000Z");
    assert_string_equal(last, "2026-11-24T06:16:42.100000Z");
    /* replaying the older report changes neither */
    write_one(c, r1);
    seen(c, first, last);
    assert_string_equal(first, "2026-11-24T06:15:42.100000Z");
    assert_string_equal(last, "2026-11-24T06:16:42.100000Z");
    assert_int_equal(query(c, "SELECT count(*) FROM sora_connection", NULL, 0), 1);
    assert_int_equal(query(c, "SELECT count(*) FROM sora_report", NULL, 0), 2);
    kh_report_free(r1);
    kh_report_free(r2);
    /* a report older than any seen moves first_seen back (first_seen is the earliest) */
    struct kh_report *r0 = conn_report(NULL, "\"2026-11-24T06:14:42.1Z\"");
    write_one(c, r0);
    seen(c, first, last);
    assert_string_equal(first, "2026-11-24T06:14:42.100000Z");
    assert_string_equal(last, "2026-11-24T06:16:42.100000Z");
    kh_report_free(r0);
}

/* A batch of two reports of one connection, delivered twice, then an older report of it:
 * rows stored once, first_seen moves back, last_seen stays. */
static void test_two_report_batch_idempotent(void **state)
{
    struct ctx *c = *state;
    migrate(c);
    assert_int_equal(query(c, "SELECT max(version) FROM kohaku_schema_version", NULL, 0),
                     kh_schema_latest_version());
    const char *stats = "[{\"id\":\"T\",\"type\":\"transport\",\"timestamp\":1,\"bytesSent\":5},"
                        "{\"id\":\"C\",\"type\":\"codec\",\"timestamp\":1,"
                        "\"mimeType\":\"audio/opus\"}]";
    struct kh_report *r[3] = {conn_report(stats, "\"2026-11-24T06:00:00.5Z\""),
                              conn_report(stats, "\"2026-11-24T07:00:00.5Z\""),
                              conn_report(stats, "\"2026-11-24T05:00:00.5Z\"")};
    int results[3];
    const char *err = NULL;
    struct kh_batch b = {.reports = r, .results = results, .nreports = 2, .nrows = 4};
    assert_int_equal(c->store.ops->write(&c->store, 0, &b, &err), 0);
    assert_int_equal(c->store.ops->write(&c->store, 0, &b, &err), 0); /* delivered twice */
    assert_int_equal(query(c, "SELECT count(*) FROM rtc_transport_stats", NULL, 0), 2);
    assert_int_equal(query(c, "SELECT count(*) FROM rtc_codec_stats", NULL, 0), 2);
    assert_int_equal(query(c, "SELECT count(*) FROM sora_report", NULL, 0), 2);
    assert_int_equal(query(c, "SELECT sum(bytes_sent) FROM rtc_transport_stats", NULL, 0), 10);
    struct kh_batch old = {.reports = &r[2], .results = results, .nreports = 1, .nrows = 2};
    assert_int_equal(c->store.ops->write(&c->store, 0, &old, &err), 0);
    char first[64], last[64];
    seen(c, first, last);
    assert_string_equal(first, "2026-11-24T05:00:00.500000Z");
    assert_string_equal(last, "2026-11-24T07:00:00.500000Z");
    assert_int_equal(query(c, "SELECT count(*) FROM sora_connection", NULL, 0), 1);
    assert_true(c->store.ops->healthy(&c->store));
    for (int i = 0; i < 3; i++)
        kh_report_free(r[i]);
}

static void test_node_report_and_multi_report_batch(void **state)
{
    struct ctx *c = *state;
    migrate(c);
    char *body = kht_build(kht_node_base,
                           "[{\"type\":\"erlang-vm-memory\",\"total\":100,\"processes\":1,"
                           "\"processes_used\":2,\"system\":3,\"atom\":4,\"atom_used\":5,"
                           "\"binary\":6,\"code\":7,\"ets\":8}]",
                           NULL, NULL);
    struct kh_report *node = NULL;
    assert_int_equal(kht_parse_ex(body, strlen(body), 0, KH_REPORT_NODE, KH_FLAVOR_EXPORTER,
                                  NULL, &node, NULL, 0),
                     0);
    free(body);
    struct kh_report *conn = conn_report(NULL, T1);
    struct kh_report *reports[] = {node, conn};
    int results[] = {99, 99};
    struct kh_batch b = {.reports = reports, .results = results, .nreports = 2,
                         .nrows = node->nrows + conn->nrows};
    const char *err = NULL;
    for (int k = 0; k < 2; k++) { /* twice: idempotent */
        assert_int_equal(c->store.ops->write(&c->store, 0, &b, &err), 0);
        assert_int_equal(results[0], 0);
        assert_int_equal(results[1], 0);
        assert_int_equal(query(c, "SELECT count(*) FROM erlang_vm_memory_stats", NULL, 0), 1);
        assert_int_equal(query(c, "SELECT count(*) FROM sora_node", NULL, 0), 1);
        assert_int_equal(query(c, "SELECT count(*) FROM rtc_transport_stats", NULL, 0), 1);
        assert_int_equal(query(c, "SELECT count(*) FROM sora_report", NULL, 0), 2);
    }
    assert_int_equal(query(c, "SELECT total + ets FROM erlang_vm_memory_stats WHERE "
                              "node_name = 'sora@10.0.0.5'",
                           NULL, 0),
                     108);
    kh_report_free(node);
    kh_report_free(conn);
}

int main(void)
{
    kh_log_set_level(KH_LOG_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_migrate_idempotent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_fixture_batch_idempotent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_values_stored, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connection_first_last_seen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_report_batch_idempotent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_node_report_and_multi_report_batch, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
