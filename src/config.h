/* SPDX-License-Identifier: MIT */
/* The configuration: every libconfig call lives in config.c; the rest of the
 * daemon sees only this plain, validated struct. */
#ifndef RINGECHO_CONFIG_H
#define RINGECHO_CONFIG_H

#include <stdarg.h>
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

/* Addresses to listen on, as configured. */
struct addr_list {
	struct listen_addr v[CONFIG_MAX_LISTEN];
	unsigned n;
	bool set; /* by the file or the command line, not the built-in default */
};

struct config {
	struct addr_list listen;     /* TCP */
	struct addr_list listen_udp; /* UDP; none by default */
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
	unsigned
	    send_timeout_ms; /* an echo making no progress that long: reset; 0: never */
	unsigned drain_idle_ms;	 /* at shutdown, end clients silent that long; 0: never */
	unsigned sqpoll_idle_ms; /* 0: no SQPOLL thread */
	unsigned batch_wait_us;	 /* longest a completion waits for its batch; 0: none */
	unsigned workers;	 /* event loops, one thread each; 0: one per CPU */
	unsigned upgrade_timeout_ms;  /* SIGUSR2: longest wait for sends in flight */
	unsigned udp_min_source_port; /* datagrams from lower ports dropped; 0: off */
	unsigned udp_max_rate_per_ip; /* replies a second to one address; 0: off */
	unsigned udp_buffer_count;    /* UDP receive buffers (a power of two) */
	unsigned udp_max_datagram;    /* bytes; a larger datagram is dropped */
};

struct config_errors {
	unsigned count; /* in msg[] */
	unsigned total; /* found, including those past CONFIG_MAX_ERRORS */
	char msg[CONFIG_MAX_ERRORS][CONFIG_ERROR_LEN];
};

/* What the command line says about the configuration. */
struct config_cli {
	const char *path;
	bool path_given;	     /* -c: then a missing file is an error */
	struct addr_list listen;     /* -l, replacing the file's */
	struct addr_list listen_udp; /* -u, likewise */
	bool verbose;		     /* -v */
};

/* Record one problem as "WHERE: message" (where may be NULL); a where too
 * long to leave room for the message keeps its end (the file's name and
 * line) after "...". Past CONFIG_MAX_ERRORS, only counted. */
void config_error(struct config_errors *errs, const char *where, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void config_verror(struct config_errors *errs, const char *where, const char *fmt,
		   va_list ap) __attribute__((format(printf, 3, 0)));

/* Log each recorded problem, then "... and N more" for those not kept. */
void config_errors_log(const struct config_errors *errs);

/* The built-in defaults, the same values conf/ringechod.conf spells out. */
void config_defaults(struct config *cfg);

/* Read and validate path into *cfg (starting from the defaults). Returns 0,
 * -ENOENT when the file does not exist, or -EINVAL with every problem found
 * described in errs ("file:line: ..."). *cfg is untouched on failure. */
int config_load(struct config *cfg, const char *path, struct config_errors *errs);

/* The configuration to run with: the file, with the command line on top.
 * Only at start-up does a missing default file mean the built-in defaults
 * (*no_file is then set); on reload it is an error, so that a file briefly
 * absent never swaps a running configuration for the defaults. 0, -ENOENT
 * or -EINVAL, with errs filled; *cfg is untouched on failure. */
int config_resolve(struct config *cfg, const struct config_cli *cli, bool at_start,
		   struct config_errors *errs, bool *no_file);

/* The longest line config_dump() writes (a full list of addresses), and
 * room for all it writes (two such lists and a short line per other key). */
#define CONFIG_DUMP_LINE (32 + CONFIG_MAX_LISTEN * CONFIG_ADDR_TEXT)
#define CONFIG_DUMP_LEN	 (3 * CONFIG_DUMP_LINE)

/* The settings as "key=value" lines, for the state a live upgrade hands
 * over. Returns the length written: len when it did not fit, which cannot
 * happen with CONFIG_DUMP_LEN. */
size_t config_dump(const struct config *cfg, char *buf, size_t len);
/* Read what config_dump() wrote (keys this program lacks are skipped, keys
 * missing keep their defaults). 0, or -EINVAL. */
int config_undump(struct config *cfg, const char *text, size_t len);

/* Parse "A.B.C.D:PORT", "[V6]:PORT" or "[V6%IFACE]:PORT" (a scoped
 * link-local address). 0, or -EINVAL (syntax), -EAFNOSUPPORT (an
 * IPv4-mapped IPv6 address, which an IPv6-only socket cannot bind),
 * -ENODEV (no such interface), -EDESTADDRREQ (a link-local address
 * without one) or -EBADSLT (an interface on an address that is not
 * link-local); config_addr_error() says which in words. */
int config_parse_addr(const char *text, struct listen_addr *out);
const char *config_addr_error(int err);
/* Can v[i] be listened on beside v[0..i-1] (TCP unless dgram)? 0, or
 * -EINVAL with why saying what is wrong, to follow the address in a
 * message: listed twice, overlapping a wildcard address on the same port
 * (which would fail with EADDRINUSE at start-up), or a multicast address
 * for TCP. An entry with len 0 (one that did not parse) clashes with
 * nothing. */
int config_addr_clash(const struct listen_addr *v, unsigned i, bool dgram, char *why,
		      size_t len);
unsigned listen_addr_port(const struct listen_addr *a);
/* The same address and port (a parsed address; len 0 equals nothing). */
bool listen_addr_equal(const struct listen_addr *a, const struct listen_addr *b);

#endif
