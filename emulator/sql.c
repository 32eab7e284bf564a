/*
 * sql.c: Service Bus SQL filters and rule actions (a SQL-92 subset).
 *
 * A recursive-descent parser builds a small tree; the evaluator walks it over
 * one message with SQL's three-valued logic (a comparison involving NULL is
 * unknown, and a filter matches only when the result is true). Supported:
 * literals (integers, decimals, 'strings' with '' escapes, TRUE, FALSE,
 * NULL); properties (bare or user.name = application property, sys.Name =
 * system property, [bracketed names]); = <> != < <= > >=; + - * / % and
 * unary minus; AND OR NOT; [NOT] IN (...); [NOT] LIKE with % and _ and an
 * optional ESCAPE; IS [NOT] NULL; EXISTS(name). Actions: statements
 * separated by ';': SET name = expr, REMOVE name. Keywords are
 * case-insensitive; string comparison is case-sensitive, as in the service.
 *
 * The file is: values and tokens, the parser, the evaluator, actions.
 */
#include "emu.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef enum { V_NULL, V_BOOL, V_INT, V_DBL, V_STR } vtype_t;

/* A runtime value; strings are owned by the value when own is set. */
typedef struct sval {
  vtype_t t;      /* type */
  bool b;         /* V_BOOL */
  int64_t i;      /* V_INT */
  double d;       /* V_DBL */
  char *s;        /* V_STR */
  bool own;       /* s must be freed */
} sval_t;

typedef enum {
  N_LIT, N_PROP, N_AND, N_OR, N_NOT, N_CMP, N_ARITH, N_NEG, N_IN, N_LIKE, N_ISNULL, N_EXISTS
} ntype_t;

/* A node of the expression tree. */
struct sql_expr {
  ntype_t t;             /* kind */
  int op;                /* comparison or arithmetic operator (a token char or code) */
  bool neg;              /* NOT IN / NOT LIKE / IS NOT NULL */
  bool sys;              /* N_PROP: system property */
  char *name;            /* N_PROP: property name */
  sval_t lit;            /* N_LIT: the literal */
  char esc;              /* N_LIKE: escape character or 0 */
  struct sql_expr *a, *b; /* operands */
  struct sql_expr **list; /* N_IN: candidates */
  size_t nlist;          /* N_IN: count */
};

/* One SET or REMOVE statement. */
typedef struct sql_stmt {
  bool remove;           /* REMOVE instead of SET */
  bool sys;              /* target is a system property */
  char *name;            /* target name */
  sql_expr_t *value;     /* SET value */
  struct sql_stmt *next; /* next statement */
} sql_stmt_t;

struct sql_action {
  sql_stmt_t *stmts;     /* statements in order */
};

/* ---------------------------------------------------------------- lexer */

enum { T_EOF, T_NUM, T_STR, T_ID, T_OP, T_ERR };
enum { OP_NE = 256, OP_LE, OP_GE };

typedef struct lex {
  const char *p;      /* cursor */
  int tok;            /* current token kind */
  int op;             /* T_OP: operator */
  char text[1024];    /* T_STR/T_ID/T_NUM text */
  bool is_dbl;        /* T_NUM with a fraction or exponent */
  char *err;          /* error buffer */
  size_t errlen;      /* its size */
  bool failed;        /* an error was recorded */
} lex_t;

static void lx_err(lex_t *l, const char *msg)
{
  if (!l->failed) snprintf(l->err, l->errlen, "%s near '%.20s'", msg, l->p);
  l->failed = true;
}

