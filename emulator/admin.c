/*
 * admin.c: the Service Bus administration API (ATOM/XML over HTTP) on the control port.
 *
 * What ServiceBusAdministrationClient (and the other SDKs' administration clients) send to
 * the service's HTTPS endpoint, served here over plain HTTP: PUT/GET/DELETE of
 * `/<queue|topic>`, `/<topic>/Subscriptions/<sub>` and
 * `/<topic>/Subscriptions/<sub>/Rules/<rule>`, the feeds `/$Resources/Queues`,
 * `/$Resources/Topics`, `/<topic>/Subscriptions` and `.../Rules` ($skip/$top paging), and
 * `/$namespaceinfo`. Bodies are Atom entries whose content is a QueueDescription,
 * TopicDescription, SubscriptionDescription or RuleDescription in the
 * http://schemas.microsoft.com/netservices/2010/10/servicebus/connect namespace.
 *
 * Requests are parsed with expat into a small element tree (no DTDs). An entity description
 * is turned into the per-entity JSON of Microsoft's Config.json and created with config.c,
 * so the emulator's validation and limits apply unchanged; an update validates the same way
 * on a scratch broker and then swaps the entity's settings. Rules go through
 * emu_rule_from_json. Answers follow the service's shapes (element names and order of the
 * data contracts, CountDetails in the 2011/06 namespace, errors as
 * <Error><Code>..</Code><Detail>..</Detail></Error>); every string is escaped.
 *
 * What the broker does not model (UserMetadata, MaxSizeInMegabytes, AutoDeleteOnIdle,
 * EnableBatchedOperations, creation and update times) is kept in a side list per broker and
 * echoed back; it has no effect on messaging. Status is kept there too, and its effect (which
 * directions are off) is handed to the broker with emu_entity_set_off.
 */
#define _GNU_SOURCE /* memmem */
#include "admin.h"
#include "config.h"

#include <ctype.h>
#include <stdarg.h>
#include <expat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define NS_ATOM "http://www.w3.org/2005/Atom"
#define NS_SB "http://schemas.microsoft.com/netservices/2010/10/servicebus/connect"
#define NS_XSI "http://www.w3.org/2001/XMLSchema-instance"
#define NS_SB11 "http://schemas.microsoft.com/netservices/2011/06/servicebus"
#define NS_XSD "http://www.w3.org/2001/XMLSchema"
#define API_VERSION "2021-05"
/* .NET TimeSpan.MaxValue, what the service reports for "never" */
#define TIMESPAN_MAX "P10675199DT2H48M5.4775807S"
#define TIMESPAN_MAX_MS 922337203685477LL

static const char *const CT_ENTRY = "application/atom+xml;type=entry;charset=utf-8";
static const char *const CT_FEED = "application/atom+xml;type=feed;charset=utf-8";
static const char *const CT_XML = "application/xml; charset=utf-8";

/* ---------------------------------------------------------------- side data */

/* What the administration API remembers about an entity beyond emu_entity_t. */
typedef struct adm_meta {
  emu_broker_t *b;          /* broker */
  char *lname;              /* lower-case entity path */
  int64_t created, updated; /* wire ms */
  char status[24];          /* Status as last set */
  char *user_metadata;      /* UserMetadata or NULL */
  int64_t max_size_mb;      /* MaxSizeInMegabytes */
  int64_t auto_delete_ms;   /* AutoDeleteOnIdle (INT64_MAX: never) */
  bool batched;             /* EnableBatchedOperations */
  bool dl_filter_exc;       /* DeadLetteringOnFilterEvaluationExceptions */
  struct adm_meta *next;    /* next */
} adm_meta_t;

static adm_meta_t *g_meta;

static char *xstrdup(const char *s)
{
  char *r = strdup(s);
  if (!r) abort();
  return r;
}

static char *lower_dup(const char *s)
{
  char *r = xstrdup(s);
  for (char *p = r; *p; p++) *p = (char)tolower((unsigned char)*p);
  return r;
}

static int64_t wire_now(emu_broker_t *b)
{
  return emu_to_wire(b, emu_now(b));
}

static void meta_free(adm_meta_t *m)
{
  free(m->lname);
  free(m->user_metadata);
  free(m);
}

void emu_admin_forget(emu_broker_t *b, const char *name)
{
  char *ln = lower_dup(name);
  size_t n = strlen(ln);
  for (adm_meta_t **pp = &g_meta; *pp;) {
    adm_meta_t *m = *pp;
    /* the entity and everything below it (a topic's subscriptions) */
    if (m->b == b && !strncmp(m->lname, ln, n) && (m->lname[n] == 0 || m->lname[n] == '/')) {
      *pp = m->next;
      meta_free(m);
    } else {
      pp = &m->next;
    }
  }
  free(ln);
}

void emu_admin_free(emu_broker_t *b)
{
  for (adm_meta_t **pp = &g_meta; *pp;) {
    adm_meta_t *m = *pp;
    if (m->b == b) {
      *pp = m->next;
      meta_free(m);
    } else {
      pp = &m->next;
    }
  }
}

/* The side data of e, made with defaults on first use. */
static adm_meta_t *meta_get(emu_broker_t *b, const emu_entity_t *e)
{
  for (adm_meta_t *m = g_meta; m; m = m->next)
    if (m->b == b && !strcmp(m->lname, e->lname)) return m;
  adm_meta_t *m = calloc(1, sizeof *m);
  if (!m) abort();
  m->b = b;
  m->lname = xstrdup(e->lname);
  m->created = m->updated = wire_now(b);
  snprintf(m->status, sizeof m->status, "Active");
  m->max_size_mb = 1024;
  m->auto_delete_ms = INT64_MAX;
  m->batched = true;
  m->next = g_meta;
  g_meta = m;
  return m;
}

/* ---------------------------------------------------------------- HTTP helpers */

bool emu_http_header(const emu_http_req_t *r, const char *name, char *out, size_t n)
{
  if (!r->head || !n) return false;
  size_t nl = strlen(name);
  const char *p = r->head, *end = r->head + r->head_len;
  while (p < end) {
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    if (!eol) eol = end;
    if ((size_t)(eol - p) > nl && !strncasecmp(p, name, nl) && p[nl] == ':') {
      const char *v = p + nl + 1, *ve = eol;
      while (v < ve && (*v == ' ' || *v == '\t')) v++;
      while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t')) ve--;
      size_t k = (size_t)(ve - v);
      if (k >= n) k = n - 1;
      memcpy(out, v, k);
      out[k] = 0;
      return true;
    }
    p = eol + 1;
  }
  return false;
}

/* Value of query parameter `key` (URL-decoded) into out; false when absent. */
static bool query_get(const char *target, const char *key, char *out, size_t n)
{
  const char *q = strchr(target, '?');
  if (!q) return false;
  size_t kl = strlen(key);
  for (const char *p = q + 1; *p;) {
    const char *amp = strchr(p, '&');
    size_t len = amp ? (size_t)(amp - p) : strlen(p);
    char item[512];
    if (len < sizeof item) {
      memcpy(item, p, len);
      item[len] = 0;
      char *eq = strchr(item, '=');
      if (eq) *eq = 0;
      emu_url_decode(item);
      if (!strcmp(item, key) && strlen(item) == kl) {
        snprintf(out, n, "%s", eq ? eq + 1 : "");
        emu_url_decode(out);
        return true;
      }
    }
    if (!amp) break;
    p = amp + 1;
  }
  return false;
}

bool emu_admin_is_request(const emu_http_req_t *r)
{
  char v[128];
  if (query_get(r->target, "api-version", v, sizeof v)) return true;
  if (emu_http_header(r, "Content-Type", v, sizeof v)) {
    for (char *p = v; *p; p++) *p = (char)tolower((unsigned char)*p);
    if (strstr(v, "xml")) return true;
  }
  return false;
}

/* ---------------------------------------------------------------- XML output */

static void put(emu_buf_t *o, const char *s)
{
  buf_put(o, s, strlen(s));
}

