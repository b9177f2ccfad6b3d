/* siteward inventory NAME and siteward software [--package P]: what the site's systems
 * are and have. */
#include "cli.h"

#include "dpkgdb.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *str(const json_t *o, const char *k)
{
	const char *s = json_string_value(json_object_get(o, k));

	return s ? s : "";
}

static long long num(const json_t *o, const char *k)
{
	return (long long)json_integer_value(json_object_get(o, k));
}

static void when(long long ms, char *out, size_t len)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;

	if (!gmtime_r(&t, &tm) || !strftime(out, len, "%Y-%m-%d %H:%M", &tm))
		snprintf(out, len, "%lld", ms);
}

static void bytes(long long n, char *out, size_t len)
{
	const char *unit[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
	double v = (double)n;
	size_t u = 0;

	while (v >= 1024 && u + 1 < SW_ARRAY_LEN(unit))
		v /= 1024, u++;
	snprintf(out, len, u ? "%.1f %s" : "%.0f %s", v, unit[u]);
}

static void print_inventory(const json_t *r)
{
	const json_t *hw = json_object_get(r, "hardware"), *x;
	const json_t *dmi = json_object_get(hw, "dmi"), *os = json_object_get(hw, "os");
	char b[32], t[32];
	size_t i, n;

	when(num(r, "updated_at"), t, sizeof(t));
	printf("%s (inventory version %lld, %s UTC)\n", str(r, "system"), num(r, "seq"), t);
	if (json_object_size(dmi))
		printf("  machine   %s %s (BIOS %s %s)\n", str(dmi, "sys_vendor"),
		       str(dmi, "product_name"), str(dmi, "bios_vendor"), str(dmi, "bios_version"));
	printf("  os        %s, kernel %s\n", str(os, "name"),
	       str(json_object_get(hw, "kernel"), "release"));
	printf("  cpu       %lld x %s\n", num(json_object_get(hw, "cpu"), "count"),
	       str(json_object_get(hw, "cpu"), "model"));
	bytes(num(json_object_get(hw, "memory"), "total"), b, sizeof(b));
	printf("  memory    %s\n", b);
	json_array_foreach(json_object_get(hw, "disks"), i, x)
	{
		bytes(num(x, "bytes"), b, sizeof(b));
		printf("  disk      %s %s%s%s\n", str(x, "name"), b,
		       json_is_true(json_object_get(x, "rotational")) ? ", rotational" : "",
		       json_is_true(json_object_get(x, "removable")) ? ", removable" : "");
	}
	json_array_foreach(json_object_get(hw, "interfaces"), i, x)
	{
		const json_t *a;
		size_t k;

		printf("  network   %s %s %s", str(x, "name"), str(x, "mac"), str(x, "state"));
		if (json_object_get(x, "speed_mbps"))
			printf(" %lld Mb/s", num(x, "speed_mbps"));
		json_array_foreach(json_object_get(x, "addresses"), k, a)
		    printf(" %s", json_string_value(a));
		printf("\n");
	}
	n = json_array_size(json_object_get(r, "packages"));
	printf("  packages  %zu installed ('siteward inventory %s --json' lists them)\n", n,
	       str(r, "system"));
	if (json_array_size(json_object_get(r, "history")))
		printf("\nrecent package changes:\n");
	json_array_foreach(json_object_get(r, "history"), i, x)
	{
		if (i >= 20)
			break;
		when(num(x, "at"), t, sizeof(t));
		printf("  %s  %-9s %s:%s %s%s%s\n", t, str(x, "event"), str(x, "name"),
		       str(x, "arch"), str(x, "old_version"),
		       json_object_get(x, "old_version") && json_object_get(x, "version") ? " -> "
											  : "",
		       str(x, "version"));
	}
}

int cmd_inventory(struct cli *c, int argc, char **argv)
{
	char path[128];
	json_t *reply;

	if (argc != 1 || !sw_name_valid(argv[0])) {
		cli_error("usage: siteward inventory NAME [--json]");
		return 2;
	}
	snprintf(path, sizeof(path), "/v1/inventory/%s", argv[0]);
	if (client_call(c, "GET", path, NULL, &reply))
		return 1;
	if (c->json)
		print_json(reply);
	else
		print_inventory(reply);
	json_decref(reply);
	return 0;
}

int cmd_software(struct cli *c, int argc, char **argv)
{
	const char *package = NULL;
	char path[160], t[32];
	json_t *reply, *x;
	const char *k;
	size_t i;

	if (argc == 2 && strcmp(argv[0], "--package") == 0)
		package = argv[1];
	else if (argc != 0) {
		cli_error("usage: siteward software [--package NAME] [--json]");
		return 2;
	}
	if (package && !sw_dpkg_name_valid(package)) {
		cli_error("--package takes a Debian package name, like libssl3");
		return 2;
	}
	snprintf(path, sizeof(path), "/v1/software%s%s", package ? "?package=" : "",
		 package ? package : "");
	if (client_call(c, "GET", path, NULL, &reply))
		return 1;
	if (c->json) {
		print_json(reply);
	} else if (package) {
		if (!json_array_size(json_object_get(reply, "systems")))
			printf("(no system has %s)\n", package);
		else
			printf("%-24s %-8s %-32s %s\n", "SYSTEM", "ARCH", "VERSION", "SINCE (UTC)");
		json_array_foreach(json_object_get(reply, "systems"), i, x)
		{
			when(num(x, "since"), t, sizeof(t));
			printf("%-24s %-8s %-32s %s\n", str(x, "system"), str(x, "arch"),
			       str(x, "version"), t);
		}
	} else {
		printf("%-36s %8s  %s\n", "PACKAGE", "SYSTEMS", "VERSIONS");
		json_object_foreach(json_object_get(reply, "packages"), k, x)
		{
			const char *v;
			json_t *count;
			int first = 1;

			printf("%-36s %8lld  ", k, num(x, "systems"));
			json_object_foreach(json_object_get(x, "versions"), v, count)
			{
				printf("%s%s (%lld)", first ? "" : ", ", v,
				       (long long)json_integer_value(count));
				first = 0;
			}
			printf("\n");
		}
	}
	json_decref(reply);
	return 0;
}