static void lx_next(lex_t *l)
{
  while (isspace((unsigned char)*l->p)) l->p++;
  const char *p = l->p;
  size_t n = 0;
  if (!*p) { l->tok = T_EOF; return; }
  if (isdigit((unsigned char)*p) || (*p == '.' && isdigit((unsigned char)p[1]))) {
    l->is_dbl = false;
    while (isdigit((unsigned char)*p) || *p == '.' || *p == 'e' || *p == 'E' ||
           ((*p == '+' || *p == '-') && (p[-1] == 'e' || p[-1] == 'E'))) {
      if (*p == '.' || *p == 'e' || *p == 'E') l->is_dbl = true;
      if (n < sizeof l->text - 1) l->text[n++] = *p;
      p++;
    }
    l->text[n] = 0;
    l->tok = T_NUM;
  } else if (*p == '\'') {
    p++;
    for (;;) {
      if (!*p) { l->tok = T_ERR; lx_err(l, "unterminated string"); return; }
      if (*p == '\'' && p[1] == '\'') { p++; }
      else if (*p == '\'') break;
      if (n < sizeof l->text - 1) l->text[n++] = *p;
      p++;
    }
    p++;
    l->text[n] = 0;
    l->tok = T_STR;
  } else if (*p == '[') {
    p++;
    while (*p && *p != ']') {
      if (n < sizeof l->text - 1) l->text[n++] = *p;
      p++;
    }
    if (*p != ']') { l->tok = T_ERR; lx_err(l, "unterminated [name]"); return; }
    p++;
    l->text[n] = 0;
    l->tok = T_ID;
  } else if (isalpha((unsigned char)*p) || *p == '_' || *p == '$' || *p == '@') {
    while (isalnum((unsigned char)*p) || *p == '_' || *p == '.' || *p == '$' || *p == '@' || *p == '-') {
      if (*p == '-' && !isalnum((unsigned char)p[1])) break;
      if (n < sizeof l->text - 1) l->text[n++] = *p;
      p++;
    }
    l->text[n] = 0;
    l->tok = T_ID;
  } else {
    l->tok = T_OP;
    l->op = *p++;
    if (l->op == '<' && *p == '>') { l->op = OP_NE; p++; }
    else if (l->op == '!' && *p == '=') { l->op = OP_NE; p++; }
    else if (l->op == '<' && *p == '=') { l->op = OP_LE; p++; }
    else if (l->op == '>' && *p == '=') { l->op = OP_GE; p++; }
    else if (!strchr("=<>+-*/%(),;", l->op)) { l->tok = T_ERR; l->p = p - 1; lx_err(l, "unexpected character"); return; }
  }
  l->p = p;
}

static bool is_kw(const lex_t *l, const char *kw) { return l->tok == T_ID && strcasecmp(l->text, kw) == 0; }
static bool is_op(const lex_t *l, int op) { return l->tok == T_OP && l->op == op; }

/* ---------------------------------------------------------------- parser */

static sql_expr_t *node(ntype_t t)
{
  sql_expr_t *e = calloc(1, sizeof *e);
  if (!e) abort();
  e->t = t;
  return e;
}

void sql_expr_free(sql_expr_t *e)
{
  if (!e) return;
  sql_expr_free(e->a);
  sql_expr_free(e->b);
  for (size_t i = 0; i < e->nlist; i++) sql_expr_free(e->list[i]);
  free(e->list);
  free(e->name);
  if (e->lit.t == V_STR) free(e->lit.s);
  free(e);
}

static sql_expr_t *p_or(lex_t *l);

/* Property names: "sys.X" and "user.X" pick the scope; bare names are user properties. */
static sql_expr_t *prop_node(const char *text)
{
  sql_expr_t *e = node(N_PROP);
  if (strncasecmp(text, "sys.", 4) == 0) {
    e->sys = true;
    e->name = strdup(text + 4);
  } else if (strncasecmp(text, "user.", 5) == 0) {
    e->name = strdup(text + 5);
  } else {
    e->name = strdup(text);
  }
  return e;
}

