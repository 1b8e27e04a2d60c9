/*
 * storedtime: the earliest report time stored since the last look. See storedtime.h.
 */
#include "core/storedtime.h"

#include <stdatomic.h>

static _Atomic int64_t earliest = INT64_MAX;

void kh_storedtime_note(int64_t time_usec)
{
    int64_t seen = atomic_load_explicit(&earliest, memory_order_relaxed);
    while (time_usec < seen &&
           !atomic_compare_exchange_weak_explicit(&earliest, &seen, time_usec,
                                                  memory_order_release, memory_order_relaxed))
        ;
}

int64_t kh_storedtime_take(void)
{
    return atomic_exchange_explicit(&earliest, INT64_MAX, memory_order_acquire);
}
