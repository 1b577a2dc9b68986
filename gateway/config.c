/*
 * config.c - the one typed configuration table and its libconfig loader.
 *
 * Every key Kyso understands is an entry in a table below: name, type,
 * default, bounds or choices, and where it lands in kyso_config. Keys that no
 * table names are errors reported as "file:line: unknown key", so a typo
 * never silently falls back to a default.
 */
#include <libconfig.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kyso_config.h"

typedef enum { F_STR, F_INT, F_BOOL, F_STRLIST, F_CHOICE, F_MODE } field_type;

typedef struct {
    const char *name;
    int value;
} choice;

typedef struct {
    const char *name;
    field_type type;
    size_t off;     /* of the value in the section's struct */
    size_t cnt_off; /* F_STRLIST: of its size_t count */
    const char *def;
    long long min, max;
    const choice *choices;
} field;

static const choice actions_all[] = {
    {"accept", KYSO_ACT_ACCEPT},         {"tag", KYSO_ACT_TAG},
    {"quarantine", KYSO_ACT_QUARANTINE}, {"reject", KYSO_ACT_REJECT},
    {"tempfail", KYSO_ACT_TEMPFAIL},     {NULL, 0}};
static const choice actions_outbound[] = {{"accept", KYSO_ACT_ACCEPT},
                                          {"reject", KYSO_ACT_REJECT},
                                          {"tempfail", KYSO_ACT_TEMPFAIL},
                                          {NULL, 0}};
static const choice if_signed_choices[] = {{"cosign", KYSO_IF_SIGNED_COSIGN},
                                           {"skip", KYSO_IF_SIGNED_SKIP},
                                           {"wrap", KYSO_IF_SIGNED_WRAP},
                                           {NULL, 0}};
static const choice rev_modes[] = {{"soft-fail", KYSO_REV_MODE_SOFT},
                                   {"hard-fail", KYSO_REV_MODE_HARD},
                                   {"off", KYSO_REV_MODE_OFF},
                                   {NULL, 0}};
static const choice rev_orders[] = {{"ocsp,crl", KYSO_REV_ORDER_OCSP_CRL},
                                    {"crl,ocsp", KYSO_REV_ORDER_CRL_OCSP},
                                    {"ocsp", KYSO_REV_ORDER_OCSP},
                                    {"crl", KYSO_REV_ORDER_CRL},
                                    {NULL, 0}};
static const choice log_levels[] = {{"err", KYSO_LOG_ERR},
                                    {"warning", KYSO_LOG_WARNING},
                                    {"info", KYSO_LOG_INFO},
                                    {"debug", KYSO_LOG_DEBUG},
                                    {NULL, 0}};

#define M(f) offsetof(kyso_config, milter.f)
static const field milter_fields[] = {
    {"socket", F_STR, M(socket), 0, "unix:/run/kyso/kyso.sock", 0, 0, NULL},
    {"socket_mode", F_MODE, M(socket_mode), 0, "0660", 0, 0777, NULL},
    {"user", F_STR, M(user), 0, "", 0, 0, NULL},
    {"group", F_STR, M(group), 0, "", 0, 0, NULL},
    {"log_level", F_CHOICE, M(log_level), 0, "info", 0, 0, log_levels},
    {"timeout", F_INT, M(timeout), 0, "300", 1, 3600, NULL},
    {NULL, 0, 0, 0, NULL, 0, 0, NULL}};
#undef M

#define O(f) offsetof(kyso_config, outbound.f)
static const field outbound_fields[] = {
    {"trust_auth", F_BOOL, O(trust_auth), 0, "true", 0, 0, NULL},
    {"internal_networks", F_STRLIST, O(internal_networks), O(ninternal_networks), NULL, 0, 0, NULL},
    {"on_no_identity", F_CHOICE, O(on_no_identity), 0, "accept", 0, 0, actions_outbound},
    {"on_sign_error", F_CHOICE, O(on_sign_error), 0, "tempfail", 0, 0, actions_outbound},
    {"if_signed", F_CHOICE, O(if_signed), 0, "cosign", 0, 0, if_signed_choices},
    {"recipient_domains", F_STRLIST, O(recipient_domains), O(nrecipient_domains), NULL, 0, 0, NULL},
    {NULL, 0, 0, 0, NULL, 0, 0, NULL}};
