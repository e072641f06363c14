/* SPDX-License-Identifier: MIT */
/* UDP echo (RFC 862): each datagram comes back, byte for byte, in one
 * datagram from the address it was sent to, or not at all.
 *
 * On the same ring as TCP: one multishot recvmsg per UDP socket, into a
 * buffer group of its own whose buffers hold the largest datagram allowed
 * whole; the reply is a sendmsg straight from that buffer, which goes back
 * to the ring when the send completes. A reply that cannot leave at once is
 * dropped (UDP is lossy; the loop never waits on one datagram).
 *
 * A UDP echo can be turned against others: two echo services made to bounce
 * a datagram between them for ever, or a spoofed source that makes the
 * replies hit a victim. So, by default: no reply to a source port below
 * udp_min_source_port or to one of our own UDP ports, none to what was sent
 * to a broadcast or multicast address, at most udp_max_rate_per_ip replies
 * a second to one address, and never a reply larger than its request. */
#ifndef RINGECHO_UDP_H
#define RINGECHO_UDP_H

#include "bufring.h"
#include "config.h"
#include "log.h"
#include "stats.h"
#include "udp_rate.h"

#include <liburing.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

struct worker;
struct listener;

#define UDP_GROUP_ID 1 /* the buffer group of UDP receives */

/* A UDP socket as the loop sees it. */
struct udp_view {
	uint64_t id;
	int fd;
	uint16_t port; /* ours: a datagram from it would be a loop */
	bool wildcard; /* bound to 0.0.0.0 or ::: a reply names its source */
	bool armed;    /* a multishot recvmsg is in the kernel */
	bool starved;  /* it ended for want of buffers: re-armed when they return */
	char name[CONFIG_ADDR_TEXT];
};

/* The reply sent from one buffer: it lives as long as the send. */
struct udp_reply {
	struct msghdr msg;
	struct iovec iov;
	union {
		char buf[CMSG_SPACE(sizeof(struct in6_pktinfo))];
		struct cmsghdr align;
	} ctl;
};

struct udp {
	bool ready; /* buffers registered: on the first UDP socket */
	struct bufring bufs;
	struct udp_reply *replies; /* one per buffer */
	struct msghdr layout;	   /* how each receive lays out its buffer */
	struct udp_view v[CONFIG_MAX_LISTEN];
	unsigned n;
	uint64_t recycled_at_starve;
	unsigned inflight; /* replies not completed yet */
	struct udp_rate rate;
	struct ratelimit rl_drop;
};

void udp_init(struct udp *u);
/* "truncated", "low_port", ...: for the counters' names. */
const char *udp_drop_name(enum udp_drop why);
/* Serve datagrams on l in this loop. 0, or -errno (logged) when the UDP
 * buffers cannot be set up. */
int udp_add_listener(struct worker *w, const struct listener *l);
/* Stop serving listener id; synchronous, as accept_remove_listener(). */
void udp_remove_listener(struct worker *w, uint64_t id);
void udp_on_recv(struct worker *w, const struct io_uring_cqe *cqe);
void udp_on_send(struct worker *w, const struct io_uring_cqe *cqe);
/* After a batch: re-arm receives that starved, once buffers came back. */
void udp_after_batch(struct worker *w);
/* Re-arm receives that ended on an error (at most once a tick). */
void udp_tick(struct worker *w);
/* Forget every socket and free the buffers (at tear-down). */
void udp_deinit(struct worker *w);

#endif
