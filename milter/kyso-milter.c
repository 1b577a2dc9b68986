/*
 * kyso-milter.c - libmilter callbacks: collect the message, hand it to
 * libkyso, turn the outcome into header/body edits and a reply.
 *
 * Two contexts: the connection's (snapshot reference, client address, whether
 * it is internal) and the message's (queue id, AUTH identity, header and body
 * bytes), kept with smfi_setpriv because libmilter's worker pool may run one
 * connection's callbacks on different threads. Callbacks stay short; every
 * decision is made by library calls shared with the CLI.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <libmilter/mfapi.h>
#include <openssl/err.h>

#include "milter.h"

typedef struct {
    snapshot *snap;
    char addr[INET6_ADDRSTRLEN];
    int internal;
    /* the message in progress */
    char qid[64];
    int authenticated;
    char login[256]; /* {auth_authen}, "" when not authenticated */
    int rcpt_wanted;
    kyso_buf hdrs; /* "Name:value\r\n" as received */
    kyso_buf body;
    size_t body_seen;
    int oversize;
    int had_our_ar;                      /* arrived carrying our own Authentication-Results */
    const kyso_verdict *subject_verdict; /* for retag_subject, during rewrite_subject */
} conn_ctx;

static void msg_reset(conn_ctx *c)
{
    c->qid[0] = '\0';
    c->authenticated = 0;
    c->rcpt_wanted = 0;
    kyso_buf_free(&c->hdrs);
    kyso_buf_free(&c->body);
    c->body_seen = 0;
    c->oversize = 0;
    c->had_our_ar = 0;
}

static const char *qid_of(SMFICTX *ctx, conn_ctx *c)
{
    const char *q = smfi_getsymval(ctx, "i");

    if (q && *q)
        snprintf(c->qid, sizeof(c->qid), "%s", q);
    return c->qid[0] ? c->qid : NULL;
}

static sfsistat on_negotiate(SMFICTX *ctx, unsigned long f0, unsigned long f1, unsigned long f2,
                             unsigned long f3, unsigned long *pf0, unsigned long *pf1,
                             unsigned long *pf2, unsigned long *pf3)
{
    *pf0 = SMFIF_ADDHDRS | SMFIF_CHGHDRS | SMFIF_CHGBODY | SMFIF_QUARANTINE;
    /* No SMFIP_HDR_LEADSPC: outer header bytes are not signed, and without
     * it Postfix adds the customary space to the fields we write. */
    *pf1 = 0;
    *pf2 = *pf3 = 0;
    return SMFIS_CONTINUE;
}

static sfsistat on_connect(SMFICTX *ctx, char *host, _SOCK_ADDR *sa)
{
    conn_ctx *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return SMFIS_TEMPFAIL;
    if (sa && sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)sa)->sin_addr, c->addr, sizeof(c->addr));
    else if (sa && sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)sa)->sin6_addr, c->addr, sizeof(c->addr));
    smfi_setpriv(ctx, c);
    return SMFIS_CONTINUE;
}

/* Each message takes the snapshot current when it starts, so after a reload
 * the next message on a long connection already follows the new config. */
static void take_snapshot(conn_ctx *c)
{
    snapshot_release(c->snap);
    c->snap = snapshot_acquire();
    c->internal =
        c->addr[0] && kyso_policy_addr_in(c->snap->conf->outbound.internal_networks,
                                          c->snap->conf->outbound.ninternal_networks, c->addr) == 1;
}

static sfsistat on_envfrom(SMFICTX *ctx, char **argv)
{
    conn_ctx *c = smfi_getpriv(ctx);
    const char *auth = smfi_getsymval(ctx, "{auth_authen}");

    if (c == NULL)
        return SMFIS_TEMPFAIL;
    msg_reset(c);
    take_snapshot(c);
    c->authenticated = auth != NULL && *auth != '\0';
    if (c->authenticated && strlen(auth) >= sizeof(c->login)) {
        /* A login we cannot hold whole cannot be compared: not ours. */
        kyso_log(KYSO_LOG_WARNING, NULL, "login-ignored", "reason=\"too long\" length=%zu",
                 strlen(auth));
        c->authenticated = 0;
    }
    snprintf(c->login, sizeof(c->login), "%s", c->authenticated ? auth : "");
    qid_of(ctx, c);
    return SMFIS_CONTINUE;
}

static int is_outbound(const conn_ctx *c)
{
    return (c->authenticated && c->snap->conf->outbound.trust_auth) || c->internal;
}

