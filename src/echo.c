/* SPDX-License-Identifier: MIT */
#include "echo.h"
#include "conn.h"
#include "op.h"
#include "outq.h"
#include "server.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void conn_settle(struct server *s, struct conn *c);
static void echo_abort(struct server *s, struct conn *c);

static struct conn *conn_of(struct server *s, const struct io_uring_cqe *cqe)
{
	return conn_table_lookup(&s->conns, op_decode_id(cqe->user_data));
}

/* Queue a cancel; false when no SQE could be had. */
static bool submit_cancel(struct server *s, struct conn *c, uint64_t what, int flags)
{
	struct io_uring_sqe *sqe = ring_get_sqe(&s->ring);

	if (!sqe)
		return false;
	if (flags & IORING_ASYNC_CANCEL_FD)
		io_uring_prep_cancel_fd(sqe, c->fd, flags);
	else
		io_uring_prep_cancel64(sqe, what, flags);
	io_uring_sqe_set_data64(sqe, op_encode(OP_CANCEL, c->id));
	return true;
}

/* A client that stopped reading would keep the buffers waiting behind its
 * stalled send for as long as it stalls, and with enough such clients every
 * other connection would lose zero copy: copy those bytes to the front of
 * its queue and hand the buffers back. Without memory they stay held. */
static void spill_chain(struct server *s, struct conn *c)
{
	uint32_t waiting = c->chain ? chain_waiting(c->chain) : 0;
	struct outq q = {0};

	if (!waiting || outq_reserve(&q, waiting + c->queue.len) < 0)
		return;
	chain_spill(c->chain, &s->bufs, q.data);
	if (c->queue.len)
		memcpy(q.data + waiting, c->queue.data, c->queue.len);
	q.len = waiting + c->queue.len;
	free(c->queue.data);
	c->queue = q;
}

/* Backpressure. Without an SQE it is simply tried again at the next receive. */
static void stop_recv(struct server *s, struct conn *c)
{
	spill_chain(s, c);
	if (!(c->flags & CONN_RECV_ARMED) || (c->flags & CONN_CANCELLING))
		return;
	if (submit_cancel(s, c, op_encode(OP_RECV, c->id), 0))
		c->flags |= CONN_CANCELLING;
}

static void submit_recv(struct server *s, struct conn *c)
{
	struct io_uring_sqe *sqe = ring_get_sqe(&s->ring);

	if (!sqe) {
		echo_abort(s, c);
		return;
	}
	io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = BUFRING_GROUP_ID;
	io_uring_sqe_set_data64(sqe, op_encode(OP_RECV, c->id));
	c->flags |= CONN_RECV_ARMED;
}

static void submit_send(struct server *s, struct conn *c)
{
	struct io_uring_sqe *sqe = ring_get_sqe(&s->ring);
	char *base = c->send_bid >= 0 ? bufring_addr(&s->bufs, c->send_bid) : c->send_buf;

	if (!sqe) {
		echo_abort(s, c);
		return;
	}
	/* MSG_NOSIGNAL: a peer that reset must cost an -EPIPE, never SIGPIPE. */
	io_uring_prep_send(sqe, c->fd, base + c->send_off, c->send_len - c->send_off,
			   MSG_NOSIGNAL);
	io_uring_sqe_set_data64(sqe, op_encode(OP_SEND, c->id));
	c->flags |= CONN_SEND_ARMED;
	s->sends_queued++;
}

/* Send the chain's first count buffers as one message. */
static void submit_chain(struct server *s, struct conn *c, unsigned count)
{
	struct io_uring_sqe *sqe = ring_get_sqe(&s->ring);

	if (!sqe) {
		echo_abort(s, c);
		return;
	}
	io_uring_prep_sendmsg(sqe, c->fd, chain_prepare(c->chain, &s->bufs, count),
			      MSG_NOSIGNAL);
	io_uring_sqe_set_data64(sqe, op_encode(OP_SEND, c->id));
	c->flags |= CONN_SEND_ARMED;
	s->sends_queued++;
}

/* Done with the memory the last send used. */
static void release_send(struct server *s, struct conn *c)
{
	if (c->send_bid >= 0) {
		bufring_recycle(&s->bufs, c->send_bid);
		s->bufs.held--;
		c->send_bid = -1;
	}
	free(c->send_buf);
	c->send_buf = NULL;
	c->send_off = c->send_len = 0;
}

