/* SPDX-License-Identifier: MIT */
#include "echo.h"
#include "conn.h"
#include "op.h"
#include "outq.h"
#include "admission.h"
#include "listener.h"
#include "server.h"
#include "worker.h"

#include <errno.h>
#include <stdlib.h>
#include <linux/sockios.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

static void conn_settle(struct worker *w, struct conn *c);
static void echo_abort(struct worker *w, struct conn *c);

static struct conn *conn_of(struct worker *w, const struct io_uring_cqe *cqe)
{
	return conn_table_lookup(&w->conns, op_decode_id(cqe->user_data));
}

/* Queue a cancel; false when no SQE could be had. */
static bool submit_cancel(struct worker *w, struct conn *c, uint64_t what)
{
	struct io_uring_sqe *sqe = ring_get_sqe(&w->ring);

	if (!sqe)
		return false;
	io_uring_prep_cancel64(sqe, what, 0);
	io_uring_sqe_set_data64(sqe, op_encode(OP_CANCEL, c->id));
	/* Its completion says nothing the cancelled request's will not. */
	sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
	return true;
}

/* A client that stopped reading would keep the buffers waiting behind its
 * stalled send for as long as it stalls, and with enough such clients every
 * other connection would lose zero copy: copy those bytes to the front of
 * its queue and hand the buffers back. Without memory they stay held. */
static void spill_chain(struct worker *w, struct conn *c)
{
	uint32_t waiting = c->chain ? chain_waiting(c->chain) : 0;
	struct outq q = {0};

	if (!waiting || outq_reserve(&q, waiting + c->queue.len) < 0)
		return;
	chain_spill(c->chain, &w->bufs, q.data);
	if (c->queue.len)
		memcpy(q.data + waiting, c->queue.data, c->queue.len);
	q.len = waiting + c->queue.len;
	free(c->queue.data);
	c->queue = q;
}

/* Backpressure. Without an SQE it is simply tried again at the next receive. */
static void stop_recv(struct worker *w, struct conn *c)
{
	spill_chain(w, c);
	if (!(c->flags & CONN_RECV_ARMED) || (c->flags & CONN_CANCELLING))
		return;
	if (submit_cancel(w, c, op_encode(OP_RECV, c->id)))
		c->flags |= CONN_CANCELLING;
}

static void submit_recv(struct worker *w, struct conn *c)
{
	struct io_uring_sqe *sqe = ring_get_sqe(&w->ring);

	if (!sqe) {
		echo_abort(w, c);
		return;
	}
	io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = BUFRING_GROUP_ID;
	/* Linux 6.17's total limit for a multishot receive (sqe->optlen,
	 * which liburing 2.3 knows as file_index): it ends, without
	 * IORING_CQE_F_MORE, once that much came in. Without it the kernel
	 * goes on filling buffers from a fast sender's socket until the cancel
	 * of backpressure is seen, megabytes past max_pending_bytes; with it,
	 * at most one buffer past. A cut connection reads to discard. */
	c->flags &= ~CONN_RECV_LIMITED;
	if (w->recv_limit && !(c->flags & CONN_NO_RECV) &&
	    conn_pending(c) < w->cfg.max_pending_bytes) {
		sqe->file_index = (uint32_t)(w->cfg.max_pending_bytes - conn_pending(c));
		c->flags |= CONN_RECV_LIMITED;
	}
	io_uring_sqe_set_data64(sqe, op_encode(OP_RECV, c->id));
	c->flags |= CONN_RECV_ARMED;
}

static void submit_send(struct worker *w, struct conn *c)
{
	struct io_uring_sqe *sqe = ring_get_sqe(&w->ring);
	char *base = c->send_bid >= 0 ? bufring_addr(&w->bufs, c->send_bid) : c->send_buf;

	if (!sqe) {
		echo_abort(w, c);
		return;
	}
	/* MSG_NOSIGNAL: a peer that reset must cost an -EPIPE, never SIGPIPE. */
	io_uring_prep_send(sqe, c->fd, base + c->send_off, c->send_len - c->send_off,
			   MSG_NOSIGNAL);
	io_uring_sqe_set_data64(sqe, op_encode(OP_SEND, c->id));
	c->flags |= CONN_SEND_ARMED;
	w->sends_queued++;
}

/* Send the chain's first count buffers as one message. */
static void submit_chain(struct worker *w, struct conn *c, unsigned count)
{
	struct io_uring_sqe *sqe = ring_get_sqe(&w->ring);

	if (!sqe) {
		echo_abort(w, c);
		return;
	}
	io_uring_prep_sendmsg(sqe, c->fd, chain_prepare(c->chain, &w->bufs, count),
			      MSG_NOSIGNAL);
	io_uring_sqe_set_data64(sqe, op_encode(OP_SEND, c->id));
	c->flags |= CONN_SEND_ARMED;
	w->sends_queued++;
}

