/* SPDX-License-Identifier: MIT */
// SPDX-License-Identifier: MIT
/*
 * epoll-echo: the baseline every ringechod figure is compared to.
 *
 * A careful single-threaded epoll echo server, written the way a good epoll
 * server is written, so that the comparison is honest:
 *
 *  - level-triggered: one read per readiness report is enough, since the
 *    kernel reports the socket again if data is left; an edge-triggered loop
 *    would have to read until EAGAIN, one wasted syscall per message;
 *  - one epoll_wait collects up to EVENTS_MAX ready sockets;
 *  - data read is written back at once with no wait for EPOLLOUT; only a short
 *    write keeps the remainder in a per-connection buffer and asks for
 *    EPOLLOUT, so ping-pong costs one read and one write per message;
 *  - reads go into one shared buffer, so an idle connection costs a small
 *    struct, not a buffer;
 *  - backpressure: a client whose unsent echo exceeds max_pending is not read
 *    until it drains;
 *  - EMFILE: a reserved descriptor is given up to accept and close the
 *    connection at once, so the listener is not reported ready forever;
 *  - TCP_NODELAY on every connection, SIGPIPE ignored, clean exit on
 *    SIGTERM/SIGINT read from a signalfd in the epoll set (a flag set by a
 *    handler can land just before epoll_wait and be lost; valgrind, which
 *    must exit to write its profile, hits that window);
 *  - UDP echo on the same loop with -u (epoll-udp.c): recvmmsg and sendmmsg
 *    of whole batches.
 *
 * Usage: epoll-echo [-l HOST:PORT | -p PORT] [-u HOST:PORT]... [-b BYTES]
 *                   [-m BYTES] [-q]
 * HOST is A.B.C.D, [V6] or * (any); with -u alone, no TCP listener.
 */
#define _GNU_SOURCE /* accept4, IP_BIND_ADDRESS_NO_PORT */
#include "epoll-echo.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define EVENTS_MAX	   1024
#define ACCEPTS_PER_WAKEUP 256 /* keep serving clients during a connect storm */
#define READS_PER_EVENT	   16  /* a full buffer hints at more; cap for fairness */
#define READ_BUF_DEFAULT   (64 * 1024)
#define PENDING_DEFAULT	   (256 * 1024) /* as ringechod's max_pending_bytes */
#define BACKLOG		   4096
#define TCP_DEFAULT	   "127.0.0.1:7777"

struct conn {
	enum ep_kind kind; /* EP_CONN: first, see ep_kind */
	int fd;
	uint32_t events; /* the interest set registered with epoll */
	bool eof;	 /* client half-closed: flush, then close */
	char *pend;	 /* unsent echo, only after a short write */
	size_t pend_off, pend_len, pend_cap;
};

struct server {
	int epfd;
	int lfd; /* -1: UDP only */
	int sigfd;
	int reserve_fd; /* given up to accept-and-close on EMFILE */
	char *buf;
	size_t buf_size;
	size_t max_pending;
	unsigned long conns;
	struct udp_echo *udp;
	bool quiet;
};

/* What the command line asks for. */
struct listen_args {
	struct sockaddr_storage tcp;
	bool tcp_set;
	struct sockaddr_storage udp[UDP_SOCKETS_MAX];
	unsigned int nudp;
};

/* epoll_event.data.ptr of the two descriptors that are neither. */
static enum ep_kind listener_tag = EP_LISTENER, signal_tag = EP_SIGNAL;

socklen_t addr_len(const struct sockaddr_storage *ss)
{
	return ss->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
					 : sizeof(struct sockaddr_in);
}

/* A.B.C.D, [V6], * or nothing (any IPv4) into ss, port not yet set. */
static int parse_host(const char *host, size_t len, struct sockaddr_storage *ss)
{
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	char buf[INET6_ADDRSTRLEN];

	memset(ss, 0, sizeof(*ss));
	if (len >= 2 && host[0] == '[' && host[len - 1] == ']') {
		if (len - 2 >= sizeof(buf))
			return -EINVAL;
		memcpy(buf, host + 1, len - 2);
		buf[len - 2] = '\0';
		sin6->sin6_family = AF_INET6;
		return inet_pton(AF_INET6, buf, &sin6->sin6_addr) == 1 ? 0 : -EINVAL;
	}
	if (len >= sizeof(buf))
		return -EINVAL;
	memcpy(buf, host, len);
	buf[len] = '\0';
	sin->sin_family = AF_INET;
	if (!len || !strcmp(buf, "*"))
		sin->sin_addr.s_addr = htonl(INADDR_ANY);
	else if (inet_pton(AF_INET, buf, &sin->sin_addr) != 1)
		return -EINVAL;
	return 0;
}

