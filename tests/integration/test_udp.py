# SPDX-License-Identifier: MIT
"""UDP echo (RFC 862): exact or nothing, from the address asked, and safe.

Every datagram comes back byte-exact in one datagram, from the address it
was sent to (a client whose UDP socket is connected to 127.0.0.2 hears the
reply of a daemon on 0.0.0.0), or not at all: too large, from a privileged
source port, from the daemon's own port, or over the per-address rate.
"""

import os
import shutil
import signal
import socket
import time
import unittest

import harness
from harness import CheckedTestCase, write_config

harness.exit_77_unless_io_uring()

TIMEOUT = 5.0


def udp_client(host, port, source=None, timeout=TIMEOUT):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    if source:
        s.bind(source)
    s.connect((host, port))
    return s


def ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def no_reply(sock, timeout=0.5):
    """True when nothing comes back within timeout."""
    sock.settimeout(timeout)
    try:
        sock.recv(70000)
    except socket.timeout:
        return True
    return False


class UdpCase(CheckedTestCase):

    def start_udp(self, settings=None, udp=("127.0.0.1",), **kw):
        """A daemon serving UDP on each host of udp, at one free port."""
        port = harness.free_udp_port()
        conf = {"listen_udp": ["%s:%d" % (h if ":" not in h else "[%s]" % h, port)
                               for h in udp]}
        conf.update(settings or {})
        d = self.start(conf, **kw)
        d.udp_port = port
        return d

    def echo(self, sock, data):
        sock.send(data)
        got = sock.recv(70000)
        harness.assert_same(self, got, data, "datagram of %d bytes" % len(data))


class ExactTest(UdpCase):

    SIZES = (0, 1, 2, 255, 256, 1400, 1472, 1473, 4096, 16384, 65000)

    def test_every_size_and_byte_value_ipv4(self):
        d = self.start_udp()
        s = udp_client("127.0.0.1", d.udp_port)
        for n in self.SIZES + (65507,):
            self.echo(s, bytes(i % 256 for i in range(n)))
        self.echo(s, bytes(range(256)))
        for seed in range(20):
            self.echo(s, harness.random_bytes(seed * 997, seed))
        st = d.stats()
        self.assertEqual(st["udp_datagrams"], len(self.SIZES) + 1 + 1 + 20)
        self.stop_clean(d)

    def test_every_size_ipv6(self):
        if not ipv6_loopback():
            self.skipTest("no IPv6 loopback here")
        d = self.start_udp(udp=("::1",))
        s = udp_client("::1", d.udp_port)
        for n in self.SIZES + (65527,):
            self.echo(s, harness.random_bytes(n, n))
        self.stop_clean(d)

    def test_too_large_is_dropped_not_cut(self):
        d = self.start_udp({"udp_max_datagram": 1000})
        s = udp_client("127.0.0.1", d.udp_port)
        self.echo(s, b"x" * 1000)
        s.send(b"y" * 1001)
        self.assertTrue(no_reply(s), "a datagram over udp_max_datagram came back")
        self.echo(s, b"z" * 10)
        self.assertEqual(d.stats()["udp_dropped_truncated"], 1)
        d.wait_log(r"^<4>udp: no reply to a datagram from 127\.0\.0\.1:\d+: larger than "
                   r"udp_max_datagram \(1000 bytes\)")
        self.stop_clean(d)

    def test_burst_all_echoed(self):
        d = self.start_udp()
        s = udp_client("127.0.0.1", d.udp_port)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sent = [harness.random_bytes(512, i) for i in range(100)]
        for p in sent:  # within the default burst of 1000
            s.send(p)
        got = sorted(s.recv(70000) for _ in sent)
        self.assertEqual(got, sorted(sent))
        self.stop_clean(d)


class SourceAddressTest(UdpCase):

    def test_wildcard_answers_from_the_address_asked(self):
        d = self.start_udp(udp=("0.0.0.0",))
        for host in ("127.0.0.1", "127.0.0.2", "127.0.0.3"):
            # A connected socket takes datagrams from its peer only.
            s = udp_client(host, d.udp_port)
            self.echo(s, b"to " + host.encode())
            s.close()
        self.stop_clean(d)

    def test_tcp_and_udp_on_one_port(self):
        port = harness.free_tcp_udp_port()
        d = self.start({"listen": ["127.0.0.1:%d" % port],
                        "listen_udp": ["127.0.0.1:%d" % port]}, port=port)
        t = self.client(d)
        self.assertEqual(harness.echo_roundtrip(t, b"tcp"), b"tcp")
        u = udp_client("127.0.0.1", port)
        self.echo(u, b"udp")
        self.stop_clean(d)

    def test_command_line_replaces_listen_udp(self):
        port = harness.free_udp_port()
        d = self.start({"listen_udp": ["127.0.0.1:1"]}, args=["-u", "127.0.0.1:%d" % port])
        self.assertFalse(d.find_log(r"udp 127\.0\.0\.1:1$"))
        self.echo(udp_client("127.0.0.1", port), b"-u")
        self.stop_clean(d)


