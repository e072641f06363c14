# SPDX-License-Identifier: MIT
"""Sends started once per batch ("due" sends) against the real daemon.

A connection's send is not started on each receive but once per batch of
completions: what it received in the batch waits (CONN_SEND_DUE, on the
server's due list) and leaves in one send after the whole batch is handled,
a lone buffer moving to the head of the chain when more arrive behind it.
So within one batch a connection may receive data and then, in the same
batch, its client's EOF or reset, the SIGTERM cut, or the backpressure that
copies its waiting buffers out: each must find the due send in a consistent
state (not started yet, not freed with the connection still on the list).

These tests make that happen for many connections at once: bursts written
and followed at once by a FIN or an RST, so that the data and the end arrive
together; a SIGTERM cut while every client pipelines; the same with a tiny
submission queue, so that starting the batch's sends has to push the queue
to the kernel part-way, and with SQPOLL (where a queue smaller than the
batch's sends once dropped connections).  Each checks the stream (the whole
echo, or an exact prefix with a clean FIN at a cut), that every connection
is freed, and that the buffer pool survived: a fresh pipelined load is
echoed exactly and still forms chains (no leaked hold) without starving (no
leaked buffer).  Every daemon's stderr is checked for sanitizer reports.
"""

import random
import signal
import socket
import time
import unittest

import harness
from harness import (Streamer, assert_same, close_with_reset as reset, duplex, random_bytes,
                     read_all_until_eof, recv_exact)

harness.exit_77_unless_io_uring()

KiB = 1024

SHUTTING_DOWN = r"^<5>shutting down"

# 64 buffers of 512 bytes, 32 of which may be held: a burst fills several
# buffers per batch, chains form behind due sends, the budget runs out and
# copies take over; max_pending_bytes makes backpressure (and the spill of a
# stalled chain) frequent.
SMALL_POOL = {"buffer_count": 64, "buffer_size": 512, "max_pending_bytes": 16 * KiB}


def exiting_re(drained, cut):
    return r"^<5>exiting: drained %d connections?, cut %d at the deadline$" % (drained, cut)


class DueCase(harness.CheckedTestCase):

    def last_line(self, d):
        lines = [l for l in d.lines if l.strip()]
        return lines[-1] if lines else ""

    def wait_no_connections(self, d, base_fds, timeout=30):
        """Every connection freed: none counted, and the daemon's fds back
        to base (a client reset before its accept is still accepted later)."""
        deadline = time.monotonic() + timeout
        while True:
            n = d.stats()["connections"]
            if n == 0:
                break
            if time.monotonic() > deadline:
                d.fail("%d connections still open" % n)
            time.sleep(0.05)
        d.wait_fd_count(base_fds)

    def pipeline(self, d, n, size, seed, half_close=False):
        """n clients send size-ish bytes in random pieces while reading the
        echo (then half-close, with half_close); each must get all of it."""
        socks = [self.client(d) for _ in range(n)]
        payloads = [random_bytes(1 + (size + i * 7919) % (2 * size), seed=seed + i)
                    for i in range(n)]
        try:
            got = duplex(socks, payloads, timeout=60, chunk=16 * KiB,
                         half_close=half_close, rng=random.Random(seed))
        except (AssertionError, OSError) as e:  # OSError: EPIPE, ECONNRESET
            d.fail("%s: %s" % (type(e).__name__, e))
        for i in range(n):
            assert_same(self, got[i], payloads[i], "connection %d" % i)
            socks[i].close()

    def assert_pool_intact(self, d, seed):
        """A pipelined load is echoed exactly, chains still form (the hold
        budget is not leaked) and receives do not starve (no buffer is)."""
        before = d.stats()
        self.pipeline(d, 8, 128 * KiB, seed)
        after = d.stats()
        self.assert_buffers_not_leaked(d, before, after)


