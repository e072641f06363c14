/* SPDX-License-Identifier: MIT */
#include "shutdown.h"
#include "conn.h"
#include "echo.h"
#include "log.h"
#include "worker.h"

static void cut_deadline(struct worker *w, struct conn *c)
{
	echo_cut(w, c, CUT_DEADLINE);
}

void shutdown_cut(struct worker *w)
{
	if (w->state == WORKER_CUTTING || w->state == WORKER_DONE)
		return;
	w->state = WORKER_CUTTING;
	w->deadline_ms = worker_clock_ms() + CUT_GRACE_MS;
	worker_each_conn(w, cut_deadline);
}

/* drain_idle_ms: a client between two sends is not done, but one that owes
 * nothing and has been silent that long is; it gets its EOF now instead of
 * holding the shutdown up to the deadline. */
static void end_if_idle(struct worker *w, struct conn *c)
{
	if (!(c->flags & (CONN_CLOSING | CONN_NO_RECV | CONN_REFUSED)) &&
	    w->now_ms - c->last_recv_ms >= w->cfg.drain_idle_ms && echo_owes_nothing(c))
		echo_end_quietly(w, c, CUT_DRAIN_IDLE);
}

static void end_idle(struct worker *w)
{
	if (w->cfg.drain_idle_ms)
		worker_each_conn(w, end_if_idle);
}

/* At the end of the cut: a connection that owes nothing is closed (its
 * client had its EOF and every byte), one whose client never took its
 * echo is reset. */
static void end_or_reset(struct worker *w, struct conn *c)
{
	if (c->flags & CONN_REFUSED || echo_owes_nothing(c))
		echo_end_quietly(w, c, CUT_DEADLINE);
	else
		echo_reset(w, c);
}

void shutdown_drain(struct worker *w)
{
	if (w->state != WORKER_RUNNING)
		return;
	w->state = WORKER_DRAINING;
	end_idle(w);
}

void shutdown_tick(struct worker *w)
{
	if (w->state == WORKER_DRAINING)
		end_idle(w);
	else if (w->state == WORKER_CUTTING && w->now_ms >= w->deadline_ms)
		worker_each_conn(w, end_or_reset);
}

void shutdown_after_batch(struct worker *w)
{
	if (w->state != WORKER_DRAINING && w->state != WORKER_CUTTING)
		return;
	/* Refused clients still lingering are closed with the rest. */
	if (w->nconns == 0 && w->nrefused)
		worker_each_conn(w, end_or_reset);
	if (w->nconns == 0 && w->nrefused == 0)
		w->state = WORKER_DONE;
}
