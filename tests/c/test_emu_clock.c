/*
 * test_emu_clock.c: times on the wire leave out the skew of POST /clock.
 *
 * After the emulator clock is moved forward an hour, a client must still see
 * locked-until, enqueued and session-lock times on its own wall clock, and
 * the scheduled enqueue times it sends are wall-clock times too (wire time +
 * skew inside the broker).
 */
#include "test_emu_harness.h"

static int64_t real_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A timestamp message annotation of a received delivery, or INT64_MIN. */
static int64_t ann_ts(const rx_t *r, const char *key)
{
  int64_t v = INT64_MIN;
  pn_message_t *m = pn_message();
  if (pn_message_decode(m, (char *)r->data, r->len) == 0) {
    pn_data_t *a = pn_message_annotations(m);
    pn_data_rewind(a);
    if (pn_data_next(a) && pn_data_type(a) == PN_MAP) {
      size_t n = pn_data_get_map(a);
      pn_data_enter(a);
      for (size_t i = 0; i < n / 2; i++) {
        pn_data_next(a);
        pn_bytes_t k = pn_data_get_symbol(a);
        pn_data_next(a);
        if (k.size == strlen(key) && !memcmp(k.start, key, k.size) && pn_data_type(a) == PN_TIMESTAMP)
          v = pn_data_get_timestamp(a);
      }
    }
  }
  pn_message_free(m);
  return v;
}

static void test_delivery_times_after_an_hour_of_skew(void)
{
  emu_broker_t *b = h_broker();
  emu_props_t p;
  emu_props_default(&p);
  p.lock_ms = 120000; /* longer than the 61 s moved below: no redelivery */
  emu_entity_add(b, ENT_QUEUE, "q1", NULL, &p);
  b->skew_ms += 3600 * 1000;
  harness_t h;
  h_open(&h, b);
  CHECK(h_auth(&h, "q1") == 202);
  pn_link_t *s = h_sender(&h, "s", "q1");
  h_send_text(&h, s, "now", NULL);

  /* scheduled 60 s ahead of the client's clock: not due, although the emulator is an hour on */
  pn_message_t *m = pn_message();
  pn_data_put_binary(pn_message_body(m), pn_bytes(5, "later"));
  pn_data_t *ann = pn_message_annotations(m);
  pn_data_put_map(ann);
  pn_data_enter(ann);
  pn_data_put_symbol(ann, pn_bytes(28, "x-opt-scheduled-enqueue-time"));
  pn_data_put_timestamp(ann, real_ms() + 60000);
  pn_data_exit(ann);
  char *buf;
  size_t n = h_encode(m, &buf);
  h_send_bytes(&h, s, buf, n);
  free(buf);
  pn_message_free(m);
  emu_entity_t *q = emu_entity_find(b, "q1");
  CHECK(q->counts.active == 1 && q->counts.scheduled == 1);

  int before = h.nrx;
  h_receiver(&h, "r", "q1", false, 10);
  CHECK(h.nrx == before + 1);
  if (h.nrx == before + 1) {
    int64_t now = real_ms();
    int64_t until = ann_ts(&h.rx[before], "x-opt-locked-until");
    int64_t enq = ann_ts(&h.rx[before], "x-opt-enqueued-time");
    CHECK(until > now + 115000 && until <= now + 120000);
    CHECK(enq > now - 5000 && enq <= now);
  }
  /* the broker's timers jump: the schedule comes due after 61 s of emulator time */
  b->skew_ms += 61000;
  emu_tick(b);
  h_pump(&h);
  CHECK(h.nrx == before + 2);
  if (h.nrx == before + 2) {
    /* it was due 1 s ago in the client's terms: enqueued "61 s after" the first */
    int64_t enq = ann_ts(&h.rx[before + 1], "x-opt-enqueued-time");
    int64_t now = real_ms();
    CHECK(enq > now - 5000 && enq <= now);
    int64_t until = ann_ts(&h.rx[before + 1], "x-opt-locked-until");
    CHECK(until > now + 115000 && until <= now + 120000);
  }
  h_close(&h);
  emu_broker_free(b);
}

static void test_session_lock_after_skew(void)
{
  emu_broker_t *b = h_broker();
  emu_props_t p;
  emu_props_default(&p);
  p.lock_ms = 30000;
  p.requires_session = true;
  emu_entity_add(b, ENT_QUEUE, "sq", NULL, &p);
  b->skew_ms += 7200 * 1000;
  harness_t h;
  h_open(&h, b);
  CHECK(h_auth(&h, "sq") == 202);
  pn_link_t *r = pn_receiver(h.ssn, "sr");
  pn_terminus_set_address(pn_link_source(r), "sq");
  pn_data_t *f = pn_terminus_filter(pn_link_source(r));
  pn_data_put_map(f);
  pn_data_enter(f);
  pn_data_put_symbol(f, pn_bytes(28, "com.microsoft:session-filter"));
  pn_data_put_string(f, pn_bytes(2, "S1"));
  pn_data_exit(f);
  pn_link_open(r);
  h_pump(&h);
  CHECK(pn_link_state(r) & PN_REMOTE_ACTIVE);
  pn_data_t *props = pn_link_remote_properties(r);
  int64_t ticks = 0;
  pn_data_rewind(props);
  if (pn_data_next(props) && pn_data_type(props) == PN_MAP) {
    pn_data_enter(props);
    while (pn_data_next(props)) {
      pn_bytes_t k = pn_data_get_symbol(props);
      pn_data_next(props);
      if (k.size == 30 && !memcmp(k.start, "com.microsoft:locked-until-utc", 30)) ticks = pn_data_get_long(props);
    }
  }
  int64_t until = (ticks - 621355968000000000LL) / 10000, now = real_ms();
  CHECK(until > now + 25000 && until <= now + 30000);
  h_close(&h);
  emu_broker_free(b);
}

int main(void)
{
  test_delivery_times_after_an_hour_of_skew();
  test_session_lock_after_skew();
  if (g_failures) fprintf(stderr, "%d check(s) failed\n", g_failures);
  else printf("test_emu_clock: all passed\n");
  return g_failures ? 1 : 0;
}
