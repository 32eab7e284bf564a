/*
 * emu.h: the shared internal model of sbus-emulator.
 *
 * One broker (emu_broker_t) owns the entities of the namespace (queues,
 * topics, subscriptions and their dead-letter sub-queues, all emu_entity_t),
 * the emulator clock, the fault-injection settings and the list of AMQP
 * connections. A connection (emu_conn_t) wraps one Proton connection driver;
 * its links (emu_link_t) are producers, consumers, or the request/response
 * pairs of $cbs and $management. Messages (emu_msg_t) live in exactly one
 * entity; the broker keeps their wire bytes (properties, application
 * properties, body) verbatim and re-encodes only what it owns (header and
 * message annotations). Everything runs on one thread; no locking anywhere.
 *
 * Files: codec (AMQP types), store (entities, messages, locks, timers),
 * amqp (Proton events, links, deliveries), cbs (SAS and put-token),
 * mgmt ($management), sasl (the MSSBCBS plugin), config (JSON), sql
 * (filters and actions), net (sockets and TLS), control (HTTP), certgen
 * (CA and server certificate), main (CLI and the poll loop).
 */
#ifndef EMU_H
#define EMU_H

#include <proton/connection_driver.h>
#include <proton/delivery.h>
#include <proton/link.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec.h"

/* Claims (SAS policy rights). Manage implies the other two. */
enum { RIGHT_SEND = 1, RIGHT_LISTEN = 2, RIGHT_MANAGE = 4 };

/* Message states as in x-opt-message-state. */
enum { MSG_ACTIVE = 0, MSG_DEFERRED = 1, MSG_SCHEDULED = 2 };

typedef enum { ENT_QUEUE, ENT_TOPIC, ENT_SUBSCRIPTION, ENT_DLQ } emu_kind_t;

typedef enum {
  LINK_PRODUCER,  /* client sends to an entity */
  LINK_CONSUMER,  /* entity delivers to the client */
  LINK_REQ,       /* client sends requests to $cbs or <entity>/$management */
  LINK_REPLY      /* broker sends responses on $cbs or <entity>/$management */
} emu_link_kind_t;

typedef struct emu_broker emu_broker_t;
typedef struct emu_entity emu_entity_t;
typedef struct emu_conn emu_conn_t;
typedef struct emu_link emu_link_t;
typedef struct emu_msg emu_msg_t;
typedef struct emu_sess emu_sess_t;
typedef struct sql_expr sql_expr_t;
typedef struct sql_action sql_action_t;

/* A SAS policy: key name, key text and rights. */
typedef struct emu_policy {
  char *name;              /* SharedAccessKeyName */
  char *key;               /* key text; its bytes are the HMAC key */
  unsigned rights;         /* RIGHT_* bits */
  struct emu_policy *next; /* next policy of the same scope */
} emu_policy_t;

/* Open-addressing hash from a 64-bit key to a pointer-sized value. */
typedef struct emu_index {
  uint64_t *keys; /* key per slot */
  void **vals;    /* value per slot */
  uint8_t *used;  /* 0 empty, 1 used, 2 tombstone */
  size_t cap;     /* slots, a power of two */
  size_t n;       /* used slots */
  size_t tomb;    /* tombstones */
} emu_index_t;

/* Binary min-heap of messages ordered by sequence number. */
typedef struct emu_heap {
  emu_msg_t **v; /* elements */
  size_t n;      /* count */
  size_t cap;    /* capacity */
} emu_heap_t;

/* Entity settings (Microsoft's Properties block, durations in ms). */
typedef struct emu_props {
  int64_t lock_ms;         /* LockDuration */
  int64_t default_ttl_ms;  /* DefaultMessageTimeToLive (INT64_MAX: none) */
  int64_t dup_window_ms;   /* DuplicateDetectionHistoryTimeWindow */
  int max_delivery;        /* MaxDeliveryCount */
  bool requires_session;   /* RequiresSession */
  bool dl_on_expiration;   /* DeadLetteringOnMessageExpiration */
  bool dup_detect;         /* RequiresDuplicateDetection */
  char *forward_to;        /* ForwardTo ("" or NULL: off) */
  char *forward_dlq_to;    /* ForwardDeadLetteredMessagesTo */
} emu_props_t;

