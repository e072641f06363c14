# SPDX-License-Identifier: MIT
"""Slow readers and backpressure: a client that does not read costs bounded
memory, stalls no one else, and gets every byte back when it reads.

When a connection's unsent echo reaches max_pending_bytes the daemon stops
reading it, and starts again once half has drained.  Its send stalls once
its socket buffer is full and comes back short, again and again, resuming
at the right byte; receive buffers that arrived behind it wait in its chain
as far as the chain and the pool's hold budget allow, the queue takes the
rest, and a stalled client's chain is copied out so that it keeps only
what its send is using.  Meanwhile other clients are served.  Where a test
ends by checking the buffer pool survived, a fresh pipelined load is echoed
exactly, still forms chains and does not starve.
"""

import random
import threading
import time
import unittest

import harness
from harness import (KiB, MiB, POOL_FOR_STALLS, assert_same, duplex, fill_until_paused,
                     random_bytes, recv_exact)

harness.exit_77_unless_io_uring()


class SlowReaderTest(harness.DaemonTestCase):
    """A client that sends and never reads costs bounded memory, then gets every byte."""

    TOTAL = 64 * MiB
    PENDING = 64 * 1024
    RSS_GROWTH_LIMIT = 12 * MiB

    def test_slow_reader_bounded_memory(self):
        # Under AddressSanitizer freed memory waits in a quarantine (256 MiB by
        # default) and stays resident; a small one keeps RSS a measure of
        # live memory. Other builds ignore the option.
        d = self.start({"max_pending_bytes": self.PENDING, "buffer_count": 64},
                       asan_options="quarantine_size_mb=1")
        data = random_bytes(self.TOTAL, seed=64)
        s = self.client(d)
        # Warm up the connection path so the baseline includes it.
        warm = b"warm-up" * 1000
        assert_same(self, harness.echo_roundtrip(s, warm), warm)
        base = d.rss()
        progress = {"sent": 0, "error": None}

        def sender():
            view = memoryview(data)
            try:
                while progress["sent"] < len(data):
                    progress["sent"] += s.send(view[progress["sent"]:progress["sent"] + 256 * 1024])
            except OSError as e:
                progress["error"] = e
        t = threading.Thread(target=sender, daemon=True)
        t.start()
        # Watch the daemon while the client never reads, until the sender stalls
        # (backpressure reached every buffer on the path) or has sent it all.
        peak = base
        last, last_change = -1, time.monotonic()
        deadline = time.monotonic() + 240
        while t.is_alive() and time.monotonic() < deadline:
            peak = max(peak, d.rss())
            if progress["sent"] != last:
                last, last_change = progress["sent"], time.monotonic()
            elif time.monotonic() - last_change > 3.0:
                break
            time.sleep(0.1)
        peak = max(peak, d.rss())
        stalled_at = progress["sent"]
        growth = peak - base
        self.assertLess(growth, self.RSS_GROWTH_LIMIT,
                        "daemon RSS grew by %.1f MiB while a client sent %.1f MiB without "
                        "reading (max_pending_bytes=%d)" % (growth / MiB, stalled_at / MiB,
                                                            self.PENDING))
        # Now read everything: exact bytes, in order.
        got = recv_exact(s, len(data), timeout=300)
        t.join(harness.IO_TIMEOUT)
        self.assertIsNone(progress["error"])
        assert_same(self, got, data)
        s.close()
        self.assertEqual(d.stop(), 0)


