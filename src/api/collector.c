/*
 * collector: the two ways Sora delivers a report, sharing one body path:
 *   POST collector_path, Sora's stats exporter (up to Sora 2025): HTTP/2 only, header
 *     x-sora-stats-exporter-type connection.user-agent (a client's report) or
 *     node.erlang-vm (a Sora node's memory);
 *   POST stats_webhook_path, Sora's stats webhook (2024.1 and later): HTTP/1.1 or HTTP/2,
 *     header sora-stats-webhook-type connection.rtc, multistream optional.
 * (README, "What it accepts".) And the same path for Sora's lifecycle webhooks (README,
 * "Lifecycle webhooks"), whose bodies the lifecycle parser reads on the loop as they stream
 * (they are small and few, so never on the parse pool) and whose answer is 200 with "{}":
 *   POST session_webhook_path, the session webhook: session.created ... (header, when Sora
 *     sends it, sora-session-webhook-type);
 *   POST event_webhook_path, the event webhook: connection.created ... (header
 *     sora-event-webhook-type).
 *
 * A report's route, step by step (each step is one function below):
 *   on_body       the body is kept whole as it arrives when a parse pool or a spool needs
 *                 it, and (without a pool) streams into the envelope parser on the loop
 *   on_end        complete: parsed on a pool thread (parse_threads > 0), or finished on the
 *                 loop; an invalid report gets its 400 naming the field (refuse)
 *   store_report  where it goes, decided in one place:
 *                   with a spool, storage down or spool_backlog_reports already waiting
 *                     -> to_spool: 204 once its record is synced
 *                   ack_mode = log -> to_log: 204 once its record is synced, then on
 *                     to the batcher from memory
 *                   otherwise -> to_batcher: 204 once its batch commits; when the batcher
 *                     has no room, the spool takes it (503 without a spool)
 *   on_stored     the batch's outcome: 204; 400 when storage refused this report's data;
 *                 a failed batch goes to the spool (503 without one)
 * The spool replays its records through kh_collector_replay: the same parser and batcher,
 * the received time of the original, and while storage is marked down one record a second
 * as a probe (SQLite finds out that a lock or a full disk is gone only by writing).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api/app.h"
#include "core/buf.h"
#include "core/errors.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/timeutil.h"
#include "pipeline/parsepool.h"
#include "sora/envelope.h"
#include "sora/lifecycle.h"
#include "spool/spool.h"

/* Per-request state: the parser and, with a spool or a parse pool, the body as it arrived. */
struct collect {
    struct kh_envelope *e;
    struct kh_lifecycle *lc; /* instead of e, for a session or event webhook */
    bool storage_refused; /* the 400 comes from the database, not the envelope */
    struct kh_spool_meta meta;
    struct kh_buf body;
    bool keep_body; /* the body is kept in `body` */
    bool pooled;    /* and parsed on the parse pool once complete */
};

static struct kh_app *app_of(const struct kh_request *req) { return req->handler_arg; }

static struct kh_envelope_limits limits_of(const struct kh_app *app)
{
    const struct kh_config *cfg = app->cfg;
    struct kh_envelope_limits lim = kh_envelope_default_limits;
    lim.privacy = &app->privacy;
    lim.arena_max = (size_t)cfg->max_body_bytes * 4 + (1u << 20);
    lim.max_depth = (size_t)cfg->max_json_depth;
    lim.max_stats = (size_t)cfg->max_stats_per_report;
    return lim;
}

static bool is_webhook(enum kh_report_kind kind)
{
    return kind == KH_REPORT_SESSION_WEBHOOK || kind == KH_REPORT_EVENT_WEBHOOK;
}

/* The parser of a report of this kind: the envelope's, or the lifecycle webhooks'. */
static bool new_parser(struct collect *c, const struct kh_app *app, enum kh_report_kind kind,
                       enum kh_envelope_flavor flavor)
{
    struct kh_envelope_limits lim = limits_of(app);
    if (!is_webhook(kind))
        return (c->e = kh_envelope_new(kind, flavor, &lim)) != NULL;
    enum kh_lifecycle_flavor lf = kind == KH_REPORT_SESSION_WEBHOOK ? KH_LC_SESSION : KH_LC_EVENT;
    return (c->lc = kh_lifecycle_new(lf, KH_LC_BODY, &lim)) != NULL;
}

