/* SPDX-License-Identifier: MIT */
/* Listen addresses as written in the config and on the command line:
 * A.B.C.D:PORT, [V6]:PORT, [V6%IFACE]:PORT (config.h). */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int parse_port(const char *s, struct sockaddr_storage *ss)
{
	char *end;
	unsigned long port;

	if (*s < '0' || *s > '9')
		return -EINVAL;
	port = strtoul(s, &end, 10);
	if (*end || port > 65535)
		return -EINVAL;
	if (ss->ss_family == AF_INET)
		((struct sockaddr_in *)ss)->sin_port = htons(port);
	else
		((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
	return 0;
}

/* "%scope" of a link-local IPv6 address: an interface name or index. */
static int parse_scope(const char *scope, struct sockaddr_in6 *in6)
{
	char *end, name[IF_NAMESIZE];
	unsigned long idx = strtoul(scope, &end, 10);

	if (!*scope)
		return -EINVAL;
	if (*end)
		idx = if_nametoindex(scope);
	else if (idx > UINT32_MAX || !if_indextoname((unsigned)idx, name))
		idx = 0;
	if (idx == 0 || idx > UINT32_MAX)
		return -ENODEV;
	in6->sin6_scope_id = (uint32_t)idx;
	return 0;
}

static int parse_host(const char *host, size_t len, struct listen_addr *out)
{
	char buf[INET6_ADDRSTRLEN + IF_NAMESIZE + 1], *scope;
	struct sockaddr_in *in = (struct sockaddr_in *)&out->ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&out->ss;
	bool v6 = len >= 2 && host[0] == '[' && host[len - 1] == ']';

	if (v6) {
		host++;
		len -= 2;
	}
	if (len == 0 || len >= sizeof(buf))
		return -EINVAL;
	memcpy(buf, host, len);
	buf[len] = '\0';
	if (v6 && (scope = strchr(buf, '%')))
		*scope++ = '\0';
	if (v6 && inet_pton(AF_INET6, buf, &in6->sin6_addr) == 1) {
		/* An IPv6-only socket cannot bind a v4-mapped address. */
		if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr))
			return -EAFNOSUPPORT;
		in6->sin6_family = AF_INET6;
		out->len = sizeof(*in6);
		/* Only a link-local address has a link to name: elsewhere the
		 * kernel ignores a scope, which would hide a clash. */
		if (scope && !IN6_IS_ADDR_LINKLOCAL(&in6->sin6_addr) &&
		    !IN6_IS_ADDR_MC_LINKLOCAL(&in6->sin6_addr))
			return -EBADSLT;
		if (scope)
			return parse_scope(scope, in6);
		/* The kernel cannot tell which link is meant. */
		return IN6_IS_ADDR_LINKLOCAL(&in6->sin6_addr) ? -EDESTADDRREQ : 0;
	}
	if (!v6 && inet_pton(AF_INET, buf, &in->sin_addr) == 1) {
		in->sin_family = AF_INET;
		out->len = sizeof(*in);
		return 0;
	}
	return -EINVAL;
}

int config_parse_addr(const char *text, struct listen_addr *out)
{
	const char *colon = strrchr(text, ':');
	struct listen_addr a;
	int ret;

	memset(&a, 0, sizeof(a));
	if (!colon || strlen(text) >= sizeof(a.text))
		return -EINVAL;
	if ((ret = parse_host(text, colon - text, &a)) < 0)
		return ret;
	if (parse_port(colon + 1, &a.ss) < 0)
		return -EINVAL;
	strcpy(a.text, text);
	*out = a;
	return 0;
}

const char *config_addr_error(int err)
{
	switch (err) {
	case -EAFNOSUPPORT:
		return "an IPv4-mapped IPv6 address; write the IPv4 address as "
		       "A.B.C.D:PORT";
	case -ENODEV:
		return "no such network interface after '%'";
	case -EBADSLT:
		return "only a link-local address (fe80::/10) takes %IFACE";
	case -EDESTADDRREQ:
		return "a link-local address needs its interface: [fe80::...%IFACE]:PORT";
	default:
		return "expected A.B.C.D:PORT, [V6]:PORT or [V6%IFACE]:PORT";
	}
}

unsigned listen_addr_port(const struct listen_addr *a)
{
	if (a->ss.ss_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)&a->ss)->sin6_port);
	return ntohs(((const struct sockaddr_in *)&a->ss)->sin_port);
}

bool listen_addr_equal(const struct listen_addr *a, const struct listen_addr *b)
{
	return a->len && a->len == b->len && memcmp(&a->ss, &b->ss, a->len) == 0;
}

static bool is_wildcard(const struct listen_addr *a)
{
	if (a->ss.ss_family == AF_INET6)
		return IN6_IS_ADDR_UNSPECIFIED(
		    &((const struct sockaddr_in6 *)&a->ss)->sin6_addr);
	return ((const struct sockaddr_in *)&a->ss)->sin_addr.s_addr == htonl(INADDR_ANY);
}

static bool is_multicast(const struct listen_addr *a)
{
	if (a->ss.ss_family == AF_INET6)
		return IN6_IS_ADDR_MULTICAST(
		    &((const struct sockaddr_in6 *)&a->ss)->sin6_addr);
	return IN_MULTICAST(ntohl(((const struct sockaddr_in *)&a->ss)->sin_addr.s_addr));
}

int config_addr_clash(const struct listen_addr *v, unsigned i, bool dgram, char *why,
		      size_t len)
{
	const struct listen_addr *a = &v[i];

	if (!dgram && is_multicast(a)) {
		snprintf(why, len,
			 "is a multicast address, which cannot take TCP "
			 "connections");
		return -EINVAL;
	}
	if (!a->len)
		return 0; /* not an address: said already */
	for (unsigned j = 0; j < i; j++) {
		const struct listen_addr *b = &v[j];

		/* Port 0 is a new free port each time: no clash. */
		if (b->ss.ss_family != a->ss.ss_family || listen_addr_port(a) == 0 ||
		    listen_addr_port(a) != listen_addr_port(b))
			continue;
		if (listen_addr_equal(a, b)) {
			snprintf(why, len, "is listed twice");
			return -EINVAL;
		}
		if (is_wildcard(a) || is_wildcard(b)) {
			snprintf(why, len,
				 "and '%s' cannot both be listened on: the wildcard "
				 "address takes port %u on every address",
				 b->text, listen_addr_port(a));
			return -EINVAL;
		}
	}
	return 0;
}