/* The queue becomes the send's memory: handed over, not copied. */
static void send_queue(struct server *s, struct conn *c)
{
	c->send_buf = c->queue.data;
	c->send_len = c->queue.len;
	c->send_off = 0;
	memset(&c->queue, 0, sizeof(c->queue));
	submit_send(s, c);
}

/* Bytes wait: their send starts when this batch of completions has been
 * handled (echo_start_sends), so what else the client sent in the batch goes
 * with them. A send in flight starts the next one itself when it completes. */
static void send_due(struct server *s, struct conn *c)
{
	if (c->flags & (CONN_SEND_DUE | CONN_SEND_ARMED))
		return;
	c->flags |= CONN_SEND_DUE;
	list_add_tail(&s->due, &c->due);
}

/* Send what waits, in stream order: a lone buffer, else the chain (which
 * leads any copied bytes), else the copied bytes. */
static void start_send(struct server *s, struct conn *c)
{
	if (c->send_bid >= 0) {
		submit_send(s, c);
	} else if (c->chain && c->chain->n) {
		s->stats.chained_sends += c->chain->n > 1;
		submit_chain(s, c, c->chain->n);
	} else if (c->queue.len) {
		send_queue(s, c);
	}
}

void echo_start_sends(struct server *s)
{
	while (!list_empty(&s->due)) {
		struct conn *c = container_of(s->due.next, struct conn, due);

		list_del(&c->due);
		c->flags &= ~CONN_SEND_DUE;
		if (!(c->flags & CONN_CLOSING))
			start_send(s, c);
		/* A started send changes nothing settle looks at; a failed
		 * one (no SQE) began closing the connection. */
		if (c->flags & CONN_CLOSING)
			conn_settle(s, c);
	}
}

/* The last send is done: the next starts with the batch's end. */
static void send_next(struct server *s, struct conn *c)
{
	if ((c->chain && c->chain->n) || c->queue.len) {
		send_due(s, c);
	} else if (c->chain) { /* flushed: idle connections hold no chain */
		free(c->chain);
		c->chain = NULL;
	}
}

/* Keep buffer bid for a later send instead of copying it: only behind a
 * send that is in flight or due, never behind copied bytes (they would
 * reorder), and within the pool's budget. False when it must be copied. */
static bool hold(struct server *s, struct conn *c, uint16_t bid, uint32_t len)
{
	if (c->queue.len || !bufring_may_hold(&s->bufs) ||
	    (c->chain && chain_full(c->chain)))
		return false;
	if (!c->chain && !(c->chain = calloc(1, sizeof(*c->chain))))
		return false;
	if (!(c->flags & CONN_SEND_ARMED) && c->send_bid >= 0) {
		/* The due buffer has not gone out yet: it leads the chain. */
		chain_push(c->chain, (uint16_t)c->send_bid, c->send_len);
		c->send_bid = -1;
		c->send_len = 0;
	}
	chain_push(c->chain, bid, len);
	s->bufs.held++;
	return true;
}

/* Activity in either direction keeps a connection off the idle list's head:
 * a client still reading its echo, or held back by backpressure while it
 * reads, is not idle. */
static void touch(struct server *s, struct conn *c)
{
	c->last_active_ms = s->now_ms;
	list_del(&c->lru);
	list_add_tail(&s->idle_lru, &c->lru);
}

