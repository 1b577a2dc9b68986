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

#include <openssl/crypto.h>

#include "internal.h"

struct kyso_keystore {
    const kyso_keystore_ops *ops;
    void *state;
    char *uri;
    char *module;
    char *pin_file;
    /* Read once, while the daemon is still root: a reload after dropping
     * privileges must not need the PIN file again. */
    char pin[256];
    int have_pin;
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

/* PINs read so far, by file: a token reopened or added by a reload after
 * the daemon dropped root can no longer read a root-only PIN file. */
typedef struct pin_entry {
    struct pin_entry *next;
    char *path;
    char pin[256];
} pin_entry;

static pthread_mutex_t pins_lock = PTHREAD_MUTEX_INITIALIZER;
static pin_entry *pins;

static int pin_lookup(const char *path, char *out, size_t outlen, const char *fresh)
{
    pin_entry *e;
    int found = 0;

    pthread_mutex_lock(&pins_lock);
    for (e = pins; e && strcmp(e->path, path) != 0; e = e->next)
        ;
    if (fresh) {
        if (e == NULL && (e = calloc(1, sizeof(*e))) != NULL) {
            if ((e->path = strdup(path)) == NULL) {
                free(e);
                e = NULL;
            } else {
                e->next = pins;
                pins = e;
            }
        }
        if (e)
            snprintf(e->pin, sizeof(e->pin), "%s", fresh);
    } else if (e) {
        snprintf(out, outlen, "%s", e->pin);
        found = 1;
    }
    pthread_mutex_unlock(&pins_lock);
    return found;
}

__attribute__((destructor)) static void pins_free(void)
{
    while (pins) {
        pin_entry *e = pins;

        pins = e->next;
        OPENSSL_cleanse(e->pin, sizeof(e->pin));
        free(e->path);
        free(e);
    }
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
    if (pin_file) {
        if (kyso_read_pin(ks->pin, sizeof(ks->pin), pin_file) == KYSO_OK) {
            ks->have_pin = 1;
            pin_lookup(pin_file, NULL, 0, ks->pin);
        } else if (pin_lookup(pin_file, ks->pin, sizeof(ks->pin), NULL)) {
            ks->have_pin = 1;
        } else {
            kyso_log(KYSO_LOG_ERR, NULL, "keystore", "error=\"cannot read PIN file\" path=%s",
                     pin_file);
        }
    }
    *out = ks;
    return KYSO_OK;
}

static kyso_status backend_open(kyso_keystore *ks, void **state)
{
    /* A PIN file that could not be read gives no PIN: login then fails
     * with a clear log line instead of trying an empty PIN. */
    if (ks->pin_file && !ks->have_pin)
        return KYSO_ERR_KEY;
    return ks->ops->open(state, ks->uri, ks->module, ks->have_pin ? ks->pin : NULL);
}

kyso_status kyso_keystore_open(kyso_keystore **out, const char *uri, const char *module,
                               const char *pin_file)
{
    kyso_keystore *ks = NULL;
    kyso_status st;

    if ((st = kyso_keystore_new(&ks, uri, module, pin_file)) != KYSO_OK)
        return st;
    if ((st = backend_open(ks, &ks->state)) != KYSO_OK) {
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
    st = backend_open(ks, &fresh);
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
    OPENSSL_cleanse(ks->pin, sizeof(ks->pin));
    free(ks);
}
