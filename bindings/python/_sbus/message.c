/*
 * message.c - Message: one sbus_message_t, for sending and as received.
 *
 * The package's Message / ReceivedMessage / PeekedMessage classes subclass
 * this type (with empty __slots__), so a received message is one object
 * and nothing is decoded until a property is read. String properties and
 * integer fields are C getters/setters over the engine's accessors; the
 * package turns milliseconds into datetime/timedelta. Application
 * properties become a dict the first time they are read or set; a changed
 * dict is written back just before the message is sent or batched
 * (sbpy_message_sync), so `msg.application_properties["k"] = v` works.
 */
#include "sbuspy.h"

PyObject *sbpy_message_wrap(PyTypeObject *type, sbus_message_t *m,
                            PyObject *receiver)
{
    MessageObject *self = (MessageObject *)type->tp_alloc(type, 0);
    if (!self) {
        sbus_message_free(m);
        return NULL;
    }
    self->msg = m;
    self->receiver = receiver ? Py_NewRef(receiver) : NULL;
    return (PyObject *)self;
}

int sbpy_message_sync(MessageObject *self)
{
    if (!self->props)
        return 0;
    if (!PyDict_Check(self->props)) {
        PyErr_SetString(PyExc_TypeError,
                        "application_properties must be a dict");
        return -1;
    }
    /* remove what the message holds, then write the dict */
    while (sbus_message_property_count(self->msg) > 0) {
        const char *k;
        size_t kl;
        sbus_value_t v;
        char buf[256];
        if (sbus_message_property_at(self->msg, 0, &k, &kl, &v) < 0)
            break;
        char *copy = kl < sizeof buf ? buf : PyMem_Malloc(kl + 1);
        if (!copy) {
            PyErr_NoMemory();
            return -1;
        }
        memcpy(copy, k, kl);
        int rc = sbus_message_del_property(self->msg, copy, kl);
        if (copy != buf)
            PyMem_Free(copy);
        if (rc < 0)
            break;
    }
    PyObject *key, *val;
    Py_ssize_t pos = 0;
    while (PyDict_Next(self->props, &pos, &key, &val)) {
        Py_ssize_t kl;
        const char *k;
        sbus_value_t v;
        if (PyUnicode_Check(key)) {
            k = PyUnicode_AsUTF8AndSize(key, &kl);
        } else if (PyBytes_Check(key)) {
            k = PyBytes_AS_STRING(key);
            kl = PyBytes_GET_SIZE(key);
        } else {
            /* AMQP application-property keys are strings: str(key) would
             * send '<object object at 0x...>' and lose the caller's key. */
            PyErr_Format(PyExc_TypeError,
                         "application property keys must be str or bytes, "
                         "not %.100s", Py_TYPE(key)->tp_name);
            return -1;
        }
        sbus_amqp_writer_t *w;
        if (!k || sbpy_to_value(val, &v, &w) < 0)
            return -1;
        int rc = sbus_message_set_property(self->msg, k, (size_t)kl, &v);
        sbus_amqp_writer_free(w);
        if (rc < 0) {
            PyErr_Format(PyExc_ValueError,
                         "application property %R: %s", key,
                         sbus_strerror(rc));
            return -1;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- */

static PyObject *msg_get_prop(MessageObject *self, void *closure)
{
    const char *s;
    size_t n;
    if (sbus_message_get_prop(self->msg, (sbus_prop_t)(intptr_t)closure, &s,
                              &n) != 0)
        Py_RETURN_NONE;
    return PyUnicode_DecodeUTF8(s, (Py_ssize_t)n, "surrogateescape");
}

static int msg_set_prop(MessageObject *self, PyObject *v, void *closure)
{
    const char *s = NULL;
    Py_ssize_t n = 0;
    PyObject *str = NULL;
    if (v && v != Py_None) {
        if (PyUnicode_Check(v)) {
            str = Py_NewRef(v);
        } else if (PyBytes_Check(v)) {
            str = PyUnicode_FromEncodedObject(v, "utf-8", "strict");
        } else {
            str = PyObject_Str(v); /* e.g. a UUID message_id */
        }
        if (!str)
            return -1;
        s = PyUnicode_AsUTF8AndSize(str, &n);
        if (!s) {
            Py_DECREF(str);
            return -1;
        }
    }
    int rc = sbus_message_set_prop(self->msg, (sbus_prop_t)(intptr_t)closure,
                                   s, (size_t)n);
    Py_XDECREF(str);
    if (rc < 0) {
        if (rc == SBUS_EINVAL)
            PyErr_Format(PyExc_ValueError,
                         "invalid value (read-only property, or longer than "
                         "128 characters): %s",
                         sbus_strerror(rc));
        else
            sbpy_raise(SBUS_OP_NONE, rc);
        return -1;
    }
    return 0;
}

static PyObject *msg_get_field(MessageObject *self, void *closure)
{
    int64_t v;
    if (sbus_message_get_field(self->msg, (sbus_field_t)(intptr_t)closure,
                               &v) != 0)
        Py_RETURN_NONE;
    return PyLong_FromLongLong(v);
}

static int msg_set_field(MessageObject *self, PyObject *v, void *closure)
{
    sbus_field_t f = (sbus_field_t)(intptr_t)closure;
    int rc;
    if (!v || v == Py_None) {
        rc = sbus_message_clear_field(self->msg, f);
        if (rc == SBUS_ENOENT)
            rc = 0;
    } else {
        long long x = PyLong_AsLongLong(v);
        if (x == -1 && PyErr_Occurred())
            return -1;
        rc = sbus_message_set_field(self->msg, f, (int64_t)x);
    }
    if (rc < 0) {
        PyErr_Format(PyExc_ValueError, "cannot set this field: %s",
                     sbus_strerror(rc));
        return -1;
    }
    return 0;
}

static PyObject *msg_get_body(MessageObject *self, void *c)
{
    sbus_body_kind_t kind = sbus_message_body_kind(self->msg);
    if (kind == SBUS_BODY_VALUE) {
        sbus_value_t v;
        int rc = sbus_message_body_value(self->msg, &v);
        if (rc < 0) {
            PyErr_Format(PyExc_ValueError, "cannot decode the body: %s",
                         sbus_strerror(rc));
            return NULL;
        }
        return sbpy_from_value(&v);
    }
    if (kind == SBUS_BODY_SEQUENCE) {
        /* one list per amqp-sequence section (uamqp's get_data() shape) */
        size_t n = sbus_message_body_sequence_count(self->msg);
        PyObject *l = PyList_New((Py_ssize_t)n);
        for (size_t i = 0; l && i < n; i++) {
            const void *p;
            size_t len;
            PyObject *sec = NULL;
            if (sbus_message_body_sequence_at(self->msg, i, &p, &len) == 0)
                sec = sbpy_from_encoded(p, len);
            else
                PyErr_SetString(PyExc_ValueError, "cannot read the body");
            if (!sec)
                Py_CLEAR(l);
            else
                PyList_SET_ITEM(l, (Py_ssize_t)i, sec);
        }
        return l;
    }
    size_t n = sbus_message_body_count(self->msg);
    if (n == 1) {
        const void *p;
        size_t len;
        if (sbus_message_body_at(self->msg, 0, &p, &len) < 0)
            return PyBytes_FromStringAndSize("", 0);
        return PyBytes_FromStringAndSize(p, (Py_ssize_t)len);
    }
    PyObject *l = PyList_New((Py_ssize_t)n);
    if (!l)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        const void *p = "";
        size_t len = 0;
        sbus_message_body_at(self->msg, i, &p, &len);
        PyObject *b = PyBytes_FromStringAndSize(p, (Py_ssize_t)len);
        if (!b) {
            Py_DECREF(l);
            return NULL;
        }
        PyList_SET_ITEM(l, (Py_ssize_t)i, b);
    }
    return l;
}

static int body_section(MessageObject *self, PyObject *o, int first)
{
    Py_buffer view;
    PyObject *enc = NULL;
    int rc;
    if (PyBytes_CheckExact(o)) {
        /* the usual case: bytes are immutable, so the first section refers
         * to them instead of copying; body_ref keeps them alive as long as
         * the engine message (a previous one is kept too, harmlessly, until
         * the message goes: the engine may still point at it on failure) */
        if (first) {
            rc = sbus_message_set_body_ref(self->msg, PyBytes_AS_STRING(o),
                                           (size_t)PyBytes_GET_SIZE(o));
            if (rc == 0) {
                PyObject *old = self->body_ref;
                self->body_ref = Py_NewRef(o);
                Py_XDECREF(old);
            }
        } else {
            rc = sbus_message_add_body_section(self->msg, PyBytes_AS_STRING(o),
                                               (size_t)PyBytes_GET_SIZE(o));
        }
        if (rc < 0) {
            sbpy_raise(SBUS_OP_NONE, rc);
            return -1;
        }
        return 0;
    }
    if (PyUnicode_Check(o)) {
        enc = PyUnicode_AsUTF8String(o);
        if (!enc)
            return -1;
        o = enc;
    }
    if (PyObject_GetBuffer(o, &view, PyBUF_SIMPLE) < 0) {
        Py_XDECREF(enc);
        PyErr_Format(PyExc_TypeError,
                     "a message body must be str, bytes or a list of them, "
                     "not %.100s",
                     Py_TYPE(o)->tp_name);
        return -1;
    }
    rc = first ? sbus_message_set_body(self->msg, view.buf, (size_t)view.len)
               : sbus_message_add_body_section(self->msg, view.buf,
                                               (size_t)view.len);
    PyBuffer_Release(&view);
    Py_XDECREF(enc);
    if (rc < 0) {
        sbpy_raise(SBUS_OP_NONE, rc);
        return -1;
    }
    return 0;
}

static int msg_set_body(MessageObject *self, PyObject *v, void *c)
{
    if (!v) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete the body");
        return -1;
    }
    if (v == Py_None) {
        sbus_value_t nv;
        memset(&nv, 0, sizeof nv);
        nv.type = SBUS_VAL_NULL;
        int rc = sbus_message_set_body_value(self->msg, &nv);
        if (rc < 0) {
            sbpy_raise(SBUS_OP_NONE, rc);
            return -1;
        }
        return 0;
    }
    if (PyList_Check(v) || PyTuple_Check(v)) {
        Py_ssize_t n = PySequence_Fast_GET_SIZE(v);
        if (n == 0) {
            int rc = sbus_message_set_body(self->msg, "", 0);
            if (rc < 0) {
                sbpy_raise(SBUS_OP_NONE, rc);
                return -1;
            }
            return 0;
        }
        for (Py_ssize_t i = 0; i < n; i++)
            if (body_section(self, PySequence_Fast_GET_ITEM(v, i), i == 0) < 0)
                return -1;
        return 0;
    }
    return body_section(self, v, 1);
}

static PyObject *msg_get_props(MessageObject *self, void *c)
{
    if (!self->props) {
        size_t n = sbus_message_property_count(self->msg);
        PyObject *d = PyDict_New();
        if (!d)
            return NULL;
        for (size_t i = 0; i < n; i++) {
            const char *k;
            size_t kl;
            sbus_value_t v;
            if (sbus_message_property_at(self->msg, i, &k, &kl, &v) < 0)
                continue;
            PyObject *key = PyUnicode_DecodeUTF8(k, (Py_ssize_t)kl,
                                                 "surrogateescape");
            PyObject *val = key ? sbpy_from_value(&v) : NULL;
            if (!val || PyDict_SetItem(d, key, val) < 0) {
                Py_XDECREF(key);
                Py_XDECREF(val);
                Py_DECREF(d);
                return NULL;
            }
            Py_DECREF(key);
            Py_DECREF(val);
        }
        self->props = d;
    }
    return Py_NewRef(self->props);
}

static int msg_set_props(MessageObject *self, PyObject *v, void *c)
{
    PyObject *d;
    if (!v || v == Py_None) {
        d = PyDict_New();
    } else {
        d = PyDict_New();
        if (d && PyDict_Update(d, v) < 0)
            Py_CLEAR(d);
    }
    if (!d)
        return -1;
    Py_XSETREF(self->props, d);
    return 0;
}

static PyObject *msg_get_lock_token(MessageObject *self, void *c)
{
    uint8_t tok[16];
    if (sbus_message_lock_token(self->msg, tok) != 0)
        Py_RETURN_NONE;
    return PyBytes_FromStringAndSize((const char *)tok, 16);
}

static PyObject *msg_get_settle_state(MessageObject *self, void *c)
{
    return PyLong_FromLong(sbus_message_settle_state(self->msg));
}

static PyObject *msg_get_body_kind(MessageObject *self, void *c)
{
    return PyLong_FromLong(sbus_message_body_kind(self->msg));
}

static PyObject *msg_get_receiver(MessageObject *self, void *c)
{
    return Py_NewRef(self->receiver ? self->receiver : Py_None);
}

static PyObject *msg_encoded_size(MessageObject *self, PyObject *unused)
{
    if (sbpy_message_sync(self) < 0)
        return NULL;
    return PyLong_FromSize_t(sbus_message_encoded_size(self->msg));
}

/* _set_body_value(value): the body becomes one amqp-value section holding
 * value (a list or dict as an AMQP list / map). */
static PyObject *msg_set_body_value(MessageObject *self, PyObject *o)
{
    sbus_value_t v;
    sbus_amqp_writer_t *w;
    if (sbpy_to_value(o, &v, &w) < 0)
        return NULL;
    int rc = sbus_message_set_body_value(self->msg, &v);
    sbus_amqp_writer_free(w);
    if (rc < 0)
        return sbpy_raise(SBUS_OP_NONE, rc);
    Py_RETURN_NONE;
}

/* _set_body_sequence(sections): the body becomes one amqp-sequence section
 * per list in `sections` (a non-empty list of lists). */
static PyObject *msg_set_body_sequence(MessageObject *self, PyObject *o)
{
    PyObject *seq = PySequence_Fast(o, "sequence sections must be a list");
    if (!seq)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n == 0) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "a sequence body needs a section");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *sec = PySequence_Fast_GET_ITEM(seq, i);
        sbus_amqp_writer_t *w;
        const void *p;
        size_t len;
        if (!PyList_Check(sec) && !PyTuple_Check(sec)) {
            PyErr_Format(PyExc_TypeError,
                         "a sequence section must be a list, not %.100s",
                         Py_TYPE(sec)->tp_name);
            Py_DECREF(seq);
            return NULL;
        }
        if (sbpy_encode_value(sec, &w, &p, &len) < 0) {
            Py_DECREF(seq);
            return NULL;
        }
        int rc = i == 0 ? sbus_message_set_body_sequence(self->msg, p, len)
                        : sbus_message_add_body_sequence(self->msg, p, len);
        sbus_amqp_writer_free(w);
        if (rc < 0) {
            Py_DECREF(seq);
            return sbpy_raise(SBUS_OP_NONE, rc);
        }
    }
    Py_DECREF(seq);
    Py_RETURN_NONE;
}

