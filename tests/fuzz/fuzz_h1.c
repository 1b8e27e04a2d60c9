/*
 * libFuzzer target: an HTTP/1.1 connection fed raw bytes (http_parser, the request
 * abstraction, the router, the webhook and health handlers).
 */
#include "http_harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_run(NULL, 0, data, size);
    return 0;
}
