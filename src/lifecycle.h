/* SPDX-License-Identifier: MIT */
/* What the daemon does when told to stop, reload or report: signals from a
 * signalfd polled on the ring, the drain-then-cut shutdown. */
#ifndef RINGECHO_LIFECYCLE_H
#define RINGECHO_LIFECYCLE_H

#include <liburing.h>

struct server;

/* Block the signals we handle, ignore SIGPIPE, open the signalfd. 0 or -errno. */
int lifecycle_init(struct server *s);
void lifecycle_deinit(struct server *s);
/* Queue a poll of the signalfd; the loop reads the signals when it fires. */
void lifecycle_arm(struct server *s);
void lifecycle_on_signal(struct server *s, const struct io_uring_cqe *cqe);
/* Deadlines: end the drain, end the cut; idle connections in a drain. */
void lifecycle_tick(struct server *s);
/* After each batch: is a shutdown complete? */
void lifecycle_after_batch(struct server *s);
/* Log the closing line once the loop has ended. */
void lifecycle_finish(struct server *s);

#endif
