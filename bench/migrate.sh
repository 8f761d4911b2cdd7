#!/usr/bin/env bash
# migrate.sh: live-migration benchmark, godwit against QEMU on the same guest, in one run (issue
# 9). A measurement, not a test. Run it where /dev/kvm runs unmodified kernels, or through the
# test host:
#   tools/testhost/testhost.sh --timeout 1500 --results DIR -- bench/migrate.sh build [RUNS]
#
# The guest, the same for both VMMs: the default guest (guests/build-guest.sh: Debian's bzImage
# and the busybox initramfs) in script mode, 1 GiB, 1 vCPU, no network. Its script disk carries
# bench/guest-gap.c, built static here: the script copies it out of the disk and execs it. It
# reads CLOCK_MONOTONIC (and CLOCK_REALTIME) in a tight loop and prints, once a second, the
# longest gap between two reads on hvc0, a virtio console (BENCH_GAP_CONSOLE=serial: on the
# serial port, as before 2026-12-02); "busy" also has it rewrite a 64 MiB buffer at
# $BENCH_DIRTY MiB/s (default 50), a 4 KiB page at a time in the same loop.
# Why hvc0: a line's write() is in the guest-seen gap (below), and the serial port takes one
# exit to the VMM per byte, 10-120 ms for a 70-byte line in the nested test host: more than
# godwit's whole pause, for both VMMs alike. A write to hvc0 is one notification (the guest's
# driver then waits for the VMM to take the buffer), so what is left in a line's time is the
# VMM's own.
#
# "capped" is the busy guest over a link both VMMs hold to $BENCH_CAP_MIBPS MiB/s (default
# 32, QEMU's own default cap) for at most $BENCH_CAP_TIMEOUT s (default 60): godwit `migrate
# --bandwidth N --timeout S` at its defaults otherwise (auto-converge), QEMU at its own
# (downtime-limit 300 ms, no auto-converge capability). A move still copying at the end is
# cancelled and counted as not converged (the issue's "convergence where QEMU's default does
# not"); the guest runs on at its source and that chain ends.
# Before the moves, iperf3 measures the loopback's rate (3 s over 127.0.0.1, no VM running):
# each table gives total time over the time the bytes sent would take at that rate. iperf3 runs
# again after each chain's last move, its guest still running its loop at the destination (which
# keeps one of the test host's two CPUs busy, during a move too): the tables give the same ratio
# at that rate.
#
# For each workload (idle, busy, capped) and each VMM one guest is booted and, once it has printed
# $BENCH_SETTLE s of gap lines, moved over TCP on 127.0.0.1 to a fresh destination process,
# which then becomes the source of the next move (RUNS moves for godwit, 2 x RUNS for QEMU):
#   godwit  `godwit run --incoming tcp:127.0.0.1:PORT --name N --api-socket S` (nothing else),
#           then `godwit migrate SRC_SOCK tcp:127.0.0.1:PORT` at its default budget (10 ms;
#           "both at 10 ms" is the same command, so godwit's column serves both comparisons);
#           GET /vm/migration polled every 10 ms to its end: total_ms, downtime_ms, bytes_sent
#   QEMU    qemu-system-x86_64 -accel kvm -cpu host -M q35, the same kernel, initrd, command
#           line and script disk (virtio-blk-pci); the destination the same plus -incoming
#           tcp:127.0.0.1:PORT; on the source, QMP migrate-set-parameters downtime-limit (300,
#           QEMU's default, and 10 in turn) and max-bandwidth 1 TiB/s (QEMU's default cap is
#           32 MiB/s: raised, as bench/snapshot.sh does), migrate, query-migrate every 5 ms
#           until completed: total-time, downtime, ram.transferred; then quit
# Each VMM gives the guest hvc0 on a file per process (godwit --console virtio,file=F, on the
# destination too; QEMU virtio-serial-pci with a virtconsole on -chardev file); the serial port
# keeps the boot messages.
# Guest-seen downtime: the longest gap in the gap lines from the move's start on the source
# through the first two whole lines at the destination (CLOCK_MONOTONIC, which kvmclock keeps
# going across the move; the time the loop spent in its own write() of a line counts too);
# "switchover" is the destination's first line alone; the source's median second before the
# move is the loop's own noise. CLOCK_REALTIME's longest gap over the same lines is given too.
# A godwit move whose connect fails (the guest runs on at the source; seen in the test host as
# "cannot connect to tcp:...: Interrupted system call") is tried again with a fresh destination,
# up to 3 times, and counted in the summary.
# Total time is the VMM's own figure (from the migrate command to completion); wall time from
# the start of the migrate command (godwit: the exec of the CLI) to its end is in the log lines.
#
# BENCH_TRANSPORT=local moves the guest within the host without copying its RAM: godwit
# `--incoming unix:PATH` and `godwit migrate SRC unix:PATH --local` (the memory file handed
# over); QEMU with its RAM in a shared file on tmpfs (memory-backend-file,share=on, mapped by
# both processes), the x-ignore-shared capability on both sides (the destination started with
# -incoming defer) and migrate to unix:PATH: QEMU's own way to move a guest on one host without
# sending its pages.
#
# Environment: BENCH_TRANSPORT (tcp, the default, or local), BENCH_VMMS (default "godwit qemu"),
# BENCH_WORKLOADS (default "idle busy capped"), BENCH_CAP_MIBPS and BENCH_CAP_TIMEOUT (capped),
# BENCH_QEMU_DOWNTIMES (ms, default "300 10"), BENCH_GAP_CONSOLE (virtio, the default, or serial), BENCH_MEM (MiB, default 1024), BENCH_DIRTY
# (MiB/s for busy, default 50), BENCH_SETTLE (s of gap lines before each move, default 4),
# BENCH_VM_TIMEOUT (s for a boot to reach the loop, default 180), BENCH_MIGRATE_TIMEOUT (s per
# move, default 120), BENCH_BUDGET (s: after this no further move is started in a chain beyond
# its first; default 900). The test host passes only GODWIT_* and the variables named in
# GODWIT_TESTHOST_ENV. With testhost.sh --results DIR the consoles and outputs are kept in
# DIR/migrate-logs (copied after each move).
set -uo pipefail

