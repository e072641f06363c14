/* SPDX-License-Identifier: MIT */
/* The configuration's files, read without trusting them (regular files
 * only, opened without blocking, bounded in size and number) and cut into
 * libconfig's tokens, @include's spliced in where they stand. */
#include "confscan.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

void confscan_where(const struct loader *L, uint32_t file, uint32_t line, char *buf,
		    size_t len)
{
	snprintf(buf, len, "%s:%u", L->t->files[file], line);
}

static int fail_at(struct loader *L, uint32_t file, uint32_t line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail_at(struct loader *L, uint32_t file, uint32_t line, const char *fmt, ...)
{
	char where[PATH_MAX + 16];
	va_list ap;

	confscan_where(L, file, line, where, sizeof(where));
	va_start(ap, fmt);
	config_verror(L->errs, where, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

/* ---- reading files --------------------------------------------------- */

static const char *file_kind(mode_t mode)
{
	if (S_ISDIR(mode))
		return "a directory";
	if (S_ISFIFO(mode))
		return "a FIFO";
	if (S_ISCHR(mode))
		return "a character device";
	if (S_ISBLK(mode))
		return "a block device";
	if (S_ISSOCK(mode))
		return "a socket";
	return "not a plain file";
}

/* Read a regular file of at most `budget` bytes into *out (NUL-terminated).
 * O_NONBLOCK: opening a FIFO must not wait for a writer. 0, -errno, or
 * -EFTYPE with *kind set, or -EFBIG. */
#ifndef EFTYPE
#define EFTYPE EMEDIUMTYPE
#endif
static int read_regular(const char *path, size_t budget, char **out, size_t *len,
			const char **kind)
{
	int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY), err = 0;
	struct stat st;
	size_t got = 0;
	char *buf = NULL;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0)
		err = -errno;
	else if (!S_ISREG(st.st_mode))
		err = (*kind = file_kind(st.st_mode), -EFTYPE);
	else if ((size_t)st.st_size > budget)
		err = -EFBIG;
	else if (!(buf = malloc((size_t)st.st_size + 1)))
		err = -ENOMEM;
	while (!err && got < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
		if (n < 0 && errno != EINTR)
			err = -errno;
		else if (n == 0)
			break; /* it shrank while we read */
		else if (n > 0)
			got += (size_t)n;
	}
	close(fd);
	if (err) {
		free(buf);
		return err;
	}
	buf[got] = '\0';
	*out = buf;
	*len = got;
	return 0;
}

/* ---- the lexer ---------------------------------------------------------- */

static int push(struct loader *L, enum tok_type type, uint32_t file, uint32_t line,
		const char *p, size_t len, bool glued)
{
	if (L->ntoks == L->cap) {
		size_t cap = L->cap ? L->cap * 2 : 256;
		struct tok *t = realloc(L->toks, cap * sizeof(*t));
		if (!t) {
			config_error(L->errs, NULL,
				     "out of memory reading the configuration");
			return -ENOMEM;
		}
		L->toks = t;
		L->cap = cap;
	}
	L->toks[L->ntoks++] = (struct tok){type, glued, file, line, p, (uint32_t)len};
	return 0;
}

static size_t digits(const char *p)
{
	size_t n = 0;

	while (isdigit((unsigned char)p[n]))
		n++;
	return n;
}

/* [eE][-+]?[0-9]+, or 0 */
static size_t exponent(const char *p)
{
	size_t n = 1, d;

	if (*p != 'e' && *p != 'E')
		return 0;
	if (p[1] == '+' || p[1] == '-')
		n++;
	d = digits(p + n);
	return d ? n + d : 0;
}

/* ([-+]?[0-9]*\.[0-9]*{exp}?) | ([-+]?[0-9]+(\.[0-9]*)?{exp}) */
static size_t float_len(const char *p)
{
	size_t s = (*p == '+' || *p == '-'), d = digits(p + s), best = 0, n;

	if (p[s + d] == '.') {
		n = s + d + 1;
		n += digits(p + n);
		best = n + exponent(p + n);
	}
	if (d) {
		size_t e;
		n = s + d;
		if (p[n] == '.')
			n += 1 + digits(p + n + 1);
		e = exponent(p + n);
		if (e && n + e > best)
			best = n + e;
	}
	return best;
}

/* The longest number at p, as flex picks it, or 0. */
static size_t number_len(const char *p, enum tok_type *type)
{
	size_t s = (*p == '+' || *p == '-'), d = digits(p + s);
	size_t best = float_len(p), n;

	*type = TOK_FLOAT;
	if (d && s + d > best) {
		n = s + d;
		*type = TOK_INT;
		if (p[n] == 'L') {
			n += p[n + 1] == 'L' ? 2 : 1;
			*type = TOK_INT64;
		}
		best = n;
	}
	if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X') &&
	    isxdigit((unsigned char)p[2])) {
		n = 2;
		while (isxdigit((unsigned char)p[n]))
			n++;
		enum tok_type t = TOK_HEX;
		if (p[n] == 'L') {
			n += p[n + 1] == 'L' ? 2 : 1;
			t = TOK_HEX64;
		}
		if (n > best) {
			best = n;
			*type = t;
		}
	}
	return best;
}

