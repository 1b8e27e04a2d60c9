/*
 * soralog: see soralog.h.
 *
 * yajl reads the line (its syntax and UTF-8 checks are the line's only checks) and the
 * callbacks note where things are: yajl_get_bytes_consumed, read inside a callback, is the
 * offset just past the token that called it (the line is fed in one piece, so it is an
 * offset into the line). A top-level member ends with its value's last token; it began at
 * its key's opening quote, the first '"' after the end of the member before it (only blanks
 * and a comma come between).
 */
#include "sora/soralog.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <yajl/yajl_parse.h>

#include "core/errors.h"

static const char *const format_names[] = {"auto", "rtc-stats", "webhook-log", "bodies"};

const char *kh_soralog_format_name(enum kh_soralog_format f)
{
    return (unsigned)f < sizeof(format_names) / sizeof(format_names[0]) ? format_names[f] : "?";
}

int kh_soralog_format_parse(const char *name, enum kh_soralog_format *out)
{
    for (size_t i = 0; i < sizeof(format_names) / sizeof(format_names[0]); i++) {
        if (strcmp(name, format_names[i]) == 0) {
            *out = (enum kh_soralog_format)i;
            return 0;
        }
    }
    return KH_EINVAL;
}

static const char *const key_names[KH_SK_COUNT] = {
    "", "type", "id", "timestamp", "connection_id", "stats", "req",
    "rtc_data", "rtc_id", "rtc_timestamp", "rtc_type"};

struct ctx {
    struct kh_soraline *l;
    yajl_handle y;
    const char *line;
    size_t len;
    size_t depth;
    size_t prev_end;  /* end of the member before, or just past the top-level '{' */
    size_t key_end;   /* just past the current top-level key */
    enum kh_soralog_key cur;
    bool want_req_type; /* the last key read inside "req" was "type" */
    bool stop_at_type, stopped, closed;
    int rc;
};

static int fail(struct ctx *c, int rc, const char *msg)
{
    if (c->rc == 0) {
        snprintf(c->l->err, sizeof(c->l->err), "%s", msg);
        c->rc = rc;
    }
    return 0;
}

static size_t here(const struct ctx *c) { return yajl_get_bytes_consumed(c->y); }

static enum kh_soralog_key classify(const unsigned char *k, size_t n)
{
    for (int i = 1; i < KH_SK_COUNT; i++)
        if (strlen(key_names[i]) == n && memcmp(key_names[i], k, n) == 0)
            return (enum kh_soralog_key)i;
    return KH_SK_OTHER;
}

static size_t skip(const struct ctx *c, size_t at, const char *chars)
{
    while (at < c->len && strchr(chars, c->line[at]) != NULL && c->line[at] != '\0')
        at++;
    return at;
}

/* The current top-level member's value has ended at `end`. */
static int member_done(struct ctx *c, size_t end)
{
    struct kh_soraline *l = c->l;
    size_t begin = skip(c, c->prev_end, " \t\r\n,");
    size_t vbegin = skip(c, skip(c, c->key_end, " \t\r\n:"), " \t\r\n");
    l->member[l->nmembers] = (struct kh_span){begin, end - begin};
    l->key[l->nmembers] = c->cur;
    if (c->cur != KH_SK_OTHER && l->value[c->cur].len == 0) /* the first one counts */
        l->value[c->cur] = (struct kh_span){vbegin, end - vbegin};
    l->nmembers++;
    c->prev_end = end;
    return 1;
}

static void copy_type(char *dst, bool *has, const unsigned char *s, size_t n)
{
    size_t cut = n < 47 ? n : 47;
    memcpy(dst, s, cut);
    dst[cut] = '\0';
    *has = true;
}

/* A scalar value; s is the decoded string (strings only). */
static int scalar(struct ctx *c, const unsigned char *s, size_t n, bool is_string)
{
    if (c->depth == 0)
        return fail(c, KH_EINVAL, "line: must be a JSON object");
    if (c->depth == 2 && c->cur == KH_SK_REQ && c->want_req_type && is_string)
        copy_type(c->l->req_type, &c->l->has_req_type, s, n);
    c->want_req_type = false;
    if (c->depth > 1)
        return 1;
    if (c->cur == KH_SK_TYPE && is_string && !c->l->has_type) {
        copy_type(c->l->type, &c->l->has_type, s, n);
        if (c->stop_at_type) {
            c->stopped = true;
            return 0;
        }
    }
    return member_done(c, here(c));
}

