/*
 * siteward deploy FILE.deb --to COLLECTION [...]: a Debian package installed on every
 * member of a collection; `deploy remove PACKAGE --to COLLECTION` takes one away;
 * `deploy status [ID]` and `deploy cancel ID`. A new deployment prints its worst case
 * before anything starts, then follows it until every member has an outcome (or that
 * bound has passed), unless --no-wait.
 */
#include "cli.h"

#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char usage[] =
    "usage: siteward deploy FILE.deb --to COLLECTION [--parallel N] [--max-failures N]\n"
    "                       [--window HH:MM-HH:MM] [--no-wait]\n"
    "       siteward deploy remove PACKAGE --to COLLECTION [the same options]\n"
    "       siteward deploy status [ID]\n"
    "       siteward deploy cancel ID";

static long long num(const json_t *o, const char *key)
{
	return (long long)json_integer_value(json_object_get(o, key));
}

static const char *str(const json_t *o, const char *key)
{
	const char *v = json_string_value(json_object_get(o, key));

	return v ? v : "";
}

/* Whether the deployment still starts systems (not halted or cancelled). */
static int active(const json_t *d)
{
	static const char *const states[] = {"active"};

	return strcmp(str(d, "state"), states[0]) == 0;
}

static void counts_line(FILE *f, const json_t *d)
{
	const json_t *c = json_object_get(d, "counts");

	fprintf(f, "%lld done, %lld running, %lld pending, %lld deferred, %lld failed",
		num(c, "done"), num(c, "running"), num(c, "pending"), num(c, "deferred"),
		num(c, "failed"));
	if (num(c, "skipped"))
		fprintf(f, ", %lld skipped", num(c, "skipped"));
}

static void print_one(const json_t *d)
{
	const json_t *y;
	size_t i;

	printf("deployment %lld: %s %s %s on %s: %s", num(d, "id"), str(d, "action"),
	       str(d, "package"), str(d, "version"), str(d, "collection"), str(d, "state"));
	if (*str(d, "reason"))
		printf(" (%s)", str(d, "reason"));
	printf("\n  ");
	counts_line(stdout, d);
	printf("; %lld at once, at most %lld s each", num(d, "parallel"), num(d, "per_system_s"));
	if (*str(d, "window"))
		printf(", in the window %s", str(d, "window"));
	printf("\n");
	json_array_foreach(json_object_get(d, "systems"), i, y)
	{
		printf("  %-24s %-9s", str(y, "system"), str(y, "state"));
		if (*str(y, "reason"))
			printf(" %s", str(y, "reason"));
		printf("\n");
	}
}

static int get(struct cli *c, long long id, json_t **out)
{
	char path[64];

	snprintf(path, sizeof(path), "/v1/deployments/%lld", id);
	return client_call(c, "GET", path, NULL, out);
}

/* Until no member is pending or running, or `bound_s` has passed. */
static int follow(struct cli *c, json_t *d)
{
	long long id = num(d, "id"), bound_s = num(d, "bound_s");
	time_t until = time(NULL) + bound_s + 10;
	char last[200] = "", line[200];
	int rc;

	json_incref(d);
	for (;;) {
		const json_t *n = json_object_get(d, "counts");
		FILE *m = fmemopen(line, sizeof(line), "w");

		if (m) {
			counts_line(m, d);
			fclose(m);
			if (strcmp(line, last) != 0 && !c->json)
				fprintf(stderr, "deployment %lld: %s\n", id, line);
			snprintf(last, sizeof(last), "%s", line);
		}
		if (!num(n, "pending") && !num(n, "running"))
			break;
		if (!active(d) || time(NULL) > until)
			break;
		nanosleep(&(struct timespec){.tv_sec = 1}, NULL);
		json_decref(d);
		if (get(c, id, &d))
			return 1;
	}
	if (c->json)
		print_json(d);
	else
		print_one(d);
	{
		const json_t *n = json_object_get(d, "counts");

		rc = num(n, "failed") || num(n, "deferred") || num(n, "pending") ||
			     num(n, "running") || !active(d)
			 ? 1
			 : 0;
		if (!c->json && (num(n, "deferred") || num(n, "pending")))
			fprintf(
			    stderr,
			    "siteward: the deployment stays active: systems deferred or away "
			    "get the package when they are back (siteward deploy status %lld)\n",
			    id);
	}
	json_decref(d);
	return rc;
}

