/*
 * Unit tests of the log file the logger owns (src/core/log.c): size-based rotation into
 * NAME-TIME.EXT beside the file, the backups kept (newest first) and deleted by age, whole
 * lines in every file, and a reopen at the same path after the file was moved away.
 */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/log.h"

static char dir[256];

static int setup(void **state)
{
    snprintf(dir, sizeof(dir), "/tmp/kohaku-log-test.XXXXXX");
    assert_non_null(mkdtemp(dir));
    return 0;
}

static int teardown(void **state)
{
    kh_log_to_stdout();
    DIR *d = opendir(dir);
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL) {
        char p[512];
        snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
        if (de->d_name[0] != '.')
            unlink(p);
    }
    if (d)
        closedir(d);
    rmdir(dir);
    return 0;
}

/* Names in dir that look like backups of kohaku.jsonl; returns how many. */
static int backups(char names[][256], int max)
{
    int n = 0;
    DIR *d = opendir(dir);
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (strncmp(de->d_name, "kohaku-", 7) == 0 && strlen(de->d_name) == 6 + 24 + 6 &&
            strcmp(de->d_name + strlen(de->d_name) - 6, ".jsonl") == 0) {
            if (n < max)
                snprintf(names[n], 256, "%s", de->d_name);
            n++;
        }
    closedir(d);
    return n;
}

/* Every line of the file is a whole JSON-lines record; returns the count. */
static int whole_lines(const char *path)
{
    FILE *fp = fopen(path, "r");
    assert_non_null(fp);
    char line[4096];
    int n = 0;
    while (fgets(line, sizeof(line), fp)) {
        size_t len = strlen(line);
        if (strncmp(line, "{\"time\":\"", 9) != 0 || len < 2 || line[len - 2] != '}' ||
            line[len - 1] != '\n')
            fail_msg("%s: not a whole line: %s", path, line);
        n++;
    }
    fclose(fp);
    return n;
}

static void write_lines(int n)
{
    char pad[120];
    memset(pad, 'x', sizeof(pad) - 1);
    pad[sizeof(pad) - 1] = '\0';
    for (int i = 0; i < n; i++)
        kh_log(KH_LOG_INFO, "line", pad);
}

static void test_rotates_by_size_and_keeps_newest(void **state)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/kohaku.jsonl", dir);
    struct kh_log_rotation rot = {.max_bytes = 4096, .max_backups = 2};
    uint64_t before = kh_log_rotations();
    assert_int_equal(kh_log_to_file(path, &rot), 0);
    write_lines(200); /* about 200 x 190 bytes: nine rotations */
    uint64_t rotated = kh_log_rotations() - before;
    assert_true(rotated >= 8);
    char names[8][256];
    assert_int_equal(backups(names, 8), 2);
    int lines = whole_lines(path);
    for (int i = 0; i < 2; i++) {
        char p[4096];
        snprintf(p, sizeof(p), "%s/%s", dir, names[i]);
        struct stat st;
        assert_int_equal(stat(p, &st), 0);
        assert_true(st.st_size >= 4096 && st.st_size < 4096 + 512); /* cut at a line's end */
        lines += whole_lines(p);
    }
    /* the two backups and the live file hold the newest lines: no more than were written */
    assert_true(lines > 0 && lines <= 200);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_true(st.st_size < 4096);
}

static void test_old_backups_deleted_by_age(void **state)
{
    char path[512], old[512], fresh[512], other[512];
    snprintf(path, sizeof(path), "%s/kohaku.jsonl", dir);
    snprintf(old, sizeof(old), "%s/kohaku-2020-01-01T00-00-00.000.jsonl", dir);
    snprintf(fresh, sizeof(fresh), "%s/kohaku-2020-01-02T00-00-00.000.jsonl", dir);
    snprintf(other, sizeof(other), "%s/kohaku-notes.jsonl", dir);
    const char *made[] = {old, fresh, other};
    for (int i = 0; i < 3; i++) {
        FILE *fp = fopen(made[i], "w");
        assert_non_null(fp);
        fputs("{}\n", fp);
        fclose(fp);
    }
    /* `old` was last written 40 days ago; `fresh` just now, whatever its name says */
    struct timeval tv[2] = {{time(NULL) - 40 * 86400, 0}, {time(NULL) - 40 * 86400, 0}};
    assert_int_equal(utimes(old, tv), 0);
    struct kh_log_rotation rot = {.max_bytes = 1024, .max_age_days = 30};
    assert_int_equal(kh_log_to_file(path, &rot), 0);
    write_lines(10);
    assert_int_not_equal(access(old, F_OK), 0);
    assert_int_equal(access(fresh, F_OK), 0);
    assert_int_equal(access(other, F_OK), 0); /* not a backup's name: never touched */
    char names[16][256];
    assert_true(backups(names, 16) >= 2); /* fresh, and the new rotation's */
}

static void test_reopen_after_move_and_no_rotation(void **state)
{
    char path[512], moved[512];
    snprintf(path, sizeof(path), "%s/kohaku.jsonl", dir);
    snprintf(moved, sizeof(moved), "%s/moved.jsonl", dir);
    assert_int_equal(kh_log_to_file(path, NULL), 0); /* no rotation */
    uint64_t before = kh_log_rotations();
    write_lines(100);
    assert_int_equal(kh_log_rotations(), before);
    assert_int_equal(rename(path, moved), 0); /* what logrotate does before its SIGHUP */
    assert_int_equal(kh_log_to_file(path, NULL), 0);
    write_lines(3);
    kh_log_to_stdout();
    assert_int_equal(whole_lines(moved), 100);
    assert_int_equal(whole_lines(path), 3);
    /* a path that cannot be opened leaves the destination as it was */
    char bad[512];
    snprintf(bad, sizeof(bad), "%s/no/such/dir/kohaku.jsonl", dir);
    assert_int_equal(kh_log_to_file(bad, NULL), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_rotates_by_size_and_keeps_newest, setup, teardown),
        cmocka_unit_test_setup_teardown(test_old_backups_deleted_by_age, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reopen_after_move_and_no_rotation, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
