/*
 * module.c - servicebus._sbus: module init and shared helpers.
 *
 * Holds: the engine constants exported to Python (operations, properties,
 * fields, outcomes, modes), the error-table accessors from which
 * servicebus.exceptions builds its classes (errname / conditions), the
 * hook through which the drain loop turns an sbus_error_t into a Python
 * exception (set_error_factory), the Python <-> sbus_value_t conversions
 * used for application properties, and small helpers (clocks, SAS token,
 * connection-string parsing).
 */
#include "sbuspy.h"

#include <time.h>

static PyObject *error_factory;  /* callable(op, code, name, condition,
                                    description, retriable, fatal) */
static PyObject *datetime_type;  /* datetime.datetime */
static PyObject *utc;            /* datetime.timezone.utc */
static PyObject *uuid_type;      /* uuid.UUID (imported lazily) */

int64_t sbpy_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t sbpy_unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

PyObject *sbpy_make_error(int op, int code, const char *condition,
                          const char *description, int retriable, int fatal)
{
    if (!error_factory) {
        return PyObject_CallFunction(PyExc_RuntimeError, "s",
                                     description ? description : "error");
    }
    return PyObject_CallFunction(error_factory, "iiszzii", op, code,
                                 sbus_errname(code), condition, description,
                                 retriable, fatal);
}

PyObject *sbpy_raise(int op, int code)
{
    PyObject *exc = sbpy_make_error(op, code, NULL, sbus_strerror(code), 0, 0);
    if (!exc)
        return NULL;
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    Py_DECREF(exc);
    return NULL;
}

static PyObject *get_uuid_type(void)
{
    if (!uuid_type) {
        PyObject *mod = PyImport_ImportModule("uuid");
        if (!mod)
            return NULL;
        uuid_type = PyObject_GetAttrString(mod, "UUID");
        Py_DECREF(mod);
    }
    return uuid_type;
}

/* datetime -> ms since the epoch; naive datetimes are taken as UTC. */
static int datetime_ms(PyObject *o, int64_t *out)
{
    PyObject *tz = PyObject_GetAttrString(o, "tzinfo");
    PyObject *aware = NULL, *ts = NULL;
    int rc = -1;
    if (!tz)
        return -1;
    if (tz == Py_None) {
        PyObject *kw = Py_BuildValue("{s:O}", "tzinfo", utc);
        PyObject *empty = PyTuple_New(0);
        PyObject *replace = PyObject_GetAttrString(o, "replace");
        if (kw && empty && replace)
            aware = PyObject_Call(replace, empty, kw);
        Py_XDECREF(kw);
        Py_XDECREF(empty);
        Py_XDECREF(replace);
    } else {
        aware = Py_NewRef(o);
    }
    Py_DECREF(tz);
    if (!aware)
        return -1;
    ts = PyObject_CallMethod(aware, "timestamp", NULL);
    if (ts) {
        double d = PyFloat_AsDouble(ts);
        if (!(d == -1.0 && PyErr_Occurred())) {
            *out = (int64_t)(d * 1000.0 + (d >= 0 ? 0.5 : -0.5));
            rc = 0;
        }
    }
    Py_XDECREF(ts);
    Py_DECREF(aware);
    return rc;
}

