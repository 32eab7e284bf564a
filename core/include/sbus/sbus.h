/*
 * sbus.h - the servicebus engine: an Azure Service Bus client over AMQP 1.0.
 *
 * This header is the manual. It holds the whole public surface of libsbus:
 * errors, values, messages, batches, the connection (the sans-I/O boundary),
 * senders, receivers and sessions. <sbus/io.h> adds an optional POSIX driver
 * for hosts without an event loop of their own.
 *
 * THE HOST CONTRACT (one screen)
 *
 *   The engine never touches a socket, a clock or a thread. The host does:
 *
 *   1. create:    sbus_conn_new(&c, &opts, err, sizeof err)
 *   2. open:      sbus_conn_open(c, token); then drain events.
 *   3. events:    while (sbus_conn_next_event(c, &ev)) handle(&ev);
 *                 SBUS_EV_CONNECT     open a byte stream to ev.host:ev.port,
 *                                     then sbus_conn_transport_up(c), or
 *                                     sbus_conn_transport_down(c, why).
 *                 SBUS_EV_DISCONNECT  flush what the write buffer still
 *                                     holds if you can, then close the socket.
 *                 SBUS_EV_DONE        operation ev.token finished; ev.error is
 *                                     NULL on success.
 *                 SBUS_EV_TOKEN       (host-supplied credentials only) get a
 *                                     token for ev.audience and hand it over
 *                                     with sbus_conn_set_token().
 *                 SBUS_EV_LOG         a trace line (opts.trace), ev.text.
 *   4. bytes in:  p = sbus_conn_read_buffer(c, &cap); copy up to cap bytes
 *                 into p; sbus_conn_read_done(c, n). EOF or socket error:
 *                 sbus_conn_transport_down(c, why).
 *   5. bytes out: p = sbus_conn_write_buffer(c, &len); write some;
 *                 sbus_conn_write_done(c, written). Repeat while len > 0.
 *   6. time:      deadline = sbus_conn_tick(c, mono_ms, unix_ms) whenever
 *                 the previous deadline passes (and before starting an
 *                 operation when time may have moved). -1 = no deadline.
 *   After every call of steps 2-6 and every operation call, drain events
 *   (3) and flush output (5).
 *
 * EXACTLY ONE COMPLETION
 *   Every operation that returns 0 ("accepted") produces exactly one
 *   SBUS_EV_DONE event carrying its token, whatever happens: success,
 *   error, timeout, cancel, connection loss, the sender/receiver being
 *   closed or freed, or sbus_conn_abort(). An operation that returns a
 *   negative code was not accepted and produces no event. Bindings rely on
 *   this rule to never leave a Future or a waiter hanging.
 *
 * THREADS
 *   None inside. A connection and everything made from it (senders,
 *   receivers, messages received on it) are used by one thread at a time;
 *   that includes freeing received messages, also after the connection is
 *   freed (their blocks return to a pool the connection keeps).
 *   Messages created by sbus_message_new() belong to no connection.
 *
 * OWNERSHIP WORDS
 *   borrowed  - the callee only looks during the call (or, for returned
 *               pointers, the caller looks until the stated point);
 *   owned     - the object keeps it until it is freed;
 *   transfers - ownership passes to the other side, who must free it;
 *   copied    - the callee takes its own copy; the caller keeps its own.
 *
 * ERRORS
 *   Synchronous calls return 0 (or a count) on success and a negative
 *   SBUS_E* code on failure. Asynchronous failures arrive as an
 *   sbus_error_t in the completion event: the same code, the AMQP condition
 *   verbatim, the description, and retriable / fatal flags. One table in
 *   core/src/error.c maps conditions to codes; Python builds its exception
 *   classes from it and Lua its code strings (sbus_errname()).
 */
#ifndef SBUS_SBUS_H
#define SBUS_SBUS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define SBUS_API __attribute__((visibility("default")))
#else
#define SBUS_API
#endif

/* ------------------------------------------------------------------ */
/* Version: the one place it is defined (setup.py and CMake read it). */
/* ------------------------------------------------------------------ */

#define SBUS_VERSION_MAJOR 0
#define SBUS_VERSION_MINOR 1
#define SBUS_VERSION_PATCH 0
#define SBUS_VERSION "0.1.0"

/* The library's version string, e.g. "0.1.0". Borrowed, static. */
SBUS_API const char *sbus_version(void);

/* ------------------------------------------------------------------ */
/* Errors                                                              */
/* ------------------------------------------------------------------ */

/*
 * Error codes. Negative, stable, each with a symbolic name
 * (sbus_errname) that Lua returns as its third value and Python maps to an
 * exception class. Codes above SBUS_E__ASYNC are misuse or local failures;
 * the rest normally come from the service or the connection.
 */
typedef enum sbus_errcode {
    SBUS_OK = 0,
    /* local, synchronous */
    SBUS_EINVAL = -1,          /* "invalid-argument": bad argument or value */
    SBUS_ENOMEM = -2,          /* "no-memory" */
    SBUS_ESTATE = -3,          /* "invalid-state": closed object, wrong mode */
    SBUS_ENOTSUP = -4,         /* "not-supported" */
    SBUS_ENOENT = -5,          /* "absent": a property that is not set */
    SBUS_ETOOBIG = -6,         /* "too-large": does not fit the batch/limit */
    SBUS_ECONNSTR = -7,        /* "bad-connection-string" */
    SBUS_ESETTLED = -8,        /* "already-settled": settled once already */
    SBUS_E__ASYNC = -19,
    /* asynchronous (also usable synchronously where they fit) */
    SBUS_ECONNECTION = -20,    /* "connection": transport lost, refused, DNS */
    SBUS_EAUTH = -21,          /* "unauthorized": token refused (bad key,
                                  expired, wrong audience) */
    SBUS_EFORBIDDEN = -22,     /* "forbidden": token lacks the needed right */
    SBUS_ENOTFOUND = -23,      /* "not-found": entity or rule missing */
    SBUS_ETIMEOUT = -24,       /* "timeout": operation deadline passed */
    SBUS_EBUSY = -25,          /* "server-busy": throttled */
    SBUS_ELOCKLOST = -26,      /* "lock-lost": message lock expired/unknown */
    SBUS_ESESSIONLOCKLOST = -27, /* "session-lock-lost" */
    SBUS_ESESSIONLOCKED = -28, /* "session-cannot-be-locked" */
    SBUS_EMSGNOTFOUND = -29,   /* "message-not-found" */
    SBUS_ESIZE = -30,          /* "message-size-exceeded" */
    SBUS_EQUOTA = -31,         /* "quota-exceeded" */
    SBUS_EDISABLED = -32,      /* "entity-disabled" */
    SBUS_EEXISTS = -33,        /* "entity-already-exists" */
    SBUS_ECANCELLED = -34,     /* "cancelled": sbus_conn_cancel() */
    SBUS_ECLOSED = -35,        /* "closed": its sender/receiver/connection
                                  was closed or freed first */
    SBUS_ENOTALLOWED = -36,    /* "not-allowed": the service refused the op */
    SBUS_EARGUMENT = -37,      /* "argument-error": the service refused an
                                  argument */
    SBUS_ETLS = -38,           /* "tls": handshake or verification failed */
    SBUS_EPROXY = -39,         /* "proxy": the HTTP proxy refused */
    SBUS_ESERVICE = -40,       /* "service-error": any other service error */
} sbus_errcode_t;

