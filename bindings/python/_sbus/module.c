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

/* module.name, imported on first use and kept in *slot. Borrowed. */
static PyObject *imported(PyObject **slot, const char *module,
                          const char *name)
{
    if (!*slot) {
        PyObject *mod = PyImport_ImportModule(module);
        if (!mod)
            return NULL;
        *slot = PyObject_GetAttrString(mod, name);
        Py_DECREF(mod);
    }
    return *slot;
}

static PyObject *get_uuid_type(void)
{
    return imported(&uuid_type, "uuid", "UUID");
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

/* A scalar Python value -> sbus value (pointers borrowed from o). */
static int scalar_to_value(PyObject *o, sbus_value_t *v)
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
                 "int, float, str, bytes, datetime, UUID, Decimal, or a list "
                 "or dict of them)",
                 Py_TYPE(o)->tp_name);
    return -1;
}

static PyObject *decimal_type; /* decimal.Decimal, imported when needed */

static PyObject *get_decimal_type(void)
{
    return imported(&decimal_type, "decimal", "Decimal");
}

/* A decimal.Decimal as AMQP decimal128 (IEEE 754-2008, binary integer
 * significand: with at most 34 digits the coefficient always fits the 113
 * bits after the sign and the 14-bit exponent biased by 6176). */
static int write_decimal(sbus_amqp_writer_t *w, PyObject *d)
{
    PyObject *t = PyObject_CallMethod(d, "as_tuple", NULL);
    if (!t)
        return -1;
    int rc = -1;
    uint8_t out[16];
    unsigned __int128 c = 0;
    uint64_t hi = 0;
    PyObject *digits = PyTuple_GetItem(t, 1), *exp = PyTuple_GetItem(t, 2);
    long sign = PyLong_AsLong(PyTuple_GetItem(t, 0));
    if (!digits || !exp || (sign == -1 && PyErr_Occurred()))
        goto out;
    hi = sign ? (uint64_t)1 << 63 : 0;
    if (PyUnicode_Check(exp)) { /* 'F' infinity, 'n' NaN, 'N' sNaN */
        const char *e = PyUnicode_AsUTF8(exp);
        if (!e)
            goto out;
        hi |= (uint64_t)(e[0] == 'F' ? 0x78 : e[0] == 'n' ? 0x7C : 0x7E) << 56;
    } else {
        long e = PyLong_AsLong(exp);
        Py_ssize_t n = PyTuple_Size(digits);
        if ((e == -1 && PyErr_Occurred()) || n < 0)
            goto out;
        if (n > 34 || e < -6176 || e > 6111) {
            PyErr_Format(PyExc_ValueError,
                         "%R does not fit an AMQP decimal128 (at most 34 "
                         "digits, exponent -6176..6111)", d);
            goto out;
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            long dg = PyLong_AsLong(PyTuple_GET_ITEM(digits, i));
            if (dg == -1 && PyErr_Occurred())
                goto out;
            c = c * 10 + (unsigned)dg;
        }
        hi |= (uint64_t)(e + 6176) << 49 | (uint64_t)(c >> 64);
    }
    uint64_t lo = (uint64_t)c;
    for (int i = 0; i < 8; i++) {
        out[i] = (uint8_t)(hi >> (56 - 8 * i));
        out[8 + i] = (uint8_t)(lo >> (56 - 8 * i));
    }
    sbus_value_t v;
    memset(&v, 0, sizeof v);
    v.type = SBUS_VAL_BINARY;
    v.u.s.ptr = (const char *)out;
    v.u.s.len = sizeof out;
    int wr = sbus_amqp_write(w, SBUS_AMQP_DECIMAL128, &v);
    if (wr < 0)
        PyErr_Format(PyExc_ValueError, "cannot encode %R: %s", d,
                     sbus_strerror(wr));
    else
        rc = 0;
out:
    Py_DECREF(t);
    return rc;
}

/* 1 if o is a decimal.Decimal, 0 if not, -1 on error. */
static int is_decimal(PyObject *o)
{
    PyObject *dt = get_decimal_type();
    return dt ? PyObject_IsInstance(o, dt) : -1;
}

/* Writes o into w: a list or tuple as an AMQP list, a dict as a map (what
 * azure-servicebus 7.8.2 sends for them), a Decimal as decimal128, anything
 * else as a scalar. */
