# SPDX-License-Identifier: MIT
"""Helpers that drive the real ringechod binary over real loopback sockets.

Standard library only.  Every wait has a timeout and fails with the daemon's
captured log; nothing sleeps and hopes.  A test class that starts daemons
through DaemonTestCase.start() gets them killed on teardown whatever happens.
"""

import hashlib
import os
import random
import re
import resource
import select
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

DEFAULT_BINARY = "/work/main/build/src/ringechod"

# Exit codes from the interface contract (sysexits.h).
EX_OK = 0
EX_USAGE = 64
EX_UNAVAILABLE = 69
EX_CONFIG = 78

# Generous: the suite must pass under ASan on a loaded two-core machine.
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
IO_TIMEOUT = 60.0

KiB = 1 << 10
MiB = 1 << 20

LISTEN_RE = re.compile(r"^<5>listening on (\[[0-9a-fA-F:.]+\]|[0-9.]+):(\d+)\s*$")
READY_RE = re.compile(r"^<5>ready")
SHUTTING_DOWN = r"^<5>shutting down"
RELOADED = r"^<5>reloaded configuration"
RELOAD_FAILED = r"^<4>reload failed; keeping the old configuration"

# Small receive pools, so that held buffers ("chains") fill within one batch
# and a few clients use up the hold budget (half the pool, 32 buffers).
# For stalls: a stalled connection can hold a full chain (16 KiB) and a queue
# behind it, and the budget is about two stalled connections' chains.
POOL_FOR_STALLS = {"buffer_count": 64, "buffer_size": 1024, "max_pending_bytes": 64 * KiB}
# For bursts: a burst fills several buffers per batch, chains form behind
# sends made due in the batch, the budget runs out and copies take over, and
# backpressure (with the spill of a stalled chain) is frequent.
POOL_FOR_BURSTS = {"buffer_count": 64, "buffer_size": 512, "max_pending_bytes": 16 * KiB}

# What a service manager sets for one service.  Inherited from whatever runs
# the tests, it would hand the test daemons sockets, or send their
# notifications, that are not theirs.
MANAGER_ENV = ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "NOTIFY_SOCKET",
               "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM")


def exiting_re(closed, cut, idle=0, reset=0):
    """The daemon's last line after a shutdown: so many connections closed by
    their clients, idle ones ended at once, cut at the deadline, and reset."""
    if closed == cut == idle == reset == 0:
        return r"^<5>exiting: no connections were open$"
    return (r"^<5>exiting: %d closed by their clients, %d idle ended at once, %d cut at "
            r"the deadline, %d reset$" % (closed, idle, cut, reset))


def binary():
    """Path of the daemon under test (env RINGECHOD, else the default build)."""
    return os.environ.get("RINGECHOD") or DEFAULT_BINARY


def no_uring_wrapper():
    """Path of the seccomp wrapper that makes io_uring_setup fail, or None."""
    path = os.environ.get("RINGECHO_NO_URING")
    if path and os.access(path, os.X_OK):
        return path
    return None


def require_binary():
    """Fail loudly when there is no binary: a missing build is not a pass."""
    if not os.access(binary(), os.X_OK):
        raise AssertionError("ringechod binary not found: %s (set RINGECHOD)" % binary())


def io_uring_works():
    """Whether this process may create an io_uring (kernel, sysctl, seccomp)."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    params = ctypes.create_string_buffer(120)  # struct io_uring_params, zeroed
    fd = libc.syscall(425, 1, params)  # __NR_io_uring_setup on x86_64 and arm64
    if fd < 0:
        return False
    os.close(fd)
    return True


def exit_77_unless_io_uring():
    """ctest's skip code for a module that needs a working daemon, where io_uring is off."""
    if not io_uring_works():
        sys.stderr.write("io_uring is not available to this process: skipping\n")
        sys.exit(77)


def raise_nofile_limit():
    """Raise this process's RLIMIT_NOFILE soft limit to its hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def skip_unless_io_uring(testcase):
    """Skip one test that starts a daemon, in a module that mostly does not."""
    if not io_uring_works():
        testcase.skipTest("io_uring is not available to this process")


def _bind(host, port):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.bind((host, port))
    except BaseException:
        s.close()
        raise
    return s


def free_port(*hosts):
    """A port that was free on every one of hosts (default 127.0.0.1) a moment
    ago, for configs and command lines that must name a port."""
    hosts = hosts or ("127.0.0.1",)
    for _ in range(50):
        with _bind(hosts[0], 0) as s:
            port = s.getsockname()[1]
        try:
            for h in hosts[1:]:
                _bind(h, port).close()
        except OSError:
            continue
        return port
    raise AssertionError("no port free on all of %s" % (hosts,))


def free_udp_port(host="127.0.0.1"):
    """A UDP port that was free on host a moment ago."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def free_tcp_udp_port(host="127.0.0.1"):
    """A port that was free on host for TCP and for UDP a moment ago."""
    for _ in range(50):
        port = free_port(host)
        try:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                s.bind((host, port))
        except OSError:
            continue
        return port
    raise AssertionError("no port free for TCP and UDP on %s" % host)


