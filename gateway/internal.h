/*
 * internal.h - interfaces shared between libkyso's files; not installed.
 */
#ifndef KYSO_INTERNAL_H
#define KYSO_INTERNAL_H

#include <openssl/cms.h>

#include "kyso.h"

/* ---- mime.c: RFC 5322 / MIME structure over raw bytes ------------------ */

typedef struct {
    char type[64];    /* lower case, "" when the field is absent */
    char subtype[64]; /* lower case */
    char *boundary;   /* malloc'd or NULL */
    char *protocol;   /* lower case, malloc'd or NULL */
    char *micalg;     /* lower case, malloc'd or NULL */
    char *smime_type; /* lower case, malloc'd or NULL */
    char *charset;    /* lower case, malloc'd or NULL */
} kyso_ctype;

/* Parses a Content-Type value with libetpan; KYSO_ERR_PARSE when malformed. */
kyso_status kyso_ctype_parse(kyso_ctype *ct, const char *value, size_t len);
void kyso_ctype_clear(kyso_ctype *ct);
/* Content-Type of an entity; absent field gives text/plain (RFC 2045 default). */
kyso_status kyso_entity_ctype(kyso_ctype *ct, const kyso_entity *e);

/* Content-Transfer-Encoding, lower case; "7bit" when absent. */
void kyso_entity_cte(const kyso_entity *e, char *out, size_t outlen);

/* Splits a multipart body at `boundary`. parts[] point into body (entities
 * without the CRLF before the next delimiter). *closed tells whether the close
 * delimiter was seen. Fails with TOO_BIG beyond max parts. */
typedef struct {
    const char *p;
    size_t len;
} kyso_span;
kyso_status kyso_multipart_split(const char *body, size_t len, const char *boundary,
                                 kyso_span *parts, size_t max, size_t *nparts, int *closed);

/* Exactly one mailbox in the From field(s): its addr-spec, malloc'd. Returns
 * KYSO_ERR_PARSE when there is not exactly one From field or one mailbox. */
kyso_status kyso_entity_from(const kyso_entity *e, char **addr);

int kyso_has_8bit(const char *p, size_t len);
int kyso_strncasecmp_prefix(const char *p, size_t len, const char *prefix);

/* ---- encode.c: 7-bit transfer encodings ------------------------------- */

kyso_status kyso_base64_encode(kyso_buf *out, const unsigned char *p, size_t len);
/* Decodes base64, skipping whitespace; strict about the alphabet. */
kyso_status kyso_base64_decode(kyso_buf *out, const char *p, size_t len);
kyso_status kyso_qp_encode(kyso_buf *out, const char *p, size_t len);
/* Rewrites a canonical entity so every byte is 7-bit, no line exceeds 998
 * octets and no line is at risk in transit ("From ", trailing white space). */
kyso_status kyso_entity_make_7bit(kyso_buf *out, const char *p, size_t len, int depth);

/* ---- keystore ------------------------------------------------------------ */

typedef struct {
    const char *kind;
    /* pin: the PIN read from the configured file, or NULL (then the URI's
     * pin-source or pin-value, if any). */
    kyso_status (*open)(void **state, const char *uri, const char *module, const char *pin);
    EVP_PKEY *(*key)(void *state);
    void (*close)(void *state);
} kyso_keystore_ops;

extern const kyso_keystore_ops kyso_keystore_file_ops;
extern const kyso_keystore_ops kyso_keystore_pkcs11_ops;

/* Reads a PIN file: first line, trailing CR/LF stripped. */
kyso_status kyso_read_pin(char *out, size_t outlen, const char *path);

/* ---- smime.c: the signature that covers a whole message ------------------ */

typedef struct {
    CMS_ContentInfo *cms; /* owned; NULL when there is none (see result) */
    const char *content;  /* detached: the signed part's bytes; opaque: NULL */
    size_t content_len;
    int detached;
    char micalg[64];
    kyso_result result; /* when cms is NULL: none, neutral or permerror */
    const char *reason; /* static text */
} kyso_smime;

/* Fails only on internal errors; every message shape becomes a kyso_smime. */
kyso_status kyso_smime_locate(kyso_smime *out, const kyso_entity *top);
void kyso_smime_clear(kyso_smime *sm);

/* ---- revocation.c ------------------------------------------------------ */

long long kyso_revoker_deadline(const kyso_revoker *r);
kyso_revocation kyso_revoker_check(kyso_revoker *r, X509 *cert, X509 *issuer, X509_STORE *store,
                                   STACK_OF(X509) * untrusted, long long deadline,
                                   kyso_rev_info *info);

/* ---- sign.c ------------------------------------------------------------- */

STACK_OF(X509) * kyso_signer_chain(const kyso_signer *s);

/* ---- trust.c ------------------------------------------------------------------ */

X509_STORE *kyso_trust_store(const kyso_trust *t);
STACK_OF(X509) * kyso_trust_untrusted(const kyso_trust *t);
STACK_OF(X509_CRL) * kyso_trust_crls(const kyso_trust *t);
time_t kyso_trust_time(const kyso_trust *t);
kyso_revoker *kyso_trust_revoker(const kyso_trust *t);
STACK_OF(X509) * kyso_load_certs(const char *pem_file);

/* ---- cert.c: certificate facts for reports --------------------------- */

char *kyso_name_utf8(const X509_NAME *name);
char *kyso_serial_hex(const X509 *x);
/* The first entry of that NID in the name, as UTF-8, or NULL. */
char *kyso_name_entry(const X509_NAME *name, int nid);
/* Whether x carries addr (rfc822Name SAN, else emailAddress in subject). */
int kyso_cert_has_email(const X509 *x, const char *addr);
/* First address the certificate carries, malloc'd, or NULL. */
char *kyso_cert_first_email(const X509 *x);

#endif
