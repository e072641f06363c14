/* SPDX-License-Identifier: MIT */
#include "reload.h"
#include "server.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* Keys fixed at start-up: the ring and its buffers are sized once. */
static void keep_restart_only(struct config *next, const struct config *cur)
{
	static const struct {
		const char *name;
		size_t offset;
	} fixed[] = {
	    {"ring_entries", offsetof(struct config, ring_entries)},
	    {"buffer_size", offsetof(struct config, buffer_size)},
	    {"buffer_count", offsetof(struct config, buffer_count)},
	    {"sqpoll_idle_ms", offsetof(struct config, sqpoll_idle_ms)},
	};

	for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
		unsigned *n = (unsigned *)((char *)next + fixed[i].offset);
		const unsigned *c =
		    (const unsigned *)((const char *)cur + fixed[i].offset);
		if (*n != *c) {
			log_warn(
			    "reload: '%s' changed from %u to %u; that takes a restart",
			    fixed[i].name, *c, *n);
			*n = *c;
		}
	}
}

/* "a, b, c" of the addresses, cut to fit. */
static void join_addrs(char *buf, size_t len, const char *const *names, unsigned n)
{
	size_t o = 0;

	buf[0] = '\0';
	for (unsigned i = 0; i < n && o < len; i++)
		o += snprintf(buf + o, len - o, "%s%s", i ? ", " : "", names[i]);
}

void reload_check_systemd_listen(const struct server *s, const struct config *cfg)
{
	const char *want[CONFIG_MAX_LISTEN], *have[CONFIG_MAX_LISTEN];
	char a[512], b[512];
	bool same = cfg->nlisten == s->listeners.n;

	if (!cfg->listen_set)
		return; /* nothing was asked for: systemd decides */
	for (unsigned i = 0; i < cfg->nlisten; i++) {
		want[i] = cfg->listen[i].text;
		same = same && listeners_bound_to(&s->listeners, &cfg->listen[i]);
	}
	for (unsigned i = 0; i < s->listeners.n; i++)
		have[i] = s->listeners.v[i].name;
	if (same)
		return;
	join_addrs(a, sizeof(a), want, cfg->nlisten);
	join_addrs(b, sizeof(b), have, s->listeners.n);
	log_warn("'listen' (%s) is not what systemd passed (%s): serving systemd's "
		 "sockets; change ringechod.socket to change the addresses",
		 a, b);
}

/* Open what is new, close what was removed, keep the rest (and their
 * connections). Sockets from systemd are never touched. Returns how many
 * addresses could not be bound; the first is described in problem. */
static unsigned reconcile_listeners(struct server *s, const struct config *next,
				    char *problem, size_t len)
{
	unsigned failed = 0;
	char why[RELOAD_PROBLEM_LEN];

	for (unsigned i = 0; i < s->listeners.n;) {
		struct listener *l = &s->listeners.v[i];
		if (!l->inherited && !listen_addr_in(&l->want, next))
			server_close_listener(s, l); /* moves the last one into slot i */
		else
			i++;
	}
	for (unsigned i = 0; i < next->nlisten; i++) {
		struct listener *l;
		int err;

		if (listeners_have(&s->listeners, &next->listen[i]))
			continue;
		err = listeners_add(&s->listeners, &next->listen[i], next, &l);
		if (err == 0) {
			server_add_listener(s, l);
			continue;
		}
		listener_explain(why, sizeof(why), &next->listen[i], err);
		log_warn("reload: %s", why);
		if (failed++ == 0)
			snprintf(problem, len, "%s", why);
	}
	return failed;
}

void reload_apply(struct server *s)
{
	struct config_errors errs;
	struct config next;
	char status[256];
	bool no_file;
	unsigned failed = 0;

	if (s->state != SERVER_RUNNING)
		return;
	notify_reloading(&s->notify);
	log_info("reloading configuration from %s", s->cli.path);
	if (config_resolve(&next, &s->cli, false, &errs, &no_file) < 0) {
		for (unsigned i = 0; i < errs.count; i++)
			log_error("%s", errs.msg[i]);
		log_warn("reload failed; keeping the old configuration");
	} else {
		keep_restart_only(&next, &s->cfg);
		log_set_level(next.log_level);
		if (!s->listeners.from_systemd)
			failed = reconcile_listeners(s, &next, s->reload_problem,
						     sizeof(s->reload_problem));
		else if (!listen_same(&next, &s->cfg))
			reload_check_systemd_listen(s, &next);
		s->cfg = next;
		server_share_config(s);
		listeners_apply(&s->listeners, &s->cfg);
		if (failed) {
			log_warn(
			    "reloaded configuration from %s, but %u address%s could not "
			    "be listened on (see above)",
			    s->cli.path, failed, failed == 1 ? "" : "es");
		} else {
			s->reload_problem[0] = '\0';
			log_notice("reloaded configuration from %s", s->cli.path);
		}
	}
	server_format_status(s, status, sizeof(status));
	notify_ready(&s->notify, status);
}
