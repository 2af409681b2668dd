/*
 * acedev: the device side of acegw's wire formats in portable C99.
 *
 * No malloc, no global state, no I/O: every output goes into a buffer the
 * caller passes with its capacity, and every function that writes returns
 * ACE_ERR_BUFFER (having written nothing past the capacity) when it does not
 * fit. Cryptography comes from one hook table (struct ace_crypto): HMAC-SHA-256,
 * SHA-256 and, for a device key pair, an ES256 or EdDSA signature.
 * hooks/crypto_openssl.c implements it on OpenSSL (POSIX), hooks/crypto_psa.c
 * on the PSA Crypto API (Mbed TLS, TF-M, Zephyr); README.md shows it for Mbed
 * TLS without PSA.
 *
 * What is here (RFC sections in the functions' comments):
 *   CBOR heads and a bounded, non-recursive decoder      (RFC 8949)
 *   AIF scopes                                           (RFC 9237)
 *   the token request, token response, ACE error and
 *   AS Request Creation Hints                            (RFC 9200 §5.3, §5.8)
 *   a CoAP response reader (code, Echo, Content-Format,
 *   Max-Age, payload)                                    (RFC 7252 §3, RFC 9175)
 *   the Proof option: COSE_Mac0 / COSE_Sign1 over the
 *   request's detached content                           (RFC 9052 §4.4, §6.3)
 *   piv bookkeeping with a persistence hook, Echo
 *   handling, renewal timing, what to do with an answer  (firmware_notes/device.md)
 */
#ifndef ACEDEV_H
#define ACEDEV_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- errors ------------------------------------------------------------ */

enum ace_err {
    ACE_OK = 0,
    ACE_ERR_BUFFER = -1,      /* output buffer too small; nothing written past it */
    ACE_ERR_MALFORMED = -2,   /* input is not well-formed CBOR / CoAP of the expected shape */
    ACE_ERR_RANGE = -3,       /* an argument or a decoded value is out of range */
    ACE_ERR_UNSUPPORTED = -4, /* well-formed, but not used by acegw (indefinite length) */
    ACE_ERR_MISSING = -5,     /* a required field is absent */
    ACE_ERR_CRYPTO = -6,      /* the crypto hook failed */
    ACE_ERR_EXHAUSTED = -7,   /* no piv left for this key, or persisting failed */
    ACE_ERR_ARG = -8          /* NULL where a pointer is needed, or a wrong combination */
};

/* A short English name for an error code (never NULL). */
const char *ace_strerror(int err);

/* ---- limits (sizes a device plans with; firmware_notes/budgets.md) ------- */

/* Largest piv: 5-byte Partial IV, as OSCORE (RFC 8613 §7.2.1). */
#define ACE_PIV_MAX ((uint64_t)0xFFFFFFFFFFu)
#define ACE_PIV_MAX_LEN 5
/* The first piv a new PoP key uses (and what "starts over" resets to). */
#define ACE_PIV_FIRST 1u
/* Echo option values are 1..40 bytes (RFC 9175 §2.2); acegw's are 14. */
#define ACE_ECHO_MAX 40
/* HMAC 256/64 tag and ES256/EdDSA signature lengths. */
#define ACE_TAG_LEN 8
#define ACE_SIG_LEN 64

/* Proof option value length for a kid of kid_len (< 24) bytes and a piv of
 * piv_len bytes: 20 + kid + piv for COSE_Mac0, 77 + kid + piv for Sign1. */
#define ACE_PROOF_MAC0_LEN(kid_len, piv_len) (20u + (kid_len) + (piv_len))
#define ACE_PROOF_SIGN1_LEN(kid_len, piv_len) (77u + (kid_len) + (piv_len))
/* Buffers that hold any proof for such a kid (piv up to ACE_PIV_MAX). */
#define ACE_PROOF_MAC0_MAX(kid_len) ACE_PROOF_MAC0_LEN(kid_len, ACE_PIV_MAX_LEN)
#define ACE_PROOF_SIGN1_MAX(kid_len) ACE_PROOF_SIGN1_LEN(kid_len, ACE_PIV_MAX_LEN)

