/*
 * collector: POST /collector, Sora's stats exporter (DESIGN 1.1). HTTP/2 only. The body
 * streams into the envelope parser; a valid report goes to the batcher and is answered 204
 * only after its batch has committed.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "api/app.h"
#include "core/errors.h"
#include "sora/envelope.h"

static void on_headers(struct kh_request *req)
{
    if (req->proto != KH_PROTO_H2) {
        req->close_connection = false;
        kh_request_respond_error(req, 400,
                                 "protocol: the stats exporter endpoint needs HTTP/2 (h2c with "
                                 "prior knowledge, or h2 over TLS)");
        return;
    }
    enum kh_report_kind kind;
    if (req->exporter_type[0] == '\0') {
        kh_request_respond_error(req, 400, "x-sora-stats-exporter-type: required header");
        return;
    }
    if (strcmp(req->exporter_type, "connection.user-agent") == 0)
        kind = KH_REPORT_CONNECTION;
    else if (strcmp(req->exporter_type, "node.erlang-vm") == 0)
        kind = KH_REPORT_NODE;
    else {
        char msg[256];
        snprintf(msg, sizeof(msg),
                 "x-sora-stats-exporter-type: must be connection.user-agent or node.erlang-vm, "
                 "got '%s'",
                 req->exporter_type);
        kh_request_respond_error(req, 400, msg);
        return;
    }
    struct kh_envelope_limits lim = kh_envelope_default_limits;
    lim.arena_max = (size_t)req->app->cfg->max_body_bytes * 4 + (1u << 20);
    req->hstate = kh_envelope_new(kind, KH_FLAVOR_EXPORTER, &lim);
    if (req->hstate == NULL) {
        req->retry_after = (int)req->app->cfg->retry_after;
        kh_request_respond_error(req, 503, "server: out of memory");
    }
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
    else if (result == KH_EREJECT)
        kh_request_respond_error(req, 400, err ? err : "storage: refused this report");
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
    .on_headers = on_headers,
    .on_body = on_body,
    .on_end = on_end,
    .on_free = on_free,
};
