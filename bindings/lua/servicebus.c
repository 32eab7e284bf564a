/*
 * servicebus.c - the Lua module `servicebus`: libsbus for Lua 5.4, LuaJIT
 * and OpenResty, from one source.
 *
 * What it holds, top to bottom:
 *   1. types: client, sender, receiver, message, batch userdata; operations
 *      ("ops") are plain Lua tables;
 *   2. errors and value conversion (Lua <-> sbus_value_t, messages);
 *   3. the event drain: the only place where operations complete;
 *   4. start_* functions: each starts one engine operation and returns an
 *      op at once (the non-blocking form);
 *   5. drivers: the POSIX driver of core/io (blocking wait and the step
 *      API for luv/cqueues), and the host mode in which Lua owns the socket
 *      (OpenResty: resty/servicebus.lua pumps bytes through feed/output);
 *   6. a short embedded Lua chunk (PRELUDE) that derives every blocking
 *      method `x` from `start_x` + op:wait(). Blocking methods are Lua
 *      functions on purpose: under OpenResty op:wait() yields on the
 *      cosocket, and a yield may not cross a C call.
 *
 * The engine boundary is sbus.h and io.h only; no Service Bus rule is
 * decided here. Every operation token is an integer id; the client's
 * uservalue table keeps waiters[id] = op until the engine's one completion
 * for it arrives (sbus.h, "EXACTLY ONE COMPLETION").
 *
 * Object graph (uservalues keep parents alive):
 *   client ud  -> env { waiters = {id -> op}, renew = {key -> entry},
 *                       logger, token_provider, hostwait }
 *   sender ud  -> env { client = client ud }
 *   receiver ud-> env { client = client ud, rx = receiver ud }
 *   message ud -> its receiver's env (or a shared empty table)
 *   op table   -> { client = client ud, id, done, [1..3] results, error }
 *                 (what and done = false from its kind's metatable)
 * The C side also links senders and receivers to their client so that
 * freeing the client frees them first and marks them closed.
 *
 * Misuse (wrong types, closed objects) raises; runtime failures return
 * nil, message, code where code = sbus_errname(). __gc frees without I/O.
 */
#include "compat.h" /* first: it sets the POSIX feature macro */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>

#include <sbus/io.h>
#include <sbus/sbus.h>

#define MT_CLIENT "servicebus.client"
#define MT_SENDER "servicebus.sender"
#define MT_RECEIVER "servicebus.receiver"
#define MT_MESSAGE "servicebus.message"
#define MT_BATCH "servicebus.batch"
#define MT_OP "servicebus.op"
#define REG_NOPARENT "servicebus.noparent"

#define TOKEN(id) ((void *)(uintptr_t)(id))
#define TOKEN_ID(t) ((lua_Integer)(uintptr_t)(t))

/* ------------------------------------------------------------------ */
/* 1. Types                                                            */
/* ------------------------------------------------------------------ */

typedef struct client client_t;

/* A sender or receiver, linked into its client's list so that the client
 * can free it (and mark it closed) before the connection goes. */
typedef struct child {
    client_t *cl;              /* owner; NULL once freed */
    struct child *next;        /* circular list through client.children */
    struct child *prev;
    void (*free_fn)(struct child *); /* frees the engine object */
} child_t;

typedef struct sender {
    child_t link; /* first: a child_t * is a sender_t * */
    sbus_sender_t *s;          /* NULL once closed */
} sender_t;

typedef struct receiver {
    child_t link;
    sbus_receiver_t *r;        /* NULL once closed */
    int session;               /* 1 for a session receiver */
} receiver_t;

struct client {
    sbus_conn_t *conn;         /* NULL once closed */
    sbus_io_t *io;             /* POSIX driver; NULL in host mode */
    int host;                  /* 1: Lua owns the socket (OpenResty) */
    int trace_stderr;          /* logging on and no logger function */
    /* An op's id (its engine token) is its slot in the waiters table,
     * taken when the op starts and given back when it completes, so that
     * the table stays an array (no hash insert and delete per op). Free
     * slots hold false there and are listed in free_slots. */
    lua_Integer nslots;        /* slots handed out so far */
    lua_Integer *free_slots;   /* room for nslots entries */
    size_t nfree;
    lua_Integer completed;     /* ops completed (step() reports deltas) */
    child_t children;          /* sentinel of the list of children */
    /* host mode: what the engine asked of the socket */
    int want_connect;          /* SBUS_EV_CONNECT not yet taken */
    char connect_host[256];    /* where to connect */
    int connect_port;
    int want_disconnect;       /* SBUS_EV_DISCONNECT not yet taken */
    int64_t deadline;          /* host mode: next monotonic deadline, -1 */
    int64_t tick_ms;           /* when this module last ticked the engine */
    int unflushed;             /* ops started since the last write */
    size_t gc_debt;            /* bytes received messages hold outside
                                  the Lua heap, not yet told to the GC */
};

/* Operations started in a row leave in writes of this many: one write
 * for all would leave the peer idle while the program starts the rest,
 * one write each costs a syscall per message (bench/README.md F6). */
#define FLUSH_EVERY 64

typedef struct message {
    sbus_message_t *m;         /* owned; never NULL while alive */
    int renewing;              /* registered for automatic lock renewal */
} message_t;

typedef struct batch {
    sbus_batch_t *b;           /* owned */
} batch_t;

/* An operation: a small userdata, no table of its own while it runs.
 * Its user value is the client's shared op env { [1] = client } until
 * it needs room of its own (a receive's receiver env, a renewed
 * message, a result other than true, an error): then a table of its own,
 * slots OPENV_*. A completed settle, send, open or close never gets one:
 * one allocation per op, no finalizer. */
typedef struct op {
    lua_Integer id;            /* the engine token */
    const char *what;          /* a string constant: "complete", ... */
    unsigned char done;        /* 1 once completed */
    unsigned char state;       /* OP_PENDING until done */
    unsigned char own_env;     /* the user value is this op's own table */
} op_t;

enum { OP_PENDING, OP_TRUE, OP_VALUE, OP_FAILED };

/* Slots of an op's env table. */
enum {
    OPENV_CLIENT = 1, /* the client (also in the shared env) */
    OPENV_R1 = 2,     /* results 1..3 (OP_VALUE: R1; OP_FAILED: R2, R3) */
    OPENV_R2 = 3,
    OPENV_R3 = 4,
    OPENV_EXTRA = 5,  /* receive/peek: the receiver env; settle: the
                         message while it is renewed */
    OPENV_ERROR = 6,  /* OP_FAILED: the error table */
    OPENV_SIZE = 6
};

/* ------------------------------------------------------------------ */
/* Type checks                                                         */
/* ------------------------------------------------------------------ */

/* Each metatable is also stored in the registry under the address of its
 * udtype_t, so that a type check is a pointer lookup (lua_rawgetp), not a
 * string lookup: it runs several times per message. */
typedef struct udtype {
    const char *name;
} udtype_t;

static const udtype_t UT_CLIENT = {MT_CLIENT}, UT_SENDER = {MT_SENDER},
                      UT_RECEIVER = {MT_RECEIVER}, UT_MESSAGE = {MT_MESSAGE},
                      UT_BATCH = {MT_BATCH}, UT_OP = {MT_OP};

/* Registry key of the table of the metatables of ops done with the result
 * true, by kind (op_done_meta); its "methods" field holds the op methods. */
static const char OPDONE_KEY = 0;

/* The userdata at i if its metatable is t's, else NULL. */
static void *test_ud(lua_State *L, int i, const udtype_t *t)
{
    void *p = lua_touserdata(L, i);
    int same;
    if (!p || !lua_getmetatable(L, i))
        return NULL;
    lua_rawgetp(L, LUA_REGISTRYINDEX, t);
    same = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return same ? p : NULL;
}

/* The userdata at i if its metatable is upvalue u of the running C
 * function, else NULL: the type check of the per-message methods, one
 * comparison instead of a registry lookup. */
static void *test_ud_up(lua_State *L, int i, int u)
{
    void *p = lua_touserdata(L, i);
    int same;
    if (!p || !lua_getmetatable(L, i))
        return NULL;
    same = lua_rawequal(L, -1, lua_upvalueindex(u));
    lua_pop(L, 1);
    return same ? p : NULL;
}

/* As test_ud, but raises the usual "bad argument" error. */
static void *check_ud(lua_State *L, int i, const udtype_t *t)
{
    void *p = test_ud(L, i, t);
    return p ? p : luaL_checkudata(L, i, t->name);
}

/* Sets the metatable of t on the value at the top of the stack. */
static void set_type(lua_State *L, const udtype_t *t)
{
    lua_rawgetp(L, LUA_REGISTRYINDEX, t);
    lua_setmetatable(L, -2);
}

/* ------------------------------------------------------------------ */
/* 2. Errors and conversions                                           */
/* ------------------------------------------------------------------ */

/* Pushes nil, message, code for an engine error code. */
static int push_fail(lua_State *L, int code, const char *msg)
{
    lua_pushnil(L);
    lua_pushstring(L, msg ? msg : sbus_strerror(code));
    lua_pushstring(L, sbus_errname(code));
    return 3;
}

static int64_t secs_to_ms(lua_Number s)
{
    return (int64_t)(s * 1000.0 + (s >= 0 ? 0.5 : -0.5));
}

static void push_ms_as_secs(lua_State *L, int64_t ms)
{
    lua_pushnumber(L, (lua_Number)ms / 1000.0);
}

/* Optional number argument in seconds -> ms, or dflt when nil/absent. */
static int64_t opt_secs_ms(lua_State *L, int i, int64_t dflt)
{
    if (lua_isnoneornil(L, i))
        return dflt;
    return secs_to_ms(luaL_checknumber(L, i));
}

static void push_uuid(lua_State *L, const uint8_t u[16])
{
    char s[37];
    sbus_uuid_format(u, s);
    lua_pushstring(L, s);
}

static void push_amqp(lua_State *L, const void *p, size_t n);

static void push_value(lua_State *L, const sbus_value_t *v)
{
    switch (v->type) {
    case SBUS_VAL_NULL: lua_pushlightuserdata(L, NULL); break;
    case SBUS_VAL_BOOL: lua_pushboolean(L, v->u.b); break;
    case SBUS_VAL_INT: lua_pushinteger(L, (lua_Integer)v->u.i); break;
    case SBUS_VAL_UINT:
        if (v->u.u <= (uint64_t)INT64_MAX)
            lua_pushinteger(L, (lua_Integer)v->u.u);
        else
            lua_pushnumber(L, (lua_Number)v->u.u);
        break;
    case SBUS_VAL_DOUBLE: lua_pushnumber(L, v->u.d); break;
    case SBUS_VAL_STRING:
    case SBUS_VAL_BINARY: lua_pushlstring(L, v->u.s.ptr, v->u.s.len); break;
    case SBUS_VAL_TIMESTAMP: push_ms_as_secs(L, v->u.i); break;
    case SBUS_VAL_UUID: push_uuid(L, v->u.uuid); break;
    case SBUS_VAL_AMQP: push_amqp(L, v->u.s.ptr, v->u.s.len); break;
    default: lua_pushnil(L); break;
    }
}

/* --- values of any AMQP type (lists, maps, char, decimal, ...) ------ */

#define MAX_DEPTH 32 /* the engine's writer and checker allow 32 levels */

