/*
 * inspect.c - describes a message's S/MIME structure for an admin, without
 * judging it: which entity is signed, how, by which certificates, with
 * which algorithms and signed attributes. `kyso inspect` prints this.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/objects.h>

#include "internal.h"

static kyso_status put_time(kyso_buf *out, const char *label, const ASN1_TIME *t)
{
    struct tm tm;
    char when[32] = "?";

    if (t && ASN1_TIME_to_tm(t, &tm))
        strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
    return kyso_buf_printf(out, "%s%s\n", label, when);
}

static kyso_status describe_signed_attrs(kyso_buf *out, CMS_SignerInfo *si)
{
    int n = CMS_signed_get_attr_count(si);
    kyso_status st = kyso_buf_puts(out, "    signed attributes:");

    if (n < 0)
        return st == KYSO_OK ? kyso_buf_puts(out, " none (signature over the content itself)\n")
                             : st;
    for (int i = 0; st == KYSO_OK && i < n; i++) {
        X509_ATTRIBUTE *a = CMS_signed_get_attr(si, i);
        char name[80];

        OBJ_obj2txt(name, sizeof(name), X509_ATTRIBUTE_get0_object(a), 0);
        st = kyso_buf_printf(out, " %s", name);
    }
    if (st == KYSO_OK)
        st = kyso_buf_puts(out, "\n");
    {
        int idx = CMS_signed_get_attr_by_NID(si, NID_pkcs9_signingTime, -1);
        ASN1_TYPE *t = idx >= 0 ? X509_ATTRIBUTE_get0_type(CMS_signed_get_attr(si, idx), 0) : NULL;

        if (st == KYSO_OK && t && (t->type == V_ASN1_UTCTIME || t->type == V_ASN1_GENERALIZEDTIME))
            st = put_time(out, "    signing time: ", (const ASN1_TIME *)t->value.asn1_string);
    }
    return st;
}

static kyso_status describe_signer(kyso_buf *out, int i, CMS_SignerInfo *si)
{
    X509 *cert = NULL;
    X509_ALGOR *dig = NULL, *sig = NULL;
    char *subject = NULL, *issuer = NULL, *serial = NULL, *email = NULL;
    char dname[64], sname[64];
    kyso_status st;

    CMS_SignerInfo_get0_algs(si, NULL, &cert, &dig, &sig);
    OBJ_obj2txt(dname, sizeof(dname), dig ? dig->algorithm : NULL, 0);
    OBJ_obj2txt(sname, sizeof(sname), sig ? sig->algorithm : NULL, 0);
    st = kyso_buf_printf(out, "  signer %d:\n    digest: %s, signature: %s\n", i + 1, dname, sname);
    if (st == KYSO_OK && cert == NULL)
        st = kyso_buf_puts(out, "    certificate: not included in the message\n");
    if (st == KYSO_OK && cert) {
        subject = kyso_name_utf8(X509_get_subject_name(cert));
        issuer = kyso_name_utf8(X509_get_issuer_name(cert));
        serial = kyso_serial_hex(cert);
        email = kyso_cert_first_email(cert);
        st =
            kyso_buf_printf(out, "    subject: %s\n    issuer: %s\n    serial: %s\n    email: %s\n",
                            subject ? subject : "?", issuer ? issuer : "?", serial ? serial : "?",
                            email ? email : "(none)");
        if (st == KYSO_OK)
            st = put_time(out, "    valid from: ", X509_get0_notBefore(cert));
        if (st == KYSO_OK)
            st = put_time(out, "    valid until: ", X509_get0_notAfter(cert));
    }
    if (st == KYSO_OK)
        st = describe_signed_attrs(out, si);
    free(subject);
    free(issuer);
    free(serial);
    free(email);
    return st;
}

kyso_status kyso_inspect_message(kyso_buf *out, const char *msg, size_t len)
{
    kyso_buf canon = KYSO_BUF_INIT;
    kyso_entity top;
    kyso_smime sm;
    char *from = NULL;
    STACK_OF(X509) *certs = NULL;
    STACK_OF(CMS_SignerInfo) * sis;
    kyso_status st;

    memset(&sm, 0, sizeof(sm));
    if (len > KYSO_DEFAULT_MAX_MESSAGE)
        return KYSO_ERR_TOO_BIG;
    if ((st = kyso_canon_crlf(&canon, msg, len)) != KYSO_OK)
        return st;
    kyso_entity_split(&top, canon.data, canon.len);
    kyso_entity_from(&top, &from);
    if ((st = kyso_buf_printf(out, "from: %s\n", from ? from : "(not exactly one address)")) !=
            KYSO_OK ||
        (st = kyso_smime_locate(&sm, &top)) != KYSO_OK)
        goto out;
    if (sm.cms == NULL) {
        st = kyso_buf_printf(out, "signature: %s (%s)\n", kyso_result_str(sm.result), sm.reason);
        goto out;
    }
    st = kyso_buf_printf(out, "signature: %s, covers the whole message%s%s\n",
                         sm.detached ? "multipart/signed (detached)"
                                     : "application/pkcs7-mime (opaque)",
                         sm.micalg[0] ? ", micalg=" : "", sm.micalg);
    if (st != KYSO_OK)
        goto out;
    certs = CMS_get1_certs(sm.cms);
    if (certs)
        CMS_set1_signers_certs(sm.cms, certs, 0);
    ERR_clear_error();
    sis = CMS_get0_SignerInfos(sm.cms);
    st = kyso_buf_printf(out, "signed content: %zu bytes\ncertificates included: %d\nsigners: %d\n",
                         sm.detached ? sm.content_len : (size_t)(*CMS_get0_content(sm.cms))->length,
                         certs ? sk_X509_num(certs) : 0, sis ? sk_CMS_SignerInfo_num(sis) : 0);
    for (int i = 0; st == KYSO_OK && sis && i < sk_CMS_SignerInfo_num(sis) && i < KYSO_MAX_SIGNERS;
         i++)
        st = describe_signer(out, i, sk_CMS_SignerInfo_value(sis, i));
out:
    sk_X509_pop_free(certs, X509_free);
    kyso_smime_clear(&sm);
    free(from);
    kyso_buf_free(&canon);
    return st;
}
