/* SPDX-License-Identifier: MIT */
/* Control messages between loops: a small locked queue per loop, and a
 * doorbell rung on the loop's own ring (IORING_OP_MSG_RING, sent from the
 * sender's ring), so that a loop sleeping in io_uring_enter wakes up for
 * its mail like for any completion. The per-message path never sees any of
 * this: only reloads, signals, statistics and shutdown send mail. */
#ifndef RINGECHO_MAILBOX_H
#define RINGECHO_MAILBOX_H

#include "config.h"
#include "peer.h"
#include "upstate.h"
#include "stats.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

struct ring;

/* Messages a loop can hold before a sender waits for room. */
#define MAILBOX_SLOTS 64

enum mail_type {
	MAIL_ADD_LISTENER,    /* accept on listener id, fd */
	MAIL_REMOVE_LISTENER, /* stop accepting on listener id (synchronous) */
	MAIL_CONFIG,	      /* take a copy of *cfg */
	MAIL_DRAIN,	      /* SIGTERM: no new connections, serve the rest */
	MAIL_CUT,	      /* the deadline: echo what was received, then EOF */
	MAIL_STATS,	      /* copy the counters to *stats and the count to *nconns */
	MAIL_ADOPT,	      /* serve connection fd (from peer, addr): balance */
	MAIL_QUIESCE,	      /* an upgrade: stop accepting and receiving */
	MAIL_RESUME,	      /* ... the exec failed: serve on */
	MAIL_RESTORE,	      /* take connections an upgrade carried over */
};

/* A sender that waits for its messages to be handled counts them here. */
struct mail_wait {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned pending;
};

struct mail {
	enum mail_type type;
	uint64_t id;
	int fd;
	char name[CONFIG_ADDR_TEXT];
	const struct config *cfg;
	struct stats *stats;
	unsigned *nconns;
	uint64_t *overflows;
	struct peer_key peer;
	struct sockaddr_storage addr;
	uint64_t deadline_ms;	   /* MAIL_QUIESCE */
	const struct uprec *conns; /* MAIL_RESTORE */
	unsigned nconns_restore;
	struct mail_wait *wait; /* NULL: nobody waits */
};

struct mailbox {
	pthread_mutex_t lock;
	struct mail q[MAILBOX_SLOTS];
	unsigned head, n;
	bool closed; /* its loop has ended: nothing more is taken */
	int ring_fd; /* its loop's ring, where the doorbell rings */
};

int mailbox_init(struct mailbox *mb);
void mailbox_deinit(struct mailbox *mb);
/* The ring of the loop that owns mb: mail is taken from now on. */
void mailbox_open(struct mailbox *mb, int ring_fd);
/* Queue m for the loop whose mailbox is mb, ringing its doorbell with an
 * SQE of the sender's ring `from`. False when that loop is not open or has
 * ended (its mailbox is closed): the message is not taken. */
bool mailbox_send(struct mailbox *mb, const struct mail *m, struct ring *from);
/* The same, but false at once when the mailbox is full: for a loop's mail
 * to another loop, which may be waiting for this one to answer (loop 0 in
 * tell_others()), and so would never take its mail while we wait. */
bool mailbox_try_send(struct mailbox *mb, const struct mail *m, struct ring *from);
/* Refuse further mail (a loop that ends); what was queued can still be
 * taken. */
void mailbox_close(struct mailbox *mb);
/* Ring the doorbell of the loop whose ring fd is to_fd, from ring `from`. */
void mailbox_ring(struct ring *from, int to_fd);
/* Take the oldest message; false when there is none. */
bool mailbox_take(struct mailbox *mb, struct mail *m);

void mail_wait_init(struct mail_wait *w, unsigned pending);
/* One message handled (by the loop that took it). */
void mail_wait_done(struct mail_wait *w);
/* Wait until every message is handled (logging every few seconds while a
 * loop does not answer). */
void mail_wait_all(struct mail_wait *w);
void mail_wait_deinit(struct mail_wait *w);

#endif
