/*
 * Unit tests of src/store/pg_timescale.c: the mode kohaku picks for every state a server's
 * TimescaleDB can be in, the one warning of each, and the set-up SQL of each mode. The
 * end-to-end tests (tests/integration/test_timescaledb.py) run the states a test machine can
 * build against a real TimescaleDB; the extension created at another version than the
 * installed default is checked here only, since only one version's scripts are installed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/buf.h"
#include "core/log.h"
#include "kh_test_log.h"
#include "store/pg_timescale.h"

static void test_preload_list(void **state)
{
    assert_true(kh_pg_ts_preloaded("timescaledb"));
    assert_true(kh_pg_ts_preloaded("pg_stat_statements, timescaledb"));
    assert_true(kh_pg_ts_preloaded("citus,\"timescaledb\""));
    assert_true(kh_pg_ts_preloaded("$libdir/timescaledb.so"));
    assert_false(kh_pg_ts_preloaded(NULL));
    assert_false(kh_pg_ts_preloaded(""));
    assert_false(kh_pg_ts_preloaded("pg_stat_statements"));
    assert_false(kh_pg_ts_preloaded("timescaledb-2.17.2"));
    assert_false(kh_pg_ts_preloaded("timescaledb_osm"));
}

static struct kh_pg_ts_plan plan(struct kh_pg_ts_facts f)
{
    struct kh_pg_ts_plan p;
    memset(&p, 0xa5, sizeof(p)); /* every field must be set */
    kh_pg_ts_plan(&f, &p);
    return p;
}

static void test_not_installed_is_plain_postgresql(void **state)
{
    struct kh_pg_ts_plan p = plan((struct kh_pg_ts_facts){.preload = ""});
    assert_int_equal(p.mode, KH_PG_TS_OFF);
    assert_false(p.create || p.not_preloaded || p.other_version);
    assert_null(p.refused);
}

static void test_installed_not_preloaded_never_creates(void **state)
{
    /* readable list without timescaledb, and a role that may not read it */
    struct kh_pg_ts_plan p = plan((struct kh_pg_ts_facts){.available = "2.17.2", .preload = ""});
    assert_int_equal(p.mode, KH_PG_TS_OFF);
    assert_false(p.create);
    assert_true(p.not_preloaded);
    p = plan((struct kh_pg_ts_facts){.available = "2.17.2", .preload = NULL});
    assert_false(p.create);
    assert_true(p.not_preloaded);
    assert_null(p.refused);
}

static void test_preloaded_creates_once(void **state)
{
    struct kh_pg_ts_plan p = plan((struct kh_pg_ts_facts){.available = "2.17.2", .loader = true});
    assert_true(p.create);
    assert_false(p.not_preloaded);
    p = plan((struct kh_pg_ts_facts){.available = "2.17.2", .preload = "timescaledb"});
    assert_true(p.create);
    /* after a failed CREATE EXTENSION (ERROR or FATAL): plain PostgreSQL, no new attempt */
    p = plan((struct kh_pg_ts_facts){.available = "2.17.2", .loader = true, .create_failed = true});
    assert_int_equal(p.mode, KH_PG_TS_OFF);
    assert_false(p.create || p.not_preloaded);
    assert_null(p.refused);
}

static void test_created_modes_and_versions(void **state)
{
    struct kh_pg_ts_plan p = plan(
        (struct kh_pg_ts_facts){.available = "2.17.2", .created = "2.17.2", .loader = true});
    assert_int_equal(p.mode, KH_PG_TS_FULL);
    assert_false(p.create || p.other_version || p.not_preloaded);
    p = plan((struct kh_pg_ts_facts){
        .available = "2.17.2", .created = "2.17.2", .loader = true, .license = "timescale"});
    assert_int_equal(p.mode, KH_PG_TS_FULL);
    p = plan((struct kh_pg_ts_facts){
        .available = "2.17.2", .created = "2.17.2", .loader = true, .license = "apache"});
    assert_int_equal(p.mode, KH_PG_TS_APACHE);
    assert_false(p.other_version);
    /* created at another version than the installed default: used as it is, with a warning */
    p = plan((struct kh_pg_ts_facts){.available = "2.17.2", .created = "2.14.2", .loader = true});
    assert_int_equal(p.mode, KH_PG_TS_FULL);
    assert_true(p.other_version);
    assert_false(p.create);
    assert_null(p.refused);
    p = plan((struct kh_pg_ts_facts){
        .available = "2.17.2", .created = "2.16.1", .preload = "timescaledb", .license = "apache"});
    assert_int_equal(p.mode, KH_PG_TS_APACHE);
    assert_true(p.other_version);
}

static void test_created_but_not_preloaded_is_refused(void **state)
{
    struct kh_pg_ts_plan p = plan((struct kh_pg_ts_facts){.available = "2.17.2",
                                                          .created = "2.17.2",
                                                          .preload = "pg_stat_statements"});
    assert_non_null(p.refused);
    assert_non_null(strstr(p.refused, "shared_preload_libraries"));
    assert_false(p.create);
    /* the package removed under a database that uses it */
    p = plan((struct kh_pg_ts_facts){.created = "2.17.2"});
    assert_non_null(p.refused);
}

