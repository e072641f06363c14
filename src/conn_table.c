/* SPDX-License-Identifier: MIT */
#include "conn_table.h"

#include <errno.h>
#include <stdlib.h>

/* Fibonacci hashing: ids are sequential, so spread them with a multiply by
 * 2^64/phi and keep the well-mixed high bits. */
static size_t slot_of(const struct conn_table *t, uint64_t id)
{
	return (size_t)((id * UINT64_C(0x9E3779B97F4A7C15)) >> t->shift);
}

static int table_alloc(struct conn_table *t, size_t capacity)
{
	t->slots = calloc(capacity, sizeof(*t->slots));
	if (!t->slots)
		return -ENOMEM;
	t->mask = capacity - 1;
	t->shift = 64 - __builtin_ctzll(capacity);
	t->count = 0;
	return 0;
}

int conn_table_init(struct conn_table *t, size_t expected)
{
	size_t capacity = CONN_TABLE_MIN_CAPACITY;

	while (capacity * 3 / 4 < expected)
		capacity *= 2;
	return table_alloc(t, capacity);
}

void conn_table_deinit(struct conn_table *t)
{
	free(t->slots);
	t->slots = NULL;
	t->count = 0;
	t->mask = 0;
}

static void place(struct conn_table *t, uint64_t id, struct conn *conn)
{
	size_t i = slot_of(t, id);

	while (t->slots[i].id)
		i = (i + 1) & t->mask;
	t->slots[i].id = id;
	t->slots[i].conn = conn;
	t->count++;
}

static int grow(struct conn_table *t)
{
	struct conn_table bigger;
	size_t capacity = (t->mask + 1) * 2;

	if (table_alloc(&bigger, capacity) < 0)
		return -ENOMEM;
	for (size_t i = 0; i <= t->mask; i++)
		if (t->slots[i].id)
			place(&bigger, t->slots[i].id, t->slots[i].conn);
	free(t->slots);
	*t = bigger;
	return 0;
}

int conn_table_insert(struct conn_table *t, uint64_t id, struct conn *conn)
{
	if ((t->count + 1) * 4 > (t->mask + 1) * 3 && grow(t) < 0)
		return -ENOMEM;
	place(t, id, conn);
	return 0;
}

static size_t find(const struct conn_table *t, uint64_t id)
{
	size_t i = slot_of(t, id);

	while (t->slots[i].id) {
		if (t->slots[i].id == id)
			return i;
		i = (i + 1) & t->mask;
	}
	return SIZE_MAX;
}

struct conn *conn_table_lookup(const struct conn_table *t, uint64_t id)
{
	size_t i = find(t, id);

	return i == SIZE_MAX ? NULL : t->slots[i].conn;
}

/* Shift later members of the probe run back into the hole, so lookups never
 * stop early at it. */
static void close_hole(struct conn_table *t, size_t hole)
{
	size_t i = hole;

	for (;;) {
		i = (i + 1) & t->mask;
		if (!t->slots[i].id)
			break;
		size_t home = slot_of(t, t->slots[i].id);
		/* Move it if its home is not cyclically within (hole, i]. */
		if (((i - home) & t->mask) >= ((i - hole) & t->mask)) {
			t->slots[hole] = t->slots[i];
			hole = i;
		}
	}
	t->slots[hole].id = 0;
	t->slots[hole].conn = NULL;
}

struct conn *conn_table_remove(struct conn_table *t, uint64_t id)
{
	size_t i = find(t, id);
	struct conn *conn;

	if (i == SIZE_MAX)
		return NULL;
	conn = t->slots[i].conn;
	close_hole(t, i);
	t->count--;
	return conn;
}
