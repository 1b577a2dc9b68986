/* Unit tests of canonicalisation, transfer encodings and the 7-bit rewrite. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "internal.h"

static char *canon(const char *in)
{
    static kyso_buf b;

    kyso_buf_free(&b);
    assert_int_equal(kyso_canon_crlf(&b, in, strlen(in)), KYSO_OK);
    return b.data;
}

static char *make7(const char *entity)
{
    static kyso_buf b;
    kyso_buf c = KYSO_BUF_INIT;

    kyso_buf_free(&b);
    assert_int_equal(kyso_canon_crlf(&c, entity, strlen(entity)), KYSO_OK);
    assert_int_equal(kyso_entity_make_7bit(&b, c.data, c.len, 0), KYSO_OK);
    kyso_buf_free(&c);
    return b.data;
}

static void test_canon_turns_lone_lf_into_crlf_and_keeps_crlf(void **state)
{
    assert_string_equal(canon("a\nb\r\nc\n"), "a\r\nb\r\nc\r\n");
    assert_string_equal(canon("\n\n"), "\r\n\r\n");
    assert_string_equal(canon("no newline"), "no newline");
    assert_string_equal(canon(""), "");
}

static void test_qp_protects_from_trailing_space_and_dot(void **state)
{
    kyso_buf b = KYSO_BUF_INIT;
    const char *in = "From me\r\ntrailing \r\n.\r\n=x\r\n";

    assert_int_equal(kyso_qp_encode(&b, in, strlen(in)), KYSO_OK);
    assert_string_equal(b.data, "=46rom me\r\ntrailing=20\r\n=2E\r\n=3Dx\r\n");
    kyso_buf_free(&b);
}

static void test_qp_soft_break_never_starts_a_line_with_from(void **state)
{
    kyso_buf b = KYSO_BUF_INIT;
    char in[200];

    /* 75 columns of text, then "From me": the soft break falls before "F". */
    memset(in, 'a', 75);
    strcpy(in + 75, "From me");
    assert_int_equal(kyso_qp_encode(&b, in, strlen(in)), KYSO_OK);
    assert_null(strstr(b.data, "\r\nFrom "));
    assert_non_null(strstr(b.data, "=\r\n=46rom me"));
    kyso_buf_free(&b);
}

static void test_qp_soft_breaks_keep_every_line_within_76(void **state)
{
    kyso_buf b = KYSO_BUF_INIT;
    char in[3001];
    size_t start = 0;

    memset(in, 'a', 3000);
    in[3000] = '\0';
    in[100] = (char)0xC3; /* an escape that must not be split */
    assert_int_equal(kyso_qp_encode(&b, in, 3000), KYSO_OK);
    for (size_t i = 0; i <= b.len; i++) {
        if (i == b.len || b.data[i] == '\n') {
            assert_true(i - start <= 77); /* 76 + CR */
            start = i + 1;
        }
    }
    assert_null(strstr(b.data, "=\r\nC3"));
    assert_non_null(strstr(b.data, "=C3"));
    kyso_buf_free(&b);
}

static void test_base64_round_trip_and_rejects_garbage(void **state)
{
    kyso_buf enc = KYSO_BUF_INIT, dec = KYSO_BUF_INIT;
    unsigned char bin[300];

    for (int i = 0; i < 300; i++)
        bin[i] = (unsigned char)(i * 7);
    assert_int_equal(kyso_base64_encode(&enc, bin, sizeof(bin)), KYSO_OK);
    assert_int_equal(kyso_base64_decode(&dec, enc.data, enc.len), KYSO_OK);
    assert_int_equal(dec.len, sizeof(bin));
    assert_memory_equal(dec.data, bin, sizeof(bin));
    kyso_buf_reset(&dec);
    assert_int_equal(kyso_base64_decode(&dec, "QU*J", 4), KYSO_ERR_PARSE);
    kyso_buf_reset(&dec);
    assert_int_equal(kyso_base64_decode(&dec, "QQ==QQ==", 8), KYSO_ERR_PARSE);
    kyso_buf_free(&enc);
    kyso_buf_free(&dec);
}

static void test_7bit_text_8bit_becomes_quoted_printable(void **state)
{
    const char *out = make7("Content-Type: text/plain; charset=utf-8\n"
                            "Content-Transfer-Encoding: 8bit\n\nKính gửi\n");

    assert_string_equal(out, "Content-Type: text/plain; charset=utf-8\r\n"
                             "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
                             "K=C3=ADnh g=E1=BB=ADi\r\n");
}

static void test_7bit_safe_part_is_copied_byte_for_byte(void **state)
{
    const char *in = "Content-Type: text/plain\r\n\r\nhello\r\nworld\r\n";

    assert_string_equal(make7(in), in);
}

static void test_7bit_binary_attachment_becomes_base64(void **state)
{
    const char *out = make7("Content-Type: application/octet-stream\n"
                            "Content-Transfer-Encoding: binary\n\n\x01\x80\xff\n");

    assert_non_null(strstr(out, "Content-Transfer-Encoding: base64\r\n\r\nAYD/DQo=\r\n"));
    assert_null(strstr(out, "binary"));
}

