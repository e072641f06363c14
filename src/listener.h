/* SPDX-License-Identifier: MIT */
/* Listening sockets, TCP and UDP: bound from the config, or handed over by
 * systemd. The set only opens and closes them; the loops serve them. */
#ifndef RINGECHO_LISTENER_H
#define RINGECHO_LISTENER_H

#include "config.h"

#include <stdbool.h>
#include <stdint.h>

/* Room for every address of `listen` and of `listen_udp`. */
#define LISTENERS_MAX (2 * CONFIG_MAX_LISTEN)

struct listener {
	uint64_t id; /* never reused, so a late completion is harmless */
	int fd;
	bool dgram;		       /* UDP; else a listening TCP socket */
	bool inherited;		       /* from systemd: never shutdown() or re-bind it */
	struct listen_addr want;       /* as configured (the reload diff key) */
	struct sockaddr_storage bound; /* as bound, real port included */
	char name[CONFIG_ADDR_TEXT];   /* the same, for messages */
};

struct listeners {
	struct listener v[LISTENERS_MAX];
	unsigned n;
	uint64_t next_id;
	bool from_systemd;
};

void listeners_init(struct listeners *ls);
/* Take sockets from systemd (LISTEN_FDS): listening TCP sockets and UDP
 * sockets. Returns how many (0: none), or -EINVAL after logging which fd
 * is neither. */
int listeners_from_systemd(struct listeners *ls, const struct config *cfg);
/* Take a socket the previous program served (a live upgrade); its options
 * are as that program set them. NULL when the set is full. */
struct listener *listeners_adopt(struct listeners *ls, int fd, bool dgram, bool inherited,
				 const struct listen_addr *want);
/* Bind cfg->listen (TCP) and cfg->listen_udp (UDP). 0, or -errno after
 * logging which address failed and why; nothing stays open then. */
int listeners_open_config(struct listeners *ls, const struct config *cfg);
/* Open one more from a config address: 0 and *out, or -errno (not logged;
 * see listener_explain). */
int listeners_add(struct listeners *ls, const struct listen_addr *a, bool dgram,
		  const struct config *cfg, struct listener **out);
/* "cannot listen on ADDR: REASON", with a hint an admin can act on. */
void listener_explain(char *buf, size_t len, const struct listen_addr *a, bool dgram,
		      int err);
/* Is there a listener of that kind configured as a? */
bool listeners_have(const struct listeners *ls, const struct listen_addr *a, bool dgram);
/* Is there a listener of that kind bound to exactly a (systemd's too)? */
bool listeners_bound_to(const struct listeners *ls, const struct listen_addr *a,
			bool dgram);
/* How many listeners of that kind. */
unsigned listeners_count(const struct listeners *ls, bool dgram);
/* Apply live options (backlog, TCP_NODELAY) to every TCP listener. */
void listeners_apply(struct listeners *ls, const struct config *cfg);
/* Close l's fd and drop it from the set. */
void listeners_remove(struct listeners *ls, struct listener *l);
struct listener *listeners_find(struct listeners *ls, uint64_t id);
void listeners_close_all(struct listeners *ls);

/* Is a (as configured) among list? */
bool listen_addr_in(const struct listen_addr *a, const struct addr_list *list);
/* Do a and b hold the same addresses (in any order)? */
bool addr_list_same(const struct addr_list *a, const struct addr_list *b);

/* "A.B.C.D:PORT" or "[V6]:PORT" for ss. */
void sockaddr_text(const struct sockaddr_storage *ss, char *buf, size_t len);

#endif
