/* SPDX-License-Identifier: MIT */
#include "config.h"
#include "conftext.h"
#include "log.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <libconfig.h>
#include <limits.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum key_kind { KEY_UINT, KEY_BOOL, KEY_LEVEL, KEY_LISTEN };

struct key_spec {
	const char *name;
	enum key_kind kind;
	size_t offset;
	long long min, max;
	bool pow2;
};

#define UINT_KEY(field, lo, hi, p2)                                                      \
	{                                                                                \
#field, KEY_UINT, offsetof(struct config, field), lo, hi, p2             \
	}

/* The kernel caps a provided-buffer ring and an SQ at 32768 entries. */
#define MAX_RING_ENTRIES 32768
/* Connection ids are 56-bit, connection counts are bounded far lower by
 * memory and fds; this only stops an obvious typo. */
#define MAX_CONNECTIONS 4194304

static const struct key_spec keys[] = {
    {"listen", KEY_LISTEN, offsetof(struct config, listen), 1, CONFIG_MAX_LISTEN, false},
    {"listen_udp", KEY_LISTEN, offsetof(struct config, listen_udp), 0, CONFIG_MAX_LISTEN,
     false},
    UINT_KEY(backlog, 1, 65535, false),
    UINT_KEY(max_connections, 1, MAX_CONNECTIONS, false),
    UINT_KEY(max_connections_per_ip, 0, MAX_CONNECTIONS, false),
    UINT_KEY(max_pending_bytes, 4096, 1073741824, false),
    UINT_KEY(buffer_size, 256, 1048576, false),
    UINT_KEY(buffer_count, 8, MAX_RING_ENTRIES, true),
    UINT_KEY(ring_entries, 8, MAX_RING_ENTRIES, true),
    {"tcp_nodelay", KEY_BOOL, offsetof(struct config, tcp_nodelay), 0, 1, false},
    {"log_level", KEY_LEVEL, offsetof(struct config, log_level), 0, 0, false},
    UINT_KEY(shutdown_timeout_ms, 0, 3600000, false),
    UINT_KEY(idle_timeout_ms, 0, 86400000, false),
    UINT_KEY(send_timeout_ms, 0, 86400000, false),
    UINT_KEY(drain_idle_ms, 0, 3600000, false),
    UINT_KEY(sqpoll_idle_ms, 0, 60000, false),
    UINT_KEY(batch_wait_us, 0, 10000, false),
    UINT_KEY(workers, 0, 64, false),
    UINT_KEY(upgrade_timeout_ms, 0, 60000, false),
    UINT_KEY(udp_min_source_port, 0, 65535, false),
    UINT_KEY(udp_max_rate_per_ip, 0, 10000000, false),
    UINT_KEY(udp_buffer_count, 8, MAX_RING_ENTRIES, true),
    UINT_KEY(udp_max_datagram, 64, 65535, false),
};

#define NKEYS (sizeof(keys) / sizeof(keys[0]))

void config_defaults(struct config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	config_parse_addr("127.0.0.1:7777", &cfg->listen.v[0]);
	cfg->listen.n = 1;
	cfg->backlog = 4096;
	cfg->max_connections = 16384;
	cfg->max_connections_per_ip = 0;
	cfg->max_pending_bytes = 262144;
	cfg->buffer_size = 16384;
	cfg->buffer_count = 512;
	cfg->ring_entries = 1024;
	cfg->tcp_nodelay = true;
	cfg->log_level = LOG_INFO;
	cfg->shutdown_timeout_ms = 10000;
	cfg->idle_timeout_ms = 0;
	cfg->send_timeout_ms = 60000;
	cfg->drain_idle_ms = 1000;
	cfg->sqpoll_idle_ms = 0;
	cfg->batch_wait_us = 20;
	cfg->workers = 1;
	cfg->upgrade_timeout_ms = 2000;
	cfg->udp_min_source_port = 1024;
	cfg->udp_max_rate_per_ip = 1000;
	cfg->udp_buffer_count = 128;
	cfg->udp_max_datagram = 65535;
}

void config_verror(struct config_errors *errs, const char *where, const char *fmt,
		   va_list ap)
{
	char *m;
	int n = 0;

	errs->total++;
	if (errs->count >= CONFIG_MAX_ERRORS)
		return;
	m = errs->msg[errs->count++];
	/* A long where (a deep path) would leave no room for what is wrong:
	 * keep its end, which names the file and the line. */
	if (where && strlen(where) > CONFIG_ERROR_LEN / 2)
		n = snprintf(m, CONFIG_ERROR_LEN,
			     "...%s: ", where + strlen(where) - CONFIG_ERROR_LEN / 2);
	else if (where)
		n = snprintf(m, CONFIG_ERROR_LEN, "%s: ", where);
	if (n < 0 || n >= CONFIG_ERROR_LEN)
		n = CONFIG_ERROR_LEN - 1;
	vsnprintf(m + n, CONFIG_ERROR_LEN - n, fmt, ap);
}

