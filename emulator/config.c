/*
 * config.c: Microsoft's emulator Config.json, loaded unchanged, plus our additions.
 *
 * Structure: UserConfig.Namespaces[0] with Queues[], Topics[] (each with
 * Subscriptions[] and their Rules[]) and every entity property of Microsoft's
 * schema, ISO-8601 durations; Logging is accepted and ignored. Our additions:
 * SharedAccessPolicies [{Name, Key, Rights: [Send|Listen|Manage]}] on the
 * namespace (default: RootManageSharedAccessKey / SAS_KEY_VALUE / all rights)
 * and on queues and topics. Subscriptions without Rules get $Default (true).
 *
 * Errors name the JSON path (UserConfig.Namespaces[0].Queues[1].Properties.
 * LockDuration) and the problem; the caller prefixes the file name. The file
 * is read whole, comments are blanked outside strings, then jansson parses it.
 */
#include "config.h"

/* JSON paths are built with snprintf into fixed buffers; a path longer than 1 KB is
 * truncated in the message, which is harmless, so the warning is silenced here. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wformat-truncation"
#endif

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(char *err, size_t n, const char *path, const char *fmt, ...)
{
  va_list ap;
  int k = snprintf(err, n, "%s: ", path);
  va_start(ap, fmt);
  if (k >= 0 && (size_t)k < n) vsnprintf(err + k, n - (size_t)k, fmt, ap);
  va_end(ap);
  return -1;
}

/* Blank out comments outside strings, keeping line structure for error positions. */
static void strip_comments(char *s)
{
  bool str = false;
  for (char *p = s; *p; p++) {
    if (str) {
      if (*p == '\\' && p[1]) p++;
      else if (*p == '"') str = false;
      continue;
    }
    if (*p == '"') {
      str = true;
    } else if (p[0] == '/' && p[1] == '/') {
      while (*p && *p != '\n') *p++ = ' ';
      if (!*p) return;
    } else if (p[0] == '/' && p[1] == '*') {
      *p++ = ' ';
      *p = ' ';
      while (p[1] && !(p[1] == '*' && p[2] == '/')) {
        p++;
        if (*p != '\n') *p = ' ';
      }
      if (!p[1]) return;
      p[1] = p[2] = ' ';
      p += 2;
    }
  }
}

json_t *emu_json_parse_commented(const char *text, char *err, size_t errlen)
{
  char *copy = strdup(text);
  if (!copy) abort();
  strip_comments(copy);
  json_error_t je;
  json_t *root = json_loads(copy, 0, &je);
  free(copy);
  if (!root) snprintf(err, errlen, "line %d, column %d: invalid JSON: %s", je.line, je.column, je.text);
  return root;
}

int64_t emu_parse_duration(const char *s)
{
  if (!s || (*s != 'P' && *s != 'p')) return -1;
  s++;
  bool time = false, any = false;
  double total = 0;
  while (*s) {
    if (*s == 'T' || *s == 't') {
      time = true;
      s++;
      continue;
    }
    char *end;
    double v = strtod(s, &end);
    if (end == s || v < 0) return -1;
    char u = (char)toupper((unsigned char)*end);
    double mul;
    if (!time && u == 'D') mul = 86400e3;
    else if (!time && u == 'W') mul = 7 * 86400e3;
    else if (time && u == 'H') mul = 3600e3;
    else if (time && u == 'M') mul = 60e3;
    else if (time && u == 'S') mul = 1e3;
    else return -1;
    total += v * mul;
    any = true;
    s = end + 1;
  }
  if (!any) return -1;
  if (total >= 9.2e18) return INT64_MAX;
  return (int64_t)total;
}

static bool name_ok(const char *n)
{
  size_t len = strlen(n);
  if (!len || len > 260) return false;
  if (!isalnum((unsigned char)n[0]) || !isalnum((unsigned char)n[len - 1])) return false;
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)n[i];
    if (!isalnum(c) && c != '_' && c != '-' && c != '.' && c != '/') return false;
  }
  return true;
}