static sfsistat on_envrcpt(SMFICTX *ctx, char **argv)
{
    conn_ctx *c = smfi_getpriv(ctx);
    char addr[512];
    size_t n;

    if (c == NULL || c->snap == NULL || argv[0] == NULL)
        return SMFIS_CONTINUE;
    /* "<user@domain>" as given in RCPT TO. */
    snprintf(addr, sizeof(addr), "%s", argv[0][0] == '<' ? argv[0] + 1 : argv[0]);
    n = strlen(addr);
    if (n && addr[n - 1] == '>')
        addr[n - 1] = '\0';
    if (kyso_policy_recipient_wanted(c->snap->conf, addr))
        c->rcpt_wanted = 1;
    return SMFIS_CONTINUE;
}

/* Postfix passes folded values with bare LF; the library wants CRLF. */
static kyso_status append_crlf(kyso_buf *b, const char *s)
{
    return kyso_canon_crlf(b, s, strlen(s));
}

static sfsistat on_header(SMFICTX *ctx, char *name, char *value)
{
    conn_ctx *c = smfi_getpriv(ctx);

    if (c == NULL || c->snap == NULL)
        return SMFIS_TEMPFAIL;
    if (kyso_buf_puts(&c->hdrs, name) != KYSO_OK || kyso_buf_puts(&c->hdrs, ": ") != KYSO_OK ||
        append_crlf(&c->hdrs, value) != KYSO_OK || kyso_buf_puts(&c->hdrs, "\r\n") != KYSO_OK)
        return SMFIS_TEMPFAIL;
    return SMFIS_CONTINUE;
}

static sfsistat on_body(SMFICTX *ctx, unsigned char *chunk, size_t len)
{
    conn_ctx *c = smfi_getpriv(ctx);

    if (c == NULL || c->snap == NULL)
        return SMFIS_TEMPFAIL;
    c->body_seen += len;
    if (c->hdrs.len + c->body_seen > (size_t)c->snap->conf->inbound.max_message_size) {
        /* Stop holding bytes we will not use; the verdict is already known. */
        c->oversize = 1;
        kyso_buf_free(&c->body);
        return SMFIS_CONTINUE;
    }
    if (kyso_buf_append(&c->body, chunk, len) != KYSO_OK)
        return SMFIS_TEMPFAIL;
    return SMFIS_CONTINUE;
}

/* Applies an action: the reply to give and what to log. */
static sfsistat act(SMFICTX *ctx, conn_ctx *c, kyso_action a, const char *why_tmp,
                    const char *why_perm)
{
    switch (a) {
    case KYSO_ACT_TEMPFAIL:
        smfi_setreply(ctx, "451", "4.7.0", (char *)why_tmp);
        return SMFIS_TEMPFAIL;
    case KYSO_ACT_REJECT:
        smfi_setreply(ctx, "550", "5.7.1", (char *)why_perm);
        return SMFIS_REJECT;
    case KYSO_ACT_QUARANTINE:
        smfi_quarantine(ctx, (char *)why_perm);
        return SMFIS_CONTINUE;
    case KYSO_ACT_ACCEPT:
    case KYSO_ACT_TAG:
        break;
    }
    return SMFIS_CONTINUE;
}

/* Calls fn, last first so deletions keep indices valid, for each received
 * header field that wants() selects, with its 1-based index among the
 * fields of the same name (what smfi_chgheader counts). wants() must decide
 * by name alone. Sorting keeps this O(n log n): a header of 20,000 fields
 * must not cost seconds. */
typedef int (*field_fn)(SMFICTX *ctx, conn_ctx *c, const kyso_field *f, int index);
typedef int (*field_pred)(const kyso_field *f);

typedef struct {
    kyso_field f;
    size_t ord;
    int index;
} field_hit;

static int by_name_then_order(const void *a, const void *b)
{
    const field_hit *x = a, *y = b;
    size_t n = x->f.name_len < y->f.name_len ? x->f.name_len : y->f.name_len;
    int r = strncasecmp(x->f.name, y->f.name, n);

    if (r == 0 && x->f.name_len != y->f.name_len)
        r = x->f.name_len < y->f.name_len ? -1 : 1;
    if (r == 0)
        r = x->ord < y->ord ? -1 : x->ord > y->ord;
    return r;
}

static int by_order_descending(const void *a, const void *b)
{
    const field_hit *x = a, *y = b;

    return x->ord < y->ord ? 1 : x->ord > y->ord ? -1 : 0;
}

