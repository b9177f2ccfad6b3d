/*
 * Named administrators and the audit log.
 *
 * An administrator is a name with a role: viewer (reads everything), operator (also runs
 * services, roles and upgrades) or admin (also products, tokens, systems, the CA and
 * administrators). Its certificate (role `admin`, CN its name) is issued by `siteward
 * admin add` for a key made on the administrator's side. The database is the record;
 * memory holds name → role for the check of every request (admins_level(), through the
 * HTTP server's `admin_level`). A removal keeps the row, so the name is not given again,
 * and revokes every certificate the administrator was issued. The site folder's own
 * administrator, `admin`, is the first, recorded at the first start.
 *
 * Every change an administrator makes through the API (any method but GET) is written to
 * the audit table through the write queue before its answer goes (admins_audit(), the
 * HTTP server's `audit` hook holds the answer until then); so is every request a route
 * refused an administrator, without holding its answer.
 */
#include "server.h"

#include "error.h"
#include "json.h"
#include "log.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ADMIN_CERT_DAYS 825
/* The site folder's own administrator: recorded at the first start, never removed. */
#define FIRST_ADMIN "admin"
/* An audit listing holds at most this many records, newest first. */
#define AUDIT_LIMIT_MAX 10000

struct admin {
	char role[16];
	int removed;
};

static int role_valid(const char *r)
{
	return r &&
	       (strcmp(r, "viewer") == 0 || strcmp(r, "operator") == 0 || strcmp(r, "admin") == 0);
}

static int load_admin(void *arg, int ncols, const struct sw_db_val *row)
{
	struct server *s = arg;
	struct admin *a = calloc(1, sizeof(*a));

	if (!a)
		return SW_ENOMEM;
	snprintf(a->role, sizeof(a->role), "%s", row[1].s ? row[1].s : "");
	a->removed = row[2].type != SW_DB_NULL;
	free(sw_strmap_del(s->admins, row[0].s));
	return sw_strmap_set(s->admins, row[0].s, a);
}

int admins_load(struct server *s, int record_first, char *err, size_t errlen)
{
	int rc;

	if (!(s->admins = sw_strmap_new()))
		return SW_ENOMEM;
	struct sw_db_val first[] = {SW_DB_TEXT(FIRST_ADMIN), SW_DB_INT(sw_now_ms())};
	if (record_first &&
	    (rc = sw_db_exec(s->db,
			     "INSERT INTO admins (name, role, created_at, created_by) VALUES (?, "
			     "'admin', ?, 'siteward-server init') ON CONFLICT DO NOTHING",
			     first, 2, NULL, NULL, NULL, err, errlen)))
		return rc;
	return sw_db_exec(s->db, "SELECT name, role, removed_at FROM admins", NULL, 0, load_admin,
			  s, NULL, err, errlen);
}

static void admin_free(const char *key, void *value, void *arg)
{
	free(value);
}

void admins_free(struct server *s)
{
	if (!s->admins)
		return;
	sw_strmap_each(s->admins, admin_free, NULL);
	sw_strmap_free(s->admins);
	s->admins = NULL;
}

const char *admins_level(void *arg, const struct sw_identity *id)
{
	struct server *s = arg;
	const struct admin *a = s->admins ? sw_strmap_get(s->admins, id->cn) : NULL;

	return a && !a->removed ? a->role : NULL;
}

/* --- the audit log --- */

struct audit_rec {
	struct sw_http_req *req; /* its answer waits, NULL: not held */
	int64_t at;
	unsigned status;
	char who[128], serial[41], address[64], method[16], path[300], outcome[300];
	int rc;
	char err[256];
};

static void audit_run(struct sw_db *db, void *arg)
{
	struct audit_rec *r = arg;
	struct sw_db_val v[] = {SW_DB_INT(r->at),      SW_DB_TEXT(r->who),
				SW_DB_TEXT(r->serial), SW_DB_TEXT(r->address),
				SW_DB_TEXT(r->method), SW_DB_TEXT(r->path),
				SW_DB_INT(r->status),  SW_DB_TEXT(r->outcome)};

	r->rc = sw_db_exec(db,
			   "INSERT INTO audit (at, who, serial, address, method, path, status, "
			   "outcome) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
			   v, 8, NULL, NULL, NULL, r->err, sizeof(r->err));
}

