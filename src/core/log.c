/*
 * log: JSON-lines logger. See log.h. Lines longer than the buffer are cut and marked
 * "truncated": true rather than allocated for.
 */
#include "core/log.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/jsonw.h"

static enum kh_log_level cur_level = KH_LOG_INFO;
static FILE *out_stream;
static bool buffered;

static const char *level_names[] = {"debug", "info", "warn", "error"};

void kh_log_set_level(enum kh_log_level level) { cur_level = level; }
enum kh_log_level kh_log_get_level(void) { return cur_level; }
bool kh_log_enabled(enum kh_log_level level) { return level >= cur_level; }
void kh_log_set_stream(void *fp) { out_stream = fp; }

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
    if (level < cur_level)
        return false;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    l->len = 0;
    l->truncated = false;
    l->level = level;
    l->len = (size_t)snprintf(l->buf, sizeof(l->buf),
                              "{\"time\":\"%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ\",\"level\":\"%s\","
                              "\"msg\":\"",
                              tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                              tm.tm_sec, ts.tv_nsec / 1000, level_names[level]);
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
    char tmp[32];
    int n = snprintf(tmp, sizeof(tmp), "%lld", (long long)val);
    put_key(l, key);
    put(l, tmp, (size_t)n);
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
    FILE *fp = out_stream ? out_stream : stdout;
    fwrite(l->buf, 1, l->len, fp);
    /* lines at warn and above go out at once; the rest within kh_log_flush's period */
    if (l->level >= KH_LOG_WARN || !buffered)
        fflush(fp);
}

void kh_log_set_buffered(bool on)
{
    static char outbuf[64 * 1024];
    buffered = on;
    if (on)
        setvbuf(out_stream ? out_stream : stdout, outbuf, _IOFBF, sizeof(outbuf));
}

void kh_log_flush(void) { fflush(out_stream ? out_stream : stdout); }

void kh_log(enum kh_log_level level, const char *msg, const char *error)
{
    struct kh_logline l;
    if (!kh_log_begin(&l, level, msg))
        return;
    if (error)
        kh_log_str(&l, "error", error);
    kh_log_end(&l);
}
