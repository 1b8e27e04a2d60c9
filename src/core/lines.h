/*
 * lines: a file read line by line, gzip or not. The file is read in chunks and a gzip
 * stream (told by its magic bytes, whatever the name) is inflated as it is read, members
 * after members (a concatenated or rotated .gz), so memory stays at a chunk plus the longest
 * line allowed, whatever the file's size. A line longer than that is not kept: it is handed
 * out as too long, with its length, and skipped. "-" is standard input. Blocking reads, on
 * the calling thread; one reader per file.
 */
#ifndef KH_LINES_H
#define KH_LINES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct kh_lines;

struct kh_line {
    const char *p;   /* the line without its "\n" (and a "\r" before it); valid until next */
    size_t len;      /* its length; for a too long line, its whole length */
    uint64_t number; /* 1 for the first line */
    bool too_long;   /* longer than max_line: p is NULL */
    bool last;       /* the file ended without a "\n" after it */
};

/* Opens path ("-": standard input) for lines of at most max_line bytes. 0, or KH_EIO with
 * *err ("FILE: No such file or directory") / KH_ENOMEM. */
int kh_lines_open(struct kh_lines **out, const char *path, size_t max_line, const char **err);
/* The next line: 1 with *line filled, 0 at the end of the file, or KH_EIO with *err (a read
 * error, a damaged or cut gzip stream: the lines before it were handed out) / KH_ENOMEM.
 * After an error or the end, every call returns the same. */
int kh_lines_next(struct kh_lines *l, struct kh_line *line, const char **err);
/* Bytes of the file read so far (compressed bytes for a gzip file). */
uint64_t kh_lines_offset(const struct kh_lines *l);
/* The file's size when it is a regular file, else -1 (a pipe). */
int64_t kh_lines_size(const struct kh_lines *l);
bool kh_lines_gzip(const struct kh_lines *l);
/* Closes the file (not standard input) and frees l. NULL is a no-op. */
void kh_lines_close(struct kh_lines *l);

#endif