static sql_expr_t *p_primary(lex_t *l)
{
  sql_expr_t *e;
  if (l->failed) return NULL;
  if (l->tok == T_NUM) {
    e = node(N_LIT);
    if (l->is_dbl) { e->lit.t = V_DBL; e->lit.d = strtod(l->text, NULL); }
    else { e->lit.t = V_INT; e->lit.i = strtoll(l->text, NULL, 10); }
    lx_next(l);
    return e;
  }
  if (l->tok == T_STR) {
    e = node(N_LIT);
    e->lit.t = V_STR;
    e->lit.s = strdup(l->text);
    lx_next(l);
    return e;
  }
  if (is_op(l, '(')) {
    lx_next(l);
    e = p_or(l);
    if (!is_op(l, ')')) { lx_err(l, "expected ')'"); sql_expr_free(e); return NULL; }
    lx_next(l);
    return e;
  }
  if (is_kw(l, "TRUE") || is_kw(l, "FALSE")) {
    e = node(N_LIT);
    e->lit.t = V_BOOL;
    e->lit.b = is_kw(l, "TRUE");
    lx_next(l);
    return e;
  }
  if (is_kw(l, "NULL")) {
    lx_next(l);
    return node(N_LIT);
  }
  if (is_kw(l, "EXISTS")) {
    lx_next(l);
    if (!is_op(l, '(')) { lx_err(l, "expected '(' after EXISTS"); return NULL; }
    lx_next(l);
    if (l->tok != T_ID) { lx_err(l, "expected a property name"); return NULL; }
    e = node(N_EXISTS);
    e->a = prop_node(l->text);
    lx_next(l);
    if (!is_op(l, ')')) { lx_err(l, "expected ')'"); sql_expr_free(e); return NULL; }
    lx_next(l);
    return e;
  }
  if (l->tok == T_ID) {
    static const char *reserved[] = {"AND", "OR", "NOT", "IN", "LIKE", "IS", "ESCAPE", "SET", "REMOVE", NULL};
    for (int i = 0; reserved[i]; i++)
      if (is_kw(l, reserved[i])) { lx_err(l, "unexpected keyword"); return NULL; }
    e = prop_node(l->text);
    lx_next(l);
    return e;
  }
  lx_err(l, l->tok == T_EOF ? "unexpected end of expression" : "unexpected token");
  return NULL;
}

static sql_expr_t *p_unary(lex_t *l)
{
  if (is_op(l, '-') || is_op(l, '+')) {
    bool neg = is_op(l, '-');
    lx_next(l);
    sql_expr_t *a = p_unary(l);
    if (!a || !neg) return a;
    sql_expr_t *e = node(N_NEG);
    e->a = a;
    return e;
  }
  return p_primary(l);
}

static sql_expr_t *bin(ntype_t t, int op, sql_expr_t *a, sql_expr_t *b)
{
  if (!a || !b) {
    sql_expr_free(a);
    sql_expr_free(b);
    return NULL;
  }
  sql_expr_t *e = node(t);
  e->op = op;
  e->a = a;
  e->b = b;
  return e;
}

static sql_expr_t *p_mul(lex_t *l)
{
  sql_expr_t *e = p_unary(l);
  while (e && (is_op(l, '*') || is_op(l, '/') || is_op(l, '%'))) {
    int op = l->op;
    lx_next(l);
    e = bin(N_ARITH, op, e, p_unary(l));
  }
  return e;
}

static sql_expr_t *p_add(lex_t *l)
{
  sql_expr_t *e = p_mul(l);
  while (e && (is_op(l, '+') || is_op(l, '-'))) {
    int op = l->op;
    lx_next(l);
    e = bin(N_ARITH, op, e, p_mul(l));
  }
  return e;
}

static sql_expr_t *p_in(lex_t *l, sql_expr_t *a, bool neg)
{
  sql_expr_t *e = node(N_IN);
  e->a = a;
  e->neg = neg;
  if (!is_op(l, '(')) { lx_err(l, "expected '(' after IN"); sql_expr_free(e); return NULL; }
  do {
    lx_next(l);
    sql_expr_t *x = p_add(l);
    if (!x) { sql_expr_free(e); return NULL; }
    e->list = realloc(e->list, (e->nlist + 1) * sizeof *e->list);
    if (!e->list) abort();
    e->list[e->nlist++] = x;
  } while (is_op(l, ','));
  if (!is_op(l, ')')) { lx_err(l, "expected ')'"); sql_expr_free(e); return NULL; }
  lx_next(l);
  return e;
}

static sql_expr_t *p_like(lex_t *l, sql_expr_t *a, bool neg)
{
  sql_expr_t *e = node(N_LIKE);
  e->a = a;
  e->neg = neg;
  if (l->tok != T_STR) { lx_err(l, "LIKE needs a string pattern"); sql_expr_free(e); return NULL; }
  e->b = p_primary(l);
  if (is_kw(l, "ESCAPE")) {
    lx_next(l);
    if (l->tok != T_STR || strlen(l->text) != 1) { lx_err(l, "ESCAPE needs a one-character string"); sql_expr_free(e); return NULL; }
    e->esc = l->text[0];
    lx_next(l);
  }
  return e;
}

