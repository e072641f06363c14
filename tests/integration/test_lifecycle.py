# SPDX-License-Identifier: MIT
"""Signals and graceful shutdown: drain, deadline, refusal, second signal, exit line."""

import signal
import socket
import time
import unittest

import harness
from harness import DaemonTestCase, Streamer, recv_until_eof

harness.exit_77_unless_io_uring()

SHUTTING_DOWN = r"^<5>shutting down"


def exiting_re(drained, cut):
    return r"^<5>exiting: drained %d connections?, cut %d at the deadline$" % (drained, cut)


MiB = 1 << 20


class ShutdownTest(DaemonTestCase):

    def last_line(self, d):
        lines = [l for l in d.lines if l.strip()]
        return lines[-1] if lines else ""

    def assert_last_line(self, d, drained, cut):
        self.assertRegex(self.last_line(d), exiting_re(drained, cut), d.log_text())

    def streamers(self, d, n, seed):
        st = Streamer([d.connect() for _ in range(n)], seed=seed)
        self.addCleanup(st.close)
        return st

    def test_drain_50_streaming_clients(self):
        d = self.start({"shutdown_timeout_ms": 120000})
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
        d = self.start({"shutdown_timeout_ms": 120000})
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
        d = self.start({"sqpoll_idle_ms": 50, "shutdown_timeout_ms": 120000})
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
        self.assert_last_line(d, 0, 1)
        # What did reach the client is an exact prefix, then a clean EOF.
        got = recv_until_eof(s, timeout=60)
        harness.assert_same(self, got, data[:len(got)], "echo prefix")


class StatsSignalTest(DaemonTestCase):

    def test_sigusr1_stats_match_traffic(self):
        d = self.start()
        st0 = d.stats()
        for key in ("connections", "total", "bytes", "messages", "refused_max",
                    "refused_per_ip", "idle_closed", "bufring_empty", "short_sends",
                    "chained_sends", "accept_paused", "cq_overflow"):
            self.assertIn(key, st0, "stats line lacks %s" % key)
        self.assertEqual(st0["connections"], 0)
        self.assertEqual(st0["total"], 0)
        self.assertEqual(st0["bytes"], 0)
        socks = [self.client(d) for _ in range(3)]
        sizes = [1000, 70000, 12345]
        for s, n in zip(socks, sizes):
            data = harness.random_bytes(n, seed=n)
            harness.assert_same(self, harness.echo_roundtrip(s, data), data)
        st1 = d.stats()
        self.assertEqual(st1["connections"], 3, st1)
        self.assertEqual(st1["total"], 3, st1)
        self.assertEqual(st1["bytes"], sum(sizes), st1)
        self.assertGreaterEqual(st1["messages"], 3, st1)
        socks[0].close()
        s = self.client(d)
        self.assertEqual(harness.echo_roundtrip(s, b"12345"), b"12345")
        # The close of socks[0] is processed asynchronously: poll the counter.
        deadline = time.monotonic() + harness.IO_TIMEOUT
        while True:
            st2 = d.stats()
            if st2["connections"] == 3 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.assertEqual(st2["connections"], 3, st2)
        self.assertEqual(st2["total"], 4, st2)
        self.assertEqual(st2["bytes"], sum(sizes) + 5, st2)
        for s in socks[1:] + [s]:
            s.close()
        d.assert_running()  # SIGUSR1 must not kill it
        self.assertEqual(d.stop(), 0)


if __name__ == "__main__":
    unittest.main()