/*
 * An error as the engine reports it. Strings are borrowed: valid until the
 * next call of sbus_conn_next_event() on the connection that produced it
 * (copy what you keep).
 */
typedef struct sbus_error {
    int code;                /* an sbus_errcode_t */
    const char *condition;   /* AMQP condition verbatim, or NULL if local */
    const char *description; /* human text, never NULL, never holds secrets */
    int retriable;           /* 1 if the same call may succeed later */
    int fatal;               /* 1 if the object (connection/link) is dead */
} sbus_error_t;

/* Symbolic name of a code, e.g. "lock-lost". Borrowed, static. */
SBUS_API const char *sbus_errname(int code);
/* One-line English description of a code. Borrowed, static. */
SBUS_API const char *sbus_strerror(int code);
/* The code an AMQP condition maps to (SBUS_ESERVICE if unknown); sets
 * *retriable and *fatal when not NULL. `condition` borrowed. */
SBUS_API int sbus_condition_code(const char *condition, int *retriable,
                                 int *fatal);
/* Iterate the condition table (for bindings that build classes from it):
 * returns 0 and fills the out-params for i in [0, n), SBUS_ENOENT after.
 * Strings borrowed, static. */
SBUS_API int sbus_condition_at(size_t i, const char **condition, int *code,
                               int *retriable);

/* ------------------------------------------------------------------ */
/* Values (application properties, amqp-value bodies)                  */
/* ------------------------------------------------------------------ */

typedef enum sbus_vtype {
    SBUS_VAL_NULL = 0,
    SBUS_VAL_BOOL,      /* u.b */
    SBUS_VAL_INT,       /* u.i: AMQP byte/short/int/long; sent as int when
                           it fits in 32 bits, else long */
    SBUS_VAL_UINT,      /* u.u: AMQP ubyte/ushort/uint/ulong */
    SBUS_VAL_DOUBLE,    /* u.d: AMQP float/double */
    SBUS_VAL_STRING,    /* u.s: UTF-8, AMQP string or symbol */
    SBUS_VAL_BINARY,    /* u.s: bytes */
    SBUS_VAL_TIMESTAMP, /* u.i: milliseconds since the Unix epoch */
    SBUS_VAL_UUID,      /* u.uuid: 16 bytes, RFC 4122 order */
    SBUS_VAL_AMQP,      /* u.s: one complete AMQP-encoded value
                           (constructor included) of a type the members
                           above cannot hold: list, map, array, described
                           value, char, decimal32/64/128. Read it with
                           sbus_amqp_reader_t, build it with
                           sbus_amqp_writer_t (both below). Received
                           values keep their bytes exactly as the service
                           sent them; sent ones go out verbatim. */
} sbus_vtype_t;

/* An AMQP value. Pointers inside are borrowed (see each call). */
typedef struct sbus_value {
    sbus_vtype_t type;
    union {
        int b;
        int64_t i;
        uint64_t u;
        double d;
        struct {
            const char *ptr;
            size_t len;
        } s;
        uint8_t uuid[16];
    } u;
} sbus_value_t;

/* ------------------------------------------------------------------ */
/* Encoded AMQP values: reader and writer                              */
/* ------------------------------------------------------------------ */

/*
 * Values that sbus_value_t cannot hold as a member (lists, maps, arrays,
 * described values, char, decimals) travel as their AMQP encoding
 * (SBUS_VAL_AMQP), and so do amqp-sequence bodies. The reader walks such
 * bytes one item at a time, the writer builds them. Both are plain C with
 * no allocation in the reader; nothing in them refers to a connection.
 *
 * Reading (e.g. to build a Python list or a Lua table):
 *
 *   sbus_amqp_reader_t rd;
 *   sbus_amqp_item_t it;
 *   sbus_amqp_reader_init(&rd, v.u.s.ptr, v.u.s.len);
 *   while (sbus_amqp_read(&rd, &it) == 1) {
 *       if (it.v.type == SBUS_VAL_AMQP) {      compound: LIST, MAP, ARRAY
 *           sbus_amqp_reader_t in;             or DESCRIBED
 *           sbus_amqp_enter(&it, &in);         then read its it.count
 *           ...                                children from `in`
 *       } else { use it.v (and it.type for the exact AMQP type) }
 *   }
 */

/* The exact AMQP type of an item. */
typedef enum sbus_amqp_type {
    SBUS_AMQP_NULL = 0,
    SBUS_AMQP_BOOL,
    SBUS_AMQP_UBYTE,
    SBUS_AMQP_USHORT,
    SBUS_AMQP_UINT,
    SBUS_AMQP_ULONG,
    SBUS_AMQP_BYTE,
    SBUS_AMQP_SHORT,
    SBUS_AMQP_INT,
    SBUS_AMQP_LONG,
    SBUS_AMQP_FLOAT,
    SBUS_AMQP_DOUBLE,
    SBUS_AMQP_DECIMAL32,
    SBUS_AMQP_DECIMAL64,
    SBUS_AMQP_DECIMAL128,
    SBUS_AMQP_CHAR,
    SBUS_AMQP_TIMESTAMP,
    SBUS_AMQP_UUID,
    SBUS_AMQP_BINARY,
    SBUS_AMQP_STRING,
    SBUS_AMQP_SYMBOL,
    SBUS_AMQP_LIST,
    SBUS_AMQP_MAP,
    SBUS_AMQP_ARRAY,
    SBUS_AMQP_DESCRIBED,
} sbus_amqp_type_t;

/*
 * One item read. `v` holds its value as sbus_value_t:
 *   NULL, BOOL, TIMESTAMP, UUID, BINARY, STRING as their SBUS_VAL_ type;
 *   (U)BYTE, (U)SHORT, (U)INT, (U)LONG as SBUS_VAL_INT / SBUS_VAL_UINT;
 *   FLOAT, DOUBLE as SBUS_VAL_DOUBLE; SYMBOL as SBUS_VAL_STRING;
 *   CHAR as SBUS_VAL_UINT holding the Unicode code point;
 *   DECIMAL32/64/128 as SBUS_VAL_BINARY holding its 4/8/16 bytes as on
 *   the wire (IEEE 754-2008 decimal, big-endian);
 *   LIST, MAP, ARRAY, DESCRIBED as SBUS_VAL_AMQP holding `encoded`; read
 *   the children with sbus_amqp_enter().
 * Pointers are borrowed from the bytes the reader was given.
 */
