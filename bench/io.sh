#!/usr/bin/env bash
# io.sh: virtio block benchmark, godwit against QEMU on the same guest, disk image and fio
# jobs, with fio run directly on the image file as the ceiling. A measurement, not a test.
# Run it where /dev/kvm runs unmodified kernels, or through the test host:
#   bench/build-bench-guest.sh      # once, outside the test host (its / is read-only)
#   tools/testhost/testhost.sh --timeout 1500 -- bench/io.sh build [RUNS]
#
# One 1 GiB raw image, preallocated and written once (so reads hit real blocks), on an ext4
# loop mount in /tmp (tmpfs refuses O_DIRECT, and both VMMs are asked for cache=none).
# Each of RUNS rounds (default 3) runs, in this order:
#   ceiling  fio in this (test) host on the image file, direct=1
#   godwit   godwit run --disk path=IMG,cache=none, fio in the guest on the disk
#   qemu     qemu-system-x86_64 -accel kvm, virtio-blk-pci, cache=none, aio=io_uring
# and each of them the two fio jobs: 4 KiB random reads at iodepth 32 and 1 MiB sequential
# reads at iodepth 8, $BENCH_RUNTIME seconds each (default 10). Guests: the default guest's
# bzImage, the bench initrd (bench/build-bench-guest.sh), 1 vCPU, 512 MiB; the fio jobs reach
# the guest as a script disk (serial godwit-script). The table gives medians over RUNS.
#
# Environment: BENCH_RUNTIME (s per fio job), BENCH_ENGINE (fio ioengine, io_uring or
# libaio), BENCH_VM_TIMEOUT (s per guest, default 300).
set -uo pipefail

build=${1:?usage: bench/io.sh BUILD_DIR [RUNS]}
runs=${2:-3}
runtime=${BENCH_RUNTIME:-10}
engine=${BENCH_ENGINE:-io_uring}
vm_timeout=${BENCH_VM_TIMEOUT:-300}
root=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
godwit=$(readlink -f "$build/godwit")
[ -x "$godwit" ] || { echo "bench: no godwit in $build" >&2; exit 1; }
for c in fio qemu-system-x86_64 mke2fs losetup; do
  command -v $c >/dev/null || { echo "bench: $c not found (run tools/install-deps.sh)" >&2; exit 1; }
done
eval "$("$root/guests/build-guest.sh" --print)" || exit 1
bench_initrd=$("$root/bench/build-bench-guest.sh") ||
  { echo "bench: the bench guest is missing or stale: run bench/build-bench-guest.sh outside the test host" >&2; exit 1; }

