/*
 * test_errors.c - the error table: every code has a name and a sentence,
 * the conditions of protocol.md 9.1 map to their codes with the retriable
 * flags Python 7.8.2 uses, unknown conditions are service errors, and the
 * table can be walked.
 */
#include <sbus/sbus.h>

#include "internal.h"

#include <stdio.h>
#include <string.h>

static int failures;

#define CHECK(cond)                                                        \
    do {                                                                   \
        if (!(cond)) {                                                     \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__,        \
                    __LINE__, #cond);                                      \
            failures++;                                                    \
        }                                                                  \
    } while (0)

static void test_names(void)
{
    for (int code = 0; code >= SBUS_ESERVICE; code--) {
        if (code < SBUS_ESETTLED && code > SBUS_ECONNECTION)
            continue; /* the gap between local and async codes */
        CHECK(strcmp(sbus_errname(code), "unknown") != 0);
        CHECK(strcmp(sbus_strerror(code), "unknown error") != 0);
    }
    CHECK(strcmp(sbus_errname(SBUS_ELOCKLOST), "lock-lost") == 0);
    CHECK(strcmp(sbus_errname(SBUS_EAUTH), "unauthorized") == 0);
    CHECK(strcmp(sbus_errname(12345), "unknown") == 0);
}

static void test_conditions(void)
{
    struct {
        const char *cond;
        int code, retriable;
    } want[] = {
        {"amqp:not-found", SBUS_ENOTFOUND, 0},
        {"amqp:unauthorized-access", SBUS_EAUTH, 0},
        {"com.microsoft:server-busy", SBUS_EBUSY, 1},
        {"com.microsoft:timeout", SBUS_ETIMEOUT, 1},
        {"com.microsoft:message-lock-lost", SBUS_ELOCKLOST, 0},
        {"com.microsoft:session-lock-lost", SBUS_ESESSIONLOCKLOST, 0},
        {"com.microsoft:session-cannot-be-locked", SBUS_ESESSIONLOCKED, 0},
        {"com.microsoft:message-not-found", SBUS_EMSGNOTFOUND, 0},
        {"amqp:link:message-size-exceeded", SBUS_ESIZE, 0},
        {"amqp:resource-limit-exceeded", SBUS_EQUOTA, 0},
        {"com.microsoft:entity-disabled", SBUS_EDISABLED, 0},
        {"com.microsoft:entity-already-exists", SBUS_EEXISTS, 0},
        {"amqp:link:detach-forced", SBUS_ECONNECTION, 1},
        {"amqp:connection:forced", SBUS_ECONNECTION, 1},
        {"amqp:not-allowed", SBUS_ENOTALLOWED, 0},
        {"com.microsoft:argument-error", SBUS_EARGUMENT, 0},
        {"amqp:internal-error", SBUS_ESERVICE, 1},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        int r = -1, f = -1;
        CHECK(sbus_condition_code(want[i].cond, &r, &f) == want[i].code);
        CHECK(r == want[i].retriable);
        CHECK(f == 0 || f == 1);
    }
    int r = 1;
    CHECK(sbus_condition_code("com.example:whatever", &r, NULL) ==
          SBUS_ESERVICE);
    CHECK(r == 0);
    CHECK(sbus_condition_code(NULL, NULL, NULL) == SBUS_ESERVICE);
}

/* A token refused for a missing right is "forbidden", a bad one
 * "unauthorized": the service uses one condition for both. */
static void test_forbidden(void)
{
    sbus_error_t e;
    char c[96], d[320];
    sbusi_error_set(&e, c, sizeof c, d, sizeof d, 0, "amqp:unauthorized-access",
                    "Unauthorized access. 'Send' claim(s) are required to "
                    "perform this operation.");
    CHECK(e.code == SBUS_EFORBIDDEN && !e.retriable);
    sbusi_error_set(&e, c, sizeof c, d, sizeof d, 0, "amqp:unauthorized-access",
                    "InvalidSignature: The token has an invalid signature.");
    CHECK(e.code == SBUS_EAUTH);
    sbusi_error_set(&e, c, sizeof c, d, sizeof d, 0, "amqp:not-found", NULL);
    CHECK(e.code == SBUS_ENOTFOUND && strcmp(e.description,
                                              sbus_strerror(SBUS_ENOTFOUND)) == 0);
}

static void test_walk(void)
{
    size_t n = 0;
    const char *cond;
    int code, retriable;
    while (sbus_condition_at(n, &cond, &code, &retriable) == 0) {
        CHECK(cond && strchr(cond, ':'));
        CHECK(sbus_condition_code(cond, NULL, NULL) == code);
        n++;
    }
    CHECK(n >= 30);
    CHECK(sbus_condition_at(n, &cond, &code, &retriable) == SBUS_ENOENT);
    CHECK(strcmp(sbus_version(), SBUS_VERSION) == 0);
}

int main(void)
{
    test_names();
    test_conditions();
    test_walk();
    test_forbidden();
    if (failures)
        fprintf(stderr, "%d failure(s)\n", failures);
    return failures ? 1 : 0;
}