static void on_data(struct server *s, struct conn *c, uint16_t bid, uint32_t len)
{
	if (c->flags & (CONN_CLOSING | CONN_NO_RECV)) {
		/* Past the cut: the client gets an exact prefix of its
		 * stream, and reading on keeps our close free of RSTs. */
		bufring_recycle(&s->bufs, bid);
		return;
	}
	s->stats.messages++;
	s->recvs_batch++;
	touch(s, c);
	if (!(c->flags & (CONN_SEND_ARMED | CONN_SEND_DUE)) && !c->queue.len &&
	    bufring_may_hold(&s->bufs)) {
		c->send_bid = bid;
		c->send_len = len;
		c->send_off = 0;
		s->bufs.held++;
	} else if ((c->flags & (CONN_SEND_ARMED | CONN_SEND_DUE)) &&
		   hold(s, c, bid, len)) {
		/* sent with the others */
	} else {
		int ret = outq_append(&c->queue, bufring_addr(&s->bufs, bid), len);
		bufring_recycle(&s->bufs, bid);
		if (ret < 0) {
			log_warn(
			    "connection %llu: out of memory for its echo; closing it",
			    (unsigned long long)c->id);
			echo_abort(s, c);
			return;
		}
	}
	send_due(s, c);
	/* Backpressure: a client that does not read stops being read. */
	if (conn_pending(c) >= s->cfg.max_pending_bytes)
		stop_recv(s, c);
}

static void starve(struct server *s, struct conn *c)
{
	s->stats.bufring_empty++;
	if (c->flags & CONN_STARVED)
		return;
	c->flags |= CONN_STARVED;
	list_add_tail(&s->starved, &c->wait);
}

void echo_on_recv(struct server *s, const struct io_uring_cqe *cqe)
{
	struct conn *c = conn_of(s, cqe);
	int res = cqe->res;

	if (!c) { /* cannot happen: a conn is freed only when nothing is armed */
		if (cqe->flags & IORING_CQE_F_BUFFER)
			bufring_recycle(&s->bufs, cqe->flags >> IORING_CQE_BUFFER_SHIFT);
		return;
	}
	if (!(cqe->flags & IORING_CQE_F_MORE))
		c->flags &= ~(CONN_RECV_ARMED | CONN_CANCELLING);
	if (res <= 0 && (cqe->flags & IORING_CQE_F_BUFFER)) /* not seen; costs nothing */
		bufring_recycle(&s->bufs, cqe->flags >> IORING_CQE_BUFFER_SHIFT);
	if (res > 0)
		on_data(s, c, cqe->flags >> IORING_CQE_BUFFER_SHIFT, res);
	else if (res == 0)
		c->flags |= CONN_READ_EOF;
	else if (res == -ENOBUFS)
		starve(s, c);
	else if (res != -ECANCELED) {
		log_debug("connection %llu: recv: %s", (unsigned long long)c->id,
			  strerror(-res));
		echo_abort(s, c);
	}
	conn_settle(s, c);
}

void echo_on_send(struct server *s, const struct io_uring_cqe *cqe)
{
	struct conn *c = conn_of(s, cqe);
	int res = cqe->res;

	if (!c)
		return;
	c->flags &= ~CONN_SEND_ARMED;
	if (res <= 0 || (c->flags & CONN_CLOSING)) {
		if (res < 0 && res != -ECANCELED)
			log_debug("connection %llu: send: %s", (unsigned long long)c->id,
				  strerror(-res));
		release_send(s, c);
		echo_abort(s, c);
	} else {
		s->stats.bytes += res;
		touch(s, c);
		if (c->chain && c->chain->nsend) {
			chain_consume(c->chain, &s->bufs, res);
			if (c->chain->nsend) {
				s->stats.short_sends++;
				submit_chain(s, c, c->chain->nsend);
			} else {
				send_next(s, c);
			}
		} else if ((c->send_off += res) < c->send_len) {
			s->stats.short_sends++; /* resume from where the kernel stopped */
			submit_send(s, c);
		} else {
			release_send(s, c);
			send_next(s, c);
		}
	}
	conn_settle(s, c);
}

static void maybe_recv(struct server *s, struct conn *c)
{
	if (c->flags & (CONN_RECV_ARMED | CONN_READ_EOF | CONN_CLOSING | CONN_STARVED))
		return;
	/* Hysteresis: resume only once half the allowance has drained. A cut
	 * connection discards what it reads, so it may always read. */
	if (!(c->flags & CONN_NO_RECV) && conn_pending(c) > s->cfg.max_pending_bytes / 2)
		return;
	submit_recv(s, c);
}