void config_errors_log(const struct config_errors *errs)
{
	for (unsigned i = 0; i < errs->count; i++)
		log_error("%s", errs->msg[i]);
	if (errs->total > errs->count)
		log_error("... and %u more", errs->total - errs->count);
}

void config_error(struct config_errors *errs, const char *where, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	config_verror(errs, where, fmt, ap);
	va_end(ap);
}

/* A problem with setting s, at its file and line. */
static void add_error(struct config_errors *errs, const struct conftext *ct,
		      const config_setting_t *s, const char *fmt, ...) LOG_FMT(4, 5);

static void add_error(struct config_errors *errs, const struct conftext *ct,
		      const config_setting_t *s, const char *fmt, ...)
{
	char where[PATH_MAX + 16];
	va_list ap;

	conftext_where(ct, s ? (int)config_setting_source_line(s) : 0, where,
		       sizeof(where));
	va_start(ap, fmt);
	config_verror(errs, where, fmt, ap);
	va_end(ap);
}

/* Edit distance, for "did you mean" on a misspelt key. */
static unsigned edit_distance(const char *a, const char *b)
{
	unsigned row[64], lb = strlen(b);

	if (lb >= 64)
		return 64;
	for (unsigned j = 0; j <= lb; j++)
		row[j] = j;
	for (unsigned i = 1; a[i - 1]; i++) {
		unsigned diag = row[0];
		row[0] = i;
		for (unsigned j = 1; j <= lb; j++) {
			unsigned up = row[j];
			unsigned sub = diag + (a[i - 1] != b[j - 1]);
			unsigned best = (up < row[j - 1] ? up : row[j - 1]) + 1;
			row[j] = sub < best ? sub : best;
			diag = up;
		}
	}
	return row[lb];
}

static const struct key_spec *find_key(const char *name, const char **suggest)
{
	unsigned best = 4; /* farther than this is no typo */

	*suggest = NULL;
	for (size_t i = 0; i < NKEYS; i++) {
		if (strcmp(keys[i].name, name) == 0)
			return &keys[i];
		unsigned d = edit_distance(name, keys[i].name);
		if (d < best) {
			best = d;
			*suggest = keys[i].name;
		}
	}
	return NULL;
}

static int set_uint(struct config *cfg, const struct key_spec *k,
		    const config_setting_t *s, const struct conftext *ct,
		    struct config_errors *errs)
{
	int type = config_setting_type(s);
	long long v;

	if (type != CONFIG_TYPE_INT && type != CONFIG_TYPE_INT64) {
		add_error(errs, ct, s, "'%s' must be an integer", k->name);
		return -EINVAL;
	}
	v = config_setting_get_int64(s);
	if (v == LLONG_MAX || v == LLONG_MIN) { /* libconfig saturates */
		add_error(errs, ct, s,
			  "'%s' is out of range (%lld..%lld): the number is far too %s",
			  k->name, k->min, k->max, v < 0 ? "small" : "large");
		return -EINVAL;
	}
	if (v < k->min || v > k->max) {
		add_error(errs, ct, s, "'%s' = %lld is out of range (%lld..%lld)",
			  k->name, v, k->min, k->max);
		return -EINVAL;
	}
	if (k->pow2 && (v & (v - 1))) {
		add_error(errs, ct, s, "'%s' = %lld must be a power of two (%lld..%lld)",
			  k->name, v, k->min, k->max);
		return -EINVAL;
	}
	*(unsigned *)((char *)cfg + k->offset) = (unsigned)v;
	return 0;
}

static int set_bool(struct config *cfg, const struct key_spec *k,
		    const config_setting_t *s, const struct conftext *ct,
		    struct config_errors *errs)
{
	if (config_setting_type(s) != CONFIG_TYPE_BOOL) {
		add_error(errs, ct, s, "'%s' must be a boolean (true or false)", k->name);
		return -EINVAL;
	}
	*(bool *)((char *)cfg + k->offset) = config_setting_get_bool(s);
	return 0;
}

static int set_level(struct config *cfg, const struct key_spec *k,
		     const config_setting_t *s, const struct conftext *ct,
		     struct config_errors *errs)
{
	const char *v = config_setting_get_string(s);
	int level = v ? log_level_parse(v) : -1;

