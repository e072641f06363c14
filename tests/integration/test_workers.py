# SPDX-License-Identifier: MIT
"""workers = N: N event loops, one thread and one ring each, as one daemon.

Connections spread over the loops; the limits count across them; a reload,
SIGUSR1, the drain and the cut reach every loop; a loop that fails ends the
daemon with a clear line instead of leaving it half served.
"""

import os
import re
import signal
import socket
import tempfile
import time
import unittest

import harness
from harness import CheckedTestCase, Streamer, recv_until_eof, write_config

harness.exit_77_unless_io_uring()


def loop_lines(d):
    """SIGUSR1's per-loop counters: {loop: {counter: value}}."""
    mark = d.log_mark()
    d.send_signal(signal.SIGUSR1)
    d.wait_log(r"^<6>stats: ", start=mark)
    loops = {}
    deadline = time.monotonic() + harness.IO_TIMEOUT
    while time.monotonic() < deadline:
        found = d.find_log(r"^<6>worker (\d+): (.*)$", start=mark)
        if found and len(found) == len({int(m.group(1)) for m in found}) and \
                len(found) >= int(d.settings.get("workers", 1)):
            for m in found:
                loops[int(m.group(1))] = {k: int(v) for k, v in
                                          re.findall(r"(\w+)=(\d+)", m.group(2))}
            return loops
        time.sleep(0.01)
    d.fail("no per-loop stats lines")


class SpreadTest(CheckedTestCase):

    def test_1000_connections_from_one_host_spread_over_two_loops(self):
        d = self.start({"workers": 2})
        socks = []
        for i in range(1000):
            s = self.client(d)
            msg = b"connection %d" % i
            self.assertEqual(harness.echo_roundtrip(s, msg), msg)
            socks.append(s)
        loops = loop_lines(d)
        counts = [loops[k]["connections"] for k in (0, 1)]
        self.assertEqual(sum(counts), 1000)
        for k, n in enumerate(counts):
            self.assertGreaterEqual(n, 250, "loop %d holds %d of 1000: %s" % (k, n, counts))
            self.assertLessEqual(n, 750, "loop %d holds %d of 1000: %s" % (k, n, counts))
        # Every connection still echoes, wherever it lives.
        for i, s in enumerate(socks[::50]):
            self.assertEqual(harness.echo_roundtrip(s, b"again %d" % i), b"again %d" % i)
        self.stop_clean(d)

    def test_workers_zero_means_one_per_cpu(self):
        d = self.start({"workers": 0})
        cpus = min(len(os.sched_getaffinity(0)), 64)
        if cpus > 1:
            d.wait_log(r"^<6>%d loops, one thread each$" % cpus)
        else:
            self.assertFalse(d.find_log(r"loops, one thread each"))
        self.assertEqual(harness.echo_roundtrip(self.client(d), b"x"), b"x")
        self.assertFalse(d.find_log(r"may run on"))
        self.stop_clean(d)

    def test_workers_zero_counts_the_cpus_it_may_run_on(self):
        # taskset / systemd's CPUAffinity=: one CPU allowed, one loop.
        one = min(os.sched_getaffinity(0))
        d = self.start({"workers": 0}, preexec_fn=lambda: os.sched_setaffinity(0, {one}))
        self.assertEqual(harness.echo_roundtrip(self.client(d), b"x"), b"x")
        self.assertFalse(d.find_log(r"loops, one thread each"))
        self.assertFalse(d.find_log(r"may run on"))
        self.stop_clean(d)

    def test_more_workers_than_cpus_is_said(self):
        one = min(os.sched_getaffinity(0))
        d = self.start({"workers": 2}, preexec_fn=lambda: os.sched_setaffinity(0, {one}))
        d.wait_log(r"^<5>workers = 2, but this process may run on 1 CPU: loops that "
                   r"share a core cost more CPU per message than one loop$")
        d.wait_log(r"^<6>2 loops, one thread each$")
        self.assertEqual(harness.echo_roundtrip(self.client(d), b"x"), b"x")
        self.stop_clean(d)


