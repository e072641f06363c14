/* SPDX-License-Identifier: MIT */
#include "udp.h"
#include "listener.h"
#include "op.h"
#include "peer.h"
#include "worker.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Room before the payload in each buffer: io_uring's header, the sender's
 * address, and the control message that says where the datagram was sent.
 * The kernel lays them out one after the other, so the address's room is
 * rounded up to keep the control message aligned as a struct cmsghdr. */
#define UDP_NAME_LEN CMSG_ALIGN(sizeof(struct sockaddr_in6))
/* Each buffer's size is a multiple of this, so that every buffer (and its
 * header) starts aligned too. */
#define UDP_BUF_ALIGN	64
#define UDP_CONTROL_LEN 64
#define UDP_HEAD_LEN                                                                     \
	(sizeof(struct io_uring_recvmsg_out) + UDP_NAME_LEN + UDP_CONTROL_LEN)
#define UDP_LOG_INTERVAL_MS 5000

_Static_assert(CMSG_SPACE(sizeof(struct in6_pktinfo)) <= UDP_CONTROL_LEN,
	       "the destination address must fit the control room");

/* Where a datagram was sent: the address its reply must come from. */
struct dest {
	int family; /* 0: not known */
	struct in_pktinfo v4;
	struct in6_pktinfo v6;
};

static const char *const drop_names[UDP_DROP_REASONS] = {
    [UDP_DROP_TRUNCATED] = "truncated", [UDP_DROP_LOW_PORT] = "low_port",
    [UDP_DROP_LOOP] = "loop",		[UDP_DROP_BROADCAST] = "broadcast",
    [UDP_DROP_RATE] = "rate",		[UDP_DROP_BUSY] = "busy",
    [UDP_DROP_ERROR] = "error",
};

const char *udp_drop_name(enum udp_drop why)
{
	return drop_names[why];
}

void udp_init(struct udp *u)
{
	memset(u, 0, sizeof(*u));
	u->rl_drop.interval_ms = UDP_LOG_INTERVAL_MS;
}

/* The buffers, the reply slots and the rate table, on first use. */
static int setup(struct worker *w)
{
	struct udp *u = &w->udp;
	uint32_t size = (UDP_HEAD_LEN + w->cfg.udp_max_datagram + UDP_BUF_ALIGN - 1) &
			~(uint32_t)(UDP_BUF_ALIGN - 1);
	int ret;

	if (u->ready)
		return 0;
	u->replies = calloc(w->cfg.udp_buffer_count, sizeof(*u->replies));
	if (!u->replies)
		return -ENOMEM;
	ret = udp_rate_init(&u->rate);
	if (!ret)
		ret = bufring_init(&u->bufs, &w->ring.uring, UDP_GROUP_ID,
				   w->cfg.udp_buffer_count, size);
	if (ret) {
		udp_rate_deinit(&u->rate);
		free(u->replies);
		u->replies = NULL;
		return ret;
	}
	u->layout.msg_namelen = UDP_NAME_LEN;
	u->layout.msg_controllen = UDP_CONTROL_LEN;
	u->ready = true;
	return 0;
}

static struct udp_view *find(struct udp *u, uint64_t id)
{
	for (unsigned i = 0; i < u->n; i++)
		if (u->v[i].id == id)
			return &u->v[i];
	return NULL;
}

static void arm(struct worker *w, struct udp_view *v)
{
	struct io_uring_sqe *sqe;

	if (v->armed || w->state != WORKER_RUNNING || w->quiescing)
		return;
	sqe = ring_get_sqe(&w->ring);
	if (!sqe)
		return; /* the tick tries again */
	io_uring_prep_recvmsg_multishot(sqe, v->fd, &w->udp.layout, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = UDP_GROUP_ID;
	io_uring_sqe_set_data64(sqe, op_encode(OP_UDP_RECV, v->id));
	v->armed = true;
	v->starved = false;
}

static uint16_t port_of(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
	return ntohs(((const struct sockaddr_in *)ss)->sin_port);
}

static bool bound_to_wildcard(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET6)
		return IN6_IS_ADDR_UNSPECIFIED(
		    &((const struct sockaddr_in6 *)ss)->sin6_addr);
	return ((const struct sockaddr_in *)ss)->sin_addr.s_addr == htonl(INADDR_ANY);
}

