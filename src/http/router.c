/*
 * router: the route table. See router.h.
 */
#include "http/router.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/errors.h"

struct route {
    const char *const *path;
    enum kh_method method;
    const struct kh_handler *handler;
    void *arg;
    int label;
};

struct kh_router {
    struct route *routes;
    size_t n, cap;
};

struct kh_router *kh_router_new(void) { return calloc(1, sizeof(struct kh_router)); }

void kh_router_free(struct kh_router *r)
{
    if (r == NULL)
        return;
    free(r->routes);
    free(r);
}

int kh_router_add(struct kh_router *r, const char *const *path, enum kh_method method,
                  const struct kh_handler *handler, void *arg, int label)
{
    if (r->n == r->cap) {
        struct route *p = kh_grow(r->routes, &r->cap, 8, sizeof(*p));
        if (p == NULL)
            return KH_ENOMEM;
        r->routes = p;
    }
    r->routes[r->n++] = (struct route){path, method, handler, arg, label};
    return 0;
}

static const char *method_name(enum kh_method m)
{
    switch (m) {
    case KH_METHOD_GET: return "GET";
    case KH_METHOD_HEAD: return "HEAD";
    case KH_METHOD_POST: return "POST";
    default: return "";
    }
}

/* Appends a method to the Allow list. */
static void add_method(char *allow, size_t cap, enum kh_method m)
{
    size_t n = strlen(allow);
    snprintf(allow + n, cap - n, "%s%s", n ? ", " : "", method_name(m));
}

static void refuse_method(struct kh_request *req, const char *allow)
{
    char msg[128];
    kh_request_add_header(req, "allow", allow);
    snprintf(msg, sizeof(msg), "method: %s is not allowed on this path (allowed: %s)",
             req->method_text, allow);
    kh_request_respond_error(req, 405, msg);
}

/* An exact path, or a prefix: a route ending in a slash and an asterisk ("/api/" then "*")
 * takes "/api/x" and "/api/x/y", not "/api" nor "/apix". */
static bool matches(const char *route, const char *path, size_t plen)
{
    size_t n = strlen(route);
    if (n >= 2 && route[n - 1] == '*' && route[n - 2] == '/')
        return plen >= n && strncmp(route, path, n - 1) == 0;
    return n == plen && strncmp(route, path, plen) == 0;
}

void kh_router_dispatch(const struct kh_router *r, struct kh_request *req)
{
    if (req->upgrade_h2c) {
        req->close_connection = true;
        kh_request_respond_error(req, 400,
                                 "upgrade: h2c upgrade is not supported; use HTTP/2 with prior "
                                 "knowledge");
        return;
    }
    /* the query string takes no part in routing, and a trailing slash is dropped as Kohaku
     * 2023.1 did (/collector/ is /collector) */
    size_t plen = strcspn(req->path, "?");
    while (plen > 1 && req->path[plen - 1] == '/')
        plen--;
    char allow[64] = "";
    for (size_t i = 0; i < r->n; i++) {
        const struct route *rt = &r->routes[i];
        if (!matches(*rt->path, req->path, plen))
            continue;
        req->route_label = rt->label;
        if (rt->method == req->method) {
            req->handler = rt->handler;
            req->handler_arg = rt->arg;
            return;
        }
        add_method(allow, sizeof(allow), rt->method);
    }
    if (allow[0])
        refuse_method(req, allow);
    else
        kh_request_respond_error(req, 404, "path: not found");
}
