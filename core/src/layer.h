/*
 * layer.h - the common shape of the engine's byte layers.
 *
 * The engine stacks sans-I/O byte layers between Proton's connection driver
 * and the host's socket (design.md, "The engine boundary"):
 *
 *     AMQP + SASL (Proton)           <- top: consumes layer.up of the stack
 *     WebSocket (ws.c)                  AMQPWSB10, masked binary frames
 *     TLS (tls.c, via a thin adapter)   in-memory BIOs
 *     HTTP CONNECT tunnel (proxy.c)     optional basic auth
 *     wire                           <- bottom: host socket
 *
 * Every layer is an sbusi_layer_t with two outgoing FIFOs:
 *
 *     bytes from below --input()-->  [layer] --> up    (for the layer above)
 *     bytes from above --output()--> [layer] --> down  (for the layer below)
 *
 * input() and output() copy what they accept (the caller's bytes are
 * borrowed for the call only) and return how many they accepted through
 * *used. A layer accepts less than offered only when the FIFO it writes to
 * reached its bound; the caller drains that FIFO and offers the rest again.
 * Callers consume produced bytes straight from the FIFO (sbusi_fifo_data /
 * sbusi_fifo_consume), so each direction costs one copy per layer, and that
 * copy is where the layer transforms bytes anyway (framing, masking).
 *
 * States, in order: HANDSHAKE (the layer's own negotiation: CONNECT, HTTP
 * upgrade, TLS handshake), READY (payload flows), CLOSING (we started an
 * orderly close and wait for the peer), CLOSED (the close finished, or the
 * peer ended it: see text), ERROR (fatal; code and text say why). Bytes
 * that the layer above offers during HANDSHAKE are held and sent once the
 * layer is READY, so the stack can be written top-down without waiting.
 * In CLOSED and ERROR, `down` may still hold a last message for the peer (a
 * WebSocket close frame, an HTTP error answer): flush it, then close the
 * socket. Errors are sticky: every later call returns the same code.
 *
 * Threading: none. A layer belongs to one connection, used by one thread.
 * Memory: through sbusi_malloc/realloc/free (alloc.c), so that the engine's
 * failing-allocator tests reach the layers too.
 *
 * A layer with an API of its own (tls.c) joins the stack by a thin adapter:
 * embed sbusi_layer_t first in a struct that also holds the TLS object, and
 * write the five ops in terms of that API (input: write to the read BIO,
 * drive the handshake, SSL_read into up; output: SSL_write, move the write
 * BIO into down). The engine's adapter (wire.c) skips the FIFOs at the
 * bottom of the stack when TLS is next to the wire: the host reads into and
 * writes from tls.c's own queues (issue 7).
 */
#ifndef SBUS_LAYER_H
#define SBUS_LAYER_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* The engine's allocator (alloc.c); same prototypes as internal.h. */
void *sbusi_malloc(size_t n);
void *sbusi_realloc(void *p, size_t n);
void sbusi_free(void *p);

/* ------------------------------------------------------------------ */
/* FIFO byte buffers                                                   */
/* ------------------------------------------------------------------ */

/*
 * A bounded FIFO of bytes: producers append at the tail, consumers read
 * from the head and say how much they used. Appending never overwrites
 * unread bytes. Storage grows by doubling up to `max`; consumed space at
 * the head is reclaimed lazily (reset when empty, slid down when the tail
 * needs room).
 */
typedef struct sbusi_fifo {
    uint8_t *p;   /* storage (owned), NULL until the first append */
    size_t head;  /* offset of the first unread byte */
    size_t len;   /* unread bytes, starting at head */
    size_t cap;   /* bytes allocated at p */
    size_t max;   /* bound on unread bytes; 0 means SBUSI_FIFO_DEFAULT_MAX */
} sbusi_fifo_t;

#define SBUSI_FIFO_DEFAULT_MAX ((size_t)4 << 20) /* 4 MiB */

static inline size_t sbusi_fifo_bound(const sbusi_fifo_t *f)
{
    return f->max ? f->max : SBUSI_FIFO_DEFAULT_MAX;
}

/* Unread bytes (borrowed until the next append or consume). */
static inline const uint8_t *sbusi_fifo_data(const sbusi_fifo_t *f)
{
    return f->p ? f->p + f->head : (const uint8_t *)"";
}

static inline size_t sbusi_fifo_len(const sbusi_fifo_t *f) { return f->len; }

