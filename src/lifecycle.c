/* SPDX-License-Identifier: MIT */
#include "lifecycle.h"
#include "admission.h"
#include "op.h"
#include "reload.h"
#include "server.h"
#include "shutdown.h"
#include "upgrade.h"
#include "worker.h"

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
	sigaddset(set, SIGUSR2);
	sigaddset(set, SIGCHLD); /* the new program file's tries (upcheck.h) */
}

int lifecycle_block_signals(void)
{
	sigset_t set;

	signal(SIGPIPE, SIG_IGN); /* belt and braces: every send has MSG_NOSIGNAL */
	/* Ignored by whoever started us, SIGCHLD would have the kernel reap
	 * the new program file's tries before upcheck could see them exit. */
	signal(SIGCHLD, SIG_DFL);
	signal_set(&set);
	return sigprocmask(SIG_BLOCK, &set, NULL) < 0 ? -errno : 0;
}

int lifecycle_init(struct server *s)
{
	sigset_t set;

	signal_set(&set); /* blocked since main() began */
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

void lifecycle_arm(struct server *s, struct worker *w)
{
	struct io_uring_sqe *sqe = ring_get_sqe(&w->ring);

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

/* Loop 0 about to end: no more signals to read. */
static bool ended(const struct server *s, const struct worker *w)
{
	return w->state == WORKER_DONE && server_others_finished(s);
}

/* The deadline (or a second signal): every loop cuts its connections. */
static void cut_all(struct server *s)
{
	unsigned n = admission_total(&s->admission);

	if (s->cut_sent)
		return;
	s->cut_sent = true;
	log_notice("shutdown: cutting %u connection%s (echoing what they sent, then EOF)",
		   n, plural_s(n));
	server_tell(s, MAIL_CUT);
}

/* SIGTERM: every listener closes at once, so new clients are refused, and
 * every loop drains its connections until the deadline. */
static void begin_stop(struct server *s, uint64_t now_ms)
{
	char status[128];
	unsigned n;

	while (s->listeners.n)
		server_close_listener(s, &s->listeners.v[s->listeners.n - 1]);
	s->state = SERVER_STOPPING;
	server_totals(s, &s->at_stop, &n);
	s->conns_at_stop = n;
	s->stop_deadline_ms = now_ms + s->cfg.shutdown_timeout_ms;
	snprintf(status, sizeof(status), "Shutting down: draining %u connection%s", n,
		 plural_s(n));
	notify_stopping(&s->notify, status);
	log_notice(
	    "shutting down: no new connections; draining %u connection%s for up to "
	    "%u ms",
	    n, plural_s(n), s->cfg.shutdown_timeout_ms);
	server_tell(s, MAIL_DRAIN);
	if (s->cfg.shutdown_timeout_ms == 0)
		cut_all(s);
}

void lifecycle_stop(struct server *s, struct worker *w)
{
	if (s->state == SERVER_RUNNING)
		begin_stop(s, w->now_ms);
}

static void on_stop_signal(struct server *s, struct worker *w, const char *name)
{
	if (s->upgrade.phase == UPGRADE_HANDING_OVER) {
		/* The connections are the new program's already: it stops. */
		log_notice("%s received during an upgrade", name);
		upgrade_stop_after(s);
	} else if (s->state == SERVER_RUNNING) {
		upgrade_abandon(s);
		log_notice("%s received", name);
		begin_stop(s, w->now_ms);
	} else if (!s->cut_sent) {
		log_notice("%s received again: not waiting for the drain", name);
		cut_all(s);
	}
}

void lifecycle_abort(struct server *s)
{
	if (s->state == SERVER_RUNNING)
		begin_stop(s, worker_clock_ms());
	cut_all(s);
}

/* A loop failed (its ring broke): stop the daemon, fast, with a clear
 * reason, rather than serve on with part of it gone. */
static void check_failures(struct server *s, struct worker *w)
{
	for (unsigned i = 1; i < s->nworkers; i++) {
		if (!atomic_load(&s->workers[i].failed) || s->exit_status)
			continue;
		log_error("loop %u failed (see above); stopping the daemon", i);
		s->exit_status = 1;
		if (s->state == SERVER_RUNNING)
			begin_stop(s, w->now_ms);
		cut_all(s);
	}
}

void lifecycle_on_doorbell(struct server *s, struct worker *w)
{
	check_failures(s, w);
}

static void handle_signal(struct server *s, struct worker *w, uint32_t signo)
{
	switch (signo) {
	case SIGTERM:
		on_stop_signal(s, w, "SIGTERM");
		break;
	case SIGINT:
		on_stop_signal(s, w, "SIGINT");
		break;
	case SIGHUP:
		if (s->upgrade.phase != UPGRADE_NONE)
			upgrade_reload_after(s);
		else
			reload_apply(s);
		break;
	case SIGUSR2:
		upgrade_begin(s, w);
		break;
	case SIGCHLD:
		upgrade_on_child(s, w);
		break;
	case SIGUSR1:
		server_log_stats(s);
		break;
	}
}

/* Handle what the signalfd holds; a few at a time, as the poll is
 * level-triggered and a storm of SIGHUPs must not hold up the loop. */
static void drain_signals(struct server *s, struct worker *w)
{
	struct signalfd_siginfo si;
	ssize_t n = 0;

	for (int i = 0; i < SIGNALS_PER_TURN; i++) {
		n = read(s->sigfd, &si, sizeof(si));
		if (n != (ssize_t)sizeof(si))
			break;
		handle_signal(s, w, si.ssi_signo);
	}
	if (n < 0 && errno != EAGAIN)
		log_errno(LOG_WARNING, errno, "reading signals");
}

void lifecycle_on_signal(struct server *s, struct worker *w,
			 const struct io_uring_cqe *cqe)
{
	s->sig_armed = false;
	if (cqe->res < 0) {
		/* Leave the re-arm to the tick, so a lasting error cannot spin. */
		log_errno(LOG_WARNING, -cqe->res, "polling for signals");
		return;
	}
	drain_signals(s, w);
	if (!ended(s, w))
		lifecycle_arm(s, w);
}

static bool loops_alive(const struct server *s, uint64_t now_ms)
{
	uint64_t limit = 2 * s->notify.watchdog_ms;

	for (unsigned i = 1; i < s->nworkers; i++) {
		const struct worker *w = &s->workers[i];
		if (!atomic_load(&w->finished) &&
		    now_ms - atomic_load(&w->heartbeat_ms) > limit)
			return false;
	}
	return true;
}

uint64_t lifecycle_tick_ms(const struct server *s)
{
	return s->notify.watchdog_ms / 2;
}

void lifecycle_tick(struct server *s, struct worker *w)
{
	char status[256];

	/* With SQPOLL the poll is armed by the kernel's SQ thread, which does
	 * not see a signal sent to our thread alone (tgkill); look each tick. */
	if (w->ring.flags & IORING_SETUP_SQPOLL)
		drain_signals(s, w);
	if (!s->sig_armed && !ended(s, w))
		lifecycle_arm(s, w);
	check_failures(s, w);
	upgrade_on_child(s, w); /* a try past its deadline is killed */
	if (s->state == SERVER_STOPPING && !s->cut_sent &&
	    w->now_ms >= s->stop_deadline_ms) {
		unsigned n = admission_total(&s->admission);
		log_notice("shutdown: %u connection%s still open at the %u ms deadline",
			   n, plural_s(n), s->cfg.shutdown_timeout_ms);
		cut_all(s);
	}
	/* A loop that stopped ticking stops the pings: systemd ends the lot. */
	if (loops_alive(s, w->now_ms))
		notify_watchdog(&s->notify, w->now_ms);
	if (notify_status_due(&s->notify, w->now_ms)) {
		server_format_status(s, status, sizeof(status));
		notify_status(&s->notify, w->now_ms, status);
	}
}

void lifecycle_finish(struct server *s)
{
	struct stats now;
	const struct stats *then = &s->at_stop;
	unsigned n;

	if (!s->conns_at_stop) {
		log_notice("exiting: no connections were open");
		return;
	}
	server_totals(s, &now, &n);
	/* Each connection open at the stop, and each accepted from the backlog
	 * after it, in exactly one group. */
	log_notice("exiting: %llu closed by their clients, %llu idle ended at once, %llu "
		   "cut at the deadline, %llu reset",
		   (unsigned long long)(now.closed_by_client - then->closed_by_client +
					now.closed_idle - then->closed_idle),
		   (unsigned long long)(now.closed_drain_idle - then->closed_drain_idle),
		   (unsigned long long)(now.closed_cut - then->closed_cut),
		   (unsigned long long)(now.closed_reset - then->closed_reset));
}
