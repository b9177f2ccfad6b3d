/*
 * Inventory: what each system is and has (lib/inventory.h), and when each package
 * appeared, changed version or left.
 *
 *   POST /v1/inventory             an agent's whole inventory, or a delta from the version
 *                                  the site has ("from"); 409 when it has another
 *   GET  /v1/inventory/NAME        one system's hardware, packages and their history
 *   GET  /v1/software[?package=P]  which systems have P at which version; without P, every
 *                                  package with how many systems have each version
 *
 * Each upload is one transaction on the database queue: the packages stored are compared
 * with what came, each difference a row of package_history, so a refused or failed
 * upload leaves the stored inventory as it was.
 */
#include "server.h"

#include "dpkgdb.h"
#include "error.h"
#include "inventory.h"
#include "json.h"
#include "log.h"
#include "strmap.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HISTORY_SHOWN 500 /* of one system's package history, the latest */

enum inv_kind { INV_UPLOAD, INV_SHOW, INV_SOFTWARE };

#define BATCH_ROWS 100 /* packages that appeared, inserted by one statement */

struct inv_job {
	enum inv_kind kind;
	struct sw_http_req *req;
	char system[64];
	char package[SW_DPKG_NAME_MAX + 1];
	json_t *body; /* INV_UPLOAD: the request, checked */
	json_t *out;
	int64_t events;			 /* INV_UPLOAD: rows of history written */
	const json_t *batch[BATCH_ROWS]; /* packages that appeared, not yet inserted */
	size_t nbatch;
	int conflict; /* INV_UPLOAD: the delta is from another version than the site's */
	int rc;
	char err[300];
};

static void job_free(struct inv_job *w)
{
	json_decref(w->body);
	json_decref(w->out);
	free(w);
}

/* --- an upload --- */

struct stored {
	char version[SW_DPKG_VERSION_MAX + 1];
	int seen; /* named by a full upload */
};

static int stored_row(void *arg, int ncols, const struct sw_db_val *row)
{
	struct sw_strmap *m = arg;
	struct stored *p = calloc(1, sizeof(*p));
	char key[SW_DPKG_NAME_MAX + SW_DPKG_ARCH_MAX + 2];

	(void)ncols;
	if (!p)
		return SW_ENOMEM;
	snprintf(p->version, sizeof(p->version), "%s", row[2].s);
	snprintf(key, sizeof(key), "%s:%s", row[0].s, row[1].s);
	if (sw_strmap_set(m, key, p)) {
		free(p);
		return SW_ENOMEM;
	}
	return 0;
}

static int history(struct sw_db *db, struct inv_job *w, const char *name, const char *arch,
		   const char *event, const char *version, const char *old, int64_t now)
{
	struct sw_db_val v[] = {SW_DB_TEXT(w->system), SW_DB_TEXT(name),    SW_DB_TEXT(arch),
				SW_DB_TEXT(event),     sw_db_text(version), sw_db_text(old),
				SW_DB_INT(now)};

	w->events++;
	return sw_db_exec(db,
			  "INSERT INTO package_history (system, name, arch, event, version, "
			  "old_version, at) VALUES (?, ?, ?, ?, ?, ?, ?)",
			  v, 7, NULL, NULL, NULL, w->err, sizeof(w->err));
}

/* Inserts the packages that appeared, and their history, a statement each. */
static int flush(struct sw_db *db, struct inv_job *w, int64_t now)
{
	static const char pkg_head[] = "INSERT INTO packages (system, name, arch, version, since) "
				       "VALUES ",
			  hist_head[] = "INSERT INTO package_history (system, name, arch, event, "
					"version, old_version, at) VALUES ";
	struct sw_db_val v[BATCH_ROWS * 7];
	char sql[sizeof(hist_head) + BATCH_ROWS * 24];
	size_t n = w->nbatch, k, len;
	int rc;

	if (!n)
		return 0;
	for (int pass = 0; pass < 2; pass++) {
		len = (size_t)snprintf(sql, sizeof(sql), "%s", pass ? hist_head : pkg_head);
		for (k = 0; k < n; k++) {
			const json_t *p = w->batch[k];
			struct sw_db_val *r = v + k * (pass ? 7 : 5);

			len += (size_t)snprintf(sql + len, sizeof(sql) - len, "%s%s", k ? ", " : "",
						pass ? "(?, ?, ?, ?, ?, ?, ?)" : "(?, ?, ?, ?, ?)");
			r[0] = SW_DB_TEXT(w->system);
			r[1] = SW_DB_TEXT(json_string_value(json_object_get(p, "n")));
			r[2] = SW_DB_TEXT(json_string_value(json_object_get(p, "a")));
			if (pass) {
				r[3] = SW_DB_TEXT("appeared");
				r[4] = SW_DB_TEXT(json_string_value(json_object_get(p, "v")));
				r[5] = sw_db_text(NULL);
				r[6] = SW_DB_INT(now);
			} else {
				r[3] = SW_DB_TEXT(json_string_value(json_object_get(p, "v")));
				r[4] = SW_DB_INT(now);
			}
		}
		if ((rc = sw_db_exec(db, sql, v, (int)(n * (pass ? 7 : 5)), NULL, NULL, NULL,
				     w->err, sizeof(w->err))))
			return rc;
	}
	w->events += (int64_t)n;
	w->nbatch = 0;
	return 0;
}

