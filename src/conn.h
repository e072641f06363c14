/* SPDX-License-Identifier: MIT */
/* A client connection and its echo state.
 *
 * Bytes flow: multishot recv fills a provided buffer -> if no send is in
 * flight, that buffer will itself be sent (zero copy) -> if one is, the
 * buffer is held in `chain` (zero copy, sent later with the others in one
 * sendmsg) -> when the chain is full, or too many buffers are held
 * server-wide, the bytes are appended to `queue` and the buffer recycled at
 * once. Stream order is always: the send in flight, then the chain's waiting
 * buffers, then the queue (a buffer joins the chain only while the queue is
 * empty). A send is not started on each receive but once per connection at
 * the end of a batch of completions (CONN_SEND_DUE), so that what a client
 * pipelined goes out in one send; the SQEs reach the kernel at the next
 * enter either way. Exactly one send is in flight per connection, so bytes
 * never reorder; when it completes short, the rest is sent from the same
 * place and offset. The send's memory (`send_bid`, `send_buf` or the chain's
 * first `nsend` buffers) never moves while the kernel may read it, which is
 * why new bytes go elsewhere, and the queue is handed over, not copied, when
 * it becomes the send. */
#ifndef RINGECHO_CONN_H
#define RINGECHO_CONN_H

#include "chain.h"
#include "list.h"
#include "outq.h"
#include "peer.h"

#include <stdint.h>

enum conn_flag {
	CONN_RECV_ARMED = 1 << 0, /* a multishot recv is in the kernel */
	CONN_SEND_ARMED = 1 << 1, /* a send is in the kernel */
	CONN_CANCELLING = 1 << 2, /* a cancel of the recv was submitted */
	CONN_READ_EOF = 1 << 3,	  /* the client half-closed: echo the rest, close */
	CONN_NO_RECV = 1 << 4,	  /* cut (shutdown, idle): echo no more, discard input */
	CONN_CLOSING = 1 << 5,	  /* waiting for in-flight ops before freeing */
	CONN_STARVED = 1 << 6,	  /* recv ended with -ENOBUFS; on the wait list */
	CONN_WR_SHUT = 1 << 7,	  /* our FIN is sent; waiting for the client's */
	CONN_CLEAN = 1 << 8,	  /* closing after the whole echo, not on an error */
	CONN_SEND_DUE = 1 << 9,	  /* bytes wait for the batch's end; in worker.due */
	CONN_REFUSED = 1 << 10,	  /* over a limit: EOF at once, input discarded */
	CONN_QUIET = 1 << 11,	  /* owes nothing: empty the socket, then close */
	CONN_OUTQ_SAMPLED = 1 << 12, /* outq_sample holds the send queue's length */
	CONN_RECV_LIMITED = 1 << 13, /* the armed recv has a byte limit (echo.c) */
};

/* Why a connection was told to finish, for the shutdown's last log line. */
enum conn_cut {
	CUT_NONE,
	CUT_IDLE,	/* idle_timeout_ms */
	CUT_DRAIN_IDLE, /* idle at shutdown (drain_idle_ms): ended at once */
	CUT_DEADLINE,	/* still busy at the shutdown deadline */
};

struct conn {
	uint64_t id;
	int fd;
	uint16_t flags;
	uint8_t cut;	   /* enum conn_cut */
	int32_t send_bid;  /* provided buffer the send is using, or -1 */
	char *send_buf;	   /* heap memory the send is using (NULL with a bid) */
	uint32_t send_off; /* bytes of the current send already on the wire */
	uint32_t send_len;
	struct chain *chain;	 /* held buffers; NULL until the client pipelines */
	struct outq queue;	 /* bytes copied while a send was in flight */
	uint64_t last_active_ms; /* last byte received or echoed */
	uint64_t last_recv_ms;	 /* last byte received (or the accept) */
	uint64_t send_since_ms;	 /* while it owes bytes: their last progress */
	uint32_t outq_sample;	 /* kernel send queue, halfway to send_timeout_ms */
	struct list lru;	 /* in worker.idle_lru, oldest first; refused:
				    in worker.lingering */
	struct list sending;	 /* in worker.sending while it owes bytes */
	struct list wait;	 /* in worker.starved while CONN_STARVED */
	struct list due;	 /* in worker.due while CONN_SEND_DUE */
	struct peer_key peer;
};

struct worker;

/* A new connection on fd, in the table, in no list and counted nowhere
 * yet. NULL when out of memory (fd is left open). */
struct conn *conn_alloc(struct worker *w, int fd);
/* Close and free c, handing back every buffer it holds and unlinking it
 * from everything. Its operations must be over (or the ring gone). */
void conn_destroy(struct worker *w, struct conn *c);
/* Done with the memory the last send used. */
void conn_release_send(struct worker *w, struct conn *c);
/* Copy c's unsent echo to out (conn_pending(c) bytes), in stream order:
 * the send's memory, the chain, the queue. With no send in flight. */
size_t conn_unsent(const struct worker *w, const struct conn *c, char *out);
/* Read away what a client sent and nobody will read, so that closing the
 * socket sends a FIN and not a reset. */
void conn_drain_socket(int fd);

/* Bytes received and not yet echoed. */
static inline uint64_t conn_pending(const struct conn *c)
{
	return (uint64_t)(c->send_len - c->send_off) + (c->chain ? c->chain->bytes : 0) +
	       c->queue.len;
}

#endif
