# SPDX-License-Identifier: MIT
"""SIGHUP reload: a bad file changes nothing, a good one applies limits, log
level and listeners at once; traffic goes on through reloads."""

import os
import re
import signal
import socket
import time
import unittest

import harness
from harness import (KiB, RELOAD_FAILED, RELOADED, DaemonTestCase, expect_eof, free_port,
                     recv_until_eof, write_config)

harness.exit_77_unless_io_uring()


class ReloadTest(DaemonTestCase):

    def start_reloadable(self, settings, ports=None, **kw):
        """A daemon whose config names concrete ports, so a reload can repeat them."""
        ports = ports or [free_port()]
        conf = dict(settings)
        conf["listen"] = ["127.0.0.1:%d" % p for p in ports]
        d = self.start(conf, **kw)
        self.assertEqual(sorted(p for h, p in d.listeners), sorted(ports))
        return d

    def reload(self, d, settings=None, text=None, expect_ok=True):
        """Rewrite d's config file, send SIGHUP, wait for the verdict; the log mark."""
        if text is None:
            conf = dict(d.settings)
            conf.update(settings or {})
            text = harness.config_text(conf)
        write_config(text, path=d.conf)
        mark = d.log_mark()
        d.send_signal(signal.SIGHUP)
        if expect_ok:
            d.wait_log(r"^<5>reloaded configuration from %s$" % re.escape(d.conf), start=mark)
            d.settings = conf
        else:
            d.wait_log(r"^<4>reload failed; keeping the old configuration$", start=mark)
        return mark

    def assert_serves(self, d, index=0):
        s = d.connect(index)
        msg = b"new connection %f" % time.monotonic()
        self.assertEqual(harness.echo_roundtrip(s, msg), msg)
        s.close()

    def test_bad_file_keeps_serving(self):
        d = self.start_reloadable({"max_connections": 100})
        old = self.client(d)
        self.assertEqual(harness.echo_roundtrip(old, b"before"), b"before")
        good_text = harness.config_text(d.settings)
        cases = [
            ("syntax", good_text + "backlog = ;\n", r"syntax error"),
            ("range", good_text + "backlog = 0;\n", re.escape("'backlog' = 0 is out of range (1..65535)")),
            ("typo", good_text + "max_conections = 3;\n", r"unknown key 'max_conections'"),
        ]
        line = len(good_text.splitlines()) + 1
        for name, text, pattern in cases:
            with self.subTest(name):
                mark = self.reload(d, text=text, expect_ok=False)
                d.wait_log(r"^<3>%s:%d: %s" % (re.escape(d.conf), line, pattern), start=mark)
                d.assert_running()
                self.assertEqual(harness.echo_roundtrip(old, name.encode()), name.encode())
                self.assert_serves(d)
        # The old max_connections (100) still holds: the typo's 3 was not applied.
        socks = [self.client(d) for _ in range(5)]
        for s in socks:
            self.assertEqual(harness.echo_roundtrip(s, b"ok"), b"ok")
            s.close()
        # A missing file is a failed reload too.
        mark = d.log_mark()
        os.unlink(d.conf)
        d.send_signal(signal.SIGHUP)
        d.wait_log(r"^<3>cannot read config %s: No such file or directory$" % re.escape(d.conf),
                   start=mark)
        d.wait_log(r"^<4>reload failed; keeping the old configuration$", start=mark)
        self.assertEqual(harness.echo_roundtrip(old, b"after"), b"after")
        old.close()
        self.assertEqual(d.stop(), 0)

    def test_lower_max_connections(self):
        d = self.start_reloadable({"max_connections": 100})
        old = [self.client(d) for _ in range(5)]
        for s in old:
            self.assertEqual(harness.echo_roundtrip(s, b"hi"), b"hi")
        self.reload(d, {"max_connections": 3})
        # Existing connections keep working, even above the new limit.
        for i, s in enumerate(old):
            self.assertEqual(harness.echo_roundtrip(s, b"still %d" % i), b"still %d" % i)
        # A new one is over the limit: closed at once.
        extra = self.client(d)
        expect_eof(extra, timeout=10)
        # Down to 2: a new one fits again (the closes are asynchronous: retry).
        for s in old[2:]:
            s.close()
        s = self.client_served(d)
        over = self.client(d)  # 3 open now: this one is over
        expect_eof(over, timeout=10)
        for s in old[:2]:
            self.assertEqual(harness.echo_roundtrip(s, b"kept"), b"kept")
            s.close()
        s.close()
        self.assertEqual(d.stop(), 0)

    def test_log_level_change(self):
        d = self.start_reloadable({"log_level": "info"})
        self.assert_serves(d)
        self.assertFalse(d.find_log(r"^<7>"), "debug lines at log_level info")
        mark = self.reload(d, {"log_level": "debug"})
        self.assert_serves(d)
        d.wait_log(r"^<7>", start=mark)
        mark = self.reload(d, {"log_level": "notice"})
        # Info lines are off now: a stats line (info) must not appear.
        self.assert_serves(d)
        d.send_signal(signal.SIGUSR1)
        self.assertEqual(d.stop(), 0)
        reloaded = max(i for i, l in enumerate(d.lines) if l.startswith("<5>reloaded"))
        chatty = [l for l in d.lines[reloaded + 1:] if re.match(r"<[67]>", l)]
        self.assertEqual(chatty, [], "info/debug lines after a reload to notice")

    def test_clients_in_a_removed_listeners_backlog_are_served(self):
        """Clients whose connect() had returned but that no loop had accepted
        yet (a test hook keeps them in the backlog) when a reload removes
        their address: they are served, not reset by the close."""
        a, b = free_port(), free_port()
        while a == b:
            b = free_port()
        d = self.start_reloadable({}, ports=[a, b],
                                  extra_env={"RINGECHO_TEST_HOLD_ACCEPTS": "1"})
        waiting = [harness.connect("127.0.0.1", b) for _ in range(3)]
        for i, s in enumerate(waiting):
            self.addCleanup(s.close)
            s.sendall(b"waiting on b %d" % i)
        self.assertEqual(d.stats()["total"], 0)
        mark = self.reload(d, {"listen": ["127.0.0.1:%d" % a]})
        d.wait_log(r"^<5>stopped listening on 127\.0\.0\.1:%d$" % b, start=mark)
        for i, s in enumerate(waiting):
            self.assertEqual(harness.recv_exact(s, 14), b"waiting on b %d" % i)
            s.sendall(b" and after")
            s.shutdown(socket.SHUT_WR)
            self.assertEqual(recv_until_eof(s), b" and after")
        self.assertEqual(d.stats()["total"], 3)
        self.assertEqual(d.stop(), 0)

    def test_listen_change(self):
        a, b, c = free_port(), free_port(), free_port()
        while len({a, b, c}) < 3:
            c = free_port()
        d = self.start_reloadable({}, ports=[a, b])
        on_a = self.client(d, 0 if d.listeners[0][1] == a else 1)
        self.assertEqual(harness.echo_roundtrip(on_a, b"on a"), b"on a")
        mark = self.reload(d, {"listen": ["127.0.0.1:%d" % a, "127.0.0.1:%d" % c]})
        d.wait_log(r"^<5>listening on 127\.0\.0\.1:%d$" % c, start=mark)
        self.assertFalse(d.find_log(r"^<5>listening on 127\.0\.0\.1:%d$" % a, start=mark),
                         "the unchanged listener was reopened")
        self.assertTrue(harness.wait_refused("127.0.0.1", b, timeout=10),
                        "removed listener %d still accepts" % b)
        with harness.connect("127.0.0.1", c) as sc:
            self.assertEqual(harness.echo_roundtrip(sc, b"on c"), b"on c")
        with harness.connect("127.0.0.1", a) as sa:
            self.assertEqual(harness.echo_roundtrip(sa, b"new on a"), b"new on a")
        # The connection on the unchanged listener never noticed.
        data = harness.random_bytes(200000, seed=4)
        harness.assert_same(self, harness.echo_roundtrip(on_a, data), data)
        on_a.shutdown(socket.SHUT_WR)
        self.assertEqual(recv_until_eof(on_a), b"")
        self.assertEqual(d.stop(), 0)

    def test_per_ip_limit_and_idle_timeout_applied_live(self):
        d = self.start_reloadable({"max_connections_per_ip": 0, "idle_timeout_ms": 0})
        first = self.client(d, source="127.0.0.2")
        self.assertEqual(harness.echo_roundtrip(first, b"one"), b"one")
        self.reload(d, {"max_connections_per_ip": 1, "idle_timeout_ms": 1000})
        second = self.client(d, source="127.0.0.2")
        expect_eof(second, timeout=10)  # over the new per-address limit
        with harness.connect("127.0.0.1", d.port, source="127.0.0.3") as other:
            self.assertEqual(harness.echo_roundtrip(other, b"other"), b"other")
        # The new idle timeout closes a connection that now stays silent.
        expect_eof(first, timeout=60)
        stats = d.stats()
        self.assertEqual(stats["refused_per_ip"], 1, stats)
        self.assertGreaterEqual(stats["idle_closed"], 1, stats)
        self.assertEqual(d.stop(), 0)

    def test_restart_only_change_is_logged(self):
        d = self.start_reloadable({"buffer_size": 4096})
        old = self.client(d)
        mark = self.reload(d, {"buffer_size": 8192, "max_pending_bytes": 65536})
        lines = [l for l in d.lines[mark:] if "buffer_size" in l]
        self.assertTrue(lines, "a buffer_size change was not logged as needing a restart:\n"
                        + d.log_text())
        self.assertRegex(lines[0], r"(?i)restart")
        self.assertEqual(harness.echo_roundtrip(old, b"same"), b"same")
        self.assert_serves(d)
        old.close()
        self.assertEqual(d.stop(), 0)

    def test_restart_only_key_kept_must_still_fit(self):
        """buffer_size keeps its running value on a reload, so a file whose
        max_pending_bytes fits only its new buffer_size does not apply: the
        old settings stay, and every client is served."""
        d = self.start_reloadable({"buffer_size": 16384, "max_pending_bytes": 65536})
        old = self.client(d)
        mark = self.reload(d, {"buffer_size": 4096, "max_pending_bytes": 4096},
                           expect_ok=False)
        d.wait_log(r"^<3>reload: 'max_pending_bytes' = 4096 must be at least the running "
                   r"'buffer_size' = 16384$", start=mark)
        self.assertFalse(d.find_log(r"^<5>reloaded configuration", start=mark))
        self.assertEqual(harness.echo_roundtrip(old, b"same"), b"same")
        self.assert_serves(d)
        old.close()
        self.assertEqual(d.stop(), 0)

    def test_reload_with_many_errors_says_how_many_more(self):
        d = self.start_reloadable({})
        text = harness.config_text(d.settings) + "".join(
            "no_such_key_%d = 1;\n" % i for i in range(20))
        mark = self.reload(d, text=text, expect_ok=False)
        d.wait_log(r"^<3>\.\.\. and 4 more$", start=mark)
        self.assert_serves(d)
        self.assertEqual(d.stop(), 0)


