/* SPDX-License-Identifier: MIT */
/* libFuzzer harness for the config loader: config_load() and
 * conftext_load() on files the fuzzer writes.
 *
 * An input is up to four files, separated by lines that hold only "%%":
 *
 *     main.conf's text
 *     %%
 *     a.conf's text        (then b.conf's, then c.conf's)
 *
 * They are written into one private directory (made once per process,
 * emptied before each input), so main.conf can @include "a.conf" by its
 * relative name or "%DIR%/a.conf" by its absolute one: "%DIR%" anywhere
 * becomes the directory's path. A part that is exactly one of the words in
 * specials[] becomes that kind of entry instead of a file, so that FIFOs,
 * directories, devices, missing files and the size limit are reached too.
 *
 * Besides what the sanitizers catch, each input checks that:
 * - every error message is NUL-terminated inside CONFIG_ERROR_LEN, names a
 *   place, and the counts add up; a failure says why, a success says nothing;
 * - config_load() leaves *cfg untouched on failure, and on success fills it
 *   with values inside the ranges ringechod.conf(5) documents;
 * - whatever conftext accepts, libconfig parses without a leak;
 * - when libconfig 1.5 can safely be handed the files itself (our text
 *   files, each @include a plain name of another), conftext and libconfig
 *   agree on them (libconfig_diff.c). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem */
#endif
#include "config.h"
#include "conftext.h"
#include "fuzz.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#define NPARTS	  4
#define SEPARATOR "\n%%\n"
#define DIR_MARK  "%DIR%"
/* One "!big" file: more than half the limit, so two of them exceed it. */
#define BIG_BYTES (CONFTEXT_MAX_BYTES / 2 + 4096)

static const char *const part_names[NPARTS] = {"main.conf", "a.conf", "b.conf", "c.conf"};

enum part_kind {
	PART_TEXT,
	PART_DIR,
	PART_FIFO,
	PART_DEVNULL,
	PART_LOOP,
	PART_MISSING,
	PART_BIG
};
static const char *const specials[] = {
    [PART_DIR] = "!dir",   [PART_FIFO] = "!fifo",	[PART_DEVNULL] = "!null",
    [PART_LOOP] = "!loop", [PART_MISSING] = "!missing", [PART_BIG] = "!big",
};

/* The directory the files go in, for the life of the process. */
static char dir[PATH_MAX - 64];
/* Which parts of this input are text files (bit i: part_names[i]). */
static unsigned text_parts;

struct part {
	const uint8_t *p;
	size_t len;
};

static void remove_dir(void);

