/*
 * gateway.dtls._codec: the options and payload of a CoAP message
 * (RFC 7252 §3.1), decoded into aiocoap option objects, in C.
 *
 * parse_options(data, start, specs, spec_of) behaves exactly as
 * gateway.dtls.codec.parse_options, the pure-Python reference (kept, and
 * tested against this function and against aiocoap's own decoder): the same
 * option objects, in a dict keyed by aiocoap's option numbers, the same
 * payload, the same errors with the same messages. `specs` maps an option
 * number to how to build its object, (kind, cls, number) with kind 0
 * opaque, 1 string (UTF-8), 2 uint: an instance of cls with `value` and
 * `number` set, as their __init__ does; or (3, make, None): make(raw). A
 * number not in `specs` is asked of spec_of(number), which remembers it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define PAYLOAD_MARKER 0xFF

enum { OPAQUE = 0, STRING = 1, UINT = 2, CALL = 3 };

static PyObject *Unparsable; /* aiocoap.error.UnparsableMessage */
static PyObject *VALUE;      /* "value" */
static PyObject *NUMBER;     /* "number" */
static PyObject *EMPTY;      /* () */

static PyObject *
unparsable(const char *why)
{
    PyErr_SetString(Unparsable, why);
    return NULL;
}

/* The option object for `raw` (length `len`) built as `spec` says. */
static PyObject *
make_option(PyObject *spec, const unsigned char *raw, Py_ssize_t len)
{
    if (!PyTuple_CheckExact(spec) || PyTuple_GET_SIZE(spec) != 3) {
        PyErr_SetString(PyExc_TypeError, "an option spec is a (kind, cls, number) tuple");
        return NULL;
    }
    long kind = PyLong_AsLong(PyTuple_GET_ITEM(spec, 0));
    if (kind == -1 && PyErr_Occurred())
        return NULL;
    PyObject *cls = PyTuple_GET_ITEM(spec, 1);
    PyObject *value;
    switch (kind) {
    case OPAQUE:
        value = PyBytes_FromStringAndSize((const char *)raw, len);
        break;
    case STRING:
        value = PyUnicode_DecodeUTF8((const char *)raw, len, "strict");
        break;
    case UINT:
        value = _PyLong_FromByteArray(raw, (size_t)len, 0, 0);
        break;
    case CALL: {
        PyObject *bytes = PyBytes_FromStringAndSize((const char *)raw, len);
        if (bytes == NULL)
            return NULL;
        PyObject *option = PyObject_CallOneArg(cls, bytes);
        Py_DECREF(bytes);
        return option;
    }
    default:
        PyErr_Format(PyExc_ValueError, "unknown option spec kind %ld", kind);
        return NULL;
    }
    if (value == NULL)
        return NULL;
    if (!PyType_Check(cls)) {
        Py_DECREF(value);
        PyErr_SetString(PyExc_TypeError, "an option spec names a class");
        return NULL;
    }
    /* object.__new__(cls), then what cls.__init__(number, value) sets */
    PyObject *option = PyBaseObject_Type.tp_new((PyTypeObject *)cls, EMPTY, NULL);
    if (option == NULL || PyObject_SetAttr(option, VALUE, value) < 0
        || PyObject_SetAttr(option, NUMBER, PyTuple_GET_ITEM(spec, 2)) < 0) {
        Py_XDECREF(option);
        Py_DECREF(value);
        return NULL;
    }
    Py_DECREF(value);
    return option;
}

/* An option delta or length nibble of 13-15 with its extended bytes at
 * *i (RFC 7252 §3.1): the value, *i moved past them; -1 with an exception. */
static long
extended(long nibble, const unsigned char *data, Py_ssize_t n, Py_ssize_t *i)
{
    if (nibble == 13) {
        if (*i + 1 > n)
            goto short_;
        return data[(*i)++] + 13;
    }
    if (nibble == 14) {
        if (*i + 2 > n)
            goto short_;
        long value = ((long)data[*i] << 8 | data[*i + 1]) + 269;
        *i += 2;
        return value;
    }
    unparsable("Option contained partial payload marker.");
    return -1;
short_:
    unparsable("Option ended prematurely");
    return -1;
}

PyDoc_STRVAR(parse_options_doc,
"parse_options(data, start, specs, spec_of) -> (options, payload)\n--\n\n"
"The options from data[start:] (a dict: option number -> list of option\n"
"objects) and the payload after them (RFC 7252 §3.1); UnparsableMessage\n"
"for a message format error.");

