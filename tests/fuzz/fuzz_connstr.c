/*
 * fuzz_connstr.c - libFuzzer target for the connection-string parser
 * (sbus_connstr_parse in core/src/connstr.c) and the SAS helpers that read
 * what it returns (sbus_sas_token, sbusi_sas_expiry).
 *
 * Build and run: scripts/fuzz.sh connstr (clang-14, ASan + UBSan).
 *
 * The input is the connection string (NUL-terminated copy). Beyond the
 * sanitizers it checks the parser's contract:
 *   - success fills a host, and a key name with a key or a signature;
 *   - failure returns SBUS_ECONNSTR with a non-empty sentence that never
 *     contains the value of SharedAccessKey (keys must not leak into
 *     messages, issue 9);
 *   - parsing is deterministic and clear() leaves nothing behind.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ASSERT(c)                                                                \
    do {                                                                         \
        if (!(c)) {                                                              \
            fprintf(stderr, "fuzz_connstr: %s:%d: %s\n", __FILE__, __LINE__, #c); \
            abort();                                                             \
        }                                                                        \
    } while (0)

/* The value of the last SharedAccessKey= item, as a raw substring. */
static const char *key_value(const char *s, size_t *n)
{
    const char *k = NULL, *p = s;
    while ((p = strstr(p, "SharedAccessKey=")) != NULL) {
        k = p + strlen("SharedAccessKey=");
        p = k;
    }
    if (!k)
        return NULL;
    const char *e = strchr(k, ';');
    *n = e ? (size_t)(e - k) : strlen(k);
    return k;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = 0;

    sbus_connstr_t c;
    char msg[256];
    memset(&c, 0, sizeof c);
    msg[0] = 0;
    int rc = sbus_connstr_parse(s, &c, msg, sizeof msg);
    if (rc == 0) {
        ASSERT(c.host && c.host[0]);
        ASSERT(c.port >= 0 && c.port <= 65535);
        /* a second parse gives the same answer */
        sbus_connstr_t c2;
        memset(&c2, 0, sizeof c2);
        ASSERT(sbus_connstr_parse(s, &c2, msg, sizeof msg) == 0);
        ASSERT(strcmp(c.host, c2.host) == 0 && c.port == c2.port);
        sbus_connstr_clear(&c2);
        if (c.key_name && c.key) {
            char tok[2048];
            int n = sbus_sas_token(c.endpoint ? c.endpoint : c.host, c.key_name, c.key,
                                   4102444800LL, tok, sizeof tok);
            ASSERT(n < 0 || (size_t)n < sizeof tok);
            if (n > 0)
                ASSERT(sbusi_sas_expiry(tok) == 4102444800LL);
        }
        if (c.sas)
            (void)sbusi_sas_expiry(c.sas);
        sbus_connstr_clear(&c);
        ASSERT(!c.host && !c.key && !c.sas && !c.endpoint);
    } else {
        ASSERT(rc == SBUS_ECONNSTR || rc == SBUS_ENOMEM);
        ASSERT(strlen(msg) > 0 && strlen(msg) < sizeof msg);
        size_t kn = 0;
        const char *k = key_value(s, &kn);
        if (k && kn >= 4) {
            char *kv = malloc(kn + 1);
            memcpy(kv, k, kn);
            kv[kn] = 0;
            if (strstr(msg, kv) != NULL) {
                /* The key's text appears in the message: a leak only if the
                 * message depends on the key. A key such as "eyName" is also
                 * a piece of the fixed text "SharedAccessKeyName", so parse
                 * again with the key's bytes replaced: a message that does
                 * not change never carried the key. */
                char *s2 = strdup(s);
                memset(s2 + (k - s), 'Q', kn);
                char msg2[sizeof msg] = "";
                sbus_connstr_t c3;
                memset(&c3, 0, sizeof c3);
                if (sbus_connstr_parse(s2, &c3, msg2, sizeof msg2) == 0)
                    sbus_connstr_clear(&c3);
                ASSERT(strcmp(msg, msg2) == 0);
                free(s2);
            }
            free(kv);
        }
    }
    (void)sbusi_sas_expiry(s);
    char enc[512];
    (void)sbusi_url_encode(s, enc, sizeof enc);
    free(s);
    return 0;
}
