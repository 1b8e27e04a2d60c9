/*
 * kohaku-loadgen: behaves like a Sora cluster's stats exporter (or its stats webhook). It
 * emulates N Sora connections (each with its own 26-character ids and a browser template from
 * the fixtures, its counters growing from report to report) and sends their reports over K
 * connections, HTTP/2 with up to M concurrent streams each or HTTP/1.1 with up to M pipelined
 * requests each, in cleartext or TLS (optionally with a client certificate), at a fixed rate
 * or as fast as answers come, for a duration or a count. It prints reports/s, bytes/s, ack
 * latency percentiles and statuses, can write the ids of acknowledged reports to a file, and
 * exits non-zero when a status outside --allow came back or a stream failed.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/bufferevent_ssl.h>
#include <getopt.h>
#include <http_parser.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "core/buf.h"
#include "core/timeutil.h"
#include "template.h"

#define MAX_TEMPLATES 64
#define NBUCKETS 2000

struct client {
    char connection_id[27], session_id[27], channel_id[32], client_id[32];
    const struct lg_template *tpl;
    double elapsed_ms;
    int64_t last_usec;
};

struct stream {
    struct conn *conn;
    struct stream *next; /* HTTP/1.1: requests in flight, oldest first */
    struct kh_buf body;
    size_t off;
    char report_id[27];
    char connection_id[27];
    uint64_t start;
    int status;
};

struct conn {
    struct lg *lg;
    struct bufferevent *bev;
    nghttp2_session *session; /* HTTP/2 */
    http_parser parser;       /* HTTP/1.1 */
    struct stream *head, *tail;
    int inflight;
    bool connected;
    bool dead;
};

struct lg {
    struct event_base *base;
    /* options */
    char host[64], authority[96], path[256];
    int port;
    int nconns, streams, nclients;
    double rate, duration, interval_ms;
    int64_t time_offset_us; /* reports stamped this long before the wall clock */
    long long count;
    const char *acked_path;
    bool json;
    int allow[16], nallow;
    const char *exporter_type;
    bool webhook; /* the stats webhook instead of the exporter */
    bool http1;   /* HTTP/1.1 keep-alive with pipelining instead of HTTP/2 */
    bool tls;
    SSL_CTX *ssl_ctx;
    /* state */
    struct lg_template *tpls[MAX_TEMPLATES];
    int ntpls;
    struct client *clients;
    struct conn *conns;
    long long started, done, next_client;
    uint64_t t0, t_end;
    bool stopping;
    double owed; /* rate mode: reports due and not yet started */
    struct event *tick;
    FILE *acked;
    /* results */
    uint64_t bytes;
    long long status[600];
    long long errors;
    uint32_t hist[NBUCKETS];
    uint64_t max_us;
};

static const char b32[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

static void random_id(char out[27])
{
    for (int i = 0; i < 26; i++)
        out[i] = b32[rand() % 32];
    out[26] = '\0';
}

/* --- templates ------------------------------------------------------------------------- */

static int load_dir(struct lg *lg, const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        fprintf(stderr, "kohaku-loadgen: %s: cannot open the fixtures directory\n", dir);
        return -1;
    }
    struct dirent *e;
    char names[MAX_TEMPLATES][256];
    int n = 0;
    while ((e = readdir(d)) != NULL && n < MAX_TEMPLATES) {
        size_t len = strlen(e->d_name);
        if (len > 8 && strcmp(e->d_name + len - 8, "-t3.json") == 0)
            snprintf(names[n++], sizeof(names[0]), "%s", e->d_name);
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof(names[0]), (int (*)(const void *, const void *))strcmp);
    for (int i = 0; i < n; i++) {
        char early[8192], late[8192], err[512];
        snprintf(early, sizeof(early), "%.4000s/%.200s", dir, names[i]);
        snprintf(late, sizeof(late), "%.4000s/%.*st10.json", dir,
                 (int)strlen(names[i]) - 7 > 200 ? 200 : (int)strlen(names[i]) - 7, names[i]);
        FILE *fp = fopen(late, "r");
        if (fp)
            fclose(fp);
        struct lg_template *t = lg_template_load(early, fp ? late : NULL, err, sizeof(err));
        if (t == NULL) {
            fprintf(stderr, "kohaku-loadgen: %s\n", err);
            return -1;
        }
        lg->tpls[lg->ntpls++] = t;
    }
    if (lg->ntpls == 0) {
        fprintf(stderr, "kohaku-loadgen: %s: no *-t3.json fixtures\n", dir);
        return -1;
    }
    return 0;
}

