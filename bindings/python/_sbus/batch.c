/*
 * batch.c - Batch: one sbus_batch_t, messages sent as one transfer.
 *
 * Size accounting is the engine's: add() copies the message in and fails
 * with the engine's "too-large" error (MessageContentTooLarge in the
 * package) when it does not fit, leaving the batch as it was.
 */
#include "sbuspy.h"

static PyObject *batch_add(BatchObject *self, PyObject *mo)
{
    if (!PyObject_TypeCheck(mo, &SbpyMessage_Type)) {
        PyErr_Format(PyExc_TypeError,
                     "BatchMessage.add expects a Message, got %.100s",
                     Py_TYPE(mo)->tp_name);
        return NULL;
    }
    if (sbpy_message_sync((MessageObject *)mo) < 0)
        return NULL;
    int rc = sbus_batch_add(self->b, ((MessageObject *)mo)->msg);
    if (rc < 0)
        return sbpy_raise(SBUS_OP_SEND, rc);
    Py_RETURN_NONE;
}

static PyObject *batch_get_size(BatchObject *self, void *c)
{
    return PyLong_FromSize_t(sbus_batch_size(self->b));
}

static PyObject *batch_get_max_size(BatchObject *self, void *c)
{
    return PyLong_FromSize_t(sbus_batch_max_size(self->b));
}

static Py_ssize_t batch_len(BatchObject *self)
{
    return (Py_ssize_t)sbus_batch_count(self->b);
}

static PyObject *batch_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    /* Subclasses pass their own arguments: take max_size_in_bytes (first
     * positional or keyword, None = the link's limit) and ignore the rest. */
    PyObject *v = NULL;
    Py_ssize_t max_size = 0;
    if (PyTuple_GET_SIZE(args) > 0)
        v = PyTuple_GET_ITEM(args, 0);
    else if (kw) {
        v = PyDict_GetItemString(kw, "max_size_in_bytes");
        if (!v)
            v = PyDict_GetItemString(kw, "max_size");
    }
    if (v && v != Py_None) {
        max_size = PyNumber_AsSsize_t(v, PyExc_OverflowError);
        if (max_size == -1 && PyErr_Occurred())
            return NULL;
    }
    if (max_size < 0) {
        PyErr_SetString(PyExc_ValueError, "max_size_in_bytes must be >= 0");
        return NULL;
    }
    BatchObject *self = (BatchObject *)type->tp_alloc(type, 0);
    if (!self)
        return NULL;
    int rc = sbus_batch_new((size_t)max_size, &self->b);
    if (rc < 0) {
        self->b = NULL;
        Py_DECREF(self);
        return sbpy_raise(SBUS_OP_NONE, rc);
    }
    return (PyObject *)self;
}

static int batch_init(PyObject *self, PyObject *args, PyObject *kw)
{
    return 0; /* subclasses take their own arguments */
}

static void batch_dealloc(BatchObject *self)
{
    if (self->b)
        sbus_batch_free(self->b);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef batch_methods[] = {
    /* add / add_message are the public BatchMessage methods, here in C:
     * they run once per message batched. */
    {"add", (PyCFunction)batch_add, METH_O,
     "add($self, message)\n--\n\n"
     "Add a message to the batch.\n\n"
     ":raises MessageContentTooLarge: (a ValueError) if it does not fit;\n"
     "    the batch is unchanged.\n"
     ":raises TypeError: if it is not a Message."},
    {"add_message", (PyCFunction)batch_add, METH_O,
     "add_message($self, message)\n--\n\n"
     "Add a message (azure-servicebus 7.x spelling of :meth:`add`)."},
    {"_add", (PyCFunction)batch_add, METH_O,
     "_add(message): copy it in; raises when it does not fit."},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef batch_getset[] = {
    {"size_in_bytes", (getter)batch_get_size, NULL,
     "The combined size of the messages in the batch, in bytes.", NULL},
    {"max_size_in_bytes", (getter)batch_get_max_size, NULL,
     "The maximum size of the batch, in bytes.", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PySequenceMethods batch_as_seq = {
    .sq_length = (lenfunc)batch_len,
};

PyTypeObject SbpyBatch_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "servicebus._sbus.Batch",
    .tp_basicsize = sizeof(BatchObject),
    .tp_dealloc = (destructor)batch_dealloc,
    .tp_as_sequence = &batch_as_seq,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Batch(max_size=0): an engine batch (base of BatchMessage).",
    .tp_methods = batch_methods,
    .tp_getset = batch_getset,
    .tp_init = batch_init,
    .tp_new = batch_new,
};
