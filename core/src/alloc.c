/*
 * alloc.c - the engine's allocator and growable byte buffers.
 *
 * Every allocation the engine makes (Proton's own excepted) goes through
 * sbusi_malloc/realloc/free, which call the functions installed with
 * sbus_set_allocator() (the C library's by default). Tests install a
 * failing allocator to prove that every path survives running out of
 * memory. The second half is sbusi_buf_t, a byte buffer whose failure is
 * sticky so that long encoders check once at the end.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

static void *(*g_malloc)(size_t) = malloc;
static void *(*g_realloc)(void *, size_t) = realloc;
static void (*g_free)(void *) = free;

void sbus_set_allocator(void *(*m)(size_t), void *(*r)(void *, size_t),
                        void (*f)(void *))
{
    g_malloc = m ? m : malloc;
    g_realloc = r ? r : realloc;
    g_free = f ? f : free;
}

void *sbusi_malloc(size_t n) { return g_malloc(n ? n : 1); }

void *sbusi_calloc(size_t n, size_t size)
{
    if (size && n > SIZE_MAX / size)
        return NULL;
    size_t total = n * size;
    void *p = g_malloc(total ? total : 1);
    if (p)
        memset(p, 0, total);
    return p;
}

void *sbusi_realloc(void *p, size_t n) { return g_realloc(p, n ? n : 1); }

void sbusi_free(void *p)
{
    if (p)
        g_free(p);
}

void *sbusi_memdup(const void *p, size_t n)
{
    void *q = sbusi_malloc(n);
    if (q && n)
        memcpy(q, p, n);
    return q;
}

char *sbusi_strndup(const char *s, size_t n)
{
    char *q = sbusi_malloc(n + 1);
    if (!q)
        return NULL;
    if (n)
        memcpy(q, s, n);
    q[n] = 0;
    return q;
}

char *sbusi_strdup(const char *s)
{
    return s ? sbusi_strndup(s, strlen(s)) : NULL;
}

int sbusi_buf_reserve(sbusi_buf_t *b, size_t more)
{
    if (b->oom)
        return -1;
    if (b->len + more <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + more)
        cap *= 2;
    uint8_t *p = sbusi_realloc(b->p, cap);
    if (!p) {
        b->oom = 1;
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

void sbusi_buf_put(sbusi_buf_t *b, const void *p, size_t n)
{
    if (sbusi_buf_reserve(b, n) < 0)
        return;
    if (n)
        memcpy(b->p + b->len, p, n);
    b->len += n;
}

void sbusi_buf_free(sbusi_buf_t *b)
{
    sbusi_free(b->p);
    memset(b, 0, sizeof *b);
}
