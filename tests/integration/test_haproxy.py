# SPDX-License-Identifier: MIT
"""examples/haproxy.cfg, run as shipped, in front of two ringechod instances.

Debian's haproxy (`scripts/deps test` installs it) is started in the
foreground with `-db -f examples/haproxy.cfg`: the file itself, with only the
addresses set through the environment variables it documents.  The two
daemons listen on 127.0.0.2 and 127.0.0.3 (port 0: the kernel picks and the
log names it), the frontend on 127.0.0.1.  Readiness is read, never slept
on: the daemons' "ready" lines, then haproxy's stats socket until both
servers have passed the echo health check (L7OK).

What the example promises, and so what is asserted:

  - every connection through haproxy is echoed byte for byte, including
    several at once and payloads larger than the socket buffers, and the
    connections are spread over both instances;
  - SIGKILL one instance while clients stream through both: new connections
    are echoed through the survivor as soon as the dead instance's listening
    socket is closed (refused connects are redispatched; the kernel closes
    it a few milliseconds after the process, see below), exactly the streams
    that were on the killed instance end, each with an exact prefix of its
    echo, and the streams on the survivor go on unbroken to a complete echo;
  - haproxy marks the dead instance DOWN (stats socket and log), and from
    then on sends it nothing;
  - a stopped (SIGSTOP) instance, whose kernel still completes handshakes, is
    marked DOWN by the echo check (a layer-7 timeout), traffic moves to the
    other, and the instance is UP again and used once it resumes.

Exit 77 (skipped) when haproxy is not installed or cannot run, or when not
root: the example chroots and drops to user haproxy, which needs root.
"""

import csv
import io
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import harness
from harness import CheckedTestCase, Streamer, assert_same, duplex, random_bytes

harness.exit_77_unless_io_uring()

SOURCE_DIR = os.environ.get("RINGECHO_SOURCE_DIR") or \
    os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
EXAMPLE = os.path.join(SOURCE_DIR, "examples", "haproxy.cfg")
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
BACKEND = "ringechod"  # the backend and server names in examples/haproxy.cfg
SERVERS = ("echo1", "echo2")
# Generous bounds (ASan on a loaded two-core machine); the example's own
# figures are 2.5 s to mark a dead server DOWN and 5 s for a stuck one.
STATE_TIMEOUT = 30.0
KiB, MiB = 1 << 10, 1 << 20


def skip_unless_haproxy_runs():
    def skip(why):
        sys.stderr.write("skipping: %s\n" % why)
        sys.exit(77)
    if not os.access(HAPROXY, os.X_OK):
        skip("haproxy is not installed (scripts/deps test installs Debian's)")
    if os.geteuid() != 0:
        skip("examples/haproxy.cfg chroots and drops to user haproxy: "
             "haproxy must be started as root")
    try:
        subprocess.run([HAPROXY, "-v"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError) as e:
        skip("haproxy does not run here: %s" % e)


skip_unless_haproxy_runs()


def beyond_socket_buffers():
    """A payload size no TCP socket here can buffer whole, sending or receiving:
    its echo can only complete while it is still being sent."""
    most = 0
    for name in ("tcp_rmem", "tcp_wmem"):
        with open("/proc/sys/net/ipv4/" + name) as f:
            most = max(most, int(f.read().split()[2]))
    return most + MiB


class Haproxy:
    """haproxy -db -f examples/haproxy.cfg; its log (stdout and stderr) kept in memory."""

    def __init__(self, bind, echo1, echo2, directory):
        self.stats_path = os.path.join(directory, "stats.sock")
        self.bind = bind
        env = dict(os.environ,
                   RINGECHO_LB_BIND="%s:%d" % bind,
                   RINGECHO_LB_ECHO1="%s:%d" % echo1,
                   RINGECHO_LB_ECHO2="%s:%d" % echo2,
                   RINGECHO_LB_STATS=self.stats_path)
        self.cmd = [HAPROXY, "-db", "-f", EXAMPLE]
        self.lines = []
        self.cond = threading.Condition()
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     env=env, preexec_fn=harness._child_setup(None))
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self):
        for raw in iter(self.proc.stdout.readline, b""):
            with self.cond:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self.cond.notify_all()

    def log_text(self):
        with self.cond:
            return "\n".join(self.lines)

    def fail(self, message):
        raise AssertionError("%s\n--- haproxy log ---\n%s" % (message, self.log_text()[-8000:]))

    def wait_log(self, text, timeout=STATE_TIMEOUT):
        deadline = time.monotonic() + timeout
        with self.cond:
            while not any(text in line for line in self.lines):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(min(left, 0.5))
            else:
                return
        self.fail("no haproxy log line with %r within %.0f s" % (text, timeout))

    def stats(self):
        """The backend's servers from "show stat": {name: {field: value}}."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(self.stats_path)
            s.sendall(b"show stat\n")
            data = bytearray()
            while True:
                b = s.recv(65536)
                if not b:
                    break
                data += b
        text = data.decode().lstrip("# ")
        return {row["svname"]: row for row in csv.DictReader(io.StringIO(text))
                if row["pxname"] == BACKEND and row["svname"] in SERVERS}

    def wait_stats(self, until, what, timeout=STATE_TIMEOUT):
        """Poll the stats socket until until(stats) holds; the stats then."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            if self.proc.poll() is not None:
                self.fail("haproxy exited with %s while waiting for %s"
                          % (self.proc.returncode, what))
            try:
                last = self.stats()
                if until(last):
                    return last
            except OSError:  # the socket is not there yet
                pass
            if time.monotonic() > deadline:
                self.fail("no %s within %.0f s; last stats: %s" % (what, timeout, summary(last)))
            time.sleep(0.05)

    def wait_state(self, wanted, timeout=STATE_TIMEOUT):
        """Wait until each named server has the (status, check_status) given."""
        return self.wait_stats(
            lambda st: all((st[n]["status"], st[n]["check_status"]) == want
                           for n, want in wanted.items()),
            "servers %s" % wanted, timeout)

    def connect(self):
        return harness.connect(*self.bind)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.thread.join(10)
        self.proc.stdout.close()


