/*
 * Unit tests of src/sora/privacy.c: each mode (keep, truncate, hash, drop) on IPv4, IPv6,
 * IPv4-mapped and zoned addresses; privacy_keep_networks exemptions; the host of STUN/TURN
 * urls (scheme, port and query kept); the values left alone (mDNS names, host names,
 * "(redacted)", malformed literals); the policy's refusals naming their key; and, through the
 * real envelope parser, candidate rows and extra members (top level and nested, on the fast
 * and the slow path), then every browser fixture with no raw address left in any value.
 */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "kh_test.h"
#include "net/tls.h"
#include "sora/privacy.h"

#define KEY "0123456789abcdef-test-key"
/* HMAC-SHA256(KEY, family byte, address bytes), first 8 bytes (Python's hmac module). */
#define TOKEN_V4 "h:6676d00e128cf189" /* 192.0.2.2 */
#define TOKEN_V6 "h:4d6ef1d1d48376cb" /* fd00::2 */

static void policy(struct kh_privacy *p, const char *mode, const char *keep, const char *key)
{
    const char *err = NULL;
    if (kh_privacy_init(p, mode, keep, key, kh_tls_hmac_sha256, &err) != 0)
        fail_msg("kh_privacy_init(%s, %s): %s", mode, keep, err);
}

/* The value s becomes: its text, "NULL", or s itself when unchanged. */
static const char *addr(const struct kh_privacy *p, const char *s)
{
    static char out[KH_PRIVACY_ADDR_LEN];
    size_t n = 0;
    switch (kh_privacy_address(p, s, strlen(s), out, &n)) {
    case KH_PRIVACY_CHANGED: assert_int_equal(strlen(out), n); return out;
    case KH_PRIVACY_NULL: return "NULL";
    default: return s;
    }
}

static const char *url(const struct kh_privacy *p, const char *s)
{
    static char out[512];
    size_t n = 0;
    switch (kh_privacy_url(p, s, strlen(s), out, sizeof(out), &n)) {
    case KH_PRIVACY_CHANGED: assert_int_equal(strlen(out), n); return out;
    case KH_PRIVACY_NULL: return "NULL";
    default: return s;
    }
}

static void test_keep(void **state)
{
    (void)state;
    struct kh_privacy p;
    policy(&p, "keep", "", "");
    assert_false(kh_privacy_active(&p));
    assert_false(kh_privacy_active(NULL));
    assert_string_equal(addr(&p, "192.0.2.2"), "192.0.2.2");
    assert_string_equal(addr(NULL, "192.0.2.2"), "192.0.2.2");
    assert_string_equal(url(&p, "turn:192.0.2.1:3478"), "turn:192.0.2.1:3478");
    policy(&p, "", "", ""); /* not set: keep */
    assert_int_equal(p.mode, KH_PRIVACY_KEEP);
}

static void test_truncate(void **state)
{
    (void)state;
    struct kh_privacy p;
    policy(&p, "truncate", "", "");
    assert_string_equal(addr(&p, "192.0.2.2"), "192.0.2.0");
    assert_string_equal(addr(&p, "203.0.113.255"), "203.0.113.0");
    assert_string_equal(addr(&p, "fd00::2"), "fd00::");
    assert_string_equal(addr(&p, "2001:db8:1:2:3:4:5:6"), "2001:db8:1::");
    assert_string_equal(addr(&p, "2001:DB8:ffff:ffff::1"), "2001:db8:ffff::");
    assert_string_equal(addr(&p, "::ffff:192.0.2.77"), "::ffff:192.0.2.0");
    assert_string_equal(addr(&p, "fe80::1234:5678%eth0"), "fe80::");
}

