/*
 * tls: OpenSSL server context. See tls.h.
 */
#include "net/tls.h"

#include <dirent.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/err.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/errors.h"

struct kh_tls {
    SSL_CTX *ctx;
    bool verify;
};

void kh_tls_last_error(char *out, size_t len)
{
    unsigned long e = ERR_get_error();
    if (e == 0)
        snprintf(out, len, "unknown TLS error");
    else
        ERR_error_string_n(e, out, len);
    ERR_clear_error();
}

void kh_tls_error_string(unsigned long code, char *out, size_t len)
{
    if (code == 0)
        snprintf(out, len, "connection closed during the handshake");
    else
        ERR_error_string_n(code, out, len);
}

void kh_tls_session_info(struct ssl_st *ssl, const char **version, const char **alpn,
                         size_t *alpn_len)
{
    const unsigned char *a = NULL;
    unsigned int n = 0;
    SSL_get0_alpn_selected(ssl, &a, &n);
    *version = SSL_get_version(ssl);
    *alpn = (const char *)a;
    *alpn_len = n;
}

static int on_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg)
{
    static const unsigned char prefs[] = "\x02h2\x08http/1.1";
    unsigned char *sel = NULL;
    if (SSL_select_next_proto(&sel, outlen, prefs, sizeof(prefs) - 1, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

/* Adds every certificate of one PEM file; a file without one is an error naming it. */
static int add_ca_file(X509_STORE *store, STACK_OF(X509_NAME) *names, const char *path,
                       const char **err)
{
    FILE *fp = fopen(path, "r");
    if (fp == NULL) {
        *err = kh_errf("tls_verify_cacert_path: %s: cannot open", path);
        return KH_EINVAL;
    }
    int n = 0;
    X509 *x;
    while ((x = PEM_read_X509(fp, NULL, NULL, NULL)) != NULL) {
        X509_STORE_add_cert(store, x);
        X509_NAME *name = X509_NAME_dup(X509_get_subject_name(x));
        if (name && !sk_X509_NAME_push(names, name))
            X509_NAME_free(name);
        X509_free(x);
        n++;
    }
    fclose(fp);
    ERR_clear_error(); /* the read that ended the loop */
    if (n == 0) {
        *err = kh_errf("tls_verify_cacert_path: %s holds no PEM certificate", path);
        return KH_EINVAL;
    }
    return 0;
}

static int load_cas(SSL_CTX *ctx, const char *path, const char **err)
{
    X509_STORE *store = SSL_CTX_get_cert_store(ctx);
    STACK_OF(X509_NAME) *names = sk_X509_NAME_new_null();
    struct stat st;
    int rc = 0;
    if (names == NULL)
        return KH_ENOMEM;
    if (stat(path, &st) != 0) {
        *err = kh_errf("tls_verify_cacert_path: %s: no such file or directory", path);
        rc = KH_EINVAL;
    } else if (S_ISDIR(st.st_mode)) {
        struct dirent **list;
        int n = scandir(path, &list, NULL, alphasort);
        int files = 0;
        for (int i = 0; i < n; i++) {
            char full[4096];
            snprintf(full, sizeof(full), "%s/%s", path, list[i]->d_name);
            struct stat fst;
            if (rc == 0 && list[i]->d_name[0] != '.' && stat(full, &fst) == 0 &&
                S_ISREG(fst.st_mode)) {
                rc = add_ca_file(store, names, full, err);
                files++;
            }
            free(list[i]);
        }
        free(list);
        if (rc == 0 && files == 0) {
            *err = kh_errf("tls_verify_cacert_path: %s holds no certificate file", path);
            rc = KH_EINVAL;
        }
    } else {
        rc = add_ca_file(store, names, path, err);
    }
    if (rc != 0) {
        sk_X509_NAME_pop_free(names, X509_NAME_free);
        return rc;
    }
    SSL_CTX_set_client_CA_list(ctx, names);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    return 0;
}

static SSL_CTX *build(const struct kh_tls_files *f, const char **err)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    char why[256];
    if (ctx == NULL) {
        *err = "tls: cannot create a context";
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_alpn_select_cb(ctx, on_alpn, NULL);
    if (SSL_CTX_use_certificate_chain_file(ctx, f->fullchain) != 1) {
        kh_tls_last_error(why, sizeof(why));
        *err = kh_errf("tls_fullchain_file: %s: %s", f->fullchain, why);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, f->privkey, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        kh_tls_last_error(why, sizeof(why));
        *err = kh_errf("tls_privkey_file: %s: %s", f->privkey, why);
        goto fail;
    }
    if (f->verify_ca[0] && load_cas(ctx, f->verify_ca, err) != 0)
        goto fail;
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

int kh_tls_new(const struct kh_tls_files *f, struct kh_tls **out, const char **err)
{
    struct kh_tls *t = calloc(1, sizeof(*t));
    if (t == NULL) {
        *err = "tls: out of memory";
        return KH_ENOMEM;
    }
    t->ctx = build(f, err);
    if (t->ctx == NULL) {
        free(t);
        return KH_EINVAL;
    }
    t->verify = f->verify_ca[0] != '\0';
    *out = t;
    return 0;
}

int kh_tls_reload(struct kh_tls *t, const struct kh_tls_files *f, const char **err)
{
    SSL_CTX *ctx = build(f, err);
    if (ctx == NULL)
        return KH_EINVAL;
    /* SSL objects hold a reference to their context: open connections are not affected */
    SSL_CTX_free(t->ctx);
    t->ctx = ctx;
    t->verify = f->verify_ca[0] != '\0';
    return 0;
}

void kh_tls_free(struct kh_tls *t)
{
    if (t == NULL)
        return;
    SSL_CTX_free(t->ctx);
    free(t);
}

struct ssl_st *kh_tls_new_ssl(struct kh_tls *t) { return SSL_new(t->ctx); }

void kh_tls_free_ssl(struct ssl_st *ssl) { SSL_free(ssl); }

bool kh_tls_verifies_clients(const struct kh_tls *t) { return t->verify; }

void kh_tls_peer_subject(struct ssl_st *ssl, char *out, size_t len)
{
    out[0] = '\0';
    X509 *peer = SSL_get1_peer_certificate(ssl);
    if (peer == NULL)
        return;
    X509_NAME_oneline(X509_get_subject_name(peer), out, (int)len);
    X509_free(peer);
}

const char *kh_tls_library(void) { return OpenSSL_version(OPENSSL_VERSION); }

size_t kh_tls_base64(const void *in, size_t n, char *out, size_t cap)
{
    if (cap < 4 * ((n + 2) / 3) + 1 || n > INT_MAX)
        return 0;
    return (size_t)EVP_EncodeBlock((unsigned char *)out, in, (int)n);
}

bool kh_tls_equal(const void *a, const void *b, size_t n) { return CRYPTO_memcmp(a, b, n) == 0; }

void kh_tls_hmac_sha256(const void *key, size_t keylen, const void *msg, size_t len,
                        uint8_t out[32])
{
    unsigned int outlen = 32;
    if (HMAC(EVP_sha256(), key, (int)keylen, msg, len, out, &outlen) == NULL)
        memset(out, 0, 32); /* OpenSSL out of memory: one token for every address */
}
