/* The server's HTTPS API: routes and their handlers. */
#include "server.h"

#include "error.h"
#include "json.h"
#include "log.h"
#include "proto.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "version.h"

/* How long an issued agent certificate lasts. */
#define AGENT_CERT_DAYS 825

static unsigned status_for(int rc)
{
	switch (rc) {
	case SW_EINVAL:
	case SW_ETOOBIG: return 400;
	case SW_EDENIED: return 403;
	case SW_ENOTFOUND: return 404;
	case SW_EEXIST: return 409;
	case SW_EBUSY:
	case SW_ETIMEDOUT: return 503;
	default: return 500;
	}
}

static void get_ca(struct sw_http_req *req, void *arg)
{
	struct server *s = arg;

	sw_http_reply_json(req, 200, json_pack("{ss}", "ca", s->ca_pem));
}

static void post_enroll(struct sw_http_req *req, void *arg)
{
	struct server *s = arg;
	struct sw_enroll_req e;
	char err[256], secret[SW_TOKEN_SECRET_HEX + 1], pin[SW_TOKEN_PIN_HEX + 1];
	char host[256], serial[41];
	unsigned port;
	char *cert = NULL;
	json_t *j;
	int rc;

	j = sw_http_req_json(req);
	if (!j)
		return;
	rc = sw_proto_enroll_parse(j, &e, err, sizeof(err));
	if (rc) {
		sw_http_reply_error(req, 400, "enrollment refused: %s", err);
		goto out;
	}
	if (sw_proto_token_split(e.token, secret, pin)) {
		sw_http_reply_error(req, 403, "enrollment refused: malformed token");
		goto out;
	}
	sw_hostport_parse(e.address, host, sizeof(host), &port, 0, NULL, 0);
	const char *sans[] = {host, NULL};
	struct sw_pki_issue what = {.cn = e.name,
				    .role = SW_PKI_ROLE_AGENT,
				    .sans = sans,
				    .days = AGENT_CERT_DAYS,
				    .server_auth = 1};
	if (sw_strmap_get(s->systems, e.name)) {
		sw_http_reply_error(req, 409,
				    "enrollment refused: a system named '%s' is already "
				    "enrolled; remove it first",
				    e.name);
		goto out;
	}
	rc = registry_token_check(s, secret, err, sizeof(err));
	if (rc) {
		sw_http_reply_error(req, status_for(rc), "enrollment refused: %s", err);
		goto out;
	}
	rc = sw_pki_ca_issue(s->ca, e.csr, strlen(e.csr), &what, &cert, serial, err, sizeof(err));
	if (rc) {
		sw_http_reply_error(req, 400, "enrollment refused: %s", err);
		goto out;
	}
	rc = registry_enroll(s, secret, e.name, e.address, serial, err, sizeof(err));
	if (rc) {
		sw_http_reply_error(req, status_for(rc), "enrollment refused: %s", err);
		goto out;
	}
	sw_info("system %s enrolled from %s (certificate %s)", e.name, sw_http_req_peer(req),
		serial);
	sw_http_reply_json(req, 200,
			   json_pack("{ss ss ss si}", "certificate", cert, "ca", s->ca_pem,
				     "site_code", s->site_code, "heartbeat_interval",
				     (json_int_t)s->heartbeat_s));
out:
	free(cert);
	json_decref(j);
}

static void post_heartbeat(struct sw_http_req *req, void *arg)
{
	struct server *s = arg;
	const struct sw_identity *id = sw_http_req_identity(req);
	struct sw_heartbeat hb;
	struct system *sys;
	char err[256];
	json_t *j;

	sys = sw_strmap_get(s->systems, id->cn);
	if (!sys || strcmp(sys->serial, id->serial) != 0) {
		sw_http_reply_error(req, 403, "rejected: %s is not an enrolled system", id->cn);
		return;
	}
	j = sw_http_req_json(req);
	if (!j)
		return;
	if (sw_proto_heartbeat_parse(j, &hb, err, sizeof(err))) {
		sw_http_reply_error(req, 400, "bad heartbeat: %s", err);
		json_decref(j);
		return;
	}
	json_decref(sys->facts);
	sys->facts = hb.facts;
	snprintf(sys->version, sizeof(sys->version), "%s", hb.version);
	snprintf(sys->address, sizeof(sys->address), "%s", hb.address);
	sys->last_seen = sw_now_ms();
	registry_touch(s, sys);
	json_decref(j);
	sw_http_reply_json(req, 200,
			   json_pack("{si}", "heartbeat_interval", (json_int_t)s->heartbeat_s));
}

static void post_token(struct sw_http_req *req, void *arg)
{
	struct server *s = arg;
	char token[SW_TOKEN_LEN + 1], err[256];
	int64_t ttl, expires;
	json_t *j;
	int rc;

	j = sw_http_req_json(req);
	if (!j)
		return;
	rc = sw_proto_token_req_parse(j, &ttl, err, sizeof(err));
	json_decref(j);
	if (rc) {
		sw_http_reply_error(req, 400, "%s", err);
		return;
	}
	rc = registry_token_create(s, ttl, token, sizeof(token), &expires, err, sizeof(err));
	if (rc) {
		sw_http_reply_error(req, status_for(rc), "cannot create a token: %s", err);
		return;
	}
	sw_info("enrollment token created by %s, valid %lld s", sw_http_req_identity(req)->cn,
		(long long)ttl);
	sw_http_reply_json(req, 200,
			   json_pack("{ss sI}", "token", token, "expires_at", (json_int_t)expires));
}

