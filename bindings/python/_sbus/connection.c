/*
 * connection.c - Connection: one engine connection as an asyncio
 * BufferedProtocol.
 *
 * The event loop owns the socket. The engine asks for one with
 * SBUS_EV_CONNECT; we run loop.create_connection(lambda: self, host, port)
 * and the loop calls connection_made / get_buffer / buffer_updated /
 * eof_received / connection_lost on this object, which feed the engine.
 * Output is flushed with transport.write. One TimerHandle (loop.call_at)
 * follows the engine's next deadline. Nothing here polls, sleeps or uses a
 * thread: an idle connection costs nothing.
 *
 * conn_pump() is the ONE place events are drained: it ticks the engine,
 * pulls every event, completes Futures (skipping cancelled ones), flushes
 * output and re-arms the timer. Every entry point that calls the engine
 * ends with a pump, or (operations started after the first one of a loop
 * iteration, see pump_after_op) leaves it to the `_flush` already
 * scheduled for that iteration, or for operations started by the done
 * callbacks of our Futures, to the end of that batch of callbacks. Pumps do not nest: a pump asked for from
 * inside one (a log handler calling back, say) is folded into the running
 * one.
 *
 * Operations: sbpy_op_begin() makes a Future (the `future_type` the
 * package passes, an asyncio.Future whose cancel() calls _cancel_op here),
 * stores it in `pending` (Future -> context, the strong reference, visible
 * to the GC) and the engine gets its address as the token.
 *
 * Divided into: helpers, the drain loop, operations, protocol methods,
 * Python methods, type boilerplate.
 */
#include "sbuspy.h"

#include <string.h>

enum { TS_NONE = 0, TS_CONNECTING = 1, TS_UP = 2 };

static void flush_output(ConnObject *self);

/* Method names called once per operation, interned once (conn_new). */
static PyObject *str_cancelled, *str_set_result, *str_set_exception;

static int intern_names(void)
{
    if (str_cancelled)
        return 0;
    str_cancelled = PyUnicode_InternFromString("cancelled");
    str_set_result = PyUnicode_InternFromString("set_result");
    str_set_exception = PyUnicode_InternFromString("set_exception");
    return str_cancelled && str_set_result && str_set_exception ? 0 : -1;
}

/* Reports an exception we cannot raise (we are inside a loop callback). */
static void unraisable(ConnObject *self)
{
    if (PyErr_Occurred())
        PyErr_WriteUnraisable((PyObject *)self);
}

/* obj.name(arg), never unpacking a tuple argument. */
static PyObject *call_one(PyObject *obj, const char *name, PyObject *arg)
{
    PyObject *n = PyUnicode_FromString(name);
    if (!n)
        return NULL;
    PyObject *r = PyObject_CallMethodOneArg(obj, n, arg);
    Py_DECREF(n);
    return r;
}

static PyObject *bound(ConnObject *self, const char *name)
{
    return PyObject_GetAttrString((PyObject *)self, name);
}

static void cancel_timer(ConnObject *self)
{
    if (self->timer) {
        PyObject *t = self->timer;
        self->timer = NULL;
        PyObject *r = PyObject_CallMethod(t, "cancel", NULL);
        Py_XDECREF(r);
        Py_DECREF(t);
        unraisable(self);
    }
    self->timer_deadline = -1;
}

/* Arms the timer for `deadline` (monotonic ms; -1 = none). An armed
 * earlier timer is kept: when it fires, the pump re-arms for the rest. */
static void arm_timer(ConnObject *self, int64_t deadline)
{
    if (deadline < 0 || !self->conn) {
        cancel_timer(self);
        return;
    }
    if (self->timer && self->timer_deadline <= deadline)
        return;
    cancel_timer(self);
    PyObject *cb = bound(self, "_on_timer");
    if (!cb) {
        unraisable(self);
        return;
    }
    PyObject *h = PyObject_CallMethod(self->loop, "call_at", "dO",
                                      (double)deadline / 1000.0, cb);
    Py_DECREF(cb);
    if (!h) {
        unraisable(self);
        return;
    }
    self->timer = h;
    self->timer_deadline = deadline;
}

/* 1 when the loop is closed: nothing may be scheduled on it any more
 * (teardown after asyncio.run() returned, or at interpreter exit). */
static int loop_closed(ConnObject *self)
{
    if (!self->loop)
        return 1;
    PyObject *r = PyObject_CallMethod(self->loop, "is_closed", NULL);
    if (!r) {
        PyErr_Clear();
        return 1;
    }
    int closed = PyObject_IsTrue(r) == 1;
    Py_DECREF(r);
    return closed;
}

static void close_transport(ConnObject *self, int hard)
{
    if (self->transport && loop_closed(self)) {
        /* the transport cannot be closed through a closed loop; asyncio
         * reports it (ResourceWarning) when it is collected */
        Py_CLEAR(self->transport);
    }
    if (self->transport) {
        PyObject *t = self->transport;
        self->transport = NULL;
        if (self->transport_state == TS_UP)
            self->lost_pending++;
        PyObject *r = PyObject_CallMethod(t, hard ? "abort" : "close", NULL);
        Py_XDECREF(r);
        Py_DECREF(t);
        unraisable(self);
    }
    self->transport_state = TS_NONE;
}

static void cancel_connect(ConnObject *self)
{
    if (self->connect_task && loop_closed(self))
        Py_CLEAR(self->connect_task);
    if (self->connect_task) {
        PyObject *t = self->connect_task;
        self->connect_task = NULL;
        PyObject *r = PyObject_CallMethod(t, "cancel", NULL);
        Py_XDECREF(r);
        Py_DECREF(t);
        unraisable(self);
    }
}

/* ---------------------------------------------------------------- */
/* The drain loop                                                    */
/* ---------------------------------------------------------------- */

