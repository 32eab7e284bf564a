/*
 * test_emu_idle.c: the service's idle timers (protocol.md §1.6), on the
 * emulator clock.
 *
 * A sender or receiver link without transfers, flows or dispositions for the
 * link idle time is detached with amqp:link:detach-forced ("...IdleTimerExpired:
 * Idle timeout: 00:10:00"); a receiver waiting with credit while nothing
 * arrives is idle too. A connection whose links are all gone for the
 * connection idle time, or that never attaches one within the no-link time,
 * is closed with amqp:connection:forced. 0 switches a timer off.
 */
#include "test_emu_harness.h"

static emu_broker_t *broker(int64_t link, int64_t conn, int64_t nolink)
{
  emu_broker_t *b = h_broker();
  b->opt.link_idle_ms = link;
  b->opt.conn_idle_ms = conn;
  b->opt.conn_no_link_ms = nolink;
  emu_props_t p;
  emu_props_default(&p);
  emu_entity_add(b, ENT_QUEUE, "q1", NULL, &p);
  emu_props_default(&p);
  emu_entity_add(b, ENT_QUEUE, "q2", NULL, &p);
  return b;
}

static void advance(harness_t *h, int64_t ms)
{
  h->b->skew_ms += ms;
  emu_tick(h->b);
  h_pump(h);
}

static bool detached_idle(pn_link_t *l)
{
  pn_condition_t *c = pn_link_remote_condition(l);
  return (pn_link_state(l) & PN_REMOTE_CLOSED) && pn_condition_get_name(c) &&
         !strcmp(pn_condition_get_name(c), "amqp:link:detach-forced") &&
         strstr(pn_condition_get_description(c), "IdleTimerExpired: Idle timeout: 00:10:00") != NULL;
}

static bool conn_forced(harness_t *h, const char *ms)
{
  pn_condition_t *c = pn_connection_remote_condition(h->client.connection);
  return (pn_connection_state(h->client.connection) & PN_REMOTE_CLOSED) && pn_condition_get_name(c) &&
         !strcmp(pn_condition_get_name(c), "amqp:connection:forced") &&
         strstr(pn_condition_get_description(c), ms) != NULL;
}

static void test_idle_links_are_detached(void)
{
  emu_broker_t *b = broker(600000, 300000, 60000);
  harness_t h;
  h_open(&h, b);
  CHECK(h_auth(&h, "q1") == 202);
  CHECK(h_auth(&h, "q2") == 202);
  pn_link_t *s = h_sender(&h, "s", "q2");
  pn_link_t *r = h_receiver(&h, "r", "q1", false, 10);   /* waits with credit; nothing arrives */
  pn_link_t *r2 = h_receiver(&h, "r2", "q1", false, 0);  /* the client keeps issuing credit */
  advance(&h, 300000);
  h_send_text(&h, s, "keeps s busy", NULL);
  pn_link_flow(r2, 1);
  h_pump(&h);
  advance(&h, 299000);
  CHECK(!(pn_link_state(r) & PN_REMOTE_CLOSED)); /* 599 s */
  advance(&h, 2000);
  CHECK(detached_idle(r));
  CHECK(strstr(pn_condition_get_description(pn_link_remote_condition(r)), "AmqpMessageConsumer") != NULL);
  CHECK(!(pn_link_state(s) & PN_REMOTE_CLOSED));
  CHECK(!(pn_link_state(r2) & PN_REMOTE_CLOSED));
  /* a receiver that gets messages is active */
  h_send_text(&h, s, "s again", NULL);
  pn_link_t *s1 = h_sender(&h, "s1", "q1");
  h_send_text(&h, s1, "for r2", NULL);
  advance(&h, 599000);
  CHECK(!(pn_link_state(r2) & PN_REMOTE_CLOSED));
  CHECK(!(pn_link_state(s) & PN_REMOTE_CLOSED));
  advance(&h, 2000);
  CHECK(detached_idle(s));
  CHECK(strstr(pn_condition_get_description(pn_link_remote_condition(s)), "AmqpMessagePublisher") != NULL);
  CHECK(detached_idle(r2) && detached_idle(s1));
  /* $cbs links are not entity links: the connection still has them and stays open */
  CHECK(!(pn_connection_state(h.client.connection) & PN_REMOTE_CLOSED));
  advance(&h, 3600000);
  CHECK(!(pn_connection_state(h.client.connection) & PN_REMOTE_CLOSED));
  h_close(&h);
  emu_broker_free(b);
}

static void test_connection_without_links_is_closed(void)
{
  emu_broker_t *b = broker(600000, 300000, 60000);
  /* a new connection that attaches nothing within a minute */
  harness_t h;
  h_open(&h, b);
  advance(&h, 59000);
  CHECK(!(pn_connection_state(h.client.connection) & PN_REMOTE_CLOSED));
  advance(&h, 2000);
  CHECK(conn_forced(&h, "60000 milliseconds"));
  h_close(&h);
  /* links attached in time, then all closed by the client: five minutes */
  h_open(&h, b);
  CHECK(h_auth(&h, "q1") == 202);
  advance(&h, 120000);
  CHECK(!(pn_connection_state(h.client.connection) & PN_REMOTE_CLOSED));
  for (pn_link_t *l = pn_link_head(h.client.connection, 0); l; l = pn_link_next(l, 0)) pn_link_close(l);
  h_pump(&h);
  CHECK(h.server->links == NULL);
  advance(&h, 299000);
  CHECK(!(pn_connection_state(h.client.connection) & PN_REMOTE_CLOSED));
  /* a link attached and closed in between restarts the timer */
  pn_link_t *x = h_sender(&h, "x", "$cbs");
  pn_link_close(x);
  h_pump(&h);
  advance(&h, 299000);
  CHECK(!(pn_connection_state(h.client.connection) & PN_REMOTE_CLOSED));
  advance(&h, 2000);
  CHECK(conn_forced(&h, "300000 milliseconds"));
  h_close(&h);
  emu_broker_free(b);
}

static void test_zero_switches_timers_off(void)
{
  emu_broker_t *b = broker(0, 0, 0);
  harness_t h, bare;
  h_open(&bare, b);
  h_open(&h, b);
  CHECK(h_auth(&h, "q1") == 202);
  pn_link_t *r = h_receiver(&h, "r", "q1", false, 10);
  advance(&h, 86400000);
  h_pump(&bare);
  CHECK(!(pn_link_state(r) & PN_REMOTE_CLOSED));
  CHECK(!(pn_connection_state(bare.client.connection) & PN_REMOTE_CLOSED));
  CHECK(emu_next_deadline(b) == INT64_MAX);
  h_close(&h);
  h_close(&bare);
  emu_broker_free(b);
}

int main(void)
{
  test_idle_links_are_detached();
  test_connection_without_links_is_closed();
  test_zero_switches_timers_off();
  if (g_failures) fprintf(stderr, "%d check(s) failed\n", g_failures);
  else printf("test_emu_idle: all passed\n");
  return g_failures ? 1 : 0;
}