static void audit_done(struct server *s, void *arg)
{
	struct audit_rec *r = arg;

	if (r->rc)
		sw_err("audit: cannot record %s %s by %s (%u): %s", r->method, r->path, r->who,
		       r->status, r->err);
	if (r->req)
		sw_http_reply_release(r->req);
	free(r);
}

int admins_audit(void *arg, struct sw_http_req *req, unsigned status, const char *body,
		 int may_hold)
{
	struct server *s = arg;
	const struct sw_identity *id = sw_http_req_identity(req);
	struct audit_rec *r = calloc(1, sizeof(*r));
	json_t *j = NULL;

	if (!r || !id) {
		free(r);
		sw_err("audit: out of memory; %s %s is not recorded", sw_http_req_method(req),
		       sw_http_req_path(req));
		return 0;
	}
	r->at = sw_now_ms();
	r->status = status;
	snprintf(r->who, sizeof(r->who), "%s", id->cn);
	snprintf(r->serial, sizeof(r->serial), "%s", id->serial);
	snprintf(r->address, sizeof(r->address), "%s", sw_http_req_peer(req));
	snprintf(r->method, sizeof(r->method), "%s", sw_http_req_method(req));
	snprintf(r->path, sizeof(r->path), "%s", sw_http_req_path(req));
	/* the outcome: "ok", or what a successful answer says it did ("outcome"), or the
	 * reason the answer gives */
	if (status < 300 && body && strstr(body, "\"outcome\"") &&
	    (j = json_loads(body, 0, NULL)) && json_is_string(json_object_get(j, "outcome"))) {
		snprintf(r->outcome, sizeof(r->outcome), "%s",
			 json_string_value(json_object_get(j, "outcome")));
		json_decref(j);
	} else if (status < 300) {
		json_decref(j);
		snprintf(r->outcome, sizeof(r->outcome), "ok");
	} else if ((j = json_loads(body, 0, NULL)) && json_is_string(json_object_get(j, "error"))) {
		snprintf(r->outcome, sizeof(r->outcome), "%s",
			 json_string_value(json_object_get(j, "error")));
		json_decref(j);
	} else {
		json_decref(j);
		snprintf(r->outcome, sizeof(r->outcome), "%.200s", body);
	}
	r->req = may_hold ? req : NULL;
	if (dbq_push(s, DBQ_SLOW_MS, audit_run, audit_done, r)) {
		sw_err("audit: out of memory; %s %s by %s is not recorded", r->method, r->path,
		       r->who);
		free(r);
		return 0;
	}
	return may_hold;
}

/* GET /v1/audit[?since=MS][&who=NAME][&limit=N]: newest first. */
struct audit_query {
	struct sw_http_req *req;
	int64_t since, limit;
	char who[128];
	json_t *list;
	int rc;
	char err[256];
};

static int audit_row(void *arg, int ncols, const struct sw_db_val *row)
{
	struct audit_query *q = arg;

	return json_array_append_new(
		   q->list,
		   json_pack("{sI ss ss ss ss ss sI ss}", "at", (json_int_t)row[0].i, "who",
			     row[1].s, "serial", row[2].s, "address", row[3].s, "method", row[4].s,
			     "path", row[5].s, "status", (json_int_t)row[6].i, "outcome", row[7].s))
		   ? SW_ENOMEM
		   : 0;
}

static void audit_query_run(struct sw_db *db, void *arg)
{
	struct audit_query *q = arg;
	struct sw_db_val v[] = {SW_DB_INT(q->since), SW_DB_TEXT(q->who), SW_DB_TEXT(q->who),
				SW_DB_INT(q->limit)};

	q->rc = sw_db_exec(db,
			   "SELECT at, who, serial, address, method, path, status, outcome FROM "
			   "audit WHERE at >= ? AND (? = '' OR who = ?) ORDER BY at DESC LIMIT ?",
			   v, 4, audit_row, q, NULL, q->err, sizeof(q->err));
}

static void audit_query_done(struct server *s, void *arg)
{
	struct audit_query *q = arg;

	if (q->rc)
		sw_http_reply_error(q->req, 500, "cannot read the audit log: %s", q->err);
	else
		sw_http_reply_json(
		    q->req, 200,
		    json_pack("{sO sI}", "records", q->list, "now", (json_int_t)sw_now_ms()));
	json_decref(q->list);
	free(q);
}