/* --- reports --------------------------------------------------------------------------- */

static int build_report(struct lg *lg, struct client *c, struct stream *st)
{
    int64_t now = kh_time_now_usec() - lg->time_offset_us;
    if (now <= c->last_usec)
        now = c->last_usec + 1; /* one report per microsecond and client at most */
    c->last_usec = now;
    char ts[KH_TIME_TEXT_LEN + 1];
    kh_time_format(now, ts);
    random_id(st->report_id);
    memcpy(st->connection_id, c->connection_id, 27);
    struct kh_buf *b = &st->body;
    kh_buf_reset(b);
    char head[1024];
    int n = snprintf(head, sizeof(head),
                     "{\"type\":\"%s\",\"id\":\"%s\",\"timestamp\":\"%s\","
                     "\"label\":\"WebRTC SFU Sora\",\"version\":\"2024.1.0\","
                     "\"node_name\":\"sora@127.0.0.1\",\"multistream\":true,"
                     "\"simulcast\":false,\"spotlight\":false,\"role\":\"%s\","
                     "\"channel_id\":\"%s\",\"session_id\":\"%s\",\"client_id\":\"%s\","
                     "\"connection_id\":\"%s\",\"stats\":",
                     lg->webhook ? "connection.rtc" : "connection.user-agent", st->report_id, ts,
                     lg_template_role(c->tpl), c->channel_id, c->session_id,
                     c->client_id, c->connection_id);
    int rc = kh_buf_append(b, head, (size_t)n);
    if (rc == 0)
        rc = lg_template_render(c->tpl, c->elapsed_ms, (double)now / 1000.0, b);
    if (rc == 0)
        rc = kh_buf_append(b, "}", 1);
    c->elapsed_ms += lg->interval_ms;
    return rc;
}

/* --- results --------------------------------------------------------------------------- */

static int bucket_of(uint64_t us)
{
    if (us < 1)
        us = 1;
    int b = (int)(log((double)us) / log(1.01));
    return b < NBUCKETS ? b : NBUCKETS - 1;
}

static double percentile(const struct lg *lg, double p)
{
    long long total = 0, seen = 0;
    for (int i = 0; i < NBUCKETS; i++)
        total += lg->hist[i];
    if (total == 0)
        return 0;
    long long want = (long long)ceil(p * (double)total);
    for (int i = 0; i < NBUCKETS; i++) {
        seen += lg->hist[i];
        if (seen >= want)
            return pow(1.01, i + 1) / 1000.0; /* upper edge of the bucket, in ms */
    }
    return (double)lg->max_us / 1000.0;
}

static bool allowed(const struct lg *lg, int status)
{
    for (int i = 0; i < lg->nallow; i++)
        if (lg->allow[i] == status)
            return true;
    return false;
}

static void record(struct lg *lg, struct stream *st, uint32_t error_code)
{
    uint64_t us = kh_mono_usec() - st->start;
    lg->done++;
    if (st->status == 0 || error_code != NGHTTP2_NO_ERROR) {
        if (st->status == 0)
            lg->errors++;
    }
    if (st->status > 0 && st->status < 600)
        lg->status[st->status]++;
    lg->hist[bucket_of(us)]++;
    if (us > lg->max_us)
        lg->max_us = us;
    if (st->status == 204 && lg->acked)
        fprintf(lg->acked, "%s %s\n", st->report_id, st->connection_id);
}

/* --- HTTP/2 client --------------------------------------------------------------------- */

static void pump(struct lg *lg);

static void flush(struct conn *c)
{
    if (c->dead || c->session == NULL)
        return;
    const uint8_t *data;
    ssize_t n;
    while ((n = nghttp2_session_mem_send(c->session, &data)) > 0)
        bufferevent_write(c->bev, data, (size_t)n);
}

static ssize_t read_body(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len,
                         uint32_t *flags, nghttp2_data_source *src, void *user)
{
    struct stream *st = src->ptr;
    size_t left = st->body.len - st->off;
    size_t n = left < len ? left : len;
    memcpy(buf, st->body.data + st->off, n);
    st->off += n;
    if (st->off == st->body.len)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user)
{
    if (f->hd.type != NGHTTP2_HEADERS || namelen != 7 || memcmp(name, ":status", 7) != 0)
        return 0;
    struct stream *st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
    if (st)
        st->status = atoi((const char *)value);
    return 0;
}

