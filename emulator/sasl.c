/*
 * sasl.c: a Proton SASL plugin offering MSSBCBS, ANONYMOUS and PLAIN.
 *
 * Proton 0.37's built-in server SASL offers only ANONYMOUS/PLAIN/EXTERNAL,
 * while Microsoft's Python SDK 7.8.2 (uamqp) insists on MSSBCBS and fails
 * when the server list lacks it (§1.4). Authentication in Service Bus happens
 * later, on $cbs, so this plugin accepts any mechanism from the list with
 * any initial response and answers outcome ok. Proton encodes the list as an
 * array of symbols ("DL[@T[*s]]"). Server side only.
 */
#include "emu.h"

#include <proton/sasl.h>
#include <proton/sasl_plugin.h>
#include <string.h>

static void p_free(pn_transport_t *t) { (void)t; }

static const char *p_list(pn_transport_t *t)
{
  (void)t;
  return "MSSBCBS ANONYMOUS PLAIN";
}

static bool p_init_server(pn_transport_t *t)
{
  pnx_sasl_set_desired_state(t, SASL_POSTED_MECHANISMS);
  return true;
}

static bool p_init_client(pn_transport_t *t)
{
  (void)t;
  return false;
}

static void p_prepare(pn_transport_t *t) { (void)t; }

static void p_process_init(pn_transport_t *t, const char *mech, const pn_bytes_t *recv)
{
  (void)recv;
  pnx_sasl_set_succeeded(t, strcmp(mech, "PLAIN") == 0 ? "plain" : "anonymous", NULL);
  pnx_sasl_set_desired_state(t, SASL_POSTED_OUTCOME);
}

static void p_process_response(pn_transport_t *t, const pn_bytes_t *recv)
{
  (void)recv;
  pnx_sasl_set_succeeded(t, "anonymous", NULL);
  pnx_sasl_set_desired_state(t, SASL_POSTED_OUTCOME);
}

static bool p_process_mechanisms(pn_transport_t *t, const char *mechs)
{
  (void)t;
  (void)mechs;
  return false;
}

static void p_process_challenge(pn_transport_t *t, const pn_bytes_t *recv)
{
  (void)t;
  (void)recv;
}

static void p_process_outcome(pn_transport_t *t, const pn_bytes_t *recv)
{
  (void)t;
  (void)recv;
}

static bool p_can_encrypt(pn_transport_t *t)
{
  (void)t;
  return false;
}

static ssize_t p_max_encrypt(pn_transport_t *t)
{
  (void)t;
  return 0;
}

static ssize_t p_encode(pn_transport_t *t, pn_bytes_t in, pn_bytes_t *out)
{
  (void)t;
  *out = in;
  return 0;
}

static ssize_t p_decode(pn_transport_t *t, pn_bytes_t in, pn_bytes_t *out)
{
  (void)t;
  *out = in;
  return 0;
}

static const pnx_sasl_implementation emu_sasl_impl = {
  p_free, p_list, p_init_server, p_init_client, p_prepare, p_process_init, p_process_response,
  p_process_mechanisms, p_process_challenge, p_process_outcome, p_can_encrypt, p_max_encrypt,
  p_encode, p_decode};

void emu_sasl_install(pn_transport_t *t)
{
  pn_sasl_t *s = pn_sasl(t);
  pn_sasl_set_allow_insecure_mechs(s, true);
  pnx_sasl_set_implementation(t, &emu_sasl_impl, NULL);
}
