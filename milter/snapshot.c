/*
 * snapshot.c - reference-counted configuration snapshots and the signer
 * slots they share.
 *
 * The PKCS#11 module is loaded once per slot for the daemon's life; a slot
 * is keyed by everything that defines a signer (key URI, module, PIN file,
 * certificate, chain), so an unchanged identity keeps its token session
 * across reloads. A slot whose token is absent at start has no signer yet;
 * each signing attempt tries to open it, so mail flows again as soon as the
 * token is back, without a restart.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "milter.h"

struct signer_slot {
    signer_slot *next;
    int refs;
    char *id; /* key|module|pin|cert|chain */
    pthread_mutex_t lock;
    kyso_keystore *ks;
    kyso_signer *signer; /* NULL until the key could be used */
    int unusable;        /* own certificate revoked or expired: refuse to sign */
    char *name;          /* identity name when the slot was made, for logs */
    char *cert, *chain;
};

static pthread_mutex_t slots_lock = PTHREAD_MUTEX_INITIALIZER;
static signer_slot *slots;

static pthread_mutex_t current_lock = PTHREAD_MUTEX_INITIALIZER;
static snapshot *current;

/* SHA-256 of a file's bytes in hex, or "-": a certificate renewed in place
 * must make a new slot on reload, not keep the old certificate. */
static void file_digest(const char *path, char out[65])
{
    kyso_buf b = KYSO_BUF_INIT;
    unsigned char d[32];

    strcpy(out, "-");
    if (path[0] && kyso_buf_read_file(&b, path, 16u << 20) == KYSO_OK &&
        EVP_Digest(b.data, b.len, d, NULL, EVP_sha256(), NULL))
        for (int i = 0; i < 32; i++)
            sprintf(out + 2 * i, "%02x", d[i]);
    kyso_buf_free(&b);
}

static char *slot_id(const kyso_conf_identity *id, const char *module, const char *pin)
{
    kyso_buf b = KYSO_BUF_INIT;
    char cert_d[65], chain_d[65];

    file_digest(id->cert, cert_d);
    file_digest(id->chain, chain_d);
    if (kyso_buf_printf(&b, "%s|%s|%s|%s@%s|%s@%s", id->key, module ? module : "", pin ? pin : "",
                        id->cert, cert_d, id->chain, chain_d) != KYSO_OK) {
        kyso_buf_free(&b);
        return NULL;
    }
    return b.data;
}

static signer_slot *slot_get(const kyso_conf_identity *id, const kyso_conf_token *tok)
{
    const char *module = tok ? tok->module : NULL;
    const char *pin = tok && tok->pin_file[0] ? tok->pin_file : NULL;
    char *key = slot_id(id, module, pin);
    signer_slot *s;

    if (key == NULL)
        return NULL;
    pthread_mutex_lock(&slots_lock);
    for (s = slots; s; s = s->next)
        if (strcmp(s->id, key) == 0)
            break;
    if (s) {
        s->refs++;
        free(key);
        goto out;
    }
    if ((s = calloc(1, sizeof(*s))) == NULL) {
        free(key);
        goto out;
    }
    s->id = key;
    s->refs = 1;
    s->name = strdup(id->name);
    s->cert = strdup(id->cert);
    s->chain = id->chain[0] ? strdup(id->chain) : NULL;
    pthread_mutex_init(&s->lock, NULL);
    if (kyso_keystore_new(&s->ks, id->key, module, pin) != KYSO_OK) {
        free(s->name);
        free(s->cert);
        free(s->chain);
        free(s->id);
        free(s);
        s = NULL;
        goto out;
    }
    s->next = slots;
    slots = s;
out:
    pthread_mutex_unlock(&slots_lock);
    return s;
}

static void slot_put(signer_slot *s)
{
    signer_slot **pp;

    if (s == NULL)
        return;
    pthread_mutex_lock(&slots_lock);
    if (--s->refs > 0) {
        pthread_mutex_unlock(&slots_lock);
        return;
    }
    for (pp = &slots; *pp && *pp != s; pp = &(*pp)->next)
        ;
    if (*pp)
        *pp = s->next;
    pthread_mutex_unlock(&slots_lock);
    kyso_signer_free(s->signer);
    kyso_keystore_free(s->ks);
    pthread_mutex_destroy(&s->lock);
    free(s->name);
    free(s->cert);
    free(s->chain);
    free(s->id);
    free(s);
}

