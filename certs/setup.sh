#!/usr/bin/env bash
# Prepares the complete Kyso test PKI and token in OUTDIR (docs/TEST-LAYOUT.md).
# Usage: certs/setup.sh OUTDIR      (idempotent; a few seconds the first time)
set -euo pipefail

if [ $# -ne 1 ] || [ -z "$1" ]; then
  echo "usage: $0 OUTDIR" >&2
  exit 64
fi
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bash "$here/mkpki.sh" "$1"
bash "$here/mktoken.sh" "$1"
