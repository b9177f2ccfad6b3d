/*
 * siteward: the administrator's command line. Every command is a call to the site
 * server's API with the site's admin certificate; every command takes --json.
 */
#include "cli.h"

#include "paths.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "version.h"

/* A synopsis this wide or wider puts its description on the next line. */
#define SYNOPSIS_COLUMNS 31

/* One line of the summary --help prints: a synopsis (more lines after a '\n') and what
 * it does (the same). */
struct usage_line {
	const char *synopsis;
	const char *what;
};

struct command {
	const char *name;
	const char *alias; /* another word for it, or NULL */
	int (*run)(struct cli *c, int argc, char **argv);
	int local; /* works without the server: no client_setup() */
	struct usage_line usage[3];
};

static int cmd_version(struct cli *c, int argc, char **argv)
{
	printf("siteward %s\n", SW_VERSION);
	return 0;
}

/* Every command: dispatch and --help both come from here, in this order. */
static const struct command commands[] = {
    {"token",
     NULL,
     cmd_token,
     0,
     {{"token create [--uses N] [--ttl DURATION]",
       "print an enrollment token for N machines\n(default 1), valid 1h unless --ttl"},
      {"token list", "tokens: uses left, who used them (no secrets)"},
      {"token revoke ID", "refuse a token's unused uses"}}},
    {"systems",
     NULL,
     cmd_systems,
     0,
     {{"systems", "list site systems and their health"},
      {"systems remove NAME", "remove a system and revoke its certificate"}}},
    {"role",
     NULL,
     cmd_role,
     0,
     {{"role add|remove NAME ROLE", "give a system a role, or take it away"}}},
    {"service",
     NULL,
     cmd_service,
     0,
     {{"service status|start|stop|restart NAME SERVICE",
       "control a role's service, within --timeout"},
      {"service logs NAME SERVICE [--lines N]", "the tail of a service's log"}}},
    {"product",
     NULL,
     cmd_product,
     0,
     {{"product add|set|remove|list", "registered products and their licenses"}}},
    {"group",
     NULL,
     cmd_group,
     0,
     {{"group add NAME [--users U1,U2] [--hosts H1,H2]",
       "make a group of users and hosts, or add\nmembers to it"},
      {"group remove NAME [--users U1,U2] [--hosts H1,H2]",
       "take members out of a group; without them,\ndelete the group"},
      {"group list", "the groups and their members"}}},
    {"inventory",
     NULL,
     cmd_inventory,
     0,
     {{"inventory NAME", "a system's hardware, its packages and their\nchanges"}}},
    {"software",
     NULL,
     cmd_software,
     0,
     {{"software [--package NAME]",
       "which systems have a package at which version;\nwithout one, every package"}}},
    {"collection",
     NULL,
     cmd_collection,
     0,
     {{"collection add NAME --where EXPR | --systems A,B",
       "a collection of systems, by a condition on\ntheir facts and inventory, or by name"},
      {"collection list | members NAME | remove NAME", "the collections, and who is in one"}}},
    {"exec",
     NULL,
     cmd_exec,
     0,
     {{"exec COLLECTION [--timeout S] -- COMMAND [ARGS]",
       "run a command on every member, bounded:\neach one's exit status and output (admin)"}}},
    {"deploy",
     NULL,
     cmd_deploy,
     0,
     {{"deploy FILE.deb --to COLLECTION [--parallel N]\n"
       "            [--max-failures N] [--window HH:MM-HH:MM] [--no-wait]",
       "install a Debian package on every member,\nbounded; members away get it when back"},
      {"deploy remove PACKAGE --to COLLECTION", "remove a package from every member"},
      {"deploy status [ID] | cancel ID", "the deployments, and where each member stands"}}},
    {"license",
     NULL,
     cmd_license,
     0,
     {{"license status [--product NAME]",
       "every license in use and every checkout waiting,\nfrom every metering server"},
      {"license reclaim LEASE | --user U | --host H [--product NAME]",
       "take licenses back from hung or abandoned\nprograms"},
      {"license report [--days N]",
       "per product: licenses, peak, installs and\nruns: the licenses and installs that can go"}}},
    {"usage",
     NULL,
     cmd_usage,
     0,
     {{"usage [--product NAME] [--since YYYY-MM-DD|Nd]", "software usage by product and day"}}},
    {"package",
     NULL,
     cmd_package,
     1,
     {{"package build --version V [--min-version V] --from PREFIX -o FILE",
       "a service pack of an install tree, signed\nwith the site's key"},
      {"package verify FILE", "check a package against the site's key"}}},
    {"upgrade",
     NULL,
     cmd_upgrade,
     0,
     {{"upgrade check FILE [--strict]", "preflight of a package on every system"},
      {"upgrade run FILE [--parallel N] [--stop-timeout S]\n"
       "            [--on-stuck defer|kill|remove-role|fail] [--max-failures N]",
       "upgrade the site server, then every system"},
      {"upgrade status [--follow]|resume|rollback",
       "the latest upgrade: its progress and report,\ncontinue it, or return to the old "
       "version"}}},
    {"cert",
     NULL,
     cmd_cert,
     0,
     {{"cert scrape --out DIR [--name NAME]",
       "a certificate for Prometheus to read /metrics\nwith: DIR gets scrape.crt, scrape.key, "
       "ca.crt"}}},
    {"admin",
     NULL,
     cmd_admin,
     0,
     {{"admin add NAME --role viewer|operator|admin --out DIR [--server HOST:PORT]",
       "an administrator's own certificate, in a folder\nfor siteward --site DIR and a "
       "browser"},
      {"admin list", "the site's administrators and their roles"},
      {"admin remove NAME", "remove an administrator and revoke its certificate"}}},
    {"audit",
     NULL,
     cmd_audit,
     0,
     {{"audit [--since YYYY-MM-DD|Nd] [--who NAME] [--limit N]",
       "what administrators changed, and what they\nwere refused, newest first"}}},
    {"ca",
     NULL,
     cmd_ca,
     0,
     {{"ca status [--wait SECONDS]",
       "the site's CAs and a rotation's progress;\n--wait follows it until it is over"},
      {"ca rotate", "a new site CA, taken by every system\nwithout an outage"}}},
    {"version", "--version", cmd_version, 1, {{"version", "print the version"}}},
};