static int get_name(json_t *o, const char *path, const char **out, char *err, size_t n)
{
  char p[1024];
  if (!json_is_object(o)) return fail(err, n, path, "must be an object");
  json_t *v = json_object_get(o, "Name");
  snprintf(p, sizeof p, "%s.Name", path);
  if (!json_is_string(v)) return fail(err, n, p, "is required and must be a string");
  if (!name_ok(json_string_value(v)))
    return fail(err, n, p, "'%s' is not a valid entity name (letters, digits, '.', '-', '_', '/'; starting and ending with a letter or digit)", json_string_value(v));
  *out = json_string_value(v);
  return 0;
}

static int prop_duration(json_t *v, const char *p, int64_t *out, char *err, size_t n)
{
  if (!json_is_string(v)) return fail(err, n, p, "must be an ISO-8601 duration string such as \"PT1M\"");
  int64_t ms = emu_parse_duration(json_string_value(v));
  if (ms <= 0) return fail(err, n, p, "'%s' is not a valid ISO-8601 duration (e.g. \"PT1M\", \"PT30S\", \"P1D\")", json_string_value(v));
  *out = ms;
  return 0;
}

static int prop_bool(json_t *v, const char *p, bool *out, char *err, size_t n)
{
  if (!json_is_boolean(v)) return fail(err, n, p, "must be true or false");
  *out = json_is_true(v);
  return 0;
}

static int prop_string(json_t *v, const char *p, char **out, char *err, size_t n)
{
  if (!json_is_string(v)) return fail(err, n, p, "must be a string");
  free(*out);
  *out = *json_string_value(v) ? strdup(json_string_value(v)) : NULL;
  return 0;
}

/* Parse a Properties object into props. allowed: which keys the entity kind accepts. */
static int parse_props(json_t *o, const char *path, emu_props_t *pr, const char *const *allowed,
                       char *err, size_t n)
{
  if (!o) return 0;
  if (!json_is_object(o)) return fail(err, n, path, "must be an object");
  const char *key;
  json_t *v;
  json_object_foreach(o, key, v) {
    char p[1024];
    snprintf(p, sizeof p, "%s.%s", path, key);
    bool ok = false;
    for (int i = 0; allowed[i]; i++) ok = ok || strcmp(allowed[i], key) == 0;
    if (!ok) return fail(err, n, p, "unknown property");
    int rc = 0;
    if (!strcmp(key, "LockDuration")) rc = prop_duration(v, p, &pr->lock_ms, err, n);
    else if (!strcmp(key, "DefaultMessageTimeToLive")) rc = prop_duration(v, p, &pr->default_ttl_ms, err, n);
    else if (!strcmp(key, "DuplicateDetectionHistoryTimeWindow")) rc = prop_duration(v, p, &pr->dup_window_ms, err, n);
    else if (!strcmp(key, "DeadLetteringOnMessageExpiration")) rc = prop_bool(v, p, &pr->dl_on_expiration, err, n);
    else if (!strcmp(key, "RequiresDuplicateDetection")) rc = prop_bool(v, p, &pr->dup_detect, err, n);
    else if (!strcmp(key, "RequiresSession")) rc = prop_bool(v, p, &pr->requires_session, err, n);
    else if (!strcmp(key, "ForwardTo")) rc = prop_string(v, p, &pr->forward_to, err, n);
    else if (!strcmp(key, "ForwardDeadLetteredMessagesTo")) rc = prop_string(v, p, &pr->forward_dlq_to, err, n);
    else if (!strcmp(key, "MaxDeliveryCount")) {
      if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 2000000000)
        return fail(err, n, p, "must be an integer >= 1");
      pr->max_delivery = (int)json_integer_value(v);
    }
    if (rc) return rc;
  }
  return 0;
}

static const char *const QUEUE_KEYS[] = {
  "DeadLetteringOnMessageExpiration", "DefaultMessageTimeToLive", "DuplicateDetectionHistoryTimeWindow",
  "ForwardDeadLetteredMessagesTo", "ForwardTo", "LockDuration", "MaxDeliveryCount",
  "RequiresDuplicateDetection", "RequiresSession", NULL};
