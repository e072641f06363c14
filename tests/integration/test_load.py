# SPDX-License-Identifier: MIT
"""Load: thousands of connections at once, reset storms, connect-echo-close
churn; the daemon holds them all and, once they are gone, no more fds or
memory than before."""

import random
import resource
import unittest

import harness
from harness import KiB, MiB, DaemonTestCase, duplex, random_bytes

harness.exit_77_unless_io_uring()


def under_asan(pid):
    with open("/proc/%d/maps" % pid) as f:
        return "libasan" in f.read()


def stable_fd_baseline(test, d):
    """The daemon's fd count at rest, after one connection has come and gone."""
    base = d.fd_count()
    s = d.connect()
    test.assertEqual(harness.echo_roundtrip(s, b"warm-up"), b"warm-up")
    s.close()
    d.wait_fd_count(base)
    return base


class ConcurrentTest(DaemonTestCase):
    N = 5000

    def test_5000_concurrent_connections(self):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard < self.N + 200:
            self.skipTest("hard RLIMIT_NOFILE %d is too low for %d connections" % (hard, self.N))
        # Start the daemon with a low soft limit: it must raise it to the hard limit itself.
        low = 1024

        def low_soft_limit():
            resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
        d = self.start({"max_connections": 2 * self.N, "backlog": 4096},
                       preexec_fn=low_soft_limit)
        d.wait_log(r"^<6>raised open-file limit from %d to %d$" % (low, hard), timeout=1)
        base = stable_fd_baseline(self, d)
        socks = []
        try:
            for i in range(self.N):
                socks.append(d.connect())
            # Every connection accepted and held by the daemon at once.
            d.wait_fd_count(base + self.N, timeout=120)
            payloads = [b"connection %d says " % i + random_bytes(i % 200, seed=i)
                        for i in range(self.N)]
            got = duplex(socks, payloads, timeout=300)
            bad = [i for i in range(self.N) if got[i] != payloads[i]]
            if bad:
                d.fail("%d connections got a wrong echo, first: %d" % (len(bad), bad[0]))
            # A second round on every connection, all still open.
            got = duplex(socks, payloads[::-1], timeout=300)
            self.assertEqual(got, payloads[::-1])
        finally:
            for s in socks:
                s.close()
        d.wait_fd_count(base, timeout=120)
        self.assertEqual(d.stop(), 0)


class ChurnTest(DaemonTestCase):

    def setUp(self):
        self.d = self.start({"max_connections": 10000})
        self.base = stable_fd_baseline(self, self.d)

    def churn(self, n):
        for i in range(n):
            s = self.d.connect()
            msg = b"cycle %d" % i
            s.sendall(msg)
            got = harness.recv_exact(s, len(msg))
            s.close()
            if got != msg:
                self.d.fail("cycle %d: echo %r" % (i, got))

    def test_2000_connect_echo_close_cycles(self):
        self.churn(2000)
        self.d.wait_fd_count(self.base)
        if not under_asan(self.d.pid):
            # After a warm round, another 2000 cycles must not grow memory:
            # 1 MiB is ~500 bytes per connection.
            rss = self.d.rss()
            self.churn(2000)
            self.d.wait_fd_count(self.base)
            growth = self.d.rss() - rss
            self.assertLess(growth, MiB, "RSS grew %d bytes over 2000 cycles" % growth)
        # Under ASan, LeakSanitizer at exit turns a leak into a non-zero exit code.
        self.assertEqual(self.d.stop(), 0)

    def test_reset_storm(self):
        rng = random.Random(2000)
        big = random_bytes(256 * KiB, seed=1)
        done = 0
        while done < 2000:
            batch = []
            for i in range(100):
                s = self.d.connect()
                batch.append(s)
                kind = rng.randrange(4)
                if kind == 1:
                    s.sendall(b"reset me")  # echo in flight, never read
                elif kind == 2:
                    s.setblocking(False)  # as much as fits, never read
                    try:
                        s.send(big)
                    except BlockingIOError:
                        pass
                elif kind == 3:
                    # Read part of the echo, leave the rest unread.
                    s.sendall(b"y" * 5000)
                    harness.recv_exact(s, 100)
            for s in batch:
                harness.set_linger_reset(s)
                s.close()
            done += len(batch)
        self.d.assert_running()
        s = self.d.connect()
        self.assertEqual(harness.echo_roundtrip(s, b"still here"), b"still here")
        s.close()
        self.d.wait_fd_count(self.base)
        self.assertEqual(self.d.stop(), 0)


if __name__ == "__main__":
    unittest.main()
