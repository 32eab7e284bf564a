/*
 * receiver.c - Receiver: one engine receiver (queue, subscription, their
 * sub-queues, or a session of them).
 *
 * Operations return Futures completed in the connection's drain loop. A
 * receive of n messages crosses the boundary once: the engine hands over
 * an array, the drain loop wraps each message in an instance of
 * `msg_type` (the package's ReceivedMessage) without calling Python code,
 * and properties are decoded only when read. Settlement, lock renewal and
 * automatic renewal are the engine's; this file only converts arguments.
 */
#include "sbuspy.h"

static int receiver_alive(ReceiverObject *self)
{
    if (self->r && self->conn->conn)
        return 1;
    sbpy_raise(SBUS_OP_NONE, SBUS_ECLOSED);
    return 0;
}

static MessageObject *as_message(PyObject *o)
{
    if (!PyObject_TypeCheck(o, &SbpyMessage_Type)) {
        PyErr_Format(PyExc_TypeError, "expected a received message, got %.100s",
                     Py_TYPE(o)->tp_name);
        return NULL;
    }
    return (MessageObject *)o;
}

#define BEGIN(ctx)                                                        \
    PyObject *fut = sbpy_op_begin(self->conn, (PyObject *)(ctx));         \
    if (!fut)                                                             \
        return NULL

static PyObject *receiver_open(ReceiverObject *self, PyObject *unused)
{
    if (!receiver_alive(self))
        return NULL;
    BEGIN(self);
    return sbpy_op_end(self->conn, fut, SBUS_OP_RECEIVER_OPEN,
                       sbus_receiver_open(self->r, fut));
}

static PyObject *receiver_close(ReceiverObject *self, PyObject *unused)
{
    if (!receiver_alive(self))
        return NULL;
    sbpy_conn_forget_renewals(self->conn, (PyObject *)self);
    BEGIN(self);
    return sbpy_op_end(self->conn, fut, SBUS_OP_RECEIVER_CLOSE,
                       sbus_receiver_close(self->r, fut));
}

static PyObject *receiver_receive(ReceiverObject *self, PyObject *args)
{
    unsigned int max_count;
    long long max_wait_ms;
    if (!PyArg_ParseTuple(args, "IL", &max_count, &max_wait_ms))
        return NULL;
    if (!receiver_alive(self))
        return NULL;
    BEGIN(self);
    return sbpy_op_end(self->conn, fut, SBUS_OP_RECEIVE,
                       sbus_receiver_receive(self->r, max_count,
                                             (int64_t)max_wait_ms, fut));
}

int sbpy_opt_utf8(PyObject *o, const char **out)
{
    *out = NULL;
    if (o == Py_None)
        return 0;
    if (!PyUnicode_Check(o)) {
        PyErr_Format(PyExc_TypeError, "expected str or None, got %.100s",
                     Py_TYPE(o)->tp_name);
        return -1;
    }
    *out = PyUnicode_AsUTF8(o);
    return *out ? 0 : -1;
}

PyObject *sbpy_receiver_settle(ReceiverObject *self, MessageObject *m,
                               long outcome, const char *reason,
                               const char *desc)
{
    if (!receiver_alive(self))
        return NULL;
    BEGIN(m);
    return sbpy_op_end(self->conn, fut, SBUS_OP_SETTLE,
                       sbus_receiver_settle(self->r, m->msg,
                                            (sbus_outcome_t)outcome, reason,
                                            desc, fut));
}

/* settle(message, outcome[, reason, description]) */
static PyObject *receiver_settle(ReceiverObject *self, PyObject *args)
{
    PyObject *mo;
    long outcome;
    const char *reason = NULL, *desc = NULL;
    if (!PyArg_ParseTuple(args, "Ol|zz", &mo, &outcome, &reason, &desc))
        return NULL;
    MessageObject *m = as_message(mo);
    if (!m)
        return NULL;
    return sbpy_receiver_settle(self, m, outcome, reason, desc);
}

