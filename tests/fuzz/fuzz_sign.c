/* libFuzzer target: any byte sequence as an outgoing message through the sign
 * input path (canonicalisation, MIME walk, 7-bit rewrite, CMS signing with a
 * throwaway in-memory key). */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <openssl/pem.h>
#include <openssl/x509.h>

#include "kyso.h"

static kyso_keystore *ks;
static kyso_signer *signer;

/* A self-signed key and certificate written to temporary files, so the
 * signer is built through the same public calls the CLI uses. */
static void setup(void)
{
    char keypath[] = "/tmp/kyso-fuzz-key-XXXXXX", certpath[] = "/tmp/kyso-fuzz-cert-XXXXXX";
    char uri[64];
    EVP_PKEY *k = EVP_RSA_gen(2048);
    X509 *x = X509_new();
    int kfd = mkstemp(keypath), cfd = mkstemp(certpath);
    FILE *kf = fdopen(kfd, "w"), *cf = fdopen(cfd, "w");

    if (!k || !x || !kf || !cf)
        abort();
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, k);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                               (const unsigned char *)"fuzz", -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    X509_sign(x, k, EVP_sha256());
    PEM_write_PrivateKey(kf, k, NULL, NULL, 0, NULL, NULL);
    PEM_write_X509(cf, x);
    fclose(kf);
    fclose(cf);
    snprintf(uri, sizeof(uri), "file:%s", keypath);
    if (kyso_keystore_open(&ks, uri, NULL, NULL) != KYSO_OK ||
        kyso_signer_new(&signer, ks, certpath, NULL) != KYSO_OK)
        abort();
    unlink(keypath);
    unlink(certpath);
    EVP_PKEY_free(k);
    X509_free(x);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    kyso_log_open("fuzz", 0, KYSO_LOG_NONE);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kyso_buf out = KYSO_BUF_INIT;

    if (signer == NULL)
        setup();
    if (size > 1 << 20)
        return 0;
    kyso_sign_message(&out, NULL, signer, (const char *)data, size, (kyso_if_signed)(size % 3));
    kyso_buf_free(&out);
    return 0;
}
