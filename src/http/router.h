/*
 * router: maps (method, path) to a handler, answering 404/405 itself. The route table is
 * built from the config (collector_path) in one place.
 */
#ifndef KH_ROUTER_H
#define KH_ROUTER_H

#include "http/request.h"

/* Sets req->handler, or answers the request (404, 405, 400 for an h2c upgrade). */
void kh_router_dispatch(struct kh_request *req);

#endif
