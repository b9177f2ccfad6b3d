#include "proto.h"

#include "error.h"
#include "json.h"
#include "pkg.h"
#include "strmap.h"
#include "util.h"

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static int is_hex(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
	return 1;
}

int sw_proto_token_split(const char *token, char secret[SW_TOKEN_SECRET_HEX + 1],
			 char pin[SW_TOKEN_PIN_HEX + 1])
{
	if (strlen(token) != SW_TOKEN_LEN || token[SW_TOKEN_SECRET_HEX] != '.' ||
	    !is_hex(token, SW_TOKEN_SECRET_HEX) ||
	    !is_hex(token + SW_TOKEN_SECRET_HEX + 1, SW_TOKEN_PIN_HEX))
		return SW_EINVAL;
	memcpy(secret, token, SW_TOKEN_SECRET_HEX);
	secret[SW_TOKEN_SECRET_HEX] = '\0';
	memcpy(pin, token + SW_TOKEN_SECRET_HEX + 1, SW_TOKEN_PIN_HEX);
	pin[SW_TOKEN_PIN_HEX] = '\0';
	return 0;
}

static int address_valid(const char *address, char *err, size_t errlen)
{
	char host[256];
	unsigned port;

	return sw_hostport_parse(address, host, sizeof(host), &port, 0, err, errlen);
}

int sw_proto_enroll_parse(const json_t *j, struct sw_enroll_req *out, char *err, size_t errlen)
{
	int rc;

	memset(out, 0, sizeof(*out));
	if ((rc = sw_json_str(j, "token", 128, 1, &out->token, err, errlen)) ||
	    (rc = sw_json_str(j, "name", 63, 1, &out->name, err, errlen)) ||
	    (rc = sw_json_str(j, "csr", 16384, 1, &out->csr, err, errlen)) ||
	    (rc = sw_json_str(j, "address", 300, 0, &out->address, err, errlen)) ||
	    (rc = sw_json_str(j, "client_csr", 16384, 0, &out->client_csr, err, errlen)) ||
	    (rc = sw_json_str(j, "meter_csr", 16384, 0, &out->meter_csr, err, errlen)))
		return rc;
	if (!sw_name_valid(out->name)) {
		sw_seterr(err, errlen, "name '%s' must be 1-63 letters, digits, '.', '_' or '-'",
			  out->name);
		return SW_EINVAL;
	}
	return out->address ? address_valid(out->address, err, errlen) : 0;
}

/* Facts an agent reports, each with its type and bound. */
static const struct {
	const char *key;
	int is_int;
	int64_t max;
} facts_known[] = {
    {"hostname", 0, 255},
    {"os", 0, 255},
    {"kernel", 0, 255},
    {"arch", 0, 64},
    {"cpus", 1, 65536},
    {"memory_total", 1, INT64_MAX},
    {"memory_available", 1, INT64_MAX},
    {"disk_free", 1, INT64_MAX},
    {"uptime", 1, INT64_MAX},
    {"agent_uptime", 1, INT64_MAX},
};

static int heartbeat_base(const json_t *j, struct sw_heartbeat *out, char *err, size_t errlen)
{
	json_t *facts, *clean = NULL;
	int rc;

	if ((rc = sw_json_str(j, "version", 64, 1, &out->version, err, errlen)) ||
	    (rc = sw_json_str(j, "address", 300, 0, &out->address, err, errlen)) ||
	    (out->address && (rc = address_valid(out->address, err, errlen))))
		return rc;
	facts = json_object_get(j, "facts");
	if (!json_is_object(facts)) {
		sw_seterr(err, errlen, "field 'facts' must be an object");
		return SW_EINVAL;
	}
	clean = json_object();
	if (!clean)
		return SW_ENOMEM;
	for (size_t i = 0; i < SW_ARRAY_LEN(facts_known); i++) {
		const char *key = facts_known[i].key;
		if (!json_object_get(facts, key))
			continue;
		if (facts_known[i].is_int) {
			int64_t v = 0;
			rc = sw_json_int(facts, key, 0, facts_known[i].max, 1, &v, err, errlen);
			if (!rc)
				json_object_set_new(clean, key, json_integer(v));
		} else {
			const char *s;
			rc =
			    sw_json_str(facts, key, (size_t)facts_known[i].max, 1, &s, err, errlen);
			if (!rc)
				json_object_set_new(clean, key, json_string(s));
		}
		if (rc) {
			json_decref(clean);
			return rc;
		}
	}
	out->facts = clean;
	return 0;
}

