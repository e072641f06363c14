# SPDX-License-Identifier: MIT
"""Held receive buffers ("chains") against the real daemon.

A receive buffer that arrives while a send is in flight is held in its
connection's chain (at most CHAIN_MAX = 16, and at most half the pool held
server-wide) and later goes out with the others in one sendmsg; past those
limits the bytes are copied into the connection's queue.  Whatever mix of
the three a connection goes through, its client must get back exactly the
bytes it sent, in order: the send in flight, then the chain, then the queue.

The tests use small pools (buffer_count 64, buffer_size 512 or 1024) so
that a chain fills within one batch of receives and a few clients use up
the hold budget of 32 buffers.  Clients that stop reading stall the daemon's
sends (once its socket send buffer is full), so buffers wait in the chain
as far as it and the budget allow and the queue takes the rest; from there
they resume, reset, half-close, or are cut by SIGTERM.
Each test ends by checking the pool survived: a fresh pipelined load is
echoed exactly and still produces chained sends (a leaked hold would leave
no budget for any) without starving (a leaked buffer would).

Every daemon's stderr is checked for AddressSanitizer / UBSan reports.
"""

import random
import signal
import socket
import time
import unittest

import harness
from harness import (assert_same, close_with_reset as reset, duplex, fill_until_paused,
                     random_bytes, read_all_until_eof, recv_exact, tcp_snapshot)

harness.exit_77_unless_io_uring()

KiB = 1024
MiB = 1024 * KiB

SHUTTING_DOWN = r"^<5>shutting down"
CLIENT_RCVBUF = 4096  # the daemon's sends to a client that does not read stall soon

# A small pool: 32 buffers may be held, about two stalled connections' full
# chains; max_pending_bytes lets a stalled connection hold a full chain
# (16 KiB) and a queue behind it.
SMALL_POOL = {"buffer_count": 64, "buffer_size": 1024, "max_pending_bytes": 64 * KiB}


def bytes_read_by_daemon(sock, sent, timeout=10):
    """How many of the `sent` bytes the daemon has taken off its socket: the
    rest is unacknowledged in our send queue or unread in its receive queue."""
    deadline = time.monotonic() + timeout
    while True:
        snap = tcp_snapshot(sock)
        if snap is not None:
            return sent - snap[0] - snap[1]
        if time.monotonic() > deadline:
            raise AssertionError("the connection's queues never settled")
        time.sleep(0.01)


class ChainCase(harness.CheckedTestCase):
    """Daemons checked for sanitizer reports; clients with tiny receive buffers."""

    def slow_reader(self, d, rcvbuf=CLIENT_RCVBUF):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(harness.IO_TIMEOUT)
        s.connect(d.addr)
        self.addCleanup(s.close)
        return s

    def assert_pool_intact(self, d, seed, n=8, size=256 * KiB):
        """A pipelined load is echoed exactly, chains still form (the hold
        budget is not leaked) and receives do not starve (no buffer is)."""
        before = d.stats()
        socks = [self.client(d) for _ in range(n)]
        payloads = [random_bytes(size, seed=seed + i) for i in range(n)]
        try:
            got = duplex(socks, payloads, timeout=30, chunk=32 * KiB,
                         rng=random.Random(seed))
        except AssertionError as e:
            d.fail("pool check: %s (buffers leaked?)" % e)
        for i in range(n):
            assert_same(self, got[i], payloads[i], "pool check, connection %d" % i)
            socks[i].close()
        after = d.stats()
        self.assert_buffers_not_leaked(d, before, after)
        return after