static void conn_release(struct server *s, struct conn *c)
{
	log_debug("connection %llu: closed%s", (unsigned long long)c->id,
		  c->flags & CONN_CLEAN ? " after its echo" : " (reset or error)");
	close(c->fd);
	release_send(s, c);
	if (c->chain)
		chain_release(c->chain, &s->bufs);
	free(c->chain);
	free(c->queue.data);
	list_del(&c->lru);
	list_del(&c->wait);
	list_del(&c->due);
	conn_table_remove(&s->conns, c->id);
	if (c->peer.valid)
		peer_remove(&s->peers, &c->peer);
	s->nconns--;
	free(c);
	server_conn_released(s);
}

/* Everything a connection does next follows from its flags; every handler
 * ends here, and only here is a connection freed. */
static void conn_settle(struct server *s, struct conn *c)
{
	if (!(c->flags & CONN_CLOSING)) {
		bool flushed = !(c->flags & CONN_SEND_ARMED) && conn_pending(c) == 0;

		maybe_recv(s, c);
		if (flushed && (c->flags & CONN_READ_EOF) &&
		    !(c->flags & CONN_RECV_ARMED)) {
			/* Everything the client sent is echoed and nothing is
			 * unread, so close() sends a plain FIN. */
			c->flags |= CONN_CLOSING | CONN_CLEAN;
		} else if (flushed && (c->flags & CONN_NO_RECV) &&
			   !(c->flags & CONN_WR_SHUT)) {
			/* Our FIN follows the last echoed byte; the client's
			 * EOF (or the deadline) then ends the connection. */
			shutdown(c->fd, SHUT_WR);
			c->flags |= CONN_WR_SHUT;
		}
	}
	if ((c->flags & CONN_CLOSING) &&
	    !(c->flags & (CONN_RECV_ARMED | CONN_SEND_ARMED)))
		conn_release(s, c);
}

/* Begin closing c at once; its caller settles it afterwards. */
static void echo_abort(struct server *s, struct conn *c)
{
	if (c->flags & CONN_CLOSING)
		return;
	c->flags |= CONN_CLOSING;
	list_del(&c->lru);
	list_del(&c->wait);
	c->flags &= ~CONN_STARVED;
	/* Without an SQE, shutting the socket down ends its recv and send. */
	if ((c->flags & (CONN_RECV_ARMED | CONN_SEND_ARMED)) &&
	    !submit_cancel(s, c, 0, IORING_ASYNC_CANCEL_FD | IORING_ASYNC_CANCEL_ALL))
		shutdown(c->fd, SHUT_RDWR);
}

void echo_reset(struct server *s, struct conn *c)
{
	echo_abort(s, c);
	conn_settle(s, c);
}

void echo_finish(struct server *s, struct conn *c)
{
	if (c->flags & (CONN_CLOSING | CONN_NO_RECV))
		return;
	c->flags |= CONN_NO_RECV;
	conn_settle(s, c);
}

void echo_retry_starved(struct server *s)
{
	struct list batch;

	if (list_empty(&s->starved) || s->bufs.recycled == s->recycled_at_batch)
		return;
	/* Take the whole list: a retry that starves again joins s->starved
	 * anew and waits for the next batch's recycling. */
	batch = s->starved;
	batch.next->prev = &batch;
	batch.prev->next = &batch;
	list_init(&s->starved);
	while (!list_empty(&batch)) {
		struct conn *c = container_of(batch.next, struct conn, wait);
		list_del(&c->wait);
		c->flags &= ~CONN_STARVED;
		conn_settle(s, c);
	}
}

void echo_expire_idle(struct server *s)
{
	uint64_t idle = s->cfg.idle_timeout_ms;

	while (idle && !list_empty(&s->idle_lru)) {
		struct conn *c = container_of(s->idle_lru.next, struct conn, lru);

		if (s->now_ms - c->last_active_ms < idle)
			break;
		if (conn_pending(c) || (c->flags & CONN_SEND_ARMED)) {
			/* Its echo waits for the client to read it (maybe
			 * with the receive paused for backpressure): it is
			 * the client's turn, so the clock starts afresh. */
			touch(s, c);
			continue;
		}
		list_del(&c->lru);
		if (c->flags & CONN_NO_RECV) {
			/* Told to finish a whole timeout ago, its echo all
			 * sent, and its client has still not closed. */
			echo_reset(s, c);
			continue;
		}
		s->stats.idle_closed++;
		log_debug("connection %llu: idle for %llu ms; finishing it",
			  (unsigned long long)c->id,
			  (unsigned long long)(s->now_ms - c->last_active_ms));
		c->last_active_ms = s->now_ms;
		list_add_tail(&s->idle_lru, &c->lru);
		echo_finish(s, c);
	}
}