/* What struct ace_token keeps; override at compile time (-DACE_TOKEN_MAX=...).
 * acegw refuses /authz-info payloads above 2048 bytes, so 2048 holds any token
 * it accepts; budgets.md gives the size of yours from client id and scope. */
#ifndef ACE_TOKEN_MAX
#define ACE_TOKEN_MAX 512
#endif
#ifndef ACE_KID_MAX
#define ACE_KID_MAX 16
#endif
#define ACE_KEY_MAX 32

/* COSE algorithms (RFC 9053). */
#define ACE_ALG_HMAC_256_64 4
#define ACE_ALG_ES256 (-7)
#define ACE_ALG_EDDSA (-8)

/* CoAP option numbers used here. */
#define ACE_OPT_URI_PATH 11
#define ACE_OPT_CONTENT_FORMAT 12
#define ACE_OPT_MAX_AGE 14
#define ACE_OPT_URI_QUERY 15
#define ACE_OPT_ECHO 252
#define ACE_OPT_PROOF 65001
/* application/ace+cbor */
#define ACE_CF_ACE_CBOR 19

/* A borrowed byte range (no ownership). */
struct ace_bytes {
    const uint8_t *ptr;
    size_t len;
};

/* ---- crypto hook ------------------------------------------------------- */

/* Every function gets the parts of its input in order and must treat them as
 * one concatenated message; it returns 0 on success, anything else is
 * reported as ACE_ERR_CRYPTO. ``sign`` may be NULL on an HMAC-only device. */
struct ace_crypto {
    void *ctx;
    int (*sha256)(void *ctx, const struct ace_bytes *parts, size_t n_parts, uint8_t out[32]);
    int (*hmac_sha256)(void *ctx, const uint8_t *key, size_t key_len,
                       const struct ace_bytes *parts, size_t n_parts, uint8_t out[32]);
    /* ES256: ECDSA P-256 over SHA-256 of the message, r || s (32 + 32 bytes,
     * big-endian, not DER). EdDSA: Ed25519 over the message itself. */
    int (*sign)(void *ctx, int alg, const struct ace_bytes *parts, size_t n_parts,
                uint8_t sig[ACE_SIG_LEN]);
};

/* ---- CBOR (RFC 8949) --------------------------------------------------- */

/* The head of a data item in preferred (shortest) form; 1..9 bytes. */
int ace_cbor_head(uint8_t *out, size_t cap, size_t *len, uint8_t major, uint64_t arg);
/* Length of that head without writing it. */
size_t ace_cbor_head_len(uint64_t arg);

/* A bounded reader over one buffer. */
struct ace_cbor {
    const uint8_t *buf;
    size_t len;
    size_t pos;
};
void ace_cbor_init(struct ace_cbor *d, const uint8_t *buf, size_t len);
/* Read one head: major type 0..7 and its argument. Byte and text strings are
 * checked to fit in what remains (the bytes follow at d->pos). Indefinite
 * lengths are ACE_ERR_UNSUPPORTED, reserved additional info ACE_ERR_MALFORMED. */
int ace_cbor_read_head(struct ace_cbor *d, uint8_t *major, uint64_t *arg);
/* Skip one whole data item, nested ones included, without recursion. */
int ace_cbor_skip(struct ace_cbor *d);
/* Read an integer (major 0 or 1) into int64_t (ACE_ERR_RANGE if it does not fit). */
int ace_cbor_read_int(struct ace_cbor *d, int64_t *v);
/* Read a byte string (major 2) or text string (major 3), borrowing its bytes. */
int ace_cbor_read_str(struct ace_cbor *d, uint8_t major, struct ace_bytes *out);

/* ---- AIF scopes (RFC 9237) --------------------------------------------- */