#undef O

#define I(f) offsetof(kyso_config, inbound.f)
static const field inbound_fields[] = {
    {"trust_anchors", F_STR, I(trust_anchors), 0, "", 0, 0, NULL},
    {"untrusted", F_STR, I(untrusted), 0, "", 0, 0, NULL},
    {"crls", F_STRLIST, I(crls), I(ncrls), NULL, 0, 0, NULL},
    {"authserv_id", F_STR, I(authserv_id), 0, "", 0, 0, NULL},
    {"signer_header", F_BOOL, I(signer_header), 0, "true", 0, 0, NULL},
    {"must_sign_domains", F_STRLIST, I(must_sign_domains), I(nmust_sign_domains), NULL, 0, 0, NULL},
    {"on_unsigned", F_CHOICE, I(on_unsigned), 0, "tag", 0, 0, actions_all},
    {"on_invalid", F_CHOICE, I(on_invalid), 0, "tag", 0, 0, actions_all},
    {"max_message_size", F_INT, I(max_message_size), 0, "67108864", 1024, KYSO_DEFAULT_MAX_MESSAGE,
     NULL},
    {"on_oversize", F_CHOICE, I(on_oversize), 0, "accept", 0, 0, actions_outbound},
    {"revocation", F_CHOICE, I(revocation), 0, "soft-fail", 0, 0, rev_modes},
    {"revocation_order", F_CHOICE, I(revocation_order), 0, "ocsp,crl", 0, 0, rev_orders},
    {"revocation_timeout_ms", F_INT, I(revocation_timeout_ms), 0, "3000", 100, 60000, NULL},
    {"ocsp_responder", F_STR, I(ocsp_responder), 0, "", 0, 0, NULL},
    {"http_proxy", F_STR, I(http_proxy), 0, "", 0, 0, NULL},
    {"revocation_cache_dir", F_STR, I(revocation_cache_dir), 0, "/var/cache/kyso", 0, 0, NULL},
    {"revocation_cache_entries", F_INT, I(revocation_cache_entries), 0, "10000", 16, 10000000,
     NULL},
    {"on_temperror", F_CHOICE, I(on_temperror), 0, "tag", 0, 0, actions_all},
    {NULL, 0, 0, 0, NULL, 0, 0, NULL}};

#define T(r) (offsetof(kyso_config, inbound.subject_tag) + (r) * sizeof(char *))
static const field subject_tag_fields[] = {
    {"none", F_STR, T(KYSO_RESULT_NONE), 0, "", 0, 0, NULL},
    {"pass", F_STR, T(KYSO_RESULT_PASS), 0, "", 0, 0, NULL},
    {"fail", F_STR, T(KYSO_RESULT_FAIL), 0, "", 0, 0, NULL},
    {"neutral", F_STR, T(KYSO_RESULT_NEUTRAL), 0, "", 0, 0, NULL},
    {"policy", F_STR, T(KYSO_RESULT_POLICY), 0, "", 0, 0, NULL},
    {"temperror", F_STR, T(KYSO_RESULT_TEMPERROR), 0, "", 0, 0, NULL},
    {"permerror", F_STR, T(KYSO_RESULT_PERMERROR), 0, "", 0, 0, NULL},
    {NULL, 0, 0, 0, NULL, 0, 0, NULL}};
#undef T
#undef I

#define K(f) offsetof(kyso_conf_token, f)
static const field token_fields[] = {{"name", F_STR, K(name), 0, NULL, 0, 0, NULL},
                                     {"module", F_STR, K(module), 0, NULL, 0, 0, NULL},
                                     {"pin_file", F_STR, K(pin_file), 0, "", 0, 0, NULL},
                                     {NULL, 0, 0, 0, NULL, 0, 0, NULL}};
#undef K

#define D(f) offsetof(kyso_conf_identity, f)
static const field identity_fields[] = {
    {"name", F_STR, D(name), 0, NULL, 0, 0, NULL},
    {"key", F_STR, D(key), 0, NULL, 0, 0, NULL},
    {"token", F_STR, D(token), 0, "", 0, 0, NULL},
    {"cert", F_STR, D(cert), 0, NULL, 0, 0, NULL},
    {"chain", F_STR, D(chain), 0, "", 0, 0, NULL},
    {"senders", F_STRLIST, D(senders), D(nsenders), NULL, 0, 0, NULL},
    {"logins", F_STRLIST, D(logins), D(nlogins), NULL, 0, 0, NULL},
    {NULL, 0, 0, 0, NULL, 0, 0, NULL}};