static int each_field_reverse(SMFICTX *ctx, conn_ctx *c, field_pred wants, field_fn fn)
{
    kyso_entity e = {c->hdrs.data, c->hdrs.len, NULL, 0};
    kyso_field f;
    field_hit *hits = NULL;
    size_t pos = 0, n = 0, k = 0, ord = 0;

    /* Every field is visited however many there are: a forged badge must
     * not survive by hiding behind a thousand others. */
    while (kyso_field_next(&e, &pos, &f))
        n += wants(&f) != 0;
    if (n == 0)
        return 0;
    if ((hits = calloc(n, sizeof(*hits))) == NULL)
        return -1;
    pos = 0;
    while (k < n && kyso_field_next(&e, &pos, &f)) {
        if (wants(&f)) {
            hits[k].f = f;
            hits[k].ord = ord;
            k++;
        }
        ord++;
    }
    qsort(hits, k, sizeof(*hits), by_name_then_order);
    for (size_t i = 0; i < k; i++)
        hits[i].index =
            i > 0 && hits[i].f.name_len == hits[i - 1].f.name_len &&
                    strncasecmp(hits[i].f.name, hits[i - 1].f.name, hits[i].f.name_len) == 0
                ? hits[i - 1].index + 1
                : 1;
    qsort(hits, k, sizeof(*hits), by_order_descending);
    for (size_t i = 0; i < k; i++)
        fn(ctx, c, &hits[i].f, hits[i].index);
    free(hits);
    return 0;
}

static int name_is(const kyso_field *f, const char *name)
{
    return kyso_field_is(f, name);
}

static int name_has_prefix(const kyso_field *f, const char *prefix)
{
    size_t n = strlen(prefix);

    return f->name_len >= n && strncasecmp(f->name, prefix, n) == 0;
}

static int is_badge_field(const kyso_field *f)
{
    return name_is(f, "Authentication-Results") || name_has_prefix(f, "X-Kyso-");
}

static int is_mime_field(const kyso_field *f)
{
    return name_has_prefix(f, "Content-") || name_is(f, "MIME-Version");
}

static char *field_name(const kyso_field *f)
{
    return strndup(f->name, f->name_len);
}

/* The value without the leading space and with folds unfolded to LF+WSP
 * as libmilter expects. */
static char *field_value(const kyso_field *f)
{
    size_t i = 0, j = 0, n = f->value_len;
    char *v = malloc(n + 1);

    if (v == NULL)
        return NULL;
    while (i < n && (f->value[i] == ' ' || f->value[i] == '\t'))
        i++;
    for (; i < n; i++)
        if (f->value[i] != '\r')
            v[j++] = f->value[i];
    while (j > 0 && v[j - 1] == '\n')
        j--;
    v[j] = '\0';
    return v;
}

static int delete_forged(SMFICTX *ctx, conn_ctx *c, const kyso_field *f, int index)
{
    char *name = field_name(f), *value = field_value(f);
    int drop = 0;

    if (name && value) {
        if (strcasecmp(name, "Authentication-Results") == 0) {
            drop = kyso_policy_ar_is_ours(value, c->snap->conf->inbound.authserv_id);
            c->had_our_ar |= drop;
        } else if (strncasecmp(name, "X-Kyso-", 7) == 0)
            drop = 1;
    }
    if (drop) {
        kyso_log(KYSO_LOG_INFO, c->qid[0] ? c->qid : NULL, "header-removed",
                 "name=%s reason=\"only this gateway writes it\"", name);
        smfi_chgheader(ctx, name, index, NULL);
    }
    free(name);
    free(value);
    return 0;
}

static int delete_content_fields(SMFICTX *ctx, conn_ctx *c, const kyso_field *f, int index)
{
    char *name = field_name(f);

    if (name && (strncasecmp(name, "Content-", 8) == 0 || strcasecmp(name, "MIME-Version") == 0))
        smfi_chgheader(ctx, name, index, NULL);
    free(name);
    return 0;
}

static int replace_body(SMFICTX *ctx, const char *p, size_t len)
{
    while (len > 0) {
        size_t n = len > 65535 ? 65535 : len;

        if (smfi_replacebody(ctx, (unsigned char *)p, (int)n) != MI_SUCCESS)
            return -1;
        p += n;
        len -= n;
    }
    return 0;
}

/* Turns the signed message into edits of the queued one: the Content-*
 * fields and MIME-Version move into the signed entity, the new ones are added,
 * and the body is replaced (CRLF lines, in one contiguous run of calls). */