	if (!v) {
		add_error(errs, ct, s,
			  "'%s' must be a string: \"error\", \"warning\", \"notice\", "
			  "\"info\" or \"debug\"",
			  k->name);
		return -EINVAL;
	}
	if (level < 0) {
		add_error(
		    errs, ct, s,
		    "'%s' = \"%s\" is not one of error, warning, notice, info, debug",
		    k->name, v);
		return -EINVAL;
	}
	*(int *)((char *)cfg + k->offset) = level;
	return 0;
}

static int set_listen(struct config *cfg, const struct key_spec *k,
		      const config_setting_t *s, const struct conftext *ct,
		      struct config_errors *errs)
{
	struct addr_list *list = (struct addr_list *)((char *)cfg + k->offset);
	int n = config_setting_length(s);
	int bad = 0, err;
	char why[160];

	if (!config_setting_is_list(s) && !config_setting_is_array(s)) {
		add_error(errs, ct, s, "'%s' must be a list of \"HOST:PORT\" strings",
			  k->name);
		return -EINVAL;
	}
	if (n < k->min || n > k->max) {
		add_error(errs, ct, s, "'%s' has %d entries; it needs %lld..%lld",
			  k->name, n, k->min, k->max);
		return -EINVAL;
	}
	for (int i = 0; i < n; i++) {
		const config_setting_t *e = config_setting_get_elem(s, i);
		const char *text = config_setting_get_string(e);

		memset(&list->v[i], 0, sizeof(list->v[i])); /* len 0: none */
		if (!text) {
			add_error(errs, ct, e, "'%s' entries must be strings", k->name);
			bad = -EINVAL;
		} else if ((err = config_parse_addr(text, &list->v[i])) < 0) {
			add_error(errs, ct, e, "'%s': cannot parse address '%s' (%s)",
				  k->name, text, config_addr_error(err));
			bad = -EINVAL;
		} else if (config_addr_clash(list->v, i,
					     k->offset ==
						 offsetof(struct config, listen_udp),
					     why, sizeof(why)) < 0) {
			add_error(errs, ct, e, "'%s': '%s' %s", k->name, text, why);
			bad = -EINVAL;
		}
	}
	list->n = n;
	list->set = true;
	return bad;
}

static int apply_setting(struct config *cfg, const config_setting_t *s,
			 const struct conftext *ct, struct config_errors *errs)
{
	const char *name = config_setting_name(s), *suggest;
	const struct key_spec *k = find_key(name, &suggest);

	if (!k) {
		if (suggest)
			add_error(errs, ct, s, "unknown key '%s' (did you mean '%s'?)",
				  name, suggest);
		else
			add_error(errs, ct, s, "unknown key '%s'", name);
		return -EINVAL;
	}
	switch (k->kind) {
	case KEY_UINT:
		return set_uint(cfg, k, s, ct, errs);
	case KEY_BOOL:
		return set_bool(cfg, k, s, ct, errs);
	case KEY_LEVEL:
		return set_level(cfg, k, s, ct, errs);
	case KEY_LISTEN:
		return set_listen(cfg, k, s, ct, errs);
	}
	return -EINVAL;
}

/* Rules that tie keys together, checked once every key has its value. */
static int check_cross(const struct config *cfg, const config_t *lc,
		       const struct conftext *ct, struct config_errors *errs)
{
	const config_setting_t *s = config_lookup(lc, "max_pending_bytes");

	if (cfg->max_pending_bytes < cfg->buffer_size) {
		if (!s)
			s = config_lookup(lc, "buffer_size");
		add_error(errs, ct, s,
			  "'max_pending_bytes' = %u must be at least 'buffer_size' = %u",
			  cfg->max_pending_bytes, cfg->buffer_size);
		return -EINVAL;
	}
	return 0;
}

int config_load(struct config *cfg, const char *path, struct config_errors *errs)
{
	struct conftext ct;
	struct config next;
	config_setting_t *root;
	config_t lc;
	int ret;

	errs->count = errs->total = 0;
	ret = conftext_load(&ct, path, errs);
	if (ret < 0)
		return ret;
	config_init(&lc);
	if (config_read_string(&lc, ct.text) != CONFIG_TRUE) {
		/* conftext checked the grammar, so this is not expected. */
		char where[PATH_MAX + 16];
		conftext_where(&ct, config_error_line(&lc), where, sizeof(where));
		config_error(errs, where, "%s", config_error_text(&lc));
		ret = -EINVAL;
		goto out;
	}
	config_defaults(&next);
	root = config_root_setting(&lc);
	for (int i = 0; i < config_setting_length(root); i++)
		if (apply_setting(&next, config_setting_get_elem(root, i), &ct, errs) < 0)
			ret = -EINVAL;
	if (ret == 0)
		ret = check_cross(&next, &lc, &ct, errs);
	if (ret == 0)
		*cfg = next;
out:
	config_destroy(&lc);
	conftext_free(&ct);
	return ret;
}