#undef D

typedef struct {
    const char *file;
    char *err;
    size_t errlen;
} load_ctx;

static kyso_status fail_at(load_ctx *lc, const config_setting_t *s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static kyso_status fail_at(load_ctx *lc, const config_setting_t *s, const char *fmt, ...)
{
    char what[300];
    const char *file =
        s && config_setting_source_file(s) ? config_setting_source_file(s) : lc->file;
    int line = s ? (int)config_setting_source_line(s) : 0;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    snprintf(lc->err, lc->errlen, "%s:%d: %s", file, line, what);
    return KYSO_ERR_PARSE;
}

static kyso_status set_str(char **slot, const char *v)
{
    free(*slot);
    *slot = strdup(v);
    return *slot ? KYSO_OK : KYSO_ERR_NOMEM;
}

static kyso_status apply_default(const field *f, char *base)
{
    void *slot = base + f->off;

    switch (f->type) {
    case F_STR:
        return set_str((char **)slot, f->def ? f->def : "");
    case F_INT:
        if (f->max > 0x7fffffffLL)
            *(long long *)slot = atoll(f->def);
        else
            *(int *)slot = atoi(f->def);
        return KYSO_OK;
    case F_BOOL:
        *(int *)slot = strcmp(f->def, "true") == 0;
        return KYSO_OK;
    case F_MODE:
        *(int *)slot = (int)strtol(f->def, NULL, 8);
        return KYSO_OK;
    case F_CHOICE:
        for (const choice *c = f->choices; c->name; c++)
            if (strcmp(c->name, f->def) == 0)
                *(int *)slot = c->value;
        return KYSO_OK;
    case F_STRLIST:
        return KYSO_OK;
    }
    return KYSO_ERR_INTERNAL;
}

static kyso_status load_value(load_ctx *lc, const field *f, const config_setting_t *s,
                              const char *section, char *base)
{
    void *slot = base + f->off;
    int t = config_setting_type(s);

    switch (f->type) {
    case F_STR:
        if (t != CONFIG_TYPE_STRING)
            return fail_at(lc, s, "'%s' in %s must be a string", f->name, section);
        return set_str((char **)slot, config_setting_get_string(s));
    case F_INT: {
        long long v;

        if (t != CONFIG_TYPE_INT && t != CONFIG_TYPE_INT64)
            return fail_at(lc, s, "'%s' in %s must be an integer", f->name, section);
        v = config_setting_get_int64(s);
        if (v < f->min || v > f->max)
            return fail_at(lc, s, "'%s' in %s is out of range", f->name, section);
        if (f->max > 0x7fffffffLL)
            *(long long *)slot = v;
        else
            *(int *)slot = (int)v;
        return KYSO_OK;
    }
    case F_BOOL:
        if (t != CONFIG_TYPE_BOOL)
            return fail_at(lc, s, "'%s' in %s must be true or false", f->name, section);
        *(int *)slot = config_setting_get_bool(s);
        return KYSO_OK;
    case F_MODE: {
        const char *v = t == CONFIG_TYPE_STRING ? config_setting_get_string(s) : NULL;
        char *end;
        long m;

        if (v == NULL)
            return fail_at(lc, s, "'%s' in %s must be an octal string like \"0660\"", f->name,
                           section);
        m = strtol(v, &end, 8);
        if (*end != '\0' || end == v || m < 0 || m > 0777)
            return fail_at(lc, s, "'%s' in %s must be an octal string like \"0660\"", f->name,
                           section);
        *(int *)slot = (int)m;
        return KYSO_OK;
    }
    case F_CHOICE: {
        const char *v = t == CONFIG_TYPE_STRING ? config_setting_get_string(s) : NULL;

        for (const choice *c = f->choices; v && c->name; c++) {
            if (strcmp(c->name, v) == 0) {
                *(int *)slot = c->value;
                return KYSO_OK;
            }
        }
        {
            char allowed[200] = "";

            for (const choice *c = f->choices; c->name; c++) {
                strncat(allowed, c->name, sizeof(allowed) - strlen(allowed) - 1);
                if (c[1].name)
                    strncat(allowed, ", ", sizeof(allowed) - strlen(allowed) - 1);
            }
            return fail_at(lc, s, "'%s' must be one of: %s", f->name, allowed);
        }
    }
    case F_STRLIST: {
        int n = config_setting_length(s);
        char **list;

        if (t != CONFIG_TYPE_ARRAY && t != CONFIG_TYPE_LIST)
            return fail_at(lc, s, "'%s' in %s must be a list of strings [ \"...\" ]", f->name,
                           section);
        if ((list = calloc((size_t)n + 1, sizeof(char *))) == NULL)
            return KYSO_ERR_NOMEM;
        *(char ***)slot = list;
        *(size_t *)(base + f->cnt_off) = 0;
        for (int i = 0; i < n; i++) {
            const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);

            if (config_setting_type(e) != CONFIG_TYPE_STRING)
                return fail_at(lc, s, "'%s' in %s must hold only strings", f->name, section);
            if ((list[i] = strdup(config_setting_get_string(e))) == NULL)
                return KYSO_ERR_NOMEM;
            (*(size_t *)(base + f->cnt_off))++;
        }
        return KYSO_OK;
    }
    }
    return KYSO_ERR_INTERNAL;
}

