/* SPDX-License-Identifier: MIT */
/* The new program's half of a live upgrade (see upgrade.h). */
#include "upgrade.h"
#include "conn.h"
#include "echo.h"
#include "listener.h"
#include "mailbox.h"
#include "reload.h"
#include "server.h"
#include "worker.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static bool grow(struct uprec **v, unsigned *cap, unsigned n)
{
	struct uprec *more;

	if (n < *cap)
		return true;
	more = realloc(*v, (*cap ? *cap * 2 : 64) * sizeof(**v));
	if (!more)
		return false;
	*v = more;
	*cap = *cap ? *cap * 2 : 64;
	return true;
}

/* Take fd, which the old program left open across the exec: each at most
 * once. A record's fd is taken on its word (its envelope's checksum held);
 * a stray is checked first: a socket, open, not close-on-exec. */
static bool take_fd(struct upgrade_state *st, int fd, bool check)
{
	int flags, type;
	socklen_t len = sizeof(type);

	if (fd <= STDERR_FILENO || fd >= UPGRADE_FDS_MAX)
		return false;
	if ((unsigned)fd / 8 >= st->taken_len) {
		size_t len8 = ((unsigned)fd / 8 + 1) * 2;
		uint8_t *more = realloc(st->taken, len8);
		if (!more)
			return false;
		memset(more + st->taken_len, 0, len8 - st->taken_len);
		st->taken = more;
		st->taken_len = len8;
	}
	if (st->taken[fd / 8] & (1u << (fd % 8)))
		return false;
	if (check && ((flags = fcntl(fd, F_GETFD)) < 0 || (flags & FD_CLOEXEC) ||
		      getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0))
		return false;
	st->taken[fd / 8] |= (uint8_t)(1u << (fd % 8));
	return true;
}

/* A socket taken: keep its record. */
static void add_socket(struct upgrade_state *st, const struct uprec *r)
{
	bool listener = r->kind == UPREC_LISTENER;

	if (listener ? grow(&st->listeners, &st->cap_listeners, st->nlisteners)
		     : grow(&st->conns, &st->cap_conns, st->nconns)) {
		if (listener)
			st->listeners[st->nlisteners++] = *r;
		else
			st->conns[st->nconns++] = *r;
	} else {
		close(r->fd); /* out of memory: the client gets an EOF */
	}
}

static void collect(void *ctx, const struct uprec *r)
{
	struct upgrade_state *st = ctx;

	if (r->kind == UPREC_LISTENER || r->kind == UPREC_CONN) {
		if (take_fd(st, r->fd, false))
			add_socket(st, r);
		else
			st->bad_fds++;
	} else if (r->kind == UPREC_PROGRAM && r->body &&
		   r->body_len >= sizeof(struct upbody_program)) {
		st->program = *r;
	} else if (r->kind == UPREC_CONFIG && r->body) {
		st->config = *r;
	} else if (r->kind == UPREC_COUNTERS && r->body) {
		st->counters = *r;
	}
}

/* Sockets the state does not name (it could not be read, or a record's
 * envelope was damaged) are still ours: find them, so that none is left
 * open and unserved. Only when the state was not read in full, as a
 * healthy one names every socket. */
static void find_strays(struct upgrade_state *st)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;

	while (d && (e = readdir(d))) {
		int fd = atoi(e->d_name), type = 0, listening = 0;
		socklen_t len = sizeof(int);
		struct uprec r = {.fd = fd};

		if (fd == dirfd(d) || !take_fd(st, fd, true))
			continue;
		getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len);
		len = sizeof(int);
		getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len);
		r.kind = listening || type == SOCK_DGRAM ? UPREC_LISTENER : UPREC_CONN;
		add_socket(st, &r);
		st->strays++;
	}
	if (d)
		closedir(d);
}

