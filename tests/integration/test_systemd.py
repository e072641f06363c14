# SPDX-License-Identifier: MIT
"""ringechod's systemd interface without systemd as PID 1.

Socket activation through `systemd-socket-activate -l ...` (IPv4 and IPv6
sockets handed over, `listen` from the config ignored and said so once), and
the sd_notify protocol caught on a unix datagram socket that the test binds
and names in NOTIFY_SOCKET: READY=1 once the listener works, STATUS= lines,
RELOADING=1 with MONOTONIC_USEC= then READY=1 on SIGHUP, STOPPING=1 on
SIGTERM, WATCHDOG=1 at half of WATCHDOG_USEC.

Standard library only; env RINGECHOD names the binary.  Timing is never
asserted tightly: every wait has a generous bound (the suite also runs under
ASan on a loaded two-core machine).
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

TIMEOUT = 30.0
READY = "READY=1"


def binary():
    return os.environ.get("RINGECHOD") or "/work/main/build/src/ringechod"


def setUpModule():
    if not os.access(binary(), os.X_OK):
        raise unittest.SkipTest(f"no ringechod binary at {binary()}")


def free_port(hosts=("127.0.0.1",)):
    """A port free on every host in hosts a moment ago."""
    for _ in range(50):
        family = socket.AF_INET6 if ":" in hosts[0] else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((hosts[0], 0))
            port = s.getsockname()[1]
        if all(port_free(h, port) for h in hosts[1:]):
            return port
    raise AssertionError(f"no port free on all of {hosts}")


def port_free(host, port):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def have_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def echo_once(host, port, payload, timeout=TIMEOUT):
    """Send payload, half-close, read to EOF: what the server sent back."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect((host, port))
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            b = s.recv(1 << 16)
            if not b:
                return b"".join(chunks)
            chunks.append(b)


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


class Daemon:
    """ringechod (possibly behind systemd-socket-activate), its stderr drained by a thread."""

    def __init__(self, argv, env):
        self.argv = argv
        self.lines = []
        self.cond = threading.Condition()
        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self):
        for raw in iter(self.proc.stderr.readline, b""):
            with self.cond:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self.cond.notify_all()

    def log(self):
        with self.cond:
            return "\n".join(self.lines)

    def grep(self, regex):
        rx = re.compile(regex)
        with self.cond:
            return [line for line in self.lines if rx.search(line)]

    def wait_log(self, regex, timeout=TIMEOUT):
        rx = re.compile(regex)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for line in self.lines:
                    m = rx.search(line)
                    if m:
                        return m
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self.thread.is_alive()):
                    log = "\n".join(self.lines)
                    raise AssertionError(f"no log line matching {regex!r}; log:\n{log}")
                self.cond.wait(min(left, 0.5))

    def signal(self, sig):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, timeout=TIMEOUT):
        """SIGTERM; the exit status."""
        self.signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running {timeout:.0f} s after SIGTERM; log:\n{self.log()}")
        self.thread.join(5)
        return code

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.thread.join(5)
        self.proc.stderr.close()


class SystemdTestCase(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="ringechod-systemd-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.notify = NotifySocket(self.dir)
        self.addCleanup(self.notify.close)

    def config(self, listen):
        path = os.path.join(self.dir, "ringechod.conf")
        with open(path, "w") as f:
            f.write("listen = [%s];\nlog_level = \"info\";\n"
                    % ", ".join(f'"{a}"' for a in listen))
        return path

    def start(self, argv, **extra_env):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("LISTEN_", "WATCHDOG_", "NOTIFY_SOCKET"))}
        env["NOTIFY_SOCKET"] = self.notify.path
        env.update(extra_env)
        d = Daemon(argv, env)
        self.addCleanup(d.kill)
        return d

    def start_direct(self, **extra_env):
        """ringechod on a kernel-chosen loopback port; (daemon, port)."""
        d = self.start([binary(), "-c", self.config(["127.0.0.1:0"])], **extra_env)
        self.notify.wait("READY", "1")
        # Logged before READY=1, but the pipe may deliver it a little later.
        m = d.wait_log(r"listening on 127\.0\.0\.1:(\d+)")
        return d, int(m.group(1))

    def assert_stops_cleanly(self, d):
        mark = self.notify.mark()
        self.assertEqual(d.stop(), 0, d.log())
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
            port = free_port(hosts)
            addrs = [f"[{h}]:{port}" if ":" in h else f"{h}:{port}" for h in hosts]
            argv = [self.activate]
            for a in addrs:
                argv += ["-l", a]
            # systemd-socket-activate passes on only the variables it is told to.
            argv += ["-E", f"NOTIFY_SOCKET={self.notify.path}",
                     binary(), "-c", self.config(config_listen)]
            d = self.start(argv)
            # It binds, then waits for the first connection before it execs
            # the daemon (whose accept finds that connection in the backlog).
            try:
                for a in addrs:
                    d.wait_log(r"^Listening on " + re.escape(a) + " as ")
                return d, port
            except AssertionError:
                d.kill()
                if not d.grep("Address already in use"):
                    raise
                # Someone took the port since free_port() saw it free.
        raise AssertionError(f"no free port for {hosts} in 5 attempts")

    def test_serves_the_handed_sockets_and_ignores_listen(self):
        hosts = ["127.0.0.1"] + (["::1"] if have_ipv6_loopback() else [])
        unused = free_port(hosts)
        d, port = self.start_activated(hosts, [f"127.0.0.1:{unused}"])
        for host in hosts:
            payload = os.urandom(100_000)
            self.assertEqual(echo_once(host, port, payload), payload, f"echo via {host}")
        self.notify.wait("READY", "1")
        with self.assertRaises(ConnectionRefusedError, msg="bound the config's listen"):
            echo_once("127.0.0.1", unused, b"x", timeout=5)
        ignored = d.grep(r"(?i)ignor")
        self.assertEqual(len(ignored), 1,
                         f"'listen' ignored should be logged once; log:\n{d.log()}")
        self.assert_stops_cleanly(d)

    def test_ipv6_socket_alone(self):
        if not have_ipv6_loopback():
            self.skipTest("no IPv6 loopback")
        d, port = self.start_activated(["::1"], ["127.0.0.1:0"])
        self.assertEqual(echo_once("::1", port, b"six\n"), b"six\n")
        self.notify.wait("READY", "1")
        self.assert_stops_cleanly(d)


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
        d.signal(signal.SIGHUP)
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
