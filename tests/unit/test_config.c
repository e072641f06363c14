/* SPDX-License-Identifier: MIT */
/* Config parsing: defaults, every key, and each kind of bad input names the
 * file, the line, the key and the allowed range. */
#include "check.h"
#include "config.h"
#include "log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char path[64];

static int load_text(const char *text, struct config *cfg, struct config_errors *errs)
{
	FILE *f;

	strcpy(path, "/tmp/ringecho-test-XXXXXX");
	close(mkstemp(path));
	f = fopen(path, "w");
	fputs(text, f);
	fclose(f);
	int ret = config_load(cfg, path, errs);
	unlink(path);
	return ret;
}

/* The one error contains every needle. */
static int error_says(const struct config_errors *errs, const char *a, const char *b)
{
	return errs->count == 1 && strstr(errs->msg[0], a) &&
	       (!b || strstr(errs->msg[0], b));
}

static void test_defaults_and_values(void)
{
	struct config cfg;
	struct config_errors errs;

	config_defaults(&cfg);
	CHECK(cfg.listen.n == 1 && strcmp(cfg.listen.v[0].text, "127.0.0.1:7777") == 0);
	CHECK(cfg.max_pending_bytes >= cfg.buffer_size);
	CHECK(
	    load_text("backlog = 7;\nmax_connections = 5000;\nbuffer_count = 64;\n"
		      "tcp_nodelay = false;\nlog_level = \"debug\";\n"
		      "listen = [\"[::1]:0\", \"127.0.0.2:9\"];\nidle_timeout_ms = 5L;\n",
		      &cfg, &errs) == 0);
	CHECK(cfg.backlog == 7 && cfg.max_connections == 5000 && cfg.buffer_count == 64);
	CHECK(!cfg.tcp_nodelay && cfg.log_level == LOG_DEBUG && cfg.idle_timeout_ms == 5);
	CHECK(cfg.listen.n == 2 && cfg.listen.v[0].ss.ss_family == AF_INET6);
	CHECK(ntohs(((struct sockaddr_in *)&cfg.listen.v[1].ss)->sin_port) == 9);
	CHECK(cfg.ring_entries == 1024); /* untouched keys keep defaults */
}

