/*
 * Software metering on the site server: the product table, each metering server's
 * share of the licenses, usage ingestion and the usage report.
 */
#include "proto.h"
#include "server.h"
#include "share.h"
#include "usagerec.h"

#include "error.h"
#include "json.h"
#include "log.h"
#include "product.h"
#include "progver.h"
#include "strmap.h"
#include "util.h"
#include "work.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The bound on telling a metering server that products changed. */
#define PUSH_TIMEOUT_MS 3000

#define MAX_USAGE_BATCH 1000
#define USAGE_REPORT_MS 60000 /* the longest a usage report may take */
#define DAY_MS		86400000LL

#define PRODUCT_COLUMNS                                                                            \
	"name, exe, version, licenses, enforce, build_id, hours, deny_users, deny_hosts, "         \
	"on_reclaim, reclaim_signal, idle_s, rules, package"

/* A stored product's rules, as they were checked when an administrator made them; a
 * rule that does not read (never stored so) is left out and logged. */
static void rules_read(struct sw_product *p, const char *text)
{
	json_t *arr = json_loads(text, 0, NULL), *v;
	char err[200];
	size_t i;

	json_array_foreach(arr, i, v)
	{
		if (p->nrules == SW_PRODUCT_RULES_MAX)
			break;
		if (sw_product_rule_parse(v, &p->rules[p->nrules], err, sizeof(err)) == 0)
			p->nrules++;
		else
			sw_err("product %s: a stored rule is left out: %s", p->name, err);
	}
	json_decref(arr);
}

/* A stored product, as it was checked when an administrator made it. */
static void product_read(struct sw_product *p, const struct sw_db_val *row)
{
	sw_product_init(p);
	snprintf(p->name, sizeof(p->name), "%s", row[0].s);
	snprintf(p->exe, sizeof(p->exe), "%s", row[1].s);
	snprintf(p->version, sizeof(p->version), "%s", row[2].s);
	p->licenses = row[3].i;
	p->enforce = row[4].i != 0;
	snprintf(p->build_id, sizeof(p->build_id), "%s", row[5].s);
	snprintf(p->hours, sizeof(p->hours), "%s", row[6].s);
	snprintf(p->deny_users, sizeof(p->deny_users), "%s", row[7].s);
	snprintf(p->deny_hosts, sizeof(p->deny_hosts), "%s", row[8].s);
	sw_reclaim_policy_parse(row[9].s, &p->on_reclaim);
	snprintf(p->reclaim_signal, sizeof(p->reclaim_signal), "%s", row[10].s);
	p->idle_s = row[11].i;
	rules_read(p, row[12].s);
	snprintf(p->package, sizeof(p->package), "%s", row[13].s ? row[13].s : "");
}

struct products {
	struct sw_product **v;
	size_t n, cap;
};

static void products_free(struct products *ps)
{
	sw_product_array_free(ps->v, ps->n);
	memset(ps, 0, sizeof(*ps));
}

static int product_row(void *arg, int ncols, const struct sw_db_val *row)
{
	struct products *ps = arg;

	if (ps->n == ps->cap) {
		size_t cap = ps->cap ? 2 * ps->cap : 16;
		struct sw_product **v = realloc(ps->v, cap * sizeof(*v));

		if (!v)
			return SW_ENOMEM;
		ps->v = v;
		ps->cap = cap;
	}
	if (!(ps->v[ps->n] = malloc(sizeof(*ps->v[ps->n]))))
		return SW_ENOMEM;
	product_read(ps->v[ps->n++], row);
	return 0;
}

/* Every product, by name: the order in which they are sent and matched. */
static int products_load(struct sw_db *db, struct products *ps, char *err, size_t errlen)
{
	int rc;

	memset(ps, 0, sizeof(*ps));
	rc = sw_db_exec(db, "SELECT " PRODUCT_COLUMNS " FROM products ORDER BY name", NULL, 0,
			product_row, ps, NULL, err, errlen);
	if (rc == SW_ENOMEM)
		sw_seterr(err, errlen, "out of memory reading the products");
	if (rc)
		products_free(ps);
	return rc;
}

static json_t *products_load_db(struct sw_db *db, char *err, size_t errlen)
{
	struct products ps;
	json_t *arr;

	if (products_load(db, &ps, err, errlen))
		return NULL;
	arr = json_array();
	for (size_t i = 0; arr && i < ps.n; i++) {
		if (json_array_append_new(arr, sw_product_json(ps.v[i]))) {
			json_decref(arr);
			arr = NULL;
		}
	}
	if (!arr)
		sw_seterr(err, errlen, "out of memory");
	products_free(&ps);
	return arr;
}

static int excluded_row(void *arg, int ncols, const struct sw_db_val *row)
{
	json_array_append_new(arg, json_string(row[0].s));
	return 0;
}

/* A deny list of the request, if it names one: it replaces the product's. */
static int names_field(const json_t *j, const char *key, char *out, size_t len, char *err,
		       size_t errlen)
{
	const json_t *arr = json_object_get(j, key);

	return arr ? sw_product_names_parse(arr, key, out, len, err, errlen) : 0;
}

/* Fields of a request over `p` (a new product, or the one being changed), then the
 * whole product checked by the rule license servers and agents read it by. */
static int product_update(struct sw_product *p, const json_t *j, int creating, char *err,
			  size_t errlen)
{
	const char *exe = NULL, *version = NULL, *build_id = NULL, *hours = NULL, *package = NULL;
	const char *policy = NULL, *sig = NULL;
	json_t *e, *rule;
	int rc;

	if ((rc = sw_json_str(j, "exe", SW_PRODUCT_EXE_MAX, creating, &exe, err, errlen)) ||
	    (rc = sw_json_str(j, "version", SW_PRODUCT_VERSION_MAX, 0, &version, err, errlen)) ||
	    (rc = sw_json_str(j, "build_id", SW_PRODUCT_BUILD_ID_MAX, 0, &build_id, err, errlen)) ||
	    (rc = sw_json_str(j, "hours", SW_PRODUCT_HOURS_MAX, 0, &hours, err, errlen)) ||
	    (rc = sw_json_int(j, "licenses", 0, 1000000, creating, &p->licenses, err, errlen)) ||
	    (rc = sw_json_str(j, "on_reclaim", 8, 0, &policy, err, errlen)) ||
	    (rc = sw_json_str(j, "reclaim_signal", SW_PRODUCT_SIGNAL_MAX, 0, &sig, err, errlen)) ||
	    (rc = sw_json_int(j, "idle_s", 0, SW_PRODUCT_IDLE_MAX, 0, &p->idle_s, err, errlen)) ||
	    (rc = sw_json_str(j, "package", SW_PRODUCT_PACKAGE_MAX, 0, &package, err, errlen)))
		return rc;
	if (package)
		snprintf(p->package, sizeof(p->package), "%s", package);
	if (policy && sw_reclaim_policy_parse(policy, &p->on_reclaim)) {
		sw_seterr(err, errlen, "field 'on_reclaim' must be stop or run");
		return SW_EINVAL;
	}
	if (sig)
		snprintf(p->reclaim_signal, sizeof(p->reclaim_signal), "%s", sig);
	/* rules added, changed, or (count 0) removed: one object, or a list of them */
	if ((rule = json_object_get(j, "rule"))) {
		struct sw_product_rule r;
		size_t n = json_is_array(rule) ? json_array_size(rule) : 1;

		if (n > SW_PRODUCT_RULES_MAX) {
			sw_seterr(err, errlen, "at most %d rules at once", SW_PRODUCT_RULES_MAX);
			return SW_EINVAL;
		}
		for (size_t i = 0; i < n; i++)
			if ((rc = sw_product_rule_parse(
				 json_is_array(rule) ? json_array_get(rule, i) : rule, &r, err,
				 errlen)) ||
			    (rc = sw_product_rule_set(p, &r, err, errlen)))
				return rc;
	}
	e = json_object_get(j, "enforce");
	if (e && !json_is_boolean(e)) {
		sw_seterr(err, errlen, "field 'enforce' must be true or false");
		return SW_EINVAL;
	}
	if ((rc =
		 names_field(j, "deny_users", p->deny_users, sizeof(p->deny_users), err, errlen)) ||
	    (rc = names_field(j, "deny_hosts", p->deny_hosts, sizeof(p->deny_hosts), err, errlen)))
		return rc;
	if (e)
		p->enforce = json_is_true(e);
	if (exe)
		snprintf(p->exe, sizeof(p->exe), "%s", exe);
	if (version)
		snprintf(p->version, sizeof(p->version), "%s", version);
	if (build_id)
		snprintf(p->build_id, sizeof(p->build_id), "%s", build_id);
	if (hours)
		snprintf(p->hours, sizeof(p->hours), "%s", hours);
	return sw_product_validate(p, err, errlen);
}