static sql_expr_t *p_pred(lex_t *l)
{
  sql_expr_t *a = p_add(l);
  if (!a) return NULL;
  if (l->tok == T_OP && (l->op == '=' || l->op == '<' || l->op == '>' || l->op == OP_NE || l->op == OP_LE || l->op == OP_GE)) {
    int op = l->op;
    lx_next(l);
    return bin(N_CMP, op, a, p_add(l));
  }
  if (is_kw(l, "IS")) {
    lx_next(l);
    bool neg = false;
    if (is_kw(l, "NOT")) { neg = true; lx_next(l); }
    if (!is_kw(l, "NULL")) { lx_err(l, "expected NULL after IS"); sql_expr_free(a); return NULL; }
    lx_next(l);
    sql_expr_t *e = node(N_ISNULL);
    e->a = a;
    e->neg = neg;
    return e;
  }
  bool neg = false;
  if (is_kw(l, "NOT")) { neg = true; lx_next(l); }
  if (is_kw(l, "IN")) { lx_next(l); return p_in(l, a, neg); }
  if (is_kw(l, "LIKE")) { lx_next(l); return p_like(l, a, neg); }
  if (neg) { lx_err(l, "expected IN or LIKE after NOT"); sql_expr_free(a); return NULL; }
  return a;
}

static sql_expr_t *p_not(lex_t *l)
{
  if (is_kw(l, "NOT")) {
    lx_next(l);
    sql_expr_t *a = p_not(l);
    if (!a) return NULL;
    sql_expr_t *e = node(N_NOT);
    e->a = a;
    return e;
  }
  return p_pred(l);
}

static sql_expr_t *p_and(lex_t *l)
{
  sql_expr_t *e = p_not(l);
  while (e && is_kw(l, "AND")) {
    lx_next(l);
    e = bin(N_AND, 0, e, p_not(l));
  }
  return e;
}

static sql_expr_t *p_or(lex_t *l)
{
  sql_expr_t *e = p_and(l);
  while (e && is_kw(l, "OR")) {
    lx_next(l);
    e = bin(N_OR, 0, e, p_and(l));
  }
  return e;
}

sql_expr_t *sql_parse_filter(const char *text, char *err, size_t errlen)
{
  lex_t l = {.p = text, .err = err, .errlen = errlen};
  lx_next(&l);
  sql_expr_t *e = p_or(&l);
  if (e && l.tok != T_EOF) lx_err(&l, "unexpected text after the expression");
  if (l.failed) {
    sql_expr_free(e);
    return NULL;
  }
  return e;
}

/* ---------------------------------------------------------------- evaluator */

static void sv_free(sval_t *v)
{
  if (v->t == V_STR && v->own) free(v->s);
  v->t = V_NULL;
}

static sval_t from_amqp(const amqp_val_t *a)
{
  sval_t v = {0};
  const char *s;
  size_t n;
  int64_t i;
  bool b;
  if (amqp_get_str(a, &s, &n)) {
    v.t = V_STR;
    v.s = malloc(n + 1);
    if (!v.s) abort();
    memcpy(v.s, s, n);
    v.s[n] = 0;
    v.own = true;
  } else if (a->code != AMQP_TIMESTAMP && amqp_get_i64(a, &i)) {
    v.t = V_INT;
    v.i = i;
  } else if (a->code == AMQP_TIMESTAMP && amqp_get_i64(a, &i)) {
    v.t = V_INT;
    v.i = i;
  } else if (amqp_get_bool(a, &b)) {
    v.t = V_BOOL;
    v.b = b;
  } else if (a->code == AMQP_DOUBLE || a->code == AMQP_FLOAT) {
    v.t = V_DBL;
    if (a->code == AMQP_DOUBLE) {
      uint64_t u = 0;
      for (int k = 0; k < 8; k++) u = (u << 8) | a->data[k];
      memcpy(&v.d, &u, 8);
    } else {
      uint32_t u = 0;
      for (int k = 0; k < 4; k++) u = (u << 8) | a->data[k];
      float f;
      memcpy(&f, &u, 4);
      v.d = f;
    }
  } else if (a->code == AMQP_UUID) {
    char t[37];
    uuid_format(t, a->data);
    v.t = V_STR;
    v.s = strdup(t);
    v.own = true;
  }
  return v;
}

