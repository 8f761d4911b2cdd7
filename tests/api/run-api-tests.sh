#!/usr/bin/env bash
# run-api-tests.sh: the control plane against a running Linux guest: the REST API driven by
# curl, the CLI's control commands, SIGTERM under a systemd-like supervisor, names and
# sockets. Needs a /dev/kvm that runs unmodified kernels (run it in the test host).
# Usage: tests/api/run-api-tests.sh BUILD_DIR
set -uo pipefail

build=${1:?usage: run-api-tests.sh BUILD_DIR}
godwit=$(readlink -f "$build/godwit")
root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d /tmp/godwit-api.XXXXXX)
export XDG_RUNTIME_DIR=$work/run # used when not root; root uses /run/godwit
mkdir -p "$XDG_RUNTIME_DIR"
py=/usr/bin/python3
pids=()
run_as=() # a command that start_vm's godwit runs under (setpriv for the service user)
cleanup() { for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done; rm -rf "$work"; }
trap cleanup EXIT

eval "$("$root/guests/build-guest.sh" --print)" || { echo "api: default guest not built"; exit 2; }

passed=0 failed=0
pass() { echo "PASS $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1: $2"; failed=$((failed + 1)); }
check() { # NAME CONDITION-DESCRIPTION COMMAND...
  local name=$1 what=$2; shift 2
  if "$@"; then pass "$name"; else fail "$name" "$what"; fi
}

sock_of() { if [ "$(id -u)" = 0 ]; then echo "/run/godwit/$1.sock"; else echo "$XDG_RUNTIME_DIR/godwit/$1.sock"; fi; }