static PyObject *wrap_messages(ConnObject *self, PyObject *ctx,
                               const sbus_event_t *ev)
{
    PyTypeObject *type = &SbpyMessage_Type;
    PyObject *receiver = NULL;
    if (ctx && PyObject_TypeCheck(ctx, &SbpyReceiver_Type)) {
        ReceiverObject *r = (ReceiverObject *)ctx;
        receiver = ctx;
        PyObject *t = ev->op == SBUS_OP_PEEK ? r->peek_type : r->msg_type;
        if (t && PyType_Check(t))
            type = (PyTypeObject *)t;
    }
    PyObject *list = PyList_New((Py_ssize_t)ev->count);
    size_t i = 0;
    if (!list)
        goto fail;
    for (; i < ev->count; i++) {
        PyObject *m = sbpy_message_wrap(type, ev->messages[i], receiver);
        if (!m) {
            i++; /* wrap frees the message on failure */
            goto fail;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, m);
    }
    return list;
fail:
    for (; i < ev->count; i++)
        sbus_message_free(ev->messages[i]);
    Py_XDECREF(list);
    return NULL;
}

/* The value an operation's Future gets. New reference. */
static PyObject *done_result(ConnObject *self, PyObject *ctx,
                             const sbus_event_t *ev)
{
    switch (ev->op) {
    case SBUS_OP_RECEIVE:
    case SBUS_OP_PEEK:
    case SBUS_OP_RECEIVE_DEFERRED:
        return wrap_messages(self, ctx, ev);
    case SBUS_OP_SCHEDULE: {
        PyObject *l = PyList_New((Py_ssize_t)ev->count);
        if (!l)
            return NULL;
        for (size_t i = 0; i < ev->count; i++) {
            PyObject *v = PyLong_FromLongLong(ev->seqs ? ev->seqs[i] : 0);
            if (!v) {
                Py_DECREF(l);
                return NULL;
            }
            PyList_SET_ITEM(l, (Py_ssize_t)i, v);
        }
        return l;
    }
    case SBUS_OP_RENEW_LOCK:
    case SBUS_OP_SESSION_RENEW_LOCK:
        return PyLong_FromLongLong(ev->time_ms);
    case SBUS_OP_RECEIVER_OPEN:
        if (ev->data)
            return Py_BuildValue("(s#L)", (const char *)ev->data,
                                 (Py_ssize_t)ev->len, (long long)ev->time_ms);
        return Py_BuildValue("(OL)", Py_None, (long long)ev->time_ms);
    case SBUS_OP_SESSION_GET_STATE:
        if (!ev->data)
            Py_RETURN_NONE;
        return PyBytes_FromStringAndSize((const char *)ev->data,
                                         (Py_ssize_t)ev->len);
    default:
        Py_RETURN_NONE;
    }
}

static void free_event_messages(const sbus_event_t *ev)
{
    if (ev->messages)
        for (size_t i = 0; i < ev->count; i++)
            sbus_message_free(ev->messages[i]);
}

static int future_cancelled(PyObject *fut)
{
    PyObject *r = PyObject_CallMethodNoArgs(fut, str_cancelled);
    if (!r)
        return -1;
    int c = PyObject_IsTrue(r);
    Py_DECREF(r);
    return c;
}

static void on_done(ConnObject *self, const sbus_event_t *ev)
{
    PyObject *fut = (PyObject *)ev->token;
    PyObject *ctx, *value = NULL, *r = NULL;
    int is_error = ev->error != NULL;

    if (!fut) {
        free_event_messages(ev);
        return;
    }
    ctx = PyDict_GetItemWithError(self->pending, fut);
    if (!ctx) {
        /* Not ours (or already forgotten): never dereference it. */
        free_event_messages(ev);
        unraisable(self);
        return;
    }
    Py_INCREF(fut);
    Py_INCREF(ctx);
    if (PyDict_DelItem(self->pending, fut) < 0)
        unraisable(self);

    /* A settled message is no longer renewed by the engine. */
    if (!is_error && ev->op == SBUS_OP_SETTLE && ctx != Py_None &&
        PyDict_GET_SIZE(self->renewals) > 0)
        sbpy_conn_del_renewal(self, ((MessageObject *)ctx)->msg);

    if (is_error) {
        free_event_messages(ev);
        value = sbpy_make_error(ev->op, ev->error->code, ev->error->condition,
                                ev->error->description, ev->error->retriable,
                                ev->error->fatal);
    } else {
        value = done_result(self, ctx, ev);
    }
    if (!value) {
        /* Conversion failed: the Future still completes, with that error. */
        PyObject *et, *ev_, *tb;
        PyErr_Fetch(&et, &ev_, &tb);
        PyErr_NormalizeException(&et, &ev_, &tb);
        Py_XDECREF(et);
        Py_XDECREF(tb);
        value = ev_;
        is_error = 1;
        if (!value)
            goto out;
    }
    /* Completing a cancelled Future fails (InvalidStateError): that is the
     * rare case, so it is checked only then, not before every completion. */
    if (sbpy_opfut_type && Py_TYPE(fut) == sbpy_opfut_type) {
        /* its done callbacks join this drain's batch: one call_soon */
        if (sbpy_opfut_complete(fut, value, is_error, self,
                                &self->cb_batch) == 0)
            r = Py_NewRef(Py_None);
    } else {
        r = PyObject_CallMethodOneArg(
            fut, is_error ? str_set_exception : str_set_result, value);
    }
    if (r) {
        Py_DECREF(r);
    } else {
        PyObject *et, *ev_, *tb;
        PyErr_Fetch(&et, &ev_, &tb);
        if (future_cancelled(fut) == 1) {
            Py_XDECREF(et);
            Py_XDECREF(ev_);
            Py_XDECREF(tb);
        } else {
            PyErr_Restore(et, ev_, tb);
        }
        unraisable(self);
    }
out:
    Py_XDECREF(value);
    Py_DECREF(ctx);
    Py_DECREF(fut);
}

static void on_connect(ConnObject *self, const char *host, int port)
{
    cancel_connect(self);
    close_transport(self, 1);
    PyObject *factory = bound(self, "_protocol_factory");
    PyObject *coro = NULL, *task = NULL, *cb = NULL, *r = NULL;
    if (!factory)
        goto fail;
    coro = PyObject_CallMethod(self->loop, "create_connection", "Osi", factory,
                               host, port);
    if (!coro)
        goto fail;
    task = call_one(self->loop, "create_task", coro);
    if (!task)
        goto fail;
    cb = bound(self, "_connect_done");
    if (!cb)
        goto fail;
    r = call_one(task, "add_done_callback", cb);
    if (!r)
        goto fail;
    self->connect_task = Py_NewRef(task);
    self->transport_state = TS_CONNECTING;
    goto out;
fail:
    unraisable(self);
    sbus_conn_transport_down(self->conn, "could not start connecting");
    self->need_pump = 1;
out:
    Py_XDECREF(factory);
    Py_XDECREF(coro);
    Py_XDECREF(task);
    Py_XDECREF(cb);
    Py_XDECREF(r);
}

