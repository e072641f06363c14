/* SPDX-License-Identifier: MIT */
#include "lifecycle.h"
#include "echo.h"
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

/* Every connection: receive no more, echo what was received, clean EOF. */
static void begin_cut(struct server *s)
{
	s->state = SERVER_CUTTING;
	s->cut = s->nconns;
	s->deadline_ms = s->now_ms + CUT_GRACE_MS;
	log_notice("shutdown: cutting %u connections (echoing what they sent, then EOF)",
		   s->nconns);
	server_each_conn(s, echo_finish);
	if (s->nconns == 0)
		s->state = SERVER_DONE;
}

static void begin_drain(struct server *s)
{
	char status[128];

	while (s->listeners.n)
		server_close_listener(s, &s->listeners.v[s->listeners.n - 1]);
	s->state = SERVER_DRAINING;
	s->deadline_ms = s->now_ms + s->cfg.shutdown_timeout_ms;
	snprintf(status, sizeof(status), "Shutting down: draining %u connections",
		 s->nconns);
	notify_stopping(&s->notify, status);
	log_notice("shutting down: no new connections; draining %u for up to %u ms",
		   s->nconns, s->cfg.shutdown_timeout_ms);
	if (s->nconns == 0)
		s->state = SERVER_DONE;
	else if (s->cfg.shutdown_timeout_ms == 0)
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
		lifecycle_reload(s);
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
	if (s->state == SERVER_DRAINING && s->now_ms >= s->deadline_ms) {
		log_notice("shutdown: %u connections still open at the %u ms deadline",
			   s->nconns, s->cfg.shutdown_timeout_ms);
		begin_cut(s);
	} else if (s->state == SERVER_CUTTING && s->now_ms >= s->deadline_ms) {
		log_notice(
		    "shutdown: resetting %u connections that did not take their echo",
		    s->nconns);
		server_each_conn(s, echo_reset);
	}
}

void lifecycle_finish(struct server *s)
{
	log_notice("exiting: drained %llu connections, cut %llu at the deadline",
		   (unsigned long long)s->drained, (unsigned long long)s->cut);
}