/* The queue becomes the send's memory: handed over, not copied. */
static void send_queue(struct worker *w, struct conn *c)
{
	c->send_buf = c->queue.data;
	c->send_len = c->queue.len;
	c->send_off = 0;
	memset(&c->queue, 0, sizeof(c->queue));
	submit_send(w, c);
}

/* Bytes wait: their send starts when this batch of completions has been
 * handled (echo_start_sends), so what else the client sent in the batch goes
 * with them. A send in flight starts the next one itself when it completes. */
static void send_due(struct worker *w, struct conn *c)
{
	if (c->flags & (CONN_SEND_DUE | CONN_SEND_ARMED))
		return;
	c->flags |= CONN_SEND_DUE;
	list_add_tail(&w->due, &c->due);
}

/* Send what waits, in stream order: a lone buffer, else the chain (which
 * leads any copied bytes), else the copied bytes. */
static void start_send(struct worker *w, struct conn *c)
{
	if (w->sends_stopped) /* an upgrade takes what is left */
		return;
	if (c->send_bid >= 0 || c->send_buf) { /* one an upgrade stopped part way */
		submit_send(w, c);
	} else if (c->chain && c->chain->nsend) {
		submit_chain(w, c, c->chain->nsend);
	} else if (c->chain && c->chain->n) {
		w->stats.chained_sends += c->chain->n > 1;
		submit_chain(w, c, c->chain->n);
	} else if (c->queue.len) {
		send_queue(w, c);
	}
}

void echo_start_sends(struct worker *w)
{
	while (!list_empty(&w->due)) {
		struct conn *c = container_of(w->due.next, struct conn, due);

		list_del(&c->due);
		c->flags &= ~CONN_SEND_DUE;
		if (!(c->flags & CONN_CLOSING))
			start_send(w, c);
		/* A started send changes nothing settle looks at; a failed
		 * one (no SQE) began closing the connection. */
		if (c->flags & CONN_CLOSING)
			conn_settle(w, c);
	}
}

/* The last send is done: the next starts with the batch's end. */
static void send_next(struct worker *w, struct conn *c)
{
	if ((c->chain && c->chain->n) || c->queue.len) {
		send_due(w, c);
	} else if (c->chain) { /* flushed: idle connections hold no chain */
		free(c->chain);
		c->chain = NULL;
	}
}

/* Keep buffer bid for a later send instead of copying it: only behind a
 * send that is in flight or due, never behind copied bytes (they would
 * reorder), and within the pool's budget. False when it must be copied. */