/* Pushes code point cp as UTF-8 (an AMQP char). */
static void push_utf8(lua_State *L, uint64_t cp)
{
    char b[4];
    size_t n;
    if (cp > 0x10FFFF)
        cp = 0xFFFD;
    if (cp < 0x80) {
        b[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        b[0] = (char)(0xC0 | (cp >> 6));
        b[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        b[0] = (char)(0xE0 | (cp >> 12));
        b[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        b[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        b[0] = (char)(0xF0 | (cp >> 18));
        b[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        b[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        b[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    lua_pushlstring(L, b, n);
}

/* Pushes one item read by the engine's reader as a Lua value: LIST and
 * ARRAY a sequence table, MAP a table, DESCRIBED { descriptor =, value = },
 * CHAR a UTF-8 string, DECIMALnn its text ("12345E-2"), NULL inside a
 * compound servicebus.null (lists keep their length), the rest as
 * push_value. Malformed bytes end a compound early (what was read stays). */
static void push_item(lua_State *L, const sbus_amqp_item_t *it, int depth)
{
    sbus_amqp_reader_t in;
    sbus_amqp_item_t ch;
    size_t i;

    switch (it->type) {
    case SBUS_AMQP_CHAR:
        push_utf8(L, it->v.u.u);
        return;
    case SBUS_AMQP_DECIMAL32:
    case SBUS_AMQP_DECIMAL64:
    case SBUS_AMQP_DECIMAL128: {
        char text[48];
        if (sbus_amqp_decimal_format(it->v.u.s.ptr, it->v.u.s.len, text,
                                     sizeof text) < 0)
            lua_pushnil(L);
        else
            lua_pushstring(L, text);
        return;
    }
    case SBUS_AMQP_LIST:
    case SBUS_AMQP_ARRAY:
    case SBUS_AMQP_MAP:
    case SBUS_AMQP_DESCRIBED:
        break;
    default:
        push_value(L, &it->v);
        return;
    }
    if (depth >= MAX_DEPTH || !lua_checkstack(L, 4) ||
        sbus_amqp_enter(it, &in) < 0) {
        lua_pushnil(L);
        return;
    }
    if (it->type == SBUS_AMQP_DESCRIBED) {
        lua_createtable(L, 0, 2);
        if (sbus_amqp_read(&in, &ch) == 1) {
            push_item(L, &ch, depth + 1);
            lua_setfield(L, -2, "descriptor");
            if (sbus_amqp_read(&in, &ch) == 1) {
                push_item(L, &ch, depth + 1);
                lua_setfield(L, -2, "value");
            }
        }
        return;
    }
    if (it->type == SBUS_AMQP_MAP) {
        lua_createtable(L, 0, (int)(it->count / 2));
        for (i = 0; i + 1 < it->count; i += 2) {
            if (sbus_amqp_read(&in, &ch) != 1)
                break;
            push_item(L, &ch, depth + 1);
            if (sbus_amqp_read(&in, &ch) != 1) {
                lua_pop(L, 1);
                break;
            }
            push_item(L, &ch, depth + 1);
            if (lua_isnil(L, -2) || (lua_type(L, -2) == LUA_TNUMBER &&
                                     lua_tonumber(L, -2) != lua_tonumber(L, -2)))
                lua_pop(L, 2); /* no Lua key for it (NaN) */
            else
                lua_rawset(L, -3);
        }
        return;
    }
    lua_createtable(L, (int)it->count, 0);
    for (i = 0; i < it->count; i++) {
        if (sbus_amqp_read(&in, &ch) != 1)
            break;
        push_item(L, &ch, depth + 1);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
}

/* Pushes the one AMQP value encoded in p[n] (nil if malformed). */
static void push_amqp(lua_State *L, const void *p, size_t n)
{
    sbus_amqp_reader_t rd;
    sbus_amqp_item_t it;
    sbus_amqp_reader_init(&rd, p, n);
    if (sbus_amqp_read(&rd, &it) == 1)
        push_item(L, &it, 0);
    else
        lua_pushnil(L);
}

/* The writer that encodes tables: one per Lua state, kept in the registry
 * in a userdata whose __gc frees it (so a raise half-way leaks nothing). */
typedef struct writer_box {
    sbus_amqp_writer_t *w;
} writer_box_t;

static const udtype_t UT_WRITER = {"servicebus.writer"};

static int writer_gc(lua_State *L)
{
    writer_box_t *b = (writer_box_t *)test_ud(L, 1, &UT_WRITER);
    if (b && b->w) {
        sbus_amqp_writer_free(b->w);
        b->w = NULL;
    }
    return 0;
}

/* The state's writer, emptied. Raises if it cannot be allocated. */
static sbus_amqp_writer_t *get_writer(lua_State *L)
{
    writer_box_t *b;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &UT_WRITER);
    b = (writer_box_t *)lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (!b) {
        b = (writer_box_t *)lua_newuserdata(L, sizeof *b);
        b->w = NULL;
        set_type(L, &UT_WRITER);
        lua_rawsetp(L, LUA_REGISTRYINDEX, &UT_WRITER);
    }
    if (!b->w && sbus_amqp_writer_new(&b->w) < 0)
        luaL_error(L, "servicebus: %s", sbus_strerror(SBUS_ENOMEM));
    sbus_amqp_writer_reset(b->w);
    return b->w;
}

/* Values given as their AMQP encoding (servicebus.amqp(bytes)): a table
 * { bytes } with this metatable, sent verbatim. */
static const udtype_t UT_AMQP = {"servicebus.amqp"};

/* The bytes of the servicebus.amqp value at i, or NULL. */
static const char *amqp_bytes(lua_State *L, int i, size_t *n)
{
    const char *p = NULL;
    int same;
    if (lua_type(L, i) != LUA_TTABLE || !lua_getmetatable(L, i))
        return NULL;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &UT_AMQP);
    same = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    if (!same)
        return NULL;
    lua_rawgeti(L, i, 1);
    if (lua_type(L, -1) == LUA_TSTRING)
        p = lua_tolstring(L, -1, n); /* stays alive in the value table */
    lua_pop(L, 1);
    return p;
}

/* servicebus.amqp(encoded) -> a value sent exactly as these bytes (one
 * complete AMQP value: a char, a decimal, a described value, a symbol...)
 * as a property, a body or inside a list or map. Raises unless the bytes
 * are exactly one well-formed value. */
static int l_amqp(lua_State *L)
{
    size_t n;
    const char *p = luaL_checklstring(L, 1, &n);
    sbus_amqp_reader_t rd;
    sbus_amqp_item_t it;
    sbus_amqp_reader_init(&rd, p, n);
    /* one value, exactly these bytes (what is inside a compound value is
       checked again where the value is used) */
    if (sbus_amqp_read(&rd, &it) != 1 || it.encoded_len != n)
        return luaL_error(L, "servicebus.amqp: not one well-formed AMQP "
                             "value");
    lua_createtable(L, 1, 0);
    lua_pushvalue(L, 1);
    lua_rawseti(L, -2, 1);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &UT_AMQP);
    lua_setmetatable(L, -2);
    return 1;
}

/* 1 if the table at i is a sequence: keys exactly 1..#t (or empty). */
static int is_sequence_table(lua_State *L, int i)
{
    size_t n = (size_t)lua_rawlen(L, i), cnt = 0;
    lua_pushnil(L);
    while (lua_next(L, i)) {
        lua_pop(L, 1);
        if (++cnt > n) {
            lua_pop(L, 1);
            return 0;
        }
    }
    return cnt == n;
}

static void check_value(lua_State *L, int i, sbus_value_t *v,
                        const char *what);

/* Writes the Lua value at i into w: a sequence table as an AMQP list,
 * another table as a map (keys and values written the same way), the
 * rest as check_value() converts it. Raises on what cannot be sent. */
static void write_lua(lua_State *L, sbus_amqp_writer_t *w, int i, int depth,
                      const char *what)
{
    int rc;
    i = lua_absindex(L, i);
    if (lua_type(L, i) != LUA_TTABLE || amqp_bytes(L, i, NULL)) {
        sbus_value_t v;
        check_value(L, i, &v, what);
        rc = sbus_amqp_write_value(w, &v);
    } else {
        int list = is_sequence_table(L, i);
        if (depth >= MAX_DEPTH)
            luaL_error(L, "servicebus: %s: tables nested deeper than %d "
                          "(or a cycle)", what, MAX_DEPTH);
        luaL_checkstack(L, 4, "servicebus: tables nested too deep");
        rc = sbus_amqp_begin(w, list ? SBUS_AMQP_LIST : SBUS_AMQP_MAP);
        if (rc == 0 && list) {
            lua_Integer k, n = (lua_Integer)lua_rawlen(L, i);
            for (k = 1; k <= n; k++) {
                lua_rawgeti(L, i, k);
                write_lua(L, w, -1, depth + 1, what);
                lua_pop(L, 1);
            }
        } else if (rc == 0) {
            lua_pushnil(L);
            while (lua_next(L, i)) {
                write_lua(L, w, -2, depth + 1, what);
                write_lua(L, w, -1, depth + 1, what);
                lua_pop(L, 1);
            }
        }
        if (rc == 0)
            rc = sbus_amqp_end(w);
    }
    if (rc < 0)
        luaL_error(L, "servicebus: %s: %s", what, sbus_strerror(rc));
}

/* Encodes the table at i (see write_lua) into the state's writer; *p is
 * borrowed until the next encoding. */
static void encode_table(lua_State *L, int i, const char *what,
                         const void **p, size_t *n)
{
    sbus_amqp_writer_t *w = get_writer(L);
    int rc;
    write_lua(L, w, i, 0, what);
    rc = sbus_amqp_writer_result(w, p, n);
    if (rc < 0)
        luaL_error(L, "servicebus: %s: %s", what, sbus_strerror(rc));
}

/* --- amqp-sequence bodies ------------------------------------------- */

/* The marker of a sequence body: tables with this metatable (made by
 * servicebus.sequence(), and msg.body of a received one). */
static const udtype_t UT_SEQUENCE = {"servicebus.sequence"};

static int is_marked_sequence(lua_State *L, int i)
{
    int same;
    if (!lua_getmetatable(L, i))
        return 0;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &UT_SEQUENCE);
    same = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return same;
}

/* servicebus.sequence(section, ...) -> a sequence body: each section an
 * array (an AMQP list), e.g. sb.sequence({ 1, "two", { 3 } }). */
static int l_sequence(lua_State *L)
{
    int i, n = lua_gettop(L);
    lua_createtable(L, n, 0);
    for (i = 1; i <= n; i++) {
        luaL_checktype(L, i, LUA_TTABLE);
        lua_pushvalue(L, i);
        lua_rawseti(L, -2, i);
    }
    lua_rawgetp(L, LUA_REGISTRYINDEX, &UT_SEQUENCE);
    lua_setmetatable(L, -2);
    return 1;
}

/* servicebus.is_sequence(v) -> true if v is a sequence body table. */
static int l_is_sequence(lua_State *L)
{
    lua_pushboolean(L, lua_type(L, 1) == LUA_TTABLE && is_marked_sequence(L, 1));
    return 1;
}

/* Pushes the sections of a sequence body: an array of section tables,
 * marked as a sequence when `mark`. */
static void push_sequence(lua_State *L, const sbus_message_t *m, int mark)
{
    size_t i, n = sbus_message_body_sequence_count(m);
    lua_createtable(L, (int)n, 0);
    for (i = 0; i < n; i++) {
        const void *p;
        size_t len;
        if (sbus_message_body_sequence_at(m, i, &p, &len) != 0)
            break;
        push_amqp(L, p, len);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    if (mark) {
        lua_rawgetp(L, LUA_REGISTRYINDEX, &UT_SEQUENCE);
        lua_setmetatable(L, -2);
    }
}

/* Sets the body of m to the sequence at i (an array of section tables). */
static int set_body_sequence(lua_State *L, sbus_message_t *m, int i)
{
    lua_Integer k, n = (lua_Integer)lua_rawlen(L, i);
    int rc = 0;
    if (n == 0)
        luaL_error(L, "servicebus: a sequence body needs a section");
    for (k = 1; rc == 0 && k <= n; k++) {
        const void *p;
        size_t len;
        lua_rawgeti(L, i, k);
        if (lua_type(L, -1) != LUA_TTABLE || !is_sequence_table(L, lua_gettop(L)))
            luaL_error(L, "servicebus: sequence section %d must be an array",
                       (int)k);
        encode_table(L, -1, "sequence body", &p, &len);
        rc = k == 1 ? sbus_message_set_body_sequence(m, p, len)
                    : sbus_message_add_body_sequence(m, p, len);
        lua_pop(L, 1);
    }
    return rc;
}

/* Lua value at i -> v (strings borrowed from the Lua stack). Raises for
 * types that have no AMQP form. */
static void check_value(lua_State *L, int i, sbus_value_t *v, const char *what)
{
    memset(v, 0, sizeof *v);
    switch (lua_type(L, i)) {
    case LUA_TBOOLEAN:
        v->type = SBUS_VAL_BOOL;
        v->u.b = lua_toboolean(L, i);
        return;
    case LUA_TNUMBER:
        if (lua_isinteger(L, i)) {
            v->type = SBUS_VAL_INT;
            v->u.i = (int64_t)lua_tointeger(L, i);
        } else {
            v->type = SBUS_VAL_DOUBLE;
            v->u.d = (double)lua_tonumber(L, i);
        }
        return;
    case LUA_TSTRING:
        v->type = SBUS_VAL_STRING;
        v->u.s.ptr = lua_tolstring(L, i, &v->u.s.len);
        return;
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, i) == NULL) { /* servicebus.null */
            v->type = SBUS_VAL_NULL;
            return;
        }
        break;
    case LUA_TTABLE: /* a list or map: encoded (borrowed until the next) */
        v->type = SBUS_VAL_AMQP;
        v->u.s.ptr = amqp_bytes(L, i, &v->u.s.len);
        if (!v->u.s.ptr)
            encode_table(L, i, what, (const void **)&v->u.s.ptr, &v->u.s.len);
        return;
    default:
        break;
    }
    luaL_error(L, "servicebus: %s: cannot send a %s", what,
               luaL_typename(L, i));
}

/* ------------------------------------------------------------------ */
/* Userdata helpers                                                    */
/* ------------------------------------------------------------------ */

static client_t *to_client(lua_State *L, int i)
{
    return (client_t *)check_ud(L, i, &UT_CLIENT);
}

/* The client userdata at i, already checked by the caller or taken from
 * a uservalue slot this module filled (ENV_CLIENT): no second check. */
static client_t *client_at(lua_State *L, int i)
{
    return (client_t *)lua_touserdata(L, i);
}

static client_t *check_client(lua_State *L, int i)
{
    client_t *cl = to_client(L, i);
    if (!cl->conn)
        luaL_error(L, "servicebus: the client is closed");
    return cl;
}

static sender_t *check_sender(lua_State *L, int i)
{
    sender_t *sd = (sender_t *)check_ud(L, i, &UT_SENDER);
    if (!sd->s)
        luaL_error(L, "servicebus: the sender is closed");
    return sd;
}

static receiver_t *check_receiver(lua_State *L, int i)
{
    receiver_t *rv = (receiver_t *)check_ud(L, i, &UT_RECEIVER);
    if (!rv->r)
        luaL_error(L, "servicebus: the receiver is closed");
    return rv;
}

static message_t *check_message(lua_State *L, int i)
{
    return (message_t *)check_ud(L, i, &UT_MESSAGE);
}

/* The message at i, in a function that has the message metatable as
 * upvalue u (the message methods, __index, __gc): one comparison. */
static message_t *message_at(lua_State *L, int i, int u)
{
    message_t *mu = (message_t *)test_ud_up(L, i, u);
    return mu ? mu : check_message(L, i);
}

/* Pushes field `k` of the uservalue table of the userdata at i. */
static int get_env_field(lua_State *L, int i, const char *k)
{
    lua_getuservalue(L, i);
    lua_getfield(L, -1, k);
    lua_remove(L, -2);
    return lua_type(L, -1);
}

/* Hot slots of the uservalue tables, by integer (no string lookups):
 * a sender's or receiver's env (also every received message's) holds its
 * client and, for a receiver, itself; a client's env its waiters (id ->
 * op), the shared env of its ops ({ [1] = client }) and the op metatable. */
enum { ENV_CLIENT = 1, ENV_RX = 2 };
enum { ENV_WAITERS = 1, ENV_OPENV = 2, ENV_OPMETA = 3, ENV_OPDONE = 4 };

/* Pushes slot k of the uservalue table of the userdata at i. */
static void get_env_slot(lua_State *L, int i, int k)
{
    lua_getuservalue(L, i);
    lua_rawgeti(L, -1, k);
    lua_remove(L, -2);
}

/* The receiver a message was received on (pushed, may be nil) and its
 * C struct, or NULL. */
static receiver_t *message_receiver(lua_State *L, int mi)
{
    get_env_slot(L, mi, ENV_RX); /* filled by this module: no check */
    return (receiver_t *)lua_touserdata(L, -1);
}

static void child_link(client_t *cl, child_t *ch, void (*free_fn)(child_t *))
{
    ch->cl = cl;
    ch->free_fn = free_fn;
    ch->next = cl->children.next;
    ch->prev = &cl->children;
    cl->children.next->prev = ch;
    cl->children.next = ch;
}

static void child_unlink(child_t *ch)
{
    if (!ch->cl)
        return;
    ch->prev->next = ch->next;
    ch->next->prev = ch->prev;
    ch->next = ch->prev = NULL;
    ch->cl = NULL;
}

static void sender_free_fn(child_t *ch)
{
    sender_t *sd = (sender_t *)ch;
    if (sd->s)
        sbus_sender_free(sd->s);
    sd->s = NULL;
}

static void receiver_free_fn(child_t *ch)
{
    receiver_t *rv = (receiver_t *)ch;
    if (rv->r)
        sbus_receiver_free(rv->r);
    rv->r = NULL;
}

/* Frees every child, then the driver and the connection. No I/O beyond
 * closing the driver's socket; pending operations are abandoned (their
 * events are discarded with the connection). */
static void client_free(client_t *cl)
{
    while (cl->children.next != &cl->children) {
        child_t *ch = cl->children.next;
        ch->free_fn(ch);
        child_unlink(ch);
    }
    if (cl->io)
        sbus_io_free(cl->io);
    cl->io = NULL;
    if (cl->conn)
        sbus_conn_free(cl->conn);
    cl->conn = NULL;
}

/* Wraps an engine message (transfers to the new userdata). parent: stack
 * index of the receiver env table, or 0 for none; mt: stack index of the
 * message metatable. */
static message_t *push_message_mt(lua_State *L, sbus_message_t *m,
                                  int parent, int mt)
{
    message_t *mu = (message_t *)sbl_newuserdata(L, sizeof *mu);
    mu->m = m;
    mu->renewing = 0;
    lua_pushvalue(L, mt);
    lua_setmetatable(L, -2);
    if (parent)
        lua_pushvalue(L, parent);
    else
        lua_getfield(L, LUA_REGISTRYINDEX, REG_NOPARENT);
    lua_setuservalue(L, -2);
    return mu;
}

/* As push_message_mt, the message metatable taken from the registry. */
static message_t *push_message(lua_State *L, sbus_message_t *m, int parent)
{
    message_t *mu;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &UT_MESSAGE);
    mu = push_message_mt(L, m, parent, lua_gettop(L));
    lua_remove(L, -2);
    return mu;
}

/* ------------------------------------------------------------------ */
/* Message fields                                                      */
/* ------------------------------------------------------------------ */

enum fkind {
    F_PROP,       /* string property (sbus_prop_t) */
    F_TIME,       /* integer field, Unix ms -> seconds */
    F_SECS,       /* integer field, duration ms -> seconds */
    F_INT,        /* integer field */
    F_STATE,      /* x-opt-message-state as a name */
    F_BODY,       /* body: string (data) or value */
    F_SECTIONS,   /* data sections as an array of strings */
    F_BODYTYPE,   /* "data" | "value" | "sequence" */
    F_PROPERTIES, /* application properties table */
    F_LOCKTOKEN,  /* lock token uuid string */
    F_SETTLE,     /* settlement state name */
    F_SIZE,       /* encoded size in bytes */
};

typedef struct field_def {
    const char *name;
    enum fkind kind;
    int which;
} field_def_t;

static const field_def_t FIELDS[] = {
    {"body", F_BODY, 0},
    {"message_id", F_PROP, SBUS_PROP_MESSAGE_ID},
    {"correlation_id", F_PROP, SBUS_PROP_CORRELATION_ID},
    {"content_type", F_PROP, SBUS_PROP_CONTENT_TYPE},
    {"subject", F_PROP, SBUS_PROP_SUBJECT},
    {"label", F_PROP, SBUS_PROP_SUBJECT},
    {"to", F_PROP, SBUS_PROP_TO},
    {"reply_to", F_PROP, SBUS_PROP_REPLY_TO},
    {"reply_to_session_id", F_PROP, SBUS_PROP_REPLY_TO_SESSION_ID},
    {"session_id", F_PROP, SBUS_PROP_SESSION_ID},
    {"partition_key", F_PROP, SBUS_PROP_PARTITION_KEY},
    {"via_partition_key", F_PROP, SBUS_PROP_VIA_PARTITION_KEY},
    {"dead_letter_reason", F_PROP, SBUS_PROP_DEAD_LETTER_REASON},
    {"dead_letter_error_description", F_PROP,
     SBUS_PROP_DEAD_LETTER_DESCRIPTION},
    {"dead_letter_source", F_PROP, SBUS_PROP_DEAD_LETTER_SOURCE},
    {"time_to_live", F_SECS, SBUS_FIELD_TIME_TO_LIVE},
    {"scheduled_enqueue_time", F_TIME, SBUS_FIELD_SCHEDULED_ENQUEUE_TIME},
    {"scheduled_enqueue_time_utc", F_TIME, SBUS_FIELD_SCHEDULED_ENQUEUE_TIME},
    {"sequence_number", F_INT, SBUS_FIELD_SEQUENCE_NUMBER},
    {"enqueued_sequence_number", F_INT, SBUS_FIELD_ENQUEUED_SEQUENCE_NUMBER},
    {"enqueued_time", F_TIME, SBUS_FIELD_ENQUEUED_TIME},
    {"enqueued_time_utc", F_TIME, SBUS_FIELD_ENQUEUED_TIME},
    {"locked_until", F_TIME, SBUS_FIELD_LOCKED_UNTIL},
    {"locked_until_utc", F_TIME, SBUS_FIELD_LOCKED_UNTIL},
    {"delivery_count", F_INT, SBUS_FIELD_DELIVERY_COUNT},
    {"expires_at", F_TIME, SBUS_FIELD_EXPIRES_AT},
    {"expires_at_utc", F_TIME, SBUS_FIELD_EXPIRES_AT},
    {"state", F_STATE, SBUS_FIELD_STATE},
    {"body_sections", F_SECTIONS, 0},
    {"body_type", F_BODYTYPE, 0},
    {"properties", F_PROPERTIES, 0},
    {"application_properties", F_PROPERTIES, 0},
    {"lock_token", F_LOCKTOKEN, 0},
    {"settle_state", F_SETTLE, 0},
    {"size", F_SIZE, 0},
    {NULL, F_PROP, 0},
};

static const field_def_t *find_field(const char *name)
{
    const field_def_t *f;
    for (f = FIELDS; f->name; f++)
        if (strcmp(f->name, name) == 0)
            return f;
    return NULL;
}

static void push_body(lua_State *L, const sbus_message_t *m)
{
    sbus_value_t v;
    size_t i, n;
    luaL_Buffer b;

    switch (sbus_message_body_kind(m)) {
    case SBUS_BODY_DATA:
        n = sbus_message_body_count(m);
        if (n == 1) {
            const void *p;
            size_t len;
            if (sbus_message_body_at(m, 0, &p, &len) == 0) {
                lua_pushlstring(L, (const char *)p, len);
                return;
            }
        }
        luaL_buffinit(L, &b);
        for (i = 0; i < n; i++) {
            const void *p;
            size_t len;
            if (sbus_message_body_at(m, i, &p, &len) == 0)
                luaL_addlstring(&b, (const char *)p, len);
        }
        luaL_pushresult(&b);
        return;
    case SBUS_BODY_VALUE:
        if (sbus_message_body_value(m, &v) == 0) {
            push_value(L, &v);
            return;
        }
        lua_pushnil(L);
        return;
    case SBUS_BODY_SEQUENCE:
        push_sequence(L, m, 1);
        return;
    default:
        lua_pushnil(L);
        return;
    }
}

static void push_field(lua_State *L, const sbus_message_t *m,
                       const field_def_t *f)
{
    const char *s;
    size_t n, i;
    int64_t v;
    uint8_t u[16];

    switch (f->kind) {
    case F_PROP:
        if (sbus_message_get_prop(m, (sbus_prop_t)f->which, &s, &n) == 0)
            lua_pushlstring(L, s, n);
        else
            lua_pushnil(L);
        return;
    case F_TIME:
    case F_SECS:
        if (sbus_message_get_field(m, (sbus_field_t)f->which, &v) == 0)
            push_ms_as_secs(L, v);
        else
            lua_pushnil(L);
        return;
    case F_INT:
        if (sbus_message_get_field(m, (sbus_field_t)f->which, &v) == 0)
            lua_pushinteger(L, (lua_Integer)v);
        else
            lua_pushnil(L);
        return;
    case F_STATE:
        if (sbus_message_get_field(m, (sbus_field_t)f->which, &v) != 0)
            v = 0;
        lua_pushstring(L, v == 1 ? "deferred" : v == 2 ? "scheduled"
                                                       : "active");
        return;
    case F_BODY:
        push_body(L, m);
        return;
    case F_SECTIONS:
        if (sbus_message_body_kind(m) == SBUS_BODY_SEQUENCE) {
            push_sequence(L, m, 0);
            return;
        }
        n = sbus_message_body_count(m);
        lua_createtable(L, (int)n, 0);
        for (i = 0; i < n; i++) {
            const void *p;
            size_t len;
            if (sbus_message_body_at(m, i, &p, &len) == 0) {
                lua_pushlstring(L, (const char *)p, len);
                lua_rawseti(L, -2, (lua_Integer)i + 1);
            }
        }
        return;
    case F_BODYTYPE: {
        sbus_body_kind_t k = sbus_message_body_kind(m);
        lua_pushstring(L, k == SBUS_BODY_DATA    ? "data"
                          : k == SBUS_BODY_VALUE ? "value"
                                                 : "sequence");
        return;
    }
    case F_PROPERTIES:
        n = sbus_message_property_count(m);
        lua_createtable(L, 0, (int)n);
        for (i = 0; i < n; i++) {
            const char *k;
            size_t kl;
            sbus_value_t pv;
            if (sbus_message_property_at(m, i, &k, &kl, &pv) == 0) {
                lua_pushlstring(L, k, kl);
                push_value(L, &pv);
                lua_rawset(L, -3);
            }
        }
        return;
    case F_LOCKTOKEN:
        if (sbus_message_lock_token(m, u) == 0)
            push_uuid(L, u);
        else
            lua_pushnil(L);
        return;
    case F_SETTLE: {
        static const char *names[] = {"unsettled", "settled", "presettled",
                                      "peeked"};
        sbus_settle_state_t st = sbus_message_settle_state(m);
        lua_pushstring(L, (unsigned)st < 4 ? names[st] : "unknown");
        return;
    }
    case F_SIZE:
        lua_pushinteger(L, (lua_Integer)sbus_message_encoded_size(m));
        return;
    }
    lua_pushnil(L);
}

/* Sets message field f from the Lua value at vi (nil clears). Raises on a
 * wrong type or a value the engine refuses (misuse). */
static void set_field(lua_State *L, sbus_message_t *m, const field_def_t *f,
                      int vi)
{
    int rc = 0;
    vi = lua_absindex(L, vi);
    switch (f->kind) {
    case F_PROP:
        if (lua_isnil(L, vi)) {
            rc = sbus_message_set_prop(m, (sbus_prop_t)f->which, NULL, 0);
        } else {
            size_t n;
            const char *s;
            if (lua_type(L, vi) != LUA_TSTRING)
                luaL_error(L, "servicebus: message field '%s' must be a "
                              "string, not %s", f->name, luaL_typename(L, vi));
            s = lua_tolstring(L, vi, &n);
            rc = sbus_message_set_prop(m, (sbus_prop_t)f->which, s, n);
        }
        break;
    case F_TIME:
    case F_SECS:
        if (lua_isnil(L, vi)) {
            rc = sbus_message_clear_field(m, (sbus_field_t)f->which);
            if (rc == SBUS_ENOENT)
                rc = 0;
        } else {
            if (lua_type(L, vi) != LUA_TNUMBER)
                luaL_error(L, "servicebus: message field '%s' must be a "
                              "number of seconds", f->name);
            rc = sbus_message_set_field(m, (sbus_field_t)f->which,
                                        secs_to_ms(lua_tonumber(L, vi)));
        }
        break;
    case F_BODY:
        if (lua_type(L, vi) == LUA_TSTRING) {
            size_t n;
            const char *s = lua_tolstring(L, vi, &n);
            rc = sbus_message_set_body(m, s, n);
        } else if (lua_type(L, vi) == LUA_TTABLE && is_marked_sequence(L, vi)) {
            rc = set_body_sequence(L, m, vi);
        } else if (lua_type(L, vi) == LUA_TTABLE && !amqp_bytes(L, vi, NULL)) {
            /* an array of strings: one data section each */
            lua_Integer i, n = (lua_Integer)lua_rawlen(L, vi);
            rc = sbus_message_set_body(m, "", 0);
            for (i = 1; rc == 0 && i <= n; i++) {
                size_t len;
                const char *s;
                lua_rawgeti(L, vi, i);
                if (lua_type(L, -1) != LUA_TSTRING)
                    luaL_error(L, "servicebus: body section %d must be a "
                                  "string", (int)i);
                s = lua_tolstring(L, -1, &len);
                rc = i == 1 ? sbus_message_set_body(m, s, len)
                            : sbus_message_add_body_section(m, s, len);
                lua_pop(L, 1);
            }
        } else if (lua_isnil(L, vi)) {
            rc = sbus_message_set_body(m, "", 0);
        } else {
            sbus_value_t v;
            check_value(L, vi, &v, "body");
            rc = sbus_message_set_body_value(m, &v);
        }
        break;
    case F_PROPERTIES:
        while (sbus_message_property_count(m) > 0) {
            const char *k;
            size_t kl;
            sbus_value_t pv;
            if (sbus_message_property_at(m, 0, &k, &kl, &pv) != 0 ||
                sbus_message_del_property(m, k, kl) != 0)
                break;
        }
        if (lua_isnil(L, vi))
            break;
        luaL_checktype(L, vi, LUA_TTABLE);
        lua_pushnil(L);
        while (rc == 0 && lua_next(L, vi)) {
            size_t kl;
            const char *k;
            sbus_value_t v;
            if (lua_type(L, -2) != LUA_TSTRING)
                luaL_error(L, "servicebus: property names must be strings");
            k = lua_tolstring(L, -2, &kl);
            check_value(L, -1, &v, k);
            rc = sbus_message_set_property(m, k, kl, &v);
            lua_pop(L, 1);
        }
        break;
    default:
        luaL_error(L, "servicebus: message field '%s' is read-only",
                   f->name);
    }
    if (rc < 0)
        luaL_error(L, "servicebus: message field '%s': %s", f->name,
                   sbus_strerror(rc));
}

/* Fills the new message m from the string (body) or table of fields at i
 * (t: its lua_type). Raises on an unknown field or a value the engine
 * refuses.
 *
 * borrow: a string body is not copied (sbus_message_set_body_ref): m
 * refers to the Lua string's bytes, which Lua never changes. The caller
 * then guarantees that the string outlives every use of m's body: a string
 * at i stays on the stack; a table's body string is pushed (one stack slot,
 * the caller made room) and stays there, below the caller's results, until
 * the call returns. Only for a message that the engine copies within this
 * call (sbus_sender_send / sbus_sender_schedule encode it at once) and that
 * is reset or freed without being read again (the send pool, the msglist's
 * __gc: neither reads the body). */
static void fill_message(lua_State *L, sbus_message_t *m, int i, int t,
                         int borrow)
{
    if (t == LUA_TSTRING) {
        if (borrow) {
            size_t n;
            const char *s = lua_tolstring(L, i, &n);
            int rc = sbus_message_set_body_ref(m, s, n);
            if (rc < 0)
                luaL_error(L, "servicebus: message field 'body': %s",
                           sbus_strerror(rc));
        } else {
            set_field(L, m, &FIELDS[0], i); /* "body" */
        }
        return;
    }
    lua_pushnil(L);
    while (lua_next(L, i)) {
        const field_def_t *f;
        if (lua_type(L, -2) != LUA_TSTRING)
            luaL_error(L, "servicebus: message fields are named by strings");
        f = find_field(lua_tostring(L, -2));
        if (!f)
            luaL_error(L, "servicebus: unknown message field '%s'",
                       lua_tostring(L, -2));
        if (borrow && f == &FIELDS[0] && lua_type(L, -1) == LUA_TSTRING) {
            size_t n;
            const char *s = lua_tolstring(L, -1, &n);
            int rc = sbus_message_set_body_ref(m, s, n);
            if (rc < 0)
                luaL_error(L, "servicebus: message field 'body': %s",
                           sbus_strerror(rc));
            /* anchor: ... key body -> ... body key body */
            lua_pushvalue(L, -1);
            lua_insert(L, -3);
        } else {
            set_field(L, m, f, -1);
        }
        lua_pop(L, 1);
    }
}

static void check_message_like(lua_State *L, int i)
{
    if (lua_type(L, i) != LUA_TSTRING && lua_type(L, i) != LUA_TTABLE)
        luaL_error(L, "servicebus: a message is a string, a table or a "
                      "servicebus message, not %s", luaL_typename(L, i));
}

/* The message at i as an engine message: a message object's own, or a new
 * one built from a string or table and pushed as a message object (so
 * that it is freed whatever happens). */
static sbus_message_t *to_send_message(lua_State *L, int i)
{
    message_t *mu;
    i = lua_absindex(L, i);
    if ((mu = (message_t *)test_ud(L, i, &UT_MESSAGE)) != NULL) {
        lua_pushvalue(L, i);
        return mu->m;
    }
    check_message_like(L, i);
    {
        sbus_message_t *m = NULL;
        int rc = sbus_message_new(&m);
        if (rc < 0)
            luaL_error(L, "servicebus: %s", sbus_strerror(rc));
        mu = push_message(L, m, 0);
    }
    fill_message(L, mu->m, i, lua_type(L, i), 0); /* its own bytes */
    return mu->m;
}

static int is_message_list(lua_State *L, int i)
{
    int r;
    if (lua_type(L, i) != LUA_TTABLE)
        return 0;
    lua_rawgeti(L, i, 1);
    r = !lua_isnil(L, -1);
    lua_pop(L, 1);
    return r;
}

/* Engine messages kept for the next send (per Lua state, in the registry):
 * a send built from strings and tables needs an engine message per
 * message only while the engine encodes them (it copies), and allocating
 * and freeing 100 of them per batch cost more than the rest of the
 * binding's work (bindings/lua/STATUS.md, Speed). A pooled message is as
 * sbus_message_new() made it (sbus_message_reset). */
#define POOL_MAX 128

typedef struct msgpool {
    size_t n;                    /* messages in m */
    sbus_message_t *m[POOL_MAX]; /* owned */
} msgpool_t;

static const udtype_t UT_MSGPOOL = {"servicebus.msgpool"};

static int msgpool_gc(lua_State *L)
{
    msgpool_t *p = (msgpool_t *)lua_touserdata(L, 1);
    while (p && p->n > 0)
        sbus_message_free(p->m[--p->n]);
    return 0;
}

/* The state's pool (created by luaopen_servicebus). */
static msgpool_t *msgpool(lua_State *L)
{
    msgpool_t *p;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &UT_MSGPOOL);
    p = (msgpool_t *)lua_touserdata(L, -1);
    lua_pop(L, 1);
    return p;
}

/* Takes m back into p, made like new, or frees it (the pool is full). */
static void msgpool_put(msgpool_t *p, sbus_message_t *m)
{
    if (!p || p->n == POOL_MAX || sbus_message_reset(m) < 0) {
        sbus_message_free(m);
        return;
    }
    p->m[p->n++] = m;
}

/* The messages of one send or schedule call: a userdata whose __gc frees
 * the engine messages taken or built here from strings and tables, so
 * that a raise half-way leaks nothing (the engine copies them;
 * msglist_release() gives them back to the pool right after). */
typedef struct msglist {
    size_t n;              /* entries filled */
    sbus_message_t **arr;  /* n messages */
    unsigned char *owned;  /* 1: built here, freed or pooled here */
} msglist_t;

static const udtype_t UT_MSGLIST = {"servicebus.msglist"};

static void msglist_release(lua_State *L, msglist_t *ml)
{
    size_t k;
    msgpool_t *p = L ? msgpool(L) : NULL;
    for (k = 0; k < ml->n; k++)
        if (ml->owned[k] && ml->arr[k])
            msgpool_put(p, ml->arr[k]);
    ml->n = 0;
}

/* __gc: only after a raise half-way: freed, never pooled (at lua_close
 * the pool may be gone already). */
static int msglist_gc(lua_State *L)
{
    msglist_t *ml = (msglist_t *)test_ud(L, 1, &UT_MSGLIST);
    if (ml)
        msglist_release(NULL, ml);
    return 0;
}

/* Adds the message at i (a message object stays the caller's; it is
 * referenced by the argument being collected, so it lives long enough).
 * borrow: as fill_message (may push one anchor). */
static void msglist_add(lua_State *L, msglist_t *ml, msgpool_t *p, int i,
                        int borrow)
{
    message_t *mu;
    size_t k = ml->n;
    int t = lua_type(L, i);
    if (t != LUA_TTABLE && t != LUA_TSTRING) {
        if ((mu = (message_t *)test_ud(L, i, &UT_MESSAGE)) != NULL) {
            ml->arr[k] = mu->m;
            ml->owned[k] = 0;
            ml->n = k + 1;
            return;
        }
        check_message_like(L, i); /* raises */
    }
    if (p && p->n > 0) {
        ml->arr[k] = p->m[--p->n]; /* moves: the msglist owns it now */
    } else {
        int rc = sbus_message_new(&ml->arr[k]);
        if (rc < 0)
            luaL_error(L, "servicebus: %s", sbus_strerror(rc));
    }
    ml->owned[k] = 1;
    ml->n = k + 1; /* from now on __gc frees it */
    fill_message(L, ml->arr[k], i, t, borrow);
}

/* Lists up to this many messages borrow their body strings (two stack
 * slots each); longer ones copy (LuaJIT allows a C function ~8,000 slots). */
#define BORROW_MAX 2048

/* Collects a message, or a list of them, at i; pushes the msglist that
 * owns what was built (call msglist_release() once the engine copied),
 * and above it the body strings the messages borrow (fill_message): they
 * stay on the stack until the calling C function returns, so the caller
 * must hand the messages to the engine (which copies them) before then
 * and push its results on top. */
static msglist_t *collect_messages(lua_State *L, int i)
{
    msglist_t *ml;
    msgpool_t *p = msgpool(L);
    size_t k, cnt;
    int list, borrow;
    i = lua_absindex(L, i);
    list = is_message_list(L, i);
    cnt = list ? (size_t)lua_rawlen(L, i) : 1;
    ml = (msglist_t *)lua_newuserdata(L, sizeof *ml + cnt * (sizeof *ml->arr + 1));
    ml->n = 0;
    ml->arr = (sbus_message_t **)(ml + 1);
    ml->owned = (unsigned char *)(ml->arr + cnt);
    set_type(L, &UT_MSGLIST);
    borrow = cnt <= BORROW_MAX && lua_checkstack(L, 2 * (int)cnt + 8);
    if (!list) {
        msglist_add(L, ml, p, i, borrow);
        return ml;
    }
    for (k = 0; k < cnt; k++) {
        int top = lua_gettop(L);
        lua_rawgeti(L, i, (lua_Integer)k + 1);
        msglist_add(L, ml, p, top + 1, borrow);
        if (!borrow) /* else the entry (a string?) and its anchor stay */
            lua_settop(L, top);
    }
    return ml;
}

/* Sequence numbers from an integer or an array of integers, into a C array
 * kept in a userdata pushed on the stack. */
static int64_t *collect_seqs(lua_State *L, int i, size_t *n)
{
    int64_t *arr;
    size_t k, cnt;
    i = lua_absindex(L, i);
    if (lua_type(L, i) == LUA_TNUMBER) {
        arr = (int64_t *)lua_newuserdata(L, sizeof *arr);
        arr[0] = (int64_t)luaL_checkinteger(L, i);
        *n = 1;
        return arr;
    }
    luaL_checktype(L, i, LUA_TTABLE);
    cnt = (size_t)lua_rawlen(L, i);
    arr = (int64_t *)lua_newuserdata(L, sizeof *arr * (cnt ? cnt : 1));
    for (k = 0; k < cnt; k++) {
        lua_rawgeti(L, i, (lua_Integer)k + 1);
        if (!lua_isinteger(L, -1))
            luaL_error(L, "servicebus: sequence numbers must be integers");
        arr[k] = (int64_t)lua_tointeger(L, -1);
        lua_pop(L, 1);
    }
    *n = cnt;
    return arr;
}

/* ------------------------------------------------------------------ */
/* 3. The event drain                                                  */
/* ------------------------------------------------------------------ */

static int next_event(client_t *cl, sbus_event_t *ev)
{
    if (!cl->conn)
        return 0;
    if (cl->io)
        return sbus_io_next_event(cl->io, ev);
    return sbus_conn_next_event(cl->conn, ev);
}

/* Calls the function at the top of the stack with nargs arguments below
 * it... in protected mode; a failing callback is reported on stderr and
 * never breaks the drain. */
static void call_callback(lua_State *L, int nargs, const char *what)
{
    if (lua_pcall(L, nargs, 0, 0) != 0) {
        fprintf(stderr, "servicebus: %s failed: %s\n", what,
                lua_tostring(L, -1));
        lua_pop(L, 1);
    }
}

/* Pushes the env table of the op at opi, first giving the op one of its
 * own (a copy of the shared { [1] = client }) if it has none. */
static void op_own_env(lua_State *L, int opi, op_t *o)
{
    if (o->own_env) {
        lua_getuservalue(L, opi);
        return;
    }
    lua_createtable(L, OPENV_SIZE, 0);
    lua_getuservalue(L, opi);
    lua_rawgeti(L, -1, OPENV_CLIENT);
    lua_rawseti(L, -3, OPENV_CLIENT);
    lua_pop(L, 1);
    lua_pushvalue(L, -1);
    lua_setuservalue(L, opi);
    o->own_env = 1;
}

/* Records an error result in the op at opi. */
static void op_set_error(lua_State *L, int opi, op_t *o, const sbus_error_t *e)
{
    int ei;
    op_own_env(L, opi, o);
    ei = lua_gettop(L);
    lua_pushstring(L, e->description ? e->description
                                     : sbus_strerror(e->code));
    lua_rawseti(L, ei, OPENV_R2);
    lua_pushstring(L, sbus_errname(e->code));
    lua_rawseti(L, ei, OPENV_R3);
    lua_createtable(L, 0, 6);
    lua_pushinteger(L, e->code);
    lua_setfield(L, -2, "errno");
    lua_pushstring(L, sbus_errname(e->code));
    lua_setfield(L, -2, "code");
    if (e->condition) {
        lua_pushstring(L, e->condition);
        lua_setfield(L, -2, "condition");
    }
    lua_rawgeti(L, ei, OPENV_R2);
    lua_setfield(L, -2, "message");
    lua_pushboolean(L, e->retriable);
    lua_setfield(L, -2, "retriable");
    lua_pushboolean(L, e->fatal);
    lua_setfield(L, -2, "fatal");
    lua_rawseti(L, ei, OPENV_ERROR);
    lua_pop(L, 1);
    o->state = OP_FAILED;
}

/* The value at the top of the stack (popped) is the op's one result. */
static void op_set_result1(lua_State *L, int opi, op_t *o)
{
    op_own_env(L, opi, o);
    lua_insert(L, -2);
    lua_rawseti(L, -2, OPENV_R1);
    lua_pop(L, 1);
    o->state = OP_VALUE;
}

/* Clears the automatic-renewal anchor env.renew[key] (envi: client env). */
static void unanchor(lua_State *L, int envi, const void *key)
{
    lua_getfield(L, envi, "renew");
    lua_pushlightuserdata(L, (void *)key);
    lua_pushnil(L);
    lua_rawset(L, -3);
    lua_pop(L, 1);
}

static void free_event_messages(const sbus_event_t *ev)
{
    size_t i;
    if (!ev->messages)
        return;
    for (i = 0; i < ev->count; i++)
        sbus_message_free(ev->messages[i]);
}

/* Bytes a received message holds outside the Lua heap (its payload and
 * the engine's bookkeeping), roughly. */
static size_t message_held_bytes(const sbus_message_t *m)
{
    const void *p;
    size_t n = 0;
    if (sbus_message_body_kind(m) != SBUS_BODY_DATA ||
        sbus_message_body_at(m, 0, &p, &n) != 0)
        n = 0;
    return n + 512;
}

/* Received messages hold their payloads outside the Lua heap, where the
 * GC does not see them: a userdata of a few bytes stands for kilobytes.
 * Left alone, garbage messages pile up for many batches and die together.
 * On LuaJIT, whose objects are not in malloc's heap, freeing them emptied
 * the top of that heap from the newest down, and glibc gave it back to
 * the kernel and took it again a moment later: 11,000 more page faults
 * (and thousands of brk calls) per 100,000 messages received and
 * completed than Lua 5.4, whose own objects sit between the messages
 * (bindings/lua/STATUS.md). So on LuaJIT the client counts what it hands
 * out (gc_debt) and each operation started while GC_DEBT_STEP of it is
 * unpaid runs the GC steps that GC_STEP_KB of Lua allocation would: the
 * steps come when the program starts work, after it dropped the previous
 * batch, not while its stack still holds it. (One basic step per 64 KiB
 * was enough while each op was a table of ~180 bytes; ops are 48-byte
 * userdata now, and with that step alone LuaJIT's faults doubled again:
 * 8 KiB per 64 KiB brings them back to ~1,260 per 30,000 messages,
 * against 1,500-1,800 before, without the CPU that paying the full
 * 64 KiB costs.) On Lua 5.4 the same steps
 * only cost time (+2-3% instructions, same faults and peak RSS), so it
 * is left to its own pacing. Nothing happens while the program keeps the
 * GC stopped. */
#if LUA_VERSION_NUM < 503
#define SBL_GC_PACE 1
#else
#define SBL_GC_PACE 0
#endif
#define GC_DEBT_STEP (64 * 1024)
#define GC_STEP_KB 8

static void gc_pay(lua_State *L, client_t *cl)
{
    cl->gc_debt -= GC_DEBT_STEP;
    if (lua_gc(L, LUA_GCISRUNNING, 0))
        lua_gc(L, LUA_GCSTEP, GC_STEP_KB);
}

/* Pushes the metatable of ops of kind `what` done with the result true
 * (the usual end of a completion, a send, an open, a close), from the
 * table at ti (OPDONE_KEY), made on first use. Its __index is a plain
 * table: { what, done = true, [1] = true, wait/result/is_done returning
 * true, cancel, set_timeout }, so waiting on such an op, or reading
 * op.done, runs no C and no __index function (LuaJIT keeps the caller's
 * loop in one trace). */
static void op_done_meta(lua_State *L, int ti, const char *what)
{
    int mi, ii;
    if (lua_rawgetp(L, ti, what) != LUA_TNIL)
        return;
    lua_pop(L, 1);
    lua_createtable(L, 0, 4);
    mi = lua_gettop(L);
    lua_createtable(L, 1, 8);
    ii = lua_gettop(L);
    lua_getfield(L, ti, "methods");
    lua_pushnil(L);
    while (lua_next(L, ii + 1)) {
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, ii);
    }
    lua_getfield(L, -1, "_true"); /* function() return true end */
    lua_pushvalue(L, -1);
    lua_setfield(L, ii, "wait");
    lua_pushvalue(L, -1);
    lua_setfield(L, ii, "result");
    lua_setfield(L, ii, "is_done");
    lua_pop(L, 1); /* methods */
    lua_pushstring(L, what);
    lua_setfield(L, ii, "what");
    lua_pushboolean(L, 1);
    lua_setfield(L, ii, "done");
    lua_pushboolean(L, 1);
    lua_rawseti(L, ii, 1);
    lua_setfield(L, mi, "__index");
    lua_pushstring(L, MT_OP);
    lua_setfield(L, mi, "__name");
    lua_rawgetp(L, LUA_REGISTRYINDEX, &UT_OP);
    lua_getfield(L, -1, "__tostring");
    lua_setfield(L, mi, "__tostring");
    lua_pop(L, 1);
    lua_pushboolean(L, 1);
    lua_rawsetp(L, mi, &UT_OP);
    lua_pushvalue(L, mi);
    lua_rawsetp(L, ti, what);
}

static void handle_done(lua_State *L, client_t *cl, int envi,
                        const sbus_event_t *ev)
{
    lua_Integer id = TOKEN_ID(ev->token);
    op_t *o;
    int opi;
    size_t i;

    lua_rawgeti(L, envi, ENV_WAITERS);
    lua_rawgeti(L, -1, id);
    o = (op_t *)lua_touserdata(L, -1);
    if (!o) { /* not ours (cannot happen): free what it holds */
        free_event_messages(ev);
        lua_pop(L, 2);
        return;
    }
    opi = lua_gettop(L);
    lua_pushboolean(L, 0);
    lua_rawseti(L, -3, id); /* waiters[id] = false: a free slot */
    cl->free_slots[cl->nfree++] = id;
    cl->completed++;

    if (ev->error) {
        free_event_messages(ev);
        op_set_error(L, opi, o, ev->error);
    } else {
        switch (ev->op) {
        case SBUS_OP_RECEIVE:
        case SBUS_OP_PEEK:
        case SBUS_OP_RECEIVE_DEFERRED: {
            int parent, mt;
            size_t held = 0;
            op_own_env(L, opi, o);
            lua_rawgeti(L, -1, OPENV_EXTRA);
            parent = lua_istable(L, -1) ? lua_gettop(L) : 0;
            lua_rawgetp(L, LUA_REGISTRYINDEX, &UT_MESSAGE);
            mt = lua_gettop(L);
            lua_createtable(L, (int)ev->count, 0);
            for (i = 0; i < ev->count; i++) {
                if (SBL_GC_PACE)
                    held += message_held_bytes(ev->messages[i]);
                push_message_mt(L, ev->messages[i], parent, mt);
                lua_rawseti(L, -2, (lua_Integer)i + 1);
            }
            lua_rawseti(L, mt - 2, OPENV_R1);
            o->state = OP_VALUE;
            lua_pop(L, 3); /* metatable, rxenv, env */
            if (SBL_GC_PACE)
                cl->gc_debt += held;
            break;
        }
        case SBUS_OP_SCHEDULE:
            lua_createtable(L, (int)ev->count, 0);
            for (i = 0; i < ev->count && ev->seqs; i++) {
                lua_pushinteger(L, (lua_Integer)ev->seqs[i]);
                lua_rawseti(L, -2, (lua_Integer)i + 1);
            }
            op_set_result1(L, opi, o);
            break;
        case SBUS_OP_RENEW_LOCK:
        case SBUS_OP_SESSION_RENEW_LOCK:
            push_ms_as_secs(L, ev->time_ms);
            op_set_result1(L, opi, o);
            break;
        case SBUS_OP_SESSION_GET_STATE:
            if (ev->data)
                lua_pushlstring(L, (const char *)ev->data, ev->len);
            else
                lua_pushnil(L);
            op_set_result1(L, opi, o);
            break;
        default:
            o->state = OP_TRUE;
            lua_rawgeti(L, envi, ENV_OPDONE);
            op_done_meta(L, lua_gettop(L), o->what);
            lua_setmetatable(L, opi);
            lua_pop(L, 1);
            break;
        }
    }

    /* A settled message is no longer renewed by the engine. Only a
     * message renewed when its settlement started has an anchor to drop
     * (the engine refuses to renew a message being settled), and only
     * such a settle op holds its message (OPENV_EXTRA). */
    if (ev->op == SBUS_OP_SETTLE && o->own_env) {
        lua_getuservalue(L, opi);
        lua_rawgeti(L, -1, OPENV_EXTRA);
        message_t *mu = (message_t *)test_ud(L, -1, &UT_MESSAGE);
        if (mu && !ev->error && mu->renewing) {
            mu->renewing = 0;
            unanchor(L, envi, mu->m);
        }
        lua_pushnil(L);
        lua_rawseti(L, -3, OPENV_EXTRA); /* the op no longer holds it */
        lua_pop(L, 2);
    }

    o->done = 1;
    lua_pop(L, 2); /* op, waiters */
}

/* An automatic renewal stopped: env.renew[key] = {object, callback} */
static void handle_renew_failed(lua_State *L, int envi, const sbus_event_t *ev)
{
    const void *key = ev->message ? (const void *)ev->message : ev->object;
    int ei;
    lua_getfield(L, envi, "renew");
    lua_pushlightuserdata(L, (void *)key);
    lua_rawget(L, -2);
    if (!lua_istable(L, -1)) {
        lua_pop(L, 2);
        return;
    }
    ei = lua_gettop(L);
    lua_pushlightuserdata(L, (void *)key);
    lua_pushnil(L);
    lua_rawset(L, -4);
    lua_rawgeti(L, ei, 1); /* the message or receiver */
    {
        message_t *mu = (message_t *)test_ud(L, -1, &UT_MESSAGE);
        if (mu)
            mu->renewing = 0;
    }
    lua_rawgeti(L, ei, 2); /* the callback */
    if (lua_isfunction(L, -1)) {
        lua_insert(L, -2);
        if (ev->error) {
            lua_pushstring(L, ev->error->description);
            lua_pushstring(L, sbus_errname(ev->error->code));
        } else {
            lua_pushstring(L, "lock renewal stopped");
            lua_pushstring(L, sbus_errname(SBUS_ESERVICE));
        }
        call_callback(L, 3, "lock renewal failure callback");
    } else {
        lua_pop(L, 2);
    }
    lua_pop(L, 2); /* entry, renew */
}

static void handle_token(lua_State *L, client_t *cl, int envi,
                         const sbus_event_t *ev)
{
    const char *aud;
    int ai;
    /* a Lua copy: the callback may step the driver, which ends the event */
    lua_pushstring(L, ev->audience ? ev->audience : "");
    ai = lua_gettop(L);
    aud = lua_tostring(L, ai);
    lua_getfield(L, envi, "token_provider");
    if (!lua_isfunction(L, -1)) {
        lua_pop(L, 2);
        sbus_conn_set_token(cl->conn, aud, NULL, 0,
                            "no token_provider was given");
        return;
    }
    lua_pushvalue(L, ai);
    if (lua_pcall(L, 1, 2, 0) != 0) {
        if (cl->conn)
            sbus_conn_set_token(cl->conn, aud, NULL, 0, lua_tostring(L, -1));
        lua_pop(L, 2);
        return;
    }
    if (!cl->conn) { /* the callback closed the client */
        lua_pop(L, 3);
        return;
    }
    if (lua_type(L, -2) != LUA_TSTRING) {
        sbus_conn_set_token(cl->conn, aud, NULL, 0,
                            lua_isstring(L, -1) ? lua_tostring(L, -1)
                                                : "token_provider gave no "
                                                  "token");
    } else {
        sbus_conn_set_token(cl->conn, aud, lua_tostring(L, -2),
                            (int64_t)lua_tonumber(L, -1), NULL);
    }
    lua_pop(L, 3);
}

/* Pulls every pending event of the client at stack index ci and completes
 * the ops they belong to. Callbacks (logger, renewal failure, token
 * provider) run here, in protected mode; they may call the client. */
static void drain(lua_State *L, int ci)
{
    client_t *cl = client_at(L, ci);
    sbus_event_t ev;
    int envi;

    if (!cl->conn || sbus_conn_peek_event(cl->conn) == SBUS_EV_NONE)
        return; /* the common case after starting an operation */
    ci = lua_absindex(L, ci);
    lua_getuservalue(L, ci);
    envi = lua_gettop(L);
    while (next_event(cl, &ev)) {
        switch (ev.type) {
        case SBUS_EV_DONE:
            handle_done(L, cl, envi, &ev);
            break;
        case SBUS_EV_RENEW_FAILED:
            handle_renew_failed(L, envi, &ev);
            break;
        case SBUS_EV_TOKEN:
            handle_token(L, cl, envi, &ev);
            break;
        case SBUS_EV_LOG:
            lua_getfield(L, envi, "logger");
            if (lua_isfunction(L, -1)) {
                lua_pushstring(L, ev.text ? ev.text : "");
                call_callback(L, 1, "logger");
            } else {
                lua_pop(L, 1);
                /* warnings (level 1) always reach stderr; traces only
                 * when logging is on and no logger takes them */
                if (cl->trace_stderr || ev.level)
                    fprintf(stderr, "servicebus: %s%s\n",
                            ev.level ? "warning: " : "", ev.text);
            }
            break;
        case SBUS_EV_CONNECT: /* host mode only: io answers it itself */
            cl->want_connect = 1;
            cl->want_disconnect = 0;
            snprintf(cl->connect_host, sizeof cl->connect_host, "%s",
                     ev.host ? ev.host : "");
            cl->connect_port = ev.port;
            break;
        case SBUS_EV_DISCONNECT:
            cl->want_disconnect = 1;
            break;
        default:
            break;
        }
    }
    lua_pop(L, 1);
}

/* ------------------------------------------------------------------ */
/* Operations                                                          */
/* ------------------------------------------------------------------ */

/* Time may have moved since the last tick (the program did other work
 * between two calls); the engine wants to know before an operation starts
 * its timers, which count from the engine's idea of now. */
static void tick_engine(client_t *cl)
{
    if (!cl->conn)
        return;
    cl->tick_ms = sbus_io_mono_ms();
    int64_t d = sbus_conn_tick(cl->conn, cl->tick_ms, sbus_io_unix_ms());
    if (cl->host)
        cl->deadline = d; /* core/io asks the engine again when asked */
}

/* Host mode: the engine's clock before a host call. */
static void tick_host(client_t *cl)
{
    if (cl->host)
        tick_engine(cl);
}

/* Pushes a new op for the client at stack index ci; returns its id. The
 * op is registered as a waiter only once the engine accepts it. */
static lua_Integer op_new(lua_State *L, int ci, const char *what)
{
    client_t *cl = client_at(L, ci);
    op_t *o;
    ci = lua_absindex(L, ci);
    if (sbus_io_mono_ms() != cl->tick_ms) /* else the engine knows now */
        tick_engine(cl);
    if (cl->gc_debt >= GC_DEBT_STEP)
        gc_pay(L, cl);
    if (cl->nfree == 0 && (cl->nslots & (cl->nslots + 1)) == 0) {
        /* nslots + 1 is a power of two: room for twice as many free slots
         * (a completion never needs to allocate) */
        size_t cap = 2 * (size_t)cl->nslots + 2;
        lua_Integer *p = (lua_Integer *)realloc(cl->free_slots,
                                                cap * sizeof *p);
        if (!p)
            luaL_error(L, "servicebus: out of memory");
        cl->free_slots = p;
    }
    o = (op_t *)sbl_newuserdata(L, sizeof *o);
    o->id = cl->nfree ? cl->free_slots[--cl->nfree] : ++cl->nslots;
    o->what = what;
    o->done = 0;
    o->state = OP_PENDING;
    o->own_env = 0;
    lua_getuservalue(L, ci);
    lua_rawgeti(L, -1, ENV_OPMETA);
    lua_setmetatable(L, -3);
    lua_rawgeti(L, -1, ENV_OPENV);
    lua_setuservalue(L, -3);
    lua_pop(L, 1);
    return o->id;
}

/* Stores the value at the top of the stack (popped) in the OPENV_EXTRA
 * slot of the op just below it. */
static void op_set_extra(lua_State *L)
{
    int opi = lua_gettop(L) - 1;
    op_own_env(L, opi, (op_t *)lua_touserdata(L, opi));
    lua_insert(L, -2);
    lua_rawseti(L, -2, OPENV_EXTRA);
    lua_pop(L, 1);
}

/* Finishes a start_* call: rc is what the engine answered for the op at
 * the top of the stack. Accepted: waiters[id] = op, drain, return the op.
 * Refused: return nil, message, code (no event will come).
 * No I/O here: the request waits in the engine's write buffer, so that
 * operations started together (300 completions) leave in one write.
 * op:wait() flushes it (core/io's wait steps first); a step host sees
 * "w" in client:events() and the next step() writes it; in host mode
 * the adapter's wait takes the output. */
static int op_accept(lua_State *L, int ci, int rc)
{
    int opi = lua_gettop(L);
    lua_Integer id = ((op_t *)lua_touserdata(L, opi))->id;
    ci = lua_absindex(L, ci);
    if (rc < 0) { /* no event will come: the slot is free again */
        client_t *cl = client_at(L, ci);
        cl->free_slots[cl->nfree++] = id;
        lua_pop(L, 1);
        return push_fail(L, rc, NULL);
    }
    lua_getuservalue(L, ci);
    lua_rawgeti(L, -1, ENV_WAITERS);
    lua_pushvalue(L, opi);
    lua_rawseti(L, -2, id);
    lua_pop(L, 2);
    {
        client_t *cl = client_at(L, ci);
        if (cl->io && ++cl->unflushed >= FLUSH_EVERY) {
            cl->unflushed = 0;
            sbus_io_flush(cl->io);
        }
    }
    drain(L, ci);
    lua_settop(L, opi);
    return 1;
}

/* ------------------------------------------------------------------ */
/* Client                                                              */
/* ------------------------------------------------------------------ */

/* Pushes option k of the table at ti and returns 1 if it is set (then it
 * must have Lua type `type`, or be an integer when type is -1; misuse
 * raises), 0 with nil pushed if not. The caller pops. */
static int opt_get(lua_State *L, int ti, const char *k, int type)
{
    lua_getfield(L, ti, k);
    if (lua_isnil(L, -1))
        return 0;
    if (type < 0 ? !lua_isinteger(L, -1) : lua_type(L, -1) != type)
        luaL_error(L, "servicebus: option '%s' must be %s", k,
                   type < 0               ? "an integer"
                   : type == LUA_TBOOLEAN ? "a boolean"
                   : type == LUA_TNUMBER  ? "a number"
                                          : "a string");
    return 1;
}

static const char *opt_string(lua_State *L, int ti, const char *k)
{
    const char *s = opt_get(L, ti, k, LUA_TSTRING) ? lua_tostring(L, -1) : NULL;
    lua_pop(L, 1); /* the string stays alive in the options table */
    return s;
}

static int opt_bool(lua_State *L, int ti, const char *k, int dflt)
{
    int v = opt_get(L, ti, k, LUA_TBOOLEAN) ? lua_toboolean(L, -1) : dflt;
    lua_pop(L, 1);
    return v;
}

static int has_opt(lua_State *L, int ti, const char *k)
{
    int r;
    lua_getfield(L, ti, k);
    r = !lua_isnil(L, -1);
    lua_pop(L, 1);
    return r;
}

static lua_Number opt_number(lua_State *L, int ti, const char *k,
                             lua_Number dflt)
{
    lua_Number v = opt_get(L, ti, k, LUA_TNUMBER) ? lua_tonumber(L, -1) : dflt;
    lua_pop(L, 1);
    return v;
}

static lua_Integer opt_integer(lua_State *L, int ti, const char *k,
                               lua_Integer dflt)
{
    lua_Integer v = opt_get(L, ti, k, -1) ? lua_tointeger(L, -1) : dflt;
    lua_pop(L, 1);
    return v;
}

/* servicebus.new(opts) -> client (not connected yet; no I/O).
 * opts: connection_string | namespace + (sas_key_name + sas_key |
 * sas_token | token_provider); port, use_tls, transport ("amqp" |
 * "websocket"), ca_file, verify, http_proxy = {host, port, username,
 * password}, retry_total, retry_backoff, retry_backoff_max (s),
 * operation_timeout (s), token_lifetime (s), idle_timeout (s), user_agent,
 * container_id, logging (bool), logger (function(line)), host (bool: Lua
 * owns the socket, see resty.servicebus). */
static int l_new(lua_State *L)
{
    sbus_conn_options_t o;
    client_t *cl;
    char err[256] = "";
    int rc, ci, host;
    const char *tr;

    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    sbus_conn_options_init(&o);
    o.connection_string = opt_string(L, 1, "connection_string");
    o.namespace_ = opt_string(L, 1, "namespace");
    o.sas_key_name = opt_string(L, 1, "sas_key_name");
    o.sas_key = opt_string(L, 1, "sas_key");
    o.sas_token = opt_string(L, 1, "sas_token");
    o.host_tokens = has_opt(L, 1, "token_provider");
    o.port = (int)opt_integer(L, 1, "port", o.port);
    if (has_opt(L, 1, "use_tls"))
        o.use_tls = opt_bool(L, 1, "use_tls", 1);
    tr = opt_string(L, 1, "transport");
    if (tr) {
        if (strcmp(tr, "amqp") == 0)
            o.transport = SBUS_TRANSPORT_AMQP;
        else if (strcmp(tr, "websocket") == 0)
            o.transport = SBUS_TRANSPORT_WEBSOCKET;
        else
            return luaL_error(L, "servicebus: transport must be \"amqp\" "
                                 "or \"websocket\"");
    }
    o.ca_file = opt_string(L, 1, "ca_file");
    o.verify = opt_bool(L, 1, "verify", o.verify);
    lua_getfield(L, 1, "http_proxy");
    if (lua_istable(L, -1)) {
        int pi = lua_gettop(L);
        o.proxy_host = opt_string(L, pi, "host");
        if (!o.proxy_host)
            o.proxy_host = opt_string(L, pi, "proxy_hostname");
        o.proxy_port = (int)opt_integer(L, pi, "port",
                                        opt_integer(L, pi, "proxy_port", 0));
        o.proxy_user = opt_string(L, pi, "username");
        o.proxy_password = opt_string(L, pi, "password");
    } else if (!lua_isnil(L, -1)) {
        return luaL_error(L, "servicebus: http_proxy must be a table");
    }
    /* the proxy table stays on the stack (index 2): its strings live */
    o.retry_total = (int)opt_integer(L, 1, "retry_total", o.retry_total);
    if (has_opt(L, 1, "retry_backoff"))
        o.retry_backoff_ms = secs_to_ms(opt_number(L, 1, "retry_backoff", 0));
    if (has_opt(L, 1, "retry_backoff_max"))
        o.retry_backoff_max_ms =
            secs_to_ms(opt_number(L, 1, "retry_backoff_max", 0));
    if (has_opt(L, 1, "operation_timeout"))
        o.operation_timeout_ms =
            secs_to_ms(opt_number(L, 1, "operation_timeout", 0));
    o.token_lifetime_s = (int64_t)opt_number(L, 1, "token_lifetime",
                                             (lua_Number)o.token_lifetime_s);
    if (has_opt(L, 1, "idle_timeout"))
        o.idle_timeout_ms =
            (uint32_t)secs_to_ms(opt_number(L, 1, "idle_timeout", 0));
    o.user_agent = opt_string(L, 1, "user_agent");
    o.container_id = opt_string(L, 1, "container_id");
    o.trace = opt_bool(L, 1, "logging", 0);
    host = opt_bool(L, 1, "host", 0);
    if (host && o.use_tls < 0 && has_opt(L, 1, "use_tls") == 0) {
        /* a host that owns the socket does TLS itself (sslhandshake) */
        o.use_tls = 0;
    }

    cl = (client_t *)sbl_newuserdata(L, sizeof *cl);
    memset(cl, 0, sizeof *cl);
    cl->children.next = cl->children.prev = &cl->children;
    cl->host = host;
    cl->deadline = -1;
    set_type(L, &UT_CLIENT);
    ci = lua_gettop(L);

    lua_createtable(L, 3, 3);
    lua_newtable(L);
    lua_rawseti(L, -2, ENV_WAITERS);
    lua_createtable(L, 1, 0); /* the shared op env */
    lua_pushvalue(L, ci);
    lua_rawseti(L, -2, OPENV_CLIENT);
    lua_rawseti(L, -2, ENV_OPENV);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &UT_OP);
    lua_rawseti(L, -2, ENV_OPMETA);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &OPDONE_KEY);
    lua_rawseti(L, -2, ENV_OPDONE);
    lua_newtable(L);
    lua_setfield(L, -2, "renew");
    lua_getfield(L, 1, "logger");
    lua_setfield(L, -2, "logger");
    lua_getfield(L, 1, "token_provider");
    lua_setfield(L, -2, "token_provider");
    lua_setuservalue(L, ci);
    {
        int has_logger;
        lua_getfield(L, 1, "logger");
        has_logger = lua_isfunction(L, -1);
        lua_pop(L, 1);
        cl->trace_stderr = o.trace && !has_logger;
    }

    rc = sbus_conn_new(&cl->conn, &o, err, sizeof err);
    if (rc < 0)
        return push_fail(L, rc, err[0] ? err : NULL);
    if (!host) {
        rc = sbus_io_new(cl->conn, &cl->io);
        if (rc < 0) {
            sbus_conn_free(cl->conn);
            cl->conn = NULL;
            return push_fail(L, rc, NULL);
        }
    }
    lua_settop(L, ci);
    return 1;
}

