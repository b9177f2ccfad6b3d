/*
 * Collections: the groups of systems deployments and commands aim at, by a condition on
 * their facts and inventory (lib/collection.h) or by name.
 *
 *   GET    /v1/collections               every collection
 *   POST   /v1/collections/NAME          {"where": EXPR} or {"systems": [NAME...]}: made,
 *                                        or changed
 *   DELETE /v1/collections/NAME
 *   GET    /v1/collections/NAME/members  its members now
 *
 * Members are worked out when asked, from the inventory as it stands, so they follow
 * every change to it. The systems, their roles and facts are copied on the loop; the
 * packages and hardware the expression needs are read on the database queue, where the
 * expression is judged.
 */
#include "server.h"

#include "collection.h"
#include "error.h"
#include "json.h"
#include "log.h"
#include "strmap.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define COLLECTIONS_MAX 1000
#define STATIC_MAX	10000 /* systems named by a collection */
#define PACKAGES_ASKED	32    /* packages one expression may ask about */

enum coll_kind { C_LIST, C_PUT, C_DELETE, C_MEMBERS };

struct coll_job {
	enum coll_kind kind;
	struct sw_http_req *req; /* NULL: members for resolve_done */
	collections_resolved resolve_done;
	void *resolve_arg;
	char name[64], by[128];
	char *where;	 /* C_PUT */
	json_t *systems; /* C_PUT: the names given; C_MEMBERS: {name, roles, facts} of each */
	json_t *out;
	int created;
	int rc;
	char err[400];
};

static void job_free(struct coll_job *w)
{
	free(w->where);
	json_decref(w->systems);
	json_decref(w->out);
	free(w);
}

/* --- reading --- */

static int coll_row(void *arg, int ncols, const struct sw_db_val *row)
{
	json_t *o = json_pack("{ss sI ss}", "name", row[0].s, "created_at", (json_int_t)row[3].i,
			      "created_by", row[4].s);

	(void)ncols;
	if (!o)
		return SW_ENOMEM;
	if (row[1].s)
		json_object_set_new(o, "where", json_string(row[1].s));
	else
		json_object_set_new(o, "systems",
				    row[2].s ? json_loads(row[2].s, 0, NULL) : json_array());
	return json_array_append_new(arg, o) ? SW_ENOMEM : 0;
}

static int one_collection(struct sw_db *db, struct coll_job *w, json_t **out)
{
	struct sw_db_val q[] = {SW_DB_TEXT(w->name)};
	json_t *list = json_array();
	int rc;

	*out = NULL;
	if (!list)
		return SW_ENOMEM;
	rc = sw_db_exec(db,
			"SELECT name, expr, systems, created_at, created_by FROM collections WHERE "
			"name = ?",
			q, 1, coll_row, list, NULL, w->err, sizeof(w->err));
	if (!rc && json_array_size(list) == 0) {
		sw_seterr(w->err, sizeof(w->err),
			  "no collection %s (siteward collection list shows them)", w->name);
		rc = SW_ENOTFOUND;
	}
	if (!rc)
		*out = json_incref(json_array_get(list, 0));
	json_decref(list);
	return rc;
}

/* --- members --- */

struct pkg_versions {
	struct sw_strmap *by_system[PACKAGES_ASKED]; /* system -> version (strdup'd) */
	const char *names[PACKAGES_ASKED];
	size_t n;
	struct sw_strmap *hardware; /* system -> json_t */
};

static int version_row(void *arg, int ncols, const struct sw_db_val *row)
{
	char *v = strdup(row[1].s);

	(void)ncols;
	if (!v || sw_strmap_set(arg, row[0].s, v)) {
		free(v);
		return SW_ENOMEM;
	}
	return 0;
}

static int hardware_row(void *arg, int ncols, const struct sw_db_val *row)
{
	json_t *hw = json_loads(row[1].s, 0, NULL);

	(void)ncols;
	if (hw && sw_strmap_set(arg, row[0].s, hw)) {
		json_decref(hw);
		return SW_ENOMEM;
	}
	return 0;
}

struct judged {
	struct pkg_versions *pv;
	const char *system;
};

static const char *version_of(void *arg, const char *name)
{
	struct judged *j = arg;

	for (size_t i = 0; i < j->pv->n; i++)
		if (strcmp(j->pv->names[i], name) == 0)
			return sw_strmap_get(j->pv->by_system[i], j->system);
	return NULL;
}

