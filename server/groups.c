/*
 * Named groups of users and of hosts, which product rules name: GET /v1/groups, and an
 * administrator's changes (POST /v1/groups/NAME adds members, making the group if it is
 * new; POST /v1/groups/NAME/remove takes members out; DELETE /v1/groups/NAME). The
 * members a request names are checked on the loop (sw_group_members_check(), the rule the
 * license servers read them by); each change is then one transaction of the write queue,
 * which also reads the group back for the answer, so a refusal leaves nothing changed
 * and an answer shows what is stored. The metering servers, which receive the groups
 * with their configuration, are told to fetch it at once after every change.
 */
#include "server.h"

#include "error.h"
#include "group.h"
#include "log.h"
#include "product.h"
#include "strmap.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum group_kind { GROUP_LIST, GROUP_ADD, GROUP_REMOVE, GROUP_DELETE };

struct group_job {
	enum group_kind kind;
	struct sw_http_req *req;
	char name[64], by[128];
	json_t *body;		     /* GROUP_ADD, GROUP_REMOVE: the request, checked */
	const json_t *users, *hosts; /* its lists, NULL where absent */
	json_t *out;		     /* the answer, made on the thread pool */
	int created;		     /* GROUP_ADD: the group is new */
	int64_t changed;	     /* members added or removed */
	int rc;
	char err[300];
};

/* --- reading groups --- */

struct reading {
	json_t *list;		   /* the groups, as read */
	struct sw_strmap *by_name; /* name → its object in list */
	int full;		   /* with created_at and created_by */
	const char *key;	   /* the members being read: "users" or "hosts" */
};

static int group_row(void *arg, int ncols, const struct sw_db_val *row)
{
	struct reading *r = arg;
	json_t *g = json_pack("{ss s[] s[]}", "name", row[0].s, "users", "hosts");

	if (!g)
		return SW_ENOMEM;
	if (r->full && (json_object_set_new(g, "created_at", json_integer(row[1].i)) ||
			json_object_set_new(g, "created_by", json_string(row[2].s)))) {
		json_decref(g);
		return SW_ENOMEM;
	}
	if (json_array_append_new(r->list, g) || sw_strmap_set(r->by_name, row[0].s, g))
		return SW_ENOMEM;
	return 0;
}

static int member_row(void *arg, int ncols, const struct sw_db_val *row)
{
	struct reading *r = arg;
	json_t *g = sw_strmap_get(r->by_name, row[0].s);

	/* one of a group not read cannot be: the reads are one transaction's */
	if (!g)
		return 0;
	return json_array_append_new(json_object_get(g, r->key), json_string(row[1].s)) ? SW_ENOMEM
											: 0;
}

static int by_string(const void *a, const void *b)
{
	return strcmp(json_string_value(*(json_t *const *)a),
		      json_string_value(*(json_t *const *)b));
}

static int by_name(const void *a, const void *b)
{
	return strcmp(json_string_value(json_object_get(*(json_t *const *)a, "name")),
		      json_string_value(json_object_get(*(json_t *const *)b, "name")));
}

/* Sorted here, byte by byte, rather than by ORDER BY, whose order is the engine's
 * collation: the same groups read the same from SQLite and PostgreSQL. */
static int array_sort(json_t *arr, int (*cmp)(const void *, const void *))
{
	size_t n = json_array_size(arr);
	json_t **v;

	if (n < 2)
		return 0;
	if (!(v = malloc(n * sizeof(*v))))
		return SW_ENOMEM;
	for (size_t i = 0; i < n; i++)
		v[i] = json_incref(json_array_get(arr, i));
	qsort(v, n, sizeof(*v), cmp);
	json_array_clear(arr);
	for (size_t i = 0; i < n; i++) {
		if (json_array_append_new(arr, v[i])) {
			while (++i < n)
				json_decref(v[i]);
			free(v);
			return SW_ENOMEM;
		}
	}
	free(v);
	return 0;
}

