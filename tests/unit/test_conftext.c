/* SPDX-License-Identifier: MIT */
/* The config reader in front of libconfig: it must accept exactly what
 * libconfig's grammar accepts (checked against libconfig itself), say where
 * a problem is through @include's, and refuse what libconfig cannot be
 * handed (non-regular files, too many or too big files). */
#include "check.h"
#include "conftext.h"

#include <errno.h>
#include <libconfig.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[] = "/tmp/ringecho-conftext-XXXXXX";

/* This test hands libconfig invalid text itself, to compare verdicts, and
 * libconfig 1.5 leaks on some syntax errors: that is why the daemon never
 * does. Tell LeakSanitizer (in sanitizer builds) it is not the test's. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
	return "leak:libconfig.so\n";
}

static const char *put(const char *name, const char *text)
{
	static char path[4][512];
	static int next;
	char *p = path[next++ % 4];
	FILE *f;

	snprintf(p, 512, "%s/%s", dir, name);
	f = fopen(p, "w");
	fputs(text, f);
	fclose(f);
	return p;
}

static int load(const char *text, struct conftext *t, struct config_errors *errs)
{
	errs->count = errs->total = 0;
	return conftext_load(t, put("main.conf", text), errs);
}

/* Valid libconfig, every construct its grammar has. */
static const char *const valid[] = {
    "",
    "a = 1;",
    "a: 1",
    "a = 1, b = 2; c = 3",
    "a = 1 b = 2",
    "a = 1b = 2", /* "1" then "b = 2": libconfig's tokens */
    "a = \"x\"y = 2",
    "a = -5; b = +5; c = 0x1F; d = 1L; e = 0x1FL; f = 17LL;",
    "f = 1.5; g = .5; h = 1e3; i = -1.5e-3; j = 5.; k = 2E+2;",
    "t = TRUE; u = fAlSe; v = true;",
    "s = \"a\" \"b\"\n \"c\";",
    "s = \"esc \\\" \\\\ \\n \\t \\x41 \\q\";",
    "s = \"spans\nlines\";",
    "arr = [1, 2, 3]; e = []; f = [\"a\", \"b\"]; g = [1.0, 2.5]; h = [true];",
    "l = (); m = (1, \"a\", [true], {x = 1;}, (2, ()));",
    "g = { a = 1; b = { c = 2 } }; h = {};",
    "# comment\n// comment\n/* block \n comment */ a = 1; # tail\n",
    "*name = 1; a-b_c = 2; x9 = 3;",
    "a=1;b=\"x\";c=(1,2);d=[3];e={f=4;};",
    "trueish = 1; falsey = 2;",
};

/* Not libconfig. */
static const char *const invalid[] = {
    "a",
    "a =",
    "a = ;",
    "= 1",
    "a = 1 2",
    "a = [1, \"x\"]",
    "a = [1, 1.5]",
    "a = [1,]",
    "a = (1,)",
    "a = [,]",
    "a = {",
    "a = [1",
    "a = (1",
    "\"stray\"",
    "a = info;",
    "a = 256k;",
    "a = 10ms;",
    "a = 1; a = 2;",
    "g = { a = 1; a = 2; };",
    "a = @;",
    "a = 1.2.3;",
    "a = [ (1) ];",
    "a = [ {} ];",
    "a = [ [1] ];",
    "a = 0x;",
    "a = 1; }",
    "a = -;",
    "a = \"x\"y;",
    "a = 1; ;",
    "a = { 1 };",
    "a = (b = 1);",
    "1 = 2;",
    "a = 127.0.0.1:7;",
};

static bool libconfig_accepts(const char *text)
{
	config_t lc;
	int ok;

	config_init(&lc);
	ok = config_read_string(&lc, text) == CONFIG_TRUE;
	config_destroy(&lc);
	return ok;
}

