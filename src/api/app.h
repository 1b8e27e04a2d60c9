/*
 * app: the program kohaku serves with. It owns what handlers share (the config, the
 * batcher, the store, the spool, the parse pool) and wires the lower layers together: the
 * HTTP sites (routes and limits) of the stats and metrics listeners, the limits the
 * listeners enforce, the TLS files, and the metrics' labels. Handlers find it as their
 * request's handler_arg. One per process, owned by main.
 */
#ifndef KH_APP_H
#define KH_APP_H

#include <stdbool.h>

#include "core/config.h"
#include "http/http.h"
#include "http/request.h"
#include "net/server.h"
#include "pipeline/batcher.h"
#include "pipeline/parsepool.h"
#include "sora/privacy.h"
#include "spool/spool.h"
#include "store/store.h"

/* The routes, as the request counter labels them. */
enum kh_route {
    KH_ROUTE_COLLECTOR,
    KH_ROUTE_WEBHOOK,
    KH_ROUTE_HEALTH,
    KH_ROUTE_METRICS,
    KH_ROUTE_SESSION_WEBHOOK,
    KH_ROUTE_EVENT_WEBHOOK,
    KH_ROUTE_CONSOLE,
    KH_ROUTE_COUNT
};

/* The listeners. */
enum kh_listener { KH_LISTEN_STATS, KH_LISTEN_METRICS, KH_LISTEN_CONSOLE };

struct kh_app {
    const struct kh_config *cfg;
    struct kh_store *store;
    struct kh_batcher *batcher;
    struct kh_spool *spool;         /* NULL without spool_dir */
    bool log_first;                 /* ack_mode = log: reports answered once in the spool's
                                     * log, then stored from memory (collector.c) */
    struct kh_parsepool *parsepool; /* NULL with parse_threads = 0: parse on the loop */
    struct kh_console *console;     /* NULL with console = false */
    bool draining; /* SIGTERM: the health check answers 503 so that load balancers move on */
    struct kh_privacy privacy;      /* what the parsers do to IP addresses (kh_app_privacy_init) */
    /* from cfg (kh_app_apply_config): what the listeners and the HTTP layer read */
    struct kh_net_limits net_limits;
    struct kh_http_limits http_limits;
    struct kh_tls_files tls_files;
    struct kh_tls_files console_tls_files; /* the same certificate, no client certificates */
    struct kh_router *stats_router, *metrics_router, *console_router;
    struct kh_http_site stats_site, metrics_site, console_site; /* kh_listen.ctx */
};

extern const struct kh_handler kh_collector_handler;
extern const struct kh_handler kh_webhook_handler;
extern const struct kh_handler kh_session_webhook_handler;
extern const struct kh_handler kh_event_webhook_handler;
extern const struct kh_handler kh_health_handler;
extern const struct kh_handler kh_metrics_handler;

/* Routes the sites (the console's when app->console is set) and hands the metrics their
 * labels; app->cfg is set. 0 or KH_ENOMEM. */
int kh_app_init(struct kh_app *app);
void kh_app_cleanup(struct kh_app *app);
/* The IP privacy policy of cfg (privacy_*), its hash made by OpenSSL's HMAC (net/tls.h): at
 * start, for serve and import alike; it needs a restart to change. 0 or KH_EINVAL with *err
 * ("privacy_...: reason"), which kh_config_finish has ruled out already. */
int kh_app_privacy_init(struct kh_privacy *p, const struct kh_config *cfg, const char **err);
/* Copies the limits and TLS file names from app->cfg: at start and after SIGHUP. */
void kh_app_apply_config(struct kh_app *app);
/* The spec of a listener. */
struct kh_listen kh_app_listen_spec(struct kh_app *app, enum kh_listener which);

/* The spool's replay function (kh_spool_replay_fn); arg is the app. */
int kh_collector_replay(void *arg, const struct kh_spool_meta *m, const uint8_t *body,
                        size_t len, kh_spool_done_cb done, void *ctx, const char **why);

#endif
