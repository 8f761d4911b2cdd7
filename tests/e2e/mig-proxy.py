#!/usr/bin/env python3
"""mig-proxy.py LISTEN_PATH TARGET_PATH MODE

Forwards one migration stream between a source (connecting to LISTEN_PATH) and a destination
(listening at TARGET_PATH), message by message, and loses one message on purpose: at the first
message of the destination's whose type MODE names (drop-ack: ACK, drop-running: RUNNING) it
shuts the connection down both ways without forwarding it, as a network that fails at that
moment would. Prints one line saying what it dropped."""
import socket
import struct
import sys
import threading

HEADER = struct.Struct("<IIQ")  # magic "GWMG", type, payload length
listen_path, target_path, mode = sys.argv[1:4]
drop_type = {"drop-ack": 5, "drop-running": 10}[mode]

server = socket.socket(socket.AF_UNIX)
server.bind(listen_path)
server.listen(1)
server.settimeout(120)  # a source that never comes must not hold up the suite
source, _ = server.accept()
source.settimeout(None)
dest = socket.socket(socket.AF_UNIX)
dest.connect(target_path)


def cut():
    for s in (source, dest):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def recv_exact(s, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


def pump(a, b, drop):
    try:
        while True:
            header = recv_exact(a, HEADER.size)
            _, kind, length = HEADER.unpack(header)
            if kind == drop:
                print(f"mig-proxy: dropped message type {kind} ({mode})", flush=True)
                break
            b.sendall(header)
            while length:
                chunk = recv_exact(a, min(length, 1 << 20))
                b.sendall(chunk)
                length -= len(chunk)
    except (EOFError, OSError):
        pass
    cut()


forward = threading.Thread(target=pump, args=(source, dest, None))
forward.start()
pump(dest, source, drop_type)
forward.join()
