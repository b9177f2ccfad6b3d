/*
 * Roles: which services a role brings, and making the supervisor run exactly the
 * services of the roles the server wants. The wanted roles are kept in roles.json so a
 * restarted agent keeps to them while the server is away.
 */
#include "agent.h"

#include "error.h"
#include "json.h"
#include "log.h"
#include "proto.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ROLES_FILE "roles.json"
#define MAX_ROLES  32

/* Splits a command line on blanks; "double quotes" group words. */
static int split_command(const char *line, char **argv, int max)
{
	int n = 0;
	const char *p = line;

	while (*p) {
		char word[4096];
		size_t len = 0;
		int quoted = 0;

		while (*p == ' ' || *p == '\t')
			p++;
		if (!*p)
			break;
		while (*p && (quoted || (*p != ' ' && *p != '\t'))) {
			if (*p == '"') {
				quoted = !quoted;
			} else if (len < sizeof(word) - 1) {
				word[len++] = *p;
			}
			p++;
		}
		if (quoted || n == max)
			goto bad;
		word[len] = '\0';
		argv[n] = strdup(word);
		if (!argv[n])
			goto bad;
		n++;
	}
	argv[n] = NULL;
	return n;
bad:
	while (n > 0)
		free(argv[--n]);
	argv[0] = NULL;
	return -1;
}

/* The folder of the running program, where its sibling programs are. */
static void program_dir(char *out, size_t len)
{
	ssize_t n = readlink("/proc/self/exe", out, len - 1);
	char *slash;

	if (n <= 0) {
		snprintf(out, len, "/usr/local/bin");
		return;
	}
	out[n] = '\0';
	slash = strrchr(out, '/');
	if (slash)
		*slash = '\0';
}

/* A service's definition from its built-in default and the [service.NAME] section. */
static int make_def(struct agent *a, const char *name, const char *role,
		    const char *default_command, struct svc_def *def, char *err, size_t errlen)
{
	char section[96], key[128];
	const char *command, *restart, *env;
	unsigned stop_timeout;

	memset(def, 0, sizeof(*def));
	snprintf(section, sizeof(section), "service.%s", name);
	snprintf(def->name, sizeof(def->name), "%s", name);
	snprintf(def->role, sizeof(def->role), "%s", role);
	command = sw_conf_get(a->conf, section, "command", default_command);
	if (!command || !*command) {
		sw_seterr(err, errlen, "[%s] command is not set", section);
		return -1;
	}
	if (split_command(command, def->argv, SVC_MAX_ARGS) <= 0) {
		sw_seterr(err, errlen, "[%s] command: unbalanced quotes or too many words",
			  section);
		return -1;
	}
	env = sw_conf_get(a->conf, section, "environment", "");
	if (split_command(env, def->env, SVC_MAX_ARGS) < 0) {
		sw_seterr(err, errlen, "[%s] environment: unbalanced quotes", section);
		svc_def_clear(def);
		return -1;
	}
	snprintf(def->cwd, sizeof(def->cwd), "%s", sw_conf_get(a->conf, section, "directory", ""));
	snprintf(def->user, sizeof(def->user), "%s", sw_conf_get(a->conf, section, "user", ""));
	restart = sw_conf_get(a->conf, section, "restart", "always");
	if (strcmp(restart, "always") == 0)
		def->restart = RESTART_ALWAYS;
	else if (strcmp(restart, "on-failure") == 0)
		def->restart = RESTART_ON_FAILURE;
	else if (strcmp(restart, "never") == 0)
		def->restart = RESTART_NEVER;
	else {
		sw_seterr(err, errlen, "[%s] restart must be always, on-failure or never", section);
		svc_def_clear(def);
		return -1;
	}
	if (sw_conf_get_uint(a->conf, section, "stop_timeout", 10, 1, 3600, &stop_timeout, key,
			     sizeof(key))) {
		sw_seterr(err, errlen, "%s", key);
		svc_def_clear(def);
		return -1;
	}
	def->stop_timeout_ms = stop_timeout * 1000;
	if (sw_conf_get_uint(a->conf, section, "restart_delay_ms", 1000, 10, 30000,
			     &def->restart_delay_ms, key, sizeof(key))) {
		sw_seterr(err, errlen, "%s", key);
		svc_def_clear(def);
		return -1;
	}
	return 0;
}

/* Adds one service of a role. A role just added starts its services; at start-up
 * each service goes back to what it was: running, unless an administrator stopped it. */