/* A package that came: new, or at another version than stored. */
static int put(struct sw_db *db, struct inv_job *w, struct sw_strmap *have, const json_t *p,
	       int64_t now)
{
	const char *n = json_string_value(json_object_get(p, "n"));
	const char *a = json_string_value(json_object_get(p, "a"));
	const char *v = json_string_value(json_object_get(p, "v"));
	char key[SW_DPKG_NAME_MAX + SW_DPKG_ARCH_MAX + 2];
	struct stored *old;
	int rc;

	snprintf(key, sizeof(key), "%s:%s", n, a);
	if ((old = sw_strmap_get(have, key))) {
		old->seen = 1;
		if (strcmp(old->version, v) == 0)
			return 0;
		struct sw_db_val u[] = {SW_DB_TEXT(v), SW_DB_INT(now), SW_DB_TEXT(w->system),
					SW_DB_TEXT(n), SW_DB_TEXT(a)};
		if ((rc = sw_db_exec(db,
				     "UPDATE packages SET version = ?, since = ? WHERE system = ? "
				     "AND name = ? AND arch = ?",
				     u, 5, NULL, NULL, NULL, w->err, sizeof(w->err))))
			return rc;
		return history(db, w, n, a, "changed", v, old->version, now);
	}
	/* new ones come by the hundred (a first upload): a statement inserts many */
	w->batch[w->nbatch++] = p;
	return w->nbatch == BATCH_ROWS ? flush(db, w, now) : 0;
}

static int drop(struct sw_db *db, struct inv_job *w, const char *n, const char *a, const char *old,
		int64_t now)
{
	struct sw_db_val d[] = {SW_DB_TEXT(w->system), SW_DB_TEXT(n), SW_DB_TEXT(a)};
	int rc;

	if ((rc = sw_db_exec(db, "DELETE FROM packages WHERE system = ? AND name = ? AND arch = ?",
			     d, 3, NULL, NULL, NULL, w->err, sizeof(w->err))))
		return rc;
	return history(db, w, n, a, "left", NULL, old, now);
}

struct left {
	struct sw_db *db;
	struct inv_job *w;
	int64_t now;
	int rc;
};

/* After a full upload: each stored package it did not name has left. */
static void drop_unseen(const char *key, void *value, void *arg)
{
	struct left *l = arg;
	struct stored *p = value;
	char name[SW_DPKG_NAME_MAX + 1];
	const char *colon = strrchr(key, ':');

	if (l->rc || p->seen || !colon)
		return;
	snprintf(name, sizeof(name), "%.*s", (int)(colon - key), key);
	l->rc = drop(l->db, l->w, name, colon + 1, p->version, l->now);
}

static void free_each(const char *key, void *value, void *arg)
{
	(void)key, (void)arg;
	free(value);
}

static int seq_row(void *arg, int ncols, const struct sw_db_val *row)
{
	(void)ncols;
	*(int64_t *)arg = row[0].i;
	return 0;
}

