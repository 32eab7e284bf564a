/*
 * internal.h - what the engine's files share and nobody else sees.
 *
 * Divided as the engine is: the allocator and growable byte buffers
 * (alloc.c); the AMQP value codec (codec.c); messages (message.c); the error
 * helpers (error.c); connection strings and SAS (connstr.c); and the
 * connection core (conn.c) with its parts: CBS (cbs.c), $management
 * (mgmt.c), senders (sender.c) and receivers (receiver.c).
 *
 * Object model. A connection owns one Proton connection driver per transport
 * attempt. Senders, receivers, the CBS pair and $management pairs are
 * "link owners": each remembers its current pn_link_t (NULL when detached)
 * and a generation number bumped whenever that link goes away, so anything
 * that outlives a link (a received message, an in-flight settlement) can
 * tell that its link is gone without holding a dangling pointer.
 *
 * Every accepted operation is an sbusi_op_t. It lives on the connection's
 * pending list until it completes; completing moves its embedded event
 * record to the event queue (no allocation at completion time, so "exactly
 * one completion" holds even when memory runs out).
 */
#ifndef SBUS_INTERNAL_H
#define SBUS_INTERNAL_H

#include <sbus/sbus.h>

#include <proton/connection.h>
#include <proton/connection_driver.h>
#include <proton/event.h>
#include <proton/delivery.h>
#include <proton/disposition.h>
#include <proton/link.h>
#include <proton/session.h>
#include <proton/terminus.h>
#include <proton/transport.h>
#include <stdarg.h>
#include <stdbool.h>

/* ------------------------------------------------------------------ */
/* Allocation and buffers (alloc.c)                                    */
/* ------------------------------------------------------------------ */

void *sbusi_malloc(size_t n);
void *sbusi_calloc(size_t n, size_t size);
void *sbusi_realloc(void *p, size_t n);
void sbusi_free(void *p);
char *sbusi_strdup(const char *s);
char *sbusi_strndup(const char *s, size_t n);
void *sbusi_memdup(const void *p, size_t n);

/* A growable byte buffer. Once an allocation fails, `oom` sticks and every
 * later append is a no-op, so encoders check once at the end. */
typedef struct sbusi_buf {
    uint8_t *p;  /* bytes (owned) */
    size_t len;  /* bytes used */
    size_t cap;  /* bytes allocated */
    int oom;     /* 1 after an allocation failed */
} sbusi_buf_t;

int sbusi_buf_reserve(sbusi_buf_t *b, size_t more);
void sbusi_buf_put(sbusi_buf_t *b, const void *p, size_t n);
void sbusi_buf_free(sbusi_buf_t *b);

/* ------------------------------------------------------------------ */
/* AMQP codec (codec.c)                                                */
/* ------------------------------------------------------------------ */

/* Encoding: all append to a buffer. Compound values are written with a
 * 4-byte size and count, patched by sbusi_enc_end(). */
void sbusi_enc_null(sbusi_buf_t *b);
void sbusi_enc_bool(sbusi_buf_t *b, int v);
void sbusi_enc_uint(sbusi_buf_t *b, uint32_t v);
void sbusi_enc_ulong(sbusi_buf_t *b, uint64_t v);
void sbusi_enc_int(sbusi_buf_t *b, int32_t v);
void sbusi_enc_long(sbusi_buf_t *b, int64_t v);
void sbusi_enc_double(sbusi_buf_t *b, double v);
void sbusi_enc_timestamp(sbusi_buf_t *b, int64_t ms);
void sbusi_enc_uuid(sbusi_buf_t *b, const uint8_t u[16]);
void sbusi_enc_str(sbusi_buf_t *b, const char *s, size_t n);
void sbusi_enc_cstr(sbusi_buf_t *b, const char *s); /* NULL -> null */
void sbusi_enc_sym(sbusi_buf_t *b, const char *s, size_t n);
void sbusi_enc_bin(sbusi_buf_t *b, const void *p, size_t n);
void sbusi_enc_descriptor(sbusi_buf_t *b, uint64_t code);
void sbusi_enc_value(sbusi_buf_t *b, const sbus_value_t *v);
/* Opens a list (0xd0) / map (0xd1) / array (0xf0 with element
 * constructor `elem`); returns the offset to pass to sbusi_enc_end(). */
size_t sbusi_enc_list(sbusi_buf_t *b);
size_t sbusi_enc_map(sbusi_buf_t *b);
size_t sbusi_enc_array(sbusi_buf_t *b, uint8_t elem);
/* Closes a compound opened at `at` holding `count` items (map: 2 per
 * pair). */
void sbusi_enc_end(sbusi_buf_t *b, size_t at, uint32_t count);
/* Array elements (no constructor). */
void sbusi_enc_array_long(sbusi_buf_t *b, int64_t v);
void sbusi_enc_array_uuid(sbusi_buf_t *b, const uint8_t u[16]);

