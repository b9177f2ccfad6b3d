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

/* The HTTP status for an SW_E* code. */
unsigned api_status(int rc)
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

	/* With the server's clock and certificate (public: every handshake shows it), an
	 * agent whose TLS check fails can tell whether its own clock is the reason. */
	sw_http_reply_json(req, 200,
			   json_pack("{ss sI ss}", "ca", s->ca_pem, "now", (json_int_t)sw_now_ms(),
				     "certificate", s->cert_pem));
}

static void post_enroll(struct sw_http_req *req, void *arg)
{
	struct server *s = arg;
	struct sw_enroll_req e;
	char err[256], secret[SW_TOKEN_SECRET_HEX + 1], pin[SW_TOKEN_PIN_HEX + 1];
	char host[256], serial[41];
	unsigned port;
	char *cert = NULL, *client_cert = NULL, client_serial[41] = "";
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
		sw_http_reply_error(req, api_status(rc), "enrollment refused: %s", err);
		goto out;
	}
	rc = sw_pki_ca_issue(s->ca, e.csr, strlen(e.csr), &what, &cert, serial, err, sizeof(err));
	if (rc) {
		sw_http_reply_error(req, 400, "enrollment refused: %s", err);
		goto out;
	}
	if (e.client_csr) {
		/* the machine's metering client: users may read its key, so it is good for
		 * nothing but asking metering servers for licenses */
		struct sw_pki_issue client = {
		    .cn = e.name, .role = SW_PKI_ROLE_CLIENT, .days = AGENT_CERT_DAYS};
		rc = sw_pki_ca_issue(s->ca, e.client_csr, strlen(e.client_csr), &client,
				     &client_cert, client_serial, err, sizeof(err));
		if (rc) {
			sw_http_reply_error(req, 400, "enrollment refused: client request: %s",
					    err);
			goto out;
		}
	}
	rc = registry_enroll(s, secret, e.name, e.address, serial, client_serial, err, sizeof(err));
	if (rc) {
		sw_http_reply_error(req, api_status(rc), "enrollment refused: %s", err);
		goto out;
	}
	sw_info("system %s enrolled from %s (certificate %s)", e.name, sw_http_req_peer(req),
		serial);
	upgrade_system_enrolled(s, sw_strmap_get(s->systems, e.name));
	sw_http_reply_json(req, 200,
			   json_pack("{ss ss ss si ss*}", "certificate", cert, "ca", s->ca_pem,
				     "site_code", s->site_code, "heartbeat_interval",
				     (json_int_t)s->heartbeat_s, "client_certificate",
				     client_cert));
out:
	free(cert);
	free(client_cert);
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
	if (hb.now) {
		int64_t now = sw_now_ms();
		sys->clock_skew_ms = hb.now - now;
		registry_clock_heard(s, sys, now);
	}
	if (hb.services) {
		json_decref(sys->services);
		sys->services = hb.services;
	}
	if (strcmp(sys->meter_address, hb.meter_address ? hb.meter_address : "") != 0) {
		snprintf(sys->meter_address, sizeof(sys->meter_address), "%s",
			 hb.meter_address ? hb.meter_address : "");
		metering_changed(s);
	}
	if (hb.roles && !json_equal(hb.roles, sys->roles))
		sw_info("%s runs other roles than it should; the reply tells it which", sys->name);
	json_decref(hb.roles);
	snprintf(sys->version, sizeof(sys->version), "%s", hb.version);
	snprintf(sys->address, sizeof(sys->address), "%s", hb.address);
	sys->last_seen = sw_now_ms();
	registry_touch(s, sys);
	upgrade_heard(s, sys);
	json_decref(j);
	sw_http_reply_json(req, 200,
			   json_pack("{si sO so sI}", "heartbeat_interval",
				     (json_int_t)s->heartbeat_s, "roles", sys->roles, "meters",
				     metering_meter_urls(s), "products_version",
				     (json_int_t)s->products_version));
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
		sw_http_reply_error(req, api_status(rc), "cannot create a token: %s", err);
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

static json_t *system_json(struct server *s, const struct system *sys, int64_t now)
{
	char note[256];

	registry_clock(s, sys, now, note, sizeof(note));
	return json_pack("{ss ss ss ss sI sI sO sO sO sI ss?}", "name", sys->name, "address",
			 sys->address, "version", sys->version, "health",
			 registry_health(s, sys, now), "last_seen", (json_int_t)sys->last_seen,
			 "enrolled_at", (json_int_t)sys->enrolled_at, "facts", sys->facts, "roles",
			 sys->roles, "services", sys->services, "clock_skew_ms",
			 (json_int_t)sys->clock_skew_ms, "clock_note", note[0] ? note : NULL);
}

