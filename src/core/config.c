/*
 * config: the declarative settings table and its INI loader. See config.h.
 * Adding a key is one line in `params` plus a field in struct kh_config.
 * libinih splits the file into lines, keys and values; this file reads each value the way
 * Kohaku 2023.1's ini library (gopkg.in/ini.v1, ini.InsensitiveLoad) did (quotes, case) and
 * counts lines itself, through inih's reader, so that every key keeps the line that set it.
 */
#include "core/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <ini.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/errors.h"
#include "core/ipnet.h"
#include "core/log.h"

enum param_type { P_BOOL, P_INT, P_STR, P_ENUM, P_REAL };

struct param {
    const char *name;
    enum param_type type;
    size_t offset;
    const char *def;
    int64_t min, max;   /* P_INT and P_REAL bounds */
    const char *choices; /* P_ENUM: '|'-separated */
    const char *help;
    /* RELOAD: SIGHUP applies a new value to the running daemon (kh_config_reload). Only for
     * keys that the running code reads from the live struct kh_config each time it uses
     * them; values copied at start (batcher, store, spool, listeners) need a restart. */
    bool reload;
    /* IGNORED: accepted for Kohaku 2023.1 configs and not acted on; a value other than the
     * default is logged as a warning at start-up (kh_config_log_ignored). */
    bool ignored;
};

#define OFF(f) offsetof(struct kh_config, f)
/* A detector's two threshold keys, quality_<name>_warning and quality_<name>_bad. */
#define Q_THRESHOLDS(i, name, warn, bad, lo, hi, what)                                         \
    {"quality_" name "_warning", P_REAL, OFF(quality_warning[i]), warn, lo, hi, NULL,          \
     "warning threshold of " name ": " what},                                                  \
    {                                                                                          \
        "quality_" name "_bad", P_REAL, OFF(quality_bad[i]), bad, lo, hi, NULL,                \
            "bad threshold of " name ": " what                                                 \
    }
#define I64MAX INT64_MAX
#define RELOAD true
#define IGNORED true