/* _start_settle(outcome[, reason, description]): starts settling this
 * message on the receiver it came from and returns the operation's Future;
 * None when it came from no receiver. TypeError unless it is an instance of
 * that receiver's message class (a peeked message cannot be settled).
 * METH_FASTCALL: this runs once per received message. */
static PyObject *msg_start_settle(MessageObject *self, PyObject *const *args,
                                  Py_ssize_t nargs)
{
    const char *reason = NULL, *desc = NULL;
    if (nargs < 1 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError,
                        "_start_settle(outcome[, reason, description])");
        return NULL;
    }
    long outcome = PyLong_AsLong(args[0]);
    if (outcome == -1 && PyErr_Occurred())
        return NULL;
    if ((nargs > 1 && sbpy_opt_utf8(args[1], &reason) < 0) ||
        (nargs > 2 && sbpy_opt_utf8(args[2], &desc) < 0))
        return NULL;
    if (!self->receiver)
        Py_RETURN_NONE;
    ReceiverObject *r = (ReceiverObject *)self->receiver;
    if (PyType_Check(r->msg_type) &&
        !PyObject_TypeCheck((PyObject *)self, (PyTypeObject *)r->msg_type)) {
        PyErr_SetString(PyExc_TypeError,
                        "expected a ServiceBusReceivedMessage");
        return NULL;
    }
    return sbpy_receiver_settle(r, self, outcome, reason, desc);
}

