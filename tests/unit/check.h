/* SPDX-License-Identifier: MIT */
/* A tiny assertion helper for the unit tests: report every failure with its
 * line, exit non-zero at the end if any failed. */
#ifndef RINGECHO_CHECK_H
#define RINGECHO_CHECK_H

#include <stdio.h>

static int check_failures;

#define CHECK(cond)                                                                      \
	do {                                                                             \
		if (!(cond)) {                                                           \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, \
				#cond);                                                  \
			check_failures++;                                                \
		}                                                                        \
	} while (0)

static inline int check_done(const char *name)
{
	printf("%s: %s\n", name, check_failures ? "FAILED" : "ok");
	return check_failures ? 1 : 0;
}

#endif
