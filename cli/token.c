/* siteward token create: a one-time enrollment token. */
#include "cli.h"

#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cmd_token(struct cli *c, int argc, char **argv)
{
	json_t *req, *reply;
	long ttl = 3600;

	if (argc < 1 || strcmp(argv[0], "create") != 0) {
		cli_error("usage: siteward token create [--ttl SECONDS]");
		return 2;
	}
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--ttl") == 0 && i + 1 < argc) {
			int64_t v;
			if (sw_int_parse(argv[++i], 1, 30L * 24 * 3600, &v)) {
				cli_error("--ttl takes 1 to 2592000 seconds");
				return 2;
			}
			ttl = (long)v;
		} else {
			cli_error("usage: siteward token create [--ttl SECONDS]");
			return 2;
		}
	}
	req = json_pack("{sI}", "ttl", (json_int_t)ttl);
	if (client_call(c, "POST", "/v1/tokens", req, &reply)) {
		json_decref(req);
		return 1;
	}
	json_decref(req);
	if (c->json)
		print_json(reply);
	else
		printf("%s\n", json_string_value(json_object_get(reply, "token")));
	json_decref(reply);
	return 0;
}