/* A fresh outgoing copy (no receiver identity), of `type` or Message. */
static PyObject *msg_copy(MessageObject *self, PyObject *args)
{
    PyObject *type = (PyObject *)&SbpyMessage_Type;
    sbus_message_t *m;
    if (!PyArg_ParseTuple(args, "|O!", &PyType_Type, &type))
        return NULL;
    if (!PyType_IsSubtype((PyTypeObject *)type, &SbpyMessage_Type)) {
        PyErr_SetString(PyExc_TypeError, "not a Message type");
        return NULL;
    }
    if (sbpy_message_sync(self) < 0)
        return NULL;
    int rc = sbus_message_copy(self->msg, &m);
    if (rc < 0)
        return sbpy_raise(SBUS_OP_NONE, rc);
    return sbpy_message_wrap((PyTypeObject *)type, m, NULL);
}

/* Engine messages of dropped outgoing Messages, made new again with
 * sbus_message_reset for the next Message(...): a batch of 100 otherwise
 * allocates 100 in a row, past malloc's fast path. Received messages (and
 * any an operation still refers to) are refused by the reset and freed.
 * Emptied by sbpy_message_pool_free when the module goes. */
#define MSG_POOL_MAX 256
static sbus_message_t *msg_pool[MSG_POOL_MAX];
static int msg_pool_n;
static int msg_pool_closed;