json_t *groups_read(struct sw_db *db, const char *name, int full, char *err, size_t errlen)
{
	/* the groups, their users, their hosts: one group's through the tables' keys */
	static const char *const all[] = {
	    "SELECT name, created_at, created_by FROM groups",
	    "SELECT grp, name FROM group_members WHERE kind = 'user'",
	    "SELECT grp, name FROM group_members WHERE kind = 'host'",
	};
	static const char *const one[] = {
	    "SELECT name, created_at, created_by FROM groups WHERE name = ?",
	    "SELECT grp, name FROM group_members WHERE grp = ? AND kind = 'user'",
	    "SELECT grp, name FROM group_members WHERE grp = ? AND kind = 'host'",
	};
	const char *const *sql = name ? one : all;
	struct reading r = {json_array(), sw_strmap_new(), full, NULL};
	struct sw_db_val k[] = {SW_DB_TEXT(name)};
	int nk = name ? 1 : 0, rc = SW_ENOMEM;
	json_t *g;
	size_t i;

	if (!r.list || !r.by_name)
		goto out;
	if ((rc = sw_db_exec(db, sql[0], k, nk, group_row, &r, NULL, err, errlen)))
		goto out;
	r.key = "users";
	if ((rc = sw_db_exec(db, sql[1], k, nk, member_row, &r, NULL, err, errlen)))
		goto out;
	r.key = "hosts";
	if ((rc = sw_db_exec(db, sql[2], k, nk, member_row, &r, NULL, err, errlen)))
		goto out;
	rc = array_sort(r.list, by_name);
	json_array_foreach(r.list, i, g)
	{
		if (!rc)
			rc = array_sort(json_object_get(g, "users"), by_string);
		if (!rc)
			rc = array_sort(json_object_get(g, "hosts"), by_string);
	}
out:
	if (rc == SW_ENOMEM)
		sw_seterr(err, errlen, "out of memory reading the groups");
	sw_strmap_free(r.by_name);
	if (rc) {
		json_decref(r.list);
		return NULL;
	}
	return r.list;
}

/* --- changes, each one transaction of the write queue --- */

static int count(struct sw_db *db, const char *sql, const char *name, int64_t *n, char *err,
		 size_t errlen)
{
	struct sw_db_val k[] = {SW_DB_TEXT(name)};

	*n = 0;
	return sw_db_exec(db, sql, k, name ? 1 : 0, sw_db_int_row, n, NULL, err, errlen);
}

static int members_add(struct sw_db *db, struct group_job *w, const json_t *names, const char *kind,
		       int64_t now)
{
	const json_t *v;
	size_t i;
	int rc;

	json_array_foreach(names, i, v)
	{
		struct sw_db_val m[] = {SW_DB_TEXT(w->name), SW_DB_TEXT(kind),
					SW_DB_TEXT(json_string_value(v)), SW_DB_INT(now)};
		int64_t changes = 0;

		if ((rc = sw_db_exec(db,
				     "INSERT INTO group_members (grp, kind, name, added_at) VALUES "
				     "(?, ?, ?, ?) ON CONFLICT (grp, kind, name) DO NOTHING",
				     m, 4, NULL, NULL, &changes, w->err, sizeof(w->err))))
			return rc;
		w->changed += changes;
	}
	return 0;
}

static int members_remove(struct sw_db *db, struct group_job *w, const json_t *names,
			  const char *kind)
{
	const json_t *v;
	size_t i;
	int rc;

	json_array_foreach(names, i, v)
	{
		struct sw_db_val m[] = {SW_DB_TEXT(w->name), SW_DB_TEXT(kind),
					SW_DB_TEXT(json_string_value(v))};
		int64_t changes = 0;

		if ((rc = sw_db_exec(db,
				     "DELETE FROM group_members WHERE grp = ? AND kind = ? AND "
				     "name = ?",
				     m, 3, NULL, NULL, &changes, w->err, sizeof(w->err))))
			return rc;
		w->changed += changes;
	}
	return 0;
}

