/*
 * Unit tests of the config table and loader, and of RFC 3339 time handling.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/config.h"
#include "core/errors.h"
#include "core/timeutil.h"

static char path[64];

static const char *write_file(const char *text)
{
    snprintf(path, sizeof(path), "/tmp/kh-config-test-%d.ini", (int)getpid());
    FILE *fp = fopen(path, "w");
    fputs(text, fp);
    fclose(fp);
    return path;
}

static void defaults(void **state)
{
    struct kh_config c;
    char err[256];
    assert_int_equal(kh_config_init(&c), 0);
    assert_int_equal(kh_config_finish(&c, err, sizeof(err)), 0);
    assert_int_equal(c.listen_port, 5890);
    assert_int_equal(c.http2_max_concurrent_streams, 250);
    assert_int_equal(c.max_body_bytes, 4194304);
    assert_string_equal(c.storage, "sqlite");
    assert_string_equal(c.sqlite_path, "./kohaku.db");
    assert_string_equal(c.collector_path, "/collector");
    kh_config_cleanup(&c);
}

static void kohaku_2023_config_selects_postgres(void **state)
{
    struct kh_config c;
    char err[256];
    kh_config_init(&c);
    const char *p = write_file(
        "debug = false\nlog_dir = .\nlog_name = kohaku.jsonl\nlog_stdout = true\n"
        "log_rotate_max_size = 200\nlog_rotate_max_backups = 7\nlog_rotate_max_age = 30\n"
        "log_rotate_compress = false\nhttps = false\nlisten_addr = 0.0.0.0\n"
        "listen_port = 5890\nexporter_https = false\nexporter_listen_addr = 0.0.0.0\n"
        "exporter_listen_port = 5891\n"
        "postgres_uri = postgres://postgres:password@127.0.0.1:5432/kohaku?sslmode=disable\n"
        "postgres_ca_cert_file =\ntls_fullchain_file =\ntls_privkey_file =\n"
        "tls_verify_cacert_path =\nhttp2_max_concurrent_streams = 250\n"
        "http2_max_read_frame_size = 1048576\nhttp2_idle_timeout = 1800\n");
    assert_int_equal(kh_config_load(&c, p, err, sizeof(err)), 0);
    assert_int_equal(kh_config_finish(&c, err, sizeof(err)), 0);
    assert_string_equal(c.storage, "postgres");
    assert_int_equal(c.http2_max_read_frame_size, 1048576);
    assert_int_equal(c.http2_idle_timeout, 1800);
    kh_config_cleanup(&c);
    unlink(p);
}

static void expect_load_error(const char *text, const char *want)
{
    struct kh_config c;
    char err[512], full[640];
    kh_config_init(&c);
    const char *p = write_file(text);
    assert_int_equal(kh_config_load(&c, p, err, sizeof(err)), KH_EINVAL);
    snprintf(full, sizeof(full), "%s:%s", p, want);
    assert_string_equal(err, full);
    kh_config_cleanup(&c);
    unlink(p);
}

static void errors_name_file_line_and_key(void **state)
{
    expect_load_error("listen_port = 5890\nbogus = 1\n", "2: unknown key 'bogus'");
    expect_load_error("; c\n\nlisten_port = 0\n",
                      "3: listen_port: must be between 1 and 65535, got 0");
    expect_load_error("listen_port = 12ab\n", "1: listen_port: must be an integer, got '12ab'");
    expect_load_error("debug = yes\n", "1: debug: must be true or false, got 'yes'");
    expect_load_error("storage = mysql\n",
                      "1: storage: must be one of sqlite|postgres|null, got 'mysql'");
    expect_load_error("[main]\ndebug = true\n",
                      "2: section [main]: kohaku's keys are flat; remove the section header");
}

static void long_values_and_missing_files(void **state)
{
    struct kh_config c;
    char err[512], text[1200];
    kh_config_init(&c);
    char uri[1001];
    memset(uri, 'a', 1000);
    uri[1000] = '\0';
    snprintf(text, sizeof(text), "postgres_uri = postgresql://%s\n", uri);
    const char *p = write_file(text);
    assert_int_equal(kh_config_load(&c, p, err, sizeof(err)), 0);
    assert_int_equal(strlen(c.postgres_uri), 1013);
    unlink(p);
    assert_int_equal(kh_config_load(&c, "/nonexistent/kohaku.ini", err, sizeof(err)), KH_EIO);
    assert_non_null(strstr(err, "cannot open"));
    kh_config_cleanup(&c);
}

static void cross_key_checks(void **state)
{
    struct kh_config c;
    char err[256];
    kh_config_init(&c);
    assert_int_equal(kh_config_set(&c, "storage", "postgres", err, sizeof(err)), 0);
    assert_int_equal(kh_config_finish(&c, err, sizeof(err)), KH_EINVAL);
    assert_string_equal(err, "postgres_uri: required when storage = postgres");
    kh_config_set(&c, "storage", "sqlite", err, sizeof(err));
    kh_config_set(&c, "https", "true", err, sizeof(err));
    assert_int_equal(kh_config_finish(&c, err, sizeof(err)), KH_EINVAL);
    assert_non_null(strstr(err, "https:"));
    kh_config_cleanup(&c);
}

static void time_parse_and_format(void **state)
{
    int64_t us;
    const char *why;
    char out[KH_TIME_TEXT_LEN + 1];
    assert_int_equal(kh_time_parse_rfc3339("1970-01-01T00:00:00.000001Z", 27, &us, &why), 0);
    assert_int_equal(us, 1);
    assert_int_equal(kh_time_parse_rfc3339("2026-11-24T06:15:42.123456Z", 27, &us, &why), 0);
    assert_int_equal(us, 1795500942123456LL);
    kh_time_format(us, out);
    assert_string_equal(out, "2026-11-24T06:15:42.123456Z");
    static const char *ok[] = {"2026-11-24T06:15:42.1Z", "2026-11-24T06:15:42.123456789Z",
                               "2024-02-29T23:59:59.9+00:00", "2026-11-24t06:15:42.5z"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        assert_int_equal(kh_time_parse_rfc3339(ok[i], strlen(ok[i]), &us, &why), 0);
    kh_time_parse_rfc3339("2026-11-24T06:15:42.123456789Z", 30, &us, &why);
    kh_time_format(us, out);
    assert_string_equal(out, "2026-11-24T06:15:42.123456Z"); /* truncated to microseconds */
    static const char *bad[] = {"2026-11-24T06:15:42Z",        "2026-11-24 06:15:42.1Z",
                                "2025-02-29T00:00:00.1Z",      "2026-13-01T00:00:00.1Z",
                                "2026-11-24T24:00:00.1Z",      "2026-11-24T06:15:42.1+09:00",
                                "2026-11-24T06:15:42.1",       "2026-11-24T06:15:42.1234567890Z",
                                "yesterday",                   ""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (kh_time_parse_rfc3339(bad[i], strlen(bad[i]), &us, &why) != KH_EINVAL)
            fail_msg("accepted '%s'", bad[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(defaults),
        cmocka_unit_test(kohaku_2023_config_selects_postgres),
        cmocka_unit_test(errors_name_file_line_and_key),
        cmocka_unit_test(long_values_and_missing_files),
        cmocka_unit_test(cross_key_checks),
        cmocka_unit_test(time_parse_and_format),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