static void free_string(const char *key, void *value, void *arg)
{
	(void)key, (void)arg;
	free(value);
}

static void free_json(const char *key, void *value, void *arg)
{
	(void)key, (void)arg;
	json_decref(value);
}

static void members(struct sw_db *db, struct coll_job *w)
{
	struct pkg_versions pv = {0};
	struct sw_coll_expr *e = NULL;
	json_t *c, *list = json_array(), *missing = json_array(), *sys;
	size_t i;

	if ((w->rc = one_collection(db, w, &c)))
		goto out;
	if (!list || !missing) {
		w->rc = SW_ENOMEM;
		goto out;
	}
	if (!json_object_get(c, "where")) {
		/* by name: those that are enrolled, and those that are not, said */
		json_array_foreach(json_object_get(c, "systems"), i, sys)
		{
			const char *name = json_string_value(sys);
			size_t k;
			int found = 0;
			json_t *s;

			json_array_foreach(w->systems, k, s) found |=
			    strcmp(json_string_value(json_object_get(s, "name")), name) == 0;
			json_array_append_new(found ? list : missing, json_string(name));
		}
		goto done;
	}
	if ((w->rc = sw_coll_parse(json_string_value(json_object_get(c, "where")), &e, w->err,
				   sizeof(w->err))))
		goto out;
	pv.n = sw_coll_packages(e, pv.names, PACKAGES_ASKED);
	for (i = 0; i < pv.n && !w->rc; i++) {
		struct sw_db_val q[] = {SW_DB_TEXT(pv.names[i])};

		if (!(pv.by_system[i] = sw_strmap_new()))
			w->rc = SW_ENOMEM;
		else
			w->rc = sw_db_exec(
			    db, "SELECT system, version FROM packages WHERE name = ?", q, 1,
			    version_row, pv.by_system[i], NULL, w->err, sizeof(w->err));
	}
	if (!w->rc && !(pv.hardware = sw_strmap_new()))
		w->rc = SW_ENOMEM;
	if (!w->rc)
		w->rc = sw_db_exec(db, "SELECT system, hardware FROM inventory", NULL, 0,
				   hardware_row, pv.hardware, NULL, w->err, sizeof(w->err));
	if (w->rc)
		goto out;
	json_array_foreach(w->systems, i, sys)
	{
		const char *name = json_string_value(json_object_get(sys, "name"));
		struct judged j = {&pv, name};
		struct sw_coll_facts f = {name,
					  json_object_get(sys, "roles"),
					  json_object_get(sys, "facts"),
					  sw_strmap_get(pv.hardware, name),
					  version_of,
					  &j};

		if (sw_coll_match(e, &f))
			json_array_append_new(list, json_string(name));
	}
done:
	w->out =
	    json_pack("{ss sO so so sI}", "collection", w->name, "definition", c, "members", list,
		      "not_enrolled", missing, "systems", (json_int_t)json_array_size(w->systems));
	list = missing = NULL;
	if (!w->out)
		w->rc = SW_ENOMEM;
out:
	for (i = 0; i < pv.n; i++)
		if (pv.by_system[i]) {
			sw_strmap_each(pv.by_system[i], free_string, NULL);
			sw_strmap_free(pv.by_system[i]);
		}
	if (pv.hardware) {
		sw_strmap_each(pv.hardware, free_json, NULL);
		sw_strmap_free(pv.hardware);
	}
	sw_coll_free(e);
	json_decref(c);
	json_decref(list);
	json_decref(missing);
}

/* --- changes --- */

static int count_row(void *arg, int ncols, const struct sw_db_val *row)
{
	(void)ncols;
	*(int64_t *)arg = row[0].i;
	return 0;
}

