/* What the site server may ask of the agent, over its channel (channel.c): roles, the
 * control of each service with a deadline on every answer, and the steps of an upgrade
 * (upgrade.c). Requests come through the routes below as the server sent them. */
#include "agent.h"

#include "json.h"
#include "log.h"
#include "proto.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The longest a caller may ask the agent to wait for a service to settle. */
#define MAX_WAIT_MS (3600 * 1000)

static void get_status(struct sw_http_req *req, void *arg)
{
	struct agent *a = arg;
	int64_t disk_free = upgrade_disk_free(a->dir);

	sw_http_reply_json(
	    req, 200,
	    json_pack("{ss ss sI sI sO so sI so}", "name", a->name, "version", a->version,
		      "uptime_ms", (json_int_t)(sw_mono_ms() - a->started_ms), "last_heartbeat",
		      (json_int_t)a->last_heartbeat_ok, "roles", a->roles, "services",
		      supervisor_json(a->sup), "disk_free",
		      (json_int_t)(disk_free < 0 ? -1 : disk_free), "upgrade", upgrade_status(a)));
}

static void put_roles(struct sw_http_req *req, void *arg)
{
	struct agent *a = arg;
	json_t *j = sw_http_req_json(req), *roles;
	char err[200];

	if (!j)
		return;
	roles = json_object_get(j, "roles");
	if (sw_proto_roles_check(roles, err, sizeof(err))) {
		sw_http_reply_error(req, 400, "%s", err);
		json_decref(j);
		return;
	}
	roles_apply(a, roles);
	json_decref(j);
	heartbeat_soon(a);
	sw_http_reply_json(
	    req, 200, json_pack("{sO so}", "roles", a->roles, "services", supervisor_json(a->sup)));
}

/* "NAME" or "NAME/ACTION" from a route's tail; the name must be a valid one. */
static int split_tail(const char *tail, char *name, size_t len, const char **action)
{
	const char *slash = strchr(tail, '/');
	size_t n = slash ? (size_t)(slash - tail) : strlen(tail);

	if (n == 0 || n >= len)
		return -1;
	memcpy(name, tail, n);
	name[n] = '\0';
	*action = slash ? slash + 1 : "";
	return sw_name_valid(name) ? 0 : -1;
}

static void get_service(struct sw_http_req *req, void *arg)
{
	struct agent *a = arg;
	char name[64];
	const char *action, *lines_arg;
	struct service *svc;
	long lines = 50;
	char *tail, *end;

	if (split_tail(sw_http_req_tail(req), name, sizeof(name), &action)) {
		sw_http_reply_error(req, 400, "not a service name");
		return;
	}
	svc = supervisor_find(a->sup, name);
	if (!svc) {
		sw_http_reply_error(req, 404, "no service named '%s' on %s", name, a->name);
		return;
	}
	if (!*action) {
		sw_http_reply_json(req, 200, service_json(svc));
		return;
	}
	if (strcmp(action, "logs") != 0) {
		sw_http_reply_error(req, 404, "no such endpoint");
		return;
	}
	lines_arg = sw_http_req_query(req, "lines");
	if (lines_arg) {
		lines = strtol(lines_arg, &end, 10);
		if (*end || lines < 1 || lines > 10000) {
			sw_http_reply_error(req, 400, "lines must be 1 to 10000");
			return;
		}
	}
	tail = service_log_tail(svc, (unsigned)lines);
	sw_http_reply_json(req, 200,
			   json_pack("{ss ss}", "service", name, "log", tail ? tail : ""));
	free(tail);
}

static void on_settled(struct service *svc, void *arg)
{
	struct sw_http_req *req = arg;

	if (!svc)
		sw_http_reply_json(req, 200,
				   json_pack("{ss ss}", "state", "removed", "reason",
					     "the service's role was removed"));
	else
		sw_http_reply_json(req, 200, service_json(svc));
}

static void post_service(struct sw_http_req *req, void *arg)
{
	struct agent *a = arg;
	char name[64], err[200];
	const char *action;
	struct service *svc;
	int64_t timeout_ms = 30000, deadline_ms = 0;
	json_t *j;

	if (split_tail(sw_http_req_tail(req), name, sizeof(name), &action)) {
		sw_http_reply_error(req, 400, "not a service name");
		return;
	}
	j = sw_http_req_json(req);
	if (!j)
		return;
	if (sw_json_int(j, "timeout_ms", 0, MAX_WAIT_MS, 0, &timeout_ms, err, sizeof(err)) ||
	    sw_json_int(j, "deadline_ms", 0, INT64_MAX / 2, 0, &deadline_ms, err, sizeof(err))) {
		sw_http_reply_error(req, 400, "%s", err);
		json_decref(j);
		return;
	}
	json_decref(j);
	/* A request that waited past its caller's deadline (this agent was frozen, or the
	 * network slow) is not acted on: the caller is told it failed. The deadline is a
	 * little before the caller's own, which covers the error in the clock difference
	 * the server measures from heartbeats. */
	if (deadline_ms && sw_now_ms() > deadline_ms) {
		sw_warn("ignoring a %s of %s that expired %lld ms before it arrived", action, name,
			(long long)(sw_now_ms() - deadline_ms));
		sw_http_reply_error(req, 410, "the request expired before it arrived; not applied");
		return;
	}
	svc = supervisor_find(a->sup, name);
	if (!svc) {
		sw_http_reply_error(req, 404, "no service named '%s' on %s", name, a->name);
		return;
	}
	if (strcmp(action, "start") == 0)
		service_start(svc);
	else if (strcmp(action, "stop") == 0)
		service_stop(svc);
	else if (strcmp(action, "restart") == 0)
		service_restart(svc);
	else {
		sw_http_reply_error(req, 404, "no such action '%s': start, stop or restart",
				    action);
		return;
	}
	/* The answer comes when the service settles, or at the caller's deadline with the
	 * state it is in then. */
	service_wait(svc, (unsigned)timeout_ms, on_settled, req);
}

static const struct sw_http_route routes[] = {
    {"GET", "/v1/status", SW_HTTP_SERVER, get_status, 0},
    {"PUT", "/v1/roles", SW_HTTP_SERVER, put_roles, 0},
    {"GET", "/v1/services/*", SW_HTTP_SERVER, get_service, 0},
    {"POST", "/v1/services/*", SW_HTTP_SERVER, post_service, 0},
    {"POST", "/v1/exec", SW_HTTP_SERVER, exec_post, 64 * 1024},
    {"POST", "/v1/deploy", SW_HTTP_SERVER, deploy_post, 64 * 1024},
    {"POST", "/v1/upgrade/stop", SW_HTTP_SERVER, upgrade_post_stop, 0},
    {"POST", "/v1/upgrade/start", SW_HTTP_SERVER, upgrade_post_start, 0},
    {"POST", "/v1/upgrade/stage", SW_HTTP_SERVER, upgrade_post_stage, 0},
    {"POST", "/v1/upgrade/switch", SW_HTTP_SERVER, upgrade_post_switch, 0},
    {"POST", "/v1/upgrade/rollback", SW_HTTP_SERVER, upgrade_post_rollback, 0},
};

int api_local(struct agent *a, const struct sw_http_local_req *in, sw_http_local_done done,
	      void *arg)
{
	return sw_http_local(routes, SW_ARRAY_LEN(routes), a, in, done, arg);
}
