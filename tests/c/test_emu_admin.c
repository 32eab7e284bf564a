/*
 * test_emu_admin.c: the administration API (admin.c) through emu_control_request, no sockets.
 *
 * Requests are built as a host passes them (request line and headers, body); the checks are
 * on the status, the content type and what the broker holds afterwards: entities made and
 * updated with the config loader's validation, rules that the broker evaluates, the
 * service's error shape, SAS checks, and that JSON control requests still get JSON.
 */
#include "admin.h"
#include "config.h"
#include "test_emu_harness.h"

static const char *ENTRY_HEAD = "<?xml version=\"1.0\" encoding=\"utf-8\"?><entry xmlns=\"http://www.w3.org/2005/Atom\"><content type=\"application/xml\">";
static const char *ENTRY_TAIL = "</content></entry>";
#define SB_NS "xmlns=\"http://schemas.microsoft.com/netservices/2010/10/servicebus/connect\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\""

static char g_token[1024];

/* One request; the response body is left in *out (caller frees), NUL-terminated. */
static int req(emu_broker_t *b, const char *method, const char *target, const char *extra_headers,
               const char *body, emu_buf_t *out, const char **ctype)
{
  char head[4096];
  snprintf(head, sizeof head, "%s %s HTTP/1.1\r\nHost: localhost:5300\r\n%s%s%s\r\n", method, target,
           g_token[0] ? "Authorization: " : "", g_token[0] ? g_token : "", g_token[0] ? "\r\n" : "");
  if (extra_headers) {
    size_t k = strlen(head) - 2; /* before the blank line */
    snprintf(head + k, sizeof head - k, "%s\r\n", extra_headers);
  }
  emu_http_req_t r = {method, target, head, strlen(head), body ? body : "", body ? strlen(body) : 0};
  out->len = 0;
  int st = emu_control_request(b, &r, out, ctype);
  buf_u8(out, 0);
  out->len--;
  return st;
}

static char *entry(const char *inner)
{
  size_t n = strlen(ENTRY_HEAD) + strlen(inner) + strlen(ENTRY_TAIL) + 1;
  char *s = malloc(n);
  snprintf(s, n, "%s%s%s", ENTRY_HEAD, inner, ENTRY_TAIL);
  return s;
}

/* The harness's broker (one Manage policy), and a token for it. */
static emu_broker_t *broker(void)
{
  emu_broker_t *b = h_broker();
  h_sas(g_token, sizeof g_token, "https://localhost/", "RootManageSharedAccessKey", "SAS_KEY_VALUE", 3600);
  return b;
}

static void done(emu_broker_t *b)
{
  emu_admin_free(b);
  emu_broker_free(b);
}

