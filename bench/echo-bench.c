/* SPDX-License-Identifier: MIT */
// SPDX-License-Identifier: MIT
/*
 * echo-bench: load generator and checker for TCP echo servers.
 *
 * Modes:
 *   pingpong   each connection sends one message, waits for all of its echo,
 *              checks every byte, and sends the next;
 *   pipelined  each connection keeps --depth messages in flight;
 *   hold       opens --connections connections, echoes one --size message on
 *              each (so the server has really accepted and served it), then
 *              holds them idle until SIGTERM/SIGINT/SIGUSR1 (memory per idle
 *              connection is measured from outside meanwhile).
 *
 * Cheapness: one thread, one level-triggered epoll set, up to EVENTS_MAX
 * events per epoll_wait, one read and one write per message at most. Sends
 * come straight out of a pattern buffer (no copy), and checks are a memcmp
 * against it: connection i's byte stream is pattern[(pos + i * CONN_SKEW) % P],
 * with P prime so a lost, repeated or reordered chunk never lines up.
 *
 * Window: connect all, warm up, then measure for --duration; at the window's
 * edges the server's CPU time is read from /proc (--server-pid) and a perf
 * stat started with "-D -1 --control fifo:CTL,ACK" is enabled/disabled
 * (--perf-ctl), so every figure covers the same interval. Afterwards the
 * echoes still in flight are drained and checked.
 *
 * Exit: 0 ok, 2 an echo differed from what was sent, 3 a connection failed
 * (refused, reset, closed early), 1 other failure, 64 usage.
 */
#define _GNU_SOURCE /* accept4, IP_BIND_ADDRESS_NO_PORT */
#include "echo-bench.h"

#include <errno.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define EVENTS_MAX	 1024
#define CONN_SKEW	 7919 /* per-connection offset into the pattern */
#define DRAIN_TIMEOUT_NS (3 * NS_PER_S)

/* Set by the signal handler only; the loop reads it after epoll_wait. */
static volatile sig_atomic_t stop_requested;

