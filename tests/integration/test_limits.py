# SPDX-License-Identifier: MIT
"""Limits: max_connections, max_connections_per_ip, idle_timeout_ms, and
file descriptors running out (EMFILE): each costs the client over the limit
its connection, and nothing more."""

import resource
import signal
import socket
import threading
import time
import unittest

import harness
from harness import (KiB, MiB, RELOAD_FAILED, RELOADED, DaemonTestCase, Streamer,
                     daemon_rx_queue, expect_eof, random_bytes, recv_exact, recv_until_eof,
                     send_in_background, wait_until)

harness.exit_77_unless_io_uring()


class MaxConnectionsTest(DaemonTestCase):

    def test_over_the_limit_gets_eof(self):
        d = self.start({"max_connections": 5})
        socks = [self.client(d) for _ in range(5)]
        for i, s in enumerate(socks):
            self.assertEqual(harness.echo_roundtrip(s, b"c%d" % i), b"c%d" % i)
        t0 = time.monotonic()
        extra = self.client(d)
        expect_eof(extra, timeout=10)  # promptly, not left hanging in the backlog
        self.assertLess(time.monotonic() - t0, 10)
        for i, s in enumerate(socks):
            self.assertEqual(harness.echo_roundtrip(s, b"again %d" % i), b"again %d" % i)
        self.assertEqual(d.stats()["refused_max"], 1)
        socks[0].close()
        s = self.client_served(d)
        stats = d.stats()
        self.assertGreaterEqual(stats["refused_max"], 1)
        self.assertEqual(stats["connections"], 5)
        for x in socks[1:] + [s]:
            x.close()
        self.assertEqual(d.stop(), 0)

    def test_per_ip_limit(self):
        d = self.start({"max_connections_per_ip": 2})
        two = [self.client(d, source="127.0.0.2") for _ in range(2)]
        for s in two:
            self.assertEqual(harness.echo_roundtrip(s, b"from .2"), b"from .2")
        third = self.client(d, source="127.0.0.2")
        expect_eof(third, timeout=10)
        # Another address has its own allowance.
        other = [self.client(d, source="127.0.0.3") for _ in range(2)]
        for s in other:
            self.assertEqual(harness.echo_roundtrip(s, b"from .3"), b"from .3")
        for s in two:
            self.assertEqual(harness.echo_roundtrip(s, b"still"), b"still")
        stats = d.stats()
        self.assertEqual(stats["refused_per_ip"], 1, stats)
        self.assertEqual(stats["refused_max"], 0, stats)
        two[0].close()
        s = self.client_served(d, source="127.0.0.2")
        for x in [two[1], s] + other:
            x.close()
        self.assertEqual(d.stop(), 0)


