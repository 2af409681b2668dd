/* Shared by the library's sources; not part of the API. */
#ifndef ACEDEV_INTERNAL_H
#define ACEDEV_INTERNAL_H

#include <string.h>

#include "acedev.h"

/* An append-only CBOR writer with a sticky error: once something does not
 * fit, err is ACE_ERR_BUFFER and nothing more is written. */
struct ace_w {
    uint8_t *buf;
    size_t cap;
    size_t len;
    int err;
};

#define ACE_W(out, cap) {(out), (out) ? (cap) : 0, 0, 0}

void ace_w_head(struct ace_w *w, uint8_t major, uint64_t arg);
void ace_w_bytes(struct ace_w *w, const uint8_t *p, size_t n);
void ace_w_byte(struct ace_w *w, uint8_t b);
void ace_w_int(struct ace_w *w, int64_t v);
void ace_w_str(struct ace_w *w, uint8_t major, const uint8_t *p, size_t n);

/* Finish a write: store the length on success. */
static inline int ace_w_done(const struct ace_w *w, size_t *len)
{
    if (w->err) return w->err;
    if (len) *len = w->len;
    return ACE_OK;
}

#endif