static const char *const TOPIC_KEYS[] = {
  "DefaultMessageTimeToLive", "DuplicateDetectionHistoryTimeWindow", "RequiresDuplicateDetection", NULL};
static const char *const SUB_KEYS[] = {
  "DeadLetteringOnMessageExpiration", "DefaultMessageTimeToLive", "LockDuration", "MaxDeliveryCount",
  "ForwardDeadLetteredMessagesTo", "ForwardTo", "RequiresSession", NULL};

static int parse_policies(json_t *a, const char *path, emu_policy_t **out, char *err, size_t n)
{
  if (!a) return 0;
  if (!json_is_array(a)) return fail(err, n, path, "must be an array");
  size_t i;
  json_t *it;
  json_array_foreach(a, i, it) {
    char p[1024];
    snprintf(p, sizeof p, "%s[%zu]", path, i);
    json_t *name = json_object_get(it, "Name"), *key = json_object_get(it, "Key"), *rights = json_object_get(it, "Rights");
    if (!json_is_object(it)) return fail(err, n, p, "must be an object");
    if (!json_is_string(name)) return fail(err, n, p, "needs a string Name");
    if (!json_is_string(key)) return fail(err, n, p, "needs a string Key");
    if (!json_is_array(rights)) return fail(err, n, p, "needs Rights, an array of \"Send\", \"Listen\", \"Manage\"");
    unsigned r = 0;
    size_t j;
    json_t *rv;
    json_array_foreach(rights, j, rv) {
      const char *s = json_string_value(rv);
      if (s && !strcmp(s, "Send")) r |= RIGHT_SEND;
      else if (s && !strcmp(s, "Listen")) r |= RIGHT_LISTEN;
      else if (s && !strcmp(s, "Manage")) r |= RIGHT_MANAGE | RIGHT_SEND | RIGHT_LISTEN;
      else return fail(err, n, p, "Rights[%zu] must be \"Send\", \"Listen\" or \"Manage\"", j);
    }
    emu_policy_t *pol = calloc(1, sizeof *pol);
    if (!pol) abort();
    pol->name = strdup(json_string_value(name));
    pol->key = strdup(json_string_value(key));
    pol->rights = r;
    pol->next = *out;
    *out = pol;
  }
  return 0;
}

static void free_policies(emu_policy_t *p)
{
  while (p) {
    emu_policy_t *n = p->next;
    free(p->name);
    free(p->key);
    free(p);
    p = n;
  }
}

int emu_config_add_queue(emu_broker_t *b, json_t *q, const char *path, char *err, size_t n)
{
  const char *name;
  char p[1024];
  emu_props_t pr;
  emu_policy_t *pol = NULL;
  if (get_name(q, path, &name, err, n)) return -1;
  if (emu_entity_find(b, name)) return fail(err, n, path, "an entity named '%s' already exists", name);
  emu_props_default(&pr);
  snprintf(p, sizeof p, "%s.Properties", path);
  if (parse_props(json_object_get(q, "Properties"), p, &pr, QUEUE_KEYS, err, n)) goto bad;
  snprintf(p, sizeof p, "%s.SharedAccessPolicies", path);
  if (parse_policies(json_object_get(q, "SharedAccessPolicies"), p, &pol, err, n)) goto bad;
  emu_entity_t *e = emu_entity_add(b, ENT_QUEUE, name, NULL, &pr);
  e->policies = pol;
  emu_props_free(&pr);
  return 0;
bad:
  emu_props_free(&pr);
  free_policies(pol);
  return -1;
}

/* ---------------------------------------------------------------- rules */

static const char *const CORR_KEYS[8] = {"CorrelationId", "MessageId", "To", "ReplyTo", "Label",
                                         "SessionId", "ReplyToSessionId", "ContentType"};

