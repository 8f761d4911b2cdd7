#!/usr/bin/env bash
# run-agent-local.sh: godwit-agent and the host's commands (exec, cp, kvp, agent-info) on this
# machine, with no VM: the agent listens on a UNIX socket (--listen unix:PATH) and godwit
# reaches it through GODWIT_AGENT_SOCKET. The same protocol runs over vsock in a guest
# (tests/e2e/run-agent.sh). Never freezes: these are the host's own filesystems.
#
#   tests/agent/run-agent-local.sh GODWIT GODWIT_AGENT
set -uo pipefail
godwit=$(readlink -f "$1")
agent=$(readlink -f "$2")
work=$(mktemp -d /tmp/godwit-agent-test.XXXXXX)
fails=0 passes=0
agent_pid=
cleanup() {
    [ -n "$agent_pid" ] && kill "$agent_pid" 2>/dev/null
    [ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

ok() { passes=$((passes + 1)); echo "ok: $*"; }
bad() { fails=$((fails + 1)); echo "FAIL: $*"; }
expect_eq() { # WHAT GOT WANT
    if [ "$2" == "$3" ]; then ok "$1"; else bad "$1: got '$2', want '$3'"; fi
}

# setsid: the agent's own session, not this shell's job control or ignored signals.
setsid "$agent" --listen "unix:$work/agent.sock" --state-dir "$work/state" --run-dir "$work/run" \
    --max-file-size 3000000 2>"$work/agent.log" &
agent_pid=$!
for _ in $(seq 50); do [ -S "$work/agent.sock" ] && break; sleep 0.1; done
export GODWIT_AGENT_SOCKET=$work/agent.sock
g() { "$godwit" "$@"; }

# exec: exit statuses, stdout and stderr apart, a missing command, a signal's status
g exec vm -- true; expect_eq "exec true" "$?" 0
g exec vm -- sh -c 'exit 7'; expect_eq "exec exit 7" "$?" 7
out=$(g exec vm -- sh -c 'echo out; echo err >&2' 2>"$work/err"); expect_eq "stdout" "$out" out
expect_eq "stderr" "$(cat "$work/err")" err
g exec vm -- /nonexistent/cmd 2>/dev/null; expect_eq "missing command" "$?" 127
g exec vm -- sh -c 'kill -TERM $$'; expect_eq "killed by SIGTERM" "$?" 143

# a large output, counted and checksummed (20 MiB here; 100 MiB in the guest suite)
head -c 20971520 /dev/urandom >"$work/big"
want=$(sha256sum <"$work/big" | cut -d' ' -f1)
got=$(g exec vm -- cat "$work/big" | sha256sum | cut -d' ' -f1)
expect_eq "20 MiB of output" "$got" "$want"
# stdin forwarded, to its end
got=$(g exec vm -- sha256sum <"$work/big" | cut -d' ' -f1)
expect_eq "20 MiB of stdin" "$got" "$want"
# stdin and stdout at once, each larger than the socket's buffers
got=$(g exec vm -- cat <"$work/big" | sha256sum | cut -d' ' -f1)
expect_eq "stdin through cat" "$got" "$want"

# a signal passed on: the command traps SIGINT
python3 - "$godwit" <<'PY' && ok "SIGINT passed on" || bad "SIGINT passed on"
import signal, subprocess, sys
p = subprocess.Popen([sys.argv[1], "exec", "vm", "--", "sh", "-c",
                      'trap "echo trapped; exit 3" INT; echo ready; sleep 30 & wait'],
                     stdout=subprocess.PIPE)
assert p.stdout.readline() == b"ready\n"
p.send_signal(signal.SIGINT)
out, _ = p.communicate(timeout=10)
sys.exit(0 if (out, p.returncode) == (b"trapped\n", 3) else 1)
PY

# a terminal
out=$(g exec vm -t -- sh -c 'tty; echo $TERM' </dev/null | tr -d '\r')
case "$out" in /dev/pts/*xterm-256color) ok "exec -t" ;; *) bad "exec -t: $out" ;; esac

# a terminal that changes size: the command's terminal follows (SIGWINCH, then a resize)
python3 - "$godwit" <<'PY' && ok "exec -t follows a resize" || bad "exec -t follows a resize"
import fcntl, os, pty, select, signal, struct, sys, termios, time
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], [sys.argv[1], "exec", "vm", "-t", "--", "sh", "-c",
                           "stty size; echo go; read x; stty size"])
def set_size(rows, cols):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
set_size(30, 100)
out = b""
def until(pattern, secs=10):
    global out
    end = time.time() + secs
    while pattern not in out and time.time() < end:
        if select.select([fd], [], [], 0.2)[0]:
            try:
                out += os.read(fd, 4096)
            except OSError:
                break
until(b"go")
set_size(40, 120)
os.kill(pid, signal.SIGWINCH)
time.sleep(0.5)
os.write(fd, b"\n")
until(b"40 120")
os.waitpid(pid, 0)
sys.exit(0 if b"30 100" in out and b"40 120" in out else 1)
PY

# as another user (root only: setuid)
if [ "$(id -u)" = 0 ] && grep -q '^nobody:' /etc/passwd; then
    expect_eq "exec -u nobody" "$(g exec vm -u nobody -- id -u)" "$(grep '^nobody:' /etc/passwd | cut -d: -f3)"
    g exec vm -u no-such-user -- true 2>/dev/null; expect_eq "exec -u unknown" "$?" 255
fi

# cp both ways: contents, mode, no temporary left
head -c 2500000 /dev/urandom >"$work/f1"; chmod 0751 "$work/f1"
mkdir "$work/guest" "$work/back"
g cp "$work/f1" "vm:$work/guest/f2"; expect_eq "cp to the guest" "$?" 0
expect_eq "cp to: contents" "$(sha256sum <"$work/guest/f2")" "$(sha256sum <"$work/f1")"
expect_eq "cp to: mode" "$(stat -c %a "$work/guest/f2")" 751
g cp "vm:$work/guest/f2" "$work/back/"; expect_eq "cp from the guest" "$?" 0
expect_eq "cp from: contents" "$(sha256sum <"$work/back/f2")" "$(sha256sum <"$work/f1")"
expect_eq "cp from: mode" "$(stat -c %a "$work/back/f2")" 751
g cp "$work/f1" "vm:$work/guest/"; expect_eq "cp into a directory" "$(cmp "$work/f1" "$work/guest/f1" && echo same)" same
head -c 3000001 /dev/zero >"$work/toobig"
g cp "$work/toobig" "vm:$work/guest/toobig" 2>/dev/null; expect_eq "over the size limit" "$?" 1
g cp "vm:$work/guest/none" "$work/back/none" 2>/dev/null; expect_eq "cp of a missing file" "$?" 1
expect_eq "no temporaries left" "$(find "$work/guest" "$work/back" -name ".*.godwit-*" | wc -l)" 0
g cp "$work/f1" "vm:relative" 2>/dev/null; expect_eq "a relative guest path" "$?" 2

# kvp: the host's pool both ways, the guest's pool read by the host
g kvp vm set color blue; expect_eq "kvp set" "$?" 0
expect_eq "kvp get (host pool)" "$(g kvp vm --pool host get color)" blue
expect_eq "the guest sees it" "$(cat "$work/state/host/color")" blue
expect_eq "kvp list (host pool)" "$(g kvp vm --pool host list)" color=blue
printf 'ready' >"$work/state/guest/status"
expect_eq "kvp get (guest pool)" "$(g kvp vm get status)" ready
expect_eq "kvp list (guest pool)" "$(g kvp vm list)" status=ready
g kvp vm delete color; expect_eq "kvp delete" "$?" 0
g kvp vm --pool host get color 2>/dev/null; expect_eq "deleted" "$?" 1
g kvp vm set ../evil x 2>/dev/null; expect_eq "a key with a slash" "$?" 1
g kvp vm set 2>/dev/null; expect_eq "kvp usage" "$?" 2

# Finding the VM's vsock socket, through a fake VMM in front of the agent: its vsock socket
# answers "CONNECT 1024" and passes bytes on, its API socket answers GET /vm (and counts them).
# By name the runtime directory's NAME.vsock is reached without asking the API; by API socket,
# or by a name whose NAME.vsock is not there, GET /vm names the socket.
fake_vmm() { # API VSOCK COUNT_FILE
    exec python3 - "$@" "$work/agent.sock" <<'PY'
import json, os, socket, sys, threading
api, vsock, count, agent = sys.argv[1:5]
gets = 0
def pump(a, b):
    try:
        while (d := a.recv(65536)):
            b.sendall(d)
        b.shutdown(socket.SHUT_WR)
    except OSError:
        pass
def serve_vsock(c):
    line = b""
    while not line.endswith(b"\n") and (d := c.recv(1)):
        line += d
    if line != b"CONNECT 1024\n":
        return c.close()
    up = socket.socket(socket.AF_UNIX); up.connect(agent)
    c.sendall(b"OK 1073741824\n")
    threading.Thread(target=pump, args=(up, c), daemon=True).start()
    pump(c, up)
def serve_api(c):
    global gets
    data = b""
    while b"\r\n\r\n" not in data and (d := c.recv(4096)):
        data += d
    gets += 1
    with open(count, "w") as f:
        f.write(str(gets))
    body = json.dumps({"name": "fake", "config": {"vsock": {"cid": 3, "socket": vsock}}}).encode()
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
    c.close()
def listen(path, fn):
    s = socket.socket(socket.AF_UNIX); s.bind(path); s.listen(8)
    while True:
        threading.Thread(target=fn, args=(s.accept()[0],), daemon=True).start()
threading.Thread(target=listen, args=(vsock, serve_vsock), daemon=True).start()
listen(api, serve_api)
PY
}
if [ "$(id -u)" = 0 ]; then rundir=/run/godwit; else rundir=${XDG_RUNTIME_DIR:-}; rundir=${rundir:+$rundir/godwit}; fi
[ -n "$rundir" ] || rundir=/tmp/godwit-$(id -u)
fake=gwtest-$$
if mkdir -p -m 0700 "$rundir" 2>/dev/null && [ -w "$rundir" ]; then
    mkdir "$work/vmm"
    fake_vmm "$rundir/$fake.sock" "$work/vmm/vm.vsock" "$work/gets" &
    fake_pid=$!
    fake_vmm "$work/vmm/api.sock" "$work/vmm/vm2.vsock" "$work/gets2" &
    fake2_pid=$!
    for _ in $(seq 50); do [ -S "$work/vmm/vm.vsock" ] && [ -S "$work/vmm/vm2.vsock" ] && break; sleep 0.1; done
    ln -s "$work/vmm/vm.vsock" "$rundir/$fake.vsock" # the default place of a VM's socket
    expect_eq "exec by name" "$(GODWIT_AGENT_SOCKET= g exec $fake -- echo by-name)" by-name
    expect_eq "by name: no API request" "$(cat "$work/gets" 2>/dev/null || echo 0)" 0
    expect_eq "exec by API socket" "$(GODWIT_AGENT_SOCKET= g exec "$work/vmm/api.sock" -- echo by-api)" by-api
    expect_eq "by API socket: GET /vm" "$(cat "$work/gets2" 2>/dev/null)" 1
    # None in the default place (a VM with socket=PATH): its API names the socket.
    rm "$rundir/$fake.vsock"
    expect_eq "exec by name, socket=PATH" "$(GODWIT_AGENT_SOCKET= g exec $fake -- echo configured)" configured
    expect_eq "by name, socket=PATH: GET /vm" "$(cat "$work/gets" 2>/dev/null)" 1
    GODWIT_AGENT_SOCKET= g exec gwtest-none-$$ -- true 2>/dev/null; expect_eq "no such VM" "$?" 255
    kill "$fake_pid" "$fake2_pid"
    rm -f "$rundir/$fake.sock"
else
    echo "skip: finding the VM by name (no runtime directory $rundir)"
fi

# info
g agent-info vm | grep -q '^agent  *0\.' && ok "agent-info" || bad "agent-info"

# the protocol itself: garbage, an unknown type, a malformed request; the agent lives on
python3 - "$work/agent.sock" <<'PY' && ok "hostile messages answered" || bad "hostile messages answered"
import socket, struct, sys
def msg(t, payload=b"", flags=0, i=7):
    return struct.pack("<IBBHII", 0x47415747, 1, t, flags, i, len(payload)) + payload
def reply(s):
    h = b""
    while len(h) < 16:
        c = s.recv(16 - len(h)); assert c; h += c
    magic, ver, t, flags, i, n = struct.unpack("<IBBHII", h)
    body = b""
    while len(body) < n:
        body += s.recv(n - len(body))
    return t, i
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
s.sendall(msg(99, b"junk"));                       assert reply(s) == (65, 7)   # unknown type
s.sendall(msg(1, struct.pack("<HI", 7, 2) + b"/x")); assert reply(s) == (65, 7) # exec with a path
s.sendall(msg(3, struct.pack("<HII", 6, 4, 9)));   assert reply(s) == (65, 7)   # signal, no command
s.sendall(msg(14));                                assert reply(s) == (64, 7)   # still served
s.sendall(b"\xff" * 16);                           assert reply(s)[0] == 65     # no frame: error, end
assert s.recv(1) == b""
s2 = socket.socket(socket.AF_UNIX); s2.connect(sys.argv[1])
s2.sendall(msg(14, i=8));                          assert reply(s2) == (64, 8)
PY

kill -0 "$agent_pid" && ok "the agent still runs" || bad "the agent died"
echo "agent-local: $passes passed, $fails failed"
[ "$fails" -eq 0 ] || { echo "--- agent log"; cat "$work/agent.log"; }
[ "$fails" -eq 0 ]
