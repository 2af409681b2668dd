/*
 * acedev-device: an example device on libcoap (POSIX) using the acedev library.
 *
 * DTLS-PSK session -> POST /token -> POST /authz-info -> authorized GETs with
 * the Proof option, following firmware_notes/device.md: the Echo round
 * (RFC 9175), 4.29 / 5.03 + Max-Age, reconnect with the same token, renewal
 * at 90 % of expires_in on the monotonic clock, and recovery after a gateway
 * restart (close_notify -> reconnect -> 4.01 + Creation Hints -> re-upload).
 *
 * libcoap's block layer (COAP_BLOCK_USE_LIBCOAP) stays off: with it, libcoap
 * answers a 4.01 + Echo itself by repeating the request with the old proof.
 *
 * One line per event on stdout ("key=value ..."); exit 0 when every request
 * was answered 2.xx.
 *
 *   acedev-device --host 127.0.0.1 --port 5684 --id sensor-0001 --psk-hex HEX
 *                 [--scope "/whoami:GET"] [--path whoami] [--requests 20]
 *                 [--pace-ms 0] [--reconnect-at N] [--burst-at N --burst K]
 *                 [--pause-at N] [--timeout-ms 10000]
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <coap3/coap.h>

#include "acedev.h"
#include "crypto_openssl.h"

struct options {
    const char *host, *id, *scope, *path;
    int port;
    uint8_t psk[64];
    size_t psk_len;
    int requests, pace_ms, reconnect_at, burst_at, burst, pause_at, timeout_ms;
};

/* What the response handler hands to the waiting code. */
static struct {
    uint8_t token[8];
    size_t token_len;
    int done, nack, closed;
    struct ace_coap_response resp;
    uint8_t payload[2048];
    uint8_t echo[ACE_ECHO_MAX];
} pending;

static coap_context_t *ctx;
static coap_session_t *session;
static struct ace_crypto crypto;
static struct ace_openssl ossl;
static struct ace_token token; /* everything the device keeps for its token */
static struct ace_echo echo;
static struct options opt;

static uint32_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint32_t)((uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u);
}

static void sleep_ms(uint32_t ms)
{
    uint32_t start = now_ms();
    while (now_ms() - start < ms) coap_io_process(ctx, ms - (now_ms() - start));
}

static void hex(const uint8_t *p, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) sprintf(out + 2 * i, "%02x", p[i]);
    out[2 * n] = '\0';
}

static coap_response_t on_response(coap_session_t *s, const coap_pdu_t *sent,
                                   const coap_pdu_t *received, const coap_mid_t mid)
{
    coap_bin_const_t tok = coap_pdu_get_token(received);
    coap_opt_iterator_t it;
    coap_opt_t *o;
    size_t len;
    const uint8_t *data;
    (void)s;
    (void)sent;
    (void)mid;
    if (tok.length != pending.token_len || memcmp(tok.s, pending.token, tok.length) != 0)
        return COAP_RESPONSE_OK;
    memset(&pending.resp, 0, sizeof pending.resp);
    pending.resp.code = (uint8_t)coap_pdu_get_code(received);
    pending.resp.content_format = -1;
    if ((o = coap_check_option(received, COAP_OPTION_ECHO, &it)) != NULL &&
        coap_opt_length(o) <= ACE_ECHO_MAX) {
        memcpy(pending.echo, coap_opt_value(o), coap_opt_length(o));
        pending.resp.echo.ptr = pending.echo;
        pending.resp.echo.len = coap_opt_length(o);
    }
    if ((o = coap_check_option(received, COAP_OPTION_CONTENT_FORMAT, &it)) != NULL)
        pending.resp.content_format =
            (int32_t)coap_decode_var_bytes(coap_opt_value(o), coap_opt_length(o));
    if ((o = coap_check_option(received, COAP_OPTION_MAXAGE, &it)) != NULL) {
        pending.resp.has_max_age = 1;
        pending.resp.max_age = coap_decode_var_bytes(coap_opt_value(o), coap_opt_length(o));
    }
    if (coap_get_data(received, &len, &data) && len <= sizeof pending.payload) {
        memcpy(pending.payload, data, len);
        pending.resp.payload.ptr = pending.payload;
        pending.resp.payload.len = len;
    }
    pending.done = 1;
    return COAP_RESPONSE_OK;
}