static void add_system(const char *key, void *value, void *arg)
{
	struct list_ctx *l = arg;

	json_array_append_new(l->arr, system_json(l->s, value, l->now));
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

/* A route's tail split at '/': "NAME", "NAME/roles/ROLE", "NAME/services/SVC[/ACTION]". */
struct target {
	char name[64], kind[16], item[64], action[16];
	int parts;
};

static int parse_target(const char *tail, struct target *t)
{
	char buf[256], *save = NULL, *part;
	char *fields[4] = {t->name, t->kind, t->item, t->action};
	size_t sizes[4] = {sizeof(t->name), sizeof(t->kind), sizeof(t->item), sizeof(t->action)};

	memset(t, 0, sizeof(*t));
	if (strlen(tail) >= sizeof(buf) || strstr(tail, "//") || tail[strlen(tail) - 1] == '/')
		return -1;
	snprintf(buf, sizeof(buf), "%s", tail);
	for (part = strtok_r(buf, "/", &save); part; part = strtok_r(NULL, "/", &save)) {
		if (t->parts == 4 || strlen(part) >= sizes[t->parts])
			return -1;
		snprintf(fields[t->parts], sizes[t->parts], "%s", part);
		t->parts++;
	}
	if (t->parts == 0 || !sw_name_valid(t->name))
		return -1;
	if (t->parts >= 2 && strcmp(t->kind, "roles") != 0 && strcmp(t->kind, "services") != 0)
		return -1;
	if (t->parts >= 3 && strcmp(t->kind, "services") == 0 && !sw_name_valid(t->item))
		return -1;
	return 0;
}

static struct system *find_system(struct server *s, struct sw_http_req *req, const struct target *t)
{
	struct system *sys = sw_strmap_get(s->systems, t->name);

	if (!sys)
		sw_http_reply_error(req, 404, "no system named '%s'", t->name);
	return sys;
}

static int body_timeout(struct sw_http_req *req, unsigned *ms);

static void set_role(struct server *s, struct sw_http_req *req, const struct target *t, int add)
{
	struct system *sys = find_system(s, req, t);
	unsigned timeout_ms;
	char err[256];
	int rc;

	if (!sys || body_timeout(req, &timeout_ms))
		return;
	if (!sw_proto_role_known(t->item)) {
		sw_http_reply_error(
		    req, 400, "unknown role '%s'; known roles: software-metering, test", t->item);
		return;
	}
	rc = registry_role_set(s, sys, t->item, add, err, sizeof(err));
	if (rc) {
		sw_http_reply_error(req, api_status(rc), "cannot record the role: %s", err);
		return;
	}
	sw_info("role %s %s %s", t->item, add ? "added to" : "removed from", sys->name);
	upgrade_role_changed(s, sys, t->item, add);
	/* The change is recorded; the push only hurries it, within the caller's deadline. */
	if (control_push_roles(s, sys, req, t->item, add, timeout_ms))
		sw_http_reply_json(
		    req, 200,
		    json_pack("{ss ss sb sO sb ss}", "system", sys->name, "role", t->item, "added",
			      add, "roles", sys->roles, "applied", 0, "note",
			      "recorded; the agent will apply it when it next reports"));
}

/* Seconds from the request body's "timeout", 1 ms to 1 h; 30 s by default. */
static int body_timeout(struct sw_http_req *req, unsigned *ms)
{
	json_t *j = NULL;
	double t = 30;
	size_t len;

	sw_http_req_body(req, &len);
	if (len > 0) {
		j = sw_http_req_json(req);
		if (!j)
			return -1;
		json_t *v = json_object_get(j, "timeout");
		if (v && (!json_is_number(v) || json_number_value(v) < 0.01 ||
			  json_number_value(v) > 3600)) {
			json_decref(j);
			sw_http_reply_error(req, 400, "timeout must be 0.01 to 3600 seconds");
			return -1;
		}
		if (v)
			t = json_number_value(v);
		json_decref(j);
	}
	*ms = (unsigned)(t * 1000);
	return 0;
}

static void post_system(struct sw_http_req *req, void *arg)
{
	struct server *s = arg;
	struct target t;
	struct system *sys;
	unsigned timeout_ms;

	if (parse_target(sw_http_req_tail(req), &t) || t.parts < 3) {
		sw_http_reply_error(req, 404, "no such endpoint");
		return;
	}
	if (strcmp(t.kind, "roles") == 0 && t.parts == 3) {
		set_role(s, req, &t, 1);
		return;
	}
	if (strcmp(t.kind, "services") != 0 || t.parts != 4 ||
	    (strcmp(t.action, "start") != 0 && strcmp(t.action, "stop") != 0 &&
	     strcmp(t.action, "restart") != 0)) {
		sw_http_reply_error(req, 404,
				    "no such endpoint: services take start, stop or restart");
		return;
	}
	if (body_timeout(req, &timeout_ms) || !(sys = find_system(s, req, &t)))
		return;
	if (control_service(s, sys, req, t.item, t.action, timeout_ms, 0))
		sw_http_reply_error(req, 500, "cannot call the agent of %s", sys->name);
}

static void get_system(struct sw_http_req *req, void *arg)
{
	struct server *s = arg;
	struct target t;
	struct system *sys;
	const char *q;
	unsigned timeout_ms = 30000, lines = 50;

	if (parse_target(sw_http_req_tail(req), &t)) {
		sw_http_reply_error(req, 404, "no such endpoint");
		return;
	}
	if (!(sys = find_system(s, req, &t)))
		return;
	if (t.parts == 1) {
		sw_http_reply_json(req, 200, system_json(s, sys, sw_now_ms()));
		return;
	}
	if (strcmp(t.kind, "services") != 0 || t.parts < 3 ||
	    (t.parts == 4 && strcmp(t.action, "logs") != 0)) {
		sw_http_reply_error(req, 404, "no such endpoint");
		return;
	}
	if ((q = sw_http_req_query(req, "timeout"))) {
		double v = atof(q);
		if (v < 0.01 || v > 3600) {
			sw_http_reply_error(req, 400, "timeout must be 0.01 to 3600 seconds");
			return;
		}
		timeout_ms = (unsigned)(v * 1000);
	}
	if ((q = sw_http_req_query(req, "lines"))) {
		lines = (unsigned)strtoul(q, NULL, 10);
		if (lines < 1 || lines > 10000) {
			sw_http_reply_error(req, 400, "lines must be 1 to 10000");
			return;
		}
	}
	if (control_service(s, sys, req, t.item, t.parts == 4 ? "logs" : "status", timeout_ms,
			    lines))
		sw_http_reply_error(req, 500, "cannot call the agent of %s", sys->name);
}

static void delete_system(struct sw_http_req *req, void *arg)
{
	struct server *s = arg;
	struct target t;
	char err[256];
	int rc;

	if (parse_target(sw_http_req_tail(req), &t) || (t.parts != 1 && t.parts != 3) ||
	    (t.parts == 3 && strcmp(t.kind, "roles") != 0)) {
		sw_http_reply_error(req, 400, "'%s' is not a system name or NAME/roles/ROLE",
				    sw_http_req_tail(req));
		return;
	}
	if (t.parts == 3) {
		set_role(s, req, &t, 0);
		return;
	}
	rc = registry_remove(s, t.name, err, sizeof(err));
	if (rc) {
		sw_http_reply_error(req, api_status(rc), "%s", err);
		return;
	}
	upgrade_system_removed(s, t.name);
	sw_http_reply_json(req, 200, json_pack("{ss sb}", "name", t.name, "revoked", 1));
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
    {"GET", "/v1/systems/*", SW_HTTP_ADMIN, get_system, 0},
    {"POST", "/v1/systems/*", SW_HTTP_ADMIN, post_system, 0},
    {"DELETE", "/v1/systems/*", SW_HTTP_ADMIN, delete_system, 0},
    {"GET", "/v1/site", SW_HTTP_ADMIN, get_site, 0},
    {"GET", "/v1/products", SW_HTTP_ADMIN | SW_HTTP_AGENT, metering_get_products, 0},
    {"POST", "/v1/products", SW_HTTP_ADMIN, metering_post_product, 0},
    {"PUT", "/v1/products/*", SW_HTTP_ADMIN, metering_put_product, 0},
    {"DELETE", "/v1/products/*", SW_HTTP_ADMIN, metering_delete_product, 0},
    {"PUT", "/v1/excluded/*", SW_HTTP_ADMIN, metering_exclude, 0},
    {"DELETE", "/v1/excluded/*", SW_HTTP_ADMIN, metering_exclude, 0},
    {"GET", "/v1/meter/config", SW_HTTP_AGENT, metering_get_config, 0},
    {"POST", "/v1/meter/config", SW_HTTP_AGENT, metering_get_config, 1024 * 1024},
    {"POST", "/v1/usage", SW_HTTP_AGENT, metering_post_usage, 1024 * 1024},
    {"GET", "/v1/usage", SW_HTTP_ADMIN, metering_get_usage, 0},
    {"POST", "/v1/upgrades", SW_HTTP_ADMIN, upgrade_post, 0},
    {"POST", "/v1/upgrades/check", SW_HTTP_ADMIN, upgrade_check, 0},
    {"GET", "/v1/upgrades/current", SW_HTTP_ADMIN, upgrade_get, 0},
    {"POST", "/v1/upgrades/current/*", SW_HTTP_ADMIN, upgrade_action, 0},
    {"GET", "/v1/packages/*", SW_HTTP_AGENT, package_get, 0},
    {"GET", "/v1/site/signing-key", SW_HTTP_AGENT, package_signing_key, 0},
};

/* When an agent's clock can verify both the CA and this server's certificate. Unknown
 * ends stay 0 (no limit): a clock note is advice, never a reason not to start. */
static void tls_window(struct server *s)
{
	int64_t nb, na;

	s->tls_not_before = s->tls_not_after = 0;
	if (sw_pki_cert_validity(s->ca_pem, &s->tls_not_before, &s->tls_not_after, NULL, 0) ||
	    sw_pki_cert_validity(s->cert_pem, &nb, &na, NULL, 0)) {
		s->tls_not_before = s->tls_not_after = 0;
		return;
	}
	if (nb > s->tls_not_before)
		s->tls_not_before = nb;
	if (na < s->tls_not_after)
		s->tls_not_after = na;
}

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
	tls_window(s);
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
