/*
 * privacy: IP addresses made coarser, keyed tokens, or nothing, before storage. See
 * privacy.h. The rules per mode:
 *   truncate  IPv4 to its /24 (192.0.2.77 -> 192.0.2.0), IPv6 to its /48 (2001:db8:1:2::5 ->
 *             2001:db8:1::), an IPv4-mapped IPv6 address as its IPv4 form (::ffff:192.0.2.0)
 *   hash      "h:" and the first 8 bytes (16 hex digits) of HMAC-SHA256(key, family byte 4 or
 *             6, then the address's 4 or 16 bytes): the same address, however it is written
 *             (fd00::2, FD00:0::2, ::ffff:192.0.2.2 for 192.0.2.2), gives the same token
 *   drop      the value becomes NULL (JSON null inside extra: the member stays, its value goes)
 */
#include "sora/privacy.h"

#include <string.h>

#include "core/config.h"
#include "core/errors.h"
#include "sora/schema.h"

_Static_assert(KH_PRIVACY_KEY_MIN == KH_CONFIG_HASH_KEY_MIN &&
                   KH_PRIVACY_KEY_MAX == KH_CONFIG_HASH_KEY_MAX,
               "privacy_hash_key's bounds: the same in core/config.h and sora/privacy.h");

static const char *const mode_names[] = {"keep", "truncate", "hash", "drop"};

static int parse_mode(const char *s, enum kh_privacy_mode *out)
{
    if (s == NULL || s[0] == '\0') {
        *out = KH_PRIVACY_KEEP;
        return 0;
    }
    for (size_t i = 0; i < sizeof(mode_names) / sizeof(mode_names[0]); i++)
        if (strcmp(s, mode_names[i]) == 0) {
            *out = (enum kh_privacy_mode)i;
            return 0;
        }
    return KH_EINVAL;
}

/* The address columns of each table, found once by name. */
static void find_columns(struct kh_privacy *p)
{
    static const char *const names[KH_PRIV_COLS] = {"address", "ip", "relatedAddress", "url"};
    for (size_t t = 0; t < KH_REPORT_MAX_TABLES; t++)
        for (int c = 0; c < KH_PRIV_COLS; c++)
            p->cols[t][c] = t < kh_stats_ntables
                                ? (int16_t)kh_schema_member((int)t, names[c], strlen(names[c]))
                                : -1;
}

int kh_privacy_init(struct kh_privacy *p, const char *mode, const char *keep_networks,
                    const char *key, kh_privacy_mac_fn mac, const char **err)
{
    memset(p, 0, sizeof(*p));
    if (parse_mode(mode, &p->mode) != 0) {
        *err = kh_errf("privacy_ip: must be one of keep|truncate|hash|drop, got '%s'", mode);
        return KH_EINVAL;
    }
    const char *why;
    if (kh_ipnet_parse_list(keep_networks ? keep_networks : "", p->keep, KH_IPNET_MAX,
                            &p->nkeep, &why) != 0) {
        *err = kh_errf("privacy_keep_networks: %s", why);
        return KH_EINVAL;
    }
    size_t keylen = key ? strlen(key) : 0;
    if (p->mode == KH_PRIVACY_HASH && keylen == 0) {
        *err = "privacy_hash_key: required when privacy_ip = hash";
        return KH_EINVAL;
    }
    if (keylen > 0 && (keylen < KH_PRIVACY_KEY_MIN || keylen > KH_PRIVACY_KEY_MAX)) {
        *err = kh_errf("privacy_hash_key: must be %d..%d bytes, got %zu", KH_PRIVACY_KEY_MIN,
                       KH_PRIVACY_KEY_MAX, keylen);
        return KH_EINVAL;
    }
    if (p->mode == KH_PRIVACY_HASH && mac == NULL) {
        *err = "privacy_ip: hash needs an HMAC (none was given)";
        return KH_EINVAL;
    }
    memcpy(p->key, key ? key : "", keylen);
    p->keylen = keylen;
    p->mac = mac;
    find_columns(p);
    return 0;
}

static size_t token(const struct kh_privacy *p, const struct kh_ip *ip, char *out)
{
    static const char hex[] = "0123456789abcdef";
    uint8_t msg[17], mac[32];
    size_t n = ip->family == 4 ? 4 : 16;
    msg[0] = ip->family;
    memcpy(msg + 1, ip->b, n);
    p->mac(p->key, p->keylen, msg, n + 1, mac);
    out[0] = 'h';
    out[1] = ':';
    for (size_t i = 0; i < 8; i++) {
        out[2 + 2 * i] = hex[mac[i] >> 4];
        out[3 + 2 * i] = hex[mac[i] & 15];
    }
    out[KH_PRIVACY_TOKEN_LEN] = '\0';
    return KH_PRIVACY_TOKEN_LEN;
}

/* An address read from a value: what it becomes. */
static enum kh_privacy_result apply(const struct kh_privacy *p, struct kh_ip *ip, char *out,
                                    size_t *outlen)
{
    struct kh_ip v4;
    bool mapped = kh_ip_mapped4(ip, &v4);
    if (p->mode == KH_PRIVACY_KEEP || kh_ipnet_any(p->keep, p->nkeep, ip))
        return KH_PRIVACY_SAME;
    switch (p->mode) {
    case KH_PRIVACY_TRUNCATE:
        if (mapped)
            ip->b[15] = 0;
        else
            kh_ip_mask(ip, ip->family == 4 ? 24 : 48);
        *outlen = kh_ip_format(ip, out);
        return KH_PRIVACY_CHANGED;
    case KH_PRIVACY_HASH: *outlen = token(p, mapped ? &v4 : ip, out); return KH_PRIVACY_CHANGED;
    case KH_PRIVACY_DROP: return KH_PRIVACY_NULL;
    default: return KH_PRIVACY_SAME;
    }
}

