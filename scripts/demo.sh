#!/usr/bin/env bash
# The quick-start demo: builds Kyso, makes the demo PKI and a SoftHSM token
# holding the organisation key, signs a Vietnamese official mail through the
# token with `kyso sign` and verifies it with `kyso verify` and openssl; then
# runs the whole chain on 127.0.0.1: a private Postfix instance with
# kyso-milter signs a mail submitted by an authenticated official and badges
# an incoming signed one.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash scripts/deps.sh >/dev/null
cmake -S . -B build >/dev/null
cmake --build build -j"$(nproc 2>/dev/null || echo 2)" >/dev/null

pki="$root/build/demo-pki"
bash certs/setup.sh "$pki"
# shellcheck source=/dev/null
. "$pki/env.sh"
kyso="$root/build/bin/kyso"
work="$root/build/demo"
mkdir -p "$work"

cat > "$work/official.eml" <<'MAIL'
From: "Văn phòng UBND tỉnh Bắc Kạn" <vanphong@backan.gov.vn>
To: "Sở Tài chính" <sotaichinh@backan.gov.vn>
Subject: =?utf-8?b?VsSDbiBi4bqjbiBz4buRIDEyMy9VQk5ELVZQ?=
Date: Fri, 04 Dec 2026 09:00:00 +0700
Message-ID: <demo-1@backan.gov.vn>
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

Kính gửi: Sở Tài chính tỉnh Bắc Kạn

Ủy ban nhân dân tỉnh đề nghị Quý Sở báo cáo tình hình thực hiện
dự toán ngân sách năm 2026 trước ngày 15/12/2026.

Trân trọng.
MAIL

echo "== kyso sign (key on the SoftHSM token, never leaves it)"
"$kyso" sign --key 'pkcs11:token=kyso-org;object=org;type=private' \
  --module "$KYSO_PKCS11_MODULE" --pin-file "$pki/token.pin" \
  --cert "$pki/org.pem" --chain "$pki/chain.pem" \
  -o "$work/official.signed.eml" "$work/official.eml"
sed -n '1,14p' "$work/official.signed.eml"
echo "   [...]"

echo "== kyso verify"
"$kyso" verify --offline --trust "$pki/trust.pem" --crl "$pki/sub.crl" --crl "$pki/root.crl" \
  --authserv-id mail.backan.gov.vn "$work/official.signed.eml"

echo "== openssl cms -verify (an independent judge)"
openssl cms -verify -in "$work/official.signed.eml" -CAfile "$pki/trust.pem" \
  -purpose smimesign -out /dev/null

echo "== a tampered copy"
sed 's/2026 trước/2027 trước/' "$work/official.signed.eml" > "$work/tampered.eml"
sed -i 's/ng=C3=A2n s=C3=A1ch n=C4=83m 2026/ng=C3=A2n s=C3=A1ch n=C4=83m 2027/' "$work/tampered.eml"
"$kyso" verify --offline --trust "$pki/trust.pem" "$work/tampered.eml" || true

echo "== Postfix + kyso-milter on 127.0.0.1"
pf="$work/pf"
mail="$work/mail"
rm -rf "$mail"
mkdir -p "$mail"
cleanup() {
  [ -n "${milter_pid:-}" ] && kill "$milter_pid" 2>/dev/null
  [ -n "${sink_pid:-}" ] && kill "$sink_pid" 2>/dev/null
  bash tests/e2e/postfix_instance.sh stop "$pf" >/dev/null 2>&1 || true
  wait 2>/dev/null || true
}
trap cleanup EXIT
python3 tests/e2e/smtp_sink.py "$mail" 10026 >"$work/sink.log" 2>&1 &
sink_pid=$!
bash tests/e2e/postfix_instance.sh start "$pf"
cat >"$work/kyso.conf" <<CONF
milter: { socket = "unix:$pf/kyso.sock"; socket_mode = "0666"; user = ""; group = ""; };
tokens = ( { name = "org-token"; module = "$KYSO_PKCS11_MODULE"; pin_file = "$pki/token.pin"; } );
identities = ( { name = "vanphong"; key = "pkcs11:token=kyso-org;object=org;type=private";
  token = "org-token"; cert = "$pki/org.pem"; chain = "$pki/chain.pem";
  senders = [ "@backan.gov.vn" ]; } );
outbound: { trust_auth = true; internal_networks = [ ]; };
inbound: { trust_anchors = "$pki/trust.pem"; untrusted = "$pki/chain.pem";
  crls = [ "$pki/sub.crl", "$pki/root.crl" ]; authserv_id = "mail.backan.gov.vn";
  subject_tag: { pass = "[Đã ký số]"; fail = "[CHỮ KÝ KHÔNG HỢP LỆ]"; };
  must_sign_domains = [ "*.gov.vn" ]; };
CONF
"$root/build/bin/kyso-milter" -n -c "$work/kyso.conf"
"$root/build/bin/kyso-milter" -f -c "$work/kyso.conf" 2>"$work/milter.log" &
milter_pid=$!
for _ in $(seq 1 100); do [ -S "$pf/kyso.sock" ] && break; sleep 0.1; done
# An incoming mail, signed elsewhere by the province chairman's own key.
cat > "$work/incoming.eml" <<'MAIL'
From: "Nguyễn Văn An" <chutich@backan.gov.vn>
To: vanphong@backan.gov.vn
Subject: =?utf-8?b?Q2jhu4kgxJHhuqFvIHbhu4EgY2h1eeG7g24gxJHhu5VpIHPhu5E=?=
Date: Fri, 04 Dec 2026 10:00:00 +0700
Message-ID: <demo-in-1@backan.gov.vn>
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

Đề nghị các sở, ngành triển khai ngay.
MAIL
"$kyso" sign --key "file:$pki/leader.key" --cert "$pki/leader.pem" --chain "$pki/chain.pem" \
  -o "$work/incoming.signed.eml" "$work/incoming.eml"
KYSO_PKI="$pki" python3 scripts/demo_mail.py "$mail" "$pf/sasl.pass" "$work/incoming.signed.eml"
echo "== kyso-milter log"
sed -n '1,20p' "$work/milter.log"
echo "demo done: files in $work"
