/* SPDX-License-Identifier: MIT */
/*
 * echo-bench's UDP engine (RFC 862): clients, each a UDP socket connect()ed
 * to the server, so each has its own source port and hears only the server.
 *
 * A datagram is [seq: 8][client: 4][pattern bytes], seq and client in host
 * order (this host reads them back). Client c's slot k of --depth sends seqs
 * k, k + depth, k + 2 depth, ...: seq % depth names the slot, and the body is
 * the pattern at an offset set by (client, seq). So an echo is checked whole:
 * its length, that it is this client's, that its slot did send that seq, and
 * every byte. A datagram cut short, lengthened, changed, or delivered to
 * another client fails the run (exit 2).
 *
 * Loss: a datagram still unanswered after --timeout is counted, and its slot
 * sends a new one (its next seq), so a loss never stalls a client. An echo
 * that comes after all is still checked, and counted as late. Latency covers
 * the datagrams answered in time.
 *
 * Per wake-up of a client: one recvmmsg of up to min(depth, UDP_BATCH)
 * echoes, one sendmmsg of the datagrams that replace them.
 */
#define _GNU_SOURCE /* recvmmsg, sendmmsg */
#include "echo-bench.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define UDP_BATCH		64 /* datagrams per recvmmsg / sendmmsg */
#define UDP_SEQ_SKEW		4099 /* prime < PATTERN_PERIOD: each seq's body starts elsewhere */
#define TIMER_SCANS_PER_TIMEOUT 4 /* a timeout is noticed at most 1/4 of it late */

struct udp_io {
	struct mmsghdr in[UDP_BATCH], out[UDP_BATCH];
	struct iovec in_iov[UDP_BATCH], out_iov[UDP_BATCH][2];
	uint8_t hdr[UDP_BATCH][UDP_HDR_BYTES];
	uint8_t *bufs;	   /* UDP_BATCH x size: a longer echo is flagged MSG_TRUNC */
	unsigned int nout; /* datagrams queued in out[] */
};

static const uint8_t *body_at(const struct bench *b, unsigned int client, uint64_t seq)
{
	uint64_t off =
	    (seq % PATTERN_PERIOD) * UDP_SEQ_SKEW + (uint64_t)client * CONN_SKEW;

	return b->pattern + off % PATTERN_PERIOD;
}

static void udp_fail(unsigned int idx, const char *what)
{
	int err = errno;

	die(err == ECONNREFUSED ? EXIT_CONNFAIL : 1, "client %u: %s: %s%s", idx, what,
	    strerror(err),
	    err == ECONNREFUSED ? " (nothing listening at the target?)" : "");
}

/* ---- sending ------------------------------------------------------------ */

static void flush_datagrams(struct bench *b, unsigned int idx)
{
	struct udp_io *io = b->uio;
	unsigned int done = 0;

	while (done < io->nout) {
		int r = sendmmsg(b->conns[idx].fd, io->out + done, io->nout - done,
				 MSG_DONTWAIT);

		if (r > 0) {
			done += (unsigned int)r;
			continue;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != ENOBUFS)
			udp_fail(idx, "send");
		break; /* the kernel has no room: the rest time out, as if lost */
	}
	io->nout = 0;
}

static void queue_datagram(struct bench *b, unsigned int idx, unsigned int k,
			   uint64_t now)
{
	struct conn *c = &b->conns[idx];
	struct udp_slot *sl = &c->slots[k];
	struct udp_io *io = b->uio;
	unsigned int i = io->nout++;
	uint32_t client = idx;

	sl->seq = sl->seq == UDP_SEQ_NONE ? k : sl->seq + b->o.depth;
	sl->sent_ns = now;
	c->waiting++;
	c->sent++;
	b->udp.sent++;
	memcpy(io->hdr[i], &sl->seq, sizeof(sl->seq));
	memcpy(io->hdr[i] + sizeof(sl->seq), &client, sizeof(client));
	io->out_iov[i][0] = (struct iovec){io->hdr[i], UDP_HDR_BYTES};
	io->out_iov[i][1] =
	    (struct iovec){(void *)body_at(b, idx, sl->seq), b->o.size - UDP_HDR_BYTES};
	io->out[i].msg_hdr = (struct msghdr){.msg_iov = io->out_iov[i], .msg_iovlen = 2};
	if (io->nout == UDP_BATCH)
		flush_datagrams(b, idx);
}

