/*
 * Unit tests of src/sora/lifecycle_rows.c: the rows each webhook of the sample logs gives
 * (tests/fixtures/sora-logs-sample): the session webhook's session row (created, destroyed
 * and how, peak and total connections) and a row per entry of "connections"; an event
 * webhook's connection row (created, destroyed, how it ended, its counters, from the body or
 * from "data") and its session's (ids and webhook times only); nothing for other event
 * types; every column's value of the column's type, and NULL only where the column may be.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "kh_test.h"
#include "sora/lifecycle.h"

#define SESSION_LOG KH_SORA_LOGS_DIR "/session_webhook.jsonl"
#define EVENT_LOG KH_SORA_LOGS_DIR "/event_webhook.jsonl"
#define SID "H45PD3HLXUKBBK2BP3ANE657ZM"
#define CA "W56JLRJEYNIZ4TOADMXTOE3RRU"
#define CB "QXC56Q55A2O5BXBRLJC2RRMOKE"

/* Every value fits its column; NOT NULL columns have one. */
static void check_types(const struct kh_report *r)
{
    for (const struct kh_env_row *row = r->env_rows; row; row = row->next) {
        const struct kh_env_table *et = &kh_env_tables[row->table];
        for (size_t c = 0; c < et->ncols; c++) {
            const struct kh_value *v = &row->vals[c];
            if (v->type != 0 && v->type != et->cols[c].type)
                fail_msg("%s.%s: value of type %d", et->table, et->cols[c].name, v->type);
            if (v->type == 0 && et->cols[c].not_null)
                fail_msg("%s.%s: NULL in a NOT NULL column", et->table, et->cols[c].name);
        }
    }
}

static struct kh_report *line_report(const char *path, int n)
{
    char *line = kht_read_line(path, n, NULL);
    struct kh_report *r;
    char err[256] = "";
    if (kh_lifecycle_parse(KH_LC_ANY, KH_LC_LOG_LINE, line, strlen(line), NULL, &r, err,
                           sizeof(err)) != 0)
        fail_msg("%s line %d: %s", path, n, err);
    free(line);
    check_types(r);
    return r;
}

static const struct kh_value *val(const struct kh_report *r, int t, const char *key, int col)
{
    const struct kh_env_row *row = kht_env_row(r, t, key);
    if (row == NULL)
        fail_msg("no %s row for %s", kh_env_tables[t].table, key);
    return &row->vals[col];
}

static void is_text(const struct kh_value *v, const char *want)
{
    if (want == NULL) {
        assert_int_equal(v->type, 0);
        return;
    }
    assert_true(v->type == KH_COL_TEXT || v->type == KH_COL_TIME || v->type == KH_COL_JSON);
    assert_int_equal(v->len, strlen(want));
    assert_memory_equal(v->u.s, want, v->len);
}

static size_t rows_of(const struct kh_report *r, int t)
{
    size_t n = 0;
    for (const struct kh_env_row *row = r->env_rows; row; row = row->next)
        n += row->table == t;
    return n;
}

static void test_session_created(void **state)
{
    (void)state;
    struct kh_report *r = line_report(SESSION_LOG, 0);
    assert_int_equal(r->nenv, 1);
    is_text(val(r, kh_env_session, SID, KH_SESS_CHANNEL_ID), "sample-room");
    is_text(val(r, kh_env_session, SID, KH_SESS_CREATED), "2026-11-30T08:59:55.123456Z");
    is_text(val(r, kh_env_session, SID, KH_SESS_DESTROYED), NULL);
    is_text(val(r, kh_env_session, SID, KH_SESS_END_TYPE), NULL);
    assert_int_equal(val(r, kh_env_session, SID, KH_SESS_MAX_CONNECTIONS)->type, 0);
    const struct kh_value *spot = val(r, kh_env_session, SID, KH_SESS_SPOTLIGHT);
    assert_true(spot->type == KH_COL_BOOL && !spot->u.b);
    is_text(val(r, kh_env_session, SID, KH_SESS_FIRST_WEBHOOK), "2026-11-30T08:59:55.123456Z");
    kh_report_free(r);
}