static int group_add(struct sw_db *db, struct group_job *w)
{
	int64_t now = sw_now_ms(), n;
	int rc;

	if ((rc = count(db, "SELECT COUNT(*) FROM groups WHERE name = ?", w->name, &n, w->err,
			sizeof(w->err))))
		return rc;
	if (!n) {
		if ((rc = count(db, "SELECT COUNT(*) FROM groups", NULL, &n, w->err,
				sizeof(w->err))))
			return rc;
		if (n >= SW_GROUPS_MAX) {
			sw_seterr(w->err, sizeof(w->err),
				  "the site keeps at most %d groups; delete one before making %s",
				  SW_GROUPS_MAX, w->name);
			return SW_EEXIST;
		}
		struct sw_db_val g[] = {SW_DB_TEXT(w->name), SW_DB_INT(now), SW_DB_TEXT(w->by)};
		if ((rc = sw_db_exec(
			 db,
			 "INSERT INTO groups (name, created_at, created_by) VALUES (?, ?, "
			 "?)",
			 g, 3, NULL, NULL, NULL, w->err, sizeof(w->err))))
			return rc;
		w->created = 1;
	}
	if ((rc = members_add(db, w, w->users, "user", now)) ||
	    (rc = members_add(db, w, w->hosts, "host", now)))
		return rc;
	if ((rc = count(db, "SELECT COUNT(*) FROM group_members WHERE grp = ?", w->name, &n, w->err,
			sizeof(w->err))))
		return rc;
	if (n > SW_GROUP_MEMBERS_MAX) {
		sw_seterr(w->err, sizeof(w->err),
			  "group %s would hold %lld members, and a group holds at most %d; remove "
			  "some first, or make another group",
			  w->name, (long long)n, SW_GROUP_MEMBERS_MAX);
		return SW_EEXIST;
	}
	return 0;
}

static int no_group(struct group_job *w)
{
	sw_seterr(w->err, sizeof(w->err), "no group %s; 'siteward group list' shows the groups",
		  w->name);
	return SW_ENOTFOUND;
}

static int group_remove(struct sw_db *db, struct group_job *w)
{
	int64_t n;
	int rc;

	if ((rc = count(db, "SELECT COUNT(*) FROM groups WHERE name = ?", w->name, &n, w->err,
			sizeof(w->err))))
		return rc;
	if (!n)
		return no_group(w);
	if ((rc = members_remove(db, w, w->users, "user")) ||
	    (rc = members_remove(db, w, w->hosts, "host")))
		return rc;
	return 0;
}

struct rule_user {
	const char *group;
	char product[SW_PRODUCT_NAME_MAX + 1];
};

/* A product whose rules name the group. */
static int rule_user_row(void *arg, int ncols, const struct sw_db_val *row)
{
	struct rule_user *u = arg;
	json_t *rules = json_loads(row[1].s, 0, NULL), *r;
	size_t i;

	json_array_foreach(rules, i, r)
	{
		const char *g = json_string_value(json_object_get(r, "group"));

		if (g && strcmp(g, u->group) == 0 && !u->product[0])
			snprintf(u->product, sizeof(u->product), "%s", row[0].s);
	}
	json_decref(rules);
	return 0;
}

static int group_delete(struct sw_db *db, struct group_job *w)
{
	struct sw_db_val k[] = {SW_DB_TEXT(w->name)};
	struct rule_user u = {.group = w->name};
	int64_t changes = 0;
	int rc;

	/* a rule must not be left naming a group that is gone */
	if ((rc = sw_db_exec(db, "SELECT name, rules FROM products", NULL, 0, rule_user_row, &u,
			     NULL, w->err, sizeof(w->err))))
		return rc;
	if (u.product[0]) {
		snprintf(w->err, sizeof(w->err),
			 "product %s has a rule for group %s: remove it first ('siteward product "
			 "set %s --reserve 0 --for %s', or --max)",
			 u.product, w->name, u.product, w->name);
		return SW_EEXIST;
	}
	if ((rc = sw_db_exec(db, "DELETE FROM group_members WHERE grp = ?", k, 1, NULL, NULL,
			     &w->changed, w->err, sizeof(w->err))) ||
	    (rc = sw_db_exec(db, "DELETE FROM groups WHERE name = ?", k, 1, NULL, NULL, &changes,
			     w->err, sizeof(w->err))))
		return rc;
	return changes ? 0 : no_group(w);
}

