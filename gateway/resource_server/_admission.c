/*
 * gateway.resource_server._admission: the one-step path of a request that carries a
 * canonical Mac0 proof from a client whose standing is current, in C.
 *
 * Admission behaves exactly as gateway.resource_server.authorizer.Admission, the
 * pure-Python reference (kept, and tested against this type): it runs the
 * checks that follow the standing's in DESIGN.md's order with the C objects
 * that make them (the proof check, the replay windows, the device limiter),
 * calling their methods, and says what the Python side is to do:
 *
 *   None  the proof did not verify or the window refused its piv: nothing
 *         changed, the general path decides and says why;
 *   0.0   admitted: piv committed, one token spent, the scope grants the
 *         method on the path;
 *   > 0   piv committed, rate limited: 4.29 with this many seconds to wait;
 *   -1.0  piv committed, token spent, the scope's answer for this path is
 *         not remembered or refuses: the Python side asks the scope.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

typedef struct {
    PyObject_HEAD
    PyObject *verifier;  /* check_options(value, code, path, options, payload) */
    PyObject *windows;   /* accept(kid, piv) -> bool */
    PyObject *kid;
    PyObject *limiter;   /* wait(key, now, rate) -> float */
    PyObject *client_id;
    PyObject *rate;      /* float or None */
    PyObject *masks;     /* dict: path -> AIF method mask */
} Admission;

static PyObject *CHECK_OPTIONS, *ACCEPT, *WAIT; /* method names */
static PyObject *ADMITTED, *ASK_SCOPE;          /* 0.0, -1.0 */
static PyObject *ONE;                           /* 1 */

static int
Admission_init(Admission *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"verifier", "windows", "kid",   "limiter",
                             "client_id", "rate",   "masks", NULL};
    PyObject *v, *w, *k, *l, *c, *r, *m;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOOOO!:Admission", kwlist, &v, &w, &k, &l,
                                     &c, &r, &PyDict_Type, &m))
        return -1;
    Py_INCREF(v);
    Py_INCREF(w);
    Py_INCREF(k);
    Py_INCREF(l);
    Py_INCREF(c);
    Py_INCREF(r);
    Py_INCREF(m);
    Py_XSETREF(self->verifier, v);
    Py_XSETREF(self->windows, w);
    Py_XSETREF(self->kid, k);
    Py_XSETREF(self->limiter, l);
    Py_XSETREF(self->client_id, c);
    Py_XSETREF(self->rate, r);
    Py_XSETREF(self->masks, m);
    return 0;
}

static int
Admission_traverse(Admission *self, visitproc visit, void *arg)
{
    Py_VISIT(self->verifier);
    Py_VISIT(self->windows);
    Py_VISIT(self->kid);
    Py_VISIT(self->limiter);
    Py_VISIT(self->client_id);
    Py_VISIT(self->rate);
    Py_VISIT(self->masks);
    return 0;
}

static int
Admission_clear(Admission *self)
{
    Py_CLEAR(self->verifier);
    Py_CLEAR(self->windows);
    Py_CLEAR(self->kid);
    Py_CLEAR(self->limiter);
    Py_CLEAR(self->client_id);
    Py_CLEAR(self->rate);
    Py_CLEAR(self->masks);
    return 0;
}

