/*
 * log: JSON-lines logger. See log.h. Lines longer than the buffer are cut and marked
 * "truncated": true rather than allocated for.
 */
#include "core/log.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/jsonw.h"
#include "core/numparse.h"
#include "core/timeutil.h"

/* The level is read by every thread that logs and changed by SIGHUP on the loop thread. */
static atomic_int cur_level = KH_LOG_INFO;

/* The stream, and what is written to it, are guarded by out_mu: the loop thread and the
 * writer threads log, and SIGHUP switches the stream (log file reopen) while they do. */
static pthread_mutex_t out_mu = PTHREAD_MUTEX_INITIALIZER;
static FILE *out_stream; /* NULL = stdout */
static bool buffered;
/* Buffers of kh_log_set_buffered: stdout keeps its own; log files alternate between two, so
 * the stream just switched away from keeps its (flushed) buffer until its owner closes it. */
static char stdout_buf[64 * 1024];
static bool stdout_buf_set;
static char file_bufs[2][64 * 1024];
static int file_buf_cur;

static const char *level_names[] = {"debug", "info", "warn", "error"};

void kh_log_set_level(enum kh_log_level level)
{
    atomic_store_explicit(&cur_level, (int)level, memory_order_relaxed);
}
enum kh_log_level kh_log_get_level(void)
{
    return (enum kh_log_level)atomic_load_explicit(&cur_level, memory_order_relaxed);
}
bool kh_log_enabled(enum kh_log_level level) { return (int)level >= (int)kh_log_get_level(); }

static FILE *stream(void) { return out_stream ? out_stream : stdout; }

/* Gives fp its 64 KiB buffer; out_mu held. fp has had no output yet, except stdout. */
static void make_buffered(FILE *fp)
{
    if (fp == stdout) {
        if (!stdout_buf_set)
            setvbuf(stdout, stdout_buf, _IOFBF, sizeof(stdout_buf));
        stdout_buf_set = true;
        return;
    }
    file_buf_cur ^= 1;
    setvbuf(fp, file_bufs[file_buf_cur], _IOFBF, sizeof(file_bufs[0]));
}

void kh_log_set_stream(void *fp)
{
    pthread_mutex_lock(&out_mu);
    FILE *old = stream();
    if (fp != old && !(fp == NULL && old == stdout)) {
        fflush(old); /* every line written so far is out before the owner closes it */
        out_stream = fp;
        if (buffered)
            make_buffered(stream());
    }
    pthread_mutex_unlock(&out_mu);
}

static void put(struct kh_logline *l, const char *s, size_t n)
{
    /* keep room for the closing "}\n" and a truncation marker */
    size_t room = sizeof(l->buf) - 32;
    if (l->len + n > room) {
        n = l->len < room ? room - l->len : 0;
        l->truncated = true;
    }
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

static void put_escaped(struct kh_logline *l, const char *s, size_t n)
{
    char tmp[512];
    size_t off = 0;
    while (off < n) {
        size_t used = 0;
        size_t w = kh_json_escape(tmp, sizeof(tmp), s + off, n - off, &used);
        put(l, tmp, w);
        if (used == 0)
            break;
        off += used;
    }
}

static void put_key(struct kh_logline *l, const char *key)
{
    put(l, ",\"", 2);
    put(l, key, strlen(key));
    put(l, "\":", 2);
}

bool kh_log_begin(struct kh_logline *l, enum kh_log_level level, const char *msg)
{
    if (!kh_log_enabled(level))
        return false;
    l->len = 0;
    l->truncated = false;
    l->level = level;
    char when[KH_TIME_TEXT_LEN + 1];
    kh_time_format(kh_time_now_usec(), when);
    put(l, "{\"time\":\"", 9);
    put(l, when, KH_TIME_TEXT_LEN);
    put(l, "\",\"level\":\"", 11);
    put(l, level_names[level], strlen(level_names[level]));
    put(l, "\",\"msg\":\"", 9);
    put_escaped(l, msg, strlen(msg));
    put(l, "\"", 1);
    return true;
}

void kh_log_strn(struct kh_logline *l, const char *key, const char *val, size_t len)
{
    put_key(l, key);
    put(l, "\"", 1);
    put_escaped(l, val, len);
    put(l, "\"", 1);
}

void kh_log_str(struct kh_logline *l, const char *key, const char *val)
{
    if (val == NULL) {
        put_key(l, key);
        put(l, "null", 4);
        return;
    }
    kh_log_strn(l, key, val, strlen(val));
}

void kh_log_int(struct kh_logline *l, const char *key, int64_t val)
{
    char tmp[24];
    size_t n = kh_format_int64(tmp, val);
    put_key(l, key);
    put(l, tmp, n);
}

void kh_log_dbl(struct kh_logline *l, const char *key, double val)
{
    char tmp[64];
    int n = snprintf(tmp, sizeof(tmp), "%.3f", val);
    put_key(l, key);
    put(l, tmp, (size_t)n);
}

void kh_log_bool(struct kh_logline *l, const char *key, bool val)
{
    put_key(l, key);
    put(l, val ? "true" : "false", val ? 4 : 5);
}

void kh_log_end(struct kh_logline *l)
{
    if (l->truncated) {
        static const char t[] = ",\"truncated\":true";
        memcpy(l->buf + l->len, t, sizeof(t) - 1);
        l->len += sizeof(t) - 1;
    }
    l->buf[l->len++] = '}';
    l->buf[l->len++] = '\n';
    pthread_mutex_lock(&out_mu);
    FILE *fp = stream();
    fwrite(l->buf, 1, l->len, fp);
    /* lines at warn and above go out at once; the rest within kh_log_flush's period */
    if (l->level >= KH_LOG_WARN || !buffered)
        fflush(fp);
    pthread_mutex_unlock(&out_mu);
}

void kh_log_set_buffered(bool on)
{
    pthread_mutex_lock(&out_mu);
    buffered = on;
    if (on)
        make_buffered(stream());
    pthread_mutex_unlock(&out_mu);
}

void kh_log_flush(void)
{
    pthread_mutex_lock(&out_mu);
    fflush(stream());
    pthread_mutex_unlock(&out_mu);
}

void kh_log(enum kh_log_level level, const char *msg, const char *error)
{
    struct kh_logline l;
    if (!kh_log_begin(&l, level, msg))
        return;
    if (error)
        kh_log_str(&l, "error", error);
    kh_log_end(&l);
}
