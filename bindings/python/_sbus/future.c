/*
 * future.c - the operation Future: an asyncio.Future whose done callbacks
 * run in batches.
 *
 * Every engine operation returns a Future. asyncio's own Future schedules
 * each done callback with its own loop.call_soon when it completes: on the
 * default loop that is a Python call_soon, a Handle object and a loop
 * iteration step per callback. A receive of 300 peek-locked messages
 * completed with asyncio.gather(*(receiver.complete_message(m) ...)) adds
 * one callback per Future (gather's), and the 300 Futures complete in the
 * same engine drain: 300 Handles, 300 call_soon calls.
 *
 * Here the package's Future class (servicebus._connection._OpFuture, a
 * subclass of the C asyncio.Future with four __slots__) gets its callback
 * methods from C (sbpy_install_future): add_done_callback keeps callbacks
 * in those slots, and when the drain loop completes a Future it moves its
 * callbacks into the connection's open Batch, one callable scheduled with
 * ONE loop.call_soon for every Future completed until it runs. The Batch
 * runs each callback as a Handle would: in its context, in completion
 * order, an exception reported to loop.call_exception_handler, SystemExit
 * and KeyboardInterrupt propagated (what is left is scheduled again). A
 * callback still never runs before the loop gets control back, so the
 * asyncio contract holds: set_result never calls user code.
 *
 * Anything else that completes one of these Futures (cancel(), or someone
 * calling set_result / set_exception) schedules its callbacks one by one
 * with call_soon, exactly as asyncio.Future does. Everything else
 * (result, exception, __await__, _asyncio_future_blocking, get_loop, the
 * "exception was never retrieved" report) is asyncio.Future's own.
 *
 * The slots: _sbus_conn (the Connection, for cancel), _sbus_cb /
 * _sbus_ctx (the first callback and its context, as asyncio keeps its
 * first one apart) and _sbus_more (a list fn, ctx, fn, ctx, ... for the
 * others, or unset). They are read at their member offsets.
 */
#include "sbuspy.h"

#include <string.h>
#include <structmember.h> /* PyMemberDef, T_OBJECT_EX */

PyTypeObject *sbpy_opfut_type;
static Py_ssize_t off_conn, off_cb, off_ctx, off_more;
/* asyncio.Future's own methods (method descriptors) */
static PyObject *base_set_result, *base_set_exception, *base_cancel,
    *base_done, *base_remove_cb, *base_get_loop;
static PyObject *kw_context; /* ("context",) */
static PyObject *str_call_soon, *str_call_exception_handler;

#define SLOT(o, off) (*(PyObject **)((char *)(o) + (off)))

/* ---------------------------------------------------------------- */
/* Batch: the callbacks of Futures completed since it was scheduled  */
/* ---------------------------------------------------------------- */

typedef struct {
    PyObject *fn, *fut, *ctx;
} cb_entry;

typedef struct {
    PyObject_HEAD
    PyObject *loop;
    ConnObject *conn; /* whose Futures these are (strong) */
    cb_entry *v;
    size_t n, cap;
    int ran; /* started running: a new completion needs a new batch */
} BatchCbObject;

static PyObject *batch_call(BatchCbObject *self, PyObject *args,
                            PyObject *kw);

static int batch_traverse(BatchCbObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->loop);
    Py_VISIT(self->conn);
    for (size_t i = 0; i < self->n; i++) {
        Py_VISIT(self->v[i].fn);
        Py_VISIT(self->v[i].fut);
        Py_VISIT(self->v[i].ctx);
    }
    return 0;
}

static void batch_release(cb_entry *v, size_t from, size_t n)
{
    for (size_t i = from; i < n; i++) {
        Py_CLEAR(v[i].fn);
        Py_CLEAR(v[i].fut);
        Py_CLEAR(v[i].ctx);
    }
}

static int batch_clear(BatchCbObject *self)
{
    cb_entry *v = self->v;
    size_t n = self->n;
    self->v = NULL;
    self->n = self->cap = 0;
    batch_release(v, 0, n);
    PyMem_Free(v);
    Py_CLEAR(self->loop);
    Py_CLEAR(self->conn);
    return 0;
}

