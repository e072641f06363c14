/* SPDX-License-Identifier: MIT */
#include "server.h"
#include "accept.h"
#include "echo.h"
#include "lifecycle.h"
#include "reload.h"
#include "conn.h"
#include "op.h"

#include <errno.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define EXIT_UNAVAILABLE 69 /* sysexits.h EX_UNAVAILABLE */

uint64_t server_clock_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Every connection is an fd: take the whole hard limit, and say when even
 * that cannot hold max_connections. */
static void raise_fd_limit(const struct config *cfg)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return;
	if (rl.rlim_cur < rl.rlim_max) {
		rlim_t old = rl.rlim_cur;
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
			log_info("raised open-file limit from %llu to %llu",
				 (unsigned long long)old,
				 (unsigned long long)rl.rlim_cur);
	}
	if (rl.rlim_cur < (rlim_t)cfg->max_connections + FD_RESERVE)
		log_warn(
		    "max_connections is %u but the open-file limit is %llu; accepts will "
		    "pause when fds run out",
		    cfg->max_connections, (unsigned long long)rl.rlim_cur);
}

void server_format_stats(const struct server *s, char *buf, size_t len)
{
	const struct stats *st = &s->stats;

	snprintf(
	    buf, len,
	    "connections=%u total=%llu bytes=%llu messages=%llu refused_max=%llu "
	    "refused_per_ip=%llu idle_closed=%llu bufring_empty=%llu "
	    "starved_retries=%llu "
	    "short_sends=%llu "
	    "chained_sends=%llu accept_paused=%llu send_timeouts=%llu cq_overflow=%llu",
	    s->nconns, (unsigned long long)st->conns_total, (unsigned long long)st->bytes,
	    (unsigned long long)st->messages, (unsigned long long)st->refused_max,
	    (unsigned long long)st->refused_per_ip, (unsigned long long)st->idle_closed,
	    (unsigned long long)st->bufring_empty,
	    (unsigned long long)st->starved_retries, (unsigned long long)st->short_sends,
	    (unsigned long long)st->chained_sends, (unsigned long long)st->accept_paused,
	    (unsigned long long)st->send_timeouts,
	    (unsigned long long)s->ring.cq_overflows);
}

void server_format_status(const struct server *s, char *buf, size_t len)
{
	snprintf(buf, len,
		 "%u connection%s, %llu message%s, %llu byte%s echoed, %llu refused%s%s",
		 s->nconns, plural_s(s->nconns), (unsigned long long)s->stats.messages,
		 plural_s(s->stats.messages), (unsigned long long)s->stats.bytes,
		 plural_s(s->stats.bytes),
		 (unsigned long long)(s->stats.refused_max + s->stats.refused_per_ip),
		 s->reload_problem[0] ? "; last reload incomplete: " : "",
		 s->reload_problem);
}

static uint64_t tick_ms(const struct server *s)
{
	uint64_t t = TICK_MAX_MS;

	if (s->cfg.idle_timeout_ms && s->cfg.idle_timeout_ms / 4 < t)
		t = s->cfg.idle_timeout_ms / 4;
	if (s->cfg.send_timeout_ms && s->cfg.send_timeout_ms / 4 < t)
		t = s->cfg.send_timeout_ms / 4;
	if (s->notify.watchdog_ms && s->notify.watchdog_ms / 2 < t)
		t = s->notify.watchdog_ms / 2;
	if (s->state != SERVER_RUNNING && TICK_SHUTDOWN_MS < t)
		t = TICK_SHUTDOWN_MS;
	return t < TICK_MIN_MS ? TICK_MIN_MS : t;
}

/* The one timer on the ring, re-armed after each expiry. */
static void arm_tick(struct server *s)
{
	struct io_uring_sqe *sqe = ring_get_sqe(&s->ring);
	uint64_t t = tick_ms(s);

	if (!sqe)
		return; /* the loop notices and retries: see server_run */
	s->tick_ts.tv_sec = t / 1000;
	s->tick_ts.tv_nsec = (t % 1000) * 1000000;
	io_uring_prep_timeout(sqe, &s->tick_ts, 0, 0);
	io_uring_sqe_set_data64(sqe, op_encode(OP_TIMER, 0));
	s->tick_armed = true;
}

static void on_tick(struct server *s)
{
	char status[256];

	s->tick_armed = false;
	echo_tick(s);
	accept_maybe_resume(s);
	lifecycle_tick(s);
	notify_watchdog(&s->notify, s->now_ms);
	if (notify_status_due(&s->notify, s->now_ms)) {
		server_format_status(s, status, sizeof(status));
		notify_status(&s->notify, s->now_ms, status);
	}
}

