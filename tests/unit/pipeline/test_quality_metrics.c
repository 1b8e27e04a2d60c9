/*
 * Unit tests of src/pipeline/quality_metrics.c: histogram buckets per node with unknown
 * values left out, a redelivered (not newer) report not counted twice, a connection's
 * verdict the worst of its reports, connections leaving the gauge after the window, node
 * names past KH_QM_NODES counted as "other", label values escaped, and no connection id in
 * the output.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/buf.h"
#include "pipeline/quality_metrics.h"

#define SEC 1000000ULL

static struct kh_report *report(const char *conn, const char *node, int64_t t)
{
    struct kh_report *r = kh_report_new(KH_REPORT_CONNECTION, 1 << 20);
    assert_non_null(r);
    r->connection_id = (struct kh_str){conn, (uint32_t)strlen(conn)};
    r->node_name = (struct kh_str){node, (uint32_t)strlen(node)};
    r->time_usec = t;
    return r;
}

static struct kh_quality_note *note(int severity, float loss, float rtt, float mos)
{
    struct kh_quality_note *n = calloc(1, sizeof(*n) + sizeof(n->streams[0]));
    n->severity = (uint8_t)severity;
    n->n = 1;
    n->streams[0].loss_percent = loss;
    n->streams[0].rtt_ms = rtt;
    n->streams[0].mos = mos;
    return n;
}

static char *render(struct kh_qm *m, uint64_t now)
{
    struct kh_buf b;
    kh_buf_init(&b, 16u << 20);
    assert_int_equal(kh_qm_render(m, &b, now), 0);
    assert_int_equal(kh_buf_append(&b, "", 1), 0);
    return b.data;
}

/* The value of one series line (exact name and labels), or -1. */
static double value(const char *text, const char *series)
{
    char want[512];
    snprintf(want, sizeof(want), "\n%s ", series);
    const char *p = strstr(text, want);
    return p ? strtod(p + strlen(want), NULL) : -1;
}

static void observe(struct kh_qm *m, const char *conn, const char *node, int64_t t, int sev,
                    float loss, float rtt, float mos, uint64_t now)
{
    struct kh_report *r = report(conn, node, t);
    struct kh_quality_note *n = note(sev, loss, rtt, mos);
    kh_qm_observe(m, r, n, now);
    free(n);
    kh_report_free(r);
}

static void test_histograms_and_verdicts(void **state)
{
    (void)state;
    struct kh_qm *m = kh_qm_new(300 * SEC);
    uint64_t now = 1000 * SEC;
    observe(m, "AAAA", "sora@a", 1 * SEC, 0, 0.4f, 120, 4.3f, now);
    observe(m, "AAAA", "sora@a", 3 * SEC, 1, 2.5f, 260, NAN, now);
    observe(m, "AAAA", "sora@a", 3 * SEC, 2, 50, 9000, 1, now); /* redelivery: not counted */
    observe(m, "BBBB", "sora@a", 2 * SEC, 2, NAN, NAN, 2.1f, now);
    observe(m, "CCCC", "sora@b", 2 * SEC, 0, 0, 30, 4.4f, now);
    char *t = render(m, now);
    assert_true(value(t, "kohaku_quality_interval_loss_percent_count{node=\"sora@a\"}") == 2);
    assert_true(value(t, "kohaku_quality_interval_loss_percent_bucket{node=\"sora@a\","
                         "le=\"0.5\"}") == 1);
    assert_true(value(t, "kohaku_quality_interval_loss_percent_bucket{node=\"sora@a\","
                         "le=\"3\"}") == 2);
    assert_true(value(t, "kohaku_quality_interval_rtt_ms_bucket{node=\"sora@a\","
                         "le=\"+Inf\"}") == 2);
    assert_true(fabs(value(t, "kohaku_quality_interval_rtt_ms_sum{node=\"sora@a\"}") - 380) <
                1e-9);
    assert_true(value(t, "kohaku_quality_interval_mos_count{node=\"sora@a\"}") == 2);
    assert_true(value(t, "kohaku_quality_interval_mos_bucket{node=\"sora@a\",le=\"2.5\"}") ==
                1);
    /* A's worst is warning (the bad redelivery was not counted), B is bad, C ok */
    assert_true(value(t, "kohaku_quality_connections{node=\"sora@a\",verdict=\"warning\"}") ==
                1);
    assert_true(value(t, "kohaku_quality_connections{node=\"sora@a\",verdict=\"bad\"}") == 1);
    assert_true(value(t, "kohaku_quality_connections{node=\"sora@a\",verdict=\"ok\"}") == 0);
    assert_true(value(t, "kohaku_quality_connections{node=\"sora@b\",verdict=\"ok\"}") == 1);
    assert_null(strstr(t, "AAAA"));
    free(t);
    /* after the window nobody is counted */
    t = render(m, now + 301 * SEC);
    assert_true(value(t, "kohaku_quality_connections{node=\"sora@a\",verdict=\"bad\"}") == 0);
    free(t);
    kh_qm_free(m);
}

static void test_node_names_bounded_and_escaped(void **state)
{
    (void)state;
    struct kh_qm *m = kh_qm_new(300 * SEC);
    char node[64], conn[64];
    for (int i = 0; i < KH_QM_NODES + 10; i++) {
        snprintf(node, sizeof(node), "sora@%d", i);
        snprintf(conn, sizeof(conn), "C%d", i);
        observe(m, conn, node, SEC, 0, 1, 10, 4, SEC);
    }
    observe(m, "QUOTE", "a\"b\\c\nd", SEC, 0, 1, 10, 4, SEC);
    char *t = render(m, SEC);
    assert_true(value(t, "kohaku_quality_interval_loss_percent_count{node=\"other\"}") == 11);
    assert_true(value(t, "kohaku_quality_connections{node=\"other\",verdict=\"ok\"}") == 11);
    assert_null(strstr(t, "sora@64\""));
    assert_non_null(strstr(t, "sora@63\""));
    kh_qm_free(m);
    free(t);
    m = kh_qm_new(300 * SEC);
    observe(m, "QUOTE", "a\"b\\c\nd", SEC, 0, 1, 10, 4, SEC);
    t = render(m, SEC);
    assert_non_null(strstr(t, "{node=\"a\\\"b\\\\c\\nd\"}"));
    free(t);
    kh_qm_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_histograms_and_verdicts),
        cmocka_unit_test(test_node_names_bounded_and_escaped),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