def ipv6_available():
    """Whether this machine has an IPv6 loopback to bind."""
    try:
        _bind("::1", 0).close()
        return True
    except OSError:
        return False


# --------------------------------------------------------------------------
# Config files


def _conf_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_conf_value(v) for v in value) + "]"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise TypeError("cannot write %r in a config file" % (value,))


def config_text(settings):
    """libconfig text with one `key = value;` per line, in dict order."""
    return "".join("%s = %s;\n" % (k, _conf_value(v)) for k, v in settings.items())


def write_config(settings, path=None, directory=None):
    """Write settings (dict) or raw text (str) to a config file; return its path."""
    text = settings if isinstance(settings, str) else config_text(settings)
    if path is None:
        fd, path = tempfile.mkstemp(prefix="ringechod-", suffix=".conf", dir=directory)
        os.close(fd)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)  # a reload never sees a half-written file
    return path


# --------------------------------------------------------------------------
# Running the daemon


def daemon_env(env=None):
    """env (default: ours) without what a service manager set for us."""
    env = dict(os.environ if env is None else env)
    for k in MANAGER_ENV:
        env.pop(k, None)
    return env


def journal_env(fd, env=None):
    """env (default: ours) with JOURNAL_STREAM naming fd, as systemd sets it
    when a service's stderr is the journal: the daemon then writes "<N>"
    priority prefixes instead of "ringechod: LEVEL: "."""
    st = os.fstat(fd)
    env = dict(os.environ if env is None else env)
    env["JOURNAL_STREAM"] = "%d:%d" % (st.st_dev, st.st_ino)
    return env


def run_daemon(args, timeout=START_TIMEOUT, wrapper=None, preexec_fn=None, journal=True):
    """Run the daemon to completion (for -t, -V, config errors); CompletedProcess.

    journal: stderr is "the journal" (JOURNAL_STREAM names it), so log lines
    carry "<N>" prefixes; False runs it as from a terminal or a script."""
    cmd = ([wrapper] if wrapper else []) + [binary()] + list(args)
    with tempfile.TemporaryFile() as err:
        env = journal_env(err.fileno(), daemon_env()) if journal else daemon_env()
        try:
            p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=err, timeout=timeout, env=env,
                               preexec_fn=preexec_fn)
        except subprocess.TimeoutExpired:
            err.seek(0)
            raise AssertionError("%s did not exit within %.0f s; stderr:\n%s"
                                 % (cmd, timeout, err.read().decode(errors="replace"))) \
                from None
        err.seek(0)
        p.stderr = err.read().decode("utf-8", "replace")
        p.stdout = p.stdout.decode("utf-8", "replace")
    return p


def _child_setup(preexec_fn):
    """Child set-up: the daemon dies with the test process, even if ctest kills it."""
    def setup():
        import ctypes
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if preexec_fn is not None:
            preexec_fn()
    return setup


SANITIZER_ENV = ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS")