static void test_hash(void **state)
{
    (void)state;
    struct kh_privacy p, other;
    policy(&p, "hash", "", KEY);
    policy(&other, "hash", "", "another-key-of-16-bytes");
    assert_string_equal(addr(&p, "192.0.2.2"), TOKEN_V4);
    assert_string_equal(addr(&p, "fd00::2"), TOKEN_V6);
    /* the same address however written; an IPv4-mapped one as its IPv4 form */
    assert_string_equal(addr(&p, "FD00:0:0::2"), TOKEN_V6);
    assert_string_equal(addr(&p, "::ffff:192.0.2.2"), TOKEN_V4);
    assert_string_equal(addr(&p, "fd00::2%1"), TOKEN_V6);
    assert_int_equal(strlen(addr(&p, "198.51.100.1")), KH_PRIVACY_TOKEN_LEN);
    assert_string_not_equal(addr(&p, "198.51.100.1"), TOKEN_V4);
    /* another key, other tokens */
    assert_string_not_equal(addr(&other, "192.0.2.2"), TOKEN_V4);
    assert_string_not_equal(addr(&other, "fd00::2"), TOKEN_V6);
    /* a token is no address: hashing it again leaves it */
    assert_string_equal(addr(&p, TOKEN_V4), TOKEN_V4);
}

static void test_drop(void **state)
{
    (void)state;
    struct kh_privacy p;
    policy(&p, "drop", "", "");
    assert_string_equal(addr(&p, "192.0.2.2"), "NULL");
    assert_string_equal(addr(&p, "fd00::2"), "NULL");
    assert_string_equal(url(&p, "turn:192.0.2.1:3478?transport=udp"), "NULL");
    assert_string_equal(url(&p, "stun:stun.example.com:3478"), "stun:stun.example.com:3478");
}

static void test_keep_networks(void **state)
{
    (void)state;
    static const char *const modes[] = {"truncate", "hash", "drop"};
    for (size_t i = 0; i < 3; i++) {
        struct kh_privacy p;
        policy(&p, modes[i], " 192.0.2.0/24 ,2001:db8::/32, 198.51.100.7", KEY);
        assert_int_equal(p.nkeep, 3);
        assert_string_equal(addr(&p, "192.0.2.2"), "192.0.2.2");
        assert_string_equal(addr(&p, "192.0.2.255"), "192.0.2.255");
        assert_string_equal(addr(&p, "::ffff:192.0.2.9"), "::ffff:192.0.2.9");
        assert_string_equal(addr(&p, "2001:db8:ffff::1"), "2001:db8:ffff::1");
        assert_string_equal(addr(&p, "198.51.100.7"), "198.51.100.7");
        assert_string_equal(url(&p, "turn:[2001:db8::5]:3478?transport=tcp"),
                            "turn:[2001:db8::5]:3478?transport=tcp");
        /* just outside */
        assert_string_not_equal(addr(&p, "192.0.3.2"), "192.0.3.2");
        assert_string_not_equal(addr(&p, "2001:db9::1"), "2001:db9::1");
        assert_string_not_equal(addr(&p, "198.51.100.8"), "198.51.100.8");
    }
    struct kh_privacy p;
    policy(&p, "truncate", "0.0.0.0/0", "");
    assert_string_equal(addr(&p, "203.0.113.9"), "203.0.113.9");
    assert_string_equal(addr(&p, "fd00::2"), "fd00::"); /* an IPv4 network keeps no IPv6 */
}

static void test_left_alone(void **state)
{
    (void)state;
    static const char *const values[] = {
        "04b77ebf-e3fe-46d6-aca7-617490f159a5.local", /* Firefox's mDNS host candidates */
        "(redacted)",
        "stun.example.com",
        "",
        "192.0.2",
        "192.0.2.2.5",
        "256.0.2.1",
        "192.0.2.2:3478",
        " 192.0.2.2",
        "fd00:::2",
        "fd00::2::1",
        "%eth0",
        "0x7f.0.0.1",
        "a very long string that is no address at all, longer than any address can be",
    };
    static const char *const modes[] = {"truncate", "hash", "drop"};
    for (size_t m = 0; m < 3; m++) {
        struct kh_privacy p;
        policy(&p, modes[m], "", KEY);
        for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++)
            assert_string_equal(addr(&p, values[i]), values[i]);
        assert_string_equal(url(&p, "turn:relay.example.com:3478?transport=udp"),
                            "turn:relay.example.com:3478?transport=udp");
        assert_string_equal(url(&p, "192.0.2.2"), "192.0.2.2"); /* no scheme */
        assert_string_equal(url(&p, "turn:[192.0.2.2"), "turn:[192.0.2.2");
        assert_string_equal(url(&p, "turn:"), "turn:");
    }
}