static void test_session_updated(void **state)
{
    (void)state;
    struct kh_report *r = line_report(SESSION_LOG, 1);
    assert_int_equal(rows_of(r, kh_env_session), 1);
    assert_int_equal(rows_of(r, kh_env_lifecycle), 2);
    assert_int_equal(val(r, kh_env_session, SID, KH_SESS_MAX_CONNECTIONS)->u.i, 2);
    assert_int_equal(val(r, kh_env_session, SID, KH_SESS_TOTAL_CONNECTIONS)->u.i, 2);
    is_text(val(r, kh_env_session, SID, KH_SESS_DESTROYED), NULL);
    is_text(val(r, kh_env_lifecycle, CB, KH_LIFE_SESSION_ID), SID);
    is_text(val(r, kh_env_lifecycle, CB, KH_LIFE_ROLE), "recvonly");
    is_text(val(r, kh_env_lifecycle, CB, KH_LIFE_CREATED), "2026-11-30T08:59:57.123456Z");
    is_text(val(r, kh_env_lifecycle, CB, KH_LIFE_DESTROYED), NULL); /* null: still there */
    is_text(val(r, kh_env_lifecycle, CB, KH_LIFE_VIDEO_CODEC_TYPE), "VP8");
    const struct kh_value *video = val(r, kh_env_lifecycle, CB, KH_LIFE_VIDEO);
    assert_true(video->type == KH_COL_BOOL && !video->u.b);
    assert_int_equal(val(r, kh_env_lifecycle, CA, KH_LIFE_VIDEO_BIT_RATE)->u.i, 500);
    is_text(val(r, kh_env_lifecycle, CA, KH_LIFE_END_TYPE), NULL); /* no reason from here */
    is_text(val(r, kh_env_lifecycle, CA, KH_LIFE_LAST_WEBHOOK), "2026-11-30T09:00:35.123456Z");
    kh_report_free(r);
}

static void test_session_destroyed(void **state)
{
    (void)state;
    struct kh_report *r = line_report(SESSION_LOG, 2);
    is_text(val(r, kh_env_session, SID, KH_SESS_DESTROYED), "2026-11-30T09:01:15.123456Z");
    is_text(val(r, kh_env_session, SID, KH_SESS_END_TYPE), "session.destroyed");
    is_text(val(r, kh_env_lifecycle, CA, KH_LIFE_DESTROYED), "2026-11-30T09:01:14.123456Z");
    is_text(val(r, kh_env_lifecycle, CB, KH_LIFE_DESTROYED), "2026-11-30T09:01:15.123456Z");
    kh_report_free(r);
    /* without destroyed_timestamp: the webhook's time; session.vanished ends it too */
    const char *body = "{\"type\":\"session.vanished\",\"id\":\"V1\",\"timestamp\":"
                       "\"2026-11-30T09:05:00.5Z\",\"channel_id\":\"c\",\"session_id\":\"" SID
                       "\"}";
    char err[256];
    assert_int_equal(kh_lifecycle_parse(KH_LC_SESSION, KH_LC_BODY, body, strlen(body), NULL, &r,
                                        err, sizeof(err)),
                     0);
    is_text(val(r, kh_env_session, SID, KH_SESS_DESTROYED), "2026-11-30T09:05:00.500000Z");
    is_text(val(r, kh_env_session, SID, KH_SESS_END_TYPE), "session.vanished");
    kh_report_free(r);
}

static void test_connection_created(void **state)
{
    (void)state;
    struct kh_report *r = line_report(EVENT_LOG, 0);
    assert_int_equal(r->nenv, 2);
    is_text(val(r, kh_env_lifecycle, CA, KH_LIFE_CREATED), "2026-11-30T08:59:56.123456Z");
    is_text(val(r, kh_env_lifecycle, CA, KH_LIFE_DESTROYED), NULL);
    is_text(val(r, kh_env_lifecycle, CA, KH_LIFE_CLIENT_ID), CA);
    is_text(val(r, kh_env_lifecycle, CA, KH_LIFE_TURN_TRANSPORT_TYPE), "udp");
    const struct kh_value *m = val(r, kh_env_lifecycle, CA, KH_LIFE_MULTISTREAM);
    assert_true(m->type == KH_COL_BOOL && m->u.b);
    /* the session: ids and times of the webhook only */
    is_text(val(r, kh_env_session, SID, KH_SESS_CHANNEL_ID), "sample-room");
    is_text(val(r, kh_env_session, SID, KH_SESS_CREATED), NULL);
    is_text(val(r, kh_env_session, SID, KH_SESS_FIRST_WEBHOOK), "2026-11-30T08:59:56.123456Z");
    kh_report_free(r);
}