static void refuse(struct server *s, int fd, const char *why, uint64_t *counter)
{
	unsigned dropped;

	(*counter)++;
	/* Closed at once so the client sees EOF now instead of hanging. */
	close(fd);
	if (ratelimit_allow(&s->rl_refuse, s->now_ms, &dropped))
		log_warn(
		    "refusing a connection: %s reached (%u more refused since the last "
		    "message)",
		    why, dropped);
}

static struct conn *conn_new(struct server *s, int fd, const struct peer_key *peer)
{
	struct conn *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->id = s->next_conn_id++;
	c->fd = fd;
	c->send_bid = -1;
	c->peer = *peer;
	c->last_active_ms = s->now_ms;
	list_init(&c->wait);
	list_init(&c->due);
	list_add_tail(&s->idle_lru, &c->lru);
	if (conn_table_insert(&s->conns, c->id, c) < 0 ||
	    (peer->valid && peer_add(&s->peers, peer) < 0)) {
		conn_table_remove(&s->conns, c->id);
		list_del(&c->lru);
		free(c);
		return NULL;
	}
	s->nconns++;
	s->stats.conns_total++;
	return c;
}

static void conn_accept(struct server *s, int fd)
{
	struct sockaddr_storage ss = {.ss_family = AF_UNSPEC};
	socklen_t len = sizeof(ss);
	struct peer_key peer = {.valid = 0};
	struct conn *c;

	if (s->state >= SERVER_CUTTING) {
		close(fd);
		return;
	}
	if (s->nconns >= s->cfg.max_connections) {
		refuse(s, fd, "max_connections", &s->stats.refused_max);
		return;
	}
	if (getpeername(fd, (struct sockaddr *)&ss, &len) == 0)
		peer_key_from(&peer, &ss);
	if (s->cfg.max_connections_per_ip && peer.valid &&
	    peer_count(&s->peers, &peer) >= s->cfg.max_connections_per_ip) {
		refuse(s, fd, "max_connections_per_ip", &s->stats.refused_per_ip);
		return;
	}
	c = conn_new(s, fd, &peer);
	if (!c) {
		log_warn("out of memory for a new connection; closing it");
		close(fd);
		return;
	}
	if (log_get_level() >= LOG_DEBUG) {
		char name[CONFIG_ADDR_TEXT];
		sockaddr_text(&ss, name, sizeof(name));
		log_debug("connection %llu from %s: accepted", (unsigned long long)c->id,
			  name);
	}
	conn_settle(s, c);
}

/* Out of fds (or memory, or anything odd): leave new clients in the backlog
 * until a connection closes or the pause passes, and never spin. */
static void pause_accepts(struct server *s, const struct listener *l, int err)
{
	unsigned dropped;

	s->stats.accept_paused++;
	s->accept_resume_ms = s->now_ms + ACCEPT_PAUSE_MS;
	if (ratelimit_allow(&s->rl_accept, s->now_ms, &dropped))
		log_warn(
		    "accept: %s; pausing accepts on %s (%u similar messages suppressed)",
		    strerror(err), l->name, dropped);
}

void echo_on_accept(struct server *s, const struct io_uring_cqe *cqe)
{
	uint64_t lid = op_decode_id(cqe->user_data);
	struct listener *l = listeners_find(&s->listeners, lid);

	if (cqe->res >= 0)
		conn_accept(s, cqe->res);
	if (cqe->flags & IORING_CQE_F_MORE)
		return;
	if (!l)
		return; /* its listener was closed: nothing to re-arm */
	l->armed = false;
	if (cqe->res == -ECANCELED)
		return;
	if (cqe->res >= 0 || cqe->res == -ECONNABORTED || cqe->res == -EINTR ||
	    cqe->res == -EAGAIN) {
		/* The multishot ended on a passing condition: go on. */
		if (!s->accept_resume_ms)
			server_arm_accept(s, l);
		return;
	}
	pause_accepts(s, l, -cqe->res);
}
