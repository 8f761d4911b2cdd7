#!/usr/bin/env bash
# io.sh: virtio I/O benchmark, godwit against QEMU (Debian's) with the same backends, the
# same guest, disk image and jobs; the block jobs also run directly on the image file in
# this host as the ceiling. A measurement, not a test. Run it where /dev/kvm runs unmodified
# kernels, or through the test host (docs/benchmarks.md):
#   bench/build-bench-guest.sh      # once, outside the test host (its / is read-only)
#   tools/testhost/testhost.sh --timeout 1800 --results /work/bench-results -- \
#       env BENCH_RUNTIME=10 bench/io.sh build 3
#
# Usage: bench/io.sh BUILD_DIR [RUNS]      RUNS rounds (default $RUNS, else 3); medians
# Environment:
#   BENCH_ROWS      sections, comma separated: blk, net (default blk,net)
#   BENCH_RUNTIME   seconds per fio or iperf3 job and per latency run (default 10)
#   BENCH_ENGINE    fio ioengine, io_uring or libaio (default io_uring)
#   BENCH_VM_TIMEOUT  seconds per guest before it is killed (default 600)
#   BENCH_STALL_S   seconds of a silent console after which a guest is taken to have stopped:
#                   what it waited for is reported and it is killed (default 3 x BENCH_RUNTIME,
#                   at least 120)
#   BENCH_CACHE     the guests' cache (GODWIT_CACHE of build-guest.sh and build-bench-guest.sh)
#                   when it must differ from the test host's
#   BENCH_DEADLINE  a time (date -d) by which the script must end: a round that would not
#                   end by then (as long as the longest so far) is not started
#   BENCH_OUT       file the final table is also written to (default, under the test host's
#                   --results DIR: DIR/io-DATE.md)
#   BENCH_JOBS      only these jobs, comma separated (rr1 rr32 rw1 rw32 sr sw fsync tx rx rr;
#                   default all of the sections')
#   BENCH_DETAIL    1: after the table, where each VMM's CPU went during each job (ticks per
#                   thread name) and its VM's KVM exit counters (debugfs), medians of the rounds
#   BENCH_VMMS      which VMMs each round boots, comma separated: godwit, qemu (QEMU with
#                   vhost=off and, for net, vhost=on) (default godwit,qemu); an A/B of two
#                   godwit builds needs no QEMU rounds
#   BENCH_GODWIT_POLL  microseconds: each round also boots godwit with --io-poll US (the
#                   label godwit-poll), and the table gets its rows against QEMU's and its
#                   own CPU figures, beside godwit's without polling
#
# blk: one 1 GiB raw image, preallocated and written once (so reads hit real blocks), on an
# ext4 loop mount in /tmp (tmpfs refuses O_DIRECT; both VMMs get cache=none, QEMU
# aio=io_uring). Jobs, direct=1: 4 KiB random read and write at iodepth 1 and 32, 1 MiB
# sequential read and write at iodepth 8, 4 KiB random writes each followed by an fsync
# (iodepth 1: the database pattern, which reaches the VMM as a flush per write).
# net: a tap (gwbench0, 10.0.2.1 here, 10.0.2.15 in the guest), virtio-net-pci; QEMU with
# vhost=off, and a second QEMU guest with vhost=on when /dev/vhost-net exists or its modules
# load. iperf3 from the guest to this host's server and back (-R), then busybox ping -A
# (the next echo as soon as the reply is in: one request in flight) for the round trip.
# CPU time: the VMM process's utime+stime (all its threads: vCPUs, so the guest's own work
# too, io_uring workers; and QEMU's vhost-PID kernel threads) between a job's start and end
# lines on the console, divided by the bytes the job moved (fio's or iperf3's count).
#
# Each round runs: ceiling (blk), godwit, QEMU vhost=off, QEMU vhost=on (net); one boot per
# VMM and round. Guests: the default guest's bzImage, the bench initrd
# (bench/build-bench-guest.sh), 1 vCPU, 512 MiB; the jobs reach the guest as a script disk
# (serial godwit-script). The end is a Markdown table, its first line the command.
set -uo pipefail

usage="usage: bench/io.sh BUILD_DIR [RUNS] (environment: BENCH_ROWS, BENCH_RUNTIME, ...)"
build=${1:?$usage}
runs=${2:-${RUNS:-3}}
runtime=${BENCH_RUNTIME:-10}
rows=${BENCH_ROWS:-blk,net}
engine=${BENCH_ENGINE:-io_uring}
vm_timeout=${BENCH_VM_TIMEOUT:-600}
stall_s=${BENCH_STALL_S:-120}
die() { echo "bench: $*" >&2; exit 1; }
deadline=
if [ -n "${BENCH_DEADLINE:-}" ]; then
  deadline=$(date -d "$BENCH_DEADLINE" +%s) || die "BENCH_DEADLINE: not a time date(1) reads"
fi
[[ $runs =~ ^[1-9][0-9]*$ && $runtime =~ ^[1-9][0-9]*$ && $vm_timeout =~ ^[1-9][0-9]*$ &&
   $stall_s =~ ^[1-9][0-9]*$ ]] ||
  die "RUNS, BENCH_RUNTIME, BENCH_VM_TIMEOUT and BENCH_STALL_S take whole numbers above 0"