static int name_row(void *arg, int ncols, const struct sw_db_val *row)
{
	snprintf(arg, 64, "%s", row[0].s);
	return 0;
}

static int product_store(struct sw_db *db, const struct sw_product *p, int creating, char *err,
			 size_t errlen)
{
	char other[64] = "";
	int rc;

	/* One program and version pattern, one product: otherwise license servers, passive
	 * metering and the report could each pick a different one. Products of one program
	 * differ in their version patterns, and the most specific pattern that fits wins. */
	struct sw_db_val q[] = {SW_DB_TEXT(p->exe), SW_DB_TEXT(p->build_id),
				SW_DB_TEXT(p->build_id), SW_DB_TEXT(p->version),
				SW_DB_TEXT(p->name)};
	rc = sw_db_exec(db,
			"SELECT name FROM products WHERE (exe = ? OR (? <> '' AND build_id = ?)) "
			"AND version = ? AND name <> ?",
			q, 5, name_row, other, NULL, err, errlen);
	if (rc)
		return rc;
	if (other[0]) {
		sw_seterr(err, errlen,
			  "product %s already meters that executable or build ID%s%s; give this "
			  "one another --version pattern",
			  other, p->version[0] ? " at version " : " for every version", p->version);
		return SW_EEXIST;
	}
	json_t *rj = sw_product_rules_json(p);
	char *rules = rj ? sw_json_dump(rj) : NULL;

	json_decref(rj);
	struct sw_db_val v[] = {SW_DB_TEXT(p->exe),
				SW_DB_TEXT(p->version),
				SW_DB_INT(p->licenses),
				SW_DB_INT(p->enforce),
				SW_DB_TEXT(p->build_id),
				SW_DB_TEXT(p->hours),
				SW_DB_TEXT(p->deny_users),
				SW_DB_TEXT(p->deny_hosts),
				SW_DB_TEXT(sw_reclaim_policy_name(p->on_reclaim)),
				SW_DB_TEXT(p->reclaim_signal),
				SW_DB_INT(p->idle_s),
				SW_DB_TEXT(rules),
				SW_DB_TEXT(p->package),
				SW_DB_TEXT(p->name),
				SW_DB_INT(sw_now_ms())};

	if (!rules) {
		sw_seterr(err, errlen, "out of memory");
		return SW_ENOMEM;
	}
	if (creating)
		rc = sw_db_exec(
		    db,
		    "INSERT INTO products (exe, version, licenses, enforce, build_id, "
		    "hours, deny_users, deny_hosts, on_reclaim, reclaim_signal, idle_s, "
		    "rules, package, name, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
		    "?, ?, ?, ?, ?)",
		    v, 15, NULL, NULL, NULL, err, errlen);
	else
		rc = sw_db_exec(
		    db,
		    "UPDATE products SET exe = ?, version = ?, licenses = ?, enforce = ?, "
		    "build_id = ?, hours = ?, deny_users = ?, deny_hosts = ?, "
		    "on_reclaim = ?, reclaim_signal = ?, idle_s = ?, rules = ?, package = ? "
		    "WHERE name = ?",
		    v, 14, NULL, NULL, NULL, err, errlen);
	free(rules);
	return rc;
}

static void on_pushed(const struct sw_http_result *res, void *arg)
{
	char *url = arg;

	if (res->status != 202)
		sw_info("%s: not told of the new configuration now (%s); it asks on its own poll",
			url, res->status ? "refused" : res->error);
	free(url);
}

/* The component manager pushes a changed configuration (products, groups): each
 * metering server is told to fetch it now, rather than at its next poll. A server that
 * is away learns it from its poll when it is back; nobody waits for these calls. */
void metering_config_changed(struct server *s)
{
	json_t *urls, *names, *v;
	size_t i;

	urls = metering_meter_urls(s, &names);
	json_array_foreach(urls, i, v)
	{
		char *url = NULL;

		if (asprintf(&url, "%s/v1/config/refresh", json_string_value(v)) < 0)
			continue;
		if (sw_http_client_request_to(s->agents,
					      json_string_value(json_array_get(names, i)), "POST",
					      url, "{}", 2, PUSH_TIMEOUT_MS, on_pushed, url))
			free(url);
	}
	json_decref(urls);
	json_decref(names);
}

/* Agents fetch the products again too (a heartbeat's reply carries the version). */
static void products_changed(struct server *s)
{
	s->products_version++;
	metering_config_changed(s);
}

/* An administrator's look at, or change to, the products and exclusions: on the write
 * queue, whole, so it sees every change asked before it and none is half seen. */
enum product_kind { PRODUCTS_LIST, PRODUCT_ADD, PRODUCT_SET, PRODUCT_DELETE, EXCLUDE, INCLUDE };

struct product_job {
	enum product_kind kind;
	struct sw_http_req *req;
	json_t *body; /* PRODUCT_ADD, PRODUCT_SET: the request's fields */
	struct sw_product p;
	char exe[256]; /* EXCLUDE, INCLUDE */
	json_t *out;   /* the reply, built off the loop */
	int rc;
	char err[256];
};

struct current {
	int found;
	struct sw_product p;
};

static int read_current(void *arg, int ncols, const struct sw_db_val *row)
{
	struct current *c = arg;

	c->found = 1;
	product_read(&c->p, row);
	return 0;
}

static int products_list(struct sw_db *db, struct product_job *w)
{
	json_t *arr = products_load_db(db, w->err, sizeof(w->err)), *excluded = json_array();

	if (!arr || sw_db_exec(db, "SELECT exe FROM excluded_programs ORDER BY exe", NULL, 0,
			       excluded_row, excluded, NULL, w->err, sizeof(w->err))) {
		json_decref(arr);
		json_decref(excluded);
		return SW_EIO;
	}
	w->out = json_pack("{so so}", "products", arr, "excluded", excluded);
	return 0;
}

static int one_row(void *arg, int ncols, const struct sw_db_val *row)
{
	*(int *)arg = 1;
	return 0;
}

/* Every group a rule names is one the site has. */
static int rule_groups_exist(struct sw_db *db, const struct sw_product *p, char *err, size_t errlen)
{
	for (size_t i = 0; i < p->nrules; i++) {
		struct sw_db_val q[] = {SW_DB_TEXT(p->rules[i].name)};
		int found = 0, rc;

		if (p->rules[i].kind == SW_RULE_BORROW || p->rules[i].target != SW_TARGET_GROUP)
			continue;
		if ((rc = sw_db_exec(db, "SELECT name FROM groups WHERE name = ?", q, 1, one_row,
				     &found, NULL, err, errlen)))
			return rc;
		if (!found) {
			sw_seterr(err, errlen,
				  "no group %s: make it first with 'siteward group add %s --users "
				  "...'",
				  p->rules[i].name, p->rules[i].name);
			return SW_ENOTFOUND;
		}
	}
	return 0;
}

