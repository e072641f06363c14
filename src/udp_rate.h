/* SPDX-License-Identifier: MIT */
/* Replies per second to each client address, as token buckets (the burst is
 * the rate), in a table of fixed size that forgets the addresses it has not
 * seen for longest: a bucket unused for a second is full again anyway, so
 * forgetting it costs nothing, and memory stays bounded whatever addresses
 * a flood of spoofed datagrams claims. */
#ifndef RINGECHO_UDP_RATE_H
#define RINGECHO_UDP_RATE_H

#include "peer.h"

#include <stdbool.h>
#include <stdint.h>

/* Addresses remembered at once (a power of two), and slots probed for one. */
#define UDP_RATE_SLOTS 4096
#define UDP_RATE_PROBE 8

_Static_assert((UDP_RATE_SLOTS & (UDP_RATE_SLOTS - 1)) == 0, "a power of two");

struct udp_rate_slot {
	uint8_t addr[16];
	bool used;
	uint64_t last_ms;
	uint64_t millitokens; /* a reply costs 1000 */
};

struct udp_rate {
	struct udp_rate_slot *slots;
	uint64_t seed; /* keyed hash: a sender cannot aim its addresses at one slot */
};

int udp_rate_init(struct udp_rate *r);
void udp_rate_deinit(struct udp_rate *r);
/* May addr have one more reply now, at `rate` a second (0: no limit)? */
bool udp_rate_allow(struct udp_rate *r, const struct peer_key *addr, unsigned rate,
		    uint64_t now_ms);

#endif
