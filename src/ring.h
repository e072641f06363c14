/* SPDX-License-Identifier: MIT */
/* The one io_uring of the daemon: set-up with feature fallback, an opcode
 * probe, a get-SQE that never gives up silently, and the completion loop. */
#ifndef RINGECHO_RING_H
#define RINGECHO_RING_H

#include <liburing.h>
#include <stdbool.h>
#include <stdint.h>

/* CQ entries per SQ entry: multishot accept and recv post many completions
 * per submission, so the CQ needs more room than the SQ. */
#define RING_CQ_FACTOR 4

struct ring {
	struct io_uring uring;
	unsigned flags;	       /* IORING_SETUP_* that the kernel accepted */
	bool fd_registered;    /* io_uring_register_ring_fd succeeded */
	bool min_wait;	       /* the kernel takes min_wait_usec (Linux 6.12) */
	uint64_t cq_overflows; /* times the kernel had to park completions */
	unsigned lost_seen;    /* last value of the kernel's dropped-CQE count */
};

typedef void (*ring_cqe_fn)(void *ctx, const struct io_uring_cqe *cqe);

/* Set up with the fastest flags the kernel accepts, sharing the io-wq of
 * the ring wq_fd (-1: none). 0 or -errno; on failure *why holds one line for
 * the user (io_uring missing, disabled, blocked). */
int ring_init(struct ring *r, unsigned entries, unsigned sqpoll_idle_ms, int wq_fd,
	      const char **why);
void ring_deinit(struct ring *r);

/* Check every opcode the daemon uses. 0, or -EOPNOTSUPP with *missing set. */
int ring_probe(struct ring *r, const char **missing);

/* A free SQE; when the SQ is full, submit and retry. NULL only when the
 * kernel refuses submission (then the caller gives up that one operation). */
struct io_uring_sqe *ring_get_sqe(struct ring *r);

/* Submit what is queued and wait for wait_nr completions, but no longer
 * than min_wait_us (then with what has arrived, possibly none) where the
 * kernel supports that; elsewhere, and for wait_nr 1, wait for one with no
 * time limit. 0, or -errno for a real failure. */
int ring_wait(struct ring *r, unsigned wait_nr, unsigned min_wait_us);

/* Cancel the request user_data and wait until it has really ended: its last
 * completion is in the queue (left there for the loop) and it has let go of
 * its file, so that closing the fd closes the socket. Under DEFER_TASKRUN a
 * cancelled request finishes only when its task enters the ring again; this
 * runs that work at once. 0, or -ETIME if it did not end in a second. */
int ring_cancel_sync(struct ring *r, uint64_t user_data);

/* Hand every completion present to fn, then mark them seen. Returns how many. */
unsigned ring_dispatch(struct ring *r, ring_cqe_fn fn, void *ctx);

/* Human-readable list of the set-up flags in use, for the start-up log. */
const char *ring_describe(const struct ring *r, char *buf, unsigned len);

#endif
