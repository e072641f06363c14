/* SPDX-License-Identifier: MIT */
#include "server.h"
#include "accept.h"
#include "lifecycle.h"
#include "reload.h"
#include "udp.h"
#include "worker.h"

#include <errno.h>
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

void server_totals(const struct server *s, struct stats *st, unsigned *nconns)
{
	memset(st, 0, sizeof(*st));
	*nconns = 0;
	for (unsigned i = 0; i < s->nworkers; i++) {
		stats_add(st, &s->workers[i].stats);
		*nconns += s->workers[i].nconns;
	}
}

void server_format_stats(const struct server *s, char *buf, size_t len)
{
	uint64_t overflows = 0;
	struct stats st;
	unsigned n;
	int o;

	server_totals(s, &st, &n);
	for (unsigned i = 0; i < s->nworkers; i++)
		overflows += s->workers[i].ring.cq_overflows;
	o = snprintf(
	    buf, len,
	    "connections=%u total=%llu bytes=%llu messages=%llu refused_max=%llu "
	    "refused_per_ip=%llu idle_closed=%llu bufring_empty=%llu "
	    "starved_retries=%llu short_sends=%llu chained_sends=%llu "
	    "accept_paused=%llu send_timeouts=%llu cq_overflow=%llu "
	    "udp_datagrams=%llu udp_bytes=%llu",
	    n, (unsigned long long)st.conns_total, (unsigned long long)st.bytes,
	    (unsigned long long)st.messages, (unsigned long long)st.refused_max,
	    (unsigned long long)st.refused_per_ip, (unsigned long long)st.idle_closed,
	    (unsigned long long)st.bufring_empty, (unsigned long long)st.starved_retries,
	    (unsigned long long)st.short_sends, (unsigned long long)st.chained_sends,
	    (unsigned long long)st.accept_paused, (unsigned long long)st.send_timeouts,
	    (unsigned long long)overflows, (unsigned long long)st.udp_datagrams,
	    (unsigned long long)st.udp_bytes);
	for (int i = 0; i < UDP_DROP_REASONS && o > 0 && (size_t)o < len; i++)
		o += snprintf(buf + o, len - o, " udp_dropped_%s=%llu", udp_drop_name(i),
			      (unsigned long long)st.udp_dropped[i]);
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

int server_add_listener(struct server *s, struct listener *l)
{
	if (l->dgram) /* one loop serves UDP: see README, "Scaling out" */
		return udp_add_listener(&s->workers[0], l);
	for (unsigned i = 0; i < s->nworkers; i++)
		accept_add_listener(&s->workers[i], l);
	return 0;
}

void server_close_listener(struct server *s, struct listener *l)
{
	if (l->dgram)
		udp_remove_listener(&s->workers[0], l->id);
	for (unsigned i = 0; !l->dgram && i < s->nworkers; i++)
		accept_remove_listener(&s->workers[i], l->id);
	log_notice("stopped listening on %s%s", l->dgram ? "udp " : "", l->name);
	listeners_remove(&s->listeners, l);
}

void server_share_config(struct server *s)
{
	for (unsigned i = 0; i < s->nworkers; i++)
		s->workers[i].cfg = s->cfg;
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

static int setup_workers(struct server *s)
{
	s->nworkers = 1;
	s->workers = calloc(s->nworkers, sizeof(*s->workers));
	if (!s->workers) {
		log_error("out of memory");
		return 1;
	}
	for (unsigned i = 0; i < s->nworkers; i++) {
		int ret = worker_init(&s->workers[i], s, i, &s->cfg);
		if (ret)
			return ret;
	}
	return 0;
}

int server_init(struct server *s, const struct config *cfg, const struct config_cli *cli)
{
	char status[256];
	int ret;

	memset(s, 0, sizeof(*s));
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
	ret = setup_workers(s);
	if (ret == 0)
		ret = setup_listeners(s);
	if (ret)
		return ret;
	lifecycle_arm(s, &s->workers[0]);
	/* Accepts are in the kernel before anyone is told we are ready. */
	for (unsigned i = 0; i < s->nworkers; i++)
		worker_flush(&s->workers[i]);
	server_format_status(s, status, sizeof(status));
	notify_ready(&s->notify, status);
	log_notice("ready: %u listener%s, %u buffers of %u bytes, max %u connection%s",
		   s->listeners.n, plural_s(s->listeners.n), s->cfg.buffer_count,
		   s->cfg.buffer_size, s->cfg.max_connections,
		   plural_s(s->cfg.max_connections));
	return 0;
}

int server_run(struct server *s)
{
	int ret = worker_run(&s->workers[0]);

	lifecycle_finish(s);
	return ret;
}

void server_deinit(struct server *s)
{
	for (unsigned i = 0; s->workers && i < s->nworkers; i++)
		worker_deinit(&s->workers[i]);
	listeners_close_all(&s->listeners);
	free(s->workers);
	s->workers = NULL;
	lifecycle_deinit(s);
	admission_deinit(&s->admission);
}
