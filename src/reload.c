/* SPDX-License-Identifier: MIT */
/* SIGHUP: re-read the config file and apply it live, or keep the old one. */
#include "lifecycle.h"
#include "server.h"

#include <errno.h>
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

/* Open what is new, close what was removed, keep the rest (and their
 * connections). Sockets from systemd are never touched. */
static void reconcile_listeners(struct server *s, const struct config *next)
{
	for (unsigned i = 0; i < s->listeners.n;) {
		struct listener *l = &s->listeners.v[i];
		if (!l->inherited && !listen_addr_in(&l->want, next))
			server_close_listener(s, l); /* moves the last one into slot i */
		else
			i++;
	}
	for (unsigned i = 0; i < next->nlisten; i++) {
		bool have = false;
		for (unsigned j = 0; j < s->listeners.n && !have; j++)
			have =
			    listen_addr_equal(&s->listeners.v[j].want, &next->listen[i]);
		if (!have) {
			struct listener *l =
			    listeners_add(&s->listeners, &next->listen[i], next);
			if (l)
				server_arm_accept(s, l);
		}
	}
}

static int load(struct server *s, struct config *next)
{
	struct config_errors errs;
	int ret = config_load(next, s->opts.config_path, &errs);

	if (ret == -ENOENT && !s->opts.config_explicit) {
		config_defaults(next);
		return 0;
	}
	for (unsigned i = 0; i < errs.count; i++)
		log_error("%s", errs.msg[i]);
	return ret;
}

void lifecycle_reload(struct server *s)
{
	struct config next;
	char status[128];

	if (s->state != SERVER_RUNNING)
		return;
	notify_reloading(&s->notify);
	log_info("reloading configuration from %s", s->opts.config_path);
	if (load(s, &next) < 0) {
		log_warn("reload failed; keeping the old configuration");
	} else {
		if (s->opts.nlisten) {
			memcpy(next.listen, s->opts.listen, sizeof(next.listen));
			next.nlisten = s->opts.nlisten;
		}
		if (s->opts.verbose)
			next.log_level = LOG_DEBUG;
		keep_restart_only(&next, &s->cfg);
		log_set_level(next.log_level);
		if (s->listeners.from_systemd)
			log_info(
			    "reload: sockets come from systemd; 'listen' is ignored");
		else
			reconcile_listeners(s, &next);
		s->cfg = next;
		listeners_apply(&s->listeners, &s->cfg);
		log_notice("reloaded configuration from %s", s->opts.config_path);
	}
	server_format_status(s, status, sizeof(status));
	notify_ready(&s->notify, status);
}
