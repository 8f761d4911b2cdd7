#!/usr/bin/env python3
"""vsock_bench.py: godwit's agent and vsock measured on the VM's vsock socket itself (no API,
no CLI), for bench/agent.sh. One Python process, as bench/qga.py is for qemu-ga.

  vsock_bench.py VSOCK steps N          the exec round trip's steps, N rounds; prints
                                        "STEP median_ms" lines:
      connect   the UNIX connect, "CONNECT 1024" and the VMM's "OK" (a vsock connection
                request to the guest and its answer)
      ping      a PING answered on that connection (the agent's connection process)
      exec_seq  a whole exec of `true` as the host's client made it before: connect, EXEC,
                its OK, then the end of stdin, then EXIT
      exec      as it makes it now: connect, EXEC with the end of stdin, OK, EXIT
      exec_pipe connect, CONNECT line, EXEC and the end of stdin in one write, OK, EXIT
  vsock_bench.py VSOCK g2h PORT MIB     a guest-to-host stream: the agent runs
                                        `vsock-stream send PORT MIB`, which connects to the
                                        listener here at VSOCK_PORT; prints the seconds from
                                        its connection to the end of the stream
  vsock_bench.py VSOCK h2g PORT MIB     a host-to-guest stream: the agent runs
                                        `vsock-stream recv PORT`; this connects ("CONNECT
                                        PORT"), writes MIB MiB and reads the guest's count;
                                        prints the seconds from the "OK" to the count
"""
import os
import socket
import statistics
import struct
import sys
import time

MAGIC, VERSION = 0x47415747, 1
EXEC, STDIN, PING, OK, ERROR, EXIT = 1, 2, 14, 64, 65, 67
T_ARG, T_EXIT_CODE = 1, 18
FLAG_EOF = 2
PORT = 1024


def msg(mtype, fields=(), flags=0, mid=1):
    payload = b"".join(struct.pack("<HI", t, len(v)) + v for t, v in fields)
    return struct.pack("<IBBHII", MAGIC, VERSION, mtype, flags, mid, len(payload)) + payload


def exec_msgs(argv, eof=True):
    m = msg(EXEC, [(T_ARG, a.encode()) for a in argv], mid=1)
    return m + (msg(STDIN, flags=FLAG_EOF, mid=2) if eof else b"")


class Conn:
    def __init__(self, path, port=PORT, first=b""):
        """Connects through the VMM's socket; `first` goes in the same write as the line."""
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(60)
        self.s.connect(path)
        self.buf = b""
        self.s.sendall(b"CONNECT %d\n" % port + first)
        line = self.read_line()
        if not line.startswith(b"OK "):
            raise RuntimeError(f"CONNECT {port}: {line!r}")

    def read_exact(self, n):
        """n bytes: what the handshake read past its line first, then reads of what is left."""
        parts, have = [self.buf[:n]], min(n, len(self.buf))
        self.buf = self.buf[n:]
        while have < n:
            data = self.s.recv(n - have)
            if not data:
                raise EOFError("the connection ended")
            parts.append(data)
            have += len(data)
        return b"".join(parts)

    def read_line(self):
        while b"\n" not in self.buf:
            data = self.s.recv(64)  # the line only: what follows is the agent's
            if not data:
                raise RuntimeError("refused (nothing listens on that port?)")
            self.buf += data
        line, _, self.buf = self.buf.partition(b"\n")
        return line

    def recv(self):
        """The next message: (type, {tag: value}, raw payload length)."""
        magic, _, mtype, _, _, length = struct.unpack("<IBBHII", self.read_exact(16))
        if magic != MAGIC:
            raise RuntimeError("not an agent message")
        payload = self.read_exact(length)
        fields, pos = {}, 0
        while pos + 6 <= length:
            tag, flen = struct.unpack("<HI", payload[pos:pos + 6])
            fields.setdefault(tag, payload[pos + 6:pos + 6 + flen])
            pos += 6 + flen
        return mtype, fields, length

    def expect(self, mtype):
        got, fields, _ = self.recv()
        if got != mtype:
            raise RuntimeError(f"wanted message {mtype}, got {got}: {fields}")
        return fields

    def wait_exit(self):
        """Output (thrown away) until EXIT; the exit code."""
        while True:
            mtype, fields, _ = self.recv()
            if mtype == EXIT:
                return struct.unpack("<I", fields.get(T_EXIT_CODE, b"\xff\0\0\0"))[0]
            elif mtype == ERROR:
                raise RuntimeError(f"agent error: {fields}")

    def close(self):
        self.s.close()


