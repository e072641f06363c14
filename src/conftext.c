/* SPDX-License-Identifier: MIT */
#include "conftext.h"
#include "confscan.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the grammar (lib/grammar.y) ----------------------------------------- */

struct parser {
	struct loader *L;
	size_t i;
	unsigned depth;
};

static const struct tok *peek(const struct parser *p)
{
	return &p->L->toks[p->i];
}

static const struct tok *take(struct parser *p)
{
	const struct tok *t = &p->L->toks[p->i];

	if (t->type != TOK_EOF)
		p->i++;
	return t;
}

static int tok_error(struct parser *p, const struct tok *t, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int tok_error(struct parser *p, const struct tok *t, const char *fmt, ...)
{
	char where[PATH_MAX + 16];
	va_list ap;

	confscan_where(p->L, t->file, t->line, where, sizeof(where));
	va_start(ap, fmt);
	config_verror(p->L->errs, where, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

/* Words are quoted in messages up to this many bytes, then "...". */
#define QUOTE_MAX     40
#define QUOTED_LEN(n) (int)((n) > QUOTE_MAX ? QUOTE_MAX : (n))
#define ELLIPSIS(n)   ((n) > QUOTE_MAX ? "..." : "")
/* A token's text as "%.*s" arguments, cut to QUOTE_MAX (NULL: nothing). */
#define QUOTED(t) (t) ? QUOTED_LEN((t)->len) : 0, (t) ? (t)->p : ""

/* A token as a message names it. */
static const char *describe(const struct tok *t, char *buf, size_t len)
{
	if (t->type == TOK_EOF)
		return "the end of the file";
	if (t->type == TOK_STRING)
		return "a string";
	if (t->type == TOK_GARBAGE && !isprint((unsigned char)*t->p))
		snprintf(buf, len, "the byte 0x%02x", (unsigned char)*t->p);
	else if (t->type == TOK_GARBAGE && *t->p == '@')
		return "'@' (an @include \"file\" must start its own line)";
	else
		snprintf(buf, len, "'%.*s%s'", QUOTED_LEN(t->len), t->p,
			 ELLIPSIS(t->len));
	return buf;
}

/* Which scalars may share an array: libconfig wants one type throughout
 * (every integer is 64-bit here, once widened). 0: not a scalar. */
static int scalar_class(enum tok_type type)
{
	switch (type) {
	case TOK_INT:
	case TOK_INT64:
	case TOK_HEX:
	case TOK_HEX64:
		return 1;
	case TOK_FLOAT:
		return 2;
	case TOK_BOOL:
		return 3;
	case TOK_STRING:
		return 4;
	default:
		return 0;
	}
}

static bool closes_or_separates(enum tok_type type)
{
	return type == TOK_COMMA || type == TOK_SEMI || type == TOK_EOF ||
	       type == TOK_ARRAY_END || type == TOK_LIST_END || type == TOK_GROUP_END;
}

/* A value with something stuck to it ("256k", "10ms", 127.0.0.1:7): one
 * word to a reader, several tokens to libconfig, so name the whole word. */
/* Is t the name of a new setting ("1b = 2" is "1" then "b = 2")? */
static bool starts_setting(const struct tok *t)
{
	return t->type == TOK_NAME && t[1].type == TOK_EQUALS;
}

static int after_scalar(struct parser *p, const struct tok *v, const struct tok *name)
{
	const struct tok *n = peek(p), *last = v;

	if (!n->glued || closes_or_separates(n->type) || starts_setting(n))
		return 0;
	while (last[1].glued && last[1].file == v->file &&
	       !closes_or_separates(last[1].type) && !starts_setting(&last[1]))
		last++;
	return tok_error(
	    p, v,
	    "syntax error: %.*s%s'%.*s%s' is not a value: a string needs double "
	    "quotes, and a number takes no unit (sizes are in bytes, times "
	    "in milliseconds)",
	    QUOTED(name), name ? " = " : "", QUOTED_LEN(last->p + last->len - v->p), v->p,
	    ELLIPSIS(last->p + last->len - v->p));
}

static int parse_value(struct parser *p, const struct tok *name);
static int parse_settings(struct parser *p, enum tok_type end);

static int unclosed(struct parser *p, const struct tok *open, char want, const char *what)
{
	const struct tok *t = peek(p);
	char buf[64];

	if (t->type == TOK_EOF)
		return tok_error(p, open,
				 "syntax error: this '%.*s' is never closed by '%c'", 1,
				 open->p, want);
	return tok_error(
	    p, t,
	    "syntax error: expected ',' or '%c' in the %s opened on line %u, "
	    "found %s",
	    want, what, open->line, describe(t, buf, sizeof(buf)));
}

/* [ scalar, ... ] or ( value, ... ): elements separated by commas. */
static int parse_elements(struct parser *p, enum tok_type end, bool array)
{
	const struct tok *open = take(p);
	char buf[64];
	int cls = 0, ret;

	if (++p->depth > CONFTEXT_MAX_NESTING)
		return tok_error(p, open,
				 "syntax error: lists, arrays and groups nested "
				 "more than %d deep",
				 CONFTEXT_MAX_NESTING);
	while (peek(p)->type != end) {
		const struct tok *t = peek(p);
		if (array && scalar_class(t->type) == 0 && t->type != TOK_NAME)
			return t->type == TOK_EOF
				   ? unclosed(p, open, ']', "array")
				   : tok_error(
					 p, t,
					 "syntax error: an array [ ] holds numbers, "
					 "strings or booleans (a list ( ) holds "
					 "anything); "
					 "found %s",
					 describe(t, buf, sizeof(buf)));
		if (array && cls && scalar_class(t->type) && scalar_class(t->type) != cls)
			return tok_error(
			    p, t,
			    "syntax error: the elements of an array must all "
			    "be of one type (numbers, strings or booleans)");
		cls = scalar_class(t->type);
		if ((ret = parse_value(p, NULL)))
			return ret;
		if (peek(p)->type != TOK_COMMA)
			break;
		take(p);
		if (peek(p)->type == end)
			return tok_error(p, peek(p),
					 "syntax error: a ',' with no value after it");
	}
	if (peek(p)->type != end)
		return unclosed(p, open, array ? ']' : ')', array ? "array" : "list");
	take(p);
	p->depth--;
	return 0;
}

static int parse_group(struct parser *p)
{
	const struct tok *open = take(p);
	int ret;

	if (++p->depth > CONFTEXT_MAX_NESTING)
		return tok_error(p, open,
				 "syntax error: lists, arrays and groups nested "
				 "more than %d deep",
				 CONFTEXT_MAX_NESTING);
	if ((ret = parse_settings(p, TOK_GROUP_END)))
		return ret;
	if (peek(p)->type != TOK_GROUP_END)
		return unclosed(p, open, '}', "group");
	take(p);
	p->depth--;
	return 0;
}

/* A bare word where a value belongs: a missing value, or a string without
 * its quotes (log_level = info). */
static int bare_word(struct parser *p, const struct tok *name, const struct tok *t)
{
	if (p->L->toks[p->i + 1].type == TOK_EQUALS && name)
		return tok_error(p, name, "syntax error: '%.*s' has no value",
				 QUOTED(name));
	return tok_error(p, t,
			 "syntax error: %.*s%s%.*s: a string needs double quotes: "
			 "\"%.*s\"",
			 QUOTED(name), name ? " = " : "", QUOTED(t), QUOTED(t));
}

static int parse_value(struct parser *p, const struct tok *name)
{
	const struct tok *t = peek(p);
	char buf[64];

	switch ((enum tok_type)t->type) {
	case TOK_STRING:
		while (peek(p)->type == TOK_STRING) /* "a" "b" is "ab" */
			take(p);
		return after_scalar(p, t, name);
	case TOK_BOOL:
	case TOK_INT:
	case TOK_INT64:
	case TOK_HEX:
	case TOK_HEX64:
	case TOK_FLOAT:
		take(p);
		return after_scalar(p, t, name);
	case TOK_ARRAY_START:
		return parse_elements(p, TOK_ARRAY_END, true);
	case TOK_LIST_START:
		return parse_elements(p, TOK_LIST_END, false);
	case TOK_GROUP_START:
		return parse_group(p);
	case TOK_NAME:
		return bare_word(p, name, t);
	default:
		if (name)
			return tok_error(p, t,
					 "syntax error: '%.*s' has no value (found %s)",
					 QUOTED(name), describe(t, buf, sizeof(buf)));
		return tok_error(p, t, "syntax error: expected a value, found %s",
				 describe(t, buf, sizeof(buf)));
	}
}

/* libconfig refuses a name set twice in one group; say where both are. */
static int check_unique(struct parser *p, const struct tok **names, unsigned n)
{
	const struct tok *t = names[n];

	for (unsigned i = 0; i < n; i++) {
		if (names[i]->len == t->len && memcmp(names[i]->p, t->p, t->len) == 0) {
			char first[PATH_MAX + 16];
			confscan_where(p->L, names[i]->file, names[i]->line, first,
				       sizeof(first));
			return tok_error(p, t, "'%.*s' is set twice (first at %s)",
					 QUOTED(t), first);
		}
	}
	return 0;
}

static int parse_settings(struct parser *p, enum tok_type end)
{
	const struct tok **names = NULL;
	unsigned n = 0;
	char buf[64];
	int ret = 0;

	while (!ret && peek(p)->type != end && peek(p)->type != TOK_EOF) {
		const struct tok *t = take(p);
		if (t->type != TOK_NAME) {
			ret = tok_error(
			    p, t, "syntax error: expected a setting name%s, found %s",
			    n ? " (or the end of the previous value)" : "",
			    describe(t, buf, sizeof(buf)));
			break;
		}
		if (n == CONFTEXT_MAX_SETTINGS) {
			ret = tok_error(p, t, "more than %d settings in one group",
					CONFTEXT_MAX_SETTINGS);
			break;
		}
		if (n % 64 == 0) {
			const struct tok **v = realloc(names, (n + 64) * sizeof(*v));
			if (!v) {
				ret = tok_error(
				    p, t, "out of memory reading the configuration");
				break;
			}
			names = v;
		}
		names[n] = t;
		if ((ret = check_unique(p, names, n++)))
			break;
		if (peek(p)->type != TOK_EQUALS) {
			ret = tok_error(p, peek(p),
					"syntax error: expected '=' after '%.*s', "
					"found %s",
					QUOTED(t), describe(peek(p), buf, sizeof(buf)));
			break;
		}
		take(p);
		ret = parse_value(p, t);
		if (peek(p)->type == TOK_SEMI || peek(p)->type == TOK_COMMA)
			take(p); /* the terminator is optional */
	}
	free(names);
	return ret;
}

/* ---- the text libconfig reads ---------------------------------------------- */

/* One token per line, so that a line of the text names a place in a file.
 * Integer literals get an L: libconfig 1.5 stores one without it in 32 bits
 * and wraps it silently (4294967297 would load as 1). */
static int emit(struct loader *L)
{
	struct conftext *t = L->t;
	size_t len = 1, lines = 0, o = 0;

	for (size_t i = 0; i + 1 < L->ntoks; i++) {
		const struct tok *k = &L->toks[i];
		len += k->len + 2;
		lines++;
		for (uint32_t j = 0; j < k->len; j++) /* a string may span lines */
			lines += k->p[j] == '\n';
	}
	t->text = malloc(len);
	t->lines = malloc((lines + 1) * sizeof(*t->lines));
	if (!t->text || !t->lines) {
		config_error(L->errs, NULL, "out of memory reading the configuration");
		return -ENOMEM;
	}
	for (size_t i = 0; i + 1 < L->ntoks; i++) {
		const struct tok *k = &L->toks[i];
		uint32_t line = k->line;

		t->lines[t->nlines++] = (struct conftext_pos){k->file, line};
		for (uint32_t j = 0; j < k->len; j++) {
			t->text[o++] = k->p[j];
			if (k->p[j] == '\n')
				t->lines[t->nlines++] =
				    (struct conftext_pos){k->file, ++line};
		}
		if (k->type == TOK_INT || k->type == TOK_HEX)
			t->text[o++] = 'L';
		t->text[o++] = '\n';
	}
	t->text[o] = '\0';
	return 0;
}

int conftext_load(struct conftext *t, const char *path, struct config_errors *errs)
{
	struct loader L = {.t = t, .errs = errs};
	struct parser p = {.L = &L};
	int ret;

	memset(t, 0, sizeof(*t));
	ret = confscan_load(&L, path);
	if (!ret)
		ret = parse_settings(&p, TOK_EOF);
	if (!ret)
		ret = emit(&L);
	for (uint32_t i = 0; i < t->nfiles; i++)
		free(L.bufs[i]);
	free(L.toks);
	if (ret)
		conftext_free(t);
	return ret;
}

void conftext_free(struct conftext *t)
{
	for (uint32_t i = 0; i < t->nfiles; i++)
		free(t->files[i]);
	free(t->text);
	free(t->lines);
	memset(t, 0, sizeof(*t));
}

void conftext_where(const struct conftext *t, int line, char *buf, size_t len)
{
	if (line >= 1 && (uint32_t)line <= t->nlines)
		snprintf(buf, len, "%s:%u", t->files[t->lines[line - 1].file],
			 t->lines[line - 1].line);
	else
		snprintf(buf, len, "%s", t->nfiles ? t->files[0] : "?");
}