# start_vm NAME LOG [extra godwit args...]: boots the ticking guest, waits for its 2nd tick.
start_vm() {
  local name=$1 log=$2; shift 2
  "${run_as[@]}" "$godwit" run --name "$name" --kernel "$kernel_vmlinux" --initrd "$initrd" --memory 256 --cpus 2 \
    --cmdline "console=ttyS0 reboot=acpi panic=1 quiet godwit.test=ticker" "$@" </dev/null >"$log" 2>&1 &
  vm_pid=$!
  pids+=("$vm_pid")
  for _ in $(seq 1 1800); do
    grep -q 'godwit-guest: tick 2 ' "$log" && return 0
    kill -0 "$vm_pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# api METHOD PATH [curl args...]: prints "STATUS BODY".
api() {
  local method=$1 path=$2; shift 2
  curl -s -o "$work/body" -w '%{http_code}' --max-time 10 --unix-socket "$sock" -X "$method" "$@" \
    "http://localhost$path" >"$work/code"
  echo "$(cat "$work/code") $(cat "$work/body" 2>/dev/null)"
}

# wait_vm PID [SECS]: waits for godwit to exit (killing it after SECS) and prints its status.
wait_vm() {
  local pid=$1 secs=${2:-90}
  for _ in $(seq 1 $((secs * 10))); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null
  wait "$pid"
}

last_tick() { grep -o 'tick [0-9]* uptime [0-9.]*' "$1" | tail -n 1; }

# --- check-host on a host with real KVM (the test host: nested AMD-V with NPT)
out=$("$godwit" check-host 2>&1); st=$?
check check_host "status $st: $out" eval '[ $st -eq 0 ] && [[ $out == *"PASS  /dev/kvm"* && $out == *"AMD-V (svm)"* && $out == *"PASS  second-level address translation"* && $out == *"PASS  nested virtualization"* ]] && ! grep -q "^FAIL" <<<"$out"'

log=$work/vm1.log
if ! start_vm api-test "$log"; then
  echo "api: the guest did not start; log:"; tail -n 30 "$log"; exit 1
fi
sock=$(sock_of api-test)

# --- the socket and GET /vm
check socket_mode_0600 "socket is not mode 0600" test "$(stat -c %a "$sock")" = 600
r=$(api GET /vm)
check get_vm "got: $r" eval '[[ $r == "200 "* && $r == *"\"state\":\"running\""* && $r == *"\"vcpus\":2"* && $r == *"\"name\":\"api-test\""* ]]'

# --- the CLI's view
out=$("$godwit" ps 2>&1)
check cli_ps "ps printed: $out" eval '[[ $out == *api-test*running* ]]'
out=$("$godwit" info api-test 2>&1)
check cli_info "info printed: $out" eval '[[ $out == *'"'"'"state"'"'"'* ]]'

# --- pause: the guest's work and clock stop; resume: both go on
"$godwit" pause api-test; st=$?
r=$(api GET /vm)
check pause "status $st, then $r" eval '[ $st -eq 0 ] && [[ $r == *"\"state\":\"paused\""* ]]'
r=$(api PUT /vm/pause)
check pause_twice_conflict "got: $r" eval '[[ $r == "409 "*"error"* ]]'
# Read once the pause has landed and what the guest printed before it has reached the log:
# a tick printed just before the pause is not progress while paused.
sleep 1
before=$(last_tick "$log")
sleep 3
during=$(last_tick "$log")
"$godwit" resume api-test
for _ in $(seq 1 100); do [ "$(last_tick "$log")" != "$during" ] && break; sleep 0.1; done
after=$(last_tick "$log")
check paused_guest_made_no_progress "ticks went on while paused: '$before' -> '$during'" test "$before" = "$during"
# Across a 3 s pause the guest's uptime advanced by one tick (1 s plus the slowness of the
# nested test host), not by the 4 s or more that a running clock would show.
gap=$(awk -v a="${during##* }" -v b="${after##* }" 'BEGIN{print b-a}')
check paused_clock_stood_still "uptime jumped by $gap s across the pause" \
  awk -v g="$gap" 'BEGIN{exit !(g > 0 && g < 3.5)}'

# --- the serial console through the socket: output arrives, one client at a time, Ctrl-] detaches
(sleep 3; printf '\035') | "$godwit" console api-test >"$work/console.out" 2>"$work/console.err" &
console_pid=$!
sleep 1
"$godwit" console api-test </dev/null >"$work/console2.out" 2>&1; st2=$?
wait_vm "$console_pid" 20; st=$?
check console_attach "status $st, got: $(head -c 300 "$work/console.out")" \
  eval '[ $st -eq 0 ] && grep -q "godwit-guest: tick" "$work/console.out" && grep -q detached "$work/console.err"'
check console_second_client_refused "status $st2: $(cat "$work/console2.out")" \
  eval '[ $st2 -ne 0 ] && grep -q "another client" "$work/console2.out"'

# --- counters
r=$(api GET /vm/counters)
check counters "got: $r" eval '[[ $r == "200 "* && $r == *"\"pio\":"* && $r =~ \"tx_bytes\":[1-9] ]]'

# The ticker guest has one queue in use (rng0) and two vCPUs; reading them leaves it running.
check counters_queues "got: $r" eval '[[ $r == *"\"queues\":[{\"queue\":0"* && $r == *"\"avail_idx\":"* && $r == *"\"last_interrupt_ms\":"* ]]'
r=$(api GET /vm/vcpus)
check vcpus "got: $r" eval '[[ $r == "200 ["* && $r == *"\"index\":1"* && $r == *"\"state\":\""* && $r == *"\"tsc_deadline\":"* && $r == *"\"irr\":["* ]]'
r=$(api GET /vm)
check vcpus_leave_it_running "got: $r" eval '[[ $r == *"\"state\":\"running\""* ]]'

# --- snapshots: through the API and the CLI, the VM runs on; a restore ticks on from there
r=$(api PUT /vm/snapshot)
check snapshot_needs_body_400 "got: $r" eval '[[ $r == "400 "*"error"* ]]'
r=$(api PUT /vm/snapshot -d '{"dir": "relative/path"}')
check snapshot_relative_dir_400 "got: $r" eval '[[ $r == "400 "* ]]'
: >"$work/a-file"
r=$(api PUT /vm/snapshot -d "{\"dir\": \"$work/a-file/x\"}")
check snapshot_unwritable_500 "got: $r" eval '[[ $r == "500 "*"cannot snapshot"* ]]'
# With "freeze" the guest agent is needed: this VM has no vsock device, and nothing is written.
r=$(api PUT /vm/snapshot -d "{\"dir\": \"$work/frozensnap\", \"freeze\": true}")
check snapshot_freeze_no_agent_409 "got: $r" eval '[[ $r == "409 "*"no vsock device"* && ! -e $work/frozensnap ]]'
out=$("$godwit" snapshot api-test "$work/frozensnap" --freeze 2>&1); st=$?
check snapshot_freeze_no_agent_cli "status $st: $out" eval '[ $st -eq 1 ] && [[ $out == *"no vsock device"* ]]'
snap_tick=$(last_tick "$log" | cut -d' ' -f2)
r=$(api PUT /vm/snapshot -d "{\"dir\": \"$work/apisnap\"}")
check snapshot_api "got: $r" eval '[[ $r == "200 "*"\"memory_written\":"* && -s $work/apisnap/state && -s $work/apisnap/memory ]]'
r=$(api GET /vm)
check snapshot_leaves_it_running "got: $r" eval '[[ $r == *"\"state\":\"running\""* ]]'
out=$(cd "$work" && "$godwit" snapshot api-test clisnap 2>&1); st=$?
check snapshot_cli "status $st: $out" eval '[ $st -eq 0 ] && [[ $out == *"MiB written"* ]] && [ -s "$work/clisnap/state" ]'
"$godwit" run --restore "$work/apisnap" --name api-restored </dev/null >"$work/restored.log" 2>&1 &
restored_pid=$!; pids+=("$restored_pid")
for _ in $(seq 1 600); do grep -q 'godwit-guest: tick' "$work/restored.log" && break; sleep 0.1; done
first=$(grep -o 'tick [0-9]*' "$work/restored.log" | head -n 1 | cut -d' ' -f2)
"$godwit" stop api-restored; wait_vm "$restored_pid"; st=$?
check restore_ticks_on "status $st, first tick '$first' after $snap_tick: $(tail -n 3 "$work/restored.log")" \
  eval '[ $st -eq 6 ] && [ "${first:-0}" -ge "$snap_tick" ]'

# --- bad requests
r=$(api GET /nowhere); check unknown_path_404 "got: $r" eval '[[ $r == "404 "*"\"error\""* ]]'
r=$(api DELETE /vm); check wrong_method_405 "got: $r" eval '[[ $r == "405 "*"\"error\""* ]]'
r=$(api POST /vm/pause); check post_on_put_route_405 "got: $r" eval '[[ $r == "405 "* ]]'
head -c 70000 /dev/zero | tr '\0' 'x' >"$work/big"
r=$(api PUT /vm/pause --data-binary @"$work/big"); check oversized_body_413 "got: $r" eval '[[ $r == "413 "* ]]'
big_header=$(head -c 9000 /dev/zero | tr '\0' 'h')
r=$(api GET /vm -H "X-Big: $big_header"); check oversized_head_431 "got: $r" eval '[[ $r == "431 "* ]]'
r=$($py - "$sock" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.settimeout(10)
s.sendall(b"THIS IS NOT HTTP\r\n\r\n"); print(s.recv(200).split(b"\r\n")[0].decode())
PY
)
check malformed_request_400 "got: $r" eval '[[ $r == *" 400 "* ]]'

# --- slow and vanishing clients harm nothing; the slow one is cut off
$py - "$sock" >"$work/slow" 2>&1 <<'PY' &
import socket, sys, time
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.settimeout(15)
s.sendall(b"GET /vm HTTP/1.1\r\nHo"); t = time.time()
data = s.recv(200)
print("closed after %.1f s: %s" % (time.time() - t, data.split(b"\r\n")[0].decode()))
PY
slow_pid=$!
$py - "$sock" <<'PY'
import socket, sys
for _ in range(50):
    s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(b"PUT /vm/pa"); s.close()
PY
r=$(api GET /vm); check served_during_slow_clients "got: $r" eval '[[ $r == "200 "* ]]'
wait_vm "$slow_pid" 30
out=$(cat "$work/slow")
check slow_client_timed_out "slow client: $out" eval '[[ $out == *"408"* ]]'
check vm_survived_clients "the VMM died" kill -0 "$vm_pid"

# --- names are unique on the host
"$godwit" run --name api-test --kernel "$kernel_vmlinux" </dev/null >"$work/dup.log" 2>&1; st=$?
check duplicate_name_refused "status $st: $(cat "$work/dup.log")" eval '[ $st -eq 2 ] && grep -q "already running" "$work/dup.log"'

# --- shutdown: the guest powers off through the ACPI power button
"$godwit" shutdown api-test
wait_vm "$vm_pid"; st=$?
check shutdown_powers_off "exit status $st" eval '[ $st -eq 0 ] && grep -q "power button pressed" "$log"'
check socket_removed "the socket is still there" test ! -e "$sock"

# --- a VM killed with SIGKILL leaves a stale socket; the next one with that name takes over
start_vm stale-test "$work/vm2.log" || fail stale_setup "the guest did not start"
kill -KILL "$vm_pid"; wait "$vm_pid" 2>/dev/null
start_vm stale-test "$work/vm3.log"; st=$?
sock=$(sock_of stale-test)
r=$(api GET /vm)
check stale_socket_replaced "start $st, then $r" eval '[ $st -eq 0 ] && [[ $r == "200 "* ]]'
"$godwit" stop stale-test; wait_vm "$vm_pid"; st=$?
check stop_exits_6 "exit status $st" test "$st" -eq 6

# --- under a systemd-like supervisor: READY=1 once running, SIGTERM powers the guest off
notify=$work/notify.sock
$py - "$notify" >"$work/notify.log" 2>&1 <<'PY' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.bind(sys.argv[1]); s.settimeout(120)
try:
    while True:
        print(s.recv(4096).decode().replace("\n", " | "), flush=True)
except socket.timeout:
    pass
PY
notify_pid=$!; pids+=("$notify_pid")
for _ in $(seq 1 50); do [ -S "$notify" ] && break; sleep 0.1; done
NOTIFY_SOCKET=$notify start_vm systemd-test "$work/vm4.log"
kill -TERM "$vm_pid"; wait_vm "$vm_pid"; st=$?
sleep 0.5
check systemd_ready_notified "notifications: $(cat "$work/notify.log")" grep -q "READY=1" "$work/notify.log"
check systemd_stopping_notified "notifications: $(cat "$work/notify.log")" grep -q "STOPPING=1" "$work/notify.log"
check sigterm_powers_off "exit status $st" eval '[ $st -eq 0 ] && grep -q "power button pressed" "$work/vm4.log"'

# --- the library example embeds a VM: events arrive, pause/resume work, power-off ends it
"$(dirname "$godwit")/godwit-embed-example" "$kernel_vmlinux" "$initrd" \
  "console=ttyS0 reboot=acpi panic=1 quiet godwit.test=poweroff" >"$work/embed.out" 2>&1; st=$?
check library_example "status $st: $(grep embed: "$work/embed.out" | tr '\n' ' ')" eval '[ $st -eq 0 ] &&
  grep -q "embed: event: started" "$work/embed.out" && grep -q "embed: state: paused" "$work/embed.out" &&
  grep -q "embed: event: powered off" "$work/embed.out" && grep -q "godwit-guest: poweroff" "$work/embed.out"'

# --- as tools/systemd/godwit@.service runs it: an unprivileged user in the kvm group with
# CAP_NET_ADMIN (ambient, for its tap) and CAP_IPC_LOCK (for making its ring) and no way to
# gain more; XDG_RUNTIME_DIR=/run puts its socket in /run/godwit, which systemd makes for that
# user. Root's commands find it there.
svc_uid=64123 svc_gid=64123 kvm_gid=64124
svc=$work/service
mkdir -p "$svc" && cp "$kernel_vmlinux" "$svc/vmlinux" && cp "$initrd" "$svc/initrd" &&
  chown -R $svc_uid:$svc_gid "$svc" && chmod 711 "$work"
kvm_mode=$(stat -c '%g %a' /dev/kvm) tun_mode=$(stat -c '%a' /dev/net/tun)
chgrp $kvm_gid /dev/kvm && chmod 660 /dev/kvm
chmod 666 /dev/net/tun # as udev leaves it: opening it is no privilege, making a tap is
mkdir -p /run/godwit && chown $svc_uid:$svc_gid /run/godwit && chmod 700 /run/godwit
run_as=(setpriv --reuid=$svc_uid --regid=$svc_gid --groups=$kvm_gid --no-new-privs
        --inh-caps=-all,+net_admin,+ipc_lock --ambient-caps=-all,+net_admin,+ipc_lock
        --bounding-set=-all,+net_admin,+ipc_lock
        env XDG_RUNTIME_DIR=/run)
saved_kernel=$kernel_vmlinux saved_initrd=$initrd
kernel_vmlinux=$svc/vmlinux initrd=$svc/initrd
start_vm svc-test "$svc/vm.log" --net tap=gwsvc0,mac=52:54:00:00:05:01; st=$?
run_as=() kernel_vmlinux=$saved_kernel initrd=$saved_initrd
check service_user_runs_vm "start $st: $(tail -n 5 "$svc/vm.log" | tr '\n' ' ')" test $st -eq 0
check service_user_made_its_tap "no gwsvc0: $(ip -br link 2>&1 | tr '\n' ' ')" ip link show gwsvc0
# godwit keeps CAP_NET_ADMIN alone (a guest reboot makes its tap again): CAP_IPC_LOCK is gone
# from the sets it could use, left only in the bounding set, which a process without
# CAP_SETPCAP cannot shrink and which no_new_privs keeps it from gaining anything from.
caps=$(awk '/^Cap(Eff|Prm|Amb|Bnd):/ {printf "%s=%s ", $1, $2}' /proc/$vm_pid/status 2>/dev/null)
beyond=0
for c in $caps; do
  allowed=0x1000; [ "${c%%=*}" = CapBnd: ] && allowed=0x5000 # CAP_NET_ADMIN, CAP_IPC_LOCK
  [ $((0x${c#*=} & ~allowed)) -eq 0 ] || beyond=1
done
check service_user_keeps_net_admin_alone "capability sets: $caps" eval '[ -n "$caps" ] && [ $beyond -eq 0 ]'
out=$("$godwit" ps 2>&1)
check root_ps_sees_service_vm "$out" grep -q '^svc-test ' <<<"$out"
"$godwit" stop svc-test; wait_vm "$vm_pid"; st=$?
check root_stops_service_vm "exit status $st: $(tail -n 3 "$svc/vm.log" | tr '\n' ' ')" test "$st" -eq 6
ip link del gwsvc0 2>/dev/null
chgrp "${kvm_mode% *}" /dev/kvm; chmod "${kvm_mode#* }" /dev/kvm; chmod "$tun_mode" /dev/net/tun

# --- --jail: the VM in new mount, PID and IPC namespaces, rooted in a directory that holds only
# what it needs, as an unprivileged user without capabilities; its API socket under
# DIR/run/godwit, where root's commands reach it by path.
# It also joins a network namespace (--netns) and runs in a cgroup v2 of its own with limits
# (--cgroup), removed when it ends.
jail=$work/jail
truncate -s 16M "$svc/jail-disk.img" && chown $svc_uid:$svc_gid "$svc/jail-disk.img"
[ "$(stat -f -c %T /sys/fs/cgroup 2>/dev/null)" = cgroup2fs ] || mount -t cgroup2 none /sys/fs/cgroup
ip netns add gwjailns
"$godwit" run --jail "$jail" --uid $svc_uid --gid $svc_gid --name jail-test \
  --netns gwjailns --cgroup memory.max=1G --cgroup pids.max=256 \
  --kernel "$svc/vmlinux" --initrd "$svc/initrd" --memory 256 --cpus 2 --disk "path=$svc/jail-disk.img" \
  --cmdline "console=ttyS0 reboot=acpi panic=1 quiet godwit.test=ticker" </dev/null >"$svc/jail.log" 2>&1 &
jail_pid=$!; pids+=("$jail_pid")
st=1
for _ in $(seq 1 1800); do
  grep -q 'godwit-guest: tick 2 ' "$svc/jail.log" && { st=0; break; }
  kill -0 "$jail_pid" 2>/dev/null || break
  sleep 0.1
done
check jail_runs_vm "$(tail -n 5 "$svc/jail.log" | tr '\n' ' ')" test $st -eq 0
inner=$(pgrep -P "$jail_pid" | head -n 1)
ids=$(awk '/^(Uid|Gid):/ {print $2, $3, $4, $5}' /proc/${inner:-0}/status 2>/dev/null | sort -u | tr '\n' ' ')
check jail_unprivileged_user "uids and gids: '$ids'" test "$ids" = "$svc_uid $svc_uid $svc_uid $svc_uid "
caps=$(awk '/^Cap(Eff|Prm|Amb):/ {print $2}' /proc/${inner:-0}/status 2>/dev/null | sort -u | tr '\n' ' ')
check jail_no_capabilities "capability sets: '$caps'" test "$caps" = "0000000000000000 "
nspid=$(awk '/^NSpid:/ {print $NF}' /proc/${inner:-0}/status 2>/dev/null)
check jail_pid_namespace "NSpid ends in '$nspid'" test "$nspid" = 1
check jail_root_holds_only_the_vm "its root: $(ls /proc/${inner:-0}/root/ 2>&1 | tr '\n' ' '), /dev: $(ls /proc/${inner:-0}/root/dev 2>&1 | tr '\n' ' ')" \
  eval '[ ! -e /proc/${inner:-0}/root/etc ] && [ ! -e /proc/${inner:-0}/root/usr ] && [ "$(ls /proc/${inner:-0}/root/dev | tr "\n" " ")" = "kvm null urandom " ]'
jail_sock=$jail/run/godwit/jail-test.sock
r=$(curl -s --max-time 10 --unix-socket "$jail_sock" http://localhost/vm)
check jail_api_reachable "got: $r" eval '[[ $r == *"\"state\":\"running\""* ]]'
cg=/sys/fs/cgroup/godwit/jail-test
limits="$(cat $cg/memory.max $cg/pids.max 2>&1 | tr '\n' ' ')"
check jail_cgroup_limits "$cg: '$limits'" test "$limits" = "1073741824 256 "
check jail_in_its_cgroup "$cg/cgroup.procs: $(cat $cg/cgroup.procs 2>&1 | tr '\n' ' '); the VM is ${inner:-none}" \
  grep -qx "${inner:-none}" $cg/cgroup.procs
outside=$(for f in /proc/${inner:-0}/fd/*; do readlink "$f"; done 2>/dev/null | grep '^/sys/fs/cgroup' | tr '\n' ' ')
check jail_holds_no_cgroup_fd "open outside the jail: $outside" test -z "$outside"
check jail_netns "the VM's: $(stat -L -c %i /proc/${inner:-0}/ns/net 2>&1), gwjailns: $(stat -L -c %i /run/netns/gwjailns 2>&1)" \
  test "$(stat -L -c %i /proc/${inner:-0}/ns/net 2>&1)" = "$(stat -L -c %i /run/netns/gwjailns)"
"$godwit" stop "$jail_sock"; wait_vm "$jail_pid"; st=$?
check jail_stop_exits_6 "exit status $st: $(tail -n 3 "$svc/jail.log" | tr '\n' ' ')" test "$st" -eq 6
check jail_cgroup_removed "$cg is still there" test ! -e $cg
ip netns del gwjailns

# --- the OpenAPI document and the server agree
doc_routes=$(awk '/^  \/vm/{p=$1; sub(":","",p)} /^    (get|put|post|patch|delete):/{m=$1; sub(":","",m); print toupper(m) " " p}' "$root/docs/api.yaml" | sort)
code_routes=$(grep -o '{ "[A-Z]*", "/[a-z/-]*"' "$root/src/api/server.c" | sed 's/{ "\([A-Z]*\)", "\([^"]*\)"/\1 \2/' | sort)
check openapi_matches_server "doc: [$doc_routes] server: [$code_routes]" test "$doc_routes" = "$code_routes"

echo "api: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
