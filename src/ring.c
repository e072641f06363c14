/* SPDX-License-Identifier: MIT */
#include "ring.h"
#include "log.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* Linux 6.12: io_uring_getevents_arg.min_wait_usec (liburing 2.3 calls the
 * field "pad" and has no helper for it). */
/* Longest a synchronous cancel waits for the request's end. */
#define RING_CANCEL_WAIT_MS 1000

#ifndef IORING_FEAT_MIN_TIMEOUT
#define IORING_FEAT_MIN_TIMEOUT (1U << 15)
#endif

/* Most to least wanted. DEFER_TASKRUN runs completions only when we ask for
 * them, so they arrive in batches and without interrupting the loop; SQPOLL
 * cannot be combined with it and gets its own list. */
static const unsigned setup_plain[] = {
    IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SUBMIT_ALL,
    IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SUBMIT_ALL,
    0,
};
static const unsigned setup_sqpoll[] = {
    IORING_SETUP_SQPOLL | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_SUBMIT_ALL,
    IORING_SETUP_SQPOLL,
};

static int read_disabled_sysctl(void)
{
	FILE *f = fopen("/proc/sys/kernel/io_uring_disabled", "r");
	int v = 0;

	if (!f)
		return 0;
	if (fscanf(f, "%d", &v) != 1)
		v = 0;
	fclose(f);
	return v;
}

static const char *explain_setup_error(int err)
{
	int disabled = read_disabled_sysctl();

	if (err == -ENOSYS)
		return "io_uring is not available: the kernel has no io_uring support, "
		       "or a "
		       "seccomp filter blocks io_uring_setup (ENOSYS)";
	if (err == -EPERM && disabled)
		return disabled == 2
			   ? "io_uring is disabled on this machine "
			     "(sysctl kernel.io_uring_disabled=2)"
			   : "io_uring is restricted on this machine "
			     "(sysctl kernel.io_uring_disabled=1 and this user is "
			     "not in kernel.io_uring_group)";
	if (err == -EPERM || err == -EACCES)
		return "io_uring is not permitted: a seccomp filter or security module "
		       "blocks io_uring_setup";
	if (err == -ENOMEM)
		return "io_uring set-up failed: out of memory (or RLIMIT_MEMLOCK too low "
		       "on "
		       "an old kernel)";
	return "io_uring set-up failed";
}

static int try_setup(struct ring *r, unsigned entries, unsigned flags, unsigned idle_ms,
		     int wq_fd)
{
	struct io_uring_params p;
	int ret;

	memset(&p, 0, sizeof(p));
	/* CLAMP: the kernel caps the completion queue (65,536 entries) rather
	 * than refuse ring_entries above 16,384 with EINVAL. */
	p.flags = flags | IORING_SETUP_CQSIZE | IORING_SETUP_CLAMP;
	p.cq_entries = entries * RING_CQ_FACTOR;
	p.sq_thread_idle = idle_ms;
	if (wq_fd >= 0) {
		/* One pool of io-wq workers for every loop's ring. */
		p.flags |= IORING_SETUP_ATTACH_WQ;
		p.wq_fd = (unsigned)wq_fd;
		ret = io_uring_queue_init_params(entries, &r->uring, &p);
		if (ret != -EINVAL)
			return ret;
		p.flags &= ~IORING_SETUP_ATTACH_WQ;
	}
	return io_uring_queue_init_params(entries, &r->uring, &p);
}

int ring_init(struct ring *r, unsigned entries, unsigned sqpoll_idle_ms, int wq_fd,
	      const char **why)
{
	const unsigned *list = sqpoll_idle_ms ? setup_sqpoll : setup_plain;
	size_t n = sqpoll_idle_ms ? sizeof(setup_sqpoll) / sizeof(setup_sqpoll[0])
				  : sizeof(setup_plain) / sizeof(setup_plain[0]);
	int ret = -EINVAL;

	memset(r, 0, sizeof(*r));
	for (size_t i = 0; i < n; i++) {
		ret = try_setup(r, entries, list[i], sqpoll_idle_ms, wq_fd);
		if (ret == 0) {
			r->flags = list[i];
			break;
		}
		if (ret != -EINVAL) /* a flag we asked for is not the problem */
			break;
		log_debug("io_uring set-up flags 0x%x refused; trying fewer", list[i]);
	}
	if (ret < 0) {
		*why = explain_setup_error(ret);
		return ret;
	}
	r->min_wait = !(r->flags & IORING_SETUP_SQPOLL) &&
		      (r->uring.features & IORING_FEAT_MIN_TIMEOUT);
	/* Saves an fd lookup on every io_uring_enter; optional. */
	r->fd_registered = io_uring_register_ring_fd(&r->uring) == 1;
	return 0;
}

