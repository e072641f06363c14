/* SPDX-License-Identifier: MIT */
/* systemd notifications (sd_notify): READY, STATUS, STOPPING, RELOADING and
 * the watchdog. Every call is a no-op when NOTIFY_SOCKET is not set. */
#ifndef RINGECHO_NOTIFY_H
#define RINGECHO_NOTIFY_H

#include <stdbool.h>
#include <stdint.h>

#define NOTIFY_STATUS_INTERVAL_MS 2000

struct notify {
	bool enabled;
	uint64_t watchdog_ms; /* ping interval: half of WATCHDOG_USEC; 0: off */
	uint64_t last_ping_ms;
	uint64_t last_status_ms;
};

void notify_init(struct notify *n);
/* READY=1 with a STATUS= text. */
void notify_ready(struct notify *n, const char *status);
void notify_stopping(struct notify *n, const char *status);
/* RELOADING=1 with MONOTONIC_USEC=now, as systemd 253+ expects; harmless on 252. */
void notify_reloading(struct notify *n);
/* Is a STATUS= update due at now_ms? */
bool notify_status_due(const struct notify *n, uint64_t now_ms);
void notify_status(struct notify *n, uint64_t now_ms, const char *status);
/* WATCHDOG=1 when half the interval has passed since the last ping. */
void notify_watchdog(struct notify *n, uint64_t now_ms);

#endif
