/* SPDX-License-Identifier: MIT */
/* The provided-buffer ring: one pool of fixed-size receive buffers that every
 * multishot recv draws from, so an idle connection owns no receive memory.
 *
 * A buffer's life: the kernel picks it for a recv completion -> echo either
 * keeps it to send from (it is "held", alone or in the connection's chain,
 * until its last byte is sent) or copies it into the connection's queue ->
 * bufring_recycle() hands it back to the kernel. At most half the pool may be
 * held at once, so clients that never read cannot starve the others of
 * receive buffers. */
#ifndef RINGECHO_BUFRING_H
#define RINGECHO_BUFRING_H

#include <liburing.h>
#include <stdbool.h>
#include <stdint.h>

#define BUFRING_GROUP_ID 0 /* TCP receives */

struct bufring {
	struct io_uring_buf_ring *br;
	char *base;
	uint16_t group;	   /* the buffer group id receives name */
	uint32_t count;	   /* power of two */
	uint32_t size;	   /* bytes per buffer */
	uint32_t held;	   /* buffers kept for sends, in flight or waiting */
	uint64_t recycled; /* ever handed back, to know when starved recvs may retry */
};

/* Allocate count buffers of size bytes and register them as buffer group
 * `group`. 0 or -errno (-EINVAL: the kernel has no buffer rings). */
int bufring_init(struct bufring *b, struct io_uring *ring, uint16_t group, uint32_t count,
		 uint32_t size);
void bufring_deinit(struct bufring *b, struct io_uring *ring);

static inline char *bufring_addr(const struct bufring *b, uint16_t bid)
{
	return b->base + (size_t)bid * b->size;
}

/* Give buffer bid back to the kernel for the next recv. */
static inline void bufring_recycle(struct bufring *b, uint16_t bid)
{
	io_uring_buf_ring_add(b->br, bufring_addr(b, bid), b->size, bid,
			      io_uring_buf_ring_mask(b->count), 0);
	io_uring_buf_ring_advance(b->br, 1);
	b->recycled++;
}

/* May a send hold one more buffer, or must it copy? */
static inline bool bufring_may_hold(const struct bufring *b)
{
	return b->held < b->count / 2;
}

/* A buffer the kernel filled is kept to send from (count it against the
 * budget bufring_may_hold() checks). */
static inline void bufring_hold(struct bufring *b)
{
	b->held++;
}

/* A held buffer's bytes are sent (or dropped): hand it back. */
static inline void bufring_unhold(struct bufring *b, uint16_t bid)
{
	bufring_recycle(b, bid);
	b->held--;
}

#endif