static void test_queue(void)
{
  emu_broker_t *b = broker();
  emu_buf_t o = {0};
  const char *ct;
  char *body = entry("<QueueDescription " SB_NS "><LockDuration>PT45S</LockDuration><MaxSizeInMegabytes>2048</MaxSizeInMegabytes>"
                     "<RequiresSession>true</RequiresSession><MaxDeliveryCount>4</MaxDeliveryCount>"
                     "<UserMetadata>a &lt;b&gt; &amp; \"c\"</UserMetadata></QueueDescription>");
  CHECK(req(b, "PUT", "/q1?api-version=2021-05", "Content-Type: application/atom+xml", body, &o, &ct) == 201);
  CHECK(strstr(ct, "atom+xml") != NULL);
  emu_entity_t *q = emu_entity_find(b, "q1");
  CHECK(q && q->kind == ENT_QUEUE && q->props.lock_ms == 45000 && q->props.max_delivery == 4 && q->props.requires_session);
  CHECK(strstr((char *)o.p, "<UserMetadata>a &lt;b&gt; &amp; &quot;c&quot;</UserMetadata>") != NULL);
  CHECK(strstr((char *)o.p, "<LockDuration>PT45S</LockDuration>") != NULL);
  CHECK(strstr((char *)o.p, "<MaxSizeInMegabytes>2048</MaxSizeInMegabytes>") != NULL);
  /* taken name */
  CHECK(req(b, "PUT", "/q1?api-version=2021-05", NULL, body, &o, &ct) == 409);
  CHECK(strstr((char *)o.p, "<Error><Code>409</Code><Detail>") != NULL);
  free(body);
  /* update: If-Match; RequiresSession cannot change, the rest can */
  body = entry("<QueueDescription " SB_NS "><LockDuration>PT1M</LockDuration><RequiresSession>false</RequiresSession></QueueDescription>");
  CHECK(req(b, "PUT", "/q1?api-version=2021-05", "If-Match: *", body, &o, &ct) == 400);
  CHECK(strstr((char *)o.p, "RequiresSession") != NULL && q->props.lock_ms == 45000);
  free(body);
  body = entry("<QueueDescription " SB_NS "><LockDuration>PT2M</LockDuration><RequiresSession>true</RequiresSession>"
               "<DefaultMessageTimeToLive>P10675199DT2H48M5.4775807S</DefaultMessageTimeToLive></QueueDescription>");
  CHECK(req(b, "PUT", "/q1?api-version=2021-05", "If-Match: *", body, &o, &ct) == 200);
  CHECK(q->props.lock_ms == 120000 && q->props.max_delivery == 10 && q->props.default_ttl_ms == INT64_MAX);
  CHECK(req(b, "PUT", "/nope?api-version=2021-05", "If-Match: *", body, &o, &ct) == 404);
  free(body);
  /* bad values: config.c's validation, named after the element */
  body = entry("<QueueDescription " SB_NS "><LockDuration>soon</LockDuration></QueueDescription>");
  CHECK(req(b, "PUT", "/q2?api-version=2021-05", NULL, body, &o, &ct) == 400);
  CHECK(strstr((char *)o.p, "QueueDescription.LockDuration") != NULL && !emu_entity_find(b, "q2"));
  free(body);
  CHECK(req(b, "PUT", "/q2?api-version=2021-05", NULL, "<entry><content>", &o, &ct) == 400);
  CHECK(req(b, "PUT", "/q2?api-version=2021-05", NULL, "<!DOCTYPE e [<!ENTITY x \"y\">]><entry>&x;</entry>", &o, &ct) == 400);
  CHECK(req(b, "PUT", "/q2?api-version=2021-05", NULL, "<entry/>", &o, &ct) == 400);
  /* get, list, delete */
  CHECK(req(b, "GET", "/q1?api-version=2021-05", NULL, NULL, &o, &ct) == 200);
  CHECK(strstr((char *)o.p, "<title type=\"text\">q1</title>") && strstr((char *)o.p, "<d2p1:ActiveMessageCount>0<"));
  CHECK(req(b, "GET", "/$Resources/Queues?$skip=0&$top=10&api-version=2021-05", NULL, NULL, &o, &ct) == 200);
  CHECK(strstr(ct, "type=feed") && strstr((char *)o.p, "<QueueDescription"));
  CHECK(req(b, "DELETE", "/q1?api-version=2021-05", NULL, NULL, &o, &ct) == 200);
  CHECK(!emu_entity_find(b, "q1"));
  CHECK(req(b, "GET", "/q1?api-version=2021-05", NULL, NULL, &o, &ct) == 404);
  CHECK(strstr((char *)o.p, "<Code>404</Code>") != NULL);
  buf_free(&o);
  done(b);
}

