#!/usr/bin/env bash
# run-agent.sh: the guest agent in the default guest (started by its init) over virtio-vsock:
# godwit exec, cp, kvp and agent-info against one guest booted once for all the cases.
# Needs a /dev/kvm that runs unmodified kernels (tools/run-tests.sh runs it in the test host).
# Usage: tests/e2e/run-agent.sh BUILD_DIR
#   GODWIT_AGENT_CASES="exec cp" runs only those; GODWIT_AGENT_BIG_MIB sets the large
#   output's size (default 100).
set -uo pipefail

build=${1:?usage: run-agent.sh BUILD_DIR}
godwit=$(readlink -f "$build/godwit")
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=$(mktemp -d /tmp/godwit-agent.XXXXXX)
vm_pid=
cleanup() {
  [ -n "$vm_pid" ] && kill "$vm_pid" 2>/dev/null
  keep_logs
  rm -rf "$work"
}
trap cleanup EXIT

eval "$("$root/guests/build-guest.sh" --print)" || { echo "agent: default guest not built (guests/build-guest.sh)"; exit 2; }
[ -c /dev/kvm ] || { echo "agent: /dev/kvm missing"; exit 2; }
. "$here/lib.sh"

big_mib=${GODWIT_AGENT_BIG_MIB:-100}
log=$work/agent.log
api=$log.api
# g ARGS...: godwit ARGS, given up on after $g_limit s (default 120; the slowest call takes a
# few seconds) with what was waiting: the VM's stall report and the guest agent's processes. A
# call that hangs fails its case with the report instead of running into the suite's timeout.
g() {
  timeout -k 5 "${g_limit:-120}" "$godwit" "$@"
  local status=$?
  [ $status -eq 124 ] || [ $status -eq 137 ] && stuck_report "$*" >&2
  return $status
}
stuck_report() {
  echo "agent: 'godwit $1' got no answer within ${g_limit:-120} s; what waited:"
  stall_report "$log" "$api" "$vm_pid"
  # A second connection to the agent, if it still takes one: its processes and their stacks.
  timeout -k 5 60 "$godwit" exec "$api" -- sh -c 'for p in $(pidof godwit-agent); do
      echo "guest: agent $p $(cut -d" " -f3 /proc/$p/stat) $(tr "\n" " " </proc/$p/stack | cut -c1-200)"
    done; echo "guest: $(grep -c . /proc/mounts) mounts, freeze timer $(cat /run/godwit-agent/freeze-timer.pid 2>/dev/null)"' 2>&1 ||
    echo "guest: the agent took no second connection either"
}

# The guest: a script that ticks (the watchdog's progress) while the host drives its agent.
script=$work/script.img
truncate -s 64M "$work/data.img"
printf 'echo agent-guest: up\nwhile :; do sleep 5; echo tick; done\n' >"$script"
truncate -s 4096 "$script"
# start_vm API ARGS...: godwit run ARGS with its API on API, its output appended to $log, as
# the suite's VM ($vm_pid, $api) under the progress watchdog ($wd_pid).
start_vm() {
  api=$1
  shift
  timeout -k 5 1500 "$godwit" run "$@" --api-socket "$api" </dev/null >>"$log" 2>&1 &
  vm_pid=$!
  watch_progress "$log" "$api" "$vm_pid" &
  wd_pid=$!
}
start_vm "$api" --kernel "$kernel_bzimage" --initrd "$initrd" --memory 512 \
  --cmdline "console=ttyS0 reboot=acpi panic=1 quiet godwit.test=script" \
  --disk "path=$script,readonly=on,serial=godwit-script" --disk "path=$work/data.img" --vsock cid=3

# The agent answers once the guest's init has started it: up to 180 s in the test host.
up=0
if wait_for_line "$log" 'agent-guest: up' "$vm_pid" 240; then
  for _ in $(seq 120); do
    g exec "$api" -- true 2>/dev/null && { up=1; break; }
    kill -0 "$vm_pid" 2>/dev/null || break
    sleep 1
  done
fi

expect_eq() { # NAME WHAT GOT WANT: one check of a case; 1 when it failed
  [ "$3" == "$4" ] && return 0
  fail "$1" "$2: got '$3', want '$4'"
  return 1
}