static struct collect *start(struct kh_request *req, enum kh_report_kind kind,
                             enum kh_envelope_flavor flavor)
{
    const struct kh_config *cfg = app_of(req)->cfg;
    struct collect *c = calloc(1, sizeof(*c));
    if (c == NULL || !new_parser(c, app_of(req), kind, flavor)) {
        free(c);
        req->retry_after = (int)cfg->retry_after;
        kh_request_respond_error(req, 503, "server: out of memory");
        return NULL;
    }
    c->meta.kind = (uint8_t)kind;
    c->meta.flavor = (uint8_t)flavor;
    c->pooled = app_of(req)->parsepool != NULL && c->lc == NULL;
    c->keep_body = app_of(req)->spool != NULL || c->pooled;
    if (c->keep_body) {
        kh_buf_init(&c->body, (size_t)cfg->max_body_bytes);
        /* one allocation when the length is announced (the request layer has already
         * answered 413 to one over max_body_bytes); a failure here shows up at append */
        if (req->content_length > 0 && req->content_length <= cfg->max_body_bytes)
            (void)kh_buf_reserve(&c->body, (size_t)req->content_length);
    }
    req->hstate = c;
    return c;
}

static void exporter_headers(struct kh_request *req)
{
    if (req->proto != KH_PROTO_H2) {
        kh_request_respond_error(req, 400,
                                 "protocol: the stats exporter endpoint needs HTTP/2 (h2c with "
                                 "prior knowledge, or h2 over TLS)");
        return;
    }
    const char *type = kh_request_header_value(req, "x-sora-stats-exporter-type");
    if (type == NULL || type[0] == '\0') {
        kh_request_respond_error(req, 400, "x-sora-stats-exporter-type: required header");
        return;
    }
    if (strcmp(type, "connection.user-agent") == 0)
        start(req, KH_REPORT_CONNECTION, KH_FLAVOR_EXPORTER);
    else if (strcmp(type, "node.erlang-vm") == 0)
        start(req, KH_REPORT_NODE, KH_FLAVOR_EXPORTER);
    else {
        char msg[256];
        snprintf(msg, sizeof(msg),
                 "x-sora-stats-exporter-type: must be connection.user-agent or node.erlang-vm, "
                 "got '%.128s'",
                 type);
        kh_request_respond_error(req, 400, msg);
    }
}

static void webhook_headers(struct kh_request *req)
{
    const char *type = kh_request_header_value(req, "sora-stats-webhook-type");
    if (type == NULL || type[0] == '\0') {
        kh_request_respond_error(req, 400, "sora-stats-webhook-type: required header");
        return;
    }
    if (strcmp(type, "connection.rtc") != 0) {
        char msg[256];
        snprintf(msg, sizeof(msg), "sora-stats-webhook-type: must be connection.rtc, got '%.128s'",
                 type);
        kh_request_respond_error(req, 400, msg);
        return;
    }
    start(req, KH_REPORT_CONNECTION, KH_FLAVOR_WEBHOOK);
}

/* A lifecycle webhook: the header, when there is one, says the type the body must have
 * (Sora sends it; a body posted by hand or from a log may come without). */
static void lifecycle_headers(struct kh_request *req, enum kh_report_kind kind,
                              const char *header)
{
    const char *type = kh_request_header_value(req, header);
    struct collect *c = start(req, kind, KH_FLAVOR_WEBHOOK);
    if (c && type && type[0])
        kh_lifecycle_expect_type(c->lc, header, type);
}

static void session_webhook_headers(struct kh_request *req)
{
    lifecycle_headers(req, KH_REPORT_SESSION_WEBHOOK, "sora-session-webhook-type");
}

static void event_webhook_headers(struct kh_request *req)
{
    lifecycle_headers(req, KH_REPORT_EVENT_WEBHOOK, "sora-event-webhook-type");
}

