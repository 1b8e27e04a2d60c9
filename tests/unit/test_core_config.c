/*
 * Unit tests of src/core/config.c: defaults, storage auto-selection, the INI loader on real
 * temporary files (errors carry FILE:LINE and name the key), Kohaku 2023.1 configs, and
 * SIGHUP's kh_config_reload (which keys change at run time, which need a restart).
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
#include "core/log.h"

/* Writes text to a new temporary file; returns its path (caller frees and unlinks). */
static char *temp_config(const char *text)
{
    char *path = strdup("/tmp/kohaku-config-XXXXXX");
    assert_non_null(path);
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t n = strlen(text);
    assert_int_equal(write(fd, text, n), (ssize_t)n);
    close(fd);
    return path;
}

/* Loads text from a file into a fresh config; returns the code, the message in err. */
static int load(struct kh_config *cfg, const char *text, char *err, size_t errlen,
                char **path_out)
{
    assert_int_equal(kh_config_init(cfg), 0);
    char *path = temp_config(text);
    err[0] = '\0';
    int rc = kh_config_load(cfg, path, err, errlen);
    unlink(path);
    if (path_out)
        *path_out = path;
    else
        free(path);
    return rc;
}

static void expect_error(const char *text, int line, const char *rest)
{
    struct kh_config cfg;
    char err[1024], want[1024];
    char *path;
    assert_int_equal(load(&cfg, text, err, sizeof(err), &path), KH_EINVAL);
    snprintf(want, sizeof(want), "%s:%d: %s", path, line, rest);
    assert_string_equal(err, want);
    free(path);
    kh_config_cleanup(&cfg);
}

static void test_defaults(void **state)
{
    (void)state;
    struct kh_config cfg;
    char err[256];
    assert_int_equal(kh_config_init(&cfg), 0);
    assert_int_equal(cfg.listen_port, 5890);
    assert_int_equal(cfg.exporter_listen_port, 5891);
    assert_int_equal(cfg.http2_max_concurrent_streams, 250);
    assert_int_equal(cfg.max_body_bytes, 4194304);
    assert_false(cfg.https);
    assert_true(cfg.log_stdout);
    assert_string_equal(cfg.listen_addr, "0.0.0.0");
    assert_string_equal(cfg.collector_path, "/collector");
    assert_string_equal(cfg.postgres_uri, "");
    assert_string_equal(cfg.storage, "");
    assert_int_equal(kh_config_finish(&cfg, err, sizeof(err)), 0);
    assert_string_equal(cfg.storage, "sqlite");
    kh_config_cleanup(&cfg);
    assert_null(cfg.storage);

    /* postgres_uri set and storage empty: postgres */
    assert_int_equal(kh_config_init(&cfg), 0);
    assert_int_equal(kh_config_set(&cfg, "postgres_uri", "postgresql://u@db/k", err, 256), 0);
    assert_int_equal(kh_config_finish(&cfg, err, sizeof(err)), 0);
    assert_string_equal(cfg.storage, "postgres");
    kh_config_cleanup(&cfg);

    /* an explicit storage wins */
    assert_int_equal(kh_config_init(&cfg), 0);
    assert_int_equal(kh_config_set(&cfg, "postgres_uri", "postgresql://u@db/k", err, 256), 0);
    assert_int_equal(kh_config_set(&cfg, "storage", "sqlite", err, 256), 0);
    assert_int_equal(kh_config_finish(&cfg, err, sizeof(err)), 0);
    assert_string_equal(cfg.storage, "sqlite");
    kh_config_cleanup(&cfg);

    /* storage = postgres without a URI is refused */
    assert_int_equal(kh_config_init(&cfg), 0);
    assert_int_equal(kh_config_set(&cfg, "storage", "postgres", err, 256), 0);
    assert_int_equal(kh_config_finish(&cfg, err, sizeof(err)), KH_EINVAL);
    assert_string_equal(err, "postgres_uri: required when storage = postgres");
    kh_config_cleanup(&cfg);
}