class PipelineTest(ChainCase):

    def test_many_pipelining_connections_mix_chains_and_copies(self):
        # 40 connections x 160 KiB, sent in random pieces up to 16 KiB while
        # the echo is read: each piece fills up to 32 buffers of 512 bytes in
        # one batch, so behind each send a chain fills (then the queue takes
        # the rest), and 40 connections want far more than the 32 buffers
        # the pool lets them hold (then they copy).
        d = self.start({"buffer_count": 64, "buffer_size": 512,
                        "max_pending_bytes": 256 * KiB})
        n = 40
        socks = [self.client(d) for _ in range(n)]
        payloads = [random_bytes(160 * KiB + i * 97, seed=1000 + i) for i in range(n)]
        try:
            got = duplex(socks, payloads, timeout=60, chunk=16 * KiB,
                         rng=random.Random(1))
        except AssertionError as e:
            d.fail(str(e))
        for i in range(n):
            assert_same(self, got[i], payloads[i], "connection %d" % i)
        st = d.stats()
        self.assertGreater(st["chained_sends"], 0, d.log_text())
        self.assertEqual(st["bytes"], sum(map(len, payloads)))
        for s in socks:
            s.close()
        self.assert_pool_intact(d, seed=1100)
        self.stop_clean(d)

    def test_half_close_right_after_a_pipelined_burst(self):
        # The EOF arrives while buffers are still held: the connection may
        # close only once the chain and the queue are out, then a clean FIN.
        d = self.start({"buffer_count": 64, "buffer_size": 512,
                        "max_pending_bytes": 256 * KiB})
        n = 24
        socks = [self.client(d) for _ in range(n)]
        payloads = [random_bytes(1 + (i * 7919) % (96 * KiB), seed=1200 + i)
                    for i in range(n)]
        try:
            got = duplex(socks, payloads, timeout=60, chunk=16 * KiB, half_close=True,
                         rng=random.Random(2))
        except AssertionError as e:
            d.fail(str(e))
        for i in range(n):
            assert_same(self, got[i], payloads[i], "connection %d" % i)
            socks[i].close()
        self.assert_pool_intact(d, seed=1300)
        self.stop_clean(d)

    def test_chains_with_sqpoll(self):
        # With SQPOLL the kernel's SQ thread reads each sendmsg's header and
        # iovec on its own time: the chain's must stay put until then, and a
        # resumed short send must describe the rest from the right byte.
        d = self.start(dict(SMALL_POOL, sqpoll_idle_ms=20))
        self.assertTrue(d.find_log(r"sqpoll"), d.log_text())
        s = self.slow_reader(d)
        sent = fill_until_paused(s, seed=1350)
        assert_same(self, recv_exact(s, len(sent)), sent, "stalled reader")
        self.assert_pool_intact(d, seed=1360)
        s.close()
        self.stop_clean(d)