static PyObject *
parse_options(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_Format(PyExc_TypeError, "parse_options() takes 4 arguments (%zd given)", nargs);
        return NULL;
    }
    if (!PyBytes_Check(args[0]) || !PyDict_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "parse_options(bytes, int, dict, callable)");
        return NULL;
    }
    const unsigned char *data = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    Py_ssize_t n = PyBytes_GET_SIZE(args[0]);
    Py_ssize_t i = PyLong_AsSsize_t(args[1]);
    if (i == -1 && PyErr_Occurred())
        return NULL;
    if (i < 0 || i > n) {
        PyErr_SetString(PyExc_ValueError, "start outside the data");
        return NULL;
    }
    PyObject *specs = args[2], *spec_of = args[3];
    PyObject *options = PyDict_New();
    PyObject *payload = NULL;
    if (options == NULL)
        return NULL;
    long number = 0;
    while (i < n) {
        unsigned char byte = data[i];
        if (byte == PAYLOAD_MARKER) {
            if (i + 1 == n) {
                unparsable("Payload marker with no payload");
                goto error;
            }
            payload = PyBytes_FromStringAndSize((const char *)data + i + 1, n - i - 1);
            if (payload == NULL)
                goto error;
            break;
        }
        long delta = byte >> 4, length = byte & 0x0F;
        i++;
        if (delta >= 13 && (delta = extended(delta, data, n, &i)) < 0)
            goto error;
        if (length >= 13 && (length = extended(length, data, n, &i)) < 0)
            goto error;
        number += delta;
        if (i + length > n) {
            unparsable("Option announced but absent");
            goto error;
        }
        PyObject *key = PyLong_FromLong(number);
        if (key == NULL)
            goto error;
        PyObject *spec = PyDict_GetItemWithError(specs, key); /* borrowed */
        if (spec != NULL) {
            Py_INCREF(spec);
        }
        else if (!PyErr_Occurred()) {
            spec = PyObject_CallOneArg(spec_of, key);
        }
        Py_DECREF(key);
        if (spec == NULL)
            goto error;
        PyObject *option = make_option(spec, data + i, length);
        Py_DECREF(spec);
        if (option == NULL)
            goto error;
        i += length;
        /* keyed by the option's own number object (aiocoap's OptionNumber) */
        PyObject *opt_number = PyObject_GetAttr(option, NUMBER);
        if (opt_number == NULL) {
            Py_DECREF(option);
            goto error;
        }
        PyObject *same = PyDict_GetItemWithError(options, opt_number); /* borrowed */
        int failed;
        if (same != NULL) {
            failed = PyList_Append(same, option);
        }
        else if (PyErr_Occurred()) {
            failed = -1;
        }
        else {
            PyObject *list = PyList_New(1);
            if (list == NULL) {
                failed = -1;
            }
            else {
                Py_INCREF(option);
                PyList_SET_ITEM(list, 0, option);
                failed = PyDict_SetItem(options, opt_number, list);
                Py_DECREF(list);
            }
        }
        Py_DECREF(opt_number);
        Py_DECREF(option);
        if (failed < 0)
            goto error;
    }
    if (payload == NULL) {
        payload = PyBytes_FromStringAndSize(NULL, 0);
        if (payload == NULL)
            goto error;
    }
    PyObject *result = PyTuple_Pack(2, options, payload);
    Py_DECREF(options);
    Py_DECREF(payload);
    return result;
error:
    Py_DECREF(options);
    Py_XDECREF(payload);
    return NULL;
}

static PyMethodDef codec_methods[] = {
    {"parse_options", (PyCFunction)(void (*)(void))parse_options, METH_FASTCALL,
     parse_options_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef codec_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "gateway.dtls._codec",
    .m_doc = "The options and payload of a CoAP message, decoded in C.",
    .m_size = -1,
    .m_methods = codec_methods,
};

PyMODINIT_FUNC
PyInit__codec(void)
{
    PyObject *error = PyImport_ImportModule("aiocoap.error");
    if (error == NULL)
        return NULL;
    Unparsable = PyObject_GetAttrString(error, "UnparsableMessage");
    Py_DECREF(error);
    VALUE = PyUnicode_InternFromString("value");
    NUMBER = PyUnicode_InternFromString("number");
    EMPTY = PyTuple_New(0);
    if (Unparsable == NULL || VALUE == NULL || NUMBER == NULL || EMPTY == NULL)
        return NULL;
    return PyModule_Create(&codec_module);
}
