/*
 * storedtime: the earliest report time stored since the last look. The threads that complete
 * batches (the daemon's, an import job's) note each stored batch's earliest report time; one
 * reader takes it (the console's overview, which keeps counts of buckets that have settled
 * and reads again those a report stored later fell into). Lock-free, for any threads.
 */
#ifndef KH_STOREDTIME_H
#define KH_STOREDTIME_H

#include <stdint.h>

/* Notes a stored report's time (µs since the epoch). */
void kh_storedtime_note(int64_t time_usec);
/* The earliest time noted since the last take (INT64_MAX when none), and starts again. */
int64_t kh_storedtime_take(void);

#endif