static int apply_signed(SMFICTX *ctx, conn_ctx *c, const kyso_buf *out, kyso_sign_outcome what)
{
    kyso_entity e;
    size_t pos = 0;
    kyso_field f;

    kyso_entity_split(&e, out->data, out->len);
    if (what == KYSO_SIGNED_NEW) {
        if (each_field_reverse(ctx, c, is_mime_field, delete_content_fields) != 0)
            return -1;
        while (kyso_field_next(&e, &pos, &f)) {
            char *name = field_name(&f), *value = field_value(&f);
            int ok = 1;

            if (name && value &&
                (strncasecmp(name, "Content-", 8) == 0 || strcasecmp(name, "MIME-Version") == 0))
                ok = smfi_addheader(ctx, name, value) == MI_SUCCESS;
            free(name);
            free(value);
            if (!ok)
                return -1;
        }
    }
    return replace_body(ctx, e.body, e.body_len);
}

static char *message_bytes(conn_ctx *c, size_t *len)
{
    kyso_buf m = KYSO_BUF_INIT;

    if (kyso_buf_append(&m, c->hdrs.data ? c->hdrs.data : "", c->hdrs.len) != KYSO_OK ||
        kyso_buf_append(&m, "\r\n", 2) != KYSO_OK ||
        kyso_buf_append(&m, c->body.data ? c->body.data : "", c->body.len) != KYSO_OK) {
        kyso_buf_free(&m);
        return NULL;
    }
    *len = m.len;
    return m.data;
}

static sfsistat outbound(SMFICTX *ctx, conn_ctx *c)
{
    const kyso_config *conf = c->snap->conf;
    const char *qid = c->qid[0] ? c->qid : NULL;
    char *from = NULL, *msg = NULL;
    size_t len = 0, idx;
    const kyso_conf_identity *id;
    kyso_buf out = KYSO_BUF_INIT;
    kyso_sign_outcome what = KYSO_SIGNED_NEW;
    kyso_status st;
    sfsistat rc = SMFIS_CONTINUE;

    if (c->oversize) {
        kyso_log(KYSO_LOG_WARNING, qid, "sign-refused", "reason=\"message too large\" size=%zu",
                 c->body_seen);
        return act(ctx, c, (kyso_action)conf->outbound.on_sign_error,
                   "Kyso: message too large to sign", "Kyso: message too large to sign");
    }
    if ((msg = message_bytes(c, &len)) == NULL)
        return SMFIS_TEMPFAIL;
    if (kyso_message_from(&from, msg, len) != KYSO_OK ||
        (id = kyso_policy_identity_for(conf, from)) == NULL) {
        kyso_log(KYSO_LOG_INFO, qid, "not-signed", "from=%s client=%s reason=\"no identity\"",
                 from ? from : "(none or several)", c->addr);
        rc = act(ctx, c, (kyso_action)conf->outbound.on_no_identity,
                 "Kyso: no signing identity for this sender",
                 "Kyso: no signing identity for this sender");
        goto out;
    }
    /* One official's login must not sign as another's identity. */
    if (!kyso_policy_login_allowed(id, c->authenticated ? c->login : NULL)) {
        kyso_log(KYSO_LOG_WARNING, qid, "not-signed",
                 "from=%s identity=%s login=%s reason=\"login not allowed for this identity\"",
                 from, id->name, c->authenticated ? c->login : "(none)");
        rc = act(ctx, c, (kyso_action)conf->outbound.on_no_identity,
                 "Kyso: this login may not sign for this sender",
                 "Kyso: this login may not sign for this sender");
        goto out;
    }
    if (!c->rcpt_wanted) {
        kyso_log(KYSO_LOG_INFO, qid, "not-signed",
                 "from=%s reason=\"no recipient in recipient_domains\"", from);
        goto out;
    }
    idx = (size_t)(id - conf->identities);
    st = snapshot_sign(c->snap, idx, &out, &what, msg, len);
    if (st != KYSO_OK) {
        kyso_action a = (kyso_action)conf->outbound.on_sign_error;
        char why[200];

        /* Retrying cannot help a message Kyso cannot sign as it is
         * (malformed MIME, a broken signature to co-sign): the sender is
         * told now instead of after days of retries. */
        if (a == KYSO_ACT_TEMPFAIL && st != KYSO_ERR_KEY && st != KYSO_ERR_CERT &&
            st != KYSO_ERR_NOMEM && st != KYSO_ERR_IO && st != KYSO_ERR_INTERNAL &&
            st != KYSO_ERR_CRYPTO)
            a = KYSO_ACT_REJECT;
        kyso_log_openssl(KYSO_LOG_ERR, qid, "sign-error");
        kyso_log(KYSO_LOG_ERR, qid, "sign-failed", "from=%s identity=%s error=\"%s\" action=%s",
                 from, id->name, kyso_status_str(st), kyso_action_str(a));
        snprintf(why, sizeof(why),
                 "Kyso: this message cannot be signed (%s); the gateway log has the reason "
                 "under queue id %s",
                 kyso_status_str(st), qid ? qid : "-");
        rc = act(ctx, c, a,
                 "Kyso: cannot sign now (signing key or certificate unavailable); try again later",
                 why);
        goto out;
    }
    if (what != KYSO_SIGNED_SKIPPED && apply_signed(ctx, c, &out, what) != 0) {
        kyso_log(KYSO_LOG_ERR, qid, "sign-failed", "from=%s error=\"MTA refused the edits\"", from);
        smfi_setreply(ctx, "451", "4.7.0", "Kyso: cannot sign now; try again later");
        rc = SMFIS_TEMPFAIL;
        goto out;
    }
    kyso_log(KYSO_LOG_INFO, qid, "signed", "from=%s identity=%s mode=%s client=%s auth=%s", from,
             id->name,
             what == KYSO_SIGNED_NEW        ? "new"
             : what == KYSO_SIGNED_COSIGNED ? "cosign"
                                            : "skipped",
             c->addr, c->authenticated ? "yes" : "no");
out:
    free(from);
    free(msg);
    kyso_buf_free(&out);
    return rc;
}

