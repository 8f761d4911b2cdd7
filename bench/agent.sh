#!/usr/bin/env bash
# agent.sh: guest agent benchmark, godwit's agent (godwit exec, godwit cp over vsock) against
# QEMU's guest agent (qemu-ga over virtio-serial, Debian's qemu-system-x86_64 and
# qemu-guest-agent), in the same guest. A measurement, not a test. Run it where /dev/kvm runs
# unmodified kernels, or through the test host (docs/benchmarks.md):
#   bench/build-agent-guest.sh      # once, outside the test host (its / is read-only)
#   tools/testhost/testhost.sh --timeout 1500 --results /work/bench-results -- \
#       env GODWIT_TESTHOST_ENV= bench/agent.sh build
#
# Usage: bench/agent.sh BUILD_DIR
# Environment:
#   BENCH_EXEC_N    exec round trips per VMM (default 20); the median is the figure
#   BENCH_CP_MIB    size of the file copied into the guest, MiB (default 256)
#   BENCH_CP_RUNS   copies per VMM (default 3); the median is the figure
#   BENCH_MEM       guest memory, MiB (default 1024: the copy lands in the guest's RAM /tmp)
#   BENCH_OUT_MIB   a command's stdout brought back through each agent, MiB (default 8; under
#                   qemu-ga's 16 MiB bound on captured output)
#   BENCH_STREAM_MIB  bytes of each vsock stream (godwit only), MiB (default 32)
#   BENCH_STREAM_RUNS runs of each of those (default 3); the median is the figure
#   BENCH_CACHE     the guests' cache (GODWIT_CACHE of build-guest.sh and build-agent-guest.sh)
#                   when it must differ from the test host's
#   BENCH_OUT       file the table is also written to (default, under the test host's
#                   --results DIR: DIR/agent-DATE.md)
#
# The guest, for both: the default guest's bzImage and initramfs with qemu-ga appended
# (bench/build-agent-guest.sh), 1 vCPU, godwit.test=script with a script disk (serial
# godwit-script) that starts qemu-ga on the virtio-serial port named org.qemu.guest_agent.0
# when there is one and then sleeps; the default init has already started godwit-agent.
# godwit: --vsock cid=3 and --api-socket; each round trip is the wall time of
# `godwit exec API -- true` (the whole CLI: start, connect, exec, exit status), each copy of
# `godwit cp FILE API:/tmp/x` (checksummed, renamed into place); and the round trip without
# the CLI (bench/api_exec.py: PUT /vm/agent/exec on the API socket, a connection each), the
# figure to hold against qemu-ga's, whose client is one process on one connection.
# QEMU: -device virtio-serial with a virtserialport on a chardev socket; bench/qga.py
# connects once, guest-sync-delimited, then per round trip guest-exec /bin/true
# (capture-output) and guest-exec-status polled at once until exited; per copy
# guest-file-open, guest-file-write of 1 MiB base64 chunks, guest-file-close.
# Streams: a command's stdout (sh -c "head -c BYTES /dev/zero") through each agent: godwit
# exec API (the whole command, its output counted by wc -c), qemu-ga's guest-exec with
# capture-output and guest-exec-status until exited (bench/qga.py execout: base64 in JSON);
# vsock streams, godwit only (QEMU's side would need vhost-vsock: no peer figure), between
# this host and bench/vsock-stream.c in the guest, started through the agent
# (bench/vsock_bench.py g2h/h2g): guest to host, the guest connects to the listener at
# VSOCK_PORT and writes; host to guest, "CONNECT PORT" and this side writes. And the exec
# round trip's steps on the vsock socket itself (bench/vsock_bench.py steps).
# The file is random bytes in this host's /tmp. MB/s are 10^6 bytes a second.
set -uo pipefail

