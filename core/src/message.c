/*
 * message.c - messages: the public accessors, validation, and the codec
 * between sbus_message_t and the AMQP message format.
 *
 * Layout of this file: allocation and copying; body accessors; string
 * properties and integer fields; application properties; received-message
 * queries; encoding (header, message-annotations, properties,
 * application-properties, body, in that order, each only when needed);
 * decoding (sections in any order, broker annotations mapped to fields);
 * and the transfer payload of a send (one message or a batch envelope).
 */
#include "internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#define MAX_ID_LEN 128

/* ------------------------------ memory ----------------------------- */

/* Values whose bytes live behind u.s. */
static int has_bytes(const sbus_value_t *v)
{
    return v->type == SBUS_VAL_STRING || v->type == SBUS_VAL_BINARY ||
           v->type == SBUS_VAL_AMQP;
}

static void value_free(sbus_value_t *v)
{
    if (has_bytes(v))
        sbusi_free((void *)v->u.s.ptr);
    v->type = SBUS_VAL_NULL;
}

/* Copies v into *out, duplicating string/binary/encoded bytes. */
static int value_copy(const sbus_value_t *v, sbus_value_t *out)
{
    *out = *v;
    if (!has_bytes(v))
        return 0;
    char *p = sbusi_strndup(v->u.s.ptr ? v->u.s.ptr : "", v->u.s.len);
    if (!p)
        return SBUS_ENOMEM;
    out->u.s.ptr = p;
    return 0;
}

/* 1 if p points into the block a received message was allocated with
 * (its payload and the strings decoded from it): such bytes are freed with
 * the message, never on their own. */
static int in_block(const sbus_message_t *m, const void *p)
{
    const uint8_t *b = (const uint8_t *)m->blk;
    return p && b && (const uint8_t *)p >= b &&
           (const uint8_t *)p < b + m->blk_cap;
}

/* Frees bytes the message owns (a no-op for bytes in its block). */
static void own_free(const sbus_message_t *m, void *p)
{
    if (!in_block(m, p) && (const void *)p != m->body_ref)
        sbusi_free(p);
}

static void clear_sections(sbus_message_t *m)
{
    for (size_t i = 0; i < m->nsections; i++)
        own_free(m, m->sections[i].p);
    m->nsections = 0;
    m->body_ref = NULL;
}

/* Makes room for one more section entry. */
static int grow_sections(sbus_message_t *m)
{
    if (m->nsections < m->capsections)
        return 0;
    /* the first section lives inside the message (one allocation less
       per message); more move to the heap */
    size_t cap = m->capsections * 2;
    int was_inline = m->sections == &m->section0;
    sbusi_section_t *s = sbusi_realloc(was_inline ? NULL : m->sections,
                                       cap * sizeof *s);
    if (!s)
        return SBUS_ENOMEM;
    if (was_inline)
        s[0] = m->section0;
    m->sections = s;
    m->capsections = cap;
    return 0;
}

/* Appends one section holding a copy of p[n]. */
static int add_section(sbus_message_t *m, const void *p, size_t n)
{
    if (grow_sections(m) < 0)
        return SBUS_ENOMEM;
    uint8_t *q = NULL;
    if (n && in_block(m, p)) {
        q = (uint8_t *)p; /* a received payload: referenced, not copied */
    } else if (n) {
        q = sbusi_memdup(p, n);
        if (!q)
            return SBUS_ENOMEM;
    }
    m->sections[m->nsections].p = q;
    m->sections[m->nsections].n = n;
    m->nsections++;
    return 0;
}

/* ------------------------- blocks of received messages ------------- */

/* Received messages are one allocation each (the message, its payload,
 * its decoded strings), of ~1.8 KB for a 1 KB body: past the C library's
 * per-thread cache, so that malloc and free of one cost ~600 instructions
 * a message. A connection keeps the blocks of freed messages for the next
 * ones (a stack, up to POOL_MAX blocks and POOL_BYTES bytes); a message
 * that outlives its connection frees its block, and the last one frees
 * the pool. Messages received on a connection are used by its thread
 * (sbus.h THREADS), so the pool needs no lock. None under
 * AddressSanitizer, so that a use of a freed message still shows. */
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SBUSI_MSG_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(SBUSI_MSG_ASAN)
#define POOL_MAX 0
#else
#define POOL_MAX 320
#endif
#define POOL_BYTES ((size_t)1 << 20)
#define POOL_BLOCK_MAX ((size_t)64 << 10) /* larger ones are not kept */
#define POOL_ROUND 256 /* block sizes rounded up to this */

struct sbusi_msgpool {
    size_t refs;  /* the connection's, and one per message from the pool */
    int live;     /* the connection exists */
    size_t n;     /* blocks kept */
    size_t bytes; /* their sizes added up */
    struct {
        void *p;
        size_t size;
    } blk[POOL_MAX > 0 ? POOL_MAX : 1];
};

static sbusi_msgpool_t *pool_get(sbusi_msgpool_t **poolp)
{
    if (POOL_MAX == 0 || !poolp)
        return NULL;
    if (!*poolp) {
        sbusi_msgpool_t *pool = sbusi_calloc(1, sizeof *pool);
        if (!pool)
            return NULL; /* then plain allocations */
        pool->refs = 1;
        pool->live = 1;
        *poolp = pool;
    }
    return *poolp;
}

static void pool_unref(sbusi_msgpool_t *pool)
{
    if (--pool->refs == 0)
        sbusi_free(pool);
}

