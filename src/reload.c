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
	    {"udp_buffer_count", offsetof(struct config, udp_buffer_count)},
	    {"workers", offsetof(struct config, workers)},
	    {"udp_max_datagram", offsetof(struct config, udp_max_datagram)},
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

/* One kind of address: warn when the configuration asks for other
 * addresses than the systemd sockets of that kind. */
static void check_kind(const struct server *s, const struct addr_list *list, bool dgram,
		       const char *key)
{
	const char *want[CONFIG_MAX_LISTEN] = {0}, *have[LISTENERS_MAX] = {0};
	unsigned nhave = 0;
	char a[512], b[512];
	bool same = list->n == listeners_count(&s->listeners, dgram);

	if (!list->set)
		return; /* nothing was asked for: systemd decides */
	for (unsigned i = 0; i < list->n; i++) {
		want[i] = list->v[i].text;
		same = same && listeners_bound_to(&s->listeners, &list->v[i], dgram);
	}
	if (same)
		return;
	for (unsigned i = 0; i < s->listeners.n; i++)
		if (s->listeners.v[i].dgram == dgram)
			have[nhave++] = s->listeners.v[i].name;
	join_addrs(a, sizeof(a), want, list->n);
	join_addrs(b, sizeof(b), have, nhave);
	log_warn("'%s' (%s) is not what systemd passed (%s): serving systemd's sockets; "
		 "change ringechod.socket to change the addresses",
		 key, list->n ? a : "none", nhave ? b : "none");
}

void reload_check_systemd_listen(const struct server *s, const struct config *cfg)
{
	check_kind(s, &cfg->listen, false, "listen");
	check_kind(s, &cfg->listen_udp, true, "listen_udp");
}

/* Bind what next lists of one kind and is not open yet. */
static unsigned open_new(struct server *s, const struct addr_list *list, bool dgram,
			 const struct config *next, char *problem, size_t len,
			 unsigned failed)
{
	char why[RELOAD_PROBLEM_LEN];

	for (unsigned i = 0; i < list->n; i++) {
		struct listener *l;
		int err;

		if (listeners_have(&s->listeners, &list->v[i], dgram))
			continue;
		err = listeners_add(&s->listeners, &list->v[i], dgram, next, &l);
		if (err == 0 && (err = server_add_listener(s, l)) < 0)
			server_close_listener(s, l); /* no UDP buffers: undo */
		if (err == 0)
			continue;
		listener_explain(why, sizeof(why), &list->v[i], dgram, err);
		log_warn("reload: %s", why);
		if (failed++ == 0)
			snprintf(problem, len, "%s", why);
	}
	return failed;
}

/* Open what is new, close what was removed, keep the rest (and their
 * connections). Sockets from systemd are never touched. Returns how many
 * addresses could not be bound; the first is described in problem. */
unsigned reload_reconcile(struct server *s, const struct config *next, char *problem,
			  size_t len)
{
	unsigned failed;

	for (unsigned i = 0; i < s->listeners.n;) {
		struct listener *l = &s->listeners.v[i];
		const struct addr_list *list =
		    l->dgram ? &next->listen_udp : &next->listen;
		if (!l->inherited && !listen_addr_in(&l->want, list))
			server_close_listener(s, l); /* moves the last one into slot i */
		else
			i++;
	}
	failed = open_new(s, &next->listen, false, next, problem, len, 0);
	return open_new(s, &next->listen_udp, true, next, problem, len, failed);
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
			failed = reload_reconcile(s, &next, s->reload_problem,
						  sizeof(s->reload_problem));
		else if (!addr_list_same(&next.listen, &s->cfg.listen) ||
			 !addr_list_same(&next.listen_udp, &s->cfg.listen_udp))
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
