#!/usr/bin/env bash
# Creates the SoftHSM2 test token for Kyso in OUTDIR (after mkpki.sh).
# Usage: certs/mktoken.sh OUTDIR
# Token "kyso-org": private key + certificate "org" (id 01) and "leader" (id 02).
# Writes OUTDIR/softhsm2.conf, OUTDIR/tokens/, OUTDIR/token.pin (0600),
# OUTDIR/so.pin (0600) and OUTDIR/env.sh. Idempotent (OUTDIR/tokens/.done).
set -euo pipefail

if [ $# -ne 1 ] || [ -z "$1" ]; then
  echo "usage: $0 OUTDIR" >&2
  exit 64
fi
out=$(cd "$1" && pwd)

if [ -e "$out/tokens/.done" ]; then
  exit 0
fi
for f in org.key org.pem leader.key leader.pem; do
  if [ ! -s "$out/$f" ]; then
    echo "mktoken: $out/$f missing; run certs/mkpki.sh $out first" >&2
    exit 1
  fi
done

module=/usr/lib/softhsm/libsofthsm2.so
label=kyso-org
umask 077

rm -rf "$out/tokens"
mkdir -p "$out/tokens"
cat >"$out/softhsm2.conf" <<EOF
directories.tokendir = $out/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
EOF
chmod 0644 "$out/softhsm2.conf"
export SOFTHSM2_CONF="$out/softhsm2.conf"

pin=$(openssl rand -hex 8)
so_pin=$(openssl rand -hex 8)
printf '%s\n' "$pin" >"$out/token.pin"
printf '%s\n' "$so_pin" >"$out/so.pin"
chmod 0600 "$out/token.pin" "$out/so.pin"

softhsm2-util --init-token --free --label "$label" \
  --so-pin "$so_pin" --pin "$pin" >/dev/null

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

for pair in org:01 leader:02; do
  name=${pair%%:*}
  id=${pair##*:}
  # softhsm2-util wants PKCS#8 PEM; normalise whatever mkpki.sh produced
  openssl pkcs8 -topk8 -nocrypt -in "$out/$name.key" -out "$tmp/$name.p8"
  softhsm2-util --import "$tmp/$name.p8" --token "$label" \
    --label "$name" --id "$id" --pin "$pin" >/dev/null
  openssl x509 -in "$out/$name.pem" -outform DER -out "$tmp/$name.der"
  pkcs11-tool --module "$module" --token-label "$label" --login --pin "$pin" \
    --write-object "$tmp/$name.der" --type cert --id "$id" --label "$name" \
    >/dev/null
done

cat >"$out/env.sh" <<EOF
# Source this to use the Kyso test token.
export SOFTHSM2_CONF='$out/softhsm2.conf'
export KYSO_PKCS11_MODULE='$module'
EOF
chmod 0644 "$out/env.sh"

touch "$out/tokens/.done"
