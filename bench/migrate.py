"""bench/migrate.sh's timed parts: one process that drives a migration and polls its VMM
every few milliseconds, and the reading of the guest's gap lines (bench/guest-gap.c).

  migrate.py godwit GODWIT SRC_SOCK URI OUT TIMEOUT [godwit migrate's options]
  migrate.py qemu SRC_QMP URI DOWNTIME_MS TIMEOUT [--shared] [--max-bandwidth MIBPS]
      print: wall_ms total_ms downtime_ms bytes_sent passes (passes: QEMU's dirty-sync-count)
      A move that did not converge (godwit: "did not converge", its --timeout; QEMU: still
      active after TIMEOUT, then cancelled) prints "noconv wall_ms bytes_sent passes" and
      exits 3: the guest runs on at the source.
      --max-bandwidth: QEMU's cap (default 1 TiB/s: none; QEMU's own default is 32 MiB/s)
      --shared: QEMU's own same-host move, RAM in a file both processes map and the
      x-ignore-shared capability, so that no page is sent (the peer of godwit's --local)
  migrate.py qemu-incoming DST_QMP URI TIMEOUT [--shared]
      a destination started with -incoming defer: the capability, then migrate-incoming URI
  migrate.py gaps SRC_LOG SRC_OFFSET DST_LOG
      print: longest gap (us) during the migration, the switchover's (the first whole line
      at the destination), the source's typical second before it (median), CLOCK_REALTIME's
      longest gap, the writer's rate, lines used, a line's write() time before it (median)
  migrate.py listening PORT|PATH TIMEOUT waits for a TCP listener on 127.0.0.1:PORT, or for a
                                         UNIX socket at PATH
"""
import json, os, re, socket, stat, statistics, subprocess, sys, time


def fail(msg):
    print("bench: " + msg, file=sys.stderr)
    sys.exit(1)


def ms(t0):
    return round((time.monotonic() - t0) * 1000.0, 1)


class QMP:
    def __init__(self, path, deadline):
        while True:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.settimeout(max(1.0, deadline - time.monotonic()))
                s.connect(path)
                break
            except OSError as e:
                s.close()
                if time.monotonic() > deadline:
                    fail("QMP socket %s: no connection (%s)" % (path, e))
                time.sleep(0.01)
        self.f = s.makefile('rwb')
        if b'QMP' not in self.f.readline():
            fail("QMP socket %s: no greeting" % path)
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


FINAL = re.compile(r'migrated: (\d+) passes, ([0-9.]+) MiB sent, guest paused ([0-9.]+) ms, ([0-9.]+) s in all')


def godwit_migrate(godwit, sock, uri, out, timeout, extra):
    """godwit migrate, with GET /vm/migration polled meanwhile and just after (the source
    answers for about 500 ms after the end)."""
    last = None
    with open(out, 'wb') as f:
        t0 = time.monotonic()
        p = subprocess.Popen([godwit, 'migrate', sock, uri] + extra, stdin=subprocess.DEVNULL,
                             stdout=f, stderr=subprocess.STDOUT)
        while p.poll() is None:
            if time.monotonic() - t0 > timeout:
                p.kill()
                p.wait()
                fail("godwit migrate: not done after %g s (last status %s)" % (timeout, last))
            st = http_get(sock, '/vm/migration')
            if st is not None:
                last = st
            time.sleep(0.01)
        wall = ms(t0)
        for _ in range(20):
            if last is not None and last.get('state') != 'active':
                break
            st = http_get(sock, '/vm/migration')
            if st is None:
                break
            last = st
            time.sleep(0.01)
    text = open(out, errors='replace').read()
    if p.returncode != 0 and 'did not converge' in text:
        print('noconv', wall, (last or {}).get('bytes_sent', 0), (last or {}).get('pass', '-'))
        sys.exit(3)
    if p.returncode != 0:
        fail("godwit migrate exited %d: %s" % (p.returncode, text.strip()[-500:]))
    if last is not None and last.get('state') == 'completed':
        print(wall, last['total_ms'], last['downtime_ms'], last['bytes_sent'], last['pass'])
        return
    m = FINAL.search(text)
    if not m:
        fail("godwit migrate: no final line and no completed status: %s" % text.strip()[-500:])
    print("bench: note: GET /vm/migration gone before it said completed; from the CLI's line",
          file=sys.stderr)
    print(wall, float(m.group(4)) * 1000, m.group(3), int(float(m.group(2)) * 1048576), m.group(1))


def ignore_shared(q):
    q.cmd('migrate-set-capabilities',
          {'capabilities': [{'capability': 'x-ignore-shared', 'state': True}]})


def qemu_incoming(sock, uri, timeout, shared):
    q = QMP(sock, time.monotonic() + timeout)
    if shared:
        ignore_shared(q)
    q.cmd('migrate-incoming', {'uri': uri})


