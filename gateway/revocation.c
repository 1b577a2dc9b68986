/*
 * revocation.c - live certificate status: OCSP (RFC 6960) first, CRL
 * (RFC 5280) from the distribution point as fallback, both over OpenSSL's
 * OSSL_HTTP client with a per-message deadline and response-size caps.
 *
 * Answers are cached by certificate (issuer name and key hash, serial) until
 * the response's nextUpdate, bounded in number. CRLs are cached in memory and
 * on disk (so a restart does not refetch them), verified against their
 * issuer every time they are used, and refreshed before nextUpdate. A CRL or
 * OCSP answer past its nextUpdate counts as unknown, never good.
 */
#include <dirent.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/http.h>
#include <openssl/ocsp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "internal.h"

#define MAX_OCSP_RESPONSE  (64 * 1024)
#define MAX_CRL            (16 * 1024 * 1024)
#define CLOCK_SKEW         300  /* seconds allowed around thisUpdate/nextUpdate */
#define NO_NEXT_UPDATE_TTL 3600 /* cache time of answers without nextUpdate */
#define MAX_UNBOUNDED_AGE  3600 /* age limit of answers with neither nonce nor nextUpdate */
#define REFRESH_MARGIN     0.2  /* refresh a CRL in the last fifth of its life */

typedef struct {
    unsigned char key[32]; /* SHA-256 of the DER OCSP CertID (SHA-1 based) */
    kyso_rev_info info;
    time_t expires;
    time_t stored;
} status_entry;

typedef struct {
    char *url;
    X509_CRL *crl;
    X509 *issuer; /* who must have signed it; NULL until first used */
    time_t next_update;
    time_t fetched;
} crl_entry;

#define DOWN_SLOTS   32
#define DOWN_SECONDS 30 /* a responder that failed is skipped this long */

struct kyso_revoker {
    kyso_revoker_opts o;
    pthread_mutex_t lock;
    struct {
        char url[256];
        long long until_ms;
    } down[DOWN_SLOTS]; /* while a responder is down, messages do not wait on it */
    status_entry *entries;
    size_t nentries;
    crl_entry *crls;
    size_t ncrls;
    unsigned long ocsp_requests, crl_fetches, cache_hits;
};

static char *dup_opt(const char *s)
{
    return s && *s ? strdup(s) : NULL;
}

kyso_status kyso_revoker_new(kyso_revoker **out, const kyso_revoker_opts *o)
{
    kyso_revoker *r = calloc(1, sizeof(*r));

    *out = NULL;
    if (r == NULL)
        return KYSO_ERR_NOMEM;
    r->o = *o;
    r->o.cache_dir = dup_opt(o->cache_dir);
    r->o.ocsp_url = dup_opt(o->ocsp_url);
    r->o.proxy = dup_opt(o->proxy);
    if (r->o.timeout_ms <= 0)
        r->o.timeout_ms = 3000;
    if (r->o.max_entries == 0)
        r->o.max_entries = 10000;
    r->entries = calloc(r->o.max_entries, sizeof(*r->entries));
    if (r->entries == NULL) {
        kyso_revoker_free(r);
        return KYSO_ERR_NOMEM;
    }
    pthread_mutex_init(&r->lock, NULL);
    if (r->o.cache_dir)
        mkdir(r->o.cache_dir, 0700);
    *out = r;
    return KYSO_OK;
}

void kyso_revoker_free(kyso_revoker *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < r->ncrls; i++) {
        free(r->crls[i].url);
        X509_CRL_free(r->crls[i].crl);
        X509_free(r->crls[i].issuer);
    }
    free(r->crls);
    free(r->entries);
    free((char *)r->o.cache_dir);
    free((char *)r->o.ocsp_url);
    free((char *)r->o.proxy);
    pthread_mutex_destroy(&r->lock);
    free(r);
}

const kyso_revoker_opts *kyso_revoker_options(const kyso_revoker *r)
{
    return &r->o;
}

static long long now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

long long kyso_revoker_deadline(const kyso_revoker *r)
{
    return now_ms() + r->o.timeout_ms;
}

static time_t asn1_to_time(const ASN1_TIME *t)
{
    struct tm tm;

    if (t == NULL || !ASN1_TIME_to_tm(t, &tm))
        return 0;
    return timegm(&tm);
}

static int cert_key(X509 *cert, X509 *issuer, unsigned char key[32])
{
    OCSP_CERTID *id = OCSP_cert_to_id(NULL, cert, issuer);
    unsigned char *der = NULL;
    int n = id ? i2d_OCSP_CERTID(id, &der) : -1;
    int ok = n > 0 && EVP_Digest(der, (size_t)n, key, NULL, EVP_sha256(), NULL);

    OPENSSL_free(der);
    OCSP_CERTID_free(id);
    return ok;
}

/* A new file next to path, unique to this writer (threads and processes may
 * cache the same answer at once); renamed over path when complete. */
static FILE *temp_beside(const char *path, char *tmp, size_t len)
{
    int fd;
    FILE *f;

    if ((size_t)snprintf(tmp, len, "%s.XXXXXX", path) >= len || (fd = mkstemp(tmp)) < 0)
        return NULL;
    if ((f = fdopen(fd, "w")) == NULL) {
        close(fd);
        unlink(tmp);
    }
    return f;
}