[ -z "${BENCH_STALL_S:-}" ] && (( 3 * runtime > stall_s )) && stall_s=$((3 * runtime))
[[ ,$rows, =~ ^(,(blk|net))+,$ ]] || die "BENCH_ROWS takes blk, net or blk,net, not '$rows'"
want() { [[ ,$rows, == *,$1,* ]]; }
in_rows() { if [[ $1 =~ ^(tx|rx|rr)$ ]]; then want net; else want blk; fi; } # JOB NAME
root=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
godwit=$(readlink -f "$build/godwit")
[ -x "$godwit" ] || die "no godwit in $build"
for c in fio iperf3 qemu-system-x86_64 mke2fs losetup ip pgrep; do
  command -v $c >/dev/null || die "$c not found (run tools/install-deps.sh)"
done
# BENCH_CACHE: a guest cache of the benchmark's own, for machines where checkouts with
# another build-guest.sh rebuild the shared one (testhost.sh keeps its own cache and lock).
[ -n "${BENCH_CACHE:-}" ] && export GODWIT_CACHE=$BENCH_CACHE
guest_env=$("$root/guests/build-guest.sh" --print) || die "the default guest is not built (guests/build-guest.sh, outside the test host)"
eval "$guest_env"
bench_initrd=$("$root/bench/build-bench-guest.sh") ||
  die "the bench guest is missing or stale: run bench/build-bench-guest.sh outside the test host"
hz=$(getconf CLK_TCK)