void sbusi_msgpool_close(sbusi_msgpool_t *pool)
{
    if (!pool)
        return;
    pool->live = 0;
    while (pool->n > 0)
        sbusi_free(pool->blk[--pool->n].p);
    pool->bytes = 0;
    pool_unref(pool);
}

/* Frees the allocation of m (m itself), or gives it back to its pool. */
static void release_block(sbus_message_t *m)
{
    sbusi_msgpool_t *pool = m->pool;
    if (!pool) {
        sbusi_free(m);
        return;
    }
    size_t size = (size_t)((uint8_t *)m->blk - (uint8_t *)m) + m->blk_cap;
    if (pool->live && pool->n < POOL_MAX && size <= POOL_BLOCK_MAX &&
        pool->bytes + size <= POOL_BYTES) {
        pool->blk[pool->n].p = m;
        pool->blk[pool->n].size = size;
        pool->n++;
        pool->bytes += size;
    } else {
        sbusi_free(m);
    }
    pool_unref(pool);
}

static sbus_message_t *message_alloc(void)
{
    sbus_message_t *m = sbusi_calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->body_kind = SBUS_BODY_DATA;
    m->sections = &m->section0;
    m->capsections = 1;
    return m;
}

int sbus_message_new(sbus_message_t **out)
{
    if (!out)
        return SBUS_EINVAL;
    sbus_message_t *m = message_alloc();
    if (!m)
        return SBUS_ENOMEM;
    if (add_section(m, NULL, 0) < 0) {
        sbus_message_free(m);
        return SBUS_ENOMEM;
    }
    *out = m;
    return 0;
}

void sbus_message_free(sbus_message_t *m)
{
    if (!m)
        return;
    if (m->renew)
        sbusi_renew_unlink(m->renew);
    for (sbusi_op_t *op = m->ops; op; op = op->msg_next)
        op->msg = NULL;
    for (int i = 0; m->props_heap && i < SBUS_PROP__COUNT; i++)
        if (m->props_heap & 1u << i)
            sbusi_free(m->props[i].p);
    clear_sections(m);
    if (m->sections != &m->section0)
        sbusi_free(m->sections);
    for (size_t i = 0; i < m->naprops; i++) {
        sbusi_free(m->aprops[i].key.p);
        value_free(&m->aprops[i].v);
    }
    sbusi_free(m->aprops);
    release_block(m);
}

void sbusi_message_unref_op(sbus_message_t *m, sbusi_op_t *op)
{
    if (!m)
        return;
    for (sbusi_op_t **pp = &m->ops; *pp; pp = &(*pp)->msg_next) {
        if (*pp == op) {
            *pp = op->msg_next;
            op->msg_next = NULL;
            return;
        }
    }
}

_Static_assert(SBUS_PROP__COUNT <= 32, "props_heap holds one bit per prop");

/* Sets string property slot dst of m to a copy of s[n] (NULL: unset).
 * While m's block has room left (a received message), the copy goes
 * there instead of into an allocation of its own. */
static int set_str(sbus_message_t *m, sbusi_str_t *dst, const char *s,
                   size_t n)
{
    char *p = NULL;
    if (s && m->blk && m->blk_cap - m->blk_used > n) {
        p = (char *)m->blk + m->blk_used;
        memcpy(p, s, n);
        p[n] = 0;
        m->blk_used += n + 1;
    } else if (s) {
        p = sbusi_strndup(s, n);
        if (!p)
            return SBUS_ENOMEM;
    }
    uint32_t bit = 1u << (dst - m->props);
    if (m->props_heap & bit)
        sbusi_free(dst->p);
    if (p && !in_block(m, p))
        m->props_heap |= bit;
    else
        m->props_heap &= ~bit;
    dst->p = p;
    dst->n = s ? n : 0;
    return 0;
}

static int copy_contents(const sbus_message_t *m, sbus_message_t *c)
{
    for (int i = 0; i < SBUS_PROP__COUNT; i++)
        if (m->props[i].p && set_str(c, &c->props[i], m->props[i].p,
                                     m->props[i].n) < 0)
            return SBUS_ENOMEM;
    memcpy(c->fields, m->fields, sizeof c->fields);
    c->fields_set = m->fields_set;
    c->body_kind = m->body_kind;
    for (size_t i = 0; i < m->nsections; i++)
        if (add_section(c, m->sections[i].p, m->sections[i].n) < 0)
            return SBUS_ENOMEM;
    for (size_t i = 0; i < m->naprops; i++)
        if (sbus_message_set_property(c, m->aprops[i].key.p,
                                      m->aprops[i].key.n,
                                      &m->aprops[i].v) < 0)
            return SBUS_ENOMEM;
    return 0;
}

int sbus_message_copy(const sbus_message_t *m, sbus_message_t **out)
{
    if (!m || !out)
        return SBUS_EINVAL;
    sbus_message_t *c = message_alloc();
    if (!c)
        return SBUS_ENOMEM;
    if (copy_contents(m, c) < 0) {
        sbus_message_free(c);
        return SBUS_ENOMEM;
    }
    *out = c;
    return 0;
}

/* ------------------------------- body ------------------------------ */

/* Replaces the whole body with one section (takes q, owned). */
static int replace_body(sbus_message_t *m, sbus_body_kind_t kind, uint8_t *q,
                        size_t n)
{
    clear_sections(m);
    m->sections[0].p = q;
    m->sections[0].n = n;
    m->nsections = 1;
    m->body_kind = kind;
    return 0;
}

