#!/usr/bin/env bash
# boot-default-guest.sh: the main job. Sets up a fresh Debian machine, builds godwit and the
# default guest, and boots it with its shell on this terminal, a scratch disk (vda) and, as
# root, a network interface on the tap godwit0 (host side 10.0.2.1/24). Where this machine's
# /dev/kvm cannot run an unmodified kernel (no /dev/kvm, or a kvm_pvm backend), it boots the
# guest inside the test host instead, and says so (the disk is then the test host's /tmp).
# Extra arguments go to `godwit run` (e.g. --cpus 2 --memory 1024).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "godwit: the default guest's shell comes up on this terminal; Ctrl-A x quits, exit powers it off"

export GODWIT_CACHE=${GODWIT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/godwit}
tools/install-deps.sh
tools/build.sh
eval "$(guests/build-guest.sh)"

# Runs godwit with the default guest's devices; the disk lives in $1.
# shellcheck disable=SC2016 # expanded by the inner shell
boot='dir=$1; shift
truncate -s 1G "$dir/default-disk.img"
devices=(--disk "path=$dir/default-disk.img")
if [ "$(id -u)" = 0 ] && command -v ip >/dev/null; then
  ip link show godwit0 >/dev/null 2>&1 || { ip tuntap add dev godwit0 mode tap &&
    ip addr add 10.0.2.1/24 dev godwit0; }
  ip link set godwit0 up && devices+=(--net tap=godwit0)
fi
echo "godwit: devices: ${devices[*]}"
exec "$@" "${devices[@]}"'

# The shell runs on the virtio console (hvc0), whose window follows this terminal's size; the
# serial port keeps the kernel's messages. The vsock device reaches the guest's agent
# (godwit exec, cp, kvp from another terminal).
run=(build/godwit run --kernel "$kernel_bzimage" --initrd "$initrd" --cpus 2 --memory 512
     --console virtio --vsock cid=3 --cmdline "console=ttyS0 reboot=acpi panic=1 quiet" "$@")
if tools/testhost/have-kvm.sh; then
  echo "godwit: booting the default guest on this machine's /dev/kvm"
  exec bash -c "$boot" boot "$GODWIT_CACHE" "${run[@]}"
fi
echo "godwit: booting the default guest inside the test host (this machine's /dev/kvm cannot" \
     "run an unmodified Linux kernel)"
host=(tools/testhost/testhost.sh)
# On a terminal the test host hands it to godwit inside: keys, raw mode, window size.
[ -t 0 ] && [ -t 1 ] && host+=(--interactive)
exec "${host[@]}" -- bash -c "$boot" boot /tmp "${run[@]}"