typedef enum { FILTER_TRUE, FILTER_FALSE, FILTER_SQL, FILTER_CORRELATION } emu_filter_kind_t;

/* A correlation-filter user property: name and a typed value. */
typedef struct emu_corr_prop {
  char *name;                  /* application property name */
  emu_buf_t value;             /* AMQP-encoded expected value */
  struct emu_corr_prop *next;  /* next property */
} emu_corr_prop_t;

/* One subscription rule: a filter and an optional action. */
typedef struct emu_rule {
  char *name;                    /* rule name */
  emu_filter_kind_t kind;        /* filter kind */
  char *sql;                     /* SQL filter text (FILTER_SQL) */
  sql_expr_t *expr;              /* parsed SQL filter */
  char *corr[8];                 /* correlation system fields, see CORR_* */
  emu_corr_prop_t *corr_props;   /* correlation user properties */
  char *action_sql;              /* SQL action text or NULL */
  sql_action_t *action;          /* parsed action */
  int64_t created_ms;            /* creation time */
  struct emu_rule *next;         /* next rule of the subscription */
} emu_rule_t;

/* Index of the system fields in emu_rule_t.corr. */
enum { CORR_CORRELATION_ID, CORR_MESSAGE_ID, CORR_TO, CORR_REPLY_TO, CORR_LABEL,
       CORR_SESSION_ID, CORR_REPLY_TO_SESSION_ID, CORR_CONTENT_TYPE };

/* A message session inside a sessionful entity. */
struct emu_sess {
  char *id;                 /* session id (group-id) */
  emu_entity_t *ent;        /* owning entity */
  emu_buf_t state;          /* session state bytes */
  bool has_state;           /* state set (even empty) */
  int64_t state_updated;    /* emulator ms of the last set-session-state */
  emu_link_t *owner;        /* receiver link holding the session lock, or NULL */
  int64_t locked_until;     /* session lock expiry */
  emu_heap_t ready;         /* available messages of this session */
  size_t nmsgs;             /* messages of this session stored in the entity */
  struct emu_sess *next;    /* next session of the entity */
};

/* One stored message. */
struct emu_msg {
  emu_entity_t *ent;        /* entity that stores it */
  emu_msg_t *prev, *next;   /* all messages of the entity, in sequence order */
  emu_msg_t *lprev, *lnext; /* lock list (by lock expiry) or scheduled list */
  int64_t seq;              /* sequence number in this entity */
  int64_t enq_seq;          /* original sequence number (forwarded), or 0 */
  int64_t enqueued_ms;      /* enqueued time */
  int64_t expires_ms;       /* absolute expiry (INT64_MAX: never) */
  int64_t scheduled_ms;     /* scheduled enqueue time (0: none) */
  int64_t locked_until;     /* lock expiry when locked */
  uint32_t ttl_ms;          /* header ttl as sent (0: none) */
  uint32_t delivery_count;  /* failed delivery attempts */
  uint8_t state;            /* MSG_* */
  bool locked;              /* currently locked by a receiver */
  bool durable;             /* header durable */
  uint8_t priority;         /* header priority */
  size_t heap_idx;          /* position in a ready heap, SIZE_MAX when absent */
  unsigned char token[16];  /* lock token, RFC 4122 byte order */
  pn_delivery_t *dlv;       /* outstanding peek-lock delivery, or NULL */
  emu_sess_t *sess;         /* session of a sessionful entity, or NULL */
  char *message_id;         /* message-id as text, or NULL */
  char *dl_source;          /* x-opt-deadletter-source, or NULL */
  int hops;                 /* forwarding hops so far */
  unsigned char *data;      /* [user annotations][properties][app props][body] */
  size_t ann_len;           /* bytes of the user annotation map entries */
  uint32_t ann_count;       /* keys+values in those entries */
  size_t props_len;         /* bytes of the properties section (0: none) */
  size_t app_len;           /* bytes of the application-properties section */
  size_t body_len;          /* bytes of the body sections and footer */
};

/* Per-entity counters reported by the control surface. */
typedef struct emu_counts {
  size_t active;        /* available or locked, not deferred or scheduled */
  size_t scheduled;     /* waiting for their enqueue time */
  size_t deferred;      /* deferred */
  size_t locked;        /* locked by a receiver */
  size_t total;         /* all stored */
} emu_counts_t;