static int write_value(sbus_amqp_writer_t *w, PyObject *o, int depth)
{
    int rc;
    if (depth > 32) {
        PyErr_SetString(PyExc_ValueError, "value nested too deeply");
        return -1;
    }
    if (PyList_Check(o) || PyTuple_Check(o)) {
        PyObject *seq = PySequence_Fast(o, "a list");
        if (!seq)
            return -1;
        rc = sbus_amqp_begin(w, SBUS_AMQP_LIST);
        for (Py_ssize_t i = 0; rc >= 0 && i < PySequence_Fast_GET_SIZE(seq);
             i++)
            if (write_value(w, PySequence_Fast_GET_ITEM(seq, i), depth + 1) <
                0) {
                Py_DECREF(seq);
                return -1;
            }
        Py_DECREF(seq);
        if (rc >= 0)
            rc = sbus_amqp_end(w);
    } else if (PyDict_Check(o)) {
        PyObject *k, *val;
        Py_ssize_t pos = 0;
        rc = sbus_amqp_begin(w, SBUS_AMQP_MAP);
        while (rc >= 0 && PyDict_Next(o, &pos, &k, &val))
            if (write_value(w, k, depth + 1) < 0 ||
                write_value(w, val, depth + 1) < 0)
                return -1;
        if (rc >= 0)
            rc = sbus_amqp_end(w);
    } else {
        int dec = PyLong_Check(o) || PyUnicode_Check(o) ? 0 : is_decimal(o);
        if (dec < 0)
            return -1;
        if (dec)
            return write_decimal(w, o);
        sbus_value_t v;
        if (scalar_to_value(o, &v) < 0)
            return -1;
        rc = sbus_amqp_write_value(w, &v);
    }
    if (rc < 0) {
        PyErr_Format(PyExc_ValueError, "cannot encode %.100s: %s",
                     Py_TYPE(o)->tp_name, sbus_strerror(rc));
        return -1;
    }
    return 0;
}

int sbpy_encode_value(PyObject *o, sbus_amqp_writer_t **w, const void **p,
                      size_t *n)
{
    int rc = sbus_amqp_writer_new(w);
    if (rc < 0) {
        *w = NULL;
        PyErr_NoMemory();
        return -1;
    }
    if (write_value(*w, o, 0) < 0)
        goto fail;
    rc = sbus_amqp_writer_result(*w, p, n);
    if (rc < 0) {
        PyErr_Format(PyExc_ValueError, "cannot encode %.100s: %s",
                     Py_TYPE(o)->tp_name, sbus_strerror(rc));
        goto fail;
    }
    return 0;
fail:
    sbus_amqp_writer_free(*w);
    *w = NULL;
    return -1;
}

int sbpy_to_value(PyObject *o, sbus_value_t *v, sbus_amqp_writer_t **w)
{
    *w = NULL;
    if (!PyList_Check(o) && !PyTuple_Check(o) && !PyDict_Check(o)) {
        int dec = PyLong_Check(o) || PyUnicode_Check(o) || PyBytes_Check(o) ||
                          PyFloat_Check(o) || o == Py_None || PyBool_Check(o)
                      ? 0
                      : is_decimal(o);
        if (dec < 0)
            return -1;
        if (!dec)
            return scalar_to_value(o, v);
    }
    const void *p;
    size_t n;
    if (sbpy_encode_value(o, w, &p, &n) < 0)
        return -1;
    memset(v, 0, sizeof *v);
    v->type = SBUS_VAL_AMQP;
    v->u.s.ptr = p;
    v->u.s.len = n;
    return 0;
}

static PyObject *from_item(const sbus_amqp_item_t *it, int depth);

/* A map key Python can hash: lists become tuples and dicts frozensets of
 * their (key, value) items, recursively. Steals o. */
static PyObject *hashable(PyObject *o)
{
    if (!o)
        return NULL;
    if (PyList_Check(o)) {
        Py_ssize_t n = PyList_GET_SIZE(o);
        PyObject *t = PyTuple_New(n);
        for (Py_ssize_t i = 0; t && i < n; i++) {
            PyObject *e = hashable(Py_NewRef(PyList_GET_ITEM(o, i)));
            if (!e)
                Py_CLEAR(t);
            else
                PyTuple_SET_ITEM(t, i, e);
        }
        Py_DECREF(o);
        return t;
    }
    if (PyDict_Check(o)) {
        PyObject *items = PyList_New(0), *k, *v;
        Py_ssize_t pos = 0;
        while (items && PyDict_Next(o, &pos, &k, &v)) {
            PyObject *hv = hashable(Py_NewRef(v));
            PyObject *pair = hv ? PyTuple_Pack(2, k, hv) : NULL;
            if (!pair || PyList_Append(items, pair) < 0)
                Py_CLEAR(items);
            Py_XDECREF(pair);
            Py_XDECREF(hv);
        }
        PyObject *fs = items ? PyFrozenSet_New(items) : NULL;
        Py_XDECREF(items);
        Py_DECREF(o);
        return fs;
    }
    return o;
}