/* Decoding: a cursor over bytes. Errors set `bad` and make every later
 * read fail, so callers check once. */
typedef struct sbusi_dec {
    const uint8_t *p;   /* next byte */
    const uint8_t *end; /* one past the last byte */
    int bad;            /* 1 after malformed input */
} sbusi_dec_t;

/* One decoded item: its constructor and, for simple types, its value. */
typedef struct sbusi_item {
    uint8_t code;          /* the format code (after a descriptor) */
    int described;         /* 1 if it was a described value */
    uint64_t descriptor;   /* the ulong descriptor when described */
    sbus_value_t v;        /* simple types; strings point into input */
    int is_symbol;         /* string came from a symbol */
    const uint8_t *body;   /* compound: first byte after size/count */
    size_t size;           /* compound: bytes after the count */
    uint32_t count;        /* compound: number of items */
    uint8_t elem;          /* array: element constructor */
    const uint8_t *start;  /* the first byte of the whole encoding */
    const uint8_t *stop;   /* one past its last byte */
} sbusi_item_t;

/* 0 if p[n] is exactly one well-formed AMQP value (children checked, at
 * most 32 levels deep; the elements of an array of described values are
 * only bounded), else SBUS_EINVAL. */
int sbusi_amqp_check(const void *p, size_t n);

/* Reads one value (any type) and moves past it. Returns 0 or -1. */
int sbusi_dec_item(sbusi_dec_t *d, sbusi_item_t *it);
/* Reads one value as sbusi_dec_item() would and keeps only its `v` (same
 * result, same checks): primitive items take a fast path without filling
 * an item. Returns 0 or -1. */
int sbusi_dec_value(sbusi_dec_t *d, sbus_value_t *v);
/* A cursor over the items of a list/map item. */
void sbusi_dec_enter(const sbusi_item_t *it, sbusi_dec_t *inner);
/* Reads array element i-th in sequence from an array cursor. */
int sbusi_dec_array_elem(sbusi_dec_t *d, uint8_t elem, sbusi_item_t *it);
/* Finds string key `key` in a map item; fills *val. 0 found, -1 not. */
int sbusi_map_find(const sbusi_item_t *map, const char *key,
                   sbusi_item_t *val);
/* Integer value of an item of any integer/timestamp type. */
int sbusi_item_int(const sbusi_item_t *it, int64_t *out);
/* Copies a string item into a NUL-terminated buffer (truncating). */
void sbusi_item_cstr(const sbusi_item_t *it, char *out, size_t cap);

/* ------------------------------------------------------------------ */
/* Messages (message.c)                                                */
/* ------------------------------------------------------------------ */

/* One owned string property. */
typedef struct sbusi_str {
    char *p;     /* bytes, NUL-terminated (owned), NULL when unset */
    size_t n;    /* length without the NUL */
} sbusi_str_t;

/* One application property. */
typedef struct sbusi_prop {
    sbusi_str_t key;  /* property name */
    sbus_value_t v;   /* value; strings/binaries owned (u.s.ptr) */
} sbusi_prop_t;

/* One data section, or the raw bytes of a non-data body section. */
typedef struct sbusi_section {
    uint8_t *p;  /* bytes (owned) */
    size_t n;    /* length */
} sbusi_section_t;

struct sbusi_op;

struct sbus_message {
    /* What sbus_message_free() reads comes first, in one cache line: a
     * received message is usually freed long after it was decoded, when
     * it has left the cache, and every further line it touches costs a
     * miss. */
    struct sbusi_renew *renew;           /* auto-renew registration */
    struct sbusi_op *ops;                /* ops that refer to this message
                                            (chain via op->msg_next) */
    sbusi_section_t *sections;           /* data sections, or for VALUE
                                            and SEQUENCE one raw encoded
                                            section body each (owned;
                                            &section0 while there is at
                                            most one) */
    size_t nsections;                    /* used entries of sections */
    sbusi_prop_t *aprops;                /* application properties */
    size_t naprops;                      /* used entries */
    struct sbusi_msgpool *pool;          /* received: the connection's
                                            pool the block returns to, or
                                            NULL */
    void *blk;                           /* received: the payload and
                                            decoded strings, in the
                                            message's own allocation
                                            (sections and props point into
                                            it); NULL for messages built by
                                            the host */
    uint32_t props_heap;                 /* bit i: props[i].p has an
                                            allocation of its own */
    sbus_body_kind_t body_kind;          /* how the body is carried */
    sbusi_section_t section0;            /* storage of the first section */
    size_t capsections;                  /* allocated entries */
    size_t blk_cap;                      /* bytes of blk */
    size_t blk_used;                     /* bytes of blk taken */
    size_t capaprops;                    /* allocated entries */
    sbusi_str_t props[SBUS_PROP__COUNT]; /* string properties */
    int64_t fields[SBUS_FIELD__COUNT];   /* integer fields */
    uint32_t fields_set;                 /* bit i: fields[i] is set */
    /* received-message identity (weak: ids, never pointers we own) */
    sbus_settle_state_t state;           /* settlement state */
    int has_lock;                        /* lock_token is valid */
    uint8_t lock_token[16];              /* RFC 4122 order */
    uint64_t rcv_uid;                    /* receiver it came from, 0 none */
    uint32_t link_gen;                   /* that receiver's link generation */
    pn_delivery_t *dlv;                  /* its delivery; only touched
                                            after rcv_uid/link_gen match */
    int via_mgmt;                        /* received by sequence number:
                                            settle over $management */
    sbus_message_t *qnext;               /* receiver prefetch queue link */
    const void *body_ref;                /* a section the host lent
                                            (sbus_message_set_body_ref):
                                            never freed here */
};

