/*
 * connstr.c - connection strings, URL encoding and SAS tokens.
 *
 * The parser follows azure-servicebus 7.8.2 (protocol.md 2.2) in client
 * mode: keys case-insensitive, Endpoint or HostName, the same error
 * sentences in the same order, unknown keys ignored; it adds what newer
 * SDKs read (an explicit port in the Endpoint, UseDevelopmentEmulator).
 * SAS tokens are signed as protocol.md 3.4 says: HMAC-SHA256 keyed with
 * the key text's bytes over the URL-encoded resource, a newline and the
 * expiry.
 */
#include "internal.h"

#include <ctype.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *E_MALFORMED =
    "Connection string is either blank or malformed.";
static const char *E_ENDPOINT = "Invalid Endpoint on the Connection String.";
static const char *E_BOTH_KEYS =
    "Connection string must have both SharedAccessKeyName and "
    "SharedAccessKey.";
static const char *E_ONLY_ONE =
    "Only one of the SharedAccessKey or SharedAccessSignature must be "
    "present.";
static const char *E_AT_LEAST =
    "At least one of the SharedAccessKey or SharedAccessSignature must be "
    "present.";

static int fail(char *msg, size_t msglen, const char *text)
{
    if (msg && msglen)
        snprintf(msg, msglen, "%s", text);
    return SBUS_ECONNSTR;
}

void sbus_connstr_clear(sbus_connstr_t *c)
{
    if (!c)
        return;
    sbusi_free(c->endpoint);
    sbusi_free(c->host);
    sbusi_free(c->key_name);
    sbusi_free(c->key);
    sbusi_free(c->sas);
    sbusi_free(c->entity_path);
    memset(c, 0, sizeof *c);
}

/* Trims spaces on both ends of [*b, *e). */
static void trim(const char **b, const char **e)
{
    while (*b < *e && isspace((unsigned char)**b))
        (*b)++;
    while (*e > *b && isspace((unsigned char)(*e)[-1]))
        (*e)--;
}

static int key_is(const char *k, size_t kn, const char *name)
{
    return strlen(name) == kn && strncasecmp(k, name, kn) == 0;
}

/* Stores one key=value pair; returns 0, or -1 on ENOMEM. */
static int store(sbus_connstr_t *c, const char *k, size_t kn, const char *v,
                 size_t vn)
{
    char **slot = NULL;
    if (key_is(k, kn, "Endpoint") || key_is(k, kn, "HostName"))
        slot = &c->endpoint;
    else if (key_is(k, kn, "SharedAccessKeyName"))
        slot = &c->key_name;
    else if (key_is(k, kn, "SharedAccessKey"))
        slot = &c->key;
    else if (key_is(k, kn, "SharedAccessSignature"))
        slot = &c->sas;
    else if (key_is(k, kn, "EntityPath"))
        slot = &c->entity_path;
    else if (key_is(k, kn, "UseDevelopmentEmulator")) {
        c->use_emulator = vn == 4 && strncasecmp(v, "true", 4) == 0;
        return 0;
    } else
        return 0; /* unknown keys are ignored, as 7.8.2 does */
    char *s = sbusi_strndup(v, vn);
    if (!s)
        return -1;
    sbusi_free(*slot);
    *slot = s;
    return 0;
}

/* Splits "scheme://host[:port][/path]" into host and port. */
static int split_endpoint(sbus_connstr_t *c)
{
    const char *p = strstr(c->endpoint, "://");
    if (!p)
        return -1;
    p += 3;
    size_t n = strcspn(p, "/?#");
    if (n == 0)
        return -1;
    const char *colon = memchr(p, ':', n);
    size_t hn = colon ? (size_t)(colon - p) : n;
    if (hn == 0)
        return -1;
    if (colon) {
        char *end;
        long port = strtol(colon + 1, &end, 10);
        if (end != p + n || port <= 0 || port > 65535)
            return -1;
        c->port = (int)port;
    }
    c->host = sbusi_strndup(p, hn);
    return c->host ? 0 : -2;
}