void admins_get_audit(struct sw_http_req *req, void *arg)
{
	struct server *s = arg;
	const char *since = sw_http_req_query(req, "since"), *who = sw_http_req_query(req, "who");
	const char *limit = sw_http_req_query(req, "limit");
	struct audit_query *q = calloc(1, sizeof(*q));
	char *end;

	if (!q || !(q->list = json_array())) {
		free(q);
		sw_http_reply_error(req, 500, "out of memory");
		return;
	}
	q->req = req;
	q->limit = 1000;
	if (since && ((q->since = strtoll(since, &end, 10)) < 0 || *end || !*since)) {
		sw_http_reply_error(req, 400, "since is a time in ms since the epoch");
		goto fail;
	}
	if (limit &&
	    ((q->limit = strtoll(limit, &end, 10)) < 1 || q->limit > AUDIT_LIMIT_MAX || *end)) {
		sw_http_reply_error(req, 400, "limit is 1 to %d", AUDIT_LIMIT_MAX);
		goto fail;
	}
	if (who && !sw_name_valid(who)) {
		sw_http_reply_error(req, 400, "'%s' is not an administrator's name", who);
		goto fail;
	}
	snprintf(q->who, sizeof(q->who), "%s", who ? who : "");
	if (dbq_push(s, DBQ_SLOW_MS, audit_query_run, audit_query_done, q) == 0)
		return;
	sw_http_reply_error(req, 500, "out of memory");
fail:
	json_decref(q->list);
	free(q);
}

/* --- administrators: add, list, remove --- */

struct admin_op {
	struct sw_http_req *req;
	char name[64], role[16], by[128], serial[41];
	char *cert;
	int64_t not_after;
	json_t *list; /* a listing, or a removal's revoked serials */
	int rc;
	char err[256];
};

static void admin_op_free(struct admin_op *o)
{
	free(o->cert);
	json_decref(o->list);
	free(o);
}

static void add_run(struct sw_db *db, void *arg)
{
	struct admin_op *o = arg;
	int64_t now = sw_now_ms(), changes = 0;

	if ((o->rc = sw_db_begin(db, o->err, sizeof(o->err))))
		return;
	struct sw_db_val a[] = {SW_DB_TEXT(o->name), SW_DB_TEXT(o->role), SW_DB_INT(now),
				SW_DB_TEXT(o->by)};
	struct sw_db_val c[] = {SW_DB_TEXT(o->serial), SW_DB_TEXT(o->name), SW_DB_INT(now),
				SW_DB_INT(o->not_after)};
	if (!(o->rc = sw_db_exec(db,
				 "INSERT INTO admins (name, role, created_at, created_by) VALUES "
				 "(?, ?, ?, ?) ON CONFLICT DO NOTHING",
				 a, 4, NULL, NULL, &changes, o->err, sizeof(o->err))) &&
	    changes != 1) {
		snprintf(o->err, sizeof(o->err),
			 "an administrator named '%s' exists or was removed; names are not given "
			 "twice",
			 o->name);
		o->rc = SW_EEXIST;
	}
	if (!o->rc)
		o->rc = sw_db_exec(db,
				   "INSERT INTO admin_certs (serial, admin, issued_at, not_after) "
				   "VALUES (?, ?, ?, ?)",
				   c, 4, NULL, NULL, NULL, o->err, sizeof(o->err));
	if (!o->rc)
		o->rc = sw_db_commit(db, o->err, sizeof(o->err));
	if (o->rc)
		sw_db_rollback(db);
}

static void add_done(struct server *s, void *arg)
{
	struct admin_op *o = arg;
	struct admin *a = NULL;

	if (!o->rc && !(a = calloc(1, sizeof(*a))))
		o->rc = SW_ENOMEM;
	if (o->rc) {
		sw_http_reply_error(o->req, sw_http_status(o->rc), "cannot add %s: %s", o->name,
				    o->err);
		admin_op_free(o);
		return;
	}
	snprintf(a->role, sizeof(a->role), "%s", o->role);
	free(sw_strmap_del(s->admins, o->name));
	if (sw_strmap_set(s->admins, o->name, a))
		free(a);
	sw_info("administrator %s (%s) added by %s, certificate %s", o->name, o->role, o->by,
		o->serial);
	sw_http_reply_json(o->req, 200,
			   json_pack("{ss ss ss ss ss sI}", "name", o->name, "role", o->role,
				     "certificate", o->cert, "ca", s->ca_pem, "serial", o->serial,
				     "not_after", (json_int_t)o->not_after));
	admin_op_free(o);
}

