/*
 * The upgrade journal: a run is a row in `upgrades` and one row per system in
 * `upgrade_systems`, written at every step, so the report survives crashes and resume
 * continues where the run was. A system's rows go through the write queue, in order,
 * and the call of a step waits until the row naming the step is stored: a slow
 * database delays no heartbeat, and a crash never finds a system a step ahead of its
 * journal. The run's row goes the same way, behind the rows queued before it.
 */
#include "upgrade.h"

#include "error.h"
#include "json.h"
#include "log.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const stuck_names[] = {"defer", "kill", "remove-role", "fail"};

static int name_index(const char *const *names, size_t n, const char *s, int fallback)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(s, names[i]) == 0)
			return (int)i;
	return fallback;
}

json_t *ujournal_options(const struct upgrade *u)
{
	return json_pack("{si si ss si sb sb sI sI}", "parallel", (int)u->o.parallel,
			 "stop_timeout_ms", (int)u->o.stop_timeout_ms, "on_stuck",
			 stuck_names[u->o.on_stuck], "max_failures", u->o.max_failures, "rollback",
			 u->o.rollback, "halted", u->halted, "bound_ms", (json_int_t)u->bound_ms,
			 "leg_at", (json_int_t)u->leg_at);
}

#define RUN_UPDATE                                                                                 \
	"UPDATE upgrades SET state = ?, reason = ?, server_step = ?, backup = ?, "                 \
	"finished_at = ?, options = ? WHERE id = ?"

/* The run's row as it stands when it is saved, written through the write queue behind
 * every system row queued before it: a finished run's journal has every outcome. */
struct run_row {
	int64_t id;
	char state[32], self[32], reason[512], backup[PATH_MAX];
	int64_t finished_at;
	char *opts;
};

static void run_row_write(struct sw_db *db, void *arg)
{
	struct run_row *r = arg;
	char err[300];
	struct sw_db_val p[] = {SW_DB_TEXT(r->state),	   SW_DB_TEXT(r->reason),
				SW_DB_TEXT(r->self),	   SW_DB_TEXT(r->backup),
				SW_DB_INT(r->finished_at), SW_DB_TEXT(r->opts ? r->opts : "{}"),
				SW_DB_INT(r->id)};

	if (sw_db_exec(db, RUN_UPDATE, p, 7, NULL, NULL, NULL, err, sizeof(err)))
		sw_err("upgrade journal: %s", err);
}

static void run_row_free(struct server *s, void *arg)
{
	struct run_row *r = arg;

	(void)s;
	free(r->opts);
	free(r);
}

void ujournal_run_save(struct upgrade *u)
{
	struct run_row *r = calloc(1, sizeof(*r));
	json_t *o = ujournal_options(u);

	upgrade_changed(u, NULL);
	if (!r || !(r->opts = sw_json_dump(o))) {
		sw_err("upgrade journal: out of memory for the run's row");
		free(r);
		json_decref(o);
		return;
	}
	json_decref(o);
	r->id = u->id;
	snprintf(r->state, sizeof(r->state), "%s", sw_run_state_name(u->state));
	snprintf(r->self, sizeof(r->self), "%s", uself_names[u->self]);
	snprintf(r->reason, sizeof(r->reason), "%s", u->reason);
	snprintf(r->backup, sizeof(r->backup), "%s", u->backup);
	r->finished_at = u->finished_at;
	if (dbq_push(u->s, DBQ_SLOW_MS, run_row_write, run_row_free, r)) {
		run_row_write(u->s->db, r); /* the queue cannot take it: now */
		run_row_free(u->s, r);
	}
}

#define SYS_UPDATE                                                                                 \
	"UPDATE upgrade_systems SET state = ?, step = ?, reason = ?, attempts = ?, times = ?, "    \
	"removed_roles = ?, started_at = ?, finished_at = ?, then_state = ?, cert_serial = ? "     \
	"WHERE upgrade_id = ? AND name = ?"
#define SYS_NPARAMS 12

/* A system's row as it stands now: its parameters for SYS_UPDATE, text in `own`. */
struct sys_row {
	struct sw_db_val p[SYS_NPARAMS];
	char *own[SYS_NPARAMS];
};

