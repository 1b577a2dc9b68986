/*
 * encode.c - 7-bit transfer encodings and the rewrite that makes an entity
 * safe to sign.
 *
 * A signature only survives transport if no relay has a reason to touch the
 * signed bytes: relays downgrade 8-bit data, wrap lines over 998 octets, strip
 * trailing white space and quote "From " at line starts. So before signing,
 * every part that could provoke one of those is re-encoded: text as
 * quoted-printable, everything else as base64. Parts that are already safe are
 * copied unchanged, byte for byte.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

#include "internal.h"
#include "kyso_config.h"

kyso_status kyso_base64_encode(kyso_buf *out, const unsigned char *p, size_t len)
{
    unsigned char line[80];
    kyso_status st;

    /* 57 input bytes make one 76-character line. */
    for (size_t off = 0; off < len; off += 57) {
        size_t n = len - off < 57 ? len - off : 57;
        int m = EVP_EncodeBlock(line, p + off, (int)n);

        if ((st = kyso_buf_append(out, line, (size_t)m)) != KYSO_OK)
            return st;
        if ((st = kyso_buf_append(out, "\r\n", 2)) != KYSO_OK)
            return st;
    }
    return KYSO_OK;
}

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

kyso_status kyso_base64_decode(kyso_buf *out, const char *p, size_t len)
{
    unsigned int acc = 0;
    int bits = 0, pad = 0;
    kyso_status st;

    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)p[i];
        int v;

        if (c == ' ' || c == '\t' || c == '\r' || c == '\n')
            continue;
        if (c == '=') {
            pad++;
            continue;
        }
        if (pad || (v = b64_value(c)) < 0)
            return KYSO_ERR_PARSE;
        acc = (acc << 6) | (unsigned int)v;
        bits += 6;
        if (bits >= 8) {
            unsigned char byte = (unsigned char)(acc >> (bits - 8));

            bits -= 8;
            if ((st = kyso_buf_append(out, &byte, 1)) != KYSO_OK)
                return st;
        }
    }
    if (pad > 2 || bits >= 6)
        return KYSO_ERR_PARSE;
    if (out->data == NULL)
        return kyso_buf_append(out, "", 0);
    return KYSO_OK;
}

/* Encodes one line (without its CRLF) as quoted-printable, soft-breaking at 76. */
static kyso_status qp_line(kyso_buf *out, const unsigned char *p, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t col = 0;
    kyso_status st;

    for (size_t i = 0; i < len; i++) {
        unsigned char c = p[i];
        char tok[3];
        size_t tlen = 1;
        int last = i + 1 == len;

        tok[0] = (char)c;
        if (c == '=' || c < 32 || c > 126) {
            if (c == '\t' && !last)
                goto literal;
            tok[0] = '=';
            tok[1] = hex[c >> 4];
            tok[2] = hex[c & 15];
            tlen = 3;
        } else if (c == ' ' && last) {
            /* Trailing white space would be stripped in transit. */
            memcpy(tok, "=20", 3);
            tlen = 3;
        } else if (i == 0 && c == 'F' && len >= 5 && memcmp(p, "From ", 5) == 0) {
            /* Some MTAs quote "From " at a line start as ">From ". */
            memcpy(tok, "=46", 3);
            tlen = 3;
        } else if (i == 0 && c == '.' && len == 1) {
            memcpy(tok, "=2E", 3);
            tlen = 3;
        }
    literal:
        /* Room for the token plus a soft break "=" within 76 columns. */
        if (col + tlen > 75 && !(last && col + tlen <= 76)) {
            if ((st = kyso_buf_append(out, "=\r\n", 3)) != KYSO_OK)
                return st;
            col = 0;
            /* A soft break starts a new line in transit too: protect it
             * like any other line start. */
            if (tlen == 1 && ((c == 'F' && len - i >= 5 && memcmp(p + i, "From ", 5) == 0) ||
                              (c == '.' && last))) {
                tok[0] = '=';
                tok[1] = hex[c >> 4];
                tok[2] = hex[c & 15];
                tlen = 3;
            }
        }
        if ((st = kyso_buf_append(out, tok, tlen)) != KYSO_OK)
            return st;
        col += tlen;
    }
    return KYSO_OK;
}