static void release_engine_message(sbus_message_t *m)
{
    if (!m)
        return;
    if (!msg_pool_closed && msg_pool_n < MSG_POOL_MAX &&
        sbus_message_reset(m) == 0)
        msg_pool[msg_pool_n++] = m;
    else
        sbus_message_free(m);
}

void sbpy_message_pool_free(void)
{
    msg_pool_closed = 1;
    while (msg_pool_n > 0)
        sbus_message_free(msg_pool[--msg_pool_n]);
}

static PyObject *msg_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    MessageObject *self = (MessageObject *)type->tp_alloc(type, 0);
    if (!self)
        return NULL;
    if (msg_pool_n > 0) {
        self->msg = msg_pool[--msg_pool_n];
        return (PyObject *)self;
    }
    int rc = sbus_message_new(&self->msg);
    if (rc < 0) {
        self->msg = NULL;
        Py_DECREF(self);
        return sbpy_raise(SBUS_OP_NONE, rc);
    }
    return (PyObject *)self;
}

/* ---------------------------------------------------------------- */
/* Message.__init__(body=None, *, encoding="UTF-8", application_properties,
 * properties, session_id, message_id, scheduled_enqueue_time_utc,
 * time_to_live, content_type, correlation_id, subject, label,
 * partition_key, via_partition_key, to, reply_to, reply_to_session_id).
 *
 * In C because it runs once per message sent: `Message(body)` is one C
 * call with no Python frame. The body is set directly (unless a subclass
 * overrides the `body` attribute); every other keyword given and not None
 * is assigned with setattr, in the order the Python __init__ used, so the
 * package's properties (label, time_to_live, scheduled_enqueue_time_utc,
 * ...) and any subclass override apply exactly as before. */

