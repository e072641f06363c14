/* SPDX-License-Identifier: MIT */
/* A connection's birth and death: the only place one is allocated and the
 * only place one is freed, whether it ends in the loop or at tear-down. */
#include "conn.h"
#include "admission.h"
#include "server.h"
#include "worker.h"

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Reads that empty a socket before a quiet close; what is left resets. */
#define DRAIN_READS 16

struct conn *conn_alloc(struct worker *w, int fd)
{
	struct conn *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	/* Each loop counts in steps of WORKERS_MAX from its own index: ids
	 * stay unique in the whole daemon and are never reused. */
	c->id = w->next_conn_id;
	w->next_conn_id += WORKERS_MAX;
	c->fd = fd;
	c->send_bid = -1;
	c->last_active_ms = c->last_recv_ms = w->now_ms;
	list_init(&c->lru);
	list_init(&c->wait);
	list_init(&c->due);
	list_init(&c->sending);
	if (conn_table_insert(&w->conns, c->id, c) < 0) {
		free(c);
		return NULL;
	}
	return c;
}

/* Done with the memory the last send used. */
void conn_release_send(struct worker *w, struct conn *c)
{
	if (c->send_bid >= 0) {
		bufring_unhold(&w->bufs, (uint16_t)c->send_bid);
		c->send_bid = -1;
	}
	free(c->send_buf);
	c->send_buf = NULL;
	c->send_off = c->send_len = 0;
}

/* Unread input makes close() send a reset: read it away first (a few
 * reads at most; the socket is non-blocking for these). */
void conn_drain_socket(int fd)
{
	char buf[4096];

	for (int i = 0; i < DRAIN_READS; i++)
		if (recv(fd, buf, sizeof(buf), MSG_DONTWAIT) <= 0)
			break;
}

/* An abort (an error, a client that never took its echo) ends with a reset,
 * so that the client cannot take what it got for the whole echo: a plain
 * close would send the bytes already queued in the kernel, then a FIN. */
static void reset_on_close(int fd)
{
	struct linger l = {.l_onoff = 1, .l_linger = 0};

	setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
}

/* How the connection ended, for the shutdown's summary. */
static void count_close(struct worker *w, const struct conn *c)
{
	struct stats *st = &w->stats;

	st->conns_closed++;
	if (!(c->flags & CONN_CLEAN))
		st->closed_reset++;
	else if (c->cut == CUT_NONE)
		st->closed_by_client++;
	else if (c->cut == CUT_DRAIN_IDLE)
		st->closed_drain_idle++;
	else if (c->cut == CUT_DEADLINE)
		st->closed_cut++;
	else
		st->closed_idle++;
}

void conn_destroy(struct worker *w, struct conn *c)
{
	log_debug("connection %llu: closed%s", (unsigned long long)c->id,
		  c->flags & CONN_CLEAN ? " after its echo" : " (reset or error)");
	if (c->flags & CONN_QUIET)
		conn_drain_socket(c->fd);
	else if (!(c->flags & CONN_CLEAN))
		reset_on_close(c->fd);
	close(c->fd);
	conn_release_send(w, c);
	if (c->chain)
		chain_release(c->chain, &w->bufs);
	free(c->chain);
	free(c->queue.data);
	list_del(&c->lru);
	list_del(&c->wait);
	list_del(&c->due);
	list_del(&c->sending);
	conn_table_remove(&w->conns, c->id);
	if (c->flags & CONN_REFUSED) {
		w->nrefused--;
	} else {
		admission_release(&w->srv->admission, &c->peer);
		w->nconns--;
		atomic_store_explicit(&w->load, w->nconns, memory_order_relaxed);
		count_close(w, c);
	}
	free(c);
}

size_t conn_unsent(const struct worker *w, const struct conn *c, char *out)
{
	size_t n = 0;

	if (c->send_len > c->send_off) {
		const char *base = c->send_bid >= 0
				       ? bufring_addr(&w->bufs, (uint16_t)c->send_bid)
				       : c->send_buf;
		memcpy(out, base + c->send_off, c->send_len - c->send_off);
		n += c->send_len - c->send_off;
	}
	for (unsigned k = 0; c->chain && k < c->chain->n; k++) {
		unsigned i = chain_slot(c->chain, k);
		uint32_t skip = k ? 0 : c->chain->off;

		memcpy(out + n, bufring_addr(&w->bufs, c->chain->bid[i]) + skip,
		       c->chain->len[i] - skip);
		n += c->chain->len[i] - skip;
	}
	if (c->queue.len)
		memcpy(out + n, c->queue.data, c->queue.len);
	return n + c->queue.len;
}
