/*
 * tokens._window: the replay window of one PoP key (RFC 8613 §7.4), in C.
 *
 * Window behaves exactly as tokens.replay.ReplayWindow, the pure-Python
 * reference (kept, and tested against this type on the same sequences):
 * `top` is the highest sequence number committed, bit d of a 64-bit mask is
 * set when top - d was seen, and a window starts at a piv just proven fresh
 * with that piv and every lower one counted as seen. The gateway calls
 * `accept` once per request; here it allocates nothing.
 *
 * Sequence numbers are 0..2**64-1 here (the Proof option's are 0..2**40-1);
 * a larger or negative one raises OverflowError / ValueError.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#define WINDOW_SIZE 64

typedef struct {
    PyObject_HEAD
    unsigned long long top;
    unsigned long long seen; /* bit d: top - d was seen */
    double opened_at;
    char used; /* a piv was committed since the guard last passed over it */
} Window;

static PyObject *ReplayError; /* tokens.errors.ReplayError */

/* The piv as an unsigned 64-bit number; -1 with an exception set when it is
 * not an int in range (callers test PyErr_Occurred on -1). */
static unsigned long long
piv_of(PyObject *arg)
{
    if (!PyLong_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "piv must be an int, not %.100s", Py_TYPE(arg)->tp_name);
        return (unsigned long long)-1;
    }
    if (_PyLong_Sign(arg) < 0) {
        PyErr_SetString(PyExc_ValueError, "piv must not be negative");
        return (unsigned long long)-1;
    }
    return PyLong_AsUnsignedLongLong(arg);
}

/* 0: fresh; 1: already seen; 2: below the window. */
static int
status(const Window *self, unsigned long long piv)
{
    if (piv > self->top)
        return 0;
    unsigned long long distance = self->top - piv;
    if (distance >= WINDOW_SIZE)
        return 2;
    return (self->seen >> distance) & 1 ? 1 : 0;
}

/* The status of the piv in `arg` (see status()), the piv in *piv; -1 with
 * an exception set when `arg` is not a piv. */
static int
status_of(const Window *self, PyObject *arg, unsigned long long *piv)
{
    *piv = piv_of(arg);
    if (*piv == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    return status(self, *piv);
}

/* Mark a fresh piv (status 0) as seen, sliding the window forward if it is
 * the new highest. */
static void
mark(Window *self, unsigned long long piv)
{
    if (piv > self->top) {
        unsigned long long shift = piv - self->top;
        self->seen = shift < WINDOW_SIZE ? (self->seen << shift) | 1 : 1;
        self->top = piv;
    }
    else {
        self->seen |= 1ULL << (self->top - piv);
    }
    self->used = 1;
}

/* A window made without __init__ counts every piv as seen (refuses all). */
static PyObject *
Window_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    Window *self = (Window *)type->tp_alloc(type, 0);
    if (self != NULL) {
        self->top = ~0ULL;
        self->seen = ~0ULL;
    }
    return (PyObject *)self;
}

static int
Window_init(Window *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"initial_piv", "opened_at", NULL};
    PyObject *initial;
    double opened_at = 0.0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|d:Window", kwlist, &initial, &opened_at))
        return -1;
    unsigned long long piv = piv_of(initial);
    if (piv == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    self->top = piv;
    self->seen = ~0ULL;
    self->opened_at = opened_at;
    self->used = 0;
    return 0;
}

PyDoc_STRVAR(accept_doc,
"accept(piv) -> bool\n--\n\n"
"commit() without the exception: False (and nothing marked) when piv was\n"
"seen or is below the window.");

static PyObject *
Window_accept(Window *self, PyObject *arg)
{
    unsigned long long piv;
    int why = status_of(self, arg, &piv);
    if (why < 0)
        return NULL;
    if (why != 0)
        Py_RETURN_FALSE;
    mark(self, piv);
    Py_RETURN_TRUE;
}

/* check() and, when `commit`, commit(): ReplayError saying why a piv seen
 * or below the window is refused; else None, the piv marked if `commit`. */
