/*
 * sign.c - turns a message into an RFC 8551 multipart/signed one.
 *
 * The message's own header fields stay outside, unchanged; its Content-*
 * fields and body become the signed entity, first made 7-bit safe (encode.c)
 * so that no relay has a reason to alter them. The CMS SignedData is detached,
 * SHA-256, with signing time, S/MIME capabilities and ESS
 * signing-certificate-v2 signed attributes, the signer certificate and chain.
 *
 * A message already signed by someone else is co-signed by default: our
 * SignerInfo joins the existing SignedData over the same bytes, so both
 * signatures verify. We only co-sign content whose existing digest we have
 * checked, so we never lend our signature to bytes that were altered.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include "internal.h"

struct kyso_signer {
    kyso_keystore *ks;
    X509 *cert;
    STACK_OF(X509) * chain;
};

kyso_status kyso_signer_new(kyso_signer **out, kyso_keystore *ks, const char *cert_file,
                            const char *chain_file)
{
    kyso_signer *s;
    STACK_OF(X509) * certs;

    *out = NULL;
    if ((s = calloc(1, sizeof(*s))) == NULL)
        return KYSO_ERR_NOMEM;
    s->ks = ks;
    if ((certs = kyso_load_certs(cert_file)) == NULL) {
        kyso_log(KYSO_LOG_ERR, NULL, "signer", "error=\"cannot read certificate\" path=%s",
                 cert_file);
        free(s);
        return KYSO_ERR_IO;
    }
    s->cert = sk_X509_shift(certs);
    s->chain = certs; /* anything after the first certificate is chain */
    if (chain_file) {
        STACK_OF(X509) *more = kyso_load_certs(chain_file);
        X509 *x;

        if (more == NULL) {
            kyso_log(KYSO_LOG_ERR, NULL, "signer", "error=\"cannot read chain\" path=%s",
                     chain_file);
            kyso_signer_free(s);
            return KYSO_ERR_IO;
        }
        while ((x = sk_X509_shift(more)) != NULL)
            sk_X509_push(s->chain, x);
        sk_X509_free(more);
    }
    /* The key must belong to the certificate, or every mail would fail later. */
    {
        EVP_PKEY *k = kyso_keystore_acquire(ks);
        int ok = k && X509_check_private_key(s->cert, k) == 1;

        if (k)
            kyso_keystore_release(ks);
        if (!ok) {
            kyso_log(KYSO_LOG_ERR, NULL, "signer",
                     "error=\"private key does not match certificate\" cert=%s", cert_file);
            ERR_clear_error();
            kyso_signer_free(s);
            return KYSO_ERR_KEY;
        }
    }
    *out = s;
    return KYSO_OK;
}

void kyso_signer_free(kyso_signer *s)
{
    if (s == NULL)
        return;
    X509_free(s->cert);
    sk_X509_pop_free(s->chain, X509_free);
    free(s);
}

const X509 *kyso_signer_cert(const kyso_signer *s)
{
    return s->cert;
}

STACK_OF(X509) * kyso_signer_chain(const kyso_signer *s)
{
    return s->chain;
}

static const char *micalg_name(const EVP_MD *md)
{
    switch (EVP_MD_get_type(md)) {
    case NID_sha256:
        return "sha-256";
    case NID_sha384:
        return "sha-384";
    case NID_sha512:
        return "sha-512";
    default:
        return NULL;
    }
}

static kyso_status der_of(kyso_buf *der, CMS_ContentInfo *cms)
{
    unsigned char *p = NULL;
    int n = i2d_CMS_ContentInfo(cms, &p);
    kyso_status st;

    if (n <= 0)
        return KYSO_ERR_CRYPTO;
    st = kyso_buf_append(der, p, (size_t)n);
    OPENSSL_free(p);
    return st;
}