/* POST /v1/admins {"name", "role", "csr"}: the administrator's certificate, for a key
 * that stays where the request was made. */
void admins_post(struct sw_http_req *req, void *arg)
{
	struct server *s = arg;
	json_t *j = sw_http_req_json(req);
	const char *name, *role, *csr;
	struct admin_op *o = NULL;
	int rc;

	if (!j)
		return;
	name = json_string_value(json_object_get(j, "name"));
	role = json_string_value(json_object_get(j, "role"));
	csr = json_string_value(json_object_get(j, "csr"));
	if (!name || !sw_name_valid(name) || strlen(name) > 63) {
		sw_http_reply_error(req, 400, "name: 1 to 63 letters, digits, '.', '_' or '-'");
		goto out;
	}
	if (!role_valid(role)) {
		sw_http_reply_error(req, 400, "role must be viewer, operator or admin");
		goto out;
	}
	if (!csr) {
		sw_http_reply_error(req, 400, "csr: a certificate request is needed");
		goto out;
	}
	if (sw_strmap_get(s->admins, name)) {
		sw_http_reply_error(req, 409,
				    "an administrator named '%s' exists or was removed; names are "
				    "not given twice",
				    name);
		goto out;
	}
	if (!(o = calloc(1, sizeof(*o)))) {
		sw_http_reply_error(req, 500, "out of memory");
		goto out;
	}
	o->req = req;
	snprintf(o->name, sizeof(o->name), "%s", name);
	snprintf(o->role, sizeof(o->role), "%s", role);
	snprintf(o->by, sizeof(o->by), "%s", sw_http_req_identity(req)->cn);
	struct sw_pki_issue what = {.cn = name, .role = SW_PKI_ROLE_ADMIN, .days = ADMIN_CERT_DAYS};
	if ((rc = sw_pki_ca_issue(s->ca, csr, strlen(csr), &what, &o->cert, o->serial, o->err,
				  sizeof(o->err))) ||
	    (rc = sw_pki_cert_validity(o->cert, NULL, &o->not_after, o->err, sizeof(o->err)))) {
		sw_http_reply_error(req, sw_http_status(rc), "cannot issue the certificate: %s",
				    o->err);
		goto out;
	}
	if (dbq_push(s, DBQ_SLOW_MS, add_run, add_done, o)) {
		sw_http_reply_error(req, 500, "out of memory");
		goto out;
	}
	o = NULL;
out:
	if (o)
		admin_op_free(o);
	json_decref(j);
}

static int list_row(void *arg, int ncols, const struct sw_db_val *row)
{
	struct admin_op *o = arg;
	json_t *a = json_pack("{ss ss sI ss}", "name", row[0].s, "role", row[1].s, "created_at",
			      (json_int_t)row[2].i, "created_by", row[3].s);

	if (!a)
		return SW_ENOMEM;
	json_object_set_new(a, "removed_at",
			    row[4].type == SW_DB_NULL ? json_null() : json_integer(row[4].i));
	return json_array_append_new(o->list, a) ? SW_ENOMEM : 0;
}

static void list_run(struct sw_db *db, void *arg)
{
	struct admin_op *o = arg;

	o->rc = sw_db_exec(db,
			   "SELECT name, role, created_at, created_by, removed_at FROM admins "
			   "ORDER BY name",
			   NULL, 0, list_row, o, NULL, o->err, sizeof(o->err));
}

static void list_done(struct server *s, void *arg)
{
	struct admin_op *o = arg;

	if (o->rc)
		sw_http_reply_error(o->req, 500, "cannot list administrators: %s", o->err);
	else
		sw_http_reply_json(o->req, 200, json_pack("{sO}", "admins", o->list));
	admin_op_free(o);
}

/* GET /v1/admins */
void admins_get(struct sw_http_req *req, void *arg)
{
	struct admin_op *o = calloc(1, sizeof(*o));

	if (!o || !(o->list = json_array())) {
		free(o);
		sw_http_reply_error(req, 500, "out of memory");
		return;
	}
	o->req = req;
	if (dbq_push(arg, DBQ_SLOW_MS, list_run, list_done, o)) {
		sw_http_reply_error(req, 500, "out of memory");
		admin_op_free(o);
	}
}