/* Encodes m as a complete AMQP message. */
int sbusi_message_encode(const sbus_message_t *m, sbusi_buf_t *out);
/* Decodes a complete AMQP message from p[n]. *out transfers. */
int sbusi_message_decode(const uint8_t *p, size_t n, sbus_message_t **out);
/* A received message in one allocation: returns an empty message with
 * room for an n-byte payload, which the caller writes to *payload and then
 * decodes in place with sbusi_message_decode_payload() (the body is not
 * copied again). NULL when out of memory. With poolp (a connection's
 * pool, created on first use) the block comes from the pool when one fits
 * and returns to it when the message is freed while the connection
 * exists. */
typedef struct sbusi_msgpool sbusi_msgpool_t;
sbus_message_t *sbusi_message_alloc_payload(sbusi_msgpool_t **poolp,
                                            size_t n, uint8_t **payload);
/* The connection is going: frees the pool's blocks; the pool itself goes
 * with the last message that came from it. */
void sbusi_msgpool_close(sbusi_msgpool_t *pool);
/* Decodes the first n bytes written to the payload of m (n at most the
 * size given to sbusi_message_alloc_payload()). On failure m is freed. */
int sbusi_message_decode_payload(sbus_message_t *m, size_t n);
/* Checks the client-side rules (identifier lengths, key conflicts). */
int sbusi_message_validate(const sbus_message_t *m);
/* Forgets an op that referred to m (op completed). */
void sbusi_message_unref_op(sbus_message_t *m, struct sbusi_op *op);

/* Encodes msgs as one transfer payload: format 0 for one, batch format
 * for several. */
#define SBUSI_BATCH_FORMAT 0x80013700u
int sbusi_encode_payload(sbus_message_t *const *msgs, size_t n,
                         sbusi_buf_t *out, uint32_t *format);

/* Batch internals for sender.c. */
const uint8_t *sbusi_batch_bytes(const sbus_batch_t *b, size_t *len);

/* ------------------------------------------------------------------ */
/* Errors (error.c)                                                    */
/* ------------------------------------------------------------------ */

/* Fills e from an AMQP condition (name may be NULL = local error `code`). */
void sbusi_error_set(sbus_error_t *e, char *cond_buf, size_t cond_cap,
                     char *desc_buf, size_t desc_cap, int code,
                     const char *condition, const char *description);
/* The condition name a management/CBS status code stands for when no
 * errorCondition came with it. */
const char *sbusi_status_condition(int status);

/* ------------------------------------------------------------------ */
/* SAS and URL helpers (connstr.c)                                     */
/* ------------------------------------------------------------------ */

/* URL-encodes s (quote_plus style, uppercase hex) into out[cap]; returns
 * the length or -1 if it does not fit. */
int sbusi_url_encode(const char *s, char *out, size_t cap);
/* Expiry (se=) of a SharedAccessSignature, 0 if none. */
int64_t sbusi_sas_expiry(const char *sas);

/* ------------------------------------------------------------------ */
/* Events and operations (conn.c)                                      */
/* ------------------------------------------------------------------ */

#define SBUSI_COND_MAX 96
#define SBUSI_DESC_MAX 320

/* An event record waiting in the queue. Embedded in whatever produced it. */
typedef struct sbusi_ev {
    struct sbusi_ev *next;      /* queue link */
    sbus_event_t e;             /* the public view */
    sbus_error_t err;           /* e.error points here when failed */
    char cond[SBUSI_COND_MAX];  /* err.condition storage */
    char desc[SBUSI_DESC_MAX];  /* err.description storage (cond..desc
                                   are not cleared when an op is reused:
                                   keep them together, before `queued`) */
    int queued;                 /* 1 while in the queue */
    void (*release)(struct sbusi_ev *ev); /* after the host pulled it */
    void *owner;                /* what release frees */
} sbusi_ev_t;

