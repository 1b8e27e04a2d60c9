/*
 * config: kohaku's settings. One declarative table (config.c) gives every key its type,
 * default, bounds, help text and place in struct kh_config; the same table drives the INI
 * loader (libinih), --help and the effective-config dump. Keys are flat (no sections), as
 * in Kohaku 2023.1's config.ini, and read as its ini library read them: key names in any case,
 * values optionally quoted (README, "Configuration"). Every value remembers the line that set
 * it, so that checks made after parsing name the file and line too.
 */
#ifndef KH_CONFIG_H
#define KH_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Room for the table's keys (config.c checks that they fit). */
#define KH_CONFIG_MAX_KEYS 112
/* Room for the quality detectors' thresholds (quality/detect.h checks that its fit). */
#define KH_CONFIG_DETECTORS 16
/* privacy_hash_key's length bounds, in bytes (sora/privacy.h holds the same). */
#define KH_CONFIG_HASH_KEY_MIN 16
#define KH_CONFIG_HASH_KEY_MAX 256

/* Where the values came from: the file (or name) of the last kh_config_load, and for each key,
 * in table order, the line of that file that set it last (0: not set there). */
struct kh_config_origin {
    char *file;
    int line[KH_CONFIG_MAX_KEYS];
};

struct kh_config {
    /* logging (Kohaku 2023.1) */
    bool debug;
    char *log_dir;
    char *log_name;
    bool log_stdout;
    int64_t log_rotate_max_size;
    int64_t log_rotate_max_backups;
    int64_t log_rotate_max_age;
    bool log_rotate_compress;
    /* listener */
    bool https;
    char *listen_addr;
    int64_t listen_port;
    char *collector_path;
    char *stats_webhook_path;
    char *session_webhook_path;
    char *event_webhook_path;
    char *tls_fullchain_file;
    char *tls_privkey_file;
    char *tls_verify_cacert_path;
    int64_t http2_max_concurrent_streams;
    int64_t http2_max_read_frame_size;
    int64_t http2_idle_timeout;
    int64_t max_body_bytes;
    int64_t max_inflight_bytes;
    int64_t parse_threads;
    int64_t max_header_bytes;
    int64_t max_headers;
    int64_t max_connections;
    int64_t request_header_timeout;
    int64_t request_body_timeout;
    int64_t max_json_depth;
    int64_t max_stats_per_report;
    /* metrics listener (Kohaku 2023.1 keys) */
    bool exporter_https;
    char *exporter_listen_addr;
    int64_t exporter_listen_port;
    /* storage */
    char *storage; /* "sqlite", "postgres" or "null" after kh_config_load */
    char *sqlite_path;
    char *sqlite_synchronous;
    char *postgres_uri;
    char *postgres_read_uri; /* the console's and quality's reads; "": postgres_uri */
    char *postgres_ca_cert_file;
    int64_t postgres_pool_size;
    char *postgres_write_method;
    char *postgres_copy_format;
    int64_t timescaledb_chunk_interval;
    int64_t timescaledb_compress_after;
    int64_t postgres_partition_interval;
    int64_t citus_columnar_after;
    int64_t retention_days;
    int64_t retention_interval;
    /* write path */
    int64_t batch_max_reports;
    int64_t batch_max_rows;
    int64_t batch_max_delay_ms;
    bool dedup;
    int64_t dedup_cache_mb;
    int64_t dedup_refresh; /* s */
    int64_t storage_retry_ms;
    int64_t retry_after;
    int64_t shutdown_timeout;
    int64_t shutdown_drain_seconds;
    /* spool */
    char *spool_dir;
    int64_t spool_max_bytes;
    int64_t spool_segment_bytes;
    char *spool_fsync;
    char *ack_mode; /* "commit" or "log" */
    int64_t spool_fsync_interval_ms;
    int64_t spool_backlog_reports;
    /* IP privacy (sora/privacy.h) */
    char *privacy_ip; /* "keep", "truncate", "hash" or "drop" */
    char *privacy_keep_networks;
    char *privacy_hash_key;
    /* console */
    bool console;
    char *console_listen_addr;
    int64_t console_listen_port;
    bool console_https;
    char *console_token;
    char *console_user;
    char *console_password;
    char *console_dir;
    char *console_vendor_dir;
    int64_t console_cache_seconds;
    int64_t query_timeout; /* ms */
    /* quality */
    bool quality;
    int64_t quality_max_gap;
    int64_t quality_cache_mb;
    double quality_bandwidth_headroom;
    /* quality_<name>_warning/_bad, indexed as quality/detect.h's detectors (the flags, which
     * have no threshold, at the end, unused) */
    double quality_warning[KH_CONFIG_DETECTORS], quality_bad[KH_CONFIG_DETECTORS];
    struct kh_config_origin origin;
};