static int product_add(struct sw_db *db, struct product_job *w)
{
	int rc = product_update(&w->p, w->body, 1, w->err, sizeof(w->err));

	if (!rc)
		rc = rule_groups_exist(db, &w->p, w->err, sizeof(w->err));
	if (!rc)
		rc = product_store(db, &w->p, 1, w->err, sizeof(w->err));
	if (rc == SW_EEXIST && !strstr(w->err, "already meters"))
		snprintf(w->err, sizeof(w->err),
			 "a product named '%s' exists; change it with 'product set'", w->p.name);
	return rc;
}

static int product_set(struct sw_db *db, struct product_job *w)
{
	struct current c = {0};
	struct sw_db_val q[] = {SW_DB_TEXT(w->p.name)};
	int rc;

	rc = sw_db_exec(db, "SELECT " PRODUCT_COLUMNS " FROM products WHERE name = ?", q, 1,
			read_current, &c, NULL, w->err, sizeof(w->err));
	if (!rc && !c.found) {
		snprintf(w->err, sizeof(w->err), "no product named '%s'", w->p.name);
		rc = SW_ENOTFOUND;
	}
	if (!rc)
		rc = product_update(&c.p, w->body, 0, w->err, sizeof(w->err));
	if (!rc)
		rc = rule_groups_exist(db, &c.p, w->err, sizeof(w->err));
	if (!rc)
		rc = product_store(db, &c.p, 0, w->err, sizeof(w->err));
	if (!rc)
		w->p = c.p;
	return rc;
}

static int product_delete(struct sw_db *db, struct product_job *w)
{
	struct sw_db_val p[] = {SW_DB_TEXT(w->p.name)};
	int64_t changes = 0;
	int rc;

	rc = sw_db_exec(db, "DELETE FROM products WHERE name = ?", p, 1, NULL, NULL, &changes,
			w->err, sizeof(w->err));
	if (!rc && changes == 0) {
		snprintf(w->err, sizeof(w->err), "no product named '%s'", w->p.name);
		rc = SW_ENOTFOUND;
	}
	return rc;
}

static int exclusion_set(struct sw_db *db, struct product_job *w)
{
	int64_t count = 0;
	int rc;

	if (w->kind == INCLUDE) {
		struct sw_db_val p[] = {SW_DB_TEXT(w->exe)};
		return sw_db_exec(db, "DELETE FROM excluded_programs WHERE exe = ?", p, 1, NULL,
				  NULL, NULL, w->err, sizeof(w->err));
	}
	rc = sw_db_exec(db, "SELECT COUNT(*) FROM excluded_programs", NULL, 0, sw_db_int_row,
			&count, NULL, w->err, sizeof(w->err));
	if (!rc && count >= 10000) {
		snprintf(w->err, sizeof(w->err), "at most 10000 excluded programs");
		return SW_EEXIST;
	}
	struct sw_db_val p[] = {SW_DB_TEXT(w->exe), SW_DB_INT(sw_now_ms())};
	if (!rc)
		rc = sw_db_exec(db,
				"INSERT INTO excluded_programs (exe, added_at) VALUES (?, ?) "
				"ON CONFLICT (exe) DO NOTHING",
				p, 2, NULL, NULL, NULL, w->err, sizeof(w->err));
	return rc;
}

static void product_run(struct sw_db *db, void *arg)
{
	struct product_job *w = arg;

	switch (w->kind) {
	case PRODUCTS_LIST: w->rc = products_list(db, w); break;
	case PRODUCT_ADD: w->rc = product_add(db, w); break;
	case PRODUCT_SET: w->rc = product_set(db, w); break;
	case PRODUCT_DELETE: w->rc = product_delete(db, w); break;
	case EXCLUDE:
	case INCLUDE: w->rc = exclusion_set(db, w); break;
	}
}

static void product_done(struct server *s, void *arg)
{
	struct product_job *w = arg;

	if (w->rc) {
		sw_http_reply_error(w->req, sw_http_status(w->rc), "%s", w->err);
		goto out;
	}
	if (w->kind != PRODUCTS_LIST)
		products_changed(s);
	switch (w->kind) {
	case PRODUCTS_LIST:
		sw_http_reply_json(w->req, 200, w->out);
		w->out = NULL;
		break;
	case PRODUCT_ADD:
		sw_info("product %s added: %s, %lld licenses%s", w->p.name, w->p.exe,
			(long long)w->p.licenses, w->p.enforce ? ", enforced" : "");
		/* fall through */
	case PRODUCT_SET: sw_http_reply_json(w->req, 200, sw_product_json(&w->p)); break;
	case PRODUCT_DELETE:
		sw_http_reply_json(w->req, 200,
				   json_pack("{ss sb}", "name", w->p.name, "removed", 1));
		break;
	case EXCLUDE:
	case INCLUDE:
		sw_http_reply_json(
		    w->req, 200,
		    json_pack("{ss sb}", "exe", w->exe, "excluded", w->kind == EXCLUDE));
		break;
	}
out:
	json_decref(w->body);
	json_decref(w->out);
	free(w);
}

/* Queues `kind` for `req`, taking `body`; replies itself when it cannot. */
static void product_submit(struct server *s, struct sw_http_req *req, enum product_kind kind,
			   const char *name, const char *exe, json_t *body)
{
	struct product_job *w = calloc(1, sizeof(*w));

	if (!w) {
		json_decref(body);
		sw_http_reply_error(req, 500, "out of memory");
		return;
	}
	w->kind = kind;
	w->req = req;
	w->body = body;
	sw_product_init(&w->p);
	snprintf(w->p.name, sizeof(w->p.name), "%s", name ? name : "");
	snprintf(w->exe, sizeof(w->exe), "%s", exe ? exe : "");
	if (dbq_push(s, DBQ_SLOW_MS, product_run, product_done, w)) {
		json_decref(body);
		free(w);
		sw_http_reply_error(req, 500, "out of memory");
	}
}

void metering_get_products(struct sw_http_req *req, void *arg)
{
	product_submit(arg, req, PRODUCTS_LIST, NULL, NULL, NULL);
}

void metering_post_product(struct sw_http_req *req, void *arg)
{
	const char *name;
	char err[256];
	json_t *j = sw_http_req_json(req);

	if (!j)
		return;
	if (sw_json_str(j, "name", 63, 1, &name, err, sizeof(err))) {
		sw_http_reply_error(req, 400, "%s", err);
		json_decref(j);
		return;
	}
	if (!sw_name_valid(name)) {
		sw_http_reply_error(req, 400,
				    "product name must be 1-63 letters, digits, '.', '_', '-'");
		json_decref(j);
		return;
	}
	product_submit(arg, req, PRODUCT_ADD, name, NULL, j);
}

void metering_put_product(struct sw_http_req *req, void *arg)
{
	const char *name = sw_http_req_tail(req);
	json_t *j;

	if (!sw_name_valid(name)) {
		sw_http_reply_error(req, 400, "'%s' is not a product name", name);
		return;
	}
	if ((j = sw_http_req_json(req)))
		product_submit(arg, req, PRODUCT_SET, name, NULL, j);
}

void metering_delete_product(struct sw_http_req *req, void *arg)
{
	const char *name = sw_http_req_tail(req);

	if (!sw_name_valid(name)) {
		sw_http_reply_error(req, 400, "'%s' is not a product name", name);
		return;
	}
	product_submit(arg, req, PRODUCT_DELETE, name, NULL, NULL);
}

/* PUT adds a program to the passive-metering exclusions, DELETE takes it off. */
void metering_exclude(struct sw_http_req *req, void *arg)
{
	const char *exe = sw_http_req_tail(req);
	int add = strcmp(sw_http_req_method(req), "PUT") == 0;

	if (!sw_product_exe_valid(exe)) {
		sw_http_reply_error(req, 400, "'%s' is not a program's file name", exe);
		return;
	}
	product_submit(arg, req, add ? EXCLUDE : INCLUDE, NULL, exe, NULL);
}