static const struct param params[] = {
    {"debug", P_BOOL, OFF(debug), "false", 0, 0, NULL, "log at debug level", RELOAD},
    {"log_dir", P_STR, OFF(log_dir), "", 0, 0, NULL,
     "directory of the log file when log_stdout = false", RELOAD},
    {"log_name", P_STR, OFF(log_name), "kohaku.jsonl", 0, 0, NULL, "log file name in log_dir",
     RELOAD},
    {"log_stdout", P_BOOL, OFF(log_stdout), "true", 0, 0, NULL,
     "log to stdout (true) or to log_dir/log_name (false)", RELOAD},
    {"log_rotate_max_size", P_INT, OFF(log_rotate_max_size), "200", 0, I64MAX, NULL,
     "with log_stdout = false, MB at which the log file is renamed to NAME-TIME.EXT beside "
     "it and a new one started (0 = never; logrotate with SIGHUP also works)", RELOAD},
    {"log_rotate_max_backups", P_INT, OFF(log_rotate_max_backups), "7", 0, I64MAX, NULL,
     "rotated log files kept, newest first (0 = all)", RELOAD},
    {"log_rotate_max_age", P_INT, OFF(log_rotate_max_age), "30", 0, I64MAX, NULL,
     "days a rotated log file is kept (0 = no limit)", RELOAD},
    {"log_rotate_compress", P_BOOL, OFF(log_rotate_compress), "false", 0, 0, NULL,
     "accepted for Kohaku 2023.1 compatibility; rotated files are not compressed (true is "
     "logged as a warning at start-up)", false,
     IGNORED},
    {"https", P_BOOL, OFF(https), "false", 0, 0, NULL,
     "serve TLS (h2 and http/1.1 by ALPN) on listen_port instead of plaintext"},
    {"listen_addr", P_STR, OFF(listen_addr), "0.0.0.0", 0, 0, NULL,
     "address of the stats listener (HTTP/2 h2c and HTTP/1.1)"},
    {"listen_port", P_INT, OFF(listen_port), "5890", 1, 65535, NULL,
     "port of the stats listener"},
    {"collector_path", P_STR, OFF(collector_path), "/collector", 0, 0, NULL,
     "path of the stats exporter endpoint", RELOAD},
    {"stats_webhook_path", P_STR, OFF(stats_webhook_path), "/webhook/stats", 0, 0, NULL,
     "path of the stats webhook endpoint (HTTP/1.1 and HTTP/2)", RELOAD},
    {"session_webhook_path", P_STR, OFF(session_webhook_path), "/webhook/session", 0, 0, NULL,
     "path of the endpoint for Sora's session webhook (session.created ...; HTTP/1.1 and "
     "HTTP/2; answered 200 {} once stored)", RELOAD},
    {"event_webhook_path", P_STR, OFF(event_webhook_path), "/webhook/event", 0, 0, NULL,
     "path of the endpoint for Sora's event webhook (connection.created ...; HTTP/1.1 and "
     "HTTP/2; answered 200 {} once stored)", RELOAD},
    {"tls_fullchain_file", P_STR, OFF(tls_fullchain_file), "", 0, 0, NULL,
     "PEM certificate chain, server certificate first (https = true)", RELOAD},
    {"tls_privkey_file", P_STR, OFF(tls_privkey_file), "", 0, 0, NULL,
     "PEM private key (https = true)", RELOAD},
    {"tls_verify_cacert_path", P_STR, OFF(tls_verify_cacert_path), "", 0, 0, NULL,
     "CA file or directory of PEM files; set = require and verify client certificates", RELOAD},
    {"http2_max_concurrent_streams", P_INT, OFF(http2_max_concurrent_streams), "250", 1, 65535,
     NULL, "SETTINGS_MAX_CONCURRENT_STREAMS announced to clients", RELOAD},
    {"http2_max_read_frame_size", P_INT, OFF(http2_max_read_frame_size), "16384", 16384,
     16777215, NULL, "SETTINGS_MAX_FRAME_SIZE announced to clients (bytes)", RELOAD},
    {"http2_idle_timeout", P_INT, OFF(http2_idle_timeout), "300", 1, 86400, NULL,
     "seconds without traffic before an idle connection is closed (HTTP/2 and HTTP/1.1)",
     RELOAD},
    {"max_body_bytes", P_INT, OFF(max_body_bytes), "4194304", 1024, 1073741824, NULL,
     "largest accepted request body; larger ones get 413 while streaming", RELOAD},
    {"max_header_bytes", P_INT, OFF(max_header_bytes), "16384", 1024, 1048576, NULL,
     "request line/pseudo-headers and headers of one request, in bytes (431 beyond)", RELOAD},
    {"max_headers", P_INT, OFF(max_headers), "64", 8, 10000, NULL,
     "headers in one request (431 beyond)", RELOAD},
    {"max_connections", P_INT, OFF(max_connections), "4096", 1, 1000000, NULL,
     "open client connections at most; more are closed as they are accepted", RELOAD},
    {"request_header_timeout", P_INT, OFF(request_header_timeout), "10", 1, 3600, NULL,
     "seconds a connection may take to start (TLS handshake, HTTP/2 preface) and a request "
     "to deliver its headers (408 / closed beyond)", RELOAD},
    {"request_body_timeout", P_INT, OFF(request_body_timeout), "60", 1, 3600, NULL,
     "seconds a request may take to deliver its whole body (408 beyond)", RELOAD},
    {"max_json_depth", P_INT, OFF(max_json_depth), "32", 4, 64, NULL,
     "deepest JSON nesting accepted in a report body (400 beyond)", RELOAD},
    {"max_stats_per_report", P_INT, OFF(max_stats_per_report), "10000", 1, 1000000, NULL,
     "most stats objects accepted in one report (400 beyond)", RELOAD},
    {"max_inflight_bytes", P_INT, OFF(max_inflight_bytes), "268435456", 65536, I64MAX, NULL,
     "bytes of parsed reports waiting for storage; past it new reports get 503"},
    {"exporter_https", P_BOOL, OFF(exporter_https), "false", 0, 0, NULL,
     "serve the metrics listener over TLS with the tls_* certificate files (reloaded on SIGHUP)"},
    {"exporter_listen_addr", P_STR, OFF(exporter_listen_addr), "0.0.0.0", 0, 0, NULL,
     "address of the metrics listener (GET /metrics in Prometheus text format, and /.ok)"},
    {"exporter_listen_port", P_INT, OFF(exporter_listen_port), "5891", 1, 65535, NULL,
     "port of the metrics listener; must differ from listen_port"},
    {"storage", P_ENUM, OFF(storage), "", 0, 0, "sqlite|postgres|null",
     "storage backend; empty = postgres when postgres_uri is set, else sqlite"},
    {"sqlite_path", P_STR, OFF(sqlite_path), "./kohaku.db", 0, 0, NULL,
     "SQLite database file (WAL mode)"},
    {"sqlite_synchronous", P_ENUM, OFF(sqlite_synchronous), "full", 0, 0, "full|normal",
     "full: a commit is on disk before 204; normal: survives a kohaku crash, not power loss"},
    {"postgres_uri", P_STR, OFF(postgres_uri), "", 0, 0, NULL,
     "libpq connection URI (storage = postgres)"},
    {"postgres_read_uri", P_STR, OFF(postgres_read_uri), "", 0, 0, NULL,
     "libpq connection URI the console and kohaku quality read from, a streaming replica of "
     "postgres_uri's database, say (its schema version must be kohaku's); empty = postgres_uri"},
    {"postgres_ca_cert_file", P_STR, OFF(postgres_ca_cert_file), "", 0, 0, NULL,
     "CA file for the PostgreSQL server certificate (passed as sslrootcert)"},
    {"postgres_pool_size", P_INT, OFF(postgres_pool_size), "2", 1, 64, NULL,
     "PostgreSQL connections, each with its own writer thread"},
    {"postgres_write_method", P_ENUM, OFF(postgres_write_method), "direct_copy", 0, 0,
     "unnest|copy|direct_copy",
     "unnest: one pipelined INSERT ... SELECT FROM unnest(arrays) per table; copy: COPY into "
     "temporary staging tables, then INSERT ... SELECT; direct_copy: COPY straight into the "
     "tables, and a batch that meets rows already stored is written again with unnest"},
    {"postgres_copy_format", P_ENUM, OFF(postgres_copy_format), "binary", 0, 0, "binary|text",
     "COPY format of the copy and direct_copy write methods: binary sends numbers and times "
     "as PostgreSQL's binary forms (nothing to format or parse); text is COPY's text format"},
    {"timescaledb_chunk_interval", P_INT, OFF(timescaledb_chunk_interval), "24", 1, 8760, NULL,
     "TimescaleDB chunk interval of the stats hypertables (hours)"},
    {"timescaledb_compress_after", P_INT, OFF(timescaledb_compress_after), "7", 1, 3650, NULL,
     "TimescaleDB compresses chunks older than this (days)"},
    {"postgres_partition_interval", P_INT, OFF(postgres_partition_interval), "24", 0, 8760,
     NULL,
     "plain PostgreSQL: the time series tables are partitioned by time, one partition per "
     "this many hours, created ahead by kohaku; retention drops whole partitions. 0: tables "
     "not partitioned yet stay as they are (retention deletes rows). Citus: the same, with "
     "Citus's create_time_partitions and drop_old_time_partitions, for tables kohaku "
     "distributes itself"},
    {"citus_columnar_after", P_INT, OFF(citus_columnar_after), "7", 0, 3650, NULL,
     "Citus: partitions of the stats tables whose every row is older than this many days are "
     "converted to columnar storage (as alter_old_partitions_set_access_method would; needs "
     "the citus_columnar extension; the table's writes wait while one is converted); 0: "
     "never"},
    {"retention_days", P_INT, OFF(retention_days), "60", 0, 36500, NULL,
     "delete stats older than this many days (0 = keep forever): SQLite, PostgreSQL (whole "
     "partitions), TimescaleDB (its retention policy)"},
    {"retention_interval", P_INT, OFF(retention_interval), "600", 1, 86400, NULL,
     "seconds between kohaku's own retention passes (SQLite, plain PostgreSQL, and "
     "TimescaleDB's Apache build, which has no retention policy)"},
    {"batch_max_reports", P_INT, OFF(batch_max_reports), "256", 1, 100000, NULL,
     "reports per storage transaction at most"},
    {"batch_max_rows", P_INT, OFF(batch_max_rows), "20000", 1, 10000000, NULL,
     "stats rows per storage transaction at most"},
    {"batch_max_delay_ms", P_INT, OFF(batch_max_delay_ms), "0", 0, 10000, NULL,
     "extra wait for more reports before a batch goes to an idle writer (ms); 0: at once "
     "(batches still grow while the writers are busy)"},
    {"dedup", P_BOOL, OFF(dedup), "true", 0, 0, NULL,
     "store a codec, certificate or ICE candidate object only when its content (every "
     "member but timestamp) changed since its last stored sample; false: store every sample "
     "(README, \"Unchanged objects stored once\")"},
    {"dedup_cache_mb", P_INT, OFF(dedup_cache_mb), "32", 0, 65536, NULL,
     "MiB for the content hashes of the last stored samples (about 200 bytes an object, "
     "some 10 objects a call): an object not in memory is stored; 0: store every sample"},
    {"dedup_refresh", P_INT, OFF(dedup_refresh), "3600", 1, 86400 * 30, NULL,
     "seconds: an unchanged object is stored again at least this often, so the latest row "
     "at or before any time is never older than this"},
    {"parse_threads", P_INT, OFF(parse_threads), "1", 0, 64, NULL,
     "threads that parse and validate report bodies once received, beside the event loop; "
     "0: parse on the event loop as the body streams in"},
    {"storage_retry_ms", P_INT, OFF(storage_retry_ms), "5000", 0, 600000, NULL,
     "how long a batch is retried after a new storage failure before its reports get 503 (ms)"},
    {"retry_after", P_INT, OFF(retry_after), "5", 1, 3600, NULL,
     "seconds in the retry-after header of a 503", RELOAD},
    {"shutdown_timeout", P_INT, OFF(shutdown_timeout), "30", 1, 3600, NULL,
     "seconds SIGTERM waits for in-flight reports before exiting anyway", RELOAD},
    {"shutdown_drain_seconds", P_INT, OFF(shutdown_drain_seconds), "10", 0, 3600, NULL,
     "seconds SIGTERM's drain lets connections finish (HTTP/2 GOAWAY, HTTP/1.1 Connection: "
     "close, /.ok answering 503, new connections still served) before closing what is left; "
     "at most shutdown_timeout", RELOAD},
    {"spool_dir", P_STR, OFF(spool_dir), "", 0, 0, NULL,
     "directory of the durable spool: reports are written there (and acknowledged) while "
     "storage is away or behind, and drained into it later; empty = no spool (503 instead)"},
    {"spool_max_bytes", P_INT, OFF(spool_max_bytes), "1073741824", 1048576, I64MAX, NULL,
     "disk space the spool may use; when it is full reports get 503 with retry-after"},
    {"spool_segment_bytes", P_INT, OFF(spool_segment_bytes), "16777216", 65536, 1073741824,
     NULL, "size at which the spool starts a new segment file"},
    {"spool_fsync", P_ENUM, OFF(spool_fsync), "batch", 0, 0, "batch|interval",
     "batch: fsync each group of spooled reports as soon as it is written; interval: at most "
     "every spool_fsync_interval_ms (fewer syncs, longer waits); either way a spooled report "
     "is answered 204 only after its fsync"},
    {"spool_fsync_interval_ms", P_INT, OFF(spool_fsync_interval_ms), "50", 1, 10000, NULL,
     "with spool_fsync = interval: time between fsyncs of the spool (ms)"},
    {"spool_backlog_reports", P_INT, OFF(spool_backlog_reports), "2048", 1, 10000000, NULL,
     "with a spool: reports waiting for storage beyond which new reports go to the spool"},
    {"ack_mode", P_ENUM, OFF(ack_mode), "commit", 0, 0, "commit|log",
     "when a report is answered 204: commit, once its rows are committed to the database; "
     "log, once it is appended and synced to the log in spool_dir (needed), its rows, parsed "
     "already, then written from memory in large transactions, and replayed from the log "
     "after a crash or a database outage. README, \"Log-first acknowledgement\""},
    {"privacy_ip", P_ENUM, OFF(privacy_ip), "keep", 0, 0, "keep|truncate|hash|drop",
     "what is stored of the IP addresses clients report (candidates' address, ip, "
     "relatedAddress, the host of their STUN/TURN url, IP literals in extra): keep them; "
     "truncate them (IPv4 to /24, IPv6 to /48); hash them (a keyed token h:<16 hex>, the same "
     "for the same address, with privacy_hash_key); drop them (NULL). README, \"IP privacy\""},
    {"privacy_keep_networks", P_STR, OFF(privacy_keep_networks), "", 0, 0, NULL,
     "comma-separated CIDR networks (IPv4 and IPv6, e.g. 192.0.2.0/24, 2001:db8::/32) whose "
     "addresses privacy_ip keeps as they are: the operator's own TURN servers and SFUs"},
    {"privacy_hash_key", P_STR, OFF(privacy_hash_key), "", 0, 0, NULL,
     "the secret key of privacy_ip = hash (required then; 16 to 256 bytes, e.g. from "
     "'openssl rand -hex 32'); another key gives other tokens. Never logged"},
    {"console", P_BOOL, OFF(console), "true", 0, 0, NULL,
     "serve kohaku's console (web pages and /api) on console_listen_addr:console_listen_port"},
    {"console_listen_addr", P_STR, OFF(console_listen_addr), "127.0.0.1", 0, 0, NULL,
     "address of the console; other than loopback it needs console_token or "
     "console_user/console_password"},
    {"console_listen_port", P_INT, OFF(console_listen_port), "5892", 1, 65535, NULL,
     "port of the console; must differ from listen_port and exporter_listen_port"},
    {"console_https", P_BOOL, OFF(console_https), "false", 0, 0, NULL,
     "serve the console over TLS with the tls_* certificate files (no client certificates)"},
    {"console_token", P_STR, OFF(console_token), "", 0, 0, NULL,
     "when set, the console wants 'authorization: Bearer TOKEN' (or the user and password)"},
    {"console_user", P_STR, OFF(console_user), "", 0, 0, NULL,
     "with console_password: HTTP basic authentication for the console (browsers ask)"},
    {"console_password", P_STR, OFF(console_password), "", 0, 0, NULL,
     "the console user's password"},
    {"console_dir", P_STR, OFF(console_dir), "", 0, 0, NULL,
     "the console's pages; empty = the source tree's console/ when kohaku runs from it, else "
     "the installed copy"},
    {"console_vendor_dir", P_STR, OFF(console_vendor_dir), "/usr/share/javascript/dygraphs", 0,
     0, NULL, "where the charting library is (Debian package libjs-dygraphs)"},
    {"console_cache_seconds", P_INT, OFF(console_cache_seconds), "600", 0, 3600, NULL,
     "the overview keeps what it counted in buckets that ended a quarter of this long (at "
     "most 5 s) ago, for this long, and reads only newer rows; a report this kohaku stores "
     "later into an older bucket shows at the next call, one another process stores (kohaku "
     "import, another kohaku) within this long. 0: every call reads its whole range"},
    {"query_timeout", P_INT, OFF(query_timeout), "5000", 10, 600000, NULL,
     "time limit of a read-only query (the console, kohaku quality), ms: longer ones are "
     "stopped and answered with an error"},
    {"quality", P_BOOL, OFF(quality), "true", 0, 0, NULL,
     "rate each connection report as it is stored: per-interval quality rows, audio MOS, "
     "issues (README, \"Quality\")"},
    {"quality_max_gap", P_INT, OFF(quality_max_gap), "300", 1, 86400, NULL,
     "seconds: a connection's previous report older than this is not an interval's start "
     "(the next report is rated since its streams began)"},
    {"quality_cache_mb", P_INT, OFF(quality_cache_mb), "64", 0, 65536, NULL,
     "MiB for each connection's latest quality rows in memory, so they are not read back "
     "from the database for every batch (checked against it; 0: always read back)"},
    {"quality_bandwidth_headroom", P_REAL, OFF(quality_bandwidth_headroom), "3", 1, 100, NULL,
     "bandwidth_limited counts only while the path's availableOutgoingBitrate is below this "
     "many times what the connection sends (above it the limit is the encoder's ramp-up)"},
    /* Detector thresholds: index i is quality/detect.h's detector i (a unit test holds the
     * names and the defaults to kh_q_detectors). */
    Q_THRESHOLDS(0, "high_loss", "2", "10", 0, 100, "packet loss of a stream's interval (%)"),
    Q_THRESHOLDS(1, "high_rtt", "250", "500", 0, 100000, "round-trip time (ms)"),
    Q_THRESHOLDS(2, "high_jitter", "30", "100", 0, 100000, "audio jitter (ms)"),
    Q_THRESHOLDS(3, "audio_concealment", "3", "10", 0, 100,
                 "concealed share of received audio (%)"),
    Q_THRESHOLDS(4, "video_freezes", "0.1", "5", 0, 100, "share of time frozen (%)"),
    Q_THRESHOLDS(5, "low_frame_rate", "70", "40", 0, 100,
                 "frame rate against the captured (or the stream's best) rate, sustained "
                 "10 s (%; lower is worse)"),
    Q_THRESHOLDS(6, "cpu_limited", "50", "90", 0, 100,
                 "time the encoder is limited by CPU, sustained 10 s (%)"),
    Q_THRESHOLDS(7, "bandwidth_limited", "50", "90", 0, 100,
                 "time the encoder is limited by the network, sustained 10 s (%)"),
    Q_THRESHOLDS(8, "resolution_dropped", "67", "34", 0, 100,
                 "height against the stream's best (%; lower is worse)"),
    Q_THRESHOLDS(9, "no_media", "5", "20", 0, 86400,
                 "seconds without a byte on a stream that exists"),
};

