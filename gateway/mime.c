/*
 * mime.c - RFC 5322 and MIME structure over raw bytes.
 *
 * Kyso must hash and emit exact bytes, so entity boundaries, header fields
 * and multipart parts are located here as spans of the caller's canonical
 * (CRLF) buffer and never re-serialised. The grammars that are easy to get
 * wrong (Content-Type parameters, address lists) are parsed by libetpan, one
 * header value at a time; libetpan's whole-message parser and its writers are
 * never used, because Debian's 1.9.4 crashes on hostile multiparts.
 * Nothing here recurses; callers bound depth with KYSO_MAX_MIME_DEPTH.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <libetpan/libetpan.h>

#include "internal.h"

kyso_status kyso_canon_crlf(kyso_buf *out, const char *in, size_t len)
{
    size_t i, start = 0;
    kyso_status st;

    for (i = 0; i < len; i++) {
        if (in[i] == '\n' && (i == 0 || in[i - 1] != '\r')) {
            if ((st = kyso_buf_append(out, in + start, i - start)) != KYSO_OK)
                return st;
            if ((st = kyso_buf_append(out, "\r\n", 2)) != KYSO_OK)
                return st;
            start = i + 1;
        }
    }
    return kyso_buf_append(out, in + start, len - start);
}

void kyso_entity_split(kyso_entity *e, const char *p, size_t len)
{
    size_t i = 0;

    /* The header ends at the first empty line, CRLF or bare LF. */
    e->hdr = p;
    while (i < len) {
        const char *nl;

        if (p[i] == '\n' || (p[i] == '\r' && i + 1 < len && p[i + 1] == '\n')) {
            e->hdr_len = i;
            i += p[i] == '\n' ? 1 : 2;
            e->body = p + i;
            e->body_len = len - i;
            return;
        }
        if ((nl = memchr(p + i, '\n', len - i)) == NULL)
            break;
        i = (size_t)(nl - p) + 1;
    }
    /* Header only, no body. */
    e->hdr_len = len;
    e->body = p + len;
    e->body_len = 0;
}

int kyso_field_next(const kyso_entity *e, size_t *pos, kyso_field *f)
{
    const char *h = e->hdr;
    size_t n = e->hdr_len, i = *pos, start, colon = 0, end;

    while (i < n) {
        start = i;
        /* The field runs to the CRLF not followed by white space. */
        for (end = i; end < n; end++) {
            if (h[end] == '\n' && (end + 1 >= n || (h[end + 1] != ' ' && h[end + 1] != '\t')))
                break;
        }
        end = end < n ? end + 1 : n;
        i = end;
        for (colon = start; colon < end && h[colon] != ':' && h[colon] != '\r' && h[colon] != '\n';
             colon++)
            ;
        /* Lines that are not fields (no colon, empty name, leading white
         * space) are skipped rather than misread. */
        if (colon >= end || h[colon] != ':' || colon == start || h[start] == ' ' ||
            h[start] == '\t')
            continue;
        f->field = h + start;
        f->field_len = end - start;
        f->name = h + start;
        f->name_len = colon - start;
        while (f->name_len > 0 &&
               (f->name[f->name_len - 1] == ' ' || f->name[f->name_len - 1] == '\t'))
            f->name_len--;
        f->value = h + colon + 1;
        f->value_len = end - colon - 1;
        *pos = i;
        return 1;
    }
    *pos = i;
    return 0;
}

int kyso_field_is(const kyso_field *f, const char *name)
{
    size_t n = strlen(name);

    return f->name_len == n && strncasecmp(f->name, name, n) == 0;
}

int kyso_entity_find(const kyso_entity *e, const char *name, kyso_field *first)
{
    size_t pos = 0;
    kyso_field f;
    int count = 0;

    while (kyso_field_next(e, &pos, &f)) {
        if (!kyso_field_is(&f, name))
            continue;
        if (count++ == 0 && first)
            *first = f;
    }
    return count;
}

int kyso_has_8bit(const char *p, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)p[i] & 0x80)
            return 1;
    return 0;
}

int kyso_strncasecmp_prefix(const char *p, size_t len, const char *prefix)
{
    size_t n = strlen(prefix);

    return len >= n && strncasecmp(p, prefix, n) == 0;
}