int sbus_message_set_body(sbus_message_t *m, const void *p, size_t n)
{
    if (!m || (!p && n))
        return SBUS_EINVAL;
    uint8_t *q = NULL;
    if (n && !(q = sbusi_memdup(p, n)))
        return SBUS_ENOMEM;
    return replace_body(m, SBUS_BODY_DATA, q, n);
}

int sbus_message_set_body_ref(sbus_message_t *m, const void *p, size_t n)
{
    if (!m || (!p && n))
        return SBUS_EINVAL;
    replace_body(m, SBUS_BODY_DATA, n ? (uint8_t *)p : NULL, n);
    m->body_ref = n ? p : NULL;
    return 0;
}

int sbus_message_reset(sbus_message_t *m)
{
    if (!m)
        return SBUS_EINVAL;
    if (m->blk || m->rcv_uid || m->renew || m->ops)
        return SBUS_ESTATE;
    for (int i = 0; m->props_heap && i < SBUS_PROP__COUNT; i++)
        if (m->props_heap & 1u << i)
            sbusi_free(m->props[i].p);
    m->props_heap = 0;
    memset(m->props, 0, sizeof m->props);
    m->fields_set = 0;
    for (size_t i = 0; i < m->naprops; i++) {
        sbusi_free(m->aprops[i].key.p);
        value_free(&m->aprops[i].v);
    }
    m->naprops = 0; /* the entries' array stays for the next message */
    return replace_body(m, SBUS_BODY_DATA, NULL, 0);
}

int sbus_message_add_body_section(sbus_message_t *m, const void *p, size_t n)
{
    if (!m || (!p && n))
        return SBUS_EINVAL;
    if (m->body_kind != SBUS_BODY_DATA)
        return SBUS_ESTATE;
    return add_section(m, p, n);
}

/* A value the caller hands over: a known type, and for SBUS_VAL_AMQP
 * exactly one well-formed encoded value. */
static int value_ok(const sbus_value_t *v)
{
    if ((int)v->type < 0 || v->type > SBUS_VAL_AMQP)
        return 0;
    if (has_bytes(v) && !v->u.s.ptr && v->u.s.len)
        return 0;
    return v->type != SBUS_VAL_AMQP ||
           sbusi_amqp_check(v->u.s.ptr, v->u.s.len) == 0;
}

int sbus_message_set_body_value(sbus_message_t *m, const sbus_value_t *v)
{
    if (!m || !v || !value_ok(v))
        return SBUS_EINVAL;
    sbusi_buf_t b = {0};
    sbusi_enc_value(&b, v);
    if (b.oom) {
        sbusi_buf_free(&b);
        return SBUS_ENOMEM;
    }
    return replace_body(m, SBUS_BODY_VALUE, b.p, b.len);
}

/* 0 if p[n] is exactly one well-formed AMQP list. */
static int check_list(const void *p, size_t n)
{
    sbus_amqp_reader_t r;
    sbus_amqp_item_t it;
    if (sbusi_amqp_check(p, n) < 0)
        return SBUS_EINVAL;
    sbus_amqp_reader_init(&r, p, n);
    return sbus_amqp_read(&r, &it) == 1 && it.type == SBUS_AMQP_LIST
               ? 0
               : SBUS_EINVAL;
}

int sbus_message_set_body_sequence(sbus_message_t *m, const void *p, size_t n)
{
    if (!m || check_list(p, n) < 0)
        return SBUS_EINVAL;
    uint8_t *q = sbusi_memdup(p, n);
    if (!q)
        return SBUS_ENOMEM;
    return replace_body(m, SBUS_BODY_SEQUENCE, q, n);
}

int sbus_message_add_body_sequence(sbus_message_t *m, const void *p, size_t n)
{
    if (!m || check_list(p, n) < 0)
        return SBUS_EINVAL;
    if (m->body_kind != SBUS_BODY_SEQUENCE)
        return SBUS_ESTATE;
    return add_section(m, p, n);
}

size_t sbus_message_body_sequence_count(const sbus_message_t *m)
{
    return m && m->body_kind == SBUS_BODY_SEQUENCE ? m->nsections : 0;
}

int sbus_message_body_sequence_at(const sbus_message_t *m, size_t i,
                                  const void **p, size_t *n)
{
    if (!m || !p || !n)
        return SBUS_EINVAL;
    if (m->body_kind != SBUS_BODY_SEQUENCE)
        return SBUS_ESTATE;
    if (i >= m->nsections)
        return SBUS_ENOENT;
    *p = m->sections[i].p;
    *n = m->sections[i].n;
    return 0;
}

sbus_body_kind_t sbus_message_body_kind(const sbus_message_t *m)
{
    return m ? m->body_kind : SBUS_BODY_DATA;
}

size_t sbus_message_body_count(const sbus_message_t *m)
{
    return m && m->body_kind == SBUS_BODY_DATA ? m->nsections : 0;
}

int sbus_message_body_at(const sbus_message_t *m, size_t i, const void **p,
                         size_t *n)
{
    if (!m || !p || !n)
        return SBUS_EINVAL;
    if (m->body_kind != SBUS_BODY_DATA)
        return SBUS_ESTATE;
    if (i >= m->nsections)
        return SBUS_ENOENT;
    *p = m->sections[i].p ? (const void *)m->sections[i].p : (const void *)"";
    *n = m->sections[i].n;
    return 0;
}

