/*
 * Unit tests of src/core/metrics.c: the label sets handed in (routes, tables), the request
 * counter by route (unknown ones as "other"), protocol and status (unlisted statuses as
 * "other"), histograms with cumulative buckets, the spool block only with a spool, the
 * storage mode gauge, and build_info. Checks the Prometheus text itself.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "core/metrics.h"

static const char *const routes[] = {"collector", "health"};
static const char *const tables[] = {"t_one", "t_two"};

static char *render(void)
{
    static struct kh_buf b;
    kh_buf_cleanup(&b);
    kh_buf_init(&b, 1u << 20);
    assert_int_equal(kh_metrics_render(&b), 0);
    assert_int_equal(kh_buf_append(&b, "", 1), 0);
    return b.data;
}

static void has_line(const char *text, const char *line)
{
    char want[512];
    snprintf(want, sizeof(want), "\n%s\n", line);
    if (strstr(text, want) == NULL)
        fail_msg("missing line '%s' in:\n%s", line, text);
}

static int setup(void **state)
{
    memset(&kh_metrics, 0, sizeof(kh_metrics));
    kh_metrics_set_labels(routes, 2, tables, 2);
    return 0;
}

static void test_requests_by_route_protocol_status(void **state)
{
    kh_metrics_request(0, 2, 204);
    kh_metrics_request(0, 2, 204);
    kh_metrics_request(0, 1, 400);
    kh_metrics_request(1, 1, 204);
    kh_metrics_request(-1, 2, 404);  /* no known route */
    kh_metrics_request(7, 2, 404);   /* beyond the labels: other too */
    kh_metrics_request(0, 2, 418);   /* a status the counter does not list */
    const char *t = render();
    has_line(t, "kohaku_http_requests_total{route=\"collector\",protocol=\"h2\",status=\"204\"} 2");
    has_line(t, "kohaku_http_requests_total{route=\"collector\",protocol=\"h1\",status=\"400\"} 1");
    has_line(t, "kohaku_http_requests_total{route=\"health\",protocol=\"h1\",status=\"204\"} 1");
    has_line(t, "kohaku_http_requests_total{route=\"other\",protocol=\"h2\",status=\"404\"} 2");
    has_line(t,
             "kohaku_http_requests_total{route=\"collector\",protocol=\"h2\",status=\"other\"} 1");
    assert_null(strstr(t, "status=\"200\"")); /* zero rows are left out */
}

static void test_table_labels_and_counters(void **state)
{
    kh_metrics.rows_stored[1] = 42;
    kh_metrics.reports_stored[0] = 3;
    kh_metrics.reports_duplicate = 2;
    const char *t = render();
    has_line(t, "kohaku_rows_stored_total{table=\"t_one\"} 0");
    has_line(t, "kohaku_rows_stored_total{table=\"t_two\"} 42");
    has_line(t, "kohaku_reports_stored_total{kind=\"connection\"} 3");
    has_line(t, "kohaku_reports_duplicate_total 2");
    assert_non_null(strstr(t, "kohaku_build_info{version=\""));
}

static void test_histogram_buckets_are_cumulative(void **state)
{
    kh_metrics_batch(1, 0.0004, 1);
    kh_metrics_batch(3, 0.003, 1);
    kh_metrics_batch(5000, 9, 0);
    const char *t = render();
    has_line(t, "kohaku_batch_reports_bucket{le=\"1\"} 1");
    has_line(t, "kohaku_batch_reports_bucket{le=\"2\"} 1");
    has_line(t, "kohaku_batch_reports_bucket{le=\"4\"} 2");
    has_line(t, "kohaku_batch_reports_bucket{le=\"4096\"} 2");
    has_line(t, "kohaku_batch_reports_bucket{le=\"+Inf\"} 3");
    has_line(t, "kohaku_batch_reports_count 3");
    has_line(t, "kohaku_batch_commit_seconds_bucket{le=\"0.0005\"} 1");
    has_line(t, "kohaku_batch_commit_seconds_bucket{le=\"+Inf\"} 3");
    has_line(t, "kohaku_batches_failed_total 1");
}

static void test_spool_block_only_with_a_spool(void **state)
{
    assert_null(strstr(render(), "kohaku_spool_bytes"));
    kh_metrics.spool_enabled = 1;
    kh_metrics.spool_appended = 5;
    const char *t = render();
    has_line(t, "kohaku_spool_appended_total 5");
    has_line(t, "kohaku_spool_segments 0");
}

static void test_storage_mode(void **state)
{
    kh_metrics_storage_mode("timescaledb");
    has_line(render(), "kohaku_storage_mode{mode=\"timescaledb\"} 1");
    kh_metrics_storage_mode("postgresql");
    const char *t = render();
    has_line(t, "kohaku_storage_mode{mode=\"postgresql\"} 1");
    assert_null(strstr(t, "mode=\"timescaledb\""));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_requests_by_route_protocol_status, setup),
        cmocka_unit_test_setup(test_table_labels_and_counters, setup),
        cmocka_unit_test_setup(test_histogram_buckets_are_cumulative, setup),
        cmocka_unit_test_setup(test_spool_block_only_with_a_spool, setup),
        cmocka_unit_test_setup(test_storage_mode, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