static bool name_start(char c)
{
	return isalpha((unsigned char)c) || c == '*';
}

static bool name_char(char c)
{
	return isalnum((unsigned char)c) || c == '*' || c == '-' || c == '_';
}

static enum tok_type punct(char c)
{
	switch (c) {
	case '=':
	case ':':
		return TOK_EQUALS;
	case ',':
		return TOK_COMMA;
	case ';':
		return TOK_SEMI;
	case '{':
		return TOK_GROUP_START;
	case '}':
		return TOK_GROUP_END;
	case '[':
		return TOK_ARRAY_START;
	case ']':
		return TOK_ARRAY_END;
	case '(':
		return TOK_LIST_START;
	case ')':
		return TOK_LIST_END;
	}
	return TOK_EOF;
}

/* The length of the token at p (not whitespace, not a comment) and its type. */
static size_t token_at(const char *p, enum tok_type *type)
{
	size_t n;

	if ((*type = punct(*p)) != TOK_EOF)
		return 1;
	if (name_start(*p)) {
		for (n = 1; name_char(p[n]); n++)
			;
		*type = TOK_NAME;
		if ((n == 4 && strncasecmp(p, "true", 4) == 0) ||
		    (n == 5 && strncasecmp(p, "false", 5) == 0))
			*type = TOK_BOOL;
		return n;
	}
	if ((n = number_len(p, type)))
		return n;
	*type = TOK_GARBAGE;
	return 1;
}

struct cursor {
	const char *p;
	uint32_t file, line;
	bool bol;   /* only spaces and tabs since the line began */
	bool glued; /* nothing skipped since the last token */
};

static int load_file(struct loader *L, const char *path, const char *name, int depth,
		     uint32_t from_file, uint32_t from_line);

/* `@include "name"` at c->p (an @ that starts its line): read name, splice
 * the file in. libconfig takes only \\ and \" as escapes in the name. */
static int include_at(struct loader *L, struct cursor *c, int depth)
{
	const char *p = c->p + strlen("@include");
	char name[PATH_MAX], path[PATH_MAX];
	size_t n = 0;

	while (*p == ' ' || *p == '\t')
		p++;
	for (p++; *p && *p != '"' && *p != '\n'; p++) {
		if (*p == '\\' && (p[1] == '\\' || p[1] == '"'))
			p++;
		else if (*p == '\\')
			return fail_at(L, c->file, c->line,
				       "@include: only \\\\ and \\\" may be escaped in a "
				       "file name");
		if (n + 1 >= sizeof(name))
			return fail_at(L, c->file, c->line,
				       "@include: file name too long");
		name[n++] = *p;
	}
	if (*p != '"')
		return fail_at(L, c->file, c->line,
			       "@include: the file name has no closing '\"'");
	name[n] = '\0';
	c->p = p + 1;
	if (n == 0)
		return fail_at(L, c->file, c->line, "@include \"\": an empty file name");
	/* An absolute name is used as written (libconfig 1.5 would look for it
	 * under the main file's folder); a relative one starts there. */
	if ((size_t)snprintf(path, sizeof(path), "%s%s", name[0] == '/' ? "" : L->dir,
			     name) >= sizeof(path))
		return fail_at(L, c->file, c->line, "@include: file name too long");
	return load_file(L, path, name, depth + 1, c->file, c->line);
}

/* Skip what the scanner ignores at c->p: space, comments. Returns false at
 * an unterminated block comment (an error is recorded). */
static bool skip_space(struct loader *L, struct cursor *c, int *err)
{
	for (;;) {
		const char *p = c->p;

		if (*p == '\n') {
			c->line++;
			c->bol = true;
		} else if (*p == ' ' || *p == '\t') {
			/* bol unchanged */
		} else if (*p == '\r' || *p == '\f') {
			c->bol = false;
		} else if (*p == '#' || (p[0] == '/' && p[1] == '/')) {
			c->p = p + strcspn(p, "\n");
			c->glued = false;
			continue;
		} else if (p[0] == '/' && p[1] == '*') {
			uint32_t start = c->line;
			for (p += 2; *p && !(p[0] == '*' && p[1] == '/'); p++)
				c->line += *p == '\n';
			if (!*p) {
				*err = fail_at(
				    L, c->file, start,
				    "syntax error: this /* comment is never closed");
				return false;
			}
			c->p = p + 2;
			c->bol = false;
			c->glued = false;
			continue;
		} else {
			return true;
		}
		c->p++;
		c->glued = false;
	}
}