/* client:start_open() -> op */
static int client_start_open(lua_State *L)
{
    client_t *cl = check_client(L, 1);
    lua_Integer id = op_new(L, 1, "open");
    return op_accept(L, 1, sbus_conn_open(cl->conn, TOKEN(id)));
}

/* client:start_close() -> op (the connection is freed by _free()). */
static int client_start_close(lua_State *L)
{
    client_t *cl = check_client(L, 1);
    lua_Integer id = op_new(L, 1, "close");
    return op_accept(L, 1, sbus_conn_close(cl->conn, TOKEN(id)));
}

/* client:_free(): frees children, driver, connection. Idempotent. */
static int client_free_l(lua_State *L)
{
    client_t *cl = to_client(L, 1);
    if (cl->conn) {
        drain(L, 1); /* hand over what already completed */
        client_free(cl);
    }
    return 0;
}

static int client_gc(lua_State *L)
{
    client_t *cl = to_client(L, 1);
    client_free(cl);
    free(cl->free_slots);
    cl->free_slots = NULL;
    cl->nfree = 0;
    return 0;
}

/* client:abort([reason]): fails every pending op at once, no I/O. */
static int client_abort(lua_State *L)
{
    client_t *cl = check_client(L, 1);
    sbus_conn_abort(cl->conn, luaL_optstring(L, 2, "aborted"));
    drain(L, 1);
    return 0;
}

