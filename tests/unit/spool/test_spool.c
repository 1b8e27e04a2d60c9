/*
 * The spool: record framing, group-committed appends, in-order replay with rewinds after a
 * failed replay, segment deletion only after everything in it settled, recovery that cuts a
 * torn or corrupt tail, the size limit and the directory lock. Real files in a temporary
 * directory and a real libevent loop; the replay function is a test double that records
 * what it is given and settles it when the test says so.
 */
#include <dirent.h>
#include <errno.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/config.h"
#include "core/errors.h"
#include "core/log.h"
#include "spool/spool.h"
#include "spool/spool_format.h"

/* --- format --------------------------------------------------------------------------- */

static size_t encode(uint8_t *out, const char *body, int64_t usec)
{
    struct kh_spool_meta m = {.flavor = 1, .kind = 0, .received_usec = usec};
    size_t len = strlen(body);
    kh_spool_encode(out, &m, body, len);
    memcpy(out + KH_SPOOL_REC_HEADER + KH_SPOOL_META, body, len);
    return kh_spool_record_size(len);
}

static void format_round_trip(void **state)
{
    (void)state;
    uint8_t buf[256];
    size_t n = encode(buf, "{\"a\":1}", 1795500198544297);
    struct kh_spool_meta m;
    const uint8_t *body;
    size_t blen, rlen;
    assert_int_equal(kh_spool_decode(buf, n, &m, &body, &blen, &rlen), KH_SPOOL_REC_OK);
    assert_int_equal(rlen, n);
    assert_int_equal(blen, 7);
    assert_memory_equal(body, "{\"a\":1}", 7);
    assert_int_equal(m.flavor, 1);
    assert_int_equal(m.kind, 0);
    assert_true(m.received_usec == 1795500198544297);
    /* every shorter prefix is "short", never a record */
    for (size_t i = 0; i < n; i++)
        assert_int_equal(kh_spool_decode(buf, i, &m, &body, &blen, &rlen), KH_SPOOL_REC_SHORT);
}

static void format_detects_damage(void **state)
{
    (void)state;
    uint8_t buf[256], bad[256];
    size_t n = encode(buf, "{\"report\":\"x\"}", 42);
    struct kh_spool_meta m;
    const uint8_t *body;
    size_t blen, rlen;
    /* any single flipped bit anywhere in the record is caught */
    for (size_t i = 0; i < n; i++)
        for (int bit = 0; bit < 8; bit++) {
            memcpy(bad, buf, n);
            bad[i] ^= (uint8_t)(1u << bit);
            enum kh_spool_check c = kh_spool_decode(bad, n, &m, &body, &blen, &rlen);
            assert_int_not_equal(c, KH_SPOOL_REC_OK);
        }
    /* a zero-filled tail (file extended, data never written) is not a record */
    memset(bad, 0, sizeof(bad));
    assert_int_equal(kh_spool_decode(bad, sizeof(bad), &m, &body, &blen, &rlen),
                     KH_SPOOL_REC_BAD);
    uint8_t hdr[KH_SPOOL_FILE_HEADER];
    kh_spool_file_header(hdr);
    assert_true(kh_spool_check_file_header(hdr, sizeof(hdr)));
    hdr[3] ^= 1;
    assert_false(kh_spool_check_file_header(hdr, sizeof(hdr)));
}

/* --- the spool with a loop -------------------------------------------------------------- */

#define MAXREC 256

struct replayed {
    kh_spool_done_cb done;
    void *ctx;
    char body[64];
};

struct fixture {
    char dir[128];
    struct kh_config cfg;
    struct event_base *base;
    struct kh_spool *sp;
    int storage_up;        /* replay answers KH_ERETRY while 0 */
    struct replayed q[MAXREC * 4];
    size_t nq;             /* replays handed over */
    size_t nsettled;       /* of those, settled by the test */
    int acks[MAXREC];      /* append results, -100 = not yet */
    size_t nacks;
};

static int replay(void *arg, const struct kh_spool_meta *m, const uint8_t *body, size_t len,
                  kh_spool_done_cb done, void *ctx, const char **why)
{
    struct fixture *f = arg;
    (void)m;
    if (!f->storage_up)
        return KH_ERETRY;
    if (len >= 6 && memcmp(body, "poison", 6) == 0) {
        *why = "test: never storable";
        return KH_EINVAL;
    }
    assert_true(f->nq < sizeof(f->q) / sizeof(f->q[0]));
    struct replayed *r = &f->q[f->nq++];
    r->done = done;
    r->ctx = ctx;
    snprintf(r->body, sizeof(r->body), "%.*s", (int)len, (const char *)body);
    return 0;
}