typedef struct sbus_amqp_item {
    sbus_amqp_type_t type;  /* exact AMQP type */
    sbus_value_t v;         /* its value (see above) */
    size_t count;           /* LIST, ARRAY: elements; MAP: keys and values
                               (2 per entry, key first); DESCRIBED: 2
                               (the descriptor, then the value) */
    const void *encoded;    /* the item's complete encoding (for an
                               element of an ARRAY: without the
                               constructor the elements share) */
    size_t encoded_len;     /* its length */
    /* private: what sbus_amqp_enter() needs */
    const uint8_t *priv_body;
    size_t priv_size;
    uint8_t priv_elem;
} sbus_amqp_item_t;

/* A cursor over encoded values. Fields are private. */
typedef struct sbus_amqp_reader {
    const uint8_t *p;    /* next byte */
    const uint8_t *end;  /* one past the last */
    int array;           /* 1: reading the elements of an array */
    uint8_t elem;        /* then: their shared constructor */
    uint32_t left;       /* then: elements left */
    int bad;             /* malformed input seen */
} sbus_amqp_reader_t;

/* Starts reading the values encoded in p[n] (borrowed while reading). */
SBUS_API void sbus_amqp_reader_init(sbus_amqp_reader_t *r, const void *p,
                                    size_t n);
/* Reads the next value into *it: 1, or 0 at the end, or SBUS_EINVAL for
 * malformed bytes (then every later call too), SBUS_ENOTSUP for an array
 * of described values. */
SBUS_API int sbus_amqp_read(sbus_amqp_reader_t *r, sbus_amqp_item_t *it);
/* A reader over the children of compound item `it` (LIST, MAP, ARRAY,
 * DESCRIBED; see count). SBUS_EINVAL for any other item. */
SBUS_API int sbus_amqp_enter(const sbus_amqp_item_t *it,
                             sbus_amqp_reader_t *inner);
/* Formats the 4, 8 or 16 bytes of a DECIMAL32/64/128 item (it.v.u.s) as
 * text that Python's decimal.Decimal() and most decimal parsers accept:
 * [-]<coefficient>E<exponent> (e.g. "12345E-2" for 123.45), "Infinity",
 * "-Infinity", "NaN" or "sNaN". Writes it NUL-terminated into out[cap];
 * returns its length, SBUS_EINVAL for another length, SBUS_ETOOBIG if cap
 * is short (48 always suffices). */
SBUS_API int sbus_amqp_decimal_format(const void *p, size_t n, char *out,
                                      size_t cap);

/* Builds one encoded AMQP value. */
typedef struct sbus_amqp_writer sbus_amqp_writer_t;

/* A new empty writer. *out transfers (sbus_amqp_writer_free). */
SBUS_API int sbus_amqp_writer_new(sbus_amqp_writer_t **out);
/* Frees w. NULL is a no-op. */
SBUS_API void sbus_amqp_writer_free(sbus_amqp_writer_t *w);
/* Writes a scalar of exact type t (NULL .. SYMBOL) from v, given as the
 * reader fills it (CHAR: the code point in u.u; DECIMALnn: 4/8/16 bytes in
 * u.s; integers from SBUS_VAL_INT or SBUS_VAL_UINT within t's range;
 * SYMBOL/STRING/BINARY from u.s). v borrowed. SBUS_EINVAL when v does not
 * fit t; SBUS_ESTATE when w holds a complete value already. */
SBUS_API int sbus_amqp_write(sbus_amqp_writer_t *w, sbus_amqp_type_t t,
                             const sbus_value_t *v);
/* Writes v the way sbus_message_set_property() sends it (SBUS_VAL_INT as
 * int or long, SBUS_VAL_STRING as string, SBUS_VAL_AMQP verbatim...). */
SBUS_API int sbus_amqp_write_value(sbus_amqp_writer_t *w,
                                   const sbus_value_t *v);
/* Opens a compound t (LIST, MAP, ARRAY, DESCRIBED); what is written until
 * the matching sbus_amqp_end() goes inside it. MAP: key, value, key,
 * value...; DESCRIBED: exactly the descriptor, then the value; ARRAY:
 * elements of one scalar type, written with sbus_amqp_write (no
 * compounds: SBUS_ENOTSUP). At most 32 levels. */
SBUS_API int sbus_amqp_begin(sbus_amqp_writer_t *w, sbus_amqp_type_t t);
/* Closes the innermost open compound. SBUS_EINVAL when a MAP holds an odd
 * number of items or a DESCRIBED not exactly two; SBUS_ESTATE when none
 * is open. */
SBUS_API int sbus_amqp_end(sbus_amqp_writer_t *w);
/* The value built: *p borrowed until the next call on w. SBUS_ESTATE
 * while a compound is open or no value was written; SBUS_ENOMEM if an
 * allocation failed on the way. */
SBUS_API int sbus_amqp_writer_result(const sbus_amqp_writer_t *w,
                                     const void **p, size_t *n);
/* Empties w for the next value, keeping its memory (a binding that builds
 * many values can keep one writer). */
SBUS_API void sbus_amqp_writer_reset(sbus_amqp_writer_t *w);

/* ------------------------------------------------------------------ */
/* Messages                                                            */
/* ------------------------------------------------------------------ */

/*
 * A message: what you send, and what you receive. Created empty with
 * sbus_message_new() or handed to you (transfers) by a receive event; freed
 * with sbus_message_free() in both cases. A received message remembers the
 * receiver and link it came from so that it can be settled through
 * sbus_receiver_settle(); it may outlive that receiver (settling then fails
 * with SBUS_ELOCKLOST or SBUS_ECLOSED, never crashes).
 */
typedef struct sbus_message sbus_message_t;

/* String properties (system properties and broker annotations). */
typedef enum sbus_prop {
    SBUS_PROP_MESSAGE_ID = 0,      /* properties.message-id (<=128 chars) */
    SBUS_PROP_CORRELATION_ID,      /* properties.correlation-id */
    SBUS_PROP_CONTENT_TYPE,        /* properties.content-type (symbol) */
    SBUS_PROP_SUBJECT,             /* properties.subject ("label") */
    SBUS_PROP_TO,                  /* properties.to */
    SBUS_PROP_REPLY_TO,            /* properties.reply-to */
    SBUS_PROP_REPLY_TO_SESSION_ID, /* properties.reply-to-group-id */
    SBUS_PROP_SESSION_ID,          /* properties.group-id */
    SBUS_PROP_PARTITION_KEY,       /* x-opt-partition-key */
    SBUS_PROP_VIA_PARTITION_KEY,   /* x-opt-via-partition-key */
    /* received only (read-only): */
    SBUS_PROP_DEAD_LETTER_REASON,  /* app property DeadLetterReason */
    SBUS_PROP_DEAD_LETTER_DESCRIPTION, /* DeadLetterErrorDescription */
    SBUS_PROP_DEAD_LETTER_SOURCE,  /* x-opt-deadletter-source */
    SBUS_PROP__COUNT
} sbus_prop_t;