static int client_is_closed(lua_State *L)
{
    lua_pushboolean(L, to_client(L, 1)->conn == NULL);
    return 1;
}

static int client_is_open(lua_State *L)
{
    client_t *cl = to_client(L, 1);
    lua_pushboolean(L, cl->conn && sbus_conn_is_open(cl->conn));
    return 1;
}

static int client_host(lua_State *L)
{
    lua_pushstring(L, sbus_conn_host(check_client(L, 1)->conn));
    return 1;
}

static int client_tostring(lua_State *L)
{
    client_t *cl = to_client(L, 1);
    if (cl->conn)
        lua_pushfstring(L, "servicebus.client (%s)", sbus_conn_host(cl->conn));
    else
        lua_pushstring(L, "servicebus.client (closed)");
    return 1;
}

/* client:_hostwait(): the Lua pump function set by the host adapter. */
static int client_hostwait(lua_State *L)
{
    to_client(L, 1);
    get_env_field(L, 1, "hostwait");
    return 1;
}

/* client:set_host_wait(fn): the host adapter's pump, used by op:wait(). */
static int client_set_host_wait(lua_State *L)
{
    client_t *cl = to_client(L, 1);
    if (!cl->host)
        return luaL_error(L, "servicebus: not a host-mode client");
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_getuservalue(L, 1);
    lua_pushvalue(L, 2);
    lua_setfield(L, -2, "hostwait");
    return 0;
}