static void test_url(void **state)
{
    (void)state;
    struct kh_privacy p;
    policy(&p, "truncate", "", "");
    assert_string_equal(url(&p, "turn:192.0.2.1:3478?transport=udp"),
                        "turn:192.0.2.0:3478?transport=udp");
    assert_string_equal(url(&p, "stun:192.0.2.1"), "stun:192.0.2.0");
    assert_string_equal(url(&p, "turns:198.51.100.9:443?transport=tcp"),
                        "turns:198.51.100.0:443?transport=tcp");
    assert_string_equal(url(&p, "stun:[2001:db8:1:2::1]:3478"), "stun:[2001:db8:1::]:3478");
    assert_string_equal(url(&p, "turn:2001:db8:1:2::1?transport=udp"),
                        "turn:[2001:db8:1::]?transport=udp");
    assert_string_equal(url(&p, "turn://192.0.2.1:3478"), "turn://192.0.2.0:3478");
    policy(&p, "hash", "", KEY);
    assert_string_equal(url(&p, "turn:192.0.2.2:3478?transport=udp"),
                        "turn:[" TOKEN_V4 "]:3478?transport=udp");
    assert_string_equal(url(&p, "stun:[fd00::2]:19302"), "stun:[" TOKEN_V6 "]:19302");
    /* too little room: the url goes rather than stay as it is */
    char small[8];
    size_t n;
    const char *u = "turn:192.0.2.2:3478";
    assert_int_equal(kh_privacy_url(&p, u, strlen(u), small, sizeof(small), &n),
                     KH_PRIVACY_NULL);
}

static void refused(const char *mode, const char *keep, const char *key, const char *prefix)
{
    struct kh_privacy p;
    const char *err = NULL;
    assert_int_equal(kh_privacy_init(&p, mode, keep, key, kh_tls_hmac_sha256, &err), KH_EINVAL);
    assert_non_null(err);
    kht_assert_prefix(err, prefix);
}

static void test_refusals(void **state)
{
    (void)state;
    refused("anonymize", "", "", "privacy_ip: must be one of keep|truncate|hash|drop");
    refused("hash", "", "", "privacy_hash_key: required when privacy_ip = hash");
    refused("hash", "", "short", "privacy_hash_key: must be 16..256 bytes, got 5");
    refused("truncate", "", "short", "privacy_hash_key: must be 16..256 bytes");
    refused("keep", "10.0.0.0/33", "", "privacy_keep_networks: '10.0.0.0/33': the prefix");
    refused("keep", "10.0.0.1/8", "", "privacy_keep_networks: '10.0.0.1/8': has bits set");
    refused("keep", "192.0.2.0/24,,10.0.0.0/8", "", "privacy_keep_networks: '': not an IPv4");
    refused("keep", "example.com/24", "", "privacy_keep_networks: 'example.com/24': not an");
    refused("keep", "2001:db8::/129", "", "privacy_keep_networks: '2001:db8::/129': the");
    refused("keep", "10.0.0.0/", "", "privacy_keep_networks: '10.0.0.0/': the prefix");
    refused("keep", "fe80::%eth0/64", "", "privacy_keep_networks: 'fe80::%eth0/64': not an");
    struct kh_privacy p;
    const char *err = NULL;
    assert_int_equal(kh_privacy_init(&p, "hash", "", KEY, NULL, &err), KH_EINVAL);
    /* a trailing comma is fine */
    policy(&p, "keep", "10.0.0.0/8,", "");
    assert_int_equal(p.nkeep, 1);
}

/* --- through the envelope parser ------------------------------------------------------- */

/* A local candidate with every address member, extra members (an IP literal on its own, an
 * mDNS name, an object and an array holding IPs) and, in the first one, type third (the fast
 * path), in the second type last (members mapped at the end). */
