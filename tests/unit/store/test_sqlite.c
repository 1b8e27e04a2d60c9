/*
 * Unit tests of src/store/sqlite.c on a real database file: migrations (idempotent, versions
 * recorded), a batch built from a parsed browser fixture (row counts per table, typed values),
 * idempotent re-delivery on the natural key, sora_connection first_seen/last_seen, and the
 * envelope tables left as the statements written out by hand before them left them. Session
 * and event webhooks (the sample logs): their lifecycle rows end up the same whatever order
 * the webhooks come in and however often, in one batch or one by one, a redelivery is
 * counted as such, and they touch no stats table. The read side's query answers rows of every
 * width up to KH_STORE_MAX_CELLS and refuses wider ones.
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
#include "sora/lifecycle.h"
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

/* The envelope statements as sqlite.c spelled them out before the envelope tables were
 * described, and their positional binds: the reference the derived ones are held to. */
static const char *const old_envelope_sql[] = {
    "INSERT INTO sora_connection (connection_id, channel_id, session_id, client_id, bundle_id, "
    "role, multistream, simulcast, spotlight, label, version, node_name, first_seen, last_seen) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?13) "
    "ON CONFLICT (connection_id) DO UPDATE SET "
    "first_seen = min(first_seen, excluded.first_seen), "
    "last_seen = max(last_seen, excluded.last_seen), "
    "bundle_id = coalesce(excluded.bundle_id, bundle_id)",
    "INSERT INTO sora_node (node_name, label, version, first_seen, last_seen) "
    "VALUES (?1, ?2, ?3, ?4, ?4) ON CONFLICT (node_name) DO UPDATE SET "
    "label = excluded.label, version = excluded.version, "
    "first_seen = min(first_seen, excluded.first_seen), "
    "last_seen = max(last_seen, excluded.last_seen)",
    "INSERT OR IGNORE INTO sora_report (time, source, kind, report_id, channel_id, "
    "connection_id, node_name, stats_count, body_bytes, received_at) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
};

static void old_text(sqlite3_stmt *st, int i, const struct kh_str *s)
{
    if (s->p)
        sqlite3_bind_text(st, i, s->p, (int)s->len, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, i);
}

static void old_step(sqlite3_stmt *st)
{
    assert_int_equal(sqlite3_step(st), SQLITE_DONE);
    sqlite3_reset(st);
}

static void old_write_envelope(sqlite3_stmt *const st[3], const struct kh_report *r)
{
    bool conn = r->kind == KH_REPORT_CONNECTION;
    sqlite3_stmt *s = st[2];
    sqlite3_bind_text(s, 1, r->time_text, KH_TIME_TEXT_LEN, SQLITE_STATIC);
    old_text(s, 2, conn ? &r->connection_id : &r->node_name);
    sqlite3_bind_text(s, 3, conn ? "connection" : "node", -1, SQLITE_STATIC);
    old_text(s, 4, &r->id);
    old_text(s, 5, &r->channel_id);
    old_text(s, 6, &r->connection_id);
    old_text(s, 7, &r->node_name);
    sqlite3_bind_int64(s, 8, (sqlite3_int64)r->nrows);
    sqlite3_bind_int64(s, 9, (sqlite3_int64)r->body_bytes);
    sqlite3_bind_text(s, 10, r->received_text, KH_TIME_TEXT_LEN, SQLITE_STATIC);
    old_step(s);
    if (!conn) {
        s = st[1];
        old_text(s, 1, &r->node_name);
        old_text(s, 2, &r->label);
        old_text(s, 3, &r->version);
        sqlite3_bind_text(s, 4, r->time_text, KH_TIME_TEXT_LEN, SQLITE_STATIC);
        old_step(s);
        return;
    }
    s = st[0];
    const struct kh_str *text[] = {&r->connection_id, &r->channel_id, &r->session_id,
                                   &r->client_id,     &r->bundle_id,  &r->role};
    for (int k = 0; k < 6; k++)
        old_text(s, k + 1, text[k]);
    const int8_t flags[] = {r->multistream, r->simulcast, r->spotlight};
    for (int k = 0; k < 3; k++) {
        if (flags[k] < 0)
            sqlite3_bind_null(s, 7 + k);
        else
            sqlite3_bind_int(s, 7 + k, flags[k]);
    }
    old_text(s, 10, &r->label);
    old_text(s, 11, &r->version);
    old_text(s, 12, &r->node_name);
    sqlite3_bind_text(s, 13, r->time_text, KH_TIME_TEXT_LEN, SQLITE_STATIC);
    old_step(s);
}

