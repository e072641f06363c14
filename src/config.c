/* SPDX-License-Identifier: MIT */
#include "config.h"
#include "log.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <libconfig.h>
#include <limits.h>
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
    {"listen", KEY_LISTEN, 0, 1, CONFIG_MAX_LISTEN, false},
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
    UINT_KEY(sqpoll_idle_ms, 0, 60000, false),
    UINT_KEY(batch_wait_us, 0, 10000, false),
};

#define NKEYS (sizeof(keys) / sizeof(keys[0]))

void config_defaults(struct config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	config_parse_addr("127.0.0.1:7777", &cfg->listen[0]);
	cfg->nlisten = 1;
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
	cfg->sqpoll_idle_ms = 0;
	cfg->batch_wait_us = 20;
}

static int parse_port(const char *s, struct sockaddr_storage *ss)
{
	char *end;
	unsigned long port;

	if (*s < '0' || *s > '9')
		return -EINVAL;
	port = strtoul(s, &end, 10);
	if (*end || port > 65535)
		return -EINVAL;
	if (ss->ss_family == AF_INET)
		((struct sockaddr_in *)ss)->sin_port = htons(port);
	else
		((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
	return 0;
}

static int parse_host(const char *host, size_t len, struct listen_addr *out)
{
	char buf[INET6_ADDRSTRLEN];
	struct sockaddr_in *in = (struct sockaddr_in *)&out->ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&out->ss;
	bool v6 = len >= 2 && host[0] == '[' && host[len - 1] == ']';

	if (v6) {
		host++;
		len -= 2;
	}
	if (len == 0 || len >= sizeof(buf))
		return -EINVAL;
	memcpy(buf, host, len);
	buf[len] = '\0';
	if (v6 && inet_pton(AF_INET6, buf, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		out->len = sizeof(*in6);
		return 0;
	}
	if (!v6 && inet_pton(AF_INET, buf, &in->sin_addr) == 1) {
		in->sin_family = AF_INET;
		out->len = sizeof(*in);
		return 0;
	}
	return -EINVAL;
}

int config_parse_addr(const char *text, struct listen_addr *out)
{
	const char *colon = strrchr(text, ':');
	struct listen_addr a;

	memset(&a, 0, sizeof(a));
	if (!colon || strlen(text) >= sizeof(a.text))
		return -EINVAL;
	if (parse_host(text, colon - text, &a) < 0 || parse_port(colon + 1, &a.ss) < 0)
		return -EINVAL;
	strcpy(a.text, text);
	*out = a;
	return 0;
}

/* Where a setting stands, as "file:line" (the include file when there is one). */
static void add_error(struct config_errors *errs, const char *path,
		      const config_setting_t *s, const char *fmt, ...) LOG_FMT(4, 5);

static void add_error(struct config_errors *errs, const char *path,
		      const config_setting_t *s, const char *fmt, ...)
{
	va_list ap;
	char *m;
	int n;

	if (errs->count >= CONFIG_MAX_ERRORS)
		return;
	m = errs->msg[errs->count++];
	if (s && config_setting_source_file(s))
		path = config_setting_source_file(s);
	n = snprintf(m, CONFIG_ERROR_LEN, "%s:%u: ", path,
		     s ? config_setting_source_line(s) : 0);
	va_start(ap, fmt);
	vsnprintf(m + n, CONFIG_ERROR_LEN - n, fmt, ap);
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

static int read_file(config_t *lc, const char *path, struct config_errors *errs);

/* An integer from an @include'd file. libconfig read that file itself, so
 * its literals were not widened and one past 32 bits wrapped: read the file
 * again on its own, widened, and take the same setting from there. A file
 * that does not parse on its own (an @include in the middle of a list) keeps
 * the value as read. */
static long long included_int64(const config_setting_t *s, const char *path)
{
	const char *file = config_setting_source_file(s), *slash = strrchr(path, '/');
	long long v = config_setting_get_int64(s);
	struct config_errors *errs;
	char full[PATH_MAX];
	config_t lc;

	if (!file || strcmp(file, path) == 0 || !(errs = calloc(1, sizeof(*errs))))
		return v;
	/* libconfig names it as written, relative to the main file's directory. */
	if (file[0] != '/' && slash)
		snprintf(full, sizeof(full), "%.*s/%s", (int)(slash - path), path, file);
	else
		snprintf(full, sizeof(full), "%s", file);
	config_init(&lc);
	if (read_file(&lc, full, errs) == 0) {
		const config_setting_t *t = config_lookup(&lc, config_setting_name(s));

		if (t && config_setting_source_line(t) == config_setting_source_line(s) &&
		    (config_setting_type(t) == CONFIG_TYPE_INT ||
		     config_setting_type(t) == CONFIG_TYPE_INT64))
			v = config_setting_get_int64(t);
	}
	config_destroy(&lc);
	free(errs);
	return v;
}

static int set_uint(struct config *cfg, const struct key_spec *k,
		    const config_setting_t *s, const char *path,
		    struct config_errors *errs)
{
	int type = config_setting_type(s);
	long long v;

	if (type != CONFIG_TYPE_INT && type != CONFIG_TYPE_INT64) {
		add_error(errs, path, s, "'%s' must be an integer", k->name);
		return -EINVAL;
	}
	v = included_int64(s, path);
	if (v == LLONG_MAX || v == LLONG_MIN) { /* libconfig saturates */
		add_error(errs, path, s,
			  "'%s' is out of range (%lld..%lld): the number does not fit in "
			  "64 bits",
			  k->name, k->min, k->max);
		return -EINVAL;
	}
	if (v < k->min || v > k->max) {
		add_error(errs, path, s, "'%s' = %lld is out of range (%lld..%lld)",
			  k->name, v, k->min, k->max);
		return -EINVAL;
	}
	if (k->pow2 && (v & (v - 1))) {
		add_error(errs, path, s,
			  "'%s' = %lld must be a power of two (%lld..%lld)", k->name, v,
			  k->min, k->max);
		return -EINVAL;
	}
	*(unsigned *)((char *)cfg + k->offset) = (unsigned)v;
	return 0;
}

static int set_bool(struct config *cfg, const struct key_spec *k,
		    const config_setting_t *s, const char *path,
		    struct config_errors *errs)
{
	if (config_setting_type(s) != CONFIG_TYPE_BOOL) {
		add_error(errs, path, s, "'%s' must be a boolean (true or false)",
			  k->name);
		return -EINVAL;
	}
	*(bool *)((char *)cfg + k->offset) = config_setting_get_bool(s);
	return 0;
}

static int set_level(struct config *cfg, const struct key_spec *k,
		     const config_setting_t *s, const char *path,
		     struct config_errors *errs)
{
	const char *v = config_setting_get_string(s);
	int level = v ? log_level_parse(v) : -1;

	if (!v) {
		add_error(errs, path, s,
			  "'%s' must be a string: \"error\", \"warning\", \"notice\", "
			  "\"info\" or \"debug\"",
			  k->name);
		return -EINVAL;
	}
	if (level < 0) {
		add_error(
		    errs, path, s,
		    "'%s' = \"%s\" is not one of error, warning, notice, info, debug",
		    k->name, v);
		return -EINVAL;
	}
	*(int *)((char *)cfg + k->offset) = level;
	return 0;
}

/* Is listen[i] the same address as one before it? It could not be bound twice. */
static bool listed_before(const struct listen_addr *listen, int i)
{
	for (int j = 0; j < i; j++)
		if (listen[j].len == listen[i].len &&
		    memcmp(&listen[j].ss, &listen[i].ss, listen[i].len) == 0)
			return true;
	return false;
}

static int set_listen(struct config *cfg, const struct key_spec *k,
		      const config_setting_t *s, const char *path,
		      struct config_errors *errs)
{
	int n = config_setting_length(s);
	int bad = 0;

	if (!config_setting_is_list(s) && !config_setting_is_array(s)) {
		add_error(errs, path, s,
			  "'listen' must be a list of \"HOST:PORT\" strings");
		return -EINVAL;
	}
	if (n < k->min || n > k->max) {
		add_error(errs, path, s, "'listen' has %d entries; it needs %lld..%lld",
			  n, k->min, k->max);
		return -EINVAL;
	}
	for (int i = 0; i < n; i++) {
		const config_setting_t *e = config_setting_get_elem(s, i);
		const char *text = config_setting_get_string(e);

		if (!text) {
			add_error(errs, path, e, "'listen' entries must be strings");
			bad = -EINVAL;
		} else if (config_parse_addr(text, &cfg->listen[i]) < 0) {
			add_error(
			    errs, path, e,
			    "'listen': cannot parse address '%s' (expected A.B.C.D:PORT "
			    "or [V6]:PORT)",
			    text);
			bad = -EINVAL;
		} else if (listed_before(cfg->listen, i)) {
			add_error(errs, path, e, "'listen': '%s' is listed twice", text);
			bad = -EINVAL;
		}
	}
	cfg->nlisten = n;
	return bad;
}

static int apply_setting(struct config *cfg, const config_setting_t *s, const char *path,
			 struct config_errors *errs)
{
	const char *name = config_setting_name(s), *suggest;
	const struct key_spec *k = find_key(name, &suggest);

	if (!k) {
		if (suggest)
			add_error(errs, path, s, "unknown key '%s' (did you mean '%s'?)",
				  name, suggest);
		else
			add_error(errs, path, s, "unknown key '%s'", name);
		return -EINVAL;
	}
	switch (k->kind) {
	case KEY_UINT:
		return set_uint(cfg, k, s, path, errs);
	case KEY_BOOL:
		return set_bool(cfg, k, s, path, errs);
	case KEY_LEVEL:
		return set_level(cfg, k, s, path, errs);
	case KEY_LISTEN:
		return set_listen(cfg, k, s, path, errs);
	}
	return -EINVAL;
}

/* Rules that tie keys together, checked once every key has its value. */
static int check_cross(const struct config *cfg, const config_t *lc, const char *path,
		       struct config_errors *errs)
{
	const config_setting_t *s = config_lookup(lc, "max_pending_bytes");

	if (cfg->max_pending_bytes < cfg->buffer_size) {
		if (!s)
			s = config_lookup(lc, "buffer_size");
		add_error(errs, path, s,
			  "'max_pending_bytes' = %u must be at least 'buffer_size' = %u",
			  cfg->max_pending_bytes, cfg->buffer_size);
		return -EINVAL;
	}
	return 0;
}

/* Length of the integer literal at p (decimal or hex, optional sign), or 0. */
static size_t int_literal_len(const char *p)
{
	size_t i = (*p == '+' || *p == '-') ? 1 : 0;
	size_t start = i;

	if (p[i] == '0' && (p[i + 1] == 'x' || p[i + 1] == 'X')) {
		i += 2;
		while (isxdigit((unsigned char)p[i]))
			i++;
		return i > start + 2 ? i : 0;
	}
	while (isdigit((unsigned char)p[i]))
		i++;
	if (i == start || p[i] == '.' || p[i] == 'e' || p[i] == 'E')
		return 0; /* not a number, or a float */
	return i;
}

/* libconfig 1.5 stores an integer literal without an L suffix in 32 bits and
 * wraps it silently (4294967297 loads as 1). Give every integer literal
 * outside comments and strings an L, so all are read as 64-bit. Characters
 * are only inserted, never newlines, so every line keeps its number. */
static char *widen_integers(const char *in)
{
	char *out = malloc(2 * strlen(in) + 1), *o = out;
	const char *p = in;

	while (out && *p) {
		size_t n;
		if (*p == '"') { /* a string, escapes included */
			*o++ = *p++;
			while (*p && *p != '"') {
				if (*p == '\\' && p[1])
					*o++ = *p++;
				*o++ = *p++;
			}
			if (*p)
				*o++ = *p++;
		} else if (*p == '#' || (p[0] == '/' && p[1] == '/')) {
			while (*p && *p != '\n')
				*o++ = *p++;
		} else if (p[0] == '/' && p[1] == '*') {
			const char *end = strstr(p + 2, "*/");
			n = end ? (size_t)(end + 2 - p) : strlen(p);
			memcpy(o, p, n);
			o += n;
			p += n;
		} else if ((p == in || !(isalnum((unsigned char)p[-1]) || p[-1] == '_' ||
					 p[-1] == '.')) &&
			   (n = int_literal_len(p))) {
			memcpy(o, p, n);
			o += n;
			p += n;
			if (*p != 'L' && *p != 'l')
				*o++ = 'L';
		} else {
			*o++ = *p++;
		}
	}
	if (out)
		*o = '\0';
	return out;
}

/* The whole file, or NULL with errno set; *len is its length in bytes. */
static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "r");
	struct stat st;
	char *text = NULL;

	if (!f)
		return NULL;
	if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode))
		errno = EISDIR;
	else if ((text = malloc(st.st_size + 1)))
		text[ *len = fread(text, 1, st.st_size, f)] = '\0';
	fclose(f);
	return text;
}