static void put(struct sw_db *db, struct coll_job *w)
{
	char *systems = w->systems ? sw_json_dump(w->systems) : NULL;
	struct sw_db_val u[] = {sw_db_text(w->where), sw_db_text(systems), SW_DB_TEXT(w->name)};
	int64_t changes = 0, n = 0;

	if ((w->rc = sw_db_begin(db, w->err, sizeof(w->err))))
		goto out;
	w->rc = sw_db_exec(db, "UPDATE collections SET expr = ?, systems = ? WHERE name = ?", u, 3,
			   NULL, NULL, &changes, w->err, sizeof(w->err));
	if (!w->rc && !changes) {
		struct sw_db_val i[] = {SW_DB_TEXT(w->name), sw_db_text(w->where),
					sw_db_text(systems), SW_DB_INT(sw_now_ms()),
					SW_DB_TEXT(w->by)};

		w->created = 1;
		w->rc = sw_db_exec(db, "SELECT COUNT(*) FROM collections", NULL, 0, count_row, &n,
				   NULL, w->err, sizeof(w->err));
		if (!w->rc && n >= COLLECTIONS_MAX) {
			sw_seterr(w->err, sizeof(w->err),
				  "the site has %d collections, the most it keeps",
				  COLLECTIONS_MAX);
			w->rc = SW_ETOOBIG;
		}
		if (!w->rc)
			w->rc =
			    sw_db_exec(db,
				       "INSERT INTO collections (name, expr, systems, created_at, "
				       "created_by) VALUES (?, ?, ?, ?, ?)",
				       i, 5, NULL, NULL, NULL, w->err, sizeof(w->err));
	}
	if (!w->rc)
		w->rc = sw_db_commit(db, w->err, sizeof(w->err));
	else
		sw_db_rollback(db);
out:
	free(systems);
}

static void coll_run(struct sw_db *db, void *arg)
{
	struct coll_job *w = arg;
	struct sw_db_val q[] = {SW_DB_TEXT(w->name)};
	int64_t changes = 0;

	switch (w->kind) {
	case C_LIST:
		if (!(w->out = json_array()))
			w->rc = SW_ENOMEM;
		else
			w->rc =
			    sw_db_exec(db,
				       "SELECT name, expr, systems, created_at, created_by FROM "
				       "collections ORDER BY name",
				       NULL, 0, coll_row, w->out, NULL, w->err, sizeof(w->err));
		break;
	case C_PUT: put(db, w); break;
	case C_DELETE:
		w->rc = sw_db_exec(db, "DELETE FROM collections WHERE name = ?", q, 1, NULL, NULL,
				   &changes, w->err, sizeof(w->err));
		if (!w->rc && !changes) {
			sw_seterr(w->err, sizeof(w->err), "no collection %s", w->name);
			w->rc = SW_ENOTFOUND;
		}
		break;
	case C_MEMBERS: members(db, w); break;
	}
}

static void coll_done(struct server *s, void *arg)
{
	struct coll_job *w = arg;

	if (w->rc == SW_ENOMEM)
		sw_seterr(w->err, sizeof(w->err), "out of memory");
	if (!w->req) {
		w->resolve_done(s, w->rc ? NULL : json_object_get(w->out, "members"), w->rc, w->err,
				w->resolve_arg);
	} else if (w->rc) {
		sw_http_reply_error(w->req, sw_http_status(w->rc), "%s", w->err);
	} else if (w->kind == C_LIST) {
		sw_http_reply_json(w->req, 200, json_pack("{sO}", "collections", w->out));
	} else if (w->kind == C_MEMBERS) {
		sw_http_reply_json(w->req, 200, w->out);
		w->out = NULL;
	} else {
		sw_info("collection %s %s by %s", w->name,
			w->kind == C_DELETE ? "removed"
			: w->created	    ? "made"
					    : "changed",
			w->by);
		sw_http_reply_json(w->req, 200,
				   json_pack("{ss ss}", "collection", w->name, "outcome",
					     w->kind == C_DELETE ? "removed"
					     : w->created	 ? "made"
								 : "changed"));
	}
	job_free(w);
}

static struct coll_job *job_new(struct sw_http_req *req, enum coll_kind kind, const char *name)
{
	const struct sw_identity *id = sw_http_req_identity(req);
	struct coll_job *w;
	char shown[80];

	if (name && (strlen(name) > 63 || !sw_name_valid(name))) {
		sw_printable(shown, sizeof(shown), name);
		sw_http_reply_error(req, 400,
				    "collection name '%s' must be 1-63 letters, digits, '.', '_' "
				    "or '-'",
				    shown);
		return NULL;
	}
	if (!(w = calloc(1, sizeof(*w)))) {
		sw_http_reply_error(req, 500, "out of memory");
		return NULL;
	}
	w->kind = kind;
	w->req = req;
	snprintf(w->name, sizeof(w->name), "%s", name ? name : "");
	snprintf(w->by, sizeof(w->by), "%s", id && id->cn[0] ? id->cn : "?");
	return w;
}