class Daemon:
    """One running ringechod, its log drained into memory by a thread.

    config: settings for its config file (listen defaults to host:port).
    wrapper: a program (path, or argv list) that runs the daemon, such as
    systemd-socket-activate: the daemon's own argv follows it.
    extra_env: variables to set for the daemon (NOTIFY_SOCKET, WATCHDOG_USEC).
    program: the daemon's program file, if not binary() (a copy that a
    test replaces, as a package upgrade does).
    pass_fds: descriptors of the test's to leave open in the daemon (or
    its wrapper), as systemd passes its sockets.
    forward_env: for a wrapper that passes on only the variables it is told
    to, its option that sets one for the daemon, NAME=VALUE
    (systemd-socket-activate's "-E"): each variable the harness sets
    (JOURNAL_STREAM, extra_env's, the sanitizer options) is given with it.
    """

    def __init__(self, config=None, args=(), port=0, host="127.0.0.1",
                 preexec_fn=None, wrapper=None, conf_path=None, no_config=False,
                 asan_options=None, journal=True, env=None, extra_env=None,
                 forward_env=None, program=None, pass_fds=()):
        settings = {"listen": ["%s:%d" % (host, port)]}
        # RINGECHO_TEST_WORKERS=N runs every daemon with workers = N unless a
        # test asks for a number itself (ctest runs the suite with 1 and 2).
        if os.environ.get("RINGECHO_TEST_WORKERS"):
            settings["workers"] = int(os.environ["RINGECHO_TEST_WORKERS"])
        settings.update(config or {})
        self.settings = settings
        self.conf = write_config(settings, path=conf_path)
        conf_args = [] if no_config else ["-c", self.conf]
        self.lines = []
        self.stdout = []
        self.cond = threading.Condition()
        self.eof = False
        self.listeners = []  # (host, port) in log order
        self.returncode = None
        # Not what a service manager set for the test run itself; an env
        # given by the test is taken as it is.
        env = daemon_env() if env is None else dict(env)
        env.update(extra_env or {})
        if asan_options:  # only read by a sanitizer build
            env["ASAN_OPTIONS"] = ":".join(filter(None, (env.get("ASAN_OPTIONS"),
                                                        asan_options)))
        # The log pipe is made here so that JOURNAL_STREAM can name it.
        err_r, err_w = os.pipe()
        if journal:
            env = journal_env(err_w, env)
        prefix = [wrapper] if isinstance(wrapper, str) else list(wrapper or ())
        if forward_env:
            names = ["JOURNAL_STREAM"] if journal else []
            names += list(extra_env or ()) + [k for k in SANITIZER_ENV if k in env]
            for name in dict.fromkeys(names):
                prefix += [forward_env, "%s=%s" % (name, env[name])]
            # JOURNAL_STREAM is the daemon's alone: a systemd tool that found
            # its own stderr to be "the journal" would log to journald's
            # socket, where there is one, instead of into the pipe.
            env.pop("JOURNAL_STREAM", None)
        self.cmd = prefix + [program or binary()] + conf_args + list(args)
        try:
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=err_w,
                                         preexec_fn=_child_setup(preexec_fn), env=env,
                                         pass_fds=pass_fds)
        except BaseException:
            os.close(err_r)
            raise
        finally:
            os.close(err_w)
        self.log_pipe = os.fdopen(err_r, "rb")
        self.pid = self.proc.pid
        self._threads = [
            threading.Thread(target=self._drain, args=(self.log_pipe, True), daemon=True),
            threading.Thread(target=self._drain, args=(self.proc.stdout, False), daemon=True),
        ]
        for t in self._threads:
            t.start()

    # -- log ---------------------------------------------------------------

    def _drain(self, pipe, is_log):
        for raw in iter(pipe.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self.cond:
                (self.lines if is_log else self.stdout).append(line)
                self.cond.notify_all()
        with self.cond:
            if is_log:
                self.eof = True
            self.cond.notify_all()

    def log_text(self):
        with self.cond:
            return "\n".join(self.lines)

    def last_line(self):
        """The last non-blank line of the log so far."""
        with self.cond:
            lines = [l for l in self.lines if l.strip()]
        return lines[-1] if lines else ""

    def log_mark(self):
        """Index to pass as `start` to wait_log so only later lines count."""
        with self.cond:
            return len(self.lines)

    def fail(self, message):
        raise AssertionError("%s\n--- ringechod log (%s) ---\n%s"
                             % (message, " ".join(self.cmd), self.log_text()))

    def find_log(self, regex, start=0):
        """Matches of regex among the lines captured so far (from `start`)."""
        rx = re.compile(regex)
        with self.cond:
            return [m for m in (rx.search(l) for l in self.lines[start:]) if m]

    def wait_log(self, regex, timeout=IO_TIMEOUT, start=0):
        """Wait for a log line matching regex (from line index `start`); the match."""
        rx = re.compile(regex)
        deadline = time.monotonic() + timeout
        i = start
        with self.cond:
            while True:
                while i < len(self.lines):
                    m = rx.search(self.lines[i])
                    if m:
                        return m
                    i += 1
                if self.eof:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(min(left, 0.5))
        self.fail("no log line matching %r within %.0f s (exited: %s)"
                  % (regex, timeout, self.proc.poll()))

    def wait_ready(self, timeout=START_TIMEOUT):
        """Wait for the ready line; learn the listening ports; return self."""
        self.wait_log(READY_RE.pattern, timeout)
        with self.cond:
            for line in self.lines:
                m = LISTEN_RE.match(line)
                if m:
                    self.listeners.append((m.group(1).strip("[]"), int(m.group(2))))
                if READY_RE.match(line):
                    break
        if not self.listeners:
            self.fail("ready without any 'listening on' line")
        return self

    @property
    def port(self):
        return self.listeners[0][1]

    @property
    def addr(self):
        return self.listeners[0]

    # -- process -------------------------------------------------------------

    def send_signal(self, sig):
        if self.proc.poll() is None:
            os.kill(self.pid, sig)

    def wait_exit(self, timeout=STOP_TIMEOUT):
        """Wait for the process to exit; return its exit code (negative: signal)."""
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.fail("daemon still running %.0f s later" % timeout)
        for t in self._threads:
            t.join(10)
        return self.returncode

    def stop(self, sig=signal.SIGTERM, timeout=STOP_TIMEOUT):
        """Send sig (SIGTERM) and return the exit code."""
        self.send_signal(sig)
        return self.wait_exit(timeout)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        for t in self._threads:
            t.join(5)
        for pipe in (self.proc.stdout, self.log_pipe):
            try:
                pipe.close()
            except OSError:
                pass

    def cleanup(self):
        self.kill()
        try:
            os.unlink(self.conf)
        except OSError:
            pass

    def running(self):
        return self.proc.poll() is None

    def assert_running(self):
        if not self.running():
            self.fail("daemon exited with %s" % self.proc.returncode)

    # -- /proc -------------------------------------------------------------------

    def rss(self):
        return proc_rss(self.pid)

    def fd_count(self):
        return proc_fd_count(self.pid)

    def cpu_seconds(self):
        return proc_cpu_seconds(self.pid)

    def wait_fd_count(self, expected, timeout=IO_TIMEOUT):
        """Poll until the daemon holds exactly `expected` fds; fail with the last count."""
        deadline = time.monotonic() + timeout
        while True:
            n = self.fd_count()
            if n == expected:
                return n
            if time.monotonic() > deadline:
                self.fail("daemon holds %d fds, expected %d (fds: %s)"
                          % (n, expected, describe_fds(self.pid)))
            time.sleep(0.05)

    # -- clients -----------------------------------------------------------------

    def connect(self, index=0, timeout=IO_TIMEOUT, source=None):
        host, port = self.listeners[index]
        return connect(host, port, timeout=timeout, source=source)

    def stats(self, timeout=IO_TIMEOUT):
        """Send SIGUSR1 and return the counters of the stats line it logs."""
        mark = self.log_mark()
        self.send_signal(signal.SIGUSR1)
        m = self.wait_log(r"^<6>stats: (.*)$", timeout, start=mark)
        return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(1))}