/* A queue, topic, subscription or dead-letter sub-queue. */
struct emu_entity {
  char *name;                /* path, e.g. "topic.1/Subscriptions/s1" */
  char *lname;               /* lower-case path for lookups */
  emu_kind_t kind;           /* what it is */
  emu_entity_t *parent;      /* subscription: topic; DLQ: its entity */
  emu_entity_t *dlq;         /* dead-letter sub-queue (queues, subscriptions) */
  emu_entity_t *tdlq;        /* transfer dead-letter sub-queue, made on first use (emu_tdlq) */
  emu_props_t props;         /* settings */
  emu_policy_t *policies;    /* entity-level SAS policies */
  int64_t next_seq;          /* next sequence number (queues, topics, DLQs) */
  emu_msg_t *head, *tail;    /* all stored messages in sequence order */
  emu_index_t by_seq;        /* sequence number -> message */
  emu_heap_t ready;          /* available messages (non-session entities) */
  emu_msg_t *lock_head, *lock_tail;   /* locked messages by expiry */
  emu_msg_t *sched_head;     /* scheduled messages by time (lprev/lnext) */
  emu_sess_t *sessions;      /* message sessions */
  emu_link_t *consumers;     /* receiver links (round-robin ring start) */
  emu_rule_t *rules;         /* subscription rules */
  emu_entity_t **subs;       /* topic: subscriptions */
  size_t nsubs;              /* topic: number of subscriptions */
  emu_index_t dups;          /* duplicate detection: hash(message-id) -> expiry */
  emu_counts_t counts;       /* counters */
  bool dirty;                /* needs a dispatch pass */
  uint8_t off;               /* EMU_SEND_OFF / EMU_RECV_OFF: an administration Status
                              * (Disabled, SendDisabled, ReceiveDisabled) */
  emu_entity_t *next;        /* next entity of the broker */
};

/* A delivery seen on the wire (wire.c): its tag and message-format. */
typedef struct emu_wrec {
  uint32_t format;          /* transfer message-format (0x80013700: batch) */
  uint8_t tag_len;          /* bytes of tag used (tags are at most 32 bytes) */
  unsigned char tag[32];    /* delivery tag */
} emu_wrec_t;

/* States of a wire link with respect to the broker's link (emu_link_t). */
enum { WL_NEW, WL_CLAIMED, WL_DONE };

/* A link on which the client sends, as the frame scanner sees it (wire.c). */
typedef struct emu_wlink {
  char *name;               /* link name from the attach */
  uint16_t channel;         /* the client's channel */
  uint32_t handle;          /* the client's handle */
  bool current;             /* (channel, handle) still names this link (no detach/end yet) */
  bool mid;                 /* a multi-transfer delivery is in progress */
  int state;                /* WL_*: claimed by an emu_link_t, or never/no longer */
  emu_wrec_t *rec;          /* ring of deliveries not yet taken */
  size_t head, nrec, cap;   /* ring start, count, capacity */
  struct emu_wlink *next;   /* next, in attach order */
} emu_wlink_t;

/* Frame scanner state of one connection (wire.c). */
typedef struct emu_wire {
  unsigned char hdr[2048];  /* the first bytes of the frame being read */
  size_t hlen;              /* bytes in hdr */
  size_t want;              /* bytes of this frame to collect (0 while its size is unknown) */
  uint32_t size;            /* size of the current frame (0: reading a size or header) */
  uint64_t skip;            /* bytes of the current frame left to skip */
  bool broken;              /* stream not followable; scanning stopped */
  const char *violation;    /* static text: a frame the connection must be closed for
                               (it would trip an assertion in Proton); scanning stopped */
  emu_wlink_t *links;       /* links the client sends on */
} emu_wire_t;

/* A CBS claim put on a connection. */
typedef struct emu_token {
  char *path;               /* audience path, lower-case, URL-decoded */
  unsigned rights;          /* RIGHT_* */
  int64_t expires_ms;       /* token expiry (emulator clock) */
  struct emu_token *next;   /* next claim */
} emu_token_t;

