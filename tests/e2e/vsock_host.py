#!/usr/bin/env python3
"""vsock_host.py: the host's side of the e2e vsock case (tests/e2e/run-devices.sh).

  vsock_host.py serve PATH COUNT
      listens on PATH (the VM's <socket>_<port>), and for each of COUNT guest connections
      reads everything, then answers with its CRC-32 ("%08x\\n") and closes; prints
      "listening" once it listens and "served COUNT" once all were right
  vsock_host.py sink PATH...
      listens on each PATH and accepts every connection without ever reading from it; prints
      "listening" once it listens on all
  vsock_host.py connect SOCK PORT BIG SMALL N
      N+1 host programs at once through the VM's socket SOCK: each writes "CONNECT PORT",
      expects "OK <port>", sends random bytes (BIG for the first, SMALL for the others),
      shuts its sending side and reads the guest's echo, which must be the same bytes;
      prints "host ok N+1" when all were
"""
import os
import socket
import sys
import threading
import zlib

errors = []


def serve(path, count):
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(64)
    srv.settimeout(200)
    print("listening", flush=True)
    threads = []

    def one(conn):
        conn.settimeout(120)
        crc, n = 0, 0
        while chunk := conn.recv(65536):
            crc = zlib.crc32(chunk, crc)
            n += len(chunk)
        conn.sendall(b"%08x\n" % crc)
        conn.close()
        print(f"received {n} crc {crc:08x}", flush=True)

    for _ in range(count):
        conn, _ = srv.accept()
        t = threading.Thread(target=one, args=(conn,))
        t.start()
        threads.append(t)
    for t in threads:
        t.join()
    print(f"served {count}", flush=True)


def connect_one(sock, port, size):
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(120)
        s.connect(sock)
        s.sendall(b"CONNECT %d\n" % port)
        line = b""
        while not line.endswith(b"\n"):
            c = s.recv(1)
            if not c:
                raise RuntimeError(f"closed before OK (got {line!r})")
            line += c
        if not line.startswith(b"OK ") or not line[3:-1].isdigit():
            raise RuntimeError(f"bad answer {line!r}")
        data = os.urandom(size)

        def send():
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)

        t = threading.Thread(target=send)
        t.start()
        got = bytearray()
        while chunk := s.recv(65536):
            got += chunk
        t.join()
        s.close()
        if bytes(got) != data:
            raise RuntimeError(f"echo of {size} bytes came back as {len(got)} different bytes")
    except Exception as e:  # reported, and the case fails
        errors.append(f"{size}: {e}")


def connect(sock, port, big, small, n):
    threads = [threading.Thread(target=connect_one, args=(sock, port, big))]
    threads += [threading.Thread(target=connect_one, args=(sock, port, small)) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for e in errors:
        print(f"host error: {e}", flush=True)
    if not errors:
        print(f"host ok {n + 1}", flush=True)


def sink(paths):
    held = []
    for path in paths:
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(path)
        srv.listen(512)
        held.append(srv)

        def accept(srv=srv):
            while True:
                held.append(srv.accept()[0])

        threading.Thread(target=accept, daemon=True).start()
    print("listening", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    if sys.argv[1] == "sink":
        sink(sys.argv[2:])
    elif sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]))
    else:
        connect(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]))
