/*
 * wire.c: a look at the client's AMQP frames before Proton reads them.
 *
 * Proton 0.37 does not tell a receiver the message-format of a delivery, and
 * Service Bus batches are recognised by exactly that field (0x80013700,
 * protocol.md §6.4): a normal message whose body happens to be data
 * sections holding encoded messages must stay one message. So every byte a
 * host hands to Proton goes through emu_conn_read_done(), which follows the
 * frame boundaries (protocol headers, SASL and AMQP frames, any split across
 * reads) and decodes three performatives of the client:
 *
 *   attach   (role sender: the client sends on it) -> a wire link named like
 *            the Proton link, keyed by (channel, handle) while attached;
 *   transfer the first transfer of each delivery records (delivery tag,
 *            message-format) on its wire link;
 *   detach / end   the (channel, handle) pairs stop naming the wire link.
 *
 * amqp.c claims the wire link of a receiving link at attach (same name) and
 * takes the format of each completed delivery by its tag (emu_wire_format).
 * Records are matched by tag, oldest first, and anything older than the
 * match is dropped, so a delivery Proton discarded never shifts the others.
 * Input this scanner cannot follow (a frame size Proton would refuse) ends
 * the scanning; Proton closes such a connection anyway. The scanner never
 * changes the bytes and never allocates per frame except for attach names
 * and the per-link record ring.
 */
#include "emu.h"

#include <stdlib.h>
#include <string.h>

#define WIRE_MAX_FRAME (16u << 20) /* larger frame sizes: not AMQP we can follow */
#define WIRE_MAX_RECORDS 4096      /* per link; the oldest goes when a client floods */

enum { PERF_BEGIN = 0x11, PERF_ATTACH = 0x12, PERF_TRANSFER = 0x14, PERF_DETACH = 0x16, PERF_END = 0x17 };