static bool hold(struct worker *w, struct conn *c, uint16_t bid, uint32_t len)
{
	if (c->queue.len || !bufring_may_hold(&w->bufs) ||
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
	bufring_hold(&w->bufs);
	return true;
}

/* Activity in either direction keeps a connection off the idle list's head:
 * a client still reading its echo, or held back by backpressure while it
 * reads, is not idle. */
void echo_touch(struct worker *w, struct conn *c)
{
	c->last_active_ms = w->now_ms;
	list_del(&c->lru);
	list_add_tail(&w->idle_lru, &c->lru);
}

/* Keep c on the sending list exactly while it owes its client bytes, with
 * the time its echo last moved (send_timeout_ms). progress: a send just
 * put bytes on the wire. */
static void track_sending(struct worker *w, struct conn *c, bool progress)
{
	bool owes = conn_pending(c) > 0;

	if (!owes) {
		list_del(&c->sending);
	} else if (progress || !list_linked(&c->sending)) {
		c->send_since_ms = w->now_ms;
		c->flags &= ~CONN_OUTQ_SAMPLED;
		list_del(&c->sending);
		list_add_tail(&w->sending, &c->sending);
	}
}

void echo_progress(struct worker *w, struct conn *c)
{
	track_sending(w, c, true);
}

static void on_data(struct worker *w, struct conn *c, uint16_t bid, uint32_t len)
{
	if (c->flags & (CONN_CLOSING | CONN_NO_RECV)) {
		/* Past the cut: the client gets an exact prefix of its
		 * stream, and reading on keeps our close free of RSTs. */
		bufring_recycle(&w->bufs, bid);
		return;
	}
	w->stats.messages++;
	w->recvs_batch++;
	c->last_recv_ms = w->now_ms;
	echo_touch(w, c);
	if (!(c->flags & (CONN_SEND_ARMED | CONN_SEND_DUE)) && !c->queue.len &&
	    bufring_may_hold(&w->bufs)) {
		c->send_bid = bid;
		c->send_len = len;
		c->send_off = 0;
		bufring_hold(&w->bufs);
	} else if ((c->flags & (CONN_SEND_ARMED | CONN_SEND_DUE)) &&
		   hold(w, c, bid, len)) {
		/* sent with the others */
	} else {
		int ret = outq_append(&c->queue, bufring_addr(&w->bufs, bid), len);
		bufring_recycle(&w->bufs, bid);
		if (ret < 0) {
			log_warn(
			    "connection %llu: out of memory for its echo; closing it",
			    (unsigned long long)c->id);
			echo_abort(w, c);
			return;
		}
	}
	send_due(w, c);
	track_sending(w, c, false);
	/* Backpressure: a client that does not read stops being read. */
	if (conn_pending(c) >= w->cfg.max_pending_bytes)
		stop_recv(w, c);
}

static void starve(struct worker *w, struct conn *c)
{
	w->stats.bufring_empty++;
	if (c->flags & CONN_STARVED)
		return;
	c->flags |= CONN_STARVED;
	list_add_tail(&w->starved, &c->wait);
}

void echo_on_recv(struct worker *w, const struct io_uring_cqe *cqe)
{
	struct conn *c = conn_of(w, cqe);
	int res = cqe->res;

	if (!c) { /* cannot happen: a conn is freed only when nothing is armed */
		if (cqe->flags & IORING_CQE_F_BUFFER)
			bufring_recycle(&w->bufs, cqe->flags >> IORING_CQE_BUFFER_SHIFT);
		return;
	}
	if (!(cqe->flags & IORING_CQE_F_MORE))
		c->flags &= ~(CONN_RECV_ARMED | CONN_CANCELLING);
	if (res <= 0 && (cqe->flags & IORING_CQE_F_BUFFER)) /* not seen; costs nothing */
		bufring_recycle(&w->bufs, cqe->flags >> IORING_CQE_BUFFER_SHIFT);
	if (res > 0)
		on_data(w, c, cqe->flags >> IORING_CQE_BUFFER_SHIFT, res);
	else if (res == 0)
		c->flags |= CONN_READ_EOF;
	else if (res == -ENOBUFS)
		starve(w, c);
	else if (res == -EINVAL && (c->flags & CONN_RECV_LIMITED)) {
		/* A kernel before 6.17 refuses the limit: receive without it
		 * (conn_settle re-arms). */
		if (w->recv_limit)
			log_info("this kernel has no byte limit for a multishot "
				 "receive (Linux 6.17): a client that does not read "
				 "may have more than max_pending_bytes received for "
				 "it, up to what its socket held");
		w->recv_limit = false;
	} else if (res != -ECANCELED) {
		log_debug("connection %llu: recv: %s", (unsigned long long)c->id,
			  strerror(-res));
		echo_abort(w, c);
	}
	conn_settle(w, c);
}

void echo_on_send(struct worker *w, const struct io_uring_cqe *cqe)
{
	struct conn *c = conn_of(w, cqe);
	int res = cqe->res;

	if (!c)
		return;
	c->flags &= ~CONN_SEND_ARMED;
	if ((res == -ECANCELED || res == -EINTR) && w->sends_stopped &&
	    !(c->flags & CONN_CLOSING)) {
		/* An upgrade stopped it: nothing of it went out (-EINTR: it was
		 * blocking in the kernel's worker, which was interrupted before
		 * a byte left), all of it is still held, and goes with the state. */
	} else if (res <= 0 || (c->flags & CONN_CLOSING)) {
		if (res < 0 && res != -ECANCELED)
			log_debug("connection %llu: send: %s", (unsigned long long)c->id,
				  strerror(-res));
		conn_release_send(w, c);
		echo_abort(w, c);
	} else {
		w->stats.bytes += res;
		echo_touch(w, c);
		if (c->chain && c->chain->nsend) {
			chain_consume(c->chain, &w->bufs, res);
			if (c->chain->nsend) {
				w->stats.short_sends++;
				if (!w->sends_stopped)
					submit_chain(w, c, c->chain->nsend);
			} else {
				send_next(w, c);
			}
		} else if ((c->send_off += res) < c->send_len) {
			w->stats.short_sends++; /* resume from where the kernel stopped */
			if (!w->sends_stopped)
				submit_send(w, c);
		} else {
			conn_release_send(w, c);
			send_next(w, c);
		}
		track_sending(w, c, true);
	}
	conn_settle(w, c);
}

static void maybe_recv(struct worker *w, struct conn *c)
{
	if (c->flags & (CONN_RECV_ARMED | CONN_READ_EOF | CONN_CLOSING | CONN_STARVED) ||
	    w->quiescing)
		return;
	/* Hysteresis: resume only once half the allowance has drained. A cut
	 * connection discards what it reads, so it may always read. */
	if (!(c->flags & CONN_NO_RECV) && conn_pending(c) > w->cfg.max_pending_bytes / 2)
		return;
	submit_recv(w, c);
}

/* Everything a connection does next follows from its flags; every handler
 * ends here, and only here (or at tear-down) is a connection freed. */
static void conn_settle(struct worker *w, struct conn *c)
{
	if (!(c->flags & CONN_CLOSING)) {
		bool flushed = !(c->flags & CONN_SEND_ARMED) && conn_pending(c) == 0;

		maybe_recv(w, c);
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
		conn_destroy(w, c);
}

/* Begin closing c at once; its caller settles it afterwards. */
static void echo_abort(struct worker *w, struct conn *c)
{
	if (c->flags & CONN_CLOSING)
		return;
	c->flags |= CONN_CLOSING;
	list_del(&c->lru);
	list_del(&c->wait);
	list_del(&c->sending);
	c->flags &= ~CONN_STARVED;
	/* Each request by its user_data, which the kernel finds in a hash: a
	 * cancel by fd scans every request in the ring, so closing thousands
	 * at once (a drain, idle timeouts) took quadratic time. Without an
	 * SQE, shutting the socket down ends its recv and send. */
	if (((c->flags & CONN_RECV_ARMED) &&
	     !submit_cancel(w, c, op_encode(OP_RECV, c->id))) ||
	    ((c->flags & CONN_SEND_ARMED) &&
	     !submit_cancel(w, c, op_encode(OP_SEND, c->id))))
		shutdown(c->fd, SHUT_RDWR);
}

void echo_reset(struct worker *w, struct conn *c)
{
	echo_abort(w, c);
	conn_settle(w, c);
}

/* Bytes the client sent that wait unread in its socket: a receive starved
 * of buffers leaves them there, and their echo is owed as much as any. */
static bool unread(const struct conn *c)
{
	int n = 0;

	if (c->flags & (CONN_NO_RECV | CONN_READ_EOF | CONN_CLOSING))
		return false; /* what comes now is not read: the client had its EOF */
	return ioctl(c->fd, SIOCINQ, &n) == 0 && n > 0;
}

bool echo_owes_nothing(const struct conn *c)
{
	return !(c->flags & CONN_SEND_ARMED) && conn_pending(c) == 0 && !unread(c);
}

void echo_end_quietly(struct worker *w, struct conn *c, enum conn_cut why)
{
	if (c->flags & CONN_CLOSING)
		return;
	if (c->cut == CUT_NONE)
		c->cut = why;
	if (!(c->flags & CONN_WR_SHUT))
		shutdown(c->fd, SHUT_WR);
	c->flags |= CONN_WR_SHUT | CONN_QUIET;
	echo_abort(w, c);
	c->flags |= CONN_CLEAN;
	conn_settle(w, c);
}

void echo_cut(struct worker *w, struct conn *c, enum conn_cut why)
{
	if (c->flags & (CONN_CLOSING | CONN_NO_RECV))
		return;
	c->cut = why;
	c->flags |= CONN_NO_RECV;
	conn_settle(w, c);
}

void echo_retry_starved(struct worker *w)
{
	uint64_t back = w->bufs.recycled - w->recycled_at_batch;

	/* Each retried receive wants a buffer: wake as many connections as
	 * buffers came back, oldest first. One that starves again rejoins
	 * the list's tail. */
	while (back-- && !list_empty(&w->starved)) {
		struct conn *c = container_of(w->starved.next, struct conn, wait);
		list_del(&c->wait);
		c->flags &= ~CONN_STARVED;
		w->stats.starved_retries++;
		conn_settle(w, c);
	}
}

void echo_tick(struct worker *w)
{
	/* A safety net: a starved receive whose buffers came back while
	 * nothing else ran would otherwise wait for the next recycle. */
	w->recycled_at_batch = w->bufs.recycled - 1;
	echo_retry_starved(w);
	w->recycled_at_batch = w->bufs.recycled;
}

void echo_serve(struct worker *w, int fd, const struct peer_key *peer,
		const struct sockaddr_storage *ss)
{
	struct conn *c = conn_alloc(w, fd);

	if (!c) {
		admission_release(&w->srv->admission, peer);
		log_warn("out of memory for a new connection; closing it");
		close(fd);
		return;
	}
	c->peer = *peer;
	list_add_tail(&w->idle_lru, &c->lru);
	w->nconns++;
	atomic_store_explicit(&w->load, w->nconns, memory_order_relaxed);
	w->stats.conns_total++;
	if (log_get_level() >= LOG_DEBUG) {
		char name[CONFIG_ADDR_TEXT];
		sockaddr_text(ss, name, sizeof(name));
		log_debug("connection %llu from %s: accepted", (unsigned long long)c->id,
			  name);
	}
	conn_settle(w, c);
}

void echo_refuse(struct worker *w, int fd)
{
	struct conn *c = w->nrefused < REFUSE_LINGER_MAX ? conn_alloc(w, fd) : NULL;

	shutdown(fd, SHUT_WR); /* the EOF, at once */
	if (!c) {
		/* Too many lingering already: read what it sent so far, so
		 * that close() is still a FIN, not a reset. */
		conn_drain_socket(fd);
		close(fd);
		return;
	}
	/* Read and discard until its EOF, as a cut connection does. */
	c->flags |= CONN_REFUSED | CONN_NO_RECV | CONN_WR_SHUT;
	list_add_tail(&w->lingering, &c->lru);
	w->nrefused++;
	conn_settle(w, c);
}

void echo_settle(struct worker *w, struct conn *c)
{
	send_due(w, c); /* does nothing when nothing is waiting */
	conn_settle(w, c);
}

/* A receive cancel that did not stop the receive: -ENOENT (the kernel did
 * not find it: it had ended, and its own completion is on the way, or it
 * was being run by an io-wq worker, which the kernel reports the same way)
 * or -EALREADY. Were it left marked as pending, no cancel would be asked
 * again and the receive would go on past max_pending_bytes, which was
 * measured: megabytes over it. Forget it, so that the next data over the
 * allowance (stop_recv) or an upgrade's next tick (echo_stop) asks again;
 * never here, which could spin while the kernel cannot find it. */
void echo_on_cancel(struct worker *w, const struct io_uring_cqe *cqe)
{
	struct conn *c = conn_of(w, cqe);

	if (c && cqe->res < 0 && (c->flags & CONN_RECV_ARMED))
		c->flags &= ~CONN_CANCELLING;
	/* Closing, and a request of it was not cancelled (it was running, or
	 * had just ended): ending the socket ends it, so that c can be freed
	 * (harmless when its last completion is already on the way). */
	if (c && cqe->res < 0 && (c->flags & CONN_CLOSING) &&
	    (c->flags & (CONN_RECV_ARMED | CONN_SEND_ARMED)))
		shutdown(c->fd, SHUT_RDWR);
}

void echo_stop(struct worker *w, struct conn *c, bool sends)
{
	if (c->flags & CONN_REFUSED) {
		echo_end_quietly(w, c, CUT_NONE);
		return;
	}
	if ((c->flags & CONN_RECV_ARMED) && !(c->flags & CONN_CANCELLING) &&
	    submit_cancel(w, c, op_encode(OP_RECV, c->id)))
		c->flags |= CONN_CANCELLING;
	if (sends && (c->flags & CONN_SEND_ARMED))
		submit_cancel(w, c, op_encode(OP_SEND, c->id));
}

int echo_adopt(struct worker *w, int fd, const char *bytes, uint32_t len,
	       const struct echo_adopted *how)
{
	struct sockaddr_storage ss = {.ss_family = AF_UNSPEC};
	socklen_t sl = sizeof(ss);
	struct conn *c = conn_alloc(w, fd);

	if (!c)
		return -ENOMEM;
	if (len && outq_append(&c->queue, bytes, len) < 0) {
		conn_table_remove(&w->conns, c->id);
		free(c);
		return -ENOMEM;
	}
	if (how->peer.valid)
		c->peer = how->peer;
	else if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0)
		peer_key_from(&c->peer, &ss);
	admission_force(&w->srv->admission, &c->peer);
	c->flags |= how->flags & (CONN_READ_EOF | CONN_NO_RECV | CONN_WR_SHUT);
	c->cut = how->cut;
	c->last_active_ms = w->now_ms - how->idle_ms;
	c->last_recv_ms = w->now_ms - how->recv_idle_ms;
	list_add_tail(&w->idle_lru, &c->lru);
	w->nconns++;
	atomic_store_explicit(&w->load, w->nconns, memory_order_relaxed);
	track_sending(w, c, false);
	echo_settle(w, c);
	return 0;
}
