/*
 * admin.h: the Service Bus administration API (the ATOM/XML management REST API that
 * ServiceBusAdministrationClient speaks) on the emulator's control port.
 *
 * The control surface (control.c) hands every HTTP request here first; a request with an
 * `api-version` query parameter or an XML content type is an administration request and is
 * answered in the service's XML shapes, everything else keeps its JSON control path.
 * See docs/emulator.md, "Administration API".
 */
#ifndef EMU_ADMIN_H
#define EMU_ADMIN_H

#include "emu.h"

/* One HTTP request as the control surface sees it (views into the host's buffer). */
typedef struct emu_http_req {
  const char *method;   /* "GET", "PUT", "DELETE", "POST" */
  const char *target;   /* request target as sent: path and query */
  const char *head;     /* header block (request line up to the blank line), or NULL */
  size_t head_len;      /* bytes of head */
  const char *body;     /* request body */
  size_t body_len;      /* bytes of body */
} emu_http_req_t;

/* Copy the value of header `name` (case-insensitive, surrounding blanks trimmed) into out,
 * NUL-terminated and cut to n bytes; false when the request has no such header. */
bool emu_http_header(const emu_http_req_t *r, const char *name, char *out, size_t n);

/* The control surface with headers: serves the administration API and the JSON control
 * paths. resp gets the body, *ctype its Content-Type (a static string); returns the HTTP
 * status. Hosts call this; emu_control_handle (net.h) is the header-less JSON-only form. */
int emu_control_request(emu_broker_t *b, const emu_http_req_t *r, emu_buf_t *resp, const char **ctype);

/* True when r is an administration request: an `api-version` query parameter, or an
 * Atom/XML Content-Type. */
bool emu_admin_is_request(const emu_http_req_t *r);

/* Serve one administration request (queues, topics, subscriptions, rules, $namespaceinfo,
 * $Resources lists) after checking its SharedAccessSignature Authorization header.
 * resp gets the XML body, *ctype its Content-Type; returns the HTTP status. */
int emu_admin_handle(emu_broker_t *b, const emu_http_req_t *r, emu_buf_t *resp, const char **ctype);

/* Forget what the administration API keeps about entity `name` of b beyond the broker's own
 * model (status, user metadata, times); the control surface calls it when an entity is
 * deleted or created through its JSON paths. */
void emu_admin_forget(emu_broker_t *b, const char *name);

/* Free everything the administration API keeps for b (call before emu_broker_free). */
void emu_admin_free(emu_broker_t *b);

#endif