int sbus_message_body_value(const sbus_message_t *m, sbus_value_t *out)
{
    if (!m || !out)
        return SBUS_EINVAL;
    if (m->body_kind != SBUS_BODY_VALUE || m->nsections < 1)
        return SBUS_ESTATE;
    sbusi_dec_t d = {m->sections[0].p, m->sections[0].p + m->sections[0].n, 0};
    sbusi_item_t it;
    if (sbusi_dec_item(&d, &it) < 0)
        return SBUS_EINVAL;
    if (it.described || it.body || (it.v.type == SBUS_VAL_NULL &&
                                     it.code != 0x40)) {
        /* no member for it: hand over its encoding */
        out->type = SBUS_VAL_AMQP;
        out->u.s.ptr = (const char *)m->sections[0].p;
        out->u.s.len = m->sections[0].n;
        return 0;
    }
    *out = it.v;
    return 0;
}

/* -------------------------- props and fields ----------------------- */

static int prop_readonly(sbus_prop_t which)
{
    return which >= SBUS_PROP_DEAD_LETTER_REASON;
}

static int prop_limited(sbus_prop_t which)
{
    return which == SBUS_PROP_MESSAGE_ID || which == SBUS_PROP_SESSION_ID ||
           which == SBUS_PROP_REPLY_TO_SESSION_ID ||
           which == SBUS_PROP_PARTITION_KEY ||
           which == SBUS_PROP_VIA_PARTITION_KEY;
}

int sbus_message_set_prop(sbus_message_t *m, sbus_prop_t which, const char *s,
                          size_t n)
{
    if (!m || which < 0 || which >= SBUS_PROP__COUNT || prop_readonly(which))
        return SBUS_EINVAL;
    if (s && prop_limited(which) && n > MAX_ID_LEN)
        return SBUS_EINVAL;
    return set_str(m, &m->props[which], s, n);
}

int sbus_message_get_prop(const sbus_message_t *m, sbus_prop_t which,
                          const char **s, size_t *n)
{
    if (!m || which < 0 || which >= SBUS_PROP__COUNT || !s)
        return SBUS_EINVAL;
    if (!m->props[which].p)
        return SBUS_ENOENT;
    *s = m->props[which].p;
    if (n)
        *n = m->props[which].n;
    return 0;
}

int sbus_message_set_field(sbus_message_t *m, sbus_field_t which, int64_t v)
{
    if (!m || which < 0 || which > SBUS_FIELD_SCHEDULED_ENQUEUE_TIME)
        return SBUS_EINVAL;
    if (v < 0)
        return SBUS_EINVAL;
    if (which == SBUS_FIELD_TIME_TO_LIVE && v > (int64_t)UINT32_MAX)
        v = UINT32_MAX; /* header.ttl is a uint: longer means "never" */
    if (v < 0)
        return SBUS_EINVAL;
    m->fields[which] = v;
    m->fields_set |= 1u << which;
    return 0;
}

int sbus_message_clear_field(sbus_message_t *m, sbus_field_t which)
{
    if (!m || which < 0 || which > SBUS_FIELD_SCHEDULED_ENQUEUE_TIME)
        return SBUS_EINVAL;
    m->fields_set &= ~(1u << which);
    return 0;
}

int sbus_message_get_field(const sbus_message_t *m, sbus_field_t which,
                           int64_t *v)
{
    if (!m || which < 0 || which >= SBUS_FIELD__COUNT || !v)
        return SBUS_EINVAL;
    if (!(m->fields_set & (1u << which)))
        return SBUS_ENOENT;
    *v = m->fields[which];
    return 0;
}

static void set_field_raw(sbus_message_t *m, sbus_field_t which, int64_t v)
{
    m->fields[which] = v;
    m->fields_set |= 1u << which;
}

void sbusi_message_set_locked_until(sbus_message_t *m, int64_t unix_ms)
{
    set_field_raw(m, SBUS_FIELD_LOCKED_UNTIL, unix_ms);
}

/* ----------------------- application properties -------------------- */

static sbusi_prop_t *find_aprop(const sbus_message_t *m, const char *key,
                                size_t klen)
{
    for (size_t i = 0; i < m->naprops; i++)
        if (m->aprops[i].key.n == klen &&
            memcmp(m->aprops[i].key.p, key, klen) == 0)
            return &m->aprops[i];
    return NULL;
}

int sbus_message_set_property(sbus_message_t *m, const char *key, size_t klen,
                              const sbus_value_t *v)
{
    if (!m || !key || !v || !value_ok(v))
        return SBUS_EINVAL;
    sbus_value_t copy;
    if (value_copy(v, &copy) < 0)
        return SBUS_ENOMEM;
    sbusi_prop_t *p = find_aprop(m, key, klen);
    if (p) {
        value_free(&p->v);
        p->v = copy;
        return 0;
    }
    if (m->naprops == m->capaprops) {
        size_t cap = m->capaprops ? m->capaprops * 2 : 4;
        sbusi_prop_t *a = sbusi_realloc(m->aprops, cap * sizeof *a);
        if (!a) {
            value_free(&copy);
            return SBUS_ENOMEM;
        }
        m->aprops = a;
        m->capaprops = cap;
    }
    p = &m->aprops[m->naprops];
    p->key.p = sbusi_strndup(key, klen);
    if (!p->key.p) {
        value_free(&copy);
        return SBUS_ENOMEM;
    }
    p->key.n = klen;
    p->v = copy;
    m->naprops++;
    return 0;
}