enum {
    K_BODY, K_ENCODING, K_APPLICATION_PROPERTIES, K_PROPERTIES, K_SESSION_ID,
    K_MESSAGE_ID, K_CONTENT_TYPE, K_CORRELATION_ID, K_SUBJECT, K_LABEL,
    K_PARTITION_KEY, K_VIA_PARTITION_KEY, K_TO, K_REPLY_TO,
    K_REPLY_TO_SESSION_ID, K_SCHEDULED_ENQUEUE_TIME_UTC, K_TIME_TO_LIVE,
    K__COUNT
};

static const char *const init_kw_names[K__COUNT] = {
    "body", "encoding", "application_properties", "properties", "session_id",
    "message_id", "content_type", "correlation_id", "subject", "label",
    "partition_key", "via_partition_key", "to", "reply_to",
    "reply_to_session_id", "scheduled_enqueue_time_utc", "time_to_live"};

static PyObject *init_kw[K__COUNT]; /* interned names, made once */
static PyObject *body_descr;        /* our `body` getset descriptor */

static int init_names(void)
{
    for (int i = 0; i < K__COUNT; i++) {
        if (init_kw[i])
            continue;
        init_kw[i] = PyUnicode_InternFromString(init_kw_names[i]);
        if (!init_kw[i])
            return -1;
    }
    if (!body_descr) {
        /* the type's dict holds it for the life of the interpreter */
        body_descr = PyDict_GetItemWithError(SbpyMessage_Type.tp_dict,
                                             init_kw[K_BODY]);
        if (!body_descr) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_SystemError, "Message.body missing");
            return -1;
        }
    }
    return 0;
}

/* Sorted, comma-separated names of the keywords __init__ does not take. */
static void unexpected_keywords(PyObject *kw)
{
    PyObject *bad = PyList_New(0), *key, *val, *sep = NULL, *text = NULL;
    Py_ssize_t pos = 0;
    if (!bad)
        return;
    while (PyDict_Next(kw, &pos, &key, &val)) {
        int known = 0;
        for (int i = 0; i < K__COUNT && !known; i++)
            known = key == init_kw[i] ||
                    (PyUnicode_Check(key) &&
                     PyUnicode_Compare(key, init_kw[i]) == 0);
        if (!known && PyList_Append(bad, key) < 0)
            goto out;
    }
    if (PyList_Sort(bad) < 0 || !(sep = PyUnicode_FromString(", ")) ||
        !(text = PyUnicode_Join(sep, bad)))
        goto out;
    PyErr_Format(PyExc_TypeError, "unexpected keyword argument(s): %U", text);
out:
    Py_XDECREF(text);
    Py_XDECREF(sep);
    Py_DECREF(bad);
}

/* 1 when `enc` names UTF-8 (any case, with or without the dash). */
static int is_utf8_name(PyObject *enc, int *is_utf8)
{
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(enc, &n);
    char norm[8];
    Py_ssize_t j = 0;
    if (!s)
        return -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (s[i] == '-')
            continue;
        if (j == (Py_ssize_t)sizeof norm - 1) {
            *is_utf8 = 0;
            return 0;
        }
        char c = s[i];
        norm[j++] = (char)(c >= 'a' && c <= 'z' ? c - 'a' + 'A' : c);
    }
    norm[j] = 0;
    *is_utf8 = strcmp(norm, "UTF8") == 0;
    return 0;
}

