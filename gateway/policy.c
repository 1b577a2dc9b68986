/*
 * policy.c - the decisions the configuration drives: who signs for a
 * sender, which clients are ours, which domains must sign, what an inbound
 * verdict leads to, and how the badge is written into headers (RFC 7281
 * Authentication-Results, RFC 2047 subject tags, X-Kyso-Signer).
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <libetpan/libetpan.h>

#include "internal.h"
#include "kyso_config.h"

static const char *domain_of(const char *addr)
{
    const char *at = addr ? strrchr(addr, '@') : NULL;

    return at ? at + 1 : NULL;
}

/* "user@domain" exactly, "@domain" for the domain, ".domain" for its
 * subdomains (and the domain itself is not included by ".domain"). */
static int sender_matches(const char *pattern, const char *addr)
{
    const char *dom = domain_of(addr);
    size_t pl = strlen(pattern), dl;

    if (dom == NULL)
        return 0;
    dl = strlen(dom);
    if (pattern[0] == '@')
        return strcasecmp(pattern + 1, dom) == 0;
    if (pattern[0] == '.')
        return dl > pl && strcasecmp(dom + dl - pl, pattern) == 0;
    return strcasecmp(pattern, addr) == 0;
}

const kyso_conf_identity *kyso_policy_identity_for(const kyso_config *c, const char *addr)
{
    for (size_t i = 0; addr && i < c->nidentities; i++)
        for (size_t j = 0; j < c->identities[i].nsenders; j++)
            if (sender_matches(c->identities[i].senders[j], addr))
                return &c->identities[i];
    return NULL;
}

int kyso_policy_login_allowed(const kyso_conf_identity *id, const char *login)
{
    if (id->nlogins == 0)
        return 1;
    for (size_t i = 0; login && i < id->nlogins; i++) {
        const char *pat = id->logins[i];

        if (pat[0] == '@') {
            const char *at = strrchr(login, '@');

            if (at && strcasecmp(at, pat) == 0)
                return 1;
        } else if (strcasecmp(pat, login) == 0) {
            return 1;
        }
    }
    return 0;
}

/* Parses "addr/bits"; returns the family or -1. */
static int parse_cidr(const char *cidr, unsigned char net[16], int *bits)
{
    char buf[64];
    char *slash;
    int family, maxbits;

    if (strlen(cidr) >= sizeof(buf))
        return -1;
    strcpy(buf, cidr);
    slash = strchr(buf, '/');
    if (slash)
        *slash = '\0';
    family = strchr(buf, ':') ? AF_INET6 : AF_INET;
    maxbits = family == AF_INET ? 32 : 128;
    if (inet_pton(family, buf, net) != 1)
        return -1;
    *bits = maxbits;
    if (slash) {
        char *end;
        long b = strtol(slash + 1, &end, 10);

        if (*end != '\0' || end == slash + 1 || b < 0 || b > maxbits)
            return -1;
        *bits = (int)b;
    }
    return family;
}

static int prefix_equal(const unsigned char *a, const unsigned char *b, int bits)
{
    int bytes = bits / 8, rest = bits % 8;

    if (memcmp(a, b, (size_t)bytes) != 0)
        return 0;
    if (rest == 0)
        return 1;
    return ((a[bytes] ^ b[bytes]) & (0xff << (8 - rest))) == 0;
}

int kyso_policy_addr_in(char *const *cidrs, size_t n, const char *addr)
{
    unsigned char a[16], net[16];
    int afam = 0, bits;

    if (addr) {
        /* IPv4-mapped IPv6 addresses count as IPv4. */
        if (strncasecmp(addr, "::ffff:", 7) == 0 && strchr(addr + 7, '.'))
            addr += 7;
        afam = strchr(addr, ':') ? AF_INET6 : AF_INET;
        if (inet_pton(afam, addr, a) != 1)
            return 0;
    }
    for (size_t i = 0; i < n; i++) {
        int fam = parse_cidr(cidrs[i], net, &bits);

        if (fam < 0)
            return -1;
        if (addr && fam == afam && prefix_equal(a, net, bits))
            return 1;
    }
    return 0;
}

/* "domain" matches itself; "*.domain" matches its subdomains. */
static int domain_matches(const char *pattern, const char *dom)
{
    size_t pl, dl = strlen(dom);

    if (strncmp(pattern, "*.", 2) == 0) {
        pattern += 1; /* keep the dot */
        pl = strlen(pattern);
        return dl > pl && strcasecmp(dom + dl - pl, pattern) == 0;
    }
    return strcasecmp(pattern, dom) == 0;
}