def proc_rss(pid):
    """Resident set size of pid in bytes: smaps_rollup's, which is exact
    (status's VmRSS is a per-CPU estimate on kernels before 6.16)."""
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Rss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS for pid %d" % pid)


def proc_fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def describe_fds(pid):
    out = []
    for name in sorted(os.listdir("/proc/%d/fd" % pid), key=int):
        try:
            out.append("%s->%s" % (name, os.readlink("/proc/%d/fd/%s" % (pid, name))))
        except OSError:
            pass
    if len(out) > 40:
        out = out[:20] + ["..."] + out[-20:]
    return ", ".join(out)


def proc_cpu_seconds(pid):
    """utime + stime of pid, in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is the state (field 3); utime, stime are fields 14 and 15.
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------
# Client side


def connect(host, port, timeout=IO_TIMEOUT, source=None):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        if source is not None:
            s.bind((source, 0))
        s.settimeout(timeout)
        s.connect((host, port))
    except BaseException:
        s.close()
        raise
    return s


def recv_exact(sock, n, timeout=IO_TIMEOUT):
    """Read exactly n bytes; fail on EOF or timeout."""
    sock.settimeout(timeout)
    chunks = []
    got = 0
    while got < n:
        try:
            b = sock.recv(min(n - got, 1 << 20))
        except socket.timeout:
            raise AssertionError("timed out after %d of %d bytes" % (got, n)) from None
        if not b:
            raise AssertionError("EOF after %d of %d bytes" % (got, n))
        chunks.append(b)
        got += len(b)
    return b"".join(chunks)


def recv_until_eof(sock, timeout=IO_TIMEOUT, limit=1 << 30):
    """Read until EOF (a clean FIN); an RST raises ConnectionResetError."""
    sock.settimeout(timeout)
    chunks = []
    got = 0
    deadline = time.monotonic() + timeout
    while True:
        try:
            b = sock.recv(1 << 20)
        except socket.timeout:
            raise AssertionError("no EOF after %d bytes within %.0f s" % (got, timeout)) from None
        if not b:
            return b"".join(chunks)
        chunks.append(b)
        got += len(b)
        if got > limit or time.monotonic() > deadline:
            raise AssertionError("no EOF after %d bytes" % got)


def expect_eof(sock, timeout=IO_TIMEOUT):
    """Assert the peer closes cleanly with no data: recv returns b''."""
    data = recv_until_eof(sock, timeout)
    if data:
        raise AssertionError("expected EOF, got %d bytes first: %r" % (len(data), data[:64]))


def tcp_queues(local, remote):
    """(tx_queue, rx_queue) of the TCP socket local -> remote, from /proc/net/tcp*.

    local and remote are (host, port); None when there is no such socket.
    """
    lport, rport = "%04X" % local[1], "%04X" % remote[1]
    # A TIME_WAIT entry of an earlier connection that used the same two
    # ports (ports are reused fast in a long test run) has empty queues and
    # must not be taken for the live socket; nor must a listener.
    stale = ("06", "0A")  # TCP_TIME_WAIT, TCP_LISTEN
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(name) as f:
            next(f)
            for line in f:
                fields = line.split()
                if (fields[1].endswith(":" + lport) and fields[2].endswith(":" + rport)
                        and fields[3] not in stale):
                    tx, rx = fields[4].split(":")
                    return int(tx, 16), int(rx, 16)
    return None


def tcp_snapshot(sock):
    """(client tx queue, daemon rx queue) of sock's connection, read twice to
    be sure it is not moving; None while it is."""
    me, peer = sock.getsockname()[:2], sock.getpeername()[:2]
    first = (tcp_queues(me, peer), tcp_queues(peer, me))
    second = (tcp_queues(me, peer), tcp_queues(peer, me))
    if first != second or None in first:
        return None
    return first[0][0], first[1][1]


def fill_until_paused(sock, chunk=1 << 16, seed=0, limit=1 << 28, timeout=30):
    """Send random bytes without reading until the daemon stops reading this
    connection; return them.  The daemon's socket send buffer is then full,
    its send is stalled in flight, and at least half of max_pending_bytes of
    echo waits behind it in the daemon's memory: in held buffers (as many as
    the chain and the pool's budget allow), then in the queue."""
    sock.setblocking(False)
    sent = bytearray()
    block = random_bytes(chunk, seed)
    deadline = time.monotonic() + timeout
    blocked_since = None
    try:
        while True:
            try:
                sent += block[:sock.send(block)]
                blocked_since = None
                continue
            except BlockingIOError:
                pass
            snap = tcp_snapshot(sock)
            if snap and snap[1] > 0:
                return bytes(sent)  # unread bytes wait in the daemon's socket
            # Under load the kernel may close the daemon's receive window with
            # its queue empty: then our bytes wait unacknowledged and the
            # daemon takes no more either. Two seconds of that is a pause.
            if snap and snap[0] > 0:
                blocked_since = blocked_since or time.monotonic()
                if time.monotonic() - blocked_since > 2:
                    return bytes(sent)
            else:
                blocked_since = None
            if len(sent) > limit or time.monotonic() > deadline:
                raise AssertionError("the daemon never stopped reading (%d bytes sent)"
                                     % len(sent))
            select.select([], [sock], [], 0.05)
    finally:
        sock.setblocking(True)