static void call_soon(ConnObject *self, PyObject *cb, PyObject *a,
                      PyObject *b)
{
    PyObject *r;
    if (b)
        r = PyObject_CallMethod(self->loop, "call_soon", "OOO", cb, a, b);
    else
        r = PyObject_CallMethod(self->loop, "call_soon", "OO", cb, a);
    if (!r)
        unraisable(self);
    Py_XDECREF(r);
}

static void on_renew_failed(ConnObject *self, const sbus_event_t *ev)
{
    void *key = ev->message ? (void *)ev->message : ev->object;
    PyObject *k = PyLong_FromVoidPtr(key);
    PyObject *entry = NULL, *exc = NULL;
    if (!k)
        goto out;
    entry = PyDict_GetItemWithError(self->renewals, k);
    if (!entry)
        goto out;
    Py_INCREF(entry);
    if (PyDict_DelItem(self->renewals, k) < 0)
        goto out;
    PyObject *cb = PyTuple_GET_ITEM(entry, 2);
    PyObject *target = PyTuple_GET_ITEM(entry, 1);
    if (target == Py_None)
        target = PyTuple_GET_ITEM(entry, 0);
    if (ev->error)
        exc = sbpy_make_error(ev->message ? SBUS_OP_RENEW_LOCK
                                          : SBUS_OP_SESSION_RENEW_LOCK,
                              ev->error->code, ev->error->condition,
                              ev->error->description, ev->error->retriable,
                              ev->error->fatal);
    else
        exc = Py_NewRef(Py_None);
    if (exc && cb != Py_None)
        call_soon(self, cb, target, exc);
out:
    unraisable(self);
    Py_XDECREF(exc);
    Py_XDECREF(entry);
    Py_XDECREF(k);
}

static int drain(ConnObject *self)
{
    sbus_event_t ev;
    int n = 0;
    while (self->conn && sbus_conn_next_event(self->conn, &ev)) {
        n++;
        if (!self->pending || !self->renewals) {
            /* torn down by the GC: nothing to complete any more */
            if (ev.type == SBUS_EV_DONE)
                free_event_messages(&ev);
            continue;
        }
        switch (ev.type) {
        case SBUS_EV_CONNECT:
            on_connect(self, ev.host, ev.port);
            break;
        case SBUS_EV_DISCONNECT:
            flush_output(self);
            close_transport(self, 0);
            break;
        case SBUS_EV_DONE:
            on_done(self, &ev);
            break;
        case SBUS_EV_TOKEN:
            if (self->token_cb && self->token_cb != Py_None) {
                PyObject *a = PyUnicode_FromString(ev.audience ? ev.audience
                                                               : "");
                if (a)
                    call_soon(self, self->token_cb, a, NULL);
                Py_XDECREF(a);
                unraisable(self);
            } else {
                sbus_conn_set_token(self->conn, ev.audience, NULL, 0,
                                    "no credential can supply tokens");
                self->need_pump = 1;
            }
            break;
        case SBUS_EV_LOG:
            if (self->log_cb && self->log_cb != Py_None && ev.text) {
                PyObject *r = PyObject_CallFunction(self->log_cb, "si",
                                                    ev.text, ev.level);
                Py_XDECREF(r);
                unraisable(self);
            }
            break;
        case SBUS_EV_RENEW_FAILED:
            on_renew_failed(self, &ev);
            break;
        default:
            free_event_messages(&ev);
            break;
        }
    }
    return n;
}

static void flush_output(ConnObject *self)
{
    if (!self->conn || self->transport_state != TS_UP || !self->transport ||
        self->write_paused)
        return;
    for (;;) {
        size_t len = 0;
        const uint8_t *p = sbus_conn_write_buffer(self->conn, &len);
        if (!p || len == 0)
            return;
        PyObject *b = PyBytes_FromStringAndSize((const char *)p,
                                                (Py_ssize_t)len);
        if (!b) {
            unraisable(self);
            return;
        }
        PyObject *r = call_one(self->transport, "write", b);
        Py_DECREF(b);
        if (!r) {
            unraisable(self);
            return;
        }
        Py_DECREF(r);
        sbus_conn_write_done(self->conn, len);
        if (!self->transport || self->write_paused)
            return;
    }
}

static void pump(ConnObject *self, int flush_now)
{
    if (!self->conn)
        return;
    if (self->in_pump) {
        self->need_pump = 1;
        return;
    }
    self->in_pump = 1;
    int64_t deadline = -1;
    for (int round = 0; round < 64 && self->conn; round++) {
        self->need_pump = 0;
        self->last_tick = sbpy_mono_ms();
        deadline = sbus_conn_tick(self->conn, self->last_tick, sbpy_unix_ms());
        /* What the engine has to say goes out before the events are turned
         * into Python objects: a receive served from the prefetch buffer
         * frees credit, and the service can send the next messages while
         * we wrap these (one receive of 300 wraps 300 objects). */
        if (flush_now)
            flush_output(self);
        int n = drain(self);
        if (flush_now)
            flush_output(self);
        if (n == 0 && !self->need_pump)
            break;
    }
    self->in_pump = 0;
    arm_timer(self, deadline);
}

void sbpy_conn_pump(ConnObject *self)
{
    pump(self, 1);
}

/* After an operation call: one pump per loop iteration. The first
 * operation of an iteration is pumped and written at once (a receive served
 * from prefetched messages completes without a loop turn, and the credit it
 * frees reaches the service before the caller settles what it got; a lone
 * send goes out without waiting a turn) and schedules `_flush`; those
 * started after it in the same iteration (a gather, a loop of sends) leave
 * everything to that one `_flush`: one tick, one drain and one
 * transport.write for all of them. Falls back to writing now if nothing can
 * be scheduled. */