int sbus_message_del_property(sbus_message_t *m, const char *key, size_t klen)
{
    if (!m || !key)
        return SBUS_EINVAL;
    sbusi_prop_t *p = find_aprop(m, key, klen);
    if (!p)
        return SBUS_ENOENT;
    sbusi_free(p->key.p);
    value_free(&p->v);
    size_t i = (size_t)(p - m->aprops);
    memmove(p, p + 1, (m->naprops - i - 1) * sizeof *p);
    m->naprops--;
    return 0;
}

size_t sbus_message_property_count(const sbus_message_t *m)
{
    return m ? m->naprops : 0;
}

int sbus_message_property_at(const sbus_message_t *m, size_t i,
                             const char **key, size_t *klen, sbus_value_t *v)
{
    if (!m || !key || !v)
        return SBUS_EINVAL;
    if (i >= m->naprops)
        return SBUS_ENOENT;
    *key = m->aprops[i].key.p;
    if (klen)
        *klen = m->aprops[i].key.n;
    *v = m->aprops[i].v;
    return 0;
}

/* -------------------------- received messages ---------------------- */

int sbus_message_lock_token(const sbus_message_t *m, uint8_t out[16])
{
    if (!m || !out)
        return SBUS_EINVAL;
    if (!m->has_lock)
        return SBUS_ENOENT;
    memcpy(out, m->lock_token, 16);
    return 0;
}

void sbus_uuid_format(const uint8_t u[16], char out[37])
{
    static const char hex[] = "0123456789abcdef";
    int j = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[j++] = '-';
        out[j++] = hex[u[i] >> 4];
        out[j++] = hex[u[i] & 15];
    }
    out[j] = 0;
}

sbus_settle_state_t sbus_message_settle_state(const sbus_message_t *m)
{
    return m ? m->state : SBUS_MSG_UNSETTLED;
}

size_t sbus_message_encoded_size(const sbus_message_t *m)
{
    if (!m)
        return 0;
    sbusi_buf_t b = {0};
    sbusi_message_encode(m, &b);
    size_t n = b.oom ? 0 : b.len;
    sbusi_buf_free(&b);
    return n;
}

int sbusi_message_validate(const sbus_message_t *m)
{
    const sbusi_str_t *pk = &m->props[SBUS_PROP_PARTITION_KEY];
    const sbusi_str_t *sid = &m->props[SBUS_PROP_SESSION_ID];
    if (pk->p && sid->p && (pk->n != sid->n || memcmp(pk->p, sid->p, pk->n)))
        return SBUS_EINVAL;
    return 0;
}

/* ------------------------------ encoding --------------------------- */

static int has_field(const sbus_message_t *m, sbus_field_t f)
{
    return (m->fields_set >> f) & 1;
}

static void enc_header(const sbus_message_t *m, sbusi_buf_t *b)
{
    if (!has_field(m, SBUS_FIELD_TIME_TO_LIVE))
        return;
    sbusi_enc_descriptor(b, 0x70);
    size_t at = sbusi_enc_list(b);
    sbusi_enc_null(b); /* durable */
    sbusi_enc_null(b); /* priority */
    sbusi_enc_uint(b, (uint32_t)m->fields[SBUS_FIELD_TIME_TO_LIVE]);
    sbusi_enc_end(b, at, 3);
}

static void enc_annotations(const sbus_message_t *m, sbusi_buf_t *b)
{
    const sbusi_str_t *pk = &m->props[SBUS_PROP_PARTITION_KEY];
    const sbusi_str_t *vpk = &m->props[SBUS_PROP_VIA_PARTITION_KEY];
    int sched = has_field(m, SBUS_FIELD_SCHEDULED_ENQUEUE_TIME);
    if (!pk->p && !vpk->p && !sched)
        return;
    uint32_t n = 0;
    sbusi_enc_descriptor(b, 0x72);
    size_t at = sbusi_enc_map(b);
    if (pk->p) {
        sbusi_enc_sym(b, "x-opt-partition-key", 19);
        sbusi_enc_str(b, pk->p, pk->n);
        n += 2;
    }
    if (vpk->p) {
        sbusi_enc_sym(b, "x-opt-via-partition-key", 23);
        sbusi_enc_str(b, vpk->p, vpk->n);
        n += 2;
    }
    if (sched) {
        sbusi_enc_sym(b, "x-opt-scheduled-enqueue-time", 28);
        sbusi_enc_timestamp(b, m->fields[SBUS_FIELD_SCHEDULED_ENQUEUE_TIME]);
        n += 2;
    }
    sbusi_enc_end(b, at, n);
}

/* properties list slots, in AMQP order, and the prop each holds (-1:
 * not exposed). */
static const int g_prop_slots[13] = {
    SBUS_PROP_MESSAGE_ID, -1, SBUS_PROP_TO, SBUS_PROP_SUBJECT,
    SBUS_PROP_REPLY_TO, SBUS_PROP_CORRELATION_ID, SBUS_PROP_CONTENT_TYPE,
    -1, -1, -1, SBUS_PROP_SESSION_ID, -1, SBUS_PROP_REPLY_TO_SESSION_ID,
};

static void enc_properties(const sbus_message_t *m, sbusi_buf_t *b)
{
    int last = -1;
    for (int i = 0; i < 13; i++)
        if (g_prop_slots[i] >= 0 && m->props[g_prop_slots[i]].p)
            last = i;
    if (last < 0)
        return;
    sbusi_enc_descriptor(b, 0x73);
    size_t at = sbusi_enc_list(b);
    for (int i = 0; i <= last; i++) {
        const sbusi_str_t *s =
            g_prop_slots[i] >= 0 ? &m->props[g_prop_slots[i]] : NULL;
        if (!s || !s->p)
            sbusi_enc_null(b);
        else if (g_prop_slots[i] == SBUS_PROP_CONTENT_TYPE)
            sbusi_enc_sym(b, s->p, s->n);
        else
            sbusi_enc_str(b, s->p, s->n);
    }
    sbusi_enc_end(b, at, (uint32_t)last + 1);
}