static void test_connection_updated_and_destroyed(void **state)
{
    (void)state;
    struct kh_report *r = line_report(EVENT_LOG, 2);
    assert_int_equal(val(r, kh_env_lifecycle, CA, KH_LIFE_MINUTES)->u.i, 1);
    assert_int_equal(val(r, kh_env_lifecycle, CA, KH_LIFE_TOTAL_SENT_BYTES)->u.i, 3620118);
    is_text(val(r, kh_env_lifecycle, CA, KH_LIFE_CREATED), NULL);
    is_text(val(r, kh_env_lifecycle, CA, KH_LIFE_END_TYPE), NULL);
    kh_report_free(r);
    r = line_report(EVENT_LOG, 4);
    is_text(val(r, kh_env_lifecycle, CB, KH_LIFE_CREATED), "2026-11-30T08:59:57.123456Z");
    is_text(val(r, kh_env_lifecycle, CB, KH_LIFE_DESTROYED), "2026-11-30T09:01:15.123456Z");
    is_text(val(r, kh_env_lifecycle, CB, KH_LIFE_END_TYPE), "connection.destroyed");
    is_text(val(r, kh_env_lifecycle, CB, KH_LIFE_END_REASON), "websocket-closed");
    assert_int_equal(val(r, kh_env_lifecycle, CB, KH_LIFE_TOTAL_RECEIVED_BYTES)->u.i, 2843110);
    const struct kh_value *data = val(r, kh_env_lifecycle, CB, KH_LIFE_END_DATA);
    assert_int_equal(data->type, KH_COL_JSON);
    assert_non_null(strstr(data->u.s, "\"reason\":\"websocket-closed\""));
    kh_report_free(r);
}

/* connection.failed ends it too; times and the reason may be at the top level; without any
 * the webhook's own time is when it ended. */
static void test_connection_failed(void **state)
{
    (void)state;
    const char *body = "{\"type\":\"connection.failed\",\"id\":\"F1\",\"timestamp\":"
                       "\"2026-11-30T09:00:00.25Z\",\"channel_id\":\"c\",\"session_id\":\"" SID
                       "\",\"connection_id\":\"" CA "\",\"reason\":\"ice-failed\","
                       "\"data\":{\"reason\":\"ignored\"}}";
    struct kh_report *r;
    char err[256];
    assert_int_equal(kh_lifecycle_parse(KH_LC_EVENT, KH_LC_BODY, body, strlen(body), NULL, &r,
                                        err, sizeof(err)),
                     0);
    check_types(r);
    is_text(val(r, kh_env_lifecycle, CA, KH_LIFE_DESTROYED), "2026-11-30T09:00:00.250000Z");
    is_text(val(r, kh_env_lifecycle, CA, KH_LIFE_END_TYPE), "connection.failed");
    is_text(val(r, kh_env_lifecycle, CA, KH_LIFE_END_REASON), "ice-failed");
    is_text(val(r, kh_env_lifecycle, CA, KH_LIFE_END_DATA), "{\"reason\":\"ignored\"}");
    kh_report_free(r);
}

static void test_other_events_give_no_rows(void **state)
{
    (void)state;
    const char *body = "{\"type\":\"archive.available\",\"id\":\"A1\",\"timestamp\":"
                       "\"2026-11-30T09:10:00.5Z\",\"channel_id\":\"c\",\"session_id\":\"" SID
                       "\",\"connection_id\":\"" CA "\"}";
    struct kh_report *r;
    char err[256];
    assert_int_equal(kh_lifecycle_parse(KH_LC_EVENT, KH_LC_BODY, body, strlen(body), NULL, &r,
                                        err, sizeof(err)),
                     0);
    assert_int_equal(r->nenv, 0);
    assert_string_equal(r->connection_id.p, CA); /* for sora_webhook */
    kh_report_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_session_created),
        cmocka_unit_test(test_session_updated),
        cmocka_unit_test(test_session_destroyed),
        cmocka_unit_test(test_connection_created),
        cmocka_unit_test(test_connection_updated_and_destroyed),
        cmocka_unit_test(test_connection_failed),
        cmocka_unit_test(test_other_events_give_no_rows),
    };
    return cmocka_run_group_tests(tests, kht_schema_setup, kht_schema_teardown);
}