int kyso_policy_domain_must_sign(const kyso_config *c, const char *addr)
{
    const char *dom = domain_of(addr);

    for (size_t i = 0; dom && i < c->inbound.nmust_sign_domains; i++)
        if (domain_matches(c->inbound.must_sign_domains[i], dom))
            return 1;
    return 0;
}

int kyso_policy_recipient_wanted(const kyso_config *c, const char *addr)
{
    if (c->outbound.nrecipient_domains == 0)
        return 1;
    for (size_t i = 0; i < c->outbound.nrecipient_domains; i++)
        if (sender_matches(c->outbound.recipient_domains[i], addr))
            return 1;
    return 0;
}

kyso_action kyso_policy_inbound_action(const kyso_config *c, const kyso_verdict *v)
{
    /* A check that could not be made now is not the sender's fault. */
    if (v->result == KYSO_RESULT_TEMPERROR)
        return (kyso_action)c->inbound.on_temperror;
    if (v->result == KYSO_RESULT_PASS)
        return KYSO_ACT_TAG;
    /* A From nobody can read (missing, several, malformed) could hide a
     * must-sign domain: when such domains are configured, it gets their
     * policy rather than a way around it. */
    if (v->from == NULL ? c->inbound.nmust_sign_domains == 0
                        : !kyso_policy_domain_must_sign(c, v->from))
        return KYSO_ACT_TAG;
    return v->result == KYSO_RESULT_NONE ? (kyso_action)c->inbound.on_unsigned
                                         : (kyso_action)c->inbound.on_invalid;
}

/* Skips white space and (nested) comments: RFC 5322 CFWS. */
static const char *skip_cfws(const char *p)
{
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
            p++;
        if (*p != '(')
            return p;
        for (int depth = 0; *p; p++) {
            if (*p == '\\' && p[1]) {
                p++;
                continue;
            }
            if (*p == '(')
                depth++;
            else if (*p == ')' && --depth == 0) {
                p++;
                break;
            }
        }
    }
}

int kyso_policy_ar_is_ours(const char *value, const char *authserv_id)
{
    size_t n = strlen(authserv_id);
    const char *p = skip_cfws(value);

    /* authserv-id is the first token after CFWS (RFC 8601 2.2), perhaps
     * quoted, perhaps with a trailing dot as a fully qualified name. */
    if (*p == '"')
        p++;
    if (strncasecmp(p, authserv_id, n) != 0)
        return 0;
    p += n;
    if (*p == '.')
        p++;
    if (*p == '"')
        p++;
    return *p == ';' || *p == ' ' || *p == '\t' || *p == '\r' || *p == '\n' || *p == '(' ||
           *p == '\0';
}

/* Whole UTF-8 characters of at most max bytes from s. */
static size_t utf8_cut(const char *s, size_t len, size_t max)
{
    size_t n;

    if (len <= max)
        return len;
    n = max;
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
        n--;
    return n ? n : max;
}

char *kyso_rfc2047_encode(const char *utf8)
{
    kyso_buf b = KYSO_BUF_INIT;
    size_t len = strlen(utf8), off = 0;
    int plain = 1;

    for (const char *p = utf8; *p; p++)
        if ((unsigned char)*p >= 0x7f || (unsigned char)*p < 0x20 || (p[0] == '=' && p[1] == '?'))
            plain = 0;
    if (plain)
        return strdup(utf8);
    /* 45 bytes make 60 base64 characters: each word stays under 75. */
    while (off < len) {
        size_t n = utf8_cut(utf8 + off, len - off, 45);
        unsigned char enc[64];
        int m = EVP_EncodeBlock(enc, (const unsigned char *)utf8 + off, (int)n);

        if (kyso_buf_printf(&b, "%s=?UTF-8?B?%.*s?=", off ? " " : "", m, enc) != KYSO_OK) {
            kyso_buf_free(&b);
            return NULL;
        }
        off += n;
    }
    return b.data ? b.data : strdup("");
}

/* The subject decoded to UTF-8 (RFC 2047), or NULL. */
static char *decode_subject(const char *subject)
{
    size_t idx = 0;
    char *out = NULL;

    if (mailmime_encoded_phrase_parse("utf-8", subject, strlen(subject), &idx, "utf-8", &out) !=
        MAILIMF_NO_ERROR)
        return NULL;
    return out;
}

#include "fold_table.h"

