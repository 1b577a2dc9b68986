/*
 * kyso - the command line face of libkyso: sign and verify .eml files
 * offline, with exactly the code paths the milter uses.
 *
 * Exit codes: verify 0 pass, 2 none, 1 any other verdict; 64 usage,
 * 65 unusable input, 66 unreadable input, 69 key store unavailable, 70 internal.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kyso.h"

enum {
    EX_USAGE_ = 64,
    EX_DATAERR_ = 65,
    EX_NOINPUT_ = 66,
    EX_UNAVAILABLE_ = 69,
    EX_SOFTWARE_ = 70
};

static void usage(FILE *f)
{
    fprintf(f, "usage: kyso sign --key URI [--module PATH] [--pin-file FILE] --cert FILE\n"
               "                 [--chain FILE] [--if-signed=cosign|skip|wrap] [-o OUT] [IN|-]\n"
               "       kyso verify [--trust FILE] [--untrusted FILE] [--crl FILE]... [--offline]\n"
               "                   [--at TIME] [--authserv-id ID] [--json] [IN|-]\n"
               "\n"
               "URI is an RFC 7512 pkcs11: URI (token=, object=, id=, pin-source=) or file:PATH.\n"
               "TIME is YYYY-MM-DDTHH:MM:SSZ or @EPOCH. Without --offline, verify asks each\n"
               "certificate's OCSP responder and CRL distribution point (deadline --timeout-ms,\n"
               "default 3000 for the whole message).\n");
}

static int exit_for(kyso_status st)
{
    switch (st) {
    case KYSO_OK:
        return 0;
    case KYSO_ERR_USAGE:
        return EX_USAGE_;
    case KYSO_ERR_IO:
        return EX_NOINPUT_;
    case KYSO_ERR_KEY:
    case KYSO_ERR_CERT:
        return EX_UNAVAILABLE_;
    case KYSO_ERR_PARSE:
    case KYSO_ERR_TOO_BIG:
    case KYSO_ERR_UNSUPPORTED:
    case KYSO_ERR_POLICY:
        return EX_DATAERR_;
    default:
        return EX_SOFTWARE_;
    }
}

static int write_out(const char *path, const kyso_buf *b)
{
    FILE *f = path && strcmp(path, "-") != 0 ? fopen(path, "wb") : stdout;
    int ok;

    if (f == NULL) {
        fprintf(stderr, "kyso: cannot write %s\n", path);
        return EX_NOINPUT_ + 7; /* 73, EX_CANTCREAT */
    }
    ok = fwrite(b->data, 1, b->len, f) == b->len;
    ok = (f == stdout ? fflush(f) == 0 : fclose(f) == 0) && ok;
    if (!ok) {
        fprintf(stderr, "kyso: write failed\n");
        return 74;
    }
    return 0;
}

static int read_input(kyso_buf *b, const char *path)
{
    kyso_status st = kyso_buf_read_file(b, path ? path : "-", KYSO_DEFAULT_MAX_MESSAGE);

    if (st == KYSO_OK)
        return 0;
    fprintf(stderr, "kyso: %s: %s\n", path ? path : "stdin", kyso_status_str(st));
    return st == KYSO_ERR_TOO_BIG ? EX_DATAERR_ : EX_NOINPUT_;
}

