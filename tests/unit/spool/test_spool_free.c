/*
 * kh_spool_free with appends still gathered or out: every one is written, synced and called
 * back once before it returns, without a turn of the loop (with spool_fsync = batch, where
 * each completion sends the next group, and with interval, where the group waits for a
 * timer), and the next open finds them all.
 */
#include <event2/event.h>
#include <event2/thread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/config.h"
#include "core/errors.h"
#include "core/log.h"
#include "spool/spool.h"

#define NREC 50

struct fixture {
    char dir[128];
    struct kh_config cfg;
    int acks[NREC];
    int calls[NREC];
};

static struct fixture *cur;

static void on_ack(void *arg, int result)
{
    int i = (int)(intptr_t)arg;
    cur->acks[i] = result;
    cur->calls[i]++;
}

static int never_replay(void *arg, const struct kh_spool_meta *m, const uint8_t *body,
                        size_t len, kh_spool_done_cb done, void *ctx, const char **why)
{
    return KH_ERETRY; /* storage is down: everything stays on disk */
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/kohaku-spool-free-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    assert_int_equal(kh_config_init(&f->cfg), 0);
    const char *err = NULL;
    assert_int_equal(kh_config_set(&f->cfg, "spool_dir", f->dir, &err), 0);
    cur = f;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    kh_config_cleanup(&f->cfg);
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

static void append_and_free(struct fixture *f)
{
    const char *err = "";
    struct kh_spool *sp = kh_spool_open(&f->cfg, &err);
    if (sp == NULL)
        fail_msg("open: %s", err);
    struct event_base *base = event_base_new();
    assert_non_null(base);
    assert_int_equal(kh_spool_start(sp, base, never_replay, NULL), 0);
    struct kh_spool_meta m = {.received_usec = 1};
    for (int i = 0; i < NREC; i++) {
        char body[32];
        snprintf(body, sizeof(body), "rec-%d", i);
        f->acks[i] = -100;
        assert_int_equal(
            kh_spool_append(sp, &m, body, strlen(body), on_ack, (void *)(intptr_t)i), 0);
    }
    assert_int_equal(kh_spool_pending(sp), NREC);
    kh_spool_free(sp); /* the loop never ran */
    for (int i = 0; i < NREC; i++) {
        assert_int_equal(f->calls[i], 1);
        assert_int_equal(f->acks[i], 0);
    }
    event_base_free(base);
    /* all durable: the next open finds them */
    sp = kh_spool_open(&f->cfg, &err);
    assert_non_null(sp);
    uint64_t segs, waiting;
    kh_spool_gauges(sp, &segs, &waiting);
    assert_int_equal(waiting, NREC);
    kh_spool_free(sp);
}

static void free_writes_groups_in_batch_mode(void **state)
{
    append_and_free(*state);
}

static void free_writes_the_group_an_interval_holds(void **state)
{
    struct fixture *f = *state;
    const char *err = NULL;
    assert_int_equal(kh_config_set(&f->cfg, "spool_fsync", "interval", &err), 0);
    assert_int_equal(
        kh_config_set(&f->cfg, "spool_fsync_interval_ms", "10000", &err), 0);
    append_and_free(f);
}

int main(void)
{
    evthread_use_pthreads();
    kh_log_set_level(KH_LOG_ERROR + 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(free_writes_groups_in_batch_mode, setup, teardown),
        cmocka_unit_test_setup_teardown(free_writes_the_group_an_interval_holds, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