static void test_topic_rules(void)
{
  emu_broker_t *b = broker();
  emu_buf_t o = {0};
  const char *ct;
  char *body = entry("<TopicDescription " SB_NS "><DefaultMessageTimeToLive>PT1H</DefaultMessageTimeToLive></TopicDescription>");
  CHECK(req(b, "PUT", "/t1?api-version=2021-05", NULL, body, &o, &ct) == 201);
  free(body);
  body = entry("<SubscriptionDescription " SB_NS "><LockDuration>PT30S</LockDuration></SubscriptionDescription>");
  CHECK(req(b, "PUT", "/t1/Subscriptions/s1?api-version=2021-05", NULL, body, &o, &ct) == 201);
  CHECK(req(b, "PUT", "/t9/Subscriptions/s1?api-version=2021-05", NULL, body, &o, &ct) == 404);
  free(body);
  /* .NET sends a first rule inside the description */
  body = entry("<SubscriptionDescription " SB_NS "><DefaultRuleDescription><Filter xsi:type=\"SqlFilter\">"
               "<SqlExpression>a = 1</SqlExpression></Filter><Name>first</Name></DefaultRuleDescription></SubscriptionDescription>");
  CHECK(req(b, "PUT", "/t1/Subscriptions/s2?api-version=2021-05", NULL, body, &o, &ct) == 201);
  free(body);
  body = entry("<SubscriptionDescription " SB_NS "><UserMetadata>m</UserMetadata><DefaultRuleDescription>"
               "<Filter xsi:type=\"Nonsense\"/></DefaultRuleDescription></SubscriptionDescription>");
  CHECK(req(b, "PUT", "/t1/Subscriptions/s3?api-version=2021-05", NULL, body, &o, &ct) == 400);
  CHECK(strstr((char *)o.p, "Nonsense") && !emu_entity_find(b, "t1/Subscriptions/s3"));
  free(body);
  emu_entity_t *s2 = emu_entity_find(b, "t1/Subscriptions/s2");
  CHECK(s2 && s2->rules && !strcmp(s2->rules->name, "first") && s2->rules->kind == FILTER_SQL && !s2->rules->next);
  emu_entity_t *s = emu_entity_find(b, "t1/Subscriptions/s1");
  CHECK(s && s->props.lock_ms == 30000 && s->rules && !strcmp(s->rules->name, "$Default"));
  body = entry("<RuleDescription " SB_NS "><Filter xsi:type=\"CorrelationFilter\"><CorrelationId>c&amp;1</CorrelationId>"
               "<Properties><KeyValueOfstringanyType><Key>n</Key><Value xmlns:d6p1=\"http://www.w3.org/2001/XMLSchema\" "
               "xsi:type=\"d6p1:int\">7</Value></KeyValueOfstringanyType></Properties></Filter>"
               "<Action xsi:type=\"SqlRuleAction\"><SqlExpression>SET x = 1</SqlExpression></Action><Name>r1</Name></RuleDescription>");
  CHECK(req(b, "PUT", "/t1/subscriptions/s1/rules/r1?api-version=2021-05", NULL, body, &o, &ct) == 201);
  CHECK(req(b, "PUT", "/t1/subscriptions/s1/rules/r1?api-version=2021-05", NULL, body, &o, &ct) == 409);
  free(body);
  emu_rule_t *r = s && s->rules ? s->rules->next : NULL;
  CHECK(r && r->kind == FILTER_CORRELATION && r->corr[CORR_CORRELATION_ID] && !strcmp(r->corr[CORR_CORRELATION_ID], "c&1"));
  CHECK(r && r->corr_props && !strcmp(r->corr_props->name, "n") && r->action);
  CHECK(req(b, "GET", "/t1/Subscriptions/s1/Rules/r1?api-version=2021-05", NULL, NULL, &o, &ct) == 200);
  CHECK(strstr((char *)o.p, "<CorrelationId>c&amp;1</CorrelationId>") && strstr((char *)o.p, "d6p1:long\">7<")
        == NULL && strstr((char *)o.p, "d6p1:int\">7<"));
  body = entry("<RuleDescription " SB_NS "><Filter xsi:type=\"SqlFilter\"><SqlExpression>a = = 1</SqlExpression></Filter></RuleDescription>");
  CHECK(req(b, "PUT", "/t1/Subscriptions/s1/Rules/bad?api-version=2021-05", NULL, body, &o, &ct) == 400);
  free(body);
  CHECK(req(b, "GET", "/t1/Subscriptions/s1/Rules?api-version=2021-05", NULL, NULL, &o, &ct) == 200);
  CHECK(strstr((char *)o.p, "TrueFilter") && strstr((char *)o.p, "CorrelationFilter") && !strstr((char *)o.p, "'bad'"));
  CHECK(req(b, "DELETE", "/t1/Subscriptions/s1/Rules/$Default?api-version=2021-05", NULL, NULL, &o, &ct) == 200);
  CHECK(s && s->rules == r);
  CHECK(req(b, "GET", "/t1/Subscriptions?api-version=2021-05", NULL, NULL, &o, &ct) == 200);
  CHECK(strstr((char *)o.p, "<SubscriptionDescription") != NULL);
  CHECK(req(b, "DELETE", "/t1?api-version=2021-05", NULL, NULL, &o, &ct) == 200);
  CHECK(!emu_entity_find(b, "t1/Subscriptions/s1") && !emu_entity_find(b, "t1"));
  CHECK(req(b, "GET", "/$namespaceinfo?api-version=2021-05", NULL, NULL, &o, &ct) == 200);
  CHECK(strstr((char *)o.p, "<Name>sbemulatorns</Name>") != NULL);
  buf_free(&o);
  done(b);
}

