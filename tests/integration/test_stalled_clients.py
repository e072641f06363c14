# SPDX-License-Identifier: MIT
"""Clients that stop: send_timeout_ms, drain_idle_ms, refused clients' EOF,
and a pool of receive buffers too small for everyone.

A client that never reads is reclaimed after send_timeout_ms (reset: it
stopped reading), however long it stays connected; one that reads slowly
is not.  At shutdown, a client that owes nothing and has been silent for
drain_idle_ms gets its EOF at once instead of holding the stop up to the
deadline, and nothing that owes nothing is ever reset.  A client refused by
a limit gets a clean EOF even when it has already sent data.
"""

import signal
import socket
import threading
import time
import unittest

import harness
from harness import CheckedTestCase, fill_until_paused, recv_until_eof

harness.exit_77_unless_io_uring()

KiB = 1024


def is_reset(sock, timeout=30):
    """Read to the end: True on a reset, False on a clean EOF."""
    try:
        recv_until_eof(sock, timeout=timeout, limit=1 << 30)
    except ConnectionResetError:
        return True
    return False


class SendTimeoutTest(CheckedTestCase):

    def test_client_that_never_reads_is_reset(self):
        # Long enough that filling (which reads /proc/net/tcp at each
        # pause) is over well before it, on a busy machine too.
        d = self.start({"send_timeout_ms": 3000, "max_pending_bytes": 64 * KiB,
                        "idle_timeout_ms": 0})
        base = d.fd_count()
        other = self.client(d)
        self.assertEqual(harness.echo_roundtrip(other, b"x"), b"x")
        stuck = self.client(d)
        # Before the first byte: the daemon's clock for this echo cannot
        # start earlier, however long filling takes on a busy machine.
        t0 = time.monotonic()
        fill_until_paused(stuck)
        d.wait_fd_count(base + 1, timeout=30)  # the stuck one is gone
        self.assertGreaterEqual(time.monotonic() - t0, 2.9)
        self.assertTrue(is_reset(stuck), "a stalled client must be reset, not cut")
        self.assertEqual(d.stats()["send_timeouts"], 1)
        # Others are untouched.
        self.assertEqual(harness.echo_roundtrip(other, b"still here"), b"still here")
        self.stop_clean(d)

    def test_slow_reader_that_makes_progress_is_kept(self):
        # A send in flight completes only when half the daemon's socket
        # buffer is free again, which this reader takes far longer than the
        # timeout to do; the kernel's queue shrinking counts as progress.
        d = self.start({"send_timeout_ms": 3000, "max_pending_bytes": 64 * KiB})
        s = self.client(d)
        sent = fill_until_paused(s)
        got = bytearray()
        s.settimeout(10)
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline and len(got) < len(sent):
            got += s.recv(64 * KiB)
            time.sleep(0.1)
        got += harness.recv_exact(s, len(sent) - len(got))
        harness.assert_same(self, bytes(got), bytes(sent))
        self.assertEqual(d.stats()["send_timeouts"], 0)
        self.stop_clean(d)

    def test_zero_turns_it_off(self):
        d = self.start({"send_timeout_ms": 0, "max_pending_bytes": 64 * KiB})
        s = self.client(d)
        sent = fill_until_paused(s)
        time.sleep(1.5)  # longer than any timeout this test file uses
        self.assertEqual(d.stats()["connections"], 1)
        got = harness.recv_exact(s, len(sent))
        harness.assert_same(self, got, bytes(sent))
        self.stop_clean(d)


