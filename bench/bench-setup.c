/* SPDX-License-Identifier: MIT */
// SPDX-License-Identifier: MIT
/* echo-bench's command line and the set-up that follows from it. */
#define _GNU_SOURCE /* IP_BIND_ADDRESS_NO_PORT */
#include "echo-bench.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define DEPTH_DEFAULT	      16
#define HOLD_SIZE_DEFAULT     16
#define CONNECT_BATCH_DEFAULT 256 /* connects in flight: under the server's backlog */
#define FD_SPARE	      64  /* epoll, stdio, perf FIFOs, /proc reads */
#define SIZE_MAX_MSG	      (64U << 20)
#define UDP_TIMEOUT_MS	      200 /* loopback answers in microseconds; a VM may stall for ms */
#define UDP_TIMEOUT_MS_MAX    60000
#define NS_PER_MS	      1000000ULL

static const char usage_text[] =
    "usage: echo-bench -t HOST:PORT [options]\n"
    "  -t, --target HOST:PORT   server address: A.B.C.D:PORT or [V6]:PORT\n"
    "  -P, --protocol PROTO     tcp (default) or udp\n"
    "  -m, --mode MODE          pingpong (default), pipelined or hold (TCP)\n"
    "  -c, --connections N      connections, or UDP clients (default 1)\n"
    "  -s, --size BYTES         message size (default 512; hold: 16, 0 = no echo;\n"
    "                           UDP: the datagram, 12 to 65507)\n"
    "  -D, --depth N            messages in flight per connection, pipelined (16)\n"
    "  -d, --duration SEC       measured window (default 5); with -n: time limit\n"
    "  -w, --warmup SEC         load before the window opens (default 1)\n"
    "  -n, --count N            send N messages per connection, measure all of them\n"
    "  -S, --sources N          spread connections over 127.0.0.1..127.0.0.N\n"
    "      --connect-batch N    connects in flight at once (default 256)\n"
    "      --timeout MS         UDP: a datagram unanswered this long is lost and\n"
    "                           replaced by a new one (default 200)\n"
    "      --server-pid PID     report PID's CPU time over the window (/proc)\n"
    "      --server-cpu LIST    report the busy time of these CPUs (as taskset -c:\n"
    "                           0 or 0-3,8), softirq included, summed\n"
    "      --perf-ctl CTL,ACK   enable/disable a 'perf stat -D -1 --control\n"
    "                           fifo:CTL,ACK' at the window's edges\n"
    "      --json               one JSON object on stdout\n"
    "      --progress           a line per second on stderr\n"
    "  -q, --quiet              no text report\n"
    "exit: 0 ok, 2 echo mismatch, 3 connection failed (UDP: refused, or nothing\n"
    "echoed), 1 other error, 64 usage\n";

static void usage_error(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));

static void usage_error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vcomplain(fmt, ap);
	va_end(ap);
	fputs(usage_text, stderr);
	exit(EXIT_USAGE);
}

static unsigned long long parse_uint(const char *s, unsigned long long min,
				     unsigned long long max)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || end == s || *s == '-' || v < min || v > max)
		usage_error("bad number '%s'", s);
	return v;
}

static double parse_seconds(const char *s)
{
	char *end;
	double v = strtod(s, &end);

	if (*end || end == s || !(v >= 0 && v < 1e6))
		usage_error("bad duration '%s'", s);
	return v;
}

static void parse_target(struct opts *o, const char *arg)
{
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&o->dst;
	struct sockaddr_in *sin = (struct sockaddr_in *)&o->dst;
	char host[INET6_ADDRSTRLEN + 2];
	const char *colon = strrchr(arg, ':');
	size_t len = colon ? (size_t)(colon - arg) : 0;
	int ok;

	if (!len || len >= sizeof(host))
		usage_error("bad target '%s' (expected A.B.C.D:PORT or [V6]:PORT)", arg);
	memcpy(host, arg, len);
	host[len] = '\0';
	memset(&o->dst, 0, sizeof(o->dst));
	if (host[0] == '[' && host[len - 1] == ']') {
		host[len - 1] = '\0';
		sin6->sin6_family = AF_INET6;
		ok = inet_pton(AF_INET6, host + 1, &sin6->sin6_addr) == 1;
		o->dst_len = sizeof(*sin6);
	} else {
		sin->sin_family = AF_INET;
		ok = inet_pton(AF_INET, host, &sin->sin_addr) == 1;
		o->dst_len = sizeof(*sin);
	}
	if (!ok)
		usage_error("bad target '%s' (expected A.B.C.D:PORT or [V6]:PORT)", arg);
	/* sin_port and sin6_port sit at the same offset. */
	sin->sin_port = htons((uint16_t)parse_uint(colon + 1, 1, 65535));
}