/* One link of a connection. */
struct emu_link {
  pn_link_t *pn;             /* Proton link */
  emu_conn_t *conn;          /* owning connection */
  emu_link_kind_t kind;      /* role */
  emu_entity_t *ent;         /* entity (producer/consumer/management) */
  char *node;                /* normalised node path (lower-case) */
  char *target;              /* remote target address as sent (reply routing) */
  bool rad;                  /* consumer in ReceiveAndDelete mode */
  bool refused;              /* refused at attach; ignore further events */
  bool waiting;              /* session receiver waiting for a free session (attach unanswered) */
  int64_t wait_until;        /* emulator ms when a waiting attach times out */
  int session_form;          /* filter encoding sent by the client: 1 plain, 2 described */
  uint64_t session_desc;     /* descriptor of a described session filter */
  emu_sess_t *sess;          /* consumer holding a session lock */
  emu_buf_t rx;              /* bytes of the incoming delivery in progress */
  bool rx_oversize;          /* the delivery in progress exceeded the limit */
  size_t rx_total;           /* bytes of the delivery in progress read so far */
  uint64_t tags;             /* counter for delivery tags */
  int64_t active_ms;         /* emulator ms of the last transfer, flow or disposition */
  emu_wlink_t *wl;           /* what the frame scanner saw of this link (receiving links), or NULL */
  emu_link_t *cnext, *cprev; /* entity consumer ring */
  emu_link_t *next;          /* next link of the connection */
};

/* A response waiting for the delay_dispositions fault. */
typedef struct emu_delayed {
  int64_t due_ms;            /* real monotonic deadline */
  pn_delivery_t *dlv;        /* delivery to settle */
  uint64_t state;            /* outcome to send */
  struct emu_delayed *next;  /* next */
} emu_delayed_t;

/* One AMQP connection (one Proton driver). */
struct emu_conn {
  pn_connection_driver_t driver; /* Proton sans-I/O driver */
  emu_broker_t *broker;      /* broker */
  uint64_t id;               /* connection number */
  emu_token_t *tokens;       /* CBS claims */
  int64_t token_check_ms;    /* UTC ms of the earliest token expiry (INT64_MAX: none) */
  int64_t opened_mono;       /* creation time (real monotonic ms) */
  bool authed;               /* a valid token was put */
  bool dead;                 /* transport closed; host should free it */
  int64_t kill_at;           /* real monotonic ms after which the host closes the socket (0: never) */
  emu_link_t *links;         /* our link contexts */
  emu_delayed_t *delayed;    /* delayed dispositions */
  void *host;                /* the network owner (net.c), or test harness */
  emu_wire_t wire;           /* frame scanner of the client's input */
  emu_buf_t obuf;            /* output rewritten by emu_conn_output (list0 performatives) */
  size_t opos;               /* bytes of obuf already written */
  uint64_t out_left;         /* bytes of Proton's current output frame already passed on */
  bool out_broken;           /* output not followable: passed through unchanged */
  int64_t opened_emu;        /* creation time (emulator ms) */
  int64_t linkless_since;    /* emulator ms when its last link went (INT64_MAX: has links) */
  bool had_link;             /* a link was attached at some point */
  int64_t idle_check;        /* emulator ms of its earliest idle deadline (INT64_MAX: none) */
  emu_wlink_t *pending_wl;   /* wire link claimed by the attach being handled */
  emu_conn_t *prev, *next;   /* broker list */
};

/* Fault injection state (control surface). */
typedef struct emu_faults {
  int fail_next;             /* operations left to fail */
  char fail_op[16];          /* send|receive|settle|mgmt|cbs */
  char fail_cond[128];       /* condition to fail with */
  int64_t delay_disp_ms;     /* delay of settlement replies */
} emu_faults_t;

/* Broker-wide options. */
typedef struct emu_options {
  uint64_t max_message_size; /* bytes (default 262144) */
  int64_t cbs_timeout_ms;    /* close connections without a token after this */
  uint32_t idle_timeout_ms;  /* advertised idle-time-out */
  /* The service's idle timers (protocol.md §1.6), emulator clock, 0 = off: */
  int64_t link_idle_ms;      /* detach a sender/receiver link without traffic (service: 10 min) */
  int64_t conn_idle_ms;      /* close a connection whose links are all gone (service: 5 min) */
  int64_t conn_no_link_ms;   /* close a new connection that attaches no link (service: 1 min) */
  int verbose;               /* log level */
  bool allow_jwt;            /* test mode: accept any "jwt" token with every right */
} emu_options_t;

