/* SPDX-License-Identifier: MIT */
/* SPDX-License-Identifier: MIT */
/*
 * Log-linear latency histogram (HdrHistogram's layout, fixed precision):
 * values below 2^HIST_SUB_BITS nanoseconds are exact; above, each power of two
 * is cut into 2^(HIST_SUB_BITS-1) equal slices, so a reported percentile is
 * within 1/2^(HIST_SUB_BITS-1) (about 1.6 %) of the true value. Recording is
 * a count-leading-zeros and an increment: cheap enough for every message.
 */
#ifndef BENCH_HIST_H
#define BENCH_HIST_H

#include <stdint.h>

#define HIST_SUB_BITS 7
/* Enough slices for 2^63 ns; never reached, but no value can overflow it. */
#define HIST_BUCKETS ((64 - HIST_SUB_BITS + 2) << (HIST_SUB_BITS - 1))

struct hist {
	uint64_t count;
	uint64_t sum;
	uint64_t max;
	uint64_t buckets[HIST_BUCKETS];
};

/* Zeroes every count. */
void hist_reset(struct hist *h);

/* Adds one value (nanoseconds). */
void hist_add(struct hist *h, uint64_t v);

/* The value at quantile q (0..1), as the middle of its bucket; 0 if empty. */
uint64_t hist_quantile(const struct hist *h, double q);

#endif
