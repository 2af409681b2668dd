/* ACE messages (RFC 9200 §5.3, §5.8): the token request, the token response,
 * the error response and AS Request Creation Hints. */
#include "internal.h"

#define P_ACCESS_TOKEN 1
#define P_EXPIRES_IN 2
#define P_REQ_CNF 4
#define P_CNF 8
#define P_SCOPE 9
#define P_ERROR 30
#define P_ERROR_DESCRIPTION 32
#define P_GRANT_TYPE 33
#define P_TOKEN_TYPE 34
#define P_ACE_PROFILE 38
#define GRANT_CLIENT_CREDENTIALS 2

int ace_token_request_encode(uint8_t *out, size_t cap, size_t *len,
                             const struct ace_token_request *req)
{
    struct ace_w w = ACE_W(out, cap);
    int has_cnf, has_scope;
    if (!req) return ACE_ERR_ARG;
    if (req->req_cnf_cose_key && req->req_cnf_kid) return ACE_ERR_ARG;
    has_cnf = req->req_cnf_cose_key != NULL || req->req_cnf_kid != NULL;
    has_scope = req->scope_form != ACE_SCOPE_NONE;
    if (has_scope && !req->scope && req->scope_len) return ACE_ERR_ARG;
    ace_w_head(&w, 5, (uint64_t)(1 + has_cnf + has_scope));
    if (req->req_cnf_cose_key) {
        /* {4: {1: COSE_Key}} (RFC 9201 §3.1) */
        ace_w_bytes(&w, (const uint8_t[]){0x04, 0xa1, 0x01}, 3);
        ace_w_bytes(&w, req->req_cnf_cose_key, req->req_cnf_cose_key_len);
    } else if (req->req_cnf_kid) {
        /* {4: {3: kid}} (RFC 9201 §5) */
        ace_w_bytes(&w, (const uint8_t[]){0x04, 0xa1, 0x03}, 3);
        ace_w_str(&w, 2, req->req_cnf_kid, req->req_cnf_kid_len);
    }
    if (has_scope) {
        ace_w_byte(&w, P_SCOPE);
        ace_w_str(&w, req->scope_form == ACE_SCOPE_AIF ? 2 : 3, req->scope, req->scope_len);
    }
    ace_w_bytes(&w, (const uint8_t[]){0x18, P_GRANT_TYPE, GRANT_CLIENT_CREDENTIALS}, 3);
    return ace_w_done(&w, len);
}

/* Read a map head and hand every (integer key, value position) to ``each``;
 * entries with other keys are skipped. A key seen twice is malformed. The
 * whole input must be the map. */
typedef int (*entry_fn)(struct ace_cbor *d, int64_t key, void *out);

static int each_entry(const uint8_t *msg, size_t len, entry_fn each, void *out)
{
    struct ace_cbor d;
    uint8_t major;
    uint64_t n;
    int64_t seen[24];
    size_t n_seen = 0;
    int rc;
    if (!msg) return ACE_ERR_ARG;
    ace_cbor_init(&d, msg, len);
    if ((rc = ace_cbor_read_head(&d, &major, &n))) return rc;
    if (major != 5) return ACE_ERR_MALFORMED;
    if (n > (len - d.pos) / 2) return ACE_ERR_MALFORMED;
    for (uint64_t i = 0; i < n; i++) {
        int64_t key;
        if (ace_cbor_read_int(&d, &key) != ACE_OK) {
            if ((rc = ace_cbor_skip(&d)) || (rc = ace_cbor_skip(&d))) return rc;
            continue;
        }
        for (size_t j = 0; j < n_seen; j++)
            if (seen[j] == key) return ACE_ERR_MALFORMED;
        if (n_seen < sizeof seen / sizeof seen[0]) seen[n_seen++] = key;
        if ((rc = each(&d, key, out))) return rc;
    }
    return d.pos == len ? ACE_OK : ACE_ERR_MALFORMED;
}

static int read_small_int(struct ace_cbor *d, int *v, int64_t lo, int64_t hi)
{
    int64_t x;
    int rc = ace_cbor_read_int(d, &x);
    if (rc) return rc;
    if (x < lo || x > hi) return ACE_ERR_RANGE;
    *v = (int)x;
    return ACE_OK;
}

