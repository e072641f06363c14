/* SPDX-License-Identifier: MIT */
#include "server.h"
#include "accept.h"
#include "lifecycle.h"
#include "reload.h"
#include "udp.h"
#include "worker.h"

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

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

/* Send m to every loop but 0 (loop 0 applies its own directly) and, when
 * wait, until each has handled it. Only loop 0's thread sends. */
static void tell_others(struct server *s, struct mail m, bool wait)
{
	struct worker *w0 = &s->workers[0];
	struct mail_wait done;

	if (s->nworkers < 2)
		return;
	mail_wait_init(&done, s->nworkers - 1);
	m.wait = wait ? &done : NULL;
	for (unsigned i = 1; i < s->nworkers; i++) {
		struct worker *w = &s->workers[i];
		if (!mailbox_send(&w->mail, &m, &w0->ring) && wait)
			mail_wait_done(&done); /* that loop has ended */
	}
	if (wait)
		mail_wait_all(&done);
	mail_wait_deinit(&done);
}

void server_tell(struct server *s, enum mail_type type)
{
	struct mail m = {.type = type};

	server_tell_mail(s, &m);
}

void server_tell_mail(struct server *s, const struct mail *m)
{
	struct mail copy = *m;

	tell_others(s, *m, false);
	worker_apply_mail(&s->workers[0], &copy);
}

/* Each loop's counters; from the loops themselves while they run. */
static void collect(const struct server *s, struct stats *st, unsigned *n, uint64_t *ovf)
{
	for (unsigned i = 0; i < s->nworkers; i++) {
		struct mail m = {.type = MAIL_STATS,
				 .stats = &st[i],
				 .nconns = &n[i],
				 .overflows = &ovf[i]};
		if (i == 0 || !s->threads_running)
			worker_apply_mail(&s->workers[i], &m);
	}
	if (s->threads_running) {
		struct mail_wait done;
		mail_wait_init(&done, s->nworkers - 1);
		for (unsigned i = 1; i < s->nworkers; i++) {
			struct worker *w = &s->workers[i];
			struct mail m = {.type = MAIL_STATS,
					 .stats = &st[i],
					 .nconns = &n[i],
					 .overflows = &ovf[i],
					 .wait = &done};
			if (!mailbox_send(&w->mail, &m, &s->workers[0].ring)) {
				worker_apply_mail(w, &m); /* ended: its counters stay */
			}
		}
		mail_wait_all(&done);
		mail_wait_deinit(&done);
	}
}

void server_totals(const struct server *s, struct stats *st, unsigned *nconns)
{
	struct stats each[WORKERS_MAX];
	unsigned n[WORKERS_MAX];
	uint64_t ovf[WORKERS_MAX];

	collect(s, each, n, ovf);
	memset(st, 0, sizeof(*st));
	*nconns = 0;
	for (unsigned i = 0; i < s->nworkers; i++) {
		stats_add(st, &each[i]);
		*nconns += n[i];
	}
}

/* One stats line: the counters of st, n connections, ovf CQ overflows. */
static void format_stats(const struct stats *st, unsigned n, uint64_t ovf, char *buf,
			 size_t len)
{
	int o = snprintf(
	    buf, len,
	    "connections=%u total=%llu bytes=%llu messages=%llu refused_max=%llu "
	    "refused_per_ip=%llu idle_closed=%llu bufring_empty=%llu "
	    "starved_retries=%llu short_sends=%llu chained_sends=%llu "
	    "accept_paused=%llu send_timeouts=%llu handed_off=%llu cq_overflow=%llu "
	    "udp_datagrams=%llu udp_bytes=%llu upgrades=%llu",
	    n, (unsigned long long)st->conns_total, (unsigned long long)st->bytes,
	    (unsigned long long)st->messages, (unsigned long long)st->refused_max,
	    (unsigned long long)st->refused_per_ip, (unsigned long long)st->idle_closed,
	    (unsigned long long)st->bufring_empty,
	    (unsigned long long)st->starved_retries, (unsigned long long)st->short_sends,
	    (unsigned long long)st->chained_sends, (unsigned long long)st->accept_paused,
	    (unsigned long long)st->send_timeouts, (unsigned long long)st->handed_off,
	    (unsigned long long)ovf, (unsigned long long)st->udp_datagrams,
	    (unsigned long long)st->udp_bytes, (unsigned long long)st->upgrades);

	for (int i = 0; i < UDP_DROP_REASONS && o > 0 && (size_t)o < len; i++)
		o += snprintf(buf + o, len - o, " udp_dropped_%s=%llu", udp_drop_name(i),
			      (unsigned long long)st->udp_dropped[i]);
}