/* The group as stored, for the answer to a change. */
static int group_answer(struct sw_db *db, struct group_job *w)
{
	json_t *list = groups_read(db, w->name, 1, w->err, sizeof(w->err));

	if (!list)
		return SW_EDB;
	w->out = json_incref(json_array_get(list, 0));
	json_decref(list);
	return w->out ? 0 : no_group(w);
}

static int groups_list(struct sw_db *db, struct group_job *w)
{
	json_t *list = groups_read(db, NULL, 1, w->err, sizeof(w->err));

	if (!list)
		return SW_EDB;
	return (w->out = json_pack("{so}", "groups", list)) ? 0 : SW_ENOMEM;
}

/* One transaction, a listing's too: its three reads see the same groups. */
static void group_run(struct sw_db *db, void *arg)
{
	struct group_job *w = arg;

	if ((w->rc = sw_db_begin(db, w->err, sizeof(w->err))))
		return;
	switch (w->kind) {
	case GROUP_LIST: w->rc = groups_list(db, w); break;
	case GROUP_ADD: w->rc = group_add(db, w); break;
	case GROUP_REMOVE: w->rc = group_remove(db, w); break;
	case GROUP_DELETE: w->rc = group_delete(db, w); break;
	}
	if (!w->rc && (w->kind == GROUP_ADD || w->kind == GROUP_REMOVE))
		w->rc = group_answer(db, w);
	if (!w->rc)
		w->rc = sw_db_commit(db, w->err, sizeof(w->err));
	if (w->rc)
		sw_db_rollback(db);
}

static void group_job_free(struct group_job *w)
{
	json_decref(w->body);
	json_decref(w->out);
	free(w);
}

static void group_done(struct server *s, void *arg)
{
	struct group_job *w = arg;
	unsigned status = sw_http_status(w->rc);

	if (w->rc == SW_ENOMEM)
		sw_seterr(w->err, sizeof(w->err), "out of memory");
	if (w->rc && w->kind == GROUP_LIST) {
		sw_http_reply_error(w->req, status, "cannot read the groups: %s", w->err);
		goto out;
	}
	/* a refusal's sentence is for the administrator; the database's needs its context */
	if (w->rc && status >= 500) {
		sw_http_reply_error(w->req, status, "group %s is unchanged: %s", w->name, w->err);
		goto out;
	}
	if (w->rc) {
		sw_http_reply_error(w->req, status, "%s", w->err);
		goto out;
	}
	if (w->kind == GROUP_LIST) {
		sw_http_reply_json(w->req, 200, w->out);
		w->out = NULL;
		goto out;
	}
	if (w->created || w->changed || w->kind == GROUP_DELETE)
		metering_config_changed(s);
	switch (w->kind) {
	case GROUP_ADD:
		sw_info("group %s%s by %s: %lld member%s added", w->name, w->created ? " made" : "",
			w->by, (long long)w->changed, w->changed == 1 ? "" : "s");
		break;
	case GROUP_REMOVE:
		sw_info("group %s: %lld member%s removed by %s", w->name, (long long)w->changed,
			w->changed == 1 ? "" : "s", w->by);
		break;
	case GROUP_DELETE:
		sw_info("group %s deleted by %s, with %lld member%s", w->name, w->by,
			(long long)w->changed, w->changed == 1 ? "" : "s");
		w->out = json_pack("{ss sb}", "name", w->name, "deleted", 1);
		break;
	case GROUP_LIST: break;
	}
	sw_http_reply_json(w->req, 200, w->out);
	w->out = NULL;
out:
	group_job_free(w);
}

