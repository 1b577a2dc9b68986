/*
 * kyso.h - public interface of libkyso, the S/MIME signing and verification
 * library behind the `kyso` CLI and `kyso-milter`.
 *
 * Conventions: functions return kyso_status (KYSO_OK is 0); results come back
 * through an `out` parameter written first; every *_new has a *_free that
 * accepts NULL; inputs are borrowed and const unless a name says otherwise.
 * Message buffers handed in are never modified and need not be NUL-terminated.
 */
#ifndef KYSO_H
#define KYSO_H

#include <stddef.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One error model for the whole library; the milter maps classes to actions. */
typedef enum {
    KYSO_OK = 0,
    KYSO_ERR_NOMEM,       /* out of memory */
    KYSO_ERR_IO,          /* a file could not be read or written */
    KYSO_ERR_USAGE,       /* a caller passed an invalid argument */
    KYSO_ERR_PARSE,       /* input (message, URI, PEM) is malformed */
    KYSO_ERR_TOO_BIG,     /* input exceeds a configured size or depth limit */
    KYSO_ERR_UNSUPPORTED, /* valid input Kyso does not handle */
    KYSO_ERR_KEY,         /* key store unavailable: module, token, login, key */
    KYSO_ERR_CERT,        /* our signing certificate is expired, not yet valid or revoked */
    KYSO_ERR_CRYPTO,      /* OpenSSL refused an operation */
    KYSO_ERR_POLICY,      /* refused on purpose (e.g. existing signature broken) */
    KYSO_ERR_INTERNAL
} kyso_status;

const char *kyso_status_str(kyso_status st);

/* ---- logging --------------------------------------------------------- */

typedef enum {
    KYSO_LOG_NONE = -1, /* as a maximum: log nothing */
    KYSO_LOG_ERR,
    KYSO_LOG_WARNING,
    KYSO_LOG_INFO,
    KYSO_LOG_DEBUG
} kyso_log_level;