usage="usage: bench/agent.sh BUILD_DIR (environment: BENCH_EXEC_N, BENCH_CP_MIB, ...)"
build=${1:?$usage}
exec_n=${BENCH_EXEC_N:-20}
cp_mib=${BENCH_CP_MIB:-256}
cp_runs=${BENCH_CP_RUNS:-3}
mem=${BENCH_MEM:-1024}
out_mib=${BENCH_OUT_MIB:-8}
stream_mib=${BENCH_STREAM_MIB:-32}
stream_runs=${BENCH_STREAM_RUNS:-3}
die() { echo "bench: $*" >&2; exit 1; }
for v in "$exec_n" "$cp_mib" "$cp_runs" "$mem" "$out_mib" "$stream_mib" "$stream_runs"; do
  [[ $v =~ ^[1-9][0-9]*$ ]] || die "BENCH_EXEC_N, BENCH_CP_MIB, BENCH_CP_RUNS, BENCH_MEM and BENCH_OUT_MIB, BENCH_STREAM_* take whole numbers above 0"
done
(( out_mib < 16 )) || die "BENCH_OUT_MIB must stay under 16 (qemu-ga keeps at most 16 MiB of output)"
root=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
godwit=$(readlink -f "$build/godwit")
[ -x "$godwit" ] || die "no godwit in $build"
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found (run tools/install-deps.sh)"
py=$(command -v /usr/bin/python3 || command -v python3) || die "python3 not found"
[ -n "${BENCH_CACHE:-}" ] && export GODWIT_CACHE=$BENCH_CACHE
eval "$("$root/guests/build-guest.sh" --print)" ||
  die "the default guest is not built (guests/build-guest.sh, outside the test host)"
agent_initrd=$("$root/bench/build-agent-guest.sh") ||
  die "the agent guest is missing or stale: run bench/build-agent-guest.sh outside the test host"

work=$(mktemp -d /tmp/godwit-agent.XXXXXX)
vmm_pid=
cleanup() {
  [ -n "$vmm_pid" ] && kill "$vmm_pid" 2>/dev/null && wait "$vmm_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
mkdir "$work/res"
cmdline="console=ttyS0 reboot=acpi panic=1 quiet godwit.test=script"
boot_timeout=300

# The guest's script: qemu-ga on its port (busybox has no udev: the node may be missing),
# then nothing until the host ends the VM.
cat >"$work/script.img" <<'SCRIPT'
for n in /sys/class/virtio-ports/*/name; do
  [ "$(cat "$n" 2>/dev/null)" = org.qemu.guest_agent.0 ] || continue
  p=${n%/name}; p=${p##*/}
  [ -c "/dev/$p" ] || mknod "/dev/$p" c $(tr : ' ' <"/sys/class/virtio-ports/$p/dev")
  mkdir -p /tmp/qga
  /usr/sbin/qemu-ga -m virtio-serial -p "/dev/$p" -f /tmp/qga/pid -t /tmp/qga &
  echo "BENCH qemu-ga on /dev/$p"
done
echo "BENCH guest ready"
while :; do sleep 3600; done
SCRIPT
size=$(stat -c %s "$work/script.img")
head -c $(( (512 - size % 512) % 512 )) /dev/zero | tr '\0' '\n' >>"$work/script.img"

echo "bench: writing the $cp_mib MiB file" >&2
head -c $((cp_mib << 20)) /dev/urandom >"$work/file" || die "cannot write $work/file"
cp_bytes=$((cp_mib << 20))

godwit_cmd() {
  local a=("$godwit" run --kernel "$kernel_bzimage" --initrd "$agent_initrd" --memory "$mem" --cpus 1
    --no-rng --cmdline "$cmdline" --disk "path=$work/script.img,readonly=on,serial=godwit-script"
    --vsock "cid=3,socket=$work/vm.vsock" --api-socket "$work/api.sock")
  printf '%s\0' "${a[@]}"
}
qemu_cmd() {
  local a=(qemu-system-x86_64 -accel kvm -cpu host -M q35 -smp 1 -m "$mem"
    -nodefaults -no-user-config -display none -serial stdio -no-reboot
    -kernel "$kernel_bzimage" -initrd "$agent_initrd" -append "$cmdline"
    -drive "file=$work/script.img,if=none,id=s0,format=raw,readonly=on"
    -device virtio-blk-pci,drive=s0,serial=godwit-script
    -device virtio-serial -chardev "socket,path=$work/qga.sock,server=on,wait=off,id=qga0"
    -device virtserialport,chardev=qga0,name=org.qemu.guest_agent.0)
  printf '%s\0' "${a[@]}"
}

