/*
 * sender.c - Sender: one engine sender (a link to a queue or topic).
 *
 * Each operation returns a Future completed by the connection's drain
 * loop. A list of messages crosses into the engine in one call
 * (sbus_sender_send with an array), so a batch costs one boundary
 * crossing, not one per message. The sender holds a strong reference to
 * its connection; dealloc frees the engine sender (its pending operations
 * complete with SBUS_ECLOSED) and does no network I/O.
 */
#include "sbuspy.h"

static int sender_alive(SenderObject *self)
{
    if (self->s && self->conn->conn)
        return 1;
    sbpy_raise(SBUS_OP_NONE, SBUS_ECLOSED);
    return 0;
}

/* Collects the engine messages of a Message or a sequence of them into a
 * PyMem array (borrowed pointers, valid while `keep` lives). */
static int collect_messages(PyObject *o, sbus_message_t ***out, size_t *n,
                            PyObject **keep)
{
    *out = NULL;
    *n = 0;
    *keep = NULL;
    if (PyObject_TypeCheck(o, &SbpyMessage_Type)) {
        *keep = PyTuple_Pack(1, o);
    } else {
        *keep = PySequence_Fast(o, "expected a Message or a list of Messages");
    }
    if (!*keep)
        return -1;
    Py_ssize_t len = PySequence_Fast_GET_SIZE(*keep);
    *out = PyMem_Malloc(sizeof(sbus_message_t *) * (size_t)(len ? len : 1));
    if (!*out) {
        PyErr_NoMemory();
        goto fail;
    }
    for (Py_ssize_t i = 0; i < len; i++) {
        PyObject *m = PySequence_Fast_GET_ITEM(*keep, i);
        if (!PyObject_TypeCheck(m, &SbpyMessage_Type)) {
            PyErr_Format(PyExc_TypeError,
                         "expected Message objects, got %.100s",
                         Py_TYPE(m)->tp_name);
            goto fail;
        }
        if (sbpy_message_sync((MessageObject *)m) < 0)
            goto fail;
        (*out)[i] = ((MessageObject *)m)->msg;
    }
    *n = (size_t)len;
    return 0;
fail:
    PyMem_Free(*out);
    *out = NULL;
    Py_CLEAR(*keep);
    return -1;
}

/* Attaches (SBUS_OP_SENDER_OPEN) or detaches (SBUS_OP_SENDER_CLOSE). */
static PyObject *open_or_close(SenderObject *self, int op)
{
    if (!sender_alive(self))
        return NULL;
    PyObject *fut = sbpy_op_begin(self->conn, (PyObject *)self);
    if (!fut)
        return NULL;
    return sbpy_op_end(self->conn, fut, op,
                       op == SBUS_OP_SENDER_OPEN ? sbus_sender_open(self->s, fut)
                                                 : sbus_sender_close(self->s, fut));
}

static PyObject *sender_open(SenderObject *self, PyObject *unused)
{
    return open_or_close(self, SBUS_OP_SENDER_OPEN);
}

static PyObject *sender_close(SenderObject *self, PyObject *unused)
{
    return open_or_close(self, SBUS_OP_SENDER_CLOSE);
}

/* Sends (SBUS_OP_SEND) or schedules for `when` (SBUS_OP_SCHEDULE) a Message
 * or a sequence of them, in one engine call. */
static PyObject *send_or_schedule(SenderObject *self, PyObject *msgs, int op,
                                  int64_t when)
{
    sbus_message_t **arr;
    size_t n;
    PyObject *keep;
    if (!sender_alive(self))
        return NULL;
    if (collect_messages(msgs, &arr, &n, &keep) < 0)
        return NULL;
    PyObject *fut = sbpy_op_begin(self->conn, (PyObject *)self);
    if (!fut) {
        PyMem_Free(arr);
        Py_DECREF(keep);
        return NULL;
    }
    int rc = op == SBUS_OP_SCHEDULE
                 ? sbus_sender_schedule(self->s, arr, n, when, fut)
                 : sbus_sender_send(self->s, arr, n, fut);
    PyMem_Free(arr);
    Py_DECREF(keep);
    return sbpy_op_end(self->conn, fut, op, rc);
}

static PyObject *sender_send(SenderObject *self, PyObject *msgs)
{
    return send_or_schedule(self, msgs, SBUS_OP_SEND, 0);
}

static PyObject *sender_send_batch(SenderObject *self, PyObject *batch)
{
    if (!sender_alive(self))
        return NULL;
    if (!PyObject_TypeCheck(batch, &SbpyBatch_Type)) {
        PyErr_SetString(PyExc_TypeError, "expected a Batch");
        return NULL;
    }
    PyObject *fut = sbpy_op_begin(self->conn, (PyObject *)self);
    if (!fut)
        return NULL;
    return sbpy_op_end(self->conn, fut, SBUS_OP_SEND,
                       sbus_sender_send_batch(
                           self->s, ((BatchObject *)batch)->b, fut));
}