class IdleTimeoutTest(DaemonTestCase):
    IDLE_MS = 1500

    def test_idle_closed_active_kept(self):
        d = self.start({"idle_timeout_ms": self.IDLE_MS})
        idle = self.client(d)
        active = self.client(d)
        # Before the echo: the daemon's idle clock starts after this.
        t_idle = time.monotonic()
        self.assertEqual(harness.echo_roundtrip(idle, b"then silence"), b"then silence")
        result = {}

        def wait_idle_eof():
            try:
                result["data"] = recv_until_eof(idle, timeout=60)
            except Exception as e:  # noqa: BLE001 - reported below
                result["error"] = e
            result["at"] = time.monotonic()
        t = threading.Thread(target=wait_idle_eof, daemon=True)
        t.start()
        # The active client talks every 250 ms for 3x the idle timeout.
        end = time.monotonic() + 3 * self.IDLE_MS / 1000
        i = 0
        while time.monotonic() < end:
            msg = b"tick %d" % i
            self.assertEqual(harness.echo_roundtrip(active, msg, timeout=10), msg,
                             "active connection lost at tick %d" % i)
            i += 1
            time.sleep(0.25)
        t.join(60)
        self.assertNotIn("error", result)
        self.assertEqual(result.get("data"), b"", "idle connection: expected a clean EOF")
        self.assertGreaterEqual(result["at"] - t_idle, 0.9 * self.IDLE_MS / 1000,
                                "idle connection closed before the timeout")
        self.assertEqual(harness.echo_roundtrip(active, b"alive"), b"alive")
        self.assertEqual(d.stats()["idle_closed"], 1)
        # Once it falls silent, the active one is closed too.
        expect_eof(active, timeout=60)
        self.assertEqual(d.stats()["idle_closed"], 2)
        self.assertEqual(d.stop(), 0)

    def test_pending_echo_delivered_before_idle_close(self):
        d = self.start({"idle_timeout_ms": self.IDLE_MS, "max_pending_bytes": 32 * MiB})
        # Made before connecting: a client silent for idle_timeout_ms while
        # its data is made (a busy machine) would rightly be cut first.
        data = harness.random_bytes(8 * MiB, seed=8)
        slow = self.client(d)
        slow.settimeout(120)
        slow.sendall(data)  # never reading: the echo queues up in the daemon
        harness.wait_received_by_daemon(slow)
        # A witness connection opened later goes idle later: once it is closed,
        # the slow one's timer has certainly fired too.
        witness = self.client(d)
        expect_eof(witness, timeout=60)
        got = recv_until_eof(slow, timeout=120)
        harness.assert_same(self, got, data)
        self.assertEqual(d.stats()["idle_closed"], 2)
        self.assertEqual(d.stop(), 0)

    def test_data_that_came_while_the_daemon_was_stalled_counts(self):
        """A daemon held up (here: stopped) while a timer tick and a
        client's bytes both come in: the bytes came before the timeout, so
        the client is active, whichever completion the ring lists first."""
        d = self.start({"idle_timeout_ms": self.IDLE_MS})  # ticks every IDLE_MS / 4
        s = self.client(d)
        self.assertEqual(harness.echo_roundtrip(s, b"a"), b"a")
        d.send_signal(signal.SIGSTOP)
        try:
            # The stall itself: a tick comes due, then the client speaks,
            # well within the timeout, then the timeout passes.
            time.sleep(self.IDLE_MS / 2000)
            s.sendall(b"b")
            time.sleep(self.IDLE_MS / 1000)
        finally:
            d.send_signal(signal.SIGCONT)
        self.assertEqual(harness.recv_exact(s, 1), b"b")
        self.assertEqual(harness.echo_roundtrip(s, b"c"), b"c")
        self.assertEqual(d.stats()["idle_closed"], 0)
        self.assertEqual(d.stop(), 0)

    def test_zero_means_never(self):
        d = self.start({"idle_timeout_ms": 0})
        s = self.client(d)
        self.assertEqual(harness.echo_roundtrip(s, b"x"), b"x")
        s.settimeout(3)
        with self.assertRaises(socket.timeout):
            s.recv(1)  # no EOF while idle
        self.assertEqual(harness.echo_roundtrip(s, b"y"), b"y")
        s.close()
        self.assertEqual(d.stop(), 0)


class IdleTimeoutBusyClientTest(harness.CheckedTestCase):
    """Slow clients are not idle ones; a cut client that never closes is reset."""
    IDLE_MS = 400

    def test_slow_reader_gets_its_whole_echo(self):
        """A client that reads its echo slowly but steadily is not idle,
        however many idle timeouts the reading takes: it gets every byte,
        and then, after its half-close, a clean EOF, never a reset."""
        d = self.start({"idle_timeout_ms": self.IDLE_MS, "max_pending_bytes": 64 * MiB})
        # Made before connecting: on a busy machine making it can take
        # longer than the idle timeout, and a silent client is rightly cut.
        data = random_bytes(10 * MiB, seed=11)
        s = self.slow_reader(d, rcvbuf=64 * KiB)
        sender = threading.Thread(target=s.sendall, args=(data,), daemon=True)
        sender.start()
        # Read at about 4 MiB/s: steady progress, but the whole echo takes
        # several idle timeouts to read.
        got = bytearray()
        t0 = time.monotonic()
        while True:
            try:
                b = s.recv(64 * KiB)
            except ConnectionResetError:
                d.fail("reset after %d of %d bytes, %.1f s in"
                       % (len(got), len(data), time.monotonic() - t0))
            if not b:
                break
            got += b
            if len(got) >= len(data):
                s.shutdown(socket.SHUT_WR)
            time.sleep(0.015)
        sender.join(30)
        harness.assert_same(self, bytes(got), data)
        self.stop_clean(d)

    def test_sender_paused_by_backpressure_is_not_idle(self):
        """A client whose receive the daemon itself paused (max_pending_bytes)
        is not idle while it keeps sending: left unread for three idle
        timeouts, it still gets its whole stream back, nothing discarded."""
        d = self.start({"idle_timeout_ms": self.IDLE_MS, "max_pending_bytes": 64 * KiB})
        data = random_bytes(16 * MiB, seed=12)  # before connecting, as above
        s = self.client(d)
        t, err = send_in_background(s, data)
        # The client is busy for three idle timeouts before it reads: the
        # daemon pauses its receive meanwhile, the client keeps sending.
        wait_until(lambda: (daemon_rx_queue(s) or 0) > 0, 30, "paused receive", d)
        time.sleep(3 * self.IDLE_MS / 1000)
        got = recv_until_eof(s, timeout=60)
        t.join(30)
        harness.assert_same(self, got, data)
        self.assertEqual(err, [])
        self.stop_clean(d)

    def test_idle_cut_then_client_keeps_connection_open(self):
        # The idle cut sends FIN after the echo; a client that never closes
        # its side is reset a timeout later; a client that closes is closed.
        d = self.start({"idle_timeout_ms": self.IDLE_MS})
        base = d.fd_count()
        a, b = self.client(d), self.client(d)
        for s in (a, b):
            self.assertEqual(harness.echo_roundtrip(s, b"hello"), b"hello")
        expect_eof(a, timeout=30)
        expect_eof(b, timeout=30)
        a.close()
        d.wait_fd_count(base, timeout=30)  # b reset a timeout later
        self.assertEqual(d.stats()["idle_closed"], 2)
        self.stop_clean(d)


