/*
 * Unit tests of src/core/lines.c: lines and their numbers (CRLF, a last line without "\n",
 * blank lines, lines across the reader's chunks), a line over max_line handed out as too
 * long with its length and the next one intact, gzip told by its magic bytes (one member,
 * several members, a stream cut short: the lines before it, then the error), and a file
 * that is not there. Files are made under /tmp/import-unit-* and removed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include <cmocka.h>

#include "core/errors.h"
#include "core/lines.h"

static char *temp_file(const void *data, size_t len)
{
    char *path = strdup("/tmp/import-unit-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    close(fd);
    return path;
}

static void done_with(char *path)
{
    unlink(path);
    free(path);
}

/* gzip of data in `members` members (the pieces of data, split evenly). */
static unsigned char *gzip(const char *data, size_t len, int members, size_t *out_len)
{
    size_t cap = len + 1024 * (size_t)members + 64, at = 0;
    unsigned char *out = malloc(cap);
    for (int m = 0; m < members; m++) {
        size_t from = len * (size_t)m / (size_t)members;
        size_t to = len * (size_t)(m + 1) / (size_t)members;
        z_stream z = {0};
        assert_int_equal(deflateInit2(&z, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY),
                         Z_OK);
        z.next_in = (unsigned char *)data + from;
        z.avail_in = (uInt)(to - from);
        z.next_out = out + at;
        z.avail_out = (uInt)(cap - at);
        assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
        at = cap - z.avail_out;
        deflateEnd(&z);
    }
    *out_len = at;
    return out;
}

/* Reads every line of path; returns them joined with "|" (too long lines as "<N>"), and
 * the result of the last call. */
static char *read_all(const char *path, size_t max_line, int *last_rc, uint64_t *nlines)
{
    struct kh_lines *l;
    const char *err = NULL;
    assert_int_equal(kh_lines_open(&l, path, max_line, &err), 0);
    size_t cap = 1 << 20, len = 0;
    char *out = calloc(1, cap);
    struct kh_line ln;
    int rc;
    uint64_t n = 0;
    while ((rc = kh_lines_next(l, &ln, &err)) == 1) {
        assert_int_equal(ln.number, ++n);
        char piece[64];
        const char *p = ln.p;
        size_t plen = ln.len;
        if (ln.too_long) {
            plen = (size_t)snprintf(piece, sizeof(piece), "<%zu>", ln.len);
            p = piece;
        }
        if (len + plen + 2 < cap) {
            memcpy(out + len, p, plen);
            len += plen;
            out[len++] = '|';
        }
    }
    *last_rc = rc;
    *nlines = n;
    kh_lines_close(l);
    return out;
}

static void test_lines_plain(void **state)
{
    (void)state;
    const char text[] = "one\r\ntwo\n\n  \nlast without newline";
    char *path = temp_file(text, strlen(text));
    int rc;
    uint64_t n;
    char *got = read_all(path, 100, &rc, &n);
    assert_int_equal(rc, 0);
    assert_int_equal(n, 5);
    assert_string_equal(got, "one|two||  |last without newline|");
    free(got);
    done_with(path);
    /* an empty file has no line */
    path = temp_file("", 0);
    got = read_all(path, 100, &rc, &n);
    assert_int_equal(n, 0);
    assert_int_equal(rc, 0);
    free(got);
    done_with(path);
}

static void test_lines_too_long(void **state)
{
    (void)state;
    /* max_line 10: 10 bytes pass, 11 do not; a long one past several chunks too */
    size_t big = 3u << 20;
    char *text = malloc(big + 64);
    size_t len = (size_t)sprintf(text, "0123456789\n0123456789a\nok\n");
    memset(text + len, 'x', big);
    len += big;
    len += (size_t)sprintf(text + len, "\nafter\n%s", "tail-long-line");
    char *path = temp_file(text, len);
    int rc;
    uint64_t n;
    char *got = read_all(path, 10, &rc, &n);
    assert_int_equal(rc, 0);
    assert_int_equal(n, 6);
    char want[128];
    snprintf(want, sizeof(want), "0123456789|<11>|ok|<%zu>|after|<14>|", big);
    assert_string_equal(got, want);
    free(got);
    free(text);
    done_with(path);
}

