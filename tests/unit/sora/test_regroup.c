/*
 * Unit tests of src/sora/regroup.c: rtc_stats.jsonl lines back into report bodies. The
 * body of a report is exact (the first line's envelope members as written, then its stats
 * objects in line order) and passes the real envelope parser with the stats webhook's
 * rules; the sample log (tests/fixtures/sora-logs-sample) gives its four reports with every
 * object; lines of two connections interleaved give two reports; a connection's next report
 * closes the one before; a timestamp or id of its own is another report; the open reports
 * are bounded (count and bytes: the oldest is handed out) and handed out oldest first at the
 * end; a report over max_body comes out as too large, with its size (a 610-byte one, 550
 * allowed); a line without rtc_data is refused and leaves nothing behind.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "kh_test.h"
#include "sora/regroup.h"

#define MAX_OUT 64

struct out {
    struct kh_regroup_report *rep[MAX_OUT];
    size_t n;
};

static int on_report(void *arg, struct kh_regroup_report *rep)
{
    struct out *o = arg;
    assert_true(o->n < MAX_OUT);
    o->rep[o->n++] = rep;
    return 0;
}

static void out_free(struct out *o)
{
    for (size_t i = 0; i < o->n; i++)
        kh_regroup_report_free(o->rep[i]);
    o->n = 0;
}

static const struct kh_regroup_limits big = {
    .max_open = 64, .max_open_bytes = 64u << 20, .max_body = 4u << 20};

/* A line of connection `conn` and report `id` at second `sec`, its object `obj`. */
static char *line_of(char conn, char id, int sec, const char *obj)
{
    char *p = malloc(2048);
    snprintf(p, 2048,
             "{\"connection_id\":\"%c6JLRJEYNIZ4TOADMXTOE3RRU\",\"id\":\"%cCXBNIPYCRTBDNXON2AWZUE"
             "UGI\",\"label\":\"WebRTC SFU Sora\",\"timestamp\":\"2026-11-30T09:00:%02d.1Z\","
             "\"type\":\"connection.rtc\",\"version\":\"2025.2.1\",\"node_name\":\"sora@x\","
             "\"session_id\":\"H45PD3HLXUKBBK2BP3ANE657ZM\",\"role\":\"sendrecv\","
             "\"channel_id\":\"room\",\"spotlight\":false,\"bundle_id\":\"b\","
             "\"client_id\":\"c\",\"group_id\":\"g\",\"simulcast\":false,"
             "\"log_written\":false,\"rtc_data\":%s,\"rtc_id\":\"x\",\"rtc_timestamp\":1,"
             "\"rtc_type\":\"y\"}",
             conn, id, sec, obj);
    return p;
}

static int add(struct kh_regroup *g, const char *line, uint64_t lineno)
{
    struct kh_soraline l;
    assert_int_equal(kh_soraline_parse(&l, line, strlen(line), false), 0);
    const char *err = NULL;
    return kh_regroup_add(g, line, &l, lineno, &err);
}

static void add_ok(struct kh_regroup *g, char conn, char id, int sec, const char *obj,
                   uint64_t lineno)
{
    char *line = line_of(conn, id, sec, obj);
    assert_int_equal(add(g, line, lineno), 0);
    free(line);
}

/* The body's report, parsed with the stats webhook's rules. */
static struct kh_report *parsed(const struct kh_regroup_report *rep)
{
    struct kh_report *r = NULL;
    char err[512];
    if (kht_parse_ex(rep->body.data, rep->body.len, 0, KH_REPORT_CONNECTION, KH_FLAVOR_WEBHOOK,
                     NULL, &r, err, sizeof(err)) != 0)
        fail_msg("the envelope parser refused %.*s: %s", (int)rep->body.len, rep->body.data,
                 err);
    return r;
}

#define OBJ_T "{\"id\":\"T01\",\"timestamp\":1.7955001985442970e+12,\"type\":\"transport\"}"
#define OBJ_C "{\"type\":\"codec\",\"id\":\"C1\",\"timestamp\":1795500198544,\"clockRate\":48000}"