/* The slot's signer, opening the token first if needed. */
static kyso_signer *slot_signer(signer_slot *s)
{
    kyso_signer *sg;

    pthread_mutex_lock(&s->lock);
    if (s->signer == NULL && kyso_keystore_reload(s->ks) == KYSO_OK) {
        if (kyso_signer_new(&s->signer, s->ks, s->cert, s->chain) != KYSO_OK)
            s->signer = NULL;
        else
            kyso_log(KYSO_LOG_INFO, NULL, "token-open", "identity=%s kind=%s", s->name,
                     kyso_keystore_kind(s->ks));
    }
    sg = s->signer;
    pthread_mutex_unlock(&s->lock);
    return sg;
}

kyso_status snapshot_sign(const snapshot *snap, size_t identity, kyso_buf *out,
                          kyso_sign_outcome *what, const char *msg, size_t len)
{
    signer_slot *s = snap->slots[identity];
    kyso_signer *sg = slot_signer(s);
    kyso_if_signed mode = (kyso_if_signed)snap->conf->outbound.if_signed;
    kyso_status st;

    if (sg == NULL)
        return KYSO_ERR_KEY;
    if (s->unusable) {
        kyso_log(KYSO_LOG_ERR, NULL, "sign-refused",
                 "identity=%s reason=\"own certificate revoked or expired\"", s->name);
        return KYSO_ERR_CERT; /* mail waits until a usable certificate is installed */
    }
    st = kyso_sign_message(out, what, sg, msg, len, mode);
    if (st == KYSO_ERR_KEY) {
        kyso_log(KYSO_LOG_WARNING, NULL, "token-reload", "identity=%s reason=\"signing failed\"",
                 s->name);
        if (kyso_keystore_reload(s->ks) == KYSO_OK)
            st = kyso_sign_message(out, what, sg, msg, len, mode);
    }
    return st;
}

/* Our own certificate as recipients will judge it. */
static int check_own_certificate(const snapshot *snap, signer_slot *slot, kyso_signer *sg,
                                 const char *name)
{
    kyso_signer_report rep;
    int days = 0, unusable = 0;

    if (kyso_signer_check(&rep, &days, snap->trust, sg) != KYSO_OK)
        return 0;
    if (rep.revocation == KYSO_REV_REVOKED) {
        kyso_log(KYSO_LOG_ERR, NULL, "own-certificate-revoked",
                 "identity=%s serial=%s source=%s action=\"refusing to sign\"", name, rep.serial,
                 rep.revocation_info.source);
        unusable = 1;
    } else if (days < 0) {
        kyso_log(KYSO_LOG_ERR, NULL, "own-certificate-expired",
                 "identity=%s serial=%s action=\"refusing to sign\"", name, rep.serial);
        unusable = 1;
    } else if (days < 30) {
        kyso_log(KYSO_LOG_WARNING, NULL, "own-certificate-expiring",
                 "identity=%s serial=%s days=%d", name, rep.serial, days);
    }
    if (!rep.chain_ok && rep.revocation != KYSO_REV_REVOKED)
        kyso_log(KYSO_LOG_WARNING, NULL, "own-certificate-untrusted",
                 "identity=%s error=\"%s\" note=\"recipients using the same roots will not "
                 "trust this signature\"",
                 name, rep.chain_error ? rep.chain_error : "?");
    pthread_mutex_lock(&slot->lock);
    slot->unusable = unusable;
    pthread_mutex_unlock(&slot->lock);
    kyso_signer_report_clear(&rep);
    return unusable;
}

int snapshot_check_identities(const snapshot *snap, int verbose)
{
    int bad = 0;

    for (size_t i = 0; i < snap->conf->nidentities; i++) {
        const kyso_conf_identity *id = &snap->conf->identities[i];
        kyso_signer *sg = slot_signer(snap->slots[i]);

        if (sg == NULL) {
            kyso_log(KYSO_LOG_ERR, NULL, "identity-unusable",
                     "identity=%s line=%d key=\"%s\" error=\"cannot open key or certificate\"",
                     id->name, id->line, id->key);
            bad++;
        } else if (check_own_certificate(snap, snap->slots[i], sg, id->name)) {
            bad++;
        } else if (verbose) {
            kyso_log(KYSO_LOG_INFO, NULL, "identity-ok", "identity=%s", id->name);
        }
    }
    return bad;
}

void snapshot_maintain(const snapshot *snap)
{
    if (snap->revoker) {
        int n = kyso_revoker_refresh(snap->revoker, 0);

        if (n > 0)
            kyso_log(KYSO_LOG_INFO, NULL, "crl-refreshed", "count=%d", n);
    }
    snapshot_check_identities(snap, 0);
}