build=${1:?usage: bench/migrate.sh BUILD_DIR [RUNS]}
runs=${2:-${BENCH_RUNS:-2}}
transport=${BENCH_TRANSPORT:-tcp}
case $transport in tcp|local) ;; *) echo "bench: BENCH_TRANSPORT must be tcp or local" >&2; exit 1 ;; esac
vmms=${BENCH_VMMS:-godwit qemu}
workloads=${BENCH_WORKLOADS:-idle busy capped}
cap=${BENCH_CAP_MIBPS:-32}
cap_timeout=${BENCH_CAP_TIMEOUT:-60}
qemu_downtimes=${BENCH_QEMU_DOWNTIMES:-300 10}
mem=${BENCH_MEM:-1024}
gapcon=${BENCH_GAP_CONSOLE:-virtio}
case $gapcon in virtio|serial) ;; *) echo "bench: BENCH_GAP_CONSOLE must be virtio or serial" >&2; exit 1 ;; esac
dirty=${BENCH_DIRTY:-50}
settle=${BENCH_SETTLE:-4}
vm_timeout=${BENCH_VM_TIMEOUT:-180}
mig_timeout=${BENCH_MIGRATE_TIMEOUT:-120}
budget=${BENCH_BUDGET:-900}
root=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
godwit=$(readlink -f "$build/godwit")
[ -x "$godwit" ] || { echo "bench: no godwit in $build" >&2; exit 1; }
for c in qemu-system-x86_64 gcc timeout cpio; do
  command -v $c >/dev/null || { echo "bench: $c not found (run tools/install-deps.sh)" >&2; exit 1; }