class DrainIdleTest(CheckedTestCase):

    def test_idle_clients_do_not_hold_the_shutdown(self):
        d = self.start({"shutdown_timeout_ms": 20000, "drain_idle_ms": 300})
        idle = [self.client(d) for _ in range(3)]
        for s in idle:
            self.assertEqual(harness.echo_roundtrip(s, b"hi"), b"hi")
        time.sleep(0.4)  # silent for longer than drain_idle_ms
        t0 = time.monotonic()
        d.send_signal(signal.SIGTERM)
        for s in idle:  # a clean EOF each, at once, with nothing unread
            self.assertEqual(recv_until_eof(s, timeout=10), b"")
        rc = d.wait_exit(timeout=10)
        self.assertEqual(rc, 0)
        self.assertLess(time.monotonic() - t0, 10, "the idle clients held the shutdown")
        d.wait_log(r"^<5>exiting: 0 closed by their clients, 3 idle ended at once, "
                   r"0 cut at the deadline, 0 reset$")

    def test_busy_client_keeps_service_idle_one_goes(self):
        # drain_idle_ms well above what a stalled test thread may take.
        d = self.start({"shutdown_timeout_ms": 20000, "drain_idle_ms": 1500})
        busy, idle = self.client(d), self.client(d)
        self.assertEqual(harness.echo_roundtrip(idle, b"x"), b"x")
        self.assertEqual(harness.echo_roundtrip(busy, b"x"), b"x")
        d.send_signal(signal.SIGTERM)
        d.wait_log(r"^<5>shutting down")
        # The busy client goes on talking for more than drain_idle_ms; the
        # idle one gets its EOF; then the busy one half-closes and is done.
        for i in range(8):
            msg = b"still talking %d" % i
            self.assertEqual(harness.echo_roundtrip(busy, msg), msg)
            time.sleep(0.3)
        self.assertEqual(recv_until_eof(idle, timeout=10), b"")
        busy.shutdown(socket.SHUT_WR)
        self.assertEqual(recv_until_eof(busy, timeout=10), b"")
        self.assertEqual(d.wait_exit(timeout=10), 0)
        d.wait_log(r"^<5>exiting: 1 closed by their clients, 1 idle ended at once, "
                   r"0 cut at the deadline, 0 reset$")

    def test_client_silent_mid_drain_is_ended_then(self):
        d = self.start({"shutdown_timeout_ms": 20000, "drain_idle_ms": 1500})
        s = self.client(d)
        d.send_signal(signal.SIGTERM)
        d.wait_log(r"^<5>shutting down")
        msg = b"one more before I go quiet"
        self.assertEqual(harness.echo_roundtrip(s, msg), msg)
        t0 = time.monotonic()
        self.assertEqual(recv_until_eof(s, timeout=10), b"")
        self.assertGreaterEqual(time.monotonic() - t0, 1.0)
        self.assertEqual(d.wait_exit(timeout=10), 0)

    def test_nothing_that_owes_nothing_is_reset(self):
        # drain_idle_ms off: the idle client waits for the deadline, is cut,
        # keeps its connection open after our EOF, and is closed, not reset.
        d = self.start({"shutdown_timeout_ms": 300, "drain_idle_ms": 0})
        s = self.client(d)
        self.assertEqual(harness.echo_roundtrip(s, b"x"), b"x")
        d.send_signal(signal.SIGTERM)
        self.assertEqual(recv_until_eof(s, timeout=10), b"")
        self.assertEqual(d.wait_exit(timeout=10), 0)
        d.wait_log(r"^<5>exiting: 0 closed by their clients, 0 idle ended at once, "
                   r"1 cut at the deadline, 0 reset$")

    def test_client_that_never_takes_its_echo_is_reset(self):
        d = self.start({"shutdown_timeout_ms": 200, "max_pending_bytes": 64 * KiB})
        s = self.client(d)
        fill_until_paused(s)
        d.send_signal(signal.SIGTERM)
        self.assertEqual(d.wait_exit(timeout=10), 0)
        d.wait_log(r"^<5>exiting: 0 closed by their clients, 0 idle ended at once, "
                   r"0 cut at the deadline, 1 reset$")


class RefusedClientTest(CheckedTestCase):

    def test_refused_client_that_sent_data_gets_a_clean_eof(self):
        d = self.start({"max_connections": 1})
        first = self.client(d)
        self.assertEqual(harness.echo_roundtrip(first, b"served"), b"served")
        # The served client keeps the loop busy, so that refused clients'
        # bytes are often there before their accept is handled.
        streamer = harness.Streamer([first], chunk=65536, interval=0.001,
                                    window=1 << 20)
        stop = threading.Event()
        pump = threading.Thread(target=lambda: streamer.pump(stop.is_set, timeout=120))
        pump.start()
        try:
            for i in range(100):
                s = socket.socket()
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                s.connect(d.addr)
                s.sendall(b"hello, are you there? " * 100)
                try:
                    self.assertEqual(recv_until_eof(s, timeout=10), b"", "refused %d" % i)
                except ConnectionResetError:
                    d.fail("refused client %d was reset instead of getting EOF" % i)
                s.close()
        finally:
            stop.set()
            pump.join(60)
        self.assertEqual(d.stats()["refused_max"], 100)
        streamer.stop_sending(half_close=True)
        streamer.pump(streamer.all_eof, timeout=60)
        streamer.check(self, complete=True)
        self.stop_clean(d)

    def test_refusal_warning_names_the_client(self):
        d = self.start({"max_connections": 1})
        first = self.client(d)
        self.assertEqual(harness.echo_roundtrip(first, b"x"), b"x")
        s = socket.create_connection(d.addr)
        port = s.getsockname()[1]
        self.assertEqual(recv_until_eof(s, timeout=10), b"")
        line = d.wait_log(r"^<4>refusing a connection from 127\.0\.0\.1:(\d+): "
                          r"max_connections \(1\) reached$")
        self.assertEqual(int(line.group(1)), port)
        s.close()
        self.stop_clean(d)


class SmallPoolTest(CheckedTestCase):

    def test_starved_receives_are_retried_in_proportion(self):
        # 8 buffers for 64 pipelining clients: receives starve all the time.
        # Each buffer that comes back re-arms one receive, not all of them:
        # failed receives stay within a small multiple of the messages.
        d = self.start({"buffer_count": 8, "buffer_size": 4096,
                        "max_pending_bytes": 65536})
        socks = [self.client(d) for _ in range(64)]
        payloads = [harness.random_bytes(256 * KiB, seed=i) for i in range(64)]
        got = harness.duplex(socks, payloads, timeout=120)
        for g, p in zip(got, payloads):
            harness.assert_same(self, g, p)
        st = d.stats()
        self.assertGreater(st["bufring_empty"], 0, "the pool never ran dry: no test")
        # A buffer comes back once per message (or less, when chained): one
        # retry each, plus the tick's safety net.
        self.assertLessEqual(st["starved_retries"], st["messages"] + 100,
                             "starved receives re-armed wholesale: %s" % st)
        self.stop_clean(d)


if __name__ == "__main__":
    unittest.main()
