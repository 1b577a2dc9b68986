#!/usr/bin/env bash
# Runs each libFuzzer target for SECONDS (default 600) on a scratch copy of its
# corpus, both at once (one per core). New inputs stay in build-asan/fuzz-work;
# copy interesting ones into tests/fuzz/corpus/ by hand.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
secs=${1:-600}
CC=clang cmake -S . -B build-asan -DKYSO_SANITIZE=ON -DKYSO_FUZZ=ON >/dev/null
cmake --build build-asan -j2 >/dev/null
bash certs/setup.sh build-asan/pki >/dev/null
pids=()
for t in verify sign; do
  w=build-asan/fuzz-work/$t
  mkdir -p "$w"
  cp -n tests/fuzz/corpus/$t/* "$w/"
  KYSO_FUZZ_TRUST=build-asan/pki/trust.pem build-asan/bin/fuzz_$t -max_total_time="$secs" \
    -max_len=65536 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="build-asan/fuzz-work/crash-$t-" "$w" >"build-asan/fuzz-work/$t.log" 2>&1 &
  pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
tail -n 12 build-asan/fuzz-work/*.log
exit $rc
