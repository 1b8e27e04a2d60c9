/*
 * privacy: what kohaku does to the IP addresses clients report before anything keeps them
 * (README, "IP privacy"): privacy_ip = keep | truncate | hash | drop, applied to the
 * candidates' address, ip and relatedAddress, to the host of their STUN/TURN url, and to
 * every string value that lands in JSON (extra, and JSON columns) and is an IP literal.
 * Addresses in privacy_keep_networks are kept as they are. Only IP literals are touched (by
 * inet_pton's reading, core/ipnet.h): mDNS names (<uuid>.local), host names, Firefox's
 * "(redacted)" and anything malformed stay as they are.
 *
 * The envelope parser applies it as each stats object's row is finished, so the batcher,
 * the quality stage and the stores only ever see the result. A policy is made once at
 * start-up and read, never written, by every parsing thread. The keyed hash is the caller's
 * (kh_privacy_mac_fn): this layer uses no crypto library, the program hands OpenSSL's HMAC
 * in (net/tls.h).
 */
#ifndef KH_PRIVACY_H
#define KH_PRIVACY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/arena.h"
#include "core/ipnet.h"
#include "sora/report.h"

enum kh_privacy_mode { KH_PRIVACY_KEEP, KH_PRIVACY_TRUNCATE, KH_PRIVACY_HASH, KH_PRIVACY_DROP };

/* HMAC-SHA256 of msg[0, len) under key[0, keylen) into out. */
typedef void (*kh_privacy_mac_fn)(const void *key, size_t keylen, const void *msg, size_t len,
                                  uint8_t out[32]);

/* The hash key's length bounds, in bytes. */
#define KH_PRIVACY_KEY_MIN 16
#define KH_PRIVACY_KEY_MAX 256
/* "h:" and 16 hex digits: the first 8 bytes of the HMAC. */
#define KH_PRIVACY_TOKEN_LEN 18
/* Room for any value kh_privacy_address writes, NUL included. */
#define KH_PRIVACY_ADDR_LEN KH_IP_TEXT_LEN

/* The columns it looks at, per table. */
enum kh_privacy_col { KH_PRIV_ADDRESS, KH_PRIV_IP, KH_PRIV_RELATED, KH_PRIV_URL, KH_PRIV_COLS };

struct kh_privacy {
    enum kh_privacy_mode mode;
    struct kh_ipnet keep[KH_IPNET_MAX];
    size_t nkeep;
    uint8_t key[KH_PRIVACY_KEY_MAX];
    size_t keylen;
    kh_privacy_mac_fn mac;
    int16_t cols[KH_REPORT_MAX_TABLES][KH_PRIV_COLS]; /* member index, or -1 */
};

/* Sets p from the config's text: mode (keep, truncate, hash, drop; "" = keep), the networks
 * kept as they are (a comma-separated CIDR list), the hash key (needed by hash, at least
 * KH_PRIVACY_KEY_MIN bytes) and the HMAC to make tokens with (needed by hash). After
 * kh_schema_init (it finds each table's address columns). 0, or KH_EINVAL
 * with *err naming the key ("privacy_hash_key: ...", kh_errf's text or a literal). */
int kh_privacy_init(struct kh_privacy *p, const char *mode, const char *keep_networks,
                    const char *key, kh_privacy_mac_fn mac, const char **err);

/* Whether p changes anything (NULL: no policy, keep everything). */
static inline bool kh_privacy_active(const struct kh_privacy *p)
{
    return p != NULL && p->mode != KH_PRIVACY_KEEP;
}

/* What became of a value. */
enum kh_privacy_result {
    KH_PRIVACY_SAME,    /* as it is: not an IP literal, in a kept network, or mode keep */
    KH_PRIVACY_CHANGED, /* out[0, *outlen) replaces it (NUL-terminated) */
    KH_PRIVACY_NULL     /* it goes (mode drop) */
};

/* A value that may be an IP literal. out has KH_PRIVACY_ADDR_LEN bytes. */
enum kh_privacy_result kh_privacy_address(const struct kh_privacy *p, const char *s, size_t n,
                                          char *out, size_t *outlen);
/* A STUN/TURN url ("turn:192.0.2.1:3478?transport=udp", "stun:[2001:db8::1]:3478"): when its
 * host is an IP literal, the host is replaced as kh_privacy_address would (scheme, port and
 * query kept; a new host with ':' in it goes in brackets) or, with drop, the whole url goes.
 * out has outcap bytes, at least n + KH_PRIVACY_URL_EXTRA (with less, a url whose host would
 * change goes: KH_PRIVACY_NULL, so that nothing is kept by mistake). */
#define KH_PRIVACY_URL_EXTRA (KH_PRIVACY_ADDR_LEN + 3)
enum kh_privacy_result kh_privacy_url(const struct kh_privacy *p, const char *s, size_t n,
                                      char *out, size_t outcap, size_t *outlen);
/* Applies p to the address columns of row (text values replaced by copies in a, or made
 * NULL). 0, or KH_ENOMEM when a is full. */
int kh_privacy_row(const struct kh_privacy *p, struct kh_row *row, struct kh_arena *a);

#endif