static void test_grammar(void)
{
	struct config_errors errs;
	struct conftext t;

	for (size_t i = 0; i < sizeof(valid) / sizeof(valid[0]); i++) {
		if (!libconfig_accepts(valid[i]))
			fprintf(stderr, "libconfig rejects %s\n", valid[i]);
		CHECK(libconfig_accepts(valid[i]));
		if (load(valid[i], &t, &errs) != 0) {
			fprintf(stderr, "rejected %s: %s\n", valid[i], errs.msg[0]);
			CHECK(!"valid text rejected");
			continue;
		}
		CHECK(libconfig_accepts(t.text)); /* what it hands on parses too */
		conftext_free(&t);
	}
	for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
		if (libconfig_accepts(invalid[i]))
			fprintf(stderr, "libconfig accepts %s\n", invalid[i]);
		CHECK(!libconfig_accepts(invalid[i]));
		if (load(invalid[i], &t, &errs) == 0) {
			fprintf(stderr, "accepted %s\n", invalid[i]);
			CHECK(!"invalid text accepted");
			conftext_free(&t);
			continue;
		}
		CHECK(errs.count == 1 && strstr(errs.msg[0], "main.conf:"));
	}
}

/* Integers reach libconfig as 64-bit literals, wherever they stand. */
static void test_widened(void)
{
	struct config_errors errs;
	struct conftext t;
	config_t lc;
	long long v = 0;

	/* So 1 and 3L are of one type (libconfig alone refuses to mix them). */
	CHECK(load("a = [1, 0x2, 3L];\n", &t, &errs) == 0 && libconfig_accepts(t.text));
	conftext_free(&t);
	/* Where ringechod is stricter or kinder than libconfig, on purpose: */
	CHECK(load("a = 1; /* never closed\n", &t, &errs) == -EINVAL);
	CHECK(load("a = 1;\n\"b = 2;\n", &t, &errs) == -EINVAL); /* libconfig: a = 1 */
	CHECK(load("a = 1; # no newline at the end", &t, &errs) == 0);
	conftext_free(&t);

	CHECK(load("a = 4294967297;\nb = [0xFFFFFFFF, 2];\n", &t, &errs) == 0);
	config_init(&lc);
	CHECK(config_read_string(&lc, t.text) == CONFIG_TRUE);
	CHECK(config_lookup_int64(&lc, "a", &v) && v == 4294967297LL);
	CHECK(config_setting_get_int64_elem(config_lookup(&lc, "b"), 0) == 0xFFFFFFFFLL);
	config_destroy(&lc);
	conftext_free(&t);
}

/* Messages name the file and line the problem is in, and say what to do. */
static void test_messages(void)
{
	struct config_errors errs;
	struct conftext t;
	char where[600];

	CHECK(load("\n\nbuffer_size = 256k;\n", &t, &errs) == -EINVAL);
	CHECK(strstr(errs.msg[0], "main.conf:3: syntax error: buffer_size = '256k' is "
				  "not a value") != NULL);
	CHECK(load("log_level = info;\n", &t, &errs) == -EINVAL);
	CHECK(strstr(errs.msg[0], "log_level = info: a string needs double quotes: "
				  "\"info\"") != NULL);
	CHECK(load("a = 1;\n\na = 2;\n", &t, &errs) == -EINVAL);
	CHECK(strstr(errs.msg[0], "main.conf:3: 'a' is set twice (first at ") != NULL);
	CHECK(load("a = (1,\n2\n", &t, &errs) == -EINVAL);
	CHECK(strstr(errs.msg[0],
		     "main.conf:1: syntax error: this '(' is never closed") != NULL);

	put("inc.conf", "x = 1;\ny = 2;\n");
	CHECK(load("a = 1;\n@include \"inc.conf\"\nb = 2;\n", &t, &errs) == 0);
	/* One token per line: a = 1 ; x = 1 ; y = 2 ; b = 2 ; */
	conftext_where(&t, 9, where, sizeof(where));
	CHECK(strstr(where, "/inc.conf:2") != NULL);
	conftext_where(&t, 13, where, sizeof(where));
	CHECK(strstr(where, "/main.conf:3") != NULL);
	conftext_free(&t);
	put("inc.conf", "x = 1;\ny = 2 3;\n");
	CHECK(load("a = 1;\n@include \"inc.conf\"\nb = 2;\n", &t, &errs) == -EINVAL);
	CHECK(strstr(errs.msg[0], "inc.conf:2: syntax error") != NULL);
	put("inc.conf", "x = 1;\n");
	CHECK(load("a = 1;\n@include \"inc.conf\"\nb = ;\n", &t, &errs) == -EINVAL);
	CHECK(strstr(errs.msg[0], "main.conf:3: syntax error: 'b' has no value") != NULL);
}