/* Integer fields. Times are milliseconds since the Unix epoch. */
typedef enum sbus_field {
    SBUS_FIELD_TIME_TO_LIVE = 0,     /* header.ttl, ms */
    SBUS_FIELD_SCHEDULED_ENQUEUE_TIME, /* x-opt-scheduled-enqueue-time */
    /* received only (read-only): */
    SBUS_FIELD_SEQUENCE_NUMBER,      /* x-opt-sequence-number */
    SBUS_FIELD_ENQUEUED_SEQUENCE_NUMBER, /* x-opt-enqueue-sequence-number */
    SBUS_FIELD_ENQUEUED_TIME,        /* x-opt-enqueued-time */
    SBUS_FIELD_LOCKED_UNTIL,         /* x-opt-locked-until */
    SBUS_FIELD_DELIVERY_COUNT,       /* header.delivery-count */
    SBUS_FIELD_EXPIRES_AT,           /* enqueued time + ttl */
    SBUS_FIELD_STATE,                /* x-opt-message-state: 0 active,
                                        1 deferred, 2 scheduled */
    SBUS_FIELD__COUNT
} sbus_field_t;

/* How the body is carried. */
typedef enum sbus_body_kind {
    SBUS_BODY_DATA = 0, /* one or more data sections (binary) */
    SBUS_BODY_VALUE,    /* one amqp-value section */
    SBUS_BODY_SEQUENCE, /* amqp-sequence sections */
} sbus_body_kind_t;

/* Where a received message stands. */
typedef enum sbus_settle_state {
    SBUS_MSG_UNSETTLED = 0, /* peek-locked, settle it */
    SBUS_MSG_SETTLED,       /* settled by this client */
    SBUS_MSG_PRESETTLED,    /* receive-and-delete: nothing to settle */
    SBUS_MSG_PEEKED,        /* from peek: cannot be settled */
} sbus_settle_state_t;

/* A new empty message (body: one empty data section). *out transfers. */
SBUS_API int sbus_message_new(sbus_message_t **out);
/* A deep copy of m (without receiver identity). *out transfers. */
SBUS_API int sbus_message_copy(const sbus_message_t *m, sbus_message_t **out);
/* Frees m. NULL is a no-op. */
SBUS_API void sbus_message_free(sbus_message_t *m);
/* Makes m, a message built by the host, as sbus_message_new() made it (no
 * properties, fields or application properties; one empty data section),
 * keeping the allocation itself for the next message: for a host that
 * sends many (the engine copies what it sends). SBUS_ESTATE for a received
 * message or one an operation or auto-renewal still refers to. */
SBUS_API int sbus_message_reset(sbus_message_t *m);

/* Sets the body to one data section. Bytes copied. */
SBUS_API int sbus_message_set_body(sbus_message_t *m, const void *p,
                                   size_t n);
/* As sbus_message_set_body, but the section REFERS to p[n] (not copied):
 * for a host whose body bytes are immutable (a binding keeping its
 * language's bytes or string object alive next to the message). The engine
 * reads p[n] only when it encodes m or copies it: sbus_sender_send and
 * sbus_sender_schedule encode during the call, sbus_message_copy makes a
 * copy that owns its bytes, and sbus_message_body_at hands the pointer back.
 * Freeing, resetting or replacing the body never reads or frees p. So p[n]
 * must stay unchanged and valid across those calls; a host that keeps m
 * beyond them keeps p[n] too, until m is freed, reset or its body replaced. */
SBUS_API int sbus_message_set_body_ref(sbus_message_t *m, const void *p,
                                       size_t n);
/* Appends one more data section. Bytes copied. */
SBUS_API int sbus_message_add_body_section(sbus_message_t *m, const void *p,
                                           size_t n);
/* Sets the body to one amqp-value holding v. v copied. An SBUS_VAL_AMQP
 * value (any AMQP type: a list, a map...) goes out verbatim; SBUS_EINVAL
 * unless its bytes are exactly one well-formed value. */
SBUS_API int sbus_message_set_body_value(sbus_message_t *m,
                                         const sbus_value_t *v);
/* Sets the body to one amqp-sequence section: p[n] is the AMQP encoding of
 * a list (e.g. built with sbus_amqp_writer_t; copied). SBUS_EINVAL unless
 * it is exactly one well-formed list. */
SBUS_API int sbus_message_set_body_sequence(sbus_message_t *m, const void *p,
                                            size_t n);
/* Appends one more amqp-sequence section (p[n] as above). SBUS_ESTATE
 * unless the body is a sequence body already. */
SBUS_API int sbus_message_add_body_sequence(sbus_message_t *m, const void *p,
                                            size_t n);
/* Number of amqp-sequence sections (0 unless SBUS_BODY_SEQUENCE). */
SBUS_API size_t sbus_message_body_sequence_count(const sbus_message_t *m);
/* amqp-sequence section i as the AMQP encoding of its list (read it with
 * sbus_amqp_reader_t: one LIST item). *p borrowed until m is changed or
 * freed. SBUS_ESTATE for another body kind, SBUS_ENOENT past the end. */
SBUS_API int sbus_message_body_sequence_at(const sbus_message_t *m, size_t i,
                                           const void **p, size_t *n);
/* The body kind. */
SBUS_API sbus_body_kind_t sbus_message_body_kind(const sbus_message_t *m);
/* Number of data sections (0 for a value body). */
SBUS_API size_t sbus_message_body_count(const sbus_message_t *m);
/* Data section i. *p borrowed until m is changed or freed. */
SBUS_API int sbus_message_body_at(const sbus_message_t *m, size_t i,
                                  const void **p, size_t *n);
/* The amqp-value body as a value: a simple one as its SBUS_VAL_ type,
 * anything else (list, map, array, described, char, decimal) as
 * SBUS_VAL_AMQP with its encoding. SBUS_ESTATE for a data or sequence
 * body. Pointers inside borrowed until m changes. */
SBUS_API int sbus_message_body_value(const sbus_message_t *m,
                                     sbus_value_t *out);

/* Sets string property `which` (NULL clears it). Copied. SBUS_EINVAL for
 * read-only properties or identifiers longer than 128 characters. */
SBUS_API int sbus_message_set_prop(sbus_message_t *m, sbus_prop_t which,
                                   const char *s, size_t n);