static void on_nack(coap_session_t *s, const coap_pdu_t *sent, const coap_nack_reason_t reason,
                    const coap_mid_t mid)
{
    (void)s;
    (void)sent;
    (void)mid;
    printf("nack reason=%d\n", (int)reason);
    pending.nack = 1;
}

static int on_event(coap_session_t *s, const coap_event_t event)
{
    if (s == session && (event == COAP_EVENT_DTLS_CLOSED || event == COAP_EVENT_DTLS_ERROR ||
                         event == COAP_EVENT_SESSION_CLOSED)) {
        if (!pending.closed) printf("session_closed event=0x%04x\n", (unsigned)event);
        pending.closed = 1;
    }
    return 0;
}

static int connect_session(void)
{
    coap_address_t dst;
    coap_dtls_cpsk_t setup;
    coap_address_init(&dst);
    dst.addr.sin.sin_family = AF_INET;
    dst.addr.sin.sin_port = htons((uint16_t)opt.port);
    if (inet_pton(AF_INET, opt.host, &dst.addr.sin.sin_addr) != 1) return -1;
    dst.size = sizeof dst.addr.sin;
    memset(&setup, 0, sizeof setup);
    setup.version = COAP_DTLS_CPSK_SETUP_VERSION;
    setup.psk_info.identity.s = (const uint8_t *)opt.id;
    setup.psk_info.identity.length = strlen(opt.id);
    setup.psk_info.key.s = opt.psk;
    setup.psk_info.key.length = opt.psk_len;
    session = coap_new_client_session_psk2(ctx, NULL, &dst, COAP_PROTO_DTLS, &setup);
    pending.closed = 0;
    return session ? 0 : -1;
}

static void disconnect(void)
{
    if (session) coap_session_release(session); /* close_notify to the gateway */
    session = NULL;
    sleep_ms(10);
}

static int reconnect(const char *reason)
{
    printf("reconnect reason=%s\n", reason);
    disconnect();
    return connect_session();
}

/* Send one CON request and wait for its answer (libcoap retransmits). */
static int exchange(coap_pdu_code_t code, const char *path, int cf, const uint8_t *payload,
                    size_t payload_len, const uint8_t *proof, size_t proof_len)
{
    coap_pdu_t *pdu;
    uint8_t buf[4];
    uint32_t start;
    if (!session && connect_session()) return -1;
    pdu = coap_pdu_init(COAP_MESSAGE_CON, code, coap_new_message_id(session),
                        coap_session_max_pdu_size(session));
    if (!pdu) return -1;
    coap_session_new_token(session, &pending.token_len, pending.token);
    coap_add_token(pdu, pending.token_len, pending.token);
    /* options in ascending order: Uri-Path 11, Content-Format 12, Echo 252, Proof 65001 */
    coap_add_option(pdu, COAP_OPTION_URI_PATH, strlen(path), (const uint8_t *)path);
    if (cf >= 0)
        coap_add_option(pdu, COAP_OPTION_CONTENT_FORMAT,
                        coap_encode_var_safe(buf, sizeof buf, (unsigned)cf), buf);
    if (proof && echo.len) coap_add_option(pdu, COAP_OPTION_ECHO, echo.len, echo.value);
    if (proof) coap_add_option(pdu, ACE_OPT_PROOF, proof_len, proof);
    if (payload_len) coap_add_data(pdu, payload_len, payload);
    pending.done = pending.nack = 0;
    if (coap_send(session, pdu) == COAP_INVALID_MID) return -1;
    start = now_ms();
    while (!pending.done && !pending.nack && !pending.closed &&
           now_ms() - start < (uint32_t)opt.timeout_ms)
        coap_io_process(ctx, 100);
    return pending.done ? 0 : -1;
}

static const char *code_text(uint8_t code, char *out)
{
    sprintf(out, "%d.%02d", code >> 5, code & 0x1f);
    return out;
}

