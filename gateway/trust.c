/*
 * trust.c - what a verification trusts: anchors, extra intermediates, CRLs
 * and the clock. Built once (per config snapshot in the milter) and then only
 * read, so one kyso_trust serves any number of threads.
 */
#include <stdio.h>
#include <stdlib.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "internal.h"

struct kyso_trust {
    X509_STORE *store;
    STACK_OF(X509) * untrusted;
    STACK_OF(X509_CRL) * crls;
    time_t at;
    int anchors;
    kyso_revoker *revoker;
};

kyso_status kyso_trust_new(kyso_trust **out)
{
    kyso_trust *t = calloc(1, sizeof(*t));

    *out = NULL;
    if (t == NULL)
        return KYSO_ERR_NOMEM;
    t->store = X509_STORE_new();
    t->untrusted = sk_X509_new_null();
    t->crls = sk_X509_CRL_new_null();
    if (!t->store || !t->untrusted || !t->crls) {
        kyso_trust_free(t);
        return KYSO_ERR_NOMEM;
    }
    *out = t;
    return KYSO_OK;
}

void kyso_trust_free(kyso_trust *t)
{
    if (t == NULL)
        return;
    X509_STORE_free(t->store);
    sk_X509_pop_free(t->untrusted, X509_free);
    sk_X509_CRL_pop_free(t->crls, X509_CRL_free);
    free(t);
}

STACK_OF(X509) * kyso_load_certs(const char *pem_file)
{
    STACK_OF(X509) *sk = sk_X509_new_null();
    FILE *f = fopen(pem_file, "r");
    X509 *x;

    if (f == NULL || sk == NULL)
        goto bad;
    while ((x = PEM_read_X509(f, NULL, NULL, NULL)) != NULL) {
        if (!sk_X509_push(sk, x)) {
            X509_free(x);
            goto bad;
        }
    }
    ERR_clear_error(); /* the read that ends the loop always fails */
    fclose(f);
    if (sk_X509_num(sk) == 0) {
        sk_X509_free(sk);
        return NULL;
    }
    return sk;
bad:
    if (f)
        fclose(f);
    sk_X509_pop_free(sk, X509_free);
    return NULL;
}

kyso_status kyso_trust_add_anchors(kyso_trust *t, const char *pem_file)
{
    STACK_OF(X509) *sk = kyso_load_certs(pem_file);
    kyso_status st = KYSO_OK;

    if (sk == NULL)
        return KYSO_ERR_IO;
    for (int i = 0; i < sk_X509_num(sk); i++)
        if (!X509_STORE_add_cert(t->store, sk_X509_value(sk, i)))
            st = KYSO_ERR_CRYPTO;
    t->anchors += sk_X509_num(sk);
    sk_X509_pop_free(sk, X509_free);
    return st;
}

kyso_status kyso_trust_add_untrusted(kyso_trust *t, const char *pem_file)
{
    STACK_OF(X509) *sk = kyso_load_certs(pem_file);
    X509 *x;

    if (sk == NULL)
        return KYSO_ERR_IO;
    while ((x = sk_X509_shift(sk)) != NULL)
        if (!sk_X509_push(t->untrusted, x)) {
            X509_free(x);
            sk_X509_pop_free(sk, X509_free);
            return KYSO_ERR_NOMEM;
        }
    sk_X509_free(sk);
    return KYSO_OK;
}

kyso_status kyso_trust_add_crl(kyso_trust *t, const char *file)
{
    FILE *f = fopen(file, "rb");
    X509_CRL *crl = NULL;
    int n = 0;

    if (f == NULL)
        return KYSO_ERR_IO;
    while ((crl = PEM_read_X509_CRL(f, NULL, NULL, NULL)) != NULL) {
        if (!sk_X509_CRL_push(t->crls, crl)) {
            X509_CRL_free(crl);
            fclose(f);
            return KYSO_ERR_NOMEM;
        }
        n++;
    }
    ERR_clear_error();
    if (n == 0) {
        rewind(f);
        crl = d2i_X509_CRL_fp(f, NULL);
        if (crl && sk_X509_CRL_push(t->crls, crl))
            n = 1;
        else
            X509_CRL_free(crl);
    }
    fclose(f);
    return n ? KYSO_OK : KYSO_ERR_PARSE;
}

void kyso_trust_set_time(kyso_trust *t, time_t at)
{
    t->at = at;
}

X509_STORE *kyso_trust_store(const kyso_trust *t)
{
    return t->store;
}

STACK_OF(X509) * kyso_trust_untrusted(const kyso_trust *t)
{
    return t->untrusted;
}

STACK_OF(X509_CRL) * kyso_trust_crls(const kyso_trust *t)
{
    return t->crls;
}

time_t kyso_trust_time(const kyso_trust *t)
{
    return t->at;
}

void kyso_trust_set_revoker(kyso_trust *t, kyso_revoker *r)
{
    t->revoker = r;
}

kyso_revoker *kyso_trust_revoker(const kyso_trust *t)
{
    return t->revoker;
}
