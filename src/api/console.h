/*
 * console: kohaku's own web console, on a listener of its own (console_listen_addr, default
 * loopback). It serves the pages (console_files.h) and the JSON API (console_api.h) behind
 * them, read-only; API calls run on a worker thread with the store's read-only query, so they
 * never hold the event loop (the stats listener's) nor touch the writers' connections.
 *
 * Authentication, when configured (console_token, console_user/console_password; required off
 * loopback): every request must carry the token as a bearer or the user and password as HTTP
 * basic authentication, compared in constant time; 401 otherwise. Every answer carries a
 * Content-Security-Policy without inline scripts or styles, nosniff, no referrer and no
 * framing.
 */
#ifndef KH_CONSOLE_H
#define KH_CONSOLE_H

#include "core/config.h"
#include "http/request.h"
#include "store/store.h"

struct event_base;
struct kh_console;

/* Reads the pages, sets up the worker. NULL with *err on failure (the files, memory). A
 * missing charting library is logged, not fatal. */
struct kh_console *kh_console_new(struct event_base *base, const struct kh_config *cfg,
                                  struct kh_store *store, const char **err);
/* Waits for the calls in progress (their answers go out first). */
void kh_console_free(struct kh_console *c);

/* The handler of every console path; its route's arg is the console. */
extern const struct kh_handler kh_console_handler;

/* The console's pages directory when console_dir is empty: the source tree's, when there,
 * else the installed one. */
const char *kh_console_default_dir(void);

#endif
