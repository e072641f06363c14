/* SPDX-License-Identifier: MIT */
/* The daemon's one state object, passed down everywhere instead of globals,
 * and the loop that owns it. */
#ifndef RINGECHO_SERVER_H
#define RINGECHO_SERVER_H

#include "accept.h"
#include "bufring.h"
#include "config.h"
#include "conn_table.h"
#include "list.h"
#include "listener.h"
#include "log.h"
#include "notify.h"
#include "peer.h"
#include "ring.h"
#include "stats.h"

#include <linux/time_types.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/signalfd.h>

struct conn;

/* Longest the loop sleeps between housekeeping ticks (STATUS, accept resume). */
#define TICK_MAX_MS 1000
/* Shortest tick, whatever idle_timeout_ms asks for. */
#define TICK_MIN_MS 10
/* Tick while shutting down, so deadlines are met closely. */
#define TICK_SHUTDOWN_MS 100
/* After the shutdown deadline: time to flush what was received before the
 * remaining connections are reset. */
#define CUT_GRACE_MS 500
/* Receives in the last batch that make the loop wait for a batch again. */
#define BATCH_MIN_RECVS 2
/* Fds kept free beyond max_connections: listeners, ring, signalfd, logs. */
#define FD_RESERVE 32
/* Room for what a reload could not apply, shown in STATUS= until a good one. */
#define RELOAD_PROBLEM_LEN 200

enum server_state {
	SERVER_RUNNING,
	SERVER_DRAINING, /* SIGTERM: no new connections; old ones served */
	SERVER_CUTTING,	 /* deadline: flush what was received, EOF, close */
	SERVER_DONE,
};

struct server {
	struct config cfg;
	struct config_cli cli;
	struct ring ring;
	struct bufring bufs;
	struct conn_table conns;
	struct peer_table peers;
	struct listeners listeners;
	struct acceptor acc;
	struct list idle_lru;  /* connections by last activity, oldest first */
	struct list starved;   /* connections waiting for receive buffers */
	struct list due;       /* connections with a send to start (CONN_SEND_DUE) */
	struct list sending;   /* connections that owe bytes, stalest first */
	struct list lingering; /* refused connections, oldest first */
	struct stats stats;
	struct notify notify;
	enum server_state state;
	int sigfd;
	bool sig_armed;
	struct __kernel_timespec tick_ts; /* the in-flight timer reads it */
	bool tick_armed;
	uint64_t now_ms;
	uint64_t next_conn_id;
	unsigned nconns;	    /* served (refused ones not counted) */
	unsigned nrefused;	    /* refused, waiting for their client's EOF */
	uint64_t recycled_at_batch; /* bufs.recycled when this batch began */
	uint64_t deadline_ms;	    /* end of the drain, then of the cut */
	unsigned conns_at_stop;	    /* for the last log line: connections and */
	struct stats at_stop;	    /* counters when the shutdown began */
	unsigned sends_queued;	    /* sends since the last enter */
	unsigned recvs_batch;	    /* receives with data in this batch */
	unsigned recvs_last;	    /* ... and in the one before */
	char reload_problem[RELOAD_PROBLEM_LEN]; /* reload.c: "" when none */
};

/* Set up everything and arm the first operations. Returns 0 or an exit
 * status (69: no usable io_uring, 1: other start-up failure), logged. */
int server_init(struct server *s, const struct config *cfg, const struct config_cli *cli);
/* Run until shut down. Returns the process exit status. */
int server_run(struct server *s);
void server_deinit(struct server *s);

/* Milliseconds on CLOCK_MONOTONIC. */
uint64_t server_clock_ms(void);
/* Call fn on every connection; fn may free the one it is given. */
void server_each_conn(struct server *s, void (*fn)(struct server *, struct conn *));
/* One-line counters, for SIGUSR1 and STATUS=. */
void server_format_stats(const struct server *s, char *buf, size_t len);
void server_format_status(const struct server *s, char *buf, size_t len);

#endif
