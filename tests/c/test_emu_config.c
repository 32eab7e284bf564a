/*
 * test_emu_config.c: the config loader, durations, SAS verification and the codec.
 *
 * The loader must accept Microsoft's emulator Config.json as it is (with //
 * comments) and name the JSON path of the first problem in an invalid file.
 * SAS verification is checked against a vector computed independently with
 * Python's hmac (key "SAS_KEY_VALUE", sr as uamqp encodes it, lower-case hex).
 */
#include "config.h"
#include "test_emu_harness.h"

#include <unistd.h>

static const char *MS_SAMPLE =
  "{\n \"UserConfig\": {\n  \"Namespaces\": [ {\n   \"Name\": \"sbemulatorns\",\n"
  "   \"Queues\": [ { \"Name\": \"queue.1\", \"Properties\": { \"DeadLetteringOnMessageExpiration\": false,\n"
  "      \"DefaultMessageTimeToLive\": \"PT1H\", \"DuplicateDetectionHistoryTimeWindow\": \"PT20S\",\n"
  "      \"ForwardDeadLetteredMessagesTo\": \"\", \"ForwardTo\": \"\", \"LockDuration\": \"PT1M\",\n"
  "      \"MaxDeliveryCount\": 3, \"RequiresDuplicateDetection\": false, \"RequiresSession\": false } } ],\n"
  "   \"Topics\": [ { \"Name\": \"topic.1\", \"Properties\": { \"DefaultMessageTimeToLive\": \"PT1H\" },\n"
  "     \"Subscriptions\": [\n"
  "      { \"Name\": \"subscription.1\", \"Rules\": [ { \"Name\": \"r\", \"Properties\": { \"FilterType\": \"Correlation\",\n"
  "          \"CorrelationFilter\": { \"ContentType\": \"application/json\"\n"
  "            // \"CorrelationId\": \"id1\",\n"
  "          } } } ] },\n"
  "      { \"Name\": \"subscription.3\" }, /* no rules: $Default */\n"
  "      { \"Name\": \"subscription.4\", \"Rules\": [ { \"Name\": \"sql-filter-1\", \"Properties\": {\n"
  "          \"FilterType\": \"Sql\", \"SqlFilter\": { \"SqlExpression\": \"sys.MessageId = '123456' AND userProp1 = 'value1'\" },\n"
  "          \"Action\" : { \"SqlExpression\": \"SET sys.To = 'Entity'\" } } } ] } ] } ] } ],\n"
  "  \"Logging\": { \"Type\": \"File\" } } }\n";

static int load_text(emu_broker_t *b, const char *text, char *err, size_t n)
{
  char path[] = "/tmp/test_emu_config_XXXXXX";
  int fd = mkstemp(path);
  FILE *f = fdopen(fd, "w");
  fputs(text, f);
  fclose(f);
  int rc = emu_config_load(b, path, err, n);
  unlink(path);
  return rc;
}

static void test_microsoft_sample(void)
{
  emu_options_t o = {0};
  emu_broker_t *b = emu_broker_new(&o);
  char err[1024] = "";
  CHECK(load_text(b, MS_SAMPLE, err, sizeof err) == 0);
  emu_entity_t *q = emu_entity_find(b, "QUEUE.1");
  CHECK(q && q->props.lock_ms == 60000 && q->props.max_delivery == 3 && q->props.dup_window_ms == 20000);
  CHECK(q && q->dlq && emu_entity_find(b, "queue.1/$deadletterqueue") == q->dlq);
  emu_entity_t *s3 = emu_entity_find(b, "topic.1/subscriptions/subscription.3");
  CHECK(s3 && s3->rules && !strcmp(s3->rules->name, "$Default") && s3->rules->kind == FILTER_TRUE);
  emu_entity_t *s4 = emu_entity_find(b, "topic.1/Subscriptions/subscription.4");
  CHECK(s4 && s4->rules->kind == FILTER_SQL && s4->rules->action);
  CHECK(b->policies && !strcmp(b->policies->name, "RootManageSharedAccessKey") && !strcmp(b->policies->key, "SAS_KEY_VALUE"));
  emu_broker_free(b);
}

static void test_shipped_files(void)
{
  const char *files[] = {SBUS_SOURCE_ROOT "/examples/emulator-config.json", NULL};
  for (int i = 0; files[i]; i++) {
    emu_options_t o = {0};
    emu_broker_t *b = emu_broker_new(&o);
    char err[1024] = "";
    int rc = emu_config_load(b, files[i], err, sizeof err);
    if (rc) fprintf(stderr, "%s\n", err);
    CHECK(rc == 0);
    CHECK(emu_entity_find(b, "session-queue") && emu_entity_find(b, "session-queue")->props.requires_session);
    emu_broker_free(b);
  }
}

