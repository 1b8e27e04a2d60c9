/*
 * arena: chunked bump allocator. See arena.h.
 */
#include "core/arena.h"

#include <stdlib.h>
#include <string.h>

struct kh_arena_chunk {
    struct kh_arena_chunk *next;
    size_t used;
    size_t size;
    _Alignas(8) char data[];
};

void kh_arena_init(struct kh_arena *a, size_t chunk_size, size_t max)
{
    a->head = NULL;
    a->total = 0;
    a->max = max;
    a->chunk_size = chunk_size;
}

void kh_arena_cleanup(struct kh_arena *a)
{
    struct kh_arena_chunk *c = a->head;
    while (c) {
        struct kh_arena_chunk *next = c->next;
        free(c);
        c = next;
    }
    a->head = NULL;
    a->total = 0;
}

void *kh_arena_alloc(struct kh_arena *a, size_t n)
{
    n = (n + 7) & ~(size_t)7;
    struct kh_arena_chunk *c = a->head;
    if (c == NULL || c->size - c->used < n) {
        size_t size = n > a->chunk_size ? n : a->chunk_size;
        if (a->total + size > a->max)
            return NULL;
        c = malloc(sizeof(*c) + size);
        if (c == NULL)
            return NULL;
        c->next = a->head;
        c->used = 0;
        c->size = size;
        a->head = c;
        a->total += size;
    }
    void *p = c->data + c->used;
    c->used += n;
    return p;
}

char *kh_arena_strndup(struct kh_arena *a, const char *s, size_t n)
{
    char *p = kh_arena_alloc(a, n + 1);
    if (p == NULL)
        return NULL;
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}
