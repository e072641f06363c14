# SPDX-License-Identifier: MIT
"""Graceful shutdown: SIGTERM or SIGINT stops new connections at once and
serves the existing ones until they close or shutdown_timeout_ms passes;
then each is cut: it gets back an exact prefix of its stream (everything the
daemon had read from it), then a clean FIN; one still open 500 ms later is
reset.  A second signal cuts at once.  The last log line counts the
connections drained and cut.
"""

import select
import signal
import socket
import threading
import time
import unittest

import harness
from harness import (KiB, MiB, POOL_FOR_BURSTS, POOL_FOR_STALLS, SHUTTING_DOWN,
                     DaemonTestCase, assert_same, bytes_read_by_daemon, exiting_re,
                     expect_eof, fill_until_paused, random_bytes, read_all_until_eof,
                     recv_until_eof)

harness.exit_77_unless_io_uring()


class ShutdownTest(DaemonTestCase):

    def assert_last_line(self, d, closed, cut, reset=0):
        self.assertRegex(d.last_line(), exiting_re(closed, cut, reset=reset), d.log_text())

    def test_drain_50_streaming_clients(self):
        # drain_idle_ms off: a test thread held up for a second must not
        # turn a streaming client into an idle one.
        d = self.start({"shutdown_timeout_ms": 120000, "drain_idle_ms": 0})
        st = self.streamers(d, 50, seed=1)
        st.pump(lambda: min(st.received()) >= 16 * 1024, what="16 KiB echoed per client")
        mark = d.log_mark()
        d.send_signal(signal.SIGTERM)
        d.wait_log(SHUTTING_DOWN, start=mark)
        # Full service goes on during the drain.
        before = st.received()
        st.pump(lambda: all(r >= b + 16 * 1024 for r, b in zip(st.received(), before)),
                what="16 KiB more echoed per client after SIGTERM")
        d.assert_running()
        st.stop_sending(half_close=True)
        st.pump(st.all_eof, what="EOF on every client")
        st.check(self, complete=True)
        rc = d.wait_exit()
        self.assertEqual(rc, 0, d.log_text())
        self.assert_last_line(d, 50, 0)

    def test_clients_in_the_backlog_at_sigterm_are_served(self):
        """Clients whose connect() had returned but that no loop had accepted
        yet (a test hook keeps them in the backlog) when SIGTERM closes the
        listener: each is served through the drain, not reset by the close."""
        d = self.start({"shutdown_timeout_ms": 120000, "drain_idle_ms": 0},
                       extra_env={"RINGECHO_TEST_HOLD_ACCEPTS": "1"})
        socks = [self.client(d) for _ in range(5)]
        for i, s in enumerate(socks):
            s.sendall(b"waiting %d" % i)
        self.assertEqual(d.stats()["total"], 0)  # none accepted yet
        mark = d.log_mark()
        d.send_signal(signal.SIGTERM)
        d.wait_log(r"^<5>shutting down: no new connections; draining 5 connections ",
                   start=mark)
        for i, s in enumerate(socks):
            self.assertEqual(harness.recv_exact(s, 9), b"waiting %d" % i)
            s.sendall(b" and more")
            s.shutdown(socket.SHUT_WR)
            self.assertEqual(recv_until_eof(s), b" and more")
        self.assertEqual(d.wait_exit(), 0)
        self.assert_last_line(d, 5, 0)

    def test_cut_at_deadline(self):
        deadline_s = 1.0
        d = self.start({"shutdown_timeout_ms": int(deadline_s * 1000)})
        st = self.streamers(d, 10, seed=2)
        st.pump(lambda: min(st.received()) >= 8 * 1024, what="8 KiB echoed per client")
        before = st.received()
        t0 = time.monotonic()
        d.send_signal(signal.SIGTERM)
        # The clients never stop: the daemon must cut them at the deadline.
        st.pump(st.all_eof, timeout=deadline_s + 30, what="EOF at the deadline")
        rc = d.wait_exit(timeout=30)
        exited = time.monotonic() - t0
        st.check(self)  # exact echo prefix, then a clean EOF (no reset)
        for c, b in zip(st.clients, before):
            self.assertGreater(len(c["recv"]), b, "client %d got no service during the drain"
                               % c["i"])
            self.assertGreaterEqual(c["eof_at"] - t0, deadline_s * 0.9,
                                    "client %d cut before the deadline" % c["i"])
        self.assertEqual(rc, 0, d.log_text())
        self.assertLess(exited, deadline_s + 5.0, "exited %.1f s after SIGTERM" % exited)
        self.assert_last_line(d, 0, 10)

    def test_new_connections_refused_old_ones_served(self):
        d = self.start({"shutdown_timeout_ms": 120000})
        old = self.client(d)
        self.assertEqual(harness.echo_roundtrip(old, b"before"), b"before")
        mark = d.log_mark()
        d.send_signal(signal.SIGTERM)
        d.wait_log(SHUTTING_DOWN, start=mark)
        host, port = d.addr
        self.assertTrue(harness.wait_refused(host, port, timeout=10),
                        "new connections still accepted after SIGTERM")
        for i in range(50):
            msg = b"during drain %d" % i
            self.assertEqual(harness.echo_roundtrip(old, msg), msg)
        self.assertTrue(harness.connection_refused(host, port))
        d.assert_running()
        old.shutdown(socket.SHUT_WR)
        self.assertEqual(recv_until_eof(old), b"")
        self.assertEqual(d.wait_exit(), 0)
        self.assert_last_line(d, 1, 0)

    def test_second_sigterm_cuts_at_once(self):
        d = self.start({"shutdown_timeout_ms": 600000})
        st = self.streamers(d, 5, seed=3)
        st.pump(lambda: min(st.received()) >= 8 * 1024, what="8 KiB echoed per client")
        mark = d.log_mark()
        d.send_signal(signal.SIGTERM)
        d.wait_log(SHUTTING_DOWN, start=mark)
        before = st.received()
        st.pump(lambda: all(r > b for r, b in zip(st.received(), before)),
                what="service after the first SIGTERM")
        self.assertFalse(st.all_eof())
        t1 = time.monotonic()
        d.send_signal(signal.SIGTERM)
        st.pump(st.all_eof, timeout=30, what="EOF after the second SIGTERM")
        rc = d.wait_exit(timeout=30)
        self.assertLess(time.monotonic() - t1, 30)
        st.check(self)
        self.assertEqual(rc, 0, d.log_text())
        self.assert_last_line(d, 0, 5)

    def test_sigint_is_graceful(self):
        d = self.start({"shutdown_timeout_ms": 120000, "drain_idle_ms": 0})
        s = self.client(d)
        self.assertEqual(harness.echo_roundtrip(s, b"x" * 1000), b"x" * 1000)
        mark = d.log_mark()
        d.send_signal(signal.SIGINT)
        d.wait_log(SHUTTING_DOWN, start=mark)
        self.assertEqual(harness.echo_roundtrip(s, b"still"), b"still")
        s.sendall(b"last words")
        s.shutdown(socket.SHUT_WR)
        self.assertEqual(recv_until_eof(s), b"last words")
        self.assertEqual(d.wait_exit(), 0)
        self.assert_last_line(d, 1, 0)

    def test_signals_with_sqpoll(self):
        # With SQPOLL the kernel's SQ thread issues the ring's operations;
        # signals must still reach the loop (it polls the signalfd and reads
        # it itself), and a drain must work as without.
        d = self.start({"sqpoll_idle_ms": 50, "shutdown_timeout_ms": 120000,
                        "drain_idle_ms": 0})
        self.assertTrue(d.find_log(r"sqpoll"), d.log_text())
        s = self.client(d)
        data = harness.random_bytes(MiB, seed=5)
        harness.assert_same(self, harness.echo_roundtrip(s, data), data)
        self.assertEqual(d.stats()["bytes"], MiB)
        mark = d.log_mark()
        d.send_signal(signal.SIGHUP)
        d.wait_log(r"^<5>reloaded configuration", start=mark)
        mark = d.log_mark()
        d.send_signal(signal.SIGTERM)
        d.wait_log(SHUTTING_DOWN, start=mark)
        s.sendall(b"after SIGTERM")
        s.shutdown(socket.SHUT_WR)
        self.assertEqual(recv_until_eof(s), b"after SIGTERM")
        self.assertEqual(d.wait_exit(), 0)
        self.assert_last_line(d, 1, 0)

    def test_sigterm_without_connections(self):
        d = self.start()
        self.assertEqual(d.stop(timeout=30), 0)
        self.assertTrue(d.find_log(SHUTTING_DOWN), d.log_text())
        self.assert_last_line(d, 0, 0)

    def test_zero_timeout_cuts_idle_connection_cleanly(self):
        d = self.start({"shutdown_timeout_ms": 0})
        s = self.client(d)
        self.assertEqual(harness.echo_roundtrip(s, b"idle"), b"idle")
        d.send_signal(signal.SIGTERM)
        self.assertEqual(recv_until_eof(s), b"")  # clean FIN, not RST
        self.assertEqual(d.wait_exit(), 0)
        self.assert_last_line(d, 0, 1)

    def test_pending_echo_delivered_when_cut(self):
        # Echo waiting in the daemon (the client has not read it yet) when the
        # cut comes: it is still sent, then EOF.
        d = self.start({"shutdown_timeout_ms": 600000, "max_pending_bytes": 32 << 20})
        s = self.client(d)
        data = harness.random_bytes(8 << 20, seed=9)
        s.settimeout(120)
        s.sendall(data)  # more than the socket buffers hold: part waits in the daemon
        # The cut echoes what was received: make sure that is everything.
        harness.wait_received_by_daemon(s)
        mark = d.log_mark()
        d.send_signal(signal.SIGTERM)
        d.wait_log(SHUTTING_DOWN, start=mark)
        d.send_signal(signal.SIGTERM)  # cut now
        got = recv_until_eof(s, timeout=60)
        harness.assert_same(self, got, data)
        self.assertEqual(d.wait_exit(), 0)
        self.assert_last_line(d, 0, 1)

    def test_client_that_never_reads_does_not_hold_shutdown(self):
        deadline_s = 0.5
        d = self.start({"shutdown_timeout_ms": int(deadline_s * 1000),
                        "max_pending_bytes": 32 << 20})
        s = self.client(d)
        data = harness.random_bytes(8 << 20, seed=10)
        s.settimeout(120)
        s.sendall(data)
        t0 = time.monotonic()
        d.send_signal(signal.SIGTERM)
        rc = d.wait_exit()
        exited = time.monotonic() - t0
        self.assertEqual(rc, 0, d.log_text())
        self.assertLess(exited, deadline_s + 5.0, "exited %.1f s after SIGTERM" % exited)
        # It never took its echo: reset when the cut's grace was over.
        self.assert_last_line(d, 0, 0, reset=1)
        # What did reach the client is an exact prefix, then the reset.
        got = bytearray()
        s.settimeout(60)
        with self.assertRaises(ConnectionResetError):
            while True:
                b = s.recv(1 << 20)
                if not b:
                    self.fail("a clean EOF after %d of %d bytes: the echo was not "
                              "complete" % (len(got), len(data)))
                got += b
        harness.assert_same(self, bytes(got), data[:len(got)], "echo prefix")


