/*
 * main: command line, start-up and shutdown. Order matters: config, logging, schema tables,
 * storage (open + migrate, so a broken database stops kohaku before it accepts anything),
 * then the loop, the writer threads, the spool, the parse pool and the listeners. Shutdown
 * runs in reverse: stop accepting, let in-flight reports finish, join the writers, close
 * storage.
 */
#include <errno.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/app.h"
#include "api/console.h"
#include "api/import.h"
#include "api/quality_report.h"
#include "core/config.h"
#include "core/errors.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/timeutil.h"
#include "net/server.h"
#include "pipeline/batcher.h"
#include "pipeline/quality.h"
#include "quality/assess.h"
#include "sora/envelope.h"
#include "sora/schema.h"
#include "spool/spool.h"
#include "store/store.h"

#ifndef KOHAKU_VERSION
#define KOHAKU_VERSION "0.0.0"
#endif

struct runtime {
    struct event_base *base;
    struct kh_server *metrics_srv;
    struct kh_server *console_srv;
    struct event *log_flush;
    struct kh_app app;
    struct kh_server *srv;
    struct kh_batcher *batcher;
    struct kh_quality_stage *quality;
    struct event *sig_term, *sig_int, *sig_hup, *tick;
    int signals;
    /* the drain (SIGTERM): since when, until when connections may finish, when the process
     * exits anyway (shutdown_timeout), when progress was last logged */
    uint64_t drain_start_usec, drain_end_usec, deadline_usec, progress_usec;
    bool drain_over;
};

static void usage(FILE *fp)
{
    fprintf(fp,
            "Usage: kohaku [OPTIONS] [COMMAND]\n"
            "\n"
            "Kohaku receives Sora's WebRTC stats reports (HTTP/2 stats exporter and HTTP/1.1)\n"
            "and stores them in SQLite or PostgreSQL.\n"
            "\n"
            "Commands:\n"
            "  serve             run the collector (default)\n"
            "  migrate           create or upgrade the database schema, then exit\n"
            "  quality ID        why a connection's call went bad: its verdict, issues with\n"
            "                    their spans, per-stream quality (--intervals: every interval)\n"
            "  quality --channel ID  a channel's participants: whose uplink has the problem\n"
            "  quality --worst   the worst connections (--since 1h, --limit 50 by default)\n"
            "                    quality reads what is stored (README, \"Quality\"); --json\n"
            "                    prints JSON for scripts\n"
            "  import [--format F] [--json] FILE...\n"
            "                    store the reports and webhooks of Sora's log files (- for\n"
            "                    standard input, gzip read as such) through the same checks\n"
            "                    and pipeline as the collector; F: auto (default: from each\n"
            "                    file's first line), rtc-stats (rtc_stats.jsonl), webhook-log\n"
            "                    (stats_webhook.jsonl, session_webhook.jsonl,\n"
            "                    event_webhook.jsonl: {\"id\", \"timestamp\", \"req\": body}) or\n"
            "                    bodies (one body a line); a body's type says its route.\n"
            "                    Prints a summary (--json: as JSON) with each refused\n"
            "                    report's FILE:LINE and reason; a progress line on a\n"
            "                    terminal. Exit 0: all stored or there already, 1: some\n"
            "                    refused, 2: a file or the database failed\n"
            "\n"
            "Options:\n"
            "  -C, --config FILE read settings from FILE (default ./config.ini; defaults are\n"
            "                    used when ./config.ini does not exist)\n"
            "  -V, --version     print the version and the libraries' versions, and exit\n"
            "  -h, --help        print this help and exit\n"
            "      --config-example  print a commented config file with every default\n"
            "      --schema-version N  with migrate: stop at schema version N (for upgrade\n"
            "                    tests); serve refuses a schema older than it knows\n"
            "\n"
            "Settings (key = value lines, see config.example.ini):\n");
    kh_config_print_help(fp);
}

/* kohaku's version, then the run-time version of each library it is linked with (what the
 * loader found, which may be newer than what it was built against). libinih has no version
 * call. */
static void print_version(void)
{
    printf("kohaku %s\n%s\nlibevent %s\n%s\n%s\n%s\n%s\n%s\n", KOHAKU_VERSION,
           kh_h2_library(), event_get_version(), kh_tls_library(), kh_store_sqlite_library(),
           kh_store_postgres_library(), kh_envelope_library(), kh_h1_library());
}

static int load_config(struct kh_config *cfg, const char *path, bool explicit_path)
{
    const char *err = NULL;
    if (kh_config_init(cfg) != 0) {
        fprintf(stderr, "kohaku: out of memory\n");
        return -1;
    }
    if (explicit_path || access(path, F_OK) == 0) {
        if (kh_config_load(cfg, path, &err) != 0) {
            fprintf(stderr, "kohaku: %s\n", err);
            kh_config_cleanup(cfg);
            return -1;
        }
    }
    if (kh_config_finish(cfg, &err) != 0) {
        fprintf(stderr, "kohaku: %s\n", err);
        kh_config_cleanup(cfg);
        return -1;
    }
    return 0;
}

