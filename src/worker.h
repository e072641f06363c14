/* SPDX-License-Identifier: MIT */
/* One event loop: its thread's one ring, its receive buffers, its
 * connections, and the accepts it keeps armed on the shared listeners.
 * Nothing here is touched by another loop. */
#ifndef RINGECHO_WORKER_H
#define RINGECHO_WORKER_H

#include "accept.h"
#include "bufring.h"
#include "config.h"
#include "conn_table.h"
#include "list.h"
#include "ring.h"
#include "stats.h"
#include "udp.h"

#include <linux/time_types.h>
#include <stdbool.h>
#include <stdint.h>

struct conn;
struct server;

/* Longest the loop sleeps between housekeeping ticks (STATUS, accept resume). */
#define TICK_MAX_MS 1000
/* Shortest tick, whatever idle_timeout_ms asks for. */
#define TICK_MIN_MS 10
/* Tick while shutting down, so deadlines are met closely. */
#define TICK_SHUTDOWN_MS 100
/* Receives in the last batch that make the loop wait for a batch again. */
#define BATCH_MIN_RECVS 2

enum worker_state {
	WORKER_RUNNING,
	WORKER_DRAINING, /* SIGTERM: no new connections; old ones served */
	WORKER_CUTTING,	 /* deadline: flush what was received, EOF, close */
	WORKER_DONE,
};

struct worker {
	struct server *srv;
	unsigned index;
	struct config cfg; /* this loop's copy, replaced by a reload */
	struct ring ring;
	struct bufring bufs;
	struct conn_table conns;
	struct acceptor acc;
	struct udp udp;	       /* UDP sockets are served by loop 0 alone */
	struct list idle_lru;  /* connections by last activity, oldest first */
	struct list starved;   /* connections waiting for receive buffers */
	struct list due;       /* connections with a send to start (CONN_SEND_DUE) */
	struct list sending;   /* connections that owe bytes, stalest first */
	struct list lingering; /* refused connections, oldest first */
	struct stats stats;
	enum worker_state state;
	struct __kernel_timespec tick_ts; /* the in-flight timer reads it */
	bool tick_armed;
	uint64_t now_ms;
	uint64_t next_conn_id;
	unsigned nconns;	    /* served here (refused ones not counted) */
	unsigned nrefused;	    /* refused, waiting for their client's EOF */
	uint64_t recycled_at_batch; /* bufs.recycled when this batch began */
	uint64_t deadline_ms;	    /* end of the drain, then of the cut */
	unsigned sends_queued;	    /* sends since the last enter */
	unsigned recvs_batch;	    /* receives with data in this batch */
	unsigned recvs_last;	    /* ... and in the one before */
};

/* Milliseconds on CLOCK_MONOTONIC. */
uint64_t worker_clock_ms(void);

/* Set up w's ring, buffers and tables (cfg: the configuration to run with).
 * 0, or an exit status (69: io_uring not usable, 1: other), logged. */
int worker_init(struct worker *w, struct server *srv, unsigned index,
		const struct config *cfg);
/* Run the loop until w is done. 0, or 1 after a fatal ring error (logged). */
int worker_run(struct worker *w);
/* Free what is left: connections, listener views, the ring. */
void worker_deinit(struct worker *w);

/* Call fn on every connection; fn may free the one it is given. */
void worker_each_conn(struct worker *w, void (*fn)(struct worker *, struct conn *));
/* Submit what is queued (before the server sleeps on something else). */
void worker_flush(struct worker *w);

#endif
