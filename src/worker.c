/* SPDX-License-Identifier: MIT */
#include "worker.h"
#include "accept.h"
#include "admission.h"
#include "conn.h"
#include "echo.h"
#include "lifecycle.h"
#include "op.h"
#include "server.h"
#include "shutdown.h"
#include "timeouts.h"
#include "upgrade.h"

#include <errno.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define EXIT_UNAVAILABLE 69 /* sysexits.h EX_UNAVAILABLE */
/* Buckets the connection table starts with. */
#define CONN_TABLE_START 1024

uint64_t worker_clock_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t tick_ms(const struct worker *w)
{
	uint64_t t = TICK_MAX_MS,
		 watchdog = w->index == 0 ? lifecycle_tick_ms(w->srv) : 0;

	if (w->cfg.idle_timeout_ms && w->cfg.idle_timeout_ms / 4 < t)
		t = w->cfg.idle_timeout_ms / 4;
	if (w->cfg.send_timeout_ms && w->cfg.send_timeout_ms / 4 < t)
		t = w->cfg.send_timeout_ms / 4;
	if (watchdog && watchdog < t)
		t = watchdog;
	if (w->state != WORKER_RUNNING && TICK_SHUTDOWN_MS < t)
		t = TICK_SHUTDOWN_MS;
	return t < TICK_MIN_MS ? TICK_MIN_MS : t;
}

/* The one timer on the ring, re-armed after each expiry. */
static void arm_tick(struct worker *w)
{
	struct io_uring_sqe *sqe = ring_get_sqe(&w->ring);
	uint64_t t = tick_ms(w);

	if (!sqe)
		return; /* the loop notices and retries: see worker_run */
	w->tick_ts.tv_sec = t / 1000;
	w->tick_ts.tv_nsec = (t % 1000) * 1000000;
	io_uring_prep_timeout(sqe, &w->tick_ts, 0, 0);
	io_uring_sqe_set_data64(sqe, op_encode(OP_TIMER, 0));
	w->tick_armed = true;
}

/* For tests of a loop's fatal error (tests/integration/test_workers.py):
 * RINGECHO_TEST_BREAK_LOOP=K breaks loop K's ring at its first tick, so
 * that its next io_uring_enter fails as a broken ring would. */
static void maybe_break_ring(struct worker *w)
{
	const char *k = getenv("RINGECHO_TEST_BREAK_LOOP");

	if (!k || strtoul(k, NULL, 10) != w->index)
		return;
	log_warn("loop %u: breaking its ring, as RINGECHO_TEST_BREAK_LOOP asks",
		 w->index);
	if (w->ring.fd_registered)
		io_uring_unregister_ring_fd(&w->ring.uring);
	w->ring.fd_registered = false;
	close(w->ring.uring.ring_fd);
}

static void on_tick(struct worker *w)
{
	if (!w->ticked) {
		w->ticked = true;
		maybe_break_ring(w);
	}
	w->tick_armed = false;
	atomic_store(&w->heartbeat_ms, w->now_ms);
	worker_read_mail(w); /* in case a doorbell could not be rung */
	/* Not while an upgrade stops the loop: once its connections are in
	 * the state, closing one would leave the new program an fd number
	 * that is closed, or by then another client's. */
	if (!w->quiescing)
		timeouts_tick(w);
	echo_tick(w);
	udp_tick(w);
	accept_maybe_resume(w);
	shutdown_tick(w);
	upgrade_tick(w);
	upgrade_progress(w);
	if (w->index == 0)
		lifecycle_tick(w->srv, w);
}

static void dispatch(void *ctx, const struct io_uring_cqe *cqe)
{
	struct worker *w = ctx;

	switch (op_decode_type(cqe->user_data)) {
	case OP_RECV:
		echo_on_recv(w, cqe);
		break;
	case OP_SEND:
		echo_on_send(w, cqe);
		break;
	case OP_ACCEPT:
		accept_on_cqe(w, cqe);
		break;
	case OP_SIGNAL:
		lifecycle_on_signal(w->srv, w, cqe);
		break;
	case OP_TIMER:
		/* After the rest of the batch: a receive completed in it
		 * makes its connection active before the idle clock looks. */
		w->tick_due = true;
		break;
	case OP_UDP_RECV:
		udp_on_recv(w, cqe);
		break;
	case OP_UDP_SEND:
		udp_on_send(w, cqe);
		break;
	case OP_MAIL:
		worker_read_mail(w);
		if (w->index == 0)
			lifecycle_on_doorbell(w->srv, w);
		break;
	case OP_CANCEL:
		echo_on_cancel(w, cqe);
		break;
	case OP_MAIL_SENT:
	case OP_NONE:
	case OP_TYPE_MAX:
		break;
	}
}

