/*
 * kh_test: helpers shared by the unit tests (header only, everything static inline): the Sora
 * envelopes every test builds on (defined here once), building them as text, parsing a body
 * with the real envelope parser, reading fixture files (and a line of Sora's log samples),
 * finding rows and values (and a webhook's lifecycle rows). Include after <cmocka.h>.
 * Nothing here may hide a failure: helpers assert what they rely on.
 */
#ifndef KH_TEST_H
#define KH_TEST_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "sora/envelope.h"
#include "sora/schema.h"

/* cmocka setup and teardown for the tests that need the schema (kh_schema_init). */
static inline int kht_schema_setup(void **state)
{
    (void)state;
    return kh_schema_init();
}

static inline int kht_schema_teardown(void **state)
{
    (void)state;
    kh_schema_cleanup();
    return 0;
}

struct kht_kv {
    const char *key;
    const char *value; /* JSON text; NULL in the base lists marks the "stats" slot */
};

#define KHT_CONN_ID "F2ZK8Q1M7C3V9B5X0N6T4R2W8H"
#define KHT_SESSION_ID "7H3KQ2M9ZV1B8C4X6N0R5T2W9E"

/* One transport (type third, as browsers send it) and one codec (type first). */
#define KHT_DEFAULT_STATS                                                                    \
    "[{\"id\":\"T01\",\"timestamp\":1795500198544.297,\"type\":\"transport\","                \
    "\"bytesSent\":56012001,\"dtlsState\":\"connected\",\"selectedCandidatePairId\":\"CP1\"}," \
    "{\"type\":\"codec\",\"id\":\"CIT01_111\",\"timestamp\":1795500198544,"                   \
    "\"mimeType\":\"audio/opus\",\"clockRate\":48000,\"channels\":2}]"

static const struct kht_kv kht_conn_base[] = {
    {"type", "\"connection.user-agent\""},
    {"id", "\"Q4M2G8T1ZK7B3X9H5N6R0PWC2D\""},
    {"timestamp", "\"2026-11-24T06:15:42.1Z\""},
    {"label", "\"WebRTC SFU Sora\""},
    {"version", "\"2023.2.0\""},
    {"node_name", "\"sora@10.0.0.5\""},
    {"multistream", "true"},
    {"simulcast", "false"},
    {"spotlight", "false"},
    {"role", "\"sendrecv\""},
    {"channel_id", "\"meeting-room-42\""},
    {"session_id", "\"" KHT_SESSION_ID "\""},
    {"client_id", "\"alice\""},
    {"connection_id", "\"" KHT_CONN_ID "\""},
    {"stats", NULL},
    {NULL, NULL},
};

/* The stats webhook's envelope: the same keys, type connection.rtc. */
static const struct kht_kv kht_webhook_base[] = {
    {"type", "\"connection.rtc\""},
    {"id", "\"Q4M2G8T1ZK7B3X9H5N6R0PWC2D\""},
    {"timestamp", "\"2026-11-24T06:15:42.1Z\""},
    {"label", "\"WebRTC SFU Sora\""},
    {"version", "\"2023.2.0\""},
    {"node_name", "\"sora@10.0.0.5\""},
    {"multistream", "true"},
    {"simulcast", "false"},
    {"spotlight", "false"},
    {"role", "\"sendrecv\""},
    {"channel_id", "\"meeting-room-42\""},
    {"session_id", "\"" KHT_SESSION_ID "\""},
    {"client_id", "\"alice\""},
    {"connection_id", "\"" KHT_CONN_ID "\""},
    {"stats", NULL},
    {NULL, NULL},
};

static const struct kht_kv kht_node_base[] = {
    {"type", "\"node.erlang-vm\""},
    {"timestamp", "\"2026-11-24T06:15:42.5Z\""},
    {"label", "\"WebRTC SFU Sora\""},
    {"version", "\"2023.2.0\""},
    {"node_name", "\"sora@10.0.0.5\""},
    {"id", "\"N4M2G8T1ZK7B3X9H5N6R0PWC2D\""},
    {"stats", NULL},
    {NULL, NULL},
};

/* Appends a and b (NULL: nothing) to the NUL-terminated *buf of *len bytes. */
static inline void kht_cat(char **buf, size_t *len, const char *a, const char *b)
{
    size_t na = strlen(a), nb = b ? strlen(b) : 0;
    char *p = realloc(*buf, *len + na + nb + 1);
    assert_non_null(p);
    memcpy(p + *len, a, na);
    if (nb)
        memcpy(p + *len + na, b, nb);
    *len += na + nb;
    p[*len] = '\0';
    *buf = p;
}

/* The base envelope around `stats` (array text) with `key` set to the JSON text `value`
 * (value NULL: the key is removed; a key not in the base is appended). Caller frees. */
static inline char *kht_build(const struct kht_kv *base, const char *stats, const char *key,
                              const char *value)
{
    char *out = NULL;
    size_t len = 0;
    bool found = false;
    kht_cat(&out, &len, "{", NULL);
    for (const struct kht_kv *p = base; p->key; p++) {
        const char *v = p->value ? p->value : stats;
        if (key && strcmp(p->key, key) == 0) {
            found = true;
            v = value;
        }
        if (v == NULL)
            continue;
        kht_cat(&out, &len, len > 1 ? ", \"" : "\"", p->key);
        kht_cat(&out, &len, "\": ", v);
    }
    if (key && !found && value) {
        kht_cat(&out, &len, ", \"", key);
        kht_cat(&out, &len, "\": ", value);
    }
    kht_cat(&out, &len, "}", NULL);
    return out;
}

