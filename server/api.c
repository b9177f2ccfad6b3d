/* The server's HTTPS API: routes and their handlers. */
#include "server.h"

#include "error.h"
#include "json.h"
#include "log.h"
#include "proto.h"
#include "util.h"

#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "version.h"

/* How long an issued agent certificate lasts. */
#define AGENT_CERT_DAYS 825

static void get_ca(struct sw_http_req *req, void *arg)
{
	struct server *s = arg;

	/* With the server's clock and certificate (public: every handshake shows it), an
	 * agent whose TLS check fails can tell whether its own clock is the reason. */
	sw_http_reply_json(req, 200,
			   json_pack("{ss sI ss}", "ca", s->ca_pem, "now", (json_int_t)sw_now_ms(),
				     "certificate", s->cert_pem));
}

/* An enrollment on its way: the token is checked through the write queue before the CA
 * signs anything, so a forged token costs no signature; then the token is used and the
 * system recorded in one transaction. */
struct enroll {
	struct reg_op op;
	struct sw_http_req *req;
	json_t *j; /* holds the strings of `e` */
	struct sw_enroll_req e;
	char *cert, *client_cert, *meter_cert;
};

static void enroll_free(struct enroll *en)
{
	json_decref(en->j);
	free(en->cert);
	free(en->client_cert);
	free(en->meter_cert);
	free(en);
}

static void enroll_recorded(struct server *s, struct reg_op *op)
{
	struct enroll *en = op->arg;

	if (op->rc) {
		sw_http_reply_error(en->req, sw_http_status(op->rc), "enrollment refused: %s",
				    op->err);
		enroll_free(en);
		return;
	}
	sw_info("system %s enrolled from %s (certificate %s)", op->name, sw_http_req_peer(en->req),
		op->serial);
	upgrade_system_enrolled(s, sw_strmap_get(s->systems, op->name));
	sw_http_reply_json(en->req, 200,
			   json_pack("{ss ss ss si ss* ss*}", "certificate", en->cert, "ca",
				     s->ca_pem, "site_code", s->site_code, "heartbeat_interval",
				     (json_int_t)s->heartbeat_s, "client_certificate",
				     en->client_cert, "meter_certificate", en->meter_cert));
	enroll_free(en);
}

/* The certificates of a system `name` reached at `address`, from its requests (the
 * client's and the meter's may be NULL): what an enrollment and a renewal issue alike.
 * On success the PEMs and serials are in `op` and `certs` (the caller frees the PEMs). */
struct issued {
	char *cert, *client_cert, *meter_cert;
};

static int issue_certs(struct server *s, const char *name, const char *csr, const char *client_csr,
		       const char *meter_csr, struct reg_op *op, struct issued *out, char *err,
		       size_t errlen)
{
	char host[256], why[256];
	unsigned port;
	int64_t na;
	int rc;

	if (sw_hostport_parse(op->address, host, sizeof(host), &port, 0, NULL, 0))
		snprintf(host, sizeof(host), "%s", op->address); /* a bare IP address */
	const char *sans[] = {host, NULL};
	struct sw_pki_issue what = {.cn = name,
				    .role = SW_PKI_ROLE_AGENT,
				    .sans = sans,
				    .days = AGENT_CERT_DAYS,
				    .purposes = SW_PKI_TLS_CLIENT};
	if ((rc = sw_pki_ca_issue(s->ca, csr, strlen(csr), &what, &out->cert, op->serial, why,
				  sizeof(why)))) {
		sw_seterr(err, errlen, "%s", why);
		return rc;
	}
	if (sw_pki_cert_validity(out->cert, NULL, &na, NULL, 0) == 0)
		op->not_after = na;
	if (client_csr) {
		/* the machine's metering client: users may read its key, so it is good for
		 * nothing but asking metering servers for licenses */
		struct sw_pki_issue client = {
		    .cn = name, .role = SW_PKI_ROLE_CLIENT, .days = AGENT_CERT_DAYS};
		if ((rc =
			 sw_pki_ca_issue(s->ca, client_csr, strlen(client_csr), &client,
					 &out->client_cert, op->client_serial, why, sizeof(why)))) {
			sw_seterr(err, errlen, "client request: %s", why);
			return rc;
		}
	}
	if (meter_csr) {
		/* the system's metering server, should it take the role: it serves and is
		 * never a client, so it cannot call the site server or another system */
		struct sw_pki_issue meter = {.cn = name,
					     .role = SW_PKI_ROLE_METER,
					     .sans = sans,
					     .days = AGENT_CERT_DAYS,
					     .purposes = SW_PKI_TLS_SERVER};
		if ((rc = sw_pki_ca_issue(s->ca, meter_csr, strlen(meter_csr), &meter,
					  &out->meter_cert, op->meter_serial, why, sizeof(why)))) {
			sw_seterr(err, errlen, "meter request: %s", why);
			return rc;
		}
	}
	return 0;
}