static void batch_dealloc(BatchCbObject *self)
{
    PyObject_GC_UnTrack(self);
    batch_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *batch_repr(BatchCbObject *self)
{
    return PyUnicode_FromFormat("<servicebus done callbacks of %zu Futures>",
                                self->n);
}

PyTypeObject SbpyBatchCb_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "servicebus._sbus._DoneCallbacks",
    .tp_basicsize = sizeof(BatchCbObject),
    .tp_dealloc = (destructor)batch_dealloc,
    .tp_repr = (reprfunc)batch_repr,
    .tp_call = (ternaryfunc)batch_call,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The done callbacks of operation Futures completed in one "
              "engine drain, run by one loop callback.",
    .tp_traverse = (traverseproc)batch_traverse,
    .tp_clear = (inquiry)batch_clear,
};

/* Appends (fn, fut, ctx), references stolen (also on failure). */
static int batch_push(BatchCbObject *b, PyObject *fn, PyObject *fut,
                      PyObject *ctx)
{
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
        cb_entry *v = PyMem_Realloc(b->v, cap * sizeof *v);
        if (!v) {
            Py_DECREF(fn);
            Py_DECREF(fut);
            Py_DECREF(ctx);
            PyErr_NoMemory();
            return -1;
        }
        b->v = v;
        b->cap = cap;
    }
    b->v[b->n].fn = fn;
    b->v[b->n].fut = fut;
    b->v[b->n].ctx = ctx;
    b->n++;
    return 0;
}

/* The raised exception, normalized, cleared (NULL if none). */
static PyObject *take_exception(void)
{
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
    if (!t)
        return NULL;
    PyErr_NormalizeException(&t, &v, &tb);
    if (v && tb)
        PyException_SetTraceback(v, tb);
    Py_XDECREF(t);
    Py_XDECREF(tb);
    return v;
}

/* Reports an exception raised by a callback as a Handle does. */
static void report(PyObject *loop, PyObject *fn)
{
    PyObject *exc = take_exception();
    PyObject *d = NULL, *msg = NULL, *r = NULL;
    msg = PyUnicode_FromFormat("Exception in callback %R", fn);
    d = msg ? Py_BuildValue("{sOsO}", "message", msg, "exception", exc)
            : NULL;
    if (d)
        r = PyObject_CallMethodOneArg(loop, str_call_exception_handler, d);
    if (!r)
        PyErr_WriteUnraisable(fn);
    Py_XDECREF(r);
    Py_XDECREF(d);
    Py_XDECREF(msg);
    Py_XDECREF(exc);
}

static PyObject *schedule(PyObject *loop, PyObject *cb)
{
    return PyObject_CallMethodOneArg(loop, str_call_soon, cb);
}

static PyObject *batch_call(BatchCbObject *self, PyObject *args, PyObject *kw)
{
    cb_entry *v = self->v;
    size_t n = self->n, i;
    int stop = 0;
    ConnObject *conn = (ConnObject *)Py_XNewRef(self->conn);
    self->ran = 1;
    self->v = NULL;
    self->n = self->cap = 0;
    if (conn)
        sbpy_conn_callbacks_begin(conn);
    for (i = 0; i < n && !stop; i++) {
        PyObject *r = NULL;
        if (PyContext_Enter(v[i].ctx) == 0) {
            r = PyObject_CallOneArg(v[i].fn, v[i].fut);
            if (PyContext_Exit(v[i].ctx) < 0 && r)
                Py_CLEAR(r);
        }
        if (r)
            Py_DECREF(r);
        else if (PyErr_ExceptionMatches(PyExc_SystemExit) ||
                 PyErr_ExceptionMatches(PyExc_KeyboardInterrupt))
            stop = 1; /* as a Handle: propagate, the rest runs later */
        else
            report(self->loop, v[i].fn);
        batch_release(v, i, i + 1);
    }
    if (stop && i < n) {
        PyObject *t, *e, *tb;
        PyErr_Fetch(&t, &e, &tb);
        self->v = PyMem_Malloc((n - i) * sizeof *v);
        if (self->v) {
            memcpy(self->v, v + i, (n - i) * sizeof *v);
            self->n = self->cap = n - i;
            self->ran = 0;
            PyObject *h = schedule(self->loop, (PyObject *)self);
            if (!h)
                PyErr_WriteUnraisable((PyObject *)self);
            Py_XDECREF(h);
        } else {
            batch_release(v, i, n);
        }
        PyErr_Restore(t, e, tb);
    }
    PyMem_Free(v);
    if (conn) {
        sbpy_conn_callbacks_end(conn);
        Py_DECREF(conn);
    }
    if (stop)
        return NULL;
    Py_RETURN_NONE;
}