/* Loads a group into base through the table; absent keys get defaults,
 * unknown keys are errors. A group that is absent (grp NULL) is all defaults. */
static kyso_status load_group(load_ctx *lc, const config_setting_t *grp, const field *fields,
                              const char *section, char *base)
{
    kyso_status st;

    if (grp && !config_setting_is_group(grp))
        return fail_at(lc, grp, "'%s' must be a group { ... }", section);
    for (int i = 0; grp && i < config_setting_length(grp); i++) {
        const config_setting_t *s = config_setting_get_elem(grp, (unsigned)i);
        const char *name = config_setting_name(s);
        const field *f;

        for (f = fields; f->name && strcmp(f->name, name) != 0; f++)
            ;
        if (f->name == NULL)
            return fail_at(lc, s, "unknown key '%s' in %s", name, section);
    }
    for (const field *f = fields; f->name; f++) {
        const config_setting_t *s = grp ? config_setting_get_member(grp, f->name) : NULL;

        if (s == NULL && f->def == NULL && f->type != F_STRLIST)
            return fail_at(lc, grp, "missing key '%s' in %s", f->name, section);
        st = s ? load_value(lc, f, s, section, base) : apply_default(f, base);
        if (st != KYSO_OK)
            return st;
    }
    return KYSO_OK;
}

static kyso_status load_list(load_ctx *lc, const config_setting_t *list, const field *fields,
                             const char *section, size_t elem_size, void **out, size_t *n)
{
    int len;
    char *arr;
    kyso_status st;

    *out = NULL;
    *n = 0;
    if (list == NULL)
        return KYSO_OK;
    if (!config_setting_is_list(list))
        return fail_at(lc, list, "'%s' must be a list ( { ... }, ... )", section);
    len = config_setting_length(list);
    if ((arr = calloc((size_t)len + 1, elem_size)) == NULL)
        return KYSO_ERR_NOMEM;
    *out = arr;
    for (int i = 0; i < len; i++) {
        const config_setting_t *g = config_setting_get_elem(list, (unsigned)i);

        if ((st = load_group(lc, g, fields, section, arr + (size_t)i * elem_size)) != KYSO_OK)
            return st;
        /* Both element structs keep their source line right after the
         * fields, so diagnostics can point at the element. */
        (*n)++;
    }
    return KYSO_OK;
}

const kyso_conf_token *kyso_config_token(const kyso_config *c, const char *name)
{
    for (size_t i = 0; name && i < c->ntokens; i++)
        if (strcmp(c->tokens[i].name, name) == 0)
            return &c->tokens[i];
    return NULL;
}