static int cmd_sign(int argc, char **argv)
{
    static const struct option opts[] = {{"key", required_argument, NULL, 'k'},
                                         {"module", required_argument, NULL, 'm'},
                                         {"pin-file", required_argument, NULL, 'p'},
                                         {"cert", required_argument, NULL, 'c'},
                                         {"chain", required_argument, NULL, 'C'},
                                         {"if-signed", required_argument, NULL, 'i'},
                                         {"output", required_argument, NULL, 'o'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *key = NULL, *module = NULL, *pin_file = NULL, *cert = NULL, *chain = NULL;
    const char *output = NULL, *input = NULL;
    kyso_if_signed mode = KYSO_IF_SIGNED_COSIGN;
    kyso_keystore *ks = NULL;
    kyso_signer *signer = NULL;
    kyso_buf in = KYSO_BUF_INIT, out = KYSO_BUF_INIT;
    kyso_sign_outcome what = KYSO_SIGNED_NEW;
    kyso_status st;
    int c, rc;

    while ((c = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'k':
            key = optarg;
            break;
        case 'm':
            module = optarg;
            break;
        case 'p':
            pin_file = optarg;
            break;
        case 'c':
            cert = optarg;
            break;
        case 'C':
            chain = optarg;
            break;
        case 'o':
            output = optarg;
            break;
        case 'i':
            if (strcmp(optarg, "cosign") == 0)
                mode = KYSO_IF_SIGNED_COSIGN;
            else if (strcmp(optarg, "skip") == 0)
                mode = KYSO_IF_SIGNED_SKIP;
            else if (strcmp(optarg, "wrap") == 0)
                mode = KYSO_IF_SIGNED_WRAP;
            else {
                fprintf(stderr, "kyso sign: --if-signed takes cosign, skip or wrap\n");
                return EX_USAGE_;
            }
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return EX_USAGE_;
        }
    }
    if (optind < argc)
        input = argv[optind++];
    if (optind < argc || key == NULL || cert == NULL) {
        fprintf(stderr, "kyso sign: --key and --cert are required, and at most one input\n");
        usage(stderr);
        return EX_USAGE_;
    }
    if ((rc = read_input(&in, input)) != 0)
        goto out;
    if ((st = kyso_keystore_open(&ks, key, module, pin_file)) != KYSO_OK) {
        fprintf(stderr, "kyso sign: cannot open key %s: %s\n", key, kyso_status_str(st));
        rc = exit_for(st);
        goto out;
    }
    if ((st = kyso_signer_new(&signer, ks, cert, chain)) != KYSO_OK) {
        fprintf(stderr, "kyso sign: %s: %s\n", cert, kyso_status_str(st));
        rc = exit_for(st);
        goto out;
    }
    if ((st = kyso_sign_message(&out, &what, signer, in.data, in.len, mode)) != KYSO_OK) {
        fprintf(stderr, "kyso sign: %s\n", kyso_status_str(st));
        rc = exit_for(st);
        goto out;
    }
    if (what == KYSO_SIGNED_SKIPPED)
        fprintf(stderr, "kyso sign: message already signed; left unchanged (--if-signed=skip)\n");
    rc = write_out(output, &out);
out:
    kyso_signer_free(signer);
    kyso_keystore_free(ks);
    kyso_buf_free(&in);
    kyso_buf_free(&out);
    return rc;
}

/* The options verify and revocation share. */
static int revoker_option(kyso_revoker_opts *ro, int c, const char *arg)
{
    char *end;

    switch (c) {
    case 'R':
        if (strcmp(arg, "soft-fail") == 0)
            ro->hard_fail = 0;
        else if (strcmp(arg, "hard-fail") == 0)
            ro->hard_fail = 1;
        else
            goto bad;
        return 0;
    case 'o':
        if (strcmp(arg, "ocsp,crl") == 0)
            ro->order = KYSO_REV_ORDER_OCSP_CRL;
        else if (strcmp(arg, "crl,ocsp") == 0)
            ro->order = KYSO_REV_ORDER_CRL_OCSP;
        else if (strcmp(arg, "ocsp") == 0)
            ro->order = KYSO_REV_ORDER_OCSP;
        else if (strcmp(arg, "crl") == 0)
            ro->order = KYSO_REV_ORDER_CRL;
        else
            goto bad;
        return 0;
    case 'U':
        ro->ocsp_url = arg;
        return 0;
    case 'P':
        ro->proxy = arg;
        return 0;
    case 'T':
        ro->timeout_ms = (int)strtol(arg, &end, 10);
        if (*end != '\0' || ro->timeout_ms <= 0 || ro->timeout_ms > 600000)
            goto bad;
        return 0;
    case 'D':
        ro->cache_dir = arg;
        return 0;
    }
bad:
    fprintf(stderr, "kyso: invalid value '%s' for a revocation option\n", arg);
    return -1;
}

/* kyso revocation status|refresh: the CRL cache an admin can look at. */
static int cmd_revocation(int argc, char **argv)
{
    static const struct option opts[] = {
        {"cache-dir", required_argument, NULL, 'D'}, {"timeout-ms", required_argument, NULL, 'T'},
        {"proxy", required_argument, NULL, 'P'},     {"trust", required_argument, NULL, 't'},
        {"untrusted", required_argument, NULL, 'u'}, {NULL, 0, NULL, 0}};
    kyso_revoker_opts ro = {0};
    kyso_revoker *r = NULL;
    kyso_buf out = KYSO_BUF_INIT;
    STACK_OF(X509) *issuers = sk_X509_new_null();
    const char *what;
    int c, rc = 0;

    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 't' || c == 'u') {
            STACK_OF(X509) *more = kyso_load_certs(optarg);
            X509 *x;

            if (more == NULL) {
                fprintf(stderr, "kyso revocation: cannot read certificates from %s\n", optarg);
                sk_X509_pop_free(issuers, X509_free);
                return EX_NOINPUT_;
            }
            while ((x = sk_X509_shift(more)) != NULL)
                sk_X509_push(issuers, x);
            sk_X509_free(more);
            continue;
        }
        if (c == '?' || revoker_option(&ro, c, optarg) != 0) {
            sk_X509_pop_free(issuers, X509_free);
            return EX_USAGE_;
        }
    }
    if (optind + 1 != argc || ro.cache_dir == NULL ||
        (strcmp(argv[optind], "status") != 0 && strcmp(argv[optind], "refresh") != 0)) {
        usage(stderr);
        return EX_USAGE_;
    }
    what = argv[optind];
    if (kyso_revoker_new(&r, &ro) != KYSO_OK)
        return EX_SOFTWARE_;
    if (kyso_revoker_scan_cache(r) != KYSO_OK) {
        fprintf(stderr, "kyso revocation: cannot read cache directory %s\n", ro.cache_dir);
        rc = EX_NOINPUT_;
        goto out;
    }
    if (strcmp(what, "refresh") == 0) {
        int known = kyso_revoker_adopt_issuers(r, issuers);

        printf("refreshed %d CRL(s)\n", kyso_revoker_refresh(r, 1));
        if (known == 0)
            printf("note: no cached CRL verifies with the certificates given; only CRLs whose "
                   "issuer is known (--trust/--untrusted) are refreshed\n");
    }
    if (kyso_revoker_status(&out, r) != KYSO_OK) {
        rc = EX_SOFTWARE_;
        goto out;
    }
    fputs(out.data ? out.data : "", stdout);
out:
    kyso_buf_free(&out);
    kyso_revoker_free(r);
    sk_X509_pop_free(issuers, X509_free);
    return rc;
}