/* Prints `text` line by line, the first after `first` (already indented), the others
 * indented by `indent` columns. */
static void print_lines(FILE *f, const char *text, int indent)
{
	const char *nl;

	while ((nl = strchr(text, '\n'))) {
		fprintf(f, "%.*s\n%*s", (int)(nl - text), text, indent, "");
		text = nl + 1;
	}
	fputs(text, f);
}

static void usage_line(FILE *f, const struct usage_line *u)
{
	const char *last = strrchr(u->synopsis, '\n');
	int width = (int)strlen(last ? last + 1 : u->synopsis);

	fputs("  ", f);
	print_lines(f, u->synopsis, 2);
	if (width < SYNOPSIS_COLUMNS)
		fprintf(f, "%*s", SYNOPSIS_COLUMNS - width, "");
	else
		fprintf(f, "\n%*s", 2 + SYNOPSIS_COLUMNS, "");
	print_lines(f, u->what, 2 + SYNOPSIS_COLUMNS);
	fputc('\n', f);
}

static void usage(FILE *f)
{
	fputs("usage: siteward [--site DIR] [--json] [--timeout SECONDS] COMMAND ...\n"
	      "\n"
	      "commands:\n",
	      f);
	for (size_t i = 0; i < SW_ARRAY_LEN(commands); i++)
		for (size_t j = 0;
		     j < SW_ARRAY_LEN(commands[i].usage) && commands[i].usage[j].synopsis; j++)
			usage_line(f, &commands[i].usage[j]);
	fputs("\n"
	      "The site folder is --site DIR, $SITEWARD_SITE or " SW_PATH_SERVER_DIR ".\n",
	      f);
}

static const struct command *command_find(const char *name)
{
	for (size_t i = 0; i < SW_ARRAY_LEN(commands); i++)
		if (strcmp(name, commands[i].name) == 0 ||
		    (commands[i].alias && strcmp(name, commands[i].alias) == 0))
			return &commands[i];
	return NULL;
}

/* Global options may stand anywhere, so `siteward systems --json` works; the rest go to
 * `args`. 0 to go on; otherwise the exit status (-1 for 0: --help). */
static int options(struct cli *c, int argc, char **argv, char **args, int *nargs)
{
	c->site_arg = sw_path_dir(NULL, "SITEWARD_SITE", SW_PATH_SERVER_DIR);
	c->timeout_ms = 30000;
	for (int i = 1, rest = 0; i < argc; i++) {
		/* after "--", a command's own arguments (siteward exec): none is ours */
		if (rest || strcmp(argv[i], "--") == 0) {
			rest = 1;
			if (*nargs < 63)
				args[(*nargs)++] = argv[i];
		} else if (strcmp(argv[i], "--json") == 0) {
			c->json = 1;
		} else if (strcmp(argv[i], "--site") == 0 && i + 1 < argc) {
			c->site_arg = argv[++i];
		} else if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc) {
			double t;
			if (sw_number_parse(argv[++i], 0.01, 86400, &t)) {
				fprintf(stderr, "siteward: --timeout takes a number of seconds\n");
				return 2;
			}
			c->timeout_ms = (unsigned)(t * 1000);
		} else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			usage(stdout);
			return -1;
		} else if (*nargs < 63) {
			args[(*nargs)++] = argv[i];
		}
	}
	args[*nargs] = NULL;
	if (*nargs == 0) {
		usage(stderr);
		return 2;
	}
	return 0;
}

int main(int argc, char **argv)
{
	static struct cli c;
	const struct command *cmd;
	char *args[64];
	int nargs = 0, rc;

	if ((rc = options(&c, argc, argv, args, &nargs)))
		return rc < 0 ? 0 : rc;
	cmd = command_find(args[0]);
	/* An unknown word still needs a site first: the error that fits it comes first. */
	if ((!cmd || !cmd->local) && (rc = client_setup(&c, c.site_arg)))
		return rc;
	if (!cmd) {
		fprintf(stderr, "siteward: unknown command '%s'; see siteward --help\n", args[0]);
		return 2;
	}
	return cmd->run(&c, nargs - 1, args + 1);
}
