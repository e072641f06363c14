/* SPDX-License-Identifier: MIT */
/* SPDX-License-Identifier: MIT */
/* echo-bench's shared state: the engine (echo-bench.c), options and set-up
 * (bench-setup.c) and output (bench-report.c). */
#ifndef BENCH_ECHO_BENCH_H
#define BENCH_ECHO_BENCH_H

#include <stdarg.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>

#include "hist.h"
#include "procstat.h"

#define NS_PER_S       1000000000ULL
#define PATTERN_PERIOD 65521 /* prime: a shifted chunk never matches */
#define IO_MAX	       (256 * 1024)
#define PATTERN_BYTES  (PATTERN_PERIOD + IO_MAX)
#define SCRATCH_BYTES  (64 * 1024)

enum exit_code { EXIT_MISMATCH = 2, EXIT_CONNFAIL = 3, EXIT_USAGE = 64 };
enum mode { MODE_PINGPONG, MODE_PIPELINED, MODE_HOLD };
enum phase { PH_CONNECT, PH_WARMUP, PH_MEASURE, PH_DRAIN, PH_HOLD, PH_DONE };
enum conn_state { CS_CONNECTING = 1, CS_ACTIVE, CS_IDLE, CS_FINISHED };

struct opts {
	struct sockaddr_in dst;
	enum mode mode;
	unsigned int conns;
	unsigned int size;
	unsigned int depth;
	double duration;
	double warmup;
	uint64_t count; /* messages per connection; 0 = run for duration */
	unsigned int sources;
	unsigned int connect_batch;
	int server_pid;
	const char *perf_ctl;
	bool json, progress, quiet;
};

struct conn {
	int fd;
	uint8_t state;
	bool want_out;
	uint64_t sent, rcvd; /* bytes of this connection's stream */
	uint64_t *ts;	     /* send time of message m at ts[m % depth] */
};

/* What happened between the measurement window's two edges. */
struct window {
	uint64_t t0, t1;
	uint64_t msgs;
	double client_cpu0, client_cpu1;
	struct proc_cpu srv0, srv1;
	bool srv_ok;
	double busy0, busy1, steal0, steal1; /* whole machine */
};

struct bench {
	struct opts o;
	int epfd;
	struct conn *conns;
	uint8_t *pattern;
	uint8_t *scratch;
	enum phase phase;
	unsigned int started, pending, settled, finished;
	uint64_t connect_t0, connect_t1;
	uint64_t phase_end, next_tick, tick_msgs;
	uint64_t msgs; /* messages completed in the current phase */
	struct hist hist;
	struct window win;
	int perf_ctl_fd, perf_ack_fd;
};

/* Prints "echo-bench: MESSAGE" on stderr and exits with code. */
/* "echo-bench: " + the message + newline on stderr. */
void vcomplain(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));
void die(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));

/* Parses argv into b->o; exits 64 on a usage error. */
void opts_parse(struct bench *b, int argc, char **argv);

/* Allocates connections and buffers, raises RLIMIT_NOFILE, opens perf FIFOs. */
void bench_setup(struct bench *b);

/* Prints the run's figures (text, or one JSON object with --json). */
void report_print(const struct bench *b);

/* Releases held connections with a reset, so no TIME_WAIT is left behind. */
void bench_abort_conns(struct bench *b);

#endif
