/*
 * router: the route table. See router.h.
 */
#include "http/router.h"

#include <stdio.h>
#include <string.h>

#include "api/app.h"
#include "core/metrics.h"

enum { PATH_FIXED, PATH_COLLECTOR, PATH_WEBHOOK };

struct route {
    int which;
    const char *path; /* PATH_FIXED */
    enum kh_method method;
    const struct kh_handler *handler;
    enum kh_route metric;
};

static const struct route routes[] = {
    {PATH_COLLECTOR, NULL, KH_METHOD_POST, &kh_collector_handler, KH_ROUTE_COLLECTOR},
    {PATH_WEBHOOK, NULL, KH_METHOD_POST, &kh_webhook_handler, KH_ROUTE_WEBHOOK},
    {PATH_FIXED, "/.ok", KH_METHOD_GET, &kh_health_handler, KH_ROUTE_HEALTH},
    {PATH_FIXED, "/.ok", KH_METHOD_HEAD, &kh_health_handler, KH_ROUTE_HEALTH},
    {PATH_FIXED, "/health", KH_METHOD_POST, &kh_health_handler, KH_ROUTE_HEALTH},
};

/* The metrics listener serves these only. */
static const struct route metrics_routes[] = {
    {PATH_FIXED, "/metrics", KH_METHOD_GET, &kh_metrics_handler, KH_ROUTE_METRICS},
    {PATH_FIXED, "/.ok", KH_METHOD_GET, &kh_health_handler, KH_ROUTE_HEALTH},
};

static const char *method_name(enum kh_method m)
{
    switch (m) {
    case KH_METHOD_GET: return "GET";
    case KH_METHOD_HEAD: return "HEAD";
    case KH_METHOD_POST: return "POST";
    default: return "";
    }
}

/* Appends a method to the Allow list. */
static void add_method(char *allow, size_t cap, enum kh_method m)
{
    size_t n = strlen(allow);
    snprintf(allow + n, cap - n, "%s%s", n ? ", " : "", method_name(m));
}

void kh_router_dispatch(struct kh_request *req)
{
    if (req->upgrade_h2c) {
        req->close_connection = true;
        kh_request_respond_error(req, 400,
                                 "upgrade: h2c upgrade is not supported; use HTTP/2 with prior "
                                 "knowledge");
        return;
    }
    /* the query string takes no part in routing, and a trailing slash is dropped as Kohaku
     * 2023.1 did (/collector/ is /collector) */
    size_t plen = strcspn(req->path, "?");
    while (plen > 1 && req->path[plen - 1] == '/')
        plen--;
    char allow[64] = "";
    const struct route *table = req->metrics_listener ? metrics_routes : routes;
    size_t n = req->metrics_listener ? sizeof(metrics_routes) / sizeof(metrics_routes[0])
                                     : sizeof(routes) / sizeof(routes[0]);
    for (size_t i = 0; i < n; i++) {
        const struct route *r = &table[i];
        const char *p = r->which == PATH_COLLECTOR ? req->app->cfg->collector_path
                        : r->which == PATH_WEBHOOK ? req->app->cfg->stats_webhook_path
                                                   : r->path;
        if (strlen(p) != plen || strncmp(p, req->path, plen) != 0)
            continue;
        req->route = (int)r->metric;
        if (r->method == req->method) {
            req->handler = r->handler;
            return;
        }
        add_method(allow, sizeof(allow), r->method);
    }
    if (allow[0]) {
        kh_request_add_header(req, "allow", allow);
        char msg[128];
        snprintf(msg, sizeof(msg), "method: %s is not allowed on this path (allowed: %s)",
                 req->method_text, allow);
        kh_request_respond_error(req, 405, msg);
    } else
        kh_request_respond_error(req, 404, "path: not found");
}