done
py=$(command -v /usr/bin/python3 || command -v python3) || { echo "bench: python3 not found" >&2; exit 1; }
helper=$root/bench/migrate.py
[ -e /dev/kvm ] || { echo "bench: no /dev/kvm (run it through tools/testhost/testhost.sh)" >&2; exit 1; }
eval "$("$root/guests/build-guest.sh" --print)" || exit 1
[ -f "$kernel_bzimage" ] && [ -f "$initrd" ] || { echo "bench: the default guest is not built" >&2; exit 1; }

work=$(mktemp -d /tmp/godwit-mig.XXXXXX)
pids=()
keep_logs() {
  local keep=${GODWIT_TESTHOST_RESULTS:-}
  if [ -n "$keep" ] && [ -d "$keep" ] && [ -w "$keep" ]; then
    (cd "$work" && find . \( -name '*.log' -o -name '*.out' -o -name '*.err' \) -print0 |
      cpio --quiet -0 -pdmu "$keep/migrate-logs" 2>/dev/null)
  fi
}
cleanup() {
  local p
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  keep_logs
  rm -rf "$work"
}
trap cleanup EXIT
trap 'echo "bench: interrupted" >&2; exit 130' INT TERM

cmdline="console=ttyS0 reboot=acpi panic=1 quiet godwit.test=script"

# The gap loop, and a script disk per workload: the script in the first 4 KiB (padded with
# newlines), the static binary after it, padded to whole sectors.
gcc -static -O2 -o "$work/guest-gap" "$root/bench/guest-gap.c" ||
  { echo "bench: cannot build bench/guest-gap.c statically (glibc's static libraries?)" >&2; exit 1; }
script_disk() { # NAME MIBPS
  local img=$work/$1.img size out=
  [ "$gapcon" = virtio ] &&
    out='[ -c /dev/hvc0 ] || { echo "guest-gap: no /dev/hvc0"; exit 1; }; exec >/dev/hvc0; echo'
  printf 'dd if="$0" of=/guest-gap bs=4096 skip=1 2>/dev/null\nchmod +x /guest-gap\n%s\nexec /guest-gap %s 64\nexit 1\n' \
    "$out" "$2" >"$img"
  size=$(stat -c %s "$img")
  head -c $((4096 - size)) /dev/zero | tr '\0' '\n' >>"$img"
  cat "$work/guest-gap" >>"$img"
  size=$(stat -c %s "$img")
  head -c $(( (512 - size % 512) % 512 )) /dev/zero >>"$img"
}
script_disk idle 0
script_disk busy "$dirty"
script_disk capped "$dirty"

qcommon() { # SCRIPT_IMG [RAM_FILE]: with RAM_FILE (local moves), RAM is that shared file
  local machine=q35
  [ -n "${2:-}" ] && machine="q35,memory-backend=ram -object memory-backend-file,id=ram,size=${mem}M,mem-path=$2,share=on"
  echo -accel kvm -cpu host -M $machine -smp 1 -m "$mem" -nodefaults -no-user-config -display none \
    -no-reboot -kernel "$kernel_bzimage" -initrd "$initrd" -append "'$cmdline'" \
    -drive "file=$1,if=none,id=s0,format=raw,readonly=on" -device virtio-blk-pci,drive=s0,serial=godwit-script
}

# The gap lines' file beside a VM's serial log, and the console options that put them there.
gap_log() { if [ "$gapcon" = virtio ]; then echo "${1%.log}.hvc.log"; else echo "$1"; fi; }
godwit_console() { [ "$gapcon" = virtio ] && echo "--console virtio,file=$(gap_log "$1")"; }
qemu_console() {
  [ "$gapcon" = virtio ] &&
    echo "-device virtio-serial-pci -chardev file,id=hvc,path=$(gap_log "$1") -device virtconsole,chardev=hvc"
}