/* Every row of table, each value with its SQLite type, in key order. */
static char *dump_table(sqlite3 *db, const char *table)
{
    char sql[128];
    snprintf(sql, sizeof(sql), "SELECT * FROM \"%s\" ORDER BY 1, 2", table);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        fail_msg("%s: %s", sql, sqlite3_errmsg(db));
    struct kh_buf b;
    kh_buf_init(&b, 1u << 20);
    while (sqlite3_step(st) == SQLITE_ROW) {
        for (int i = 0; i < sqlite3_column_count(st); i++) {
            const unsigned char *v = sqlite3_column_text(st, i);
            kh_buf_printf(&b, "%s=%d:%s|", sqlite3_column_name(st, i),
                          sqlite3_column_type(st, i), v ? (const char *)v : "");
        }
        kh_buf_printf(&b, "\n");
    }
    sqlite3_finalize(st);
    kh_buf_append(&b, "", 1);
    return b.data;
}

static struct kh_report *node_report(const char *timestamp, const char *version)
{
    char *body = kht_build(kht_node_base, "[]", "timestamp", timestamp);
    char *v = strstr(body, "\"2023.2.0\"");
    assert_non_null(v);
    memcpy(v + 1, version, 8); /* the same length */
    struct kh_report *r = NULL;
    assert_int_equal(kht_parse_ex(body, strlen(body), 0, KH_REPORT_NODE, KH_FLAVOR_EXPORTER,
                                  NULL, &r, NULL, 0),
                     0);
    free(body);
    return r;
}

/* Sets the base envelope's timestamp (T1) of body to another of the same length. */
static void set_timestamp(char *body, const char *timestamp)
{
    char *ts = strstr(body, T1);
    assert_non_null(ts);
    assert_int_equal(strlen(timestamp), strlen(T1));
    memcpy(ts, timestamp, strlen(timestamp));
}

static struct kh_report *parse_as(char *body, enum kh_envelope_flavor flavor)
{
    struct kh_report *r = NULL;
    assert_int_equal(kht_parse_ex(body, strlen(body), 0, KH_REPORT_CONNECTION, flavor, NULL, &r,
                                  NULL, 0),
                     0);
    free(body);
    return r;
}

/* A connection report with a bundle_id. */
static struct kh_report *bundle_report(const char *timestamp)
{
    char *body = kht_envelope(NULL, "bundle_id", "\"B1\"");
    set_timestamp(body, timestamp);
    return parse_as(body, KH_FLAVOR_EXPORTER);
}

/* Another connection, from the stats webhook, without multistream (NULL in sora_connection). */
static struct kh_report *webhook_report(const char *timestamp)
{
    char *body = kht_build(kht_webhook_base, KHT_DEFAULT_STATS, "multistream", NULL);
    char *id = strstr(body, KHT_CONN_ID);
    assert_non_null(id);
    id[0] = 'W';
    set_timestamp(body, timestamp);
    return parse_as(body, KH_FLAVOR_WEBHOOK);
}

static void migrate_versions(sqlite3 *db, int from, int to)
{
    for (int v = from; v <= to; v++) {
        struct kh_buf b;
        kh_buf_init(&b, 16u << 20);
        assert_int_equal(kh_schema_migration_sql(KH_DIALECT_SQLITE, v, &b), 0);
        assert_int_equal(kh_buf_append(&b, "", 1), 0);
        assert_int_equal(sqlite3_exec(db, b.data, NULL, NULL, NULL), SQLITE_OK);
        kh_buf_cleanup(&b);
    }
}

/* The store's derived statements leave the envelope tables as the old statements did, over
 * a sequence that exercises every merge: first seen kept (and moved back by an older report),
 * last seen advanced, bundle_id coalesced, a node's label and version replaced, a replay
 * ignored, an absent flag stored as NULL; and last_seen_hour as schema version 9 computes it
 * from last_seen. */