struct emu_broker {
  emu_options_t opt;         /* options */
  char *ns_name;             /* namespace name */
  emu_policy_t *policies;    /* namespace SAS policies */
  emu_entity_t *entities;    /* all entities incl. DLQs */
  emu_conn_t *conns;         /* live connections */
  uint64_t next_conn_id;     /* connection numbering */
  int64_t skew_ms;           /* clock skew added by POST /clock */
  int64_t fake_ms;           /* in-process tests only: time that passed for both peers
                                (moves emu_now like skew_ms but, unlike it, is part of the
                                times on the wire) */
  emu_index_t tokens;        /* lock token (first 8 bytes) -> message */
  emu_faults_t faults;       /* fault injection */
  emu_buf_t scratch;         /* encoding scratch buffer */
  uint64_t rng[2];           /* xorshift128+ state for tokens */
  uint64_t stat_in, stat_out; /* messages accepted / delivered */
};

/* ---- clock (store.c) */
int64_t emu_mono_ms(void);                 /* real monotonic ms */
int64_t emu_now(emu_broker_t *b);          /* emulator clock: UTC ms + fake_ms + skew */
/* Times cross the wire without the skew of POST /clock (docs/emulator.md "Time"): a client
 * sees timestamps on its own wall clock, and moving the clock as the broker's timers
 * jumping. INT64_MAX (never) passes unchanged. */
int64_t emu_to_wire(const emu_broker_t *b, int64_t emu_ms);
int64_t emu_from_wire(const emu_broker_t *b, int64_t wire_ms);
/* A message from a client: its scheduled enqueue time onto the emulator clock. */
void emu_msg_from_wire(const emu_broker_t *b, emu_msg_t *m);
void emu_log(emu_broker_t *b, int level, const char *fmt, ...);

/* ---- index and heap (store.c) */
void idx_init(emu_index_t *x);
void idx_free(emu_index_t *x);
void *idx_get(const emu_index_t *x, uint64_t key);
bool idx_has(const emu_index_t *x, uint64_t key);
void idx_put(emu_index_t *x, uint64_t key, void *val);
void idx_del(emu_index_t *x, uint64_t key);
uint64_t hash_str(const char *s, size_t n);

/* ---- broker and entities (store.c) */
emu_broker_t *emu_broker_new(const emu_options_t *opt);
void emu_broker_free(emu_broker_t *b);
emu_entity_t *emu_entity_add(emu_broker_t *b, emu_kind_t kind, const char *name,
                             emu_entity_t *parent, const emu_props_t *props);
void emu_entity_remove(emu_broker_t *b, emu_entity_t *e);
emu_entity_t *emu_entity_find(emu_broker_t *b, const char *path);
/* The transfer dead-letter sub-queue of a queue or subscription (`<path>/$Transfer/$DeadLetterQueue`),
 * where messages that auto-forwarding could not deliver go; made on first use, so that configs
 * that never need one keep their entity list. NULL for other kinds. emu_entity_find makes it
 * too when a client names it. */
emu_entity_t *emu_tdlq(emu_broker_t *b, emu_entity_t *e);
void emu_props_default(emu_props_t *p);
void emu_props_free(emu_props_t *p);
void emu_rule_free(emu_rule_t *r);
int64_t emu_next_deadline(emu_broker_t *b);   /* emulator ms, INT64_MAX: none */
void emu_tick(emu_broker_t *b);               /* fire due timers and dispatch */
void emu_counts(emu_entity_t *e, emu_counts_t *c);

/* ---- messages (store.c) */
emu_msg_t *msg_parse(const unsigned char *p, size_t n, const char **err);
void msg_free(emu_msg_t *m);
emu_msg_t *msg_clone(const emu_msg_t *m);
/* Read a properties field (0..12) of m into v; false when absent or null. */
bool msg_prop(const emu_msg_t *m, int field, amqp_val_t *v);
/* Find an application property by name. */
bool msg_app_prop(const emu_msg_t *m, const char *name, amqp_val_t *v);
/* Replace application properties entries: set (name -> encoded value) or remove (value NULL). */
void msg_app_set(emu_msg_t *m, const char *name, const unsigned char *val, size_t vlen);
/* Merge a map of property changes (a modified outcome's message-annotations, a rejected
 * outcome's error info, or a management properties-to-modify) into m's application properties:
 * each string- or symbol-keyed entry with a non-null value replaces that property, encoded as it
 * came. With reason and desc given, DeadLetterReason and DeadLetterErrorDescription string
 * entries are copied there (NUL-terminated, cut to n bytes) instead of being set. */