static void test_7bit_long_line_is_wrapped_by_quoted_printable(void **state)
{
    char in[1200];
    const char *out;

    strcpy(in, "Content-Type: text/plain\n\n");
    memset(in + strlen(in), 'x', 1100);
    in[26 + 1100] = '\0';
    out = make7(in);
    assert_non_null(strstr(out, "quoted-printable"));
    assert_non_null(strstr(out, "=\r\n"));
}

static void test_7bit_multipart_recurses_and_drops_preamble(void **state)
{
    const char *out = make7("Content-Type: multipart/alternative; boundary=\"b\"\n\n"
                            "preamble text\n--b\nContent-Type: text/plain; charset=utf-8\n"
                            "Content-Transfer-Encoding: 8bit\n\nđ\n--b\n"
                            "Content-Type: text/html\n\n<p>x</p>\n--b--\nepilogue\n");

    assert_string_equal(out, "Content-Type: multipart/alternative; boundary=\"b\"\r\n\r\n"
                             "--b\r\nContent-Type: text/plain; charset=utf-8\r\n"
                             "Content-Transfer-Encoding: quoted-printable\r\n\r\n=C4=91\r\n"
                             "--b\r\nContent-Type: text/html\r\n\r\n<p>x</p>\r\n--b--\r\n");
}

static void test_7bit_rewrites_8bit_content_fields_per_rfc2231_and_2047(void **state)
{
    const char *out =
        make7("Content-Type: application/pdf; name=\"C\xc3\xb4ng v\xc4\x83n.pdf\"\n"
              "Content-Disposition: attachment;\n filename=\"C\xc3\xb4ng v\xc4\x83n.pdf\"\n"
              "Content-Description: T\xc3\xa0i li\xe1\xbb\x87u\n"
              "Content-Transfer-Encoding: base64\n\nQUJD\n");

    assert_false(kyso_has_8bit(out, strlen(out)));
    assert_non_null(strstr(
        out, "Content-Type: application/pdf;\r\n\tname*0*=utf-8''C%C3%B4ng%20v%C4%83n.pdf\r\n"));
    assert_non_null(
        strstr(out, "Content-Disposition: attachment;\r\n\tfilename*0*=utf-8''C%C3%B4ng"));
    assert_non_null(strstr(out, "Content-Description: =?UTF-8?B?VMOgaSBsaeG7h3U=?=\r\n"));
    assert_non_null(strstr(out, "\r\n\r\nQUJD\r\n"));
}

static void test_7bit_refuses_8bit_bytes_inside_base64_part(void **state)
{
    kyso_buf b = KYSO_BUF_INIT;
    const char *in =
        "Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n\xc3\xa1\r\n";

    assert_int_equal(kyso_entity_make_7bit(&b, in, strlen(in), 0), KYSO_ERR_PARSE);
    kyso_buf_free(&b);
}

static void test_7bit_depth_limit_is_enforced(void **state)
{
    kyso_buf in = KYSO_BUF_INIT, out = KYSO_BUF_INIT;

    for (int i = 0; i < KYSO_MAX_MIME_DEPTH + 4; i++)
        kyso_buf_printf(&in, "Content-Type: multipart/mixed; boundary=\"b%d\"\r\n\r\n--b%d\r\n", i,
                        i);
    kyso_buf_puts(&in, "Content-Type: text/plain\r\n\r\nx\r\n");
    assert_int_equal(kyso_entity_make_7bit(&out, in.data, in.len, 0), KYSO_ERR_TOO_BIG);
    kyso_buf_free(&in);
    kyso_buf_free(&out);
}

static void test_multipart_split_gives_exact_part_bytes(void **state)
{
    const char *body = "pre\r\n--B\r\npart one\r\n\r\n--B \r\npart2\r\n--B--\r\nepi";
    kyso_span parts[4];
    size_t n;
    int closed;

    assert_int_equal(kyso_multipart_split(body, strlen(body), "B", parts, 4, &n, &closed), KYSO_OK);
    assert_int_equal(n, 2);
    assert_true(closed);
    assert_int_equal(parts[0].len, strlen("part one\r\n"));
    assert_memory_equal(parts[0].p, "part one\r\n", parts[0].len);
    assert_int_equal(parts[1].len, 5);
    assert_memory_equal(parts[1].p, "part2", 5);
}

static void test_multipart_split_ignores_longer_boundaries(void **state)
{
    const char *body = "--B\r\na\r\n--BX\r\nb\r\n--B--\r\n";
    kyso_span parts[4];
    size_t n;
    int closed;

    assert_int_equal(kyso_multipart_split(body, strlen(body), "B", parts, 4, &n, &closed), KYSO_OK);
    assert_int_equal(n, 1);
    assert_int_equal(parts[0].len, strlen("a\r\n--BX\r\nb"));
}