struct meters_ctx {
	json_t *names; /* systems with the software-metering role, by name */
};

static int by_string(const void *a, const void *b)
{
	return strcmp(json_string_value(*(json_t *const *)a),
		      json_string_value(*(json_t *const *)b));
}

/* Where collect_meters puts what it finds. */
struct meters {
	json_t *current; /* systems with the role */
	json_t *former;	 /* NULL, or systems without it whose license server may still grant */
};

/* A system with the metering role; or one without it whose agent last reported its
 * meter service with a process (it has not stopped it yet, or cannot). */
static void collect_meters(const char *key, void *value, void *arg)
{
	struct system *sys = value;
	struct meters *m = arg;
	json_t *svc;
	size_t i;

	if (registry_has_role(sys, "software-metering")) {
		json_array_append_new(m->current, json_string(sys->name));
		return;
	}
	if (!m->former)
		return;
	json_array_foreach(sys->services, i, svc)
	{
		const char *name = json_string_value(json_object_get(svc, "name"));
		enum sw_svc_state st =
		    sw_svc_state_parse(json_string_value(json_object_get(svc, "state")));

		if (name && strcmp(name, "meter") == 0 && st != SW_SVC_UNKNOWN &&
		    st != SW_SVC_STOPPED && st != SW_SVC_FAILED) {
			json_array_append_new(m->former, json_string(sys->name));
			return;
		}
	}
}

/* Metering systems in name order: the order in which licenses are shared out; and, into
 * `former` when not NULL, the systems that lost the role but may still be granting. */
static json_t *meter_systems(struct server *s, json_t *former)
{
	json_t *arr = json_array(), *sorted = json_array();
	struct meters m = {arr, former};
	json_t **items;
	size_t n;

	sw_strmap_each(s->systems, collect_meters, &m);
	n = json_array_size(arr);
	items = calloc(n ? n : 1, sizeof(*items));
	for (size_t i = 0; items && i < n; i++)
		items[i] = json_array_get(arr, i);
	if (items)
		qsort(items, n, sizeof(*items), by_string);
	for (size_t i = 0; items && i < n; i++)
		json_array_append(sorted, items[i]);
	free(items);
	json_decref(arr);
	return sorted;
}

/* The URLs of every metering server, for clients to fail over among. Heartbeats
 * carry it, so it is computed again only when the registry's generation has moved on
 * (roles or addresses changed). */
json_t *metering_meter_urls(struct server *s, json_t **names_out)
{
	json_t *names, *urls, *systems, *v;
	size_t i;

	if (!s->meter_urls || s->meter_urls_gen != registry_generation(s)) {
		json_decref(s->meter_urls);
		json_decref(s->meter_names);
		s->meter_urls_gen = registry_generation(s);
		systems = meter_systems(s, NULL);
		urls = json_array();
		names = json_array();
		json_array_foreach(systems, i, v)
		{
			struct system *sys = sw_strmap_get(s->systems, json_string_value(v));
			if (sys && sys->meter_address[0]) {
				json_array_append_new(
				    urls, json_sprintf("https://%s", sys->meter_address));
				json_array_append_new(names, json_string(sys->name));
			}
		}
		json_decref(systems);
		s->meter_urls = urls;
		s->meter_names = names;
	}
	if (names_out)
		*names_out = json_incref(s->meter_names);
	return json_incref(s->meter_urls);
}

static int share_row(void *arg, int ncols, const struct sw_db_val *row)
{
	struct share *sh = arg;

	(void)ncols;
	sh->applied = row[0].i;
	sh->in_use = row[1].i;
	sh->waiting = row[2].i;
	sh->assigned = row[3].i;
	return 0;
}

/* Whether a metering server's clients can reach it: it has polled within two of its
 * polls (or, none since the site server started, it started as long ago), and its
 * agent does not report its service as stopped, stopping, failed or stuck. */
static int meter_live(struct server *s, const char *name, int64_t now)
{
	struct system *sys = sw_strmap_get(s->systems, name);
	json_t *svc;
	size_t i;

	if (!sys || now - (sys->meter_seen_ms ? sys->meter_seen_ms : s->started_ms) >
			2 * (int64_t)s->meter_poll_ms + 1000)
		return 0;
	json_array_foreach(sys->services, i, svc)
	{
		const char *role = json_string_value(json_object_get(svc, "role"));
		enum sw_svc_state st =
		    sw_svc_state_parse(json_string_value(json_object_get(svc, "state")));
		if (role && strcmp(role, "software-metering") == 0 && st != SW_SVC_UNKNOWN &&
		    st != SW_SVC_RUNNING && st != SW_SVC_STARTING)
			return 0;
	}
	return 1;
}

static int share_load(struct sw_db *db, const char *system, const char *product, struct share *sh,
		      char *err, size_t errlen)
{
	struct sw_db_val k[] = {SW_DB_TEXT(system), SW_DB_TEXT(product)};

	return sw_db_exec(db,
			  "SELECT applied, in_use, waiting, assigned FROM allotments "
			  "WHERE system = ? AND product = ?",
			  k, 2, share_row, sh, NULL, err, errlen);
}

/* A metering server's poll: what it reported, stored, and the shares worked out from
 * it, by the write queue; what the loop knows (who has the role, who is live) is taken
 * before, the reply built after. */
struct config {
	struct sw_http_req *req;
	json_t *names, *former, *reports, *products, *groups;
	size_t me;
	int *live; /* per name: meter_live() as the poll came */
	int rc;
	char err[256];
};

/* What a metering server reported of one product (its "products" object), stored
 * before anything is computed from it. */
static int store_report(struct sw_db *db, const char *meter, const char *product, const json_t *rep,
			char *err, size_t errlen)
{
	int64_t applied = 0, in_use = 0, waiting = 0;
	int rc;

	if ((rc = sw_json_int(rep, "allotment", 0, 100000000, 1, &applied, err, errlen)) ||
	    (rc = sw_json_int(rep, "in_use", 0, 100000000, 1, &in_use, err, errlen)) ||
	    (rc = sw_json_int(rep, "waiting", 0, 100000000, 1, &waiting, err, errlen)))
		return rc;
	struct sw_db_val u[] = {SW_DB_INT(applied),	SW_DB_INT(in_use), SW_DB_INT(waiting),
				SW_DB_INT(sw_now_ms()), SW_DB_TEXT(meter), SW_DB_TEXT(product)};
	int64_t changes = 0;
	rc =
	    sw_db_exec(db,
		       "UPDATE allotments SET applied = ?, in_use = ?, waiting = ?, updated_at = ? "
		       "WHERE system = ? AND product = ?",
		       u, 6, NULL, NULL, &changes, err, errlen);
	if (!rc && changes == 0) {
		struct sw_db_val i[] = {SW_DB_TEXT(meter),  SW_DB_TEXT(product),
					SW_DB_INT(applied), SW_DB_INT(in_use),
					SW_DB_INT(waiting), SW_DB_INT(sw_now_ms())};
		rc =
		    sw_db_exec(db,
			       "INSERT INTO allotments (system, product, applied, in_use, waiting, "
			       "updated_at) VALUES (?, ?, ?, ?, ?, ?)",
			       i, 6, NULL, NULL, NULL, err, errlen);
	}
	return rc;
}

/* The share of `product` for the polling server, as share.h rules, stored as its
 * assignment. */
