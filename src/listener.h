/* SPDX-License-Identifier: MIT */
/* Listening sockets: bound from the config, or handed over by systemd. */
#ifndef RINGECHO_LISTENER_H
#define RINGECHO_LISTENER_H

#include "config.h"

#include <stdbool.h>
#include <stdint.h>

struct listener {
	uint64_t id; /* never reused, so a late accept completion is harmless */
	int fd;
	bool inherited;		     /* from systemd: never shutdown() or re-bind it */
	bool armed;		     /* a multishot accept is in the kernel */
	struct listen_addr want;     /* as configured (the reload diff key) */
	char name[CONFIG_ADDR_TEXT]; /* as bound, real port included */
};

struct listeners {
	struct listener v[CONFIG_MAX_LISTEN];
	unsigned n;
	uint64_t next_id;
	bool from_systemd;
};

void listeners_init(struct listeners *ls);
/* Take sockets from systemd (LISTEN_FDS). Returns how many (0: none), or
 * -EINVAL after logging which fd is not a listening TCP socket. */
int listeners_from_systemd(struct listeners *ls, const struct config *cfg);
/* Bind and listen on cfg->listen. 0, or -errno after logging which address
 * failed; nothing stays open then. */
int listeners_open_config(struct listeners *ls, const struct config *cfg);
/* Open one more from a config address. The new listener, or NULL (logged). */
struct listener *listeners_add(struct listeners *ls, const struct listen_addr *a,
			       const struct config *cfg);
/* Apply live options (backlog, TCP_NODELAY) to every listener. */
void listeners_apply(struct listeners *ls, const struct config *cfg);
/* Close l's fd and drop it from the set. */
void listeners_remove(struct listeners *ls, struct listener *l);
struct listener *listeners_find(struct listeners *ls, uint64_t id);
/* Same configured address (family, host, port)? */
bool listen_addr_equal(const struct listen_addr *a, const struct listen_addr *b);
/* Is a (as configured) among cfg->listen? */
bool listen_addr_in(const struct listen_addr *a, const struct config *cfg);
void listeners_close_all(struct listeners *ls);

/* "A.B.C.D:PORT" or "[V6]:PORT" for ss. */
void sockaddr_text(const struct sockaddr_storage *ss, char *buf, size_t len);

#endif
