/* SPDX-License-Identifier: MIT */
#include "peer.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#define PEER_MIN_CAPACITY 64

void peer_key_from(struct peer_key *k, const struct sockaddr_storage *ss)
{
	memset(k, 0, sizeof(*k));
	if (ss->ss_family == AF_INET6) {
		memcpy(k->addr, &((const struct sockaddr_in6 *)ss)->sin6_addr, 16);
	} else if (ss->ss_family == AF_INET) {
		k->addr[10] = k->addr[11] = 0xff;
		memcpy(k->addr + 12, &((const struct sockaddr_in *)ss)->sin_addr, 4);
	} else {
		return;
	}
	k->valid = 1;
}

static size_t hash_key(const struct peer_key *k)
{
	uint64_t h = UINT64_C(14695981039346656037); /* FNV-1a */

	for (int i = 0; i < 16; i++)
		h = (h ^ k->addr[i]) * UINT64_C(1099511628211);
	return (size_t)h;
}

static int alloc_slots(struct peer_table *t, size_t capacity)
{
	t->slots = calloc(capacity, sizeof(*t->slots));
	if (!t->slots)
		return -ENOMEM;
	t->mask = capacity - 1;
	t->used = 0;
	return 0;
}

int peer_table_init(struct peer_table *t)
{
	return alloc_slots(t, PEER_MIN_CAPACITY);
}

void peer_table_deinit(struct peer_table *t)
{
	free(t->slots);
	t->slots = NULL;
}

static size_t probe(const struct peer_table *t, const struct peer_key *k)
{
	size_t i = hash_key(k) & t->mask;

	while (t->slots[i].count && memcmp(t->slots[i].key.addr, k->addr, 16) != 0)
		i = (i + 1) & t->mask;
	return i; /* the key's slot, or the empty slot where it would go */
}

uint32_t peer_count(const struct peer_table *t, const struct peer_key *k)
{
	return t->slots[probe(t, k)].count;
}

static int grow(struct peer_table *t)
{
	struct peer_table bigger;

	if (alloc_slots(&bigger, (t->mask + 1) * 2) < 0)
		return -ENOMEM;
	for (size_t i = 0; i <= t->mask; i++) {
		if (t->slots[i].count) {
			bigger.slots[probe(&bigger, &t->slots[i].key)] = t->slots[i];
			bigger.used++;
		}
	}
	free(t->slots);
	*t = bigger;
	return 0;
}

int peer_add(struct peer_table *t, const struct peer_key *k)
{
	size_t i;

	if ((t->used + 1) * 4 > (t->mask + 1) * 3 && grow(t) < 0)
		return -ENOMEM;
	i = probe(t, k);
	if (!t->slots[i].count) {
		t->slots[i].key = *k;
		t->used++;
	}
	t->slots[i].count++;
	return 0;
}

void peer_remove(struct peer_table *t, const struct peer_key *k)
{
	size_t hole = probe(t, k), i = hole;

	if (!t->slots[hole].count || --t->slots[hole].count)
		return;
	t->used--;
	/* Backward-shift deletion, as in conn_table.c. */
	for (;;) {
		i = (i + 1) & t->mask;
		if (!t->slots[i].count)
			break;
		size_t home = hash_key(&t->slots[i].key) & t->mask;
		if (((i - home) & t->mask) >= ((i - hole) & t->mask)) {
			t->slots[hole] = t->slots[i];
			hole = i;
		}
	}
	memset(&t->slots[hole], 0, sizeof(t->slots[hole]));
}