static enum proto parse_proto(const char *s)
{
	if (!strcmp(s, "tcp"))
		return PROTO_TCP;
	if (!strcmp(s, "udp"))
		return PROTO_UDP;
	usage_error("unknown protocol '%s' (tcp or udp)", s);
}

static enum mode parse_mode(const char *s)
{
	if (!strcmp(s, "pingpong") || !strcmp(s, "ping-pong"))
		return MODE_PINGPONG;
	if (!strcmp(s, "pipelined"))
		return MODE_PIPELINED;
	if (!strcmp(s, "hold"))
		return MODE_HOLD;
	usage_error("unknown mode '%s'", s);
}

enum long_only {
	OPT_CONNECT_BATCH = 256,
	OPT_TIMEOUT,
	OPT_SERVER_PID,
	OPT_SERVER_CPU,
	OPT_PERF_CTL,
	OPT_JSON,
	OPT_PROGRESS
};

static const struct option long_opts[] = {
    {"target", required_argument, NULL, 't'},
    {"protocol", required_argument, NULL, 'P'},
    {"mode", required_argument, NULL, 'm'},
    {"connections", required_argument, NULL, 'c'},
    {"size", required_argument, NULL, 's'},
    {"depth", required_argument, NULL, 'D'},
    {"duration", required_argument, NULL, 'd'},
    {"warmup", required_argument, NULL, 'w'},
    {"count", required_argument, NULL, 'n'},
    {"sources", required_argument, NULL, 'S'},
    {"connect-batch", required_argument, NULL, OPT_CONNECT_BATCH},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"server-pid", required_argument, NULL, OPT_SERVER_PID},
    {"server-cpu", required_argument, NULL, OPT_SERVER_CPU},
    {"perf-ctl", required_argument, NULL, OPT_PERF_CTL},
    {"json", no_argument, NULL, OPT_JSON},
    {"progress", no_argument, NULL, OPT_PROGRESS},
    {"quiet", no_argument, NULL, 'q'},
    {"help", no_argument, NULL, 'h'},
    {0},
};

/* One option into o; returns false for an unknown one. */
static bool parse_one(struct opts *o, int opt, const char *arg, long *size)
{
	switch (opt) {
	case 't':
		parse_target(o, arg);
		break;
	case 'P':
		o->proto = parse_proto(arg);
		break;
	case 'm':
		o->mode = parse_mode(arg);
		break;
	case 'c':
		o->conns = (unsigned int)parse_uint(arg, 1, 4000000);
		break;
	case 's':
		*size = (long)parse_uint(arg, 0, SIZE_MAX_MSG);
		break;
	case 'D':
		o->depth = (unsigned int)parse_uint(arg, 1, 65536);
		break;
	case 'd':
		o->duration = parse_seconds(arg);
		break;
	case 'w':
		o->warmup = parse_seconds(arg);
		break;
	case 'n':
		o->count = parse_uint(arg, 1, 1ULL << 40);
		break;
	case 'S':
		o->sources = (unsigned int)parse_uint(arg, 1, 254);
		break;
	case OPT_CONNECT_BATCH:
		o->connect_batch = (unsigned int)parse_uint(arg, 1, 1 << 20);
		break;
	case OPT_TIMEOUT:
		o->timeout_ns = parse_uint(arg, 1, UDP_TIMEOUT_MS_MAX) * NS_PER_MS;
		break;
	case OPT_SERVER_PID:
		o->server_pid = (int)parse_uint(arg, 1, 1 << 30);
		break;
	case OPT_SERVER_CPU:
		if (cpu_list_parse(arg, &o->server_cpus) < 0)
			usage_error("bad CPU list '%s' (expected e.g. 0 or 0-3,8)", arg);
		o->server_cpus_text = arg;
		break;
	case OPT_PERF_CTL:
		o->perf_ctl = arg;
		break;
	case OPT_JSON:
		o->json = true;
		break;
	case OPT_PROGRESS:
		o->progress = true;
		break;
	case 'q':
		o->quiet = true;
		break;
	default:
		return false;
	}
	return true;
}

static void opts_finish_udp(struct opts *o)
{
	if (o->mode == MODE_HOLD)
		usage_error("%s", "hold mode is for TCP only");
	if (o->size < UDP_HDR_BYTES || o->size > UDP_SIZE_MAX)
		usage_error("a UDP datagram is %d to %d bytes", UDP_HDR_BYTES,
			    UDP_SIZE_MAX);
	if (!o->timeout_ns)
		o->timeout_ns = UDP_TIMEOUT_MS * NS_PER_MS;
}

