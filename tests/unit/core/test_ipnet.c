/*
 * Unit tests of src/core/ipnet.c: literals as inet_pton reads them (a zone suffix dropped),
 * their text back through inet_ntop, masking, IPv4-mapped addresses, networks and lists
 * (bare addresses, blanks, a trailing comma) with their refusals, and membership.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/errors.h"
#include "core/ipnet.h"

static struct kh_ip ip_of(const char *s)
{
    struct kh_ip ip;
    if (!kh_ip_parse(s, strlen(s), &ip))
        fail_msg("'%s' not read", s);
    return ip;
}

static const char *text(const struct kh_ip *ip)
{
    static char out[KH_IP_TEXT_LEN];
    size_t n = kh_ip_format(ip, out);
    assert_int_equal(n, strlen(out));
    return out;
}

static void test_parse_format(void **state)
{
    (void)state;
    struct kh_ip ip = ip_of("192.0.2.2");
    assert_int_equal(ip.family, 4);
    assert_string_equal(text(&ip), "192.0.2.2");
    ip = ip_of("FD00:0::2");
    assert_int_equal(ip.family, 6);
    assert_string_equal(text(&ip), "fd00::2");
    ip = ip_of("fe80::1%eth0");
    assert_string_equal(text(&ip), "fe80::1");
    /* a piece of a longer text: only n bytes are read */
    assert_true(kh_ip_parse("10.0.0.1/8", 8, &ip));
    assert_string_equal(text(&ip), "10.0.0.1");
    static const char *const bad[] = {"",         "1.2.3",   "1.2.3.4.5", "256.1.1.1",
                                      "::1::",    "x.local", "%eth0",     "1.2.3.4%eth0",
                                      " 1.2.3.4", "1.2.3.4 "};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_false(kh_ip_parse(bad[i], strlen(bad[i]), &ip));
    char big[100];
    memset(big, '1', sizeof(big));
    assert_false(kh_ip_parse(big, sizeof(big), &ip));
}

static void test_mask_mapped(void **state)
{
    (void)state;
    struct kh_ip ip = ip_of("203.0.113.77"), v4;
    kh_ip_mask(&ip, 24);
    assert_string_equal(text(&ip), "203.0.113.0");
    kh_ip_mask(&ip, 40); /* past the width: nothing */
    assert_string_equal(text(&ip), "203.0.113.0");
    ip = ip_of("2001:db8:1:2:3:4:5:6");
    kh_ip_mask(&ip, 48);
    assert_string_equal(text(&ip), "2001:db8:1::");
    ip = ip_of("2001:db8:ffff::");
    kh_ip_mask(&ip, 33);
    assert_string_equal(text(&ip), "2001:db8:8000::");
    ip = ip_of("::ffff:192.0.2.9");
    assert_true(kh_ip_mapped4(&ip, &v4));
    assert_string_equal(text(&v4), "192.0.2.9");
    ip = ip_of("::192.0.2.9");
    assert_false(kh_ip_mapped4(&ip, &v4));
}

static void test_networks(void **state)
{
    (void)state;
    struct kh_ipnet n[KH_IPNET_MAX];
    size_t count;
    const char *err = NULL;
    assert_int_equal(kh_ipnet_parse_list(" 192.0.2.0/24,2001:db8::/32 , 198.51.100.7,", n,
                                         KH_IPNET_MAX, &count, &err),
                     0);
    assert_int_equal(count, 3);
    assert_int_equal(n[0].prefix, 24);
    assert_int_equal(n[2].prefix, 32);
    struct kh_ip in = ip_of("192.0.2.200"), out = ip_of("192.0.3.1");
    assert_true(kh_ipnet_contains(&n[0], &in));
    assert_false(kh_ipnet_contains(&n[0], &out));
    struct kh_ip mapped = ip_of("::ffff:192.0.2.1"), v6 = ip_of("2001:db8:abcd::1");
    assert_true(kh_ipnet_contains(&n[0], &mapped));
    assert_true(kh_ipnet_any(n, count, &v6));
    assert_false(kh_ipnet_contains(&n[0], &v6));
    struct kh_ip host = ip_of("198.51.100.7"), next = ip_of("198.51.100.8");
    assert_true(kh_ipnet_any(n, count, &host));
    assert_false(kh_ipnet_any(n, count, &next));
    assert_int_equal(kh_ipnet_parse_list("", n, KH_IPNET_MAX, &count, &err), 0);
    assert_int_equal(count, 0);
    assert_int_equal(kh_ipnet_parse_list("0.0.0.0/0,::/0", n, KH_IPNET_MAX, &count, &err), 0);
    assert_true(kh_ipnet_any(n, count, &v6));
}

static void refused(const char *list, size_t max, const char *want)
{
    struct kh_ipnet n[4];
    size_t count;
    const char *err = NULL;
    assert_int_equal(kh_ipnet_parse_list(list, n, max, &count, &err), KH_EINVAL);
    assert_non_null(err);
    if (strncmp(err, want, strlen(want)) != 0)
        fail_msg("'%s' does not start with '%s'", err, want);
}

static void test_refusals(void **state)
{
    (void)state;
    refused("10.0.0.0/33", 4, "'10.0.0.0/33': the prefix length must be 0..32");
    refused("::/129", 4, "'::/129': the prefix length must be 0..128");
    refused("10.0.0.0/x", 4, "'10.0.0.0/x': the prefix length");
    refused("10.0.0.0/-1", 4, "'10.0.0.0/-1': the prefix length");
    refused("10.0.0.0/0008", 4, "'10.0.0.0/0008': the prefix length");
    refused("10.0.0.1/8", 4, "'10.0.0.1/8': has bits set past its prefix length");
    refused("a.example/8", 4, "'a.example/8': not an IPv4 or IPv6 address");
    refused("10.0.0.0/8,,::/0", 4, "'': not an IPv4 or IPv6 address");
    refused("1.0.0.0/8,2.0.0.0/8,3.0.0.0/8", 2, "more than 2 networks");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_format),
        cmocka_unit_test(test_mask_mapped),
        cmocka_unit_test(test_networks),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