class StalledReaderTest(ChainCase):

    def test_reader_stops_then_resumes(self):
        # Each round the client sends until the daemon stops reading it: its
        # send is stalled, buffers wait in the chain (16 at most), the queue
        # holds the rest.  Then it reads everything back in odd-sized pieces: the
        # stalled send completes (short, again and again), the chain goes
        # out, then the queue, and the receive resumes, holding buffers in a
        # chain again behind each send.
        d = self.start(SMALL_POOL)
        s = self.slow_reader(d)
        chained = d.stats()["chained_sends"]
        for rnd in range(3):
            sent = fill_until_paused(s, seed=10 + rnd)
            got = bytearray()
            while len(got) < len(sent):
                b = s.recv(min(len(sent) - len(got), 4093))
                if not b:
                    d.fail("round %d: EOF after %d of %d bytes" % (rnd, len(got), len(sent)))
                got += b
            assert_same(self, bytes(got), sent, "round %d" % rnd)
            st = d.stats()
            self.assertGreater(st["chained_sends"], chained,
                               "round %d: no chained send after a stall" % rnd)
            chained = st["chained_sends"]
        self.assertGreater(st["short_sends"], 0, d.log_text())
        # And with the client sending while it reads, slowly.
        data = random_bytes(2 * MiB + 333, seed=13)
        try:
            got = duplex([s], [data], timeout=60, chunk=8 * KiB, rng=random.Random(3))[0]
        except AssertionError as e:
            d.fail(str(e))
        assert_same(self, got, data, "duplex after the stalls")
        s.close()
        self.assert_pool_intact(d, seed=1400)
        self.stop_clean(d)

    def test_others_served_while_stalled_readers_hold_buffers(self):
        # Three stalled clients hold buffers behind their stalled sends, up
        # to the budget of 32; meanwhile eight others pipeline, copying where
        # they cannot hold.  Then the stalled ones read and all of
        # their echo comes back, in order, and chains form again.
        d = self.start(SMALL_POOL)
        stalled = [self.slow_reader(d) for _ in range(3)]
        sent = [fill_until_paused(s, seed=50 + i) for i, s in enumerate(stalled)]
        socks = [self.client(d) for _ in range(8)]
        payloads = [random_bytes(128 * KiB + i, seed=60 + i) for i in range(8)]
        try:
            got = duplex(socks, payloads, timeout=30, chunk=16 * KiB,
                         rng=random.Random(6))
        except AssertionError as e:
            d.fail(str(e))
        for i in range(8):
            assert_same(self, got[i], payloads[i], "pipelining client %d" % i)
            socks[i].close()
        for i, s in enumerate(stalled):
            assert_same(self, recv_exact(s, len(sent[i])), sent[i], "stalled client %d" % i)
            s.close()
        self.assert_pool_intact(d, seed=1450)
        self.stop_clean(d)

    def test_half_close_with_chains_held(self):
        # Three clients stall the daemon (each with a send stalled and echo
        # behind it, held in a chain as far as the budget allows, copied
        # beyond), then half-close: each gets every byte it sent, in order,
        # then a clean EOF.
        d = self.start(SMALL_POOL)
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

    def test_reset_while_buffers_held(self):
        # Stalled clients hold buffers (a send in flight, a chain, a queue)
        # up to the hold budget; some read part of their echo, then all
        # reset (SO_LINGER 0).  Twice: if a reset leaked the buffers it held,
        # or the count of held buffers, nothing could be held any more.
        d = self.start(SMALL_POOL)
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

    def test_sigterm_cut_while_chains_held(self):
        # shutdown_timeout_ms 0: SIGTERM cuts at once.  Each stalled client
        # must get back every byte the daemon had read from it (the stalled
        # send, its chain and its queue), as an exact prefix of its stream
        # (what the daemon reads after the cut is discarded), then a clean
        # FIN.  (At least: a zero-window probe may let the daemon send and
        # read a little more between our look and the signal.)
        d = self.start(dict(SMALL_POOL, shutdown_timeout_ms=0))
        socks = [self.slow_reader(d) for _ in range(2)]
        sent = [fill_until_paused(s, seed=40 + i) for i, s in enumerate(socks)]
        read = [bytes_read_by_daemon(s, len(p)) for s, p in zip(socks, sent)]
        for r, p in zip(read, sent):
            self.assertGreater(r, 0)
            self.assertLessEqual(r, len(p))
        mark = d.log_mark()
        d.send_signal(signal.SIGTERM)
        d.wait_log(SHUTTING_DOWN, start=mark)
        got = read_all_until_eof(socks, timeout=30)
        for i in range(len(socks)):
            assert_same(self, got[i], sent[i][:len(got[i])], "client %d (prefix)" % i)
            self.assertGreaterEqual(len(got[i]), read[i],
                                    "client %d: bytes read before the cut not echoed" % i)
            self.assertLess(len(got[i]), len(sent[i]),
                            "client %d: bytes unread at the cut were echoed" % i)
            socks[i].close()
        rc = d.wait_exit()
        self.assert_no_sanitizer_report(d)
        self.assertEqual(rc, 0, d.log_text())
        self.assertRegex(d.log_text().splitlines()[-1],
                         r"^<5>exiting: drained 0 connections, cut 2 at the deadline$")


if __name__ == "__main__":
    unittest.main()