/* How many completions to wait for. A send usually completes during the
 * enter that submits it, so those come at no wait. After a batch of several
 * receives, expect as many again: a busy loop then takes one enter per batch,
 * and batch_wait_us bounds what a batch may cost a completion that came
 * early. After a lone receive, wait for one completion and no timer: a single
 * client is answered at once, with no timer armed for it. */
static unsigned batch_target(const struct worker *w)
{
	unsigned recvs = w->recvs_last < w->nconns ? w->recvs_last : w->nconns;

	if (recvs < BATCH_MIN_RECVS)
		return 1;
	return w->sends_queued + recvs;
}

/* Loop 0 carries the signals and the shutdown's end: it goes on until every
 * other loop has finished too. */
static bool loop_done(const struct worker *w)
{
	return w->state == WORKER_DONE &&
	       (w->index != 0 || server_others_finished(w->srv));
}

int worker_run(struct worker *w)
{
	if (!w->tick_armed)
		arm_tick(w);
	while (!loop_done(w)) {
		int ret = ring_wait(&w->ring, batch_target(w), w->cfg.batch_wait_us);

		if (ret < 0) {
			log_errno(LOG_ERR, -ret, "loop %u: io_uring_enter", w->index);
			w->broken = true;
			return 1;
		}
		w->sends_queued = 0;
		w->now_ms = worker_clock_ms();
		w->recycled_at_batch = w->bufs.recycled;
		ring_dispatch(&w->ring, dispatch, w);
		if (w->tick_due) {
			w->tick_due = false;
			on_tick(w);
		}
		echo_start_sends(w);
		w->recvs_last = w->recvs_batch;
		w->recvs_batch = 0;
		echo_retry_starved(w);
		udp_after_batch(w);
		accept_maybe_resume(w);
		shutdown_after_batch(w);
		upgrade_progress(w);
		if (w->index == 0)
			upgrade_check(w->srv, w);
		if (!w->tick_armed && !loop_done(w))
			arm_tick(w);
	}
	return 0;
}

void worker_each_conn(struct worker *w, void (*fn)(struct worker *, struct conn *))
{
	/* Freeing a connection shifts others within the table, so walk a
	 * snapshot of the ids instead of the table itself. */
	size_t n = 0, cap = w->conns.count;
	uint64_t *ids = malloc((cap ? cap : 1) * sizeof(*ids));

	if (!ids) {
		log_error("out of memory walking connections");
		return;
	}
	conn_table_for_each(&w->conns, slot)
	{
		ids[n++] = slot->id;
	}
	for (size_t i = 0; i < n; i++) {
		struct conn *c = conn_table_lookup(&w->conns, ids[i]);
		if (c)
			fn(w, c);
	}
	free(ids);
}

void worker_flush(struct worker *w)
{
	if (worker_ring_usable(w) && io_uring_sq_ready(&w->ring.uring))
		io_uring_submit(&w->ring.uring);
}

static int setup_ring(struct worker *w, int wq_fd)
{
	const char *why = NULL;
	char desc[128];
	int ret;

	ret =
	    ring_init(&w->ring, w->cfg.ring_entries, w->cfg.sqpoll_idle_ms, wq_fd, &why);
	if (ret < 0) {
		log_errno(LOG_ERR, -ret, "%s", why);
		return EXIT_UNAVAILABLE;
	}
	if (ring_probe(&w->ring, &why) < 0) {
		log_error("io_uring is too old on this kernel: it lacks %s", why);
		return EXIT_UNAVAILABLE;
	}
	ret = bufring_init(&w->bufs, &w->ring.uring, BUFRING_GROUP_ID,
			   w->cfg.buffer_count, w->cfg.buffer_size);
	if (ret == -EINVAL) {
		log_error(
		    "io_uring is too old on this kernel: it lacks provided buffer rings "
		    "(Linux 5.19)");
		return EXIT_UNAVAILABLE;
	} else if (ret < 0) {
		log_errno(LOG_ERR, -ret, "cannot set up %u receive buffers of %u bytes",
			  w->cfg.buffer_count, w->cfg.buffer_size);
		return 1;
	}
	if (w->index == 0)
		log_info("io_uring: %s", ring_describe(&w->ring, desc, sizeof(desc)));
	return 0;
}

