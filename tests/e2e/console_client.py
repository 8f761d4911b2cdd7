#!/usr/bin/env python3
"""console_client.py: a client of a VM's console socket that stays connected while the guest
moves (the migrate_local case, tests/e2e/run-devices.sh).

  console_client.py SOCK DIR
      connects to SOCK and keeps that one connection. For each file DIR/ask-N that appears
      (N = 1, 2, ...), it asks the guest's shell on hvc0 through it to print "hvc step N says
      42", and writes DIR/answer-N once that came back. DIR/end: it closes the connection and
      exits 0. It writes DIR/failed (one line, why) and exits 1 when the connection ends
      meanwhile (godwit closed it) or an answer takes over 60 s.
"""
import os
import select
import socket
import sys
import time

ANSWER_TIMEOUT_S = 60
LIFETIME_S = 1200


def fail(ctl, why):
    with open(os.path.join(ctl, "failed"), "w") as f:
        f.write(why + "\n")
    sys.exit(1)


def main():
    path, ctl = sys.argv[1], sys.argv[2]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    step, asked_at, got = 0, None, b""
    end = time.time() + LIFETIME_S
    while time.time() < end:
        if os.path.exists(os.path.join(ctl, "end")):
            s.close()
            return 0
        if asked_at is None and os.path.exists(os.path.join(ctl, "ask-%d" % (step + 1))):
            step += 1
            # $((6 * 7)): the shell's answer, not the terminal's echo of the command, says 42.
            s.sendall(b'\necho "hvc step %d says $((6 * 7))"\n' % step)
            asked_at, got = time.time(), b""
        if select.select([s], [], [], 0.05)[0]:
            chunk = s.recv(4096)
            if not chunk:
                fail(ctl, "the connection was closed by godwit (at step %d, %d bytes of its "
                     "answer had come)" % (step, len(got)))
            got += chunk
        if asked_at is not None and b"hvc step %d says 42" % step in got:
            open(os.path.join(ctl, "answer-%d" % step), "w").close()
            asked_at = None
        if asked_at is not None and time.time() - asked_at > ANSWER_TIMEOUT_S:
            fail(ctl, "no answer to step %d in %d s (%d bytes came: %r)"
                 % (step, ANSWER_TIMEOUT_S, len(got), got[-120:]))
    fail(ctl, "not told to end in %d s" % LIFETIME_S)


if __name__ == "__main__":
    sys.exit(main())
