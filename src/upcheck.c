/* SPDX-License-Identifier: MIT */
#include "upcheck.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* The options of the second try: the daemon's, then -t. */
#define UPCHECK_ARGS_MAX 256

extern char **environ;

/* Run exe with args, its standard output into c->out. 0 or an errno. */
static int spawn(struct upcheck *c, char **args, uint64_t now_ms)
{
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	sigset_t mask;
	int pipefd[2], err;

	if (pipe2(pipefd, O_CLOEXEC | O_NONBLOCK) < 0)
		return errno;
	/* A group of its own, so that what it started goes with it (a
	 * script's `sleep &`): upcheck_abort() kills the group. */
	posix_spawnattr_init(&attr);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK);
	posix_spawnattr_setpgroup(&attr, 0);
	/* That group is not the terminal's foreground one: with `stty tostop`
	 * its first error message would stop it (SIGTTOU), blocked here. */
	pthread_sigmask(SIG_BLOCK, NULL, &mask);
	sigaddset(&mask, SIGTTOU);
	posix_spawnattr_setsigmask(&attr, &mask);
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, pipefd[1], STDOUT_FILENO);
	/* Connections are not close-on-exec (accept.c): none goes to it. */
	posix_spawn_file_actions_addclosefrom_np(&fa, STDERR_FILENO + 1);
	/* It keeps our blocked signals: `systemctl kill -s USR2 ringechod`
	 * signals every process of the unit, this one too if it has started
	 * by then, and SIGUSR2's default would end it. A stop kills it
	 * through upcheck_abort(). */
	err = posix_spawn(&c->pid, c->exe, &fa, &attr, args, environ);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&attr);
	close(pipefd[1]);
	if (err) {
		close(pipefd[0]);
		c->pid = 0;
		return err;
	}
	c->out = pipefd[0];
	c->deadline_ms = now_ms + UPCHECK_TIMEOUT_MS;
	return 0;
}

enum upcheck_result upcheck_start(struct upcheck *c, const char *exe, char **argv,
				  uint64_t now_ms, char *why, size_t len)
{
	char *args[] = {(char *)exe, "--version", NULL};
	int err;

	memset(c, 0, sizeof(*c));
	c->exe = exe;
	c->argv = argv;
	c->out = -1;
	if ((err = spawn(c, args, now_ms))) {
		snprintf(why, len, "cannot run %s: %s", exe, strerror(err));
		return UPCHECK_FAILED;
	}
	return UPCHECK_RUNNING;
}

/* The second try: the daemon's own options, and -t. */
static enum upcheck_result check_options(struct upcheck *c, uint64_t now_ms, char *why,
					 size_t len)
{
	char *args[UPCHECK_ARGS_MAX + 2];
	unsigned n = 0;
	int err;

	args[n++] = (char *)c->exe;
	for (char **a = c->argv + 1; *a && n < UPCHECK_ARGS_MAX; a++)
		args[n++] = *a;
	args[n++] = "-t";
	args[n] = NULL;
	c->step = 1;
	if ((err = spawn(c, args, now_ms))) {
		snprintf(why, len, "cannot run %s: %s", c->exe, strerror(err));
		return UPCHECK_FAILED;
	}
	return UPCHECK_RUNNING;
}

/* What the try wrote (it has exited: all of it is in the pipe). */
static void read_answer(struct upcheck *c, char *buf, size_t len)
{
	ssize_t n = read(c->out, buf, len - 1);

	buf[n > 0 ? n : 0] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	close(c->out);
	c->out = -1;
}

enum upcheck_result upcheck_poll(struct upcheck *c, uint64_t now_ms, char *why,
				 size_t len)
{
	const char *prefix = "ringechod ";
	siginfo_t info = {0};
	char answer[128];
	int status = 0;
	pid_t got = -1;

	if (!c->pid)
		return UPCHECK_FAILED;
	/* Looked at, not reaped: while it is a zombie its group id cannot
	 * have gone to another process group. */
	if (waitid(P_PID, (id_t)c->pid, &info, WEXITED | WNOHANG | WNOWAIT) == 0) {
		if (!info.si_pid && now_ms < c->deadline_ms)
			return UPCHECK_RUNNING;
		if (!info.si_pid) {
			upcheck_abort(c);
			snprintf(why, len, "%s did not answer within %d ms", c->exe,
				 UPCHECK_TIMEOUT_MS);
			return UPCHECK_FAILED;
		}
		kill(-c->pid, SIGKILL); /* anything it left behind */
		got = waitpid(c->pid, &status, 0);
	}
	c->pid = 0;
	read_answer(c, answer, sizeof(answer));
	if (c->step == 0) {
		if (got < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0 ||
		    strncmp(answer, prefix, strlen(prefix)) != 0) {
			snprintf(why, len,
				 "%s --version did not answer \"ringechod VERSION\"",
				 c->exe);
			return UPCHECK_FAILED;
		}
		snprintf(c->version, sizeof(c->version), "%.*s",
			 (int)sizeof(c->version) - 1, answer + strlen(prefix));
		return check_options(c, now_ms, why, len);
	}
	/* 78: the file does not load in the new program, which will keep the
	 * old program's settings; anything else but 0 (64: an option it does
	 * not know) would end it at once. */
	c->config_status = got > 0 && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
	if (c->config_status == 0 || c->config_status == 78)
		return UPCHECK_PASSED;
	snprintf(why, len, "ringechod %s does not take this daemon's options (-t: %s %d)",
		 c->version, c->config_status < 0 ? "killed by signal" : "exit",
		 c->config_status < 0 && got > 0 && WIFSIGNALED(status)
		     ? WTERMSIG(status)
		     : c->config_status);
	return UPCHECK_FAILED;
}

void upcheck_abort(struct upcheck *c)
{
	if (c->pid) {
		kill(-c->pid, SIGKILL); /* it and what it started */
		waitpid(c->pid, NULL, 0);
		c->pid = 0;
	}
	if (c->out >= 0)
		close(c->out);
	c->out = -1;
}
