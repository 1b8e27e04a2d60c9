/*
 * template: report bodies that look like a live client's. A template is made from two
 * snapshots of the same browser call (t=3 s and t=10 s fixtures): every number that changed
 * grows at the rate it grew between them, so counters and timestamps advance from one report
 * to the next the way a live client's do. A single file gives a template whose numbers stay
 * as they are, except the timestamps, which follow the clock.
 *
 * A template compiles to a list of literal text pieces and number slots, so producing a body
 * is copying text and formatting numbers.
 */
#ifndef KH_LOADGEN_TEMPLATE_H
#define KH_LOADGEN_TEMPLATE_H

#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"

struct lg_template;

/* Loads `early` (and `late`, which may be NULL) into a template. NULL with err set. */
struct lg_template *lg_template_load(const char *early, const char *late, char *err,
                                     size_t errlen);
void lg_template_free(struct lg_template *t);
const char *lg_template_name(const struct lg_template *t);
/* "sendrecv"-style role for the envelope: sendonly for sender snapshots, recvonly for
 * receivers, sendrecv otherwise. */
const char *lg_template_role(const struct lg_template *t);
size_t lg_template_objects(const struct lg_template *t);

/* Appends the stats array for a client `elapsed_ms` after the early snapshot, with
 * `now_ms` (Unix ms) as the clock. */
int lg_template_render(const struct lg_template *t, double elapsed_ms, double now_ms,
                       struct kh_buf *out);

/* The browser fixtures read when no directory is given: the source tree's
 * tests/fixtures/browser when this binary was built from a tree that is still there, the
 * installed copy (DATADIR/kohaku/fixtures/browser) otherwise. */
const char *lg_default_fixtures(void);

#endif