def daemon_rx_queue(sock):
    """Bytes the daemon has not read yet on sock's connection (its TCP rx queue)."""
    q = tcp_queues(sock.getpeername()[:2], sock.getsockname()[:2])
    return None if q is None else q[1]


def bytes_read_by_daemon(sock, sent, timeout=10):
    """How many of the `sent` bytes the daemon has taken off its socket: the
    rest is unacknowledged in our send queue or unread in its receive queue."""
    deadline = time.monotonic() + timeout
    while True:
        snap = tcp_snapshot(sock)
        if snap is not None:
            return sent - snap[0] - snap[1]
        if time.monotonic() > deadline:
            raise AssertionError("the connection's queues never settled")
        time.sleep(0.01)


def wait_until(cond, timeout, what, daemon=None):
    """Poll cond() until true; fail (with the daemon's log, given one) after timeout."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            msg = "no %s within %.0f s" % (what, timeout)
            if daemon:
                daemon.fail(msg)
            raise AssertionError(msg)
        time.sleep(0.01)


def send_in_background(sock, data):
    """sendall(data) then SHUT_WR on a thread; returns it and a list that
    collects its OSError, if any."""
    err = []

    def send():
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError as e:
            err.append(e)
    t = threading.Thread(target=send, daemon=True)
    t.start()
    return t, err


def wait_received_by_daemon(sock, timeout=IO_TIMEOUT):
    """Wait until the daemon has read every byte sent on sock (nothing queued on the way)."""
    import fcntl
    import struct
    import termios
    client, server = sock.getsockname()[:2], sock.getpeername()[:2]
    deadline = time.monotonic() + timeout
    while True:
        outq = struct.unpack("i", fcntl.ioctl(sock, termios.TIOCOUTQ, b"\0\0\0\0"))[0]
        queues = tcp_queues(server, client)
        if outq == 0 and queues is not None and queues[1] == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError("the daemon has not read everything: client outq %d, "
                                 "daemon side tx/rx %s" % (outq, queues))
        time.sleep(0.01)


def set_linger_reset(sock):
    """close() will then send an RST instead of a FIN."""
    import struct
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def echo_roundtrip(sock, data, timeout=IO_TIMEOUT):
    """Send data and read the same number of bytes back, concurrently; return them.

    Concurrent so a payload larger than the socket buffers cannot deadlock.
    """
    return duplex([sock], [data], timeout=timeout)[0]


def duplex(socks, payloads, timeout=IO_TIMEOUT, chunk=65536, half_close=False,
           rng=None):
    """Send payloads[i] on socks[i] while reading the echo, all at once.

    Returns the bytes read on each socket: len(payload) bytes, or, with
    half_close, everything until EOF after shutdown(SHUT_WR).  chunk bounds
    one send; with rng, each send's size is random in 1..chunk.
    """
    sel = selectors.DefaultSelector()
    state = []
    for i, (s, p) in enumerate(zip(socks, payloads)):
        s.setblocking(False)
        st = {"i": i, "sock": s, "data": memoryview(p), "sent": 0,
              "buf": bytearray(), "eof": False, "shut": False}
        state.append(st)
        sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE, st)
    pending = len(state)
    deadline = time.monotonic() + timeout
    try:
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("duplex timed out: %s" % _progress(state))
            for key, ev in sel.select(min(left, 1.0)):
                st = key.data
                if ev & selectors.EVENT_WRITE:
                    _duplex_send(st, chunk, rng, half_close, sel)
                if ev & selectors.EVENT_READ:
                    if _duplex_recv(st, half_close, sel):
                        pending -= 1
    finally:
        sel.close()
        for s in socks:
            s.setblocking(True)
    return [bytes(st["buf"]) for st in state]


def _progress(state):
    bad = [st for st in state if not st["eof"]][:5]
    return "; ".join("conn %d sent %d/%d recv %d" % (st["i"], st["sent"], len(st["data"]),
                                                     len(st["buf"])) for st in bad)


def _duplex_send(st, chunk, rng, half_close, sel):
    s, data = st["sock"], st["data"]
    if st["sent"] < len(data):
        n = rng.randint(1, chunk) if rng else chunk
        try:
            st["sent"] += s.send(data[st["sent"]:st["sent"] + n])
        except BlockingIOError:
            pass
    if st["sent"] == len(data):
        if half_close and not st["shut"]:
            s.shutdown(socket.SHUT_WR)
            st["shut"] = True
        if not st["eof"]:
            sel.modify(s, selectors.EVENT_READ, st)


def _duplex_recv(st, half_close, sel):
    """Read what is there; True once this connection is complete."""
    s = st["sock"]
    try:
        b = s.recv(1 << 18)
    except BlockingIOError:
        return False
    except ConnectionResetError:
        raise AssertionError("conn %d reset by the daemon after %d bytes echoed"
                             % (st["i"], len(st["buf"]))) from None
    if not b:
        if not half_close:
            raise AssertionError("conn %d: unexpected EOF after %d of %d bytes"
                                 % (st["i"], len(st["buf"]), len(st["data"])))
        st["eof"] = True
        sel.unregister(s)
        return True
    st["buf"] += b
    if len(st["buf"]) > len(st["data"]):
        raise AssertionError("conn %d: %d bytes echoed but only %d sent"
                             % (st["i"], len(st["buf"]), len(st["data"])))
    if not half_close and len(st["buf"]) == len(st["data"]):
        st["eof"] = True
        sel.unregister(s)
        return True
    return False


def random_bytes(n, seed):
    """n reproducible pseudo-random bytes."""
    return random.Random(seed).randbytes(n)


def varied_payloads(n, size, seed):
    """n reproducible payloads of varied lengths, 1 to 2 * size bytes."""
    return [random_bytes(1 + (size + i * 7919) % (2 * size), seed=seed + i) for i in range(n)]


def assert_same(testcase, got, expected, what="echo"):
    """Compare two byte strings, reporting the first difference instead of a dump."""
    if got == expected:
        return
    n = min(len(got), len(expected))
    first = next((i for i in range(n) if got[i] != expected[i]), n)
    testcase.fail("%s differs: got %d bytes, expected %d, first difference at offset %d "
                  "(got %r, expected %r)" % (what, len(got), len(expected), first,
                                              got[first:first + 16], expected[first:first + 16]))


def sha256(b):
    return hashlib.sha256(b).hexdigest()


def connection_refused(host, port, timeout=5.0):
    """True if connecting to host:port is refused right now."""
    try:
        s = connect(host, port, timeout=timeout)
    except ConnectionRefusedError:
        return True
    s.close()
    return False


def wait_refused(host, port, timeout=IO_TIMEOUT):
    """Poll until host:port refuses connections; False if it never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if connection_refused(host, port):
            return True
        time.sleep(0.05)
    return False


