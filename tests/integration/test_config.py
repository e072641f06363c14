# SPDX-License-Identifier: MIT
"""Config file errors: exit 78, one clear line naming file:line, key, value,
range; nothing listens.  Broken files of every kind are errors, never
silently wrong values."""

import os
import re
import shutil
import tempfile
import unittest

import harness
from harness import EX_CONFIG, free_port, run_daemon


class ConfigErrorTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        harness.require_binary()

    def setUp(self):
        self.dir = tempfile.TemporaryDirectory(prefix="ringechod-config-")
        self.addCleanup(self.dir.cleanup)
        self.port = free_port()

    def write(self, text, name="ringechod.conf"):
        path = os.path.join(self.dir.name, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def conf(self, *lines):
        """A file whose line 1 is a valid listen and lines 2.. are `lines`."""
        return self.write('listen = ["127.0.0.1:%d"];\n' % self.port + "".join(l + "\n" for l in lines))

    def assert_config_error(self, path, pattern, args=()):
        """Run with -c path: exit 78, exactly one error line matching pattern, nothing listens."""
        r = run_daemon(["-c", path] + list(args))
        log = "stdout:\n%s\nstderr:\n%s" % (r.stdout, r.stderr)
        self.assertEqual(r.returncode, EX_CONFIG, log)
        errors = [l for l in r.stderr.splitlines() if re.match(r"<[0-3]>", l)]
        if "-t" in args:  # -t ends with a count
            self.assertEqual(errors[-1], "<3>1 error in %s" % path, log)
            errors = errors[:-1]
        self.assertEqual(len(errors), 1, "expected one error line; " + log)
        self.assertRegex(errors[0], pattern, log)
        self.assertNotIn("listening on", r.stderr)
        self.assertNotIn("ready", r.stderr)
        self.assertTrue(harness.connection_refused("127.0.0.1", self.port),
                        "something listens on the configured port")
        return errors[0]

    def at(self, path, line):
        return r"^<3>%s:%d: " % (re.escape(path), line)

    # -- syntax ----------------------------------------------------------------

    def test_syntax_error_names_file_and_line(self):
        path = self.conf("backlog = 128;", "max_connections = ;", "buffer_size = 4096;")
        self.assert_config_error(path, self.at(path, 3) + "syntax error")

    def test_syntax_error_missing_semicolon_quote(self):
        path = self.conf('log_level = "info;', "backlog = 1;")
        self.assert_config_error(path, r"^<3>%s:\d+: syntax error" % re.escape(path))

    # -- unknown keys ----------------------------------------------------------

    def test_unknown_key_typo(self):
        path = self.conf("backlog = 128;", "max_conections = 10;")
        self.assert_config_error(path, self.at(path, 3) + re.escape(
            "unknown key 'max_conections' (did you mean 'max_connections'?)") + "$")

    def test_unknown_key_typo_other(self):
        path = self.conf("bufer_size = 4096;")
        self.assert_config_error(path, self.at(path, 2) + re.escape(
            "unknown key 'bufer_size' (did you mean 'buffer_size'?)") + "$")

    def test_unknown_key_unrelated(self):
        path = self.conf("frobnicate = 1;")
        self.assert_config_error(path, self.at(path, 2) + "unknown key 'frobnicate'")

    # -- types -----------------------------------------------------------------

    def test_wrong_type_string_for_integer(self):
        path = self.conf('backlog = "many";')
        self.assert_config_error(path, self.at(path, 2) + re.escape("'backlog' must be an integer") + "$")

    def test_wrong_type_float_for_integer(self):
        path = self.conf("max_connections = 1.5;")
        self.assert_config_error(path, self.at(path, 2) + re.escape("'max_connections' must be an integer"))

    def test_wrong_type_for_bool(self):
        path = self.conf('tcp_nodelay = "yes";')
        self.assert_config_error(path, self.at(path, 2) + "'tcp_nodelay' must be a")

    def test_wrong_type_for_string(self):
        path = self.conf("log_level = 3;")
        self.assert_config_error(path, self.at(path, 2) + "'log_level' must be a")

    # -- ranges ----------------------------------------------------------------

    def test_out_of_range(self):
        cases = [
            ("backlog", "0", "1..65535"),
            ("backlog", "65536", "1..65535"),
            ("max_connections", "0", "1..4194304"),
            ("max_connections_per_ip", "-1", "0..4194304"),
            ("max_pending_bytes", "1024", "4096..1073741824"),
            ("buffer_size", "255", "256..1048576"),
            ("buffer_size", "2097152", "256..1048576"),
            ("buffer_count", "4", "8..32768"),
            ("buffer_count", "65536", "8..32768"),
            ("ring_entries", "65536", "8..32768"),
            ("shutdown_timeout_ms", "3600001", "0..3600000"),
            ("idle_timeout_ms", "86400001", "0..86400000"),
            ("sqpoll_idle_ms", "60001", "0..60000"),
        ]
        for key, value, rng in cases:
            with self.subTest(key=key, value=value):
                path = self.conf("%s = %s;" % (key, value))
                self.assert_config_error(path, self.at(path, 2) + re.escape(
                    "'%s' = %s is out of range (%s)" % (key, value, rng)) + "$")

    def test_bad_log_level_names_value(self):
        path = self.conf('log_level = "loud";')
        line = self.assert_config_error(path, self.at(path, 2) + "'log_level'")
        self.assertIn("loud", line)

    def test_buffer_count_not_power_of_two(self):
        for key, value in (("buffer_count", 1000), ("ring_entries", 12)):
            with self.subTest(key=key):
                path = self.conf("%s = %d;" % (key, value))
                line = self.assert_config_error(path, self.at(path, 2) + "'%s'" % key)
                self.assertIn(str(value), line)
                self.assertRegex(line, r"(?i)power of (two|2)")

    def test_max_pending_below_buffer_size(self):
        path = self.conf("buffer_size = 65536;", "max_pending_bytes = 8192;")
        line = self.assert_config_error(path, r"^<3>%s:[23]: " % re.escape(path))
        self.assertIn("max_pending_bytes", line)
        self.assertIn("8192", line)
        self.assertIn("buffer_size", line)

    # -- addresses -------------------------------------------------------------

    def test_unparsable_listen_addresses(self):
        for addr in ("foo", "127.0.0.1", "127.0.0.1:99999", "127.0.0.1:", "256.0.0.1:80",
                     "1.2.3:80", "[::1]", "::1:80", "[::g]:80", "localhost:80", ""):
            with self.subTest(addr=addr):
                path = self.write('backlog = 16;\nlisten = ["127.0.0.1:%d", "%s"];\n'
                                  % (self.port, addr))
                self.assert_config_error(path, self.at(path, 2) + re.escape(
                    "'listen': cannot parse address '%s' (expected A.B.C.D:PORT, [V6]:PORT or "
                    "[V6%%IFACE]:PORT)"
                    % addr) + "$")

    def test_empty_listen_list(self):
        path = self.write("listen = [];\n")
        self.assert_config_error(path, r"^<3>%s:1: .*'listen'" % re.escape(path))

    def test_missing_explicit_file(self):
        path = os.path.join(self.dir.name, "does-not-exist.conf")
        self.assert_config_error(path, "^" + re.escape(
            "<3>cannot read config %s: No such file or directory" % path) + "$")

    # -- -t --------------------------------------------------------------------

    def test_check_good_file(self):
        path = self.conf("backlog = 128;", "max_connections = 100;", "max_connections_per_ip = 4;",
                         "max_pending_bytes = 65536;", "buffer_size = 2048;", "buffer_count = 64;",
                         "ring_entries = 64;", "tcp_nodelay = false;", 'log_level = "debug";',
                         "shutdown_timeout_ms = 0;", "idle_timeout_ms = 1000;",
                         "sqpoll_idle_ms = 0;", "// a comment", "# another comment")
        for flag in ("-t", "--test-config"):
            with self.subTest(flag=flag):
                r = run_daemon(["-c", path, flag])
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertEqual(r.stdout.strip().splitlines()[-1],
                                 "ringechod: configuration file %s is valid" % path)
                self.assertNotIn("listening on", r.stderr)
                self.assertTrue(harness.connection_refused("127.0.0.1", self.port))

    def test_check_bad_file(self):
        path = self.conf("backlog = 0;")
        line = self.assert_config_error(path, self.at(path, 2), args=["-t"])
        self.assertIn("'backlog' = 0 is out of range (1..65535)", line)

    def test_check_example_config(self):
        src = os.environ.get("RINGECHO_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
        path = os.path.abspath(os.path.join(src, "conf", "ringechod.conf"))
        if not os.path.exists(path):
            self.skipTest("no %s" % path)
        r = run_daemon(["-c", path, "-t"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("ringechod: configuration file %s is valid" % path, r.stdout)
        with open(path) as f:
            text = f.read()
        for key in ("listen", "backlog", "max_connections", "max_connections_per_ip",
                    "max_pending_bytes", "buffer_size", "buffer_count", "ring_entries",
                    "tcp_nodelay", "log_level", "shutdown_timeout_ms", "idle_timeout_ms",
                    "sqpoll_idle_ms"):
            self.assertRegex(text, r"(?m)^\s*(#|//)?\s*%s\s*=" % key,
                             "example config lacks %s" % key)


class BrokenConfigTest(harness.CheckedTestCase):
    """Files broken in every way a hand-edited file can be: exit 78 naming
    the file, never a value other than the one written."""

    def check(self, text, name="c.conf"):
        """-t on a file holding text (bytes or str); the path and the CompletedProcess."""
        tmp = tempfile.mkdtemp(prefix="ringechod-config-")
        self.addCleanup(shutil.rmtree, tmp, True)
        path = os.path.join(tmp, name)
        with open(path, "wb") as f:
            f.write(text if isinstance(text, bytes) else text.encode())
        return path, run_daemon(["-t", "-c", path])

    def start_on_file(self, path):
        """A daemon running with -c path as written (not rewritten by harness)."""
        harness.skip_unless_io_uring(self)
        return self.start(args=("-c", path), no_config=True, ready=False)

    def test_broken_files_are_config_errors(self):
        cases = {
            "directory": None,
            "include of a missing file": '@include "/nonexistent/ringechod-x.conf"\n',
            "duplicate key": "backlog = 5;\nbacklog = 6;\n",
            "non-UTF-8 key": b"\xff\xfe = 1;\n",
            "non-UTF-8 level": b'log_level = "\xff\xfe";\n',
            "non-UTF-8 address": b'listen = ["\xff.0.0.1:7"];\n',
            "listen as a string": 'listen = "127.0.0.1:7777";\n',
            "listen as an empty list": "listen = [];\n",
            "listen as an empty group list": "listen = ();\n",
            "listen of lists": 'listen = ( ["127.0.0.1:7"] );\n',
            "listen as a group": 'listen = { a = "127.0.0.1:7"; };\n',
            "nested group": "limits = { max_connections = 5; };\n",
            "group for an integer": "backlog = { x = 1; };\n",
            "negative": "max_connections = -5;\n",
            "negative per-ip": "max_connections_per_ip = -1;\n",
            "float": "max_connections = 100.0;\n",
            "exponent float": "max_connections = 1e3;\n",
            "bool for integer": "max_connections = true;\n",
            "integer for bool": "tcp_nodelay = 1;\n",
            "integer for level": "log_level = 7;\n",
            "64-bit huge": "max_connections = 9223372036854775807L;\n",
            "saturating decimal": "backlog = 99999999999999999999999;\n",
            "NUL byte": b"backlog = 5;\n\x00\n",
            "port too big": 'listen = ["127.0.0.1:65536"];\n',
            "negative port": 'listen = ["127.0.0.1:-1"];\n',
            "no port": 'listen = ["127.0.0.1"];\n',
            "hostname": 'listen = ["localhost:7"];\n',
        }
        for what, text in cases.items():
            with self.subTest(what):
                if text is None:
                    tmp = tempfile.mkdtemp(prefix="ringechod-adv-")
                    self.addCleanup(os.rmdir, tmp)
                    path, r = tmp, run_daemon(["-t", "-c", tmp])
                else:
                    path, r = self.check(text)
                self.assertEqual(r.returncode, harness.EX_CONFIG,
                                 "%s: exit %s\n%s" % (what, r.returncode, r.stderr))
                self.assertIn(path, r.stderr, "%s: the error does not name the file" % what)
                self.assertRegex(r.stderr, r"^<3>", "%s: not logged as an error" % what)

    def test_empty_file_means_defaults(self):
        path, r = self.check("")
        self.assertEqual(r.returncode, 0, r.stderr)
        path, r = self.check("# only a comment\n\n")
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_integer_beyond_32_bits_is_rejected(self):
        """libconfig 1.5 (Debian 12) reads a decimal or hex literal without
        the L suffix as a 32-bit int and wraps it silently, so that
        `max_connections = 4294967297;` would load as 1: every literal
        beyond 32 bits is an out-of-range error."""
        cases = {
            "max_connections = 4294967297;\n": "4294967297",
            "max_pending_bytes = 4295229440;\n": "4295229440",
            "backlog = 0x100000001;\n": "0x100000001",
            "idle_timeout_ms = 4294967396;\n": "4294967396",
        }
        for text, literal in cases.items():
            with self.subTest(text.strip()):
                path, r = self.check(text)
                self.assertEqual(r.returncode, harness.EX_CONFIG,
                                 "%r was accepted (exit %s): %s%s"
                                 % (text.strip(), r.returncode, r.stdout, r.stderr))

    def test_integer_beyond_32_bits_in_an_included_file_is_rejected(self):
        """The same wrap in a file pulled in with @include (libconfig reads
        that one itself), one and two includes deep; a valid include still
        loads, and its value is the one written."""
        tmp = tempfile.mkdtemp(prefix="ringechod-adv-")
        self.addCleanup(shutil.rmtree, tmp, True)
        os.mkdir(os.path.join(tmp, "sub"))
        files = {
            "wrap.conf": "max_connections = 4294967297;\n",
            "sub/deep.conf": "# deeper\nbacklog =\n  0x100000001;\n",
            "middle.conf": '@include "sub/deep.conf"\n',
            "fine.conf": "max_connections = 5000;\n",
        }
        for name, text in files.items():
            with open(os.path.join(tmp, name), "w") as f:
                f.write(text)
        cases = {"wrap.conf": r"wrap\.conf:1: 'max_connections' = 4294967297 is out of range",
                 "middle.conf": r"deep\.conf:2: 'backlog' = 4294967297 is out of range"}
        for inc, message in cases.items():
            with self.subTest(inc):
                main = os.path.join(tmp, "main-%s" % inc)
                with open(main, "w") as f:
                    f.write('@include "%s"\n' % inc)
                r = run_daemon(["-t", "-c", main])
                self.assertEqual(r.returncode, harness.EX_CONFIG,
                                 "accepted (exit %s): %s%s" % (r.returncode, r.stdout, r.stderr))
                self.assertRegex(r.stderr, message)
        main = os.path.join(tmp, "main-fine.conf")
        port = harness.free_port()
        with open(main, "w") as f:
            f.write('@include "fine.conf"\nlisten = ["127.0.0.1:%d"];\nlog_level = "debug";\n'
                    % port)
        r = run_daemon(["-t", "-c", main])
        self.assertEqual(r.returncode, 0, r.stderr)
        d = self.start_on_file(main)
        d.wait_ready()
        s = d.connect()
        self.addCleanup(s.close)
        self.assertEqual(harness.echo_roundtrip(s, b"inc"), b"inc")

    def test_out_of_range_message_names_the_value_written(self):
        """`backlog = 2147483648;` is out of range, and the message names the
        value written in the file, not the one it wraps to in 32 bits."""
        path, r = self.check("backlog = 2147483648;\n")
        self.assertEqual(r.returncode, harness.EX_CONFIG, r.stderr)
        self.assertIn("2147483648", r.stderr.replace("-2147483648", ""),
                      "the message does not name the value written:\n" + r.stderr)

    def test_duplicate_listen_entry_is_not_valid_then_unstartable(self):
        """A file -t accepts is one the daemon starts on, even with an
        address listed twice: either the checker rejects
        `listen = ["127.0.0.1:P", "127.0.0.1:P"]` (78) or the daemon starts
        and serves the address (not "Address already in use" against its
        own first socket)."""
        port = harness.free_port()
        text = 'listen = ["127.0.0.1:%d", "127.0.0.1:%d"];\n' % (port, port)
        path, r = self.check(text)
        if r.returncode == harness.EX_CONFIG:
            return
        self.assertEqual(r.returncode, 0, r.stderr)
        p = self.start_on_file(path)
        m = p.wait_log(r"^<5>ready|^<3>cannot listen", timeout=harness.START_TIMEOUT)
        self.assertTrue(m.group(0).startswith("<5>ready"),
                        "-t accepted the file but the daemon cannot start on it:\n"
                        + p.log_text())
        s = p.connect()
        self.addCleanup(s.close)
        self.assertEqual(harness.echo_roundtrip(s, b"dup"), b"dup")

    def test_largest_ring_entries_starts(self):
        """ring_entries at its maximum, 32768, is a file -t accepts and one
        the daemon starts on (its completion queue, 4x, is above the
        kernel's 65,536 and is capped, not refused with EINVAL)."""
        port = harness.free_port()
        path, r = self.check('listen = ["127.0.0.1:%d"];\nring_entries = 32768;\n' % port)
        self.assertEqual(r.returncode, 0, r.stderr)
        p = self.start_on_file(path)
        m = p.wait_log(r"^<5>ready|^<3>", timeout=harness.START_TIMEOUT)
        self.assertTrue(m.group(0).startswith("<5>ready"), p.log_text())
        s = harness.connect("127.0.0.1", port)
        self.addCleanup(s.close)
        self.assertEqual(harness.echo_roundtrip(s, b"ring"), b"ring")


if __name__ == "__main__":
    unittest.main()
