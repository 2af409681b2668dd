/*
 * gateway.resource_server._bucket: one key's token bucket (the device and peer rate
 * limits, RFC 8516), in C.
 *
 * Limiter (the base of gateway.resource_server.rate_limits.RateLimiter) and its Bucket behave
 * exactly as gateway.resource_server.rate_limits.Limiter and TokenBucket, the pure-Python
 * references (kept, and tested against these types on the same sequences of
 * calls): a bucket holds `tokens` left as of time `at`; a take refills
 * (now - at) * rate, capped at burst, then spends one token or says how long
 * until the next. The gateway takes once per request; here that allocates
 * nothing but the returned float.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

typedef struct {
    PyObject_HEAD
    double tokens;
    double at;
    char used; /* taken from since the limiter last passed over it */
} Bucket;

/* `arg` as a double in *out: 0; -1 with an exception set. */
static int
as_double(PyObject *arg, double *out)
{
    *out = PyFloat_AsDouble(arg);
    return *out == -1.0 && PyErr_Occurred() ? -1 : 0;
}

/* Refill for the time since the last take (at most burst), then spend one
 * token: 0.0; or, with less than one, spend nothing and return the seconds
 * until there is one. */
static double
spend(Bucket *self, double now, double rate, double burst)
{
    self->used = 1;
    double tokens = self->tokens;
    if (now > self->at) {
        tokens += (now - self->at) * rate;
        if (tokens > burst)
            tokens = burst;
    }
    self->at = now;
    if (tokens < 1.0) {
        self->tokens = tokens;
        return (1.0 - tokens) / rate;
    }
    self->tokens = tokens - 1.0;
    return 0.0;
}

static PyTypeObject BucketType;

static PyObject *
Bucket_repr(Bucket *self)
{
    PyObject *tokens = PyFloat_FromDouble(self->tokens);
    PyObject *at = PyFloat_FromDouble(self->at);
    PyObject *text = NULL;
    if (tokens != NULL && at != NULL)
        text = PyUnicode_FromFormat("<TokenBucket tokens=%R at=%R>", tokens, at);
    Py_XDECREF(tokens);
    Py_XDECREF(at);
    return text;
}

static PyMemberDef Bucket_members[] = {
    {"tokens", T_DOUBLE, offsetof(Bucket, tokens), READONLY, "Tokens left as of at."},
    {"at", T_DOUBLE, offsetof(Bucket, at), READONLY, "When tokens was last updated."},
    {"used", T_BOOL, offsetof(Bucket, used), 0,
     "Taken from since the limiter last passed over it."},
    {NULL},
};

PyDoc_STRVAR(Bucket_doc,
"One key's token bucket, made and taken from by a Limiter; see\n"
"gateway.resource_server.rate_limits.TokenBucket.");

static PyTypeObject BucketType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "gateway.resource_server._bucket.Bucket",
    .tp_basicsize = sizeof(Bucket),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = Bucket_doc,
    .tp_repr = (reprfunc)Bucket_repr,
    .tp_members = Bucket_members,
};

/* ------------------------------------------------------------------------
 * Limiter: the base of gateway.resource_server.rate_limits.RateLimiter, holding the buckets by
 * key (an OrderedDict, oldest first; a key beyond max_keys evicts the
 * oldest not taken from since last passed over, a second chance for the
 * others) and the per-request spend. */

typedef struct {
    PyObject_HEAD
    PyObject *buckets; /* OrderedDict: key -> Bucket */
    double rate;
    double burst;
    Py_ssize_t max_keys;
} Limiter;

static PyObject *ORDERED_DICT; /* collections.OrderedDict */
static PyObject *POPITEM;      /* "popitem" */

