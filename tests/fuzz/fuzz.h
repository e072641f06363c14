/* SPDX-License-Identifier: MIT */
/* Inside the config loader's fuzz harness: what its files share. */
#ifndef RINGECHO_FUZZ_H
#define RINGECHO_FUZZ_H

#include "conftext.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* libFuzzer's entry point; replay.c calls it without libFuzzer. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* An invariant broke: say which on stderr and abort, which libFuzzer and
 * the sanitizers report as a crash with the input that caused it. */
void fuzz_fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

/* Compare conftext's verdict on path with libconfig's own reading of the
 * files, @include'd names relative to dir (libconfig_diff.c). ret, errs
 * and t are conftext_load's. */
void diff_with_libconfig(const char *path, const char *dir, int ret,
			 const struct config_errors *errs, const struct conftext *t);

/* End every text file of the input with one more newline (fuzz_config.c). */
void fuzz_append_newlines(void);

/* libconfig must parse the text conftext hands it, without a leak. */
void check_libconfig_takes(const struct conftext *t);

#endif
