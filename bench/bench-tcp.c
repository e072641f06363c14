/* SPDX-License-Identifier: MIT */
/*
 * echo-bench's TCP engine: connections, one byte stream each.
 *
 * Connection i's stream is pattern[(pos + i * CONN_SKEW) % P]: sends come
 * straight out of the pattern buffer (no copy), and checks are a memcmp
 * against it, with P prime so a lost, repeated or reordered chunk never
 * lines up. One read and one write per message at most.
 */
#include "echo-bench.h"

#include <errno.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

static const uint8_t *pattern_at(const struct bench *b, unsigned int idx, uint64_t pos)
{
	return b->pattern + (pos + (uint64_t)idx * CONN_SKEW) % PATTERN_PERIOD;
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

static void conn_start(struct bench *b, unsigned int idx)
{
	struct conn *c = &b->conns[idx];
	struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.u32 = idx};
	int one = 1;

	c->fd = socket(b->o.dst.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0)
		die(1, "socket (connection %u): %s", idx, strerror(errno));
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (b->o.sources > 1)
		bind_source(b, c->fd, idx);
	if (connect(c->fd, (struct sockaddr *)&b->o.dst, b->o.dst_len) < 0 &&
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

static void tcp_on_event(struct bench *b, const struct epoll_event *ev, uint64_t now)
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

/* ---- the engine --------------------------------------------------------- */

static void tcp_start(struct bench *b)
{
	start_connects(b);
}

static void tcp_start_load(struct bench *b, uint64_t now)
{
	for (unsigned int i = 0; i < b->o.conns; i++)
		conn_send(b, i, now);
}

static void tcp_start_drain(struct bench *b, uint64_t now)
{
	for (unsigned int i = 0; i < b->o.conns; i++) {
		struct conn *c = &b->conns[i];

		if (c->state == CS_ACTIVE && drained(b, c))
			conn_finished(b, i);
	}
}

const struct engine tcp_engine = {
    .start = tcp_start,
    .start_load = tcp_start_load,
    .on_event = tcp_on_event,
    .start_drain = tcp_start_drain,
};
