/*
 * Inventory: what each system is and has (lib/inventory.h), and when each package
 * appeared, changed version or left.
 *
 *   POST /v1/inventory             an agent's whole inventory, or a delta from the version
 *                                  the site has ("from"); 409 when it has another
 *   GET  /v1/inventory/NAME        one system's hardware, packages and their history
 *   GET  /v1/software[?package=P]  which systems have P at which version; without P, every
 *                                  package with how many systems have each version
 *   GET  /v1/licenses/report[?days=N]  per metered product: licenses, the most in use at
 *                                  once, the systems that have it installed and those that
 *                                  ran it in the last N days (90): what can go
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
#include "usagerec.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HISTORY_SHOWN 500 /* of one system's package history, the latest */
#define DAY_MS_INV    86400000LL

enum inv_kind { INV_UPLOAD, INV_SHOW, INV_SOFTWARE, INV_REPORT };

#define BATCH_ROWS 100 /* packages that appeared, inserted by one statement */

struct inv_job {
	enum inv_kind kind;
	struct sw_http_req *req;
	char system[64];
	char package[SW_DPKG_NAME_MAX + 1];
	json_t *body; /* INV_UPLOAD: the request, checked */
	json_t *out;
	int64_t events;			 /* INV_UPLOAD: rows of history written */
	int64_t days;			 /* INV_REPORT: the window */
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

/* --- installed, used, licensed --- */

struct product_row {
	char name[64], package[SW_DPKG_NAME_MAX + 1];
	int64_t licenses;
	int enforce;
};

struct product_rows {
	struct product_row *v;
	size_t n, cap;
};

static int product_row(void *arg, int ncols, const struct sw_db_val *row)
{
	struct product_rows *r = arg;

	(void)ncols;
	if (r->n == r->cap) {
		size_t cap = r->cap ? r->cap * 2 : 16;
		struct product_row *v = realloc(r->v, cap * sizeof(*v));

		if (!v)
			return SW_ENOMEM;
		r->v = v;
		r->cap = cap;
	}
	snprintf(r->v[r->n].name, sizeof(r->v[r->n].name), "%s", row[0].s);
	snprintf(r->v[r->n].package, sizeof(r->v[r->n].package), "%s", row[2].s ? row[2].s : "");
	r->v[r->n].licenses = row[1].i;
	r->v[r->n].enforce = row[3].i != 0;
	r->n++;
	return 0;
}

static int set_row(void *arg, int ncols, const struct sw_db_val *row)
{
	(void)ncols;
	return sw_strmap_set(arg, row[0].s, (void *)1) ? SW_ENOMEM : 0;
}

struct runs {
	int64_t *starts, *ends;
	size_t n, cap;
};

static int run_row(void *arg, int ncols, const struct sw_db_val *row)
{
	struct runs *r = arg;

	(void)ncols;
	if (r->n == r->cap) {
		size_t cap = r->cap ? r->cap * 2 : 256;
		int64_t *s = realloc(r->starts, cap * sizeof(*s)), *e;

		if (!s)
			return SW_ENOMEM;
		r->starts = s;
		if (!(e = realloc(r->ends, cap * sizeof(*e))))
			return SW_ENOMEM;
		r->ends = e;
		r->cap = cap;
	}
	r->starts[r->n] = row[0].i;
	r->ends[r->n] = row[1].i < row[0].i ? row[0].i : row[1].i;
	r->n++;
	return 0;
}

struct unused {
	struct sw_strmap *used;
	int64_t n;
};

static void count_unused(const char *key, void *value, void *arg)
{
	struct unused *u = arg;

	(void)value;
	if (!sw_strmap_get(u->used, key))
		u->n++;
}

static int one_product(struct sw_db *db, struct inv_job *w, const struct product_row *p,
		       int64_t cutoff)
{
	struct sw_strmap *used = sw_strmap_new(), *users = sw_strmap_new(), *have = NULL;
	struct sw_db_val q[] = {SW_DB_TEXT(p->name), SW_DB_INT(cutoff)};
	struct sw_db_val d[] = {SW_DB_TEXT(p->name), SW_DB_INT(cutoff / DAY_MS_INV * DAY_MS_INV)};
	struct runs runs = {0};
	int64_t peak = 0, daily = 0;
	json_t *o;
	int rc = SW_ENOMEM;

	if (!used || !users)
		goto out;
	if ((rc = sw_db_exec(db,
			     "SELECT DISTINCT host FROM usage WHERE product = ? AND kind = 'run' "
			     "AND start_ms >= ?",
			     q, 2, set_row, used, NULL, w->err, sizeof(w->err))) ||
	    (rc = sw_db_exec(db,
			     "SELECT DISTINCT user_name FROM usage WHERE product = ? AND kind = "
			     "'run' AND start_ms >= ?",
			     q, 2, set_row, users, NULL, w->err, sizeof(w->err))) ||
	    (rc =
		 sw_db_exec(db,
			    "SELECT start_ms, end_ms FROM usage WHERE product = ? AND kind = 'run' "
			    "AND start_ms >= ?",
			    q, 2, run_row, &runs, NULL, w->err, sizeof(w->err))) ||
	    /* days already condensed keep their own peak */
	    (rc = sw_db_exec(db,
			     "SELECT COALESCE(MAX(peak_concurrent), 0) FROM usage_daily WHERE "
			     "product = ? AND day >= ?",
			     d, 2, seq_row, &daily, NULL, w->err, sizeof(w->err))))
		goto out;
	peak = usagerec_peak(runs.starts, runs.ends, runs.n);
	if (daily > peak)
		peak = daily;
	o = json_pack("{ss sI sb sI sI sI}", "product", p->name, "licenses",
		      (json_int_t)p->licenses, "enforced", p->enforce, "peak", (json_int_t)peak,
		      "used_systems", (json_int_t)sw_strmap_count(used), "users",
		      (json_int_t)sw_strmap_count(users));
	if (!o)
		goto out;
	if (p->enforce)
		json_object_set_new(o, "spare_licenses",
				    json_integer(p->licenses > peak ? p->licenses - peak : 0));
	if (p->package[0]) {
		struct sw_db_val k[] = {SW_DB_TEXT(p->package)};
		struct unused u = {used, 0};

		if (!(have = sw_strmap_new()) ||
		    (rc = sw_db_exec(db, "SELECT DISTINCT system FROM packages WHERE name = ?", k,
				     1, set_row, have, NULL, w->err, sizeof(w->err)))) {
			json_decref(o);
			rc = have ? rc : SW_ENOMEM;
			goto out;
		}
		sw_strmap_each(have, count_unused, &u);
		json_object_set_new(o, "package", json_string(p->package));
		json_object_set_new(o, "installed",
				    json_integer((json_int_t)sw_strmap_count(have)));
		json_object_set_new(o, "installed_unused", json_integer(u.n));
	}
	rc = json_array_append_new(json_object_get(w->out, "products"), o) ? SW_ENOMEM : 0;
out:
	free(runs.starts);
	free(runs.ends);
	sw_strmap_free(used);
	sw_strmap_free(users);
	sw_strmap_free(have);
	return rc;
}

static void report(struct sw_db *db, struct inv_job *w)
{
	struct product_rows rows = {0};
	int64_t cutoff = sw_now_ms() - w->days * DAY_MS_INV;

	if (!(w->out = json_pack("{sI s[]}", "days", (json_int_t)w->days, "products"))) {
		w->rc = SW_ENOMEM;
		return;
	}
	w->rc =
	    sw_db_exec(db, "SELECT name, licenses, package, enforce FROM products ORDER BY name",
		       NULL, 0, product_row, &rows, NULL, w->err, sizeof(w->err));
	for (size_t i = 0; !w->rc && i < rows.n; i++)
		w->rc = one_product(db, w, &rows.v[i], cutoff);
	free(rows.v);
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
	case INV_REPORT: report(db, w); break;
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

void inventory_license_report(struct sw_http_req *req, void *arg)
{
	struct server *s = arg;
	const char *d = sw_http_req_query(req, "days");
	int64_t days = 90;
	struct inv_job *w;

	if (d && sw_int_parse(d, 1, s->detail_days ? s->detail_days : 36500, &days)) {
		sw_http_reply_error(req, 400,
				    "days must be 1 to %u, the days the site keeps each run "
				    "([metering] detail_days)",
				    s->detail_days);
		return;
	}
	if ((w = job_new(req, INV_REPORT))) {
		w->days = days;
		submit(s, w);
	}
}
