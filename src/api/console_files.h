/*
 * console_files: the console's static files, read once at start-up into memory: the pages,
 * scripts and styles of console_dir (the project's console/ directory) and the charting
 * library's files from console_vendor_dir (Debian's libjs-dygraphs). Looked up by name, so a
 * request can never name a file outside them.
 */
#ifndef KH_CONSOLE_FILES_H
#define KH_CONSOLE_FILES_H

#include <stddef.h>

struct kh_console_file {
    char *name; /* "connections.html", "vendor/dygraph.min.js" */
    char *data;
    size_t len;
    const char *type; /* content-type */
};

struct kh_console_files {
    struct kh_console_file *files;
    size_t n;
};

/* Reads dir's files (not its subdirectories) and the vendor files kohaku uses. 0, or
 * KH_EIO/KH_ENOMEM with *err naming the directory or file (kh_errf). A missing vendor file is
 * not an error: *missing gets its name (the pages say charts are unavailable). */
int kh_console_files_load(struct kh_console_files *f, const char *dir, const char *vendor_dir,
                          const char **missing, const char **err);
void kh_console_files_free(struct kh_console_files *f);
/* The file of that name, or NULL. */
const struct kh_console_file *kh_console_file(const struct kh_console_files *f,
                                              const char *name, size_t len);

#endif
