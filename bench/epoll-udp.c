/* SPDX-License-Identifier: MIT */
/*
 * epoll-echo's UDP side (RFC 862): the datagram echo a careful epoll server
 * would have.
 *
 *  - non-blocking sockets in the same level-triggered epoll set as TCP;
 *  - one recvmmsg takes up to UDP_BATCH datagrams with their sources, one
 *    sendmmsg sends the whole batch back: two syscalls per batch, however
 *    many clients it holds;
 *  - every buffer holds UDP_BUF_BYTES, more than any UDP payload, so nothing
 *    is cut short; a datagram the kernel still flags MSG_TRUNC is dropped,
 *    never echoed short;
 *  - a reply the socket cannot take now (EAGAIN, ENOBUFS) is dropped: UDP is
 *    lossy, and waiting for one client would stall all the others;
 *  - no reply to a source port below UDP_PORT_MIN, as ringechod: a reply to
 *    another service's port (echo 7, chargen 19) could loop between them;
 *  - IPv4 and IPv6 (IPV6_V6ONLY, so [::] and 0.0.0.0 can both be bound).
 */
#define _GNU_SOURCE /* recvmmsg, sendmmsg */
#include "epoll-echo.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#define UDP_BATCH	      64	  /* datagrams per recvmmsg / sendmmsg */
#define UDP_BUF_BYTES	      (64 * 1024) /* > 65,507 (IPv4) and 65,527 (IPv6) */
#define UDP_BATCHES_PER_EVENT 4 /* a full batch hints at more; cap for fairness */
#define UDP_PORT_MIN	      1024

struct udp_sock {
	enum ep_kind kind; /* EP_UDP: first, see ep_kind */
	int fd;
	struct udp_echo *owner;
};

struct udp_counts {
	unsigned long long echoed, truncated, low_port, dropped;
};

struct udp_echo {
	struct udp_sock socks[UDP_SOCKETS_MAX];
	unsigned int nsocks;
	struct mmsghdr in[UDP_BATCH], out[UDP_BATCH];
	struct iovec in_iov[UDP_BATCH], out_iov[UDP_BATCH];
	struct sockaddr_storage peers[UDP_BATCH];
	char *bufs; /* UDP_BATCH x UDP_BUF_BYTES; untouched pages stay unallocated */
	struct udp_counts n;
};

static void batch_init(struct udp_echo *u)
{
	for (unsigned int i = 0; i < UDP_BATCH; i++) {
		u->in_iov[i] =
		    (struct iovec){u->bufs + (size_t)i * UDP_BUF_BYTES, UDP_BUF_BYTES};
		u->in[i].msg_hdr = (struct msghdr){
		    .msg_name = &u->peers[i], .msg_iov = &u->in_iov[i], .msg_iovlen = 1};
	}
}

static int udp_socket(const struct sockaddr_storage *ss)
{
	int one = 1;
	int fd = socket(ss->ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	if ((ss->ss_family == AF_INET6 &&
	     setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0) ||
	    bind(fd, (const struct sockaddr *)ss, addr_len(ss)) < 0) {
		int err = -errno;

		close(fd);
		return err;
	}
	return fd;
}

static int udp_add(struct udp_echo *u, int epfd, const struct sockaddr_storage *ss)
{
	struct udp_sock *s = &u->socks[u->nsocks];
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = s};
	int fd = udp_socket(ss);

	if (fd < 0)
		return fd;
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		int err = -errno;

		close(fd);
		return err;
	}
	*s = (struct udp_sock){.kind = EP_UDP, .fd = fd, .owner = u};
	u->nsocks++;
	print_listening("udp ", fd);
	return 0;
}

int udp_echo_open(struct udp_echo **out, int epfd, const struct sockaddr_storage *addrs,
		  unsigned int n)
{
	struct udp_echo *u;
	int err = -ENOMEM;

	if (n > UDP_SOCKETS_MAX)
		return -EINVAL;
	u = calloc(1, sizeof(*u));
	if (!u)
		return -ENOMEM;
	u->bufs = malloc((size_t)UDP_BATCH * UDP_BUF_BYTES);
	if (!u->bufs)
		goto err;
	batch_init(u);
	for (unsigned int i = 0; i < n; i++) {
		err = udp_add(u, epfd, &addrs[i]);
		if (err)
			goto err;
	}
	*out = u;
	return 0;
err:
	udp_echo_close(u, true);
	return err;
}

static unsigned int peer_port(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
	return ntohs(((const struct sockaddr_in *)ss)->sin_port);
}

/* Fills u->out with the replies to the n datagrams received; returns how many. */
static unsigned int collect_replies(struct udp_echo *u, unsigned int n)
{
	unsigned int k = 0;

	for (unsigned int i = 0; i < n; i++) {
		const struct msghdr *h = &u->in[i].msg_hdr;

		if (h->msg_flags & MSG_TRUNC) {
			u->n.truncated++;
			continue;
		}
		if (peer_port(&u->peers[i]) < UDP_PORT_MIN) {
			u->n.low_port++;
			continue;
		}
		u->out_iov[k] = (struct iovec){u->in_iov[i].iov_base, u->in[i].msg_len};
		u->out[k].msg_hdr = (struct msghdr){.msg_name = &u->peers[i],
						    .msg_namelen = h->msg_namelen,
						    .msg_iov = &u->out_iov[k],
						    .msg_iovlen = 1};
		k++;
	}
	return k;
}

static void send_replies(struct udp_echo *u, int fd, unsigned int n)
{
	unsigned int done = 0;

	while (done < n) {
		int r = sendmmsg(fd, u->out + done, n - done, MSG_DONTWAIT);

		if (r > 0) {
			u->n.echoed += (unsigned int)r;
			done += (unsigned int)r;
		} else if (errno == EAGAIN || errno == ENOBUFS) {
			u->n.dropped += n - done; /* never wait: UDP is lossy */
			return;
		} else if (errno != EINTR) {
			u->n.dropped++; /* this datagram's own error: skip it */
			done++;
		}
	}
}

void udp_echo_readable(void *tag)
{
	struct udp_sock *s = tag;
	struct udp_echo *u = s->owner;

	for (int b = 0; b < UDP_BATCHES_PER_EVENT; b++) {
		int n;

		for (unsigned int i = 0; i < UDP_BATCH; i++)
			u->in[i].msg_hdr.msg_namelen = sizeof(u->peers[i]);
		n = recvmmsg(s->fd, u->in, UDP_BATCH, MSG_DONTWAIT, NULL);
		if (n <= 0)
			return; /* EAGAIN; level-triggered: anything left is reported
				   again */
		send_replies(u, s->fd, collect_replies(u, (unsigned int)n));
		if (n < UDP_BATCH)
			return;
	}
}

void udp_echo_close(struct udp_echo *u, bool quiet)
{
	if (!quiet && u->nsocks)
		fprintf(stderr,
			"epoll-echo: udp: %llu echoed, dropped %llu truncated, %llu to "
			"ports below %d, %llu that would block\n",
			u->n.echoed, u->n.truncated, u->n.low_port, UDP_PORT_MIN,
			u->n.dropped);
	for (unsigned int i = 0; i < u->nsocks; i++)
		close(u->socks[i].fd);
	free(u->bufs);
	free(u);
}