/* cnf: {1: COSE_Key} with kty 4 (symmetric), or {3: kid}. */
static int read_cnf(struct ace_cbor *d, struct ace_token_response *r)
{
    uint8_t major;
    uint64_t n;
    int64_t label;
    int rc = ace_cbor_read_head(d, &major, &n);
    if (rc) return rc;
    if (major != 5 || n != 1) return ACE_ERR_MALFORMED;
    if ((rc = ace_cbor_read_int(d, &label))) return rc;
    if (label == 3) return ace_cbor_read_str(d, 2, &r->kid);
    if (label != 1) return ACE_ERR_UNSUPPORTED;
    if ((rc = ace_cbor_read_head(d, &major, &n))) return rc;
    if (major != 5 || n > (d->len - d->pos) / 2) return ACE_ERR_MALFORMED;
    for (uint64_t i = 0; i < n; i++) {
        if ((rc = ace_cbor_read_int(d, &label))) return rc;
        switch (label) {
        case 2: rc = ace_cbor_read_str(d, 2, &r->kid); break;
        case -1: rc = ace_cbor_read_str(d, 2, &r->k); break;
        case 3: rc = read_small_int(d, &r->alg, -65536, 65535); break;
        default: rc = ace_cbor_skip(d); break; /* kty and anything else */
        }
        if (rc) return rc;
    }
    return ACE_OK;
}

static int token_response_entry(struct ace_cbor *d, int64_t key, void *out)
{
    struct ace_token_response *r = out;
    int64_t v;
    int rc;
    switch (key) {
    case P_ACCESS_TOKEN: return ace_cbor_read_str(d, 2, &r->access_token);
    case P_EXPIRES_IN:
        if ((rc = ace_cbor_read_int(d, &v))) return rc;
        if (v < 0 || v > (int64_t)UINT32_MAX) return ACE_ERR_RANGE;
        r->has_expires_in = 1;
        r->expires_in = (uint32_t)v;
        return ACE_OK;
    case P_CNF: return read_cnf(d, r);
    case P_SCOPE:
        if (ace_cbor_read_str(d, 2, &r->scope) == ACE_OK) return ACE_OK;
        r->scope_is_text = 1;
        return ace_cbor_read_str(d, 3, &r->scope);
    case P_TOKEN_TYPE: return read_small_int(d, &r->token_type, 0, 65535);
    case P_ACE_PROFILE: return read_small_int(d, &r->ace_profile, 0, 65535);
    default: return ace_cbor_skip(d);
    }
}

int ace_token_response_parse(const uint8_t *msg, size_t len, struct ace_token_response *out)
{
    int rc;
    if (!out) return ACE_ERR_ARG;
    memset(out, 0, sizeof *out);
    out->token_type = -1;
    out->ace_profile = -1;
    if ((rc = each_entry(msg, len, token_response_entry, out))) return rc;
    if (!out->access_token.ptr) return ACE_ERR_MISSING;
    return ACE_OK;
}

static int error_entry(struct ace_cbor *d, int64_t key, void *out)
{
    struct ace_error *e = out;
    if (key == P_ERROR) return read_small_int(d, &e->error, -65536, 65535);
    if (key == P_ERROR_DESCRIPTION) return ace_cbor_read_str(d, 3, &e->description);
    return ace_cbor_skip(d);
}

int ace_error_parse(const uint8_t *msg, size_t len, struct ace_error *out)
{
    int rc;
    if (!out) return ACE_ERR_ARG;
    memset(out, 0, sizeof *out);
    if ((rc = each_entry(msg, len, error_entry, out))) return rc;
    return out->error ? ACE_OK : ACE_ERR_MISSING;
}

static int hints_entry(struct ace_cbor *d, int64_t key, void *out)
{
    struct ace_creation_hints *h = out;
    if (key == 1) return ace_cbor_read_str(d, 3, &h->as_uri);
    if (key == 5) return ace_cbor_read_str(d, 3, &h->audience);
    return ace_cbor_skip(d);
}

int ace_creation_hints_parse(const uint8_t *msg, size_t len, struct ace_creation_hints *out)
{
    int rc;
    if (!out) return ACE_ERR_ARG;
    memset(out, 0, sizeof *out);
    if ((rc = each_entry(msg, len, hints_entry, out))) return rc;
    return out->as_uri.ptr ? ACE_OK : ACE_ERR_MISSING;
}