/* System property name -> properties field index, or -1. */
static int sys_field(const char *name)
{
  static const struct { const char *n; int f; } map[] = {
    {"MessageId", 0}, {"To", 2}, {"Label", 3}, {"Subject", 3}, {"ReplyTo", 4}, {"CorrelationId", 5},
    {"ContentType", 6}, {"SessionId", 10}, {"ReplyToSessionId", 12}, {NULL, 0}};
  for (int i = 0; map[i].n; i++)
    if (strcasecmp(map[i].n, name) == 0) return map[i].f;
  return -1;
}

static sval_t get_prop(const sql_expr_t *e, const emu_msg_t *m)
{
  sval_t v = {0};
  amqp_val_t a;
  if (!e->sys) {
    if (msg_app_prop(m, e->name, &a)) v = from_amqp(&a);
    return v;
  }
  int f = sys_field(e->name);
  if (f >= 0) {
    if (msg_prop(m, f, &a)) v = from_amqp(&a);
    return v;
  }
  if (!strcasecmp(e->name, "DeliveryCount")) { v.t = V_INT; v.i = m->delivery_count; }
  else if (!strcasecmp(e->name, "SequenceNumber")) { v.t = V_INT; v.i = m->seq; }
  else if (!strcasecmp(e->name, "TimeToLive")) { if (m->ttl_ms) { v.t = V_INT; v.i = m->ttl_ms; } }
  else if (!strcasecmp(e->name, "ScheduledEnqueueTimeUtc")) { if (m->scheduled_ms) { v.t = V_INT; v.i = m->scheduled_ms; } }
  return v;
}

static sval_t eval(const sql_expr_t *e, const emu_msg_t *m);

static bool numeric(const sval_t *v) { return v->t == V_INT || v->t == V_DBL; }
static double as_dbl(const sval_t *v) { return v->t == V_INT ? (double)v->i : v->d; }

/* -2: incomparable; else -1/0/1. */
static int compare(const sval_t *a, const sval_t *b)
{
  if (a->t == V_STR && b->t == V_STR) {
    int c = strcmp(a->s, b->s);
    return c < 0 ? -1 : c > 0;
  }
  if (a->t == V_INT && b->t == V_INT) return a->i < b->i ? -1 : a->i > b->i;
  if (numeric(a) && numeric(b)) {
    double x = as_dbl(a), y = as_dbl(b);
    return x < y ? -1 : x > y;
  }
  if (a->t == V_BOOL && b->t == V_BOOL) return a->b == b->b ? 0 : (a->b ? 1 : -1);
  return -2;
}

static sval_t vbool(bool b)
{
  sval_t v = {.t = V_BOOL, .b = b};
  return v;
}

static sval_t eval_cmp(const sql_expr_t *e, const emu_msg_t *m)
{
  sval_t a = eval(e->a, m), b = eval(e->b, m), r = {0};
  if (a.t != V_NULL && b.t != V_NULL) {
    int c = compare(&a, &b);
    if (c == -2) r = vbool(false);
    else if (e->op == '=') r = vbool(c == 0);
    else if (e->op == OP_NE) r = vbool(c != 0);
    else if (e->op == '<') r = vbool(c < 0);
    else if (e->op == '>') r = vbool(c > 0);
    else if (e->op == OP_LE) r = vbool(c <= 0);
    else r = vbool(c >= 0);
  }
  sv_free(&a);
  sv_free(&b);
  return r;
}

/* Integer arithmetic without undefined behaviour: false when the result does not fit in
 * 64 bits (the caller then computes in double), NULL for a zero divisor. */
static bool int_arith(int op, int64_t x, int64_t y, sval_t *r)
{
  r->t = V_INT;
  switch (op) {
  case '+': return !__builtin_add_overflow(x, y, &r->i);
  case '-': return !__builtin_sub_overflow(x, y, &r->i);
  case '*': return !__builtin_mul_overflow(x, y, &r->i);
  default: break;
  }
  if (y == 0) {
    r->t = V_NULL;
    return true;
  }
  if (y == -1) { /* INT64_MIN / -1 traps; x % -1 is always 0 */
    if (op == '%') r->i = 0;
    else if (x == INT64_MIN) return false;
    else r->i = -x;
    return true;
  }
  r->i = op == '/' ? x / y : x % y;
  return true;
}