static void enc_app_props(const sbus_message_t *m, sbusi_buf_t *b)
{
    if (!m->naprops)
        return;
    sbusi_enc_descriptor(b, 0x74);
    size_t at = sbusi_enc_map(b);
    for (size_t i = 0; i < m->naprops; i++) {
        sbusi_enc_str(b, m->aprops[i].key.p, m->aprops[i].key.n);
        sbusi_enc_value(b, &m->aprops[i].v);
    }
    sbusi_enc_end(b, at, (uint32_t)m->naprops * 2);
}

static void enc_body(const sbus_message_t *m, sbusi_buf_t *b)
{
    for (size_t i = 0; i < m->nsections; i++) {
        const sbusi_section_t *s = &m->sections[i];
        switch (m->body_kind) {
        case SBUS_BODY_DATA:
            sbusi_enc_descriptor(b, 0x75);
            sbusi_enc_bin(b, s->p, s->n);
            break;
        case SBUS_BODY_VALUE:
            sbusi_enc_descriptor(b, 0x77);
            sbusi_buf_put(b, s->p, s->n);
            break;
        case SBUS_BODY_SEQUENCE:
            sbusi_enc_descriptor(b, 0x76);
            sbusi_buf_put(b, s->p, s->n);
            break;
        }
    }
}

int sbusi_message_encode(const sbus_message_t *m, sbusi_buf_t *b)
{
    enc_header(m, b);
    enc_annotations(m, b);
    enc_properties(m, b);
    enc_app_props(m, b);
    enc_body(m, b);
    return b->oom ? SBUS_ENOMEM : 0;
}

int sbusi_encode_payload(sbus_message_t *const *msgs, size_t n,
                         sbusi_buf_t *out, uint32_t *format)
{
    for (size_t i = 0; i < n; i++)
        if (!msgs[i] || sbusi_message_validate(msgs[i]) < 0)
            return SBUS_EINVAL;
    if (n == 1) {
        *format = 0;
        return sbusi_message_encode(msgs[0], out);
    }
    *format = SBUSI_BATCH_FORMAT;
    /* room for all of it at once rather than doubling (and copying) a
       dozen times on the way to a 100 KB batch */
    size_t guess = 0;
    for (size_t i = 0; i < n; i++) {
        guess += 160 + msgs[i]->naprops * 32;
        for (size_t j = 0; j < msgs[i]->nsections; j++)
            guess += msgs[i]->sections[j].n + 8;
    }
    if (sbusi_buf_reserve(out, guess) < 0)
        return SBUS_ENOMEM;
    /* Each message is encoded in place as the binary of a data section:
     * a vbin32 header is reserved and patched afterwards, or the bytes
     * are moved down over it for the vbin8 form (under 256 bytes), so the
     * output is what encoding apart and then copying gave, one copy less
     * per message. */
    for (size_t i = 0; i < n && !out->oom; i++) {
        sbusi_enc_descriptor(out, 0x75);
        size_t hdr = out->len;
        sbusi_buf_put(out, "\xb0\0\0\0\0", 5);
        if (sbusi_message_encode(msgs[i], out) < 0)
            break;
        size_t len = out->len - hdr - 5;
        uint8_t *h = out->p + hdr;
        if (len < 256) {
            h[0] = 0xa0;
            h[1] = (uint8_t)len;
            memmove(h + 2, h + 5, len);
            out->len -= 3;
        } else {
            h[1] = (uint8_t)(len >> 24);
            h[2] = (uint8_t)(len >> 16);
            h[3] = (uint8_t)(len >> 8);
            h[4] = (uint8_t)len;
        }
    }
    return out->oom ? SBUS_ENOMEM : 0;
}

/* ------------------------------ decoding --------------------------- */

/* Stores a string item as property `which` (ids of other types are
 * formatted as text). */
static int dec_prop(sbus_message_t *m, int which, const sbus_value_t *v)
{
    char tmp[40];
    switch (v->type) {
    case SBUS_VAL_STRING:
        return set_str(m, &m->props[which], v->u.s.ptr, v->u.s.len);
    case SBUS_VAL_UINT:
        snprintf(tmp, sizeof tmp, "%" PRIu64, v->u.u);
        return set_str(m, &m->props[which], tmp, strlen(tmp));
    case SBUS_VAL_UUID:
        sbus_uuid_format(v->u.uuid, tmp);
        return set_str(m, &m->props[which], tmp, 36);
    case SBUS_VAL_BINARY:
        return set_str(m, &m->props[which], v->u.s.ptr, v->u.s.len);
    default:
        return 0;
    }
}

/* sbusi_item_int() for a bare value. */
static int value_int(const sbus_value_t *v, int64_t *out)
{
    switch (v->type) {
    case SBUS_VAL_INT:
    case SBUS_VAL_TIMESTAMP: *out = v->u.i; return 0;
    case SBUS_VAL_UINT: *out = (int64_t)v->u.u; return 0;
    default: return -1;
    }
}

