#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Clients that stream through upgrades and check every byte.

    stream_client.py HOST PORT N

Opens N connections to HOST:PORT and keeps each sending random bytes while
reading the echo, at most 64 KiB unechoed each.  Prints "streaming" once
every connection has had an echo, then goes on until a line arrives on
stdin (or 10 minutes pass); then each half-closes, reads the rest of its
echo and the EOF.  Prints "OK <bytes>" when every byte came back in order
on every connection, with no reset and no early EOF; else "FAILED <why>"
and exits 1.  The system test runs it in the container's network namespace
across `systemctl kill -s USR2` and a package upgrade.
"""

import os
import random
import selectors
import socket
import sys
import time

WINDOW = 64 * 1024
LIMIT_S = 600


def main():
    host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    sel = selectors.DefaultSelector()
    conns = []
    for i in range(n):
        s = socket.create_connection((host, port), timeout=30)
        s.setblocking(False)
        # owed: sent, not echoed yet
        c = {"sock": s, "rng": random.Random(i), "owed": bytearray(), "sent": 0, "got": 0,
             "eof": False, "shut": False}
        conns.append(c)
        sel.register(s, selectors.EVENT_READ, c)
    sel.register(sys.stdin, selectors.EVENT_READ, None)
    stopping, announced = False, False
    deadline = time.monotonic() + LIMIT_S
    while not all(c["eof"] for c in conns):
        if time.monotonic() > deadline:
            return fail("no end within %d s" % LIMIT_S)
        for c in conns:
            if stopping and not c["shut"]:
                c["sock"].shutdown(socket.SHUT_WR)
                c["shut"] = True
            if not stopping and len(c["owed"]) < WINDOW:
                data = c["rng"].randbytes(c["rng"].randint(1, 4096))
                try:
                    n = c["sock"].send(data)
                except BlockingIOError:
                    continue
                c["owed"] += data[:n]
                c["sent"] += n
        for key, _ in sel.select(0.01):
            c = key.data
            if c is None:
                sys.stdin.readline()
                sel.unregister(sys.stdin)
                stopping = True
                continue
            try:
                b = c["sock"].recv(1 << 16)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                return fail("connection %d reset after %d bytes" % (conns.index(c), c["got"]))
            if not b:
                if not c["shut"] or c["owed"]:
                    return fail("connection %d: EOF after %d of %d bytes"
                                % (conns.index(c), c["got"], c["sent"]))
                c["eof"] = True
                sel.unregister(c["sock"])
                continue
            if c["owed"][:len(b)] != b:
                return fail("connection %d: wrong or extra bytes at offset %d"
                            % (conns.index(c), c["got"]))
            del c["owed"][:len(b)]
            c["got"] += len(b)
        if not announced and all(c["got"] for c in conns):
            print("streaming", flush=True)
            announced = True
    print("OK %d" % sum(c["got"] for c in conns), flush=True)
    return 0


def fail(why):
    print("FAILED " + why, flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
