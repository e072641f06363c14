/* SPDX-License-Identifier: MIT */
/* What the daemon does when told to stop, reload or report: signals from a
 * signalfd polled on loop 0's ring, turned into work for every loop; the
 * watchdog and STATUS= from loop 0's tick. */
#ifndef RINGECHO_LIFECYCLE_H
#define RINGECHO_LIFECYCLE_H

#include <liburing.h>
#include <stdint.h>

struct server;
struct worker;

/* Block the signals we handle and ignore SIGPIPE, from the first moment of
 * a start: one that comes while the configuration is read waits for the
 * loop instead of killing the daemon. 0 or -errno. */
int lifecycle_block_signals(void);
/* Open the signalfd for them (after lifecycle_block_signals()). 0 or -errno. */
int lifecycle_init(struct server *s);
void lifecycle_deinit(struct server *s);
/* Queue a poll of the signalfd on w's ring; the loop reads the signals. */
void lifecycle_arm(struct server *s, struct worker *w);
void lifecycle_on_signal(struct server *s, struct worker *w,
			 const struct io_uring_cqe *cqe);
/* Loop 0's tick: the watchdog, STATUS=, signals under SQPOLL. */
void lifecycle_tick(struct server *s, struct worker *w);
/* How often loop 0 must tick for the watchdog (0: no watchdog). */
uint64_t lifecycle_tick_ms(const struct server *s);
/* Log the closing line once every loop has ended. */
void lifecycle_finish(struct server *s);
/* Another loop rang loop 0's doorbell: has one failed? */
void lifecycle_on_doorbell(struct server *s, struct worker *w);
/* Begin a graceful shutdown, as SIGTERM does (unless one is under way). */
void lifecycle_stop(struct server *s, struct worker *w);
/* Stop every loop at once (loop 0 broke, or start-up failed half way). */
void lifecycle_abort(struct server *s);

#endif
