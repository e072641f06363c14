/* SPDX-License-Identifier: MIT */
#include "listener.h"
#include "log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

void listeners_init(struct listeners *ls)
{
	memset(ls, 0, sizeof(*ls));
	ls->next_id = 1;
}

void sockaddr_text(const struct sockaddr_storage *ss, char *buf, size_t len)
{
	char host[INET6_ADDRSTRLEN] = "?";

	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
		char scope[IF_NAMESIZE + 1] = "";
		inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
		if (in6->sin6_scope_id && if_indextoname(in6->sin6_scope_id, scope + 1))
			scope[0] = '%';
		snprintf(buf, len, "[%s%s]:%u", host, scope, ntohs(in6->sin6_port));
	} else {
		const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
		inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
		snprintf(buf, len, "%s:%u", host, ntohs(in->sin_port));
	}
}

static void set_nodelay(int fd, bool on)
{
	int v = on;

	/* Accepted sockets inherit TCP_NODELAY from the listener, which
	 * saves a setsockopt per connection. */
	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v, sizeof(v)) < 0)
		log_errno(LOG_WARNING, errno, "setsockopt(TCP_NODELAY)");
}

static struct listener *slot_new(struct listeners *ls, int fd)
{
	struct listener *l = &ls->v[ls->n++];
	socklen_t len = sizeof(l->bound);

	memset(l, 0, sizeof(*l));
	l->id = ls->next_id++;
	l->fd = fd;
	if (getsockname(fd, (struct sockaddr *)&l->bound, &len) == 0)
		sockaddr_text(&l->bound, l->name, sizeof(l->name));
	return l;
}

/* Datagram sockets are asked for the address each datagram was sent to,
 * so that the reply leaves from it (a wildcard socket on a host with several
 * addresses). */
static int want_pktinfo(int fd, int family)
{
	int one = 1;

	if (family == AF_INET6)
		return setsockopt(fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, &one, sizeof(one));
	return setsockopt(fd, IPPROTO_IP, IP_PKTINFO, &one, sizeof(one));
}

/* A systemd socket ringechod can serve: a listening TCP socket, or UDP. */
static int systemd_kind(int fd, bool *dgram)
{
	if (sd_is_socket_inet(fd, AF_UNSPEC, SOCK_STREAM, 1, 0) > 0) {
		*dgram = false;
		return 0;
	}
	if (sd_is_socket_inet(fd, AF_UNSPEC, SOCK_DGRAM, -1, 0) > 0) {
		*dgram = true;
		return 0;
	}
	return -EINVAL;
}

static int adopt_systemd(struct listeners *ls, int fd, const char *name,
			 const struct config *cfg)
{
	struct listener *l;
	bool dgram;

	if (systemd_kind(fd, &dgram) < 0 || ls->n == LISTENERS_MAX) {
		log_error(
		    "socket %d from systemd (%s) is neither a listening TCP socket nor "
		    "a UDP socket, or more than %d were passed",
		    fd, name, LISTENERS_MAX);
		return -EINVAL;
	}
	fcntl(fd, F_SETFD, FD_CLOEXEC);
	l = slot_new(ls, fd);
	l->inherited = true;
	l->dgram = dgram;
	if (dgram && want_pktinfo(fd, l->bound.ss_family) < 0)
		log_errno(LOG_WARNING, errno, "%s: cannot ask for datagrams' addresses",
			  l->name);
	if (!dgram)
		set_nodelay(fd, cfg->tcp_nodelay);
	log_notice("listening on %s%s (from systemd, %s)", dgram ? "udp " : "", l->name,
		   name);
	return 0;
}

struct listener *listeners_adopt(struct listeners *ls, int fd, bool dgram, bool inherited,
				 const struct listen_addr *want)
{
	struct listener *l;

	if (ls->n == LISTENERS_MAX)
		return NULL;
	l = slot_new(ls, fd);
	l->dgram = dgram;
	l->inherited = inherited;
	if (want)
		l->want = *want;
	log_info("listening on %s%s (carried over)", dgram ? "udp " : "", l->name);
	return l;
}

int listeners_from_systemd(struct listeners *ls, const struct config *cfg)
{
	char **names = NULL;
	int n = sd_listen_fds_with_names(1, &names);

	if (n <= 0) {
		if (n < 0)
			log_errno(LOG_WARNING, -n,
				  "cannot read the sockets systemd passed");
		return 0;
	}
	for (int i = 0; i < n; i++) {
		if (adopt_systemd(ls, SD_LISTEN_FDS_START + i,
				  names && names[i] ? names[i] : "unnamed", cfg) < 0) {
			n = -EINVAL;
			break;
		}
	}
	for (int i = 0; names && names[i]; i++)
		free(names[i]);
	free(names);
	ls->from_systemd = n > 0;
	return n;
}