def listening(host, port):
    """Whether the kernel has a listening TCP socket on host:port (IPv4)."""
    local = "%s:%04X" % (socket.inet_aton(host)[::-1].hex().upper(), port)
    with open("/proc/net/tcp") as f:
        next(f)
        return any(fields[1] == local and fields[3] == "0A"  # TCP_LISTEN
                   for fields in (line.split() for line in f))


def wait_not_listening(daemon, timeout=STATE_TIMEOUT):
    deadline = time.monotonic() + timeout
    while listening(*daemon.addr):
        if time.monotonic() > deadline:
            daemon.fail("%s:%d still listening %.0f s after the daemon died"
                        % (daemon.addr + (timeout,)))
        time.sleep(0.005)


def summary(stats):
    if not stats:
        return stats
    return {n: {k: row[k] for k in ("status", "check_status", "check_desc", "scur", "stot")}
            for n, row in stats.items()}


def count(stats, field):
    return {n: int(stats[n][field] or 0) for n in SERVERS}


class HaproxyExampleTest(CheckedTestCase):

    def setUp(self):
        seed = random.SystemRandom().randrange(1 << 32)
        sys.stderr.write("payload seed %d\n" % seed)
        self.rng = random.Random(seed)
        self.dir = tempfile.mkdtemp(prefix="ringecho-haproxy-")
        self.addCleanup(shutil.rmtree, self.dir, ignore_errors=True)
        self.echo1 = self.start(host="127.0.0.2")
        self.echo2 = self.start(host="127.0.0.3")
        self.lb = self.start_haproxy()

    def start_haproxy(self):
        """haproxy on a free 127.0.0.1 port, both servers checked UP."""
        for _ in range(3):
            lb = Haproxy(("127.0.0.1", harness.free_port()), self.echo1.addr,
                         self.echo2.addr, self.dir)
            self.addCleanup(lb.stop)
            try:
                lb.wait_state({n: ("UP", "L7OK") for n in SERVERS})
                return lb
            except AssertionError:
                lb.stop()
                if "cannot bind socket" not in lb.log_text():
                    raise
        # Someone took the port three times between free_port() and bind.
        lb.fail("haproxy could not bind its frontend")

    def payload(self, n):
        return random_bytes(n, self.rng.randrange(1 << 32))

    def echo_through(self, sizes):
        """One connection per size, all at once; each echo must be exact."""
        socks = [self.lb.connect() for _ in sizes]
        try:
            payloads = [self.payload(n) for n in sizes]
            try:
                got = duplex(socks, payloads)
            except AssertionError as e:
                self.lb.fail(str(e))
            for i, (g, p) in enumerate(zip(got, payloads)):
                assert_same(self, g, p, "echo of %d bytes on connection %d" % (len(p), i))
        finally:
            for s in socks:
                s.close()

    def echo_one_by_one(self, n):
        for _ in range(n):
            self.echo_through([self.rng.randint(1, 256 * KiB)])

    def test_bulk_echo_through_both_instances(self):
        big = beyond_socket_buffers()
        before = count(self.lb.stats(), "stot")
        self.echo_through([1, 100, 1500, 64 * KiB, MiB, big, big])
        after = count(self.lb.stats(), "stot")
        self.assertEqual(sum(after.values()) - sum(before.values()), 7, summary(self.lb.stats()))
        for n in SERVERS:
            self.assertGreater(after[n], before[n], "leastconn gave %s nothing: %s"
                               % (n, summary(self.lb.stats())))
        self.stop_clean(self.echo1)
        self.stop_clean(self.echo2)

    def test_killed_instance_new_connections_go_to_the_survivor(self):
        streams = Streamer([self.lb.connect() for _ in range(8)], chunk=4 * KiB,
                           interval=0.005, window=128 * KiB, seed=self.rng.randrange(1 << 16))
        self.addCleanup(streams.close)
        streams.pump(lambda: min(streams.received()) >= 64 * KiB, what="64 KiB echoed on each")
        on = count(self.lb.stats(), "scur")
        self.assertEqual(sum(on.values()), 8, summary(self.lb.stats()))
        self.assertTrue(all(on.values()), "streams not on both instances: %s" % on)

        self.echo1.send_signal(signal.SIGKILL)
        self.assertEqual(self.echo1.wait_exit(), -signal.SIGKILL)
        killed_at = [len(c["recv"]) for c in streams.clients]
        # The kernel releases the files of a dead process's io_uring in a
        # worker after the process is gone: for a few milliseconds its
        # listening socket still completes handshakes, and what it caught is
        # then reset. From the moment it is closed, a new connection sent to
        # echo1 is refused, and the example redispatches it to echo2,
        # whether echo1 is marked DOWN yet or not.
        wait_not_listening(self.echo1)
        self.echo_one_by_one(10)

        def ended(c):
            return c["eof"] or c["reset"] is not None or c["send_error"] is not None
        # The streams on echo2 keep flowing while those on echo1 end.
        streams.pump(lambda: sum(map(ended, streams.clients)) >= on["echo1"] and all(
            len(c["recv"]) >= killed_at[c["i"]] + 64 * KiB
            for c in streams.clients if not ended(c)),
            what="the streams on echo1 ended and those on echo2 going on")

        st = self.lb.wait_state({"echo1": ("DOWN", "L4CON"), "echo2": ("UP", "L7OK")})
        self.lb.wait_log("Server %s/echo1 is DOWN" % BACKEND)
        # DOWN: echo1 gets nothing more, not even a first try.
        before = count(st, "stot")
        self.echo_one_by_one(10)
        self.echo_through([1, 32 * KiB, MiB, beyond_socket_buffers()])
        after = count(self.lb.stats(), "stot")
        self.assertEqual(after["echo1"], before["echo1"], summary(self.lb.stats()))
        self.assertEqual(after["echo2"] - before["echo2"], 14, summary(self.lb.stats()))

        broken = [c for c in streams.clients if ended(c)]
        alive = [c for c in streams.clients if not ended(c)]
        self.assertEqual(len(broken), on["echo1"], "streams ended: %d, on echo1: %d"
                         % (len(broken), on["echo1"]))
        self.assertEqual(len(alive), on["echo2"])
        for c in broken:
            assert_same(self, bytes(c["recv"]), bytes(c["sent"][:len(c["recv"])]),
                        "stream %d, on the killed instance (prefix)" % c["i"])
        streams.stop_sending(half_close=True)
        streams.pump(lambda: all(c["eof"] or c["reset"] for c in alive), what="EOF on echo2's")
        for c in alive:
            self.assertIsNone(c["reset"], "stream %d on echo2 was reset" % c["i"])
            assert_same(self, bytes(c["recv"]), bytes(c["sent"]),
                        "stream %d, on the survivor" % c["i"])
        self.stop_clean(self.echo2)

    def test_stopped_instance_is_marked_down_by_the_echo_check(self):
        self.echo1.send_signal(signal.SIGSTOP)
        self.addCleanup(self.echo1.send_signal, signal.SIGCONT)
        # The kernel still completes handshakes for the stopped process: a
        # connect check would keep it UP. The echo gets no answer in time.
        st = self.lb.wait_state({"echo1": ("DOWN", "L7TOUT"), "echo2": ("UP", "L7OK")})
        probe = self.echo1.connect(timeout=5)
        probe.close()
        before = count(st, "stot")
        self.echo_one_by_one(8)
        after = count(self.lb.stats(), "stot")
        self.assertEqual(after["echo1"], before["echo1"], summary(self.lb.stats()))
        self.assertEqual(after["echo2"] - before["echo2"], 8, summary(self.lb.stats()))

        self.echo1.send_signal(signal.SIGCONT)
        st = self.lb.wait_state({"echo1": ("UP", "L7OK"), "echo2": ("UP", "L7OK")})
        self.lb.wait_log("Server %s/echo1 is UP" % BACKEND)
        before = count(st, "stot")
        self.echo_one_by_one(8)
        after = count(self.lb.stats(), "stot")
        self.assertGreater(after["echo1"], before["echo1"],
                           "echo1 back UP but given nothing: %s" % summary(self.lb.stats()))
        self.stop_clean(self.echo1)
        self.stop_clean(self.echo2)


if __name__ == "__main__":
    unittest.main()
