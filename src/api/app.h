/*
 * app: what handlers share: the config, the batcher and the store. One per process, owned by
 * main; handlers only read it.
 */
#ifndef KH_APP_H
#define KH_APP_H

#include <stdbool.h>

#include "core/config.h"
#include "http/request.h"
#include "pipeline/batcher.h"
#include "pipeline/parsepool.h"
#include "spool/spool.h"
#include "store/store.h"

struct kh_app {
    const struct kh_config *cfg;
    struct kh_store *store;
    struct kh_batcher *batcher;
    struct kh_spool *spool; /* NULL without spool_dir */
    struct kh_parsepool *parsepool; /* NULL with parse_threads = 0: parse on the loop */
};

extern const struct kh_handler kh_collector_handler;
extern const struct kh_handler kh_webhook_handler;
extern const struct kh_handler kh_health_handler;
extern const struct kh_handler kh_metrics_handler;

/* The spool's replay function (kh_spool_replay_fn); arg is the app. */
int kh_collector_replay(void *arg, const struct kh_spool_meta *m, const uint8_t *body,
                        size_t len, kh_spool_done_cb done, void *ctx, const char **why);

#endif