static int on_close(nghttp2_session *s, int32_t id, uint32_t error_code, void *user)
{
    struct conn *c = user;
    struct stream *st = nghttp2_session_get_stream_user_data(s, id);
    if (st == NULL)
        return 0;
    record(c->lg, st, error_code);
    c->inflight--;
    kh_buf_cleanup(&st->body);
    free(st);
    return 0;
}

/* --- HTTP/1.1 (stats webhook) ------------------------------------------------------------ */

static int h1_on_complete(http_parser *p)
{
    struct conn *c = p->data;
    struct stream *st = c->head;
    if (st == NULL)
        return -1; /* an answer nobody asked for */
    c->head = st->next;
    if (c->head == NULL)
        c->tail = NULL;
    st->status = (int)p->status_code;
    record(c->lg, st, NGHTTP2_NO_ERROR);
    c->inflight--;
    kh_buf_cleanup(&st->body);
    free(st);
    return 0;
}

static const http_parser_settings h1_settings = {.on_message_complete = h1_on_complete};

static bool submit_h1(struct lg *lg, struct conn *c, struct stream *st)
{
    char head[512];
    int n = snprintf(head, sizeof(head),
                     "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                     "%s\r\nContent-Length: %zu\r\n\r\n",
                     lg->path, lg->authority,
                     lg->webhook ? "sora-stats-webhook-type: connection.rtc"
                                 : "x-sora-stats-exporter-type: connection.user-agent",
                     st->body.len);
    bufferevent_write(c->bev, head, (size_t)n);
    bufferevent_write(c->bev, st->body.data, st->body.len);
    lg->bytes += st->body.len;
    lg->started++;
    c->inflight++;
    if (c->tail)
        c->tail->next = st;
    else
        c->head = st;
    c->tail = st;
    return true;
}

static bool submit(struct lg *lg, struct conn *c)
{
    struct stream *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return false;
    kh_buf_init(&st->body, 16u << 20);
    st->conn = c;
    struct client *cl = &lg->clients[lg->next_client++ % lg->nclients];
    if (build_report(lg, cl, st) != 0) {
        kh_buf_cleanup(&st->body);
        free(st);
        return false;
    }
    st->start = kh_mono_usec();
    if (lg->http1)
        return submit_h1(lg, c, st);
    char clen[24];
    int cl_len = snprintf(clen, sizeof(clen), "%zu", st->body.len);
#define NV(n, v, l) {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, (l), NGHTTP2_NV_FLAG_NONE}
    nghttp2_nv nva[] = {
        NV(":method", "POST", 4),
        NV(":scheme", lg->tls ? "https" : "http", lg->tls ? 5 : 4),
        NV(":authority", lg->authority, strlen(lg->authority)),
        NV(":path", lg->path, strlen(lg->path)),
        NV("content-type", "application/json", 16),
        lg->webhook ? (nghttp2_nv)NV("sora-stats-webhook-type", "connection.rtc", 14)
                    : (nghttp2_nv)NV("x-sora-stats-exporter-type", lg->exporter_type,
                                     strlen(lg->exporter_type)),
        NV("content-length", clen, (size_t)cl_len),
    };
    nghttp2_data_provider prd = {.source.ptr = st, .read_callback = read_body};
    int32_t id = nghttp2_submit_request(c->session, NULL, nva, sizeof(nva) / sizeof(nva[0]),
                                        &prd, st);
    if (id < 0) {
        kh_buf_cleanup(&st->body);
        free(st);
        return false;
    }
    lg->bytes += st->body.len;
    lg->started++;
    c->inflight++;
    return true;
}

static bool want_more(const struct lg *lg)
{
    if (lg->stopping)
        return false;
    if (lg->count > 0 && lg->started >= lg->count)
        return false;
    return true;
}