/* Next code point of UTF-8 text; malformed bytes come back one by one. */
static unsigned int next_cp(const unsigned char **p)
{
    const unsigned char *s = *p;
    unsigned int cp = s[0];
    int extra = cp >= 0xF0 && cp < 0xF8 ? 3 : cp >= 0xE0 ? 2 : cp >= 0xC0 ? 1 : 0;

    if (cp >= 0x80 && cp < 0xC0)
        extra = 0;
    cp = extra == 3 ? cp & 0x07 : extra == 2 ? cp & 0x0F : extra == 1 ? cp & 0x1F : cp;
    for (int i = 1; i <= extra; i++) {
        if ((s[i] & 0xC0) != 0x80) {
            *p = s + 1;
            return s[0];
        }
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    *p = s + 1 + extra;
    return cp;
}

/* What a reader sees of a code point, for telling look-alikes apart from
 * the real tag: nothing for spaces, format characters and combining marks;
 * the base letter, lower case, for Latin letters with diacritics; the
 * character itself otherwise. */
/* Greek and Cyrillic letters that look like Latin ones. */
static const struct {
    unsigned int cp;
    char base;
} homoglyphs[] = {
    {0x0131, 'i'}, {0x0391, 'a'}, {0x0392, 'b'}, {0x0395, 'e'}, {0x0396, 'z'}, {0x0397, 'h'},
    {0x0399, 'i'}, {0x039A, 'k'}, {0x039C, 'm'}, {0x039D, 'n'}, {0x039F, 'o'}, {0x03A1, 'p'},
    {0x03A4, 't'}, {0x03A5, 'y'}, {0x03A7, 'x'}, {0x03B1, 'a'}, {0x03B5, 'e'}, {0x03B9, 'i'},
    {0x03BA, 'k'}, {0x03BD, 'v'}, {0x03BF, 'o'}, {0x03C1, 'p'}, {0x03C4, 't'}, {0x03C5, 'u'},
    {0x03C7, 'x'}, {0x0405, 's'}, {0x0406, 'i'}, {0x0408, 'j'}, {0x0410, 'a'}, {0x0412, 'b'},
    {0x0415, 'e'}, {0x041A, 'k'}, {0x041C, 'm'}, {0x041D, 'h'}, {0x041E, 'o'}, {0x0420, 'p'},
    {0x0421, 'c'}, {0x0422, 't'}, {0x0425, 'x'}, {0x0430, 'a'}, {0x0435, 'e'}, {0x043E, 'o'},
    {0x0440, 'p'}, {0x0441, 'c'}, {0x0443, 'y'}, {0x0445, 'x'}, {0x0455, 's'}, {0x0456, 'i'},
    {0x0458, 'j'}, {0x04BB, 'h'}, {0x0501, 'd'},
};

static int is_invisible(unsigned int cp)
{
    return cp == ' ' || cp == '\t' || cp < 0x20 || (cp >= 0x7F && cp <= 0xA0) || cp == 0xAD ||
           (cp >= 0x300 && cp <= 0x36F) || cp == 0x34F || cp == 0x61C || cp == 0x115F ||
           cp == 0x1160 || cp == 0x17B4 || cp == 0x17B5 || (cp >= 0x180B && cp <= 0x180F) ||
           (cp >= 0x2000 && cp <= 0x200F) || (cp >= 0x2028 && cp <= 0x202F) ||
           (cp >= 0x205F && cp <= 0x206F) || cp == 0x3000 || cp == 0x3164 || cp == 0xFFA0 ||
           cp == 0xFEFF || (cp >= 0xFE00 && cp <= 0xFE0F) || (cp >= 0x1BCA0 && cp <= 0x1BCA3) ||
           (cp >= 0xE0000 && cp <= 0xE0FFF);
}

static int fold_cp(unsigned int cp, char *out)
{
    if (is_invisible(cp))
        return 0;
    /* Fullwidth forms of ASCII. */
    if (cp >= 0xFF01 && cp <= 0xFF5E)
        cp -= 0xFEE0;
    /* Mathematical alphanumerics: bold, italic, script... A-Z a-z and digits. */
    if (cp >= 0x1D400 && cp <= 0x1D6A3) {
        unsigned int k = (cp - 0x1D400) % 52;

        out[0] = (char)('a' + (k < 26 ? k : k - 26));
        return 1;
    }
    if (cp >= 0x1D7CE && cp <= 0x1D7FF) {
        out[0] = (char)('0' + (cp - 0x1D7CE) % 10);
        return 1;
    }
    for (size_t i = 0; i < sizeof(homoglyphs) / sizeof(homoglyphs[0]); i++) {
        if (homoglyphs[i].cp == cp) {
            out[0] = homoglyphs[i].base;
            return 1;
        }
    }
    if (cp < 0x80) {
        out[0] = (char)(cp >= 'A' && cp <= 'Z' ? cp + 32 : cp);
        return 1;
    }
    {
        size_t lo = 0, hi = sizeof(fold_table) / sizeof(fold_table[0]);

        while (lo < hi) {
            size_t mid = (lo + hi) / 2;

            if (fold_table[mid].cp == cp) {
                out[0] = fold_table[mid].base;
                return 1;
            }
            if (fold_table[mid].cp < cp)
                lo = mid + 1;
            else
                hi = mid;
        }
    }
    /* Anything else stands for itself (as its code point, 4 bytes). */
    memcpy(out, &cp, 4);
    return 4;
}

/* Byte length of the prefix of s that reads as tag, or 0. */
static size_t looks_like_prefix(const char *s, const char *tag)
{
    const unsigned char *t = (const unsigned char *)tag, *p = (const unsigned char *)s;
    char want[8], got[8];
    int wn = 0, wi = 0, gn = 0, gi = 0;

    for (;;) {
        if (wi == wn) {
            wn = wi = 0;
            while (*t && wn == 0)
                wn = fold_cp(next_cp(&t), want);
            if (wn == 0)
                break; /* the whole tag matched */
        }
        if (gi == gn) {
            gn = gi = 0;
            while (*p && gn == 0)
                gn = fold_cp(next_cp(&p), got);
            if (gn == 0)
                return 0;
        }
        if (want[wi++] != got[gi++])
            return 0;
    }
    if (gi != gn)
        return 0; /* the tag ended inside a character of s */
    /* Invisible characters right after the tag belong to it. */
    for (;;) {
        const unsigned char *q = p;
        char tmp[8];

        if (*q == '\0' || fold_cp(next_cp(&q), tmp) != 0)
            break;
        p = q;
    }
    return (size_t)(p - (const unsigned char *)s);
}

char *kyso_policy_subject_untag(const kyso_config *c, const char *subject)
{
    char *decoded = decode_subject(subject), *rest, *res = NULL;
    int changed = 0, again = 1;

    if (decoded == NULL)
        return NULL;
    /* libetpan drops encoded-words in charsets it cannot convert, while a
     * client may still show them: such a subject is rewritten as decoded. */
    {
        static const char *const exotic[] = {"=?utf-16", "=?utf-32", "=?utf-7", "=?ucs",
                                             "=?unicode"};

        for (size_t i = 0; i < sizeof(exotic) / sizeof(exotic[0]); i++)
            if (strcasestr(subject, exotic[i]))
                changed = 1;
    }
    rest = decoded;
    while (again) {
        again = 0;
        for (int r = 0; r <= KYSO_RESULT_PERMERROR; r++) {
            const char *tag = c->inbound.subject_tag[r];
            size_t n = tag && tag[0] ? looks_like_prefix(rest, tag) : 0;

            if (n) {
                rest += n;
                changed = again = 1;
            }
        }
    }
    while (changed && (*rest == ' ' || *rest == '\t'))
        rest++;
    if (changed)
        res = kyso_rfc2047_encode(rest);
    free(decoded);
    return res;
}

char *kyso_policy_subject_tag(const kyso_config *c, kyso_result r, const char *subject)
{
    const char *tag = c->inbound.subject_tag[r];
    kyso_buf b = KYSO_BUF_INIT;
    char *enc;
    int starts_encoded;

    if (tag == NULL || tag[0] == '\0')
        return NULL;
    while (subject && (*subject == ' ' || *subject == '\t'))
        subject++;
    /* White space between two encoded-words is not displayed, so the
     * separating space goes inside ours when the subject starts with one. */
    starts_encoded = subject && strncmp(subject, "=?", 2) == 0;
    if (kyso_buf_printf(&b, "%s%s", tag, starts_encoded ? " " : "") != KYSO_OK)
        return NULL;
    enc = kyso_rfc2047_encode(b.data);
    kyso_buf_reset(&b);
    if (enc == NULL || kyso_buf_printf(&b, "%s%s%s", enc, subject && *subject ? " " : "",
                                       subject ? subject : "") != KYSO_OK) {
        free(enc);
        kyso_buf_free(&b);
        return NULL;
    }
    free(enc);
    return b.data;
}

char *kyso_policy_signer_header(const kyso_verdict *v)
{
    const kyso_signer_report *s;
    kyso_buf b = KYSO_BUF_INIT;
    char *enc;

    if (v->pass_index < 0)
        return NULL;
    s = &v->signers[v->pass_index];
    if (kyso_buf_puts(&b, s->common_name ? s->common_name : s->subject) != KYSO_OK ||
        (s->organization && kyso_buf_printf(&b, ", %s", s->organization) != KYSO_OK)) {
        kyso_buf_free(&b);
        return NULL;
    }
    enc = kyso_rfc2047_encode(b.data);
    kyso_buf_reset(&b);
    if (enc == NULL || kyso_buf_printf(&b, "%s <%s>", enc, s->email) != KYSO_OK) {
        free(enc);
        kyso_buf_free(&b);
        return NULL;
    }
    free(enc);
    return b.data;
}