static void test_envelope_tables_as_before(void **state)
{
    struct ctx *c = *state;
    migrate(c);
    char old_path[128];
    snprintf(old_path, sizeof(old_path), "%s/old.db", c->dir);
    sqlite3 *old;
    assert_int_equal(sqlite3_open(old_path, &old), SQLITE_OK);
    migrate_versions(old, 1, 8);
    sqlite3_stmt *st[3];
    for (int i = 0; i < 3; i++)
        assert_int_equal(sqlite3_prepare_v2(old, old_envelope_sql[i], -1, &st[i], NULL),
                         SQLITE_OK);
    struct kh_report *reports[] = {
        conn_report(NULL, T1),
        bundle_report("\"2026-11-24T06:15:52.1Z\""),
        conn_report(NULL, T2),
        conn_report(NULL, T1),
        conn_report(NULL, "\"2026-11-24T06:14:42.1Z\""),
        webhook_report("\"2026-11-24T06:15:43.1Z\""),
        node_report("\"2026-11-24T06:15:42.5Z\"", "2024.1.0"),
        node_report("\"2026-11-24T06:17:42.5Z\"", "2024.2.0"),
        node_report("\"2026-11-24T06:13:42.5Z\"", "2023.1.0"),
        node_report("\"2026-11-24T06:17:42.5Z\"", "2024.2.0"),
    };
    size_t n = sizeof(reports) / sizeof(reports[0]);
    for (size_t i = 0; i < n; i++) {
        write_one(c, reports[i]);
        old_write_envelope(st, reports[i]);
    }
    /* the old statements' database at the newest version: version 9 computes each
     * connection's last_seen_hour from its last_seen, as ingest did */
    migrate_versions(old, 9, kh_schema_latest_version());
    for (size_t t = 0; t < 3; t++) { /* the tables the statements written by hand knew */
        char *got = dump_table(c->db, kh_env_tables[t].table);
        char *want = dump_table(old, kh_env_tables[t].table);
        assert_string_equal(got, want);
        assert_true(strlen(got) > 0);
        free(got);
        free(want);
    }
    for (size_t t = 3; t < kh_env_ntables; t++) { /* the webhooks': stats reports fill none */
        char *got = dump_table(c->db, kh_env_tables[t].table);
        assert_string_equal(got, "");
        free(got);
    }
    for (size_t i = 0; i < n; i++)
        kh_report_free(reports[i]);
    for (int i = 0; i < 3; i++)
        sqlite3_finalize(st[i]);
    sqlite3_close(old);
    unlink(old_path);
}

/* --- session and event webhooks ------------------------------------------------------------ */

#define LOGS KH_SORA_LOGS_DIR
#define NWEBHOOKS 8 /* the session log's 3 lines and the event log's 5 */

static struct kh_report *webhook_line(int i)
{
    char *line = kht_read_line(i < 3 ? LOGS "/session_webhook.jsonl" : LOGS "/event_webhook.jsonl",
                               i < 3 ? i : i - 3, NULL);
    struct kh_report *r;
    char err[256] = "";
    if (kh_lifecycle_parse(KH_LC_ANY, KH_LC_LOG_LINE, line, strlen(line), NULL, &r, err,
                           sizeof(err)) != 0)
        fail_msg("line %d: %s", i, err);
    free(line);
    return r;
}

/* The webhooks in `order` (indexes; -1 ends) written in one batch; what it stored. */
static struct kh_batch write_webhooks(struct ctx *c, const int *order)
{
    struct kh_report *reports[32];
    int results[32];
    size_t n = 0;
    for (; order[n] >= 0; n++)
        reports[n] = webhook_line(order[n]);
    struct kh_batch b = {.reports = reports, .results = results, .nreports = n};
    const char *err = NULL;
    if (c->store.ops->write(&c->store, 0, &b, &err) != 0)
        fail_msg("write: %s", err);
    for (size_t i = 0; i < n; i++)
        kh_report_free(reports[i]);
    return b;
}

static char *lifecycle_dump(struct ctx *c)
{
    char *s = dump_table(c->db, "sora_session");
    char *l = dump_table(c->db, "sora_connection_lifecycle");
    char *both = malloc(strlen(s) + strlen(l) + 1);
    strcat(strcpy(both, s), l);
    free(s);
    free(l);
    return both;
}

