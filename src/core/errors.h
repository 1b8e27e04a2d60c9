/*
 * errors: the error codes every kh_ function returns (0 on success, a negative KH_E*
 * otherwise), and the one way a reason travels: a `const char **err` out-parameter, set on
 * failure. It points at a string literal, at text the object the function works on keeps (a
 * store's, a parser's), or, where there is no such object (a constructor that fails, a
 * config check), at text formatted by kh_errf.
 */
#ifndef KH_ERRORS_H
#define KH_ERRORS_H

enum {
    KH_OK = 0,
    KH_ENOMEM = -1,   /* allocation failed */
    KH_ENOSPC = -2,   /* a bounded buffer or budget is full */
    KH_EINVAL = -3,   /* invalid input; the reason names the field */
    KH_EIO = -4,      /* I/O or database error */
    KH_ERETRY = -5,   /* transient storage failure: retry later (503) */
    KH_EREJECT = -6,  /* storage refused this data (400) */
    KH_ETOOBIG = -7,  /* request body over the limit (413) */
    KH_ESHUTDOWN = -8 /* the component is stopping */
};

/* Formats a reason into this thread's error buffer (1 KiB, cut there) and returns it. It stays
 * valid until the thread's next kh_errf; the arguments may point into it (they are read
 * before it is written). */
const char *kh_errf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