void ring_deinit(struct ring *r)
{
	if (r->uring.ring_fd > 0)
		io_uring_queue_exit(&r->uring);
	r->uring.ring_fd = -1;
}

static const struct {
	int op;
	const char *what;
} required_ops[] = {
    {IORING_OP_ACCEPT, "accept"},
    {IORING_OP_RECV, "recv"},
    {IORING_OP_SEND, "send"},
    {IORING_OP_READ, "read"},
    {IORING_OP_TIMEOUT, "timeout"},
    {IORING_OP_ASYNC_CANCEL, "cancel"},
    /* The probe cannot see multishot recv or buffer rings; SEND_ZC came in
     * the same release (Linux 6.0) and stands for them. */
    {IORING_OP_SEND_ZC, "multishot recv (Linux 6.0)"},
};

int ring_probe(struct ring *r, const char **missing)
{
	struct io_uring_probe *p = io_uring_get_probe_ring(&r->uring);
	int ret = 0;

	if (!p) {
		*missing = "the opcode probe (Linux 5.6)";
		return -EOPNOTSUPP;
	}
	for (size_t i = 0; i < sizeof(required_ops) / sizeof(required_ops[0]); i++) {
		if (!io_uring_opcode_supported(p, required_ops[i].op)) {
			*missing = required_ops[i].what;
			ret = -EOPNOTSUPP;
			break;
		}
	}
	io_uring_free_probe(p);
	return ret;
}

struct io_uring_sqe *ring_get_sqe(struct ring *r)
{
	struct io_uring_sqe *sqe;

	for (int tries = 0; tries < 3; tries++) {
		sqe = io_uring_get_sqe(&r->uring);
		if (sqe)
			return sqe;
		/* SQ full: push it to the kernel to make room. -EBUSY means the
		 * CQ overflow list is full; reaping parked completions frees it. */
		if (io_uring_submit(&r->uring) == -EBUSY)
			io_uring_get_events(&r->uring);
		/* Under SQPOLL the submit only wakes the kernel's SQ thread;
		 * wait until it has taken entries, or the retries find the
		 * queue as full as before. */
		if (r->flags & IORING_SETUP_SQPOLL)
			io_uring_sqring_wait(&r->uring);
	}
	log_error("io_uring submission queue stays full");
	return NULL;
}

static void note_overflow(struct ring *r)
{
	unsigned lost = IO_URING_READ_ONCE(*r->uring.cq.koverflow);

	if (IO_URING_READ_ONCE(*r->uring.sq.kflags) & IORING_SQ_CQ_OVERFLOW)
		r->cq_overflows++;
	if (lost != r->lost_seen) {
		/* Only when the kernel could not even allocate overflow entries. */
		log_error("io_uring dropped %u completions", lost - r->lost_seen);
		r->lost_seen = lost;
	}
}

/* Submit and wait for wait_nr completions, but once min_wait_us has passed
 * return with whatever has arrived, possibly nothing (no general timeout is
 * given: arming a second timer costs on every call). liburing 2.3 cannot
 * pass min_wait_usec, so publish the SQ tail as io_uring_submit() would and
 * enter the kernel ourselves. */
static int enter_batch(struct ring *r, unsigned wait_nr, unsigned min_wait_us)
{
	struct io_uring_sq *sq = &r->uring.sq;
	struct io_uring_getevents_arg arg = {
	    .sigmask = 0,
	    .sigmask_sz = _NSIG / 8,
	    .pad = min_wait_us,
	    .ts = 0,
	};
	unsigned flags = IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG;
	int fd = r->uring.ring_fd;

	if (sq->sqe_head != sq->sqe_tail) {
		sq->sqe_head = sq->sqe_tail;
		io_uring_smp_store_release(sq->ktail, sq->sqe_tail);
	}
	if (r->fd_registered) {
		flags |= IORING_ENTER_REGISTERED_RING;
		fd = r->uring.enter_ring_fd;
	}
	return io_uring_enter2(fd, *sq->ktail - IO_URING_READ_ONCE(*sq->khead), wait_nr,
			       flags, (sigset_t *)&arg, sizeof(arg));
}