static void upload_apply(struct sw_db *db, struct inv_job *w)
{
	const json_t *b = w->body, *p;
	int full = json_object_get(b, "packages") != NULL;
	int64_t now = sw_now_ms(), stored_seq = -1;
	struct sw_strmap *have = sw_strmap_new();
	struct sw_db_val sys[] = {SW_DB_TEXT(w->system)};
	char *hw = NULL;
	size_t i;

	if (!have) {
		w->rc = SW_ENOMEM;
		return;
	}
	if ((w->rc = sw_db_exec(db, "SELECT seq FROM inventory WHERE system = ?", sys, 1, seq_row,
				&stored_seq, NULL, w->err, sizeof(w->err))))
		goto out;
	if (!full && stored_seq != json_integer_value(json_object_get(b, "from"))) {
		w->conflict = 1;
		goto out;
	}
	if ((w->rc = sw_db_exec(db, "SELECT name, arch, version FROM packages WHERE system = ?",
				sys, 1, stored_row, have, NULL, w->err, sizeof(w->err))))
		goto out;
	if (full) {
		struct left l = {db, w, now, 0};

		json_array_foreach(json_object_get(b, "packages"), i, p) if (!w->rc) w->rc =
		    put(db, w, have, p, now);
		if (!w->rc) {
			sw_strmap_each(have, drop_unseen, &l);
			w->rc = l.rc;
		}
	} else {
		json_array_foreach(json_object_get(b, "added"), i, p) if (!w->rc) w->rc =
		    put(db, w, have, p, now);
		json_array_foreach(json_object_get(b, "changed"), i, p) if (!w->rc) w->rc =
		    put(db, w, have, p, now);
		json_array_foreach(json_object_get(b, "removed"), i, p)
		{
			const char *n = json_string_value(json_object_get(p, "n"));
			const char *a = json_string_value(json_object_get(p, "a"));
			char key[SW_DPKG_NAME_MAX + SW_DPKG_ARCH_MAX + 2];
			struct stored *old;

			snprintf(key, sizeof(key), "%s:%s", n, a);
			if (!w->rc && (old = sw_strmap_get(have, key)))
				w->rc = drop(db, w, n, a, old->version, now);
		}
	}
	if (!w->rc)
		w->rc = flush(db, w, now);
	if (w->rc)
		goto out;
	{
		int64_t count = 0;
		struct sw_db_val c[] = {SW_DB_TEXT(w->system)};

		if ((w->rc = sw_db_exec(db, "SELECT COUNT(*) FROM packages WHERE system = ?", c, 1,
					seq_row, &count, NULL, w->err, sizeof(w->err))))
			goto out;
		hw = json_object_get(b, "hardware") ? sw_json_dump(json_object_get(b, "hardware"))
						    : NULL;
		struct sw_db_val u[] = {SW_DB_INT(json_integer_value(json_object_get(b, "seq"))),
					SW_DB_INT(count), SW_DB_INT(now), SW_DB_TEXT(w->system)};
		int64_t changes = 0;

		if (hw) {
			struct sw_db_val h[] = {SW_DB_TEXT(hw), SW_DB_TEXT(w->system)};
			if ((w->rc = sw_db_exec(
				 db, "UPDATE inventory SET hardware = ? WHERE system = ?", h, 2,
				 NULL, NULL, NULL, w->err, sizeof(w->err))))
				goto out;
		}
		if ((w->rc =
			 sw_db_exec(db,
				    "UPDATE inventory SET seq = ?, packages = ?, updated_at = ? "
				    "WHERE system = ?",
				    u, 4, NULL, NULL, &changes, w->err, sizeof(w->err))))
			goto out;
		if (!changes) {
			struct sw_db_val n[] = {
			    SW_DB_TEXT(w->system),
			    SW_DB_INT(json_integer_value(json_object_get(b, "seq"))),
			    SW_DB_TEXT(hw ? hw : "{}"), SW_DB_INT(count), SW_DB_INT(now)};
			w->rc =
			    sw_db_exec(db,
				       "INSERT INTO inventory (system, seq, hardware, packages, "
				       "updated_at) VALUES (?, ?, ?, ?, ?)",
				       n, 5, NULL, NULL, NULL, w->err, sizeof(w->err));
		}
	}
out:
	free(hw);
	sw_strmap_each(have, free_each, NULL);
	sw_strmap_free(have);
}

/* --- reading --- */

static int hardware_row(void *arg, int ncols, const struct sw_db_val *row)
{
	json_t *out = arg, *hw = json_loads(row[1].s, 0, NULL);

	(void)ncols;
	json_object_set_new(out, "seq", json_integer(row[0].i));
	json_object_set_new(out, "hardware", hw ? hw : json_object());
	json_object_set_new(out, "updated_at", json_integer(row[2].i));
	return 0;
}