static PyObject *
judge(Window *self, PyObject *arg, int commit)
{
    unsigned long long piv;
    int why = status_of(self, arg, &piv);
    if (why < 0)
        return NULL;
    if (why != 0) {
        PyErr_SetString(ReplayError, why == 2 ? "sequence number below the replay window"
                                              : "sequence number already seen");
        return NULL;
    }
    if (commit)
        mark(self, piv);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(check_doc,
"check(piv) -> None\n--\n\n"
"Raise ReplayError (4.01) if piv was seen or is below the window\n"
"(RFC 8613 §7.4); do not mark it.");

static PyObject *
Window_check(Window *self, PyObject *arg)
{
    return judge(self, arg, 0);
}

PyDoc_STRVAR(commit_doc,
"commit(piv) -> None\n--\n\n"
"Mark piv as seen, sliding the window forward if it is the new highest;\n"
"ReplayError, with nothing marked, if it was seen or is below the window.");

static PyObject *
Window_commit(Window *self, PyObject *arg)
{
    return judge(self, arg, 1);
}

static PyObject *
Window_top(Window *self, void *closure)
{
    return PyLong_FromUnsignedLongLong(self->top);
}

static PyObject *
Window_repr(Window *self)
{
    return PyUnicode_FromFormat("<ReplayWindow top=%llu>", self->top);
}

static PyMethodDef Window_methods[] = {
    {"accept", (PyCFunction)Window_accept, METH_O, accept_doc},
    {"check", (PyCFunction)Window_check, METH_O, check_doc},
    {"commit", (PyCFunction)Window_commit, METH_O, commit_doc},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Window_members[] = {
    {"opened_at", T_DOUBLE, offsetof(Window, opened_at), 0,
     "When the Echo that opened this window was issued."},
    {"used", T_BOOL, offsetof(Window, used), 0,
     "A piv was committed since the guard last passed over this window."},
    {NULL},
};

static PyGetSetDef Window_getset[] = {
    {"top", (getter)Window_top, NULL, "Highest sequence number committed so far.", NULL},
    {NULL},
};

PyDoc_STRVAR(Window_doc,
"Window(initial_piv, opened_at=0.0)\n--\n\n"
"Sliding window over one PoP key's sequence numbers (RFC 8613 §7.4);\n"
"see tokens.replay.ReplayWindow.");

static PyTypeObject WindowType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tokens._window.Window",
    .tp_basicsize = sizeof(Window),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = Window_doc,
    .tp_repr = (reprfunc)Window_repr,
    .tp_methods = Window_methods,
    .tp_members = Window_members,
    .tp_getset = Window_getset,
    .tp_init = (initproc)Window_init,
    .tp_new = Window_new,
};

/* ------------------------------------------------------------------------
 * Windows: the base of tokens.replay.FreshnessGuard, holding its windows by
 * kid (an OrderedDict, oldest first; the guard evicts with a second chance
 * for windows used since) and the per-request accept. */

typedef struct {
    PyObject_HEAD
    PyObject *windows; /* OrderedDict: kid -> Window */
} Windows;

static PyObject *ORDERED_DICT; /* collections.OrderedDict */

static PyObject *
Windows_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    Windows *self = (Windows *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->windows = PyObject_CallNoArgs(ORDERED_DICT);
    if (self->windows == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static int
Windows_traverse(Windows *self, visitproc visit, void *arg)
{
    Py_VISIT(self->windows);
    return 0;
}

static int
Windows_clear(Windows *self)
{
    Py_CLEAR(self->windows);
    return 0;
}

static void
Windows_dealloc(Windows *self)
{
    PyObject_GC_UnTrack(self);
    Windows_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

PyDoc_STRVAR(Windows_accept_doc,
"accept(kid, piv) -> bool\n--\n\n"
"Commit a verified proof's piv to the open window of kid (marking it used);\n"
"False, with nothing changed, when there is no window or the window\n"
"refuses it.");

static PyObject *
Windows_accept(Windows *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "accept() takes 2 arguments (%zd given)", nargs);
        return NULL;
    }
    /* reading an OrderedDict with the dict API is safe (writes would have
     * to go through its methods) */
    PyObject *window = PyDict_GetItemWithError(self->windows, args[0]);
    if (window == NULL) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_FALSE;
    }
    if (!Py_IS_TYPE(window, &WindowType)) {
        PyErr_SetString(PyExc_TypeError, "a Windows holds only Window objects");
        return NULL;
    }
    unsigned long long piv;
    int why = status_of((Window *)window, args[1], &piv);
    if (why < 0)
        return NULL;
    if (why != 0)
        Py_RETURN_FALSE;
    mark((Window *)window, piv);
    Py_RETURN_TRUE;
}

static PyMethodDef Windows_methods[] = {
    {"accept", (PyCFunction)(void (*)(void))Windows_accept, METH_FASTCALL, Windows_accept_doc},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Windows_members[] = {
    {"_windows", T_OBJECT_EX, offsetof(Windows, windows), READONLY,
     "kid -> window, oldest first."},
    {NULL},
};

PyDoc_STRVAR(Windows_doc,
"Windows()\n--\n\n"
"Replay windows by kid with the per-request accept (the base of\n"
"tokens.replay.FreshnessGuard; see tokens.replay.Windows for the reference).");

static PyTypeObject WindowsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tokens._window.Windows",
    .tp_basicsize = sizeof(Windows),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = Windows_doc,
    .tp_traverse = (traverseproc)Windows_traverse,
    .tp_clear = (inquiry)Windows_clear,
    .tp_dealloc = (destructor)Windows_dealloc,
    .tp_methods = Windows_methods,
    .tp_members = Windows_members,
    .tp_new = Windows_new,
};

static struct PyModuleDef window_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "tokens._window",
    .m_doc = "The replay window of one PoP key, in C.",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__window(void)
{
    if (PyType_Ready(&WindowType) < 0 || PyType_Ready(&WindowsType) < 0)
        return NULL;
    PyObject *collections = PyImport_ImportModule("collections");
    if (collections == NULL)
        return NULL;
    ORDERED_DICT = PyObject_GetAttrString(collections, "OrderedDict");
    Py_DECREF(collections);
    if (ORDERED_DICT == NULL)
        return NULL;
    PyObject *errors = PyImport_ImportModule("tokens.errors");
    if (errors == NULL)
        return NULL;
    ReplayError = PyObject_GetAttrString(errors, "ReplayError");
    Py_DECREF(errors);
    if (ReplayError == NULL)
        return NULL;
    PyObject *module = PyModule_Create(&window_module);
    if (module == NULL)
        return NULL;
    Py_INCREF(&WindowType);
    if (PyModule_AddObject(module, "Window", (PyObject *)&WindowType) < 0) {
        Py_DECREF(&WindowType);
        Py_DECREF(module);
        return NULL;
    }
    Py_INCREF(&WindowsType);
    if (PyModule_AddObject(module, "Windows", (PyObject *)&WindowsType) < 0) {
        Py_DECREF(&WindowsType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
