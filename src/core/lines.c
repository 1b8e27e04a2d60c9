/*
 * lines: see lines.h.
 *
 * Decoded bytes wait in `buf` between `start` and `end`; a line is handed out as a pointer
 * into it, so it is copied only when it straddles a refill (the rest is moved down first).
 * `buf` grows up to max_line + one chunk and no further: a line that cannot end within it is
 * too long and its bytes are dropped as they come. A plain file is read straight into `buf`;
 * a gzip one into `in`, then inflated into `buf`. The first read goes to `in` either way, to
 * look at the magic bytes.
 */
#include "core/lines.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "core/errors.h"

#define CHUNK (256u << 10)

struct kh_lines {
    int fd;
    bool own_fd;
    char *name;
    int64_t size;
    uint64_t offset; /* bytes read from the file */
    bool gz, z_open, raw_eof;
    bool member_done; /* a gzip member ended and no byte of another was read */
    z_stream z;
    unsigned char *in;
    size_t in_len;
    char *buf;
    size_t cap, max_cap, start, end, scanned;
    size_t max_line;
    uint64_t number;
    bool eof;      /* no decoded byte will come any more */
    bool skipping; /* inside a too long line */
    size_t skip_len;
    int rc; /* sticky: 0, or the error every later call returns */
    char err[512];
};

static int fail(struct kh_lines *l, int rc, const char *what, const char *why)
{
    snprintf(l->err, sizeof(l->err), "%s: %s%s%s", l->name, what, why ? ": " : "",
             why ? why : "");
    l->rc = rc;
    return rc;
}

/* read(2) into p, retried on EINTR; 0 at the end of the file. */
static ssize_t read_some(struct kh_lines *l, void *p, size_t n)
{
    ssize_t got;
    do
        got = read(l->fd, p, n);
    while (got < 0 && errno == EINTR);
    if (got > 0)
        l->offset += (uint64_t)got;
    return got;
}

/* Fills `in` with the next raw chunk; sets raw_eof at the end. */
static int read_raw(struct kh_lines *l)
{
    ssize_t got = read_some(l, l->in, CHUNK);
    if (got < 0)
        return fail(l, KH_EIO, "read", strerror(errno));
    l->in_len = (size_t)got;
    l->raw_eof = got == 0;
    l->z.next_in = l->in;
    l->z.avail_in = (uInt)l->in_len;
    return 0;
}

/* The first bytes decide: gzip's magic 1f 8b, or plain text. */
static int sniff(struct kh_lines *l)
{
    size_t have = 0;
    while (have < 2) {
        ssize_t got = read_some(l, l->in + have, CHUNK - have);
        if (got < 0)
            return fail(l, KH_EIO, "read", strerror(errno));
        if (got == 0)
            break;
        have += (size_t)got;
    }
    l->in_len = have;
    l->raw_eof = have < 2;
    l->gz = have >= 2 && l->in[0] == 0x1f && l->in[1] == 0x8b;
    if (l->gz) {
        if (inflateInit2(&l->z, 16 + MAX_WBITS) != Z_OK)
            return fail(l, KH_ENOMEM, "gzip", "out of memory");
        l->z_open = true;
        l->z.next_in = l->in;
        l->z.avail_in = (uInt)have;
        return 0;
    }
    memcpy(l->buf, l->in, have);
    l->end = have;
    if (have == 0)
        l->eof = true;
    return 0;
}

/* Inflates into buf[end, cap) until at least one byte came out or the stream ended at a
 * member's end with the file. */
static int inflate_some(struct kh_lines *l)
{
    size_t before = l->end;
    while (l->end == before) {
        if (l->z.avail_in == 0) {
            if (l->raw_eof && l->member_done) {
                l->eof = true;
                return 0;
            }
            if (l->raw_eof)
                return fail(l, KH_EIO, "gzip",
                            "the file ends inside a compressed stream (cut short?)");
            if (read_raw(l) != 0)
                return l->rc;
            continue;
        }
        l->z.next_out = (unsigned char *)l->buf + l->end;
        l->z.avail_out = (uInt)(l->cap - l->end);
        int zr = inflate(&l->z, Z_NO_FLUSH);
        l->end = l->cap - l->z.avail_out;
        if (zr == Z_STREAM_END) {
            /* another member may follow (gzip a b > c, or appended rotations) */
            if (inflateReset(&l->z) != Z_OK)
                return fail(l, KH_EIO, "gzip", "cannot restart after a member");
            l->member_done = true;
        } else if (zr == Z_OK) {
            l->member_done = false;
        } else if (zr == Z_MEM_ERROR) {
            return fail(l, KH_ENOMEM, "gzip", "out of memory");
        } else if (zr != Z_BUF_ERROR) {
            return fail(l, KH_EIO, "gzip", l->z.msg ? l->z.msg : "damaged data");
        }
    }
    return 0;
}

/* Moves the pending bytes down and makes room to read into: more decoded bytes at
 * buf[end..), or eof. */