void fuzz_fail(const char *fmt, ...)
{
	va_list ap;

	fputs("fuzz_config: invariant broken: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	if (dir[0]) /* abort() skips atexit(); the input alone reproduces it */
		remove_dir();
	abort();
}

static void part_path(unsigned i, char *buf, size_t len)
{
	snprintf(buf, len, "%s/%s", dir, part_names[i]);
}

static void remove_parts(void)
{
	char path[PATH_MAX];

	for (unsigned i = 0; i < NPARTS; i++) {
		part_path(i, path, sizeof(path));
		if (unlink(path) < 0 && errno == EISDIR)
			rmdir(path);
	}
}

static void remove_dir(void)
{
	remove_parts();
	rmdir(dir);
}

static void make_dir(void)
{
	const char *tmp = getenv("TMPDIR");

	snprintf(dir, sizeof(dir), "%s/ringecho-fuzz-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(dir))
		fuzz_fail("cannot make a directory %s: %s", dir, strerror(errno));
	atexit(remove_dir);
}

/* Up to NPARTS parts; separators past the last stay in its text. */
static unsigned split(const uint8_t *data, size_t size, struct part *parts)
{
	const size_t seplen = strlen(SEPARATOR);
	unsigned n = 0;
	const uint8_t *s;

	while (n + 1 < NPARTS && (s = memmem(data, size, SEPARATOR, seplen))) {
		parts[n++] = (struct part){data, (size_t)(s - data)};
		size -= (size_t)(s - data) + seplen;
		data = s + seplen;
	}
	parts[n++] = (struct part){data, size};
	return n;
}

static enum part_kind special_of(const struct part *pt)
{
	for (unsigned k = PART_DIR; k <= PART_BIG; k++)
		if (pt->len == strlen(specials[k]) &&
		    memcmp(pt->p, specials[k], pt->len) == 0)
			return (enum part_kind)k;
	return PART_TEXT;
}

/* The part's text with every DIR_MARK replaced by dir, NUL-terminated (the
 * text may hold NULs of its own: *len counts them). */
static char *expand(const struct part *pt, size_t *len)
{
	const size_t marklen = strlen(DIR_MARK), dirlen = strlen(dir);
	char *out = malloc(pt->len / marklen * dirlen + pt->len + 1);
	const uint8_t *p = pt->p, *end = pt->p + pt->len, *m;
	size_t o = 0;

	if (!out)
		fuzz_fail("out of memory");
	while ((m = memmem(p, (size_t)(end - p), DIR_MARK, marklen))) {
		memcpy(out + o, p, (size_t)(m - p));
		o += (size_t)(m - p);
		memcpy(out + o, dir, dirlen);
		o += dirlen;
		p = m + marklen;
	}
	memcpy(out + o, p, (size_t)(end - p));
	o += (size_t)(end - p);
	out[o] = '\0';
	*len = o;
	return out;
}

static void write_file(const char *path, const char *text, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	if (fd < 0 || write(fd, text, len) != (ssize_t)len)
		fuzz_fail("cannot write %s: %s", path, strerror(errno));
	close(fd);
}

static void write_big(const char *path)
{
	static char big[BIG_BYTES];

	if (!big[0]) { /* comment lines, which every reader skips */
		memset(big, '#', sizeof(big));
		for (size_t i = 63; i < sizeof(big); i += 64)
			big[i] = '\n';
	}
	write_file(path, big, sizeof(big));
}

static void make_special(enum part_kind k, const char *path)
{
	int ret = 0;

	switch (k) {
	case PART_DIR:
		ret = mkdir(path, 0700);
		break;
	case PART_FIFO:
		ret = mkfifo(path, 0600);
		break;
	case PART_DEVNULL:
		ret = symlink("/dev/null", path);
		break;
	case PART_LOOP:
		ret = symlink(path, path);
		break;
	case PART_BIG:
		write_big(path);
		break;
	case PART_MISSING:
	case PART_TEXT:
		break;
	}
	if (ret < 0)
		fuzz_fail("cannot make %s: %s", path, strerror(errno));
}

/* One part as written: a text file (text holds what was written, NULs and
 * all) or one of the specials. */
struct file {
	enum part_kind kind;
	char *text;
	size_t len;
};

static void make_files(const struct part *parts, unsigned n, struct file *files)
{
	char path[PATH_MAX];

	text_parts = 0;
	for (unsigned i = 0; i < NPARTS; i++) {
		files[i] =
		    (struct file){i < n ? special_of(&parts[i]) : PART_MISSING, NULL, 0};
		part_path(i, path, sizeof(path));
		if (files[i].kind != PART_TEXT) {
			make_special(files[i].kind, path);
			continue;
		}
		files[i].text = expand(&parts[i], &files[i].len);
		write_file(path, files[i].text, files[i].len);
		text_parts |= 1u << i;
	}
}

void fuzz_append_newlines(void)
{
	char path[PATH_MAX];

	for (unsigned i = 0; i < NPARTS; i++) {
		int fd;
		part_path(i, path, sizeof(path));
		if (!(text_parts & 1u << i))
			continue;
		fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
		if (fd < 0 || write(fd, "\n", 1) != 1)
			fuzz_fail("cannot append to %s: %s", path, strerror(errno));
		close(fd);
	}
}

static void free_files(struct file *files)
{
	for (unsigned i = 0; i < NPARTS; i++)
		free(files[i].text);
}

/* ---- which inputs libconfig itself can be given ---------------------------- */

/* The part an @include names (p is just past the word), read as libconfig
 * reads it: [ \t]+"a.conf" and the like. -1: any other name. */
static int include_target(const char *p)
{
	size_t sp = strspn(p, " \t");

	if (!sp || p[sp] != '"')
		return -1;
	p += sp + 1;
	for (unsigned i = 1; i < NPARTS; i++) {
		size_t n = strlen(part_names[i]);
		if (strncmp(p, part_names[i], n) != 0 || p[n] != '"')
			continue;
		return (int)i;
	}
	return -1;
}

static bool at_line_start(const char *text, const char *p)
{
	while (p > text && (p[-1] == ' ' || p[-1] == '\t'))
		p--;
	return p == text || p[-1] == '\n';
}

/* libconfig 1.5 can be handed file i and what it includes (marked in
 * *seen): our text files without a NUL (that would end libconfig's text
 * early), each @include a plain relative name of another. libconfig
 * exit()s on some other @include's, blocks on a FIFO, and looks for an
 * absolute name under the main file's folder. */
static bool libconfig_can_read(const struct file *files, unsigned i, unsigned *seen)
{
	const char *text = files[i].text, *p;
	int target;

	if (*seen & 1u << i)
		return true;
	*seen |= 1u << i;
	if (files[i].kind != PART_TEXT || strlen(text) != files[i].len)
		return false;
	for (p = text; (p = strstr(p, "@include")); p++) {
		target = include_target(p + strlen("@include"));
		if (!at_line_start(text, p) || target < 0 ||
		    !libconfig_can_read(files, (unsigned)target, seen))
			return false;
	}
	return true;
}

/* ---- what every load must promise ---------------------------------------- */

/* A message names its place as "/path:LINE: ", or says it could not read
 * the main file at all. */
static bool names_a_place(const char *msg)
{
	const char *p = msg;

	if (strncmp(msg, "cannot read config ", strlen("cannot read config ")) == 0)
		return true;
	if (*msg != '/')
		return false;
	while ((p = strchr(p + 1, ':'))) {
		size_t d = strspn(p + 1, "0123456789");
		if (d && p[1] != '0' && strncmp(p + 1 + d, ": ", 2) == 0)
			return true;
	}
	return false;
}

static void check_errors(const struct config_errors *errs, int ret, const char *fn)
{
	if (errs->count > CONFIG_MAX_ERRORS || errs->total < errs->count ||
	    (errs->total > errs->count && errs->count < CONFIG_MAX_ERRORS))
		fuzz_fail("%s: count %u, total %u", fn, errs->count, errs->total);
	if (ret != 0 && ret != -EINVAL && ret != -ENOENT)
		fuzz_fail("%s returned %d", fn, ret);
	if (ret == 0 && errs->total)
		fuzz_fail("%s succeeded with %u errors: %s", fn, errs->total,
			  errs->msg[0]);
	if (ret != 0 && errs->count == 0)
		fuzz_fail("%s failed (%d) without saying why", fn, ret);
	for (unsigned i = 0; i < errs->count; i++) {
		if (!memchr(errs->msg[i], '\0', CONFIG_ERROR_LEN))
			fuzz_fail("%s: message %u is not NUL-terminated", fn, i);
		if (!names_a_place(errs->msg[i]))
			fuzz_fail("%s: message %u names no file:line: %s", fn, i,
				  errs->msg[i]);
	}
}

/* A message about one of our text files names a line that file has. */
static void check_error_lines(const struct config_errors *errs, const struct file *files)
{
	char prefix[PATH_MAX];

	for (unsigned i = 0; i < errs->count; i++) {
		for (unsigned f = 0; f < NPARTS; f++) {
			size_t n = (size_t)snprintf(prefix, sizeof(prefix), "%s/%s:", dir,
						    part_names[f]);
			unsigned long line, lines = 1;
			if (files[f].kind != PART_TEXT ||
			    strncmp(errs->msg[i], prefix, n) != 0)
				continue;
			line = strtoul(errs->msg[i] + n, NULL, 10);
			for (size_t k = 0; k < files[f].len; k++)
				lines += files[f].text[k] == '\n';
			if (line < 1 || line > lines)
				fuzz_fail("%s has %lu lines: %s", part_names[f], lines,
					  errs->msg[i]);
		}
	}
}

/* What conftext hands libconfig: one token per line, each line mapped. */
static void check_text(const struct conftext *t, const char *path)
{
	uint32_t newlines = 0;
	char where[PATH_MAX + 16];

	if (t->nfiles < 1 || t->nfiles > CONFTEXT_MAX_INCLUDES + 1 ||
	    strcmp(t->files[0], path) != 0)
		fuzz_fail("conftext: %u files, the first %s", t->nfiles,
			  t->nfiles ? t->files[0] : "-");
	for (const char *p = t->text; *p; p++)
		newlines += *p == '\n';
	if (newlines != t->nlines)
		fuzz_fail("conftext: %u lines of text, %u mapped", newlines, t->nlines);
	for (uint32_t i = 0; i < t->nlines; i++)
		if (t->lines[i].file >= t->nfiles || t->lines[i].line == 0)
			fuzz_fail("conftext: text line %u maps to file %u line %u", i + 1,
				  t->lines[i].file, t->lines[i].line);
	conftext_where(t, 0, where, sizeof(where));
	conftext_where(t, (int)t->nlines + 1, where, sizeof(where));
}

static void check_range(const char *key, unsigned v, unsigned lo, unsigned hi, bool pow2)
{
	if (v < lo || v > hi || (pow2 && (v & (v - 1))))
		fuzz_fail("config_load accepted %s = %u (%u..%u%s)", key, v, lo, hi,
			  pow2 ? ", a power of two" : "");
}

static void check_listen(const struct addr_list *l, const char *key, unsigned min,
			 bool dgram)
{
	struct listen_addr again;
	char why[160];

	check_range(key, l->n, min, CONFIG_MAX_LISTEN, false);
	for (unsigned i = 0; i < l->n; i++) {
		const struct listen_addr *a = &l->v[i];
		if (!memchr(a->text, '\0', sizeof(a->text)))
			fuzz_fail("%s[%u]: text not NUL-terminated", key, i);
		if (config_parse_addr(a->text, &again) < 0 || again.len != a->len ||
		    memcmp(&again.ss, &a->ss, a->len) != 0)
			fuzz_fail("%s[%u] = %s does not parse back the same", key, i,
				  a->text);
		/* Nothing -t accepts may fail to bind for a reason the file
		 * shows: no duplicate (port 0 gets a new port each time), no
		 * wildcard beside its family on one port. */
		if (config_addr_clash(l->v, i, dgram, why, sizeof(why)) < 0)
			fuzz_fail("%s[%u] = %s was accepted, yet it %s", key, i, a->text,
				  why);
	}
}

/* The ranges conf/ringechod.conf and ringechod.conf(5) promise. */
static void check_config(const struct config *c)
{
	unsigned char nodelay;

	check_listen(&c->listen, "listen", 1, false);
	check_listen(&c->listen_udp, "listen_udp", 0, true);
	check_range("backlog", c->backlog, 1, 65535, false);
	check_range("max_connections", c->max_connections, 1, 4194304, false);
	check_range("max_connections_per_ip", c->max_connections_per_ip, 0, 4194304,
		    false);
	check_range("max_pending_bytes", c->max_pending_bytes, 4096, 1073741824, false);
	check_range("buffer_size", c->buffer_size, 256, 1048576, false);
	check_range("buffer_count", c->buffer_count, 8, 32768, true);
	check_range("ring_entries", c->ring_entries, 8, 32768, true);
	check_range("shutdown_timeout_ms", c->shutdown_timeout_ms, 0, 3600000, false);
	check_range("idle_timeout_ms", c->idle_timeout_ms, 0, 86400000, false);
	check_range("send_timeout_ms", c->send_timeout_ms, 0, 86400000, false);
	check_range("drain_idle_ms", c->drain_idle_ms, 0, 3600000, false);
	check_range("sqpoll_idle_ms", c->sqpoll_idle_ms, 0, 60000, false);
	check_range("batch_wait_us", c->batch_wait_us, 0, 10000, false);
	check_range("workers", c->workers, 0, 64, false);
	check_range("udp_min_source_port", c->udp_min_source_port, 0, 65535, false);
	check_range("udp_max_rate_per_ip", c->udp_max_rate_per_ip, 0, 10000000, false);
	check_range("udp_buffer_count", c->udp_buffer_count, 8, 32768, true);
	check_range("udp_max_datagram", c->udp_max_datagram, 64, 65535, false);
	check_range("log_level", (unsigned)c->log_level, LOG_ERR, LOG_DEBUG, false);
	if (c->max_pending_bytes < c->buffer_size)
		fuzz_fail("config_load accepted max_pending_bytes %u < buffer_size %u",
			  c->max_pending_bytes, c->buffer_size);
	memcpy(&nodelay, &c->tcp_nodelay, 1);
	if (nodelay > 1)
		fuzz_fail("tcp_nodelay holds %u", nodelay);
}

/* Garbage where the messages go, so that one left unterminated shows. */
static void poison(struct config_errors *errs)
{
	memset(errs->msg, 0x7f, sizeof(errs->msg));
	errs->count = errs->total = 0;
}

/* conftext_load's verdict; on success *t holds the text to free. */
static int check_conftext(const char *path, struct config_errors *errs,
			  struct conftext *t)
{
	int ret;

	poison(errs);
	ret = conftext_load(t, path, errs);
	check_errors(errs, ret, "conftext_load");
	if (ret == 0) {
		check_text(t, path);
		check_libconfig_takes(t);
	}
	return ret;
}

static void check_config_load(const char *path, const struct file *files,
			      const struct config_errors *first)
{
	struct config_errors errs;
	struct config cfg, before;
	int ret;

	poison(&errs);
	memset(&cfg, 0x5a, sizeof(cfg));
	memcpy(&before, &cfg, sizeof(cfg));
	ret = config_load(&cfg, path, &errs);
	check_errors(&errs, ret, "config_load");
	check_error_lines(&errs, files);
	/* The same files: conftext's verdict again, word for word. */
	if (first->count && (errs.count == 0 || strcmp(errs.msg[0], first->msg[0]) != 0))
		fuzz_fail("conftext_load said %s, config_load %s", first->msg[0],
			  errs.count ? errs.msg[0] : "nothing");
	if (ret == 0)
		check_config(&cfg);
	else if (memcmp(&cfg, &before, sizeof(cfg)) != 0)
		fuzz_fail("config_load failed and changed *cfg");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct part parts[NPARTS];
	struct file files[NPARTS];
	struct config_errors errs;
	struct conftext t;
	char path[PATH_MAX];
	unsigned seen = 0;
	int ret;

	if (!dir[0])
		make_dir();
	remove_parts();
	make_files(parts, split(data, size, parts), files);
	part_path(0, path, sizeof(path));
	ret = check_conftext(path, &errs, &t);
	check_error_lines(&errs, files);
	check_config_load(path, files, &errs);
	/* Last: it may change the files. */
	if (libconfig_can_read(files, 0, &seen))
		diff_with_libconfig(path, dir, ret, &errs, &t);
	if (ret == 0)
		conftext_free(&t);
	free_files(files);
	return 0;
}
