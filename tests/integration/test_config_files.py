# SPDX-License-Identifier: MIT
"""Hostile config files: never a crash, a hang, an overflow or a silent change.

Each file below once killed, hung or fooled the daemon (libconfig 1.5 read
the files itself).  Each is tried three ways: `-t`, a start, and a SIGHUP to a
running daemon, which must keep serving with its old configuration, answer
signals, and log one clear line naming the file and line.
"""

import os
import re
import shutil
import signal
import tempfile
import time
import unittest

import harness
from harness import EX_CONFIG, CheckedTestCase, run_daemon, write_config

harness.exit_77_unless_io_uring()

RELOADED = r"^<5>reloaded configuration from "
RELOAD_FAILED = r"^<4>reload failed; keeping the old configuration$"


class HostileFiles(CheckedTestCase):
    """Files made in a private directory; the daemon's main config lives there."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="ringechod-files-")
        self.addCleanup(shutil.rmtree, self.dir, True)

    def path(self, name):
        return os.path.join(self.dir, name)

    def put(self, name, text):
        return write_config(text, path=self.path(name))

    def fifo(self, name="fifo"):
        p = self.path(name)
        os.mkfifo(p)
        return p

    def check(self, main, *needles):
        """-t on main: exit 78, each needle in stderr, and the summary line."""
        r = run_daemon(["-t", "-c", main], timeout=20)
        out = "exit %s\n%s" % (r.returncode, r.stderr)
        self.assertEqual(r.returncode, EX_CONFIG, out)
        for n in needles:
            self.assertRegex(r.stderr, n, out)
        self.assertRegex(r.stderr, r"<3>1 error in %s\n$" % re.escape(main), out)
        return r

    def running(self, **kw):
        """A daemon whose config file a test rewrites, and a client of it."""
        main = self.put("main.conf", harness.config_text(
            {"listen": ["127.0.0.1:0"], "max_connections": 100}))
        d = self.start(conf_path=main, **kw)
        s = self.client(d)
        self.assertEqual(harness.echo_roundtrip(s, b"before"), b"before")
        return d, s, main

    def reload_fails(self, d, s, *needles):
        mark = d.log_mark()
        d.send_signal(signal.SIGHUP)
        d.wait_log(RELOAD_FAILED, timeout=20, start=mark)
        for n in needles:
            d.wait_log(n, timeout=1, start=mark)
        # Still the old config, still serving, still answering signals.
        self.assertEqual(harness.echo_roundtrip(s, b"after"), b"after")
        self.assertEqual(d.stats()["connections"], 1)

    # -- files that are not files ---------------------------------------------

    def test_include_of_a_directory_or_empty_name(self):
        os.mkdir(self.path("sub"))
        for inc, needle in (("sub", r'@include "sub" \(.*/sub\): not a regular file '
                                    r'\(it is a directory\)'),
                            ("", r'@include "": an empty file name')):
            with self.subTest(include=inc):
                main = self.put("main.conf", 'backlog = 5;\n@include "%s"\n' % inc)
                self.check(main, r"main\.conf:2: " + needle)
        d, s, main = self.running()
        for inc in ("sub", ""):
            self.put("main.conf", '@include "%s"\n' % inc)
            self.reload_fails(d, s, r"^<3>.*main\.conf:1: @include")
        self.stop_clean(d)

    def test_fifo_as_config_or_include(self):
        fifo = self.fifo()
        self.check(fifo, r"cannot read config .*fifo: not a regular file \(it is a FIFO\)")
        main = self.put("main.conf", '@include "fifo"\n')
        self.check(main, r"main\.conf:1: @include \"fifo\" \(.*/fifo\): not a regular file \(it is a FIFO\)")
        # A running daemon must not block on it: SIGTERM still works after.
        d, s, main = self.running()
        self.put("main.conf", '@include "fifo"\n')
        self.reload_fails(d, s, r"not a regular file \(it is a FIFO\)")
        os.replace(fifo, main)
        self.reload_fails(d, s, r"cannot read config .*main\.conf: not a regular file")
        self.stop_clean(d)

    def test_device_is_not_an_empty_config(self):
        self.check("/dev/zero", r"not a regular file \(it is a character device\)")
        main = self.put("main.conf", '@include "/dev/null"\n')
        self.check(main, r"main\.conf:1: @include \"/dev/null\": not a regular file")

    # -- limits ---------------------------------------------------------------

    def test_size_and_fan_out_limits(self):
        self.put("half.conf", "#" * (129 * 1024) + "\n")
        main = self.put("main.conf", '@include "half.conf"\n@include "half.conf"\n')
        self.check(main, r"main\.conf:2: .*larger than 256 KiB")
        self.put("empty.conf", "")
        main = self.put("main.conf", '@include "empty.conf"\n' * 101)
        self.check(main, r"main\.conf:101: .*more than 100 @include'd files")
        main = self.put("main.conf", '@include "main.conf"\n')
        self.check(main, r"more than 10 deep \(does one include itself\?\)")
        # Many keys: refused at once, not parsed for seconds.
        text = "".join("g%d = { %s };\n" % (g, " ".join("k%d = 1;" % i for i in range(300)))
                       for g in range(3))
        main = self.put("main.conf", text)
        t0 = time.monotonic()
        self.check(main, r"more than 256 settings in one group")
        self.assertLess(time.monotonic() - t0, 10)

    def test_reload_of_a_huge_file_is_refused_quickly(self):
        d, s, main = self.running()
        self.put("main.conf", "".join("k%d = 1;\n" % i for i in range(40000)))
        self.reload_fails(d, s, r"larger than 256 KiB")
        self.stop_clean(d)

    # -- numbers and paths ------------------------------------------------------

    def test_32_bit_wrap_through_an_include(self):
        self.put("val.conf", "4294967297\n")
        main = self.put("main.conf", "max_connections =\n@include \"val.conf\"\n;\n")
        # The setting is where its name is.
        self.check(main, r"main\.conf:1: 'max_connections' = 4294967297 is out of range")
        self.put("val.conf", "max_connections = 0x100000001;\n")
        main = self.put("main.conf", '@include "val.conf"\n')
        self.check(main, r"val\.conf:1: 'max_connections' = 4294967297 is out of range")

    def test_absolute_include_is_read_where_it_is(self):
        other = tempfile.mkdtemp(prefix="ringechod-abs-")
        self.addCleanup(shutil.rmtree, other, True)
        inc = write_config("max_connections = 77;\n", path=os.path.join(other, "x.conf"))
        main = self.put("main.conf", 'listen = ["127.0.0.1:0"];\n@include "%s"\n' % inc)
        r = run_daemon(["-t", "-c", main])
        self.assertEqual(r.returncode, 0, r.stderr)
        d = self.start(conf_path=main)
        self.assertEqual(d.stats()["connections"], 0)
        self.stop_clean(d)

    def test_long_paths_and_many_errors_do_not_overflow(self):
        # A path longer than an error message, 20 errors: each message cut
        # to fit (this overflowed a stack buffer under ASan before).
        deep = self.dir
        for c in "abc":
            deep = os.path.join(deep, c * 200)
            os.mkdir(deep)
        main = write_config("".join("unknown%d = 1;\n" % i for i in range(20)),
                            path=os.path.join(deep, "x.conf"))
        r = run_daemon(["-t", "-c", main])
        self.assertEqual(r.returncode, EX_CONFIG, r.stderr)
        self.assertNotRegex(r.stderr, harness.SANITIZER_RE)
        self.assertRegex(r.stderr, r"\.\.\. and 4 more\n")
        self.assertRegex(r.stderr, r"<3>20 errors in ")

    # -- libconfig's leak on a syntax error ---------------------------------------

    def test_failed_reloads_do_not_grow_memory(self):
        # A small quarantine, so that RSS under ASan measures live memory.
        d, s, main = self.running(asan_options="quarantine_size_mb=1")
        self.put("main.conf", '"a stray string that libconfig would leak"\n')
        self.reload_fails(d, s, r"expected a setting name, found a string")
        def reloads(n):
            for _ in range(n):  # one at a time: pending signals coalesce
                mark = d.log_mark()
                d.send_signal(signal.SIGHUP)
                d.wait_log(RELOAD_FAILED, timeout=20, start=mark)

        reloads(300)  # warm up the allocator (and ASan's small quarantine)
        base = d.rss()
        reloads(1000)
        # libconfig alone leaked 64 B or more on each: 80 KiB measured.
        self.assertLess(d.rss() - base, 24 * 1024, "memory grows with failed reloads")
        self.assertEqual(harness.echo_roundtrip(s, b"after"), b"after")
        self.stop_clean(d)


if __name__ == "__main__":
    unittest.main()