static int open_socket(const struct listen_addr *a, bool dgram, const struct config *cfg)
{
	int one = 1, fd, err = 0;

	fd =
	    socket(a->ss.ss_family, (dgram ? SOCK_DGRAM : SOCK_STREAM) | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (!dgram)
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	/* So "[::]:7" and "0.0.0.0:7" can both be listed. */
	if (a->ss.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (dgram && want_pktinfo(fd, a->ss.ss_family) < 0)
		err = errno;
	if (!dgram)
		set_nodelay(fd, cfg->tcp_nodelay);
	if (!err && bind(fd, (const struct sockaddr *)&a->ss, a->len) < 0)
		err = errno;
	if (!err && !dgram && listen(fd, cfg->backlog) < 0)
		err = errno;
	if (err) {
		close(fd);
		return -err;
	}
	return fd;
}

int listeners_add(struct listeners *ls, const struct listen_addr *a, bool dgram,
		  const struct config *cfg, struct listener **out)
{
	struct listener *l;
	int fd;

	if (ls->n == LISTENERS_MAX)
		return -EMFILE;
	fd = open_socket(a, dgram, cfg);
	if (fd < 0)
		return fd;
	l = slot_new(ls, fd);
	l->want = *a;
	l->dgram = dgram;
	log_notice("listening on %s%s", dgram ? "udp " : "", l->name);
	*out = l;
	return 0;
}

void listener_explain(char *buf, size_t len, const struct listen_addr *a, bool dgram,
		      int err)
{
	const char *hint = "";

	if (err == -EACCES && listen_addr_port(a) < 1024)
		hint = " (a port below 1024 needs a privilege ringechod.service does not "
		       "have: use ringechod.socket, whose sockets systemd binds)";
	else if (err == -EADDRINUSE)
		hint = " (another program, or another ringechod, is listening there)";
	else if (err == -EADDRNOTAVAIL)
		hint = " (no interface of this host has that address)";
	else if (err == -EMFILE)
		hint = " (too many listeners)";
	snprintf(buf, len, "cannot listen on %s%s: %s%s", dgram ? "udp " : "", a->text,
		 err == -EMFILE ? "at most 64 addresses" : strerror(-err), hint);
}

static int open_list(struct listeners *ls, const struct addr_list *list, bool dgram,
		     const struct config *cfg)
{
	struct listener *l;
	char why[256];

	for (unsigned i = 0; i < list->n; i++) {
		int err = listeners_add(ls, &list->v[i], dgram, cfg, &l);
		if (err < 0) {
			listener_explain(why, sizeof(why), &list->v[i], dgram, err);
			log_error("%s", why);
			return err;
		}
	}
	return 0;
}

int listeners_open_config(struct listeners *ls, const struct config *cfg)
{
	int err = open_list(ls, &cfg->listen, false, cfg);

	if (!err)
		err = open_list(ls, &cfg->listen_udp, true, cfg);
	if (err)
		listeners_close_all(ls);
	return err;
}

void listeners_apply(struct listeners *ls, const struct config *cfg)
{
	for (unsigned i = 0; i < ls->n; i++) {
		if (ls->v[i].dgram)
			continue;
		set_nodelay(ls->v[i].fd, cfg->tcp_nodelay);
		/* listen() again only updates the backlog; systemd owns its own. */
		if (!ls->v[i].inherited && listen(ls->v[i].fd, cfg->backlog) < 0)
			log_errno(LOG_WARNING, errno, "listen(%s)", ls->v[i].name);
	}
}

void listeners_remove(struct listeners *ls, struct listener *l)
{
	close(l->fd);
	*l = ls->v[--ls->n];
}

struct listener *listeners_find(struct listeners *ls, uint64_t id)
{
	for (unsigned i = 0; i < ls->n; i++)
		if (ls->v[i].id == id)
			return &ls->v[i];
	return NULL;
}

bool listeners_have(const struct listeners *ls, const struct listen_addr *a, bool dgram)
{
	for (unsigned i = 0; i < ls->n; i++)
		if (ls->v[i].dgram == dgram && listen_addr_equal(&ls->v[i].want, a))
			return true;
	return false;
}

bool listeners_bound_to(const struct listeners *ls, const struct listen_addr *a,
			bool dgram)
{
	for (unsigned i = 0; i < ls->n; i++)
		if (ls->v[i].dgram == dgram &&
		    memcmp(&ls->v[i].bound, &a->ss, a->len) == 0)
			return true;
	return false;
}

unsigned listeners_count(const struct listeners *ls, bool dgram)
{
	unsigned n = 0;

	for (unsigned i = 0; i < ls->n; i++)
		n += ls->v[i].dgram == dgram;
	return n;
}

bool addr_list_same(const struct addr_list *a, const struct addr_list *b)
{
	if (a->n != b->n)
		return false;
	for (unsigned i = 0; i < a->n; i++)
		if (!listen_addr_in(&a->v[i], b))
			return false;
	return true;
}

bool listen_addr_in(const struct listen_addr *a, const struct addr_list *list)
{
	for (unsigned i = 0; i < list->n; i++)
		if (listen_addr_equal(a, &list->v[i]))
			return true;
	return false;
}

void listeners_close_all(struct listeners *ls)
{
	while (ls->n)
		listeners_remove(ls, &ls->v[ls->n - 1]);
}