/* Gets string property `which`: 0 and *s borrowed (until m changes), or
 * SBUS_ENOENT when not set. */
SBUS_API int sbus_message_get_prop(const sbus_message_t *m, sbus_prop_t which,
                                   const char **s, size_t *n);
/* Sets integer field `which` (TTL, scheduled time). */
SBUS_API int sbus_message_set_field(sbus_message_t *m, sbus_field_t which,
                                    int64_t v);
/* Clears integer field `which`. */
SBUS_API int sbus_message_clear_field(sbus_message_t *m, sbus_field_t which);
/* Gets integer field `which`: 0, or SBUS_ENOENT when not set. */
SBUS_API int sbus_message_get_field(const sbus_message_t *m,
                                    sbus_field_t which, int64_t *v);

/* Sets application property `key` (replacing one of the same name). Key
 * and value copied. SBUS_VAL_AMQP values (lists, maps, char, decimal...)
 * go out verbatim; SBUS_EINVAL unless their bytes are exactly one
 * well-formed AMQP value. (The service and its SDKs document only simple
 * types here; other clients may send any.) */
SBUS_API int sbus_message_set_property(sbus_message_t *m, const char *key,
                                       size_t klen, const sbus_value_t *v);
/* Removes application property `key` (SBUS_ENOENT if absent). */
SBUS_API int sbus_message_del_property(sbus_message_t *m, const char *key,
                                       size_t klen);
/* Number of application properties. */
SBUS_API size_t sbus_message_property_count(const sbus_message_t *m);
/* Application property i, in insertion/wire order. Borrowed until m
 * changes. Received values of a type sbus_value_t has no member for come
 * as SBUS_VAL_AMQP (their bytes as sent); symbols as SBUS_VAL_STRING,
 * every integer type as SBUS_VAL_INT or SBUS_VAL_UINT, float as
 * SBUS_VAL_DOUBLE. */
SBUS_API int sbus_message_property_at(const sbus_message_t *m, size_t i,
                                      const char **key, size_t *klen,
                                      sbus_value_t *v);

/* The lock token (RFC 4122 byte order) of a peek-locked message;
 * SBUS_ENOENT when it has none. */
SBUS_API int sbus_message_lock_token(const sbus_message_t *m,
                                     uint8_t out[16]);
/* Formats a 16-byte uuid as 36 characters plus NUL into out[37]. */
SBUS_API void sbus_uuid_format(const uint8_t uuid[16], char out[37]);
/* Settlement state of a received message. */
SBUS_API sbus_settle_state_t sbus_message_settle_state(
    const sbus_message_t *m);
/* Size in bytes of m once encoded as an AMQP message. */
SBUS_API size_t sbus_message_encoded_size(const sbus_message_t *m);

/* ------------------------------------------------------------------ */
/* Batches                                                             */
/* ------------------------------------------------------------------ */

/*
 * A batch: messages sent as one transfer (message-format 0x80013700), up
 * to a size limit. Adding a message that does not fit returns SBUS_ETOOBIG
 * and leaves the batch as it was.
 */
typedef struct sbus_batch sbus_batch_t;

/* New empty batch with a limit in bytes (0: the sender's link limit, known
 * at send time; until then 262144). *out transfers. */
SBUS_API int sbus_batch_new(size_t max_size, sbus_batch_t **out);
/* Frees b. */
SBUS_API void sbus_batch_free(sbus_batch_t *b);
/* Adds a copy of m (m stays the caller's). SBUS_ETOOBIG if it does not
 * fit. SBUS_EINVAL for an invalid message (its session/partition keys
 * conflict). */
SBUS_API int sbus_batch_add(sbus_batch_t *b, const sbus_message_t *m);
/* Messages in b. */
SBUS_API size_t sbus_batch_count(const sbus_batch_t *b);
/* Bytes b takes on the wire so far. */
SBUS_API size_t sbus_batch_size(const sbus_batch_t *b);
/* The limit of b. */
SBUS_API size_t sbus_batch_max_size(const sbus_batch_t *b);

/* ------------------------------------------------------------------ */
/* Connection                                                          */
/* ------------------------------------------------------------------ */

typedef struct sbus_conn sbus_conn_t;
typedef struct sbus_sender sbus_sender_t;
typedef struct sbus_receiver sbus_receiver_t;

typedef enum sbus_transport {
    SBUS_TRANSPORT_AMQP = 0,     /* AMQP over TCP: TLS on 5671, or plain
                                    5672 when the connection string says
                                    UseDevelopmentEmulator=true */
    SBUS_TRANSPORT_WEBSOCKET,    /* AMQP over (secure) WebSockets, 443 */
} sbus_transport_t;

/*
 * Connection options. Initialise with sbus_conn_options_init(), then set
 * what you need. Strings are borrowed: copied by sbus_conn_new().
 *
 * Endpoint: either `connection_string`, or `namespace` (host, optionally
 * host:port; any scheme:// prefix is stripped) plus one credential.
 * Credential, exactly one: sas_key_name + sas_key; sas_token (a complete
 * "SharedAccessSignature sr=..." string, used as is); or host_tokens = 1
 * (the engine asks for tokens with SBUS_EV_TOKEN events).
 */
typedef struct sbus_conn_options {
    const char *connection_string; /* Endpoint=sb://...;SharedAccess... */
    const char *namespace_;        /* fully qualified namespace */
    const char *sas_key_name;      /* policy name */
    const char *sas_key;           /* key text */
    const char *sas_token;         /* a ready SharedAccessSignature */
    int host_tokens;               /* 1: host supplies tokens */
    int port;                      /* 0: a port written in the endpoint or
                                      namespace, else 5671 (TLS) / 5672 */
    int use_tls;                   /* -1 auto (on unless
                                      UseDevelopmentEmulator), 0 off, 1 on */
    sbus_transport_t transport;    /* AMQP or WebSocket */
    const char *ca_file;           /* PEM bundle; NULL: system store */
    int verify;                    /* 1 (default): verify peer and name */
    const char *proxy_host;        /* HTTP CONNECT proxy, NULL: none */
    int proxy_port;                /* proxy port */
    const char *proxy_user;        /* basic auth user, or NULL */
    const char *proxy_password;    /* basic auth password, or NULL */
    int retry_total;               /* retries per operation (default 3) */
    int64_t retry_backoff_ms;      /* backoff factor (default 800) */
    int64_t retry_backoff_max_ms;  /* backoff cap (default 120000) */
    int64_t operation_timeout_ms;  /* per attempt (default 60000) */
    int64_t token_lifetime_s;      /* SAS tokens we sign (default 3600) */
    uint32_t idle_timeout_ms;      /* our AMQP idle-time-out (0: none) */
    const char *user_agent;        /* appended to the user-agent property */
    const char *container_id;      /* NULL: generated */
    int trace;                     /* 1: SBUS_EV_LOG per AMQP frame */
} sbus_conn_options_t;