/* A detached SignedData over exactly `content`. */
static kyso_status cms_sign_detached(kyso_buf *der, const kyso_signer *s, const char *content,
                                     size_t len)
{
    const unsigned flags = CMS_DETACHED | CMS_BINARY | CMS_PARTIAL;
    CMS_ContentInfo *cms = NULL;
    BIO *in = NULL;
    EVP_PKEY *key = NULL;
    kyso_status st = KYSO_ERR_CRYPTO;

    if ((key = kyso_keystore_acquire(s->ks)) == NULL)
        return KYSO_ERR_KEY;
    if ((in = BIO_new_mem_buf(content, (int)len)) == NULL)
        goto out;
    if ((cms = CMS_sign(NULL, NULL, s->chain, NULL, flags)) == NULL)
        goto out;
    /* CMS_CADES adds ESS signing-certificate-v2 (RFC 5035). */
    if (CMS_add1_signer(cms, s->cert, key, EVP_sha256(), CMS_BINARY | CMS_CADES) == NULL)
        goto out;
    if (!CMS_final(cms, in, NULL, CMS_BINARY | CMS_DETACHED)) {
        st = KYSO_ERR_KEY; /* the token is the usual reason a final signature fails */
        goto out;
    }
    st = der_of(der, cms);
out:
    kyso_keystore_release(s->ks);
    if (st != KYSO_OK)
        kyso_log_openssl(KYSO_LOG_ERR, NULL, "sign");
    BIO_free(in);
    CMS_ContentInfo_free(cms);
    return st;
}

static kyso_status new_boundary(char *out, size_t outlen, const char *avoid, size_t avoid_len)
{
    unsigned char rnd[12];

    for (int tries = 0; tries < 8; tries++) {
        if (RAND_bytes(rnd, sizeof(rnd)) != 1)
            return KYSO_ERR_CRYPTO;
        snprintf(out, outlen, "kyso-%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x", rnd[0],
                 rnd[1], rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7], rnd[8], rnd[9], rnd[10],
                 rnd[11]);
        if (memmem(avoid, avoid_len, out, strlen(out)) == NULL)
            return KYSO_OK;
    }
    return KYSO_ERR_INTERNAL;
}

static int is_content_field(const kyso_field *f)
{
    return f->name_len >= 8 && strncasecmp(f->name, "Content-", 8) == 0;
}

/* The signature part and the close delimiter. */
static kyso_status emit_signature_part(kyso_buf *out, const char *boundary, const kyso_buf *der)
{
    kyso_status st =
        kyso_buf_printf(out,
                        "\r\n--%s\r\n"
                        "Content-Type: application/pkcs7-signature; name=\"smime.p7s\"\r\n"
                        "Content-Transfer-Encoding: base64\r\n"
                        "Content-Disposition: attachment; filename=\"smime.p7s\"\r\n"
                        "Content-Description: S/MIME Cryptographic Signature\r\n\r\n",
                        boundary);

    if (st == KYSO_OK)
        st = kyso_base64_encode(out, (const unsigned char *)der->data, der->len);
    if (st == KYSO_OK)
        st = kyso_buf_printf(out, "\r\n--%s--\r\n", boundary);
    return st;
}

/* The entity to sign: the message's Content-* fields and its body. */
static kyso_status build_entity(kyso_buf *entity, const kyso_entity *msg, int whole)
{
    size_t pos = 0;
    kyso_field f;
    int has_ctype = 0;
    kyso_status st;

    /* When wrapping (whole), the signed message travels as its Content-*
     * fields and body, the way clients nest it. */
    while (kyso_field_next(msg, &pos, &f)) {
        if (!is_content_field(&f))
            continue;
        if (kyso_field_is(&f, "Content-Type"))
            has_ctype = 1;
        if ((st = kyso_buf_append(entity, f.field, f.field_len)) != KYSO_OK)
            return st;
    }
    if (!whole && !has_ctype) {
        /* RFC 2045's default is us-ascii; 8-bit text without a label is
         * taken as UTF-8, what the deployment's clients write. */
        st = kyso_buf_printf(entity, "Content-Type: text/plain; charset=%s\r\n",
                             kyso_has_8bit(msg->body, msg->body_len) ? "utf-8" : "us-ascii");
        if (st != KYSO_OK)
            return st;
    }
    if ((st = kyso_buf_append(entity, "\r\n", 2)) != KYSO_OK)
        return st;
    return kyso_buf_append(entity, msg->body, msg->body_len);
}

