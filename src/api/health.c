/*
 * health: GET /.ok and POST /health (204 while storage is reachable, 503 otherwise), and
 * GET /metrics on the metrics listener (Prometheus text format).
 */
#include "api/app.h"
#include "core/metrics.h"

static void on_headers(struct kh_request *req)
{
    const struct kh_app *app = req->handler_arg;
    struct kh_store *s = app->store;
    if (app->draining) {
        /* no retry-after: this instance will not be back; the balancer's retries go elsewhere */
        req->close_connection = true;
        kh_request_respond_error(req, 503, "draining: shutting down");
        return;
    }
    if (s->ops->healthy(s)) {
        kh_request_respond(req, 204, NULL, 0);
        return;
    }
    req->retry_after = (int)app->cfg->retry_after;
    kh_request_respond_error(req, 503, "storage: unavailable");
}

const struct kh_handler kh_health_handler = {
    .name = "health",
    .on_headers = on_headers,
};

static void metrics_headers(struct kh_request *req)
{
    struct kh_buf b;
    kh_buf_init(&b, 1u << 20);
    if (kh_metrics_render(&b) == 0) {
        req->resp_type = "text/plain; version=0.0.4";
        kh_request_respond(req, 200, b.data, b.len);
    }
    else
        kh_request_respond_error(req, 500, "metrics: too large to render");
    kh_buf_cleanup(&b);
}

const struct kh_handler kh_metrics_handler = {
    .name = "metrics",
    .on_headers = metrics_headers,
};