struct list_ctx {
	struct server *s;
	json_t *arr;
	int64_t now;
};

static void add_system(const char *key, void *value, void *arg)
{
	struct list_ctx *l = arg;
	struct system *sys = value;

	json_array_append_new(
	    l->arr, json_pack("{ss ss ss ss sI sI sO}", "name", sys->name, "address", sys->address,
			      "version", sys->version, "health", registry_health(l->s, sys, l->now),
			      "last_seen", (json_int_t)sys->last_seen, "enrolled_at",
			      (json_int_t)sys->enrolled_at, "facts", sys->facts));
}

static int by_name(const void *a, const void *b)
{
	return strcmp(json_string_value(json_object_get(*(json_t *const *)a, "name")),
		      json_string_value(json_object_get(*(json_t *const *)b, "name")));
}

static void get_systems(struct sw_http_req *req, void *arg)
{
	struct list_ctx l = {arg, json_array(), sw_now_ms()};
	size_t n;
	json_t **items;

	sw_strmap_each(l.s->systems, add_system, &l);
	n = json_array_size(l.arr);
	items = calloc(n ? n : 1, sizeof(*items));
	if (items) {
		for (size_t i = 0; i < n; i++)
			items[i] = json_incref(json_array_get(l.arr, i));
		qsort(items, n, sizeof(*items), by_name);
		json_array_clear(l.arr);
		for (size_t i = 0; i < n; i++)
			json_array_append_new(l.arr, items[i]);
		free(items);
	}
	sw_http_reply_json(req, 200,
			   json_pack("{so sI sI}", "systems", l.arr, "now", (json_int_t)l.now,
				     "heartbeat_interval", (json_int_t)l.s->heartbeat_s));
}

static void delete_system(struct sw_http_req *req, void *arg)
{
	struct server *s = arg;
	const char *name = sw_http_req_tail(req);
	char err[256];
	int rc;

	if (!sw_name_valid(name)) {
		sw_http_reply_error(req, 400, "'%s' is not a valid system name", name);
		return;
	}
	rc = registry_remove(s, name, err, sizeof(err));
	if (rc) {
		sw_http_reply_error(req, status_for(rc), "%s", err);
		return;
	}
	sw_http_reply_json(req, 200, json_pack("{ss sb}", "name", name, "revoked", 1));
}

static void get_site(struct sw_http_req *req, void *arg)
{
	struct server *s = arg;

	sw_http_reply_json(req, 200,
			   json_pack("{ss ss ss sI sI}", "site_code", s->site_code, "version",
				     SW_VERSION, "database", sw_db_engine(s->db), "systems",
				     (json_int_t)sw_strmap_count(s->systems), "uptime_ms",
				     (json_int_t)(sw_mono_ms() - s->started_ms)));
}

static const struct sw_http_route routes[] = {
    {"GET", "/v1/ca", SW_HTTP_OPEN, get_ca, 0},
    {"POST", "/v1/enroll", SW_HTTP_OPEN, post_enroll, 32 * 1024},
    {"POST", "/v1/heartbeat", SW_HTTP_AGENT, post_heartbeat, 0},
    {"POST", "/v1/tokens", SW_HTTP_ADMIN, post_token, 0},
    {"GET", "/v1/systems", SW_HTTP_ADMIN, get_systems, 0},
    {"DELETE", "/v1/systems/*", SW_HTTP_ADMIN, delete_system, 0},
    {"GET", "/v1/site", SW_HTTP_ADMIN, get_site, 0},
};

int api_start(struct server *s, char *err, size_t errlen)
{
	char path[PATH_MAX + 32];
	unsigned handshake, idle;
	int rc;

	if ((rc = sw_conf_get_uint(s->conf, "server", "handshake_timeout", 10, 1, 300, &handshake,
				   err, errlen)) ||
	    (rc = sw_conf_get_uint(s->conf, "server", "idle_timeout", 120, 1, 3600, &idle, err,
				   errlen)))
		return rc;
	sw_path_join(path, sizeof(path), s->dir, "server.crt");
	rc = sw_file_read(path, 64 * 1024, &s->cert_pem, NULL, err, errlen);
	if (rc)
		return rc;
	sw_path_join(path, sizeof(path), s->dir, "server.key");
	rc = sw_file_read(path, 64 * 1024, &s->key_pem, NULL, err, errlen);
	if (rc)
		return rc;
	struct sw_http_server_opts o = {
	    .listen = s->listen,
	    .cert_pem = s->cert_pem,
	    .key_pem = s->key_pem,
	    .ca_pem = s->ca_pem,
	    .handshake_timeout_s = handshake,
	    .idle_timeout_s = idle,
	    .routes = routes,
	    .nroutes = SW_ARRAY_LEN(routes),
	    .arg = s,
	    .is_revoked = registry_is_revoked,
	};
	/* libmicrohttpd keeps pointers to the PEM strings: they live as long as s. */
	return sw_http_server_start(s->loop, &o, &s->http, err, errlen);
}