class ReloadRobustnessTest(harness.CheckedTestCase):
    """Reloads of broken files, and many reloads under traffic."""

    def test_reload_of_broken_files_keeps_serving(self):
        d = self.start()
        s = self.client(d)
        self.assertEqual(harness.echo_roundtrip(s, b"before"), b"before")
        conf = d.conf
        broken = [
            ("garbage", b"this is not ; a config {{{\n"),
            ("missing include", b'@include "/nonexistent/ringechod-y.conf"\n'),
            ("duplicate key", b"backlog = 5;\nbacklog = 6;\n"),
            ("non-UTF-8", b'listen = ["\xff\xfe:1"];\n'),
            ("listen string", b'listen = "127.0.0.1:1";\n'),
            ("empty listen", b"listen = [];\n"),
            ("negative", b"max_connections = -1;\n"),
            ("float", b"max_connections = 1.5;\n"),
        ]
        for what, text in broken:
            with self.subTest(what):
                with open(conf + ".tmp", "wb") as f:
                    f.write(text)
                os.replace(conf + ".tmp", conf)
                mark = d.log_mark()
                d.send_signal(signal.SIGHUP)
                d.wait_log(RELOAD_FAILED, start=mark)
                self.assertTrue(d.find_log(re.escape(conf), start=mark),
                                "%s: the reload error does not name the file" % what)
                msg = what.encode()
                self.assertEqual(harness.echo_roundtrip(s, msg), msg)
                s2 = d.connect()
                self.assertEqual(harness.echo_roundtrip(s2, b"new"), b"new")
                s2.close()
        # The config path becoming a directory, or vanishing (-c was given).
        os.unlink(conf)
        os.mkdir(conf)
        try:
            mark = d.log_mark()
            d.send_signal(signal.SIGHUP)
            d.wait_log(RELOAD_FAILED, start=mark)
        finally:
            os.rmdir(conf)
        mark = d.log_mark()
        d.send_signal(signal.SIGHUP)
        d.wait_log(RELOAD_FAILED, start=mark)
        self.assertEqual(harness.echo_roundtrip(s, b"after"), b"after")
        with open(conf, "w") as f:  # so cleanup can unlink it
            f.write("")
        s.close()
        self.stop_clean(d)

    def test_sighup_storm_with_listener_churn(self):
        d = self.start()
        port_b = harness.free_port()
        base_cfg = dict(d.settings)
        with_b = dict(d.settings)
        with_b["listen"] = list(d.settings["listen"]) + ["127.0.0.1:%d" % port_b]
        # Limits change under the streams too: backpressure far lower.
        with_b["max_pending_bytes"] = 16 * KiB
        st = self.streamers(d, 20, seed=21, chunk=4096, interval=0.002)
        st.pump(lambda: min(st.received()) >= 16 * KiB, what="16 KiB each")
        on_b = []
        for i in range(12):
            write_config(with_b if i % 2 == 0 else base_cfg, path=d.conf)
            mark = d.log_mark()
            d.send_signal(signal.SIGHUP)
            # Traffic goes on while the daemon reloads.
            st.pump(lambda: bool(d.find_log(RELOADED, start=mark)), what="reload %d" % i)
            if i % 2 == 0:
                s = harness.connect("127.0.0.1", port_b)
                self.addCleanup(s.close)
                self.assertEqual(harness.echo_roundtrip(s, b"b%d" % i), b"b%d" % i)
                on_b.append(s)
            else:
                self.assertTrue(harness.wait_refused("127.0.0.1", port_b, timeout=10),
                                "removed listener still accepts")
            # Connections made on B outlive B's removal.
            for j, s in enumerate(on_b):
                msg = b"still %d %d" % (i, j)
                self.assertEqual(harness.echo_roundtrip(s, msg), msg)
        before = st.received()
        st.pump(lambda: all(r >= b + 8 * KiB for r, b in zip(st.received(), before)),
                what="8 KiB more each after the storm")
        self.finish_streams(st)
        for s in on_b:
            s.shutdown(socket.SHUT_WR)
            self.assertEqual(recv_until_eof(s), b"")
        self.stop_clean(d)


if __name__ == "__main__":
    unittest.main()