/* How many more bytes may be appended before the bound. */
static inline size_t sbusi_fifo_room(const sbusi_fifo_t *f)
{
    size_t b = sbusi_fifo_bound(f);
    return f->len >= b ? 0 : b - f->len;
}

/* Drops the first n unread bytes (n larger than len drops all). */
static inline void sbusi_fifo_consume(sbusi_fifo_t *f, size_t n)
{
    if (n >= f->len) {
        f->head = 0;
        f->len = 0;
        return;
    }
    f->head += n;
    f->len -= n;
}

/*
 * Returns a pointer where n more bytes can be written at the tail, or NULL
 * when n exceeds sbusi_fifo_room() or memory runs out. Nothing is appended
 * until sbusi_fifo_commit(). The pointer is valid until the next call on f.
 */
static inline uint8_t *sbusi_fifo_reserve(sbusi_fifo_t *f, size_t n)
{
    if (n > sbusi_fifo_room(f))
        return NULL;
    if (f->head + f->len + n <= f->cap)
        return f->p + f->head + f->len;
    if (f->len + n <= f->cap) { /* enough once the head is reclaimed */
        memmove(f->p, f->p + f->head, f->len);
        f->head = 0;
        return f->p + f->len;
    }
    size_t cap = f->cap ? f->cap : 256;
    while (cap < f->len + n)
        cap *= 2;
    uint8_t *p = sbusi_realloc(f->p, cap);
    if (!p)
        return NULL;
    if (f->head) {
        memmove(p, p + f->head, f->len);
        f->head = 0;
    }
    f->p = p;
    f->cap = cap;
    return f->p + f->len;
}

/* Appends n bytes written at the pointer sbusi_fifo_reserve() returned. */
static inline void sbusi_fifo_commit(sbusi_fifo_t *f, size_t n) { f->len += n; }

/* Appends a copy of p[0..n). 0, or -1 (bound reached or no memory). */
static inline int sbusi_fifo_put(sbusi_fifo_t *f, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    uint8_t *w = sbusi_fifo_reserve(f, n);
    if (!w)
        return -1;
    memcpy(w, p, n);
    sbusi_fifo_commit(f, n);
    return 0;
}

/* Frees the storage after overwriting it (it may have held credentials). */
static inline void sbusi_fifo_free(sbusi_fifo_t *f)
{
    if (f->p) {
        volatile uint8_t *v = f->p;
        for (size_t i = 0; i < f->cap; i++)
            v[i] = 0;
    }
    sbusi_free(f->p);
    f->p = NULL;
    f->head = f->len = f->cap = 0;
}

/* ------------------------------------------------------------------ */
/* Layers                                                              */
/* ------------------------------------------------------------------ */

typedef enum sbusi_layer_state {
    SBUSI_LAYER_HANDSHAKE = 0, /* negotiating; output from above is held */
    SBUSI_LAYER_READY,         /* payload flows both ways */
    SBUSI_LAYER_CLOSING,       /* we sent our close, the peer's is awaited */
    SBUSI_LAYER_CLOSED,        /* closed in order, or by the peer (see text) */
    SBUSI_LAYER_ERROR,         /* fatal: see code and text */
} sbusi_layer_state_t;

typedef struct sbusi_layer sbusi_layer_t;

/* What a layer implements. Every op returns 0 or a negative SBUS_E* code. */
typedef struct sbusi_layer_ops {
    const char *name; /* "websocket", "proxy", "tls": for messages */
    /* Bytes from below; *used = how many were accepted. */
    int (*input)(sbusi_layer_t *l, const uint8_t *p, size_t n, size_t *used);
    /* Bytes from above; *used = how many were accepted. */
    int (*output)(sbusi_layer_t *l, const uint8_t *p, size_t n, size_t *used);
    /* Starts an orderly close (may queue bytes in down). */
    int (*shutdown)(sbusi_layer_t *l);
    /* The byte stream below ended (the peer closed the socket). */
    int (*eof)(sbusi_layer_t *l);
    /* Frees what the layer owns beyond this struct, then the layer. */
    void (*destroy)(sbusi_layer_t *l);
} sbusi_layer_ops_t;

/* The part every layer starts with. Read the fields; change them only
 * through the functions below or from inside the layer. */