/* Queues `w`, which it then owns; replies itself when it cannot. */
static void group_submit(struct server *s, struct group_job *w)
{
	if (dbq_push(s, DBQ_SLOW_MS, group_run, group_done, w)) {
		sw_http_reply_error(w->req, 500, "out of memory");
		group_job_free(w);
	}
}

/* A job for `req` on the group `path_name` from its path: NULL when refused (and
 * answered). */
static struct group_job *group_job_new(struct sw_http_req *req, enum group_kind kind,
				       const char *path_name)
{
	const struct sw_identity *id = sw_http_req_identity(req);
	struct group_job *w;
	char shown[80];

	if (strlen(path_name) > 63 || !sw_name_valid(path_name)) {
		sw_printable(shown, sizeof(shown), path_name);
		sw_http_reply_error(req, 400,
				    "group name '%s' must be 1-63 letters, digits, '.', '_' or "
				    "'-', not starting with '.' or '-'",
				    shown);
		return NULL;
	}
	if (!(w = calloc(1, sizeof(*w)))) {
		sw_http_reply_error(req, 500, "out of memory");
		return NULL;
	}
	w->kind = kind;
	w->req = req;
	snprintf(w->name, sizeof(w->name), "%s", path_name);
	snprintf(w->by, sizeof(w->by), "%s", id ? id->cn : "");
	return w;
}

/* GET /v1/groups */
void groups_get(struct sw_http_req *req, void *arg)
{
	struct group_job *w = calloc(1, sizeof(*w));

	if (!w) {
		sw_http_reply_error(req, 500, "out of memory");
		return;
	}
	w->kind = GROUP_LIST;
	w->req = req;
	group_submit(arg, w);
}

/* POST /v1/groups/NAME {"users", "hosts"}: the group made if it is new, the members
 * added; POST /v1/groups/NAME/remove {"users", "hosts"}: the members taken out. */
void groups_post(struct sw_http_req *req, void *arg)
{
	const char *tail = sw_http_req_tail(req), *slash = strchr(tail, '/');
	enum group_kind kind = GROUP_ADD;
	char name[80];
	struct group_job *w;
	size_t len;
	json_t *j;

	if (slash && strcmp(slash, "/remove") != 0) {
		sw_http_reply_error(req, 404,
				    "no such endpoint: POST /v1/groups/NAME adds members, "
				    "/v1/groups/NAME/remove takes them out");
		return;
	}
	if (slash) {
		kind = GROUP_REMOVE;
		snprintf(name, sizeof(name), "%.*s", (int)(slash - tail), tail);
	} else {
		snprintf(name, sizeof(name), "%s", tail);
	}
	if (!(w = group_job_new(req, kind, name)))
		return;
	/* no body at all makes an empty group, as {} does */
	sw_http_req_body(req, &len);
	if (len == 0 && !(j = json_object())) {
		sw_http_reply_error(req, 500, "out of memory");
		group_job_free(w);
		return;
	}
	if (len && !(j = sw_http_req_json(req))) {
		group_job_free(w); /* answered */
		return;
	}
	w->body = j;
	if (sw_group_members_check(j, &w->users, &w->hosts, w->err, sizeof(w->err))) {
		sw_http_reply_error(req, 400, "%s", w->err);
		group_job_free(w);
		return;
	}
	if (kind == GROUP_REMOVE && json_array_size(w->users) + json_array_size(w->hosts) == 0) {
		sw_http_reply_error(req, 400,
				    "name the users or hosts to take out of %s; to delete the "
				    "group, use DELETE /v1/groups/%s",
				    w->name, w->name);
		group_job_free(w);
		return;
	}
	group_submit(arg, w);
}

/* DELETE /v1/groups/NAME: the group and its members. */
void groups_delete(struct sw_http_req *req, void *arg)
{
	struct group_job *w = group_job_new(req, GROUP_DELETE, sw_http_req_tail(req));

	if (w)
		group_submit(arg, w);
}