static int create(struct cli *c, int argc, char **argv)
{
	const char *file = NULL, *removal = NULL, *to = NULL, *window = NULL;
	long long parallel = 10, max_failures = 0;
	json_t *body, *reply = NULL;
	int i = 0, wait = 1, rc;

	if (strcmp(argv[0], "remove") == 0) {
		if (argc < 2) {
			cli_error("%s", usage);
			return 2;
		}
		removal = argv[1];
		i = 2;
	} else {
		file = argv[0];
		i = 1;
	}
	for (; i < argc; i++) {
		const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		char *end = NULL;

		if (strcmp(o, "--no-wait") == 0) {
			wait = 0;
			continue;
		}
		if (!v) {
			cli_error("%s", usage);
			return 2;
		}
		i++;
		if (strcmp(o, "--to") == 0) {
			to = v;
		} else if (strcmp(o, "--window") == 0) {
			window = v;
		} else if (strcmp(o, "--parallel") == 0) {
			parallel = strtoll(v, &end, 10);
		} else if (strcmp(o, "--max-failures") == 0) {
			max_failures = strtoll(v, &end, 10);
		} else {
			cli_error("%s", usage);
			return 2;
		}
		if (end && (*end || end == v)) {
			cli_error("%s takes a number, not %s", o, v);
			return 2;
		}
	}
	if (!to || !sw_name_valid(to)) {
		cli_error("which systems: --to COLLECTION (siteward collection list shows them)");
		return 2;
	}
	body = json_pack("{ss sI sI}", "collection", to, "parallel", (json_int_t)parallel,
			 "max_failures", (json_int_t)max_failures);
	if (window)
		json_object_set_new(body, "window", json_string(window));
	if (file) {
		json_t *up = NULL;

		if (client_upload(c, "/v1/content", file, &up)) {
			json_decref(body);
			return 1;
		}
		if (!c->json)
			fprintf(stderr, "%s: %s %s (%s), %lld bytes, stored as %.12s\n", file,
				str(up, "package"), str(up, "version"), str(up, "arch"),
				num(up, "size"), str(up, "sha256"));
		json_object_set_new(body, "sha256", json_string(str(up, "sha256")));
		json_decref(up);
	} else {
		json_object_set_new(body, "remove", json_string(removal));
	}
	rc = client_call(c, "POST", "/v1/deployments", body, &reply);
	json_decref(body);
	if (rc)
		return 1;
	if (!c->json)
		fprintf(stderr,
			"deployment %lld: %s %s on %zu systems of %s, %lld at once: at most %lld "
			"s for these (%lld s each)\n",
			num(reply, "id"), str(reply, "action"), str(reply, "package"),
			json_array_size(json_object_get(reply, "systems")), to,
			num(reply, "parallel"), num(reply, "bound_s"), num(reply, "per_system_s"));
	if (!wait) {
		if (c->json)
			print_json(reply);
		else
			printf("%lld\n", num(reply, "id"));
		json_decref(reply);
		return 0;
	}
	rc = follow(c, reply);
	json_decref(reply);
	return rc;
}

int cmd_deploy(struct cli *c, int argc, char **argv)
{
	const char *action = argc > 0 ? argv[0] : "";
	json_t *reply;
	char path[80], *end;
	long long id = 0;
	size_t i;
	json_t *d;

	if (argc >= 2 && (strcmp(action, "status") == 0 || strcmp(action, "cancel") == 0)) {
		id = strtoll(argv[1], &end, 10);
		if (*end || id <= 0) {
			cli_error("a deployment is named by its number, not %s", argv[1]);
			return 2;
		}
	}
	if (strcmp(action, "status") == 0 && argc <= 2) {
		if (id) {
			if (get(c, id, &reply))
				return 1;
			c->json ? print_json(reply) : print_one(reply);
			json_decref(reply);
			return 0;
		}
		if (client_call(c, "GET", "/v1/deployments", NULL, &reply))
			return 1;
		if (c->json) {
			print_json(reply);
		} else {
			json_array_foreach(json_object_get(reply, "deployments"), i, d)
			{
				printf("%-5lld %-7s %-24s %-16s %-10s ", num(d, "id"),
				       str(d, "action"), str(d, "package"), str(d, "collection"),
				       str(d, "state"));
				counts_line(stdout, d);
				printf("\n");
			}
		}
		json_decref(reply);
		return 0;
	}
	if (strcmp(action, "cancel") == 0 && argc == 2) {
		snprintf(path, sizeof(path), "/v1/deployments/%lld/cancel", id);
		if (client_call(c, "POST", path, NULL, &reply))
			return 1;
		c->json ? print_json(reply) : print_one(reply);
		json_decref(reply);
		return 0;
	}
	if (argc < 1 || strcmp(action, "status") == 0 || strcmp(action, "cancel") == 0 ||
	    action[0] == '-') {
		cli_error("%s", usage);
		return 2;
	}
	return create(c, argc, argv);
}
