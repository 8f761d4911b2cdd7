#!/usr/bin/env bash
# run-e2e.sh: boots the stock Debian kernel under godwit and checks what a user relies on.
# Needs a /dev/kvm that runs unmodified kernels (tools/run-tests.sh runs it in the test host).
# Usage: tests/e2e/run-e2e.sh BUILD_DIR [--jail]
#   --jail: every VM runs in `godwit run --jail` as the unprivileged user nobody (65534), its
#   own root holding only what it opens (docs/jail.md), with seccomp and no capabilities.
set -uo pipefail

build=${1:?usage: run-e2e.sh BUILD_DIR [--jail]}
godwit=$(readlink -f "$build/godwit")
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=$(mktemp -d /tmp/godwit-e2e.XXXXXX)
trap 'keep_logs; rm -rf "$work"' EXIT

eval "$("$root/guests/build-guest.sh" --print)" || { echo "e2e: default guest not built (guests/build-guest.sh)"; exit 2; }
[ -c /dev/kvm ] || { echo "e2e: /dev/kvm missing"; exit 2; }

. "$here/lib.sh"

jail=()
case ${2:-} in
  --jail) jail=(--jail "$work/jail" --uid 65534 --gid 65534); echo "e2e: every VM in a jail as 65534:65534" ;;
  "") ;;
  *) echo "usage: run-e2e.sh BUILD_DIR [--jail]" >&2; exit 2 ;;
esac

# Memory and CPUs of every case; the guest's own command line is added per case.
base_cmdline="console=ttyS0 reboot=acpi panic=1 quiet"
common=(--memory 256 --initrd "$initrd")

# Every VM runs under the progress watchdog (lib.sh), whose API socket a jailed VMM makes as
# its own user: in a directory anyone may write.
watch_socket_dir=$work/watched
mkdir -p "$watch_socket_dir" && chmod 1777 "$watch_socket_dir"

# boot NAME TIMEOUT [godwit run args...]: runs godwit with output in $work/NAME.log and leaves
# the exit status in $status.
boot() {
  local name=$1 secs=$2; shift 2
  run_watched "$name" "$secs" "$godwit" run "${jail[@]}" "$@"
}

