/* SPDX-License-Identifier: MIT */
#include "mailbox.h"
#include "log.h"
#include "op.h"
#include "ring.h"

#include <errno.h>
#include <sched.h>
#include <string.h>
#include <time.h>

/* How long a wait for other loops goes before it says so (again). */
#define MAIL_WAIT_LOG_S 5

int mailbox_init(struct mailbox *mb)
{
	memset(mb, 0, sizeof(*mb));
	mb->ring_fd = -1;
	return pthread_mutex_init(&mb->lock, NULL) == 0 ? 0 : -ENOMEM;
}

void mailbox_deinit(struct mailbox *mb)
{
	pthread_mutex_destroy(&mb->lock);
}

void mailbox_ring(struct ring *from, int to_fd)
{
	struct io_uring_sqe *sqe = ring_get_sqe(from);

	if (!sqe) {
		log_error("cannot ring a loop's doorbell: its mail waits for its tick");
		return;
	}
	io_uring_prep_msg_ring(sqe, to_fd, 0, op_encode(OP_MAIL, 0), 0);
	io_uring_sqe_set_data64(sqe, op_encode(OP_MAIL_SENT, 0));
	sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
	/* Now, not at our next enter: we may be about to wait for the answer. */
	io_uring_submit(&from->uring);
}

void mailbox_open(struct mailbox *mb, int ring_fd)
{
	pthread_mutex_lock(&mb->lock);
	mb->ring_fd = ring_fd;
	pthread_mutex_unlock(&mb->lock);
}

static bool post(struct mailbox *mb, const struct mail *m, struct ring *from,
		 bool wait_for_room)
{
	int to_fd;

	for (;;) {
		pthread_mutex_lock(&mb->lock);
		if (mb->closed || mb->ring_fd < 0) {
			pthread_mutex_unlock(&mb->lock);
			return false;
		}
		if (mb->n < MAILBOX_SLOTS)
			break;
		pthread_mutex_unlock(&mb->lock);
		if (!wait_for_room)
			return false;
		sched_yield(); /* full: the loop is taking its mail */
	}
	mb->q[(mb->head + mb->n++) % MAILBOX_SLOTS] = *m;
	to_fd = mb->ring_fd;
	pthread_mutex_unlock(&mb->lock);
	/* The fd stays that ring's: the loop closes its mailbox before it
	 * closes its ring, and answers what is queued first. */
	mailbox_ring(from, to_fd);
	return true;
}

bool mailbox_send(struct mailbox *mb, const struct mail *m, struct ring *from)
{
	return post(mb, m, from, true);
}

bool mailbox_try_send(struct mailbox *mb, const struct mail *m, struct ring *from)
{
	return post(mb, m, from, false);
}

void mailbox_close(struct mailbox *mb)
{
	pthread_mutex_lock(&mb->lock);
	mb->closed = true;
	pthread_mutex_unlock(&mb->lock);
}

bool mailbox_take(struct mailbox *mb, struct mail *m)
{
	bool got;

	pthread_mutex_lock(&mb->lock);
	got = mb->n > 0;
	if (got) {
		*m = mb->q[mb->head];
		mb->head = (mb->head + 1) % MAILBOX_SLOTS;
		mb->n--;
	}
	pthread_mutex_unlock(&mb->lock);
	return got;
}

void mail_wait_init(struct mail_wait *w, unsigned pending)
{
	pthread_mutex_init(&w->lock, NULL);
	pthread_cond_init(&w->cond, NULL);
	w->pending = pending;
}

void mail_wait_done(struct mail_wait *w)
{
	pthread_mutex_lock(&w->lock);
	if (w->pending && --w->pending == 0)
		pthread_cond_broadcast(&w->cond);
	pthread_mutex_unlock(&w->lock);
}

void mail_wait_all(struct mail_wait *w)
{
	unsigned waited = 0;
	struct timespec until;

	pthread_mutex_lock(&w->lock);
	while (w->pending) {
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += MAIL_WAIT_LOG_S;
		if (pthread_cond_timedwait(&w->cond, &w->lock, &until) == ETIMEDOUT) {
			/* Never give up: the answer would land in freed memory. A
			 * loop this stuck stops the watchdog too, and systemd ends
			 * it all. */
			waited += MAIL_WAIT_LOG_S;
			log_error("%u loop%s not answered in %u s", w->pending,
				  w->pending == 1 ? " has" : "s have", waited);
		}
	}
	pthread_mutex_unlock(&w->lock);
}

void mail_wait_deinit(struct mail_wait *w)
{
	pthread_cond_destroy(&w->cond);
	pthread_mutex_destroy(&w->lock);
}
