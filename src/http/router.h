/*
 * router: maps (method, path) to a handler, answering 404/405 itself. Its routes are
 * registered by the program that serves (h2o-style: handlers are added on a path at start-up);
 * the router only calls through them. Paths are matched without their query string and
 * without trailing slashes; a route path ending in a slash and an asterisk takes every path
 * below it. Routes are tried in the order they were added.
 */
#ifndef KH_ROUTER_H
#define KH_ROUTER_H

#include "http/request.h"

struct kh_router;

/* NULL on allocation failure. */
struct kh_router *kh_router_new(void);
void kh_router_free(struct kh_router *r);
/* Adds a route. *path is read at every request, so the owner may point it at a value that
 * changes at run time (a reloaded config). arg becomes the request's handler_arg, label its
 * route_label. 0 or KH_ENOMEM. */
int kh_router_add(struct kh_router *r, const char *const *path, enum kh_method method,
                  const struct kh_handler *handler, void *arg, int label);
/* Sets req->handler (and handler_arg, route_label), or answers the request (404, 405 with
 * Allow, 400 for an h2c upgrade). A request on a path no route has keeps route_label -1; one on
 * a known path with the wrong method gets that path's label. */
void kh_router_dispatch(const struct kh_router *r, struct kh_request *req);

#endif