/* Sets the body `body` (a str first encoded with `enc` unless that names
 * UTF-8; enc NULL: UTF-8) directly, or through setattr when the instance's
 * class overrides `body`. 0 / -1. */
static int init_body(PyObject *self, PyObject *body, PyObject *enc)
{
    PyObject *encoded = NULL;
    if (enc && PyUnicode_Check(body)) {
        int utf8;
        if (!PyUnicode_Check(enc)) {
            PyErr_Format(PyExc_TypeError, "encoding must be str, not %.100s",
                         Py_TYPE(enc)->tp_name);
            return -1;
        }
        if (is_utf8_name(enc, &utf8) < 0)
            return -1;
        if (!utf8) {
            encoded = PyUnicode_AsEncodedString(body, PyUnicode_AsUTF8(enc),
                                                NULL);
            if (!encoded)
                return -1;
            body = encoded;
        }
    }
    int rc;
    PyTypeObject *tp = Py_TYPE(self);
    if (tp->tp_setattro == PyObject_GenericSetAttr &&
        _PyType_Lookup(tp, init_kw[K_BODY]) == body_descr)
        rc = msg_set_body((MessageObject *)self, body, NULL);
    else
        rc = PyObject_SetAttr(self, init_kw[K_BODY], body);
    Py_XDECREF(encoded);
    return rc;
}

static int msg_init(PyObject *self, PyObject *args, PyObject *kw)
{
    PyObject *val[K__COUNT] = {NULL};
    Py_ssize_t nargs = PyTuple_GET_SIZE(args);
    if (!init_kw[K__COUNT - 1] || !body_descr) {
        if (init_names() < 0)
            return -1;
    }
    if (nargs > 1) {
        PyErr_Format(PyExc_TypeError,
                     "Message.__init__() takes from 1 to 2 positional "
                     "arguments but %zd were given",
                     nargs + 1);
        return -1;
    }
    if (nargs == 1)
        val[K_BODY] = PyTuple_GET_ITEM(args, 0);
    if (kw && PyDict_GET_SIZE(kw) > 0) {
        PyObject *key, *v;
        Py_ssize_t pos = 0;
        while (PyDict_Next(kw, &pos, &key, &v)) {
            int k = 0;
            while (k < K__COUNT && key != init_kw[k])
                k++;
            if (k == K__COUNT) { /* not interned: compare the text */
                k = 0;
                while (k < K__COUNT && !(PyUnicode_Check(key) &&
                                         PyUnicode_Compare(key, init_kw[k]) == 0))
                    k++;
                if (PyErr_Occurred())
                    return -1;
            }
            if (k == K__COUNT) {
                unexpected_keywords(kw);
                return -1;
            }
            if (k == K_BODY && nargs == 1) {
                PyErr_SetString(PyExc_TypeError,
                                "Message.__init__() got multiple values for "
                                "argument 'body'");
                return -1;
            }
            val[k] = v;
        }
    }

    if (init_body(self, val[K_BODY] ? val[K_BODY] : Py_None, val[K_ENCODING]) < 0)
        return -1;
    if (!kw)
        return 0;

    /* the rest, when given and not None: (keyword, attribute) in order */
    static const int order[][2] = {
        {K_APPLICATION_PROPERTIES, K_APPLICATION_PROPERTIES},
        {K_PROPERTIES, K_APPLICATION_PROPERTIES},
        {K_SESSION_ID, K_SESSION_ID},
        {K_MESSAGE_ID, K_MESSAGE_ID},
        {K_CONTENT_TYPE, K_CONTENT_TYPE},
        {K_CORRELATION_ID, K_CORRELATION_ID},
        {K_SUBJECT, K_SUBJECT},
        {K_LABEL, K_SUBJECT},
        {K_PARTITION_KEY, K_PARTITION_KEY},
        {K_VIA_PARTITION_KEY, K_VIA_PARTITION_KEY},
        {K_TO, K_TO},
        {K_REPLY_TO, K_REPLY_TO},
        {K_REPLY_TO_SESSION_ID, K_REPLY_TO_SESSION_ID},
        {K_SCHEDULED_ENQUEUE_TIME_UTC, K_SCHEDULED_ENQUEUE_TIME_UTC},
        {K_TIME_TO_LIVE, K_TIME_TO_LIVE},
    };
    int have_props = 0, have_subject = 0;
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) {
        int k = order[i][0], attr = order[i][1];
        PyObject *v = val[k];
        if (!v || v == Py_None)
            continue;
        /* application_properties wins over properties, subject over
         * label (the 7.x spelling over the 7.0 alias) */
        if (attr == K_APPLICATION_PROPERTIES && have_props++)
            continue;
        if (attr == K_SUBJECT && have_subject++)
            continue;
        if (PyObject_SetAttr(self, init_kw[attr], v) < 0)
            return -1;
    }
    return 0;
}