static void status_path(const kyso_revoker *r, const unsigned char key[32], char *out, size_t len)
{
    size_t n = (size_t)snprintf(out, len, "%s/status-", r->o.cache_dir);

    for (int i = 0; i < 16 && n + 3 < len; i++, n += 2)
        sprintf(out + n, "%02x", key[i]);
}

static const char *source_name(const char *s)
{
    /* Static strings only, so a cached info never points into a file buffer. */
    if (strcmp(s, "ocsp") == 0)
        return "ocsp";
    if (strcmp(s, "crl") == 0)
        return "crl";
    return "none";
}

/* Answers outlive a restart: one small file per certificate. */
static int disk_get(kyso_revoker *r, const unsigned char key[32], kyso_rev_info *info,
                    time_t *expires)
{
    char path[4200], src[16];
    long long ra, tu, ca, ex;
    int st, reason, n;
    FILE *f;

    if (r->o.cache_dir == NULL)
        return 0;
    status_path(r, key, path, sizeof(path));
    if ((f = fopen(path, "r")) == NULL)
        return 0;
    n = fscanf(f, "%d %15s %d %lld %lld %lld %lld", &st, src, &reason, &ra, &tu, &ca, &ex);
    fclose(f);
    if (n != 7 || (st != KYSO_REV_GOOD && st != KYSO_REV_REVOKED) || ex <= time(NULL))
        return 0;
    memset(info, 0, sizeof(*info));
    info->status = (kyso_revocation)st;
    info->source = source_name(src);
    info->reason = reason;
    info->revoked_at = (time_t)ra;
    info->this_update = (time_t)tu;
    info->checked_at = (time_t)ca;
    *expires = (time_t)ex;
    return 1;
}

static void disk_put(kyso_revoker *r, const unsigned char key[32], const kyso_rev_info *info,
                     time_t expires)
{
    char path[4200], tmp[4300];
    FILE *f;

    if (r->o.cache_dir == NULL)
        return;
    status_path(r, key, path, sizeof(path));
    if ((f = temp_beside(path, tmp, sizeof(tmp))) == NULL)
        return;
    fprintf(f, "%d %s %d %lld %lld %lld %lld\n", (int)info->status, info->source, info->reason,
            (long long)info->revoked_at, (long long)info->this_update, (long long)info->checked_at,
            (long long)expires);
    if (fclose(f) != 0 || rename(tmp, path) != 0)
        unlink(tmp);
}

static void cache_put(kyso_revoker *r, const unsigned char key[32], const kyso_rev_info *info,
                      time_t expires);

static int cache_get(kyso_revoker *r, const unsigned char key[32], kyso_rev_info *info)
{
    time_t now = time(NULL);
    int hit = 0;

    pthread_mutex_lock(&r->lock);
    for (size_t i = 0; i < r->nentries; i++) {
        if (memcmp(r->entries[i].key, key, 32) != 0 || r->entries[i].expires <= now)
            continue;
        *info = r->entries[i].info;
        info->cached = 1;
        r->cache_hits++;
        hit = 1;
        break;
    }
    pthread_mutex_unlock(&r->lock);
    if (!hit) {
        time_t expires;

        if (disk_get(r, key, info, &expires)) {
            cache_put(r, key, info, expires);
            info->cached = 1;
            pthread_mutex_lock(&r->lock);
            r->cache_hits++;
            pthread_mutex_unlock(&r->lock);
            hit = 1;
        }
    }
    return hit;
}

static void cache_put(kyso_revoker *r, const unsigned char key[32], const kyso_rev_info *info,
                      time_t expires)
{
    size_t slot = r->nentries, oldest = 0;
    time_t now = time(NULL);

    if (info->status == KYSO_REV_UNKNOWN || expires <= now)
        return;
    pthread_mutex_lock(&r->lock);
    for (size_t i = 0; i < r->nentries; i++) {
        if (memcmp(r->entries[i].key, key, 32) == 0 || r->entries[i].expires <= now) {
            slot = i;
            break;
        }
        if (r->entries[i].stored < r->entries[oldest].stored)
            oldest = i;
    }
    if (slot == r->nentries) {
        if (r->nentries < r->o.max_entries)
            r->nentries++;
        else
            slot = oldest; /* full: the oldest answer goes */
    }
    memcpy(r->entries[slot].key, key, 32);
    r->entries[slot].info = *info;
    r->entries[slot].info.cached = 0;
    r->entries[slot].expires = expires;
    r->entries[slot].stored = now;
    pthread_mutex_unlock(&r->lock);
}

/* ---- HTTP ----------------------------------------------------------------- */

/* A non-blocking TCP connection made within the deadline. OpenSSL's own
 * connect retries a refused connection until its timeout, which would spend
 * the whole deadline on a dead OCSP responder and leave none for the CRL. */
/* Name resolution within the deadline: a numeric address needs none; a
 * name is looked up asynchronously and abandoned when time runs out (the
 * request then stays allocated, as the resolver thread may still use it). */
