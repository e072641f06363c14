/* SPDX-License-Identifier: MIT */
/* Accepting connections: one multishot accept per listener in each loop,
 * admission against max_connections and max_connections_per_ip (counted
 * across loops; a refused client gets a clean EOF), and the pause when fds
 * or memory run out, until a connection closes or a second has passed. */
#ifndef RINGECHO_ACCEPT_H
#define RINGECHO_ACCEPT_H

#include "config.h"
#include "log.h"

#include <liburing.h>
#include <stdbool.h>
#include <stdint.h>

struct worker;
struct listener;

/* How long accepting stays paused after EMFILE when no connection closes. */
#define ACCEPT_PAUSE_MS 1000

/* A listening socket as one loop sees it: the fd is shared by every loop,
 * the accept armed on it is this loop's own. */
struct accept_view {
	uint64_t id; /* the listener's id: late completions of a closed one miss */
	int fd;
	bool armed;
	char name[CONFIG_ADDR_TEXT];
};

struct acceptor {
	struct accept_view v[CONFIG_MAX_LISTEN];
	unsigned n;
	uint64_t resume_ms;	  /* 0: accepting; else when to try again */
	uint64_t closed_at_pause; /* connections closed, every loop, at the pause */
	/* RINGECHO_TEST_HOLD_ACCEPTS: arm no accept, so that clients wait in
	 * the backlog (the tests of accept_take_backlog). */
	bool held_for_test;
	struct ratelimit rl_error; /* "accept: Too many open files" */
	struct ratelimit rl_refuse;
};

void accept_init(struct acceptor *a);
/* Start accepting on listener id (socket fd; name for messages) here. */
void accept_add_listener(struct worker *w, uint64_t id, int fd, const char *name);
/* Stop accepting on listener id in this loop. Synchronous: when this
 * returns, this loop's accept has ended and let go of the socket. */
void accept_remove_listener(struct worker *w, uint64_t id);
/* A listener of our own about to close, that no other loop accepts on any
 * more: serve (or refuse) the clients already in its backlog, whose
 * connect() has returned, rather than have the close reset them. Leaves
 * the socket non-blocking. */
void accept_take_backlog(struct worker *w, int fd);
/* Forget every listener (at tear-down). */
void accept_remove_all(struct worker *w);
/* Arm v's accept again (unless paused, stopping or quiescing). */
void accept_rearm(struct worker *w, struct accept_view *v);
/* An OP_ACCEPT completion: admit the client, refuse it, or pause. */
void accept_on_cqe(struct worker *w, const struct io_uring_cqe *cqe);
/* After a batch and on each tick: resume a pause once a connection has
 * closed or the pause is over. */
void accept_maybe_resume(struct worker *w);

#endif