start_vm() { # LABEL CMD...
  local label=$1; shift
  "$@" </dev/null >"$work/$label.log" 2>&1 &
  vmm_pid=$!
}
stop_vm() {
  kill "$vmm_pid" 2>/dev/null; wait "$vmm_pid" 2>/dev/null; vmm_pid=
}
failed() { # LABEL WHAT
  echo "bench: $1: $2; its console:" >&2
  tail -n 25 "$work/$1.log" >&2
  stop_vm
  return 1
}
add() { echo "$3" >>"$work/res/$1.$2"; } # LABEL METRIC VALUE
mbs() { awk -v b="${2:-$cp_bytes}" -v s="$1" 'BEGIN{printf "%.1f", b / s / 1e6}'; } # SECONDS [BYTES]
out_bytes=$((out_mib << 20))
stream_bytes=$((stream_mib << 20))

run_godwit() {
  local i t0 t1 end=$((SECONDS + boot_timeout))
  mapfile -d '' cmd < <(godwit_cmd); start_vm godwit "${cmd[@]}"
  until [ -S "$work/api.sock" ] && "$godwit" exec "$work/api.sock" -- true >/dev/null 2>&1; do
    kill -0 "$vmm_pid" 2>/dev/null || { failed godwit "godwit ended before its agent answered"; return 1; }
    (( SECONDS < end )) || { failed godwit "no agent in $boot_timeout s"; return 1; }
    sleep 0.5
  done
  for ((i = 0; i < exec_n; i++)); do
    t0=$EPOCHREALTIME
    "$godwit" exec "$work/api.sock" -- true || { failed godwit "godwit exec failed"; return 1; }
    t1=$EPOCHREALTIME
    add godwit exec "$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", (b - a) * 1000}')"
  done
  "$py" "$root/bench/api_exec.py" "$work/api.sock" "$exec_n" >"$work/godwit.api" ||
    { failed godwit "PUT /vm/agent/exec failed"; return 1; }
  awk '{printf "%.3f\n", $1 * 1000}' "$work/godwit.api" >>"$work/res/godwit.api"
  godwit_streams || return 1
  for ((i = 0; i < cp_runs; i++)); do
    # The guest's tmpfs (half its RAM) holds one copy and the next one's temporary file only
    # when the last copy is gone.
    "$godwit" exec "$work/api.sock" -- rm -f /tmp/x || { failed godwit "godwit exec rm failed"; return 1; }
    t0=$EPOCHREALTIME
    "$godwit" cp "$work/file" "$work/api.sock:/tmp/x" || { failed godwit "godwit cp failed"; return 1; }
    t1=$EPOCHREALTIME
    add godwit cp "$(mbs "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b - a}')")"
  done
  # The copy is whole: the guest's file has the host file's size.
  [ "$("$godwit" exec "$work/api.sock" -- stat -c %s /tmp/x)" = "$cp_bytes" ] ||
    { failed godwit "the guest's /tmp/x is not $cp_bytes bytes"; return 1; }
  stop_vm
}

