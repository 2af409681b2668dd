/* Reading a CoAP response (RFC 7252 §3) for what the device acts on, and
 * what to do with it (firmware_notes/device.md, "What to do with every answer"). */
#include "internal.h"

static int read_ext(const uint8_t *msg, size_t len, size_t *pos, uint32_t nibble, uint32_t *v)
{
    if (nibble < 13) {
        *v = nibble;
    } else if (nibble == 13) {
        if (*pos + 1 > len) return ACE_ERR_MALFORMED;
        *v = 13u + msg[*pos];
        *pos += 1;
    } else if (nibble == 14) {
        if (*pos + 2 > len) return ACE_ERR_MALFORMED;
        *v = 269u + ((uint32_t)msg[*pos] << 8 | msg[*pos + 1]);
        *pos += 2;
    } else {
        return ACE_ERR_MALFORMED; /* 15 is reserved outside the payload marker */
    }
    return ACE_OK;
}

static int read_uint(const uint8_t *p, size_t n, uint32_t *v)
{
    if (n > 4) return ACE_ERR_MALFORMED;
    *v = 0;
    for (size_t i = 0; i < n; i++) *v = (*v << 8) | p[i];
    return ACE_OK;
}

int ace_coap_response_parse(const uint8_t *msg, size_t len, struct ace_coap_response *out)
{
    size_t pos = 4;
    uint32_t number = 0;
    int seen_echo = 0, seen_cf = 0;
    if (!msg || !out) return ACE_ERR_ARG;
    memset(out, 0, sizeof *out);
    out->content_format = -1;
    if (len < 4 || (msg[0] >> 6) != 1) return ACE_ERR_MALFORMED;
    out->type = (uint8_t)((msg[0] >> 4) & 3);
    out->token_len = msg[0] & 0x0f;
    out->code = msg[1];
    out->mid = (uint16_t)(msg[2] << 8 | msg[3]);
    if (out->token_len > 8 || pos + out->token_len > len) return ACE_ERR_MALFORMED;
    memcpy(out->token, msg + pos, out->token_len);
    pos += out->token_len;
    while (pos < len) {
        uint8_t b = msg[pos++];
        uint32_t delta, olen;
        int rc;
        const uint8_t *value;
        if (b == 0xff) {
            if (pos == len) return ACE_ERR_MALFORMED; /* marker with no payload */
            out->payload.ptr = msg + pos;
            out->payload.len = len - pos;
            break;
        }
        if ((rc = read_ext(msg, len, &pos, b >> 4, &delta))) return rc;
        if ((rc = read_ext(msg, len, &pos, b & 0x0f, &olen))) return rc;
        if (olen > len - pos) return ACE_ERR_MALFORMED;
        number += delta;
        if (number > 0xffffu) return ACE_ERR_MALFORMED;
        value = msg + pos;
        pos += olen;
        switch (number) {
        case ACE_OPT_ECHO:
            if (seen_echo++ || olen < 1 || olen > ACE_ECHO_MAX) return ACE_ERR_MALFORMED;
            out->echo.ptr = value;
            out->echo.len = olen;
            break;
        case ACE_OPT_CONTENT_FORMAT: {
            uint32_t cf;
            if (seen_cf++ || olen > 2 || (rc = read_uint(value, olen, &cf)))
                return ACE_ERR_MALFORMED;
            out->content_format = (int32_t)cf;
            break;
        }
        case ACE_OPT_MAX_AGE:
            if (out->has_max_age || (rc = read_uint(value, olen, &out->max_age)))
                return ACE_ERR_MALFORMED;
            out->has_max_age = 1;
            break;
        default: break;
        }
    }
    return ACE_OK;
}

#define CODE(c, d) ((uint8_t)((c) << 5 | (d)))

enum ace_action ace_classify(const struct ace_coap_response *m)
{
    uint8_t cls = (uint8_t)(m->code >> 5);
    if (cls == 2) return ACE_ACT_DONE;
    switch (m->code) {
    case CODE(4, 1):
        if (m->echo.len) return ACE_ACT_REPEAT_ECHO;
        if (m->content_format == ACE_CF_ACE_CBOR) return ACE_ACT_UPLOAD_TOKEN;
        return ACE_ACT_NEW_TOKEN;
    case CODE(4, 3):
    case CODE(4, 5): return ACE_ACT_NOT_AUTHORIZED;
    case CODE(4, 29):
    case CODE(5, 3): return ACE_ACT_WAIT;
    case CODE(5, 2):
    case CODE(5, 4): return ACE_ACT_RETRY_LATER;
    default: return cls == 5 ? ACE_ACT_RETRY_LATER : ACE_ACT_FIX_REQUEST;
    }
}

uint32_t ace_wait_seconds(const struct ace_coap_response *m)
{
    return m->has_max_age ? m->max_age : 60u;
}
