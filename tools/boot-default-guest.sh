#!/usr/bin/env bash
# boot-default-guest.sh: the main job. Sets up a fresh Debian machine, builds godwit and the
# default guest, and boots it with its shell on this terminal. Where this machine's /dev/kvm
# cannot run an unmodified kernel (no /dev/kvm, or a kvm_pvm backend), it boots the guest
# inside the test host instead, and says so.
# Extra arguments go to `godwit run` (e.g. --cpus 2 --memory 1024).
set -euo pipefail
cd "$(dirname "$0")/.."

export GODWIT_CACHE=${GODWIT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/godwit}
tools/install-deps.sh
tools/build.sh
eval "$(guests/build-guest.sh)"

run=(build/godwit run --kernel "$kernel_bzimage" --initrd "$initrd" --cpus 2 --memory 512
     --cmdline "console=ttyS0 reboot=acpi panic=1 quiet" "$@")
if tools/testhost/have-kvm.sh; then
  echo "godwit: booting the default guest on this machine's /dev/kvm (Ctrl-A x quits)"
  exec "${run[@]}"
fi
echo "godwit: this machine's /dev/kvm cannot run an unmodified Linux kernel;" \
     "booting the default guest inside the test host (QEMU TCG with nested AMD-V)"
exec tools/testhost/testhost.sh -- "${run[@]}"
