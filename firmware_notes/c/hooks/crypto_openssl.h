/* The acedev crypto hook on OpenSSL 3 (POSIX builds, tests, the example device). */
#ifndef ACEDEV_CRYPTO_OPENSSL_H
#define ACEDEV_CRYPTO_OPENSSL_H

#include "acedev.h"

struct ace_openssl {
    void *pkey; /* EVP_PKEY * of the device key pair (ES256 or Ed25519), or NULL */
};

/* Fill ``c`` with the OpenSSL functions; ``ctx`` lives as long as ``c``. */
void ace_crypto_openssl(struct ace_crypto *c, struct ace_openssl *ctx);
/* Load a raw private key: 32-byte P-256 scalar (ACE_ALG_ES256) or Ed25519 seed. */
int ace_openssl_load_key(struct ace_openssl *ctx, int alg, const uint8_t d[32]);
void ace_openssl_free(struct ace_openssl *ctx);
/* Verify a signature made by the hook (tests: OpenSSL's ECDSA is randomized). */
int ace_openssl_verify(struct ace_openssl *ctx, int alg, const uint8_t *msg, size_t len,
                       const uint8_t sig[ACE_SIG_LEN]);

#endif
