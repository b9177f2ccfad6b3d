/* siteward systems [--json] and siteward systems remove NAME. */
#include "cli.h"

#include "clock.h"
#include "util.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

static void human_bytes(const json_t *v, char *out, size_t len)
{
	json_int_t n = json_integer_value(v);
	const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
	double x = (double)n;
	int u = 0;

	if (!json_is_integer(v)) {
		snprintf(out, len, "-");
		return;
	}
	while (x >= 1024 && u < 4) {
		x /= 1024;
		u++;
	}
	snprintf(out, len, u ? "%.1f %s" : "%.0f %s", x, units[u]);
}

static void human_ago(json_int_t then, json_int_t now, char *out, size_t len)
{
	json_int_t s = (now - then) / 1000;

	if (then == 0)
		snprintf(out, len, "never");
	else if (s < 120)
		snprintf(out, len, "%llds ago", (long long)(s < 0 ? 0 : s));
	else if (s < 7200)
		snprintf(out, len, "%lldm ago", (long long)s / 60);
	else
		snprintf(out, len, "%lldh ago", (long long)s / 3600);
}

/* "+3h 0m", "-2m 5s"; "-" while the difference is only network delay. */
static void human_skew(const json_t *v, char *out, size_t len)
{
	json_int_t ms = json_integer_value(v);
	char span[48];

	if (!json_is_integer(v) || (ms > -SW_CLOCK_NOTABLE_MS && ms < SW_CLOCK_NOTABLE_MS)) {
		snprintf(out, len, "-");
		return;
	}
	sw_clock_span(ms, span, sizeof(span));
	snprintf(out, len, "%c%s", ms < 0 ? '-' : '+', span);
}

/* Days the system's agent certificate has left ("540d"), "-" when unknown. */
static void days_left(const json_t *v, json_int_t now, char *out, size_t len)
{
	json_int_t left = json_integer_value(v) - now;

	if (!json_is_integer(v))
		snprintf(out, len, "-");
	else if (left <= 0)
		snprintf(out, len, "gone");
	else
		snprintf(out, len, "%lldd", (long long)(left / 86400000));
}

/* Appends "a" or "a:b" to a comma-separated list. */
static void join(char *out, size_t len, const char *a, const char *b)
{
	size_t n = strlen(out);

	snprintf(out + n, len - n, "%s%s%s%s", n ? "," : "", a ? a : "?", b ? ":" : "", b ? b : "");
}

static int list(struct cli *c)
{
	json_t *reply, *systems, *sys;
	json_int_t now;
	size_t i;

	if (client_call(c, "GET", "/v1/systems", NULL, &reply))
		return 1;
	if (c->json) {
		print_json(reply);
		json_decref(reply);
		return 0;
	}
	systems = json_object_get(reply, "systems");
	now = json_integer_value(json_object_get(reply, "now"));
	printf("%-16s %-21s %-8s %-8s %-9s %-8s %-5s %-20s %-24s %4s %9s %9s\n", "NAME", "ADDRESS",
	       "VERSION", "HEALTH", "SEEN", "CLOCK", "CERT", "ROLES", "SERVICES", "CPUS", "MEMORY",
	       "DISK FREE");
	json_array_foreach(systems, i, sys)
	{
		json_t *f = json_object_get(sys, "facts"), *v;
		char ago[32], mem[32], disk[32], cpus[16], skew[64], cert[24], roles[128] = "",
									       svcs[256] = "";
		const char *version = json_string_value(json_object_get(sys, "version"));
		size_t k;

		human_ago(json_integer_value(json_object_get(sys, "last_seen")), now, ago,
			  sizeof(ago));
		human_skew(json_object_get(sys, "clock_skew_ms"), skew, sizeof(skew));
		days_left(json_object_get(sys, "cert_not_after"), now, cert, sizeof(cert));
		human_bytes(json_object_get(f, "memory_total"), mem, sizeof(mem));
		human_bytes(json_object_get(f, "disk_free"), disk, sizeof(disk));
		snprintf(cpus, sizeof(cpus), "%lld",
			 (long long)json_integer_value(json_object_get(f, "cpus")));
		json_array_foreach(json_object_get(sys, "roles"), k, v)
		    join(roles, sizeof(roles), json_string_value(v), NULL);
		json_array_foreach(json_object_get(sys, "services"), k, v)
		    join(svcs, sizeof(svcs), json_string_value(json_object_get(v, "name")),
			 json_string_value(json_object_get(v, "state")));
		printf("%-16s %-21s %-8s %-8s %-9s %-8s %-5s %-20s %-24s %4s %9s %9s\n",
		       json_string_value(json_object_get(sys, "name")),
		       json_string_value(json_object_get(sys, "address")),
		       version && *version ? version : "-",
		       json_string_value(json_object_get(sys, "health")), ago, skew, cert,
		       *roles ? roles : "-", *svcs ? svcs : "-",
		       json_object_get(f, "cpus") ? cpus : "-", mem, disk);
	}
	/* a clock worth setting right gets a line of its own, with what to do */
	json_array_foreach(systems, i, sys)
	{
		const char *note = json_string_value(json_object_get(sys, "clock_note"));
		const char *cnote = json_string_value(json_object_get(sys, "cert_note"));
		if (note)
			printf("note: %s: %s\n", json_string_value(json_object_get(sys, "name")),
			       note);
		if (cnote)
			printf("warning: %s: %s\n", json_string_value(json_object_get(sys, "name")),
			       cnote);
	}
	if (json_string_value(json_object_get(reply, "ca_note")))
		printf("warning: %s\n", json_string_value(json_object_get(reply, "ca_note")));
	if (json_array_size(systems) == 0)
		printf("(no systems enrolled: create a token with 'siteward token create')\n");
	json_decref(reply);
	return 0;
}

static int remove_system(struct cli *c, const char *name)
{
	char path[128];
	json_t *reply;

	if (!sw_name_valid(name)) {
		cli_error("'%s' is not a valid system name", name);
		return 2;
	}
	snprintf(path, sizeof(path), "/v1/systems/%s", name);
	if (client_call(c, "DELETE", path, NULL, &reply))
		return 1;
	if (c->json)
		print_json(reply);
	else
		printf("removed %s; its certificate is revoked\n", name);
	json_decref(reply);
	return 0;
}

int cmd_systems(struct cli *c, int argc, char **argv)
{
	if (argc == 0)
		return list(c);
	if (strcmp(argv[0], "remove") == 0 && argc == 2)
		return remove_system(c, argv[1]);
	cli_error("usage: siteward systems [--json] | siteward systems remove NAME");
	return 2;
}