static int corr_value(json_t *v, emu_buf_t *out)
{
  if (json_is_string(v)) enc_str(out, json_string_value(v));
  else if (json_is_integer(v)) enc_long(out, json_integer_value(v));
  else if (json_is_boolean(v)) enc_bool(out, json_is_true(v));
  else if (json_is_real(v)) {
    double d = json_real_value(v);
    uint64_t u;
    memcpy(&u, &d, 8);
    buf_u8(out, AMQP_DOUBLE);
    buf_be64(out, u);
  } else return -1;
  return 0;
}

static int parse_corr(emu_rule_t *r, json_t *cf, const char *path, char *err, size_t n)
{
  if (!json_is_object(cf)) return fail(err, n, path, "must be an object");
  const char *key;
  json_t *v;
  json_object_foreach(cf, key, v) {
    char p[1024];
    snprintf(p, sizeof p, "%s.%s", path, key);
    if (!strcmp(key, "Properties")) {
      if (!json_is_object(v)) return fail(err, n, p, "must be an object");
      const char *pk;
      json_t *pv;
      json_object_foreach(v, pk, pv) {
        emu_corr_prop_t *cp = calloc(1, sizeof *cp);
        if (!cp) abort();
        cp->name = strdup(pk);
        cp->next = r->corr_props;
        r->corr_props = cp;
        if (corr_value(pv, &cp->value)) return fail(err, n, p, "property '%s' must be a string, number or boolean", pk);
      }
      continue;
    }
    int idx = -1;
    for (int i = 0; i < 8; i++)
      if (!strcmp(CORR_KEYS[i], key)) idx = i;
    if (idx < 0) return fail(err, n, p, "unknown correlation filter field");
    if (!json_is_string(v)) return fail(err, n, p, "must be a string");
    free(r->corr[idx]);
    r->corr[idx] = strdup(json_string_value(v));
  }
  return 0;
}

static int parse_sql_rule(emu_rule_t *r, json_t *props, const char *path, char *err, size_t n)
{
  char p[1024], e[256];
  json_t *sf = json_object_get(props, "SqlFilter");
  json_t *ex = json_object_get(sf, "SqlExpression");
  snprintf(p, sizeof p, "%s.SqlFilter.SqlExpression", path);
  if (!json_is_string(ex)) return fail(err, n, p, "is required for FilterType Sql and must be a string");
  r->sql = strdup(json_string_value(ex));
  r->expr = sql_parse_filter(r->sql, e, sizeof e);
  if (!r->expr) return fail(err, n, p, "invalid SQL filter: %s", e);
  return 0;
}

emu_rule_t *emu_rule_from_json(json_t *j, const char *path, char *err, size_t n)
{
  char p[1024], e[256];
  emu_rule_t *r = calloc(1, sizeof *r);
  if (!r) abort();
  json_t *name = json_object_get(j, "Name"), *props = json_object_get(j, "Properties");
  snprintf(p, sizeof p, "%s.Name", path);
  if (!json_is_string(name)) { fail(err, n, p, "is required and must be a string"); goto bad; }
  r->name = strdup(json_string_value(name));
  snprintf(p, sizeof p, "%s.Properties", path);
  if (!json_is_object(props)) { fail(err, n, p, "is required and must be an object"); goto bad; }
  const char *ft = json_string_value(json_object_get(props, "FilterType"));
  snprintf(p, sizeof p, "%s.Properties.FilterType", path);
  if (!ft) { fail(err, n, p, "is required: \"Correlation\" or \"Sql\""); goto bad; }
  snprintf(p, sizeof p, "%s.Properties", path);
  if (!strcmp(ft, "Correlation")) {
    r->kind = FILTER_CORRELATION;
    char cp[560];
    snprintf(cp, sizeof cp, "%s.CorrelationFilter", p);
    if (parse_corr(r, json_object_get(props, "CorrelationFilter"), cp, err, n)) goto bad;
  } else if (!strcmp(ft, "Sql")) {
    r->kind = FILTER_SQL;
    if (parse_sql_rule(r, props, p, err, n)) goto bad;
  } else if (!strcmp(ft, "True") || !strcmp(ft, "TrueFilter")) {
    r->kind = FILTER_TRUE;
  } else if (!strcmp(ft, "False") || !strcmp(ft, "FalseFilter")) {
    r->kind = FILTER_FALSE;
  } else {
    snprintf(p, sizeof p, "%s.Properties.FilterType", path);
    fail(err, n, p, "'%s' is not \"Correlation\" or \"Sql\"", ft);
    goto bad;
  }
  json_t *act = json_object_get(json_object_get(props, "Action"), "SqlExpression");
  if (act) {
    snprintf(p, sizeof p, "%s.Properties.Action.SqlExpression", path);
    if (!json_is_string(act)) { fail(err, n, p, "must be a string"); goto bad; }
    r->action_sql = strdup(json_string_value(act));
    r->action = sql_parse_action(r->action_sql, e, sizeof e);
    if (!r->action) { fail(err, n, p, "invalid SQL action: %s", e); goto bad; }
  }
  return r;
bad:
  emu_rule_free(r);
  return NULL;
}

