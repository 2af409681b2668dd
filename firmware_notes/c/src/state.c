/* What a device keeps between requests: the piv counter (with a persistence
 * hook), the Echo value of a pending challenge, and the token with its
 * renewal deadline on the device's own tick counter (firmware_notes/device.md). */
#include "internal.h"

void ace_piv_init(struct ace_piv *p, uint32_t step, int (*persist)(void *, uint64_t),
                  void *persist_ctx)
{
    p->next = ACE_PIV_FIRST;
    p->reserved = 0;
    p->step = persist ? (step ? step : 1) : 0;
    p->persist = persist;
    p->persist_ctx = persist_ctx;
}

int ace_piv_restart(struct ace_piv *p)
{
    p->next = ACE_PIV_FIRST;
    p->reserved = 0;
    return ACE_OK;
}

int ace_piv_resume(struct ace_piv *p, uint64_t stored_bound)
{
    if (stored_bound > ACE_PIV_MAX + 1) return ACE_ERR_RANGE;
    /* every piv below the stored bound may have been used: skip them all */
    p->next = stored_bound;
    p->reserved = stored_bound;
    return ACE_OK;
}

int ace_piv_take(struct ace_piv *p, uint64_t *piv)
{
    if (p->next > ACE_PIV_MAX) return ACE_ERR_EXHAUSTED;
    if (p->persist && p->next >= p->reserved) {
        uint64_t bound = p->next + p->step;
        if (bound > ACE_PIV_MAX + 1) bound = ACE_PIV_MAX + 1;
        if (p->persist(p->persist_ctx, bound)) return ACE_ERR_EXHAUSTED;
        p->reserved = bound;
    }
    *piv = p->next++;
    return ACE_OK;
}

void ace_echo_reset(struct ace_echo *e)
{
    e->len = 0;
    e->rounds = 0;
}

int ace_echo_challenge(struct ace_echo *e, const uint8_t *value, size_t len)
{
    if (!value || len == 0 || len > ACE_ECHO_MAX) return ACE_ERR_RANGE;
    if (e->rounds >= ACE_ECHO_ROUNDS) {
        e->len = 0;
        return ACE_ERR_EXHAUSTED;
    }
    memcpy(e->value, value, len);
    e->len = len;
    e->rounds++;
    return ACE_OK;
}

void ace_echo_done(struct ace_echo *e)
{
    ace_echo_reset(e);
}

int ace_token_store(struct ace_token *t, const struct ace_token_response *r,
                    const struct ace_pop_key *own, uint32_t now_ms, uint32_t default_lifetime_s)
{
    const uint8_t *kid;
    size_t kid_len;
    int alg;
    if (!t || !r || !r->access_token.ptr) return ACE_ERR_ARG;
    if (r->k.len) { /* symmetric PoP key from cnf */
        if (!r->kid.len) return ACE_ERR_MISSING;
        kid = r->kid.ptr;
        kid_len = r->kid.len;
        alg = r->alg ? r->alg : ACE_ALG_HMAC_256_64;
        if (alg != ACE_ALG_HMAC_256_64) return ACE_ERR_UNSUPPORTED;
    } else { /* the device's own key pair */
        if (!own || !own->kid || !own->kid_len) return ACE_ERR_MISSING;
        kid = own->kid;
        kid_len = own->kid_len;
        alg = own->alg;
        if (alg != ACE_ALG_ES256 && alg != ACE_ALG_EDDSA) return ACE_ERR_UNSUPPORTED;
    }
    if (r->access_token.len > ACE_TOKEN_MAX || kid_len > ACE_KID_MAX || r->k.len > ACE_KEY_MAX)
        return ACE_ERR_BUFFER;
    memcpy(t->token, r->access_token.ptr, r->access_token.len);
    t->token_len = (uint16_t)r->access_token.len;
    memcpy(t->kid, kid, kid_len);
    t->kid_len = (uint8_t)kid_len;
    if (r->k.len) memcpy(t->k, r->k.ptr, r->k.len);
    t->k_len = (uint8_t)r->k.len;
    t->alg = (int8_t)alg;
    t->received_ms = now_ms;
    t->lifetime_s = r->has_expires_in ? r->expires_in : default_lifetime_s;
    /* ticks are 32-bit milliseconds: 49 days; acegw's longest lifetime is 7 */
    if (t->lifetime_s > UINT32_MAX / 1000u) t->lifetime_s = UINT32_MAX / 1000u;
    return ace_piv_restart(&t->piv);
}

void ace_token_key(const struct ace_token *t, struct ace_pop_key *key)
{
    key->alg = t->alg;
    key->kid = t->kid;
    key->kid_len = t->kid_len;
    key->k = t->k_len ? t->k : NULL;
    key->k_len = t->k_len;
}

uint32_t ace_token_renew_after_ms(const struct ace_token *t)
{
    return (uint32_t)((uint64_t)t->lifetime_s * ACE_RENEW_PERMILLE);
}

int ace_token_renewal_due(const struct ace_token *t, uint32_t now_ms)
{
    return (uint32_t)(now_ms - t->received_ms) >= ace_token_renew_after_ms(t);
}

int ace_token_expired(const struct ace_token *t, uint32_t now_ms)
{
    return (uint32_t)(now_ms - t->received_ms) >= t->lifetime_s * 1000u;
}
