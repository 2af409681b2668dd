/*
 * tokens._mac0: the gateway's per-request check of a canonical COSE_Mac0
 * Proof option (HMAC 256/64 or HMAC 256/256), in one call.
 *
 * It accepts exactly what tokens.proof.MacProofVerifier.check_options
 * accepts (the pure-Python reference, kept and tested against this module
 * byte for byte): the proof's bytes up to the Partial IV equal to the key's, a
 * shortest-form piv of 1..5 bytes, nil payload, a tag of the key's length
 * that is the HMAC (RFC 2104 §2, RFC 9053 §3.1) of the MAC_structure
 * (RFC 9052 §6.3) over the detached content (DESIGN "Per-request proof").
 * The parts of the detached content that depend on the request shape
 * (method, path, query, Content-Format) come from a dict shared with the
 * Python side, filled by a Python callable on a miss.
 *
 * SHA-256 is OpenSSL's (libcrypto, the library Python's hashlib uses); the
 * two padded-key states are hashed once per key and copied per request.
 */
#define PY_SSIZE_T_CLEAN
#define OPENSSL_SUPPRESS_DEPRECATED
#include <Python.h>
#include <string.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>

#define BLOCK 64
#define DIGEST_PART 16 /* sha256(payload)[:16] in the detached content */
#define MAX_PIV_BYTES 5

typedef struct {
    PyObject_HEAD
    PyObject *head;       /* bytes: the canonical proof up to the piv */
    PyObject *prefix;     /* bytes: MAC_structure up to its payload */
    PyObject *tag_head;   /* bytes: nil, then the tag's bstr head */
    PyObject *shapes;     /* dict: (code, path, query, cf) -> bytes */
    PyObject *make_shape; /* callable(key) -> bytes | None, fills shapes */
    Py_ssize_t tag_len;
    SHA256_CTX inner;
    SHA256_CTX outer;
} MacCheck;

/* Preferred-form CBOR head (RFC 8949 §3) of major type `major` and
 * argument `n` into `out`; returns its length. */
static size_t
cbor_head(unsigned char *out, unsigned major, unsigned long long n)
{
    major <<= 5;
    if (n < 24) {
        out[0] = (unsigned char)(major | n);
        return 1;
    }
    if (n < 0x100) {
        out[0] = (unsigned char)(major | 24);
        out[1] = (unsigned char)n;
        return 2;
    }
    if (n < 0x10000) {
        out[0] = (unsigned char)(major | 25);
        out[1] = (unsigned char)(n >> 8);
        out[2] = (unsigned char)n;
        return 3;
    }
    if (n < 0x100000000ULL) {
        out[0] = (unsigned char)(major | 26);
        for (int i = 0; i < 4; i++)
            out[1 + i] = (unsigned char)(n >> (24 - 8 * i));
        return 5;
    }
    out[0] = (unsigned char)(major | 27);
    for (int i = 0; i < 8; i++)
        out[1 + i] = (unsigned char)(n >> (56 - 8 * i));
    return 9;
}