class GlobalLimitsTest(CheckedTestCase):

    def test_max_connections_counts_every_loop(self):
        d = self.start({"workers": 2, "max_connections": 100})
        socks = [self.client(d) for _ in range(100)]
        for s in socks:
            self.assertEqual(harness.echo_roundtrip(s, b"in"), b"in")
        loops = loop_lines(d)
        self.assertTrue(all(loops[k]["connections"] > 0 for k in (0, 1)), loops)
        base = d.fd_count()
        extra = self.client(d)
        self.assertEqual(recv_until_eof(extra, timeout=10), b"")
        self.assertEqual(d.stats()["refused_max"], 1)
        extra.close()
        d.wait_fd_count(base)  # the refused one, lingering, is gone too
        # A place freed on either loop is a place for the next client.
        socks[0].close()
        d.wait_fd_count(base - 1)
        again = self.client(d)
        self.assertEqual(harness.echo_roundtrip(again, b"now"), b"now")
        self.stop_clean(d)

    def test_max_connections_per_ip_counts_every_loop(self):
        d = self.start({"workers": 2, "max_connections_per_ip": 60})
        mine = [self.client(d, source="127.0.0.2") for _ in range(60)]
        for s in mine:
            self.assertEqual(harness.echo_roundtrip(s, b"in"), b"in")
        self.assertTrue(all(n["connections"] > 0 for n in loop_lines(d).values()))
        over = self.client(d, source="127.0.0.2")
        self.assertEqual(recv_until_eof(over, timeout=10), b"")
        other = self.client(d, source="127.0.0.3")
        self.assertEqual(harness.echo_roundtrip(other, b"other"), b"other")
        self.assertEqual(d.stats()["refused_per_ip"], 1)
        self.stop_clean(d)


class ControlTest(CheckedTestCase):

    def busy_clients(self, d, n=100):
        socks = [self.client(d) for _ in range(n)]
        st = Streamer(socks, chunk=2048, interval=0.005, seed=7)
        st.pump(lambda: min(st.received()) > 0, what="every client echoed")
        loops = loop_lines(d)
        self.assertTrue(all(loops[k]["connections"] > 0 for k in loops), loops)
        return st

    def test_reload_and_drain_reach_every_loop(self):
        d = self.start({"workers": 2, "shutdown_timeout_ms": 30000, "drain_idle_ms": 0})
        st = self.busy_clients(d)
        conf = dict(d.settings, log_level="debug", max_connections=500)
        write_config(conf, path=d.conf)
        mark = d.log_mark()
        d.send_signal(signal.SIGHUP)
        d.wait_log(r"^<5>reloaded configuration", start=mark)
        st.pump(lambda: min(st.received()) > 10000, what="more echo after the reload")
        d.send_signal(signal.SIGTERM)
        d.wait_log(r"^<5>shutting down: no new connections; draining 100 connections")
        st.pump(lambda: min(st.received()) > 20000, what="service during the drain")
        st.stop_sending(half_close=True)
        st.pump(st.all_eof, what="EOF after the echo")
        st.check(self, complete=True)
        self.assertEqual(d.wait_exit(), 0)
        d.wait_log(r"^<5>exiting: 100 closed by their clients, 0 idle ended at once, 0 cut "
                   r"at the deadline, 0 reset$")

    def test_cut_at_the_deadline_on_every_loop(self):
        d = self.start({"workers": 2, "shutdown_timeout_ms": 500, "drain_idle_ms": 0})
        st = self.busy_clients(d, n=40)
        d.send_signal(signal.SIGTERM)
        st.pump(st.all_eof, what="EOF at the deadline")
        st.check(self)  # an exact prefix, then EOF, on every client
        self.assertEqual(d.wait_exit(), 0)
        d.wait_log(r"^<5>shutdown: 40 connections still open at the 500 ms deadline$")
        d.wait_log(r"^<5>exiting: 0 closed by their clients, 0 idle ended at once, 40 cut "
                   r"at the deadline, 0 reset$")

    def test_status_counts_every_loop(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "notify")
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(path)
            sock.settimeout(10)
            d = self.start({"workers": 2}, env=dict(harness.daemon_env(),
                                                     NOTIFY_SOCKET=path))
            socks = [self.client(d) for _ in range(100)]
            for s in socks:
                self.assertEqual(harness.echo_roundtrip(s, b"x"), b"x")
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                msg = sock.recv(4096).decode()
                if "STATUS=100 connections, 100 messages" in msg:
                    break
            else:
                self.fail("no STATUS= counting both loops' 100 connections")
            sock.close()
            self.stop_clean(d)

    def test_changing_workers_takes_a_restart(self):
        d = self.start({"workers": 2})
        write_config(dict(d.settings, workers=3), path=d.conf)
        mark = d.log_mark()
        d.send_signal(signal.SIGHUP)
        d.wait_log(r"^<4>reload: 'workers' changed from 2 to 3; that takes a restart$",
                   start=mark)
        self.assertEqual(len(loop_lines(d)), 2)
        self.stop_clean(d)


class FailureTest(CheckedTestCase):

    def test_a_loop_that_fails_ends_the_daemon(self):
        env = dict(harness.daemon_env(), RINGECHO_TEST_BREAK_LOOP="1")
        d = self.start({"workers": 2}, env=env, ready=False)
        rc = d.wait_exit()
        self.assertEqual(rc, 1, d.log_text())
        d.wait_log(r"^<3>loop 1: io_uring_enter: ")
        d.wait_log(r"^<3>loop 1 failed \(see above\); stopping the daemon$")
        d.wait_log(r"^<5>exiting: ")


if __name__ == "__main__":
    unittest.main()