static PyObject *receiver_renew_lock(ReceiverObject *self, PyObject *mo)
{
    MessageObject *m = as_message(mo);
    if (!m || !receiver_alive(self))
        return NULL;
    BEGIN(m);
    return sbpy_op_end(self->conn, fut, SBUS_OP_RENEW_LOCK,
                       sbus_receiver_renew_lock(self->r, m->msg, fut));
}

static PyObject *receiver_peek(ReceiverObject *self, PyObject *args)
{
    unsigned int max_count;
    long long from_seq = 0;
    if (!PyArg_ParseTuple(args, "I|L", &max_count, &from_seq))
        return NULL;
    if (!receiver_alive(self))
        return NULL;
    BEGIN(self);
    return sbpy_op_end(self->conn, fut, SBUS_OP_PEEK,
                       sbus_receiver_peek(self->r, max_count,
                                          (int64_t)from_seq, fut));
}

static int start_receive_deferred(void *r, const int64_t *seqs, size_t n,
                                  void *token)
{
    return sbus_receiver_receive_deferred(r, seqs, n, token);
}

static PyObject *receiver_receive_deferred(ReceiverObject *self,
                                           PyObject *seqs)
{
    if (!receiver_alive(self))
        return NULL;
    return sbpy_op_seqs(self->conn, (PyObject *)self, SBUS_OP_RECEIVE_DEFERRED,
                        seqs, start_receive_deferred, self->r);
}

static PyObject *receiver_get_state(ReceiverObject *self, PyObject *unused)
{
    if (!receiver_alive(self))
        return NULL;
    BEGIN(self);
    return sbpy_op_end(self->conn, fut, SBUS_OP_SESSION_GET_STATE,
                       sbus_receiver_session_get_state(self->r, fut));
}

static PyObject *receiver_set_state(ReceiverObject *self, PyObject *state)
{
    Py_buffer view;
    int have = 0;
    if (!receiver_alive(self))
        return NULL;
    if (state != Py_None) {
        if (PyObject_GetBuffer(state, &view, PyBUF_SIMPLE) < 0)
            return NULL;
        have = 1;
    }
    PyObject *fut = sbpy_op_begin(self->conn, (PyObject *)self);
    if (!fut) {
        if (have)
            PyBuffer_Release(&view);
        return NULL;
    }
    int rc = sbus_receiver_session_set_state(
        self->r, have ? view.buf : NULL, have ? (size_t)view.len : 0, fut);
    if (have)
        PyBuffer_Release(&view);
    return sbpy_op_end(self->conn, fut, SBUS_OP_SESSION_SET_STATE, rc);
}

static PyObject *receiver_renew_session_lock(ReceiverObject *self,
                                             PyObject *unused)
{
    if (!receiver_alive(self))
        return NULL;
    BEGIN(self);
    return sbpy_op_end(self->conn, fut, SBUS_OP_SESSION_RENEW_LOCK,
                       sbus_receiver_session_renew_lock(self->r, fut));
}

/* auto_renew(message, max_ms, on_failure): the engine renews on its
 * timers; a failure calls on_failure(message, exception) soon after. */
static PyObject *receiver_auto_renew(ReceiverObject *self, PyObject *args)
{
    PyObject *mo, *cb = Py_None;
    long long max_ms;
    if (!PyArg_ParseTuple(args, "OL|O", &mo, &max_ms, &cb))
        return NULL;
    MessageObject *m = as_message(mo);
    if (!m || !receiver_alive(self))
        return NULL;
    int rc = sbus_receiver_auto_renew(self->r, m->msg, (int64_t)max_ms);
    if (rc < 0)
        return sbpy_raise(SBUS_OP_RENEW_LOCK, rc);
    /* the entry keeps the message alive while the engine renews it */
    if (sbpy_conn_add_renewal(self->conn, m->msg, (PyObject *)self, mo, cb) <
        0) {
        sbus_receiver_auto_renew_stop(self->r, m->msg);
        return NULL;
    }
    sbpy_conn_pump(self->conn);
    Py_RETURN_NONE;
}