static void on_ack(void *arg, int result)
{
    int *slot = arg;
    *slot = result;
}

static int spool_files(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t l = strlen(de->d_name);
        if (l > 6 && strcmp(de->d_name + l - 6, ".spool") == 0)
            n++;
    }
    closedir(d);
    return n;
}

/* Runs the loop until cond(f) or 5 s. */
static void run_until(struct fixture *f, bool (*cond)(struct fixture *))
{
    for (int i = 0; i < 5000 && !cond(f); i++) {
        event_base_loop(f->base, EVLOOP_NONBLOCK);
        if (!cond(f))
            usleep(1000);
    }
    assert_true(cond(f));
}

static bool all_acked(struct fixture *f)
{
    for (size_t i = 0; i < f->nacks; i++)
        if (f->acks[i] == -100)
            return false;
    return true;
}

static size_t want_nq;
static bool has_nq(struct fixture *f) { return f->nq >= want_nq; }
static bool no_files(struct fixture *f) { return spool_files(f->dir) == 0; }

static void open_spool(struct fixture *f)
{
    const char *err = "";
    f->sp = kh_spool_open(&f->cfg, &err);
    if (f->sp == NULL)
        fail_msg("open: %s", err);
    f->base = event_base_new();
    assert_non_null(f->base);
    assert_int_equal(kh_spool_start(f->sp, f->base, replay, f), 0);
}