/* POST /token; keep the token, PoP key and lifetime. */
static int get_token(void)
{
    uint8_t scope[256], req[512];
    size_t scope_len, req_len;
    struct ace_token_request tr;
    struct ace_token_response r;
    char c[8], kid[2 * ACE_KID_MAX + 1];
    int rc;
    memset(&tr, 0, sizeof tr);
    if (opt.scope) {
        rc = ace_aif_from_text(scope, sizeof scope, &scope_len, opt.scope, strlen(opt.scope));
        if (rc) {
            printf("error step=scope rc=%s\n", ace_strerror(rc));
            return -1;
        }
        tr.scope_form = ACE_SCOPE_AIF;
        tr.scope = scope;
        tr.scope_len = scope_len;
    }
    if ((rc = ace_token_request_encode(req, sizeof req, &req_len, &tr))) return -1;
    if (exchange(COAP_REQUEST_CODE_POST, "token", ACE_CF_ACE_CBOR, req, req_len, NULL, 0)) {
        printf("error step=token rc=no_answer\n");
        return -1;
    }
    if (pending.resp.code != 0x41) {
        struct ace_error e;
        if (ace_error_parse(pending.resp.payload.ptr, pending.resp.payload.len, &e) == ACE_OK)
            printf("token_error code=%s error=%d\n", code_text(pending.resp.code, c), e.error);
        else
            printf("token_error code=%s\n", code_text(pending.resp.code, c));
        return -1;
    }
    rc = ace_token_response_parse(pending.resp.payload.ptr, pending.resp.payload.len, &r);
    if (!rc) rc = ace_token_store(&token, &r, NULL, now_ms(), 3600);
    if (rc) {
        printf("error step=token_response rc=%s\n", ace_strerror(rc));
        return -1;
    }
    hex(token.kid, token.kid_len, kid);
    printf("token kid=%s expires_in=%u bytes=%u renew_after_ms=%u\n", kid,
           (unsigned)token.lifetime_s, (unsigned)token.token_len,
           (unsigned)ace_token_renew_after_ms(&token));
    ace_echo_reset(&echo);
    return 0;
}

/* POST /authz-info with the token bytes (the byte string's content). */
static int upload(void)
{
    char c[8];
    if (exchange(COAP_REQUEST_CODE_POST, "authz-info", ACE_CF_ACE_CBOR, token.token,
                 token.token_len, NULL, 0))
        return -1;
    printf("upload code=%s\n", code_text(pending.resp.code, c));
    return pending.resp.code == 0x41 ? 0 : -1;
}

static const char *action_name(enum ace_action a)
{
    static const char *const names[] = {"done", "repeat_echo", "upload_token", "new_token",
                                        "wait", "retry_later", "fix_request", "not_authorized"};
    return names[a];
}

/* One authorized request, carried through every answer device.md lists. */
static int authorized_request(int n)
{
    struct ace_bytes seg = {(const uint8_t *)opt.path, strlen(opt.path)};
    struct ace_request r = {1, &seg, 1, NULL, 0, -1, NULL, 0};
    int new_tokens = 0, reconnects = 0;
    char c[8];
    ace_echo_reset(&echo);
    for (int attempt = 0; attempt < 12; attempt++) {
        uint8_t proof[ACE_PROOF_SIGN1_MAX(ACE_KID_MAX)], work[128];
        size_t proof_len;
        uint64_t piv;
        struct ace_pop_key key;
        enum ace_action action;
        int rc;
        if (pending.closed && reconnect("closed")) return -1;
        if ((rc = ace_piv_take(&token.piv, &piv))) return -1; /* a new piv per request */
        ace_token_key(&token, &key);
        rc = ace_proof(proof, sizeof proof, &proof_len, work, sizeof work, &crypto, &key, &r, piv,
                       echo.len ? echo.value : NULL, echo.len);
        if (rc) {
            printf("error step=proof rc=%s\n", ace_strerror(rc));
            return -1;
        }
        if (exchange(COAP_REQUEST_CODE_GET, opt.path, -1, NULL, 0, proof, proof_len)) {
            /* no answer: the session is gone (close_notify, NAT, idle); never
             * resend on a new session, build a new request there */
            if (++reconnects > 3 || reconnect(pending.closed ? "closed" : "timeout")) return -1;
            continue;
        }
        action = ace_classify(&pending.resp);
        if (action == ACE_ACT_DONE) {
            printf("request n=%d code=%s piv=%llu echo_rounds=%u\n", n,
                   code_text(pending.resp.code, c), (unsigned long long)piv,
                   (unsigned)echo.rounds);
            ace_echo_done(&echo);
            return 0;
        }
        printf("answer n=%d code=%s action=%s piv=%llu\n", n, code_text(pending.resp.code, c),
               action_name(action), (unsigned long long)piv);
        switch (action) {
        case ACE_ACT_REPEAT_ECHO:
            if (ace_echo_challenge(&echo, pending.resp.echo.ptr, pending.resp.echo.len))
                return -1; /* a third Echo in a row: back off */
            break;
        case ACE_ACT_UPLOAD_TOKEN:
            ace_echo_reset(&echo);
            if (ace_token_expired(&token, now_ms()) || upload()) {
                if (new_tokens++ || get_token() || upload()) return -1;
            }
            break;
        case ACE_ACT_NEW_TOKEN:
            if (new_tokens++ || get_token() || upload()) return -1;
            break;
        case ACE_ACT_WAIT:
            printf("wait max_age=%u\n", (unsigned)ace_wait_seconds(&pending.resp));
            sleep_ms(ace_wait_seconds(&pending.resp) * 1000u);
            break;
        default: return -1;
        }
    }
    return -1;
}