static struct addrinfo *resolve_within(const char *host, const char *port, long long deadline)
{
    struct addrinfo hints, *res = NULL;
    struct gaicb *req;
    struct timespec ts;
    long long left;

    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
    if (getaddrinfo(host, port, &hints, &res) == 0)
        return res;
    if ((req = calloc(1, sizeof(*req) + sizeof(hints))) == NULL)
        return NULL;
    memcpy(req + 1, &hints, sizeof(hints));
    ((struct addrinfo *)(req + 1))->ai_flags = AI_NUMERICSERV;
    req->ar_name = strdup(host);
    req->ar_service = strdup(port);
    req->ar_request = (struct addrinfo *)(req + 1);
    if (req->ar_name == NULL || req->ar_service == NULL ||
        getaddrinfo_a(GAI_NOWAIT, &req, 1, NULL) != 0)
        goto drop;
    left = deadline - now_ms();
    ts.tv_sec = left > 0 ? left / 1000 : 0;
    ts.tv_nsec = left > 0 ? (left % 1000) * 1000000 : 0;
    if (left <= 0 || gai_suspend((const struct gaicb *const *)&req, 1, &ts) != 0 ||
        gai_error(req) != 0) {
        int cancel = gai_cancel(req);

        if (cancel == EAI_NOTCANCELED ||
            (cancel != EAI_CANCELED && cancel != EAI_ALLDONE && gai_error(req) == EAI_INPROGRESS)) {
            kyso_log(KYSO_LOG_WARNING, NULL, "dns",
                     "host=%s error=\"no answer before the deadline\"", host);
            return NULL; /* still in use by the resolver: left allocated */
        }
        if (req->ar_result)
            freeaddrinfo(req->ar_result);
        goto drop;
    }
    res = req->ar_result;
    free((char *)req->ar_name);
    free((char *)req->ar_service);
    free(req);
    return res;
drop:
    free((char *)req->ar_name);
    free((char *)req->ar_service);
    free(req);
    return NULL;
}

static BIO *connect_within(const char *host, const char *port, long long deadline)
{
    struct addrinfo *res, *ai;
    BIO *b = NULL;

    if ((res = resolve_within(host, port, deadline)) == NULL)
        return NULL;
    for (ai = res; ai && b == NULL; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), err = 0;
        socklen_t len = sizeof(err);
        long long left;

        if (fd < 0)
            continue;
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
            struct pollfd p = {fd, POLLOUT, 0};

            left = deadline - now_ms();
            if (errno != EINPROGRESS || left <= 0 || poll(&p, 1, (int)left) != 1 ||
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
                close(fd);
                continue;
            }
        }
        if ((b = BIO_new_socket(fd, BIO_CLOSE)) == NULL)
            close(fd);
        else
            BIO_set_nbio(b, 1);
    }
    freeaddrinfo(res);
    return b;
}

/* GET (it NULL) or POST of an ASN.1 value over plain HTTP, through the
 * proxy when set. The exchange is driven non-blocking and every wait is
 * bounded by the milliseconds left, so the deadline holds to the
 * millisecond (OpenSSL's own timeout counts whole seconds). The answer is
 * capped at max bytes. Returns 1 with the body in out. */
static int url_is_down(kyso_revoker *r, const char *url)
{
    long long now = now_ms();
    int down = 0;

    pthread_mutex_lock(&r->lock);
    for (int i = 0; i < DOWN_SLOTS && !down; i++)
        down = r->down[i].until_ms > now && strcmp(r->down[i].url, url) == 0;
    pthread_mutex_unlock(&r->lock);
    return down;
}

static void url_mark(kyso_revoker *r, const char *url, int down)
{
    long long now = now_ms();
    int slot = -1;

    pthread_mutex_lock(&r->lock);
    for (int i = 0; i < DOWN_SLOTS; i++) {
        if (strcmp(r->down[i].url, url) == 0) {
            slot = i;
            break;
        }
        if (slot < 0 && r->down[i].until_ms <= now)
            slot = i;
    }
    if (slot >= 0 && (down || strcmp(r->down[slot].url, url) == 0)) {
        snprintf(r->down[slot].url, sizeof(r->down[slot].url), "%s", url);
        r->down[slot].until_ms = down ? now + DOWN_SECONDS * 1000LL : 0;
    }
    pthread_mutex_unlock(&r->lock);
}