/* The whole memfd, mapped: nothing copied. NULL when it cannot be. */
static char *map_state(int fd, size_t *len)
{
	struct stat sb;
	void *p;

	if (fstat(fd, &sb) < 0 || sb.st_size <= 0)
		return NULL;
	p = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	if (p == MAP_FAILED)
		return NULL;
	*len = (size_t)sb.st_size;
	return p;
}

int restore_take(struct upgrade_state *st)
{
	const char *env = getenv(UPGRADE_ENV);
	int fd;

	memset(st, 0, sizeof(*st));
	if (!env)
		return 0;
	fd = atoi(env);
	unsetenv(UPGRADE_ENV);
	st->data = map_state(fd, &st->len);
	close(fd);
	if (!st->data) {
		st->verdict = UPSTATE_UNREADABLE;
		st->why = "the memfd cannot be read";
		find_strays(st);
		return -1;
	}
	st->taken_ms = worker_clock_ms();
	/* The records point into data, which stays until restore_free(). */
	st->verdict = upstate_read(st->data, st->len, collect, st, &st->why);
	if (st->verdict != UPSTATE_OK || st->bad_fds)
		find_strays(st);
	return st->verdict == UPSTATE_UNREADABLE ? -1 : 1;
}

int restore_config(const struct upgrade_state *st, struct config *cfg)
{
	if (!st->config.body)
		return -EINVAL;
	return config_undump(cfg, st->config.body, st->config.body_len);
}

void restore_free(struct upgrade_state *st)
{
	free(st->listeners);
	free(st->conns);
	free(st->taken);
	if (st->data)
		munmap(st->data, st->len);
	memset(st, 0, sizeof(*st));
}

/* ---- listeners ---------------------------------------------------------- */

/* A listener whose record says nothing but its socket: the configured
 * address it is bound to (port 0 matching any port), so that the config's
 * addresses are kept and not bound again; else its address as bound. */
static void want_from_config(struct listener *l, const struct config *cfg)
{
	const struct addr_list *list = l->dgram ? &cfg->listen_udp : &cfg->listen;

	for (unsigned i = 0; i < list->n; i++) {
		struct sockaddr_storage ss = list->v[i].ss;
		struct sockaddr_in *in = (struct sockaddr_in *)&ss;
		const struct sockaddr_in *bound = (const struct sockaddr_in *)&l->bound;

		/* sin_port and sin6_port lie at the same offset */
		if (in->sin_port == 0)
			in->sin_port = bound->sin_port;
		if (memcmp(&ss, &l->bound, list->v[i].len) == 0) {
			l->want = list->v[i];
			return;
		}
	}
	config_parse_addr(l->name, &l->want);
}

/* r's body as the struct it is (bodies lie unaligned, after the bytes):
 * out, or NULL when there is none, or it is short. */
static void *body_as(const struct uprec *r, void *out, size_t len)
{
	if (!r->body || r->body_len < len)
		return NULL;
	return memcpy(out, r->body, len);
}

/* Take a socket the old program listened on; without a readable body, ask
 * the socket what it is. */
