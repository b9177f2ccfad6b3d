/* siteward license status|reclaim: who holds which license across the site, and taking
 * licenses back. */
#include "cli.h"

#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char license_usage[] =
    "usage: siteward license status [--product NAME]\n"
    "       siteward license reclaim LEASE | --user USER | --host HOST [--product NAME]\n"
    "       siteward license report [--days N]";

/* Each metering server's own deadline: within the CLI's, 3 s at most. */
static unsigned each_ms(const struct cli *c)
{
	unsigned ms = c->timeout_ms > 1100 ? c->timeout_ms - 1000 : 100;

	return ms > 3000 ? 3000 : ms;
}

static const char *str(const json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));

	return s ? s : "";
}

static long long num(const json_t *o, const char *key)
{
	return (long long)json_integer_value(json_object_get(o, key));
}

/* A span of time as a person reads it: 45s, 12m, 3h05m, 2d04h. */
static void span(char *out, size_t len, long long ms)
{
	long long s = ms < 0 ? 0 : ms / 1000;

	if (s < 60)
		snprintf(out, len, "%llds", s);
	else if (s < 3600)
		snprintf(out, len, "%lldm", s / 60);
	else if (s < 86400)
		snprintf(out, len, "%lldh%02lldm", s / 3600, s / 60 % 60);
	else
		snprintf(out, len, "%lldd%02lldh", s / 86400, s / 3600 % 24);
}

/* Servers that did not answer, one line each on stderr; returns how many. */
static size_t warn_unreachable(const json_t *reply, const char *what)
{
	json_t *s;
	size_t i, n = 0;

	json_array_foreach(json_object_get(reply, "servers"), i, s)
	{
		if (strcmp(str(s, "state"), "answered") == 0)
			continue;
		fprintf(stderr, "siteward: warning: metering server %s did not answer (%s): %s\n",
			str(s, "system"), str(s, "error"), what);
		n++;
	}
	return n;
}

static int status(struct cli *c, const char *product)
{
	char path[160], held[32], left[32];
	json_t *reply, *l;
	long long now;
	size_t i;

	snprintf(path, sizeof(path), "/v1/licenses?timeout_ms=%u%s%s", each_ms(c),
		 product ? "&product=" : "", product ? product : "");
	if (client_call(c, "GET", path, NULL, &reply))
		return 1;
	if (c->json) {
		print_json(reply);
		warn_unreachable(reply, "its licenses are not listed");
		json_decref(reply);
		return 0;
	}
	now = (long long)time(NULL) * 1000;
	if (json_array_size(json_object_get(reply, "servers")) == 0)
		printf("(no metering servers: give a system the software-metering role)\n");
	else if (json_array_size(json_object_get(reply, "leases")) == 0)
		printf("(no licenses in use%s%s)\n", product ? " of " : "", product ? product : "");
	else
		printf("%-16s %-12s %-16s %7s %-16s %7s %7s %-12s %s\n", "PRODUCT", "USER", "HOST",
		       "PID", "PROGRAM", "HELD", "EXPIRES", "SERVER", "LEASE");
	json_array_foreach(json_object_get(reply, "leases"), i, l)
	{
		span(held, sizeof(held), now - num(l, "granted_at"));
		span(left, sizeof(left), num(l, "expires_at") - now);
		/* lent out with siteward-run borrow: held by the machine, not by a program */
		if (json_object_get(l, "borrowed_until"))
			printf("%-16s %-12s %-16s %7s %-16s %7s %7s %-12s %s\n", str(l, "product"),
			       str(l, "user"), str(l, "host"), "-", "(borrowed)", held, left,
			       str(l, "server"), str(l, "lease"));
		else
			printf("%-16s %-12s %-16s %7lld %-16s %7s %7s %-12s %s\n",
			       str(l, "product"), str(l, "user"), str(l, "host"), num(l, "pid"),
			       str(l, "exe"), held, left, str(l, "server"), str(l, "lease"));
	}
	if (json_array_size(json_object_get(reply, "queue")))
		printf("\nwaiting for a license:\n%-16s %-12s %-16s %7s %-16s %7s %4s %s\n",
		       "PRODUCT", "USER", "HOST", "PID", "PROGRAM", "WAITED", "POS", "SERVER");
	json_array_foreach(json_object_get(reply, "queue"), i, l)
	{
		span(held, sizeof(held), now - num(l, "since"));
		printf("%-16s %-12s %-16s %7lld %-16s %7s %4lld %s\n", str(l, "product"),
		       str(l, "user"), str(l, "host"), num(l, "pid"), str(l, "exe"), held,
		       num(l, "position"), str(l, "server"));
	}
	warn_unreachable(reply, "its licenses are not listed");
	json_decref(reply);
	return 0;
}

