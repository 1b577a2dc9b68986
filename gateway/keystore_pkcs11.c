/*
 * keystore_pkcs11.c - keys on a PKCS#11 token or HSM, through libp11.
 *
 * Addressed by an RFC 7512 URI: path attributes token, manufacturer, serial,
 * model, object, id, type; query attributes pin-source (file: only),
 * pin-value and module-path. The module is loaded and the user logged in
 * once per open; the key never leaves the token, OpenSSL reaches it through
 * the EVP_PKEY libp11 returns. PINs are wiped after login and never logged.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libp11.h>
#include <openssl/crypto.h>

#include "internal.h"

typedef struct {
    char *token, *manufacturer, *serial, *model, *object, *type;
    unsigned char id[128];
    size_t id_len;
    int has_id;
    char *pin_source, *pin_value, *module_path;
} p11_uri;

typedef struct {
    PKCS11_CTX *ctx;
    PKCS11_SLOT *slots;
    unsigned int nslots;
    int loaded; /* libp11 crashes unloading a module whose load failed */
    EVP_PKEY *key;
} p11_state;

static void uri_clear(p11_uri *u)
{
    free(u->token);
    free(u->manufacturer);
    free(u->serial);
    free(u->model);
    free(u->object);
    free(u->type);
    free(u->pin_source);
    if (u->pin_value)
        OPENSSL_cleanse(u->pin_value, strlen(u->pin_value));
    free(u->pin_value);
    free(u->module_path);
    memset(u, 0, sizeof(*u));
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Percent-decodes [p, p+n) into a new string; *outlen gets the byte count. */
static char *pct_decode(const char *p, size_t n, size_t *outlen)
{
    char *d = malloc(n + 1);
    size_t j = 0;

    if (d == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '%') {
            int hi, lo;

            if (i + 2 >= n)
                goto bad;
            hi = hexval((unsigned char)p[i + 1]);
            lo = hexval((unsigned char)p[i + 2]);
            if (hi < 0 || lo < 0)
                goto bad;
            d[j++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            d[j++] = p[i];
        }
    }
    d[j] = '\0';
    if (outlen)
        *outlen = j;
    return d;
bad:
    free(d);
    return NULL;
}

static kyso_status uri_set(char **slot, const char *v, size_t n)
{
    if (*slot != NULL)
        return KYSO_ERR_PARSE; /* RFC 7512: an attribute appears once */
    *slot = pct_decode(v, n, NULL);
    return *slot ? KYSO_OK : KYSO_ERR_PARSE;
}

static kyso_status uri_attr(p11_uri *u, const char *a, size_t n, int query)
{
    const char *eq = memchr(a, '=', n);
    size_t klen, vlen;
    const char *v;

    if (eq == NULL)
        return n == 0 ? KYSO_OK : KYSO_ERR_PARSE;
    klen = (size_t)(eq - a);
    v = eq + 1;
    vlen = n - klen - 1;
#define KEY_IS(s) (klen == strlen(s) && memcmp(a, s, klen) == 0)
    if (!query) {
        if (KEY_IS("token"))
            return uri_set(&u->token, v, vlen);
        if (KEY_IS("manufacturer"))
            return uri_set(&u->manufacturer, v, vlen);
        if (KEY_IS("serial"))
            return uri_set(&u->serial, v, vlen);
        if (KEY_IS("model"))
            return uri_set(&u->model, v, vlen);
        if (KEY_IS("object"))
            return uri_set(&u->object, v, vlen);
        if (KEY_IS("type"))
            return uri_set(&u->type, v, vlen);
        if (KEY_IS("id")) {
            size_t idlen;
            char *raw = pct_decode(v, vlen, &idlen);

            if (raw == NULL || u->has_id || idlen > sizeof(u->id)) {
                free(raw);
                return KYSO_ERR_PARSE;
            }
            memcpy(u->id, raw, idlen);
            u->id_len = idlen;
            u->has_id = 1;
            free(raw);
            return KYSO_OK;
        }
        /* Library and slot attributes narrow the search; unknown ones are
         * ignored as RFC 7512 section 2.3 allows vendor extensions. */
        return KYSO_OK;
    }
    if (KEY_IS("pin-source"))
        return uri_set(&u->pin_source, v, vlen);
    if (KEY_IS("pin-value"))
        return uri_set(&u->pin_value, v, vlen);
    if (KEY_IS("module-path"))
        return uri_set(&u->module_path, v, vlen);
    return KYSO_OK;
#undef KEY_IS
}

static kyso_status uri_parse(p11_uri *u, const char *uri)
{
    const char *p = uri + strlen("pkcs11:"), *q = strchr(p, '?');
    const char *path_end = q ? q : p + strlen(p);
    kyso_status st;

    memset(u, 0, sizeof(*u));
    while (p < path_end) {
        const char *semi = memchr(p, ';', (size_t)(path_end - p));
        const char *end = semi ? semi : path_end;

        if ((st = uri_attr(u, p, (size_t)(end - p), 0)) != KYSO_OK)
            return st;
        p = semi ? semi + 1 : path_end;
    }
    if (q == NULL)
        return KYSO_OK;
    p = q + 1;
    while (*p) {
        const char *amp = strchr(p, '&');
        const char *end = amp ? amp : p + strlen(p);

        if ((st = uri_attr(u, p, (size_t)(end - p), 1)) != KYSO_OK)
            return st;
        p = amp ? amp + 1 : end;
    }
    if (u->type && strcmp(u->type, "private") != 0)
        return KYSO_ERR_PARSE;
    return KYSO_OK;
}

static int field_matches(const char *want, const char *have)
{
    return want == NULL || (have != NULL && strcmp(want, have) == 0);
}

static void p11_close(void *state)
{
    p11_state *s = state;

    if (s == NULL)
        return;
    EVP_PKEY_free(s->key);
    if (s->slots)
        PKCS11_release_all_slots(s->ctx, s->slots, s->nslots);
    if (s->ctx) {
        if (s->loaded)
            PKCS11_CTX_unload(s->ctx);
        PKCS11_CTX_free(s->ctx);
    }
    free(s);
}

static kyso_status resolve_pin(char *pin, size_t pinlen, const p11_uri *u, const char *given)
{
    const char *path = NULL;

    pin[0] = '\0';
    if (given) {
        snprintf(pin, pinlen, "%s", given);
        return KYSO_OK;
    }
    if (u->pin_source) {
        path = u->pin_source;
        if (strncmp(path, "file:", 5) == 0)
            path += 5;
        else if (path[0] == '|')
            return KYSO_ERR_UNSUPPORTED; /* running a command for a PIN is not offered */
    }
    if (path)
        return kyso_read_pin(pin, pinlen, path);
    if (u->pin_value)
        snprintf(pin, pinlen, "%s", u->pin_value);
    return KYSO_OK;
}

static kyso_status p11_open(void **state, const char *uri, const char *module,
                            const char *given_pin)
{
    p11_uri u;
    p11_state *s = NULL;
    PKCS11_SLOT *slot = NULL;
    PKCS11_KEY *keys = NULL, *key = NULL;
    unsigned int nkeys = 0, matches = 0;
    char pin[256];
    int logged_in = 0;
    kyso_status st;

    *state = NULL;
    if ((st = uri_parse(&u, uri)) != KYSO_OK) {
        kyso_log(KYSO_LOG_ERR, NULL, "keystore", "kind=pkcs11 error=\"malformed PKCS#11 URI\"");
        uri_clear(&u);
        return KYSO_ERR_USAGE;
    }
    if (module == NULL)
        module = u.module_path ? u.module_path : getenv("KYSO_PKCS11_MODULE");
    if (module == NULL) {
        kyso_log(KYSO_LOG_ERR, NULL, "keystore",
                 "kind=pkcs11 error=\"no PKCS#11 module: give --module, module-path or "
                 "KYSO_PKCS11_MODULE\"");
        st = KYSO_ERR_USAGE;
        goto out;
    }
    if ((st = resolve_pin(pin, sizeof(pin), &u, given_pin)) != KYSO_OK) {
        kyso_log(KYSO_LOG_ERR, NULL, "keystore", "kind=pkcs11 error=\"cannot read PIN\"");
        st = KYSO_ERR_KEY;
        goto out;
    }
    st = KYSO_ERR_KEY;
    if ((s = calloc(1, sizeof(*s))) == NULL || (s->ctx = PKCS11_CTX_new()) == NULL) {
        st = KYSO_ERR_NOMEM;
        goto out;
    }
    if (PKCS11_CTX_load(s->ctx, module) != 0) {
        kyso_log(KYSO_LOG_ERR, NULL, "keystore",
                 "kind=pkcs11 error=\"cannot load or initialise module\" module=%s", module);
        goto out;
    }
    s->loaded = 1;
    if (PKCS11_enumerate_slots(s->ctx, &s->slots, &s->nslots) != 0) {
        kyso_log(KYSO_LOG_ERR, NULL, "keystore", "kind=pkcs11 error=\"cannot list slots\"");
        goto out;
    }
    for (unsigned int i = 0; i < s->nslots; i++) {
        PKCS11_TOKEN *t = s->slots[i].token;

        if (t == NULL || !t->initialized)
            continue;
        if (field_matches(u.token, t->label) && field_matches(u.manufacturer, t->manufacturer) &&
            field_matches(u.serial, t->serialnr) && field_matches(u.model, t->model)) {
            slot = &s->slots[i];
            break;
        }
    }
    if (slot == NULL) {
        kyso_log(KYSO_LOG_ERR, NULL, "keystore",
                 "kind=pkcs11 error=\"token not found\" token=\"%s\"", u.token ? u.token : "(any)");
        goto out;
    }
    if (pin[0]) {
        if (PKCS11_is_logged_in(slot, 0, &logged_in) != 0)
            logged_in = 0;
        if (!logged_in && PKCS11_login(slot, 0, pin) != 0) {
            kyso_log(KYSO_LOG_ERR, NULL, "keystore",
                     "kind=pkcs11 error=\"login failed\" token=\"%s\"", slot->token->label);
            goto out;
        }
    }
    if (PKCS11_enumerate_keys(slot->token, &keys, &nkeys) != 0) {
        kyso_log(KYSO_LOG_ERR, NULL, "keystore", "kind=pkcs11 error=\"cannot list keys\"");
        goto out;
    }
    for (unsigned int i = 0; i < nkeys; i++) {
        if (!field_matches(u.object, keys[i].label))
            continue;
        if (u.has_id && (keys[i].id_len != u.id_len || memcmp(keys[i].id, u.id, u.id_len) != 0))
            continue;
        key = &keys[i];
        matches++;
    }
    if (matches != 1) {
        kyso_log(KYSO_LOG_ERR, NULL, "keystore",
                 "kind=pkcs11 error=\"%s\" token=\"%s\" object=\"%s\"",
                 matches ? "several private keys match: name one with object= or id="
                         : "private key not found (wrong object/id, or not logged in)",
                 slot->token->label, u.object ? u.object : "");
        goto out;
    }
    if ((s->key = PKCS11_get_private_key(key)) == NULL) {
        kyso_log(KYSO_LOG_ERR, NULL, "keystore", "kind=pkcs11 error=\"cannot use private key\"");
        goto out;
    }
    *state = s;
    s = NULL;
    st = KYSO_OK;
out:
    if (st != KYSO_OK)
        kyso_log_openssl(KYSO_LOG_ERR, NULL, "keystore");
    OPENSSL_cleanse(pin, sizeof(pin));
    p11_close(s);
    uri_clear(&u);
    return st;
}

static EVP_PKEY *p11_key(void *state)
{
    return ((p11_state *)state)->key;
}

const kyso_keystore_ops kyso_keystore_pkcs11_ops = {"pkcs11", p11_open, p11_key, p11_close};