/* A failure that stops start-up: logged, and on stderr too when the log goes elsewhere. */
static void fatal(const char *msg, const char *error)
{
    kh_log(KH_LOG_ERROR, msg, error);
    kh_log_stderr(msg, error);
}

/* The same for an error in a config value that a module found ("tls_fullchain_file: ..."):
 * with the file and line that set it. */
static void fatal_cited(const struct kh_config *cfg, const char *msg, const char *error)
{
    char cited[1500];
    kh_config_cite(cfg, error, cited, sizeof(cited));
    fatal(msg, cited);
}

static void log_path(const struct kh_config *cfg, char *path, size_t len)
{
    snprintf(path, len, "%s/%s", cfg->log_dir[0] ? cfg->log_dir : ".", cfg->log_name);
}

/* log_rotate_* as Kohaku 2023.1 has them: size in MB, backups kept, age in days. */
static struct kh_log_rotation log_rotation(const struct kh_config *cfg)
{
    return (struct kh_log_rotation){
        .max_bytes = cfg->log_rotate_max_size > INT64_MAX / 1048576
                         ? INT64_MAX
                         : cfg->log_rotate_max_size * 1048576,
        .max_backups = cfg->log_rotate_max_backups,
        .max_age_days = cfg->log_rotate_max_age};
}

static void open_log(const struct kh_config *cfg)
{
    if (cfg->log_stdout)
        return;
    char path[4096];
    log_path(cfg, path, sizeof(path));
    struct kh_log_rotation rot = log_rotation(cfg);
    if (kh_log_to_file(path, &rot) != 0)
        fprintf(stderr, "kohaku: log file %s: %s; logging to stdout\n", path, strerror(errno));
}

static int open_store(struct kh_store *store, const struct kh_config *cfg, int schema_target,
                      bool serving)
{
    const char *err = NULL;
    store->ops = kh_store_find(cfg->storage);
    if (store->ops == NULL) {
        fatal("storage backend not available in this build", cfg->storage);
        return -1;
    }
    int rc = store->ops->open(store, cfg, &err);
    if (rc == 0)
        rc = store->ops->migrate(store, schema_target, &err);
    if (rc == KH_ERETRY && serving) {
        /* the database is away: serve anyway (503 until it is back), retrying in the back */
        struct kh_logline l;
        if (kh_log_begin(&l, KH_LOG_WARN, "storage unreachable at start-up; retrying")) {
            kh_log_str(&l, "storage", cfg->storage);
            kh_log_str(&l, "error", err);
            kh_log_end(&l);
        }
        return 0;
    }
    if (rc != 0) {
        struct kh_logline l;
        if (kh_log_begin(&l, KH_LOG_ERROR, "storage failed to open")) {
            kh_log_str(&l, "storage", cfg->storage);
            kh_log_str(&l, "error", err);
            kh_log_end(&l);
        }
        kh_log_stderr("storage failed to open", err);
        store->ops->close(store);
        return -1;
    }
    struct kh_logline l;
    if (kh_log_begin(&l, KH_LOG_INFO, "storage ready")) {
        kh_log_str(&l, "storage", cfg->storage);
        if (strcmp(cfg->storage, "sqlite") == 0)
            kh_log_str(&l, "path", cfg->sqlite_path);
        kh_log_int(&l, "schema_version",
                   schema_target ? schema_target : kh_schema_latest_version());
        kh_log_end(&l);
    }
    return 0;
}

static size_t stats_conns(const struct runtime *rt)
{
    return kh_server_nconns(rt->srv) + kh_server_nconns(rt->metrics_srv);
}

static size_t pending_reports(const struct runtime *rt)
{
    return kh_batcher_pending(rt->batcher) + kh_parsepool_pending(rt->app.parsepool) +
           (rt->app.spool ? kh_spool_pending(rt->app.spool) : 0);
}

static void log_drain(const struct runtime *rt, int level, const char *msg, size_t closed)
{
    struct kh_logline l;
    if (kh_log_begin(&l, level, msg)) {
        kh_log_int(&l, "elapsed_ms", (int64_t)((kh_mono_usec() - rt->drain_start_usec) / 1000));
        kh_log_int(&l, "http2_connections", (int64_t)kh_server_count(rt->srv, 2));
        kh_log_int(&l, "http1_connections", (int64_t)kh_server_count(rt->srv, 1));
        kh_log_int(&l, "streams", (int64_t)kh_server_streams(rt->srv));
        kh_log_int(&l, "pending_reports", (int64_t)pending_reports(rt));
        if (closed)
            kh_log_int(&l, "closed", (int64_t)closed);
        kh_log_end(&l);
    }
}

/* The connections are done, or their time (shutdown_drain_seconds) is over: the listeners
 * stop accepting (a new connection is refused, which a load balancer retries elsewhere) and
 * what is still open is closed. Reports already taken go on to storage or the spool. */