static int revoked_row(void *arg, int ncols, const struct sw_db_val *row)
{
	struct admin_op *o = arg;

	return json_array_append_new(o->list, json_string(row[0].s)) ? SW_ENOMEM : 0;
}

static void remove_run(struct sw_db *db, void *arg)
{
	struct admin_op *o = arg;
	int64_t now = sw_now_ms(), changes = 0;
	struct sw_db_val n[] = {SW_DB_INT(now), SW_DB_TEXT(o->name)};
	struct sw_db_val q[] = {SW_DB_TEXT(o->name)};
	struct sw_db_val r[] = {SW_DB_TEXT(o->name), SW_DB_INT(now), SW_DB_TEXT(o->name)};

	if ((o->rc = sw_db_begin(db, o->err, sizeof(o->err))))
		return;
	if (!(o->rc =
		  sw_db_exec(db,
			     "UPDATE admins SET removed_at = ? WHERE name = ? AND removed_at IS "
			     "NULL",
			     n, 2, NULL, NULL, &changes, o->err, sizeof(o->err))) &&
	    changes != 1) {
		snprintf(o->err, sizeof(o->err), "no administrator named '%s'", o->name);
		o->rc = SW_ENOTFOUND;
	}
	if (!o->rc)
		o->rc = sw_db_exec(db, "SELECT serial FROM admin_certs WHERE admin = ?", q, 1,
				   revoked_row, o, NULL, o->err, sizeof(o->err));
	if (!o->rc)
		o->rc =
		    sw_db_exec(db,
			       "INSERT INTO revoked (serial, name, revoked_at) SELECT serial, ?, ? "
			       "FROM admin_certs WHERE admin = ? ON CONFLICT DO NOTHING",
			       r, 3, NULL, NULL, NULL, o->err, sizeof(o->err));
	if (!o->rc)
		o->rc = sw_db_commit(db, o->err, sizeof(o->err));
	if (o->rc)
		sw_db_rollback(db);
}

static void remove_done(struct server *s, void *arg)
{
	struct admin_op *o = arg;
	struct admin *a;
	json_t *v;
	size_t i;

	if (o->rc) {
		sw_http_reply_error(o->req, sw_http_status(o->rc), "cannot remove %s: %s", o->name,
				    o->err);
		admin_op_free(o);
		return;
	}
	if ((a = sw_strmap_get(s->admins, o->name)))
		a->removed = 1;
	json_array_foreach(o->list, i, v)
	    sw_strmap_set(s->revoked, json_string_value(v), (void *)1);
	sw_info("administrator %s removed by %s; %zu certificates revoked", o->name, o->by,
		json_array_size(o->list));
	sw_http_reply_json(o->req, 200, json_pack("{ss sO}", "name", o->name, "revoked", o->list));
	admin_op_free(o);
}

/* DELETE /v1/admins/NAME: refused from then on, every certificate it had revoked. */
void admins_delete(struct sw_http_req *req, void *arg)
{
	struct server *s = arg;
	const char *name = sw_http_req_tail(req);
	const struct admin *a = sw_strmap_get(s->admins, name);
	struct admin_op *o;

	if (!sw_name_valid(name) || !a || a->removed) {
		sw_http_reply_error(req, 404, "no administrator named '%s'", name);
		return;
	}
	if (strcmp(name, FIRST_ADMIN) == 0) {
		sw_http_reply_error(req, 409,
				    "'%s' is the site folder's own administrator, whose key is "
				    "the server's; it is not removed",
				    name);
		return;
	}
	if (!(o = calloc(1, sizeof(*o))) || !(o->list = json_array())) {
		free(o);
		sw_http_reply_error(req, 500, "out of memory");
		return;
	}
	o->req = req;
	snprintf(o->name, sizeof(o->name), "%s", name);
	snprintf(o->by, sizeof(o->by), "%s", sw_http_req_identity(req)->cn);
	if (dbq_push(s, DBQ_SLOW_MS, remove_run, remove_done, o)) {
		sw_http_reply_error(req, 500, "out of memory");
		admin_op_free(o);
	}
}
