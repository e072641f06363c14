/* SPDX-License-Identifier: MIT */
/* The old program's half of a live upgrade (see upgrade.h). */
#include "upgrade.h"
#include "accept.h"
#include "conn.h"
#include "echo.h"
#include "lifecycle.h"
#include "listener.h"
#include "mailbox.h"
#include "op.h"
#include "reload.h"
#include "server.h"
#include "udp.h"
#include "upcheck.h"
#include "worker.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

void upgrade_init(struct upgrade *u, char **argv, const char *version)
{
	ssize_t n = readlink("/proc/self/exe", u->exe, sizeof(u->exe) - 1);

	u->exe[n > 0 ? n : 0] = '\0';
	u->argv = argv;
	u->version = version;
	if (getenv("RINGECHO_TEST_UPGRADE_STATE"))
		snprintf(u->test_hook, sizeof(u->test_hook), "%s",
			 getenv("RINGECHO_TEST_UPGRADE_STATE"));
}

/* The tests of what can go wrong (upgrade.h). */
static bool test_hook(const struct server *s, const char *what)
{
	return strcmp(s->upgrade.test_hook, what) == 0;
}

/* The upgrade failed and this program serves on: a reload asked for
 * meanwhile is done now. */
static void serve_on(struct server *s)
{
	s->upgrade.phase = UPGRADE_NONE;
	if (s->upgrade.reload_after) {
		s->upgrade.reload_after = false;
		reload_apply(s);
	}
}

void upgrade_begin(struct server *s, struct worker *w0)
{
	struct upgrade *u = &s->upgrade;
	char why[PATH_MAX + 128];

	if (u->phase != UPGRADE_NONE) {
		log_notice("SIGUSR2 received during an upgrade: ignored");
		return;
	}
	if (s->state != SERVER_RUNNING) {
		log_notice("SIGUSR2 received while shutting down: no upgrade");
		return;
	}
	u->started_ms = w0->now_ms;
	if (upcheck_start(&u->check, u->exe, u->argv, w0->now_ms, why, sizeof(why)) ==
	    UPCHECK_FAILED) {
		log_error("upgrade: %s; serving on", why);
		return;
	}
	u->phase = UPGRADE_CHECKING;
	log_info("upgrade: trying %s", u->exe);
}

/* The new program file passed: every loop stops, and hands over. */
static void hand_over(struct server *s, struct worker *w0)
{
	struct upgrade *u = &s->upgrade;
	struct mail m = {.type = MAIL_QUIESCE};
	char status[128];

	u->phase = UPGRADE_HANDING_OVER;
	atomic_store(&u->quiesce_acks, 0);
	u->quiesce_started_ms = worker_clock_ms();
	snprintf(status, sizeof(status), "Upgrading to ringechod %s", u->check.version);
	notify_reloading(&s->notify);
	notify_status(&s->notify, w0->now_ms, status);
	log_notice("upgrade: from ringechod %s to %s (%s, tried in %llu ms)", u->version,
		   u->check.version, u->exe,
		   (unsigned long long)(u->quiesce_started_ms - u->started_ms));
	if (u->check.config_status == 78)
		log_warn("upgrade: the configuration does not load in ringechod %s (see "
			 "above); "
			 "it will run with the settings in force now",
			 u->check.version);
	m.deadline_ms = u->quiesce_started_ms + s->cfg.upgrade_timeout_ms;
	server_tell_mail(s, &m);
}

void upgrade_on_child(struct server *s, struct worker *w0)
{
	char why[PATH_MAX + 128];

	if (s->upgrade.phase != UPGRADE_CHECKING)
		return;
	switch (upcheck_poll(&s->upgrade.check, w0->now_ms, why, sizeof(why))) {
	case UPCHECK_RUNNING:
		break;
	case UPCHECK_PASSED:
		hand_over(s, w0);
		break;
	case UPCHECK_FAILED:
		log_error("upgrade: %s; serving on", why);
		serve_on(s);
		break;
	}
}

bool upgrade_abandon(struct server *s)
{
	if (s->upgrade.phase != UPGRADE_CHECKING)
		return false;
	upcheck_abort(&s->upgrade.check);
	s->upgrade.phase = UPGRADE_NONE;
	log_notice("upgrade: given up, nothing was handed over");
	return true;
}