class DueBatchTest(DueCase):

    def test_bursts_followed_at_once_by_reset(self):
        # Each client writes a burst of several buffers and resets right
        # behind it, so the data and the error complete together, often in
        # one batch: the connection is made due, then freed before the
        # batch's sends start (it must leave the due list as it goes).  A
        # quarter first have an echo in flight, so the burst is held behind it.
        d = self.start(SMALL_POOL)
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

    def test_bursts_followed_at_once_by_eof(self):
        # The FIN right behind each burst: the data and the EOF arrive
        # together, and the connection must send its due echo (a lone
        # buffer, a chain, copies) and only then close, with a clean FIN.
        d = self.start(SMALL_POOL)
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
        self.pipeline(d, 32, 24 * KiB, seed=350, half_close=True)
        self.wait_no_connections(d, base)
        self.assert_pool_intact(d, seed=400)
        self.stop_clean(d)

    def test_tiny_submission_queue(self):
        # 8 SQ entries: the batch's sends, receives and cancels cannot all
        # wait for the next enter, so getting an SQE submits part-way
        # through the batch. Nothing may be lost, reordered or reset.
        d = self.start(dict(SMALL_POOL, ring_entries=8))
        base = d.fd_count()
        self.pipeline(d, 48, 48 * KiB, seed=500)
        self.pipeline(d, 48, 24 * KiB, seed=600, half_close=True)
        self.wait_no_connections(d, base)
        self.assert_pool_intact(d, seed=700)
        self.stop_clean(d)

    def test_sqpoll(self):
        # With SQPOLL the kernel's thread takes each send when it likes: a
        # due buffer moved into a chain, and a chain spilled at backpressure,
        # must never be memory a submitted send still reads.
        d = self.start(dict(SMALL_POOL, sqpoll_idle_ms=20, ring_entries=256))
        self.assertTrue(d.find_log(r"sqpoll"), d.log_text())
        base = d.fd_count()
        self.pipeline(d, 32, 48 * KiB, seed=800)
        self.pipeline(d, 32, 24 * KiB, seed=900, half_close=True)
        self.wait_no_connections(d, base)
        self.assert_pool_intact(d, seed=1000)
        self.stop_clean(d)

    def test_sqpoll_more_due_sends_than_submission_queue_entries(self):
        """More SQEs in one turn of the loop than the submission queue holds,
        under SQPOLL: ring_get_sqe makes room with io_uring_submit(), which
        there only wakes the kernel's SQ thread, so it must also wait for
        that thread to take entries.  It once did not: three tries in a row
        found the queue full, and start_send, a resumed send or a re-armed
        receive aborted its connection (the client lost its echo part-way).
        Here 16 entries and 64 pipelining connections; at the default 1024,
        a batch with data from about a thousand connections."""
        d = self.start(dict(SMALL_POOL, sqpoll_idle_ms=20, ring_entries=16,
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

class DueShutdownTest(DueCase):

    def streamers(self, d, n, seed):
        # Pieces of up to 8 KiB every millisecond per client: several
        # buffers per batch, chains behind sends, backpressure now and then.
        st = Streamer([d.connect() for _ in range(n)], chunk=8 * KiB,
                      interval=0.001, window=48 * KiB, seed=seed)
        self.addCleanup(st.close)
        return st

    def test_sigterm_cut_while_every_client_pipelines(self):
        # shutdown_timeout_ms 0: the cut comes in the middle of batches
        # that made sends due. Each client gets an exact prefix of its
        # stream, then a clean FIN, never an RST.
        d = self.start(dict(SMALL_POOL, shutdown_timeout_ms=0))
        n = 32
        st = self.streamers(d, n, seed=11)
        st.pump(lambda: min(st.received()) >= 32 * KiB, what="32 KiB echoed per client")
        mark = d.log_mark()
        d.send_signal(signal.SIGTERM)
        d.wait_log(SHUTTING_DOWN, start=mark)
        st.pump(st.all_eof, what="EOF on every client after the cut")
        st.check(self)
        st.close()
        rc = d.wait_exit()
        self.assert_no_sanitizer_report(d)
        self.assertEqual(rc, 0, d.log_text())
        self.assertRegex(self.last_line(d), exiting_re(0, n), d.log_text())

    def test_drain_then_every_client_half_closes_mid_pipeline(self):
        # SIGTERM, full service during the drain, then every client
        # half-closes at once with echo still due: each gets all of it.
        d = self.start(dict(SMALL_POOL, shutdown_timeout_ms=120000))
        n = 32
        st = self.streamers(d, n, seed=12)
        st.pump(lambda: min(st.received()) >= 16 * KiB, what="16 KiB echoed per client")
        mark = d.log_mark()
        d.send_signal(signal.SIGTERM)
        d.wait_log(SHUTTING_DOWN, start=mark)
        before = st.received()
        st.pump(lambda: all(r >= b + 16 * KiB for r, b in zip(st.received(), before)),
                what="16 KiB more echoed per client during the drain")
        st.stop_sending(half_close=True)
        st.pump(st.all_eof, what="EOF on every client")
        st.check(self, complete=True)
        rc = d.wait_exit()
        self.assert_no_sanitizer_report(d)
        self.assertEqual(rc, 0, d.log_text())
        self.assertRegex(self.last_line(d), exiting_re(n, 0), d.log_text())


if __name__ == "__main__":
    unittest.main()