void msg_app_merge(emu_msg_t *m, const amqp_val_t *map, char *reason, char *desc, size_t n);
void msg_props_set(emu_msg_t *m, int field, const unsigned char *val, size_t vlen);
/* Encode for the wire. mode: 0 delivery, 1 peek/browse, 2 receive-by-sequence (locked). */
void msg_encode(emu_broker_t *b, const emu_msg_t *m, emu_buf_t *out, int mode);
/* Split a batch (format 0x80013700 content); returns count or -1. */
int msg_split_batch(const unsigned char *p, size_t n, emu_msg_t ***out, const char **err);

/* Enqueue a message sent to entity e (queue or topic); takes ownership. Returns 0, or a
 * negative value with cond and desc set (message freed). */
int emu_enqueue(emu_broker_t *b, emu_entity_t *e, emu_msg_t *m, const char **cond, char *desc, size_t dlen);
/* Take the next available message for a consumer (NULL when none). */
emu_msg_t *emu_take(emu_broker_t *b, emu_entity_t *e, emu_sess_t *s);
void emu_lock(emu_broker_t *b, emu_msg_t *m);
void emu_remove(emu_broker_t *b, emu_msg_t *m);          /* delete and free */
void emu_unlock(emu_broker_t *b, emu_msg_t *m, bool count); /* back to available */
void emu_abandon(emu_broker_t *b, emu_msg_t *m);
void emu_defer(emu_broker_t *b, emu_msg_t *m);
void emu_deadletter(emu_broker_t *b, emu_msg_t *m, const char *reason, const char *desc);
int64_t emu_renew(emu_broker_t *b, emu_msg_t *m);
emu_msg_t *emu_find_token(emu_broker_t *b, const unsigned char token[16]);
emu_msg_t *emu_find_seq(emu_entity_t *e, int64_t seq);
/* Sessions */
emu_sess_t *emu_sess_get(emu_entity_t *e, const char *id, bool create);
emu_sess_t *emu_sess_next_free(emu_broker_t *b, emu_entity_t *e);
void emu_sess_release(emu_broker_t *b, emu_sess_t *s);
void emu_sess_maybe_free(emu_sess_t *s);
void emu_sweep_expired(emu_broker_t *b, emu_entity_t *e);

/* ---- AMQP side (amqp.c) */
emu_conn_t *emu_conn_new(emu_broker_t *b, void *host);
void emu_conn_free(emu_conn_t *c);
void emu_conn_process(emu_conn_t *c);   /* drain Proton events */
/* Hand n bytes that the host wrote at p (the start of Proton's read buffer) to Proton,
 * after the frame scanner has seen them. Hosts must use this instead of
 * pn_connection_driver_read_done, or batches are not recognised. */
void emu_conn_read_done(emu_conn_t *c, const void *p, size_t n);
/* The bytes to write to the client next, and how many were written. Hosts use these
 * instead of Proton's write buffer: Proton encodes empty performatives (end, close
 * without error) as list0, which pyamqp cannot decode (protocol.md §1.7); those frames
 * are rewritten with an empty list8 (00 53 17 c0 01 00). Other output is not copied. */
pn_bytes_t emu_conn_output(emu_conn_t *c);
void emu_conn_output_done(emu_conn_t *c, size_t n);
/* Output is waiting, in Proton or rewritten; finished = Proton finished and none waits. */
bool emu_conn_output_pending(emu_conn_t *c);
bool emu_conn_finished(emu_conn_t *c);
int64_t emu_utc_ms(void);               /* real UTC ms (token expiry; not skewed) */
void emu_dispatch(emu_broker_t *b, emu_entity_t *e);
void emu_dispatch_all(emu_broker_t *b);
void emu_conn_drop(emu_conn_t *c, const char *cond, const char *desc);
void emu_detach_entity(emu_broker_t *b, const char *path, const char *cond);
void emu_detach_entity_tree(emu_broker_t *b, emu_entity_t *e, const char *cond);
#define EMU_SEND_OFF 1u
#define EMU_RECV_OFF 2u
/* Set e's Status bits (EMU_SEND_OFF | EMU_RECV_OFF). Links of a direction that is switched
 * off are detached with com.microsoft:entity-disabled, and new ones are refused. */