static void test_load_values(void **state)
{
    (void)state;
    struct kh_config cfg;
    char err[512];
    const char *text = "; a comment\n"
                       "# another comment\n"
                       "\n"
                       "listen_port = 6000\n"
                       "debug = true\n"
                       "log_stdout = FALSE\n"
                       "log_dir =\n"
                       "sqlite_path = /var/lib/kohaku/k.db\n"
                       "  batch_max_reports=17  \n";
    assert_int_equal(load(&cfg, text, err, sizeof(err), NULL), 0);
    assert_int_equal(cfg.listen_port, 6000);
    assert_true(cfg.debug);
    assert_false(cfg.log_stdout);
    assert_string_equal(cfg.log_dir, "");
    assert_string_equal(cfg.sqlite_path, "/var/lib/kohaku/k.db");
    assert_int_equal(cfg.batch_max_reports, 17);
    assert_int_equal(cfg.max_body_bytes, 4194304); /* untouched keys keep defaults */
    kh_config_cleanup(&cfg);
}

static void test_unknown_key(void **state)
{
    (void)state;
    expect_error("listen_port = 5890\nx = 1\n", 2, "unknown key 'x'");
    expect_error("; comment\n\n\nlisten_prot = 5890\n", 4, "unknown key 'listen_prot'");
}

static void test_out_of_range(void **state)
{
    (void)state;
    expect_error("listen_port = 70000\n", 1,
                 "listen_port: must be between 1 and 65535, got 70000");
    expect_error("debug = false\nlisten_port = 0\n", 2,
                 "listen_port: must be between 1 and 65535, got 0");
    expect_error("http2_max_read_frame_size = 1024\n", 1,
                 "http2_max_read_frame_size: must be between 16384 and 16777215, got 1024");
    expect_error("max_body_bytes = -5\n", 1,
                 "max_body_bytes: must be between 1024 and 1073741824, got -5");
    expect_error("listen_port = 80x\n", 1, "listen_port: must be an integer, got '80x'");
    expect_error("listen_port =\n", 1, "listen_port: must be an integer, got ''");
    expect_error("listen_port = 99999999999999999999\n", 1,
                 "listen_port: must be an integer, got '99999999999999999999'");
}

static void test_bad_bool_and_enum(void **state)
{
    (void)state;
    expect_error("https = yes\n", 1, "https: must be true or false, got 'yes'");
    expect_error("debug = \n", 1, "debug: must be true or false, got ''");
    expect_error("storage = mysql\n", 1,
                 "storage: must be one of sqlite|postgres|null, got 'mysql'");
    struct kh_config cfg;
    char err[256];
    assert_int_equal(load(&cfg, "https = 1\nlog_stdout = 0\ndebug = True\n", err, 256, NULL),
                     0);
    assert_true(cfg.https);
    assert_false(cfg.log_stdout);
    assert_true(cfg.debug);
    kh_config_cleanup(&cfg);
}

static void test_section_header_refused(void **state)
{
    (void)state;
    expect_error("[kohaku]\nlisten_port = 5890\n", 2,
                 "section [kohaku]: kohaku's keys are flat; remove the section header");
}

static void test_syntax_error_and_missing_file(void **state)
{
    (void)state;
    expect_error("listen_port 5890\n", 1, "syntax error (expected key = value)");
    struct kh_config cfg;
    char err[256];
    assert_int_equal(kh_config_init(&cfg), 0);
    assert_int_equal(kh_config_load(&cfg, "/nonexistent/kohaku.ini", err, sizeof(err)), KH_EIO);
    assert_non_null(strstr(err, "/nonexistent/kohaku.ini: cannot open"));
    kh_config_cleanup(&cfg);
}

