/* siteward role add|remove NAME ROLE and siteward service status|start|stop|restart|logs. */
#include "cli.h"

#include "proto.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cmd_role(struct cli *c, int argc, char **argv)
{
	char path[256];
	json_t *reply;
	int add;

	if (argc != 3 || (strcmp(argv[0], "add") != 0 && strcmp(argv[0], "remove") != 0)) {
		cli_error("usage: siteward role add|remove NAME ROLE");
		return 2;
	}
	add = strcmp(argv[0], "add") == 0;
	if (!sw_name_valid(argv[1]) || !sw_name_valid(argv[2])) {
		cli_error("'%s %s' is not a system name and a role", argv[1], argv[2]);
		return 2;
	}
	snprintf(path, sizeof(path), "/v1/systems/%s/roles/%s", argv[1], argv[2]);
	json_t *body = json_pack("{sf}", "timeout", c->timeout_ms / 1000.0);
	int rc = client_call(c, add ? "POST" : "DELETE", path, body, &reply);
	json_decref(body);
	if (rc)
		return 1;
	if (c->json) {
		print_json(reply);
	} else {
		const char *note = json_string_value(json_object_get(reply, "note"));
		printf("%s: role %s %s\n", argv[1], argv[2], add ? "added" : "removed");
		if (note)
			printf("%s\n", note);
	}
	json_decref(reply);
	return 0;
}

static void print_service(const json_t *r)
{
	const char *state = json_string_value(json_object_get(r, "state"));
	const char *reason = json_string_value(json_object_get(r, "reason"));
	const char *tail = json_string_value(json_object_get(r, "log_tail"));

	printf("%s %s: %s", json_string_value(json_object_get(r, "system")),
	       json_string_value(json_object_get(r, "name")), state ? state : "?");
	if (reason && *reason && strcmp(reason, state ? state : "") != 0)
		printf(" (%s)", reason);
	printf("\n");
	if (tail && *tail)
		printf("last lines of its log:\n%s", tail);
}

int cmd_service(struct cli *c, int argc, char **argv)
{
	char path[256];
	const char *action, *state;
	enum sw_svc_state want = SW_SVC_UNKNOWN;
	json_t *reply, *req = NULL;
	unsigned lines = 50;
	int rc;

	if (argc < 3) {
		cli_error("usage: siteward service status|start|stop|restart|logs NAME SERVICE "
			  "[--timeout SECONDS] [--lines N]");
		return 2;
	}
	action = argv[0];
	for (int i = 3; i < argc; i++) {
		if (strcmp(argv[i], "--lines") == 0 && i + 1 < argc) {
			int64_t n;
			if (sw_int_parse(argv[++i], 1, 10000, &n)) {
				cli_error("--lines takes 1 to 10000");
				return 2;
			}
			lines = (unsigned)n;
		} else {
			cli_error("unexpected '%s'", argv[i]);
			return 2;
		}
	}
	if (!sw_name_valid(argv[1]) || !sw_name_valid(argv[2])) {
		cli_error("'%s %s' is not a system and a service name", argv[1], argv[2]);
		return 2;
	}
	if (strcmp(action, "status") == 0) {
		snprintf(path, sizeof(path), "/v1/systems/%s/services/%s?timeout=%.3f", argv[1],
			 argv[2], c->timeout_ms / 1000.0);
		rc = client_call(c, "GET", path, NULL, &reply);
	} else if (strcmp(action, "logs") == 0) {
		snprintf(path, sizeof(path),
			 "/v1/systems/%s/services/%s/logs?lines=%u&timeout=%.3f", argv[1], argv[2],
			 lines, c->timeout_ms / 1000.0);
		rc = client_call(c, "GET", path, NULL, &reply);
	} else if (strcmp(action, "start") == 0 || strcmp(action, "stop") == 0 ||
		   strcmp(action, "restart") == 0) {
		want = strcmp(action, "stop") == 0 ? SW_SVC_STOPPED : SW_SVC_RUNNING;
		snprintf(path, sizeof(path), "/v1/systems/%s/services/%s/%s", argv[1], argv[2],
			 action);
		req = json_pack("{sf}", "timeout", c->timeout_ms / 1000.0);
		rc = client_call(c, "POST", path, req, &reply);
		json_decref(req);
	} else {
		cli_error("unknown action '%s': status, start, stop, restart or logs", action);
		return 2;
	}
	if (rc)
		return 1;
	if (c->json)
		print_json(reply);
	else if (strcmp(action, "logs") == 0)
		fputs(json_string_value(json_object_get(reply, "log")), stdout);
	else
		print_service(reply);
	state = json_string_value(json_object_get(reply, "state"));
	/* A start or stop that did not end where it was meant to is a failure. */
	rc = want != SW_SVC_UNKNOWN && sw_svc_state_parse(state) != want ? 1 : 0;
	if (rc)
		cli_error("%s %s is %s, not %s", argv[1], argv[2], state ? state : "unknown",
			  sw_svc_state_name(want));
	json_decref(reply);
	return rc;
}
