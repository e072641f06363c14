# SPDX-License-Identifier: MIT
"""ringechod's systemd interface without systemd as PID 1.

Socket activation through `systemd-socket-activate -l ...` (IPv4 and IPv6
sockets handed over, `listen` from the config ignored and said so once), and
the sd_notify protocol caught on a unix datagram socket that the test binds
and names in NOTIFY_SOCKET: READY=1 once the listener works, STATUS= lines,
RELOADING=1 with MONOTONIC_USEC= then READY=1 on SIGHUP, STOPPING=1 on
SIGTERM, WATCHDOG=1 at half of WATCHDOG_USEC.

The daemon runs under the harness's Daemon, as in every other module: its
log is "the journal" (JOURNAL_STREAM), passed through systemd-socket-activate
with -E like the other variables the daemon needs.  Timing is never asserted
tightly: every wait has a generous bound (the suite also runs under ASan on
a loaded two-core machine).
"""

import os
import re
import shutil
import signal
import socket
import tempfile
import threading
import time
import unittest

import harness
from harness import free_port

harness.exit_77_unless_io_uring()

TIMEOUT = harness.START_TIMEOUT


def echo_once(host, port, payload, timeout=TIMEOUT):
    """Send payload, half-close, read to EOF: what the server sent back."""
    with harness.connect(host, port, timeout=timeout) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        return harness.recv_until_eof(s, timeout)


