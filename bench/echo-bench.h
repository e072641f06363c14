/* SPDX-License-Identifier: MIT */
/* SPDX-License-Identifier: MIT */
/* echo-bench's shared state: the loop and window (echo-bench.c), the TCP and
 * UDP engines (bench-tcp.c, bench-udp.c), options and set-up (bench-setup.c)
 * and output (bench-report.c). */
#ifndef BENCH_ECHO_BENCH_H
#define BENCH_ECHO_BENCH_H

#include <stdarg.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/epoll.h>

#include "hist.h"
#include "procstat.h"

#define NS_PER_S       1000000000ULL
#define PATTERN_PERIOD 65521 /* prime: a shifted chunk never matches */
#define IO_MAX	       (256 * 1024)
#define PATTERN_BYTES  (PATTERN_PERIOD + IO_MAX)
#define SCRATCH_BYTES  (64 * 1024)
#define CONN_SKEW      7919  /* per-connection offset into the pattern */
#define UDP_SIZE_MAX   65507 /* the largest UDP payload over IPv4 */
#define UDP_HDR_BYTES  12    /* a datagram starts with its seq (8) and client (4) */
#define UDP_SEQ_NONE   UINT64_MAX

enum exit_code { EXIT_MISMATCH = 2, EXIT_CONNFAIL = 3, EXIT_USAGE = 64 };
enum proto { PROTO_TCP, PROTO_UDP };
enum mode { MODE_PINGPONG, MODE_PIPELINED, MODE_HOLD };
enum phase { PH_CONNECT, PH_WARMUP, PH_MEASURE, PH_DRAIN, PH_HOLD, PH_DONE };
enum conn_state { CS_CONNECTING = 1, CS_ACTIVE, CS_IDLE, CS_FINISHED };

struct opts {
	struct sockaddr_storage dst;
	socklen_t dst_len;
	enum proto proto;
	enum mode mode;
	unsigned int conns;
	unsigned int size;
	unsigned int depth;
	double duration;
	double warmup;
	uint64_t count; /* messages per connection; 0 = run for duration */
	unsigned int sources;
	unsigned int connect_batch;
	uint64_t timeout_ns; /* UDP: a datagram unanswered this long is lost; TCP: 0 */
	int server_pid;
	struct cpu_list server_cpus;  /* --server-cpu; count 0: not given */
	const char *server_cpus_text; /* as given, for the report */
	const char *perf_ctl;
	bool json, progress, quiet;
};

/* UDP: one of a client's --depth datagrams in flight. */
struct udp_slot {
	uint64_t seq;	  /* of the datagram it last sent; UDP_SEQ_NONE before */
	uint64_t sent_ns; /* its send time; 0: nothing awaited */
};

struct conn {
	int fd;
	uint8_t state;
	bool want_out;
	uint64_t sent, rcvd; /* TCP: bytes of its stream; UDP: datagrams sent, answered */
	uint64_t *ts;	     /* TCP: send time of message m at ts[m % depth] */
	struct udp_slot *slots; /* UDP: depth of them */
	unsigned int waiting;	/* UDP: slots awaiting an echo */
};

/* UDP datagrams over the whole run; the window's share is udp1 - udp0. */
struct udp_counts {
	uint64_t sent;	   /* handed to sendmmsg */
	uint64_t answered; /* echoed in time, checked */
	uint64_t timeouts; /* given up on after --timeout */
	uint64_t late;	   /* echoed after their timeout (or twice), checked */
};

/* What happened between the measurement window's two edges. */
struct window {
	uint64_t t0, t1;
	uint64_t msgs;
	double client_cpu0, client_cpu1;
	struct proc_cpu srv0, srv1;
	bool srv_ok;
	struct core_time core0, core1; /* the server's cores (--server-cpu) */
	bool core_ok;
	struct core_time mach0, mach1; /* every online CPU */
	bool mach_ok;
	struct udp_counts udp0, udp1;
};

struct bench;

/* What differs between TCP and UDP; the loop and the phases are shared. */
struct engine {
	void (*start)(struct bench *b); /* connects (or opens) every client */
	void (*start_load)(struct bench *b, uint64_t now);
	void (*on_event)(struct bench *b, const struct epoll_event *ev, uint64_t now);
	void (*start_drain)(struct bench *b, uint64_t now); /* no new messages */
	void (*on_timer)(struct bench *b, uint64_t now);    /* at b->next_timer */
};

extern const struct engine tcp_engine, udp_engine;
struct udp_io;

struct bench {
	struct opts o;
	const struct engine *eng;
	int epfd;
	struct conn *conns;
	uint8_t *pattern;
	uint8_t *scratch;
	enum phase phase;
	unsigned int started, pending, settled, finished;
	uint64_t connect_t0, connect_t1;
	uint64_t phase_end, next_tick, tick_msgs;
	uint64_t next_timer; /* the engine's next on_timer; 0: none */
	uint64_t msgs;	     /* messages completed in the current phase */
	struct hist hist;
	struct window win;
	int perf_ctl_fd, perf_ack_fd;
	struct udp_counts udp;
	struct udp_io *uio; /* UDP: the batch of datagrams in and out */
};

/* Prints "echo-bench: MESSAGE" on stderr and exits with code. */
/* "echo-bench: " + the message + newline on stderr. */
void vcomplain(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));
void die(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));

/* Marks a connection or client done; the phase moves on when all are. */
void conn_finished(struct bench *b, unsigned int idx);

/* Binds fd to 127.0.0.(1 + idx % sources) before its connect. */
void bind_source(const struct bench *b, int fd, unsigned int idx);

/* Parses argv into b->o; exits 64 on a usage error. */
void opts_parse(struct bench *b, int argc, char **argv);

/* Allocates connections and buffers, raises RLIMIT_NOFILE, opens perf FIFOs. */
void bench_setup(struct bench *b);

/* Prints the run's figures (text, or one JSON object with --json). */
void report_print(const struct bench *b);

/* Releases held connections with a reset, so no TIME_WAIT is left behind. */
void bench_abort_conns(struct bench *b);

#endif
