# SPDX-License-Identifier: MIT
"""What a person at a terminal reads: log lines, -t, usage errors, bind errors.

Priority prefixes ("<3>") are for the journal only: systemd names the
journal stream in JOURNAL_STREAM, and only when stderr is that stream does
the daemon write them; elsewhere its lines read "ringechod: LEVEL: ...".
"""

import os
import re
import socket
import stat
import tempfile
import unittest

import harness
from harness import EX_CONFIG, EX_USAGE, CheckedTestCase, run_daemon, write_config

harness.exit_77_unless_io_uring()


def runnable_by_anyone(path):
    """Whether a user with no claim on path (nobody) may run it: every
    directory above it searchable by others, the file executable by them."""
    path = os.path.realpath(path)
    if not os.stat(path).st_mode & stat.S_IXOTH:
        return False
    d = os.path.dirname(path)
    while True:
        if not os.stat(d).st_mode & stat.S_IXOTH:
            return False
        if d == "/":
            return True
        d = os.path.dirname(d)


class LogFormatTest(CheckedTestCase):

    def bad_config(self):
        path = write_config("max_conections = 5;\n")
        self.addCleanup(os.unlink, path)
        return path

    def test_terminal_gets_words_journal_gets_priorities(self):
        path = self.bad_config()
        plain = run_daemon(["-t", "-c", path], journal=False)
        self.assertEqual(plain.returncode, EX_CONFIG)
        self.assertEqual(plain.stderr.splitlines(), [
            "ringechod: error: %s:1: unknown key 'max_conections' (did you mean "
            "'max_connections'?)" % path,
            "ringechod: error: 1 error in %s" % path])
        journal = run_daemon(["-t", "-c", path], journal=True)
        self.assertEqual(journal.stderr.splitlines()[-1], "<3>1 error in %s" % path)

    def test_journal_stream_of_another_file_is_not_the_journal(self):
        # systemd sets JOURNAL_STREAM for the service; a script it runs that
        # sends stderr elsewhere keeps the variable but not the stream.
        env = dict(os.environ, JOURNAL_STREAM="1:2")
        d = self.start(journal=False, env=env, ready=False)
        d.wait_log(r"^ringechod: notice: ready: 1 listener, ")
        d.wait_log(r"^ringechod: notice: ringechod \S+ starting with %s$" % re.escape(d.conf))
        self.assertFalse([l for l in d.lines if l.startswith("<")], d.log_text())
        self.assertEqual(d.stop(), 0)


class CheckConfigTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        harness.require_binary()

    def test_valid_file_one_line(self):
        path = write_config({"max_connections": 10})
        self.addCleanup(os.unlink, path)
        r = run_daemon(["-t", "-c", path], journal=False)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, "ringechod: configuration file %s is valid\n" % path)
        self.assertEqual(r.stderr, "")

    def test_missing_default_file_says_one_true_thing(self):
        default = "/etc/ringecho/ringechod.conf"
        if os.path.exists(default):
            self.skipTest("%s exists on this machine" % default)
        r = run_daemon(["-t"], journal=False)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, "ringechod: %s does not exist; ringechod would start "
                         "with its built-in defaults\n" % default)
        self.assertEqual(r.stderr, "")

    def test_errors_end_with_a_count(self):
        path = write_config("backlog = 0;\nmax_connections = 0;\nfoo = 1;\n")
        self.addCleanup(os.unlink, path)
        r = run_daemon(["-t", "-c", path], journal=False)
        self.assertEqual(r.returncode, EX_CONFIG)
        lines = r.stderr.splitlines()
        self.assertEqual(len(lines), 4, r.stderr)
        self.assertEqual(lines[-1], "ringechod: error: 3 errors in %s" % path)

    def test_syntax_errors_say_what_was_expected(self):
        cases = [
            ("buffer_size = 256k;\n", r":1: syntax error: buffer_size = '256k' is not a "
             r"value: a string needs double quotes, and a number takes no unit"),
            ("log_level = info;\n", r':1: syntax error: log_level = info: a string needs '
             r'double quotes: "info"'),
            ("listen = [127.0.0.1:7];\n", r":1: syntax error: '127.0.0.1:7' is not a value"),
            ("backlog = 5\n\nmax_connections;\n", r":3: syntax error: expected '=' after "
             r"'max_connections', found ';'"),
        ]
        for text, expect in cases:
            with self.subTest(text=text):
                path = write_config(text)
                self.addCleanup(os.unlink, path)
                r = run_daemon(["-t", "-c", path], journal=False)
                self.assertEqual(r.returncode, EX_CONFIG)
                self.assertRegex(r.stderr, re.escape(path) + expect)
                self.assertNotIn("syntax error: syntax error", r.stderr)

    def test_scoped_link_local_address(self):
        path = write_config({"listen": ["[fe80::1%lo]:7777"]})
        self.addCleanup(os.unlink, path)
        r = run_daemon(["-t", "-c", path], journal=False)
        self.assertEqual(r.returncode, 0, r.stderr)
        for bad, why in (("[fe80::1%nosuchif9]:7", "no such network interface"),
                         ("[::ffff:127.0.0.1]:7", "write the IPv4 address as A.B.C.D:PORT")):
            path = write_config({"listen": [bad]})
            self.addCleanup(os.unlink, path)
            r = run_daemon(["-t", "-c", path], journal=False)
            self.assertEqual(r.returncode, EX_CONFIG)
            self.assertIn(why, r.stderr)
            r = run_daemon(["-l", bad, "-t", "-c", path], journal=False)
            self.assertEqual(r.returncode, EX_USAGE)
            self.assertIn(why, r.stderr)

    def test_addresses_that_cannot_be_listened_on_together(self):
        """-t and start-up agree: what start-up could not bind for a reason
        the file alone shows is an error of the file (or of -l/-u)."""
        cases = [
            (["127.0.0.1:7001", "127.0.0.1:07001"], "listen", "is listed twice"),
            (["0.0.0.0:7001", "127.0.0.1:7001"], "listen",
             "and '0.0.0.0:7001' cannot both be listened on: the wildcard address takes "
             "port 7001 on every address"),
            (["127.0.0.1:7001", "[::]:7002", "[::1]:7002"], "listen",
             "and '[::]:7002' cannot both be listened on"),
            (["[fe80::1]:7001"], "listen", "a link-local address needs its interface"),
            (["[fe80::1%4294967000]:7001"], "listen", "no such network interface"),
            (["224.0.0.1:7001"], "listen", "is a multicast address, which cannot take TCP"),
            (["[ff02::1%lo]:7001"], "listen", "is a multicast address"),
            (["[::1%lo]:7001", "[::1]:7001"], "listen",
             "only a link-local address (fe80::/10) takes %IFACE"),
            (["0.0.0.0:7001", "127.0.0.1:7001"], "listen_udp", "cannot both be listened on"),
        ]
        for addrs, key, why in cases:
            with self.subTest(addrs=addrs, key=key):
                path = write_config({key: addrs})
                self.addCleanup(os.unlink, path)
                r = run_daemon(["-t", "-c", path], journal=False)
                self.assertEqual(r.returncode, EX_CONFIG, r.stderr)
                self.assertIn(why, r.stderr)
                opt = "-l" if key == "listen" else "-u"
                args = [a for addr in addrs for a in (opt, addr)]
                r = run_daemon(args + ["-t", "-c", path], journal=False)
                self.assertEqual(r.returncode, EX_USAGE, r.stderr)
                self.assertIn(why, r.stderr)
        # An entry that does not parse is one error, not a clash with
        # whatever its slot held.
        path = write_config('listen = ("bogus", "0.0.0.0:7777", "127.0.0.1:7778");\n')
        self.addCleanup(os.unlink, path)
        r = run_daemon(["-t", "-c", path], journal=False)
        self.assertEqual(r.returncode, EX_CONFIG)
        self.assertEqual(r.stderr.splitlines()[-1], "ringechod: error: 1 error in %s" % path)
        # Apart: the same port on two families, port 0 twice, UDP and TCP.
        path = write_config({"listen": ["[::]:7001", "0.0.0.0:7001", "127.0.0.1:0",
                                        "127.0.0.1:0"],
                             "listen_udp": ["0.0.0.0:7001", "224.0.0.1:7002"]})
        self.addCleanup(os.unlink, path)
        r = run_daemon(["-t", "-c", path], journal=False)
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_one_message_one_line(self):
        """A newline or an escape sequence in a value never starts a log
        line of its own (which could forge a journal priority)."""
        path = write_config('log_level = "x\\n<0>forged\\u001b[2J";\n'
                            'listen = ["1.2.3.4:7\\n<2>forged too"];\n')
        self.addCleanup(os.unlink, path)
        for journal in (False, True):
            r = run_daemon(["-t", "-c", path], journal=journal)
            self.assertEqual(r.returncode, EX_CONFIG)
            lines = r.stderr.splitlines()
            self.assertEqual(len(lines), 3, r.stderr)
            prefix = "<3>" if journal else "ringechod: error: "
            for line in lines:
                self.assertTrue(line.startswith(prefix), line)
                self.assertNotRegex(line, "[\x00-\x1f\x7f]")

    def test_long_path_keeps_the_reason(self):
        """A config path too long for an error line keeps its end (file and
        line) and what is wrong."""
        top = tempfile.mkdtemp(prefix="ringechod-longpath-")
        self.addCleanup(lambda: __import__("shutil").rmtree(top))
        deep = os.path.join(top, *["d" * 200] * 12)
        os.makedirs(deep)
        path = os.path.join(deep, "c.conf")
        with open(path, "w") as f:
            f.write('backlog = "x";\n')
        r = run_daemon(["-t", "-c", path], journal=False)
        self.assertEqual(r.returncode, EX_CONFIG)
        self.assertRegex(r.stderr.splitlines()[0],
                         r"^ringechod: error: \.\.\.[d/]+/c\.conf:1: 'backlog' must be an "
                         r"integer$")


