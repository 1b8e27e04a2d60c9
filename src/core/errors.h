/*
 * errors: the error codes every kh_ function returns (0 on success, a negative KH_E*
 * otherwise). A human-readable reason travels separately through a `const char **err`.
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

#endif