static void add_service(struct agent *a, const char *name, const char *role,
			const char *default_command, int fresh)
{
	struct svc_def def;
	struct service *svc;
	char err[256];

	if (!sw_name_valid(name)) {
		sw_err("role %s: [service.%s]: a service name is 1-63 letters, digits, '.', '_' or "
		       "'-'; skipped",
		       role, name);
		return;
	}
	/* one whose role went and came back while it stopped is added again */
	svc = supervisor_find(a->sup, name);
	if (svc && !service_removing(svc))
		return;
	if (make_def(a, name, role, default_command, &def, err, sizeof(err))) {
		sw_err("role %s: service %s: %s", role, name, err);
		return;
	}
	svc = supervisor_add(a->sup, &def);
	/* One an upgrade stopped waits for the upgrade to start it again. A start while
	 * it stops takes effect once it has stopped. */
	if (svc &&
	    (service_state(svc) == SW_SVC_STOPPED || service_state(svc) == SW_SVC_STOPPING ||
	     service_state(svc) == SW_SVC_STUCK) &&
	    !upgrade_holds(a, name) && (fresh || service_wants_running(svc)))
		service_start(svc);
}

/* Every [service.NAME] section must make a service, so mistakes show at start-up. */
int roles_check_config(struct agent *a, char *err, size_t errlen)
{
	for (int i = 0; i < sw_conf_count(a->conf); i++) {
		const char *section, *key, *value;
		struct svc_def def;
		int rc;

		sw_conf_entry(a->conf, i, &section, &key, &value);
		if (strncmp(section, "service.", 8) != 0 || strcmp(key, "command") != 0)
			continue;
		if (!sw_name_valid(section + 8)) {
			sw_seterr(err, errlen,
				  "[%s]: a service name is 1-63 letters, digits, '.', '_' or '-'",
				  section);
			return SW_EINVAL;
		}
		if ((rc = make_def(a, section + 8, "test", NULL, &def, err, errlen)))
			return rc;
		svc_def_clear(&def);
	}
	return 0;
}

static void add_role(struct agent *a, const char *role, int fresh)
{
	char dir[PATH_MAX], cmd[PATH_MAX * 2 + 32];

	if (strcmp(role, "software-metering") == 0) {
		program_dir(dir, sizeof(dir));
		snprintf(cmd, sizeof(cmd), "\"%s/siteward-meter\" --dir \"%s\"", dir, a->dir);
		add_service(a, "meter", role, cmd, fresh);
	} else if (strcmp(role, "test") == 0) {
		/* the test role runs what [service.NAME] sections with role = test say */
		for (int i = 0; i < sw_conf_count(a->conf); i++) {
			const char *section, *key, *value;
			sw_conf_entry(a->conf, i, &section, &key, &value);
			if (strncmp(section, "service.", 8) == 0 && strcmp(key, "role") == 0 &&
			    strcmp(value, "test") == 0)
				add_service(a, section + 8, role, NULL, fresh);
		}
	}
}

static int role_in(const json_t *roles, const char *role)
{
	size_t i;
	json_t *r;

	json_array_foreach(roles, i, r) if (strcmp(json_string_value(r), role) == 0) return 1;
	return 0;
}

static void save_roles(struct agent *a)
{
	char path[PATH_MAX + 32], *text = sw_json_dump(a->roles);

	sw_path_join(path, sizeof(path), a->dir, ROLES_FILE);
	if (!text || sw_file_write_atomic(path, text, strlen(text), 0600, NULL, 0))
		sw_warn("cannot record roles in %s", path);
	free(text);
}

static int apply(struct agent *a, const json_t *wanted, int fresh)
{
	struct service *svc, *next;
	json_t *before;
	char err[160];
	size_t i;
	json_t *r;

	if (sw_proto_roles_check(wanted, err, sizeof(err))) {
		sw_warn("ignoring roles: %s", err);
		return -1;
	}
	if (json_equal(a->roles, wanted))
		return 0;
	before = a->roles;
	a->roles = json_deep_copy(wanted);
	/* Services of roles no longer wanted are stopped and forgotten. */
	for (svc = supervisor_first(a->sup); svc; svc = next) {
		next = supervisor_next(svc);
		if (!role_in(a->roles, service_role(svc))) {
			sw_info("role %s removed: stopping %s", service_role(svc),
				service_name(svc));
			supervisor_remove(a->sup, svc);
		}
	}
	json_array_foreach(a->roles, i, r)
	{
		const char *role = json_string_value(r);
		if (!role_in(before, role)) {
			sw_info("role %s: running its services", role);
			add_role(a, role, fresh);
		}
	}
	json_decref(before);
	save_roles(a);
	dp_update(a, role_in(a->roles, "distribution-point"));
	return 0;
}

int roles_apply(struct agent *a, const json_t *wanted)
{
	return apply(a, wanted, 1);
}

void roles_load(struct agent *a)
{
	char path[PATH_MAX + 32], *text;
	size_t len;
	json_t *j = NULL;

	a->roles = json_array();
	sw_path_join(path, sizeof(path), a->dir, ROLES_FILE);
	if (sw_file_read(path, 64 * 1024, &text, &len, NULL, 0) == 0) {
		j = json_loadb(text, len, 0, NULL);
		free(text);
	}
	/* The roles last wanted come back as they were while the server is away. */
	if (j)
		apply(a, j, 0);
	json_decref(j);
	supervisor_stop_leftovers(a->sup);
}
