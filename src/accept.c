/* SPDX-License-Identifier: MIT */
#include "accept.h"
#include "echo.h"
#include "listener.h"
#include "op.h"
#include "server.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Longest a listener's close waits for its accept's last completion. */
#define ACCEPT_CLOSE_WAIT_MS   1000
#define ACCEPT_LOG_INTERVAL_MS 5000

void accept_init(struct acceptor *a)
{
	memset(a, 0, sizeof(*a));
	a->rl_error.interval_ms = ACCEPT_LOG_INTERVAL_MS;
	a->rl_refuse.interval_ms = ACCEPT_LOG_INTERVAL_MS;
	a->rl_reset.interval_ms = ACCEPT_LOG_INTERVAL_MS;
}

void accept_arm(struct server *s, struct listener *l)
{
	struct io_uring_sqe *sqe;

	if (l->armed || s->state != SERVER_RUNNING || s->acc.resume_ms)
		return;
	sqe = ring_get_sqe(&s->ring);
	if (!sqe) {
		s->acc.resume_ms = s->now_ms + ACCEPT_PAUSE_MS; /* the tick retries */
		return;
	}
	io_uring_prep_multishot_accept(sqe, l->fd, NULL, NULL, SOCK_CLOEXEC);
	io_uring_sqe_set_data64(sqe, op_encode(OP_ACCEPT, l->id));
	l->armed = true;
}

static void resume(struct server *s)
{
	s->acc.resume_ms = 0;
	for (unsigned i = 0; i < s->listeners.n; i++)
		accept_arm(s, &s->listeners.v[i]);
}

void accept_maybe_resume(struct server *s)
{
	struct acceptor *a = &s->acc;

	if (!a->resume_ms || s->state != SERVER_RUNNING)
		return;
	if (s->stats.conns_closed != a->closed_at_pause || s->now_ms >= a->resume_ms)
		resume(s);
}

/* Out of fds (or memory, or anything odd): leave new clients in the backlog
 * until a connection closes or the pause passes, and never spin. */
static void pause_accepts(struct server *s, const struct listener *l, int err)
{
	unsigned dropped;

	s->stats.accept_paused++;
	s->acc.resume_ms = s->now_ms + ACCEPT_PAUSE_MS;
	s->acc.closed_at_pause = s->stats.conns_closed;
	if (ratelimit_allow(&s->acc.rl_error, s->now_ms, &dropped))
		log_warn("accept: %s; pausing accepts on %s%s", strerror(err), l->name,
			 ratelimit_suffix(dropped));
}

/* Over a limit: the client gets a clean EOF, not a reset, even if it has
 * already sent something (echo_refuse). */
static void refuse(struct server *s, int fd, const struct sockaddr_storage *ss,
		   const char *why, unsigned limit, uint64_t *counter)
{
	char name[CONFIG_ADDR_TEXT];
	unsigned dropped;

	(*counter)++;
	if (ratelimit_allow(&s->acc.rl_refuse, s->now_ms, &dropped)) {
		sockaddr_text(ss, name, sizeof(name));
		log_warn("refusing a connection from %s: %s (%u) reached%s", name, why,
			 limit, ratelimit_suffix(dropped));
	}
	echo_refuse(s, fd);
}

static void admit(struct server *s, int fd)
{
	struct sockaddr_storage ss = {.ss_family = AF_UNSPEC};
	socklen_t len = sizeof(ss);
	struct peer_key peer = {.valid = 0};

	if (s->state >= SERVER_CUTTING) {
		close(fd);
		return;
	}
	if (getpeername(fd, (struct sockaddr *)&ss, &len) == 0)
		peer_key_from(&peer, &ss);
	if (s->nconns >= s->cfg.max_connections) {
		refuse(s, fd, &ss, "max_connections", s->cfg.max_connections,
		       &s->stats.refused_max);
	} else if (s->cfg.max_connections_per_ip && peer.valid &&
		   peer_count(&s->peers, &peer) >= s->cfg.max_connections_per_ip) {
		refuse(s, fd, &ss, "max_connections_per_ip",
		       s->cfg.max_connections_per_ip, &s->stats.refused_per_ip);
	} else {
		echo_serve(s, fd, &peer, &ss);
	}
}

void accept_on_cqe(struct server *s, const struct io_uring_cqe *cqe)
{
	struct listener *l = listeners_find(&s->listeners, op_decode_id(cqe->user_data));

	if (cqe->res >= 0)
		admit(s, cqe->res);
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
		accept_arm(s, l);
		return;
	}
	pause_accepts(s, l, -cqe->res);
}

void accept_close_listener(struct server *s, struct listener *l)
{
	uint64_t ud = op_encode(OP_ACCEPT, l->id);

	if (l->armed) {
		struct io_uring_sync_cancel_reg reg = {
		    .addr = ud,
		    .timeout = {.tv_sec = -1, .tv_nsec = -1},
		};
		/* The cancelled accept holds the socket until its completion
		 * has run, which under DEFER_TASKRUN waits for our next enter:
		 * run it now, or a restart (or a reload that adds the address
		 * back) finds the port still bound. Where the cancel fails, our
		 * own socket can still be shut down to end the accept. */
		if (io_uring_register_sync_cancel(&s->ring.uring, &reg) < 0 &&
		    !l->inherited)
			shutdown(l->fd, SHUT_RDWR);
		if (ring_await_final(&s->ring, ud, ACCEPT_CLOSE_WAIT_MS) < 0)
			log_warn("stopping %s: its accept did not end in %d ms", l->name,
				 ACCEPT_CLOSE_WAIT_MS);
	}
	log_notice("stopped listening on %s", l->name);
	listeners_remove(&s->listeners, l);
}