static bool may_send(const struct bench *b, const struct conn *c)
{
	if ((b->phase != PH_WARMUP && b->phase != PH_MEASURE) || c->state != CS_ACTIVE)
		return false;
	if (c->waiting >= b->o.depth)
		return false;
	return !b->o.count || c->rcvd + c->waiting < b->o.count;
}

/* Every free slot sends its next datagram, all in one sendmmsg. */
static void refill(struct bench *b, unsigned int idx, uint64_t now)
{
	struct conn *c = &b->conns[idx];

	for (unsigned int k = 0; k < b->o.depth && may_send(b, c); k++)
		if (!c->slots[k].sent_ns)
			queue_datagram(b, idx, k, now);
	if (b->uio->nout)
		flush_datagrams(b, idx);
}

/* ---- receiving ---------------------------------------------------------- */

static void check_length(const struct bench *b, unsigned int idx, const struct mmsghdr *m)
{
	if (m->msg_hdr.msg_flags & MSG_TRUNC)
		die(EXIT_MISMATCH, "client %u: an echo longer than the %u bytes sent",
		    idx, b->o.size);
	if (m->msg_len != b->o.size)
		die(EXIT_MISMATCH,
		    "client %u: an echo of %u bytes, %u were sent (cut short)", idx,
		    m->msg_len, b->o.size);
}

static void check_body(const struct bench *b, unsigned int idx, uint64_t seq,
		       const uint8_t *d)
{
	const uint8_t *want = body_at(b, idx, seq), *got = d + UDP_HDR_BYTES;
	size_t i = 0;

	if (!memcmp(got, want, b->o.size - UDP_HDR_BYTES))
		return;
	while (got[i] == want[i])
		i++;
	die(EXIT_MISMATCH,
	    "client %u: echo of datagram %llu differs at byte %zu: got 0x%02x, sent "
	    "0x%02x",
	    idx, (unsigned long long)seq, i + UDP_HDR_BYTES, got[i], want[i]);
}

static void answered(struct bench *b, unsigned int idx, struct udp_slot *sl, uint64_t now)
{
	struct conn *c = &b->conns[idx];

	if (b->phase == PH_MEASURE) {
		hist_add(&b->hist, now - sl->sent_ns);
		b->msgs++;
	}
	sl->sent_ns = 0;
	c->waiting--;
	c->rcvd++;
	b->udp.answered++;
}

static void check_echo(struct bench *b, unsigned int idx, const struct mmsghdr *m,
		       uint64_t now)
{
	const uint8_t *d = m->msg_hdr.msg_iov->iov_base;
	struct udp_slot *sl;
	uint32_t client;
	uint64_t seq;

	check_length(b, idx, m);
	memcpy(&seq, d, sizeof(seq));
	memcpy(&client, d + sizeof(seq), sizeof(client));
	if (client != idx)
		die(EXIT_MISMATCH,
		    "client %u: an echo names client %u (delivered to the wrong client, "
		    "or its header changed)",
		    idx, client);
	sl = &b->conns[idx].slots[seq % b->o.depth];
	if (sl->seq == UDP_SEQ_NONE || seq > sl->seq)
		die(EXIT_MISMATCH,
		    "client %u: an echo of datagram %llu, which was never sent (its "
		    "header "
		    "changed?)",
		    idx, (unsigned long long)seq);
	check_body(b, idx, seq, d);
	if (seq == sl->seq && sl->sent_ns)
		answered(b, idx, sl, now);
	else
		b->udp.late++;
}

static void client_readable(struct bench *b, unsigned int idx, uint64_t now)
{
	struct udp_io *io = b->uio;
	unsigned int vlen = b->o.depth < UDP_BATCH ? b->o.depth : UDP_BATCH;
	int n = recvmmsg(b->conns[idx].fd, io->in, vlen, MSG_DONTWAIT, NULL);

	if (n < 0) {
		if (errno == EAGAIN || errno == EINTR)
			return;
		udp_fail(idx, "receive");
	}
	for (int i = 0; i < n; i++)
		check_echo(b, idx, &io->in[i], now);
}

/* After echoes or timeouts: send what replaces them, or finish the client. */
static void client_settle(struct bench *b, unsigned int idx, uint64_t now)
{
	struct conn *c = &b->conns[idx];

	if (c->state != CS_ACTIVE)
		return;
	if (b->o.count && c->rcvd == b->o.count)
		conn_finished(b, idx);
	else if (b->phase == PH_DRAIN && !c->waiting)
		conn_finished(b, idx);
	else
		refill(b, idx, now);
}