/* Calling the package's Message class (_install_vectorcall): Message(body)
 * without an argument tuple and type.__call__'s generic path - the same as
 * tp_new + tp_init (checked on every call, so a class whose __new__ or
 * __init__ was replaced later takes the generic path); anything but at
 * most one positional argument goes the generic way. */
static PyObject *msg_vectorcall(PyObject *callable, PyObject *const *args,
                                size_t nargsf, PyObject *kwnames)
{
    PyTypeObject *tp = (PyTypeObject *)callable;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (tp->tp_new == msg_new && tp->tp_init == msg_init && nargs <= 1 &&
        nkw == 0 && (body_descr || init_names() == 0)) {
        PyObject *self = msg_new(tp, NULL, NULL);
        if (self && init_body(self, nargs ? args[0] : Py_None, NULL) < 0)
            Py_CLEAR(self);
        return self;
    }
    if (PyErr_Occurred())
        return NULL;
    PyObject *t = PyTuple_New(nargs), *kw = NULL, *r = NULL;
    if (!t)
        return NULL;
    for (Py_ssize_t i = 0; i < nargs; i++)
        PyTuple_SET_ITEM(t, i, Py_NewRef(args[i]));
    if (nkw) {
        if (!(kw = PyDict_New()))
            goto out;
        for (Py_ssize_t i = 0; i < nkw; i++)
            if (PyDict_SetItem(kw, PyTuple_GET_ITEM(kwnames, i),
                               args[nargs + i]) < 0)
                goto out;
    }
    r = PyType_Type.tp_call(callable, t, kw);
out:
    Py_DECREF(t);
    Py_XDECREF(kw);
    return r;
}

/* _install_vectorcall(cls): calls of cls (a subclass of Message) take
 * msg_vectorcall. A class's tp_vectorcall is not inherited. */
static PyObject *msg_install_vectorcall(PyObject *unused, PyObject *cls)
{
    if (!PyType_Check(cls) ||
        !PyType_IsSubtype((PyTypeObject *)cls, &SbpyMessage_Type)) {
        PyErr_SetString(PyExc_TypeError, "expected a Message class");
        return NULL;
    }
    ((PyTypeObject *)cls)->tp_vectorcall = msg_vectorcall;
    Py_RETURN_NONE;
}

static int msg_traverse(MessageObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->receiver);
    Py_VISIT(self->props);
    return 0;
}

static int msg_clear(MessageObject *self)
{
    Py_CLEAR(self->receiver);
    Py_CLEAR(self->props);
    return 0;
}

static void msg_dealloc(MessageObject *self)
{
    PyObject_GC_UnTrack(self);
    msg_clear(self);
    release_engine_message(self->msg);
    self->msg = NULL;
    Py_CLEAR(self->body_ref); /* after the engine message that refers to it */
    Py_TYPE(self)->tp_free((PyObject *)self);
}

#define PROP(name, which, doc)                                            \
    {name, (getter)msg_get_prop, (setter)msg_set_prop, doc,               \
     (void *)(intptr_t)(which)}
#define PROP_RO(name, which, doc)                                         \
    {name, (getter)msg_get_prop, NULL, doc, (void *)(intptr_t)(which)}
#define FIELD(name, which, doc)                                           \
    {name, (getter)msg_get_field, (setter)msg_set_field, doc,             \
     (void *)(intptr_t)(which)}
#define FIELD_RO(name, which, doc)                                        \
    {name, (getter)msg_get_field, NULL, doc, (void *)(intptr_t)(which)}