static void test_errors(void)
{
	struct config cfg, before;
	struct config_errors errs;

	config_defaults(&cfg);
	before = cfg;
	CHECK(load_text("backlog = 1;\nmax_connections = ;\n", &cfg, &errs) == -EINVAL);
	CHECK(
	    error_says(&errs, ":2: syntax error: 'max_connections' has no value", path));
	CHECK(memcmp(&cfg, &before, sizeof(cfg)) == 0); /* untouched on failure */
	CHECK(load_text("\nmax_conections = 5;\n", &cfg, &errs) == -EINVAL);
	CHECK(error_says(&errs, ":2: unknown key 'max_conections'", "'max_connections'"));
	CHECK(load_text("backlog = \"big\";\n", &cfg, &errs) == -EINVAL);
	CHECK(error_says(&errs, ":1: 'backlog' must be an integer", NULL));
	CHECK(load_text("backlog = 0;\n", &cfg, &errs) == -EINVAL);
	CHECK(error_says(&errs, "'backlog' = 0 is out of range (1..65535)", NULL));
	CHECK(load_text("buffer_count = 1000;\n", &cfg, &errs) == -EINVAL);
	CHECK(error_says(&errs, "'buffer_count' = 1000 must be a power of two", NULL));
	CHECK(load_text("max_pending_bytes = 8192;\nbuffer_size = 65536;\n", &cfg,
			&errs) == -EINVAL);
	CHECK(error_says(
	    &errs, "'max_pending_bytes' = 8192 must be at least 'buffer_size'", NULL));
	CHECK(load_text("listen = [\"localhost:x\"];\n", &cfg, &errs) == -EINVAL);
	CHECK(error_says(&errs, "cannot parse address 'localhost:x'", ":1:"));
	CHECK(load_text("log_level = \"loud\";\n", &cfg, &errs) == -EINVAL);
	CHECK(error_says(&errs, "'log_level' = \"loud\" is not one of", NULL));
	CHECK(load_text("log_level = 3;\n", &cfg, &errs) == -EINVAL);
	CHECK(error_says(&errs, "'log_level' must be a string", NULL));
	CHECK(load_text("tcp_nodelay = 1;\n", &cfg, &errs) == -EINVAL);
	CHECK(error_says(&errs, "'tcp_nodelay' must be a boolean", NULL));
	CHECK(load_text("backlog = 0;\nfoo = 1;\n", &cfg, &errs) == -EINVAL);
	CHECK(errs.count == 2); /* every problem at once */
	/* libconfig 1.5 wraps unsuffixed literals to 32 bits: caught. */
	CHECK(load_text("max_connections = 4294967297;\n", &cfg, &errs) == -EINVAL);
	CHECK(error_says(&errs, "'max_connections' = 4294967297 is out of range", NULL));
	CHECK(load_text("backlog = 0x100000001;\n", &cfg, &errs) == -EINVAL);
	CHECK(error_says(&errs, "'backlog' = 4294967297 is out of range", NULL));
	CHECK(load_text("backlog = 99999999999999999999999;\n", &cfg, &errs) == -EINVAL);
	CHECK(error_says(
	    &errs, "'backlog' is out of range (1..65535): the number is far too large",
	    NULL));
	{
		FILE *f;
		strcpy(path, "/tmp/ringecho-test-XXXXXX");
		close(mkstemp(path));
		f = fopen(path, "w");
		fwrite("backlog = 5;\nbacklog\0 = 6;\n", 1, 27, f);
		fclose(f);
		CHECK(config_load(&cfg, path, &errs) == -EINVAL);
		CHECK(error_says(&errs, ":2: syntax error: a NUL byte", NULL));
		unlink(path);
	}
	/* Integers in comments and strings are left alone, on any line. */
	CHECK(load_text("/* max_connections = 5 */ max_connections = 100;\n", &cfg,
			&errs) == 0);
	CHECK(cfg.max_connections == 100);
	CHECK(load_text("# backlog = 99999999999\nlog_level = \"info\"; // 4294967297\n"
			"backlog: 0x10;\n",
			&cfg, &errs) == 0);
	CHECK(cfg.backlog == 16);
	CHECK(load_text("max_connections =\n  4294967297;\n", &cfg, &errs) == -EINVAL);
	CHECK(error_says(&errs, "'max_connections' = 4294967297 is out of range", NULL));
	CHECK(load_text("listen = [\"127.0.0.1:7\", \"127.0.0.1:7\"];\n", &cfg, &errs) ==
	      -EINVAL);
	CHECK(error_says(&errs, "'127.0.0.1:7' is listed twice", NULL));
	CHECK(config_load(&cfg, "/tmp", &errs) == -EINVAL);
	CHECK(errs.count == 1 &&
	      strstr(errs.msg[0], "not a regular file (it is a directory)"));
	CHECK(config_load(&cfg, "/nonexistent/ringechod.conf", &errs) == -ENOENT);
	CHECK(errs.count == 1 && strstr(errs.msg[0], "No such file"));
}

