#!/usr/bin/env bash
# run-devices.sh: the virtio devices under the stock Debian kernel and its own drivers: disks,
# network, console, rng. Each guest runs a shell script the host hands it on a disk
# (godwit.test=script, see guests/build-guest.sh) and the host checks the results itself.
# Needs a /dev/kvm that runs unmodified kernels (tools/run-tests.sh runs it in the test host).
# Usage: tests/e2e/run-devices.sh BUILD_DIR [io|state]: every case, or one group of them.
set -uo pipefail

build=${1:?usage: run-devices.sh BUILD_DIR [io|state]}
# Two groups, which CI runs in test-host boots of their own (tools/run-tests.sh): a test host
# that freezes costs the rerun of its group, not of all the cases.
io_cases="disk_bad_options disk_filesystem disk_readonly disk_locked disk_reboot console console_socket console_file net net_poll net_queues io_poll rng vsock vsock_flood"
state_cases="snapshot pause_quiet migrate migrate_local"
case ${2:-all} in
  all) default_cases="$io_cases $state_cases" ;;
  io) default_cases=$io_cases ;;
  state) default_cases=$state_cases ;;
  *) echo "devices: unknown group '$2' (io or state)"; exit 2 ;;
esac
godwit=$(readlink -f "$build/godwit")
vsock_peer=$(readlink -f "$build/tests/e2e/vsock-peer") # the vsock case's guest program
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=$(mktemp -d /tmp/godwit-devices.XXXXXX)
trap 'keep_logs; rm -rf "$work"' EXIT

eval "$("$root/guests/build-guest.sh" --print)" || { echo "devices: default guest not built (guests/build-guest.sh)"; exit 2; }
[ -c /dev/kvm ] || { echo "devices: /dev/kvm missing"; exit 2; }
command -v debugfs >/dev/null || { echo "devices: debugfs (e2fsprogs) missing"; exit 2; }

. "$here/lib.sh"

cmdline="console=ttyS0 reboot=acpi panic=1 quiet godwit.test=script"
common=(--kernel "$kernel_bzimage" --initrd "$initrd" --memory 256)

# script_disk NAME: the guest script read from stdin, as a disk image padded with newlines
# to whole sectors; prints the --disk argument that hands it to the guest.
script_disk() {
  local img=$work/$1.script
  cat >"$img"
  local size pad
  size=$(stat -c %s "$img")
  pad=$(( (512 - size % 512) % 512 ))
  head -c "$pad" /dev/zero | tr '\0' '\n' >>"$img"
  echo "path=$img,readonly=on,serial=godwit-script"
}

# wait_for_listening PORT...: until something listens on each TCP port, 30 s at most. Python
# starts slowly in the test host, more slowly than a guest boots: the guest's first connection
# must find the host's side listening.
wait_for_listening() {
  local port _ missing
  for _ in $(seq 1 300); do
    missing=0
    for port in "$@"; do
      ss -Hltn "sport = :$port" | grep -q . || missing=1
    done
    [ "$missing" = 0 ] && return 0
    sleep 0.1
  done
  return 1
}

# run_guest NAME TIMEOUT [godwit run args...]: output in $work/NAME.log, status in $status,
# under the progress watchdog (lib.sh).
run_guest() {
  local name=$1 secs=$2; shift 2
  run_watched "$name" "$secs" "$godwit" run "${common[@]}" --cmdline "$cmdline" "$@"
}

# stop_within SECS PID NAME: SIGINT must end the VMM within SECS; if not, the test fails
# with what each of its threads waits on, and the VMM is killed.
stop_within() {
  local secs=$1 pid=$2 name=$3 vmm
  vmm=$(pgrep -P "$pid" -x godwit | head -n 1)
  kill -INT "${vmm:-$pid}" 2>/dev/null
  for _ in $(seq 1 $((secs * 10))); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid"; return 0; }
    sleep 0.1
  done
  local t threads=
  for t in /proc/"$vmm"/task/*; do
    threads+=" $(cat "$t/comm" 2>/dev/null):$(cat "$t/wchan" 2>/dev/null)"
  done
  kill -KILL "$pid" "$vmm" 2>/dev/null
  wait "$pid"
  fail "$name" "SIGINT did not stop the VMM within ${secs}s; threads:$threads"
  return 1
}

# The guest makes an ext4 filesystem on vda, copies a source disk (vdc, random bytes from
# the host) into a file and writes small files, syncs and powers off. The host then reads
# the filesystem itself (debugfs) and compares every byte with what it gave the guest.
# A second boot checks the files are still there (mounted read-only).
case_disk_filesystem() {
  local name=disk_filesystem data=$work/fs.img src=$work/source.img
  truncate -s 128M "$data"
  head -c $((6 * 1024 * 1024)) /dev/urandom >"$src"
  local script
  script=$(script_disk $name <<'EOF'
set -e
mke2fs -q -b 4096 /dev/vda
mkdir -p /mnt && mount -t ext4 /dev/vda /mnt
dd if=/dev/vdc of=/mnt/big bs=65536 2>/dev/null
for i in 1 2 3 4 5; do echo "small file $i $(seq 1 $((i * 100)) | md5sum)" >/mnt/small$i; done
mkdir /mnt/dir && echo nested >/mnt/dir/n
sync
umount /mnt
echo "guest: wrote $(cat /sys/block/vdc/size) sectors"
EOF
)
  run_guest $name 240 --disk "path=$data,serial=data" --disk "$script" \
    --disk "path=$src,readonly=on,serial=source"
  expect_status $name 0 && expect_line $name 'script exit status 0' && expect_clean $name || return
  # The disks did their I/O through guest RAM registered whole with io_uring, not only through
  # the few MiB that RLIMIT_MEMLOCK lets a ring pin when it was made without CAP_IPC_LOCK.
  ! grep -q 'guest RAM not registered' "$work/$name.log" ||
    { fail $name "$(grep -m1 'guest RAM not registered' "$work/$name.log")"; return; }
  debugfs -R "dump /big $work/big.out" "$data" >/dev/null 2>&1
  cmp -s "$src" "$work/big.out" || { fail $name "the file read back on the host differs from its source"; return; }
  local i want got
  for i in 1 2 3 4 5; do
    want="small file $i $(seq 1 $((i * 100)) | md5sum)"
    got=$(debugfs -R "cat /small$i" "$data" 2>/dev/null)
    [ "$got" = "$want" ] || { fail $name "small$i reads '$got' on the host"; return; }
  done
  e2fsck -fn "$data" >"$work/$name.fsck" 2>&1 || { fail $name "e2fsck finds the filesystem damaged"; return; }

  local name2=disk_persists
  script=$(script_disk $name2 <<'EOF'
mkdir -p /mnt && mount -t ext4 -o ro /dev/vda /mnt && cat /mnt/dir/n && md5sum /mnt/big
EOF
)
  run_guest $name2 240 --disk "path=$data,readonly=on" --disk "$script"
  local sum
  sum=$(md5sum <"$src" | cut -d' ' -f1)
  expect_status $name2 0 && expect_line $name2 '^nested' && expect_line $name2 "^$sum " &&
    expect_clean $name2 && pass $name
}

# A read-only disk: the guest sees it read-only and writes do not reach the image.
case_disk_readonly() {
  local name=disk_readonly img=$work/ro.img
  head -c $((4 * 1024 * 1024)) /dev/urandom >"$img"
  local before script
  before=$(md5sum <"$img")
  script=$(script_disk $name <<'EOF'
echo "ro=$(cat /sys/block/vda/ro)"
blockdev --setrw /dev/vda 2>/dev/null
if dd if=/dev/zero of=/dev/vda bs=4096 count=16 oflag=direct 2>/dev/null; then echo "write accepted"; else echo "write refused"; fi
sync
EOF
)
  run_guest $name 240 --disk "path=$img,readonly=on" --disk "$script"
  expect_status $name 0 && expect_line $name '^ro=1' && expect_line $name '^write refused' &&
    expect_clean $name || return
  [ "$(md5sum <"$img")" = "$before" ] || { fail $name "the read-only image changed"; return; }
  pass $name
}

# A second VM on a disk another VM has open for writing is refused, with one clear line.
case_disk_locked() {
  local name=disk_locked img=$work/locked.img
  truncate -s 16M "$img"
  local script
  script=$(script_disk ${name}_first <<'EOF'
echo "first guest holds the disk"
sleep 600
EOF
)
  timeout -k 5 300 "$godwit" run "${common[@]}" --cmdline "$cmdline" \
    --disk "path=$img" --disk "$script" </dev/null >"$work/${name}_first.log" 2>&1 &
  local pid=$!
  wait_for_line "$work/${name}_first.log" 'first guest holds the disk' "$pid" 180
  run_guest $name 60 --disk "path=$img"
  local second=$status
  stop_within 60 "$pid" ${name}_first || return
  status=$second
  expect_status $name 1 && expect_line $name "error: virtio-blk: $img is in use by another VM" &&
    expect_clean $name && pass $name
}

# A guest reboot rebuilds the VM in the same process: the disk is closed, unlocked, opened
# and locked again, and what the first boot wrote is there for the second.
case_disk_reboot() {
  local name=disk_reboot img=$work/reboot.img script
  truncate -s 8M "$img"
  script=$(script_disk $name <<'EOF'
if [ "$(head -c 11 /dev/vda)" = "first boot!" ]; then
  echo "second boot sees the first boot's write"
else
  printf 'first boot!' | dd of=/dev/vda conv=fsync 2>/dev/null
  echo "first boot wrote its mark; rebooting"
  reboot -f
fi
EOF
)
  run_guest $name 300 --disk "path=$img" --disk "$script"
  expect_status $name 0 && expect_line $name 'first boot wrote its mark' &&
    expect_line $name 'guest rebooted: restarting' &&
    expect_line $name '^second boot sees the first boot' && expect_clean $name && pass $name
}

# Bad device options end with one line naming the problem and status 2 (usage) or 1.
case_disk_bad_options() {
  local name=disk_bad_options
  run_guest $name 30 --disk "path=$work/absent.img"
  expect_status $name 1 && expect_line $name "error: virtio-blk: cannot open $work/absent.img" || return
  run_guest $name 30 --disk "path=$work/x,cache=sometimes"
  expect_status $name 2 && expect_line $name "error: --disk: 'cache': must be none or writeback" &&
    expect_clean $name && pass $name
}

# The guest's entropy comes from virtio-rng: the kernel picks it as its hardware RNG.
case_rng() {
  local name=rng script
  script=$(script_disk $name <<'EOF'
echo "rng=$(cat /sys/class/misc/hw_random/rng_current)"
echo "bytes=$(head -c 4096 /dev/hwrng | wc -c)"
EOF
)
  run_guest $name 240 --disk "$script"
  expect_status $name 0 && expect_line $name '^rng=virtio_rng' && expect_line $name '^bytes=4096' &&
    expect_clean $name && pass $name
}

# An interface without queues=N gets one queue pair per vCPU: on a tap godwit makes (multi-
# queue), the guest of two vCPUs sees two pairs. On a single-queue tap that already exists
# (which takes no second queue) it gets one, and godwit says why.
case_net_queues() {
  local name=net_queues script
  ip link del gwmq0 2>/dev/null
  ip tuntap add dev gwsq0 mode tap || { fail $name "cannot create tap gwsq0"; return; }
  script=$(script_disk $name <<'EOF'
for i in /sys/class/net/eth*; do echo "${i##*/} queues: $(ls $i/queues | tr '\n' ' ')"; done
EOF
)
  run_guest $name 240 --cpus 2 --net tap=gwmq0 --net tap=gwsq0 --disk "$script"
  ip link del gwsq0
  # The serial console ends lines with CR LF: the trailing space ends each list instead.
  expect_status $name 0 && expect_line $name '^eth0 queues: rx-0 rx-1 tx-0 tx-1 ' &&
    expect_line $name '^eth1 queues: rx-0 tx-0 ' &&
    expect_line $name 'tap gwsq0 is single-queue: one queue pair for the 2 vCPUs' &&
    expect_clean $name && pass $name
}