int udp_add_listener(struct worker *w, const struct listener *l)
{
	struct udp *u = &w->udp;
	struct udp_view *v;
	int ret = setup(w);

	if (ret < 0) {
		log_errno(LOG_ERR, -ret, "cannot set up %u UDP buffers of %u bytes",
			  w->cfg.udp_buffer_count, w->cfg.udp_max_datagram);
		return ret;
	}
	if (find(u, l->id) || u->n == CONFIG_MAX_LISTEN)
		return 0;
	v = &u->v[u->n++];
	memset(v, 0, sizeof(*v));
	v->id = l->id;
	v->fd = l->fd;
	v->port = port_of(&l->bound);
	v->wildcard = bound_to_wildcard(&l->bound);
	snprintf(v->name, sizeof(v->name), "%s", l->name);
	arm(w, v);
	return 0;
}

void udp_remove_listener(struct worker *w, uint64_t id)
{
	struct udp_view *v = find(&w->udp, id);

	if (!v)
		return;
	if (v->armed && ring_cancel_sync(&w->ring, op_encode(OP_UDP_RECV, id)) < 0)
		log_warn("stopping udp %s: its receive did not end in time", v->name);
	*v = w->udp.v[--w->udp.n];
}

void udp_deinit(struct worker *w)
{
	struct udp *u = &w->udp;

	while (u->n) {
		if (worker_ring_usable(w))
			udp_remove_listener(w, u->v[u->n - 1].id);
		else
			u->n--;
	}
	if (!u->ready)
		return;
	bufring_deinit(&u->bufs, &w->ring.uring);
	udp_rate_deinit(&u->rate);
	free(u->replies);
	u->replies = NULL;
	u->ready = false;
}

static bool from_our_port(const struct udp *u, uint16_t port)
{
	for (unsigned i = 0; i < u->n; i++)
		if (u->v[i].port == port)
			return true;
	return false;
}

/* The IP_PKTINFO / IPV6_PKTINFO the kernel added to the datagram. */
static void find_dest(struct udp *u, struct io_uring_recvmsg_out *out, struct dest *d)
{
	struct cmsghdr *c = io_uring_recvmsg_cmsg_firsthdr(out, &u->layout);

	d->family = 0;
	for (; c; c = io_uring_recvmsg_cmsg_nexthdr(out, &u->layout, c)) {
		if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
			memcpy(&d->v4, CMSG_DATA(c), sizeof(d->v4));
			d->family = AF_INET;
		} else if (c->cmsg_level == IPPROTO_IPV6 &&
			   c->cmsg_type == IPV6_PKTINFO) {
			memcpy(&d->v6, CMSG_DATA(c), sizeof(d->v6));
			d->family = AF_INET6;
		}
	}
}

/* Was the datagram sent to one of this host's own unicast addresses? For
 * IPv4 the kernel's own choice of reply address (ipi_spec_dst) differs from
 * the destination exactly when that was a broadcast or multicast address;
 * it is 0 in a datagram queued before the socket asked (see find_dest). */
static bool sent_to_unicast(const struct dest *d)
{
	in_addr_t to = ntohl(d->v4.ipi_addr.s_addr);

	if (d->family == AF_INET)
		return !IN_MULTICAST(to) && to != INADDR_BROADCAST &&
		       (d->v4.ipi_spec_dst.s_addr == htonl(INADDR_ANY) ||
			d->v4.ipi_addr.s_addr == d->v4.ipi_spec_dst.s_addr);
	if (d->family == AF_INET6)
		return !IN6_IS_ADDR_MULTICAST(&d->v6.ipi6_addr);
	return true;
}

/* Why the datagram gets no reply, or UDP_DROP_REASONS: it gets one. */
static enum udp_drop judge(struct worker *w, const struct io_uring_recvmsg_out *out,
			   const struct sockaddr_storage *from, const struct dest *d)
{
	uint16_t port = port_of(from);
	struct peer_key key;

	/* The buffer is a little larger than udp_max_datagram (rounded up for
	 * alignment): what fits beyond it is too large all the same. */
	if ((out->flags & MSG_TRUNC) || out->payloadlen > w->cfg.udp_max_datagram)
		return UDP_DROP_TRUNCATED;
	if (port < w->cfg.udp_min_source_port)
		return UDP_DROP_LOW_PORT;
	if (from_our_port(&w->udp, port))
		return UDP_DROP_LOOP;
	if (!sent_to_unicast(d))
		return UDP_DROP_BROADCAST;
	peer_key_from(&key, from);
	if (!udp_rate_allow(&w->udp.rate, &key, w->cfg.udp_max_rate_per_ip, w->now_ms))
		return UDP_DROP_RATE;
	return UDP_DROP_REASONS;
}