/* Removes forged tags from every Subject field and, for a verdict, adds
 * ours to the first (the one clients show). Fields are changed last first
 * and never to an empty value, which Postfix would take as a deletion and
 * which would shift the indices of the fields after it. */
static int subject_field(const kyso_field *f)
{
    return kyso_field_is(f, "Subject");
}

static int retag_subject(SMFICTX *ctx, conn_ctx *c, const kyso_field *f, int index)
{
    const kyso_config *conf = c->snap->conf;
    char *subject = field_value(f), *untagged, *tagged = NULL;
    const kyso_verdict *v = c->subject_verdict;

    if (subject == NULL)
        return 0;
    untagged = kyso_policy_subject_untag(conf, subject);
    if (v && index == 1)
        tagged = kyso_policy_subject_tag(conf, v->result, untagged ? untagged : subject);
    if (tagged || untagged) {
        const char *nv = tagged ? tagged : untagged;

        smfi_chgheader(ctx, "Subject", index, (char *)(nv[0] ? nv : " "));
    }
    free(subject);
    free(untagged);
    free(tagged);
    return 0;
}

static void rewrite_subject(SMFICTX *ctx, conn_ctx *c, const kyso_verdict *v)
{
    kyso_entity e = {c->hdrs.data, c->hdrs.len, NULL, 0};

    c->subject_verdict = v;
    each_field_reverse(ctx, c, subject_field, retag_subject);
    c->subject_verdict = NULL;
    if (v && kyso_entity_find(&e, "Subject", NULL) == 0) {
        char *tagged = kyso_policy_subject_tag(c->snap->conf, v->result, NULL);

        if (tagged)
            smfi_addheader(ctx, "Subject", tagged);
        free(tagged);
    }
}

