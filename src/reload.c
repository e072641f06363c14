/* SPDX-License-Identifier: MIT */
#include "reload.h"
#include "server.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The ring and its buffers are sized once: keys fixed at start-up keep
 * their running values; -EINVAL when a key that can change live no longer
 * fits them. */
static int keep_restart_only(struct config *next, const struct config *cur)
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
	if (next->max_pending_bytes < next->buffer_size) {
		log_error("reload: 'max_pending_bytes' = %u must be at least the running "
			  "'buffer_size' = %u",
			  next->max_pending_bytes, next->buffer_size);
		return -EINVAL;
	}
	return 0;
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

/* Open one address and have the loops serve it: 0 and *out, or -errno. */
static int open_one(struct server *s, const struct listen_addr *a, bool dgram,
		    const struct config *next, struct listener **out)
{
	int err = listeners_add(&s->listeners, a, dgram, next, out);

	if (err == 0 && (err = server_add_listener(s, *out)) < 0)
		server_close_listener(s, *out); /* no UDP buffers: undo */
	return err;
}

/* Log why a could not be listened on; the first one counted goes into
 * problem (failed NULL: only logged). */
static void report(const struct listen_addr *a, bool dgram, int err, char *problem,
		   size_t len, unsigned *failed)
{
	char why[RELOAD_PROBLEM_LEN];

	listener_explain(why, sizeof(why), a, dgram, err);
	log_warn("reload: %s", why);
	if (failed && (*failed)++ == 0)
		snprintf(problem, len, "%s", why);
}

/* A listener of the kind that list no longer names (systemd's stay). */
static bool removed(const struct listener *l, const struct addr_list *list, bool dgram)
{
	return l->dgram == dgram && !l->inherited && !listen_addr_in(&l->want, list);
}

/* Would a listener about to be removed keep a from being bound (the same
 * address and port, or a wildcard on the port)? */
static bool blocked_by_removed(const struct server *s, const struct addr_list *list,
			       bool dgram, const struct listen_addr *a)
{
	char why[160];

	for (unsigned i = 0; i < s->listeners.n; i++) {
		const struct listener *l = &s->listeners.v[i];
		struct listen_addr v[2] = {{.len = l->want.len}, *a};

		if (!removed(l, list, dgram))
			continue;
		memcpy(&v[0].ss, &l->bound, l->want.len);
		if (config_addr_clash(v, 1, true, why, sizeof(why)) < 0)
			return true;
	}
	return false;
}

/* Listeners a reload closed: as configured, and the address they were
 * bound to (a configured port 0 had a real one), should they be needed
 * again. */
struct closed {
	unsigned n;
	struct {
		struct listen_addr want, at;
	} v[CONFIG_MAX_LISTEN];
};

/* Close the listeners of one kind that list no longer names. */
static void close_removed(struct server *s, const struct addr_list *list, bool dgram,
			  struct closed *closed)
{
	closed->n = 0;
	for (unsigned i = 0; i < s->listeners.n;) {
		struct listener *l = &s->listeners.v[i];

		if (!removed(l, list, dgram)) {
			i++;
			continue;
		}
		if (closed->n < CONFIG_MAX_LISTEN) {
			closed->v[closed->n].want = l->want;
			closed->v[closed->n].at = l->want;
			memcpy(&closed->v[closed->n++].at.ss, &l->bound, l->want.len);
		}
		server_close_listener(s, l); /* moves the last one into slot i */
	}
}

static const char *key_of(bool dgram)
{
	return dgram ? "listen_udp" : "listen";
}

/* Not one of list's addresses could be opened: serve the old ones in
 * kept instead (names: as bound), and say so. */
static void fall_back(struct addr_list *list, const struct addr_list *kept,
		      const char *const *names, bool dgram, bool reopened)
{
	char joined[512];

	join_addrs(joined, sizeof(joined), names, kept->n);
	log_warn(
	    "reload: no address in '%s' could be listened on; %s the old one%s%s: %s",
	    key_of(dgram), reopened ? "listening on" : "keeping", kept->n == 1 ? "" : "s",
	    reopened ? " again" : "", joined);
	*list = *kept;
}

/* Not one of list's addresses could be opened: keep the listeners it
 * would remove, untouched (their backlogs too), so that a reload never
 * leaves the daemon listening nowhere. False when there are none. */