#define NPARAMS (sizeof(params) / sizeof(params[0]))
_Static_assert(NPARAMS <= KH_CONFIG_MAX_KEYS, "raise KH_CONFIG_MAX_KEYS in config.h");

/* Key names match in any case, as in Kohaku 2023.1 (LISTEN_ADDR is listen_addr). */
static const struct param *find_param(const char *name)
{
    for (size_t i = 0; i < NPARAMS; i++)
        if (strcasecmp(params[i].name, name) == 0)
            return &params[i];
    return NULL;
}

int kh_config_line(const struct kh_config *cfg, const char *key)
{
    const struct param *p = find_param(key);
    return p ? cfg->origin.line[p - params] : 0;
}

static bool choice_ok(const char *choices, const char *v)
{
    size_t n = strlen(v);
    const char *p = choices;
    while (*p) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && strncmp(p, v, n) == 0)
            return true;
        p += len + (bar ? 1 : 0);
    }
    return n == 0; /* empty selects the default behaviour */
}

static int set_param(struct kh_config *cfg, const struct param *p, const char *value,
                     const char **err)
{
    void *field = (char *)cfg + p->offset;
    switch (p->type) {
    case P_BOOL:
        if (strcasecmp(value, "true") == 0 || strcmp(value, "1") == 0)
            *(bool *)field = true;
        else if (strcasecmp(value, "false") == 0 || strcmp(value, "0") == 0)
            *(bool *)field = false;
        else {
            *err = kh_errf("%s: must be true or false, got '%s'", p->name, value);
            return KH_EINVAL;
        }
        return 0;
    case P_INT: {
        char *end;
        errno = 0;
        long long v = strtoll(value, &end, 10);
        if (errno || end == value || *end != '\0') {
            *err = kh_errf("%s: must be an integer, got '%s'", p->name, value);
            return KH_EINVAL;
        }
        if (v < p->min || v > p->max) {
            *err = kh_errf("%s: must be between %lld and %lld, got %lld", p->name,
                           (long long)p->min, (long long)p->max, v);
            return KH_EINVAL;
        }
        *(int64_t *)field = v;
        return 0;
    }
    case P_REAL: {
        char *end;
        errno = 0;
        double v = strtod(value, &end);
        if (errno || end == value || *end != '\0' || !isfinite(v)) {
            *err = kh_errf("%s: must be a number, got '%s'", p->name, value);
            return KH_EINVAL;
        }
        if (v < (double)p->min || v > (double)p->max) {
            *err = kh_errf("%s: must be between %lld and %lld, got %s", p->name,
                           (long long)p->min, (long long)p->max, value);
            return KH_EINVAL;
        }
        *(double *)field = v;
        return 0;
    }
    case P_ENUM:
        if (!choice_ok(p->choices, value)) {
            *err = kh_errf("%s: must be one of %s, got '%s'", p->name, p->choices, value);
            return KH_EINVAL;
        }
        /* fall through */
    case P_STR: {
        char *copy = strdup(value);
        if (copy == NULL) {
            *err = kh_errf("%s: out of memory", p->name);
            return KH_ENOMEM;
        }
        free(*(char **)field);
        *(char **)field = copy;
        return 0;
    }
    }
    return KH_EINVAL;
}

