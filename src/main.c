/* SPDX-License-Identifier: MIT */
/* ringechod: argv, the start-up and tear-down order, nothing else. */
#include "config.h"
#include "lifecycle.h"
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
		"TCP and UDP echo server (RFC 862) on io_uring.\n\n"
		"  -c, --config FILE       configuration file (default %s)\n"
		"  -l, --listen HOST:PORT  listen here instead of the file's 'listen';\n"
		"                          repeatable; A.B.C.D:PORT or [V6]:PORT\n"
		"  -u, --listen-udp HOST:PORT\n"
		"                          answer UDP here instead of the file's\n"
		"                          'listen_udp'; repeatable\n"
		"  -t, --test-config       check the configuration and exit\n"
		"  -v, --verbose           log at debug level\n"
		"  -V, --version           print the version and exit\n"
		"  -h, --help              print this help and exit\n\n"
		"Signals: TERM/INT graceful shutdown, HUP reload, USR1 log counters,\n"
		"USR2 live upgrade (re-execute the program, keeping every connection).\n"
		"See ringechod(8) and ringechod.conf(5).\n",
		CONFIG_DEFAULT_PATH);
}

#define TRY_HELP "Try 'ringechod --help'.\n"

static int usage_error(const char *what, const char *arg)
{
	fprintf(stderr, "ringechod: %s%s\n%s", what, arg, TRY_HELP);
	return EXIT_USAGE;
}

/* -l or -u ADDRESS: -1 to go on, else an exit status. */
static int add_cli_addr(struct addr_list *list, int opt, const char *arg)
{
	char why[160];
	int err;

	if (list->n == CONFIG_MAX_LISTEN) {
		fprintf(stderr, "ringechod: too many -%c options (at most %d)\n%s", opt,
			CONFIG_MAX_LISTEN, TRY_HELP);
		return EXIT_USAGE;
	}
	if ((err = config_parse_addr(arg, &list->v[list->n])) < 0) {
		fprintf(stderr, "ringechod: -%c: cannot parse address '%s' (%s)\n%s", opt,
			arg, config_addr_error(err), TRY_HELP);
		return EXIT_USAGE;
	}
	if (config_addr_clash(list->v, list->n, opt == 'u', why, sizeof(why)) < 0) {
		fprintf(stderr, "ringechod: -%c: '%s' %s\n%s", opt, arg, why, TRY_HELP);
		return EXIT_USAGE;
	}
	list->n++;
	list->set = true;
	return -1;
}

/* What was wrong with the option getopt stopped at: argv[at] holds it
 * (a short option inside a cluster such as -xt is optopt). */
static int bad_option(char **argv, int at, bool missing, const struct option *longopts)
{
	const char *arg = argv[at], *eq;
	char name[64], opt[3] = {'-', (char)optopt, '\0'};
	const struct option *match = NULL;
	unsigned n = 0;

	if (strncmp(arg, "--", 2) != 0)
		return usage_error(
		    missing ? "option needs an argument: " : "unknown option: ", opt);
	eq = strchr(arg, '=');
	snprintf(name, sizeof(name), "%.*s", (int)(eq ? eq - arg : (long)strlen(arg)),
		 arg);
	for (const struct option *o = longopts; o->name; o++) {
		if (strncmp(o->name, name + 2, strlen(name + 2)) != 0)
			continue;
		match = o;
		if (strlen(o->name) == strlen(name + 2)) {
			n = 1; /* an exact match wins */
			break;
		}
		n++;
	}
	if (n > 1)
		return usage_error("ambiguous option: ", name);
	if (n == 0)
		return usage_error("unknown option: ", name);
	if (missing)
		return usage_error("option needs an argument: ", name);
	if (match->has_arg == no_argument && eq)
		return usage_error("option takes no argument: ", name);
	return usage_error("unknown option: ", arg);
}

