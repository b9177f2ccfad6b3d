/* siteward token create|list|revoke: enrollment tokens, each good for one machine or,
 * for a rollout, for several. */
#include "cli.h"

#include "proto.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TOKEN_USAGE                                                                                \
	"usage: siteward token create [--uses N] [--ttl DURATION] | token list | "                 \
	"token revoke ID"

static int token_create(struct cli *c, int argc, char **argv)
{
	json_t *req, *reply;
	int64_t ttl = 3600, uses = 1;

	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--ttl") == 0 && i + 1 < argc) {
			if (sw_duration_parse(argv[++i], 1, SW_TOKEN_TTL_MAX, &ttl)) {
				cli_error("--ttl takes 1 s to 30 days: seconds, or a number with "
					  "s, m, h or d (30m, 12h, 7d)");
				return 2;
			}
		} else if (strcmp(argv[i], "--uses") == 0 && i + 1 < argc) {
			if (sw_int_parse(argv[++i], 1, SW_TOKEN_USES_MAX, &uses)) {
				cli_error("--uses takes a whole number of machines from 1 to %d",
					  SW_TOKEN_USES_MAX);
				return 2;
			}
		} else {
			cli_error(TOKEN_USAGE);
			return 2;
		}
	}
	req = json_pack("{sI sI}", "ttl", (json_int_t)ttl, "uses", (json_int_t)uses);
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

static void when(json_t *ms, char *out, size_t len)
{
	time_t t = (time_t)(json_integer_value(ms) / 1000);
	struct tm tm;

	if (!json_is_integer(ms) || !localtime_r(&t, &tm) ||
	    !strftime(out, len, "%Y-%m-%d %H:%M", &tm))
		snprintf(out, len, "-");
}

/* One line a token; the systems it enrolled follow on the line, the first few named. */
static int token_list(struct cli *c)
{
	json_t *reply, *tokens, *t, *u;
	size_t i, j;

	if (client_call(c, "GET", "/v1/tokens", NULL, &reply))
		return 1;
	if (c->json) {
		print_json(reply);
		json_decref(reply);
		return 0;
	}
	tokens = json_object_get(reply, "tokens");
	printf("%-12s  %-16s  %-16s  %-8s  %9s  %s\n", "ID", "CREATED", "EXPIRES", "STATE",
	       "USES LEFT", "USED BY");
	json_array_foreach(tokens, i, t)
	{
		char created[32], expires[32], left[48], by[256] = "";
		size_t at = 0, n = json_array_size(json_object_get(t, "used_by"));
		long long used = (long long)json_integer_value(json_object_get(t, "used"));

		when(json_object_get(t, "created_at"), created, sizeof(created));
		when(json_object_get(t, "expires_at"), expires, sizeof(expires));
		snprintf(left, sizeof(left), "%lld/%lld",
			 (long long)json_integer_value(json_object_get(t, "left")),
			 (long long)json_integer_value(json_object_get(t, "uses")));
		json_array_foreach(json_object_get(t, "used_by"), j, u)
		{
			const char *name = json_string_value(json_object_get(u, "system"));
			int w;

			if (j == 5 || !name)
				break;
			w = snprintf(by + at, sizeof(by) - at, "%s%s", j ? "," : "", name);
			if (w < 0 || (size_t)w >= sizeof(by) - at)
				break;
			at += (size_t)w;
		}
		if (used > (long long)(n < 5 ? n : 5) && at < sizeof(by))
			snprintf(by + at, sizeof(by) - at, "%s+%lld more", at ? " " : "",
				 used - (long long)(n < 5 ? n : 5));
		printf("%-12s  %-16s  %-16s  %-8s  %9s  %s\n",
		       json_string_value(json_object_get(t, "id")), created, expires,
		       json_string_value(json_object_get(t, "state")), left, *by ? by : "-");
	}
	if (json_array_size(tokens) == 0)
		printf("(no tokens: create one with 'siteward token create')\n");
	json_decref(reply);
	return 0;
}

static int token_revoke(struct cli *c, const char *id)
{
	char path[64];
	json_t *reply;

	if (strlen(id) != 12 || strspn(id, "0123456789abcdef") != 12) {
		cli_error("'%s' is not a token id: 12 hex digits, as 'siteward token list' "
			  "shows",
			  id);
		return 2;
	}
	snprintf(path, sizeof(path), "/v1/tokens/%s", id);
	if (client_call(c, "DELETE", path, NULL, &reply))
		return 1;
	if (c->json)
		print_json(reply);
	else
		printf("revoked token %s; its unused uses enroll nothing\n", id);
	json_decref(reply);
	return 0;
}

int cmd_token(struct cli *c, int argc, char **argv)
{
	if (argc >= 1 && strcmp(argv[0], "create") == 0)
		return token_create(c, argc - 1, argv + 1);
	if (argc == 1 && strcmp(argv[0], "list") == 0)
		return token_list(c);
	if (argc == 2 && strcmp(argv[0], "revoke") == 0)
		return token_revoke(c, argv[1]);
	cli_error(TOKEN_USAGE);
	return 2;
}