void upgrade_reload_after(struct server *s)
{
	s->upgrade.reload_after = true;
	log_notice("SIGHUP received during an upgrade: the new program reads the "
		   "configuration, and so does this one should the upgrade fail");
}

void upgrade_stop_after(struct server *s)
{
	s->upgrade.stop_after = true;
	log_notice("the new program will stop once it has taken over");
}

/* ---- each loop --------------------------------------------------------- */

static void stop_receiving(struct worker *w, struct conn *c)
{
	echo_stop(w, c, false);
}

static void stop_sending(struct worker *w, struct conn *c)
{
	echo_stop(w, c, true);
}

/* A send waiting for room in its socket (a client that does not read) will
 * not finish: cancel it now, and its bytes go with the state, rather than
 * hold every client up until the deadline. The others finish in a moment. */
static void cancel_blocked_sends(struct worker *w)
{
	struct pollfd *p = NULL;
	struct conn **cs = NULL;
	unsigned n = 0, cap = 0;

	conn_table_for_each(&w->conns, slot)
	{
		struct conn *c = slot->conn;
		if (!(c->flags & CONN_SEND_ARMED))
			continue;
		if (n == cap) {
			unsigned more = cap ? 2 * cap : 256;
			struct pollfd *np = realloc(p, more * sizeof(*p));
			struct conn **nc = np ? realloc(cs, more * sizeof(*cs)) : NULL;
			if (np)
				p = np;
			if (!nc) { /* no memory: the deadline cancels them */
				n = 0;
				break;
			}
			cs = nc;
			cap = more;
		}
		p[n] = (struct pollfd){.fd = c->fd, .events = POLLOUT};
		cs[n++] = c;
	}
	if (n && poll(p, n, 0) >= 0)
		for (unsigned i = 0; i < n; i++)
			if (!(p[i].revents & POLLOUT))
				echo_stop(w, cs[i], true);
	free(p);
	free(cs);
}

void upgrade_quiesce(struct worker *w, uint64_t deadline_ms)
{
	w->quiescing = true;
	w->sends_stopped = true; /* none new: what is queued goes with the state */
	w->sends_cut = false;
	w->quiesce_deadline_ms = deadline_ms;
	/* Accepting stops synchronously, so that no client is accepted once
	 * the connections are written; the listening sockets stay open, and
	 * new clients wait in their backlog for the new program. */
	for (unsigned i = 0; i < w->acc.n; i++)
		if (w->acc.v[i].armed)
			ring_cancel_sync(&w->ring, op_encode(OP_ACCEPT, w->acc.v[i].id));
	for (unsigned i = 0; i < w->udp.n; i++)
		if (w->udp.v[i].armed)
			ring_cancel_sync(&w->ring,
					 op_encode(OP_UDP_RECV, w->udp.v[i].id));
	/* One cancel each, found by its user_data in the kernel's hash: a
	 * single IORING_ASYNC_CANCEL_ALL by opcode rescans the table for each
	 * match, which took 840 ms for 10,000 receives here, against 50. */
	worker_each_conn(w, stop_receiving);
	cancel_blocked_sends(w);
	/* From here this loop hands no connection to another (accept.c). The
	 * last loop to get here wakes the others: see upgrade_progress(). */
	if (atomic_fetch_add(&w->srv->upgrade.quiesce_acks, 1) + 1 == w->srv->nworkers)
		for (unsigned i = 0; i < w->srv->nworkers; i++)
			if (i != w->index)
				mailbox_ring(&w->ring,
					     w->srv->workers[i].ring.uring.ring_fd);
	upgrade_progress(w);
}

/* Anything still in the kernel? */
static bool in_flight(const struct worker *w)
{
	if (w->udp.inflight)
		return true;
	for (unsigned i = 0; i < w->acc.n; i++)
		if (w->acc.v[i].armed)
			return true;
	for (unsigned i = 0; i < w->udp.n; i++)
		if (w->udp.v[i].armed)
			return true;
	conn_table_for_each(&w->conns, slot)
	{
		if (slot->conn->flags &
		    (CONN_RECV_ARMED | CONN_SEND_ARMED | CONN_CLOSING))
			return true;
	}
	return false;
}

/* One connection, its unsent echo and what it was doing; its socket stays
 * open across the exec. */