static int http_exchange(kyso_revoker *r, const char *url, const char *ctype, const ASN1_ITEM *it,
                         const ASN1_VALUE *val, const char *want_ctype, size_t max,
                         long long deadline, kyso_buf *out)
{
    char *host = NULL, *port = NULL, *path = NULL, *phost = NULL, *pport = NULL;
    char hosthdr[300];
    int ssl = 0, rv = -1, ok = 0;
    BIO *conn = NULL;
    OSSL_HTTP_REQ_CTX *rctx = NULL;

    /* Only a real attempt, with time to answer, may mark a responder down:
     * a message that spent its budget elsewhere says nothing about it. */
    int fair = deadline - now_ms() >= 1000;

    if (url_is_down(r, url)) {
        kyso_log(KYSO_LOG_DEBUG, NULL, "http", "url=%s skipped=\"failed less than %ds ago\"", url,
                 DOWN_SECONDS);
        return 0;
    }
    if (!OSSL_HTTP_parse_url(url, &ssl, NULL, &host, &port, NULL, &path, NULL, NULL) || ssl)
        goto out;
    if (r->o.proxy &&
        !OSSL_HTTP_parse_url(r->o.proxy, NULL, NULL, &phost, &pport, NULL, NULL, NULL, NULL))
        goto out;
    if ((conn = connect_within(phost ? phost : host, pport ? pport : port, deadline)) == NULL) {
        if (fair)
            url_mark(r, url, 1);
        goto out;
    }
    snprintf(hosthdr, sizeof(hosthdr), "%s:%s", host, port);
    if ((rctx = OSSL_HTTP_REQ_CTX_new(conn, conn, 0)) == NULL ||
        /* Through a proxy the request line carries the absolute URI. */
        !OSSL_HTTP_REQ_CTX_set_request_line(rctx, it != NULL, r->o.proxy ? host : NULL,
                                            r->o.proxy ? port : NULL, path) ||
        !OSSL_HTTP_REQ_CTX_add1_header(rctx, "Host", hosthdr) ||
        !OSSL_HTTP_REQ_CTX_set_expected(rctx, want_ctype, want_ctype != NULL, 0, 0) ||
        (it != NULL && !OSSL_HTTP_REQ_CTX_set1_req(rctx, ctype, it, val)))
        goto out;
    OSSL_HTTP_REQ_CTX_set_max_response_length(rctx, max);
    while ((rv = OSSL_HTTP_REQ_CTX_nbio(rctx)) == -1) {
        struct pollfd pfd;
        long long left = deadline - now_ms();

        pfd.fd = (int)BIO_get_fd(conn, NULL);
        pfd.events = BIO_should_write(conn) ? POLLOUT : POLLIN;
        pfd.revents = 0;
        if (left <= 0 || poll(&pfd, 1, (int)left) <= 0)
            break;
    }
    if (rv == 1 && want_ctype != NULL) {
        BIO *mem = OSSL_HTTP_REQ_CTX_get0_mem_bio(rctx);
        char *data = NULL;
        long n = mem ? BIO_get_mem_data(mem, &data) : 0;

        ok = n > 0 && (size_t)n <= max && kyso_buf_append(out, data, (size_t)n) == KYSO_OK;
    } else if (rv == 1) {
        /* Not ASN.1-framed (a CRL may come as PEM): OpenSSL leaves the body
         * on the connection; read it to the end, bounded like the rest. */
        size_t want = OSSL_HTTP_REQ_CTX_get_resp_len(rctx);
        char chunk[16384];

        for (;;) {
            int n = BIO_read(conn, chunk, sizeof(chunk));
            struct pollfd pfd;
            long long left;

            if (n > 0) {
                if (out->len + (size_t)n > max || kyso_buf_append(out, chunk, (size_t)n) != KYSO_OK)
                    break;
                if (want && out->len >= want) {
                    ok = 1;
                    break;
                }
                continue;
            }
            if (n == 0 || !BIO_should_retry(conn)) {
                ok = out->len > 0 && (!want || out->len == want);
                break;
            }
            pfd.fd = (int)BIO_get_fd(conn, NULL);
            pfd.events = POLLIN;
            pfd.revents = 0;
            left = deadline - now_ms();
            if (left <= 0 || poll(&pfd, 1, (int)left) <= 0)
                break;
        }
    }
    if (!ok) {
        kyso_log(KYSO_LOG_DEBUG, NULL, "http", "url=%s rv=%d", url, rv);
        kyso_log_openssl(KYSO_LOG_DEBUG, NULL, "http");
    }
    /* No answer in time is "down" too; a server that answered is not. */
    if (fair || rv != -1)
        url_mark(r, url, rv == -1);
out:
    OSSL_HTTP_REQ_CTX_free(rctx);
    BIO_free_all(conn);
    OPENSSL_free(host);
    OPENSSL_free(port);
    OPENSSL_free(path);
    OPENSSL_free(phost);
    OPENSSL_free(pport);
    ERR_clear_error();
    return ok;
}

/* ---- OCSP ---------------------------------------------------------------- */

static const char *ocsp_url_of(kyso_revoker *r, X509 *cert, STACK_OF(OPENSSL_STRING) * *aia)
{
    *aia = NULL;
    if (r->o.ocsp_url)
        return r->o.ocsp_url;
    *aia = X509_get1_ocsp(cert);
    for (int i = 0; *aia && i < sk_OPENSSL_STRING_num(*aia); i++) {
        const char *u = sk_OPENSSL_STRING_value(*aia, i);

        if (strncmp(u, "http://", 7) == 0)
            return u;
    }
    return NULL;
}