# The exec round trip's steps, a command's stdout, and vsock streams both ways.
godwit_streams() {
  local i t0 t1 n t
  "$py" "$root/bench/vsock_bench.py" "$work/vm.vsock" steps "$exec_n" >"$work/godwit.steps" ||
    { failed godwit "bench/vsock_bench.py steps failed"; return 1; }
  while read -r step ms; do add godwit "step_$step" "$ms"; done <"$work/godwit.steps"
  for ((i = 0; i < stream_runs; i++)); do
    t0=$EPOCHREALTIME
    n=$("$godwit" exec "$work/api.sock" -- sh -c "head -c $out_bytes /dev/zero" | wc -c)
    t1=$EPOCHREALTIME
    [ "$n" = "$out_bytes" ] || { failed godwit "godwit exec brought $n of $out_bytes bytes back"; return 1; }
    add godwit out "$(mbs "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b - a}')" "$out_bytes")"
    t=$("$py" "$root/bench/vsock_bench.py" "$work/vm.vsock" g2h 5000 "$stream_mib") ||
      { failed godwit "the guest-to-host stream failed"; return 1; }
    add godwit g2h "$(mbs "$t" "$stream_bytes")"
    t=$("$py" "$root/bench/vsock_bench.py" "$work/vm.vsock" h2g 5001 "$stream_mib") ||
      { failed godwit "the host-to-guest stream failed"; return 1; }
    add godwit h2g "$(mbs "$t" "$stream_bytes")"
  done
}

run_qemu() {
  local s
  mapfile -d '' cmd < <(qemu_cmd); start_vm qemu "${cmd[@]}"
  for ((s = 0; s < 50; s++)); do [ -S "$work/qga.sock" ] && break; sleep 0.1; done
  "$py" "$root/bench/qga.py" "$work/qga.sock" wait "$boot_timeout" || { failed qemu "no answer from qemu-ga"; return 1; }
  "$py" "$root/bench/qga.py" "$work/qga.sock" exec "$exec_n" >"$work/qemu.exec" ||
    { failed qemu "guest-exec failed"; return 1; }
  awk '{printf "%.3f\n", $1 * 1000}' "$work/qemu.exec" >>"$work/res/qemu.exec"
  for ((s = 0; s < stream_runs; s++)); do
    t=$("$py" "$root/bench/qga.py" "$work/qga.sock" execout "$out_bytes") || { failed qemu "guest-exec of head failed"; return 1; }
    add qemu out "$(mbs "$t" "$out_bytes")"
  done
  for ((s = 0; s < cp_runs; s++)); do
    t=$("$py" "$root/bench/qga.py" "$work/qga.sock" write "$work/file" /tmp/x) || { failed qemu "guest-file-write failed"; return 1; }
    add qemu cp "$(mbs "$t")"
  done
  stop_vm
}

start=$SECONDS
run_godwit
run_qemu
elapsed=$((SECONDS - start))

median() { sort -n | awk '{a[NR]=$1} END{ if (!NR) print ""; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2 }'; }
med() { [ -s "$work/res/$1" ] && median <"$work/res/$1"; }
range() { [ -s "$work/res/$1" ] && sort -n "$work/res/$1" | sed -n '1p;$p' | paste -sd- ; }
row() { # TITLE godwit qemu
  awk -v n="$1" -v g="$2" -v q="$3" 'BEGIN{
    gs = (g == "") ? "n/a" : g; qs = (q == "") ? "n/a" : q
    gq = (g == "" || q == "" || q == 0) ? "n/a" : sprintf("%.2f", g / q)
    printf "| %s | %s | %s | %s |\n", n, gs, qs, gq }'
}

