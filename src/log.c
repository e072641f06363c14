/* SPDX-License-Identifier: MIT */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum log_sink { SINK_UNKNOWN, SINK_JOURNAL, SINK_PLAIN };

/* Module-private: the level and the sink are process-wide by nature
 * (stderr is). Atomic: a reload on one loop changes the level others read. */
static struct {
	atomic_int level;
	atomic_int sink;
} log_state = {LOG_INFO, SINK_UNKNOWN};

static const char *const level_names[] = {
    [LOG_ERR] = "error", [LOG_WARNING] = "warning", [LOG_NOTICE] = "notice",
    [LOG_INFO] = "info", [LOG_DEBUG] = "debug",
};

void log_set_level(int level)
{
	atomic_store_explicit(&log_state.level, level, memory_order_relaxed);
}

int log_get_level(void)
{
	return atomic_load_explicit(&log_state.level, memory_order_relaxed);
}

/* systemd connects a service's stderr to the journal and says so in
 * JOURNAL_STREAM ("DEV:INODE" of that stream); stderr redirected elsewhere
 * by the service itself, or a terminal, does not match. */
static bool stderr_is_journal(void)
{
	const char *v = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	if (!v || sscanf(v, "%llu:%llu", &dev, &ino) != 2 ||
	    fstat(STDERR_FILENO, &st) < 0)
		return false;
	return (unsigned long long)st.st_dev == dev &&
	       (unsigned long long)st.st_ino == ino;
}

static int log_sink(void)
{
	int sink = atomic_load_explicit(&log_state.sink, memory_order_relaxed);

	if (sink == SINK_UNKNOWN) {
		sink = stderr_is_journal() ? SINK_JOURNAL : SINK_PLAIN;
		atomic_store_explicit(&log_state.sink, sink, memory_order_relaxed);
	}
	return sink;
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

	/* The journal files "<N>" as the priority; a person reads words. */
	if (log_sink() == SINK_JOURNAL)
		n = snprintf(line, sizeof(line), "<%d>", prio);
	else
		n = snprintf(line, sizeof(line), "ringechod: %s: ", log_level_name(prio));
	n += vsnprintf(line + n, sizeof(line) - n, fmt, ap);
	if (err && n < (int)sizeof(line))
		n += snprintf(line + n, sizeof(line) - n, ": %s", strerror(err));
	if (n >= (int)sizeof(line) - 1)
		n = sizeof(line) - 2;
	/* One message, one line: a newline or an escape sequence from a config
	 * value must not start a line of its own (with a forged "<N>") or
	 * drive the terminal. */
	for (int i = 0; i < n; i++)
		if ((unsigned char)line[i] < 0x20 || line[i] == 0x7f)
			line[i] = '?';
	line[n++] = '\n';
	/* One write per line so lines from a crash-restart never interleave. */
	if (write(STDERR_FILENO, line, n) < 0)
		return;
}

void log_msg(int prio, const char *fmt, ...)
{
	va_list ap;
	int saved = errno;

	if (prio > log_get_level())
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

	if (prio > log_get_level())
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

const char *ratelimit_suffix(unsigned suppressed)
{
	static _Thread_local char buf[64];

	if (!suppressed)
		return "";
	snprintf(buf, sizeof(buf), " (%u similar message%s suppressed)", suppressed,
		 suppressed == 1 ? "" : "s");
	return buf;
}
