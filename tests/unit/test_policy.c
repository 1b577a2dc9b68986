/* Unit tests of the config table and the policy decisions drawn from it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "kyso_config.h"

static const char *base_conf =
    "milter: { socket = \"unix:/tmp/k.sock\"; };\n"
    "identities = ( { name = \"org\"; key = \"file:/nonexistent.pem\"; cert = \"/x.pem\";\n"
    "  senders = [ \"vanphong@backan.gov.vn\", \"@sotc.backan.gov.vn\", \".xa.backan.gov.vn\" ]; } "
    ");\n"
    "outbound: { internal_networks = [ \"10.1.0.0/16\", \"2001:db8::/32\", \"127.0.0.1\" ]; };\n"
    "inbound: { authserv_id = \"mail.backan.gov.vn\";\n"
    "  subject_tag: { pass = \"[Đã ký số]\"; fail = \"[CHỮ KÝ KHÔNG HỢP LỆ]\"; };\n"
    "  must_sign_domains = [ \"*.gov.vn\", \"backan.vn\" ]; on_invalid = \"reject\"; };\n";

static char path[64];

static kyso_status load(const char *text, kyso_config **c, char *err, size_t errlen)
{
    FILE *f;

    strcpy(path, "/tmp/kyso-test-XXXXXX");
    close(mkstemp(path));
    f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    return kyso_config_load(c, path, err, errlen);
}

static kyso_config *good(void)
{
    kyso_config *c = NULL;
    char err[300];

    assert_int_equal(load(base_conf, &c, err, sizeof(err)), KYSO_OK);
    unlink(path);
    return c;
}

static void test_config_defaults_fill_what_the_file_leaves_out(void **state)
{
    kyso_config *c = good();

    assert_int_equal(c->milter.socket_mode, 0660);
    assert_int_equal(c->milter.timeout, 300);
    assert_int_equal(c->outbound.on_sign_error, KYSO_ACT_TEMPFAIL);
    assert_int_equal(c->outbound.if_signed, KYSO_IF_SIGNED_COSIGN);
    assert_int_equal(c->inbound.on_unsigned, KYSO_ACT_TAG);
    assert_int_equal(c->inbound.on_invalid, KYSO_ACT_REJECT);
    assert_string_equal(c->inbound.subject_tag[KYSO_RESULT_PASS], "[Đã ký số]");
    assert_string_equal(c->inbound.subject_tag[KYSO_RESULT_NONE], "");
    kyso_config_free(c);
}

static void test_config_unknown_key_names_file_line_and_key(void **state)
{
    char text[2048], err[300], want[300];
    kyso_config *c = NULL;

    snprintf(text, sizeof(text), "%s", base_conf);
    strcat(text, "outbound: { trust_auth = true; };\n");
    /* a duplicate group is a libconfig syntax error, reported with its line */
    assert_int_equal(load(text, &c, err, sizeof(err)), KYSO_ERR_PARSE);
    assert_null(c);
    snprintf(text, sizeof(text),
             "milter: {\n  socket = \"unix:/x\";\n  sokcet_mode = \"0600\";\n};\n"
             "inbound: { authserv_id = \"a\"; };\n");
    assert_int_equal(load(text, &c, err, sizeof(err)), KYSO_ERR_PARSE);
    snprintf(want, sizeof(want), "%s:3: unknown key 'sokcet_mode' in milter", path);
    assert_string_equal(err, want);
    unlink(path);
}

