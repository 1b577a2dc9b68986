/*
 * verify.c - judges a message's S/MIME signature and says what a recipient
 * may believe about it, in RFC 7281 terms.
 *
 * "pass" is earned only when the signature covers the whole message (the
 * top-level entity is the signed one), From holds exactly one address, no
 * SignerInfo is broken, and a signer whose signature and certificate path
 * both verify carries that address. Every other outcome is one of none,
 * neutral, policy, fail, permerror, temperror, with a reason.
 *
 * The signed bytes are taken as they arrived (CRLF-canonicalised), never
 * re-serialised; the signature part is decoded here and handed to CMS as DER
 * with the content as a separate BIO, which is fast and bounded.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "internal.h"

static kyso_status set_reason(kyso_verdict *v, kyso_result r, const char *reason)
{
    v->result = r;
    free(v->reason);
    v->reason = strdup(reason);
    return v->reason ? KYSO_OK : KYSO_ERR_NOMEM;
}

void kyso_signer_report_clear(kyso_signer_report *s)
{
    free(s->subject);
    free(s->common_name);
    free(s->organization);
    free(s->email);
    free(s->issuer);
    free(s->serial);
    free(s->chain_error);
    memset(s, 0, sizeof(*s));
}

void kyso_verdict_free(kyso_verdict *v)
{
    if (v == NULL)
        return;
    for (size_t i = 0; i < v->nsigners; i++)
        kyso_signer_report_clear(&v->signers[i]);
    free(v->signers);
    free(v->reason);
    free(v->from);
    free(v);
}

/* Online status of every link of a validated path, leaf first; the worst
 * answer decides, and the link that decided is reported. */
static void check_online(kyso_signer_report *r, const kyso_trust *t, X509_STORE_CTX *ctx,
                         STACK_OF(X509) * untrusted, long long deadline)
{
    STACK_OF(X509) *chain = X509_STORE_CTX_get1_chain(ctx);
    kyso_revocation worst = KYSO_REV_GOOD;
    kyso_rev_info offline = r->revocation_info;
    int n = chain ? sk_X509_num(chain) : 0;

    /* The anchor itself has nobody to ask. */
    for (int i = 0; i + 1 < n; i++) {
        kyso_rev_info info;
        kyso_revocation st = kyso_revoker_check(kyso_trust_revoker(t), sk_X509_value(chain, i),
                                                sk_X509_value(chain, i + 1), kyso_trust_store(t),
                                                untrusted, deadline, &info);

        if (i == 0 || st == KYSO_REV_REVOKED || (st == KYSO_REV_UNKNOWN && worst == KYSO_REV_GOOD))
            r->revocation_info = info;
        if (st == KYSO_REV_REVOKED)
            worst = KYSO_REV_REVOKED;
        else if (st == KYSO_REV_UNKNOWN && worst == KYSO_REV_GOOD)
            worst = KYSO_REV_UNKNOWN;
    }
    /* A CRL file the admin supplied still counts when the network is silent,
     * and then the badge says so. */
    if (worst == KYSO_REV_UNKNOWN && r->revocation == KYSO_REV_GOOD)
        r->revocation_info = offline;
    else
        r->revocation = worst;
    sk_X509_pop_free(chain, X509_free);
}

