/*
 * router: the route table. See router.h.
 */
#include "http/router.h"

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

void kh_router_dispatch(struct kh_request *req)
{
    if (req->upgrade_h2c) {
        req->close_connection = true;
        kh_request_respond_error(req, 400,
                                 "upgrade: h2c upgrade is not supported; use HTTP/2 with prior "
                                 "knowledge");
        return;
    }
    /* the query string takes no part in routing */
    size_t plen = strcspn(req->path, "?");
    bool path_found = false;
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
        path_found = true;
        req->route = (int)r->metric;
        if (r->method == req->method) {
            req->handler = r->handler;
            return;
        }
    }
    if (path_found)
        kh_request_respond_error(req, 405, "method: not allowed on this path");
    else
        kh_request_respond_error(req, 404, "path: not found");
}