kyso_status kyso_qp_encode(kyso_buf *out, const char *p, size_t len)
{
    size_t start = 0;
    kyso_status st;

    while (start < len) {
        const char *nl = memchr(p + start, '\n', len - start);
        size_t end = nl ? (size_t)(nl - p) : len;
        size_t line_len = end - start;

        if (nl && line_len > 0 && p[end - 1] == '\r')
            line_len--;
        if ((st = qp_line(out, (const unsigned char *)p + start, line_len)) != KYSO_OK)
            return st;
        if (nl == NULL)
            break;
        if ((st = kyso_buf_append(out, "\r\n", 2)) != KYSO_OK)
            return st;
        start = end + 1;
    }
    if (out->data == NULL)
        return kyso_buf_append(out, "", 0);
    return KYSO_OK;
}

/* What a 7bit/8bit/binary body needs before it can be signed. */
typedef enum { BODY_SAFE, BODY_NEEDS_QP, BODY_NEEDS_BASE64 } body_need;

/* Lines may end in CRLF or LF here: the input has not been canonicalised,
 * so that binary parts keep their bytes. */
static body_need assess_body(const char *p, size_t len, int is_text)
{
    size_t line_start = 0;
    int risky = 0;

    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)p[i];

        if (c == '\0')
            return BODY_NEEDS_BASE64;
        if (c == '\r' && (i + 1 >= len || p[i + 1] != '\n'))
            return is_text ? BODY_NEEDS_QP : BODY_NEEDS_BASE64;
        if (c & 0x80)
            risky = 1;
        if (i == line_start && len - i >= 5 && memcmp(p + i, "From ", 5) == 0)
            risky = 1;
        if (c == '\n') {
            size_t end = i > line_start && p[i - 1] == '\r' ? i - 1 : i;

            if (end - line_start > 998)
                risky = 1;
            if (end > line_start && (p[end - 1] == ' ' || p[end - 1] == '\t'))
                risky = 1;
            line_start = i + 1;
        }
    }
    if (len - line_start > 998)
        risky = 1;
    if (len > line_start && (p[len - 1] == ' ' || p[len - 1] == '\t'))
        risky = 1;
    if (!risky)
        return BODY_SAFE;
    return is_text ? BODY_NEEDS_QP : BODY_NEEDS_BASE64;
}

/* Copies the header fields, canonicalised, leaving out Content-Transfer-Encoding
 * when a new one is given, then the empty line. */
/* The field's value with its folds removed. */
static kyso_status unfold_value(kyso_buf *out, const kyso_field *f)
{
    kyso_status st = KYSO_OK;

    for (size_t k = 0; k < f->value_len && st == KYSO_OK; k++)
        if (f->value[k] != '\r' && f->value[k] != '\n')
            st = kyso_buf_append(out, &f->value[k], 1);
    return st;
}

/* RFC 2231 extended value: utf-8'' and percent-encoding, continued in
 * pieces so no line grows long. */
static kyso_status emit_param_2231(kyso_buf *out, const char *name, size_t nlen, const char *v,
                                   size_t vlen)
{
    static const char hex[] = "0123456789ABCDEF";
    kyso_buf enc = KYSO_BUF_INIT;
    kyso_status st = KYSO_OK;

    for (size_t i = 0; i < vlen && st == KYSO_OK; i++) {
        unsigned char c = (unsigned char)v[i];

        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            strchr("!#$&+-.^_`|~", c))
            st = kyso_buf_append(&enc, &v[i], 1);
        else
            st = kyso_buf_printf(&enc, "%%%c%c", hex[c >> 4], hex[c & 15]);
    }
    for (size_t off = 0, k = 0; st == KYSO_OK && off < enc.len; k++) {
        size_t n = enc.len - off > 60 ? 60 : enc.len - off;

        /* Never split a %XX escape. */
        if (off + n < enc.len && n >= 2 && enc.data[off + n - 1] == '%')
            n -= 1;
        else if (off + n < enc.len && n >= 2 && enc.data[off + n - 2] == '%')
            n -= 2;
        st = kyso_buf_printf(out, ";\r\n\t%.*s*%zu*=%s%.*s", (int)nlen, name, k,
                             k == 0 ? "utf-8''" : "", (int)n, enc.data + off);
        off += n;
    }
    kyso_buf_free(&enc);
    return st;
}

/* A structured field (Content-Type, Content-Disposition) whose parameters
 * carry 8-bit bytes, rewritten with RFC 2231 parameters: same meaning, 7-bit. */
