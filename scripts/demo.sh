#!/usr/bin/env bash
# The quick-start demo: builds Kyso, makes the demo PKI and a SoftHSM token
# holding the organisation key, signs a Vietnamese official mail through the
# token with `kyso sign`, and verifies it with `kyso verify` and openssl.
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
"$kyso" verify --trust "$pki/trust.pem" --crl "$pki/sub.crl" --crl "$pki/root.crl" \
  --authserv-id mail.backan.gov.vn "$work/official.signed.eml"

echo "== openssl cms -verify (an independent judge)"
openssl cms -verify -in "$work/official.signed.eml" -CAfile "$pki/trust.pem" \
  -purpose smimesign -out /dev/null

echo "== a tampered copy"
sed 's/2026 trước/2027 trước/' "$work/official.signed.eml" > "$work/tampered.eml"
sed -i 's/ng=C3=A2n s=C3=A1ch n=C4=83m 2026/ng=C3=A2n s=C3=A1ch n=C4=83m 2027/' "$work/tampered.eml"
"$kyso" verify --trust "$pki/trust.pem" "$work/tampered.eml" || true
echo "demo done: files in $work"
