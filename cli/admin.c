/* siteward admin add|list|remove and siteward audit: named administrators and what they
 * did (siteward(1)). */
#include "cli.h"

#include "error.h"
#include "pki.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define ADMIN_USAGE                                                                                \
	"usage: siteward admin add NAME --role viewer|operator|admin --out DIR "                   \
	"[--server HOST:PORT] | siteward admin list | siteward admin remove NAME"
#define AUDIT_USAGE "usage: siteward audit [--since YYYY-MM-DD|Nd] [--who NAME] [--limit N]"

static const char *str(const json_t *o, const char *k)
{
	const char *v = json_string_value(json_object_get(o, k));

	return v ? v : "";
}

/* Writes `data` as DIR/name; 0, or 1 having said why. */
static int write_in(const char *dir, const char *name, const void *data, size_t len, unsigned mode)
{
	char path[PATH_MAX + 64], err[300];

	sw_path_join(path, sizeof(path), dir, name);
	if (sw_file_write_atomic(path, data, len, mode, err, sizeof(err))) {
		cli_error("%s", err);
		return 1;
	}
	return 0;
}

static void when(long long ms, char *out, size_t len)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, len, "%Y-%m-%d %H:%M:%SZ", &tm);
}

/* The folder a workstation needs: the key (made here, never sent), the certificate, the
 * site's CAs, where the server is, and the same key and certificate as a PKCS#12 file
 * for a browser, with its password beside it. */
static int add(struct cli *c, const char *name, const char *role, const char *out,
	       const char *server)
{
	char *key = NULL, *csr = NULL, err[300], conf[400], pass[33], probe[PATH_MAX + 64];
	unsigned char *p12 = NULL;
	size_t p12_len = 0;
	json_t *req = NULL, *reply = NULL;
	/* the answer goes to files, not the terminal: exact, as --json has it */
	struct cli exact = *c;
	int rc = 1;

	exact.json = 1;
	sw_path_join(probe, sizeof(probe), out, "admin.key");
	if (access(probe, F_OK) == 0) {
		cli_error("%s already holds an administrator's key; choose an empty folder", out);
		return 1;
	}
	if (mkdir(out, 0700) && errno != EEXIST) {
		cli_error("cannot make %s: %s", out, strerror(errno));
		return 1;
	}
	if (sw_pki_key_generate(&key, err, sizeof(err)) ||
	    sw_pki_csr_create(key, name, &csr, err, sizeof(err))) {
		cli_error("%s", err);
		goto out;
	}
	req = json_pack("{ss ss ss}", "name", name, "role", role, "csr", csr);
	if (!req || client_call(&exact, "POST", "/v1/admins", req, &reply))
		goto out;
	/* the server as this command reached it, unless told otherwise */
	if (!server)
		server = strncmp(c->url, "https://", 8) == 0 ? c->url + 8 : c->url;
	snprintf(conf, sizeof(conf),
		 "# An administrator's folder for siteward --site: see siteward(1).\n"
		 "[client]\n"
		 "server = %s\n",
		 server);
	if (sw_random_hex(pass, 16)) {
		cli_error("cannot make a password for the PKCS#12 file");
		goto out;
	}
	if (sw_pki_pkcs12(key, str(reply, "certificate"), name, pass, &p12, &p12_len, err,
			  sizeof(err))) {
		cli_error("%s", err);
		goto out;
	}
	if (write_in(out, "admin.key", key, strlen(key), 0600) ||
	    write_in(out, "admin.crt", str(reply, "certificate"), strlen(str(reply, "certificate")),
		     0644) ||
	    write_in(out, "ca.crt", str(reply, "ca"), strlen(str(reply, "ca")), 0644) ||
	    write_in(out, "siteward.conf", conf, strlen(conf), 0600) ||
	    write_in(out, "admin.p12", p12, p12_len, 0600) ||
	    write_in(out, "admin.p12.password", pass, strlen(pass), 0600))
		goto out;
	if (c->json) {
		json_object_set_new(reply, "folder", json_string(out));
		json_object_del(reply, "certificate");
		json_object_del(reply, "ca");
		print_json(reply);
	} else {
		printf("administrator %s (%s) added: %s holds its key, certificate and the site's "
		       "CAs; use it with 'siteward --site %s ...'\n",
		       name, role, out, out);
		printf("for a browser: %s/admin.p12, password in %s/admin.p12.password\n", out,
		       out);
	}
	rc = 0;
out:
	if (key) {
		explicit_bzero(key, strlen(key));
		free(key);
	}
	free(csr);
	free(p12);
	json_decref(req);
	json_decref(reply);
	return rc;
}