static void test_regroup_body(void **state)
{
    (void)state;
    struct out o = {0};
    struct kh_regroup *g = kh_regroup_new(&big, on_report, &o);
    add_ok(g, 'W', 'A', 0, OBJ_T, 7);
    add_ok(g, 'W', 'A', 0, OBJ_C, 8);
    assert_int_equal(o.n, 0);
    assert_int_equal(kh_regroup_open(g), 1);
    assert_int_equal(kh_regroup_flush(g), 0);
    assert_int_equal(o.n, 1);
    const struct kh_regroup_report *rep = o.rep[0];
    const char *want =
        "{\"connection_id\":\"W6JLRJEYNIZ4TOADMXTOE3RRU\",\"id\":\"ACXBNIPYCRTBDNXON2AWZUEUGI\","
        "\"label\":\"WebRTC SFU Sora\",\"timestamp\":\"2026-11-30T09:00:00.1Z\","
        "\"type\":\"connection.rtc\",\"version\":\"2025.2.1\",\"node_name\":\"sora@x\","
        "\"session_id\":\"H45PD3HLXUKBBK2BP3ANE657ZM\",\"role\":\"sendrecv\","
        "\"channel_id\":\"room\",\"spotlight\":false,\"bundle_id\":\"b\",\"client_id\":\"c\","
        "\"group_id\":\"g\",\"simulcast\":false,\"log_written\":false,\"stats\":[" OBJ_T ","
        OBJ_C "]}";
    assert_int_equal(rep->body.len, strlen(want));
    assert_memory_equal(rep->body.data, want, rep->body.len);
    assert_int_equal(rep->first_line, 7);
    assert_int_equal(rep->last_line, 8);
    assert_int_equal(rep->nlines, 2);
    assert_int_equal(rep->lines[0], 7);
    assert_int_equal(rep->lines[1], 8);
    assert_int_equal(rep->too_large, 0);
    /* 26 characters: the line's connection_id is one short of Sora's; the parser says so */
    char err[256];
    assert_int_equal(kht_parse_ex(rep->body.data, rep->body.len, 0, KH_REPORT_CONNECTION,
                                  KH_FLAVOR_WEBHOOK, NULL, NULL, err, sizeof(err)),
                     KH_EINVAL);
    assert_string_equal(err, "connection_id: must be 26 characters, got 25");
    out_free(&o);
    kh_regroup_free(g);
}

/* The sample log: 2 connections x 2 reports, every line a stats object of one of them. */
static void test_regroup_sample(void **state)
{
    (void)state;
    size_t len;
    char *text = kht_read_file(KH_FIXTURES_DIR "/../sora-logs-sample/rtc_stats.jsonl", &len);
    struct out o = {0};
    struct kh_regroup *g = kh_regroup_new(&big, on_report, &o);
    uint64_t lineno = 0;
    for (char *p = text, *nl; (nl = strchr(p, '\n')) != NULL; p = nl + 1) {
        *nl = '\0';
        assert_int_equal(add(g, p, ++lineno), 0);
    }
    assert_int_equal(kh_regroup_flush(g), 0);
    assert_int_equal(o.n, 4);
    /* handed out as they closed: A1 (at A2's first line), B1, then A2 and B2 at the end */
    assert_true(o.rep[0]->first_line < o.rep[2]->first_line);
    assert_true(o.rep[2]->first_line < o.rep[1]->first_line);
    assert_true(o.rep[1]->first_line < o.rep[3]->first_line);
    struct kh_regroup_report *sorted[4] = {o.rep[0], o.rep[2], o.rep[1], o.rep[3]};
    memcpy(o.rep, sorted, sizeof(sorted));
    size_t objects = 0;
    uint64_t next_line = 1;
    for (size_t i = 0; i < o.n; i++) {
        struct kh_report *r = parsed(o.rep[i]);
        assert_int_equal(r->nrows, o.rep[i]->nlines);
        assert_int_equal(o.rep[i]->first_line, next_line);
        for (size_t k = 0; k < o.rep[i]->nlines; k++)
            assert_int_equal(o.rep[i]->lines[k], next_line + k);
        next_line += o.rep[i]->nlines;
        objects += r->nrows;
        assert_int_equal(r->connection_id.len, 26);
        assert_int_equal(r->multistream, -1); /* the webhook's: absent */
        kh_report_free(r);
    }
    assert_int_equal(objects, lineno);
    out_free(&o);
    kh_regroup_free(g);
    free(text);
}

static void test_regroup_interleaved(void **state)
{
    (void)state;
    struct out o = {0};
    struct kh_regroup *g = kh_regroup_new(&big, on_report, &o);
    add_ok(g, 'A', 'A', 0, OBJ_T, 1);
    add_ok(g, 'B', 'A', 0, OBJ_T, 2);
    add_ok(g, 'A', 'A', 0, OBJ_C, 3);
    add_ok(g, 'B', 'A', 0, OBJ_C, 4);
    assert_int_equal(o.n, 0);
    /* A's next report closes A's open one, and only it */
    add_ok(g, 'A', 'B', 5, OBJ_T, 5);
    assert_int_equal(o.n, 1);
    assert_int_equal(o.rep[0]->nlines, 2);
    assert_int_equal(o.rep[0]->lines[1], 3);
    /* the same connection and id at another time is another report too */
    add_ok(g, 'B', 'A', 9, OBJ_T, 6);
    assert_int_equal(o.n, 2);
    assert_int_equal(o.rep[1]->first_line, 2);
    assert_int_equal(o.rep[1]->lines[1], 4);
    assert_int_equal(kh_regroup_open(g), 2);
    assert_int_equal(kh_regroup_flush(g), 0);
    assert_int_equal(o.n, 4);
    assert_int_equal(o.rep[2]->first_line, 5); /* the oldest first */
    assert_int_equal(o.rep[3]->first_line, 6);
    out_free(&o);
    kh_regroup_free(g);
}