static void on_stop_signal(int sig)
{
	stop_requested = sig;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

static double self_cpu_s(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

void vcomplain(const char *fmt, va_list ap)
{
	fputs("echo-bench: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
}

void die(int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vcomplain(fmt, ap);
	va_end(ap);
	exit(code);
}

static const uint8_t *pattern_at(const struct bench *b, unsigned int idx, uint64_t pos)
{
	return b->pattern + (pos + (uint64_t)idx * CONN_SKEW) % PATTERN_PERIOD;
}

static void pattern_init(uint8_t *p)
{
	uint64_t x = 0x9e3779b97f4a7c15ULL; /* fixed seed: runs are repeatable */

	for (size_t i = 0; i < PATTERN_PERIOD; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		p[i] = (uint8_t)(x >> 24);
	}
	/* Repeat the start, so any IO_MAX window is contiguous (overlaps: no memcpy). */
	for (size_t i = PATTERN_PERIOD; i < PATTERN_BYTES; i++)
		p[i] = p[i - PATTERN_PERIOD];
}

/* ---- epoll interest ---------------------------------------------------- */

static void set_interest(struct bench *b, unsigned int idx, bool want_out)
{
	struct conn *c = &b->conns[idx];
	struct epoll_event ev = {.events = EPOLLIN, .data.u32 = idx};

	if (c->want_out == want_out)
		return;
	if (want_out)
		ev.events |= EPOLLOUT;
	if (epoll_ctl(b->epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0)
		die(1, "epoll_ctl: %s", strerror(errno));
	c->want_out = want_out;
}

/* ---- sending ------------------------------------------------------------ */

/* How many messages this connection may have sent by now. */
static uint64_t send_allowance(const struct bench *b, const struct conn *c)
{
	uint64_t done = c->rcvd / b->o.size;
	uint64_t limit = done + b->o.depth;

	if (b->phase == PH_DRAIN || b->phase == PH_DONE)
		return c->sent / b->o.size + (c->sent % b->o.size != 0);
	if (b->o.mode == MODE_HOLD)
		return 1;
	if (b->o.count && limit > b->o.count)
		limit = b->o.count;
	return limit;
}

static void stamp_sends(struct bench *b, struct conn *c, uint64_t from, uint64_t n,
			uint64_t now)
{
	uint64_t size = b->o.size;
	uint64_t first = (from + size - 1) / size; /* first message starting here */
	uint64_t end = (from + n + size - 1) / size;

	for (uint64_t m = first; m < end; m++)
		c->ts[m % b->o.depth] = now;
}

static void conn_send(struct bench *b, unsigned int idx, uint64_t now)
{
	struct conn *c = &b->conns[idx];
	uint64_t target = send_allowance(b, c) * b->o.size;
	size_t len;
	ssize_t n;

	if (c->sent >= target) {
		set_interest(b, idx, false);
		return;
	}
	len = target - c->sent > IO_MAX ? IO_MAX : (size_t)(target - c->sent);
	n = write(c->fd, pattern_at(b, idx, c->sent), len);
	if (n < 0) {
		if (errno != EAGAIN && errno != EINTR)
			die(EXIT_CONNFAIL, "connection %u: write: %s", idx,
			    strerror(errno));
		n = 0;
	}
	stamp_sends(b, c, c->sent, (uint64_t)n, now);
	c->sent += (uint64_t)n;
	/* A short write: the rest goes when the socket has room again. */
	set_interest(b, idx, c->sent < target);
}

/* ---- receiving ---------------------------------------------------------- */

static void report_mismatch(const struct bench *b, unsigned int idx, const uint8_t *got,
			    size_t n)
{
	const struct conn *c = &b->conns[idx];
	const uint8_t *want = pattern_at(b, idx, c->rcvd);
	size_t i = 0;

	while (i < n && got[i] == want[i])
		i++;
	die(EXIT_MISMATCH,
	    "connection %u: echo mismatch at stream byte %llu (message %llu, byte %llu): "
	    "got 0x%02x, sent 0x%02x",
	    idx, (unsigned long long)(c->rcvd + i),
	    (unsigned long long)((c->rcvd + i) / b->o.size),
	    (unsigned long long)((c->rcvd + i) % b->o.size), got[i], want[i]);
}

static void count_messages(struct bench *b, struct conn *c, uint64_t old, uint64_t now)
{
	uint64_t first = old / b->o.size, end = c->rcvd / b->o.size;

	if (b->phase != PH_MEASURE)
		return; /* warm-up and drain: checked, not counted */
	for (uint64_t m = first; m < end; m++)
		hist_add(&b->hist, now - c->ts[m % b->o.depth]);
	b->msgs += end - first;
}

static void conn_finished(struct bench *b, unsigned int idx)
{
	b->conns[idx].state = CS_FINISHED;
	b->finished++;
}

static void conn_eof(struct bench *b, unsigned int idx, ssize_t n)
{
	const struct conn *c = &b->conns[idx];

	die(EXIT_CONNFAIL, "connection %u: %s after %llu of %llu bytes echoed", idx,
	    n == 0 ? "closed by the server" : strerror(errno),
	    (unsigned long long)c->rcvd, (unsigned long long)c->sent);
}

/* Returns whether the read filled the scratch buffer (more may be waiting). */
static bool conn_recv_once(struct bench *b, unsigned int idx, uint64_t now)
{
	struct conn *c = &b->conns[idx];
	ssize_t n = read(c->fd, b->scratch, SCRATCH_BYTES);
	uint64_t old = c->rcvd;

	if (n <= 0) {
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return false;
		conn_eof(b, idx, n);
	}
	if ((uint64_t)n > c->sent - c->rcvd)
		die(EXIT_MISMATCH, "connection %u: %lld bytes more than were sent", idx,
		    (long long)((uint64_t)n - (c->sent - c->rcvd)));
	if (memcmp(b->scratch, pattern_at(b, idx, c->rcvd), (size_t)n))
		report_mismatch(b, idx, b->scratch, (size_t)n);
	c->rcvd += (uint64_t)n;
	count_messages(b, c, old, now);
	return n == SCRATCH_BYTES;
}

static void hold_settled(struct bench *b, unsigned int idx);

/* Nothing in flight, and no message left half-sent by a short write. */
static bool drained(const struct bench *b, const struct conn *c)
{
	return c->rcvd == c->sent && c->sent % b->o.size == 0;
}

static void conn_readable(struct bench *b, unsigned int idx, uint64_t now)
{
	struct conn *c = &b->conns[idx];

	while (conn_recv_once(b, idx, now))
		;
	if (c->state == CS_FINISHED)
		return;
	if (b->o.mode == MODE_HOLD) {
		if (c->rcvd == c->sent && c->sent)
			hold_settled(b, idx);
		return;
	}
	if (b->o.count && c->rcvd == b->o.count * b->o.size) {
		conn_finished(b, idx);
		return;
	}
	if (b->phase == PH_DRAIN) {
		if (drained(b, c))
			conn_finished(b, idx);
		return;
	}
	if (!c->want_out)
		conn_send(b, idx, now);
}

/* ---- connecting --------------------------------------------------------- */

static void bind_source(const struct bench *b, int fd, unsigned int idx)
{
	struct sockaddr_in src = {.sin_family = AF_INET};
	int one = 1;

	/* Port chosen at connect(): the 4-tuple, not the address, must be unique. */
	setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
	src.sin_addr.s_addr = htonl(INADDR_LOOPBACK + idx % b->o.sources);
	if (bind(fd, (struct sockaddr *)&src, sizeof(src)) < 0)
		die(EXIT_CONNFAIL, "bind 127.0.0.%u: %s", 1 + idx % b->o.sources,
		    strerror(errno));
}

static void conn_start(struct bench *b, unsigned int idx)
{
	struct conn *c = &b->conns[idx];
	struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.u32 = idx};
	int one = 1;

	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0)
		die(1, "socket (connection %u): %s", idx, strerror(errno));
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (b->o.sources > 1)
		bind_source(b, c->fd, idx);
	if (connect(c->fd, (struct sockaddr *)&b->o.dst, sizeof(b->o.dst)) < 0 &&
	    errno != EINPROGRESS)
		die(EXIT_CONNFAIL, "connect (connection %u): %s", idx, strerror(errno));
	if (epoll_ctl(b->epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0)
		die(1, "epoll_ctl: %s", strerror(errno));
	c->state = CS_CONNECTING;
	c->want_out = true;
	b->started++;
	b->pending++;
}

static void start_connects(struct bench *b)
{
	while (b->started < b->o.conns && b->pending < b->o.connect_batch)
		conn_start(b, b->started);
}

static void hold_settled(struct bench *b, unsigned int idx)
{
	b->conns[idx].state = CS_IDLE;
	b->pending--;
	b->settled++;
	start_connects(b);
}

static void conn_connected(struct bench *b, unsigned int idx, uint64_t now)
{
	struct conn *c = &b->conns[idx];
	int err = 0;
	socklen_t len = sizeof(err);

	getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
	if (err)
		die(EXIT_CONNFAIL, "connect (connection %u): %s", idx, strerror(err));
	c->state = CS_ACTIVE;
	if (b->o.mode == MODE_HOLD && b->o.size) {
		conn_send(b, idx, now); /* settled once its echo is back */
		return;
	}
	set_interest(b, idx, false);
	b->pending--;
	b->settled++;
	start_connects(b);
}

/* ---- phases ------------------------------------------------------------- */

static void on_event(struct bench *b, const struct epoll_event *ev, uint64_t now)
{
	unsigned int idx = ev->data.u32;
	struct conn *c = &b->conns[idx];

	if (c->state == CS_CONNECTING) {
		if (ev->events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
			conn_connected(b, idx, now);
		return;
	}
	if (c->state == CS_FINISHED)
		return;
	if (ev->events & (EPOLLIN | EPOLLERR | EPOLLHUP))
		conn_readable(b, idx, now);
	if ((ev->events & EPOLLOUT) && c->state == CS_ACTIVE && c->want_out)
		conn_send(b, idx, now);
}

static void perf_command(struct bench *b, const char *cmd)
{
	struct pollfd p = {.fd = b->perf_ack_fd, .events = POLLIN};
	char ack[16];

	if (b->perf_ctl_fd < 0)
		return;
	if (write(b->perf_ctl_fd, cmd, strlen(cmd)) < 0)
		die(1, "perf control: %s", strerror(errno));
	/* Wait for perf to act, so counting starts and stops where we say. */
	if (b->perf_ack_fd >= 0 && poll(&p, 1, 2000) == 1 &&
	    read(b->perf_ack_fd, ack, 16) < 0)
		die(1, "perf ack: %s", strerror(errno));
}

static void window_open(struct bench *b)
{
	perf_command(b, "enable\n");
	if (b->o.server_pid)
		b->win.srv_ok = proc_cpu_read(b->o.server_pid, &b->win.srv0) == 0;
	proc_machine_busy(&b->win.busy0, &b->win.steal0);
	b->win.client_cpu0 = self_cpu_s();
	b->win.t0 = now_ns();
	hist_reset(&b->hist);
	b->msgs = 0;
}

static void window_close(struct bench *b)
{
	b->win.t1 = now_ns();
	b->win.msgs = b->msgs;
	b->win.client_cpu1 = self_cpu_s();
	proc_machine_busy(&b->win.busy1, &b->win.steal1);
	if (b->win.srv_ok)
		b->win.srv_ok = proc_cpu_read(b->o.server_pid, &b->win.srv1) == 0;
	perf_command(b, "disable\n");
}

static void start_load(struct bench *b, uint64_t now)
{
	b->connect_t1 = now;
	b->phase = PH_WARMUP;
	b->phase_end = now + (uint64_t)(b->o.warmup * NS_PER_S);
	if (b->o.count) {
		/* A counted run measures all of itself; --duration bounds it. */
		b->phase = PH_MEASURE;
		b->phase_end = now + (uint64_t)(b->o.duration * NS_PER_S);
		window_open(b);
	}
	b->next_tick = now + NS_PER_S;
	b->tick_msgs = 0;
	for (unsigned int i = 0; i < b->o.conns; i++)
		conn_send(b, i, now);
}

static void start_drain(struct bench *b, uint64_t now)
{
	b->phase = PH_DRAIN;
	b->phase_end = now + DRAIN_TIMEOUT_NS;
	for (unsigned int i = 0; i < b->o.conns; i++) {
		struct conn *c = &b->conns[i];

		if (c->state == CS_ACTIVE && drained(b, c))
			conn_finished(b, i);
	}
}

static void progress_line(struct bench *b, uint64_t now)
{
	uint64_t done = b->msgs - b->tick_msgs;

	if (b->o.progress && b->phase <= PH_MEASURE)
		fprintf(stderr, "[%s] %llu msg/s, p99 %.1f us\n",
			b->phase == PH_WARMUP ? "warm-up" : "measure",
			(unsigned long long)done, hist_quantile(&b->hist, 0.99) / 1e3);
	b->tick_msgs = b->msgs;
	b->next_tick = now + NS_PER_S;
}

static void advance_phase(struct bench *b, uint64_t now)
{
	if (b->phase == PH_CONNECT && b->settled == b->o.conns) {
		if (b->o.mode == MODE_HOLD) {
			b->connect_t1 = now;
			b->phase = PH_HOLD;
			printf("holding %u connections\n", b->o.conns);
			fflush(stdout);
		} else {
			start_load(b, now);
		}
		return;
	}
	if (b->o.count) {
		if (b->finished == b->o.conns) {
			window_close(b);
			b->phase = PH_DONE;
		} else if (now >= b->phase_end || stop_requested) {
			die(EXIT_CONNFAIL,
			    "%u of %u connections still waiting for echoes "
			    "after %.0f s",
			    b->o.conns - b->finished, b->o.conns, b->o.duration);
		}
		return;
	}
	if (now >= b->next_tick)
		progress_line(b, now);
	if (b->phase == PH_WARMUP && now >= b->phase_end) {
		b->phase = PH_MEASURE;
		b->phase_end = now + (uint64_t)(b->o.duration * NS_PER_S);
		window_open(b);
	} else if (b->phase == PH_MEASURE && (now >= b->phase_end || stop_requested)) {
		window_close(b);
		start_drain(b, now);
	}
	if (b->phase != PH_DRAIN)
		return;
	if (b->finished == b->o.conns)
		b->phase = PH_DONE;
	else if (now >= b->phase_end)
		die(EXIT_CONNFAIL,
		    "%u of %u connections still waiting for echoes %llu s "
		    "after the window closed",
		    b->o.conns - b->finished, b->o.conns,
		    (unsigned long long)(DRAIN_TIMEOUT_NS / NS_PER_S));
}

static int wait_timeout_ms(const struct bench *b, uint64_t now)
{
	uint64_t next;

	if (b->phase == PH_CONNECT || b->phase == PH_HOLD)
		return 1000;
	next = b->phase_end < b->next_tick ? b->phase_end : b->next_tick;
	return next > now ? (int)((next - now) / 1000000) + 1 : 0;
}

static void run(struct bench *b)
{
	struct epoll_event *events = calloc(EVENTS_MAX, sizeof(*events));

	if (!events)
		die(1, "out of memory");
	b->connect_t0 = now_ns();
	start_connects(b);
	while (b->phase != PH_DONE) {
		int n =
		    epoll_wait(b->epfd, events, EVENTS_MAX, wait_timeout_ms(b, now_ns()));
		uint64_t now = now_ns();

		if (n < 0 && errno != EINTR)
			die(1, "epoll_wait: %s", strerror(errno));
		for (int i = 0; i < n; i++)
			on_event(b, &events[i], now);
		if (b->phase == PH_HOLD && stop_requested)
			break;
		if (stop_requested && b->phase < PH_WARMUP)
			die(1, "interrupted while connecting (%u of %u settled)",
			    b->settled, b->o.conns);
		advance_phase(b, now);
	}
	free(events);
}

static void install_signals(void)
{
	struct sigaction sa = {.sa_handler = on_stop_signal};

	sigaction(SIGTERM, &sa, NULL); /* no SA_RESTART: epoll_wait returns EINTR */
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGUSR1, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

int main(int argc, char **argv)
{
	static struct bench b; /* large (histogram): not on the stack */

	opts_parse(&b, argc, argv);
	bench_setup(&b);
	pattern_init(b.pattern);
	install_signals();
	run(&b);
	report_print(&b);
	if (b.o.mode == MODE_HOLD)
		bench_abort_conns(&b);
	return 0;
}
