/*
 * http: the codec chooser. See http.h.
 */
#include "http/http.h"

#include <stdbool.h>
#include <string.h>

#include "http/codecs.h"

static const char h2_preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const struct kh_codec_ops *kh_http_pick_codec(const uint8_t *p, size_t n)
{
    size_t want = sizeof(h2_preface) - 1;
    bool h2 = memcmp(p, h2_preface, n < want ? n : want) == 0;
    if (h2 && n < want)
        return NULL; /* so far a prefix of the preface: wait */
    return h2 ? &kh_h2_codec : &kh_h1_codec;
}
