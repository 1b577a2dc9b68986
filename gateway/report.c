/*
 * report.c - how a verdict is told: an RFC 7281 Authentication-Results value
 * (ASCII only, so it survives any relay), a JSON object for tools, and one
 * line for people.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "internal.h"

/* RFC 2045 token characters may stand bare, and so may one "@" (RFC 8601
 * allows local-part@domain as a pvalue); anything else is quoted. */
static int is_token(const char *s)
{
    int ats = 0;

    if (*s == '\0')
        return 0;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;

        if (c == '@' && ats++ == 0)
            continue;
        if (c <= ' ' || c >= 0x7f || strchr("()<>@,;:\\\"/[]?=", c))
            return 0;
    }
    return 1;
}

/* A quoted-string of printable ASCII; bytes beyond are written as \xNN
 * would not be understood, so they become '?' the way a transcoder would. */
static kyso_status put_value(kyso_buf *out, const char *s)
{
    kyso_status st;

    if (is_token(s))
        return kyso_buf_puts(out, s);
    if ((st = kyso_buf_append(out, "\"", 1)) != KYSO_OK)
        return st;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;

        if (c == '"' || c == '\\')
            st = kyso_buf_printf(out, "\\%c", c);
        else if (c < ' ' || c >= 0x7f)
            st = kyso_buf_append(out, "?", 1);
        else
            st = kyso_buf_append(out, s, 1);
        if (st != KYSO_OK)
            return st;
    }
    return kyso_buf_append(out, "\"", 1);
}

/* An RFC 5322 comment: parentheses and backslashes escaped, ASCII only. */
static kyso_status put_comment(kyso_buf *out, const char *s)
{
    kyso_status st = kyso_buf_append(out, " (", 2);

    for (; st == KYSO_OK && *s; s++) {
        unsigned char c = (unsigned char)*s;

        if (c == '(' || c == ')' || c == '\\')
            st = kyso_buf_printf(out, "\\%c", c);
        else
            st = kyso_buf_append(out, c < ' ' || c >= 0x7f ? "?" : s, 1);
    }
    return st == KYSO_OK ? kyso_buf_append(out, ")", 1) : st;
}

static const kyso_signer_report *reported_signer(const kyso_verdict *v)
{
    if (v->pass_index >= 0)
        return &v->signers[v->pass_index];
    for (size_t i = 0; i < v->nsigners; i++)
        if (v->signers[i].cert_found && v->signers[i].from_match)
            return &v->signers[i];
    for (size_t i = 0; i < v->nsigners; i++)
        if (v->signers[i].cert_found)
            return &v->signers[i];
    return NULL;
}

static const char *revocation_str(kyso_revocation r)
{
    switch (r) {
    case KYSO_REV_GOOD:
        return "good";
    case KYSO_REV_REVOKED:
        return "revoked";
    case KYSO_REV_UNKNOWN:
        return "unknown";
    case KYSO_REV_NOT_CHECKED:
        break;
    }
    return "not-checked";
}

static void iso_time(char *out, size_t len, time_t t)
{
    struct tm tm;

    if (t == 0 || gmtime_r(&t, &tm) == NULL) {
        snprintf(out, len, "-");
        return;
    }
    strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* "revocation good by ocsp (cached) at 2026-12-04T10:00:00Z", for badges and people. */
static kyso_status put_revocation(kyso_buf *out, const kyso_signer_report *s)
{
    char when[32];

    if (s->revocation == KYSO_REV_NOT_CHECKED)
        return kyso_buf_puts(out, "revocation not-checked");
    iso_time(when, sizeof(when),
             s->revocation_info.this_update ? s->revocation_info.this_update
                                            : s->revocation_info.checked_at);
    return kyso_buf_printf(out, "revocation %s by %s%s at %s", revocation_str(s->revocation),
                           s->revocation_info.source ? s->revocation_info.source : "none",
                           s->revocation_info.cached ? " (cached)" : "", when);
}

kyso_status kyso_verdict_auth_results(kyso_buf *out, const kyso_verdict *v, const char *authserv_id)
{
    const kyso_signer_report *s = reported_signer(v);
    kyso_status st;

    if ((st = put_value(out, authserv_id)) != KYSO_OK)
        return st;
    if ((st = kyso_buf_printf(out, "; smime=%s", kyso_result_str(v->result))) != KYSO_OK)
        return st;
    if (v->reason && v->result != KYSO_RESULT_PASS && (st = put_comment(out, v->reason)) != KYSO_OK)
        return st;
    if (v->result == KYSO_RESULT_PASS && s != NULL) {
        /* The recipient learns how fresh "not revoked" is. */
        kyso_buf rev = KYSO_BUF_INIT;

        st = put_revocation(&rev, s);
        if (st == KYSO_OK)
            st = put_comment(out, rev.data);
        kyso_buf_free(&rev);
        if (st != KYSO_OK)
            return st;
    }
    if (s == NULL)
        return KYSO_OK;
    if (s->email) {
        if ((st = kyso_buf_puts(out, " body.smime-identifier=")) != KYSO_OK ||
            (st = put_value(out, s->email)) != KYSO_OK)
            return st;
    }
    if ((st = kyso_buf_puts(out, " body.smime-serial=")) != KYSO_OK ||
        (st = put_value(out, s->serial)) != KYSO_OK)
        return st;
    if ((st = kyso_buf_puts(out, " body.smime-issuer=")) != KYSO_OK ||
        (st = put_value(out, s->issuer)) != KYSO_OK)
        return st;
    return KYSO_OK;
}

static kyso_status json_str(kyso_buf *out, const char *s)
{
    kyso_status st;

    if (s == NULL)
        return kyso_buf_puts(out, "null");
    if ((st = kyso_buf_append(out, "\"", 1)) != KYSO_OK)
        return st;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;

        if (c == '"' || c == '\\')
            st = kyso_buf_printf(out, "\\%c", c);
        else if (c < 0x20)
            st = kyso_buf_printf(out, "\\u%04x", c);
        else
            st = kyso_buf_append(out, s, 1);
        if (st != KYSO_OK)
            return st;
    }
    return kyso_buf_append(out, "\"", 1);
}