int kh_config_set(struct kh_config *cfg, const char *key, const char *value, const char **err)
{
    const struct param *p = find_param(key);
    if (p == NULL) {
        *err = kh_errf("unknown key '%s'", key);
        return KH_EINVAL;
    }
    int rc = set_param(cfg, p, value, err);
    if (rc == 0)
        cfg->origin.line[p - params] = 0; /* no longer the file's value */
    return rc;
}

int kh_config_init(struct kh_config *cfg)
{
    const char *why;
    memset(cfg, 0, sizeof(*cfg));
    for (size_t i = 0; i < NPARAMS; i++)
        if (set_param(cfg, &params[i], params[i].def, &why) != 0) {
            kh_config_cleanup(cfg);
            return KH_ENOMEM;
        }
    return 0;
}

void kh_config_cleanup(struct kh_config *cfg)
{
    for (size_t i = 0; i < NPARAMS; i++)
        if (params[i].type == P_STR || params[i].type == P_ENUM) {
            char **f = (char **)((char *)cfg + params[i].offset);
            free(*f);
            *f = NULL;
        }
    free(cfg->origin.file);
    cfg->origin.file = NULL;
}

/* ---- values as written: quotes and comments ---- */

/* The quotes a value may be written in, as gopkg.in/ini.v1 reads them (Kohaku 2023.1). A
 * backquote or triple-quoted value ends at the last such quote on its line; a "..." or '...'
 * value at the next one. Nothing is escaped inside: a value that holds a quote character is
 * written in another kind of quote. */
struct quote {
    const char *mark;
    bool to_last;
    const char *unterminated, *trailing;
};

static const struct quote quotes[] = {
    {"\"\"\"", true, "no closing \"\"\" on its line (a value is one line)",
     "text after the closing \"\"\""},
    {"`", true, "no closing ` on its line (a value is one line)", "text after the closing `"},
    {"\"", false, "unterminated quote: no closing \" on its line",
     "text after the closing \" (no escapes inside quotes: a value holding \" goes in ' or `)"},
    {"'", false, "unterminated quote: no closing ' on its line",
     "text after the closing ' (no escapes inside quotes: a value holding ' goes in \" or `)"},
};