static void end_drain(struct runtime *rt, size_t conns)
{
    rt->drain_over = true;
    kh_server_close_listener(rt->srv);
    kh_server_close_listener(rt->metrics_srv);
    if (conns == 0) {
        log_drain(rt, KH_LOG_INFO, "drain done: connections closed", 0);
        return;
    }
    size_t closed = kh_server_close_all(rt->srv) + kh_server_close_all(rt->metrics_srv);
    log_drain(rt, KH_LOG_WARN, "drain time over: closing the connections left", closed);
}

/* Every 20 ms while stopping. */
static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct runtime *rt = arg;
    uint64_t now = kh_mono_usec();
    if (!rt->drain_over && (stats_conns(rt) == 0 || now > rt->drain_end_usec))
        end_drain(rt, stats_conns(rt));
    size_t conns = stats_conns(rt), pending = pending_reports(rt);
    if (conns == 0 && pending == 0) {
        event_base_loopbreak(rt->base);
        return;
    }
    if (now > rt->deadline_usec) {
        struct kh_logline l;
        if (kh_log_begin(&l, KH_LOG_WARN, "shutdown timeout: exiting with work in progress")) {
            kh_log_int(&l, "connections", (int64_t)conns);
            kh_log_int(&l, "pending_reports", (int64_t)pending);
            kh_log_end(&l);
        }
        event_base_loopbreak(rt->base);
        return;
    }
    if (now - rt->progress_usec >= 1000000) {
        rt->progress_usec = now;
        log_drain(rt, KH_LOG_INFO, rt->drain_over ? "draining: storing what was taken"
                                                  : "draining",
                  0);
    }
}

static void on_log_flush(evutil_socket_t fd, short what, void *arg) { kh_log_flush(); }

/* Gauges for /metrics, read on the loop thread at scrape time. */
static int m_storage_up(void *arg)
{
    struct runtime *rt = arg;
    return rt->app.store->ops->healthy(rt->app.store);
}
static uint64_t m_reconnects(void *arg)
{
    struct runtime *rt = arg;
    return rt->app.store->ops->reconnects(rt->app.store);
}
static uint64_t m_inflight(void *arg)
{
    struct kh_batcher_stats st;
    kh_batcher_get_stats(((struct runtime *)arg)->batcher, &st);
    return st.inflight_bytes;
}
static uint64_t m_pending(void *arg)
{
    return kh_batcher_pending(((struct runtime *)arg)->batcher);
}
static uint64_t m_connections(void *arg, int proto)
{
    return kh_server_count(((struct runtime *)arg)->srv, proto);
}
static uint64_t m_streams(void *arg) { return kh_server_streams(((struct runtime *)arg)->srv); }
static void m_spool(void *arg, uint64_t *segments, uint64_t *waiting)
{
    kh_spool_gauges(((struct runtime *)arg)->app.spool, segments, waiting);
}

/* What SIGHUP works on besides the runtime: main's config (the one rt->app.cfg points to), the
 * file it was read from and the log file main opened. Set by main; the loop thread only. */
static struct {
    struct kh_config *cfg;
    const char *path;
    bool explicit_path;
} hup;

static bool config_file_used(void)
{
    return hup.explicit_path || access(hup.path, F_OK) == 0;
}

/* Reads the config file again into fresh, as load_config did at start. On error fresh is
 * cleaned up and *err says why ("FILE:LINE: key: reason", kh_errf's text or a literal). */
static int reread_config(struct kh_config *fresh, const char **err)
{
    if (kh_config_init(fresh) != 0) {
        *err = "out of memory";
        return KH_ENOMEM;
    }
    int rc = config_file_used() ? kh_config_load(fresh, hup.path, err) : 0;
    if (rc == 0)
        rc = kh_config_finish(fresh, err);
    if (rc != 0)
        kh_config_cleanup(fresh);
    return rc;
}

/* Points the log at cfg's destination again: after logrotate moved the file away, a new file
 * at the same path. The new file is opened first; the old one is closed once no line can go
 * to it any more. When the new one cannot be opened the old one stays. path gets the new
 * file's name ("" when nothing was reopened). */
static void reopen_log(const struct kh_config *cfg, char *path, size_t pathlen)
{
    path[0] = '\0';
    if (cfg->log_stdout) {
        kh_log_to_stdout(); /* closes the log file, if there is one */
        return;
    }
    char name[4096];
    log_path(cfg, name, sizeof(name));
    struct kh_log_rotation rot = log_rotation(cfg);
    if (kh_log_to_file(name, &rot) != 0) {
        int e = errno;
        struct kh_logline l;
        if (kh_log_begin(&l, KH_LOG_ERROR, "log file reopen failed; keeping the current one")) {
            kh_log_str(&l, "path", name);
            kh_log_str(&l, "error", strerror(e));
            kh_log_end(&l);
        }
        return;
    }
    snprintf(path, pathlen, "%s", name);
}

/* SIGHUP: reload what can change at run time: the log file (reopened, for logrotate), the
 * config keys marked "reloaded on SIGHUP" (others that changed are logged as needing a
 * restart), and the TLS certificates and key. A config file that does not load changes no
 * value. */