static void take_listener(struct server *s, const struct uprec *r)
{
	struct upbody_listener body;
	const struct upbody_listener *b = body_as(r, &body, sizeof(body));
	struct listen_addr want = {0};
	int type = 0;
	socklen_t len = sizeof(type);
	struct listener *l;

	if (b && b->want[0] && memchr(b->want, '\0', sizeof(b->want)))
		config_parse_addr(b->want, &want);
	if (!b && getsockopt(r->fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0) {
		log_errno(LOG_WARNING, errno, "upgrade: fd %d is no socket", r->fd);
		return;
	}
	l = listeners_adopt(&s->listeners, r->fd, b ? b->dgram : type == SOCK_DGRAM,
			    b && b->inherited, &want);
	if (!l) {
		close(r->fd);
		return;
	}
	if (!want.text[0] && !l->inherited)
		want_from_config(l, &s->cfg);
	fcntl(r->fd, F_SETFD, FD_CLOEXEC); /* as every listener (listener.c) */
}

int restore_listeners(struct server *s, struct upgrade_state *st)
{
	char problem[RELOAD_PROBLEM_LEN] = "";

	for (unsigned i = 0; i < st->nlisteners; i++)
		take_listener(s, &st->listeners[i]);
	for (unsigned i = 0; i < s->listeners.n;) {
		struct listener *l = &s->listeners.v[i];
		s->listeners.from_systemd |= l->inherited;
		if (server_add_listener(s, l) < 0)
			server_close_listener(s, l); /* moves the last one into slot i */
		else
			i++;
	}
	/* The configuration may have changed since: add and remove addresses
	 * as a reload would. */
	if (s->listeners.from_systemd)
		reload_check_systemd_listen(s, &s->cfg);
	else if (reload_reconcile(s, &s->cfg, problem, sizeof(problem)))
		snprintf(s->reload_problem, sizeof(s->reload_problem), "%s", problem);
	/* As after a reload that could not bind: the connections are served
	 * on, and the problem stays in STATUS= until a reload fixes it. */
	if (s->listeners.n == 0)
		log_error("upgrade: no listening socket was carried over or could be "
			  "opened; serving the connections carried over until a reload "
			  "opens one");
	return 0;
}

/* ---- connections ---------------------------------------------------------- */

void restore_adopt(struct worker *w, const struct uprec *conns, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		const struct uprec *r = &conns[i];
		struct upbody_conn body;
		const struct upbody_conn *b = body_as(r, &body, sizeof(body));
		/* Unreadable: its owed bytes, then a clean EOF. */
		struct echo_adopted how = {.flags = CONN_NO_RECV, .cut = CUT_DEADLINE};

		if (b) {
			how.flags = (b->flags & UPC_READ_EOF ? CONN_READ_EOF : 0) |
				    (b->flags & UPC_CUT ? CONN_NO_RECV : 0) |
				    (b->flags & UPC_WR_SHUT ? CONN_WR_SHUT : 0);
			how.cut = b->cut;
			how.idle_ms = b->idle_ms;
			how.recv_idle_ms = b->recv_idle_ms;
			how.peer.valid = b->peer_valid;
			memcpy(how.peer.addr, b->peer, sizeof(how.peer.addr));
		}
		if (echo_adopt(w, r->fd, r->bytes, r->bytes ? r->bytes_len : 0, &how) <
		    0) {
			log_warn(
			    "upgrade: out of memory for connection fd %d; closing it",
			    r->fd);
			close(r->fd);
		}
	}
}

/* Connections go to the loops in turn: their shares come out even. */
static void distribute(struct server *s, struct upgrade_state *st)
{
	unsigned per = (st->nconns + s->nworkers - 1) / s->nworkers;
	struct mail_wait done;

	mail_wait_init(&done, 0);
	for (unsigned i = 1; i < s->nworkers; i++) {
		unsigned from = i * per, n = from < st->nconns ? st->nconns - from : 0;
		struct mail m = {
		    .type = MAIL_RESTORE, .conns = &st->conns[from], .wait = &done};

		m.nconns_restore = n < per ? n : per;
		if (!m.nconns_restore)
			continue;
		done.pending++;
		if (!mailbox_send(&s->workers[i].mail, &m, &s->workers[0].ring)) {
			done.pending--;
			restore_adopt(&s->workers[0], m.conns, m.nconns_restore);
		}
	}
	restore_adopt(&s->workers[0], st->conns, st->nconns < per ? st->nconns : per);
	mail_wait_all(&done); /* st's data stays until every loop has its share */
	mail_wait_deinit(&done);
}

