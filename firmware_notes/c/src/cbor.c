/* CBOR heads and a bounded reader (RFC 8949 §3). */
#include "internal.h"

const char *ace_strerror(int err)
{
    switch (err) {
    case ACE_OK: return "ok";
    case ACE_ERR_BUFFER: return "buffer too small";
    case ACE_ERR_MALFORMED: return "malformed input";
    case ACE_ERR_RANGE: return "value out of range";
    case ACE_ERR_UNSUPPORTED: return "unsupported encoding";
    case ACE_ERR_MISSING: return "required field missing";
    case ACE_ERR_CRYPTO: return "crypto hook failed";
    case ACE_ERR_EXHAUSTED: return "exhausted";
    case ACE_ERR_ARG: return "invalid argument";
    default: return "unknown error";
    }
}

size_t ace_cbor_head_len(uint64_t arg)
{
    if (arg < 24) return 1;
    if (arg <= 0xffu) return 2;
    if (arg <= 0xffffu) return 3;
    if (arg <= 0xffffffffu) return 5;
    return 9;
}

/* notes:begin cbor_head */
/* CBOR head (RFC 8949 §3.1): major type and argument, shortest form. */
int ace_cbor_head(uint8_t *out, size_t cap, size_t *len, uint8_t major, uint64_t arg)
{
    size_t n = ace_cbor_head_len(arg);
    uint8_t mt = (uint8_t)(major << 5);
    if (major > 7) return ACE_ERR_RANGE;
    if (n > cap) return ACE_ERR_BUFFER;
    if (n == 1) {
        out[0] = (uint8_t)(mt | arg);
    } else {
        static const uint8_t info[10] = {0, 0, 24, 25, 0, 26, 0, 0, 0, 27};
        out[0] = (uint8_t)(mt | info[n]);
        for (size_t i = 1; i < n; i++) out[i] = (uint8_t)(arg >> (8 * (n - 1 - i)));
    }
    *len = n;
    return ACE_OK;
}
/* notes:end cbor_head */

/* ---- the writer used by every encoder in this library ------------------ */

void ace_w_head(struct ace_w *w, uint8_t major, uint64_t arg)
{
    size_t n;
    if (w->err) return;
    if (ace_cbor_head(w->buf + w->len, w->cap - w->len, &n, major, arg) != ACE_OK) {
        w->err = ACE_ERR_BUFFER;
        return;
    }
    w->len += n;
}

void ace_w_bytes(struct ace_w *w, const uint8_t *p, size_t n)
{
    if (w->err) return;
    if (n > w->cap - w->len) {
        w->err = ACE_ERR_BUFFER;
        return;
    }
    if (n) memcpy(w->buf + w->len, p, n);
    w->len += n;
}

void ace_w_byte(struct ace_w *w, uint8_t b)
{
    ace_w_bytes(w, &b, 1);
}

void ace_w_int(struct ace_w *w, int64_t v)
{
    if (v >= 0) ace_w_head(w, 0, (uint64_t)v);
    else ace_w_head(w, 1, (uint64_t)(-1 - v));
}

void ace_w_str(struct ace_w *w, uint8_t major, const uint8_t *p, size_t n)
{
    ace_w_head(w, major, n);
    ace_w_bytes(w, p, n);
}

/* ---- the reader ---------------------------------------------------------- */

void ace_cbor_init(struct ace_cbor *d, const uint8_t *buf, size_t len)
{
    d->buf = buf;
    d->len = len;
    d->pos = 0;
}

int ace_cbor_read_head(struct ace_cbor *d, uint8_t *major, uint64_t *arg)
{
    uint8_t ib, info;
    uint64_t v;
    if (d->pos >= d->len) return ACE_ERR_MALFORMED;
    ib = d->buf[d->pos++];
    *major = (uint8_t)(ib >> 5);
    info = (uint8_t)(ib & 0x1f);
    if (info < 24) {
        v = info;
    } else if (info <= 27) {
        size_t n = (size_t)1 << (info - 24);
        if (n > d->len - d->pos) return ACE_ERR_MALFORMED;
        v = 0;
        for (size_t i = 0; i < n; i++) v = (v << 8) | d->buf[d->pos++];
    } else if (info == 31) {
        return ACE_ERR_UNSUPPORTED; /* indefinite length / break */
    } else {
        return ACE_ERR_MALFORMED; /* 28..30 are reserved */
    }
    if ((*major == 2 || *major == 3) && v > d->len - d->pos) return ACE_ERR_MALFORMED;
    *arg = v;
    return ACE_OK;
}

int ace_cbor_skip(struct ace_cbor *d)
{
    /* Items still to read. Every item takes at least one byte, so a count
     * above the bytes left is malformed, which also keeps it from overflowing. */
    uint64_t todo = 1;
    while (todo) {
        uint8_t major;
        uint64_t arg;
        int rc = ace_cbor_read_head(d, &major, &arg);
        if (rc) return rc;
        todo--;
        switch (major) {
        case 2:
        case 3: d->pos += (size_t)arg; break;
        case 4:
            if (arg > d->len - d->pos) return ACE_ERR_MALFORMED;
            todo += arg;
            break;
        case 5:
            if (arg > (d->len - d->pos) / 2) return ACE_ERR_MALFORMED;
            todo += 2 * arg;
            break;
        case 6: todo += 1; break; /* a tag is followed by one item */
        default: break;           /* integers, simple values, floats */
        }
        if (todo > d->len - d->pos) return ACE_ERR_MALFORMED;
    }
    return ACE_OK;
}

int ace_cbor_read_int(struct ace_cbor *d, int64_t *v)
{
    uint8_t major;
    uint64_t arg;
    size_t start = d->pos;
    int rc = ace_cbor_read_head(d, &major, &arg);
    if (rc) return rc;
    if (major > 1) {
        d->pos = start;
        return ACE_ERR_MALFORMED;
    }
    if (arg > (uint64_t)INT64_MAX) return ACE_ERR_RANGE;
    *v = major == 0 ? (int64_t)arg : -1 - (int64_t)arg;
    return ACE_OK;
}

int ace_cbor_read_str(struct ace_cbor *d, uint8_t want, struct ace_bytes *out)
{
    uint8_t major;
    uint64_t arg;
    size_t start = d->pos;
    int rc = ace_cbor_read_head(d, &major, &arg);
    if (rc) return rc;
    if (major != want) {
        d->pos = start;
        return ACE_ERR_MALFORMED;
    }
    out->ptr = d->buf + d->pos;
    out->len = (size_t)arg;
    d->pos += (size_t)arg;
    return ACE_OK;
}