static int parse_args(int argc, char **argv)
{
    opt.host = "127.0.0.1";
    opt.path = "whoami";
    opt.requests = 20;
    opt.timeout_ms = 10000;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--host")) opt.host = v;
        else if (!strcmp(k, "--port")) opt.port = atoi(v);
        else if (!strcmp(k, "--id")) opt.id = v;
        else if (!strcmp(k, "--scope")) opt.scope = v;
        else if (!strcmp(k, "--path")) opt.path = v;
        else if (!strcmp(k, "--requests")) opt.requests = atoi(v);
        else if (!strcmp(k, "--pace-ms")) opt.pace_ms = atoi(v);
        else if (!strcmp(k, "--reconnect-at")) opt.reconnect_at = atoi(v);
        else if (!strcmp(k, "--burst-at")) opt.burst_at = atoi(v);
        else if (!strcmp(k, "--burst")) opt.burst = atoi(v);
        else if (!strcmp(k, "--pause-at")) opt.pause_at = atoi(v);
        else if (!strcmp(k, "--timeout-ms")) opt.timeout_ms = atoi(v);
        else if (!strcmp(k, "--psk-hex")) {
            size_t n = strlen(v) / 2;
            if (n == 0 || n > sizeof opt.psk || strlen(v) % 2) return -1;
            for (size_t j = 0; j < n; j++) {
                unsigned int b;
                if (sscanf(v + 2 * j, "%2x", &b) != 1) return -1;
                opt.psk[j] = (uint8_t)b;
            }
            opt.psk_len = n;
        } else return -1;
    }
    return opt.id && opt.port > 0 && opt.psk_len ? 0 : -1;
}

int main(int argc, char **argv)
{
    int ok = 0;
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (parse_args(argc, argv)) {
        fprintf(stderr, "usage: acedev-device --port P --id ID --psk-hex HEX [options]\n");
        return 2;
    }
    coap_startup();
    coap_set_log_level(LOG_ERR);
    ctx = coap_new_context(NULL);
    if (!ctx) return 1;
    /* no coap_context_set_block_mode(ctx, COAP_BLOCK_USE_LIBCOAP): see above */
    coap_register_response_handler(ctx, on_response);
    coap_register_nack_handler(ctx, on_nack);
    coap_register_event_handler(ctx, on_event);
    ace_crypto_openssl(&crypto, &ossl);
    ace_piv_init(&token.piv, 0, NULL, NULL);

    if (connect_session() || get_token() || upload()) {
        printf("done requests=0 ok=0\n");
        return 1;
    }
    for (int n = 1; n <= opt.requests; n++) {
        int in_burst = opt.burst_at && n >= opt.burst_at && n < opt.burst_at + opt.burst;
        if (ace_token_renewal_due(&token, now_ms())) {
            /* renew on the device's own ticks; the new token's pivs start over */
            printf("renew elapsed_ms=%u\n", (unsigned)(now_ms() - token.received_ms));
            if (get_token() || upload()) break;
        }
        if (n == opt.reconnect_at && reconnect("planned")) break;
        if (n == opt.pause_at) {
            char line[16];
            printf("paused n=%d\n", n);
            if (!fgets(line, sizeof line, stdin)) break;
            sleep_ms(300); /* take in what arrived meanwhile (a close_notify) */
            printf("resumed n=%d\n", n);
        }
        if (authorized_request(n)) {
            printf("failed n=%d\n", n);
            break;
        }
        ok++;
        if (opt.pace_ms && !in_burst) sleep_ms((uint32_t)opt.pace_ms);
    }
    printf("done requests=%d ok=%d\n", opt.requests, ok);
    disconnect();
    coap_free_context(ctx);
    coap_cleanup();
    return ok == opt.requests ? 0 : 1;
}