static void on_hup(evutil_socket_t sig, short what, void *arg)
{
    struct runtime *rt = arg;
    char changed[1024], logpath[4096];
    /* may be kh_errf's text: nothing from reread_config to the log line below calls kh_errf */
    const char *err = NULL;
    struct kh_config fresh;
    int loaded = reread_config(&fresh, &err);
    /* the log first, so that what follows already goes to the new file */
    reopen_log(loaded == 0 ? &fresh : hup.cfg, logpath, sizeof(logpath));
    if (loaded == 0) {
        int n = kh_config_reload(hup.cfg, &fresh, changed, sizeof(changed));
        kh_config_cleanup(&fresh);
        if (n < 0) {
            loaded = n;
            err = "out of memory";
        }
    }
    if (loaded != 0) {
        kh_log(KH_LOG_ERROR, "config reload failed; keeping the current values", err);
    } else {
        kh_log_set_level(hup.cfg->debug ? KH_LOG_DEBUG : KH_LOG_INFO);
        struct kh_logline l;
        if (kh_log_begin(&l, KH_LOG_INFO, "reloaded: config")) {
            kh_log_str(&l, "changed", changed);
            kh_log_str(&l, "file", config_file_used() ? hup.path : "(defaults)");
            if (logpath[0])
                kh_log_str(&l, "log_file", logpath);
            kh_log_end(&l);
        }
        kh_config_log(hup.cfg);
    }
    /* the limits and file names the listeners read, from the (maybe) new values; then the
     * stats listener and, with exporter_https, the metrics listener: each has its own TLS
     * context, loaded from the same files; each keeps its certificates on failure */
    kh_app_apply_config(&rt->app);
    const char *why = NULL;
    if (kh_server_reload_tls(rt->srv, &rt->app.tls_files, &why) != 0 ||
        kh_server_reload_tls(rt->metrics_srv, &rt->app.tls_files, &why) != 0 ||
        (rt->console_srv &&
         kh_server_reload_tls(rt->console_srv, &rt->app.console_tls_files, &why) != 0)) {
        char cited[1500];
        kh_config_cite(hup.cfg, why, cited, sizeof(cited));
        kh_log(KH_LOG_ERROR, "reload failed; keeping the previous certificates", cited);
    }
    else if (rt->app.cfg->https || rt->app.cfg->exporter_https ||
             (rt->console_srv && rt->app.cfg->console_https))
        kh_log(KH_LOG_INFO, "reloaded: tls certificates", NULL);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct runtime *rt = arg;
    if (++rt->signals > 1) {
        /* at once: everything acknowledged is already committed or synced to the spool;
         * what is still in flight was never answered 204 */
        kh_log(KH_LOG_WARN, "second signal: exiting now", NULL);
        kh_log_flush();
        _exit(1);
    }
    const struct kh_config *cfg = rt->app.cfg;
    int64_t drain = cfg->shutdown_drain_seconds < cfg->shutdown_timeout
                        ? cfg->shutdown_drain_seconds
                        : cfg->shutdown_timeout;
    rt->drain_start_usec = rt->progress_usec = kh_mono_usec();
    rt->drain_end_usec = rt->drain_start_usec + (uint64_t)drain * 1000000;
    rt->deadline_usec = rt->drain_start_usec + (uint64_t)cfg->shutdown_timeout * 1000000;
    struct kh_logline l;
    if (kh_log_begin(&l, KH_LOG_INFO, "shutting down")) {
        kh_log_str(&l, "signal", sig == SIGTERM ? "SIGTERM" : "SIGINT");
        kh_log_int(&l, "connections", (int64_t)kh_server_nconns(rt->srv));
        kh_log_int(&l, "streams", (int64_t)kh_server_streams(rt->srv));
        kh_log_int(&l, "pending_reports", (int64_t)pending_reports(rt));
        kh_log_int(&l, "drain_seconds", drain);
        kh_log_int(&l, "shutdown_timeout", cfg->shutdown_timeout);
        kh_log_end(&l);
    }
    /* the health check answers 503 from now on; the listeners still accept, each connection
     * (and each new one) is told to go: HTTP/2 GOAWAY in two steps, HTTP/1.1 Connection:
     * close */
    rt->app.draining = true;
    kh_server_drain(rt->srv);
    kh_server_drain(rt->metrics_srv);
    if (rt->console_srv) { /* its answers acknowledge nothing: not waited for */
        kh_server_close_listener(rt->console_srv);
        kh_server_drain(rt->console_srv);
    }
    if (rt->app.spool)
        kh_spool_stop_drain(rt->app.spool); /* what is spooled waits for the next start */
    struct timeval tv = {0, 20000};
    event_add(rt->tick, &tv);
}

/* Everything serve() made, freed in reverse by close_runtime (each step tolerates what was
 * never made). */