/* Line of the first NUL byte in text[0..len), or 0: libconfig would read
 * only what comes before it. */
static int nul_line(const char *text, size_t len)
{
	const char *nul = memchr(text, '\0', len);
	int line = 1;

	if (!nul)
		return 0;
	for (const char *p = text; p < nul; p++)
		line += *p == '\n';
	return line;
}

static int read_file(config_t *lc, const char *path, struct config_errors *errs)
{
	size_t len = 0;
	char *text = slurp(path, &len), *wide, dir[PATH_MAX], *slash;
	int err = errno, ok, line;

	if (!text) {
		snprintf(errs->msg[errs->count++], CONFIG_ERROR_LEN,
			 "cannot read config %s: %s", path, strerror(err));
		return err == ENOENT ? -ENOENT : -EINVAL;
	}
	if ((line = nul_line(text, len))) {
		free(text);
		snprintf(errs->msg[errs->count++], CONFIG_ERROR_LEN,
			 "%s:%d: syntax error: a NUL byte", path, line);
		return -EINVAL;
	}
	wide = widen_integers(text);
	free(text);
	if (!wide) {
		snprintf(errs->msg[errs->count++], CONFIG_ERROR_LEN,
			 "cannot read config %s: %s", path, strerror(ENOMEM));
		return -EINVAL;
	}
	/* @include names are relative to the file's own directory. */
	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (slash) {
		*slash = '\0';
		config_set_include_dir(lc, slash == dir ? "/" : dir);
	}
	ok = config_read_string(lc, wide) == CONFIG_TRUE;
	free(wide);
	if (ok)
		return 0;
	snprintf(errs->msg[errs->count++], CONFIG_ERROR_LEN, "%s:%d: syntax error: %s",
		 config_error_file(lc) ? config_error_file(lc) : path,
		 config_error_line(lc), config_error_text(lc));
	return -EINVAL;
}

int config_load(struct config *cfg, const char *path, struct config_errors *errs)
{
	config_t lc;
	struct config next;
	config_setting_t *root;
	int ret;

	errs->count = 0;
	config_init(&lc);
	ret = read_file(&lc, path, errs);
	if (ret < 0)
		goto out;
	config_defaults(&next);
	root = config_root_setting(&lc);
	for (int i = 0; i < config_setting_length(root); i++)
		if (apply_setting(&next, config_setting_get_elem(root, i), path, errs) <
		    0)
			ret = -EINVAL;
	if (ret == 0)
		ret = check_cross(&next, &lc, path, errs);
	if (ret == 0)
		*cfg = next;
out:
	config_destroy(&lc);
	return ret;
}
