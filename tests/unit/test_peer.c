/* SPDX-License-Identifier: MIT */
/* The per-address table (open addressing, backward-shift delete) against a
 * plain array model. Keys are crafted so that their FNV-1a hashes share the
 * low bits: whole clusters land on one home slot, at every table size up to
 * SPREAD, and some wrap around the table's end. Deleting from such a cluster
 * in any order must leave every other key reachable: a plain clear of the
 * slot, or a shift that moves an entry before its home, loses keys here. */
#include "check.h"
#include "peer.h"

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MIN_SLOTS 64   /* peer.c's initial capacity */
#define SPREAD	  4096 /* crafted keys collide in tables up to this size */
#define GROUPS	  8    /* clusters of colliding keys */
#define PER_GROUP 40   /* keys per cluster */
#define LOOSE	  2500 /* keys with arbitrary hashes */
#define NKEYS	  (GROUPS * PER_GROUP + LOOSE)
#define CHURN	  400000

static struct peer_key keys[NKEYS];
static uint32_t model[NKEYS]; /* connections counted for keys[i] */
static size_t live;	      /* keys with a count */

/* The same hash as peer.c: the test checks below that it still matches. */
static size_t fnv1a(const struct peer_key *k)
{
	uint64_t h = UINT64_C(14695981039346656037);

	for (int i = 0; i < 16; i++)
		h = (h ^ k->addr[i]) * UINT64_C(1099511628211);
	return (size_t)h;
}

/* Key number n: an IPv6 address 2001:db8::/32 with n in the low bytes. */
static void make_key(struct peer_key *k, uint64_t n)
{
	memset(k, 0, sizeof(*k));
	k->addr[0] = 0x20;
	k->addr[1] = 0x01;
	k->addr[2] = 0x0d;
	k->addr[3] = 0xb8;
	for (int i = 0; i < 8; i++)
		k->addr[15 - i] = (uint8_t)(n >> (8 * i));
	k->valid = 1;
}

/* Fill keys[first..first+count) with keys whose hash is home mod SPREAD,
 * drawing candidates from *next on. */
static void craft(size_t first, size_t count, size_t home, uint64_t *next)
{
	for (size_t i = first; i < first + count; (*next)++) {
		make_key(&keys[i], *next);
		if ((fnv1a(&keys[i]) & (SPREAD - 1)) == home)
			i++;
	}
}

/* Homes at both ends of every table size, so clusters wrap, and in the
 * middle; at 64 slots groups 0-3 share one run of slots 62, 63, 0, 1, ... */
static const size_t homes[GROUPS] = {SPREAD - 2, SPREAD - 1, 0, 1, 30, 31, 2000, 2001};

static void make_keys(void)
{
	uint64_t next = 1;

	for (int g = 0; g < GROUPS; g++)
		craft((size_t)g * PER_GROUP, PER_GROUP, homes[g], &next);
	for (size_t i = GROUPS * PER_GROUP; i < NKEYS; i++)
		make_key(&keys[i], next++);
}

/* Every key counts what the model says, and the table holds nothing else:
 * each occupied slot is a distinct key, reachable from its home slot
 * without crossing an empty one. */
static void check_all(const struct peer_table *t)
{
	size_t occupied = 0;

	for (size_t i = 0; i < NKEYS; i++)
		CHECK(peer_count(t, &keys[i]) == model[i]);
	for (size_t s = 0; s <= t->mask; s++) {
		if (!t->slots[s].count)
			continue;
		occupied++;
		for (size_t p = fnv1a(&t->slots[s].key) & t->mask; p != s;
		     p = (p + 1) & t->mask)
			CHECK(t->slots[p].count);
	}
	CHECK(occupied == t->used);
	CHECK(t->used == live);
}

static void add(struct peer_table *t, size_t i)
{
	CHECK(peer_add(t, &keys[i]) == 0);
	if (model[i]++ == 0)
		live++;
	CHECK(peer_count(t, &keys[i]) == model[i]);
	CHECK(t->used == live);
}

/* One fewer from keys[i]; true if it had none (a no-op). */
static bool del(struct peer_table *t, size_t i)
{
	bool absent = model[i] == 0;

	peer_remove(t, &keys[i]);
	if (!absent && --model[i] == 0)
		live--;
	CHECK(peer_count(t, &keys[i]) == model[i]);
	CHECK(t->used == live);
	return absent;
}