static const char *why_text(const struct worker *w, enum udp_drop why, char *buf,
			    size_t len)
{
	switch (why) {
	case UDP_DROP_TRUNCATED:
		snprintf(buf, len, "larger than udp_max_datagram (%u bytes)",
			 w->cfg.udp_max_datagram);
		break;
	case UDP_DROP_LOW_PORT:
		snprintf(buf, len, "its source port is below udp_min_source_port (%u)",
			 w->cfg.udp_min_source_port);
		break;
	case UDP_DROP_LOOP:
		snprintf(buf, len, "it comes from one of ringechod's own UDP ports");
		break;
	case UDP_DROP_BROADCAST:
		snprintf(buf, len, "it was sent to a broadcast or multicast address");
		break;
	case UDP_DROP_RATE:
		snprintf(buf, len, "over udp_max_rate_per_ip (%u replies a second)",
			 w->cfg.udp_max_rate_per_ip);
		break;
	case UDP_DROP_BUSY:
		snprintf(buf, len, "its reply could not be sent at once");
		break;
	default:
		snprintf(buf, len, "its reply could not be sent");
		break;
	}
	return buf;
}

/* Count a datagram that gets no reply, and say so now and then. */
static void drop(struct worker *w, enum udp_drop why, const struct sockaddr_storage *from)
{
	char name[CONFIG_ADDR_TEXT], text[96];
	unsigned dropped;

	w->stats.udp_dropped[why]++;
	if (ratelimit_allow(&w->udp.rl_drop, w->now_ms, &dropped)) {
		sockaddr_text(from, name, sizeof(name));
		log_warn("udp: no reply to a datagram from %s: %s%s", name,
			 why_text(w, why, text, sizeof(text)), ratelimit_suffix(dropped));
	}
}

/* The control message that makes the reply leave from d's address. */
static void set_source(struct udp_reply *r, const struct dest *d)
{
	size_t size = d->family == AF_INET ? sizeof(d->v4) : sizeof(d->v6);
	struct cmsghdr *c;

	r->msg.msg_control = r->ctl.buf;
	r->msg.msg_controllen = CMSG_SPACE(size);
	c = CMSG_FIRSTHDR(&r->msg);
	c->cmsg_len = CMSG_LEN(size);
	if (d->family == AF_INET) {
		struct in_pktinfo pi = {.ipi_spec_dst = d->v4.ipi_addr};
		c->cmsg_level = IPPROTO_IP;
		c->cmsg_type = IP_PKTINFO;
		memcpy(CMSG_DATA(c), &pi, sizeof(pi));
	} else {
		c->cmsg_level = IPPROTO_IPV6;
		c->cmsg_type = IPV6_PKTINFO;
		memcpy(CMSG_DATA(c), &d->v6, sizeof(d->v6));
	}
}

/* The echo: the payload as it lies in buffer bid, back to its sender, from
 * the address it was sent to. A socket bound to one address sends from it
 * (judge() has seen the datagram was not a broadcast), so its reply is a
 * plain send with a destination (sendto: Linux 6.0, as multishot recvmsg),
 * which costs the kernel less than a sendmsg: no msghdr, iovec or control
 * message to copy and parse. A wildcard socket's reply names its source in
 * a control message. */
static bool reply(struct worker *w, const struct udp_view *v, uint16_t bid,
		  struct io_uring_recvmsg_out *out, const struct dest *d)
{
	struct udp_reply *r = &w->udp.replies[bid];
	struct io_uring_sqe *sqe = ring_get_sqe(&w->ring);
	/* MSG_DONTWAIT: a full socket buffer drops the reply, never waits. */
	int flags = MSG_DONTWAIT | MSG_NOSIGNAL;

