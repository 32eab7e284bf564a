/*
 * certgen.c: a throw-away CA and server certificate for the TLS listener.
 *
 * Microsoft's Python SDK verifies the host name and, when it connects by IP,
 * the IP address (§14), so the server certificate carries
 * subjectAltName = DNS:localhost, IP:127.0.0.1 (plus the --host address when
 * it differs). Keys are EC P-256. Files written into the state directory:
 * ca.pem (what clients trust), ca.key, server.pem, server.key. Everything
 * uses OpenSSL's C API; no openssl command is run.
 */
#include "certgen.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static int add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
  X509_EXTENSION *ex = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
  if (!ex) return -1;
  int ok = X509_add_ext(cert, ex, -1);
  X509_EXTENSION_free(ex);
  return ok == 1 ? 0 : -1;
}

static X509 *new_cert(EVP_PKEY *key, const char *cn, long days)
{
  X509 *c = X509_new();
  if (!c) return NULL;
  unsigned char serial[16];
  RAND_bytes(serial, sizeof serial);
  serial[0] &= 0x7f;
  BIGNUM *bn = BN_bin2bn(serial, sizeof serial, NULL);
  BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(c));
  BN_free(bn);
  X509_set_version(c, 2);
  X509_gmtime_adj(X509_getm_notBefore(c), -86400);
  X509_gmtime_adj(X509_getm_notAfter(c), days * 86400);
  X509_set_pubkey(c, key);
  X509_NAME *name = X509_get_subject_name(c);
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"sbus-emulator", -1, -1, 0);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
  return c;
}

static int write_pem(const char *path, X509 *cert, EVP_PKEY *key)
{
  FILE *f = fopen(path, "w");
  if (!f) return -1;
  int ok = cert ? PEM_write_X509(f, cert) : PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL);
  if (key && !cert) chmod(path, 0600);
  fclose(f);
  return ok == 1 ? 0 : -1;
}

int emu_certgen(const char *dir, const char *host, emu_certs_t *out, char *err, size_t errlen)
{
  int rc = -1;
  X509 *ca = NULL, *srv = NULL;
  EVP_PKEY *cakey = EVP_EC_gen("P-256"), *srvkey = EVP_EC_gen("P-256");
  if (!cakey || !srvkey) {
    snprintf(err, errlen, "cannot generate EC keys");
    goto done;
  }
  ca = new_cert(cakey, "sbus-emulator test CA", 3650);
  srv = new_cert(srvkey, "localhost", 825);
  if (!ca || !srv) goto fail;
  X509_set_issuer_name(ca, X509_get_subject_name(ca));
  X509_set_issuer_name(srv, X509_get_subject_name(ca));
  char san[512];
  if (host && strcmp(host, "127.0.0.1") && strcmp(host, "localhost") && strcmp(host, "0.0.0.0"))
    snprintf(san, sizeof san, "DNS:localhost,IP:127.0.0.1,IP:%s", host);
  else
    snprintf(san, sizeof san, "DNS:localhost,IP:127.0.0.1");
  if (add_ext(ca, ca, NID_basic_constraints, "critical,CA:TRUE") ||
      add_ext(ca, ca, NID_key_usage, "critical,keyCertSign,cRLSign") ||
      add_ext(ca, ca, NID_subject_key_identifier, "hash") ||
      add_ext(ca, ca, NID_authority_key_identifier, "keyid:always") ||
      !X509_sign(ca, cakey, EVP_sha256()))
    goto fail;
  if (add_ext(srv, ca, NID_basic_constraints, "critical,CA:FALSE") ||
      add_ext(srv, ca, NID_key_usage, "critical,digitalSignature,keyEncipherment") ||
      add_ext(srv, ca, NID_ext_key_usage, "serverAuth") ||
      add_ext(srv, ca, NID_subject_alt_name, san) ||
      add_ext(srv, ca, NID_subject_key_identifier, "hash") ||
      add_ext(srv, ca, NID_authority_key_identifier, "keyid:always") ||
      !X509_sign(srv, cakey, EVP_sha256()))
    goto fail;
  snprintf(out->ca, sizeof out->ca, "%s/ca.pem", dir);
  snprintf(out->cert, sizeof out->cert, "%s/server.pem", dir);
  snprintf(out->key, sizeof out->key, "%s/server.key", dir);
  char cakeyfile[sizeof out->ca + 8];
  snprintf(cakeyfile, sizeof cakeyfile, "%s/ca.key", dir);
  if (write_pem(out->ca, ca, NULL) || write_pem(cakeyfile, NULL, cakey) ||
      write_pem(out->cert, srv, NULL) || write_pem(out->key, NULL, srvkey)) {
    snprintf(err, errlen, "cannot write certificates into %s", dir);
    goto done;
  }
  rc = 0;
  goto done;
fail:
  snprintf(err, errlen, "cannot build the certificates");
done:
  X509_free(ca);
  X509_free(srv);
  EVP_PKEY_free(cakey);
  EVP_PKEY_free(srvkey);
  return rc;
}