static void issued_free(struct issued *c)
{
	free(c->cert);
	free(c->client_cert);
	free(c->meter_cert);
}

static void enroll_checked(struct server *s, struct reg_op *op)
{
	struct enroll *en = op->arg;
	struct sw_enroll_req *e = &en->e;
	struct issued c = {0};
	char err[300];
	int rc = op->rc;

	if (rc) {
		sw_http_reply_error(en->req, sw_http_status(rc), "enrollment refused: %s", op->err);
		enroll_free(en);
		return;
	}
	rc = issue_certs(s, e->name, e->csr, e->client_csr, e->meter_csr, op, &c, err, sizeof(err));
	en->cert = c.cert;
	en->client_cert = c.client_cert;
	en->meter_cert = c.meter_cert;
	if (rc) {
		sw_http_reply_error(en->req, 400, "enrollment refused: %s", err);
		enroll_free(en);
		return;
	}
	op->kind = REG_ENROLL;
	op->done = enroll_recorded;
	if (registry_submit(s, op)) {
		sw_http_reply_error(en->req, sw_http_status(op->rc), "enrollment refused: %s",
				    op->err);
		enroll_free(en);
	}
}

/* Where a system is reached: the host its connection comes from, never the one it
 * names; from what it names, only the port (an agent of an older version listens,
 * a metering server may). */
static void bound_address(const char *claim, const char *peer, char *out, size_t len)
{
	char host[256];
	unsigned port;

	if (claim && claim[0] && sw_ip_literal(peer) &&
	    sw_hostport_parse(claim, host, sizeof(host), &port, 0, NULL, 0) == 0)
		snprintf(out, len, strchr(peer, ':') ? "[%s]:%u" : "%s:%u", peer, port);
	else
		snprintf(out, len, "%s", peer);
}

static void post_enroll(struct sw_http_req *req, void *arg)
{
	struct server *s = arg;
	struct enroll *en;
	char err[256], pin[SW_TOKEN_PIN_HEX + 1];
	json_t *j;

	if (!(j = sw_http_req_json(req)))
		return;
	if (!(en = calloc(1, sizeof(*en)))) {
		json_decref(j);
		sw_http_reply_error(req, 500, "out of memory");
		return;
	}
	en->req = req;
	en->j = j;
	if (sw_proto_enroll_parse(j, &en->e, err, sizeof(err))) {
		sw_http_reply_error(req, 400, "enrollment refused: %s", err);
		enroll_free(en);
		return;
	}
	if (sw_proto_token_split(en->e.token, en->op.secret, pin)) {
		sw_http_reply_error(req, 403, "enrollment refused: malformed token");
		enroll_free(en);
		return;
	}
	if (sw_strmap_get(s->systems, en->e.name)) {
		sw_http_reply_error(req, 409,
				    "enrollment refused: a system named '%s' is already "
				    "enrolled; remove it first",
				    en->e.name);
		enroll_free(en);
		return;
	}
	snprintf(en->op.name, sizeof(en->op.name), "%s", en->e.name);
	/* Where its connection comes from; an agent that listens (of an older version)
	 * adds the port, and so does its metering server if it runs one. */
	bound_address(en->e.address, sw_http_req_peer(req), en->op.address, sizeof(en->op.address));
	en->op.kind = REG_TOKEN_CHECK;
	en->op.done = enroll_checked;
	en->op.arg = en;
	if (registry_submit(s, &en->op)) {
		sw_http_reply_error(req, sw_http_status(en->op.rc), "enrollment refused: %s",
				    en->op.err);
		enroll_free(en);
	}
}

static struct system *agent_system(struct server *s, struct sw_http_req *req);

/* A renewal on its way: the certificates are issued at once, and answered only once the
 * new serials are stored, so none is in use that a removal would not revoke. */
struct renew {
	struct reg_op op;
	struct sw_http_req *req;
	struct issued c;
};

static void renew_recorded(struct server *s, struct reg_op *op)
{
	struct renew *rn = op->arg;

	if (op->rc) {
		sw_http_reply_error(rn->req, sw_http_status(op->rc), "renewal refused: %s",
				    op->err);
	} else {
		sw_info("system %s renewed its certificates (agent %s, was %s)", op->name,
			op->serial, op->prev_serial);
		sw_http_reply_json(rn->req, 200,
				   json_pack("{ss ss ss* ss* sI}", "certificate", rn->c.cert, "ca",
					     s->ca_pem, "client_certificate", rn->c.client_cert,
					     "meter_certificate", rn->c.meter_cert, "not_after",
					     (json_int_t)op->not_after));
	}
	issued_free(&rn->c);
	free(rn);
}

/* POST /v1/agent/renew: an enrolled system's agent asks for new certificates with new
 * keys, over its mutual-TLS connection; its certificate names the system. The same
 * roles, uses and address rule as an enrollment. */