step() { echo "bench: [$((SECONDS - start)) s] $*" >&2; }
# rec CONFIG METRIC VALUE; a VALUE of '-' (or none) is no figure, and is not recorded: a median
# takes it for 0 otherwise.
rec() { case "$3" in '' | -) return 0 ;; esac; echo "$3" >>"$work/$1.$2"; }
gap_count() { local c=; [ -f "$1" ] && c=$(tr -d '\r' <"$1" | grep -acE '^gap [0-9]+ max_us'); echo "${c:-0}"; }

# wait_gaps LOG PID LABEL N SECS: waits for N more whole gap lines than LOG's VM has printed
# now (in its gap_log). It and wait_exit look every 0.3 s: each look forks, and in the nested
# test host a fork takes CPU time the guest's loop would see as a gap.
wait_gaps() {
  local log=$1 pid=$2 label=$3 want end=$((SECONDS + $5)) glog
  glog=$(gap_log "$log")
  want=$(( $(gap_count "$glog") + $4 ))
  until [ "$(gap_count "$glog")" -ge "$want" ]; do
    kill -0 "$pid" 2>/dev/null ||
      { echo "bench: $label exited before printing gap lines; its log:" >&2; tail -n 20 "$log" >&2; return 1; }
    [ $SECONDS -lt $end ] ||
      { echo "bench: $label: no gap lines after $5 s; its logs:" >&2; tail -n 20 "$log" >&2
        [ "$glog" = "$log" ] || tail -n 5 "$glog" >&2 2>/dev/null; return 1; }
    sleep 0.3
  done
}

# wait_exit PID SECS: the process's exit status, or 124 after killing it when it outlives SECS.
wait_exit() {
  local pid=$1 end=$((SECONDS + $2))
  while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $end ]; do sleep 0.3; done
  kill -0 "$pid" 2>/dev/null && { kill -KILL "$pid"; wait "$pid" 2>/dev/null; return 124; }
  wait "$pid"
}

port=$((20000 + RANDOM % 20000))
hop=0

# loopback_rate: MiB/s that iperf3 carries over 127.0.0.1 in 3 s, on a port of its own.
. "$root/bench/loopback-rate.sh"
loopback_rate() {
  port=$((port + 1))
  loopback_rate_on $port
}