/* Link owner kinds: what a pn_link_t context points at. */
enum sbusi_owner_kind {
    SBUSI_OWN_SENDER = 1,
    SBUSI_OWN_RECEIVER,
    SBUSI_OWN_CBS,
    SBUSI_OWN_MGMT,
};

/* Attach state of a link owner. */
enum sbusi_link_state {
    SBUSI_L_IDLE = 0,   /* not attached, nobody asked */
    SBUSI_L_WANT,       /* wanted: waiting for the wire / a token */
    SBUSI_L_ATTACHING,  /* attach sent */
    SBUSI_L_ATTACHED,   /* both ends attached */
    SBUSI_L_BACKOFF,    /* failed retriably; retry at retry_at */
    SBUSI_L_FAILED,     /* failed; next use tries again */
    SBUSI_L_CLOSING,    /* detach sent on close */
    SBUSI_L_CLOSED,     /* closed by the user */
};

/* What every link owner starts with. */
typedef struct sbusi_owner {
    int kind;              /* enum sbusi_owner_kind */
    pn_link_t *link;       /* current link, NULL when none */
    uint32_t gen;          /* bumped whenever link goes away */
    int state;             /* enum sbusi_link_state */
    int attempts;          /* failed attach attempts in a row */
    int64_t retry_at;      /* BACKOFF: when to try again (mono ms) */
    struct sbusi_audience *aud; /* token audience this link needs */
    sbusi_ev_t last_err;   /* last attach failure (err/cond/desc used) */
    int has_err;           /* last_err holds a failure */
} sbusi_owner_t;

/* Per-operation stage. */
enum sbusi_stage {
    SBUSI_S_QUEUED = 0,  /* waiting for its link/pair */
    SBUSI_S_INFLIGHT,    /* transfer or request on the wire */
    SBUSI_S_BACKOFF,     /* waiting to retry */
};

typedef struct sbusi_op {
    struct sbusi_op *next, *prev;  /* conn->ops (pending) list */
    sbusi_ev_t ev;                 /* its completion event */
    struct sbus_conn *conn;        /* owning connection */
    sbus_op_t kind;                /* which operation */
    void *token;                   /* the host's token */
    sbus_sender_t *snd;            /* sender it runs on, or NULL */
    sbus_receiver_t *rcv;          /* receiver it runs on, or NULL */
    int stage;                     /* enum sbusi_stage */
    int64_t deadline;              /* mono ms when it times out, -1 none */
    int64_t user_timeout;          /* RECEIVE: sbus_conn_set_op_timeout()
                                      ms, 0 none: bounds each stretch the
                                      receive waits without its link */
    int64_t user_deadline;         /* sbus_conn_set_op_timeout(), 0 none:
                                      bounds every attempt and backoff */
    int64_t retry_at;              /* BACKOFF: mono ms of next attempt */
    int attempts;                  /* attempts failed so far */
    sbusi_buf_t payload;           /* SEND: transfer bytes; mgmt ops:
                                      the request's application-properties
                                      and body (kept for retries) */
    uint32_t format;               /* SEND: message-format */
    pn_delivery_t *dlv;            /* SEND/SETTLE: delivery in flight */
    uint32_t dlv_gen;              /* link generation dlv belongs to */
    uint64_t req_id;               /* mgmt: message-id in flight, 0 none */
    struct sbusi_mgmt *mgmt;       /* mgmt: the link pair used */
    /* RECEIVE */
    uint32_t max_count;            /* messages wanted */
    sbus_message_t **msgs;         /* collected (array owned) */
    size_t nmsgs;                  /* collected so far */
    int64_t *seqs;                 /* SCHEDULE result / inputs (owned) */
    size_t nseqs;                  /* entries in seqs */
    /* SETTLE, RENEW_LOCK */
    sbus_message_t *msg;           /* weak: NULLed if the host frees it */
    struct sbusi_op *msg_next;     /* chain of ops on the same message */
    int outcome;                   /* SETTLE: sbus_outcome_t */
    uint8_t lock[16];              /* lock token for mgmt ops */
    struct sbusi_renew **renews;   /* auto-renew registrations this op
                                      renews (owned array; slots NULLed
                                      when a registration ends first) */
    size_t nrenews;                /* entries in renews */
    void (*on_done)(struct sbusi_op *op); /* internal ops: called instead
                                      of queueing an event; frees op */
    struct sbusi_op *qnext, *qprev; /* SEND: sender's queue of ops not yet
                                      on the wire */
    int queued;                    /* SEND: 1 while in that queue */
} sbusi_op_t;