/* A "string" at c->p, escapes and raw newlines included. */
static int lex_string(struct loader *L, struct cursor *c)
{
	const char *p = c->p + 1;
	uint32_t line = c->line;

	for (; *p && *p != '"'; p++) {
		if (*p == '\\' && p[1])
			p++;
		c->line += *p == '\n';
	}
	if (!*p)
		return fail_at(L, c->file, line,
			       "syntax error: this string is never closed (a '\"' is "
			       "missing)");
	p++;
	if (push(L, TOK_STRING, c->file, line, c->p, p - c->p, c->glued) < 0)
		return -ENOMEM;
	c->p = p;
	return 0;
}

static bool at_include(const struct cursor *c)
{
	const char *p = c->p + strlen("@include");

	if (!c->bol || strncmp(c->p, "@include", strlen("@include")) != 0 ||
	    (*p != ' ' && *p != '\t'))
		return false;
	while (*p == ' ' || *p == '\t')
		p++;
	return *p == '"';
}

static int lex(struct loader *L, uint32_t file, int depth)
{
	struct cursor c = {L->bufs[file], file, 1, true, false};
	int err = 0;

	while (skip_space(L, &c, &err) && *c.p) {
		enum tok_type type;
		size_t n;

		bool included = at_include(&c);

		if (included) {
			err = include_at(L, &c, depth);
		} else if (*c.p == '"') {
			err = lex_string(L, &c);
		} else {
			n = token_at(c.p, &type);
			err = push(L, type, file, c.line, c.p, n, c.glued);
			c.p += n;
		}
		if (err)
			return err;
		c.bol = false;
		/* Nothing is glued to an included file's last token. */
		c.glued = !included;
	}
	return err;
}

/* Read path (an @include "name" of from_file:from_line when depth > 0) and
 * lex it, splicing what it includes. */
static int load_file(struct loader *L, const char *path, const char *name, int depth,
		     uint32_t from_file, uint32_t from_line)
{
	struct conftext *t = L->t;
	const char *kind = NULL;
	size_t len = 0;
	char *text = NULL, *nul;
	uint32_t file = t->nfiles;
	int ret;

	if (depth > CONFTEXT_MAX_DEPTH)
		return fail_at(L, from_file, from_line,
			       "@include \"%s\": files include one another more than %d "
			       "deep (does one include itself?)",
			       name, CONFTEXT_MAX_DEPTH);
	if (depth && t->nfiles > CONFTEXT_MAX_INCLUDES)
		return fail_at(L, from_file, from_line,
			       "@include \"%s\": more than %d @include'd files", name,
			       CONFTEXT_MAX_INCLUDES);
	ret = read_regular(path, CONFTEXT_MAX_BYTES - L->bytes, &text, &len, &kind);
	if (ret < 0) {
		char why[192];
		if (ret == -EFTYPE)
			snprintf(why, sizeof(why), "not a regular file (it is %s)", kind);
		else if (ret == -EFBIG)
			snprintf(why, sizeof(why),
				 "larger than %d KiB, the limit for a configuration and "
				 "all it includes",
				 CONFTEXT_MAX_BYTES / 1024);
		else if (ret == -EACCES)
			/* -t as root reads what the service (a dynamic user) cannot. */
			snprintf(why, sizeof(why),
				 "%s (the packaged service runs as an unprivileged user: "
				 "every user must be able to read it)",
				 strerror(-ret));
		else
			snprintf(why, sizeof(why), "%s", strerror(-ret));
		if (!depth) {
			config_error(L->errs, NULL, "cannot read config %s: %s", path,
				     why);
			return ret == -ENOENT ? -ENOENT : -EINVAL;
		}
		if (strcmp(name, path) == 0)
			return fail_at(L, from_file, from_line, "@include \"%s\": %s",
				       name, why);
		return fail_at(L, from_file, from_line, "@include \"%s\" (%s): %s", name,
			       path, why);
	}
	L->bytes += len;
	L->bufs[file] = text;
	t->files[file] = strdup(path);
	t->nfiles++;
	if (!t->files[file]) {
		config_error(L->errs, NULL, "out of memory reading the configuration");
		return -ENOMEM;
	}
	if ((nul = memchr(text, '\0', len))) {
		uint32_t line = 1;
		for (const char *p = text; p < nul; p++)
			line += *p == '\n';
		return fail_at(L, file, line, "syntax error: a NUL byte");
	}
	return lex(L, file, depth);
}

static uint32_t last_line(const char *text)
{
	uint32_t line = 1;

	for (; *text; text++)
		line += *text == '\n' && text[1];
	return line;
}

int confscan_load(struct loader *L, const char *path)
{
	const char *slash = strrchr(path, '/');
	int ret;

	/* Relative @include names start in the main file's folder. */
	if (slash)
		snprintf(L->dir, sizeof(L->dir), "%.*s/", (int)(slash - path), path);
	ret = load_file(L, path, path, 0, 0, 0);
	if (!ret) /* the end of the main file, on its last line */
		ret = push(L, TOK_EOF, 0, last_line(L->bufs[0]), "", 0, false);
	return ret;
}