static void pump_after_op(ConnObject *self)
{
    if (self->flush_soon)
        return;
    if (self->in_callbacks) {
        /* started by a done callback (a Task resumed by its Future): the
         * first is pumped at once, the others when the batch of callbacks
         * ends (sbpy_conn_callbacks_end) - the same iteration, no
         * `_flush` turn of the loop */
        if (self->cb_pumped) {
            self->cb_dirty = 1;
        } else {
            self->cb_pumped = 1;
            pump(self, 1);
        }
        return;
    }
    if (self->transport_state != TS_UP) {
        pump(self, 1);
        return;
    }
    PyObject *cb = bound(self, "_flush");
    PyObject *h = cb ? PyObject_CallMethod(self->loop, "call_soon", "O", cb) : NULL;
    Py_XDECREF(cb);
    if (!h) {
        PyErr_Clear();
        pump(self, 1);
        return;
    }
    Py_DECREF(h);
    self->flush_soon = 1;
    pump(self, 1);
}

void sbpy_conn_callbacks_begin(ConnObject *c)
{
    if (c->in_callbacks++ == 0)
        c->cb_pumped = c->cb_dirty = 0;
}

void sbpy_conn_callbacks_end(ConnObject *c)
{
    if (--c->in_callbacks > 0)
        return;
    int dirty = c->cb_dirty;
    c->cb_pumped = c->cb_dirty = 0;
    if (dirty && !c->flush_soon) {
        PyObject *t, *e, *tb;
        PyErr_Fetch(&t, &e, &tb); /* a callback's SystemExit, say */
        pump(c, 1);
        PyErr_Restore(t, e, tb);
    }
}

/* ---------------------------------------------------------------- */
/* Operations                                                        */
/* ---------------------------------------------------------------- */

PyObject *sbpy_op_begin(ConnObject *c, PyObject *ctx)
{
    if (!c->conn) {
        PyObject *exc = sbpy_make_error(SBUS_OP_NONE, SBUS_ECLOSED, NULL,
                                        "the connection is closed", 0, 1);
        if (exc) {
            PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
            Py_DECREF(exc);
        }
        return NULL;
    }
    static PyObject *attr_name; /* interned "_sbus_conn" */
    if (!attr_name && !(attr_name = PyUnicode_InternFromString("_sbus_conn")))
        return NULL;
    PyObject *fut = PyObject_VectorcallDict(c->future_type, NULL, 0,
                                            c->future_kwargs);
    if (!fut)
        return NULL;
    if (sbpy_opfut_type && Py_TYPE(fut) == sbpy_opfut_type)
        sbpy_opfut_set_conn(fut, (PyObject *)c);
    else if (PyObject_SetAttr(fut, attr_name, (PyObject *)c) < 0) {
        Py_DECREF(fut);
        return NULL;
    }
    if (PyDict_SetItem(c->pending, fut, ctx ? ctx : Py_None) < 0) {
        Py_DECREF(fut);
        return NULL;
    }
    /* time may have moved since the last pump (the pump after the
     * operation ticks again; skip this one when the clock has not moved) */
    int64_t now = sbpy_mono_ms();
    if (now != c->last_tick) {
        c->last_tick = now;
        sbus_conn_tick(c->conn, now, sbpy_unix_ms());
    }
    return fut;
}

PyObject *sbpy_op_end(ConnObject *c, PyObject *fut, int op, int rc)
{
    if (rc < 0) {
        if (PyDict_DelItem(c->pending, fut) < 0)
            PyErr_Clear();
        PyObject *r = PyObject_CallMethod(fut, "cancel", NULL);
        Py_XDECREF(r);
        PyErr_Clear();
        Py_DECREF(fut);
        sbpy_conn_pump(c);
        return sbpy_raise(op, rc);
    }
    pump_after_op(c);
    return fut;
}

PyObject *sbpy_op_seqs(ConnObject *c, PyObject *ctx, int op, PyObject *seqs,
                       sbpy_seqs_start_fn start, void *obj)
{
    int64_t *arr;
    size_t n;
    if (sbpy_int64_array(seqs, &arr, &n) < 0)
        return NULL;
    PyObject *fut = sbpy_op_begin(c, ctx);
    if (!fut) {
        PyMem_Free(arr);
        return NULL;
    }
    int rc = start(obj, arr, n, fut);
    PyMem_Free(arr);
    return sbpy_op_end(c, fut, op, rc);
}

int sbpy_conn_add_renewal(ConnObject *c, void *key, PyObject *receiver,
                          PyObject *msg, PyObject *cb)
{
    PyObject *k = PyLong_FromVoidPtr(key);
    PyObject *t = Py_BuildValue("(OOO)", receiver, msg ? msg : Py_None,
                                cb ? cb : Py_None);
    int rc = -1;
    if (k && t)
        rc = PyDict_SetItem(c->renewals, k, t);
    Py_XDECREF(k);
    Py_XDECREF(t);
    return rc;
}

void sbpy_conn_del_renewal(ConnObject *c, void *key)
{
    PyObject *k = PyLong_FromVoidPtr(key);
    if (!k) {
        PyErr_Clear();
        return;
    }
    if (PyDict_DelItem(c->renewals, k) < 0)
        PyErr_Clear();
    Py_DECREF(k);
}

void sbpy_conn_forget_renewals(ConnObject *c, PyObject *receiver)
{
    PyObject *keys = PyDict_Keys(c->renewals);
    if (!keys) {
        PyErr_Clear();
        return;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(keys); i++) {
        PyObject *k = PyList_GET_ITEM(keys, i);
        PyObject *e = PyDict_GetItem(c->renewals, k);
        if (e && PyTuple_GET_ITEM(e, 0) == receiver)
            if (PyDict_DelItem(c->renewals, k) < 0)
                PyErr_Clear();
    }
    Py_DECREF(keys);
}

/* Fails everything pending and forgets the transport, without I/O. */
static void conn_abort(ConnObject *self, const char *why)
{
    self->closed = 1;
    if (self->conn) {
        sbus_conn_abort(self->conn, why);
        int was = self->in_pump;
        self->in_pump = 1; /* drain without flushing to a dead transport */
        drain(self);
        self->in_pump = was;
    }
    cancel_connect(self);
    close_transport(self, 1);
    cancel_timer(self);
}

/* ---------------------------------------------------------------- */
/* Protocol methods (called by the event loop)                       */
/* ---------------------------------------------------------------- */