/* Fills cfg with the defaults. Returns 0 or KH_ENOMEM. */
int kh_config_init(struct kh_config *cfg);
void kh_config_cleanup(struct kh_config *cfg);

/* Loads path over the current values. On error returns KH_EINVAL (KH_EIO when the file cannot
 * be read, KH_ENOMEM) and sets *err to "FILE:LINE: key: reason" ("FILE: reason" when no line
 * is at fault), text formatted by kh_errf (errors.h): valid until this thread's next kh_errf.
 * *err is left alone on success. A YAML file (by its name, or a "key: value" line) is refused
 * with a hint that kohaku reads INI. */
int kh_config_load(struct kh_config *cfg, const char *path, const char **err);
/* The same for config text in memory; `name` stands for the file in messages. */
int kh_config_load_string(struct kh_config *cfg, const char *name, const char *text,
                          const char **err);
/* Sets one key (any case) from its text form, taken as it is: quotes and comments are the
 * file's syntax. Records no line. On error returns KH_EINVAL (or KH_ENOMEM) and sets *err to
 * "key: reason" or "unknown key 'KEY'", kh_errf's text. */
int kh_config_set(struct kh_config *cfg, const char *key, const char *value, const char **err);
/* Cross-key checks and derived values (storage auto-selection). On error returns KH_EINVAL (or
 * KH_ENOMEM) and sets *err to "FILE:LINE: key: reason", LINE being the line that set the key
 * at fault ("FILE: key: reason" when the file did not set it, "key: reason" without a file):
 * kh_errf's text, or a string literal. *err is left alone on success. */
int kh_config_finish(struct kh_config *cfg, const char **err);
/* The line of the last loaded file that set key (any case), 0 when it did not. */
int kh_config_line(const struct kh_config *cfg, const char *key);
/* For what other modules find wrong with a config value (a certificate file that does not
 * load, a listen address), as their *err gave it: when msg starts with "key: " for a key of the
 * table, writes "FILE:LINE: msg" into out, citing the line that set it as kh_config_finish
 * does; otherwise msg as it is. A formatter for the message main prints or logs, not a reason
 * passed on: out is the caller's, and may be longer than kh_errf's buffer. msg may point into
 * that buffer (nothing here calls kh_errf). */
void kh_config_cite(const struct kh_config *cfg, const char *msg, char *out, size_t outlen);

/* SIGHUP: applies to live the values of fresh (a config loaded and finished from the same
 * file) that can change at run time, those marked "reloaded on SIGHUP" in --help; strings are
 * copied. A key that differs but needs a restart keeps its live value and is logged as a
 * warning "config changed; needs a restart" naming it. The applied keys go into changed,
 * comma-separated (may be NULL). live takes the lines fresh was read from. Returns how many
 * were applied, or KH_ENOMEM (nothing applied). Call on the thread that reads the config (the
 * loop). */
int kh_config_reload(struct kh_config *live, const struct kh_config *fresh, char *changed,
                     size_t changedlen);

void kh_config_print_help(FILE *fp);
/* Writes a commented config file that sets every key to its default. */
void kh_config_print_example(FILE *fp);
/* Logs every key and its effective value at debug level. */
void kh_config_log(const struct kh_config *cfg);
/* Logs a warning, with FILE:LINE, for each key that is accepted for Kohaku 2023.1 and not acted
 * on when the file set it to something other than its default. */
void kh_config_log_ignored(const struct kh_config *cfg);

#endif