static void write_conn(struct worker *w, struct conn *c)
{
	struct upbody_conn b = {
	    .id = c->id,
	    .flags = (c->flags & CONN_READ_EOF ? UPC_READ_EOF : 0) |
		     (c->flags & CONN_NO_RECV ? UPC_CUT : 0) |
		     (c->flags & CONN_WR_SHUT ? UPC_WR_SHUT : 0),
	    .cut = c->cut,
	    .peer_valid = c->peer.valid,
	    .idle_ms = w->now_ms - c->last_active_ms,
	    .recv_idle_ms = w->now_ms - c->last_recv_ms,
	};
	uint32_t owed = (uint32_t)conn_pending(c);
	char *bytes;

	memcpy(b.peer, c->peer.addr, sizeof(b.peer));
	bytes = upstate_add_open(&w->handover, UPREC_CONN, c->fd, owed, &b, sizeof(b));
	if (!bytes)
		return; /* handover.failed: the upgrade is given up */
	conn_unsent(w, c, bytes);
	upstate_add_close(&w->handover);
	/* Its socket is not close-on-exec (accept.c): the exec carries it. */
}

/* Room for every connection's record at once: no copy as it grows. */
static void reserve_handover(struct worker *w)
{
	size_t need = 0;

	conn_table_for_each(&w->conns, slot)
	{
		need += sizeof(struct uprec_envelope) + sizeof(struct upbody_conn) +
			conn_pending(slot->conn);
	}
	upstate_reserve(&w->handover, need);
}

void upgrade_tick(struct worker *w)
{
	/* A receive whose cancel failed (echo_on_cancel) is asked again. */
	if (w->quiescing && !atomic_load(&w->quiesced))
		worker_each_conn(w, stop_receiving);
}

void upgrade_progress(struct worker *w)
{
	if (!w->quiescing || atomic_load(&w->quiesced))
		return;
	/* A connection another loop accepted before it stopped may be on its
	 * way here: once every loop has stopped, all such are in the mailbox. */
	if (atomic_load(&w->srv->upgrade.quiesce_acks) < w->srv->nworkers)
		return;
	worker_read_mail(w);
	if (!w->sends_cut && w->now_ms >= w->quiesce_deadline_ms) {
		/* upgrade_timeout_ms: what is still unsent goes with the state. */
		w->sends_cut = true;
		worker_each_conn(w, stop_sending);
	}
	if (in_flight(w) || (test_hook(w->srv, "hold") && !w->sends_cut))
		return;
	reserve_handover(w);
	worker_each_conn(w, write_conn);
	atomic_store(&w->quiesced, true);
	if (w->index != 0)
		mailbox_ring(&w->ring, w->srv->workers[0].ring.uring.ring_fd);
}

void upgrade_resume(struct worker *w)
{
	w->quiescing = w->sends_stopped = w->sends_cut = false;
	atomic_store(&w->quiesced, false);
	upstate_free(&w->handover);
	worker_each_conn(w, echo_settle);
	accept_maybe_resume(w);
	for (unsigned i = 0; i < w->acc.n; i++)
		accept_rearm(w, &w->acc.v[i]);
	udp_tick(w);
}

/* ---- loop 0: the state and the exec ------------------------------------- */

static void write_program(struct server *s, struct upstate_buf *b)
{
	struct upbody_program p = {
	    .started_ms = s->upgrade.quiesce_started_ms,
	    .exec_ms = worker_clock_ms(),
	    .upgrades = s->upgrade.count + 1,
	    .stop_after = s->upgrade.stop_after,
	};
	char text[CONFIG_DUMP_LEN];
	struct stats st;
	unsigned n;

	snprintf(p.version, sizeof(p.version), "%s", s->upgrade.version);
	upstate_add(b, UPREC_PROGRAM, -1, NULL, 0, &p, sizeof(p));
	upstate_add(b, UPREC_CONFIG, -1, NULL, 0, text,
		    (uint32_t)config_dump(&s->cfg, text, sizeof(text)));
	server_totals(s, &st, &n);
	upstate_add(b, UPREC_COUNTERS, -1, NULL, 0, &st, sizeof(st));
}