static void close_runtime(struct runtime *rt)
{
    struct event *evs[] = {rt->log_flush, rt->tick, rt->sig_term, rt->sig_int, rt->sig_hup};
    for (size_t i = 0; i < sizeof(evs) / sizeof(evs[0]); i++)
        if (evs[i])
            event_free(evs[i]);
    kh_metrics.src = (struct kh_metrics_sources){0};
    kh_server_free(rt->console_srv);
    kh_console_free(rt->app.console); /* its calls in progress end first */
    kh_server_free(rt->metrics_srv);
    kh_server_free(rt->srv);
    kh_app_cleanup(&rt->app);
    /* bodies still being parsed go on to the batcher, which stops taking them, then the
     * batcher: a batch that fails now still hands its reports to the spool */
    kh_parsepool_free(rt->app.parsepool);
    kh_batcher_free(rt->batcher);
    rt->app.batcher = NULL; /* logged reports whose sync completes now stay in the log */
    kh_quality_stage_free(rt->quality); /* the writers are gone */
    kh_spool_free(rt->app.spool);
    if (rt->base)
        event_base_free(rt->base);
}

/* The writers, the spool and the parse pool: what stores reports. */
/* The quality stage, on the writers, when it is on and the backend can read back (the null
 * backend stores nothing to rate). */
static int open_quality(struct runtime *rt, struct kh_config *cfg)
{
    const struct kh_store *st = rt->app.store;
    if (!cfg->quality || st->ops->latest == NULL)
        return 0;
    struct kh_quality_settings set;
    const char *err = NULL;
    if (kh_quality_settings_from(cfg, &set, &err) != 0) {
        fatal_cited(cfg, "bad quality settings", err);
        return -1;
    }
    int writers = st->ops->writers(rt->app.store);
    rt->quality = kh_quality_stage_new(rt->app.store, writers > 0 ? writers : 1, &set);
    if (rt->quality == NULL) {
        fatal("out of memory", NULL);
        return -1;
    }
    kh_batcher_set_stage(rt->batcher, kh_quality_stage_fn, kh_quality_stage_done, rt->quality);
    kh_batcher_set_after(rt->batcher, kh_quality_stage_after);
    return 0;
}

static int open_pipeline(struct runtime *rt, struct kh_config *cfg)
{
    const char *err = NULL;
    /* before the spool can replay anything: every parse applies it */
    if (kh_app_privacy_init(&rt->app.privacy, cfg, &err) != 0) {
        fatal_cited(cfg, "config", err);
        return -1;
    }
    rt->app.batcher = rt->batcher = kh_batcher_new(rt->base, rt->app.store, cfg);
    if (rt->batcher == NULL) {
        fatal("batcher: cannot start the writer threads", NULL);
        return -1;
    }
    if (open_quality(rt, cfg) != 0)
        return -1;
    if (cfg->spool_dir[0]) {
        rt->app.spool = kh_spool_open(cfg, &err);
        if (rt->app.spool == NULL) {
            fatal_cited(cfg, "spool failed to open", err);
            return -1;
        }
        if (kh_spool_start(rt->app.spool, rt->base, kh_collector_replay, &rt->app) != 0) {
            fatal("spool: cannot start its thread", NULL);
            return -1;
        }
        rt->app.log_first = strcmp(cfg->ack_mode, "log") == 0;
    }
    if (cfg->parse_threads > 0 &&
        (rt->app.parsepool = kh_parsepool_new(rt->base, (int)cfg->parse_threads)) == NULL) {
        fatal("parse pool: cannot start its threads", NULL);
        return -1;
    }
    return 0;
}

/* The stats, metrics and console listeners, with their routes. */
static int open_listeners(struct runtime *rt, struct kh_config *cfg)
{
    const char *err = NULL;
    if (cfg->console &&
        (rt->app.console = kh_console_new(rt->base, cfg, rt->app.store, &err)) == NULL) {
        fatal_cited(cfg, "console failed", err);
        return -1;
    }
    if (kh_app_init(&rt->app) != 0) {
        fatal("out of memory", NULL);
        return -1;
    }
    struct kh_listen spec = kh_app_listen_spec(&rt->app, KH_LISTEN_STATS);
    rt->srv = kh_server_new(rt->base, &spec, &err);
    if (rt->srv == NULL) {
        fatal_cited(cfg, "listener failed", err);
        return -1;
    }
    struct kh_listen mspec = kh_app_listen_spec(&rt->app, KH_LISTEN_METRICS);
    rt->metrics_srv = kh_server_new(rt->base, &mspec, &err);
    if (rt->metrics_srv == NULL) {
        fatal_cited(cfg, "metrics listener failed", err);
        return -1;
    }
    if (rt->app.console) {
        struct kh_listen cspec = kh_app_listen_spec(&rt->app, KH_LISTEN_CONSOLE);
        rt->console_srv = kh_server_new(rt->base, &cspec, &err);
        if (rt->console_srv == NULL) {
            fatal_cited(cfg, "console listener failed", err);
            return -1;
        }
    }
    return 0;
}

static int m_quality(void *arg, struct kh_buf *b)
{
    const struct runtime *rt = arg;
    return kh_quality_stage_render(rt->quality, b);
}

