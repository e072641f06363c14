/* SPDX-License-Identifier: MIT */
#include "listener.h"
#include "log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
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
		inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
		snprintf(buf, len, "[%s]:%u", host, ntohs(in6->sin6_port));
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
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	memset(l, 0, sizeof(*l));
	l->id = ls->next_id++;
	l->fd = fd;
	if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0)
		sockaddr_text(&ss, l->name, sizeof(l->name));
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
		int fd = SD_LISTEN_FDS_START + i;
		if (sd_is_socket_inet(fd, AF_UNSPEC, SOCK_STREAM, 1, 0) <= 0 ||
		    ls->n == CONFIG_MAX_LISTEN) {
			log_error("socket %d from systemd (%s) is not a listening TCP "
				  "socket, or "
				  "more than %d were passed",
				  fd, names && names[i] ? names[i] : "?",
				  CONFIG_MAX_LISTEN);
			n = -EINVAL;
			break;
		}
		fcntl(fd, F_SETFD, FD_CLOEXEC);
		set_nodelay(fd, cfg->tcp_nodelay);
		struct listener *l = slot_new(ls, fd);
		l->inherited = true;
		log_notice("listening on %s (from systemd, %s)", l->name,
			   names && names[i] ? names[i] : "unnamed");
	}
	for (int i = 0; names && names[i]; i++)
		free(names[i]);
	free(names);
	ls->from_systemd = n > 0;
	return n;
}

static int open_socket(const struct listen_addr *a, const struct config *cfg)
{
	int one = 1, fd, err;

	fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	/* So "[::]:7" and "0.0.0.0:7" can both be listed. */
	if (a->ss.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	set_nodelay(fd, cfg->tcp_nodelay);
	if (bind(fd, (const struct sockaddr *)&a->ss, a->len) < 0 ||
	    listen(fd, cfg->backlog) < 0) {
		err = errno;
		close(fd);
		return -err;
	}
	return fd;
}

struct listener *listeners_add(struct listeners *ls, const struct listen_addr *a,
			       const struct config *cfg)
{
	int fd;

	if (ls->n == CONFIG_MAX_LISTEN) {
		log_error("cannot listen on %s: too many listeners", a->text);
		return NULL;
	}
	fd = open_socket(a, cfg);
	if (fd < 0) {
		log_errno(LOG_ERR, -fd, "cannot listen on %s", a->text);
		return NULL;
	}
	struct listener *l = slot_new(ls, fd);
	l->want = *a;
	log_notice("listening on %s", l->name);
	return l;
}

int listeners_open_config(struct listeners *ls, const struct config *cfg)
{
	for (unsigned i = 0; i < cfg->nlisten; i++) {
		if (!listeners_add(ls, &cfg->listen[i], cfg)) {
			listeners_close_all(ls);
			return -EADDRNOTAVAIL;
		}
	}
	return 0;
}

void listeners_apply(struct listeners *ls, const struct config *cfg)
{
	for (unsigned i = 0; i < ls->n; i++) {
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

bool listen_addr_equal(const struct listen_addr *a, const struct listen_addr *b)
{
	return a->len && a->len == b->len && memcmp(&a->ss, &b->ss, a->len) == 0;
}

bool listen_addr_in(const struct listen_addr *a, const struct config *cfg)
{
	for (unsigned i = 0; i < cfg->nlisten; i++)
		if (listen_addr_equal(a, &cfg->listen[i]))
			return true;
	return false;
}

void listeners_close_all(struct listeners *ls)
{
	while (ls->n)
		listeners_remove(ls, &ls->v[ls->n - 1]);
}
