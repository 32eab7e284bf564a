/*
 * cbs.c: claims-based security: the $cbs put-token operation and SAS checks.
 *
 * A put-token request carries the token (amqp-value string) and the audience
 * (application property "name"). The SAS token is verified exactly as the
 * service does (protocol.md §3.4): HMAC-SHA256 keyed with the bytes of the
 * key text over the sr value as transmitted + "\n" + se, base64, compared in
 * constant time with the URL-decoded sig; se must be in the future (real
 * time, so that moving the emulator clock does not invalidate tokens); skn
 * names a namespace policy or a policy of an entity at or above sr; and the
 * audience path must be equal to or below the sr path (scheme, host and port
 * are ignored, comparison is case-insensitive, after URL-decoding). A valid
 * token becomes a claim on the connection: audience path plus rights.
 */
#include "emu.h"

#include <ctype.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static int hexval(int c)
{
  if (c >= '0' && c <= '9') return c - '0';
  c = tolower(c);
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

void emu_url_decode(char *s)
{
  char *w = s;
  for (char *r = s; *r; r++) {
    if (*r == '%' && hexval(r[1]) >= 0 && hexval(r[2]) >= 0) {
      *w++ = (char)(hexval(r[1]) * 16 + hexval(r[2]));
      r += 2;
    } else if (*r == '+') {
      *w++ = ' ';
    } else {
      *w++ = *r;
    }
  }
  *w = 0;
}

/* "amqps://host:port/a/B/" -> "a/b"; "/a" -> "a"; "a" -> "a". */
char *emu_path_normalize(const char *addr)
{
  char *dec = strdup(addr);
  if (!dec) abort();
  emu_url_decode(dec);
  const char *p = strstr(dec, "://");
  if (p) {
    p += 3;
    const char *slash = strchr(p, '/');
    p = slash ? slash : p + strlen(p);
  } else {
    p = dec;
  }
  while (*p == '/') p++;
  char *r = strdup(p);
  free(dec);
  if (!r) abort();
  size_t n = strlen(r);
  while (n > 0 && r[n - 1] == '/') r[--n] = 0;
  for (char *q = r; *q; q++) *q = (char)tolower((unsigned char)*q);
  return r;
}

/* True when path equals base or lies below it. */
static bool path_within(const char *path, const char *base)
{
  size_t n = strlen(base);
  if (n == 0) return true;
  if (strncmp(path, base, n) != 0) return false;
  return path[n] == 0 || path[n] == '/';
}

unsigned emu_claims_for(emu_conn_t *c, const char *path)
{
  unsigned r = 0;
  time_t now = time(NULL);
  for (emu_token_t *t = c->tokens; t; t = t->next)
    if (t->expires_ms / 1000 > now && path_within(path, t->path)) r |= t->rights;
  if (r & RIGHT_MANAGE) r |= RIGHT_SEND | RIGHT_LISTEN;
  return r;
}

/* Split "SharedAccessSignature sr=..&sig=..&se=..&skn=.." into its raw fields. */
static bool sas_fields(char *tok, char **sr, char **sig, char **se, char **skn)
{
  const char *prefix = "SharedAccessSignature ";
  if (strncmp(tok, prefix, strlen(prefix)) != 0) return false;
  *sr = *sig = *se = *skn = NULL;
  for (char *f = strtok(tok + strlen(prefix), "&"); f; f = strtok(NULL, "&")) {
    while (*f == ' ') f++;
    if (!strncmp(f, "sr=", 3)) *sr = f + 3;
    else if (!strncmp(f, "sig=", 4)) *sig = f + 4;
    else if (!strncmp(f, "se=", 3)) *se = f + 3;
    else if (!strncmp(f, "skn=", 4)) *skn = f + 4;
  }
  return *sr && *sig && *se && *skn;
}

static const emu_policy_t *find_policy(emu_broker_t *b, const char *skn, const char *srpath)
{
  for (const emu_policy_t *p = b->policies; p; p = p->next)
    if (strcmp(p->name, skn) == 0) return p;
  for (emu_entity_t *e = b->entities; e; e = e->next) {
    if (!e->policies || !path_within(srpath, e->lname)) continue;
    for (const emu_policy_t *p = e->policies; p; p = p->next)
      if (strcmp(p->name, skn) == 0) return p;
  }
  return NULL;
}

static bool sig_ok(const emu_policy_t *p, const char *sr, const char *se, const char *sig_dec)
{
  char msg[4096];
  int n = snprintf(msg, sizeof msg, "%s\n%s", sr, se);
  if (n < 0 || (size_t)n >= sizeof msg) return false;
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned maclen = 0;
  if (!HMAC(EVP_sha256(), p->key, (int)strlen(p->key), (unsigned char *)msg, (size_t)n, mac, &maclen))
    return false;
  char b64[128];
  int bl = EVP_EncodeBlock((unsigned char *)b64, mac, (int)maclen);
  return (size_t)bl == strlen(sig_dec) && CRYPTO_memcmp(b64, sig_dec, (size_t)bl) == 0;
}

int emu_sas_verify(emu_broker_t *b, const char *token, const char *audience, unsigned *rights,
                   int64_t *expires, char *why, size_t whylen)
{
  char *tok = strdup(token), *sr, *sig, *se, *skn;
  int rc = -1;
  if (!tok) abort();
  if (!sas_fields(tok, &sr, &sig, &se, &skn)) {
    snprintf(why, whylen, "Malformed SharedAccessSignature token.");
    goto done;
  }
  char *srpath = emu_path_normalize(sr);
  char *audpath = emu_path_normalize(audience);
  char *sigdec = strdup(sig);
  char *skndec = strdup(skn);
  emu_url_decode(sigdec);
  emu_url_decode(skndec);
  long long exp = strtoll(se, NULL, 10);
  const emu_policy_t *p = find_policy(b, skndec, srpath);
  if (!p) snprintf(why, whylen, "InvalidSignature: The token has an invalid signature (unknown key name '%s').", skndec);
  else if (!sig_ok(p, sr, se, sigdec)) snprintf(why, whylen, "InvalidSignature: The token has an invalid signature.");
  else if (exp <= (long long)time(NULL)) snprintf(why, whylen, "ExpiredToken: The token is expired. Expiration time: '%lld'.", exp);
  else if (!path_within(audpath, srpath)) snprintf(why, whylen, "InvalidAudience: The token audience '%s' is not covered by its resource '%s'.", audience, sr);
  else {
    *rights = p->rights & RIGHT_MANAGE ? (RIGHT_SEND | RIGHT_LISTEN | RIGHT_MANAGE) : p->rights;
    *expires = exp * 1000;
    rc = 0;
  }
  free(srpath);
  free(audpath);
  free(sigdec);
  free(skndec);
done:
  free(tok);
  return rc;
}

static void add_claim(emu_conn_t *c, const char *audience, unsigned rights, int64_t expires)
{
  char *path = emu_path_normalize(audience);
  for (emu_token_t *t = c->tokens; t; t = t->next) {
    if (strcmp(t->path, path) == 0) {
      t->rights = rights;
      t->expires_ms = expires;
      free(path);
      c->token_check_ms = INT64_MAX;
      for (emu_token_t *x = c->tokens; x; x = x->next)
        if (x->expires_ms < c->token_check_ms) c->token_check_ms = x->expires_ms;
      return;
    }
  }
  emu_token_t *t = calloc(1, sizeof *t);
  if (!t) abort();
  if (!c->tokens || expires < c->token_check_ms) c->token_check_ms = expires;
  t->path = path;
  t->rights = rights;
  t->expires_ms = expires;
  t->next = c->tokens;
  c->tokens = t;
}

void emu_cbs_request(emu_link_t *l, const unsigned char *p, size_t n)
{
  emu_conn_t *c = l->conn;
  emu_broker_t *b = c->broker;
  emu_req_t r;
  char op[64], type[128] = "", audience[1024], why[512];
  const char *fc;
  if (!emu_req_parse(p, n, &r)) {
    emu_send_response(l, &r, true, 400, "Malformed put-token request.", "com.microsoft:argument-error", NULL);
    return;
  }
  if (!emu_req_app_str(&r, "operation", op, sizeof op) || strcmp(op, "put-token") != 0) {
    emu_send_response(l, &r, true, 400, "Unsupported $cbs operation.", "com.microsoft:argument-error", NULL);
    return;
  }
  if (emu_fault_take(b, "cbs", &fc)) {
    emu_send_response(l, &r, true, 503, "Injected fault.", fc, NULL);
    return;
  }
  emu_req_app_str(&r, "type", type, sizeof type);
  char *token = r.has_body ? amqp_dup_str(&r.body) : NULL;
  if (!emu_req_app_str(&r, "name", audience, sizeof audience) || !token) {
    emu_send_response(l, &r, true, 400, "put-token needs 'name' and a string token.", "com.microsoft:argument-error", NULL);
    free(token);
    return;
  }
  unsigned rights = 0;
  int64_t expires = 0;
  if (strcmp(type, "jwt") == 0) {
    free(token);
    if (!b->opt.allow_jwt) {
      emu_send_response(l, &r, true, 401, "JWT tokens are accepted only with --allow-jwt (test mode).", NULL, NULL);
      return;
    }
    /* test mode: the token is not verified; it grants every right on its audience for an hour */
    add_claim(c, audience, RIGHT_SEND | RIGHT_LISTEN | RIGHT_MANAGE, emu_utc_ms() + 3600 * 1000);
    c->authed = true;
    emu_send_response(l, &r, true, 202, "Accepted", NULL, NULL);
    return;
  }
  if (emu_sas_verify(b, token, audience, &rights, &expires, why, sizeof why) != 0) {
    emu_log(b, 1, "put-token refused for %s: %s", audience, why);
    emu_send_response(l, &r, true, 401, why, "amqp:unauthorized-access", NULL);
    free(token);
    return;
  }
  free(token);
  add_claim(c, audience, rights, expires);
  c->authed = true;
  emu_send_response(l, &r, true, 202, "Accepted", NULL, NULL);
}
