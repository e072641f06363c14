/* SPDX-License-Identifier: MIT */
/* A configuration as libconfig will read it: the main file with every
 * @include spliced in, checked against libconfig's grammar with messages a
 * person can act on, and with its integers widened to 64 bits.
 *
 * libconfig 1.5 cannot be handed a file: its scanner calls exit() on an
 * @include of a directory or of "", blocks forever in fopen() on a FIFO,
 * reads an absolute @include under the main file's folder, wraps integer
 * literals to 32 bits, takes quadratic time over many keys, leaks on some
 * syntax errors and says only "syntax error". So ringechod opens the files
 * itself (regular files only, without blocking, bounded in size and
 * number), splices them, and checks the grammar; libconfig then parses text
 * that it is known to accept, and never opens a file. */
#ifndef RINGECHO_CONFTEXT_H
#define RINGECHO_CONFTEXT_H

#include "config.h"

#include <stddef.h>
#include <stdint.h>

/* All files of one configuration together, as read from disk. */
#define CONFTEXT_MAX_BYTES (256 * 1024)
/* @include directives in one configuration, counted over every file. */
#define CONFTEXT_MAX_INCLUDES 100
/* Files open inside one another (libconfig's own limit); a file that
 * includes itself stops here. */
#define CONFTEXT_MAX_DEPTH 10
/* Lists, arrays and groups inside one another. */
#define CONFTEXT_MAX_NESTING 32
/* Settings in one group: libconfig looks each new one up among the others. */
#define CONFTEXT_MAX_SETTINGS 256

struct conftext_pos {
	uint32_t file; /* index into files[] */
	uint32_t line;
};

struct conftext {
	char *text;		    /* one token per line, integers widened */
	struct conftext_pos *lines; /* lines[i]: where line i + 1 of text came from */
	uint32_t nlines;
	char *files[CONFTEXT_MAX_INCLUDES + 1]; /* [0]: the main file */
	uint32_t nfiles;
};

/* Read path and what it includes, and check it all. 0; -ENOENT when path
 * does not exist; -EINVAL with the problem in errs ("file:line: ..."). On
 * failure t holds nothing to free. */
int conftext_load(struct conftext *t, const char *path, struct config_errors *errs);
void conftext_free(struct conftext *t);

/* Where line `line` (1-based) of t->text came from, as "file:line". */
void conftext_where(const struct conftext *t, int line, char *buf, size_t len);

#endif