static int64_t share_for(struct sw_db *db, struct config *c, const char *product, int64_t total,
			 int *rc)
{
	size_t n = json_array_size(c->names), nf = json_array_size(c->former);
	struct share *sh = calloc(n + nf + 1, sizeof(*sh));
	int64_t out = 0;
	const char *me = json_string_value(json_array_get(c->names, c->me));

	*rc = sh ? 0 : SW_ENOMEM;
	for (size_t i = 0; !*rc && i < n + nf; i++) {
		const char *name = json_string_value(i < n ? json_array_get(c->names, i)
							   : json_array_get(c->former, i - n));
		*rc = share_load(db, name, product, &sh[i], c->err, sizeof(c->err));
		sh[i].live = i < n && c->live[i];
	}
	if (*rc)
		goto out;
	out = share_of(sh, n, sh + n, nf, c->me, total);
	struct sw_db_val u[] = {SW_DB_INT(out), SW_DB_TEXT(me), SW_DB_TEXT(product)};
	int64_t changes = 0;
	*rc = sw_db_exec(db, "UPDATE allotments SET assigned = ? WHERE system = ? AND product = ?",
			 u, 3, NULL, NULL, &changes, c->err, sizeof(c->err));
	if (!*rc && changes == 0) {
		struct sw_db_val i[] = {SW_DB_TEXT(me), SW_DB_TEXT(product), SW_DB_INT(out),
					SW_DB_INT(sw_now_ms())};
		*rc = sw_db_exec(db,
				 "INSERT INTO allotments (system, product, assigned, updated_at) "
				 "VALUES (?, ?, ?, ?)",
				 i, 4, NULL, NULL, NULL, c->err, sizeof(c->err));
	}
out:
	free(sh);
	return out;
}

/* One transaction: the products and groups as they stand, the reports, and the shares
 * computed from them. */
static void config_run(struct sw_db *db, void *arg)
{
	struct config *c = arg;
	const char *me = json_string_value(json_array_get(c->names, c->me));
	json_t *p;
	size_t i;

	if ((c->rc = sw_db_begin(db, c->err, sizeof(c->err))))
		return;
	if (!(c->products = products_load_db(db, c->err, sizeof(c->err))) ||
	    !(c->groups = groups_read(db, NULL, 0, c->err, sizeof(c->err))))
		c->rc = SW_EDB;
	json_array_foreach(c->products, i, p)
	{
		const char *name = json_string_value(json_object_get(p, "name"));
		json_t *rep = json_object_get(c->reports, name), *r;
		int64_t open = json_integer_value(json_object_get(p, "licenses"));
		size_t k;

		if (c->rc)
			break;
		/* Each rule is a pool of its own, shared among the metering servers by the
		 * same rule as the licenses everyone draws from (the count less the
		 * reservations), so no pool's shares ever sum past its count. */
		json_array_foreach(json_object_get(p, "rules"), k, r)
		{
			struct sw_product_rule rule;
			struct sw_product head;
			char key[SW_RULE_KEY_MAX];

			if (c->rc ||
			    (c->rc = sw_product_rule_parse(r, &rule, c->err, sizeof(c->err))))
				break;
			snprintf(head.name, sizeof(head.name), "%s", name);
			sw_product_rule_key(&head, &rule, key, sizeof(key));
			if (rule.kind == SW_RULE_RESERVE)
				open -= rule.count;
			if ((rep = json_object_get(c->reports, key)) &&
			    (c->rc = store_report(db, me, key, rep, c->err, sizeof(c->err))))
				break;
			json_object_set_new(
			    r, "allotment",
			    json_integer(share_for(db, c, key, rule.count, &c->rc)));
		}
		rep = json_object_get(c->reports, name);
		if (c->rc ||
		    (rep && (c->rc = store_report(db, me, name, rep, c->err, sizeof(c->err)))))
			break;
		json_object_set_new(
		    p, "allotment",
		    json_integer(share_for(db, c, name, open < 0 ? 0 : open, &c->rc)));
	}
	if (!c->rc)
		c->rc = sw_db_commit(db, c->err, sizeof(c->err));
	if (c->rc)
		sw_db_rollback(db);
}

static void config_free(struct config *c)
{
	json_decref(c->names);
	json_decref(c->former);
	json_decref(c->reports);
	json_decref(c->products);
	json_decref(c->groups);
	free(c->live);
	free(c);
}

static void config_done(struct server *s, void *arg)
{
	struct config *c = arg;
	json_t *revoked;

	if (c->rc) {
		sw_http_reply_error(c->req, c->rc == SW_EINVAL ? 400 : 503, "%s", c->err);
		config_free(c);
		return;
	}
	/* Metering servers refuse the certificates of removed systems too. */
	revoked = registry_revoked_list(s);
	sw_http_reply_json(c->req, 200,
			   json_pack("{sO si si so si sO}", "products", c->products, "lease_ttl_ms",
				     (int)s->lease_ttl_ms, "meters", (int)json_array_size(c->names),
				     "revoked", revoked, "poll_ms", (int)s->meter_poll_ms, "groups",
				     c->groups));
	config_free(c);
}

static void on_revocation_pushed(const struct sw_http_result *res, void *arg)
{
	char *url = arg;

	if (res->status != 202)
		sw_warn("%s: not told of a revocation now (%s); it learns it at its next poll", url,
			res->status ? "refused" : res->error);
	free(url);
}

/* A removed system must be refused by every metering server at once, not at its next
 * poll: the push that has it fetch its configuration carries the serials just revoked,
 * which it refuses from the moment the push arrives. One that is away learns them from
 * its poll; one of an older version ignores the body and fetches its configuration,
 * which lists them. Nobody waits for these calls. */
void metering_revoked(struct server *s, json_t *serials)
{
	json_t *urls, *names, *msg, *v;
	char *body;
	size_t i;

	if (!s->agents || s->stopping || !json_array_size(serials))
		return;
	msg = json_pack("{sO}", "revoked", serials);
	body = msg ? sw_json_dump(msg) : NULL;
	json_decref(msg);
	if (!body)
		return;
	urls = metering_meter_urls(s, &names);
	json_array_foreach(urls, i, v)
	{
		char *url = NULL;

		if (asprintf(&url, "%s/v1/config/refresh", json_string_value(v)) < 0)
			continue;
		if (sw_http_client_request_to(
			s->agents, json_string_value(json_array_get(names, i)), "POST", url, body,
			strlen(body), PUSH_TIMEOUT_MS, on_revocation_pushed, url))
			free(url);
	}
	json_decref(urls);
	json_decref(names);
	free(body);
}

/* GET, or POST with what the metering server has of each product; the answer holds
 * the products, each with this server's share of its licenses. */
void metering_get_config(struct sw_http_req *req, void *arg)
{
	struct server *s = arg;
	const char *me = sw_http_req_identity(req)->cn;
	struct system *sys_me = sw_strmap_get(s->systems, me);
	struct config *c = calloc(1, sizeof(*c));
	json_t *body = NULL, *v;
	size_t i, n;

	if (!c) {
		sw_http_reply_error(req, 500, "out of memory");
		return;
	}
	c->req = req;
	c->former = json_array();
	c->names = meter_systems(s, c->former);
	n = json_array_size(c->names);
	c->me = n;
	json_array_foreach(c->names, i, v) if (strcmp(json_string_value(v), me) == 0) c->me = i;
	if (c->me == n || !sys_me) {
		sw_http_reply_error(req, 403, "%s does not have the software-metering role", me);
		config_free(c);
		return;
	}
	if (strcmp(sw_http_req_method(req), "POST") == 0 && !(body = sw_http_req_json(req))) {
		config_free(c);
		return;
	}
	c->reports = json_incref(json_object_get(body, "products"));
	json_decref(body);
	if (!(c->live = calloc(n, sizeof(*c->live)))) {
		sw_http_reply_error(req, 500, "out of memory");
		config_free(c);
		return;
	}
	/* the polling server is live: it answers, whatever its agent last said */
	sys_me->meter_seen_ms = sw_mono_ms();
	json_array_foreach(c->names, i, v) c->live[i] =
	    i == c->me || meter_live(s, json_string_value(v), sys_me->meter_seen_ms);
	if (dbq_push(s, DBQ_SLOW_MS, config_run, config_done, c)) {
		sw_http_reply_error(req, 500, "out of memory");
		config_free(c);
	}
}

/* Idempotent by host and record id; times are moved by the uploader's clock error, so a
 * client hours ahead or behind still lands its records where they happened. */