static int sys_row_take(struct sys_row *r, struct usys *y)
{
	char *times = sw_json_dump(y->times), *removed = sw_json_dump(y->removed);
	struct sw_db_val p[SYS_NPARAMS] = {
	    SW_DB_TEXT(sw_sys_state_name(y->state)),
	    SW_DB_TEXT(ystep_name(y->step)),
	    SW_DB_TEXT(y->reason),
	    SW_DB_INT(y->attempts),
	    SW_DB_TEXT(times ? times : "{}"),
	    SW_DB_TEXT(removed ? removed : "[]"),
	    SW_DB_INT(y->started_at),
	    SW_DB_INT(y->finished_at),
	    SW_DB_TEXT(y->step == YS_RESTART ? sw_sys_state_name(y->then) : ""),
	    SW_DB_TEXT(y->serial),
	    SW_DB_INT(y->u->id),
	    SW_DB_TEXT(y->name)};
	int rc = 0;

	for (int i = 0; i < SYS_NPARAMS; i++) {
		r->p[i] = p[i];
		r->own[i] = NULL;
		if (p[i].type == SW_DB_TEXT && !(r->p[i].s = r->own[i] = strdup(p[i].s)))
			rc = SW_ENOMEM;
	}
	free(times);
	free(removed);
	return rc;
}

static void sys_row_free(struct sys_row *r)
{
	for (int i = 0; i < SYS_NPARAMS; i++)
		free(r->own[i]);
}

static void sys_row_write(struct sw_db *db, const struct sys_row *r, const char *name)
{
	char err[300];

	if (sw_db_exec(db, SYS_UPDATE, r->p, SYS_NPARAMS, NULL, NULL, NULL, err, sizeof(err)))
		sw_err("upgrade journal: %s: %s", name, err);
}

/* A system's row on its way to the database through the write queue; then, if asked,
 * the call of its step, which is made only once the row that names it is stored. */
struct sys_write {
	struct sys_row row;
	char name[64];
	int call;
	int64_t id;
	size_t index;
	unsigned gen;
};

static void sys_write_run(struct sw_db *db, void *arg)
{
	struct sys_write *w = arg;

	sys_row_write(db, &w->row, w->name);
}

static void sys_write_done(struct server *s, void *arg)
{
	struct sys_write *w = arg;
	struct upgrade *u = s->upgrade;

	if (w->call && !s->stopping && u && u->id == w->id && w->index < u->nsys) {
		struct usys *y = &u->sys[w->index];
		/* unless the machine moved on meanwhile (an event, or a later step's call) */
		if (y->gen == w->gen && y->busy && y->state == SW_SYS_ACTIVE)
			upgrade_call_step(y);
	}
	sys_row_free(&w->row);
	free(w);
}

/* Written now, through `db`: when the write queue cannot take it, or with the run. */
static void sys_save_now(struct sw_db *db, struct usys *y)
{
	struct sys_row r;

	if (sys_row_take(&r, y) == 0)
		sys_row_write(db, &r, y->name);
	else
		sw_err("upgrade journal: %s: out of memory", y->name);
	sys_row_free(&r);
}

void ujournal_sys_save(struct usys *y, int then_call)
{
	struct sys_write *w = calloc(1, sizeof(*w));

	y->dirty = 0;
	upgrade_changed(y->u, y);
	if (!w || sys_row_take(&w->row, y)) {
		if (w)
			sys_row_free(&w->row);
		free(w);
		sys_save_now(y->u->s->db, y);
		if (then_call)
			upgrade_call_step(y);
		return;
	}
	snprintf(w->name, sizeof(w->name), "%s", y->name);
	w->call = then_call;
	w->id = y->u->id;
	w->index = (size_t)(y - y->u->sys);
	w->gen = y->gen;
	if (then_call)
		y->busy = 1; /* nothing else asks its agent meanwhile */
	if (dbq_push(y->u->s, DBQ_SLOW_MS, sys_write_run, sys_write_done, w)) {
		sys_row_free(&w->row);
		free(w);
		sys_save_now(y->u->s->db, y);
		if (then_call)
			upgrade_call_step(y);
	}
}

