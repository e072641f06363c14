# SPDX-License-Identifier: MIT
"""Stop then start at once, and reloads that drop and re-add an address.

A listening socket must really be gone when the daemon says it stopped
listening: `systemctl restart`, Restart= after a crash, and any script that
stops then starts bind the same address straight away.  And a reload whose
new address cannot be bound says so, at warning level, and keeps saying so
in STATUS= until a reload applies in full.
"""

import os
import re
import signal
import socket
import tempfile
import time
import unittest

import harness
from harness import CheckedTestCase, free_port, write_config

harness.exit_77_unless_io_uring()

RELOADED = r"^<5>reloaded configuration from "


def wait_for_count(d, regex, n, timeout=harness.IO_TIMEOUT):
    """Wait until the log holds n lines matching regex."""
    deadline = time.monotonic() + timeout
    while len(d.find_log(regex)) < n:
        if time.monotonic() > deadline:
            d.fail("fewer than %d lines matching %r" % (n, regex))
        time.sleep(0.01)


def udp_roundtrip(addr, data):
    """One datagram to addr, and its answer."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(harness.IO_TIMEOUT)
        s.connect(addr)
        s.send(data)
        return s.recv(65536)


class NotifySocket:
    """A unix datagram socket named in NOTIFY_SOCKET: what sd_notify sends."""

    def __init__(self, directory):
        self.path = os.path.join(directory, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.5)
        self.messages = []

    def statuses(self):
        """Every STATUS= received so far."""
        while True:
            try:
                msg = self.sock.recv(4096).decode()
            except (socket.timeout, BlockingIOError):
                break
            self.messages.append(msg)
        return [line[len("STATUS="):] for m in self.messages for line in m.split("\n")
                if line.startswith("STATUS=")]

    def wait_status(self, regex, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [s for s in self.statuses() if re.search(regex, s)]
            if found:
                return found[-1]
        raise AssertionError("no STATUS= matching %r; got %r" % (regex, self.statuses()[-5:]))

    def close(self):
        self.sock.close()


class RestartTest(CheckedTestCase):

    def test_stop_then_start_at_once_20_times(self):
        port = free_port()
        for i in range(20):
            d = self.start({"listen": ["127.0.0.1:%d" % port]}, port=port)
            s = self.client(d)
            self.assertEqual(harness.echo_roundtrip(s, b"round %d" % i), b"round %d" % i)
            s.close()
            self.stop_clean(d)
            # The very next start binds it: nothing of the old one is left.
            with socket.socket() as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError as e:
                    self.fail("round %d: port still bound after exit: %s" % (i, e))

    def test_reload_drops_then_readds_an_address(self):
        keep, flip = free_port(), free_port()
        both = {"listen": ["127.0.0.1:%d" % keep, "127.0.0.1:%d" % flip]}
        one = {"listen": ["127.0.0.1:%d" % keep]}
        d = self.start(both)
        text_one, text_both = harness.config_text(one), harness.config_text(both)
        reloads = 0
        for i in range(100):
            # Removed, then re-added 2 ms later: the second reload binds
            # what the first one closed (it has read its file by then, so
            # the two signals are two reloads).
            mark = d.log_mark()
            write_config(text_one, path=d.conf)
            d.send_signal(signal.SIGHUP)
            d.wait_log(r"^<5>stopped listening on 127\.0\.0\.1:%d$" % flip, start=mark)
            time.sleep(0.002)
            write_config(text_both, path=d.conf)
            d.send_signal(signal.SIGHUP)
            reloads += 2
            d.wait_log(r"^<5>listening on 127\.0\.0\.1:%d|cannot listen" % flip, start=mark)
            wait_for_count(d, r"^<[45]>reload(ed configuration| failed)", reloads)
        bad = d.find_log(r"cannot listen|could not be listened")
        if bad:
            d.fail("a re-added address could not be bound: %s" % bad[0].group(0))
        s = harness.connect("127.0.0.1", flip)
        self.assertEqual(harness.echo_roundtrip(s, b"flip"), b"flip")
        s.close()
        self.stop_clean(d)


class ReloadBindFailureTest(CheckedTestCase):

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="ringechod-notify-")
        self.notify = NotifySocket(self.dir)
        self.addCleanup(self.notify.close)

    def test_unbindable_address_is_reported_until_a_good_reload(self):
        port = free_port()
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        env = dict(os.environ, NOTIFY_SOCKET=self.notify.path)
        d = self.start({"listen": ["127.0.0.1:%d" % port]}, port=port, env=env)
        self.notify.wait_status(r"^0 connections")
        write_config({"listen": ["127.0.0.1:%d" % port, "127.0.0.1:%d" % busy]}, path=d.conf)
        mark = d.log_mark()
        d.send_signal(signal.SIGHUP)
        d.wait_log(r"^<4>reload: cannot listen on 127\.0\.0\.1:%d: Address already in use "
                   r"\(another program" % busy, start=mark)
        d.wait_log(r"^<4>reloaded configuration from .*, but 1 address could not be "
                   r"listened on", start=mark)
        status = self.notify.wait_status(r"last reload incomplete")
        self.assertIn("cannot listen on 127.0.0.1:%d: Address already in use" % busy, status)
        # Still there in the periodic STATUS= lines, until a good reload.
        s = self.client(d)
        self.assertEqual(harness.echo_roundtrip(s, b"x"), b"x")
        self.notify.wait_status(r"^1 connection, .*last reload incomplete")
        taken.close()
        mark = d.log_mark()
        d.send_signal(signal.SIGHUP)
        d.wait_log(RELOADED, start=mark)
        status = self.notify.wait_status(r"^1 connection, .* refused$")
        self.assertNotIn("incomplete", status)
        s2 = harness.connect("127.0.0.1", busy)
        self.assertEqual(harness.echo_roundtrip(s2, b"y"), b"y")
        s2.close()
        self.stop_clean(d)

    def test_moving_to_an_unbindable_address_keeps_the_old_one(self):
        """A reload that moves `listen` (and `listen_udp`) wholly to addresses
        that cannot be bound does not leave the daemon listening nowhere: the
        old sockets are kept, untouched, and the failure is reported."""
        port, uport = free_port(), harness.free_udp_port()
        taken, utaken = socket.socket(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(taken.close)
        self.addCleanup(utaken.close)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        utaken.bind(("127.0.0.1", 0))
        busy, ubusy = taken.getsockname()[1], utaken.getsockname()[1]
        env = dict(os.environ, NOTIFY_SOCKET=self.notify.path)
        d = self.start({"listen": ["127.0.0.1:%d" % port],
                        "listen_udp": ["127.0.0.1:%d" % uport]}, port=port, env=env)
        kept = self.client(d)
        self.assertEqual(harness.echo_roundtrip(kept, b"before"), b"before")
        write_config({"listen": ["127.0.0.1:%d" % busy],
                      "listen_udp": ["127.0.0.1:%d" % ubusy]}, path=d.conf)
        mark = d.log_mark()
        d.send_signal(signal.SIGHUP)
        d.wait_log(r"^<4>reload: no address in 'listen' could be listened on; keeping "
                   r"the old one: 127\.0\.0\.1:%d$" % port, start=mark)
        d.wait_log(r"^<4>reload: no address in 'listen_udp' could be listened on; "
                   r"keeping the old one: 127\.0\.0\.1:%d$" % uport, start=mark)
        # Kept, not closed and opened again: nothing about them was logged.
        self.assertFalse(d.find_log(r"stopped listening|^<5>listening on", start=mark))
        d.wait_log(r"^<4>reloaded configuration from .*, but 2 addresses could not be "
                   r"listened on", start=mark)
        status = self.notify.wait_status(r"last reload incomplete")
        self.assertIn("cannot listen on 127.0.0.1:%d" % busy, status)
        s = harness.connect("127.0.0.1", port)
        self.addCleanup(s.close)
        self.assertEqual(harness.echo_roundtrip(s, b"still here"), b"still here")
        self.assertEqual(harness.echo_roundtrip(kept, b"kept"), b"kept")
        self.assertEqual(udp_roundtrip(("127.0.0.1", uport), b"udp"), b"udp")
        # Once the address is free, the same file applies in full.
        taken.close()
        utaken.close()
        mark = d.log_mark()
        d.send_signal(signal.SIGHUP)
        d.wait_log(RELOADED, start=mark)
        d.wait_log(r"^<5>stopped listening on 127\.0\.0\.1:%d$" % port, start=mark)
        s2 = harness.connect("127.0.0.1", busy)
        self.addCleanup(s2.close)
        self.assertEqual(harness.echo_roundtrip(s2, b"moved"), b"moved")
        self.assertEqual(udp_roundtrip(("127.0.0.1", ubusy), b"moved"), b"moved")
        self.stop_clean(d)

    def test_wildcard_replaces_specific_address_on_its_port(self):
        """127.0.0.1:P -> 0.0.0.0:P -> 127.0.0.1:P: each new address can be
        bound only once the old one is closed, and each reload applies in
        full; the connection made before keeps being served."""
        port = free_port()
        env = dict(os.environ, NOTIFY_SOCKET=self.notify.path)
        d = self.start({"listen": ["127.0.0.1:%d" % port]}, port=port, env=env)
        old = self.client(d)
        for host in ("0.0.0.0", "127.0.0.1"):
            write_config({"listen": ["%s:%d" % (host, port)]}, path=d.conf)
            mark = d.log_mark()
            d.send_signal(signal.SIGHUP)
            d.wait_log(RELOADED, start=mark)
            d.wait_log(r"^<5>listening on %s:%d$" % (re.escape(host), port), start=mark)
            s = harness.connect("127.0.0.1", port)
            self.assertEqual(harness.echo_roundtrip(s, host.encode()), host.encode())
            s.close()
            self.assertEqual(harness.echo_roundtrip(old, b"old"), b"old")
        self.assertNotIn("incomplete", self.notify.wait_status(r"^1 connection"))
        self.stop_clean(d)


if __name__ == "__main__":
    unittest.main()