case_exec() {
  local n=exec ok=1
  g exec "$api" -- true; expect_eq $n "true" $? 0 || ok=0
  g exec "$api" -- sh -c 'exit 7'; expect_eq $n "exit 7" $? 7 || ok=0
  g exec "$api" -- /no/such/command 2>/dev/null; expect_eq $n "a missing command" $? 127 || ok=0
  g exec "$api" -- sh -c 'kill -TERM $$'; expect_eq $n "killed by SIGTERM" $? 143 || ok=0
  local out
  out=$(g exec "$api" -- sh -c 'echo out; echo err >&2' 2>"$work/err")
  expect_eq $n "stdout" "$out" out || ok=0
  expect_eq $n "stderr" "$(cat "$work/err")" err || ok=0
  out=$(g exec "$api" -- uname -r)
  expect_eq $n "uname -r" "$out" "$kernel_version" || ok=0
  [ $ok -eq 1 ] && pass $n
}

# A large output, counted and checksummed: random bytes the guest made, against its own sum.
case_big_output() {
  local n=big_output bytes=$((big_mib * 1048576)) want got count t0 t1
  g exec "$api" -- sh -c "head -c $bytes /dev/urandom >/tmp/big" || { fail $n "cannot make /tmp/big in the guest"; return; }
  want=$(g exec "$api" -- sha256sum /tmp/big | cut -d' ' -f1)
  t0=$(date +%s.%N)
  got=$(g exec "$api" -- cat /tmp/big | tee >(wc -c >"$work/count") | sha256sum | cut -d' ' -f1)
  t1=$(date +%s.%N)
  sleep 0.2
  count=$(cat "$work/count")
  g exec "$api" -- rm -f /tmp/big
  expect_eq $n "bytes" "$count" "$bytes" && expect_eq $n "sha256" "$got" "$want" || return
  echo "agent: $big_mib MiB of output in $(echo "$t1 - $t0" | bc) s"
  pass $n
}

case_stdin() {
  local n=stdin want got
  head -c $((8 * 1048576)) /dev/urandom >"$work/in"
  want=$(sha256sum <"$work/in" | cut -d' ' -f1)
  got=$(g exec "$api" -- sha256sum <"$work/in" | cut -d' ' -f1)
  expect_eq $n "sha256 of stdin" "$got" "$want" || return
  got=$(g exec "$api" -- cat <"$work/in" | sha256sum | cut -d' ' -f1)
  expect_eq $n "stdin through cat" "$got" "$want" || return
  pass $n
}