void emu_entity_set_off(emu_broker_t *b, emu_entity_t *e, uint8_t off);
void emu_link_send_message(emu_link_t *l, const unsigned char *p, size_t n, bool settled);
emu_link_t *emu_reply_link(emu_conn_t *c, const char *reply_to, const char *node);
bool emu_fault_take(emu_broker_t *b, const char *op, const char **cond);
void emu_conn_release_session_links(emu_sess_t *s);
/* The idle timers of every connection (called by emu_tick); their earliest deadline. */
void emu_conns_idle(emu_broker_t *b, int64_t now);
int64_t emu_conns_idle_deadline(const emu_broker_t *b);
int64_t emu_waiting_deadline(emu_entity_t *e);

/* ---- frame scanner (wire.c) */
/* Follow n bytes of the client's stream: frame boundaries, attach/transfer/detach/end. */
void emu_wire_scan(emu_wire_t *w, const unsigned char *p, size_t n);
/* The oldest unclaimed wire link with this name (the attach being handled), now claimed. */
emu_wlink_t *emu_wire_claim(emu_wire_t *w, const char *name);
/* The broker's link is gone: the wire link may be freed once detached on the wire. */
void emu_wire_unclaim(emu_wlink_t *x);
/* message-format of the delivery with this tag (0 when unknown); takes its record. */
uint32_t emu_wire_format(emu_wlink_t *x, const unsigned char *tag, size_t tn);
/* Free wire links that are detached on the wire and not claimed. */
void emu_wire_gc(emu_wire_t *w);
void emu_wire_free(emu_wire_t *w);

/* ---- CBS (cbs.c) */
void emu_cbs_request(emu_link_t *l, const unsigned char *p, size_t n);
unsigned emu_claims_for(emu_conn_t *c, const char *path);
int emu_sas_verify(emu_broker_t *b, const char *token, const char *audience, unsigned *rights,
                   int64_t *expires, char *why, size_t whylen);
char *emu_path_normalize(const char *addr);   /* malloc'd lower-case path */
void emu_url_decode(char *s);

/* ---- management (mgmt.c) */
/* A decoded request message ($cbs or $management); views into the request bytes. */
typedef struct emu_req {
  amqp_val_t msg_id;         /* properties.message-id (any type) */
  bool has_id;               /* message-id present */
  char reply_to[512];        /* properties.reply-to, or "" */
  amqp_val_t app;            /* application-properties map */
  bool has_app;              /* present */
  amqp_val_t body;           /* amqp-value content */
  bool has_body;             /* present */
} emu_req_t;
bool emu_req_parse(const unsigned char *p, size_t n, emu_req_t *r);
bool emu_req_app_str(const emu_req_t *r, const char *key, char *out, size_t n);
void emu_mgmt_request(emu_link_t *l, const unsigned char *p, size_t n);
/* Build a response: body (encoded amqp-value content, or NULL) and status. */
void emu_send_response(emu_link_t *req, const emu_req_t *r, bool cbs, int status, const char *desc,
                       const char *cond, const emu_buf_t *body);

/* ---- SASL plugin (sasl.c) */
void emu_sasl_install(pn_transport_t *t);

/* ---- SQL (sql.c) */
sql_expr_t *sql_parse_filter(const char *text, char *err, size_t errlen);
sql_action_t *sql_parse_action(const char *text, char *err, size_t errlen);
bool sql_filter_match(const sql_expr_t *e, const emu_msg_t *m);
void sql_action_apply(const sql_action_t *a, emu_msg_t *m);
void sql_expr_free(sql_expr_t *e);
void sql_action_free(sql_action_t *a);

/* ---- rules (store.c) */
bool emu_rule_match(const emu_rule_t *r, const emu_msg_t *m);

#endif