/* Starts what may start now: all free streams (as fast as possible) or what the rate owes. */
static void pump(struct lg *lg)
{
    for (int pass = 0; pass < 2; pass++) {
        bool progress = true;
        while (progress && want_more(lg)) {
            progress = false;
            for (int i = 0; i < lg->nconns && want_more(lg); i++) {
                struct conn *c = &lg->conns[i];
                if (c->dead || !c->connected || c->inflight >= lg->streams)
                    continue;
                if (lg->rate > 0 && lg->owed < 1)
                    break;
                if (!submit(lg, c))
                    continue;
                if (lg->rate > 0)
                    lg->owed -= 1;
                progress = true;
            }
        }
    }
    for (int i = 0; i < lg->nconns; i++)
        flush(&lg->conns[i]);
    if (!want_more(lg) && lg->done >= lg->started)
        event_base_loopbreak(lg->base);
    /* every connection is gone (the server died): nothing more can be sent */
    bool alive = false;
    for (int i = 0; i < lg->nconns && !alive; i++)
        alive = !lg->conns[i].dead;
    if (!alive)
        event_base_loopbreak(lg->base);
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t len = evbuffer_get_length(in);
    unsigned char *data = evbuffer_pullup(in, (ev_ssize_t)len);
    if (c->lg->http1) {
        size_t done = http_parser_execute(&c->parser, &h1_settings, (const char *)data, len);
        evbuffer_drain(in, done);
        if (HTTP_PARSER_ERRNO(&c->parser) != HPE_OK) {
            fprintf(stderr, "kohaku-loadgen: HTTP/1.1 error: %s\n",
                    http_errno_description(HTTP_PARSER_ERRNO(&c->parser)));
            c->dead = true;
        }
        pump(c->lg);
        return;
    }
    ssize_t n = nghttp2_session_mem_recv(c->session, data, len);
    if (n < 0) {
        fprintf(stderr, "kohaku-loadgen: HTTP/2 error: %s\n", nghttp2_strerror((int)n));
        c->dead = true;
        return;
    }
    evbuffer_drain(in, (size_t)n);
    pump(c->lg);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct conn *c = arg;
    if (what & BEV_EVENT_CONNECTED) {
        int one = 1;
        setsockopt(bufferevent_getfd(bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        c->connected = true;
        flush(c);
        pump(c->lg);
        return;
    }
    if (c->lg->tls && !c->connected) {
        unsigned long e = bufferevent_get_openssl_error(bev);
        char why[256] = "connection closed";
        if (e)
            ERR_error_string_n(e, why, sizeof(why));
        fprintf(stderr, "kohaku-loadgen: TLS handshake failed: %s\n", why);
    }
    if (!c->dead) {
        fprintf(stderr, "kohaku-loadgen: connection closed (%s)\n",
                (what & BEV_EVENT_ERROR) ? evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR())
                                         : "eof");
        c->dead = true;
        /* streams still open on it failed; a connection that never opened is a failure too
         * (the exit status must not say all was well when nothing could be sent) */
        c->lg->errors += c->inflight + !c->connected;
        c->lg->done += c->inflight;
        c->inflight = 0;
        pump(c->lg);
    }
}

static SSL_CTX *client_ctx(const struct lg *lg, const char *ca, const char *cert,
                           const char *key)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL)
        return NULL;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    static const unsigned char h2[] = "\x02h2", h1[] = "\x08http/1.1";
    if (lg->http1)
        SSL_CTX_set_alpn_protos(ctx, h1, sizeof(h1) - 1);
    else
        SSL_CTX_set_alpn_protos(ctx, h2, sizeof(h2) - 1);
    if (ca && SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1) {
        fprintf(stderr, "kohaku-loadgen: %s: cannot load the CA certificates\n", ca);
        goto fail;
    }
    SSL_CTX_set_verify(ctx, ca ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
    if (cert && (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
                 SSL_CTX_use_PrivateKey_file(ctx, key ? key : cert, SSL_FILETYPE_PEM) != 1)) {
        fprintf(stderr, "kohaku-loadgen: %s: cannot load the client certificate or key\n",
                cert);
        goto fail;
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

static int conn_open(struct lg *lg, struct conn *c)
{
    c->lg = lg;
    if (lg->http1) {
        http_parser_init(&c->parser, HTTP_RESPONSE);
        c->parser.data = c;
    } else {
        nghttp2_session_callbacks *cbs;
        nghttp2_session_callbacks_new(&cbs);
        nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
        nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_close);
        int rv = nghttp2_session_client_new(&c->session, cbs, c);
        nghttp2_session_callbacks_del(cbs);
        if (rv != 0)
            return -1;
        nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 100},
                                       {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20}};
        nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, iv, 2);
    }
    if (lg->tls) {
        SSL *ssl = SSL_new(lg->ssl_ctx);
        if (ssl == NULL)
            return -1;
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), lg->host);
        c->bev = bufferevent_openssl_socket_new(lg->base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
                                                BEV_OPT_CLOSE_ON_FREE);
    } else {
        c->bev = bufferevent_socket_new(lg->base, -1, BEV_OPT_CLOSE_ON_FREE);
    }
    if (c->bev == NULL)
        return -1;
    bufferevent_setcb(c->bev, on_read, NULL, on_event, c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)lg->port)};
    if (inet_pton(AF_INET, lg->host, &sin.sin_addr) != 1) {
        fprintf(stderr, "kohaku-loadgen: %s: use a numeric IPv4 address\n", lg->host);
        return -1;
    }
    if (bufferevent_socket_connect(c->bev, (struct sockaddr *)&sin, sizeof(sin)) != 0)
        return -1;
    return 0;
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct lg *lg = arg;
    uint64_t now = kh_mono_usec();
    if (lg->duration > 0 && now >= lg->t_end && !lg->stopping) {
        lg->stopping = true;
        /* finish what is in flight, for 10 s at most */
        lg->t_end = now + 10000000;
    } else if (lg->stopping && now >= lg->t_end) {
        event_base_loopbreak(lg->base);
        return;
    }
    if (lg->rate > 0) {
        double due = lg->rate * (double)(now - lg->t0) / 1e6;
        lg->owed = due - (double)lg->started;
        if (lg->owed > lg->rate) /* do not bunch up more than a second behind */
            lg->owed = lg->rate;
    }
    pump(lg);
}