static void test_basic(void)
{
	struct sockaddr_storage v4 = {0}, v6 = {0}, unix_ss = {0};
	struct sockaddr_in *a4 = (struct sockaddr_in *)&v4;
	struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&v6;
	struct peer_key k4, k6, kx;
	struct peer_table t;

	a4->sin_family = AF_INET;
	a4->sin_addr.s_addr = htonl(0x7f000002);
	a6->sin6_family = AF_INET6;
	a6->sin6_addr.s6_addr[10] = a6->sin6_addr.s6_addr[11] = 0xff;
	memcpy(&a6->sin6_addr.s6_addr[12], &a4->sin_addr, 4);
	unix_ss.ss_family = AF_UNIX;
	peer_key_from(&k4, &v4);
	peer_key_from(&k6, &v6);
	peer_key_from(&kx, &unix_ss);
	CHECK(k4.valid && k6.valid && !kx.valid);
	/* 127.0.0.2 and ::ffff:127.0.0.2 are one client. */
	CHECK(memcmp(k4.addr, k6.addr, 16) == 0);

	CHECK(peer_table_init(&t) == 0);
	CHECK(t.mask + 1 == MIN_SLOTS);
	CHECK(peer_count(&t, &k4) == 0);
	peer_remove(&t, &k4); /* absent: nothing happens */
	CHECK(t.used == 0 && peer_count(&t, &k4) == 0);
	CHECK(peer_add(&t, &k4) == 0 && peer_add(&t, &k6) == 0);
	CHECK(peer_count(&t, &k4) == 2 && t.used == 1);
	peer_remove(&t, &k6);
	CHECK(peer_count(&t, &k4) == 1 && t.used == 1);
	peer_remove(&t, &k4);
	CHECK(peer_count(&t, &k4) == 0 && t.used == 0);
	peer_remove(&t, &k4);
	CHECK(t.used == 0);
	peer_table_deinit(&t);
}

/* A 64-slot table filled as densely as it may be (47 keys: peer_add grows
 * the table before it would hold 48, even when the 48th add is one more
 * connection of a key already there) by four clusters that run into each
 * other across the end of the table, emptied in a different random order
 * each round, every key checked after each delete. */
static void test_dense_clusters(void)
{
	enum { n = MIN_SLOTS * 3 / 4 - 1 };
	size_t order[n];
	struct peer_table t;

	CHECK(peer_table_init(&t) == 0);
	srand(7);
	for (int round = 0; round < 200; round++) {
		for (size_t j = 0; j < n; j++) {
			/* groups 0-3 interleaved: homes 62, 63, 0, 1 at 64 slots */
			order[j] = (j % 4) * PER_GROUP + j / 4;
			add(&t, order[j]);
			if (rand() % 4 == 0)
				add(&t, order[j]); /* a second connection */
		}
		CHECK(t.mask + 1 == MIN_SLOTS); /* full, not grown */
		CHECK(t.used == n);
		/* The crafted keys really collide: one run from slot 62 on. */
		for (size_t s = 0; s < n; s++)
			CHECK(t.slots[(MIN_SLOTS - 2 + s) & t.mask].count);
		check_all(&t);
		for (size_t j = n - 1; j > 0; j--) {
			size_t r = (size_t)rand() % (j + 1), tmp = order[j];
			order[j] = order[r];
			order[r] = tmp;
		}
		for (size_t j = 0; j < n; j++) {
			while (model[order[j]])
				del(&t, order[j]);
			del(&t, order[j]); /* absent now */
			for (size_t k = 0; k < n; k++)
				CHECK(peer_count(&t, &keys[order[k]]) == model[order[k]]);
		}
		CHECK(t.used == 0);
	}
	check_all(&t);
	peer_table_deinit(&t);
}

/* Random adds and removes over colliding and arbitrary keys, through
 * growth from 64 to 4096 slots. A key holds at most max_count connections,
 * so keys keep falling to zero and leaving their clusters; some removes
 * are of keys that have none. */
static void test_churn(void)
{
	const uint32_t max_count = 3;
	long absent = 0;
	struct peer_table t;

	CHECK(live == 0);
	CHECK(peer_table_init(&t) == 0);
	srand(12345);
	for (long step = 0; step < CHURN; step++) {
		/* Half the operations on colliding keys, half on any. */
		size_t i = rand() % 2 ? (size_t)rand() % (GROUPS * PER_GROUP)
				      : (size_t)rand() % NKEYS;

		if (rand() % 10 < 6 && model[i] < max_count)
			add(&t, i);
		else
			absent += del(&t, i);
		if (step % 20000 == 0)
			check_all(&t);
	}
	CHECK(absent > CHURN / 50);
	CHECK(t.mask + 1 == SPREAD); /* grown as far as the crafted collisions reach */
	check_all(&t);
	for (size_t i = 0; i < NKEYS; i++)
		while (model[i])
			del(&t, i);
	check_all(&t);
	CHECK(t.used == 0);
	peer_table_deinit(&t);
}

int main(void)
{
	make_keys();
	test_basic();
	test_dense_clusters();
	test_churn();
	return check_done("peer table");
}
