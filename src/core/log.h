/*
 * log: one JSON object per line on stdout (or a file), UTC timestamps.
 * Owns the output stream and the current level. The level is checked before anything is
 * formatted. Callers build a line with kh_log_begin/kh_log_*()/kh_log_end; every string is
 * JSON-escaped here, so client-supplied text (paths, peers) cannot break the line.
 * Thread-safe: a line is formatted in a caller-owned buffer and written with one fwrite
 * under a lock that kh_log_set_stream takes too, so the stream can be switched (SIGHUP's log
 * file reopen) while other threads log.
 */
#ifndef KH_LOG_H
#define KH_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum kh_log_level { KH_LOG_DEBUG = 0, KH_LOG_INFO, KH_LOG_WARN, KH_LOG_ERROR };

struct kh_logline {
    char buf[2048];
    size_t len;
    bool truncated;
    enum kh_log_level level;
};

void kh_log_set_level(enum kh_log_level level);
enum kh_log_level kh_log_get_level(void);
bool kh_log_enabled(enum kh_log_level level);
/* Redirects output to an already opened file (NULL = stdout). Does not take ownership. The
 * previous stream is flushed, and no line is written to it once this returns: its owner may
 * close it then, and must, before the next switch, when it is a file (kh_log_set_buffered
 * lends it a buffer). */
void kh_log_set_stream(void *fp);

/* Size-based rotation of a log file, as Kohaku 2023.1's log_rotate_* keys: when the file
 * reaches max_bytes it is renamed to NAME-YYYY-MM-DDTHH-MM-SS.mmm.EXT (UTC) beside it and a
 * new file is started; then backups beyond the newest max_backups, and those older than
 * max_age_days, are deleted. 0 turns each off. */
struct kh_log_rotation {
    int64_t max_bytes;
    int64_t max_backups;
    int64_t max_age_days;
};

/* Logs to the file at path (appending), which the logger owns from then on; rot may be NULL.
 * The new file is opened before the current one is left, so on failure (-1, errno set) the
 * current destination stays. Calling it again with the same path reopens it (logrotate). */
int kh_log_to_file(const char *path, const struct kh_log_rotation *rot);
/* Back to stdout; closes the file the logger owned. */
void kh_log_to_stdout(void);
/* Files rotated so far (the unit tests read it). */
uint64_t kh_log_rotations(void);

/* Returns false (and does nothing) when the level is disabled. */
bool kh_log_begin(struct kh_logline *l, enum kh_log_level level, const char *msg);
void kh_log_str(struct kh_logline *l, const char *key, const char *val);
void kh_log_strn(struct kh_logline *l, const char *key, const char *val, size_t len);
void kh_log_int(struct kh_logline *l, const char *key, int64_t val);
void kh_log_dbl(struct kh_logline *l, const char *key, double val);
void kh_log_bool(struct kh_logline *l, const char *key, bool val);
void kh_log_end(struct kh_logline *l);

/* Buffers lines below warn (up to 64 KiB) instead of writing each at once; the owner of the
 * event loop calls kh_log_flush periodically and at exit. Set after kh_log_set_stream. */
void kh_log_set_buffered(bool on);
void kh_log_flush(void);

/* One-call form for a message with an optional "error" string. */
void kh_log(enum kh_log_level level, const char *msg, const char *error);

/* For a failure that stops kohaku at start-up, after it is logged: writes "kohaku: MSG: ERROR"
 * (error may be NULL) to stderr, so that it reaches the terminal or the service manager also
 * when the log goes to a file. Writes nothing when the log goes to the very file stderr is (the
 * same terminal, pipe or journal stream), where the line already is. */
void kh_log_stderr(const char *msg, const char *error);

#endif
