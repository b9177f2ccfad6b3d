/*
 * siteward: the administrator's command line. Every command is a call to the site
 * server's API with the site's admin certificate; every command takes --json.
 */
#include "cli.h"

#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "version.h"

static void usage(FILE *f)
{
	fprintf(f, "usage: siteward [--site DIR] [--json] [--timeout SECONDS] COMMAND ...\n"
		   "\n"
		   "commands:\n"
		   "  token create [--ttl SECONDS]   print a one-time enrollment token\n"
		   "  systems                        list site systems and their health\n"
		   "  systems remove NAME            remove a system and revoke its certificate\n"
		   "  role add|remove NAME ROLE      give a system a role, or take it away\n"
		   "  service status|start|stop|restart NAME SERVICE\n"
		   "                                 control a role's service, within --timeout\n"
		   "  service logs NAME SERVICE [--lines N]\n"
		   "                                 the tail of a service's log\n"
		   "  product add|set|remove|list    registered products and their licenses\n"
		   "  usage [--product NAME] [--since YYYY-MM-DD|Nd]\n"
		   "                                 software usage by product and day\n"
		   "  package build --version V [--min-version V] --from PREFIX -o FILE\n"
		   "                                 a service pack of an install tree, signed\n"
		   "                                 with the site's key\n"
		   "  package verify FILE            check a package against the site's key\n"
		   "  upgrade check FILE [--strict]  preflight of a package on every system\n"
		   "  upgrade run FILE [--parallel N] [--stop-timeout S]\n"
		   "              [--on-stuck defer|kill|remove-role|fail] [--max-failures N]\n"
		   "                                 upgrade the site server, then every system\n"
		   "  upgrade status|resume|rollback the latest upgrade: its progress and report,\n"
		   "                                 continue it, or return to the old version\n"
		   "  version                        print the version\n"
		   "\n"
		   "The site folder is --site DIR or $SITEWARD_SITE.\n");
}

int main(int argc, char **argv)
{
	struct cli c;
	const char *site = getenv("SITEWARD_SITE");
	char *args[64];
	int nargs = 0, rc;

	memset(&c, 0, sizeof(c));
	c.timeout_ms = 30000;
	/* Global options may stand anywhere, so `siteward systems --json` works. */
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0) {
			c.json = 1;
		} else if (strcmp(argv[i], "--site") == 0 && i + 1 < argc) {
			site = argv[++i];
		} else if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc) {
			double t;
			if (sw_number_parse(argv[++i], 0.01, 86400, &t)) {
				fprintf(stderr, "siteward: --timeout takes a number of seconds\n");
				return 2;
			}
			c.timeout_ms = (unsigned)(t * 1000);
		} else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			usage(stdout);
			return 0;
		} else if (nargs < 63) {
			args[nargs++] = argv[i];
		}
	}
	args[nargs] = NULL;
	if (nargs == 0) {
		usage(stderr);
		return 2;
	}
	if (strcmp(args[0], "version") == 0 || strcmp(args[0], "--version") == 0) {
		printf("siteward %s\n", SW_VERSION);
		return 0;
	}
	if (strcmp(args[0], "package") == 0)
		return cmd_package(&c, site, nargs - 1, args + 1);
	rc = client_setup(&c, site);
	if (rc)
		return rc;
	if (strcmp(args[0], "token") == 0)
		return cmd_token(&c, nargs - 1, args + 1);
	if (strcmp(args[0], "systems") == 0)
		return cmd_systems(&c, nargs - 1, args + 1);
	if (strcmp(args[0], "product") == 0)
		return cmd_product(&c, nargs - 1, args + 1);
	if (strcmp(args[0], "usage") == 0)
		return cmd_usage(&c, nargs - 1, args + 1);
	if (strcmp(args[0], "role") == 0)
		return cmd_role(&c, nargs - 1, args + 1);
	if (strcmp(args[0], "service") == 0)
		return cmd_service(&c, nargs - 1, args + 1);
	if (strcmp(args[0], "upgrade") == 0)
		return cmd_upgrade(&c, nargs - 1, args + 1);
	fprintf(stderr, "siteward: unknown command '%s'; see siteward --help\n", args[0]);
	return 2;
}
