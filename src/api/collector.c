/*
 * collector: the two ways Sora delivers a report, sharing one body path:
 *   POST collector_path (DESIGN 1.1), the stats exporter: HTTP/2 only, header
 *     x-sora-stats-exporter-type connection.user-agent or node.erlang-vm;
 *   POST stats_webhook_path (DESIGN 1.2), the stats webhook: HTTP/1.1 or HTTP/2, header
 *     sora-stats-webhook-type connection.rtc, multistream optional.
 * The body streams into the envelope parser; a valid report goes to the batcher and is
 * answered 204 only after its batch has committed.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "api/app.h"
#include "core/errors.h"
#include "sora/envelope.h"

static void start(struct kh_request *req, enum kh_report_kind kind,
                  enum kh_envelope_flavor flavor)
{
    const struct kh_config *cfg = req->app->cfg;
    struct kh_envelope_limits lim = kh_envelope_default_limits;
    lim.arena_max = (size_t)cfg->max_body_bytes * 4 + (1u << 20);
    lim.max_depth = (size_t)cfg->max_json_depth;
    lim.max_stats = (size_t)cfg->max_stats_per_report;
    req->hstate = kh_envelope_new(kind, flavor, &lim);
    if (req->hstate == NULL) {
        req->retry_after = (int)cfg->retry_after;
        kh_request_respond_error(req, 503, "server: out of memory");
    }
}

static void exporter_headers(struct kh_request *req)
{
    if (req->proto != KH_PROTO_H2) {
        kh_request_respond_error(req, 400,
                                 "protocol: the stats exporter endpoint needs HTTP/2 (h2c with "
                                 "prior knowledge, or h2 over TLS)");
        return;
    }
    if (req->exporter_type[0] == '\0') {
        kh_request_respond_error(req, 400, "x-sora-stats-exporter-type: required header");
        return;
    }
    if (strcmp(req->exporter_type, "connection.user-agent") == 0)
        start(req, KH_REPORT_CONNECTION, KH_FLAVOR_EXPORTER);
    else if (strcmp(req->exporter_type, "node.erlang-vm") == 0)
        start(req, KH_REPORT_NODE, KH_FLAVOR_EXPORTER);
    else {
        char msg[256];
        snprintf(msg, sizeof(msg),
                 "x-sora-stats-exporter-type: must be connection.user-agent or node.erlang-vm, "
                 "got '%s'",
                 req->exporter_type);
        kh_request_respond_error(req, 400, msg);
    }
}

static void webhook_headers(struct kh_request *req)
{
    if (req->webhook_type[0] == '\0') {
        kh_request_respond_error(req, 400, "sora-stats-webhook-type: required header");
        return;
    }
    if (strcmp(req->webhook_type, "connection.rtc") != 0) {
        char msg[256];
        snprintf(msg, sizeof(msg), "sora-stats-webhook-type: must be connection.rtc, got '%s'",
                 req->webhook_type);
        kh_request_respond_error(req, 400, msg);
        return;
    }
    start(req, KH_REPORT_CONNECTION, KH_FLAVOR_WEBHOOK);
}

static void refuse(struct kh_request *req, int rc, const char *why)
{
    if (rc == KH_ENOMEM) {
        req->retry_after = (int)req->app->cfg->retry_after;
        kh_request_respond_error(req, 503, "server: out of memory for this report");
    } else {
        kh_request_respond_error(req, 400, why);
    }
}

static void on_body(struct kh_request *req, const uint8_t *data, size_t len)
{
    struct kh_envelope *e = req->hstate;
    int rc = kh_envelope_feed(e, data, len);
    if (rc != 0)
        refuse(req, rc, kh_envelope_error(e));
}

static void on_stored(void *arg, int result, const char *err)
{
    struct kh_request *req = arg;
    if (result == 0)
        kh_request_respond(req, 204, NULL, 0);
    else if (result == KH_EREJECT) {
        req->storage_refused = true;
        kh_request_respond_error(req, 400, err ? err : "storage: refused this report");
    }
    else {
        req->retry_after = (int)req->app->cfg->retry_after;
        kh_request_respond_error(req, 503, "storage: write failed; retry later");
    }
    kh_request_release(req);
}

static void on_end(struct kh_request *req)
{
    struct kh_envelope *e = req->hstate;
    int rc = kh_envelope_finish(e);
    if (rc != 0) {
        refuse(req, rc, kh_envelope_error(e));
        return;
    }
    struct kh_report *r = kh_envelope_take_report(e);
    kh_envelope_free(e); /* the parser is done: give its memory back before the batch */
    req->hstate = NULL;
    kh_request_retain(req);
    rc = kh_batcher_submit(req->app->batcher, r, on_stored, req);
    if (rc == 0)
        return;
    kh_request_release(req);
    kh_report_free(r);
    req->retry_after = (int)req->app->cfg->retry_after;
    kh_request_respond_error(req, 503,
                             rc == KH_ESHUTDOWN ? "server: shutting down"
                                                : "server: too many reports waiting for storage");
}

static void on_free(struct kh_request *req)
{
    kh_envelope_free(req->hstate);
    req->hstate = NULL;
}

const struct kh_handler kh_collector_handler = {
    .name = "collector",
    .on_headers = exporter_headers,
    .on_body = on_body,
    .on_end = on_end,
    .on_free = on_free,
};

const struct kh_handler kh_webhook_handler = {
    .name = "webhook",
    .on_headers = webhook_headers,
    .on_body = on_body,
    .on_end = on_end,
    .on_free = on_free,
};
