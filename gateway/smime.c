/*
 * smime.c - finds the S/MIME signature that covers a whole message.
 *
 * Only the top-level entity counts: a multipart/signed with an S/MIME
 * protocol and exactly two parts (the second a base64 pkcs7-signature holding
 * a detached SignedData and nothing after it), or an opaque pkcs7-mime
 * signed-data with its content inside. Anything else is "none", or "neutral"
 * when a signature sits deeper, where it does not cover what is shown.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/cms.h>
#include <openssl/err.h>

#include "internal.h"

static int ctype_is(const kyso_ctype *ct, const char *type, const char *subtype)
{
    return strcmp(ct->type, type) == 0 && strcmp(ct->subtype, subtype) == 0;
}

static CMS_ContentInfo *decode_cms(const char *b64, size_t len)
{
    kyso_buf der = KYSO_BUF_INIT;
    CMS_ContentInfo *cms = NULL;
    const unsigned char *p;

    if (kyso_base64_decode(&der, b64, len) == KYSO_OK && der.len > 0 && der.len < (1u << 30)) {
        p = (const unsigned char *)der.data;
        cms = d2i_CMS_ContentInfo(NULL, &p, (long)der.len);
        /* Trailing bytes after the DER would be unsigned, unseen data. */
        if (cms && p != (const unsigned char *)der.data + der.len) {
            CMS_ContentInfo_free(cms);
            cms = NULL;
        }
    }
    ERR_clear_error();
    kyso_buf_free(&der);
    return cms;
}

static int is_base64_cte(const kyso_entity *e)
{
    char cte[32];

    kyso_entity_cte(e, cte, sizeof(cte));
    return strcmp(cte, "base64") == 0;
}

/* The message is signed somewhere below the top (forwarded, wrapped). */
static int has_nested_signature(const kyso_entity *e)
{
    static const char *const marks[] = {"pkcs7-signature", "pkcs7-mime"};

    for (size_t i = 0; i < sizeof(marks) / sizeof(marks[0]); i++)
        if (memmem(e->body, e->body_len, marks[i], strlen(marks[i])) != NULL)
            return 1;
    return 0;
}

static void fail(kyso_smime *sm, kyso_result r, const char *reason)
{
    CMS_ContentInfo_free(sm->cms);
    sm->cms = NULL;
    sm->result = r;
    sm->reason = reason;
}

kyso_status kyso_smime_locate(kyso_smime *sm, const kyso_entity *top)
{
    kyso_entity sigpart;
    kyso_ctype ct, sct;
    kyso_span parts[3];
    size_t nparts = 0;
    int closed = 0;

    memset(sm, 0, sizeof(*sm));
    memset(&sct, 0, sizeof(sct));
    if (kyso_entity_ctype(&ct, top) != KYSO_OK) {
        fail(sm, KYSO_RESULT_PERMERROR, "malformed Content-Type");
        return KYSO_OK;
    }
    if (ctype_is(&ct, "multipart", "signed")) {
        sm->detached = 1;
        if (ct.protocol == NULL || (strcmp(ct.protocol, "application/pkcs7-signature") != 0 &&
                                    strcmp(ct.protocol, "application/x-pkcs7-signature") != 0)) {
            fail(sm, KYSO_RESULT_NONE, "not an S/MIME signature");
            goto out;
        }
        if (ct.boundary == NULL ||
            kyso_multipart_split(top->body, top->body_len, ct.boundary, parts, 3, &nparts,
                                 &closed) != KYSO_OK ||
            nparts != 2 || !closed) {
            fail(sm, KYSO_RESULT_PERMERROR, "multipart/signed must have exactly two parts");
            goto out;
        }
        kyso_entity_split(&sigpart, parts[1].p, parts[1].len);
        if (kyso_entity_ctype(&sct, &sigpart) != KYSO_OK ||
            !(ctype_is(&sct, "application", "pkcs7-signature") ||
              ctype_is(&sct, "application", "x-pkcs7-signature")) ||
            !is_base64_cte(&sigpart)) {
            fail(sm, KYSO_RESULT_PERMERROR, "second part is not a base64 pkcs7-signature");
            goto out;
        }
        if ((sm->cms = decode_cms(sigpart.body, sigpart.body_len)) == NULL) {
            fail(sm, KYSO_RESULT_PERMERROR, "signature is not valid CMS");
            goto out;
        }
        if (OBJ_obj2nid(CMS_get0_type(sm->cms)) != NID_pkcs7_signed) {
            fail(sm, KYSO_RESULT_PERMERROR, "signature is not SignedData");
            goto out;
        }
        /* A detached signature must not carry content of its own: what it
         * signed would not be what the recipient sees. */
        if (*CMS_get0_content(sm->cms) != NULL) {
            fail(sm, KYSO_RESULT_PERMERROR, "detached signature carries its own content");
            goto out;
        }
        sm->content = parts[0].p;
        sm->content_len = parts[0].len;
        if (ct.micalg)
            snprintf(sm->micalg, sizeof(sm->micalg), "%s", ct.micalg);
    } else if (ctype_is(&ct, "application", "pkcs7-mime") ||
               ctype_is(&ct, "application", "x-pkcs7-mime")) {
        if (ct.smime_type && strcmp(ct.smime_type, "signed-data") != 0) {
            fail(sm, KYSO_RESULT_NEUTRAL, "S/MIME content is not signed-data");
            goto out;
        }
        if (!is_base64_cte(top) || (sm->cms = decode_cms(top->body, top->body_len)) == NULL) {
            fail(sm, KYSO_RESULT_PERMERROR, "pkcs7-mime body is not valid base64 CMS");
            goto out;
        }
        if (OBJ_obj2nid(CMS_get0_type(sm->cms)) != NID_pkcs7_signed) {
            fail(sm, KYSO_RESULT_NEUTRAL, "S/MIME content is not signed-data");
            goto out;
        }
        if (*CMS_get0_content(sm->cms) == NULL) {
            fail(sm, KYSO_RESULT_PERMERROR, "opaque signature without content");
            goto out;
        }
    } else {
        if (strcmp(ct.type, "multipart") == 0 && has_nested_signature(top))
            fail(sm, KYSO_RESULT_NEUTRAL, "a signed part does not cover the whole message");
        else
            fail(sm, KYSO_RESULT_NONE, "message is not signed");
        goto out;
    }
    if (OBJ_obj2nid(CMS_get0_eContentType(sm->cms)) != NID_pkcs7_data)
        fail(sm, KYSO_RESULT_PERMERROR, "signed content is not id-data");
out:
    kyso_ctype_clear(&ct);
    kyso_ctype_clear(&sct);
    return KYSO_OK;
}

void kyso_smime_clear(kyso_smime *sm)
{
    CMS_ContentInfo_free(sm->cms);
    memset(sm, 0, sizeof(*sm));
}
