/*
 * console: the console's handler, its authentication and its worker. See console.h; the
 * README's "Console" section says what the pages show and lists the API.
 *
 * Pages are one HTML file each, served for their paths (/, /connections, /connection/ID,
 * /channel/ID, /overview): the scripts read the id from the location and ask /api. Static
 * files are /static/NAME and the charting library /vendor/NAME, all from memory.
 */
#include "api/console.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "api/console_api.h"
#include "api/console_files.h"
#include "api/overview_cache.h"
#include "core/errors.h"
#include "core/log.h"
#include "core/workq.h"
#include "net/tls.h"

#ifndef KH_SOURCE_CONSOLE
#define KH_SOURCE_CONSOLE ""
#endif
#ifndef KH_INSTALLED_CONSOLE
#define KH_INSTALLED_CONSOLE "/usr/share/kohaku/console"
#endif

/* API calls waiting for the worker at most; beyond, 503. */
#define MAX_PENDING 64

struct kh_console {
    struct kh_store *store;
    struct kh_workq *q;
    struct kh_console_files files;
    bool auth;
    char bearer[1024]; /* "Bearer TOKEN", or "" */
    char basic[1024];  /* "Basic base64(user:password)", or "" */
    size_t pending;
    bool niced;                /* the worker's own: its thread is at the lowest CPU priority */
    struct kh_ov_cache *cache; /* the worker's own: the overview's settled buckets, or NULL */
};

struct job {
    struct kh_workq_item node;
    struct kh_console *c;
    struct kh_request *req;
    char path[KH_MAX_PATH + 1];
    const char *query;
    struct kh_buf out;
    int status;
};

const char *kh_console_default_dir(void)
{
    static const char *const tree = KH_SOURCE_CONSOLE;
    FILE *fp = NULL;
    if (tree[0]) {
        char probe[4096];
        snprintf(probe, sizeof(probe), "%s/connections.html", tree);
        fp = fopen(probe, "r");
    }
    if (fp) {
        fclose(fp);
        return tree;
    }
    return KH_INSTALLED_CONSOLE;
}

/* --- the worker --------------------------------------------------------------------------- */

/* The console must not take CPU from ingest: its one worker thread runs at nice 19 (on
 * Linux a thread's own priority, by its thread id), so the loop, the parsers and the writers
 * come first when the CPUs are busy. A SQLite query runs on this thread; a PostgreSQL one in
 * the server, which this cannot reach. Failing to lower it changes nothing else. */
static void on_work(struct kh_workq_item *it, int worker, void *arg)
{
    struct job *j = KH_WORKQ_ENTRY(it, struct job, node);
    if (!j->c->niced) {
        (void)setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 19);
        j->c->niced = true;
    }
    kh_console_api(j->c->store, j->c->cache, j->path, j->query, &j->out, &j->status);
}

static void on_done(struct kh_workq_item *it, void *arg)
{
    struct job *j = KH_WORKQ_ENTRY(it, struct job, node);
    j->c->pending--;
    kh_request_add_header(j->req, "cache-control", "no-store");
    j->req->resp_type = "application/json";
    kh_request_respond(j->req, j->status, j->out.data, j->out.len);
    kh_request_release(j->req);
    kh_buf_cleanup(&j->out);
    free(j);
}

/* --- set-up ------------------------------------------------------------------------------- */

static int set_auth(struct kh_console *c, const struct kh_config *cfg, const char **err)
{
    if (cfg->console_token[0])
        snprintf(c->bearer, sizeof(c->bearer), "Bearer %s", cfg->console_token);
    if (cfg->console_user[0]) {
        char pair[600], b64[820];
        int n = snprintf(pair, sizeof(pair), "%s:%s", cfg->console_user, cfg->console_password);
        if (n < 0 || (size_t)n >= sizeof(pair) ||
            kh_tls_base64(pair, (size_t)n, b64, sizeof(b64)) == 0) {
            *err = "console_user: the user and password are too long (500 bytes at most)";
            return KH_EINVAL;
        }
        snprintf(c->basic, sizeof(c->basic), "Basic %s", b64);
    }
    if (strlen(cfg->console_token) > 900) {
        *err = "console_token: longer than 900 bytes";
        return KH_EINVAL;
    }
    c->auth = c->bearer[0] || c->basic[0];
    return 0;
}

struct kh_console *kh_console_new(struct event_base *base, const struct kh_config *cfg,
                                  struct kh_store *store, const char **err)
{
    struct kh_console *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        *err = "console: out of memory";
        return NULL;
    }
    c->store = store;
    const char *dir = cfg->console_dir[0] ? cfg->console_dir : kh_console_default_dir();
    const char *missing = NULL;
    if (set_auth(c, cfg, err) != 0 ||
        kh_console_files_load(&c->files, dir, cfg->console_vendor_dir, &missing, err) != 0) {
        free(c);
        return NULL;
    }
    if (missing) {
        struct kh_logline l;
        if (kh_log_begin(&l, KH_LOG_WARN, "console: charting library not found; no charts")) {
            kh_log_str(&l, "file", missing);
            kh_log_str(&l, "hint", "apt-get install libjs-dygraphs, or set console_vendor_dir");
            kh_log_end(&l);
        }
    }
    if (cfg->console_cache_seconds > 0)
        c->cache = kh_ov_cache_new(cfg->console_cache_seconds * 1000000);
    c->q = kh_workq_new(base, "kh-console", 1, on_work, on_done, c);
    if (c->q == NULL) {
        kh_ov_cache_free(c->cache);
        kh_console_files_free(&c->files);
        free(c);
        *err = "console: cannot start its worker thread";
        return NULL;
    }
    return c;
}