static PyGetSetDef msg_getset[] = {
    PROP("message_id", SBUS_PROP_MESSAGE_ID, "The id to identify the message."),
    PROP("correlation_id", SBUS_PROP_CORRELATION_ID,
         "The correlation identifier."),
    PROP("content_type", SBUS_PROP_CONTENT_TYPE,
         "The content type descriptor (RFC 2045), e.g. application/json."),
    PROP("subject", SBUS_PROP_SUBJECT,
         "The application specific subject (formerly label)."),
    PROP("to", SBUS_PROP_TO, "The to address."),
    PROP("reply_to", SBUS_PROP_REPLY_TO,
         "The address of an entity to send replies to."),
    PROP("reply_to_session_id", SBUS_PROP_REPLY_TO_SESSION_ID,
         "The session identifier augmenting the reply_to address."),
    PROP("session_id", SBUS_PROP_SESSION_ID,
         "The session identifier of the message for a sessionful entity."),
    PROP("partition_key", SBUS_PROP_PARTITION_KEY,
         "The partition key for sending to a partitioned entity."),
    PROP("via_partition_key", SBUS_PROP_VIA_PARTITION_KEY,
         "The partition key for sending via a partitioned transfer queue."),
    PROP_RO("dead_letter_reason", SBUS_PROP_DEAD_LETTER_REASON,
            "Dead letter reason, for a message from a dead-letter queue."),
    PROP_RO("dead_letter_error_description",
            SBUS_PROP_DEAD_LETTER_DESCRIPTION,
            "Dead letter error description."),
    PROP_RO("dead_letter_source", SBUS_PROP_DEAD_LETTER_SOURCE,
            "The entity the message was dead-lettered on (auto-forwarded)."),
    FIELD("_ttl_ms", SBUS_FIELD_TIME_TO_LIVE, "time to live, ms"),
    FIELD("_scheduled_ms", SBUS_FIELD_SCHEDULED_ENQUEUE_TIME,
          "scheduled enqueue time, Unix ms"),
    FIELD_RO("sequence_number", SBUS_FIELD_SEQUENCE_NUMBER,
             "The unique number assigned to a message by Service Bus."),
    FIELD_RO("enqueued_sequence_number", SBUS_FIELD_ENQUEUED_SEQUENCE_NUMBER,
             "The original sequence number of an auto-forwarded message."),
    FIELD_RO("_enqueued_ms", SBUS_FIELD_ENQUEUED_TIME,
             "enqueued time, Unix ms"),
    FIELD_RO("_locked_until_ms", SBUS_FIELD_LOCKED_UNTIL,
             "locked until, Unix ms"),
    FIELD_RO("delivery_count", SBUS_FIELD_DELIVERY_COUNT,
             "Number of deliveries that have been attempted for this "
             "message."),
    FIELD_RO("_expires_ms", SBUS_FIELD_EXPIRES_AT, "expires at, Unix ms"),
    FIELD_RO("_state", SBUS_FIELD_STATE,
             "0 active, 1 deferred, 2 scheduled"),
    {"body", (getter)msg_get_body, (setter)msg_set_body,
     "The body: bytes (one data section), a list of bytes (several), a "
     "list with one list per amqp-sequence section, or the value of an "
     "amqp-value body.",
     NULL},
    {"application_properties", (getter)msg_get_props, (setter)msg_set_props,
     "The user defined properties on the message (a dict).", NULL},
    {"_lock_token_bytes", (getter)msg_get_lock_token, NULL,
     "lock token, 16 bytes RFC 4122 order, or None", NULL},
    {"_settle_state", (getter)msg_get_settle_state, NULL,
     "settlement state (MSG_*)", NULL},
    {"_body_kind", (getter)msg_get_body_kind, NULL, "BODY_*", NULL},
    {"_receiver_handle", (getter)msg_get_receiver, NULL,
     "the engine Receiver it came from, or None", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyMethodDef msg_methods[] = {
    {"_encoded_size", (PyCFunction)msg_encoded_size, METH_NOARGS,
     "size in bytes once encoded as an AMQP message"},
    {"_set_body_value", (PyCFunction)msg_set_body_value, METH_O,
     "_set_body_value(value): one amqp-value section (list/dict as AMQP "
     "list/map)"},
    {"_set_body_sequence", (PyCFunction)msg_set_body_sequence, METH_O,
     "_set_body_sequence([list, ...]): one amqp-sequence section per list"},
    {"_start_settle", (PyCFunction)(void (*)(void))msg_start_settle,
     METH_FASTCALL,
     "_start_settle(outcome[, reason, description]) -> Future, or None when "
     "the message came from no receiver"},
    {"_install_vectorcall", (PyCFunction)msg_install_vectorcall,
     METH_O | METH_STATIC,
     "_install_vectorcall(cls): Message(body) calls of cls skip the "
     "argument tuple"},
    {"_copy", (PyCFunction)msg_copy, METH_VARARGS,
     "_copy([type]) -> a new outgoing message with the same content"},
    {NULL, NULL, 0, NULL}};

PyTypeObject SbpyMessage_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "servicebus._sbus.Message",
    .tp_basicsize = sizeof(MessageObject),
    .tp_dealloc = (destructor)msg_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "An engine message (base of servicebus.Message).",
    .tp_traverse = (traverseproc)msg_traverse,
    .tp_clear = (inquiry)msg_clear,
    .tp_getset = msg_getset,
    .tp_methods = msg_methods,
    .tp_init = msg_init,
    .tp_new = msg_new,
};