int config_resolve(struct config *cfg, const struct config_cli *cli, bool at_start,
		   struct config_errors *errs, bool *no_file)
{
	struct config next;
	int ret = config_load(&next, cli->path, errs);

	*no_file = false;
	if (ret == -ENOENT && !cli->path_given && at_start) {
		errs->count = errs->total = 0;
		config_defaults(&next);
		*no_file = true;
	} else if (ret < 0) {
		return ret;
	}
	if (cli->listen.n)
		next.listen = cli->listen;
	if (cli->listen_udp.n)
		next.listen_udp = cli->listen_udp;
	if (cli->verbose)
		next.log_level = LOG_DEBUG;
	*cfg = next;
	return 0;
}

/* "a,b,c" of list's addresses as written. */
static void dump_list(char **o, char *end, const char *name, const struct addr_list *l)
{
	*o += snprintf(*o, end - *o, "%s=%d", name, l->set ? 1 : 0);
	for (unsigned i = 0; i < l->n && *o < end; i++)
		*o += snprintf(*o, end - *o, "%c%s", i ? ',' : ':', l->v[i].text);
	if (*o < end)
		*o += snprintf(*o, end - *o, "\n");
}

size_t config_dump(const struct config *cfg, char *buf, size_t len)
{
	char *o = buf, *end = buf + len;

	for (size_t i = 0; i < NKEYS && o < end; i++) {
		const struct key_spec *k = &keys[i];
		const void *field = (const char *)cfg + k->offset;

		if (k->kind == KEY_LISTEN)
			dump_list(&o, end, k->name, field);
		else if (k->kind == KEY_UINT)
			o += snprintf(o, end - o, "%s=%u\n", k->name,
				      *(const unsigned *)field);
		else if (k->kind == KEY_BOOL)
			o += snprintf(o, end - o, "%s=%d\n", k->name,
				      *(const bool *)field);
		else
			o +=
			    snprintf(o, end - o, "%s=%d\n", k->name, *(const int *)field);
	}
	return o < end ? (size_t)(o - buf) : len;
}

static int undump_list(struct addr_list *l, const char *v)
{
	char text[CONFIG_ADDR_TEXT];

	memset(l, 0, sizeof(*l));
	l->set = *v == '1';
	for (v = strchr(v, ':'); v && *v && l->n < CONFIG_MAX_LISTEN;) {
		size_t n = strcspn(++v, ",\n");
		if (n >= sizeof(text))
			return -EINVAL;
		memcpy(text, v, n);
		text[n] = '\0';
		if (config_parse_addr(text, &l->v[l->n++]) < 0)
			return -EINVAL;
		v += n;
		if (*v != ',')
			break;
	}
	return 0;
}

int config_undump(struct config *cfg, const char *text, size_t len)
{
	struct config next;
	char line[CONFIG_DUMP_LINE];

	config_defaults(&next);
	next.listen.n = 0;
	while (len) {
		size_t n = strcspn(text, "\n");
		const char *eq;
		const struct key_spec *k = NULL;
		const char *unused;

		if (n > len)
			n = len;
		if (n >= sizeof(line))
			return -EINVAL;
		memcpy(line, text, n);
		line[n] = '\0';
		text += n < len ? n + 1 : n;
		len -= n < len ? n + 1 : n;
		if (!(eq = strchr(line, '=')))
			continue;
		line[eq - line] = '\0';
		if (!(k = find_key(line, &unused)))
			continue; /* a key this program does not have */
		if (k->kind == KEY_LISTEN) {
			if (undump_list((struct addr_list *)((char *)&next + k->offset),
					eq + 1))
				return -EINVAL;
		} else if (k->kind == KEY_BOOL) {
			*(bool *)((char *)&next + k->offset) = eq[1] == '1';
		} else if (k->kind == KEY_UINT) {
			*(unsigned *)((char *)&next + k->offset) =
			    (unsigned)strtoul(eq + 1, NULL, 10);
		} else {
			*(int *)((char *)&next + k->offset) =
			    (int)strtol(eq + 1, NULL, 10);
		}
	}
	if (next.listen.n == 0)
		return -EINVAL;
	*cfg = next;
	return 0;
}
