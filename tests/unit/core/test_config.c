/*
 * Unit tests of src/core/config.c: defaults, storage auto-selection, the INI loader on real
 * temporary files (errors carry FILE:LINE and name the key, also those of the checks made after
 * loading), quoted values and key case as Kohaku 2023.1 read them, a config in the style of
 * Kohaku 2023.1's example, YAML hints, and SIGHUP's kh_config_reload (which keys change at run
 * time, which need a restart).
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
#include "kh_test_log.h"

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

/* Loads text from a file into a fresh config; returns the code, the message in *err (NULL when
 * there is none). */
static int load(struct kh_config *cfg, const char *text, const char **err, char **path_out)
{
    assert_int_equal(kh_config_init(cfg), 0);
    char *path = temp_config(text);
    *err = NULL;
    int rc = kh_config_load(cfg, path, err);
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
    const char *err = NULL;
    char want[1024];
    char *path;
    assert_int_equal(load(&cfg, text, &err, &path), KH_EINVAL);
    snprintf(want, sizeof(want), "%s:%d: %s", path, line, rest);
    assert_string_equal(err, want);
    free(path);
    kh_config_cleanup(&cfg);
}

static void test_defaults(void **state)
{
    (void)state;
    struct kh_config cfg;
    const char *err = NULL;
    assert_int_equal(kh_config_init(&cfg), 0);
    assert_int_equal(cfg.listen_port, 5890);
    assert_int_equal(cfg.exporter_listen_port, 5891);
    assert_int_equal(cfg.http2_max_concurrent_streams, 250);
    assert_int_equal(cfg.max_body_bytes, 4194304);
    assert_false(cfg.https);
    assert_true(cfg.log_stdout);
    assert_string_equal(cfg.listen_addr, "0.0.0.0");
    assert_string_equal(cfg.collector_path, "/collector");
    assert_string_equal(cfg.sqlite_path, "./kohaku.db");
    assert_string_equal(cfg.postgres_uri, "");
    assert_string_equal(cfg.storage, "");
    assert_int_equal(kh_config_finish(&cfg, &err), 0);
    assert_string_equal(cfg.storage, "sqlite");
    kh_config_cleanup(&cfg);
    assert_null(cfg.storage);

    /* postgres_uri set and storage empty: postgres */
    assert_int_equal(kh_config_init(&cfg), 0);
    assert_int_equal(kh_config_set(&cfg, "postgres_uri", "postgresql://u@db/k", &err), 0);
    assert_int_equal(kh_config_finish(&cfg, &err), 0);
    assert_string_equal(cfg.storage, "postgres");
    kh_config_cleanup(&cfg);

    /* an explicit storage wins */
    assert_int_equal(kh_config_init(&cfg), 0);
    assert_int_equal(kh_config_set(&cfg, "postgres_uri", "postgresql://u@db/k", &err), 0);
    assert_int_equal(kh_config_set(&cfg, "storage", "sqlite", &err), 0);
    assert_int_equal(kh_config_finish(&cfg, &err), 0);
    assert_string_equal(cfg.storage, "sqlite");
    kh_config_cleanup(&cfg);

    /* storage = postgres without a URI is refused */
    assert_int_equal(kh_config_init(&cfg), 0);
    assert_int_equal(kh_config_set(&cfg, "storage", "postgres", &err), 0);
    assert_int_equal(kh_config_finish(&cfg, &err), KH_EINVAL);
    assert_string_equal(err, "postgres_uri: required when storage = postgres");
    kh_config_cleanup(&cfg);

    /* https set without a file: the message names the key */
    assert_int_equal(kh_config_init(&cfg), 0);
    assert_int_equal(kh_config_set(&cfg, "https", "true", &err), 0);
    assert_int_equal(kh_config_finish(&cfg, &err), KH_EINVAL);
    assert_non_null(strstr(err, "https:"));
    kh_config_cleanup(&cfg);
}