int sw_proto_role_known(const char *role)
{
	return strcmp(role, "software-metering") == 0 || strcmp(role, "distribution-point") == 0 ||
	       strcmp(role, "test") == 0;
}

int sw_proto_roles_check(const json_t *roles, char *err, size_t errlen)
{
	size_t i, k;
	json_t *r;

	if (!json_is_array(roles) || json_array_size(roles) > 32) {
		sw_seterr(err, errlen, "roles must be an array of at most 32 names");
		return SW_EINVAL;
	}
	json_array_foreach(roles, i, r)
	{
		if (!json_is_string(r) || !sw_proto_role_known(json_string_value(r))) {
			sw_seterr(err, errlen, "unknown role '%.64s'",
				  json_is_string(r) ? json_string_value(r) : "?");
			return SW_EINVAL;
		}
		for (k = 0; k < i; k++)
			if (json_equal(json_array_get(roles, k), r)) {
				sw_seterr(err, errlen, "role '%s' given twice",
					  json_string_value(r));
				return SW_EINVAL;
			}
	}
	return 0;
}

/* Each state enum's names, in its order, the last one "unknown": the one table that
 * turns a state into words and back. */
static const char *const svc_state_names[] = {"stopped", "starting", "running", "stopping",
					      "failed",	 "stuck",    "unknown"};
static const char *const run_state_names[] = {"running",  "rolling-back", "interrupted", "done",
					      "deferred", "failed",	  "rolled-back", "unknown"};
static const char *const sys_state_names[] = {"pending",     "active",	"upgraded",
					      "deferred",    "failed",	"unchanged",
					      "rolled-back", "removed", "unknown"};

_Static_assert(SW_ARRAY_LEN(svc_state_names) == SW_SVC_UNKNOWN + 1, "a name for each state");
_Static_assert(SW_ARRAY_LEN(run_state_names) == SW_RUN_UNKNOWN + 1, "a name for each state");
_Static_assert(SW_ARRAY_LEN(sys_state_names) == SW_SYS_UNKNOWN + 1, "a name for each state");

/* The index of `name` in `names` (n of them, the last "unknown"); the last if none. */
static int state_index(const char *const *names, int n, const char *name)
{
	for (int i = 0; name && i < n - 1; i++)
		if (strcmp(name, names[i]) == 0)
			return i;
	return n - 1;
}

enum sw_svc_state sw_svc_state_parse(const char *name)
{
	return (enum sw_svc_state)state_index(svc_state_names, SW_ARRAY_LEN(svc_state_names), name);
}

const char *sw_svc_state_name(enum sw_svc_state s)
{
	return s >= SW_SVC_STOPPED && s <= SW_SVC_UNKNOWN ? svc_state_names[s] : "unknown";
}

enum sw_run_state sw_run_state_parse(const char *name)
{
	return (enum sw_run_state)state_index(run_state_names, SW_ARRAY_LEN(run_state_names), name);
}

const char *sw_run_state_name(enum sw_run_state s)
{
	return s >= SW_RUN_RUNNING && s <= SW_RUN_UNKNOWN ? run_state_names[s] : "unknown";
}

enum sw_sys_state sw_sys_state_parse(const char *name)
{
	return (enum sw_sys_state)state_index(sys_state_names, SW_ARRAY_LEN(sys_state_names), name);
}

const char *sw_sys_state_name(enum sw_sys_state s)
{
	return s >= SW_SYS_PENDING && s <= SW_SYS_UNKNOWN ? sys_state_names[s] : "unknown";
}

json_t *sw_proto_service_parse(const json_t *v, char *err, size_t errlen)
{
	const char *name, *role, *state, *reason, *tail;
	int64_t pid = 0, status = 0, sig = 0;
	json_t *out;

	if (!json_is_object(v)) {
		sw_seterr(err, errlen, "each service must be an object");
		return NULL;
	}
	if (sw_json_str(v, "name", 63, 1, &name, err, errlen) ||
	    sw_json_str(v, "role", 64, 1, &role, err, errlen) ||
	    sw_json_str(v, "state", 16, 1, &state, err, errlen) ||
	    sw_json_str(v, "reason", 400, 0, &reason, err, errlen) ||
	    sw_json_str(v, "log_tail", 16384, 0, &tail, err, errlen) ||
	    sw_json_int(v, "pid", 0, INT32_MAX, 0, &pid, err, errlen) ||
	    sw_json_int(v, "last_exit_status", -1, 255, 0, &status, err, errlen) ||
	    sw_json_int(v, "last_exit_signal", 0, 128, 0, &sig, err, errlen))
		return NULL;
	if (!sw_name_valid(name) || sw_svc_state_parse(state) == SW_SVC_UNKNOWN) {
		sw_seterr(err, errlen, "service '%.63s' has a bad name or state", name);
		return NULL;
	}
	out = json_pack("{ss ss ss ss sI sb}", "name", name, "role", role, "state", state, "reason",
			reason ? reason : "", "pid", (json_int_t)pid, "wants_running",
			json_is_true(json_object_get(v, "wants_running")));
	if (out && json_object_get(v, "last_exit_status")) {
		json_object_set_new(out, "last_exit_status", json_integer(status));
		json_object_set_new(out, "last_exit_signal", json_integer(sig));
	}
	if (out && tail)
		json_object_set_new(out, "log_tail", json_string(tail));
	return out;
}

