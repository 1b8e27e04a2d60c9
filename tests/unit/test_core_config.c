/*
 * Unit tests of src/core/config.c: defaults, storage auto-selection, the INI loader on real
 * temporary files (errors carry FILE:LINE and name the key), and Kohaku 2023.1 configs.
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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