void server_log_stats(struct server *s)
{
	struct stats each[WORKERS_MAX], total = {0};
	unsigned n[WORKERS_MAX], nt = 0;
	uint64_t ovf[WORKERS_MAX], ovft = 0;
	char line[1024];

	collect(s, each, n, ovf);
	for (unsigned i = 0; i < s->nworkers; i++) {
		stats_add(&total, &each[i]);
		nt += n[i];
		ovft += ovf[i];
	}
	format_stats(&total, nt, ovft, line, sizeof(line));
	log_info("stats: %s", line);
	for (unsigned i = 0; s->nworkers > 1 && i < s->nworkers; i++) {
		format_stats(&each[i], n[i], ovf[i], line, sizeof(line));
		log_info("worker %u: %s", i, line);
	}
}

static uint64_t udp_dropped(const struct stats *st)
{
	uint64_t n = 0;

	for (int i = 0; i < UDP_DROP_REASONS; i++)
		n += st->udp_dropped[i];
	return n;
}

void server_format_status(const struct server *s, char *buf, size_t len)
{
	struct stats st;
	char udp[96] = "";
	unsigned n;

	server_totals(s, &st, &n);
	if (listeners_count(&s->listeners, true))
		snprintf(udp, sizeof(udp), ", %llu datagram%s echoed, %llu dropped",
			 (unsigned long long)st.udp_datagrams, plural_s(st.udp_datagrams),
			 (unsigned long long)udp_dropped(&st));
	snprintf(
	    buf, len,
	    "%u connection%s, %llu message%s, %llu byte%s echoed, %llu refused%s%s%s", n,
	    plural_s(n), (unsigned long long)st.messages, plural_s(st.messages),
	    (unsigned long long)st.bytes, plural_s(st.bytes),
	    (unsigned long long)(st.refused_max + st.refused_per_ip), udp,
	    s->reload_problem[0] ? "; last reload incomplete: " : "", s->reload_problem);
}

/* Loops 1.. accept on TCP listener l too. */
static void others_accept(struct server *s, const struct listener *l, bool wait)
{
	struct mail m = {.type = MAIL_ADD_LISTENER, .id = l->id, .fd = l->fd};

	snprintf(m.name, sizeof(m.name), "%s", l->name);
	tell_others(s, m, wait);
}

int server_add_listener(struct server *s, struct listener *l)
{
	if (l->dgram) /* one loop serves UDP: see README, "Scaling out" */
		return udp_add_listener(&s->workers[0], l);
	accept_add_listener(&s->workers[0], l->id, l->fd, l->name);
	others_accept(s, l, false);
	return 0;
}

void server_close_listener(struct server *s, struct listener *l)
{
	struct mail m = {.type = MAIL_REMOVE_LISTENER, .id = l->id};

	if (l->dgram) {
		udp_remove_listener(&s->workers[0], l->id);
	} else {
		accept_remove_listener(&s->workers[0], l->id);
		tell_others(s, m, true); /* every loop has let go of it */
		/* systemd keeps its sockets, backlog and all, for the next
		 * start: those clients are the next instance's to serve. */
		if (!l->inherited)
			accept_take_backlog(&s->workers[0], l->fd);
	}
	log_notice("stopped listening on %s%s", l->dgram ? "udp " : "", l->name);
	listeners_remove(&s->listeners, l);
}

void server_share_config(struct server *s)
{
	struct mail m = {.type = MAIL_CONFIG, .cfg = &s->cfg};

	s->workers[0].cfg = s->cfg;
	tell_others(s, m, true); /* s->cfg may change once all have copied it */
}

bool server_others_finished(const struct server *s)
{
	for (unsigned i = 1; i < s->nworkers; i++)
		if (!atomic_load(&s->workers[i].finished))
			return false;
	return true;
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
		if (server_add_listener(s, &s->listeners.v[i]) < 0)
			return 1;
	return 0;
}

/* The CPUs this process may run on (systemd's CPUAffinity=, taskset), or
 * the online ones where the affinity mask does not fit a cpu_set_t. */
static unsigned cpus_allowed(void)
{
	cpu_set_t set;
	long online;

	if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0)
		return (unsigned)CPU_COUNT(&set);
	online = sysconf(_SC_NPROCESSORS_ONLN);
	return online > 0 ? (unsigned)online : 1;
}

/* workers = 0: one loop per CPU the daemon may run on. Loops that share a
 * core cost more CPU per message than one loop there (each wakes for fewer
 * completions: bench/README.md), hence the notice. */
static unsigned how_many_workers(const struct config *cfg)
{
	unsigned cpus = cpus_allowed();
	unsigned n = cfg->workers ? cfg->workers : cpus;

	if (n > WORKERS_MAX)
		n = WORKERS_MAX;
	if (n > cpus)
		log_notice(
		    "workers = %u, but this process may run on %u CPU%s: loops that "
		    "share a core cost more CPU per message than one loop",
		    n, cpus, plural_s(cpus));
	return n;
}