/* Method bits: bit (code - 1) per CoAP method. */
#define ACE_GET 0x01u
#define ACE_POST 0x02u
#define ACE_PUT 0x04u
#define ACE_DELETE 0x08u
#define ACE_FETCH 0x10u
#define ACE_PATCH 0x20u
#define ACE_IPATCH 0x40u

struct ace_aif_entry {
    const char *path; /* "/temp", as in the scope; not NUL-terminated necessarily */
    size_t path_len;
    uint32_t methods; /* ACE_GET | ... */
};
/* [[path, methods], ...] in the order given. The gateway accepts any order
 * and answers with its canonical form: sorted by path, byte by byte. */
int ace_aif_encode(uint8_t *out, size_t cap, size_t *len, const struct ace_aif_entry *entries,
                   size_t n);
/* The same from the text form "/temp:GET /cfg:GET,PUT" (methods
 * case-insensitive, "*" = all seven), entries in the order written. */
int ace_aif_from_text(uint8_t *out, size_t cap, size_t *len, const char *text, size_t text_len);

/* ---- token request / response (RFC 9200 §5.8) -------------------------- */

enum ace_scope_form { ACE_SCOPE_NONE = 0, ACE_SCOPE_AIF = 1, ACE_SCOPE_TEXT = 2 };

struct ace_token_request {
    enum ace_scope_form scope_form;
    const uint8_t *scope; /* AIF bytes, or the text form's bytes */
    size_t scope_len;
    /* asymmetric PoP: either the device's public COSE_Key (encoded) ... */
    const uint8_t *req_cnf_cose_key;
    size_t req_cnf_cose_key_len;
    /* ... or only its kid, when the operator registered the key */
    const uint8_t *req_cnf_kid;
    size_t req_cnf_kid_len;
};
/* {4: req_cnf, 9: scope, 33: 2} (keys ascending; absent ones left out). */
int ace_token_request_encode(uint8_t *out, size_t cap, size_t *len,
                             const struct ace_token_request *req);

struct ace_token_response {
    struct ace_bytes access_token; /* the byte string's content, without its CBOR head */
    int has_expires_in;
    uint32_t expires_in;
    /* cnf {1: COSE_Key}: symmetric PoP key; or cnf {3: kid} (asymmetric) */
    struct ace_bytes kid;
    struct ace_bytes k; /* empty for an asymmetric token */
    int alg;            /* COSE_Key alg, 0 when absent */
    struct ace_bytes scope;
    int scope_is_text;
    int token_type;  /* -1 when absent */
    int ace_profile; /* -1 when absent */
};
/* Parse a 2.01 payload. Borrows from msg. Unknown keys are skipped. */
int ace_token_response_parse(const uint8_t *msg, size_t len, struct ace_token_response *out);

/* ACE error codes (RFC 9200 §5.8.3). */
#define ACE_INVALID_REQUEST 1
#define ACE_INVALID_CLIENT 2
#define ACE_INVALID_GRANT 3
#define ACE_UNAUTHORIZED_CLIENT 4
#define ACE_UNSUPPORTED_GRANT_TYPE 5
#define ACE_INVALID_SCOPE 6
#define ACE_UNSUPPORTED_POP_KEY 7
#define ACE_INCOMPATIBLE_ACE_PROFILES 8

struct ace_error {
    int error;                     /* 30 */
    struct ace_bytes description;  /* 32, for humans: log it, never parse it */
};
int ace_error_parse(const uint8_t *msg, size_t len, struct ace_error *out);

struct ace_creation_hints {
    struct ace_bytes as_uri;   /* 1 */
    struct ace_bytes audience; /* 5 */
};
int ace_creation_hints_parse(const uint8_t *msg, size_t len, struct ace_creation_hints *out);

/* ---- CoAP responses (RFC 7252 §3) -------------------------------------- */

