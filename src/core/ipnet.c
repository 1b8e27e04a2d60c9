/*
 * ipnet: IP literals and networks through inet_pton and inet_ntop. See ipnet.h.
 */
#include "core/ipnet.h"

#include <arpa/inet.h>
#include <string.h>

#include "core/errors.h"

static const uint8_t mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

bool kh_ip_parse(const char *s, size_t n, struct kh_ip *out)
{
    char text[KH_IP_TEXT_LEN + 1];
    const char *zone = memchr(s, '%', n);
    if (zone && memchr(s, ':', (size_t)(zone - s)))
        n = (size_t)(zone - s); /* fe80::1%eth0: the zone names an interface of the client */
    if (n == 0 || n >= sizeof(text))
        return false;
    memcpy(text, s, n);
    text[n] = '\0';
    memset(out, 0, sizeof(*out));
    if (inet_pton(AF_INET, text, out->b) == 1) {
        out->family = 4;
        return true;
    }
    if (inet_pton(AF_INET6, text, out->b) == 1) {
        out->family = 6;
        return true;
    }
    return false;
}

size_t kh_ip_format(const struct kh_ip *ip, char *out)
{
    if (inet_ntop(ip->family == 4 ? AF_INET : AF_INET6, ip->b, out, KH_IP_TEXT_LEN) == NULL)
        out[0] = '\0';
    return strlen(out);
}

bool kh_ip_mapped4(const struct kh_ip *ip, struct kh_ip *v4)
{
    if (ip->family != 6 || memcmp(ip->b, mapped_prefix, sizeof(mapped_prefix)) != 0)
        return false;
    memset(v4, 0, sizeof(*v4));
    v4->family = 4;
    memcpy(v4->b, ip->b + 12, 4);
    return true;
}

void kh_ip_mask(struct kh_ip *ip, unsigned prefix)
{
    unsigned width = ip->family == 4 ? 32 : 128;
    for (unsigned bit = prefix < width ? prefix : width; bit < width; bit++)
        ip->b[bit / 8] &= (uint8_t) ~(0x80u >> (bit % 8));
}

/* The prefix length after '/': digits only, at most the family's width. */
static bool read_prefix(const char *s, size_t n, unsigned width, unsigned *out)
{
    unsigned v = 0;
    if (n == 0 || n > 3)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    *out = v;
    return v <= width;
}

static bool blank(char c) { return c == ' ' || c == '\t'; }

int kh_ipnet_parse(const char *s, size_t n, struct kh_ipnet *out, const char **why)
{
    while (n > 0 && blank(*s))
        s++, n--;
    while (n > 0 && blank(s[n - 1]))
        n--;
    const char *slash = memchr(s, '/', n);
    size_t alen = slash ? (size_t)(slash - s) : n;
    if (memchr(s, '%', alen) || !kh_ip_parse(s, alen, &out->ip)) {
        *why = "not an IPv4 or IPv6 address (ADDRESS/PREFIX, e.g. 192.0.2.0/24 or "
               "2001:db8::/32)";
        return KH_EINVAL;
    }
    unsigned width = out->ip.family == 4 ? 32 : 128, prefix = width;
    if (slash && !read_prefix(slash + 1, n - alen - 1, width, &prefix)) {
        *why = out->ip.family == 4 ? "the prefix length must be 0..32"
                                   : "the prefix length must be 0..128";
        return KH_EINVAL;
    }
    struct kh_ip masked = out->ip;
    kh_ip_mask(&masked, prefix);
    if (memcmp(masked.b, out->ip.b, sizeof(masked.b)) != 0) {
        *why = "has bits set past its prefix length (the network's first address, "
               "e.g. 10.0.0.0/8, not 10.0.0.1/8)";
        return KH_EINVAL;
    }
    out->prefix = (uint8_t)prefix;
    return 0;
}

int kh_ipnet_parse_list(const char *list, struct kh_ipnet *out, size_t max, size_t *count,
                        const char **err)
{
    *count = 0;
    for (const char *p = list; *p;) {
        size_t n = strcspn(p, ",");
        const char *why;
        size_t lead = 0;
        while (lead < n && blank(p[lead]))
            lead++;
        if (lead == n && p[n] == '\0' && *count > 0)
            break; /* a trailing comma */
        if (*count == max) {
            *err = kh_errf("more than %zu networks", max);
            return KH_EINVAL;
        }
        if (kh_ipnet_parse(p, n, &out[*count], &why) != 0) {
            *err = kh_errf("'%.*s': %s", (int)(n - lead > 64 ? 64 : n - lead), p + lead, why);
            return KH_EINVAL;
        }
        (*count)++;
        p += n + (p[n] == ',');
    }
    return 0;
}

bool kh_ipnet_contains(const struct kh_ipnet *net, const struct kh_ip *ip)
{
    struct kh_ip v4;
    if (net->ip.family == 4 && kh_ip_mapped4(ip, &v4))
        ip = &v4;
    if (ip->family != net->ip.family)
        return false;
    struct kh_ip masked = *ip;
    kh_ip_mask(&masked, net->prefix);
    return memcmp(masked.b, net->ip.b, sizeof(masked.b)) == 0;
}

bool kh_ipnet_any(const struct kh_ipnet *nets, size_t n, const struct kh_ip *ip)
{
    for (size_t i = 0; i < n; i++)
        if (kh_ipnet_contains(&nets[i], ip))
            return true;
    return false;
}