/* Gives up on the datagrams older than the timeout; returns whether any. */
static bool expire(struct bench *b, unsigned int idx, uint64_t now)
{
	struct conn *c = &b->conns[idx];
	bool any = false;

	for (unsigned int k = 0; k < b->o.depth && c->waiting; k++) {
		struct udp_slot *sl = &c->slots[k];

		if (sl->sent_ns && now - sl->sent_ns >= b->o.timeout_ns) {
			sl->sent_ns = 0;
			c->waiting--;
			b->udp.timeouts++;
			any = true;
		}
	}
	return any;
}

/* ---- the engine --------------------------------------------------------- */

static void client_open(struct bench *b, unsigned int idx)
{
	struct conn *c = &b->conns[idx];
	struct epoll_event ev = {.events = EPOLLIN, .data.u32 = idx};

	c->fd = socket(b->o.dst.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0)
		die(1, "socket (client %u): %s", idx, strerror(errno));
	if (b->o.sources > 1)
		bind_source(b, c->fd, idx);
	if (connect(c->fd, (const struct sockaddr *)&b->o.dst, b->o.dst_len) < 0)
		die(EXIT_CONNFAIL, "connect (client %u): %s", idx, strerror(errno));
	if (epoll_ctl(b->epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0)
		die(1, "epoll_ctl: %s", strerror(errno));
	c->state = CS_ACTIVE;
}

static void io_init(struct bench *b)
{
	struct udp_io *io = calloc(1, sizeof(*io));

	if (!io || !(io->bufs = malloc((size_t)UDP_BATCH * b->o.size)))
		die(1, "out of memory");
	for (unsigned int i = 0; i < UDP_BATCH; i++) {
		io->in_iov[i] =
		    (struct iovec){io->bufs + (size_t)i * b->o.size, b->o.size};
		io->in[i].msg_hdr =
		    (struct msghdr){.msg_iov = &io->in_iov[i], .msg_iovlen = 1};
	}
	b->uio = io;
}

static void udp_start(struct bench *b)
{
	size_t n = (size_t)b->o.conns * b->o.depth;
	struct udp_slot *slots = malloc(n * sizeof(*slots));

	if (!slots)
		die(1, "out of memory");
	for (size_t i = 0; i < n; i++)
		slots[i] = (struct udp_slot){.seq = UDP_SEQ_NONE};
	io_init(b);
	for (unsigned int i = 0; i < b->o.conns; i++) {
		b->conns[i].slots = slots + (size_t)i * b->o.depth;
		client_open(b, i);
	}
	b->started = b->settled = b->o.conns;
}

static void udp_start_load(struct bench *b, uint64_t now)
{
	for (unsigned int i = 0; i < b->o.conns; i++)
		refill(b, i, now);
	b->next_timer = now + b->o.timeout_ns / TIMER_SCANS_PER_TIMEOUT;
}

static void udp_on_event(struct bench *b, const struct epoll_event *ev, uint64_t now)
{
	/* Read even once finished: a late echo is checked too, and read, or the
	 * level-triggered set would report it for ever. */
	client_readable(b, ev->data.u32, now);
	client_settle(b, ev->data.u32, now);
}

static void udp_start_drain(struct bench *b, uint64_t now)
{
	if (!b->udp.answered && !b->udp.late)
		die(EXIT_CONNFAIL, "no datagram was echoed (%llu sent, %llu timed out)",
		    (unsigned long long)b->udp.sent, (unsigned long long)b->udp.timeouts);
	for (unsigned int i = 0; i < b->o.conns; i++)
		client_settle(b, i, now);
}

static void udp_on_timer(struct bench *b, uint64_t now)
{
	for (unsigned int i = 0; i < b->o.conns; i++)
		if (b->conns[i].state == CS_ACTIVE && expire(b, i, now))
			client_settle(b, i, now);
	b->next_timer = now + b->o.timeout_ns / TIMER_SCANS_PER_TIMEOUT;
}

const struct engine udp_engine = {
    .start = udp_start,
    .start_load = udp_start_load,
    .on_event = udp_on_event,
    .start_drain = udp_start_drain,
    .on_timer = udp_on_timer,
};