/* A token audience on this connection ("sb://host/entity"). */
typedef struct sbusi_audience {
    struct sbusi_audience *next; /* conn->auds */
    char *name;                  /* the audience (owned) */
    int state;                   /* 0 none, 1 waiting for host token,
                                    2 put-token in flight, 3 valid,
                                    4 failed */
    uint64_t req_id;             /* put-token message-id in flight */
    int64_t expires_unix_s;      /* token expiry */
    int64_t refresh_mono;        /* when to refresh (-1 never) */
    int64_t sent_mono;           /* when the put-token was sent */
    char *host_token;            /* host-supplied token, waiting (owned) */
    int64_t host_expiry;         /* its expiry */
    sbusi_ev_t tok_ev;           /* SBUS_EV_TOKEN record */
    sbusi_ev_t fail;             /* failure (err/cond/desc) when state 4 */
} sbusi_audience_t;

/* The CBS link pair. */
typedef struct sbusi_cbs {
    sbusi_owner_t snd;  /* sender to $cbs */
    sbusi_owner_t rcv;  /* receiver from $cbs */
} sbusi_cbs_t;

/* A $management link pair for one entity. */
typedef struct sbusi_mgmt {
    struct sbusi_mgmt *next; /* conn->mgmts */
    char *entity;            /* entity path (owned) */
    char *reply_to;          /* receiver target = reply-to (owned) */
    sbusi_owner_t snd;       /* sender to <entity>/$management */
    sbusi_owner_t rcv;       /* receiver from it */
} sbusi_mgmt_t;

/* An automatic lock renewal registration. */
typedef struct sbusi_renew {
    struct sbusi_renew *next; /* receiver's list */
    sbus_receiver_t *rcv;     /* the receiver */
    sbus_message_t *msg;      /* the message, NULL for the session lock */
    int64_t until_mono;       /* stop renewing after this */
    int64_t next_mono;        /* next renewal due */
    int inflight;             /* a renewal op is running */
    struct sbusi_op *op;      /* that op (its ->renews holds this) */
    int solo;                 /* renew alone next time: a shared request
                                 failed, find out whose lock it was */
    sbusi_ev_t fail;          /* SBUS_EV_RENEW_FAILED record */
    int dead;                 /* 1: stopped, free when released */
} sbusi_renew_t;

enum sbusi_conn_state {
    SBUSI_C_IDLE = 0,    /* never opened, or given up */
    SBUSI_C_CONNECTING,  /* CONNECT emitted, waiting for transport_up */
    SBUSI_C_UP,          /* transport up, AMQP opening or open */
    SBUSI_C_BACKOFF,     /* lost; reconnect at reconnect_at */
    SBUSI_C_CLOSING,     /* close sent, waiting for the peer */
    SBUSI_C_CLOSED,      /* closed by the user (or aborted) */
};

