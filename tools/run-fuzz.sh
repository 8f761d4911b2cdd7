#!/usr/bin/env bash
# run-fuzz.sh: builds the libFuzzer harnesses (tests/fuzz/, with clang, ASan and UBSan) in
# build-fuzz and runs each for a bounded time from its seed corpus and its kept regressions;
# fails when any harness finds a crash. docs/fuzzing.md says what each harness covers.
#
#   tools/run-fuzz.sh [--time S] [--replay] [HARNESS...]
#     --time S   seconds per harness (default 10, or GODWIT_FUZZ_TIME)
#     --replay   only run the corpus and the regressions once, no fuzzing
#     HARNESS    fuzz_http, http, ...: only these (default: every tests/fuzz/fuzz_*.c)
#
# New inputs go to build-fuzz/corpus/HARNESS (kept between runs, never into the tree); a
# crashing input to build-fuzz/crashes/. Keep one under tests/fuzz/regressions/HARNESS/ once
# its bug is fixed.
set -euo pipefail
cd "$(dirname "$0")/.."

time_s=${GODWIT_FUZZ_TIME:-10}
replay=0
only=()
while [ $# -gt 0 ]; do
  case "$1" in
    --time) time_s=$2; shift 2 ;;
    --replay) replay=1; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    -*) echo "run-fuzz: unknown option $1" >&2; exit 2 ;;
    *) only+=("fuzz_${1#fuzz_}"); shift ;;
  esac
done

build=build-fuzz
cmake -S . -B "$build" -DCMAKE_C_COMPILER=clang -DGODWIT_FUZZ=ON -DGODWIT_TESTS=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g" >/dev/null
cmake --build "$build" --target fuzzers -j"$(nproc)" >/dev/null

if [ ${#only[@]} -eq 0 ]; then
  for src in tests/fuzz/fuzz_*.c; do
    only+=("$(basename "$src" .c)")
  done
fi

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
mkdir -p "$build/crashes"
failed=0 npassed=0 nfailed=0
for h in "${only[@]}"; do
  bin=$build/tests/fuzz/$h
  name=${h#fuzz_}
  if [ ! -x "$bin" ]; then
    echo "run-fuzz: no harness $h" >&2
    exit 2
  fi
  dirs=()
  for d in "tests/fuzz/corpus/$name" "tests/fuzz/regressions/$name"; do
    [ -d "$d" ] && dirs+=("$d")
  done
  log=$build/crashes/$h.log
  if [ "$replay" -eq 1 ]; then
    inputs=()
    for d in "${dirs[@]}"; do
      for f in "$d"/*; do
        [ -f "$f" ] && inputs+=("$f")
      done
    done
    rc=0
    if [ ${#inputs[@]} -gt 0 ]; then
      "$bin" "${inputs[@]}" >"$log" 2>&1 || rc=$?
    fi
    line="$h: ${#inputs[@]} inputs replayed"
  else
    work=$build/corpus/$name
    mkdir -p "$work"
    rc=0
    "$bin" -max_total_time="$time_s" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="$build/crashes/$h-" "$work" "${dirs[@]}" >"$log" 2>&1 || rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    line="$h: ${runs:-?} executions in ${time_s} s, corpus $(find "$work" -type f | wc -l) inputs"
  fi
  if [ "$rc" -ne 0 ]; then
    failed=1
    line="$line: FAILED (status $rc; $log)"
  fi
  echo "$line"
  if [ "$rc" -ne 0 ]; then
    grep -E '^(==[0-9]+==ERROR|SUMMARY|fuzz: |.*check failed|.*runtime error)|Test unit written' \
      "$log" | head -6 | sed 's/^/    /' || true
    nfailed=$((nfailed + 1))
  else
    npassed=$((npassed + 1))
  fi
done
echo "run-fuzz: $npassed passed, $nfailed failed"
if [ "$failed" -ne 0 ]; then
  echo "run-fuzz: a harness failed; its input is in $build/crashes/ (see docs/fuzzing.md)" >&2
fi
exit $failed
