/* SPDX-License-Identifier: MIT */
// SPDX-License-Identifier: MIT
#include "hist.h"

#include <string.h>

#define SUB_COUNT (1U << HIST_SUB_BITS)
#define HALF	  (1U << (HIST_SUB_BITS - 1))

void hist_reset(struct hist *h)
{
	memset(h, 0, sizeof(*h));
}

static unsigned int bucket_of(uint64_t v)
{
	unsigned int msb, shift;

	if (v < SUB_COUNT)
		return (unsigned int)v;
	msb = 63 - (unsigned int)__builtin_clzll(v);
	shift = msb - (HIST_SUB_BITS - 1);
	/* v >> shift lies in [HALF, SUB_COUNT): the slice inside this power of two */
	return shift * HALF + (unsigned int)(v >> shift);
}

/* Lowest value of a bucket, and the bucket's width. */
static uint64_t bucket_low(unsigned int idx, uint64_t *width)
{
	unsigned int shift;

	if (idx < SUB_COUNT) {
		*width = 1;
		return idx;
	}
	shift = idx / HALF - 1;
	*width = 1ULL << shift;
	return (uint64_t)(idx - shift * HALF) << shift;
}

void hist_add(struct hist *h, uint64_t v)
{
	h->buckets[bucket_of(v)]++;
	h->count++;
	h->sum += v;
	if (v > h->max)
		h->max = v;
}

uint64_t hist_quantile(const struct hist *h, double q)
{
	uint64_t rank, seen = 0, width;

	if (!h->count)
		return 0;
	rank = (uint64_t)(q * (double)h->count);
	if (rank >= h->count)
		rank = h->count - 1;
	for (unsigned int i = 0; i < HIST_BUCKETS; i++) {
		seen += h->buckets[i];
		if (seen > rank) {
			uint64_t low = bucket_low(i, &width);
			uint64_t mid = low + width / 2;

			return mid > h->max ? h->max : mid;
		}
	}
	return h->max;
}