/* Signals, the shutdown tick, the log flush and the gauges /metrics reads. */
static void add_events(struct runtime *rt)
{
    kh_metrics.src = (struct kh_metrics_sources){
        .arg = rt, .storage_up = m_storage_up, .storage_reconnects = m_reconnects,
        .inflight_bytes = m_inflight, .pending_reports = m_pending,
        .connections = m_connections, .streams = m_streams,
        .spool = rt->app.spool ? m_spool : NULL, .more = rt->quality ? m_quality : NULL};
    rt->sig_term = evsignal_new(rt->base, SIGTERM, on_signal, rt);
    rt->sig_int = evsignal_new(rt->base, SIGINT, on_signal, rt);
    rt->sig_hup = evsignal_new(rt->base, SIGHUP, on_hup, rt);
    rt->tick = event_new(rt->base, -1, EV_PERSIST, on_tick, rt);
    event_add(rt->sig_term, NULL);
    event_add(rt->sig_int, NULL);
    event_add(rt->sig_hup, NULL);
    /* access lines are buffered and written at least every 100 ms */
    rt->log_flush = event_new(rt->base, -1, EV_PERSIST, on_log_flush, NULL);
    struct timeval flush_every = {0, 100000};
    event_add(rt->log_flush, &flush_every);
    kh_log_set_buffered(true);
}

static void log_listening(const struct kh_config *cfg)
{
    struct kh_logline l;
    if (kh_log_begin(&l, KH_LOG_INFO, "listening")) {
        kh_log_str(&l, "addr", cfg->listen_addr);
        kh_log_int(&l, "port", cfg->listen_port);
        kh_log_str(&l, "protocols", cfg->https ? "h2,http/1.1 over tls" : "h2c,http/1.1");
        if (cfg->https)
            kh_log_bool(&l, "client_certificates", cfg->tls_verify_cacert_path[0] != '\0');
        kh_log_str(&l, "metrics_addr", cfg->exporter_listen_addr);
        kh_log_int(&l, "metrics_port", cfg->exporter_listen_port);
        kh_log_str(&l, "version", KOHAKU_VERSION);
        kh_log_end(&l);
    }
}

/* Runs the collector until a signal has it drain and stop; 0, or 1 when it could not start. */
static int serve(struct kh_config *cfg, struct kh_store *store)
{
    struct runtime rt = {.app = {.cfg = cfg, .store = store}};
    if (store->ops->start(store) != 0) {
        fatal("storage: cannot start its background work", NULL);
        return 1;
    }
    if (evthread_use_pthreads() != 0 || (rt.base = event_base_new()) == NULL) {
        fatal("event loop: cannot start", NULL);
        return 1;
    }
    if (open_pipeline(&rt, cfg) != 0 || open_listeners(&rt, cfg) != 0) {
        close_runtime(&rt);
        return 1;
    }
    add_events(&rt);
    log_listening(cfg);
    kh_log_flush(); /* start-up lines are out before the first request */
    event_base_dispatch(rt.base);
    kh_log_flush();
    close_runtime(&rt);
    return 0;
}

/* kohaku quality: the answer on stdout, errors on stderr; 0, 1 when nothing is stored for
 * the id, 2 when the database cannot answer. Reads only: no migration, no log lines. */
static int quality_command(const struct kh_config *cfg, const struct kh_qr_request *q)
{
    if (strcmp(cfg->storage, "sqlite") == 0 && access(cfg->sqlite_path, F_OK) != 0) {
        fprintf(stderr, "kohaku: no database at %s (sqlite_path): %s\n", cfg->sqlite_path,
                strerror(errno));
        return 2;
    }
    struct kh_store store = {.ops = kh_store_find(cfg->storage)};
    const char *err = NULL;
    int rc = store.ops == NULL || kh_schema_init() != 0 ? KH_EIO : 0;
    if (rc != 0)
        err = store.ops ? "out of memory" : "storage backend not available in this build";
    rc = rc ? rc : store.ops->open(&store, cfg, &err);
    struct kh_buf out;
    kh_buf_init(&out, 256u << 20);
    if (rc == 0)
        rc = kh_qr_answer(&store, q, &out, &err);
    if (rc == 0)
        fwrite(out.data, 1, out.len, stdout);
    else
        fprintf(stderr, "kohaku: %s\n", err ? err : "quality: failed");
    kh_buf_cleanup(&out);
    if (store.ops && store.impl)
        store.ops->close(&store);
    kh_schema_cleanup();
    return rc == 0 ? 0 : rc == KH_EINVAL ? 1 : 2;
}

/* kohaku import: the summary on stdout, warnings and errors on stderr (no other log lines,
 * but with debug = true). */
static int import_command(struct kh_config *cfg, const struct kh_import_options *opt)
{
    kh_log_set_stream(stderr);
    kh_log_set_level(cfg->debug ? KH_LOG_DEBUG : KH_LOG_WARN);
    int rc = 2;
    if (kh_schema_init() != 0 || kh_q_init() != 0)
        fprintf(stderr, "kohaku: out of memory\n");
    else
        rc = kh_import_run(cfg, opt);
    kh_schema_cleanup();
    kh_config_cleanup(cfg);
    return rc;
}