SANITIZER_RE = re.compile(r"ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:")


def close_with_reset(sock):
    """Close so that the peer gets an RST (SO_LINGER 0)."""
    set_linger_reset(sock)
    sock.close()


def read_all_until_eof(socks, timeout=IO_TIMEOUT, daemon=None):
    """Read every socket to EOF at once; what each read.  An RST or a missing
    EOF fails (through daemon.fail, with its log, when there is a daemon)."""
    def fail(msg):
        if daemon:
            daemon.fail(msg)
        raise AssertionError(msg)

    sel = selectors.DefaultSelector()
    bufs = [bytearray() for _ in socks]
    for i, s in enumerate(socks):
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, i)
    left = len(socks)
    deadline = time.monotonic() + timeout
    try:
        while left:
            if time.monotonic() > deadline:
                fail("no EOF within %.0f s; read %s" % (timeout, [len(b) for b in bufs]))
            for key, _ in sel.select(0.5):
                i = key.data
                try:
                    b = socks[i].recv(1 << 20)
                except BlockingIOError:
                    continue
                except ConnectionResetError:
                    fail("client %d reset after %d bytes" % (i, len(bufs[i])))
                if not b:
                    sel.unregister(socks[i])
                    left -= 1
                else:
                    bufs[i] += b
    finally:
        sel.close()
        for s in socks:
            s.setblocking(True)
    return [bytes(b) for b in bufs]