static void test_load_values(void **state)
{
    (void)state;
    struct kh_config cfg;
    const char *err = NULL;
    const char *text = "; a comment\n"
                       "# another comment\n"
                       "\n"
                       "listen_port = 6000\n"
                       "debug = true\n"
                       "log_stdout = FALSE\n"
                       "log_dir =\n"
                       "sqlite_path = /var/lib/kohaku/k.db\n"
                       "  batch_max_reports=17  \n";
    assert_int_equal(load(&cfg, text, &err, NULL), 0);
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
    expect_error("listen_port = 5890\nbogus = 1\n", 2, "unknown key 'bogus'");
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
    expect_error("; c\n\nlisten_port = 0\n", 3,
                 "listen_port: must be between 1 and 65535, got 0");
    expect_error("listen_port = 80x\n", 1, "listen_port: must be an integer, got '80x'");
    expect_error("listen_port = 12ab\n", 1, "listen_port: must be an integer, got '12ab'");
    expect_error("listen_port =\n", 1, "listen_port: must be an integer, got ''");
    expect_error("listen_port = 99999999999999999999\n", 1,
                 "listen_port: must be an integer, got '99999999999999999999'");
}

static void test_bad_bool_and_enum(void **state)
{
    (void)state;
    expect_error("https = yes\n", 1, "https: must be true or false, got 'yes'");
    expect_error("debug = yes\n", 1, "debug: must be true or false, got 'yes'");
    expect_error("debug = \n", 1, "debug: must be true or false, got ''");
    expect_error("storage = mysql\n", 1,
                 "storage: must be one of sqlite|postgres|null, got 'mysql'");
    struct kh_config cfg;
    const char *err = NULL;
    assert_int_equal(load(&cfg, "https = 1\nlog_stdout = 0\ndebug = True\n", &err, NULL), 0);
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
    expect_error("[main]\ndebug = true\n", 2,
                 "section [main]: kohaku's keys are flat; remove the section header");
}

static void test_syntax_error_and_missing_file(void **state)
{
    (void)state;
    expect_error("listen_port 5890\n", 1, "syntax error (expected key = value)");
    struct kh_config cfg;
    const char *err = NULL;
    assert_int_equal(kh_config_init(&cfg), 0);
    assert_int_equal(kh_config_load(&cfg, "/nonexistent/kohaku.ini", &err), KH_EIO);
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
    const char *err = NULL;
    assert_int_equal(load(&cfg, text, &err, NULL), 0);
    assert_int_equal(strlen(cfg.postgres_uri), 1000);
    assert_string_equal(cfg.postgres_uri, uri);
    assert_int_equal(cfg.listen_port, 5999);
    assert_int_equal(kh_config_finish(&cfg, &err), 0);
    assert_string_equal(cfg.storage, "postgres");
    kh_config_cleanup(&cfg);
    /* a line longer than 1,024 bytes, unquoted */
    memset(uri, 'a', 1000);
    snprintf(text, sizeof(text), "postgres_uri = postgresql://%s\n", uri);
    assert_int_equal(load(&cfg, text, &err, NULL), 0);
    assert_int_equal(strlen(cfg.postgres_uri), 1013);
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
    const char *err = NULL;
    assert_int_equal(load(&cfg, text, &err, NULL), 0);
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
    assert_int_equal(kh_config_finish(&cfg, &err), 0);
    assert_string_equal(cfg.storage, "postgres");
    kh_config_cleanup(&cfg);
}

static void test_load_string_and_finish_checks(void **state)
{
    (void)state;
    struct kh_config cfg;
    const char *err = NULL;
    assert_int_equal(kh_config_init(&cfg), 0);
    assert_int_equal(kh_config_load_string(&cfg, "inline", "a = 1\n", &err), KH_EINVAL);
    assert_string_equal(err, "inline:1: unknown key 'a'");
    assert_int_equal(kh_config_load_string(&cfg, "inline", "https = true\n", &err), 0);
    assert_int_equal(kh_config_finish(&cfg, &err), KH_EINVAL);
    assert_string_equal(err, "inline:1: https: needs tls_fullchain_file and tls_privkey_file");
    kh_config_cleanup(&cfg);
}

/* kh_config_set's reasons through *err; a success leaves *err as it was. */
static void test_set_reasons(void **state)
{
    (void)state;
    struct kh_config cfg;
    const char *err = "untouched";
    assert_int_equal(kh_config_init(&cfg), 0);
    assert_int_equal(kh_config_set(&cfg, "listen_port", "6000", &err), 0);
    assert_string_equal(err, "untouched");
    assert_int_equal(kh_config_set(&cfg, "no_such_key", "1", &err), KH_EINVAL);
    assert_string_equal(err, "unknown key 'no_such_key'");
    assert_int_equal(kh_config_set(&cfg, "LISTEN_PORT", "0", &err), KH_EINVAL);
    assert_string_equal(err, "listen_port: must be between 1 and 65535, got 0");
    assert_int_equal(kh_config_set(&cfg, "storage", "mysql", &err), KH_EINVAL);
    assert_string_equal(err, "storage: must be one of sqlite|postgres|null, got 'mysql'");
    assert_int_equal(cfg.listen_port, 6000);
    err = "untouched";
    assert_int_equal(kh_config_finish(&cfg, &err), 0);
    assert_string_equal(err, "untouched");
    kh_config_cleanup(&cfg);
}

