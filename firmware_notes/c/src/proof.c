/* The Proof option (CoAP option 65001): an untagged COSE_Mac0 (RFC 9052 §6.2)
 * or COSE_Sign1 (§4.2) with a detached payload built from the request. */
#include "internal.h"

#define DIGEST_LEN 16

size_t ace_piv_len(uint64_t piv)
{
    size_t n = 1;
    if (piv > ACE_PIV_MAX) return 0;
    while (n < ACE_PIV_MAX_LEN && (piv >> (8 * n))) n++;
    return n;
}

static size_t strings_len(const struct ace_bytes *s, size_t n)
{
    size_t total = ace_cbor_head_len(n);
    for (size_t i = 0; i < n; i++) total += ace_cbor_head_len(s[i].len) + s[i].len;
    return total;
}

static int request_ok(const struct ace_request *r, uint64_t piv)
{
    return r && r->code >= 1 && r->code <= 7 && piv <= ACE_PIV_MAX &&
           (r->n_path == 0 || r->path) && (r->n_query == 0 || r->query) &&
           (r->payload_len == 0 || r->payload) && r->content_format >= -1 &&
           r->content_format <= 0xffff;
}

size_t ace_detached_content_len(const struct ace_request *r, uint64_t piv, size_t echo_len)
{
    if (!request_ok(r, piv)) return 0;
    return 2 + 1 + strings_len(r->path, r->n_path) + strings_len(r->query, r->n_query) +
           (r->content_format < 0 ? 1 : ace_cbor_head_len((uint64_t)r->content_format)) +
           (r->payload_len ? 1 + DIGEST_LEN : 1) + ace_cbor_head_len(piv) +
           (echo_len ? ace_cbor_head_len(echo_len) + echo_len : 1);
}

/* notes:begin detached_content */
/* Steps 1-2 of proof.md: the detached content, written into out[0..cap). */
int ace_detached_content(uint8_t *out, size_t cap, size_t *len, const struct ace_crypto *c,
                         const struct ace_request *r, uint64_t piv, const uint8_t *echo,
                         size_t echo_len)
{
    struct ace_w w = ACE_W(out, cap);
    if (!request_ok(r, piv) || (echo && (echo_len == 0 || echo_len > ACE_ECHO_MAX)))
        return ACE_ERR_RANGE;
    ace_w_byte(&w, 0x88);                          /* array(8) */
    ace_w_byte(&w, 0x01);                          /* layout version */
    ace_w_head(&w, 0, r->code);                    /* method code */
    ace_w_head(&w, 4, r->n_path);                  /* [Uri-Path...] as sent */
    for (size_t i = 0; i < r->n_path; i++) ace_w_str(&w, 3, r->path[i].ptr, r->path[i].len);
    ace_w_head(&w, 4, r->n_query);                 /* [Uri-Query...] as sent */
    for (size_t i = 0; i < r->n_query; i++) ace_w_str(&w, 3, r->query[i].ptr, r->query[i].len);
    if (r->content_format < 0) ace_w_byte(&w, 0xf6); /* null */
    else ace_w_head(&w, 0, (uint64_t)r->content_format);
    if (r->payload_len) {                          /* bstr(16): SHA-256(payload)[:16] */
        uint8_t digest[32];
        struct ace_bytes part = {r->payload, r->payload_len};
        if (!c || !c->sha256 || c->sha256(c->ctx, &part, 1, digest)) return ACE_ERR_CRYPTO;
        ace_w_byte(&w, 0x50);
        ace_w_bytes(&w, digest, DIGEST_LEN);
    } else {
        ace_w_byte(&w, 0x40);                      /* h'' */
    }
    ace_w_head(&w, 0, piv);                        /* piv as an unsigned integer */
    if (echo) ace_w_str(&w, 2, echo, echo_len);    /* the Echo value, or null */
    else ace_w_byte(&w, 0xf6);
    return ace_w_done(&w, len);
}
/* notes:end detached_content */