static int parse_time(const char *s, time_t *out)
{
    struct tm tm;
    char *end;

    if (s[0] == '@') {
        long long v = strtoll(s + 1, &end, 10);

        if (*end != '\0' || end == s + 1)
            return -1;
        *out = (time_t)v;
        return 0;
    }
    memset(&tm, 0, sizeof(tm));
    end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (end == NULL || (strcmp(end, "Z") != 0 && *end != '\0'))
        return -1;
    *out = timegm(&tm);
    return 0;
}

static int cmd_verify(int argc, char **argv)
{
    static const struct option opts[] = {{"trust", required_argument, NULL, 't'},
                                         {"untrusted", required_argument, NULL, 'u'},
                                         {"crl", required_argument, NULL, 'r'},
                                         {"offline", no_argument, NULL, 'O'},
                                         {"at", required_argument, NULL, 'a'},
                                         {"authserv-id", required_argument, NULL, 's'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"help", no_argument, NULL, 'h'},
                                         {"revocation", required_argument, NULL, 'R'},
                                         {"rev-order", required_argument, NULL, 'o'},
                                         {"ocsp-url", required_argument, NULL, 'U'},
                                         {"proxy", required_argument, NULL, 'P'},
                                         {"timeout-ms", required_argument, NULL, 'T'},
                                         {"cache-dir", required_argument, NULL, 'D'},
                                         {NULL, 0, NULL, 0}};
    const char *authserv_id = "kyso", *input = NULL;
    int json = 0, c, rc = 0, offline = 0;
    kyso_revoker_opts ro = {0};
    kyso_revoker *revoker = NULL;
    kyso_trust *trust = NULL;
    kyso_verdict *v = NULL;
    kyso_buf in = KYSO_BUF_INIT, out = KYSO_BUF_INIT;
    kyso_status st;
    time_t at;

    if (kyso_trust_new(&trust) != KYSO_OK)
        return EX_SOFTWARE_;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        const char *what = NULL;

        st = KYSO_OK;
        switch (c) {
        case 't':
            st = kyso_trust_add_anchors(trust, optarg);
            what = "trust anchors";
            break;
        case 'u':
            st = kyso_trust_add_untrusted(trust, optarg);
            what = "certificates";
            break;
        case 'r':
            st = kyso_trust_add_crl(trust, optarg);
            what = "CRL";
            break;
        case 'O':
            offline = 1;
            break;
        case 'R':
        case 'o':
        case 'U':
        case 'P':
        case 'T':
        case 'D':
            if (revoker_option(&ro, c, optarg) != 0) {
                rc = EX_USAGE_;
                goto out;
            }
            break;
        case 'a':
            if (parse_time(optarg, &at) != 0) {
                fprintf(stderr, "kyso verify: --at takes YYYY-MM-DDTHH:MM:SSZ or @EPOCH\n");
                rc = EX_USAGE_;
                goto out;
            }
            kyso_trust_set_time(trust, at);
            break;
        case 's':
            authserv_id = optarg;
            break;
        case 'j':
            json = 1;
            break;
        case 'h':
            usage(stdout);
            goto out;
        default:
            usage(stderr);
            rc = EX_USAGE_;
            goto out;
        }
        if (st != KYSO_OK) {
            fprintf(stderr, "kyso verify: cannot load %s from %s: %s\n", what, optarg,
                    kyso_status_str(st));
            rc = EX_NOINPUT_;
            goto out;
        }
    }
    if (optind < argc)
        input = argv[optind++];
    if (optind < argc) {
        usage(stderr);
        rc = EX_USAGE_;
        goto out;
    }
    if ((rc = read_input(&in, input)) != 0)
        goto out;
    if (!offline) {
        if (kyso_revoker_new(&revoker, &ro) != KYSO_OK) {
            rc = EX_SOFTWARE_;
            goto out;
        }
        kyso_trust_set_revoker(trust, revoker);
    }
    if ((st = kyso_verify_message(&v, trust, in.data, in.len)) != KYSO_OK) {
        fprintf(stderr, "kyso verify: %s\n", kyso_status_str(st));
        rc = EX_SOFTWARE_;
        goto out;
    }
    if (json) {
        st = kyso_verdict_json(&out, v);
        if (st == KYSO_OK)
            st = kyso_buf_puts(&out, "\n");
    } else {
        st = kyso_verdict_auth_results(&out, v, authserv_id);
        if (st == KYSO_OK)
            st = kyso_buf_puts(&out, "\n");
        if (st == KYSO_OK)
            st = kyso_verdict_summary(&out, v);
        if (st == KYSO_OK)
            st = kyso_buf_puts(&out, "\n");
    }
    if (st != KYSO_OK) {
        rc = EX_SOFTWARE_;
        goto out;
    }
    if ((rc = write_out(NULL, &out)) != 0)
        goto out;
    rc = v->result == KYSO_RESULT_PASS ? 0 : v->result == KYSO_RESULT_NONE ? 2 : 1;
