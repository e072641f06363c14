/* SPDX-License-Identifier: MIT */
#include "lifecycle.h"
#include "accept.h"
#include "conn.h"
#include "echo.h"
#include "reload.h"
#include "op.h"
#include "server.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

/* Signals handled per poll completion; the rest wait for the next turn. */
#define SIGNALS_PER_TURN 8

static void signal_set(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGTERM);
	sigaddset(set, SIGINT);
	sigaddset(set, SIGHUP);
	sigaddset(set, SIGUSR1);
}

int lifecycle_init(struct server *s)
{
	sigset_t set;

	signal(SIGPIPE, SIG_IGN); /* belt and braces: every send has MSG_NOSIGNAL */
	signal_set(&set);
	if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
		return -errno;
	/* Non-blocking: the ring only polls it; the loop reads it itself. */
	s->sigfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	return s->sigfd < 0 ? -errno : 0;
}

void lifecycle_deinit(struct server *s)
{
	if (s->sigfd >= 0)
		close(s->sigfd);
	s->sigfd = -1;
}

void lifecycle_arm(struct server *s)
{
	struct io_uring_sqe *sqe = ring_get_sqe(&s->ring);

	if (!sqe) {
		log_error("cannot queue the signal poll; signals wait for the next tick");
		return;
	}
	/* Poll, not read: a signalfd hands out the signals of the task that
	 * reads it, and with SQPOLL an io_uring read would run in the kernel's
	 * SQ thread. The loop's own thread reads it when it is ready. */
	io_uring_prep_poll_add(sqe, s->sigfd, POLLIN);
	io_uring_sqe_set_data64(sqe, op_encode(OP_SIGNAL, 0));
	s->sig_armed = true;
}

static void cut_deadline(struct server *s, struct conn *c)
{
	echo_cut(s, c, CUT_DEADLINE);
}

/* Every connection: receive no more, echo what was received, clean EOF. */
static void begin_cut(struct server *s)
{
	s->state = SERVER_CUTTING;
	s->deadline_ms = s->now_ms + CUT_GRACE_MS;
	log_notice("shutdown: cutting %u connection%s (echoing what they sent, then EOF)",
		   s->nconns, plural_s(s->nconns));
	server_each_conn(s, cut_deadline);
}

/* drain_idle_ms: a client between two sends is not done, but one that owes
 * nothing and has been silent that long is; it gets its EOF now instead of
 * holding the shutdown up to the deadline. */
static void end_if_idle(struct server *s, struct conn *c)
{
	if (!(c->flags & (CONN_CLOSING | CONN_NO_RECV | CONN_REFUSED)) &&
	    echo_owes_nothing(c) && s->now_ms - c->last_recv_ms >= s->cfg.drain_idle_ms)
		echo_end_quietly(s, c, CUT_DRAIN_IDLE);
}

static void end_idle(struct server *s)
{
	if (s->cfg.drain_idle_ms)
		server_each_conn(s, end_if_idle);
}

/* At the end of the cut: a connection that owes nothing is closed (its
 * client had its EOF and every byte), one whose client never took its
 * echo is reset. */
static void end_or_reset(struct server *s, struct conn *c)
{
	if (c->flags & CONN_REFUSED || echo_owes_nothing(c))
		echo_end_quietly(s, c, CUT_DEADLINE);
	else
		echo_reset(s, c);
}

static void begin_drain(struct server *s)
{
	char status[128];

	while (s->listeners.n)
		accept_close_listener(s, &s->listeners.v[s->listeners.n - 1]);
	s->state = SERVER_DRAINING;
	s->deadline_ms = s->now_ms + s->cfg.shutdown_timeout_ms;
	s->conns_at_stop = s->nconns;
	s->at_stop = s->stats;
	snprintf(status, sizeof(status), "Shutting down: draining %u connection%s",
		 s->nconns, plural_s(s->nconns));
	notify_stopping(&s->notify, status);
	log_notice(
	    "shutting down: no new connections; draining %u connection%s for up to "
	    "%u ms",
	    s->nconns, plural_s(s->nconns), s->cfg.shutdown_timeout_ms);
	end_idle(s);
	if (s->cfg.shutdown_timeout_ms == 0)
		begin_cut(s);
}