static kyso_status emit_outer_headers(kyso_buf *out, const kyso_entity *msg, const char *boundary,
                                      const char *micalg)
{
    size_t pos = 0;
    kyso_field f;
    kyso_status st;

    while (kyso_field_next(msg, &pos, &f)) {
        if (is_content_field(&f) || kyso_field_is(&f, "MIME-Version"))
            continue;
        if ((st = kyso_canon_crlf(out, f.field, f.field_len)) != KYSO_OK)
            return st;
        if (f.field[f.field_len - 1] != '\n' && (st = kyso_buf_append(out, "\r\n", 2)) != KYSO_OK)
            return st;
    }
    return kyso_buf_printf(
        out,
        "MIME-Version: 1.0\r\n"
        "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\";"
        "\r\n\tmicalg=%s; boundary=\"%s\"\r\n\r\n"
        "This is an S/MIME signed message.\r\n\r\n"
        "--%s\r\n",
        micalg, boundary, boundary);
}

static kyso_status sign_new(kyso_buf *out, const kyso_signer *s, const kyso_entity *msg, int whole)
{
    kyso_buf entity = KYSO_BUF_INIT, safe = KYSO_BUF_INIT, der = KYSO_BUF_INIT;
    char boundary[64];
    kyso_status st;

    if ((st = build_entity(&entity, msg, whole)) != KYSO_OK)
        goto out;
    if (whole)
        st = kyso_buf_append(&safe, entity.data, entity.len);
    else
        st = kyso_entity_make_7bit(&safe, entity.data, entity.len, 0);
    if (st != KYSO_OK)
        goto out;
    if ((st = cms_sign_detached(&der, s, safe.data, safe.len)) != KYSO_OK)
        goto out;
    if ((st = new_boundary(boundary, sizeof(boundary), safe.data, safe.len)) != KYSO_OK)
        goto out;
    if ((st = emit_outer_headers(out, msg, boundary, "sha-256")) != KYSO_OK)
        goto out;
    if ((st = kyso_buf_append(out, safe.data, safe.len)) != KYSO_OK)
        goto out;
    st = emit_signature_part(out, boundary, &der);
out:
    kyso_buf_free(&entity);
    kyso_buf_free(&safe);
    kyso_buf_free(&der);
    return st;
}

/* The messageDigest signed attribute of si equals the digest of content. */
static int signer_digest_matches(CMS_SignerInfo *si, const EVP_MD *md, const char *content,
                                 size_t len)
{
    unsigned char dig[EVP_MAX_MD_SIZE];
    unsigned int diglen = 0;
    int idx = CMS_signed_get_attr_by_NID(si, NID_pkcs9_messageDigest, -1);
    X509_ATTRIBUTE *attr;
    ASN1_TYPE *t;

    if (idx < 0 || (attr = CMS_signed_get_attr(si, idx)) == NULL)
        return 0;
    if ((t = X509_ATTRIBUTE_get0_type(attr, 0)) == NULL || t->type != V_ASN1_OCTET_STRING)
        return 0;
    if (!EVP_Digest(content, len, dig, &diglen, md, NULL))
        return 0;
    return (unsigned int)t->value.octet_string->length == diglen &&
           memcmp(t->value.octet_string->data, dig, diglen) == 0;
}

static int cms_has_cert(CMS_ContentInfo *cms, X509 *x)
{
    STACK_OF(X509) *certs = CMS_get1_certs(cms);
    int found = 0;

    for (int i = 0; certs && i < sk_X509_num(certs) && !found; i++)
        found = X509_cmp(sk_X509_value(certs, i), x) == 0;
    sk_X509_pop_free(certs, X509_free);
    return found;
}

/* Whether an existing SignerInfo is intact over content: signed attributes
 * with a SHA-2 messageDigest equal to the content's, and a signature over
 * them that verifies with the certificate the SignedData carries. */
