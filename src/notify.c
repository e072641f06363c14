/* SPDX-License-Identifier: MIT */
#include "notify.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <systemd/sd-daemon.h>
#include <time.h>

void notify_init(struct notify *n)
{
	uint64_t usec = 0;

	n->enabled = getenv("NOTIFY_SOCKET") != NULL;
	n->watchdog_ms = 0;
	n->last_ping_ms = n->last_status_ms = 0;
	if (sd_watchdog_enabled(0, &usec) > 0 && usec >= 2000) {
		n->watchdog_ms = usec / 2000;
		log_info("watchdog enabled: pinging every %llu ms",
			 (unsigned long long)n->watchdog_ms);
	}
}

static void send_state(const struct notify *n, const char *state)
{
	if (n->enabled && sd_notify(0, state) < 0)
		log_debug("sd_notify failed");
}

static void send_with_status(const struct notify *n, const char *what, const char *status)
{
	char msg[512];

	snprintf(msg, sizeof(msg), "%s\nSTATUS=%s", what, status);
	send_state(n, msg);
}

void notify_ready(struct notify *n, const char *status)
{
	send_with_status(n, "READY=1", status);
}

void notify_stopping(struct notify *n, const char *status)
{
	send_with_status(n, "STOPPING=1", status);
}

void notify_reloading(struct notify *n)
{
	struct timespec ts;
	char msg[64];

	clock_gettime(CLOCK_MONOTONIC, &ts);
	snprintf(msg, sizeof(msg), "RELOADING=1\nMONOTONIC_USEC=%llu",
		 (unsigned long long)ts.tv_sec * 1000000ULL + ts.tv_nsec / 1000);
	send_state(n, msg);
}

bool notify_status_due(const struct notify *n, uint64_t now_ms)
{
	return n->enabled && now_ms - n->last_status_ms >= NOTIFY_STATUS_INTERVAL_MS;
}

void notify_status(struct notify *n, uint64_t now_ms, const char *status)
{
	char msg[512];

	n->last_status_ms = now_ms;
	snprintf(msg, sizeof(msg), "STATUS=%s", status);
	send_state(n, msg);
}

void notify_watchdog(struct notify *n, uint64_t now_ms)
{
	if (!n->watchdog_ms || now_ms - n->last_ping_ms < n->watchdog_ms)
		return;
	n->last_ping_ms = now_ms;
	send_state(n, "WATCHDOG=1");
}