class ShortSendTest(harness.DaemonTestCase):

    def test_short_sends_resumed_at_the_right_offset(self):
        # A client with a small receive buffer that reads nothing until it has
        # sent 24 MiB, more than the daemon's socket send buffer can hold (it
        # autotunes up to 4 MiB): the sends of its queued echo come back short,
        # again and again, and each must resume exactly where the kernel
        # stopped. While a send waits for room, what arrives behind it is
        # held in receive buffers and goes out later in one sendmsg of
        # several buffers (a chained send), which can stop short inside any
        # of them. The stats prove both happened.
        d = self.start({"max_pending_bytes": 32 * MiB})
        s = self.slow_reader(d)
        data = random_bytes(24 * MiB, seed=77)
        sender = threading.Thread(target=s.sendall, args=(data,), daemon=True)
        sender.start()
        sender.join(harness.IO_TIMEOUT)
        got = bytearray()
        while len(got) < len(data):
            chunk = s.recv(65521)  # an odd size, so offsets never line up
            if not chunk:
                break
            got += chunk
        assert_same(self, bytes(got), data)
        stats = d.stats()
        self.assertGreater(stats["short_sends"], 0, d.log_text())
        self.assertGreater(stats["chained_sends"], 0, d.log_text())
        self.assertEqual(d.stop(), 0)


class StalledReaderTest(harness.CheckedTestCase):
    """Clients with tiny receive buffers stall the daemon's sends to them."""

    def test_held_echo_stays_within_max_pending_bytes(self):
        """Four clients that never read, sending as fast as the daemon takes
        it: what the daemon holds for each (read from the client, not yet in
        its socket's send queue) stays within max_pending_bytes and one
        buffer. Without a byte limit on the multishot receive the kernel kept
        filling buffers until the cancel was seen: 1 to 5 MiB each."""
        d = self.start({})
        clients = [self.client(d) for _ in range(4)]
        sent = [b""] * 4

        def fill(i):
            sent[i] = fill_until_paused(clients[i], seed=20 + i)

        threads = [threading.Thread(target=fill, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        limit = 262144 + 16384  # the defaults: max_pending_bytes, buffer_size
        for i, c in enumerate(clients):
            me, peer = c.getsockname()[:2], c.getpeername()[:2]
            deadline = time.monotonic() + harness.IO_TIMEOUT
            while True:  # the four queues, read twice to be sure they are still
                q = (harness.tcp_queues(me, peer), harness.tcp_queues(peer, me))
                if q == (harness.tcp_queues(me, peer), harness.tcp_queues(peer, me)) \
                        and None not in q:
                    break
                if time.monotonic() > deadline:
                    d.fail("client %d: its queues never kept still" % i)
            (ctx, crx), (dtx, drx) = q
            held = len(sent[i]) - ctx - drx - dtx - crx
            self.assertLessEqual(held, limit, "client %d: the daemon holds %d bytes "
                                 "(queues %s)" % (i, held, q))
        for i, c in enumerate(clients):  # and every byte comes back
            c.setblocking(True)
            c.settimeout(harness.IO_TIMEOUT)
            got = bytearray()
            while len(got) < len(sent[i]):
                b = c.recv(1 << 20)
                if not b:
                    d.fail("client %d: EOF after %d of %d bytes" % (i, len(got), len(sent[i])))
                got += b
            assert_same(self, bytes(got), sent[i], "client %d" % i)
        self.stop_clean(d)

    def test_reader_stops_then_resumes(self):
        # Each round the client sends until the daemon stops reading it: its
        # send is stalled, buffers wait in the chain (16 at most), the queue
        # holds the rest.  Then it reads everything back in odd-sized pieces: the
        # stalled send completes (short, again and again), the chain goes
        # out, then the queue, and the receive resumes, holding buffers in a
        # chain again behind each send.
        d = self.start(POOL_FOR_STALLS)
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
        d = self.start(POOL_FOR_STALLS)
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

    def test_chains_with_sqpoll(self):
        # With SQPOLL the kernel's SQ thread reads each sendmsg's header and
        # iovec on its own time: the chain's must stay put until then, and a
        # resumed short send must describe the rest from the right byte.
        d = self.start(dict(POOL_FOR_STALLS, sqpoll_idle_ms=20))
        self.assertTrue(d.find_log(r"sqpoll"), d.log_text())
        s = self.slow_reader(d)
        sent = fill_until_paused(s, seed=1350)
        assert_same(self, recv_exact(s, len(sent)), sent, "stalled reader")
        self.assert_pool_intact(d, seed=1360)
        s.close()
        self.stop_clean(d)


if __name__ == "__main__":
    unittest.main()