work=$(mktemp -d /tmp/godwit-io.XXXXXX)
cleanup() {
  mountpoint -q "$work/mnt" 2>/dev/null && umount "$work/mnt"
  ip link del gwbench0 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

mem=512
cmdline="console=ttyS0 reboot=acpi panic=1 quiet"
fio_common=(--direct=1 --ioengine="$engine" --time_based --runtime="$runtime" --gtod_reduce=1
  --norandommap --randrepeat=0 --output-format=terse --terse-version=3)
job_rand=(--name=randread --rw=randread --bs=4k --iodepth=32)
job_seq=(--name=seqread --rw=read --bs=1M --iodepth=8)

# The image: ext4 on a loop device over a tmpfs file, the image file preallocated and
# written through once with O_DIRECT (no page cache left holding it).
echo "bench: preparing the 1 GiB image" >&2
truncate -s 1300M "$work/fs.img"
mke2fs -q -t ext4 -F -E lazy_itable_init=0,lazy_journal_init=0 "$work/fs.img" || exit 1
mkdir "$work/mnt"
mount -o loop "$work/fs.img" "$work/mnt" || { echo "bench: cannot loop-mount ext4 (not root?)" >&2; exit 1; }
img=$work/mnt/disk.img
fallocate -l 1G "$img" || exit 1
dd if=/dev/zero of="$img" bs=1M count=1024 oflag=direct conv=notrunc status=none || exit 1
sync

# The guest side: fio on the disk that is not the script disk (vda), one tagged line a job.
script=$work/script.img
{
  printf '%s\n' 'dev=/dev/vda'
  printf '%s\n' 'for s in /sys/block/vd*/serial; do'
  printf '%s\n' '  [ "$(cat "$s" 2>/dev/null)" = godwit-script ] && continue'
  printf '%s\n' '  d=${s%/serial}; dev=/dev/${d##*/}; break'
  printf '%s\n' 'done'
  printf '%s\n' 'echo "BENCH dev $dev $(cat /sys/block/${dev#/dev/}/size) sectors"'
  printf 'echo "BENCH randread $(fio --filename=$dev %s %s)"\n' "${job_rand[*]}" "${fio_common[*]}"
  printf 'echo "BENCH seqread $(fio --filename=$dev %s %s)"\n' "${job_seq[*]}" "${fio_common[*]}"
  # The network: TCP from the guest to the test host over the tap (the host's iperf3
  # server records the rate).
  printf '%s\n' 'ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0'
  printf 'iperf3 -c 10.0.2.1 -t %s >/dev/null 2>&1; echo "BENCH iperf done $?"\n' "$runtime"
} >"$script"
size=$(stat -c %s "$script")
head -c $(( (512 - size % 512) % 512 )) /dev/zero | tr '\0' '\n' >>"$script"

# The tap both VMMs attach to (no vhost for QEMU: both move packets in user space).
tap=gwbench0
ip tuntap add dev $tap mode tap && ip addr add 10.0.2.1/24 dev $tap && ip link set $tap up ||
  { echo "bench: cannot set up tap $tap (not root?)" >&2; exit 1; }

godwit_cmd=("$godwit" run --kernel "$kernel_bzimage" --initrd "$bench_initrd" --memory $mem --cpus 1
  --no-rng --cmdline "$cmdline"
  --disk "path=$img,cache=none" --disk "path=$script,readonly=on,serial=godwit-script"
  --net "tap=$tap")
qemu_cmd=(qemu-system-x86_64 -accel kvm -cpu host -M q35 -smp 1 -m $mem
  -nodefaults -no-user-config -display none -serial stdio -no-reboot
  -kernel "$kernel_bzimage" -initrd "$bench_initrd" -append "$cmdline"
  -drive "file=$img,if=none,id=d0,format=raw,cache=none,aio=io_uring"
  -device virtio-blk-pci,drive=d0
  -drive "file=$script,if=none,id=s0,format=raw,readonly=on"
  -device virtio-blk-pci,drive=s0,serial=godwit-script
  -netdev "tap,id=n0,ifname=$tap,script=no,downscript=no,vhost=off" -device virtio-net-pci,netdev=n0)

# terse v3: field 7 is the read bandwidth (KiB/s), field 8 the read IOPS.
record() { # LABEL RAND_TERSE SEQ_TERSE
  local iops kib
  iops=$(cut -d';' -f8 <<<"$2"); kib=$(cut -d';' -f7 <<<"$3")
  [[ $iops =~ ^[0-9]+$ && $kib =~ ^[0-9]+$ ]] || return 1
  echo "$iops" >>"$work/$1.iops"; echo "$kib" >>"$work/$1.kib"
  echo "bench: $1 run $i: $iops IOPS 4k random, $((kib / 1024)) MiB/s 1M sequential" >&2
}

run_ceiling() {
  local r s
  r=$(fio --filename="$img" "${job_rand[@]}" "${fio_common[@]}" 2>"$work/ceiling.err")
  s=$(fio --filename="$img" "${job_seq[@]}" "${fio_common[@]}" 2>>"$work/ceiling.err")
  record ceiling "$r" "$s" || { echo "bench: ceiling run $i failed:" >&2; tail -n 5 "$work/ceiling.err" >&2; }
}

# The iperf3 server's JSON report: the rate it received, in Mbit/s.
record_net() { # LABEL JSON
  python3 -c 'import json, sys; print(round(json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"] / 1e6, 1))' "$2" \
    >>"$work/$1.mbit" 2>/dev/null || echo "bench: $1 run $i: no iperf3 result" >&2
}

run_vm() { # LABEL CMD...
  local label=$1 log=$work/$1.log st; shift
  iperf3 -s -1 -B 10.0.2.1 -J >"$work/$label.iperf.json" 2>/dev/null &
  local server=$!
  timeout -k 5 "$vm_timeout" "$@" </dev/null >"$log" 2>&1
  st=$?
  kill $server 2>/dev/null; wait $server 2>/dev/null
  record_net "$label" "$work/$label.iperf.json"
  tr -d '\r' <"$log" >"$log.clean"
  if ! record "$label" "$(sed -n 's/^BENCH randread //p' "$log.clean" | tail -n 1)" \
      "$(sed -n 's/^BENCH seqread //p' "$log.clean" | tail -n 1)"; then
    echo "bench: $label run $i failed (exit status $st); its console:" >&2
    tail -n 25 "$log.clean" >&2
    return 1
  fi
  [ "$i" = 1 ] && grep -m1 '^BENCH dev' "$log.clean" | sed "s/^/bench: $label: /" >&2
  return 0
}

start=$SECONDS
for i in $(seq 1 "$runs"); do
  run_ceiling
  run_vm godwit "${godwit_cmd[@]}"
  run_vm qemu "${qemu_cmd[@]}"
done

median() { sort -n | awk '{a[NR]=$1} END{ if (!NR) print ""; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2 }'; }
med() { [ -s "$work/$1" ] && median <"$work/$1"; }

row() { # NAME DIVISOR ceiling godwit qemu
  awk -v n="$1" -v d="$2" -v c="$3" -v g="$4" -v q="$5" 'BEGIN{
    f = (d == 1) ? "%.0f" : "%.1f"
    cs = (c == "") ? "n/a" : sprintf(f, c / d); gs = (g == "") ? "n/a" : sprintf(f, g / d)
    qs = (q == "") ? "n/a" : sprintf(f, q / d)
    gq = (g == "" || q == "" || q == 0) ? "n/a" : sprintf("%.2f", g / q)
    gc = (g == "" || c == "" || c == 0) ? "n/a" : sprintf("%.2f", g / c)
    printf "| %s | %s | %s | %s | %s | %s |\n", n, cs, gs, qs, gq, gc }'
}

