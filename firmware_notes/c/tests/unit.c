/* acedev unit tests: every vector in firmware_notes/vectors, every encoder
 * refusing every too-small buffer without writing past it, and the
 * bookkeeping (piv, Echo, renewal). Built once per crypto hook: with the
 * OpenSSL hook, and with -DACE_TEST_PSA the PSA Crypto hook (Mbed TLS).
 * Starts with "hook NAME", ends with "N passed, N failed". */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "acedev.h"
#include "vectors.h"

/* The hook under test, behind the same five functions for both builds. */
#ifdef ACE_TEST_PSA
#include "crypto_psa.h"
#define HOOK_NAME "psa"
/* deterministic ECDSA (RFC 6979), as the vectors: ES256 compares byte for byte */
#define HOOK_ES256_DETERMINISTIC 1
#define HOOK_HAS_EDDSA 0
static struct ace_psa hook_ctx;
static int hook_setup(struct ace_crypto *c) { return ace_crypto_psa(c, &hook_ctx); }
static int hook_load_key(int alg, const uint8_t d[32])
{
    return alg == ACE_ALG_ES256 ? ace_psa_import_es256(&hook_ctx, d) : ACE_ERR_CRYPTO;
}
static void hook_free(void) { ace_psa_free(&hook_ctx); }
static void hook_shutdown(void) { mbedtls_psa_crypto_free(); }
#else
#include "crypto_openssl.h"
#define HOOK_NAME "openssl"
#define HOOK_ES256_DETERMINISTIC 0 /* OpenSSL's ECDSA draws a random k */
#define HOOK_HAS_EDDSA 1
static struct ace_openssl hook_ctx;
static int hook_setup(struct ace_crypto *c)
{
    ace_crypto_openssl(c, &hook_ctx);
    return ACE_OK;
}
static int hook_load_key(int alg, const uint8_t d[32])
{
    return ace_openssl_load_key(&hook_ctx, alg, d);
}
static void hook_free(void) { ace_openssl_free(&hook_ctx); }
static void hook_shutdown(void) {}
#endif

static int passed, failed;
static const char *current;

#define CHECK(cond)                                                                   \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "FAIL %s: %s:%d: %s\n", current, __FILE__, __LINE__, #cond); \
            ok = 0;                                                                   \
        }                                                                             \
    } while (0)
