/* acedev's crypto hook on the PSA Crypto API: HMAC-SHA-256 and SHA-256
 * incrementally over the parts (one update per part, nothing copied), ES256
 * with psa_sign_hash, whose output already is r || s (PSA Crypto API 1.0
 * §10.7, the same layout as COSE's, RFC 9053 §2.1). */
#include "crypto_psa.h"

static int sha256(void *ctx, const struct ace_bytes *parts, size_t n, uint8_t out[32])
{
    psa_hash_operation_t op = PSA_HASH_OPERATION_INIT;
    size_t len = 0;
    psa_status_t st;
    (void)ctx;
    st = psa_hash_setup(&op, PSA_ALG_SHA_256);
    for (size_t i = 0; st == PSA_SUCCESS && i < n; i++)
        st = psa_hash_update(&op, parts[i].ptr, parts[i].len);
    if (st == PSA_SUCCESS) st = psa_hash_finish(&op, out, 32, &len);
    psa_hash_abort(&op);
    return st == PSA_SUCCESS && len == 32 ? 0 : -1;
}

/* The PoP key is held by struct ace_token in RAM (it came in the token
 * response), so it is imported as a volatile key for the one MAC and
 * destroyed right after: no key slot stays taken between requests. */
static int hmac_sha256(void *ctx, const uint8_t *key, size_t key_len,
                       const struct ace_bytes *parts, size_t n, uint8_t out[32])
{
    psa_key_attributes_t attr = PSA_KEY_ATTRIBUTES_INIT;
    psa_mac_operation_t op = PSA_MAC_OPERATION_INIT;
    psa_key_id_t id = 0;
    size_t len = 0;
    psa_status_t st;
    (void)ctx;
    psa_set_key_type(&attr, PSA_KEY_TYPE_HMAC);
    psa_set_key_bits(&attr, PSA_BYTES_TO_BITS(key_len));
    psa_set_key_usage_flags(&attr, PSA_KEY_USAGE_SIGN_MESSAGE);
    psa_set_key_algorithm(&attr, PSA_ALG_HMAC(PSA_ALG_SHA_256));
    st = psa_import_key(&attr, key, key_len, &id);
    if (st == PSA_SUCCESS) st = psa_mac_sign_setup(&op, id, PSA_ALG_HMAC(PSA_ALG_SHA_256));
    for (size_t i = 0; st == PSA_SUCCESS && i < n; i++)
        st = psa_mac_update(&op, parts[i].ptr, parts[i].len);
    if (st == PSA_SUCCESS) st = psa_mac_sign_finish(&op, out, 32, &len);
    psa_mac_abort(&op);
    psa_destroy_key(id); /* 0 (nothing imported) is accepted and ignored */
    psa_reset_key_attributes(&attr);
    return st == PSA_SUCCESS && len == 32 ? 0 : -1;
}

static int sign(void *ctx, int alg, const struct ace_bytes *parts, size_t n, uint8_t sig[64])
{
    struct ace_psa *p = ctx;
    uint8_t digest[32];
    size_t len = 0;
    if (!p || p->sign_key == 0 || alg != ACE_ALG_ES256) return -1;
    if (sha256(NULL, parts, n, digest)) return -1;
    if (psa_sign_hash(p->sign_key, ACE_PSA_ECDSA_ALG, digest, sizeof digest, sig, 64, &len) !=
        PSA_SUCCESS)
        return -1;
    return len == 64 ? 0 : -1;
}

int ace_crypto_psa(struct ace_crypto *c, struct ace_psa *ctx)
{
    if (!c || !ctx || psa_crypto_init() != PSA_SUCCESS) return ACE_ERR_CRYPTO;
    c->ctx = ctx;
    c->sha256 = sha256;
    c->hmac_sha256 = hmac_sha256;
    c->sign = sign;
    return ACE_OK;
}

int ace_psa_import_es256(struct ace_psa *ctx, const uint8_t d[32])
{
    psa_key_attributes_t attr = PSA_KEY_ATTRIBUTES_INIT;
    psa_key_id_t id = 0;
    psa_status_t st;
    psa_set_key_type(&attr, PSA_KEY_TYPE_ECC_KEY_PAIR(PSA_ECC_FAMILY_SECP_R1));
    psa_set_key_bits(&attr, 256);
    psa_set_key_usage_flags(&attr, PSA_KEY_USAGE_SIGN_HASH);
    psa_set_key_algorithm(&attr, ACE_PSA_ECDSA_ALG);
    st = psa_import_key(&attr, d, 32, &id);
    psa_reset_key_attributes(&attr);
    if (st != PSA_SUCCESS) return ACE_ERR_CRYPTO;
    ace_psa_free(ctx);
    ctx->sign_key = id;
    return ACE_OK;
}

void ace_psa_free(struct ace_psa *ctx)
{
    if (ctx->sign_key != 0) psa_destroy_key(ctx->sign_key);
    ctx->sign_key = 0;
}