class NotifySocket:
    """The service manager's end of sd_notify: every datagram, in order."""

    def __init__(self, directory):
        self.path = os.path.join(directory, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages = []  # (time.monotonic() at receipt, {key: value}, raw text)
        self.cond = threading.Condition()
        self.closed = False
        self.thread = threading.Thread(target=self._recv, daemon=True)
        self.thread.start()

    def _recv(self):
        self.sock.settimeout(0.2)
        while not self.closed:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
            text = data.decode("utf-8", "replace")
            fields = dict(line.split("=", 1) for line in text.split("\n") if "=" in line)
            with self.cond:
                self.messages.append((time.monotonic(), fields, text))
                self.cond.notify_all()

    def close(self):
        self.closed = True
        self.thread.join(5)
        self.sock.close()

    def mark(self):
        with self.cond:
            return len(self.messages)

    def wait(self, key, value=None, start=0, timeout=TIMEOUT, what=None):
        """Index and fields of the first message from `start` on that sets key (to value)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            i = start
            while True:
                while i < len(self.messages):
                    fields = self.messages[i][1]
                    if key in fields and (value is None or fields[key] == value):
                        return i, fields
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"no {what or key + '=' + (value or '...')} within {timeout:.0f} s; "
                        f"got {[m[2] for m in self.messages]}")
                self.cond.wait(min(left, 0.5))

    def count(self, key, start=0):
        with self.cond:
            return sum(1 for m in self.messages[start:] if key in m[1])


class SystemdTestCase(harness.DaemonTestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="ringechod-systemd-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.notify = NotifySocket(self.dir)
        self.addCleanup(self.notify.close)

    def start_notifying(self, listen, extra_env=None, **kw):
        """ringechod with NOTIFY_SOCKET naming our socket (and extra_env);
        kw: harness.Daemon's (wrapper, forward_env)."""
        env = {"NOTIFY_SOCKET": self.notify.path}
        env.update(extra_env or {})
        return self.start({"listen": listen, "log_level": "info"}, ready=False,
                          extra_env=env, **kw)

    def start_direct(self, **extra_env):
        """ringechod on a kernel-chosen loopback port; (daemon, port)."""
        d = self.start_notifying(["127.0.0.1:0"], extra_env)
        self.notify.wait("READY", "1")
        # Logged before READY=1, but the pipe may deliver it a little later.
        d.wait_ready(TIMEOUT)
        return d, d.port

    def assert_stops_cleanly(self, d):
        mark = self.notify.mark()
        self.assertEqual(d.stop(), 0, d.log_text())
        self.notify.wait("STOPPING", "1", start=mark)


class SocketActivationTest(SystemdTestCase):
    def setUp(self):
        super().setUp()
        self.activate = shutil.which("systemd-socket-activate")
        if not self.activate:
            self.skipTest("systemd-socket-activate not installed (package systemd)")

    def start_activated(self, hosts, config_listen):
        """ringechod behind systemd-socket-activate on one port of each host; (daemon, port)."""
        for attempt in range(5):
            port = free_port(*hosts)
            addrs = [f"[{h}]:{port}" if ":" in h else f"{h}:{port}" for h in hosts]
            wrapper = [self.activate]
            for a in addrs:
                wrapper += ["-l", a]
            # systemd-socket-activate passes on only the variables it is told to.
            d = self.start_notifying(config_listen, wrapper=wrapper, forward_env="-E")
            # It binds, then waits for the first connection before it execs
            # the daemon (whose accept finds that connection in the backlog).
            try:
                for a in addrs:
                    d.wait_log(r"^Listening on " + re.escape(a) + " as ", TIMEOUT)
                return d, port
            except AssertionError:
                d.kill()
                if not d.find_log("Address already in use"):
                    raise
                # Someone took the port since free_port() saw it free.
        raise AssertionError(f"no free port for {hosts} in 5 attempts")

    def test_serves_the_handed_sockets_and_ignores_listen(self):
        hosts = ["127.0.0.1"] + (["::1"] if harness.ipv6_available() else [])
        unused = free_port(*hosts)
        d, port = self.start_activated(hosts, [f"127.0.0.1:{unused}"])
        for host in hosts:
            payload = os.urandom(100_000)
            self.assertEqual(echo_once(host, port, payload), payload, f"echo via {host}")
        self.notify.wait("READY", "1")
        with self.assertRaises(ConnectionRefusedError, msg="bound the config's listen"):
            echo_once("127.0.0.1", unused, b"x", timeout=5)
        # JOURNAL_STREAM reached the daemon through the wrapper: "<N>" prefixes.
        d.wait_log(r"^<5>listening on 127\.0\.0\.1:%d \(from systemd" % port, TIMEOUT)
        # The config asks for another address: one warning names both.
        differs = d.find_log(r"^<4>'listen' \(127\.0\.0\.1:%d\) is not what systemd passed "
                             r"\(.*127\.0\.0\.1:%d.*\): serving systemd's sockets" % (unused, port))
        self.assertEqual(len(differs), 1,
                         f"a differing 'listen' should be warned of once; log:\n{d.log_text()}")
        self.assert_stops_cleanly(d)

    def test_ipv6_socket_alone(self):
        if not harness.ipv6_available():
            self.skipTest("no IPv6 loopback")
        d, port = self.start_activated(["::1"], ["127.0.0.1:0"])
        self.assertEqual(echo_once("::1", port, b"six\n"), b"six\n")
        self.notify.wait("READY", "1")
        self.assert_stops_cleanly(d)


class SystemdBacklogTest(harness.DaemonTestCase):

    def start_on(self, listener, **kw):
        """ringechod given listener as systemd gives a socket unit's: fd 3,
        LISTEN_FDS, LISTEN_PID (set by the shell that execs it)."""
        n = listener.fileno()
        move = "" if n == 3 else " 3<&%d %d<&-" % (n, n)  # bash: any fd number
        wrapper = ["bash", "-c", 'LISTEN_PID=$$ exec "$@"' + move, "bash"]
        port = listener.getsockname()[1]
        extra_env = dict(kw.pop("extra_env", {}), LISTEN_FDS="1")
        d = self.start({"listen": ["127.0.0.1:%d" % port]}, wrapper=wrapper, ready=False,
                       pass_fds=[n], extra_env=extra_env, **kw)
        d.wait_log(r"^<5>listening on 127\.0\.0\.1:%d \(from systemd" % port)
        d.wait_log(r"^<5>ready")
        return d

    def test_sigterm_leaves_systemds_backlog_to_the_next_instance(self):
        """systemd keeps its socket, and the clients in its backlog, across a
        restart: the stopping instance leaves them to the next one, which
        serves them in full (taken at the stop, they would only have been
        drained)."""
        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        a = self.start_on(listener, extra_env={"RINGECHO_TEST_HOLD_ACCEPTS": "1"})
        c = harness.connect(*listener.getsockname())
        self.addCleanup(c.close)
        c.sendall(b"hello")
        self.assertEqual(a.stats()["total"], 0)  # in the backlog
        a.send_signal(signal.SIGTERM)
        self.assertEqual(a.wait_exit(), 0)
        a.wait_log(r"^<5>shutting down: no new connections; draining 0 connections ")
        b = self.start_on(listener)
        self.assertEqual(harness.recv_exact(c, 5), b"hello")
        self.assertEqual(harness.echo_roundtrip(c, b" again"), b" again")
        c.shutdown(socket.SHUT_WR)
        self.assertEqual(harness.recv_until_eof(c), b"")
        self.assertEqual(b.stop(), 0)


class NotifyTest(SystemdTestCase):
    def test_ready_only_once_the_listener_echoes(self):
        d, port = self.start_direct()
        # READY=1 has arrived (start_direct waited for it): no retry allowed.
        self.assertEqual(echo_once("127.0.0.1", port, b"ready?\n"), b"ready?\n")
        self.assertEqual(self.notify.count("READY"), 1)
        self.assert_stops_cleanly(d)

    def test_status_reports_the_traffic(self):
        d, port = self.start_direct()
        payload = os.urandom(200_000)
        self.assertEqual(echo_once("127.0.0.1", port, payload), payload)

        def echoed(fields):
            m = re.search(r"(\d+) bytes", fields.get("STATUS", ""))
            return m and int(m.group(1)) >= len(payload)

        start = 0
        deadline = time.monotonic() + 15
        while True:
            i, fields = self.notify.wait("STATUS", start=start,
                                         timeout=max(deadline - time.monotonic(), 0.1),
                                         what=f"a STATUS= counting {len(payload)} bytes")
            self.assertRegex(fields["STATUS"], r"connection")
            if echoed(fields):
                break
            start = i + 1
        # Kept current: a later STATUS= arrives without any traffic.
        self.notify.wait("STATUS", start=i + 1, timeout=10, what="a periodic STATUS=")
        self.assert_stops_cleanly(d)

    def test_reload_sends_reloading_then_ready(self):
        d, port = self.start_direct()
        mark = self.notify.mark()
        d.send_signal(signal.SIGHUP)
        i, fields = self.notify.wait("RELOADING", "1", start=mark)
        self.assertIn("MONOTONIC_USEC", fields,
                      "MONOTONIC_USEC= must come in the same message as RELOADING=1")
        usec = int(fields["MONOTONIC_USEC"])
        # CLOCK_MONOTONIC, as time.monotonic() reads it on Linux; loose bound.
        self.assertLess(abs(usec / 1e6 - self.notify.messages[i][0]), 60)
        self.notify.wait("READY", "1", start=i + 1, what="READY=1 after RELOADING=1")
        d.wait_log(r"reloaded configuration from ")
        self.assertEqual(echo_once("127.0.0.1", port, b"after\n"), b"after\n")
        self.assert_stops_cleanly(d)

    def test_stopping_at_sigterm(self):
        d, _ = self.start_direct()
        self.assertEqual(self.notify.count("STOPPING"), 0)
        self.assert_stops_cleanly(d)

    def test_watchdog_pings_at_half_the_interval(self):
        d, port = self.start_direct(WATCHDOG_USEC="1000000")
        mark = self.notify.mark()
        time.sleep(3.5)
        pings = self.notify.count("WATCHDOG", start=mark)
        # About 7 at 0.5 s; a loaded machine may lose a few, none would mean no watchdog.
        self.assertGreaterEqual(pings, 3, f"{pings} WATCHDOG=1 in 3.5 s")
        self.assertLessEqual(pings, 40, f"{pings} WATCHDOG=1 in 3.5 s: a busy loop?")
        self.assertEqual(echo_once("127.0.0.1", port, b"wd\n"), b"wd\n")
        self.assert_stops_cleanly(d)

    def test_no_watchdog_pings_unless_asked(self):
        d, _ = self.start_direct()
        mark = self.notify.mark()
        time.sleep(2)
        self.assertEqual(self.notify.count("WATCHDOG", start=mark), 0)
        self.assert_stops_cleanly(d)


if __name__ == "__main__":
    unittest.main()
