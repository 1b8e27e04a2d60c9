/*
 * store: backend registry. See store.h.
 */
#include "store/store.h"

#include <string.h>

static const struct kh_store_ops *const backends[] = {&kh_store_sqlite_ops, &kh_store_postgres_ops,
                                                      &kh_store_null_ops};

const struct kh_store_ops *kh_store_find(const char *name)
{
    for (size_t i = 0; i < sizeof(backends) / sizeof(backends[0]); i++)
        if (strcmp(backends[i]->name, name) == 0)
            return backends[i];
    return NULL;
}

void kh_batch_reset_counts(struct kh_batch *b)
{
    memset(b->rows_stored, 0, sizeof(b->rows_stored));
    memset(b->reports_stored, 0, sizeof(b->reports_stored));
    b->reports_duplicate = 0;
    memset(b->webhooks_stored, 0, sizeof(b->webhooks_stored));
    b->webhooks_duplicate = 0;
}