static void
Admission_dealloc(Admission *self)
{
    PyObject_GC_UnTrack(self);
    Admission_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

PyDoc_STRVAR(admit_doc,
"admit(option_value, code, path, options, payload, now) -> float | None\n--\n\n"
"See the module docstring: None (general path), 0.0 (admitted), > 0\n"
"(rate limited, seconds to wait) or -1.0 (ask the scope).");

static PyObject *
Admission_admit(Admission *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6) {
        PyErr_Format(PyExc_TypeError, "admit() takes 6 arguments (%zd given)", nargs);
        return NULL;
    }
    if (self->verifier == NULL) {
        PyErr_SetString(PyExc_TypeError, "Admission made without __init__");
        return NULL;
    }
    PyObject *code = PyNumber_Index(args[1]);
    if (code == NULL)
        return NULL;
    long code_value = PyLong_AsLong(code);
    if (code_value == -1 && PyErr_Occurred()) {
        Py_DECREF(code);
        return NULL;
    }
    /* the proof (tokens._mac0.MacCheck.check_options) */
    PyObject *check_args[6] = {self->verifier, args[0], code, args[2], args[3], args[4]};
    PyObject *piv = PyObject_VectorcallMethod(CHECK_OPTIONS, check_args, 6, NULL);
    Py_DECREF(code);
    if (piv == NULL)
        return NULL;
    if (piv == Py_None)
        return piv;
    /* the replay window (tokens.replay.FreshnessGuard.accept) */
    PyObject *accept_args[3] = {self->windows, self->kid, piv};
    PyObject *accepted = PyObject_VectorcallMethod(ACCEPT, accept_args, 3, NULL);
    Py_DECREF(piv);
    if (accepted == NULL)
        return NULL;
    int fresh = PyObject_IsTrue(accepted);
    Py_DECREF(accepted);
    if (fresh < 0)
        return NULL;
    if (!fresh)
        Py_RETURN_NONE;
    /* committed: the device rate limit (gateway.resource_server.rate_limits.RateLimiter.wait) */
    PyObject *wait_args[4] = {self->limiter, self->client_id, args[5], self->rate};
    PyObject *wait = PyObject_VectorcallMethod(WAIT, wait_args, 4, NULL);
    if (wait == NULL)
        return NULL;
    double seconds = PyFloat_AsDouble(wait);
    if (seconds == -1.0 && PyErr_Occurred()) {
        Py_DECREF(wait);
        return NULL;
    }
    if (seconds != 0.0)
        return wait;
    Py_DECREF(wait);
    /* the scope's remembered method mask for the path (RFC 9237 §2.3) */
    PyObject *mask = PyDict_GetItemWithError(self->masks, args[2]); /* borrowed */
    if (mask == NULL) {
        if (PyErr_Occurred())
            return NULL;
        Py_INCREF(ASK_SCOPE);
        return ASK_SCOPE;
    }
    if (code_value < 1 || code_value > 63) {
        Py_INCREF(ASK_SCOPE);
        return ASK_SCOPE;
    }
    int granted;
    long bits = PyLong_AsLong(mask);
    if (bits != -1 || !PyErr_Occurred()) {
        granted = (bits >> (code_value - 1)) & 1;
    }
    else { /* a mask wider than a long: the same bit test on Python ints */
        if (!PyErr_ExceptionMatches(PyExc_OverflowError))
            return NULL;
        PyErr_Clear();
        PyObject *shift = PyLong_FromLong(code_value - 1);
        PyObject *shifted = shift ? PyNumber_Rshift(mask, shift) : NULL;
        Py_XDECREF(shift);
        if (shifted == NULL)
            return NULL;
        PyObject *bit = PyNumber_And(shifted, ONE);
        Py_DECREF(shifted);
        if (bit == NULL)
            return NULL;
        granted = PyObject_IsTrue(bit);
        Py_DECREF(bit);
        if (granted < 0)
            return NULL;
    }
    PyObject *answer = granted ? ADMITTED : ASK_SCOPE;
    Py_INCREF(answer);
    return answer;
}

static PyMethodDef Admission_methods[] = {
    {"admit", (PyCFunction)(void (*)(void))Admission_admit, METH_FASTCALL, admit_doc},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(Admission_doc,
"Admission(verifier, windows, kid, limiter, client_id, rate, masks)\n--\n\n"
"One held token's one-step path; see gateway.resource_server.authorizer.Admission.");

static PyTypeObject AdmissionType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "gateway.resource_server._admission.Admission",
    .tp_basicsize = sizeof(Admission),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = Admission_doc,
    .tp_traverse = (traverseproc)Admission_traverse,
    .tp_clear = (inquiry)Admission_clear,
    .tp_dealloc = (destructor)Admission_dealloc,
    .tp_methods = Admission_methods,
    .tp_init = (initproc)Admission_init,
    .tp_new = PyType_GenericNew,
};

static struct PyModuleDef admission_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "gateway.resource_server._admission",
    .m_doc = "One held token's one-step authorization path, in C.",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__admission(void)
{
    if (PyType_Ready(&AdmissionType) < 0)
        return NULL;
    CHECK_OPTIONS = PyUnicode_InternFromString("check_options");
    ACCEPT = PyUnicode_InternFromString("accept");
    WAIT = PyUnicode_InternFromString("wait");
    ADMITTED = PyFloat_FromDouble(0.0);
    ASK_SCOPE = PyFloat_FromDouble(-1.0);
    ONE = PyLong_FromLong(1);
    if (CHECK_OPTIONS == NULL || ACCEPT == NULL || WAIT == NULL || ADMITTED == NULL
        || ASK_SCOPE == NULL || ONE == NULL)
        return NULL;
    PyObject *module = PyModule_Create(&admission_module);
    if (module == NULL)
        return NULL;
    Py_INCREF(&AdmissionType);
    if (PyModule_AddObject(module, "Admission", (PyObject *)&AdmissionType) < 0) {
        Py_DECREF(&AdmissionType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