/* --- command line ---------------------------------------------------------------------- */

static void usage(FILE *fp)
{
    fprintf(fp,
            "Usage: kohaku-loadgen [OPTIONS] [-F DIR | FILE...]\n"
            "Sends Sora stats exporter reports built from browser getStats() fixtures.\n\n"
            "  -u, --url URL          target (default http://127.0.0.1:5890/collector);\n"
            "                         https:// for TLS (ALPN h2, or http/1.1 with --http1)\n"
            "  -W, --webhook          send Sora's stats webhook (connection.rtc) instead of the\n"
            "                         exporter (default path /webhook/stats)\n"
            "  -1, --http1            HTTP/1.1 keep-alive, -m pipelined requests a connection\n"
            "      --cacert FILE      verify the server's certificate with these CAs\n"
            "      --cert FILE        client certificate (mTLS); --key FILE its key\n"
            "  -c, --connections K    HTTP/2 connections (default 5)\n"
            "  -m, --streams M        concurrent streams per connection (default 10)\n"
            "  -n, --clients N        emulated Sora connections (default 100)\n"
            "  -r, --rate R           reports per second in total (default 0: as fast as\n"
            "                         answers allow)\n"
            "  -d, --duration S       run for S seconds\n"
            "  -N, --count C          send C reports (default 1000 without --duration)\n"
            "  -i, --interval S       client time between two reports of a client (default 5)\n"
            "  -T, --time-offset S    stamp the reports S seconds before the wall clock\n"
            "                         (older data: the envelope's and the stats' times)\n"
            "  -F, --fixtures DIR     *-t3.json (+ matching *-t10.json) templates\n"
            "                         (default: the source tree's tests/fixtures/browser,\n"
            "                         else the installed copy)\n"
            "  -a, --acked FILE       write 'report_id connection_id' of every 204\n"
            "  -A, --allow LIST       statuses that are not failures (default 204)\n"
            "  -s, --seed N           random seed for ids (default: time)\n"
            "      --json             also print the summary as one JSON line\n"
            "  -h, --help\n"
            "FILE arguments are single snapshots used as templates instead of -F.\n");
}

static int parse_url(struct lg *lg, const char *url)
{
    if (strncmp(url, "https://", 8) == 0)
        lg->tls = true;
    else if (strncmp(url, "http://", 7) != 0) {
        fprintf(stderr, "kohaku-loadgen: the URL must start with http:// or https://\n");
        return -1;
    }
    const char *hp = url + (lg->tls ? 8 : 7);
    const char *slash = strchr(hp, '/');
    size_t hplen = slash ? (size_t)(slash - hp) : strlen(hp);
    snprintf(lg->authority, sizeof(lg->authority), "%.*s", (int)hplen, hp);
    snprintf(lg->path, sizeof(lg->path), "%s",
             slash ? slash : lg->webhook ? "/webhook/stats" : "/collector");
    const char *colon = memchr(hp, ':', hplen);
    lg->port = colon ? atoi(colon + 1) : lg->tls ? 443 : 80;
    snprintf(lg->host, sizeof(lg->host), "%.*s", (int)(colon ? (size_t)(colon - hp) : hplen),
             hp);
    return 0;
}

