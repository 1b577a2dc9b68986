/* cert.c - the facts about a certificate that reports and From matching need. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/bio.h>
#include <openssl/x509v3.h>

#include "internal.h"

char *kyso_name_utf8(const X509_NAME *name)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *s = NULL, *data;
    long n;

    if (b == NULL)
        return NULL;
    /* RFC 2253 order and escaping, but UTF-8 kept as UTF-8 for Vietnamese names. */
    if (X509_NAME_print_ex(b, name, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) >= 0) {
        n = BIO_get_mem_data(b, &data);
        if ((s = malloc((size_t)n + 1)) != NULL) {
            memcpy(s, data, (size_t)n);
            s[n] = '\0';
        }
    }
    BIO_free(b);
    return s;
}

char *kyso_serial_hex(const X509 *x)
{
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
    char *hex = bn ? BN_bn2hex(bn) : NULL, *s = NULL;

    BN_free(bn);
    if (hex)
        s = strdup(hex);
    OPENSSL_free(hex);
    return s;
}

char *kyso_name_entry(const X509_NAME *name, int nid)
{
    int idx = X509_NAME_get_index_by_NID(name, nid, -1);
    unsigned char *utf8 = NULL;
    char *s = NULL;
    int n;

    if (idx < 0)
        return NULL;
    n = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, idx)));
    if (n >= 0 && memchr(utf8, '\0', (size_t)n) == NULL)
        s = strndup((const char *)utf8, (size_t)n);
    OPENSSL_free(utf8);
    return s;
}

/* Calls fn for each address the certificate holds until fn returns non-zero. */
static int each_email(const X509 *x, int (*fn)(const char *addr, size_t len, void *arg), void *arg)
{
    GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    int found = 0, had_san_email = 0;

    for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens) && !found; i++) {
        GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);

        if (g->type != GEN_EMAIL)
            continue;
        had_san_email = 1;
        found = fn((const char *)ASN1_STRING_get0_data(g->d.rfc822Name),
                   (size_t)ASN1_STRING_length(g->d.rfc822Name), arg);
    }
    GENERAL_NAMES_free(gens);
    /* RFC 8550 3.1: emailAddress in the subject only when the SAN has none. */
    if (!found && !had_san_email) {
        const X509_NAME *subj = X509_get_subject_name(x);
        int idx = -1;

        while (!found &&
               (idx = X509_NAME_get_index_by_NID(subj, NID_pkcs9_emailAddress, idx)) >= 0) {
            ASN1_STRING *d = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, idx));

            found = fn((const char *)ASN1_STRING_get0_data(d), (size_t)ASN1_STRING_length(d), arg);
        }
    }
    return found;
}

static int match_addr(const char *addr, size_t len, void *arg)
{
    const char *want = arg;

    /* Local parts are compared case-insensitively too, as every
     * mail system in the deployment treats them. */
    return strlen(want) == len && memchr(addr, '\0', len) == NULL &&
           strncasecmp(addr, want, len) == 0;
}

int kyso_cert_has_email(const X509 *x, const char *addr)
{
    return addr != NULL && each_email(x, match_addr, (void *)addr);
}

static int take_first(const char *addr, size_t len, void *arg)
{
    char **out = arg;

    if (memchr(addr, '\0', len) != NULL)
        return 0;
    *out = strndup(addr, len);
    return 1;
}

char *kyso_cert_first_email(const X509 *x)
{
    char *first = NULL;

    each_email(x, take_first, &first);
    return first;
}
