#!/usr/bin/env bash
# build.sh: configures and builds godwit into build/ (release) and, with --asan, build-asan/.
set -euo pipefail
cd "$(dirname "$0")/.."

jobs=$(nproc 2>/dev/null || echo 2)

# Quiet on success; the whole compiler output on failure.
run_quiet() {
  local out
  if ! out=$("$@" 2>&1); then
    printf '%s\n' "$out" >&2
    echo "build: failed: $*" >&2
    exit 1
  fi
}

build() { # build DIR [cmake args...]
  local dir=$1; shift
  run_quiet cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@"
  run_quiet cmake --build "$dir" -j"$jobs"
  echo "build: $dir/godwit"
}

build build
if [ "${1:-}" = "--asan" ]; then
  build build-asan -DGODWIT_SANITIZE=ON
fi