static void test_addresses(void)
{
	struct listen_addr a;
	const char *good[] = {"0.0.0.0:7",    "127.0.0.1:65535", "[::]:7",
			      "[::1]:0",      "[fe80::1%lo]:80", "[fe80::1%lo]:7",
			      "[fe80::1%1]:7"};
	const char *bad[] = {"",
			     ":7",
			     "127.0.0.1",
			     "127.0.0.1:",
			     "127.0.0.1:65536",
			     "127.0.0.1:-1",
			     "::1:7",
			     "[::1]",
			     "[127.0.0.1]:7",
			     "host:7",
			     "127.0.0.1:7x",
			     "[::1]:+7"};

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		CHECK(config_parse_addr(good[i], &a) == 0);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK(config_parse_addr(bad[i], &a) == -EINVAL);
	/* An IPv6-only socket cannot bind these: -t must say so, not start-up. */
	CHECK(config_parse_addr("[::ffff:127.0.0.1]:7", &a) == -EAFNOSUPPORT);
	CHECK(config_parse_addr("[fe80::1%no-such-if0]:7", &a) == -ENODEV);
	CHECK(config_parse_addr("[fe80::1%]:7", &a) == -EINVAL);
	/* A link-local address names its link; a numeric one must exist. */
	CHECK(config_parse_addr("[fe80::1:2]:80", &a) == -EDESTADDRREQ);
	CHECK(config_parse_addr("[fe80::1%4294967000]:7", &a) == -ENODEV);
	CHECK(config_parse_addr("[::1%lo]:7", &a) == -EBADSLT);
	CHECK(config_parse_addr("[fe80::1%lo]:7", &a) == 0 &&
	      ((struct sockaddr_in6 *)&a.ss)->sin6_scope_id != 0);
}

/* Addresses that could not all be listened on, decided without binding. */
static void test_address_clashes(void)
{
	static const struct {
		const char *a, *b;
		bool dgram;
		bool clash;
	} cases[] = {
	    {"127.0.0.1:7", "127.0.0.1:7", false, true},
	    {"127.0.0.1:7", "127.0.0.1:007", true, true},
	    {"0.0.0.0:7", "127.0.0.1:7", false, true},
	    {"127.0.0.2:7", "0.0.0.0:7", true, true},
	    {"[::]:7", "[::1]:7", false, true},
	    {"[::]:7", "0.0.0.0:7", false, false}, /* IPV6_V6ONLY */
	    {"0.0.0.0:7", "127.0.0.1:8", false, false},
	    {"127.0.0.1:0", "127.0.0.1:0", false, false}, /* two free ports */
	    {"127.0.0.1:7", "127.0.0.2:7", false, false},
	};
	struct listen_addr v[2];
	char why[160];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		CHECK(config_parse_addr(cases[i].a, &v[0]) == 0);
		CHECK(config_parse_addr(cases[i].b, &v[1]) == 0);
		CHECK(config_addr_clash(v, 0, cases[i].dgram, why, sizeof(why)) == 0);
		CHECK((config_addr_clash(v, 1, cases[i].dgram, why, sizeof(why)) < 0) ==
		      cases[i].clash);
	}
	CHECK(config_parse_addr("224.0.0.1:7", &v[0]) == 0);
	CHECK(config_addr_clash(v, 0, false, why, sizeof(why)) < 0 &&
	      strstr(why, "multicast"));
	CHECK(config_addr_clash(v, 0, true, why, sizeof(why)) == 0);
}

/* The example config spells out every key with its default. */
static void test_example_file(void)
{
	struct config cfg, defaults;
	struct config_errors errs;
	char example[512];

	snprintf(example, sizeof(example), "%s/conf/ringechod.conf", RINGECHO_SOURCE_DIR);
	config_defaults(&defaults);
	CHECK(config_load(&cfg, example, &errs) == 0);
	for (unsigned i = 0; i < errs.count; i++)
		fprintf(stderr, "%s\n", errs.msg[i]);
	CHECK(memcmp(&cfg, &defaults, sizeof(cfg)) == 0);
	CHECK(load_text("batch_wait_us = 0;\n", &cfg, &errs) == 0 &&
	      cfg.batch_wait_us == 0);
}

int main(void)
{
	log_set_level(LOG_ERR);
	test_example_file();
	test_defaults_and_values();
	test_errors();
	test_addresses();
	test_address_clashes();
	return check_done("config");
}
