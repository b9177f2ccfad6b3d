/*
 * The component manager and the service manager: the server's calls to agents.
 *
 * Every call is asynchronous on the loop with its own deadline, so an agent that is
 * dead, frozen or silent costs its caller that deadline and nobody else anything. The
 * server never retries by itself: an agent that missed a change gets the wanted roles
 * in the reply to its next heartbeat.
 */
#include "server.h"

#include "error.h"
#include "json.h"
#include "log.h"
#include "pki.h"
#include "proto.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* How long a push of roles may take before the next heartbeat is left to do it. */
#define PUSH_TIMEOUT_MS 5000
/* The agent is asked to answer this much before the server's own deadline. */
#define AGENT_MARGIN_MS 300

struct call {
	struct server *s;
	struct sw_http_req *req; /* the administrator's request waiting for this, or NULL */
	char system[64];
	char role[64];
	char service[64];
	int add;
};

static int agent_url(const struct system *sys, const char *path, char *out, size_t len)
{
	char host[256];
	unsigned port;

	if (sw_hostport_parse(sys->address, host, sizeof(host), &port, 0, NULL, 0))
		return -1;
	snprintf(out, len, strchr(host, ':') ? "https://[%s]:%u%s" : "https://%s:%u%s", host, port,
		 path);
	return 0;
}

/* The agent's {"error": …} or the bare status. */
static void agent_error(const struct sw_http_result *res, char *out, size_t len)
{
	json_t *j = NULL;
	const char *msg = NULL;

	if (sw_json_parse_object(res->body, res->len, &j, NULL, 0) == 0)
		sw_json_str(j, "error", 400, 0, &msg, NULL, 0);
	snprintf(out, len, "%s", msg ? msg : "the agent refused the call");
	json_decref(j);
}

static int start_call(struct call *c, struct system *sys, const char *method, const char *path,
		      json_t *body, unsigned timeout_ms, sw_http_done done)
{
	int rc = control_call(c->s, sys, method, path, body, timeout_ms, done, c);

	if (rc)
		free(c);
	return rc;
}

static void on_roles_pushed(const struct sw_http_result *res, void *arg)
{
	struct call *c = arg;
	struct system *sys = sw_strmap_get(c->s->systems, c->system);
	json_t *reply = NULL, *out;
	char err[300];

	if (res->status == 200)
		sw_json_parse_object(res->body, res->len, &reply, NULL, 0);
	if (res->status == 200 && reply) {
		/* kept only as checked as a heartbeat's: the agent's word, not the server's */
		json_t *svcs =
		    sw_proto_services_parse(json_object_get(reply, "services"), err, sizeof(err));
		if (sys && svcs) {
			json_decref(sys->services);
			sys->services = json_incref(svcs);
		} else if (!svcs) {
			sw_warn("roles of %s: the agent's list of services is refused: %s",
				c->system, err);
		}
		json_object_set_new(reply, "services", svcs ? svcs : json_array());
		sw_info("roles of %s applied by its agent", c->system);
	} else {
		if (res->status)
			agent_error(res, err, sizeof(err));
		else
			snprintf(err, sizeof(err), "%s", res->error);
		sw_info("roles of %s not applied now (%s); its next heartbeat will", c->system,
			err);
	}
	if (c->req) {
		out = json_pack("{ss ss sb so}", "system", c->system, "role", c->role, "added",
				c->add, "roles", sys ? json_incref(sys->roles) : json_array());
		json_object_set_new(out, "applied", json_boolean(reply != NULL));
		if (reply)
			json_object_set(out, "services", json_object_get(reply, "services"));
		else
			json_object_set_new(
			    out, "note",
			    json_sprintf("%s: %s; the change is recorded and the agent will "
					 "apply it when it next reports",
					 c->system, err));
		sw_http_reply_json(c->req, 200, out);
	}
	json_decref(reply);
	free(c);
}

int control_push_roles(struct server *s, struct system *sys, struct sw_http_req *req,
		       const char *role, int add, unsigned timeout_ms)
{
	unsigned limit =
	    timeout_ms > 2 * AGENT_MARGIN_MS ? timeout_ms - AGENT_MARGIN_MS : timeout_ms / 2;

	struct call *c = calloc(1, sizeof(*c));

	if (!c)
		return SW_ENOMEM;
	c->s = s;
	c->req = req;
	c->add = add;
	snprintf(c->system, sizeof(c->system), "%s", sys->name);
	snprintf(c->role, sizeof(c->role), "%s", role ? role : "");
	return start_call(c, sys, "PUT", "/v1/roles", json_pack("{sO}", "roles", sys->roles),
			  limit < PUSH_TIMEOUT_MS ? limit : PUSH_TIMEOUT_MS, on_roles_pushed);
}

/* A service's state as its agent just answered it replaces the one from its last
 * heartbeat, so what depends on it (the metering servers' shares) knows at once. */
