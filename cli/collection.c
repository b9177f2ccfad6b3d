/* siteward collection add|list|members|remove: the groups of systems deployments and
 * commands aim at. */
#include "cli.h"

#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "usage: siteward collection add NAME --where EXPR | --systems A,B,...\n"
    "       siteward collection list | members NAME | remove NAME\n"
    "EXPR: package:NAME [< <= = != >= > VERSION], os.id, os.version, os.codename,\n"
    "      kernel, arch, name (= != ~GLOB), memory, disk_free (8G), cpus, role = ROLE,\n"
    "      joined with and, or, not, ( )";

static json_t *names(const char *list)
{
	json_t *arr = json_array();
	const char *s = list;

	while (arr && *s) {
		size_t n = strcspn(s, ",");

		if (n && json_array_append_new(arr, json_stringn(s, n))) {
			json_decref(arr);
			return NULL;
		}
		s += n + (s[n] == ',');
	}
	return arr;
}

static void print_list(const json_t *reply)
{
	const json_t *c;
	size_t i;

	if (!json_array_size(json_object_get(reply, "collections")))
		printf("(no collections: make one with 'siteward collection add')\n");
	json_array_foreach(json_object_get(reply, "collections"), i, c)
	{
		const char *where = json_string_value(json_object_get(c, "where"));

		if (where) {
			printf("%-24s where %s\n", json_string_value(json_object_get(c, "name")),
			       where);
		} else {
			const json_t *v;
			size_t k;

			printf("%-24s systems ", json_string_value(json_object_get(c, "name")));
			json_array_foreach(json_object_get(c, "systems"), k, v)
			    printf("%s%s", k ? "," : "", json_string_value(v));
			printf("\n");
		}
	}
}

int cmd_collection(struct cli *c, int argc, char **argv)
{
	const char *action = argc > 0 ? argv[0] : "";
	char path[160];
	json_t *reply, *body, *v;
	size_t i;

	if (strcmp(action, "list") == 0 && argc == 1) {
		if (client_call(c, "GET", "/v1/collections", NULL, &reply))
			return 1;
		c->json ? print_json(reply) : print_list(reply);
		json_decref(reply);
		return 0;
	}
	if (argc < 2 || !sw_name_valid(argv[1])) {
		cli_error("%s", usage);
		return 2;
	}
	if (strcmp(action, "members") == 0 && argc == 2) {
		snprintf(path, sizeof(path), "/v1/collections/%s/members", argv[1]);
		if (client_call(c, "GET", path, NULL, &reply))
			return 1;
		if (c->json) {
			print_json(reply);
		} else {
			json_array_foreach(json_object_get(reply, "members"), i, v)
			    printf("%s\n", json_string_value(v));
			json_array_foreach(json_object_get(reply, "not_enrolled"), i, v)
			    fprintf(stderr, "siteward: warning: %s is not an enrolled system\n",
				    json_string_value(v));
			fprintf(stderr, "%zu of %lld systems\n",
				json_array_size(json_object_get(reply, "members")),
				(long long)json_integer_value(json_object_get(reply, "systems")));
		}
		json_decref(reply);
		return 0;
	}
	if (strcmp(action, "remove") == 0 && argc == 2) {
		snprintf(path, sizeof(path), "/v1/collections/%s", argv[1]);
		if (client_call(c, "DELETE", path, NULL, &reply))
			return 1;
		c->json ? print_json(reply) : (void)printf("collection %s removed\n", argv[1]);
		json_decref(reply);
		return 0;
	}
	if (strcmp(action, "add") != 0 || argc != 4 ||
	    (strcmp(argv[2], "--where") != 0 && strcmp(argv[2], "--systems") != 0)) {
		cli_error("%s", usage);
		return 2;
	}
	body = argv[2][2] == 'w' ? json_pack("{ss}", "where", argv[3])
				 : json_pack("{so}", "systems", names(argv[3]));
	snprintf(path, sizeof(path), "/v1/collections/%s", argv[1]);
	i = (size_t)client_call(c, "POST", path, body, &reply);
	json_decref(body);
	if (i)
		return 1;
	if (c->json)
		print_json(reply);
	else
		printf("collection %s %s; 'siteward collection members %s' lists it\n", argv[1],
		       json_string_value(json_object_get(reply, "outcome")), argv[1]);
	json_decref(reply);
	return 0;
}