static int parse_listen(const char *arg, struct sockaddr_storage *ss)
{
	const char *colon = strrchr(arg, ':');
	char *end;
	long port;

	if (!colon)
		return -EINVAL;
	port = strtol(colon + 1, &end, 10);
	if (*end || end == colon + 1 || port < 0 || port > 65535 ||
	    parse_host(arg, (size_t)(colon - arg), ss) < 0)
		return -EINVAL;
	/* sin_port and sin6_port sit at the same offset. */
	((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
	return 0;
}

static int listen_on(const struct sockaddr_storage *ss)
{
	int one = 1;
	int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (ss->ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)ss, addr_len(ss)) < 0 ||
	    listen(fd, BACKLOG) < 0) {
		int err = -errno;

		close(fd);
		return err;
	}
	return fd;
}

void print_listening(const char *prefix, int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	char host[INET6_ADDRSTRLEN];
	unsigned int port;

	if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
		return;
	if (ss.ss_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&ss;

		inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
		port = ntohs(sin6->sin6_port);
		printf("listening on %s[%s]:%u\n", prefix, host, port);
	} else {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)&ss;

		inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
		port = ntohs(sin->sin_port);
		printf("listening on %s%s:%u\n", prefix, host, port);
	}
	fflush(stdout);
}

static int set_interest(struct server *srv, struct conn *c, uint32_t events)
{
	struct epoll_event ev = {.events = events, .data.ptr = c};

	if (c->events == events)
		return 0;
	if (epoll_ctl(srv->epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0)
		return -errno;
	c->events = events;
	return 0;
}

static void conn_close(struct server *srv, struct conn *c)
{
	/* close() also removes the fd from the epoll set: no EPOLL_CTL_DEL. */
	close(c->fd);
	free(c->pend);
	free(c);
	srv->conns--;
}

/* Keep bytes the socket did not take; the caller then waits for EPOLLOUT. */
static int pend_append(struct conn *c, const char *data, size_t len)
{
	size_t need = c->pend_len + len;

	if (c->pend_off && c->pend_off == c->pend_len) {
		c->pend_off = 0;
		c->pend_len = 0;
		need = len;
	}
	if (need > c->pend_cap) {
		size_t cap = c->pend_cap ? c->pend_cap : 4096;
		char *p;

		while (cap < need)
			cap *= 2;
		p = realloc(c->pend, cap);
		if (!p)
			return -ENOMEM;
		c->pend = p;
		c->pend_cap = cap;
	}
	memcpy(c->pend + c->pend_len, data, len);
	c->pend_len += len;
	return 0;
}

/* Interest follows state: read unless backlogged or at EOF, write if pending. */
static int update_interest(struct server *srv, struct conn *c)
{
	size_t pending = c->pend_len - c->pend_off;
	uint32_t ev = 0;

	if (!c->eof && pending < srv->max_pending)
		ev |= EPOLLIN;
	if (pending)
		ev |= EPOLLOUT;
	return set_interest(srv, c, ev);
}

/* Returns 0, or -errno when the connection is to be closed. */
static int echo_out(struct conn *c, const char *data, size_t len)
{
	ssize_t n = write(c->fd, data, len);

	if (n < 0) {
		if (errno != EAGAIN && errno != EINTR)
			return -errno;
		n = 0;
	}
	if ((size_t)n == len)
		return 0;
	return pend_append(c, data + n, len - (size_t)n);
}

static int flush_pending(struct conn *c)
{
	size_t left = c->pend_len - c->pend_off;
	ssize_t n;

	if (!left)
		return 0;
	n = write(c->fd, c->pend + c->pend_off, left);
	if (n < 0)
		return errno == EAGAIN || errno == EINTR ? 0 : -errno;
	c->pend_off += (size_t)n;
	if (c->pend_off == c->pend_len) {
		c->pend_off = 0;
		c->pend_len = 0;
	}
	return 0;
}

static int on_readable(struct server *srv, struct conn *c)
{
	for (int i = 0; i < READS_PER_EVENT; i++) {
		ssize_t n = read(c->fd, srv->buf, srv->buf_size);
		int err;

		if (n == 0) {
			c->eof = true;
			return 0;
		}
		if (n < 0)
			return errno == EAGAIN || errno == EINTR ? 0 : -errno;
		/* Order: once something is pending, new data queues behind it. */
		if (c->pend_len > c->pend_off)
			err = pend_append(c, srv->buf, (size_t)n);
		else
			err = echo_out(c, srv->buf, (size_t)n);
		if (err)
			return err;
		if ((size_t)n < srv->buf_size ||
		    c->pend_len - c->pend_off >= srv->max_pending)
			return 0;
	}
	return 0;
}

static void on_conn_event(struct server *srv, struct conn *c, uint32_t events)
{
	int err = 0;

	if (events & EPOLLOUT)
		err = flush_pending(c);
	if (!err && (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && !c->eof)
		err = on_readable(srv, c);
	if (!err && c->eof && c->pend_len == c->pend_off)
		err = -ECONNABORTED; /* all echoed: done */
	if (!err)
		err = update_interest(srv, c);
	if (err)
		conn_close(srv, c);
}

static int conn_add(struct server *srv, int fd)
{
	struct conn *c = calloc(1, sizeof(*c));
	struct epoll_event ev = {.events = EPOLLIN};
	int one = 1;

	if (!c)
		return -ENOMEM;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->kind = EP_CONN;
	c->fd = fd;
	c->events = EPOLLIN;
	ev.data.ptr = c;
	if (epoll_ctl(srv->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		int err = -errno;

		free(c);
		return err;
	}
	srv->conns++;
	return 0;
}

/* Out of descriptors: free the reserve to take the connection off the queue. */
static void shed_connection(struct server *srv)
{
	int fd;

	close(srv->reserve_fd);
	fd = accept(srv->lfd, NULL, NULL);
	if (fd >= 0)
		close(fd);
	srv->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (!srv->quiet)
		fprintf(stderr, "accept: out of descriptors; connection refused\n");
}

static void on_listener(struct server *srv)
{
	for (int i = 0; i < ACCEPTS_PER_WAKEUP; i++) {
		int fd = accept4(srv->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if ((errno == EMFILE || errno == ENFILE) &&
			    srv->reserve_fd >= 0) {
				shed_connection(srv);
				continue;
			}
			return; /* EAGAIN, or a transient error: wait for the next report
				 */
		}
		if (conn_add(srv, fd) < 0)
			close(fd);
	}
}

static int run_loop(struct server *srv)
{
	struct epoll_event *events = calloc(EVENTS_MAX, sizeof(*events));

	if (!events)
		return -ENOMEM;
	for (bool stop = false; !stop;) {
		int n = epoll_wait(srv->epfd, events, EVENTS_MAX, -1);

		if (n < 0 && errno != EINTR) {
			free(events);
			return -errno;
		}
		for (int i = 0; i < n; i++) {
			void *tag = events[i].data.ptr;

			switch (*(const enum ep_kind *)tag) {
			case EP_LISTENER:
				on_listener(srv);
				break;
			case EP_SIGNAL:
				stop = true;
				break;
			case EP_UDP:
				udp_echo_readable(tag);
				break;
			case EP_CONN:
				on_conn_event(srv, tag, events[i].events);
				break;
			}
		}
	}
	free(events);
	return 0;
}

/* Soft limit up to the hard one: the only cap on connections is the admin's. */
static void raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

/* SIGTERM/SIGINT become readable on a signalfd; returns it or -errno. */
static int signals_init(void)
{
	sigset_t set;
	int fd;

	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
		return -errno;
	fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

static int tcp_init(struct server *srv, const struct sockaddr_storage *ss)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &listener_tag};

	srv->lfd = listen_on(ss);
	if (srv->lfd < 0)
		return srv->lfd;
	if (epoll_ctl(srv->epfd, EPOLL_CTL_ADD, srv->lfd, &ev) < 0)
		return -errno;
	print_listening("", srv->lfd);
	srv->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	return 0;
}

/* Start-up only: on an error the process exits, which closes everything. */
static int server_init(struct server *srv, const struct listen_args *la)
{
	struct epoll_event sev = {.events = EPOLLIN, .data.ptr = &signal_tag};
	int err;

	srv->sigfd = signals_init();
	if (srv->sigfd < 0)
		return srv->sigfd;
	srv->buf = malloc(srv->buf_size);
	if (!srv->buf)
		return -ENOMEM;
	srv->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (srv->epfd < 0)
		return -errno;
	if (epoll_ctl(srv->epfd, EPOLL_CTL_ADD, srv->sigfd, &sev) < 0)
		return -errno;
	if (la->tcp_set && (err = tcp_init(srv, &la->tcp)) < 0)
		return err;
	if (la->nudp &&
	    (err = udp_echo_open(&srv->udp, srv->epfd, la->udp, la->nudp)) < 0)
		return err;
	return 0;
}

static void usage(FILE *f)
{
	fputs("usage: epoll-echo [-l HOST:PORT | -p PORT] [-u HOST:PORT]... "
	      "[-b READ_BUF] [-m MAX_PENDING] [-q]\n"
	      "  -l, -p  TCP listener (default " TCP_DEFAULT " unless -u is given)\n"
	      "  -u      UDP echo socket, repeatable; HOST is A.B.C.D, [V6] or *\n",
	      f);
}

static int parse_size(const char *s, size_t min, size_t *out)
{
	char *end;
	unsigned long long v = strtoull(s, &end, 10);

	if (*end || end == s || v < min || v > (1ULL << 30))
		return -EINVAL;
	*out = (size_t)v;
	return 0;
}

static int parse_udp(struct listen_args *la, const char *arg)
{
	if (la->nudp == UDP_SOCKETS_MAX)
		return -E2BIG;
	return parse_listen(arg, &la->udp[la->nudp++]);
}

static int parse_args(int argc, char **argv, struct server *srv, struct listen_args *la)
{
	char port_arg[32];
	int opt;

	while ((opt = getopt(argc, argv, "l:p:u:b:m:qh")) != -1) {
		int err = 0;

		switch (opt) {
		case 'l':
			err = parse_listen(optarg, &la->tcp);
			la->tcp_set = true;
			break;
		case 'p':
			snprintf(port_arg, sizeof(port_arg), "127.0.0.1:%s", optarg);
			err = parse_listen(port_arg, &la->tcp);
			la->tcp_set = true;
			break;
		case 'u':
			err = parse_udp(la, optarg);
			break;
		case 'b':
			err = parse_size(optarg, 256, &srv->buf_size);
			break;
		case 'm':
			err = parse_size(optarg, 1, &srv->max_pending);
			break;
		case 'q':
			srv->quiet = true;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			err = -EINVAL;
		}
		if (err) {
			usage(stderr);
			return err;
		}
	}
	if (optind != argc)
		return -EINVAL;
	if (!la->tcp_set && !la->nudp)
		la->tcp_set = parse_listen(TCP_DEFAULT, &la->tcp) == 0;
	return 0;
}

int main(int argc, char **argv)
{
	struct server srv = {.lfd = -1,
			     .reserve_fd = -1,
			     .buf_size = READ_BUF_DEFAULT,
			     .max_pending = PENDING_DEFAULT};
	struct listen_args la = {0};
	int err;

	if (parse_args(argc, argv, &srv, &la) < 0)
		return 64;
	raise_nofile();
	err = server_init(&srv, &la);
	if (err < 0) {
		fprintf(stderr, "epoll-echo: cannot listen: %s\n", strerror(-err));
		return 1;
	}
	err = run_loop(&srv);
	if (err < 0)
		fprintf(stderr, "epoll-echo: epoll_wait: %s\n", strerror(-err));
	if (!srv.quiet && srv.lfd >= 0)
		fprintf(stderr, "epoll-echo: exiting with %lu connections open\n",
			srv.conns);
	if (srv.udp)
		udp_echo_close(srv.udp, srv.quiet);
	/* The rest goes with the process; this keeps LeakSanitizer quiet. */
	free(srv.buf);
	return err < 0 ? 1 : 0;
}
