#!/usr/bin/env bash
# Kyso's whole test suite, from a fresh clone: installs the Debian packages,
# builds twice (gcc with -Werror; clang with ASan+UBSan and the libFuzzer
# targets), prepares the test PKI and SoftHSM token, and runs every CTest test
# under the sanitizers. Exits non-zero on any failure; nothing is skipped.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
jobs=$(nproc 2>/dev/null || echo 2)

bash scripts/deps.sh

echo "== format (clang-format, .clang-format at the root)"
git ls-files '*.c' '*.h' 2>/dev/null | xargs -r clang-format --dry-run -Werror

echo "== build (gcc, -Werror)"
cmake -S . -B build -DKYSO_WERROR=ON >/dev/null
cmake --build build -j"$jobs"

echo "== build (clang, ASan+UBSan, fuzz targets)"
CC=clang cmake -S . -B build-asan -DKYSO_WERROR=ON -DKYSO_SANITIZE=ON -DKYSO_FUZZ=ON >/dev/null
cmake --build build-asan -j"$jobs"

echo "== tests (sanitized build)"
# A fresh PKI per run: certificates are dated from today.
rm -rf build-asan/pki build-asan/tmp
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
ctest --test-dir build-asan --output-on-failure -j"$jobs"