class UsageErrorTest(unittest.TestCase):

    def test_usage_error_points_at_help(self):
        r = run_daemon(["--bogus"], journal=False)
        self.assertEqual(r.returncode, EX_USAGE)
        self.assertEqual(r.stderr, "ringechod: unknown option: --bogus\n"
                         "Try 'ringechod --help'.\n")
        self.assertEqual(r.stdout, "")

    def test_usage_error_names_what_was_wrong(self):
        cases = [
            (["-xt"], "unknown option: -x"),
            (["-c", "/nonexistent", "-vxt"], "unknown option: -x"),
            (["--verbose", "-tx"], "unknown option: -x"),
            (["--help=x"], "option takes no argument: --help"),
            (["--version=1"], "option takes no argument: --version"),
            (["--list", "127.0.0.1:7"], "ambiguous option: --list"),
            (["--listen"], "option needs an argument: --listen"),
            (["-t", "-c"], "option needs an argument: -c"),
            (["--bogus=1"], "unknown option: --bogus"),
        ]
        for args, said in cases:
            with self.subTest(args=args):
                r = run_daemon(args, journal=False)
                self.assertEqual(r.returncode, EX_USAGE)
                self.assertEqual(r.stderr, "ringechod: %s\nTry 'ringechod --help'.\n" % said)


class BindErrorTest(CheckedTestCase):

    def test_address_in_use_names_it(self):
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            d = self.start({"listen": ["127.0.0.1:%d" % port]}, port=port, ready=False,
                           journal=False)
            self.assertEqual(d.wait_exit(), 1)
        d.wait_log(r"^ringechod: error: cannot listen on 127\.0\.0\.1:%d: Address already "
                   r"in use \(another program, or another ringechod, is listening there\)$"
                   % port)

    def test_low_port_without_privilege_points_at_the_socket_unit(self):
        def drop():
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
        if not runnable_by_anyone(harness.binary()):
            self.skipTest("the build tree is not open to other users (a checkout under "
                          "a private home directory)")
        port = 7
        probe = socket.socket()
        try:
            probe.bind(("127.0.0.1", port))
        except PermissionError:
            pass
        except OSError:
            self.skipTest("port 7 is taken on this machine")
        finally:
            probe.close()
        conf = write_config({"listen": ["127.0.0.1:%d" % port]},
                            path=os.path.join(tempfile.mkdtemp(), "c.conf"))
        os.chmod(os.path.dirname(conf), 0o755)
        os.chmod(conf, 0o644)
        r = run_daemon(["-c", conf], journal=False, preexec_fn=drop)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("cannot listen on 127.0.0.1:7: Permission denied (a port below 1024 "
                      "needs a privilege ringechod.service does not have: use "
                      "ringechod.socket, whose sockets systemd binds)", r.stderr)


if __name__ == "__main__":
    unittest.main()