static uint32_t be32(const unsigned char *p)
{
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Iterator over the fields of a performative list that may be cut short: fields that do
 * not fit in the collected bytes simply end the iteration. */
static bool fields_begin(const unsigned char *p, size_t n, amqp_iter_t *it)
{
  memset(it, 0, sizeof *it);
  if (n < 1) return false;
  if (p[0] == 0x45) return true; /* list0: no fields */
  if (p[0] == 0xc0 && n >= 3) {
    size_t body = p[1] ? p[1] - 1u : 0; /* the size byte counts the count byte too */
    it->p = p + 3;
    it->left = n - 3 < body ? n - 3 : body;
    it->remaining = p[2];
    return p[1] >= 1;
  }
  if (p[0] == 0xd0 && n >= 9) {
    uint32_t size = be32(p + 1);
    if (size < 4) return false;
    it->p = p + 9;
    it->left = n - 9 < size - 4 ? n - 9 : size - 4;
    it->remaining = be32(p + 5);
    return true;
  }
  return false;
}

static emu_wlink_t *wl_find(emu_wire_t *w, uint16_t ch, uint32_t handle)
{
  for (emu_wlink_t *x = w->links; x; x = x->next)
    if (x->current && x->channel == ch && x->handle == handle) return x;
  return NULL;
}

static void wl_free(emu_wlink_t *x)
{
  free(x->name);
  free(x->rec);
  free(x);
}

static void on_attach(emu_wire_t *w, uint16_t ch, amqp_iter_t *it)
{
  amqp_val_t name, handle, role;
  int64_t h;
  bool is_receiver;
  const char *s;
  size_t sl;
  if (!amqp_iter_next(it, &name) || !amqp_iter_next(it, &handle) || !amqp_iter_next(it, &role)) return;
  if (!amqp_get_str(&name, &s, &sl) || !amqp_get_i64(&handle, &h) || h < 0 || h > UINT32_MAX) return;
  if (!amqp_get_bool(&role, &is_receiver) || is_receiver) return; /* we only follow what the client sends */
  emu_wlink_t *old = wl_find(w, ch, (uint32_t)h);
  if (old) old->current = false;
  emu_wlink_t *x = calloc(1, sizeof *x);
  if (!x) abort();
  x->name = malloc(sl + 1);
  if (!x->name) abort();
  memcpy(x->name, s, sl);
  x->name[sl] = 0;
  x->channel = ch;
  x->handle = (uint32_t)h;
  x->current = true;
  /* append: claims go to the oldest unclaimed link of a name, in attach order */
  emu_wlink_t **pp = &w->links;
  while (*pp) pp = &(*pp)->next;
  *pp = x;
}

static void record(emu_wlink_t *x, const unsigned char *tag, size_t tn, uint32_t fmt)
{
  if (x->nrec == WIRE_MAX_RECORDS) {
    x->head = (x->head + 1) % x->cap; /* full: cap == WIRE_MAX_RECORDS */
    x->nrec--;
  }
  if (x->nrec == x->cap) {
    /* grow the ring, unrolling it to start at 0 */
    size_t cap = x->cap ? x->cap * 2 : 4;
    if (cap > WIRE_MAX_RECORDS) cap = WIRE_MAX_RECORDS;
    emu_wrec_t *r = malloc(cap * sizeof *r);
    if (!r) abort();
    for (size_t i = 0; i < x->nrec; i++) r[i] = x->rec[(x->head + i) % x->cap];
    free(x->rec);
    x->rec = r;
    x->cap = cap;
    x->head = 0;
  }
  emu_wrec_t *r = &x->rec[(x->head + x->nrec) % x->cap];
  r->format = fmt;
  r->tag_len = (uint8_t)(tn < sizeof r->tag ? tn : sizeof r->tag);
  if (r->tag_len) memcpy(r->tag, tag, r->tag_len);
  x->nrec++;
}

static void on_transfer(emu_wire_t *w, uint16_t ch, amqp_iter_t *it)
{
  amqp_val_t f[10];
  int n = 0;
  while (n < 10 && amqp_iter_next(it, &f[n])) n++;
  int64_t h = -1;
  bool h_ok = n >= 1 && amqp_get_i64(&f[0], &h) && h >= 0 && h <= UINT32_MAX;
  emu_wlink_t *x = h_ok ? wl_find(w, ch, (uint32_t)h) : NULL;
  bool more = false, aborted = false;
  if (n > 5) amqp_get_bool(&f[5], &more);
  if (n > 9) amqp_get_bool(&f[9], &aborted);
  /* Proton reads delivery-id only as a uint: any other type counts as absent */
  bool id_present = n >= 2 && !f[1].described &&
                    (f[1].code == AMQP_UINT || f[1].code == AMQP_SMALLUINT || f[1].code == AMQP_UINT0);
  if ((!x || !x->mid) && !id_present) {
    /* The first transfer of a delivery must carry its delivery-id (AMQP 1.0
       2.7.5; only continuations may leave it out). Proton 0.37 asserts on a
       multi-transfer delivery that starts without one - on any link, even
       one on which the client receives, and when its fields do not even
       decode - which would take the whole emulator down: the connection is
       closed instead. */
    w->violation = "the first transfer of a delivery has no delivery-id";
    w->broken = true;
    return;
  }
  if (!x) return;
  if (!x->mid) {
    const unsigned char *tag = NULL;
    size_t tn = 0;
    int64_t fmt = 0;
    if (n > 2) amqp_get_bin(&f[2], &tag, &tn);
    if (n > 3 && !amqp_get_i64(&f[3], &fmt)) fmt = 0;
    record(x, tag, tn, (uint32_t)fmt);
  }
  x->mid = more && !aborted;
}

static void on_detach(emu_wire_t *w, uint16_t ch, amqp_iter_t *it)
{
  amqp_val_t handle;
  int64_t h;
  if (!amqp_iter_next(it, &handle) || !amqp_get_i64(&handle, &h) || h < 0 || h > UINT32_MAX) return;
  emu_wlink_t *x = wl_find(w, ch, (uint32_t)h);
  if (x) x->current = false;
}

static void on_end(emu_wire_t *w, uint16_t ch)
{
  for (emu_wlink_t *x = w->links; x; x = x->next)
    if (x->channel == ch) x->current = false;
}

/* One frame, of which the first `have` bytes (at most the whole frame) are in p. */
static void on_frame(emu_wire_t *w, const unsigned char *p, size_t have)
{
  size_t doff = (size_t)p[4] * 4;
  if (p[5] != 0 || doff < 8 || doff + 3 > have) return; /* SASL, empty (heartbeat) or cut */
  uint16_t ch = (uint16_t)(p[6] << 8 | p[7]);
  const unsigned char *q = p + doff;
  size_t left = have - doff;
  uint64_t code;
  if (q[0] != 0x00) return;
  if (q[1] == 0x53) {
    code = q[2];
    q += 3;
    left -= 3;
  } else if (q[1] == 0x80 && left >= 10) {
    code = 0;
    for (int i = 0; i < 8; i++) code = code << 8 | q[2 + i];
    q += 10;
    left -= 10;
  } else {
    return;
  }
  amqp_iter_t it;
  if (code == PERF_END) {
    on_end(w, ch);
    return;
  }
  if (code != PERF_ATTACH && code != PERF_TRANSFER && code != PERF_DETACH) return;
  if (!fields_begin(q, left, &it)) return;
  if (code == PERF_ATTACH) on_attach(w, ch, &it);
  else if (code == PERF_TRANSFER) on_transfer(w, ch, &it);
  else on_detach(w, ch, &it);
}

void emu_wire_scan(emu_wire_t *w, const unsigned char *p, size_t n)
{
  while (n > 0 && !w->broken) {
    if (w->skip) {
      size_t k = w->skip < n ? (size_t)w->skip : n;
      w->skip -= k;
      p += k;
      n -= k;
      continue;
    }
    if (!w->hlen && n >= 8 && memcmp(p, "AMQP", 4) != 0) {
      /* fast path: the frame's head is contiguous in the input; read it in place */
      uint32_t size = be32(p);
      size_t head = size < sizeof w->hdr ? size : sizeof w->hdr;
      if (size >= 8 && size <= WIRE_MAX_FRAME && n >= head) {
        on_frame(w, p, head);
        size_t k = size < n ? size : n;
        w->skip = size - k;
        p += k;
        n -= k;
        continue;
      }
    }
    size_t want = w->size ? w->want : 8;
    size_t k = want - w->hlen < n ? want - w->hlen : n;
    memcpy(w->hdr + w->hlen, p, k);
    w->hlen += k;
    p += k;
    n -= k;
    if (w->hlen < want) continue;
    if (!w->size) {
      if (memcmp(w->hdr, "AMQP", 4) == 0) { /* protocol header (AMQP or SASL layer) */
        w->hlen = 0;
        continue;
      }
      uint32_t size = be32(w->hdr);
      if (size < 8 || size > WIRE_MAX_FRAME) {
        w->broken = true;
        return;
      }
      w->size = size;
      w->want = size < sizeof w->hdr ? size : sizeof w->hdr;
      if (w->hlen < w->want) continue;
    }
    on_frame(w, w->hdr, w->want);
    w->skip = w->size - w->want;
    w->size = 0;
    w->hlen = 0;
  }
}

emu_wlink_t *emu_wire_claim(emu_wire_t *w, const char *name)
{
  for (emu_wlink_t *x = w->links; x && name; x = x->next) {
    if (x->state == WL_NEW && strcmp(x->name, name) == 0) {
      x->state = WL_CLAIMED;
      return x;
    }
  }
  return NULL;
}

void emu_wire_unclaim(emu_wlink_t *x)
{
  if (x) x->state = WL_DONE;
}

uint32_t emu_wire_format(emu_wlink_t *x, const unsigned char *tag, size_t tn)
{
  if (!x) return 0;
  if (tn > sizeof x->rec[0].tag) tn = sizeof x->rec[0].tag;
  for (size_t i = 0; i < x->nrec; i++) {
    emu_wrec_t *r = &x->rec[(x->head + i) % x->cap];
    if (r->tag_len != tn || (tn && memcmp(r->tag, tag, tn) != 0)) continue;
    uint32_t fmt = r->format;
    /* this record and every older one are used up */
    x->head = (x->head + i + 1) % x->cap;
    x->nrec -= i + 1;
    return fmt;
  }
  return 0;
}

void emu_wire_gc(emu_wire_t *w)
{
  for (emu_wlink_t **pp = &w->links; *pp;) {
    emu_wlink_t *x = *pp;
    if (!x->current && x->state != WL_CLAIMED) {
      *pp = x->next;
      wl_free(x);
    } else {
      pp = &x->next;
    }
  }
}

void emu_wire_free(emu_wire_t *w)
{
  while (w->links) {
    emu_wlink_t *x = w->links;
    w->links = x->next;
    wl_free(x);
  }
}
