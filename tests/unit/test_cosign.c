/* Co-signing must vouch for the visible signed bytes and nothing else. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/cms.h>
#include <openssl/pem.h>

#include "internal.h"

static EVP_PKEY *key;
static X509 *cert;
static char keypath[64], certpath[64];
static kyso_keystore *ks;
static kyso_signer *signer;

static const char *visible = "Content-Type: text/plain\r\n\r\nSee you at the meeting.\r\n";
static const char *hidden = "Content-Type: text/plain\r\n\r\nPay 1,000,000,000 VND to 666.\r\n";

static int setup(void **state)
{
    FILE *f;
    char uri[80];

    key = EVP_RSA_gen(2048);
    cert = X509_new();
    ASN1_INTEGER_set(X509_get_serialNumber(cert), 7);
    X509_gmtime_adj(X509_getm_notBefore(cert), -60);
    X509_gmtime_adj(X509_getm_notAfter(cert), 3600);
    X509_set_pubkey(cert, key);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(cert), "CN", MBSTRING_ASC,
                               (const unsigned char *)"test", -1, -1, 0);
    X509_set_issuer_name(cert, X509_get_subject_name(cert));
    X509_sign(cert, key, EVP_sha256());
    strcpy(keypath, "/tmp/kyso-cosign-key-XXXXXX");
    strcpy(certpath, "/tmp/kyso-cosign-cert-XXXXXX");
    close(mkstemp(keypath));
    close(mkstemp(certpath));
    f = fopen(keypath, "w");
    PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    f = fopen(certpath, "w");
    PEM_write_X509(f, cert);
    fclose(f);
    snprintf(uri, sizeof(uri), "file:%s", keypath);
    assert_int_equal(kyso_keystore_open(&ks, uri, NULL, NULL), KYSO_OK);
    assert_int_equal(kyso_signer_new(&signer, ks, certpath, NULL), KYSO_OK);
    return 0;
}

static int teardown(void **state)
{
    kyso_signer_free(signer);
    kyso_keystore_free(ks);
    unlink(keypath);
    unlink(certpath);
    X509_free(cert);
    EVP_PKEY_free(key);
    return 0;
}

/* A SignerInfo over `content`, or with a messageDigest forced to cover `digest_of`. */
static void add_signer(CMS_ContentInfo *cms, const char *digest_of)
{
    unsigned char d[32];
    unsigned int dl;
    CMS_SignerInfo *si =
        CMS_add1_signer(cms, cert, key, EVP_sha256(), CMS_BINARY | CMS_PARTIAL | CMS_NOCERTS);

    assert_non_null(si);
    EVP_Digest(digest_of, strlen(digest_of), d, &dl, EVP_sha256(), NULL);
    assert_true(CMS_signed_add1_attr_by_NID(si, NID_pkcs9_contentType, V_ASN1_OBJECT,
                                            OBJ_nid2obj(NID_pkcs7_data), -1));
    assert_true(
        CMS_signed_add1_attr_by_NID(si, NID_pkcs9_messageDigest, V_ASN1_OCTET_STRING, d, (int)dl));
    assert_int_equal(CMS_SignerInfo_sign(si), 1);
}

static char *message_with(CMS_ContentInfo *cms)
{
    kyso_buf b = KYSO_BUF_INIT;
    unsigned char *der = NULL;
    int n = i2d_CMS_ContentInfo(cms, &der);

    kyso_buf_printf(&b,
                    "From: a@b.vn\r\nSubject: s\r\nMIME-Version: 1.0\r\nContent-Type: "
                    "multipart/signed; protocol=\"application/pkcs7-signature\"; "
                    "micalg=sha-256; boundary=\"BB\"\r\n\r\n--BB\r\n%s\r\n--BB\r\n"
                    "Content-Type: application/pkcs7-signature\r\n"
                    "Content-Transfer-Encoding: base64\r\n\r\n",
                    visible);
    kyso_base64_encode(&b, der, (size_t)n);
    kyso_buf_puts(&b, "\r\n--BB--\r\n");
    OPENSSL_free(der);
    return b.data;
}

static CMS_ContentInfo *signed_data(void)
{
    CMS_ContentInfo *cms = CMS_sign(NULL, NULL, NULL, NULL, CMS_DETACHED | CMS_PARTIAL);

    CMS_add1_cert(cms, cert);
    return cms;
}

static void test_cosign_refuses_a_signer_whose_digest_covers_hidden_content(void **state)
{
    CMS_ContentInfo *cms = signed_data();
    kyso_buf out = KYSO_BUF_INIT;
    char *msg;

    add_signer(cms, hidden); /* first: would be copied by CMS_REUSE_DIGEST */
    add_signer(cms, visible);
    msg = message_with(cms);
    assert_int_equal(kyso_sign_message(&out, NULL, signer, msg, strlen(msg), KYSO_IF_SIGNED_COSIGN),
                     KYSO_ERR_POLICY);
    assert_int_equal(out.len, 0);
    free(msg);
    CMS_ContentInfo_free(cms);
}

static void test_cosign_signs_the_digest_of_the_visible_content(void **state)
{
    CMS_ContentInfo *cms = signed_data(), *res;
    kyso_buf out = KYSO_BUF_INIT, der = KYSO_BUF_INIT;
    kyso_sign_outcome what;
    kyso_entity e, sig;
    kyso_span parts[3];
    size_t n;
    int closed;
    const unsigned char *p;
    unsigned char d[32];
    unsigned int dl;
    STACK_OF(CMS_SignerInfo) * sis;
    char *msg;

    add_signer(cms, visible);
    msg = message_with(cms);
    assert_int_equal(
        kyso_sign_message(&out, &what, signer, msg, strlen(msg), KYSO_IF_SIGNED_COSIGN), KYSO_OK);
    assert_int_equal(what, KYSO_SIGNED_COSIGNED);
    kyso_entity_split(&e, out.data, out.len);
    assert_int_equal(kyso_multipart_split(e.body, e.body_len, "BB", parts, 3, &n, &closed),
                     KYSO_OK);
    assert_int_equal(n, 2);
    assert_int_equal(parts[0].len, strlen(visible));
    kyso_entity_split(&sig, parts[1].p, parts[1].len);
    assert_int_equal(kyso_base64_decode(&der, sig.body, sig.body_len), KYSO_OK);
    p = (const unsigned char *)der.data;
    res = d2i_CMS_ContentInfo(NULL, &p, (long)der.len);
    assert_non_null(res);
    sis = CMS_get0_SignerInfos(res);
    assert_int_equal(sk_CMS_SignerInfo_num(sis), 2);
    EVP_Digest(visible, strlen(visible), d, &dl, EVP_sha256(), NULL);
    {
        CMS_SignerInfo *ours = sk_CMS_SignerInfo_value(sis, 1);
        X509_ATTRIBUTE *a = CMS_signed_get_attr(
            ours, CMS_signed_get_attr_by_NID(ours, NID_pkcs9_messageDigest, -1));
        ASN1_TYPE *t = X509_ATTRIBUTE_get0_type(a, 0);

        assert_int_equal(t->value.octet_string->length, (int)dl);
        assert_memory_equal(t->value.octet_string->data, d, dl);
    }
    CMS_ContentInfo_free(res);
    CMS_ContentInfo_free(cms);
    kyso_buf_free(&out);
    kyso_buf_free(&der);
    free(msg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cosign_refuses_a_signer_whose_digest_covers_hidden_content),
        cmocka_unit_test(test_cosign_signs_the_digest_of_the_visible_content),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