/* The ids of the report, as far as the envelope was read, go on the access line. */
static void log_ids(struct kh_request *req, const struct kh_str *channel_id,
                    const struct kh_str *connection_id, const struct kh_str *node_name)
{
    if (channel_id->p)
        kh_request_log_field(req, "channel_id", channel_id->p, channel_id->len);
    if (connection_id->p)
        kh_request_log_field(req, "connection_id", connection_id->p, connection_id->len);
    if (node_name->p && !connection_id->p)
        kh_request_log_field(req, "node_name", node_name->p, node_name->len);
}

static void log_str(struct kh_request *req, const char *key, const struct kh_str *s)
{
    if (s->p)
        kh_request_log_field(req, key, s->p, s->len);
}

/* What the parser had read when it stopped, for the access line. */
static void log_parser_ids(struct kh_request *req, const struct collect *c)
{
    struct kh_str a, b, n;
    if (c->lc) {
        kh_lifecycle_ids(c->lc, &a, &b, &n);
        log_str(req, "type", &a);
        log_str(req, "session_id", &b);
        log_str(req, "connection_id", &n);
        return;
    }
    kh_envelope_ids(c->e, &a, &b, &n);
    log_ids(req, &a, &b, &n);
}

/* The parser's message, whichever parser it is. */
static const char *parser_error(const struct collect *c)
{
    return c->lc ? kh_lifecycle_error(c->lc) : kh_envelope_error(c->e);
}

/* Stored (or durably spooled): 204 for a report; 200 with an empty object for a lifecycle
 * webhook, which is what Sora expects back from its session and event webhooks and, for
 * session.created, configures nothing. */
static void answer_stored(struct kh_request *req)
{
    const struct collect *c = req->hstate;
    if (c && is_webhook((enum kh_report_kind)c->meta.kind))
        kh_request_respond(req, 200, "{}", 2);
    else
        kh_request_respond(req, 204, NULL, 0);
}

static void refuse(struct kh_request *req, int rc, const char *why)
{
    if (rc == KH_ENOMEM) {
        req->retry_after = (int)app_of(req)->cfg->retry_after;
        kh_request_respond_error(req, 503, "server: out of memory for this report");
    } else {
        kh_request_respond_error(req, 400, why);
    }
}

static void on_body(struct kh_request *req, const uint8_t *data, size_t len)
{
    struct collect *c = req->hstate;
    int rc = c->lc       ? kh_lifecycle_feed(c->lc, data, len)
             : c->pooled ? 0
                         : kh_envelope_feed(c->e, data, len);
    if (rc != 0) {
        log_parser_ids(req, c);
        refuse(req, rc, parser_error(c));
        return;
    }
    /* the request layer has already held the body to max_body_bytes */
    if (c->keep_body && kh_buf_append(&c->body, data, len) != 0)
        refuse(req, KH_ENOMEM, NULL);
}

static void unavailable(struct kh_request *req, const char *message)
{
    req->retry_after = (int)app_of(req)->cfg->retry_after;
    kh_request_respond_error(req, 503, message);
}

static void on_spooled(void *arg, int result)
{
    struct kh_request *req = arg;
    if (result == 0)
        answer_stored(req);
    else
        unavailable(req, "spool: write failed; retry later");
    kh_request_release(req);
}

/* Hands the kept body to the spool; the answer follows its sync. */
static void to_spool(struct kh_request *req)
{
    struct collect *c = req->hstate;
    kh_request_retain(req);
    int rc = kh_spool_append(app_of(req)->spool, &c->meta, c->body.data, c->body.len, on_spooled,
                             req);
    if (rc == 0)
        return;
    kh_request_release(req);
    unavailable(req, rc == KH_ENOSPC ? "spool: full (spool_max_bytes); retry later"
                                     : "server: out of memory for this report");
}

static void on_stored(void *arg, int result, const char *err)
{
    struct kh_request *req = arg;
    if (result == 0)
        answer_stored(req);
    else if (result == KH_EREJECT) {
        struct collect *c = req->hstate;
        c->storage_refused = true;
        kh_request_respond_error(req, 400, err ? err : "storage: refused this report");
    } else if (app_of(req)->spool && !req->responded)
        to_spool(req); /* storage failed: the spool keeps it */
    else
        unavailable(req, "storage: write failed; retry later");
    kh_request_release(req);
}