/* ---------------------------------------------------------------- */
/* The Future's methods                                              */
/* ---------------------------------------------------------------- */

/* loop.call_soon(fn, fut, context=ctx); references borrowed. 0 / -1. */
static int call_soon_ctx(PyObject *loop, PyObject *fn, PyObject *fut,
                         PyObject *ctx)
{
    PyObject *args[4] = {loop, fn, fut, ctx};
    PyObject *r = PyObject_VectorcallMethod(str_call_soon, args, 3, kw_context);
    if (!r)
        return -1;
    Py_DECREF(r);
    return 0;
}

static PyObject *get_loop(PyObject *fut)
{
    return PyObject_CallOneArg(base_get_loop, fut);
}

/* Takes the callbacks out of fut's slots: *cb / *ctx the first (or NULL),
 * *more the list of the others (or NULL); new references. */
static void take_callbacks(PyObject *fut, PyObject **cb, PyObject **ctx,
                           PyObject **more)
{
    *cb = SLOT(fut, off_cb);
    *ctx = SLOT(fut, off_ctx);
    *more = SLOT(fut, off_more);
    SLOT(fut, off_cb) = NULL;
    SLOT(fut, off_ctx) = NULL;
    SLOT(fut, off_more) = NULL;
}

/* Schedules fut's callbacks one by one (asyncio's own way). 0 / -1. */
static int schedule_each(PyObject *fut)
{
    PyObject *cb, *ctx, *more, *loop = NULL;
    int rc = 0;
    take_callbacks(fut, &cb, &ctx, &more);
    if (!cb && !more)
        return 0;
    loop = get_loop(fut);
    if (!loop) {
        rc = -1;
        goto out;
    }
    if (cb && call_soon_ctx(loop, cb, fut, ctx) < 0)
        rc = -1;
    for (Py_ssize_t i = 0; rc == 0 && more && i + 1 < PyList_GET_SIZE(more);
         i += 2)
        if (call_soon_ctx(loop, PyList_GET_ITEM(more, i), fut,
                          PyList_GET_ITEM(more, i + 1)) < 0)
            rc = -1;
out:
    Py_XDECREF(loop);
    Py_XDECREF(cb);
    Py_XDECREF(ctx);
    Py_XDECREF(more);
    return rc;
}

static int fut_done(PyObject *fut)
{
    PyObject *r = PyObject_CallOneArg(base_done, fut);
    if (!r)
        return -1;
    int d = r == Py_True;
    Py_DECREF(r);
    return d;
}

/* add_done_callback(fn, /, *, context=None) */
static PyObject *opfut_add_done_callback(PyObject *self, PyObject *const *args,
                                         Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *ctx = NULL;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs != 1) {
        PyErr_Format(PyExc_TypeError,
                     "add_done_callback() takes exactly one positional "
                     "argument (%zd given)", nargs);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *k = PyTuple_GET_ITEM(kwnames, i);
        if (!PyUnicode_Check(k) ||
            PyUnicode_CompareWithASCIIString(k, "context") != 0) {
            PyErr_Format(PyExc_TypeError,
                         "add_done_callback() got an unexpected keyword "
                         "argument '%S'", k);
            return NULL;
        }
        ctx = args[nargs + i];
    }
    PyObject *fn = args[0];
    if (ctx == NULL || ctx == Py_None) {
        ctx = PyContext_CopyCurrent();
        if (!ctx)
            return NULL;
    } else {
        Py_INCREF(ctx);
    }
    int done = fut_done(self);
    if (done != 0) {
        int rc = -1;
        if (done > 0) {
            PyObject *loop = get_loop(self);
            if (loop)
                rc = call_soon_ctx(loop, fn, self, ctx);
            Py_XDECREF(loop);
        }
        Py_DECREF(ctx);
        if (rc < 0)
            return NULL;
        Py_RETURN_NONE;
    }
    if (!SLOT(self, off_cb) && !SLOT(self, off_more)) {
        SLOT(self, off_cb) = Py_NewRef(fn);
        SLOT(self, off_ctx) = ctx;
        Py_RETURN_NONE;
    }
    PyObject *more = SLOT(self, off_more);
    if (!more) {
        more = PyList_New(0);
        if (!more) {
            Py_DECREF(ctx);
            return NULL;
        }
        SLOT(self, off_more) = more;
    }
    int rc = PyList_Append(more, fn);
    if (rc == 0)
        rc = PyList_Append(more, ctx);
    Py_DECREF(ctx);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* remove_done_callback(fn, /) -> the number of callbacks removed */
