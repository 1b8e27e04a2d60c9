/*
 * libFuzzer target: the config loader (libinih plus kohaku's key table and checks).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (text == NULL)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    struct kh_config cfg;
    const char *err = NULL;
    if (kh_config_init(&cfg) == 0) {
        if (kh_config_load_string(&cfg, "fuzz.ini", text, &err) == 0)
            kh_config_finish(&cfg, &err);
        kh_config_cleanup(&cfg);
    }
    free(text);
    return 0;
}
