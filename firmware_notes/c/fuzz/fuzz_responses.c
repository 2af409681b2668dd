/* libFuzzer target: everything a device parses from the gateway (CoAP
 * responses, token responses, ACE errors, Creation Hints, any CBOR item).
 * Seeds: the vectors' messages (build/corpus, written by vectors_to_c.py).
 * Checks besides the sanitizers: every borrowed range lies inside the input. */
#include <stdlib.h>
#include <string.h>

#include "acedev.h"

static void inside(struct ace_bytes b, const uint8_t *data, size_t size)
{
    if (b.len && (b.ptr < data || b.ptr + b.len > data + size)) abort();
}

static void payloads(const uint8_t *data, size_t size, const uint8_t *base, size_t base_size)
{
    struct ace_token_response r;
    struct ace_error e;
    struct ace_creation_hints h;
    struct ace_cbor d;
    static struct ace_token t;
    if (ace_token_response_parse(data, size, &r) == ACE_OK) {
        struct ace_pop_key own = {ACE_ALG_ES256, (const uint8_t *)"kid", 3, NULL, 0};
        inside(r.access_token, base, base_size);
        inside(r.kid, base, base_size);
        inside(r.k, base, base_size);
        inside(r.scope, base, base_size);
        if (ace_token_store(&t, &r, &own, 0, 60) == ACE_OK) {
            if (t.token_len > ACE_TOKEN_MAX || t.kid_len > ACE_KID_MAX) abort();
            (void)ace_token_renewal_due(&t, 1000);
        }
    }
    if (ace_error_parse(data, size, &e) == ACE_OK) inside(e.description, base, base_size);
    if (ace_creation_hints_parse(data, size, &h) == ACE_OK) {
        inside(h.as_uri, base, base_size);
        inside(h.audience, base, base_size);
    }
    ace_cbor_init(&d, data, size);
    if (ace_cbor_skip(&d) == ACE_OK && d.pos > size) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct ace_coap_response m;
    payloads(data, size, data, size);
    if (ace_coap_response_parse(data, size, &m) == ACE_OK) {
        struct ace_echo e;
        inside(m.echo, data, size);
        inside(m.payload, data, size);
        if (m.token_len > 8) abort();
        (void)ace_classify(&m);
        ace_echo_reset(&e);
        if (m.echo.len) (void)ace_echo_challenge(&e, m.echo.ptr, m.echo.len);
        if (m.payload.len) payloads(m.payload.ptr, m.payload.len, data, size);
    }
    return 0;
}