static int list(struct cli *c)
{
	json_t *reply, *a;
	size_t i;

	if (client_call(c, "GET", "/v1/admins", NULL, &reply))
		return 1;
	if (c->json) {
		print_json(reply);
		json_decref(reply);
		return 0;
	}
	printf("%-24s %-9s %-21s %-16s %s\n", "NAME", "ROLE", "ADDED", "BY", "REMOVED");
	json_array_foreach(json_object_get(reply, "admins"), i, a)
	{
		char added[32], removed[32] = "-";

		when(json_integer_value(json_object_get(a, "created_at")), added, sizeof(added));
		if (json_is_integer(json_object_get(a, "removed_at")))
			when(json_integer_value(json_object_get(a, "removed_at")), removed,
			     sizeof(removed));
		printf("%-24s %-9s %-21s %-16s %s\n", str(a, "name"), str(a, "role"), added,
		       str(a, "created_by"), removed);
	}
	json_decref(reply);
	return 0;
}

static int remove_admin(struct cli *c, const char *name)
{
	char path[128];
	json_t *reply;

	snprintf(path, sizeof(path), "/v1/admins/%s", name);
	if (client_call(c, "DELETE", path, NULL, &reply))
		return 1;
	if (c->json)
		print_json(reply);
	else
		printf("removed %s; %zu certificates revoked\n", name,
		       json_array_size(json_object_get(reply, "revoked")));
	json_decref(reply);
	return 0;
}

int cmd_admin(struct cli *c, int argc, char **argv)
{
	const char *role = NULL, *out = NULL, *server = NULL;

	if (argc == 1 && strcmp(argv[0], "list") == 0)
		return list(c);
	if (argc == 2 && strcmp(argv[0], "remove") == 0 && sw_name_valid(argv[1]))
		return remove_admin(c, argv[1]);
	if (argc < 2 || strcmp(argv[0], "add") != 0 || !sw_name_valid(argv[1])) {
		cli_error(ADMIN_USAGE);
		return 2;
	}
	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "--role") == 0 && i + 1 < argc)
			role = argv[++i];
		else if (strcmp(argv[i], "--out") == 0 && i + 1 < argc)
			out = argv[++i];
		else if (strcmp(argv[i], "--server") == 0 && i + 1 < argc)
			server = argv[++i];
		else {
			cli_error(ADMIN_USAGE);
			return 2;
		}
	}
	if (!role || !out) {
		cli_error(ADMIN_USAGE);
		return 2;
	}
	return add(c, argv[1], role, out, server);
}

int cmd_audit(struct cli *c, int argc, char **argv)
{
	long long since = 0;
	const char *who = NULL;
	unsigned long limit = 100;
	char path[256], at[32], *end;
	json_t *reply, *r;
	size_t i;

	for (int k = 0; k < argc; k++) {
		if (strcmp(argv[k], "--since") == 0 && k + 1 < argc &&
		    cli_parse_since(argv[k + 1], &since) == 0) {
			k++;
		} else if (strcmp(argv[k], "--who") == 0 && k + 1 < argc &&
			   sw_name_valid(argv[k + 1])) {
			who = argv[++k];
		} else if (strcmp(argv[k], "--limit") == 0 && k + 1 < argc &&
			   (limit = strtoul(argv[k + 1], &end, 10)) >= 1 && limit <= 10000 &&
			   !*end) {
			k++;
		} else {
			cli_error(AUDIT_USAGE);
			return 2;
		}
	}
	snprintf(path, sizeof(path), "/v1/audit?since=%lld&limit=%lu%s%s", since, limit,
		 who ? "&who=" : "", who ? who : "");
	if (client_call(c, "GET", path, NULL, &reply))
		return 1;
	if (c->json) {
		print_json(reply);
		json_decref(reply);
		return 0;
	}
	printf("%-21s %-16s %-15s %-6s %-34s %s\n", "WHEN", "WHO", "FROM", "STATUS", "WHAT",
	       "OUTCOME");
	json_array_foreach(json_object_get(reply, "records"), i, r)
	{
		char what[320];

		when(json_integer_value(json_object_get(r, "at")), at, sizeof(at));
		snprintf(what, sizeof(what), "%s %s", str(r, "method"), str(r, "path"));
		printf("%-21s %-16s %-15s %-6lld %-34s %s\n", at, str(r, "who"), str(r, "address"),
		       (long long)json_integer_value(json_object_get(r, "status")), what,
		       str(r, "outcome"));
	}
	if (json_array_size(json_object_get(reply, "records")) == 0)
		printf("(nothing recorded%s)\n", since || who ? " that matches" : " yet");
	json_decref(reply);
	return 0;
}