/* Key names in any case, as Kohaku 2023.1 (ini.InsensitiveLoad) read them. */
static void test_keys_any_case(void **state)
{
    (void)state;
    struct kh_config cfg;
    const char *err = NULL;
    assert_int_equal(
        load(&cfg, "LISTEN_ADDR = 127.0.0.2\nListen_Port = 6001\nDEBUG = TRUE\n", &err, NULL), 0);
    assert_string_equal(cfg.listen_addr, "127.0.0.2");
    assert_int_equal(cfg.listen_port, 6001);
    assert_true(cfg.debug);
    assert_int_equal(kh_config_line(&cfg, "listen_port"), 2);
    assert_int_equal(kh_config_line(&cfg, "DEBUG"), 3);
    assert_int_equal(kh_config_line(&cfg, "max_body_bytes"), 0);
    kh_config_cleanup(&cfg);
    expect_error("debug = true\nNO_SUCH_KEY = 1\n", 2, "unknown key 'NO_SUCH_KEY'");
    /* the messages name the key as the table spells it */
    expect_error("LISTEN_PORT = 0\n", 1, "listen_port: must be between 1 and 65535, got 0");
}

struct value_case {
    const char *line, *key, *want;
};

/* One line loaded over the defaults; the string value of key must be want. */
static void expect_string_value(const struct value_case *c)
{
    struct kh_config cfg;
    const char *err = NULL;
    if (load(&cfg, c->line, &err, NULL) != 0)
        fail_msg("%s: %s", c->line, err);
    char *const *field = NULL;
    if (strcmp(c->key, "listen_addr") == 0)
        field = &cfg.listen_addr;
    else if (strcmp(c->key, "log_name") == 0)
        field = &cfg.log_name;
    else if (strcmp(c->key, "log_dir") == 0)
        field = &cfg.log_dir;
    else
        field = &cfg.postgres_uri;
    if (strcmp(*field, c->want) != 0)
        fail_msg("%s: got '%s', want '%s'", c->line, *field, c->want);
    kh_config_cleanup(&cfg);
}