/* Path validation of one signer certificate; fills chain and revocation. */
static kyso_status check_chain(kyso_signer_report *r, const kyso_trust *t, X509 *cert,
                               STACK_OF(X509) * untrusted, long long deadline)
{
    STACK_OF(X509_CRL) *crls = kyso_trust_crls(t);
    int with_crls = sk_X509_CRL_num(crls) > 0;
    X509_STORE_CTX *ctx = NULL;
    int ok = 0, err = 0;
    kyso_status st = KYSO_ERR_NOMEM;

    r->revocation_info.source = "none";
    r->revocation_info.reason = -1;
    for (int pass = 0; pass < 2; pass++) {
        X509_VERIFY_PARAM *param;

        X509_STORE_CTX_free(ctx);
        if ((ctx = X509_STORE_CTX_new()) == NULL)
            goto out;
        if (!X509_STORE_CTX_init(ctx, kyso_trust_store(t), cert, untrusted))
            goto out;
        param = X509_STORE_CTX_get0_param(ctx);
        X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SMIME_SIGN);
        if (kyso_trust_time(t))
            X509_VERIFY_PARAM_set_time(param, kyso_trust_time(t));
        if (with_crls && pass == 0) {
            X509_STORE_CTX_set0_crls(ctx, crls);
            X509_STORE_CTX_set_flags(ctx, X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL);
        }
        ok = X509_verify_cert(ctx) == 1;
        err = ok ? 0 : X509_STORE_CTX_get_error(ctx);
        if (!with_crls) {
            r->revocation = KYSO_REV_NOT_CHECKED;
            break;
        }
        if (pass == 0) {
            if (ok) {
                r->revocation = KYSO_REV_GOOD;
                r->revocation_info.source = "crl-file";
                r->revocation_info.checked_at = time(NULL);
                break;
            }
            if (err == X509_V_ERR_CERT_REVOKED) {
                r->revocation = KYSO_REV_REVOKED;
                r->revocation_info.source = "crl-file";
                r->revocation_info.checked_at = time(NULL);
                break;
            }
            if (err != X509_V_ERR_UNABLE_TO_GET_CRL && err != X509_V_ERR_CRL_HAS_EXPIRED &&
                err != X509_V_ERR_CRL_NOT_YET_VALID && err != X509_V_ERR_UNABLE_TO_GET_CRL_ISSUER &&
                err != X509_V_ERR_DIFFERENT_CRL_SCOPE) {
                r->revocation = KYSO_REV_NOT_CHECKED;
                break;
            }
            /* No usable CRL for some link: judge the path without it. */
            r->revocation = KYSO_REV_UNKNOWN;
            continue;
        }
        break;
    }
    r->chain_ok = ok;
    /* deadline < 0: no network for this one (its signature already failed;
     * an attacker must not spend our time budget on certificates that
     * cannot change the verdict). */
    if (ok && deadline >= 0 && kyso_trust_revoker(t) && r->revocation != KYSO_REV_REVOKED)
        check_online(r, t, ctx, untrusted, deadline);
    r->revocation_info.status = r->revocation;
    if (!ok) {
        r->chain_error = strdup(X509_verify_cert_error_string(err));
        if (r->chain_error == NULL)
            goto out;
    }
    st = KYSO_OK;
out:
    X509_STORE_CTX_free(ctx);
    ERR_clear_error();
    return st;
}

static kyso_status describe_signer(kyso_signer_report *r, X509 *cert, const char *from)
{
    r->cert_found = 1;
    r->subject = kyso_name_utf8(X509_get_subject_name(cert));
    r->issuer = kyso_name_utf8(X509_get_issuer_name(cert));
    r->serial = kyso_serial_hex(cert);
    r->common_name = kyso_name_entry(X509_get_subject_name(cert), NID_commonName);
    r->organization = kyso_name_entry(X509_get_subject_name(cert), NID_organizationName);
    r->from_match = kyso_cert_has_email(cert, from);
    r->email = r->from_match ? strdup(from) : kyso_cert_first_email(cert);
    if (!r->subject || !r->issuer || !r->serial || (r->from_match && !r->email))
        return KYSO_ERR_NOMEM;
    return KYSO_OK;
}