enum kh_privacy_result kh_privacy_address(const struct kh_privacy *p, const char *s, size_t n,
                                          char *out, size_t *outlen)
{
    struct kh_ip ip;
    if (!kh_privacy_active(p) || !kh_ip_parse(s, n, &ip))
        return KH_PRIVACY_SAME;
    return apply(p, &ip, out, outlen);
}

/* The host of a url: where it starts and ends in s, whether it was in brackets. */
struct host_span {
    size_t start, end;
    bool bracketed;
};

/* scheme ":" ["//"] host [":" port] ["?" query] (RFC 7064, 7065; "//" as some stacks write
 * it). An IPv6 host without brackets (two colons or more before the query) is the whole
 * authority. False when there is no scheme or no host. */
static bool find_host(const char *s, size_t n, struct host_span *h)
{
    const char *colon = memchr(s, ':', n);
    if (colon == NULL || colon == s)
        return false;
    size_t i = (size_t)(colon - s) + 1;
    if (n - i >= 2 && s[i] == '/' && s[i + 1] == '/')
        i += 2;
    size_t auth_end = i;
    while (auth_end < n && s[auth_end] != '?' && s[auth_end] != '/')
        auth_end++;
    h->bracketed = i < n && s[i] == '[';
    if (h->bracketed) {
        const char *close = memchr(s + i, ']', auth_end - i);
        if (close == NULL)
            return false;
        h->start = i + 1;
        h->end = (size_t)(close - s);
        return true;
    }
    size_t colons = 0, first = auth_end;
    for (size_t k = i; k < auth_end; k++)
        if (s[k] == ':' && colons++ == 0)
            first = k;
    h->start = i;
    h->end = colons >= 2 ? auth_end : first;
    return h->end > h->start;
}

enum kh_privacy_result kh_privacy_url(const struct kh_privacy *p, const char *s, size_t n,
                                      char *out, size_t outcap, size_t *outlen)
{
    struct host_span h;
    struct kh_ip ip;
    char host[KH_PRIVACY_ADDR_LEN];
    size_t hlen;
    if (!kh_privacy_active(p) || !find_host(s, n, &h) ||
        !kh_ip_parse(s + h.start, h.end - h.start, &ip))
        return KH_PRIVACY_SAME;
    enum kh_privacy_result res = apply(p, &ip, host, &hlen);
    if (res != KH_PRIVACY_CHANGED)
        return res;
    if (outcap < n + KH_PRIVACY_URL_EXTRA)
        return KH_PRIVACY_NULL;
    bool brackets = memchr(host, ':', hlen) != NULL;
    size_t pre = h.start - (h.bracketed ? 1 : 0), post = h.end + (h.bracketed ? 1 : 0);
    size_t k = 0;
    memcpy(out, s, pre);
    k += pre;
    if (brackets)
        out[k++] = '[';
    memcpy(out + k, host, hlen);
    k += hlen;
    if (brackets)
        out[k++] = ']';
    memcpy(out + k, s + post, n - post);
    k += n - post;
    out[k] = '\0';
    *outlen = k;
    return KH_PRIVACY_CHANGED;
}

/* One text value of the row: replaced by a copy in a, or made NULL. */
static int apply_value(const struct kh_privacy *p, struct kh_value *v, bool url,
                       struct kh_arena *a)
{
    char small[KH_PRIVACY_ADDR_LEN], *buf = small;
    size_t cap = sizeof(small), len = 0;
    if (v->type != KH_COL_TEXT || v->u.s == NULL)
        return 0;
    if (url) {
        cap = v->len + KH_PRIVACY_URL_EXTRA;
        if ((buf = kh_arena_alloc(a, cap)) == NULL)
            return KH_ENOMEM;
    }
    enum kh_privacy_result res = url ? kh_privacy_url(p, v->u.s, v->len, buf, cap, &len)
                                     : kh_privacy_address(p, v->u.s, v->len, buf, &len);
    if (res == KH_PRIVACY_NULL) {
        v->type = 0;
    } else if (res == KH_PRIVACY_CHANGED) {
        const char *copy = url ? buf : kh_arena_strndup(a, buf, len);
        if (copy == NULL)
            return KH_ENOMEM;
        v->u.s = copy;
        v->len = (uint32_t)len;
    }
    return 0;
}

int kh_privacy_row(const struct kh_privacy *p, struct kh_row *row, struct kh_arena *a)
{
    if (!kh_privacy_active(p) || row->table < 0 || row->table >= KH_REPORT_MAX_TABLES)
        return 0;
    for (int c = 0; c < KH_PRIV_COLS; c++) {
        int idx = p->cols[row->table][c];
        if (idx >= 0 && apply_value(p, &row->vals[idx], c == KH_PRIV_URL, a) != 0)
            return KH_ENOMEM;
    }
    return 0;
}