static void test_long_value(void **state)
{
    (void)state;
    char uri[1001];
    memcpy(uri, "postgresql://kohaku:secret@db.example/kohaku?", 45);
    for (size_t i = 45; i < 1000; i++)
        uri[i] = (char)('a' + i % 26);
    uri[1000] = '\0';
    char text[1100];
    snprintf(text, sizeof(text), "postgres_uri = %s\nlisten_port = 5999\n", uri);
    struct kh_config cfg;
    char err[256];
    assert_int_equal(load(&cfg, text, err, sizeof(err), NULL), 0);
    assert_int_equal(strlen(cfg.postgres_uri), 1000);
    assert_string_equal(cfg.postgres_uri, uri);
    assert_int_equal(cfg.listen_port, 5999);
    assert_int_equal(kh_config_finish(&cfg, err, sizeof(err)), 0);
    assert_string_equal(cfg.storage, "postgres");
    kh_config_cleanup(&cfg);
}

static void test_kohaku_2023_config(void **state)
{
    (void)state;
    const char *text = "debug = false\n"
                       "log_dir = .\n"
                       "log_name = kohaku.jsonl\n"
                       "log_stdout = true\n"
                       "log_rotate_max_size = 200\n"
                       "log_rotate_max_backups = 7\n"
                       "log_rotate_max_age = 30\n"
                       "log_rotate_compress = false\n"
                       "\n"
                       "https = false\n"
                       "listen_addr = 0.0.0.0\n"
                       "listen_port = 5890\n"
                       "\n"
                       "exporter_https = false\n"
                       "exporter_listen_addr = 0.0.0.0\n"
                       "exporter_listen_port = 5891\n"
                       "\n"
                       "postgres_uri = postgres://postgres:password@127.0.0.1:5432/"
                       "kohaku?sslmode=disable\n"
                       "postgres_ca_cert_file = \n"
                       "\n"
                       "tls_fullchain_file =\n"
                       "tls_privkey_file =\n"
                       "tls_verify_cacert_path =\n"
                       "\n"
                       "http2_max_concurrent_streams = 250\n"
                       "http2_max_read_frame_size = 1048576\n"
                       "http2_idle_timeout = 600\n";
    struct kh_config cfg;
    char err[512];
    assert_int_equal(load(&cfg, text, err, sizeof(err), NULL), 0);
    assert_string_equal(cfg.log_dir, ".");
    assert_string_equal(cfg.log_name, "kohaku.jsonl");
    assert_int_equal(cfg.log_rotate_max_size, 200);
    assert_int_equal(cfg.log_rotate_max_backups, 7);
    assert_int_equal(cfg.log_rotate_max_age, 30);
    assert_false(cfg.https);
    assert_int_equal(cfg.exporter_listen_port, 5891);
    assert_string_equal(cfg.postgres_uri,
                        "postgres://postgres:password@127.0.0.1:5432/kohaku?sslmode=disable");
    assert_string_equal(cfg.postgres_ca_cert_file, "");
    assert_string_equal(cfg.tls_fullchain_file, "");
    assert_string_equal(cfg.tls_verify_cacert_path, "");
    assert_int_equal(cfg.http2_max_read_frame_size, 1048576);
    assert_int_equal(cfg.http2_idle_timeout, 600);
    assert_int_equal(kh_config_finish(&cfg, err, sizeof(err)), 0);
    assert_string_equal(cfg.storage, "postgres");
    kh_config_cleanup(&cfg);
}

static void test_load_string_and_finish_checks(void **state)
{
    (void)state;
    struct kh_config cfg;
    char err[256];
    assert_int_equal(kh_config_init(&cfg), 0);
    assert_int_equal(kh_config_load_string(&cfg, "inline", "a = 1\n", err, sizeof(err)),
                     KH_EINVAL);
    assert_string_equal(err, "inline:1: unknown key 'a'");
    assert_int_equal(kh_config_load_string(&cfg, "inline", "https = true\n", err, 256), 0);
    assert_int_equal(kh_config_finish(&cfg, err, sizeof(err)), KH_EINVAL);
    assert_string_equal(err, "https: needs tls_fullchain_file and tls_privkey_file");
    kh_config_cleanup(&cfg);
}

