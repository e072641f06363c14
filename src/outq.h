/* SPDX-License-Identifier: MIT */
/* A connection's queue of received bytes waiting to be echoed: one growable
 * buffer, handed whole to the next send so the bytes are copied only once. */
#ifndef RINGECHO_OUTQ_H
#define RINGECHO_OUTQ_H

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define OUTQ_MIN_CAPACITY 4096

struct outq {
	char *data;
	uint32_t len, cap;
};

/* Make room for len more bytes. 0 or -ENOMEM (the queue is unchanged then). */
static inline int outq_reserve(struct outq *q, uint32_t len)
{
	if (q->len + len > q->cap) {
		uint32_t cap = q->cap ? q->cap : OUTQ_MIN_CAPACITY;
		char *d;

		while (cap < q->len + len)
			cap *= 2;
		d = realloc(q->data, cap);
		if (!d)
			return -ENOMEM;
		q->data = d;
		q->cap = cap;
	}
	return 0;
}

/* Append len bytes. 0 or -ENOMEM (the queue is unchanged then). */
static inline int outq_append(struct outq *q, const char *p, uint32_t len)
{
	int ret = outq_reserve(q, len);

	if (ret < 0)
		return ret;
	memcpy(q->data + q->len, p, len);
	q->len += len;
	return 0;
}

#endif