#define CANDIDATES                                                                            \
    "[{\"id\":\"L1\",\"timestamp\":1,\"type\":\"local-candidate\",\"address\":\"192.0.2.2\","  \
    "\"ip\":\"192.0.2.2\",\"relatedAddress\":\"fd00::2\",\"port\":5000,"                       \
    "\"url\":\"turn:198.51.100.20:3478?transport=udp\",\"candidateType\":\"relay\","           \
    "\"publicIp\":\"192.0.2.2\",\"hostName\":\"x.local\","                                     \
    "\"servers\":{\"a\":\"fd00::2\",\"b\":[\"192.0.2.2\",7]}},"                                \
    "{\"id\":\"L2\",\"timestamp\":1,\"address\":\"fd00::2\",\"ip\":\"abc.local\","            \
    "\"port\":\"192.0.2.2\",\"type\":\"remote-candidate\"}]"

static struct kh_report *parse_with(const struct kh_privacy *p, const char *stats)
{
    struct kh_envelope_limits lim = kh_envelope_default_limits;
    lim.privacy = p;
    char *body = kht_envelope(stats, NULL, NULL);
    struct kh_report *r = NULL;
    char err[512];
    if (kht_parse_ex(body, strlen(body), 0, KH_REPORT_CONNECTION, KH_FLAVOR_EXPORTER, &lim, &r,
                     err, sizeof(err)) != 0)
        fail_msg("refused: %s", err);
    free(body);
    return r;
}

static const char *text(const struct kh_row *row, const char *member)
{
    const struct kh_value *v = kht_val(row, member);
    return v->type == 0 ? "NULL" : v->u.s;
}

static void test_rows_truncate(void **state)
{
    (void)state;
    struct kh_privacy p;
    policy(&p, "truncate", "", "");
    struct kh_report *r = parse_with(&p, CANDIDATES);
    const struct kh_row *l1 = kht_row(r, "L1"), *l2 = kht_row(r, "L2");
    assert_non_null(l1);
    assert_non_null(l2);
    assert_string_equal(text(l1, "address"), "192.0.2.0");
    assert_string_equal(text(l1, "ip"), "192.0.2.0");
    assert_string_equal(text(l1, "relatedAddress"), "fd00::");
    assert_string_equal(text(l1, "url"), "turn:198.51.100.0:3478?transport=udp");
    assert_string_equal(text(l1, "candidateType"), "relay");
    assert_int_equal(kht_val(l1, "address")->len, strlen("192.0.2.0"));
    assert_string_equal(l1->extra.p, "{\"publicIp\":\"192.0.2.0\",\"hostName\":\"x.local\","
                                     "\"servers\":{\"a\":\"fd00::\",\"b\":[\"192.0.2.0\",7]}}");
    assert_string_equal(text(l2, "address"), "fd00::");
    assert_string_equal(text(l2, "ip"), "abc.local");
    assert_string_equal(l2->extra.p, "{\"port\":\"192.0.2.0\"}");
    kh_report_free(r);
}

static void test_rows_hash_drop_keep(void **state)
{
    (void)state;
    struct kh_privacy p;
    policy(&p, "hash", "", KEY);
    struct kh_report *r = parse_with(&p, CANDIDATES);
    const struct kh_row *l1 = kht_row(r, "L1");
    assert_string_equal(text(l1, "address"), TOKEN_V4);
    assert_string_equal(text(l1, "ip"), TOKEN_V4);
    assert_string_equal(text(l1, "relatedAddress"), TOKEN_V6);
    assert_string_equal(l1->extra.p, "{\"publicIp\":\"" TOKEN_V4 "\",\"hostName\":\"x.local\","
                                     "\"servers\":{\"a\":\"" TOKEN_V6 "\",\"b\":[\"" TOKEN_V4
                                     "\",7]}}");
    kh_report_free(r);

    policy(&p, "drop", "", "");
    r = parse_with(&p, CANDIDATES);
    l1 = kht_row(r, "L1");
    assert_string_equal(text(l1, "address"), "NULL");
    assert_string_equal(text(l1, "ip"), "NULL");
    assert_string_equal(text(l1, "relatedAddress"), "NULL");
    assert_string_equal(text(l1, "url"), "NULL");
    assert_int_equal(kht_val(l1, "port")->u.i, 5000);
    assert_string_equal(l1->extra.p, "{\"publicIp\":null,\"hostName\":\"x.local\","
                                     "\"servers\":{\"a\":null,\"b\":[null,7]}}");
    assert_string_equal(kht_row(r, "L2")->extra.p, "{\"port\":null}");
    kh_report_free(r);

    /* the operator's relay kept, the client's addresses not */
    policy(&p, "drop", "198.51.100.0/24", "");
    r = parse_with(&p, CANDIDATES);
    l1 = kht_row(r, "L1");
    assert_string_equal(text(l1, "url"), "turn:198.51.100.20:3478?transport=udp");
    assert_string_equal(text(l1, "address"), "NULL");
    kh_report_free(r);

    /* without a policy (or keep) every value is as sent */
    r = parse_with(NULL, CANDIDATES);
    l1 = kht_row(r, "L1");
    assert_string_equal(text(l1, "address"), "192.0.2.2");
    assert_string_equal(text(l1, "url"), "turn:198.51.100.20:3478?transport=udp");
    assert_string_equal(l1->extra.p, "{\"publicIp\":\"192.0.2.2\",\"hostName\":\"x.local\","
                                     "\"servers\":{\"a\":\"fd00::2\",\"b\":[\"192.0.2.2\",7]}}");
    kh_report_free(r);
}

