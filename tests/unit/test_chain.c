/* SPDX-License-Identifier: MIT */
/* The chain of held receive buffers: over a long random run of receives and
 * sends that stop short at any byte, every send describes exactly the next
 * bytes of the stream, and every buffer goes back to the ring once, in order,
 * as soon as its last byte is sent; buffers copied out for a stalled client
 * are exactly the next bytes, and go back at once. The ring here is plain memory:
 * recycling only writes entries into it, which the test reads back. */
#include "chain.h"
#include "check.h"

#include <stdlib.h>

#define COUNT 64
#define SIZE  97 /* odd, so lengths and offsets never line up */
#define STEPS 200000

struct sim {
	struct bufring b;
	uint16_t pool[COUNT]; /* bids the "kernel" may fill */
	unsigned npool;
	uint16_t tail_seen; /* br->tail already accounted for */
	uint64_t produced;  /* stream bytes received so far */
	uint64_t sent;	    /* stream bytes sent so far */
	uint64_t recycled;
};

static uint8_t stream_byte(uint64_t pos)
{
	return (uint8_t)(pos * 2654435761u >> 7);
}

/* A buffer the kernel filled with the next len bytes of the stream. */
static void receive(struct sim *m, struct chain *ch)
{
	uint16_t bid = m->pool[--m->npool];
	uint32_t len = 1 + (uint32_t)rand() % SIZE;
	char *p = bufring_addr(&m->b, bid);

	for (uint32_t i = 0; i < len; i++)
		p[i] = (char)stream_byte(m->produced + i);
	m->produced += len;
	chain_push(ch, bid, len);
	m->b.held++;
}

/* Buffers recycled since the last look go back to the pool, and must be the
 * ones the chain held first. */
static void collect(struct sim *m, uint16_t *expect, unsigned *nexpect)
{
	while (m->tail_seen != m->b.br->tail) {
		uint16_t bid = m->b.br->bufs[m->tail_seen & (COUNT - 1)].bid;

		CHECK(*nexpect > 0 && bid == expect[0]);
		memmove(expect, expect + 1, (--*nexpect) * sizeof(*expect));
		m->pool[m->npool++] = bid;
		m->tail_seen++;
		m->recycled++;
	}
}

/* A stalled client's waiting buffers are copied out: they must be the bytes
 * right behind what the send in flight still has to send. Returns how many. */
static uint32_t spill(struct sim *m, struct chain *ch, uint16_t *expect,
		      unsigned *nexpect)
{
	static char dst[CHAIN_MAX * SIZE];
	uint32_t waiting = chain_waiting(ch);
	uint64_t at = m->sent + (ch->bytes - waiting);
	unsigned keep = ch->nsend;

	chain_spill(ch, &m->b, dst);
	for (uint32_t i = 0; i < waiting; i++)
		CHECK((uint8_t)dst[i] == stream_byte(at + i));
	/* The spilled buffers come back now, the in-flight ones later. */
	while (m->tail_seen != m->b.br->tail) {
		uint16_t bid = m->b.br->bufs[m->tail_seen & (COUNT - 1)].bid;

		CHECK(*nexpect > keep && bid == expect[keep]);
		memmove(expect + keep, expect + keep + 1,
			(--*nexpect - keep) * sizeof(*expect));
		m->pool[m->npool++] = bid;
		m->tail_seen++;
		m->recycled++;
	}
	CHECK(ch->n == keep && chain_waiting(ch) == 0);
	return waiting;
}

/* The kernel takes `sent` bytes of the message: they must be the stream's. */
static void transmit(struct sim *m, const struct msghdr *msg, uint32_t sent)
{
	uint32_t done = 0;

	for (size_t k = 0; k < msg->msg_iovlen && done < sent; k++) {
		const uint8_t *p = msg->msg_iov[k].iov_base;

		for (size_t i = 0; i < msg->msg_iov[k].iov_len && done < sent;
		     i++, done++)
			CHECK(p[i] == stream_byte(m->sent + done));
	}
	CHECK(done == sent);
	m->sent += sent;
}

static uint32_t msg_bytes(const struct msghdr *msg)
{
	uint32_t total = 0;

	for (size_t k = 0; k < msg->msg_iovlen; k++)
		total += msg->msg_iov[k].iov_len;
	return total;
}

/* One send: a fresh one takes every held buffer, a resumed one only what
 * the last left; it stops short one time in four. */
static void send_once(struct sim *m, struct chain *ch, uint16_t *expect,
		      unsigned *nexpect, unsigned *shorts)
{
	struct msghdr *msg = chain_prepare(ch, &m->b, ch->nsend ? ch->nsend : ch->n);
	uint32_t total = msg_bytes(msg);
	uint32_t sent = rand() % 4 ? total : (uint32_t)rand() % (total + 1);

	CHECK(msg->msg_iovlen == ch->nsend && ch->nsend >= 1);
	transmit(m, msg, sent);
	chain_consume(ch, &m->b, sent);
	*shorts += sent < total;
	CHECK((ch->nsend > 0) == (sent < total));
	collect(m, expect, nexpect);
}

int main(void)
{
	static char mem[COUNT * SIZE];
	struct io_uring_buf_ring *br = aligned_alloc(4096, 4096);
	struct sim m = {.b = {.br = br, .base = mem, .count = COUNT, .size = SIZE}};
	struct chain ch = {0};
	uint16_t expect[COUNT];
	unsigned nexpect = 0, shorts = 0, spills = 0;
	uint32_t spilled = 0; /* copied out; sent once the send in flight is done */

	memset(br, 0, 4096);
	for (unsigned i = 0; i < CHAIN_MAX; i++)
		m.pool[m.npool++] = (uint16_t)i;
	srand(7);
	for (int step = 0; step < STEPS; step++) {
		if (!spilled && ch.n > ch.nsend && rand() % 50 == 0) {
			spilled = spill(&m, &ch, expect, &nexpect);
			spills++;
		} else if (!spilled && !chain_full(&ch) && m.npool && rand() % 3) {
			/* (Behind copied bytes, the daemon copies too.) */
			expect[nexpect++] = m.pool[m.npool - 1];
			receive(&m, &ch);
		} else if (spilled && !ch.nsend) {
			m.sent += spilled; /* the copy goes out next, as a queue */
			spilled = 0;
		} else if (ch.n) {
			send_once(&m, &ch, expect, &nexpect, &shorts);
		}
		CHECK(ch.bytes + spilled == m.produced - m.sent);
		CHECK(m.b.held == ch.n && nexpect == ch.n);
	}
	CHECK(shorts > 1000 && spills > 100 && m.recycled > 10000);
	chain_release(&ch, &m.b);
	collect(&m, expect, &nexpect);
	CHECK(ch.n == 0 && ch.bytes == 0 && m.b.held == 0 && nexpect == 0);
	free(br);
	return check_done("chain");
}
