#!/usr/bin/env bash
# snapshot.sh: snapshot and restore benchmark, godwit against QEMU on the same guest, in one
# run. A measurement, not a test. Run it where /dev/kvm runs unmodified kernels, or through
# the test host:
#   tools/testhost/testhost.sh --timeout 1500 -- bench/snapshot.sh build [RUNS]
#
# The guest, the same for both VMMs: the default guest (guests/build-guest.sh: Debian's
# bzImage and the busybox initramfs) in script mode (godwit.test=script, the script on a
# read-only virtio disk with serial godwit-script), a counter that prints "count N" on the
# serial console every $BENCH_TICK seconds; 1 GiB of RAM, no network, no other disk.
# Each of RUNS rounds (default 3), for each vCPU count in $BENCH_CPUS, runs:
#   godwit  boot; once the counter has run $BENCH_SETTLE s: `godwit snapshot SOCK DIR --stop`,
#           timed from its exec to its exit (the bytes: `du` of DIR, which is sparse, and the
#           command's "MiB written", the guest's RAM that is not zero); then
#           `godwit run --restore DIR`, timed from its exec to its API answering GET /vm, to
#           that answer saying "running", and to the first counter line on its console
#   QEMU    qemu-system-x86_64 -accel kvm -M q35, the same kernel, initrd, command line and
#           script disk (virtio-blk-pci), 1 GiB, a QMP socket; once the counter has run as
#           long: QMP stop, then migrate to "exec:cat > FILE" (max-bandwidth raised from the
#           default 32 MiB/s), timed from a client already connected, from `stop` to
#           query-migrate saying completed (the file's size; ram.normal pages are QEMU's own
#           count of pages that are not zero); then the same command line with -incoming
#           "exec:cat FILE", timed from its exec to QMP answering, to the load's end (the
#           source was stopped, so the loaded VM waits paused and is sent `cont`, as a user
#           would), to query-status saying "running", and to the first counter line
# Each restored guest must count on from the count the source last printed (the next one, or
# the one after when the snapshot cut a line in half) and print two more lines; then it is
# killed. The tables give medians over the successful runs.
#
# The counter's period bounds how long a restored guest that runs again may sleep before its
# first line: the default 10 ms keeps that small (in the test host the loop's own fork and
# exec stretch it to about 30 ms; the summary gives the period seen); BENCH_TICK=0.1 is
# case_snapshot's 100 ms guest. godwit's write time includes the exec of the CLI and its
# connection, QEMU's starts at a connected QMP client: if anything this favours QEMU (the
# summary gives the exec of `godwit version` here, for scale). Both write to the same
# filesystem: this host's /tmp (a tmpfs in the test host).
#
# Environment: BENCH_VMMS (default "godwit qemu"), BENCH_CPUS (vCPU counts, default 1; "1 2"
# doubles the time, and in the test host most of its breakdowns came in 2-vCPU rounds),
# BENCH_MEM (MiB, default 1024), BENCH_TICK (s, default 0.01), BENCH_SETTLE (s of counting
# before the snapshot, default 3), BENCH_VM_TIMEOUT (s for a boot to reach the counter,
# default 180), BENCH_RESTORE_TIMEOUT (s for a restored guest to count on, default 90). A VM
# that does not count in time is diagnosed before it is killed (its vCPUs and queues through
# the API or QMP, its threads' kernel stacks: LOG.diag beside its console, summed up on
# stderr) and the run is dropped. BENCH_BUDGET (s: no round starts after this, so that the tables come out
# before the test host's --timeout; default 1200). The test host passes only GODWIT_* and the
# variables named in GODWIT_TESTHOST_ENV: GODWIT_TESTHOST_ENV="BENCH_CPUS" BENCH_CPUS=1 ...
# With testhost.sh --results DIR the consoles and outputs of every VM are kept in
# DIR/snapshot-logs (copied after each round: a test host that breaks down runs no exit trap).
set -uo pipefail