/* What kh_pg_ts_warn logs for a plan. */
static char *warnings(struct kh_pg_ts_facts f)
{
    struct kh_pg_ts_plan p;
    kh_pg_ts_plan(&f, &p);
    FILE *fp = kht_log_capture();
    kh_pg_ts_warn(&f, &p, 30);
    return kht_log_captured(fp);
}

static int lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

static void test_one_warning_per_state(void **state)
{
    char *t = warnings((struct kh_pg_ts_facts){.available = "2.17.2", .preload = "citus"});
    assert_int_equal(lines(t), 1);
    assert_non_null(strstr(t, "not in shared_preload_libraries; using plain PostgreSQL"));
    assert_non_null(strstr(t, "\"shared_preload_libraries\":\"citus\""));
    free(t);
    t = warnings((struct kh_pg_ts_facts){.available = "2.17.2"});
    assert_non_null(strstr(t, "\"shared_preload_libraries\":\"(not readable)\""));
    free(t);
    t = warnings(
        (struct kh_pg_ts_facts){.available = "2.17.2", .created = "2.14.2", .loader = true});
    assert_int_equal(lines(t), 1);
    assert_non_null(strstr(t, "another version than the installed default; using it as it is"));
    assert_non_null(strstr(t, "\"version\":\"2.14.2\""));
    assert_non_null(strstr(t, "\"installed_default\":\"2.17.2\""));
    assert_non_null(strstr(t, "ALTER EXTENSION timescaledb UPDATE"));
    free(t);
    t = warnings((struct kh_pg_ts_facts){
        .available = "2.17.2", .created = "2.17.2", .loader = true, .license = "apache"});
    assert_int_equal(lines(t), 1);
    assert_non_null(strstr(t, "timescaledb.license = apache"));
    free(t);
    t = warnings(
        (struct kh_pg_ts_facts){.available = "2.17.2", .created = "2.17.2", .loader = true});
    assert_int_equal(lines(t), 0);
    free(t);
    t = warnings((struct kh_pg_ts_facts){0});
    assert_int_equal(lines(t), 0);
    free(t);
}

static void test_table_sql_per_mode(void **state)
{
    struct kh_buf b;
    kh_buf_init(&b, 1u << 16);
    struct kh_pg_ts_table t = {.mode = KH_PG_TS_FULL, .table = "rtc_transport_stats",
                               .segmentby = "connection_id", .orderby = "time, stats_id",
                               .chunk_hours = 24, .compress_days = 7, .retention_days = 60};
    assert_int_equal(kh_pg_ts_table_sql(&b, &t), 0);
    assert_int_equal(kh_buf_append(&b, "", 1), 0);
    assert_non_null(strstr(b.data, "create_hypertable('\"rtc_transport_stats\"', 'time', "
                                   "chunk_time_interval => INTERVAL '24 hours'"));
    assert_non_null(strstr(b.data, "timescaledb.compress_segmentby = 'connection_id', "
                                   "timescaledb.compress_orderby = 'time, stats_id'"));
    assert_non_null(strstr(b.data, "compress_after => INTERVAL '7 days'"));
    /* a policy already as wanted is kept, not removed and added again */
    assert_non_null(strstr(b.data, "IF NOT EXISTS (SELECT 1 FROM timescaledb_information.jobs "
                                   "WHERE proc_name = 'policy_compression' AND hypertable_name "
                                   "= 'rtc_transport_stats' AND (config->>'compress_after')"
                                   "::interval = INTERVAL '7 days')"));
    assert_non_null(strstr(b.data, "add_retention_policy('\"rtc_transport_stats\"', "
                                   "drop_after => INTERVAL '60 days')"));
    kh_buf_reset(&b);
    t.retention_days = 0; /* keep forever: the old policy removed, none added */
    assert_int_equal(kh_pg_ts_table_sql(&b, &t), 0);
    assert_int_equal(kh_buf_append(&b, "", 1), 0);
    assert_non_null(strstr(b.data, "remove_retention_policy"));
    assert_null(strstr(b.data, "add_retention_policy"));
    kh_buf_reset(&b);
    t.mode = KH_PG_TS_APACHE; /* compression and policies are Timescale-licensed */
    t.retention_days = 60;
    assert_int_equal(kh_pg_ts_table_sql(&b, &t), 0);
    assert_int_equal(kh_buf_append(&b, "", 1), 0);
    assert_non_null(strstr(b.data, "create_hypertable("));
    assert_non_null(strstr(b.data, "set_chunk_time_interval("));
    assert_null(strstr(b.data, "compress"));
    assert_null(strstr(b.data, "policy"));
    kh_buf_cleanup(&b);
}

static void test_mode_names(void **state)
{
    assert_string_equal(kh_pg_ts_mode_name(KH_PG_TS_OFF), "postgresql");
    assert_string_equal(kh_pg_ts_mode_name(KH_PG_TS_FULL), "timescaledb");
    assert_string_equal(kh_pg_ts_mode_name(KH_PG_TS_APACHE), "timescaledb-apache");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_preload_list),
        cmocka_unit_test(test_not_installed_is_plain_postgresql),
        cmocka_unit_test(test_installed_not_preloaded_never_creates),
        cmocka_unit_test(test_preloaded_creates_once),
        cmocka_unit_test(test_created_modes_and_versions),
        cmocka_unit_test(test_created_but_not_preloaded_is_refused),
        cmocka_unit_test(test_one_warning_per_state),
        cmocka_unit_test(test_table_sql_per_mode),
        cmocka_unit_test(test_mode_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