static void dispatch(void *ctx, const struct io_uring_cqe *cqe)
{
	struct server *s = ctx;

	switch (op_decode_type(cqe->user_data)) {
	case OP_RECV:
		echo_on_recv(s, cqe);
		break;
	case OP_SEND:
		echo_on_send(s, cqe);
		break;
	case OP_ACCEPT:
		accept_on_cqe(s, cqe);
		break;
	case OP_SIGNAL:
		lifecycle_on_signal(s, cqe);
		break;
	case OP_TIMER:
		on_tick(s);
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
static unsigned batch_target(const struct server *s)
{
	unsigned recvs = s->recvs_last < s->nconns ? s->recvs_last : s->nconns;

	if (recvs < BATCH_MIN_RECVS)
		return 1;
	return s->sends_queued + recvs;
}

int server_run(struct server *s)
{
	while (s->state != SERVER_DONE) {
		int ret = ring_wait(&s->ring, batch_target(s), s->cfg.batch_wait_us);

		if (ret < 0) {
			log_errno(LOG_ERR, -ret, "io_uring_enter");
			return 1;
		}
		s->sends_queued = 0;
		s->now_ms = server_clock_ms();
		s->recycled_at_batch = s->bufs.recycled;
		ring_dispatch(&s->ring, dispatch, s);
		echo_start_sends(s);
		s->recvs_last = s->recvs_batch;
		s->recvs_batch = 0;
		echo_retry_starved(s);
		accept_maybe_resume(s);
		lifecycle_after_batch(s);
		if (!s->tick_armed && s->state != SERVER_DONE)
			arm_tick(s);
	}
	lifecycle_finish(s);
	return 0;
}

void server_each_conn(struct server *s, void (*fn)(struct server *, struct conn *))
{
	/* Freeing a connection shifts others within the table, so walk a
	 * snapshot of the ids instead of the table itself. */
	size_t n = 0, cap = s->conns.count;
	uint64_t *ids = malloc((cap ? cap : 1) * sizeof(*ids));

	if (!ids) {
		log_error("out of memory walking connections");
		return;
	}
	conn_table_for_each(&s->conns, slot)
	{
		ids[n++] = slot->id;
	}
	for (size_t i = 0; i < n; i++) {
		struct conn *c = conn_table_lookup(&s->conns, ids[i]);
		if (c)
			fn(s, c);
	}
	free(ids);
}

static int setup_ring(struct server *s)
{
	const char *why = NULL;
	char desc[128];
	int ret;

	ret = ring_init(&s->ring, s->cfg.ring_entries, s->cfg.sqpoll_idle_ms, &why);
	if (ret < 0) {
		log_errno(LOG_ERR, -ret, "%s", why);
		return EXIT_UNAVAILABLE;
	}
	if (ring_probe(&s->ring, &why) < 0) {
		log_error("io_uring is too old on this kernel: it lacks %s", why);
		return EXIT_UNAVAILABLE;
	}
	ret = bufring_init(&s->bufs, &s->ring.uring, s->cfg.buffer_count,
			   s->cfg.buffer_size);
	if (ret == -EINVAL) {
		log_error(
		    "io_uring is too old on this kernel: it lacks provided buffer rings "
		    "(Linux 5.19)");
		return EXIT_UNAVAILABLE;
	} else if (ret < 0) {
		log_errno(LOG_ERR, -ret, "cannot set up %u receive buffers of %u bytes",
			  s->cfg.buffer_count, s->cfg.buffer_size);
		return 1;
	}
	log_info("io_uring: %s", ring_describe(&s->ring, desc, sizeof(desc)));
	return 0;
}

static int setup_listeners(struct server *s)
{
	int n = listeners_from_systemd(&s->listeners, &s->cfg);

	if (n < 0)
		return 1;
	if (n > 0) {
		log_info("using %d socket%s from systemd", n, plural_s(n));
		reload_check_systemd_listen(s, &s->cfg);
	} else if (listeners_open_config(&s->listeners, &s->cfg) < 0) {
		return 1;
	}
	for (unsigned i = 0; i < s->listeners.n; i++)
		accept_arm(s, &s->listeners.v[i]);
	return 0;
}

int server_init(struct server *s, const struct config *cfg, const struct config_cli *cli)
{
	char status[128];
	int ret;

	memset(s, 0, sizeof(*s));
	s->cfg = *cfg;
	s->cli = *cli;
	s->sigfd = -1;
	s->ring.uring.ring_fd = -1;
	s->next_conn_id = 1;
	s->now_ms = server_clock_ms();
	accept_init(&s->acc);
	list_init(&s->idle_lru);
	list_init(&s->starved);
	list_init(&s->due);
	list_init(&s->sending);
	list_init(&s->lingering);
	listeners_init(&s->listeners);
	notify_init(&s->notify);
	raise_fd_limit(cfg);
	if (conn_table_init(&s->conns, 1024) < 0 || peer_table_init(&s->peers) < 0) {
		log_error("out of memory");
		return 1;
	}
	if (lifecycle_init(s) < 0) {
		log_errno(LOG_ERR, errno, "cannot set up signal handling");
		return 1;
	}
	ret = setup_ring(s);
	if (ret == 0)
		ret = setup_listeners(s);
	if (ret)
		return ret;
	lifecycle_arm(s);
	arm_tick(s);
	/* Accepts are in the kernel before anyone is told we are ready. */
	io_uring_submit(&s->ring.uring);
	server_format_status(s, status, sizeof(status));
	notify_ready(&s->notify, status);
	log_notice("ready: %u listener%s, %u buffers of %u bytes, max %u connection%s",
		   s->listeners.n, plural_s(s->listeners.n), s->cfg.buffer_count,
		   s->cfg.buffer_size, s->cfg.max_connections,
		   plural_s(s->cfg.max_connections));
	return 0;
}

void server_deinit(struct server *s)
{
	/* Normally empty by now; after a failed start-up, or if the loop
	 * stopped on an error, free what is left. */
	server_each_conn(s, conn_destroy);
	while (s->listeners.n) {
		struct listener *l = &s->listeners.v[s->listeners.n - 1];
		if (s->ring.uring.ring_fd > 0)
			accept_close_listener(s, l);
		else
			listeners_remove(&s->listeners, l);
	}
	bufring_deinit(&s->bufs, &s->ring.uring);
	ring_deinit(&s->ring);
	lifecycle_deinit(s);
	conn_table_deinit(&s->conns);
	peer_table_deinit(&s->peers);
}
