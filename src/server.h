/* SPDX-License-Identifier: MIT */
/* The daemon's one state object, passed down everywhere instead of globals,
 * and the loop that owns it. */
#ifndef RINGECHO_SERVER_H
#define RINGECHO_SERVER_H

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
/* How long accepting stays paused after EMFILE when no connection closes. */
#define ACCEPT_PAUSE_MS 1000
/* Receives in the last batch that make the loop wait for a batch again. */
#define BATCH_MIN_RECVS 2
/* Fds kept free beyond max_connections: listeners, ring, signalfd, logs. */
#define FD_RESERVE 32

enum server_state {
	SERVER_RUNNING,
	SERVER_DRAINING, /* SIGTERM: no new connections; old ones served */
	SERVER_CUTTING,	 /* deadline: flush what was received, EOF, close */
	SERVER_DONE,
};

struct server_opts {
	const char *config_path;
	bool config_explicit; /* -c given: a missing file is an error */
	struct listen_addr listen[CONFIG_MAX_LISTEN]; /* -l, replacing the file's */
	unsigned nlisten;
	bool verbose;
};

struct server {
	struct config cfg;
	struct server_opts opts;
	struct ring ring;
	struct bufring bufs;
	struct conn_table conns;
	struct peer_table peers;
	struct listeners listeners;
	struct list idle_lru; /* connections by last receive, oldest first */
	struct list starved;  /* connections waiting for receive buffers */
	struct list due;      /* connections with a send to start (CONN_SEND_DUE) */
	struct stats stats;
	struct notify notify;
	enum server_state state;
	int sigfd;
	bool sig_armed;
	struct __kernel_timespec tick_ts; /* the in-flight timer reads it */
	bool tick_armed;
	uint64_t now_ms;
	uint64_t next_conn_id;
	unsigned nconns;
	uint64_t recycled_at_batch; /* bufs.recycled when this batch began */
	uint64_t accept_resume_ms;  /* 0: accepting; else when to retry */
	uint64_t deadline_ms;	    /* end of the drain, then of the cut */
	uint64_t drained, cut;	    /* connections, for the last log line */
	unsigned sends_queued;	    /* sends since the last enter */
	unsigned recvs_batch;	    /* receives with data in this batch */
	unsigned recvs_last;	    /* ... and in the one before */
	struct ratelimit rl_accept, rl_refuse;
};

/* Set up everything and arm the first operations. Returns 0 or an exit
 * status (69: no usable io_uring, 1: other start-up failure), logged. */
int server_init(struct server *s, const struct config *cfg,
		const struct server_opts *opts);
/* Run until shut down. Returns the process exit status. */
int server_run(struct server *s);
void server_deinit(struct server *s);

/* Milliseconds on CLOCK_MONOTONIC. */
uint64_t server_clock_ms(void);
/* Arm a multishot accept on l (logged and retried later on failure). */
void server_arm_accept(struct server *s, struct listener *l);
/* Stop accepting on l and close it; safe with its accept in flight. */
void server_close_listener(struct server *s, struct listener *l);
/* A connection was freed: resume a paused accept, finish a drain. */
void server_conn_released(struct server *s);
/* Call fn on every connection; fn may free the one it is given. */
void server_each_conn(struct server *s, void (*fn)(struct server *, struct conn *));
/* One-line counters, for SIGUSR1 and STATUS=. */
void server_format_stats(const struct server *s, char *buf, size_t len);
void server_format_status(const struct server *s, char *buf, size_t len);

#endif