/* uvloop keeps what transport.write() is given until the end of the loop
 * iteration, unless more than its high-water mark is waiting. The credit a
 * receive frees and the first settlement of an iteration, which
 * pump_after_op() writes at once so that the service works on them while
 * the host goes on, would then wait for every other callback of that
 * iteration (a gather of 300 completions, say): PeekLock receive + complete
 * ran 15-30% slower on uvloop than on asyncio. With a high-water mark of 0
 * such a transport writes at once, as asyncio's own transports always do;
 * it then pauses us as soon as anything is left unwritten, and the engine
 * keeps the rest. asyncio's transports keep their limits. */
static void write_at_once(PyObject *transport)
{
    PyObject *mod = PyObject_GetAttrString((PyObject *)Py_TYPE(transport),
                                           "__module__");
    const char *name = mod && PyUnicode_Check(mod) ? PyUnicode_AsUTF8(mod) : NULL;
    int asyncio_own = name && strncmp(name, "asyncio.", 8) == 0;
    Py_XDECREF(mod);
    PyErr_Clear();
    if (!asyncio_own) {
        PyObject *r = PyObject_CallMethod(transport, "set_write_buffer_limits",
                                          "i", 0);
        Py_XDECREF(r);
    }
    PyErr_Clear(); /* a transport without limits: nothing to change */
}

static PyObject *conn_connection_made(ConnObject *self, PyObject *transport)
{
    if (!self->conn || self->closed) {
        PyObject *r = PyObject_CallMethod(transport, "abort", NULL);
        Py_XDECREF(r);
        PyErr_Clear();
        self->lost_pending++;
        Py_RETURN_NONE;
    }
    Py_XSETREF(self->transport, Py_NewRef(transport));
    self->transport_state = TS_UP;
    self->write_paused = 0;
    write_at_once(transport);
    sbus_conn_transport_up(self->conn);
    sbpy_conn_pump(self);
    Py_RETURN_NONE;
}

static PyObject *conn_get_buffer(ConnObject *self, PyObject *sizehint)
{
    size_t cap = 0;
    uint8_t *p = NULL;
    if (self->conn)
        p = sbus_conn_read_buffer(self->conn, &cap);
    if (!p || cap == 0) {
        /* The engine takes no input now (closed for input): the bytes
         * read into the scratch area are dropped. */
        self->use_scratch = 1;
        return PyMemoryView_FromMemory(self->scratch, sizeof self->scratch,
                                       PyBUF_WRITE);
    }
    self->use_scratch = 0;
    return PyMemoryView_FromMemory((char *)p, (Py_ssize_t)cap, PyBUF_WRITE);
}

static PyObject *conn_buffer_updated(ConnObject *self, PyObject *arg)
{
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n < 0 && PyErr_Occurred())
        return NULL;
    if (self->use_scratch) {
        self->use_scratch = 0;
        Py_RETURN_NONE;
    }
    if (self->conn) {
        sbus_conn_read_done(self->conn, (size_t)n);
        sbpy_conn_pump(self);
    }
    Py_RETURN_NONE;
}

static PyObject *conn_eof_received(ConnObject *self, PyObject *unused)
{
    if (self->transport_state == TS_UP) {
        Py_CLEAR(self->transport); /* the loop closes it as we return False */
        self->transport_state = TS_NONE;
        self->lost_pending++;
        if (self->conn) {
            sbus_conn_transport_down(self->conn,
                                     "the peer closed the connection");
            sbpy_conn_pump(self);
        }
    }
    Py_RETURN_FALSE;
}

static PyObject *conn_connection_lost(ConnObject *self, PyObject *exc)
{
    if (self->lost_pending > 0) {
        self->lost_pending--;
        Py_RETURN_NONE;
    }
    if (self->transport_state != TS_UP)
        Py_RETURN_NONE;
    Py_CLEAR(self->transport);
    self->transport_state = TS_NONE;
    if (self->conn) {
        PyObject *s = exc != Py_None ? PyObject_Str(exc) : NULL;
        const char *why = s ? PyUnicode_AsUTF8(s) : NULL;
        if (!why) {
            PyErr_Clear();
            why = "connection lost";
        }
        sbus_conn_transport_down(self->conn, why);
        Py_XDECREF(s);
        sbpy_conn_pump(self);
    }
    Py_RETURN_NONE;
}

static PyObject *conn_pause_writing(ConnObject *self, PyObject *unused)
{
    self->write_paused = 1;
    Py_RETURN_NONE;
}

static PyObject *conn_resume_writing(ConnObject *self, PyObject *unused)
{
    self->write_paused = 0;
    sbpy_conn_pump(self);
    Py_RETURN_NONE;
}

static PyObject *conn_protocol_factory(ConnObject *self, PyObject *unused)
{
    return Py_NewRef(self);
}

static PyObject *conn_connect_done(ConnObject *self, PyObject *task)
{
    /* A superseded attempt (cancelled when the engine asked again) must
     * not report anything about the current one. */
    int current = self->connect_task == task;
    if (current)
        Py_CLEAR(self->connect_task);
    int c = future_cancelled(task);
    if (c < 0)
        return NULL;
    PyObject *why = NULL;
    if (c) {
        why = PyUnicode_FromString("connecting was cancelled");
    } else {
        PyObject *exc = PyObject_CallMethod(task, "exception", NULL);
        if (!exc)
            return NULL;
        if (exc != Py_None)
            why = PyObject_Str(exc);
        Py_DECREF(exc);
        if (!why && PyErr_Occurred())
            return NULL;
    }
    if (why) {
        if (current && self->conn && self->transport_state == TS_CONNECTING) {
            self->transport_state = TS_NONE;
            const char *s = PyUnicode_AsUTF8(why);
            sbus_conn_transport_down(self->conn,
                                     s && *s ? s : "connection refused");
            PyErr_Clear();
            sbpy_conn_pump(self);
        }
        Py_DECREF(why);
    }
    Py_RETURN_NONE;
}

static PyObject *conn_flush(ConnObject *self, PyObject *unused)
{
    self->flush_soon = 0;
    sbpy_conn_pump(self);
    Py_RETURN_NONE;
}