static void post_renew(struct sw_http_req *req, void *arg)
{
	struct server *s = arg;
	const struct sw_identity *id = sw_http_req_identity(req);
	const char *csr = NULL, *client_csr = NULL, *meter_csr = NULL, *address = NULL;
	struct renew *rn = NULL;
	char err[300];
	json_t *j;

	if (!agent_system(s, req) || !(j = sw_http_req_json(req)))
		return;
	if (sw_json_str(j, "csr", 16384, 1, &csr, err, sizeof(err)) ||
	    sw_json_str(j, "client_csr", 16384, 0, &client_csr, err, sizeof(err)) ||
	    sw_json_str(j, "meter_csr", 16384, 0, &meter_csr, err, sizeof(err)) ||
	    sw_json_str(j, "address", 300, 0, &address, err, sizeof(err))) {
		sw_http_reply_error(req, 400, "renewal refused: %s", err);
		goto out;
	}
	if (!(rn = calloc(1, sizeof(*rn)))) {
		sw_http_reply_error(req, 500, "out of memory");
		goto out;
	}
	rn->req = req;
	snprintf(rn->op.name, sizeof(rn->op.name), "%s", id->cn);
	snprintf(rn->op.prev_serial, sizeof(rn->op.prev_serial), "%s", id->serial);
	bound_address(address, sw_http_req_peer(req), rn->op.address, sizeof(rn->op.address));
	if (issue_certs(s, id->cn, csr, client_csr, meter_csr, &rn->op, &rn->c, err, sizeof(err))) {
		sw_http_reply_error(req, 400, "renewal refused: %s", err);
		goto fail;
	}
	rn->op.kind = REG_RENEW;
	rn->op.done = renew_recorded;
	rn->op.arg = rn;
	if (registry_submit(s, &rn->op)) {
		sw_http_reply_error(req, sw_http_status(rn->op.rc), "renewal refused: %s",
				    rn->op.err);
		goto fail;
	}
	rn = NULL;
fail:
	if (rn)
		issued_free(&rn->c);
	free(rn);
out:
	json_decref(j);
}

/* Where clients reach a metering server: the port it says, at the host its system's
 * connection comes from (which its certificate names), whatever host it says. */
static void meter_reached_at(const char *meter, const char *address, char *out, size_t len)
{
	char ip[256];
	unsigned port;

	/* the system's address, less the port an agent of an older version adds */
	if (sw_hostport_parse(address, ip, sizeof(ip), &port, 0, NULL, 0) != 0)
		snprintf(ip, sizeof(ip), "%s", address);
	if (meter && meter[0] && sw_ip_literal(ip))
		bound_address(meter, ip, out, len); /* the heartbeat's parser checked HOST:PORT */
	else
		snprintf(out, len, "%s", meter ? meter : "");
}

/* A heartbeat from `sys`, heard from `address`: the registry records it (what `hb` owned
 * is the system's), and the reply is what the agent is told. */
static json_t *heartbeat_take(struct server *s, struct system *sys, struct sw_heartbeat *hb,
			      const char *address, const struct sw_identity *id)
{
	char meter[300];
	json_t *reply;

	meter_reached_at(hb->meter_address, address, meter, sizeof(meter));
	/* a distribution point is reached the same way; known from its heartbeats only */
	meter_reached_at(hb->dp_address, address, sys->dp_address, sizeof(sys->dp_address));
	registry_heard(s, sys, hb, address, meter, id->ca);
	sw_counter_inc(s->mx_heartbeats);
	upgrade_heard(s, sys);
	json_t *names, *urls = metering_meter_urls(s, &names);

	/* each metering server's URL and, in the same order, the system whose certificate
	 * must answer there: siteward-run asks no other */
	reply = json_pack("{si sO so so sI}", "heartbeat_interval", (json_int_t)s->heartbeat_s,
			  "roles", sys->roles, "meters", urls, "meter_names", names,
			  "products_version", (json_int_t)s->products_version);
	if (reply)
		ca_reply(s, sys, reply);
	/* a distribution point refuses removed systems too */
	if (reply && registry_has_role(sys, DP_ROLE))
		json_object_set_new(reply, "revoked", registry_revoked_list(s));
	/* loans written off here: its agent tells siteward-run, which then refuses them */
	json_t *off = reply ? licenses_written_off(s, sys->name) : NULL;
	if (off)
		json_object_set_new(reply, "written_off", off);
	return reply;
}

/* The enrolled system the request's certificate names, or NULL (answered 403). */
static struct system *agent_system(struct server *s, struct sw_http_req *req)
{
	const struct sw_identity *id = sw_http_req_identity(req);
	struct system *sys = sw_strmap_get(s->systems, id->cn);

	/* its agent's certificate, or the one it renewed with, until the new one is used */
	if (!sys || (strcmp(sys->serial, id->serial) != 0 &&
		     (!sys->prev_serial[0] || strcmp(sys->prev_serial, id->serial) != 0))) {
		sw_http_reply_error(req, 403, "rejected: %s is not an enrolled system", id->cn);
		return NULL;
	}
	return sys;
}

