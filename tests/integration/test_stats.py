# SPDX-License-Identifier: MIT
"""SIGUSR1: one log line of counters that match the traffic, however often
it comes, and never a pause in service."""

import os
import signal
import time
import unittest

import harness
from harness import KiB

harness.exit_77_unless_io_uring()


class StatsSignalTest(harness.DaemonTestCase):

    def test_sigusr1_stats_match_traffic(self):
        d = self.start()
        st0 = d.stats()
        for key in ("connections", "total", "bytes", "messages", "refused_max",
                    "refused_per_ip", "idle_closed", "bufring_empty", "short_sends",
                    "chained_sends", "accept_paused", "cq_overflow"):
            self.assertIn(key, st0, "stats line lacks %s" % key)
        self.assertEqual(st0["connections"], 0)
        self.assertEqual(st0["total"], 0)
        self.assertEqual(st0["bytes"], 0)
        socks = [self.client(d) for _ in range(3)]
        sizes = [1000, 70000, 12345]
        for s, n in zip(socks, sizes):
            data = harness.random_bytes(n, seed=n)
            harness.assert_same(self, harness.echo_roundtrip(s, data), data)
        st1 = d.stats()
        self.assertEqual(st1["connections"], 3, st1)
        self.assertEqual(st1["total"], 3, st1)
        self.assertEqual(st1["bytes"], sum(sizes), st1)
        self.assertGreaterEqual(st1["messages"], 3, st1)
        socks[0].close()
        s = self.client(d)
        self.assertEqual(harness.echo_roundtrip(s, b"12345"), b"12345")
        # The close of socks[0] is processed asynchronously: poll the counter.
        deadline = time.monotonic() + harness.IO_TIMEOUT
        while True:
            st2 = d.stats()
            if st2["connections"] == 3 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.assertEqual(st2["connections"], 3, st2)
        self.assertEqual(st2["total"], 4, st2)
        self.assertEqual(st2["bytes"], sum(sizes) + 5, st2)
        for s in socks[1:] + [s]:
            s.close()
        d.assert_running()  # SIGUSR1 must not kill it
        self.assertEqual(d.stop(), 0)


class StatsStormTest(harness.CheckedTestCase):

    def test_sigusr1_storm_during_traffic(self):
        d = self.start()
        st = self.streamers(d, 10, seed=22, chunk=4096, interval=0.002)
        st.pump(lambda: min(st.received()) >= 8 * KiB, what="8 KiB each")
        mark = d.log_mark()
        for i in range(400):
            os.kill(d.pid, signal.SIGUSR1)
            if i % 40 == 0:
                st.pump(lambda: True)
        before = st.received()
        st.pump(lambda: all(r >= b + 8 * KiB for r, b in zip(st.received(), before)),
                what="8 KiB more each after the storm")
        self.assertTrue(d.find_log(r"^<6>stats: ", start=mark))
        self.finish_streams(st)
        self.assertEqual(d.stats()["connections"], 0)
        self.stop_clean(d)


if __name__ == "__main__":
    unittest.main()