static void write_listeners(struct server *s, struct upstate_buf *b)
{
	for (unsigned i = 0; i < s->listeners.n; i++) {
		const struct listener *l = &s->listeners.v[i];
		struct upbody_listener body = {
		    .id = l->id, .dgram = l->dgram, .inherited = l->inherited};

		snprintf(body.want, sizeof(body.want), "%s", l->want.text);
		upstate_add(b, UPREC_LISTENER, l->fd, NULL, 0, &body, sizeof(body));
		fcntl(l->fd, F_SETFD, 0);
	}
}

static uint32_t test_spoil_records(struct server *s, struct upstate_buf *parts,
				   unsigned n)
{
	if (test_hook(s, "version"))
		return UPSTATE_VERSION + 1000;
	for (unsigned i = 0; i < n && test_hook(s, "damaged"); i++) {
		struct upstate_buf *b = &parts[i];
		for (size_t at = 0; at < b->len;) {
			struct uprec_envelope e;
			memcpy(&e, b->data + at, sizeof(e));
			at += sizeof(e) + e.bytes_len;
			if (e.body_len)
				b->data[at] ^= 0x5a;
			at += e.body_len;
		}
	}
	return UPSTATE_VERSION;
}

static int test_spoil_header(struct server *s, int fd)
{
	if (test_hook(s, "unreadable") && pwrite(fd, "X", 1, 0) != 1)
		return -errno;
	return 0;
}

/* The memfd's fd, or -errno (logged). */
static int write_state(struct server *s, size_t *size)
{
	struct upstate_buf parts[1 + WORKERS_MAX] = {{0}};
	int fd = memfd_create("ringechod-upgrade", 0), ret;

	if (fd < 0) {
		ret = -errno;
		log_errno(LOG_ERR, errno, "upgrade: memfd_create");
		return ret;
	}
	/* The program and its listeners, then each loop's connections as the
	 * loop wrote them. */
	write_program(s, &parts[0]);
	write_listeners(s, &parts[0]);
	for (unsigned i = 0; i < s->nworkers; i++)
		parts[1 + i] = s->workers[i].handover;
	ret = upstate_write(fd, parts, 1 + s->nworkers,
			    test_spoil_records(s, parts, 1 + s->nworkers));
	if (ret == 0)
		ret = test_spoil_header(s, fd);
	upstate_free(&parts[0]);
	for (unsigned i = 0; i < 1 + s->nworkers; i++)
		*size += parts[i].len;
	if (ret < 0) {
		log_errno(LOG_ERR, -ret, "upgrade: writing the state");
		close(fd);
		return ret;
	}
	return fd;
}

static void give_up(struct server *s, struct worker *w0)
{
	char status[256];
	struct mail m = {.type = MAIL_RESUME};

	for (unsigned i = 0; i < s->listeners.n; i++)
		fcntl(s->listeners.v[i].fd, F_SETFD, FD_CLOEXEC);
	unsetenv(UPGRADE_ENV);
	s->upgrade.phase = UPGRADE_NONE;
	server_tell_mail(s, &m);
	server_format_status(s, status, sizeof(status));
	notify_ready(&s->notify, status);
	if (s->upgrade.stop_after)
		lifecycle_stop(s, w0);
	else
		serve_on(s);
}

void upgrade_check(struct server *s, struct worker *w0)
{
	char env[32];
	uint64_t t;
	size_t size = 0;
	int fd;

	if (s->upgrade.phase != UPGRADE_HANDING_OVER)
		return;
	for (unsigned i = 0; i < s->nworkers; i++)
		if (!atomic_load(&s->workers[i].quiesced))
			return;
	t = worker_clock_ms();
	fd = write_state(s, &size);
	if (fd >= 0) {
		log_info("upgrade: every loop stopped in %llu ms; %zu bytes of state "
			 "written in "
			 "%llu ms",
			 (unsigned long long)(t - s->upgrade.quiesce_started_ms), size,
			 (unsigned long long)(worker_clock_ms() - t));
		snprintf(env, sizeof(env), "%d", fd);
		setenv(UPGRADE_ENV, env, 1);
		if (test_hook(s, "noexec"))
			errno = ENOEXEC;
		else
			execve(s->upgrade.exe, s->upgrade.argv, environ);
		log_error("upgrade: cannot execute %s: %s; serving on", s->upgrade.exe,
			  strerror(errno));
		close(fd);
	} else {
		log_error("upgrade: no state to hand over; serving on");
	}
	give_up(s, w0);
}
