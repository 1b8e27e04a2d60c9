/*
 * tls: the server's TLS context (OpenSSL): certificate chain and key, TLS 1.2 and 1.3, ALPN
 * h2 and http/1.1, and client certificates (mTLS) when a CA file or directory is given. The
 * context can be rebuilt from the same files at run time (SIGHUP); connections already open
 * keep the context they started with. This module is the only user of OpenSSL (so it also
 * holds the few other things kohaku needs of it: base64, constant-time compare, HMAC).
 */
#ifndef KH_TLS_H
#define KH_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct kh_tls;
struct ssl_st;

/* The files a TLS context is made of (paths; verify_ca "" = no client certificates). Errors
 * name each by the config key that sets it (tls_fullchain_file, tls_privkey_file,
 * tls_verify_cacert_path), so that the caller can cite the line. */
struct kh_tls_files {
    const char *fullchain;
    const char *privkey;
    const char *verify_ca;
};

/* KH_EINVAL (or KH_ENOMEM) with the reason, naming the file, in *err. */
int kh_tls_new(const struct kh_tls_files *f, struct kh_tls **out, const char **err);
/* Loads the files again; on failure the old context stays in use. */
int kh_tls_reload(struct kh_tls *t, const struct kh_tls_files *f, const char **err);
void kh_tls_free(struct kh_tls *t);
/* OpenSSL's run-time version text (--version). */
const char *kh_tls_library(void);
/* A new server-side SSL object from the current context, or NULL. */
struct ssl_st *kh_tls_new_ssl(struct kh_tls *t);
void kh_tls_free_ssl(struct ssl_st *ssl);
bool kh_tls_verifies_clients(const struct kh_tls *t);
/* After the handshake: the client certificate's subject ("" without one). */
void kh_tls_peer_subject(struct ssl_st *ssl, char *out, size_t len);
/* The most recent OpenSSL error of this thread as text (for logs). */
void kh_tls_last_error(char *out, size_t len);
/* An OpenSSL error code (as libevent keeps them per connection) as text. */
void kh_tls_error_string(unsigned long code, char *out, size_t len);
/* The negotiated protocol version and ALPN of a connection. */
void kh_tls_session_info(struct ssl_st *ssl, const char **version, const char **alpn,
                         size_t *alpn_len);

/* base64 of in[0, n) into out (NUL-terminated; cap at least 4 * ((n + 2) / 3) + 1): its
 * length, or 0 when it does not fit. OpenSSL's encoder (for HTTP basic authentication). */
size_t kh_tls_base64(const void *in, size_t n, char *out, size_t cap);
/* a[0, n) == b[0, n) in time that does not depend on where they differ (CRYPTO_memcmp). */
bool kh_tls_equal(const void *a, const void *b, size_t n);
/* HMAC-SHA256 of msg[0, len) under key[0, keylen) into out (IP privacy's hash, a
 * kh_privacy_mac_fn: sora/privacy.h). Any thread. */
void kh_tls_hmac_sha256(const void *key, size_t keylen, const void *msg, size_t len,
                        uint8_t out[32]);

#endif