work=$(mktemp -d /tmp/godwit-io.XXXXXX)
tap=gwbench0
cleanup() {
  [ -n "${iperf_pid:-}" ] && kill "$iperf_pid" 2>/dev/null
  mountpoint -q "$work/mnt" 2>/dev/null && umount "$work/mnt"
  ip link del $tap 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
mkdir "$work/res"

mem=512
cmdline="console=ttyS0 reboot=acpi panic=1 quiet"
fio_common=(--direct=1 --ioengine="$engine" --time_based --runtime="$runtime" --gtod_reduce=1
  --norandommap --randrepeat=0 --output-format=terse --terse-version=3)
# NAME|fio job|unit|row title. The unit says which figure of fio's is the row's.
blk_jobs=(
  "rr1|--rw=randread --bs=4k --iodepth=1|IOPS|4 KiB random read, iodepth 1"
  "rr32|--rw=randread --bs=4k --iodepth=32|IOPS|4 KiB random read, iodepth 32"
  "rw1|--rw=randwrite --bs=4k --iodepth=1|IOPS|4 KiB random write, iodepth 1"
  "rw32|--rw=randwrite --bs=4k --iodepth=32|IOPS|4 KiB random write, iodepth 32"
  "sr|--rw=read --bs=1M --iodepth=8|MB/s|1 MiB sequential read, iodepth 8"
  "sw|--rw=write --bs=1M --iodepth=8|MB/s|1 MiB sequential write, iodepth 8"
  "fsync|--rw=randwrite --bs=4k --iodepth=1 --fsync=1|IOPS|4 KiB random write + fsync each, iodepth 1"
)
net_jobs=(
  "tx|iperf3 -c 10.0.2.1|Mbit/s|TCP guest to host, iperf3"
  "rx|iperf3 -c 10.0.2.1 -R|Mbit/s|TCP host to guest, iperf3"
  "rr|ping -A -q|us, lower is better|round trip, ping -A average"
)
field() { local n=$2 IFS='|'; set -- $1; shift "$n"; echo "$1"; } # field LINE N (0-based)
if [ -n "${BENCH_JOBS:-}" ]; then
  picked() { local j kept=() name; for j in "$@"; do name=$(field "$j" 0); [[ ,$BENCH_JOBS, == *,$name,* ]] && kept+=("$j"); done
    [ ${#kept[@]} -eq 0 ] || printf '%s\0' "${kept[@]}"; }
  for name in ${BENCH_JOBS//,/ }; do
    [[ $name =~ ^(rr1|rr32|rw1|rw32|sr|sw|fsync|tx|rx|rr)$ ]] || die "BENCH_JOBS: no job '$name'"
  done
  mapfile -d '' blk_jobs < <(picked "${blk_jobs[@]}")
  mapfile -d '' net_jobs < <(picked "${net_jobs[@]}")
  [ ${#blk_jobs[@]} -gt 0 ] || rows=${rows//blk/}
  [ ${#net_jobs[@]} -gt 0 ] || rows=${rows//net/}
  rows=$(tr -s , <<<"$rows"); rows=${rows#,}; rows=${rows%,}
  [ -n "$rows" ] || die "BENCH_JOBS: none of '$BENCH_JOBS' is in BENCH_ROWS"
fi
detail=${BENCH_DETAIL:-0}
vmms=${BENCH_VMMS:-godwit,qemu}
for name in ${vmms//,/ }; do
  [[ $name =~ ^(godwit|qemu)$ ]] || die "BENCH_VMMS: no VMM '$name' (godwit, qemu)"
done
vmm_wanted() { [[ ,$vmms, == *,$1,* ]]; }
poll_us=${BENCH_GODWIT_POLL:-}
[[ -z $poll_us || $poll_us =~ ^[0-9]+$ ]] || die "BENCH_GODWIT_POLL takes microseconds (a whole number)"
if [ "$detail" = 1 ] && [ ! -d /sys/kernel/debug/kvm ]; then
  mount -t debugfs none /sys/kernel/debug 2>/dev/null ||
    echo "bench: BENCH_DETAIL: no debugfs, so no KVM counters (threads' ticks only)" >&2
fi

# The image: ext4 on a loop device over a tmpfs file, the image file preallocated and
# written through once with O_DIRECT (no page cache left holding it).
if want blk; then
  echo "bench: preparing the 1 GiB image" >&2
  truncate -s 1300M "$work/fs.img"
  mke2fs -q -t ext4 -F -E lazy_itable_init=0,lazy_journal_init=0 "$work/fs.img" || exit 1
  mkdir "$work/mnt"
  mount -o loop "$work/fs.img" "$work/mnt" || die "cannot loop-mount ext4 (not root?)"
  img=$work/mnt/disk.img
  fallocate -l 1G "$img" || exit 1
  dd if=/dev/zero of="$img" bs=1M count=1024 oflag=direct conv=notrunc status=none || exit 1
  sync
fi

# vhost-net for QEMU's second row: the module may be there but not loaded (the test host
# loads only what its own init needs; its kernel's modules are the default guest's).
vhost_why=
if want net && [ ! -c /dev/vhost-net ]; then
  modprobe vhost_net 2>/dev/null
  if [ ! -c /dev/vhost-net ] && [ "$(uname -r)" = "$kernel_version" ]; then
    for m in drivers/vhost/vhost_iotlb drivers/vhost/vhost drivers/net/tap drivers/vhost/vhost_net; do
      grep -q "^${m##*/} " /proc/modules || insmod "$modules_dir/kernel/$m.ko" 2>>"$work/vhost.err"
    done
  fi
  [ -c /dev/vhost-net ] ||
    vhost_why="no /dev/vhost-net: vhost_net does not load here ($(tail -n 1 "$work/vhost.err" 2>/dev/null))"
fi

# The guest's script for one VM: tagged begin and end lines around each job (the host reads
# the VMM's CPU time when it sees them), the job's own output on the end line.
make_script() { # OUT SECTIONS
  local j name args
  {
    # BENCH_DETAIL: the guest's own interrupt counts, per line, before and after its jobs.
    [ "$detail" = 1 ] && echo 'echo "BENCH interrupts before"; cat /proc/interrupts'
    if [[ $2 == *blk* ]]; then
      printf '%s\n' 'dev=' 'for s in /sys/block/vd*/serial; do' \
        '  [ "$(cat "$s" 2>/dev/null)" = godwit-script ] && continue' \
        '  d=${s%/serial}; dev=/dev/${d##*/}; break' 'done' \
        'echo "BENCH dev $dev $(cat /sys/block/${dev#/dev/}/size) sectors"'
      for j in "${blk_jobs[@]}"; do
        name=$(field "$j" 0); args=$(field "$j" 1)
        printf 'echo "BENCH begin %s"; r=$(fio --filename=$dev --name=%s %s %s); echo "BENCH end %s $r"\n' \
          "$name" "$name" "$args" "${fio_common[*]}" "$name"
      done
    fi
    if [[ $2 == *net* ]]; then
      printf '%s\n' 'ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0'
      # The first frames after link-up may be lost while the tap comes up on the host side.
      printf '%s\n' 'ping -c 1 -W 5 10.0.2.1 >/dev/null; sleep 1'
      for j in "${net_jobs[@]}"; do
        name=$(field "$j" 0); args=$(field "$j" 1)
        case $name in
          rr) printf 'echo "BENCH begin rr"; r=$(%s -c 10000000 -w %s 10.0.2.1 | grep round-trip); echo "BENCH end rr $r"\n' "$args" "$runtime" ;;
          *) printf 'echo "BENCH begin %s"; r=$(%s -t %s -f m 2>&1 | grep receiver); echo "BENCH end %s $r"\n' "$name" "$args" "$runtime" "$name" ;;
        esac
      done
    fi
    # The host samples the VMM's CPU time at each end line: after the last, the VM must still
    # run for a moment (with the guest powered off at once, QEMU was gone before its sample
    # and that job had no CPU per GB). BENCH_DETAIL samples more, and longer.
    if [ "$detail" = 1 ]; then
      printf '%s\n' 'echo "BENCH interrupts after"; cat /proc/interrupts' 'sleep 3'
    else
      echo 'sleep 1'
    fi
  } >"$1"
  local size; size=$(stat -c %s "$1")
  head -c $(( (512 - size % 512) % 512 )) /dev/zero | tr '\0' '\n' >>"$1"
}

if want net; then
  ip tuntap add dev $tap mode tap && ip addr add 10.0.2.1/24 dev $tap && ip link set $tap up ||
    die "cannot set up tap $tap (not root?)"
fi

godwit_cmd() { # SCRIPT [EXTRA ARGS...]
  local a=("$godwit" run --kernel "$kernel_bzimage" --initrd "$bench_initrd" --memory $mem --cpus 1
    --no-rng --cmdline "$cmdline" "${@:2}")
  want blk && a+=(--disk "path=$img,cache=none")
  a+=(--disk "path=$1,readonly=on,serial=godwit-script")
  want net && a+=(--net "tap=$tap")
  a+=(--api-socket "$work/api.sock") # for stall_watch, and BENCH_DETAIL's disk account
  printf '%s\0' "${a[@]}"
}
qemu_cmd() { # SCRIPT VHOST(on|off)
  local a=(qemu-system-x86_64 -accel kvm -cpu host -M q35 -smp 1 -m $mem
    -nodefaults -no-user-config -display none -serial stdio -no-reboot
    -kernel "$kernel_bzimage" -initrd "$bench_initrd" -append "$cmdline")
  [ "$2" = off ] && want blk && a+=(-drive "file=$img,if=none,id=d0,format=raw,cache=none,aio=io_uring"
    -device virtio-blk-pci,drive=d0)
  a+=(-drive "file=$1,if=none,id=s0,format=raw,readonly=on" -device virtio-blk-pci,drive=s0,serial=godwit-script)
  want net && a+=(-netdev "tap,id=n0,ifname=$tap,script=no,downscript=no,vhost=$2"
    -device virtio-net-pci,netdev=n0)
  printf '%s\0' "${a[@]}"
}

# CPU ticks of a VMM: its whole thread group (threads that ended included), then each of
# vhost's kernel threads working for it as PID:TICKS (kthreads of their own on kernels
# before 6.4, named vhost-PID; QEMU may end one and start another mid-job).
cpu_ticks() { # PID
  local p s out=
  for p in "$1" $(pgrep -x "vhost-$1"); do
    s=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null) || continue
    # shellcheck disable=SC2086 # fields split on purpose: utime and stime are 12 and 13
    set -- $s
    out="$out ${p}:$((${12} + ${13}))"
  done
  echo "${out# }"
}

# BENCH_DETAIL: each thread's ticks as NAME:TICKS (the name's digits and spaces folded, so
# that io_uring's short-lived workers add up under one name), then the VM's KVM counters as
# kvm.COUNTER:VALUE from debugfs (the vCPU counters there are summed over the VM's vCPUs).
thread_ticks() { # PID
  local t s
  for t in /proc/"$1"/task/*; do
    s=$(cat "$t/stat" 2>/dev/null) || continue
    local comm=${s#*(}; comm=${comm%%)*}; comm=${comm//[0-9 \/]/}
    # shellcheck disable=SC2086 # split on purpose: utime and stime are fields 12 and 13
    set -- ${s##*) }
    echo "${t##*/}.${comm:-x}:$((${12} + ${13}))"
  done | tr '\n' ' '
  # godwit's own account of its disk (vda): requests answered and their time from pop to
  # answer, so that a job's time splits into godwit's part and the rest.
  if [ -S "$work/api.sock" ] && command -v jq >/dev/null && [ "$(cat /proc/"$1"/comm)" = godwit ]; then
    "$godwit" counters "$work/api.sock" 2>/dev/null |
      jq -r '.devices.vda | "0.vda.answered:\(.answered) 0.vda.answer_us:\(.answer_us_total) 0.vda.kicks:\(.kicks) 0.vda.polled:\(.polled // 0) 0.vda.interrupts:\(.interrupts) "' 2>/dev/null | tr -d '\n'
  fi
  # The directory is named after the thread that created the VM, any of the process's.
  local d f
  for d in $(ls /proc/"$1"/task | sed 's|^|/sys/kernel/debug/kvm/|; s|$|-*|'); do
    [ -d "$d" ] || continue
    for f in exits io_exits mmio_exits halt_exits halt_wakeup irq_exits irq_window_exits irq_injections nmi_injections signal_exits request_irq_exits insn_emulation; do
      [ -r "$d/$f" ] && printf 'kvm.%s:%s ' "$f" "$(cat "$d/$f")"
    done
  done
}

# BENCH_DETAIL with tracefs: KVM's exits during each job by reason, port, MMIO address and
# MSR, from its tracepoints, each job into a trace instance of its own (switched at its begin
# and end lines, read once the VM ended: reading it while the guest runs would delay the
# next samples), added to the detail file as an end line of counts.
tracefs=
if [ "$detail" = 1 ]; then
  for t in /sys/kernel/tracing /sys/kernel/debug/tracing; do
    [ -d "$t/instances" ] && [ -e "$t/events/kvm/kvm_exit" ] && { tracefs=$t; break; }
  done
fi
trace_job() { # begin|end NAME
  local d=$tracefs/instances/godwit-bench-$2 e
  if [ "$1" = begin ]; then
    rmdir "$d" 2>/dev/null; mkdir "$d" || return
    echo 8192 >"$d/buffer_size_kb"
    for e in kvm_exit kvm_pio kvm_mmio kvm_msr kvm_page_fault; do echo 1 >"$d/events/kvm/$e/enable"; done
  else
    echo 0 >"$d/tracing_on" 2>/dev/null
  fi
}
trace_collect() { # DETAIL_FILE: every job's instance, counted, then removed
  local d n
  for d in "$tracefs"/instances/godwit-bench-*; do
    [ -d "$d" ] || continue
    n=${d##*/godwit-bench-}
    awk -v n="$n" '
    /kvm_exit:/ { if (match($0, /reason [A-Za-z_0-9]+/)) c["exit." substr($0, RSTART + 7, RLENGTH - 7)]++ }
    /kvm_pio:/ { if (match($0, /at 0x[0-9a-f]+/)) c["pio." substr($0, RSTART + 3, RLENGTH - 3)]++ }
    /kvm_mmio:/ { if (match($0, /gpa 0x[0-9a-f]+/)) c["mmio." substr($0, RSTART + 4, RLENGTH - 4)]++ }
    /kvm_msr:/ { if (match($0, /msr_(read|write) [0-9a-f]+/)) { m = substr($0, RSTART, RLENGTH); sub(/ /, ".", m); c[m]++ } }
    /kvm_page_fault:/ { if (match($0, /address (0x)?[0-9a-f]+/)) { a = substr($0, RSTART + 8, RLENGTH - 8)
        sub(/^0x/, "", a); sub(/^0+/, "", a)   # MMIO (the 32-bit hole) by page, RAM as one
        c[length(a) == 8 && a ~ /^[c-f]/ ? "npf.0x" substr(a, 1, 5) "000" : "npf.ram"]++ } }
    END { printf "%s end", n; for (k in c) if (c[k] >= 10) printf " 0.%s:%d", k, c[k]; print "" }' "$d/trace" >>"$1"
    rmdir "$d"
  done
}

# Copies the console to LOG and, at each tagged begin or end line, writes the VMM's CPU
# ticks to CPU. The VMM is the child of `timeout` (TPID).
watch_console() { # TPID LOG CPU
  local line pid=
  while IFS= read -r line; do
    line=${line%$'\r'}
    printf '%s\n' "$line" >>"$2"
    if [[ $line =~ ^BENCH\ (begin|end)\ ([a-z0-9]+) ]]; then
      [ -n "$pid" ] || read -r pid _ <"/proc/$1/task/$1/children"
      echo "${BASH_REMATCH[2]} ${BASH_REMATCH[1]} $(cpu_ticks "$pid")" >>"$3"
      if [ "$detail" = 1 ]; then
        echo "${BASH_REMATCH[2]} ${BASH_REMATCH[1]} $(thread_ticks "$pid")" >>"$3.detail"
        [ -n "$tracefs" ] && trace_job "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"
      fi
    fi
  done
}

add() { echo "$3" >>"$work/res/$1.$2"; } # LABEL METRIC VALUE

# The figure and the bytes moved of one job's output line.
parse() { # NAME OUTPUT -> "VALUE BYTES"
  local f
  case $1 in
    # iperf3 counts bytes in binary units and switches to GBytes past 1 GiB (a fast 10 s job).
    tx | rx) awk '{for (i = 2; i <= NF; i++) { if ($i == "KBytes") b = $(i-1) * 1024
             if ($i == "MBytes") b = $(i-1) * 1048576; if ($i == "GBytes") b = $(i-1) * 1073741824
             if ($i == "Mbits/sec") r = $(i-1) } } END { if (r != "") printf "%s %.0f\n", r, b }' <<<"$2" ;;
    rr) sed -n 's|.*min/avg/max = [0-9.]*/\([0-9.]*\)/.*|\1|p' <<<"$2" | awk '{print $1 * 1000, 0}' ;;
    *) IFS=';' read -ra f <<<"$2"
       [[ ${f[7]:-} =~ ^[0-9]+$ && ${f[48]:-} =~ ^[0-9]+$ ]] || return 0
       # terse v3: 6-8 read KiB, KiB/s, IOPS; 47-49 the same for writes (1-based).
       local unit; unit=$(for j in "${blk_jobs[@]}"; do [ "$(field "$j" 0)" = "$1" ] && field "$j" 2; done)
       if [ "$unit" = IOPS ]; then echo "$((f[7] + f[48])) $(((f[5] + f[46]) * 1024))"
       else awk -v k=$((f[6] + f[47])) -v b=$(((f[5] + f[46]) * 1024)) 'BEGIN{printf "%.1f %d\n", k * 1024 / 1e6, b}'; fi ;;
  esac
}

# Records one job of one VM: its figure and CPU seconds per GB moved.
record() { # LABEL NAME OUTPUT
  local v b d
  read -r v b < <(parse "$2" "$3")
  if [ -z "${v:-}" ]; then echo "bench: $1 run $i: no result for $2 (${3:0:120})" >&2; return 1; fi
  add "$1" "$2" "$v"
  # The ticks between the job's begin and end lines: the VMM's (the first pair) and each
  # vhost thread's at the end less its own at the beginning (0 when it was not there yet).
  d=$(awk -v n="$2" '$1 == n && $2 == "begin" { for (i = 3; i <= NF; i++) { split($i, a, ":"); t0[a[1]] = a[2] }; if (NF >= 3) seen = 1 }
    $1 == n && $2 == "end" && seen { split($3, a, ":"); if (!(a[1] in t0)) exit
      for (i = 3; i <= NF; i++) { split($i, a, ":"); d += a[2] - t0[a[1]] }; print d }' "$work/$1.cpu" 2>/dev/null)
  if [[ $d =~ ^[0-9]+$ && ${b:-0} -gt 0 ]]; then
    add "$1" "$2.cpu" "$(awk -v d="$d" -v hz="$hz" -v b="$b" 'BEGIN{printf "%.2f", d / hz / (b / 1e9)}')"
  fi
  echo "bench: $1 run $i: $2 $v" >&2
  [ "$detail" = 1 ] && record_detail "$1" "$2"
  return 0
}

# BENCH_DETAIL: the job's growth of each thread name's ticks (threads that ended before the
# end line are lost: io_uring's workers come and go) and of each KVM counter.
record_detail() { # LABEL NAME
  awk -v n="$2" '$1 == n && ($2 == "begin" || $2 == "end") {
      for (i = 3; i <= NF; i++) { k = $i; sub(/:[0-9]+$/, "", k); v = substr($i, length(k) + 2)
        if ($2 == "begin") t0[k] = v; else t1[k] = v } }
    END { for (k in t1) { name = k; sub(/^[0-9]+\./, "", name); d[name] += t1[k] - t0[k] }
      for (name in d) print name, d[name] }' "$work/$1.cpu.detail" 2>/dev/null |
    while read -r k v; do add "$1" "$2.detail.$k" "$v"; done
}

run_ceiling() {
  local j name args out
  for j in "${blk_jobs[@]}"; do
    name=$(field "$j" 0); args=$(field "$j" 1)
    # shellcheck disable=SC2086 # the job's options, split on purpose
    out=$(fio --filename="$img" --name="$name" $args "${fio_common[@]}" 2>>"$work/ceiling.err")
    record ceiling "$name" "$out" || tail -n 3 "$work/ceiling.err" >&2
  done
}

# A VM whose console stays silent for $stall_s seconds (longer than a job or a boot takes)
# has stopped: what it was waiting for goes to $work/LABEL.stall (for godwit its queues and
# vCPUs through the API, read by tests/e2e/stall-report.py; for either VMM its threads' kernel
# stacks and the tap's counters) and the VM is stopped, rather than waiting for
# BENCH_VM_TIMEOUT to say only that a job gave no result.
stall_watch() { # LABEL TPID LOG
  local label=$1 tpid=$2 log=$3 size=-1 quiet=0 now vmm
  while kill -0 "$tpid" 2>/dev/null; do
    sleep 5
    now=$(stat -c %s "$log" 2>/dev/null || echo 0)
    if [ "$now" != "$size" ]; then size=$now; quiet=0; continue; fi
    quiet=$((quiet + 5))
    [ "$quiet" -ge "$stall_s" ] || continue
    read -r vmm _ <"/proc/$tpid/task/$tpid/children"
    {
      echo "bench: $label run $i: no console output for ${quiet}s, the last line: $(tail -n 1 "$log")"
      if [[ $label == godwit* ]] && [ -S "$work/api.sock" ]; then
        curl -s -m 10 --unix-socket "$work/api.sock" http://localhost/vm/counters >"$work/$label.counters.json"
        curl -s -m 30 --unix-socket "$work/api.sock" http://localhost/vm/vcpus >"$work/$label.vcpus.json"
        python3 "$root/tests/e2e/stall-report.py" "$work/$label.counters.json" "$work/$label.vcpus.json"
      fi
      vmm_threads "$vmm"
      want net && ip -s link show "$tap"
    } >"$work/$label.stall" 2>&1
    cat "$work/$label.stall" >&2 # now: should the VMM not end, the console is never closed
    kill "$tpid"
    # A VMM that outlives its kill (timeout sends SIGKILL 5 s after the TERM) is stuck in the
    # kernel, on its way out or not: where each of its threads is, since the bench waits.
    sleep 30
    if kill -0 "$vmm" 2>/dev/null; then
      echo "bench: $label run $i: the VMM (pid $vmm) has not ended 30 s after it was stopped:" >&2
      vmm_threads "$vmm" >&2
    fi
    return
  done
}

vmm_threads() { # PID: each thread's name, state and kernel stack
  local t
  for t in /proc/"$1"/task/*; do
    echo "bench: thread $(cat "$t/comm" 2>/dev/null) ($(awk '{print $3}' "$t/stat" 2>/dev/null)):" \
      "$(tr '\n' ' ' <"$t/stack" 2>/dev/null | cut -c1-300)"
  done
}

run_vm() { # LABEL SECTIONS CMD...
  local label=$1 sections=$2 log=$work/$1.log st name j tpid; shift 2
  : >"$log"; : >"$work/$label.cpu"; : >"$work/$label.cpu.detail"
  if [[ $sections == *net* ]]; then
    iperf3 -s -B 10.0.2.1 >/dev/null 2>&1 &
    iperf_pid=$!
  fi
  rm -f "$work/con"; mkfifo "$work/con"
  timeout -k 5 "$vm_timeout" "$@" </dev/null >"$work/con" 2>&1 &
  tpid=$!
  rm -f "$work/$label.stall"
  stall_watch "$label" "$tpid" "$log" &
  local spid=$!
  watch_console "$tpid" "$log" "$work/$label.cpu" <"$work/con"
  wait "$tpid"; st=$?
  kill "$spid" 2>/dev/null; wait "$spid" 2>/dev/null
  # Printed by stall_watch when it fired; kept with the round's consoles too.
  [ -s "$work/$label.stall" ] && cat "$work/$label.stall" >>"$log"
  [ -n "$tracefs" ] && trace_collect "$work/$label.cpu.detail"
  if [ -n "${iperf_pid:-}" ]; then kill "$iperf_pid" 2>/dev/null; wait "$iperf_pid" 2>/dev/null; iperf_pid=; fi
  local jobs=()
  [[ $sections == *blk* ]] && jobs+=("${blk_jobs[@]}")
  [[ $sections == *net* ]] && jobs+=("${net_jobs[@]}")
  local missing=0
  for j in "${jobs[@]}"; do
    name=$(field "$j" 0)
    record "$label" "$name" "$(sed -n "s/^BENCH end $name //p" "$log" | tail -n 1)" ||
      missing=$((missing + 1))
  done
  # A guest that stopped part of the way: how it ended, and its whole console kept apart
  # (the round's consoles are overwritten by the next round's).
  if [ $missing != 0 ]; then
    echo "bench: $label run $i: $missing of ${#jobs[@]} jobs gave no result (exit status $st," \
      "console kept as $label.run$i.log); its console ends:" >&2
    tail -n 25 "$log" >&2
    cp "$log" "$work/$label.run$i.log"
  fi
  [ $missing = ${#jobs[@]} ] && return 1
  [ "$i" = 1 ] && grep -m1 '^BENCH dev' "$log" | sed "s/^/bench: $label: /" >&2
  return 0
}

# The VMs of a round: label, sections, command (one boot each).
vm_sections=$rows
start=$SECONDS
longest=0 done_runs=0
for i in $(seq 1 "$runs"); do
  if [ -n "$deadline" ] && (( $(date +%s) + longest > deadline )); then
    echo "bench: rounds $i to $runs not run: they would end after BENCH_DEADLINE ($BENCH_DEADLINE)" >&2
    break
  fi
  round_start=$SECONDS
  want blk && run_ceiling
  make_script "$work/script.img" "$vm_sections"
  if vmm_wanted godwit; then
    mapfile -d '' cmd < <(godwit_cmd "$work/script.img"); run_vm godwit "$vm_sections" "${cmd[@]}"
  fi
  if vmm_wanted godwit && [ -n "$poll_us" ]; then
    mapfile -d '' cmd < <(godwit_cmd "$work/script.img" --io-poll "$poll_us")
    run_vm godwit-poll "$vm_sections" "${cmd[@]}"
  fi
  if vmm_wanted qemu; then
    mapfile -d '' cmd < <(qemu_cmd "$work/script.img" off); run_vm qemu "$vm_sections" "${cmd[@]}"
  fi
  if vmm_wanted qemu && want net && [ -z "$vhost_why" ]; then
    make_script "$work/script-net.img" net
    mapfile -d '' cmd < <(qemu_cmd "$work/script-net.img" on); run_vm qemu-vhost net "${cmd[@]}"
  fi
  (( SECONDS - round_start > longest )) && longest=$((SECONDS - round_start))
  done_runs=$i
done
elapsed=$((SECONDS - start))

median() { sort -n | awk '{a[NR]=$1} END{ if (!NR) print ""; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2 }'; }
med() { [ -s "$work/res/$1" ] && median <"$work/res/$1"; }
count() { [ -s "$work/res/$1" ] && wc -l <"$work/res/$1" || echo 0; }

row() { # TITLE ceiling godwit qemu [NOTE]
  awk -v n="$1" -v c="$2" -v g="$3" -v q="$4" -v note="${5:-}" 'BEGIN{
    cs = (c == "") ? "n/a" : c; gs = (g == "") ? "n/a" : g
    qs = (q == "") ? (note == "" ? "n/a" : note) : q
    gq = (g == "" || q == "" || q == 0) ? "n/a" : sprintf("%.2f", g / q)
    gc = (g == "" || c == "" || c == 0) ? "n/a" : sprintf("%.2f", g / c)
    printf "| %s | %s | %s | %s | %s | %s |\n", n, cs, gs, qs, gq, gc }'
}

table() {
  local j name unit title runs_note
  echo "command: $(printf '%q ' env BENCH_ROWS="$rows" BENCH_RUNTIME="$runtime" BENCH_ENGINE="$engine" \
    ${BENCH_DEADLINE:+BENCH_DEADLINE="$BENCH_DEADLINE"} ${BENCH_VMMS:+BENCH_VMMS="$vmms"} bench/io.sh "$build" "$runs")${GODWIT_IN_TESTHOST:+(inside tools/testhost/testhost.sh)}"
  echo
  echo "godwit $(git -C "$root" describe --always --dirty 2>/dev/null) against $(qemu-system-x86_64 --version | head -n 1);" \
    "$runtime s a job, fio ioengine=$engine, $elapsed s in all"
  echo "guest: $kernel_package bzImage, $(basename "$bench_initrd"), 1 vCPU, $mem MiB; host: $(uname -r), $(nproc) CPUs"
  runs_note="successful rounds (fewest jobs):"
  local labels=()
  vmm_wanted godwit && labels+=(godwit)
  vmm_wanted qemu && labels+=(qemu)
  vmm_wanted godwit && [ -n "$poll_us" ] && labels+=(godwit-poll)
  want blk && labels=(ceiling "${labels[@]}")
  vmm_wanted qemu && want net && [ -z "$vhost_why" ] && labels+=(qemu-vhost)
  for l in "${labels[@]}"; do
    local n=$runs
    for j in "${blk_jobs[@]}" "${net_jobs[@]}"; do
      name=$(field "$j" 0)
      [[ $l == ceiling && $name =~ ^(tx|rx|rr)$ ]] && continue
      [[ $l == qemu-vhost && ! $name =~ ^(tx|rx|rr)$ ]] && continue
      in_rows "$name" || continue
      [ "$(count "$l.$name")" -lt "$n" ] && n=$(count "$l.$name")
    done
    runs_note="$runs_note $l $n"
  done
  echo "$runs_note of $runs${deadline:+ (BENCH_DEADLINE $BENCH_DEADLINE: $done_runs run)}"
  echo
  echo "| metric (median of $done_runs rounds) | ceiling (host) | godwit | QEMU | godwit/QEMU | godwit/ceiling |"
  echo "|---|---|---|---|---|---|"
  if want blk; then
    for j in "${blk_jobs[@]}"; do
      name=$(field "$j" 0); unit=$(field "$j" 2); title=$(field "$j" 3)
      row "$title ($unit)" "$(med ceiling.$name)" "$(med godwit.$name)" "$(med qemu.$name)"
    done
  fi
  if want net; then
    for j in "${net_jobs[@]}"; do
      name=$(field "$j" 0); unit=$(field "$j" 2); title=$(field "$j" 3)
      row "$title ($unit)" "" "$(med godwit.$name)" "$(med qemu.$name)"
    done
    for j in "${net_jobs[@]}"; do
      vmm_wanted qemu || break
      name=$(field "$j" 0); unit=$(field "$j" 2); title=$(field "$j" 3)
      row "$title, QEMU vhost=on ($unit)" "" "$(med godwit.$name)" "$(med qemu-vhost.$name)" "${vhost_why:+not run: $vhost_why}"
    done
  fi
  # The same jobs with godwit polling (BENCH_GODWIT_POLL), in the godwit column.
  if [ -n "$poll_us" ]; then
    for j in "${blk_jobs[@]}" "${net_jobs[@]}"; do
      name=$(field "$j" 0); unit=$(field "$j" 2); title=$(field "$j" 3)
      in_rows "$name" || continue
      row "$title, godwit --io-poll $poll_us ($unit)" "$(med ceiling.$name)" "$(med godwit-poll.$name)" "$(med qemu.$name)"
    done
  fi
  # CPU: each job that moves data, VMM CPU seconds per GB (lower is better).
  local cpu=()
  want blk && cpu+=("${blk_jobs[@]}")
  if want net; then
    for j in "${net_jobs[@]}"; do [ "$(field "$j" 0)" = rr ] || cpu+=("$j"); done
  fi
  for j in "${cpu[@]}"; do
    name=$(field "$j" 0); title="VMM CPU s per GB, lower is better: $(field "$j" 3)"
    row "$title" "" "$(med godwit.$name.cpu)" "$(med qemu.$name.cpu)"
    [ -n "$poll_us" ] && row "$title, godwit --io-poll $poll_us" "" "$(med godwit-poll.$name.cpu)" "$(med qemu.$name.cpu)"
    [[ $name == tx || $name == rx ]] && vmm_wanted qemu &&
      row "$title, QEMU vhost=on" "" "$(med godwit.$name.cpu)" "$(med qemu-vhost.$name.cpu)" "${vhost_why:+not run}"
  done
  echo
  echo "godwit: $(mapfile -d '' c < <(godwit_cmd SCRIPT); printf '%q ' "${c[@]}")"
  if vmm_wanted qemu; then
    echo "qemu:   $(mapfile -d '' c < <(qemu_cmd SCRIPT off); printf '%q ' "${c[@]}")"
    want net && echo "qemu vhost=on: the same with vhost=on and no bench disk"
  fi
  want blk && echo "fio:    fio --filename=DEV|IMG --name=JOB {$(for j in "${blk_jobs[@]}"; do printf ' %s |' "$(field "$j" 1)"; done)} ${fio_common[*]}"
  [ "$detail" = 1 ] && detail_table
  want net && echo "net:    iperf3 -c 10.0.2.1 [-R] -t $runtime -f m (server: iperf3 -s -B 10.0.2.1 here); ping -A -q -c 10000000 -w $runtime 10.0.2.1 (busybox, in the guest)"
}

# BENCH_DETAIL's lines: per job and VMM, each thread name's CPU ticks (1/$hz s) during the
# job and each KVM counter's growth, medians over the rounds.
detail_table() {
  local j name l f k
  echo
  echo "where the time went (BENCH_DETAIL; ticks of 1/$hz s per thread name, KVM counters from debugfs; medians):"
  for j in "${blk_jobs[@]}" "${net_jobs[@]}"; do
    name=$(field "$j" 0)
    in_rows "$name" || continue
    for l in godwit godwit-poll qemu qemu-vhost; do
      local line=
      for f in "$work"/res/"$l.$name".detail.*; do
        [ -s "$f" ] || continue
        k=${f##*.detail.}
        line="$line $k=$(median <"$f")"
      done
      [ -n "$line" ] && echo "  $name $l:$line"
    done
  done
}

out=${BENCH_OUT:-}
[ -z "$out" ] && [ -n "${GODWIT_TESTHOST_RESULTS:-}" ] && out=$GODWIT_TESTHOST_RESULTS/io-$(date -u +%Y%m%dT%H%M%SZ).md
echo
table | { if [ -n "$out" ]; then tee "$out"; else cat; fi; }
if [ -n "$out" ]; then
  # The consoles and CPU samples of the last round, for a figure that needs explaining, and
  # the consoles of guests that stopped early in any round (LABEL.runN.log).
  mkdir -p "${out%.md}.logs" && cp "$work"/*.log "$work"/*.cpu* "${out%.md}.logs/" 2>/dev/null
  echo "bench: table written to $out, the consoles to ${out%.md}.logs/" >&2
fi
n_ok=$(cat "$work"/res/godwit.* "$work"/res/qemu.* 2>/dev/null | wc -l)
[ "$n_ok" -gt 0 ]