static void snapshot_free(snapshot *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; s->slots && s->conf && i < s->conf->nidentities; i++)
        slot_put(s->slots[i]);
    free(s->slots);
    kyso_trust_free(s->trust);
    kyso_revoker_free(s->revoker);
    kyso_config_free(s->conf);
    free(s);
}

static kyso_status load_trust(snapshot *s, char *err, size_t errlen)
{
    const kyso_config *c = s->conf;
    kyso_status st;

    if ((st = kyso_trust_new(&s->trust)) != KYSO_OK)
        return st;
    if (c->inbound.trust_anchors[0] &&
        (st = kyso_trust_add_anchors(s->trust, c->inbound.trust_anchors)) != KYSO_OK) {
        snprintf(err, errlen, "%s: inbound.trust_anchors: cannot load %s", c->path,
                 c->inbound.trust_anchors);
        return st;
    }
    if (c->inbound.untrusted[0] &&
        (st = kyso_trust_add_untrusted(s->trust, c->inbound.untrusted)) != KYSO_OK) {
        snprintf(err, errlen, "%s: inbound.untrusted: cannot load %s", c->path,
                 c->inbound.untrusted);
        return st;
    }
    for (size_t i = 0; i < c->inbound.ncrls; i++) {
        if ((st = kyso_trust_add_crl(s->trust, c->inbound.crls[i])) != KYSO_OK) {
            snprintf(err, errlen, "%s: inbound.crls: cannot load %s", c->path, c->inbound.crls[i]);
            return st;
        }
    }
    if (c->inbound.revocation != KYSO_REV_MODE_OFF) {
        kyso_revoker_opts o = {
            .cache_dir = c->inbound.revocation_cache_dir,
            .ocsp_url = c->inbound.ocsp_responder,
            .proxy = c->inbound.http_proxy,
            .order = (kyso_rev_order)c->inbound.revocation_order,
            .timeout_ms = c->inbound.revocation_timeout_ms,
            .max_entries = (size_t)c->inbound.revocation_cache_entries,
            .hard_fail = c->inbound.revocation == KYSO_REV_MODE_HARD,
        };

        if ((st = kyso_revoker_new(&s->revoker, &o)) != KYSO_OK)
            return st;
        /* CRLs fetched before a restart are still good until nextUpdate. */
        kyso_revoker_scan_cache(s->revoker);
        kyso_trust_set_revoker(s->trust, s->revoker);
    }
    return KYSO_OK;
}

kyso_status snapshot_load(snapshot **out, const char *path, char *err, size_t errlen)
{
    snapshot *s;
    kyso_status st;

    *out = NULL;
    if ((s = calloc(1, sizeof(*s))) == NULL)
        return KYSO_ERR_NOMEM;
    s->refs = 1;
    if ((st = kyso_config_load(&s->conf, path, err, errlen)) != KYSO_OK)
        goto fail;
    if ((st = load_trust(s, err, errlen)) != KYSO_OK)
        goto fail;
    if ((s->slots = calloc(s->conf->nidentities + 1, sizeof(*s->slots))) == NULL) {
        st = KYSO_ERR_NOMEM;
        goto fail;
    }
    for (size_t i = 0; i < s->conf->nidentities; i++) {
        const kyso_conf_identity *id = &s->conf->identities[i];

        s->slots[i] = slot_get(id, kyso_config_token(s->conf, id->token));
        if (s->slots[i] == NULL) {
            snprintf(err, errlen, "%s:%d: identity '%s': unusable key URI %s", path, id->line,
                     id->name, id->key);
            st = KYSO_ERR_USAGE;
            goto fail;
        }
    }
    *out = s;
    return KYSO_OK;
fail:
    snapshot_free(s);
    return st;
}

snapshot *snapshot_acquire(void)
{
    snapshot *s;

    pthread_mutex_lock(&current_lock);
    s = current;
    if (s)
        s->refs++;
    pthread_mutex_unlock(&current_lock);
    return s;
}

void snapshot_release(snapshot *s)
{
    int last;

    if (s == NULL)
        return;
    pthread_mutex_lock(&current_lock);
    last = --s->refs == 0;
    pthread_mutex_unlock(&current_lock);
    if (last)
        snapshot_free(s);
}

void snapshot_install(snapshot *s)
{
    snapshot *old;

    pthread_mutex_lock(&current_lock);
    old = current;
    current = s;
    pthread_mutex_unlock(&current_lock);
    snapshot_release(old);
}