static void remember_service(struct server *s, const char *system, const json_t *reply)
{
	struct system *sys = sw_strmap_get(s->systems, system);
	json_t *svc, *checked;
	const char *name;
	size_t i;

	/* kept only as checked as a heartbeat's service */
	if (!sys || !(checked = sw_proto_service_parse(reply, NULL, 0)))
		return;
	name = json_string_value(json_object_get(checked, "name"));
	json_array_foreach(sys->services, i, svc)
	{
		const char *n = json_string_value(json_object_get(svc, "name"));
		if (n && strcmp(n, name) == 0) {
			json_array_set_new(sys->services, i, checked);
			return;
		}
	}
	json_decref(checked);
}

static void on_service_reply(const struct sw_http_result *res, void *arg)
{
	struct call *c = arg;
	json_t *reply = NULL;
	char err[300];

	if (res->status == 0) {
		/* unreachable, no connection, no answer, dropped or TLS refused: the reason
		 * says which, and how long it waited */
		sw_http_reply_error(c->req, sw_http_gateway_status(res->code), "%s: %s", c->system,
				    res->error);
	} else if (res->status != 200 ||
		   sw_json_parse_object(res->body, res->len, &reply, NULL, 0)) {
		agent_error(res, err, sizeof(err));
		sw_http_reply_error(c->req, res->status == 200 ? 502 : (unsigned)res->status,
				    "%s: %s", c->system, err);
	} else {
		remember_service(c->s, c->system, reply);
		json_object_set_new(reply, "system", json_string(c->system));
		sw_http_reply_json(c->req, 200, reply);
	}
	free(c);
}

int control_service(struct server *s, struct system *sys, struct sw_http_req *req,
		    const char *service, const char *action, unsigned timeout_ms, unsigned lines)
{
	struct call *c = calloc(1, sizeof(*c));
	char path[200];
	unsigned wait =
	    timeout_ms > 2 * AGENT_MARGIN_MS ? timeout_ms - AGENT_MARGIN_MS : timeout_ms / 2;

	if (!c)
		return SW_ENOMEM;
	c->s = s;
	c->req = req;
	snprintf(c->system, sizeof(c->system), "%s", sys->name);
	snprintf(c->service, sizeof(c->service), "%s", service);
	if (strcmp(action, "status") == 0) {
		snprintf(path, sizeof(path), "/v1/services/%s", service);
		return start_call(c, sys, "GET", path, NULL, timeout_ms, on_service_reply);
	}
	if (strcmp(action, "logs") == 0) {
		snprintf(path, sizeof(path), "/v1/services/%s/logs?lines=%u", service, lines);
		return start_call(c, sys, "GET", path, NULL, timeout_ms, on_service_reply);
	}
	snprintf(path, sizeof(path), "/v1/services/%s/%s", service, action);
	/* On the agent's clock: when the caller will have given up. An agent that wakes
	 * up (from SIGSTOP, say) to a request past it must not act on it. */
	json_int_t deadline = sw_now_ms() + wait + sys->clock_skew_ms;
	return start_call(c, sys, "POST", path,
			  json_pack("{si sI}", "timeout_ms", (int)wait, "deadline_ms", deadline),
			  timeout_ms, on_service_reply);
}

int control_call(struct server *s, struct system *sys, const char *method, const char *path,
		 json_t *body, unsigned timeout_ms, sw_http_done done, void *arg)
{
	char url[512], *text = NULL;
	int rc;

	/* over the connection the agent holds open; an agent that does not hold one (of
	 * an older version) is dialled at the address it listens on */
	if (channel_connected(s, sys) || agent_url(sys, path, url, sizeof(url)))
		return channel_call(s, sys, method, path, body, timeout_ms, done, arg);
	if (body) {
		text = sw_json_dump(body);
		json_decref(body);
	}
	/* whoever answers there must hold this system's own certificate */
	rc = sw_http_client_request_to(s->agents, sys->name, method, url, text,
				       text ? strlen(text) : 0, timeout_ms, done, arg);
	free(text);
	return rc;
}

void control_error(const struct sw_http_result *res, char *out, size_t len)
{
	if (res->status == 0)
		snprintf(out, len, "%s", res->error);
	else
		agent_error(res, out, len);
}

int control_start(struct server *s, char *err, size_t errlen)
{
	char ca[PATH_MAX + 16], crt[PATH_MAX + 16], key[PATH_MAX + 16];

	sw_path_join(ca, sizeof(ca), s->dir, "ca.crt");
	sw_path_join(crt, sizeof(crt), s->dir, "server.crt");
	sw_path_join(key, sizeof(key), s->dir, "server.key");
	struct sw_http_client_opts o = {.ca_file = ca,
					.cert_file = crt,
					.key_file = key,
					.connect_timeout_ms = 5000,
					/* agents of older versions, and metering servers */
					.peer_role = SW_PKI_ROLE_AGENT "|" SW_PKI_ROLE_METER};
	if (sw_http_client_new(s->loop, &o, &s->agents)) {
		sw_seterr(err, errlen, "cannot create the client for agent calls");
		return SW_ETLS;
	}
	return 0;
}