static int
MacCheck_init(MacCheck *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"key", "head", "prefix", "tag_head", "tag_len",
                             "shapes", "make_shape", NULL};
    Py_buffer key;
    PyObject *head, *prefix, *tag_head, *shapes, *make_shape;
    Py_ssize_t tag_len;
    unsigned char block[BLOCK], pad[BLOCK];

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*SSSnO!O", kwlist, &key, &head,
                                     &prefix, &tag_head, &tag_len, &PyDict_Type,
                                     &shapes, &make_shape))
        return -1;
    if (tag_len < 1 || tag_len > SHA256_DIGEST_LENGTH || !PyCallable_Check(make_shape)) {
        PyBuffer_Release(&key);
        PyErr_SetString(PyExc_ValueError, "tag_len must be 1..32, make_shape callable");
        return -1;
    }
    /* RFC 2104 §2: a key longer than the block is hashed first */
    memset(block, 0, BLOCK);
    if (key.len > BLOCK)
        SHA256(key.buf, (size_t)key.len, block);
    else
        memcpy(block, key.buf, (size_t)key.len);
    PyBuffer_Release(&key);
    for (int i = 0; i < BLOCK; i++)
        pad[i] = block[i] ^ 0x36;
    SHA256_Init(&self->inner);
    SHA256_Update(&self->inner, pad, BLOCK);
    for (int i = 0; i < BLOCK; i++)
        pad[i] = block[i] ^ 0x5c;
    SHA256_Init(&self->outer);
    SHA256_Update(&self->outer, pad, BLOCK);
    OPENSSL_cleanse(block, BLOCK);
    OPENSSL_cleanse(pad, BLOCK);

    Py_INCREF(head);
    Py_XSETREF(self->head, head);
    Py_INCREF(prefix);
    Py_XSETREF(self->prefix, prefix);
    Py_INCREF(tag_head);
    Py_XSETREF(self->tag_head, tag_head);
    Py_INCREF(shapes);
    Py_XSETREF(self->shapes, shapes);
    Py_INCREF(make_shape);
    Py_XSETREF(self->make_shape, make_shape);
    self->tag_len = tag_len;
    return 0;
}

