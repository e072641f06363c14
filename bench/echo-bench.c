/* SPDX-License-Identifier: MIT */
// SPDX-License-Identifier: MIT
/*
 * echo-bench: load generator and checker for TCP and UDP echo servers.
 *
 * Engines: TCP (bench-tcp.c): connections, each a checked byte stream; UDP
 * (bench-udp.c): clients, each a connected UDP socket sending checked,
 * numbered datagrams, with timeouts for the lost ones. This file holds what
 * both share: the phases, the measurement window, the loop.
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
 * events per epoll_wait; the engines send out of a pattern buffer (no copy)
 * and check with a memcmp against it.
 *
 * Window: connect all, warm up, then measure for --duration; at the window's
 * edges the server's CPU time is read from /proc (--server-pid), and its
 * cores' busy time, softirq included, from /proc/stat (--server-cpu); a perf
 * stat started with "-D -1 --control fifo:CTL,ACK" is enabled/disabled
 * (--perf-ctl), so every figure covers the same interval. Afterwards the
 * echoes still in flight are drained and checked.
 *
 * Exit: 0 ok, 2 an echo differed from what was sent, 3 a connection failed
 * (refused, reset, closed early; UDP: refused, or nothing ever echoed),
 * 1 other failure, 64 usage.
 */
#include "echo-bench.h"

#include <errno.h>
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

/* ---- shared by the engines ---------------------------------------------- */

void conn_finished(struct bench *b, unsigned int idx)
{
	b->conns[idx].state = CS_FINISHED;
	b->finished++;
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
	if (b->o.server_cpus.count)
		b->win.core_ok = proc_cores_time(&b->o.server_cpus, &b->win.core0) == 0;
	b->win.mach_ok = proc_cores_time(NULL, &b->win.mach0) == 0;
	b->win.udp0 = b->udp;
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
	b->win.udp1 = b->udp;
	if (b->win.mach_ok)
		b->win.mach_ok = proc_cores_time(NULL, &b->win.mach1) == 0 &&
				 b->win.mach1.ncpus == b->win.mach0.ncpus;
	if (b->win.core_ok)
		b->win.core_ok = proc_cores_time(&b->o.server_cpus, &b->win.core1) == 0;
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
	b->eng->start_load(b, now);
}

static void start_drain(struct bench *b, uint64_t now)
{
	b->phase = PH_DRAIN;
	/* UDP: what is still awaited is given up after one more timeout. */
	b->phase_end = now + DRAIN_TIMEOUT_NS + b->o.timeout_ns;
	b->eng->start_drain(b, now);
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

	if (b->phase == PH_CONNECT && b->settled == b->o.conns)
		return 0; /* UDP: all "connected" at once, no event to wait for */
	if (b->phase == PH_CONNECT || b->phase == PH_HOLD)
		return 1000;
	next = b->phase_end < b->next_tick ? b->phase_end : b->next_tick;
	if (b->next_timer && b->next_timer < next)
		next = b->next_timer;
	return next > now ? (int)((next - now) / 1000000) + 1 : 0;
}

static void run(struct bench *b)
{
	struct epoll_event *events = calloc(EVENTS_MAX, sizeof(*events));

	if (!events)
		die(1, "out of memory");
	b->connect_t0 = now_ns();
	b->eng->start(b);
	while (b->phase != PH_DONE) {
		int n =
		    epoll_wait(b->epfd, events, EVENTS_MAX, wait_timeout_ms(b, now_ns()));
		uint64_t now = now_ns();

		if (n < 0 && errno != EINTR)
			die(1, "epoll_wait: %s", strerror(errno));
		for (int i = 0; i < n; i++)
			b->eng->on_event(b, &events[i], now);
		if (b->next_timer && now >= b->next_timer)
			b->eng->on_timer(b, now);
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