const char *metering_attribute(const struct sw_product *const *v, size_t n, const json_t *r)
{
	const char *product = json_string_value(json_object_get(r, "product"));
	const char *bid = json_string_value(json_object_get(r, "build_id"));
	const char *version = json_string_value(json_object_get(r, "version"));
	const char *exe = json_string_value(json_object_get(r, "exe"));
	struct sw_program prog = {exe ? exe : "", bid ? bid : "", version ? version : ""};
	const struct sw_product *d;
	unsigned need;

	if (product)
		return product;
	/* as the license servers choose; what the record does not say is not known */
	d = sw_product_match(v, n, &prog, &need);
	return d ? d->name : NULL;
}

/* A batch of usage records, checked on the loop, stored by the write queue. */
struct ingest {
	struct sw_http_req *req;
	json_t *j;
	struct usage_rec *recs; /* strings borrowed from j */
	size_t n;
	int64_t now, skew, cutoff;
	char from[64];
	int64_t accepted, dup, too_old;
	int rc;
	char err[256];
};

static void ingest_run(struct sw_db *db, void *arg)
{
	struct ingest *in = arg;
	json_t *records = json_object_get(in->j, "records");
	/* Runs recorded offline do not know their product: the table does. */
	struct products products;

	if (products_load(db, &products, in->err, sizeof(in->err))) {
		in->rc = SW_EDB;
		return;
	}
	in->rc = sw_db_begin(db, in->err, sizeof(in->err));
	for (size_t i = 0; i < in->n && !in->rc; i++) {
		const struct usage_rec *u = &in->recs[i];
		int64_t changes = 0;

		/* Days before the detail period are summarised and closed. */
		if (u->start < in->cutoff) {
			in->too_old++;
			continue;
		}
		struct sw_db_val p[] = {
		    SW_DB_TEXT(u->id),
		    SW_DB_TEXT(metering_attribute((const struct sw_product *const *)products.v,
						  products.n, json_array_get(records, i))),
		    SW_DB_TEXT(u->exe),
		    SW_DB_TEXT(u->user),
		    SW_DB_TEXT(u->host),
		    SW_DB_INT(u->start),
		    SW_DB_INT(u->end),
		    SW_DB_TEXT(u->kind),
		    SW_DB_INT(u->wait_ms),
		    SW_DB_TEXT(u->source),
		    SW_DB_INT(in->now)};
		/* Ids are the recording machine's: another machine's same id is another run. */
		in->rc = sw_db_exec(
		    db,
		    "INSERT INTO usage (id, product, exe, user_name, host, start_ms, "
		    "end_ms, kind, wait_ms, source, received_at) VALUES "
		    "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (host, id) DO NOTHING",
		    p, 11, NULL, NULL, &changes, in->err, sizeof(in->err));
		if (changes)
			in->accepted++;
		else
			in->dup++;
	}
	if (!in->rc)
		in->rc = sw_db_commit(db, in->err, sizeof(in->err));
	if (in->rc) {
		sw_db_rollback(db);
		in->accepted = in->dup = in->too_old = 0;
	}
	products_free(&products);
}

static void ingest_free(struct ingest *in)
{
	json_decref(in->j);
	free(in->recs);
	free(in);
}

static void ingest_done(struct server *s, void *arg)
{
	struct ingest *in = arg;

	if (in->rc) {
		sw_http_reply_error(in->req, sw_http_status(in->rc), "cannot store usage: %s",
				    in->err);
	} else {
		if (in->too_old)
			sw_warn("usage from %s: %lld records older than the detail period dropped",
				in->from, (long long)in->too_old);
		sw_counter_add(s->mx_usage_records, (uint64_t)in->n);
		if (in->accepted)
			sw_info("usage from %s: %lld records (%lld already had)", in->from,
				(long long)in->accepted, (long long)in->dup);
		sw_http_reply_json(in->req, 200,
				   json_pack("{sI sI sI sI}", "accepted", (json_int_t)in->accepted,
					     "duplicates", (json_int_t)in->dup, "too_old",
					     (json_int_t)in->too_old, "clock_skew_ms",
					     (json_int_t)in->skew));
	}
	ingest_free(in);
}

/*
 * Whether `sys` records its clients' runs: a metering server (or one that was, still
 * sending what it holds) names the host of each client from the client's certificate,
 * so its "meter" records keep the host they name. Every other record is evidence only
 * of the machine that uploaded it.
 */
static int vouches_for_hosts(const struct system *sys, const struct usage_rec *u)
{
	return sys && strcmp(u->source, "meter") == 0 &&
	       (registry_has_role(sys, "software-metering") || sys->meter_address[0]);
}

void metering_post_usage(struct sw_http_req *req, void *arg)
{
	struct server *s = arg;
	const char *from = sw_http_req_identity(req)->cn;
	const struct system *sys = sw_strmap_get(s->systems, from);
	int64_t now = sw_now_ms(), their_now = now;
	json_t *j = sw_http_req_json(req), *records;
	struct ingest *in = NULL;
	char err[256] = "";
	size_t i;
	int rc = 0;

	if (!j)
		return;
	records = json_object_get(j, "records");
	if (sw_json_int(j, "now", 0, USAGE_MAX_MS, 1, &their_now, err, sizeof(err))) {
		rc = SW_EINVAL;
	} else if (!json_is_array(records) || json_array_size(records) > MAX_USAGE_BATCH) {
		snprintf(err, sizeof(err), "records must be an array of at most %d",
			 MAX_USAGE_BATCH);
		rc = SW_EINVAL;
	} else if (!(in = calloc(1, sizeof(*in))) ||
		   !(in->recs = calloc(json_array_size(records) + 1, sizeof(*in->recs)))) {
		free(in);
		json_decref(j);
		sw_http_reply_error(req, 500, "out of memory");
		return;
	}
	if (in) {
		in->req = req;
		in->j = j;
		in->now = now;
		in->skew = usagerec_skew(now, their_now);
		in->cutoff = metering_cutoff(s);
		in->n = json_array_size(records);
		snprintf(in->from, sizeof(in->from), "%s", from);
	}
	/* Check the whole batch before storing any of it. */
	for (i = 0; !rc && i < json_array_size(records); i++) {
		struct usage_rec *u = &in->recs[i];

		rc = usagerec_read(json_array_get(records, i), now, in->skew, u, err, sizeof(err));
		/* A host other than the uploader is not refused but ignored: agents before this
		 * check sent the host as siteward-run wrote it (a name that may be spelt unlike
		 * the certificate's), and refusing would put their whole cache aside. */
		if (!rc && !(u->host && vouches_for_hosts(sys, u)))
			u->host = in->from;
	}
	if (rc) {
		sw_http_reply_error(req, 400, "usage refused: %s", err);
		if (in)
			ingest_free(in);
		else
			json_decref(j);
		return;
	}
	/* Stored off the loop; the license server has its answer once it is durable. */
	if (dbq_push(s, DBQ_SLOW_MS, ingest_run, ingest_done, in)) {
		sw_http_reply_error(req, 500, "out of memory");
		ingest_free(in);
	}
}

/* Per product and day: launches, users, hosts, run time, peak concurrency, denials. */
struct day {
	char product[64];
	int64_t day;
	int64_t launches, denials, run_ms, wait_ms, waits;
	json_t *users, *hosts;
	int64_t *starts, *ends;
	size_t n, cap;
};

struct report {
	struct day *days;
	size_t n, cap;
	struct sw_strmap *index; /* "product\nday" -> position in days + 1 */
};

/* Sums of stored rows: rows stored before times were bounded may hold anything. */
static int64_t add_sat(int64_t a, int64_t b)
{
	int64_t r;

	return __builtin_add_overflow(a, b, &r) ? (b < 0 ? INT64_MIN : INT64_MAX) : r;
}