json_t *sw_proto_services_parse(const json_t *arr, char *err, size_t errlen)
{
	json_t *out, *v;
	size_t i;

	if (!json_is_array(arr) || json_array_size(arr) > 64) {
		sw_seterr(err, errlen, "services must be an array of at most 64");
		return NULL;
	}
	if (!(out = json_array())) {
		sw_seterr(err, errlen, "out of memory");
		return NULL;
	}
	json_array_foreach(arr, i, v)
	{
		json_t *s = sw_proto_service_parse(v, err, errlen);
		if (!s) {
			json_decref(out);
			return NULL;
		}
		json_array_append_new(out, s);
	}
	return out;
}

/* The id of a CA bundle: lowercase hex, as sw_pki_bundle_id() makes it. */
static int hex_id(const char *s)
{
	size_t n = strspn(s, "0123456789abcdef");

	return n > 0 && n <= 40 && s[n] == '\0';
}

int sw_proto_heartbeat_parse(const json_t *j, struct sw_heartbeat *out, char *err, size_t errlen)
{
	json_t *roles, *services;
	int rc;

	memset(out, 0, sizeof(*out));
	roles = json_object_get(j, "roles");
	if (roles && (rc = sw_proto_roles_check(roles, err, errlen)))
		return rc;
	services = json_object_get(j, "services");
	rc = heartbeat_base(j, out, err, errlen);
	if (!rc)
		rc = sw_json_str(j, "meter_address", 300, 0, &out->meter_address, err, errlen);
	if (!rc)
		rc = sw_json_str(j, "dp_address", 300, 0, &out->dp_address, err, errlen);
	if (!rc)
		rc = sw_json_int(j, "now", 0, INT64_MAX / 2, 0, &out->now, err, errlen);
	if (!rc)
		rc = sw_json_str(j, "ca_id", 64, 0, &out->ca_id, err, errlen);
	if (!rc && out->ca_id && !hex_id(out->ca_id)) {
		sw_seterr(err, errlen, "ca_id is not an id of a CA bundle");
		rc = SW_EINVAL;
	}
	if (!rc && out->meter_address)
		rc = address_valid(out->meter_address, err, errlen);
	if (!rc && out->dp_address)
		rc = address_valid(out->dp_address, err, errlen);
	if (rc) {
		sw_proto_heartbeat_clear(out);
		return rc;
	}
	if (roles)
		out->roles = json_deep_copy(roles);
	if (services && !(out->services = sw_proto_services_parse(services, err, errlen))) {
		sw_proto_heartbeat_clear(out);
		return SW_EINVAL;
	}
	return 0;
}

void sw_proto_heartbeat_clear(struct sw_heartbeat *hb)
{
	json_decref(hb->facts);
	json_decref(hb->roles);
	json_decref(hb->services);
	memset(hb, 0, sizeof(*hb));
}