static PyObject *receiver_auto_renew_session(ReceiverObject *self,
                                             PyObject *args)
{
    PyObject *cb = Py_None;
    long long max_ms;
    if (!PyArg_ParseTuple(args, "L|O", &max_ms, &cb))
        return NULL;
    if (!receiver_alive(self))
        return NULL;
    int rc = sbus_receiver_auto_renew_session(self->r, (int64_t)max_ms);
    if (rc < 0)
        return sbpy_raise(SBUS_OP_SESSION_RENEW_LOCK, rc);
    if (sbpy_conn_add_renewal(self->conn, self->r, (PyObject *)self, NULL,
                              cb) < 0)
        return NULL;
    sbpy_conn_pump(self->conn);
    Py_RETURN_NONE;
}

static PyObject *receiver_auto_renew_stop(ReceiverObject *self, PyObject *mo)
{
    MessageObject *m = as_message(mo);
    if (!m)
        return NULL;
    sbpy_conn_del_renewal(self->conn, m->msg);
    if (!self->r || !self->conn->conn)
        Py_RETURN_FALSE;
    int rc = sbus_receiver_auto_renew_stop(self->r, m->msg);
    sbpy_conn_pump(self->conn);
    return PyBool_FromLong(rc == 0);
}

static PyObject *receiver_free(ReceiverObject *self, PyObject *unused)
{
    if (self->r) {
        sbpy_conn_forget_renewals(self->conn, (PyObject *)self);
        if (self->conn->conn)
            sbus_receiver_free(self->r);
        self->r = NULL;
        sbpy_conn_pump(self->conn);
    }
    Py_RETURN_NONE;
}

static PyObject *receiver_get_session_id(ReceiverObject *self, void *c)
{
    if (!self->r)
        Py_RETURN_NONE;
    const char *s = sbus_receiver_session_id(self->r);
    if (!s)
        Py_RETURN_NONE;
    return PyUnicode_FromString(s);
}

static PyObject *receiver_get_locked_until(ReceiverObject *self, void *c)
{
    if (!self->r)
        return PyLong_FromLong(0);
    return PyLong_FromLongLong(sbus_receiver_session_locked_until(self->r));
}

static PyObject *receiver_get_conn(ReceiverObject *self, void *c)
{
    return Py_NewRef(self->conn);
}

static PyObject *receiver_new(PyTypeObject *type, PyObject *args,
                              PyObject *kw)
{
    static char *kwlist[] = {"connection", "entity",     "subscription",
                             "sub_queue",  "mode",       "prefetch",
                             "session",    "session_id", "session_wait_ms",
                             "msg_type",   "peek_type",  NULL};
    PyObject *conn, *msg_type = Py_None, *peek_type = Py_None;
    const char *entity, *subscription = NULL, *session_id = NULL;
    int sub_queue = 0, mode = 0, session = 0;
    unsigned int prefetch = 0;
    long long wait_ms = 0;
    sbus_receiver_options_t o;
    if (!PyArg_ParseTupleAndKeywords(
            args, kw, "O!s|$ziiIpzLOO", kwlist, &SbpyConn_Type, &conn, &entity,
            &subscription, &sub_queue, &mode, &prefetch, &session, &session_id,
            &wait_ms, &msg_type, &peek_type))
        return NULL;
    ConnObject *c = (ConnObject *)conn;
    if (!c->conn)
        return sbpy_raise(SBUS_OP_NONE, SBUS_ECLOSED);
    ReceiverObject *self = (ReceiverObject *)type->tp_alloc(type, 0);
    if (!self)
        return NULL;
    self->conn = (ConnObject *)Py_NewRef(conn);
    self->msg_type = Py_NewRef(msg_type);
    self->peek_type = Py_NewRef(peek_type);
    sbus_receiver_options_init(&o);
    o.entity = entity;
    o.subscription = subscription;
    o.sub_queue = (sbus_sub_queue_t)sub_queue;
    o.mode = (sbus_receive_mode_t)mode;
    o.prefetch = prefetch;
    o.session = session;
    o.session_id = session_id;
    o.session_wait_ms = (int64_t)wait_ms;
    int rc = sbus_receiver_new(c->conn, &o, &self->r);
    if (rc < 0) {
        self->r = NULL;
        Py_DECREF(self);
        return sbpy_raise(SBUS_OP_NONE, rc);
    }
    return (PyObject *)self;
}