static void on_stop_signal(struct server *s, const char *name)
{
	if (s->state == SERVER_RUNNING) {
		log_notice("%s received", name);
		begin_drain(s);
	} else if (s->state == SERVER_DRAINING) {
		log_notice("%s received again: not waiting for the drain", name);
		begin_cut(s);
	}
}

static void log_stats(struct server *s)
{
	char line[512];

	server_format_stats(s, line, sizeof(line));
	log_info("stats: %s", line);
}

static void handle_signal(struct server *s, uint32_t signo)
{
	switch (signo) {
	case SIGTERM:
		on_stop_signal(s, "SIGTERM");
		break;
	case SIGINT:
		on_stop_signal(s, "SIGINT");
		break;
	case SIGHUP:
		reload_apply(s);
		break;
	case SIGUSR1:
		log_stats(s);
		break;
	}
}

/* Handle what the signalfd holds; a few at a time, as the poll is
 * level-triggered and a storm of SIGHUPs must not hold up the loop. */
static void drain_signals(struct server *s)
{
	struct signalfd_siginfo si;
	ssize_t n = 0;

	for (int i = 0; i < SIGNALS_PER_TURN; i++) {
		n = read(s->sigfd, &si, sizeof(si));
		if (n != (ssize_t)sizeof(si))
			break;
		handle_signal(s, si.ssi_signo);
	}
	if (n < 0 && errno != EAGAIN)
		log_errno(LOG_WARNING, errno, "reading signals");
}

void lifecycle_on_signal(struct server *s, const struct io_uring_cqe *cqe)
{
	s->sig_armed = false;
	if (cqe->res < 0) {
		/* Leave the re-arm to the tick, so a lasting error cannot spin. */
		log_errno(LOG_WARNING, -cqe->res, "polling for signals");
		return;
	}
	drain_signals(s);
	if (s->state != SERVER_DONE)
		lifecycle_arm(s);
}

void lifecycle_tick(struct server *s)
{
	/* With SQPOLL the poll is armed by the kernel's SQ thread, which does
	 * not see a signal sent to our thread alone (tgkill); look each tick. */
	if (s->ring.flags & IORING_SETUP_SQPOLL)
		drain_signals(s);
	if (!s->sig_armed && s->state != SERVER_DONE)
		lifecycle_arm(s);
	if (s->state == SERVER_DRAINING)
		end_idle(s);
	if (s->state == SERVER_DRAINING && s->now_ms >= s->deadline_ms) {
		log_notice("shutdown: %u connection%s still open at the %u ms deadline",
			   s->nconns, plural_s(s->nconns), s->cfg.shutdown_timeout_ms);
		begin_cut(s);
	} else if (s->state == SERVER_CUTTING && s->now_ms >= s->deadline_ms) {
		server_each_conn(s, end_or_reset);
	}
}

void lifecycle_after_batch(struct server *s)
{
	/* Refused clients still lingering are closed with the rest. */
	if (s->state == SERVER_DRAINING || s->state == SERVER_CUTTING) {
		if (s->nconns == 0 && s->nrefused)
			server_each_conn(s, end_or_reset);
		if (s->nconns == 0 && s->nrefused == 0)
			s->state = SERVER_DONE;
	}
}

void lifecycle_finish(struct server *s)
{
	const struct stats *now = &s->stats, *then = &s->at_stop;

	if (!s->conns_at_stop) {
		log_notice("exiting: no connections were open");
		return;
	}
	/* Each connection open at the stop, and each accepted from the backlog
	 * after it, in exactly one group. */
	log_notice("exiting: %llu closed by their clients, %llu idle ended at once, %llu "
		   "cut at the deadline, %llu reset",
		   (unsigned long long)(now->closed_by_client - then->closed_by_client +
					now->closed_idle - then->closed_idle),
		   (unsigned long long)(now->closed_drain_idle - then->closed_drain_idle),
		   (unsigned long long)(now->closed_cut - then->closed_cut),
		   (unsigned long long)(now->closed_reset - then->closed_reset));
}