static int package_row(void *arg, int ncols, const struct sw_db_val *row)
{
	(void)ncols;
	return json_array_append_new(arg,
				     json_pack("{ss ss ss sI}", "name", row[0].s, "arch", row[1].s,
					       "version", row[2].s, "since", (json_int_t)row[3].i))
		   ? SW_ENOMEM
		   : 0;
}

static int history_row(void *arg, int ncols, const struct sw_db_val *row)
{
	json_t *o = json_pack("{ss ss ss sI}", "name", row[0].s, "arch", row[1].s, "event",
			      row[2].s, "at", (json_int_t)row[5].i);

	(void)ncols;
	if (o && row[3].s)
		json_object_set_new(o, "version", json_string(row[3].s));
	if (o && row[4].s)
		json_object_set_new(o, "old_version", json_string(row[4].s));
	return !o || json_array_append_new(arg, o) ? SW_ENOMEM : 0;
}

static void show(struct sw_db *db, struct inv_job *w)
{
	struct sw_db_val sys[] = {SW_DB_TEXT(w->system), SW_DB_INT(HISTORY_SHOWN)};
	json_t *pkgs = json_array(), *hist = json_array();

	w->out = json_pack("{ss}", "system", w->system);
	if (!w->out || !pkgs || !hist) {
		json_decref(pkgs);
		json_decref(hist);
		w->rc = SW_ENOMEM;
		return;
	}
	json_object_set_new(w->out, "packages", pkgs);
	json_object_set_new(w->out, "history", hist);
	if ((w->rc =
		 sw_db_exec(db, "SELECT seq, hardware, updated_at FROM inventory WHERE system = ?",
			    sys, 1, hardware_row, w->out, NULL, w->err, sizeof(w->err))) ||
	    (w->rc = sw_db_exec(db,
				"SELECT name, arch, version, since FROM packages WHERE system = ? "
				"ORDER BY name, arch",
				sys, 1, package_row, pkgs, NULL, w->err, sizeof(w->err))) ||
	    (w->rc = sw_db_exec(db,
				"SELECT name, arch, event, version, old_version, at FROM "
				"package_history WHERE system = ? ORDER BY at DESC, name LIMIT ?",
				sys, 2, history_row, hist, NULL, w->err, sizeof(w->err))))
		return;
	if (!json_object_get(w->out, "seq")) {
		sw_seterr(w->err, sizeof(w->err),
			  "no inventory of %s yet (is it enrolled, and has its agent reported?)",
			  w->system);
		w->rc = SW_ENOTFOUND;
	}
}

static int holder_row(void *arg, int ncols, const struct sw_db_val *row)
{
	(void)ncols;
	return json_array_append_new(arg, json_pack("{ss ss ss sI}", "system", row[0].s, "arch",
						    row[1].s, "version", row[2].s, "since",
						    (json_int_t)row[3].i))
		   ? SW_ENOMEM
		   : 0;
}

static int version_row(void *arg, int ncols, const struct sw_db_val *row)
{
	json_t *by = arg, *p = json_object_get(by, row[0].s);

	(void)ncols;
	if (!p) {
		if (!(p = json_pack("{si s{}}", "systems", 0, "versions")) ||
		    json_object_set_new(by, row[0].s, p))
			return SW_ENOMEM;
	}
	json_object_set_new(json_object_get(p, "versions"), row[1].s, json_integer(row[2].i));
	json_object_set_new(
	    p, "systems",
	    json_integer(json_integer_value(json_object_get(p, "systems")) + row[2].i));
	return 0;
}

static void software(struct sw_db *db, struct inv_job *w)
{
	struct sw_db_val q[] = {SW_DB_TEXT(w->package)};
	json_t *list = w->package[0] ? json_array() : json_object();

	if (!list) {
		w->rc = SW_ENOMEM;
		return;
	}
	if (w->package[0]) {
		w->out = json_pack("{ss so}", "package", w->package, "systems", list);
		w->rc =
		    sw_db_exec(db,
			       "SELECT system, arch, version, since FROM packages WHERE name = ? "
			       "ORDER BY system, arch",
			       q, 1, holder_row, list, NULL, w->err, sizeof(w->err));
	} else {
		w->out = json_pack("{so}", "packages", list);
		w->rc = sw_db_exec(db,
				   "SELECT name, version, COUNT(*) FROM packages GROUP BY name, "
				   "version ORDER BY name, version",
				   NULL, 0, version_row, list, NULL, w->err, sizeof(w->err));
	}
}

