/* SPDX-License-Identifier: MIT */
/* Live upgrade: SIGUSR2 re-executes the daemon in place (the same PID) and
 * hands every listener and every connection, with the echo it still owes,
 * to the new program, which goes on serving them.
 *
 * The old program (upgrade.c): the new program file is tried first
 * (upcheck.h), then every loop stops accepting and receiving, lets its
 * sends finish (upgrade_timeout_ms at most) and writes its connections;
 * loop 0 writes the state (upstate.h) into a memfd, clears close-on-exec on
 * exactly the sockets it hands over, and execve()s. Should that fail,
 * everything goes back to serving as before.
 *
 * The new program (restore.c): finds the memfd in RINGECHO_UPGRADE_STATE,
 * takes the listeners and connections back, each connection's unsent echo
 * going out first, and serves. A state it cannot read costs no client: each
 * gets the bytes it is owed, if they can be found, then a clean EOF. */
#ifndef RINGECHO_UPGRADE_H
#define RINGECHO_UPGRADE_H

#include "config.h"
#include "stats.h"
#include "upcheck.h"
#include "upstate.h"

#include <limits.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct server;
struct worker;

#define UPGRADE_ENV	    "RINGECHO_UPGRADE_STATE"
#define UPGRADE_VERSION_LEN 32
/* No fd handed over is this high (RLIMIT_NOFILE is lower everywhere). */
#define UPGRADE_FDS_MAX (1 << 24)

/* The record bodies of format version 1 (UPSTATE_VERSION). */
struct upbody_program {
	char version[UPGRADE_VERSION_LEN];
	uint64_t started_ms; /* the handing over began: the pause clients see */
	uint64_t exec_ms;    /* ... and the state was written */
	uint64_t upgrades;   /* this one included */
	uint8_t stop_after;
	uint8_t pad[7];
};

struct upbody_listener {
	uint64_t id;
	uint8_t dgram, inherited, pad[6];
	char want[CONFIG_ADDR_TEXT]; /* as configured; "" for systemd's */
};

enum { UPC_READ_EOF = 1, UPC_CUT = 2, UPC_WR_SHUT = 4 };

struct upbody_conn {
	uint64_t id;
	uint16_t flags; /* UPC_* */
	uint8_t cut;	/* enum conn_cut */
	uint8_t peer_valid;
	uint8_t pad[4];
	uint64_t idle_ms, recv_idle_ms;
	uint8_t peer[16]; /* the client's address, IPv4 v4-mapped */
};

enum upgrade_phase {
	UPGRADE_NONE,
	UPGRADE_CHECKING,     /* the new program file is tried (upcheck.h) */
	UPGRADE_HANDING_OVER, /* the loops stop, the state is written, exec */
};

struct upgrade {
	char exe[PATH_MAX]; /* the program file, as resolved at start-up */
	char **argv;	    /* as started */
	const char *version;
	enum upgrade_phase phase;
	atomic_uint quiesce_acks; /* loops that stopped accepting */
	struct upcheck check;
	bool stop_after;	     /* SIGTERM came while handing over */
	bool reload_after;	     /* SIGHUP came: reload should it fail */
	uint64_t started_ms;	     /* CLOCK_MONOTONIC: it goes on across the exec */
	uint64_t quiesce_started_ms; /* the program file checked */
	uint64_t count;		     /* upgrades so far, this one not counted */
	/* RINGECHO_TEST_UPGRADE_STATE, for the tests of what can go wrong:
	 * version, damaged, unreadable (a state the new program cannot use),
	 * noexec (the exec fails), hold (the sends are held to the deadline). */
	char test_hook[16];
};

/* Resolve the program file now (a package upgrade may replace it later). */
void upgrade_init(struct upgrade *u, char **argv, const char *version);
/* SIGUSR2: the new program file is tried first. */
void upgrade_begin(struct server *s, struct worker *w0);
/* SIGCHLD, and loop 0's tick: has the try ended? Then hand over, or not. */
void upgrade_on_child(struct server *s, struct worker *w0);
/* A shutdown while the file is tried: stop trying. False when the handing
 * over has begun (then upgrade_stop_after()). */
bool upgrade_abandon(struct server *s);
/* Loop 0, after each batch and tick: every loop ready? then the exec. */
void upgrade_check(struct server *s, struct worker *w0);
/* A SIGTERM in the middle: the new program stops once it has everything. */
void upgrade_stop_after(struct server *s);
/* A SIGHUP in the middle: should the upgrade fail, this program reloads. */
void upgrade_reload_after(struct server *s);

/* Each loop: stop accepting and receiving (MAIL_QUIESCE). */
void upgrade_quiesce(struct worker *w, uint64_t deadline_ms);
/* Each loop, after each batch and tick while quiescing. */
void upgrade_progress(struct worker *w);
/* Each loop, each tick: while quiescing, receives not cancelled yet. */
void upgrade_tick(struct worker *w);
/* Each loop: the exec failed, serve on (MAIL_RESUME). */
void upgrade_resume(struct worker *w);

/* What the new program took over from the old one. */
struct upgrade_state {
	char *data;
	size_t len;
	enum upstate_verdict verdict;
	const char *why;
	struct uprec program, config, counters; /* body NULL: not there */
	struct uprec *listeners, *conns;
	unsigned nlisteners, nconns, cap_listeners, cap_conns;
	uint64_t taken_ms; /* when the new program had read it */
	uint8_t *taken;	   /* a bit per fd taken */
	size_t taken_len;
	unsigned bad_fds; /* records whose fd is no socket of ours */
	unsigned strays;  /* our sockets no record named */
};

/* The state the old program left, if any: 1, 0 (none), -1 (it could not
 * even be read; logged). The environment variable is removed. */
int restore_take(struct upgrade_state *st);
/* The settings the old program ran with (for a file that does not load). */
int restore_config(const struct upgrade_state *st, struct config *cfg);
/* Listen on what the old program listened on, and what the config adds;
 * 0 even with no listener at all (logged): the connections are served. */
int restore_listeners(struct server *s, struct upgrade_state *st);
/* Give each connection to a loop, then say what happened. */
void restore_connections(struct server *s, struct upgrade_state *st);
/* A loop takes its share (MAIL_RESTORE). */
void restore_adopt(struct worker *w, const struct uprec *conns, unsigned n);
/* The new program could not start after taking the state: each connection
 * still gets the echo it is owed, then a clean EOF, within timeout_ms
 * (shutdown_timeout_ms: it is a graceful stop) for all of them, before the
 * process ends (logged). */
void restore_farewell(struct upgrade_state *st, unsigned timeout_ms);
void restore_free(struct upgrade_state *st);

#endif