static PyObject *opfut_remove_done_callback(PyObject *self, PyObject *fn)
{
    Py_ssize_t removed = 0;
    PyObject *cb = SLOT(self, off_cb);
    if (cb) {
        int eq = PyObject_RichCompareBool(cb, fn, Py_EQ);
        if (eq < 0)
            return NULL;
        if (eq) {
            SLOT(self, off_cb) = NULL;
            Py_CLEAR(SLOT(self, off_ctx));
            Py_DECREF(cb);
            removed++;
        }
    }
    PyObject *more = SLOT(self, off_more);
    if (more) {
        Py_INCREF(more);
        PyObject *keep = PyList_New(0);
        for (Py_ssize_t i = 0; keep && i + 1 < PyList_GET_SIZE(more); i += 2) {
            PyObject *f = PyList_GET_ITEM(more, i);
            int eq = PyObject_RichCompareBool(f, fn, Py_EQ);
            if (eq < 0 ||
                (!eq && (PyList_Append(keep, f) < 0 ||
                         PyList_Append(keep, PyList_GET_ITEM(more, i + 1)) <
                             0)))
                Py_CLEAR(keep);
            else if (eq)
                removed++;
        }
        Py_DECREF(more);
        if (!keep)
            return NULL;
        if (PyList_GET_SIZE(keep) == 0)
            Py_CLEAR(keep);
        Py_XSETREF(SLOT(self, off_more), keep);
    }
    /* callbacks added through asyncio.Future.add_done_callback itself */
    PyObject *r = PyObject_CallFunctionObjArgs(base_remove_cb, self, fn, NULL);
    if (!r)
        return NULL;
    Py_ssize_t more_removed = PyLong_AsSsize_t(r);
    Py_DECREF(r);
    if (more_removed < 0 && PyErr_Occurred())
        return NULL;
    return PyLong_FromSsize_t(removed + more_removed);
}

/* Forwards a call to asyncio.Future's method `base` with self first. */
static PyObject *forward(PyObject *base, PyObject *self, PyObject *const *args,
                         Py_ssize_t nargs, PyObject *kwnames)
{
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    PyObject *small[8], **all = small;
    if (nargs + nkw + 1 > 8) {
        all = PyMem_Malloc((size_t)(nargs + nkw + 1) * sizeof(PyObject *));
        if (!all)
            return PyErr_NoMemory();
    }
    all[0] = self;
    for (Py_ssize_t i = 0; i < nargs + nkw; i++)
        all[i + 1] = args[i];
    PyObject *r = PyObject_Vectorcall(base, all, (size_t)nargs + 1, kwnames);
    if (all != small)
        PyMem_Free(all);
    return r;
}

/* cancel(msg=None): asyncio.Future.cancel, then the callbacks are
 * scheduled and the engine operation is cancelled. */
static PyObject *opfut_cancel(PyObject *self, PyObject *const *args,
                              Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *r = forward(base_cancel, self, args, nargs, kwnames);
    if (!r || r != Py_True)
        return r;
    if (schedule_each(self) < 0) {
        Py_DECREF(r);
        return NULL;
    }
    PyObject *conn = SLOT(self, off_conn);
    if (conn) {
        PyObject *x = PyObject_CallMethod(conn, "_cancel_op", "O", self);
        if (!x) {
            Py_DECREF(r);
            return NULL;
        }
        Py_DECREF(x);
    }
    return r;
}

static PyObject *complete_outside(PyObject *base, PyObject *self,
                                  PyObject *value)
{
    PyObject *r = PyObject_CallFunctionObjArgs(base, self, value, NULL);
    if (!r)
        return NULL;
    if (schedule_each(self) < 0) {
        Py_DECREF(r);
        return NULL;
    }
    return r;
}

static PyObject *opfut_set_result(PyObject *self, PyObject *value)
{
    return complete_outside(base_set_result, self, value);
}