static int dec_header(sbus_message_t *m, const sbusi_item_t *list)
{
    sbusi_dec_t d;
    sbusi_dec_enter(list, &d);
    for (uint32_t i = 0; i < list->count; i++) {
        sbus_value_t it;
        int64_t v;
        if (sbusi_dec_value(&d, &it) < 0)
            return SBUS_EINVAL;
        if (i != 2 && i != 4)
            continue;
        if (value_int(&it, &v) < 0)
            continue;
        set_field_raw(m, i == 2 ? SBUS_FIELD_TIME_TO_LIVE
                                : SBUS_FIELD_DELIVERY_COUNT, v);
    }
    return 0;
}

static int sym_is(const sbusi_item_t *k, const char *s)
{
    size_t n = strlen(s);
    return k->v.type == SBUS_VAL_STRING && k->v.u.s.len == n &&
           memcmp(k->v.u.s.ptr, s, n) == 0;
}

#define ANNOT(k) k, sizeof k - 1
static const struct {
    const char *key; /* annotation */
    size_t len;      /* strlen(key) */
    int field;       /* sbus_field_t, or -1 */
    int prop;        /* sbus_prop_t, or -1 */
} g_annots[] = {
    {ANNOT("x-opt-sequence-number"), SBUS_FIELD_SEQUENCE_NUMBER, -1},
    {ANNOT("x-opt-enqueue-sequence-number"), SBUS_FIELD_ENQUEUED_SEQUENCE_NUMBER, -1},
    {ANNOT("x-opt-enqueued-time"), SBUS_FIELD_ENQUEUED_TIME, -1},
    {ANNOT("x-opt-locked-until"), SBUS_FIELD_LOCKED_UNTIL, -1},
    {ANNOT("x-opt-message-state"), SBUS_FIELD_STATE, -1},
    {ANNOT("x-opt-scheduled-enqueue-time"), SBUS_FIELD_SCHEDULED_ENQUEUE_TIME, -1},
    {ANNOT("x-opt-partition-key"), -1, SBUS_PROP_PARTITION_KEY},
    {ANNOT("x-opt-via-partition-key"), -1, SBUS_PROP_VIA_PARTITION_KEY},
    {ANNOT("x-opt-deadletter-source"), -1, SBUS_PROP_DEAD_LETTER_SOURCE},
};
#undef ANNOT

static int dec_annotations(sbus_message_t *m, const sbusi_item_t *map)
{
    sbusi_dec_t d;
    sbusi_dec_enter(map, &d);
    for (uint32_t i = 0; i < map->count; i += 2) {
        sbus_value_t k, v;
        if (sbusi_dec_value(&d, &k) < 0 || sbusi_dec_value(&d, &v) < 0)
            return SBUS_EINVAL;
        if (k.type != SBUS_VAL_STRING || k.u.s.len < 6 ||
            memcmp(k.u.s.ptr, "x-opt-", 6) != 0)
            continue; /* none of ours */
        for (size_t j = 0; j < sizeof g_annots / sizeof g_annots[0]; j++) {
            if (k.u.s.len != g_annots[j].len ||
                memcmp(k.u.s.ptr + 6, g_annots[j].key + 6,
                       g_annots[j].len - 6) != 0)
                continue;
            int64_t x;
            if (g_annots[j].field >= 0 && value_int(&v, &x) == 0)
                set_field_raw(m, g_annots[j].field, x);
            else if (g_annots[j].prop >= 0 &&
                     dec_prop(m, g_annots[j].prop, &v) < 0)
                return SBUS_ENOMEM;
            break;
        }
    }
    return 0;
}

static int dec_delivery_annotations(sbus_message_t *m,
                                    const sbusi_item_t *map)
{
    sbusi_item_t v; /* sbusi_map_find matches symbol keys too */
    if (sbusi_map_find(map, "x-opt-lock-token", &v) == 0 &&
        v.v.type == SBUS_VAL_UUID) {
        memcpy(m->lock_token, v.v.u.uuid, 16);
        m->has_lock = 1;
    }
    return 0;
}

static int dec_properties(sbus_message_t *m, const sbusi_item_t *list)
{
    sbusi_dec_t d;
    sbusi_dec_enter(list, &d);
    for (uint32_t i = 0; i < list->count && i < 13; i++) {
        sbus_value_t it;
        if (sbusi_dec_value(&d, &it) < 0)
            return SBUS_EINVAL;
        if (g_prop_slots[i] >= 0 && dec_prop(m, g_prop_slots[i], &it) < 0)
            return SBUS_ENOMEM;
    }
    return 0;
}

static int dec_app_props(sbus_message_t *m, const sbusi_item_t *map)
{
    sbusi_dec_t d;
    sbusi_dec_enter(map, &d);
    for (uint32_t i = 0; i < map->count; i += 2) {
        sbusi_item_t k, v;
        if (sbusi_dec_item(&d, &k) < 0 || sbusi_dec_item(&d, &v) < 0)
            return SBUS_EINVAL;
        if (k.v.type != SBUS_VAL_STRING)
            continue; /* keys are strings; skip anything else */
        if (v.described || v.body || v.code == 0x45 ||
            (v.v.type == SBUS_VAL_NULL && v.code != 0x40)) {
            /* list, map, array, described, char, decimal: kept as they
               came (malformed ones are skipped) */
            v.v.type = SBUS_VAL_AMQP;
            v.v.u.s.ptr = (const char *)v.start;
            v.v.u.s.len = (size_t)(v.stop - v.start);
        }
        int rc = sbus_message_set_property(m, k.v.u.s.ptr, k.v.u.s.len, &v.v);
        if (rc == SBUS_EINVAL)
            continue;
        if (rc < 0)
            return SBUS_ENOMEM;
        int which = -1;
        if (sym_is(&k, "DeadLetterReason"))
            which = SBUS_PROP_DEAD_LETTER_REASON;
        else if (sym_is(&k, "DeadLetterErrorDescription"))
            which = SBUS_PROP_DEAD_LETTER_DESCRIPTION;
        if (which >= 0 && dec_prop(m, which, &v.v) < 0)
            return SBUS_ENOMEM;
    }
    return 0;
}