struct args {
    const char *config_path;
    bool explicit_path;
    int schema_target;
    const char *command;
    /* quality */
    struct kh_qr_request q;
    bool q_options; /* an option of quality alone was given */
    /* import (and --json, which quality takes too) */
    bool json;
    const char *format;
    struct kh_import_options imp;
};

/* A bad option gets one line naming it; the whole usage is kohaku --help. optopt is the short
 * option at fault, or 0 for an unknown long one; argv[optind - 1] is the argument it came in. */
static int bad_option(int opt, char **argv)
{
    const char *arg = argv[optind - 1];
    int len = (int)strcspn(arg, "=");
    bool is_long = strncmp(arg, "--", 2) == 0;
    if (opt == ':' && is_long)
        fprintf(stderr, "kohaku: option '%.*s' needs a value; see kohaku --help\n", len, arg);
    else if (opt == ':')
        fprintf(stderr, "kohaku: option '-%c' needs a value; see kohaku --help\n", optopt);
    else if (is_long && optopt != 0)
        fprintf(stderr, "kohaku: option '%.*s' takes no value; see kohaku --help\n", len, arg);
    else if (is_long)
        fprintf(stderr, "kohaku: unknown option '%.*s'; see kohaku --help\n", len, arg);
    else
        fprintf(stderr, "kohaku: unknown option '-%c'; see kohaku --help\n", optopt);
    return 2;
}

/* The options; returns -1 to go on, or the exit status (printing done). */
static int parse_options(int argc, char **argv, struct args *a)
{
    static const struct option opts[] = {{"config", required_argument, NULL, 'C'},
                                         {"version", no_argument, NULL, 'V'},
                                         {"help", no_argument, NULL, 'h'},
                                         {"config-example", no_argument, NULL, 'E'},
                                         {"schema-version", required_argument, NULL, 'S'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"intervals", no_argument, NULL, 'I'},
                                         {"channel", required_argument, NULL, 'c'},
                                         {"worst", no_argument, NULL, 'w'},
                                         {"since", required_argument, NULL, 's'},
                                         {"limit", required_argument, NULL, 'l'},
                                         {"format", required_argument, NULL, 'F'},
                                         {NULL, 0, NULL, 0}};
    int opt;
    opterr = 0; /* bad_option says it, once */
    while ((opt = getopt_long(argc, argv, ":C:Vh", opts, NULL)) != -1) {
        if (strchr("Icwsl", opt))
            a->q_options = true;
        switch (opt) {
        case 'C':
            a->config_path = optarg;
            a->explicit_path = true;
            break;
        case 'V': print_version(); return 0;
        case 'h': usage(stdout); return 0;
        case 'E': kh_config_print_example(stdout); return 0;
        case 'S': a->schema_target = atoi(optarg); break;
        case 'j': a->q.json = a->json = true; break;
        case 'F': a->format = optarg; break;
        case 'I': a->q.intervals = true; break;
        case 'c':
            a->q.what = KH_QR_CHANNEL;
            a->q.id = optarg;
            break;
        case 'w': a->q.what = KH_QR_WORST; break;
        case 's':
            if ((a->q.since_usec = kh_qr_parse_duration(optarg)) < 0) {
                fprintf(stderr, "kohaku: --since: '%s' is not a duration like 90s, 30m, 1h or "
                                "2d\n", optarg);
                return 2;
            }
            break;
        case 'l':
            a->q.limit = atoi(optarg);
            if (a->q.limit < 1 || a->q.limit > 100000) {
                fprintf(stderr, "kohaku: --limit: must be 1 to 100000, got '%s'\n", optarg);
                return 2;
            }
            break;
        default: return bad_option(opt, argv);
        }
    }
    return -1;
}

/* quality ID | quality --channel ID | quality --worst [--since D] [--limit N] */
static int parse_quality(int argc, char **argv, struct args *a)
{
    int rest = argc - optind - 1; /* after the command */
    if (a->q.what == KH_QR_CONNECTION && rest > 1) {
        fprintf(stderr, "kohaku: unexpected argument '%s'; see kohaku --help\n",
                argv[optind + 2]);
        return 2;
    }
    if (a->q.what == KH_QR_CONNECTION) {
        if (rest != 1) {
            fprintf(stderr, "kohaku: quality needs one connection id (or --channel ID, or "
                            "--worst); see kohaku --help\n");
            return 2;
        }
        a->q.id = argv[optind + 1];
    } else if (rest != 0) {
        fprintf(stderr, "kohaku: unexpected argument '%s'; see kohaku --help\n",
                argv[optind + 1]);
        return 2;
    }
    if (a->q.what != KH_QR_WORST && (a->q.since_usec || a->q.limit)) {
        fprintf(stderr, "kohaku: --since and --limit only go with quality --worst\n");
        return 2;
    }
    if (a->q.intervals && a->q.what != KH_QR_CONNECTION) {
        fprintf(stderr, "kohaku: --intervals only goes with quality CONNECTION_ID\n");
        return 2;
    }
    if (a->q.what == KH_QR_WORST) {
        int64_t span = a->q.since_usec ? a->q.since_usec : 3600 * 1000000LL;
        a->q.since_usec = kh_time_now_usec() - span;
        a->q.limit = a->q.limit ? a->q.limit : 50;
    }
    if (a->schema_target != 0) {
        fprintf(stderr, "kohaku: --schema-version only goes with migrate\n");
        return 2;
    }
    return -1;
}

