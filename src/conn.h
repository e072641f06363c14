/* A client connection and its echo state.
 *
 * Bytes flow: multishot recv fills a provided buffer -> if nothing is queued
 * and no send is in flight, the buffer itself is sent (zero copy) -> else the
 * bytes are appended to `queue` and the buffer recycled at once. Exactly one
 * send is in flight per connection, so bytes never reorder; when it completes
 * short, the rest is sent from the same place and offset. The send's memory
 * (`send_bid` or `send_buf`) never moves while the kernel may read it, which
 * is why new bytes go to a separate queue that is handed over, not copied,
 * when the send finishes. */
#ifndef RINGECHO_CONN_H
#define RINGECHO_CONN_H

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
};

struct conn {
	uint64_t id;
	int fd;
	uint16_t flags;
	int32_t send_bid;  /* provided buffer the send is using, or -1 */
	char *send_buf;	   /* heap memory the send is using (NULL with a bid) */
	uint32_t send_off; /* bytes of the current send already on the wire */
	uint32_t send_len;
	struct outq queue;	 /* bytes received while a send was in flight */
	uint64_t last_active_ms; /* last byte received or echoed */
	struct list lru;	 /* in server.idle_lru, oldest first */
	struct list wait;	 /* in server.starved while CONN_STARVED */
	struct peer_key peer;
};

/* Bytes received and not yet echoed. */
static inline uint64_t conn_pending(const struct conn *c)
{
	return (uint64_t)(c->send_len - c->send_off) + c->queue.len;
}

#endif