static emu_rule_t *default_rule(void)
{
  emu_rule_t *r = calloc(1, sizeof *r);
  if (!r) abort();
  r->name = strdup("$Default");
  r->kind = FILTER_TRUE;
  return r;
}

int emu_config_add_subscription(emu_broker_t *b, emu_entity_t *t, json_t *s, const char *path,
                                char *err, size_t n)
{
  const char *name;
  char p[1024], full[1024];
  emu_props_t pr;
  if (get_name(s, path, &name, err, n)) return -1;
  snprintf(full, sizeof full, "%s/Subscriptions/%s", t->name, name);
  if (emu_entity_find(b, full)) return fail(err, n, path, "subscription '%s' already exists", name);
  emu_props_default(&pr);
  snprintf(p, sizeof p, "%s.Properties", path);
  if (parse_props(json_object_get(s, "Properties"), p, &pr, SUB_KEYS, err, n)) {
    emu_props_free(&pr);
    return -1;
  }
  emu_rule_t *rules = NULL, **tail = &rules;
  json_t *ra = json_object_get(s, "Rules");
  snprintf(p, sizeof p, "%s.Rules", path);
  if (ra && !json_is_array(ra)) {
    emu_props_free(&pr);
    return fail(err, n, p, "must be an array");
  }
  size_t i;
  json_t *it;
  json_array_foreach(ra, i, it) {
    char rp[600];
    snprintf(rp, sizeof rp, "%s.Rules[%zu]", path, i);
    emu_rule_t *r = emu_rule_from_json(it, rp, err, n);
    if (!r) {
      while (rules) { emu_rule_t *x = rules->next; emu_rule_free(rules); rules = x; }
      emu_props_free(&pr);
      return -1;
    }
    *tail = r;
    tail = &r->next;
  }
  if (!rules) rules = default_rule();
  emu_entity_t *e = emu_entity_add(b, ENT_SUBSCRIPTION, full, t, &pr);
  e->rules = rules;
  emu_props_free(&pr);
  return 0;
}

int emu_config_add_topic(emu_broker_t *b, json_t *t, const char *path, char *err, size_t n)
{
  const char *name;
  char p[1024];
  emu_props_t pr;
  emu_policy_t *pol = NULL;
  if (get_name(t, path, &name, err, n)) return -1;
  if (emu_entity_find(b, name)) return fail(err, n, path, "an entity named '%s' already exists", name);
  emu_props_default(&pr);
  snprintf(p, sizeof p, "%s.Properties", path);
  if (parse_props(json_object_get(t, "Properties"), p, &pr, TOPIC_KEYS, err, n)) goto bad;
  snprintf(p, sizeof p, "%s.SharedAccessPolicies", path);
  if (parse_policies(json_object_get(t, "SharedAccessPolicies"), p, &pol, err, n)) goto bad;
  json_t *subs = json_object_get(t, "Subscriptions");
  snprintf(p, sizeof p, "%s.Subscriptions", path);
  if (subs && !json_is_array(subs)) { fail(err, n, p, "must be an array"); goto bad; }
  emu_entity_t *e = emu_entity_add(b, ENT_TOPIC, name, NULL, &pr);
  e->policies = pol;
  pol = NULL;
  emu_props_free(&pr);
  size_t i;
  json_t *it;
  json_array_foreach(subs, i, it) {
    char sp[600];
    snprintf(sp, sizeof sp, "%s.Subscriptions[%zu]", path, i);
    if (emu_config_add_subscription(b, e, it, sp, err, n)) return -1;
  }
  return 0;
bad:
  emu_props_free(&pr);
  free_policies(pol);
  return -1;
}

