/* status.c - names for kyso_status and kyso_result; the only place they are spelled. */
#include "kyso.h"

const char *kyso_status_str(kyso_status st)
{
    switch (st) {
    case KYSO_OK:
        return "ok";
    case KYSO_ERR_NOMEM:
        return "out of memory";
    case KYSO_ERR_IO:
        return "I/O error";
    case KYSO_ERR_USAGE:
        return "invalid argument";
    case KYSO_ERR_PARSE:
        return "malformed input";
    case KYSO_ERR_TOO_BIG:
        return "input exceeds a limit";
    case KYSO_ERR_UNSUPPORTED:
        return "unsupported input";
    case KYSO_ERR_KEY:
        return "key store unavailable";
    case KYSO_ERR_CERT:
        return "signing certificate not usable (expired, not yet valid or revoked)";
    case KYSO_ERR_CRYPTO:
        return "cryptographic operation failed";
    case KYSO_ERR_POLICY:
        return "refused by policy";
    case KYSO_ERR_INTERNAL:
        break;
    }
    return "internal error";
}

const char *kyso_result_str(kyso_result r)
{
    switch (r) {
    case KYSO_RESULT_NONE:
        return "none";
    case KYSO_RESULT_PASS:
        return "pass";
    case KYSO_RESULT_FAIL:
        return "fail";
    case KYSO_RESULT_NEUTRAL:
        return "neutral";
    case KYSO_RESULT_POLICY:
        return "policy";
    case KYSO_RESULT_TEMPERROR:
        return "temperror";
    case KYSO_RESULT_PERMERROR:
        break;
    }
    return "permerror";
}