out:
    kyso_verdict_free(v);
    kyso_trust_free(trust);
    kyso_revoker_free(revoker);
    kyso_buf_free(&in);
    kyso_buf_free(&out);
    return rc;
}

static int cmd_inspect(int argc, char **argv)
{
    kyso_buf in = KYSO_BUF_INIT, out = KYSO_BUF_INIT;
    int rc;

    if (argc > 2) {
        usage(stderr);
        return EX_USAGE_;
    }
    if ((rc = read_input(&in, argc == 2 ? argv[1] : NULL)) != 0)
        goto out;
    if (kyso_inspect_message(&out, in.data, in.len) != KYSO_OK) {
        rc = EX_SOFTWARE_;
        goto out;
    }
    rc = write_out(NULL, &out);
out:
    kyso_buf_free(&in);
    kyso_buf_free(&out);
    return rc;
}

int main(int argc, char **argv)
{
    kyso_log_open("kyso", 0, getenv("KYSO_DEBUG") ? KYSO_LOG_DEBUG : KYSO_LOG_WARNING);
    if (argc < 2) {
        usage(stderr);
        return EX_USAGE_;
    }
    if (strcmp(argv[1], "sign") == 0)
        return cmd_sign(argc - 1, argv + 1);
    if (strcmp(argv[1], "verify") == 0)
        return cmd_verify(argc - 1, argv + 1);
    if (strcmp(argv[1], "inspect") == 0)
        return cmd_inspect(argc - 1, argv + 1);
    if (strcmp(argv[1], "revocation") == 0)
        return cmd_revocation(argc - 1, argv + 1);
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "kyso: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return EX_USAGE_;
}