static void submit(struct server *s, struct coll_job *w)
{
	if (dbq_push(s, DBQ_SLOW_MS, coll_run, coll_done, w)) {
		sw_http_reply_error(w->req, 500, "out of memory");
		job_free(w);
	}
}

static void copy_system(const char *key, void *value, void *arg)
{
	const struct system *sys = value;

	(void)key;
	json_array_append_new(
	    arg, json_pack("{ss so so}", "name", sys->name, "roles",
			   sys->roles ? json_deep_copy(sys->roles) : json_array(), "facts",
			   sys->facts ? json_deep_copy(sys->facts) : json_object()));
}

void collections_get(struct sw_http_req *req, void *arg)
{
	struct server *s = arg;
	const char *tail = sw_http_req_tail(req), *slash;
	char name[80];
	struct coll_job *w;

	if (!tail || !*tail) {
		if ((w = job_new(req, C_LIST, NULL)))
			submit(s, w);
		return;
	}
	slash = strchr(tail, '/');
	if (!slash || strcmp(slash, "/members") != 0) {
		sw_http_reply_error(req, 404, "no such endpoint: GET /v1/collections/NAME/members");
		return;
	}
	snprintf(name, sizeof(name), "%.*s", (int)(slash - tail), tail);
	if (!(w = job_new(req, C_MEMBERS, name)))
		return;
	/* the systems as they stand, copied: the queue's thread judges them */
	if (!(w->systems = json_array())) {
		sw_http_reply_error(req, 500, "out of memory");
		job_free(w);
		return;
	}
	sw_strmap_each(s->systems, copy_system, w->systems);
	submit(s, w);
}

int collections_resolve(struct server *s, const char *name, collections_resolved done, void *arg)
{
	struct coll_job *w = calloc(1, sizeof(*w));

	if (!w || !(w->systems = json_array())) {
		free(w);
		return SW_ENOMEM;
	}
	w->kind = C_MEMBERS;
	w->resolve_done = done;
	w->resolve_arg = arg;
	snprintf(w->name, sizeof(w->name), "%s", name);
	snprintf(w->by, sizeof(w->by), "server");
	sw_strmap_each(s->systems, copy_system, w->systems);
	if (dbq_push(s, DBQ_SLOW_MS, coll_run, coll_done, w)) {
		job_free(w);
		return SW_ENOMEM;
	}
	return 0;
}

void collections_post(struct sw_http_req *req, void *arg)
{
	struct coll_job *w;
	const json_t *where, *systems, *v;
	char err[300], shown[80];
	struct sw_coll_expr *e;
	json_t *j;
	size_t i;

	if (!(w = job_new(req, C_PUT, sw_http_req_tail(req))))
		return;
	if (!(j = sw_http_req_json(req))) {
		job_free(w);
		return;
	}
	where = json_object_get(j, "where");
	systems = json_object_get(j, "systems");
	if ((where != NULL) == (systems != NULL) || json_object_size(j) != 1) {
		sw_http_reply_error(req, 400,
				    "a collection is {\"where\": EXPR} or {\"systems\": "
				    "[NAME, ...]}");
		goto fail;
	}
	if (where) {
		if (!json_is_string(where) ||
		    sw_coll_parse(json_string_value(where), &e, err, sizeof(err))) {
			sw_http_reply_error(req, 400, "--where: %s",
					    json_is_string(where) ? err : "a string");
			goto fail;
		}
		sw_coll_free(e);
		w->where = strdup(json_string_value(where));
	} else {
		if (!json_is_array(systems) || json_array_size(systems) > STATIC_MAX) {
			sw_http_reply_error(req, 400, "'systems' is a list of at most %d names",
					    STATIC_MAX);
			goto fail;
		}
		json_array_foreach(systems, i, v) if (!json_is_string(v) ||
						      !sw_name_valid(json_string_value(v)))
		{
			sw_printable(shown, sizeof(shown),
				     json_is_string(v) ? json_string_value(v) : "?");
			sw_http_reply_error(req, 400, "'%s' is not a system name", shown);
			goto fail;
		}
		w->systems = json_incref((json_t *)systems);
	}
	json_decref(j);
	submit(arg, w);
	return;
fail:
	json_decref(j);
	job_free(w);
}

void collections_delete(struct sw_http_req *req, void *arg)
{
	struct coll_job *w = job_new(req, C_DELETE, sw_http_req_tail(req));

	if (w)
		submit(arg, w);
}