static void test_auth_and_routing(void)
{
  emu_broker_t *b = broker();
  emu_buf_t o = {0};
  const char *ct;
  char good[1024];
  snprintf(good, sizeof good, "%s", g_token);
  g_token[0] = 0;
  CHECK(req(b, "GET", "/$Resources/Queues?api-version=2021-05", NULL, NULL, &o, &ct) == 401);
  CHECK(strstr((char *)o.p, "<Code>401</Code>") != NULL);
  h_sas(g_token, sizeof g_token, "https://localhost/", "RootManageSharedAccessKey", "wrong", 3600);
  CHECK(req(b, "GET", "/$Resources/Queues?api-version=2021-05", NULL, NULL, &o, &ct) == 401);
  h_sas(g_token, sizeof g_token, "https://localhost/", "Other", "SAS_KEY_VALUE", 3600);
  CHECK(req(b, "GET", "/$Resources/Queues?api-version=2021-05", NULL, NULL, &o, &ct) == 401);
  CHECK(strstr((char *)o.p, "Other") != NULL);
  h_sas(g_token, sizeof g_token, "https://localhost/", "RootManageSharedAccessKey", "SAS_KEY_VALUE", -10);
  CHECK(req(b, "GET", "/$Resources/Queues?api-version=2021-05", NULL, NULL, &o, &ct) == 401);
  CHECK(strstr((char *)o.p, "expired") != NULL);
  /* JSON paths: no api-version, no XML content type */
  CHECK(req(b, "GET", "/health", NULL, NULL, &o, &ct) == 200);
  CHECK(!strcmp(ct, "application/json") && strstr((char *)o.p, "healthy"));
  snprintf(g_token, sizeof g_token, "%s", good);
  /* an XML content type alone makes an administration request */
  CHECK(req(b, "GET", "/$namespaceinfo", "Content-Type: application/atom+xml;type=entry", NULL, &o, &ct) == 200);
  buf_free(&o);
  done(b);
}

static void test_header_lookup(void)
{
  const char *head = "GET / HTTP/1.1\r\nHost: h\r\nif-match:  *  \r\nX-Long: 0123456789\r\n\r\n";
  emu_http_req_t r = {"GET", "/", head, strlen(head), "", 0};
  char v[8];
  CHECK(emu_http_header(&r, "If-Match", v, sizeof v) && !strcmp(v, "*"));
  CHECK(emu_http_header(&r, "x-long", v, sizeof v) && !strcmp(v, "0123456"));
  CHECK(!emu_http_header(&r, "Authorization", v, sizeof v));
  CHECK(!emu_http_header(&r, "Hos", v, sizeof v));
}

int main(void)
{
  test_queue();
  test_topic_rules();
  test_auth_and_routing();
  test_header_lookup();
  if (g_failures) fprintf(stderr, "%d check(s) failed\n", g_failures);
  else printf("test_emu_admin: all passed\n");
  return g_failures ? 1 : 0;
}
