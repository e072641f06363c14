# SPDX-License-Identifier: MIT
"""A client's end, in every state its connection can be in.

A client may half-close or reset at any moment: while a send to it is in
flight, with receive buffers held behind that send, with its receive paused
for backpressure, while it waits for receive buffers, right behind a burst
(so that the data and the end arrive together, often in one batch), or
before the daemon has even accepted it.  A half-close still gets every byte
back, in order, then a clean FIN (never an RST); a reset costs that
connection only.  Either way the connection's fd and buffers come back: the
daemon's fd count returns to where it was, and a fresh pipelined load is
echoed exactly, still forms chains (no leaked hold) and does not starve (no
leaked buffer).

Every daemon's stderr is checked for AddressSanitizer / UBSan reports.
"""

import random
import socket
import time
import unittest

import harness
from harness import (KiB, MiB, POOL_FOR_BURSTS, POOL_FOR_STALLS, assert_same,
                     close_with_reset as reset, daemon_rx_queue, duplex, fill_until_paused,
                     random_bytes, read_all_until_eof, recv_exact, recv_until_eof,
                     send_in_background, varied_payloads, wait_until)

harness.exit_77_unless_io_uring()


class HalfCloseTest(harness.CheckedTestCase):
    """A half-closing client gets every byte it sent, then a clean EOF."""

    def test_half_close_while_receive_is_paused(self):
        d = self.start({"max_pending_bytes": 16 * KiB})
        s = self.client(d)
        data = random_bytes(16 * MiB, seed=5)  # beyond every socket buffer
        t, err = send_in_background(s, data)
        wait_until(lambda: (daemon_rx_queue(s) or 0) > 0, 30, "paused receive", d)
        got = recv_until_eof(s, timeout=60)  # a reset raises here
        t.join(30)
        self.assertEqual(err, [])
        harness.assert_same(self, got, data)
        self.stop_clean(d)

    def test_half_close_with_echo_queued_then_read_slowly(self):
        d = self.start({"max_pending_bytes": 4 * MiB})
        s = self.slow_reader(d, rcvbuf=8192)
        data = random_bytes(3 * MiB, seed=6)
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        harness.wait_received_by_daemon(s)
        got = bytearray()
        while True:
            b = s.recv(64 * KiB)  # ConnectionResetError fails the test
            if not b:
                break
            got += b
        harness.assert_same(self, bytes(got), data)
        self.stop_clean(d)

    def test_half_close_with_chains_held(self):
        # Three clients stall the daemon (each with a send stalled and echo
        # behind it, held in a chain as far as the budget allows, copied
        # beyond), then half-close: each gets every byte it sent, in order,
        # then a clean EOF.
        d = self.start(POOL_FOR_STALLS)
        socks = [self.slow_reader(d) for _ in range(3)]
        sent = [fill_until_paused(s, seed=20 + i) for i, s in enumerate(socks)]
        for s in socks:
            s.shutdown(socket.SHUT_WR)
        got = read_all_until_eof(socks)
        for i in range(len(socks)):
            assert_same(self, got[i], sent[i], "client %d" % i)
            socks[i].close()
        self.assert_pool_intact(d, seed=1500)
        self.stop_clean(d)

    def test_bursts_followed_at_once_by_eof(self):
        # The FIN right behind each burst: the data and the EOF arrive
        # together, and the connection must send its due echo (a lone
        # buffer, a chain, copies) and only then close, with a clean FIN.
        d = self.start(POOL_FOR_BURSTS)
        base = d.fd_count()
        rng = random.Random(8)
        socks = [self.client(d) for _ in range(64)]
        payloads = [random_bytes(rng.randint(1, 24 * KiB), seed=300 + i)
                    for i in range(len(socks))]
        for s, p in zip(socks, payloads):
            s.sendall(p)
            s.shutdown(socket.SHUT_WR)
        got = read_all_until_eof(socks, daemon=d)
        for i, (g, p) in enumerate(zip(got, payloads)):
            assert_same(self, g, p, "connection %d" % i)
            socks[i].close()
        self.wait_no_connections(d, base)
        self.pipeline(d, varied_payloads(32, 24 * KiB, 350), 350, half_close=True)
        self.wait_no_connections(d, base)
        self.assert_pool_intact(d, seed=400)
        self.stop_clean(d)

    def test_1500_half_closes_at_once(self):
        d = self.start({"buffer_count": 64, "buffer_size": 1024})
        base = d.fd_count()
        n = 1500
        socks = [d.connect() for _ in range(n)]
        payloads = [random_bytes(1 + (i * 7919) % 6000, seed=i) for i in range(n)]
        got = duplex(socks, payloads, timeout=120, half_close=True)
        for i in range(n):
            if got[i] != payloads[i]:
                harness.assert_same(self, got[i], payloads[i], "connection %d" % i)
        for s in socks:
            s.close()
        d.wait_fd_count(base)
        self.stop_clean(d)


