/* SPDX-License-Identifier: MIT */
#include "timeouts.h"
#include "conn.h"
#include "echo.h"
#include "log.h"
#include "worker.h"

#include <linux/sockios.h>
#include <sys/ioctl.h>

static void expire_idle(struct worker *w)
{
	uint64_t idle = w->cfg.idle_timeout_ms;

	while (idle && !list_empty(&w->idle_lru)) {
		struct conn *c = container_of(w->idle_lru.next, struct conn, lru);

		if (w->now_ms - c->last_active_ms < idle)
			break;
		if (!echo_owes_nothing(c)) {
			/* Its echo waits for the client to read it (maybe
			 * with the receive paused for backpressure): it is
			 * the client's turn, and send_timeout_ms's. */
			echo_touch(w, c);
			continue;
		}
		list_del(&c->lru);
		if (c->flags & CONN_NO_RECV) {
			/* Told to finish a whole timeout ago, its echo all
			 * sent, and its client has still not closed. */
			echo_end_quietly(w, c, CUT_IDLE);
			continue;
		}
		w->stats.idle_closed++;
		log_debug("connection %llu: idle for %llu ms; finishing it",
			  (unsigned long long)c->id,
			  (unsigned long long)(w->now_ms - c->last_active_ms));
		c->last_active_ms = w->now_ms;
		list_add_tail(&w->idle_lru, &c->lru);
		echo_cut(w, c, CUT_IDLE);
	}
}

/* Bytes in c's kernel send queue (sent and unacknowledged, or unsent). */
static uint32_t send_queue_bytes(const struct conn *c)
{
	int n = 0;

	return ioctl(c->fd, SIOCOUTQ, &n) == 0 && n > 0 ? (uint32_t)n : 0;
}

/* send_timeout_ms: a client that stopped reading its echo. A send in flight
 * completes only once the socket buffer is half free, which a slow reader
 * of a big buffer takes long to do: so halfway through the timeout the
 * kernel's queue is sampled, and a queue that shrank since counts as
 * progress. */
static void expire_stalled(struct worker *w)
{
	uint64_t limit = w->cfg.send_timeout_ms;
	struct list *pos = w->sending.next;

	while (limit && pos != &w->sending) {
		struct conn *c = container_of(pos, struct conn, sending);
		uint64_t age = w->now_ms - c->send_since_ms;

		pos = pos->next;
		if (age < limit / 2)
			break;
		if (!(c->flags & CONN_OUTQ_SAMPLED)) {
			c->outq_sample = send_queue_bytes(c);
			c->flags |= CONN_OUTQ_SAMPLED;
		} else if (age >= limit && send_queue_bytes(c) < c->outq_sample) {
			echo_progress(w, c); /* the client did read */
		} else if (age >= limit) {
			list_del(&c->sending);
			w->stats.send_timeouts++;
			log_debug(
			    "connection %llu: its echo made no progress for %llu ms; "
			    "resetting it",
			    (unsigned long long)c->id, (unsigned long long)age);
			echo_reset(w, c);
		}
	}
}

/* Refused clients that have not closed after their EOF. */
static void expire_refused(struct worker *w)
{
	while (!list_empty(&w->lingering)) {
		struct conn *c = container_of(w->lingering.next, struct conn, lru);

		if (w->now_ms - c->last_active_ms < REFUSE_LINGER_MS)
			break;
		list_del(&c->lru);
		echo_end_quietly(w, c, CUT_NONE);
	}
}

void timeouts_tick(struct worker *w)
{
	expire_idle(w);
	expire_stalled(w);
	expire_refused(w);
}