/* import [--format F] [--json] FILE... */
static int parse_import(int argc, char **argv, struct args *a)
{
    a->imp.files = argv + optind + 1;
    a->imp.nfiles = (size_t)(argc - optind - 1);
    a->imp.json = a->json;
    if (a->imp.nfiles == 0) {
        fprintf(stderr, "kohaku: import needs at least one FILE (- for standard input); see "
                        "kohaku --help\n");
        return 2;
    }
    if (a->format && kh_soralog_format_parse(a->format, &a->imp.format) != 0) {
        fprintf(stderr, "kohaku: --format: must be auto, rtc-stats, webhook-log or bodies, got "
                        "'%s'\n", a->format);
        return 2;
    }
    if (a->q_options) {
        fprintf(stderr, "kohaku: --intervals, --channel, --worst, --since and --limit only go "
                        "with quality\n");
        return 2;
    }
    if (a->schema_target != 0) {
        fprintf(stderr, "kohaku: --schema-version only goes with migrate\n");
        return 2;
    }
    a->imp.progress = isatty(STDERR_FILENO) == 1;
    return -1;
}

/* Options, then the command; returns -1 to go on, or the exit status. */
static int parse_args(int argc, char **argv, struct args *a)
{
    int rc = parse_options(argc, argv, a);
    if (rc >= 0)
        return rc;
    a->command = optind < argc ? argv[optind] : "serve";
    if (strcmp(a->command, "import") == 0)
        return parse_import(argc, argv, a);
    if (a->format) {
        fprintf(stderr, "kohaku: --format only goes with import\n");
        return 2;
    }
    bool quality = strcmp(a->command, "quality") == 0;
    if (quality)
        return parse_quality(argc, argv, a);
    if (optind + 1 < argc) {
        fprintf(stderr, "kohaku: unexpected argument '%s'; see kohaku --help\n",
                argv[optind + 1]);
        return 2;
    }
    if (strcmp(a->command, "serve") != 0 && strcmp(a->command, "migrate") != 0) {
        fprintf(stderr, "kohaku: unknown command '%s' (expected serve, migrate, quality or "
                        "import)\n",
                a->command);
        return 2;
    }
    if (a->q_options || a->json) {
        fprintf(stderr, "kohaku: --json, --intervals, --channel, --worst, --since and --limit "
                        "only go with quality (--json also with import)\n");
        return 2;
    }
    if (a->schema_target != 0 && strcmp(a->command, "migrate") != 0) {
        fprintf(stderr, "kohaku: --schema-version only goes with migrate\n");
        return 2;
    }
    return -1;
}

int main(int argc, char **argv)
{
    struct args args = {.config_path = "./config.ini", .q = {.what = KH_QR_CONNECTION}};
    int parsed = parse_args(argc, argv, &args);
    if (parsed >= 0)
        return parsed;

    struct kh_config cfg;
    if (load_config(&cfg, args.config_path, args.explicit_path) != 0)
        return 2;
    if (strcmp(args.command, "import") == 0)
        return import_command(&cfg, &args.imp);
    if (strcmp(args.command, "quality") == 0) {
        /* stdout is the answer's: only warnings and errors, on stderr */
        kh_log_set_stream(stderr);
        kh_log_set_level(KH_LOG_WARN);
        int qrc = quality_command(&cfg, &args.q);
        kh_config_cleanup(&cfg);
        return qrc;
    }
    kh_log_set_level(cfg.debug ? KH_LOG_DEBUG : KH_LOG_INFO);
    hup.cfg = &cfg;
    hup.path = args.config_path;
    hup.explicit_path = args.explicit_path;
    open_log(&cfg);
    signal(SIGPIPE, SIG_IGN);
    kh_config_log(&cfg);
    kh_config_log_ignored(&cfg);

    int rc = 1;
    struct kh_store store = {0};
    if (kh_schema_init() != 0 || kh_q_init() != 0) {
        fatal("out of memory", NULL);
        goto out;
    }
    bool serving = strcmp(args.command, "serve") == 0;
    if (open_store(&store, &cfg, args.schema_target, serving) != 0)
        goto out_schema;
    rc = serving ? serve(&cfg, &store) : 0;
    store.ops->close(&store);
    kh_log(KH_LOG_INFO, rc == 0 ? "stopped" : "stopped with errors", NULL);
out_schema:
    kh_schema_cleanup();
out:
    kh_log_to_stdout(); /* closes the log file, if any */
    kh_config_cleanup(&cfg);
    return rc;
}