static int receiver_traverse(ReceiverObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->conn);
    Py_VISIT(self->msg_type);
    Py_VISIT(self->peek_type);
    return 0;
}

static int receiver_clear(ReceiverObject *self)
{
    if (self->r && self->conn && self->conn->conn)
        sbus_receiver_free(self->r);
    self->r = NULL;
    Py_CLEAR(self->msg_type);
    Py_CLEAR(self->peek_type);
    Py_CLEAR(self->conn);
    return 0;
}

static void receiver_dealloc(ReceiverObject *self)
{
    PyObject_GC_UnTrack(self);
    if (self->weakreflist)
        PyObject_ClearWeakRefs((PyObject *)self);
    receiver_clear(self); /* frees the engine receiver: no I/O */
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef receiver_methods[] = {
    {"open", (PyCFunction)receiver_open, METH_NOARGS,
     "open() -> Future[(session_id, locked_until_ms)]."},
    {"close", (PyCFunction)receiver_close, METH_NOARGS, "close() -> Future."},
    {"receive", (PyCFunction)receiver_receive, METH_VARARGS,
     "receive(max_count, max_wait_ms) -> Future[list]."},
    {"settle", (PyCFunction)receiver_settle, METH_VARARGS,
     "settle(message, outcome[, reason, description]) -> Future."},
    {"renew_lock", (PyCFunction)receiver_renew_lock, METH_O,
     "renew_lock(message) -> Future[locked_until_ms]."},
    {"peek", (PyCFunction)receiver_peek, METH_VARARGS,
     "peek(max_count[, from_seq]) -> Future[list]."},
    {"receive_deferred", (PyCFunction)receiver_receive_deferred, METH_O,
     "receive_deferred(seqs) -> Future[list]."},
    {"get_state", (PyCFunction)receiver_get_state, METH_NOARGS,
     "get_state() -> Future[bytes | None] (session receivers)."},
    {"set_state", (PyCFunction)receiver_set_state, METH_O,
     "set_state(bytes | None) -> Future."},
    {"renew_session_lock", (PyCFunction)receiver_renew_session_lock,
     METH_NOARGS, "renew_session_lock() -> Future[locked_until_ms]."},
    {"auto_renew", (PyCFunction)receiver_auto_renew, METH_VARARGS,
     "auto_renew(message, max_ms[, on_failure])."},
    {"auto_renew_session", (PyCFunction)receiver_auto_renew_session,
     METH_VARARGS, "auto_renew_session(max_ms[, on_failure])."},
    {"auto_renew_stop", (PyCFunction)receiver_auto_renew_stop, METH_O,
     "auto_renew_stop(message) -> bool."},
    {"free", (PyCFunction)receiver_free, METH_NOARGS,
     "free(): release the engine receiver now."},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef receiver_getset[] = {
    {"session_id", (getter)receiver_get_session_id, NULL,
     "the locked session's id, or None", NULL},
    {"session_locked_until", (getter)receiver_get_locked_until, NULL,
     "session lock expiry, Unix ms (0 before open)", NULL},
    {"connection", (getter)receiver_get_conn, NULL, "the Connection", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

PyTypeObject SbpyReceiver_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "servicebus._sbus.Receiver",
    .tp_basicsize = sizeof(ReceiverObject),
    .tp_dealloc = (destructor)receiver_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Receiver(connection, entity, *, subscription, sub_queue, mode, "
              "prefetch, session, session_id, session_wait_ms, msg_type, "
              "peek_type): an engine receiver.",
    .tp_traverse = (traverseproc)receiver_traverse,
    .tp_clear = (inquiry)receiver_clear,
    .tp_weaklistoffset = offsetof(ReceiverObject, weakreflist),
    .tp_methods = receiver_methods,
    .tp_getset = receiver_getset,
    .tp_new = receiver_new,
};
