#!/usr/bin/env bash
# Generates the Kyso test PKI in OUTDIR (see docs/TEST-LAYOUT.md).
# Usage: certs/mkpki.sh OUTDIR
# Idempotent: exits at once when OUTDIR/.done exists. No key is ever committed;
# everything is made here, in a second or two.
set -euo pipefail

if [ $# -ne 1 ] || [ -z "$1" ]; then
  echo "usage: $0 OUTDIR" >&2
  exit 64
fi

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p "$1"
out=$(cd "$1" && pwd)

if [ -e "$out/.done" ]; then
  exit 0
fi

umask 077
export LC_ALL=C.UTF-8

ca="$out/ca"
rm -rf "$ca"
mkdir -p "$ca"
cnf="$ca/ca.cnf"
cp "$here/ca.cnf" "$cnf"

# Defaults so the config always loads; overridden per certificate below.
export CADIR="$ca/root"
export SAN_EMAIL="nobody@invalid"
export CDP_URL="http://127.0.0.1:8089/root.crl"
export OCSP_URL="http://127.0.0.1:8088"
export OPENSSL_CONF="$cnf"

pass=kyso
ca_start=20190101000000Z
ca_end=$(date -u -d '+20 years' +%Y%m%d%H%M%SZ)
ee_start=$(date -u -d '-1 day' +%Y%m%d%H%M%SZ)
ee_end=$(date -u -d '+3 years' +%Y%m%d%H%M%SZ)

newca_dir() {
  mkdir -p "$1/newcerts"
  : >"$1/index.txt"
  echo 1000 >"$1/crlnumber"
}

# genkey NAME [rsa BITS | ec]  ->  NAME.key (PKCS#8 PEM, unencrypted)
genkey() {
  local name=$1 kind=${2:-rsa} bits=${3:-2048}
  if [ "$kind" = ec ]; then
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
      -pkeyopt ec_param_enc:named_curve -out "$out/$name.key" 2>/dev/null
  else
    openssl genpkey -algorithm RSA -pkeyopt "rsa_keygen_bits:$bits" \
      -out "$out/$name.key" 2>/dev/null
  fi
}

# issue NAME CADIR PROFILE SUBJECT START END
issue() {
  local name=$1 cadir=$2 profile=$3 subj=$4 start=$5 end=$6
  openssl req -new -utf8 -config "$cnf" -key "$out/$name.key" -subj "$subj" \
    -out "$ca/$name.csr"
  CADIR=$cadir openssl ca -batch -utf8 -config "$cnf" -notext -preserveDN \
    -extensions "$profile" -startdate "$start" -enddate "$end" \
    -in "$ca/$name.csr" -out "$out/$name.pem" 2>/dev/null
}

# self-signed CA: selfca NAME DIR SUBJECT
selfca() {
  local name=$1 dir=$2 subj=$3
  newca_dir "$dir"
  genkey "$name"
  openssl req -new -utf8 -config "$cnf" -key "$out/$name.key" -subj "$subj" \
    -out "$ca/$name.csr"
  CADIR=$dir openssl ca -batch -utf8 -config "$cnf" -notext -preserveDN -selfsign \
    -keyfile "$out/$name.key" -extensions v3_root \
    -startdate "$ca_start" -enddate "$ca_end" \
    -in "$ca/$name.csr" -out "$out/$name.pem" 2>/dev/null
  cp "$out/$name.pem" "$dir/ca.pem"
  cp "$out/$name.key" "$dir/ca.key"
}

# --- root -------------------------------------------------------------------
selfca root "$ca/root" "/C=VN/O=Kyso Test/CN=Kyso Test Root CA"

# --- intermediate -------------------------------------------------------------
newca_dir "$ca/sub"
genkey sub
CDP_URL="http://127.0.0.1:8089/root.crl" \
  issue sub "$ca/root" v3_sub "/C=VN/O=Kyso Test/CN=Kyso Test Specialised Signing CA" \
  "$ca_start" "$ca_end"
cp "$out/sub.pem" "$ca/sub/ca.pem"
cp "$out/sub.key" "$ca/sub/ca.key"

# --- signers under sub --------------------------------------------------------
export CDP_URL="http://127.0.0.1:8089/sub.crl"
prov="/C=VN/ST=Bắc Kạn/O=UBND tỉnh Bắc Kạn"

signer() { # signer NAME EMAIL PROFILE SUBJECT [START END]
  local name=$1 email=$2 profile=$3 subj=$4 start=${5:-$ee_start} end=${6:-$ee_end}
  SAN_EMAIL=$email issue "$name" "$ca/sub" "$profile" "$subj" "$start" "$end"
}

genkey org
signer org vanphong@backan.gov.vn v3_signer "$prov/CN=Văn phòng UBND tỉnh Bắc Kạn"
genkey leader
signer leader chutich@backan.gov.vn v3_signer "$prov/OU=Lãnh đạo UBND tỉnh/CN=Nguyễn Văn An"
genkey rsa3072 rsa 3072
signer rsa3072 sotttt@backan.gov.vn v3_signer "/C=VN/ST=Bắc Kạn/O=Sở Thông tin và Truyền thông tỉnh Bắc Kạn/CN=Sở Thông tin và Truyền thông"
genkey ec ec
signer ec ecuser@backan.gov.vn v3_signer "$prov/CN=Trần Thị Bích Ngọc"
genkey revoked
signer revoked revoked@backan.gov.vn v3_signer "$prov/CN=Lê Văn Thu Hồi"
genkey expired
signer expired expired@backan.gov.vn v3_signer "$prov/CN=Phạm Thị Hết Hạn" \
  20200101000000Z 20210101000000Z
genkey tlsonly
signer tlsonly tlsonly@backan.gov.vn v3_tlsonly "$prov/CN=Máy chủ thư điện tử"
genkey subjemail
signer subjemail subjemail@backan.gov.vn v3_subjemail \
  "$prov/CN=Hoàng Thị Thư/emailAddress=subjemail@backan.gov.vn"

# --- revocation and CRLs ------------------------------------------------------
CADIR="$ca/sub" openssl ca -batch -config "$cnf" -revoke "$out/revoked.pem" \
  -crl_reason keyCompromise 2>/dev/null
CADIR="$ca/sub" openssl ca -batch -config "$cnf" -gencrl -crldays 30 \
  -out "$out/sub.crl" 2>/dev/null
CADIR="$ca/root" openssl ca -batch -config "$cnf" -gencrl -crldays 30 \
  -out "$out/root.crl" 2>/dev/null
# DER copies, as an HTTP CRL distribution point would serve them
openssl crl -in "$out/sub.crl" -outform DER -out "$out/sub.crl.der"
openssl crl -in "$out/root.crl" -outform DER -out "$out/root.crl.der"

# --- rogue root and its signer (never trusted) -------------------------------
selfca rogue-root "$ca/rogue" "/C=VN/O=Giả mạo/CN=Kyso Rogue Root CA"
genkey rogue
SAN_EMAIL=rogue@backan.gov.vn issue rogue "$ca/rogue" v3_rogue \
  "$prov/CN=Kẻ Giả Mạo" "$ee_start" "$ee_end"

# --- bundles -----------------------------------------------------------------
cp "$out/root.pem" "$out/trust.pem"
cp "$out/sub.pem" "$out/chain.pem"
cat "$out/sub.pem" "$out/root.pem" >"$ca/fullchain.pem"

# PBE-SHA1-3DES + SHA-1 MAC: the PKCS#12 flavour gpgsm 2.2 and NSS both import
# (gpgsm cannot read OpenSSL 3's default PBES2/AES with HMAC-SHA256).
p12opts=(-keypbe PBE-SHA1-3DES -certpbe PBE-SHA1-3DES -macalg sha1)
for n in org leader rsa3072 ec revoked expired tlsonly subjemail; do
  openssl pkcs12 -export "${p12opts[@]}" -in "$out/$n.pem" -inkey "$out/$n.key" \
    -certfile "$ca/fullchain.pem" -name "$n" -passout "pass:$pass" \
    -out "$out/$n.p12"
done
openssl pkcs12 -export "${p12opts[@]}" -in "$out/rogue.pem" -inkey "$out/rogue.key" \
  -certfile "$out/rogue-root.pem" -name rogue -passout "pass:$pass" \
  -out "$out/rogue.p12"

rm -f "$ca"/*.csr
# certificates, CRLs and bundles are public; keys and p12 stay 0600
chmod 0644 "$out"/*.pem "$out"/*.crl "$out"/*.crl.der
chmod 0755 "$out"
touch "$out/.done"