# --io-poll: the main loop polls the disk's queue. 4 MiB copied in 4 KiB direct writes from
# one disk to another land whole, polling found the guest's requests (vda's `polled`
# counter, read while the guest waits, and the loop's windows that found work), the window
# stayed within its cap, and the guest reads back what it wrote. The cap is the most godwit
# takes: in the test host a guest's turnaround is near a millisecond, and a window adapts to
# it only when the cap covers it.
case_io_poll() {
  local name=io_poll data=$work/poll.img src=$work/poll-source.img script
  truncate -s 16M "$data"
  head -c $((4 * 1024 * 1024)) /dev/urandom >"$src"
  script=$(script_disk $name <<'EOF'
dd if=/dev/vdc of=/dev/vda bs=4096 oflag=direct 2>/dev/null
echo "copied $(head -c 4194304 /dev/vda | md5sum)"
sleep 5
EOF
)
  start_watched $name 240 "$godwit" run "${common[@]}" --cmdline "$cmdline" --io-poll 1000 \
    --disk "path=$data,cache=none" --disk "$script" --disk "path=$src,readonly=on"
  local ok=1 polled
  if wait_for_line "$work/$name.log" '^copied ' "$vm_pid" 180; then
    polled=$(curl -s --unix-socket "$work/$name.log.api" http://localhost/vm/counters |
      python3 -c 'import json, sys; c = json.load(sys.stdin); d = c["devices"]["vda"]; p = c["io_poll"]
print(d.get("polled", 0), p["hits"], d["kicks"], d["writes"], p["misses"], p["window_us"], p["max_us"])
assert 0 <= p["window_us"] <= p["max_us"] == 1000, p') ||
      { ok=0; fail $name "the loop's polling counters are missing or its window is past the cap"; }
    echo "io_poll: vda polled, loop hits, kicks, writes, loop misses, window_us, max_us: $polled"
    set -- $polled
    [ "${1:-0}" -gt 0 ] && [ "${2:-0}" -gt 0 ] ||
      { ok=0; fail $name "polling found none of vda's requests (polled, hits: '$1 $2')"; }
  else
    ok=0; fail $name "the guest did not copy"
  fi
  finish_watched $name
  local sum
  sum=$(md5sum <"$src" | cut -d' ' -f1)
  expect_status $name 0 && expect_line $name "^copied $sum " && expect_clean $name || return
  [ "$(head -c $((4 * 1024 * 1024)) "$data" | md5sum | cut -d' ' -f1)" = "$sum" ] ||
    { fail $name "the image does not hold what the guest copied"; return; }
  [ $ok -eq 1 ] && pass $name
}

# --console virtio,file=PATH: what the guest writes to hvc0 is appended to the file.
case_console_file() {
  local name=console_file out=$work/hvc.out script
  echo "kept line" >"$out"
  script=$(script_disk $name <<'EOF'
echo "hvc file line $((6 * 7))" >/dev/hvc0
EOF
)
  run_guest $name 240 --console "virtio,file=$out" --disk "$script"
  expect_status $name 0 && expect_clean $name || return
  # Not anchored: the shell init starts on hvc0 may have left its prompt on the same line.
  grep -q '^kept line' "$out" && grep -q 'hvc file line 42' "$out" ||
    { fail $name "the file holds: $(head -c 300 "$out")"; return; }
  pass $name
}

# The guest reaches the test host over virtio-net through a tap: ping, then a TCP transfer
# each way, checked byte for byte (guest to host: the host compares what it received with
# the source disk it gave the guest; host to guest: the guest prints the checksum of what
# it received).
case_net() { net_transfer net gwtap0; }

# The same with the main loop polling the transmit queue (--io-poll), a path the guest takes
# without kicks: polling must have found its packets (net0's `polled`, read while the guest
# lingers after the transfers), and every byte must arrive.
case_net_poll() { net_transfer net_poll gwtap2 500; }

net_transfer() { # NAME TAP [POLL_US: run with --io-poll POLL_US, and check that it polled]
  local name=$1 tap=$2 poll_us=${3:-} src=$work/$1-source.img
  head -c $((8 * 1024 * 1024)) /dev/urandom >"$src"
  ip tuntap add dev $tap mode tap || { fail $name "cannot create tap $tap"; return; }
  ip addr add 10.0.2.1/24 dev $tap && ip link set $tap up
  # The receiver must not half-close its side (busybox nc does at the end of its stdin),
  # or the guest's nc stops sending.
  python3 -c '
import socket, sys
srv = socket.create_server(("10.0.2.1", 5000))
conn, _ = srv.accept()
with open(sys.argv[1], "wb") as out:
    while chunk := conn.recv(65536):
        out.write(chunk)
' "$work/$name-received" &
  local rx_pid=$!
  busybox nc -l -p 5001 <"$src" &
  local tx_pid=$!
  wait_for_listening 5000 5001
  local script
  script=$( { cat <<'EOF'
ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0
echo "mac=$(cat /sys/class/net/eth0/address) carrier=$(cat /sys/class/net/eth0/carrier)"
ping -c 3 -W 5 10.0.2.1 >/tmp/ping && echo "ping ok"
dd if=/dev/vdb bs=65536 2>/dev/null | nc 10.0.2.1 5000 && echo "sent"
echo "received $(nc 10.0.2.1 5001 | md5sum)"
EOF
    [ -z "$poll_us" ] || echo "sleep 5"; } | script_disk $name)
  start_watched $name 240 "$godwit" run "${common[@]}" --cmdline "$cmdline" \
    --net "tap=$tap,mac=52:54:00:12:34:56" --disk "$script" --disk "path=$src,readonly=on" \
    ${poll_us:+--io-poll "$poll_us"}
  local ok=1 polled
  if [ -n "$poll_us" ] && wait_for_line "$work/$name.log" '^received ' "$vm_pid" 200; then
    polled=$(curl -s -m 10 --unix-socket "$work/$name.log.api" http://localhost/vm/counters |
      python3 -c 'import json, sys; print(json.load(sys.stdin)["devices"]["net0"]["polled"])')
    echo "$name: net0's requests found by polling: ${polled:-none}"
    [ "${polled:-0}" -gt 0 ] || { ok=0; fail $name "polling found none of the guest's packets ('$polled')"; }
  fi
  finish_watched $name
  kill $rx_pid $tx_pid 2>/dev/null
  wait $rx_pid $tx_pid 2>/dev/null
  ip link del $tap
  local sum
  sum=$(md5sum <"$src" | cut -d' ' -f1)
  expect_status $name 0 && expect_line $name '^mac=52:54:00:12:34:56 carrier=1' &&
    expect_line $name '^ping ok' && expect_line $name '^sent' &&
    expect_line $name "^received $sum " && expect_clean $name || return
  cmp -s "$src" "$work/$name-received" || { fail $name "the host received $(stat -c %s "$work/$name-received") bytes that differ from the source: $(cmp "$src" "$work/$name-received" 2>&1 | head -n 1)"; return; }
  [ $ok -eq 1 ] && pass $name
}

# Disk and network at once, for $GODWIT_STRESS_S seconds (default 120): the guest writes
# mixed sizes (4 KiB to 1 MiB, direct I/O) to vda and reads each back against its source,
# while it makes short and long TCP connections both ways through the tap, each checked by
# checksum. Two devices' interrupts and kicks interleave the whole time; a lost one stalls
# the guest and the progress watchdog says which queue waited. In the test host this load
# breaks the test host itself, whichever the VMM (docs/testing.md): it is run on demand
# (GODWIT_DEVICE_CASES=stress), on one vCPU, where it fails least (GODWIT_STRESS_CPUS=2 for two).
case_stress() {
  local name=stress tap=gwtap1 src=$work/stress-source.img secs=${GODWIT_STRESS_S:-120}
  head -c $((8 * 1024 * 1024)) /dev/urandom >"$src"
  truncate -s 64M "$work/stress-disk.img"
  ip tuntap add dev $tap mode tap || { fail $name "cannot create tap $tap"; return; }
  ip addr add 10.0.3.1/24 dev $tap && ip link set $tap up
  # Port 5000 answers each upload with its md5 once the guest has sent it all; port 5001
  # sends the first 4 MiB of the source to each connection. Threads: connections overlap.
  python3 -c '
import hashlib, socket, sys, threading
data = open(sys.argv[1], "rb").read()[: 4 << 20]
def upload(c):
    h = hashlib.md5()
    while chunk := c.recv(65536):
        h.update(chunk)
    c.sendall(h.hexdigest().encode() + b"\n")
    c.close()
def download(c):
    c.sendall(data)
    c.close()
def serve(port, fn):
    srv = socket.create_server(("10.0.3.1", port), backlog=64)
    while True:
        c, _ = srv.accept()
        threading.Thread(target=fn, args=(c,), daemon=True).start()
threading.Thread(target=serve, args=(5000, upload), daemon=True).start()
serve(5001, download)
' "$src" &
  local srv_pid=$!
  wait_for_listening 5000 5001
  local script
  script=$({ echo "secs=$secs"; cat <<'EOF'; } | script_disk $name
ip link set eth0 up && ip addr add 10.0.3.15/24 dev eth0
now() { cut -d. -f1 /proc/uptime; }
end=$(( $(now) + secs ))
sum() { md5sum | cut -d' ' -f1; }
disk() {
  r=0
  while [ "$(now)" -lt "$end" ]; do
    r=$((r + 1))
    for bs in 4096 65536 1048576; do
      n=$((4194304 / bs)) at=$(( (r % 8) * 4194304 / bs ))
      dd if=/dev/vdc of=/dev/vda bs=$bs count=$n seek=$at oflag=direct 2>/dev/null ||
        { echo "disk: round $r bs $bs: write failed"; return 1; }
      got=$(dd if=/dev/vda bs=$bs count=$n skip=$at iflag=direct 2>/dev/null | sum)
      want=$(dd if=/dev/vdc bs=$bs count=$n 2>/dev/null | sum)
      [ "$got" = "$want" ] || { echo "disk: round $r bs $bs: read back differs"; return 1; }
    done
  done
  echo "disk: $r rounds ok"
}
net() {
  r=0 down=$(dd if=/dev/vdc bs=1048576 count=4 2>/dev/null | sum)
  while [ "$(now)" -lt "$end" ]; do
    r=$((r + 1))
    for kib in 1 4096 16 1024; do
      want=$(dd if=/dev/vdc bs=1024 count=$kib 2>/dev/null | sum)
      got=$(dd if=/dev/vdc bs=1024 count=$kib 2>/dev/null | nc 10.0.3.1 5000)
      [ "$got" = "$want" ] || { echo "net: round $r: upload of $kib KiB answered '$got'"; return 1; }
    done
    got=$(nc 10.0.3.1 5001 | sum)
    [ "$got" = "$down" ] || { echo "net: round $r: download differs"; return 1; }
  done
  echo "net: $r rounds ok"
}
disk & d=$!
net & n=$!
wait $d; ds=$?
wait $n; ns=$?
echo "stress: disk $ds net $ns"
EOF
)
  run_guest $name $((secs + 300)) --cpus "${GODWIT_STRESS_CPUS:-1}" --net "tap=$tap" --disk "path=$work/stress-disk.img" \
    --disk "$script" --disk "path=$src,readonly=on"
  kill $srv_pid 2>/dev/null
  wait $srv_pid 2>/dev/null
  ip link del $tap
  expect_status $name 0 && expect_line $name '^disk: [0-9]+ rounds ok' &&
    expect_line $name '^net: [0-9]+ rounds ok' && expect_line $name '^stress: disk 0 net 0' &&
    expect_clean $name && pass $name
}

# hvc_session_script NAME: a guest script (on the serial console) that waits for a shell
# session on hvc0 to write its tty's name to /tmp/hvc-done, then reports it.
hvc_session_script() {
  script_disk "$1" <<'EOF'
i=0
while [ ! -s /tmp/hvc-done ] && [ $i -lt 900 ]; do sleep 0.1; i=$((i + 1)); done
echo "session on $(cat /tmp/hvc-done 2>/dev/null)"
EOF
}

# --console virtio: the terminal's input goes to the guest's hvc0, where init runs a shell;
# its output comes back on the terminal. The script (on the serial console) waits for the
# shell session to leave its mark.
case_console() {
  local name=console fifo=$work/console.in
  local script
  script=$(hvc_session_script $name)
  mkfifo "$fifo"
  timeout -k 5 240 "$godwit" run "${common[@]}" --cmdline "$cmdline" --console virtio \
    --disk "$script" <"$fifo" >"$work/$name.log" 2>&1 &
  local pid=$!
  exec 7>"$fifo"
  wait_for_line "$work/$name.log" 'godwit-guest: shell on hvc0' "$pid" 180
  sleep 1
  printf 'echo "hvc says $((6 * 7))"; tty >/tmp/hvc-done\n' >&7
  wait "$pid"
  status=$?
  exec 7>&-
  expect_status $name 0 && expect_line $name '^hvc says 42' &&
    expect_line $name 'session on /dev/hvc0' && expect_clean $name && pass $name
}

# --console virtio,socket=PATH: a client on the UNIX socket gets the hvc0 shell.
case_console_socket() {
  local name=console_socket sock=$work/hvc.sock script
  script=$(hvc_session_script $name)
  timeout -k 5 240 "$godwit" run "${common[@]}" --cmdline "$cmdline" \
    --console "virtio,socket=$sock" --disk "$script" </dev/null >"$work/$name.log" 2>&1 &
  local pid=$!
  wait_for_line "$work/$name.log" 'godwit-guest: shell on hvc0' "$pid" 180
  python3 - "$sock" >"$work/$name.client" 2>&1 <<'EOF'
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
s.settimeout(60)
s.sendall(b'\necho "hvc says $((6 * 7))"; tty >/tmp/hvc-done\n')
got = b''
deadline = time.time() + 60
while b'hvc says 42' not in got and time.time() < deadline:
    chunk = s.recv(4096)
    if not chunk:
        break
    got += chunk
sys.stdout.write(got.decode(errors='replace'))
EOF
  wait "$pid"
  status=$?
  expect_status $name 0 && expect_line $name 'session on /dev/hvc0' && expect_clean $name || return
  grep -q '^hvc says 42' "$work/$name.client" || { fail $name "the socket client did not get the shell's output"; return; }
  pass $name
}

# virtio-vsock with the kernel's own driver: the guest gets vsock-peer (tests/e2e/guest) and,
# when its initramfs lacks them, the kernel's vsock modules, in a tar on a disk. Host programs
# connect to guest port 1234 through the VM's socket (CONNECT, OK) and get their random bytes
# echoed back, one 4 MiB connection and 16 small ones at once; then the guest connects to host
# port 5000 (a listener at <socket>_5000) as many times, and each side checks the other's CRC.
vsock_guest_script() {
  script_disk "$1" <<'EOF'
for b in /sys/block/vd*; do [ "$(cat $b/serial 2>/dev/null)" = godwit-vsock ] && d=/dev/${b##*/}; done
mkdir -p /tmp/v && tar -xf "$d" -C /tmp/v && echo "payload ok"
for m in vsock vmw_vsock_virtio_transport_common vmw_vsock_virtio_transport; do
  [ -d /sys/module/$m ] || insmod /tmp/v/$m.ko || echo "insmod $m failed"
done
/tmp/v/vsock-peer cid
/tmp/v/vsock-peer echo 1234 17 &
wait $! && echo "echo exit ok"
/tmp/v/vsock-peer send 5000 4194304 1
for i in $(seq 2 17); do /tmp/v/vsock-peer send 5000 65536 $i & done
wait
echo "guest sends done"
EOF
}

case_vsock() {
  local name=vsock sock=$work/vsock.sock peer=$vsock_peer script m
  [ -x "$peer" ] || { fail $name "$peer missing (built with the tests)"; return; }
  mkdir -p "$work/vsock-payload" && cp "$peer" "$work/vsock-payload/"
  for m in vsock vmw_vsock_virtio_transport_common vmw_vsock_virtio_transport; do
    cp "$modules_dir/kernel/net/vmw_vsock/$m.ko" "$work/vsock-payload/" ||
      { fail $name "no $m.ko in $modules_dir"; return; }
  done
  tar -cf "$work/vsock.tar" -C "$work/vsock-payload" . || { fail $name "cannot make the payload"; return; }
  python3 "$here/vsock_host.py" serve "${sock}_5000" 17 >"$work/$name.serve" 2>&1 &
  local serve_pid=$!
  # Listening before the guest boots: a guest that connects first is refused (the VMM's boot
  # is shorter than python's start in the test host).
  wait_for_line "$work/$name.serve" '^listening' "$serve_pid" 60 ||
    { fail $name "the host's listener did not start: $(head -c 300 "$work/$name.serve")"; return; }
  script=$(vsock_guest_script $name)
  start_watched $name 300 "$godwit" run "${common[@]}" --cmdline "$cmdline" \
    --vsock "cid=3,socket=$sock" --disk "$script" \
    --disk "path=$work/vsock.tar,readonly=on,serial=godwit-vsock"
  if wait_for_line "$work/$name.log" 'vsock-peer: listening on 1234' "$vm_pid" 200; then
    timeout 200 python3 "$here/vsock_host.py" connect "$sock" 1234 $((4 << 20)) 65536 16 \
      >"$work/$name.host" 2>&1
  fi
  finish_watched $name
  kill $serve_pid 2>/dev/null
  wait $serve_pid 2>/dev/null
  expect_status $name 0 && expect_line $name '^cid 3' && expect_line $name '^echo done 17 failed 0' &&
    expect_line $name '^guest sends done' && expect_clean $name || return
  grep -q '^host ok 17' "$work/$name.host" ||
    { fail $name "host to guest: $(head -c 600 "$work/$name.host")"; return; }
  grep -q '^served 17' "$work/$name.serve" ||
    { fail $name "guest to host: $(head -c 600 "$work/$name.serve")"; return; }
  local sends
  sends=$(grep -c '^send ok' "$work/$name.log")
  [ "$sends" = 17 ] || { fail $name "$sends of 17 guest connections were right"; return; }
  pass $name
}

# A guest that floods: 100 connections to a host listener that never reads, each written to
# until its credit runs out, then 300 more connections at once, held for 30 s. godwit holds at
# most the credit it gave (256 KiB a connection), refuses connections past 128, the API
# answers throughout, and a host program's connection to the guest echoes 1 MiB during the
# first flood and 4 KiB once the second one is gone.
vsock_flood_script() {
  script_disk "$1" <<'EOF'
for b in /sys/block/vd*; do [ "$(cat $b/serial 2>/dev/null)" = godwit-vsock ] && d=/dev/${b##*/}; done
mkdir -p /tmp/v && tar -xf "$d" -C /tmp/v
for m in vsock vmw_vsock_virtio_transport_common vmw_vsock_virtio_transport; do
  [ -d /sys/module/$m ] || insmod /tmp/v/$m.ko || echo "insmod $m failed"
done
/tmp/v/vsock-peer flood 6000 100 4194304 &
f1=$!
/tmp/v/vsock-peer echo 1234 1
/tmp/v/vsock-peer flood 6001 300 0 &
f2=$!
sleep 30
kill $f2
/tmp/v/vsock-peer echo 1235 1
kill $f1
echo "flood done"
EOF
}

# vsock_counters SOCK OUT: the vsock0 counters through the API, as "key value" lines.
vsock_counters() {
  curl -s -m 20 --unix-socket "$1" http://localhost/vm/counters |
    python3 -c 'import json, sys; [print(k, v) for k, v in json.load(sys.stdin)["devices"]["vsock0"].items() if not isinstance(v, list)]' >"$2"
}

case_vsock_flood() {
  local name=vsock_flood sock=$work/flood.sock script m
  mkdir -p "$work/vsock-payload" && cp "$vsock_peer" "$work/vsock-payload/" ||
    { fail $name "$vsock_peer missing (built with the tests)"; return; }
  for m in vsock vmw_vsock_virtio_transport_common vmw_vsock_virtio_transport; do
    cp "$modules_dir/kernel/net/vmw_vsock/$m.ko" "$work/vsock-payload/" ||
      { fail $name "no $m.ko in $modules_dir"; return; }
  done
  tar -cf "$work/vsock.tar" -C "$work/vsock-payload" . || { fail $name "cannot make the payload"; return; }
  # A second run of the case in one suite finds the first's sockets: the sink could not bind.
  rm -f "${sock}_6000" "${sock}_6001"
  python3 "$here/vsock_host.py" sink "${sock}_6000" "${sock}_6001" >"$work/$name.sink" 2>&1 &
  local sink_pid=$!
  wait_for_line "$work/$name.sink" '^listening' "$sink_pid" 60 ||
    { fail $name "the host's sink did not start: $(head -c 300 "$work/$name.sink")"; return; }
  script=$(vsock_flood_script $name)
  start_watched $name 300 "$godwit" run "${common[@]}" --cmdline "$cmdline" \
    --vsock "cid=3,socket=$sock" --disk "$script" \
    --disk "path=$work/vsock.tar,readonly=on,serial=godwit-vsock"
  local log=$work/$name.log
  if wait_for_line "$log" '^flood 6000 connected' "$vm_pid" 200 &&
    wait_for_line "$log" 'vsock-peer: listening on 1234' "$vm_pid" 60; then
    timeout 120 python3 "$here/vsock_host.py" connect "$sock" 1234 $((1 << 20)) 0 0 >"$work/$name.host" 2>&1
    vsock_counters "$log.api" "$work/$name.first"
    if wait_for_line "$log" '^flood 6001 connected' "$vm_pid" 120; then
      vsock_counters "$log.api" "$work/$name.second"
      grep -E '^VmRSS' /proc/"$(pgrep -P "$vm_pid" -x godwit | head -n 1)"/status >"$work/$name.rss" 2>/dev/null
      wait_for_line "$log" 'vsock-peer: listening on 1235' "$vm_pid" 120 &&
        timeout 60 python3 "$here/vsock_host.py" connect "$sock" 1235 4096 0 0 >>"$work/$name.host" 2>&1
    fi
  fi
  finish_watched $name
  kill $sink_pid 2>/dev/null
  wait $sink_pid 2>/dev/null
  expect_status $name 0 && expect_line $name '^flood 6000 connected 100 refused 0' &&
    expect_line $name '^flood done' && expect_clean $name || return
  [ "$(grep -c '^host ok 1' "$work/$name.host")" = 2 ] ||
    { fail $name "host connections during the flood: $(head -c 600 "$work/$name.host")"; return; }
  local buffered conns refused
  buffered=$(awk '$1 == "buffered_bytes" { print $2 }' "$work/$name.first")
  conns=$(awk '$1 == "conns" { print $2 }' "$work/$name.second")
  refused=$(awk '$1 == "conns_refused" { print $2 }' "$work/$name.second")
  echo "    flood: held ${buffered:-?} bytes for 100 connections; then ${conns:-?} open, ${refused:-?} refused; $(cat "$work/$name.rss" 2>/dev/null)"
  [ -n "$buffered" ] && [ "$buffered" -le $((100 * 256 * 1024)) ] ||
    { fail $name "buffered ${buffered:-?} bytes, more than the credit given"; return; }
  [ -n "$conns" ] && [ "$conns" -le 128 ] && [ "$refused" -ge 250 ] ||
    { fail $name "connections ${conns:-?} open, ${refused:-?} refused (cap 128)"; return; }
  pass $name
}

# last_count LOG: the last "count N" the guest printed in LOG.
# The counter guest's lines, less the one it is still writing: a line half-written when it was
# read ("count 54 179598") is not a count or a clock.
whole_lines() { perl -ne 'print if /\n\z/' "$1"; }
last_count() { whole_lines "$1" | grep -aoE '^count [0-9]+' | tail -n 1 | cut -d' ' -f2; }
last_clock() { whole_lines "$1" | grep -aoE '^count [0-9]+ [0-9]+' | tail -n 1 | cut -d' ' -f3; }

# The counter guest of the snapshot cases: every 100 ms it writes the count to its disk (vda,
# synced) and then prints it with its wall clock ("count N SECONDS") on the serial console;
# eth0 has 10.0.4.15.
snapshot_guest_script() {
  script_disk "$1" <<'EOF'
ip link set eth0 up && ip addr add 10.0.4.15/24 dev eth0
i=0
while [ $i -lt 100000 ]; do
  i=$((i + 1))
  printf '%-16s\n' "$i" | dd of=/dev/vda bs=512 count=1 conv=sync,fsync 2>/dev/null
  echo "count $i $(date +%s)"
  sleep 0.1
done
EOF
}

# A clone of the snapshot in its own network namespace, with its own tap, MAC and disk copy.
# ARGS: NAME NETNS MAC DISK SNAPSHOT_DIR SCRIPT_DISK_ARG
start_clone() {
  local name=$1 ns=$2 mac=$3 disk=$4 dir=$5 script=$6
  ip netns add "$ns"
  ip netns exec "$ns" ip tuntap add dev gwsnap mode tap
  ip netns exec "$ns" ip addr add 10.0.4.1/24 dev gwsnap
  ip netns exec "$ns" ip link set gwsnap up
  # The restored guest announces itself (VIRTIO_NET_F_GUEST_ANNOUNCE): with arp_accept its
  # gratuitous ARP puts it in the host's neighbour table before anyone asks.
  ip netns exec "$ns" sysctl -qw net.ipv4.conf.gwsnap.arp_accept=1
  start_watched "$name" 300 ip netns exec "$ns" "$godwit" run --restore "$dir" --name "$name" \
    --net "tap=gwsnap,mac=$mac" --disk "path=$disk" --disk "$script"
}

# Snapshot a running guest (disk writes and network traffic in flight), stop it, and restore
# it twice side by side, each clone with its own tap, MAC and copy of the disk: both counters
# go on from where the snapshot left them, both answer ping, both keep writing their disks,
# and the disk at the snapshot holds the count the guest had synced. A corrupt snapshot is
# refused with one line.
case_snapshot() {
  local name=snapshot dir=$work/snap disk=$work/snap-disk.img script
  truncate -s 8M "$disk"
  script=$(snapshot_guest_script $name)
  ip tuntap add dev gwsnap0 mode tap && ip addr add 10.0.4.1/24 dev gwsnap0 && ip link set gwsnap0 up
  start_watched $name 300 "$godwit" run "${common[@]}" --cmdline "$cmdline" --name snap-source \
    --net "tap=gwsnap0,mac=52:54:00:00:04:00" --disk "path=$disk" --disk "$script"
  wait_for_line "$work/$name.log" '^count 30[^0-9]' "$vm_pid" 180 || {
    "$godwit" stop "$work/$name.log.api" >/dev/null 2>&1
    finish_watched $name; ip link del gwsnap0; fail $name "the guest did not count to 30"; return
  }
  ping -c 50 -i 0.05 -q 10.0.4.15 >/dev/null 2>&1 &  # traffic in flight while the snapshot runs
  local ping_pid=$!
  "$godwit" snapshot "$work/$name.log.api" "$dir" --stop >"$work/$name.snapshot" 2>&1
  local snap_status=$?
  finish_watched $name
  kill $ping_pid 2>/dev/null; wait $ping_pid 2>/dev/null
  ip link del gwsnap0
  [ $snap_status -eq 0 ] || { fail $name "godwit snapshot failed: $(cat "$work/$name.snapshot")"; return; }
  expect_status $name 6 && expect_clean $name || return
  grep -q 'MiB written' "$work/$name.snapshot" || { fail $name "godwit snapshot said: $(cat "$work/$name.snapshot")"; return; }
  cat "$work/$name.snapshot"
  local at disk_at
  at=$(last_count "$work/$name.log")
  disk_at=$(head -c 16 "$disk" | tr -d ' \0\n')
  # The guest syncs the count before it prints it: the disk holds the last count printed, or
  # the next one when the snapshot came between the two.
  [ "$disk_at" = "$at" ] || [ "$disk_at" = $((at + 1)) ] ||
    { fail $name "the disk holds count '$disk_at' at the snapshot, the console last showed $at"; return; }

  cp "$disk" "$work/clone1.img" && cp "$disk" "$work/clone2.img"
  sleep 10 # on disk for a while: the restored guest's wall clock must account for it
  start_clone snapshot_clone1 gwns1 52:54:00:00:04:01 "$work/clone1.img" "$dir" "$script"
  local pid1=$vm_pid
  start_clone snapshot_clone2 gwns2 52:54:00:00:04:02 "$work/clone2.img" "$dir" "$script"
  local pid2=$vm_pid
  local c ok=1 want=$((at + 20)) log first pidc on_disk
  for c in 1 2; do
    log=$work/snapshot_clone$c.log pidc=pid$c
    if ! wait_for_line "$log" "^count $want[^0-9]" "${!pidc}" 180; then
      ok=0; fail snapshot_clone$c "the restored guest did not count on to $want"; continue
    fi
    local seen=$(date +%s) guest_time
    guest_time=$(last_clock "$log")
    [ $((guest_time - seen)) -le 3 ] && [ $((seen - guest_time)) -le 3 ] ||
      { ok=0; fail snapshot_clone$c "the restored guest's clock says $guest_time, the host's $seen"; }
    first=$(grep -aoE '^count [0-9]+' "$log" | head -n 1 | cut -d' ' -f2)
    [ "$first" -gt "$at" ] && [ "$first" -le $((at + 2)) ] ||
      { ok=0; fail snapshot_clone$c "the restored guest counted from $first, the snapshot was at $at"; }
    ip netns exec gwns$c ip neigh show 10.0.4.15 dev gwsnap | grep -q lladdr ||
      { ok=0; fail snapshot_clone$c "the restored guest did not announce itself (no neighbour entry)"; }
    ip netns exec gwns$c ping -c 3 -W 5 10.0.4.15 >"$work/snapshot_clone$c.ping" 2>&1 ||
      { ok=0; fail snapshot_clone$c "no answer to ping: $(tail -n 2 "$work/snapshot_clone$c.ping")"; }
  done
  for c in 1 2; do "$godwit" stop "$work/snapshot_clone$c.log.api" >/dev/null 2>&1; done
  for c in 1 2; do
    finish_watched snapshot_clone$c
    [ $status -eq 6 ] || { ok=0; fail snapshot_clone$c "exit status $status, expected 6"; }
    expect_clean snapshot_clone$c || ok=0
    on_disk=$(head -c 16 "$work/clone$c.img" | tr -d ' \0\n')
    [ "${on_disk:-0}" -ge "$want" ] || { ok=0; fail snapshot_clone$c "its disk holds count '$on_disk', expected $want or more"; }
    ip netns del gwns$c
  done
  [ $ok -eq 1 ] || return

  # A corrupt snapshot: one flipped byte in the state is refused with one line.
  cp -r "$dir" "$work/snap-bad"
  printf '\xff' | dd of="$work/snap-bad/state" bs=1 seek=200 conv=notrunc 2>/dev/null
  timeout -k 5 60 "$godwit" run --restore "$work/snap-bad" </dev/null >"$work/snapshot_corrupt.log" 2>&1
  status=$?
  expect_status snapshot_corrupt 2 && expect_line snapshot_corrupt 'checksum mismatch' || return
  [ "$(wc -l <"$work/snapshot_corrupt.log")" -eq 1 ] ||
    { fail snapshot_corrupt "more than one line"; return; }
  pass $name
}

# Pause means quiet: while a paused guest receives a ping flood on its tap, neither its memory
# nor its disk changes. Two snapshots of the paused VM a second apart hold the same memory,
# byte for byte, and the disk image is unchanged; after resume the guest counts on and the
# frames that waited in the tap reach it.
case_pause_quiet() {
  local name=pause_quiet disk=$work/quiet-disk.img script
  truncate -s 8M "$disk"
  script=$(snapshot_guest_script $name)
  ip tuntap add dev gwquiet mode tap && ip addr add 10.0.4.1/24 dev gwquiet && ip link set gwquiet up
  start_watched $name 300 "$godwit" run "${common[@]}" --cmdline "$cmdline" \
    --net "tap=gwquiet" --disk "path=$disk" --disk "$script"
  local sock=$work/$name.log.api ok=1
  if ! wait_for_line "$work/$name.log" '^count 20[^0-9]' "$vm_pid" 180; then
    ok=0; fail $name "the guest did not count to 20"
  else
    ping -f -w 8 10.0.4.15 >/dev/null 2>&1 &
    local flood=$!
    sleep 1
    "$godwit" pause "$sock" || ok=0
    local before after
    before=$(md5sum <"$disk")
    "$godwit" snapshot "$sock" "$work/quiet1" >/dev/null || ok=0
    sleep 1
    "$godwit" snapshot "$sock" "$work/quiet2" >/dev/null || ok=0
    after=$(md5sum <"$disk")
    local paused_at
    paused_at=$(last_count "$work/$name.log")
    cmp -s "$work/quiet1/memory" "$work/quiet2/memory" ||
      { ok=0; fail $name "guest memory changed while paused: $(cmp "$work/quiet1/memory" "$work/quiet2/memory" 2>&1 | head -n 1)"; }
    [ "$before" = "$after" ] || { ok=0; fail $name "the disk changed while paused"; }
    [ "$(last_count "$work/$name.log")" = "$paused_at" ] || { ok=0; fail $name "the guest printed while paused"; }
    "$godwit" resume "$sock" || ok=0
    wait_for_line "$work/$name.log" "^count $((paused_at + 10))[^0-9]" "$vm_pid" 60 ||
      { ok=0; fail $name "the guest did not count on after resume"; }
    wait $flood 2>/dev/null
    local rx
    rx=$(curl -s --unix-socket "$sock" http://localhost/vm/counters | grep -oE '"rx_packets":[0-9]+' | head -n 1 | cut -d: -f2)
    [ "${rx:-0}" -gt 0 ] || { ok=0; fail $name "the guest received no frames at all"; }
  fi
  "$godwit" stop "$sock" >/dev/null 2>&1
  finish_watched $name
  ip link del gwquiet
  expect_clean $name || ok=0
  [ $ok -eq 1 ] && pass $name
}

# The guest of the migration cases: a counter in RAM with the guest's wall clock, printed on the
# serial console every 100 ms, while a loop keeps rewriting 4 MiB of its RAM (so that every
# pass finds pages dirtied) and it checks 16 MiB of random data it keeps in RAM against the
# checksum it took at the start ("data A B": equal unless memory was lost on the way), and it
# writes the count to its disk (vda, synced), which source and destination share.
migrate_guest_script() {
  script_disk "$1" <<'EOF'
head -c 16777216 /dev/urandom >/tmp/data
want=$(md5sum </tmp/data | cut -c1-32)
(while :; do dd if=/dev/urandom of=/tmp/churn bs=65536 count=64 2>/dev/null; sleep 0.2; done) &
i=0
while [ $i -lt 100000 ]; do
  i=$((i + 1))
  printf '%-16s\n' "$i" | dd of=/dev/vda bs=512 count=1 conv=sync,fsync 2>/dev/null
  echo "count $i $(date +%s)"
  [ $((i % 10)) -eq 0 ] && echo "data $(md5sum </tmp/data | cut -c1-32) $want"
  sleep 0.1
done
EOF
}

# wait_for_socket PATH|tcp:PORT: until something listens there, or 30 s (a slow test host can
# take seconds to start python or godwit).
wait_for_socket() {
  local _
  for _ in $(seq 1 300); do
    case $1 in
      tcp:*) ss -Hltn "sport = :${1#tcp:}" | grep -q . && return 0 ;;
      *) [ -S "$1" ] && return 0 ;;
    esac
    sleep 0.1
  done
  return 1
}

# migration_sample API: "BYTES MS": what the running migration has sent and its age, in one answer.
migration_sample() {
  local r
  r=$(curl -s -m 5 --unix-socket "$1" http://localhost/vm/migration)
  echo "$(grep -oE '"bytes_sent":[0-9]+' <<<"$r" | cut -d: -f2) $(grep -oE '"total_ms":[0-9.]+' <<<"$r" | cut -d: -f2)"
}

# migrate_source_gone SRC_PID DEST_PID: status 0 when the migrate case's source has ended
# where its guest should have run on (a guest that crashed or panicked: docs/testing.md): the
# rest of the case needs it, so it says so and ends the destination that waits for it,
# instead of leaving every later step to fail in turn and the destination to its timeout.
migrate_source_gone() {
  kill -0 "$1" 2>/dev/null && return 1
  fail migrate "the source ended (status below); the rest of the case cannot run"
  pkill -KILL -P "$2" 2>/dev/null # godwit itself, not the timeout(1) around it
  finish_watched migrate_source
  echo "    | migrate_source ended with status $status; its last lines (the guest's last two counts,"
  echo "    | godwit's lines and the progress watchdog's report):"
  { grep -a '^count' "$work/migrate_source.log" | tail -n 2
    grep -a 'godwit: ' "$work/migrate_source.log" | tail -n 8
    grep -aE '^(watchdog|stall): ' "$work/migrate_source.log"; } | sed 's/^/    | /'
  finish_watched migrate_dest
  return 0
}

# Live migration on this host: the destination waits on a UNIX socket, the running source
# moves to it and ends with status 0; the guest's counter goes on at the destination from
# where it was, with its wall clock right, and it keeps writing the disk they share (whose lock
# the destination takes once the source lets go). Then the refusals: nothing listening (the guest runs
# on at the source), a destination fed garbage or a stream cut short (one line, status 1).
case_migrate() {
  local name=migrate script src=$work/migrate_source.log dst=$work/migrate_dest.log
  local disk=$work/migrate-disk.img
  truncate -s 8M "$disk"
  script=$(migrate_guest_script $name)
  start_watched migrate_dest 300 "$godwit" run --incoming "unix:$work/mig.sock" --name mig-dest
  local dest_pid=$vm_pid
  start_watched migrate_source 300 "$godwit" run "${common[@]}" --cmdline "$cmdline" \
    --name mig-source --disk "path=$disk" --disk "$script"
  local ok=1 src_pid=$vm_pid
  if ! wait_for_line "$src" '^count 30[^0-9]' "$src_pid" 180; then
    fail migrate_source "the source guest did not count to 30"
    "$godwit" stop "$src.api" >/dev/null 2>&1; "$godwit" stop "$dst.api" >/dev/null 2>&1
    kill "$dest_pid" 2>/dev/null
    finish_watched migrate_source; finish_watched migrate_dest; return
  fi
  # A destination that is not there: refused, the guest runs on.
  "$godwit" migrate "$src.api" "unix:$work/nobody.sock" >"$work/migrate_nobody.out" 2>&1 &&
    { ok=0; fail $name "a migration to nowhere succeeded"; }
  grep -q 'cannot' "$work/migrate_nobody.out" || { ok=0; fail $name "to nowhere: $(cat "$work/migrate_nobody.out")"; }
  # A destination that takes the connection and reads nothing: cancelled, the guest runs on.
  python3 -c '
import socket, sys, time
s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(1)
c, _ = s.accept(); time.sleep(60)' "$work/stuck.sock" &
  local stuck=$!
  wait_for_socket "$work/stuck.sock"
  "$godwit" migrate "$src.api" "unix:$work/stuck.sock" >"$work/migrate_stuck.out" 2>&1 &
  local stuck_cli=$!
  sleep 3
  "$godwit" migrate "$src.api" --cancel || { ok=0; fail $name "--cancel refused"; }
  wait $stuck_cli && { ok=0; fail $name "a cancelled migration reported success"; }
  kill $stuck 2>/dev/null; wait $stuck 2>/dev/null
  grep -q 'cancelled' "$work/migrate_stuck.out" || { ok=0; fail $name "cancel: $(cat "$work/migrate_stuck.out")"; }
  local before_cancel
  before_cancel=$(last_count "$src")
  wait_for_line "$src" "^count $((before_cancel + 10))[^0-9]" "$src_pid" 60 ||
    { ok=0; fail $name "the guest did not run on after the cancelled migration"; }
  migrate_source_gone "$src_pid" "$dest_pid" && return

  # A destination killed in the middle of the first pass, which --bandwidth 4 (MiB/s) makes
  # last over 20 s (at 8 MiB/s one run's migration ended before the kill: each curl and pgrep
  # takes a second or more in the test host): the cap holds, the source says why it gave up,
  # and the guest runs on.
  start_watched migrate_doomed 120 "$godwit" run --incoming "unix:$work/doomed.sock" --name mig-doomed
  local doomed_pid=$vm_pid sample1 sample2 victim killed
  wait_for_socket "$work/doomed.sock"
  victim=$(pgrep -a -P "$doomed_pid") # before the clock starts: pgrep can take a second here
  "$godwit" migrate "$src.api" "unix:$work/doomed.sock" --bandwidth 4 >"$work/migrate_doomed.out" 2>&1 &
  local doomed_cli=$!
  sleep 1
  # Bytes sent and the migration's age, read together from the source: the rate between two
  # readings, whatever the time curl takes to start.
  sample1=$(migration_sample "$src.api"); sleep 3; sample2=$(migration_sample "$src.api")
  awk -v a="$sample1" -v b="$sample2" 'BEGIN { split(a, x); split(b, y); ms = y[2] - x[2];
    exit !(ms > 1000 && y[1] > x[1] && (y[1] - x[1]) / ms * 1000 <= 4 * 1048576 * 1.1) }' ||
    { ok=0; fail $name "--bandwidth 4: bytes sent and ms since the start: '$sample1', then '$sample2'"; }
  pkill -KILL -P "$doomed_pid" # godwit itself, not the timeout(1) around it
  killed="$victim, just before $(migration_sample "$src.api")"
  finish_watched migrate_doomed
  wait $doomed_cli && { ok=0; fail $name "a migration to a killed destination reported success (killed: '$killed'): $(tail -n 5 "$work/migrate_doomed.log")"; }
  grep -q 'runs on here' "$work/migrate_doomed.out" ||
    { ok=0; fail $name "killed destination: $(cat "$work/migrate_doomed.out")"; }
  before_cancel=$(last_count "$src")
  wait_for_line "$src" "^count $((before_cancel + 10))[^0-9]" "$src_pid" 60 ||
    { ok=0; fail $name "the guest did not run on after its destination was killed"; }
  # (The guest may have gone to the killed destination after all: nothing is left to migrate.)
  migrate_source_gone "$src_pid" "$dest_pid" && return

  # The destination's ACK lost (tests/e2e/mig-proxy.py cuts the stream there): it never
  # got GO, so it gives the guest up without running it, and the source runs it on.
  start_watched migrate_lost_ack 120 "$godwit" run --incoming "unix:$work/lost-ack.sock" --name mig-lost-ack
  local lost_pid=$vm_pid
  wait_for_socket "$work/lost-ack.sock"
  python3 "$here/mig-proxy.py" "$work/lost-ack-proxy.sock" "$work/lost-ack.sock" drop-ack \
    >"$work/lost-ack-proxy.out" 2>&1 &
  local proxy=$!
  wait_for_socket "$work/lost-ack-proxy.sock"
  "$godwit" migrate "$src.api" "unix:$work/lost-ack-proxy.sock" >"$work/migrate_lost_ack.out" 2>&1 &&
    { ok=0; fail $name "a migration whose ACK was lost reported success"; }
  wait $proxy
  finish_watched migrate_lost_ack
  [ $status -ne 0 ] && grep -q 'not started here' "$work/migrate_lost_ack.log" ||
    { ok=0; fail migrate_lost_ack "status $status, proxy: $(cat "$work/lost-ack-proxy.out"): $(tail -n 3 "$work/migrate_lost_ack.log")"; }
  grep -q '^count' "$work/migrate_lost_ack.log" &&
    { ok=0; fail migrate_lost_ack "the guest ran at a destination that never got GO"; }
  before_cancel=$(last_count "$src")
  wait_for_line "$src" "^count $((before_cancel + 10))[^0-9]" "$src_pid" 60 ||
    { ok=0; fail $name "the guest did not run on after its destination's ACK was lost"; }
  migrate_source_gone "$src_pid" "$dest_pid" && return

  # --connections: refused out of range and where it cannot apply (one line, status 2); and
  # over 3 TCP connections to a fake destination (tests/e2e/mig-dropper.py) that drops the
  # second in the middle of the first pass: the source gives up, says which, runs the guest on.
  local k_out
  for k_args in "tcp:127.0.0.1:1 --connections 9" "tcp:127.0.0.1:1 --connections 0" \
      "unix:$work/mig.sock --connections 2"; do
    # shellcheck disable=SC2086
    k_out=$("$godwit" migrate "$src.api" $k_args 2>&1) &&
      { ok=0; fail $name "migrate $k_args was not refused"; }
    [ "$(wc -l <<<"$k_out")" -eq 1 ] && grep -qE 'connections' <<<"$k_out" ||
      { ok=0; fail $name "migrate $k_args: $k_out"; }
  done
  local drop_port=$((40000 + RANDOM % 20000))
  python3 "$here/mig-dropper.py" $drop_port >"$work/mig-dropper.out" 2>&1 &
  local dropper=$!
  wait_for_socket "tcp:$drop_port"
  "$godwit" migrate "$src.api" "tcp:127.0.0.1:$drop_port" --connections 3 --bandwidth 16 \
    >"$work/migrate_dropped.out" 2>&1 &&
    { ok=0; fail $name "a migration whose second connection dropped reported success"; }
  kill $dropper 2>/dev/null; wait $dropper 2>/dev/null
  grep -q 'connection 2 of 3 failed' "$work/migrate_dropped.out" && grep -q 'runs on here' "$work/migrate_dropped.out" ||
    { ok=0; fail $name "dropped connection: $(cat "$work/migrate_dropped.out" "$work/mig-dropper.out")"; }
  before_cancel=$(last_count "$src")
  wait_for_line "$src" "^count $((before_cancel + 10))[^0-9]" "$src_pid" 60 ||
    { ok=0; fail $name "the guest did not run on after a connection dropped"; }
  migrate_source_gone "$src_pid" "$dest_pid" && return

  "$godwit" migrate "$src.api" "unix:$work/mig.sock" >"$work/migrate.out" 2>&1 ||
    { ok=0; fail $name "godwit migrate failed: $(cat "$work/migrate.out")"; }
  cat "$work/migrate.out"
  finish_watched migrate_source
  [ $status -eq 0 ] || { ok=0; fail migrate_source "exit status $status, expected 0 (migrated)"; }
  grep -a 'migrated to' "$src" || { ok=0; fail migrate_source "no 'migrated to' line"; }
  # The guest's MSI routes reached the destination's KVM before the pause (ROUTES): its load
  # of the state, in the pause, did not rewrite KVM's routing table.
  grep -aq 'MSI routes given to KVM ahead of the state' "$dst" &&
    grep -aqE 'the state here: .* 0 MSI-X routing updates' "$dst" ||
    { ok=0; fail migrate_dest "the load rewrote the MSI routes in the pause: $(grep -aE 'MSI routes|the state here' "$dst")"; }
  local at want
  at=$(last_count "$src")
  want=$((at + 20))
  if wait_for_line "$dst" "^count $want[^0-9]" "$dest_pid" 120; then
    local first seen guest_time
    first=$(grep -aoE '^count [0-9]+' "$dst" | head -n 1 | cut -d' ' -f2)
    [ "$first" -gt "$at" ] && [ "$first" -le $((at + 2)) ] ||
      { ok=0; fail migrate_dest "the guest counted from $first at the destination, the source was at $at"; }
    seen=$(date +%s)
    guest_time=$(last_clock "$dst")
    [ $((guest_time - seen)) -le 3 ] && [ $((seen - guest_time)) -le 3 ] ||
      { ok=0; fail migrate_dest "the guest's clock says $guest_time, the host's $seen"; }
    local sums
    sums=$(whole_lines "$dst" | grep -aE '^data ' | tail -n 2 | tr -d '\r')
    [ -n "$sums" ] && ! awk '$2 != $3 {bad = 1} END {exit !bad}' <<<"$sums" ||
      { ok=0; fail migrate_dest "the guest's data in RAM changed on the way: $sums"; }
  else
    ok=0; fail migrate_dest "the guest did not count on to $want at the destination"
  fi
  # And on over 3 TCP connections to a third process, through a link capped at 8 MiB/s (all
  # connections together), too slow for the guest's dirtying to fit a 300 ms budget: it
  # converges only with its vCPUs held back (auto-converge), and the counter goes on again.
  local port=$((40000 + RANDOM % 20000)) back=$work/migrate_back.log
  start_watched migrate_back 300 "$godwit" run --incoming "tcp:127.0.0.1:$port" --name mig-back
  local back_pid=$vm_pid
  wait_for_socket "tcp:$port"
  at=$(last_count "$dst")
  "$godwit" migrate "$dst.api" "tcp:127.0.0.1:$port" --bandwidth 8 --downtime-ms 300 \
    --connections 3 >"$work/migrate_back.out" 2>&1 ||
    { ok=0; fail $name "migrating on over TCP failed: $(cat "$work/migrate_back.out")"; }
  cat "$work/migrate_back.out"
  grep -a 'over 3 connections' "$dst" || { ok=0; fail migrate_dest "no 'over 3 connections' line"; }
  grep -aq 'sends pages over 3 connections' "$back" ||
    { ok=0; fail migrate_back "the destination did not take 3 connections"; }
  # The bandwidth cap holds for all of them together: the first pass (all of RAM: the later
  # ones are small enough for the limiter's 100 ms burst to show) ran at 8 MiB/s or less.
  awk '$1 == "pass" && $2 == "1:" { for (i = 1; i < NF; i++) if ($(i + 2) == "guest") r = $i + 0; seen = 1 }
    END { exit !(seen && r > 0 && r <= 8.8) }' "$work/migrate_back.out" ||
    { ok=0; fail $name "--bandwidth 8 over 3 connections: $(grep -a '^pass 1:' "$work/migrate_back.out")"; }
  # The guest's dirtying is its own loop's speed in the test host, which varies (1 MiB/s in
  # one run): auto-converge is owed when a later pass saw it dirty at least 3/4 of the link.
  local fastest
  fastest=$(awk '$1 == "pass" && $2 + 0 >= 2 { for (i = 1; i < NF; i++) if ($i == "dirties") { r = $(i + 1) + 0; if (r > m) m = r } } END { print int(m) }' \
    "$work/migrate_back.out")
  if [ "$fastest" -ge 6 ]; then
    grep -q 'converged with the vCPUs held back' "$work/migrate_back.out" ||
      { ok=0; fail $name "the guest dirtied $fastest MiB/s of an 8 MiB/s link and was not held back: $(tail -n 3 "$work/migrate_back.out")"; }
  else
    echo "migrate: auto-converge not exercised: the guest dirtied at most $fastest MiB/s after the first pass"
  fi
  finish_watched migrate_dest
  [ $status -eq 0 ] || { ok=0; fail migrate_dest "exit status $status after moving on, expected 0"; }
  at=$(last_count "$dst")
  want=$((at + 20))
  wait_for_line "$back" "^count $want[^0-9]" "$back_pid" 120 ||
    { ok=0; fail migrate_back "the guest did not count on to $want after moving back"; }
  first=$(grep -aoE '^count [0-9]+' "$back" | head -n 1 | cut -d' ' -f2)
  [ "${first:-0}" -gt "$at" ] && [ "${first:-0}" -le $((at + 2)) ] ||
    { ok=0; fail migrate_back "the guest counted from '$first' after moving back, it was at $at"; }
  if ! kill -0 "$back_pid" 2>/dev/null; then
    # The guest did not reach its third home: what follows (the disk's lock, a lost RUNNING)
    # needs it running there. A third VM would even boot from the disk nobody holds now.
    fail $name "the guest is not running at migrate_back; the rest of the case cannot run"
    finish_watched migrate_back; return
  fi
  dst=$back dest_pid=$back_pid # the guest's home from here on

  # A third VM cannot take the disk from the destination.
  refused_within migrate_third 60 "$godwit" run "${common[@]}" --disk "path=$disk" || ok=0
  grep -q 'in use by another VM' "$work/migrate_third.log" ||
    { ok=0; fail $name "third VM: $(tail -n 2 "$work/migrate_third.log")"; }
  # The destination's RUNNING lost after GO: the destination runs the guest, and the source,
  # which cannot know that, keeps it paused (never both running) and says so; whoever sees
  # the guest at the destination stops the source.
  start_watched migrate_final 300 "$godwit" run --incoming "unix:$work/final.sock" --name mig-final
  local final_pid=$vm_pid final=$work/migrate_final.log
  wait_for_socket "$work/final.sock"
  python3 "$here/mig-proxy.py" "$work/final-proxy.sock" "$work/final.sock" drop-running \
    >"$work/final-proxy.out" 2>&1 &
  proxy=$!
  wait_for_socket "$work/final-proxy.sock"
  "$godwit" migrate "$dst.api" "unix:$work/final-proxy.sock" >"$work/migrate_final.out" 2>&1 &&
    { ok=0; fail $name "a migration whose RUNNING was lost reported success"; }
  wait $proxy
  grep -q 'stays paused here' "$work/migrate_final.out" ||
    { ok=0; fail $name "lost RUNNING: $(cat "$work/migrate_final.out")"; }
  local r held
  r=$(curl -s -m 5 --unix-socket "$dst.api" http://localhost/vm)
  [[ $r == *'"state":"paused"'* ]] || { ok=0; fail migrate_back "after a lost RUNNING its VM is not paused: $r"; }
  held=$(last_count "$dst")
  wait_for_line "$final" "^count $((held + 10))[^0-9]" "$final_pid" 120 ||
    { ok=0; fail migrate_final "the guest did not count on at the destination that got GO"; }
  [ "$(last_count "$dst")" = "$held" ] ||
    { ok=0; fail migrate_back "the guest ran on at the source as well: $held, then $(last_count "$dst")"; }
  "$godwit" stop "$dst.api" >/dev/null 2>&1
  finish_watched migrate_back
  [ $status -eq 6 ] || { ok=0; fail migrate_back "exit status $status, expected 6"; }
  "$godwit" stop "$work/migrate_final.log.api" >/dev/null 2>&1
  finish_watched migrate_final
  [ $status -eq 6 ] || { ok=0; fail migrate_final "exit status $status, expected 6"; }
  expect_clean migrate_final || ok=0
  expect_clean migrate_lost_ack || ok=0
  local on_disk
  on_disk=$(head -c 16 "$disk" | tr -d ' \0\n')
  [ "${on_disk:-0}" -ge "$want" ] || { ok=0; fail migrate_dest "the disk holds count '$on_disk', expected $want or more"; }
  expect_clean migrate_source || ok=0
  expect_clean migrate_dest || ok=0
  expect_clean migrate_back || ok=0
  expect_clean migrate_doomed || ok=0

  # Hostile streams: garbage, and a HELLO followed by a CPU model cut short.
  local bad
  for bad in garbage cut toomany; do
    "$godwit" run --incoming "unix:$work/bad-$bad.sock" </dev/null >"$work/migrate_$bad.log" 2>&1 &
    local pid=$!
    wait_for_socket "$work/bad-$bad.sock"
    python3 - "$work/bad-$bad.sock" "$bad" <<'EOF'
import socket, struct, sys, json
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
if sys.argv[2] == "garbage":
    s.sendall(b"GET / HTTP/1.1\r\n\r\n" + b"x" * 64)
elif sys.argv[2] == "toomany":
    # CONNECTIONS (type 13) asking for 9, more than a destination takes.
    s.sendall(struct.pack("<IIQ", 0x474d5747, 13, 12) + struct.pack("<IQ", 9, 1))
else:
    cfg = json.dumps({"kernel": "/nonexistent", "memory_mib": 64}).encode()
    payload = struct.pack("<I", 3) + cfg  # protocol 3
    s.sendall(struct.pack("<IIQ", 0x474d5747, 1, len(payload)) + payload)
    # The CPU model (type 7), one 40-byte entry announced, cut after 10 bytes of it.
    s.sendall(struct.pack("<IIQ", 0x474d5747, 7, 4 + 40) + struct.pack("<I", 1) + b"\0" * 10)
s.close()
EOF
    local st=0
    for _ in $(seq 1 300); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
    kill -KILL $pid 2>/dev/null && { ok=0; fail migrate_$bad "the destination did not give up"; }
    wait $pid; st=$?
    [ $st -ne 0 ] || { ok=0; fail migrate_$bad "exit status 0"; }
    grep -E 'bad magic|closed the stream|asks for 9 connections' "$work/migrate_$bad.log" ||
      { ok=0; fail migrate_$bad "no line saying why: $(tail -n 3 "$work/migrate_$bad.log")"; }
  done
  [ $ok -eq 1 ] && pass $name
}

# local_hop FROM TO [--local]: moves the counter guest (migrate_guest_script) from the VM
# started as FROM to a new `godwit run --incoming` TO over a UNIX socket, and prints what the
# migrate command said; 0 when FROM ended with status 0 and the guest counts on at TO from
# where it was, with its 16 MiB of random data in RAM checksumming the same.
# hop_run_opts: options for the destination's `godwit run --incoming` (none by default).
hop_run_opts=()
local_hop() {
  local from=$1 to=$2; shift 2
  local sock=$work/$to.sock out=$work/$to.out
  start_watched $to 300 "$godwit" run --incoming "unix:$sock" --name "${to//_/-}" "${hop_run_opts[@]}"
  local to_pid=$vm_pid
  wait_for_socket "$sock" || { fail $to "the destination does not listen"; return 1; }
  "$godwit" migrate "$work/$from.log.api" "unix:$sock" "$@" >"$out" 2>&1 ||
    { fail $to "godwit migrate $*: $(cat "$out")"; return 1; }
  cat "$out"
  finish_watched $from
  unset "watchdogs[$from]"
  grep -a 'the pause:' "$work/$from.log"
  [ $status -eq 0 ] || { fail $from "exit status $status after migrating, expected 0"; return 1; }
  expect_clean $from || return 1
  local at first sums
  at=$(last_count "$work/$from.log")
  wait_for_line "$work/$to.log" "^count $((at + 20))[^0-9]" "$to_pid" 120 ||
    { fail $to "the guest did not count on to $((at + 20))"; return 1; }
  first=$(grep -aoE '^count [0-9]+' "$work/$to.log" | head -n 1 | cut -d' ' -f2)
  [ "$first" -gt "$at" ] && [ "$first" -le $((at + 2)) ] ||
    { fail $to "the guest counted from $first here, the source was at $at"; return 1; }
  sums=$(whole_lines "$work/$to.log" | grep -aE '^data ' | tail -n 2 | tr -d '\r')
  [ -n "$sums" ] && ! awk '$2 != $3 {bad = 1} END {exit !bad}' <<<"$sums" ||
    { fail $to "the guest's data in RAM changed on the way: $sums"; return 1; }
}

# console_client_ask DIR N: has the console client that stays connected through the moves
# (tests/e2e/console_client.py, controlled through DIR) ask the guest's shell for step N, and
# waits for the answer: 0, or 1 with why on stdout.
console_client_ask() {
  local dir=$1 n=$2
  touch "$dir/ask-$n"
  for _ in $(seq 1 700); do
    [ -e "$dir/answer-$n" ] && return 0
    [ -e "$dir/failed" ] && { cat "$dir/failed"; return 1; }
    sleep 0.1
  done
  echo "the client gave no answer to step $n in 70 s"
  return 1
}

# console_client_end DIR PID VM: the client closes its connection and ends; then VM's console
# must see it go (the one client it serves), so that the next client is served.
console_client_end() {
  local dir=$1 pid=$2 vm=$3
  touch "$dir/end"
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  for _ in $(seq 1 100); do
    grep -aq 'virtio-console: client disconnected' "$work/$vm.log" && return 0
    sleep 0.1
  done
  return 1
}

# paused_ms OUT: the guest's pause that a migrate command's output reports.
paused_ms() { grep -oE 'guest paused [0-9.]+ ms' "$1" | cut -d' ' -f3; }

# sockets_evidence: what the VMs of migrate_local said about their console and vsock sockets,
# and the last VM's console counters, for a failure of the sockets' check.
sockets_evidence() {
  local hop
  for hop in ml_b ml_c ml_d; do
    grep -a -E 'virtio-console|vsock|migration: ' "$work/$hop.log" | sed "s/^/    $hop | /" | tail -n 8
  done
  curl -s -m 5 --unix-socket "$work/ml_d.log.api" http://localhost/vm/counters |
    grep -oE '"hvc0":\{[^}]*\}' | sed 's/^/    ml_d counters | /'
}

# Same-host live upgrade (--local): the source hands its memory file to the destination over
# the UNIX socket (SCM_RIGHTS) and copies no RAM, and its disks' and tap's descriptors with it.
# The guest (a disk and a two-queue tap) moves once by copying (for the pause to compare
# with), then twice by handing over; each time the counter goes on, its data in RAM checksums
# the same and the source ends with status 0, and a handover sends under 1 MiB (the device
# state alone). Before the handovers the disk image and the tap are renamed, so that only an
# inherited descriptor reaches them: the guest's counter must land in the renamed image, no
# tap of the old name may appear (opening it by name would create one), and the image stays
# locked once the sources are gone. The guest also has a shell on hvc0 behind a console socket
# and a vsock device: the copying hop gives its destination paths of its own (the source
# holds the first ones), the handovers pass the listening sockets on, so the socket files are
# never bound again (the same inodes throughout). A client of the console connected before the
# handovers stays connected through both, the guest's shell answering it after each; once it
# has gone, a new program reaches the shell through the console socket, and the vsock socket
# takes a CONNECT; the last VM unlinks its vsock socket when it ends. --local over TCP is
# refused with one line.
case_migrate_local() {
  local name=migrate_local disk=$work/migrate-local-disk.img ok=1 script tap=gwml0
  truncate -s 8M "$disk"
  rm -f "$disk.moved"
  ip link del $tap 2>/dev/null; ip link del ${tap}x 2>/dev/null
  ip tuntap add dev $tap mode tap multi_queue || { fail $name "cannot create tap $tap"; return; }
  script=$(migrate_guest_script $name)
  local con=$work/ml-a.con vsock=$work/ml-a.vsock
  rm -f "$con" "$vsock" "$work/ml-b.con" "$work/ml-b.vsock"
  # Two vCPUs: their states are saved and loaded side by side (vcpu_save_states).
  start_watched ml_a 300 "$godwit" run "${common[@]}" --cmdline "$cmdline" --name ml-a --cpus 2 \
    --disk "path=$disk" --disk "$script" --net "tap=$tap,queues=2" \
    --console "virtio,socket=$con" --vsock "cid=7,socket=$vsock"
  if ! wait_for_line "$work/ml_a.log" '^count 30[^0-9]' "$vm_pid" 180; then
    fail ml_a "the guest did not count to 30"
    "$godwit" stop "$work/ml_a.log.api" >/dev/null 2>&1; finish_watched ml_a
    ip link del $tap; return
  fi
  "$godwit" migrate "$work/ml_a.log.api" tcp:127.0.0.1:1 --local >"$work/ml_tcp.out" 2>&1 &&
    { ok=0; fail $name "--local over tcp: was accepted"; }
  [ "$(wc -l <"$work/ml_tcp.out")" -eq 1 ] && grep -q 'unix:PATH' "$work/ml_tcp.out" ||
    { ok=0; fail $name "--local over tcp: $(cat "$work/ml_tcp.out")"; }
  # A copy binds the sockets anew, beside the source's.
  con=$work/ml-b.con vsock=$work/ml-b.vsock
  hop_run_opts=(--console "virtio,socket=$con" --vsock "cid=7,socket=$vsock")
  local_hop ml_a ml_b || ok=0
  hop_run_opts=()
  local con_ino vsock_ino
  con_ino=$(stat -c %i "$con" 2>/dev/null) vsock_ino=$(stat -c %i "$vsock" 2>/dev/null)
  # A client of the console that stays connected through both handovers, answered each time.
  local client_dir=$work/ml_client client_pid why step=1
  rm -rf "$client_dir"
  mkdir -p "$client_dir"
  python3 "$here/console_client.py" "$con" "$client_dir" >"$work/ml_client.out" 2>&1 &
  client_pid=$!
  why=$(console_client_ask "$client_dir" $step) ||
    { ok=0; fail $name "the console client at ml_b, before any handover: $why"; }
  # From here only the open descriptors reach the image and the tap.
  mv "$disk" "$disk.moved" &&
    ip link set $tap down && ip link set $tap name ${tap}x && ip link set ${tap}x up ||
    { ok=0; fail $name "cannot rename the disk image or the tap"; }
  local hop last=ml_b
  for hop in ml_c ml_d; do
    [ $ok -eq 1 ] || break
    local_hop $last $hop --local || { ok=0; break; }
    grep -q 'memory handed over' "$work/$hop.out" && grep -q 'hands its guest.s memory over' "$work/$hop.log" ||
      { ok=0; fail $hop "not a handover: $(cat "$work/$hop.out")"; }
    grep -aqE 'the state here: .* 0 MSI-X routing updates' "$work/$hop.log" ||
      { ok=0; fail $hop "the load rewrote the MSI routes in the pause: $(grep -aE 'MSI routes|the state here' "$work/$hop.log")"; }
    grep -q '2 disks and 1 tap handed over (not reopened)' "$work/$hop.log" ||
      { ok=0; fail $hop "the disks and the tap were not handed over: $(grep -a migration "$work/$hop.log" | tail -n 3)"; }
    grep -q "the console's socket handed over (not bound again); the vsock socket handed over (not bound again)" "$work/$hop.log" ||
      { ok=0; fail $hop "the sockets were not handed over: $(grep -a migration "$work/$hop.log" | tail -n 3)"; }
    [ -n "$con_ino" ] && [ "$(stat -c %i "$con" 2>/dev/null)" = "$con_ino" ] &&
      [ -n "$vsock_ino" ] && [ "$(stat -c %i "$vsock" 2>/dev/null)" = "$vsock_ino" ] ||
      { ok=0; fail $hop "a socket file was bound again or removed: $(ls -li "$con" "$vsock" 2>&1 | tr '\n' ' ')"; }
    awk '{for (i = 2; i <= NF; i++) if ($i == "MiB" && $(i + 1) ~ /^sent/) exit !($(i - 1) < 1); exit 1}' \
      "$work/$hop.out" || { ok=0; fail $hop "memory went on the socket: $(cat "$work/$hop.out")"; }
    step=$((step + 1))
    why=$(console_client_ask "$client_dir" $step) &&
      grep -aq 'virtio-console: the client handed over' "$work/$hop.log" ||
      { ok=0; fail $hop "the console's client, connected since ml_b, after this handover: ${why:-not handed over}"
        sockets_evidence; }
    last=$hop
  done
  # Its end frees the console for the next client (one at a time).
  if ! console_client_end "$client_dir" $client_pid $last && [ $ok -eq 1 ]; then
    ok=0
    fail $name "the console of $last did not see its client go"
    sockets_evidence
  fi
  if [ $ok -eq 1 ]; then
    local first_d on_disk
    first_d=$(grep -aoE '^count [0-9]+' "$work/ml_d.log" | head -n 1 | cut -d' ' -f2)
    on_disk=$(head -c 16 "$disk.moved" | tr -d ' \0\n')
    [ ! -e "$disk" ] && [ "${on_disk:-0}" -ge "${first_d:-1}" ] ||
      { ok=0; fail $name "the guest's writes at ml_d did not land in the renamed image: it holds '$on_disk', ml_d counted from '$first_d'"; }
    ip link show $tap >/dev/null 2>&1 && { ok=0; fail $name "a tap named $tap was opened again"; }
    refused_within ml_third 60 "$godwit" run "${common[@]}" --disk "path=$disk.moved" || ok=0
    grep -q 'in use by another VM' "$work/ml_third.log" ||
      { ok=0; fail $name "the handed-over disk is not locked: $(tail -n 2 "$work/ml_third.log")"; }
    python3 - "$con" "$vsock" >"$work/ml_sockets.out" 2>&1 <<'PY' ||
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
s.settimeout(60)
s.sendall(b'\necho "hvc says $((6 * 7))"\n')
got, deadline = b'', time.time() + 60
end = 'timed out'
while b'hvc says 42' not in got and time.time() < deadline:
    try:
        chunk = s.recv(4096)
    except socket.timeout:
        break
    if not chunk:
        end = 'closed by godwit'
        break
    got += chunk
print(got.decode(errors='replace'))
if b'hvc says 42' not in got:
    sys.exit("no answer from the guest's shell on the console socket (%s, %d bytes came)" % (end, len(got)))
v = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
v.connect(sys.argv[2])  # refused, or no such file, if nobody serves the path
v.sendall(b'CONNECT 1234\n')
print("vsock: connected, CONNECT sent")
PY
      { ok=0; fail $name "the sockets do not answer after the handovers: $(tail -n 3 "$work/ml_sockets.out")"
        sockets_evidence; }
  fi
  echo "migrate_local: guest paused $(paused_ms "$work/ml_b.out") ms copying RAM over unix:," \
    "$(paused_ms "$work/ml_c.out") and $(paused_ms "$work/ml_d.out") ms handing it over (--local)"
  local hop_name
  for hop_name in ml_a ml_b ml_c ml_d; do
    [ -S "$work/$hop_name.log.api" ] && "$godwit" stop "$work/$hop_name.log.api" >/dev/null 2>&1
  done
  for hop_name in ml_a ml_b ml_c ml_d; do
    [ -n "${watchdogs[$hop_name]:-}" ] && finish_watched $hop_name
    expect_clean $hop_name || ok=0
  done
  # The last VM owned the vsock socket's path, and removed it when it ended.
  [ $ok -eq 1 ] && [ -e "$vsock" ] && { ok=0; fail $name "the vsock socket $vsock outlived its last VM"; }
  ip link del ${tap}x 2>/dev/null; ip link del $tap 2>/dev/null
  [ $ok -eq 1 ] && pass $name
}

cd "$work"
# GODWIT_DEVICE_CASES="disk_locked rng" runs only those.
# The stress case is not in the default list: in the test host it fails by itself, a triple
# fault under load whichever the VMM (docs/testing.md); GODWIT_DEVICE_CASES=stress runs it.
# A case named twice (GODWIT_DEVICE_CASES="migrate migrate", to repeat one while hunting a
# rare failure) starts again as a rerun does: without what its last run left behind.
# GODWIT_SKIP_CASES: cases that passed in an earlier run of this suite (tools/run-tests.sh
# sets it when it runs a failed group again): they are counted as passed, not run again.
ran=" " skipped=
for c in ${GODWIT_DEVICE_CASES:-$default_cases}; do
  case " ${GODWIT_SKIP_CASES:-} " in
    *" $c "*) skipped="$skipped $c"; passed=$((passed + 1)); continue ;;
  esac
  case $ran in *" $c "*) case_cleanup ;; esac
  ran="$ran$c "
  run_case "$c"
done

[ -n "$retried" ] && echo "devices: run twice after a guest crash:$retried"
[ -n "$skipped" ] && echo "devices: passed in an earlier run, not run again:$skipped"
echo "devices: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
