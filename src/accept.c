/* SPDX-License-Identifier: MIT */
#include "accept.h"
#include "echo.h"
#include "admission.h"
#include "listener.h"
#include "op.h"
#include "server.h"
#include "worker.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define ACCEPT_LOG_INTERVAL_MS 5000
/* Connections a loop may hold beyond its share plus an eighth before it
 * hands new ones to a lighter loop. */
#define ACCEPT_BALANCE_SLACK 16
/* Clients taken from a closing listener's backlog, at most (the kernel's
 * cap on a backlog, net.core.somaxconn, is 4096 by default). */
#define ACCEPT_BACKLOG_TAKE_MAX 4096

void accept_init(struct acceptor *a)
{
	memset(a, 0, sizeof(*a));
	a->rl_error.interval_ms = ACCEPT_LOG_INTERVAL_MS;
	a->rl_refuse.interval_ms = ACCEPT_LOG_INTERVAL_MS;
	a->held_for_test = getenv("RINGECHO_TEST_HOLD_ACCEPTS") != NULL;
}

static struct accept_view *find(struct acceptor *a, uint64_t id)
{
	for (unsigned i = 0; i < a->n; i++)
		if (a->v[i].id == id)
			return &a->v[i];
	return NULL;
}

void accept_rearm(struct worker *w, struct accept_view *v)
{
	struct io_uring_sqe *sqe;

	if (v->armed || w->state != WORKER_RUNNING || w->acc.resume_ms || w->quiescing ||
	    w->acc.held_for_test)
		return;
	sqe = ring_get_sqe(&w->ring);
	if (!sqe) {
		w->acc.resume_ms = w->now_ms + ACCEPT_PAUSE_MS; /* the tick retries */
		return;
	}
	/* Not close-on-exec: a live upgrade's exec carries every connection
	 * without a system call each (upgrade.h); the only other exec, the
	 * new program file's tries, closes them in the child (upcheck.c). */
	io_uring_prep_multishot_accept(sqe, v->fd, NULL, NULL, 0);
	io_uring_sqe_set_data64(sqe, op_encode(OP_ACCEPT, v->id));
	v->armed = true;
}

void accept_add_listener(struct worker *w, uint64_t id, int fd, const char *name)
{
	struct accept_view *v;

	if (find(&w->acc, id) || w->acc.n == CONFIG_MAX_LISTEN)
		return;
	v = &w->acc.v[w->acc.n++];
	memset(v, 0, sizeof(*v));
	v->id = id;
	v->fd = fd;
	snprintf(v->name, sizeof(v->name), "%s", name);
	accept_rearm(w, v);
}

void accept_remove_listener(struct worker *w, uint64_t id)
{
	struct accept_view *v = find(&w->acc, id);

	if (!v)
		return;
	/* The cancelled accept holds the socket until its completion has
	 * run, which under DEFER_TASKRUN waits for our next enter: a restart,
	 * or a reload that adds the address back, would find it still bound. */
	if (v->armed && ring_cancel_sync(&w->ring, op_encode(OP_ACCEPT, id)) < 0)
		log_warn("stopping %s: its accept did not end in time", v->name);
	*v = w->acc.v[--w->acc.n];
}

void accept_remove_all(struct worker *w)
{
	while (w->acc.n) {
		if (worker_ring_usable(w))
			accept_remove_listener(w, w->acc.v[w->acc.n - 1].id);
		else
			w->acc.n--;
	}
}

static void resume(struct worker *w)
{
	w->acc.resume_ms = 0;
	for (unsigned i = 0; i < w->acc.n; i++)
		accept_rearm(w, &w->acc.v[i]);
}

/* Every loop's accept waits on the same sockets and the kernel wakes one
 * of them for each new connection: the one that keeps up keeps getting them
 * (Cloudflare measured this with epoll's exclusive wake-ups; io_uring's
 * accepts wait exclusively too). So a loop that holds far more than its share
 * hands a new connection to the loop holding the fewest, through its mail.
 * Only on accepts, only when out of balance. */
static struct worker *lighter_loop(struct worker *w)
{
	struct server *s = w->srv;
	unsigned share = admission_total(&s->admission) / s->nworkers;
	struct worker *best = NULL;
	unsigned least = w->nconns;

	if (w->nconns <= share + share / 8 + ACCEPT_BALANCE_SLACK)
		return NULL;
	for (unsigned i = 0; i < s->nworkers; i++) {
		unsigned n =
		    atomic_load_explicit(&s->workers[i].load, memory_order_relaxed);
		if (&s->workers[i] != w && n < least) {
			least = n;
			best = &s->workers[i];
		}
	}
	return best;
}