def qemu_migrate(sock, uri, downtime, timeout, shared, max_bandwidth):
    deadline = time.monotonic() + timeout
    q = QMP(sock, deadline)
    if shared:
        ignore_shared(q)
    q.cmd('migrate-set-parameters', {'downtime-limit': downtime, 'max-bandwidth': max_bandwidth})
    t0 = time.monotonic()
    q.cmd('migrate', {'uri': uri})
    while True:
        r = q.cmd('query-migrate')
        st = r.get('status')
        if st == 'completed':
            break
        if st in ('failed', 'cancelled'):
            fail("QEMU migration %s: %s" % (st, r.get('error-desc', '')))
        if time.monotonic() > deadline:
            q.cmd('migrate_cancel')
            if st == 'active':  # still copying: it did not converge
                ram = r.get('ram', {})
                print('noconv', ms(t0), ram.get('transferred', 0), ram.get('dirty-sync-count', '-'))
                sys.exit(3)
            fail("QEMU migration not completed after %g s (status %s, %s)" % (timeout, st, r.get('ram')))
        time.sleep(0.005)
    wall = ms(t0)
    # '-' where QEMU leaves a figure out (its capped moves in 7.2 gave neither time): no figure,
    # not a zero one.
    print(wall, r.get('total-time', '-'), r.get('downtime', '-'),
          r.get('ram', {}).get('transferred', 0), r.get('ram', {}).get('dirty-sync-count', '-'))
    try:
        q.cmd('quit')
    except SystemExit:
        pass


GAP = re.compile(rb'^gap (\d+) max_us (\d+) real_max_us (\d+) print_us (\d+) wrote_mib ([0-9.]+)( .*)?$')


def gap_lines(path, offset):
    with open(path, 'rb') as f:
        f.seek(offset)
        data = f.read()
    out = []
    for line in data.split(b'\n')[:-1]:          # whole lines only
        m = GAP.match(line.replace(b'\r', b''))
        if m:
            seq, gap, real, pr = (int(m.group(i)) for i in range(1, 5))
            out.append((seq, max(gap, pr), real, float(m.group(5)), pr))
    return out


def gaps(src_log, offset, dst_log):
    before = gap_lines(src_log, 0)
    during = [l for l in gap_lines(src_log, offset)]
    before = before[:len(before) - len(during)][-10:]
    last_seq = before[-1][0] if before else 0
    if during:
        last_seq = during[-1][0]
    dst = [l for l in gap_lines(dst_log, 0) if l[0] > last_seq][:2]
    if not dst:
        fail("no gap line at the destination after line %d" % last_seq)
    longest = max(l[1] for l in during + dst)
    real = max(l[2] for l in during + dst)
    typical = statistics.median(l[1] for l in before) if before else '-'
    rate = statistics.median(l[3] for l in before) if before else '-'
    write = statistics.median(l[4] for l in before) if before else '-'
    print(longest, dst[0][1], typical, real, rate, len(during) + len(dst), write)


def listening_unix(path, timeout):
    """A UNIX socket file at path (a probe would take the one accept)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if stat.S_ISSOCK(os.stat(path).st_mode):
                return
        except FileNotFoundError:
            pass
        time.sleep(0.02)
    fail("no UNIX socket at %s after %g s" % (path, timeout))


def listening(port, timeout):
    """A listener on 127.0.0.1:port, from /proc/net/tcp (a probe would take the one accept)."""
    want = '0100007F:%04X' % port
    anyaddr = '00000000:%04X' % port
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open('/proc/net/tcp') as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if cols[1] in (want, anyaddr) and cols[3] == '0A':
                    return
        time.sleep(0.02)
    fail("nothing listens on 127.0.0.1:%d after %g s" % (port, timeout))


def main():
    a = sys.argv[1:]
    if a[0] == 'godwit':
        godwit_migrate(a[1], a[2], a[3], a[4], float(a[5]), a[6:])
    elif a[0] == 'qemu':
        cap = 1 << 40
        if '--max-bandwidth' in a[5:]:
            cap = int(float(a[a.index('--max-bandwidth') + 1]) * 1048576)
        qemu_migrate(a[1], a[2], int(a[3]), float(a[4]), '--shared' in a[5:], cap)
    elif a[0] == 'qemu-incoming':
        qemu_incoming(a[1], a[2], float(a[3]), '--shared' in a[4:])
    elif a[0] == 'gaps':
        gaps(a[1], int(a[2]), a[3])
    elif a[0] == 'listening' and a[1].startswith('/'):
        listening_unix(a[1], float(a[2]))
    elif a[0] == 'listening':
        listening(int(a[1]), float(a[2]))
    else:
        fail("migrate.py: unknown command " + a[0])


main()
