#!/usr/bin/env bash
# The kyso command line as an admin meets it: exit codes, inspect, usage
# errors, unreadable input. Each check can fail; all are counted.
set -u
pass=0 fail=0
ok() { echo "ok - $1"; pass=$((pass + 1)); }
bad() { echo "not ok - $1"; fail=$((fail + 1)); }
expect_rc() { # name expected-rc command...
  local name=$1 want=$2; shift 2
  "$@" >"$KYSO_TMP/out" 2>"$KYSO_TMP/err"
  local rc=$?
  if [ "$rc" -eq "$want" ]; then ok "$name (exit $rc)"; else bad "$name: exit $rc, expected $want; $(head -c 300 "$KYSO_TMP/err")"; fi
}
mkdir -p "$KYSO_TMP"
P=$KYSO_PKI
printf 'From: vanphong@backan.gov.vn\nTo: a@b.vn\nSubject: cli\n\nNội dung.\n' >"$KYSO_TMP/plain.eml"

expect_rc "sign with a file: key" 0 "$KYSO" sign --key "file:$P/org.key" --cert "$P/org.pem" \
  --chain "$P/chain.pem" -o "$KYSO_TMP/signed.eml" "$KYSO_TMP/plain.eml"
expect_rc "verify offline: pass is exit 0" 0 "$KYSO" verify --offline --trust "$P/trust.pem" "$KYSO_TMP/signed.eml"
grep -q '^kyso; smime=pass' "$KYSO_TMP/out" && ok "default output is an A-R value" || bad "A-R value: $(head -c 200 "$KYSO_TMP/out")"
expect_rc "verify unsigned: none is exit 2" 2 "$KYSO" verify --offline --trust "$P/trust.pem" "$KYSO_TMP/plain.eml"
expect_rc "verify without anchors: fail is exit 1" 1 "$KYSO" verify --offline "$KYSO_TMP/signed.eml"
expect_rc "verify from stdin" 0 sh -c "\"$KYSO\" verify --offline --trust \"$P/trust.pem\" - < \"$KYSO_TMP/signed.eml\""
expect_rc "unknown option is a usage error" 64 "$KYSO" verify --no-such-option
expect_rc "unknown command is a usage error" 64 "$KYSO" frobnicate
expect_rc "sign without --key is a usage error" 64 "$KYSO" sign --cert "$P/org.pem" "$KYSO_TMP/plain.eml"
expect_rc "missing input file is exit 66" 66 "$KYSO" verify --offline "$KYSO_TMP/does-not-exist.eml"
expect_rc "unreadable trust file is exit 66" 66 "$KYSO" verify --offline --trust "$KYSO_TMP/nope.pem" "$KYSO_TMP/signed.eml"
expect_rc "key not matching the certificate is refused" 69 "$KYSO" sign --key "file:$P/leader.key" \
  --cert "$P/org.pem" "$KYSO_TMP/plain.eml"
expect_rc "wrong PIN is refused" 69 env SOFTHSM2_CONF="$P/softhsm2.conf" "$KYSO" sign \
  --key 'pkcs11:token=kyso-org;object=org;type=private?pin-value=0000' \
  --module /usr/lib/softhsm/libsofthsm2.so --cert "$P/org.pem" "$KYSO_TMP/plain.eml"
expect_rc "pin-source in the URI" 0 env SOFTHSM2_CONF="$P/softhsm2.conf" "$KYSO" sign \
  --key "pkcs11:token=kyso-org;id=%01;type=private?pin-source=file:$P/token.pin&module-path=/usr/lib/softhsm/libsofthsm2.so" \
  --cert "$P/org.pem" -o "$KYSO_TMP/signed2.eml" "$KYSO_TMP/plain.eml"
expect_rc "inspect a signed message" 0 "$KYSO" inspect "$KYSO_TMP/signed2.eml"
for want in 'signature: multipart/signed (detached), covers the whole message, micalg=sha-256' \
  'signers: 1' 'id-smime-aa-signingCertificateV2' 'email: vanphong@backan.gov.vn' 'signing time: '; do
  grep -qF "$want" "$KYSO_TMP/out" && ok "inspect shows '$want'" || bad "inspect lacks '$want'"
done
expect_rc "inspect an unsigned message" 0 "$KYSO" inspect "$KYSO_TMP/plain.eml"
grep -qF 'signature: none (message is not signed)' "$KYSO_TMP/out" && ok "inspect says unsigned" || bad "inspect unsigned: $(cat "$KYSO_TMP/out")"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