static kyso_status emit_params_7bit(kyso_buf *out, const kyso_field *f)
{
    kyso_buf v = KYSO_BUF_INIT;
    size_t i = 0, start;
    int first = 1;
    kyso_status st;

    if ((st = unfold_value(&v, f)) != KYSO_OK)
        goto out;
    if ((st = kyso_buf_printf(out, "%.*s:", (int)f->name_len, f->name)) != KYSO_OK)
        goto out;
    while (i < v.len) {
        int quoted = 0;
        size_t end, eq, a, b;

        start = i;
        for (; i < v.len && (quoted || v.data[i] != ';'); i++) {
            if (v.data[i] == '\\' && quoted && i + 1 < v.len)
                i++;
            else if (v.data[i] == '"')
                quoted = !quoted;
        }
        end = i++;
        a = start;
        b = end;
        while (a < b && (v.data[a] == ' ' || v.data[a] == '\t'))
            a++;
        while (b > a && (v.data[b - 1] == ' ' || v.data[b - 1] == '\t'))
            b--;
        if (first) {
            st = kyso_buf_printf(out, " %.*s", (int)(b - a), v.data + a);
            first = 0;
        } else if (a < b) {
            const char *eqp = memchr(v.data + a, '=', b - a);
            kyso_buf val = KYSO_BUF_INIT;

            eq = eqp ? (size_t)(eqp - v.data) : b;
            if (eq == b || !kyso_has_8bit(v.data + eq, b - eq)) {
                st = kyso_buf_printf(out, ";\r\n\t%.*s", (int)(b - a), v.data + a);
            } else {
                size_t nl = eq - a;

                /* The value, unquoted. */
                for (size_t k = eq + 1; k < b && st == KYSO_OK; k++) {
                    if (v.data[k] == '"')
                        continue;
                    if (v.data[k] == '\\' && k + 1 < b)
                        k++;
                    st = kyso_buf_append(&val, &v.data[k], 1);
                }
                while (nl > 0 && (v.data[a + nl - 1] == ' ' || v.data[a + nl - 1] == '*'))
                    nl--;
                if (st == KYSO_OK)
                    st = emit_param_2231(out, v.data + a, nl, val.data ? val.data : "", val.len);
                kyso_buf_free(&val);
            }
        }
        if (st != KYSO_OK)
            goto out;
    }
    st = kyso_buf_append(out, "\r\n", 2);
out:
    kyso_buf_free(&v);
    return st;
}

/* A Content-* field made 7-bit: parameters per RFC 2231, free text per
 * RFC 2047. Relays may not carry 8-bit header bytes intact, and these
 * fields are inside the signature. */
static kyso_status emit_field_7bit(kyso_buf *out, const kyso_field *f)
{
    kyso_buf v = KYSO_BUF_INIT;
    char *enc;
    kyso_status st = KYSO_OK;

    if (kyso_field_is(f, "Content-Type") || kyso_field_is(f, "Content-Disposition"))
        return emit_params_7bit(out, f);
    if ((st = unfold_value(&v, f)) != KYSO_OK)
        goto out;
    {
        const char *p = v.data ? v.data : "";

        while (*p == ' ' || *p == '\t')
            p++;
        if ((enc = kyso_rfc2047_encode(p)) == NULL) {
            st = KYSO_ERR_NOMEM;
            goto out;
        }
        st = kyso_buf_printf(out, "%.*s: %s\r\n", (int)f->name_len, f->name, enc);
        free(enc);
    }
out:
    kyso_buf_free(&v);
    return st;
}

static kyso_status emit_headers(kyso_buf *out, const kyso_entity *e, const char *new_cte)
{
    size_t pos = 0;
    kyso_field f;
    kyso_status st;

    while (kyso_field_next(e, &pos, &f)) {
        if (new_cte && kyso_field_is(&f, "Content-Transfer-Encoding"))
            continue;
        if (kyso_has_8bit(f.field, f.field_len) &&
            (f.name_len >= 8 && strncasecmp(f.name, "Content-", 8) == 0)) {
            if ((st = emit_field_7bit(out, &f)) != KYSO_OK)
                return st;
            continue;
        }
        if ((st = kyso_canon_crlf(out, f.field, f.field_len)) != KYSO_OK)
            return st;
        if (f.field[f.field_len - 1] != '\n' && (st = kyso_buf_append(out, "\r\n", 2)) != KYSO_OK)
            return st;
    }
    if (new_cte)
        return kyso_buf_printf(out, "Content-Transfer-Encoding: %s\r\n\r\n", new_cte);
    return kyso_buf_append(out, "\r\n", 2);
}

