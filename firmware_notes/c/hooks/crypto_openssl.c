/* acedev's crypto hook on OpenSSL 3: HMAC-SHA-256 and SHA-256 incrementally
 * over the parts, ES256 (ECDSA P-256, DER converted to r || s) and Ed25519. */
#include "crypto_openssl.h"

#include <string.h>

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>

static int sha256(void *ctx, const struct ace_bytes *parts, size_t n, uint8_t out[32])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned int len = 0;
    int ok;
    (void)ctx;
    ok = md && EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    for (size_t i = 0; ok && i < n; i++) ok = EVP_DigestUpdate(md, parts[i].ptr, parts[i].len);
    ok = ok && EVP_DigestFinal_ex(md, out, &len) && len == 32;
    EVP_MD_CTX_free(md);
    return ok ? 0 : -1;
}

static int hmac_sha256(void *ctx, const uint8_t *key, size_t key_len,
                       const struct ace_bytes *parts, size_t n, uint8_t out[32])
{
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *mc = mac ? EVP_MAC_CTX_new(mac) : NULL;
    OSSL_PARAM params[2];
    size_t len = 0;
    int ok;
    (void)ctx;
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
    params[1] = OSSL_PARAM_construct_end();
    ok = mc && EVP_MAC_init(mc, key, key_len, params);
    for (size_t i = 0; ok && i < n; i++) ok = EVP_MAC_update(mc, parts[i].ptr, parts[i].len);
    ok = ok && EVP_MAC_final(mc, out, &len, 32) && len == 32;
    EVP_MAC_CTX_free(mc);
    EVP_MAC_free(mac);
    return ok ? 0 : -1;
}

/* Ed25519 signs the whole message at once: join the parts (a Sig_structure
 * is at most a few hundred bytes for acegw's requests). */
#define JOIN_MAX 2048

static int join(const struct ace_bytes *parts, size_t n, uint8_t *buf, size_t *len)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (parts[i].len > JOIN_MAX - total) return -1;
        memcpy(buf + total, parts[i].ptr, parts[i].len);
        total += parts[i].len;
    }
    *len = total;
    return 0;
}

static int der_to_raw(const uint8_t *der, size_t der_len, uint8_t sig[64])
{
    const unsigned char *p = der;
    ECDSA_SIG *s = d2i_ECDSA_SIG(NULL, &p, (long)der_len);
    const BIGNUM *r, *sv;
    int ok;
    if (!s) return -1;
    ECDSA_SIG_get0(s, &r, &sv);
    ok = BN_bn2binpad(r, sig, 32) == 32 && BN_bn2binpad(sv, sig + 32, 32) == 32;
    ECDSA_SIG_free(s);
    return ok ? 0 : -1;
}

static int sign(void *ctx, int alg, const struct ace_bytes *parts, size_t n, uint8_t sig[64])
{
    struct ace_openssl *o = ctx;
    EVP_MD_CTX *md;
    int ok;
    if (!o || !o->pkey) return -1;
    md = EVP_MD_CTX_new();
    if (!md) return -1;
    if (alg == ACE_ALG_ES256) {
        uint8_t der[80];
        size_t der_len = sizeof der;
        ok = EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, o->pkey);
        for (size_t i = 0; ok && i < n; i++)
            ok = EVP_DigestSignUpdate(md, parts[i].ptr, parts[i].len);
        ok = ok && EVP_DigestSignFinal(md, der, &der_len) && der_to_raw(der, der_len, sig) == 0;
    } else if (alg == ACE_ALG_EDDSA) {
        static uint8_t buf[JOIN_MAX]; /* one device, one thread: no stack for it */
        size_t len, sig_len = 64;
        ok = join(parts, n, buf, &len) == 0 && EVP_DigestSignInit(md, NULL, NULL, NULL, o->pkey) &&
             EVP_DigestSign(md, sig, &sig_len, buf, len) && sig_len == 64;
    } else {
        ok = 0;
    }
    EVP_MD_CTX_free(md);
    return ok ? 0 : -1;
}

void ace_crypto_openssl(struct ace_crypto *c, struct ace_openssl *ctx)
{
    c->ctx = ctx;
    c->sha256 = sha256;
    c->hmac_sha256 = hmac_sha256;
    c->sign = sign;
}

int ace_openssl_load_key(struct ace_openssl *ctx, int alg, const uint8_t d[32])
{
    EVP_PKEY *pkey = NULL;
    if (alg == ACE_ALG_EDDSA) {
        pkey = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, d, 32);
    } else if (alg == ACE_ALG_ES256) {
        /* the public point from the scalar, then a key from both */
        EC_GROUP *group = EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1);
        EC_POINT *pub = group ? EC_POINT_new(group) : NULL;
        BIGNUM *priv = BN_bin2bn(d, 32, NULL);
        uint8_t point[65];
        OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
        OSSL_PARAM *params = NULL;
        EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
        if (group && pub && priv && bld && pc &&
            EC_POINT_mul(group, pub, priv, NULL, NULL, NULL) &&
            EC_POINT_point2oct(group, pub, POINT_CONVERSION_UNCOMPRESSED, point, sizeof point,
                               NULL) == sizeof point &&
            OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) &&
            OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_PRIV_KEY, priv) &&
            OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, sizeof point) &&
            (params = OSSL_PARAM_BLD_to_param(bld)) != NULL && EVP_PKEY_fromdata_init(pc) > 0)
            EVP_PKEY_fromdata(pc, &pkey, EVP_PKEY_KEYPAIR, params);
        OSSL_PARAM_free(params);
        OSSL_PARAM_BLD_free(bld);
        EVP_PKEY_CTX_free(pc);
        BN_clear_free(priv);
        EC_POINT_free(pub);
        EC_GROUP_free(group);
    }
    if (!pkey) return ACE_ERR_CRYPTO;
    ace_openssl_free(ctx);
    ctx->pkey = pkey;
    return ACE_OK;
}

void ace_openssl_free(struct ace_openssl *ctx)
{
    EVP_PKEY_free(ctx->pkey);
    ctx->pkey = NULL;
}

int ace_openssl_verify(struct ace_openssl *ctx, int alg, const uint8_t *msg, size_t len,
                       const uint8_t sig[ACE_SIG_LEN])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int ok = 0;
    if (!md || !ctx->pkey) goto out;
    if (alg == ACE_ALG_ES256) {
        ECDSA_SIG *s = ECDSA_SIG_new();
        BIGNUM *r = BN_bin2bn(sig, 32, NULL), *sv = BN_bin2bn(sig + 32, 32, NULL);
        unsigned char *der = NULL;
        int der_len;
        if (!s || !r || !sv || !ECDSA_SIG_set0(s, r, sv)) {
            BN_free(r);
            BN_free(sv);
            ECDSA_SIG_free(s);
            goto out;
        }
        der_len = i2d_ECDSA_SIG(s, &der);
        ok = der_len > 0 && EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, ctx->pkey) &&
             EVP_DigestVerify(md, der, (size_t)der_len, msg, len) == 1;
        OPENSSL_free(der);
        ECDSA_SIG_free(s);
    } else if (alg == ACE_ALG_EDDSA) {
        ok = EVP_DigestVerifyInit(md, NULL, NULL, NULL, ctx->pkey) &&
             EVP_DigestVerify(md, sig, 64, msg, len) == 1;
    }
out:
    EVP_MD_CTX_free(md);
    return ok ? ACE_OK : ACE_ERR_CRYPTO;
}