static int reclaim(struct cli *c, json_t *body)
{
	char path[64];
	json_t *reply, *l;
	size_t i, n, away;

	snprintf(path, sizeof(path), "/v1/licenses/reclaim?timeout_ms=%u", each_ms(c));
	if (client_call(c, "POST", path, body, &reply))
		return 1;
	n = json_array_size(json_object_get(reply, "reclaimed"));
	if (c->json) {
		print_json(reply);
	} else {
		json_array_foreach(json_object_get(reply, "reclaimed"), i, l)
		    printf("reclaimed %s of %s@%s (pid %lld) at %s: its client is told at its next "
			   "heartbeat\n",
			   str(l, "product"), str(l, "user"), str(l, "host"), num(l, "pid"),
			   str(l, "server"));
	}
	away = warn_unreachable(reply, "licenses it holds were not reclaimed; ask again");
	if (!c->json && n == 0)
		printf("no license in use matched%s\n",
		       away ? " on the metering servers that answered" : "");
	json_decref(reply);
	return n == 0 || away ? 1 : 0;
}

static void opt_num(char *out, size_t len, const json_t *o, const char *key)
{
	const json_t *v = json_object_get(o, key);

	if (json_is_integer(v))
		snprintf(out, len, "%lld", (long long)json_integer_value(v));
	else
		snprintf(out, len, "-");
}

/* Installed vs used vs licensed, per product: the licenses and installs that can go. */
static int report(struct cli *c, const char *days)
{
	char path[80], cols[5][24];
	json_t *reply, *p;
	size_t i;

	snprintf(path, sizeof(path), "/v1/licenses/report%s%s", days ? "?days=" : "",
		 days ? days : "");
	if (client_call(c, "GET", path, NULL, &reply))
		return 1;
	if (c->json) {
		print_json(reply);
		json_decref(reply);
		return 0;
	}
	printf("the last %lld days\n",
	       (long long)json_integer_value(json_object_get(reply, "days")));
	printf("%-20s %8s %6s %6s %9s %6s %6s %7s\n", "PRODUCT", "LICENSES", "PEAK", "SPARE",
	       "INSTALLED", "USED", "UNUSED", "USERS");
	json_array_foreach(json_object_get(reply, "products"), i, p)
	{
		opt_num(cols[0], sizeof(cols[0]), p, "spare_licenses");
		opt_num(cols[1], sizeof(cols[1]), p, "installed");
		opt_num(cols[2], sizeof(cols[2]), p, "installed_unused");
		printf("%-20s %8lld %6lld %6s %9s %6lld %6s %7lld\n", str(p, "product"),
		       num(p, "licenses"), num(p, "peak"), cols[0], cols[1], num(p, "used_systems"),
		       cols[2], num(p, "users"));
	}
	printf("SPARE: licenses never all in use at once; UNUSED: installs not run (a product "
	       "without --package shows none)\n");
	json_decref(reply);
	return 0;
}

int cmd_license(struct cli *c, int argc, char **argv)
{
	const char *action = argc > 0 ? argv[0] : "";
	const char *product = NULL;
	json_t *body;
	int rc;

	if (strcmp(action, "status") == 0) {
		for (int i = 1; i < argc; i++) {
			if (strcmp(argv[i], "--product") == 0 && i + 1 < argc &&
			    sw_name_valid(argv[i + 1])) {
				product = argv[++i];
			} else {
				cli_error("%s", license_usage);
				return 2;
			}
		}
		return status(c, product);
	}
	if (strcmp(action, "report") == 0) {
		if (argc == 1)
			return report(c, NULL);
		if (argc == 3 && strcmp(argv[1], "--days") == 0)
			return report(c, argv[2]);
		cli_error("%s", license_usage);
		return 2;
	}
	if (strcmp(action, "reclaim") != 0) {
		cli_error("%s", license_usage);
		return 2;
	}
	body = json_object();
	for (int i = 1; i < argc; i++) {
		const char *o = argv[i];

		if (i + 1 < argc && (strcmp(o, "--user") == 0 || strcmp(o, "--host") == 0 ||
				     strcmp(o, "--product") == 0)) {
			json_object_set_new(body, o + 2, json_string(argv[++i]));
		} else if (o[0] != '-' && !json_object_get(body, "lease")) {
			json_object_set_new(body, "lease", json_string(o));
		} else {
			cli_error("%s", license_usage);
			json_decref(body);
			return 2;
		}
	}
	if (!json_object_get(body, "lease") && !json_object_get(body, "user") &&
	    !json_object_get(body, "host")) {
		cli_error("name a LEASE (see 'siteward license status'), --user or --host\n%s",
			  license_usage);
		json_decref(body);
		return 2;
	}
	rc = reclaim(c, body);
	json_decref(body);
	return rc;
}