static void close_spool(struct fixture *f)
{
    kh_spool_free(f->sp);
    f->sp = NULL;
    event_base_free(f->base);
    f->base = NULL;
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/kohaku-spool-test-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    assert_int_equal(kh_config_init(&f->cfg), 0);
    const char *err = NULL;
    assert_int_equal(kh_config_set(&f->cfg, "spool_dir", f->dir, &err), 0);
    assert_int_equal(kh_config_set(&f->cfg, "spool_backlog_reports", "16", &err), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    if (f->sp)
        close_spool(f);
    kh_config_cleanup(&f->cfg);
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

static void append(struct fixture *f, const char *body)
{
    struct kh_spool_meta m = {.flavor = 0, .kind = 0, .received_usec = 1};
    assert_true(f->nacks < MAXREC);
    f->acks[f->nacks] = -100;
    assert_int_equal(kh_spool_append(f->sp, &m, body, strlen(body), on_ack,
                                     &f->acks[f->nacks]), 0);
    f->nacks++;
}

static void settle(struct fixture *f, size_t i, int result)
{
    f->q[i].done(f->q[i].ctx, result, result ? "test failure" : NULL);
    f->nsettled++;
}

static void appends_are_acked_then_replayed_in_order_and_deleted(void **state)
{
    struct fixture *f = *state;
    open_spool(f);
    f->storage_up = 0;
    char body[32];
    for (int i = 0; i < 40; i++) {
        snprintf(body, sizeof(body), "report-%02d", i);
        append(f, body);
    }
    run_until(f, all_acked);
    for (size_t i = 0; i < f->nacks; i++)
        assert_int_equal(f->acks[i], 0);
    assert_int_equal(spool_files(f->dir), 1);
    uint64_t segs, waiting;
    kh_spool_gauges(f->sp, &segs, &waiting);
    assert_int_equal(waiting, 40);
    /* storage comes back: replays go out in order, at most spool_backlog_reports / 2 at once */
    f->storage_up = 1;
    want_nq = 8;
    run_until(f, has_nq);
    for (int k = 0; k < 20; k++)
        event_base_loop(f->base, EVLOOP_NONBLOCK);
    assert_int_equal(f->nq, 8);
    for (size_t i = 0; i < 40; i++) {
        want_nq = i + 1;
        run_until(f, has_nq);
        snprintf(body, sizeof(body), "report-%02zu", i);
        assert_string_equal(f->q[i].body, body);
        settle(f, i, 0);
    }
    run_until(f, no_files);
    kh_spool_gauges(f->sp, &segs, &waiting);
    assert_int_equal(waiting, 0);
    assert_int_equal(segs, 0);
}

static void failed_replay_rewinds_and_nothing_is_skipped(void **state)
{
    struct fixture *f = *state;
    open_spool(f);
    f->storage_up = 0;
    for (int i = 0; i < 5; i++) {
        char body[32];
        snprintf(body, sizeof(body), "r%d", i);
        append(f, body);
    }
    run_until(f, all_acked);
    f->storage_up = 1;
    want_nq = 5;
    run_until(f, has_nq);
    settle(f, 0, 0);
    settle(f, 1, KH_ERETRY); /* storage failed on r1 */
    settle(f, 2, 0);
    settle(f, 3, 0);
    settle(f, 4, 0);
    /* the drainer starts over from the oldest segment: r0..r4 again */
    want_nq = 10;
    run_until(f, has_nq);
    for (int i = 0; i < 5; i++) {
        char body[32];
        snprintf(body, sizeof(body), "r%d", i);
        assert_string_equal(f->q[5 + i].body, body);
    }
    assert_int_equal(spool_files(f->dir), 1); /* nothing deleted while r1 was unsettled */
    for (size_t i = 5; i < 10; i++)
        settle(f, i, 0);
    run_until(f, no_files);
}

static void unstorable_records_are_dropped_not_retried_forever(void **state)
{
    struct fixture *f = *state;
    open_spool(f);
    f->storage_up = 0;
    append(f, "good-1");
    append(f, "poison");
    append(f, "good-2");
    run_until(f, all_acked);
    f->storage_up = 1;
    want_nq = 2;
    run_until(f, has_nq);
    assert_string_equal(f->q[0].body, "good-1");
    assert_string_equal(f->q[1].body, "good-2");
    settle(f, 0, 0);
    settle(f, 1, KH_EREJECT); /* refused by storage as bad data: dropped too */
    run_until(f, no_files);
}

/* Writes n records through a spool whose storage stays down, then closes it. */
static void fill_and_close(struct fixture *f, int n)
{
    open_spool(f);
    f->storage_up = 0;
    for (int i = 0; i < n; i++) {
        char body[32];
        snprintf(body, sizeof(body), "rec-%d-%s", i, "payload");
        append(f, body);
    }
    run_until(f, all_acked);
    close_spool(f);
    assert_int_equal(spool_files(f->dir), 1);
}

static char *only_segment(struct fixture *f)
{
    static char path[256];
    DIR *d = opendir(f->dir);
    struct dirent *de;
    path[0] = '\0';
    while ((de = readdir(d)) != NULL)
        if (strstr(de->d_name, ".spool") && !strstr(de->d_name, ".corrupt"))
            snprintf(path, sizeof(path), "%.100s/%.100s", f->dir, de->d_name);
    closedir(d);
    assert_true(path[0] != '\0');
    return path;
}

static void replay_all_after_reopen(struct fixture *f, int expect)
{
    f->nq = f->nsettled = 0;
    open_spool(f);
    uint64_t segs, waiting;
    kh_spool_gauges(f->sp, &segs, &waiting);
    assert_int_equal(waiting, expect);
    f->storage_up = 1;
    for (int i = 0; i < expect; i++) {
        want_nq = (size_t)i + 1;
        run_until(f, has_nq);
        char body[32];
        snprintf(body, sizeof(body), "rec-%d-%s", i, "payload");
        assert_string_equal(f->q[i].body, body);
        settle(f, (size_t)i, 0);
    }
    run_until(f, no_files);
    assert_int_equal(f->nq, expect);
}

static void restart_replays_what_is_left(void **state)
{
    struct fixture *f = *state;
    fill_and_close(f, 7);
    replay_all_after_reopen(f, 7);
}

static void torn_tail_is_cut_at_the_last_good_record(void **state)
{
    struct fixture *f = *state;
    fill_and_close(f, 5);
    char *path = only_segment(f);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(truncate(path, st.st_size - 3), 0); /* a crash in the middle of rec-4 */
    replay_all_after_reopen(f, 4);
}

static void corrupt_record_cuts_it_and_what_follows(void **state)
{
    struct fixture *f = *state;
    fill_and_close(f, 5);
    char *path = only_segment(f);
    /* flip one byte inside the body of the third record */
    size_t rec = kh_spool_record_size(strlen("rec-0-payload"));
    off_t at = KH_SPOOL_FILE_HEADER + 2 * (off_t)rec + KH_SPOOL_REC_HEADER + KH_SPOOL_META + 2;
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    uint8_t c;
    assert_int_equal(pread(fd, &c, 1, at), 1);
    c ^= 0x20;
    assert_int_equal(pwrite(fd, &c, 1, at), 1);
    close(fd);
    replay_all_after_reopen(f, 2);
}

static void garbage_after_the_last_record_is_cut(void **state)
{
    struct fixture *f = *state;
    fill_and_close(f, 3);
    char *path = only_segment(f);
    int fd = open(path, O_WRONLY | O_APPEND);
    assert_true(fd >= 0);
    uint8_t zeros[4096] = {0};
    assert_int_equal(write(fd, zeros, sizeof(zeros)), (ssize_t)sizeof(zeros));
    close(fd);
    replay_all_after_reopen(f, 3);
}

static void full_spool_refuses(void **state)
{
    struct fixture *f = *state;
    const char *err = NULL;
    assert_int_equal(kh_config_set(&f->cfg, "spool_max_bytes", "1048576", &err), 0);
    open_spool(f);
    f->storage_up = 0;
    static char body[100001];
    memset(body, 'x', sizeof(body) - 1);
    struct kh_spool_meta m = {0};
    int rc = 0, n = 0;
    static int acks[64];
    while ((rc = kh_spool_append(f->sp, &m, body, sizeof(body) - 1, on_ack, &acks[n])) == 0)
        n++;
    assert_int_equal(rc, KH_ENOSPC);
    assert_int_equal(n, 10); /* 10 x ~100 KB fit in 1 MiB with headers, the 11th does not */
}

static void segments_rotate_and_all_are_deleted_after_draining(void **state)
{
    struct fixture *f = *state;
    const char *err = NULL;
    assert_int_equal(kh_config_set(&f->cfg, "spool_segment_bytes", "65536", &err), 0);
    open_spool(f);
    f->storage_up = 0;
    static char body[20001];
    memset(body, 'y', sizeof(body) - 1);
    for (int i = 0; i < 12; i++) {
        append(f, body);
        run_until(f, all_acked); /* one group per append, so files fill one by one */
    }
    int files = spool_files(f->dir);
    assert_true(files >= 4);
    f->storage_up = 1;
    for (size_t i = 0; i < 12; i++) {
        want_nq = i + 1;
        run_until(f, has_nq);
        settle(f, i, 0);
    }
    run_until(f, no_files);
}

/* --- held records (ack_mode = log) ------------------------------------------------------- */

struct held_slot {
    int result; /* -100 = not yet */
    struct kh_spool_held h;
};
static struct held_slot held[MAXREC];
static size_t nheld;

static void on_held(void *arg, int result, struct kh_spool_held h)
{
    struct held_slot *s = arg;
    s->result = result;
    s->h = h;
}

static void append_held(struct fixture *f, const char *body)
{
    struct kh_spool_meta m = {.flavor = 0, .kind = 0, .received_usec = 1};
    assert_true(nheld < MAXREC);
    held[nheld].result = -100;
    assert_int_equal(kh_spool_append_held(f->sp, &m, body, strlen(body), on_held,
                                          &held[nheld]), 0);
    nheld++;
}

static bool all_held_acked(struct fixture *f)
{
    (void)f;
    for (size_t i = 0; i < nheld; i++)
        if (held[i].result == -100)
            return false;
    return true;
}

static void held_records_are_not_replayed_and_go_once_settled(void **state)
{
    struct fixture *f = *state;
    const char *err = NULL;
    assert_int_equal(kh_config_set(&f->cfg, "spool_segment_bytes", "65536", &err), 0);
    open_spool(f);
    f->storage_up = 1;
    nheld = 0;
    static char body[20001];
    memset(body, 'h', sizeof(body) - 1);
    for (int i = 0; i < 8; i++) {
        append_held(f, body);
        run_until(f, all_held_acked); /* one group per append: several segments */
        assert_int_equal(held[i].result, 0);
    }
    assert_true(spool_files(f->dir) >= 2);
    assert_int_equal(kh_spool_held_out(f->sp), 8);
    uint64_t segs, waiting;
    kh_spool_gauges(f->sp, &segs, &waiting);
    assert_int_equal(waiting, 8);
    for (int k = 0; k < 50; k++)
        event_base_loop(f->base, EVLOOP_NONBLOCK);
    assert_int_equal(f->nq, 0); /* the drainer replays none of them */
    for (size_t i = 0; i < 7; i++)
        kh_spool_settle(f->sp, held[i].h);
    for (int k = 0; k < 50; k++)
        event_base_loop(f->base, EVLOOP_NONBLOCK);
    assert_true(spool_files(f->dir) >= 1); /* the last one's segment stays */
    kh_spool_settle(f->sp, held[7].h);
    run_until(f, no_files);
    assert_int_equal(f->nq, 0);
    assert_int_equal(kh_spool_held_out(f->sp), 0);
}

static void released_held_record_is_replayed_alone(void **state)
{
    struct fixture *f = *state;
    open_spool(f);
    f->storage_up = 1;
    nheld = 0;
    append_held(f, "h0");
    append(f, "spooled-1"); /* a plain spooled record between held ones */
    append_held(f, "h2");
    append_held(f, "h3");
    run_until(f, all_held_acked);
    run_until(f, all_acked);
    /* the spooled one is the drainer's; the held ones are not */
    want_nq = 1;
    run_until(f, has_nq);
    assert_string_equal(f->q[0].body, "spooled-1");
    settle(f, 0, 0);
    kh_spool_settle(f->sp, held[0].h);
    kh_spool_release(f->sp, held[1].h); /* h2 failed to store from memory */
    /* the drainer has passed h2: it goes back and replays h2, and only h2 */
    want_nq = 2;
    run_until(f, has_nq);
    for (int k = 0; k < 50; k++)
        event_base_loop(f->base, EVLOOP_NONBLOCK);
    size_t replays = f->nq;
    bool h2 = false;
    for (size_t i = 1; i < replays; i++) {
        assert_string_not_equal(f->q[i].body, "h0");
        assert_string_not_equal(f->q[i].body, "h3");
        h2 |= strcmp(f->q[i].body, "h2") == 0;
    }
    assert_true(h2);
    for (size_t i = 1; i < replays; i++)
        settle(f, i, 0);
    for (int k = 0; k < 50; k++)
        event_base_loop(f->base, EVLOOP_NONBLOCK);
    assert_int_equal(spool_files(f->dir), 1); /* h3 is still held */
    kh_spool_settle(f->sp, held[2].h);
    run_until(f, no_files);
}

static void held_records_left_at_a_restart_are_replayed(void **state)
{
    struct fixture *f = *state;
    open_spool(f);
    f->storage_up = 1;
    nheld = 0;
    append_held(f, "a");
    append_held(f, "b");
    run_until(f, all_held_acked);
    kh_spool_settle(f->sp, held[0].h); /* a committed, b still in memory: then a crash */
    close_spool(f);
    open_spool(f);
    want_nq = 2; /* both replayed: storage is idempotent */
    run_until(f, has_nq);
    assert_string_equal(f->q[0].body, "a");
    assert_string_equal(f->q[1].body, "b");
    settle(f, 0, 0);
    settle(f, 1, 0);
    run_until(f, no_files);
}

static void second_process_cannot_share_the_directory(void **state)
{
    struct fixture *f = *state;
    open_spool(f);
    const char *err = "";
    /* flock locks belong to the open file description: a second open is refused */
    struct kh_spool *other = kh_spool_open(&f->cfg, &err);
    assert_null(other);
    assert_non_null(strstr(err, "in use by another kohaku process"));
}

static void unreadable_header_is_set_aside_not_deleted(void **state)
{
    struct fixture *f = *state;
    char path[256];
    snprintf(path, sizeof(path), "%s/00000000000000000003.spool", f->dir);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs("this is not a kohaku spool segment", fp);
    fclose(fp);
    open_spool(f);
    char aside[300];
    snprintf(aside, sizeof(aside), "%s.corrupt", path);
    assert_int_equal(access(aside, F_OK), 0);
    assert_int_equal(access(path, F_OK), -1);
    /* new appends go to a later sequence number than the file set aside */
    f->storage_up = 0;
    append(f, "after");
    run_until(f, all_acked);
    char next[256];
    snprintf(next, sizeof(next), "%s/00000000000000000004.spool", f->dir);
    assert_int_equal(access(next, F_OK), 0);
}

int main(void)
{
    evthread_use_pthreads();
    kh_log_set_level(KH_LOG_ERROR + 1); /* quiet: the cases log on purpose */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(format_round_trip),
        cmocka_unit_test(format_detects_damage),
        cmocka_unit_test_setup_teardown(appends_are_acked_then_replayed_in_order_and_deleted,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(failed_replay_rewinds_and_nothing_is_skipped, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(unstorable_records_are_dropped_not_retried_forever,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(restart_replays_what_is_left, setup, teardown),
        cmocka_unit_test_setup_teardown(torn_tail_is_cut_at_the_last_good_record, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(corrupt_record_cuts_it_and_what_follows, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(garbage_after_the_last_record_is_cut, setup, teardown),
        cmocka_unit_test_setup_teardown(full_spool_refuses, setup, teardown),
        cmocka_unit_test_setup_teardown(segments_rotate_and_all_are_deleted_after_draining,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(held_records_are_not_replayed_and_go_once_settled,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(released_held_record_is_replayed_alone, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(held_records_left_at_a_restart_are_replayed, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(second_process_cannot_share_the_directory, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(unreadable_header_is_set_aside_not_deleted, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
