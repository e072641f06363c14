/* SPDX-License-Identifier: MIT */
/* The daemon: what its loops share (the configuration in force, the
 * listening sockets, the connection limits, systemd's notification socket,
 * the signals) and its loops, passed down everywhere instead of globals. */
#ifndef RINGECHO_SERVER_H
#define RINGECHO_SERVER_H

#include "config.h"
#include "admission.h"
#include "listener.h"
#include "log.h"
#include "notify.h"
#include "stats.h"

#include <stdbool.h>
#include <stdint.h>

struct worker;

/* Fds kept free beyond max_connections: listeners, rings, signalfd, logs. */
#define FD_RESERVE 32
/* Room for what a reload could not apply, shown in STATUS= until a good one. */
#define RELOAD_PROBLEM_LEN 200

enum server_state {
	SERVER_RUNNING,
	SERVER_STOPPING, /* SIGTERM: the loops drain, then cut */
};

struct server {
	struct config cfg; /* in force; each loop holds a copy */
	struct config_cli cli;
	struct listeners listeners; /* every loop accepts on each */
	struct admission admission;
	struct notify notify;
	enum server_state state;
	int sigfd; /* lifecycle.c: polled on loop 0's ring */
	bool sig_armed;
	struct worker *workers;
	unsigned nworkers;
	unsigned conns_at_stop; /* for the last log line: connections and */
	struct stats at_stop;	/* counters when the shutdown began */
	char reload_problem[RELOAD_PROBLEM_LEN]; /* reload.c: "" when none */
};

/* Set up everything and arm the first operations. Returns 0 or an exit
 * status (69: no usable io_uring, 1: other start-up failure), logged. */
int server_init(struct server *s, const struct config *cfg, const struct config_cli *cli);
/* Run until shut down. Returns the process exit status. */
int server_run(struct server *s);
void server_deinit(struct server *s);

/* Start serving l: its accepts in every loop, or its datagrams in loop 0.
 * 0, or -errno (logged) when UDP buffers cannot be had. */
int server_add_listener(struct server *s, struct listener *l);
/* Stop accepting on l in every loop, then close it. Synchronous: the
 * socket is gone from the kernel when this returns. */
void server_close_listener(struct server *s, struct listener *l);
/* Give every loop a copy of s->cfg. */
void server_share_config(struct server *s);
/* Counters of every loop added up, and the connections they serve now. */
void server_totals(const struct server *s, struct stats *st, unsigned *nconns);
/* One-line counters, for SIGUSR1 and STATUS=. */
void server_format_stats(const struct server *s, char *buf, size_t len);
void server_format_status(const struct server *s, char *buf, size_t len);

#endif
