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
#include "mailbox.h"
#include "ring.h"
#include "stats.h"
#include "udp.h"
#include "upstate.h"

#include <linux/time_types.h>
#include <pthread.h>
#include <stdatomic.h>
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
/* The most loops a daemon runs (workers = 0 asks for one per CPU). */
#define WORKERS_MAX 64

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
	bool tick_due;	 /* the timer fired in this batch; handled after it */
	bool ticked;	 /* the first tick has come */
	bool broken;	 /* io_uring_enter failed: the ring takes nothing more */
	bool recv_limit; /* receives are armed with a byte limit (echo.c) */
	/* A live upgrade (upgrade.c): */
	bool quiescing;		      /* no accepts, no receives */
	bool sends_stopped;	      /* ... no new sends; those in flight finish */
	bool sends_cut;		      /* ... past upgrade_timeout_ms: cancelled */
	atomic_bool quiesced;	      /* nothing in flight; its state is written */
	uint64_t quiesce_deadline_ms; /* when sends in flight are cancelled */
	struct upstate_buf handover;  /* its connections, for the new program */
	uint64_t now_ms;
	uint64_t next_conn_id;
	unsigned nconns;	    /* served here (refused ones not counted) */
	unsigned nrefused;	    /* refused, waiting for their client's EOF */
	uint64_t recycled_at_batch; /* bufs.recycled when this batch began */
	uint64_t deadline_ms;	    /* end of the drain, then of the cut */
	unsigned sends_queued;	    /* sends since the last enter */
	unsigned recvs_batch;	    /* receives with data in this batch */
	unsigned recvs_last;	    /* ... and in the one before */
	/* Between loops (loop 0 runs on the main thread, the others on their own): */
	struct mailbox mail;
	pthread_t thread;
	bool thread_started;
	struct mail_wait *started;	    /* answered once the thread is set up */
	int start_status;		    /* worker_init's answer, for server_init */
	atomic_bool finished;		    /* the loop has ended (done or failed) */
	atomic_bool failed;		    /* ... on a fatal ring error */
	atomic_uint_least64_t heartbeat_ms; /* its last tick, for the watchdog */
	atomic_uint load;		    /* nconns, for others to balance by */
};

/* Milliseconds on CLOCK_MONOTONIC. */
uint64_t worker_clock_ms(void);

/* Set up w's ring (sharing the io-wq of ring wq_fd, or -1), buffers and
 * tables (cfg: the configuration to run with). 0, or an exit status (69:
 * io_uring not usable, 1: other), logged. */
int worker_init(struct worker *w, struct server *srv, unsigned index,
		const struct config *cfg, int wq_fd);
/* Run the loop until w is done (loop 0: and every other loop has
 * finished). 0, or 1 after a fatal ring error (logged). */
int worker_run(struct worker *w);
/* Free what is left: connections, listener views, the ring. From the
 * loop's own thread: its ring takes submissions from that thread only. */
void worker_deinit(struct worker *w);
/* Start loop w (index > 0) on a thread of its own: it sets itself up,
 * accepts on the server's listeners, answers in w->start_status (through
 * `started`), then runs until done. 0 or -errno (no thread). */
int worker_start_thread(struct worker *w, struct mail_wait *started);
/* Handle the mail another loop sent (also checked on each tick). */
void worker_read_mail(struct worker *w);
/* Apply one message to w (loop 0 applies its own without mailing them). */
void worker_apply_mail(struct worker *w, const struct mail *m);

/* Call fn on every connection; fn may free the one it is given. */
void worker_each_conn(struct worker *w, void (*fn)(struct worker *, struct conn *));
/* Can the ring still take submissions (set up, not broken)? */
static inline bool worker_ring_usable(const struct worker *w)
{
	return w->ring.uring.ring_fd > 0 && !w->broken;
}
/* Submit what is queued (before the server sleeps on something else). */
void worker_flush(struct worker *w);

#endif
