/* libFuzzer target: any byte sequence as an incoming message through the verify path. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kyso.h"
#include "kyso_config.h"

static kyso_trust *trust;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    kyso_log_open("fuzz", 0, KYSO_LOG_NONE);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kyso_verdict *v = NULL;
    kyso_buf out = KYSO_BUF_INIT;

    if (trust == NULL) {
        const char *anchors = getenv("KYSO_FUZZ_TRUST");

        if (kyso_trust_new(&trust) != KYSO_OK)
            abort();
        if (anchors)
            kyso_trust_add_anchors(trust, anchors);
    }
    if (kyso_verify_message(&v, trust, (const char *)data, size) == KYSO_OK) {
        kyso_verdict_auth_results(&out, v, "fuzz.example");
        kyso_verdict_json(&out, v);
        kyso_verdict_summary(&out, v);
    }
    kyso_verdict_free(v);
    kyso_buf_reset(&out);
    kyso_inspect_message(&out, (const char *)data, size);
    kyso_buf_free(&out);
    /* Header values from the internet meet the badge logic too. */
    if (size < 4096) {
        static kyso_config conf;
        char *text = malloc(size + 1), *u;

        conf.inbound.subject_tag[KYSO_RESULT_PASS] = "[\xc4\x90\xc3\xa3 k\xc3\xbd s\xe1\xbb\x91]";
        conf.inbound.subject_tag[KYSO_RESULT_FAIL] = "[INVALID]";
        if (text) {
            memcpy(text, data, size);
            text[size] = '\0';
            u = kyso_policy_subject_untag(&conf, text);
            free(u);
            u = kyso_policy_subject_tag(&conf, KYSO_RESULT_PASS, text);
            free(u);
            u = kyso_rfc2047_encode(text);
            free(u);
            (void)kyso_policy_ar_is_ours(text, "mail.backan.gov.vn");
            free(text);
        }
    }
    return 0;
}