/* To the batcher; when it has no room, to the spool if there is one. */
static void to_batcher(struct kh_request *req, struct kh_report *r)
{
    struct kh_app *app = app_of(req);
    kh_request_retain(req);
    int rc = kh_batcher_submit(app->batcher, r, on_stored, req);
    if (rc == 0)
        return;
    kh_request_release(req);
    kh_report_free(r);
    if (app->spool && rc == KH_ENOSPC) {
        to_spool(req);
        return;
    }
    unavailable(req, rc == KH_ESHUTDOWN ? "server: shutting down"
                                        : "server: too many reports waiting for storage");
}

/* --- log-first acknowledgement (ack_mode = log) -------------------------------------------
 * The report is parsed; its body goes to the log (a held spool record) and is answered once
 * synced; then the parsed report goes to the batcher, and its outcome settles the record
 * (stored, or refused for good) or releases it (not stored: the drainer replays it from the
 * log, parsing it again). */
struct logged {
    struct kh_app *app;
    struct kh_request *req; /* until answered */
    struct kh_report *r;    /* until submitted */
    struct kh_spool_held h;
};

static void on_logged_stored(void *arg, int result, const char *err)
{
    struct logged *lg = arg;
    struct kh_app *app = lg->app;
    kh_metrics.log_held--;
    if (result == 0) {
        kh_metrics.log_stored++;
        kh_spool_settle(app->spool, lg->h);
    } else if (result == KH_EREJECT) {
        /* answered 204 already: what the spool's replay does with such a report */
        kh_metrics.log_refused++;
        kh_log(KH_LOG_ERROR, "log: storage refused an acknowledged report; dropped", err);
        kh_spool_settle(app->spool, lg->h);
    } else {
        kh_metrics.log_released++;
        kh_spool_release(app->spool, lg->h);
    }
    free(lg);
}

static void on_logged(void *arg, int result, struct kh_spool_held h)
{
    struct logged *lg = arg;
    struct kh_app *app = lg->app;
    if (result != 0) {
        unavailable(lg->req, result == KH_ENOMEM ? "server: out of memory for this report"
                                                 : "log: write failed; retry later");
        kh_request_release(lg->req);
        kh_report_free(lg->r);
        free(lg);
        return;
    }
    answer_stored(lg->req);
    kh_request_release(lg->req);
    kh_metrics.log_acknowledged++;
    kh_metrics.log_held++;
    lg->req = NULL;
    lg->h = h;
    struct kh_report *r = lg->r;
    lg->r = NULL;
    int rc = app->batcher ? kh_batcher_submit(app->batcher, r, on_logged_stored, lg)
                          : KH_ESHUTDOWN;
    if (rc != 0) { /* no room, or shutting down: the log has it */
        kh_report_free(r);
        on_logged_stored(lg, KH_ERETRY, NULL);
    }
}

/* Logs the kept body; the answer follows its sync, and the report goes on from memory. */
static void to_log(struct kh_request *req, struct kh_report *r)
{
    struct collect *c = req->hstate;
    struct kh_app *app = app_of(req);
    struct logged *lg = malloc(sizeof(*lg));
    if (lg == NULL) {
        kh_report_free(r);
        refuse(req, KH_ENOMEM, NULL);
        return;
    }
    *lg = (struct logged){.app = app, .req = req, .r = r};
    kh_request_retain(req);
    int rc = kh_spool_append_held(app->spool, &c->meta, c->body.data, c->body.len, on_logged,
                                  lg);
    if (rc == 0)
        return;
    kh_request_release(req);
    kh_report_free(r);
    free(lg);
    unavailable(req, rc == KH_ENOSPC ? "spool: full (spool_max_bytes); retry later"
                                     : "server: out of memory for this report");
}

/* Whether a report goes to the spool rather than to storage: storage is down, or already has
 * spool_backlog_reports waiting (the database is slower than the reports coming in). */