struct sbus_conn {
    /* configuration (owned copies) */
    char *host;               /* namespace FQDN */
    int port;                 /* TCP port */
    int use_tls;              /* 1: TLS layer on */
    int tls_noverify;         /* 1: TLS on with peer verification off */
    char *key_name;           /* SAS policy, or NULL */
    char *key;                /* SAS key, or NULL */
    char *sas_token;          /* fixed SAS token, or NULL */
    int host_tokens;          /* 1: SBUS_EV_TOKEN mode */
    char *container_id;       /* AMQP container id */
    char *user_agent;         /* user-agent property value */
    int retry_total;          /* retry policy: attempts */
    int64_t backoff_ms;       /* backoff factor */
    int64_t backoff_max_ms;   /* backoff cap */
    int64_t op_timeout_ms;    /* per-attempt deadline */
    int64_t token_lifetime_s; /* lifetime of tokens we sign */
    uint32_t idle_timeout_ms; /* our idle-time-out */
    int trace;                /* SBUS_EV_LOG per frame */
    /* wire */
    int state;                /* enum sbusi_conn_state */
    pn_connection_driver_t driver; /* valid while have_driver */
    int have_driver;          /* driver initialised for this transport */
    pn_session_t *session;    /* the one AMQP session, NULL when none */
    int wire_open;            /* remote open received */
    int reconnects;           /* failed connection attempts in a row */
    int64_t open_mono;        /* when the AMQP open completed */
    int progress;             /* this transport did useful work (a token
                                 accepted, a link attached, an operation
                                 done): its loss is bad luck, not a failed
                                 attempt */
    int64_t reconnect_at;     /* BACKOFF: when to emit CONNECT */
    int64_t connect_mono;     /* when the last CONNECT was emitted */
    int opened;               /* sbus_conn_open() was called */
    int want_disconnect;      /* DISCONNECT to emit */
    /* time */
    int64_t now_mono;         /* last tick, monotonic ms */
    int64_t now_unix;         /* last tick, wall clock ms */
    int ticked;               /* tick was called once: times are real */
    int64_t op_due;           /* no op deadline or retry comes before this
                                 (a lower bound; INT64_MAX: none) */
    /* objects */
    sbusi_op_t ops;           /* pending ops: circular list head */
    sbusi_op_t *spare_ops;    /* finished ops kept for reuse (chain via
                                 next): a settle per received message
                                 then costs no allocation */
    size_t nspare_ops;        /* entries in spare_ops */
    sbusi_msgpool_t *msgpool; /* blocks of received messages for reuse
                                 (message.c), NULL until the first */
    sbusi_audience_t *auds;   /* token audiences */
    sbusi_cbs_t cbs;          /* CBS link pair */
    sbusi_mgmt_t *mgmts;      /* $management pairs */
    struct sbus_sender *senders;     /* live senders */
    struct sbus_receiver *receivers; /* live receivers */
    uint64_t next_uid;        /* for receiver uids / link names */
    uint64_t next_req;        /* request message-id counter */
    uint64_t next_tag;        /* delivery tag counter */
    /* events */
    sbusi_ev_t *evq_head;     /* queued events */
    sbusi_ev_t *evq_tail;     /* last queued event */
    sbusi_ev_t *current;      /* event the host holds now */
    sbusi_ev_t connect_ev;    /* SBUS_EV_CONNECT record */
    sbusi_ev_t disconnect_ev; /* SBUS_EV_DISCONNECT record */
    sbusi_ev_t conn_err;      /* last connection error (err fields) */
    int has_conn_err;         /* conn_err is set */
    int in_process;           /* guards re-entry of process() */
    int mgmt_dirty;           /* a $management op may be waiting to go */
    struct sbusi_frame *frame; /* outgoing batch-format filter (owned) */
    sbusi_buf_t out;          /* bytes for the host to write */
    size_t out_head;          /* first unwritten byte of out */
    sbusi_buf_t plain;        /* TLS: filtered AMQP bytes not yet encrypted */
    sbusi_buf_t in;           /* the host's read buffer: ciphertext with
                                 byte layers; without, used instead of
                                 Proton's when that offers little room */
    int in_staged;            /* no layers: the last read buffer handed
                                 out was `in`, not Proton's */
    struct sbusi_tls_ctx *tls_ctx; /* TLS configuration (owned), or NULL */
    struct sbusi_layer *layers[3]; /* byte layers, bottom first (owned) */
    size_t nlayers;           /* how many (0: Proton talks to the host) */
    int tls_eof;              /* a layer closed: AMQP input ended */
    int layers_shut;          /* the layers were told to close */
    int websocket;            /* 1: AMQP over WebSockets */
    char *proxy_host;         /* HTTP CONNECT proxy, or NULL (owned) */
    int proxy_port;           /* its port */
    char *proxy_user;         /* basic auth user, or NULL (owned) */
    char *proxy_password;     /* basic auth password, or NULL (owned) */
    sbusi_buf_t scratch;      /* reused buffer for incoming deliveries */
    int log_depth;            /* guards logging from the log sink */
};

struct sbus_sender {
    sbusi_owner_t own;           /* link owner (must be first) */
    struct sbus_conn *conn;      /* connection (borrowed) */
    struct sbus_sender *next;    /* conn->senders */
    char *entity;                /* entity path (owned) */
    char *name;                  /* link name (owned) */
    uint64_t max_size;           /* peer's max-message-size */
    sbusi_op_t *q_head;          /* sends waiting for credit, oldest first */
    sbusi_op_t *q_tail;          /* newest waiting send */
    int nopen;                   /* SENDER_OPEN ops pending */
};

struct sbus_receiver {
    sbusi_owner_t own;           /* link owner (must be first) */
    struct sbus_conn *conn;      /* connection (borrowed) */
    struct sbus_receiver *next;  /* conn->receivers */
    uint64_t uid;                /* identity messages refer to */
    char *entity;                /* full entity path (owned) */
    char *name;                  /* link name (owned) */
    sbus_receiver_options_t o;   /* options (strings not kept) */
    char *session_id;            /* requested, then granted (owned) */
    int64_t session_locked_until; /* unix ms, 0 unknown */
    sbus_message_t *q_head;      /* prefetched messages */
    sbus_message_t *q_tail;      /* last prefetched */
    size_t q_len;                /* prefetched count */
    int draining;                /* a drain is outstanding */
    int released;                /* released deliveries whose dispositions
                                    may not be written yet */
    int opened;                  /* open/receive was called: resume after
                                    a loss */
    int relock;                  /* session: held session_id's lock once;
                                    a new attach must get that session
                                    back, or fail with session-lock-lost */
    int64_t last_seq;            /* last sequence number seen (peek) */
    sbusi_renew_t *renews;       /* auto-renew registrations */
    sbusi_op_t *rq_head;         /* pending receive calls, oldest first */
    sbusi_op_t *rq_tail;         /* newest pending receive call */
    int nopen;                   /* RECEIVER_OPEN ops pending */
};