static sval_t eval_arith(const sql_expr_t *e, const emu_msg_t *m)
{
  sval_t a = eval(e->a, m), b = eval(e->b, m), r = {0};
  if (e->op == '+' && a.t == V_STR && b.t == V_STR) {
    r.t = V_STR;
    r.s = malloc(strlen(a.s) + strlen(b.s) + 1);
    if (!r.s) abort();
    strcpy(r.s, a.s);
    strcat(r.s, b.s);
    r.own = true;
  } else if (a.t == V_INT && b.t == V_INT && int_arith(e->op, a.i, b.i, &r)) {
    /* done in 64-bit integers */
  } else if (numeric(&a) && numeric(&b)) {
    double x = as_dbl(&a), y = as_dbl(&b);
    r.t = V_DBL;
    if (e->op == '+') r.d = x + y;
    else if (e->op == '-') r.d = x - y;
    else if (e->op == '*') r.d = x * y;
    else if (y == 0) r.t = V_NULL;
    else if (e->op == '/') r.d = x / y;
    else r.d = fmod(x, y);
  }
  sv_free(&a);
  sv_free(&b);
  return r;
}

/* LIKE matching: % is any run, _ any one byte, esc makes the next pattern byte literal.
 * Greedy with one backtrack point (the last %), so O(len(s) * len(p)) at worst: the
 * recursive form was exponential in the number of %s, and a rule such as
 * '%a%a%a...%b' stalled the whole broker on every message sent to the topic. */
static bool like(const char *s, const char *p, char esc)
{
  const char *star_p = NULL, *star_s = NULL;
  for (;;) {
    bool escaped = esc && *p == esc && p[1];
    if (!escaped && *p == '%') {
      star_p = ++p;
      star_s = s;
      continue;
    }
    if (!*s) break;
    if (*p) {
      const char *q = escaped ? p + 1 : p;
      if ((!escaped && *q == '_') || *q == *s) {
        s++;
        p = q + 1;
        continue;
      }
    }
    if (!star_p) return false;
    p = star_p;      /* let the last % take one more byte */
    s = ++star_s;
  }
  while (*p == '%' && !(esc && *p == esc && p[1])) p++;
  return *p == 0;
}

static sval_t eval_logic(const sql_expr_t *e, const emu_msg_t *m)
{
  sval_t a = eval(e->a, m);
  if (e->t == N_NOT) {
    sval_t r = a.t == V_BOOL ? vbool(!a.b) : (sval_t){0};
    sv_free(&a);
    return r;
  }
  bool is_and = e->t == N_AND;
  if (a.t == V_BOOL && a.b != is_and) return vbool(a.b); /* short-circuit */
  sval_t b = eval(e->b, m), r = {0};
  if (b.t == V_BOOL && b.b != is_and) r = vbool(b.b);
  else if (a.t == V_BOOL && b.t == V_BOOL) r = vbool(is_and);
  sv_free(&a);
  sv_free(&b);
  return r;
}

static sval_t eval(const sql_expr_t *e, const emu_msg_t *m)
{
  sval_t r = {0};
  switch (e->t) {
  case N_LIT:
    r = e->lit;
    r.own = false;
    return r;
  case N_PROP: return get_prop(e, m);
  case N_AND: case N_OR: case N_NOT: return eval_logic(e, m);
  case N_CMP: return eval_cmp(e, m);
  case N_ARITH: return eval_arith(e, m);
  case N_NEG:
    r = eval(e->a, m);
    if (r.t == V_INT && r.i == INT64_MIN) {
      r.t = V_DBL;
      r.d = 9223372036854775808.0;
    } else if (r.t == V_INT) r.i = -r.i;
    else if (r.t == V_DBL) r.d = -r.d;
    else sv_free(&r);
    return r;
  case N_ISNULL: {
    sval_t a = eval(e->a, m);
    bool isnull = a.t == V_NULL;
    sv_free(&a);
    return vbool(isnull != e->neg);
  }
  case N_EXISTS: {
    amqp_val_t a;
    const sql_expr_t *p = e->a;
    bool has = p->sys ? (sys_field(p->name) >= 0 && msg_prop(m, sys_field(p->name), &a)) : msg_app_prop(m, p->name, &a);
    return vbool(has);
  }
  case N_IN: {
    sval_t a = eval(e->a, m);
    if (a.t == V_NULL) return r;
    bool hit = false;
    for (size_t i = 0; i < e->nlist && !hit; i++) {
      sval_t x = eval(e->list[i], m);
      hit = x.t != V_NULL && compare(&a, &x) == 0;
      sv_free(&x);
    }
    sv_free(&a);
    return vbool(hit != e->neg);
  }
  case N_LIKE: {
    sval_t a = eval(e->a, m);
    if (a.t != V_STR) {
      sv_free(&a);
      return r;
    }
    bool hit = like(a.s, e->b->lit.s, e->esc);
    sv_free(&a);
    return vbool(hit != e->neg);
  }
  }
  return r;
}

