/*
 * Unit tests of src/sora/schema.c and schema_table.c: snake_case column names, the tables of
 * DESIGN 2, type -> table and member lookups, and the derived SQL (migration DDL in both
 * dialects, executed in SQLite; INSERT placeholders). The lifecycle tables of the session and
 * event webhooks (version 6): declared as their column enums say, merged only in ways that
 * make the order of webhooks and redeliveries not matter (checked by upserting rows in every
 * order in SQLite), and PostgreSQL's statement merging one key's rows before its upsert.
 */
#include <setjmp.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "core/timeutil.h"
#include "kh_test.h"

static const char *const design_tables[] = {
    "rtc_codec_stats",
    "rtc_inbound_rtp_stream_stats",
    "rtc_outbound_rtp_stream_stats",
    "rtc_remote_inbound_rtp_stream_stats",
    "rtc_remote_outbound_rtp_stream_stats",
    "rtc_audio_source_stats",
    "rtc_video_source_stats",
    "rtc_audio_playout_stats",
    "rtc_data_channel_stats",
    "rtc_transport_stats",
    "rtc_ice_candidate_pair_stats",
    "rtc_ice_candidate_stats",
    "rtc_certificate_stats",
    "rtc_peer_connection_stats",
    "rtc_other_stats",
    "erlang_vm_memory_stats",
};
#define NDESIGN (sizeof(design_tables) / sizeof(design_tables[0]))

static void test_snake_case(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        {"bytesReceived", "bytes_received"},
        {"qpSum", "qp_sum"},
        {"base64Certificate", "base64_certificate"},
        {"packetsReceivedWithEct1", "packets_received_with_ect1"},
        {"ssrc", "ssrc"},
        {"processes_used", "processes_used"},
        {"totalSquaredInterFrameDelay", "total_squared_inter_frame_delay"},
    };
    char out[128];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        kh_schema_snake_case(cases[i][0], out, sizeof(out));
        assert_string_equal(out, cases[i][1]);
    }
    /* a short buffer truncates and stays terminated */
    kh_schema_snake_case("bytesReceived", out, 6);
    assert_true(strlen(out) < 6);
    assert_int_equal(strncmp(out, "bytes", strlen(out)), 0);
    /* the derived column names use it */
    int t = kht_table("rtc_inbound_rtp_stream_stats");
    assert_string_equal(kh_schema_column(t, kh_schema_member(t, "qpSum", 5)), "qp_sum");
}

static void test_design_tables_exist(void **state)
{
    (void)state;
    for (size_t i = 0; i < NDESIGN; i++)
        assert_true(kht_table(design_tables[i]) >= 0);
    assert_string_equal(kh_stats_tables[kh_table_other].table, "rtc_other_stats");
    assert_null(kh_stats_tables[kh_table_other].type);
    assert_string_equal(kh_stats_tables[kh_table_erlang_vm_memory].table,
                        "erlang_vm_memory_stats");
    assert_int_equal(kh_stats_tables[kh_table_erlang_vm_memory].scope, KH_SCOPE_NODE);
    /* table names are unique */
    for (size_t a = 0; a < kh_stats_ntables; a++)
        for (size_t b = a + 1; b < kh_stats_ntables; b++)
            assert_string_not_equal(kh_stats_tables[a].table, kh_stats_tables[b].table);
}

static int table_for(const char *type, const char *kind)
{
    return kh_schema_table_for(type, strlen(type), kind, kind ? strlen(kind) : 0);
}