static int load_namespace(emu_broker_t *b, json_t *ns, const char *path, char *err, size_t n)
{
  char p[1024];
  if (!json_is_object(ns)) return fail(err, n, path, "must be an object");
  json_t *name = json_object_get(ns, "Name");
  snprintf(p, sizeof p, "%s.Name", path);
  if (name && !json_is_string(name)) return fail(err, n, p, "must be a string");
  b->ns_name = strdup(name ? json_string_value(name) : "sbemulatorns");
  snprintf(p, sizeof p, "%s.SharedAccessPolicies", path);
  if (parse_policies(json_object_get(ns, "SharedAccessPolicies"), p, &b->policies, err, n)) return -1;
  if (!json_object_get(ns, "SharedAccessPolicies")) {
    emu_policy_t *pol = calloc(1, sizeof *pol);
    if (!pol) abort();
    pol->name = strdup("RootManageSharedAccessKey");
    pol->key = strdup("SAS_KEY_VALUE");
    pol->rights = RIGHT_SEND | RIGHT_LISTEN | RIGHT_MANAGE;
    b->policies = pol;
  }
  const char *lists[2] = {"Queues", "Topics"};
  for (int k = 0; k < 2; k++) {
    json_t *a = json_object_get(ns, lists[k]);
    snprintf(p, sizeof p, "%s.%s", path, lists[k]);
    if (a && !json_is_array(a)) return fail(err, n, p, "must be an array");
    size_t i;
    json_t *it;
    json_array_foreach(a, i, it) {
      char ep[600];
      snprintf(ep, sizeof ep, "%s[%zu]", p, i);
      int rc = k == 0 ? emu_config_add_queue(b, it, ep, err, n) : emu_config_add_topic(b, it, ep, err, n);
      if (rc) return -1;
    }
  }
  return 0;
}

static char *read_file(const char *file, char *err, size_t n)
{
  FILE *f = fopen(file, "rb");
  if (!f) {
    snprintf(err, n, "cannot open the file");
    return NULL;
  }
  emu_buf_t b = {0};
  char tmp[65536];
  size_t k;
  while ((k = fread(tmp, 1, sizeof tmp, f)) > 0) buf_put(&b, tmp, k);
  fclose(f);
  buf_u8(&b, 0);
  return (char *)b.p;
}

int emu_config_load(emu_broker_t *b, const char *file, char *err, size_t n)
{
  char inner[1024];
  int rc = -1;
  char *text = read_file(file, inner, sizeof inner);
  json_t *root = text ? emu_json_parse_commented(text, inner, sizeof inner) : NULL;
  free(text);
  if (!root) goto out;
  json_t *uc = json_object_get(root, "UserConfig");
  json_t *nss = json_object_get(uc, "Namespaces");
  if (!json_is_object(uc)) fail(inner, sizeof inner, "UserConfig", "is required and must be an object");
  else if (!json_is_array(nss) || json_array_size(nss) == 0)
    fail(inner, sizeof inner, "UserConfig.Namespaces", "is required and must be a non-empty array");
  else if (json_array_size(nss) > 1)
    fail(inner, sizeof inner, "UserConfig.Namespaces", "only one namespace is supported");
  else rc = load_namespace(b, json_array_get(nss, 0), "UserConfig.Namespaces[0]", inner, sizeof inner);
  json_decref(root);
out:
  if (rc) snprintf(err, n, "%s: %s", file, inner);
  return rc;
}
