/* SPDX-License-Identifier: MIT */
/* conftext against libconfig 1.5 itself. conftext promises to accept what
 * libconfig's grammar accepts, and to hand on text that means the same, so
 * on files libconfig can safely be given:
 * - what conftext accepts, libconfig parses, without a leak;
 * - what libconfig accepts, conftext accepts, and the other way round,
 *   except where ringechod differs on purpose (tests/unit/test_conftext.c);
 * - when both accept, libconfig reads the same settings, with the same
 *   values, on the same lines, from the raw text and from conftext's. */
#include "fuzz.h"

#include <libconfig.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FUZZ_LSAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define FUZZ_LSAN 1
#endif
#ifdef FUZZ_LSAN
#include <sanitizer/lsan_interface.h>
#endif

/* libconfig 1.5 leaks on some syntax errors (no %destructor for a string
 * token); that is one reason ringechod never hands it raw text, so a leak
 * while it parses raw text is not a finding. */
static void leaks_ignored(bool on)
{
#ifdef FUZZ_LSAN
	if (on)
		__lsan_disable();
	else
		__lsan_enable();
#else
	(void)on;
#endif
}

static const char *error_text(const config_t *lc)
{
	return config_error_text(lc) ? config_error_text(lc) : "(no message)";
}

/* libconfig reading the files itself. */
static bool parse_raw(config_t *lc, const char *path, const char *dir)
{
	bool ok;

	config_init(lc);
	config_set_include_dir(lc, dir);
	leaks_ignored(true);
	ok = config_read_file(lc, path) == CONFIG_TRUE;
	leaks_ignored(false);
	return ok;
}

void check_libconfig_takes(const struct conftext *t)
{
	char where[PATH_MAX + 16];
	config_t lc;

	config_init(&lc);
	if (config_read_string(&lc, t->text) != CONFIG_TRUE) {
		conftext_where(t, config_error_line(&lc), where, sizeof(where));
		fuzz_fail("conftext accepts it, libconfig refuses its text at %s: %s",
			  where, error_text(&lc));
	}
	config_destroy(&lc);
}

/* conftext refuses, libconfig would accept: one of the limits ringechod
 * sets on purpose (the messages are conftext's own). */
static bool refused_on_purpose(const char *msg)
{
	static const char *const intended[] = {
	    "this /* comment is never closed", /* at the end: libconfig ignores it */
	    "this string is never closed",     /* libconfig drops the rest of the file */
	    "more than 256 settings in one group", /* CONFTEXT_MAX_SETTINGS */
	    "nested more than 32 deep",		   /* CONFTEXT_MAX_NESTING */
	    "larger than 256 KiB",		   /* CONFTEXT_MAX_BYTES */
	    "more than 100 @include'd files",	   /* CONFTEXT_MAX_INCLUDES */
	};

	for (size_t i = 0; i < sizeof(intended) / sizeof(intended[0]); i++)
		if (strstr(msg, intended[i]))
			return true;
	return false;
}

/* conftext accepts, libconfig refuses: a # or // comment on a file's last
 * line with no newline after it, or integers of both widths in one array
 * (all 64-bit once widened). Anything else is a divergence. Appends a
 * newline to each file. */
static bool accepted_on_purpose(const char *path, const char *dir)
{
	config_t lc;
	bool ok;

	fuzz_append_newlines();
	ok = parse_raw(&lc, path, dir) ||
	     (config_error_text(&lc) &&
	      strcmp(config_error_text(&lc), "mismatched element type in array") == 0);
	config_destroy(&lc);
	return ok;
}

/* libconfig alone keeps an integer literal without L in 32 bits (Debian's
 * 1.5 wraps 4294967297 to 1, 0x100000001 too); conftext's L keeps all 64.
 * So the low 32 bits agree, and a value that fits is the same. */
static bool same_int(const config_setting_t *r, const config_setting_t *w)
{
	int rv = config_setting_get_int(r);
	long long wv = config_setting_get_int64(w);

	return (int)(uint32_t)(unsigned long long)wv == rv;
}