static void expect_error(const char *text, const char *want)
{
  emu_options_t o = {0};
  emu_broker_t *b = emu_broker_new(&o);
  char err[1024] = "";
  CHECK(load_text(b, text, err, sizeof err) != 0);
  if (!strstr(err, want)) fprintf(stderr, "error '%s' lacks '%s'\n", err, want);
  CHECK(strstr(err, want) != NULL);
  CHECK(strstr(err, "/tmp/test_emu_config_") != NULL);
  emu_broker_free(b);
}

static void test_errors(void)
{
  expect_error("{", "invalid JSON");
  expect_error("{}", "UserConfig: is required");
  expect_error("{\"UserConfig\":{\"Namespaces\":[]}}", "UserConfig.Namespaces: is required");
  expect_error("{\"UserConfig\":{\"Namespaces\":[{\"Name\":\"n\",\"Queues\":[{\"Name\":\"a\"},"
               "{\"Name\":\"b\",\"Properties\":{\"LockDuration\":\"1m\"}}]}]}}",
               "UserConfig.Namespaces[0].Queues[1].Properties.LockDuration: '1m' is not a valid ISO-8601 duration");
  expect_error("{\"UserConfig\":{\"Namespaces\":[{\"Queues\":[{\"Name\":\"a\",\"Properties\":{\"MaxDeliveryCount\":0}}]}]}}",
               "Queues[0].Properties.MaxDeliveryCount: must be an integer >= 1");
  expect_error("{\"UserConfig\":{\"Namespaces\":[{\"Queues\":[{\"Name\":\"bad name!\"}]}]}}", "Queues[0].Name");
  expect_error("{\"UserConfig\":{\"Namespaces\":[{\"Queues\":[{\"Name\":\"a\"},{\"Name\":\"A\"}]}]}}", "already exists");
  expect_error("{\"UserConfig\":{\"Namespaces\":[{\"Topics\":[{\"Name\":\"t\",\"Subscriptions\":[{\"Name\":\"s\",\"Rules\":"
               "[{\"Name\":\"r\",\"Properties\":{\"FilterType\":\"Sql\",\"SqlFilter\":{\"SqlExpression\":\"a = \"}}}]}]}]}]}}",
               "Topics[0].Subscriptions[0].Rules[0].Properties.SqlFilter.SqlExpression: invalid SQL filter");
  expect_error("{\"UserConfig\":{\"Namespaces\":[{\"Queues\":[{\"Name\":\"a\",\"Properties\":{\"Bogus\":1}}]}]}}",
               "Queues[0].Properties.Bogus: unknown property");
  expect_error("{\"UserConfig\":{\"Namespaces\":[{\"SharedAccessPolicies\":[{\"Name\":\"p\",\"Key\":\"k\",\"Rights\":[\"Read\"]}]}]}}",
               "SharedAccessPolicies[0]: Rights[0]");
}

static void test_durations(void)
{
  CHECK(emu_parse_duration("PT1M") == 60000);
  CHECK(emu_parse_duration("PT5S") == 5000);
  CHECK(emu_parse_duration("PT0.5S") == 500);
  CHECK(emu_parse_duration("P1DT2H") == 93600000);
  CHECK(emu_parse_duration("P10675199DT2H48M5.4775807S") > 900000000000000LL);
  CHECK(emu_parse_duration("1M") == -1);
  CHECK(emu_parse_duration("PT") == -1);
  CHECK(emu_parse_duration("P1H") == -1);
}

