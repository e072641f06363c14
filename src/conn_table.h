/* SPDX-License-Identifier: MIT */
/* Connections by id: an open-addressing hash table with linear probing and
 * backward-shift deletion (no tombstones, so a long-running daemon with
 * churn never degrades). It grows by doubling at 3/4 load. */
#ifndef RINGECHO_CONN_TABLE_H
#define RINGECHO_CONN_TABLE_H

#include <stddef.h>
#include <stdint.h>

struct conn;

struct conn_slot {
	uint64_t id; /* 0: empty */
	struct conn *conn;
};

struct conn_table {
	struct conn_slot *slots;
	size_t mask;	/* capacity - 1; capacity is a power of two */
	unsigned shift; /* 64 - log2(capacity), for the hash */
	size_t count;
};

#define CONN_TABLE_MIN_CAPACITY 64

/* Empty table with room for about `expected` entries before growing. */
int conn_table_init(struct conn_table *t, size_t expected);
void conn_table_deinit(struct conn_table *t);
/* Insert conn under id (id != 0, not present). 0 or -ENOMEM. */
int conn_table_insert(struct conn_table *t, uint64_t id, struct conn *conn);
/* The connection with that id, or NULL. */
struct conn *conn_table_lookup(const struct conn_table *t, uint64_t id);
/* Remove id; returns the connection it held, or NULL if absent. */
struct conn *conn_table_remove(struct conn_table *t, uint64_t id);

/* Visit every entry; fn may not insert or remove. */
#define conn_table_for_each(t, slot)                                                     \
	for (struct conn_slot *slot = (t)->slots;                                        \
	     slot && slot <= (t)->slots + (t)->mask; slot++)                             \
		if (slot->id)

#endif