static void putf(emu_buf_t *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(emu_buf_t *o, const char *fmt, ...)
{
  char tmp[512];
  va_list ap;
  va_start(ap, fmt);
  int k = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  if (k > 0) buf_put(o, tmp, (size_t)k < sizeof tmp ? (size_t)k : sizeof tmp - 1);
}

/* Text or attribute value, escaped; control characters XML 1.0 cannot carry are dropped. */
static void esc(emu_buf_t *o, const char *s)
{
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '&') put(o, "&amp;");
    else if (c == '<') put(o, "&lt;");
    else if (c == '>') put(o, "&gt;");
    else if (c == '"') put(o, "&quot;");
    else if (c == '\'') put(o, "&apos;");
    else if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') continue;
    else buf_u8(o, c);
  }
}

static void el_text(emu_buf_t *o, const char *name, const char *text)
{
  putf(o, "<%s>", name);
  esc(o, text);
  putf(o, "</%s>", name);
}

static void el_bool(emu_buf_t *o, const char *name, bool v)
{
  putf(o, "<%s>%s</%s>", name, v ? "true" : "false", name);
}

static void el_int(emu_buf_t *o, const char *name, long long v)
{
  putf(o, "<%s>%lld</%s>", name, v, name);
}

static void fmt_time(char out[64], int64_t ms)
{
  time_t t = (time_t)(ms / 1000);
  struct tm tm;
  gmtime_r(&t, &tm);
  snprintf(out, 64, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
           tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}

static void el_time(emu_buf_t *o, const char *name, int64_t ms)
{
  char t[64];
  fmt_time(t, ms);
  el_text(o, name, t);
}

static void el_dur(emu_buf_t *o, const char *name, int64_t ms)
{
  char d[64];
  if (ms >= TIMESPAN_MAX_MS) {
    snprintf(d, sizeof d, "%s", TIMESPAN_MAX);
  } else {
    long long days = ms / 86400000, rest = ms % 86400000;
    long long h = rest / 3600000, m = rest / 60000 % 60, s = rest / 1000 % 60, f = rest % 1000;
    int k = snprintf(d, sizeof d, "P");
    if (days) k += snprintf(d + k, sizeof d - (size_t)k, "%lldD", days);
    k += snprintf(d + k, sizeof d - (size_t)k, "T");
    if (h) k += snprintf(d + k, sizeof d - (size_t)k, "%lldH", h);
    if (m) k += snprintf(d + k, sizeof d - (size_t)k, "%lldM", m);
    if (s || f || (!days && !h && !m)) {
      if (f) snprintf(d + k, sizeof d - (size_t)k, "%lld.%03lldS", s, f);
      else snprintf(d + k, sizeof d - (size_t)k, "%lldS", s);
    } else if (d[k - 1] == 'T') {
      d[k - 1] = 0;
    }
  }
  el_text(o, name, d);
}

/* "https://<Host header or namespace>" for ids and links. */
static void base_url(emu_broker_t *b, const emu_http_req_t *r, char *out, size_t n)
{
  char host[256];
  if (!emu_http_header(r, "Host", host, sizeof host) || !host[0])
    snprintf(host, sizeof host, "%s", b->ns_name ? b->ns_name : "localhost");
  snprintf(out, n, "https://%s", host);
}

static int xml_error(emu_buf_t *o, const char **ctype, int status, const char *detail)
{
  o->len = 0;
  putf(o, "<Error><Code>%d</Code><Detail>", status);
  esc(o, detail);
  put(o, "</Detail></Error>");
  *ctype = CT_XML;
  return status;
}

/* ---------------------------------------------------------------- XML input */

/* One element of a parsed request body. */
typedef struct xnode {
  char *name;            /* local name */
  char *ns;              /* namespace URI or "" */
  char *type;            /* xsi:type without its prefix, or NULL */
  emu_buf_t text;        /* character data (NUL-terminated when done) */
  struct xnode *kids, *last, *next, *parent;
} xnode_t;

typedef struct xparse {
  xnode_t *root, *cur;
  int depth;
  bool bad;
  XML_Parser p;
} xparse_t;

static void xnode_free(xnode_t *x)
{
  while (x) {
    xnode_t *n = x->next;
    xnode_free(x->kids);
    free(x->name);
    free(x->ns);
    free(x->type);
    buf_free(&x->text);
    free(x);
    x = n;
  }
}

static void split_name(const char *full, char **ns, char **local)
{
  const char *bar = strchr(full, '|');
  if (bar) {
    *ns = strndup(full, (size_t)(bar - full));
    *local = xstrdup(bar + 1);
  } else {
    *ns = xstrdup("");
    *local = xstrdup(full);
  }
  if (!*ns) abort();
}

static void XMLCALL x_start(void *ud, const XML_Char *name, const XML_Char **atts)
{
  xparse_t *x = ud;
  if (x->bad) return;
  if (++x->depth > 32) {
    x->bad = true;
    XML_StopParser(x->p, XML_FALSE);
    return;
  }
  xnode_t *n = calloc(1, sizeof *n);
  if (!n) abort();
  split_name(name, &n->ns, &n->name);
  for (int i = 0; atts[i]; i += 2) {
    if (!strcmp(atts[i], NS_XSI "|type")) {
      const char *colon = strchr(atts[i + 1], ':');
      n->type = xstrdup(colon ? colon + 1 : atts[i + 1]);
    }
  }
  n->parent = x->cur;
  if (!x->cur) {
    if (x->root) xnode_free(x->root);
    x->root = n;
  } else {
    if (x->cur->last) x->cur->last->next = n;
    else x->cur->kids = n;
    x->cur->last = n;
  }
  x->cur = n;
}

static void XMLCALL x_end(void *ud, const XML_Char *name)
{
  (void)name;
  xparse_t *x = ud;
  if (x->bad || !x->cur) return;
  x->depth--;
  buf_u8(&x->cur->text, 0);
  x->cur->text.len--;
  x->cur = x->cur->parent;
}

static void XMLCALL x_chars(void *ud, const XML_Char *s, int len)
{
  xparse_t *x = ud;
  if (x->bad || !x->cur || len <= 0) return;
  buf_put(&x->cur->text, s, (size_t)len);
}

static void XMLCALL x_doctype(void *ud, const XML_Char *name, const XML_Char *sys, const XML_Char *pub, int internal)
{
  (void)name, (void)sys, (void)pub, (void)internal;
  xparse_t *x = ud;
  x->bad = true; /* no DTDs: no entity expansion games */
  XML_StopParser(x->p, XML_FALSE);
}

/* Parse body into a tree; NULL with err set when it is not well-formed XML. */
static xnode_t *xml_parse(const char *body, size_t n, char *err, size_t errlen)
{
  xparse_t x = {0};
  x.p = XML_ParserCreateNS(NULL, '|');
  if (!x.p) abort();
  XML_SetUserData(x.p, &x);
  XML_SetElementHandler(x.p, x_start, x_end);
  XML_SetCharacterDataHandler(x.p, x_chars);
  XML_SetStartDoctypeDeclHandler(x.p, x_doctype);
  enum XML_Status st = XML_Parse(x.p, body, (int)n, XML_TRUE);
  if (st != XML_STATUS_OK || x.bad || !x.root || x.cur) {
    if (x.bad) snprintf(err, errlen, "The request body is not acceptable XML (DTDs and nesting deeper than 32 are refused).");
    else snprintf(err, errlen, "The request body is not valid XML: %s at line %lu.",
                  XML_ErrorString(XML_GetErrorCode(x.p)), (unsigned long)XML_GetCurrentLineNumber(x.p));
    xnode_free(x.root);
    XML_ParserFree(x.p);
    return NULL;
  }
  XML_ParserFree(x.p);
  return x.root;
}

static xnode_t *kid(const xnode_t *x, const char *name)
{
  for (xnode_t *k = x ? x->kids : NULL; k; k = k->next)
    if (!strcmp(k->name, name)) return k;
  return NULL;
}

static const char *kid_text(const xnode_t *x, const char *name)
{
  xnode_t *k = kid(x, name);
  if (!k) return NULL;
  return k->text.p ? (const char *)k->text.p : "";
}

/* The description inside <entry><content>...</content></entry>. */
static xnode_t *entry_description(xnode_t *root, const char *want)
{
  if (!root || strcmp(root->name, "entry")) return NULL;
  xnode_t *c = kid(root, "content");
  xnode_t *d = c ? kid(c, want) : NULL;
  return d;
}

/* ---------------------------------------------------------------- descriptions -> JSON */

enum { K_DUR, K_BOOL, K_INT, K_STR };
typedef struct { const char *name; int type; unsigned kinds; } prop_map_t;
#define QK (1u << ENT_QUEUE)
#define TK (1u << ENT_TOPIC)
#define SK (1u << ENT_SUBSCRIPTION)
/* The elements that become Config.json Properties (config.c validates them). */
static const prop_map_t PROPS[] = {
  {"LockDuration", K_DUR, QK | SK},
  {"RequiresDuplicateDetection", K_BOOL, QK | TK},
  {"RequiresSession", K_BOOL, QK | SK},
  {"DefaultMessageTimeToLive", K_DUR, QK | TK | SK},
  {"DeadLetteringOnMessageExpiration", K_BOOL, QK | SK},
  {"DuplicateDetectionHistoryTimeWindow", K_DUR, QK | TK},
  {"MaxDeliveryCount", K_INT, QK | SK},
  {"ForwardTo", K_STR, QK | SK},
  {"ForwardDeadLetteredMessagesTo", K_STR, QK | SK},
  {NULL, 0, 0}};

static bool parse_bool(const char *s, bool *out)
{
  if (!strcasecmp(s, "true")) *out = true;
  else if (!strcasecmp(s, "false")) *out = false;
  else return false;
  return true;
}

/* "sb://host/path" or "https://host/path" -> "path"; plain names unchanged. */
static void entity_ref(const char *s, char *out, size_t n)
{
  const char *p = strstr(s, "://");
  if (p) {
    p = strchr(p + 3, '/');
    p = p ? p + 1 : "";
  } else {
    p = s;
  }
  while (*p == '/') p++;
  snprintf(out, n, "%s", p);
  size_t k = strlen(out);
  while (k && out[k - 1] == '/') out[--k] = 0;
}

/* Side-data values of a description, validated. */
typedef struct desc_extra {
  char status[24];
  char *user_metadata;
  int64_t max_size_mb;
  int64_t auto_delete_ms;
  bool batched;
  bool dl_filter_exc;
} desc_extra_t;

/* Build {"Name": name, "Properties": {...}} from a description and check what config.c does
 * not (status, sizes, forwarding targets). NULL with err set on a bad value. */
static json_t *desc_to_json(emu_broker_t *b, const xnode_t *d, emu_kind_t kind, const char *name,
                            desc_extra_t *ex, char *err, size_t n)
{
  json_t *props = json_object();
  memset(ex, 0, sizeof *ex);
  snprintf(ex->status, sizeof ex->status, "Active");
  ex->max_size_mb = 1024;
  ex->auto_delete_ms = INT64_MAX;
  ex->batched = true;
  for (const prop_map_t *m = PROPS; m->name; m++) {
    if (!(m->kinds & (1u << kind))) continue;
    const char *v = kid_text(d, m->name);
    if (!v) continue;
    bool bv;
    char *end;
    long long iv;
    switch (m->type) {
    case K_BOOL:
      /* an unparsable value goes on as a string so that config.c names the problem */
      json_object_set_new(props, m->name, parse_bool(v, &bv) ? json_boolean(bv) : json_string(v));
      break;
    case K_INT:
      iv = strtoll(v, &end, 10);
      json_object_set_new(props, m->name, *v && !*end ? json_integer(iv) : json_string(v));
      break;
    case K_DUR:
      json_object_set_new(props, m->name, json_string(v));
      break;
    default: {
      char ref[512];
      entity_ref(v, ref, sizeof ref);
      if (ref[0]) {
        emu_entity_t *t = emu_entity_find(b, ref);
        if (!t || (t->kind != ENT_QUEUE && t->kind != ENT_TOPIC)) {
          snprintf(err, n, "%s: the entity '%s' to forward to does not exist (it must be a queue or a topic).", m->name, ref);
          json_decref(props);
          return NULL;
        }
        if (!strcasecmp(ref, name)) {
          snprintf(err, n, "%s: an entity cannot forward to itself.", m->name);
          json_decref(props);
          return NULL;
        }
      }
      json_object_set_new(props, m->name, json_string(ref));
    }
    }
  }
  const char *v;
  if ((v = kid_text(d, "Status"))) {
    static const char *const ok[] = {"Active", "Disabled", "SendDisabled", "ReceiveDisabled", NULL};
    int i = 0;
    while (ok[i] && strcmp(ok[i], v)) i++;
    if (!ok[i]) {
      snprintf(err, n, "Status: '%.64s' is not Active, Disabled, SendDisabled or ReceiveDisabled.", v);
      json_decref(props);
      return NULL;
    }
    snprintf(ex->status, sizeof ex->status, "%s", v);
  }
  if (kind != ENT_SUBSCRIPTION && (v = kid_text(d, "MaxSizeInMegabytes"))) {
    char *end;
    long long mb = strtoll(v, &end, 10);
    if (!*v || *end || mb < 1 || mb > 81920) {
      snprintf(err, n, "MaxSizeInMegabytes: '%.64s' must be an integer from 1 to 81920.", v);
      json_decref(props);
      return NULL;
    }
    ex->max_size_mb = mb;
  }
  if ((v = kid_text(d, "AutoDeleteOnIdle"))) {
    int64_t ms = emu_parse_duration(v);
    if (ms < 300000) {
      snprintf(err, n, "AutoDeleteOnIdle: '%.64s' must be an ISO-8601 duration of at least 5 minutes.", v);
      json_decref(props);
      return NULL;
    }
    ex->auto_delete_ms = ms >= TIMESPAN_MAX_MS ? INT64_MAX : ms;
  }
  const char *bools[2] = {"EnableBatchedOperations", "DeadLetteringOnFilterEvaluationExceptions"};
  bool *bdst[2] = {&ex->batched, &ex->dl_filter_exc};
  for (int i = 0; i < 2; i++) {
    if (!(v = kid_text(d, bools[i]))) continue;
    if (!parse_bool(v, bdst[i])) {
      snprintf(err, n, "%s: must be true or false.", bools[i]);
      json_decref(props);
      return NULL;
    }
  }
  if ((v = kid_text(d, "UserMetadata"))) {
    if (strlen(v) > 1024) {
      snprintf(err, n, "UserMetadata: at most 1024 characters.");
      json_decref(props);
      return NULL;
    }
    ex->user_metadata = xstrdup(v);
  }
  return json_pack("{s:s,s:o}", "Name", name, "Properties", props);
}

/* What the broker enforces of a Status: the directions it switches off. */
static uint8_t status_off(const char *status)
{
  return !strcmp(status, "Disabled") ? EMU_SEND_OFF | EMU_RECV_OFF
       : !strcmp(status, "SendDisabled") ? EMU_SEND_OFF
       : !strcmp(status, "ReceiveDisabled") ? EMU_RECV_OFF : 0;
}

static void extra_to_meta(adm_meta_t *m, desc_extra_t *ex, emu_broker_t *b)
{
  snprintf(m->status, sizeof m->status, "%s", ex->status);
  free(m->user_metadata);
  m->user_metadata = ex->user_metadata;
  ex->user_metadata = NULL;
  m->max_size_mb = ex->max_size_mb;
  m->auto_delete_ms = ex->auto_delete_ms;
  m->batched = ex->batched;
  m->dl_filter_exc = ex->dl_filter_exc;
  m->updated = wire_now(b);
}

/* "never" as the service spells it comes back as a finite duration: keep it "never". */
static void props_normalize(emu_props_t *p)
{
  if (p->default_ttl_ms >= TIMESPAN_MAX_MS) p->default_ttl_ms = INT64_MAX;
}

/* ---------------------------------------------------------------- descriptions out */

static void count_details(emu_buf_t *o, const emu_entity_t *e, size_t active, size_t sched)
{
  size_t dl = e && e->dlq ? e->dlq->counts.total : 0, tdl = e && e->tdlq ? e->tdlq->counts.total : 0;
  put(o, "<CountDetails xmlns:d2p1=\"" NS_SB11 "\">");
  putf(o, "<d2p1:ActiveMessageCount>%zu</d2p1:ActiveMessageCount>", active);
  putf(o, "<d2p1:DeadLetterMessageCount>%zu</d2p1:DeadLetterMessageCount>", dl);
  putf(o, "<d2p1:ScheduledMessageCount>%zu</d2p1:ScheduledMessageCount>", sched);
  putf(o, "<d2p1:TransferDeadLetterMessageCount>%zu</d2p1:TransferDeadLetterMessageCount>", tdl);
  put(o, "<d2p1:TransferMessageCount>0</d2p1:TransferMessageCount>");
  put(o, "</CountDetails>");
}

static size_t entity_bytes(const emu_entity_t *e)
{
  size_t n = 0;
  const emu_entity_t *parts[3] = {e, e->dlq, e->tdlq};
  for (int i = 0; i < 3; i++)
    for (const emu_msg_t *m = parts[i] ? parts[i]->head : NULL; m; m = m->next)
      n += m->ann_len + m->props_len + m->app_len + m->body_len;
  return n;
}

static void describe(emu_broker_t *b, emu_buf_t *o, emu_entity_t *e)
{
  adm_meta_t *m = meta_get(b, e);
  const emu_props_t *p = &e->props;
  emu_sweep_expired(b, e);
  if (e->dlq) emu_sweep_expired(b, e->dlq);
  size_t total = e->counts.total + (e->dlq ? e->dlq->counts.total : 0) + (e->tdlq ? e->tdlq->counts.total : 0);
  size_t active = e->counts.active + e->counts.deferred;
  int64_t accessed = m->updated;
  if (e->kind == ENT_QUEUE) {
    put(o, "<QueueDescription xmlns=\"" NS_SB "\" xmlns:i=\"" NS_XSI "\">");
    el_dur(o, "LockDuration", p->lock_ms);
    el_int(o, "MaxSizeInMegabytes", m->max_size_mb);
    el_bool(o, "RequiresDuplicateDetection", p->dup_detect);
    el_bool(o, "RequiresSession", p->requires_session);
    el_dur(o, "DefaultMessageTimeToLive", p->default_ttl_ms);
    el_bool(o, "DeadLetteringOnMessageExpiration", p->dl_on_expiration);
    el_dur(o, "DuplicateDetectionHistoryTimeWindow", p->dup_window_ms);
    el_int(o, "MaxDeliveryCount", p->max_delivery);
    el_bool(o, "EnableBatchedOperations", m->batched);
    el_int(o, "SizeInBytes", (long long)entity_bytes(e));
    el_int(o, "MessageCount", (long long)total);
    el_bool(o, "IsAnonymousAccessible", false);
    put(o, "<AuthorizationRules/>");
    el_text(o, "Status", m->status);
    el_time(o, "CreatedAt", m->created);
    el_time(o, "UpdatedAt", m->updated);
    el_time(o, "AccessedAt", accessed);
    el_bool(o, "SupportOrdering", true);
    count_details(o, e, active, e->counts.scheduled);
    el_dur(o, "AutoDeleteOnIdle", m->auto_delete_ms);
    el_bool(o, "EnablePartitioning", false);
    el_text(o, "EntityAvailabilityStatus", "Available");
    el_bool(o, "EnableExpress", false);
    if (p->forward_to) el_text(o, "ForwardTo", p->forward_to);
    if (m->user_metadata) el_text(o, "UserMetadata", m->user_metadata);
    if (p->forward_dlq_to) el_text(o, "ForwardDeadLetteredMessagesTo", p->forward_dlq_to);
    el_int(o, "MaxMessageSizeInKilobytes", (long long)(b->opt.max_message_size / 1024));
    put(o, "</QueueDescription>");
  } else if (e->kind == ENT_TOPIC) {
    size_t bytes = 0, sched = 0;
    for (size_t i = 0; i < e->nsubs; i++) bytes += entity_bytes(e->subs[i]);
    put(o, "<TopicDescription xmlns=\"" NS_SB "\" xmlns:i=\"" NS_XSI "\">");
    el_dur(o, "DefaultMessageTimeToLive", p->default_ttl_ms);
    el_int(o, "MaxSizeInMegabytes", m->max_size_mb);
    el_bool(o, "RequiresDuplicateDetection", p->dup_detect);
    el_dur(o, "DuplicateDetectionHistoryTimeWindow", p->dup_window_ms);
    el_bool(o, "EnableBatchedOperations", m->batched);
    el_int(o, "SizeInBytes", (long long)bytes);
    el_bool(o, "FilteringMessagesBeforePublishing", false);
    el_bool(o, "IsAnonymousAccessible", false);
    put(o, "<AuthorizationRules/>");
    el_text(o, "Status", m->status);
    el_time(o, "CreatedAt", m->created);
    el_time(o, "UpdatedAt", m->updated);
    el_time(o, "AccessedAt", accessed);
    el_bool(o, "SupportOrdering", true);
    count_details(o, NULL, 0, sched);
    el_int(o, "SubscriptionCount", (long long)e->nsubs);
    el_dur(o, "AutoDeleteOnIdle", m->auto_delete_ms);
    el_bool(o, "EnablePartitioning", false);
    el_text(o, "EntityAvailabilityStatus", "Available");
    el_bool(o, "EnableSubscriptionPartitioning", false);
    el_bool(o, "EnableExpress", false);
    if (m->user_metadata) el_text(o, "UserMetadata", m->user_metadata);
    el_int(o, "MaxMessageSizeInKilobytes", (long long)(b->opt.max_message_size / 1024));
    put(o, "</TopicDescription>");
  } else {
    put(o, "<SubscriptionDescription xmlns=\"" NS_SB "\" xmlns:i=\"" NS_XSI "\">");
    el_dur(o, "LockDuration", p->lock_ms);
    el_bool(o, "RequiresSession", p->requires_session);
    el_dur(o, "DefaultMessageTimeToLive", p->default_ttl_ms);
    el_bool(o, "DeadLetteringOnMessageExpiration", p->dl_on_expiration);
    el_bool(o, "DeadLetteringOnFilterEvaluationExceptions", m->dl_filter_exc);
    el_int(o, "MessageCount", (long long)total);
    el_int(o, "MaxDeliveryCount", p->max_delivery);
    el_bool(o, "EnableBatchedOperations", m->batched);
    el_text(o, "Status", m->status);
    if (p->forward_to) el_text(o, "ForwardTo", p->forward_to);
    el_time(o, "CreatedAt", m->created);
    el_time(o, "UpdatedAt", m->updated);
    el_time(o, "AccessedAt", accessed);
    count_details(o, e, active, e->counts.scheduled);
    if (p->forward_dlq_to) el_text(o, "ForwardDeadLetteredMessagesTo", p->forward_dlq_to);
    el_dur(o, "AutoDeleteOnIdle", m->auto_delete_ms);
    el_text(o, "EntityAvailabilityStatus", "Available");
    if (m->user_metadata) el_text(o, "UserMetadata", m->user_metadata);
    put(o, "</SubscriptionDescription>");
  }
}

/* The Value element of a correlation-filter property, typed as the service types them. */
static void corr_value_out(emu_buf_t *o, const emu_corr_prop_t *cp)
{
  amqp_val_t v;
  const char *type = "string";
  char tmp[64];
  char *text = NULL;
  if (amqp_decode(cp->value.p, cp->value.len, &v) > 0) {
    const char *s;
    size_t sn;
    int64_t i;
    bool bv;
    if (amqp_get_str(&v, &s, &sn)) {
      text = strndup(s, sn);
    } else if (v.code == AMQP_DOUBLE && v.size == 8) {
      uint64_t u = 0;
      double d;
      for (int k = 0; k < 8; k++) u = u << 8 | v.data[k];
      memcpy(&d, &u, 8);
      snprintf(tmp, sizeof tmp, "%.17g", d);
      type = "double";
    } else if (amqp_get_bool(&v, &bv)) {
      snprintf(tmp, sizeof tmp, "%s", bv ? "true" : "false");
      type = "boolean";
    } else if (amqp_get_i64(&v, &i)) {
      snprintf(tmp, sizeof tmp, "%lld", (long long)i);
      type = i >= INT32_MIN && i <= INT32_MAX ? "int" : "long";
    } else {
      tmp[0] = 0;
    }
  } else {
    tmp[0] = 0;
  }
  putf(o, "<Value xmlns:d6p1=\"" NS_XSD "\" i:type=\"d6p1:%s\">", type);
  esc(o, text ? text : tmp);
  put(o, "</Value>");
  free(text);
}

static const char *const CORR_NAMES[8] = {"CorrelationId", "MessageId", "To", "ReplyTo", "Label",
                                          "SessionId", "ReplyToSessionId", "ContentType"};

static void describe_rule(emu_broker_t *b, emu_buf_t *o, const emu_rule_t *r)
{
  put(o, "<RuleDescription xmlns=\"" NS_SB "\" xmlns:i=\"" NS_XSI "\">");
  switch (r->kind) {
  case FILTER_TRUE:
    put(o, "<Filter i:type=\"TrueFilter\"><SqlExpression>1=1</SqlExpression><CompatibilityLevel>20</CompatibilityLevel></Filter>");
    break;
  case FILTER_FALSE:
    put(o, "<Filter i:type=\"FalseFilter\"><SqlExpression>1=0</SqlExpression><CompatibilityLevel>20</CompatibilityLevel></Filter>");
    break;
  case FILTER_SQL:
    put(o, "<Filter i:type=\"SqlFilter\">");
    el_text(o, "SqlExpression", r->sql ? r->sql : "");
    put(o, "<CompatibilityLevel>20</CompatibilityLevel></Filter>");
    break;
  case FILTER_CORRELATION:
    put(o, "<Filter i:type=\"CorrelationFilter\">");
    for (int i = 0; i < 8; i++)
      if (r->corr[i]) el_text(o, CORR_NAMES[i], r->corr[i]);
    put(o, "<Properties>");
    for (const emu_corr_prop_t *cp = r->corr_props; cp; cp = cp->next) {
      put(o, "<KeyValueOfstringanyType>");
      el_text(o, "Key", cp->name);
      corr_value_out(o, cp);
      put(o, "</KeyValueOfstringanyType>");
    }
    put(o, "</Properties></Filter>");
    break;
  }
  if (r->action_sql) {
    put(o, "<Action i:type=\"SqlRuleAction\">");
    el_text(o, "SqlExpression", r->action_sql);
    put(o, "<CompatibilityLevel>20</CompatibilityLevel></Action>");
  } else {
    put(o, "<Action i:type=\"EmptyRuleAction\"/>");
  }
  el_time(o, "CreatedAt", r->created_ms ? emu_to_wire(b, r->created_ms) : wire_now(b));
  el_text(o, "Name", r->name);
  put(o, "</RuleDescription>");
}

/* One Atom entry; what == NULL: the namespace. */
static void entry_open(emu_buf_t *o, const char *base, const char *path, const char *title, int64_t pub,
                       int64_t upd, const char *author, bool decl)
{
  if (decl) put(o, "<?xml version=\"1.0\" encoding=\"utf-8\"?>");
  put(o, "<entry xmlns=\"" NS_ATOM "\"><id>");
  esc(o, base);
  put(o, "/");
  esc(o, path);
  put(o, "?api-version=" API_VERSION "</id><title type=\"text\">");
  esc(o, title);
  put(o, "</title>");
  el_time(o, "published", pub);
  el_time(o, "updated", upd);
  if (author) {
    put(o, "<author>");
    el_text(o, "name", author);
    put(o, "</author>");
  }
  put(o, "<link rel=\"self\" href=\"");
  esc(o, base);
  put(o, "/");
  esc(o, path);
  put(o, "?api-version=" API_VERSION "\"/><content type=\"application/xml\">");
}

static void entry_close(emu_buf_t *o)
{
  put(o, "</content></entry>");
}

static const char *short_name(const emu_entity_t *e)
{
  const char *s = e->kind == ENT_SUBSCRIPTION ? strrchr(e->name, '/') : NULL;
  return s ? s + 1 : e->name;
}

static void entity_entry(emu_broker_t *b, emu_buf_t *o, const char *base, emu_entity_t *e, bool decl)
{
  adm_meta_t *m = meta_get(b, e);
  entry_open(o, base, e->name, short_name(e), m->created, m->updated, b->ns_name ? b->ns_name : "sbemulatorns", decl);
  describe(b, o, e);
  entry_close(o);
}

static void rule_entry(emu_broker_t *b, emu_buf_t *o, const char *base, const emu_entity_t *sub,
                       const emu_rule_t *r, bool decl)
{
  char path[1400];
  snprintf(path, sizeof path, "%s/Rules/%s", sub->name, r->name);
  int64_t t = r->created_ms ? emu_to_wire(b, r->created_ms) : wire_now(b);
  entry_open(o, base, path, r->name, t, t, NULL, decl);
  describe_rule(b, o, r);
  entry_close(o);
}

/* ---------------------------------------------------------------- feeds */

static int cmp_entity(const void *a, const void *b)
{
  return strcmp((*(emu_entity_t *const *)a)->lname, (*(emu_entity_t *const *)b)->lname);
}

static void page_args(const emu_http_req_t *r, size_t *skip, size_t *top)
{
  char v[32];
  *skip = 0;
  *top = 100;
  if (query_get(r->target, "$skip", v, sizeof v)) *skip = strtoul(v, NULL, 10);
  if (query_get(r->target, "$top", v, sizeof v)) *top = strtoul(v, NULL, 10);
  if (*top == 0 || *top > 100) *top = 100;
}

static void feed_open(emu_buf_t *o, const char *base, const char *path, const char *title, int64_t now,
                      size_t skip, size_t top, bool more)
{
  put(o, "<?xml version=\"1.0\" encoding=\"utf-8\"?><feed xmlns=\"" NS_ATOM "\"><title type=\"text\">");
  esc(o, title);
  put(o, "</title><id>");
  esc(o, base);
  put(o, "/");
  esc(o, path);
  putf(o, "?$skip=%zu&amp;$top=%zu&amp;api-version=" API_VERSION "</id>", skip, top);
  el_time(o, "updated", now);
  put(o, "<link rel=\"self\" href=\"");
  esc(o, base);
  put(o, "/");
  esc(o, path);
  putf(o, "?$skip=%zu&amp;$top=%zu&amp;api-version=" API_VERSION "\"/>", skip, top);
  if (more) {
    put(o, "<link rel=\"next\" href=\"");
    esc(o, base);
    put(o, "/");
    esc(o, path);
    putf(o, "?$skip=%zu&amp;$top=%zu&amp;api-version=" API_VERSION "\"/>", skip + top, top);
  }
}

static int list_entities(emu_broker_t *b, const emu_http_req_t *r, const char *base, emu_kind_t kind,
                         emu_entity_t *topic, emu_buf_t *o, const char **ctype)
{
  size_t n = 0, cap = 16, skip, top;
  emu_entity_t **v = malloc(cap * sizeof *v);
  if (!v) abort();
  if (topic) {
    for (size_t i = 0; i < topic->nsubs; i++) {
      if (n == cap && !(v = realloc(v, (cap *= 2) * sizeof *v))) abort();
      v[n++] = topic->subs[i];
    }
  } else {
    for (emu_entity_t *e = b->entities; e; e = e->next) {
      if (e->kind != kind) continue;
      if (n == cap && !(v = realloc(v, (cap *= 2) * sizeof *v))) abort();
      v[n++] = e;
    }
  }
  qsort(v, n, sizeof *v, cmp_entity);
  page_args(r, &skip, &top);
  char path[700];
  if (topic) snprintf(path, sizeof path, "%s/Subscriptions", topic->name);
  else snprintf(path, sizeof path, "$Resources/%s", kind == ENT_QUEUE ? "Queues" : "Topics");
  feed_open(o, base, path, topic ? "Subscriptions" : kind == ENT_QUEUE ? "Queues" : "Topics", wire_now(b), skip,
            top, skip + top < n);
  for (size_t i = skip; i < n && i < skip + top; i++) entity_entry(b, o, base, v[i], false);
  put(o, "</feed>");
  free(v);
  *ctype = CT_FEED;
  return 200;
}

static int list_rules(emu_broker_t *b, const emu_http_req_t *r, const char *base, emu_entity_t *sub,
                      emu_buf_t *o, const char **ctype)
{
  size_t skip, top, n = 0;
  page_args(r, &skip, &top);
  for (const emu_rule_t *x = sub->rules; x; x = x->next) n++;
  char path[700];
  snprintf(path, sizeof path, "%s/Rules", sub->name);
  feed_open(o, base, path, "Rules", wire_now(b), skip, top, skip + top < n);
  size_t i = 0;
  for (const emu_rule_t *x = sub->rules; x; x = x->next, i++)
    if (i >= skip && i < skip + top) rule_entry(b, o, base, sub, x, false);
  put(o, "</feed>");
  *ctype = CT_FEED;
  return 200;
}

/* ---------------------------------------------------------------- entity operations */

static const char *kind_word(emu_kind_t k)
{
  return k == ENT_QUEUE ? "Queue" : k == ENT_TOPIC ? "Topic" : "Subscription";
}

static const char *desc_name(emu_kind_t k)
{
  return k == ENT_QUEUE ? "QueueDescription" : k == ENT_TOPIC ? "TopicDescription" : "SubscriptionDescription";
}

/* Create from Config.json-shaped j in broker `into`; config.c's "<Kind>.Properties.<Key>: ..."
 * errors are reported as "<Kind>Description.<Key>: ...", the element the client sent. */
static int add_entity(emu_broker_t *into, emu_kind_t kind, emu_entity_t *topic, json_t *j, char *err, size_t n)
{
  const char *path = kind_word(kind);
  int rc;
  if (kind == ENT_QUEUE) rc = emu_config_add_queue(into, j, path, err, n);
  else if (kind == ENT_TOPIC) rc = emu_config_add_topic(into, j, path, err, n);
  else rc = emu_config_add_subscription(into, topic, j, path, err, n);
  char prefix[64];
  snprintf(prefix, sizeof prefix, "%s.Properties.", path);
  size_t pl = strlen(prefix);
  if (rc && !strncmp(err, prefix, pl)) {
    char *copy = xstrdup(err + pl);
    snprintf(err, n, "%s.%s", desc_name(kind), copy);
    free(copy);
  }
  return rc;
}

static json_t *rule_to_json(const xnode_t *d, const char *name, char *err, size_t n);

/* PUT of a queue, topic or subscription: create, or update with If-Match. name is the full
 * path; topic the parent topic of a subscription. */
static int put_entity(emu_broker_t *b, const emu_http_req_t *r, const char *base, emu_kind_t kind,
                      const char *name, emu_entity_t *topic, emu_buf_t *o, const char **ctype)
{
  char err[1200], ifmatch[64];
  bool update = emu_http_header(r, "If-Match", ifmatch, sizeof ifmatch);
  xnode_t *root = xml_parse(r->body, r->body_len, err, sizeof err);
  if (!root) return xml_error(o, ctype, 400, err);
  xnode_t *d = entry_description(root, desc_name(kind));
  if (!d) {
    xnode_free(root);
    snprintf(err, sizeof err, "The request body must be an Atom entry whose content is a %s.", desc_name(kind));
    return xml_error(o, ctype, 400, err);
  }
  const char *leaf = kind == ENT_SUBSCRIPTION ? strrchr(name, '/') + 1 : name;
  desc_extra_t ex;
  json_t *j = desc_to_json(b, d, kind, leaf, &ex, err, sizeof err);
  /* .NET's CreateSubscriptionAsync(options, rule) sends the first rule inside the description */
  xnode_t *drd = kind == ENT_SUBSCRIPTION ? kid(d, "DefaultRuleDescription") : NULL;
  if (j && drd) {
    const char *rn = kid_text(drd, "Name");
    json_t *rj = rule_to_json(drd, rn && *rn ? rn : "$Default", err, sizeof err);
    if (rj) {
      json_object_set_new(j, "Rules", json_pack("[o]", rj));
    } else {
      json_decref(j);
      free(ex.user_metadata);
      j = NULL;
    }
  }
  xnode_free(root);
  if (!j) return xml_error(o, ctype, 400, err);
  emu_entity_t *e = emu_entity_find(b, name);
  if (e && e->kind == ENT_DLQ) e = NULL;
  int status;
  if (!update) {
    if (e) {
      snprintf(err, sizeof err, "The messaging entity '%s' already exists.", name);
      status = xml_error(o, ctype, 409, err);
    } else if (add_entity(b, kind, topic, j, err, sizeof err)) {
      status = xml_error(o, ctype, strstr(err, "already exists") ? 409 : 400, err);
    } else {
      e = emu_entity_find(b, name);
      props_normalize(&e->props);
      emu_admin_forget(b, e->name);
      adm_meta_t *m = meta_get(b, e);
      extra_to_meta(m, &ex, b);
      emu_entity_set_off(b, e, status_off(m->status));
      m->created = m->updated;
      emu_log(b, 1, "admin: created %s '%s'", kind_word(kind), name);
      entity_entry(b, o, base, e, true);
      *ctype = CT_ENTRY;
      status = 201;
    }
  } else if (!e || e->kind != kind) {
    snprintf(err, sizeof err, "The messaging entity '%s' could not be found.", name);
    status = xml_error(o, ctype, 404, err);
  } else {
    /* validate exactly as a create would, on a scratch broker, then take its settings */
    emu_broker_t *scratch = emu_broker_new(&b->opt);
    emu_entity_t *st = NULL;
    if (kind == ENT_SUBSCRIPTION) {
      json_t *tj = json_pack("{s:s}", "Name", topic->name);
      emu_config_add_topic(scratch, tj, "Topic", err, sizeof err);
      json_decref(tj);
      st = emu_entity_find(scratch, topic->name);
    }
    if ((kind == ENT_SUBSCRIPTION && !st) || add_entity(scratch, kind, st, j, err, sizeof err)) {
      status = xml_error(o, ctype, 400, err);
    } else {
      emu_entity_t *se = emu_entity_find(scratch, name);
      props_normalize(&se->props);
      if (se->props.requires_session != e->props.requires_session) {
        snprintf(err, sizeof err, "The value for the RequiresSession property of an existing %s cannot be changed.", kind_word(kind));
        status = xml_error(o, ctype, 400, err);
      } else if (kind != ENT_SUBSCRIPTION && se->props.dup_detect != e->props.dup_detect) {
        snprintf(err, sizeof err, "The value for the RequiresDuplicateDetection property of an existing %s cannot be changed.", kind_word(kind));
        status = xml_error(o, ctype, 400, err);
      } else {
        emu_props_free(&e->props);
        e->props = se->props;
        memset(&se->props, 0, sizeof se->props);
        emu_props_default(&se->props);
        adm_meta_t *m = meta_get(b, e);
        extra_to_meta(m, &ex, b);
        emu_entity_set_off(b, e, status_off(m->status));
        e->dirty = true;
        emu_log(b, 1, "admin: updated %s '%s'", kind_word(kind), name);
        entity_entry(b, o, base, e, true);
        *ctype = CT_ENTRY;
        status = 200;
      }
    }
    emu_broker_free(scratch);
  }
  free(ex.user_metadata);
  json_decref(j);
  if (status == 200) emu_dispatch_all(b);
  return status;
}

static int delete_entity(emu_broker_t *b, emu_entity_t *e, emu_buf_t *o, const char **ctype)
{
  emu_log(b, 1, "admin: deleting '%s'", e->name);
  emu_admin_forget(b, e->name);
  emu_detach_entity_tree(b, e, "amqp:not-found");
  emu_entity_remove(b, e);
  *ctype = CT_XML;
  (void)o;
  return 200;
}

/* ---------------------------------------------------------------- rules */

/* JSON value of a KeyValueOfstringanyType Value element; NULL for unsupported types. */
static json_t *kv_value(const xnode_t *v)
{
  const char *t = v->type ? v->type : "string", *s = v->text.p ? (const char *)v->text.p : "";
  char *end;
  if (!strcmp(t, "string")) return json_string(s);
  if (!strcmp(t, "int") || !strcmp(t, "long") || !strcmp(t, "short") || !strcmp(t, "byte")) {
    long long i = strtoll(s, &end, 10);
    return *s && !*end ? json_integer(i) : NULL;
  }
  if (!strcmp(t, "double") || !strcmp(t, "float")) {
    double d = strtod(s, &end);
    return *s && !*end ? json_real(d) : NULL;
  }
  if (!strcmp(t, "boolean")) {
    bool bv;
    return parse_bool(s, &bv) ? json_boolean(bv) : NULL;
  }
  return NULL;
}

/* RuleDescription -> the Rules[] item of Config.json; NULL with err set. */
static json_t *rule_to_json(const xnode_t *d, const char *name, char *err, size_t n)
{
  xnode_t *f = kid(d, "Filter"), *a = kid(d, "Action");
  json_t *props = json_object();
  const char *ft = f && f->type ? f->type : "TrueFilter";
  if (!strcmp(ft, "TrueFilter")) {
    json_object_set_new(props, "FilterType", json_string("TrueFilter"));
  } else if (!strcmp(ft, "FalseFilter")) {
    json_object_set_new(props, "FilterType", json_string("FalseFilter"));
  } else if (!strcmp(ft, "SqlFilter")) {
    const char *sql = kid_text(f, "SqlExpression");
    xnode_t *params = kid(f, "Parameters");
    if (params && params->kids) {
      snprintf(err, n, "SqlFilter.Parameters are not supported by the emulator; write the values into the expression.");
      json_decref(props);
      return NULL;
    }
    json_object_set_new(props, "FilterType", json_string("Sql"));
    json_object_set_new(props, "SqlFilter", json_pack("{s:s}", "SqlExpression", sql ? sql : ""));
  } else if (!strcmp(ft, "CorrelationFilter")) {
    json_t *cf = json_object();
    for (int i = 0; i < 8; i++) {
      const char *v = kid_text(f, CORR_NAMES[i]);
      if (v) json_object_set_new(cf, CORR_NAMES[i], json_string(v));
    }
    xnode_t *pe = kid(f, "Properties");
    if (pe && pe->kids) {
      json_t *pj = json_object();
      for (xnode_t *kv = pe->kids; kv; kv = kv->next) {
        const char *key = kid_text(kv, "Key");
        xnode_t *val = kid(kv, "Value");
        json_t *jv = val ? kv_value(val) : NULL;
        if (!key || !jv) {
          snprintf(err, n, "CorrelationFilter.Properties: '%.200s' needs a string, int, long, double or boolean value.", key ? key : "?");
          json_decref(pj);
          json_decref(cf);
          json_decref(props);
          return NULL;
        }
        json_object_set_new(pj, key, jv);
      }
      json_object_set_new(cf, "Properties", pj);
    }
    json_object_set_new(props, "FilterType", json_string("Correlation"));
    json_object_set_new(props, "CorrelationFilter", cf);
  } else {
    snprintf(err, n, "Filter: unknown filter type '%.64s' (SqlFilter, CorrelationFilter, TrueFilter, FalseFilter).", ft);
    json_decref(props);
    return NULL;
  }
  if (a && a->type && !strcmp(a->type, "SqlRuleAction")) {
    const char *sql = kid_text(a, "SqlExpression");
    xnode_t *params = kid(a, "Parameters");
    if (params && params->kids) {
      snprintf(err, n, "SqlRuleAction.Parameters are not supported by the emulator; write the values into the expression.");
      json_decref(props);
      return NULL;
    }
    json_object_set_new(props, "Action", json_pack("{s:s}", "SqlExpression", sql ? sql : ""));
  } else if (a && a->type && strcmp(a->type, "EmptyRuleAction")) {
    snprintf(err, n, "Action: unknown action type '%.64s' (SqlRuleAction, EmptyRuleAction).", a->type);
    json_decref(props);
    return NULL;
  }
  return json_pack("{s:s,s:o}", "Name", name, "Properties", props);
}

static emu_rule_t **rule_slot(emu_entity_t *sub, const char *name)
{
  for (emu_rule_t **pp = &sub->rules; *pp; pp = &(*pp)->next)
    if (!strcasecmp((*pp)->name, name)) return pp;
  return NULL;
}

static int put_rule(emu_broker_t *b, const emu_http_req_t *r, const char *base, emu_entity_t *sub,
                    const char *name, emu_buf_t *o, const char **ctype)
{
  char err[1200], ifmatch[64];
  bool update = emu_http_header(r, "If-Match", ifmatch, sizeof ifmatch);
  emu_rule_t **slot = rule_slot(sub, name);
  if (!update && slot) {
    snprintf(err, sizeof err, "The rule '%s' already exists in '%s'.", name, sub->name);
    return xml_error(o, ctype, 409, err);
  }
  if (update && !slot) {
    snprintf(err, sizeof err, "The rule '%s' of '%s' could not be found.", name, sub->name);
    return xml_error(o, ctype, 404, err);
  }
  if (strlen(name) > 50) return xml_error(o, ctype, 400, "A rule name has at most 50 characters.");
  xnode_t *root = xml_parse(r->body, r->body_len, err, sizeof err);
  if (!root) return xml_error(o, ctype, 400, err);
  xnode_t *d = entry_description(root, "RuleDescription");
  json_t *j = d ? rule_to_json(d, name, err, sizeof err) : NULL;
  if (!d) snprintf(err, sizeof err, "The request body must be an Atom entry whose content is a RuleDescription.");
  xnode_free(root);
  if (!j) return xml_error(o, ctype, 400, err);
  emu_rule_t *nr = emu_rule_from_json(j, "RuleDescription", err, sizeof err);
  json_decref(j);
  if (!nr) return xml_error(o, ctype, 400, err);
  if (update) {
    emu_rule_t *old = *slot;
    nr->created_ms = old->created_ms;
    nr->next = old->next;
    *slot = nr;
    emu_rule_free(old);
  } else {
    nr->created_ms = emu_now(b);
    emu_rule_t **tail = &sub->rules;
    while (*tail) tail = &(*tail)->next;
    *tail = nr;
  }
  emu_log(b, 1, "admin: %s rule '%s' of '%s'", update ? "updated" : "created", name, sub->name);
  rule_entry(b, o, base, sub, nr, true);
  *ctype = CT_ENTRY;
  return update ? 200 : 201;
}

/* ---------------------------------------------------------------- routing */

/* Authorization: a SAS token with Manage rights over the request path (or, with
 * --allow-jwt, any bearer token). 0 when allowed, else the error status written to o. */
static int check_auth(emu_broker_t *b, const emu_http_req_t *r, const char *path, emu_buf_t *o, const char **ctype)
{
  char tok[2048], why[600], aud[1200];
  if (!emu_http_header(r, "Authorization", tok, sizeof tok) || !tok[0])
    return xml_error(o, ctype, 401, "MissingToken: The request has no Authorization header (SharedAccessSignature sr=...&sig=...&se=...&skn=...).");
  if (!strncasecmp(tok, "Bearer ", 7) && b->opt.allow_jwt) return 0;
  unsigned rights = 0;
  int64_t exp = 0;
  snprintf(aud, sizeof aud, "%s", path);
  if (emu_sas_verify(b, tok, aud, &rights, &exp, why, sizeof why) != 0) {
    emu_log(b, 1, "admin: request for '%s' refused: %s", path, why);
    return xml_error(o, ctype, 401, why);
  }
  if (!(rights & RIGHT_MANAGE))
    return xml_error(o, ctype, 401, "Unauthorized: the Manage claim is required for this operation.");
  return 0;
}

/* Split the path at a case-insensitive "/<word>/" segment: "t/Subscriptions/s" ->
 * head "t", tail "s". */
static bool split_at(const char *path, const char *word, char *head, char *tail, size_t n)
{
  size_t wl = strlen(word);
  for (const char *p = path; (p = strchr(p, '/')); p++) {
    if (!strncasecmp(p + 1, word, wl) && (p[1 + wl] == '/' || p[1 + wl] == 0)) {
      size_t hl = (size_t)(p - path);
      if (hl >= n) return false;
      memcpy(head, path, hl);
      head[hl] = 0;
      snprintf(tail, n, "%s", p[1 + wl] ? p + 2 + wl : "");
      return true;
    }
  }
  return false;
}

/* GET (its entry) or DELETE of an existing queue, topic or subscription; 405 otherwise. */
static int get_or_delete(emu_broker_t *b, emu_buf_t *o, const char *base, emu_entity_t *e, bool get,
                         bool del, const char **ctype)
{
  if (get) {
    entity_entry(b, o, base, e, true);
    *ctype = CT_ENTRY;
    return 200;
  }
  if (del) return delete_entity(b, e, o, ctype);
  return xml_error(o, ctype, 405, "Allowed: GET, PUT, DELETE.");
}

int emu_admin_handle(emu_broker_t *b, const emu_http_req_t *r, emu_buf_t *o, const char **ctype)
{
  char path[1024], base[300], err[1400];
  const char *q = strchr(r->target, '?');
  size_t pl = q ? (size_t)(q - r->target) : strlen(r->target);
  if (pl >= sizeof path) return xml_error(o, ctype, 400, "The request path is too long.");
  memcpy(path, r->target, pl);
  path[pl] = 0;
  emu_url_decode(path);
  char *p = path;
  while (*p == '/') p++;
  size_t n = strlen(p);
  while (n && p[n - 1] == '/') p[--n] = 0;
  base_url(b, r, base, sizeof base);
  int st = check_auth(b, r, p, o, ctype);
  if (st) return st;
  const char *m = r->method;
  bool get = !strcmp(m, "GET"), put_ = !strcmp(m, "PUT"), del = !strcmp(m, "DELETE");

  if (!*p) return xml_error(o, ctype, 404, "No entity path in the request.");
  if (!strcasecmp(p, "$namespaceinfo")) {
    if (!get) return xml_error(o, ctype, 405, "Only GET is allowed on $namespaceinfo.");
    const char *ns = b->ns_name ? b->ns_name : "sbemulatorns";
    int64_t now = wire_now(b);
    entry_open(o, base, "$namespaceinfo", ns, now, now, ns, true);
    put(o, "<NamespaceInfo xmlns=\"" NS_SB "\" xmlns:i=\"" NS_XSI "\">");
    el_time(o, "CreatedTime", now);
    el_text(o, "MessagingSKU", "Standard");
    el_int(o, "MessagingUnits", 1);
    el_time(o, "ModifiedTime", now);
    el_text(o, "Name", ns);
    el_text(o, "NamespaceType", "Messaging");
    put(o, "</NamespaceInfo>");
    entry_close(o);
    *ctype = CT_ENTRY;
    return 200;
  }
  if (!strncasecmp(p, "$Resources/", 11)) {
    if (!get) return xml_error(o, ctype, 405, "Only GET is allowed on $Resources.");
    if (!strcasecmp(p + 11, "queues")) return list_entities(b, r, base, ENT_QUEUE, NULL, o, ctype);
    if (!strcasecmp(p + 11, "topics")) return list_entities(b, r, base, ENT_TOPIC, NULL, o, ctype);
    return xml_error(o, ctype, 404, "Only $Resources/Queues and $Resources/Topics are listed.");
  }

  char topic[1024], rest[1024], sub[1024], rule[1024];
  if (split_at(p, "Subscriptions", topic, rest, sizeof topic)) {
    emu_entity_t *t = emu_entity_find(b, topic);
    if (!t || t->kind != ENT_TOPIC) {
      snprintf(err, sizeof err, "The messaging entity '%s' (a topic) could not be found.", topic);
      return xml_error(o, ctype, 404, err);
    }
    if (!rest[0]) {
      if (!get) return xml_error(o, ctype, 405, "Only GET is allowed on a subscription list.");
      return list_entities(b, r, base, ENT_SUBSCRIPTION, t, o, ctype);
    }
    bool has_rule = split_at(rest, "Rules", sub, rule, sizeof sub);
    if (!has_rule) snprintf(sub, sizeof sub, "%s", rest);
    if (strchr(sub, '/')) return xml_error(o, ctype, 400, "A subscription name cannot contain '/'.");
    char full[2100];
    snprintf(full, sizeof full, "%s/Subscriptions/%s", t->name, sub);
    emu_entity_t *s = emu_entity_find(b, full);
    if (s && s->kind != ENT_SUBSCRIPTION) s = NULL;
    if (!has_rule) {
      if (put_) return put_entity(b, r, base, ENT_SUBSCRIPTION, full, t, o, ctype);
      if (!s) {
        snprintf(err, sizeof err, "The messaging entity '%.*s' could not be found.", (int)900, full);
        return xml_error(o, ctype, 404, err);
      }
      return get_or_delete(b, o, base, s, get, del, ctype);
    }
    if (!s) {
      snprintf(err, sizeof err, "The messaging entity '%.*s' could not be found.", (int)900, full);
      return xml_error(o, ctype, 404, err);
    }
    if (!rule[0]) {
      if (!get) return xml_error(o, ctype, 405, "Only GET is allowed on a rule list.");
      return list_rules(b, r, base, s, o, ctype);
    }
    if (put_) return put_rule(b, r, base, s, rule, o, ctype);
    emu_rule_t **slot = rule_slot(s, rule);
    if (!slot) {
      snprintf(err, sizeof err, "The rule '%.*s' of '%.*s' could not be found.", 200, rule, 900, full);
      return xml_error(o, ctype, 404, err);
    }
    if (get) {
      rule_entry(b, o, base, s, *slot, true);
      *ctype = CT_ENTRY;
      return 200;
    }
    if (del) {
      emu_rule_t *x = *slot;
      *slot = x->next;
      emu_rule_free(x);
      emu_log(b, 1, "admin: deleted rule '%s' of '%s'", rule, full);
      *ctype = CT_XML;
      return 200;
    }
    return xml_error(o, ctype, 405, "Allowed: GET, PUT, DELETE.");
  }

  emu_entity_t *e = emu_entity_find(b, p);
  if (e && e->kind != ENT_QUEUE && e->kind != ENT_TOPIC) e = NULL;
  if (put_) {
    /* the body says what to make: a QueueDescription or a TopicDescription */
    bool topic_body = memmem(r->body, r->body_len, "TopicDescription", 16) != NULL;
    return put_entity(b, r, base, topic_body ? ENT_TOPIC : ENT_QUEUE, p, NULL, o, ctype);
  }
  if (!e) {
    snprintf(err, sizeof err, "The messaging entity '%s' could not be found.", p);
    return xml_error(o, ctype, 404, err);
  }
  return get_or_delete(b, o, base, e, get, del, ctype);
}
