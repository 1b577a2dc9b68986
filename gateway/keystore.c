/*
 * keystore.c - a private key behind an interface, selected by URI.
 *
 * "pkcs11:..." goes to the PKCS#11 backend (RFC 7512), "file:PATH" to a PEM
 * key for development. The store keeps the backend's state behind a
 * read-write lock: signers share the key under the read lock, and
 * kyso_keystore_reload() swaps in a freshly opened backend under the write
 * lock, so a lost token session can be recovered without stopping signers
 * for longer than one reload.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct kyso_keystore {
    const kyso_keystore_ops *ops;
    void *state;
    char *uri;
    char *module;
    char *pin_file;
    pthread_rwlock_t lock;
};

kyso_status kyso_read_pin(char *out, size_t outlen, const char *path)
{
    FILE *f = fopen(path, "r");
    size_t n;

    if (f == NULL)
        return KYSO_ERR_IO;
    if (fgets(out, (int)outlen, f) == NULL)
        out[0] = '\0';
    fclose(f);
    n = strlen(out);
    while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == '\r'))
        out[--n] = '\0';
    return KYSO_OK;
}

static const kyso_keystore_ops *ops_for(const char *uri)
{
    if (strncmp(uri, "pkcs11:", 7) == 0)
        return &kyso_keystore_pkcs11_ops;
    if (strncmp(uri, "file:", 5) == 0)
        return &kyso_keystore_file_ops;
    return NULL;
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

kyso_status kyso_keystore_new(kyso_keystore **out, const char *uri, const char *module,
                              const char *pin_file)
{
    kyso_keystore *ks = NULL;

    *out = NULL;
    if (uri == NULL || ops_for(uri) == NULL)
        return KYSO_ERR_USAGE;
    if ((ks = calloc(1, sizeof(*ks))) == NULL)
        return KYSO_ERR_NOMEM;
    ks->ops = ops_for(uri);
    ks->uri = strdup(uri);
    ks->module = dup_or_null(module);
    ks->pin_file = dup_or_null(pin_file);
    if (ks->uri == NULL || (module && !ks->module) || (pin_file && !ks->pin_file)) {
        free(ks->uri);
        free(ks->module);
        free(ks->pin_file);
        free(ks);
        return KYSO_ERR_NOMEM;
    }
    pthread_rwlock_init(&ks->lock, NULL);
    *out = ks;
    return KYSO_OK;
}

kyso_status kyso_keystore_open(kyso_keystore **out, const char *uri, const char *module,
                               const char *pin_file)
{
    kyso_keystore *ks = NULL;
    kyso_status st;

    if ((st = kyso_keystore_new(&ks, uri, module, pin_file)) != KYSO_OK)
        return st;
    if ((st = ks->ops->open(&ks->state, ks->uri, ks->module, ks->pin_file)) != KYSO_OK) {
        kyso_keystore_free(ks);
        return st;
    }
    *out = ks;
    return KYSO_OK;
}

kyso_status kyso_keystore_reload(kyso_keystore *ks)
{
    void *fresh = NULL;
    kyso_status st;

    /* Close first: libp11 cannot hold the same module twice in a process. */
    pthread_rwlock_wrlock(&ks->lock);
    if (ks->state)
        ks->ops->close(ks->state);
    ks->state = NULL;
    st = ks->ops->open(&fresh, ks->uri, ks->module, ks->pin_file);
    if (st == KYSO_OK)
        ks->state = fresh;
    pthread_rwlock_unlock(&ks->lock);
    return st;
}

EVP_PKEY *kyso_keystore_acquire(kyso_keystore *ks)
{
    EVP_PKEY *k;

    pthread_rwlock_rdlock(&ks->lock);
    k = ks->state ? ks->ops->key(ks->state) : NULL;
    if (k == NULL)
        pthread_rwlock_unlock(&ks->lock);
    return k;
}

void kyso_keystore_release(kyso_keystore *ks)
{
    pthread_rwlock_unlock(&ks->lock);
}

const char *kyso_keystore_kind(const kyso_keystore *ks)
{
    return ks->ops->kind;
}

void kyso_keystore_free(kyso_keystore *ks)
{
    if (ks == NULL)
        return;
    if (ks->state)
        ks->ops->close(ks->state);
    pthread_rwlock_destroy(&ks->lock);
    free(ks->uri);
    free(ks->module);
    free(ks->pin_file);
    free(ks);
}