static int check_ocsp(kyso_revoker *r, X509 *cert, X509 *issuer, X509_STORE *store,
                      STACK_OF(X509) * untrusted, long long deadline, kyso_rev_info *info,
                      time_t *expires)
{
    STACK_OF(OPENSSL_STRING) *aia = NULL;
    const char *url = ocsp_url_of(r, cert, &aia);
    OCSP_REQUEST *req = NULL;
    OCSP_CERTID *id = NULL;
    OCSP_RESPONSE *resp = NULL;
    OCSP_BASICRESP *bs = NULL;
    kyso_buf body = KYSO_BUF_INIT;
    const unsigned char *p;
    ASN1_GENERALIZEDTIME *rev = NULL, *thisupd = NULL, *nextupd = NULL;
    int status = -1, reason = -1, ok = 0, nonce;

    if (url == NULL)
        goto out;
    if ((req = OCSP_REQUEST_new()) == NULL || (id = OCSP_cert_to_id(NULL, cert, issuer)) == NULL)
        goto out;
    if (!OCSP_request_add0_id(req, OCSP_CERTID_dup(id)) || !OCSP_request_add1_nonce(req, NULL, -1))
        goto out;
    pthread_mutex_lock(&r->lock);
    r->ocsp_requests++;
    pthread_mutex_unlock(&r->lock);
    if (!http_exchange(r, url, "application/ocsp-request", ASN1_ITEM_rptr(OCSP_REQUEST),
                       (const ASN1_VALUE *)req, "application/ocsp-response", MAX_OCSP_RESPONSE,
                       deadline, &body)) {
        kyso_log(KYSO_LOG_WARNING, NULL, "ocsp",
                 "url=%s error=\"no answer (connection failed or deadline passed)\"", url);
        goto out;
    }
    p = (const unsigned char *)body.data;
    if ((resp = d2i_OCSP_RESPONSE(NULL, &p, (long)body.len)) == NULL ||
        OCSP_response_status(resp) != OCSP_RESPONSE_STATUS_SUCCESSFUL ||
        (bs = OCSP_response_get1_basic(resp)) == NULL) {
        kyso_log(KYSO_LOG_WARNING, NULL, "ocsp", "url=%s error=\"unusable response\"", url);
        goto out;
    }
    /* A replayed answer to someone else's question is refused; responders
     * that do not echo nonces are accepted on freshness alone. */
    nonce = OCSP_check_nonce(req, bs);
    if (nonce == 0) {
        kyso_log(KYSO_LOG_WARNING, NULL, "ocsp", "url=%s error=\"nonce mismatch\"", url);
        goto out;
    }
    /* Signed by the CA itself or a responder it delegated (id-kp-OCSPSigning). */
    {
        STACK_OF(X509) *certs = sk_X509_dup(untrusted);

        if (certs)
            sk_X509_push(certs, issuer);
        ok = OCSP_basic_verify(bs, certs, store, 0) > 0;
        sk_X509_free(certs);
    }
    if (!ok) {
        kyso_log(KYSO_LOG_WARNING, NULL, "ocsp", "url=%s error=\"response signature not trusted\"",
                 url);
        goto out;
    }
    ok = 0;
    if (!OCSP_resp_find_status(bs, id, &status, &reason, &rev, &thisupd, &nextupd)) {
        kyso_log(KYSO_LOG_WARNING, NULL, "ocsp", "url=%s error=\"certificate not in response\"",
                 url);
        goto out;
    }
    /* Without a nonce and without nextUpdate nothing bounds how old a
     * (possibly replayed) answer is: then it must be recent. */
    if (!OCSP_check_validity(thisupd, nextupd, CLOCK_SKEW,
                             nonce == 1 || nextupd != NULL ? -1 : MAX_UNBOUNDED_AGE)) {
        kyso_log(KYSO_LOG_WARNING, NULL, "ocsp", "url=%s error=\"stale response\"", url);
        goto out;
    }
    info->source = "ocsp";
    info->this_update = asn1_to_time(thisupd);
    info->checked_at = time(NULL);
    if (status == V_OCSP_CERTSTATUS_GOOD) {
        info->status = KYSO_REV_GOOD;
    } else if (status == V_OCSP_CERTSTATUS_REVOKED) {
        info->status = KYSO_REV_REVOKED;
        info->reason = reason;
        info->revoked_at = asn1_to_time(rev);
    } else {
        info->status = KYSO_REV_UNKNOWN;
    }
    *expires = nextupd ? asn1_to_time(nextupd) : time(NULL) + NO_NEXT_UPDATE_TTL;
    ok = 1;
out:
    ERR_clear_error();
    X509_email_free(aia);
    kyso_buf_free(&body);
    OCSP_BASICRESP_free(bs);
    OCSP_RESPONSE_free(resp);
    OCSP_CERTID_free(id);
    OCSP_REQUEST_free(req);
    return ok;
}

/* ---- CRL ------------------------------------------------------------------ */

static const char *crl_url_of(X509 *cert, STACK_OF(DIST_POINT) * *dps)
{
    *dps = X509_get_ext_d2i(cert, NID_crl_distribution_points, NULL, NULL);
    for (int i = 0; *dps && i < sk_DIST_POINT_num(*dps); i++) {
        DIST_POINT *dp = sk_DIST_POINT_value(*dps, i);

        if (dp->distpoint == NULL || dp->distpoint->type != 0)
            continue;
        for (int j = 0; j < sk_GENERAL_NAME_num(dp->distpoint->name.fullname); j++) {
            GENERAL_NAME *g = sk_GENERAL_NAME_value(dp->distpoint->name.fullname, j);

            if (g->type == GEN_URI &&
                strncmp((const char *)ASN1_STRING_get0_data(g->d.uniformResourceIdentifier),
                        "http://", 7) == 0)
                return (const char *)ASN1_STRING_get0_data(g->d.uniformResourceIdentifier);
        }
    }
    return NULL;
}

static char *crl_cache_path(const kyso_revoker *r, const char *url)
{
    unsigned char h[32];
    char *p;

    if (r->o.cache_dir == NULL)
        return NULL;
    EVP_Digest(url, strlen(url), h, NULL, EVP_sha256(), NULL);
    if ((p = malloc(strlen(r->o.cache_dir) + 80)) == NULL)
        return NULL;
    sprintf(p, "%s/", r->o.cache_dir);
    for (int i = 0; i < 16; i++)
        sprintf(p + strlen(p), "%02x", h[i]);
    strcat(p, ".crl");
    return p;
}