class ShutdownUnderLoadTest(harness.CheckedTestCase):
    """Shutdown while clients pipeline, stall, half-close or linger."""

    def pipelining_streamers(self, d, n, seed):
        # Pieces of up to 8 KiB every millisecond per client: several
        # buffers per batch, chains behind sends, backpressure now and then.
        return self.streamers(d, n, seed, chunk=8 * KiB, interval=0.001, window=48 * KiB)

    def test_sigterm_cut_while_every_client_pipelines(self):
        # shutdown_timeout_ms 0: the cut comes in the middle of batches
        # that made sends due. Each client gets an exact prefix of its
        # stream, then a clean FIN, never an RST.
        d = self.start(dict(POOL_FOR_BURSTS, shutdown_timeout_ms=0))
        n = 32
        st = self.pipelining_streamers(d, n, seed=11)
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
        self.assertRegex(d.last_line(), exiting_re(0, n), d.log_text())

    def test_drain_then_every_client_half_closes_mid_pipeline(self):
        # SIGTERM, full service during the drain, then every client
        # half-closes at once with echo still due: each gets all of it.
        d = self.start(dict(POOL_FOR_BURSTS, shutdown_timeout_ms=120000, drain_idle_ms=0))
        n = 32
        st = self.pipelining_streamers(d, n, seed=12)
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
        self.assertRegex(d.last_line(), exiting_re(n, 0), d.log_text())

    def test_sigterm_cut_while_chains_held(self):
        # shutdown_timeout_ms 0: SIGTERM cuts at once.  Each stalled client
        # must get back every byte the daemon had read from it (the stalled
        # send, its chain and its queue), as an exact prefix of its stream
        # (what the daemon reads after the cut is discarded), then a clean
        # FIN.  (At least: a zero-window probe may let the daemon send and
        # read a little more between our look and the signal.)
        d = self.start(dict(POOL_FOR_STALLS, shutdown_timeout_ms=0))
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
                         exiting_re(0, 2))

    def test_sigterm_while_clients_paused_by_backpressure(self):
        d = self.start({"shutdown_timeout_ms": 60000, "max_pending_bytes": 16 * KiB})
        socks = [self.client(d) for _ in range(4)]
        sent = [fill_until_paused(s, seed=40 + i) for i, s in enumerate(socks)]
        mark = d.log_mark()
        d.send_signal(signal.SIGTERM)
        d.wait_log(SHUTTING_DOWN, start=mark)
        # Full service during the drain: everything comes back, then EOF.
        for s in socks:
            s.shutdown(socket.SHUT_WR)
        for i, s in enumerate(socks):
            got = recv_until_eof(s, timeout=60)
            harness.assert_same(self, got, sent[i], "client %d" % i)
        rc = d.wait_exit()
        self.assertEqual(rc, 0, d.log_text())
        self.assertRegex(d.log_text().splitlines()[-1], exiting_re(4, 0))

    def test_half_close_never_read_does_not_hold_shutdown(self):
        d = self.start({"shutdown_timeout_ms": 300, "max_pending_bytes": 32 * MiB})
        s = self.client(d)
        data = random_bytes(12 * MiB, seed=7)
        s.settimeout(60)
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        harness.wait_received_by_daemon(s)
        t0 = time.monotonic()
        d.send_signal(signal.SIGTERM)
        rc = d.wait_exit()
        took = time.monotonic() - t0
        self.assertEqual(rc, 0, d.log_text())
        self.assertLess(took, 5.0, "exit took %.1f s" % took)
        try:
            got = recv_until_eof(s, timeout=30)
        except ConnectionResetError:
            got = None  # reset after the grace: allowed, it never read
        if got is not None:
            harness.assert_same(self, got, data[:len(got)], "echo prefix")
        # Cut if its echo fitted its receive buffer, else reset: never both.
        self.assertRegex(d.log_text().splitlines()[-1],
                         "|".join((exiting_re(0, 1), exiting_re(0, 0, reset=1))))

    def test_drain_never_ends_a_client_whose_bytes_wait_unread(self):
        """A receive starved of buffers leaves the client's bytes in its
        socket and its receive clock still: such a client is not idle,
        however short drain_idle_ms. Four busy streams keep the 8 buffers
        in use; 32 clients then send their whole stream and FIN at once
        (the kernel's buffers hold it, so nothing depends on their timing)
        and starve, and SIGTERM comes: every one of the 32 gets all of its
        stream back, then EOF, and none is reset. (The busy streams may be
        ended as idle whenever their own thread pauses: they are not
        checked.)"""
        n, size = 32, 256 * KiB
        d = self.start({"buffer_count": 8, "buffer_size": 4096, "max_pending_bytes": 65536,
                        "drain_idle_ms": 1, "shutdown_timeout_ms": 120000})
        stop = threading.Event()

        def busy(s):
            chunk = random_bytes(64 * KiB, seed=7)
            try:
                while not stop.is_set():
                    s.sendall(chunk)
                    left = len(chunk)
                    while left:
                        got = s.recv(left)
                        if not got:
                            break
                        left -= len(got)
                    if left:
                        break  # ended as idle
                s.shutdown(socket.SHUT_WR)
                while s.recv(1 << 20):
                    pass
            except OSError:
                pass

        hogs = [self.client(d) for _ in range(4)]
        threads = [threading.Thread(target=busy, args=(h,), daemon=True) for h in hogs]
        for t in threads:
            t.start()
        clients = [self.client(d) for _ in range(n)]
        data = [random_bytes(size, seed=100 + i) for i in range(n)]
        for s, p in zip(clients, data):
            s.sendall(p)  # the kernel's buffers hold it all: it does not wait
            s.shutdown(socket.SHUT_WR)
        mark = d.log_mark()
        d.send_signal(signal.SIGTERM)
        d.wait_log(SHUTTING_DOWN, start=mark)
        got = [bytearray() for _ in clients]
        open_ = {s.fileno(): i for i, s in enumerate(clients)}
        deadline = time.monotonic() + 120
        while open_ and time.monotonic() < deadline:
            ready, _, _ = select.select(list(open_), [], [], 1.0)
            for fd in ready:
                i = open_[fd]
                chunk = clients[i].recv(1 << 20)
                if chunk:
                    got[i] += chunk
                else:
                    del open_[fd]
        stop.set()
        for t in threads:
            t.join(harness.IO_TIMEOUT)
        self.assertFalse(open_, "%d clients had no EOF" % len(open_))
        for i, (g, p) in enumerate(zip(got, data)):
            assert_same(self, bytes(g), p, "client %d" % i)
        rc = d.wait_exit()
        self.assert_no_sanitizer_report(d)
        self.assertEqual(rc, 0, d.log_text())
        self.assertRegex(d.last_line(), r" 0 reset$", d.log_text())

    def test_cut_lingering_close(self):
        # At the cut a client gets its echo and a FIN. One goes on sending
        # (the daemon must read and discard, not stall it, not reset it) and
        # then closes; one never closes and is reset after the grace.
        # drain_idle_ms 0: idle or not, both wait for the cut.
        d = self.start({"shutdown_timeout_ms": 200, "drain_idle_ms": 0})
        a, b = self.client(d), self.client(d)
        for s in (a, b):
            self.assertEqual(harness.echo_roundtrip(s, b"x" * 1000), b"x" * 1000)
        t0 = time.monotonic()
        d.send_signal(signal.SIGTERM)
        expect_eof(a, timeout=30)
        expect_eof(b, timeout=30)
        # More than the socket buffers hold: completes only if the daemon reads.
        a.settimeout(30)
        try:
            a.sendall(random_bytes(4 * MiB, seed=50))
        except (ConnectionResetError, BrokenPipeError):
            self.assertGreater(time.monotonic() - t0, 0.2 + 0.4,
                               "reset before the cut's grace was over")
        a.close()
        rc = d.wait_exit()
        took = time.monotonic() - t0
        self.assertEqual(rc, 0, d.log_text())
        self.assertLess(took, 5.0, "exit %.1f s after SIGTERM" % took)
        self.assertRegex(d.log_text().splitlines()[-1], exiting_re(0, 2))


if __name__ == "__main__":
    unittest.main()
