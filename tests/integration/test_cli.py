# SPDX-License-Identifier: MIT
"""Command line: -V, -h, usage errors, -l, -v, IPv6, bind failure, io_uring unavailable."""

import os
import re
import socket
import tempfile
import time
import unittest

import harness
from harness import (EX_UNAVAILABLE, EX_USAGE, DaemonTestCase, free_port, run_daemon,
                     write_config)

harness.exit_77_unless_io_uring()


class InfoOptionsTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        harness.require_binary()

    def test_version(self):
        for flag in ("-V", "--version"):
            with self.subTest(flag=flag):
                r = run_daemon([flag])
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertRegex(r.stdout, r"^ringechod \S+\n?$")

    def test_help(self):
        for flag in ("-h", "--help"):
            with self.subTest(flag=flag):
                r = run_daemon([flag])
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertRegex(r.stdout, r"(?i)usage")
                for opt in ("--config", "--listen", "--test-config", "--verbose", "--version",
                            "--help"):
                    self.assertIn(opt, r.stdout)

    def assert_usage_error(self, args, mention=None):
        r = run_daemon(args)
        log = "args %r\nstdout:\n%s\nstderr:\n%s" % (args, r.stdout, r.stderr)
        self.assertEqual(r.returncode, EX_USAGE, log)
        self.assertRegex(r.stderr, r"\nTry 'ringechod --help'\.\n$", log)
        self.assertNotIn("--verbose", r.stderr, "a usage error prints the whole help")
        self.assertNotIn("listening on", r.stderr)
        if mention is not None:
            self.assertIn(mention, r.stderr, log)

    def test_unknown_option(self):
        self.assert_usage_error(["--bogus"], "bogus")
        self.assert_usage_error(["-x"])

    def test_missing_argument(self):
        self.assert_usage_error(["-c"])
        self.assert_usage_error(["-l"])
        self.assert_usage_error(["--listen"])

    def test_bad_listen_option(self):
        for addr in ("foo", "127.0.0.1", "127.0.0.1:70000", "1.2.3:80", "[::1]", "::1:80",
                     "localhost:80", "127.0.0.1:-1"):
            with self.subTest(addr=addr):
                self.assert_usage_error(["-l", addr], addr)

    def test_unexpected_argument(self):
        self.assert_usage_error(["stray-argument"])


class ListenOptionTest(DaemonTestCase):

    def test_listen_option_overrides_file(self):
        file_port = free_port()
        d = self.start(port=file_port, args=["-l", "127.0.0.1:0"])
        self.assertEqual(len(d.listeners), 1, d.log_text())
        self.assertEqual(d.addr[0], "127.0.0.1")
        self.assertNotEqual(d.port, file_port)
        self.assertTrue(harness.connection_refused("127.0.0.1", file_port),
                        "the file's listen address is served despite -l")
        s = self.client(d)
        self.assertEqual(harness.echo_roundtrip(s, b"via -l"), b"via -l")
        s.close()
        self.assertEqual(d.stop(), 0)

    def test_listen_option_repeatable(self):
        d = self.start(args=["-l", "127.0.0.1:0", "--listen", "127.0.0.1:0"])
        self.assertEqual(len(d.listeners), 2, d.log_text())
        self.assertNotEqual(d.listeners[0][1], d.listeners[1][1])
        for i in range(2):
            s = self.client(d, i)
            self.assertEqual(harness.echo_roundtrip(s, b"listener %d" % i), b"listener %d" % i)
            s.close()
        self.assertEqual(d.stop(), 0)

    def test_ipv6_listener(self):
        if not harness.ipv6_available():
            self.skipTest("no IPv6 loopback")
        d = self.start(args=["-l", "[::1]:0"])
        d.wait_log(r"^<5>listening on \[::1\]:\d+$")
        self.assertEqual(d.addr[0], "::1")
        s = self.client(d)
        self.assertEqual(s.family, socket.AF_INET6)
        data = harness.random_bytes(300000, seed=6)
        harness.assert_same(self, harness.echo_roundtrip(s, data), data)
        s.shutdown(socket.SHUT_WR)
        self.assertEqual(harness.recv_until_eof(s), b"")
        s.close()
        self.assertEqual(d.stop(), 0)

    def test_ipv6_in_config_file(self):
        if not harness.ipv6_available():
            self.skipTest("no IPv6 loopback")
        d = self.start(config={"listen": ["[::1]:0", "127.0.0.1:0"]})
        self.assertEqual(sorted(h for h, p in d.listeners), ["127.0.0.1", "::1"])
        for i in range(2):
            s = self.client(d, i)
            self.assertEqual(harness.echo_roundtrip(s, b"both"), b"both")
            s.close()
        self.assertEqual(d.stop(), 0)

    def test_cannot_bind_exits_1(self):
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen(1)
            port = busy.getsockname()[1]
            d = self.start(args=["-l", "127.0.0.1:%d" % port], ready=False)
            rc = d.wait_exit()
            self.assertEqual(rc, 1, d.log_text())
            d.wait_log(r"^<3>cannot listen on 127\.0\.0\.1:%d: Address already in use "
                       r"\(another program, or another ringechod, is listening there\)$" % port,
                       timeout=1)

    def test_ready_line_and_port_zero_logged(self):
        d = self.start()
        self.assertNotEqual(d.port, 0)
        lines = d.log_text().splitlines()
        for line in lines:
            self.assertRegex(line, r"^<[0-7]>\S", "every log line carries a priority prefix")
        self.assertEqual(d.stop(), 0)


