/* SPDX-License-Identifier: MIT */
#include "udp_rate.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define MILLI 1000

int udp_rate_init(struct udp_rate *r)
{
	r->slots = calloc(UDP_RATE_SLOTS, sizeof(*r->slots));
	if (!r->slots)
		return -ENOMEM;
	if (getrandom(&r->seed, sizeof(r->seed), GRND_NONBLOCK) != sizeof(r->seed))
		r->seed = (uint64_t)(uintptr_t)r->slots; /* weaker, but never fatal */
	return 0;
}

void udp_rate_deinit(struct udp_rate *r)
{
	free(r->slots);
	r->slots = NULL;
}

static uint64_t hash(const struct udp_rate *r, const uint8_t addr[16])
{
	uint64_t h = r->seed ^ UINT64_C(14695981039346656037); /* FNV-1a, keyed */

	for (int i = 0; i < 16; i++)
		h = (h ^ addr[i]) * UINT64_C(1099511628211);
	return h ^ (h >> 29);
}

/* The slot of addr, or the one it takes over: a free one, else the one
 * seen longest ago among those probed. */
static struct udp_rate_slot *slot_of(struct udp_rate *r, const uint8_t addr[16])
{
	uint64_t h = hash(r, addr);
	struct udp_rate_slot *victim = NULL;

	for (unsigned i = 0; i < UDP_RATE_PROBE; i++) {
		struct udp_rate_slot *s = &r->slots[(h + i) & (UDP_RATE_SLOTS - 1)];
		if (!s->used) {
			if (!victim || victim->used)
				victim = s;
		} else if (memcmp(s->addr, addr, 16) == 0) {
			return s;
		} else if (!victim || (victim->used && s->last_ms < victim->last_ms)) {
			victim = s;
		}
	}
	return victim;
}

bool udp_rate_allow(struct udp_rate *r, const struct peer_key *addr, unsigned rate,
		    uint64_t now_ms)
{
	uint64_t cap = (uint64_t)rate * MILLI;
	struct udp_rate_slot *s;

	if (!rate || !addr->valid)
		return true;
	s = slot_of(r, addr->addr);
	if (!s->used || memcmp(s->addr, addr->addr, 16) != 0) {
		memcpy(s->addr, addr->addr, 16);
		s->used = true;
		s->millitokens = cap; /* a new address starts with a full burst */
	} else {
		/* rate tokens a second is rate millitokens a millisecond */
		uint64_t refill = (now_ms - s->last_ms) * rate;
		s->millitokens =
		    s->millitokens + refill > cap ? cap : s->millitokens + refill;
	}
	s->last_ms = now_ms;
	if (s->millitokens < MILLI)
		return false;
	s->millitokens -= MILLI;
	return true;
}