/* use_syslog=0 writes to stderr. Safe to call again to switch. */
void kyso_log_open(const char *ident, int use_syslog, kyso_log_level max_level);
/* Emits "<qid> <event> <fmt...>"; qid may be NULL ("-"). fmt should be key=value pairs. */
void kyso_log(kyso_log_level level, const char *qid, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Drains OpenSSL's error queue of this thread into the log under `event`. */
void kyso_log_openssl(kyso_log_level level, const char *qid, const char *event);

/* ---- growable byte buffer -------------------------------------------- */

typedef struct {
    char *data; /* always NUL-terminated when non-NULL */
    size_t len;
    size_t cap;
} kyso_buf;

#define KYSO_BUF_INIT                                                                              \
    {                                                                                              \
        NULL, 0, 0                                                                                 \
    }
kyso_status kyso_buf_append(kyso_buf *b, const void *p, size_t n);
kyso_status kyso_buf_puts(kyso_buf *b, const char *s);
kyso_status kyso_buf_printf(kyso_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void kyso_buf_reset(kyso_buf *b);
void kyso_buf_free(kyso_buf *b);
/* Reads a whole file ("-" = stdin) refusing more than max bytes. */
kyso_status kyso_buf_read_file(kyso_buf *b, const char *path, size_t max);

/* ---- limits for untrusted input --------------------------------------- */

#define KYSO_DEFAULT_MAX_MESSAGE (64u * 1024u * 1024u)
#define KYSO_MAX_MIME_DEPTH      32
#define KYSO_MAX_PARTS           1024
#define KYSO_MAX_SIGNERS         16

/* ---- message structure (exact bytes, no re-serialisation) ------------ */

/* A MIME entity inside a canonical (CRLF) buffer: pointers into it. */
typedef struct {
    const char *hdr; /* header block, each field ending in CRLF; no blank line */
    size_t hdr_len;
    const char *body; /* after the blank line */
    size_t body_len;
} kyso_entity;

/* One header field: name, and the raw value (after ':'; may hold CRLF folds). */
typedef struct {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
    const char *field; /* whole field including its final CRLF */
    size_t field_len;
} kyso_field;

/* Converts any LF or CR LF line ends to CR LF. */
kyso_status kyso_canon_crlf(kyso_buf *out, const char *in, size_t len);
void kyso_entity_split(kyso_entity *e, const char *p, size_t len);
/* Iterates fields: *pos starts at 0; returns 0 at the end. */
int kyso_field_next(const kyso_entity *e, size_t *pos, kyso_field *f);
int kyso_field_is(const kyso_field *f, const char *name);
/* Counts fields named `name` and returns the first in *first (may be NULL). */
int kyso_entity_find(const kyso_entity *e, const char *name, kyso_field *first);

/* The single From address of a message (CRLF or LF), malloc'd. Fails with
 * KYSO_ERR_PARSE unless there is exactly one From field with one mailbox. */
kyso_status kyso_message_from(char **addr, const char *msg, size_t len);

/* ---- key store --------------------------------------------------------- */

/*
 * A private key addressed by an RFC 7512 "pkcs11:" URI (through libp11) or a
 * "file:PATH" PEM key. The PKCS#11 store logs in once and keeps the session;
 * kyso_keystore_reload() tears the module down and opens it again, which is
 * the only way libp11 0.4.12 recovers from a lost session. Signing threads
 * take the key with acquire/release (a read lock); reload takes the write lock.
 */
typedef struct kyso_keystore kyso_keystore;

/* module may be NULL (URI module-path, then $KYSO_PKCS11_MODULE); pin_file may
 * be NULL (URI pin-source / pin-value). */
kyso_status kyso_keystore_open(kyso_keystore **out, const char *uri, const char *module,
                               const char *pin_file);
/* Like kyso_keystore_open but opens nothing yet: the first
 * kyso_keystore_reload() does, so a daemon can start while a token is absent. */
kyso_status kyso_keystore_new(kyso_keystore **out, const char *uri, const char *module,
                              const char *pin_file);
kyso_status kyso_keystore_reload(kyso_keystore *ks);
/* Returns the key with the store's read lock held, or NULL (lock not held). */
EVP_PKEY *kyso_keystore_acquire(kyso_keystore *ks);
void kyso_keystore_release(kyso_keystore *ks);
/* "pkcs11" or "file" */
const char *kyso_keystore_kind(const kyso_keystore *ks);
void kyso_keystore_free(kyso_keystore *ks);

/* ---- signing ------------------------------------------------------------ */

typedef enum {
    KYSO_IF_SIGNED_COSIGN = 0, /* add our SignerInfo to the existing SignedData */
    KYSO_IF_SIGNED_SKIP,       /* leave already-signed mail as it is */
    KYSO_IF_SIGNED_WRAP        /* sign the signed message as an opaque entity */
} kyso_if_signed;

typedef struct kyso_signer kyso_signer;

/* ks is borrowed and must outlive the signer. chain_file may be NULL. */
kyso_status kyso_signer_new(kyso_signer **out, kyso_keystore *ks, const char *cert_file,
                            const char *chain_file);
void kyso_signer_free(kyso_signer *s);
const X509 *kyso_signer_cert(const kyso_signer *s);

typedef enum {
    KYSO_SIGNED_NEW = 0, /* the message is now multipart/signed by us */
    KYSO_SIGNED_COSIGNED,
    KYSO_SIGNED_SKIPPED /* out holds the input, CRLF-canonicalised */
} kyso_sign_outcome;

/*
 * Signs an RFC 5322 message (CRLF or LF line ends). out receives the whole
 * signed message with CRLF line ends. what (may be NULL) says what happened.
 */
kyso_status kyso_sign_message(kyso_buf *out, kyso_sign_outcome *what, const kyso_signer *s,
                              const char *msg, size_t len, kyso_if_signed mode);

/* ---- verification --------------------------------------------------------- */

typedef struct kyso_trust kyso_trust;
typedef struct kyso_revoker kyso_revoker;

/* Every certificate of a PEM file, or NULL (unreadable, or none in it). */
STACK_OF(X509) * kyso_load_certs(const char *pem_file);

kyso_status kyso_trust_new(kyso_trust **out);
void kyso_trust_free(kyso_trust *t);
kyso_status kyso_trust_add_anchors(kyso_trust *t, const char *pem_file);
kyso_status kyso_trust_add_untrusted(kyso_trust *t, const char *pem_file);
kyso_status kyso_trust_add_crl(kyso_trust *t, const char *file); /* PEM or DER */
/* 0 means "now" at each verification. */
void kyso_trust_set_time(kyso_trust *t, time_t at);
/* Check certificates online through r (borrowed, must outlive t). */
void kyso_trust_set_revoker(kyso_trust *t, kyso_revoker *r);

/* ---- revocation (OCSP, CRL over HTTP) ------------------------------------ */

typedef enum {
    KYSO_REV_ORDER_OCSP_CRL = 0, /* OCSP, CRL when OCSP gives no answer */
    KYSO_REV_ORDER_CRL_OCSP,
    KYSO_REV_ORDER_OCSP,
    KYSO_REV_ORDER_CRL
} kyso_rev_order;

typedef struct {
    const char *cache_dir; /* CRL disk cache; NULL: memory only */
    const char *ocsp_url;  /* responder for every certificate; NULL: from AIA */
    const char *proxy;     /* http://host:port, or NULL */
    kyso_rev_order order;
    int timeout_ms;     /* one deadline for all network work of a message */
    size_t max_entries; /* bound of the status cache */
    int hard_fail;      /* unknown status gives temperror instead of pass */
} kyso_revoker_opts;

kyso_status kyso_revoker_new(kyso_revoker **out, const kyso_revoker_opts *o);
void kyso_revoker_free(kyso_revoker *r);
const kyso_revoker_opts *kyso_revoker_options(const kyso_revoker *r);
/* Refetches cached CRLs near (or, with force, regardless of) nextUpdate;
 * returns how many were refreshed. Safe from a background thread. */
int kyso_revoker_refresh(kyso_revoker *r, int force);
/* Tells the revoker which certificates issued its cached CRLs (those that
 * verify with one of certs): only such CRLs are refreshed, since a new
 * CRL must be checked against its issuer before it replaces the old. */
int kyso_revoker_adopt_issuers(kyso_revoker *r, STACK_OF(X509) * certs);
/* Loads the CRLs of the disk cache into memory. */
kyso_status kyso_revoker_scan_cache(kyso_revoker *r);
/* Counters and cached CRLs, one per line, for people. */
kyso_status kyso_revoker_status(kyso_buf *out, kyso_revoker *r);

/* RFC 7281 result vocabulary. */
typedef enum {
    KYSO_RESULT_NONE = 0,
    KYSO_RESULT_PASS,
    KYSO_RESULT_FAIL,
    KYSO_RESULT_NEUTRAL,
    KYSO_RESULT_POLICY,
    KYSO_RESULT_TEMPERROR,
    KYSO_RESULT_PERMERROR
} kyso_result;

const char *kyso_result_str(kyso_result r);

typedef enum {
    KYSO_REV_NOT_CHECKED = 0,
    KYSO_REV_GOOD,
    KYSO_REV_REVOKED,
    KYSO_REV_UNKNOWN
} kyso_revocation;

/* How the revocation status of a certificate was decided. */
typedef struct {
    kyso_revocation status;
    const char *source; /* "ocsp", "crl", "crl-file" or "none" */
    int cached;         /* answered from the cache, no network */
    int reason;         /* CRLReason when revoked, else -1 */
    time_t revoked_at;
    time_t this_update; /* of the response or CRL that decided */
    time_t checked_at;
} kyso_rev_info;

typedef struct {
    char *subject;                 /* RFC 2253, UTF-8 */
    char *common_name;             /* subject CN, UTF-8, or NULL */
    char *organization;            /* subject O, UTF-8, or NULL */
    char *email;                   /* the address matched to From, else the first one */
    char *issuer;                  /* RFC 2253, UTF-8 */
    char *serial;                  /* upper-case hex */
    int cert_found;                /* the signer's certificate was available */
    int signature_ok;              /* signature and message digest verify */
    int chain_ok;                  /* path to an anchor, validity, key usage, EKU */
    char *chain_error;             /* NULL when chain_ok */
    kyso_revocation revocation;    /* worst over the certificate's whole chain */
    kyso_rev_info revocation_info; /* of the link that decided it */
    int from_match;
} kyso_signer_report;

typedef struct {
    kyso_result result;
    char *reason;   /* short, ASCII, for humans and A-R comments */
    char *from;     /* the single From address, or NULL */
    int pass_index; /* signer that earned pass, -1 otherwise */
    size_t nsigners;
    kyso_signer_report *signers;
} kyso_verdict;

/* Judges a message. Fails only on internal errors; every property of the
 * message, however broken, becomes a verdict. */
kyso_status kyso_verify_message(kyso_verdict **out, const kyso_trust *t, const char *msg,
                                size_t len);
void kyso_verdict_free(kyso_verdict *v);

/* Checks our own signing certificate as a recipient would: path to the
 * anchors of t, validity, and revocation (online when t has a revoker).
 * *days_left gets the days until notAfter (negative once expired). */
kyso_status kyso_signer_check(kyso_signer_report *out, int *days_left, const kyso_trust *t,
                              const kyso_signer *s);
void kyso_signer_report_clear(kyso_signer_report *r);

/* Describes the message's S/MIME structure, signers, certificates,
 * algorithms and signed attributes, without judging trust. */
kyso_status kyso_inspect_message(kyso_buf *out, const char *msg, size_t len);

/* Value of an Authentication-Results header (without the name), ASCII only. */
kyso_status kyso_verdict_auth_results(kyso_buf *out, const kyso_verdict *v,
                                      const char *authserv_id);
/* One JSON object, UTF-8, no trailing newline. */
kyso_status kyso_verdict_json(kyso_buf *out, const kyso_verdict *v);
/* One line for people. */
kyso_status kyso_verdict_summary(kyso_buf *out, const kyso_verdict *v);

#ifdef __cplusplus
}
#endif

#endif