static void post_heartbeat(struct sw_http_req *req, void *arg)
{
	struct server *s = arg;
	struct sw_heartbeat hb;
	struct system *sys;
	char err[256];
	json_t *j;

	if (!(sys = agent_system(s, req)) || !(j = sw_http_req_json(req)))
		return;
	if (sw_proto_heartbeat_parse(j, &hb, err, sizeof(err))) {
		sw_http_reply_error(req, 400, "bad heartbeat: %s", err);
		json_decref(j);
		return;
	}
	/* an agent with no channel says on which port it listens */
	char address[300];

	bound_address(hb.address, sw_http_req_peer(req), address, sizeof(address));
	sw_http_reply_json(req, 200,
			   heartbeat_take(s, sys, &hb, address, sw_http_req_identity(req)));
	json_decref(j);
}

/* POST /v1/agent/poll: the agent's channel (channel.c) takes the poll, and the heartbeat
 * it may carry is heard as one sent alone would be. */
static void post_poll(struct sw_http_req *req, void *arg)
{
	struct server *s = arg;
	json_t *j, *reply = NULL;
	struct sw_poll poll;
	struct system *sys;
	struct chan *ch;
	char err[256];

	if (!(sys = agent_system(s, req)) || channel_admit(s, req))
		return;
	if (!(j = sw_http_req_json(req)))
		return;
	if (sw_proto_poll_parse(j, &poll, err, sizeof(err))) {
		sw_http_reply_error(req, 400, "bad poll: %s", err);
		json_decref(j);
		return;
	}
	if (!(ch = channel_polled(s, sys, req))) {
		if (poll.has_heartbeat)
			sw_proto_heartbeat_clear(&poll.heartbeat);
		json_decref(j);
		return;
	}
	/* the address shown is where the connection comes from, not one it claims */
	if (poll.has_heartbeat)
		reply = heartbeat_take(s, sys, &poll.heartbeat, sw_http_req_peer(req),
				       sw_http_req_identity(req));
	channel_hold(ch, req, &poll, reply);
	json_decref(j);
}

static void token_created(struct server *s, struct reg_op *op)
{
	struct sw_http_req *req = op->arg;

	if (op->rc) {
		sw_http_reply_error(req, sw_http_status(op->rc), "cannot create a token: %s",
				    op->err);
	} else {
		sw_info("enrollment token %s created by %s: %lld use%s, valid %lld s", op->token_id,
			sw_http_req_identity(req)->cn, (long long)op->uses,
			op->uses == 1 ? "" : "s", (long long)op->ttl_s);
		sw_http_reply_json(req, 200,
				   json_pack("{ss ss sI sI}", "token", op->token, "id",
					     op->token_id, "expires_at", (json_int_t)op->expires_at,
					     "uses", (json_int_t)op->uses));
	}
	free(op);
}

static void post_token(struct sw_http_req *req, void *arg)
{
	struct server *s = arg;
	struct sw_token_req t;
	struct reg_op *op;
	char err[256];
	json_t *j;
	int rc;

	j = sw_http_req_json(req);
	if (!j)
		return;
	rc = sw_proto_token_req_parse(j, &t, err, sizeof(err));
	json_decref(j);
	if (rc) {
		sw_http_reply_error(req, 400, "%s", err);
		return;
	}
	if (!(op = calloc(1, sizeof(*op)))) {
		sw_http_reply_error(req, 500, "out of memory");
		return;
	}
	op->kind = REG_TOKEN_CREATE;
	op->ttl_s = t.ttl_s;
	op->uses = t.uses;
	op->done = token_created;
	op->arg = req;
	if (registry_submit(s, op)) {
		sw_http_reply_error(req, sw_http_status(op->rc), "cannot create a token: %s",
				    op->err);
		free(op);
	}
}

static void tokens_listed(struct server *s, struct reg_op *op)
{
	struct sw_http_req *req = op->arg;

	if (op->rc)
		sw_http_reply_error(req, sw_http_status(op->rc), "cannot list tokens: %s", op->err);
	else
		sw_http_reply_json(req, 200, json_pack("{so}", "tokens", op->list));
	free(op);
}

/* GET /v1/tokens: read through the write queue, so it shows every change asked before. */
static void get_tokens(struct sw_http_req *req, void *arg)
{
	struct server *s = arg;
	struct reg_op *op;

	if (!(op = calloc(1, sizeof(*op)))) {
		sw_http_reply_error(req, 500, "out of memory");
		return;
	}
	op->kind = REG_TOKEN_LIST;
	op->done = tokens_listed;
	op->arg = req;
	if (registry_submit(s, op)) {
		sw_http_reply_error(req, sw_http_status(op->rc), "cannot list tokens: %s", op->err);
		free(op);
	}
}