static int fill(struct kh_lines *l)
{
    if (l->start > 0) {
        memmove(l->buf, l->buf + l->start, l->end - l->start);
        l->end -= l->start;
        l->scanned -= l->start;
        l->start = 0;
    }
    if (l->end == l->cap) {
        size_t ncap = l->cap * 2 > l->max_cap ? l->max_cap : l->cap * 2;
        char *p = ncap > l->cap ? realloc(l->buf, ncap) : NULL;
        if (p == NULL)
            return fail(l, KH_ENOMEM, "read", "out of memory");
        l->buf = p;
        l->cap = ncap;
    }
    if (l->gz)
        return inflate_some(l);
    ssize_t got = read_some(l, l->buf + l->end, l->cap - l->end);
    if (got < 0)
        return fail(l, KH_EIO, "read", strerror(errno));
    if (got == 0)
        l->eof = true;
    l->end += (size_t)got;
    return 0;
}

static int give(struct kh_lines *l, struct kh_line *line, const char *p, size_t len, bool last)
{
    if (len > 0 && p[len - 1] == '\r')
        len--;
    *line = (struct kh_line){.p = p, .len = len, .number = ++l->number, .last = last};
    return 1;
}

/* In a too long line: drops bytes up to its "\n". 1 when the line ended (handed out). */
static int skip_long(struct kh_lines *l, struct kh_line *line)
{
    char *nl = memchr(l->buf + l->start, '\n', l->end - l->start);
    size_t n = nl ? (size_t)(nl - (l->buf + l->start)) : l->end - l->start;
    l->skip_len += n;
    l->start += nl ? n + 1 : n;
    l->scanned = l->start;
    if (!nl && !l->eof)
        return 0;
    l->skipping = false;
    *line = (struct kh_line){.len = l->skip_len, .number = ++l->number, .too_long = true,
                             .last = nl == NULL};
    return 1;
}

int kh_lines_next(struct kh_lines *l, struct kh_line *line, const char **err)
{
    for (;;) {
        if (l->rc != 0) {
            *err = l->err;
            return l->rc;
        }
        if (l->skipping) {
            if (skip_long(l, line))
                return 1;
        } else {
            char *nl = memchr(l->buf + l->scanned, '\n', l->end - l->scanned);
            if (nl) {
                const char *p = l->buf + l->start;
                size_t n = (size_t)(nl - p);
                l->start = l->scanned = (size_t)(nl - l->buf) + 1;
                if (n > l->max_line) {
                    *line = (struct kh_line){.len = n, .number = ++l->number, .too_long = true};
                    return 1;
                }
                return give(l, line, p, n, false);
            }
            l->scanned = l->end;
            if (l->end - l->start > l->max_line) {
                l->skipping = true;
                l->skip_len = 0;
                continue;
            }
            if (l->eof) {
                if (l->start == l->end)
                    return 0;
                const char *p = l->buf + l->start;
                size_t n = l->end - l->start;
                l->start = l->scanned = l->end;
                return give(l, line, p, n, true);
            }
        }
        if (l->eof)
            return 0;
        if (fill(l) != 0) {
            *err = l->err;
            return l->rc;
        }
    }
}

static int open_fd(struct kh_lines *l, const char *path)
{
    if (strcmp(path, "-") == 0) {
        l->fd = STDIN_FILENO;
        return 0;
    }
    l->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (l->fd < 0)
        return fail(l, KH_EIO, strerror(errno), NULL);
    l->own_fd = true;
    struct stat st;
    if (fstat(l->fd, &st) == 0 && S_ISDIR(st.st_mode))
        return fail(l, KH_EIO, "is a directory", NULL);
    return 0;
}

int kh_lines_open(struct kh_lines **out, const char *path, size_t max_line, const char **err)
{
    *out = NULL;
    struct kh_lines *l = calloc(1, sizeof(*l));
    if (l == NULL)
        goto fail_alloc;
    l->fd = -1;
    l->max_line = max_line;
    l->max_cap = max_line + 1 + CHUNK;
    l->cap = 2 * CHUNK < l->max_cap ? 2 * CHUNK : l->max_cap;
    l->name = strdup(strcmp(path, "-") == 0 ? "(stdin)" : path);
    l->in = malloc(CHUNK);
    l->buf = malloc(l->cap);
    if (l->name == NULL || l->in == NULL || l->buf == NULL)
        goto fail_alloc;
    struct stat st;
    if (open_fd(l, path) != 0 || sniff(l) != 0) {
        int rc = l->rc;
        *err = kh_errf("%s", l->err); /* l->err goes with l */
        kh_lines_close(l);
        return rc;
    }
    l->size = fstat(l->fd, &st) == 0 && S_ISREG(st.st_mode) ? (int64_t)st.st_size : -1;
    *out = l;
    return 0;
fail_alloc:
    *err = "out of memory";
    kh_lines_close(l);
    return KH_ENOMEM;
}

uint64_t kh_lines_offset(const struct kh_lines *l) { return l->offset; }

int64_t kh_lines_size(const struct kh_lines *l) { return l->size; }

bool kh_lines_gzip(const struct kh_lines *l) { return l->gz; }

void kh_lines_close(struct kh_lines *l)
{
    if (l == NULL)
        return;
    if (l->z_open)
        inflateEnd(&l->z);
    if (l->own_fd)
        close(l->fd);
    free(l->name);
    free(l->in);
    free(l->buf);
    free(l);
}
