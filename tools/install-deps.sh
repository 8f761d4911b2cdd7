#!/usr/bin/env bash
# install-deps.sh: installs every Debian package godwit needs to build, test and boot guests.
# Idempotent and quiet when everything is present; needs root (or sudo) for apt-get.
set -euo pipefail

packages=(
  build-essential cmake pkg-config          # toolchain
  clang libclang-rt-14-dev                  # the fuzzers (tools/run-fuzz.sh): libFuzzer, ASan
  liburing-dev libcap-ng-dev libseccomp-dev # runtime libraries
  liblzma-dev zlib1g-dev                    # bzImage payloads decompressed on the host
  libcmocka-dev libjson-c-dev               # tests, JSON config
  qemu-system-x86                           # the test host and the benchmark peer
  busybox-static cpio xz-utils zstd kmod    # guest and test-host initramfs images
  iproute2 iputils-ping curl ca-certificates # test-host networking, API tests, snapshot clones
  python3 tmux                              # test-host monitor, the main job driven in a terminal
  systemd                                   # systemd-analyze: the unit is checked (tests/systemd)
  fio iperf3                                # bench/io.sh (host and bench guest)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: need root to install: ${missing[*]}" >&2; exit 1; }
  sudo=sudo
fi
echo "install-deps: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