/* The quote v starts with: """ only when something follows it, as in ini.v1. */
static const struct quote *quote_of(const char *v)
{
    for (size_t i = 0; i < sizeof(quotes) / sizeof(quotes[0]); i++) {
        size_t n = strlen(quotes[i].mark);
        if (strncmp(v, quotes[i].mark, n) == 0 && (n == 1 || v[n] != '\0'))
            return &quotes[i];
    }
    return NULL;
}

static bool blank(char c) { return c == ' ' || c == '\t'; }

/* After a closing quote: blanks, then nothing or a comment. */
static bool only_comment(const char *s)
{
    while (blank(*s))
        s++;
    return *s == '\0' || *s == '#' || *s == ';';
}

/* Unquoted: '#' or ';' at the start or after a blank begins a comment (one glued to a word,
 * as in a URI fragment or a password, is part of the value). */
static void cut_comment(char *v)
{
    size_t n = 0;
    while (v[n] && !((v[n] == '#' || v[n] == ';') && (n == 0 || blank(v[n - 1]))))
        n++;
    while (n > 0 && blank(v[n - 1]))
        n--;
    v[n] = '\0';
}

/* Reads v (a value as inih hands it, blanks around it stripped) in place: *out is the value,
 * *quoted whether it was in quotes. On error *why says what is wrong. */
static int read_value(char *v, char **out, bool *quoted, const char **why)
{
    const struct quote *q = quote_of(v);
    *out = v;
    *quoted = q != NULL;
    if (q == NULL) {
        cut_comment(v);
        return 0;
    }
    size_t n = strlen(q->mark);
    char *close = q->to_last ? strstr(v + n, q->mark) : strchr(v + n, q->mark[0]);
    for (char *next; q->to_last && close && (next = strstr(close + 1, q->mark)) != NULL;)
        close = next;
    if (close == NULL) {
        *why = q->unterminated;
        return KH_EINVAL;
    }
    if (!only_comment(close + n)) {
        *why = q->trailing;
        return KH_EINVAL;
    }
    *close = '\0';
    *out = v + n;
    return 0;
}

/* ---- the loader ---- */

struct load_ctx {
    struct kh_config *cfg;
    FILE *fp;          /* the file, or */
    const char *text;  /* what is left of the text in memory */
    int line;          /* the line last handed to inih */
    bool mid_line;     /* the last piece handed over did not end its line */
    char head[256];    /* the start of that line */
    const char *why;   /* failed: what is wrong with that line (a literal or kh_errf's text) */
    bool failed;
};

/* fgets over text in memory. */
static char *text_gets(char *buf, int num, const char **text)
{
    const char *s = *text;
    int n = 0;
    if (*s == '\0' || num < 2)
        return NULL;
    while (n < num - 1 && s[n] != '\0') {
        buf[n] = s[n];
        if (s[n++] == '\n')
            break;
    }
    buf[n] = '\0';
    *text = s + n;
    return buf;
}

/* inih's reader: a line, or the next piece of a long one, per call. inih calls the handler for
 * a line before reading the next, so ctx->line is the line of the key being handled. */
static char *read_piece(char *buf, int num, void *stream)
{
    struct load_ctx *ctx = stream;
    char *got = ctx->fp ? fgets(buf, num, ctx->fp) : text_gets(buf, num, &ctx->text);
    if (got == NULL)
        return NULL;
    if (!ctx->mid_line) {
        ctx->line++;
        snprintf(ctx->head, sizeof(ctx->head), "%s", buf);
    }
    size_t n = strlen(buf);
    ctx->mid_line = n > 0 && buf[n - 1] != '\n';
    return got;
}

/* inih also splits "key: value" (as Python's configparser does). kohaku's INI is key = value:
 * such a line comes from a YAML config (Kohaku 2022.1's config.yaml). */
static bool yaml_key_line(const char *head) { return head[strcspn(head, "=:")] == ':'; }

/* Lines of a YAML file that are no INI at all: a document marker or a list item. */
static bool yaml_syntax_line(const char *head)
{
    head += strspn(head, " \t");
    return strncmp(head, "---", 3) == 0 || (head[0] == '-' && (blank(head[1]) || !head[1]));
}

static bool yaml_name(const char *path)
{
    size_t n = strlen(path);
    return (n >= 5 && strcasecmp(path + n - 5, ".yaml") == 0) ||
           (n >= 4 && strcasecmp(path + n - 4, ".yml") == 0);
}

#define INI_HINT "kohaku reads INI; see config.example.ini"

/* Names from before Kohaku 2023.1 (its YAML config and early INI): still unknown keys, with a
 * hint. Kohaku 2023.1 itself did not read them either. */
static const struct {
    const char *name, *hint;
} renamed[] = {
    {"http2_fullchain_file", "renamed tls_fullchain_file in Kohaku 2023.1"},
    {"http2_privkey_file", "renamed tls_privkey_file in Kohaku 2023.1"},
    {"http2_verify_cacert_path", "renamed tls_verify_cacert_path in Kohaku 2023.1"},
    {"http2_h2c", "Kohaku 2023.1 replaced it with https: h2c is https = false"},
    {"log_debug", "not read by Kohaku 2023.1; debug sets the log level"},
    {"timescale_url", "renamed postgres_uri in Kohaku 2023.1"},
    {"timescale_rootcert_file", "renamed postgres_ca_cert_file in Kohaku 2023.1"},
    {"timescale_sslmode", "dropped in Kohaku 2023.1: put sslmode=... in postgres_uri"},
    {"collector_port", "Kohaku 2022.1's name: listen_port"},
};

static void unknown_key(struct load_ctx *ctx, const char *name)
{
    for (size_t i = 0; i < sizeof(renamed) / sizeof(renamed[0]); i++)
        if (strcasecmp(name, renamed[i].name) == 0) {
            ctx->why = kh_errf("unknown key '%s' (%s)", name, renamed[i].hint);
            return;
        }
    ctx->why = kh_errf("unknown key '%s'", name);
}

/* Sets p from the value as written. "" (in any quotes) leaves a key at its default, and so does
 * an empty text value; an empty number or boolean is an error. */
static int apply_value(struct load_ctx *ctx, const struct param *p, const char *written)
{
    char *copy = strdup(written), *v;
    bool quoted;
    const char *why;
    if (copy == NULL) {
        ctx->why = kh_errf("%s: out of memory", p->name);
        return KH_ENOMEM;
    }
    int rc = read_value(copy, &v, &quoted, &why);
    if (rc != 0) {
        ctx->why = kh_errf("%s: %s", p->name, why);
    } else {
        bool unset = v[0] == '\0' && (quoted || p->type == P_STR || p->type == P_ENUM);
        rc = set_param(ctx->cfg, p, unset ? p->def : v, &ctx->why);
    }
    free(copy);
    return rc;
}