static kyso_status validate(load_ctx *lc, kyso_config *c, const config_t *cfg)
{
    const config_setting_t *ids = config_lookup(cfg, "identities");
    const config_setting_t *toks = config_lookup(cfg, "tokens");

    for (size_t i = 0; i < c->ntokens; i++) {
        c->tokens[i].line =
            (int)config_setting_source_line(config_setting_get_elem(toks, (unsigned)i));
        for (size_t j = 0; j < i; j++)
            if (strcmp(c->tokens[i].name, c->tokens[j].name) == 0)
                return fail_at(lc, config_setting_get_elem(toks, (unsigned)i),
                               "token name '%s' used twice", c->tokens[i].name);
    }
    for (size_t i = 0; i < c->nidentities; i++) {
        kyso_conf_identity *id = &c->identities[i];
        const config_setting_t *s = config_setting_get_elem(ids, (unsigned)i);

        id->line = (int)config_setting_source_line(s);
        if (id->token[0] && kyso_config_token(c, id->token) == NULL)
            return fail_at(lc, config_setting_get_member(s, "token"),
                           "identity '%s' names unknown token '%s'", id->name, id->token);
        if (strncmp(id->key, "pkcs11:", 7) != 0 && strncmp(id->key, "file:", 5) != 0)
            return fail_at(lc, config_setting_get_member(s, "key"),
                           "identity '%s': key must be a pkcs11: URI or file:PATH", id->name);
        if (id->nsenders == 0)
            return fail_at(lc, s, "identity '%s' has no senders", id->name);
    }
    /* Without it the badge could not be told from a forged one. */
    if (c->inbound.authserv_id[0] == '\0')
        return fail_at(lc, config_lookup(cfg, "inbound"), "'authserv_id' in inbound must be set");
    for (size_t i = 0; i < c->outbound.ninternal_networks; i++)
        if (kyso_policy_addr_in(&c->outbound.internal_networks[i], 1, NULL) < 0)
            return fail_at(lc, config_lookup(cfg, "outbound.internal_networks"),
                           "'%s' in internal_networks is not a CIDR network",
                           c->outbound.internal_networks[i]);
    if (strncmp(c->milter.socket, "unix:", 5) != 0 && strncmp(c->milter.socket, "inet:", 5) != 0 &&
        strncmp(c->milter.socket, "inet6:", 6) != 0 && strncmp(c->milter.socket, "local:", 6) != 0)
        return fail_at(lc, config_lookup(cfg, "milter.socket"),
                       "socket must be unix:PATH or inet:PORT@HOST%s", "");
    return KYSO_OK;
}