static PyObject *opfut_set_exception(PyObject *self, PyObject *exc)
{
    return complete_outside(base_set_exception, self, exc);
}

/* _callbacks: [(fn, context), ...] or None, as asyncio.Future's (repr) */
static PyObject *opfut_get_callbacks(PyObject *self, void *closure)
{
    PyObject *cb = SLOT(self, off_cb), *more = SLOT(self, off_more);
    if (!cb && !more)
        Py_RETURN_NONE;
    PyObject *l = PyList_New(0);
    if (l && cb) {
        PyObject *t = PyTuple_Pack(2, cb, SLOT(self, off_ctx));
        if (!t || PyList_Append(l, t) < 0)
            Py_CLEAR(l);
        Py_XDECREF(t);
    }
    for (Py_ssize_t i = 0; l && more && i + 1 < PyList_GET_SIZE(more); i += 2) {
        PyObject *t = PyTuple_Pack(2, PyList_GET_ITEM(more, i),
                                   PyList_GET_ITEM(more, i + 1));
        if (!t || PyList_Append(l, t) < 0)
            Py_CLEAR(l);
        Py_XDECREF(t);
    }
    return l;
}

static PyGetSetDef opfut_getset[] = {
    {"_callbacks", (getter)opfut_get_callbacks, NULL,
     "the pending done callbacks, as (fn, context) pairs", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyMethodDef opfut_methods[] = {
    {"add_done_callback", (PyCFunction)(void (*)(void))opfut_add_done_callback,
     METH_FASTCALL | METH_KEYWORDS,
     "Add a callback to be run when the future becomes done (with the "
     "callbacks of the other operations completed at the same time)."},
    {"remove_done_callback", (PyCFunction)opfut_remove_done_callback, METH_O,
     "Remove all instances of a callback from the \"call when done\" list; "
     "returns the number removed."},
    {"cancel", (PyCFunction)(void (*)(void))opfut_cancel,
     METH_FASTCALL | METH_KEYWORDS,
     "Cancel the future and its engine operation; returns True if it was "
     "pending."},
    {"set_result", (PyCFunction)opfut_set_result, METH_O,
     "Mark the future done and set its result."},
    {"set_exception", (PyCFunction)opfut_set_exception, METH_O,
     "Mark the future done and set an exception."},
    {NULL, NULL, 0, NULL}};

/* ---------------------------------------------------------------- */
/* Used by connection.c                                              */
/* ---------------------------------------------------------------- */

void sbpy_opfut_set_conn(PyObject *fut, PyObject *conn)
{
    Py_XSETREF(SLOT(fut, off_conn), Py_NewRef(conn));
}

int sbpy_opfut_complete(PyObject *fut, PyObject *value, int is_error,
                        ConnObject *conn, PyObject **batch)
{
    PyObject *loop = conn->loop;
    PyObject *r = PyObject_CallFunctionObjArgs(
        is_error ? base_set_exception : base_set_result, fut, value, NULL);
    if (!r)
        return -1;
    Py_DECREF(r);
    PyObject *cb, *ctx, *more;
    take_callbacks(fut, &cb, &ctx, &more);
    if (!cb && !more)
        return 0;
    BatchCbObject *b = (BatchCbObject *)*batch;
    int rc = 0;
    if (!b || b->ran) {
        b = PyObject_GC_New(BatchCbObject, &SbpyBatchCb_Type);
        if (!b) {
            rc = -1;
            goto out;
        }
        b->loop = Py_NewRef(loop);
        b->conn = (ConnObject *)Py_NewRef(conn);
        b->v = NULL;
        b->n = b->cap = 0;
        b->ran = 0;
        PyObject_GC_Track(b);
        PyObject *h = schedule(loop, (PyObject *)b);
        if (!h) {
            Py_DECREF(b);
            rc = -1;
            goto out;
        }
        Py_DECREF(h);
        Py_XSETREF(*batch, (PyObject *)b);
    }
    if (cb) {
        rc = batch_push(b, cb, Py_NewRef(fut), ctx);
        cb = ctx = NULL;
    }
    for (Py_ssize_t i = 0; rc == 0 && more && i + 1 < PyList_GET_SIZE(more);
         i += 2)
        rc = batch_push(b, Py_NewRef(PyList_GET_ITEM(more, i)), Py_NewRef(fut),
                        Py_NewRef(PyList_GET_ITEM(more, i + 1)));
out:
    Py_XDECREF(cb);
    Py_XDECREF(ctx);
    Py_XDECREF(more);
    return rc;
}

/* install_future(cls): cls is a subclass of the C asyncio.Future with the
 * slots _sbus_conn, _sbus_cb, _sbus_ctx, _sbus_more; its callback methods
 * become the ones above and the Connection completes its instances in
 * batches. Returns False (nothing changed) when asyncio.Future is not the
 * C implementation. */
static Py_ssize_t member_offset(PyTypeObject *t, const char *name)
{
    PyObject *d = PyDict_GetItemString(t->tp_dict, name);
    if (!d || !PyObject_TypeCheck(d, &PyMemberDescr_Type)) {
        PyErr_Format(PyExc_TypeError, "%s needs the slot %s", t->tp_name,
                     name);
        return -1;
    }
    PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
    if (m->type != T_OBJECT_EX) {
        PyErr_Format(PyExc_TypeError, "%s.%s is not an object slot",
                     t->tp_name, name);
        return -1;
    }
    return m->offset;
}

PyObject *sbpy_install_future(PyObject *mod, PyObject *cls)
{
    if (!PyType_Check(cls)) {
        PyErr_SetString(PyExc_TypeError, "install_future(cls): a class");
        return NULL;
    }
    PyTypeObject *t = (PyTypeObject *)cls;
    if (sbpy_opfut_type) {
        if (sbpy_opfut_type == t)
            Py_RETURN_TRUE;
        PyErr_SetString(PyExc_RuntimeError, "a Future class is installed");
        return NULL;
    }
    PyObject *am = PyImport_ImportModule("_asyncio");
    if (!am) {
        PyErr_Clear();
        Py_RETURN_FALSE;
    }
    PyObject *cf = PyObject_GetAttrString(am, "Future");
    Py_DECREF(am);
    if (!cf) {
        PyErr_Clear();
        Py_RETURN_FALSE;
    }
    if (!PyType_Check(cf) || t->tp_base != (PyTypeObject *)cf) {
        Py_DECREF(cf);
        Py_RETURN_FALSE; /* not a direct subclass of the C Future */
    }
    if ((off_conn = member_offset(t, "_sbus_conn")) < 0 ||
        (off_cb = member_offset(t, "_sbus_cb")) < 0 ||
        (off_ctx = member_offset(t, "_sbus_ctx")) < 0 ||
        (off_more = member_offset(t, "_sbus_more")) < 0)
        goto fail;
    if (!(base_set_result = PyObject_GetAttrString(cf, "set_result")) ||
        !(base_set_exception = PyObject_GetAttrString(cf, "set_exception")) ||
        !(base_cancel = PyObject_GetAttrString(cf, "cancel")) ||
        !(base_done = PyObject_GetAttrString(cf, "done")) ||
        !(base_remove_cb = PyObject_GetAttrString(cf, "remove_done_callback")) ||
        !(base_get_loop = PyObject_GetAttrString(cf, "get_loop")) ||
        !(kw_context = Py_BuildValue("(s)", "context")) ||
        !(str_call_soon = PyUnicode_InternFromString("call_soon")) ||
        !(str_call_exception_handler =
              PyUnicode_InternFromString("call_exception_handler")))
        goto fail;
    if (PyType_Ready(&SbpyBatchCb_Type) < 0)
        goto fail;
    for (PyMethodDef *m = opfut_methods; m->ml_name; m++) {
        PyObject *d = PyDescr_NewMethod(t, m);
        int rc = d ? PyObject_SetAttrString(cls, m->ml_name, d) : -1;
        Py_XDECREF(d);
        if (rc < 0)
            goto fail;
    }
    for (PyGetSetDef *g = opfut_getset; g->name; g++) {
        PyObject *d = PyDescr_NewGetSet(t, g);
        int rc = d ? PyObject_SetAttrString(cls, g->name, d) : -1;
        Py_XDECREF(d);
        if (rc < 0)
            goto fail;
    }
    Py_DECREF(cf);
    sbpy_opfut_type = (PyTypeObject *)Py_NewRef(cls);
    (void)mod;
    Py_RETURN_TRUE;
fail:
    Py_DECREF(cf);
    return NULL;
}