int ring_wait(struct ring *r, unsigned wait_nr, unsigned min_wait_us)
{
	int ret;

	/* A batch wait needs a bound: without min_wait_usec, wait for one. No
	 * timeout otherwise: the caller keeps a timer on the ring. */
	if (wait_nr > 1 && min_wait_us && r->min_wait) {
		ret = enter_batch(r, wait_nr, min_wait_us);
		if (ret == -EINVAL) {
			/* Advertised but refused: wait plainly from now on. */
			log_warn(
			    "io_uring refused a batched wait; waiting for one completion "
			    "at a time");
			r->min_wait = false;
			return 0;
		}
	} else {
		ret = io_uring_submit_and_wait(&r->uring, 1);
	}
	/* Passing conditions: a timeout, a signal, or the kernel short of
	 * memory for requests or of room for completions; reaping the
	 * completions we have is the cure for the last two. */
	if (ret == -ETIME || ret == -EINTR || ret == -EBUSY || ret == -EAGAIN)
		return 0;
	/* -EBADR: the kernel had to drop completions; note_overflow() logs it
	 * after the next dispatch, and the loop goes on. */
	if (ret == -EBADR)
		return 0;
	return ret < 0 ? ret : 0;
}

static bool cq_holds_final(struct ring *r, uint64_t user_data)
{
	struct io_uring_cqe *cqe;
	unsigned head;

	io_uring_for_each_cqe(&r->uring, head, cqe)
	{
		if (cqe->user_data == user_data && !(cqe->flags & IORING_CQE_F_MORE))
			return true;
	}
	return false;
}

static uint64_t monotonic_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int await_final(struct ring *r, uint64_t user_data, unsigned timeout_ms)
{
	uint64_t deadline = monotonic_ms() + timeout_ms;
	struct __kernel_timespec tick = {.tv_sec = 0, .tv_nsec = 1000000};
	struct io_uring_cqe *cqe;

	for (;;) {
		/* Runs the deferred completions and flushes parked ones. */
		io_uring_get_events(&r->uring);
		if (cq_holds_final(r, user_data))
			return 0;
		/* A full queue parks completions in the kernel: the request
		 * has finished all the same. */
		if (io_uring_cq_ready(&r->uring) >= r->uring.cq.ring_entries)
			return 0;
		if (monotonic_ms() >= deadline)
			return -ETIME;
		io_uring_wait_cqes(&r->uring, &cqe, io_uring_cq_ready(&r->uring) + 1,
				   &tick, NULL);
	}
}

int ring_cancel_sync(struct ring *r, uint64_t user_data)
{
	struct io_uring_sync_cancel_reg reg = {
	    .addr = user_data,
	    .timeout = {.tv_sec = -1, .tv_nsec = -1},
	};

	/* The request may still sit in the SQ, not yet seen by the kernel. */
	if (io_uring_sq_ready(&r->uring))
		io_uring_submit(&r->uring);
	io_uring_register_sync_cancel(&r->uring, &reg);
	return await_final(r, user_data, RING_CANCEL_WAIT_MS);
}

unsigned ring_dispatch(struct ring *r, ring_cqe_fn fn, void *ctx)
{
	struct io_uring_cqe *cqe;
	unsigned head, n = 0;

	io_uring_for_each_cqe(&r->uring, head, cqe)
	{
		fn(ctx, cqe);
		n++;
	}
	io_uring_cq_advance(&r->uring, n);
	note_overflow(r);
	return n;
}

const char *ring_describe(const struct ring *r, char *buf, unsigned len)
{
	snprintf(buf, len, "%u SQ / %u CQ entries%s%s%s%s%s", r->uring.sq.ring_entries,
		 r->uring.cq.ring_entries,
		 r->flags & IORING_SETUP_DEFER_TASKRUN ? ", defer-taskrun" : "",
		 r->flags & IORING_SETUP_COOP_TASKRUN ? ", coop-taskrun" : "",
		 r->flags & IORING_SETUP_SQPOLL ? ", sqpoll" : "",
		 r->fd_registered ? ", registered fd" : "",
		 r->min_wait ? ", batched waits" : "");
	return buf;
}