void restore_connections(struct server *s, struct upgrade_state *st)
{
	struct upbody_program body;
	const struct upbody_program *p = body_as(&st->program, &body, sizeof(body));
	uint64_t adopt_ms = worker_clock_ms(), took;

	if (st->verdict != UPSTATE_OK)
		log_error(
		    "upgrade: cannot use the state the old program left (%s): every "
		    "connection gets the echo it is owed, if it can be found, then EOF",
		    st->why);
	distribute(s, st);
	took = p ? worker_clock_ms() - p->started_ms : 0;
	if (p)
		log_info(
		    "upgrade: stopping took %llu ms, the exec %llu ms, the start-up %llu "
		    "ms, taking the connections back %llu ms",
		    (unsigned long long)(p->exec_ms - p->started_ms),
		    (unsigned long long)(st->taken_ms - p->exec_ms),
		    (unsigned long long)(adopt_ms - st->taken_ms),
		    (unsigned long long)(worker_clock_ms() - adopt_ms));
	if (st->counters.body && st->verdict == UPSTATE_OK)
		memcpy(&s->workers[0].stats, st->counters.body,
		       st->counters.body_len < sizeof(struct stats)
			   ? st->counters.body_len
			   : sizeof(struct stats));
	s->upgrade.count = p ? p->upgrades : 1;
	s->workers[0].stats.upgrades = s->upgrade.count;
	log_notice(
	    "upgrade: from ringechod %.*s to %s in %llu ms: %u connection%s and %u "
	    "listener%s carried over",
	    p ? (int)sizeof(p->version) : 1, p ? p->version : "?", s->upgrade.version,
	    (unsigned long long)took, st->nconns, plural_s(st->nconns), st->nlisteners,
	    plural_s(st->nlisteners));
	if (p && p->stop_after)
		s->upgrade.stop_after = true;
}

/* ---- a start-up that failed ---------------------------------------------- */

struct farewell {
	const struct uprec *r;
	size_t sent;
	bool shut;
};

/* One connection's turn: send what it is owed, then FIN, then read and drop
 * until its EOF. false once it is done with (closed). */
static bool farewell_step(struct farewell *f, struct pollfd *p)
{
	char scratch[4096];
	ssize_t n;

	while (!f->shut && f->r->bytes && f->sent < f->r->bytes_len) {
		n = send(p->fd, f->r->bytes + f->sent, f->r->bytes_len - f->sent,
			 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return true;
		if (n < 0)
			goto done;
		f->sent += (size_t)n;
	}
	if (!f->shut) {
		shutdown(p->fd, SHUT_WR);
		f->shut = true;
		p->events = POLLIN;
	}
	for (;;) {
		n = recv(p->fd, scratch, sizeof(scratch), MSG_DONTWAIT);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return true;
		if (n <= 0)
			goto done;
	}
done:
	close(p->fd);
	p->fd = -1;
	return false;
}

void restore_farewell(struct upgrade_state *st, unsigned timeout_ms)
{
	uint64_t deadline = worker_clock_ms() + timeout_ms, now;
	struct farewell *f = calloc(st->nconns, sizeof(*f));
	struct pollfd *p = calloc(st->nconns, sizeof(*p));
	unsigned open = st->nconns;

	if (!st->nconns || !f || !p) {
		free(f);
		free(p);
		return; /* they close as the process ends */
	}
	log_error("upgrade: the new program cannot serve; each of %u connection%s gets "
		  "the echo it is owed, then EOF",
		  st->nconns, plural_s(st->nconns));
	for (unsigned i = 0; i < st->nconns; i++) {
		f[i].r = &st->conns[i];
		p[i].fd = st->conns[i].fd;
		p[i].events = POLLOUT;
	}
	for (unsigned i = 0; i < st->nconns; i++)
		if (!farewell_step(&f[i], &p[i]))
			open--;
	while (open && (now = worker_clock_ms()) < deadline) {
		if (poll(p, st->nconns, (int)(deadline - now)) < 0 && errno != EINTR)
			break;
		for (unsigned i = 0; i < st->nconns; i++)
			if (p[i].fd >= 0 && p[i].revents && !farewell_step(&f[i], &p[i]))
				open--;
	}
	if (open)
		log_warn(
		    "upgrade: %u connection%s did not end within %u ms; closing them",
		    open, plural_s(open), timeout_ms);
	free(f);
	free(p);
}