class LogLevelTest(DaemonTestCase):

    def test_log_level_error_is_quiet(self):
        port = free_port()
        d = self.start({"log_level": "error"}, port=port, ready=False)
        # No ready line at this level: poll until it serves.
        deadline = time.monotonic() + harness.START_TIMEOUT
        while True:
            try:
                s = harness.connect("127.0.0.1", port)
                break
            except ConnectionRefusedError:
                d.assert_running()
                if time.monotonic() > deadline:
                    d.fail("never served on port %d" % port)
                time.sleep(0.05)
        self.assertEqual(harness.echo_roundtrip(s, b"quiet"), b"quiet")
        s.close()
        self.assertEqual(d.stop(), 0)
        chatty = [l for l in d.lines if not re.match(r"<[0-3]>", l)]
        self.assertEqual(chatty, [], "lines below error at log_level error")

    def test_verbose_overrides_file(self):
        d = self.start({"log_level": "error"}, args=["-v"])  # ready (notice) shows up
        s = self.client(d)
        self.assertEqual(harness.echo_roundtrip(s, b"verbose"), b"verbose")
        s.close()
        self.assertEqual(d.stop(), 0)
        self.assertTrue(any(l.startswith("<7>") for l in d.lines),
                        "no debug line with -v:\n" + d.log_text())

    def test_info_has_nothing_per_message(self):
        d = self.start({"log_level": "info"})
        mark = d.log_mark()
        s = self.client(d)
        for i in range(200):
            self.assertEqual(harness.echo_roundtrip(s, b"m%d" % i), b"m%d" % i)
        s.close()
        self.assertEqual(d.stop(), 0)
        # Start-up and shutdown lines aside, 200 messages must not produce ~200 lines.
        self.assertLess(len(d.lines) - mark, 20, d.log_text())


class DefaultConfigTest(DaemonTestCase):

    def test_builtin_defaults_without_default_file(self):
        if os.path.exists("/etc/ringecho/ringechod.conf"):
            self.skipTest("/etc/ringecho/ringechod.conf exists on this machine")
        d = self.start(args=["-l", "127.0.0.1:0"], no_config=True)
        self.assertNotIn("-c", d.cmd)
        s = self.client(d)
        self.assertEqual(harness.echo_roundtrip(s, b"defaults"), b"defaults")
        s.close()
        self.assertEqual(d.stop(), 0)


class NoUringTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        harness.require_binary()

    def test_io_uring_unavailable_exits_69(self):
        wrapper = harness.no_uring_wrapper()
        if wrapper is None:
            self.skipTest("RINGECHO_NO_URING wrapper not available")
        with tempfile.TemporaryDirectory() as tmp:
            port = free_port()
            conf = write_config({"listen": ["127.0.0.1:%d" % port]},
                                path=os.path.join(tmp, "r.conf"))
            r = run_daemon(["-c", conf], wrapper=wrapper)
        log = "stderr:\n" + r.stderr
        self.assertEqual(r.returncode, EX_UNAVAILABLE, log)
        errors = [l for l in r.stderr.splitlines() if re.match(r"<[0-3]>", l)]
        self.assertEqual(len(errors), 1, "expected one clear error line; " + log)
        self.assertIn("io_uring", errors[0], log)
        self.assertNotIn("ready", r.stderr)
        self.assertTrue(harness.connection_refused("127.0.0.1", port))


if __name__ == "__main__":
    unittest.main()