/* conn.c */
void sbusi_ev_push(sbus_conn_t *c, sbusi_ev_t *ev);
/* A sender/receiver is being freed: events still queued stop naming it. */
void sbusi_ev_forget_object(sbus_conn_t *c, const void *object);
sbusi_op_t *sbusi_op_new(sbus_conn_t *c, sbus_op_t kind, void *token,
                         void *object);
void sbusi_op_start(sbus_conn_t *c, sbusi_op_t *op);
void sbusi_op_done(sbusi_op_t *op, int code, const char *cond,
                   const char *desc);
void sbusi_op_fail_from(sbusi_op_t *op, const sbusi_ev_t *src);
/* Retries op after backoff when err is retriable and attempts remain;
 * else completes it with the error. */
void sbusi_op_retry_or_fail(sbusi_op_t *op, int code, const char *cond,
                            const char *desc);
int64_t sbusi_backoff(const sbus_conn_t *c, int attempt);
void sbusi_process(sbus_conn_t *c);
void sbusi_log(sbus_conn_t *c, const char *fmt, ...);
/* A FIFO of waiting operations kept as (*head, *tail) through the ops'
 * qnext/qprev links (senders' sends, receivers' receive calls): append op;
 * unlink op if it is queued. */
void sbusi_opq_push(sbusi_op_t **head, sbusi_op_t **tail, sbusi_op_t *op);
void sbusi_opq_remove(sbusi_op_t **head, sbusi_op_t **tail, sbusi_op_t *op);
/* Queues a warning (SBUS_EV_LOG with level 1), whatever opts.trace says. */
void sbusi_warn(sbus_conn_t *c, const char *fmt, ...);
int sbusi_wire_ready(const sbus_conn_t *c);
/* The current transport did useful work (see sbus_conn.progress). */
void sbusi_conn_progress(sbus_conn_t *c);
/* 1 once the connection was closed or aborted: no new operations. */
int sbusi_conn_closed(const sbus_conn_t *c);
void sbusi_owner_init(sbusi_owner_t *o, int kind);
void sbusi_owner_lost(sbusi_owner_t *o);
void sbusi_owner_detach(sbusi_owner_t *o);
void sbusi_owner_set_error(sbusi_owner_t *o, int code, const char *cond,
                           const char *desc);
/* Reads a link's remote-close condition into the owner's error. */
void sbusi_owner_error_from_link(sbusi_owner_t *o, pn_link_t *l);
pn_link_t *sbusi_link_new(sbus_conn_t *c, sbusi_owner_t *o, int sender,
                          const char *name);

/* wire.c: the byte boundary, with the TLS layer between Proton and the
 * host when on. */
int sbusi_wire_tls_config(sbus_conn_t *c, const char *ca_file, int verify,
                          char *err, size_t errlen);
int sbusi_wire_start(sbus_conn_t *c);
void sbusi_wire_stop(sbus_conn_t *c);
void sbusi_wire_free(sbus_conn_t *c);
void sbusi_set_conn_error(sbus_conn_t *c, int code, const char *cond,
                          const char *desc);
void sbusi_emit_disconnect(sbus_conn_t *c);
void sbusi_transport_gone(sbus_conn_t *c, const char *why);

/* cbs.c */
sbusi_audience_t *sbusi_audience_get(sbus_conn_t *c, const char *entity);
/* 1 when the audience holds a valid token; 0 while waiting (starts the
 * put-token); -1 when it failed (a->fail holds why). */
int sbusi_audience_ready(sbus_conn_t *c, sbusi_audience_t *a);
void sbusi_cbs_pump(sbus_conn_t *c);
void sbusi_cbs_lost(sbus_conn_t *c);
int64_t sbusi_cbs_deadline(sbus_conn_t *c);
void sbusi_cbs_tick(sbus_conn_t *c);
void sbusi_cbs_free(sbus_conn_t *c);

/* mgmt.c: request/response plumbing shared by $cbs and $management */
typedef struct sbusi_rpc_reply {
    int has_corr;               /* correlation-id was a ulong */
    uint64_t corr;              /* its value */
    int status;                 /* statusCode / status-code, 0 if absent */
    char cond[SBUSI_COND_MAX];  /* errorCondition, "" if absent */
    char desc[SBUSI_DESC_MAX];  /* statusDescription, "" if absent */
    int has_body;               /* an amqp-value body was present */
    sbusi_item_t body;          /* it (points into the input bytes) */
} sbusi_rpc_reply_t;

/* Sends one request on link l: properties(message-id, to, reply-to) then
 * `rest` (application-properties and body sections, already encoded). */
int sbusi_rpc_send(sbus_conn_t *c, pn_link_t *l, uint64_t id, const char *to,
                   const char *reply_to, const sbusi_buf_t *rest);