# expect_jailed NAME: with --jail, the VM said where it was jailed (before it loaded anything).
expect_jailed() {
  [ ${#jail[@]} -eq 0 ] && return 0
  expect_line "$1" 'info: jailed in .* as 65534:65534'
}

# An interactive session: typed lines reach the guest's shell only once it runs, so
# feed them after the guest prints its init banner.
case_shell_smp_vmlinux() {
  local name=shell_smp_vmlinux fifo="$work/shell.in"
  mkfifo "$fifo"
  watch_input=$fifo start_watched $name 180 "$godwit" run "${jail[@]}" --kernel "$kernel_vmlinux" \
    --cpus 2 "${common[@]}" --cmdline "$base_cmdline"
  exec 7>"$fifo"
  wait_for_line "$work/$name.log" 'godwit-guest: init started' "$vm_pid" 170
  sleep 1
  printf 'echo "nproc=$(nproc) sum=$((40 + 2))"\n' >&7
  sleep 2
  printf 'poweroff -f\n' >&7
  finish_watched $name
  exec 7>&-
  expect_status $name 0 && expect_jailed $name && expect_line $name 'godwit-guest: init started' &&
    expect_line $name 'godwit-guest: cpus=2' && expect_line $name 'nproc=2 sum=42' &&
    expect_clean $name && pass $name
}

case_poweroff_bzimage() {
  boot poweroff_bzimage 180 --kernel "$kernel_bzimage" "${common[@]}" \
    --cmdline "$base_cmdline godwit.test=poweroff"
  # Decompressed on the host by default (the test host's cache is filled by testhost.sh).
  expect_status poweroff_bzimage 0 && expect_jailed poweroff_bzimage && expect_line poweroff_bzimage 'godwit-guest: init started' &&
    expect_line poweroff_bzimage "booting the bzImage's XZ payload as a vmlinux" &&
    expect_clean poweroff_bzimage && pass poweroff_bzimage
}

case_reboot_exits_with_no_reboot() {
  boot reboot_no_reboot 180 --kernel "$kernel_bzimage" "${common[@]}" --no-reboot \
    --cmdline "$base_cmdline godwit.test=reboot"
  expect_status reboot_no_reboot 3 && expect_jailed reboot_no_reboot && expect_line reboot_no_reboot 'godwit-guest: init started' &&
    expect_clean reboot_no_reboot && pass reboot_no_reboot
}

# Without --no-reboot a reboot restarts the guest; SIGINT then stops it with status 6.
case_reboot_restarts() {
  local name=reboot_restarts
  start_watched $name 300 "$godwit" run "${jail[@]}" --kernel "$kernel_vmlinux" "${common[@]}" \
    --cmdline "$base_cmdline godwit.test=reboot"
  for _ in $(seq 1 2800); do
    [ "$(grep -c 'godwit-guest: init started' "$work/$name.log")" -ge 2 ] && break
    kill -0 "$vm_pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -INT "$vm_pid" 2>/dev/null
  finish_watched $name
  local boots
  boots=$(grep -c 'godwit-guest: init started' "$work/$name.log")
  [ "$boots" -ge 2 ] || { fail $name "guest booted $boots times, expected a restart"; return; }
  expect_status $name 6 && expect_jailed $name && expect_clean $name && pass $name
}

case_panic_reported() {
  # The bzImage decompressed by the guest, as before godwit decompressed it.
  boot panic 180 --kernel "$kernel_bzimage" "${common[@]}" --kernel-decompress off \
    --cmdline "$base_cmdline godwit.test=panic"
  expect_status panic 5 && expect_jailed panic && expect_line panic 'Kernel panic' && expect_line panic 'panicked' &&
    expect_line panic 'booting the bzImage as is' && expect_clean panic && pass panic
}

case_corrupt_kernel_refused() {
  local name=corrupt_kernel
  head -c 600000 "$kernel_bzimage" >"$work/truncated"
  boot $name 30 --kernel "$work/truncated" "${common[@]}"
  expect_status $name 1 && expect_jailed $name && expect_line $name 'error: kernel' &&
    expect_clean $name && pass $name
}

# A payload with bytes overwritten in its middle: refused on the host, with one line.
case_corrupt_payload_refused() {
  local name=corrupt_payload size
  cp "$kernel_bzimage" "$work/corrupt"
  size=$(stat -c %s "$work/corrupt")
  printf '\377\377\377\377\0\0\0\0' | dd of="$work/corrupt" bs=1 seek=$((size / 2)) conv=notrunc 2>/dev/null
  boot $name 60 --kernel "$work/corrupt" "${common[@]}"
  expect_status $name 1 && expect_jailed $name && expect_line $name 'error: kernel: .*payload is corrupt' &&
    expect_clean $name && pass $name
}

# A disk read whole through the page cache, so that its I/O lands all over guest RAM: every
# byte arrives (checksum), and through guest RAM registered with io_uring as a whole. Jailed,
# the VM runs as a user without CAP_IPC_LOCK, whose RLIMIT_MEMLOCK the jail must raise: at the
# usual 8 MiB, four 2 MiB pieces register and the rest is refused (the log says so).
case_disk_read() {
  local name=disk_read src=$work/disk-read.img script=$work/disk-read.script want
  head -c $((48 * 1024 * 1024)) /dev/urandom >"$src"
  want=$(md5sum <"$src" | cut -d' ' -f1)
  printf 'echo "guest: md5 $(md5sum </dev/vdb)"\n' >"$script"
  truncate -s 4096 "$script"
  boot $name 180 --kernel "$kernel_vmlinux" "${common[@]}" --cmdline "$base_cmdline godwit.test=script" \
    --disk "path=$script,readonly=on,serial=godwit-script" --disk "path=$src,readonly=on"
  expect_status $name 0 && expect_jailed $name && expect_line $name "guest: md5 $want" &&
    expect_clean $name || return
  ! grep -q 'guest RAM not registered' "$work/$name.log" ||
    { fail $name "$(grep -m1 'guest RAM not registered' "$work/$name.log")"; return; }
  pass $name
}

cd "$work"
case_corrupt_kernel_refused
case_corrupt_payload_refused
case_shell_smp_vmlinux
case_poweroff_bzimage
case_reboot_exits_with_no_reboot
case_reboot_restarts
case_panic_reported
case_disk_read

echo "e2e: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