class DaemonTestCase(unittest.TestCase):
    """Base class: start() daemons that are always killed on teardown."""

    @classmethod
    def setUpClass(cls):
        require_binary()
        raise_nofile_limit()

    def start(self, config=None, args=(), ready=True, **kw):
        d = Daemon(config, args, **kw)
        self.addCleanup(d.cleanup)
        if ready:
            d.wait_ready()
        return d

    def client(self, daemon, index=0, source=None):
        s = daemon.connect(index, source=source)
        self.addCleanup(s.close)
        return s

    def assert_echo(self, sock, data, daemon=None):
        try:
            got = echo_roundtrip(sock, data)
        except AssertionError as e:
            if daemon:
                daemon.fail(str(e))
            raise
        assert_same(self, got, data)

    def assert_exit(self, daemon, code, sig=signal.SIGTERM, timeout=STOP_TIMEOUT):
        rc = daemon.stop(sig, timeout)
        if rc != code:
            daemon.fail("exit code %s, expected %s" % (rc, code))

    def slow_reader(self, d, rcvbuf=4096, timeout=IO_TIMEOUT):
        """A client with a tiny receive buffer: once it stops reading, the
        daemon's sends to it stall soon."""
        s = socket.socket()
        self.addCleanup(s.close)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(timeout)
        s.connect(d.addr)
        return s

    def client_served(self, d, source=None, timeout=IO_TIMEOUT):
        """A new connection that is served, retrying while the daemon turns
        them away (a close that makes room is processed asynchronously)."""
        deadline = time.monotonic() + timeout
        while True:
            s = self.client(d, source=source)
            try:
                got = echo_roundtrip(s, b"served", timeout=10)
            except AssertionError:  # EOF: turned away
                s.close()
                if time.monotonic() > deadline:
                    d.fail("no connection served from %s" % source)
                time.sleep(0.05)
                continue
            if got != b"served":
                d.fail("echo %r instead of b'served'" % got)
            return s

    def wait_no_connections(self, d, base_fds, timeout=30):
        """Every connection freed: none counted, and the daemon's fds back
        to base (a client reset before its accept is still accepted later)."""
        deadline = time.monotonic() + timeout
        while True:
            n = d.stats()["connections"]
            if n == 0:
                break
            if time.monotonic() > deadline:
                d.fail("%d connections still open" % n)
            time.sleep(0.05)
        d.wait_fd_count(base_fds)

    def streamers(self, d, n, seed, index=0, **kw):
        """n Streamer clients of listener `index` (kw: Streamer's pacing)."""
        st = Streamer([d.connect(index) for _ in range(n)], seed=seed, **kw)
        self.addCleanup(st.close)
        return st

    def finish_streams(self, st):
        """Half-close every streamer: each gets all it sent, then EOF."""
        st.stop_sending(half_close=True)
        st.pump(st.all_eof, what="EOF on every client")
        st.check(self, complete=True)


class CheckedTestCase(DaemonTestCase):
    """Every daemon is checked for sanitizer reports once it has stopped."""

    def start(self, config=None, args=(), ready=True, **kw):
        d = Daemon(config, args, **kw)
        # Cleanups run last-in first-out: the daemon is killed (and its whole
        # log collected) before its log is searched.
        self.addCleanup(self.assert_no_sanitizer_report, d)
        self.addCleanup(d.cleanup)
        if ready:
            d.wait_ready()
        return d

    def assert_no_sanitizer_report(self, d):
        if SANITIZER_RE.search(d.log_text()):
            raise AssertionError("sanitizer report in the daemon's stderr:\n%s"
                                 % d.log_text()[-6000:])

    def stop_clean(self, d, timeout=STOP_TIMEOUT):
        rc = d.stop(timeout=timeout)
        self.assert_no_sanitizer_report(d)
        if rc != 0:
            d.fail("exit code %s, expected 0" % rc)

    def assert_buffers_not_leaked(self, d, before, after):
        """Between two stats() of a pipelined load: chains still formed (the
        hold budget is not leaked) and receives did not starve (no buffer is)."""
        msgs = after["messages"] - before["messages"]
        self.assertGreater(after["chained_sends"], before["chained_sends"],
                           "no chained send in a pipelined load: the hold budget "
                           "is used up (held buffers leaked?)\n%s" % d.log_text())
        self.assertLess(after["bufring_empty"] - before["bufring_empty"], msgs,
                        "receives starved more often than they got a buffer")

    def pipeline(self, d, payloads, seed, chunk=16 * KiB, half_close=False, timeout=60,
                 what="pipelined load"):
        """One client per payload sends it in random pieces of up to chunk
        while reading the echo (then half-closes, with half_close); each
        must get all of it back.  The clients are closed."""
        socks = [self.client(d) for _ in payloads]
        try:
            got = duplex(socks, payloads, timeout=timeout, chunk=chunk,
                         half_close=half_close, rng=random.Random(seed))
        except (AssertionError, OSError) as e:  # OSError: EPIPE, ECONNRESET
            d.fail("%s: %s: %s" % (what, type(e).__name__, e))
        for i, s in enumerate(socks):
            assert_same(self, got[i], payloads[i], "%s, connection %d" % (what, i))
            s.close()

    def assert_pool_intact(self, d, seed, n=8, size=256 * KiB):
        """A pipelined load is echoed exactly, chains still form (the hold
        budget is not leaked) and receives do not starve (no buffer is)."""
        before = d.stats()
        self.pipeline(d, [random_bytes(size, seed=seed + i) for i in range(n)], seed,
                      chunk=32 * KiB, what="pool check (buffers leaked?)")
        after = d.stats()
        self.assert_buffers_not_leaked(d, before, after)
        return after


