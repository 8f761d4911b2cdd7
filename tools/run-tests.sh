#!/usr/bin/env bash
# run-tests.sh: the whole suite on a fresh Debian machine: set-up, builds, then tests from the
# quickest to the slowest (unit tests, tiny guests on /dev/kvm, Linux guests in the test host).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

export GODWIT_CACHE=${GODWIT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/godwit}

tools/install-deps.sh
tools/build.sh --asan

# The suites' own counts ("N passed, M failed"; ctest's "... N tests failed out of M"), from
# each suite's last run, add up to the one line the run ends with.
total_passed=0 total_failed=0
tally() { # LOG: adds the last count line in LOG to the totals
  local line p f
  line=$(grep -aoE '[0-9]+ passed, [0-9]+ failed|[0-9]+ tests failed out of [0-9]+' "$1" | tail -n 1) || true
  case $line in
    *" passed, "*) p=${line%% *}; f=${line#*, }; f=${f%% *} ;;
    *" out of "*) f=${line%% *}; p=$((${line##* } - f)) ;;
    *) p=0 f=1 ;; # a suite that ended before counting anything
  esac
  total_passed=$((total_passed + p)) total_failed=$((total_failed + f))
}
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

echo "== unit tests (release, then ASan/UBSan)"
unit_status=0
for dir in build build-asan; do
  ctest --test-dir $dir -L unit --output-on-failure -j2 2>&1 | tee "$logs/unit" || unit_status=1
  tally "$logs/unit"
done
if [ $unit_status -ne 0 ]; then # seconds in, before any guest: no use booting one
  echo "== all suites: $total_passed passed, $total_failed failed (stopped after the unit tests)"
  exit 1
fi

# Each fuzzing harness for a bounded time (10 s each, under 4 minutes in all with the build;
# docs/fuzzing.md), after replaying its seeds and the inputs of bugs it found. A crash fails
# the run at the end.
echo "== fuzzing (tools/run-fuzz.sh)"
fuzz_status=0
tools/run-fuzz.sh 2>&1 | tee "$logs/fuzz" || fuzz_status=1
tally "$logs/fuzz"

# Every standard build type must build. Release is -O3, where GCC warns about what the -O2
# builds above do not show (a 'maybe uninitialized' there once broke it), and -Werror fails.
echo "== the Release build type (cmake -DCMAKE_BUILD_TYPE=Release, build-release)"
release_status=0
{ cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DGODWIT_TESTS=OFF &&
  cmake --build build-release -j"$(nproc)"; } >"$logs/release" 2>&1 || release_status=1
grep -E 'error|warning' "$logs/release" || true
echo "release build: $((1 - release_status)) passed, $release_status failed" | tee "$logs/release"
tally "$logs/release"

echo "== default guest (Debian's kernel and a busybox initramfs)"
guests/build-guest.sh >/dev/null

# Each guest suite gets a test-host boot of its own (about 4 s). Tiny guests and the device
# suite run under the sanitizer build; the other Linux-guest suites under the release build,
# whose speed is what users get. A suite that fails is run once more and must then pass: the
# nested test host (TCG emulating AMD-V) is occasionally slow or freezes (testhost.sh stops
# a frozen one with status 75), and a second failure is a real one. Every run is printed.
if tools/testhost/have-kvm.sh; then
  echo "== guests on this machine's /dev/kvm"
  host=()
else
  echo "== guests in the test host (this machine's /dev/kvm cannot run them)"
  host=(tools/testhost/testhost.sh --)
fi
# A frozen test host (75) says nothing about the suite: it is run again without counting
# as the suite's one rerun, up to six runs in all (one CI run of 6f51a22 saw the test host
# freeze four times, three in a row in the device suite).
# Each suite's time is printed, so that a run's log shows where its minutes went.
# The device suite, whose cases each boot a VM of their own, is run again without the cases
# that passed (GODWIT_SKIP_CASES, which it counts as passed): a case lost to the test host
# then costs its own rerun and those after it, not the group's. The other suites share one
# guest between cases, or take a minute or two, and run again whole.
suite() {
  echo "== $*"
  local runs=0 failures=0 rc start=$SECONDS passed_cases=
  while :; do
    rc=0
    GODWIT_SKIP_CASES=$passed_cases "${host[@]}" "$@" 2>&1 | tee "$logs/suite" || rc=${PIPESTATUS[0]}
    [ "$rc" -eq 0 ] && break
    runs=$((runs + 1))
    [ "$rc" -eq 75 ] || failures=$((failures + 1))
    [ "$failures" -ge 2 ] || [ "$runs" -ge 6 ] && break
    case $1 in
      */run-devices.sh)
        passed_cases=$(echo $passed_cases $(sed -n 's/^PASS \([a-z0-9_]*\)$/\1/p' "$logs/suite"))
        echo "== $1 failed (status $rc); running it again without the cases that passed: ${passed_cases:-none}" ;;
      *) echo "== $1 failed (status $rc); running it again" ;;
    esac
  done
  tally "$logs/suite"
  echo "== $* took $((SECONDS - start)) s in $((runs + (rc == 0))) run(s)"
  return $((rc != 0))
}
failed=$((fuzz_status | release_status))
suite tests/kvm/run-kvm-tests.sh build-asan || failed=1
# The boot cases, each VM jailed as an unprivileged user (the other suites run it plain).
suite tests/e2e/run-e2e.sh build --jail || failed=1
# The device cases in two groups (I/O devices; snapshots and migration), each in a test-host
# boot of its own: a frozen test host costs the rerun of one group.
suite tests/e2e/run-devices.sh build io || failed=1
suite tests/e2e/run-devices.sh build state || failed=1
# Every device case again under the sanitizers, the network transfer included.
suite tests/e2e/run-devices.sh build-asan io || failed=1
suite tests/e2e/run-devices.sh build-asan state || failed=1
suite tests/api/run-api-tests.sh build || failed=1
# The guest agent over virtio-vsock: exec, cp, kvp in the default guest.
suite tests/e2e/run-agent.sh build || failed=1
# The README's main job, driven through a real terminal as a person would; it runs the test
# host itself when it needs one.
echo "== the main job in a terminal (tools/boot-default-guest.sh under tmux)"
start=$SECONDS
tests/e2e/run-main-job.sh 2>&1 | tee "$logs/main-job" || failed=1
tally "$logs/main-job"
echo "== the main job took $((SECONDS - start)) s"
echo "== all suites: $total_passed passed, $total_failed failed ($SECONDS s)"
exit $failed
