/*
 * libFuzzer target: the report body parser. The first byte picks the payload type and the
 * chunk size the body is fed in, so splits at every place get exercised. The body's length
 * picks the IP privacy mode (keep, truncate, hash, drop, with a kept network), so every value
 * also goes through the address and url rewriting.
 */
#include <stddef.h>
#include <stdint.h>

#include "core/log.h"
#include "net/tls.h"
#include "sora/envelope.h"
#include "sora/privacy.h"
#include "sora/schema.h"

static struct kh_privacy policies[4];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready) {
        kh_log_set_level(KH_LOG_ERROR);
        kh_schema_init();
        static const char *const modes[] = {"keep", "truncate", "hash", "drop"};
        const char *err;
        for (int i = 0; i < 4; i++)
            if (kh_privacy_init(&policies[i], modes[i], "192.0.2.0/24,2001:db8::/32",
                                "a-fuzzing-key-of-16-bytes", kh_tls_hmac_sha256, &err) != 0)
                __builtin_trap();
        ready = 1;
    }
    if (size < 1)
        return 0;
    enum kh_report_kind kind = (data[0] & 1) ? KH_REPORT_NODE : KH_REPORT_CONNECTION;
    enum kh_envelope_flavor flavor = (data[0] & 2) ? KH_FLAVOR_WEBHOOK : KH_FLAVOR_EXPORTER;
    size_t chunk = (size_t)(data[0] >> 2) + 1;
    data++;
    size--;
    struct kh_envelope_limits lim = kh_envelope_default_limits;
    lim.arena_max = 8u << 20;
    lim.privacy = &policies[size % 4];
    struct kh_envelope *e = kh_envelope_new(kind, flavor, &lim);
    if (e == NULL)
        return 0;
    int rc = 0;
    for (size_t off = 0; rc == 0 && off < size; off += chunk)
        rc = kh_envelope_feed(e, data + off, size - off < chunk ? size - off : chunk);
    if (rc == 0 && kh_envelope_finish(e) == 0)
        kh_report_free(kh_envelope_take_report(e));
    kh_envelope_free(e);
    return 0;
}
