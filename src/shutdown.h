/* SPDX-License-Identifier: MIT */
/* One loop's part of a graceful stop: drain (full service, idle clients
 * ended), then cut (what was received is echoed, then EOF), then close or
 * reset what is left; the loop is done when its last connection is. */
#ifndef RINGECHO_SHUTDOWN_H
#define RINGECHO_SHUTDOWN_H

#include <stdint.h>

struct worker;

/* After the shutdown deadline: time to flush what was received before the
 * remaining connections are closed, or reset if they owe their client. */
#define CUT_GRACE_MS 500

/* No new connections; serve the open ones (until loop 0 says cut), ending
 * those that owe nothing and are silent (drain_idle_ms). */
void shutdown_drain(struct worker *w);
/* Every connection: receive no more, echo what was received, clean EOF. */
void shutdown_cut(struct worker *w);
/* Deadlines, and idle connections during the drain. */
void shutdown_tick(struct worker *w);
/* After each batch: is this loop done? */
void shutdown_after_batch(struct worker *w);

#endif