int sbusi_rpc_decode(const uint8_t *p, size_t n, sbusi_rpc_reply_t *r);
void sbusi_audience_retry(sbusi_audience_t *a);
/* receiver.c: marks m as received by sequence number on r. */
void sbusi_receiver_adopt_deferred(sbus_receiver_t *r, sbus_message_t *m);
/* message.c: stores a renewed lock expiry. */
void sbusi_message_set_locked_until(sbus_message_t *m, int64_t unix_ms);

int sbusi_mgmt_submit(sbus_conn_t *c, const char *entity, sbusi_op_t *op);
/* Starts $management op (request encoded in op->payload) on entity: 0, or
 * a code after discarding op (SBUS_ESTATE when `closed`, SBUS_ENOMEM when
 * its encoding ran out of memory, or what sbusi_mgmt_submit said). Used by
 * senders and receivers alike. */
int sbusi_mgmt_start(sbus_conn_t *c, const char *entity, sbusi_op_t *op,
                     int closed);
void sbusi_mgmt_pump(sbus_conn_t *c);
void sbusi_mgmt_lost(sbus_conn_t *c);
void sbusi_mgmt_free(sbus_conn_t *c);
/* Parses the response body for op (per kind); fills op results. */
int sbusi_mgmt_result(sbusi_op_t *op, const sbusi_item_t *body);

/* sender.c / receiver.c */
void sbusi_sender_pump(sbus_sender_t *s);
void sbusi_sender_lost(sbus_sender_t *s);
void sbusi_receiver_pump(sbus_receiver_t *r);
void sbusi_receiver_lost(sbus_receiver_t *r);
void sbusi_receiver_batch_end(sbus_receiver_t *r);
void sbusi_receiver_tick(sbus_receiver_t *r);
int64_t sbusi_receiver_deadline(sbus_receiver_t *r);
void sbusi_renew_unlink(sbusi_renew_t *rn);
void sbusi_renew_tick(sbus_receiver_t *r);
int64_t sbusi_renew_deadline(sbus_receiver_t *r);
void sbusi_renew_stop_all(sbus_receiver_t *r);
void sbusi_renew_free_all(sbus_receiver_t *r);
sbusi_op_t *sbusi_renew_lock_op(sbus_receiver_t *r, sbus_message_t *const *ms,
                                size_t n, void *token, int *rc);

/* Proton event dispatch helpers (conn.c) */
int sbusi_owner_attach(sbus_conn_t *c, sbusi_owner_t *o);
void sbusi_owner_after_detach(sbus_conn_t *c, sbusi_owner_t *o);
void sbusi_op_discard(sbusi_op_t *op);
void sbusi_fail_object(sbus_conn_t *c, void *object, int code,
                       const char *desc);
/* Completes the pending ops of `kind` on object (code 0 = success). */
void sbusi_fail_object_kind(sbus_conn_t *c, void *object, sbus_op_t kind,
                            int code, const char *desc);
void sbusi_sender_requeue(sbus_sender_t *s, sbusi_op_t *op);
void sbusi_sender_forget(sbus_sender_t *s, sbusi_op_t *op);
void sbusi_receiver_forget(sbus_receiver_t *r, sbusi_op_t *op);
/* Kind-specific hooks called by conn.c. */
void sbusi_op_requeue(sbusi_op_t *op);  /* backoff over: try again */
void sbusi_op_timeout(sbusi_op_t *op);  /* deadline passed */
/* A link event for a sender/receiver: l is its link, d its delivery
 * (PN_DELIVERY) or NULL; the dispatcher has both at hand, and asking
 * Proton again (pn_event_link()) costs ~50 instructions per event. */
void sbusi_sender_on_event(sbus_sender_t *s, pn_event_t *e, pn_link_t *l,
                           pn_delivery_t *d);
void sbusi_receiver_on_event(sbus_receiver_t *r, pn_event_t *e, pn_link_t *l,
                             pn_delivery_t *d);
void sbusi_receiver_cancel(sbus_receiver_t *r, sbusi_op_t *op);
/* Gives receive op on r an operation timeout of ms (see
 * sbus_conn_set_op_timeout). */
void sbusi_receiver_set_timeout(sbus_receiver_t *r, sbusi_op_t *op,
                                int64_t ms);
void sbusi_cbs_on_event(sbus_conn_t *c, sbusi_owner_t *o, pn_event_t *e);
void sbusi_mgmt_on_event(sbus_conn_t *c, sbusi_owner_t *o, pn_event_t *e);
/* Reads a complete incoming delivery into c->scratch; 0, or -1 when it is
 * not complete yet. Advances the link. */
int sbusi_read_delivery(sbus_conn_t *c, pn_delivery_t *d);

#endif /* SBUS_INTERNAL_H */