/* Lines of every length around the reader's chunk (256 KiB) come back whole. */
static void test_lines_across_chunks(void **state)
{
    (void)state;
    size_t cap = 8u << 20, len = 0;
    char *text = malloc(cap);
    size_t sizes[] = {1, 262143, 262144, 262145, 7, 524288, 3, 100000, 0, 262140};
    size_t nsizes = sizeof(sizes) / sizeof(sizes[0]);
    for (size_t i = 0; i < nsizes; i++) {
        memset(text + len, 'a' + (int)i, sizes[i]);
        len += sizes[i];
        text[len++] = '\n';
    }
    char *path = temp_file(text, len);
    struct kh_lines *l;
    const char *err;
    assert_int_equal(kh_lines_open(&l, path, 1u << 20, &err), 0);
    assert_false(kh_lines_gzip(l));
    assert_int_equal(kh_lines_size(l), (int64_t)len);
    struct kh_line ln;
    for (size_t i = 0; i < nsizes; i++) {
        assert_int_equal(kh_lines_next(l, &ln, &err), 1);
        assert_int_equal(ln.len, sizes[i]);
        for (size_t k = 0; k < ln.len; k++)
            if (ln.p[k] != 'a' + (int)i)
                fail_msg("line %zu byte %zu", i, k);
    }
    assert_int_equal(kh_lines_next(l, &ln, &err), 0);
    assert_int_equal(kh_lines_next(l, &ln, &err), 0);
    assert_int_equal(kh_lines_offset(l), len);
    kh_lines_close(l);
    free(text);
    done_with(path);
}

static char *numbered_lines(size_t count, size_t *len)
{
    char *text = malloc(count * 40 + 1);
    *len = 0;
    for (size_t i = 1; i <= count; i++)
        *len += (size_t)sprintf(text + *len, "{\"line\": %zu, \"pad\": \"%zu\"}\n", i, i * 7);
    return text;
}

static void check_numbered(const char *path, size_t count)
{
    struct kh_lines *l;
    const char *err;
    assert_int_equal(kh_lines_open(&l, path, 1000, &err), 0);
    assert_true(kh_lines_gzip(l));
    struct kh_line ln;
    char want[64];
    for (size_t i = 1; i <= count; i++) {
        assert_int_equal(kh_lines_next(l, &ln, &err), 1);
        int n = snprintf(want, sizeof(want), "{\"line\": %zu, \"pad\": \"%zu\"}", i, i * 7);
        assert_int_equal(ln.len, (size_t)n);
        assert_memory_equal(ln.p, want, ln.len);
    }
    assert_int_equal(kh_lines_next(l, &ln, &err), 0);
    kh_lines_close(l);
}

static void test_lines_gzip(void **state)
{
    (void)state;
    size_t len, zlen;
    char *text = numbered_lines(100000, &len);
    for (int members = 1; members <= 3; members++) {
        unsigned char *z = gzip(text, len, members, &zlen);
        char *path = temp_file(z, zlen);
        check_numbered(path, 100000);
        done_with(path);
        free(z);
    }
    free(text);
}

/* A .gz cut in the middle: the lines that came out stand, then the error names it. */
static void test_lines_gzip_cut(void **state)
{
    (void)state;
    size_t len, zlen;
    char *text = numbered_lines(50000, &len);
    unsigned char *z = gzip(text, len, 1, &zlen);
    char *path = temp_file(z, zlen / 2);
    struct kh_lines *l;
    const char *err = NULL;
    assert_int_equal(kh_lines_open(&l, path, 1000, &err), 0);
    struct kh_line ln;
    int rc;
    uint64_t n = 0;
    while ((rc = kh_lines_next(l, &ln, &err)) == 1)
        n++;
    assert_int_equal(rc, KH_EIO);
    assert_true(n > 1000 && n < 50000);
    assert_non_null(strstr(err, "gzip: the file ends inside a compressed stream"));
    assert_non_null(strstr(err, path));
    assert_int_equal(kh_lines_next(l, &ln, &err), KH_EIO); /* and it stays so */
    kh_lines_close(l);
    done_with(path);
    /* damaged bytes in the middle */
    z[zlen / 2] ^= 0xff;
    z[zlen / 2 + 1] ^= 0x55;
    path = temp_file(z, zlen);
    assert_int_equal(kh_lines_open(&l, path, 1000, &err), 0);
    while ((rc = kh_lines_next(l, &ln, &err)) == 1)
        ;
    assert_int_equal(rc, KH_EIO);
    assert_non_null(strstr(err, "gzip: "));
    kh_lines_close(l);
    done_with(path);
    free(z);
    free(text);
}

static void test_lines_missing(void **state)
{
    (void)state;
    struct kh_lines *l = (void *)1;
    const char *err = NULL;
    assert_int_equal(kh_lines_open(&l, "/tmp/import-unit-no-such-file", 10, &err), KH_EIO);
    assert_null(l);
    assert_string_equal(err, "/tmp/import-unit-no-such-file: No such file or directory");
    assert_int_equal(kh_lines_open(&l, "/tmp", 10, &err), KH_EIO);
    assert_string_equal(err, "/tmp: is a directory");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lines_plain),
        cmocka_unit_test(test_lines_too_long),
        cmocka_unit_test(test_lines_across_chunks),
        cmocka_unit_test(test_lines_gzip),
        cmocka_unit_test(test_lines_gzip_cut),
        cmocka_unit_test(test_lines_missing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