int sbpy_to_value(PyObject *o, sbus_value_t *v)
{
    memset(v, 0, sizeof *v);
    if (o == Py_None) {
        v->type = SBUS_VAL_NULL;
        return 0;
    }
    if (PyBool_Check(o)) {
        v->type = SBUS_VAL_BOOL;
        v->u.b = (o == Py_True);
        return 0;
    }
    if (PyLong_Check(o)) {
        int overflow = 0;
        long long x = PyLong_AsLongLongAndOverflow(o, &overflow);
        if (x == -1 && PyErr_Occurred())
            return -1;
        if (!overflow) {
            v->type = SBUS_VAL_INT;
            v->u.i = x;
            return 0;
        }
        unsigned long long u = PyLong_AsUnsignedLongLong(o);
        if (u == (unsigned long long)-1 && PyErr_Occurred())
            return -1;
        v->type = SBUS_VAL_UINT;
        v->u.u = u;
        return 0;
    }
    if (PyFloat_Check(o)) {
        v->type = SBUS_VAL_DOUBLE;
        v->u.d = PyFloat_AS_DOUBLE(o);
        return 0;
    }
    if (PyUnicode_Check(o)) {
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(o, &n);
        if (!s)
            return -1;
        v->type = SBUS_VAL_STRING;
        v->u.s.ptr = s;
        v->u.s.len = (size_t)n;
        return 0;
    }
    if (PyBytes_Check(o)) {
        v->type = SBUS_VAL_BINARY;
        v->u.s.ptr = PyBytes_AS_STRING(o);
        v->u.s.len = (size_t)PyBytes_GET_SIZE(o);
        return 0;
    }
    if (PyByteArray_Check(o)) {
        v->type = SBUS_VAL_BINARY;
        v->u.s.ptr = PyByteArray_AS_STRING(o);
        v->u.s.len = (size_t)PyByteArray_GET_SIZE(o);
        return 0;
    }
    int is_dt = PyObject_IsInstance(o, datetime_type);
    if (is_dt < 0)
        return -1;
    if (is_dt) {
        v->type = SBUS_VAL_TIMESTAMP;
        return datetime_ms(o, &v->u.i);
    }
    PyObject *ut = get_uuid_type();
    if (!ut)
        return -1;
    int is_uuid = PyObject_IsInstance(o, ut);
    if (is_uuid < 0)
        return -1;
    if (is_uuid) {
        PyObject *b = PyObject_GetAttrString(o, "bytes");
        if (!b)
            return -1;
        if (!PyBytes_Check(b) || PyBytes_GET_SIZE(b) != 16) {
            Py_DECREF(b);
            PyErr_SetString(PyExc_TypeError, "bad UUID");
            return -1;
        }
        v->type = SBUS_VAL_UUID;
        memcpy(v->u.uuid, PyBytes_AS_STRING(b), 16);
        Py_DECREF(b);
        return 0;
    }
    PyErr_Format(PyExc_TypeError,
                 "unsupported property value type %.100s (use None, bool, "
                 "int, float, str, bytes, datetime or UUID)",
                 Py_TYPE(o)->tp_name);
    return -1;
}

PyObject *sbpy_from_value(const sbus_value_t *v)
{
    switch (v->type) {
    case SBUS_VAL_NULL:
        Py_RETURN_NONE;
    case SBUS_VAL_BOOL:
        return PyBool_FromLong(v->u.b);
    case SBUS_VAL_INT:
        return PyLong_FromLongLong(v->u.i);
    case SBUS_VAL_UINT:
        return PyLong_FromUnsignedLongLong(v->u.u);
    case SBUS_VAL_DOUBLE:
        return PyFloat_FromDouble(v->u.d);
    case SBUS_VAL_STRING:
        return PyUnicode_DecodeUTF8(v->u.s.ptr, (Py_ssize_t)v->u.s.len,
                                    "surrogateescape");
    case SBUS_VAL_BINARY:
        return PyBytes_FromStringAndSize(v->u.s.ptr, (Py_ssize_t)v->u.s.len);
    case SBUS_VAL_TIMESTAMP:
        return PyObject_CallMethod(datetime_type, "fromtimestamp", "dO",
                                   (double)v->u.i / 1000.0, utc);
    case SBUS_VAL_UUID: {
        PyObject *ut = get_uuid_type();
        if (!ut)
            return NULL;
        PyObject *kw = Py_BuildValue("{s:y#}", "bytes", (const char *)v->u.uuid,
                                     (Py_ssize_t)16);
        PyObject *empty = PyTuple_New(0);
        PyObject *r = NULL;
        if (kw && empty)
            r = PyObject_Call(ut, empty, kw);
        Py_XDECREF(kw);
        Py_XDECREF(empty);
        return r;
    }
    }
    PyErr_SetString(PyExc_ValueError, "unknown value type");
    return NULL;
}