struct sbusi_layer {
    const sbusi_layer_ops_t *ops; /* the implementation (static) */
    sbusi_fifo_t up;              /* produced for the layer above */
    sbusi_fifo_t down;            /* produced for the layer below */
    sbusi_layer_state_t state;    /* see sbusi_layer_state_t */
    int code;                     /* SBUS_E* once state is ERROR, else 0 */
    char text[320];               /* why ERROR or CLOSED; "" otherwise */
};

static inline int sbusi_layer_input(sbusi_layer_t *l, const uint8_t *p,
                                    size_t n, size_t *used)
{
    return l->ops->input(l, p, n, used);
}

static inline int sbusi_layer_output(sbusi_layer_t *l, const uint8_t *p,
                                     size_t n, size_t *used)
{
    return l->ops->output(l, p, n, used);
}

static inline int sbusi_layer_shutdown(sbusi_layer_t *l)
{
    return l->ops->shutdown(l);
}

static inline int sbusi_layer_eof(sbusi_layer_t *l) { return l->ops->eof(l); }

/* Frees the layer and everything it owns; NULL is fine. */
static inline void sbusi_layer_free(sbusi_layer_t *l)
{
    if (l)
        l->ops->destroy(l);
}

static inline int sbusi_layer_ready(const sbusi_layer_t *l)
{
    return l->state == SBUSI_LAYER_READY;
}

static inline int sbusi_layer_closed(const sbusi_layer_t *l)
{
    return l->state == SBUSI_LAYER_CLOSED;
}

/* The error code (0 unless ERROR) and, through *text when not NULL, the
 * reason (borrowed, valid while the layer lives). */
static inline int sbusi_layer_error(const sbusi_layer_t *l, const char **text)
{
    if (text)
        *text = l->text;
    return l->state == SBUSI_LAYER_ERROR ? l->code : 0;
}

/*
 * Moves what `from` produced upward into `to` (from->up -> to->input),
 * consuming what `to` accepted. 0 or the error `to` returned. Nothing is
 * offered when from->up is empty.
 */
static inline int sbusi_layer_pump_up(sbusi_layer_t *from, sbusi_layer_t *to)
{
    size_t used = 0;
    if (!sbusi_fifo_len(&from->up))
        return 0;
    int rc = sbusi_layer_input(to, sbusi_fifo_data(&from->up),
                               sbusi_fifo_len(&from->up), &used);
    sbusi_fifo_consume(&from->up, used);
    return rc;
}

/* Moves what `from` produced downward into `to` (from->down -> to->output). */
static inline int sbusi_layer_pump_down(sbusi_layer_t *from, sbusi_layer_t *to)
{
    size_t used = 0;
    if (!sbusi_fifo_len(&from->down))
        return 0;
    int rc = sbusi_layer_output(to, sbusi_fifo_data(&from->down),
                                sbusi_fifo_len(&from->down), &used);
    sbusi_fifo_consume(&from->down, used);
    return rc;
}

/*
 * Settles a stack v[0] (bottom, next to the wire) .. v[n-1] (top): moves
 * every layer's up into the layer above and every down into the layer
 * below until nothing moves (or a FIFO bound stops it). Afterwards the
 * wire's bytes are in v[0]->down and the application's in v[n-1]->up.
 * Call it after feeding v[0] from the socket or v[n-1] from above. 0, or
 * the first error a layer returned (that layer is in ERROR: see its text).
 */
static inline int sbusi_stack_pump(sbusi_layer_t *const *v, size_t n)
{
    for (int moved = 1; moved;) {
        moved = 0;
        for (size_t i = 0; i + 1 < n; i++) {
            size_t before = sbusi_fifo_len(&v[i]->up);
            int rc = sbusi_layer_pump_up(v[i], v[i + 1]);
            if (rc < 0)
                return rc;
            moved |= sbusi_fifo_len(&v[i]->up) != before;
        }
        for (size_t i = n; i-- > 1;) {
            size_t before = sbusi_fifo_len(&v[i]->down);
            int rc = sbusi_layer_pump_down(v[i], v[i - 1]);
            if (rc < 0)
                return rc;
            moved |= sbusi_fifo_len(&v[i]->down) != before;
        }
    }
    return 0;
}

/* For layer implementations: enters ERROR with code and a formatted reason,
 * and returns code (so `return sbusi_layer_fail(...)` reads well). */
int sbusi_layer_fail(sbusi_layer_t *l, int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

#endif /* SBUS_LAYER_H */
