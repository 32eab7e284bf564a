/*
 * error.c - the one table of errors.
 *
 * Two tables live here: the names and sentences of the SBUS_E* codes
 * (sbus_errname, sbus_strerror), and the map from AMQP conditions to codes
 * with their retriable and fatal flags (protocol.md section 9.1). Python
 * builds its exception classes from the second one through
 * sbus_condition_at(), Lua its code strings through sbus_errname(). The
 * last part turns management/CBS status codes into conditions when a
 * response carries no errorCondition, and fills sbus_error_t records.
 */
#include "internal.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

typedef struct code_info {
    int code;            /* the SBUS_E* value */
    const char *name;    /* its symbolic name */
    const char *text;    /* its sentence */
} code_info_t;

static const code_info_t g_codes[] = {
    {SBUS_OK, "ok", "success"},
    {SBUS_EINVAL, "invalid-argument", "invalid argument"},
    {SBUS_ENOMEM, "no-memory", "out of memory"},
    {SBUS_ESTATE, "invalid-state", "not allowed in this state"},
    {SBUS_ENOTSUP, "not-supported", "not supported"},
    {SBUS_ENOENT, "absent", "not present"},
    {SBUS_ETOOBIG, "too-large", "too large"},
    {SBUS_ECONNSTR, "bad-connection-string", "invalid connection string"},
    {SBUS_ESETTLED, "already-settled", "the message was settled already"},
    {SBUS_ECONNECTION, "connection", "connection failed or was lost"},
    {SBUS_EAUTH, "unauthorized", "the service refused the credentials"},
    {SBUS_EFORBIDDEN, "forbidden", "the token lacks the needed right"},
    {SBUS_ENOTFOUND, "not-found", "the messaging entity was not found"},
    {SBUS_ETIMEOUT, "timeout", "the operation timed out"},
    {SBUS_EBUSY, "server-busy", "the service is busy"},
    {SBUS_ELOCKLOST, "lock-lost", "the message lock was lost"},
    {SBUS_ESESSIONLOCKLOST, "session-lock-lost", "the session lock was lost"},
    {SBUS_ESESSIONLOCKED, "session-cannot-be-locked",
     "the session is locked by another receiver"},
    {SBUS_EMSGNOTFOUND, "message-not-found", "the message was not found"},
    {SBUS_ESIZE, "message-size-exceeded", "the message is too large"},
    {SBUS_EQUOTA, "quota-exceeded", "a quota was exceeded"},
    {SBUS_EDISABLED, "entity-disabled", "the messaging entity is disabled"},
    {SBUS_EEXISTS, "entity-already-exists", "the entity already exists"},
    {SBUS_ECANCELLED, "cancelled", "the operation was cancelled"},
    {SBUS_ECLOSED, "closed", "the object was closed"},
    {SBUS_ENOTALLOWED, "not-allowed", "the service refused the operation"},
    {SBUS_EARGUMENT, "argument-error", "the service refused an argument"},
    {SBUS_ETLS, "tls", "TLS handshake or verification failed"},
    {SBUS_EPROXY, "proxy", "the HTTP proxy refused the tunnel"},
    {SBUS_ESERVICE, "service-error", "the service reported an error"},
};

typedef struct cond_info {
    const char *condition; /* AMQP condition name */
    int code;              /* SBUS_E* */
    int retriable;         /* same call may succeed later */
    int fatal;             /* the link/connection is dead */
} cond_info_t;