static int run_insert(struct sw_db *db, struct upgrade *u, char *err, size_t errlen)
{
	json_t *o = ujournal_options(u);
	char *opts = sw_json_dump(o);
	struct sw_db_val del[] = {SW_DB_INT(u->id)};
	struct sw_db_val p[] = {SW_DB_INT(u->id),
				SW_DB_TEXT(u->version),
				SW_DB_TEXT(u->from),
				SW_DB_TEXT(u->sha),
				SW_DB_INT((int64_t)u->size),
				SW_DB_TEXT(sw_run_state_name(u->state)),
				SW_DB_TEXT(u->reason),
				SW_DB_TEXT(opts ? opts : "{}"),
				SW_DB_TEXT(uself_names[u->self]),
				SW_DB_TEXT(u->backup),
				SW_DB_INT(u->started_at),
				SW_DB_INT(u->finished_at)};
	int rc;

	if ((rc = sw_db_begin(db, err, errlen)))
		goto out;
	if ((rc = sw_db_exec(db, "DELETE FROM upgrade_systems WHERE upgrade_id = ?", del, 1, NULL,
			     NULL, NULL, err, errlen)) ||
	    (rc = sw_db_exec(db, "DELETE FROM upgrades WHERE id = ?", del, 1, NULL, NULL, NULL, err,
			     errlen)) ||
	    (rc = sw_db_exec(db,
			     "INSERT INTO upgrades (id, version, from_version, package_sha256, "
			     "package_size, state, reason, options, server_step, backup, "
			     "started_at, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
			     p, 12, NULL, NULL, NULL, err, errlen)))
		goto fail;
	for (size_t i = 0; i < u->nsys; i++) {
		struct usys *y = &u->sys[i];
		struct sw_db_val q[] = {SW_DB_INT(u->id), SW_DB_TEXT(y->name),
					SW_DB_INT((int64_t)i), SW_DB_TEXT(y->from),
					SW_DB_TEXT(sw_sys_state_name(y->state))};

		if ((rc = sw_db_exec(db,
				     "INSERT INTO upgrade_systems (upgrade_id, name, position, "
				     "from_version, state) VALUES (?, ?, ?, ?, ?)",
				     q, 5, NULL, NULL, NULL, err, errlen)))
			goto fail;
	}
	if ((rc = sw_db_commit(db, err, errlen)))
		goto fail;
	/* now, whole: a rollback writes the journal again before its server re-executes */
	for (size_t i = 0; i < u->nsys; i++) {
		u->sys[i].dirty = 0;
		sys_save_now(db, &u->sys[i]);
	}
	goto out;
fail:
	sw_db_rollback(db);
out:
	free(opts);
	json_decref(o);
	return rc;
}

int ujournal_run_insert(struct upgrade *u, char *err, size_t errlen)
{
	return run_insert(u->s->db, u, err, errlen);
}

/* A new run's rows, before the loop knows of the run, so nothing else reads or changes
 * it while they are written off the loop. */
struct run_begin {
	struct upgrade *u;
	void (*done)(struct upgrade *u, int rc, const char *err, void *arg);
	void *arg;
	int rc;
	char err[300];
};

static void begin_run(struct sw_db *db, void *arg)
{
	struct run_begin *b = arg;

	b->rc = run_insert(db, b->u, b->err, sizeof(b->err));
}

static void begin_done(struct server *s, void *arg)
{
	struct run_begin *b = arg;

	(void)s;
	b->done(b->u, b->rc, b->err, b->arg);
	free(b);
}

int ujournal_run_begin(struct upgrade *u,
		       void (*done)(struct upgrade *u, int rc, const char *err, void *arg),
		       void *arg)
{
	struct run_begin *b = calloc(1, sizeof(*b));

	if (!b)
		return SW_ENOMEM;
	b->u = u;
	b->done = done;
	b->arg = arg;
	if (dbq_push(u->s, DBQ_SLOW_MS, begin_run, begin_done, b)) {
		free(b);
		return SW_ENOMEM;
	}
	return 0;
}

struct load_ctx {
	struct upgrade *u;
	int rows;
};