static char *dup_lower(const char *s)
{
    char *d = strdup(s);

    for (char *q = d; q && *q; q++)
        *q = (char)tolower((unsigned char)*q);
    return d;
}

/* A copy of a header value with folding removed, for libetpan's parsers. */
static char *unfold(const char *v, size_t len)
{
    char *d = malloc(len + 1);
    size_t j = 0;

    if (d == NULL)
        return NULL;
    for (size_t i = 0; i < len; i++) {
        if (v[i] == '\r' || v[i] == '\n')
            continue;
        d[j++] = v[i] == '\0' ? ' ' : v[i];
    }
    while (j > 0 && (d[j - 1] == ' ' || d[j - 1] == '\t' || d[j - 1] == ';'))
        j--;
    d[j] = '\0';
    return d;
}

void kyso_ctype_clear(kyso_ctype *ct)
{
    free(ct->boundary);
    free(ct->protocol);
    free(ct->micalg);
    free(ct->smime_type);
    free(ct->charset);
    memset(ct, 0, sizeof(*ct));
}

static void copy_lower(char *dst, size_t dstlen, const char *src)
{
    size_t i;

    for (i = 0; src && src[i] && i + 1 < dstlen; i++)
        dst[i] = (char)tolower((unsigned char)src[i]);
    dst[i] = '\0';
}

static const char *ctype_type_name(const struct mailmime_type *t)
{
    if (t->tp_type == MAILMIME_TYPE_DISCRETE_TYPE) {
        switch (t->tp_data.tp_discrete_type->dt_type) {
        case MAILMIME_DISCRETE_TYPE_TEXT:
            return "text";
        case MAILMIME_DISCRETE_TYPE_IMAGE:
            return "image";
        case MAILMIME_DISCRETE_TYPE_AUDIO:
            return "audio";
        case MAILMIME_DISCRETE_TYPE_VIDEO:
            return "video";
        case MAILMIME_DISCRETE_TYPE_APPLICATION:
            return "application";
        default:
            return t->tp_data.tp_discrete_type->dt_extension;
        }
    }
    switch (t->tp_data.tp_composite_type->ct_type) {
    case MAILMIME_COMPOSITE_TYPE_MESSAGE:
        return "message";
    case MAILMIME_COMPOSITE_TYPE_MULTIPART:
        return "multipart";
    default:
        return t->tp_data.tp_composite_type->ct_token;
    }
}

kyso_status kyso_ctype_parse(kyso_ctype *ct, const char *value, size_t len)
{
    struct mailmime_content *c = NULL;
    char *flat = NULL;
    size_t idx = 0, flat_len;
    kyso_status st = KYSO_ERR_PARSE;
    clistiter *it;

    memset(ct, 0, sizeof(*ct));
    if ((flat = unfold(value, len)) == NULL)
        return KYSO_ERR_NOMEM;
    flat_len = strlen(flat);
    if (mailmime_content_parse(flat, flat_len, &idx, &c) != MAILIMF_NO_ERROR || c == NULL)
        goto out;
    /* A value libetpan only half understood is not guessed at. */
    while (idx < flat_len && (flat[idx] == ' ' || flat[idx] == '\t' || flat[idx] == ';'))
        idx++;
    if (idx != flat_len)
        goto out;
    copy_lower(ct->type, sizeof(ct->type), ctype_type_name(c->ct_type));
    copy_lower(ct->subtype, sizeof(ct->subtype), c->ct_subtype);
    if (ct->type[0] == '\0' || ct->subtype[0] == '\0')
        goto out;
    for (it = clist_begin(c->ct_parameters); it; it = clist_next(it)) {
        struct mailmime_parameter *prm = clist_content(it);
        char **slot = NULL;
        int lower = 1;

        if (prm->pa_name == NULL || prm->pa_value == NULL)
            continue;
        /* RFC 2231 forms (boundary*, boundary*0, ...) of a parameter that
         * decides structure would let two parsers see two structures. */
        {
            static const char *const decisive[] = {"boundary", "protocol", "micalg", "smime-type"};
            const char *star = strchr(prm->pa_name, '*');

            for (size_t k = 0; star && k < sizeof(decisive) / sizeof(decisive[0]); k++) {
                size_t n = strlen(decisive[k]);

                if ((size_t)(star - prm->pa_name) == n &&
                    strncasecmp(prm->pa_name, decisive[k], n) == 0)
                    goto out;
            }
        }
        if (strcasecmp(prm->pa_name, "boundary") == 0) {
            slot = &ct->boundary;
            lower = 0;
        } else if (strcasecmp(prm->pa_name, "protocol") == 0) {
            slot = &ct->protocol;
        } else if (strcasecmp(prm->pa_name, "micalg") == 0) {
            slot = &ct->micalg;
        } else if (strcasecmp(prm->pa_name, "smime-type") == 0) {
            slot = &ct->smime_type;
        } else if (strcasecmp(prm->pa_name, "charset") == 0) {
            slot = &ct->charset;
        }
        if (slot == NULL)
            continue;
        /* A repeated parameter makes the field ambiguous. */
        if (*slot != NULL)
            goto out;
        *slot = lower ? dup_lower(prm->pa_value) : strdup(prm->pa_value);
        if (*slot == NULL) {
            st = KYSO_ERR_NOMEM;
            goto out;
        }
    }
    st = KYSO_OK;
out:
    if (c)
        mailmime_content_free(c);
    free(flat);
    if (st != KYSO_OK)
        kyso_ctype_clear(ct);
    return st;
}