static int dec_section(sbus_message_t *m, const sbusi_item_t *it,
                       const uint8_t *value_start)
{
    switch (it->descriptor) {
    case 0x70: return dec_header(m, it);
    case 0x71: return dec_delivery_annotations(m, it);
    case 0x72: return dec_annotations(m, it);
    case 0x73: return dec_properties(m, it);
    case 0x74: return dec_app_props(m, it);
    case 0x75:
        if (m->body_kind != SBUS_BODY_DATA || it->v.type != SBUS_VAL_BINARY)
            return SBUS_EINVAL;
        return add_section(m, it->v.u.s.ptr, it->v.u.s.len);
    case 0x76:
    case 0x77:
        /* AMQP 1.0 §3.2: the body is data sections, or sequence sections,
         * or exactly one amqp-value; never a mix. */
        if (m->nsections > 0 && (it->descriptor == 0x77 ||
                                 m->body_kind != SBUS_BODY_SEQUENCE))
            return SBUS_EINVAL;
        m->body_kind = it->descriptor == 0x77 ? SBUS_BODY_VALUE
                                              : SBUS_BODY_SEQUENCE;
        return add_section(m, value_start, (size_t)(it->stop - value_start));
    default:
        return 0; /* footer and unknown sections */
    }
}

/* Where the value of a described item starts (after its descriptor). */
static const uint8_t *value_start(const sbusi_item_t *it)
{
    sbusi_dec_t d = {it->start + 1, it->stop, 0};
    sbusi_item_t desc;
    sbusi_dec_item(&d, &desc);
    return d.p;
}

/* Room for the strings decoded from a received message (ids, partition
 * keys, dead-letter reason) next to its payload; longer ones get an
 * allocation of their own. */
#define BLOCK_STR_ROOM 192

sbus_message_t *sbusi_message_alloc_payload(sbusi_msgpool_t **poolp,
                                            size_t n, uint8_t **payload)
{
    size_t head = (sizeof(sbus_message_t) + 15) & ~(size_t)15;
    if (n > SIZE_MAX - head - BLOCK_STR_ROOM - POOL_ROUND)
        return NULL;
    size_t want = head + n + BLOCK_STR_ROOM, size = want;
    sbusi_msgpool_t *pool = pool_get(poolp);
    sbus_message_t *m = NULL;
    if (pool) {
        /* the block freed last, if it fits without wasting half of it */
        if (pool->n > 0 && pool->blk[pool->n - 1].size >= want &&
            pool->blk[pool->n - 1].size / 2 <= want) {
            pool->n--;
            m = pool->blk[pool->n].p;
            size = pool->blk[pool->n].size;
            pool->bytes -= size;
        } else {
            size = (want + POOL_ROUND - 1) / POOL_ROUND * POOL_ROUND;
        }
    }
    if (!m)
        m = sbusi_malloc(size);
    if (!m)
        return NULL;
    memset(m, 0, sizeof *m);
    m->body_kind = SBUS_BODY_DATA;
    m->sections = &m->section0;
    m->capsections = 1;
    m->blk = (uint8_t *)m + head;
    m->blk_cap = size - head;
    m->blk_used = n;
    if (pool) {
        m->pool = pool;
        pool->refs++;
    }
    *payload = m->blk;
    return m;
}

int sbusi_message_decode(const uint8_t *p, size_t n, sbus_message_t **out)
{
    uint8_t *q;
    sbus_message_t *m = sbusi_message_alloc_payload(NULL, n, &q);
    if (!m)
        return SBUS_ENOMEM;
    if (n)
        memcpy(q, p, n);
    int rc = sbusi_message_decode_payload(m, n);
    if (rc == 0)
        *out = m;
    return rc;
}

int sbusi_message_decode_payload(sbus_message_t *m, size_t n)
{
    const uint8_t *p = m->blk;
    sbusi_dec_t d = {p, p + n, 0};
    int rc = 0;
    while (d.p < d.end && rc == 0) {
        sbusi_item_t it;
        if (sbusi_dec_item(&d, &it) < 0 || !it.described) {
            rc = SBUS_EINVAL;
            break;
        }
        int raw = it.descriptor == 0x76 || it.descriptor == 0x77;
        rc = dec_section(m, &it, raw ? value_start(&it) : NULL);
    }
    if (rc == 0 && m->body_kind == SBUS_BODY_DATA && m->nsections == 0)
        rc = add_section(m, NULL, 0);
    if (rc < 0) {
        sbus_message_free(m);
        return rc;
    }
    if (has_field(m, SBUS_FIELD_ENQUEUED_TIME) &&
        has_field(m, SBUS_FIELD_TIME_TO_LIVE))
        set_field_raw(m, SBUS_FIELD_EXPIRES_AT,
                      m->fields[SBUS_FIELD_ENQUEUED_TIME] +
                          m->fields[SBUS_FIELD_TIME_TO_LIVE]);
    return 0;
}