static void test_table_for(void **state)
{
    (void)state;
    static const char *const cases[][3] = {
        {"codec", NULL, "rtc_codec_stats"},
        {"inbound-rtp", NULL, "rtc_inbound_rtp_stream_stats"},
        {"outbound-rtp", NULL, "rtc_outbound_rtp_stream_stats"},
        {"remote-inbound-rtp", NULL, "rtc_remote_inbound_rtp_stream_stats"},
        {"remote-outbound-rtp", NULL, "rtc_remote_outbound_rtp_stream_stats"},
        {"media-source", "audio", "rtc_audio_source_stats"},
        {"media-source", "video", "rtc_video_source_stats"},
        {"media-source", NULL, "rtc_other_stats"},
        {"media-source", "data", "rtc_other_stats"},
        {"media-playout", NULL, "rtc_audio_playout_stats"},
        {"data-channel", NULL, "rtc_data_channel_stats"},
        {"transport", NULL, "rtc_transport_stats"},
        {"candidate-pair", NULL, "rtc_ice_candidate_pair_stats"},
        {"local-candidate", NULL, "rtc_ice_candidate_stats"},
        {"remote-candidate", NULL, "rtc_ice_candidate_stats"},
        {"certificate", NULL, "rtc_certificate_stats"},
        {"peer-connection", NULL, "rtc_peer_connection_stats"},
        {"track", NULL, "rtc_other_stats"},
        {"csrc", NULL, "rtc_other_stats"},
        {"", NULL, "rtc_other_stats"},
        {"codecs", NULL, "rtc_other_stats"},
        {"code", NULL, "rtc_other_stats"},
        /* node tables are not for connection stats */
        {"erlang-vm-memory", NULL, "rtc_other_stats"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int t = table_for(cases[i][0], cases[i][1]);
        if (strcmp(kh_stats_tables[t].table, cases[i][2]) != 0)
            fail_msg("%s/%s -> %s, expected %s", cases[i][0], cases[i][1] ? cases[i][1] : "-",
                     kh_stats_tables[t].table, cases[i][2]);
    }
    /* lengths are honoured: "codec" inside a longer buffer */
    assert_int_equal(kh_schema_table_for("codecXYZ", 5, NULL, 0), kht_table("rtc_codec_stats"));
    assert_true(kh_schema_kind_dependent("media-source", 12));
    assert_false(kh_schema_kind_dependent("codec", 5));
    assert_false(kh_schema_kind_dependent("media-playout", 13));
}

static void test_member_lookup(void **state)
{
    (void)state;
    int in = kht_table("rtc_inbound_rtp_stream_stats");
    int idx = kh_schema_member(in, "bytesReceived", 13);
    assert_true(idx >= 0);
    assert_string_equal(kh_stats_tables[in].members[idx].name, "bytesReceived");
    assert_int_equal(kh_stats_tables[in].members[idx].type, KH_COL_INT);
    assert_string_equal(kh_schema_column(in, idx), "bytes_received");
    idx = kh_schema_member(in, "jitter", 6);
    assert_int_equal(kh_stats_tables[in].members[idx].type, KH_COL_REAL);
    /* not found: unknown, wrong case, snake_case, a prefix, a longer name, another table's */
    assert_int_equal(kh_schema_member(in, "bytesReceivedX", 14), -1);
    assert_int_equal(kh_schema_member(in, "bytesreceived", 13), -1);
    assert_int_equal(kh_schema_member(in, "bytes_received", 14), -1);
    assert_int_equal(kh_schema_member(in, "bytesRec", 8), -1);
    assert_int_equal(kh_schema_member(in, "bytesReceived", 5), -1);
    assert_int_equal(kh_schema_member(in, "", 0), -1);
    assert_int_equal(kh_schema_member(in, "base64Certificate", 17), -1);
    assert_int_equal(kh_schema_member(kh_table_other, "bytesReceived", 13), -1);
    int cert = kht_table("rtc_certificate_stats");
    assert_true(kh_schema_member(cert, "base64Certificate", 17) >= 0);
    /* every member of every table is found at its own index */
    for (size_t t = 0; t < kh_stats_ntables; t++)
        for (size_t m = 0; m < kh_stats_tables[t].nmembers; m++) {
            const char *name = kh_stats_tables[t].members[m].name;
            assert_int_equal(kh_schema_member((int)t, name, strlen(name)), (int)m);
        }
    /* the common members have no column of their own */
    assert_int_equal(kh_schema_member(in, "type", 4), -1);
    assert_int_equal(kh_schema_member(in, "timestamp", 9), -1);
}

static char *migration(enum kh_dialect d, int version)
{
    struct kh_buf b;
    kh_buf_init(&b, 4u << 20);
    assert_int_equal(kh_schema_migration_sql(d, version, &b), 0);
    assert_int_equal(kh_buf_append(&b, "", 1), 0);
    return b.data;
}

/* Each ";\n"-ended statement of part is in whole; when views, each one makes a view, else
 * none does. */
static void statements_in(const char *part, const char *whole, bool views)
{
    for (const char *p = part; *p;) {
        const char *end = strstr(p, ";\n");
        assert_non_null(end);
        size_t n = (size_t)(end - p) + 2;
        char *one = strndup(p, n);
        assert_non_null(strstr(whole, one));
        bool view = strstr(one, "VIEW \"") != NULL;
        assert_true(view == views);
        free(one);
        p += n;
    }
}

/* Citus runs a version's tables, then its views: the two parts are the whole, split. */
static void test_migration_in_two_parts(void **state)
{
    (void)state;
    for (int d = KH_DIALECT_SQLITE; d <= KH_DIALECT_POSTGRES; d++)
        for (int v = 1; v <= kh_schema_latest_version(); v++) {
            struct kh_buf t, w;
            kh_buf_init(&t, 4u << 20);
            kh_buf_init(&w, 4u << 20);
            assert_int_equal(kh_schema_migration_tables_sql((enum kh_dialect)d, v, &t), 0);
            assert_int_equal(kh_schema_migration_views_sql((enum kh_dialect)d, v, &w), 0);
            assert_int_equal(kh_buf_append(&t, "", 1), 0);
            assert_int_equal(kh_buf_append(&w, "", 1), 0);
            char *all = migration((enum kh_dialect)d, v);
            assert_int_equal(strlen(t.data) + strlen(w.data), strlen(all));
            statements_in(t.data, all, false);
            statements_in(w.data, all, true);
            free(all);
            kh_buf_cleanup(&t);
            kh_buf_cleanup(&w);
        }
}

/* An envelope table's statement: whole, or its rows part alone. */
static char *env_sql(enum kh_dialect d, int t, bool rows_only)
{
    struct kh_buf b;
    kh_buf_init(&b, 1u << 20);
    int rc = rows_only ? kh_schema_env_rows_sql(d, t, &b) : kh_schema_env_sql(d, t, &b);
    assert_int_equal(rc, 0);
    assert_int_equal(kh_buf_append(&b, "", 1), 0);
    return b.data;
}

static void test_migration_v1_both_dialects(void **state)
{
    (void)state;
    for (int d = KH_DIALECT_SQLITE; d <= KH_DIALECT_POSTGRES; d++) {
        char *sql = migration((enum kh_dialect)d, 1);
        char needle[256];
        const char *base[] = {"sora_connection", "sora_node"};
        for (size_t i = 0; i < 2; i++) {
            snprintf(needle, sizeof(needle), "CREATE TABLE IF NOT EXISTS \"%s\"", base[i]);
            assert_non_null(strstr(sql, needle));
        }
        for (size_t i = 0; i < NDESIGN; i++) {
            snprintf(needle, sizeof(needle), "CREATE TABLE IF NOT EXISTS \"%s\"",
                     design_tables[i]);
            if (strstr(sql, needle) == NULL)
                fail_msg("dialect %d: no %s", d, needle);
            snprintf(needle, sizeof(needle), "CREATE UNIQUE INDEX IF NOT EXISTS \"%s_key\"",
                     design_tables[i]);
            assert_non_null(strstr(sql, needle));
        }
        snprintf(needle, sizeof(needle),
                 "ON \"rtc_transport_stats\" (\"connection_id\", \"time\", \"stats_id\")");
        assert_non_null(strstr(sql, needle));
        assert_non_null(strstr(sql, "\"connection_id\" text PRIMARY KEY"));
        assert_non_null(strstr(sql, "\"bytes_received\""));
        assert_non_null(strstr(sql, "\"extra\""));
        if (d == KH_DIALECT_POSTGRES) {
            assert_non_null(strstr(sql, "\"quality_limitation_durations\" jsonb"));
            assert_non_null(strstr(sql, "\"time\" timestamptz NOT NULL"));
            assert_non_null(strstr(sql, "\"priority\" bigint"));
        } else {
            assert_non_null(strstr(sql, "\"quality_limitation_durations\" TEXT"));
            assert_null(strstr(sql, "jsonb"));
        }
        free(sql);
    }
    /* a later version does not recreate version 1's tables */
    char *v2 = migration(KH_DIALECT_SQLITE, 2);
    assert_null(strstr(v2, "\"sora_connection\" ("));
    free(v2);
}

static void test_migrations_run_in_sqlite(void **state)
{
    (void)state;
    sqlite3 *db;
    assert_int_equal(sqlite3_open(":memory:", &db), SQLITE_OK);
    int latest = kh_schema_latest_version();
    assert_true(latest >= 1);
    for (int v = 1; v <= latest; v++) {
        char *sql = migration(KH_DIALECT_SQLITE, v);
        char *msg = NULL;
        if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
            fail_msg("version %d: %s", v, msg);
        free(sql);
    }
    for (size_t i = 0; i < NDESIGN; i++) {
        sqlite3_stmt *st;
        assert_int_equal(sqlite3_prepare_v2(db,
                                            "SELECT count(*) FROM sqlite_master WHERE "
                                            "type = 'table' AND name = ?",
                                            -1, &st, NULL),
                         SQLITE_OK);
        sqlite3_bind_text(st, 1, design_tables[i], -1, SQLITE_STATIC);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        if (sqlite3_column_int(st, 0) != 1)
            fail_msg("table %s missing after the migrations", design_tables[i]);
        sqlite3_finalize(st);
    }
    /* the insert statement of every table prepares against the schema */
    for (size_t t = 0; t < kh_stats_ntables; t++) {
        struct kh_buf b;
        kh_buf_init(&b, 1u << 20);
        assert_int_equal(kh_schema_insert_sql(KH_DIALECT_SQLITE, (int)t, &b), 0);
        assert_int_equal(kh_buf_append(&b, "", 1), 0);
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(db, b.data, -1, &st, NULL) != SQLITE_OK)
            fail_msg("%s: %s", b.data, sqlite3_errmsg(db));
        assert_int_equal(sqlite3_bind_parameter_count(st),
                         kh_schema_ncommon((int)t) + (int)kh_stats_tables[t].nmembers +
                             kh_schema_has_extra((int)t));
        sqlite3_finalize(st);
        kh_buf_cleanup(&b);
    }
    /* so does each envelope table's, with one placeholder per column */
    for (size_t t = 0; t < kh_env_ntables; t++) {
        char *sql = env_sql(KH_DIALECT_SQLITE, (int)t, false);
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
            fail_msg("%s: %s", sql, sqlite3_errmsg(db));
        assert_int_equal(sqlite3_bind_parameter_count(st), (int)kh_env_tables[t].ncols);
        sqlite3_finalize(st);
        free(sql);
    }
    sqlite3_close(db);
}

