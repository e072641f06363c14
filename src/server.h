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
#include "mailbox.h"
#include "notify.h"
#include "stats.h"
#include "upgrade.h"

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
	bool threads_running;	   /* loops 1.. are on their threads */
	bool accepts_later;	   /* an upgrade: loops 1.. accept once every carried
				    * connection is back (and counted) */
	int exit_status;	   /* 1 once a loop has failed */
	uint64_t stop_deadline_ms; /* the drain's end (lifecycle.c) */
	bool cut_sent;		   /* ... and the loops were told to cut */
	unsigned conns_at_stop;	   /* for the last log line: connections and */
	struct stats at_stop;	   /* counters when the shutdown began */
	char reload_problem[RELOAD_PROBLEM_LEN]; /* reload.c: "" when none */
	struct upgrade upgrade;			 /* upgrade.c, restore.c */
};

/* Set up everything and arm the first operations: s is zeroed but for
 * s->upgrade (upgrade_init). from: what the old program of a live upgrade
 * handed over, or NULL. Returns 0 or an exit status (69: no usable
 * io_uring, 1: other start-up failure), logged. */
int server_init(struct server *s, const struct config *cfg, const struct config_cli *cli,
		struct upgrade_state *from);
/* Run until shut down. Returns the process exit status. */
int server_run(struct server *s);
void server_deinit(struct server *s);

/* Start serving l: its accepts in every loop, or its datagrams in loop 0.
 * 0, or -errno (logged) when UDP buffers cannot be had. */
int server_add_listener(struct server *s, struct listener *l);
/* Stop accepting on l in every loop, then close it. Synchronous: the
 * socket is gone from the kernel when this returns. */
void server_close_listener(struct server *s, struct listener *l);
/* Give every loop a copy of s->cfg (and wait until each has it). */
void server_share_config(struct server *s);
/* Tell every loop to drain (MAIL_DRAIN) or cut (MAIL_CUT). */
void server_tell(struct server *s, enum mail_type type);
/* Apply m in loop 0 and send it to the others, without waiting. */
void server_tell_mail(struct server *s, const struct mail *m);
/* Counters of every loop added up, and the connections they serve now. */
void server_totals(const struct server *s, struct stats *st, unsigned *nconns);
/* SIGUSR1: the totals on one line, then one line per loop if several. */
void server_log_stats(struct server *s);
/* STATUS=: connections, messages, bytes, refusals, datagrams. */
void server_format_status(const struct server *s, char *buf, size_t len);
/* Have loops 1.. all ended? */
bool server_others_finished(const struct server *s);
/* Wait for loops 1.. to end (and free what they held). */
void server_join(struct server *s);

#endif