static void parse_allow(struct lg *lg, const char *list)
{
    lg->nallow = 0;
    for (const char *p = list; *p && lg->nallow < 16;) {
        lg->allow[lg->nallow++] = atoi(p);
        p += strcspn(p, ",");
        if (*p == ',')
            p++;
    }
}

static void print_summary(struct lg *lg)
{
    double secs = (double)(kh_mono_usec() - lg->t0) / 1e6;
    long long unexpected = lg->errors;
    for (int s = 0; s < 600; s++)
        if (lg->status[s] && !allowed(lg, s))
            unexpected += lg->status[s];
    printf("reports: %lld sent, %lld answered, %lld failed streams in %.3f s\n", lg->started,
           lg->done - lg->errors, lg->errors, secs);
    printf("rate: %.1f reports/s, %.2f MB/s of bodies\n", (double)lg->done / secs,
           (double)lg->bytes / secs / 1e6);
    printf("ack latency: p50 %.3f ms, p90 %.3f ms, p99 %.3f ms, max %.3f ms\n",
           percentile(lg, 0.50), percentile(lg, 0.90), percentile(lg, 0.99),
           (double)lg->max_us / 1000.0);
    printf("status:");
    for (int s = 0; s < 600; s++)
        if (lg->status[s])
            printf(" %d=%lld", s, lg->status[s]);
    printf("\n");
    if (lg->json) {
        printf("{\"sent\":%lld,\"answered\":%lld,\"failed_streams\":%lld,\"seconds\":%.3f,"
               "\"reports_per_s\":%.1f,\"bytes_per_s\":%.0f,\"p50_ms\":%.3f,\"p90_ms\":%.3f,"
               "\"p99_ms\":%.3f,\"max_ms\":%.3f,\"unexpected\":%lld,\"status\":{",
               lg->started, lg->done - lg->errors, lg->errors, secs, (double)lg->done / secs,
               (double)lg->bytes / secs, percentile(lg, 0.50), percentile(lg, 0.90),
               percentile(lg, 0.99), (double)lg->max_us / 1000.0, unexpected);
        bool first = true;
        for (int s = 0; s < 600; s++)
            if (lg->status[s]) {
                printf("%s\"%d\":%lld", first ? "" : ",", s, lg->status[s]);
                first = false;
            }
        printf("}}\n");
    }
}