/* A report over a year reads millions of rows: each finds its day by hash, not by a
 * walk over the days seen so far, which made the report quadratic in days. */
static struct day *day_get(struct report *r, const char *product, int64_t day)
{
	char key[96];
	uintptr_t at;

	size_t n = strlen(product);
	uint64_t v = (uint64_t)day;

	/* the day in hex by hand: this runs for every row, and printf showed in profiles */
	if (n > sizeof(key) - 18)
		n = sizeof(key) - 18;
	memcpy(key, product, n);
	key[n++] = '\n';
	for (int k = 0; k < 16; k++, v >>= 4)
		key[n++] = "0123456789abcdef"[v & 15];
	key[n] = '\0';
	if (!r->index && !(r->index = sw_strmap_new()))
		return NULL;
	if ((at = (uintptr_t)sw_strmap_get(r->index, key)))
		return &r->days[at - 1];
	if (r->n == r->cap) {
		size_t cap = r->cap ? r->cap * 2 : 16;
		struct day *d = realloc(r->days, cap * sizeof(*d));
		if (!d)
			return NULL;
		r->days = d;
		r->cap = cap;
	}
	if (sw_strmap_set(r->index, key, (void *)(uintptr_t)(r->n + 1)))
		return NULL;
	struct day *d = &r->days[r->n++];
	memset(d, 0, sizeof(*d));
	snprintf(d->product, sizeof(d->product), "%s", product);
	d->day = day;
	d->users = json_object();
	d->hosts = json_object();
	return d;
}

static int usage_row(void *arg, int ncols, const struct sw_db_val *row)
{
	struct report *r = arg;
	const char *product = row[0].type == SW_DB_TEXT ? row[0].s : "(unregistered)";
	int64_t start = row[3].i, end = row[4].i;
	struct day *d = day_get(r, product, start / DAY_MS * DAY_MS);

	if (!d)
		return SW_ENOMEM;
	if (strcmp(row[5].s, "denied") == 0) {
		d->denials++;
		return 0;
	}
	d->launches++;
	int64_t ran = 0;
	if (end > start && __builtin_sub_overflow(end, start, &ran))
		ran = INT64_MAX;
	d->run_ms = add_sat(d->run_ms, ran);
	if (row[6].i > 0) {
		d->waits++;
		d->wait_ms = add_sat(d->wait_ms, row[6].i);
	}
	json_object_set_new(d->users, row[1].s, json_true());
	json_object_set_new(d->hosts, row[2].s, json_true());
	if (d->n == d->cap) {
		size_t cap = d->cap ? d->cap * 2 : 64;
		int64_t *s = realloc(d->starts, cap * sizeof(*s)), *e;
		if (!s)
			return SW_ENOMEM;
		d->starts = s;
		e = realloc(d->ends, cap * sizeof(*e));
		if (!e)
			return SW_ENOMEM;
		d->ends = e;
		d->cap = cap;
	}
	d->starts[d->n] = start;
	d->ends[d->n++] = end;
	return 0;
}

/* The most runs at once on the day. */
static int64_t peak(struct day *d)
{
	return usagerec_peak(d->starts, d->ends, d->n);
}

static int licenses_row(void *arg, int ncols, const struct sw_db_val *row)
{
	json_object_set_new(arg, row[0].s, json_integer(row[1].i));
	return 0;
}

static void report_free(struct report *r)
{
	for (size_t i = 0; i < r->n; i++) {
		json_decref(r->days[i].users);
		json_decref(r->days[i].hosts);
		free(r->days[i].starts);
		free(r->days[i].ends);
	}
	free(r->days);
	sw_strmap_free(r->index);
	memset(r, 0, sizeof(*r));
}

/*
 * Runs with from <= start < to, for one product or all (NULL), in no order: each finds
 * its day by hash and the peak sorts a day's times. `all_detail` says the range holds
 * all or most of the detail (a report over the whole detail period): the table is then
 * read through, in its own order, since walking the start_ms index over most of it
 * fetches every row out of order (2.4 s against 0.4 s for 3.65 million rows). The
 * unary + keeps the planner off the index; a shorter range uses it.
 */
static int report_detail(struct sw_db *db, int64_t from, int64_t to, const char *product,
			 int all_detail, struct report *r, char *err, size_t errlen)
{
	struct sw_db_val p[] = {SW_DB_INT(from), SW_DB_INT(to), SW_DB_TEXT(product),
				SW_DB_TEXT(product)};

	return sw_db_exec(db,
			  all_detail
			      ? "SELECT product, user_name, host, start_ms, end_ms, kind, "
				"wait_ms FROM usage WHERE +start_ms >= ? AND +start_ms < ? "
				"AND (CAST(? AS TEXT) IS NULL OR product = ?)"
			      : "SELECT product, user_name, host, start_ms, end_ms, kind, "
				"wait_ms FROM usage WHERE start_ms >= ? AND start_ms < ? AND "
				"(CAST(? AS TEXT) IS NULL OR product = ?)",
			  p, 4, usage_row, r, NULL, err, errlen);
}

/* The first moment whose usage is still kept in detail. */
int64_t metering_cutoff(const struct server *s)
{
	return (sw_now_ms() / DAY_MS - (int64_t)s->detail_days) * DAY_MS;
}

static json_t *day_json(struct day *d, json_t *licenses)
{
	return json_pack(
	    "{ss sI sI sI sI sI sI sI sI sI sO*}", "product", d->product, "day", (json_int_t)d->day,
	    "launches", (json_int_t)d->launches, "users", (json_int_t)json_object_size(d->users),
	    "hosts", (json_int_t)json_object_size(d->hosts), "run_time_ms", (json_int_t)d->run_ms,
	    "peak_concurrent", (json_int_t)peak(d), "denials", (json_int_t)d->denials,
	    "queue_waits", (json_int_t)d->waits, "queue_wait_ms", (json_int_t)d->wait_ms,
	    "licenses", json_object_get(licenses, d->product));
}

static int daily_row(void *arg, int ncols, const struct sw_db_val *row)
{
	json_t *out = ((json_t **)arg)[0], *licenses = ((json_t **)arg)[1];

	json_array_append_new(
	    out, json_pack("{ss sI sI sI sI sI sI sI sI sI sO* sb}", "product", row[0].s, "day",
			   (json_int_t)row[1].i, "launches", (json_int_t)row[2].i, "users",
			   (json_int_t)row[3].i, "hosts", (json_int_t)row[4].i, "run_time_ms",
			   (json_int_t)row[5].i, "peak_concurrent", (json_int_t)row[6].i, "denials",
			   (json_int_t)row[7].i, "queue_waits", (json_int_t)row[8].i,
			   "queue_wait_ms", (json_int_t)row[9].i, "licenses",
			   json_object_get(licenses, row[0].s), "summarised", 1));
	return 0;
}

#define DAILY_COLUMNS                                                                              \
	"product, day, launches, users, hosts, run_time_ms, peak_concurrent, denials, "            \
	"queue_waits, queue_wait_ms"

/* A usage report, read on the thread pool through a connection of its own: a report
 * over a large site reads many rows, and no heartbeat waits for it. */
struct usage_report {
	struct sw_http_req *req;
	const struct sw_db_opts *opts;
	char product[64];
	int64_t since, cutoff;
	json_t *out, *licenses;
	struct report r;
	int rc;
	char err[256];
};

/* Whether reading from `since` reads most of the detail kept: it spans more than half
 * the time from the oldest detail to now (the oldest found through the index). */
static int most_detail(struct sw_db *db, int64_t since)
{
	int64_t oldest = INT64_MAX, now = sw_now_ms();

	if (sw_db_exec(db, "SELECT COALESCE(MIN(start_ms), 0) FROM usage", NULL, 0, sw_db_int_row,
		       &oldest, NULL, NULL, 0))
		return 0;
	return since <= oldest || (now - since) >= (now - oldest) / 2;
}