static const EVP_MD *intact_signer(CMS_SignerInfo *si, const char *content, size_t len)
{
    X509_ALGOR *dig = NULL;
    X509 *cert = NULL;
    const EVP_MD *md;

    CMS_SignerInfo_get0_algs(si, NULL, &cert, &dig, NULL);
    md = dig ? EVP_get_digestbyobj(dig->algorithm) : NULL;
    if (md == NULL || micalg_name(md) == NULL || cert == NULL ||
        CMS_signed_get_attr_count(si) < 0 || !signer_digest_matches(si, md, content, len) ||
        CMS_SignerInfo_verify(si) != 1) {
        ERR_clear_error();
        return NULL;
    }
    return md;
}

/* Adds our SignerInfo to cms, whose existing signers must all cover content.
 * Our messageDigest is computed here from the content itself, never copied
 * from another SignerInfo: co-signing must vouch for these bytes and no
 * others. */
static kyso_status add_cosigner(CMS_ContentInfo *cms, const kyso_signer *s, const char *content,
                                size_t len)
{
    STACK_OF(CMS_SignerInfo) *sis = CMS_get0_SignerInfos(cms);
    STACK_OF(X509) *certs = CMS_get1_certs(cms);
    int n = sis ? sk_CMS_SignerInfo_num(sis) : 0;
    unsigned char dig[EVP_MAX_MD_SIZE];
    unsigned int diglen = 0;
    const EVP_MD *md = NULL;
    CMS_SignerInfo *si;
    EVP_PKEY *key;
    kyso_status st = KYSO_ERR_POLICY;

    if (certs)
        CMS_set1_signers_certs(cms, certs, 0);
    ERR_clear_error();
    for (int i = 0; i < n; i++) {
        const EVP_MD *m = intact_signer(sk_CMS_SignerInfo_value(sis, i), content, len);

        if (m == NULL) {
            kyso_log(KYSO_LOG_ERR, NULL, "cosign",
                     "error=\"existing signature %d does not verify over the signed content "
                     "(or lacks its certificate or a SHA-2 digest); refusing to co-sign\"",
                     i + 1);
            goto out;
        }
        if (md == NULL)
            md = m;
    }
    if (md == NULL) {
        kyso_log(KYSO_LOG_ERR, NULL, "cosign", "error=\"SignedData has no signer to join\"");
        goto out;
    }
    /* S/MIME signs id-data; our contentType attribute must say what is signed. */
    if (OBJ_obj2nid(CMS_get0_eContentType(cms)) != NID_pkcs7_data) {
        kyso_log(KYSO_LOG_ERR, NULL, "cosign", "error=\"signed content is not id-data\"");
        goto out;
    }
    if (!EVP_Digest(content, len, dig, &diglen, md, NULL)) {
        st = KYSO_ERR_CRYPTO;
        goto out;
    }
    if ((key = kyso_keystore_acquire(s->ks)) == NULL) {
        st = KYSO_ERR_KEY;
        goto out;
    }
    si = CMS_add1_signer(cms, s->cert, key, md,
                         CMS_BINARY | CMS_CADES | CMS_PARTIAL |
                             (cms_has_cert(cms, s->cert) ? CMS_NOCERTS : 0));
    if (si == NULL ||
        !CMS_signed_add1_attr_by_NID(si, NID_pkcs9_contentType, V_ASN1_OBJECT,
                                     OBJ_nid2obj(NID_pkcs7_data), -1) ||
        !CMS_signed_add1_attr_by_NID(si, NID_pkcs9_messageDigest, V_ASN1_OCTET_STRING, dig,
                                     (int)diglen)) {
        kyso_keystore_release(s->ks);
        kyso_log_openssl(KYSO_LOG_ERR, NULL, "cosign");
        st = KYSO_ERR_CRYPTO;
        goto out;
    }
    if (CMS_SignerInfo_sign(si) != 1) {
        kyso_keystore_release(s->ks);
        kyso_log_openssl(KYSO_LOG_ERR, NULL, "cosign");
        st = KYSO_ERR_KEY; /* the token is the usual reason a signature fails */
        goto out;
    }
    kyso_keystore_release(s->ks);
    st = KYSO_OK;
    for (int i = 0; i < sk_X509_num(s->chain) && st == KYSO_OK; i++) {
        X509 *x = sk_X509_value(s->chain, i);

        if (!cms_has_cert(cms, x) && !CMS_add1_cert(cms, x))
            st = KYSO_ERR_CRYPTO;
    }
out:
    sk_X509_pop_free(certs, X509_free);
    return st;
}