/* Neither raw address of the fixtures (Chromium's 192.0.2.2 and fd00::2) in any text. */
static void assert_clean(const char *s, const char *file)
{
    if (s && (strstr(s, "192.0.2.2") || strstr(s, "fd00::2")))
        fail_msg("%s: a raw address is left: %s", file, s);
}

static size_t check_fixture(const struct kh_privacy *p, const char *dir, const char *name)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    char *stats = kht_read_file(path, NULL);
    struct kh_report *r = parse_with(p, stats);
    size_t changed = 0;
    for (const struct kh_row *row = r->rows; row; row = row->next) {
        const struct kh_stats_table *t = &kh_stats_tables[row->table];
        for (size_t i = 0; i < t->nmembers; i++)
            if (row->vals[i].type == KH_COL_TEXT || row->vals[i].type == KH_COL_JSON)
                assert_clean(row->vals[i].u.s, name);
        assert_clean(row->extra.p, name);
        if (strcmp(row->stats_type.p, "local-candidate") == 0 ||
            strcmp(row->stats_type.p, "remote-candidate") == 0) {
            const char *a = text(row, "address");
            /* mDNS names and "(redacted)" are no addresses: as they were */
            if (strstr(a, ".local") || strcmp(a, "(redacted)") == 0)
                continue;
            changed++;
        }
    }
    kh_report_free(r);
    free(stats);
    return changed;
}

static void test_fixtures(void **state)
{
    (void)state;
    static const char *const modes[] = {"truncate", "hash", "drop"};
    for (size_t m = 0; m < 3; m++) {
        struct kh_privacy p;
        policy(&p, modes[m], "", KEY);
        DIR *d = opendir(KH_FIXTURES_DIR);
        assert_non_null(d);
        size_t files = 0, changed = 0;
        for (struct dirent *de; (de = readdir(d)) != NULL;) {
            size_t n = strlen(de->d_name);
            if (n < 5 || strcmp(de->d_name + n - 5, ".json") != 0 ||
                strcmp(de->d_name, "manifest.json") == 0)
                continue;
            changed += check_fixture(&p, KH_FIXTURES_DIR, de->d_name);
            files++;
        }
        closedir(d);
        assert_true(files >= 8);
        assert_true(changed >= 4 * files / 2); /* Chromium's 4 candidates a report */
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keep),           cmocka_unit_test(test_truncate),
        cmocka_unit_test(test_hash),           cmocka_unit_test(test_drop),
        cmocka_unit_test(test_keep_networks),  cmocka_unit_test(test_left_alone),
        cmocka_unit_test(test_url),            cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_rows_truncate),  cmocka_unit_test(test_rows_hash_drop_keep),
        cmocka_unit_test(test_fixtures),
    };
    return cmocka_run_group_tests(tests, kht_schema_setup, kht_schema_teardown);
}