class EmfileTest(DaemonTestCase):
    LIMIT = 64
    CLIENTS = 100

    def test_accept_pauses_and_resumes(self):
        limit = self.LIMIT

        def low_fd_limit():
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
        d = self.start({"max_connections": 1000}, preexec_fn=low_fd_limit)
        base = d.fd_count()
        self.assertLess(base, 20, "daemon holds %d fds at rest" % base)
        clients = []
        for i in range(self.CLIENTS):  # the kernel completes them: they wait in the backlog
            clients.append(self.client(d))
        d.wait_log(r"^<4>accept: Too many open files; pausing accepts", timeout=60)
        # Paused, not spinning: CPU used over a quiet window stays small.
        cpu0, t0 = d.cpu_seconds(), time.monotonic()
        time.sleep(2.0)
        used, window = d.cpu_seconds() - cpu0, time.monotonic() - t0
        self.assertLess(used, 0.25 * window,
                        "daemon used %.2f s of CPU in %.1f s while accepts were paused"
                        % (used, window))
        # Connections that were accepted keep full service.
        for i, s in enumerate(clients[:20]):
            msg = b"early %d" % i
            s.sendall(msg)
            self.assertEqual(recv_exact(s, len(msg)), msg)
        # Free most of the fds: every waiting connection gets served.
        for s in clients[:60]:
            s.close()
        for i, s in enumerate(clients[60:]):
            data = harness.random_bytes(5000, seed=i)
            s.sendall(data)
            got = recv_exact(s, len(data), timeout=60)
            if got != data:
                d.fail("waiting client %d: wrong echo" % (60 + i))
        warnings = d.find_log(r"^<4>accept: Too many open files")
        self.assertLess(len(warnings), 20, "the EMFILE warning is not rate-limited")
        for s in clients[60:]:
            s.shutdown(socket.SHUT_WR)
            self.assertEqual(recv_until_eof(s), b"")
            s.close()
        d.wait_fd_count(base)
        self.assertEqual(d.stop(), 0)


class FdExhaustionTest(harness.CheckedTestCase):
    LIMIT = 48

    def test_fd_exhaustion_mid_traffic(self):
        limit = self.LIMIT

        def low_fd_limit():
            import resource
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
        d = self.start({"max_connections": 1000}, preexec_fn=low_fd_limit)
        base = d.fd_count()
        st = Streamer([d.connect() for _ in range(6)], chunk=4096, interval=0.002, seed=60)
        self.addCleanup(st.close)
        st.pump(lambda: min(st.received()) >= 8 * KiB, what="8 KiB each")
        extra = [self.client(d) for _ in range(limit)]  # more than the fds left
        mark = d.log_mark()
        st.pump(lambda: bool(d.find_log(r"^<4>accept: Too many open files", start=0)),
                what="the EMFILE pause")
        # Streams go on; a reload while out of fds fails or succeeds, but
        # the daemon keeps serving.
        d.send_signal(signal.SIGHUP)
        st.pump(lambda: bool(d.find_log(RELOADED + "|" + RELOAD_FAILED, start=mark)),
                what="the reload's outcome")
        before = st.received()
        st.pump(lambda: all(r >= b + 8 * KiB for r, b in zip(st.received(), before)),
                what="8 KiB more each while out of fds")
        st.stop_sending(half_close=True)
        st.pump(st.all_eof, what="EOF on every streamer")
        st.check(self, complete=True)
        # Their fds free the waiting clients, which are then all served.
        for i, s in enumerate(extra):
            data = random_bytes(3000, seed=i)
            s.sendall(data)
        for i, s in enumerate(extra[:20]):
            got = recv_exact(s, 3000, timeout=30)
            if got != random_bytes(3000, seed=i):
                d.fail("waiting client %d: wrong echo" % i)
        for s in extra:
            s.close()
        d.wait_fd_count(base)
        self.stop_clean(d)


if __name__ == "__main__":
    unittest.main()