void kh_console_free(struct kh_console *c)
{
    if (c == NULL)
        return;
    kh_workq_free(c->q);
    kh_ov_cache_free(c->cache);
    kh_console_files_free(&c->files);
    free(c);
}

/* --- requests ------------------------------------------------------------------------------ */

/* The header against one expected value, in constant time for that length. */
static bool same_secret(const char *got, const char *want)
{
    size_t n = strlen(want);
    return want[0] && got && strlen(got) == n && kh_tls_equal(got, want, n);
}

static bool authorized(const struct kh_console *c, const struct kh_request *req)
{
    if (!c->auth)
        return true;
    const char *h = kh_request_header_value(req, "authorization");
    return same_secret(h, c->bearer) || same_secret(h, c->basic);
}

/* The policy keeps every script, style and connection on the console's own origin, and
 * nothing inline: what came from a report can never run as code. */
static void secure(struct kh_request *req)
{
    kh_request_add_header(req, "content-security-policy",
                          "default-src 'none'; script-src 'self'; style-src 'self'; "
                          "img-src 'self' data:; connect-src 'self'; base-uri 'none'; "
                          "form-action 'none'; frame-ancestors 'none'");
    kh_request_add_header(req, "x-content-type-options", "nosniff");
    kh_request_add_header(req, "referrer-policy", "no-referrer");
    kh_request_add_header(req, "x-frame-options", "DENY");
}

static bool starts(const char *path, size_t len, const char *prefix)
{
    size_t n = strlen(prefix);
    return len > n && strncmp(path, prefix, n) == 0;
}

static bool is(const char *path, size_t len, const char *want)
{
    return len == strlen(want) && strncmp(path, want, len) == 0;
}

/* The page or file of a path, or NULL. */
static const struct kh_console_file *file_of(const struct kh_console *c, const char *p,
                                             size_t n)
{
    const char *page = NULL;
    if (is(p, n, "/") || is(p, n, "/connections"))
        page = "connections.html";
    else if (is(p, n, "/overview"))
        page = "overview.html";
    else if (starts(p, n, "/connection/"))
        page = "connection.html";
    else if (starts(p, n, "/channel/"))
        page = "channel.html";
    if (page)
        return kh_console_file(&c->files, page, strlen(page));
    if (starts(p, n, "/static/") && !memchr(p + 8, '/', n - 8))
        return kh_console_file(&c->files, p + 8, n - 8);
    if (starts(p, n, "/vendor/"))
        return kh_console_file(&c->files, p + 1, n - 1);
    return NULL;
}

static void api(struct kh_console *c, struct kh_request *req, size_t plen)
{
    if (c->pending >= MAX_PENDING) {
        kh_request_add_header(req, "retry-after", "1");
        kh_request_respond_error(req, 503, "console: busy, try again");
        return;
    }
    struct job *j = calloc(1, sizeof(*j));
    if (j == NULL) {
        kh_request_respond_error(req, 500, "console: out of memory");
        return;
    }
    j->c = c;
    j->req = req;
    memcpy(j->path, req->path + 5, plen - 5); /* after "/api/" */
    j->path[plen - 5] = '\0';
    j->query = req->path[plen] == '?' ? req->path + plen + 1 : "";
    kh_buf_init(&j->out, 256u << 20);
    kh_request_retain(req); /* until on_done */
    c->pending++;
    kh_workq_submit(c->q, &j->node);
}

static void on_headers(struct kh_request *req)
{
    struct kh_console *c = req->handler_arg;
    secure(req);
    if (!authorized(c, req)) {
        if (c->basic[0])
            kh_request_add_header(req, "www-authenticate",
                                  "Basic realm=\"kohaku console\", charset=\"UTF-8\"");
        else
            kh_request_add_header(req, "www-authenticate", "Bearer realm=\"kohaku console\"");
        kh_request_respond_error(req, 401, "console: authentication required");
        return;
    }
    size_t plen = strcspn(req->path, "?");
    while (plen > 1 && req->path[plen - 1] == '/')
        plen--;
    if (starts(req->path, plen, "/api/")) {
        api(c, req, plen);
        return;
    }
    const struct kh_console_file *f = file_of(c, req->path, plen);
    if (f == NULL) {
        kh_request_respond_error(req, 404, "path: not found");
        return;
    }
    kh_request_add_header(req, "cache-control", "no-cache");
    req->resp_type = f->type;
    kh_request_respond(req, 200, f->data, f->len);
}

/* A GET has no body: the answer is on_headers' or the worker's (without this the request
 * layer would answer 204 at the end). */
static void on_end(struct kh_request *req) { (void)req; }

const struct kh_handler kh_console_handler = {
    .name = "console",
    .on_headers = on_headers,
    .on_end = on_end,
};