static PyObject *conn_on_timer(ConnObject *self, PyObject *unused)
{
    Py_CLEAR(self->timer);
    self->timer_deadline = -1;
    sbpy_conn_pump(self);
    Py_RETURN_NONE;
}

/* ---------------------------------------------------------------- */
/* Python methods                                                    */
/* ---------------------------------------------------------------- */

static PyObject *conn_open(ConnObject *self, PyObject *unused)
{
    PyObject *fut = sbpy_op_begin(self, Py_None);
    if (!fut)
        return NULL;
    return sbpy_op_end(self, fut, SBUS_OP_CONN_OPEN,
                       sbus_conn_open(self->conn, fut));
}

static PyObject *conn_close(ConnObject *self, PyObject *unused)
{
    PyObject *fut = sbpy_op_begin(self, Py_None);
    if (!fut)
        return NULL;
    self->closed = 1;
    return sbpy_op_end(self, fut, SBUS_OP_CONN_CLOSE,
                       sbus_conn_close(self->conn, fut));
}

static PyObject *conn_abort_m(ConnObject *self, PyObject *args)
{
    const char *why = "aborted";
    if (!PyArg_ParseTuple(args, "|s", &why))
        return NULL;
    conn_abort(self, why);
    Py_RETURN_NONE;
}

/* 1 if `fut` is the token of an operation still pending on a live engine
 * connection, 0 if not, -1 with an exception set. */
static int conn_is_pending(ConnObject *self, PyObject *fut)
{
    if (!self->conn)
        return 0;
    return PyDict_Contains(self->pending, fut);
}

static PyObject *conn_cancel_op(ConnObject *self, PyObject *fut)
{
    int has = conn_is_pending(self, fut);
    if (has <= 0)
        return has < 0 ? NULL : Py_NewRef(Py_False);
    int rc = sbus_conn_cancel(self->conn, fut);
    sbpy_conn_pump(self);
    return PyBool_FromLong(rc == 0);
}

/* Gives the pending operation whose token is `fut` its own deadline (the
 * SDK's per-call `timeout=`): it then completes with SBUS_ETIMEOUT. Returns
 * False when the operation is no longer pending (already done). */
static PyObject *conn_set_op_timeout(ConnObject *self, PyObject *args)
{
    PyObject *fut;
    double seconds;
    if (!PyArg_ParseTuple(args, "Od", &fut, &seconds))
        return NULL;
    if (!(seconds > 0)) {
        PyErr_SetString(PyExc_ValueError, "timeout must be greater than 0");
        return NULL;
    }
    int has = conn_is_pending(self, fut);
    if (has <= 0)
        return has < 0 ? NULL : Py_NewRef(Py_False);
    int64_t ms = (int64_t)(seconds * 1000.0);
    int rc = sbus_conn_set_op_timeout(self->conn, fut, ms > 0 ? ms : 1);
    sbpy_conn_pump(self);
    if (rc == SBUS_ENOENT)
        Py_RETURN_FALSE;
    if (rc < 0)
        return sbpy_raise(SBUS_OP_NONE, rc);
    Py_RETURN_TRUE;
}

static PyObject *conn_set_token(ConnObject *self, PyObject *args)
{
    const char *audience, *token, *err = NULL;
    long long expires = 0;
    if (!PyArg_ParseTuple(args, "szL|z", &audience, &token, &expires, &err))
        return NULL;
    if (!self->conn)
        Py_RETURN_NONE;
    int rc = sbus_conn_set_token(self->conn, audience, token, expires, err);
    sbpy_conn_pump(self);
    if (rc < 0)
        return sbpy_raise(SBUS_OP_NONE, rc);
    Py_RETURN_NONE;
}

/* Calls `type(self, *args, **kw)`: senders and receivers are made with
 * their connection as the first argument. */
static PyObject *conn_make_child(ConnObject *self, PyTypeObject *type,
                                 PyObject *args, PyObject *kw)
{
    PyObject *a = PyTuple_Pack(1, (PyObject *)self);
    if (!a)
        return NULL;
    PyObject *full = PySequence_Concat(a, args);
    Py_DECREF(a);
    if (!full)
        return NULL;
    PyObject *r = PyObject_Call((PyObject *)type, full, kw);
    Py_DECREF(full);
    return r;
}

static PyObject *conn_make_sender(ConnObject *self, PyObject *args,
                                  PyObject *kw)
{
    return conn_make_child(self, &SbpySender_Type, args, kw);
}

static PyObject *conn_make_receiver(ConnObject *self, PyObject *args,
                                    PyObject *kw)
{
    return conn_make_child(self, &SbpyReceiver_Type, args, kw);
}

static PyObject *conn_get_is_open(ConnObject *self, void *c)
{
    return PyBool_FromLong(self->conn && sbus_conn_is_open(self->conn));
}

static PyObject *conn_get_host(ConnObject *self, void *c)
{
    if (!self->conn)
        Py_RETURN_NONE;
    const char *h = sbus_conn_host(self->conn);
    if (!h)
        Py_RETURN_NONE;
    return PyUnicode_FromString(h);
}

static PyObject *conn_get_closed(ConnObject *self, void *c)
{
    return PyBool_FromLong(self->closed || !self->conn);
}

static PyObject *conn_get_pending(ConnObject *self, void *c)
{
    return PyLong_FromSsize_t(PyDict_GET_SIZE(self->pending));
}

static PyObject *conn_get_renewals(ConnObject *self, void *c)
{
    return PyLong_FromSsize_t(PyDict_GET_SIZE(self->renewals));
}

/* ---------------------------------------------------------------- */
/* Construction                                                      */
/* ---------------------------------------------------------------- */

/* Reads option `name` from dict d: str (or None) into *s. */
static int opt_str(PyObject *d, const char *name, const char **s)
{
    PyObject *v = PyDict_GetItemString(d, name);
    if (!v || v == Py_None)
        return 0;
    if (!PyUnicode_Check(v)) {
        PyErr_Format(PyExc_TypeError, "option %s must be a str", name);
        return -1;
    }
    *s = PyUnicode_AsUTF8(v);
    return *s ? 0 : -1;
}

