#!/usr/bin/env bash
# make fuzz: each target under AFL++ (cargo-afl, stable toolchain) for FUZZ_SECS seconds
# (default 600), then its executions and crashes. The queue AFL++ grows is merged back into
# corpus/<target>/ so the next run starts from it. Crashes are left in out/<target>/.
set -euo pipefail
cd "$(dirname "$0")"
command -v afl-fuzz >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q afl++; }
command -v cargo-afl >/dev/null || cargo install --locked cargo-afl
cargo afl build --release --quiet
secs=${FUZZ_SECS:-600}
status=0
for t in ${FUZZ_TARGETS:-dns cni index remote upstream}; do
  out="out/$t"
  rm -rf "$out"; mkdir -p out
  AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_BENCH_UNTIL_CRASH=0 \
    cargo afl fuzz -V "$secs" -i "corpus/$t" -o "$out" "target/release/$t" > "out-$t.log" 2>&1 || true
  stats="$out/default/fuzzer_stats"
  [ -f "$stats" ] || { echo "$t: AFL++ did not run, see fuzz/out-$t.log"; status=1; continue; }
  execs=$(awk -F: '/^execs_done/ {gsub(/ /,"",$2); print $2}' "$stats")
  crashes=$(awk -F: '/^saved_crashes/ {gsub(/ /,"",$2); print $2}' "$stats")
  echo "$t: $execs executions in ${secs} s, $crashes crashes"
  [ "$crashes" = 0 ] || status=1
  for f in "$out"/default/queue/id:*; do cp -n "$f" "corpus/$t/$(basename "$f" | cut -d, -f1 | tr ':' '_')" 2>/dev/null || true; done
done
exit $status