def timed(fn):
    t0 = time.monotonic()
    fn()
    return (time.monotonic() - t0) * 1000


def steps(path, n):
    def connect():
        Conn(path).close()

    def ping():
        c = Conn(path)
        t = timed(lambda: (c.s.sendall(msg(PING)), c.expect(OK)))
        c.close()
        return t

    def run(c, after_ok=b""):
        c.expect(OK)
        if after_ok:
            c.s.sendall(after_ok)
        if c.wait_exit() != 0:
            raise RuntimeError("true did not exit 0")
        c.close()

    def exec_seq():
        c = Conn(path)
        c.s.sendall(exec_msgs(["true"], eof=False))
        run(c, msg(STDIN, flags=FLAG_EOF, mid=2))

    def exec_now():
        c = Conn(path)
        c.s.sendall(exec_msgs(["true"]))
        run(c)

    def exec_pipe():
        run(Conn(path, first=exec_msgs(["true"])))

    res = {k: [] for k in ("connect", "ping", "exec_seq", "exec", "exec_pipe")}
    for _ in range(n):
        res["connect"].append(timed(connect))
        res["ping"].append(ping())
        res["exec_seq"].append(timed(exec_seq))
        res["exec"].append(timed(exec_now))
        res["exec_pipe"].append(timed(exec_pipe))
    for k, v in res.items():
        print(f"{k} {statistics.median(v):.3f}")


def start_guest(path, argv):
    c = Conn(path, first=exec_msgs(argv))
    c.expect(OK)
    return c


def g2h(path, port, mib):
    lpath = f"{path}_{port}"
    if os.path.exists(lpath):
        os.unlink(lpath)
    ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ls.bind(lpath)
    ls.listen(1)
    ls.settimeout(60)
    try:
        c = start_guest(path, ["vsock-stream", "send", str(port), str(mib)])
        s, _ = ls.accept()
        s.settimeout(120)
        t0, got = time.monotonic(), 0
        while data := s.recv(1 << 20):
            got += len(data)
        t = time.monotonic() - t0
        s.close()
        code = c.wait_exit()
    finally:
        ls.close()
        os.unlink(lpath)
    if code != 0 or got != mib << 20:
        raise RuntimeError(f"vsock-stream send exited {code}; {got} of {mib << 20} bytes came")
    print(f"{t:.6f}")


def h2g(path, port, mib):
    c = start_guest(path, ["vsock-stream", "recv", str(port)])
    for _ in range(100):  # until the guest listens
        try:
            s = Conn(path, port)
            break
        except (RuntimeError, OSError):
            time.sleep(0.05)
    else:
        raise RuntimeError(f"nothing listens on guest port {port}")
    chunk = bytes(1 << 16)
    t0 = time.monotonic()
    for _ in range((mib << 20) // len(chunk)):
        s.s.sendall(chunk)
    s.s.shutdown(socket.SHUT_WR)
    count = int(s.read_line())
    t = time.monotonic() - t0
    s.close()
    code = c.wait_exit()
    if code != 0 or count != mib << 20:
        raise RuntimeError(f"vsock-stream recv exited {code} after {count} of {mib << 20} bytes")
    print(f"{t:.6f}")


def main(argv):
    if len(argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    path, mode, args = argv[1], argv[2], [int(a) for a in argv[3:]]
    modes = {"steps": steps, "g2h": g2h, "h2g": h2g}
    if mode not in modes:
        print(__doc__, file=sys.stderr)
        return 2
    modes[mode](path, *args)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