class Streamer:
    """Clients that keep sending paced random data while reading the echo.

    Each client sends up to `chunk` bytes every `interval` seconds and never
    has more than `window` bytes unechoed, so memory stays small however long
    the stream runs.  After the daemon's EOF a client stops sending.  check()
    asserts that what came back is an exact prefix of what was sent.
    """

    def __init__(self, socks, chunk=1024, interval=0.01, window=64 * 1024, seed=0):
        self.sel = selectors.DefaultSelector()
        self.clients = []
        for i, s in enumerate(socks):
            s.setblocking(False)
            c = {"i": i, "sock": s, "rng": random.Random(seed * 100003 + i),
                 "sent": bytearray(), "recv": bytearray(), "eof": False, "eof_at": None,
                 "reset": None, "send_error": None, "sending": True, "shut": False,
                 "next": 0.0}
            self.clients.append(c)
            self.sel.register(s, selectors.EVENT_READ, c)
        self.chunk, self.interval, self.window = chunk, interval, window

    def close(self):
        self.sel.close()
        for c in self.clients:
            c["sock"].close()

    def received(self):
        return [len(c["recv"]) for c in self.clients]

    def all_eof(self):
        return all(c["eof"] or c["reset"] for c in self.clients)

    def stop_sending(self, half_close=False):
        for c in self.clients:
            c["sending"] = False
            if half_close and not c["eof"] and not c["shut"]:
                try:
                    c["sock"].shutdown(socket.SHUT_WR)
                except OSError as e:
                    c["send_error"] = e
                c["shut"] = True

    def pump(self, until, timeout=IO_TIMEOUT, what="condition"):
        """Run the clients until until() is true; fail after timeout."""
        deadline = time.monotonic() + timeout
        while not until():
            now = time.monotonic()
            if now > deadline:
                raise AssertionError("streaming clients: no %s within %.0f s; received %s, "
                                     "eof %s" % (what, timeout, self.received()[:10],
                                                 [c["eof"] for c in self.clients][:10]))
            for c in self.clients:
                self._send(c, now)
            for key, _ in self.sel.select(self.interval):
                self._recv(key.data)

    def _send(self, c, now):
        if not c["sending"] or c["eof"] or c["reset"] or c["send_error"] or now < c["next"]:
            return
        if len(c["sent"]) - len(c["recv"]) >= self.window:
            return
        data = c["rng"].randbytes(c["rng"].randint(1, self.chunk))
        try:
            n = c["sock"].send(data)
        except BlockingIOError:
            return
        except OSError as e:  # EPIPE / ECONNRESET after the daemon closed: stop sending
            c["send_error"] = e
            return
        c["sent"] += data[:n]
        c["next"] = now + self.interval

    def _recv(self, c):
        for _ in range(16):
            try:
                b = c["sock"].recv(1 << 16)
            except BlockingIOError:
                return
            except ConnectionResetError as e:
                c["reset"] = e
                self.sel.unregister(c["sock"])
                return
            if not b:
                c["eof"] = True
                c["eof_at"] = time.monotonic()
                self.sel.unregister(c["sock"])
                return
            c["recv"] += b

    def check(self, testcase, complete=False):
        """Every client: echo is an exact prefix (complete: all) of what it sent, then EOF."""
        for c in self.clients:
            tag = "client %d" % c["i"]
            testcase.assertIsNone(c["reset"], "%s: reset after %d bytes" % (tag, len(c["recv"])))
            testcase.assertTrue(c["eof"], "%s: no EOF" % tag)
            sent, got = bytes(c["sent"]), bytes(c["recv"])
            if complete:
                assert_same(testcase, got, sent, tag)
            else:
                assert_same(testcase, got, sent[:len(got)], tag + " (prefix)")
