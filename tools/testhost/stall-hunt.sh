#!/usr/bin/env bash
# stall-hunt.sh: boots the default guest N times, each running issue 13's disk script
# (256 MiB of 1 MiB direct reads, 256 MiB of 1 MiB direct writes, 10,240 4 KiB direct reads)
# on 2 vCPUs and 512 MiB with a disk and a tap, under godwit or, for comparison, QEMU; prints
# one line per boot and, for a godwit boot that stops making progress, what waited (counters,
# /vm/vcpus, the stall report and the VMM threads' kernel stacks). A measurement, not a test:
# it says how often a boot fails in this test host, and how.
# Usage (inside the test host, or where /dev/kvm runs Linux):
#   tools/testhost/testhost.sh --results DIR -- tools/testhost/stall-hunt.sh godwit|qemu BUILD N
# Each boot's console log is kept in $GODWIT_TESTHOST_RESULTS (or /tmp) as VMM.N.log.
set -uo pipefail

vmm=${1:?usage: stall-hunt.sh godwit|qemu BUILD N}
build=${2:?usage: stall-hunt.sh godwit|qemu BUILD N}
runs=${3:-10}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${GODWIT_TESTHOST_RESULTS:-/tmp}
godwit=$(readlink -f "$root/$build/godwit")
export GODWIT_STALL_S=${GODWIT_STALL_S:-30}
# shellcheck source=../../tests/e2e/lib.sh
. "$root/tests/e2e/lib.sh"
eval "$("$root/guests/build-guest.sh" --print)" || exit 2
work=$(mktemp -d /tmp/stall-hunt.XXXXXX)
trap 'rm -rf "$work"; ip link del sh-tap0 2>/dev/null' EXIT

cat >"$work/script" <<'EOF'
dd if=/dev/vda of=/dev/null bs=1M count=256 iflag=direct
dd if=/dev/zero of=/dev/vda bs=1M count=256 oflag=direct
dd if=/dev/vda of=/dev/null bs=4k count=10240 iflag=direct
echo stall-hunt: done
EOF
size=$(stat -c %s "$work/script")
head -c $(((512 - size % 512) % 512)) /dev/zero | tr '\0' '\n' >>"$work/script"
truncate -s 512M "$work/disk.img"
ip tuntap add dev sh-tap0 mode tap && ip addr add 192.168.77.1/24 dev sh-tap0 &&
  ip link set sh-tap0 up || exit 2
cmdline="console=ttyS0 reboot=acpi panic=1 quiet godwit.test=script"

boot_qemu() { # LOG
  timeout -k 5 300 qemu-system-x86_64 -accel kvm -cpu host -M q35 -smp 2 -m 512 \
    -nodefaults -no-user-config -display none -serial stdio -no-reboot \
    -kernel "$kernel_bzimage" -initrd "$initrd" -append "$cmdline" \
    -drive "file=$work/disk.img,if=none,id=d0,format=raw" -device virtio-blk-pci,drive=d0 \
    -drive "file=$work/script,if=none,id=s0,format=raw,readonly=on" \
    -device virtio-blk-pci,drive=s0,serial=godwit-script \
    -netdev "tap,id=n0,ifname=sh-tap0,script=no,downscript=no,vhost=off" \
    -device virtio-net-pci,netdev=n0 -device virtio-rng-pci </dev/null >"$1" 2>&1
}

# godwit under the device suites' progress watchdog (tests/e2e/lib.sh): no exit, kick,
# interrupt or output for $GODWIT_STALL_S seconds (30 here) is a stall, and what waited is
# appended to the log before the VMM is killed.
# The run happens in $work: its API socket must not be on the results share.
boot_godwit() { # LOG
  run_watched "$work/boot.log" 300 "$godwit" run --kernel "$kernel_bzimage" \
    --initrd "$initrd" --memory 512 --cpus 2 --cmdline "$cmdline" \
    --disk "path=$work/disk.img" --disk "path=$work/script,readonly=on,serial=godwit-script" \
    --net tap=sh-tap0
  cp "$work/boot.log" "$1"
  grep -A 40 '^watchdog:' "$1"
  return "$status"
}

failed=0
for i in $(seq 1 "$runs"); do
  log=$out/$vmm.$i.log start=$SECONDS
  "boot_$vmm" "$log"
  rc=$?
  if grep -q '^stall-hunt: done' "$log"; then
    echo "$vmm boot $i: finished in $((SECONDS - start))s"
  else
    failed=$((failed + 1))
    echo "$vmm boot $i: FAILED after $((SECONDS - start))s (status $rc); its last lines:"
    grep -v -e '^stall-hunt: done' -e '^watchdog:' -e '^stall:' "$log" | tail -n 8 | sed 's/^/    /'
  fi
done
echo "stall-hunt: $vmm: $failed of $runs boots failed"