kyso_status kyso_entity_ctype(kyso_ctype *ct, const kyso_entity *e)
{
    kyso_field f;
    int n = kyso_entity_find(e, "Content-Type", &f);

    memset(ct, 0, sizeof(*ct));
    if (n == 0) {
        strcpy(ct->type, "text");
        strcpy(ct->subtype, "plain");
        return KYSO_OK;
    }
    if (n > 1)
        return KYSO_ERR_PARSE;
    return kyso_ctype_parse(ct, f.value, f.value_len);
}

void kyso_entity_cte(const kyso_entity *e, char *out, size_t outlen)
{
    kyso_field f;
    size_t i, j = 0;

    if (kyso_entity_find(e, "Content-Transfer-Encoding", &f) == 0) {
        snprintf(out, outlen, "7bit");
        return;
    }
    for (i = 0; i < f.value_len && j + 1 < outlen; i++) {
        unsigned char c = (unsigned char)f.value[i];

        if (c == ' ' || c == '\t' || c == '\r' || c == '\n')
            continue;
        if (c == '(' || c == ';')
            break;
        out[j++] = (char)tolower(c);
    }
    out[j] = '\0';
}

/* Whether the line at p is the delimiter "--boundary" (optionally the close
 * delimiter "--boundary--"), followed by white space and a line end (CRLF or
 * LF) or the end of the body. */
static int is_delimiter(const char *p, size_t avail, const char *b, size_t blen, int *close,
                        size_t *line_len)
{
    size_t i;

    if (avail < blen + 2 || p[0] != '-' || p[1] != '-' || memcmp(p + 2, b, blen) != 0)
        return 0;
    i = blen + 2;
    *close = 0;
    if (i + 1 < avail && p[i] == '-' && p[i + 1] == '-') {
        *close = 1;
        i += 2;
    }
    while (i < avail && (p[i] == ' ' || p[i] == '\t'))
        i++;
    if (i == avail) {
        *line_len = i;
        return 1;
    }
    if (p[i] == '\n') {
        *line_len = i + 1;
        return 1;
    }
    if (i + 1 < avail && p[i] == '\r' && p[i + 1] == '\n') {
        *line_len = i + 2;
        return 1;
    }
    return 0;
}

/* Where a part ends: before the line break that precedes its delimiter. */
static size_t part_end(const char *body, size_t part_start, size_t delim)
{
    if (delim >= part_start + 2 && body[delim - 2] == '\r' && body[delim - 1] == '\n')
        return delim - 2;
    if (delim >= part_start + 1 && body[delim - 1] == '\n')
        return delim - 1;
    return part_start;
}

