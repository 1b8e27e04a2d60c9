/*
 * app: the routes of both listeners, their limits and the metrics' labels. See app.h.
 * Route paths are read through pointers into the config (collector_path, stats_webhook_path,
 * session_webhook_path and event_webhook_path change on SIGHUP), fixed ones through the
 * constants here.
 */
#include "api/app.h"

#include "api/console.h"

#include <stdlib.h>

#include "core/errors.h"
#include "core/metrics.h"
#include "http/router.h"
#include "net/tls.h"
#include "sora/schema.h"

static const char *const route_names[KH_ROUTE_COUNT] = {
    "collector", "webhook", "health", "metrics", "session_webhook", "event_webhook", "console"};
static const char *const path_ok = "/.ok";
static const char *const path_health = "/health";
static const char *const path_metrics = "/metrics";

static const char **table_names;

/* Every answer of either site: the request counter. */
static void count_request(const struct kh_request *req)
{
    kh_metrics_request(req->route_label, req->proto == KH_PROTO_H2 ? 2 : 1, req->status);
}

static int route_stats(struct kh_app *app, struct kh_router *r)
{
    const struct kh_config *cfg = app->cfg;
    int rc = kh_router_add(r, (const char *const *)&cfg->collector_path, KH_METHOD_POST,
                           &kh_collector_handler, app, KH_ROUTE_COLLECTOR);
    if (rc == 0)
        rc = kh_router_add(r, (const char *const *)&cfg->stats_webhook_path, KH_METHOD_POST,
                           &kh_webhook_handler, app, KH_ROUTE_WEBHOOK);
    if (rc == 0)
        rc = kh_router_add(r, (const char *const *)&cfg->session_webhook_path, KH_METHOD_POST,
                           &kh_session_webhook_handler, app, KH_ROUTE_SESSION_WEBHOOK);
    if (rc == 0)
        rc = kh_router_add(r, (const char *const *)&cfg->event_webhook_path, KH_METHOD_POST,
                           &kh_event_webhook_handler, app, KH_ROUTE_EVENT_WEBHOOK);
    if (rc == 0)
        rc = kh_router_add(r, &path_ok, KH_METHOD_GET, &kh_health_handler, app,
                           KH_ROUTE_HEALTH);
    if (rc == 0)
        rc = kh_router_add(r, &path_ok, KH_METHOD_HEAD, &kh_health_handler, app,
                           KH_ROUTE_HEALTH);
    if (rc == 0) /* for load balancers that only POST */
        rc = kh_router_add(r, &path_health, KH_METHOD_POST, &kh_health_handler, app,
                           KH_ROUTE_HEALTH);
    return rc;
}

/* The metrics listener serves /metrics and /.ok only. */
static int route_metrics(struct kh_app *app, struct kh_router *r)
{
    int rc = kh_router_add(r, &path_metrics, KH_METHOD_GET, &kh_metrics_handler, app,
                           KH_ROUTE_METRICS);
    if (rc == 0)
        rc = kh_router_add(r, &path_ok, KH_METHOD_GET, &kh_health_handler, app,
                           KH_ROUTE_HEALTH);
    return rc;
}

/* The console's pages, files and API: every path is the console handler's, which tells them
 * apart (console.c). */
static int route_console(struct kh_app *app, struct kh_router *r)
{
    static const char *const paths[] = {"/", "/connections", "/overview", "/connection/*",
                                        "/channel/*", "/static/*", "/vendor/*", "/api/*"};
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < sizeof(paths) / sizeof(paths[0]); i++)
        rc = kh_router_add(r, &paths[i], KH_METHOD_GET, &kh_console_handler, app->console,
                           KH_ROUTE_CONSOLE);
    return rc;
}

static int set_metric_labels(void)
{
    if (table_names == NULL) {
        table_names = calloc(kh_stats_ntables, sizeof(*table_names));
        if (table_names == NULL)
            return KH_ENOMEM;
        for (size_t t = 0; t < kh_stats_ntables; t++)
            table_names[t] = kh_stats_tables[t].table;
    }
    kh_metrics_set_labels(route_names, KH_ROUTE_COUNT, table_names, kh_stats_ntables);
    return 0;
}

