/* siteward ca status [--wait SECONDS] and siteward ca rotate: the site's CAs and their
 * rotation (siteward(1)). */
#include "cli.h"

#include "clock.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define USAGE "usage: siteward ca status [--wait SECONDS] | siteward ca rotate"
/* How often --wait asks, and how long a server that restarts (it does once, to serve a
 * certificate of the new CA) may be away before the wait ends. */
#define WAIT_POLL_MS 1000

static const char *str(const json_t *o, const char *k)
{
	const char *v = json_string_value(json_object_get(o, k));

	return v ? v : "";
}

static long long num(const json_t *o, const char *k)
{
	return (long long)json_integer_value(json_object_get(o, k));
}

/* One line of where a rotation stands. */
static void progress(const json_t *st, char *out, size_t len)
{
	const char *phase = str(st, "phase");
	long long n = num(st, "systems");

	if (strcmp(phase, "introducing") == 0)
		snprintf(out, len,
			 "introducing the new CA: %lld of %lld systems trust it; it issues once "
			 "all do",
			 num(st, "trusting"), n);
	else if (strcmp(phase, "reissuing") == 0)
		snprintf(out, len,
			 "the new CA issues: %lld of %lld systems hold its certificates%s; the old "
			 "one is retired once all do",
			 num(st, "reissued"), n,
			 json_is_true(json_object_get(st, "server_reissued"))
			     ? ""
			     : " (the server's own is next)");
	else
		snprintf(out, len, "steady: one CA, no rotation under way");
}

static void print_status(const json_t *st)
{
	json_int_t now = json_integer_value(json_object_get(st, "now"));
	const json_t *ca, *w;
	char line[256];
	size_t i;

	progress(st, line, sizeof(line));
	printf("%s\n", line);
	printf("%-18s %-8s %-12s %s\n", "CA", "STATE", "ENDS", "NAME");
	json_array_foreach(json_object_get(st, "cas"), i, ca)
	{
		time_t end = (time_t)(num(ca, "not_after") / 1000);
		char ends[32];
		struct tm tm;

		gmtime_r(&end, &tm);
		strftime(ends, sizeof(ends), "%Y-%m-%d", &tm);
		printf("%-18.16s %-8s %-12s %s\n", str(ca, "id"), str(ca, "state"), ends,
		       str(ca, "name"));
	}
	json_array_foreach(json_object_get(st, "waiting"), i, w)
	{
		char seen[48] = "never";

		if (num(w, "last_seen"))
			snprintf(seen, sizeof(seen), "last seen %llds ago",
				 (now - num(w, "last_seen")) / 1000);
		printf("waiting on %s: %s (%s)\n", str(w, "name"),
		       !json_is_true(json_object_get(w, "trusts"))
			   ? "does not trust the new CA yet"
			   : "holds a certificate of the old CA",
		       seen);
	}
	if (json_array_size(json_object_get(st, "waiting")))
		printf("a system that is away holds the rotation here; it goes on when the system "
		       "is back, or once it is removed ('siteward systems remove NAME')\n");
	if (*str(st, "note"))
		printf("warning: %s\n", str(st, "note"));
}

/* Asks until the rotation is over or `wait_s` have passed, saying each change. */
static int wait_steady(struct cli *c, unsigned wait_s)
{
	int64_t deadline = sw_mono_ms() + (int64_t)wait_s * 1000;
	char said[256] = "", now[256], err[1100];
	json_t *st = NULL;
	long status;

	for (;;) {
		json_decref(st);
		st = NULL;
		/* the server restarts once, to serve a certificate of the new CA: a call that
		 * does not reach it is asked again until the deadline */
		if (client_request(c, "GET", "/v1/ca/status", NULL, &status, &st, err,
				   sizeof(err)) == 0) {
			progress(st, now, sizeof(now));
			if (!c->json && strcmp(now, said) != 0)
				fprintf(stderr, "%s\n", now);
			snprintf(said, sizeof(said), "%s", now);
			if (strcmp(str(st, "phase"), "steady") == 0)
				break;
		} else if (status != 0) {
			cli_error("%s", err);
			json_decref(st);
			return 1;
		}
		if (sw_mono_ms() >= deadline) {
			cli_error("the rotation is not over after %u s (%s); it goes on in the "
				  "server: see 'siteward ca status'",
				  wait_s, said[0] ? said : err);
			json_decref(st);
			return 1;
		}
		struct timespec ts = {0, WAIT_POLL_MS * 1000000L};
		nanosleep(&ts, NULL);
	}
	if (c->json)
		print_json(st);
	else
		print_status(st);
	json_decref(st);
	return 0;
}

int cmd_ca(struct cli *c, int argc, char **argv)
{
	json_t *reply = NULL;
	unsigned wait_s = 0;
	char *end;

	if (argc == 1 && strcmp(argv[0], "rotate") == 0) {
		json_t *body = json_object();
		int rc = client_call(c, "POST", "/v1/ca/rotate", body, &reply);

		json_decref(body);
		if (rc)
			return 1;
		if (c->json) {
			print_json(reply);
		} else {
			printf("a new CA is trusted beside the one that issues; every system takes "
			       "it, then renews under it, and the old CA is retired once none "
			       "depends on it. Follow it with 'siteward ca status --wait 3600'.\n");
			printf("Administrators with a copy of the site's ca.crt need the new one "
			       "(this site folder's is kept current).\n");
		}
		json_decref(reply);
		return 0;
	}
	if (argc < 1 || strcmp(argv[0], "status") != 0) {
		cli_error(USAGE);
		return 2;
	}
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--wait") == 0 && i + 1 < argc) {
			unsigned long v = strtoul(argv[++i], &end, 10);
			if (*end || v < 1 || v > 86400) {
				cli_error("--wait takes 1 to 86400 seconds");
				return 2;
			}
			wait_s = (unsigned)v;
		} else {
			cli_error(USAGE);
			return 2;
		}
	}
	if (wait_s)
		return wait_steady(c, wait_s);
	if (client_call(c, "GET", "/v1/ca/status", NULL, &reply))
		return 1;
	if (c->json)
		print_json(reply);
	else
		print_status(reply);
	json_decref(reply);
	return 0;
}