kyso_status kyso_multipart_split(const char *body, size_t len, const char *boundary,
                                 kyso_span *parts, size_t max, size_t *nparts, int *closed)
{
    size_t blen = strlen(boundary), i = 0, line_len = 0, part_start = 0;
    int in_part = 0, close = 0;

    *nparts = 0;
    *closed = 0;
    if (blen == 0 || blen > 200)
        return KYSO_ERR_PARSE;
    while (i < len) {
        /* i is at a line start here. */
        if (is_delimiter(body + i, len - i, boundary, blen, &close, &line_len)) {
            if (in_part) {
                /* The line break before the delimiter belongs to the delimiter. */
                size_t end = part_end(body, part_start, i);

                if (*nparts >= max)
                    return KYSO_ERR_TOO_BIG;
                parts[*nparts].p = body + part_start;
                parts[*nparts].len = end - part_start;
                (*nparts)++;
            }
            if (close) {
                *closed = 1;
                return KYSO_OK;
            }
            in_part = 1;
            part_start = i + line_len;
            i += line_len;
            continue;
        }
        {
            const char *nl = memchr(body + i, '\n', len - i);

            if (nl == NULL)
                break;
            i = (size_t)(nl - body) + 1;
        }
    }
    if (in_part) {
        if (*nparts >= max)
            return KYSO_ERR_TOO_BIG;
        parts[*nparts].p = body + part_start;
        parts[*nparts].len = len - part_start;
        (*nparts)++;
    }
    return KYSO_OK;
}

static int addr_spec_sane(const char *a)
{
    const char *at = strchr(a, '@');

    if (at == NULL || at == a || at[1] == '\0' || strchr(at + 1, '@'))
        return 0;
    for (; *a; a++) {
        unsigned char c = (unsigned char)*a;

        if (c <= ' ' || c == '<' || c == '>' || c == '(' || c == ')' || c == ',' || c == ';' ||
            c == '\\' || c == '"' || c >= 0x7f)
            return 0;
    }
    return 1;
}

kyso_status kyso_entity_from(const kyso_entity *e, char **addr)
{
    kyso_field f;
    struct mailimf_mailbox_list *list = NULL;
    struct mailimf_mailbox *mb;
    char *flat = NULL;
    size_t idx = 0, flat_len;
    kyso_status st = KYSO_ERR_PARSE;

    *addr = NULL;
    if (kyso_entity_find(e, "From", &f) != 1)
        return KYSO_ERR_PARSE;
    if ((flat = unfold(f.value, f.value_len)) == NULL)
        return KYSO_ERR_NOMEM;
    flat_len = strlen(flat);
    if (mailimf_mailbox_list_parse(flat, flat_len, &idx, &list) != MAILIMF_NO_ERROR)
        goto out;
    /* Trailing CFWS is valid (addr-spec followed by a comment). */
    while (idx < flat_len) {
        if (flat[idx] == ' ' || flat[idx] == '\t') {
            idx++;
        } else if (flat[idx] == '(') {
            int depth = 0;

            for (; idx < flat_len; idx++) {
                if (flat[idx] == '\\' && idx + 1 < flat_len) {
                    idx++;
                    continue;
                }
                if (flat[idx] == '(')
                    depth++;
                else if (flat[idx] == ')' && --depth == 0) {
                    idx++;
                    break;
                }
            }
            if (depth != 0)
                goto out;
        } else {
            break;
        }
    }
    if (idx != flat_len || clist_count(list->mb_list) != 1)
        goto out;
    mb = clist_content(clist_begin(list->mb_list));
    if (mb->mb_addr_spec == NULL || !addr_spec_sane(mb->mb_addr_spec))
        goto out;
    if ((*addr = strdup(mb->mb_addr_spec)) == NULL) {
        st = KYSO_ERR_NOMEM;
        goto out;
    }
    /* "user@domain." is the same mailbox as "user@domain". */
    {
        size_t n = strlen(*addr);

        if (n > 0 && (*addr)[n - 1] == '.')
            (*addr)[n - 1] = '\0';
        if (!addr_spec_sane(*addr)) {
            free(*addr);
            *addr = NULL;
            goto out;
        }
    }
    st = KYSO_OK;
out:
    if (list)
        mailimf_mailbox_list_free(list);
    free(flat);
    return st;
}

kyso_status kyso_message_from(char **addr, const char *msg, size_t len)
{
    kyso_entity e;

    kyso_entity_split(&e, msg, len);
    return kyso_entity_from(&e, addr);
}
