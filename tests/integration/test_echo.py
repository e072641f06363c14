# SPDX-License-Identifier: MIT
"""Echo semantics: byte-exact, any content, any size, from nc and telnet;
a half-close gets every byte back, then a clean EOF."""

import os
import random
import socket
import subprocess
import tempfile
import threading
import unittest

import harness
from harness import (MiB, DaemonTestCase, assert_same, duplex, random_bytes, recv_exact,
                     recv_until_eof)

harness.exit_77_unless_io_uring()


class EchoTest(DaemonTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.d = harness.Daemon()
        try:
            cls.d.wait_ready()
        except BaseException:
            cls.d.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        d = cls.d
        rc = d.stop()
        d.cleanup()
        if rc != 0:
            raise AssertionError("daemon exited %s after the echo tests:\n%s" % (rc, d.log_text()))

    def setUp(self):
        self.d.assert_running()

    def test_basic_echo(self):
        s = self.client(self.d)
        s.sendall(b"hello, ringechod\n")
        self.assertEqual(recv_exact(s, 17), b"hello, ringechod\n")
        s.sendall(b"x")
        self.assertEqual(recv_exact(s, 1), b"x")

    def test_binary_bytes_verbatim(self):
        s = self.client(self.d)
        payloads = [
            bytes(range(256)),
            bytes(range(255, -1, -1)) * 16,
            b"\x00" * 5000,
            b"\xff" * 5000,
            # telnet IAC WILL ECHO, IAC DO SGA, IAC IAC, IAC IP, IAC AYT, CR NUL, CR LF
            b"\xff\xfb\x01\xff\xfd\x03\xff\xff\xff\xf4\xff\xf6\r\x00\r\n",
            b"\xff\xfa\x18\x01\xff\xf0" b"\x1b[2J\x04\x03\x1a\x7f\x80\xfe",
            random_bytes(100000, seed=2),
        ]
        for p in payloads:
            with self.subTest(size=len(p), head=p[:8]):
                assert_same(self, harness.echo_roundtrip(s, p), p)
        # Everything at once as well: no interpretation across write boundaries.
        allp = b"".join(payloads)
        assert_same(self, harness.echo_roundtrip(s, allp), allp)

    def test_nc_session(self):
        data = random_bytes(MiB, seed=3) + b"\x00\xff\xff\xfb\x01 last line\n"
        with tempfile.NamedTemporaryFile() as f:
            f.write(data)
            f.flush()
            f.seek(0)
            r = subprocess.run(["nc", "-N", "127.0.0.1", str(self.d.port)], stdin=f,
                               capture_output=True, timeout=harness.IO_TIMEOUT)
        self.assertEqual(r.returncode, 0, r.stderr)
        assert_same(self, r.stdout, data, "nc output")

    def test_telnet_session(self):
        p = subprocess.Popen(["telnet", "127.0.0.1", str(self.d.port)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.addCleanup(p.stderr.close)
        self.addCleanup(p.stdout.close)
        self.addCleanup(lambda: p.poll() is None and p.kill())
        line = b"hello telnet %d" % os.getpid()
        p.stdin.write(line + b"\n")
        p.stdin.flush()
        out = bytearray()
        done = threading.Event()

        def reader():
            while line not in out.split(b"Escape character", 1)[-1]:
                b = os.read(p.stdout.fileno(), 4096)
                if not b:
                    break
                out.extend(b)
            done.set()
        threading.Thread(target=reader, daemon=True).start()
        ok = done.wait(harness.IO_TIMEOUT)
        p.stdin.close()
        p.wait(harness.IO_TIMEOUT)
        self.assertTrue(ok, "telnet never printed the echo; output: %r" % bytes(out))
        self.assertIn(b"Connected to 127.0.0.1", out)
        echoed = out.split(b"Escape character", 1)[-1]
        self.assertIn(line, echoed, "telnet output: %r" % bytes(out))

    def test_duplex_32mib(self):
        data = random_bytes(32 * MiB, seed=32)
        s = self.client(self.d)
        got = duplex([s], [data], timeout=300, chunk=256 * 1024)[0]
        self.assertEqual(harness.sha256(got), harness.sha256(data))
        assert_same(self, got, data)

    def test_half_close_small(self):
        s = self.client(self.d)
        s.sendall(b"half-close me\x00\xff")
        s.shutdown(socket.SHUT_WR)
        # recv_until_eof raises ConnectionResetError on an RST: that is a failure.
        self.assertEqual(recv_until_eof(s), b"half-close me\x00\xff")

    def test_half_close_immediately(self):
        s = self.client(self.d)
        s.shutdown(socket.SHUT_WR)
        self.assertEqual(recv_until_eof(s), b"")

    def test_half_close_large_in_flight(self):
        data = random_bytes(16 * MiB, seed=16)
        s = self.client(self.d)
        result = {}

        def sender():
            try:
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
                result["ok"] = True
            except OSError as e:
                result["error"] = e
        t = threading.Thread(target=sender, daemon=True)
        t.start()
        try:
            got = recv_until_eof(s, timeout=300)
        except ConnectionResetError:
            self.d.fail("RST instead of the echo and a FIN")
        t.join(harness.IO_TIMEOUT)
        self.assertEqual(result.get("ok"), True, result)
        assert_same(self, got, data)

    def test_half_close_duplex_many(self):
        # Ten clients, each half-closes right after its last byte while echo is in flight.
        socks = [self.client(self.d) for _ in range(10)]
        payloads = [random_bytes(random.Random(i).randint(1, 2 * MiB), seed=100 + i)
                    for i in range(10)]
        got = duplex(socks, payloads, timeout=300, half_close=True, rng=random.Random(7))
        for i, (g, p) in enumerate(zip(got, payloads)):
            assert_same(self, g, p, "connection %d" % i)

    def test_20000_pipelined_messages(self):
        rng = random.Random(20000)
        msgs = [b"%05d:" % i + bytes(rng.randrange(256) for _ in range(rng.randint(0, 60)))
                for i in range(20000)]
        expected = b"".join(msgs)
        s = self.client(self.d)
        errors = []

        def sender():
            try:
                for m in msgs:
                    s.sendall(m)  # one send per message: many tiny segments
            except OSError as e:
                errors.append(e)
        t = threading.Thread(target=sender, daemon=True)
        t.start()
        got = recv_exact(s, len(expected), timeout=300)
        t.join(harness.IO_TIMEOUT)
        self.assertEqual(errors, [])
        assert_same(self, got, expected)


class MultishotRearmTest(DaemonTestCase):
    """A tiny buffer ring ends multishot receives often; each must be re-armed."""

    def test_long_lived_ping_pong(self):
        d = self.start({"buffer_count": 8, "buffer_size": 256})
        s = self.client(d)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        rng = random.Random(8)
        for i in range(3000):
            msg = random_bytes(rng.randint(1, 1200), seed=i)
            s.sendall(msg)
            got = recv_exact(s, len(msg))
            if got != msg:
                d.fail("round trip %d: echo differs" % i)
        # And a burst far larger than the whole buffer ring (8 x 256 bytes).
        burst = random_bytes(4 * MiB, seed=99)
        assert_same(self, harness.echo_roundtrip(s, burst), burst)
        s.close()
        self.assertEqual(d.stop(), 0)


if __name__ == "__main__":
    unittest.main()
