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
#include "store/store.h"

struct kh_app {
    const struct kh_config *cfg;
    struct kh_store *store;
    struct kh_batcher *batcher;
};

extern const struct kh_handler kh_collector_handler;
extern const struct kh_handler kh_webhook_handler;
extern const struct kh_handler kh_health_handler;
extern const struct kh_handler kh_metrics_handler;

#endif
