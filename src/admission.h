/* SPDX-License-Identifier: MIT */
/* The connection limits every loop shares: how many connections are served
 * in all, and how many from each client address. Touched on accept and on
 * close only, never per message; a lock guards the per-address table. */
#ifndef RINGECHO_ADMISSION_H
#define RINGECHO_ADMISSION_H

#include "peer.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

struct admission {
	atomic_uint total;		/* connections served now, every loop together */
	atomic_uint_least64_t released; /* ... and closed, ever */
	pthread_mutex_t lock;
	struct peer_table peers; /* under lock */
};

enum admit_verdict {
	ADMIT_OK,
	ADMIT_OVER_MAX,	   /* max_connections */
	ADMIT_OVER_PER_IP, /* max_connections_per_ip */
	ADMIT_NO_MEMORY,
};

int admission_init(struct admission *l);
void admission_deinit(struct admission *l);
/* Count one more connection from peer (an invalid key: address unknown)
 * if the limits allow it (per_ip 0: no per-address limit). */
enum admit_verdict admission_take(struct admission *l, const struct peer_key *peer,
				  unsigned max, unsigned per_ip);
/* Count a connection whatever the limits (one carried over by an upgrade). */
void admission_force(struct admission *l, const struct peer_key *peer);
/* A connection admitted from peer has closed. */
void admission_release(struct admission *l, const struct peer_key *peer);
/* Connections served now, all loops together. */
unsigned admission_total(struct admission *l);
/* Connections closed so far, all loops together. */
uint64_t admission_released(struct admission *l);

#endif