n() { [ -s "$work/$1.iops" ] && wc -l <"$work/$1.iops" || echo 0; }
echo
echo "command: bench/io.sh $*${GODWIT_IN_TESTHOST:+ (inside tools/testhost/testhost.sh)}; ${runtime} s a job, ioengine=$engine, $((SECONDS - start)) s in all"
echo "guest: $kernel_package bzImage, $(basename "$bench_initrd"), 1 vCPU, $mem MiB; $(qemu-system-x86_64 --version | head -n 1)"
echo "successful runs: ceiling $(n ceiling), godwit $(n godwit), QEMU $(n qemu) of $runs"
echo
echo "| metric (median of $runs) | ceiling | godwit | QEMU | godwit/QEMU | godwit/ceiling |"
echo "|---|---|---|---|---|---|"
row "4 KiB random read, iodepth 32 (IOPS)" 1 "$(med ceiling.iops)" "$(med godwit.iops)" "$(med qemu.iops)"
row "1 MiB sequential read, iodepth 8 (MiB/s)" 1024 "$(med ceiling.kib)" "$(med godwit.kib)" "$(med qemu.kib)"
row "TCP guest to host, iperf3 (Mbit/s)" 1 "" "$(med godwit.mbit)" "$(med qemu.mbit)"
echo
echo "godwit: $(printf '%q ' "${godwit_cmd[@]}")"
echo "qemu:   $(printf '%q ' "${qemu_cmd[@]}")"
echo "fio:    fio --filename=DEV|IMG {${job_rand[*]} | ${job_seq[*]}} ${fio_common[*]}"
[ "$(n godwit)" -gt 0 ] && [ "$(n qemu)" -gt 0 ] && [ "$(n ceiling)" -gt 0 ]