static void token_revoked(struct server *s, struct reg_op *op)
{
	struct sw_http_req *req = op->arg;

	if (op->rc) {
		sw_http_reply_error(req, sw_http_status(op->rc), "cannot revoke token: %s",
				    op->err);
	} else {
		sw_info("enrollment token %s revoked by %s", op->token_id,
			sw_http_req_identity(req)->cn);
		sw_http_reply_json(req, 200,
				   json_pack("{ss sb}", "id", op->token_id, "revoked", 1));
	}
	free(op);
}

/* DELETE /v1/tokens/ID: the token's unused uses are refused from now on. */
static void delete_token(struct sw_http_req *req, void *arg)
{
	struct server *s = arg;
	const char *id = sw_http_req_tail(req);
	struct reg_op *op;
	size_t n = strspn(id, "0123456789abcdef");

	if (n != REG_TOKEN_ID_HEX || id[n]) {
		sw_http_reply_error(req, 400,
				    "'%s' is not a token id (%d lowercase hex digits, as 'siteward "
				    "token list' shows)",
				    id, REG_TOKEN_ID_HEX);
		return;
	}
	if (!(op = calloc(1, sizeof(*op)))) {
		sw_http_reply_error(req, 500, "out of memory");
		return;
	}
	op->kind = REG_TOKEN_REVOKE;
	snprintf(op->token_id, sizeof(op->token_id), "%s", id);
	op->done = token_revoked;
	op->arg = req;
	if (registry_submit(s, op)) {
		sw_http_reply_error(req, sw_http_status(op->rc), "cannot revoke token: %s",
				    op->err);
		free(op);
	}
}

struct list_ctx {
	struct server *s;
	json_t *arr;
	int64_t now;
};

