/*
 * kyso_config.h - the gateway's configuration, as loaded from one libconfig
 * file by kyso_config_load(). Plain data, read-only once loaded; the milter
 * shares one loaded config between threads through a reference-counted
 * snapshot of its own.
 */
#ifndef KYSO_CONFIG_H
#define KYSO_CONFIG_H

#include "kyso.h"

/* What to do with a message; the milter maps these to its replies. */
typedef enum {
    KYSO_ACT_ACCEPT = 0,
    KYSO_ACT_TAG,        /* accept with the badge; for inbound the same as accept */
    KYSO_ACT_QUARANTINE, /* Postfix hold queue */
    KYSO_ACT_REJECT,     /* 5.7.x */
    KYSO_ACT_TEMPFAIL    /* 4.7.x */
} kyso_action;

const char *kyso_action_str(kyso_action a);

typedef enum { KYSO_REV_MODE_SOFT = 0, KYSO_REV_MODE_HARD, KYSO_REV_MODE_OFF } kyso_rev_mode;

typedef struct {
    char *name;
    char *module;
    char *pin_file;
    int line;
} kyso_conf_token;

typedef struct {
    char *name;
    char *key;
    char *token; /* name of a kyso_conf_token, or NULL */
    char *cert;
    char *chain;
    char **senders;
    size_t nsenders;
    char **logins; /* SMTP AUTH logins allowed to use it; empty: any login */
    size_t nlogins;
    int line;
} kyso_conf_identity;

typedef struct {
    char *path;
    struct {
        char *socket;
        int socket_mode;
        char *user;
        char *group;
        int log_level; /* kyso_log_level */
        int timeout;
    } milter;
    kyso_conf_token *tokens;
    size_t ntokens;
    kyso_conf_identity *identities;
    size_t nidentities;
    struct {
        int trust_auth;
        char **internal_networks;
        size_t ninternal_networks;
        int on_no_identity; /* kyso_action */
        int on_sign_error;  /* kyso_action */
        int if_signed;      /* kyso_if_signed */
        char **recipient_domains;
        size_t nrecipient_domains;
    } outbound;
    struct {
        char *trust_anchors;
        char *untrusted;
        char **crls;
        size_t ncrls;
        char *authserv_id;
        char *subject_tag[KYSO_RESULT_PERMERROR + 1]; /* by kyso_result; "" = none */
        int signer_header;
        char **must_sign_domains;
        size_t nmust_sign_domains;
        int on_unsigned; /* kyso_action */
        int on_invalid;  /* kyso_action */
        long long max_message_size;
        int on_oversize;      /* kyso_action */
        int revocation;       /* kyso_rev_mode */
        int revocation_order; /* kyso_rev_order */
        int revocation_timeout_ms;
        char *ocsp_responder;
        char *http_proxy;
        char *revocation_cache_dir;
        int revocation_cache_entries;
        int on_temperror; /* kyso_action */
    } inbound;
} kyso_config;

/* Loads and validates a config file. On failure err holds one line naming
 * the file, the line and the key (e.g. "kyso.conf:7: unknown key 'x' in inbound"). */
kyso_status kyso_config_load(kyso_config **out, const char *path, char *err, size_t errlen);
void kyso_config_free(kyso_config *c);
const kyso_conf_token *kyso_config_token(const kyso_config *c, const char *name);

/* ---- policy.c: decisions drawn from the config ------------------------ */

/* The identity whose senders cover addr (case-insensitive), or NULL. */
const kyso_conf_identity *kyso_policy_identity_for(const kyso_config *c, const char *addr);
/* Whether an SMTP AUTH login (NULL: not authenticated) may sign with id:
 * its logins list names it exactly or by "@domain"; an empty list admits
 * any login and unauthenticated internal clients. */
int kyso_policy_login_allowed(const kyso_conf_identity *id, const char *login);
/* Whether addr ("1.2.3.4" or IPv6 text) lies in one of the CIDRs. */
int kyso_policy_addr_in(char *const *cidrs, size_t n, const char *addr);
/* Whether a sender's domain matches "domain" or "*.domain" patterns. */
int kyso_policy_domain_must_sign(const kyso_config *c, const char *addr);
/* Whether some recipient is covered by recipient_domains (empty: yes). */
int kyso_policy_recipient_wanted(const kyso_config *c, const char *addr);
/* The action for an inbound verdict from the sender's domain policy. */
kyso_action kyso_policy_inbound_action(const kyso_config *c, const kyso_verdict *v);
/* Whether an Authentication-Results value was written under authserv_id. */
int kyso_policy_ar_is_ours(const char *value, const char *authserv_id);
/* The subject with every configured tag removed from its start (decoded
 * per RFC 2047 first), as a new RFC 2047-safe value; NULL if unchanged. */
char *kyso_policy_subject_untag(const kyso_config *c, const char *subject);
/* The subject with the tag for r prepended; NULL if r has no tag. */
char *kyso_policy_subject_tag(const kyso_config *c, kyso_result r, const char *subject);
/* "Name, Organisation <addr>" of the passing signer, RFC 2047-encoded. */
char *kyso_policy_signer_header(const kyso_verdict *v);
/* Encodes UTF-8 text as RFC 2047 B encoded-words if it needs it. */
char *kyso_rfc2047_encode(const char *utf8);

#endif
