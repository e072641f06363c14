/* SPDX-License-Identifier: MIT */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Module-private: the level is process-wide by nature (stderr is). */
static struct {
	int level;
	int tty; /* -1 unknown, 0 no, 1 yes */
} log_state = {LOG_INFO, -1};

static const char *const level_names[] = {
    [LOG_ERR] = "error", [LOG_WARNING] = "warning", [LOG_NOTICE] = "notice",
    [LOG_INFO] = "info", [LOG_DEBUG] = "debug",
};

void log_set_level(int level)
{
	log_state.level = level;
}

int log_get_level(void)
{
	return log_state.level;
}

int log_level_parse(const char *name)
{
	for (int i = LOG_ERR; i <= LOG_DEBUG; i++)
		if (level_names[i] && strcmp(level_names[i], name) == 0)
			return i;
	return -1;
}

const char *log_level_name(int level)
{
	if (level < LOG_ERR || level > LOG_DEBUG || !level_names[level])
		return "unknown";
	return level_names[level];
}

static void log_vmsg(int prio, int err, const char *fmt, va_list ap)
{
	char line[1024];
	int n;

	if (log_state.tty < 0)
		log_state.tty = isatty(STDERR_FILENO);
	if (log_state.tty)
		n = snprintf(line, sizeof(line), "ringechod: %s: ", log_level_name(prio));
	else
		n = snprintf(line, sizeof(line), "<%d>", prio);
	n += vsnprintf(line + n, sizeof(line) - n, fmt, ap);
	if (err && n < (int)sizeof(line))
		n += snprintf(line + n, sizeof(line) - n, ": %s", strerror(err));
	if (n >= (int)sizeof(line) - 1)
		n = sizeof(line) - 2;
	line[n++] = '\n';
	/* One write per line so lines from a crash-restart never interleave. */
	if (write(STDERR_FILENO, line, n) < 0)
		return;
}

void log_msg(int prio, const char *fmt, ...)
{
	va_list ap;
	int saved = errno;

	if (prio > log_state.level)
		return;
	va_start(ap, fmt);
	log_vmsg(prio, 0, fmt, ap);
	va_end(ap);
	errno = saved;
}

void log_errno(int prio, int err, const char *fmt, ...)
{
	va_list ap;
	int saved = errno;

	if (prio > log_state.level)
		return;
	va_start(ap, fmt);
	log_vmsg(prio, err, fmt, ap);
	va_end(ap);
	errno = saved;
}

int ratelimit_allow(struct ratelimit *rl, uint64_t now_ms, unsigned *suppressed)
{
	if (rl->last_ms && now_ms - rl->last_ms < rl->interval_ms) {
		rl->suppressed++;
		return 0;
	}
	*suppressed = rl->suppressed;
	rl->suppressed = 0;
	rl->last_ms = now_ms ? now_ms : 1;
	return 1;
}
