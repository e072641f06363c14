/* SPDX-License-Identifier: MIT */
/* A minimal intrusive doubly-linked list with a sentinel head. */
#ifndef RINGECHO_LIST_H
#define RINGECHO_LIST_H

#include <stdbool.h>
#include <stddef.h>

struct list {
	struct list *prev, *next;
};

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

static inline void list_init(struct list *l)
{
	l->prev = l->next = l;
}

static inline bool list_empty(const struct list *l)
{
	return l->next == l;
}

/* A node that is in no list points at itself, so unlinking twice is safe. */
static inline bool list_linked(const struct list *n)
{
	return n->next != n;
}

static inline void list_del(struct list *n)
{
	n->prev->next = n->next;
	n->next->prev = n->prev;
	list_init(n);
}

static inline void list_add_tail(struct list *head, struct list *n)
{
	n->prev = head->prev;
	n->next = head;
	head->prev->next = n;
	head->prev = n;
}

#endif
