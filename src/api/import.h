/*
 * import: `kohaku import`, Sora's log files into the configured storage (README, "Importing
 * Sora's log files"). Every report a file holds goes through the live path's envelope parser
 * (the stats webhook's rules for connection.rtc, the exporter's for the others), every session
 * and event webhook through the lifecycle parser (sora/lifecycle.h, as on /webhook/session
 * and /webhook/event), then the same batcher with its group commit and quality stage, and the
 * same backend, so what it stores and what it counts as stored already are what the live
 * path would have; it can run while a daemon writes the same database.
 */
#ifndef KH_IMPORT_H
#define KH_IMPORT_H

#include <stdbool.h>
#include <stddef.h>

#include "core/config.h"
#include "sora/soralog.h"

struct kh_import_options {
    enum kh_soralog_format format; /* KH_SORALOG_AUTO: from each file's first line */
    bool json;                     /* the summary as JSON on stdout */
    bool progress;                 /* the progress line on stderr (a terminal) */
    char *const *files;            /* "-" is standard input */
    size_t nfiles;
};

/* Imports the files; the summary goes to stdout, errors to stderr. Returns the exit
 * status: 0 every report stored or already there, 1 some reports or lines refused, 2 a
 * file that could not be read, or the database failing. kh_schema_init and kh_q_init have
 * run. */
int kh_import_run(const struct kh_config *cfg, const struct kh_import_options *opt);

#endif
