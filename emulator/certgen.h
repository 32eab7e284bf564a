/*
 * certgen.h: generate a CA and a server certificate for the TLS listener.
 */
#ifndef EMU_CERTGEN_H
#define EMU_CERTGEN_H

#include <stddef.h>

/* Paths of the generated files. */
typedef struct emu_certs {
  char ca[1024];    /* CA certificate (PEM) clients should trust */
  char cert[1024];  /* server certificate (PEM) */
  char key[1024];   /* server private key (PEM) */
} emu_certs_t;

/* Write ca.pem, ca.key, server.pem, server.key into dir; 0 or -1 with err. */
int emu_certgen(const char *dir, const char *host, emu_certs_t *out, char *err, size_t errlen);

#endif
