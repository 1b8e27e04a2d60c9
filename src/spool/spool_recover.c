/*
 * spool_recover: the start-up scan of spool_dir, before the I/O thread and the drainer run.
 * Every segment is read record by record; the first record whose length or CRC does not
 * check out ends the file, which is cut there (a torn tail from a crash mid-write was never
 * acknowledged: its group had not been synced). A file whose header does not check out is
 * renamed to *.corrupt and left for an operator: kohaku never deletes what it cannot read.
 * Only files with no record left (or a header never synced) are deleted here.
 *
 * It fills the segment list and the counters, and the I/O thread's next sequence number.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/errors.h"
#include "core/log.h"
#include "core/metrics.h"
#include "spool/spool_internal.h"

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* NNNNNNNNNNNNNNNNNNNN.spool, 20 digits, above 0. */
static bool parse_name(const char *name, uint64_t *seq)
{
    size_t n = strlen(name);
    if (n != 26 || strcmp(name + 20, ".spool") != 0)
        return false;
    uint64_t v = 0;
    for (int i = 0; i < 20; i++) {
        if (name[i] < '0' || name[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(name[i] - '0');
    }
    *seq = v;
    return v > 0;
}

static void set_corrupt_aside(struct kh_spool *sp, const char *name)
{
    char to[96];
    snprintf(to, sizeof(to), "%s.corrupt", name);
    if (renameat(sp->dirfd, name, sp->dirfd, to) != 0)
        kh_spool_log_errno("spool: cannot rename an unreadable segment", name, errno);
    struct kh_logline l;
    if (kh_log_begin(&l, KH_LOG_ERROR, "spool: segment header unreadable; set aside")) {
        kh_log_str(&l, "dir", sp->dir);
        kh_log_str(&l, "file", to);
        kh_log_end(&l);
    }
}

/* false when the file has no readable header; it is then deleted (too short to have been
 * synced with one: nothing in it was acknowledged) or set aside. */
static bool check_header(struct kh_spool *sp, int fd, const char *name, uint64_t size)
{
    uint8_t hdr[KH_SPOOL_FILE_HEADER];
    if (size < KH_SPOOL_FILE_HEADER) {
        unlinkat(sp->dirfd, name, 0);
        return false;
    }
    if (pread(fd, hdr, sizeof(hdr), 0) != (ssize_t)sizeof(hdr) ||
        !kh_spool_check_file_header(hdr, sizeof(hdr))) {
        set_corrupt_aside(sp, name);
        return false;
    }
    return true;
}

/* Counts the records that check out from the header on; *end is where the last one ends. */
static enum kh_spool_check scan_records(int fd, uint64_t size, uint64_t *end,
                                        uint64_t *records, int *ioerr)
{
    struct kh_spool_reader rd = {0};
    kh_spool_reader_reset(&rd, fd);
    uint64_t pos = KH_SPOOL_FILE_HEADER, n = 0;
    enum kh_spool_check c = KH_SPOOL_REC_OK;
    *ioerr = 0;
    while (pos < size) {
        struct kh_spool_meta m;
        const uint8_t *body;
        size_t blen, rlen;
        c = kh_spool_reader_record(&rd, pos, size, &m, &body, &blen, &rlen, ioerr);
        if (c != KH_SPOOL_REC_OK)
            break;
        pos += rlen;
        n++;
    }
    free(rd.buf);
    *end = pos;
    *records = n;
    return c;
}

static void log_cut(const char *name, bool last, enum kh_spool_check c, uint64_t pos,
                    uint64_t size, uint64_t records)
{
    struct kh_logline l;
    if (kh_log_begin(&l, last ? KH_LOG_WARN : KH_LOG_ERROR,
                     last ? "spool: cut a torn tail (a write a crash interrupted; it was "
                            "never acknowledged)"
                          : "spool: cut a corrupt record and what follows it")) {
        kh_log_str(&l, "file", name);
        kh_log_int(&l, "offset", (int64_t)pos);
        kh_log_int(&l, "bytes_cut", (int64_t)(size - pos));
        kh_log_str(&l, "reason", c == KH_SPOOL_REC_BAD ? "bad length or checksum"
                                                        : "record cut short");
        kh_log_int(&l, "records_kept", (int64_t)records);
        kh_log_end(&l);
    }
}

/* Scans one segment, cuts a bad tail, and adds it to the list. 0 or -1 (I/O error). */
static int recover_segment(struct kh_spool *sp, uint64_t seq, bool last, const char **err)
{
    char name[64];
    kh_spool_seg_name(name, sizeof(name), seq);
    int fd = openat(sp->dirfd, name, O_RDWR | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        *err = kh_errf("spool_dir: %s/%s: %s", sp->dir, name, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    uint64_t size = (uint64_t)st.st_size, pos, records;
    int ioerr;
    if (!check_header(sp, fd, name, size)) {
        close(fd);
        return 0;
    }
    enum kh_spool_check c = scan_records(fd, size, &pos, &records, &ioerr);
    if (ioerr) {
        *err = kh_errf("spool_dir: %s/%s: %s", sp->dir, name, strerror(ioerr));
        close(fd);
        return -1;
    }
    if (pos < size) {
        log_cut(name, last, c, pos, size, records);
        if (ftruncate(fd, (off_t)pos) != 0 || fsync(fd) != 0) {
            *err = kh_errf("spool_dir: cutting %s/%s: %s", sp->dir, name,
                     strerror(errno));
            close(fd);
            return -1;
        }
        kh_metrics.spool_tails_cut++;
    }
    close(fd);
    if (records == 0) {
        unlinkat(sp->dirfd, name, 0);
        return 0;
    }
    if (kh_spool_seg_add(sp, seq, pos, records, true) == NULL) {
        *err = "spool: out of memory";
        return -1;
    }
    return 0;
}

/* The sequence numbers of the segment files, sorted. 0, or -1 with err set. */
static int list_segments(struct kh_spool *sp, uint64_t **out, size_t *count, const char **err)
{
    int fd = dup(sp->dirfd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (d == NULL) {
        *err = kh_errf("spool_dir: %s: %s", sp->dir, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    uint64_t *seqs = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    int rc = 0;
    while ((de = readdir(d)) != NULL) {
        uint64_t seq;
        if (!parse_name(de->d_name, &seq))
            continue;
        if (n == cap) {
            uint64_t *ns = kh_grow(seqs, &cap, 64, sizeof(*ns));
            if (ns == NULL) {
                *err = "spool: out of memory";
                rc = -1;
                break;
            }
            seqs = ns;
        }
        seqs[n++] = seq;
    }
    closedir(d);
    if (rc != 0) {
        free(seqs);
        return rc;
    }
    if (n > 0)
        qsort(seqs, n, sizeof(*seqs), cmp_u64);
    *out = seqs;
    *count = n;
    return 0;
}

int kh_spool_recover(struct kh_spool *sp, const char **err)
{
    uint64_t *seqs = NULL;
    size_t n = 0;
    if (list_segments(sp, &seqs, &n, err) != 0)
        return -1;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = recover_segment(sp, seqs[i], i + 1 == n, err);
    /* above every name seen, a file set aside included */
    sp->file.next_seq = n ? seqs[n - 1] + 1 : 1;
    free(seqs);
    return rc;
}