/* DER as RFC 5280 says, or PEM as some servers publish it. */
static X509_CRL *crl_from_bytes(const char *data, size_t len)
{
    const unsigned char *p = (const unsigned char *)data;
    X509_CRL *crl = d2i_X509_CRL(NULL, &p, (long)len);

    if (crl == NULL) {
        BIO *b = BIO_new_mem_buf(data, (int)len); /* read-only: no copy */

        crl = b ? PEM_read_bio_X509_CRL(b, NULL, NULL, NULL) : NULL;
        BIO_free(b);
    }
    ERR_clear_error();
    return crl;
}

static X509_CRL *crl_from_file(const char *path)
{
    kyso_buf b = KYSO_BUF_INIT;
    X509_CRL *crl = NULL;

    if (kyso_buf_read_file(&b, path, MAX_CRL) == KYSO_OK)
        crl = crl_from_bytes(b.data, b.len);
    kyso_buf_free(&b);
    return crl;
}

static void crl_store(kyso_revoker *r, const char *url, X509_CRL *crl, X509 *issuer)
{
    crl_entry *e = NULL;
    char *path;

    pthread_mutex_lock(&r->lock);
    for (size_t i = 0; i < r->ncrls; i++)
        if (strcmp(r->crls[i].url, url) == 0)
            e = &r->crls[i];
    if (e == NULL) {
        crl_entry *n = realloc(r->crls, (r->ncrls + 1) * sizeof(*n));

        if (n == NULL) {
            pthread_mutex_unlock(&r->lock);
            return;
        }
        r->crls = n;
        e = &r->crls[r->ncrls++];
        memset(e, 0, sizeof(*e));
        e->url = strdup(url);
    }
    X509_CRL_free(e->crl);
    X509_CRL_up_ref(crl);
    e->crl = crl;
    if (issuer && e->issuer != issuer) {
        X509_free(e->issuer);
        X509_up_ref(issuer);
        e->issuer = issuer;
    }
    e->next_update = asn1_to_time(X509_CRL_get0_nextUpdate(crl));
    e->fetched = time(NULL);
    pthread_mutex_unlock(&r->lock);
    if ((path = crl_cache_path(r, url)) != NULL) {
        char tmp[4200];
        FILE *f;

        /* Written aside and renamed, so a crash never leaves half a CRL. */
        if ((f = temp_beside(path, tmp, sizeof(tmp))) != NULL) {
            int ok = i2d_X509_CRL_fp(f, crl) > 0;

            ok = fclose(f) == 0 && ok;
            if (!ok || rename(tmp, path) != 0)
                unlink(tmp);
        }
        /* The URL beside it, so a later process knows what the file is. */
        snprintf(tmp, sizeof(tmp), "%.*s.url", (int)(strlen(path) - 4), path);
        if ((f = fopen(tmp, "w")) != NULL) {
            fprintf(f, "%s\n", url);
            fclose(f);
        }
        free(path);
    }
}

static X509_CRL *crl_fetch(kyso_revoker *r, const char *url, long long deadline)
{
    kyso_buf body = KYSO_BUF_INIT;
    X509_CRL *crl = NULL;

    pthread_mutex_lock(&r->lock);
    r->crl_fetches++;
    pthread_mutex_unlock(&r->lock);
    if (http_exchange(r, url, NULL, NULL, NULL, NULL, MAX_CRL, deadline, &body))
        crl = crl_from_bytes(body.data, body.len);
    kyso_buf_free(&body);
    if (crl == NULL)
        kyso_log(KYSO_LOG_WARNING, NULL, "crl", "url=%s error=\"fetch failed\"", url);
    return crl;
}

/* The cached CRL for url (memory, then disk), with a reference, or NULL. */
static X509_CRL *crl_cached(kyso_revoker *r, const char *url)
{
    X509_CRL *crl = NULL;
    char *path;

    pthread_mutex_lock(&r->lock);
    for (size_t i = 0; i < r->ncrls && crl == NULL; i++)
        if (strcmp(r->crls[i].url, url) == 0 && r->crls[i].crl) {
            crl = r->crls[i].crl;
            X509_CRL_up_ref(crl);
        }
    pthread_mutex_unlock(&r->lock);
    if (crl || (path = crl_cache_path(r, url)) == NULL)
        return crl;
    crl = crl_from_file(path);
    free(path);
    if (crl)
        crl_store(r, url, crl, NULL); /* unverified until used with its issuer */
    return crl;
}

/* Whether crl comes from issuer: its name and its signature. */
static int crl_signed_by(X509_CRL *crl, X509 *issuer)
{
    EVP_PKEY *pk = X509_get0_pubkey(issuer);
    int ok = pk && X509_NAME_cmp(X509_CRL_get_issuer(crl), X509_get_subject_name(issuer)) == 0 &&
             X509_CRL_verify(crl, pk) > 0;

    ERR_clear_error();
    return ok;
}

/* Whether crl (already known to come from its issuer) is complete and
 * current. Partitioned, indirect and delta CRLs (issuingDistributionPoint,
 * deltaCRLIndicator) and unknown critical extensions are refused: judged as
 * complete they would call a revoked certificate good. */