static PyObject *sender_schedule(SenderObject *self, PyObject *args)
{
    PyObject *msgs;
    long long when;
    if (!PyArg_ParseTuple(args, "OL", &msgs, &when))
        return NULL;
    return send_or_schedule(self, msgs, SBUS_OP_SCHEDULE, (int64_t)when);
}

static int start_cancel_scheduled(void *s, const int64_t *seqs, size_t n,
                                  void *token)
{
    return sbus_sender_cancel_scheduled(s, seqs, n, token);
}

static PyObject *sender_cancel_scheduled(SenderObject *self, PyObject *seqs)
{
    if (!sender_alive(self))
        return NULL;
    return sbpy_op_seqs(self->conn, (PyObject *)self, SBUS_OP_CANCEL_SCHEDULED,
                        seqs, start_cancel_scheduled, self->s);
}

static PyObject *sender_free(SenderObject *self, PyObject *unused)
{
    if (self->s) {
        sbus_sender_free(self->s);
        self->s = NULL;
        sbpy_conn_pump(self->conn);
    }
    Py_RETURN_NONE;
}

static PyObject *sender_get_max_size(SenderObject *self, void *c)
{
    if (!self->s)
        return PyLong_FromLong(0);
    return PyLong_FromUnsignedLongLong(sbus_sender_max_message_size(self->s));
}

static PyObject *sender_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"connection", "entity", NULL};
    PyObject *conn;
    const char *entity;
    sbus_sender_options_t o;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!s", kwlist, &SbpyConn_Type,
                                     &conn, &entity))
        return NULL;
    ConnObject *c = (ConnObject *)conn;
    if (!c->conn)
        return sbpy_raise(SBUS_OP_NONE, SBUS_ECLOSED);
    SenderObject *self = (SenderObject *)type->tp_alloc(type, 0);
    if (!self)
        return NULL;
    self->conn = (ConnObject *)Py_NewRef(conn);
    sbus_sender_options_init(&o);
    o.entity = entity;
    int rc = sbus_sender_new(c->conn, &o, &self->s);
    if (rc < 0) {
        self->s = NULL;
        Py_DECREF(self);
        return sbpy_raise(SBUS_OP_NONE, rc);
    }
    return (PyObject *)self;
}

static int sender_traverse(SenderObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->conn);
    return 0;
}

static void sender_dealloc(SenderObject *self)
{
    PyObject_GC_UnTrack(self);
    if (self->s && self->conn && self->conn->conn)
        sbus_sender_free(self->s); /* queues a detach at most: no I/O */
    self->s = NULL;
    if (self->weakreflist)
        PyObject_ClearWeakRefs((PyObject *)self);
    Py_CLEAR(self->conn);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int sender_clear(SenderObject *self)
{
    if (self->s && self->conn && self->conn->conn)
        sbus_sender_free(self->s);
    self->s = NULL;
    Py_CLEAR(self->conn);
    return 0;
}

static PyMethodDef sender_methods[] = {
    {"open", (PyCFunction)sender_open, METH_NOARGS,
     "open() -> Future: attach the link."},
    {"close", (PyCFunction)sender_close, METH_NOARGS,
     "close() -> Future: detach the link."},
    {"send", (PyCFunction)sender_send, METH_O,
     "send(message_or_list) -> Future: one transfer (a batch for a list)."},
    {"send_batch", (PyCFunction)sender_send_batch, METH_O,
     "send_batch(batch) -> Future."},
    {"schedule", (PyCFunction)sender_schedule, METH_VARARGS,
     "schedule(messages, unix_ms) -> Future[list[int]]."},
    {"cancel_scheduled", (PyCFunction)sender_cancel_scheduled, METH_O,
     "cancel_scheduled(seqs) -> Future."},
    {"free", (PyCFunction)sender_free, METH_NOARGS,
     "free(): release the engine sender now."},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef sender_getset[] = {
    {"max_message_size", (getter)sender_get_max_size, NULL,
     "the link's max-message-size once attached (0 before)", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

PyTypeObject SbpySender_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "servicebus._sbus.Sender",
    .tp_basicsize = sizeof(SenderObject),
    .tp_dealloc = (destructor)sender_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Sender(connection, entity): an engine sender.",
    .tp_traverse = (traverseproc)sender_traverse,
    .tp_clear = (inquiry)sender_clear,
    .tp_weaklistoffset = offsetof(SenderObject, weakreflist),
    .tp_methods = sender_methods,
    .tp_getset = sender_getset,
    .tp_new = sender_new,
};