/* notes:begin proof */
/* Steps 3-5: MAC or sign, then the option value. The option value needs
 * 20 + kid_len + piv_len bytes (Mac0) or 77 + kid_len + piv_len (Sign1):
 * ACE_PROOF_MAC0_MAX(kid_len) / ACE_PROOF_SIGN1_MAX(kid_len) hold any piv. */
int ace_proof(uint8_t *out, size_t cap, size_t *len, uint8_t *work, size_t work_cap,
              const struct ace_crypto *c, const struct ace_pop_key *key,
              const struct ace_request *r, uint64_t piv, const uint8_t *echo, size_t echo_len)
{
    static const uint8_t mac0[] = {0x84, 0x64, 'M', 'A', 'C', '0'};
    static const uint8_t sign1[] = {0x84, 0x6a, 'S', 'i', 'g', 'n', 'a', 't', 'u', 'r', 'e', '1'};
    uint8_t prot[4], head[9], mac[32], sig[ACE_SIG_LEN], piv_bytes[ACE_PIV_MAX_LEN];
    struct ace_bytes parts[5];
    size_t n, h, piv_len = ace_piv_len(piv);
    struct ace_w w = ACE_W(out, cap);
    int rc, is_mac;

    if (!key || !c || !key->kid || key->kid_len == 0 || piv_len == 0) return ACE_ERR_RANGE;
    is_mac = key->alg == ACE_ALG_HMAC_256_64;
    if (is_mac ? (!key->k || !c->hmac_sha256)
               : ((key->alg != ACE_ALG_ES256 && key->alg != ACE_ALG_EDDSA) || !c->sign))
        return ACE_ERR_ARG;
    /* the protected bucket << {1: alg} >>: 43 a1 01 04 / 26 / 27 */
    prot[0] = 0x43;
    prot[1] = 0xa1;
    prot[2] = 0x01;
    prot[3] = (uint8_t)(is_mac ? 0x04 : (key->alg == ACE_ALG_ES256 ? 0x26 : 0x27));

    rc = ace_detached_content(work, work_cap, &n, c, r, piv, echo, echo_len);
    if (rc) return rc;
    (void)ace_cbor_head(head, sizeof head, &h, 2, n); /* the content as a bstr */
    /* MAC_structure / Sig_structure (RFC 9052 §6.3 / §4.4), fed in pieces:
     * [context, << {1: alg} >>, h'' (external_aad), bstr(content)] */
    parts[0].ptr = is_mac ? mac0 : sign1;
    parts[0].len = is_mac ? sizeof mac0 : sizeof sign1;
    parts[1].ptr = prot;
    parts[1].len = sizeof prot;
    parts[2].ptr = (const uint8_t *)"\x40";
    parts[2].len = 1;
    parts[3].ptr = head;
    parts[3].len = h;
    parts[4].ptr = work;
    parts[4].len = n;
    if (is_mac) {
        if (c->hmac_sha256(c->ctx, key->k, key->k_len, parts, 5, mac)) return ACE_ERR_CRYPTO;
    } else {
        if (c->sign(c->ctx, key->alg, parts, 5, sig)) return ACE_ERR_CRYPTO;
    }

    for (size_t i = 0; i < piv_len; i++) piv_bytes[i] = (uint8_t)(piv >> (8 * (piv_len - 1 - i)));
    ace_w_byte(&w, 0x84);                          /* array(4) */
    ace_w_bytes(&w, prot, sizeof prot);            /* << {1: alg} >> */
    ace_w_byte(&w, 0xa2);                          /* {4: kid, 6: piv} */
    ace_w_byte(&w, 0x04);
    ace_w_str(&w, 2, key->kid, key->kid_len);
    ace_w_byte(&w, 0x06);
    ace_w_str(&w, 2, piv_bytes, piv_len);
    ace_w_byte(&w, 0xf6);                          /* detached payload */
    if (is_mac) ace_w_str(&w, 2, mac, ACE_TAG_LEN); /* tag: the first 8 bytes */
    else ace_w_str(&w, 2, sig, ACE_SIG_LEN);
    return ace_w_done(&w, len);
}
/* notes:end proof */