static void usage_run(void *arg)
{
	struct usage_report *u = arg;
	const char *product = u->product[0] ? u->product : NULL;
	struct sw_db *db = NULL;

	if ((u->rc = sw_db_open(u->opts, &db, u->err, sizeof(u->err))))
		return;
	u->rc = sw_db_exec(db, "SELECT name, licenses FROM products", NULL, 0, licenses_row,
			   u->licenses, NULL, u->err, sizeof(u->err));
	/* Summarised days first (they are the older ones), then the detail. */
	struct sw_db_val p[] = {SW_DB_INT(u->since / DAY_MS * DAY_MS), SW_DB_TEXT(product),
				SW_DB_TEXT(product)};
	json_t *ctx[2] = {u->out, u->licenses};
	if (!u->rc)
		u->rc = sw_db_exec(db,
				   "SELECT " DAILY_COLUMNS " FROM usage_daily WHERE day >= ? AND "
				   "(CAST(? AS TEXT) IS NULL OR product = ?) ORDER BY day, product",
				   p, 3, daily_row, ctx, NULL, u->err, sizeof(u->err));
	if (!u->rc)
		u->rc = report_detail(db, u->since, INT64_MAX, product, most_detail(db, u->since),
				      &u->r, u->err, sizeof(u->err));
	for (size_t i = 0; !u->rc && i < u->r.n; i++)
		json_array_append_new(u->out, day_json(&u->r.days[i], u->licenses));
	sw_db_close(db);
}

static void usage_done(void *arg, int timed_out)
{
	struct usage_report *u = arg;

	if (timed_out)
		sw_http_reply_error(u->req, 504,
				    "the usage report took over %d s; ask for less (a product, a "
				    "later --since)",
				    USAGE_REPORT_MS / 1000);
	else if (u->rc)
		sw_http_reply_error(u->req, sw_http_status(u->rc), "%s", u->err);
	else
		sw_http_reply_json(
		    u->req, 200,
		    json_pack("{sO sI}", "usage", u->out, "detail_from", (json_int_t)u->cutoff));
}

static void usage_free(void *arg)
{
	struct usage_report *u = arg;

	report_free(&u->r);
	json_decref(u->out);
	json_decref(u->licenses);
	free(u);
}

void metering_get_usage(struct sw_http_req *req, void *arg)
{
	struct server *s = arg;
	const char *product = sw_http_req_query(req, "product");
	const char *since_arg = sw_http_req_query(req, "since");
	struct usage_report *u;
	int64_t since = 0;

	if (since_arg && sw_int_parse(since_arg, 0, INT64_MAX, &since)) {
		sw_http_reply_error(req, 400, "since must be milliseconds since the epoch");
		return;
	}
	if (product && !sw_name_valid(product)) {
		sw_http_reply_error(req, 400, "'%s' is not a product name", product);
		return;
	}
	if (!(u = calloc(1, sizeof(*u)))) {
		sw_http_reply_error(req, 500, "out of memory");
		return;
	}
	u->req = req;
	u->opts = &s->db_opts;
	snprintf(u->product, sizeof(u->product), "%s", product ? product : "");
	u->since = since;
	u->cutoff = metering_cutoff(s);
	u->out = json_array();
	u->licenses = json_object();
	if (sw_work_start(s->loop, USAGE_REPORT_MS, usage_run, usage_done, usage_free, u)) {
		sw_http_reply_error(req, 503, "cannot start the usage report; try again");
		usage_free(u);
	}
}

struct daily {
	int found;
	int64_t v[8];
};

static int read_daily(void *arg, int ncols, const struct sw_db_val *row)
{
	struct daily *d = arg;

	d->found = 1;
	for (int i = 0; i < 8; i++)
		d->v[i] = row[i].i;
	return 0;
}

/* Condenses detail older than the detail period into one row per product and day, in
 * one transaction with the deletion of that detail: nothing is counted twice or lost. */
/* Summarising, on the write queue: it reads and rewrites the whole detail period. */
struct summary {
	int64_t cutoff, deleted;
	unsigned detail_days;
	size_t days;
	int rc;
	char err[256];
};

static void summarize_run(struct sw_db *db, void *arg)
{
	struct summary *m = arg;
	int64_t cutoff = m->cutoff, deleted = 0;
	struct report r = {0};
	char *err = m->err;
	int rc;

	rc = report_detail(db, 0, cutoff, NULL, 0, &r, err, sizeof(m->err));
	if (rc || r.n == 0)
		goto out;
	rc = sw_db_begin(db, err, sizeof(m->err));
	for (size_t i = 0; i < r.n && !rc; i++) {
		struct day *d = &r.days[i];
		struct daily old = {0};
		int64_t v[8] = {d->launches,
				(int64_t)json_object_size(d->users),
				(int64_t)json_object_size(d->hosts),
				d->run_ms,
				peak(d),
				d->denials,
				d->waits,
				d->wait_ms};
		struct sw_db_val key[] = {SW_DB_TEXT(d->product), SW_DB_INT(d->day)};

		/* a day summarised before (the detail period was shortened since) adds up;
		 * distinct users and hosts and the peak can then only be bounded below */
		rc = sw_db_exec(db,
				"SELECT launches, users, hosts, run_time_ms, peak_concurrent, "
				"denials, queue_waits, queue_wait_ms FROM usage_daily WHERE "
				"product = ? AND day = ?",
				key, 2, read_daily, &old, NULL, err, sizeof(m->err));
		if (!rc && old.found) {
			for (int k = 0; k < 8; k++)
				v[k] = (k == 1 || k == 2 || k == 4)
					   ? (v[k] > old.v[k] ? v[k] : old.v[k])
					   : add_sat(v[k], old.v[k]);
			rc = sw_db_exec(db, "DELETE FROM usage_daily WHERE product = ? AND day = ?",
					key, 2, NULL, NULL, NULL, err, sizeof(m->err));
		}
		struct sw_db_val row[] = {
		    SW_DB_TEXT(d->product), SW_DB_INT(d->day), SW_DB_INT(v[0]), SW_DB_INT(v[1]),
		    SW_DB_INT(v[2]),	    SW_DB_INT(v[3]),   SW_DB_INT(v[4]), SW_DB_INT(v[5]),
		    SW_DB_INT(v[6]),	    SW_DB_INT(v[7])};
		if (!rc)
			rc = sw_db_exec(db,
					"INSERT INTO usage_daily (" DAILY_COLUMNS
					") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
					row, 10, NULL, NULL, NULL, err, sizeof(m->err));
	}
	struct sw_db_val c[] = {SW_DB_INT(cutoff)};
	if (!rc)
		rc = sw_db_exec(db, "DELETE FROM usage WHERE start_ms < ?", c, 1, NULL, NULL,
				&deleted, err, sizeof(m->err));
	if (!rc)
		rc = sw_db_commit(db, err, sizeof(m->err));
	if (rc)
		sw_db_rollback(db);
out:
	m->rc = rc;
	m->deleted = deleted;
	m->days = rc ? 0 : r.n;
	report_free(&r);
}

static void summarize_done(struct server *s, void *arg)
{
	struct summary *m = arg;

	s->summarizing = 0;
	if (m->rc)
		sw_warn("cannot summarise usage (will retry): %s", m->err);
	else if (m->days)
		sw_info("usage before the last %u days summarised: %zu product-days from %lld runs",
			m->detail_days, m->days, (long long)m->deleted);
	free(m);
}

int metering_summarize(struct server *s)
{
	struct summary *m;

	if (s->summarizing)
		return 0;
	if (!(m = calloc(1, sizeof(*m))))
		return SW_ENOMEM;
	m->cutoff = metering_cutoff(s);
	m->detail_days = s->detail_days;
	s->summarizing = 1;
	if (dbq_push(s, DBQ_SLOW_MS, summarize_run, summarize_done, m)) {
		s->summarizing = 0;
		free(m);
		return SW_ENOMEM;
	}
	return 0;
}