int sbpy_int64_array(PyObject *o, int64_t **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (PyLong_Check(o)) {
        *out = PyMem_Malloc(sizeof(int64_t));
        if (!*out) {
            PyErr_NoMemory();
            return -1;
        }
        (*out)[0] = PyLong_AsLongLong(o);
        if ((*out)[0] == -1 && PyErr_Occurred()) {
            PyMem_Free(*out);
            *out = NULL;
            return -1;
        }
        *n = 1;
        return 0;
    }
    PyObject *seq = PySequence_Fast(o, "expected an int or a list of ints");
    if (!seq)
        return -1;
    Py_ssize_t len = PySequence_Fast_GET_SIZE(seq);
    *out = PyMem_Malloc(sizeof(int64_t) * (size_t)(len ? len : 1));
    if (!*out) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < len; i++) {
        int64_t x = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(seq, i));
        if (x == -1 && PyErr_Occurred()) {
            PyMem_Free(*out);
            *out = NULL;
            Py_DECREF(seq);
            return -1;
        }
        (*out)[i] = x;
    }
    *n = (size_t)len;
    Py_DECREF(seq);
    return 0;
}

/* ---------------------------------------------------------------- */

static PyObject *mod_set_error_factory(PyObject *self, PyObject *f)
{
    if (!PyCallable_Check(f)) {
        PyErr_SetString(PyExc_TypeError, "factory must be callable");
        return NULL;
    }
    Py_XSETREF(error_factory, Py_NewRef(f));
    Py_RETURN_NONE;
}

static PyObject *mod_errname(PyObject *self, PyObject *arg)
{
    int code = _PyLong_AsInt(arg);
    if (code == -1 && PyErr_Occurred())
        return NULL;
    return PyUnicode_FromString(sbus_errname(code));
}

static PyObject *mod_strerror(PyObject *self, PyObject *arg)
{
    int code = _PyLong_AsInt(arg);
    if (code == -1 && PyErr_Occurred())
        return NULL;
    return PyUnicode_FromString(sbus_strerror(code));
}

/* {name: code} for every code the engine names (discovered, not copied:
 * a code whose name equals the name of an impossible code is unnamed). */
static PyObject *mod_error_codes(PyObject *self, PyObject *unused)
{
    PyObject *d = PyDict_New();
    if (!d)
        return NULL;
    const char *unknown = sbus_errname(-100000);
    for (int code = -1; code >= -200; code--) {
        const char *name = sbus_errname(code);
        if (!name || (unknown && strcmp(name, unknown) == 0))
            continue;
        PyObject *v = PyLong_FromLong(code);
        if (!v || PyDict_SetItemString(d, name, v) < 0) {
            Py_XDECREF(v);
            Py_DECREF(d);
            return NULL;
        }
        Py_DECREF(v);
    }
    return d;
}

/* [(condition, code, retriable)] from the engine's condition table. */
static PyObject *mod_conditions(PyObject *self, PyObject *unused)
{
    PyObject *l = PyList_New(0);
    if (!l)
        return NULL;
    for (size_t i = 0;; i++) {
        const char *cond = NULL;
        int code = 0, retriable = 0;
        if (sbus_condition_at(i, &cond, &code, &retriable) != 0)
            break;
        PyObject *t = Py_BuildValue("(siO)", cond, code,
                                    retriable ? Py_True : Py_False);
        if (!t || PyList_Append(l, t) < 0) {
            Py_XDECREF(t);
            Py_DECREF(l);
            return NULL;
        }
        Py_DECREF(t);
    }
    return l;
}

static PyObject *mod_condition_code(PyObject *self, PyObject *arg)
{
    const char *cond = PyUnicode_AsUTF8(arg);
    int retriable = 0, fatal = 0;
    if (!cond)
        return NULL;
    int code = sbus_condition_code(cond, &retriable, &fatal);
    return Py_BuildValue("(iOO)", code, retriable ? Py_True : Py_False,
                         fatal ? Py_True : Py_False);
}

static PyObject *mod_sas_token(PyObject *self, PyObject *args)
{
    const char *resource, *key_name, *key;
    long long expiry;
    char buf[4096];
    if (!PyArg_ParseTuple(args, "sssL", &resource, &key_name, &key, &expiry))
        return NULL;
    int n = sbus_sas_token(resource, key_name, key, (int64_t)expiry, buf,
                           sizeof buf);
    if (n < 0)
        return sbpy_raise(SBUS_OP_NONE, n);
    return PyUnicode_FromStringAndSize(buf, n);
}