/* A finished config from text (the defaults when text is empty). */
static void finished(struct kh_config *cfg, const char *text)
{
    char err[512];
    assert_int_equal(kh_config_init(cfg), 0);
    assert_int_equal(kh_config_load_string(cfg, "inline", text, err, sizeof(err)), 0);
    assert_int_equal(kh_config_finish(cfg, err, sizeof(err)), 0);
}

/* Runs kh_config_reload with the log going to a temporary file; returns what was logged. */
static char *reload_logged(struct kh_config *live, const struct kh_config *fresh, int want,
                           char *changed, size_t changedlen)
{
    FILE *fp = tmpfile();
    assert_non_null(fp);
    kh_log_set_stream(fp);
    assert_int_equal(kh_config_reload(live, fresh, changed, changedlen), want);
    kh_log_set_stream(NULL);
    long n = ftell(fp);
    assert_true(n >= 0);
    char *text = calloc(1, (size_t)n + 1);
    assert_non_null(text);
    rewind(fp);
    assert_int_equal(fread(text, 1, (size_t)n, fp), (size_t)n);
    fclose(fp);
    return text;
}

static void test_reload_applies_runtime_keys(void **state)
{
    (void)state;
    struct kh_config live, fresh;
    char changed[256];
    finished(&live, "");
    finished(&fresh, "debug = true\nretry_after = 9\ncollector_path = /c2\n"
                     "max_body_bytes = 2048\nrequest_body_timeout = 7\nmax_json_depth = 8\n"
                     "log_name = other.jsonl\n");
    char *logged = reload_logged(&live, &fresh, 7, changed, sizeof(changed));
    assert_string_equal(logged, ""); /* nothing needs a restart */
    free(logged);
    /* in the order of --help */
    assert_string_equal(changed, "debug,log_name,collector_path,max_body_bytes,"
                                 "request_body_timeout,max_json_depth,retry_after");
    kh_config_cleanup(&fresh); /* strings were copied, not shared */
    assert_true(live.debug);
    assert_int_equal(live.retry_after, 9);
    assert_int_equal(live.max_body_bytes, 2048);
    assert_int_equal(live.request_body_timeout, 7);
    assert_int_equal(live.max_json_depth, 8);
    assert_string_equal(live.collector_path, "/c2");
    assert_string_equal(live.log_name, "other.jsonl");
    assert_string_equal(live.stats_webhook_path, "/webhook/stats");
    /* the same values again: nothing changes */
    finished(&fresh, "debug = true\nretry_after = 9\ncollector_path = /c2\n"
                     "max_body_bytes = 2048\nrequest_body_timeout = 7\nmax_json_depth = 8\n"
                     "log_name = other.jsonl\n");
    logged = reload_logged(&live, &fresh, 0, changed, sizeof(changed));
    assert_string_equal(logged, "");
    assert_string_equal(changed, "");
    free(logged);
    kh_config_cleanup(&fresh);
    /* back to the defaults */
    finished(&fresh, "");
    logged = reload_logged(&live, &fresh, 7, NULL, 0);
    free(logged);
    assert_false(live.debug);
    assert_int_equal(live.retry_after, 5);
    assert_string_equal(live.collector_path, "/collector");
    kh_config_cleanup(&fresh);
    kh_config_cleanup(&live);
}