int main(int argc, char **argv)
{
    static struct lg lg;
    lg.nconns = 5;
    lg.streams = 10;
    lg.nclients = 100;
    lg.interval_ms = 5000;
    lg.exporter_type = "connection.user-agent";
    parse_allow(&lg, "204");
    const char *url = NULL;
    const char *fixtures = lg_default_fixtures();
    unsigned seed = (unsigned)kh_time_now_usec();
    static const struct option opts[] = {
        {"url", required_argument, NULL, 'u'},      {"connections", required_argument, NULL, 'c'},
        {"streams", required_argument, NULL, 'm'},  {"clients", required_argument, NULL, 'n'},
        {"rate", required_argument, NULL, 'r'},     {"duration", required_argument, NULL, 'd'},
        {"count", required_argument, NULL, 'N'},    {"interval", required_argument, NULL, 'i'},
        {"fixtures", required_argument, NULL, 'F'}, {"acked", required_argument, NULL, 'a'},
        {"allow", required_argument, NULL, 'A'},    {"seed", required_argument, NULL, 's'},
        {"json", no_argument, NULL, 'J'},           {"help", no_argument, NULL, 'h'},
        {"webhook", no_argument, NULL, 'W'},        {"http1", no_argument, NULL, '1'},
        {"cacert", required_argument, NULL, 'K'},  {"cert", required_argument, NULL, 'E'},
        {"key", required_argument, NULL, 'Y'},    {"time-offset", required_argument, NULL, 'T'},
        {NULL, 0, NULL, 0}};
    int opt;
    const char *cacert = NULL, *cert = NULL, *key = NULL;
    while ((opt = getopt_long(argc, argv, "u:c:m:n:r:d:N:i:T:F:a:A:s:hW1", opts, NULL)) != -1) {
        switch (opt) {
        case 'u': url = optarg; break;
        case 'c': lg.nconns = atoi(optarg); break;
        case 'm': lg.streams = atoi(optarg); break;
        case 'n': lg.nclients = atoi(optarg); break;
        case 'r': lg.rate = atof(optarg); break;
        case 'd': lg.duration = atof(optarg); break;
        case 'N': lg.count = atoll(optarg); break;
        case 'i': lg.interval_ms = atof(optarg) * 1000; break;
        case 'T': lg.time_offset_us = (int64_t)(atof(optarg) * 1e6); break;
        case 'F': fixtures = optarg; break;
        case 'a': lg.acked_path = optarg; break;
        case 'A': parse_allow(&lg, optarg); break;
        case 's': seed = (unsigned)atol(optarg); break;
        case 'J': lg.json = true; break;
        case 'W': lg.webhook = true; break;
        case '1': lg.http1 = true; break;
        case 'K': cacert = optarg; break;
        case 'E': cert = optarg; break;
        case 'Y': key = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (lg.nconns < 1 || lg.streams < 1 || lg.nclients < 1 || lg.rate < 0) {
        fprintf(stderr, "kohaku-loadgen: connections, streams and clients must be >= 1\n");
        return 2;
    }
    if (lg.count == 0 && lg.duration <= 0)
        lg.count = 1000;
    srand(seed);
    if (url == NULL)
        url = lg.webhook ? "http://127.0.0.1:5890/webhook/stats"
                         : "http://127.0.0.1:5890/collector";
    if (parse_url(&lg, url) != 0)
        return 2;
    if (lg.tls && (lg.ssl_ctx = client_ctx(&lg, cacert, cert, key)) == NULL)
        return 2;
    if (optind < argc) {
        for (int i = optind; i < argc && lg.ntpls < MAX_TEMPLATES; i++) {
            char err[512];
            lg.tpls[lg.ntpls] = lg_template_load(argv[i], NULL, err, sizeof(err));
            if (lg.tpls[lg.ntpls] == NULL) {
                fprintf(stderr, "kohaku-loadgen: %s\n", err);
                return 2;
            }
            lg.ntpls++;
        }
    } else if (load_dir(&lg, fixtures) != 0) {
        return 2;
    }
    lg.clients = calloc((size_t)lg.nclients, sizeof(*lg.clients));
    lg.conns = calloc((size_t)lg.nconns, sizeof(*lg.conns));
    if (lg.clients == NULL || lg.conns == NULL)
        return 1;
    for (int i = 0; i < lg.nclients; i++) {
        struct client *c = &lg.clients[i];
        random_id(c->connection_id);
        random_id(c->session_id);
        snprintf(c->channel_id, sizeof(c->channel_id), "loadgen-%d", i / 4);
        snprintf(c->client_id, sizeof(c->client_id), "client-%d", i);
        c->tpl = lg.tpls[i % lg.ntpls];
        c->elapsed_ms = (double)(rand() % 7000);
    }
    if (lg.acked_path && (lg.acked = fopen(lg.acked_path, "w")) == NULL) {
        fprintf(stderr, "kohaku-loadgen: %s: cannot write\n", lg.acked_path);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    lg.base = event_base_new();
    lg.t0 = kh_mono_usec();
    lg.t_end = lg.t0 + (uint64_t)(lg.duration * 1e6);
    for (int i = 0; i < lg.nconns; i++)
        if (conn_open(&lg, &lg.conns[i]) != 0) {
            fprintf(stderr, "kohaku-loadgen: cannot connect to %s\n", url);
            return 1;
        }
    lg.tick = event_new(lg.base, -1, EV_PERSIST, on_tick, &lg);
    struct timeval ms = {0, 1000};
    event_add(lg.tick, &ms);
    event_base_dispatch(lg.base);
    print_summary(&lg);
    if (lg.acked)
        fclose(lg.acked);
    long long unexpected = lg.errors;
    for (int s = 0; s < 600; s++)
        if (lg.status[s] && !allowed(&lg, s))
            unexpected += lg.status[s];
    return unexpected ? 1 : 0;
}
