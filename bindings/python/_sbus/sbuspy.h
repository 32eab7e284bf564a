/*
 * sbuspy.h - declarations shared by the C files of servicebus._sbus.
 *
 * The extension is the glue between asyncio and the sans-I/O engine
 * (<sbus/sbus.h>, nothing else: no Proton header is ever included here).
 * One C file per Python type:
 *
 *   module.c      module init, constants, the error factory hook, value
 *                 conversion helpers (Python <-> sbus_value_t), SAS helper
 *   connection.c  Connection: the asyncio BufferedProtocol, the one drain
 *                 loop that completes Futures, the deadline timer
 *   sender.c      Sender: send / batch send / schedule / cancel-scheduled
 *   receiver.c    Receiver: receive / settle / renew / peek / deferred /
 *                 session state / automatic lock renewal
 *   message.c     Message: wraps one sbus_message_t (getters and setters)
 *   batch.c       Batch: wraps one sbus_batch_t (size accounting)
 *   future.c      the operation Future's done callbacks, run in batches
 *
 * Operation protocol (see connection.c): an operation creates a Future,
 * records it in the connection's `pending` dict (the strong reference the
 * GC can traverse) and hands its address to the engine as the token. The
 * engine completes it exactly once through SBUS_EV_DONE, which the drain
 * loop turns into set_result / set_exception (skipped if cancelled).
 */
#ifndef SBUSPY_H
#define SBUSPY_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <sbus/sbus.h>

/* A connection: the asyncio protocol object. Fields documented in
 * connection.c. */
typedef struct ConnObject {
    PyObject_HEAD
    sbus_conn_t *conn;        /* the engine connection; NULL once freed */
    PyObject *loop;           /* the event loop everything runs on */
    PyObject *future_type;    /* class used for operation Futures */
    PyObject *future_kwargs;  /* {"loop": loop}, made once */
    PyObject *pending;        /* dict: Future -> context object */
    PyObject *renewals;       /* dict: int(address) -> (receiver, msg, cb) */
    PyObject *token_cb;       /* callable(audience) for SBUS_EV_TOKEN */
    PyObject *log_cb;         /* callable(text) for SBUS_EV_LOG */
    PyObject *transport;      /* the asyncio transport when up */
    PyObject *connect_task;   /* the create_connection task, if any */
    PyObject *timer;          /* TimerHandle following the deadline */
    int64_t timer_deadline;   /* deadline (ms) the timer is armed for */
    int64_t last_tick;        /* monotonic ms of the last sbus_conn_tick */
    int transport_state;      /* 0 none, 1 connecting, 2 up */
    int lost_pending;         /* connection_lost calls to ignore */
    int write_paused;         /* the transport asked us to pause */
    int in_pump;              /* re-entrancy guard of conn_pump */
    int need_pump;            /* a nested pump was asked for */
    int closed;               /* close() or abort() was called */
    int flush_soon;           /* a _flush is scheduled (call_soon) */
    PyObject *cb_batch;       /* the open batch of done callbacks (future.c) */
    int in_callbacks;         /* a batch of done callbacks is running */
    int cb_pumped;            /* ... and an operation it started was pumped */
    int cb_dirty;             /* ... and operations started after that one
                                 wait for the pump at the batch's end */
    char scratch[4096];       /* read target when the engine has no room */
    int use_scratch;          /* get_buffer handed out `scratch` */
    PyObject *weakreflist;
} ConnObject;

typedef struct {
    PyObject_HEAD
    ConnObject *conn;         /* strong: children keep their connection */
    sbus_sender_t *s;         /* NULL once freed */
    PyObject *weakreflist;
} SenderObject;

typedef struct {
    PyObject_HEAD
    ConnObject *conn;         /* strong */
    sbus_receiver_t *r;       /* NULL once freed */
    PyObject *msg_type;       /* class for received messages */
    PyObject *peek_type;      /* class for peeked messages */
    PyObject *weakreflist;
} ReceiverObject;

typedef struct {
    PyObject_HEAD
    sbus_message_t *msg;      /* owned */
    PyObject *receiver;       /* ReceiverObject it came from, or NULL */
    PyObject *props;          /* application properties dict (lazy) */
    PyObject *body_ref;       /* the bytes object msg's body section refers
                                 to (sbus_message_set_body_ref): released
                                 only after msg is freed, never by tp_clear */
} MessageObject;

typedef struct {
    PyObject_HEAD
    sbus_batch_t *b;          /* owned */
} BatchObject;

extern PyTypeObject SbpyConn_Type;
extern PyTypeObject SbpySender_Type;
extern PyTypeObject SbpyReceiver_Type;
extern PyTypeObject SbpyMessage_Type;
extern PyTypeObject SbpyBatch_Type;

/* module.c */
/* Builds the exception for an engine error (via the registered factory).
 * New reference, or NULL with an exception set. */
PyObject *sbpy_make_error(int op, int code, const char *condition,
                          const char *description, int retriable, int fatal);
