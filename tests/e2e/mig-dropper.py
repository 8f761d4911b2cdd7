#!/usr/bin/env python3
# mig-dropper.py PORT: a fake migration destination on 127.0.0.1:PORT for a source that uses
# several connections (godwit migrate --connections K): it reads the opening (CONNECTIONS,
# HELLO, each extra connection's JOIN, the MSI routes and the CPU model), answers READY, reads
# the pages on every connection, and once 2 MiB came on the first extra connection it closes
# that one unread (a connection dropped in the middle of a pass). The source must give up and
# run the guest on.
import socket
import struct
import sys
import threading
import time

MAGIC = 0x474D5747


def exact(c, n):
    b = b""
    while len(b) < n:
        chunk = c.recv(n - len(b))
        if not chunk:
            raise EOFError("the source closed")
        b += chunk
    return b


def message(c, want):
    magic, kind, length = struct.unpack("<IIQ", exact(c, 16))
    if magic != MAGIC or kind != want:
        raise ValueError(f"message {kind}, expected {want}")
    return exact(c, length)


def drain(c):
    try:
        while c.recv(1 << 20):
            pass
    except OSError:
        pass


def main():
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", int(sys.argv[1])))
    ls.listen(8)
    first, _ = ls.accept()
    count, _token = struct.unpack("<IQ", message(first, 13))  # CONNECTIONS
    message(first, 1)  # HELLO
    extras = [ls.accept()[0] for _ in range(count - 1)]
    for e in extras:
        message(e, 14)  # JOIN
    message(first, 20)  # ROUTES (protocol 5)
    message(first, 7)  # CPU
    first.sendall(struct.pack("<IIQ", MAGIC, 8, 0))  # READY
    for c in [first] + extras[1:]:
        threading.Thread(target=drain, args=(c,), daemon=True).start()
    got = 0
    while got < (2 << 20):
        b = extras[0].recv(1 << 16)
        if not b:
            break
        got += len(b)
    extras[0].close()
    print(f"dropped extra connection 1 of {count - 1} after {got} bytes", flush=True)
    time.sleep(15)


main()