static kyso_status make_7bit_multipart(kyso_buf *out, const kyso_entity *e, const char *boundary,
                                       int depth)
{
    kyso_span *parts = NULL;
    size_t nparts = 0;
    int closed = 0;
    kyso_status st;

    if ((parts = calloc(KYSO_MAX_PARTS, sizeof(*parts))) == NULL)
        return KYSO_ERR_NOMEM;
    st = kyso_multipart_split(e->body, e->body_len, boundary, parts, KYSO_MAX_PARTS, &nparts,
                              &closed);
    if (st != KYSO_OK)
        goto out;
    if (nparts == 0) {
        st = KYSO_ERR_PARSE;
        goto out;
    }
    /* The preamble and epilogue carry no content; they are left out so the
     * signed entity holds nothing a client would not show. */
    if ((st = emit_headers(out, e, NULL)) != KYSO_OK)
        goto out;
    for (size_t i = 0; i < nparts; i++) {
        if ((st = kyso_buf_printf(out, "--%s\r\n", boundary)) != KYSO_OK)
            goto out;
        if ((st = kyso_entity_make_7bit(out, parts[i].p, parts[i].len, depth + 1)) != KYSO_OK)
            goto out;
        if ((st = kyso_buf_append(out, "\r\n", 2)) != KYSO_OK)
            goto out;
    }
    st = kyso_buf_printf(out, "--%s--\r\n", boundary);
out:
    free(parts);
    return st;
}

kyso_status kyso_entity_make_7bit(kyso_buf *out, const char *p, size_t len, int depth)
{
    kyso_entity e;
    kyso_ctype ct;
    char cte[32];
    kyso_status st;
    int is_text, identity, binary;

    if (depth > KYSO_MAX_MIME_DEPTH)
        return KYSO_ERR_TOO_BIG;
    kyso_entity_split(&e, p, len);
    if ((st = kyso_entity_ctype(&ct, &e)) != KYSO_OK)
        return st;
    kyso_entity_cte(&e, cte, sizeof(cte));
    identity = strcmp(cte, "7bit") == 0 || strcmp(cte, "8bit") == 0 || strcmp(cte, "binary") == 0;

    if (strcmp(ct.type, "multipart") == 0 && ct.boundary != NULL && identity) {
        st = make_7bit_multipart(out, &e, ct.boundary, depth);
        goto out;
    }
    if (strcmp(ct.type, "message") == 0 && identity &&
        (strcmp(ct.subtype, "rfc822") == 0 || strcmp(ct.subtype, "global") == 0)) {
        /* An encapsulated message cannot be base64'd (RFC 2046 5.2.1); its
         * own parts are made safe instead. */
        if ((st = emit_headers(out, &e, "7bit")) != KYSO_OK)
            goto out;
        st = kyso_entity_make_7bit(out, e.body, e.body_len, depth + 1);
        goto out;
    }
    if (!identity) {
        /* Already quoted-printable or base64: safe unless it lies. */
        if (kyso_has_8bit(e.body, e.body_len)) {
            st = KYSO_ERR_PARSE;
            goto out;
        }
        if ((st = emit_headers(out, &e, NULL)) == KYSO_OK)
            st = kyso_canon_crlf(out, e.body, e.body_len);
        goto out;
    }
    binary = strcmp(cte, "binary") == 0;
    is_text = strcmp(ct.type, "text") == 0 && !binary;
    switch (assess_body(e.body, e.body_len, is_text)) {
    case BODY_SAFE:
        if ((st = emit_headers(out, &e, NULL)) == KYSO_OK)
            st = kyso_canon_crlf(out, e.body, e.body_len);
        break;
    case BODY_NEEDS_QP:
        if ((st = emit_headers(out, &e, "quoted-printable")) == KYSO_OK)
            st = kyso_qp_encode(out, e.body, e.body_len);
        break;
    case BODY_NEEDS_BASE64:
        /* Binary content keeps its bytes; 7bit/8bit content is lines. */
        if ((st = emit_headers(out, &e, "base64")) != KYSO_OK)
            break;
        if (binary) {
            st = kyso_base64_encode(out, (const unsigned char *)e.body, e.body_len);
        } else {
            kyso_buf lines = KYSO_BUF_INIT;

            st = kyso_canon_crlf(&lines, e.body, e.body_len);
            if (st == KYSO_OK)
                st = kyso_base64_encode(out, (const unsigned char *)lines.data, lines.len);
            kyso_buf_free(&lines);
        }
        break;
    }
out:
    kyso_ctype_clear(&ct);
    return st;
}