kyso_status kyso_config_load(kyso_config **out, const char *path, char *err, size_t errlen)
{
    static const char *const top[] = {"milter",   "tokens",  "identities",
                                      "outbound", "inbound", NULL};
    config_t cfg;
    kyso_config *c = NULL;
    load_ctx lc = {path, err, errlen};
    const config_setting_t *root;
    kyso_status st = KYSO_ERR_PARSE;

    *out = NULL;
    err[0] = '\0';
    config_init(&cfg);
    if (!config_read_file(&cfg, path)) {
        if (config_error_type(&cfg) == CONFIG_ERR_FILE_IO)
            snprintf(err, errlen, "%s: cannot read file", path);
        else
            snprintf(err, errlen, "%s:%d: %s",
                     config_error_file(&cfg) ? config_error_file(&cfg) : path,
                     config_error_line(&cfg), config_error_text(&cfg));
        st = config_error_type(&cfg) == CONFIG_ERR_FILE_IO ? KYSO_ERR_IO : KYSO_ERR_PARSE;
        goto out;
    }
    if ((c = calloc(1, sizeof(*c))) == NULL || (c->path = strdup(path)) == NULL) {
        st = KYSO_ERR_NOMEM;
        goto out;
    }
    root = config_root_setting(&cfg);
    for (int i = 0; i < config_setting_length(root); i++) {
        const config_setting_t *s = config_setting_get_elem(root, (unsigned)i);
        int known = 0;

        for (int j = 0; top[j]; j++)
            known |= strcmp(top[j], config_setting_name(s)) == 0;
        if (!known) {
            st = fail_at(&lc, s, "unknown key '%s' at top level", config_setting_name(s));
            goto out;
        }
    }
    if ((st = load_group(&lc, config_lookup(&cfg, "milter"), milter_fields, "milter", (char *)c)) !=
            KYSO_OK ||
        (st = load_group(&lc, config_lookup(&cfg, "outbound"), outbound_fields, "outbound",
                         (char *)c)) != KYSO_OK)
        goto out;
    {
        const config_setting_t *in = config_lookup(&cfg, "inbound");
        const config_setting_t *tags = in ? config_setting_get_member(in, "subject_tag") : NULL;
        config_setting_t *detached = NULL;

        /* subject_tag is a group of its own table; the inbound table must
         * not see it as an unknown key. */
        if (tags)
            detached = (config_setting_t *)tags;
        if (in && config_setting_is_group(in)) {
            for (int i = 0; i < config_setting_length(in); i++) {
                const config_setting_t *s = config_setting_get_elem(in, (unsigned)i);
                const field *f;

                if (s == detached)
                    continue;
                for (f = inbound_fields; f->name && strcmp(f->name, config_setting_name(s)); f++)
                    ;
                if (f->name == NULL) {
                    st = fail_at(&lc, s, "unknown key '%s' in inbound", config_setting_name(s));
                    goto out;
                }
            }
        }
        for (const field *f = inbound_fields; f->name; f++) {
            const config_setting_t *s = in ? config_setting_get_member(in, f->name) : NULL;

            st = s ? load_value(&lc, f, s, "inbound", (char *)c) : apply_default(f, (char *)c);
            if (st != KYSO_OK)
                goto out;
        }
        if ((st = load_group(&lc, tags, subject_tag_fields, "inbound.subject_tag", (char *)c)) !=
            KYSO_OK)
            goto out;
    }
    if ((st = load_list(&lc, config_lookup(&cfg, "tokens"), token_fields, "tokens",
                        sizeof(kyso_conf_token), (void **)&c->tokens, &c->ntokens)) != KYSO_OK)
        goto out;
    if ((st = load_list(&lc, config_lookup(&cfg, "identities"), identity_fields, "identities",
                        sizeof(kyso_conf_identity), (void **)&c->identities, &c->nidentities)) !=
        KYSO_OK)
        goto out;
    st = validate(&lc, c, &cfg);
out:
    config_destroy(&cfg);
    if (st != KYSO_OK) {
        if (err[0] == '\0')
            snprintf(err, errlen, "%s: %s", path, kyso_status_str(st));
        kyso_config_free(c);
        return st;
    }
    *out = c;
    return KYSO_OK;
}

static void free_list(char **l, size_t n)
{
    for (size_t i = 0; l && i < n; i++)
        free(l[i]);
    free(l);
}

void kyso_config_free(kyso_config *c)
{
    if (c == NULL)
        return;
    free(c->path);
    free(c->milter.socket);
    free(c->milter.user);
    free(c->milter.group);
    for (size_t i = 0; c->tokens && i <= c->ntokens; i++) {
        free(c->tokens[i].name);
        free(c->tokens[i].module);
        free(c->tokens[i].pin_file);
    }
    free(c->tokens);
    for (size_t i = 0; c->identities && i <= c->nidentities; i++) {
        kyso_conf_identity *id = &c->identities[i];

        free(id->name);
        free(id->key);
        free(id->token);
        free(id->cert);
        free(id->chain);
        free_list(id->senders, id->nsenders);
        free_list(id->logins, id->nlogins);
    }
    free(c->identities);
    free_list(c->outbound.internal_networks, c->outbound.ninternal_networks);
    free_list(c->outbound.recipient_domains, c->outbound.nrecipient_domains);
    free(c->inbound.trust_anchors);
    free(c->inbound.untrusted);
    free_list(c->inbound.crls, c->inbound.ncrls);
    free(c->inbound.authserv_id);
    free(c->inbound.ocsp_responder);
    free(c->inbound.http_proxy);
    free(c->inbound.revocation_cache_dir);
    for (size_t i = 0; i <= KYSO_RESULT_PERMERROR; i++)
        free(c->inbound.subject_tag[i]);
    free_list(c->inbound.must_sign_domains, c->inbound.nmust_sign_domains);
    free(c);
}

const char *kyso_action_str(kyso_action a)
{
    for (const choice *c = actions_all; c->name; c++)
        if ((int)a == c->value)
            return c->name;
    return "?";
}
