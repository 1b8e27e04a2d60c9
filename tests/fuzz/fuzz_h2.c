/*
 * libFuzzer target: an HTTP/2 server session fed raw frames after the connection preface
 * (nghttp2, the request abstraction, the router and every handler).
 */
#include "http_harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint8_t preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    fz_run(preface, sizeof(preface) - 1, data, size);
    return 0;
}