static int run_row(void *arg, int ncols, const struct sw_db_val *row)
{
	struct load_ctx *l = arg;
	struct upgrade *u = l->u;
	json_t *opts = NULL;
	json_int_t v;
	const char *p;

	(void)ncols;
	l->rows++;
	u->id = row[0].i;
	snprintf(u->version, sizeof(u->version), "%s", row[1].s);
	snprintf(u->from, sizeof(u->from), "%s", row[2].s);
	snprintf(u->sha, sizeof(u->sha), "%s", row[3].s);
	u->size = (uint64_t)row[4].i;
	u->o.package_size = u->size;
	if ((u->state = sw_run_state_parse(row[5].s)) == SW_RUN_UNKNOWN)
		u->state = SW_RUN_INTERRUPTED;
	snprintf(u->reason, sizeof(u->reason), "%s", row[6].s);
	u->self = (enum uself)name_index(uself_names, SELF_ROLLED_BACK + 1, row[8].s, SELF_PENDING);
	snprintf(u->backup, sizeof(u->backup), "%s", row[9].s);
	u->started_at = row[10].i;
	u->finished_at = row[11].i;
	u->o.parallel = 5;
	u->o.stop_timeout_ms = 30000;
	u->o.max_failures = -1;
	u->o.on_stuck = STUCK_DEFER;
	if (sw_json_parse_object(row[7].s, strlen(row[7].s), &opts, NULL, 0) == 0) {
		if ((v = json_integer_value(json_object_get(opts, "parallel"))) > 0)
			u->o.parallel = (unsigned)v;
		if ((v = json_integer_value(json_object_get(opts, "stop_timeout_ms"))) > 0)
			u->o.stop_timeout_ms = (unsigned)v;
		u->o.max_failures = (int)json_integer_value(json_object_get(opts, "max_failures"));
		if ((p = json_string_value(json_object_get(opts, "on_stuck"))))
			u->o.on_stuck = name_index(stuck_names, 4, p, STUCK_DEFER);
		u->o.rollback = json_is_true(json_object_get(opts, "rollback"));
		u->halted = json_is_true(json_object_get(opts, "halted"));
		u->bound_ms = json_integer_value(json_object_get(opts, "bound_ms"));
		u->leg_at = json_integer_value(json_object_get(opts, "leg_at"));
	}
	json_decref(opts);
	return 0;
}

static int sys_row(void *arg, int ncols, const struct sw_db_val *row)
{
	struct upgrade *u = arg;
	struct usys *y = &u->sys[u->nsys++];

	(void)ncols;
	memset(y, 0, sizeof(*y));
	y->u = u;
	snprintf(y->name, sizeof(y->name), "%s", row[0].s);
	snprintf(y->from, sizeof(y->from), "%s", row[1].s);
	y->state = ystate_parse(row[2].s);
	y->step = ystep_parse(row[3].s);
	snprintf(y->reason, sizeof(y->reason), "%s", row[4].s);
	y->attempts = (int)row[5].i;
	if (sw_json_parse_object(row[6].s, strlen(row[6].s), &y->times, NULL, 0))
		y->times = json_object();
	y->removed = json_loads(row[7].s, 0, NULL);
	if (!json_is_array(y->removed)) {
		json_decref(y->removed);
		y->removed = json_array();
	}
	y->started_at = row[8].i;
	y->finished_at = row[9].i;
	y->deferred_at = y->finished_at;
	y->then = row[10].s[0] ? ystate_parse(row[10].s) : SW_SYS_FAILED;
	snprintf(y->serial, sizeof(y->serial), "%s", row[11].s);
	return 0;
}

int ujournal_load(struct server *s, struct upgrade **out, char *err, size_t errlen)
{
	struct upgrade *u = calloc(1, sizeof(*u));
	struct load_ctx l = {u, 0};
	int64_t n = 0;
	int rc;

	*out = NULL;
	if (!u)
		return SW_ENOMEM;
	u->s = s;
	rc = sw_db_exec(s->db,
			"SELECT id, version, from_version, package_sha256, package_size, state, "
			"reason, options, server_step, backup, started_at, finished_at FROM "
			"upgrades ORDER BY id DESC LIMIT 1",
			NULL, 0, run_row, &l, NULL, err, errlen);
	if (rc || !l.rows) {
		free(u);
		return rc;
	}
	struct sw_db_val p[] = {SW_DB_INT(u->id)};
	if ((rc = sw_db_exec(s->db, "SELECT COUNT(*) FROM upgrade_systems WHERE upgrade_id = ?", p,
			     1, sw_db_int_row, &n, NULL, err, errlen)) ||
	    !(u->sys = calloc((size_t)n + 1, sizeof(*u->sys))) ||
	    (rc = sw_db_exec(s->db,
			     "SELECT name, from_version, state, step, reason, attempts, times, "
			     "removed_roles, started_at, finished_at, then_state, cert_serial "
			     "FROM upgrade_systems WHERE upgrade_id = ? ORDER BY position",
			     p, 1, sys_row, u, NULL, err, errlen)) ||
	    (rc = upgrade_index_build(u))) {
		upgrade_destroy(u);
		return rc ? rc : SW_ENOMEM;
	}
	*out = u;
	return 0;
}