/* Fills o with the defaults. */
SBUS_API void sbus_conn_options_init(sbus_conn_options_t *o);

/* A parsed connection string. Strings owned by the struct; release with
 * sbus_connstr_clear(). */
typedef struct sbus_connstr {
    char *endpoint;     /* "sb://host[:port]/" as given (trailing / kept) */
    char *host;         /* host without port */
    int port;           /* port from the endpoint, 0 if none */
    char *key_name;     /* SharedAccessKeyName or NULL */
    char *key;          /* SharedAccessKey or NULL */
    char *sas;          /* SharedAccessSignature or NULL */
    char *entity_path;  /* EntityPath or NULL */
    int use_emulator;   /* UseDevelopmentEmulator=true */
} sbus_connstr_t;

/* Parses s into out. On failure returns SBUS_ECONNSTR and writes a
 * sentence saying what is wrong (never the key) into msg[msglen]. */
SBUS_API int sbus_connstr_parse(const char *s, sbus_connstr_t *out, char *msg,
                                size_t msglen);
/* Frees the strings of c and zeroes it. */
SBUS_API void sbus_connstr_clear(sbus_connstr_t *c);

/* Builds a SAS token "SharedAccessSignature sr=..&sig=..&se=..&skn=.." for
 * `resource` (the URI as it should be signed, not yet URL-encoded) expiring
 * at `expiry` (Unix seconds). Writes into out[outlen]; returns its length or
 * SBUS_ETOOBIG / SBUS_EINVAL. */
SBUS_API int sbus_sas_token(const char *resource, const char *key_name,
                            const char *key, int64_t expiry, char *out,
                            size_t outlen);

/* Creates a connection (no I/O yet). On failure returns a negative code and
 * writes why into err[errlen] (may be NULL). *out transfers. */
SBUS_API int sbus_conn_new(sbus_conn_t **out, const sbus_conn_options_t *o,
                           char *err, size_t errlen);
/* Frees c: as sbus_conn_abort(), then discards the events not yet pulled
 * (and any messages they carry). Senders and receivers made from c must be
 * freed first or are freed here; received messages stay valid. */
SBUS_API void sbus_conn_free(sbus_conn_t *c);

/* Starts connecting: SBUS_EV_CONNECT follows; the open completes (token)
 * once the AMQP connection is open. Operations may be started before it
 * completes; they wait. */
SBUS_API int sbus_conn_open(sbus_conn_t *c, void *token);
/* Closes gracefully: every pending operation completes with SBUS_ECLOSED,
 * links detach, the AMQP close is sent; completes (token) when the peer
 * answered or the transport went down; SBUS_EV_DISCONNECT follows. */
SBUS_API int sbus_conn_close(sbus_conn_t *c, void *token);
/* Fails every pending operation with SBUS_ECLOSED and forgets the transport
 * at once, without I/O (for destructors). Events stay pullable. */
SBUS_API void sbus_conn_abort(sbus_conn_t *c, const char *reason);
/* Cancels the pending operation with this token: it completes with
 * SBUS_ECANCELLED and leaves nothing behind (credit withdrawn, locks
 * released). SBUS_ENOENT if no such operation is pending. */
SBUS_API int sbus_conn_cancel(sbus_conn_t *c, void *token);

/* Gives the pending operation with this token its own deadline: it
 * completes with SBUS_ETIMEOUT if not done within timeout_ms from now
 * (instead of opts.operation_timeout_ms per attempt), retries and backoffs
 * included. For the per-call `timeout=` of the SDKs; call it right after
 * starting the operation.
 * Receives (sbus_receiver_receive) are different, because waiting is their
 * job: their max_wait_ms still decides when a receive whose link works
 * returns (empty or not). timeout_ms bounds only the time a receive spends
 * unable to run: while its link is not attached (connection down or
 * reconnecting, the attach refused or backing off), at most timeout_ms in
 * a row; the clock starts now if the link is not attached, stops when it
 * attaches, and starts again from zero each time it is lost while the
 * receive waits. Past it the receive completes with SBUS_ETIMEOUT (or with
 * the messages it already holds, if any).
 * SBUS_ENOENT if no such operation is pending, SBUS_EINVAL for
 * timeout_ms <= 0. */
SBUS_API int sbus_conn_set_op_timeout(sbus_conn_t *c, void *token,
                                      int64_t timeout_ms);

/* The host connected the socket asked for by SBUS_EV_CONNECT. */
SBUS_API void sbus_conn_transport_up(sbus_conn_t *c);
/* The socket failed to connect, hit EOF or an error. `why` borrowed.
 * The engine decides whether and when to reconnect (SBUS_EV_CONNECT). */
SBUS_API void sbus_conn_transport_down(sbus_conn_t *c, const char *why);
/* Where to write received bytes: *cap bytes at most. Borrowed until the
 * next call on c. */
SBUS_API uint8_t *sbus_conn_read_buffer(sbus_conn_t *c, size_t *cap);
/* n bytes were written into the read buffer. */
SBUS_API void sbus_conn_read_done(sbus_conn_t *c, size_t n);
/* Bytes waiting to be sent (*len may be 0). Borrowed until the next call
 * on c. */
SBUS_API const uint8_t *sbus_conn_write_buffer(sbus_conn_t *c, size_t *len);
/* n bytes of the write buffer were sent. */
SBUS_API void sbus_conn_write_done(sbus_conn_t *c, size_t n);
/* Moves time on: mono_ms from a monotonic clock, unix_ms from the wall
 * clock (for token expiry). Returns the next monotonic deadline, or -1.
 * Deadlines of operations started before the first tick count from that
 * tick. Cheap (constant time until something is due): calling it after
 * every drain is fine, and catches deadlines new operations brought
 * forward. */
SBUS_API int64_t sbus_conn_tick(sbus_conn_t *c, int64_t mono_ms,
                                int64_t unix_ms);
/* Hands over a token asked for by SBUS_EV_TOKEN (host_tokens mode). token
 * copied; expires_unix_s = its expiry. A NULL token reports that getting it
 * failed (`token` then = NULL, pass the reason in `err_text`). */
SBUS_API int sbus_conn_set_token(sbus_conn_t *c, const char *audience,
                                 const char *token, int64_t expires_unix_s,
                                 const char *err_text);
/* 1 if the connection is open on the wire now. */
SBUS_API int sbus_conn_is_open(const sbus_conn_t *c);
/* The fully qualified namespace host. Borrowed, lives as long as c. */
SBUS_API const char *sbus_conn_host(const sbus_conn_t *c);

/* ------------------------------------------------------------------ */
/* Events                                                              */
/* ------------------------------------------------------------------ */

