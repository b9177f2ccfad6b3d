/* siteward exec COLLECTION [--timeout S] -- COMMAND [ARGS...]: a command on every member
 * of a collection, bounded, with each system's outcome and the ends of its output. */
#include "cli.h"

#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "usage: siteward exec COLLECTION [--timeout SECONDS] -- COMMAND [ARGS...]\n"
    "runs COMMAND on every member of COLLECTION as the agent's user, for at most SECONDS\n"
    "(30) each; administrators only, and recorded in the audit log";

static void indent(const char *label, const char *text)
{
	const char *s = text;

	if (!text || !*text)
		return;
	printf("    %s\n", label);
	while (*s) {
		size_t n = strcspn(s, "\n");

		printf("    | %.*s\n", (int)n, s);
		s += n + (s[n] == '\n');
	}
}

int cmd_exec(struct cli *c, int argc, char **argv)
{
	const char *coll = NULL;
	/* --timeout (the CLI's own) is each system's bound; the CLI then waits that and a
	 * margin for the site server's answer */
	long long timeout_s = (c->timeout_ms + 999) / 1000;
	json_t *body, *reply, *cmd = json_array(), *o;
	int i, rc;
	size_t k;

	if (timeout_s < 1 || timeout_s > 3600) {
		cli_error("--timeout takes 1 to 3600 seconds for exec");
		json_decref(cmd);
		return 2;
	}
	c->timeout_ms = (unsigned)(timeout_s * 1000 + 15000);
	for (i = 0; i < argc && strcmp(argv[i], "--") != 0; i++) {
		if (!coll && argv[i][0] != '-') {
			coll = argv[i];
		} else {
			break;
		}
	}
	if (!coll || i >= argc || strcmp(argv[i], "--") != 0 || i + 1 >= argc ||
	    !sw_name_valid(coll)) {
		cli_error("%s", usage);
		json_decref(cmd);
		return 2;
	}
	for (i++; i < argc; i++)
		json_array_append_new(cmd, json_string(argv[i]));
	body = json_pack("{ss so sI}", "collection", coll, "argv", cmd, "timeout_s",
			 (json_int_t)timeout_s);
	rc = client_call(c, "POST", "/v1/exec", body, &reply);
	json_decref(body);
	if (rc)
		return 1;
	if (c->json) {
		print_json(reply);
	} else {
		json_array_foreach(json_object_get(reply, "systems"), k, o)
		{
			const char *state = json_string_value(json_object_get(o, "state"));

			printf("%s: %s", json_string_value(json_object_get(o, "system")), state);
			if (json_object_get(o, "exit") && strcmp(state, "exited") == 0)
				printf(" %lld",
				       (long long)json_integer_value(json_object_get(o, "exit")));
			if (json_integer_value(json_object_get(o, "signal")))
				printf(" (signal %lld)",
				       (long long)json_integer_value(json_object_get(o, "signal")));
			if (json_object_get(o, "elapsed_ms"))
				printf(" after %lld ms", (long long)json_integer_value(
							     json_object_get(o, "elapsed_ms")));
			if (json_object_get(o, "error"))
				printf(": %s", json_string_value(json_object_get(o, "error")));
			printf("\n");
			indent("output:", json_string_value(json_object_get(o, "head")));
			if (json_string_value(json_object_get(o, "tail")) &&
			    *json_string_value(json_object_get(o, "tail"))) {
				printf("    ... (%lld bytes in all)\n",
				       (long long)json_integer_value(json_object_get(o, "bytes")));
				indent("last KiB:", json_string_value(json_object_get(o, "tail")));
			}
		}
		fprintf(stderr, "%lld of %zu systems exited 0 (%lld ms)\n",
			(long long)json_integer_value(json_object_get(reply, "ok")),
			json_array_size(json_object_get(reply, "systems")),
			(long long)json_integer_value(json_object_get(reply, "elapsed_ms")));
	}
	rc = json_integer_value(json_object_get(reply, "failed")) ? 1 : 0;
	json_decref(reply);
	return rc;
}
