/* SPDX-License-Identifier: MIT */
/* ringechod: argv, the start-up and tear-down order, nothing else. */
#include "config.h"
#include "log.h"
#include "server.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef RINGECHO_VERSION
#define RINGECHO_VERSION "unknown"
#endif

#define EXIT_USAGE  64 /* sysexits.h EX_USAGE */
#define EXIT_CONFIG 78 /* sysexits.h EX_CONFIG */

static void usage(FILE *out)
{
	fprintf(out,
		"Usage: ringechod [OPTION]...\n"
		"TCP echo server (RFC 862) on io_uring.\n\n"
		"  -c, --config FILE       configuration file (default %s)\n"
		"  -l, --listen HOST:PORT  listen here instead of the file's 'listen';\n"
		"                          repeatable; A.B.C.D:PORT or [V6]:PORT\n"
		"  -t, --test-config       check the configuration and exit\n"
		"  -v, --verbose           log at debug level\n"
		"  -V, --version           print the version and exit\n"
		"  -h, --help              print this help and exit\n\n"
		"Signals: TERM/INT graceful shutdown, HUP reload, USR1 log counters.\n"
		"See ringechod(8) and ringechod.conf(5).\n",
		CONFIG_DEFAULT_PATH);
}

static int usage_error(const char *what, const char *arg)
{
	fprintf(stderr, "ringechod: %s%s\n", what, arg);
	usage(stderr);
	return EXIT_USAGE;
}

/* Parse argv into opts. -1 to go on, else an exit status. */
static int parse_args(int argc, char **argv, struct server_opts *o, bool *test_only)
{
	static const struct option longopts[] = {
	    {"config", required_argument, NULL, 'c'},
	    {"listen", required_argument, NULL, 'l'},
	    {"test-config", no_argument, NULL, 't'},
	    {"verbose", no_argument, NULL, 'v'},
	    {"version", no_argument, NULL, 'V'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	int ch;

	opterr = 0;
	while ((ch = getopt_long(argc, argv, ":c:l:tvVh", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			o->config_path = optarg;
			o->config_explicit = true;
			break;
		case 'l':
			if (o->nlisten == CONFIG_MAX_LISTEN)
				return usage_error("too many -l options (at most 64)",
						   "");
			if (config_parse_addr(optarg, &o->listen[o->nlisten++]) < 0)
				return usage_error("-l: cannot parse address (expected "
						   "A.B.C.D:PORT or [V6]:PORT): ",
						   optarg);
			break;
		case 't':
			*test_only = true;
			break;
		case 'v':
			o->verbose = true;
			break;
		case 'V':
			printf("ringechod %s\n", RINGECHO_VERSION);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		case ':':
			return usage_error("option needs an argument: ",
					   argv[optind - 1]);
		default:
			return usage_error("unknown option: ", argv[optind - 1]);
		}
	}
	if (optind < argc)
		return usage_error("unexpected argument: ", argv[optind]);
	return -1;
}

/* The file, the defaults (no default file), then the command line. */
static int load_config(struct config *cfg, const struct server_opts *o)
{
	struct config_errors errs;
	int ret = config_load(cfg, o->config_path, &errs);

	if (ret == -ENOENT && !o->config_explicit) {
		config_defaults(cfg);
		log_info("no %s; using built-in defaults", o->config_path);
	} else if (ret < 0) {
		for (unsigned i = 0; i < errs.count; i++)
			log_error("%s", errs.msg[i]);
		return EXIT_CONFIG;
	}
	if (o->nlisten) {
		memcpy(cfg->listen, o->listen, sizeof(cfg->listen));
		cfg->nlisten = o->nlisten;
	}
	if (o->verbose)
		cfg->log_level = LOG_DEBUG;
	return 0;
}

int main(int argc, char **argv)
{
	struct server_opts opts = {.config_path = CONFIG_DEFAULT_PATH};
	struct config cfg;
	struct server *s;
	bool test_only = false;
	int ret;

	ret = parse_args(argc, argv, &opts, &test_only);
	if (ret >= 0)
		return ret;
	ret = load_config(&cfg, &opts);
	if (ret)
		return ret;
	if (test_only) {
		printf("ringechod: configuration file %s is valid\n", opts.config_path);
		return 0;
	}
	log_set_level(cfg.log_level);
	log_notice("ringechod %s starting", RINGECHO_VERSION);
	/* Big (listen addresses, tables): keep it off the stack. */
	s = malloc(sizeof(*s));
	if (!s) {
		log_error("out of memory");
		return 1;
	}
	ret = server_init(s, &cfg, &opts);
	if (ret == 0)
		ret = server_run(s);
	server_deinit(s);
	free(s);
	return ret;
}