static void clear_webhooks(struct ctx *c)
{
    assert_int_equal(sqlite3_exec(c->db,
                                  "DELETE FROM sora_session; DELETE FROM "
                                  "sora_connection_lifecycle; DELETE FROM sora_webhook",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
}

static int64_t count_rows(struct ctx *c, const char *sql)
{
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(c->db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return n;
}

/* The read side's query answers every column of a wide row (the console reads stats rows of
 * 80 columns), and refuses one wider than KH_STORE_MAX_CELLS instead of cutting it. */
struct wide {
    int rows, ncells;
    long long last;
};

static int on_wide_row(void *arg, const struct kh_value *cells, int ncells)
{
    struct wide *w = arg;
    w->rows++;
    w->ncells = ncells;
    w->last = cells[ncells - 1].type == KH_COL_INT ? (long long)cells[ncells - 1].u.i : -1;
    return 0;
}

static int wide_query(struct ctx *c, int ncols, struct wide *w, const char **err)
{
    char sql[8192];
    int n = snprintf(sql, sizeof(sql), "SELECT 0");
    for (int i = 1; i < ncols; i++)
        n += snprintf(sql + n, sizeof(sql) - (size_t)n, ", %d", i);
    *w = (struct wide){0};
    return c->store.ops->query(&c->store, sql, NULL, 0, 0, on_wide_row, w, err);
}

static void test_query_wide_rows(void **state)
{
    struct ctx *c = *state;
    migrate(c);
    struct wide w;
    const char *err = NULL;
    assert_int_equal(wide_query(c, 100, &w, &err), 0);
    assert_int_equal(w.rows, 1);
    assert_int_equal(w.ncells, 100);
    assert_int_equal(w.last, 99);
    assert_int_equal(wide_query(c, KH_STORE_MAX_CELLS, &w, &err), 0);
    assert_int_equal(w.ncells, KH_STORE_MAX_CELLS);
    assert_int_equal(wide_query(c, KH_STORE_MAX_CELLS + 1, &w, &err), KH_EINVAL);
    assert_int_equal(w.rows, 0);
    assert_non_null(strstr(err, "columns"));
}

static void test_webhooks_any_order(void **state)
{
    struct ctx *c = *state;
    migrate(c);
    static const int forward[] = {0, 1, 2, 3, 4, 5, 6, 7, -1};
    struct kh_batch b = write_webhooks(c, forward);
    assert_int_equal(b.webhooks_stored[0], 3);
    assert_int_equal(b.webhooks_stored[1], 5);
    assert_int_equal(b.webhooks_duplicate + b.reports_duplicate, 0);
    assert_int_equal(b.reports_stored[0] + b.reports_stored[1], 0);
    char *want = lifecycle_dump(c);
    assert_int_equal(count_rows(c, "SELECT count(*) FROM sora_session"), 1);
    assert_int_equal(count_rows(c, "SELECT count(*) FROM sora_connection_lifecycle"), 2);
    assert_int_equal(count_rows(c, "SELECT count(*) FROM sora_webhook"), NWEBHOOKS);
    assert_int_equal(count_rows(c, "SELECT count(*) FROM sora_connection_lifecycle WHERE "
                                   "created IS NOT NULL AND destroyed IS NOT NULL AND end_type = "
                                   "'connection.destroyed'"),
                     2);
    assert_int_equal(count_rows(c, "SELECT max_connections FROM sora_session WHERE destroyed = "
                                   "'2026-11-30T09:01:15.123456Z'"),
                     2);
    /* all of it again: nothing changes, every webhook a duplicate */
    b = write_webhooks(c, forward);
    assert_int_equal(b.webhooks_duplicate, NWEBHOOKS);
    assert_int_equal(b.webhooks_stored[0] + b.webhooks_stored[1], 0);
    char *got = lifecycle_dump(c);
    assert_string_equal(got, want);
    free(got);
    /* destroyed before created, each twice, in one batch and one by one */
    static const int backward[] = {7, 6, 2, 5, 1, 4, 3, 0, 7, 2, 0, -1};
    clear_webhooks(c);
    write_webhooks(c, backward);
    got = lifecycle_dump(c);
    assert_string_equal(got, want);
    free(got);
    clear_webhooks(c);
    for (size_t i = 0; backward[i] >= 0; i++) {
        int one[] = {backward[i], -1};
        write_webhooks(c, one);
    }
    got = lifecycle_dump(c);
    assert_string_equal(got, want);
    free(got);
    free(want);
    /* and no stats table, sora_connection or sora_report has a row */
    assert_int_equal(count_rows(c, "SELECT count(*) FROM sora_connection"), 0);
    assert_int_equal(count_rows(c, "SELECT count(*) FROM sora_report"), 0);
    for (size_t t = 0; t < kh_stats_ntables; t++) {
        char sql[128];
        snprintf(sql, sizeof(sql), "SELECT count(*) FROM \"%s\"", kh_stats_tables[t].table);
        assert_int_equal(count_rows(c, sql), 0);
    }
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
        cmocka_unit_test_setup_teardown(test_envelope_tables_as_before, setup, teardown),
        cmocka_unit_test_setup_teardown(test_webhooks_any_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_query_wide_rows, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