int kh_app_init(struct kh_app *app)
{
    kh_app_apply_config(app);
    app->stats_router = kh_router_new();
    app->metrics_router = kh_router_new();
    app->console_router = kh_router_new();
    if (app->stats_router == NULL || app->metrics_router == NULL ||
        app->console_router == NULL || route_stats(app, app->stats_router) != 0 ||
        route_metrics(app, app->metrics_router) != 0 ||
        (app->console && route_console(app, app->console_router) != 0) ||
        set_metric_labels() != 0) {
        kh_app_cleanup(app);
        return KH_ENOMEM;
    }
    app->stats_site = (struct kh_http_site){&app->http_limits, app->stats_router,
                                            count_request};
    app->metrics_site = (struct kh_http_site){&app->http_limits, app->metrics_router,
                                              count_request};
    app->console_site = (struct kh_http_site){&app->http_limits, app->console_router,
                                              count_request};
    return 0;
}

void kh_app_cleanup(struct kh_app *app)
{
    kh_router_free(app->stats_router);
    kh_router_free(app->metrics_router);
    kh_router_free(app->console_router);
    app->stats_router = app->metrics_router = app->console_router = NULL;
}

int kh_app_privacy_init(struct kh_privacy *p, const struct kh_config *cfg, const char **err)
{
    return kh_privacy_init(p, cfg->privacy_ip, cfg->privacy_keep_networks, cfg->privacy_hash_key,
                           kh_tls_hmac_sha256, err);
}

void kh_app_apply_config(struct kh_app *app)
{
    const struct kh_config *cfg = app->cfg;
    app->net_limits = (struct kh_net_limits){.max_connections = cfg->max_connections,
                                             .start_timeout = cfg->request_header_timeout,
                                             .idle_timeout = cfg->http2_idle_timeout};
    app->http_limits = (struct kh_http_limits){
        .max_body_bytes = cfg->max_body_bytes,
        .max_header_bytes = cfg->max_header_bytes,
        .max_headers = cfg->max_headers,
        .request_header_timeout = cfg->request_header_timeout,
        .request_body_timeout = cfg->request_body_timeout,
        .http2_max_concurrent_streams = cfg->http2_max_concurrent_streams,
        .http2_max_read_frame_size = cfg->http2_max_read_frame_size};
    app->tls_files = (struct kh_tls_files){cfg->tls_fullchain_file, cfg->tls_privkey_file,
                                           cfg->tls_verify_cacert_path};
    app->console_tls_files = (struct kh_tls_files){cfg->tls_fullchain_file,
                                                   cfg->tls_privkey_file, ""};
}

struct kh_listen kh_app_listen_spec(struct kh_app *app, enum kh_listener which)
{
    const struct kh_config *cfg = app->cfg;
    struct kh_listen l = {.limits = &app->net_limits, .pick = kh_http_pick_codec};
    switch (which) {
    case KH_LISTEN_STATS:
        l.addr = cfg->listen_addr, l.port = (int)cfg->listen_port, l.key = "listen";
        l.tls = cfg->https ? &app->tls_files : NULL;
        l.ctx = &app->stats_site;
        break;
    case KH_LISTEN_METRICS:
        l.addr = cfg->exporter_listen_addr, l.port = (int)cfg->exporter_listen_port;
        l.key = "exporter_listen";
        l.tls = cfg->exporter_https ? &app->tls_files : NULL;
        l.ctx = &app->metrics_site;
        break;
    case KH_LISTEN_CONSOLE:
        l.addr = cfg->console_listen_addr, l.port = (int)cfg->console_listen_port;
        l.key = "console_listen";
        l.tls = cfg->console_https ? &app->console_tls_files : NULL;
        l.ctx = &app->console_site;
        break;
    }
    return l;
}