static void inv_run(struct sw_db *db, void *arg)
{
	struct inv_job *w = arg;

	switch (w->kind) {
	case INV_UPLOAD:
		if ((w->rc = sw_db_begin(db, w->err, sizeof(w->err))))
			return;
		upload_apply(db, w);
		if (!w->rc && !w->conflict)
			w->rc = sw_db_commit(db, w->err, sizeof(w->err));
		else
			sw_db_rollback(db);
		break;
	case INV_SHOW: show(db, w); break;
	case INV_SOFTWARE: software(db, w); break;
	}
}

static void inv_done(struct server *s, void *arg)
{
	struct inv_job *w = arg;

	(void)s;
	if (w->rc == SW_ENOMEM)
		sw_seterr(w->err, sizeof(w->err), "out of memory");
	if (w->conflict) {
		sw_http_reply_json(w->req, 409,
				   json_pack("{ss sb}", "error",
					     "the site has another version of this inventory: "
					     "send the whole of it",
					     "full", 1));
	} else if (w->rc) {
		sw_http_reply_error(w->req, sw_http_status(w->rc), "%s", w->err);
	} else if (w->kind == INV_UPLOAD) {
		if (w->events)
			sw_info("inventory of %s: version %lld, %lld package change%s", w->system,
				(long long)json_integer_value(json_object_get(w->body, "seq")),
				(long long)w->events, w->events == 1 ? "" : "s");
		sw_http_reply_json(w->req, 200,
				   json_pack("{sO sI}", "seq", json_object_get(w->body, "seq"),
					     "changes", (json_int_t)w->events));
	} else {
		sw_http_reply_json(w->req, 200, w->out);
		w->out = NULL;
	}
	job_free(w);
}

static struct inv_job *job_new(struct sw_http_req *req, enum inv_kind kind)
{
	struct inv_job *w = calloc(1, sizeof(*w));

	if (!w)
		sw_http_reply_error(req, 500, "out of memory");
	else {
		w->kind = kind;
		w->req = req;
	}
	return w;
}

static void submit(struct server *s, struct inv_job *w)
{
	if (dbq_push(s, DBQ_SLOW_MS, inv_run, inv_done, w)) {
		sw_http_reply_error(w->req, 500, "out of memory");
		job_free(w);
	}
}

void inventory_post(struct sw_http_req *req, void *arg)
{
	struct server *s = arg;
	const struct sw_identity *id = sw_http_req_identity(req);
	struct inv_job *w;
	char err[300];
	int64_t seq = 0, from = 0;
	json_t *j;

	if (!sw_strmap_get(s->systems, id->cn)) {
		sw_http_reply_error(req, 403, "rejected: %s is not an enrolled system", id->cn);
		return;
	}
	if (!(j = sw_http_req_json(req)))
		return;
	if (sw_json_int(j, "seq", 1, INT64_MAX / 2, 1, &seq, err, sizeof(err)) ||
	    (!json_object_get(j, "packages") &&
	     sw_json_int(j, "from", 0, INT64_MAX / 2, 1, &from, err, sizeof(err))) ||
	    sw_inv_check(j, !json_object_get(j, "packages"), err, sizeof(err))) {
		json_decref(j);
		sw_http_reply_error(req, 400, "inventory refused: %s", err);
		return;
	}
	if (!(w = job_new(req, INV_UPLOAD))) {
		json_decref(j);
		return;
	}
	snprintf(w->system, sizeof(w->system), "%s", id->cn);
	w->body = j;
	submit(s, w);
}

void inventory_get(struct sw_http_req *req, void *arg)
{
	const char *name = sw_http_req_tail(req);
	struct inv_job *w;

	if (!sw_name_valid(name)) {
		sw_http_reply_error(req, 400, "not a system name");
		return;
	}
	if ((w = job_new(req, INV_SHOW))) {
		snprintf(w->system, sizeof(w->system), "%s", name);
		submit(arg, w);
	}
}

void inventory_software(struct sw_http_req *req, void *arg)
{
	const char *p = sw_http_req_query(req, "package");
	struct inv_job *w;

	if (p && !sw_dpkg_name_valid(p)) {
		sw_http_reply_error(req, 400,
				    "package must be a Debian package name, like libssl3");
		return;
	}
	if ((w = job_new(req, INV_SOFTWARE))) {
		snprintf(w->package, sizeof(w->package), "%s", p ? p : "");
		submit(arg, w);
	}
}
