/*
 * The HTTP fuzz targets' harness: a real server (router, handlers, batcher with the null
 * backend written inline) whose connections are fed through an in-process bufferevent pair
 * instead of a socket. Each input is one connection: written, run until quiet, then ended
 * (EOF to the server) and run until the server has closed it, so that nothing of one input
 * outlives it: the server, its event base and its batcher are made once and reused, and
 * libFuzzer's leak check (run after an input that frees less than it allocates) stays idle.
 * A connection the server does not close after EOF is a bug and aborts.
 */
#ifndef KH_FUZZ_HTTP_HARNESS_H
#define KH_FUZZ_HTTP_HARNESS_H

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdint.h>
#include <stdlib.h>

#include "api/app.h"
#include "core/log.h"
#include "net/server.h"
#include "sora/schema.h"

static struct event_base *fz_base;
static struct kh_server *fz_srv;

static void fz_drain(struct bufferevent *bev, void *arg)
{
    struct evbuffer *in = bufferevent_get_input(bev);
    evbuffer_drain(in, evbuffer_get_length(in));
}

static void fz_init(void)
{
    static struct kh_config cfg;
    static struct kh_store store = {.ops = &kh_store_null_ops};
    static struct kh_app app;
    const char *err = NULL;
    kh_log_set_level(KH_LOG_ERROR);
    kh_schema_init();
    kh_config_init(&cfg);
    kh_config_set(&cfg, "listen_addr", "127.0.0.1", &err);
    kh_config_set(&cfg, "max_body_bytes", "65536", &err);
    kh_config_finish(&cfg, &err);
    fz_base = event_base_new();
    const char *e = NULL;
    store.ops->open(&store, &cfg, &e);
    app.cfg = &cfg;
    app.store = &store;
    app.batcher = kh_batcher_new(fz_base, &store, &cfg);
    if (app.batcher == NULL || kh_app_init(&app) != 0)
        abort();
    struct kh_listen spec = kh_app_listen_spec(&app, false);
    spec.port = 0; /* never connected to */
    fz_srv = kh_server_new(fz_base, &spec, &e);
    if (fz_srv == NULL)
        abort();
}

static void fz_run(const uint8_t *prefix, size_t plen, const uint8_t *data, size_t size)
{
    if (fz_base == NULL)
        fz_init();
    struct bufferevent *pair[2];
    if (bufferevent_pair_new(fz_base, BEV_OPT_CLOSE_ON_FREE, pair) != 0)
        return;
    kh_server_adopt(fz_srv, pair[0], "fuzz");
    bufferevent_setcb(pair[1], fz_drain, NULL, NULL, NULL);
    bufferevent_enable(pair[1], EV_READ | EV_WRITE);
    if (plen)
        bufferevent_write(pair[1], prefix, plen);
    bufferevent_write(pair[1], data, size);
    for (int i = 0; i < 64; i++)
        event_base_loop(fz_base, EVLOOP_NONBLOCK);
    /* EOF to the server side (a pair's partner learns it from a BEV_FINISHED flush) */
    bufferevent_flush(pair[1], EV_WRITE, BEV_FINISHED);
    for (int i = 0; i < 64 && kh_server_nconns(fz_srv) > 0; i++)
        event_base_loop(fz_base, EVLOOP_NONBLOCK);
    if (kh_server_nconns(fz_srv) > 0)
        abort(); /* the server kept a connection its peer had ended */
    bufferevent_free(pair[1]);
    for (int i = 0; i < 4; i++)
        event_base_loop(fz_base, EVLOOP_NONBLOCK); /* the deferred free of the connection */
}

#endif