class DefenceTest(UdpCase):

    def test_privileged_source_port_gets_no_reply(self):
        if os.geteuid() != 0:
            self.skipTest("binding a source port below 1024 needs root")
        d = self.start_udp()
        low = None
        for port in range(1000, 1023):
            try:
                low = udp_client("127.0.0.1", d.udp_port, source=("127.0.0.1", port))
                break
            except OSError:
                continue
        if low is None:
            self.skipTest("no free source port below 1024")
        low.send(b"spoofed reflection")
        self.assertTrue(no_reply(low))
        self.echo(udp_client("127.0.0.1", d.udp_port), b"ordinary client")
        self.assertEqual(d.stats()["udp_dropped_low_port"], 1)
        d.wait_log(r"^<4>udp: no reply to a datagram from 127\.0\.0\.1:%d: its source "
                   r"port is below udp_min_source_port \(1024\)" % low.getsockname()[1])
        self.stop_clean(d)

    def test_no_reply_to_our_own_port(self):
        # Two echo services bouncing a datagram for ever (CVE-1999-0103,
        # "Loop DoS"): a datagram from the daemon's own port gets nothing.
        d = self.start_udp({"udp_min_source_port": 0})
        s = udp_client("127.0.0.1", d.udp_port, source=("127.0.0.2", d.udp_port))
        s.send(b"ping from an echo service")
        self.assertTrue(no_reply(s))
        # Served after it by the same socket: it has been judged by then.
        self.echo(udp_client("127.0.0.1", d.udp_port), b"ordinary client")
        self.assertEqual(d.stats()["udp_dropped_loop"], 1)
        self.stop_clean(d)

    def test_rate_limit_per_address_others_served(self):
        d = self.start_udp({"udp_max_rate_per_ip": 50})
        # Two client addresses (a loopback client's source is 127.0.0.1
        # unless it binds another).
        noisy = udp_client("127.0.0.1", d.udp_port, source=("127.0.0.2", 0))
        noisy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        quiet = udp_client("127.0.0.1", d.udp_port, source=("127.0.0.3", 0))
        sent = 150  # few enough for the daemon's socket buffer to hold
        t0 = time.monotonic()
        for i in range(sent):
            noisy.send(b"%d" % i)
        # The other address is served meanwhile, whatever the noisy one does.
        for i in range(20):
            self.echo(quiet, b"quiet %d" % i)
        elapsed = time.monotonic() - t0
        replies = 0
        noisy.settimeout(0.5)
        try:
            while True:
                noisy.recv(100)
                replies += 1
        except socket.timeout:
            pass
        # The burst (50) plus what 50 a second refills meanwhile.
        allowed = 50 + 50 * (elapsed + 0.5) + 5
        self.assertGreaterEqual(replies, 50)
        self.assertLessEqual(replies, allowed)
        st = d.stats()
        self.assertEqual(st["udp_dropped_rate"], sent - replies)
        d.wait_log(r"^<4>udp: no reply to a datagram from 127\.0\.0\.2:\d+: over "
                   r"udp_max_rate_per_ip \(50 replies a second\)")
        # A second later the bucket has refilled.
        time.sleep(1.1)
        noisy.settimeout(TIMEOUT)
        self.echo(noisy, b"later")
        self.stop_clean(d)


class ReloadAndActivationTest(UdpCase):

    def test_reload_adds_and_removes_udp_sockets(self):
        a, b = harness.free_udp_port(), harness.free_udp_port()
        d = self.start({"listen_udp": ["127.0.0.1:%d" % a]})
        self.echo(udp_client("127.0.0.1", a), b"a")
        conf = dict(d.settings, listen_udp=["127.0.0.1:%d" % b])
        write_config(conf, path=d.conf)
        mark = d.log_mark()
        d.send_signal(signal.SIGHUP)
        d.wait_log(r"^<5>reloaded configuration", start=mark)
        d.wait_log(r"^<5>stopped listening on udp 127\.0\.0\.1:%d$" % a, start=mark)
        self.echo(udp_client("127.0.0.1", b), b"b")
        s = udp_client("127.0.0.1", a)
        try:
            s.send(b"gone")
            self.assertTrue(no_reply(s))
        except ConnectionRefusedError:
            pass
        # The port is free again at once.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", a))
        self.stop_clean(d)

    def test_socket_activation_datagram(self):
        activate = shutil.which("systemd-socket-activate")
        if not activate:
            self.skipTest("systemd-socket-activate not installed")
        port = harness.free_udp_port()
        d = self.start({"listen": ["127.0.0.1:1"]}, ready=False, forward_env="-E",
                       wrapper=[activate, "--datagram", "-l", "127.0.0.1:%d" % port])
        # The wrapper binds, waits for the first datagram, then runs the
        # daemon, which finds that datagram in the socket.
        d.wait_log(r"^Listening on 127\.0\.0\.1:%d as " % port)
        s = udp_client("127.0.0.1", port)
        s.send(b"the first, which starts the daemon")
        d.wait_log(r"^<5>listening on udp 127\.0\.0\.1:%d \(from systemd" % port)
        d.wait_log(r"^<5>ready: 1 listener")
        self.assertEqual(s.recv(100), b"the first, which starts the daemon")
        self.echo(s, b"activated")
        self.stop_clean(d)


class LongRunTest(UdpCase):

    def test_fds_and_memory_flat(self):
        d = self.start_udp({"udp_max_rate_per_ip": 0}, asan_options="quarantine_size_mb=1")
        clients = [udp_client("127.0.0.1", d.udp_port) for _ in range(8)]
        payload = harness.random_bytes(1200, 1)

        def round_trip(n):
            for _ in range(n):
                for c in clients:
                    c.send(payload)
                for c in clients:
                    self.assertEqual(c.recv(2000), payload)

        round_trip(500)
        fds, rss = d.fd_count(), d.rss()
        round_trip(2500)  # 20,000 more datagrams
        self.assertEqual(d.fd_count(), fds)
        self.assertLess(d.rss() - rss, 1 << 20, "memory grows with datagrams")
        self.assertEqual(d.stats()["udp_datagrams"], 8 * 3000)
        self.stop_clean(d)


if __name__ == "__main__":
    unittest.main()
