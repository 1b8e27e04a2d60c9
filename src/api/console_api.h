/*
 * console_api: the console's JSON API (README, "Console"), the data behind its pages and for
 * scripts. Each call reads the store with read-only queries (its query op: a connection of
 * its own, query_timeout) and writes one JSON document. It runs on the console's worker
 * thread, never on the event loop, so a slow query delays only the console.
 *
 *   GET /api/connections            the connections of a time range, filtered, sorted, paged
 *   GET /api/connections/ID         one connection: envelope, verdict, issues, streams
 *   GET /api/connections/ID/series  its per-interval quality, per stream, for the charts
 *   GET /api/connections/ID/samples the stored stats objects of one table, as JSON
 *   GET /api/channels/ID            a channel's participants side by side
 *   GET /api/overview               reports/s, connections and their issues per Sora node
 */
#ifndef KH_CONSOLE_API_H
#define KH_CONSOLE_API_H

#include "core/buf.h"
#include "store/store.h"

struct kh_ov_cache;

/* path: after "/api/", without the query string; query: after '?', or "". Writes the JSON
 * answer (or {"message": ...}) into out and sets *status (200, 400, 404, 500, 503). cache:
 * the overview's (overview_cache.h), or NULL; the caller's thread is its only user. */
void kh_console_api(struct kh_store *st, struct kh_ov_cache *cache, const char *path,
                    const char *query, struct kh_buf *out, int *status);

/* The value of parameter `name` in a query string (percent-decoded, '+' a space), into out
 * (cap bytes). 1 when found, 0 when absent, -1 when it is too long, badly encoded or holds a
 * control character. Exposed for tests. */
int kh_console_param(const char *query, const char *name, char *out, size_t cap);

#endif