int worker_init(struct worker *w, struct server *srv, unsigned index,
		const struct config *cfg, int wq_fd)
{
	int ret;

	w->srv = srv;
	w->index = index;
	w->cfg = *cfg;
	w->ring.uring.ring_fd = -1;
	w->next_conn_id = index + 1;
	w->recv_limit = true; /* until the kernel says it has none */
	w->now_ms = worker_clock_ms();
	accept_init(&w->acc);
	if (w->acc.held_for_test && index == 0)
		log_warn("RINGECHO_TEST_HOLD_ACCEPTS is set: no client will be accepted "
			 "(a test hook)");
	udp_init(&w->udp);
	list_init(&w->idle_lru);
	list_init(&w->starved);
	list_init(&w->due);
	list_init(&w->sending);
	list_init(&w->lingering);
	if (conn_table_init(&w->conns, CONN_TABLE_START) < 0) {
		log_error("out of memory");
		return 1;
	}
	ret = setup_ring(w, wq_fd);
	if (ret == 0)
		mailbox_open(&w->mail, w->ring.uring.ring_fd);
	return ret;
}

void worker_deinit(struct worker *w)
{
	/* Normally empty by now; after a failed start-up, or if the loop
	 * stopped on an error, free what is left. */
	worker_each_conn(w, conn_destroy);
	accept_remove_all(w);
	udp_deinit(w);
	bufring_deinit(&w->bufs, &w->ring.uring);
	ring_deinit(&w->ring);
	conn_table_deinit(&w->conns);
}

void worker_apply_mail(struct worker *w, const struct mail *m)
{
	switch (m->type) {
	case MAIL_ADD_LISTENER:
		accept_add_listener(w, m->id, m->fd, m->name);
		break;
	case MAIL_REMOVE_LISTENER:
		accept_remove_listener(w, m->id);
		break;
	case MAIL_CONFIG:
		w->cfg = *m->cfg;
		break;
	case MAIL_DRAIN:
		shutdown_drain(w);
		break;
	case MAIL_CUT:
		shutdown_cut(w);
		break;
	case MAIL_ADOPT:
		if (w->state < WORKER_CUTTING) {
			echo_serve(w, m->fd, &m->peer, &m->addr);
		} else { /* as the accepting loop would have done */
			admission_release(&w->srv->admission, &m->peer);
			close(m->fd);
		}
		break;
	case MAIL_QUIESCE:
		upgrade_quiesce(w, m->deadline_ms);
		break;
	case MAIL_RESUME:
		upgrade_resume(w);
		break;
	case MAIL_RESTORE:
		restore_adopt(w, m->conns, m->nconns_restore);
		break;
	case MAIL_STATS:
		*m->stats = w->stats;
		*m->nconns = w->nconns;
		*m->overflows = w->ring.cq_overflows;
		break;
	}
	if (m->wait)
		mail_wait_done(m->wait);
}

void worker_read_mail(struct worker *w)
{
	struct mail m;

	while (mailbox_take(&w->mail, &m))
		worker_apply_mail(w, &m);
}

/* Accept on every listener the server has now (TCP only: UDP is loop 0's). */
static void take_listeners(struct worker *w)
{
	const struct listeners *ls = &w->srv->listeners;

	for (unsigned i = 0; i < ls->n; i++)
		if (!ls->v[i].dgram)
			accept_add_listener(w, ls->v[i].id, ls->v[i].fd, ls->v[i].name);
}

/* The loop has ended: answer what mail is left (nothing more is done with
 * it), tell loop 0 while our ring still works, then free everything. */
static void end_thread(struct worker *w)
{
	struct server *s = w->srv;
	struct mail m;

	mailbox_close(&w->mail);
	while (mailbox_take(&w->mail, &m)) {
		if (m.type == MAIL_STATS)
			worker_apply_mail(w, &m);
		else if (m.wait)
			mail_wait_done(m.wait);
	}
	atomic_store(&w->finished, true);
	if (worker_ring_usable(w))
		mailbox_ring(&w->ring, s->workers[0].ring.uring.ring_fd);
	worker_flush(w);
	worker_deinit(w);
}

static void *worker_thread(void *arg)
{
	struct worker *w = arg;
	struct server *s = w->srv;

	w->start_status =
	    worker_init(w, s, w->index, &s->cfg, s->workers[0].ring.uring.ring_fd);
	if (w->start_status == 0 && !s->accepts_later)
		take_listeners(w);
	worker_flush(w);
	mail_wait_done(w->started);
	if (w->start_status == 0 && worker_run(w) != 0)
		atomic_store(&w->failed, true);
	end_thread(w);
	return NULL;
}

int worker_start_thread(struct worker *w, struct mail_wait *started)
{
	int err;

	w->started = started;
	err = pthread_create(&w->thread, NULL, worker_thread, w);
	if (err)
		return -err;
	w->thread_started = true;
	return 0;
}