static int parse_items(const char *s, sbus_connstr_t *out, char *msg,
                       size_t msglen)
{
    const char *b = s, *e = s + strlen(s);
    trim(&b, &e);
    while (e > b && e[-1] == ';')
        e--;
    if (b == e)
        return fail(msg, msglen, E_MALFORMED);
    while (b < e) {
        const char *semi = memchr(b, ';', (size_t)(e - b));
        const char *ie = semi ? semi : e;
        const char *eq = memchr(b, '=', (size_t)(ie - b));
        if (!eq)
            return fail(msg, msglen, E_MALFORMED);
        const char *kb = b, *ke = eq, *vb = eq + 1, *ve = ie;
        trim(&kb, &ke);
        trim(&vb, &ve);
        if (store(out, kb, (size_t)(ke - kb), vb, (size_t)(ve - vb)) < 0)
            return SBUS_ENOMEM;
        b = semi ? semi + 1 : e;
    }
    return 0;
}

static int check(sbus_connstr_t *out, char *msg, size_t msglen)
{
    if (!out->endpoint || !*out->endpoint)
        return fail(msg, msglen, E_MALFORMED);
    int rc = split_endpoint(out);
    if (rc == -2)
        return SBUS_ENOMEM;
    if (rc < 0)
        return fail(msg, msglen, E_ENDPOINT);
    int has_name = out->key_name && *out->key_name;
    int has_key = out->key && *out->key;
    int has_sas = out->sas && *out->sas;
    if (has_name != has_key)
        return fail(msg, msglen, E_BOTH_KEYS);
    if (has_key && has_sas)
        return fail(msg, msglen, E_ONLY_ONE);
    if (!has_key && !has_sas)
        return fail(msg, msglen, E_AT_LEAST);
    return 0;
}

int sbus_connstr_parse(const char *s, sbus_connstr_t *out, char *msg,
                       size_t msglen)
{
    if (!out)
        return SBUS_EINVAL;
    memset(out, 0, sizeof *out);
    if (!s)
        return fail(msg, msglen, E_MALFORMED);
    int rc = parse_items(s, out, msg, msglen);
    if (rc == 0)
        rc = check(out, msg, msglen);
    if (rc == SBUS_ENOMEM)
        fail(msg, msglen, "out of memory");
    if (rc < 0)
        sbus_connstr_clear(out);
    return rc;
}

/* ------------------------------- SAS ------------------------------- */

int sbusi_url_encode(const char *s, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t j = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (j + 4 > cap)
            return -1;
        if (isalnum(*p) || *p == '_' || *p == '.' || *p == '-' || *p == '~') {
            out[j++] = (char)*p;
        } else if (*p == ' ') {
            out[j++] = '+';
        } else {
            out[j++] = '%';
            out[j++] = hex[*p >> 4];
            out[j++] = hex[*p & 15];
        }
    }
    if (j >= cap)
        return -1;
    out[j] = 0;
    return (int)j;
}

int sbus_sas_token(const char *resource, const char *key_name,
                   const char *key, int64_t expiry, char *out, size_t outlen)
{
    if (!resource || !key_name || !key || !out || expiry <= 0)
        return SBUS_EINVAL;
    char sr[1024], tosign[1100], sig64[64], sig[128];
    if (sbusi_url_encode(resource, sr, sizeof sr) < 0)
        return SBUS_ETOOBIG;
    int n = snprintf(tosign, sizeof tosign, "%s\n%" PRId64, sr, expiry);
    if (n < 0 || (size_t)n >= sizeof tosign)
        return SBUS_ETOOBIG;
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    if (!HMAC(EVP_sha256(), key, (int)strlen(key), (unsigned char *)tosign,
              (size_t)n, mac, &maclen))
        return SBUS_ENOMEM;
    EVP_EncodeBlock((unsigned char *)sig64, mac, (int)maclen);
    if (sbusi_url_encode(sig64, sig, sizeof sig) < 0)
        return SBUS_ETOOBIG;
    n = snprintf(out, outlen,
                 "SharedAccessSignature sr=%s&sig=%s&se=%" PRId64 "&skn=%s",
                 sr, sig, expiry, key_name);
    if (n < 0 || (size_t)n >= outlen)
        return SBUS_ETOOBIG;
    return n;
}

int64_t sbusi_sas_expiry(const char *sas)
{
    const char *p = sas;
    while ((p = strstr(p, "se=")) != NULL) {
        if (p == sas || p[-1] == '&' || p[-1] == ' ')
            return strtoll(p + 3, NULL, 10);
        p += 3;
    }
    return 0;
}
