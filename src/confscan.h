/* SPDX-License-Identifier: MIT */
/* Inside conftext: the files read and cut into libconfig's tokens
 * (confscan.c), for the grammar check and the text libconfig gets
 * (conftext.c). Nothing outside those two includes this. */
#ifndef RINGECHO_CONFSCAN_H
#define RINGECHO_CONFSCAN_H

#include "conftext.h"

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The tokens of libconfig 1.5's scanner (lib/scanner.l), which confscan.c
 * follows rule for rule so that what passes here is what libconfig reads. */
enum tok_type {
	TOK_EOF,
	TOK_NAME,
	TOK_EQUALS,
	TOK_COMMA,
	TOK_SEMI,
	TOK_GROUP_START,
	TOK_GROUP_END,
	TOK_ARRAY_START,
	TOK_ARRAY_END,
	TOK_LIST_START,
	TOK_LIST_END,
	TOK_BOOL,
	TOK_INT,
	TOK_INT64,
	TOK_HEX,
	TOK_HEX64,
	TOK_FLOAT,
	TOK_STRING,
	TOK_GARBAGE,
};

struct tok {
	uint8_t type;
	bool glued; /* follows the token before it with no space between */
	uint32_t file, line;
	const char *p; /* its text, inside the file's buffer */
	uint32_t len;
};

struct loader {
	struct conftext *t;
	struct config_errors *errs;
	char *bufs[CONFTEXT_MAX_INCLUDES + 1]; /* file texts; tokens point into them */
	char dir[PATH_MAX];		       /* relative @include names start here */
	struct tok *toks;
	size_t ntoks, cap;
	size_t bytes; /* read so far, all files together */
};

/* Read the configuration at path and everything it includes into L->toks,
 * ending with TOK_EOF. 0, -ENOENT (no such main file) or -EINVAL/-ENOMEM
 * with the problem in L->errs. */
int confscan_load(struct loader *L, const char *path);

/* "file:line" of a place in one of L's files. */
void confscan_where(const struct loader *L, uint32_t file, uint32_t line, char *buf,
		    size_t len);

#endif