build=${1:?usage: bench/snapshot.sh BUILD_DIR [RUNS]}
runs=${2:-3}
cpus_list=${BENCH_CPUS:-1}
vmms=${BENCH_VMMS:-godwit qemu}
mem=${BENCH_MEM:-1024}
tick=${BENCH_TICK:-0.01}
settle=${BENCH_SETTLE:-3}
vm_timeout=${BENCH_VM_TIMEOUT:-180}
restore_timeout=${BENCH_RESTORE_TIMEOUT:-90}
budget=${BENCH_BUDGET:-1200}
root=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
godwit=$(readlink -f "$build/godwit")
[ -x "$godwit" ] || { echo "bench: no godwit in $build" >&2; exit 1; }
for c in qemu-system-x86_64 du timeout; do
  command -v $c >/dev/null || { echo "bench: $c not found (run tools/install-deps.sh)" >&2; exit 1; }
done
# The system's python3: a version manager's shim costs seconds to start in the test host.
py=$(command -v /usr/bin/python3 || command -v python3) || { echo "bench: python3 not found" >&2; exit 1; }
for vmm in $vmms; do
  case $vmm in godwit | qemu) ;; *) echo "bench: BENCH_VMMS: unknown VMM '$vmm' (godwit, qemu)" >&2; exit 2 ;; esac
done
[ -e /dev/kvm ] || { echo "bench: no /dev/kvm (run it through tools/testhost/testhost.sh)" >&2; exit 1; }
eval "$("$root/guests/build-guest.sh" --print)" || exit 1
[ -f "$kernel_bzimage" ] && [ -f "$initrd" ] || { echo "bench: the default guest is not built" >&2; exit 1; }