static bool same_scalar(const config_setting_t *r, const config_setting_t *w)
{
	double rf, wf;

	switch (config_setting_type(r)) {
	case CONFIG_TYPE_INT:
		return same_int(r, w);
	case CONFIG_TYPE_INT64:
		return config_setting_get_int64(r) == config_setting_get_int64(w);
	case CONFIG_TYPE_FLOAT:
		rf = config_setting_get_float(r);
		wf = config_setting_get_float(w);
		return memcmp(&rf, &wf, sizeof(rf)) == 0;
	case CONFIG_TYPE_STRING:
		return strcmp(config_setting_get_string(r),
			      config_setting_get_string(w)) == 0;
	case CONFIG_TYPE_BOOL:
		return config_setting_get_bool(r) == config_setting_get_bool(w);
	default: /* an aggregate: its elements are compared one by one */
		return config_setting_length(r) == config_setting_length(w);
	}
}

struct diff {
	const struct conftext *t;
	const char *path, *dir;
};

/* libconfig records a setting's file and line as it reads it; conftext's
 * map must send the line in its text back to that same place. */
static void same_line(const struct diff *d, const config_setting_t *r,
		      const config_setting_t *w)
{
	char want[PATH_MAX + 16], got[PATH_MAX + 16];
	const char *file = config_setting_source_file(r);
	unsigned line = config_setting_source_line(r);

	if (config_setting_is_root(r))
		return;
	if (strcmp(file, d->path) == 0) /* else an @include'd name, as written */
		snprintf(want, sizeof(want), "%s:%u", file, line);
	else
		snprintf(want, sizeof(want), "%s/%s:%u", d->dir, file, line);
	conftext_where(d->t, (int)config_setting_source_line(w), got, sizeof(got));
	if (strcmp(want, got) != 0)
		fuzz_fail("libconfig reads '%s' at %s, conftext's text maps it to %s",
			  config_setting_name(r) ? config_setting_name(r) : "(element)",
			  want, got);
}

static void same_setting(const struct diff *d, const config_setting_t *r,
			 const config_setting_t *w)
{
	const char *rn = config_setting_name(r), *wn = config_setting_name(w);
	int rt = config_setting_type(r), wt = config_setting_type(w);
	unsigned line = config_setting_source_line(r);

	if ((rn || wn) && (!rn || !wn || strcmp(rn, wn) != 0))
		fuzz_fail("line %u: libconfig reads '%s' from the file, '%s' from "
			  "conftext's text",
			  line, rn ? rn : "(element)", wn ? wn : "(element)");
	same_line(d, r, w);
	if (rt == CONFIG_TYPE_INT ? wt != CONFIG_TYPE_INT64 : rt != wt)
		fuzz_fail("line %u: '%s' has type %d in the file, %d in conftext's text",
			  line, rn ? rn : "(element)", rt, wt);
	if (!same_scalar(r, w))
		fuzz_fail("line %u: '%s' has another value in conftext's text", line,
			  rn ? rn : "(element)");
	for (int i = 0; config_setting_is_aggregate(r) && i < config_setting_length(r);
	     i++)
		same_setting(d, config_setting_get_elem(r, i),
			     config_setting_get_elem(w, i));
}

void diff_with_libconfig(const char *path, const char *dir, int ret,
			 const struct config_errors *errs, const struct conftext *t)
{
	struct diff d = {t, path, dir};
	config_t raw, wide;
	bool raw_ok = parse_raw(&raw, path, dir);

	if (raw_ok && ret != 0 && !refused_on_purpose(errs->msg[0]))
		fuzz_fail("libconfig accepts the files, conftext refuses them: %s",
			  errs->msg[0]);
	if (!raw_ok && ret == 0 && !accepted_on_purpose(path, dir))
		fuzz_fail("conftext accepts the files, libconfig refuses them at %s:%d: "
			  "%s",
			  config_error_file(&raw) ? config_error_file(&raw) : "?",
			  config_error_line(&raw), error_text(&raw));
	if (raw_ok && ret == 0) {
		config_init(&wide);
		if (config_read_string(&wide, t->text) != CONFIG_TRUE)
			fuzz_fail("libconfig refuses conftext's text");
		same_setting(&d, config_root_setting(&raw), config_root_setting(&wide));
		config_destroy(&wide);
	}
	config_destroy(&raw);
}
