#!/usr/bin/env python3
"""api_exec.py: godwit's exec round trip without the CLI, for bench/agent.sh.

  api_exec.py API_SOCKET N     N times PUT /vm/agent/exec {"argv": ["true"]} on the VM's
                               API socket (a connection each: the API closes after one
                               request); prints each round trip's wall time in seconds

The figure to hold against bench/qga.py's, which keeps one process and one connection:
`godwit exec` adds a process start and its own setup to every round trip.
"""
import json
import socket
import sys
import time


def exec_true(path):
    body = json.dumps({"argv": ["true"]}).encode()
    req = (b"PUT /vm/agent/exec HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
           b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)) + body
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(path)
        s.sendall(req)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, payload = data.partition(b"\r\n\r\n")
    status = head.split(b" ", 2)[1:2]
    if status != [b"200"] or json.loads(payload).get("exit_status") != 0:
        raise RuntimeError(f"exec failed: {data[:200]!r}")


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    for _ in range(int(argv[2])):
        t0 = time.monotonic()
        exec_true(argv[1])
        print(f"{time.monotonic() - t0:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