static int opt_i64(PyObject *d, const char *name, int64_t *x)
{
    PyObject *v = PyDict_GetItemString(d, name);
    if (!v || v == Py_None)
        return 0;
    long long y = PyLong_AsLongLong(v);
    if (y == -1 && PyErr_Occurred())
        return -1;
    *x = y;
    return 0;
}

static int opt_int(PyObject *d, const char *name, int *x)
{
    int64_t y = *x;
    if (opt_i64(d, name, &y) < 0)
        return -1;
    *x = (int)y;
    return 0;
}

static const char *const known_options[] = {
    "connection_string", "namespace", "sas_key_name", "sas_key", "sas_token",
    "host_tokens", "port", "use_tls", "transport", "ca_file", "verify",
    "proxy_host", "proxy_port", "proxy_user", "proxy_password", "retry_total",
    "retry_backoff_ms", "retry_backoff_max_ms", "operation_timeout_ms",
    "token_lifetime_s", "idle_timeout_ms", "user_agent", "container_id",
    "trace", NULL};

static int fill_options(PyObject *d, sbus_conn_options_t *o)
{
    PyObject *k, *v;
    Py_ssize_t pos = 0;
    while (PyDict_Next(d, &pos, &k, &v)) {
        const char *name = PyUnicode_Check(k) ? PyUnicode_AsUTF8(k) : NULL;
        int found = 0;
        if (!name) {
            PyErr_SetString(PyExc_TypeError, "option names must be str");
            return -1;
        }
        for (int i = 0; known_options[i]; i++)
            if (strcmp(name, known_options[i]) == 0)
                found = 1;
        if (!found) {
            PyErr_Format(PyExc_TypeError, "unknown connection option %s",
                         name);
            return -1;
        }
    }
    int64_t u32;
    if (opt_str(d, "connection_string", &o->connection_string) < 0 ||
        opt_str(d, "namespace", &o->namespace_) < 0 ||
        opt_str(d, "sas_key_name", &o->sas_key_name) < 0 ||
        opt_str(d, "sas_key", &o->sas_key) < 0 ||
        opt_str(d, "sas_token", &o->sas_token) < 0 ||
        opt_int(d, "host_tokens", &o->host_tokens) < 0 ||
        opt_int(d, "port", &o->port) < 0 ||
        opt_int(d, "use_tls", &o->use_tls) < 0 ||
        opt_str(d, "ca_file", &o->ca_file) < 0 ||
        opt_int(d, "verify", &o->verify) < 0 ||
        opt_str(d, "proxy_host", &o->proxy_host) < 0 ||
        opt_int(d, "proxy_port", &o->proxy_port) < 0 ||
        opt_str(d, "proxy_user", &o->proxy_user) < 0 ||
        opt_str(d, "proxy_password", &o->proxy_password) < 0 ||
        opt_int(d, "retry_total", &o->retry_total) < 0 ||
        opt_i64(d, "retry_backoff_ms", &o->retry_backoff_ms) < 0 ||
        opt_i64(d, "retry_backoff_max_ms", &o->retry_backoff_max_ms) < 0 ||
        opt_i64(d, "operation_timeout_ms", &o->operation_timeout_ms) < 0 ||
        opt_i64(d, "token_lifetime_s", &o->token_lifetime_s) < 0 ||
        opt_str(d, "user_agent", &o->user_agent) < 0 ||
        opt_str(d, "container_id", &o->container_id) < 0 ||
        opt_int(d, "trace", &o->trace) < 0)
        return -1;
    int t = (int)o->transport;
    if (opt_int(d, "transport", &t) < 0)
        return -1;
    o->transport = (sbus_transport_t)t;
    u32 = o->idle_timeout_ms;
    if (opt_i64(d, "idle_timeout_ms", &u32) < 0)
        return -1;
    o->idle_timeout_ms = (uint32_t)u32;
    return 0;
}

static PyObject *conn_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"loop",      "future_type",  "options",
                             "token_callback", "log_callback", NULL};
    PyObject *loop, *ftype, *opts, *token_cb = Py_None, *log_cb = Py_None;
    sbus_conn_options_t o;
    char err[512] = "";

    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOO!|OO", kwlist, &loop,
                                     &ftype, &PyDict_Type, &opts, &token_cb,
                                     &log_cb))
        return NULL;
    sbus_conn_options_init(&o);
    if (fill_options(opts, &o) < 0)
        return NULL;

    if (intern_names() < 0)
        return NULL;
    ConnObject *self = (ConnObject *)type->tp_alloc(type, 0);
    if (!self)
        return NULL;
    self->loop = Py_NewRef(loop);
    self->future_type = Py_NewRef(ftype);
    self->token_cb = Py_NewRef(token_cb);
    self->log_cb = Py_NewRef(log_cb);
    self->timer_deadline = -1;
    self->pending = PyDict_New();
    self->renewals = PyDict_New();
    self->future_kwargs = Py_BuildValue("{s:O}", "loop", loop);
    if (!self->pending || !self->renewals || !self->future_kwargs) {
        Py_DECREF(self);
        return NULL;
    }
    int rc = sbus_conn_new(&self->conn, &o, err, sizeof err);
    if (rc < 0) {
        self->conn = NULL;
        self->closed = 1;
        PyObject *exc = sbpy_make_error(SBUS_OP_NONE, rc, NULL,
                                        err[0] ? err : sbus_strerror(rc), 0, 1);
        if (exc) {
            PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
            Py_DECREF(exc);
        }
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static int conn_traverse(ConnObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->loop);
    Py_VISIT(self->future_type);
    Py_VISIT(self->future_kwargs);
    Py_VISIT(self->pending);
    Py_VISIT(self->renewals);
    Py_VISIT(self->token_cb);
    Py_VISIT(self->log_cb);
    Py_VISIT(self->transport);
    Py_VISIT(self->connect_task);
    Py_VISIT(self->timer);
    Py_VISIT(self->cb_batch);
    return 0;
}

static int conn_clear(ConnObject *self)
{
    Py_CLEAR(self->token_cb);
    Py_CLEAR(self->log_cb);
    Py_CLEAR(self->transport);
    Py_CLEAR(self->connect_task);
    Py_CLEAR(self->timer);
    Py_CLEAR(self->cb_batch);
    Py_CLEAR(self->renewals);
    Py_CLEAR(self->pending);
    Py_CLEAR(self->future_type);
    Py_CLEAR(self->future_kwargs);
    Py_CLEAR(self->loop);
    return 0;
}