static PyObject *
Limiter_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    Limiter *self = (Limiter *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->rate = 1.0;
    self->burst = 1.0;
    self->max_keys = 1;
    self->buckets = PyObject_CallNoArgs(ORDERED_DICT);
    if (self->buckets == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static int
Limiter_traverse(Limiter *self, visitproc visit, void *arg)
{
    Py_VISIT(self->buckets);
    return 0;
}

static int
Limiter_clear(Limiter *self)
{
    Py_CLEAR(self->buckets);
    return 0;
}

static void
Limiter_dealloc(Limiter *self)
{
    PyObject_GC_UnTrack(self);
    Limiter_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

PyDoc_STRVAR(wait_doc,
"wait(key, now, rate=None) -> float\n--\n\n"
"Take one token from key's bucket at rate tokens per second (the\n"
"limiter's when None): 0.0; or, with less than one token, the seconds until\n"
"there is one, spending nothing. A key not held gets a full bucket; when\n"
"max_keys are held, the oldest not taken from since last passed over goes.");

static PyObject *
Limiter_wait(Limiter *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 && nargs != 3) {
        PyErr_Format(PyExc_TypeError, "wait() takes 2 or 3 arguments (%zd given)", nargs);
        return NULL;
    }
    PyObject *key = args[0];
    double now, rate = self->rate;
    if (as_double(args[1], &now) < 0 || (nargs == 3 && args[2] != Py_None
                                          && as_double(args[2], &rate) < 0))
        return NULL;
    PyObject *bucket = PyDict_GetItemWithError(self->buckets, key); /* borrowed */
    if (bucket == NULL) {
        if (PyErr_Occurred())
            return NULL;
        while (PyDict_GET_SIZE(self->buckets) >= self->max_keys
               && PyDict_GET_SIZE(self->buckets) > 0) {
            PyObject *pargs[2] = {self->buckets, Py_False}; /* popitem(last=False) */
            PyObject *gone = PyObject_VectorcallMethod(POPITEM, pargs, 2, NULL);
            if (gone == NULL)
                return NULL;
            PyObject *old = PyTuple_GET_ITEM(gone, 1);
            int kept = 0;
            if (Py_IS_TYPE(old, &BucketType) && ((Bucket *)old)->used) {
                /* taken from since last passed over: a second chance */
                ((Bucket *)old)->used = 0;
                kept = PyObject_SetItem(self->buckets, PyTuple_GET_ITEM(gone, 0), old) < 0 ? -1 : 1;
            }
            Py_DECREF(gone);
            if (kept < 0)
                return NULL;
        }
        Bucket *made = (Bucket *)BucketType.tp_alloc(&BucketType, 0);
        if (made == NULL)
            return NULL;
        made->tokens = self->burst;
        made->at = now;
        int failed = PyObject_SetItem(self->buckets, key, (PyObject *)made);
        Py_DECREF(made); /* the dict holds it */
        if (failed < 0)
            return NULL;
        bucket = (PyObject *)made;
    }
    if (!Py_IS_TYPE(bucket, &BucketType)) {
        PyErr_SetString(PyExc_TypeError, "a Limiter holds only Bucket objects");
        return NULL;
    }
    return PyFloat_FromDouble(spend((Bucket *)bucket, now, rate, self->burst));
}

static PyMethodDef Limiter_methods[] = {
    {"wait", (PyCFunction)(void (*)(void))Limiter_wait, METH_FASTCALL, wait_doc},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Limiter_members[] = {
    {"_buckets", T_OBJECT_EX, offsetof(Limiter, buckets), READONLY,
     "key -> bucket, oldest first."},
    {"rate", T_DOUBLE, offsetof(Limiter, rate), 0, "Tokens per second."},
    {"burst", T_DOUBLE, offsetof(Limiter, burst), 0, "Most tokens a bucket holds."},
    {"max_keys", T_PYSSIZET, offsetof(Limiter, max_keys), 0, "Most buckets held."},
    {NULL},
};

PyDoc_STRVAR(Limiter_doc,
"Limiter()\n--\n\n"
"Token buckets by key with the per-request wait (the base of\n"
"gateway.resource_server.rate_limits.RateLimiter; see gateway.resource_server.rate_limits.Limiter for the reference).");

static PyTypeObject LimiterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "gateway.resource_server._bucket.Limiter",
    .tp_basicsize = sizeof(Limiter),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = Limiter_doc,
    .tp_traverse = (traverseproc)Limiter_traverse,
    .tp_clear = (inquiry)Limiter_clear,
    .tp_dealloc = (destructor)Limiter_dealloc,
    .tp_methods = Limiter_methods,
    .tp_members = Limiter_members,
    .tp_new = Limiter_new,
};

static struct PyModuleDef bucket_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "gateway.resource_server._bucket",
    .m_doc = "One key's token bucket, in C.",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__bucket(void)
{
    if (PyType_Ready(&BucketType) < 0 || PyType_Ready(&LimiterType) < 0)
        return NULL;
    PyObject *collections = PyImport_ImportModule("collections");
    if (collections == NULL)
        return NULL;
    ORDERED_DICT = PyObject_GetAttrString(collections, "OrderedDict");
    Py_DECREF(collections);
    POPITEM = PyUnicode_InternFromString("popitem");
    if (ORDERED_DICT == NULL || POPITEM == NULL)
        return NULL;
    PyObject *module = PyModule_Create(&bucket_module);
    if (module == NULL)
        return NULL;
    Py_INCREF(&BucketType);
    if (PyModule_AddObject(module, "Bucket", (PyObject *)&BucketType) < 0) {
        Py_DECREF(&BucketType);
        Py_DECREF(module);
        return NULL;
    }
    Py_INCREF(&LimiterType);
    if (PyModule_AddObject(module, "Limiter", (PyObject *)&LimiterType) < 0) {
        Py_DECREF(&LimiterType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
