# SPDX-License-Identifier: MIT
"""Config file errors: exit 78, one clear line naming file:line, key, value, range; nothing listens."""

import os
import re
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
                    "'listen': cannot parse address '%s' (expected A.B.C.D:PORT or [V6]:PORT)"
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


if __name__ == "__main__":
    unittest.main()