static size_t count(const char *s, const char *needle)
{
    size_t n = 0;
    for (const char *p = s; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

static void test_insert_placeholders(void **state)
{
    (void)state;
    for (size_t t = 0; t < kh_stats_ntables; t++) {
        size_t ncols = (size_t)kh_schema_ncommon((int)t) + kh_stats_tables[t].nmembers +
                       kh_schema_has_extra((int)t);
        for (int d = KH_DIALECT_SQLITE; d <= KH_DIALECT_POSTGRES; d++) {
            struct kh_buf b;
            kh_buf_init(&b, 1u << 20);
            assert_int_equal(kh_schema_insert_sql((enum kh_dialect)d, (int)t, &b), 0);
            assert_int_equal(kh_buf_append(&b, "", 1), 0);
            const char *values = strstr(b.data, "VALUES (");
            assert_non_null(values);
            /* column list: one quoted name per column */
            assert_int_equal(count(b.data, "\"") - 2 /* table name */, 2 * ncols);
            if (d == KH_DIALECT_SQLITE) {
                assert_int_equal(count(values, "?"), ncols);
                assert_non_null(strstr(b.data, "INSERT OR IGNORE INTO"));
            } else {
                char last[32];
                snprintf(last, sizeof(last), "$%zu)", ncols);
                assert_int_equal(count(values, "$"), ncols);
                assert_non_null(strstr(values, last));
                assert_non_null(strstr(b.data, "ON CONFLICT DO NOTHING"));
            }
            kh_buf_cleanup(&b);
        }
    }
    assert_int_equal(kh_schema_ncommon(kht_table("rtc_codec_stats")), 6);
    assert_int_equal(kh_schema_ncommon(kh_table_erlang_vm_memory), 3);
}

static void test_migration_buffer_bound(void **state)
{
    (void)state;
    struct kh_buf b;
    kh_buf_init(&b, 64);
    assert_int_equal(kh_schema_migration_sql(KH_DIALECT_SQLITE, 1, &b), KH_ENOSPC);
    assert_true(b.len <= 64);
    kh_buf_cleanup(&b);
}

/* --- composed dictionaries --------------------------------------------------------------- */

/* Every table's member columns in the order the tables listed them before they were made of
 * their W3C base dictionaries: existing databases have their columns in this order (and a
 * fresh one must have the same), so composing may not reorder them. */
static const char *const columns_before[][2] = {
    {"rtc_codec_stats",
     "payload_type transport_id mime_type clock_rate channels sdp_fmtp_line codec_type"
    },
    {"rtc_inbound_rtp_stream_stats",
     "ssrc kind transport_id codec_id packets_received packets_received_with_ect1 "
     "packets_received_with_ce packets_reported_as_lost "
     "packets_reported_as_lost_but_recovered packets_lost jitter track_identifier mid "
     "remote_id frames_decoded key_frames_decoded frames_rendered frames_dropped frame_width "
     "frame_height frames_per_second qp_sum total_decode_time total_inter_frame_delay "
     "total_squared_inter_frame_delay pause_count total_pauses_duration freeze_count "
     "total_freezes_duration last_packet_received_timestamp header_bytes_received "
     "packets_discarded fec_bytes_received fec_packets_received fec_packets_discarded "
     "bytes_received nack_count fir_count pli_count total_processing_delay "
     "estimated_playout_timestamp jitter_buffer_delay jitter_buffer_target_delay "
     "jitter_buffer_emitted_count jitter_buffer_minimum_delay total_samples_received "
     "concealed_samples silent_concealed_samples concealment_events "
     "inserted_samples_for_deceleration removed_samples_for_acceleration audio_level "
     "total_audio_energy total_samples_duration frames_received decoder_implementation "
     "playout_id power_efficient_decoder frames_assembled_from_multiple_packets "
     "total_assembly_time retransmitted_packets_received retransmitted_bytes_received "
     "rtx_ssrc fec_ssrc total_corruption_probability total_squared_corruption_probability "
     "corruption_measurements media_type discarded_packets goog_timing_frame_info"
    },
    {"rtc_outbound_rtp_stream_stats",
     "ssrc kind transport_id codec_id packets_sent bytes_sent packets_sent_with_ect1 mid "
     "media_source_id remote_id rid encoding_index header_bytes_sent "
     "retransmitted_packets_sent retransmitted_bytes_sent rtx_ssrc target_bitrate "
     "total_encoded_bytes_target frame_width frame_height frames_per_second frames_sent "
     "huge_frames_sent frames_encoded key_frames_encoded qp_sum psnr_sum psnr_measurements "
     "total_encode_time total_packet_send_delay quality_limitation_reason "
     "quality_limitation_durations quality_limitation_resolution_changes nack_count "
     "fir_count pli_count encoder_implementation power_efficient_encoder active "
     "scalability_mode media_type"
    },
    {"rtc_remote_inbound_rtp_stream_stats",
     "ssrc kind transport_id codec_id packets_received packets_received_with_ect1 "
     "packets_received_with_ce packets_reported_as_lost "
     "packets_reported_as_lost_but_recovered packets_lost jitter local_id round_trip_time "
     "total_round_trip_time fraction_lost round_trip_time_measurements "
     "packets_with_bleached_ect1_marking media_type"
    },
    {"rtc_remote_outbound_rtp_stream_stats",
     "ssrc kind transport_id codec_id packets_sent bytes_sent local_id remote_timestamp "
     "reports_sent round_trip_time total_round_trip_time round_trip_time_measurements "
     "media_type"
    },
    {"rtc_audio_source_stats",
     "track_identifier kind audio_level total_audio_energy total_samples_duration "
     "echo_return_loss echo_return_loss_enhancement"
    },
    {"rtc_video_source_stats",
     "track_identifier kind width height frames frames_per_second"
    },
    {"rtc_audio_playout_stats",
     "kind synthesized_samples_duration synthesized_samples_events total_samples_duration "
     "total_playout_delay total_samples_count"
    },
    {"rtc_peer_connection_stats",
     "data_channels_opened data_channels_closed"
    },
    {"rtc_data_channel_stats",
     "label protocol data_channel_identifier state messages_sent bytes_sent "
     "messages_received bytes_received"
    },
    {"rtc_transport_stats",
     "packets_sent packets_received bytes_sent bytes_received ice_role "
     "ice_local_username_fragment dtls_state ice_state selected_candidate_pair_id "
     "local_certificate_id remote_certificate_id tls_version dtls_cipher dtls_role "
     "srtp_cipher selected_candidate_pair_changes ccfb_messages_sent ccfb_messages_received"
    },
    {"rtc_ice_candidate_pair_stats",
     "transport_id local_candidate_id remote_candidate_id state nominated packets_sent "
     "packets_received bytes_sent bytes_received last_packet_sent_timestamp "
     "last_packet_received_timestamp total_round_trip_time current_round_trip_time "
     "available_outgoing_bitrate available_incoming_bitrate requests_received requests_sent "
     "responses_received responses_sent consent_requests_sent packets_discarded_on_send "
     "bytes_discarded_on_send priority writable readable selected"
    },
    {"rtc_ice_candidate_stats",
     "transport_id address port protocol candidate_type priority url relay_protocol "
     "foundation related_address related_port username_fragment tcp_type ip is_remote "
     "network_type"
    },
    {"rtc_certificate_stats",
     "fingerprint fingerprint_algorithm base64_certificate issuer_certificate_id"
    },
    {"rtc_other_stats", ""},
    {"erlang_vm_memory_stats",
     "total processes processes_used system atom atom_used binary code ets"
    },
    {"node_other_stats", ""},

};

/* The quality tables: kohaku computes their rows, so no stats object lands in them, they
 * have no "extra" column, and every member says what it is (the column reference prints it). */
static void test_computed_tables(void **state)
{
    (void)state;
    const int computed[] = {kh_table_quality_stream, kh_table_quality_connection};
    for (size_t i = 0; i < 2; i++) {
        const struct kh_stats_table *st = &kh_stats_tables[computed[i]];
        assert_true(st->computed);
        assert_null(st->type);
        assert_non_null(st->about);
        assert_false(kh_schema_has_extra(computed[i]));
        for (size_t m = 0; m < st->nmembers; m++)
            if (st->members[m].doc == NULL)
                fail_msg("%s.%s has no doc", st->table, st->members[m].name);
        char *sql = migration(KH_DIALECT_POSTGRES, st->since);
        assert_non_null(strstr(sql, st->table));
        char *create = strstr(sql, st->table);
        char *end = strstr(create, ");");
        *end = '\0';
        assert_null(strstr(create, "\"extra\""));
        free(sql);
        struct kh_buf b;
        kh_buf_init(&b, 1 << 20);
        assert_int_equal(kh_schema_insert_sql(KH_DIALECT_SQLITE, computed[i], &b), 0);
        assert_null(strstr(b.data, "extra"));
        kh_buf_cleanup(&b);
    }
    assert_string_equal(kh_stats_tables[kh_table_quality_stream].table, "quality_stream");
    assert_string_equal(kh_stats_tables[kh_table_quality_connection].table,
                        "quality_connection");
    /* a report's object typed like a table name still goes to rtc_other_stats */
    assert_int_equal(kh_schema_table_for("quality_stream", 14, NULL, 0), kh_table_other);
    for (size_t t = 0; t < kh_stats_ntables; t++)
        assert_true(kh_stats_tables[t].computed || kh_schema_has_extra((int)t));
}

static void test_composed_tables_keep_column_order(void **state)
{
    (void)state;
    size_t listed = sizeof(columns_before) / sizeof(columns_before[0]), stats = 0;
    for (size_t t = 0; t < kh_stats_ntables; t++)
        stats += !kh_stats_tables[t].computed;
    assert_int_equal(listed, stats);
    for (size_t i = 0; i < listed; i++) {
        int t = kht_table(columns_before[i][0]);
        char got[4096] = "";
        for (size_t m = 0; m < kh_stats_tables[t].nmembers; m++)
            snprintf(got + strlen(got), sizeof(got) - strlen(got), "%s%s", m ? " " : "",
                     kh_schema_column(t, (int)m));
        if (strcmp(got, columns_before[i][1]) != 0)
            fail_msg("%s:\n%s\nexpected\n%s", columns_before[i][0], got, columns_before[i][1]);
    }
    /* a base dictionary is one array, named by each table made of it */
    const struct kh_stats_dict *in = kh_stats_tables[kht_table("rtc_inbound_rtp_stream_stats")]
                                         .dicts[0];
    const struct kh_stats_dict *out =
        kh_stats_tables[kht_table("rtc_remote_outbound_rtp_stream_stats")].dicts[0];
    assert_ptr_equal(in, out);
    assert_string_equal(in->name, "RTCRtpStreamStats");
    assert_true(in->w3c);
}

/* A database's columns are in the order the code lists them: common columns, members,
 * extra (PRAGMA table_info after every migration). */
static void test_database_columns_in_member_order(void **state)
{
    (void)state;
    sqlite3 *db;
    assert_int_equal(sqlite3_open(":memory:", &db), SQLITE_OK);
    for (int v = 1; v <= kh_schema_latest_version(); v++) {
        char *sql = migration(KH_DIALECT_SQLITE, v);
        assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
        free(sql);
    }
    for (size_t t = 0; t < kh_stats_ntables; t++) {
        char sql[160];
        snprintf(sql, sizeof(sql), "PRAGMA table_info(\"%s\")", kh_stats_tables[t].table);
        sqlite3_stmt *st;
        assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
        const struct kh_scope_desc *sc = kh_schema_scope((int)t);
        size_t nm = kh_stats_tables[t].nmembers;
        size_t i = 0, n = sc->ncols + nm + kh_schema_has_extra((int)t);
        for (; sqlite3_step(st) == SQLITE_ROW; i++) {
            const char *name = (const char *)sqlite3_column_text(st, 1);
            const char *want = i < sc->ncols        ? sc->cols[i].name
                               : i < sc->ncols + nm ? kh_schema_column((int)t, (int)(i - sc->ncols))
                                                    : "extra";
            assert_true(i < n);
            assert_string_equal(name, want);
        }
        assert_int_equal(i, n);
        sqlite3_finalize(st);
    }
    sqlite3_close(db);
}

/* --- the envelope tables (kh_env_tables) ---------------------------------------------- */

/* Versions 1 and 2 as create_base_tables and create_report_table wrote them by hand before
 * the tables were described: databases made then must still be what the migrations make. */
static const char v1_envelope_ddl[] =
    "CREATE TABLE IF NOT EXISTS \"sora_connection\" (\n"
    "  \"connection_id\" text PRIMARY KEY,\n  \"channel_id\" text NOT NULL,\n"
    "  \"session_id\" text NOT NULL,\n  \"client_id\" text NOT NULL,\n"
    "  \"bundle_id\" text,\n  \"role\" text NOT NULL,\n"
    "  \"multistream\" %s,\n  \"simulcast\" %s,\n  \"spotlight\" %s,\n"
    "  \"label\" text NOT NULL,\n  \"version\" text NOT NULL,\n"
    "  \"node_name\" text NOT NULL,\n"
    "  \"first_seen\" %s NOT NULL,\n  \"last_seen\" %s NOT NULL\n);\n"
    "CREATE INDEX IF NOT EXISTS \"sora_connection_channel\" ON \"sora_connection\" "
    "(\"channel_id\", \"last_seen\");\n"
    "CREATE INDEX IF NOT EXISTS \"sora_connection_last_seen\" ON "
    "\"sora_connection\" (\"last_seen\");\n"
    "CREATE TABLE IF NOT EXISTS \"sora_node\" (\n"
    "  \"node_name\" text PRIMARY KEY,\n  \"label\" text NOT NULL,\n"
    "  \"version\" text NOT NULL,\n"
    "  \"first_seen\" %s NOT NULL,\n  \"last_seen\" %s NOT NULL\n);\n";
static const char v2_envelope_ddl[] =
    "CREATE TABLE IF NOT EXISTS \"sora_report\" (\n"
    "  \"time\" %s NOT NULL,\n  \"source\" text NOT NULL,\n"
    "  \"kind\" text NOT NULL,\n  \"report_id\" text,\n"
    "  \"channel_id\" text,\n  \"connection_id\" text,\n"
    "  \"node_name\" text NOT NULL,\n  \"stats_count\" %s NOT NULL,\n"
    "  \"body_bytes\" %s NOT NULL,\n  \"received_at\" %s NOT NULL\n);\n"
    "CREATE UNIQUE INDEX IF NOT EXISTS \"sora_report_key\" ON \"sora_report\" "
    "(\"source\", \"time\");\n"
    "CREATE INDEX IF NOT EXISTS \"sora_report_time\" ON \"sora_report\" (\"time\");\n"
    "CREATE INDEX IF NOT EXISTS \"sora_report_id\" ON \"sora_report\" "
    "(\"report_id\");\n";

static void test_envelope_ddl_unchanged(void **state)
{
    (void)state;
    for (int d = KH_DIALECT_SQLITE; d <= KH_DIALECT_POSTGRES; d++) {
        bool pg = d == KH_DIALECT_POSTGRES;
        const char *ts = pg ? "timestamptz" : "TEXT", *bl = pg ? "boolean" : "INTEGER";
        const char *i8 = pg ? "bigint" : "INTEGER";
        char want[4096];
        snprintf(want, sizeof(want), v1_envelope_ddl, bl, bl, bl, ts, ts, ts, ts);
        char *sql = migration((enum kh_dialect)d, 1);
        if (strncmp(sql, want, strlen(want)) != 0)
            fail_msg("dialect %d, version 1:\n%s\nexpected to begin with\n%s", d, sql, want);
        free(sql);
        snprintf(want, sizeof(want), v2_envelope_ddl, ts, i8, i8, ts);
        sql = migration((enum kh_dialect)d, 2);
        assert_string_equal(sql, want); /* version 2 adds sora_report alone */
        free(sql);
    }
}

/* The statements the backends spelled out by hand before, the reference for the derived
 * ones: SQLite's (sqlite.c) and PostgreSQL's (postgres.c; sora_report's before its
 * conflict clause, which the backend adds). */
static const char *const old_sqlite_sql[] = {
    "INSERT INTO sora_connection (connection_id, channel_id, session_id, client_id, bundle_id, "
    "role, multistream, simulcast, spotlight, label, version, node_name, first_seen, last_seen, "
    "severity, severity_outbound, severity_inbound, mos_min, video_score_min, browser, "
    "last_seen_hour) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?13, ?14, ?15, ?16, ?17, "
    "?18, ?19, ?20) "
    "ON CONFLICT (connection_id) DO UPDATE SET "
    "first_seen = min(first_seen, excluded.first_seen), "
    "last_seen = max(last_seen, excluded.last_seen), "
    "bundle_id = coalesce(excluded.bundle_id, bundle_id), "
    /* schema version 7: the verdict so far, NULL sides ignored */
    "severity = coalesce(max(severity, excluded.severity), severity, excluded.severity), "
    "severity_outbound = coalesce(max(severity_outbound, excluded.severity_outbound), "
    "severity_outbound, excluded.severity_outbound), "
    "severity_inbound = coalesce(max(severity_inbound, excluded.severity_inbound), "
    "severity_inbound, excluded.severity_inbound), "
    "mos_min = coalesce(min(mos_min, excluded.mos_min), mos_min, excluded.mos_min), "
    "video_score_min = coalesce(min(video_score_min, excluded.video_score_min), "
    "video_score_min, excluded.video_score_min), "
    "browser = coalesce(browser, excluded.browser), "
    /* schema version 9 */
    "last_seen_hour = coalesce(max(last_seen_hour, excluded.last_seen_hour), last_seen_hour, "
    "excluded.last_seen_hour)",
    "INSERT INTO sora_node (node_name, label, version, first_seen, last_seen) "
    "VALUES (?1, ?2, ?3, ?4, ?4) ON CONFLICT (node_name) DO UPDATE SET "
    "label = excluded.label, version = excluded.version, "
    "first_seen = min(first_seen, excluded.first_seen), "
    "last_seen = max(last_seen, excluded.last_seen)",
    "INSERT OR IGNORE INTO sora_report (time, source, kind, report_id, channel_id, "
    "connection_id, node_name, stats_count, body_bytes, received_at) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
};
static const char *const old_pg_sql[] = {
    "INSERT INTO sora_connection (connection_id, channel_id, session_id, client_id, bundle_id, "
    "role, multistream, simulcast, spotlight, label, version, node_name, first_seen, last_seen, "
    "severity, severity_outbound, severity_inbound, mos_min, video_score_min, browser, "
    "last_seen_hour) "
    "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], "
    "$6::text[], $7::bool[], $8::bool[], $9::bool[], $10::text[], $11::text[], $12::text[], "
    "$13::timestamptz[], $14::timestamptz[], $15::int8[], $16::int8[], $17::int8[], "
    "$18::float8[], $19::float8[], $20::text[], $21::int8[]) "
    "ON CONFLICT (connection_id) DO UPDATE SET "
    "first_seen = LEAST(sora_connection.first_seen, EXCLUDED.first_seen), "
    "last_seen = GREATEST(sora_connection.last_seen, EXCLUDED.last_seen), "
    "bundle_id = COALESCE(EXCLUDED.bundle_id, sora_connection.bundle_id), "
    "severity = GREATEST(sora_connection.severity, EXCLUDED.severity), "
    "severity_outbound = GREATEST(sora_connection.severity_outbound, "
    "EXCLUDED.severity_outbound), "
    "severity_inbound = GREATEST(sora_connection.severity_inbound, EXCLUDED.severity_inbound), "
    "mos_min = LEAST(sora_connection.mos_min, EXCLUDED.mos_min), "
    "video_score_min = LEAST(sora_connection.video_score_min, EXCLUDED.video_score_min), "
    "browser = COALESCE(sora_connection.browser, EXCLUDED.browser), "
    "last_seen_hour = GREATEST(sora_connection.last_seen_hour, EXCLUDED.last_seen_hour)",
    "INSERT INTO sora_node (node_name, label, version, first_seen, last_seen) "
    "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], "
    "$5::timestamptz[]) ON CONFLICT (node_name) DO UPDATE SET label = EXCLUDED.label, "
    "version = EXCLUDED.version, first_seen = LEAST(sora_node.first_seen, EXCLUDED.first_seen), "
    "last_seen = GREATEST(sora_node.last_seen, EXCLUDED.last_seen)",
    "INSERT INTO sora_report (time, source, kind, report_id, channel_id, connection_id, "
    "node_name, stats_count, body_bytes, received_at) SELECT u.* FROM unnest($1::timestamptz[], "
    "$2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::int8[], "
    "$9::int8[], $10::timestamptz[]) AS u(time, source, kind, report_id, channel_id, "
    "connection_id, node_name, stats_count, body_bytes, received_at)",
};

/* A statement in parts that compare by meaning: the INSERT with its column list, the row
 * source (unnest's casts; SQLite's placeholders are left out: numbered or not, one per
 * column is checked apart), the conflict target and the SET assignments in sorted order.
 * Identifiers unquoted (every name here is lower case). */
struct stmt {
    char insert[1024], source[1024], conflict[2048];
};

static void cut(char *dst, size_t cap, const char *from, const char *to)
{
    size_t n = to ? (size_t)(to - from) : strlen(from);
    assert_true(n < cap);
    memcpy(dst, from, n);
    dst[n] = '\0';
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorts the top-level ", "-separated assignments after "DO UPDATE SET ". */
static void sort_assignments(char *conflict)
{
    char *set = strstr(conflict, "DO UPDATE SET ");
    if (set == NULL)
        return;
    set += strlen("DO UPDATE SET ");
    char copy[2048], *items[16];
    size_t n = 0, depth = 0;
    snprintf(copy, sizeof(copy), "%s", set);
    items[n++] = copy;
    for (char *p = copy; *p; p++) {
        depth += *p == '(';
        depth -= *p == ')';
        if (depth == 0 && p[0] == ',' && p[1] == ' ') {
            *p = '\0';
            items[n++] = p + 2;
        }
    }
    qsort(items, n, sizeof(items[0]), cmp_str);
    *set = '\0';
    for (size_t i = 0; i < n; i++)
        strcat(strcat(set, i ? ", " : ""), items[i]);
}

static void parse_stmt(const char *sql, struct stmt *st)
{
    char s[4096];
    size_t w = 0;
    for (const char *p = sql; *p && w + 1 < sizeof(s); p++)
        if (*p != '"')
            s[w++] = *p;
    s[w] = '\0';
    char *src = strstr(s, ") VALUES (");
    if (src == NULL)
        src = strstr(s, ") SELECT ");
    assert_non_null(src);
    char *conflict = strstr(src, " ON CONFLICT");
    cut(st->insert, sizeof(st->insert), s, src + 1);
    cut(st->source, sizeof(st->source), src + 2, conflict);
    cut(st->conflict, sizeof(st->conflict), conflict ? conflict : "", NULL);
    char *as = strstr(st->source, " AS u(");
    if (as)
        *as = '\0'; /* unnest's names for its columns: the insert's again */
    if (strncmp(st->source, "SELECT u.* ", 11) == 0)
        memmove(st->source + 7, st->source + 9, strlen(st->source + 9) + 1);
    if (strncmp(st->source, "VALUES", 6) == 0)
        st->source[6] = '\0';
    sort_assignments(st->conflict);
}

static void test_envelope_statements_mean_what_they_did(void **state)
{
    (void)state;
    assert_int_equal(kh_env_ntables, 6);
    assert_string_equal(kh_env_tables[kh_env_report].table, "sora_report");
    for (size_t t = 0; t < 3; t++) { /* the tables of the statements written by hand */
        bool report = (int)t == kh_env_report;
        for (int d = KH_DIALECT_SQLITE; d <= KH_DIALECT_POSTGRES; d++) {
            bool pg = d == KH_DIALECT_POSTGRES;
            char *sql = env_sql((enum kh_dialect)d, (int)t, pg && report);
            struct stmt got, want;
            parse_stmt(sql, &got);
            parse_stmt(pg ? old_pg_sql[t] : old_sqlite_sql[t], &want);
            assert_string_equal(got.insert, want.insert);
            assert_string_equal(got.source, want.source);
            assert_string_equal(got.conflict, want.conflict);
            if (!pg)
                assert_int_equal(count(sql, "?"), kh_env_tables[t].ncols);
            free(sql);
        }
    }
    /* sora_report's conflict clause in PostgreSQL, after the backend's own filter */
    struct kh_buf b;
    kh_buf_init(&b, 256);
    assert_int_equal(kh_schema_env_conflict_sql(KH_DIALECT_POSTGRES, kh_env_report, &b), 0);
    assert_string_equal(b.data, " ON CONFLICT DO NOTHING");
    kh_buf_reset(&b);
    assert_int_equal(kh_schema_env_conflict_sql(KH_DIALECT_SQLITE, kh_env_report, &b), 0);
    assert_int_equal(b.len, 0);
    kh_buf_cleanup(&b);
}

/* Every column's source gives a value of the column's type (or NULL where it may be). */
static void check_env_values(const struct kh_report *r)
{
    for (size_t t = 0; t < kh_env_ntables; t++) {
        const struct kh_env_table *et = &kh_env_tables[t];
        if (!kh_schema_env_applies((int)t, (int)r->kind))
            continue;
        for (size_t c = 0; c < et->ncols; c++) {
            struct kh_value v = kh_report_common_value(r, NULL, (int)et->cols[c].src);
            if (v.type != 0 && v.type != et->cols[c].type)
                fail_msg("%s.%s: value of type %d", et->table, et->cols[c].name, v.type);
            if (v.type == 0 && et->cols[c].not_null)
                fail_msg("%s.%s: NULL in a NOT NULL column", et->table, et->cols[c].name);
        }
    }
}

static void test_envelope_values_fit_their_columns(void **state)
{
    (void)state;
    char *body = kht_envelope(NULL, "bundle_id", "\"B1\"");
    struct kh_report *r = NULL;
    assert_int_equal(kht_parse(body, &r, NULL, 0), 0);
    free(body);
    check_env_values(r);
    struct kh_value v = kh_report_common_value(r, NULL, KH_SRC_KIND);
    assert_int_equal(v.len, 10);
    assert_memory_equal(v.u.s, "connection", 10);
    v = kh_report_common_value(r, NULL, KH_SRC_SOURCE);
    assert_string_equal(v.u.s, KHT_CONN_ID);
    v = kh_report_common_value(r, NULL, KH_SRC_MULTISTREAM);
    assert_true(v.type == KH_COL_BOOL && v.u.b);
    v = kh_report_common_value(r, NULL, KH_SRC_STATS_COUNT);
    assert_int_equal(v.u.i, (int64_t)r->nrows);
    kh_report_free(r);
    body = kht_build(kht_node_base, "[]", NULL, NULL);
    assert_int_equal(kht_parse_ex(body, strlen(body), 0, KH_REPORT_NODE, KH_FLAVOR_EXPORTER,
                                  NULL, &r, NULL, 0),
                     0);
    free(body);
    check_env_values(r);
    v = kh_report_common_value(r, NULL, KH_SRC_SOURCE);
    assert_string_equal(v.u.s, "sora@10.0.0.5");
    assert_int_equal(kh_report_common_value(r, NULL, KH_SRC_MULTISTREAM).type, 0);
    kh_report_free(r);
}


/* --- sora_connection's last_seen_hour (schema version 9) ---------------------------------- */

static const char v9_pg[] =
    "DROP INDEX IF EXISTS \"sora_connection_channel\";\n"
    "DROP INDEX IF EXISTS \"sora_connection_last_seen\";\n"
    "ALTER TABLE \"sora_connection\" ADD COLUMN \"last_seen_hour\" bigint;\n"
    "UPDATE sora_connection SET last_seen_hour = "
    "floor(extract(epoch FROM last_seen AT TIME ZONE 'UTC') / 3600)::bigint;\n"
    "ALTER TABLE sora_connection SET (fillfactor = 70);\n"
    "CREATE INDEX IF NOT EXISTS \"sora_connection_channel_id\" ON \"sora_connection\" "
    "(\"channel_id\");\n"
    "CREATE INDEX IF NOT EXISTS \"sora_connection_last_seen_hour\" ON \"sora_connection\" "
    "(\"last_seen_hour\");\n";

static int64_t sqlite_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        fail_msg("%s: %s", sql, sqlite3_errmsg(db));
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* Version 9 retires the indexes on last_seen for one on its hour, and fills the hour of the
 * connections stored before it as kohaku computes it at ingest (kh_time_hour: rounded down,
 * before 1970 too). */
static void test_connection_hour_migration(void **state)
{
    (void)state;
    assert_int_equal(kh_time_hour(0), 0);
    assert_int_equal(kh_time_hour(3599999999LL), 0);
    assert_int_equal(kh_time_hour(3600000000LL), 1);
    assert_int_equal(kh_time_hour(-1), -1);
    assert_int_equal(kh_time_hour(-3600000000LL), -1);
    assert_int_equal(kh_time_hour(-3600000001LL), -2);
    char *sql = migration(KH_DIALECT_POSTGRES, 9);
    assert_string_equal(sql, v9_pg);
    free(sql);

    sqlite3 *db;
    assert_int_equal(sqlite3_open(":memory:", &db), SQLITE_OK);
    for (int v = 1; v <= 8; v++) {
        sql = migration(KH_DIALECT_SQLITE, v);
        assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
        free(sql);
    }
    static const struct {
        const char *last_seen;
        int64_t usec;
    } rows[] = {
        {"2026-11-24T06:59:59.999999Z", 1795503599999999LL},
        {"2026-11-24T07:00:00.000000Z", 1795503600000000LL},
        {"1970-01-01T00:00:00.000000Z", 0},
        {"1969-12-31T23:59:59.000000Z", -1000000LL},
        {"1969-12-31T23:59:59.500000Z", -500000LL},
        {"1969-12-31T23:00:00.000000Z", -3600000000LL},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        char ins[512];
        snprintf(ins, sizeof(ins),
                 "INSERT INTO sora_connection (connection_id, channel_id, session_id, "
                 "client_id, role, label, version, node_name, first_seen, last_seen) VALUES "
                 "('c%zu', 'ch', 's', 'k', 'sendrecv', 'l', 'v', 'n', '%s', '%s')",
                 i, rows[i].last_seen, rows[i].last_seen);
        assert_int_equal(sqlite3_exec(db, ins, NULL, NULL, NULL), SQLITE_OK);
    }
    sql = migration(KH_DIALECT_SQLITE, 9);
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("version 9: %s", msg);
    free(sql);
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        char q[128];
        snprintf(q, sizeof(q), "SELECT last_seen_hour FROM sora_connection "
                               "WHERE connection_id = 'c%zu'", i);
        int64_t got = sqlite_int(db, q);
        if (got != kh_time_hour(rows[i].usec))
            fail_msg("%s: hour %lld, kohaku computes %lld", rows[i].last_seen, (long long)got,
                     (long long)kh_time_hour(rows[i].usec));
    }
    assert_int_equal(sqlite_int(db, "SELECT count(*) FROM sqlite_master WHERE type = 'index' "
                                    "AND name IN ('sora_connection_channel', "
                                    "'sora_connection_last_seen')"),
                     0);
    assert_int_equal(sqlite_int(db, "SELECT count(*) FROM sqlite_master WHERE type = 'index' "
                                    "AND name IN ('sora_connection_channel_id', "
                                    "'sora_connection_last_seen_hour')"),
                     2);
    sqlite3_close(db);
}

/* --- the lifecycle tables (schema version 6) ------------------------------------------------ */

static void test_lifecycle_tables_declared(void **state)
{
    (void)state;
    assert_string_equal(kh_env_tables[kh_env_webhook].table, "sora_webhook");
    assert_string_equal(kh_env_tables[kh_env_session].table, "sora_session");
    assert_string_equal(kh_env_tables[kh_env_lifecycle].table, "sora_connection_lifecycle");
    assert_int_equal(kh_schema_latest_version(), 9); /* 9: sora_connection's last hour */
    struct kh_buf sql;
    kh_buf_init(&sql, 1u << 20);
    for (int d = KH_DIALECT_SQLITE; d <= KH_DIALECT_POSTGRES; d++) /* no DDL of its own */
        assert_int_equal(kh_schema_migration_sql((enum kh_dialect)d, 8, &sql), 0);
    assert_int_equal(sql.len, 0);
    kh_buf_cleanup(&sql);
    assert_int_equal(kh_env_tables[kh_env_session].ncols, KH_SESS_NCOLS);
    assert_int_equal(kh_env_tables[kh_env_lifecycle].ncols, KH_LIFE_NCOLS);
    const struct kh_env_column *sc = kh_env_tables[kh_env_session].cols;
    const struct kh_env_column *lc = kh_env_tables[kh_env_lifecycle].cols;
    assert_string_equal(sc[KH_SESS_MAX_CONNECTIONS].name, "max_connections");
    assert_string_equal(sc[KH_SESS_LAST_WEBHOOK].name, "last_webhook");
    assert_string_equal(lc[KH_LIFE_END_REASON].name, "end_reason");
    assert_string_equal(lc[KH_LIFE_TURN_TRANSPORT_TYPE].name, "turn_transport_type");
    for (int t = kh_env_session; t <= kh_env_lifecycle; t++) {
        const struct kh_env_table *et = &kh_env_tables[t];
        assert_int_equal(et->kind, KH_ENV_CARRIED);
        assert_true(et->upsert && et->since == 6 && et->segment_by == NULL);
        assert_string_equal(et->cols[0].name, et->key[0]);
        for (size_t c = 0; c < et->ncols; c++) {
            const struct kh_env_column *col = &et->cols[c];
            if (col->name == NULL || col->doc == NULL)
                fail_msg("%s: column %zu undeclared or without a doc", et->table, c);
            bool min_max = col->merge == KH_MERGE_MIN || col->merge == KH_MERGE_MAX;
            /* order-independent merges only; min/max only where both dialects have them */
            if (c > 0 && !min_max && col->merge != KH_MERGE_FILL)
                fail_msg("%s.%s: merge %d", et->table, col->name, col->merge);
            if (min_max && col->type != KH_COL_TIME && col->type != KH_COL_INT)
                fail_msg("%s.%s: min/max of type %d", et->table, col->name, col->type);
        }
    }
    /* which reports have rows of their own where */
    assert_true(kh_schema_env_applies(kh_env_report, KH_REPORT_CONNECTION));
    assert_true(kh_schema_env_applies(kh_env_report, KH_REPORT_NODE));
    assert_false(kh_schema_env_applies(kh_env_report, KH_REPORT_SESSION_WEBHOOK));
    assert_true(kh_schema_env_applies(kh_env_webhook, KH_REPORT_EVENT_WEBHOOK));
    assert_false(kh_schema_env_applies(kh_env_webhook, KH_REPORT_CONNECTION));
    for (int k = 0; k < KH_REPORT_KINDS; k++) {
        assert_false(kh_schema_env_applies(kh_env_session, k));
        assert_false(kh_schema_env_applies(kh_env_lifecycle, k));
        assert_int_equal(kh_schema_env_applies(0, k), k == KH_REPORT_CONNECTION);
    }
}

static void test_lifecycle_statements(void **state)
{
    (void)state;
    char *sql = env_sql(KH_DIALECT_SQLITE, kh_env_session, false);
    assert_non_null(strstr(sql, "INSERT INTO \"sora_session\" (\"session_id\", "));
    assert_non_null(strstr(sql, " ON CONFLICT (\"session_id\") DO UPDATE SET "));
    assert_non_null(strstr(sql, "\"channel_id\" = coalesce(\"channel_id\", "
                                "excluded.\"channel_id\")"));
    assert_non_null(strstr(sql, "\"created\" = coalesce(min(\"created\", excluded.\"created\"), "
                                "\"created\", excluded.\"created\")"));
    /* NOT NULL: the plain two-argument form */
    assert_non_null(strstr(sql, "\"first_webhook\" = min(\"first_webhook\", "
                                "excluded.\"first_webhook\")"));
    assert_int_equal(count(sql, "?"), KH_SESS_NCOLS);
    free(sql);
    sql = env_sql(KH_DIALECT_POSTGRES, kh_env_lifecycle, false);
    assert_non_null(strstr(sql, ") WITH ORDINALITY AS u(\"connection_id\", "));
    assert_non_null(strstr(sql, ", kh_ord) GROUP BY u.\"connection_id\" ORDER BY "
                                "u.\"connection_id\" ON CONFLICT (\"connection_id\") DO UPDATE"));
    assert_non_null(strstr(sql, "SELECT u.\"connection_id\", (array_agg(u.\"session_id\" ORDER "
                                "BY u.kh_ord) FILTER (WHERE u.\"session_id\" IS NOT NULL))[1], "));
    assert_non_null(strstr(sql, "min(u.\"created\")"));
    assert_non_null(strstr(sql, "max(u.\"destroyed\")"));
    assert_non_null(strstr(sql, "\"created\" = LEAST(\"sora_connection_lifecycle\".\"created\", "
                                "EXCLUDED.\"created\")"));
    assert_non_null(strstr(sql, "\"end_reason\" = COALESCE(\"sora_connection_lifecycle\"."
                                "\"end_reason\", EXCLUDED.\"end_reason\")"));
    assert_non_null(strstr(sql, "$25::timestamptz[]"));
    free(sql);
    /* the webhook log: insert-or-ignore on its id */
    sql = env_sql(KH_DIALECT_SQLITE, kh_env_webhook, false);
    assert_non_null(strstr(sql, "INSERT OR IGNORE INTO \"sora_webhook\" (\"time\", "));
    free(sql);
}

/* One row of sora_session in SQLite: session, created, destroyed, end, peak, webhook time. */
struct srow {
    const char *created, *destroyed, *end;
    int peak; /* -1: NULL */
    const char *seen;
};

static void upsert_session(sqlite3 *db, sqlite3_stmt *st, const struct srow *r)
{
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    sqlite3_bind_text(st, 1 + KH_SESS_SESSION_ID, "S", -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 1 + KH_SESS_CHANNEL_ID, "room", -1, SQLITE_STATIC);
    if (r->created)
        sqlite3_bind_text(st, 1 + KH_SESS_CREATED, r->created, -1, SQLITE_STATIC);
    if (r->destroyed)
        sqlite3_bind_text(st, 1 + KH_SESS_DESTROYED, r->destroyed, -1, SQLITE_STATIC);
    if (r->end)
        sqlite3_bind_text(st, 1 + KH_SESS_END_TYPE, r->end, -1, SQLITE_STATIC);
    if (r->peak >= 0)
        sqlite3_bind_int(st, 1 + KH_SESS_MAX_CONNECTIONS, r->peak);
    sqlite3_bind_text(st, 1 + KH_SESS_FIRST_WEBHOOK, r->seen, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 1 + KH_SESS_LAST_WEBHOOK, r->seen, -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE)
        fail_msg("upsert: %s", sqlite3_errmsg(db));
}

static void session_text(sqlite3 *db, char *out, size_t cap)
{
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT quote(created) || quote(destroyed) || "
                                        "quote(end_type) || quote(max_connections) || "
                                        "quote(first_webhook) || quote(last_webhook) FROM "
                                        "sora_session",
                                        -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    snprintf(out, cap, "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    assert_int_equal(sqlite3_exec(db, "DELETE FROM sora_session", NULL, NULL, NULL), SQLITE_OK);
}

/* created, updated (twice, peaks 2 then 3), destroyed: in every order, some twice, the row
 * is the same. */
static void test_lifecycle_merges_any_order(void **state)
{
    (void)state;
    sqlite3 *db;
    assert_int_equal(sqlite3_open(":memory:", &db), SQLITE_OK);
    for (int v = 1; v <= kh_schema_latest_version(); v++) {
        char *sql = migration(KH_DIALECT_SQLITE, v);
        assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
        free(sql);
    }
    char *sql = env_sql(KH_DIALECT_SQLITE, kh_env_session, false);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    free(sql);
    const char *c = "2026-11-30T08:59:55.123456Z", *d = "2026-11-30T09:01:15.123456Z";
    const struct srow rows[] = {
        {c, NULL, NULL, -1, c},
        {c, NULL, NULL, 2, "2026-11-30T09:00:35.123456Z"},
        {c, NULL, NULL, 3, "2026-11-30T09:00:45.123456Z"},
        {c, d, "session.destroyed", 3, d},
    };
    const int orders[][6] = {{0, 1, 2, 3, -1}, {3, 2, 1, 0, -1}, {3, 0, 3, 2, 1, -1},
                             {1, 3, 1, 0, 2, 2}, {2, 0, 3, 1, -1}};
    char first[512] = "", got[512];
    for (size_t o = 0; o < sizeof(orders) / sizeof(orders[0]); o++) {
        for (int i = 0; i < 6 && orders[o][i] >= 0; i++)
            upsert_session(db, st, &rows[orders[o][i]]);
        session_text(db, got, sizeof(got));
        if (o == 0)
            snprintf(first, sizeof(first), "%s", got);
        assert_string_equal(got, first);
    }
    assert_string_equal(first, "'2026-11-30T08:59:55.123456Z''2026-11-30T09:01:15.123456Z'"
                               "'session.destroyed'3'2026-11-30T08:59:55.123456Z'"
                               "'2026-11-30T09:01:15.123456Z'");
    sqlite3_finalize(st);
    sqlite3_close(db);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_snake_case),
        cmocka_unit_test(test_design_tables_exist),
        cmocka_unit_test(test_table_for),
        cmocka_unit_test(test_member_lookup),
        cmocka_unit_test(test_migration_v1_both_dialects),
        cmocka_unit_test(test_migrations_run_in_sqlite),
        cmocka_unit_test(test_insert_placeholders),
        cmocka_unit_test(test_migration_buffer_bound),
        cmocka_unit_test(test_composed_tables_keep_column_order),
        cmocka_unit_test(test_computed_tables),
        cmocka_unit_test(test_database_columns_in_member_order),
        cmocka_unit_test(test_envelope_ddl_unchanged),
        cmocka_unit_test(test_envelope_statements_mean_what_they_did),
        cmocka_unit_test(test_envelope_values_fit_their_columns),
        cmocka_unit_test(test_lifecycle_tables_declared),
        cmocka_unit_test(test_lifecycle_statements),
        cmocka_unit_test(test_lifecycle_merges_any_order),
        cmocka_unit_test(test_migration_in_two_parts),
        cmocka_unit_test(test_connection_hour_migration),
    };
    return cmocka_run_group_tests(tests, kht_schema_setup, kht_schema_teardown);
}
