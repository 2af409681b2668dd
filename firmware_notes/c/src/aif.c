/* AIF scopes, REST-specific model (RFC 9237 §3): [* [toid, methods]]. */
#include "internal.h"

int ace_aif_encode(uint8_t *out, size_t cap, size_t *len, const struct ace_aif_entry *entries,
                   size_t n)
{
    struct ace_w w = ACE_W(out, cap);
    if (n && !entries) return ACE_ERR_ARG;
    ace_w_head(&w, 4, n);
    for (size_t i = 0; i < n; i++) {
        const struct ace_aif_entry *e = &entries[i];
        if (e->methods == 0 || e->methods > 0x7fu || e->path_len == 0 || e->path[0] != '/')
            return ACE_ERR_RANGE;
        ace_w_byte(&w, 0x82);
        ace_w_str(&w, 3, (const uint8_t *)e->path, e->path_len);
        ace_w_head(&w, 0, e->methods);
    }
    return ace_w_done(&w, len);
}

static uint32_t method_bit(const char *m, size_t n)
{
    static const char *const names[] = {"GET", "POST", "PUT", "DELETE", "FETCH", "PATCH", "IPATCH"};
    if (n == 1 && m[0] == '*') return 0x7fu;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const char *name = names[i];
        size_t j = 0;
        while (j < n && name[j]) {
            char c = m[j];
            if (c >= 'a' && c <= 'z') c = (char)(c - 'a' + 'A');
            if (c != name[j]) break;
            j++;
        }
        if (j == n && name[j] == '\0') return 1u << i;
    }
    return 0;
}

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

int ace_aif_from_text(uint8_t *out, size_t cap, size_t *len, const char *text, size_t text_len)
{
    struct ace_w w = ACE_W(out, cap);
    size_t n = 0, i = 0;
    if (!text && text_len) return ACE_ERR_ARG;
    /* count the items first: the array head comes before them */
    while (i < text_len) {
        while (i < text_len && is_space(text[i])) i++;
        if (i < text_len) n++;
        while (i < text_len && !is_space(text[i])) i++;
    }
    if (n == 0) return ACE_ERR_RANGE;
    ace_w_head(&w, 4, n);
    i = 0;
    while (i < text_len) {
        size_t start, end, colon;
        uint32_t mask = 0;
        while (i < text_len && is_space(text[i])) i++;
        if (i == text_len) break;
        start = i;
        while (i < text_len && !is_space(text[i])) i++;
        end = i;
        colon = end;
        while (colon > start && text[colon - 1] != ':') colon--;
        if (colon == start || colon - 1 == start || text[start] != '/') return ACE_ERR_MALFORMED;
        for (size_t m = colon; m <= end;) {
            size_t e = m;
            uint32_t bit;
            while (e < end && text[e] != ',') e++;
            bit = method_bit(text + m, e - m);
            if (!bit) return ACE_ERR_MALFORMED;
            mask |= bit;
            m = e + 1;
        }
        ace_w_byte(&w, 0x82);
        ace_w_str(&w, 3, (const uint8_t *)text + start, colon - 1 - start);
        ace_w_head(&w, 0, mask);
    }
    return ace_w_done(&w, len);
}