static int on_ini_entry(void *user, const char *section, const char *name, const char *value)
{
    struct load_ctx *ctx = user;
    const struct param *p = NULL;
    if (section[0] != '\0')
        ctx->why =
            kh_errf("section [%s]: kohaku's keys are flat; remove the section header", section);
    else if (yaml_key_line(ctx->head))
        ctx->why = kh_errf("%s: a YAML line (key: value), not key = value; " INI_HINT, name);
    else if ((p = find_param(name)) == NULL)
        unknown_key(ctx, name);
    else if (apply_value(ctx, p, value) == 0) {
        ctx->cfg->origin.line[p - params] = ctx->line;
        return 1;
    }
    ctx->failed = true;
    return 0;
}

static void ini_setup(void)
{
    /* Debian's libinih exposes its limits at run time: allow long values (URIs). */
    ini_use_stack = false;
    ini_allow_realloc = true;
    ini_allow_multiline = false; /* an indented line is a line of its own */
    ini_max_line = 65536;
    ini_stop_on_first_error = true;
    /* inline comments are read in read_value: a quoted value may hold ';' */
    ini_allow_inline_comments = false;
}

/* ctx->why may be kh_errf's text: the message is made in one kh_errf, which reads it first. */
static int load_result(struct load_ctx *ctx, const char *name, int line, const char **err)
{
    if (line == -2) {
        *err = kh_errf("%s: out of memory while reading", name);
        return KH_ENOMEM;
    }
    if (line == 0)
        return 0;
    if (ctx->failed)
        *err = kh_errf("%s:%d: %s", name, ctx->line, ctx->why);
    else
        *err = kh_errf("%s:%d: syntax error (expected key = value)%s", name, ctx->line,
                       yaml_syntax_line(ctx->head) ? "; a YAML line? " INI_HINT : "");
    return KH_EINVAL;
}

/* The values about to be loaded come from name: lines recorded for another file are dropped. */
static int set_origin(struct kh_config *cfg, const char *name)
{
    if (cfg->origin.file && strcmp(cfg->origin.file, name) == 0)
        return 0;
    char *copy = strdup(name);
    if (copy == NULL)
        return KH_ENOMEM;
    free(cfg->origin.file);
    cfg->origin.file = copy;
    memset(cfg->origin.line, 0, sizeof(cfg->origin.line));
    return 0;
}

static int load(struct load_ctx *ctx, const char *name, const char **err)
{
    if (set_origin(ctx->cfg, name) != 0) {
        *err = kh_errf("%s: out of memory", name);
        return KH_ENOMEM;
    }
    ini_setup();
    int line = ini_parse_stream(read_piece, ctx, on_ini_entry, ctx);
    return load_result(ctx, name, line, err);
}

int kh_config_load(struct kh_config *cfg, const char *path, const char **err)
{
    if (yaml_name(path)) {
        *err = kh_errf("%s: a YAML file (Kohaku 2022.1's config.yaml?); " INI_HINT, path);
        return KH_EINVAL;
    }
    struct load_ctx ctx = {.cfg = cfg, .fp = fopen(path, "r")};
    if (ctx.fp == NULL) {
        *err = kh_errf("%s: cannot open: %s", path, strerror(errno));
        return KH_EIO;
    }
    int rc = load(&ctx, path, err);
    fclose(ctx.fp);
    return rc;
}

int kh_config_load_string(struct kh_config *cfg, const char *name, const char *text,
                          const char **err)
{
    struct load_ctx ctx = {.cfg = cfg, .text = text};
    return load(&ctx, name, err);
}

/* ---- checks across keys, after loading ---- */

/* "FILE:LINE" of the line that set key (or, when the file did not set it, alt), "FILE" when
 * the file set neither, "" without a file. */
static void where(const struct kh_config *cfg, const char *key, const char *alt, char *buf,
                  size_t len)
{
    int line = kh_config_line(cfg, key);
    if (line == 0 && alt)
        line = kh_config_line(cfg, alt);
    if (cfg->origin.file == NULL)
        snprintf(buf, len, "%s", "");
    else if (line > 0)
        snprintf(buf, len, "%s:%d", cfg->origin.file, line);
    else
        snprintf(buf, len, "%s", cfg->origin.file);
}