static void test_reload_keeps_restart_keys(void **state)
{
    (void)state;
    struct kh_config live, fresh;
    char changed[256];
    finished(&live, "postgres_uri = postgresql://u:secret@db/kohaku\n");
    finished(&fresh, "listen_port = 6000\nstorage = sqlite\n"
                     "postgres_uri = postgresql://u:other@db/x\nbatch_max_reports = 10\n"
                     "max_inflight_bytes = 65536\nretry_after = 3\n");
    char *logged = reload_logged(&live, &fresh, 1, changed, sizeof(changed));
    assert_string_equal(changed, "retry_after");
    assert_int_equal(live.retry_after, 3);
    /* every key that needs a restart keeps its value and is named in a warning */
    assert_int_equal(live.listen_port, 5890);
    assert_string_equal(live.storage, "postgres");
    assert_string_equal(live.postgres_uri, "postgresql://u:secret@db/kohaku");
    assert_int_equal(live.batch_max_reports, 256);
    assert_int_equal(live.max_inflight_bytes, 268435456);
    const char *keys[] = {"listen_port", "storage", "postgres_uri", "max_inflight_bytes",
                          "batch_max_reports"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        char want[128];
        snprintf(want, sizeof(want),
                 "\"level\":\"warn\",\"msg\":\"config changed; needs a restart\",\"key\":\"%s\"}",
                 keys[i]);
        assert_non_null(strstr(logged, want));
    }
    int lines = 0;
    for (const char *p = logged; *p; p++)
        lines += *p == '\n';
    assert_int_equal(lines, 5);
    assert_null(strstr(logged, "secret")); /* values are never logged */
    assert_null(strstr(logged, "other@"));
    free(logged);
    kh_config_cleanup(&fresh);
    kh_config_cleanup(&live);
}

static void test_reload_changed_list_is_bounded(void **state)
{
    (void)state;
    struct kh_config live, fresh;
    char changed[12];
    finished(&live, "");
    finished(&fresh, "debug = true\nretry_after = 9\nmax_headers = 9\n");
    char *logged = reload_logged(&live, &fresh, 3, changed, sizeof(changed));
    free(logged);
    assert_string_equal(changed, "debug"); /* a key that does not fit is left off whole */
    assert_int_equal(live.retry_after, 9);
    assert_int_equal(live.max_headers, 9);
    kh_config_cleanup(&fresh);
    kh_config_cleanup(&live);
}

/* --help and the example file say which keys SIGHUP reloads. */
static void test_help_marks_reloadable_keys(void **state)
{
    (void)state;
    char *text = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&text, &len);
    assert_non_null(fp);
    kh_config_print_help(fp);
    fclose(fp);
    const char *reload[] = {"debug", "retry_after", "max_body_bytes", "request_header_timeout",
                            "max_stats_per_report", "http2_idle_timeout"};
    const char *restart[] = {"listen_port", "storage", "batch_max_reports",
                             "max_inflight_bytes", "spool_backlog_reports", "postgres_uri"};
    for (size_t i = 0; i < 6; i++) {
        char key[64];
        snprintf(key, sizeof(key), "  %-30s ", reload[i]);
        const char *line = strstr(text, key);
        assert_non_null(line);
        const char *end = strchr(line, '\n');
        const char *mark = strstr(line, "; reloaded on SIGHUP\n");
        assert_true(mark != NULL && mark < end);
        snprintf(key, sizeof(key), "  %-30s ", restart[i]);
        line = strstr(text, key);
        assert_non_null(line);
        end = strchr(line, '\n');
        mark = strstr(line, "; reloaded on SIGHUP\n");
        assert_true(mark == NULL || mark > end);
    }
    free(text);
    fp = open_memstream(&text, &len);
    assert_non_null(fp);
    kh_config_print_example(fp);
    fclose(fp);
    assert_non_null(strstr(text, "; seconds in the retry-after header of a 503\n; range: 1..3600\n"
                                 "; reloaded on SIGHUP\nretry_after = 5\n"));
    assert_non_null(strstr(text, "; port of the stats listener\n; range: 1..65535\n"
                                 "listen_port = 5890\n"));
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_load_values),
        cmocka_unit_test(test_unknown_key),
        cmocka_unit_test(test_out_of_range),
        cmocka_unit_test(test_bad_bool_and_enum),
        cmocka_unit_test(test_section_header_refused),
        cmocka_unit_test(test_syntax_error_and_missing_file),
        cmocka_unit_test(test_long_value),
        cmocka_unit_test(test_kohaku_2023_config),
        cmocka_unit_test(test_load_string_and_finish_checks),
        cmocka_unit_test(test_reload_applies_runtime_keys),
        cmocka_unit_test(test_reload_keeps_restart_keys),
        cmocka_unit_test(test_reload_changed_list_is_bounded),
        cmocka_unit_test(test_help_marks_reloadable_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