/* Files libconfig 1.5 cannot be given: each refused, none read blindly. */
static void test_files(void)
{
	struct config_errors errs;
	struct conftext t;
	char fifo[512], text[8192], path[600];

	snprintf(fifo, sizeof(fifo), "%s/fifo", dir);
	CHECK(mkfifo(fifo, 0600) == 0);
	CHECK(load("@include \"fifo\"\n", &t, &errs) == -EINVAL);
	CHECK(strstr(errs.msg[0], "main.conf:1: @include \"") &&
	      strstr(errs.msg[0], "not a regular file (it is a FIFO)"));
	errs.count = errs.total = 0;
	CHECK(conftext_load(&t, fifo, &errs) == -EINVAL);
	CHECK(strstr(errs.msg[0], "not a regular file (it is a FIFO)") != NULL);
	errs.count = errs.total = 0;
	CHECK(conftext_load(&t, "/dev/zero", &errs) == -EINVAL);
	CHECK(strstr(errs.msg[0], "not a regular file (it is a character device)") !=
	      NULL);
	CHECK(load("@include \"\"\n", &t, &errs) == -EINVAL);
	CHECK(strstr(errs.msg[0], "main.conf:1: @include \"\": an empty file name") !=
	      NULL);
	CHECK(load("@include \"/tmp\"\n", &t, &errs) == -EINVAL);
	CHECK(strstr(errs.msg[0], "not a regular file (it is a directory)") != NULL);
	CHECK(load("@include \"missing.conf\"\n", &t, &errs) == -EINVAL);
	CHECK(strstr(errs.msg[0], "No such file or directory") != NULL);
	CHECK(load("@include \"main.conf\"\n", &t, &errs) == -EINVAL);
	CHECK(strstr(errs.msg[0], "more than 10 deep") != NULL);
	/* An absolute name is used as written. */
	snprintf(path, sizeof(path), "@include \"%s/inc.conf\"\n", dir);
	put("inc.conf", "x = 5;\n");
	CHECK(load(path, &t, &errs) == 0);
	conftext_free(&t);
	/* Fan-out: 101 @include's of one small file. */
	text[0] = '\0';
	for (int i = 0; i <= CONFTEXT_MAX_INCLUDES; i++)
		strcat(text, "@include \"empty.conf\"\n");
	put("empty.conf", "");
	CHECK(load(text, &t, &errs) == -EINVAL);
	CHECK(strstr(errs.msg[0], "more than 100 @include'd files") != NULL);
	/* Size: all files together. */
	{
		size_t half = CONFTEXT_MAX_BYTES / 2 + 16;
		char *big = malloc(half + 1);
		memset(big, '#', half);
		big[half] = '\0';
		put("half.conf", big);
		free(big);
		CHECK(load("@include \"half.conf\"\n@include \"half.conf\"\n", &t,
			   &errs) == -EINVAL);
		CHECK(strstr(errs.msg[0], "larger than 256 KiB") != NULL);
	}
}

/* A path far longer than an error message: the message is cut, never
 * overflows (this overflowed the stack before). */
static void test_long_paths(void)
{
	struct config_errors errs;
	struct config cfg;
	char deep[1200], file[1300], text[4096] = "";

	snprintf(deep, sizeof(deep), "%s", dir);
	for (int i = 0; i < 3; i++) {
		size_t n = strlen(deep);
		deep[n] = '/';
		memset(deep + n + 1, 'a' + i, 250);
		deep[n + 251] = '\0';
		mkdir(deep, 0700);
	}
	snprintf(file, sizeof(file), "%s/x.conf", deep);
	for (int i = 0; i < 20; i++)
		sprintf(text + strlen(text), "unknown%d = 1;\n", i);
	FILE *f = fopen(file, "w");
	fputs(text, f);
	fclose(f);
	CHECK(config_load(&cfg, file, &errs) == -EINVAL);
	CHECK(errs.count == CONFIG_MAX_ERRORS && errs.total == 20);
	for (unsigned i = 0; i < errs.count; i++)
		CHECK(strlen(errs.msg[i]) < CONFIG_ERROR_LEN);
}

int main(void)
{
	char cmd[128];

	if (!mkdtemp(dir))
		return 1;
	test_grammar();
	test_widened();
	test_messages();
	test_files();
	test_long_paths();
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
	return check_done("conftext");
}