/* Runs the content through CMS's digest BIOs once, then judges each SignerInfo. */
static kyso_status judge_signers(kyso_verdict *v, CMS_ContentInfo *cms, const kyso_trust *t,
                                 const char *content, size_t content_len)
{
    STACK_OF(CMS_SignerInfo) *sis = CMS_get0_SignerInfos(cms);
    STACK_OF(X509) *certs = NULL, *pool = NULL;
    BIO *cont = NULL, *chain = NULL;
    char sink[16384];
    int n = sis ? sk_CMS_SignerInfo_num(sis) : 0;
    /* One deadline for all network work of this message. */
    long long deadline = kyso_trust_revoker(t) ? kyso_revoker_deadline(kyso_trust_revoker(t)) : 0;
    kyso_status st = KYSO_ERR_NOMEM;

    if (n > KYSO_MAX_SIGNERS)
        return set_reason(v, KYSO_RESULT_PERMERROR, "too many signers");
    if ((v->signers = calloc((size_t)(n ? n : 1), sizeof(*v->signers))) == NULL)
        return KYSO_ERR_NOMEM;
    v->nsigners = (size_t)n;

    certs = CMS_get1_certs(cms);
    if ((pool = sk_X509_new_null()) == NULL)
        goto out;
    for (int i = 0; certs && i < sk_X509_num(certs); i++)
        if (!sk_X509_push(pool, sk_X509_value(certs, i)))
            goto out;
    for (int i = 0; i < sk_X509_num(kyso_trust_untrusted(t)); i++)
        if (!sk_X509_push(pool, sk_X509_value(kyso_trust_untrusted(t), i)))
            goto out;
    /* Binds each SignerInfo to its certificate (by issuer+serial or SKI). */
    CMS_set1_signers_certs(cms, pool, 0);
    ERR_clear_error();

    if (content != NULL && (cont = BIO_new_mem_buf(content, (int)content_len)) == NULL)
        goto out;
    if ((chain = CMS_dataInit(cms, cont)) == NULL) {
        BIO_free(cont);
        ERR_clear_error();
        st = set_reason(v, KYSO_RESULT_PERMERROR, "unusable SignedData");
        goto out;
    }
    while (BIO_read(chain, sink, sizeof(sink)) > 0)
        ;

    for (int i = 0; i < n; i++) {
        CMS_SignerInfo *si = sk_CMS_SignerInfo_value(sis, i);
        kyso_signer_report *r = &v->signers[i];
        X509 *signer = NULL;

        CMS_SignerInfo_get0_algs(si, NULL, &signer, NULL, NULL);
        if (signer == NULL)
            continue; /* cert_found stays 0: nothing can vouch for it */
        if ((st = describe_signer(r, signer, v->from)) != KYSO_OK)
            goto out;
        if (CMS_signed_get_attr_count(si) >= 0)
            r->signature_ok =
                CMS_SignerInfo_verify(si) == 1 && CMS_SignerInfo_verify_content(si, chain) == 1;
        else
            r->signature_ok = CMS_SignerInfo_verify_content(si, chain) == 1;
        ERR_clear_error();
        if ((st = check_chain(r, t, signer, pool, r->signature_ok ? deadline : -1)) != KYSO_OK)
            goto out;
    }
    st = KYSO_OK;
out:
    BIO_free_all(chain);
    sk_X509_free(pool);
    sk_X509_pop_free(certs, X509_free);
    ERR_clear_error();
    return st;
}

kyso_status kyso_signer_check(kyso_signer_report *out, int *days_left, const kyso_trust *t,
                              const kyso_signer *s)
{
    X509 *cert = (X509 *)kyso_signer_cert(s);
    STACK_OF(X509) *pool = sk_X509_dup(kyso_signer_chain(s));
    kyso_revoker *r = kyso_trust_revoker(t);
    int days = 0, secs = 0;
    kyso_status st;

    memset(out, 0, sizeof(*out));
    if (pool == NULL)
        return KYSO_ERR_NOMEM;
    for (int i = 0; i < sk_X509_num(kyso_trust_untrusted(t)); i++)
        sk_X509_push(pool, sk_X509_value(kyso_trust_untrusted(t), i));
    if ((st = describe_signer(out, cert, NULL)) == KYSO_OK)
        st = check_chain(out, t, cert, pool, r ? kyso_revoker_deadline(r) : 0);
    if (ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(cert)))
        *days_left = days;
    sk_X509_free(pool);
    return st;
}

