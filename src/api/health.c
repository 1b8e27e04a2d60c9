/*
 * health: GET /.ok and POST /health. 204 while storage is reachable, 503 otherwise.
 */
#include "api/app.h"

static void on_headers(struct kh_request *req)
{
    struct kh_store *s = req->app->store;
    if (s->ops->healthy(s)) {
        kh_request_respond(req, 204, NULL, 0);
        return;
    }
    req->retry_after = (int)req->app->cfg->retry_after;
    kh_request_respond_error(req, 503, "storage: unavailable");
}

const struct kh_handler kh_health_handler = {
    .name = "health",
    .on_headers = on_headers,
};
