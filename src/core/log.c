/*
 * log: JSON-lines logger. See log.h. Lines longer than the buffer are cut and marked
 * "truncated": true rather than allocated for.
 */
#include "core/log.h"

#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
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
/* The file the logger owns (kh_log_to_file), its path, size and rotation; out_mu held. */
static FILE *own_file;
static char own_path[4096];
static int64_t own_bytes;
static struct kh_log_rotation rotation;
static atomic_uint_least64_t rotations;

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

/* Switches to fp, owned from now on, and closes the file owned before; out_mu held. */
static void own_switch(FILE *fp)
{
    FILE *old = own_file;
    fflush(stream()); /* every line so far is out before the switch */
    out_stream = fp;
    own_file = fp;
    if (buffered)
        make_buffered(stream());
    if (old && old != fp)
        fclose(old);
}

static FILE *open_append(const char *path, int64_t *size)
{
    FILE *fp = fopen(path, "a");
    struct stat st;
    if (fp)
        *size = fstat(fileno(fp), &st) == 0 ? (int64_t)st.st_size : 0;
    return fp;
}

int kh_log_to_file(const char *path, const struct kh_log_rotation *rot)
{
    int64_t size = 0;
    FILE *fp = open_append(path, &size);
    if (fp == NULL)
        return -1;
    pthread_mutex_lock(&out_mu);
    own_switch(fp);
    snprintf(own_path, sizeof(own_path), "%s", path);
    own_bytes = size;
    rotation = rot ? *rot : (struct kh_log_rotation){0};
    pthread_mutex_unlock(&out_mu);
    return 0;
}

void kh_log_to_stdout(void)
{
    pthread_mutex_lock(&out_mu);
    own_switch(NULL);
    own_path[0] = '\0';
    pthread_mutex_unlock(&out_mu);
}

uint64_t kh_log_rotations(void) { return atomic_load(&rotations); }

/* own_path split into directory, stem and extension ("/var/log", "kohaku", ".jsonl"). */
static void split_path(char *dir, size_t dlen, char *stem, size_t slen, char *ext, size_t elen)
{
    const char *slash = strrchr(own_path, '/');
    const char *base = slash ? slash + 1 : own_path;
    snprintf(dir, dlen, "%.*s", slash ? (int)(slash - own_path) : 1, slash ? own_path : ".");
    const char *dot = strrchr(base, '.');
    if (dot == NULL || dot == base)
        dot = base + strlen(base);
    snprintf(stem, slen, "%.*s", (int)(dot - base), base);
    snprintf(ext, elen, "%s", dot);
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Deletes the backups beyond the newest max_backups and those older than max_age_days. The
 * timestamp in the names sorts them oldest first. */
static void prune_backups(const char *dir, const char *stem, const char *ext)
{
    if (rotation.max_backups <= 0 && rotation.max_age_days <= 0)
        return;
    DIR *d = opendir(dir);
    if (d == NULL)
        return;
    char **names = NULL;
    size_t n = 0, cap = 0, sl = strlen(stem), el = strlen(ext);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name);
        /* STEM-YYYY-MM-DDTHH-MM-SS.mmmEXT */
        if (len != sl + 24 + el || strncmp(de->d_name, stem, sl) != 0 || de->d_name[sl] != '-' ||
            strcmp(de->d_name + len - el, ext) != 0)
            continue;
        if (n == cap) {
            char **more = kh_grow(names, &cap, 16, sizeof(*names));
            if (more == NULL)
                break;
            names = more;
        }
        if ((names[n] = strdup(de->d_name)) != NULL)
            n++;
    }
    closedir(d);
    if (n > 0)
        qsort(names, n, sizeof(*names), cmp_names);
    time_t now = time(NULL);
    for (size_t i = 0; i < n; i++) {
        char path[4400];
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        bool extra = rotation.max_backups > 0 && (int64_t)(n - i) > rotation.max_backups;
        struct stat st;
        bool old = rotation.max_age_days > 0 && stat(path, &st) == 0 &&
                   now - st.st_mtime > (time_t)rotation.max_age_days * 86400;
        if (extra || old)
            unlink(path);
        free(names[i]);
    }
    free(names);
}

/* out_mu held: the file has reached max_bytes. Rename it aside, start a new one, prune. On
 * failure the current file goes on (and grows) until the next try, max_bytes later. */
static void rotate(void)
{
    static int64_t last_ms; /* names stay unique even for two rotations in one millisecond */
    own_bytes = 0;
    char dir[4096], stem[512], ext[64], when[KH_TIME_TEXT_LEN + 1], backup[4800];
    split_path(dir, sizeof(dir), stem, sizeof(stem), ext, sizeof(ext));
    int64_t ms = kh_time_now_usec() / 1000;
    if (ms <= last_ms)
        ms = last_ms + 1;
    last_ms = ms;
    kh_time_format(ms * 1000, when); /* 2026-11-30T10:23:12.345000Z */
    when[23] = '\0';
    when[13] = when[16] = '-';
    snprintf(backup, sizeof(backup), "%s/%s-%s%s", dir, stem, when, ext);
    fflush(own_file);
    if (rename(own_path, backup) != 0)
        return;
    int64_t size = 0;
    FILE *fp = open_append(own_path, &size);
    if (fp == NULL)
        return; /* the renamed file stays in use */
    own_switch(fp);
    own_bytes = size;
    atomic_fetch_add(&rotations, 1);
    prune_backups(dir, stem, ext);
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
    if (own_file && fp == own_file) {
        own_bytes += (int64_t)l->len;
        if (rotation.max_bytes > 0 && own_bytes >= rotation.max_bytes)
            rotate();
    }
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

static bool same_file(int a, int b)
{
    struct stat sa, sb;
    return fstat(a, &sa) == 0 && fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

void kh_log_stderr(const char *msg, const char *error)
{
    pthread_mutex_lock(&out_mu);
    bool there = same_file(fileno(stream()), STDERR_FILENO);
    pthread_mutex_unlock(&out_mu);
    if (!there)
        fprintf(stderr, "kohaku: %s%s%s\n", msg, error ? ": " : "", error ? error : "");
}