/* POST /v1/agent/poll: what an agent brings each time it asks for work. */
int sw_proto_poll_parse(const json_t *j, struct sw_poll *out, char *err, size_t errlen)
{
	const char *id, *body;
	json_t *v;
	size_t i;
	int64_t status;
	int rc;

	memset(out, 0, sizeof(*out));
	out->answers = json_object_get(j, "answers");
	out->running = json_object_get(j, "running");
	if (out->answers &&
	    (!json_is_array(out->answers) || json_array_size(out->answers) > SW_POLL_MAX_IDS)) {
		sw_seterr(err, errlen, "answers must be a list of at most %d", SW_POLL_MAX_IDS);
		return SW_EINVAL;
	}
	if (out->running &&
	    (!json_is_array(out->running) || json_array_size(out->running) > SW_POLL_MAX_IDS)) {
		sw_seterr(err, errlen, "running must be a list of at most %d command ids",
			  SW_POLL_MAX_IDS);
		return SW_EINVAL;
	}
	json_array_foreach(out->answers, i, v)
	{
		if (!json_is_object(v) ||
		    (rc = sw_json_str(v, "id", SW_COMMAND_ID_MAX, 1, &id, err, errlen)) ||
		    (rc = sw_json_int(v, "status", 100, 599, 1, &status, err, errlen)) ||
		    (rc = sw_json_str(v, "body", SW_HTTP_MAX_ANSWER, 0, &body, err, errlen))) {
			if (!json_is_object(v))
				sw_seterr(err, errlen, "an answer must be an object");
			return SW_EINVAL;
		}
	}
	json_array_foreach(out->running, i, v)
	{
		if (!json_is_string(v) || strlen(json_string_value(v)) > SW_COMMAND_ID_MAX) {
			sw_seterr(err, errlen, "running must list command ids");
			return SW_EINVAL;
		}
	}
	if ((rc = sw_json_int(j, "hold_ms", 0, SW_POLL_HOLD_MAX_MS, 0, &out->hold_ms, err, errlen)))
		return rc;
	v = json_object_get(j, "heartbeat");
	if (!v)
		return 0;
	if (!json_is_object(v)) {
		sw_seterr(err, errlen, "heartbeat must be an object");
		return SW_EINVAL;
	}
	if ((rc = sw_proto_heartbeat_parse(v, &out->heartbeat, err, errlen)))
		return rc;
	out->has_heartbeat = 1;
	return 0;
}

/* The server's answer to a poll: {"commands": [{"id", "method", "path", "body",
 * "deadline"}]}, every field checked before the agent acts on any of them. */
int sw_proto_commands_check(const json_t *j, char *err, size_t errlen)
{
	json_t *cmds = json_object_get(j, "commands"), *c;
	const char *id, *method, *path, *body;
	int64_t deadline;
	size_t i;
	int rc;

	if (!json_is_array(cmds) || json_array_size(cmds) > SW_POLL_MAX_IDS) {
		sw_seterr(err, errlen, "commands must be a list of at most %d", SW_POLL_MAX_IDS);
		return SW_EINVAL;
	}
	json_array_foreach(cmds, i, c)
	{
		if (!json_is_object(c)) {
			sw_seterr(err, errlen, "a command must be an object");
			return SW_EINVAL;
		}
		if ((rc = sw_json_str(c, "id", SW_COMMAND_ID_MAX, 1, &id, err, errlen)) ||
		    (rc = sw_json_str(c, "method", 7, 1, &method, err, errlen)) ||
		    (rc = sw_json_str(c, "path", 1024, 1, &path, err, errlen)) ||
		    (json_object_get(c, "body") && !json_is_null(json_object_get(c, "body")) &&
		     (rc = sw_json_str(c, "body", SW_HTTP_MAX_ANSWER, 1, &body, err, errlen))) ||
		    (rc = sw_json_int(c, "deadline", 0, INT64_MAX / 2, 1, &deadline, err, errlen)))
			return rc;
		if (strcmp(method, "GET") != 0 && strcmp(method, "POST") != 0 &&
		    strcmp(method, "PUT") != 0 && strcmp(method, "DELETE") != 0) {
			sw_seterr(err, errlen,
				  "a command's method must be GET, POST, PUT or DELETE");
			return SW_EINVAL;
		}
		if (strncmp(path, "/v1/", 4) != 0) {
			sw_seterr(err, errlen, "a command's path must start with /v1/");
			return SW_EINVAL;
		}
	}
	return 0;
}

int sw_proto_token_req_parse(const json_t *j, struct sw_token_req *out, char *err, size_t errlen)
{
	int rc;

	out->ttl_s = 3600;
	out->uses = 1;
	if ((rc = sw_json_int(j, "ttl", 1, SW_TOKEN_TTL_MAX, 0, &out->ttl_s, err, errlen)) ||
	    (rc = sw_json_int(j, "uses", 1, SW_TOKEN_USES_MAX, 0, &out->uses, err, errlen)))
		return rc;
	return 0;
}

