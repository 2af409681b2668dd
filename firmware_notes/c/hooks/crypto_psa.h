/* The acedev crypto hook on the PSA Crypto API (Mbed TLS 2.28 and 3.x, TF-M,
 * Zephyr): HMAC-SHA-256, SHA-256 and ES256 through psa_* calls only. */
#ifndef ACEDEV_CRYPTO_PSA_H
#define ACEDEV_CRYPTO_PSA_H

#include <psa/crypto.h>

#include "acedev.h"

/* The ECDSA variant the hook signs with. Deterministic ECDSA (RFC 6979)
 * needs no random number per signature; a secure element that only offers
 * randomized ECDSA builds with -DACE_PSA_ECDSA_ALG='PSA_ALG_ECDSA(PSA_ALG_SHA_256)'.
 * The gateway verifies either. */
#ifndef ACE_PSA_ECDSA_ALG
#define ACE_PSA_ECDSA_ALG PSA_ALG_DETERMINISTIC_ECDSA(PSA_ALG_SHA_256)
#endif

struct ace_psa {
    /* The device's ES256 key pair in the PSA key store, or 0 on an HMAC-only
     * device. Its policy must allow PSA_KEY_USAGE_SIGN_HASH with
     * ACE_PSA_ECDSA_ALG. Set it to a key generated inside a secure element, or
     * import a raw one with ace_psa_import_es256. */
    psa_key_id_t sign_key;
};

/* Initialise PSA Crypto (psa_crypto_init, safe to repeat) and fill ``c``;
 * ``ctx`` lives as long as ``c``. ACE_ERR_CRYPTO if PSA does not start. */
int ace_crypto_psa(struct ace_crypto *c, struct ace_psa *ctx);
/* Import a 32-byte P-256 private scalar as a volatile ES256 signing key
 * (replacing the context's key). EdDSA is not offered: Mbed TLS has no
 * Ed25519; the hook's sign refuses ACE_ALG_EDDSA. */
int ace_psa_import_es256(struct ace_psa *ctx, const uint8_t d[32]);
/* Destroy the context's signing key (a no-op without one). */
void ace_psa_free(struct ace_psa *ctx);

#endif
