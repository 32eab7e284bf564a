/*
 * fuzz_emulator_amqp.c: libFuzzer target feeding arbitrary bytes to one emulator connection.
 *
 * Modes chosen by the first input byte: bit 0 clear = raw (the bytes are the
 * whole stream, from the protocol header on); bit 0 set = primed (a valid SASL exchange,
 * open, begin, and attaches of a sender and a receiver to queue "q" and to
 * "q/$management", recorded once from a Proton client, come first; the
 * connection already holds a claim with every right, so transfers, flows,
 * dispositions and management requests built by the fuzzer reach the
 * broker); bit 1 set with priming = framed (the rest is cut into chunks
 * [len][payload], each wrapped in a correct AMQP frame header on channel 0,
 * so mutations land in performatives and messages instead of framing).
 * Each input gets a fresh connection on a long-lived broker; the
 * broker must never crash, and garbage must only close that connection.
 *
 * Build: cmake -DCMAKE_C_COMPILER=clang -DSBUS_EMU_FUZZ=ON; run with a corpus dir.
 */
#include <proton/connection.h>
#include <proton/event.h>
#include <proton/sasl.h>
#include <proton/session.h>
#include <proton/terminus.h>
#include <stdlib.h>
#include <string.h>

#include "emu.h"

static emu_broker_t *g_broker;
static emu_buf_t g_prelude;

static void record_prelude(void)
{
  pn_connection_driver_t c;
  pn_connection_driver_init(&c, NULL, NULL);
  pn_sasl_allowed_mechs(pn_sasl(c.transport), "ANONYMOUS");
  pn_connection_set_container(c.connection, "fuzz");
  pn_connection_open(c.connection);
  pn_session_t *s = pn_session(c.connection);
  pn_session_open(s);
  const char *addrs[] = {"q", "q/$management"};
  for (int i = 0; i < 2; i++) {
    pn_link_t *snd = pn_sender(s, i ? "ms" : "s");
    pn_terminus_set_address(pn_link_target(snd), addrs[i]);
    pn_link_open(snd);
    pn_link_t *rcv = pn_receiver(s, i ? "mr" : "r");
    pn_terminus_set_address(pn_link_source(rcv), addrs[i]);
    pn_link_open(rcv);
    pn_link_flow(rcv, 10);
  }
  /* run against a real emulator connection, recording what the client sends */
  emu_conn_t *srv = emu_conn_new(g_broker, NULL);
  for (int i = 0; i < 50; i++) {
    while (pn_connection_driver_next_event(&c)) {}
    pn_bytes_t out = pn_connection_driver_write_buffer(&c);
    if (out.size) {
      buf_put(&g_prelude, out.start, out.size);
      pn_rwbytes_t in = pn_connection_driver_read_buffer(&srv->driver);
      size_t k = out.size < in.size ? out.size : in.size;
      memcpy(in.start, out.start, k);
      emu_conn_read_done(srv, in.start, k);
      pn_connection_driver_write_done(&c, out.size);
    }
    emu_conn_process(srv);
    pn_bytes_t back = emu_conn_output(srv);
    if (back.size) {
      pn_rwbytes_t in = pn_connection_driver_read_buffer(&c);
      size_t k = back.size < in.size ? back.size : in.size;
      memcpy(in.start, back.start, k);
      pn_connection_driver_read_done(&c, k);
      emu_conn_output_done(srv, k);
    }
    if (!out.size && !back.size) break;
  }
  emu_conn_free(srv);
  pn_connection_driver_destroy(&c);
}

static void setup(void)
{
  emu_options_t o = {0};
  g_broker = emu_broker_new(&o);
  emu_props_t p;
  emu_props_default(&p);
  emu_entity_add(g_broker, ENT_QUEUE, "q", NULL, &p);
  emu_props_t sp;
  emu_props_default(&sp);
  sp.requires_session = true;
  emu_entity_add(g_broker, ENT_QUEUE, "sq", NULL, &sp);
  /* a claim for the recording connection is not needed: refused links still record their attach */
  record_prelude();
}

static void feed(emu_conn_t *c, const uint8_t *p, size_t n)
{
  while (n > 0) {
    pn_rwbytes_t rb = pn_connection_driver_read_buffer(&c->driver);
    if (!rb.size) return;
    size_t k = n < rb.size ? n : rb.size;
    memcpy(rb.start, p, k);
    emu_conn_read_done(c, rb.start, k);
    p += k;
    n -= k;
    emu_conn_process(c);
    emu_dispatch_all(g_broker);
    pn_bytes_t out;
    while ((out = emu_conn_output(c)).size)
      emu_conn_output_done(c, out.size);
  }
}

static void feed_framed(emu_conn_t *c, const uint8_t *p, size_t n)
{
  emu_buf_t f = {0};
  while (n > 0) {
    size_t len = p[0];
    p++;
    n--;
    if (len > n) len = n;
    buf_be32(&f, (uint32_t)(8 + len));
    buf_u8(&f, 2);
    buf_u8(&f, 0);
    buf_be16(&f, 0);
    buf_put(&f, p, len);
    p += len;
    n -= len;
  }
  feed(c, f.p, f.len);
  buf_free(&f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  if (!g_broker) setup();
  if (!size) return 0;
  emu_conn_t *c = emu_conn_new(g_broker, NULL);
  emu_token_t *t = calloc(1, sizeof *t);
  t->path = strdup("");
  t->rights = RIGHT_SEND | RIGHT_LISTEN | RIGHT_MANAGE;
  t->expires_ms = INT64_MAX / 2;
  c->tokens = t;
  c->authed = true;
  if (data[0] & 1) feed(c, g_prelude.p, g_prelude.len);
  if ((data[0] & 3) == 3) feed_framed(c, data + 1, size - 1);
  else feed(c, data + 1, size - 1);
  pn_connection_driver_read_close(&c->driver);
  emu_conn_process(c);
  emu_tick(g_broker);
  emu_conn_free(c);
  /* keep the store bounded across inputs */
  for (emu_entity_t *e = g_broker->entities; e; e = e->next)
    while (e->counts.total > 1000 && e->head) emu_remove(g_broker, e->head);
  return 0;
}