static void
MacCheck_dealloc(MacCheck *self)
{
    OPENSSL_cleanse(&self->inner, sizeof self->inner);
    OPENSSL_cleanse(&self->outer, sizeof self->outer);
    Py_CLEAR(self->head);
    Py_CLEAR(self->prefix);
    Py_CLEAR(self->tag_head);
    Py_CLEAR(self->shapes);
    Py_CLEAR(self->make_shape);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* The detached content up to the payload digest for this request shape, a
 * new reference; Py_None (new reference) for a shape that has none; NULL
 * with an exception set on an error. */
static PyObject *
shape_for(MacCheck *self, PyObject *const *parts)
{
    PyObject *key = PyTuple_Pack(4, parts[0], parts[1], parts[2], parts[3]);
    if (key == NULL)
        return NULL;
    PyObject *shape = PyDict_GetItemWithError(self->shapes, key);
    if (shape != NULL) {
        Py_INCREF(shape);
    } else if (!PyErr_Occurred()) {
        shape = PyObject_CallOneArg(self->make_shape, key);
    }
    Py_DECREF(key);
    if (shape != NULL && shape != Py_None && !PyBytes_Check(shape)) {
        Py_DECREF(shape);
        PyErr_SetString(PyExc_TypeError, "make_shape must return bytes or None");
        return NULL;
    }
    return shape;
}

/* The check itself: `code`, `path`, `query`, `cf` make the shape key;
 * `option`, `payload` are bytes, `echo` bytes or Py_None. */
static PyObject *
verify(MacCheck *self, PyObject *option, PyObject *const *shape_parts, PyObject *payload,
       PyObject *echo)
{
    if (self->head == NULL) {
        PyErr_SetString(PyExc_ValueError, "MacCheck was not initialised");
        return NULL;
    }
    if (!PyBytes_Check(option) || !PyBytes_Check(payload) ||
        (echo != Py_None && !PyBytes_Check(echo))) {
        PyErr_SetString(PyExc_TypeError, "option_value, payload, echo must be bytes");
        return NULL;
    }
    const unsigned char *value = (const unsigned char *)PyBytes_AS_STRING(option);
    Py_ssize_t total = PyBytes_GET_SIZE(option);
    Py_ssize_t h = PyBytes_GET_SIZE(self->head);
    Py_ssize_t tag_at = PyBytes_GET_SIZE(self->tag_head);
    Py_ssize_t end = total - tag_at - self->tag_len;
    Py_ssize_t n = end - h - 1; /* piv length, from the total length */

    if (total < h || memcmp(value, PyBytes_AS_STRING(self->head), (size_t)h) != 0)
        Py_RETURN_NONE;
    if (n < 1 || n > MAX_PIV_BYTES || value[h] != 0x40 + n ||
        memcmp(value + end, PyBytes_AS_STRING(self->tag_head), (size_t)tag_at) != 0 ||
        (n > 1 && value[h + 1] == 0))
        Py_RETURN_NONE;
    unsigned long long piv = 0;
    for (Py_ssize_t i = h + 1; i < end; i++)
        piv = piv << 8 | value[i];

    PyObject *shape = shape_for(self, shape_parts);
    if (shape == NULL)
        return NULL;
    if (shape == Py_None)
        return shape; /* a shape without detached content: not this path's */

    /* the detached content after the shape: payload digest, piv, echo */
    unsigned char tail[1 + DIGEST_PART + 9 + 9], digest[SHA256_DIGEST_LENGTH];
    size_t t = 0;
    Py_ssize_t payload_len = PyBytes_GET_SIZE(payload);
    if (payload_len) {
        SHA256((const unsigned char *)PyBytes_AS_STRING(payload), (size_t)payload_len,
               digest);
        tail[t++] = 0x40 | DIGEST_PART;
        memcpy(tail + t, digest, DIGEST_PART);
        t += DIGEST_PART;
    } else {
        tail[t++] = 0x40;
    }
    t += cbor_head(tail + t, 0, piv);
    Py_ssize_t echo_len = 0;
    if (echo == Py_None) {
        tail[t++] = 0xf6;
    } else {
        echo_len = PyBytes_GET_SIZE(echo);
        t += cbor_head(tail + t, 2, (unsigned long long)echo_len);
    }
    Py_ssize_t shape_len = PyBytes_GET_SIZE(shape);
    unsigned char content_head[9];
    size_t ch = cbor_head(content_head, 2,
                          (unsigned long long)(shape_len + (Py_ssize_t)t + echo_len));

    SHA256_CTX ctx = self->inner;
    SHA256_Update(&ctx, PyBytes_AS_STRING(self->prefix),
                  (size_t)PyBytes_GET_SIZE(self->prefix));
    SHA256_Update(&ctx, content_head, ch);
    SHA256_Update(&ctx, PyBytes_AS_STRING(shape), (size_t)shape_len);
    SHA256_Update(&ctx, tail, t);
    if (echo_len)
        SHA256_Update(&ctx, PyBytes_AS_STRING(echo), (size_t)echo_len);
    SHA256_Final(digest, &ctx);
    ctx = self->outer;
    SHA256_Update(&ctx, digest, SHA256_DIGEST_LENGTH);
    SHA256_Final(digest, &ctx);
    OPENSSL_cleanse(&ctx, sizeof ctx);
    Py_DECREF(shape);

    if (CRYPTO_memcmp(digest, value + end + tag_at, (size_t)self->tag_len) != 0)
        Py_RETURN_NONE;
    return PyLong_FromUnsignedLongLong(piv);
}

/* option number -> the first of its options, borrowed; NULL if absent
 * (no exception) or on an error (exception set). */
static PyObject *
first_value(PyObject *options, PyObject *number, PyObject **list)
{
    *list = PyDict_GetItemWithError(options, number);
    if (*list == NULL)
        return NULL;
    if (!PyList_Check(*list) || PyList_GET_SIZE(*list) < 1) {
        PyErr_SetString(PyExc_TypeError, "options must map numbers to non-empty lists");
        return NULL;
    }
    return PyList_GET_ITEM(*list, 0);
}

static PyObject *URI_QUERY, *CONTENT_FORMAT, *ECHO, *VALUE;

PyDoc_STRVAR(check_options_doc,
"check_options(option_value, code, path, options, payload)\n--\n\n"
"The proof's piv when option_value is this key's canonical Mac0 proof\n"
"for the request as received and its MAC verifies (RFC 9052 §6.3);\n"
"None otherwise. Uri-Query, Content-Format and Echo are read from\n"
"``options`` (option number -> list of options with a ``value``), as\n"
"tokens.proof.covered reads them.");

static PyObject *
MacCheck_check_options(MacCheck *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5 || !PyDict_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError, "check_options() takes 5 arguments, options a dict");
        return NULL;
    }
    PyObject *options = args[3], *list, *first;
    PyObject *code = NULL, *query = NULL, *cf = NULL, *echo = NULL, *result = NULL;

    code = PyNumber_Index(args[1]);
    if (code == NULL)
        goto done;
    list = PyDict_GetItemWithError(options, URI_QUERY);
    if (list == NULL) {
        if (PyErr_Occurred())
            goto done;
        query = PyTuple_New(0);
    } else {
        if (!PyList_Check(list)) {
            PyErr_SetString(PyExc_TypeError, "options must map numbers to lists");
            goto done;
        }
        Py_ssize_t n = PyList_GET_SIZE(list);
        query = PyTuple_New(n);
        for (Py_ssize_t i = 0; query != NULL && i < n; i++) {
            PyObject *item = PyObject_GetAttr(PyList_GET_ITEM(list, i), VALUE);
            if (item == NULL)
                goto done;
            PyTuple_SET_ITEM(query, i, item);
        }
    }
    if (query == NULL)
        goto done;
    first = first_value(options, CONTENT_FORMAT, &list);
    if (first == NULL) {
        if (PyErr_Occurred())
            goto done;
        cf = Py_NewRef(Py_None);
    } else {
        PyObject *value = PyObject_GetAttr(first, VALUE);
        if (value == NULL)
            goto done;
        cf = PyNumber_Long(value);
        Py_DECREF(value);
        if (cf == NULL)
            goto done;
    }
    first = first_value(options, ECHO, &list);
    if (first == NULL) {
        if (PyErr_Occurred())
            goto done;
        echo = Py_NewRef(Py_None);
    } else {
        echo = PyObject_GetAttr(first, VALUE);
        if (echo == NULL)
            goto done;
    }
    PyObject *parts[4] = {code, args[2], query, cf};
    result = verify(self, args[0], parts, args[4], echo);