/* Parse argv into opts. -1 to go on, else an exit status. */
static int parse_args(int argc, char **argv, struct config_cli *o, bool *test_only)
{
	static const struct option longopts[] = {
	    {"config", required_argument, NULL, 'c'},
	    {"listen", required_argument, NULL, 'l'},
	    {"listen-udp", required_argument, NULL, 'u'},
	    {"test-config", no_argument, NULL, 't'},
	    {"verbose", no_argument, NULL, 'v'},
	    {"version", no_argument, NULL, 'V'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	int ch, err;

	opterr = 0;
	for (int at = optind;
	     (ch = getopt_long(argc, argv, "+:c:l:u:tvVh", longopts, NULL)) != -1;
	     at = optind) {
		switch (ch) {
		case 'c':
			o->path = optarg;
			o->path_given = true;
			break;
		case 'l':
		case 'u':
			err = add_cli_addr(ch == 'l' ? &o->listen : &o->listen_udp, ch,
					   optarg);
			if (err >= 0)
				return err;
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
		default: /* '?' or ':' */
			return bad_option(argv, at < optind ? at : optind, ch == ':',
					  longopts);
		}
	}
	if (optind < argc)
		return usage_error("unexpected argument: ", argv[optind]);
	return -1;
}

/* -t: one true sentence about the file, and the exit status. */
static int check_only(const struct config_cli *cli)
{
	struct config_errors errs;
	struct config cfg;
	bool no_file;

	if (config_resolve(&cfg, cli, true, &errs, &no_file) < 0) {
		config_errors_log(&errs);
		log_error("%u error%s in %s", errs.total, errs.total == 1 ? "" : "s",
			  cli->path);
		return EXIT_CONFIG;
	}
	if (no_file)
		printf("ringechod: %s does not exist; ringechod would start with its "
		       "built-in defaults\n",
		       cli->path);
	else
		printf("ringechod: configuration file %s is valid\n", cli->path);
	return 0;
}

/* The configuration for a live upgrade's new program: the file, as at any
 * start; should it not load, the settings the old program ran with, as the
 * connections must go on either way. -1 when there is neither. */
static int upgrade_config(struct config *cfg, const struct config_cli *cli,
			  const struct upgrade_state *from,
			  const struct config_errors *errs)
{
	config_errors_log(errs);
	if (restore_config(from, cfg) == 0) {
		log_error(
		    "upgrade: %s does not load; keeping the settings the old program "
		    "ran with",
		    cli->path);
		return 0;
	}
	log_error("upgrade: %s does not load, and the old program's settings are lost; "
		  "serving on with the built-in defaults",
		  cli->path);
	config_defaults(cfg);
	return 0;
}

int main(int argc, char **argv)
{
	struct config_cli cli = {.path = CONFIG_DEFAULT_PATH};
	struct upgrade_state from;
	struct config_errors errs;
	struct config cfg;
	struct server *s;
	bool test_only = false, no_file;
	int ret, taken;

	ret = parse_args(argc, argv, &cli, &test_only);
	if (ret >= 0)
		return ret;
	if (test_only)
		return check_only(&cli);
	/* A reload or a stop asked for during start-up is done once serving. */
	if ((ret = lifecycle_block_signals()) < 0) {
		log_errno(LOG_ERR, -ret, "cannot block signals");
		return 1;
	}
	/* Before anything that could fail: what the old program left must be
	 * taken, its sockets included, whatever happens next. */
	taken = restore_take(&from);
	if (config_resolve(&cfg, &cli, true, &errs, &no_file) < 0) {
		if (!taken) {
			config_errors_log(&errs);
			return EXIT_CONFIG;
		}
		upgrade_config(&cfg, &cli, &from, &errs);
		no_file = false;
	}
	log_set_level(cfg.log_level);
	if (taken)
		log_notice("ringechod %s taking over from the old program (live upgrade)",
			   RINGECHO_VERSION);
	else if (no_file)
		log_notice(
		    "ringechod %s starting with built-in defaults (%s does not exist)",
		    RINGECHO_VERSION, cli.path);
	else
		log_notice("ringechod %s starting with %s", RINGECHO_VERSION, cli.path);
	/* Big (listen addresses, tables): keep it off the stack. */
	s = calloc(1, sizeof(*s));
	if (!s) {
		log_error("out of memory");
		return 1;
	}
	upgrade_init(&s->upgrade, argv, RINGECHO_VERSION);
	if (taken && strcmp(s->upgrade.test_hook, "initfail") == 0) {
		log_error("upgrade: test hook: the start-up fails");
		ret = 1;
	} else {
		ret = server_init(s, &cfg, &cli, taken ? &from : NULL);
	}
	/* A start-up that failed has adopted no connection (server_init
	 * adopts them last, and nothing after that fails). */
	if (ret && taken)
		restore_farewell(&from, cfg.shutdown_timeout_ms);
	restore_free(&from);
	if (ret == 0)
		ret = server_run(s);
	server_deinit(s);
	free(s);
	return ret;
}