/* --- the POSIX driver: blocking wait and the step API -------------- */

static client_t *check_io_client(lua_State *L, int i)
{
    client_t *cl = check_client(L, i);
    if (!cl->io)
        luaL_error(L, "servicebus: a host-mode client has no driver (use "
                      "its host adapter)");
    return cl;
}

/* The op at i, or raises. Ops have several metatables (op_done_meta):
 * each carries the marker [&UT_OP] = true. */
static op_t *check_op(lua_State *L, int i)
{
    void *p = lua_touserdata(L, i);
    int ok = 0;
    if (p && lua_getmetatable(L, i)) {
        ok = lua_rawgetp(L, -1, &UT_OP) == LUA_TBOOLEAN;
        lua_pop(L, 2);
    }
    return ok ? (op_t *)p : (op_t *)luaL_checkudata(L, i, MT_OP);
}

/* client:_iowait(op [, timeout_s]) -> done: runs the driver until op
 * completes or the timeout passes (nil: no limit). */
static int client_iowait(lua_State *L)
{
    client_t *cl = to_client(L, 1);
    op_t *o = check_op(L, 2);
    int64_t limit, deadline;
    limit = opt_secs_ms(L, 3, -1);
    deadline = limit < 0 ? -1 : sbus_io_mono_ms() + limit;
    for (;;) {
        int64_t wait = -1;
        int rc;
        if (o->done || !cl->conn)
            break;
        if (!cl->io)
            return luaL_error(L, "servicebus: a host-mode client cannot "
                                 "block; use its host adapter");
        if (deadline >= 0) {
            wait = deadline - sbus_io_mono_ms();
            if (wait <= 0)
                break;
        }
        cl->unflushed = 0; /* the wait writes them */
        rc = sbus_io_wait(cl->io, wait);
        if (rc < 0)
            return luaL_error(L, "servicebus: driver: %s", sbus_strerror(rc));
        drain(L, 1);
    }
    lua_pushboolean(L, o->done);
    return 1;
}

/* Pushes v, or nil when v < 0 (the driver's "none"): as an integer, or
 * when secs, v milliseconds as seconds. */
static int push_or_nil(lua_State *L, int64_t v, int secs)
{
    if (v < 0)
        lua_pushnil(L);
    else if (secs)
        push_ms_as_secs(L, v);
    else
        lua_pushinteger(L, (lua_Integer)v);
    return 1;
}

/* client:fd() -> integer fd to watch, or nil when there is none now. */
static int client_fd(lua_State *L)
{
    return push_or_nil(L, sbus_io_fd(check_io_client(L, 1)->io), 0);
}

/* client:events() -> "r" | "w" | "rw" | "" (and the poll(2) bits). */
static int client_events(lua_State *L)
{
    int ev = sbus_io_events(check_io_client(L, 1)->io);
    const char *s = (ev & POLLIN) && (ev & POLLOUT) ? "rw"
                    : (ev & POLLIN)                 ? "r"
                    : (ev & POLLOUT)                ? "w"
                                                    : "";
    lua_pushstring(L, s);
    lua_pushinteger(L, ev);
    return 2;
}

/* client:timeout() -> seconds until step() must run again, or nil. */
static int client_timeout(lua_State *L)
{
    return push_or_nil(L, sbus_io_timeout(check_io_client(L, 1)->io), 1);
}

/* client:step() -> number of ops completed: all non-blocking work now. */
static int client_step(lua_State *L)
{
    client_t *cl = check_io_client(L, 1);
    lua_Integer before = cl->completed;
    cl->unflushed = 0; /* the step writes them */
    sbus_io_step(cl->io);
    drain(L, 1);
    lua_pushinteger(L, cl->completed - before);
    return 1;
}

/* --- host mode: Lua owns the socket (resty.servicebus) -------------- */

static client_t *check_host_client(lua_State *L, int i)
{
    client_t *cl = check_client(L, i);
    if (!cl->host)
        luaL_error(L, "servicebus: not a host-mode client");
    return cl;
}

/* client:connect_request() -> host, port when the engine wants a new
 * connection (taken once), else nil. */
static int client_connect_request(lua_State *L)
{
    client_t *cl = check_host_client(L, 1);
    drain(L, 1);
    if (!cl->want_connect)
        return 0;
    cl->want_connect = 0;
    lua_pushstring(L, cl->connect_host);
    lua_pushinteger(L, cl->connect_port);
    return 2;
}

/* client:disconnect_request() -> true when the engine wants the socket
 * closed (taken once). */
static int client_disconnect_request(lua_State *L)
{
    client_t *cl = check_host_client(L, 1);
    int r;
    drain(L, 1);
    r = cl->want_disconnect;
    cl->want_disconnect = 0;
    lua_pushboolean(L, r);
    return 1;
}

static int client_transport_up(lua_State *L)
{
    client_t *cl = check_host_client(L, 1);
    sbus_conn_transport_up(cl->conn);
    tick_host(cl);
    drain(L, 1);
    return 0;
}

static int client_transport_down(lua_State *L)
{
    client_t *cl = check_host_client(L, 1);
    sbus_conn_transport_down(cl->conn, luaL_optstring(L, 2, "closed"));
    tick_host(cl);
    drain(L, 1);
    return 0;
}

/* client:feed(bytes) -> number of bytes the engine took (all of them
 * unless its read buffer is full). */
static int client_feed(lua_State *L)
{
    client_t *cl = check_host_client(L, 1);
    size_t n, off = 0;
    const char *p = luaL_checklstring(L, 2, &n);
    tick_host(cl);
    while (off < n && cl->conn) {
        size_t cap = 0, k;
        uint8_t *buf = sbus_conn_read_buffer(cl->conn, &cap);
        if (!buf || cap == 0)
            break;
        k = n - off < cap ? n - off : cap;
        memcpy(buf, p + off, k);
        sbus_conn_read_done(cl->conn, k);
        off += k;
    }
    drain(L, 1);
    lua_pushinteger(L, (lua_Integer)off);
    return 1;
}

/* client:take_output() -> the bytes to send now (marked written), or nil.
 * The host sends them all or reports transport_down. */
static int client_take_output(lua_State *L)
{
    client_t *cl = check_host_client(L, 1);
    luaL_Buffer b;
    int any = 0;
    luaL_buffinit(L, &b);
    while (cl->conn) {
        size_t len = 0;
        const uint8_t *p = sbus_conn_write_buffer(cl->conn, &len);
        if (!p || len == 0)
            break;
        luaL_addlstring(&b, (const char *)p, len);
        sbus_conn_write_done(cl->conn, len);
        any = 1;
    }
    luaL_pushresult(&b);
    if (!any) {
        lua_pop(L, 1);
        lua_pushnil(L);
    }
    drain(L, 1);
    return 1;
}