static CMS_ContentInfo *signed_data_of(const char *b64, size_t len, int want_content)
{
    kyso_buf der = KYSO_BUF_INIT;
    CMS_ContentInfo *cms = NULL;
    const unsigned char *p;

    if (kyso_base64_decode(&der, b64, len) == KYSO_OK) {
        p = (const unsigned char *)der.data;
        cms = d2i_CMS_ContentInfo(NULL, &p, (long)der.len);
    }
    kyso_buf_free(&der);
    if (cms && (OBJ_obj2nid(CMS_get0_type(cms)) != NID_pkcs7_signed ||
                (*CMS_get0_content(cms) != NULL) != want_content)) {
        CMS_ContentInfo_free(cms);
        cms = NULL;
    }
    ERR_clear_error();
    return cms;
}

/* Adds our SignerInfo to the SignedData of a multipart/signed message (the
 * signed part stays byte for byte, only the signature part changes) or of an
 * opaque application/pkcs7-mime one (the body is re-encoded). */
static kyso_status cosign(kyso_buf *out, const kyso_signer *s, const kyso_entity *msg,
                          const kyso_ctype *ct)
{
    int opaque = strcmp(ct->type, "multipart") != 0;
    kyso_span parts[3];
    size_t nparts = 0;
    int closed = 0;
    kyso_entity sigpart;
    kyso_buf newder = KYSO_BUF_INIT;
    CMS_ContentInfo *cms = NULL;
    const char *content;
    size_t content_len;
    kyso_status st = KYSO_ERR_PARSE;

    if (opaque) {
        cms = signed_data_of(msg->body, msg->body_len, 1);
        if (cms == NULL) {
            kyso_log(KYSO_LOG_ERR, NULL, "cosign",
                     "error=\"body is not a base64 SignedData with content\"");
            goto out;
        }
        content = (const char *)(*CMS_get0_content(cms))->data;
        content_len = (size_t)(*CMS_get0_content(cms))->length;
    } else {
        if (kyso_multipart_split(msg->body, msg->body_len, ct->boundary, parts, 3, &nparts,
                                 &closed) != KYSO_OK ||
            nparts != 2) {
            kyso_log(KYSO_LOG_ERR, NULL, "cosign",
                     "error=\"multipart/signed must have two parts\"");
            goto out;
        }
        kyso_entity_split(&sigpart, parts[1].p, parts[1].len);
        if ((cms = signed_data_of(sigpart.body, sigpart.body_len, 0)) == NULL) {
            kyso_log(KYSO_LOG_ERR, NULL, "cosign",
                     "error=\"existing signature is not a detached SignedData\"");
            goto out;
        }
        content = parts[0].p;
        content_len = parts[0].len;
    }
    if ((st = add_cosigner(cms, s, content, content_len)) != KYSO_OK)
        goto out;
    if ((st = der_of(&newder, cms)) != KYSO_OK)
        goto out;
    if ((st = kyso_buf_append(out, msg->hdr, msg->hdr_len)) != KYSO_OK ||
        (st = kyso_buf_append(out, "\r\n", 2)) != KYSO_OK)
        goto out;
    if (opaque) {
        st = kyso_base64_encode(out, (const unsigned char *)newder.data, newder.len);
        goto out;
    }
    /* Everything up to the end of the signed part stays byte for byte. */
    if ((st = kyso_buf_append(out, msg->body, (size_t)(parts[0].p + parts[0].len - msg->body))) !=
        KYSO_OK)
        goto out;
    st = emit_signature_part(out, ct->boundary, &newder);
out:
    kyso_buf_free(&newder);
    CMS_ContentInfo_free(cms);
    return st;
}

