/* SPDX-License-Identifier: MIT */
/* Connections per client address, for max_connections_per_ip: an
 * open-addressing table of address -> count, entries removed at zero. */
#ifndef RINGECHO_PEER_H
#define RINGECHO_PEER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct peer_key {
	uint8_t addr[16]; /* IPv4 stored as v4-mapped IPv6 */
	uint8_t valid;
};

struct peer_slot {
	struct peer_key key;
	uint32_t count; /* 0: empty */
};

struct peer_table {
	struct peer_slot *slots;
	size_t mask;
	size_t used;
};

/* Key of a peer address (AF_INET or AF_INET6). */
void peer_key_from(struct peer_key *k, const struct sockaddr_storage *ss);
int peer_table_init(struct peer_table *t);
void peer_table_deinit(struct peer_table *t);
/* Connections from k now. */
uint32_t peer_count(const struct peer_table *t, const struct peer_key *k);
/* Count one more from k. 0 or -ENOMEM. */
int peer_add(struct peer_table *t, const struct peer_key *k);
/* Count one fewer from k (no-op when absent). */
void peer_remove(struct peer_table *t, const struct peer_key *k);

#endif