/* Parses a connection string; never returns the key or signature. */
static PyObject *mod_parse_connection_string(PyObject *self, PyObject *arg)
{
    const char *s = PyUnicode_AsUTF8(arg);
    sbus_connstr_t cs;
    char msg[256] = "";
    if (!s)
        return NULL;
    memset(&cs, 0, sizeof cs);
    if (sbus_connstr_parse(s, &cs, msg, sizeof msg) != 0) {
        PyObject *exc = sbpy_make_error(SBUS_OP_NONE, SBUS_ECONNSTR, NULL,
                                        msg[0] ? msg : "bad connection string",
                                        0, 0);
        if (exc) {
            PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
            Py_DECREF(exc);
        }
        sbus_connstr_clear(&cs);
        return NULL;
    }
    PyObject *d = Py_BuildValue(
        "{s:z,s:z,s:i,s:z,s:O,s:O,s:z,s:O}", "endpoint", cs.endpoint, "host",
        cs.host, "port", cs.port, "key_name", cs.key_name, "has_key",
        cs.key ? Py_True : Py_False, "has_sas", cs.sas ? Py_True : Py_False,
        "entity_path", cs.entity_path, "use_emulator",
        cs.use_emulator ? Py_True : Py_False);
    sbus_connstr_clear(&cs);
    return d;
}

static PyObject *mod_version(PyObject *self, PyObject *unused)
{
    return PyUnicode_FromString(sbus_version());
}