static int crl_current(X509_CRL *crl, time_t now)
{
    time_t next = asn1_to_time(X509_CRL_get0_nextUpdate(crl));

    for (int i = 0; i < X509_CRL_get_ext_count(crl); i++) {
        X509_EXTENSION *ext = X509_CRL_get_ext(crl, i);
        int nid = OBJ_obj2nid(X509_EXTENSION_get_object(ext));

        if (nid == NID_issuing_distribution_point || nid == NID_delta_crl)
            return 0;
        if (X509_EXTENSION_get_critical(ext) && nid != NID_crl_number &&
            nid != NID_authority_key_identifier)
            return 0;
    }
    return next != 0 && next + CLOCK_SKEW > now;
}

/* Whether crl is the issuer's, correctly signed, complete and current. */
static int crl_usable(X509_CRL *crl, X509 *issuer, time_t now)
{
    return crl_signed_by(crl, issuer) && crl_current(crl, now);
}

/* Whether fresh is older than what we have (lower cRLNumber): an attacker
 * on the path could serve last month's CRL, still inside its validity. */
static int crl_older(X509_CRL *fresh, X509_CRL *have)
{
    ASN1_INTEGER *a, *b;
    int older = 0;

    if (have == NULL)
        return 0;
    a = X509_CRL_get_ext_d2i(fresh, NID_crl_number, NULL, NULL);
    b = X509_CRL_get_ext_d2i(have, NID_crl_number, NULL, NULL);
    if (a && b)
        older = ASN1_INTEGER_cmp(a, b) < 0;
    ASN1_INTEGER_free(a);
    ASN1_INTEGER_free(b);
    return older;
}

static int crl_due(const X509_CRL *crl, time_t now)
{
    time_t last = asn1_to_time(X509_CRL_get0_lastUpdate(crl));
    time_t next = asn1_to_time(X509_CRL_get0_nextUpdate(crl));

    return next == 0 || now >= next - (time_t)((double)(next - last) * REFRESH_MARGIN);
}

static int check_crl(kyso_revoker *r, X509 *cert, X509 *issuer, long long deadline,
                     kyso_rev_info *info, time_t *expires)
{
    STACK_OF(DIST_POINT) *dps = NULL;
    const char *url = crl_url_of(cert, &dps);
    X509_CRL *crl = NULL;
    X509_REVOKED *rev = NULL;
    time_t now = time(NULL);
    int ok = 0;

    if (url == NULL)
        goto out;
    crl = crl_cached(r, url);
    /* A cached CRL its issuer did not sign (planted on disk or by a
     * refresh) counts for nothing, not even as a floor for cRLNumber. */
    if (crl && !crl_signed_by(crl, issuer)) {
        X509_CRL_free(crl);
        crl = NULL;
    }
    if (crl == NULL || !crl_current(crl, now)) {
        X509_CRL *fresh = crl_fetch(r, url, deadline);

        if (fresh && crl_usable(fresh, issuer, now) && !crl_older(fresh, crl)) {
            X509_CRL_free(crl);
            crl = fresh;
            crl_store(r, url, crl, issuer);
        } else {
            if (fresh)
                kyso_log(KYSO_LOG_WARNING, NULL, "crl",
                         "url=%s error=\"CRL not signed by the issuer, or stale\"", url);
            X509_CRL_free(fresh);
            goto out; /* a stale CRL says nothing: unknown */
        }
    }
    info->source = "crl";
    info->this_update = asn1_to_time(X509_CRL_get0_lastUpdate(crl));
    info->checked_at = now;
    if (X509_CRL_get0_by_cert(crl, &rev, cert) == 1) {
        ASN1_ENUMERATED *rsn = X509_REVOKED_get_ext_d2i(rev, NID_crl_reason, NULL, NULL);

        info->status = KYSO_REV_REVOKED;
        info->revoked_at = asn1_to_time(X509_REVOKED_get0_revocationDate(rev));
        info->reason = rsn ? (int)ASN1_ENUMERATED_get(rsn) : -1;
        ASN1_ENUMERATED_free(rsn);
    } else {
        info->status = KYSO_REV_GOOD;
    }
    *expires = asn1_to_time(X509_CRL_get0_nextUpdate(crl));
    ok = 1;
out:
    ERR_clear_error();
    X509_CRL_free(crl);
    CRL_DIST_POINTS_free(dps);
    return ok;
}

kyso_revocation kyso_revoker_check(kyso_revoker *r, X509 *cert, X509 *issuer, X509_STORE *store,
                                   STACK_OF(X509) * untrusted, long long deadline,
                                   kyso_rev_info *info)
{
    unsigned char key[32];
    int have_key = cert_key(cert, issuer, key);
    time_t expires = 0;
    int done = 0;

    memset(info, 0, sizeof(*info));
    info->status = KYSO_REV_UNKNOWN;
    info->source = "none";
    info->reason = -1;
    if (have_key && cache_get(r, key, info))
        return info->status;
    for (int step = 0; step < 2 && !done; step++) {
        int ocsp = (r->o.order == KYSO_REV_ORDER_OCSP_CRL && step == 0) ||
                   (r->o.order == KYSO_REV_ORDER_CRL_OCSP && step == 1) ||
                   (r->o.order == KYSO_REV_ORDER_OCSP && step == 0);
        int crl = (r->o.order == KYSO_REV_ORDER_OCSP_CRL && step == 1) ||
                  (r->o.order == KYSO_REV_ORDER_CRL_OCSP && step == 0) ||
                  (r->o.order == KYSO_REV_ORDER_CRL && step == 0);

        if (ocsp)
            done = check_ocsp(r, cert, issuer, store, untrusted, deadline, info, &expires) &&
                   info->status != KYSO_REV_UNKNOWN;
        else if (crl)
            done = check_crl(r, cert, issuer, deadline, info, &expires);
    }
    if (done && have_key) {
        cache_put(r, key, info, expires);
        disk_put(r, key, info, expires);
    }
    if (!done) {
        info->status = KYSO_REV_UNKNOWN;
        info->checked_at = time(NULL);
    }
    return info->status;
}