static void opts_finish(struct opts *o, long size)
{
	if (!o->dst_len)
		usage_error("%s", "a target is required (-t HOST:PORT)");
	if (o->sources > 1 && o->dst.ss_family != AF_INET)
		usage_error("%s",
			    "--sources spreads over 127.0.0.x: an IPv4 target only");
	if (o->mode == MODE_PINGPONG || o->mode == MODE_HOLD)
		o->depth = 1;
	if (size < 0)
		size = o->mode == MODE_HOLD ? HOLD_SIZE_DEFAULT : 512;
	if (size == 0 && o->mode != MODE_HOLD)
		usage_error("%s", "--size 0 is for hold mode only");
	o->size = (unsigned int)size;
	if (o->duration <= 0)
		usage_error("%s", "--duration must be above 0");
	if (o->proto == PROTO_UDP)
		opts_finish_udp(o);
	else
		o->timeout_ns = 0;
}

void opts_parse(struct bench *b, int argc, char **argv)
{
	struct opts *o = &b->o;
	long size = -1;
	int opt;

	*o = (struct opts){.conns = 1,
			   .depth = DEPTH_DEFAULT,
			   .duration = 5,
			   .warmup = 1,
			   .sources = 1,
			   .connect_batch = CONNECT_BATCH_DEFAULT};
	while ((opt = getopt_long(argc, argv, "t:P:m:c:s:D:d:w:n:S:qh", long_opts,
				  NULL)) != -1) {
		if (opt == 'h') {
			fputs(usage_text, stdout);
			exit(0);
		}
		if (!parse_one(o, opt, optarg, &size))
			usage_error("%s", "unknown option");
	}
	if (optind != argc)
		usage_error("unexpected argument '%s'", argv[optind]);
	opts_finish(o, size);
}

/* Root may lift the hard limit too, up to fs.nr_open. */
static void raise_nofile(rlim_t need)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= need)
		return;
	rl.rlim_cur = need;
	if (rl.rlim_max < need)
		rl.rlim_max = need;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
		die(1, "cannot raise the open-file limit to %llu: %s (fs.nr_open?)",
		    (unsigned long long)need, strerror(errno));
}

static void open_perf_fifos(struct bench *b)
{
	char ctl[4096];
	char *ack;

	b->perf_ctl_fd = b->perf_ack_fd = -1;
	if (!b->o.perf_ctl)
		return;
	snprintf(ctl, sizeof(ctl), "%s", b->o.perf_ctl);
	ack = strchr(ctl, ',');
	if (ack)
		*ack++ = '\0';
	/* O_RDWR: a FIFO opened so never blocks, whether perf is up yet or not. */
	b->perf_ctl_fd = open(ctl, O_RDWR | O_CLOEXEC);
	if (b->perf_ctl_fd < 0)
		die(1, "%s: %s", ctl, strerror(errno));
	if (ack && (b->perf_ack_fd = open(ack, O_RDWR | O_CLOEXEC)) < 0)
		die(1, "%s: %s", ack, strerror(errno));
}

void bind_source(const struct bench *b, int fd, unsigned int idx)
{
	struct sockaddr_in src = {.sin_family = AF_INET};
	int one = 1;

	/* TCP: port chosen at connect(), as the 4-tuple, not the address, must
	 * be unique. UDP takes a port at bind, one per socket anyway. */
	if (b->o.proto == PROTO_TCP)
		setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
	src.sin_addr.s_addr = htonl(INADDR_LOOPBACK + idx % b->o.sources);
	if (bind(fd, (struct sockaddr *)&src, sizeof(src)) < 0)
		die(EXIT_CONNFAIL, "bind 127.0.0.%u: %s", 1 + idx % b->o.sources,
		    strerror(errno));
}

void bench_setup(struct bench *b)
{
	uint64_t *ts;

	b->eng = b->o.proto == PROTO_UDP ? &udp_engine : &tcp_engine;
	raise_nofile((rlim_t)b->o.conns + FD_SPARE);
	b->conns = calloc(b->o.conns, sizeof(*b->conns));
	ts = calloc((size_t)b->o.conns * b->o.depth, sizeof(*ts));
	b->pattern = malloc(PATTERN_BYTES);
	b->scratch = malloc(SCRATCH_BYTES);
	if (!b->conns || !ts || !b->pattern || !b->scratch)
		die(1, "out of memory");
	for (unsigned int i = 0; i < b->o.conns; i++)
		b->conns[i].ts = ts + (size_t)i * b->o.depth;
	b->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (b->epfd < 0)
		die(1, "epoll_create1: %s", strerror(errno));
	open_perf_fifos(b);
}

void bench_abort_conns(struct bench *b)
{
	struct linger lg = {.l_onoff = 1, .l_linger = 0};

	for (unsigned int i = 0; i < b->o.conns; i++) {
		if (!b->conns[i].state)
			continue;
		setsockopt(b->conns[i].fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		close(b->conns[i].fd);
	}
}
