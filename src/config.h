/* SPDX-License-Identifier: MIT */
/* The configuration: every libconfig call lives in config.c; the rest of the
 * daemon sees only this plain, validated struct. */
#ifndef RINGECHO_CONFIG_H
#define RINGECHO_CONFIG_H

#include <stdbool.h>
#include <sys/socket.h>

#ifndef CONFIG_DEFAULT_PATH /* set by the build from RINGECHO_CONFDIR */
#define CONFIG_DEFAULT_PATH "/etc/ringecho/ringechod.conf"
#endif
#define CONFIG_MAX_LISTEN 64
#define CONFIG_ADDR_TEXT  64 /* "[v6]:port" fits with room */
#define CONFIG_MAX_ERRORS 16
#define CONFIG_ERROR_LEN  512

struct listen_addr {
	struct sockaddr_storage ss;
	socklen_t len;
	char text[CONFIG_ADDR_TEXT]; /* as written, for messages */
};

struct config {
	struct listen_addr listen[CONFIG_MAX_LISTEN];
	unsigned nlisten;
	unsigned backlog;
	unsigned max_connections;
	unsigned max_connections_per_ip; /* 0: unlimited */
	unsigned max_pending_bytes;
	unsigned buffer_size;
	unsigned buffer_count;
	unsigned ring_entries;
	bool tcp_nodelay;
	int log_level; /* LOG_ERR .. LOG_DEBUG */
	unsigned shutdown_timeout_ms;
	unsigned idle_timeout_ms; /* 0: never */
	unsigned sqpoll_idle_ms;  /* 0: no SQPOLL thread */
	unsigned batch_wait_us;	  /* longest a completion waits for its batch; 0: none */
};

struct config_errors {
	unsigned count;
	char msg[CONFIG_MAX_ERRORS][CONFIG_ERROR_LEN];
};

/* The built-in defaults, the same values conf/ringechod.conf spells out. */
void config_defaults(struct config *cfg);

/* Read and validate path into *cfg (starting from the defaults). Returns 0,
 * -ENOENT when the file does not exist, or -EINVAL with every problem found
 * described in errs ("file:line: ..."). *cfg is untouched on failure. */
int config_load(struct config *cfg, const char *path, struct config_errors *errs);

/* Parse "A.B.C.D:PORT" or "[V6]:PORT". 0 or -EINVAL. */
int config_parse_addr(const char *text, struct listen_addr *out);

#endif