static void test_quoted_values(void **state)
{
    (void)state;
    static const struct value_case cases[] = {
        {"listen_addr = \"0.0.0.0\"\n", "listen_addr", "0.0.0.0"},
        {"listen_addr = '127.0.0.1'\n", "listen_addr", "127.0.0.1"},
        {"listen_addr = \"::1\"   ; IPv6\n", "listen_addr", "::1"},
        {"log_name = `a\"b'c.jsonl`\n", "log_name", "a\"b'c.jsonl"},
        {"log_name = \"\"\"k \"x\".jsonl\"\"\"\n", "log_name", "k \"x\".jsonl"},
        {"log_name = `a ; b # c`  # comment\n", "log_name", "a ; b # c"},
        {"log_name = 'it\"s'\n", "log_name", "it\"s"},
        {"postgres_uri = \"postgres://u:p;w#x@db:5432/k?sslmode=require\" ; c\n",
         "postgres_uri", "postgres://u:p;w#x@db:5432/k?sslmode=require"},
        {"log_dir = \"/var/log/my dir\"   # where\n", "log_dir", "/var/log/my dir"},
        {"log_dir = \" padded \"\n", "log_dir", " padded "},
        /* unquoted: a comment starts at '#' or ';' after a blank, not inside a word */
        {"log_dir = /var/log # where\n", "log_dir", "/var/log"},
        {"log_dir = /var/log\t; where\n", "log_dir", "/var/log"},
        {"postgres_uri = postgresql://u:p#w@db/k;x\n", "postgres_uri",
         "postgresql://u:p#w@db/k;x"},
        {"log_name = abc\"\n", "log_name", "abc\""}, /* a quote that opens nothing */
        {"log_name = a \"b\" c\n", "log_name", "a \"b\" c"},
        /* empty: the key's default */
        {"listen_addr = \"\"\n", "listen_addr", "0.0.0.0"},
        {"listen_addr = 10.0.0.1\nlisten_addr = ''\n", "listen_addr", "0.0.0.0"},
        {"log_name =\n", "log_name", "kohaku.jsonl"},
        {"log_name = ``\n", "log_name", "kohaku.jsonl"},
        {"log_name = # nothing\n", "log_name", "kohaku.jsonl"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        expect_string_value(&cases[i]);

    struct kh_config cfg;
    const char *err = NULL;
    assert_int_equal(load(&cfg,
                          "listen_port = \"6000\"\ndebug = 'true'\nmax_headers = \"\"\n"
                          "https = \"\"\ntls_verify_cacert_path = \"\"\n",
                          &err, NULL),
                     0);
    assert_int_equal(cfg.listen_port, 6000);
    assert_true(cfg.debug);
    assert_int_equal(cfg.max_headers, 64); /* "" = not set */
    assert_false(cfg.https);
    assert_string_equal(cfg.tls_verify_cacert_path, "");
    assert_int_equal(kh_config_finish(&cfg, &err), 0);
    kh_config_cleanup(&cfg);
    /* a number or boolean with nothing after '=' stays an error */
    expect_error("max_headers =\n", 1, "max_headers: must be an integer, got ''");
    expect_error("listen_port = \"80x\"\n", 1, "listen_port: must be an integer, got '80x'");
}

static void test_quote_errors(void **state)
{
    (void)state;
    expect_error("; c\n\nlisten_addr = \"0.0.0.0\n", 3,
                 "listen_addr: unterminated quote: no closing \" on its line");
    expect_error("log_name = 'x.jsonl\n", 1,
                 "log_name: unterminated quote: no closing ' on its line");
    expect_error("debug = true\nlog_name = `x.jsonl\n", 2,
                 "log_name: no closing ` on its line (a value is one line)");
    expect_error("log_name = \"\"\"x.jsonl\n", 1,
                 "log_name: no closing \"\"\" on its line (a value is one line)");
    expect_error("log_name = \"a\\\"b\"\n", 1,
                 "log_name: text after the closing \" (no escapes inside quotes: a value "
                 "holding \" goes in ' or `)");
    expect_error("listen_addr = \"0.0.0.0\" 5890\n", 1,
                 "listen_addr: text after the closing \" (no escapes inside quotes: a value "
                 "holding \" goes in ' or `)");
    expect_error("log_name = 'it's'\n", 1,
                 "log_name: text after the closing ' (no escapes inside quotes: a value "
                 "holding ' goes in \" or `)");
    expect_error("log_name = `x` y\n", 1, "log_name: text after the closing `");
}

/* Lines are counted through long lines, which inih reads in several pieces. */
static void test_lines_through_long_lines(void **state)
{
    (void)state;
    char text[2000], uri[1200];
    memset(uri, 'a', sizeof(uri) - 1);
    uri[sizeof(uri) - 1] = '\0';
    snprintf(text, sizeof(text), "debug = true\npostgres_uri = \"postgresql://%s\"\n\n"
                                 "listen_port = 6002\nbogus = 1\n", uri);
    expect_error(text, 5, "unknown key 'bogus'");
    struct kh_config cfg;
    const char *err = NULL;
    text[strlen(text) - strlen("bogus = 1\n")] = '\0';
    assert_int_equal(kh_config_init(&cfg), 0);
    assert_int_equal(kh_config_load_string(&cfg, "mem", text, &err), 0);
    assert_int_equal(kh_config_line(&cfg, "postgres_uri"), 2);
    assert_int_equal(kh_config_line(&cfg, "listen_port"), 4);
    assert_int_equal(strlen(cfg.postgres_uri), 13 + sizeof(uri) - 1);
    kh_config_cleanup(&cfg);
}

/* Loads text and runs kh_config_finish; its message must be "PATH:" + rest. */
static void expect_finish_error(const char *text, const char *rest)
{
    struct kh_config cfg;
    const char *err = NULL;
    char want[1024], *path;
    assert_int_equal(load(&cfg, text, &err, &path), 0);
    assert_int_equal(kh_config_finish(&cfg, &err), KH_EINVAL);
    snprintf(want, sizeof(want), "%s:%s", path, rest);
    assert_string_equal(err, want);
    free(path);
    kh_config_cleanup(&cfg);
}

/* The checks made after loading name the file and the line of the key at fault. */
static void test_cross_key_errors_cite_lines(void **state)
{
    (void)state;
    expect_finish_error("https = false\n# the CA\ntls_verify_cacert_path = /etc/kohaku/ca.pem\n",
                        "3: tls_verify_cacert_path: client certificates need https = true");
    expect_finish_error("debug = false\nhttps = true\n",
                        "2: https: needs tls_fullchain_file and tls_privkey_file");
    expect_finish_error("tls_fullchain_file = /a.pem\nexporter_https = true\n",
                        "2: exporter_https: needs tls_fullchain_file and tls_privkey_file");
    /* exporter_listen_port left at 5891: the line that made them equal is listen_port's */
    expect_finish_error("debug = false\nlisten_port = 5891\n",
                        "2: exporter_listen_port: the metrics listener needs a port of its own, "
                        "got 5891 like listen_port");
    expect_finish_error("listen_port = 6000\nexporter_listen_port = 6000\n",
                        "2: exporter_listen_port: the metrics listener needs a port of its own, "
                        "got 6000 like listen_port");
    expect_finish_error("\nstorage = postgres\n",
                        "2: postgres_uri: required when storage = postgres");
    /* a read URI without PostgreSQL to read: refused, naming the storage it met */
    expect_finish_error("postgres_read_uri = postgresql://replica/kohaku\n",
                        "1: postgres_read_uri: only with storage = postgres, got storage = "
                        "sqlite");
    expect_finish_error("storage = null\npostgres_read_uri = postgresql://replica/kohaku\n",
                        "2: postgres_read_uri: only with storage = postgres, got storage = "
                        "null");
    expect_finish_error("collector_path = in\n",
                        "1: collector_path: must start with '/', got 'in'");
    expect_finish_error("collector_path = /in\nstats_webhook_path = /in\n",
                        "2: stats_webhook_path: must start with '/' and differ from "
                        "collector_path, got '/in'");
    /* a key the file did not set: the file without a line */
    struct kh_config cfg;
    const char *err = NULL;
    char want[512], *path;
    assert_int_equal(load(&cfg, "debug = true\n", &err, &path), 0);
    assert_int_equal(kh_config_set(&cfg, "HTTPS", "true", &err), 0);
    assert_int_equal(kh_config_finish(&cfg, &err), KH_EINVAL);
    snprintf(want, sizeof(want), "%s: https: needs tls_fullchain_file and tls_privkey_file",
             path);
    assert_string_equal(err, want);
    free(path);
    kh_config_cleanup(&cfg);
}

/* IP privacy: the mode's choices, the hash key it needs, the networks it keeps. */
static void test_privacy_keys(void **state)
{
    (void)state;
    struct kh_config cfg;
    const char *err = NULL;
    char *path;
    assert_int_equal(load(&cfg, "privacy_ip = hash\nprivacy_hash_key = 0123456789abcdef\n"
                                "privacy_keep_networks = 192.0.2.0/24, 2001:db8::/32\n",
                          &err, &path),
                     0);
    assert_int_equal(kh_config_finish(&cfg, &err), 0);
    assert_string_equal(cfg.privacy_ip, "hash");
    assert_string_equal(cfg.privacy_keep_networks, "192.0.2.0/24, 2001:db8::/32");
    free(path);
    kh_config_cleanup(&cfg);
    assert_int_equal(kh_config_init(&cfg), 0);
    assert_string_equal(cfg.privacy_ip, "keep");
    kh_config_cleanup(&cfg);
    expect_error("privacy_ip = anonymize\n", 1,
                 "privacy_ip: must be one of keep|truncate|hash|drop, got 'anonymize'");
    expect_finish_error("\nprivacy_ip = hash\n",
                        "2: privacy_hash_key: required when privacy_ip = hash (a secret of 16 "
                        "to 256 bytes, e.g. from 'openssl rand -hex 32')");
    expect_finish_error("privacy_ip = hash\nprivacy_hash_key = short\n",
                        "2: privacy_hash_key: must be 16 to 256 bytes, got 5 (e.g. from "
                        "'openssl rand -hex 32')");
    expect_finish_error("privacy_keep_networks = 10.0.0.0/8, 10.1.2.3/16\n",
                        "1: privacy_keep_networks: '10.1.2.3/16': has bits set past its prefix "
                        "length (the network's first address, e.g. 10.0.0.0/8, not 10.0.0.1/8)");
    expect_finish_error("privacy_keep_networks = relay.example.com\n",
                        "1: privacy_keep_networks: 'relay.example.com': not an IPv4 or IPv6 "
                        "address (ADDRESS/PREFIX, e.g. 192.0.2.0/24 or 2001:db8::/32)");
}

/* What other modules find wrong in a value ("tls_fullchain_file: ...") gets the key's line. */
static void test_cite_module_errors(void **state)
{
    (void)state;
    struct kh_config cfg;
    const char *err = NULL;
    char out[1024], want[1024], *path;
    assert_int_equal(load(&cfg, "debug = false\ntls_fullchain_file = /x.pem\n", &err, &path), 0);
    kh_config_cite(&cfg, "tls_fullchain_file: /x.pem: no such file", out, sizeof(out));
    snprintf(want, sizeof(want), "%s:2: tls_fullchain_file: /x.pem: no such file", path);
    assert_string_equal(out, want);
    kh_config_cite(&cfg, "listen_addr: 'x' is not a numeric address", out, sizeof(out));
    snprintf(want, sizeof(want), "%s: listen_addr: 'x' is not a numeric address", path);
    assert_string_equal(out, want); /* not set by the file: the file alone */
    kh_config_cite(&cfg, "cannot listen on 127.0.0.1:1: denied", out, sizeof(out));
    assert_string_equal(out, "cannot listen on 127.0.0.1:1: denied");
    kh_config_cite(&cfg, "spool: out of memory", out, sizeof(out));
    assert_string_equal(out, "spool: out of memory");
    free(path);
    kh_config_cleanup(&cfg);
    assert_int_equal(kh_config_init(&cfg), 0); /* no file: as it is */
    kh_config_cite(&cfg, "tls_fullchain_file: /x.pem: bad", out, sizeof(out));
    assert_string_equal(out, "tls_fullchain_file: /x.pem: bad");
    kh_config_cleanup(&cfg);
}

/* After SIGHUP the lines are those of the file as it is now. */
static void test_reload_takes_the_new_lines(void **state)
{
    (void)state;
    struct kh_config live, fresh;
    const char *err = NULL;
    assert_int_equal(kh_config_init(&live), 0);
    assert_int_equal(kh_config_load_string(&live, "k.ini", "retry_after = 3\n", &err), 0);
    assert_int_equal(kh_config_init(&fresh), 0);
    assert_int_equal(kh_config_load_string(&fresh, "k.ini", "# moved\n\nretry_after = 4\n", &err),
                     0);
    FILE *fp = kht_log_capture();
    assert_int_equal(kh_config_reload(&live, &fresh, NULL, 0), 1);
    free(kht_log_captured(fp));
    kh_config_cleanup(&fresh);
    assert_int_equal(kh_config_line(&live, "retry_after"), 3);
    assert_string_equal(live.origin.file, "k.ini");
    kh_config_cleanup(&live);
}

static void test_yaml_hints(void **state)
{
    (void)state;
    /* Kohaku 2022.1's config.yaml: flat "key: value" lines */
    expect_error("collector_port: 5890\n", 1,
                 "collector_port: a YAML line (key: value), not key = value; kohaku reads INI; "
                 "see config.example.ini");
    expect_error("debug = false\nlisten_port: 5890\n", 2,
                 "listen_port: a YAML line (key: value), not key = value; kohaku reads INI; "
                 "see config.example.ini");
    expect_error("timescale:\n  url: postgres://db/k\n", 1,
                 "timescale: a YAML line (key: value), not key = value; kohaku reads INI; "
                 "see config.example.ini");
    expect_error("---\nlisten_port: 5890\n", 1,
                 "syntax error (expected key = value); a YAML line? kohaku reads INI; see "
                 "config.example.ini");
    expect_error("listen_port = 5890\n- item\n", 2,
                 "syntax error (expected key = value); a YAML line? kohaku reads INI; see "
                 "config.example.ini");
    /* colons after the '=' are values */
    struct value_case uri = {"postgres_uri = postgresql://u:p@db:5432/k\n", "postgres_uri",
                             "postgresql://u:p@db:5432/k"};
    expect_string_value(&uri);
    /* by its name, before it is read */
    struct kh_config cfg;
    const char *err = NULL;
    assert_int_equal(kh_config_init(&cfg), 0);
    assert_int_equal(kh_config_load(&cfg, "/nonexistent/config.yaml", &err), KH_EINVAL);
    assert_string_equal(err, "/nonexistent/config.yaml: a YAML file (Kohaku 2022.1's "
                             "config.yaml?); kohaku reads INI; see config.example.ini");
    assert_int_equal(kh_config_load(&cfg, "kohaku.YML", &err), KH_EINVAL);
    assert_non_null(strstr(err, "kohaku reads INI; see config.example.ini"));
    kh_config_cleanup(&cfg);
}

static void test_names_from_before_2023(void **state)
{
    (void)state;
    expect_error("http2_fullchain_file = \"\"\n", 1,
                 "unknown key 'http2_fullchain_file' (renamed tls_fullchain_file in Kohaku "
                 "2023.1)");
    expect_error("debug = true\nhttp2_h2c = true\n", 2,
                 "unknown key 'http2_h2c' (Kohaku 2023.1 replaced it with https: h2c is "
                 "https = false)");
    expect_error("TIMESCALE_URL = postgres://db/k\n", 1,
                 "unknown key 'TIMESCALE_URL' (renamed postgres_uri in Kohaku 2023.1)");
}

/* A config written the way Kohaku 2023.1's example config is: every string in double quotes,
 * "" for the unset ones, comments (in Japanese) between the keys, its key names and order. */
static const char kohaku_2023_1_example[] =
    "debug = false\n"
    "\n"
    "# Kohaku の HTTP リクエストで HTTPS を利用するかどうか\n"
    "https = false\n"
    "# Kohaku の HTTP リクエストの待ち受けアドレスとポートです\n"
    "listen_addr = \"0.0.0.0\"\n"
    "listen_port = 5890\n"
    "\n"
    "exporter_https = false\n"
    "# Kohaku の Prometheus の待ち受けアドレスとポートです\n"
    "exporter_listen_addr = \"0.0.0.0\"\n"
    "exporter_listen_port = 5891\n"
    "\n"
    "# [log]\n"
    "log_dir = \".\"\n"
    "log_name = \"kohaku.jsonl\"\n"
    "log_stdout = true\n"
    "\n"
    "# log_rotate_max_size = 200\n"
    "# log_rotate_max_backups = 7\n"
    "# log_rotate_max_age = 30\n"
    "\n"
    "postgres_uri = \"postgres://postgres:password@192.0.2.10:5432/kohaku?sslmode=disable\"\n"
    "# postgres_ca_cert_file = \"\"\n"
    "\n"
    "# pem なのは前提とする\n"
    "tls_fullchain_file = \"\"\n"
    "tls_privkey_file = \"\"\n"
    "tls_verify_cacert_path = \"\"\n"
    "\n"
    "http2_max_concurrent_streams = 250\n"
    "http2_max_read_frame_size = 1048576\n"
    "http2_idle_timeout = 60\n";

static void test_kohaku_2023_1_example_style(void **state)
{
    (void)state;
    struct kh_config cfg;
    const char *err = NULL;
    assert_int_equal(load(&cfg, kohaku_2023_1_example, &err, NULL), 0);
    assert_string_equal(cfg.listen_addr, "0.0.0.0");
    assert_string_equal(cfg.exporter_listen_addr, "0.0.0.0");
    assert_string_equal(cfg.log_dir, ".");
    assert_string_equal(cfg.log_name, "kohaku.jsonl");
    /* the host of the URI, not the quotes around it (libpq read those as a Unix socket) */
    assert_string_equal(cfg.postgres_uri,
                        "postgres://postgres:password@192.0.2.10:5432/kohaku?sslmode=disable");
    assert_string_equal(cfg.tls_fullchain_file, "");
    assert_string_equal(cfg.tls_verify_cacert_path, "");
    assert_int_equal(cfg.http2_max_read_frame_size, 1048576);
    assert_int_equal(cfg.http2_idle_timeout, 60);
    assert_int_equal(cfg.log_rotate_max_size, 200);
    assert_int_equal(kh_config_line(&cfg, "tls_verify_cacert_path"), 29);
    assert_int_equal(kh_config_finish(&cfg, &err), 0);
    assert_string_equal(cfg.storage, "postgres");
    kh_config_cleanup(&cfg);
}

/* Keys accepted for Kohaku 2023.1 and not acted on: a warning naming the line. */
static void test_ignored_key_warns(void **state)
{
    (void)state;
    struct kh_config cfg;
    const char *err = NULL;
    char *path, want[1024];
    assert_int_equal(load(&cfg, "debug = false\nlog_rotate_compress = true\n", &err, &path), 0);
    FILE *fp = kht_log_capture();
    kh_config_log_ignored(&cfg);
    cfg.log_rotate_compress = false; /* the default: nothing to say */
    kh_config_log_ignored(&cfg);
    char *text = kht_log_captured(fp);
    assert_true(text[0] != '\0');
    snprintf(want, sizeof(want),
             "\"msg\":\"config key accepted and ignored\",\"key\":\"log_rotate_compress\","
             "\"value\":\"true\",\"at\":\"%s:2\"",
             path);
    assert_non_null(strstr(text, want));
    assert_ptr_equal(strchr(text, '\n'), text + strlen(text) - 1); /* one line */
    free(text);
    free(path);
    kh_config_cleanup(&cfg);
}

/* A finished config from text (the defaults when text is empty). */
static void finished(struct kh_config *cfg, const char *text)
{
    const char *err = NULL;
    assert_int_equal(kh_config_init(cfg), 0);
    assert_int_equal(kh_config_load_string(cfg, "inline", text, &err), 0);
    assert_int_equal(kh_config_finish(cfg, &err), 0);
}

/* Runs kh_config_reload with the log going to a temporary file; returns what was logged. */
static char *reload_logged(struct kh_config *live, const struct kh_config *fresh, int want,
                           char *changed, size_t changedlen)
{
    FILE *fp = kht_log_capture();
    assert_int_equal(kh_config_reload(live, fresh, changed, changedlen), want);
    return kht_log_captured(fp);
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

/* The debug dump of the configuration says "(set)" for every secret and for the URIs, which
 * may hold credentials, and never prints them. */
static void test_debug_dump_hides_secrets(void **state)
{
    (void)state;
    struct kh_config cfg;
    const char *err = NULL;
    assert_int_equal(kh_config_init(&cfg), 0);
    assert_int_equal(kh_config_load_string(&cfg, "inline",
                                           "storage = postgres\n"
                                           "postgres_uri = postgresql://u:s3cret-a@db/k\n"
                                           "postgres_read_uri = postgresql://u:s3cret-b@rep/k\n"
                                           "console_token = s3cret-c\n"
                                           "console_user = admin\n"
                                           "console_password = s3cret-d\n"
                                           "privacy_hash_key = s3cret-e-0123456789abcdef\n",
                                           &err),
                     0);
    enum kh_log_level was = kh_log_get_level();
    kh_log_set_level(KH_LOG_DEBUG);
    FILE *fp = kht_log_capture();
    kh_config_log(&cfg);
    char *text = kht_log_captured(fp);
    kh_log_set_level(was);
    assert_true(text[0] != '\0');
    assert_null(strstr(text, "s3cret"));
    const char *keys[] = {"postgres_uri", "postgres_read_uri", "console_token",
                          "console_password", "privacy_hash_key"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        char want[128];
        snprintf(want, sizeof(want), "\"key\":\"%s\",\"value\":\"(set)\"", keys[i]);
        assert_non_null(strstr(text, want));
    }
    assert_non_null(strstr(text, "\"key\":\"console_user\",\"value\":\"admin\""));
    free(text);
    kh_config_cleanup(&cfg);
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
        cmocka_unit_test(test_set_reasons),
        cmocka_unit_test(test_keys_any_case),
        cmocka_unit_test(test_quoted_values),
        cmocka_unit_test(test_quote_errors),
        cmocka_unit_test(test_lines_through_long_lines),
        cmocka_unit_test(test_cross_key_errors_cite_lines),
        cmocka_unit_test(test_privacy_keys),
        cmocka_unit_test(test_cite_module_errors),
        cmocka_unit_test(test_reload_takes_the_new_lines),
        cmocka_unit_test(test_yaml_hints),
        cmocka_unit_test(test_names_from_before_2023),
        cmocka_unit_test(test_kohaku_2023_1_example_style),
        cmocka_unit_test(test_ignored_key_warns),
        cmocka_unit_test(test_reload_applies_runtime_keys),
        cmocka_unit_test(test_debug_dump_hides_secrets),
        cmocka_unit_test(test_reload_keeps_restart_keys),
        cmocka_unit_test(test_reload_changed_list_is_bounded),
        cmocka_unit_test(test_help_marks_reloadable_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