static void test_sas_vector(void)
{
  emu_broker_t *b = h_broker();
  const char *tok = "SharedAccessSignature sr=sb%3a%2f%2flocalhost%2fqueue.1&sig=saDsHhrdv1t0iU7UUJQqjk5ejjYNGpyItrusfeJcC5g%3d"
                    "&se=4102444800&skn=RootManageSharedAccessKey";
  unsigned rights = 0;
  int64_t exp = 0;
  char why[256];
  CHECK(emu_sas_verify(b, tok, "sb://localhost/queue.1", &rights, &exp, why, sizeof why) == 0);
  CHECK(rights == (RIGHT_SEND | RIGHT_LISTEN | RIGHT_MANAGE));
  CHECK(exp == 4102444800000LL);
  CHECK(emu_sas_verify(b, tok, "amqps://127.0.0.1:5671/Queue.1/$management", &rights, &exp, why, sizeof why) == 0);
  CHECK(emu_sas_verify(b, tok, "sb://localhost/queue.2", &rights, &exp, why, sizeof why) != 0);
  CHECK(strstr(why, "InvalidAudience") != NULL);
  char bad[512];
  snprintf(bad, sizeof bad, "%s", tok);
  bad[60] = bad[60] == 'A' ? 'B' : 'A';
  CHECK(emu_sas_verify(b, bad, "sb://localhost/queue.1", &rights, &exp, why, sizeof why) != 0);
  CHECK(emu_sas_verify(b, "Bearer xyz", "sb://localhost/queue.1", &rights, &exp, why, sizeof why) != 0);
  /* .NET signs the namespace URI once and reuses it for every audience below it */
  char ns[1024];
  h_sas(ns, sizeof ns, "sb://localhost/", "RootManageSharedAccessKey", "SAS_KEY_VALUE", 600);
  CHECK(emu_sas_verify(b, ns, "sb://localhost/topic.1/Subscriptions/s1/$management", &rights, &exp, why, sizeof why) == 0);
  h_sas(ns, sizeof ns, "sb://localhost/", "RootManageSharedAccessKey", "SAS_KEY_VALUE", -5);
  CHECK(emu_sas_verify(b, ns, "sb://localhost/queue.1", &rights, &exp, why, sizeof why) != 0);
  CHECK(strstr(why, "ExpiredToken") != NULL);
  emu_broker_free(b);
}

static void test_codec(void)
{
  emu_buf_t b = {0};
  size_t m = enc_map_begin(&b);
  enc_str(&b, "seqs");
  size_t a = enc_array_begin(&b, AMQP_LONG);
  buf_be64(&b, 5);
  buf_be64(&b, (uint64_t)-2);
  enc_array_end(&b, a, 2);
  enc_sym(&b, "k");
  enc_uuid(&b, (const unsigned char *)"0123456789abcdef");
  enc_compound_end(&b, m, 4);
  amqp_val_t v, x;
  CHECK(amqp_decode(b.p, b.len, &v) == (long)b.len);
  CHECK(amqp_map_get(&v, "seqs", &x) && amqp_is_array(&x) && x.count == 2);
  amqp_iter_t it;
  amqp_iter_init(&it, &x);
  int64_t n1 = 0, n2 = 0;
  amqp_val_t e;
  CHECK(amqp_iter_next(&it, &e) && amqp_get_i64(&e, &n1) && n1 == 5);
  CHECK(amqp_iter_next(&it, &e) && amqp_get_i64(&e, &n2) && n2 == -2);
  unsigned char u[16];
  CHECK(amqp_map_get(&v, "k", &x) && amqp_get_uuid(&x, u) && !memcmp(u, "0123456789abcdef", 16));
  for (size_t cut = 0; cut < b.len; cut++) CHECK(amqp_decode(b.p, cut, &v) < 0); /* truncations fail cleanly */
  unsigned char g[16], r[16];
  guid_swap(g, (const unsigned char *)"\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\x10");
  CHECK(!memcmp(g, "\x04\x03\x02\x01\x06\x05\x08\x07\x09\x0a", 10));
  guid_swap(r, g);
  CHECK(!memcmp(r, "\x01\x02\x03\x04\x05\x06\x07\x08", 8));
  buf_free(&b);
}

/* Regression: a long run of 0x00 bytes used to recurse once per byte in
 * amqp_decode (each 0x00 read as "described, descriptor follows") and killed
 * the emulator with a stack overflow when a client sent a body of zeros. */
static void test_codec_zero_run(void)
{
  size_t n = 8u << 20;
  unsigned char *z = calloc(1, n);
  amqp_val_t v;
  CHECK(z != NULL);
  if (!z) return;
  CHECK(amqp_decode(z, n, &v) < 0);
  CHECK(amqp_decode(z, 2, &v) < 0);
  free(z);
}

int main(void)
{
  test_microsoft_sample();
  test_shipped_files();
  test_errors();
  test_durations();
  test_sas_vector();
  test_codec();
  test_codec_zero_run();
  if (g_failures) fprintf(stderr, "%d check(s) failed\n", g_failures);
  else printf("test_emu_config: all passed\n");
  return g_failures ? 1 : 0;
}