static void test_from_needs_exactly_one_mailbox(void **state)
{
    const char *cases[][2] = {
        {"From: \"Nguyễn Văn An\" <an@backan.gov.vn>\r\n\r\n", "an@backan.gov.vn"},
        {"From: an@backan.gov.vn\r\n\r\n", "an@backan.gov.vn"},
        {"From: an@backan.gov.vn (Chu (tich))\r\n\r\n", "an@backan.gov.vn"},
        {"From: an@backan.gov.vn.\r\n\r\n", "an@backan.gov.vn"},
        {"From: an@backan.gov.vn (unclosed\r\n\r\n", NULL},
        {"From: a@x.vn, b@x.vn\r\n\r\n", NULL},
        {"From: a@x.vn\r\nFrom: b@x.vn\r\n\r\n", NULL},
        {"From: x <<a@b>\r\n\r\n", NULL},
        {"To: a@x.vn\r\n\r\n", NULL},
        {"From: undisclosed-recipients:;\r\n\r\n", NULL},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        kyso_entity e;
        char *addr = NULL;
        kyso_status st;

        kyso_entity_split(&e, cases[i][0], strlen(cases[i][0]));
        st = kyso_entity_from(&e, &addr);
        if (cases[i][1]) {
            assert_int_equal(st, KYSO_OK);
            assert_string_equal(addr, cases[i][1]);
        } else {
            assert_int_equal(st, KYSO_ERR_PARSE);
            assert_null(addr);
        }
        free(addr);
    }
}

static void test_content_type_parse_rejects_half_understood_values(void **state)
{
    kyso_ctype ct;
    const char *ok = "multipart/signed; protocol=\"application/pkcs7-signature\";\r\n"
                     "\tmicalg=SHA-256; boundary=\"a b\"";

    assert_int_equal(kyso_ctype_parse(&ct, ok, strlen(ok)), KYSO_OK);
    assert_string_equal(ct.type, "multipart");
    assert_string_equal(ct.subtype, "signed");
    assert_string_equal(ct.protocol, "application/pkcs7-signature");
    assert_string_equal(ct.micalg, "sha-256");
    assert_string_equal(ct.boundary, "a b");
    kyso_ctype_clear(&ct);
    assert_int_equal(kyso_ctype_parse(&ct, "text/plain; charset=\"utf-8", 26), KYSO_ERR_PARSE);
    assert_int_equal(kyso_ctype_parse(&ct, "multipart/mixed; boundary=a; boundary=b", 40),
                     KYSO_ERR_PARSE);
    /* RFC 2231 spellings of a structural parameter: another parser could
     * honour them and see other parts than we verified. */
    {
        static const char *const ambiguous[] = {
            "multipart/signed; boundary*=us-ascii''ZZ; boundary=\"BB\"",
            "multipart/signed; boundary*0=Z; boundary=BB",
            "multipart/signed; PROTOCOL*=''application/pkcs7-signature; boundary=BB",
            "application/pkcs7-mime; smime-type*=''signed-data",
        };

        for (size_t i = 0; i < sizeof(ambiguous) / sizeof(ambiguous[0]); i++)
            assert_int_equal(kyso_ctype_parse(&ct, ambiguous[i], strlen(ambiguous[i])),
                             KYSO_ERR_PARSE);
    }
    /* Other parameters may use RFC 2231 freely. */
    {
        const char *fine = "text/plain; name*=utf-8''%C4%91.txt";

        assert_int_equal(kyso_ctype_parse(&ct, fine, strlen(fine)), KYSO_OK);
        kyso_ctype_clear(&ct);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_canon_turns_lone_lf_into_crlf_and_keeps_crlf),
        cmocka_unit_test(test_qp_protects_from_trailing_space_and_dot),
        cmocka_unit_test(test_qp_soft_breaks_keep_every_line_within_76),
        cmocka_unit_test(test_qp_soft_break_never_starts_a_line_with_from),
        cmocka_unit_test(test_base64_round_trip_and_rejects_garbage),
        cmocka_unit_test(test_7bit_text_8bit_becomes_quoted_printable),
        cmocka_unit_test(test_7bit_safe_part_is_copied_byte_for_byte),
        cmocka_unit_test(test_7bit_binary_attachment_becomes_base64),
        cmocka_unit_test(test_7bit_long_line_is_wrapped_by_quoted_printable),
        cmocka_unit_test(test_7bit_multipart_recurses_and_drops_preamble),
        cmocka_unit_test(test_7bit_rewrites_8bit_content_fields_per_rfc2231_and_2047),
        cmocka_unit_test(test_7bit_refuses_8bit_bytes_inside_base64_part),
        cmocka_unit_test(test_7bit_depth_limit_is_enforced),
        cmocka_unit_test(test_multipart_split_gives_exact_part_bytes),
        cmocka_unit_test(test_multipart_split_ignores_longer_boundaries),
        cmocka_unit_test(test_from_needs_exactly_one_mailbox),
        cmocka_unit_test(test_content_type_parse_rejects_half_understood_values),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