/* The children of a LIST, ARRAY, MAP or DESCRIBED item. */
static PyObject *from_compound(const sbus_amqp_item_t *it, int depth)
{
    sbus_amqp_reader_t in;
    sbus_amqp_item_t c;
    if (depth > 64) {
        PyErr_SetString(PyExc_ValueError, "AMQP value nested too deeply");
        return NULL;
    }
    if (sbus_amqp_enter(it, &in) < 0)
        goto bad;
    if (it->type == SBUS_AMQP_MAP) {
        PyObject *d = PyDict_New();
        for (size_t i = 0; d && i < it->count; i += 2) {
            if (sbus_amqp_read(&in, &c) != 1) {
                Py_DECREF(d);
                goto bad;
            }
            PyObject *k = hashable(from_item(&c, depth + 1));
            if (!k || sbus_amqp_read(&in, &c) != 1) {
                Py_XDECREF(k);
                Py_DECREF(d);
                if (!PyErr_Occurred())
                    goto bad;
                return NULL;
            }
            PyObject *val = from_item(&c, depth + 1);
            if (!val || PyDict_SetItem(d, k, val) < 0)
                Py_CLEAR(d);
            Py_DECREF(k);
            Py_XDECREF(val);
        }
        return d;
    }
    PyObject *l = PyList_New((Py_ssize_t)it->count);
    for (size_t i = 0; l && i < it->count; i++) {
        if (sbus_amqp_read(&in, &c) != 1) {
            Py_DECREF(l);
            goto bad;
        }
        PyObject *e = from_item(&c, depth + 1);
        if (!e)
            Py_CLEAR(l);
        else
            PyList_SET_ITEM(l, (Py_ssize_t)i, e);
    }
    if (l && it->type == SBUS_AMQP_DESCRIBED) {
        PyObject *t = PyList_AsTuple(l); /* (descriptor, value) */
        Py_DECREF(l);
        return t;
    }
    return l;
bad:
    PyErr_SetString(PyExc_ValueError, "malformed AMQP value");
    return NULL;
}

static PyObject *from_item(const sbus_amqp_item_t *it, int depth)
{
    switch (it->type) {
    case SBUS_AMQP_CHAR:
        if (it->v.u.u > 0x10FFFF) {
            PyErr_SetString(PyExc_ValueError, "AMQP char out of range");
            return NULL;
        }
        return PyUnicode_FromOrdinal((int)it->v.u.u);
    case SBUS_AMQP_DECIMAL32:
    case SBUS_AMQP_DECIMAL64:
    case SBUS_AMQP_DECIMAL128: {
        char text[48];
        int n = sbus_amqp_decimal_format(it->v.u.s.ptr, it->v.u.s.len, text,
                                         sizeof text);
        if (n < 0) {
            PyErr_SetString(PyExc_ValueError, "malformed AMQP decimal");
            return NULL;
        }
        PyObject *dt = get_decimal_type();
        return dt ? PyObject_CallFunction(dt, "s", text) : NULL;
    }
    case SBUS_AMQP_LIST:
    case SBUS_AMQP_ARRAY:
    case SBUS_AMQP_MAP:
    case SBUS_AMQP_DESCRIBED:
        return from_compound(it, depth);
    default:
        return sbpy_from_value(&it->v);
    }
}

PyObject *sbpy_from_encoded(const void *p, size_t n)
{
    sbus_amqp_reader_t rd;
    sbus_amqp_item_t it;
    sbus_amqp_reader_init(&rd, p, n);
    if (sbus_amqp_read(&rd, &it) != 1) {
        PyErr_SetString(PyExc_ValueError, "malformed AMQP value");
        return NULL;
    }
    return from_item(&it, 0);
}

PyObject *sbpy_from_value(const sbus_value_t *v)
{
    switch (v->type) {
    case SBUS_VAL_AMQP:
        return sbpy_from_encoded(v->u.s.ptr, v->u.s.len);
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

/* _decode_amqp(bytes): one AMQP-encoded value as received properties and
 * bodies convert it (for tests of encodings no Python sender produces). */
static PyObject *mod_decode_amqp(PyObject *m, PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *r = sbpy_from_encoded(view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    return r;
}

/* _encode_amqp(value): the AMQP encoding a property value is sent with. */
static PyObject *mod_encode_amqp(PyObject *m, PyObject *arg)
{
    sbus_amqp_writer_t *w;
    const void *p;
    size_t n;
    if (sbpy_encode_value(arg, &w, &p, &n) < 0)
        return NULL;
    PyObject *r = PyBytes_FromStringAndSize(p, (Py_ssize_t)n);
    sbus_amqp_writer_free(w);
    return r;
}

static PyMethodDef module_methods[] = {
    {"_decode_amqp", mod_decode_amqp, METH_O,
     "_decode_amqp(bytes) -> the Python value of one AMQP-encoded value."},
    {"_encode_amqp", mod_encode_amqp, METH_O,
     "_encode_amqp(value) -> the AMQP encoding of a property value."},
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
    {"install_future", sbpy_install_future, METH_O,
     "install_future(cls) -> bool: cls (a subclass of the C asyncio.Future "
     "with the slots _sbus_conn, _sbus_cb, _sbus_ctx, _sbus_more) gets C "
     "callback methods, and operations complete its instances with their "
     "done callbacks run in batches. False if asyncio.Future is not C."},
    {NULL, NULL, 0, NULL}};

static void module_free(void *m)
{
    sbpy_message_pool_free();
}

static struct PyModuleDef sbus_module = {
    PyModuleDef_HEAD_INIT, "servicebus._sbus",
    "The servicebus engine (libsbus) bound to asyncio. Private: use the "
    "servicebus package.",
    -1, module_methods, NULL, NULL, NULL, module_free};

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
