/*
 * arena: a chunked bump allocator for everything one report owns (strings, rows, values).
 * Pointers stay valid until kh_arena_cleanup. The total is bounded at init; a request that
 * would cross it fails with NULL, costing that report only.
 */
#ifndef KH_ARENA_H
#define KH_ARENA_H

#include <stddef.h>

struct kh_arena_chunk;

struct kh_arena {
    struct kh_arena_chunk *head;
    size_t total;      /* bytes allocated in chunks */
    size_t max;        /* bound on total */
    size_t chunk_size; /* default chunk size */
};

void kh_arena_init(struct kh_arena *a, size_t chunk_size, size_t max);
void kh_arena_cleanup(struct kh_arena *a);
/* 8-byte aligned; NULL when the bound is crossed or memory is short. */
void *kh_arena_alloc(struct kh_arena *a, size_t n);
/* Copies n bytes and adds a NUL. */
char *kh_arena_strndup(struct kh_arena *a, const char *s, size_t n);

#endif