struct ace_coap_response {
    uint8_t type; /* 0 CON, 1 NON, 2 ACK, 3 RST */
    uint8_t code; /* class << 5 | detail: 4.01 = 0x81 */
    uint16_t mid;
    uint8_t token[8];
    size_t token_len;
    struct ace_bytes echo;     /* empty when absent */
    int32_t content_format;    /* -1 when absent */
    int has_max_age;
    uint32_t max_age;
    struct ace_bytes payload;
};
int ace_coap_response_parse(const uint8_t *msg, size_t len, struct ace_coap_response *out);

/* ---- the Proof option (option 65001) ------------------------------------ */

struct ace_request {
    uint8_t code;                 /* 1 GET, 2 POST, 3 PUT, 4 DELETE, 5..7 */
    const struct ace_bytes *path; /* Uri-Path options' values, as sent */
    size_t n_path;
    const struct ace_bytes *query; /* Uri-Query options' values, as sent */
    size_t n_query;
    int32_t content_format;        /* -1 when the option is absent */
    const uint8_t *payload;        /* the whole body, also for Block1 */
    size_t payload_len;
};

struct ace_pop_key {
    int alg;            /* ACE_ALG_HMAC_256_64, ACE_ALG_ES256 or ACE_ALG_EDDSA */
    const uint8_t *kid; /* as cnf gave it (or the kid of your own key) */
    size_t kid_len;
    const uint8_t *k; /* HMAC key; NULL for ES256/EdDSA (the hook signs) */
    size_t k_len;
};

/* Bytes of the Partial IV for piv (1..5), or 0 when piv > ACE_PIV_MAX. */
size_t ace_piv_len(uint64_t piv);
/* Length of the detached content, or 0 when the request is out of range. */
size_t ace_detached_content_len(const struct ace_request *r, uint64_t piv, size_t echo_len);
/* The CBOR array the proof covers:
 * [1, code, [path...], [query...], cf / null, sha256(payload)[:16] / h'', piv, echo / null] */
int ace_detached_content(uint8_t *out, size_t cap, size_t *len, const struct ace_crypto *c,
                         const struct ace_request *r, uint64_t piv, const uint8_t *echo,
                         size_t echo_len);
/* The option value [<< {1: alg} >>, {4: kid, 6: piv}, null, tag / signature].
 * work/work_cap holds the detached content while it is MACed or signed
 * (ace_detached_content_len bytes). echo may be NULL. */
int ace_proof(uint8_t *out, size_t cap, size_t *len, uint8_t *work, size_t work_cap,
              const struct ace_crypto *c, const struct ace_pop_key *key,
              const struct ace_request *r, uint64_t piv, const uint8_t *echo, size_t echo_len);

/* ---- piv bookkeeping ---------------------------------------------------- */

/* A sequence number per PoP key. With a persistence hook, the device writes a
 * bound to flash before it uses pivs up to it, one write per ``step`` pivs,
 * and after a reboot continues from the stored bound (ace_piv_resume). */
struct ace_piv {
    uint64_t next;     /* next piv to hand out */
    uint64_t reserved; /* pivs below this are covered by the last persisted bound */
    uint32_t step;     /* pivs reserved per write; 0 = no persistence */
    int (*persist)(void *ctx, uint64_t bound);
    void *persist_ctx;
};
void ace_piv_init(struct ace_piv *p, uint32_t step, int (*persist)(void *, uint64_t),
                  void *persist_ctx);
/* After a reboot: continue from the bound last persisted. */
int ace_piv_resume(struct ace_piv *p, uint64_t stored_bound);
/* Take the next piv (persisting a new bound first when needed). */
int ace_piv_take(struct ace_piv *p, uint64_t *piv);
/* A new PoP key: pivs start over at ACE_PIV_FIRST. */
int ace_piv_restart(struct ace_piv *p);

/* ---- Echo (RFC 9175) ---------------------------------------------------- */

/* Echo rounds a request may take: a second 4.01 + Echo in a row can happen
 * (the repeat was slow), a third means something else is wrong. */