int sw_proto_upgrade_req_parse(const json_t *j, struct sw_upgrade_req *out, char *err,
			       size_t errlen)
{
	int64_t parallel = 5, stop = 30000, max_failures = -1;
	const char *on_stuck = NULL;
	json_t *strict = json_object_get(j, "strict");
	int rc;

	memset(out, 0, sizeof(*out));
	if ((rc = sw_json_int(j, "parallel", 1, 1000, 0, &parallel, err, errlen)) ||
	    (rc = sw_json_int(j, "stop_timeout_ms", 100, 3600000, 0, &stop, err, errlen)) ||
	    (rc = sw_json_int(j, "max_failures", -1, 1000000, 0, &max_failures, err, errlen)) ||
	    (rc = sw_json_str(j, "on_stuck", 15, 0, &on_stuck, err, errlen)) ||
	    (rc = sw_json_str(j, "package", 4096, 1, &out->package, err, errlen)))
		return rc;
	if (!on_stuck)
		on_stuck = "defer";
	if (strcmp(on_stuck, "defer") && strcmp(on_stuck, "kill") &&
	    strcmp(on_stuck, "remove-role") && strcmp(on_stuck, "fail")) {
		sw_seterr(err, errlen, "on_stuck must be defer, kill, remove-role or fail");
		return SW_EINVAL;
	}
	if (strict && !json_is_boolean(strict)) {
		sw_seterr(err, errlen, "strict must be true or false");
		return SW_EINVAL;
	}
	/* A package is named by its hash in the site's store, never by a path: the server
	 * opens no file an administrator names on its disk. */
	if (strlen(out->package) != 64 || strspn(out->package, "0123456789abcdef") != 64) {
		sw_seterr(err, errlen,
			  "package: give the SHA-256 of a package in the site's store (upload "
			  "it with POST /v1/packages, as `siteward upgrade check FILE` does); "
			  "paths on the server are not read");
		return SW_EINVAL;
	}
	snprintf(out->on_stuck, sizeof(out->on_stuck), "%s", on_stuck);
	out->parallel = (unsigned)parallel;
	out->stop_timeout_ms = (unsigned)stop;
	out->max_failures = (int)max_failures;
	out->strict = json_is_true(strict);
	return 0;
}

int sw_proto_stage_req_parse(const json_t *j, struct sw_stage_req *out, char *err, size_t errlen)
{
	int rc;

	memset(out, 0, sizeof(*out));
	if ((rc = sw_json_str(j, "version", SW_PKG_VERSION_MAX, 1, &out->version, err, errlen)) ||
	    (rc = sw_json_str(j, "sha256", 64, 1, &out->sha256, err, errlen)) ||
	    (rc = sw_json_str(j, "url", SW_STAGE_URL_MAX, 1, &out->url, err, errlen)) ||
	    (rc = sw_json_int(j, "size", 1, SW_STAGE_PACKAGE_MAX, 1, &out->size, err, errlen)) ||
	    (rc = sw_json_int(j, "deadline_ms", 0, INT64_MAX / 2, 0, &out->deadline_ms, err,
			      errlen)))
		return rc;
	if (!sw_version_valid(out->version)) {
		sw_seterr(err, errlen, "not a valid version");
		return SW_EINVAL;
	}
	if (strlen(out->sha256) != 64 || strspn(out->sha256, "0123456789abcdef") != 64) {
		sw_seterr(err, errlen, "sha256 must be 64 lowercase hex digits");
		return SW_EINVAL;
	}
	if (strncmp(out->url, "https://", 8) != 0) {
		sw_seterr(err, errlen, "url must be an https:// URL");
		return SW_EINVAL;
	}
	return 0;
}

int sw_proto_revoked_parse(const json_t *arr, struct sw_strmap **out, char *err, size_t errlen)
{
	const json_t *v;
	size_t i;

	*out = NULL;
	if (!arr || json_is_null(arr))
		return 0;
	if (!json_is_array(arr)) {
		sw_seterr(err, errlen, "'revoked' must be an array");
		return SW_EINVAL;
	}
	if (json_array_size(arr) > SW_MAX_REVOKED) {
		sw_seterr(err, errlen, "more than %d revoked certificates", SW_MAX_REVOKED);
		return SW_ETOOBIG;
	}
	if (!(*out = sw_strmap_new()))
		return SW_ENOMEM;
	json_array_foreach(arr, i, v)
	{
		const char *s = json_string_value(v);
		size_t n = s ? strlen(s) : 0;

		if (!s || n == 0 || n > 40 || n != json_string_length(v) ||
		    strspn(s, "0123456789abcdef") != n) {
			sw_seterr(err, errlen,
				  "revoked[%zu] must be a certificate serial in lowercase hex", i);
			return SW_EINVAL;
		}
		if (sw_strmap_set(*out, s, (void *)1))
			return SW_ENOMEM;
	}
	return 0;
}
