/*
 * router: the route table. See router.h.
 */
#include "http/router.h"

#include <string.h>

#include "api/app.h"

enum { PATH_FIXED, PATH_COLLECTOR, PATH_WEBHOOK };

struct route {
    int which;
    const char *path; /* PATH_FIXED */
    enum kh_method method;
    const struct kh_handler *handler;
};

static const struct route routes[] = {
    {PATH_COLLECTOR, NULL, KH_METHOD_POST, &kh_collector_handler},
    {PATH_WEBHOOK, NULL, KH_METHOD_POST, &kh_webhook_handler},
    {PATH_FIXED, "/.ok", KH_METHOD_GET, &kh_health_handler},
    {PATH_FIXED, "/.ok", KH_METHOD_HEAD, &kh_health_handler},
    {PATH_FIXED, "/health", KH_METHOD_POST, &kh_health_handler},
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
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        const char *p = routes[i].which == PATH_COLLECTOR ? req->app->cfg->collector_path
                        : routes[i].which == PATH_WEBHOOK ? req->app->cfg->stats_webhook_path
                                                          : routes[i].path;
        if (strlen(p) != plen || strncmp(p, req->path, plen) != 0)
            continue;
        path_found = true;
        if (routes[i].method == req->method) {
            req->handler = routes[i].handler;
            return;
        }
    }
    if (path_found)
        kh_request_respond_error(req, 405, "method: not allowed on this path");
    else
        kh_request_respond_error(req, 404, "path: not found");
}