static int on_null(void *ctx) { return scalar(ctx, NULL, 0, false); }
static int on_boolean(void *ctx, int b) { return scalar(ctx, NULL, 0, false); }
static int on_number(void *ctx, const char *s, size_t n) { return scalar(ctx, NULL, 0, false); }
static int on_string(void *ctx, const unsigned char *s, size_t n)
{
    return scalar(ctx, s, n, true);
}

static int on_map_key(void *ctx, const unsigned char *k, size_t n)
{
    struct ctx *c = ctx;
    if (c->depth == 2 && c->cur == KH_SK_REQ)
        c->want_req_type = n == 4 && memcmp(k, "type", 4) == 0;
    if (c->depth != 1)
        return 1;
    if (c->l->nmembers == KH_SORALOG_MAX_MEMBERS)
        return fail(c, KH_EINVAL, "line: more than 128 top-level members");
    c->cur = classify(k, n);
    c->key_end = here(c);
    return 1;
}

static int open_container(struct ctx *c, bool is_map)
{
    if (c->depth == 0 && !is_map)
        return fail(c, KH_EINVAL, "line: must be a JSON object, got an array");
    if (c->depth == 0)
        c->prev_end = here(c);
    if (c->depth == 1 && c->cur == KH_SK_REQ && is_map)
        c->l->req_object = true;
    c->want_req_type = false;
    c->depth++;
    return 1;
}

static int close_container(struct ctx *c)
{
    c->depth--;
    if (c->depth == 0) {
        c->closed = true;
        return 1;
    }
    return c->depth == 1 ? member_done(c, here(c)) : 1;
}

static int on_start_map(void *ctx) { return open_container(ctx, true); }
static int on_start_array(void *ctx) { return open_container(ctx, false); }
static int on_end_map(void *ctx) { return close_container(ctx); }
static int on_end_array(void *ctx) { return close_container(ctx); }

static const yajl_callbacks callbacks = {
    .yajl_null = on_null,
    .yajl_boolean = on_boolean,
    .yajl_number = on_number,
    .yajl_string = on_string,
    .yajl_start_map = on_start_map,
    .yajl_map_key = on_map_key,
    .yajl_end_map = on_end_map,
    .yajl_start_array = on_start_array,
    .yajl_end_array = on_end_array,
};

static void syntax_error(struct ctx *c, bool at_end)
{
    unsigned char *msg = yajl_get_error(c->y, 0, (const unsigned char *)c->line, c->len);
    char text[160];
    snprintf(text, sizeof(text), "%s", msg ? (const char *)msg : "syntax error");
    size_t n = strlen(text);
    while (n > 0 && (text[n - 1] == '\n' || text[n - 1] == ' ' || text[n - 1] == '.'))
        text[--n] = '\0';
    if (msg)
        yajl_free_error(c->y, msg);
    char out[256];
    if (strstr(text, "premature EOF"))
        snprintf(out, sizeof(out), "line: truncated JSON (ends after %zu bytes)", c->len);
    else
        snprintf(out, sizeof(out), "line: malformed JSON at byte %zu: %s",
                 at_end ? c->len : here(c), text);
    fail(c, KH_EINVAL, out);
}

static void reset(struct kh_soraline *l)
{
    l->nmembers = 0;
    memset(l->value, 0, sizeof(l->value));
    l->has_type = l->has_req_type = l->req_object = false;
    l->type[0] = l->req_type[0] = l->err[0] = '\0';
}

int kh_soraline_parse(struct kh_soraline *l, const char *line, size_t len, bool stop_at_type)
{
    reset(l);
    struct ctx c = {.l = l, .line = line, .len = len, .stop_at_type = stop_at_type};
    c.y = yajl_alloc(&callbacks, NULL, &c);
    if (c.y == NULL) {
        snprintf(l->err, sizeof(l->err), "line: out of memory");
        return KH_ENOMEM;
    }
    yajl_status s = yajl_parse(c.y, (const unsigned char *)line, len);
    if (s == yajl_status_error)
        syntax_error(&c, false);
    else if (s == yajl_status_ok && !c.stopped && yajl_complete_parse(c.y) != yajl_status_ok)
        syntax_error(&c, true);
    if (c.rc == 0 && !c.stopped && !c.closed)
        fail(&c, KH_EINVAL, len ? "line: must be a JSON object" : "line: empty");
    yajl_free(c.y);
    return c.rc;
}

enum kh_soralog_format kh_soralog_detect(const struct kh_soraline *l)
{
    if (l->value[KH_SK_RTC_DATA].len)
        return KH_SORALOG_RTC_STATS;
    if (l->value[KH_SK_REQ].len)
        return KH_SORALOG_WEBHOOK_LOG;
    if (l->has_type)
        return KH_SORALOG_BODIES;
    return KH_SORALOG_AUTO;
}