class ResetTest(harness.CheckedTestCase):
    """A reset at any moment frees the connection and everything it held."""

    def test_eof_and_reset_return_their_buffers(self):
        # Eight receive buffers: if an EOF or an error completion kept one,
        # the daemon would be out of buffers within a few connections.
        d = self.start({"buffer_count": 8, "buffer_size": 256})
        base = d.fd_count()
        for i in range(150):
            s = d.connect(timeout=15)
            msg = b"eof %d " % i * 20
            s.sendall(msg)
            s.shutdown(socket.SHUT_WR)
            got = recv_until_eof(s, timeout=15)
            s.close()
            if got != msg:
                d.fail("cycle %d: got %r" % (i, got[:40]))
        for i in range(150):
            s = d.connect(timeout=15)
            s.sendall(b"rst %d" % i)
            if i % 2:
                recv_exact(s, len(b"rst %d" % i), timeout=15)
            reset(s)
        socks = [d.connect() for _ in range(16)]
        payloads = [random_bytes(64 * KiB, seed=i) for i in range(16)]
        got = duplex(socks, payloads, timeout=60, half_close=True)
        for i in range(16):
            harness.assert_same(self, got[i], payloads[i], "connection %d" % i)
            socks[i].close()
        d.wait_fd_count(base)
        self.stop_clean(d)

    def test_reset_while_receive_is_paused_for_backpressure(self):
        d = self.start({"max_pending_bytes": 16 * KiB})
        base = d.fd_count()
        socks = []
        for i in range(24):
            s = d.connect()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            fill_until_paused(s, seed=i)  # the daemon stops reading it
            socks.append(s)
        for s in socks:
            reset(s)
        d.wait_fd_count(base)
        s = self.client(d)
        data = random_bytes(MiB, seed=99)
        harness.assert_same(self, harness.echo_roundtrip(s, data), data)
        self.assertEqual(d.stats()["connections"], 1)
        s.close()
        self.stop_clean(d)

    def test_reset_while_send_in_flight(self):
        # Tiny client receive buffers: the daemon's sends stall mid-buffer,
        # some from a held receive buffer, some from a queue.
        d = self.start({"buffer_count": 16, "buffer_size": 1024,
                        "max_pending_bytes": 64 * KiB})
        base = d.fd_count()
        for rnd in range(2):
            socks = []
            for i in range(16):
                s = self.slow_reader(d, rcvbuf=2048, timeout=30)
                socks.append(s)
                if i % 3 == 0:
                    s.sendall(b"x" * 900)  # one buffer, sent zero-copy, stalls
                else:
                    fill_until_paused(s, chunk=8 * KiB, seed=i)
            # Part of the echo read, part not, then RST.
            for i, s in enumerate(socks):
                if i % 2:
                    recv_exact(s, 100, timeout=30)
                reset(s)
        d.wait_fd_count(base)
        st = d.stats()
        self.assertEqual(st["connections"], 0)
        s = self.client(d)
        socks = [d.connect() for _ in range(16)]
        payloads = [random_bytes(200 * KiB, seed=300 + i) for i in range(16)]
        got = duplex(socks, payloads, timeout=60)
        for i in range(16):
            harness.assert_same(self, got[i], payloads[i], "after resets %d" % i)
            socks[i].close()
        s.close()
        d.wait_fd_count(base)
        self.stop_clean(d)

    def test_reset_while_starved_of_buffers(self):
        d = self.start({"buffer_count": 8, "buffer_size": 256,
                        "max_pending_bytes": 256 * KiB})
        base = d.fd_count()
        n = 40
        socks = [d.connect() for _ in range(n)]
        payloads = [random_bytes(96 * KiB, seed=700 + i) for i in range(n)]
        # Every other one resets mid-stream, its echo partly unread.
        resets = [(8 + i) * KiB if i % 2 == 0 else None for i in range(n)]
        got = stream(socks, payloads, timeout=90, reset_after=resets, chunk=4 * KiB)
        for i in range(1, n, 2):
            harness.assert_same(self, got[i], payloads[i], "survivor %d" % i)
        keep = socks[1::2]
        self.assertGreater(d.stats()["bufring_empty"], 0,
                           "the buffer ring never ran dry: the test did not starve anyone")
        for s in keep:
            s.close()
        d.wait_fd_count(base)
        self.stop_clean(d)

    def test_reset_while_buffers_held(self):
        # Stalled clients hold buffers (a send in flight, a chain, a queue)
        # up to the hold budget; some read part of their echo, then all
        # reset (SO_LINGER 0).  Twice: if a reset leaked the buffers it held,
        # or the count of held buffers, nothing could be held any more.
        d = self.start(POOL_FOR_STALLS)
        base = d.fd_count()
        for rnd in range(2):
            socks = [self.slow_reader(d) for _ in range(3)]
            for i, s in enumerate(socks):
                fill_until_paused(s, seed=30 + 3 * rnd + i)
            for i, s in enumerate(socks):
                if i % 2:
                    recv_exact(s, 100 * KiB + 7)  # the chain's send resumes
                reset(s)
            d.wait_fd_count(base)
            self.assertEqual(d.stats()["connections"], 0)
        self.assert_pool_intact(d, seed=1600)
        self.stop_clean(d)

    def test_bursts_followed_at_once_by_reset(self):
        # Each client writes a burst of several buffers and resets right
        # behind it, so the data and the error complete together, often in
        # one batch: the connection is made due, then freed before the
        # batch's sends start (it must leave the due list as it goes).  A
        # quarter first have an echo in flight, so the burst is held behind it.
        d = self.start(POOL_FOR_BURSTS)
        base = d.fd_count()
        rng = random.Random(7)
        for rnd in range(3):
            for i in range(64):
                s = d.connect()
                if i % 4 == 1:
                    s.sendall(b"x" * 600)
                    recv_exact(s, 1)
                s.sendall(random_bytes(rng.randint(1, 12 * KiB), seed=100 * rnd + i))
                reset(s)
            self.wait_no_connections(d, base)
        self.assert_pool_intact(d, seed=200)
        self.stop_clean(d)

    def test_reset_before_accept_burst(self):
        # Connect and reset at once, 600 times, before the daemon has even
        # accepted most of them: each costs nothing once gone.
        d = self.start()
        base = d.fd_count()
        for i in range(600):
            s = d.connect()
            if i % 3 == 0:
                s.send(b"gone")
            reset(s)
        s = self.client(d)
        self.assertEqual(harness.echo_roundtrip(s, b"after the burst"), b"after the burst")
        s.close()
        d.wait_fd_count(base)
        self.assertEqual(d.stats()["connections"], 0)
        self.stop_clean(d)