static bool keep_removed(struct server *s, struct addr_list *list, bool dgram)
{
	const char *names[CONFIG_MAX_LISTEN];
	struct addr_list kept = {.set = list->set};

	for (unsigned i = 0; i < s->listeners.n && kept.n < CONFIG_MAX_LISTEN; i++) {
		const struct listener *l = &s->listeners.v[i];

		if (removed(l, list, dgram)) {
			names[kept.n] = l->name;
			kept.v[kept.n++] = l->want;
		}
	}
	if (kept.n)
		fall_back(list, &kept, names, dgram, false);
	return kept.n > 0;
}

/* The last resort: the old listeners were closed for addresses that then
 * could not be bound either. Listen on the old addresses again. */
static void reopen_closed(struct server *s, struct addr_list *list, bool dgram,
			  const struct config *next, const struct closed *closed)
{
	const char *names[CONFIG_MAX_LISTEN];
	struct addr_list kept = {.set = list->set};

	if (!list->n || !closed->n || listeners_count(&s->listeners, dgram))
		return;
	for (unsigned i = 0; i < closed->n; i++) {
		struct listener *l;
		int err = open_one(s, &closed->v[i].at, dgram, next, &l);

		if (err < 0) {
			report(&closed->v[i].at, dgram, err, NULL, 0, NULL);
			continue;
		}
		l->want = closed->v[i].want; /* the reload diff key, as before */
		names[kept.n] = l->name;
		kept.v[kept.n++] = closed->v[i].want;
	}
	if (kept.n)
		fall_back(list, &kept, names, dgram, true);
}

/* One kind of address. The new ones are opened first, while the old ones
 * still listen; one that only an old listener keeps from being bound waits
 * until the old ones are closed. Unchanged ones keep their connections. */
static unsigned reconcile_kind(struct server *s, struct addr_list *list, bool dgram,
			       const struct config *next, char *problem, size_t len,
			       unsigned failed)
{
	bool later[CONFIG_MAX_LISTEN] = {false};
	unsigned open = 0, nlater = 0, before = failed;
	struct closed *closed;

	for (unsigned i = 0; i < list->n; i++) {
		struct listener *l;
		int err;

		if (listeners_have(&s->listeners, &list->v[i], dgram)) {
			open++;
			continue;
		}
		err = open_one(s, &list->v[i], dgram, next, &l);
		if (err == 0)
			open++;
		else if (err == -EADDRINUSE &&
			 blocked_by_removed(s, list, dgram, &list->v[i]))
			nlater += later[i] = true;
		else
			report(&list->v[i], dgram, err, problem, len, &failed);
	}
	if (list->n && !open && !nlater && keep_removed(s, list, dgram))
		return failed;
	if (!(closed = malloc(sizeof(*closed)))) {
		log_warn("reload: out of memory; the old addresses of '%s' stay open",
			 key_of(dgram));
		return failed + nlater;
	}
	close_removed(s, list, dgram, closed);
	for (unsigned i = 0; i < list->n; i++) {
		struct listener *l;
		int err = later[i] ? open_one(s, &list->v[i], dgram, next, &l) : 0;

		if (err < 0)
			report(&list->v[i], dgram, err, problem, len, &failed);
	}
	if (failed > before)
		reopen_closed(s, list, dgram, next, closed);
	free(closed);
	return failed;
}

/* Sockets from systemd are never touched. Returns how many addresses could
 * not be bound; the first is described in problem. */
unsigned reload_reconcile(struct server *s, struct config *next, char *problem,
			  size_t len)
{
	unsigned failed = reconcile_kind(s, &next->listen, false, next, problem, len, 0);

	return reconcile_kind(s, &next->listen_udp, true, next, problem, len, failed);
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
		config_errors_log(&errs);
		log_warn("reload failed; keeping the old configuration");
	} else if (keep_restart_only(&next, &s->cfg) < 0) {
		/* -t cannot know the running values: keep it in STATUS=. */
		snprintf(
		    s->reload_problem, sizeof(s->reload_problem),
		    "'max_pending_bytes' = %u is below the running 'buffer_size' = %u",
		    next.max_pending_bytes, next.buffer_size);
		log_warn("reload failed; keeping the old configuration");
	} else {
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