/* Loops 1.. on threads of their own, each setting up its own ring (a ring
 * takes submissions from the thread that made it). */
static int start_threads(struct server *s)
{
	struct mail_wait started;
	int ret = 0;

	mail_wait_init(&started, s->nworkers - 1);
	for (unsigned i = 1; i < s->nworkers; i++) {
		int err = worker_start_thread(&s->workers[i], &started);
		if (err < 0) {
			log_errno(LOG_ERR, -err, "cannot start loop %u", i);
			for (unsigned k = i; k < s->nworkers; k++)
				mail_wait_done(&started);
			ret = 1;
			break;
		}
	}
	mail_wait_all(&started);
	mail_wait_deinit(&started);
	for (unsigned i = 1; i < s->nworkers && !ret; i++)
		ret = s->workers[i].start_status;
	s->threads_running = true;
	return ret;
}

static int setup_workers(struct server *s)
{
	int ret;

	s->nworkers = how_many_workers(&s->cfg);
	s->workers = calloc(s->nworkers, sizeof(*s->workers));
	if (!s->workers) {
		log_error("out of memory");
		return 1;
	}
	for (unsigned i = 0; i < s->nworkers; i++) {
		s->workers[i].srv = s;
		s->workers[i].index = i;
		if (mailbox_init(&s->workers[i].mail) < 0)
			return 1;
	}
	ret = worker_init(&s->workers[0], s, 0, &s->cfg, -1);
	if (ret == 0 && s->nworkers > 1)
		log_info("%u loops, one thread each", s->nworkers);
	return ret;
}

/* After an upgrade's connections are back: loops 1.. accept too. Not
 * before: a connection they accepted would be handed to loop 0, busy
 * handing out the carried ones, and counted before those were. */
static void accept_everywhere(struct server *s)
{
	for (unsigned i = 0; i < s->listeners.n; i++)
		if (!s->listeners.v[i].dgram)
			others_accept(s, &s->listeners.v[i], true);
	s->accepts_later = false;
}

int server_init(struct server *s, const struct config *cfg, const struct config_cli *cli,
		struct upgrade_state *from)
{
	char status[256];
	int ret;

	s->cfg = *cfg;
	s->cli = *cli;
	s->sigfd = -1;
	listeners_init(&s->listeners);
	notify_init(&s->notify);
	raise_fd_limit(cfg);
	if (admission_init(&s->admission) < 0) {
		log_error("out of memory");
		return 1;
	}
	if (lifecycle_init(s) < 0) {
		log_errno(LOG_ERR, errno, "cannot set up signal handling");
		return 1;
	}
	s->accepts_later = from != NULL;
	ret = setup_workers(s);
	if (ret == 0)
		ret = from ? restore_listeners(s, from) : setup_listeners(s);
	if (ret == 0 && s->nworkers > 1)
		ret = start_threads(s);
	if (ret)
		return ret;
	if (from) {
		restore_connections(s, from);
		accept_everywhere(s);
	}
	lifecycle_arm(s, &s->workers[0]);
	/* Accepts are in the kernel before anyone is told we are ready (the
	 * other loops flushed theirs before they answered start_threads). */
	worker_flush(&s->workers[0]);
	server_format_status(s, status, sizeof(status));
	notify_ready(&s->notify, status);
	log_notice("ready: %u listener%s, %u buffers of %u bytes, max %u connection%s",
		   s->listeners.n, plural_s(s->listeners.n), s->cfg.buffer_count,
		   s->cfg.buffer_size, s->cfg.max_connections,
		   plural_s(s->cfg.max_connections));
	if (s->upgrade.stop_after)
		lifecycle_stop(s, &s->workers[0]);
	return 0;
}

int server_run(struct server *s)
{
	int ret = worker_run(&s->workers[0]);

	if (ret != 0) /* loop 0 is broken: stop the others as fast as they can */
		lifecycle_abort(s);
	server_join(s);
	lifecycle_finish(s);
	return ret ? ret : s->exit_status;
}

void server_join(struct server *s)
{
	for (unsigned i = 1; s->workers && i < s->nworkers; i++) {
		if (s->workers[i].thread_started)
			pthread_join(s->workers[i].thread, NULL);
		s->workers[i].thread_started = false;
	}
	s->threads_running = false;
}

void server_deinit(struct server *s)
{
	if (s->threads_running) /* a failed start-up: the others end at once */
		lifecycle_abort(s);
	server_join(s);
	if (s->workers)
		worker_deinit(&s->workers[0]);
	for (unsigned i = 0; s->workers && i < s->nworkers; i++)
		mailbox_deinit(&s->workers[i].mail);
	listeners_close_all(&s->listeners);
	free(s->workers);
	s->workers = NULL;
	lifecycle_deinit(s);
	admission_deinit(&s->admission);
}
