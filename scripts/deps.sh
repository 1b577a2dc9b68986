#!/usr/bin/env bash
# Installs the Debian packages Kyso builds and tests with, only when missing,
# so a warm machine pays nothing and a fresh one is complete.
set -euo pipefail

packages=(
  build-essential cmake pkg-config clang libclang-rt-14-dev
  libssl-dev openssl libetpan-dev libp11-dev libconfig-dev libmilter-dev
  libcmocka-dev softhsm2 opensc gpgsm gnupg libnss3-tools python3
  postfix sasl2-bin libsasl2-modules
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    echo "deps: need root to apt-get install the packages above" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  # Postfix must not ask questions; the tests run their own instance.
  printf '%s\n' "postfix postfix/main_mailer_type select Local only" \
    "postfix postfix/mailname string kyso.test" | debconf-set-selections
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