/* client:tick() -> seconds until the next deadline, or nil. */
static int client_tick(lua_State *L)
{
    client_t *cl = check_host_client(L, 1);
    int64_t now;
    tick_host(cl);
    drain(L, 1);
    if (!cl->conn || cl->deadline < 0)
        return push_or_nil(L, -1, 1);
    now = sbus_io_mono_ms();
    return push_or_nil(L, cl->deadline > now ? cl->deadline - now : 0, 1);
}

/* --- senders and receivers ------------------------------------------ */

/* client:start_sender(entity) -> sender, op (op: the link attach). */
static int client_start_sender(lua_State *L)
{
    client_t *cl = check_client(L, 1);
    sbus_sender_options_t o;
    sender_t *sd;
    int rc, si;
    lua_Integer id;

    sbus_sender_options_init(&o);
    o.entity = luaL_checkstring(L, 2);
    sd = (sender_t *)sbl_newuserdata(L, sizeof *sd);
    memset(sd, 0, sizeof *sd);
    set_type(L, &UT_SENDER);
    si = lua_gettop(L);
    lua_createtable(L, 1, 0);
    lua_pushvalue(L, 1);
    lua_rawseti(L, -2, ENV_CLIENT);
    lua_setuservalue(L, si);
    rc = sbus_sender_new(cl->conn, &o, &sd->s);
    if (rc < 0)
        return push_fail(L, rc, NULL);
    child_link(cl, &sd->link, sender_free_fn);
    id = op_new(L, 1, "sender open");
    rc = op_accept(L, 1, sbus_sender_open(sd->s, TOKEN(id)));
    if (rc != 1) { /* refused: free the sender, return the error */
        sender_free_fn(&sd->link);
        child_unlink(&sd->link);
        return rc;
    }
    lua_pushvalue(L, si);
    lua_insert(L, -2);
    return 2;
}

static const char *const RECEIVE_MODES[] = {"peek_lock", "receive_and_delete",
                                            NULL};
static const char *const SUB_QUEUES[] = {"none", "dead_letter",
                                         "transfer_dead_letter", NULL};

/* client:start_receiver(entity [, opts]) -> receiver, op (the attach).
 * opts: mode, prefetch, sub_queue, subscription, session (bool),
 * session_id, session_wait (s). */
static int client_start_receiver(lua_State *L)
{
    client_t *cl = check_client(L, 1);
    sbus_receiver_options_t o;
    receiver_t *rv;
    int rc, ri;
    lua_Integer id;

    sbus_receiver_options_init(&o);
    o.entity = luaL_checkstring(L, 2);
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        lua_getfield(L, 3, "mode");
        if (!lua_isnil(L, -1))
            o.mode = (sbus_receive_mode_t)luaL_checkoption(L, -1, NULL,
                                                            RECEIVE_MODES);
        lua_pop(L, 1);
        lua_getfield(L, 3, "sub_queue");
        if (!lua_isnil(L, -1))
            o.sub_queue = (sbus_sub_queue_t)luaL_checkoption(L, -1, NULL,
                                                              SUB_QUEUES);
        lua_pop(L, 1);
        o.prefetch = (uint32_t)opt_integer(L, 3, "prefetch", o.prefetch);
        o.subscription = opt_string(L, 3, "subscription");
        o.session = opt_bool(L, 3, "session", 0);
        o.session_id = opt_string(L, 3, "session_id");
        if (o.session_id)
            o.session = 1;
        if (has_opt(L, 3, "session_wait"))
            o.session_wait_ms = secs_to_ms(opt_number(L, 3, "session_wait",
                                                      0));
    }
    rv = (receiver_t *)sbl_newuserdata(L, sizeof *rv);
    memset(rv, 0, sizeof *rv);
    rv->session = o.session;
    set_type(L, &UT_RECEIVER);
    ri = lua_gettop(L);
    lua_createtable(L, 2, 0);
    lua_pushvalue(L, 1);
    lua_rawseti(L, -2, ENV_CLIENT);
    lua_pushvalue(L, ri);
    lua_rawseti(L, -2, ENV_RX);
    lua_setuservalue(L, ri);
    rc = sbus_receiver_new(cl->conn, &o, &rv->r);
    if (rc < 0)
        return push_fail(L, rc, NULL);
    child_link(cl, &rv->link, receiver_free_fn);
    id = op_new(L, 1, "receiver open");
    rc = op_accept(L, 1, sbus_receiver_open(rv->r, TOKEN(id)));
    if (rc != 1) {
        receiver_free_fn(&rv->link);
        child_unlink(&rv->link);
        return rc;
    }
    lua_pushvalue(L, ri);
    lua_insert(L, -2);
    return 2;
}

/* Pushes the client userdata of a sender/receiver at i; returns its index. */
static int push_parent_client(lua_State *L, int i)
{
    get_env_slot(L, i, ENV_CLIENT);
    return lua_gettop(L);
}

/* --- sender --------------------------------------------------------- */

/* sender:start_send(msg | {msg, ...} | batch) -> op */
static int sender_start_send(lua_State *L)
{
    sender_t *sd = check_sender(L, 1);
    batch_t *bt;
    int ci, rc;
    lua_Integer id;

    luaL_checkany(L, 2);
    lua_settop(L, 2);
    ci = push_parent_client(L, 1);
    if ((bt = (batch_t *)test_ud(L, 2, &UT_BATCH)) != NULL) {
        id = op_new(L, ci, "send");
        rc = sbus_sender_send_batch(sd->s, bt->b, TOKEN(id));
    } else {
        msglist_t *ml = collect_messages(L, 2);
        if (ml->n == 0)
            return luaL_error(L, "servicebus: nothing to send");
        id = op_new(L, ci, "send");
        rc = sbus_sender_send(sd->s, ml->arr, ml->n, TOKEN(id));
        msglist_release(L, ml); /* copied by the engine (and the bodies
                                    it borrowed still on the stack) */
    }
    return op_accept(L, ci, rc);
}

/* sender:start_schedule(msgs, when_unix_seconds) -> op (result: seqs) */
static int sender_start_schedule(lua_State *L)
{
    sender_t *sd = check_sender(L, 1);
    int64_t when;
    msglist_t *ml;
    int ci, rc;
    lua_Integer id;

    luaL_checkany(L, 2);
    when = secs_to_ms(luaL_checknumber(L, 3));
    lua_settop(L, 3);
    ci = push_parent_client(L, 1);
    ml = collect_messages(L, 2);
    if (ml->n == 0)
        return luaL_error(L, "servicebus: nothing to schedule");
    id = op_new(L, ci, "schedule");
    rc = sbus_sender_schedule(sd->s, ml->arr, ml->n, when, TOKEN(id));
    msglist_release(L, ml); /* copied by the engine (and the bodies
                                it borrowed still on the stack) */
    return op_accept(L, ci, rc);
}

/* sender:start_cancel_scheduled(seq | {seq, ...}) -> op */
static int sender_start_cancel_scheduled(lua_State *L)
{
    sender_t *sd = check_sender(L, 1);
    size_t n;
    int64_t *seqs;
    int ci;
    lua_Integer id;

    luaL_checkany(L, 2);
    lua_settop(L, 2);
    ci = push_parent_client(L, 1);
    seqs = collect_seqs(L, 2, &n);
    id = op_new(L, ci, "cancel_scheduled");
    return op_accept(L, ci, sbus_sender_cancel_scheduled(sd->s, seqs, n,
                                                         TOKEN(id)));
}

/* sender:start_close() -> op */
static int sender_start_close(lua_State *L)
{
    sender_t *sd = check_sender(L, 1);
    int ci = push_parent_client(L, 1);
    lua_Integer id = op_new(L, ci, "sender close");
    return op_accept(L, ci, sbus_sender_close(sd->s, TOKEN(id)));
}

/* sender:_free(): frees the engine sender (idempotent). */
static int sender_free_l(lua_State *L)
{
    sender_t *sd = (sender_t *)check_ud(L, 1, &UT_SENDER);
    if (sd->link.cl) {
        sender_free_fn(&sd->link);
        child_unlink(&sd->link);
    }
    return 0;
}

static int sender_is_closed(lua_State *L)
{
    sender_t *sd = (sender_t *)check_ud(L, 1, &UT_SENDER);
    lua_pushboolean(L, sd->s == NULL);
    return 1;
}

/* sender:max_message_size() -> bytes (0 before the link is attached) */
static int sender_max_message_size(lua_State *L)
{
    sender_t *sd = check_sender(L, 1);
    lua_pushinteger(L, (lua_Integer)sbus_sender_max_message_size(sd->s));
    return 1;
}

/* sender:create_batch([max_size]) -> batch. The default and the ceiling
 * are the link's max-message-size once the link is attached (as Python's
 * create_batch: a larger max_size is an argument error). */
static int sender_create_batch(lua_State *L)
{
    sender_t *sd;
    batch_t *bt;
    lua_Integer max;
    uint64_t limit;
    int rc;
    sd = check_sender(L, 1);
    max = luaL_optinteger(L, 2, 0);
    luaL_argcheck(L, max >= 0, 2, "max_size must not be negative");
    limit = sbus_sender_max_message_size(sd->s);
    if (limit > 0 && (uint64_t)max > limit)
        return luaL_error(L, "servicebus: max_size %d exceeds the link's limit "
                             "of %d bytes", (int)max, (int)limit);
    if (max == 0 && limit > 0)
        max = (lua_Integer)limit;
    bt = (batch_t *)sbl_newuserdata(L, sizeof *bt);
    bt->b = NULL;
    set_type(L, &UT_BATCH);
    rc = sbus_batch_new((size_t)max, &bt->b);
    if (rc < 0)
        return push_fail(L, rc, NULL);
    return 1;
}

/* --- batch ---------------------------------------------------------- */

static batch_t *check_batch(lua_State *L, int i)
{
    batch_t *bt = (batch_t *)check_ud(L, i, &UT_BATCH);
    if (!bt->b)
        luaL_error(L, "servicebus: the batch is freed");
    return bt;
}

/* batch:add(msg) -> true, or nil, msg, "too-large" */
static int batch_add(lua_State *L)
{
    batch_t *bt = check_batch(L, 1);
    sbus_message_t *m;
    int rc;
    luaL_checkany(L, 2);
    m = to_send_message(L, 2);
    rc = sbus_batch_add(bt->b, m);
    if (rc < 0)
        return push_fail(L, rc, NULL);
    lua_pushboolean(L, 1);
    return 1;
}

static int batch_count(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)sbus_batch_count(check_batch(L, 1)->b));
    return 1;
}

static int batch_size(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)sbus_batch_size(check_batch(L, 1)->b));
    return 1;
}

static int batch_max_size(lua_State *L)
{
    lua_pushinteger(L,
                    (lua_Integer)sbus_batch_max_size(check_batch(L, 1)->b));
    return 1;
}

static int batch_gc(lua_State *L)
{
    batch_t *bt = (batch_t *)check_ud(L, 1, &UT_BATCH);
    if (bt->b)
        sbus_batch_free(bt->b);
    bt->b = NULL;
    return 0;
}

/* --- receiver ------------------------------------------------------- */

/* Pushes the receiver env table (parent of received messages). */
static int push_rxenv(lua_State *L, int ri)
{
    lua_getuservalue(L, ri);
    return lua_gettop(L);
}

/* receiver:start_receive([max_count=1 [, max_wait_s]]) -> op (messages) */
static int receiver_start_receive(lua_State *L)
{
    receiver_t *rv = check_receiver(L, 1);
    lua_Integer max = luaL_optinteger(L, 2, 1);
    int64_t wait = opt_secs_ms(L, 3, -1);
    int ci, ei;
    lua_Integer id;
    luaL_argcheck(L, max > 0, 2, "max_count must be positive");
    lua_settop(L, 3);
    ci = push_parent_client(L, 1);
    ei = push_rxenv(L, 1);
    id = op_new(L, ci, "receive");
    lua_pushvalue(L, ei);
    op_set_extra(L);
    return op_accept(L, ci, sbus_receiver_receive(rv->r, (uint32_t)max, wait,
                                                  TOKEN(id)));
}

/* receiver:start_peek([max_count=1 [, from_seq]]) -> op (messages) */
static int receiver_start_peek(lua_State *L)
{
    receiver_t *rv = check_receiver(L, 1);
    lua_Integer max = luaL_optinteger(L, 2, 1);
    lua_Integer from = luaL_optinteger(L, 3, 0);
    int ci, ei;
    lua_Integer id;
    luaL_argcheck(L, max > 0, 2, "max_count must be positive");
    lua_settop(L, 3);
    ci = push_parent_client(L, 1);
    ei = push_rxenv(L, 1);
    id = op_new(L, ci, "peek");
    lua_pushvalue(L, ei);
    op_set_extra(L);
    return op_accept(L, ci, sbus_receiver_peek(rv->r, (uint32_t)max,
                                               (int64_t)from, TOKEN(id)));
}

/* receiver:start_receive_deferred(seq | {seq, ...}) -> op (messages) */
static int receiver_start_receive_deferred(lua_State *L)
{
    receiver_t *rv = check_receiver(L, 1);
    size_t n;
    int64_t *seqs;
    int ci, ei;
    lua_Integer id;
    luaL_checkany(L, 2);
    lua_settop(L, 2);
    ci = push_parent_client(L, 1);
    ei = push_rxenv(L, 1);
    seqs = collect_seqs(L, 2, &n);
    id = op_new(L, ci, "receive_deferred");
    lua_pushvalue(L, ei);
    op_set_extra(L);
    return op_accept(L, ci, sbus_receiver_receive_deferred(rv->r, seqs, n,
                                                           TOKEN(id)));
}

/* Removes every renewal anchor that belongs to receiver ri. */
static void receiver_unanchor_all(lua_State *L, int ri)
{
    receiver_t *rv = (receiver_t *)lua_touserdata(L, ri);
    int ti;
    get_env_slot(L, ri, ENV_CLIENT);
    if (!test_ud(L, -1, &UT_CLIENT)) {
        lua_pop(L, 1);
        return;
    }
    get_env_field(L, lua_gettop(L), "renew");
    ti = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, ti)) {
        int mine = 0;
        lua_rawgeti(L, -1, 3); /* entry[3] = the receiver */
        mine = lua_touserdata(L, -1) == (void *)rv;
        lua_pop(L, 1);
        lua_rawgeti(L, -1, 1);
        if (mine) {
            message_t *mu = (message_t *)test_ud(L, -1, &UT_MESSAGE);
            if (mu)
                mu->renewing = 0;
            lua_pushvalue(L, -3);
            lua_pushnil(L);
            lua_rawset(L, ti); /* clearing during next is allowed */
        }
        lua_pop(L, 2);
    }
    lua_pop(L, 2);
}

/* receiver:start_close() -> op */
static int receiver_start_close(lua_State *L)
{
    receiver_t *rv = check_receiver(L, 1);
    int ci = push_parent_client(L, 1);
    lua_Integer id = op_new(L, ci, "receiver close");
    return op_accept(L, ci, sbus_receiver_close(rv->r, TOKEN(id)));
}

static int receiver_free_l(lua_State *L)
{
    receiver_t *rv = (receiver_t *)check_ud(L, 1, &UT_RECEIVER);
    if (rv->link.cl) {
        receiver_unanchor_all(L, 1);
        receiver_free_fn(&rv->link);
        child_unlink(&rv->link);
    }
    return 0;
}

static int receiver_gc(lua_State *L)
{
    receiver_t *rv = (receiver_t *)check_ud(L, 1, &UT_RECEIVER);
    if (rv->link.cl) {
        receiver_free_fn(&rv->link);
        child_unlink(&rv->link);
    }
    return 0;
}

static int sender_gc(lua_State *L)
{
    return sender_free_l(L);
}

static int receiver_is_closed(lua_State *L)
{
    receiver_t *rv = (receiver_t *)check_ud(L, 1, &UT_RECEIVER);
    lua_pushboolean(L, rv->r == NULL);
    return 1;
}

/* receiver:session_id() -> string or nil */
static int receiver_session_id(lua_State *L)
{
    receiver_t *rv = check_receiver(L, 1);
    const char *s = sbus_receiver_session_id(rv->r);
    if (s)
        lua_pushstring(L, s);
    else
        lua_pushnil(L);
    return 1;
}

/* receiver:locked_until() -> Unix seconds (session lock), or nil */
static int receiver_locked_until(lua_State *L)
{
    receiver_t *rv = check_receiver(L, 1);
    int64_t t = sbus_receiver_session_locked_until(rv->r);
    if (t <= 0)
        lua_pushnil(L);
    else
        push_ms_as_secs(L, t);
    return 1;
}

static int receiver_start_get_state(lua_State *L)
{
    receiver_t *rv = check_receiver(L, 1);
    int ci = push_parent_client(L, 1);
    lua_Integer id = op_new(L, ci, "get_state");
    return op_accept(L, ci, sbus_receiver_session_get_state(rv->r,
                                                            TOKEN(id)));
}

/* receiver:start_set_state(bytes | nil) -> op */
static int receiver_start_set_state(lua_State *L)
{
    receiver_t *rv = check_receiver(L, 1);
    size_t n = 0;
    const char *p = NULL;
    int ci;
    lua_Integer id;
    if (!lua_isnoneornil(L, 2))
        p = luaL_checklstring(L, 2, &n);
    lua_settop(L, 2);
    ci = push_parent_client(L, 1);
    id = op_new(L, ci, "set_state");
    return op_accept(L, ci, sbus_receiver_session_set_state(rv->r, p, n,
                                                            TOKEN(id)));
}

/* receiver:start_renew_lock() -> op (session lock; result: Unix seconds) */
static int receiver_start_renew_lock(lua_State *L)
{
    receiver_t *rv = check_receiver(L, 1);
    int ci = push_parent_client(L, 1);
    lua_Integer id = op_new(L, ci, "session renew_lock");
    return op_accept(L, ci, sbus_receiver_session_renew_lock(rv->r,
                                                             TOKEN(id)));
}

