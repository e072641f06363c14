# SPDX-License-Identifier: MIT
"""Pipelining clients: whatever they write ahead comes back exact and in order.

A client may send far ahead of what it has read.  Behind the daemon's send
in flight, each receive buffer that arrives is held in its connection's
chain (at most CHAIN_MAX = 16, and at most half the pool held server-wide)
and later goes out with the others in one sendmsg; past those limits the
bytes are copied to the connection's queue.  A connection's send starts
once per batch of completions, not on each receive, so everything it got
in the batch leaves together.  Whatever mix of the three a connection goes
through, its client gets back exactly the bytes it sent: the send in
flight, then the chain, then the queue.

The tests use small pools so that chains fill within one batch and a few
clients use up the hold budget, many clients at once, submission queues
smaller than one batch's sends (so getting an entry submits part-way
through a batch), SQPOLL (where the kernel's thread reads each sendmsg's
iovec on its own time), and rings too small for the load.  Where a test
ends by checking the buffer pool survived, a fresh pipelined load is echoed
exactly and still produces chained sends (a leaked hold would leave no
budget for any) without starving (a leaked buffer would).
"""

import random
import socket
import unittest

import harness
from harness import (KiB, POOL_FOR_BURSTS, assert_same, duplex, random_bytes,
                     varied_payloads)

harness.exit_77_unless_io_uring()


class PipelineTest(harness.CheckedTestCase):
    """Chains and copies mixed, many connections at once."""

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


class SendBatchTest(harness.CheckedTestCase):
    """One send per connection per batch, whatever the submission queue holds."""

    def test_tiny_submission_queue(self):
        # 8 SQ entries: the batch's sends, receives and cancels cannot all
        # wait for the next enter, so getting an SQE submits part-way
        # through the batch. Nothing may be lost, reordered or reset.
        d = self.start(dict(POOL_FOR_BURSTS, ring_entries=8))
        base = d.fd_count()
        self.pipeline(d, varied_payloads(48, 48 * KiB, 500), 500)
        self.pipeline(d, varied_payloads(48, 24 * KiB, 600), 600, half_close=True)
        self.wait_no_connections(d, base)
        self.assert_pool_intact(d, seed=700)
        self.stop_clean(d)

    def test_sqpoll(self):
        # With SQPOLL the kernel's thread takes each send when it likes: a
        # due buffer moved into a chain, and a chain spilled at backpressure,
        # must never be memory a submitted send still reads.
        d = self.start(dict(POOL_FOR_BURSTS, sqpoll_idle_ms=20, ring_entries=256))
        self.assertTrue(d.find_log(r"sqpoll"), d.log_text())
        base = d.fd_count()
        self.pipeline(d, varied_payloads(32, 48 * KiB, 800), 800)
        self.pipeline(d, varied_payloads(32, 24 * KiB, 900), 900, half_close=True)
        self.wait_no_connections(d, base)
        self.assert_pool_intact(d, seed=1000)
        self.stop_clean(d)

    def test_sqpoll_more_due_sends_than_submission_queue_entries(self):
        """More SQEs in one turn of the loop than the submission queue holds,
        under SQPOLL, where submitting only wakes the kernel's SQ thread: the
        daemon waits for that thread to take entries, and no send, resumed
        send or re-armed receive is dropped for want of one, so every
        client gets all of its echo.  Here 16 entries and 64 pipelining
        connections; at the default 1024, a batch with data from about a
        thousand connections."""
        d = self.start(dict(POOL_FOR_BURSTS, sqpoll_idle_ms=20, ring_entries=16,
                            max_pending_bytes=256 * KiB))
        self.assertTrue(d.find_log(r"sqpoll"), d.log_text())
        base = d.fd_count()
        socks = []
        for i in range(64):  # one at a time: no burst of accepts
            s = self.client(d)
            self.assertEqual(harness.echo_roundtrip(s, b"%d" % i), b"%d" % i)
            socks.append(s)
        payloads = [random_bytes(256 * KiB, seed=1100 + i) for i in range(len(socks))]
        try:
            got = duplex(socks, payloads, timeout=60, chunk=16 * KiB,
                         rng=random.Random(11))
        except (AssertionError, OSError) as e:
            d.fail("%s: %s" % (type(e).__name__, e))
        for i in range(len(socks)):
            assert_same(self, got[i], payloads[i], "connection %d" % i)
            socks[i].close()
        self.wait_no_connections(d, base)
        self.stop_clean(d)


class SmallRingTest(harness.DaemonTestCase):
    """Many pipelining clients against tiny rings: every byte still exact."""

    CLIENTS = 64
    SIZE = 256 * KiB

    def run_clients(self, d):
        socks = [d.connect() for _ in range(self.CLIENTS)]
        for s in socks:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        payloads = [random_bytes(self.SIZE, seed=500 + i) for i in range(self.CLIENTS)]
        got = duplex(socks, payloads, timeout=300, chunk=2048, rng=random.Random(5))
        for i in range(self.CLIENTS):
            assert_same(self, got[i], payloads[i], "connection %d" % i)
        # And half-closing all at once with echo in flight.
        got = duplex(socks, payloads, timeout=300, chunk=8192, half_close=True,
                     rng=random.Random(6))
        for i in range(self.CLIENTS):
            assert_same(self, got[i], payloads[i], "connection %d (half-close)" % i)
        for s in socks:
            s.close()

    def test_ring_entries_8(self):
        # SQ of 8 and CQ of 32 against 64 busy connections: a full SQ and CQ overflow.
        d = self.start({"ring_entries": 8})
        self.run_clients(d)
        stats = d.stats()
        self.assertGreater(stats.get("cq_overflow", 0), 0,
                           "the CQ never overflowed: the test did not exercise it")
        self.assertEqual(d.stop(), 0)

    def test_buffer_ring_8x256(self):
        # 2 KiB of receive buffers shared by 64 busy connections: -ENOBUFS all the time.
        d = self.start({"buffer_count": 8, "buffer_size": 256})
        self.run_clients(d)
        stats = d.stats()
        self.assertGreater(stats.get("bufring_empty", 0), 0,
                           "the buffer ring never ran dry: the test did not exercise -ENOBUFS")
        self.assertEqual(d.stop(), 0)


if __name__ == "__main__":
    unittest.main()