def stream(socks, payloads, timeout=60, reset_after=None, chunk=16 * KiB):
    """Send payloads[i] on socks[i] while reading the echo, then half-close
    and read to EOF.  reset_after[i], if not None: once that many bytes have
    been sent, reset the connection instead (its result is then None).
    Returns what each connection read."""
    import selectors
    sel = selectors.DefaultSelector()
    st = []
    for i, (s, p) in enumerate(zip(socks, payloads)):
        s.setblocking(False)
        c = {"i": i, "s": s, "p": memoryview(p), "sent": 0, "buf": bytearray(),
             "done": False, "shut": False,
             "rst": reset_after[i] if reset_after else None}
        st.append(c)
        sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE, c)
    left = len(st)
    deadline = time.monotonic() + timeout
    try:
        while left:
            if time.monotonic() > deadline:
                raise AssertionError("stream timed out: %s" % [
                    (c["i"], c["sent"], len(c["buf"])) for c in st if not c["done"]][:8])
            for key, ev in sel.select(0.5):
                c = key.data
                s = c["s"]
                if ev & selectors.EVENT_WRITE and not c["done"]:
                    if c["sent"] < len(c["p"]):
                        try:
                            c["sent"] += s.send(c["p"][c["sent"]:c["sent"] + chunk])
                        except BlockingIOError:
                            pass
                    if c["rst"] is not None and c["sent"] >= c["rst"]:
                        sel.unregister(s)
                        reset(s)
                        c["done"], c["buf"] = True, None
                        left -= 1
                        continue
                    if c["sent"] == len(c["p"]) and not c["shut"]:
                        s.shutdown(socket.SHUT_WR)
                        c["shut"] = True
                        sel.modify(s, selectors.EVENT_READ, c)
                if ev & selectors.EVENT_READ and not c["done"]:
                    try:
                        b = s.recv(256 * KiB)
                    except BlockingIOError:
                        continue
                    except ConnectionResetError:
                        raise AssertionError("conn %d reset by the daemon after %d bytes"
                                             % (c["i"], len(c["buf"]))) from None
                    if not b:
                        sel.unregister(s)
                        c["done"] = True
                        left -= 1
                    else:
                        c["buf"] += b
    finally:
        sel.close()
    return [None if c["buf"] is None else bytes(c["buf"]) for c in st]


if __name__ == "__main__":
    unittest.main()
