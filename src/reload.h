/* SPDX-License-Identifier: MIT */
/* SIGHUP: re-read the configuration and apply what can change live. */
#ifndef RINGECHO_RELOAD_H
#define RINGECHO_RELOAD_H

#include <stddef.h>

struct server;
struct config;

/* Re-read the file (with the command line on top, as at start-up). A file
 * that does not load changes nothing; one that loads is applied, and what
 * could not be applied (an address that cannot be bound) is logged and
 * kept in STATUS= until a reload applies in full. */
void reload_apply(struct server *s);

/* Warn when the configuration sets `listen` to other addresses than systemd
 * handed over (systemd's sockets are served; the file's are not bound). */
void reload_check_systemd_listen(const struct server *s, const struct config *cfg);

/* Open what next lists and is not open yet, close what it no longer lists,
 * keep the rest (and their connections); systemd's sockets are never
 * touched. When not one address of a kind could be opened, the ones just
 * closed are opened again and next's list becomes theirs, so that a bad
 * address never leaves the daemon listening nowhere. Returns how many
 * addresses could not be bound; the first is described in problem, each is
 * logged. */
unsigned reload_reconcile(struct server *s, struct config *next, char *problem,
			  size_t len);

#endif
