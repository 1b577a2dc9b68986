/* keystore_file.c - "file:PATH" keys: a PEM private key on disk, for development and tests. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/pem.h>

#include "internal.h"

static kyso_status file_open(void **state, const char *uri, const char *module, const char *pin_in)
{
    const char *path = uri + strlen("file:");
    char pin[256] = "";
    EVP_PKEY *k;
    FILE *f;

    /* file:///abs/path and file:/abs/path are both accepted. */
    if (strncmp(path, "//", 2) == 0)
        path += 2;
    if (pin_in)
        snprintf(pin, sizeof(pin), "%s", pin_in);
    if ((f = fopen(path, "r")) == NULL) {
        kyso_log(KYSO_LOG_ERR, NULL, "keystore", "kind=file error=\"cannot open key\" path=%s",
                 path);
        return KYSO_ERR_KEY;
    }
    k = PEM_read_PrivateKey(f, NULL, NULL, pin[0] ? pin : NULL);
    fclose(f);
    OPENSSL_cleanse(pin, sizeof(pin));
    if (k == NULL) {
        kyso_log(KYSO_LOG_ERR, NULL, "keystore",
                 "kind=file error=\"not a PEM private key\" path=%s", path);
        kyso_log_openssl(KYSO_LOG_ERR, NULL, "keystore");
        return KYSO_ERR_KEY;
    }
    *state = k;
    return KYSO_OK;
}

static EVP_PKEY *file_key(void *state)
{
    return state;
}

static void file_close(void *state)
{
    EVP_PKEY_free(state);
}

const kyso_keystore_ops kyso_keystore_file_ops = {"file", file_open, file_key, file_close};