#define CHECK_RC(expr, want)                                                            \
    do {                                                                                \
        int rc_ = (expr);                                                               \
        if (rc_ != (want)) {                                                            \
            fprintf(stderr, "FAIL %s: %s:%d: %s = %d (%s), want %d\n", current, __FILE__, \
                    __LINE__, #expr, rc_, ace_strerror(rc_), (want));                  \
            ok = 0;                                                                     \
        }                                                                               \
    } while (0)

static void report(const char *name, int ok)
{
    if (ok) passed++;
    else failed++;
    printf("%s %s\n", ok ? "ok  " : "FAIL", name);
}

static size_t unhex(const char *hex, uint8_t *out, size_t cap)
{
    size_t n = hex ? strlen(hex) / 2 : 0;
    if (n > cap) {
        fprintf(stderr, "vector too large\n");
        exit(2);
    }
    for (size_t i = 0; i < n; i++) {
        unsigned int b;
        sscanf(hex + 2 * i, "%2x", &b);
        out[i] = (uint8_t)b;
    }
    return n;
}

static int same_hex(const uint8_t *p, size_t n, const char *hex)
{
    uint8_t buf[1024];
    size_t m = unhex(hex, buf, sizeof buf);
    if (m != n || memcmp(p, buf, n) != 0) {
        fprintf(stderr, "  got  ");
        for (size_t i = 0; i < n; i++) fprintf(stderr, "%02x", p[i]);
        fprintf(stderr, "\n  want %s\n", hex);
        return 0;
    }
    return 1;
}

static int same_bytes(struct ace_bytes b, const char *hex)
{
    return same_hex(b.ptr, b.len, hex);
}

/* The hook under test, wrapped to record what was signed or MACed. */
static struct ace_crypto real;
static uint8_t seen[1024];
static size_t seen_len;

static void record(const struct ace_bytes *parts, size_t n)
{
    seen_len = 0;
    for (size_t i = 0; i < n; i++) {
        memcpy(seen + seen_len, parts[i].ptr, parts[i].len);
        seen_len += parts[i].len;
    }
}
static int rec_hmac(void *ctx, const uint8_t *key, size_t key_len, const struct ace_bytes *parts,
                    size_t n, uint8_t out[32])
{
    record(parts, n);
    return real.hmac_sha256(ctx, key, key_len, parts, n, out);
}
static int rec_sign(void *ctx, int alg, const struct ace_bytes *parts, size_t n, uint8_t sig[64])
{
    record(parts, n);
    return real.sign(ctx, alg, parts, n, sig);
}
static struct ace_crypto crypto(void)
{
    struct ace_crypto c;
    if (hook_setup(&real) != ACE_OK) {
        fprintf(stderr, "the %s hook does not start\n", HOOK_NAME);
        exit(2);
    }
    c = real;
    c.hmac_sha256 = rec_hmac;
    c.sign = rec_sign;
    return c;
}

/* Guard bytes after the capacity: a write past it shows here (and to ASan). */
#define GUARD 16
static int guard_intact(const uint8_t *buf, size_t cap)
{
    for (size_t i = cap; i < cap + GUARD; i++)
        if (buf[i] != 0xa5) return 0;
    return 1;
}

struct req_storage {
    struct ace_bytes path[4], query[4];
    uint8_t payload[256];
    struct ace_request r;
};

static void vector_request(const struct proof_vector *v, struct req_storage *s)
{
    for (size_t i = 0; i < v->n_path; i++) {
        s->path[i].ptr = (const uint8_t *)v->path[i];
        s->path[i].len = strlen(v->path[i]);
    }
    for (size_t i = 0; i < v->n_query; i++) {
        s->query[i].ptr = (const uint8_t *)v->query[i];
        s->query[i].len = strlen(v->query[i]);
    }
    s->r.code = (uint8_t)v->code;
    s->r.path = s->path;
    s->r.n_path = v->n_path;
    s->r.query = s->query;
    s->r.n_query = v->n_query;
    s->r.content_format = v->cf;
    s->r.payload_len = unhex(v->payload, s->payload, sizeof s->payload);
    s->r.payload = s->r.payload_len ? s->payload : NULL;
}

static void test_proof_vectors(void)
{
    for (size_t i = 0; i < N_PROOFS; i++) {
        const struct proof_vector *v = &PROOFS[i];
        struct req_storage s;
        struct ace_crypto c = crypto();
        uint8_t kid[32], k[32], d[32], echo[64], work[256], out[256 + GUARD];
        struct ace_pop_key key;
        size_t echo_len, n, work_len, want_len;
        int ok = 1;
        current = v->name;
        vector_request(v, &s);
        key.alg = v->alg;
        key.kid = kid;
        key.kid_len = unhex(v->kid, kid, sizeof kid);
        key.k_len = unhex(v->k, k, sizeof k);
        key.k = v->k ? k : NULL;
        echo_len = unhex(v->echo, echo, sizeof echo);
        if (v->alg == ACE_ALG_EDDSA && !HOOK_HAS_EDDSA) {
            /* a hook without Ed25519 refuses the key, and the proof with it */
            char name[96];
            CHECK_RC(hook_load_key(v->alg, (unhex(v->d, d, 32), d)), ACE_ERR_CRYPTO);
            CHECK_RC(ace_proof(out, 256, &n, work, sizeof work, &c, &key, &s.r, v->piv,
                               v->echo ? echo : NULL, echo_len),
                     ACE_ERR_CRYPTO);
            snprintf(name, sizeof name, "%s:refused", v->name);
            report(name, ok);
            continue;
        }
        if (v->d) CHECK_RC(hook_load_key(v->alg, (unhex(v->d, d, 32), d)), ACE_OK);

        /* the detached content alone, and its announced length */
        CHECK_RC(ace_detached_content(work, sizeof work, &work_len, &c, &s.r, v->piv,
                                      v->echo ? echo : NULL, echo_len),
                 ACE_OK);
        CHECK(same_hex(work, work_len, v->content));
        CHECK(ace_detached_content_len(&s.r, v->piv, echo_len) == work_len);

        /* the option value; the MAC_structure / Sig_structure the hook saw */
        memset(out, 0xa5, sizeof out);
        CHECK_RC(ace_proof(out, 256, &n, work, sizeof work, &c, &key, &s.r, v->piv,
                           v->echo ? echo : NULL, echo_len),
                 ACE_OK);
        CHECK(same_hex(seen, seen_len, v->structure));
        want_len = strlen(v->option) / 2;
        CHECK(n == want_len);
        CHECK(n == (v->alg == ACE_ALG_HMAC_256_64
                        ? ACE_PROOF_MAC0_LEN(key.kid_len, ace_piv_len(v->piv))
                        : ACE_PROOF_SIGN1_LEN(key.kid_len, ace_piv_len(v->piv))));
        if (v->alg == ACE_ALG_ES256 && !HOOK_ES256_DETERMINISTIC) {
#ifndef ACE_TEST_PSA
            /* OpenSSL signs with a random k: same bytes up to the signature,
             * and the signature verifies over the vector's Sig_structure */
            uint8_t structure[256];
            size_t sl = unhex(v->structure, structure, sizeof structure);
            uint8_t want[256];
            unhex(v->option, want, sizeof want);
            CHECK(memcmp(out, want, n - ACE_SIG_LEN) == 0);
            CHECK_RC(ace_openssl_verify(&hook_ctx, v->alg, structure, sl, out + n - ACE_SIG_LEN),
                     ACE_OK);
#endif
        } else {
            CHECK(same_hex(out, n, v->option));
        }
        CHECK(guard_intact(out, 256));

        /* every capacity below the length: ACE_ERR_BUFFER, nothing past it */
        for (size_t cap = 0; cap < want_len; cap++) {
            uint8_t small[256 + GUARD];
            memset(small, 0xa5, sizeof small);
            CHECK_RC(ace_proof(small, cap, &n, work, sizeof work, &c, &key, &s.r, v->piv,
                               v->echo ? echo : NULL, echo_len),
                     ACE_ERR_BUFFER);
            CHECK(guard_intact(small, cap));
        }
        /* a work buffer one byte short of the detached content */
        for (size_t cap = 0; cap < work_len; cap++) {
            uint8_t w2[256 + GUARD];
            memset(w2, 0xa5, sizeof w2);
            CHECK_RC(ace_proof(out, 256, &n, w2, cap, &c, &key, &s.r, v->piv,
                               v->echo ? echo : NULL, echo_len),
                     ACE_ERR_BUFFER);
            CHECK(guard_intact(w2, cap));
        }
        hook_free();
        report(v->name, ok);
    }
}

/* The hook's primitives on published vectors, each input cut into parts
 * (an empty one included) the way ace_proof hands them over: SHA-256 of
 * "abc" and of nothing (FIPS 180-4 examples), HMAC-SHA-256 of RFC 4231
 * test cases 2 and 6 (the latter's 131-byte key is hashed first). */
static void test_hook_primitives(void)
{
    static const char jefe_data[] = "what do ya want for nothing?";
    static const char tc6_data[] = "Test Using Larger Than Block-Size Key - Hash Key First";
    struct ace_crypto c;
    struct ace_bytes parts[3];
    uint8_t out[32], key131[131];
    int ok = 1;
    current = "hook_primitives";
    CHECK_RC(hook_setup(&c), ACE_OK);
    parts[0].ptr = (const uint8_t *)"a";
    parts[0].len = 1;
    parts[1].ptr = (const uint8_t *)"";
    parts[1].len = 0;
    parts[2].ptr = (const uint8_t *)"bc";
    parts[2].len = 2;
    CHECK(c.sha256(c.ctx, parts, 3, out) == 0);
    CHECK(same_hex(out, 32, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
    CHECK(c.sha256(c.ctx, parts, 0, out) == 0);
    CHECK(same_hex(out, 32, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));

    parts[0].ptr = (const uint8_t *)jefe_data;
    parts[0].len = 10;
    parts[1].ptr = (const uint8_t *)jefe_data + 10;
    parts[1].len = 0;
    parts[2].ptr = (const uint8_t *)jefe_data + 10;
    parts[2].len = sizeof jefe_data - 1 - 10;
    CHECK(c.hmac_sha256(c.ctx, (const uint8_t *)"Jefe", 4, parts, 3, out) == 0);
    CHECK(same_hex(out, 32, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"));
    memset(key131, 0xaa, sizeof key131);
    parts[0].ptr = (const uint8_t *)tc6_data;
    parts[0].len = sizeof tc6_data - 1;
    CHECK(c.hmac_sha256(c.ctx, key131, sizeof key131, parts, 1, out) == 0);
    CHECK(same_hex(out, 32, "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"));

    /* no signing key loaded: sign fails, for either algorithm */
    {
        uint8_t sig[ACE_SIG_LEN];
        CHECK(c.sign(c.ctx, ACE_ALG_ES256, parts, 1, sig) != 0);
        CHECK(c.sign(c.ctx, ACE_ALG_EDDSA, parts, 1, sig) != 0);
    }
#ifdef ACE_TEST_PSA
    /* RFC 6979 A.2.5: P-256, SHA-256, message "sample": the deterministic
     * signature r || s, from a key outside the vectors */
    {
        uint8_t d[32], sig[ACE_SIG_LEN];
        unhex("c9afa9d845ba75166b5c215767b1d6934e50c3db36e89b127b8a622b120f6721", d, 32);
        parts[0].ptr = (const uint8_t *)"sam";
        parts[0].len = 3;
        parts[1].ptr = (const uint8_t *)"ple";
        parts[1].len = 3;
        CHECK_RC(hook_load_key(ACE_ALG_ES256, d), ACE_OK);
        CHECK(c.sign(c.ctx, ACE_ALG_ES256, parts, 2, sig) == 0);
        CHECK(same_hex(sig, 64,
                       "efd48b2aacb6a8fd1140dd9cd45e81d69d2c877b56aaf991c34d0ea84eaf3716"
                       "f7cb1c942d657c41d436c7a1b6e29f65f3e900dbb9aff4064dc4ab2f843acda8"));
        CHECK(c.sign(c.ctx, ACE_ALG_EDDSA, parts, 2, sig) != 0);
        hook_free();
    }
#endif
    report("hook_primitives", ok);
}

static const uint8_t KID8[8] = {0x35, 0xbc, 0x8f, 0xf9, 0x89, 0xdb, 0x2c, 0xdf};
static const uint8_t K16[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};

static int hmac_proof(uint8_t *out, size_t cap, size_t *n, uint64_t piv)
{
    struct ace_crypto c = crypto();
    struct ace_bytes seg = {(const uint8_t *)"whoami", 6};
    struct ace_request r = {1, &seg, 1, NULL, 0, -1, NULL, 0};
    struct ace_pop_key key = {ACE_ALG_HMAC_256_64, KID8, 8, K16, 16};
    uint8_t work[64];
    return ace_proof(out, cap, n, work, sizeof work, &c, &key, &r, piv, NULL, 0);
}

/* proof.md's sketch sized the option at 18 + kid_len + 5 = 31 bytes for an
 * 8-byte kid: piv 2^24 needs 32, the largest piv 33; 2^40 and up are refused. */
static void test_proof_size_by_piv(void)
{
    static const struct {
        uint64_t piv;
        size_t len;
    } cases[] = {{0, 29}, {255, 29}, {256, 30}, {65535, 30}, {65536, 31},
                 {(uint64_t)1 << 24, 32}, {((uint64_t)1 << 32) - 1, 32},
                 {(uint64_t)1 << 32, 33}, {ACE_PIV_MAX, 33}};
    int ok = 1;
    current = "proof_size_by_piv";
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t out[64 + GUARD];
        size_t n = 0;
        CHECK(ACE_PROOF_MAC0_LEN(8, ace_piv_len(cases[i].piv)) == cases[i].len);
        memset(out, 0xa5, sizeof out);
        CHECK_RC(hmac_proof(out, cases[i].len, &n, cases[i].piv), ACE_OK);
        CHECK(n == cases[i].len);
        CHECK(guard_intact(out, cases[i].len));
        memset(out, 0xa5, sizeof out);
        CHECK_RC(hmac_proof(out, cases[i].len - 1, &n, cases[i].piv), ACE_ERR_BUFFER);
        CHECK(guard_intact(out, cases[i].len - 1));
    }
    {
        uint8_t out[31 + GUARD];
        size_t n;
        memset(out, 0xa5, sizeof out);
        /* the old comment's 31 bytes: refused at 2^24, not overrun */
        CHECK_RC(hmac_proof(out, 31, &n, (uint64_t)1 << 24), ACE_ERR_BUFFER);
        CHECK(guard_intact(out, 31));
    }
    CHECK(ACE_PROOF_MAC0_MAX(8) == 33);
    CHECK(ACE_PROOF_SIGN1_MAX(8) == 90);
    {
        uint8_t out[64];
        size_t n;
        CHECK_RC(hmac_proof(out, sizeof out, &n, ACE_PIV_MAX + 1), ACE_ERR_RANGE);
        CHECK_RC(hmac_proof(out, sizeof out, &n, (uint64_t)1 << 56), ACE_ERR_RANGE);
        CHECK(ace_piv_len((uint64_t)1 << 56) == 0);
        CHECK(ace_piv_len((uint64_t)1 << 24) == 4);
    }
    report("proof_size_by_piv", ok);
}

/* proof.md's sketch had a fixed uint8_t content[96]: a long path or query
 * overran it. Here the work buffer has a capacity and a too-long request is
 * refused with ACE_ERR_BUFFER. */
static void test_long_path_refused(void)
{
    struct ace_crypto c = crypto();
    char long_segment[120];
    struct ace_bytes seg;
    struct ace_request r = {1, &seg, 1, NULL, 0, -1, NULL, 0};
    struct ace_pop_key key = {ACE_ALG_HMAC_256_64, KID8, 8, K16, 16};
    uint8_t *work = malloc(96); /* exactly the old buffer: ASan sees any overrun */
    uint8_t out[64], big[256];
    size_t n, need;
    int ok = 1;
    current = "long_path_refused";
    memset(long_segment, 'a', sizeof long_segment);
    seg.ptr = (const uint8_t *)long_segment;
    seg.len = sizeof long_segment;
    need = ace_detached_content_len(&r, 1, 0);
    CHECK(need == 2 + 1 + 1 + 2 + 120 + 1 + 1 + 1 + 1 + 1);
    CHECK(need > 96);
    CHECK_RC(ace_proof(out, sizeof out, &n, work, 96, &c, &key, &r, 1, NULL, 0), ACE_ERR_BUFFER);
    CHECK_RC(ace_detached_content(work, 96, &n, &c, &r, 1, NULL, 0), ACE_ERR_BUFFER);
    CHECK_RC(ace_proof(out, sizeof out, &n, big, need, &c, &key, &r, 1, NULL, 0), ACE_OK);
    CHECK(n == 29);
    free(work);
    report("long_path_refused", ok);
}

static void test_cbor(void)
{
    static const struct {
        uint64_t arg;
        const char *hex;
    } heads[] = {{0, "40"},
                 {23, "57"},
                 {24, "5818"},
                 {255, "58ff"},
                 {256, "590100"},
                 {65535, "59ffff"},
                 {65536, "5a00010000"},
                 {UINT64_C(0xffffffff), "5affffffff"},
                 {UINT64_C(0x100000000), "5b0000000100000000"}};
    int ok = 1;
    current = "cbor";
    for (size_t i = 0; i < sizeof heads / sizeof heads[0]; i++) {
        uint8_t out[9 + GUARD];
        size_t n;
        memset(out, 0xa5, sizeof out);
        CHECK_RC(ace_cbor_head(out, 9, &n, 2, heads[i].arg), ACE_OK);
        CHECK(same_hex(out, n, heads[i].hex));
        CHECK(n == ace_cbor_head_len(heads[i].arg));
        memset(out, 0xa5, sizeof out);
        CHECK_RC(ace_cbor_head(out, n - 1, &n, 2, heads[i].arg), ACE_ERR_BUFFER);
        CHECK(guard_intact(out, ace_cbor_head_len(heads[i].arg) - 1));
    }
    {
        /* skip: nested items; indefinite lengths; counts beyond the input */
        static const uint8_t nested[] = {0x82, 0xa1, 0x01, 0x82, 0x02, 0x43, 1, 2, 3, 0xc1, 0x00};
        static const uint8_t indefinite[] = {0x9f, 0x01, 0xff};
        static const uint8_t huge[] = {0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
        static const uint8_t huge_map[] = {0xbb, 0x80, 0, 0, 0, 0, 0, 0, 0};
        static const uint8_t big_str[] = {0x5a, 0xff, 0xff, 0xff, 0xff, 0x00};
        static const uint8_t reserved[] = {0x1c};
        struct ace_cbor d;
        ace_cbor_init(&d, nested, sizeof nested);
        CHECK_RC(ace_cbor_skip(&d), ACE_OK);
        CHECK(d.pos == sizeof nested);
        for (size_t cut = 0; cut < sizeof nested; cut++) {
            ace_cbor_init(&d, nested, cut);
            CHECK_RC(ace_cbor_skip(&d), ACE_ERR_MALFORMED);
        }
        ace_cbor_init(&d, indefinite, sizeof indefinite);
        CHECK_RC(ace_cbor_skip(&d), ACE_ERR_UNSUPPORTED);
        ace_cbor_init(&d, huge, sizeof huge);
        CHECK_RC(ace_cbor_skip(&d), ACE_ERR_MALFORMED);
        ace_cbor_init(&d, huge_map, sizeof huge_map);
        CHECK_RC(ace_cbor_skip(&d), ACE_ERR_MALFORMED);
        ace_cbor_init(&d, big_str, sizeof big_str);
        CHECK_RC(ace_cbor_skip(&d), ACE_ERR_MALFORMED);
        ace_cbor_init(&d, reserved, sizeof reserved);
        CHECK_RC(ace_cbor_skip(&d), ACE_ERR_MALFORMED);
    }
    report("cbor", ok);
}

/* Encoders: the vector's bytes, and ACE_ERR_BUFFER for every smaller capacity. */
typedef int (*encode_fn)(uint8_t *out, size_t cap, size_t *len, const void *arg);

static int encodes(encode_fn f, const void *arg, const char *want)
{
    uint8_t out[512 + GUARD];
    size_t n, want_len = strlen(want) / 2;
    int ok = 1;
    memset(out, 0xa5, sizeof out);
    CHECK_RC(f(out, 512, &n, arg), ACE_OK);
    CHECK(same_hex(out, n, want));
    for (size_t cap = 0; cap < want_len; cap++) {
        memset(out, 0xa5, sizeof out);
        CHECK_RC(f(out, cap, &n, arg), ACE_ERR_BUFFER);
        CHECK(guard_intact(out, cap));
    }
    return ok;
}

static int enc_request(uint8_t *out, size_t cap, size_t *len, const void *arg)
{
    return ace_token_request_encode(out, cap, len, arg);
}
static int enc_aif_text(uint8_t *out, size_t cap, size_t *len, const void *arg)
{
    return ace_aif_from_text(out, cap, len, arg, strlen(arg));
}
static int enc_aif(uint8_t *out, size_t cap, size_t *len, const void *arg)
{
    (void)arg;
    static const struct ace_aif_entry e[] = {{"/cfg", 4, ACE_GET | ACE_PUT},
                                             {"/readings", 9, ACE_POST},
                                             {"/temp", 5, ACE_GET},
                                             {"/whoami", 7, ACE_GET}};
    return ace_aif_encode(out, cap, len, e, 4);
}

static void test_token_requests(void)
{
    uint8_t scope[64], cose_key[128], kid[16];
    struct ace_token_request req;
    int ok = 1;
    current = "token_requests";
    memset(&req, 0, sizeof req);
    req.scope_form = ACE_SCOPE_AIF;
    req.scope = scope;
    req.scope_len = unhex(V_SCOPE_AIF, scope, sizeof scope);
    CHECK(encodes(enc_request, &req, V_TOKEN_REQUEST_SYM));
    req.req_cnf_cose_key = cose_key;
    req.req_cnf_cose_key_len = unhex(V_DEVICE_ES256_COSE_KEY, cose_key, sizeof cose_key);
    CHECK(encodes(enc_request, &req, V_TOKEN_REQUEST_ASYM));
    req.req_cnf_cose_key = NULL;
    req.req_cnf_kid = kid;
    req.req_cnf_kid_len = unhex(V_DEVICE_ES256_KID, kid, sizeof kid);
    CHECK(encodes(enc_request, &req, V_TOKEN_REQUEST_BY_KID));
    /* the text form of the scope (flow.md §3) */
    memset(&req, 0, sizeof req);
    req.scope_form = ACE_SCOPE_TEXT;
    req.scope = (const uint8_t *)V_SCOPE_TEXT_CANONICAL;
    req.scope_len = strlen(V_SCOPE_TEXT_CANONICAL);
    CHECK(encodes(enc_request, &req, V_TOKEN_REQUEST_TEXT));
    /* no scope: {33: 2} */
    memset(&req, 0, sizeof req);
    CHECK(encodes(enc_request, &req, "a1182102"));
    report("token_requests", ok);

    ok = 1;
    current = "aif";
    CHECK(encodes(enc_aif, NULL, V_SCOPE_AIF));
    CHECK(encodes(enc_aif_text, V_SCOPE_TEXT_CANONICAL, V_SCOPE_AIF));
    {
        uint8_t out[128];
        size_t n;
        /* inputs.json's scope_text is in another order: encoded as written */
        CHECK_RC(ace_aif_from_text(out, sizeof out, &n, V_SCOPE_TEXT, strlen(V_SCOPE_TEXT)),
                 ACE_OK);
        {
            uint8_t sorted[128];
            size_t m = unhex(V_SCOPE_AIF, sorted, sizeof sorted);
            CHECK(n == m && memcmp(out, sorted, n) != 0);
        }
        CHECK_RC(ace_aif_from_text(out, sizeof out, &n, "/a:get,Put /b:*", 15), ACE_OK);
        CHECK(same_hex(out, n, "8282622f610582622f62187f"));
        CHECK_RC(ace_aif_from_text(out, sizeof out, &n, "/a:GOT", 6), ACE_ERR_MALFORMED);
        CHECK_RC(ace_aif_from_text(out, sizeof out, &n, "a:GET", 5), ACE_ERR_MALFORMED);
        CHECK_RC(ace_aif_from_text(out, sizeof out, &n, "/a:", 3), ACE_ERR_MALFORMED);
        CHECK_RC(ace_aif_from_text(out, sizeof out, &n, "/a:GET,", 7), ACE_ERR_MALFORMED);
        CHECK_RC(ace_aif_from_text(out, sizeof out, &n, "  ", 2), ACE_ERR_RANGE);
    }
    report("aif", ok);
}

static void test_token_responses(void)
{
    uint8_t msg[512];
    size_t len;
    struct ace_token_response r;
    struct ace_token t;
    struct ace_pop_key key;
    int ok = 1;
    current = "token_response_symmetric";
    len = unhex(V_TOKEN_RESPONSE_SYM, msg, sizeof msg);
    CHECK_RC(ace_token_response_parse(msg, len, &r), ACE_OK);
    /* access_token: the byte string's content, without its CBOR head */
    CHECK(same_bytes(r.access_token, V_TOKEN_SYM));
    CHECK(r.has_expires_in && r.expires_in == V_TOKEN_LIFETIME);
    CHECK(same_bytes(r.kid, V_POP_KID));
    CHECK(same_bytes(r.k, V_POP_K));
    CHECK(r.alg == ACE_ALG_HMAC_256_64 && r.token_type == 2 && r.ace_profile == 1);
    CHECK(r.scope.ptr == NULL);
    CHECK_RC(ace_token_store(&t, &r, NULL, 1000, 0), ACE_OK);
    CHECK(same_hex(t.token, t.token_len, V_TOKEN_SYM));
    ace_token_key(&t, &key);
    CHECK(key.alg == ACE_ALG_HMAC_256_64 && key.kid_len == 8 && key.k_len == 16);
    CHECK(t.piv.next == ACE_PIV_FIRST);
    for (size_t cut = 0; cut < len; cut++) {
        struct ace_token_response r2;
        CHECK(ace_token_response_parse(msg, cut, &r2) != ACE_OK);
    }
    report("token_response_symmetric", ok);

    ok = 1;
    current = "token_response_asymmetric";
    len = unhex(V_TOKEN_RESPONSE_ASYM, msg, sizeof msg);
    CHECK_RC(ace_token_response_parse(msg, len, &r), ACE_OK);
    CHECK(same_bytes(r.access_token, V_TOKEN_ASYM));
    CHECK(same_bytes(r.kid, V_DEVICE_ES256_KID));
    CHECK(r.k.len == 0);
    {
        uint8_t kid[16];
        struct ace_pop_key own = {ACE_ALG_ES256, kid, 0, NULL, 0};
        own.kid_len = unhex(V_DEVICE_ES256_KID, kid, sizeof kid);
        CHECK_RC(ace_token_store(&t, &r, NULL, 0, 0), ACE_ERR_MISSING);
        CHECK_RC(ace_token_store(&t, &r, &own, 0, 0), ACE_OK);
        CHECK(t.alg == ACE_ALG_ES256 && t.token_len == strlen(V_TOKEN_ASYM) / 2);
    }
    report("token_response_asymmetric", ok);

    ok = 1;
    current = "token_too_large_for_store";
    {
        /* {1: h'00' * (ACE_TOKEN_MAX + 1), 8: {1: {2: kid, -1: k}}} */
        static uint8_t big[ACE_TOKEN_MAX + 64];
        size_t n = 0;
        big[n++] = 0xa2;
        big[n++] = 0x01;
        big[n++] = 0x59;
        big[n++] = (uint8_t)((ACE_TOKEN_MAX + 1) >> 8);
        big[n++] = (uint8_t)(ACE_TOKEN_MAX + 1);
        memset(big + n, 0, ACE_TOKEN_MAX + 1);
        n += ACE_TOKEN_MAX + 1;
        memcpy(big + n, "\x08\xa1\x01\xa2\x02\x41\x07\x20\x41\x09", 10);
        n += 10;
        CHECK_RC(ace_token_response_parse(big, n, &r), ACE_OK);
        CHECK(r.access_token.len == ACE_TOKEN_MAX + 1);
        CHECK_RC(ace_token_store(&t, &r, NULL, 0, 0), ACE_ERR_BUFFER);
    }
    report("token_too_large_for_store", ok);

    ok = 1;
    current = "ace_error_and_hints";
    {
        struct ace_error e;
        struct ace_creation_hints h;
        struct ace_coap_response m;
        len = unhex(V_TOKEN_ERROR, msg, sizeof msg);
        CHECK_RC(ace_error_parse(msg, len, &e), ACE_OK);
        CHECK(e.error == ACE_INVALID_SCOPE);
        CHECK(e.description.len > 0 && memcmp(e.description.ptr, "requested scope", 15) == 0);
        len = unhex(V_TOKEN_ERROR_COAP, msg, sizeof msg);
        CHECK_RC(ace_coap_response_parse(msg, len, &m), ACE_OK);
        CHECK(m.code == 0x80 && m.content_format == ACE_CF_ACE_CBOR);
        CHECK_RC(ace_error_parse(m.payload.ptr, m.payload.len, &e), ACE_OK);
        CHECK(ace_classify(&m) == ACE_ACT_FIX_REQUEST);
        len = unhex(V_HINTS, msg, sizeof msg);
        CHECK_RC(ace_creation_hints_parse(msg, len, &h), ACE_OK);
        CHECK(h.as_uri.len == 24 && memcmp(h.as_uri.ptr, "coaps://192.0.2.10/token", 24) == 0);
        CHECK(h.audience.len == 5 && memcmp(h.audience.ptr, "acegw", 5) == 0);
        CHECK_RC(ace_error_parse(msg, len, &e), ACE_ERR_MISSING);
        /* a duplicate key is refused */
        CHECK_RC(ace_error_parse((const uint8_t *)"\xa2\x18\x1e\x06\x18\x1e\x02", 7, &e),
                 ACE_ERR_MALFORMED);
    }
    report("ace_error_and_hints", ok);
}

static void test_coap_responses(void)
{
    uint8_t msg[256];
    size_t len;
    struct ace_coap_response m;
    int ok = 1;
    current = "coap_responses";
    len = unhex(V_ECHO_COAP, msg, sizeof msg);
    CHECK_RC(ace_coap_response_parse(msg, len, &m), ACE_OK);
    CHECK(m.code == 0x81 && m.type == 2 && m.token_len == 1 && m.token[0] == 0x20);
    CHECK(same_bytes(m.echo, V_ECHO_VALUE));
    CHECK(ace_classify(&m) == ACE_ACT_REPEAT_ECHO);
    len = unhex(V_HINTS_COAP, msg, sizeof msg);
    CHECK_RC(ace_coap_response_parse(msg, len, &m), ACE_OK);
    CHECK(m.content_format == ACE_CF_ACE_CBOR && same_bytes(m.payload, V_HINTS));
    CHECK(ace_classify(&m) == ACE_ACT_UPLOAD_TOKEN);
    len = unhex(V_PLAIN_401_COAP, msg, sizeof msg);
    CHECK_RC(ace_coap_response_parse(msg, len, &m), ACE_OK);
    CHECK(ace_classify(&m) == ACE_ACT_NEW_TOKEN);
    len = unhex(V_TOKEN_RESPONSE_SYM_COAP, msg, sizeof msg);
    CHECK_RC(ace_coap_response_parse(msg, len, &m), ACE_OK);
    CHECK(m.code == 0x41 && same_bytes(m.payload, V_TOKEN_RESPONSE_SYM));
    CHECK(ace_classify(&m) == ACE_ACT_DONE);
    /* 4.29 with Max-Age 2 (option 14, one byte); 5.03 without Max-Age */
    len = unhex("619d0001e1d10102", msg, sizeof msg);
    CHECK_RC(ace_coap_response_parse(msg, len, &m), ACE_OK);
    CHECK(ace_classify(&m) == ACE_ACT_WAIT && m.has_max_age && ace_wait_seconds(&m) == 2);
    len = unhex("61a30001e1", msg, sizeof msg);
    CHECK_RC(ace_coap_response_parse(msg, len, &m), ACE_OK);
    CHECK(ace_classify(&m) == ACE_ACT_WAIT && ace_wait_seconds(&m) == 60);
    CHECK(m.code == 0xa3);
    /* malformed: token length 9, option running past the end, marker without payload */
    CHECK_RC(ace_coap_response_parse((const uint8_t *)"\x69\x81\x00\x01", 4, &m),
             ACE_ERR_MALFORMED);
    CHECK_RC(ace_coap_response_parse((const uint8_t *)"\x60\x81\x00\x01\xd5\xef\x01", 7, &m),
             ACE_ERR_MALFORMED);
    CHECK_RC(ace_coap_response_parse((const uint8_t *)"\x60\x81\x00\x01\xff", 5, &m),
             ACE_ERR_MALFORMED);
    report("coap_responses", ok);
}

static int persisted_calls;
static uint64_t persisted_bound;
static int fail_persist;
static int persist(void *ctx, uint64_t bound)
{
    (void)ctx;
    if (fail_persist) return -1;
    persisted_calls++;
    persisted_bound = bound;
    return 0;
}

static void test_piv(void)
{
    struct ace_piv p;
    uint64_t piv;
    int ok = 1;
    current = "piv";
    ace_piv_init(&p, 0, NULL, NULL);
    CHECK_RC(ace_piv_take(&p, &piv), ACE_OK);
    CHECK(piv == ACE_PIV_FIRST && ACE_PIV_FIRST == 1);
    CHECK_RC(ace_piv_take(&p, &piv), ACE_OK);
    CHECK(piv == 2);
    CHECK_RC(ace_piv_restart(&p), ACE_OK);
    CHECK_RC(ace_piv_take(&p, &piv), ACE_OK);
    CHECK(piv == ACE_PIV_FIRST);
    /* reservations: one write per 100 pivs, written before the first use */
    ace_piv_init(&p, 100, persist, NULL);
    for (int i = 0; i < 250; i++) CHECK_RC(ace_piv_take(&p, &piv), ACE_OK);
    CHECK(piv == 250 && persisted_calls == 3 && persisted_bound == 301);
    /* reboot: continue from the stored bound, writing the next one first */
    ace_piv_init(&p, 100, persist, NULL);
    CHECK_RC(ace_piv_resume(&p, persisted_bound), ACE_OK);
    CHECK_RC(ace_piv_take(&p, &piv), ACE_OK);
    CHECK(piv == 301 && persisted_bound == 401 && persisted_calls == 4);
    /* a failed write: no piv handed out */
    fail_persist = 1;
    ace_piv_resume(&p, 401);
    CHECK_RC(ace_piv_take(&p, &piv), ACE_ERR_EXHAUSTED);
    fail_persist = 0;
    /* the end of the piv space */
    ace_piv_init(&p, 0, NULL, NULL);
    p.next = ACE_PIV_MAX;
    CHECK_RC(ace_piv_take(&p, &piv), ACE_OK);
    CHECK(piv == ACE_PIV_MAX);
    CHECK_RC(ace_piv_take(&p, &piv), ACE_ERR_EXHAUSTED);
    CHECK_RC(ace_piv_resume(&p, ACE_PIV_MAX + 2), ACE_ERR_RANGE);
    report("piv", ok);
}

static void test_echo(void)
{
    struct ace_echo e;
    uint8_t value[41];
    int ok = 1;
    current = "echo";
    memset(value, 7, sizeof value);
    ace_echo_reset(&e);
    CHECK_RC(ace_echo_challenge(&e, value, 14), ACE_OK);
    CHECK(e.len == 14);
    CHECK_RC(ace_echo_challenge(&e, value, 14), ACE_OK); /* a second in a row: fine */
    CHECK_RC(ace_echo_challenge(&e, value, 14), ACE_ERR_EXHAUSTED); /* third: back off */
    CHECK(e.len == 0);
    ace_echo_done(&e);
    CHECK_RC(ace_echo_challenge(&e, value, 40), ACE_OK);
    CHECK_RC(ace_echo_challenge(&e, value, 41), ACE_ERR_RANGE);
    CHECK_RC(ace_echo_challenge(&e, value, 0), ACE_ERR_RANGE);
    report("echo", ok);
}

static void test_renewal(void)
{
    struct ace_token t;
    struct ace_token_response r;
    int ok = 1;
    current = "renewal";
    memset(&r, 0, sizeof r);
    r.access_token.ptr = (const uint8_t *)"tok";
    r.access_token.len = 3;
    r.kid.ptr = KID8;
    r.kid.len = 8;
    r.k.ptr = K16;
    r.k.len = 16;
    r.has_expires_in = 1;
    r.expires_in = V_TOKEN_LIFETIME;
    CHECK_RC(ace_token_store(&t, &r, NULL, 5000, 0), ACE_OK);
    CHECK(ace_token_renew_after_ms(&t) == 3240000u); /* 90 % of an hour: 54 minutes */
    CHECK(!ace_token_renewal_due(&t, 5000 + 3239999u));
    CHECK(ace_token_renewal_due(&t, 5000 + 3240000u));
    CHECK(!ace_token_expired(&t, 5000 + 3599999u));
    CHECK(ace_token_expired(&t, 5000 + 3600000u));
    /* the tick counter wraps (49.7 days of milliseconds) */
    CHECK_RC(ace_token_store(&t, &r, NULL, UINT32_MAX - 1000u, 0), ACE_OK);
    CHECK(!ace_token_renewal_due(&t, 1000u));
    CHECK(ace_token_renewal_due(&t, 3240000u - 1001u));
    /* no expires_in: the caller's default */
    r.has_expires_in = 0;
    CHECK_RC(ace_token_store(&t, &r, NULL, 0, 10), ACE_OK);
    CHECK(ace_token_renew_after_ms(&t) == 9000u);
    report("renewal", ok);
}

int main(void)
{
    printf("hook %s\n", HOOK_NAME);
    test_hook_primitives();
    test_cbor();
    test_proof_vectors();
    test_proof_size_by_piv();
    test_long_path_refused();
    test_token_requests();
    test_token_responses();
    test_coap_responses();
    test_piv();
    test_echo();
    test_renewal();
    hook_shutdown();
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