# chain VMM WORKLOAD: boots one guest and moves it on, hop after hop.
chain() {
  local vmm=$1 wl=$2 d=$work/$1-$2 img=$work/$2.img
  mkdir -p "$d"
  local log=$d/boot.log sock pid ram=
  step "$vmm $wl: boot"
  if [ "$vmm" = godwit ]; then
    sock=$d/boot.sock
    "$godwit" run --kernel "$kernel_bzimage" --initrd "$initrd" --memory "$mem" --cpus 1 \
      --no-rng --no-reboot --cmdline "$cmdline" --disk "path=$img,readonly=on,serial=godwit-script" \
      --name "gwmig-$wl-boot" --api-socket "$sock" $(godwit_console "$log") </dev/null >"$log" 2>&1 &
  else
    sock=$d/boot.qmp
    ram=
    [ "$transport" = local ] && ram=$d/ram
    eval "qemu-system-x86_64 $(qcommon "$img" "$ram")" $(qemu_console "$log") -serial "file:$log" \
      -qmp "unix:$sock,server=on,wait=off" </dev/null >"$d/boot.err" 2>&1 &
  fi
  pid=$!; pids+=("$pid")
  wait_gaps "$log" "$pid" "$vmm $wl (boot)" "$settle" "$vm_timeout" ||
    { cat "$d/boot.err" 2>/dev/null >&2; kill -KILL "$pid" 2>/dev/null; return 1; }
  local budgets r i
  if [ "$vmm" = godwit ]; then budgets=default
  elif [ "$wl" = capped ]; then budgets=300 # QEMU's default, as its cap
  else budgets=$qemu_downtimes; fi
  for i in $(seq 1 "$runs"); do
    for b in $budgets; do
      if [ $hop -gt 0 ] && [ "$i" -gt 1 ] && [ $((SECONDS - start)) -ge "$budget" ]; then
        echo "bench: ${budget} s spent (BENCH_BUDGET): no move $i of $vmm $wl" >&2
        break 2
      fi
      hop=$((hop + 1))
      local n dlog dsock dpid cfg=$vmm$b-$wl try=0
      [ "$vmm" = godwit ] && cfg=godwit-$wl
      # A move that fails to connect (the source still running the guest) is tried again,
      # up to 3 times, with a fresh destination: counted and reported.
      while :; do
      try=$((try + 1)); port=$((port + 1))
      n=$d/hop$i-$b-try$try
      dlog=$n.log
      step "$vmm $wl: move $i (budget $b ms, $transport) to port $port${try:+, try $try}"
      local uri=tcp:127.0.0.1:$port at=$port
      [ "$transport" = local ] && uri=unix:$n.unix at=$n.unix
      if [ "$vmm" = godwit ]; then
        dsock=$n.sock
        "$godwit" run --incoming "$uri" --name "gwmig-$hop" --api-socket "$dsock" \
          $(godwit_console "$dlog") </dev/null >"$dlog" 2>&1 &
      elif [ "$transport" = local ]; then
        dsock=$n.qmp
        eval "qemu-system-x86_64 $(qcommon "$img" "$ram")" $(qemu_console "$dlog") -serial "file:$dlog" \
          -qmp "unix:$dsock,server=on,wait=off" -incoming defer </dev/null >"$n.err" 2>&1 &
      else
        dsock=$n.qmp
        eval "qemu-system-x86_64 $(qcommon "$img")" $(qemu_console "$dlog") -serial "file:$dlog" \
          -qmp "unix:$dsock,server=on,wait=off" -incoming "$uri" </dev/null >"$n.err" 2>&1 &
      fi
      dpid=$!; pids+=("$dpid")
      [ "$vmm" = qemu ] && [ "$transport" = local ] &&
        { "$py" "$helper" qemu-incoming "$dsock" "$uri" 30 --shared || kill -KILL "$dpid"; }
      "$py" "$helper" listening "$at" 30 ||
        { echo "bench: the $vmm destination did not listen; its output:" >&2; tail -n 20 "$dlog" "$n.err" 2>/dev/null >&2
          kill -KILL "$dpid" "$pid" 2>/dev/null; return 1; }
      local off
      off=$(stat -c %s "$(gap_log "$log")")
      local how= limit=$mig_timeout rc
      [ "$transport" = local ] && { [ "$vmm" = godwit ] && how=--local || how=--shared; }
      # capped: both VMMs held to $cap MiB/s for $cap_timeout s (godwit's own --timeout).
      if [ "$wl" = capped ] && [ "$vmm" = godwit ]; then
        how="$how --bandwidth $cap --timeout $cap_timeout" limit=$((cap_timeout + 60))
      elif [ "$wl" = capped ]; then
        how="$how --max-bandwidth $cap" limit=$cap_timeout
      fi
      if [ "$vmm" = godwit ]; then
        r=$("$py" "$helper" godwit "$godwit" "$sock" "$uri" "$n.out" "$limit" $how)
      else
        r=$(timeout -k 5 $((limit + 30)) "$py" "$helper" qemu "$sock" "$uri" "$b" "$limit" $how)
      fi
      rc=$?
      if [ $rc -eq 3 ]; then # not converged: the guest runs on at the source; the chain ends
        local nwall nbytes npasses
        read -r _ nwall nbytes npasses <<<"$r"
        rec $cfg noconv 1
        echo "bench: $vmm $wl move $i (budget $b): did not converge in $limit s ($(awk -v b="$nbytes" \
          'BEGIN{printf "%.1f", b / 1048576}') MiB sent, passes $npasses); the guest runs on at the source" >&2
        kill -KILL "$dpid" "$pid" 2>/dev/null; wait "$dpid" "$pid" 2>/dev/null; keep_logs
        return 0
      fi
      [ $rc -eq 0 ] || {
        echo "bench: $vmm $wl move $i (budget $b) failed; the destination's log:" >&2
        tail -n 10 "$dlog" "$n.err" 2>/dev/null >&2
        kill -KILL "$dpid" 2>/dev/null; wait "$dpid" 2>/dev/null; keep_logs
        if [ $try -lt 3 ] && kill -0 "$pid" 2>/dev/null && [ "$vmm" = godwit ] &&
          grep -q 'cannot connect' "$n.out" "$log" 2>/dev/null; then
          echo "bench: NOTE: godwit could not connect to its destination (the guest runs on at the source): trying again" >&2
          rec $cfg retries 1
          sleep 1; continue
        fi
        kill -KILL "$pid" 2>/dev/null; return 1
      }
      break
      done
      wait_exit "$pid" 30 >/dev/null; local st=$?
      [ $st -eq 0 ] || echo "bench: note: the $vmm source exited with status $st after the move" >&2
      wait_gaps "$dlog" "$dpid" "$vmm $wl destination $i" 2 60 || { kill -KILL "$dpid"; keep_logs; return 1; }
      local wall total down bytes passes g
      read -r wall total down bytes passes <<<"$r"
      g=$("$py" "$helper" gaps "$(gap_log "$log")" "$off" "$(gap_log "$dlog")") || { kill -KILL "$dpid"; keep_logs; return 1; }
      local longest switch typical real rate nlines write
      read -r longest switch typical real rate nlines write <<<"$g"
      rec $cfg total "$total"; rec $cfg wall "$wall"; rec $cfg down "$down"; rec $cfg bytes "$bytes"
      rec $cfg gap "$longest"; rec $cfg switch "$switch"; rec $cfg noise "$typical"; rec $cfg real "$real"
      rec $cfg rate "$rate"; rec $cfg write "$write"
      echo "bench: $vmm $wl move $i (budget $b): total $total ms (wall $wall ms), VMM downtime $down ms," \
        "$(awk -v b="$bytes" 'BEGIN{printf "%.1f", b / 1048576}') MiB sent, passes $passes;" \
        "guest: longest gap $longest us (switchover line $switch us, typical second before $typical us," \
        "CLOCK_REALTIME $real us; $nlines lines; a line's write() took $write us before), writing" \
        "$rate MiB/s" >&2
      keep_logs
      log=$dlog sock=$dsock pid=$dpid
      wait_gaps "$log" "$pid" "$vmm $wl destination $i" "$settle" 60 || { kill -KILL "$pid"; keep_logs; return 1; }
    done
  done
  # The loopback once more, with the chain's guest running its loop at its last destination:
  # the rate a move can have here, the guest's vCPU taking one of the host's CPUs meanwhile.
  if [ "$transport" = tcp ] && [ "$wl" != capped ]; then
    local busy_rate
    busy_rate=$(loopback_rate)
    [ -n "$busy_rate" ] && rec "$vmm-$wl" loguest "$busy_rate"
    step "loopback with the $vmm $wl guest running: ${busy_rate:-n/a} MiB/s"
  fi
  kill -KILL "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
  return 0
}