done:
    Py_XDECREF(code);
    Py_XDECREF(query);
    Py_XDECREF(cf);
    Py_XDECREF(echo);
    return result;
}

static PyMethodDef MacCheck_methods[] = {
    {"check_options", (PyCFunction)(void (*)(void))MacCheck_check_options, METH_FASTCALL,
     check_options_doc},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(MacCheck_doc,
"MacCheck(key, head, prefix, tag_head, tag_len, shapes, make_shape)\n--\n\n"
"One HMAC-SHA-256 PoP key's canonical Mac0 proof check (see\n"
"tokens.proof.MacProofVerifier, which builds it).");

static PyTypeObject MacCheckType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "tokens._mac0.MacCheck",
    .tp_basicsize = sizeof(MacCheck),
    .tp_dealloc = (destructor)MacCheck_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = MacCheck_doc,
    .tp_methods = MacCheck_methods,
    .tp_init = (initproc)MacCheck_init,
    .tp_new = PyType_GenericNew,
};

static struct PyModuleDef mac0_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "tokens._mac0",
    .m_doc = "The canonical COSE_Mac0 Proof option check, in C.",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__mac0(void)
{
    if (PyType_Ready(&MacCheckType) < 0)
        return NULL;
    /* option numbers (RFC 7252 §12.2, RFC 9175 §2.2) and the value attribute */
    URI_QUERY = PyLong_FromLong(15);
    CONTENT_FORMAT = PyLong_FromLong(12);
    ECHO = PyLong_FromLong(252);
    VALUE = PyUnicode_InternFromString("value");
    if (URI_QUERY == NULL || CONTENT_FORMAT == NULL || ECHO == NULL || VALUE == NULL)
        return NULL;
    PyObject *module = PyModule_Create(&mac0_module);
    if (module == NULL)
        return NULL;
    Py_INCREF(&MacCheckType);
    if (PyModule_AddObject(module, "MacCheck", (PyObject *)&MacCheckType) < 0) {
        Py_DECREF(&MacCheckType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