static sfsistat inbound(SMFICTX *ctx, conn_ctx *c)
{
    const kyso_config *conf = c->snap->conf;
    const char *qid = c->qid[0] ? c->qid : NULL;
    kyso_verdict *v = NULL;
    kyso_buf ar = KYSO_BUF_INIT, summary = KYSO_BUF_INIT;
    char *msg = NULL, *signer = NULL;
    size_t len = 0;
    kyso_action a;
    char why[600];
    sfsistat rc = SMFIS_CONTINUE;

    if (c->oversize) {
        rewrite_subject(ctx, c, NULL); /* unverified mail keeps no forged tag either */
        kyso_log(KYSO_LOG_WARNING, qid, "not-verified", "reason=\"message too large\" size=%zu",
                 c->body_seen);
        kyso_buf_printf(&ar, "%s; smime=neutral (message too large to verify)",
                        conf->inbound.authserv_id);
        smfi_insheader(ctx, 0, "Authentication-Results", ar.data);
        rc = act(ctx, c, (kyso_action)conf->inbound.on_oversize,
                 "Kyso: message too large to verify now", "Kyso: message too large");
        goto out;
    }
    if ((msg = message_bytes(c, &len)) == NULL ||
        kyso_verify_message(&v, c->snap->trust, msg, len) != KYSO_OK) {
        kyso_log(KYSO_LOG_ERR, qid, "verify-error", "error=\"internal\"");
        rc = SMFIS_TEMPFAIL;
        goto out;
    }
    if (kyso_verdict_auth_results(&ar, v, conf->inbound.authserv_id) != KYSO_OK ||
        kyso_verdict_summary(&summary, v) != KYSO_OK) {
        rc = SMFIS_TEMPFAIL;
        goto out;
    }
    smfi_insheader(ctx, 0, "Authentication-Results", ar.data);

    rewrite_subject(ctx, c, v);
    if (conf->inbound.signer_header && v->result == KYSO_RESULT_PASS &&
        (signer = kyso_policy_signer_header(v)) != NULL)
        smfi_addheader(ctx, "X-Kyso-Signer", signer);

    a = kyso_policy_inbound_action(conf, v);
    kyso_log(KYSO_LOG_INFO, qid, "verified", "result=%s from=%s action=%s client=%s summary=\"%s\"",
             kyso_result_str(v->result), v->from ? v->from : "-", kyso_action_str(a), c->addr,
             summary.data);
    snprintf(why, sizeof(why),
             "Kyso: mail from this domain must carry a valid S/MIME signature (smime=%s: %s)",
             kyso_result_str(v->result), v->reason ? v->reason : "");
    rc = act(ctx, c, a, "Kyso: signature cannot be checked now; try again later", why);
out:
    kyso_verdict_free(v);
    kyso_buf_free(&ar);
    kyso_buf_free(&summary);
    free(msg);
    free(signer);
    return rc;
}

static int from_is_login(conn_ctx *c)
{
    char *from = NULL;
    int same;

    if (!c->authenticated || kyso_message_from(&from, c->hdrs.data, c->hdrs.len) != KYSO_OK)
        return 0;
    same = strcasecmp(from, c->login) == 0;
    free(from);
    return same;
}

static sfsistat on_eom(SMFICTX *ctx)
{
    conn_ctx *c = smfi_getpriv(ctx);
    sfsistat rc;

    if (c == NULL || c->snap == NULL)
        return SMFIS_TEMPFAIL;
    qid_of(ctx, c);
    /* Only this gateway writes its badge, whichever way the mail goes:
     * an official's mail to a colleague must not carry a forged one either. */
    if (each_field_reverse(ctx, c, is_badge_field, delete_forged) != 0) {
        msg_reset(c);
        return SMFIS_TEMPFAIL;
    }
    if (is_outbound(c) && c->had_our_ar && !from_is_login(c)) {
        /* Our badge on arrival means this mail came in from outside once
         * already (a local redirect, a list manager, an official's
         * "redirect" of an inbound message): not ours to sign, unless the
         * logged-in official sends as exactly themself. */
        kyso_log(KYSO_LOG_WARNING, c->qid[0] ? c->qid : NULL, "not-signed",
                 "client=%s reason=\"carries our Authentication-Results: re-injected inbound "
                 "mail\" action=verify",
                 c->addr);
        rc = inbound(ctx, c);
    } else if (is_outbound(c)) {
        rewrite_subject(ctx, c, NULL);
        rc = outbound(ctx, c);
    } else {
        rc = inbound(ctx, c);
    }
    /* Whatever OpenSSL left on this thread's queue belongs to this message. */
    ERR_clear_error();
    msg_reset(c);
    return rc;
}

static sfsistat on_abort(SMFICTX *ctx)
{
    conn_ctx *c = smfi_getpriv(ctx);

    if (c)
        msg_reset(c);
    return SMFIS_CONTINUE;
}

static sfsistat on_close(SMFICTX *ctx)
{
    conn_ctx *c = smfi_getpriv(ctx);

    if (c) {
        msg_reset(c);
        snapshot_release(c->snap);
        free(c);
        smfi_setpriv(ctx, NULL);
    }
    return SMFIS_CONTINUE;
}

struct smfiDesc kyso_milter_desc = {
    "kyso",       SMFI_VERSION, SMFIF_ADDHDRS | SMFIF_CHGHDRS | SMFIF_CHGBODY | SMFIF_QUARANTINE,
    on_connect,   NULL, /* helo */
    on_envfrom,   on_envrcpt,   on_header,
    NULL, /* eoh */
    on_body,      on_eom,       on_abort,
    on_close,     NULL, /* unknown */
    NULL,               /* data */
    on_negotiate,
};
