/*
 * The agent's folder as siteward-run reads it: agent.conf (/etc/siteward/agent.conf for
 * the default folder) for the system's name and the
 * offline policy, meters.json for the metering servers, and the agent's identity.
 */
#include "run.h"

#include "conf.h"
#include "error.h"
#include "json.h"
#include "paths.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define METERS_MAX_BYTES (64 * 1024)
#define ACCESS_HINT                                                                                \
	"siteward-run needs to read the agent's folder and write its usage-cache (see "            \
	"siteward-run(1))"

static void add_meter(struct run_config *c, const char *url, const char *name)
{
	size_t n = strlen(url);
	char *u, *nm = NULL;

	while (n > 0 && url[n - 1] == '/')
		n--;
	if (c->nmeters >= RUN_MAX_METERS || (u = strndup(url, n)) == NULL)
		return;
	if (name && !(nm = strdup(name))) {
		free(u);
		return;
	}
	c->meter_names[c->nmeters] = nm;
	c->meters[c->nmeters++] = u;
}

/* A missing or empty meters.json means no server; a malformed one is said, then the same. */
static void load_meters(struct run_config *c)
{
	char path[PATH_MAX + 16], err[400], why[300];
	json_t *doc = NULL, *list, *names;
	size_t len, i;
	char *text = NULL;
	int rc;

	sw_path_join(path, sizeof(path), c->dir, "meters.json");
	rc = sw_file_read(path, METERS_MAX_BYTES, &text, &len, err, sizeof(err));
	if (rc == SW_ENOTFOUND)
		return;
	if (rc) {
		fprintf(stderr, "siteward-run: %s; asking no metering server\n", err);
		return;
	}
	if (strspn(text, " \t\r\n") == len)
		goto out;
	if (sw_json_parse_object(text, len, &doc, why, sizeof(why))) {
		fprintf(stderr, "siteward-run: %s: %s; asking no metering server\n", path, why);
		goto out;
	}
	list = json_object_get(doc, "meters");
	if (!json_is_array(list)) {
		fprintf(stderr,
			"siteward-run: %s: \"meters\" must be a list of URLs; asking no "
			"metering server\n",
			path);
		goto out;
	}
	/* Each server's system: its certificate must name it. A folder written by an agent
	 * of an older version has no names, and any metering system may answer there. */
	names = json_object_get(doc, "names");
	if (names && (!json_is_array(names) || json_array_size(names) != json_array_size(list))) {
		fprintf(stderr,
			"siteward-run: %s: \"names\" must be a list as long as \"meters\"; "
			"asking no metering server\n",
			path);
		goto out;
	}
	for (i = 0; i < json_array_size(list); i++) {
		const char *url = json_string_value(json_array_get(list, i));
		const char *name = names ? json_string_value(json_array_get(names, i)) : NULL;

		if (names && (!name || !sw_name_valid(name))) {
			run_printable(why, 120, name ? name : "(not a string)");
			fprintf(stderr,
				"siteward-run: %s: ignoring server %zu: '%s' is no system name\n",
				path, i + 1, why);
			continue;
		}

		if (!url || strncmp(url, "https://", 8) != 0 || strlen(url) >= RUN_URL_MAX) {
			run_printable(why, 120, url ? url : "(not a string)");
			fprintf(stderr, "siteward-run: %s: ignoring '%s': not an https:// URL\n",
				path, why);
			continue;
		}
		add_meter(c, url, name);
	}
out:
	json_decref(doc);
	free(text);
}

int config_load(struct run_config *c, const char *dir, char *err, size_t errlen)
{
	char path[PATH_MAX + 16];
	struct sw_conf *conf = NULL;
	const char *v;
	int rc;

	memset(c, 0, sizeof(*c));
	if (!realpath(dir, c->dir)) {
		sw_seterr(err, errlen, "%s: %s; %s", dir, strerror(errno),
			  errno == EACCES ? ACCESS_HINT : "is it the agent's folder?");
		return SW_ENOTFOUND;
	}
	/* the default folder's configuration and socket are in /etc/siteward and
	 * /run/siteward, as the agent's */
	if (sw_path_conf(c->dir, SW_PATH_AGENT_DIR, "agent.conf", path, sizeof(path)) ||
	    sw_path_runtime(c->dir, SW_PATH_AGENT_DIR, "agent.sock", c->sock, sizeof(c->sock))) {
		sw_seterr(err, errlen, "%s: path too long", c->dir);
		return SW_ETOOBIG;
	}
	if (eaccess(path, R_OK) < 0 && errno == EACCES) {
		sw_seterr(err, errlen, "cannot read %s: %s; %s", path, strerror(errno),
			  ACCESS_HINT);
		return SW_EDENIED;
	}
	if ((rc = sw_conf_load(path, &conf, err, errlen))) {
		if (rc == SW_ENOTFOUND)
			sw_seterr(err, errlen,
				  "%s has no agent.conf; is it an enrolled agent's folder?",
				  c->dir);
		goto out;
	}
	v = sw_conf_get(conf, "agent", "name", NULL);
	if (!v || !sw_name_valid(v)) {
		sw_seterr(err, errlen, "%s: [agent] name is %s; is %s an enrolled agent's folder?",
			  path, v ? "not a valid name" : "missing", c->dir);
		rc = SW_EINVAL;
		goto out;
	}
	snprintf(c->host, sizeof(c->host), "%s", v);
	v = sw_conf_get(conf, "run", "offline", "run");
	if (strcmp(v, "run") == 0) {
		c->offline = RUN_OFFLINE_RUN;
	} else if (strcmp(v, "deny") == 0) {
		c->offline = RUN_OFFLINE_DENY;
	} else {
		sw_seterr(err, errlen, "%s: [run] offline must be 'run' or 'deny', not '%.40s'",
			  path, v);
		rc = SW_EINVAL;
		goto out;
	}
	sw_path_join(c->ca, sizeof(c->ca), c->dir, "ca.crt");
	/* The machine's metering-client certificate, which every user may read and only
	 * metering servers accept; an agent enrolled before it existed has only its own. */
	sw_path_join(c->cert, sizeof(c->cert), c->dir, "client.crt");
	sw_path_join(c->key, sizeof(c->key), c->dir, "client.key");
	if (access(c->cert, F_OK) != 0) {
		sw_path_join(c->cert, sizeof(c->cert), c->dir, "agent.crt");
		sw_path_join(c->key, sizeof(c->key), c->dir, "agent.key");
	}
	load_meters(c);
	if (c->nmeters > 0) {
		/* Without the identity no server can be asked: the same, to the user, as
		 * none answering; the reason goes to whoever can fix the permissions. */
		const char *const ids[] = {c->ca, c->cert, c->key};
		for (size_t i = 0; i < SW_ARRAY_LEN(ids); i++) {
			if (eaccess(ids[i], R_OK) == 0)
				continue;
			fprintf(stderr,
				"siteward-run: cannot read %s: %s; siteward-run needs read access "
				"to the agent's identity to ask a metering server\n",
				ids[i], strerror(errno));
			config_cleanup(c);
			break;
		}
	}
	rc = 0;
out:
	sw_conf_free(conf);
	return rc;
}

void config_cleanup(struct run_config *c)
{
	for (int i = 0; i < c->nmeters; i++) {
		free(c->meters[i]);
		free(c->meter_names[i]);
	}
	c->nmeters = 0;
}
