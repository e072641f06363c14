/* SPDX-License-Identifier: MIT */
#include "worker.h"
#include "accept.h"
#include "conn.h"
#include "echo.h"
#include "lifecycle.h"
#include "op.h"
#include "server.h"
#include "shutdown.h"

#include <errno.h>
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

static void on_tick(struct worker *w)
{
	w->tick_armed = false;
	echo_tick(w);
	udp_tick(w);
	accept_maybe_resume(w);
	shutdown_tick(w);
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
		on_tick(w);
		break;
	case OP_UDP_RECV:
		udp_on_recv(w, cqe);
		break;
	case OP_UDP_SEND:
		udp_on_send(w, cqe);
		break;
	case OP_CANCEL:
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

int worker_run(struct worker *w)
{
	if (!w->tick_armed)
		arm_tick(w);
	while (w->state != WORKER_DONE) {
		int ret = ring_wait(&w->ring, batch_target(w), w->cfg.batch_wait_us);

		if (ret < 0) {
			log_errno(LOG_ERR, -ret, "io_uring_enter");
			return 1;
		}
		w->sends_queued = 0;
		w->now_ms = worker_clock_ms();
		w->recycled_at_batch = w->bufs.recycled;
		ring_dispatch(&w->ring, dispatch, w);
		echo_start_sends(w);
		w->recvs_last = w->recvs_batch;
		w->recvs_batch = 0;
		echo_retry_starved(w);
		udp_after_batch(w);
		accept_maybe_resume(w);
		shutdown_after_batch(w);
		if (!w->tick_armed && w->state != WORKER_DONE)
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
	if (io_uring_sq_ready(&w->ring.uring))
		io_uring_submit(&w->ring.uring);
}

static int setup_ring(struct worker *w)
{
	const char *why = NULL;
	char desc[128];
	int ret;

	ret = ring_init(&w->ring, w->cfg.ring_entries, w->cfg.sqpoll_idle_ms, &why);
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
		const struct config *cfg)
{
	memset(w, 0, sizeof(*w));
	w->srv = srv;
	w->index = index;
	w->cfg = *cfg;
	w->ring.uring.ring_fd = -1;
	w->next_conn_id = 1;
	w->now_ms = worker_clock_ms();
	accept_init(&w->acc);
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
	return setup_ring(w);
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