#define ACE_ECHO_ROUNDS 2
struct ace_echo {
    uint8_t value[ACE_ECHO_MAX];
    size_t len;   /* 0: no Echo to send */
    uint8_t rounds;
};
void ace_echo_reset(struct ace_echo *e);
/* A 4.01 carried this Echo: keep it for the repeat. ACE_ERR_EXHAUSTED after
 * ACE_ECHO_ROUNDS in a row (back off); ACE_ERR_RANGE for 0 or > 40 bytes. */
int ace_echo_challenge(struct ace_echo *e, const uint8_t *value, size_t len);
/* The request with the Echo was answered without a new challenge. */
void ace_echo_done(struct ace_echo *e);

/* ---- the token a device keeps, and its renewal ------------------------- */

/* Renew at this fraction (per mille) of expires_in, on the device's ticks. */
#ifndef ACE_RENEW_PERMILLE
#define ACE_RENEW_PERMILLE 900u
#endif

struct ace_token {
    uint8_t token[ACE_TOKEN_MAX];
    uint16_t token_len;
    uint8_t kid[ACE_KID_MAX];
    uint8_t kid_len;
    uint8_t k[ACE_KEY_MAX];
    uint8_t k_len;
    int8_t alg;
    uint32_t received_ms; /* tick counter (ms, wrapping) when the response arrived */
    uint32_t lifetime_s;  /* expires_in */
    struct ace_piv piv;
};
/* Keep what a token response gave (copies; the response may go). For an
 * asymmetric token pass the device key's alg and kid in ``own`` (k NULL).
 * ACE_ERR_BUFFER when the token or kid exceed ACE_TOKEN_MAX / ACE_KID_MAX.
 * Pivs start over. A response without expires_in gets ``default_lifetime_s``. */
int ace_token_store(struct ace_token *t, const struct ace_token_response *r,
                    const struct ace_pop_key *own, uint32_t now_ms, uint32_t default_lifetime_s);
/* The PoP key view of a stored token. */
void ace_token_key(const struct ace_token *t, struct ace_pop_key *key);
/* Milliseconds from receipt at which to renew (ACE_RENEW_PERMILLE of the lifetime). */
uint32_t ace_token_renew_after_ms(const struct ace_token *t);
/* 1 when it is time to fetch a new token, else 0 (wrapping tick arithmetic). */
int ace_token_renewal_due(const struct ace_token *t, uint32_t now_ms);
/* 1 when expires_in has passed on the device's ticks. */
int ace_token_expired(const struct ace_token *t, uint32_t now_ms);

/* ---- what to do with an answer (firmware_notes/device.md) -------------- */

enum ace_action {
    ACE_ACT_DONE = 0,        /* 2.xx: next request takes the next piv */
    ACE_ACT_REPEAT_ECHO,     /* 4.01 + Echo: repeat with the Echo, next piv */
    ACE_ACT_UPLOAD_TOKEN,    /* 4.01 + Creation Hints: POST /authz-info, then repeat */
    ACE_ACT_NEW_TOKEN,       /* plain 4.01: fetch a new token, retry once */
    ACE_ACT_WAIT,            /* 4.29 / 5.03: wait Max-Age seconds, new request */
    ACE_ACT_RETRY_LATER,     /* 5.02 / 5.04: upstream trouble, back off */
    ACE_ACT_FIX_REQUEST,     /* 4.00 / 4.02 / 4.04 / 4.13 / 4.15: a bug on the device */
    ACE_ACT_NOT_AUTHORIZED   /* 4.03 / 4.05: outside the token's scope */
};
/* Classify a response to a protected request. */
enum ace_action ace_classify(const struct ace_coap_response *m);
/* Seconds to wait for ACE_ACT_WAIT: Max-Age, or its default 60 (RFC 7252 §5.10.5). */
uint32_t ace_wait_seconds(const struct ace_coap_response *m);

#ifdef __cplusplus
}
#endif
#endif /* ACEDEV_H */