static PyMethodDef module_methods[] = {
    {"set_error_factory", mod_set_error_factory, METH_O,
     "set_error_factory(f): f(op, code, name, condition, description, "
     "retriable, fatal) -> exception, used for every engine error."},
    {"errname", mod_errname, METH_O, "errname(code) -> symbolic name."},
    {"strerror", mod_strerror, METH_O, "strerror(code) -> description."},
    {"error_codes", mod_error_codes, METH_NOARGS,
     "error_codes() -> {name: code} for every code of the engine."},
    {"conditions", mod_conditions, METH_NOARGS,
     "conditions() -> [(condition, code, retriable)], the engine's table."},
    {"condition_code", mod_condition_code, METH_O,
     "condition_code(condition) -> (code, retriable, fatal)."},
    {"sas_token", mod_sas_token, METH_VARARGS,
     "sas_token(resource, key_name, key, expiry_unix_s) -> str."},
    {"parse_connection_string", mod_parse_connection_string, METH_O,
     "parse_connection_string(s) -> dict (never includes the key)."},
    {"version", mod_version, METH_NOARGS, "version() -> engine version."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef sbus_module = {
    PyModuleDef_HEAD_INIT, "servicebus._sbus",
    "The servicebus engine (libsbus) bound to asyncio. Private: use the "
    "servicebus package.",
    -1, module_methods, NULL, NULL, NULL, NULL};

#define ADD_INT(m, name, v)                                               \
    do {                                                                  \
        if (PyModule_AddIntConstant(m, name, v) < 0)                      \
            goto fail;                                                    \
    } while (0)

#define ADD_TYPE(m, t)                                                    \
    do {                                                                  \
        if (PyType_Ready(t) < 0)                                          \
            goto fail;                                                    \
        if (PyModule_AddObjectRef(m, strrchr((t)->tp_name, '.') + 1,      \
                                  (PyObject *)(t)) < 0)                   \
            goto fail;                                                    \
    } while (0)

PyMODINIT_FUNC PyInit__sbus(void)
{
    PyObject *m = PyModule_Create(&sbus_module);
    PyObject *dt = NULL;
    if (!m)
        return NULL;
    dt = PyImport_ImportModule("datetime");
    if (!dt)
        goto fail;
    if (!datetime_type) {
        datetime_type = PyObject_GetAttrString(dt, "datetime");
        PyObject *tzc = PyObject_GetAttrString(dt, "timezone");
        if (tzc) {
            utc = PyObject_GetAttrString(tzc, "utc");
            Py_DECREF(tzc);
        }
        if (!datetime_type || !utc)
            goto fail;
    }
    Py_CLEAR(dt);

    ADD_TYPE(m, &SbpyConn_Type);
    ADD_TYPE(m, &SbpySender_Type);
    ADD_TYPE(m, &SbpyReceiver_Type);
    ADD_TYPE(m, &SbpyMessage_Type);
    ADD_TYPE(m, &SbpyBatch_Type);

    /* operations (SBUS_EV_DONE ev.op), passed to the error factory */
    ADD_INT(m, "OP_NONE", SBUS_OP_NONE);
    ADD_INT(m, "OP_CONN_OPEN", SBUS_OP_CONN_OPEN);
    ADD_INT(m, "OP_CONN_CLOSE", SBUS_OP_CONN_CLOSE);
    ADD_INT(m, "OP_SENDER_OPEN", SBUS_OP_SENDER_OPEN);
    ADD_INT(m, "OP_SENDER_CLOSE", SBUS_OP_SENDER_CLOSE);
    ADD_INT(m, "OP_SEND", SBUS_OP_SEND);
    ADD_INT(m, "OP_SCHEDULE", SBUS_OP_SCHEDULE);
    ADD_INT(m, "OP_CANCEL_SCHEDULED", SBUS_OP_CANCEL_SCHEDULED);
    ADD_INT(m, "OP_RECEIVER_OPEN", SBUS_OP_RECEIVER_OPEN);
    ADD_INT(m, "OP_RECEIVER_CLOSE", SBUS_OP_RECEIVER_CLOSE);
    ADD_INT(m, "OP_RECEIVE", SBUS_OP_RECEIVE);
    ADD_INT(m, "OP_SETTLE", SBUS_OP_SETTLE);
    ADD_INT(m, "OP_RENEW_LOCK", SBUS_OP_RENEW_LOCK);
    ADD_INT(m, "OP_PEEK", SBUS_OP_PEEK);
    ADD_INT(m, "OP_RECEIVE_DEFERRED", SBUS_OP_RECEIVE_DEFERRED);
    ADD_INT(m, "OP_SESSION_GET_STATE", SBUS_OP_SESSION_GET_STATE);
    ADD_INT(m, "OP_SESSION_SET_STATE", SBUS_OP_SESSION_SET_STATE);
    ADD_INT(m, "OP_SESSION_RENEW_LOCK", SBUS_OP_SESSION_RENEW_LOCK);
    /* settlement outcomes */
    ADD_INT(m, "COMPLETE", SBUS_COMPLETE);
    ADD_INT(m, "ABANDON", SBUS_ABANDON);
    ADD_INT(m, "DEFER", SBUS_DEFER);
    ADD_INT(m, "DEAD_LETTER", SBUS_DEAD_LETTER);
    /* receive modes, sub-queues, transports */
    ADD_INT(m, "PEEK_LOCK", SBUS_PEEK_LOCK);
    ADD_INT(m, "RECEIVE_AND_DELETE", SBUS_RECEIVE_AND_DELETE);
    ADD_INT(m, "SUBQ_NONE", SBUS_SUBQ_NONE);
    ADD_INT(m, "SUBQ_DEAD_LETTER", SBUS_SUBQ_DEAD_LETTER);
    ADD_INT(m, "SUBQ_TRANSFER_DEAD_LETTER", SBUS_SUBQ_TRANSFER_DEAD_LETTER);
    ADD_INT(m, "TRANSPORT_AMQP", SBUS_TRANSPORT_AMQP);
    ADD_INT(m, "TRANSPORT_WEBSOCKET", SBUS_TRANSPORT_WEBSOCKET);
    /* settle states and body kinds */
    ADD_INT(m, "MSG_UNSETTLED", SBUS_MSG_UNSETTLED);
    ADD_INT(m, "MSG_SETTLED", SBUS_MSG_SETTLED);
    ADD_INT(m, "MSG_PRESETTLED", SBUS_MSG_PRESETTLED);
    ADD_INT(m, "MSG_PEEKED", SBUS_MSG_PEEKED);
    ADD_INT(m, "BODY_DATA", SBUS_BODY_DATA);
    ADD_INT(m, "BODY_VALUE", SBUS_BODY_VALUE);
    ADD_INT(m, "BODY_SEQUENCE", SBUS_BODY_SEQUENCE);
    if (PyModule_AddStringConstant(m, "VERSION", SBUS_VERSION) < 0)
        goto fail;
    return m;
fail:
    Py_XDECREF(dt);
    Py_DECREF(m);
    return NULL;
}