static bool spool_first(const struct kh_app *app)
{
    if (app->spool == NULL)
        return false;
    if (!app->store->ops->healthy(app->store))
        return true;
    /* logged reports wait in memory up to max_inflight_bytes (the batcher's budget); past
     * it they are released to the log's replay */
    return !app->log_first &&
           kh_batcher_pending(app->batcher) >= (size_t)app->cfg->spool_backlog_reports;
}

/* The body has been parsed into r: where it goes (see the top of the file). */
static void store_report(struct kh_request *req, struct kh_report *r)
{
    struct collect *c = req->hstate;
    struct kh_app *app = app_of(req);
    if (kh_report_is_webhook(r)) {
        log_str(req, "type", &r->type);
        log_str(req, "session_id", &r->session_id);
    }
    log_ids(req, &r->channel_id, &r->connection_id, &r->node_name);
    if (c->keep_body && app->spool == NULL) {
        kh_buf_cleanup(&c->body); /* kept for the parse pool only */
        c->keep_body = false;
    }
    if (app->spool) {
        /* the spooled copy must store the same received_at as a direct write would */
        c->meta.received_usec = kh_time_now_usec();
        kh_time_format(c->meta.received_usec, r->received_text);
    }
    if (spool_first(app)) {
        kh_report_free(r);
        to_spool(req);
        return;
    }
    if (app->log_first) {
        to_log(req, r);
        return;
    }
    to_batcher(req, r);
}

static void on_pool_parsed(void *arg, int rc, struct kh_report *r, const struct kh_envelope *e)
{
    struct kh_request *req = arg;
    if (rc != 0) {
        struct kh_str channel_id, connection_id, node_name;
        kh_envelope_ids(e, &channel_id, &connection_id, &node_name);
        log_ids(req, &channel_id, &connection_id, &node_name);
        refuse(req, rc, kh_envelope_error(e));
    } else
        store_report(req, r);
    kh_request_release(req);
}

static void on_end(struct kh_request *req)
{
    struct collect *c = req->hstate;
    if (c->pooled) {
        kh_request_retain(req); /* the pool has c->body until on_pool_parsed */
        if (kh_parsepool_submit(app_of(req)->parsepool, c->e, (const uint8_t *)c->body.data,
                                c->body.len, on_pool_parsed, req) != 0) {
            kh_request_release(req);
            refuse(req, KH_ENOMEM, NULL);
            return;
        }
        c->e = NULL; /* the pool's now */
        return;
    }
    int rc = c->lc ? kh_lifecycle_finish(c->lc) : kh_envelope_finish(c->e);
    if (rc != 0) {
        log_parser_ids(req, c);
        refuse(req, rc, parser_error(c));
        return;
    }
    struct kh_report *r = c->lc ? kh_lifecycle_take_report(c->lc) : kh_envelope_take_report(c->e);
    /* the parser is done: give its memory back before the batch */
    kh_envelope_free(c->e);
    kh_lifecycle_free(c->lc);
    c->e = NULL;
    c->lc = NULL;
    store_report(req, r);
}

/* Every answer to a report, whoever gave it (the handler, or the request layer: 413, 431,
 * 408): the refusals counted by reason. */
static void on_answered(struct kh_request *req)
{
    const struct collect *c = req->hstate;
    int reason = -1;
    switch (req->status) {
    case 400: reason = c && c->storage_refused ? KH_REJECT_STORAGE : KH_REJECT_INVALID; break;
    case 408: reason = KH_REJECT_TIMEOUT; break;
    case 413: reason = KH_REJECT_TOO_LARGE; break;
    case 431: reason = KH_REJECT_HEADERS; break;
    case 503: reason = KH_REJECT_UNAVAILABLE; break;
    default: break;
    }
    if (reason >= 0)
        kh_metrics.rejected[reason]++;
}

static void on_free(struct kh_request *req)
{
    struct collect *c = req->hstate;
    if (c == NULL)
        return;
    kh_envelope_free(c->e);
    kh_lifecycle_free(c->lc);
    if (c->keep_body)
        kh_buf_cleanup(&c->body);
    free(c);
    req->hstate = NULL;
}