/* *err = "WHERE: " and the reason, in one kh_errf; returns KH_EINVAL. */
__attribute__((format(printf, 5, 6))) static int
refuse(const struct kh_config *cfg, const char *key, const char *alt, const char **err,
       const char *fmt, ...)
{
    char at[4200], why[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    where(cfg, key, alt, at, sizeof(at));
    *err = at[0] ? kh_errf("%s: %s", at, why) : kh_errf("%s", why);
    return KH_EINVAL;
}

void kh_config_cite(const struct kh_config *cfg, const char *msg, char *out, size_t outlen)
{
    char key[64], at[4200] = "";
    size_t n = strcspn(msg, ":");
    if (msg[n] == ':' && msg[n + 1] == ' ' && n < sizeof(key)) {
        memcpy(key, msg, n);
        key[n] = '\0';
        if (find_param(key))
            where(cfg, key, NULL, at, sizeof(at));
    }
    if (at[0])
        snprintf(out, outlen, "%s: %s", at, msg);
    else
        snprintf(out, outlen, "%s", msg);
}

static int check_tls(const struct kh_config *cfg, const char **err)
{
    bool files = cfg->tls_fullchain_file[0] && cfg->tls_privkey_file[0];
    if (cfg->https && !files)
        return refuse(cfg, "https", NULL, err,
                      "https: needs tls_fullchain_file and tls_privkey_file");
    if (cfg->exporter_https && !files)
        return refuse(cfg, "exporter_https", NULL, err,
                      "exporter_https: needs tls_fullchain_file and tls_privkey_file");
    if (!cfg->https && cfg->tls_verify_cacert_path[0])
        return refuse(cfg, "tls_verify_cacert_path", NULL, err,
                      "tls_verify_cacert_path: client certificates need https = true");
    return 0;
}

/* A lifecycle webhook's path: absolute, and no other route's. */
static int check_lifecycle_path(const struct kh_config *cfg, const char *key, const char **err)
{
    static const char *const keys[] = {"collector_path", "stats_webhook_path",
                                       "session_webhook_path", "event_webhook_path"};
    const char *const paths[] = {cfg->collector_path, cfg->stats_webhook_path,
                                 cfg->session_webhook_path, cfg->event_webhook_path};
    const char *path = strcmp(key, "session_webhook_path") == 0 ? paths[2] : paths[3];
    if (path[0] != '/')
        return refuse(cfg, key, NULL, err, "%s: must start with '/', got '%s'", key, path);
    for (size_t i = 0; i < 4; i++)
        if (paths[i] != path && strcmp(paths[i], path) == 0)
            return refuse(cfg, key, keys[i], err, "%s: '%s' is %s already", key, path, keys[i]);
    return 0;
}

static int check_paths_and_ports(const struct kh_config *cfg, const char **err)
{
    if (cfg->stats_webhook_path[0] != '/' ||
        strcmp(cfg->stats_webhook_path, cfg->collector_path) == 0)
        return refuse(cfg, "stats_webhook_path", "collector_path", err,
                      "stats_webhook_path: must start with '/' and differ from collector_path, "
                      "got '%s'",
                      cfg->stats_webhook_path);
    if (cfg->collector_path[0] != '/')
        return refuse(cfg, "collector_path", NULL, err,
                      "collector_path: must start with '/', got '%s'", cfg->collector_path);
    int rc = check_lifecycle_path(cfg, "session_webhook_path", err);
    if (rc == 0)
        rc = check_lifecycle_path(cfg, "event_webhook_path", err);
    if (rc != 0)
        return rc;
    if (cfg->exporter_listen_port == cfg->listen_port)
        return refuse(cfg, "exporter_listen_port", "listen_port", err,
                      "exporter_listen_port: the metrics listener needs a port of its own, got "
                      "%lld like listen_port",
                      (long long)cfg->listen_port);
    if (cfg->console && (cfg->console_listen_port == cfg->listen_port ||
                         cfg->console_listen_port == cfg->exporter_listen_port))
        return refuse(cfg, "console_listen_port", NULL, err,
                      "console_listen_port: the console needs a port of its own, got %lld",
                      (long long)cfg->console_listen_port);
    return 0;
}

static bool loopback(const char *addr)
{
    unsigned char a[16];
    if (inet_pton(AF_INET, addr, a) == 1)
        return a[0] == 127;
    return inet_pton(AF_INET6, addr, a) == 1 && strcmp(addr, "::1") == 0;
}

/* The console is read-only but shows what clients sent: off loopback it wants a secret. */
static int check_console(const struct kh_config *cfg, const char **err)
{
    if (!cfg->console)
        return 0;
    if (cfg->console_user[0] && !cfg->console_password[0])
        return refuse(cfg, "console_user", NULL, err,
                      "console_user: needs console_password");
    if (cfg->console_password[0] && !cfg->console_user[0])
        return refuse(cfg, "console_password", NULL, err,
                      "console_password: needs console_user");
    if (strchr(cfg->console_user, ':'))
        return refuse(cfg, "console_user", NULL, err,
                      "console_user: HTTP basic authentication allows no ':' in a user name");
    bool auth = cfg->console_token[0] || cfg->console_user[0];
    if (!auth && !loopback(cfg->console_listen_addr))
        return refuse(cfg, "console_listen_addr", NULL, err,
                      "console_listen_addr: %s is not loopback; set console_token or "
                      "console_user and console_password (or console = false)",
                      cfg->console_listen_addr);
    bool files = cfg->tls_fullchain_file[0] && cfg->tls_privkey_file[0];
    if (cfg->console_https && !files)
        return refuse(cfg, "console_https", NULL, err,
                      "console_https: needs tls_fullchain_file and tls_privkey_file");
    return 0;
}

static int check_storage(const struct kh_config *cfg, const char **err)
{
    if (strcmp(cfg->ack_mode, "log") == 0 && !cfg->spool_dir[0])
        return refuse(cfg, "ack_mode", "spool_dir", err,
                      "ack_mode: log needs spool_dir (the log is the spool's segments)");
    if (strcmp(cfg->storage, "postgres") == 0 && cfg->postgres_uri[0] == '\0')
        return refuse(cfg, "storage", "postgres_uri", err,
                      "postgres_uri: required when storage = postgres");
    if (strcmp(cfg->storage, "postgres") != 0 && cfg->postgres_read_uri[0] != '\0')
        return refuse(cfg, "postgres_read_uri", "storage", err,
                      "postgres_read_uri: only with storage = postgres, got storage = %s",
                      cfg->storage);
    if (strcmp(cfg->storage, "sqlite") == 0 && cfg->sqlite_path[0] == '\0')
        return refuse(cfg, "sqlite_path", "storage", err,
                      "sqlite_path: required when storage = sqlite");
    return 0;
}

/* The same rules as sora/privacy.c's, checked here so that a bad value names its line, at
 * start-up and on SIGHUP alike. */
static int check_privacy(const struct kh_config *cfg, const char **err)
{
    struct kh_ipnet nets[KH_IPNET_MAX];
    size_t n, keylen = strlen(cfg->privacy_hash_key);
    const char *why;
    if (kh_ipnet_parse_list(cfg->privacy_keep_networks, nets, KH_IPNET_MAX, &n, &why) != 0)
        return refuse(cfg, "privacy_keep_networks", NULL, err, "privacy_keep_networks: %s", why);
    if (strcmp(cfg->privacy_ip, "hash") == 0 && keylen == 0)
        return refuse(cfg, "privacy_hash_key", "privacy_ip", err,
                      "privacy_hash_key: required when privacy_ip = hash (a secret of %d to %d "
                      "bytes, e.g. from 'openssl rand -hex 32')",
                      KH_CONFIG_HASH_KEY_MIN, KH_CONFIG_HASH_KEY_MAX);
    if (keylen > 0 && (keylen < KH_CONFIG_HASH_KEY_MIN || keylen > KH_CONFIG_HASH_KEY_MAX))
        return refuse(cfg, "privacy_hash_key", NULL, err,
                      "privacy_hash_key: must be %d to %d bytes, got %zu (e.g. from 'openssl "
                      "rand -hex 32')",
                      KH_CONFIG_HASH_KEY_MIN, KH_CONFIG_HASH_KEY_MAX, keylen);
    return 0;
}

int kh_config_finish(struct kh_config *cfg, const char **err)
{
    if (cfg->storage[0] == '\0') {
        free(cfg->storage);
        cfg->storage = strdup(cfg->postgres_uri[0] ? "postgres" : "sqlite");
        if (cfg->storage == NULL) {
            *err = "out of memory";
            return KH_ENOMEM;
        }
    }
    int rc = check_tls(cfg, err);
    if (rc == 0)
        rc = check_paths_and_ports(cfg, err);
    if (rc == 0)
        rc = check_storage(cfg, err);
    if (rc == 0)
        rc = check_console(cfg, err);
    if (rc == 0)
        rc = check_privacy(cfg, err);
    return rc;
}

static bool same_value(const struct param *p, const struct kh_config *a,
                       const struct kh_config *b)
{
    const void *fa = (const char *)a + p->offset, *fb = (const char *)b + p->offset;
    switch (p->type) {
    case P_BOOL: return *(const bool *)fa == *(const bool *)fb;
    case P_INT: return *(const int64_t *)fa == *(const int64_t *)fb;
    case P_REAL: return *(const double *)fa == *(const double *)fb;
    default: return strcmp(*(char *const *)fa, *(char *const *)fb) == 0;
    }
}

static void append_key(char *list, size_t len, const char *key)
{
    if (list == NULL || len == 0)
        return;
    size_t used = strlen(list);
    if (used + (used ? 1 : 0) + strlen(key) + 1 > len)
        return; /* the list is a summary for the log: keys that do not fit are left off */
    snprintf(list + used, len - used, "%s%s", used ? "," : "", key);
}

/* live takes the lines of fresh: where each key is in the file as it is now (errors found
 * later, in certificate files reloaded from those keys, cite them). */
static void take_origin(struct kh_config *live, const struct kh_config *fresh)
{
    const char *name = fresh->origin.file;
    if (name == NULL || live->origin.file == NULL || strcmp(name, live->origin.file) != 0) {
        char *copy = name ? strdup(name) : NULL;
        free(live->origin.file);
        live->origin.file = copy;
        if (name && copy == NULL) {
            memset(live->origin.line, 0, sizeof(live->origin.line));
            return;
        }
    }
    memcpy(live->origin.line, fresh->origin.line, sizeof(live->origin.line));
}

int kh_config_reload(struct kh_config *live, const struct kh_config *fresh, char *changed,
                     size_t changedlen)
{
    /* copies of the new strings first, so that running out of memory changes nothing */
    char *copies[NPARAMS] = {NULL};
    for (size_t i = 0; i < NPARAMS; i++) {
        const struct param *p = &params[i];
        if (!p->reload || p->type == P_BOOL || p->type == P_INT || p->type == P_REAL ||
            same_value(p, live, fresh))
            continue;
        copies[i] = strdup(*(char *const *)((const char *)fresh + p->offset));
        if (copies[i] == NULL) {
            for (size_t j = 0; j < i; j++)
                free(copies[j]);
            return KH_ENOMEM;
        }
    }
    if (changed && changedlen)
        changed[0] = '\0';
    int n = 0;
    for (size_t i = 0; i < NPARAMS; i++) {
        const struct param *p = &params[i];
        if (same_value(p, live, fresh))
            continue;
        if (!p->reload) {
            struct kh_logline l;
            if (kh_log_begin(&l, KH_LOG_WARN, "config changed; needs a restart")) {
                kh_log_str(&l, "key", p->name);
                kh_log_end(&l);
            }
            continue;
        }
        void *field = (char *)live + p->offset;
        const void *from = (const char *)fresh + p->offset;
        switch (p->type) {
        case P_BOOL: *(bool *)field = *(const bool *)from; break;
        case P_INT: *(int64_t *)field = *(const int64_t *)from; break;
        case P_REAL: *(double *)field = *(const double *)from; break;
        default:
            free(*(char **)field);
            *(char **)field = copies[i];
        }
        append_key(changed, changedlen, p->name);
        n++;
    }
    take_origin(live, fresh);
    return n;
}

void kh_config_print_help(FILE *fp)
{
    for (size_t i = 0; i < NPARAMS; i++) {
        const struct param *p = &params[i];
        fprintf(fp, "  %-30s %s", p->name, p->help);
        if (p->type == P_ENUM)
            fprintf(fp, " (%s)", p->choices);
        else if (p->type == P_INT || p->type == P_REAL)
            fprintf(fp, " [%lld..%lld]", (long long)p->min, (long long)p->max);
        fprintf(fp, "; default '%s'%s\n", p->def, p->reload ? "; reloaded on SIGHUP" : "");
    }
}

void kh_config_print_example(FILE *fp)
{
    fprintf(fp, "; kohaku configuration: every key with its default value.\n"
                "; Generated by `kohaku --config-example`; keys are flat (no sections).\n"
                "; Kohaku 2023.1's config.ini is read as it is: key names in any case, values\n"
                "; bare or in quotes (\"...\", '...', `...`; \"\" = not set, the default), a\n"
                "; comment after ; or # at the start of a line or after a blank.\n");
    for (size_t i = 0; i < NPARAMS; i++) {
        const struct param *p = &params[i];
        fprintf(fp, "\n; %s", p->help);
        if (p->type == P_ENUM)
            fprintf(fp, "\n; one of: %s", p->choices);
        else if (p->type == P_INT || p->type == P_REAL)
            fprintf(fp, "\n; range: %lld..%lld%s", (long long)p->min, (long long)p->max,
                    p->type == P_REAL ? " (a decimal number)" : "");
        else if (p->type == P_BOOL)
            fprintf(fp, "\n; true or false");
        if (p->reload)
            fprintf(fp, "\n; reloaded on SIGHUP");
        fprintf(fp, "\n%s = %s\n", p->name, p->def);
    }
}

static bool secret(const char *key)
{
    return strcmp(key, "postgres_uri") == 0 || strcmp(key, "postgres_read_uri") == 0 ||
           strcmp(key, "console_token") == 0 ||
           strcmp(key, "console_password") == 0 || strcmp(key, "privacy_hash_key") == 0;
}

void kh_config_log(const struct kh_config *cfg)
{
    if (!kh_log_enabled(KH_LOG_DEBUG))
        return;
    for (size_t i = 0; i < NPARAMS; i++) {
        const struct param *p = &params[i];
        const void *field = (const char *)cfg + p->offset;
        struct kh_logline l;
        kh_log_begin(&l, KH_LOG_DEBUG, "config");
        kh_log_str(&l, "key", p->name);
        switch (p->type) {
        case P_BOOL: kh_log_bool(&l, "value", *(const bool *)field); break;
        case P_INT: kh_log_int(&l, "value", *(const int64_t *)field); break;
        case P_REAL: kh_log_dbl(&l, "value", *(const double *)field); break;
        default:
            /* never print a secret, nor credentials that may sit in a URI */
            kh_log_str(&l, "value", secret(p->name) && (*(char *const *)field)[0]
                                        ? "(set)"
                                        : *(char *const *)field);
        }
        kh_log_end(&l);
    }
}

/* The value of p in its text form, as in the table's defaults. */
static void value_text(const struct param *p, const struct kh_config *cfg, char *buf,
                       size_t len)
{
    const void *field = (const char *)cfg + p->offset;
    switch (p->type) {
    case P_BOOL: snprintf(buf, len, "%s", *(const bool *)field ? "true" : "false"); break;
    case P_INT: snprintf(buf, len, "%lld", (long long)*(const int64_t *)field); break;
    case P_REAL: snprintf(buf, len, "%g", *(const double *)field); break;
    default: snprintf(buf, len, "%s", *(char *const *)field);
    }
}

void kh_config_log_ignored(const struct kh_config *cfg)
{
    for (size_t i = 0; i < NPARAMS; i++) {
        const struct param *p = &params[i];
        char value[64], at[4200];
        value_text(p, cfg, value, sizeof(value));
        if (!p->ignored || strcmp(value, p->def) == 0)
            continue;
        where(cfg, p->name, NULL, at, sizeof(at));
        struct kh_logline l;
        if (kh_log_begin(&l, KH_LOG_WARN, "config key accepted and ignored")) {
            kh_log_str(&l, "key", p->name);
            kh_log_str(&l, "value", value);
            kh_log_str(&l, "at", at);
            kh_log_str(&l, "why", p->help);
            kh_log_end(&l);
        }
    }
}