# SIGINT to godwit exec reaches the command, which traps it and exits 3.
case_signal() {
  local n=signal
  python3 - "$godwit" "$api" <<'PY' || { fail $n "the trapped SIGINT did not come back as exit 3"; return; }
import signal, subprocess, sys
p = subprocess.Popen([sys.argv[1], "exec", sys.argv[2], "--", "sh", "-c",
                      'trap "echo trapped; exit 3" INT; echo ready; sleep 60 & wait'],
                     stdout=subprocess.PIPE)
assert p.stdout.readline() == b"ready\n"
p.send_signal(signal.SIGINT)
out, _ = p.communicate(timeout=60)
print(out, p.returncode)
sys.exit(0 if (out, p.returncode) == (b"trapped\n", 3) else 1)
PY
  local out
  out=$(g exec "$api" -t -- sh -c 'tty' </dev/null | tr -d '\r')
  case $out in /dev/pts/*) ;; *) fail $n "exec -t: tty says '$out'"; return ;; esac
  pass $n
}

case_cp() {
  local n=cp got
  head -c $((16 * 1048576)) /dev/urandom >"$work/f1"
  chmod 0751 "$work/f1"
  g cp "$work/f1" "$api:/tmp/f1" || { fail $n "cp to the guest failed"; return; }
  got=$(g exec "$api" -- sh -c 'sha256sum /tmp/f1; stat -c %a /tmp/f1' | cut -d' ' -f1 | tr '\n' ' ')
  expect_eq $n "in the guest" "$got" "$(sha256sum <"$work/f1" | cut -d' ' -f1) 751 " || return
  g exec "$api" -- sh -c 'cp /tmp/f1 /tmp/f2 && chmod 0640 /tmp/f2 && echo appended >>/tmp/f2'
  g cp "$api:/tmp/f2" "$work/f2" || { fail $n "cp from the guest failed"; return; }
  { cat "$work/f1"; echo appended; } >"$work/f2.want"
  cmp -s "$work/f2" "$work/f2.want" || { fail $n "the copy from the guest differs"; return; }
  expect_eq $n "mode from the guest" "$(stat -c %a "$work/f2")" 640 || return
  g cp "$api:/no/such/file" "$work/none" 2>/dev/null; expect_eq $n "a missing file" $? 1 || return
  [ -e "$work/none" ] && { fail $n "a failed copy left a file"; return; }
  pass $n
}

case_kvp() {
  local n=kvp got
  g kvp "$api" set color blue || { fail $n "kvp set failed"; return; }
  got=$(g exec "$api" -- sh -c 'cat /var/lib/godwit-agent/host/color 2>/dev/null || cat /run/godwit-agent/host/color')
  expect_eq $n "the guest reads the host's key" "$got" blue || return
  expect_eq $n "kvp get --pool host" "$(g kvp "$api" --pool host get color)" blue || return
  g exec "$api" -- sh -c 'd=/var/lib/godwit-agent/guest; [ -d $d ] || d=/run/godwit-agent/guest; printf ready >$d/status'
  expect_eq $n "the host reads the guest's key" "$(g kvp "$api" get status)" ready || return
  expect_eq $n "kvp list" "$(g kvp "$api" list)" status=ready || return
  g kvp "$api" delete color || { fail $n "kvp delete failed"; return; }
  g kvp "$api" --pool host get color 2>/dev/null; expect_eq $n "a deleted key" $? 1 || return
  pass $n
}

case_info() {
  local n=info out
  out=$(g agent-info "$api")
  grep -q "^kernel  *Linux $kernel_version" <<<"$out" || { fail $n "agent-info: $out"; return; }
  pass $n
}

# One field of GET /vm's "agent" (Python's spelling: True, False, None when absent).
agent_field() {
  curl -s -m 5 --unix-socket "$api" http://localhost/vm |
    python3 -c 'import json, sys; print(json.load(sys.stdin).get("agent", {}).get(sys.argv[1]))' "$1"
}

# agent_alive_is WANT SECS: GET /vm's agent.alive reads WANT (True or False) within SECS.
agent_alive_is() {
  local _
  for _ in $(seq "$2"); do
    [ "$(agent_field alive)" = "$1" ] && return 0
    sleep 1
  done
  return 1
}

# The heartbeat: GET /vm shows the agent alive, its last answer under 3 s old, and what it
# said of the guest; an agent that stops answering (every agent process stopped, SIGSTOP) is
# lost, and found again once it goes on (SIGCONT).
case_heartbeat() {
  local n=heartbeat age
  agent_alive_is True 10 || { fail $n "GET /vm: agent.alive is '$(agent_field alive)'"; return; }
  age=$(agent_field heartbeat_age_ms)
  [ "${age:-None}" != None ] && [ "$age" -lt 3000 ] || { fail $n "heartbeat age '$age' ms"; return; }
  [[ $(agent_field kernel) == *"$kernel_version"* ]] || { fail $n "agent.kernel '$(agent_field kernel)'"; return; }
  g exec "$api" -- sh -c 'setsid sh -c "sleep 1; kill -STOP \$(pidof godwit-agent); sleep 15; kill -CONT \$(pidof godwit-agent)" </dev/null >/dev/null 2>&1 &' ||
    { fail $n "cannot start the agent's stop in the guest"; return; }
  agent_alive_is False 14 || { fail $n "still alive 14 s after its agent stopped (age $(agent_field heartbeat_age_ms) ms)"; return; }
  agent_alive_is True 40 || { fail $n "not found again after its agent went on"; return; }
  pass $n
}

# finished PID SECS: PID ends within SECS (status 0), or not (1).
finished() {
  local _
  for _ in $(seq $(($2 * 10))); do
    kill -0 "$1" 2>/dev/null || return 0
    sleep 0.1
  done
  return 1
}

# An ext4 on vdb at /mnt in the guest, made once.
mount_data() {
  g exec "$api" -- sh -c 'grep -q " /mnt " /proc/mounts ||
    { mke2fs -q /dev/vdb >/dev/null 2>&1 && mkdir -p /mnt && mount -t ext4 /dev/vdb /mnt; }'
}

# written_within SECS FILE: a write and sync to /mnt/FILE in the guest ends within SECS (the
# filesystem is not frozen).
written_within() {
  local w
  g exec "$api" -- sh -c "echo $2 >/mnt/$2; sync" &
  w=$!
  finished $w "$1" && wait $w && return 0
  kill $w 2>/dev/null
  return 1
}

# Freezing: a writer to the frozen ext4 (vdb) waits until the thaw; a freeze nobody thaws
# ends by itself at its timeout.
case_freeze() {
  local n=freeze out w
  mount_data || { fail $n "cannot mount an ext4 on vdb"; return; }
  out=$(g freeze "$api" 120)
  expect_eq $n "freeze" "$out" "froze 1 filesystem(s); the agent thaws them itself after the timeout" || return
  g exec "$api" -- sh -c 'echo one >/mnt/f; sync' &
  w=$!
  if finished $w 5; then
    fail $n "a write to the frozen filesystem went through"
    g thaw "$api" >/dev/null
    return
  fi
  expect_eq $n "thaw" "$(g thaw "$api")" "thawed 1 filesystem(s)" || return
  finished $w 30 || { fail $n "the writer still waits after the thaw"; kill $w; return; }
  wait $w; expect_eq $n "the writer's status" $? 0 || return
  g freeze "$api" 3 >/dev/null
  g exec "$api" -- sh -c 'echo two >/mnt/g; sync' &
  w=$!
  finished $w 60 || { fail $n "the freeze's own timeout did not thaw"; g thaw "$api"; kill $w; return; }
  expect_eq $n "after the timeout" "$(g exec "$api" -- cat /mnt/f /mnt/g | tr '\n' ' ')" "one two " || return
  pass $n
}

# The guest's clock minus the host's, in seconds.
clock_off() {
  local before after
  before=$(date +%s)
  after=$(g exec "$api" -- date +%s) || return 1
  echo $((after - before))
}

# clock_near NAME WHEN: the guest's clock is within 2 s of the host's after WHEN (else a failure).
clock_near() {
  local off
  off=$(clock_off) || { fail "$1" "no answer from the agent after the $2"; return 1; }
  [ "${off#-}" -le 2 ] || { fail "$1" "the guest's clock is ${off} s off the host's after the $2"; return 1; }
  grep -a 'godwit-agent: clock stepped' "$log" | tail -n 1 # the agent's own line, when the clock was off
}

# An hour back: only the agent's step can bring the guest's clock right again.
clock_back() {
  local then
  then=$(date -u -d "@$(($(date +%s) - 3600))" '+%Y-%m-%d %H:%M:%S')
  g exec "$api" -- date -u -s "$then" >/dev/null && [ "$(clock_off)" -le -3500 ]
}

# api_req METHOD PATH [BODY]: one API request to the VM; the status printed, the response's
# body in $api_out ($work/api.out unless set).
api_req() {
  local data=()
  [ $# -ge 3 ] && data=(-H 'Content-Type: application/json' --data-binary "$3")
  curl -s -m 120 --unix-socket "$api" -X "$1" "${data[@]}" -o "${api_out:-$work/api.out}" \
    -w '%{http_code}' "http://localhost$2"
}

# json_field NAME: a field of the last response as JSON ("text\n", 3, null when absent).
json_field() {
  python3 -c 'import json, sys; print(json.dumps(json.load(open(sys.argv[1])).get(sys.argv[2])))' \
    "$work/api.out" "$1"
}

# The agent through the REST API (docs/api.yaml): exec with stdin, status and both streams, a
# command that cannot start, its bounds (1 MiB of output, its timeout), and a long exec that
# stalls neither GET /vm nor another exec.
case_api_exec() {
  local n=api_exec t0 t1
  expect_eq $n "exec" "$(api_req PUT /vm/agent/exec '{"argv": ["sh", "-c", "cat; echo err >&2; exit 3"], "stdin": "hello\n"}')" 200 || return
  expect_eq $n "exit_status" "$(json_field exit_status)" 3 || return
  expect_eq $n "stdout" "$(json_field stdout)" '"hello\n"' || return
  expect_eq $n "stderr" "$(json_field stderr)" '"err\n"' || return
  expect_eq $n "a missing command" "$(api_req PUT /vm/agent/exec '{"argv": ["/no/such/command"]}')" 200 || return
  expect_eq $n "its exit_status" "$(json_field exit_status)" 127 || return
  expect_eq $n "a bad body" "$(api_req PUT /vm/agent/exec '{"argv": []}')" 400 || return
  expect_eq $n "2 MB of output" "$(api_req PUT /vm/agent/exec '{"argv": ["head", "-c", "2000000", "/dev/zero"]}')" 413 || return
  t0=$(date +%s)
  expect_eq $n "past its timeout" "$(api_req PUT /vm/agent/exec '{"argv": ["sleep", "60"], "timeout_s": 2}')" 504 || return
  t1=$(date +%s)
  [ $((t1 - t0)) -le 10 ] || { fail $n "the timeout of 2 s answered after $((t1 - t0)) s"; return; }
  (api_out=$work/slow.out api_req PUT /vm/agent/exec '{"argv": ["sleep", "8"]}' >"$work/slow.status") &
  local slow=$!
  sleep 2
  t0=$(date +%s.%N)
  expect_eq $n "GET /vm during a long exec" "$(api_req GET /vm)" 200 || return
  expect_eq $n "another exec meanwhile" "$(api_req PUT /vm/agent/exec '{"argv": ["echo", "side"]}')" 200 || return
  t1=$(date +%s.%N)
  [ "$(echo "$t1 - $t0 < 3" | bc)" = 1 ] || { fail $n "served in $(echo "$t1 - $t0" | bc) s during a long exec"; return; }
  wait $slow
  expect_eq $n "the long exec" "$(cat "$work/slow.status")" 200 || return
  pass $n
}

# KVP both ways through the API, freeze and thaw, the clock.
case_api_agent() {
  local n=api_agent
  expect_eq $n "kvp put" "$(api_req PUT /vm/agent/kvp '{"key": "api_color", "value": "green"}')" 204 || return
  expect_eq $n "the guest reads it" "$(g exec "$api" -- sh -c 'cat /var/lib/godwit-agent/host/api_color 2>/dev/null || cat /run/godwit-agent/host/api_color')" green || return
  expect_eq $n "kvp get (host)" "$(api_req GET '/vm/agent/kvp?pool=host&key=api_color')" 200 || return
  expect_eq $n "its value" "$(json_field value)" '"green"' || return
  g exec "$api" -- sh -c 'd=/var/lib/godwit-agent/guest; [ -d $d ] || d=/run/godwit-agent/guest; printf up >$d/api_state'
  expect_eq $n "kvp get (guest)" "$(api_req GET '/vm/agent/kvp?key=api_state')" 200 || return
  expect_eq $n "the guest's value" "$(json_field value)" '"up"' || return
  expect_eq $n "kvp list (guest)" "$(api_req GET '/vm/agent/kvp?pool=guest')" 200 || return
  python3 -c 'import json, sys; sys.exit(json.load(open(sys.argv[1]))["entries"].get("api_state") != "up")' "$work/api.out" ||
    { fail $n "the guest pool's list: $(cat "$work/api.out")"; return; }
  expect_eq $n "kvp put to the guest pool" "$(api_req PUT /vm/agent/kvp '{"pool": "guest", "key": "k", "value": "v"}')" 403 || return
  expect_eq $n "kvp delete" "$(api_req DELETE '/vm/agent/kvp?pool=host&key=api_color')" 204 || return
  expect_eq $n "a deleted key" "$(api_req GET '/vm/agent/kvp?pool=host&key=api_color')" 404 || return
  g exec "$api" -- sh -c 'grep -q " /mnt " /proc/mounts || { mke2fs -q /dev/vdb >/dev/null 2>&1 && mkdir -p /mnt && mount -t ext4 /dev/vdb /mnt; }' ||
    { fail $n "cannot mount an ext4 on vdb"; return; }
  expect_eq $n "freeze" "$(api_req PUT /vm/agent/freeze '{"timeout_s": 60}')" 200 || return
  expect_eq $n "filesystems frozen" "$(json_field filesystems)" 1 || return
  expect_eq $n "thaw" "$(api_req PUT /vm/agent/thaw)" 200 || return
  expect_eq $n "filesystems thawed" "$(json_field filesystems)" 1 || return
  expect_eq $n "sync-time" "$(api_req PUT /vm/agent/sync-time)" 204 || return
  pass $n
}

# raw_put PATH LENGTH SENT [expect]: a PUT /vm/agent/file whose head says LENGTH bytes, SENT of
# them sent before the client stops sending (with "expect": Expect: 100-continue and nothing
# sent); prints the final answer's status.
raw_put() {
  python3 - "$api" "$@" <<'PY'
import socket, sys
api, path, length, sent = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
expect = len(sys.argv) > 5
s = socket.socket(socket.AF_UNIX)
s.settimeout(60)
s.connect(api)
head = "PUT /vm/agent/file?path=%s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n" % (path, length)
s.sendall((head + ("Expect: 100-continue\r\n" if expect else "") + "\r\n").encode() + b"x" * sent)
s.shutdown(socket.SHUT_WR)
got = s.makefile("rb").read()
lines = [l for l in got.split(b"\r\n") if l.startswith(b"HTTP/1.1 ") and not l.startswith(b"HTTP/1.1 100")]
print(lines[0].split()[1].decode() if lines else "none")
PY
}

# Files through the REST API (GET and PUT /vm/agent/file): 20 MiB up and back down with curl,
# the mode kept both ways; a missing file 404, a bad mode or path 400, a file over the agent's
# limit 413 before its body is sent, an upload that ends early 400 with the guest's file as it was.
case_api_cp() {
  local n=api_cp got want
  head -c $((20 * 1048576)) /dev/urandom >"$work/a1"
  want=$(sha256sum <"$work/a1" | cut -d' ' -f1)
  got=$(curl -s -m 300 --unix-socket "$api" -T "$work/a1" -o "$work/api.out" -w '%{http_code}' \
    'http://localhost/vm/agent/file?path=/tmp/a1&mode=0751')
  expect_eq $n "upload" "$got" 204 || { cat "$work/api.out"; return; }
  got=$(g exec "$api" -- sh -c 'sha256sum /tmp/a1; stat -c %a /tmp/a1' | cut -d' ' -f1 | tr '\n' ' ')
  expect_eq $n "in the guest" "$got" "$want 751 " || return
  got=$(curl -s -m 300 --unix-socket "$api" -D "$work/a2.head" -o "$work/a2" -w '%{http_code}' \
    'http://localhost/vm/agent/file?path=%2Ftmp%2Fa1')
  expect_eq $n "download" "$got" 200 || return
  expect_eq $n "its sha256" "$(sha256sum <"$work/a2" | cut -d' ' -f1)" "$want" || return
  expect_eq $n "its mode" "$(tr -d '\r' <"$work/a2.head" | sed -n 's/^x-godwit-mode: //Ip')" 0751 || return
  g exec "$api" -- sh -c 'printf hi >/tmp/a3; chmod 0600 /tmp/a3'
  expect_eq $n "a small file" "$(api_req GET '/vm/agent/file?path=/tmp/a3')" 200 || return
  expect_eq $n "its bytes" "$(cat "$work/api.out")" hi || return
  expect_eq $n "a missing file" "$(api_req GET '/vm/agent/file?path=/no/such/file')" 404 || return
  expect_eq $n "a missing directory" "$(raw_put /no/such/dir/f 2 2)" 404 || return
  expect_eq $n "a relative path" "$(api_req GET '/vm/agent/file?path=tmp/a1')" 400 || return
  expect_eq $n "a directory" "$(api_req GET '/vm/agent/file?path=/tmp')" 400 || return
  got=$(curl -s -m 60 --unix-socket "$api" -T "$work/a1" -o "$work/api.out" -w '%{http_code}' \
    'http://localhost/vm/agent/file?path=/tmp/a1&mode=0999')
  expect_eq $n "a bad mode" "$got" 400 || return
  expect_eq $n "over the agent's limit" "$(raw_put /tmp/a1 $((5 * 1073741824)) 0 expect)" 413 || return
  expect_eq $n "a body that ends early" "$(raw_put /tmp/a1 1000000 1000)" 400 || return
  got=$(g exec "$api" -- sh -c 'sha256sum /tmp/a1; stat -c %a /tmp/a1; ls -a /tmp | grep -c godwit-' |
    cut -d' ' -f1 | tr '\n' ' ')
  expect_eq $n "the guest's file after both" "$got" "$want 751 0 " || return
  expect_eq $n "GET /vm after" "$(api_req GET /vm)" 200 || return
  pass $n
}

# A pause and resume through the API (not godwit resume, which steps the clock itself): the
# VMM has the agent step the guest's clock, set an hour back, to the host's.
case_api_resume() {
  local n=api_resume before line="guest clock stepped to the host's after the resume"
  clock_back || { fail $n "cannot set the guest's clock an hour back"; return; }
  before=$(grep -c "$line" "$log")
  expect_eq $n "pause" "$(api_req PUT /vm/pause)" 204 || return
  sleep 2
  expect_eq $n "resume" "$(api_req PUT /vm/resume)" 204 || return
  for _ in $(seq 30); do
    [ "$(grep -c "$line" "$log")" -gt "$before" ] && break
    sleep 1
  done
  [ "$(grep -c "$line" "$log")" -gt "$before" ] || { fail $n "no clock step logged after the resume"; return; }
  grep "$line" "$log" | tail -n 1
  # The monitor made the step: godwit resume's request, coming late, finds nothing owed.
  expect_eq $n "sync-time?after=resume after the step" \
    "$(api_req PUT '/vm/agent/sync-time?after=resume')" 204 || return
  clock_near $n "resume through the API" && pass $n
}

# After a pause of 10 s, godwit resume has the agent step the guest's clock to the host's:
# once, before it returns (the VMM's monitor, which a resume leaves the step to, makes no second).
case_clock() {
  local n=clock line="guest clock stepped to the host's after the resume" before
  before=$(grep -c "$line" "$log")
  "$godwit" pause "$api" || { fail $n "pause failed"; return; }
  sleep 10
  "$godwit" resume "$api" || { fail $n "resume failed"; return; }
  expect_eq $n "steps logged when godwit resume returned" $(($(grep -c "$line" "$log") - before)) 1 ||
    return
  clock_near $n resume || return
  sleep 3 # the monitor's next turns
  expect_eq $n "steps logged 3 s later" $(($(grep -c "$line" "$log") - before)) 1 && pass $n
}

# snapshot --freeze: the agent freezes the guest's filesystems for it and they are thawed
# after (a writer goes on at once); the VMM says so.
case_snapshot_freeze() {
  local n=snapshot_freeze out
  mount_data || { fail $n "cannot mount an ext4 on vdb"; return; }
  out=$(g snapshot "$api" "$work/snap-frozen" --freeze) || { fail $n "snapshot --freeze failed"; return; }
  echo "$out"
  [[ $out == *"filesystems frozen, thawed"* ]] || { fail $n "snapshot says '$out'"; return; }
  grep -q 'snapshot: froze [1-9][0-9]* filesystem' "$log" || { fail $n "the VMM did not log the freeze"; return; }
  grep -q 'snapshot: thawed [1-9][0-9]* filesystem' "$log" || { fail $n "the VMM did not log the thaw"; return; }
  written_within 10 after-snapshot || { fail $n "a writer still waits after the snapshot (not thawed)"; return; }
  pass $n
}

# ended_vm: the suite's VM ended (within 60 s; status 1 when not), its watchdog with it.
ended_vm() {
  finished "$vm_pid" 60 || return 1
  wait "$vm_pid"
  kill "$wd_pid" 2>/dev/null
  wait "$wd_pid" 2>/dev/null
  return 0
}

# A restore: the snapshot (taken frozen, and stopping the VM) on disk for 10 s, of a guest whose
# clock went an hour back. Once its agent answers, the VMM has it step the clock to the host's
# and thaw the filesystems the snapshot held frozen.
case_restore() {
  local n=restore dir=$work/snap-restore
  mount_data || { fail $n "cannot mount an ext4 on vdb"; return; }
  clock_back || { fail $n "cannot set the guest's clock an hour back"; return; }
  g snapshot "$api" "$dir" --freeze --stop || { fail $n "snapshot --freeze --stop failed"; return; }
  ended_vm || { fail $n "the VM did not stop after its snapshot"; return; }
  sleep 10
  start_vm "$api" --restore "$dir"
  wait_for_line "$log" "guest clock stepped to the host's after the restore" "$vm_pid" 90 ||
    { fail $n "no clock step logged after the restore"; return; }
  grep "after the restore" "$log" | tail -n 1
  clock_near $n restore || return
  written_within 10 after-restore || { fail $n "the restored guest's filesystem is still frozen"; return; }
  pass $n
}

# A local live migration of a guest whose clock went an hour back: the destination has the
# agent step it to the host's. Its vsock socket and API are its own (the source holds the
# first ones until it ends); the suite goes on with the destination.
case_migrate() {
  local n=migrate port=$((20000 + RANDOM % 20000)) src_api=$api _
  clock_back || { fail $n "cannot set the guest's clock an hour back"; return; }
  local src_pid=$vm_pid src_wd=$wd_pid
  start_vm "$work/dst.api" --incoming "tcp:127.0.0.1:$port" --vsock "cid=3,socket=$work/dst.vsock"
  local dst_pid=$vm_pid dst_wd=$wd_pid
  vm_pid=$src_pid wd_pid=$src_wd api=$src_api
  for _ in $(seq 20); do
    g migrate "$api" "tcp:127.0.0.1:$port" >"$work/migrate.out" 2>&1 && break
    sleep 0.5
  done
  tail -n 2 "$work/migrate.out"
  ended_vm || { fail $n "the source did not end after the migration"; kill "$dst_pid"; return; }
  vm_pid=$dst_pid wd_pid=$dst_wd api=$work/dst.api
  wait_for_line "$log" "guest clock stepped to the host's after the migration" "$vm_pid" 90 ||
    { fail $n "no clock step logged after the migration"; return; }
  grep "after the migration" "$log" | tail -n 1
  clock_near $n migration && pass $n
}

if [ $up -eq 1 ]; then
  for c in ${GODWIT_AGENT_CASES:-exec big_output stdin signal cp kvp info heartbeat freeze api_exec api_agent api_cp clock api_resume snapshot_freeze restore migrate}; do
    echo "-- $c"
    "case_$c"
  done
else
  fail agent "no agent answered godwit exec within the time"
fi

# The guest's init powers off when its reader of the ACPI power button reads a press: with
# that reader killed (a head -c 1 with /dev/input/eventN open: busybox runs it without an exec,
# under its shell's name), the guest ignores the button. Prints how many it killed.
ignore_power_button() {
  g exec "$api" -- sh -c 'n=0; for p in /proc/[0-9]*; do
      for f in $p/fd/*; do
        case "$(readlink $f 2>/dev/null)" in
          /dev/input/*) kill ${p#/proc/} && n=$((n + 1)); break ;;
        esac
      done
    done; echo $n'
}

# The end: the guest ignores the power button, and godwit shutdown still powers it off: the
# VMM asks the agent once the guest has not answered the button for 5 s (exit status 0).
if [ $up -eq 1 ]; then
  echo "-- shutdown"
  killed=$(ignore_power_button)
  [ "${killed:-0}" -ge 1 ] || fail shutdown "no reader of the power button found in the guest ('$killed')"
  if "$godwit" shutdown "$api" && finished "$vm_pid" 60; then
    wait "$vm_pid"
    status=$?
    expect_status shutdown 0 &&
      { grep -aq 'asking its agent to power off' "$log" || fail shutdown "the VMM's log does not say it asked the agent"; } &&
      { ! grep -aq 'godwit-guest: power button pressed' "$log" || fail shutdown "the guest saw the button after all"; } &&
      pass shutdown
  else
    fail shutdown "the guest ignoring the power button did not power off through its agent"
    "$godwit" stop "$api" >/dev/null 2>&1
    wait "$vm_pid"
  fi
else
  "$godwit" stop "$api" >/dev/null 2>&1
  wait "$vm_pid"
fi
vm_pid=
kill "$wd_pid" 2>/dev/null
wait "$wd_pid" 2>/dev/null
expect_clean agent || true
# A failure shows how the VM's own log ends (a VM that ended mid-suite says why there).
[ "$failed" -eq 0 ] || { echo "agent: the VM's log ends:"; tail -n 40 "$log" | sed 's/^/    | /'; }
echo "agent: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
