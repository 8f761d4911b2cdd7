#!/usr/bin/env python3
"""qga.py: the QEMU guest agent side of bench/agent.sh, a minimal client of QGA's JSON
protocol on the chardev socket QEMU listens on.

  qga.py SOCKET wait TIMEOUT_S     until the agent answers guest-sync-delimited
  qga.py SOCKET exec N             N round trips of guest-exec /bin/true, then
                                   guest-exec-status polled at once until exited;
                                   prints each round trip's wall time in seconds
  qga.py SOCKET execout BYTES      guest-exec of sh -c "head -c BYTES /dev/zero", capture-output,
                                   guest-exec-status until exited; the output (base64 in
                                   out-data) checked; prints the wall time in seconds
  qga.py SOCKET write FILE PATH    FILE into the guest at PATH: guest-file-open,
                                   guest-file-write of 1 MiB (raw) base64 chunks,
                                   guest-file-close; prints the wall time in seconds

Each command connects anew and syncs first (guest-sync-delimited with a fresh id, after a
0xFF byte that resets the agent's parser), so that replies to an earlier client's requests
are never taken for ours.
"""
import base64
import json
import os
import random
import socket
import sys
import time

CHUNK = 1 << 20


class Agent:
    def __init__(self, path, timeout):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""
        self.dec = json.JSONDecoder()

    def send(self, cmd, **args):
        msg = {"execute": cmd}
        if args:
            msg["arguments"] = args
        self.sock.sendall(json.dumps(msg).encode())

    def reply(self):
        """The next JSON object from the agent, skipping 0xFF delimiters and whitespace."""
        while True:
            text = self.buf.lstrip(b"\xff \r\n\t")
            # Decoded only when it may be whole (an object ends with "}"): a long reply
            # (guest-exec-status with megabytes of output) comes in many reads.
            if text and text.rstrip().endswith(b"}"):
                try:
                    obj, end = self.dec.raw_decode(text.decode())
                    self.buf = text.decode()[end:].encode()
                    return obj
                except ValueError:
                    pass
            data = self.sock.recv(1 << 20)
            if not data:
                raise EOFError("the agent closed the connection")
            self.buf += data

    def call(self, cmd, **args):
        self.send(cmd, **args)
        r = self.reply()
        if "error" in r:
            raise RuntimeError(f"{cmd}: {r['error']}")
        return r["return"]

    def sync(self, tries=30):
        """Syncs, again with a new id every 2 s: a request sent just after a client
        connects can be lost while the port tells the guest of the connection."""
        timeout = self.sock.gettimeout()
        self.sock.settimeout(2)
        for _ in range(tries):
            want = random.randrange(1, 1 << 31)
            self.sock.sendall(b"\xff")
            self.send("guest-sync-delimited", id=want)
            try:
                while self.reply().get("return") != want:
                    pass
                self.sock.settimeout(timeout)
                return
            except TimeoutError:
                self.buf = b""
        raise TimeoutError("guest-sync-delimited: no answer")


def wait(path, timeout_s):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            a = Agent(path, 2)
            a.sync(tries=1)
            return 0
        except (OSError, EOFError, ValueError):  # TimeoutError is an OSError
            time.sleep(0.5)
    print(f"qga.py: no answer from the agent at {path} in {timeout_s} s", file=sys.stderr)
    return 1


def exec_rtt(path, n):
    a = Agent(path, 30)
    a.sync()
    for _ in range(n):
        t0 = time.monotonic()
        pid = a.call("guest-exec", path="/bin/true", **{"capture-output": True})["pid"]
        while True:
            st = a.call("guest-exec-status", pid=pid)
            if st["exited"]:
                break
        t1 = time.monotonic()
        if st.get("exitcode") != 0:
            raise RuntimeError(f"/bin/true exited with {st}")
        print(f"{t1 - t0:.6f}")
    return 0


def exec_output(path, nbytes):
    """sh -c "head -c nbytes /dev/zero" with its output captured: guest-exec, then guest-exec-status
    until it has exited, whose out-data (base64) holds the output."""
    a = Agent(path, 120)
    a.sync()
    t0 = time.monotonic()
    pid = a.call("guest-exec", path="/bin/sh", arg=["-c", f"head -c {nbytes} /dev/zero"],
                 **{"capture-output": True})["pid"]
    while True:
        st = a.call("guest-exec-status", pid=pid)
        if st["exited"]:
            break
    out = base64.b64decode(st.get("out-data", ""))
    t1 = time.monotonic()
    if st.get("exitcode") != 0 or len(out) != nbytes or st.get("out-truncated"):
        raise RuntimeError(f"head exited {st.get('exitcode')} with {len(out)} of {nbytes} bytes")
    print(f"{t1 - t0:.6f}")
    return 0


def write(path, src, dst):
    a = Agent(path, 120)
    a.sync()
    t0 = time.monotonic()
    h = a.call("guest-file-open", path=dst, mode="w")
    total = 0
    with open(src, "rb") as f:
        while True:
            data = f.read(CHUNK)
            if not data:
                break
            r = a.call("guest-file-write", handle=h, **{"buf-b64": base64.b64encode(data).decode()})
            if r["count"] != len(data):
                raise RuntimeError(f"guest-file-write wrote {r['count']} of {len(data)} bytes")
            total += len(data)
    a.call("guest-file-close", handle=h)
    t1 = time.monotonic()
    if total != os.path.getsize(src):
        raise RuntimeError("short read of the source file")
    print(f"{t1 - t0:.6f}")
    return 0


def main(argv):
    if len(argv) == 4 and argv[2] == "wait":
        return wait(argv[1], float(argv[3]))
    if len(argv) == 4 and argv[2] == "exec":
        return exec_rtt(argv[1], int(argv[3]))
    if len(argv) == 4 and argv[2] == "execout":
        return exec_output(argv[1], int(argv[3]))
    if len(argv) == 5 and argv[2] == "write":
        return write(argv[1], argv[3], argv[4])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