static void test_config_rejects_bad_values_with_their_line(void **state)
{
    static const struct {
        const char *text, *needle;
    } cases[] = {
        {"inbound: { authserv_id = \"a\";\n on_invalid = \"bounce\"; };\n",
         ":2: 'on_invalid' must be one of"},
        {"inbound: { authserv_id = \"a\"; };\nmilter: { timeout = 0; };\n",
         ":2: 'timeout' in milter is out of range"},
        {"inbound: { authserv_id = \"a\"; };\noutbound: { internal_networks = [ \"10.0.0.0/33\" ]; };\n",
         "'10.0.0.0/33' in internal_networks is not a CIDR network"},
        {"inbound: { };\n", "'authserv_id' in inbound must be set"},
        {"inbound: { authserv_id = \"a\"; };\nidentities = ( { name = \"x\"; key = "
         "\"pkcs11:object=a\";\n token = \"nope\"; cert = \"/c\"; senders = [\"@a\"]; } );\n",
         ":3: identity 'x' names unknown token 'nope'"},
        {"inbound: { authserv_id = \"a\"; };\nbogus = 1;\n",
         ":2: unknown key 'bogus' at top level"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        kyso_config *c = NULL;
        char err[300];

        assert_int_not_equal(load(cases[i].text, &c, err, sizeof(err)), KYSO_OK);
        if (strstr(err, cases[i].needle) == NULL)
            fail_msg("case %zu: '%s' does not contain '%s'", i, err, cases[i].needle);
        unlink(path);
    }
}

static void test_sample_configs_load(void **state)
{
    static const char *const samples[] = {KYSO_SOURCE_DIR "/etc/kyso.conf",
                                          KYSO_SOURCE_DIR "/etc/kyso-vi.conf"};

    for (size_t i = 0; i < 2; i++) {
        kyso_config *c = NULL;
        char err[300] = "";

        if (kyso_config_load(&c, samples[i], err, sizeof(err)) != KYSO_OK)
            fail_msg("%s", err);
        assert_int_equal(c->nidentities, 1);
        assert_int_equal(c->identities[0].nlogins, 1);
        kyso_config_free(c);
    }
}

static void test_identity_patterns_exact_domain_and_subdomain(void **state)
{
    kyso_config *c = good();

    assert_non_null(kyso_policy_identity_for(c, "VanPhong@BacKan.gov.vn"));
    assert_null(kyso_policy_identity_for(c, "other@backan.gov.vn"));
    assert_non_null(kyso_policy_identity_for(c, "ketoan@sotc.backan.gov.vn"));
    assert_null(kyso_policy_identity_for(c, "x@a.sotc.backan.gov.vn"));
    assert_non_null(kyso_policy_identity_for(c, "ubnd@chumoi.xa.backan.gov.vn"));
    assert_null(kyso_policy_identity_for(c, "ubnd@xa.backan.gov.vn"));
    assert_null(kyso_policy_identity_for(c, "vanphong@backan.gov.vn.evil.example"));
    assert_null(kyso_policy_identity_for(c, NULL));
    kyso_config_free(c);
}

static void test_logins_bind_an_identity_to_its_officials(void **state)
{
    char *logins[] = {"vanphong@backan.gov.vn", "@vp.backan.gov.vn"};
    kyso_conf_identity id = {0};

    assert_true(kyso_policy_login_allowed(&id, "anyone@x.vn")); /* no list: any login */
    assert_true(kyso_policy_login_allowed(&id, NULL));
    id.logins = logins;
    id.nlogins = 2;
    assert_true(kyso_policy_login_allowed(&id, "VanPhong@backan.gov.vn"));
    assert_true(kyso_policy_login_allowed(&id, "thuky@vp.backan.gov.vn"));
    assert_false(kyso_policy_login_allowed(&id, "chutich@backan.gov.vn"));
    assert_false(kyso_policy_login_allowed(&id, "x@evil.vp.backan.gov.vn"));
    assert_false(kyso_policy_login_allowed(&id, NULL)); /* unauthenticated internal client */
}

static void test_internal_networks_match_v4_v6_and_mapped(void **state)
{
    kyso_config *c = good();
    char **n = c->outbound.internal_networks;
    size_t k = c->outbound.ninternal_networks;

    assert_int_equal(kyso_policy_addr_in(n, k, "10.1.255.3"), 1);
    assert_int_equal(kyso_policy_addr_in(n, k, "10.2.0.1"), 0);
    assert_int_equal(kyso_policy_addr_in(n, k, "127.0.0.1"), 1);
    assert_int_equal(kyso_policy_addr_in(n, k, "127.0.0.2"), 0);
    assert_int_equal(kyso_policy_addr_in(n, k, "::ffff:10.1.0.9"), 1);
    assert_int_equal(kyso_policy_addr_in(n, k, "2001:db8:1::5"), 1);
    assert_int_equal(kyso_policy_addr_in(n, k, "2001:db9::5"), 0);
    assert_int_equal(kyso_policy_addr_in(n, k, "garbage"), 0);
    kyso_config_free(c);
}

static void test_inbound_action_follows_domain_policy(void **state)
{
    kyso_config *c = good();
    kyso_verdict v = {0};

    v.pass_index = -1;
    v.from = "x@sotc.backan.gov.vn";
    v.result = KYSO_RESULT_FAIL;
    assert_int_equal(kyso_policy_inbound_action(c, &v), KYSO_ACT_REJECT);
    v.result = KYSO_RESULT_NONE;
    assert_int_equal(kyso_policy_inbound_action(c, &v), KYSO_ACT_TAG);
    v.result = KYSO_RESULT_PASS;
    assert_int_equal(kyso_policy_inbound_action(c, &v), KYSO_ACT_TAG);
    v.result = KYSO_RESULT_FAIL;
    v.from = "x@gmail.com";
    assert_int_equal(kyso_policy_inbound_action(c, &v), KYSO_ACT_TAG);
    v.from = "x@gov.vn"; /* "*.gov.vn" covers subdomains only */
    assert_int_equal(kyso_policy_inbound_action(c, &v), KYSO_ACT_TAG);
    v.from = "x@backan.vn";
    assert_int_equal(kyso_policy_inbound_action(c, &v), KYSO_ACT_REJECT);
    /* An unreadable From cannot dodge the must-sign policy. */
    v.from = NULL;
    assert_int_equal(kyso_policy_inbound_action(c, &v), KYSO_ACT_REJECT);
    v.result = KYSO_RESULT_NONE;
    assert_int_equal(kyso_policy_inbound_action(c, &v), KYSO_ACT_TAG); /* on_unsigned = tag */
    kyso_config_free(c);
}

static void test_only_our_authserv_id_is_recognised(void **state)
{
    assert_true(kyso_policy_ar_is_ours("mail.backan.gov.vn; smime=pass", "mail.backan.gov.vn"));
    assert_true(
        kyso_policy_ar_is_ours("  MAIL.backan.gov.vn;\n\tsmime=pass", "mail.backan.gov.vn"));
    assert_true(kyso_policy_ar_is_ours("mail.backan.gov.vn 1; none", "mail.backan.gov.vn"));
    assert_false(
        kyso_policy_ar_is_ours("mail.backan.gov.vn.evil; smime=pass", "mail.backan.gov.vn"));
    assert_false(kyso_policy_ar_is_ours("mx.google.com; dkim=pass", "mail.backan.gov.vn"));
    /* RFC 8601 allows CFWS before the authserv-id; a forger will use it. */
    assert_true(kyso_policy_ar_is_ours("(x) mail.backan.gov.vn; smime=pass", "mail.backan.gov.vn"));
    assert_true(kyso_policy_ar_is_ours(" (a (nested) \\) comment)\n\tmail.backan.gov.vn.; none",
                                       "mail.backan.gov.vn"));
    assert_true(kyso_policy_ar_is_ours("\"mail.backan.gov.vn\"; smime=pass", "mail.backan.gov.vn"));
}

static void test_subject_tag_is_encoded_and_forged_tags_are_removed(void **state)
{
    kyso_config *c = good();
    char *tagged, *untagged, *again;

    tagged = kyso_policy_subject_tag(c, KYSO_RESULT_PASS, "Report");
    assert_string_equal(tagged, "=?UTF-8?B?W8SQw6Mga8O9IHPhu5Fd?= Report");
    /* a forged tag, raw or encoded, is recognised and removed */
    untagged = kyso_policy_subject_untag(c, tagged);
    assert_string_equal(untagged, "Report");
    free(untagged);
    untagged = kyso_policy_subject_untag(c, "[CHỮ KÝ KHÔNG HỢP LỆ] [Đã ký số] Báo cáo");
    again = kyso_policy_subject_untag(c, untagged);
    assert_null(again); /* nothing left to strip */
    assert_string_equal(untagged, "=?UTF-8?B?QsOhbyBjw6Fv?=");
    assert_null(kyso_policy_subject_untag(c, "Plain subject"));
    /* Look-alikes: decomposed (NFD), zero-width and no-break spaces, case. */
    {
        static const char *const forged[] = {
            "[\xc4\x90\x61\xcc\x83 ky\xcc\x81 so\xcc\x82\xcc\x81] B\xc3\xa1o c\xc3\xa1o",
            "[\xc4\x90\xc3\xa3\xe2\x80\x8b k\xc3\xbd\xc2\xa0s\xe1\xbb\x91] B\xc3\xa1o c\xc3\xa1o",
            "\xef\xbb\xbf[\xc4\x91\xc3\x83 K\xc3\x9d S\xe1\xbb\x90] B\xc3\xa1o c\xc3\xa1o",
            "[Da ky so] B\xc3\xa1o c\xc3\xa1o",
            /* fullwidth brackets, Cyrillic a, bidi isolate, tag character */
            "\xef\xbc\xbb\xc4\x90\xd0\xb0\xcc\x83 \xe2\x81\xa6k\xc3\xbd s\xf3\xa0\x81\x81\xe1\xbb\x91\xef\xbc\xbd B\xc3\xa1o c\xc3\xa1o",
        };

        for (size_t i = 0; i < sizeof(forged) / sizeof(forged[0]); i++) {
            char *u = kyso_policy_subject_untag(c, forged[i]);

            if (u == NULL || strcmp(u, "=?UTF-8?B?QsOhbyBjw6Fv?=") != 0)
                fail_msg("forged tag %zu not removed: %s", i, u ? u : "(unchanged)");
            free(u);
        }
        /* A subject that merely starts with similar words is left alone. */
        assert_null(kyso_policy_subject_untag(c, "Đã ký số hợp đồng"));
        assert_null(kyso_policy_subject_untag(c, "[Đã ký] văn bản"));
        /* An encoded-word libetpan cannot convert (UTF-16) is not left for
         * a client to show: the subject is rewritten as decoded. */
        {
            char *u = kyso_policy_subject_untag(c, "=?UTF-16?B?AFsAUwBpAGcAbgBlAGQAXQ==?= hi");

            assert_non_null(u);
            assert_null(strstr(u, "UTF-16"));
            free(u);
        }
    }
    assert_null(kyso_policy_subject_tag(c, KYSO_RESULT_NONE, "x"));
    free(tagged);
    free(untagged);
    kyso_config_free(c);
}

static void test_rfc2047_keeps_words_short_and_characters_whole(void **state)
{
    char *e = kyso_rfc2047_encode("Ủy ban nhân dân tỉnh Bắc Kạn — Văn phòng Ủy ban nhân dân tỉnh");
    const char *p = e;

    while (p && *p) {
        const char *end = strstr(p, "?=");

        assert_non_null(end);
        assert_true(end + 2 - p <= 75);
        p = end + 2;
        while (*p == ' ')
            p++;
    }
    free(e);
    e = kyso_rfc2047_encode("plain ascii");
    assert_string_equal(e, "plain ascii");
    free(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_defaults_fill_what_the_file_leaves_out),
        cmocka_unit_test(test_config_unknown_key_names_file_line_and_key),
        cmocka_unit_test(test_config_rejects_bad_values_with_their_line),
        cmocka_unit_test(test_sample_configs_load),
        cmocka_unit_test(test_identity_patterns_exact_domain_and_subdomain),
        cmocka_unit_test(test_logins_bind_an_identity_to_its_officials),
        cmocka_unit_test(test_internal_networks_match_v4_v6_and_mapped),
        cmocka_unit_test(test_inbound_action_follows_domain_policy),
        cmocka_unit_test(test_only_our_authserv_id_is_recognised),
        cmocka_unit_test(test_subject_tag_is_encoded_and_forged_tags_are_removed),
        cmocka_unit_test(test_rfc2047_keeps_words_short_and_characters_whole),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