static json_t *system_json(struct server *s, const struct system *sys, int64_t now)
{
	char note[256];

	char cert_note[160] = "";
	json_t *o;

	registry_clock(s, sys, now, note, sizeof(note));
	/* an agent renews at two thirds of its certificate's life: one this close to its
	 * end has been failing to */
	if (sys->cert_not_after && sys->cert_not_after - now < REGISTRY_CERT_WARN_MS)
		snprintf(cert_note, sizeof(cert_note),
			 "its certificate %s and has not renewed; see the agent's log",
			 sys->cert_not_after <= now ? "has expired" : "expires within 30 days");
	o = json_pack("{ss ss ss ss sI sI sO sO sO sI ss? sb ss?}", "name", sys->name, "address",
		      sys->address, "version", sys->version, "health", registry_health(s, sys, now),
		      "last_seen", (json_int_t)sys->last_seen, "enrolled_at",
		      (json_int_t)sys->enrolled_at, "facts", sys->facts, "roles", sys->roles,
		      "services", sys->services, "clock_skew_ms", (json_int_t)sys->clock_skew_ms,
		      "clock_note", note[0] ? note : NULL, "channel", channel_connected(s, sys),
		      "cert_note", cert_note[0] ? cert_note : NULL);
	if (o)
		json_object_set_new(o, "cert_not_after",
				    sys->cert_not_after ? json_integer(sys->cert_not_after)
							: json_null());
	if (o && sys->dp_address[0])
		json_object_set_new(o, "distribution_point", json_string(sys->dp_address));
	return o;
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
	char note[256];

	ca_note(l.s, l.now, note, sizeof(note));
	sw_http_reply_json(req, 200,
			   json_pack("{so sI sI ss?}", "systems", l.arr, "now", (json_int_t)l.now,
				     "heartbeat_interval", (json_int_t)l.s->heartbeat_s, "ca_note",
				     note[0] ? note : NULL));
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

/* A role added or removed by an administrator, on its way through the write queue. */
struct role_change {
	struct reg_op op;
	struct sw_http_req *req;
	unsigned timeout_ms;
};

static void role_recorded(struct server *s, struct reg_op *op)
{
	struct role_change *c = op->arg;
	const char *role = json_string_value(json_array_get(op->roles, 0));
	struct system *sys = sw_strmap_get(s->systems, op->name);

	if (op->rc) {
		sw_http_reply_error(c->req, sw_http_status(op->rc), "cannot record the role: %s",
				    op->err);
		goto out;
	}
	sw_info("role %s %s %s", role, op->add ? "added to" : "removed from", sys->name);
	upgrade_role_changed(s, sys, role, op->add);
	/* The change is recorded; the push only hurries it, within the caller's deadline. */
	if (control_push_roles(s, sys, c->req, role, op->add, c->timeout_ms))
		sw_http_reply_json(
		    c->req, 200,
		    json_pack("{ss ss sb sO sb ss}", "system", sys->name, "role", role, "added",
			      op->add, "roles", sys->roles, "applied", 0, "note",
			      "recorded; the agent will apply it when it next reports"));
out:
	json_decref(op->roles);
	free(c);
}

static void set_role(struct server *s, struct sw_http_req *req, const struct target *t, int add)
{
	struct system *sys = find_system(s, req, t);
	struct role_change *c;
	unsigned timeout_ms;

	if (!sys || body_timeout(req, &timeout_ms))
		return;
	if (!sw_proto_role_known(t->item)) {
		sw_http_reply_error(
		    req, 400,
		    "unknown role '%s'; known roles: software-metering, distribution-point, test",
		    t->item);
		return;
	}
	if (!(c = calloc(1, sizeof(*c))) || !(c->op.roles = json_pack("[s]", t->item))) {
		free(c);
		sw_http_reply_error(req, 500, "out of memory");
		return;
	}
	c->req = req;
	c->timeout_ms = timeout_ms;
	c->op.kind = REG_ROLES;
	c->op.add = add;
	snprintf(c->op.name, sizeof(c->op.name), "%s", sys->name);
	c->op.done = role_recorded;
	c->op.arg = c;
	if (registry_submit(s, &c->op)) {
		sw_http_reply_error(req, sw_http_status(c->op.rc), "cannot record the role: %s",
				    c->op.err);
		json_decref(c->op.roles);
		free(c);
	}
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
		/* jansson reads no NaN or infinity; the test says so all the same */
		if (v && (!json_is_number(v) || !isfinite(json_number_value(v)) ||
			  json_number_value(v) < 0.01 || json_number_value(v) > 3600)) {
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
		double v;
		if (sw_number_parse(q, 0.01, 3600, &v)) {
			sw_http_reply_error(req, 400, "timeout must be 0.01 to 3600 seconds");
			return;
		}
		timeout_ms = (unsigned)(v * 1000);
	}
	if ((q = sw_http_req_query(req, "lines"))) {
		int64_t v;
		if (sw_int_parse(q, 1, 10000, &v)) {
			sw_http_reply_error(req, 400, "lines must be 1 to 10000");
			return;
		}
		lines = (unsigned)v;
	}
	if (control_service(s, sys, req, t.item, t.parts == 4 ? "logs" : "status", timeout_ms,
			    lines))
		sw_http_reply_error(req, 500, "cannot call the agent of %s", sys->name);
}

static void system_removed(struct server *s, struct reg_op *op)
{
	struct sw_http_req *req = op->arg;

	if (op->rc) {
		sw_http_reply_error(req, sw_http_status(op->rc), "%s", op->err);
	} else {
		/* the metering servers refuse its certificates at once, not at their next poll */
		/* every certificate it was ever issued, in one push */
		metering_revoked(s, op->list);
		upgrade_system_removed(s, op->name);
		sw_http_reply_json(
		    req, 200,
		    json_pack("{ss sb sO}", "name", op->name, "revoked", 1, "serials", op->list));
	}
	json_decref(op->list);
	free(op);
}

static void delete_system(struct sw_http_req *req, void *arg)
{
	struct server *s = arg;
	struct reg_op *op;
	struct target t;

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
	if (!sw_http_req_may(req, SW_HTTP_ADMIN))
		return;
	if (!(op = calloc(1, sizeof(*op)))) {
		sw_http_reply_error(req, 500, "out of memory");
		return;
	}
	op->kind = REG_REMOVE;
	snprintf(op->name, sizeof(op->name), "%s", t.name);
	op->done = system_removed;
	op->arg = req;
	if (registry_submit(s, op)) {
		sw_http_reply_error(req, sw_http_status(op->rc), "%s", op->err);
		free(op);
	}
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

/* GET /v1/ca/status: the site's CAs, and how far a rotation is. */
static void get_ca_status(struct sw_http_req *req, void *arg)
{
	sw_http_reply_json(req, 200, ca_status(arg));
}

/* POST /v1/ca/rotate: a new CA, trusted beside the one that issues; the rest follows as
 * the systems take it (ca.c). */
static void post_ca_rotate(struct sw_http_req *req, void *arg)
{
	struct server *s = arg;
	char err[256];
	int rc = ca_rotate(s, err, sizeof(err));

	if (rc) {
		sw_http_reply_error(req, sw_http_status(rc), "cannot rotate the site's CA: %s",
				    err);
		return;
	}
	sw_http_reply_json(req, 200, ca_status(s));
}

/* A certificate for a monitoring system's scraper: the role `scrape`, client use only,
 * good for GET /metrics on this server and on license servers and for nothing else. The
 * key stays where the request was made (siteward cert scrape). */
static void post_scrape_cert(struct sw_http_req *req, void *arg)
{
	struct server *s = arg;
	json_t *j = sw_http_req_json(req);
	const char *name, *csr;
	char serial[41], err[256], *cert = NULL;
	int rc;

	if (!j)
		return;
	name = json_string_value(json_object_get(j, "name"));
	csr = json_string_value(json_object_get(j, "csr"));
	if (!name || !sw_name_valid(name) || !csr) {
		sw_http_reply_error(req, 400, "a scrape certificate needs a valid name and a csr");
		goto out;
	}
	struct sw_pki_issue what = {.cn = name,
				    .role = SW_PKI_ROLE_SCRAPE,
				    .days = AGENT_CERT_DAYS,
				    .purposes = SW_PKI_TLS_CLIENT};
	if ((rc = sw_pki_ca_issue(s->ca, csr, strlen(csr), &what, &cert, serial, err,
				  sizeof(err)))) {
		sw_http_reply_error(req, 400, "cannot issue: %s", err);
		goto out;
	}
	sw_info("scrape certificate %s issued to %s (serial %s)", name,
		sw_http_req_identity(req)->cn, serial);
	sw_http_reply_json(
	    req, 200,
	    json_pack("{ss ss ss}", "certificate", cert, "ca", s->ca_pem, "serial", serial));
out:
	free(cert);
	json_decref(j);
}

/* GET /v1/whoami: the administrator asking, and its role (the console shows only what
 * that role may do). */
static void get_whoami(struct sw_http_req *req, void *arg)
{
	const struct sw_identity *id = sw_http_req_identity(req);
	const char *level = admins_level(arg, id);

	sw_http_reply_json(req, 200,
			   json_pack("{ss ss}", "name", id->cn, "role", level ? level : "viewer"));
}

static const struct sw_http_route routes[] = {
    {"GET", "/v1/ca", SW_HTTP_OPEN, get_ca, 0},
    {"POST", "/v1/enroll", SW_HTTP_OPEN, post_enroll, 32 * 1024},
    {"POST", "/v1/heartbeat", SW_HTTP_AGENT, post_heartbeat, 0},
    {"POST", "/v1/agent/poll", SW_HTTP_AGENT, post_poll, 4 * 1024 * 1024},
    {"POST", "/v1/agent/renew", SW_HTTP_AGENT, post_renew, 64 * 1024},
    {"POST", "/v1/tokens", SW_HTTP_ADMIN, post_token, 0},
    {"GET", "/v1/tokens", SW_HTTP_VIEWER, get_tokens, 0},
    {"DELETE", "/v1/tokens/*", SW_HTTP_ADMIN, delete_token, 0},
    {"GET", "/v1/systems", SW_HTTP_VIEWER, get_systems, 0},
    {"GET", "/v1/systems/*", SW_HTTP_VIEWER, get_system, 0},
    /* roles and services; a system's removal (DELETE NAME) needs the admin role */
    {"POST", "/v1/systems/*", SW_HTTP_OPERATOR, post_system, 0},
    {"DELETE", "/v1/systems/*", SW_HTTP_OPERATOR, delete_system, 0},
    {"GET", "/v1/site", SW_HTTP_VIEWER, get_site, 0},
    {"GET", "/v1/products", SW_HTTP_VIEWER | SW_HTTP_AGENT, metering_get_products, 0},
    {"POST", "/v1/products", SW_HTTP_ADMIN, metering_post_product, 0},
    {"PUT", "/v1/products/*", SW_HTTP_ADMIN, metering_put_product, 0},
    {"DELETE", "/v1/products/*", SW_HTTP_ADMIN, metering_delete_product, 0},
    {"PUT", "/v1/excluded/*", SW_HTTP_ADMIN, metering_exclude, 0},
    {"DELETE", "/v1/excluded/*", SW_HTTP_ADMIN, metering_exclude, 0},
    {"GET", "/v1/meter/config", SW_HTTP_AGENT, metering_get_config, 0},
    {"POST", "/v1/meter/config", SW_HTTP_AGENT, metering_get_config, 1024 * 1024},
    {"POST", "/v1/usage", SW_HTTP_AGENT, metering_post_usage, 1024 * 1024},
    {"GET", "/v1/usage", SW_HTTP_VIEWER, metering_get_usage, 0},
    {"GET", "/v1/groups", SW_HTTP_VIEWER, groups_get, 0},
    {"POST", "/v1/groups/*", SW_HTTP_ADMIN, groups_post, GROUPS_BODY_MAX},
    {"DELETE", "/v1/groups/*", SW_HTTP_ADMIN, groups_delete, 0},
    {"GET", "/v1/licenses", SW_HTTP_VIEWER, licenses_get, 0},
    {"GET", "/v1/licenses/report", SW_HTTP_VIEWER, inventory_license_report, 0},
    {"POST", "/v1/inventory", SW_HTTP_AGENT, inventory_post, 32 * 1024 * 1024},
    {"GET", "/v1/inventory/*", SW_HTTP_VIEWER, inventory_get, 0},
    {"GET", "/v1/software", SW_HTTP_VIEWER, inventory_software, 0},
    {"GET", "/v1/collections", SW_HTTP_VIEWER, collections_get, 0},
    {"GET", "/v1/collections/*", SW_HTTP_VIEWER, collections_get, 0},
    {"POST", "/v1/collections/*", SW_HTTP_OPERATOR, collections_post, 1024 * 1024},
    {"DELETE", "/v1/collections/*", SW_HTTP_OPERATOR, collections_delete, 0},
    {"POST", "/v1/exec", SW_HTTP_ADMIN, exec_post, 256 * 1024},
    /* software distribution: an operator's, as upgrades are */
    {"POST", "/v1/content", SW_HTTP_OPERATOR | SW_HTTP_BODY_FILE, deploy_content_post,
     (size_t)2 << 30},
    {"GET", "/v1/content/*", SW_HTTP_AGENT, deploy_content_get, 0},
    {"POST", "/v1/deployments", SW_HTTP_OPERATOR, deploy_post, 64 * 1024},
    {"GET", "/v1/deployments", SW_HTTP_VIEWER, deploy_get, 0},
    {"GET", "/v1/deployments/*", SW_HTTP_VIEWER, deploy_get, 0},
    {"POST", "/v1/deployments/*", SW_HTTP_OPERATOR, deploy_action, 0},
    {"POST", "/v1/licenses/reclaim", SW_HTTP_OPERATOR, licenses_reclaim, 0},
    /* an operator runs upgrades: its package goes up first */
    {"POST", "/v1/upgrades", SW_HTTP_OPERATOR, upgrade_post, 0},
    {"POST", "/v1/upgrades/check", SW_HTTP_OPERATOR, upgrade_check, 0},
    {"POST", "/v1/packages", SW_HTTP_OPERATOR | SW_HTTP_BODY_FILE, upgrade_package_post,
     (size_t)SW_STAGE_PACKAGE_MAX},
    {"GET", "/v1/upgrades/current", SW_HTTP_VIEWER, upgrade_get, 0},
    {"POST", "/v1/upgrades/current/*", SW_HTTP_OPERATOR, upgrade_action, 0},
    {"GET", "/v1/packages/*", SW_HTTP_AGENT, package_get, 0},
    {"GET", "/v1/site/signing-key", SW_HTTP_AGENT, package_signing_key, 0},
    {"POST", "/v1/certs/scrape", SW_HTTP_ADMIN, post_scrape_cert, 0},
    {"GET", "/v1/ca/status", SW_HTTP_VIEWER, get_ca_status, 0},
    {"POST", "/v1/ca/rotate", SW_HTTP_ADMIN, post_ca_rotate, 0},
    {"GET", "/v1/admins", SW_HTTP_VIEWER, admins_get, 0},
    {"POST", "/v1/admins", SW_HTTP_ADMIN, admins_post, 0},
    {"DELETE", "/v1/admins/*", SW_HTTP_ADMIN, admins_delete, 0},
    {"GET", "/v1/audit", SW_HTTP_VIEWER, admins_get_audit, 0},
    {"GET", "/v1/whoami", SW_HTTP_VIEWER, get_whoami, 0},
    {"GET", "/metrics", SW_HTTP_VIEWER | SW_HTTP_SCRAPE, metrics_get, 0},
};

const struct sw_http_route *api_route_table(size_t *n)
{
	*n = SW_ARRAY_LEN(routes);
	return routes;
}

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
	char uploads[PATH_MAX];
	unsigned handshake, idle, streams, stream_buffer;
	struct dirent *e;
	DIR *d;
	int rc;

	if ((rc = sw_conf_get_uint(s->conf, "server", "handshake_timeout", 10, 1, 300, &handshake,
				   err, errlen)) ||
	    (rc = sw_conf_get_uint(s->conf, "server", "idle_timeout", 120, 1, 3600, &idle, err,
				   errlen)) ||
	    (rc = sw_conf_get_uint(s->conf, "server", "max_event_streams", 1000, 1, 100000,
				   &streams, err, errlen)) ||
	    (rc = sw_conf_get_uint(s->conf, "server", "event_stream_buffer", 256 * 1024, 4096,
				   64 * 1024 * 1024, &stream_buffer, err, errlen)))
		return rc;
	if ((rc = sw_pem_read(s->dir, "server.crt", &s->cert_pem, err, errlen)) ||
	    (rc = metrics_open(s, err, errlen)))
		return rc;
	tls_window(s);
	if ((rc = sw_pem_read(s->dir, "server.key", &s->key_pem, err, errlen)))
		return rc;
	/* Uploaded packages are written here as they arrive; one a crash left is removed. */
	sw_path_join(uploads, sizeof(uploads), s->dir, "uploads");
	mkdir(uploads, 0700);
	if ((d = opendir(uploads))) {
		while ((e = readdir(d)))
			if (strncmp(e->d_name, "upload-", 7) == 0)
				unlinkat(dirfd(d), e->d_name, 0);
		closedir(d);
	}
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
	    .admin_level = admins_level,
	    .audit = admins_audit,
	    .upload_dir = uploads,
	    .metrics = s->metrics,
	    .max_streams = streams,
	    .stream_buffer = stream_buffer,
	};
	/* libmicrohttpd keeps pointers to the PEM strings: they live as long as s, and a
	 * rotation's bundle comes in beside the one it was started with (ca.c). */
	s->ca_pem_served = s->ca_pem;
	if ((rc = sw_http_server_start(s->loop, &o, &s->http, err, errlen)))
		return rc;
	/* the console's port takes the same CA, revocations, levels and audit */
	return console_start(s, &o, err, errlen);
}