median() { sort -g | awk '{a[NR]=$1} END{ if (!NR) print ""; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2 }'; }
med() { [ -s "$work/$1" ] && median <"$work/$1"; }
cnt() { [ -s "$work/$1.total" ] && wc -l <"$work/$1.total" || echo 0; }

start=$SECONDS
# The loopback's own rate with no VM running, for the issue's "total time within 1.5x of the
# bytes over the loopback bandwidth": iperf3 over 127.0.0.1 for 3 s.
lo_mibps=$(loopback_rate)
step "loopback: ${lo_mibps:-n/a} MiB/s (iperf3 -c 127.0.0.1 -t 3)"

for wl in $workloads; do
  for vmm in $vmms; do
    chain "$vmm" "$wl" || echo "bench: the $vmm $wl chain stopped early" >&2
    keep_logs
  done
done

# ideal CONFIG MIBPS: its median total time over the time its median bytes take at MIBPS
ideal() {
  awk -v t="$(med $1.total)" -v b="$(med $1.bytes)" -v lo="$2" \
    'BEGIN { if (t != "" && b != "" && lo != "" && b > 0) print t / (b / (lo * 1048576) * 1000) }'
}

# row NAME DIVISOR godwit q1 q2: values and godwit/QEMU ratios; q2 "-": no second QEMU column
row() {
  awk -v n="$1" -v d="$2" -v g="$3" -v a="$4" -v b="$5" 'function f(x) { return x == "" ? "n/a" : sprintf("%.1f", x / d) }
    function r(x) { return (g == "" || x == "" || x == 0) ? "n/a" : sprintf("%.2f", g / x) }
    BEGIN { printf "| %s | %s | %s | %s |", n, f(g), f(a), r(a)
      if (b != "-") printf " %s | %s |", f(b), r(b)
      printf "\n" }'
}