typedef enum sbus_event_type {
    SBUS_EV_NONE = 0,
    SBUS_EV_CONNECT,    /* open a stream to host:port (see contract) */
    SBUS_EV_DISCONNECT, /* close the stream */
    SBUS_EV_DONE,       /* an operation completed */
    SBUS_EV_TOKEN,      /* the host must supply a token for audience */
    SBUS_EV_LOG,        /* a trace line */
    SBUS_EV_RENEW_FAILED, /* an automatic lock renewal stopped with error */
} sbus_event_type_t;

/* Which operation an SBUS_EV_DONE completes. */
typedef enum sbus_op {
    SBUS_OP_NONE = 0,
    SBUS_OP_CONN_OPEN,
    SBUS_OP_CONN_CLOSE,
    SBUS_OP_SENDER_OPEN,
    SBUS_OP_SENDER_CLOSE,
    SBUS_OP_SEND,
    SBUS_OP_SCHEDULE,
    SBUS_OP_CANCEL_SCHEDULED,
    SBUS_OP_RECEIVER_OPEN,
    SBUS_OP_RECEIVER_CLOSE,
    SBUS_OP_RECEIVE,
    SBUS_OP_SETTLE,
    SBUS_OP_RENEW_LOCK,
    SBUS_OP_PEEK,
    SBUS_OP_RECEIVE_DEFERRED,
    SBUS_OP_SESSION_GET_STATE,
    SBUS_OP_SESSION_SET_STATE,
    SBUS_OP_SESSION_RENEW_LOCK,
} sbus_op_t;

/*
 * One event. Everything in it is borrowed until the next
 * sbus_conn_next_event() on the same connection, except the messages of
 * `messages`, which transfer to the host (free each one; the array itself
 * is borrowed).
 */
typedef struct sbus_event {
    sbus_event_type_t type;
    sbus_op_t op;               /* DONE: which operation */
    void *token;                /* DONE: the operation's token */
    const sbus_error_t *error;  /* DONE/RENEW_FAILED: NULL on success */
    void *object;               /* the sbus_sender_t/sbus_receiver_t it
                                   concerns, or NULL (also NULL once that
                                   object was freed) */
    /* results of DONE, by op */
    sbus_message_t **messages;  /* RECEIVE, PEEK, RECEIVE_DEFERRED */
    size_t count;               /* number of messages / sequence numbers */
    const int64_t *seqs;        /* SCHEDULE: sequence numbers */
    int64_t time_ms;            /* RENEW_LOCK, SESSION_RENEW_LOCK,
                                   RECEIVER_OPEN (session): locked until */
    const void *data;           /* SESSION_GET_STATE: state bytes, NULL if
                                   none; RECEIVER_OPEN: session id */
    size_t len;                 /* length of data */
    /* CONNECT */
    const char *host;           /* where to connect */
    int port;
    /* TOKEN */
    const char *audience;       /* the audience a token is needed for */
    /* LOG */
    const char *text;           /* one trace line, no newline */
    /* RENEW_FAILED: the message (borrowed; the host's own pointer) or NULL
       for a session */
    const sbus_message_t *message;
    /* LOG: 0 = a trace line (only with opts.trace), 1 = a warning the host
       should always show (e.g. TLS verification switched off) */
    int level;
} sbus_event_t;

/* Pulls the next event into *ev: 1 if there was one, 0 if none. */
SBUS_API int sbus_conn_next_event(sbus_conn_t *c, sbus_event_t *ev);
/* The type of the event sbus_conn_next_event() would return now, without
 * pulling it (SBUS_EV_NONE if none). Lets a driver handle CONNECT and
 * DISCONNECT itself and leave the rest to its caller. */
SBUS_API sbus_event_type_t sbus_conn_peek_event(const sbus_conn_t *c);

/* ------------------------------------------------------------------ */
/* Senders                                                             */
/* ------------------------------------------------------------------ */

typedef struct sbus_sender_options {
    const char *entity;   /* queue or topic name (borrowed; copied) */
} sbus_sender_options_t;

/* Fills o with the defaults. */
SBUS_API void sbus_sender_options_init(sbus_sender_options_t *o);
/* Creates a sender on c (no I/O). *out transfers (free with
 * sbus_sender_free before c). */
SBUS_API int sbus_sender_new(sbus_conn_t *c, const sbus_sender_options_t *o,
                             sbus_sender_t **out);
/* Attaches the link (token put first). Sends open it implicitly too. */
SBUS_API int sbus_sender_open(sbus_sender_t *s, void *token);
/* Detaches; pending sends complete first or with SBUS_ECLOSED. */
SBUS_API int sbus_sender_close(sbus_sender_t *s, void *token);
/* Frees s; its pending operations complete with SBUS_ECLOSED (events on the
 * connection). No I/O beyond a queued detach. */
SBUS_API void sbus_sender_free(sbus_sender_t *s);
/* Sends n messages (copied now): one as a plain transfer, several as one
 * batch transfer. SBUS_ETOOBIG if they cannot fit one transfer of the
 * link's max-message-size (then nothing is sent). Completes when the
 * service accepted (or refused) the delivery; retried under the policy. */
SBUS_API int sbus_sender_send(sbus_sender_t *s, sbus_message_t *const *msgs,
                              size_t n, void *token);
/* Sends batch b (copied now; b stays the caller's). */
SBUS_API int sbus_sender_send_batch(sbus_sender_t *s, const sbus_batch_t *b,
                                    void *token);
/* The link's max-message-size once attached (0 before). */
SBUS_API uint64_t sbus_sender_max_message_size(const sbus_sender_t *s);
/* Schedules n messages for enqueue at unix_ms (copied); the event carries
 * the sequence numbers (seqs, count). */
SBUS_API int sbus_sender_schedule(sbus_sender_t *s,
                                  sbus_message_t *const *msgs, size_t n,
                                  int64_t unix_ms, void *token);
/* Cancels scheduled messages by sequence number (copied). */
SBUS_API int sbus_sender_cancel_scheduled(sbus_sender_t *s,
                                          const int64_t *seqs, size_t n,
                                          void *token);

/* ------------------------------------------------------------------ */
/* Receivers (plain and session)                                       */
/* ------------------------------------------------------------------ */

typedef enum sbus_receive_mode {
    SBUS_PEEK_LOCK = 0,
    SBUS_RECEIVE_AND_DELETE,
} sbus_receive_mode_t;

typedef enum sbus_sub_queue {
    SBUS_SUBQ_NONE = 0,
    SBUS_SUBQ_DEAD_LETTER,          /* <entity>/$DeadLetterQueue */
    SBUS_SUBQ_TRANSFER_DEAD_LETTER, /* <entity>/$Transfer/$DeadLetterQueue */
} sbus_sub_queue_t;