/* A spooled body parsed again into its report: 0, KH_EINVAL (errbuf says why) or KH_ENOMEM.
 * It passed the limits in force when it was received: it is not refused now because they
 * have been lowered since. */
static int reparse(const struct kh_app *app, const struct kh_spool_meta *m, const uint8_t *body,
                   size_t len, struct kh_report **out, char *errbuf, size_t errlen)
{
    struct kh_envelope_limits lim = kh_envelope_default_limits;
    lim.privacy = &app->privacy; /* the spool keeps the body as it came: applied as it is read */
    lim.arena_max = len * 4 + (1u << 20);
    lim.max_depth = 64;
    lim.max_stats = 1000000;
    if (is_webhook((enum kh_report_kind)m->kind))
        return kh_lifecycle_parse(m->kind == KH_REPORT_SESSION_WEBHOOK ? KH_LC_SESSION
                                                                        : KH_LC_EVENT,
                                  KH_LC_BODY, body, len, &lim, out, errbuf, errlen);
    struct kh_envelope *e = kh_envelope_new((enum kh_report_kind)m->kind,
                                            (enum kh_envelope_flavor)m->flavor, &lim);
    if (e == NULL)
        return KH_ENOMEM;
    int rc = kh_envelope_feed(e, body, len);
    if (rc == 0)
        rc = kh_envelope_finish(e);
    if (rc != 0)
        snprintf(errbuf, errlen, "%s", kh_envelope_error(e));
    *out = rc == 0 ? kh_envelope_take_report(e) : NULL;
    kh_envelope_free(e);
    return rc;
}

int kh_collector_replay(void *arg, const struct kh_spool_meta *m, const uint8_t *body,
                        size_t len, kh_spool_done_cb done, void *ctx, const char **why)
{
    static char errbuf[512];       /* loop thread only */
    static uint64_t last_probe_usec; /* loop thread only */
    struct kh_app *app = arg;
    if (!app->store->ops->healthy(app->store)) {
        /* Storage that only finds out it is back by writing (SQLite: a lock released, a disk
         * with room again) would never get a write while every report goes to the spool:
         * let one record through now and then as a probe. */
        uint64_t now = kh_mono_usec();
        if (now - last_probe_usec < 1000000)
            return KH_ERETRY;
        last_probe_usec = now;
    }
    if (m->kind >= KH_REPORT_KINDS || m->flavor > KH_FLAVOR_WEBHOOK) {
        *why = "spool: unknown report kind in the record";
        return KH_EINVAL;
    }
    struct kh_report *r;
    int rc = reparse(app, m, body, len, &r, errbuf, sizeof(errbuf));
    if (rc == KH_ENOMEM)
        return KH_ERETRY;
    if (rc != 0) {
        *why = errbuf;
        return KH_EINVAL;
    }
    kh_time_format(m->received_usec, r->received_text);
    rc = kh_batcher_submit(app->batcher, r, done, ctx);
    if (rc != 0) {
        kh_report_free(r);
        return KH_ERETRY;
    }
    return 0;
}

const struct kh_handler kh_collector_handler = {
    .name = "collector",
    .on_headers = exporter_headers,
    .on_body = on_body,
    .on_end = on_end,
    .on_answered = on_answered,
    .on_free = on_free,
};

const struct kh_handler kh_webhook_handler = {
    .name = "webhook",
    .on_headers = webhook_headers,
    .on_body = on_body,
    .on_end = on_end,
    .on_answered = on_answered,
    .on_free = on_free,
};

const struct kh_handler kh_session_webhook_handler = {
    .name = "session_webhook",
    .on_headers = session_webhook_headers,
    .on_body = on_body,
    .on_end = on_end,
    .on_answered = on_answered,
    .on_free = on_free,
};

const struct kh_handler kh_event_webhook_handler = {
    .name = "event_webhook",
    .on_headers = event_webhook_headers,
    .on_body = on_body,
    .on_end = on_end,
    .on_answered = on_answered,
    .on_free = on_free,
};