bool sql_filter_match(const sql_expr_t *e, const emu_msg_t *m)
{
  sval_t v = eval(e, m);
  bool ok = v.t == V_BOOL && v.b;
  sv_free(&v);
  return ok;
}

/* ---------------------------------------------------------------- actions */

void sql_action_free(sql_action_t *a)
{
  if (!a) return;
  while (a->stmts) {
    sql_stmt_t *s = a->stmts;
    a->stmts = s->next;
    free(s->name);
    sql_expr_free(s->value);
    free(s);
  }
  free(a);
}

sql_action_t *sql_parse_action(const char *text, char *err, size_t errlen)
{
  lex_t l = {.p = text, .err = err, .errlen = errlen};
  sql_action_t *a = calloc(1, sizeof *a);
  if (!a) abort();
  sql_stmt_t **tail = &a->stmts;
  lx_next(&l);
  while (l.tok != T_EOF && !l.failed) {
    if (is_op(&l, ';')) { lx_next(&l); continue; }
    sql_stmt_t *s = calloc(1, sizeof *s);
    if (!s) abort();
    *tail = s;
    tail = &s->next;
    if (is_kw(&l, "REMOVE")) s->remove = true;
    else if (!is_kw(&l, "SET")) { lx_err(&l, "expected SET or REMOVE"); break; }
    lx_next(&l);
    if (l.tok != T_ID) { lx_err(&l, "expected a property name"); break; }
    sql_expr_t *p = prop_node(l.text);
    s->sys = p->sys;
    s->name = p->name;
    p->name = NULL;
    sql_expr_free(p);
    if (s->sys && sys_field(s->name) < 0) { lx_err(&l, "unknown or read-only system property"); break; }
    lx_next(&l);
    if (s->remove) continue;
    if (!is_op(&l, '=')) { lx_err(&l, "expected '='"); break; }
    lx_next(&l);
    s->value = p_or(&l);
    if (!s->value) break;
  }
  if (l.failed) {
    sql_action_free(a);
    return NULL;
  }
  return a;
}

static void enc_sval(emu_buf_t *b, const sval_t *v)
{
  uint64_t u;
  switch (v->t) {
  case V_NULL: enc_null(b); break;
  case V_BOOL: enc_bool(b, v->b); break;
  case V_INT: enc_long(b, v->i); break;
  case V_DBL:
    memcpy(&u, &v->d, 8);
    buf_u8(b, AMQP_DOUBLE);
    buf_be64(b, u);
    break;
  case V_STR: enc_str(b, v->s); break;
  }
}

void sql_action_apply(const sql_action_t *a, emu_msg_t *m)
{
  for (const sql_stmt_t *s = a->stmts; s; s = s->next) {
    emu_buf_t b = {0};
    if (!s->remove) {
      sval_t v = eval(s->value, m);
      if (s->sys && sys_field(s->name) == 6 && v.t == V_STR) enc_sym(&b, v.s); /* content-type is a symbol */
      else enc_sval(&b, &v);
      sv_free(&v);
    }
    if (s->sys) {
      if (s->remove) msg_props_set(m, sys_field(s->name), NULL, 0);
      else msg_props_set(m, sys_field(s->name), b.p, b.len);
    } else {
      msg_app_set(m, s->name, s->remove ? NULL : b.p, b.len);
    }
    buf_free(&b);
  }
}
