/* SPDX-License-Identifier: MIT */
/* Logging to stderr, one line per message: with a syslog "<N>" priority
 * prefix when stderr is the journal (JOURNAL_STREAM), which journald reads;
 * elsewhere (a terminal, a file, a pipe) as "ringechod: LEVEL: message". */
#ifndef RINGECHO_LOG_H
#define RINGECHO_LOG_H

#include <stdint.h>
#include <syslog.h>

#define LOG_FMT(a, b) __attribute__((format(printf, a, b)))

/* Set the most verbose level printed (LOG_ERR .. LOG_DEBUG). */
void log_set_level(int level);
int log_get_level(void);
/* Parse "error|warning|notice|info|debug"; returns the level or -1. */
int log_level_parse(const char *name);
const char *log_level_name(int level);

void log_msg(int prio, const char *fmt, ...) LOG_FMT(2, 3);
/* Like log_msg at LOG_WARNING / LOG_ERR, with ": strerror(err)" appended;
 * err is a positive errno value. errno is preserved. */
void log_errno(int prio, int err, const char *fmt, ...) LOG_FMT(3, 4);

#define log_error(...)	log_msg(LOG_ERR, __VA_ARGS__)
#define log_warn(...)	log_msg(LOG_WARNING, __VA_ARGS__)
#define log_notice(...) log_msg(LOG_NOTICE, __VA_ARGS__)
#define log_info(...)	log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...)	log_msg(LOG_DEBUG, __VA_ARGS__)

/* "s" unless n is 1: "1 connection", "2 connections". */
static inline const char *plural_s(unsigned long long n)
{
	return n == 1 ? "" : "s";
}

/* One message per interval, with a count of what was suppressed, for events
 * a peer can trigger at will (accept errors, refusals). */
struct ratelimit {
	uint64_t interval_ms;
	uint64_t last_ms;
	unsigned suppressed;
};

/* True when a message may be logged now; *suppressed gets how many were
 * dropped since the last one. */
int ratelimit_allow(struct ratelimit *rl, uint64_t now_ms, unsigned *suppressed);
/* " (N similar messages suppressed)", or "" when none were: for the end of
 * a rate-limited message. Valid until the next call from this thread. */
const char *ratelimit_suffix(unsigned suppressed);

#endif