typedef struct sbus_receiver_options {
    const char *entity;       /* queue, or topic name with subscription */
    const char *subscription; /* subscription name, or NULL for a queue */
    sbus_sub_queue_t sub_queue;
    sbus_receive_mode_t mode;
    uint32_t prefetch;        /* messages kept ahead (0: per receive) */
    int session;              /* 1: a session receiver */
    const char *session_id;   /* with session: this one; NULL: next
                                 available */
    int64_t session_wait_ms;  /* next available: how long the service may
                                 wait (0: its default) */
} sbus_receiver_options_t;

/* Fills o with the defaults (peek-lock, no prefetch, no session). */
SBUS_API void sbus_receiver_options_init(sbus_receiver_options_t *o);
/* Creates a receiver on c (no I/O). *out transfers. */
SBUS_API int sbus_receiver_new(sbus_conn_t *c,
                               const sbus_receiver_options_t *o,
                               sbus_receiver_t **out);
/* Attaches the link (for sessions: locks a session; the event carries the
 * session id in data/len and locked-until in time_ms). A link the service
 * detaches with a retriable condition (e.g. amqp:link:detach-forced for an
 * idle link) or lost with the connection is attached again on next use;
 * a session receiver then asks for the same session id (the one it got,
 * for next-available), and if the service refuses (the session is locked
 * by someone else now, or its lock expired) the pending or next operation
 * completes with SBUS_ESESSIONLOCKLOST, as every later one does. Messages
 * received on a lost link settle with SBUS_ELOCKLOST. */
SBUS_API int sbus_receiver_open(sbus_receiver_t *r, void *token);
/* Detaches; unsettled prefetched messages are released. */
SBUS_API int sbus_receiver_close(sbus_receiver_t *r, void *token);
/* Frees r; pending operations complete with SBUS_ECLOSED. */
SBUS_API void sbus_receiver_free(sbus_receiver_t *r);

/* Receives up to max_count messages: completes as soon as at least one has
 * arrived and no more arrive at once (at the end of the input batch that
 * brought them), or with none after max_wait_ms (-1: wait forever; 0:
 * what is buffered or arrives at once). Unused credit is withdrawn (drain)
 * on completion so that no message is locked for nobody (unless prefetch
 * keeps them); peek-lock messages that still arrive for nobody are
 * released (no delivery-count increment), receive-and-delete ones are kept
 * for the next call. The messages in the event transfer to the caller.
 * While the connection is down the receive waits for it (max_wait_ms
 * still runs); sbus_conn_set_op_timeout() bounds that wait. */
SBUS_API int sbus_receiver_receive(sbus_receiver_t *r, uint32_t max_count,
                                   int64_t max_wait_ms, void *token);

typedef enum sbus_outcome {
    SBUS_COMPLETE = 0,
    SBUS_ABANDON,
    SBUS_DEFER,
    SBUS_DEAD_LETTER,
} sbus_outcome_t;

/* Settles m (received on r) with an outcome; reason/description only for
 * SBUS_DEAD_LETTER (may be NULL; copied; <= 4096 bytes). m borrowed.
 * Synchronous errors: SBUS_ESETTLED (settled already), SBUS_ESTATE (peeked
 * or receive-and-delete message), SBUS_EINVAL (m not from r). Async:
 * SBUS_ELOCKLOST (lock expired, or the link it came from was lost),
 * SBUS_ESESSIONLOCKLOST; after those m stays unsettled and settling or
 * renewing it again reports the same. Completes when the service confirmed
 * (rcv-settle-mode second). Messages received by sequence number settle
 * over $management (update-disposition). */
SBUS_API int sbus_receiver_settle(sbus_receiver_t *r, sbus_message_t *m,
                                  sbus_outcome_t outcome, const char *reason,
                                  const char *description, void *token);
/* Renews m's lock; the event carries the new locked-until (time_ms), also
 * stored in m. */
SBUS_API int sbus_receiver_renew_lock(sbus_receiver_t *r, sbus_message_t *m,
                                      void *token);
/* Peeks up to max_count messages from sequence number from_seq (0: after
 * the last peeked/received). */
SBUS_API int sbus_receiver_peek(sbus_receiver_t *r, uint32_t max_count,
                                int64_t from_seq, void *token);
/* Receives deferred messages by sequence number (copied). */
SBUS_API int sbus_receiver_receive_deferred(sbus_receiver_t *r,
                                            const int64_t *seqs, size_t n,
                                            void *token);

/* Session receivers only. */
/* The session id once open (borrowed, lives with r), or NULL. */
SBUS_API const char *sbus_receiver_session_id(const sbus_receiver_t *r);
/* The session lock's expiry (Unix ms), 0 before open. */
SBUS_API int64_t sbus_receiver_session_locked_until(const sbus_receiver_t *r);
/* Gets the session state; the event carries it in data/len (NULL: none). */
SBUS_API int sbus_receiver_session_get_state(sbus_receiver_t *r,
                                             void *token);
/* Sets the session state (copied; NULL clears it). */
SBUS_API int sbus_receiver_session_set_state(sbus_receiver_t *r,
                                             const void *p, size_t n,
                                             void *token);
/* Renews the session lock; the event carries locked-until in time_ms. */
SBUS_API int sbus_receiver_session_renew_lock(sbus_receiver_t *r,
                                              void *token);

/* ------------------------------------------------------------------ */
/* Automatic lock renewal (engine timers, driven by sbus_conn_tick)    */
/* ------------------------------------------------------------------ */

/* Keeps m's lock (m received on r) renewed until max_ms from now, m is
 * settled, or r closes. A failure is reported once as SBUS_EV_RENEW_FAILED
 * with ev.message = m. m must stay alive while registered. */
SBUS_API int sbus_receiver_auto_renew(sbus_receiver_t *r, sbus_message_t *m,
                                      int64_t max_ms);
/* Keeps r's session lock renewed until max_ms from now or r closes. */
SBUS_API int sbus_receiver_auto_renew_session(sbus_receiver_t *r,
                                              int64_t max_ms);
/* Stops automatic renewal of m (SBUS_ENOENT if not registered). */
SBUS_API int sbus_receiver_auto_renew_stop(sbus_receiver_t *r,
                                           sbus_message_t *m);

/* ------------------------------------------------------------------ */
/* Allocator (added after the first contract; see CHANGES-FOR-BINDINGS) */
/* ------------------------------------------------------------------ */

/* Installs the functions every engine allocation goes through (Proton's
 * own excepted); NULL restores the C library's. Call it before creating
 * anything, or between objects: a block must be freed by the allocator
 * that made it. Process-wide, not thread-safe. Tests use it to fail the
 * Nth allocation. */
SBUS_API void sbus_set_allocator(void *(*malloc_fn)(size_t),
                                 void *(*realloc_fn)(void *, size_t),
                                 void (*free_fn)(void *));

#ifdef __cplusplus
}
#endif
#endif /* SBUS_SBUS_H */