static int is_signed(const kyso_ctype *ct)
{
    if (strcmp(ct->type, "multipart") == 0 && strcmp(ct->subtype, "signed") == 0)
        return 1;
    if (strcmp(ct->type, "application") == 0 &&
        (strcmp(ct->subtype, "pkcs7-mime") == 0 || strcmp(ct->subtype, "x-pkcs7-mime") == 0))
        return 1;
    return 0;
}

static int is_smime_opaque(const kyso_ctype *ct)
{
    return strcmp(ct->type, "application") == 0 &&
           (strcmp(ct->subtype, "pkcs7-mime") == 0 || strcmp(ct->subtype, "x-pkcs7-mime") == 0) &&
           (ct->smime_type == NULL || strcmp(ct->smime_type, "signed-data") == 0);
}

static int is_smime_detached(const kyso_ctype *ct)
{
    return strcmp(ct->subtype, "signed") == 0 && ct->protocol && ct->boundary &&
           (strcmp(ct->protocol, "application/pkcs7-signature") == 0 ||
            strcmp(ct->protocol, "application/x-pkcs7-signature") == 0);
}

kyso_status kyso_sign_message(kyso_buf *out, kyso_sign_outcome *what, const kyso_signer *s,
                              const char *msg, size_t len, kyso_if_signed mode)
{
    kyso_buf canon = KYSO_BUF_INIT;
    kyso_entity e;
    kyso_ctype ct;
    kyso_status st;
    kyso_sign_outcome done = KYSO_SIGNED_NEW;

    memset(&ct, 0, sizeof(ct));
    if (len > KYSO_DEFAULT_MAX_MESSAGE) {
        st = KYSO_ERR_TOO_BIG;
        goto out;
    }
    /* A signature no recipient could accept is refused, not sent. */
    if (X509_cmp_current_time(X509_get0_notAfter(s->cert)) <= 0 ||
        X509_cmp_current_time(X509_get0_notBefore(s->cert)) >= 0) {
        kyso_log(KYSO_LOG_ERR, NULL, "sign",
                 "error=\"signing certificate is expired or not yet valid\"");
        /* The identity cannot sign until an admin installs a new
         * certificate; mail waits for that rather than bouncing. */
        st = KYSO_ERR_CERT;
        goto out;
    }
    /* Not canonicalised yet: a binary part must keep its bytes, so line
     * ends are converted part by part while the entity is made 7-bit. */
    kyso_entity_split(&e, msg, len);
    if (e.hdr_len == 0) {
        kyso_log(KYSO_LOG_ERR, NULL, "sign", "error=\"message has no header\"");
        st = KYSO_ERR_PARSE;
        goto out;
    }
    if ((st = kyso_entity_ctype(&ct, &e)) != KYSO_OK) {
        kyso_log(KYSO_LOG_ERR, NULL, "sign", "error=\"malformed Content-Type\"");
        goto out;
    }
    if (!is_signed(&ct)) {
        st = sign_new(out, s, &e, 0);
        goto out;
    }
    /* Signed content is 7-bit lines by definition; canonical form is what
     * its signature covers. */
    if ((st = kyso_canon_crlf(&canon, msg, len)) != KYSO_OK)
        goto out;
    kyso_entity_split(&e, canon.data, canon.len);
    switch (mode) {
    case KYSO_IF_SIGNED_SKIP:
        done = KYSO_SIGNED_SKIPPED;
        st = kyso_buf_append(out, canon.data, canon.len);
        break;
    case KYSO_IF_SIGNED_COSIGN:
        if (!is_smime_detached(&ct) && !is_smime_opaque(&ct)) {
            kyso_log(KYSO_LOG_ERR, NULL, "cosign",
                     "error=\"only S/MIME signed-data can be co-signed; use wrap\"");
            st = KYSO_ERR_UNSUPPORTED;
            break;
        }
        done = KYSO_SIGNED_COSIGNED;
        st = cosign(out, s, &e, &ct);
        break;
    case KYSO_IF_SIGNED_WRAP:
        st = sign_new(out, s, &e, 1);
        break;
    }
out:
    if (st != KYSO_OK)
        kyso_buf_reset(out);
    else if (what)
        *what = done;
    kyso_ctype_clear(&ct);
    kyso_buf_free(&canon);
    return st;
}