/* Stores env.renew[key] = {object, callback, receiver}. */
static void anchor(lua_State *L, int ri, const void *key, int obji, int cbi)
{
    int ci = push_parent_client(L, ri);
    get_env_field(L, ci, "renew");
    lua_pushlightuserdata(L, (void *)key);
    lua_createtable(L, 3, 0);
    lua_pushvalue(L, obji);
    lua_rawseti(L, -2, 1);
    lua_pushvalue(L, cbi);
    lua_rawseti(L, -2, 2);
    lua_pushvalue(L, ri);
    lua_rawseti(L, -2, 3);
    lua_rawset(L, -3);
    lua_pop(L, 2);
}

/* receiver:auto_renew(max_seconds [, on_failure(rx, msg, code)]) -> true
 * Keeps the session lock renewed by the engine. */
static int receiver_auto_renew(lua_State *L)
{
    receiver_t *rv = check_receiver(L, 1);
    int64_t max = secs_to_ms(luaL_checknumber(L, 2));
    int rc;
    if (!lua_isnoneornil(L, 3))
        luaL_checktype(L, 3, LUA_TFUNCTION);
    lua_settop(L, 3);
    rc = sbus_receiver_auto_renew_session(rv->r, max);
    if (rc < 0)
        return push_fail(L, rc, NULL);
    anchor(L, 1, rv->r, 1, 3);
    lua_pushboolean(L, 1);
    return 1;
}

/* --- message -------------------------------------------------------- */

/* The receiver userdata of message mi, checked alive; pushes it. Returns
 * NULL after pushing nil, msg, code when it cannot be used. */
static receiver_t *settle_receiver(lua_State *L, int mi)
{
    receiver_t *rv = message_receiver(L, mi);
    if (!rv) {
        lua_pop(L, 1);
        luaL_error(L, "servicebus: this message was not received; only "
                      "received messages can be settled or renewed");
        return NULL;
    }
    return rv;
}

static int message_start_settle(lua_State *L, sbus_outcome_t outcome,
                                const char *what)
{
    message_t *mu = message_at(L, 1, 1);
    const char *reason = NULL, *desc = NULL;
    receiver_t *rv;
    int ri, ci;
    lua_Integer id;

    if (outcome == SBUS_DEAD_LETTER) {
        reason = luaL_optstring(L, 2, NULL);
        desc = luaL_optstring(L, 3, NULL);
    }
    lua_settop(L, 3);
    rv = settle_receiver(L, 1);
    ri = lua_gettop(L);
    if (!rv->r)
        return push_fail(L, SBUS_ECLOSED, "the receiver of this message "
                                          "is closed");
    ci = push_parent_client(L, ri);
    id = op_new(L, ci, what);
    if (mu->renewing) { /* its anchor is dropped when the settle is done */
        lua_pushvalue(L, 1);
        op_set_extra(L);
    }
    return op_accept(L, ci, sbus_receiver_settle(rv->r, mu->m, outcome,
                                                 reason, desc, TOKEN(id)));
}

static int message_start_complete(lua_State *L)
{
    return message_start_settle(L, SBUS_COMPLETE, "complete");
}

static int message_start_abandon(lua_State *L)
{
    return message_start_settle(L, SBUS_ABANDON, "abandon");
}

static int message_start_defer(lua_State *L)
{
    return message_start_settle(L, SBUS_DEFER, "defer");
}

static int message_start_dead_letter(lua_State *L)
{
    return message_start_settle(L, SBUS_DEAD_LETTER, "dead_letter");
}

/* msg:start_renew_lock() -> op (result: locked_until, Unix seconds) */
static int message_start_renew_lock(lua_State *L)
{
    message_t *mu = check_message(L, 1);
    receiver_t *rv;
    int ri, ci;
    lua_Integer id;
    lua_settop(L, 1);
    rv = settle_receiver(L, 1);
    ri = lua_gettop(L);
    if (!rv->r)
        return push_fail(L, SBUS_ECLOSED, "the receiver of this message "
                                          "is closed");
    ci = push_parent_client(L, ri);
    id = op_new(L, ci, "renew_lock");
    return op_accept(L, ci, sbus_receiver_renew_lock(rv->r, mu->m,
                                                     TOKEN(id)));
}

/* msg:auto_renew(max_seconds [, on_failure(msg, err, code)]) -> true */
static int message_auto_renew(lua_State *L)
{
    message_t *mu = check_message(L, 1);
    int64_t max = secs_to_ms(luaL_checknumber(L, 2));
    receiver_t *rv;
    int rc, ri;
    if (!lua_isnoneornil(L, 3))
        luaL_checktype(L, 3, LUA_TFUNCTION);
    lua_settop(L, 3);
    rv = settle_receiver(L, 1);
    ri = lua_gettop(L);
    if (!rv->r)
        return push_fail(L, SBUS_ECLOSED, "the receiver of this message "
                                          "is closed");
    rc = sbus_receiver_auto_renew(rv->r, mu->m, max);
    if (rc < 0)
        return push_fail(L, rc, NULL);
    mu->renewing = 1;
    anchor(L, ri, mu->m, 1, 3);
    lua_pushboolean(L, 1);
    return 1;
}

/* msg:stop_auto_renew() -> true, or nil, msg, code */
static int message_stop_auto_renew(lua_State *L)
{
    message_t *mu = check_message(L, 1);
    receiver_t *rv;
    int rc, ri, ci;
    lua_settop(L, 1);
    rv = message_receiver(L, 1);
    ri = lua_gettop(L);
    if (!rv || !rv->r || !mu->renewing)
        return push_fail(L, SBUS_ENOENT, "the message is not being renewed");
    rc = sbus_receiver_auto_renew_stop(rv->r, mu->m);
    mu->renewing = 0;
    ci = push_parent_client(L, ri);
    lua_getuservalue(L, ci);
    unanchor(L, lua_gettop(L), mu->m);
    if (rc < 0)
        return push_fail(L, rc, NULL);
    lua_pushboolean(L, 1);
    return 1;
}

/* msg:copy() -> a new message with the same content (to send again) */
static int message_copy(lua_State *L)
{
    message_t *mu = check_message(L, 1);
    sbus_message_t *m = NULL;
    int rc = sbus_message_copy(mu->m, &m);
    if (rc < 0)
        return push_fail(L, rc, NULL);
    push_message(L, m, 0);
    return 1;
}

/* msg:to_table() -> a plain table of every field that is set */
static int message_to_table(lua_State *L)
{
    message_t *mu = check_message(L, 1);
    const field_def_t *f;
    lua_newtable(L);
    for (f = FIELDS; f->name; f++) {
        if (strcmp(f->name, "label") == 0 || strstr(f->name, "_utc") ||
            strcmp(f->name, "application_properties") == 0)
            continue;
        push_field(L, mu->m, f);
        lua_setfield(L, -2, f->name);
    }
    return 1;
}

/* The message __index in C: upvalue 1 is the methods table, upvalue 2
 * maps each field name to its index in FIELDS, upvalue 3 the metatable. A method is returned
 * without looking at the message; a field is read from the engine message
 * when asked (nothing is converted at receive time). The PRELUDE puts a
 * Lua __index in front that finds methods itself (LuaJIT compiles it) and
 * calls this one for fields. */
static int message_index(lua_State *L)
{
    message_t *mu;
    lua_Integer fi;
    lua_pushvalue(L, 2);
    lua_rawget(L, lua_upvalueindex(1));
    if (!lua_isnil(L, -1))
        return 1;
    mu = message_at(L, 1, 3);
    lua_pushvalue(L, 2);
    lua_rawget(L, lua_upvalueindex(2));
    fi = lua_tointeger(L, -1);
    if (fi <= 0)
        return 0; /* nil */
    push_field(L, mu->m, &FIELDS[fi - 1]);
    return 1;
}

static int message_newindex(lua_State *L)
{
    message_t *mu = check_message(L, 1);
    const char *k = luaL_checkstring(L, 2);
    const field_def_t *f = find_field(k);
    if (!f)
        return luaL_error(L, "servicebus: unknown message field '%s'", k);
    set_field(L, mu->m, f, 3);
    return 0;
}

static int message_gc(lua_State *L)
{
    message_t *mu = message_at(L, 1, 1);
    if (!mu->m)
        return 0;
    if (mu->renewing) { /* the engine must forget m before it is freed */
        receiver_t *rv = message_receiver(L, 1);
        if (rv && rv->r)
            sbus_receiver_auto_renew_stop(rv->r, mu->m);
        mu->renewing = 0;
    }
    sbus_message_free(mu->m);
    mu->m = NULL;
    return 0;
}

static int message_tostring(lua_State *L)
{
    message_t *mu = check_message(L, 1);
    const char *id;
    size_t n;
    if (sbus_message_get_prop(mu->m, SBUS_PROP_MESSAGE_ID, &id, &n) == 0)
        lua_pushfstring(L, "servicebus.message (%s)", id);
    else
        lua_pushfstring(L, "servicebus.message (%p)", (void *)mu);
    return 1;
}

/* --- ops ------------------------------------------------------------ */

/* The op at i. The op methods have the op metatable as upvalue 1: one
 * comparison; anything else takes the registry check (and its error). */
static op_t *op_at(lua_State *L, int i)
{
    op_t *o = (op_t *)test_ud_up(L, i, 1);
    return o ? o : check_op(L, i);
}

/* Pushes the client of the op at opi (checked open; raises if closed). */
static client_t *op_client(lua_State *L, int opi)
{
    lua_getuservalue(L, opi);
    lua_rawgeti(L, -1, OPENV_CLIENT);
    lua_remove(L, -2);
    return check_client(L, -1);
}

/* Pushes what the blocking method returns for the completed op at opi:
 * its result, or nil, message, code. */
static int op_push_results(lua_State *L, int opi, const op_t *o)
{
    switch (o->state) {
    case OP_TRUE:
        lua_pushboolean(L, 1);
        return 1;
    case OP_VALUE:
        lua_getuservalue(L, opi);
        lua_rawgeti(L, -1, OPENV_R1);
        lua_remove(L, -2);
        return 1;
    case OP_FAILED:
        lua_getuservalue(L, opi);
        lua_pushnil(L);
        lua_rawgeti(L, -2, OPENV_R2);
        lua_rawgeti(L, -3, OPENV_R3);
        lua_remove(L, -4);
        return 3;
    default:
        lua_pushnil(L);
        return 1;
    }
}

/* op:result() -> the op's results, or nil, "<what>: pending", "pending" */
static int op_result(lua_State *L)
{
    op_t *o = op_at(L, 1);
    if (!o->done) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: pending", o->what);
        lua_pushliteral(L, "pending");
        return 3;
    }
    return op_push_results(L, 1, o);
}

/* op:is_done() -> boolean */
static int op_is_done(lua_State *L)
{
    lua_pushboolean(L, op_at(L, 1)->done);
    return 1;
}

/* The fields of an op (the PRELUDE's __index finds the methods first):
 * done, what, error, client, id, and [1], [2], [3] (the results). */
static int op_index(lua_State *L)
{
    op_t *o = op_at(L, 1);
    if (lua_type(L, 2) == LUA_TSTRING) {
        const char *k = lua_tostring(L, 2);
        if (strcmp(k, "done") == 0) {
            lua_pushboolean(L, o->done);
        } else if (strcmp(k, "what") == 0) {
            lua_pushstring(L, o->what);
        } else if (strcmp(k, "error") == 0) {
            if (o->state != OP_FAILED)
                return 0;
            lua_getuservalue(L, 1);
            lua_rawgeti(L, -1, OPENV_ERROR);
        } else if (strcmp(k, "client") == 0) {
            lua_getuservalue(L, 1);
            lua_rawgeti(L, -1, OPENV_CLIENT);
        } else if (strcmp(k, "id") == 0) {
            lua_pushinteger(L, o->id);
        } else {
            return 0;
        }
        return 1;
    }
    if (lua_isinteger(L, 2) && o->done) {
        lua_Integer k = lua_tointeger(L, 2);
        int n = op_push_results(L, 1, o);
        if (k >= 1 && k <= n) {
            lua_pushvalue(L, -n + (int)k - 1);
            return 1;
        }
    }
    return 0;
}

static int op_tostring(lua_State *L)
{
    op_t *o = op_at(L, 1);
    lua_pushfstring(L, "servicebus.op (%s, %s)", o->what,
                    o->done ? "done" : "pending");
    return 1;
}

/* op:cancel() -> true, or nil, msg, code (the op then completes with
 * "cancelled"). */
static int op_cancel(lua_State *L)
{
    op_t *o = op_at(L, 1);
    client_t *cl = op_client(L, 1);
    int rc;
    if (o->done) /* its id may be another op's now */
        return push_fail(L, SBUS_ENOENT, NULL);
    rc = sbus_conn_cancel(cl->conn, TOKEN(o->id));
    if (rc < 0)
        return push_fail(L, rc, NULL);
    drain(L, lua_gettop(L));
    lua_pushboolean(L, 1);
    return 1;
}

/* op:set_timeout(seconds) -> true, or nil, msg, code: the op completes
 * with "timeout" if not done by then, retries and backoffs included (the
 * SDKs' per-call timeout). For a receive it bounds only the wait for a
 * link (sbus_conn_set_op_timeout): max_wait still decides when it returns. */
static int op_set_timeout(lua_State *L)
{
    op_t *o = op_at(L, 1);
    int64_t ms = secs_to_ms(luaL_checknumber(L, 2));
    client_t *cl = op_client(L, 1);
    int rc;
    if (o->done) /* its id may be another op's now */
        return push_fail(L, SBUS_ENOENT, NULL);
    tick_engine(cl); /* the timeout counts from now */
    rc = sbus_conn_set_op_timeout(cl->conn, TOKEN(o->id), ms);
    if (rc < 0)
        return push_fail(L, rc, NULL);
    lua_pushboolean(L, 1);
    return 1;
}

/* ------------------------------------------------------------------ */
/* Module functions                                                    */
/* ------------------------------------------------------------------ */

/* servicebus.message(string | table) -> message (to send, or to reuse) */
static int l_message(lua_State *L)
{
    luaL_checkany(L, 1);
    lua_settop(L, 1);
    if (test_ud(L, 1, &UT_MESSAGE))
        return message_copy(L);
    to_send_message(L, 1); /* pushes the new message */
    return 1;
}

/* servicebus.parse_connection_string(s) -> table, or nil, msg, code */
static int l_parse_connection_string(lua_State *L)
{
    sbus_connstr_t cs;
    char msg[256] = "";
    int rc = sbus_connstr_parse(luaL_checkstring(L, 1), &cs, msg, sizeof msg);
    if (rc < 0)
        return push_fail(L, rc, msg[0] ? msg : NULL);
    lua_createtable(L, 0, 8);
#define SETS(field, name)                                                   \
    if (cs.field) {                                                         \
        lua_pushstring(L, cs.field);                                        \
        lua_setfield(L, -2, name);                                          \
    }
    SETS(endpoint, "endpoint")
    SETS(host, "host")
    SETS(key_name, "shared_access_key_name")
    SETS(key, "shared_access_key")
    SETS(sas, "shared_access_signature")
    SETS(entity_path, "entity_path")
#undef SETS
    if (cs.port) {
        lua_pushinteger(L, cs.port);
        lua_setfield(L, -2, "port");
    }
    lua_pushboolean(L, cs.use_emulator);
    lua_setfield(L, -2, "use_development_emulator");
    sbus_connstr_clear(&cs);
    return 1;
}

/* servicebus.sas_token(resource, key_name, key, expiry_unix_s) -> token */
static int l_sas_token(lua_State *L)
{
    char out[2048];
    int rc = sbus_sas_token(luaL_checkstring(L, 1), luaL_checkstring(L, 2),
                            luaL_checkstring(L, 3),
                            (int64_t)luaL_checknumber(L, 4), out, sizeof out);
    if (rc < 0)
        return push_fail(L, rc, NULL);
    lua_pushlstring(L, out, (size_t)rc);
    return 1;
}

/* servicebus.strerror(code) -> text; code is a name or a number */
static int l_strerror(lua_State *L)
{
    int code;
    if (lua_type(L, 1) == LUA_TSTRING) {
        const char *name = lua_tostring(L, 1);
        for (code = -1; code >= -64; code--)
            if (strcmp(sbus_errname(code), name) == 0)
                break;
    } else {
        code = (int)luaL_checkinteger(L, 1);
    }
    lua_pushstring(L, sbus_strerror(code));
    return 1;
}

/* servicebus.condition_code(amqp_condition) -> code, retriable, fatal */
static int l_condition_code(lua_State *L)
{
    int retriable = 0, fatal = 0;
    int code = sbus_condition_code(luaL_checkstring(L, 1), &retriable, &fatal);
    lua_pushstring(L, sbus_errname(code));
    lua_pushboolean(L, retriable);
    lua_pushboolean(L, fatal);
    return 3;
}

