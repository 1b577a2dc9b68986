/* libFuzzer target: any byte sequence as an incoming message through the verify path. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "kyso.h"

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
    return 0;
}