static void conn_dealloc(ConnObject *self)
{
    PyObject_GC_UnTrack(self);
    if (self->conn) {
        if (!self->closed) {
            PyObject *et, *ev, *tb;
            PyErr_Fetch(&et, &ev, &tb);
            /* no `source`: the warning must not keep a dying object */
            const char *host = sbus_conn_host(self->conn);
            if (PyErr_WarnFormat(PyExc_ResourceWarning, 1,
                                 "unclosed servicebus connection to %s",
                                 host ? host : "?") < 0)
                PyErr_WriteUnraisable((PyObject *)self);
            PyErr_Restore(et, ev, tb);
        }
        /* No I/O: abort fails what is pending; the events that carry
         * those failures are drained (Futures completed) before freeing. */
        sbus_conn_abort(self->conn, "connection object deallocated");
        self->in_pump = 1;
        drain(self);
        sbus_conn_free(self->conn);
        self->conn = NULL;
    }
    if (self->timer) {
        PyObject *r = PyObject_CallMethod(self->timer, "cancel", NULL);
        Py_XDECREF(r);
        PyErr_Clear();
    }
    if (self->weakreflist)
        PyObject_ClearWeakRefs((PyObject *)self);
    conn_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *conn_repr(ConnObject *self)
{
    const char *host = self->conn ? sbus_conn_host(self->conn) : NULL;
    return PyUnicode_FromFormat("<servicebus._sbus.Connection host=%s %s>",
                                host ? host : "?",
                                !self->conn || self->closed ? "closed"
                                : self->transport_state == TS_UP ? "up"
                                                                 : "down");
}

static PyMethodDef conn_methods[] = {
    {"connection_made", (PyCFunction)conn_connection_made, METH_O,
     "asyncio protocol: the transport is connected."},
    {"get_buffer", (PyCFunction)conn_get_buffer, METH_O,
     "asyncio BufferedProtocol: the engine's read buffer."},
    {"buffer_updated", (PyCFunction)conn_buffer_updated, METH_O,
     "asyncio BufferedProtocol: n bytes were read."},
    {"eof_received", (PyCFunction)conn_eof_received, METH_NOARGS,
     "asyncio protocol: the peer closed its side."},
    {"connection_lost", (PyCFunction)conn_connection_lost, METH_O,
     "asyncio protocol: the transport is gone."},
    {"pause_writing", (PyCFunction)conn_pause_writing, METH_NOARGS,
     "asyncio protocol: stop writing."},
    {"resume_writing", (PyCFunction)conn_resume_writing, METH_NOARGS,
     "asyncio protocol: writing may resume."},
    {"_protocol_factory", (PyCFunction)conn_protocol_factory, METH_NOARGS,
     "Returns self (the protocol factory for create_connection)."},
    {"_connect_done", (PyCFunction)conn_connect_done, METH_O,
     "Done callback of the create_connection task."},
    {"_on_timer", (PyCFunction)conn_on_timer, METH_NOARGS,
     "The deadline timer fired."},
    {"_flush", (PyCFunction)conn_flush, METH_NOARGS,
     "Writes what operations of this loop iteration produced."},
    {"_cancel_op", (PyCFunction)conn_cancel_op, METH_O,
     "Cancels the engine operation of a cancelled Future."},
    {"_set_op_timeout", (PyCFunction)conn_set_op_timeout, METH_VARARGS,
     "_set_op_timeout(future, seconds): a deadline for that operation"},
    {"open", (PyCFunction)conn_open, METH_NOARGS,
     "open() -> Future: connect and open the AMQP connection."},
    {"close", (PyCFunction)conn_close, METH_NOARGS,
     "close() -> Future: close gracefully."},
    {"abort", (PyCFunction)conn_abort_m, METH_VARARGS,
     "abort([why]): fail everything pending, drop the transport, no I/O."},
    {"set_token", (PyCFunction)conn_set_token, METH_VARARGS,
     "set_token(audience, token_or_None, expires_unix_s[, error])."},
    {"sender", (PyCFunction)(void (*)(void))conn_make_sender,
     METH_VARARGS | METH_KEYWORDS, "sender(entity) -> Sender."},
    {"receiver", (PyCFunction)(void (*)(void))conn_make_receiver,
     METH_VARARGS | METH_KEYWORDS, "receiver(entity, ...) -> Receiver."},
    {NULL, NULL, 0, NULL}};

static PyObject *conn_get_transport(ConnObject *self, void *unused)
{
    (void)unused;
    return Py_NewRef(self->transport ? self->transport : Py_None);
}

static PyGetSetDef conn_getset[] = {
    {"is_open", (getter)conn_get_is_open, NULL, "open on the wire now", NULL},
    {"host", (getter)conn_get_host, NULL, "the namespace host", NULL},
    {"closed", (getter)conn_get_closed, NULL, "close/abort was called", NULL},
    {"pending_count", (getter)conn_get_pending, NULL,
     "operations in flight", NULL},
    {"renewal_count", (getter)conn_get_renewals, NULL,
     "automatic renewals registered", NULL},
    {"_transport", (getter)conn_get_transport, NULL,
     "the asyncio transport while connected, else None (for tests)", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

PyTypeObject SbpyConn_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "servicebus._sbus.Connection",
    .tp_basicsize = sizeof(ConnObject),
    .tp_dealloc = (destructor)conn_dealloc,
    .tp_repr = (reprfunc)conn_repr,
    /* BASETYPE: asyncio and uvloop recognise a buffered protocol with
     * isinstance(p, asyncio.BufferedProtocol), a Python class, which a
     * static type cannot derive from; the package mixes it in with an
     * empty-__slots__ subclass (servicebus._connection._Protocol). */
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Connection(loop, future_type, options, token_callback=None, "
              "log_callback=None): one engine connection, and the asyncio "
              "BufferedProtocol that feeds it.",
    .tp_traverse = (traverseproc)conn_traverse,
    .tp_clear = (inquiry)conn_clear,
    .tp_weaklistoffset = offsetof(ConnObject, weakreflist),
    .tp_methods = conn_methods,
    .tp_getset = conn_getset,
    .tp_new = conn_new,
};
