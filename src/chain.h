/* SPDX-License-Identifier: MIT */
/* Provided buffers a connection holds, in stream order, so that bytes that
 * arrive while a send is in flight go out later from the receive buffers
 * themselves: no copy, and one sendmsg carries them all (one trip through
 * TCP instead of one per buffer).
 *
 * A FIFO of at most CHAIN_MAX buffers. The first `nsend` are in the send in
 * flight (`off` bytes of the first already on the wire); the rest wait for
 * it. The iovec array and msghdr are what that sendmsg reads, so they stay
 * put until it completes. Allocated only by a connection that pipelines, and
 * freed when its echo is flushed, so idle connections do not pay for it. */
#ifndef RINGECHO_CHAIN_H
#define RINGECHO_CHAIN_H

#include "bufring.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#define CHAIN_MAX 16

struct chain {
	uint8_t head, n; /* ring of held buffers: bid[head], ... (n of them) */
	uint8_t nsend;	 /* the first nsend are in the send in flight */
	uint32_t off;	 /* bytes of the first buffer already sent */
	uint32_t bytes;	 /* held bytes not yet sent, in flight included */
	uint16_t bid[CHAIN_MAX];
	uint32_t len[CHAIN_MAX];
	struct iovec iov[CHAIN_MAX];
	struct msghdr msg;
};

static inline unsigned chain_slot(const struct chain *ch, unsigned i)
{
	return (ch->head + i) % CHAIN_MAX;
}

static inline bool chain_full(const struct chain *ch)
{
	return ch->n == CHAIN_MAX;
}

/* Hold buffer bid (len bytes received) behind the others. */
static inline void chain_push(struct chain *ch, uint16_t bid, uint32_t len)
{
	unsigned i = chain_slot(ch, ch->n++);

	ch->bid[i] = bid;
	ch->len[i] = len;
	ch->bytes += len;
}

/* Describe the first count buffers (count <= n) as one message to send. */
static inline struct msghdr *chain_prepare(struct chain *ch, const struct bufring *b,
					   unsigned count)
{
	for (unsigned k = 0; k < count; k++) {
		unsigned i = chain_slot(ch, k);
		uint32_t skip = k ? 0 : ch->off;

		ch->iov[k].iov_base = bufring_addr(b, ch->bid[i]) + skip;
		ch->iov[k].iov_len = ch->len[i] - skip;
	}
	ch->nsend = (uint8_t)count;
	memset(&ch->msg, 0, sizeof(ch->msg));
	ch->msg.msg_iov = ch->iov;
	ch->msg.msg_iovlen = count;
	return &ch->msg;
}

/* The send in flight put `sent` bytes on the wire: recycle the buffers it
 * finished. Afterwards nsend > 0 means it stopped short. */
static inline void chain_consume(struct chain *ch, struct bufring *b, uint32_t sent)
{
	ch->bytes -= sent;
	while (ch->nsend && sent >= ch->len[ch->head] - ch->off) {
		sent -= ch->len[ch->head] - ch->off;
		bufring_unhold(b, ch->bid[ch->head]);
		ch->off = 0;
		ch->head = (uint8_t)chain_slot(ch, 1);
		ch->n--;
		ch->nsend--;
	}
	ch->off += sent;
}

/* Bytes of the buffers waiting behind the send in flight. */
static inline uint32_t chain_waiting(const struct chain *ch)
{
	uint32_t bytes = 0;

	for (unsigned k = ch->nsend; k < ch->n; k++)
		bytes += ch->len[chain_slot(ch, k)];
	return bytes;
}

/* Copy the waiting buffers' bytes to dst (chain_waiting() of them) and hand
 * the buffers back; the send in flight keeps its own. */
static inline void chain_spill(struct chain *ch, struct bufring *b, char *dst)
{
	for (unsigned k = ch->nsend; k < ch->n; k++) {
		unsigned i = chain_slot(ch, k);

		memcpy(dst, bufring_addr(b, ch->bid[i]), ch->len[i]);
		dst += ch->len[i];
		ch->bytes -= ch->len[i];
		bufring_unhold(b, ch->bid[i]);
	}
	ch->n = ch->nsend;
}

/* Hand every held buffer back (the connection is going away). */
static inline void chain_release(struct chain *ch, struct bufring *b)
{
	while (ch->n) {
		bufring_unhold(b, ch->bid[ch->head]);
		ch->head = (uint8_t)chain_slot(ch, 1);
		ch->n--;
	}
	ch->nsend = 0;
	ch->off = ch->bytes = 0;
}

#endif