/* servicebus.conditions() -> { {condition=, code=, retriable=}, ... } */
static int l_conditions(lua_State *L)
{
    size_t i;
    const char *cond;
    int code, retriable;
    lua_newtable(L);
    for (i = 0; sbus_condition_at(i, &cond, &code, &retriable) == 0; i++) {
        lua_createtable(L, 0, 3);
        lua_pushstring(L, cond);
        lua_setfield(L, -2, "condition");
        lua_pushstring(L, sbus_errname(code));
        lua_setfield(L, -2, "code");
        lua_pushboolean(L, retriable);
        lua_setfield(L, -2, "retriable");
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

/* servicebus.now() -> Unix seconds (the engine's wall clock) */
static int l_now(lua_State *L)
{
    push_ms_as_secs(L, sbus_io_unix_ms());
    return 1;
}

/* servicebus.monotonic() -> seconds on the monotonic clock */
static int l_monotonic(lua_State *L)
{
    push_ms_as_secs(L, sbus_io_mono_ms());
    return 1;
}

static int l_engine_version(lua_State *L)
{
    lua_pushstring(L, sbus_version());
    return 1;
}

/* ------------------------------------------------------------------ */
/* 6. The prelude: blocking methods derived from start_* + op:wait()   */
/* ------------------------------------------------------------------ */

static const char PRELUDE[] =
    "local M, Client, Sender, Receiver, Message, Op, MessageMT, OpMT = ...\n"
    /* message methods are found by a Lua __index (LuaJIT compiles it into
     * the caller's trace; the C one would end the trace); fields by C */
    "do\n"
    "  local field = MessageMT.__index\n"
    "  MessageMT.__index = function(m, k)\n"
    "    local f = Message[k]\n"
    "    if f ~= nil then return f end\n"
    "    return field(m, k)\n"
    "  end\n"
    "  local opfield = OpMT.__index\n"
    "  OpMT.__index = function(o, k)\n"
    "    local f = Op[k]\n"
    "    if f ~= nil then return f end\n"
    "    return opfield(o, k)\n"
    "  end\n"
    "end\n"
    "local Error = {}\n"
    "Error.__index = Error\n"
    "Error.__tostring = function(e) return 'servicebus: ' .. tostring(e.message) .. ' (' .. tostring(e.code) .. ')' end\n"
    "function M.error(message, code) return setmetatable({ message = message, code = code }, Error) end\n"
    /* op:wait([timeout]) -> the op's results, or nil, msg, "timeout";
     * is_done and result are C (no field lookups on the way) */
    "local op_done, op_result = Op.is_done, Op.result\n"
    "function Op._true() return true end\n"
    "function Op:wait(timeout)\n"
    "  if not op_done(self) then\n"
    "    local c = self.client\n"
    "    local pump = c:_hostwait()\n"
    "    if pump then pump(c, self, timeout) else c:_iowait(self, timeout) end\n"
    "    if not op_done(self) then\n"
    "      return nil, self.what .. ': still pending after ' .. tostring(timeout) .. ' s', 'timeout'\n"
    "    end\n"
    "  end\n"
    "  return op_result(self)\n"
    "end\n"
    "local function blocking(start)\n"
    "  return function(...)\n"
    "    local op, err, code = start(...)\n"
    "    if not op then return nil, err, code end\n"
    "    return op:wait()\n"
    "  end\n"
    "end\n"
    "for _, T in ipairs({ Client, Sender, Receiver, Message }) do\n"
    "  local add = {}\n"
    "  for k, f in pairs(T) do\n"
    "    local base = type(k) == 'string' and k:match('^start_(.+)$')\n"
    "    if base and T[base] == nil then add[base] = blocking(f) end\n"
    "  end\n"
    "  for k, f in pairs(add) do T[k] = f end\n"
    "end\n"
    /* open and close free the engine objects once done */
    "local function opened(obj, op, err, code)\n"
    "  if not obj then return nil, op, err end\n"
    "  local ok, e, c = op:wait()\n"
    "  if not ok then obj:_free(); return nil, e, c end\n"
    "  return obj\n"
    "end\n"
    /* EntityPath of a connection string: the default entity */
    "local entity_of = setmetatable({}, { __mode = 'k' })\n"
    "local function entity(self, e)\n"
    "  e = e or entity_of[self]\n"
    "  if e == nil then error('servicebus: which queue or topic? (no EntityPath in the connection string)', 3) end\n"
    "  return e\n"
    "end\n"
    "function Client:entity_path() return entity_of[self] end\n"
    "local raw_new = M.new\n"
    "function M.new(o)\n"
    "  local c, err, code = raw_new(o)\n"
    "  if c and o.connection_string then\n"
    "    local cs = M.parse_connection_string(o.connection_string)\n"
    "    entity_of[c] = cs and cs.entity_path\n"
    "  end\n"
    "  return c, err, code\n"
    "end\n"
    "function Client:sender(e) return opened(self:start_sender(entity(self, e))) end\n"
    "Client.get_queue_sender = Client.sender\n"
    "Client.get_topic_sender = Client.sender\n"
    "function Client:receiver(e, opts)\n"
    "  if type(e) == 'table' and opts == nil then e, opts = nil, e end\n"
    "  return opened(self:start_receiver(entity(self, e), opts))\n"
    "end\n"
    "Client.get_queue_receiver = Client.receiver\n"
    "function Client:subscription_receiver(topic, subscription, opts)\n"
    "  local o = {}\n"
    "  for k, v in pairs(opts or {}) do o[k] = v end\n"
    "  o.subscription = subscription\n"
    "  return opened(self:start_receiver(topic, o))\n"
    "end\n"
    "Client.get_subscription_receiver = Client.subscription_receiver\n"
    "function Client:session_receiver(e, opts)\n"
    "  local o = {}\n"
    "  if type(e) == 'table' and opts == nil then e, opts = nil, e end\n"
    "  if type(opts) == 'string' then opts = { session_id = opts } end\n"
    "  for k, v in pairs(opts or {}) do o[k] = v end\n"
    "  o.session = true\n"
    "  return opened(self:start_receiver(entity(self, e), o))\n"
    "end\n"
    "function Client:open()\n"
    "  local ok, err, code = self:start_open()\n"
    "  if not ok then return nil, err, code end\n"
    "  ok, err, code = ok:wait()\n"
    "  if not ok then return nil, err, code end\n"
    "  return self\n"
    "end\n"
    "local function closer(T)\n"
    "  return function(self)\n"
    "    if self:is_closed() then return true end\n"
    "    local op = self:start_close()\n"
    "    local ok, err, code = true\n"
    "    if op then ok, err, code = op:wait() end\n"
    "    self:_free()\n"
    "    if ok then return true end\n"
    "    if code == 'closed' then return true end\n"
    "    return nil, err, code\n"
    "  end\n"
    "end\n"
    "Client.close = closer(Client)\n"
    "Sender.close = closer(Sender)\n"
    "Receiver.close = closer(Receiver)\n"
    /* for msg in rx:messages(max_wait) do ... end (raises on failure) */
    "function Receiver:messages(max_wait)\n"
    "  local buf, i = {}, 0\n"
    "  return function()\n"
    "    i = i + 1\n"
    "    if buf[i] then return buf[i] end\n"
    "    local msgs, err, code = self:receive(1, max_wait)\n"
    "    if not msgs then error(M.error(err, code), 2) end\n"
    "    buf, i = msgs, 1\n"
    "    return buf[1]\n"
    "  end\n"
    "end\n"
    "Receiver.receive_messages = Receiver.receive\n"
    "Receiver.peek_messages = Receiver.peek\n"
    "Receiver.receive_deferred_messages = Receiver.receive_deferred\n"
    "Sender.send_messages = Sender.send\n"
    "Sender.schedule_messages = Sender.schedule\n"
    "Sender.cancel_scheduled_messages = Sender.cancel_scheduled\n"
    "Sender.create_message_batch = Sender.create_batch\n"
    "function M.from_connection_string(s, opts)\n"
    "  if type(s) ~= 'string' then error('servicebus: connection string must be a string', 2) end\n"
    "  local o = {}\n"
    "  for k, v in pairs(opts or {}) do o[k] = v end\n"
    "  o.connection_string = s\n"
    "  local c, err, code = M.new(o)\n"
    "  if not c then return nil, err, code end\n"

    "  if o.host or o.lazy then return c end\n"
    "  local ok\n"
    "  ok, err, code = c:open()\n"
    "  if not ok then c:_free(); return nil, err, code end\n"
    "  return c\n"
    "end\n"
    "function M.from_namespace(namespace, credential, opts)\n"
    "  local o = {}\n"
    "  for k, v in pairs(opts or {}) do o[k] = v end\n"
    "  o.namespace = namespace\n"
    "  if type(credential) == 'function' then o.token_provider = credential\n"
    "  elseif type(credential) == 'string' then o.sas_token = credential\n"
    "  elseif type(credential) == 'table' then\n"
    "    o.sas_key_name = credential.key_name or credential.policy or credential[1]\n"
    "    o.sas_key = credential.key or credential[2]\n"
    "    o.sas_token = credential.token\n"
    "  else error('servicebus: credential must be a table, a token string or a function', 2) end\n"
    "  local c, err, code = M.new(o)\n"
    "  if not c then return nil, err, code end\n"
    "  if o.host or o.lazy then return c end\n"
    "  local ok\n"
    "  ok, err, code = c:open()\n"
    "  if not ok then c:_free(); return nil, err, code end\n"
    "  return c\n"
    "end\n";

/* ------------------------------------------------------------------ */
/* Registration                                                        */
/* ------------------------------------------------------------------ */

static const luaL_Reg CLIENT_METHODS[] = {
    {"start_open", client_start_open},
    {"start_close", client_start_close},
    {"start_sender", client_start_sender},
    {"start_receiver", client_start_receiver},
    {"_free", client_free_l},
    {"abort", client_abort},
    {"is_closed", client_is_closed},
    {"is_open", client_is_open},
    {"host", client_host},
    {"_hostwait", client_hostwait},
    {"set_host_wait", client_set_host_wait},
    {"_iowait", client_iowait},
    {"fd", client_fd},
    {"events", client_events},
    {"timeout", client_timeout},
    {"step", client_step},
    {"connect_request", client_connect_request},
    {"disconnect_request", client_disconnect_request},
    {"transport_up", client_transport_up},
    {"transport_down", client_transport_down},
    {"feed", client_feed},
    {"take_output", client_take_output},
    {"tick", client_tick},
    {NULL, NULL},
};

static const luaL_Reg SENDER_METHODS[] = {
    {"start_send", sender_start_send},
    {"start_schedule", sender_start_schedule},
    {"start_cancel_scheduled", sender_start_cancel_scheduled},
    {"start_close", sender_start_close},
    {"create_batch", sender_create_batch},
    {"max_message_size", sender_max_message_size},
    {"is_closed", sender_is_closed},
    {"_free", sender_free_l},
    {NULL, NULL},
};

static const luaL_Reg RECEIVER_METHODS[] = {
    {"start_receive", receiver_start_receive},
    {"start_peek", receiver_start_peek},
    {"start_receive_deferred", receiver_start_receive_deferred},
    {"start_close", receiver_start_close},
    {"start_get_state", receiver_start_get_state},
    {"start_set_state", receiver_start_set_state},
    {"start_renew_lock", receiver_start_renew_lock},
    {"auto_renew", receiver_auto_renew},
    {"session_id", receiver_session_id},
    {"locked_until", receiver_locked_until},
    {"is_closed", receiver_is_closed},
    {"_free", receiver_free_l},
    {NULL, NULL},
};

static const luaL_Reg MESSAGE_METHODS[] = {
    {"start_complete", message_start_complete},
    {"start_abandon", message_start_abandon},
    {"start_defer", message_start_defer},
    {"start_dead_letter", message_start_dead_letter},
    {"start_renew_lock", message_start_renew_lock},
    {"auto_renew", message_auto_renew},
    {"stop_auto_renew", message_stop_auto_renew},
    {"copy", message_copy},
    {"to_table", message_to_table},
    {NULL, NULL},
};

static const luaL_Reg BATCH_METHODS[] = {
    {"add", batch_add},
    {"count", batch_count},
    {"size", batch_size},
    {"max_size", batch_max_size},
    {NULL, NULL},
};

static const luaL_Reg OP_METHODS[] = {
    {"cancel", op_cancel},
    {"set_timeout", op_set_timeout},
    {"result", op_result},
    {"is_done", op_is_done},
    {NULL, NULL},
};

static const luaL_Reg MODULE_FUNCS[] = {
    {"new", l_new},
    {"message", l_message},
    {"parse_connection_string", l_parse_connection_string},
    {"sas_token", l_sas_token},
    {"strerror", l_strerror},
    {"condition_code", l_condition_code},
    {"conditions", l_conditions},
    {"now", l_now},
    {"monotonic", l_monotonic},
    {"engine_version", l_engine_version},
    {"sequence", l_sequence},
    {"amqp", l_amqp},
    {"is_sequence", l_is_sequence},
    {NULL, NULL},
};

/* Creates metatable `name` with a methods table as __index (plus gc and
 * close) and leaves the methods table on the stack. */
/* Creates metatable t, registered by name and by address (udtype_t), with
 * __gc when given; leaves it on the stack. */
static void new_meta(lua_State *L, const udtype_t *t, lua_CFunction gc)
{
    luaL_newmetatable(L, t->name);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, t);
    if (gc) {
        lua_pushcfunction(L, gc);
        lua_setfield(L, -2, "__gc");
    }
}

static void new_type(lua_State *L, const udtype_t *t, const luaL_Reg *methods,
                     lua_CFunction gc, lua_CFunction tostr)
{
    new_meta(L, t, gc);
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, "__index");
    if (tostr) {
        lua_pushcfunction(L, tostr);
        lua_setfield(L, -3, "__tostring");
    }
    lua_remove(L, -2);
}

/* __close (Lua 5.4): the blocking close() of the methods table. */
static int generic_close(lua_State *L)
{
    lua_getfield(L, 1, "close");
    lua_pushvalue(L, 1);
    lua_call(L, 1, 0);
    return 0;
}

SBUS_API int luaopen_servicebus(lua_State *L)
{
    int mod, cm, sm, rm, mm, om, i;

    lua_newtable(L);
    lua_setfield(L, LUA_REGISTRYINDEX, REG_NOPARENT);

    lua_newtable(L);
    mod = lua_gettop(L);
    luaL_setfuncs(L, MODULE_FUNCS, 0);
    lua_pushstring(L, SBUS_VERSION);
    lua_setfield(L, mod, "version");
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, mod, "null");
    lua_pushstring(L, LUA_VERSION_NUM >= 504 ? "5.4" : "luajit");
    lua_setfield(L, mod, "_lua");
    /* servicebus.codes: name -> number, for every code the engine names */
    lua_newtable(L);
    for (i = -1; i >= -64; i--) {
        const char *n = sbus_errname(i);
        if (!n || strcmp(n, sbus_errname(-1000)) == 0)
            continue;
        lua_pushinteger(L, i);
        lua_setfield(L, -2, n);
    }
    lua_setfield(L, mod, "codes");

    new_type(L, &UT_CLIENT, CLIENT_METHODS, client_gc, client_tostring);
    cm = lua_gettop(L);
    new_type(L, &UT_SENDER, SENDER_METHODS, sender_gc, NULL);
    sm = lua_gettop(L);
    new_type(L, &UT_RECEIVER, RECEIVER_METHODS, receiver_gc, NULL);
    rm = lua_gettop(L);
    new_type(L, &UT_BATCH, BATCH_METHODS, batch_gc, NULL);
    lua_pushcfunction(L, batch_count);
    luaL_getmetatable(L, MT_BATCH);
    lua_insert(L, -2);
    lua_setfield(L, -2, "__len");
    lua_pop(L, 2);

    /* message: __index is a function (methods first, then fields); the
     * methods, __index and __gc have the metatable as upvalue (their type
     * check, test_ud_up) */
    new_meta(L, &UT_MESSAGE, NULL);
    lua_pushvalue(L, -1);
    lua_pushcclosure(L, message_gc, 1);
    lua_setfield(L, -2, "__gc");
    lua_newtable(L);
    lua_pushvalue(L, -2);
    luaL_setfuncs(L, MESSAGE_METHODS, 1);
    mm = lua_gettop(L);
    lua_pushvalue(L, mm);
    lua_createtable(L, 0, (int)(sizeof FIELDS / sizeof FIELDS[0]));
    for (i = 0; FIELDS[i].name; i++) {
        lua_pushinteger(L, i + 1);
        lua_setfield(L, -2, FIELDS[i].name);
    }
    lua_pushvalue(L, mm - 1);
    lua_pushcclosure(L, message_index, 3);
    lua_setfield(L, mm - 1, "__index");
    lua_pushcfunction(L, message_newindex);
    lua_setfield(L, mm - 1, "__newindex");
    lua_pushcfunction(L, message_tostring);
    lua_setfield(L, mm - 1, "__tostring");

    /* the markers of sequence bodies and of encoded values, the box of
     * the table encoder, the guard of the messages of one send */
    new_meta(L, &UT_SEQUENCE, NULL);
    new_meta(L, &UT_AMQP, NULL);
    new_meta(L, &UT_WRITER, writer_gc);
    new_meta(L, &UT_MSGLIST, msglist_gc);
    lua_pop(L, 4);
    {
        msgpool_t *p = (msgpool_t *)lua_newuserdata(L, sizeof *p);
        p->n = 0;
        luaL_newmetatable(L, UT_MSGPOOL.name);
        lua_pushcfunction(L, msgpool_gc);
        lua_setfield(L, -2, "__gc");
        lua_setmetatable(L, -2);
        lua_rawsetp(L, LUA_REGISTRYINDEX, &UT_MSGPOOL);
    }

    /* op: a userdata; methods, __index and __tostring have the metatable
     * as upvalue (no __gc: an op holds no C resource) */
    new_meta(L, &UT_OP, NULL);
    lua_newtable(L);
    lua_pushvalue(L, -2);
    luaL_setfuncs(L, OP_METHODS, 1);
    om = lua_gettop(L);
    lua_pushvalue(L, om - 1);
    lua_pushcclosure(L, op_index, 1);
    lua_setfield(L, om - 1, "__index");
    lua_pushvalue(L, om - 1);
    lua_pushcclosure(L, op_tostring, 1);
    lua_setfield(L, om - 1, "__tostring");
    lua_pushboolean(L, 1);
    lua_rawsetp(L, om - 1, &UT_OP);
    lua_createtable(L, 0, 16); /* OPDONE_KEY */
    lua_pushvalue(L, om);
    lua_setfield(L, -2, "methods");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &OPDONE_KEY);

    /* __close on 5.4 for client, sender, receiver */
    {
        const char *mts[] = {MT_CLIENT, MT_SENDER, MT_RECEIVER};
        for (i = 0; i < 3; i++) {
            luaL_getmetatable(L, mts[i]);
            lua_pushcfunction(L, generic_close);
            lua_setfield(L, -2, "__close");
            lua_pop(L, 1);
        }
    }

    if (luaL_loadbuffer(L, PRELUDE, sizeof PRELUDE - 1, "=servicebus") != 0)
        return lua_error(L);
    lua_pushvalue(L, mod);
    lua_pushvalue(L, cm);
    lua_pushvalue(L, sm);
    lua_pushvalue(L, rm);
    lua_pushvalue(L, mm);
    lua_pushvalue(L, om);
    lua_pushvalue(L, mm - 1);
    lua_pushvalue(L, om - 1);
    lua_call(L, 8, 0);

    lua_pushvalue(L, mod);
    return 1;
}