/* Serve fd here, or hand it to a lighter loop. */
static void place(struct worker *w, int fd, const struct peer_key *peer,
		  const struct sockaddr_storage *ss)
{
	/* Not while an upgrade stops the loops: the other may have written
	 * its connections already (upgrade_progress). */
	struct worker *to =
	    w->srv->nworkers > 1 && !w->quiescing ? lighter_loop(w) : NULL;
	struct mail m = {.type = MAIL_ADOPT, .fd = fd, .peer = *peer, .addr = *ss};

	/* A full mailbox: serve it here rather than wait on that loop. */
	if (to && mailbox_try_send(&to->mail, &m, &w->ring)) {
		w->stats.handed_off++;
		return;
	}
	echo_serve(w, fd, peer, ss);
}

void accept_maybe_resume(struct worker *w)
{
	struct acceptor *a = &w->acc;

	if (!a->resume_ms || w->state != WORKER_RUNNING)
		return;
	/* A connection closed in any loop frees an fd for this one too. */
	if (admission_released(&w->srv->admission) != a->closed_at_pause ||
	    w->now_ms >= a->resume_ms)
		resume(w);
}

/* Out of fds (or memory, or anything odd): leave new clients in the backlog
 * until a connection closes or the pause passes, and never spin. */
static void pause_accepts(struct worker *w, const struct accept_view *v, int err)
{
	unsigned dropped;

	w->stats.accept_paused++;
	w->acc.resume_ms = w->now_ms + ACCEPT_PAUSE_MS;
	w->acc.closed_at_pause = admission_released(&w->srv->admission);
	if (ratelimit_allow(&w->acc.rl_error, w->now_ms, &dropped))
		log_warn("accept: %s; pausing accepts on %s%s", strerror(err), v->name,
			 ratelimit_suffix(dropped));
}

/* Over a limit: the client gets a clean EOF, not a reset, even if it has
 * already sent something (echo_refuse). */
static void refuse(struct worker *w, int fd, const struct sockaddr_storage *ss,
		   const char *why, unsigned limit, uint64_t *counter)
{
	char name[CONFIG_ADDR_TEXT];
	unsigned dropped;

	(*counter)++;
	if (ratelimit_allow(&w->acc.rl_refuse, w->now_ms, &dropped)) {
		sockaddr_text(ss, name, sizeof(name));
		log_warn("refusing a connection from %s: %s (%u) reached%s", name, why,
			 limit, ratelimit_suffix(dropped));
	}
	echo_refuse(w, fd);
}

static void admit(struct worker *w, int fd)
{
	struct sockaddr_storage ss = {.ss_family = AF_UNSPEC};
	socklen_t len = sizeof(ss);
	struct peer_key peer = {.valid = 0};
	const struct config *cfg = &w->cfg;

	if (w->state >= WORKER_CUTTING) {
		close(fd);
		return;
	}
	if (getpeername(fd, (struct sockaddr *)&ss, &len) == 0)
		peer_key_from(&peer, &ss);
	switch (admission_take(&w->srv->admission, &peer, cfg->max_connections,
			       cfg->max_connections_per_ip)) {
	case ADMIT_OK:
		place(w, fd, &peer, &ss);
		break;
	case ADMIT_OVER_MAX:
		refuse(w, fd, &ss, "max_connections", cfg->max_connections,
		       &w->stats.refused_max);
		break;
	case ADMIT_OVER_PER_IP:
		refuse(w, fd, &ss, "max_connections_per_ip", cfg->max_connections_per_ip,
		       &w->stats.refused_per_ip);
		break;
	case ADMIT_NO_MEMORY:
		log_warn("out of memory for a new connection; closing it");
		close(fd);
		break;
	}
}

void accept_take_backlog(struct worker *w, int fd)
{
	int fl;

	if (w->state != WORKER_RUNNING || w->quiescing || !worker_ring_usable(w))
		return;
	/* Our own socket, about to close, so the flag harms nobody: another
	 * holder of it (a loop whose cancel timed out) that takes a client
	 * first must not leave this loop asleep in accept(). */
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return;
	/* Bounded: clients that keep coming are not a reason to stay. */
	for (unsigned i = 0; i < ACCEPT_BACKLOG_TAKE_MAX; i++) {
		/* Not close-on-exec, as the ring's accepts (accept_rearm). */
		int c = accept4(fd, NULL, NULL, 0);

		if (c >= 0)
			admit(w, c);
		else if (errno != ECONNABORTED && errno != EINTR)
			return; /* EAGAIN: none left; out of fds: reset by the close */
	}
}

void accept_on_cqe(struct worker *w, const struct io_uring_cqe *cqe)
{
	struct accept_view *v = find(&w->acc, op_decode_id(cqe->user_data));

	if (cqe->res >= 0)
		admit(w, cqe->res);
	if (cqe->flags & IORING_CQE_F_MORE)
		return;
	if (!v)
		return; /* its listener was closed: nothing to re-arm */
	v->armed = false;
	if (cqe->res == -ECANCELED)
		return;
	if (cqe->res >= 0 || cqe->res == -ECONNABORTED || cqe->res == -EINTR ||
	    cqe->res == -EAGAIN) {
		/* The multishot ended on a passing condition: go on. */
		accept_rearm(w, v);
		return;
	}
	pause_accepts(w, v, -cqe->res);
}
