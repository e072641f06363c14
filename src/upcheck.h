/* SPDX-License-Identifier: MIT */
/* Before a live upgrade puts any connection at stake, the new program file
 * is tried twice: "EXE --version" must answer "ringechod VERSION", and
 * "EXE ARGS... -t" (the daemon's own options, its config checked) must
 * accept the options, or the new program would exit at once with a usage
 * error and take every connection with it.
 *
 * Each try is a child process whose exit the loop learns from SIGCHLD on
 * its signalfd (lifecycle.c), so the loop serves on while it runs; one
 * that has not exited by its deadline is killed. */
#ifndef RINGECHO_UPCHECK_H
#define RINGECHO_UPCHECK_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* How long each try may take. */
#define UPCHECK_TIMEOUT_MS  5000
#define UPCHECK_VERSION_LEN 32

enum upcheck_result {
	UPCHECK_RUNNING,
	UPCHECK_PASSED, /* version holds what the new program said */
	UPCHECK_FAILED, /* why says why */
};

struct upcheck {
	const char *exe;
	char **argv;
	pid_t pid; /* the try running, 0 when none */
	int out;   /* its standard output */
	int step;  /* 0: --version, 1: the options */
	uint64_t deadline_ms;
	char version[UPCHECK_VERSION_LEN];
	int config_status; /* the second try's exit: 78 when the file does not load */
};

/* Start with "--version". UPCHECK_RUNNING, or UPCHECK_FAILED and why. */
enum upcheck_result upcheck_start(struct upcheck *c, const char *exe, char **argv,
				  uint64_t now_ms, char *why, size_t len);
/* After a SIGCHLD, and at each tick (the deadline): where the check is. */
enum upcheck_result upcheck_poll(struct upcheck *c, uint64_t now_ms, char *why,
				 size_t len);
/* Stop a try that is running (a shutdown came first). */
void upcheck_abort(struct upcheck *c);

#endif