work=$(mktemp -d /tmp/godwit-snap.XXXXXX)
pids=()
# keep_logs: the consoles and outputs so far into the test host's results directory, if any
# (after every round: a test host that breaks down runs no exit trap).
keep_logs() {
  local keep=${GODWIT_TESTHOST_RESULTS:-}
  if [ -n "$keep" ] && [ -d "$keep" ] && [ -w "$keep" ]; then
    (cd "$work" && find . \( -name '*.log*' -o -name '*.out' -o -name '*.err' \) -print0 |
      cpio --quiet -0 -pdmu "$keep/snapshot-logs" 2>/dev/null)
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

# The counter, as a script disk padded with newlines to whole sectors.
script=$work/script.img
printf 'i=0\nwhile :; do\n  i=$((i + 1))\n  echo "count $i"\n  sleep %s\ndone\n' "$tick" >"$script"
size=$(stat -c %s "$script")
head -c $(( (512 - size % 512) % 512 )) /dev/zero | tr '\0' '\n' >>"$script"

# The timed parts: QMP and the restores, from one process that is connected or that execs
# the VMM itself, polling every millisecond.
helper=$work/snapbench.py
cat >"$helper" <<'EOF'
import json, os, re, socket, subprocess, sys, time

COUNT = re.compile(rb'^count (\d+)$')

def fail(msg):
    print("bench: " + msg, file=sys.stderr)
    sys.exit(1)

def ms(t0):
    return round((time.monotonic() - t0) * 1000.0, 1)

class Console:
    """The counter lines a log file gains, whole lines only."""
    def __init__(self, path):
        self.path, self.pos, self.rest = path, 0, b''
    def counts(self):
        try:
            with open(self.path, 'rb') as f:
                f.seek(self.pos)
                data = f.read()
        except FileNotFoundError:
            return []
        self.pos += len(data)
        lines = (self.rest + data).split(b'\n')
        self.rest = lines.pop()
        out = []
        for line in lines:
            m = COUNT.match(line.replace(b'\r', b'').strip())
            if m:
                out.append(int(m.group(1)))
        return out

class QMP:
    def __init__(self, path, deadline):
        while True:
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.settimeout(max(1.0, deadline - time.monotonic()))
                s.connect(path)
                break
            except OSError as e:
                s.close()
                if time.monotonic() > deadline:
                    fail("QMP socket %s: no connection (%s)" % (path, e))
                time.sleep(0.001)
        self.sock, self.f = s, s.makefile('rwb')
        greeting = self.f.readline()
        if b'QMP' not in greeting:
            fail("QMP socket %s: no greeting (%r)" % (path, greeting[:200]))
        self.cmd('qmp_capabilities')
    def cmd(self, name, args=None):
        msg = {'execute': name}
        if args is not None:
            msg['arguments'] = args
        self.f.write(json.dumps(msg).encode() + b'\n')
        self.f.flush()
        while True:
            line = self.f.readline()
            if not line:
                fail("QMP: the connection closed during %s" % name)
            r = json.loads(line)
            if 'error' in r:
                fail("QMP %s: %s" % (name, r['error'].get('desc', r['error'])))
            if 'return' in r:
                return r['return']

def http_get(path, target):
    """GET target on the godwit API socket: the decoded JSON body, or None when not answering."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(2.0)
    try:
        s.connect(path)
        s.sendall(b'GET ' + target.encode() + b' HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n')
        data = b''
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except OSError:
        return None
    finally:
        s.close()
    head, _, body = data.partition(b'\r\n\r\n')
    if not head.startswith(b'HTTP/1.1 200'):
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None

def qemu_save(sock, path, timeout):
    """Stop the VM and migrate it to a file; prints stop-to-completed ms, bytes sent, normal pages."""
    deadline = time.monotonic() + timeout
    q = QMP(sock, deadline)
    q.cmd('migrate-set-parameters', {'max-bandwidth': 1 << 40})
    t0 = time.monotonic()
    q.cmd('stop')
    q.cmd('migrate', {'uri': 'exec:cat > ' + path})
    while True:
        r = q.cmd('query-migrate')
        st = r.get('status')
        if st == 'completed':
            break
        if st in ('failed', 'cancelled'):
            fail("QEMU migration %s: %s" % (st, r.get('error-desc', '')))
        if time.monotonic() > deadline:
            fail("QEMU migration not completed after %d s (status %s)" % (timeout, st))
        time.sleep(0.001)
    took = ms(t0)
    ram = r.get('ram', {})
    print(took, ram.get('transferred', 0), ram.get('normal', 0), ram.get('page-size', 4096),
          round(ram.get('mbps', 0)))
    try:
        q.cmd('quit')
    except SystemExit:
        pass

def diagnose(kind, pid, sock, qmp, out):
    """What a VM that does not count (on) is doing, into out (before it is killed)."""
    with open(out, 'w') as f:
        def put(name, data):
            f.write('== %s\n%s\n' % (name, data if isinstance(data, str) else json.dumps(data)))
        if kind == 'godwit':
            put('counters', http_get(sock, '/vm/counters'))
            time.sleep(2)
            put('counters 2 s later', http_get(sock, '/vm/counters'))
            put('vcpus', http_get(sock, '/vm/vcpus'))
            put('vm', http_get(sock, '/vm'))
        elif qmp is not None:
            try:
                put('query-status', qmp.cmd('query-status'))
                put('info registers', qmp.cmd('human-monitor-command', {'command-line': 'info registers -a'}))
            except (OSError, ValueError) as e:
                put('qmp', str(e))
        for t in sorted(os.listdir('/proc/%d/task' % pid)):
            try:
                comm = open('/proc/%d/task/%s/comm' % (pid, t)).read().strip()
                stack = open('/proc/%d/task/%s/stack' % (pid, t)).read().replace('\n', ' ')
            except OSError as e:
                comm, stack = '?', str(e)
            put('thread %s %s' % (t, comm), stack[:300])

def restore(kind, log, sock, last, timeout, cmd):
    """Exec CMD (console in log) and time it: prints line_ms api_ms running_ms loaded_ms first."""
    res = {}
    logf = open(log, 'wb')
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT)
    deadline = t0 + timeout
    con, qmp = Console(log), None
    try:
        while True:
            if time.monotonic() > deadline:
                try:
                    diagnose(kind, p.pid, sock, qmp, log + '.diag')
                except OSError as e:
                    print("bench: %s restore: no diagnosis: %s" % (kind, e), file=sys.stderr)
                fail("%s restore: %s after %g s (%s)" % (kind, "no counter lines" if 'line' not in res
                     else "no count %d" % (res['first'] + 2), timeout, res))
            if p.poll() is not None:
                fail("%s restore: exited with status %d before counting on (%s)" % (kind, p.returncode, res))
            if 'running' not in res and os.path.exists(sock):
                if kind == 'godwit':
                    vm = http_get(sock, '/vm')
                    if vm is not None:
                        res.setdefault('api', ms(t0))
                        if vm.get('state') == 'running':
                            res['running'] = ms(t0)
                else:
                    if qmp is None:
                        qmp = QMP(sock, deadline)
                        res['api'] = ms(t0)
                    st = qmp.cmd('query-status')['status']
                    if st == 'running':
                        res.setdefault('loaded', ms(t0))
                        res['running'] = ms(t0)
                    elif st not in ('inmigrate', 'prelaunch'):
                        # The source was stopped: the loaded VM waits paused, like it.
                        res['loaded'] = ms(t0)
                        qmp.cmd('cont')
            counts = con.counts()
            if counts and 'line' not in res:
                res['line'] = ms(t0)
                res['first'] = counts[0]
            if 'first' in res and counts and max(counts) >= res['first'] + 2:
                res.setdefault('line3', ms(t0))
                if 'running' in res:
                    break
            time.sleep(0.001)
    finally:
        if p.poll() is None:
            p.kill()
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            print("bench: %s restore: pid %d did not die" % (kind, p.pid), file=sys.stderr)
    if not last < res['first'] <= last + 2:
        fail("%s restore: counted from %d, the snapshot's last line was count %d" % (kind, res['first'], last))
    print(res['line'], res.get('api', '-'), res.get('running', '-'), res.get('loaded', '-'), res['first'],
          round(res['line3'] - res['line'], 1))

def timed(timeout, out, cmd):
    """Exec CMD (its output in out) and wait for it: prints its wall time in ms and status."""
    with open(out, 'wb') as f:
        t0 = time.monotonic()
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT)
        try:
            st = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            st = 124
        took = ms(t0)
    print(took, st)

def main():
    a = sys.argv[1:]
    if a[0] == 'timed':
        timed(float(a[1]), a[2], a[3:])
    elif a[0] == 'qemu-save':
        qemu_save(a[1], a[2], float(a[3]))
    elif a[0] == 'diagnose':
        diagnose(a[1], int(a[2]), a[3], QMP(a[3], time.monotonic() + 10) if a[1] == 'qemu' else None, a[4])
    elif a[0] == 'restore':
        restore(a[1], a[2], a[3], int(a[4]), float(a[5]), a[6:])
    else:
        fail("snapbench.py: unknown command " + a[0])

main()
EOF

us_now() { local t=$EPOCHREALTIME; echo "${t//[.,]/}"; }

# last_count LOG: the last whole counter line's count, or nothing.
last_count() { [ -f "$1" ] && tr -d '\r' <"$1" | grep -aoE '^count [0-9]+$' | tail -n 1 | cut -d' ' -f2; }

# wait_counting LOG PID LABEL KIND SOCK: waits (up to $vm_timeout s) for the counter, then
# $settle s; prints the guest's period in ms as seen from here. A VM that does not count in
# time is diagnosed (restore_diag) before it is killed.
wait_counting() {
  local log=$1 pid=$2 label=$3 kind=$4 sock=$5 end=$((SECONDS + vm_timeout)) c0 t0 c1 t1
  until c0=$(last_count "$log"); [ -n "$c0" ]; do
    kill -0 "$pid" 2>/dev/null ||
      { echo "bench: $label exited before counting; its log:" >&2; tail -n 20 "$log" >&2; return 1; }
    [ $SECONDS -lt $end ] || {
      echo "bench: $label: no counter after $vm_timeout s; its log:" >&2; tail -n 20 "$log" >&2
      "$py" "$helper" diagnose "$kind" "$pid" "$sock" "$log.diag" >&2 && restore_diag "$log" >&2
      return 1
    }
    sleep 0.05
  done
  t0=$(us_now)
  sleep "$settle"
  kill -0 "$pid" 2>/dev/null ||
    { echo "bench: $label exited while counting; its log:" >&2; tail -n 20 "$log" >&2; return 1; }
  c1=$(last_count "$log"); t1=$(us_now)
  [ "$c1" -gt "$c0" ] 2>/dev/null || { echo "bench: $label: the counter stopped at $c0" >&2; return 1; }
  awk -v d=$((t1 - t0)) -v n=$((c1 - c0)) 'BEGIN{printf "%.1f\n", d / n / 1000}'
}

# wait_exit PID SECS: the process's exit status, or 124 after killing it when it outlives SECS.
wait_exit() {
  local pid=$1 end=$((SECONDS + $2))
  while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $end ]; do sleep 0.05; done
  kill -0 "$pid" 2>/dev/null && { kill -KILL "$pid"; wait "$pid" 2>/dev/null; return 124; }
  wait "$pid"
}

# restore_diag LOG: the diagnosis of a VM that did not count (on), LOG.diag, shortened.
restore_diag() {
  local diag=$1.diag
  [ -s "$diag" ] || return 0
  echo "bench: the VM when given up on (all of it in $diag):"
  if grep -q '^== vcpus' "$diag"; then
    sed -n '/^== counters$/{n;p}' "$diag" >"$1.counters"
    sed -n '/^== vcpus$/{n;p}' "$diag" >"$1.vcpus"
    "$py" "$root/tests/e2e/stall-report.py" "$1.counters" "$1.vcpus" 2>&1 | sed 's/^/  /'
    sed -n '/^== counters/{n;p}' "$diag" | "$py" -c 'import json, sys
for n, l in enumerate(sys.stdin):
    c = json.loads(l) if l.strip() not in ("", "null") else None
    print("  exits%s: %s" % (" 2 s later" if n else "", json.dumps(c and c.get("exits"))))'
  fi
  grep -A1 -E '^== (query-status|vm|thread)' "$diag" | grep -v '^--$' | cut -c1-220 | sed 's/^/  /'
}

rec() { echo "$3" >>"$work/$1.$2"; }  # rec VMM-CPUS METRIC VALUE
# step WHAT: a progress line (which step a test host that breaks down was in).
step() { echo "bench: [$((SECONDS - start)) s] $*" >&2; }
mib() { awk -v b="$1" 'BEGIN{printf "%.1f", b / 1048576}'; }

godwit_round() { # CPUS
  local cpus=$1 d=$work/g$1-$i key=godwit-$1
  mkdir -p "$d"
  local log=$d/source.log sock=$d/source.sock dir=$d/snap
  step "godwit run $i, $cpus vCPU: boot"
  "$godwit" run --kernel "$kernel_bzimage" --initrd "$initrd" --memory "$mem" --cpus "$cpus" \
    --no-rng --no-reboot --cmdline "$cmdline" --disk "path=$script,readonly=on,serial=godwit-script" \
    --name "gwbench-src-$cpus-$i" --api-socket "$sock" </dev/null >"$log" 2>&1 &
  local pid=$!; pids+=("$pid")
  local period
  period=$(wait_counting "$log" "$pid" "godwit source (run $i, $cpus vCPU)" godwit "$sock") ||
    { kill -KILL $pid 2>/dev/null; wait "$pid"; echo "bench: (its exit status: $?)" >&2; return 1; }
  local write_ms st
  step "godwit run $i, $cpus vCPU: snapshot"
  read -r write_ms st < <("$py" "$helper" timed 300 "$d/snapshot.out" \
    "$godwit" snapshot "$sock" "$dir" --stop)
  [ "$st" = 0 ] || {
    echo "bench: godwit snapshot failed (status $st): $(cat "$d/snapshot.out")" >&2
    kill -KILL $pid; rm -rf "$dir"; return 1
  }
  wait_exit "$pid" 60; local vst=$?
  [ $vst -eq 6 ] ||
    echo "bench: note: the godwit source exited with status $vst after the snapshot (6 expected)" >&2
  local out written paused last bytes
  out=$(cat "$d/snapshot.out")
  written=$(sed -n 's/.* \([0-9.]*\) MiB written.*/\1/p' <<<"$out")
  paused=$(sed -n 's/.*guest paused \([0-9.]*\) ms.*/\1/p' <<<"$out")
  bytes=$(du -s -B1 "$dir" | cut -f1)
  last=$(last_count "$log")
  local r
  step "godwit run $i, $cpus vCPU: restore"
  r=$("$py" "$helper" restore godwit "$d/restore.log" "$d/restore.sock" "$last" "$restore_timeout" \
    "$godwit" run --restore "$dir" --name "gwbench-dst-$cpus-$i" --api-socket "$d/restore.sock") ||
    {
      echo "bench: godwit restore (run $i, $cpus vCPU) failed after: $(cat "$d/snapshot.out"); its log:" >&2
      tail -n 20 "$d/restore.log" >&2; restore_diag "$d/restore.log" >&2; rm -rf "$dir"; return 1
    }
  rm -rf "$dir"
  local line api running _ first more
  read -r line api running _ first more <<<"$r"
  rec $key write "$write_ms"; rec $key bytes "$bytes"; rec $key paused "$paused"
  rec $key nonzero "$(awk -v m="$written" 'BEGIN{printf "%.0f", m * 1048576}')"
  rec $key line "$line"; rec $key api "$api"; rec $key running "$running"; rec $key period "$period"
  echo "bench: godwit run $i, $cpus vCPU: snapshot ${write_ms} ms (guest paused $paused ms)," \
    "$(mib "$bytes") MiB on disk, $written MiB non-zero RAM; restore: API $api ms, running" \
    "$running ms, first line $line ms (count $last -> $first), 2 more in $more ms;" \
    "guest period $period ms" >&2
}

qemu_round() { # CPUS
  local cpus=$1 d=$work/q$1-$i key=qemu-$1
  mkdir -p "$d"
  local log=$d/source.log sock=$d/source.qmp file=$d/vm.mig
  local common=(-accel kvm -cpu host -M q35 -smp "$cpus" -m "$mem" -nodefaults -no-user-config
    -display none -no-reboot -kernel "$kernel_bzimage" -initrd "$initrd" -append "$cmdline"
    -drive "file=$script,if=none,id=s0,format=raw,readonly=on"
    -device virtio-blk-pci,drive=s0,serial=godwit-script)
  step "QEMU run $i, $cpus vCPU: boot"
  qemu-system-x86_64 "${common[@]}" -serial "file:$log" -qmp "unix:$sock,server=on,wait=off" \
    </dev/null >"$d/source.err" 2>&1 &
  local pid=$!; pids+=("$pid")
  local period
  period=$(wait_counting "$log" "$pid" "QEMU source (run $i, $cpus vCPU)" qemu "$sock") ||
    {
      cat "$d/source.err" >&2; kill -KILL $pid 2>/dev/null; wait "$pid"
      echo "bench: (its exit status: $?; with -no-reboot QEMU exits 0 without a word when" \
        "the guest resets)" >&2
      return 1
    }
  local r
  step "QEMU run $i, $cpus vCPU: stop and migrate"
  r=$(timeout -k 5 300 "$py" "$helper" qemu-save "$sock" "$file" 290) ||
    { echo "bench: QEMU save (run $i, $cpus vCPU) failed" >&2; cat "$d/source.err" >&2
      kill -KILL $pid; rm -f "$file"; return 1; }
  wait_exit "$pid" 60 >/dev/null; local vst=$?
  [ $vst -eq 0 ] || echo "bench: note: the QEMU source exited with status $vst after quit" >&2
  local write_ms normal psize mbps bytes last
  read -r write_ms _ normal psize mbps <<<"$r"
  bytes=$(stat -c %s "$file")
  last=$(last_count "$log")
  step "QEMU run $i, $cpus vCPU: restore"
  r=$("$py" "$helper" restore qemu "$d/restore.log" "$d/restore.qmp" "$last" "$restore_timeout" \
    qemu-system-x86_64 "${common[@]}" -serial "file:$d/restore.log" \
    -qmp "unix:$d/restore.qmp,server=on,wait=off" -incoming "exec:cat $file") ||
    { echo "bench: QEMU restore (run $i, $cpus vCPU) failed; its log:" >&2; tail -n 20 "$d/restore.log" >&2
      restore_diag "$d/restore.log" >&2; rm -f "$file"; return 1; }
  rm -f "$file"
  local line api running loaded first more
  read -r line api running loaded first more <<<"$r"
  rec $key write "$write_ms"; rec $key bytes "$bytes"; rec $key nonzero "$((normal * psize))"
  rec $key paused "$write_ms"; rec $key line "$line"; rec $key api "$api"; rec $key running "$running"
  rec $key loaded "$loaded"; rec $key period "$period"
  echo "bench: QEMU run $i, $cpus vCPU: stop+migrate $write_ms ms, $(mib "$bytes") MiB file," \
    "$(mib $((normal * psize))) MiB non-zero RAM (ram.normal; QEMU's rate: $mbps Mbit/s);" \
    "restore: QMP $api ms, loaded $loaded ms, running $running ms, first line $line ms" \
    "(count $last -> $first), 2 more in $more ms; guest period $period ms" >&2
}

median() { sort -n | awk '{a[NR]=$1} END{ if (!NR) print ""; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2 }'; }
med() { [ -s "$work/$1" ] && median <"$work/$1"; }
n() { [ -s "$work/$1.line" ] && wc -l <"$work/$1.line" || echo 0; }

row() { # NAME DIVISOR RATIO(q/g|g/q) godwit qemu
  awk -v n="$1" -v d="$2" -v r="$3" -v g="$4" -v q="$5" 'BEGIN{
    gs = (g == "") ? "n/a" : sprintf("%.1f", g / d); qs = (q == "") ? "n/a" : sprintf("%.1f", q / d)
    if (g == "" || q == "" || g == 0 || q == 0) rs = "n/a"
    else rs = (r == "q/g") ? sprintf("%.2f (QEMU/godwit)", q / g) : sprintf("%.2f (godwit/QEMU)", g / q)
    printf "| %s | %s | %s | %s |\n", n, gs, qs, rs }'
}

start=$SECONDS
: >"$work/exec"
for _ in 1 2 3; do
  read -r e _ < <("$py" "$helper" timed 30 /dev/null "$godwit" version) && echo "$e" >>"$work/exec"
done
for i in $(seq 1 "$runs"); do
  for cpus in $cpus_list; do
    if [ $((SECONDS - start)) -ge "$budget" ]; then
      echo "bench: ${budget} s spent (BENCH_BUDGET): no run $i with $cpus vCPU" >&2
      continue
    fi
    for vmm in $vmms; do
      "${vmm}_round" "$cpus"; keep_logs
    done
  done
done

echo
echo "command: bench/snapshot.sh $*${GODWIT_IN_TESTHOST:+ (inside tools/testhost/testhost.sh)}; $((SECONDS - start)) s in all"
echo "exec of \`godwit version\` from a running process here: $(med exec) ms (median of 3)"
echo "guest: $kernel_package bzImage, default initrd, script mode: \"count N\" every $tick s;" \
  "$mem MiB; $(qemu-system-x86_64 --version | head -n 1)"
ok=1
for cpus in $cpus_list; do
  g=godwit-$cpus q=qemu-$cpus
  echo
  echo "$cpus vCPU: successful runs: godwit $(n $g), QEMU $(n $q) of $runs; guest period as seen" \
    "from the host: godwit $(med $g.period || echo n/a) ms, QEMU $(med $q.period || echo n/a) ms"
  echo
  echo "| $cpus vCPU, $mem MiB (medians) | godwit | QEMU | ratio |"
  echo "|---|---|---|---|"
  row "write: snapshot --stop / QMP stop+migrate to file (ms)" 1 q/g "$(med $g.write)" "$(med $q.write)"
  row "write: guest paused for it (ms)" 1 q/g "$(med $g.paused)" "$(med $q.paused)"
  row "bytes written: du of DIR / migration file (MiB)" 1048576 g/q "$(med $g.bytes)" "$(med $q.bytes)"
  row "guest RAM not zero: memory_written / ram.normal pages (MiB)" 1048576 g/q \
    "$(med $g.nonzero)" "$(med $q.nonzero)"
  row "restore: exec to API / QMP answering (ms)" 1 q/g "$(med $g.api)" "$(med $q.api)"
  row "restore: exec to VMM says running (ms)" 1 q/g "$(med $g.running)" "$(med $q.running)"
  row "restore: exec to first new counter line (ms)" 1 q/g "$(med $g.line)" "$(med $q.line)"
  for vmm in $vmms; do [ "$(n $vmm-$cpus)" -gt 0 ] || ok=0; done
done
echo
echo "godwit: godwit run --kernel K --initrd I --memory $mem --cpus N --no-rng --no-reboot" \
  "--cmdline '$cmdline' --disk path=SCRIPT,readonly=on,serial=godwit-script;" \
  "godwit snapshot SOCK DIR --stop; godwit run --restore DIR"
echo "qemu:   qemu-system-x86_64 -accel kvm -cpu host -M q35 -smp N -m $mem -nodefaults" \
  "-no-user-config -display none -no-reboot -kernel K -initrd I -append '$cmdline'" \
  "-drive file=SCRIPT,if=none,id=s0,format=raw,readonly=on" \
  "-device virtio-blk-pci,drive=s0,serial=godwit-script -serial file:LOG" \
  "-qmp unix:SOCK,server=on,wait=off; QMP stop, migrate exec:cat > FILE;" \
  "the same with -incoming 'exec:cat FILE', QMP cont"
[ $ok -eq 1 ]