int kyso_revoker_refresh(kyso_revoker *r, int force)
{
    time_t now = time(NULL);
    int refreshed = 0;
    char **urls = NULL;
    X509 **issuers = NULL;
    size_t n = 0;

    /* Copy what to fetch: fetching happens without the lock. Only CRLs
     * whose issuer is known (they have been used) are refreshed, so each
     * new one is checked against that issuer before it replaces the old. */
    pthread_mutex_lock(&r->lock);
    urls = calloc(r->ncrls + 1, sizeof(*urls));
    issuers = calloc(r->ncrls + 1, sizeof(*issuers));
    for (size_t i = 0; urls && issuers && i < r->ncrls; i++) {
        if (r->crls[i].issuer == NULL ||
            !(force || r->crls[i].crl == NULL || crl_due(r->crls[i].crl, now)))
            continue;
        if ((urls[n] = strdup(r->crls[i].url)) == NULL)
            break;
        X509_up_ref(r->crls[i].issuer);
        issuers[n++] = r->crls[i].issuer;
    }
    pthread_mutex_unlock(&r->lock);
    for (size_t i = 0; i < n; i++) {
        X509_CRL *crl = crl_fetch(r, urls[i], now_ms() + r->o.timeout_ms);
        X509_CRL *have = crl ? crl_cached(r, urls[i]) : NULL;

        if (have && !crl_signed_by(have, issuers[i])) {
            X509_CRL_free(have);
            have = NULL;
        }
        /* A lower cRLNumber than the one we hold is a rollback, not news. */
        if (crl && crl_usable(crl, issuers[i], now) && !crl_older(crl, have)) {
            crl_store(r, urls[i], crl, issuers[i]);
            refreshed++;
        }
        X509_CRL_free(have);
        X509_CRL_free(crl);
        X509_free(issuers[i]);
        free(urls[i]);
    }
    free(urls);
    free(issuers);
    return refreshed;
}

kyso_status kyso_revoker_status(kyso_buf *out, kyso_revoker *r)
{
    kyso_status st = KYSO_OK;
    char nu[32], fe[32];

    pthread_mutex_lock(&r->lock);
    st = kyso_buf_printf(out,
                         "ocsp_requests=%lu crl_fetches=%lu cache_hits=%lu status_entries=%zu\n",
                         r->ocsp_requests, r->crl_fetches, r->cache_hits, r->nentries);
    for (size_t i = 0; st == KYSO_OK && i < r->ncrls; i++) {
        struct tm tm;

        gmtime_r(&r->crls[i].next_update, &tm);
        strftime(nu, sizeof(nu), "%Y-%m-%dT%H:%M:%SZ", &tm);
        gmtime_r(&r->crls[i].fetched, &tm);
        strftime(fe, sizeof(fe), "%Y-%m-%dT%H:%M:%SZ", &tm);
        st = kyso_buf_printf(
            out, "crl url=%s entries=%d next_update=%s loaded=%s%s\n", r->crls[i].url,
            r->crls[i].crl ? sk_X509_REVOKED_num(X509_CRL_get_REVOKED(r->crls[i].crl)) : 0, nu, fe,
            r->crls[i].next_update < time(NULL) ? " stale=yes" : "");
    }
    pthread_mutex_unlock(&r->lock);
    return st;
}

kyso_status kyso_revoker_scan_cache(kyso_revoker *r)
{
    DIR *d;
    struct dirent *de;

    if (r->o.cache_dir == NULL || (d = opendir(r->o.cache_dir)) == NULL)
        return KYSO_ERR_IO;
    while ((de = readdir(d)) != NULL) {
        size_t n = strlen(de->d_name);
        char path[4200], url[2048];
        FILE *f;

        if (n < 5 || strcmp(de->d_name + n - 4, ".url") != 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", r->o.cache_dir, de->d_name);
        if ((f = fopen(path, "r")) == NULL)
            continue;
        if (fgets(url, sizeof(url), f) != NULL) {
            url[strcspn(url, "\r\n")] = '\0';
            X509_CRL_free(crl_cached(r, url));
        }
        fclose(f);
    }
    closedir(d);
    return KYSO_OK;
}

int kyso_revoker_adopt_issuers(kyso_revoker *r, STACK_OF(X509) * certs)
{
    int adopted = 0;

    pthread_mutex_lock(&r->lock);
    for (size_t i = 0; i < r->ncrls; i++) {
        for (int j = 0; r->crls[i].crl && !r->crls[i].issuer && j < sk_X509_num(certs); j++) {
            X509 *x = sk_X509_value(certs, j);

            if (crl_signed_by(r->crls[i].crl, x)) {
                X509_up_ref(x);
                r->crls[i].issuer = x;
                adopted++;
            }
        }
    }
    pthread_mutex_unlock(&r->lock);
    return adopted;
}