table() {
  echo "command: $(printf '%q ' env BENCH_EXEC_N="$exec_n" BENCH_CP_MIB="$cp_mib" BENCH_CP_RUNS="$cp_runs" \
    BENCH_MEM="$mem" BENCH_OUT_MIB="$out_mib" BENCH_STREAM_MIB="$stream_mib" BENCH_STREAM_RUNS="$stream_runs" \
    bench/agent.sh "$build")${GODWIT_IN_TESTHOST:+(inside tools/testhost/testhost.sh)}"
  echo
  echo "godwit $(git -C "$root" describe --always --dirty 2>/dev/null) against $(qemu-system-x86_64 --version | head -n 1)" \
    "and qemu-ga $(basename "$(compgen -G "${GODWIT_CACHE:-$HOME/.cache/godwit}/bench/qemu-guest-agent/*.deb" | head -n 1)" .deb | sed 's/^qemu-guest-agent_//; s/%3a/:/');" \
    "$elapsed s in all"
  echo "guest: $kernel_package bzImage, $(basename "$agent_initrd"), 1 vCPU, $mem MiB; host: $(uname -r), $(nproc) CPUs"
  echo
  echo "| metric | godwit | QEMU (qemu-ga) | godwit/QEMU |"
  echo "|---|---|---|---|"
  row "exec \`true\` round trip, median of $exec_n (ms, lower is better)" "$(med godwit.exec)" "$(med qemu.exec)"
  echo "| exec round trip, fastest-slowest (ms) | $(range godwit.exec) | $(range qemu.exec) | |"
  row "exec \`true\` round trip without the CLI, median of $exec_n (ms, lower is better)" "$(med godwit.api)" "$(med qemu.exec)"
  row "copy $cp_mib MiB into the guest's /tmp, median of $cp_runs (MB/s)" "$(med godwit.cp)" "$(med qemu.cp)"
  row "a command's stdout, $out_mib MiB of \`head -c\`, median of $stream_runs (MB/s)" "$(med godwit.out)" "$(med qemu.out)"
  row "vsock stream guest to host, $stream_mib MiB, median of $stream_runs (MB/s)" "$(med godwit.g2h)" ""
  row "vsock stream host to guest, $stream_mib MiB, median of $stream_runs (MB/s)" "$(med godwit.h2g)" ""
  echo
  echo "godwit's exec round trip on its vsock socket, no API, no CLI (bench/vsock_bench.py steps, medians of $exec_n, ms):"
  echo
  echo "| connect (CONNECT 1024, OK) | + PING, OK | exec true, OK then end of stdin (the old client) | exec true, end of stdin with the request (now) | exec true, CONNECT line and request in one write |"
  echo "|---|---|---|---|---|"
  echo "| $(med godwit.step_connect) | $(med godwit.step_ping) | $(med godwit.step_exec_seq) | $(med godwit.step_exec) | $(med godwit.step_exec_pipe) |"
  echo
  echo "godwit: $(mapfile -d '' c < <(godwit_cmd); printf '%q ' "${c[@]}")"
  echo "        godwit exec API -- true; godwit cp FILE API:/tmp/x (wall time of each command)"
  echo "        without the CLI: bench/api_exec.py API $exec_n (PUT /vm/agent/exec {\"argv\": [\"true\"]}, a connection each)"
  echo "        stdout: godwit exec API -- sh -c \"head -c $out_bytes /dev/zero\" | wc -c (the whole command)"
  echo "        vsock streams: bench/vsock_bench.py VSOCK g2h 5000 $stream_mib; bench/vsock_bench.py VSOCK h2g 5001 $stream_mib (guest: /usr/bin/vsock-stream)"
  echo "qemu:   $(mapfile -d '' c < <(qemu_cmd); printf '%q ' "${c[@]}")"
  echo "        bench/qga.py QGA exec $exec_n; bench/qga.py QGA write FILE /tmp/x (guest-exec + guest-exec-status; guest-file-open/write/close, 1 MiB chunks)"
  echo "        stdout: bench/qga.py QGA execout $out_bytes (guest-exec sh -c \"head -c $out_bytes /dev/zero\", capture-output; guest-exec-status until exited)"
}

out=${BENCH_OUT:-}
[ -z "$out" ] && [ -n "${GODWIT_TESTHOST_RESULTS:-}" ] && out=$GODWIT_TESTHOST_RESULTS/agent-$(date -u +%Y%m%dT%H%M%SZ).md
echo
table | { if [ -n "$out" ]; then tee "$out"; else cat; fi; }
if [ -n "$out" ]; then
  mkdir -p "${out%.md}.logs" && cp "$work"/*.log "${out%.md}.logs/" 2>/dev/null
  echo "bench: table written to $out, the consoles to ${out%.md}.logs/" >&2
fi
[ -s "$work/res/godwit.exec" ] && [ -s "$work/res/qemu.exec" ]