echo
echo "command: bench/migrate.sh $*${GODWIT_IN_TESTHOST:+ (inside tools/testhost/testhost.sh)}; $((SECONDS - start)) s in all"
echo "guest: $kernel_package bzImage, default initrd, script mode running bench/guest-gap.c (its lines on" \
  "$([ "$gapcon" = virtio ] && echo hvc0 || echo the serial port)); $mem MiB, 1 vCPU;" \
  "$(qemu-system-x86_64 --version | head -n 1);" \
  "$([ "$transport" = local ] && echo "same-host moves over a UNIX socket, RAM not copied (godwit --local," \
    "QEMU x-ignore-shared on a shared memory file)" || echo "migration over TCP on 127.0.0.1")"
echo "loopback: ${lo_mibps:-n/a} MiB/s (iperf3 -c 127.0.0.1 -t 3, no VM running)"
set -- $qemu_downtimes
q1=${1:-300} q2=${2:-10}
ok=1
noconv() { [ -s "$work/$1.noconv" ] && wc -l <"$work/$1.noconv" || echo 0; }
for wl in $workloads; do
  g=godwit-$wl a=qemu$q1-$wl b=qemu$q2-$wl
  if [ "$wl" = capped ]; then # QEMU at its defaults only: 300 ms, no auto-converge
    a=qemu300-capped
    echo
    echo "capped (writer at $dirty MiB/s, both VMMs held to $cap MiB/s for at most $cap_timeout s;" \
      "godwit at its defaults otherwise, QEMU at its own: 300 ms, no auto-converge): converged: godwit" \
      "$(cnt $g) of $(( $(cnt $g) + $(noconv $g) )), QEMU $(cnt $a) of $(( $(cnt $a) + $(noconv $a) ))"
    echo
    echo "| capped, $mem MiB (medians of the moves that converged) | godwit (10 ms) | QEMU 300 ms | godwit/QEMU |"
    echo "|---|---|---|---|"
    row "total time, VMM's figure (ms)" 1 "$(med $g.total)" "$(med $a.total)" -
    row "guest-seen downtime: longest gap (ms)" 1000 "$(med $g.gap)" "$(med $a.gap)" -
    row "downtime, VMM's figure (ms)" 1 "$(med $g.down)" "$(med $a.down)" -
    row "bytes sent (MiB)" 1048576 "$(med $g.bytes)" "$(med $a.bytes)" -
    [ "$(cnt $g)" -gt 0 ] || ok=0
    continue
  fi
  echo
  echo "$wl$([ "$wl" = busy ] && echo " (writer at $dirty MiB/s asked; the guest's own count, median: godwit" \
    "$(med $g.rate || echo n/a), QEMU $(med $a.rate || echo n/a) MiB/s)"): successful moves: godwit $(cnt $g)," \
    "QEMU at $q1 ms $(cnt $a), QEMU at $q2 ms $(cnt $b); moves tried again after a failed connect: godwit" \
    "$(cat "$work/$g.retries" 2>/dev/null | wc -l)"
  lg=$(med godwit-$wl.loguest) lq=$(med qemu-$wl.loguest)
  echo "loopback with the guest running (iperf3 after the chain's last move): godwit's ${lg:-n/a}," \
    "QEMU's ${lq:-n/a} MiB/s"
  echo
  echo "| $wl, $mem MiB (medians) | godwit (10 ms, its default) | QEMU $q1 ms | godwit/QEMU | QEMU $q2 ms | godwit/QEMU |"
  echo "|---|---|---|---|---|---|"
  row "total time, VMM's figure (ms)" 1 "$(med $g.total)" "$(med $a.total)" "$(med $b.total)"
  row "guest-seen downtime: longest gap, CLOCK_MONOTONIC (ms)" 1000 "$(med $g.gap)" "$(med $a.gap)" "$(med $b.gap)"
  row "  of which the switchover's line (ms)" 1000 "$(med $g.switch)" "$(med $a.switch)" "$(med $b.switch)"
  row "  the loop's typical second before the move (ms)" 1000 "$(med $g.noise)" "$(med $a.noise)" "$(med $b.noise)"
  row "  longest gap, CLOCK_REALTIME (ms)" 1000 "$(med $g.real)" "$(med $a.real)" "$(med $b.real)"
  row "  a gap line's write() before the move (ms)" 1000 "$(med $g.write)" "$(med $a.write)" "$(med $b.write)"
  row "downtime, VMM's figure (ms)" 1 "$(med $g.down)" "$(med $a.down)" "$(med $b.down)"
  row "bytes sent (MiB)" 1048576 "$(med $g.bytes)" "$(med $a.bytes)" "$(med $b.bytes)"
  row "total time over the bytes' time at the loopback's rate (x)" 1 "$(ideal $g "$lo_mibps")" \
    "$(ideal $a "$lo_mibps")" "$(ideal $b "$lo_mibps")"
  row "  the same at its rate with the guest running (x)" 1 "$(ideal $g "$lg")" "$(ideal $a "$lq")" \
    "$(ideal $b "$lq")"
  for c in $g $a $b; do [ "$(cnt $c)" -gt 0 ] || ok=0; done
done
echo
echo "godwit: godwit run --kernel K --initrd I --memory $mem --cpus 1 --no-rng --no-reboot --cmdline '$cmdline'" \
  "--disk path=SCRIPT,readonly=on,serial=godwit-script $(godwit_console LOG); godwit run --incoming tcp:127.0.0.1:PORT --name N" \
  "--api-socket S $(godwit_console DLOG); godwit migrate SOCK tcp:127.0.0.1:PORT (capped: --bandwidth $cap" \
  "--timeout $cap_timeout; local: unix:PATH, both sides, --local)"
echo "qemu:   qemu-system-x86_64 $(qcommon SCRIPT | sed "s|$kernel_bzimage|K|; s|$initrd|I|") $(qemu_console LOG)" \
  "-serial file:LOG" \
  "-qmp unix:SOCK,server=on,wait=off [-incoming tcp:127.0.0.1:PORT]; QMP migrate-set-parameters" \
  "downtime-limit MS max-bandwidth 2^40 (capped: 300 and $cap MiB/s), migrate tcp:127.0.0.1:PORT (local: -M q35,memory-backend=ram" \
  "-object memory-backend-file,id=ram,mem-path=FILE,share=on, -incoming defer, x-ignore-shared on both" \
  "sides, migrate-incoming and migrate unix:PATH)"
[ $ok -eq 1 ]