	if (!sqe)
		return false;
	memset(&r->msg, 0, sizeof(r->msg));
	r->iov.iov_base = io_uring_recvmsg_payload(out, &w->udp.layout);
	r->iov.iov_len = out->payloadlen;
	r->msg.msg_name = io_uring_recvmsg_name(out);
	r->msg.msg_namelen = out->namelen;
	if (d->family && v->wildcard) {
		r->msg.msg_iov = &r->iov;
		r->msg.msg_iovlen = 1;
		set_source(r, d);
		io_uring_prep_sendmsg(sqe, v->fd, &r->msg, flags);
	} else {
		io_uring_prep_send(sqe, v->fd, r->iov.iov_base, r->iov.iov_len, flags);
		io_uring_prep_send_set_addr(sqe, r->msg.msg_name,
					    (__u16)r->msg.msg_namelen);
	}
	io_uring_sqe_set_data64(sqe, op_encode(OP_UDP_SEND, bid));
	w->udp.inflight++;
	return true;
}

static void on_datagram(struct worker *w, const struct udp_view *v, uint16_t bid, int len)
{
	struct udp *u = &w->udp;
	struct io_uring_recvmsg_out *out =
	    io_uring_recvmsg_validate(bufring_addr(&u->bufs, bid), len, &u->layout);
	struct sockaddr_storage from = {.ss_family = AF_UNSPEC};
	enum udp_drop why = UDP_DROP_ERROR;
	struct dest d;

	if (out && v) {
		memcpy(&from, io_uring_recvmsg_name(out),
		       out->namelen < sizeof(from) ? out->namelen : sizeof(from));
		find_dest(u, out, &d);
		why = judge(w, out, &from, &d);
		if (why == UDP_DROP_REASONS && reply(w, v, bid, out, &d))
			return; /* the buffer goes back when the send completes */
		if (why == UDP_DROP_REASONS)
			why = UDP_DROP_BUSY;
	}
	if (v)
		drop(w, why, &from);
	bufring_recycle(&u->bufs, bid);
}

void udp_on_recv(struct worker *w, const struct io_uring_cqe *cqe)
{
	struct udp *u = &w->udp;
	struct udp_view *v = find(u, op_decode_id(cqe->user_data));
	uint16_t bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;

	if (u->ready && (cqe->flags & IORING_CQE_F_BUFFER)) {
		if (cqe->res >= 0)
			on_datagram(w, v, bid, cqe->res);
		else
			bufring_recycle(&u->bufs, bid);
	}
	if ((cqe->flags & IORING_CQE_F_MORE) || !v)
		return;
	v->armed = false;
	if (cqe->res == -ECANCELED)
		return;
	if (cqe->res == -ENOBUFS) {
		v->starved = true; /* every buffer holds a reply: wait for one */
		u->recycled_at_starve = u->bufs.recycled;
	} else if (cqe->res < 0) {
		log_errno(LOG_WARNING, -cqe->res, "udp %s: receive", v->name);
	} else {
		arm(w, v);
	}
}

void udp_on_send(struct worker *w, const struct io_uring_cqe *cqe)
{
	struct udp *u = &w->udp;
	uint16_t bid = (uint16_t)op_decode_id(cqe->user_data);
	struct sockaddr_storage to = {.ss_family = AF_UNSPEC};
	struct udp_reply *r;

	if (!u->ready || bid >= u->bufs.count)
		return;
	r = &u->replies[bid];
	u->inflight--;
	if (cqe->res >= 0) {
		w->stats.udp_datagrams++;
		w->stats.udp_bytes += (uint64_t)cqe->res;
	} else {
		memcpy(&to, r->msg.msg_name,
		       r->msg.msg_namelen < sizeof(to) ? r->msg.msg_namelen : sizeof(to));
		drop(w,
		     cqe->res == -EAGAIN || cqe->res == -ENOBUFS ? UDP_DROP_BUSY
								 : UDP_DROP_ERROR,
		     &to);
	}
	bufring_recycle(&u->bufs, bid);
}

void udp_after_batch(struct worker *w)
{
	struct udp *u = &w->udp;

	if (!u->ready || u->bufs.recycled == u->recycled_at_starve)
		return;
	for (unsigned i = 0; i < u->n; i++)
		if (u->v[i].starved)
			arm(w, &u->v[i]);
}

void udp_tick(struct worker *w)
{
	for (unsigned i = 0; i < w->udp.n; i++)
		arm(w, &w->udp.v[i]);
}