static void test_regroup_bounded(void **state)
{
    (void)state;
    struct out o = {0};
    struct kh_regroup_limits lim = {.max_open = 2, .max_open_bytes = 1u << 20,
                                    .max_body = 1u << 20};
    struct kh_regroup *g = kh_regroup_new(&lim, on_report, &o);
    add_ok(g, 'A', 'A', 0, OBJ_T, 1);
    add_ok(g, 'B', 'A', 0, OBJ_T, 2);
    add_ok(g, 'A', 'A', 0, OBJ_C, 3); /* A is the newest again */
    add_ok(g, 'C', 'A', 0, OBJ_T, 4); /* three open: B, the oldest, goes */
    assert_int_equal(o.n, 1);
    assert_int_equal(o.rep[0]->first_line, 2);
    assert_int_equal(kh_regroup_open(g), 2);
    out_free(&o);
    kh_regroup_free(g); /* what is open goes unannounced */
    assert_int_equal(o.n, 0);
    /* by bytes: each report's body is about 600 bytes, 1,000 let only one stay open */
    lim = (struct kh_regroup_limits){.max_open = 100, .max_open_bytes = 1000,
                                     .max_body = 1u << 20};
    g = kh_regroup_new(&lim, on_report, &o);
    add_ok(g, 'A', 'A', 0, OBJ_T, 1);
    add_ok(g, 'B', 'A', 0, OBJ_T, 2);
    assert_int_equal(o.n, 1);
    assert_int_equal(o.rep[0]->first_line, 1);
    add_ok(g, 'B', 'A', 0, OBJ_C, 3); /* the one that grows stays */
    assert_int_equal(o.n, 1);
    assert_int_equal(kh_regroup_flush(g), 0);
    assert_int_equal(o.rep[1]->nlines, 2);
    out_free(&o);
    kh_regroup_free(g);
}

static void test_regroup_too_large(void **state)
{
    (void)state;
    struct out o = {0};
    struct kh_regroup_limits lim = {.max_open = 8, .max_open_bytes = 1u << 20,
                                    .max_body = 550};
    struct kh_regroup *g = kh_regroup_new(&lim, on_report, &o);
    add_ok(g, 'A', 'A', 0, OBJ_T, 1);
    add_ok(g, 'A', 'A', 0, OBJ_C, 2);
    add_ok(g, 'A', 'A', 0, OBJ_C, 3);
    assert_int_equal(kh_regroup_flush(g), 0);
    assert_int_equal(o.n, 1);
    const struct kh_regroup_report *rep = o.rep[0];
    assert_true(rep->too_large > 550);
    assert_int_equal(rep->body.len, 0);
    assert_int_equal(rep->first_line, 1);
    assert_int_equal(rep->last_line, 3);
    /* the size is the body's as it would have been */
    struct kh_regroup *g2 = kh_regroup_new(&big, on_report, &o);
    add_ok(g2, 'A', 'A', 0, OBJ_T, 1);
    add_ok(g2, 'A', 'A', 0, OBJ_C, 2);
    add_ok(g2, 'A', 'A', 0, OBJ_C, 3);
    assert_int_equal(kh_regroup_flush(g2), 0);
    assert_int_equal(o.rep[1]->body.len, rep->too_large);
    out_free(&o);
    kh_regroup_free(g);
    kh_regroup_free(g2);
}

static void test_regroup_no_rtc_data(void **state)
{
    (void)state;
    struct out o = {0};
    struct kh_regroup *g = kh_regroup_new(&big, on_report, &o);
    const char line[] = "{\"connection_id\":\"A\",\"id\":\"B\",\"type\":\"connection.rtc\"}";
    struct kh_soraline l;
    assert_int_equal(kh_soraline_parse(&l, line, strlen(line), false), 0);
    const char *err = NULL;
    assert_int_equal(kh_regroup_add(g, line, &l, 1, &err), KH_EINVAL);
    kht_assert_prefix(err, "rtc_data: required");
    assert_int_equal(kh_regroup_open(g), 0);
    /* rtc_data that is no object goes in as written: the envelope parser refuses it */
    add_ok(g, 'W', 'A', 0, "\"text\"", 2);
    assert_int_equal(kh_regroup_flush(g), 0);
    char msg[256];
    assert_int_equal(kht_parse_ex(o.rep[0]->body.data, o.rep[0]->body.len, 0,
                                  KH_REPORT_CONNECTION, KH_FLAVOR_WEBHOOK, NULL, NULL, msg,
                                  sizeof(msg)),
                     KH_EINVAL);
    assert_string_equal(msg, "stats[0]: must be an object, got string");
    out_free(&o);
    kh_regroup_free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_regroup_body),
        cmocka_unit_test(test_regroup_sample),
        cmocka_unit_test(test_regroup_interleaved),
        cmocka_unit_test(test_regroup_bounded),
        cmocka_unit_test(test_regroup_too_large),
        cmocka_unit_test(test_regroup_no_rtc_data),
    };
    return cmocka_run_group_tests(tests, kht_schema_setup, kht_schema_teardown);
}