/* The verdict from the per-signer facts. */
static kyso_status conclude(kyso_verdict *v, int hard_fail)
{
    int any_found = 0, bad = -1, revoked = -1, chain_bad = -1, unmatched_good = 0;

    if (v->nsigners == 0)
        return set_reason(v, KYSO_RESULT_PERMERROR, "SignedData has no signers");
    for (size_t i = 0; i < v->nsigners; i++) {
        kyso_signer_report *r = &v->signers[i];

        if (!r->cert_found)
            continue;
        any_found = 1;
        if (!r->signature_ok) {
            bad = (int)i;
            continue;
        }
        if (!r->from_match) {
            unmatched_good |= r->chain_ok;
            continue;
        }
        if (r->revocation == KYSO_REV_REVOKED)
            revoked = (int)i;
        else if (!r->chain_ok)
            chain_bad = (int)i;
        else if (v->pass_index < 0)
            v->pass_index = (int)i;
    }
    /* A broken signature anywhere means the message was altered. */
    if (bad >= 0) {
        v->pass_index = -1;
        return set_reason(v, KYSO_RESULT_FAIL, "signature does not verify");
    }
    if (!any_found)
        return set_reason(v, KYSO_RESULT_FAIL, "signer certificate not found");
    if (v->from == NULL) {
        v->pass_index = -1;
        return set_reason(v, KYSO_RESULT_POLICY, "From must hold exactly one address");
    }
    if (v->pass_index >= 0 && v->signers[v->pass_index].revocation == KYSO_REV_UNKNOWN &&
        hard_fail) {
        v->pass_index = -1;
        return set_reason(v, KYSO_RESULT_TEMPERROR, "revocation status unknown (hard-fail)");
    }
    if (v->pass_index >= 0)
        return set_reason(v, KYSO_RESULT_PASS, "signature verified");
    if (revoked >= 0)
        return set_reason(v, KYSO_RESULT_FAIL, "signer certificate revoked");
    if (chain_bad >= 0) {
        char reason[200];

        snprintf(reason, sizeof(reason), "certificate not trusted: %s",
                 v->signers[chain_bad].chain_error ? v->signers[chain_bad].chain_error : "?");
        return set_reason(v, KYSO_RESULT_FAIL, reason);
    }
    (void)unmatched_good;
    return set_reason(v, KYSO_RESULT_POLICY, "no signer certificate carries the From address");
}

static kyso_status verify_canonical(kyso_verdict *v, const kyso_trust *t, const char *msg,
                                    size_t len)
{
    kyso_entity top;
    kyso_smime sm;
    kyso_status st;

    kyso_entity_split(&top, msg, len);
    if (kyso_entity_from(&top, &v->from) == KYSO_ERR_NOMEM)
        return KYSO_ERR_NOMEM;
    if ((st = kyso_smime_locate(&sm, &top)) != KYSO_OK)
        return st;
    if (sm.cms == NULL) {
        st = set_reason(v, sm.result, sm.reason);
        goto out;
    }
    if ((st = judge_signers(v, sm.cms, t, sm.content, sm.content_len)) != KYSO_OK)
        goto out;
    if (v->reason == NULL)
        st = conclude(v, kyso_trust_revoker(t) &&
                             kyso_revoker_options(kyso_trust_revoker(t))->hard_fail);
out:
    kyso_smime_clear(&sm);
    return st;
}

kyso_status kyso_verify_message(kyso_verdict **out, const kyso_trust *t, const char *msg,
                                size_t len)
{
    kyso_verdict *v;
    kyso_buf canon = KYSO_BUF_INIT;
    kyso_status st;

    *out = NULL;
    if ((v = calloc(1, sizeof(*v))) == NULL)
        return KYSO_ERR_NOMEM;
    v->pass_index = -1;
    if (len > KYSO_DEFAULT_MAX_MESSAGE) {
        st = set_reason(v, KYSO_RESULT_PERMERROR, "message too large to verify");
        goto out;
    }
    if ((st = kyso_canon_crlf(&canon, msg, len)) != KYSO_OK)
        goto out;
    st = verify_canonical(v, t, canon.data, canon.len);
out:
    kyso_buf_free(&canon);
    if (st != KYSO_OK) {
        kyso_verdict_free(v);
        return st;
    }
    *out = v;
    return KYSO_OK;
}