static inline char *kht_envelope(const char *stats, const char *key, const char *value)
{
    return kht_build(kht_conn_base, stats ? stats : KHT_DEFAULT_STATS, key, value);
}

/* Parses body with the real parser, fed in `chunk`-byte pieces (0: one piece). Returns the
 * result code; on success *out gets the report (caller frees), on failure err gets the
 * message and the parser must refuse to hand out a report. */
static inline int kht_parse_ex(const char *body, size_t len, size_t chunk,
                               enum kh_report_kind kind, enum kh_envelope_flavor flavor,
                               const struct kh_envelope_limits *lim, struct kh_report **out,
                               char *err, size_t errlen)
{
    struct kh_envelope *e = kh_envelope_new(kind, flavor, lim);
    assert_non_null(e);
    int rc = 0;
    if (chunk == 0)
        chunk = len ? len : 1;
    for (size_t off = 0; rc == 0 && off < len; off += chunk)
        rc = kh_envelope_feed(e, body + off, len - off < chunk ? len - off : chunk);
    if (rc == 0)
        rc = kh_envelope_finish(e);
    if (out)
        *out = NULL;
    if (err && errlen)
        err[0] = '\0';
    if (rc == 0) {
        assert_null(kh_envelope_error(e));
        struct kh_report *r = kh_envelope_take_report(e);
        assert_non_null(r);
        if (out)
            *out = r;
        else
            kh_report_free(r);
    } else {
        const char *msg = kh_envelope_error(e);
        assert_non_null(msg);
        if (err)
            snprintf(err, errlen, "%s", msg);
        assert_null(kh_envelope_take_report(e));
        /* feeding after a failure is a no-op with the same error */
        assert_int_equal(kh_envelope_feed(e, "{", 1), rc);
    }
    kh_envelope_free(e);
    return rc;
}

static inline int kht_parse(const char *body, struct kh_report **out, char *err, size_t errlen)
{
    return kht_parse_ex(body, strlen(body), 0, KH_REPORT_CONNECTION, KH_FLAVOR_EXPORTER, NULL,
                        out, err, errlen);
}

/* The connection report of kht_envelope(stats, key, value), parsed in one piece; fails the
 * test when the parser refuses it. Caller frees. */
static inline struct kh_report *kht_report(const char *stats, const char *key, const char *value)
{
    char *body = kht_envelope(stats, key, value);
    struct kh_report *r = NULL;
    char err[512];
    if (kht_parse(body, &r, err, sizeof(err)) != 0)
        fail_msg("%s = %s refused: %s", key ? key : "(the base envelope)",
                 value ? value : "(absent)", err);
    free(body);
    return r;
}

/* Fails the test unless msg starts with prefix (and shows both). */
#define kht_assert_prefix(msg, prefix)                                                        \
    do {                                                                                      \
        if (strncmp((msg), (prefix), strlen(prefix)) != 0)                                    \
            fail_msg("error '%s' does not start with '%s'", (msg), (prefix));                 \
    } while (0)

/* Whole file, NUL-terminated; caller frees. */
static inline char *kht_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        fail_msg("cannot open %s", path);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long n = ftell(f);
    assert_true(n >= 0);
    rewind(f);
    char *p = malloc((size_t)n + 1);
    assert_non_null(p);
    assert_int_equal(fread(p, 1, (size_t)n, f), (size_t)n);
    p[n] = '\0';
    fclose(f);
    if (len)
        *len = (size_t)n;
    return p;
}

/* The row of the report with this stats id, or NULL. */
static inline const struct kh_row *kht_row(const struct kh_report *r, const char *stats_id)
{
    for (const struct kh_row *row = r->rows; row; row = row->next)
        if (row->stats_id.p && strcmp(row->stats_id.p, stats_id) == 0)
            return row;
    return NULL;
}

/* The value of member `name` in a row (fails when the table has no such column). */
static inline const struct kh_value *kht_val(const struct kh_row *row, const char *name)
{
    int idx = kh_schema_member(row->table, name, strlen(name));
    if (idx < 0)
        fail_msg("%s has no column for %s", kh_stats_tables[row->table].table, name);
    return &row->vals[idx];
}

/* Line n (from 0) of a file, without its newline; caller frees. */
static inline char *kht_read_line(const char *path, int n, size_t *len)
{
    char *all = kht_read_file(path, NULL), *p = all;
    for (int i = 0; i < n && p; i++) {
        p = strchr(p, '\n');
        p = p ? p + 1 : NULL;
    }
    if (p == NULL || *p == '\0')
        fail_msg("%s has no line %d", path, n);
    size_t k = strcspn(p, "\n");
    char *line = malloc(k + 1);
    assert_non_null(line);
    memcpy(line, p, k);
    line[k] = '\0';
    free(all);
    if (len)
        *len = k;
    return line;
}

/* The report's row of envelope table t whose key (its first column) is `key`, or NULL. */
static inline const struct kh_env_row *kht_env_row(const struct kh_report *r, int t,
                                                   const char *key)
{
    for (const struct kh_env_row *row = r->env_rows; row; row = row->next)
        if (row->table == t && row->vals[0].type && strcmp(row->vals[0].u.s, key) == 0)
            return row;
    return NULL;
}

static inline int kht_table(const char *name)
{
    for (size_t t = 0; t < kh_stats_ntables; t++)
        if (strcmp(kh_stats_tables[t].table, name) == 0)
            return (int)t;
    fail_msg("no table %s", name);
    return -1;
}

#endif
