/* SPDX-License-Identifier: MIT */
/* Accepting connections: one multishot accept per listener, admission
 * against max_connections and max_connections_per_ip (a refused client gets
 * a clean EOF), and the pause when fds or memory run out, until a
 * connection closes or a second has passed. */
#ifndef RINGECHO_ACCEPT_H
#define RINGECHO_ACCEPT_H

#include "log.h"

#include <liburing.h>
#include <stdint.h>

struct server;
struct listener;

/* How long accepting stays paused after EMFILE when no connection closes. */
#define ACCEPT_PAUSE_MS 1000

struct acceptor {
	uint64_t resume_ms;	   /* 0: accepting; else when to try again */
	uint64_t closed_at_pause;  /* stats.conns_closed when the pause began */
	struct ratelimit rl_error; /* "accept: Too many open files" */
	struct ratelimit rl_refuse;
	struct ratelimit rl_reset; /* refusals that had to be a reset */
};

void accept_init(struct acceptor *a);
/* Arm a multishot accept on l (retried by the tick when no SQE). */
void accept_arm(struct server *s, struct listener *l);
/* An OP_ACCEPT completion: admit the client, refuse it, or pause. */
void accept_on_cqe(struct server *s, const struct io_uring_cqe *cqe);
/* After a batch and on each tick: resume a pause once a connection has
 * closed or the pause is over. */
void accept_maybe_resume(struct server *s);
/* Stop accepting on l and close it. Synchronous: when this returns the
 * socket is gone from the kernel too (a restart can bind it at once), and
 * clients connecting now are refused. */
void accept_close_listener(struct server *s, struct listener *l);

#endif