kyso_status kyso_verdict_json(kyso_buf *out, const kyso_verdict *v)
{
    kyso_status st;

#define PUT(expr)                                                                                  \
    do {                                                                                           \
        if ((st = (expr)) != KYSO_OK)                                                              \
            return st;                                                                             \
    } while (0)
    PUT(kyso_buf_printf(out, "{\"result\": \"%s\", \"reason\": ", kyso_result_str(v->result)));
    PUT(json_str(out, v->reason));
    PUT(kyso_buf_puts(out, ", \"from\": "));
    PUT(json_str(out, v->from));
    PUT(kyso_buf_puts(out, ", \"signers\": ["));
    for (size_t i = 0; i < v->nsigners; i++) {
        const kyso_signer_report *s = &v->signers[i];

        PUT(kyso_buf_puts(out, i ? ", {\"subject\": " : "{\"subject\": "));
        PUT(json_str(out, s->subject));
        PUT(kyso_buf_puts(out, ", \"email\": "));
        PUT(json_str(out, s->email));
        PUT(kyso_buf_puts(out, ", \"issuer\": "));
        PUT(json_str(out, s->issuer));
        PUT(kyso_buf_puts(out, ", \"serial\": "));
        PUT(json_str(out, s->serial));
        PUT(kyso_buf_printf(out, ", \"certificate\": \"%s\", \"signature\": \"%s\", \"chain\": ",
                            s->cert_found ? "found" : "missing",
                            s->cert_found && s->signature_ok ? "good" : "bad"));
        PUT(json_str(out, !s->cert_found ? "signer certificate not found"
                          : s->chain_ok  ? "ok"
                                         : s->chain_error));
        {
            char checked[32], upd[32], revoked[32];

            iso_time(checked, sizeof(checked), s->revocation_info.checked_at);
            iso_time(upd, sizeof(upd), s->revocation_info.this_update);
            iso_time(revoked, sizeof(revoked), s->revocation_info.revoked_at);
            PUT(kyso_buf_printf(out,
                                ", \"revocation\": \"%s\", \"revocation_source\": \"%s\", "
                                "\"revocation_cached\": %s, \"revocation_checked_at\": \"%s\", "
                                "\"revocation_this_update\": \"%s\"",
                                revocation_str(s->revocation),
                                s->revocation_info.source ? s->revocation_info.source : "none",
                                s->revocation_info.cached ? "true" : "false", checked, upd));
            if (s->revocation == KYSO_REV_REVOKED)
                PUT(kyso_buf_printf(out, ", \"revoked_at\": \"%s\", \"revocation_reason\": %d",
                                    revoked, s->revocation_info.reason));
            PUT(kyso_buf_printf(out, ", \"from_match\": %s}", s->from_match ? "true" : "false"));
        }
    }
    PUT(kyso_buf_puts(out, "]}"));
#undef PUT
    return KYSO_OK;
}

kyso_status kyso_verdict_summary(kyso_buf *out, const kyso_verdict *v)
{
    const kyso_signer_report *s = reported_signer(v);

    if (v->result == KYSO_RESULT_PASS) {
        kyso_status st =
            kyso_buf_printf(out, "pass: signed by %s (%s), certificate serial %s issued by %s; ",
                            s->email, s->subject, s->serial, s->issuer);

        return st == KYSO_OK ? put_revocation(out, s) : st;
    }
    return kyso_buf_printf(out, "%s: %s", kyso_result_str(v->result), v->reason ? v->reason : "");
}
