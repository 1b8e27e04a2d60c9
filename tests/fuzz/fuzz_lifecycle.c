/*
 * libFuzzer target: the session and event webhook parser (sora/lifecycle.c) and the rows it
 * builds. The first byte picks the flavor (session, event, either: bits 0-1), whether the
 * input is a body or a log line (bit 2), whether a header announced a type (bit 3), and the
 * chunk size it is fed in (bits 4-7).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/log.h"
#include "sora/lifecycle.h"
#include "sora/schema.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready) {
        kh_log_set_level(KH_LOG_ERROR);
        kh_schema_init();
        ready = 1;
    }
    if (size < 1)
        return 0;
    enum kh_lifecycle_flavor flavor = (enum kh_lifecycle_flavor)((data[0] & 3) % 3);
    enum kh_lifecycle_input input = (data[0] & 4) ? KH_LC_LOG_LINE : KH_LC_BODY;
    bool header = (data[0] & 8) != 0;
    size_t chunk = (size_t)(data[0] >> 4) + 1;
    data++;
    size--;
    struct kh_envelope_limits lim = kh_envelope_default_limits;
    lim.arena_max = 8u << 20;
    lim.max_stats = 1000;
    struct kh_lifecycle *lc = kh_lifecycle_new(flavor, input, &lim);
    if (lc == NULL)
        return 0;
    if (header)
        kh_lifecycle_expect_type(lc, "sora-event-webhook-type", "connection.created");
    int rc = 0;
    for (size_t off = 0; rc == 0 && off < size; off += chunk)
        rc = kh_lifecycle_feed(lc, data + off, size - off < chunk ? size - off : chunk);
    if (rc == 0 && kh_lifecycle_finish(lc) == 0)
        kh_report_free(kh_lifecycle_take_report(lc));
    kh_lifecycle_free(lc);
    return 0;
}
