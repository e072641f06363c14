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
	bool inherited;		       /* from systemd: never shutdown() or re-bind it */
	bool armed;		       /* a multishot accept is in the kernel */
	struct listen_addr want;       /* as configured (the reload diff key) */
	struct sockaddr_storage bound; /* as bound, real port included */
	char name[CONFIG_ADDR_TEXT];   /* the same, for messages */
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
 * failed and why; nothing stays open then. */
int listeners_open_config(struct listeners *ls, const struct config *cfg);
/* Open one more from a config address: 0 and *out, or -errno (not logged;
 * see listener_explain). */
int listeners_add(struct listeners *ls, const struct listen_addr *a,
		  const struct config *cfg, struct listener **out);
/* "cannot listen on ADDR: REASON", with a hint an admin can act on. */
void listener_explain(char *buf, size_t len, const struct listen_addr *a, int err);
/* Is there a listener configured as a? */
bool listeners_have(const struct listeners *ls, const struct listen_addr *a);
/* Is there a listener bound to exactly a (systemd's sockets included)? */
bool listeners_bound_to(const struct listeners *ls, const struct listen_addr *a);
/* Apply live options (backlog, TCP_NODELAY) to every listener. */
void listeners_apply(struct listeners *ls, const struct config *cfg);
/* Close l's fd and drop it from the set. */
void listeners_remove(struct listeners *ls, struct listener *l);
struct listener *listeners_find(struct listeners *ls, uint64_t id);
/* Same configured address (family, host, port)? */
bool listen_addr_equal(const struct listen_addr *a, const struct listen_addr *b);
/* Is a (as configured) among cfg->listen? */
bool listen_addr_in(const struct listen_addr *a, const struct config *cfg);
/* Do a and b list the same addresses (in any order)? */
bool listen_same(const struct config *a, const struct config *b);
void listeners_close_all(struct listeners *ls);

/* "A.B.C.D:PORT" or "[V6]:PORT" for ss. */
void sockaddr_text(const struct sockaddr_storage *ss, char *buf, size_t len);

#endif