/* Retriable follows Python 7.8.2's no-retry list (protocol.md 9.2). */
static const cond_info_t g_conds[] = {
    {"amqp:not-found", SBUS_ENOTFOUND, 0, 1},
    {"amqp:unauthorized-access", SBUS_EAUTH, 0, 1},
    {"com.microsoft:auth-failed", SBUS_EAUTH, 0, 1},
    {"amqp:not-allowed", SBUS_ENOTALLOWED, 0, 0},
    {"amqp:not-implemented", SBUS_ENOTSUP, 0, 0},
    {"amqp:resource-limit-exceeded", SBUS_EQUOTA, 0, 0},
    {"amqp:link:message-size-exceeded", SBUS_ESIZE, 0, 0},
    {"amqp:link:detach-forced", SBUS_ECONNECTION, 1, 1},
    {"amqp:link:stolen", SBUS_ECONNECTION, 0, 1},
    {"amqp:link:redirect", SBUS_ECONNECTION, 0, 1},
    {"amqp:connection:forced", SBUS_ECONNECTION, 1, 1},
    {"amqp:connection:framing-error", SBUS_ECONNECTION, 0, 1},
    {"amqp:connection:redirect", SBUS_ECONNECTION, 0, 1},
    {"amqp:internal-error", SBUS_ESERVICE, 1, 0},
    {"amqp:decode-error", SBUS_ESERVICE, 0, 0},
    {"amqp:invalid-field", SBUS_EARGUMENT, 0, 0},
    {"amqp:precondition-failed", SBUS_ESERVICE, 0, 0},
    {"amqp:resource-deleted", SBUS_ENOTFOUND, 0, 1},
    {"amqp:illegal-state", SBUS_ESERVICE, 0, 0},
    {"amqp:frame-size-too-small", SBUS_ESERVICE, 0, 1},
    {"amqp:session:window-violation", SBUS_ECONNECTION, 0, 1},
    {"amqp:session:errant-link", SBUS_ECONNECTION, 0, 1},
    {"amqp:session:handle-in-use", SBUS_ECONNECTION, 0, 1},
    {"amqp:session:unattached-handle", SBUS_ECONNECTION, 0, 1},
    {"com.microsoft:timeout", SBUS_ETIMEOUT, 1, 0},
    {"com.microsoft:server-busy", SBUS_EBUSY, 1, 0},
    {"com.microsoft:operation-cancelled", SBUS_ESERVICE, 1, 0},
    {"com.microsoft:container-close", SBUS_ECONNECTION, 1, 1},
    {"com.microsoft:message-lock-lost", SBUS_ELOCKLOST, 0, 0},
    {"com.microsoft:session-lock-lost", SBUS_ESESSIONLOCKLOST, 0, 1},
    {"com.microsoft:session-cannot-be-locked", SBUS_ESESSIONLOCKED, 0, 1},
    {"com.microsoft:message-not-found", SBUS_EMSGNOTFOUND, 0, 0},
    {"com.microsoft:entity-disabled", SBUS_EDISABLED, 0, 1},
    {"com.microsoft:entity-already-exists", SBUS_EEXISTS, 0, 0},
    {"com.microsoft:argument-error", SBUS_EARGUMENT, 0, 0},
    {"com.microsoft:argument-out-of-range", SBUS_EARGUMENT, 0, 0},
    {"com.microsoft:precondition-failed", SBUS_ESERVICE, 0, 0},
    {"com.microsoft:no-matching-subscription", SBUS_ESERVICE, 1, 0},
    {"com.microsoft:store-lock-lost", SBUS_ESERVICE, 1, 0},
    {"com.microsoft:partition-not-owned", SBUS_ESERVICE, 1, 0},
    {"com.microsoft:publisher-revoked", SBUS_EAUTH, 1, 0},
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static const code_info_t *find_code(int code)
{
    for (size_t i = 0; i < COUNT(g_codes); i++)
        if (g_codes[i].code == code)
            return &g_codes[i];
    return NULL;
}

const char *sbus_errname(int code)
{
    const code_info_t *ci = find_code(code);
    return ci ? ci->name : "unknown";
}

const char *sbus_strerror(int code)
{
    const code_info_t *ci = find_code(code);
    return ci ? ci->text : "unknown error";
}

int sbus_condition_code(const char *condition, int *retriable, int *fatal)
{
    int r = 0, f = 0, code = SBUS_ESERVICE;
    for (size_t i = 0; condition && i < COUNT(g_conds); i++) {
        if (strcasecmp(g_conds[i].condition, condition) == 0) {
            code = g_conds[i].code;
            r = g_conds[i].retriable;
            f = g_conds[i].fatal;
            break;
        }
    }
    if (retriable)
        *retriable = r;
    if (fatal)
        *fatal = f;
    return code;
}

int sbus_condition_at(size_t i, const char **condition, int *code,
                      int *retriable)
{
    if (i >= COUNT(g_conds))
        return SBUS_ENOENT;
    if (condition)
        *condition = g_conds[i].condition;
    if (code)
        *code = g_conds[i].code;
    if (retriable)
        *retriable = g_conds[i].retriable;
    return 0;
}

const char *sbus_version(void) { return SBUS_VERSION; }

/* Local failures that a retry may cure. */
static int local_retriable(int code)
{
    return code == SBUS_ECONNECTION || code == SBUS_ETIMEOUT ||
           code == SBUS_EBUSY;
}

void sbusi_error_set(sbus_error_t *e, char *cond_buf, size_t cond_cap,
                     char *desc_buf, size_t desc_cap, int code,
                     const char *condition, const char *description)
{
    memset(e, 0, sizeof *e);
    e->code = code;
    if (condition && *condition) {
        snprintf(cond_buf, cond_cap, "%s", condition);
        e->condition = cond_buf;
        int r, f;
        int mapped = sbus_condition_code(condition, &r, &f);
        /* The service refuses a token that lacks a right with the same
           condition as a bad token; only the text tells them apart
           ("'Send' claim(s) are required to perform this operation"). */
        if (mapped == SBUS_EAUTH && description &&
            strstr(description, "claim") && (!code || code == SBUS_EAUTH))
            mapped = SBUS_EFORBIDDEN;
        if (!code || code == SBUS_EAUTH)
            e->code = mapped;
        e->retriable = (e->code == mapped) ? r : local_retriable(e->code);
        e->fatal = (e->code == mapped) ? f : 0;
    } else {
        e->retriable = local_retriable(code);
        e->fatal = code == SBUS_ECLOSED;
    }
    if (!e->code)
        e->code = SBUS_ESERVICE;
    snprintf(desc_buf, desc_cap, "%s",
             description && *description ? description
                                         : sbus_strerror(e->code));
    e->description = desc_buf;
}

const char *sbusi_status_condition(int status)
{
    switch (status) {
    case 400: return "com.microsoft:argument-error";
    case 401: return "amqp:unauthorized-access";
    case 403: return "amqp:resource-limit-exceeded";
    case 404: return "amqp:not-found";
    case 408: return "com.microsoft:timeout";
    case 409: return "com.microsoft:entity-already-exists";
    case 410: return "com.microsoft:message-lock-lost";
    case 503: return "com.microsoft:server-busy";
    default: return "amqp:internal-error";
    }
}
