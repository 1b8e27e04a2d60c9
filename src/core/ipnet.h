/*
 * ipnet: IP address literals and networks (CIDR), read and written by inet_pton and inet_ntop
 * alone: an address is whatever they accept, nothing else. For the config's network lists
 * (privacy_keep_networks) and for what IP privacy does to addresses (sora/privacy.h). Pure;
 * any thread.
 */
#ifndef KH_IPNET_H
#define KH_IPNET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The longest text kh_ip_format writes, NUL included (INET6_ADDRSTRLEN). */
#define KH_IP_TEXT_LEN 46

/* An address: family 4 (bytes 0..3 used) or 6. */
struct kh_ip {
    uint8_t family;
    uint8_t b[16];
};

/* A network: the address with its host bits zero, and the prefix length. */
struct kh_ipnet {
    struct kh_ip ip;
    uint8_t prefix;
};

/* Most networks a list may hold. */
#define KH_IPNET_MAX 64

/* s[0, n) is an IPv4 or IPv6 literal (an IPv6 one may carry a "%zone" suffix, which is not
 * kept): true and *out, else false. */
bool kh_ip_parse(const char *s, size_t n, struct kh_ip *out);
/* The text form of ip (inet_ntop's) into out[KH_IP_TEXT_LEN]; its length. */
size_t kh_ip_format(const struct kh_ip *ip, char *out);
/* An IPv6 address that stands for an IPv4 one (::ffff:a.b.c.d): true and its IPv4 form. */
bool kh_ip_mapped4(const struct kh_ip *ip, struct kh_ip *v4);
/* Zeroes the bits of ip past the first `prefix` (capped at the family's width). */
void kh_ip_mask(struct kh_ip *ip, unsigned prefix);

/* "ADDRESS/PREFIX" or a bare address (a network of one: /32, /128), blanks around it allowed.
 * 0, or KH_EINVAL with *why: a literal reason to put after the quoted entry. Host bits set
 * past the prefix are refused (10.0.0.1/8 is not a network). */
int kh_ipnet_parse(const char *s, size_t n, struct kh_ipnet *out, const char **why);
/* A comma-separated list ("" = none) into out[0, max), *count set. 0, or KH_EINVAL with *err
 * ("'ENTRY': reason", kh_errf's text). */
int kh_ipnet_parse_list(const char *list, struct kh_ipnet *out, size_t max, size_t *count,
                        const char **err);
/* ip is in net: the same family (an IPv4-mapped IPv6 address counts as its IPv4 form for an
 * IPv4 network) and the same first `prefix` bits. */
bool kh_ipnet_contains(const struct kh_ipnet *net, const struct kh_ip *ip);
/* ip is in one of nets[0, n). */
bool kh_ipnet_any(const struct kh_ipnet *nets, size_t n, const struct kh_ip *ip);

#endif
