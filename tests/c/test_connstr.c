/*
 * test_connstr.c - connection-string parsing (protocol.md 2.2): the valid
 * forms, and each missing or malformed key with its own sentence.
 */
#include <sbus/sbus.h>

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

static const char *E_MALFORMED =
    "Connection string is either blank or malformed.";
static const char *E_ENDPOINT = "Invalid Endpoint on the Connection String.";
static const char *E_BOTH =
    "Connection string must have both SharedAccessKeyName and "
    "SharedAccessKey.";
static const char *E_ONLY_ONE =
    "Only one of the SharedAccessKey or SharedAccessSignature must be "
    "present.";
static const char *E_AT_LEAST =
    "At least one of the SharedAccessKey or SharedAccessSignature must be "
    "present.";

static void test_key_form(void)
{
    sbus_connstr_t cs;
    char msg[256] = "";
    int rc = sbus_connstr_parse(
        "Endpoint=sb://myns.servicebus.windows.net/;SharedAccessKeyName=Root;"
        "SharedAccessKey=abc=;EntityPath=queue.1",
        &cs, msg, sizeof msg);
    CHECK(rc == 0);
    CHECK(cs.host && strcmp(cs.host, "myns.servicebus.windows.net") == 0);
    CHECK(cs.port == 0);
    CHECK(cs.key_name && strcmp(cs.key_name, "Root") == 0);
    CHECK(cs.key && strcmp(cs.key, "abc=") == 0); /* split on the first = */
    CHECK(cs.entity_path && strcmp(cs.entity_path, "queue.1") == 0);
    CHECK(!cs.sas && !cs.use_emulator);
    sbus_connstr_clear(&cs);
    CHECK(cs.host == NULL);
}

static void test_emulator_form(void)
{
    sbus_connstr_t cs;
    char msg[256];
    int rc = sbus_connstr_parse(
        "  Endpoint=sb://localhost:5673;SharedAccessKeyName="
        "RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;"
        "UseDevelopmentEmulator=true;  ",
        &cs, msg, sizeof msg);
    CHECK(rc == 0);
    CHECK(cs.host && strcmp(cs.host, "localhost") == 0);
    CHECK(cs.port == 5673);
    CHECK(cs.use_emulator == 1);
    sbus_connstr_clear(&cs);
}

static void test_case_and_sas(void)
{
    sbus_connstr_t cs;
    char msg[256];
    int rc = sbus_connstr_parse(
        "hostname=sb://h.example;sharedaccesssignature=SharedAccessSignature "
        "sr=x&sig=y&se=1&skn=z",
        &cs, msg, sizeof msg);
    CHECK(rc == 0);
    CHECK(cs.host && strcmp(cs.host, "h.example") == 0);
    CHECK(cs.sas && strncmp(cs.sas, "SharedAccessSignature sr=x", 26) == 0);
    CHECK(!cs.key && !cs.key_name);
    sbus_connstr_clear(&cs);
}

/* Expects failure with exactly `want`. */
static void expect(const char *s, const char *want)
{
    sbus_connstr_t cs;
    char msg[256] = "";
    int rc = sbus_connstr_parse(s, &cs, msg, sizeof msg);
    CHECK(rc == SBUS_ECONNSTR);
    CHECK(strcmp(msg, want) == 0);
    if (strcmp(msg, want) != 0)
        fprintf(stderr, "  for %s\n  got  %s\n  want %s\n", s ? s : "(null)",
                msg, want);
    CHECK(cs.host == NULL && cs.key == NULL);
}

static void test_errors(void)
{
    expect(NULL, E_MALFORMED);
    expect("", E_MALFORMED);
    expect("   ;", E_MALFORMED);
    expect("Endpoint", E_MALFORMED); /* an item without = */
    expect("SharedAccessKeyName=a;SharedAccessKey=b", E_MALFORMED);
    expect("Endpoint=sb://h/;SharedAccessKeyName=a;;SharedAccessKey=b",
           E_MALFORMED);
    expect("Endpoint=h.example;SharedAccessKeyName=a;SharedAccessKey=b",
           E_ENDPOINT);
    expect("Endpoint=sb://;SharedAccessKeyName=a;SharedAccessKey=b",
           E_ENDPOINT);
    expect("Endpoint=sb://h:port/;SharedAccessKeyName=a;SharedAccessKey=b",
           E_ENDPOINT);
    expect("Endpoint=sb://h/;SharedAccessKeyName=a", E_BOTH);
    expect("Endpoint=sb://h/;SharedAccessKey=b", E_BOTH);
    expect("Endpoint=sb://h/;SharedAccessKeyName=a;SharedAccessKey=b;"
           "SharedAccessSignature=SharedAccessSignature sr=x",
           E_ONLY_ONE);
    expect("Endpoint=sb://h/;EntityPath=q", E_AT_LEAST);
}

static void test_never_leaks_key(void)
{
    sbus_connstr_t cs;
    char msg[256];
    sbus_connstr_parse("Endpoint=x;SharedAccessKeyName=a;SharedAccessKey=SEKRIT",
                       &cs, msg, sizeof msg);
    CHECK(strstr(msg, "SEKRIT") == NULL);
}

static void test_conn_new(void)
{
    sbus_conn_options_t o;
    sbus_conn_options_init(&o);
    o.connection_string = "Endpoint=sb://localhost:5999;SharedAccessKeyName=k;"
                          "SharedAccessKey=v;UseDevelopmentEmulator=true";
    sbus_conn_t *c = NULL;
    char err[256] = "";
    CHECK(sbus_conn_new(&c, &o, err, sizeof err) == 0);
    CHECK(c && strcmp(sbus_conn_host(c), "localhost") == 0);
    sbus_conn_free(c);
    o.connection_string = "Endpoint=sb://h;SharedAccessKeyName=k";
    CHECK(sbus_conn_new(&c, &o, err, sizeof err) == SBUS_ECONNSTR);
    CHECK(strcmp(err, E_BOTH) == 0);
}

int main(void)
{
    test_key_form();
    test_emulator_form();
    test_case_and_sas();
    test_errors();
    test_never_leaks_key();
    test_conn_new();
    if (failures)
        fprintf(stderr, "%d failure(s)\n", failures);
    return failures ? 1 : 0;
}