/* Raises the exception for a synchronous engine failure; returns NULL. */
PyObject *sbpy_raise(int op, int code);
/* Python value -> sbus value. Pointers inside borrow from `o`, or for a
 * list, tuple or dict (sent as an AMQP list / map, SBUS_VAL_AMQP) from
 * *w, which the caller frees with sbus_amqp_writer_free after use (NULL
 * otherwise). 0 / -1. */
int sbpy_to_value(PyObject *o, sbus_value_t *v, sbus_amqp_writer_t **w);
/* Encodes any supported Python value (lists and dicts included) as one
 * AMQP value: *p[*n] borrowed from *w (caller frees *w). 0 / -1. */
int sbpy_encode_value(PyObject *o, sbus_amqp_writer_t **w, const void **p,
                      size_t *n);
/* sbus value -> new Python object. SBUS_VAL_AMQP: lists and arrays become
 * list, maps dict (list / dict keys tuple / frozenset), char a str,
 * decimals decimal.Decimal, described values (descriptor, value). */
PyObject *sbpy_from_value(const sbus_value_t *v);
/* One AMQP-encoded value p[n] -> new Python object, as above. */
PyObject *sbpy_from_encoded(const void *p, size_t n);
/* Monotonic and wall clocks in ms. */
int64_t sbpy_mono_ms(void);
int64_t sbpy_unix_ms(void);
/* Reads a list of ints (or one int) into a malloc'ed array. */
int sbpy_int64_array(PyObject *o, int64_t **out, size_t *n);

/* connection.c */
/* Starts an operation: a new Future registered under ctx. New ref. */
PyObject *sbpy_op_begin(ConnObject *c, PyObject *ctx);
/* Finishes starting it: rc < 0 forgets the Future and raises; otherwise
 * pumps the connection. Returns the Future (stolen) or NULL. */
PyObject *sbpy_op_end(ConnObject *c, PyObject *fut, int op, int rc);
/* Starts an engine operation on `obj` that takes sequence numbers: reads
 * `seqs` (an int or a sequence of ints), then start(obj, seqs, n, token)
 * between sbpy_op_begin and sbpy_op_end. Returns the Future or NULL. */
typedef int (*sbpy_seqs_start_fn)(void *obj, const int64_t *seqs, size_t n,
                                  void *token);
PyObject *sbpy_op_seqs(ConnObject *c, PyObject *ctx, int op, PyObject *seqs,
                       sbpy_seqs_start_fn start, void *obj);
/* Runs the engine: tick, drain events, flush output, arm the timer. */
void sbpy_conn_pump(ConnObject *c);
/* Forgets the automatic renewals registered for receiver r. */
void sbpy_conn_forget_renewals(ConnObject *c, PyObject *receiver);
/* Registers / removes an automatic renewal entry. */
int sbpy_conn_add_renewal(ConnObject *c, void *key, PyObject *receiver,
                          PyObject *msg, PyObject *cb);
void sbpy_conn_del_renewal(ConnObject *c, void *key);

/* receiver.c */
/* Starts settling m on receiver r (the message's own). Future or NULL. */
PyObject *sbpy_receiver_settle(ReceiverObject *r, MessageObject *m,
                               long outcome, const char *reason,
                               const char *desc);
/* An optional str argument: None gives NULL. 0, or -1 with TypeError. */
int sbpy_opt_utf8(PyObject *o, const char **out);

/* future.c */
/* The installed operation Future class (install_future), or NULL. */
extern PyTypeObject *sbpy_opfut_type;
/* install_future(cls) -> bool. */
PyObject *sbpy_install_future(PyObject *mod, PyObject *cls);
/* Records the Connection in an operation Future (for its cancel()). */
void sbpy_opfut_set_conn(PyObject *fut, PyObject *conn);
/* Completes an instance of sbpy_opfut_type with a result (or exception)
 * and moves its done callbacks into *batch, the loop's open batch (a new
 * one is made and scheduled with loop.call_soon when *batch is NULL or
 * has started running). 0, or -1 with an exception set (asyncio's
 * set_result refused: the Future was done or cancelled). */
int sbpy_opfut_complete(PyObject *fut, PyObject *value, int is_error,
                        ConnObject *conn, PyObject **batch);
/* Around a batch of done callbacks of conn's Futures (future.c): operations
 * started by the callbacks are pumped as one (see pump_after_op). */
void sbpy_conn_callbacks_begin(ConnObject *c);
void sbpy_conn_callbacks_end(ConnObject *c);

/* message.c */
/* Wraps an engine message (transfers) in an instance of `type`. */
PyObject *sbpy_message_wrap(PyTypeObject *type, sbus_message_t *m,
                            PyObject *receiver);
/* Writes a cached application-properties dict back into the message. */
int sbpy_message_sync(MessageObject *m);
/* Frees the pooled engine messages and stops pooling (module teardown). */
void sbpy_message_pool_free(void);

#endif /* SBUSPY_H */
