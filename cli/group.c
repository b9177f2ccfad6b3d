/* siteward group add|remove|list: named groups of users and hosts, which product rules
 * name (siteward(1)). */
#include "cli.h"

#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char group_usage[] =
    "usage: siteward group add NAME [--users U1,U2] [--hosts H1,H2]\n"
    "       siteward group remove NAME [--users U1,U2] [--hosts H1,H2]\n"
    "       siteward group list";

/* The table fits 80 columns: names up to this wide, then the members, each list cut
 * with "…" past its column. */
#define NAME_COLUMNS  20
#define USERS_COLUMNS 34
#define TABLE_COLUMNS 78

static const char *str(const json_t *o, const char *k)
{
	const char *v = json_string_value(json_object_get(o, k));

	return v ? v : "";
}

static const char *name_of(const json_t *v)
{
	const char *s = json_string_value(v);

	return s ? s : "";
}

/* Characters, not bytes: what a terminal shows of UTF-8 text, near enough. */
static size_t columns(const char *s)
{
	size_t n = 0;

	for (; *s; s++)
		n += ((unsigned char)*s & 0xc0) != 0x80;
	return n;
}

/* Prints `text` in `width` columns: cut with "…" when wider, padded unless `last`. */
static void cell(const char *text, size_t width, int last)
{
	size_t n = columns(text), shown = 0;
	const char *p = text;

	if (n > width) {
		/* the first width - 1 characters, whole, and the ellipsis */
		while (*p && shown < width - 1) {
			p++;
			while (((unsigned char)*p & 0xc0) == 0x80)
				p++;
			shown++;
		}
		printf("%.*s…", (int)(p - text), text);
		n = width;
	} else {
		fputs(text, stdout);
	}
	if (!last)
		printf("%*s", (int)(width - n + 1), "");
}

/* The names of `arr` joined by commas, "-" when none; the caller frees it. */
static char *joined(const json_t *arr)
{
	size_t len = 2, i, at = 0;
	const json_t *v;
	char *out;

	json_array_foreach(arr, i, v) len += strlen(name_of(v)) + 1;
	if (!(out = malloc(len)))
		return NULL;
	out[0] = '\0';
	json_array_foreach(arr, i, v) at +=
	    (size_t)snprintf(out + at, len - at, "%s%s", i ? "," : "", name_of(v));
	if (!at)
		snprintf(out, len, "-");
	return out;
}

static int list(struct cli *c)
{
	json_t *reply, *g, *groups;
	size_t i, name_w = 4, hosts_w;

	if (client_call(c, "GET", "/v1/groups", NULL, &reply))
		return 1;
	if (c->json) {
		print_json(reply);
		json_decref(reply);
		return 0;
	}
	groups = json_object_get(reply, "groups");
	json_array_foreach(groups, i, g) if (columns(str(g, "name")) > name_w) name_w =
	    columns(str(g, "name"));
	if (name_w > NAME_COLUMNS)
		name_w = NAME_COLUMNS;
	hosts_w = TABLE_COLUMNS - name_w - USERS_COLUMNS - 2;
	cell("NAME", name_w, 0);
	cell("USERS", USERS_COLUMNS, 0);
	cell("HOSTS", hosts_w, 1);
	putchar('\n');
	json_array_foreach(groups, i, g)
	{
		char *users = joined(json_object_get(g, "users"));
		char *hosts = joined(json_object_get(g, "hosts"));

		cell(str(g, "name"), name_w, 0);
		cell(users ? users : "?", USERS_COLUMNS, 0);
		cell(hosts ? hosts : "?", hosts_w, 1);
		putchar('\n');
		free(users);
		free(hosts);
	}
	if (json_array_size(groups) == 0)
		printf("(no groups: make one with 'siteward group add')\n");
	json_decref(reply);
	return 0;
}

/* "U1,U2" as a list of names; empty items are skipped, so "" is none. */
static json_t *names_list(const char *arg)
{
	json_t *list = json_array();
	char *buf = strdup(arg), *save = NULL, *tok;

	if (!list || !buf) {
		json_decref(list);
		free(buf);
		return NULL;
	}
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
		json_array_append_new(list, json_string(tok));
	free(buf);
	return list;
}

static void print_counts(const char *name, const json_t *g)
{
	size_t u = json_array_size(json_object_get(g, "users"));
	size_t h = json_array_size(json_object_get(g, "hosts"));

	printf("group %s: %zu user%s, %zu host%s\n", name, u, u == 1 ? "" : "s", h,
	       h == 1 ? "" : "s");
}

int cmd_group(struct cli *c, int argc, char **argv)
{
	const char *action = argc > 0 ? argv[0] : "";
	json_t *body = NULL, *reply = NULL;
	char path[128];
	int add, rc = 2;

	if (strcmp(action, "list") == 0 && argc == 1)
		return list(c);
	add = strcmp(action, "add") == 0;
	if ((!add && strcmp(action, "remove") != 0) || argc < 2) {
		cli_error("%s", group_usage);
		return 2;
	}
	if (!sw_name_valid(argv[1])) {
		cli_error("group name '%s' must be 1-63 letters, digits, '.', '_' or '-', not "
			  "starting with '.' or '-'",
			  argv[1]);
		return 2;
	}
	if (!(body = json_object())) {
		cli_error("out of memory");
		return 1;
	}
	/* options come in pairs: --users LIST, --hosts LIST */
	for (int i = 2; i < argc; i += 2) {
		json_t *list;

		if (i + 1 >= argc ||
		    (strcmp(argv[i], "--users") != 0 && strcmp(argv[i], "--hosts") != 0)) {
			cli_error("%s", group_usage);
			goto out;
		}
		if (!(list = names_list(argv[i + 1]))) {
			cli_error("out of memory");
			rc = 1;
			goto out;
		}
		json_object_set_new(body, argv[i] + 2, list);
	}
	rc = 1;
	if (add) {
		snprintf(path, sizeof(path), "/v1/groups/%s", argv[1]);
		if (client_call(c, "POST", path, body, &reply))
			goto out;
	} else if (json_object_size(body)) {
		snprintf(path, sizeof(path), "/v1/groups/%s/remove", argv[1]);
		if (client_call(c, "POST", path, body, &reply))
			goto out;
	} else {
		snprintf(path, sizeof(path), "/v1/groups/%s", argv[1]);
		if (client_call(c, "DELETE", path, NULL, &reply))
			goto out;
	}
	rc = 0;
	if (c->json)
		print_json(reply);
	else if (!add && !json_object_size(body))
		printf("group %s deleted\n", argv[1]);
	else
		print_counts(argv[1], reply);
out:
	json_decref(body);
	json_decref(reply);
	return rc;
}
