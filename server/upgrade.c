/*
 * The upgrade orchestrator: rolls a signed package out to the site server and then to
 * every site system, and never waits without a bound.
 *
 * A run is a row in `upgrades` and one row per system in `upgrade_systems`, written at
 * every step, so the report survives crashes and `resume` continues where the run was.
 * The server upgrades itself first (package extracted into versions/V, database
 * backup when the package migrates the schema, migrations, switch of `current`,
 * re-exec); the new program finds the run in the journal and goes on.
 *
 * Each system then goes drain → stop → stage → switch → wait → start → verify, each
 * step one call to its agent with a deadline. Up to `parallel` systems are in flight;
 * metering servers go one at a time so metering stays available. A system whose
 * services cannot be stopped (agent unreachable, not answering, stop timed out, a
 * service stuck) gets the policy: defer (upgraded the moment it reports again, its
 * services then killed after the stop timeout), kill (the stop escalates to SIGKILL),
 * remove-role (the role goes, the system is upgraded, the role comes back) or fail
 * (the run stops; systems that had not switched get their services back on the old
 * version). Every step is idempotent on the agent's side, which is what makes resume
 * safe.
 */
#include "server.h"

#include "error.h"
#include "install.h"
#include "json.h"
#include "log.h"
#include "pkg.h"
#include "proto.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#define TICK_MS		  250	 /* scheduling and polling */
#define STAGE_TIMEOUT_MS  120000 /* download, verification and extraction on an agent */
#define SWITCH_TIMEOUT_MS 10000	 /* the agent's answer to a switch */
#define RETURN_TIMEOUT_MS 30000	 /* for an agent to come back on the new version */
#define START_TIMEOUT_MS  20000	 /* for its services to be running again */
#define POLL_TIMEOUT_MS	  2000	 /* one status poll */
#define PROBE_TIMEOUT_MS  3000	 /* one preflight probe */
#define KILL_EXTRA_MS	  4000	 /* SIGKILL and its bounded wait, on the agent */
#define MARGIN_MS	  1500	 /* for the answer to travel */
#define CATCHUP_DELAY_MS  3000	 /* a deferred system is retried no sooner than this */
#define BACKUP_TIMEOUT_MS 600000 /* pg_dump, or psql restoring, the site database */
#define METERING_ROLE	  "software-metering"

enum ystate { Y_PENDING, Y_ACTIVE, Y_UPGRADED, Y_DEFERRED, Y_FAILED, Y_UNCHANGED, Y_ROLLED_BACK };
static const char *const ystate_names[] = {"pending", "active",	   "upgraded",	 "deferred",
					   "failed",  "unchanged", "rolled-back"};

struct usys {
	struct upgrade *u;
	char name[64];
	char from[SW_PKG_VERSION_MAX + 1];
	enum ystate state;
	char step[16];
	char reason[400];
	int attempts;
	int kill;      /* this stop escalates to SIGKILL */
	int catchup;   /* a deferred system, upgraded now that it is back */
	int busy;      /* a call to its agent is in flight */
	int reachable; /* its agent answered the last call */
	int64_t started_at, finished_at, step_at, deferred_at, wait_until;
	json_t *times;	 /* step → ms spent */
	json_t *removed; /* roles removed by the remove-role policy, to restore */
	json_t *stuck_roles;
};

struct upgrade {
	struct server *s;
	int64_t id;
	char version[SW_PKG_VERSION_MAX + 1];
	char from[SW_PKG_VERSION_MAX + 1]; /* the server's version before the run */
	char min_version[SW_PKG_VERSION_MAX + 1];
	char sha[65];
	uint64_t size;
	char state[16];
	char reason[400];
	char server_step[16];
	char backup[PATH_MAX];
	char pending_backup[PATH_MAX]; /* where pg_dump is writing */
	unsigned parallel, stop_timeout_ms;
	int max_failures; /* -1: no bound */
	char on_stuck[16];
	int rollback;
	int64_t started_at, finished_at;
	int halted;   /* no system starts any more: the run failed */
	int catchups; /* deferred systems upgraded since the run finished */
	int server_busy;
	struct usys *sys;
	size_t nsys;
	struct sw_strmap *index; /* name → its struct usys, for the heartbeat path */
	uv_timer_t tick;
	int tick_started;
};

/* --- the journal --- */

static json_t *options_json(const struct upgrade *u)
{
	return json_pack("{si si ss si sb sb}", "parallel", (int)u->parallel, "stop_timeout_ms",
			 (int)u->stop_timeout_ms, "on_stuck", u->on_stuck, "max_failures",
			 u->max_failures, "rollback", u->rollback, "halted", u->halted);
}

static void run_save(struct upgrade *u)
{
	char err[300];
	json_t *o = options_json(u);
	char *opts = sw_json_dump(o);
	struct sw_db_val p[] = {
	    SW_DB_TEXT(u->state),  SW_DB_TEXT(u->reason),     SW_DB_TEXT(u->server_step),
	    SW_DB_TEXT(u->backup), SW_DB_INT(u->finished_at), SW_DB_TEXT(opts ? opts : "{}"),
	    SW_DB_INT(u->id)};

	if (sw_db_exec(u->s->db,
		       "UPDATE upgrades SET state = ?, reason = ?, server_step = ?, backup = ?, "
		       "finished_at = ?, options = ? WHERE id = ?",
		       p, 7, NULL, NULL, NULL, err, sizeof(err)))
		sw_err("upgrade journal: %s", err);
	free(opts);
	json_decref(o);
}

static void sys_save(struct usys *y)
{
	char err[300];
	char *times = sw_json_dump(y->times);
	char *removed = sw_json_dump(y->removed);
	struct sw_db_val p[] = {SW_DB_TEXT(ystate_names[y->state]),
				SW_DB_TEXT(y->step),
				SW_DB_TEXT(y->reason),
				SW_DB_INT(y->attempts),
				SW_DB_TEXT(times ? times : "{}"),
				SW_DB_TEXT(removed ? removed : "[]"),
				SW_DB_INT(y->started_at),
				SW_DB_INT(y->finished_at),
				SW_DB_INT(y->u->id),
				SW_DB_TEXT(y->name)};

	if (sw_db_exec(y->u->s->db,
		       "UPDATE upgrade_systems SET state = ?, step = ?, reason = ?, attempts = ?, "
		       "times = ?, removed_roles = ?, started_at = ?, finished_at = ? "
		       "WHERE upgrade_id = ? AND name = ?",
		       p, 10, NULL, NULL, NULL, err, sizeof(err)))
		sw_err("upgrade journal: %s", err);
	free(times);
	free(removed);
}

/* Writes the whole run: a new run, or the journal again after a database restore. */
static int run_insert(struct upgrade *u, char *err, size_t errlen)
{
	json_t *o = options_json(u);
	char *opts = sw_json_dump(o);
	struct sw_db_val del[] = {SW_DB_INT(u->id)};
	struct sw_db_val p[] = {
	    SW_DB_INT(u->id),	   SW_DB_TEXT(u->version),	   SW_DB_TEXT(u->from),
	    SW_DB_TEXT(u->sha),	   SW_DB_INT((int64_t)u->size),	   SW_DB_TEXT(u->state),
	    SW_DB_TEXT(u->reason), SW_DB_TEXT(opts ? opts : "{}"), SW_DB_TEXT(u->server_step),
	    SW_DB_TEXT(u->backup), SW_DB_INT(u->started_at),	   SW_DB_INT(u->finished_at)};
	int rc;

	if ((rc = sw_db_begin(u->s->db, err, errlen)))
		goto out;
	if ((rc = sw_db_exec(u->s->db, "DELETE FROM upgrade_systems WHERE upgrade_id = ?", del, 1,
			     NULL, NULL, NULL, err, errlen)) ||
	    (rc = sw_db_exec(u->s->db, "DELETE FROM upgrades WHERE id = ?", del, 1, NULL, NULL,
			     NULL, err, errlen)) ||
	    (rc = sw_db_exec(u->s->db,
			     "INSERT INTO upgrades (id, version, from_version, package_sha256, "
			     "package_size, state, reason, options, server_step, backup, "
			     "started_at, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
			     p, 12, NULL, NULL, NULL, err, errlen)))
		goto fail;
	for (size_t i = 0; i < u->nsys; i++) {
		struct usys *y = &u->sys[i];
		struct sw_db_val q[] = {SW_DB_INT(u->id), SW_DB_TEXT(y->name),
					SW_DB_INT((int64_t)i), SW_DB_TEXT(y->from),
					SW_DB_TEXT(ystate_names[y->state])};

		if ((rc = sw_db_exec(u->s->db,
				     "INSERT INTO upgrade_systems (upgrade_id, name, position, "
				     "from_version, state) VALUES (?, ?, ?, ?, ?)",
				     q, 5, NULL, NULL, NULL, err, errlen)))
			goto fail;
	}
	if ((rc = sw_db_commit(u->s->db, err, errlen)))
		goto fail;
	for (size_t i = 0; i < u->nsys; i++)
		sys_save(&u->sys[i]);
	goto out;
fail:
	sw_db_rollback(u->s->db);
out:
	free(opts);
	json_decref(o);
	return rc;
}

static void upgrade_destroy(struct upgrade *u)
{
	if (!u)
		return;
	for (size_t i = 0; i < u->nsys; i++) {
		json_decref(u->sys[i].times);
		json_decref(u->sys[i].removed);
		json_decref(u->sys[i].stuck_roles);
	}
	sw_strmap_free(u->index);
	free(u->sys);
	free(u);
}

/* The index by name; `sys` must not move afterwards. */
static int index_build(struct upgrade *u)
{
	if (!(u->index = sw_strmap_new()))
		return SW_ENOMEM;
	for (size_t i = 0; i < u->nsys; i++)
		if (sw_strmap_set(u->index, u->sys[i].name, &u->sys[i]))
			return SW_ENOMEM;
	return 0;
}

static void on_tick_closed(uv_handle_t *h)
{
	upgrade_destroy(h->data);
}

void upgrade_free(struct server *s)
{
	struct upgrade *u = s->upgrade;

	s->upgrade = NULL;
	if (!u)
		return;
	/* At shutdown the loop has closed every handle already. */
	if (u->tick_started && !uv_is_closing((uv_handle_t *)&u->tick))
		uv_close((uv_handle_t *)&u->tick, on_tick_closed);
	else
		upgrade_destroy(u);
}

/* --- state of the run --- */

static int64_t now_ms(void)
{
	return sw_now_ms();
}

static int is_active_state(const char *state)
{
	return strcmp(state, "running") == 0 || strcmp(state, "rolling-back") == 0;
}

static size_t count(const struct upgrade *u, enum ystate st)
{
	size_t n = 0;

	for (size_t i = 0; i < u->nsys; i++)
		n += u->sys[i].state == st;
	return n;
}

static void set_step(struct usys *y, const char *step)
{
	int64_t now = now_ms();

	if (y->step[0] && y->step_at) {
		json_t *was = json_object_get(y->times, y->step);
		json_int_t spent = now - y->step_at + (was ? json_integer_value(was) : 0);
		json_object_set_new(y->times, y->step, json_integer(spent));
	}
	snprintf(y->step, sizeof(y->step), "%s", step);
	y->step_at = now;
	sys_save(y);
}

static void finish_run(struct upgrade *u)
{
	size_t deferred = count(u, Y_DEFERRED), failed = count(u, Y_FAILED);

	if (u->rollback)
		snprintf(u->state, sizeof(u->state), "%s", u->halted ? "failed" : "rolled-back");
	else if (u->halted || failed)
		snprintf(u->state, sizeof(u->state), "failed");
	else if (deferred)
		snprintf(u->state, sizeof(u->state), "deferred");
	else
		snprintf(u->state, sizeof(u->state), "done");
	if (!u->reason[0] && failed)
		snprintf(u->reason, sizeof(u->reason), "%zu system%s failed", failed,
			 failed == 1 ? "" : "s");
	u->finished_at = now_ms();
	run_save(u);
	sw_info("upgrade %" PRId64 " to %s: %s (%zu upgraded, %zu deferred, %zu failed)%s%s", u->id,
		u->version, u->state, count(u, Y_UPGRADED), deferred, failed,
		u->reason[0] ? ": " : "", u->reason);
}

static void halt(struct upgrade *u, const char *fmt, const char *name, const char *why)
{
	if (u->halted)
		return;
	u->halted = 1;
	snprintf(u->reason, sizeof(u->reason), fmt, name, why);
	sw_warn("upgrade %" PRId64 " stops: %s", u->id, u->reason);
	for (size_t i = 0; i < u->nsys; i++) {
		if (u->sys[i].state == Y_PENDING) {
			u->sys[i].state = Y_UNCHANGED;
			snprintf(u->sys[i].reason, sizeof(u->sys[i].reason), "the run stopped");
			sys_save(&u->sys[i]);
		}
	}
	run_save(u);
}

static void budget_check(struct upgrade *u)
{
	size_t bad = count(u, Y_DEFERRED) + count(u, Y_FAILED);
	char n[32];

	if (u->max_failures >= 0 && bad > (size_t)u->max_failures) {
		snprintf(n, sizeof(n), "%d", u->max_failures);
		halt(u, "more than %s systems deferred or failed%s", n, "");
	}
}

static void system_done(struct usys *y, enum ystate st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void system_done(struct usys *y, enum ystate st, const char *fmt, ...)
{
	va_list ap;

	if (fmt) {
		va_start(ap, fmt);
		vsnprintf(y->reason, sizeof(y->reason), fmt, ap);
		va_end(ap);
	} else {
		y->reason[0] = '\0';
	}
	set_step(y, st == Y_UPGRADED || st == Y_ROLLED_BACK ? "done" : y->step);
	y->state = st;
	y->finished_at = now_ms();
	if (st == Y_DEFERRED)
		y->deferred_at = y->finished_at;
	sys_save(y);
	sw_info("upgrade: %s %s%s%s", y->name, ystate_names[st], y->reason[0] ? ": " : "",
		y->reason);
	if (st == Y_DEFERRED || st == Y_FAILED)
		budget_check(y->u);
}

/* --- calls to agents --- */

struct ycall {
	struct usys *y;
	int64_t id; /* the run it belongs to, in case the run changed meanwhile */
	struct server *s;
};

typedef void (*ydone)(struct usys *y, const struct sw_http_result *res, json_t *reply);

struct ycall_fn {
	struct ycall c;
	ydone fn;
};

static void on_call(const struct sw_http_result *res, void *arg)
{
	struct ycall_fn *c = arg;
	struct server *s = c->c.s;
	struct upgrade *u = s->upgrade;
	json_t *reply = NULL;

	/* At shutdown answers are cancelled: the journal keeps the step, resume redoes it. */
	if (!s->stopping && u && u->id == c->c.id) {
		c->c.y->busy = 0;
		c->c.y->reachable = res->status != 0;
		if (res->status >= 200 && res->status < 300)
			sw_json_parse_object(res->body, res->len, &reply, NULL, 0);
		c->fn(c->c.y, res, reply);
	}
	json_decref(reply);
	free(c);
}

static int call(struct usys *y, const char *method, const char *path, json_t *body,
		unsigned timeout_ms, ydone fn)
{
	struct server *s = y->u->s;
	struct system *sys = sw_strmap_get(s->systems, y->name);
	struct ycall_fn *c;
	struct sw_http_result res = {0};

	if (!sys) {
		json_decref(body);
		snprintf(res.error, sizeof(res.error), "no longer enrolled");
		res.code = SW_ENOTFOUND;
		fn(y, &res, NULL);
		return -1;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		json_decref(body);
		return -1;
	}
	c->c.y = y;
	c->c.id = y->u->id;
	c->c.s = s;
	c->fn = fn;
	y->busy = 1;
	if (control_call(s, sys, method, path, body, timeout_ms, on_call, c)) {
		y->busy = 0;
		free(c);
		snprintf(res.error, sizeof(res.error), "no usable address");
		res.code = SW_EUNREACH;
		fn(y, &res, NULL);
		return -1;
	}
	return 0;
}

/* A deadline on the agent's clock for a call the server gives up on after `ms`. */
static json_int_t agent_deadline(struct usys *y, unsigned ms)
{
	struct system *sys = sw_strmap_get(y->u->s->systems, y->name);

	return now_ms() + ms + (sys ? sys->clock_skew_ms : 0);
}

static void do_stop(struct usys *y);
static void do_stage(struct usys *y);
static void do_switch(struct usys *y);
static void do_start(struct usys *y);
static void do_restore(struct usys *y);
static void drive(struct upgrade *u);

static void on_restarted_anyway(struct usys *y, const struct sw_http_result *res, json_t *reply)
{
	(void)res;
	(void)reply;
	drive(y->u);
}

/* Services stopped for an upgrade that is not going to happen here go back up. */
static void restart_old(struct usys *y)
{
	if (y->reachable)
		call(y, "POST", "/v1/upgrade/start",
		     json_pack("{sI}", "deadline_ms", agent_deadline(y, START_TIMEOUT_MS)),
		     START_TIMEOUT_MS + MARGIN_MS, on_restarted_anyway);
}

/* The roles bringing the services named in `failed` ([{"service":…}]), from what the
 * agent last reported; every role with services when nothing is known. */
static json_t *roles_of(struct usys *y, const json_t *failed)
{
	struct system *sys = sw_strmap_get(y->u->s->systems, y->name);
	json_t *roles = json_array(), *svc, *f;
	size_t i, k;

	if (!sys)
		return roles;
	json_array_foreach(sys->services, i, svc)
	{
		const char *name = json_string_value(json_object_get(svc, "name"));
		const char *role = json_string_value(json_object_get(svc, "role"));
		int wanted = !failed;

		json_array_foreach(failed, k, f)
		{
			const char *n = json_string_value(json_object_get(f, "service"));
			if (name && n && strcmp(name, n) == 0)
				wanted = 1;
		}
		if (!wanted || !role)
			continue;
		int have = 0;
		json_t *r;
		json_array_foreach(roles, k, r) have |= strcmp(json_string_value(r), role) == 0;
		if (!have)
			json_array_append_new(roles, json_string(role));
	}
	return roles;
}

static void push_roles(struct usys *y)
{
	struct system *sys = sw_strmap_get(y->u->s->systems, y->name);

	if (sys)
		control_push_roles(y->u->s, sys, NULL, NULL, 0, 5000);
}

/* The services of `y` could not be stopped, for `why`: the run's policy decides. */
static void stuck(struct usys *y, const char *why, const json_t *failed)
{
	struct upgrade *u = y->u;
	struct system *sys = sw_strmap_get(u->s->systems, y->name);

	if (y->catchup) {
		restart_old(y);
		system_done(y, Y_DEFERRED, "%s", why);
		return;
	}
	if (strcmp(u->on_stuck, "remove-role") == 0 && sys && !json_array_size(y->removed)) {
		json_t *roles = roles_of(y, failed), *r;
		char err[200], names[300] = "";
		size_t i;

		json_array_foreach(roles, i, r)
		{
			const char *role = json_string_value(r);
			if (registry_role_set(u->s, sys, role, 0, err, sizeof(err)) == 0) {
				json_array_append(y->removed, r);
				snprintf(names + strlen(names), sizeof(names) - strlen(names),
					 "%s%s", i ? ", " : "", role);
			}
		}
		json_decref(roles);
		if (json_array_size(y->removed)) {
			sw_info("upgrade: %s: %s; role %s removed until it is upgraded", y->name,
				why, names);
			sys_save(y);
			push_roles(y);
			if (y->reachable) {
				/* Without the role its services go; what remains stops with SIGKILL
				 * after the grace period. */
				y->kill = 1;
				do_stop(y);
				return;
			}
			system_done(y, Y_DEFERRED, "role %s removed; %s", names, why);
			return;
		}
	}
	if (strcmp(u->on_stuck, "fail") == 0) {
		restart_old(y);
		system_done(y, Y_FAILED, "%s", why);
		halt(u, "%s: %s", y->name, why);
		return;
	}
	restart_old(y);
	/* SIGKILL needs the agent: one that does not answer is caught up when it does,
	 * its services then killed after the stop timeout as this policy asks. */
	if (strcmp(u->on_stuck, "kill") == 0 && y->reachable)
		system_done(y, Y_FAILED, "%s", why);
	else
		system_done(y, Y_DEFERRED, "%s", why);
}

/* A step failed for a reason that is not about stopping: the system keeps its old
 * version (or, past the switch, reports how far it got). */
static void step_failed(struct usys *y, const char *why)
{
	struct upgrade *u = y->u;
	int switched = strcmp(y->step, "wait") == 0 || strcmp(y->step, "start") == 0 ||
		       strcmp(y->step, "restore") == 0;

	if (!switched)
		restart_old(y);
	system_done(y, Y_FAILED, "%s: %s", y->step, why);
	if (strcmp(u->on_stuck, "fail") == 0)
		halt(u, "%s: %s", y->name, y->reason);
}

static void on_stop(struct usys *y, const struct sw_http_result *res, json_t *reply)
{
	json_t *failed = reply ? json_object_get(reply, "failed") : NULL;
	char why[400];

	if (res->status == 0) {
		snprintf(why, sizeof(why), "agent not answering: %s", res->error);
		stuck(y, why, NULL);
	} else if (!reply) {
		control_error(res, why, sizeof(why));
		stuck(y, why, NULL);
	} else if (json_array_size(failed)) {
		json_t *f = json_array_get(failed, 0);
		snprintf(why, sizeof(why), "%s: %s",
			 json_string_value(json_object_get(f, "service"))
			     ? json_string_value(json_object_get(f, "service"))
			     : "a service",
			 json_string_value(json_object_get(f, "reason"))
			     ? json_string_value(json_object_get(f, "reason"))
			     : "did not stop");
		stuck(y, why, failed);
	} else if (y->u->rollback) {
		set_step(y, "rollback");
		do_switch(y);
	} else {
		do_stage(y);
	}
	drive(y->u);
}

static void do_stop(struct usys *y)
{
	/* The stop timeout bounds the whole call: the services get it less the time an
	 * answer needs to come back. A kill adds SIGKILL's own bounded wait. */
	unsigned bound = y->u->stop_timeout_ms;
	unsigned margin = bound / 5 < MARGIN_MS ? bound / 5 : MARGIN_MS;
	unsigned grace = bound - margin;
	unsigned limit = bound + (y->kill ? KILL_EXTRA_MS : 0);

	set_step(y, "stop");
	call(y, "POST", "/v1/upgrade/stop",
	     json_pack("{si sb sI}", "grace_ms", (int)grace, "kill", y->kill, "deadline_ms",
		       agent_deadline(y, limit - margin / 2)),
	     limit, on_stop);
}

static void on_stage(struct usys *y, const struct sw_http_result *res, json_t *reply)
{
	char why[400];

	if (res->status == 0) {
		snprintf(why, sizeof(why), "agent not answering while staging: %s", res->error);
		stuck(y, why, NULL);
	} else if (!reply) {
		control_error(res, why, sizeof(why));
		step_failed(y, why);
	} else {
		do_switch(y);
	}
	drive(y->u);
}

static void do_stage(struct usys *y)
{
	struct server *s = y->u->s;
	char url[600];

	set_step(y, "stage");
	snprintf(url, sizeof(url), "https://%s/v1/packages/%s", s->listen, y->u->sha);
	call(y, "POST", "/v1/upgrade/stage",
	     json_pack("{ss ss sI ss sI}", "version", y->u->version, "sha256", y->u->sha, "size",
		       (json_int_t)y->u->size, "url", url, "deadline_ms",
		       agent_deadline(y, STAGE_TIMEOUT_MS)),
	     STAGE_TIMEOUT_MS + MARGIN_MS, on_stage);
}

static const char *target_of(const struct usys *y)
{
	return y->u->rollback ? y->from : y->u->version;
}

static void on_switch(struct usys *y, const struct sw_http_result *res, json_t *reply)
{
	char why[400];

	/* No answer may mean it restarted before answering: the wait tells. */
	if (res->status == 0 || reply) {
		set_step(y, "wait");
		y->wait_until = now_ms() + RETURN_TIMEOUT_MS;
	} else {
		control_error(res, why, sizeof(why));
		step_failed(y, why);
	}
	drive(y->u);
}

static void do_switch(struct usys *y)
{
	if (!y->u->rollback)
		set_step(y, "switch");
	call(y, "POST", y->u->rollback ? "/v1/upgrade/rollback" : "/v1/upgrade/switch",
	     json_pack("{ss}", "version", target_of(y)), SWITCH_TIMEOUT_MS, on_switch);
}

static void on_status(struct usys *y, const struct sw_http_result *res, json_t *reply)
{
	const char *version = reply ? json_string_value(json_object_get(reply, "version")) : NULL;

	if (version && strcmp(version, target_of(y)) == 0) {
		do_start(y);
	} else if (now_ms() > y->wait_until) {
		char why[300];
		snprintf(why, sizeof(why), "did not come back on version %s within %d s%s%s",
			 target_of(y), RETURN_TIMEOUT_MS / 1000, version ? "; it runs " : "",
			 version ? version : "");
		(void)res;
		step_failed(y, why);
	}
	drive(y->u);
}

static int has_string(const json_t *array, const char *s)
{
	json_t *v;
	size_t i;

	json_array_foreach(array, i, v) if (s && json_is_string(v) &&
					    strcmp(json_string_value(v), s) == 0) return 1;
	return 0;
}

/* Every service of the agent's reply running, but those of roles in `except` (removed
 * for the upgrade: they come back after it); else the first that is not, in `why`. */
static int services_running(const json_t *services, const json_t *except, char *why, size_t len)
{
	json_t *svc;
	size_t i;

	json_array_foreach(services, i, svc)
	{
		const char *state = json_string_value(json_object_get(svc, "state"));
		const char *reason = json_string_value(json_object_get(svc, "reason"));

		if (has_string(except, json_string_value(json_object_get(svc, "role"))))
			continue;
		/* one the administrator stopped before the upgrade stays stopped */
		if (json_is_false(json_object_get(svc, "wants_running")))
			continue;
		if (!state || strcmp(state, "running") != 0) {
			snprintf(why, len, "%s is %s%s%s",
				 json_string_value(json_object_get(svc, "name")),
				 state ? state : "unknown", reason && *reason ? ": " : "",
				 reason ? reason : "");
			return 0;
		}
	}
	return 1;
}

static void on_start(struct usys *y, const struct sw_http_result *res, json_t *reply)
{
	char why[400];

	if (!reply) {
		control_error(res, why, sizeof(why));
		step_failed(y, why);
	} else if (!services_running(json_object_get(reply, "services"),
				     y->u->rollback ? NULL : y->removed, why, sizeof(why))) {
		step_failed(y, why);
	} else if (!y->u->rollback && json_array_size(y->removed)) {
		do_restore(y);
	} else {
		system_done(y, y->u->rollback ? Y_ROLLED_BACK : Y_UPGRADED, NULL);
	}
	drive(y->u);
}

static void do_start(struct usys *y)
{
	set_step(y, "start");
	call(y, "POST", "/v1/upgrade/start",
	     json_pack("{sI}", "deadline_ms", agent_deadline(y, START_TIMEOUT_MS)),
	     START_TIMEOUT_MS + MARGIN_MS, on_start);
}

static void on_restored(struct usys *y, const struct sw_http_result *res, json_t *reply)
{
	json_t *services = reply ? json_object_get(reply, "services") : NULL;
	char why[400] = "";

	(void)res;
	if (services && json_array_size(services) &&
	    services_running(services, NULL, why, sizeof(why))) {
		char names[300] = "";
		json_t *r;
		size_t i;

		json_array_foreach(y->removed, i, r)
		    snprintf(names + strlen(names), sizeof(names) - strlen(names), "%s%s",
			     i ? ", " : "", json_string_value(r));
		/* The removed roles stay in the report: the role came back, after the upgrade. */
		system_done(y, Y_UPGRADED, "role %s removed for the upgrade, then restored", names);
	} else if (now_ms() > y->wait_until) {
		step_failed(y, why[0] ? why : "the restored role's services are not running");
	}
	drive(y->u);
}

static void do_restore(struct usys *y)
{
	struct system *sys = sw_strmap_get(y->u->s->systems, y->name);
	char err[200];
	json_t *r;
	size_t i;

	set_step(y, "restore");
	json_array_foreach(y->removed, i, r)
	{
		if (sys &&
		    registry_role_set(y->u->s, sys, json_string_value(r), 1, err, sizeof(err)))
			sw_err("upgrade: %s: cannot restore role %s: %s", y->name,
			       json_string_value(r), err);
	}
	push_roles(y);
	y->wait_until = now_ms() + START_TIMEOUT_MS;
}

/* --- scheduling --- */

static int is_metering(const struct usys *y)
{
	struct system *sys = sw_strmap_get(y->u->s->systems, y->name);
	json_t *r;
	size_t i;

	if (!sys)
		return 0;
	json_array_foreach(sys->roles, i,
			   r) if (strcmp(json_string_value(r), METERING_ROLE) == 0) return 1;
	return 0;
}

static void begin_system(struct usys *y)
{
	struct system *sys = sw_strmap_get(y->u->s->systems, y->name);

	y->state = Y_ACTIVE;
	y->attempts++;
	y->reason[0] = '\0';
	if (!y->started_at)
		y->started_at = now_ms();
	y->reachable = 1;
	y->kill = y->catchup || strcmp(y->u->on_stuck, "kill") == 0 || y->u->rollback;
	sw_info("upgrade: %s: %s %s → %s%s", y->name, y->u->rollback ? "rolling back" : "upgrading",
		sys ? sys->version : y->from, target_of(y), y->catchup ? " (it is back)" : "");
	/* Metering servers drain by going one at a time: while one is stopped, clients
	 * fail over to the others, or run from their offline cache where it is alone. */
	set_step(y, "drain");
	do_stop(y);
}

/* A system picked up by resume continues from the step it was in; every step is
 * idempotent on the agent. */
static void continue_system(struct usys *y)
{
	if (strcmp(y->step, "wait") == 0) {
		y->wait_until = now_ms() + RETURN_TIMEOUT_MS;
		y->step_at = now_ms();
	} else if (strcmp(y->step, "start") == 0) {
		do_start(y);
	} else if (strcmp(y->step, "restore") == 0) {
		do_restore(y);
	} else if (strcmp(y->step, "switch") == 0 || strcmp(y->step, "rollback") == 0) {
		do_switch(y);
	} else {
		y->state = Y_PENDING;
		begin_system(y);
	}
}

static void server_step(struct upgrade *u);

static void drive(struct upgrade *u)
{
	size_t active = 0;
	int metering_busy = 0;

	if (!u || (!is_active_state(u->state) && strcmp(u->state, "deferred") != 0 &&
		   strcmp(u->state, "failed") != 0))
		return;
	if (!u->rollback && strcmp(u->server_step, "done") != 0) {
		if (!u->halted && strcmp(u->state, "running") == 0)
			server_step(u);
		return;
	}
	for (size_t i = 0; i < u->nsys; i++) {
		struct usys *y = &u->sys[i];

		if (y->state != Y_ACTIVE)
			continue;
		active++;
		metering_busy |= is_metering(y);
		if (y->busy)
			continue;
		if (strcmp(y->step, "wait") == 0)
			call(y, "GET", "/v1/status", NULL, POLL_TIMEOUT_MS, on_status);
		else if (strcmp(y->step, "restore") == 0)
			call(y, "GET", "/v1/status", NULL, POLL_TIMEOUT_MS, on_restored);
	}
	for (size_t i = 0; i < u->nsys && !u->halted && is_active_state(u->state); i++) {
		struct usys *y = &u->sys[i];

		if (active >= u->parallel)
			break;
		if (y->state != Y_PENDING)
			continue;
		if (is_metering(y)) {
			if (metering_busy)
				continue;
			metering_busy = 1;
		}
		active++;
		begin_system(y);
	}
	if (active == 0 && is_active_state(u->state) && (u->halted || count(u, Y_PENDING) == 0)) {
		if (u->rollback && !u->halted && strcmp(u->server_step, "done") == 0) {
			server_step(u);
			return;
		}
		finish_run(u);
	} else if (active == 0 && !is_active_state(u->state) && !u->halted && u->catchups) {
		/* catch-ups done: the run's outcome may have changed */
		u->catchups = 0;
		finish_run(u);
	}
	/* A finished run waits for heartbeats, not for the clock. */
	if (active == 0 && !is_active_state(u->state) && u->tick_started)
		uv_timer_stop(&u->tick);
}

static void on_tick(uv_timer_t *t)
{
	drive(t->data);
}

static void tick_start(struct upgrade *u)
{
	if (!u->tick_started) {
		uv_timer_init(u->s->loop, &u->tick);
		u->tick.data = u;
		u->tick_started = 1;
	}
	uv_timer_start(&u->tick, on_tick, 0, TICK_MS);
}

void upgrade_heard(struct server *s, struct system *sys)
{
	struct upgrade *u = s->upgrade;
	int64_t now = now_ms();

	/* A run stopped by its policy or budget leaves its deferred systems alone; one that
	 * merely finished with failures does not. */
	struct usys *y;

	if (!u || u->rollback || u->halted ||
	    (strcmp(u->state, "running") != 0 && strcmp(u->state, "deferred") != 0 &&
	     strcmp(u->state, "failed") != 0))
		return;
	y = sw_strmap_get(u->index, sys->name);
	if (y && y->state == Y_DEFERRED) {
		if (strcmp(sys->version, u->version) == 0 && !json_array_size(y->removed)) {
			system_done(y, Y_UPGRADED, NULL);
			u->catchups = 1;
			drive(u);
		} else if (now - y->deferred_at >= CATCHUP_DELAY_MS) {
			y->catchup = 1;
			u->catchups = 1;
			begin_system(y);
			tick_start(u);
		}
	}
}

/* --- the server itself --- */

static int site_path(const struct server *s, char *out, size_t len, const char *fmt,
		     const char *arg)
{
	char name[PATH_MAX];

	snprintf(name, sizeof(name), fmt, arg);
	return sw_path_join(out, len, s->dir, name);
}

/* Migrations the package carries that the database has not run. */
static int pending_migrations(struct upgrade *u, int *n, char *err, size_t errlen)
{
	char dir[PATH_MAX];
	int version = 0, rc;
	struct dirent *e;
	DIR *d;

	*n = 0;
	if ((rc = sw_db_schema_version(u->s->db, &version, err, errlen)))
		return rc;
	snprintf(dir, sizeof(dir), "%s/" SW_INSTALL_VERSIONS "/%s/share/siteward/sql", u->s->dir,
		 u->version);
	if (!(d = opendir(dir)))
		return 0;
	while ((e = readdir(d)))
		if (atoi(e->d_name) > version && strstr(e->d_name, ".sql"))
			(*n)++;
	closedir(d);
	return 0;
}

/* A PostgreSQL client program (pg_dump, psql) run for the upgrade, with its
 * output in a log beside the backup and a deadline: the loop goes on meanwhile. */
struct tool {
	uv_process_t proc;
	uv_timer_t timer;
	struct upgrade *u;
	int open_handles, timed_out;
	int64_t status;
	int signal;
	char what[16];
	char log[PATH_MAX + 8];
	void (*done)(struct upgrade *u, const char *why);
};

static void tool_closed(uv_handle_t *h)
{
	struct tool *t = h->data;
	char why[600] = "";

	if (--t->open_handles > 0)
		return;
	if (!t->done) { /* it never started */
		free(t);
		return;
	}
	if (t->timed_out) {
		snprintf(why, sizeof(why), "%s timed out after %u s (see %s)", t->what,
			 BACKUP_TIMEOUT_MS / 1000, t->log);
	} else if (t->status != 0 || t->signal) {
		char *text = NULL;
		size_t len = 0;
		const char *tail = "";

		if (sw_file_read(t->log, 1 << 20, &text, &len, NULL, 0) == 0 && len) {
			while (len && (text[len - 1] == '\n' || text[len - 1] == '\r'))
				text[--len] = '\0';
			tail = strrchr(text, '\n') ? strrchr(text, '\n') + 1 : text;
		}
		snprintf(why, sizeof(why), "%s failed (%s %d): %.300s", t->what,
			 t->signal ? "signal" : "exit status",
			 t->signal ? t->signal : (int)t->status, tail);
		free(text);
	}
	t->u->server_busy = 0;
	t->done(t->u, why[0] ? why : NULL);
	free(t);
}

static void tool_exited(uv_process_t *p, int64_t status, int signal)
{
	struct tool *t = p->data;

	t->status = status;
	t->signal = signal;
	uv_close((uv_handle_t *)&t->timer, tool_closed);
	uv_close((uv_handle_t *)&t->proc, tool_closed);
}

static void tool_expired(uv_timer_t *timer)
{
	struct tool *t = timer->data;

	t->timed_out = 1;
	uv_process_kill(&t->proc, SIGKILL);
}

/* Runs pg_dump or psql against the site database, named by the environment (see
 * sw_db_pg_environ), in the background with its deadline. */
static int tool_run(struct upgrade *u, const char *what, char **argv, const char *log,
		    void (*done)(struct upgrade *u, const char *why), char *err, size_t errlen)
{
	struct tool *t = calloc(1, sizeof(*t));
	uv_stdio_container_t stdio[3];
	uv_process_options_t o;
	char **env;
	int fd, rc;

	if (!t)
		return SW_ENOMEM;
	if (!(env = sw_db_pg_environ(u->s->db_url, err, errlen))) {
		free(t);
		return SW_EINVAL;
	}
	fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		snprintf(err, errlen, "%s: %s", log, strerror(errno));
		sw_environ_free(env);
		free(t);
		return SW_EIO;
	}
	t->u = u;
	t->done = done;
	snprintf(t->what, sizeof(t->what), "%s", what);
	snprintf(t->log, sizeof(t->log), "%s", log);
	memset(&o, 0, sizeof(o));
	stdio[0].flags = UV_IGNORE;
	stdio[1].flags = stdio[2].flags = UV_INHERIT_FD;
	stdio[1].data.fd = stdio[2].data.fd = fd;
	o.file = argv[0];
	o.args = argv;
	o.env = env;
	o.stdio = stdio;
	o.stdio_count = 3;
	o.exit_cb = tool_exited;
	t->proc.data = t->timer.data = t;
	rc = uv_spawn(u->s->loop, &t->proc, &o);
	close(fd);
	sw_environ_free(env);
	if (rc) {
		snprintf(err, errlen, "cannot run %s: %s (install postgresql-client)", what,
			 uv_strerror(rc));
		uv_close((uv_handle_t *)&t->proc, NULL);
		/* the handle is freed once closed: leave `t` to the loop */
		t->open_handles = 1;
		t->done = NULL;
		return SW_ENOTFOUND;
	}
	uv_timer_init(u->s->loop, &t->timer);
	uv_timer_start(&t->timer, tool_expired, BACKUP_TIMEOUT_MS, 0);
	t->open_handles = 2;
	u->server_busy = 1;
	sw_info("upgrade %" PRId64 ": %s running (log %s)", u->id, what, log);
	return 0;
}

static void server_step(struct upgrade *u);

static void on_dumped(struct upgrade *u, const char *why)
{
	if (why) {
		snprintf(u->server_step, sizeof(u->server_step), "failed");
		u->backup[0] = '\0';
		halt(u, "the site server: database backup: %s%s", why, "");
		finish_run(u);
		return;
	}
	snprintf(u->backup, sizeof(u->backup), "%s", u->pending_backup);
	snprintf(u->server_step, sizeof(u->server_step), "backed-up");
	run_save(u);
	sw_info("upgrade %" PRId64 ": database backed up to %s", u->id, u->backup);
	server_step(u);
}

static void on_restored_db(struct upgrade *u, const char *why)
{
	if (why) {
		halt(u, "the server cannot return to %s: %s", u->from, why);
		finish_run(u);
		return;
	}
	sw_info("upgrade: database restored from %s", u->backup);
	snprintf(u->server_step, sizeof(u->server_step), "restored");
	server_step(u);
}

/* Backs the database up before the package's migrations run: SQLite at once with
 * VACUUM INTO; PostgreSQL with pg_dump, in the background (1 when started). */
static int db_backup(struct upgrade *u, char *err, size_t errlen)
{
	char path[PATH_MAX], sql[PATH_MAX + 64], name[64];
	struct sw_db_val p[1];

	if (strcmp(sw_db_engine(u->s->db), "sqlite") != 0) {
		char *argv[] = {"pg_dump", "--format=plain",  "--no-owner", "--no-privileges",
				"--file",  u->pending_backup, NULL};
		char log[PATH_MAX + 8];
		int rc;

		snprintf(name, sizeof(name), "site-%s-%" PRId64 ".sql", u->from, u->id);
		if (site_path(u->s, path, sizeof(path), "backups", NULL))
			return SW_ETOOBIG;
		mkdir(path, 0700);
		sw_path_join(u->pending_backup, sizeof(u->pending_backup), path, name);
		snprintf(log, sizeof(log), "%s.log", u->pending_backup);
		rc = tool_run(u, "pg_dump", argv, log, on_dumped, err, errlen);
		return rc ? rc : 1;
	}
	snprintf(name, sizeof(name), "site-%s-%" PRId64 ".db", u->from, u->id);
	if (site_path(u->s, path, sizeof(path), "backups", NULL))
		return SW_ETOOBIG;
	mkdir(path, 0700);
	sw_path_join(sql, sizeof(sql), path, name);
	unlink(sql);
	p[0] = SW_DB_TEXT(sql);
	if (sw_db_exec(u->s->db, "VACUUM INTO ?", p, 1, NULL, NULL, NULL, err, errlen))
		return SW_EDB;
	snprintf(u->backup, sizeof(u->backup), "%s", sql);
	return 0;
}

static void server_restart(struct upgrade *u, const char *exe)
{
	snprintf(u->s->reexec, sizeof(u->s->reexec), "%s", exe);
	uv_stop(u->s->loop);
}

/* The server's own upgrade (or, at the end of a rollback, its return): each part is
 * written to the journal before the next, and redone if found half done. */
static void server_step(struct upgrade *u)
{
	struct server *s = u->s;
	char running[SW_PKG_VERSION_MAX + 1], err[600], path[PATH_MAX], dest[PATH_MAX],
	    exe[PATH_MAX], sqldir[PATH_MAX + 64];
	char *pub = NULL;
	int n, rc;

	if (u->server_busy)
		return;
	sw_install_version(s->dir, running, sizeof(running));
	if (u->rollback) {
		if (strcmp(running, u->from) == 0) {
			snprintf(u->server_step, sizeof(u->server_step), "rolled-back");
			finish_run(u);
			return;
		}
		if (u->backup[0] && strcmp(u->server_step, "restored") != 0) {
			/* The journal is written again into the restored database. */
			if (strlen(u->backup) > 4 &&
			    strcmp(u->backup + strlen(u->backup) - 4, ".sql") == 0) {
				/* One transaction replaces the schema whole: what the migrations
				 * added goes too, and a failure leaves the database as it was. */
				char *argv[] = {"psql",
						"-X",
						"-q",
						"-v",
						"ON_ERROR_STOP=1",
						"--single-transaction",
						"-c",
						"DROP SCHEMA public CASCADE",
						"-c",
						"CREATE SCHEMA public",
						"-f",
						u->backup,
						NULL};
				char log[PATH_MAX + 16];

				snprintf(log, sizeof(log), "%s.restore.log", u->backup);
				if (tool_run(u, "psql", argv, log, on_restored_db, err,
					     sizeof(err))) {
					halt(u, "the server cannot return to %s: %s", u->from, err);
					finish_run(u);
				}
				return;
			}
			char live[PATH_MAX], tmp[PATH_MAX + 8];
			sw_db_close(s->db);
			s->db = NULL;
			snprintf(live, sizeof(live), "%s", s->db_url);
			snprintf(tmp, sizeof(tmp), "%s.new", live);
			if (sw_file_copy(u->backup, tmp, err, sizeof(err)) || rename(tmp, live)) {
				sw_err("upgrade: cannot restore the database from %s: %s",
				       u->backup, err);
			} else {
				char side[PATH_MAX + 8];
				snprintf(side, sizeof(side), "%s-wal", live);
				unlink(side);
				snprintf(side, sizeof(side), "%s-shm", live);
				unlink(side);
				sw_info("upgrade: database restored from %s", u->backup);
			}
			if (sw_db_open(&s->db_opts, &s->db, err, sizeof(err))) {
				sw_err("upgrade: cannot reopen the database: %s", err);
				exit(1);
			}
		}
		if ((rc = sw_install_switch_back(s->dir, u->from, "siteward-server", exe,
						 sizeof(exe), err, sizeof(err)))) {
			halt(u, "the server cannot return to %s: %s", u->from, err);
			finish_run(u);
			return;
		}
		snprintf(u->server_step, sizeof(u->server_step), "switched-back");
		run_insert(u, err, sizeof(err));
		server_restart(u, exe);
		return;
	}
	if (strcmp(running, u->version) == 0) {
		snprintf(u->server_step, sizeof(u->server_step), "done");
		run_save(u);
		sw_info("upgrade %" PRId64 ": the site server runs %s", u->id, u->version);
		drive(u);
		return;
	}
	if (strcmp(u->server_step, "switched") == 0) {
		/* The new program should be running: it is not, so it did not start. */
		halt(u, "the server did not start on %s%s", u->version, "");
		finish_run(u);
		return;
	}
	u->server_busy = 1;
	site_path(s, path, sizeof(path), "packages/%s.pkg", u->sha);
	site_path(s, dest, sizeof(dest), SW_INSTALL_VERSIONS "/%s", u->version);
	site_path(s, sqldir, sizeof(sqldir), SW_INSTALL_VERSIONS, NULL);
	mkdir(sqldir, 0755);
	if (!sw_install_has(s->dir, u->version)) {
		char pubpath[PATH_MAX];
		sw_path_join(pubpath, sizeof(pubpath), s->dir, "signing.pub");
		rc = sw_file_read(pubpath, 64 * 1024, &pub, NULL, err, sizeof(err));
		if (!rc)
			rc = sw_pkg_extract(path, pub, dest, err, sizeof(err));
		free(pub);
		if (rc)
			goto failed;
	}
	snprintf(u->server_step, sizeof(u->server_step), "staged");
	run_save(u);
	if ((rc = pending_migrations(u, &n, err, sizeof(err))))
		goto failed;
	if (n > 0 && !u->backup[0]) {
		if ((rc = db_backup(u, err, sizeof(err))) == 1)
			return; /* pg_dump runs; on_dumped goes on */
		if (rc)
			goto failed;
		snprintf(u->server_step, sizeof(u->server_step), "backed-up");
		run_save(u);
		sw_info("upgrade %" PRId64 ": database backed up to %s", u->id, u->backup);
	}
	snprintf(sqldir, sizeof(sqldir), "%s/share/siteward/sql", dest);
	if (n > 0 && (rc = sw_db_migrate_with(s->db, sqldir, err, sizeof(err))))
		goto failed;
	snprintf(u->server_step, sizeof(u->server_step), "switched");
	run_save(u);
	if ((rc = sw_install_switch(s->dir, u->version, err, sizeof(err))))
		goto failed;
	sw_install_exe(s->dir, "siteward-server", exe, sizeof(exe));
	sw_info("upgrade %" PRId64 ": the site server switches to %s", u->id, u->version);
	server_restart(u, exe);
	return;
failed:
	u->server_busy = 0;
	snprintf(u->server_step, sizeof(u->server_step), "failed");
	halt(u, "the site server: %s%s", err, "");
	finish_run(u);
}

/* --- loading and starting runs --- */

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

	(void)ncols;
	l->rows++;
	u->id = row[0].i;
	snprintf(u->version, sizeof(u->version), "%s", row[1].s);
	snprintf(u->from, sizeof(u->from), "%s", row[2].s);
	snprintf(u->sha, sizeof(u->sha), "%s", row[3].s);
	u->size = (uint64_t)row[4].i;
	snprintf(u->state, sizeof(u->state), "%s", row[5].s);
	snprintf(u->reason, sizeof(u->reason), "%s", row[6].s);
	snprintf(u->server_step, sizeof(u->server_step), "%s", row[8].s);
	snprintf(u->backup, sizeof(u->backup), "%s", row[9].s);
	u->started_at = row[10].i;
	u->finished_at = row[11].i;
	u->parallel = 5;
	u->stop_timeout_ms = 30000;
	u->max_failures = -1;
	snprintf(u->on_stuck, sizeof(u->on_stuck), "defer");
	if (sw_json_parse_object(row[7].s, strlen(row[7].s), &opts, NULL, 0) == 0) {
		const char *p;
		if ((v = json_integer_value(json_object_get(opts, "parallel"))) > 0)
			u->parallel = (unsigned)v;
		if ((v = json_integer_value(json_object_get(opts, "stop_timeout_ms"))) > 0)
			u->stop_timeout_ms = (unsigned)v;
		u->max_failures = (int)json_integer_value(json_object_get(opts, "max_failures"));
		if ((p = json_string_value(json_object_get(opts, "on_stuck"))))
			snprintf(u->on_stuck, sizeof(u->on_stuck), "%s", p);
		u->rollback = json_is_true(json_object_get(opts, "rollback"));
		u->halted = json_is_true(json_object_get(opts, "halted"));
	}
	json_decref(opts);
	return 0;
}

static enum ystate ystate_parse(const char *s)
{
	for (size_t i = 0; i < SW_ARRAY_LEN(ystate_names); i++)
		if (strcmp(s, ystate_names[i]) == 0)
			return (enum ystate)i;
	return Y_PENDING;
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
	snprintf(y->step, sizeof(y->step), "%s", row[3].s);
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
	return 0;
}

static int count_row(void *arg, int ncols, const struct sw_db_val *row)
{
	(void)ncols;
	*(int64_t *)arg = row[0].i;
	return 0;
}

int upgrade_load(struct server *s, char *err, size_t errlen)
{
	struct upgrade *u = calloc(1, sizeof(*u));
	struct load_ctx l = {u, 0};
	char running[SW_PKG_VERSION_MAX + 1];
	int64_t n = 0;
	int rc;

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
			     1, count_row, &n, NULL, err, errlen)) ||
	    !(u->sys = calloc((size_t)n + 1, sizeof(*u->sys))) ||
	    (rc = sw_db_exec(s->db,
			     "SELECT name, from_version, state, step, reason, attempts, times, "
			     "removed_roles, started_at, finished_at FROM upgrade_systems WHERE "
			     "upgrade_id = ? ORDER BY position",
			     p, 1, sys_row, u, NULL, err, errlen))) {
		upgrade_destroy(u);
		return rc ? rc : SW_ENOMEM;
	}
	if (index_build(u)) {
		upgrade_destroy(u);
		return SW_ENOMEM;
	}
	s->upgrade = u;
	sw_install_version(s->dir, running, sizeof(running));
	if (strcmp(u->state, "running") == 0 && strcmp(u->server_step, "switched") == 0 &&
	    strcmp(running, u->version) == 0) {
		/* Restarted by the run itself: go on. */
		sw_info("upgrade %" PRId64 " to %s: resuming after the server's own switch", u->id,
			u->version);
		tick_start(u);
	} else if (strcmp(u->state, "rolling-back") == 0 &&
		   strcmp(u->server_step, "switched-back") == 0 && strcmp(running, u->from) == 0) {
		finish_run(u);
	} else if (is_active_state(u->state)) {
		/* A crash in the middle: the administrator resumes it. */
		snprintf(u->state, sizeof(u->state), "interrupted");
		for (size_t i = 0; i < u->nsys; i++)
			u->sys[i].busy = 0;
		run_save(u);
		sw_warn("upgrade %" PRId64 " to %s was interrupted; `siteward upgrade resume` "
			"continues it",
			u->id, u->version);
	} else if (strcmp(u->state, "deferred") == 0) {
		tick_start(u);
	}
	return 0;
}

/* --- the API --- */

static json_t *run_json(const struct upgrade *u)
{
	json_t *systems = json_array();
	int64_t now = now_ms();

	for (size_t i = 0; i < u->nsys; i++) {
		const struct usys *y = &u->sys[i];
		struct system *sys = sw_strmap_get(u->s->systems, y->name);
		int64_t end = y->finished_at ? y->finished_at : now;

		json_array_append_new(
		    systems,
		    json_pack("{ss ss ss ss ss ss si sO sO sI}", "name", y->name, "from", y->from,
			      "version", sys ? sys->version : "", "state", ystate_names[y->state],
			      "step", y->step, "reason", y->reason, "attempts", y->attempts,
			      "times", y->times, "removed_roles", y->removed, "elapsed_ms",
			      (json_int_t)(y->started_at ? end - y->started_at : 0)));
	}
	json_t *j = json_pack(
	    "{sI ss ss ss ss ss so sI sI sI s{ss ss} s{si si si si si si si} so}", "id",
	    (json_int_t)u->id, "version", u->version, "from", u->from, "state", u->state, "reason",
	    u->reason, "mode", u->rollback ? "rollback" : "upgrade", "options", options_json(u),
	    "started_at", (json_int_t)u->started_at, "finished_at", (json_int_t)u->finished_at,
	    "elapsed_ms", (json_int_t)((u->finished_at ? u->finished_at : now) - u->started_at),
	    "server", "step", u->server_step, "backup", u->backup, "counts", "systems",
	    (int)u->nsys, "pending", (int)count(u, Y_PENDING), "active", (int)count(u, Y_ACTIVE),
	    "upgraded", (int)count(u, Y_UPGRADED), "deferred", (int)count(u, Y_DEFERRED), "failed",
	    (int)count(u, Y_FAILED), "rolled_back", (int)count(u, Y_ROLLED_BACK), "systems",
	    systems);
	return j;
}

void upgrade_get(struct sw_http_req *req, void *arg)
{
	struct server *s = arg;

	if (!s->upgrade) {
		sw_http_reply_error(req, 404, "no upgrade has run on this site");
		return;
	}
	sw_http_reply_json(req, 200, run_json(s->upgrade));
}

void upgrade_signing_key(struct sw_http_req *req, void *arg)
{
	struct server *s = arg;
	char path[PATH_MAX], err[300], *pem = NULL;

	sw_path_join(path, sizeof(path), s->dir, "signing.pub");
	if (sw_file_read(path, 64 * 1024, &pem, NULL, err, sizeof(err))) {
		sw_http_reply_error(req, 500, "%s", err);
		return;
	}
	sw_http_reply_json(req, 200, json_pack("{ss}", "pem", pem));
	free(pem);
}

void upgrade_get_package(struct sw_http_req *req, void *arg)
{
	struct server *s = arg;
	const char *sha = sw_http_req_tail(req), *range = sw_http_req_header(req, "Range");
	char path[PATH_MAX];
	unsigned long long from = 0;
	struct stat st;
	int fd;

	if (strlen(sha) != 64 || strspn(sha, "0123456789abcdef") != 64) {
		sw_http_reply_error(req, 400, "a package is named by its SHA-256");
		return;
	}
	site_path(s, path, sizeof(path), "packages/%s.pkg", sha);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st)) {
		if (fd >= 0)
			close(fd);
		sw_http_reply_error(req, 404, "no such package on this server");
		return;
	}
	if (range && sscanf(range, "bytes=%llu-", &from) != 1)
		from = 0;
	if (from > (unsigned long long)st.st_size) {
		close(fd);
		sw_http_reply_error(req, 416, "the range starts past the package's end");
		return;
	}
	sw_http_reply_file(req, fd, (uint64_t)st.st_size, from);
}

/* Copies the administrator's package into the site folder, verified, by its hash. */
static int package_store(struct server *s, const char *src, struct sw_pkg_manifest **m, char *err,
			 size_t errlen)
{
	char path[PATH_MAX], dir[PATH_MAX], tmp[PATH_MAX + 8], pubpath[PATH_MAX], *pub = NULL;
	int rc;

	*m = NULL;
	sw_path_join(pubpath, sizeof(pubpath), s->dir, "signing.pub");
	if ((rc = sw_file_read(pubpath, 64 * 1024, &pub, NULL, err, errlen)))
		return rc;
	rc = sw_pkg_verify(src, pub, m, err, errlen);
	free(pub);
	if (rc)
		return rc;
	site_path(s, dir, sizeof(dir), "packages", NULL);
	mkdir(dir, 0755);
	site_path(s, path, sizeof(path), "packages/%s.pkg", (*m)->package_sha256);
	if (access(path, R_OK) == 0)
		return 0;
	snprintf(tmp, sizeof(tmp), "%s.new", path);
	if ((rc = sw_file_copy(src, tmp, err, errlen)) || rename(tmp, path)) {
		unlink(tmp);
		if (!rc)
			snprintf(err, errlen, "%s: %s", path, strerror(errno));
		sw_pkg_manifest_free(*m);
		*m = NULL;
		return rc ? rc : SW_EIO;
	}
	return 0;
}

static void issue(json_t *list, const char *level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void issue(json_t *list, const char *level, const char *fmt, ...)
{
	char msg[600];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	json_array_append_new(list, json_pack("{ss ss}", "level", level, "message", msg));
}

static uint64_t free_bytes(const char *dir)
{
	struct statvfs v;

	return statvfs(dir, &v) ? 0 : (uint64_t)v.f_bavail * v.f_frsize;
}

/* 1 if `prog` is an executable in $PATH. */
static int in_path(const char *prog)
{
	char found[PATH_MAX];

	return sw_path_find(prog, found, sizeof(found), NULL, 0) == 0;
}

/* What can be known without asking any agent: the server's side and the registry. */
static json_t *preflight_site(struct server *s, const struct sw_pkg_manifest *m)
{
	json_t *site = json_array();
	char running[SW_PKG_VERSION_MAX + 1];
	struct stat st;
	uint64_t need = m->package_size + m->total_size;

	sw_install_version(s->dir, running, sizeof(running));
	if (sw_version_cmp(running, m->min_version) < 0)
		issue(site, "error",
		      "the site server runs %s; the package upgrades from %s or later", running,
		      m->min_version);
	if (sw_version_cmp(running, m->version) > 0)
		issue(site, "error", "the site server runs %s, newer than the package's %s",
		      running, m->version);
	if (strcmp(sw_db_engine(s->db), "sqlite") == 0 && stat(s->db_url, &st) == 0)
		need += (uint64_t)st.st_size;
	else if (m->nmigrations && strcmp(sw_db_engine(s->db), "sqlite") != 0) {
		int version = 0;
		sw_db_schema_version(s->db, &version, NULL, 0);
		for (size_t i = 0; i < m->nmigrations; i++) {
			const char *base = strrchr(m->migrations[i], '/');
			if (atoi(base ? base + 1 : m->migrations[i]) > version) {
				if (!in_path("pg_dump") || !in_path("psql"))
					issue(site, "error",
					      "the package migrates the database: its backup needs "
					      "pg_dump and psql (install postgresql-client)");
				break;
			}
		}
	}
	if (free_bytes(s->dir) < need)
		issue(site, "error",
		      "the site folder has %" PRIu64 " bytes free; the package, its files and a "
		      "database backup need %" PRIu64,
		      free_bytes(s->dir), need);
	return site;
}

/* An agent's free space (`disk`, as it reported it) against the package staged and
 * extracted beside a spare copy. */
static void disk_issue(json_t *list, const json_t *disk, const struct sw_pkg_manifest *m)
{
	uint64_t need = m->package_size * 2 + m->total_size;

	if (json_is_integer(disk) && (uint64_t)json_integer_value(disk) < need)
		issue(list, "error", "has %" JSON_INTEGER_FORMAT " bytes free; it needs %" PRIu64,
		      json_integer_value(disk), need);
}

/* From the registry; `disk` is the free space to judge, NULL when a probe will tell. */
static json_t *preflight_system(struct server *s, const struct sw_pkg_manifest *m,
				struct system *sys, const json_t *disk)
{
	json_t *list = json_array();
	const char *health = registry_health(s, sys, now_ms());

	if (!sys->version[0])
		issue(list, "warning", "has not reported its version yet");
	else if (sw_version_cmp(sys->version, m->min_version) < 0)
		issue(list, "error", "runs %s; the package upgrades from %s or later", sys->version,
		      m->min_version);
	else if (sw_version_cmp(sys->version, m->version) > 0)
		issue(list, "error", "runs %s, newer than the package's %s", sys->version,
		      m->version);
	else if (strcmp(sys->version, m->version) == 0)
		issue(list, "warning", "already runs %s", m->version);
	disk_issue(list, disk, m);
	if (strcmp(health, "ok") != 0 && strcmp(health, "enrolled") != 0)
		issue(list, "warning", "is %s; --on-stuck decides what happens to it", health);
	return list;
}

static int count_level(const json_t *list, const char *level)
{
	json_t *i;
	size_t k;
	int n = 0;

	json_array_foreach(list, k, i) n +=
	    strcmp(json_string_value(json_object_get(i, "level")), level) == 0;
	return n;
}

static void collect(const char *key, void *value, void *arg)
{
	struct system ***at = arg;

	(void)key;
	*(*at)++ = value;
}

/* Every enrolled system, in an array the caller frees (NULL-terminated). */
static struct system **systems_list(struct server *s)
{
	struct system **list = calloc(sw_strmap_count(s->systems) + 1, sizeof(*list)), **at = list;

	if (list)
		sw_strmap_each(s->systems, collect, &at);
	return list;
}

struct check {
	struct server *s;
	struct sw_http_req *req;
	struct sw_pkg_manifest *m;
	json_t *out, *systems;
	int pending;
	int strict;
};

static void check_reply(struct check *c)
{
	int errors = count_level(json_object_get(c->out, "site"), "error"),
	    warnings = count_level(json_object_get(c->out, "site"), "warning");
	json_t *y;
	size_t i;

	json_array_foreach(c->systems, i, y)
	{
		errors += count_level(json_object_get(y, "issues"), "error");
		warnings += count_level(json_object_get(y, "issues"), "warning");
	}
	json_object_set_new(c->out, "errors", json_integer(errors));
	json_object_set_new(c->out, "warnings", json_integer(warnings));
	json_object_set_new(c->out, "ok", json_boolean(errors == 0 && (!c->strict || !warnings)));
	sw_http_reply_json(c->req, 200, c->out);
	sw_pkg_manifest_free(c->m);
	json_decref(c->systems);
	free(c);
}

struct probe {
	struct check *c;
	json_t *entry;
};

static void on_probe(const struct sw_http_result *res, void *arg)
{
	struct probe *p = arg;
	struct check *c = p->c;
	json_t *issues = json_object_get(p->entry, "issues"), *reply = NULL, *svc;
	size_t i;

	if (res->status == 200 && !sw_json_parse_object(res->body, res->len, &reply, NULL, 0)) {
		json_t *disk = json_object_get(reply, "disk_free");
		const char *v = json_string_value(json_object_get(reply, "version"));

		json_object_set_new(p->entry, "reachable", json_true());
		if (v)
			json_object_set_new(p->entry, "version", json_string(v));
		if (json_is_integer(disk))
			json_object_set(p->entry, "disk_free", disk);
		disk_issue(issues, disk, c->m);
		json_array_foreach(json_object_get(reply, "services"), i, svc)
		{
			const char *st = json_string_value(json_object_get(svc, "state"));
			if (st && strcmp(st, "running") != 0 && strcmp(st, "stopped") != 0)
				issue(issues, "warning", "service %s is %s",
				      json_string_value(json_object_get(svc, "name")), st);
		}
	} else {
		char why[300];
		control_error(res, why, sizeof(why));
		json_object_set_new(p->entry, "reachable", json_false());
		if (res->status == 0)
			issue(issues, "warning", "agent not answering: %s; --on-stuck decides",
			      why);
		else
			issue(issues, "error", "agent refused: %s", why);
	}
	json_decref(reply);
	free(p);
	if (--c->pending == 0)
		check_reply(c);
}

/* Reads and checks the common body of check and run, and stores the package. */
static int parse_request(struct server *s, struct sw_http_req *req, json_t *j,
			 struct sw_upgrade_req *r, struct sw_pkg_manifest **m)
{
	char err[600];
	int rc;

	if (sw_proto_upgrade_req_parse(j, r, err, sizeof(err))) {
		sw_http_reply_error(req, 400, "%s", err);
		return -1;
	}
	if ((rc = package_store(s, r->package, m, err, sizeof(err)))) {
		sw_http_reply_error(req, rc == SW_EDENIED || rc == SW_EINVAL ? 422 : api_status(rc),
				    "package refused: %s", err);
		return -1;
	}
	return 0;
}

void upgrade_check(struct sw_http_req *req, void *arg)
{
	struct server *s = arg;
	json_t *j = sw_http_req_json(req);
	struct system **list, *sys;
	struct sw_upgrade_req r;
	struct check *c;

	if (!j)
		return;
	c = calloc(1, sizeof(*c));
	if (!c || parse_request(s, req, j, &r, &c->m)) {
		free(c);
		json_decref(j);
		return;
	}
	c->s = s;
	c->req = req;
	c->strict = r.strict;
	json_decref(j);
	c->systems = json_array();
	c->out = json_pack("{ss ss ss sI so sO}", "version", c->m->version, "min_version",
			   c->m->min_version, "sha256", c->m->package_sha256, "size",
			   (json_int_t)c->m->package_size, "site", preflight_site(s, c->m),
			   "systems", c->systems);
	c->pending = 1;
	list = systems_list(s);
	for (size_t i = 0; list && (sys = list[i]); i++) {
		struct probe *p = calloc(1, sizeof(*p));
		if (!p)
			continue;
		p->c = c;
		p->entry = json_pack("{ss ss so}", "name", sys->name, "version", sys->version,
				     "issues", preflight_system(s, c->m, sys, NULL));
		json_array_append_new(c->systems, p->entry);
		c->pending++;
		if (control_call(s, sys, "GET", "/v1/status", NULL, PROBE_TIMEOUT_MS, on_probe,
				 p)) {
			issue(json_object_get(p->entry, "issues"), "error", "no usable address");
			c->pending--;
			free(p);
		}
	}
	free(list);
	if (--c->pending == 0)
		check_reply(c);
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(((const struct usys *)a)->name, ((const struct usys *)b)->name);
}

void upgrade_post(struct sw_http_req *req, void *arg)
{
	struct server *s = arg;
	json_t *j = sw_http_req_json(req), *site, *problems;
	struct sw_pkg_manifest *m = NULL;
	struct upgrade *u = NULL;
	struct system **list = NULL, *sys;
	struct sw_upgrade_req r;
	char err[600];
	int strict;

	if (!j)
		return;
	if (s->upgrade &&
	    (is_active_state(s->upgrade->state) || strcmp(s->upgrade->state, "interrupted") == 0)) {
		sw_http_reply_error(req, 409,
				    "upgrade %" PRId64
				    " to %s is %s: see `siteward upgrade status`, "
				    "or `siteward upgrade resume`",
				    s->upgrade->id, s->upgrade->version, s->upgrade->state);
		goto out;
	}
	if (parse_request(s, req, j, &r, &m))
		goto out;
	strict = r.strict;
	/* Preflight from what the server knows; errors stop the run before any system is
	 * touched, warnings only with strict. */
	problems = json_array();
	site = preflight_site(s, m);
	if (count_level(site, "error") || (strict && count_level(site, "warning")))
		json_array_append_new(problems,
				      json_pack("{ss sO}", "name", "site server", "issues", site));
	u = calloc(1, sizeof(*u));
	if (!u || !(u->sys = calloc(sw_strmap_count(s->systems) + 1, sizeof(*u->sys)))) {
		json_decref(site);
		json_decref(problems);
		sw_http_reply_error(req, 500, "out of memory");
		goto out;
	}
	list = systems_list(s);
	for (size_t i = 0; list && (sys = list[i]); i++) {
		json_t *issues =
		    preflight_system(s, m, sys, json_object_get(sys->facts, "disk_free"));
		struct usys *y = &u->sys[u->nsys++];

		if (count_level(issues, "error") || (strict && count_level(issues, "warning")))
			json_array_append_new(
			    problems, json_pack("{ss sO}", "name", sys->name, "issues", issues));
		json_decref(issues);
		y->u = u;
		snprintf(y->name, sizeof(y->name), "%s", sys->name);
		snprintf(y->from, sizeof(y->from), "%s", sys->version);
		y->times = json_object();
		y->removed = json_array();
		if (strcmp(sys->version, m->version) == 0) {
			y->state = Y_UPGRADED;
			snprintf(y->reason, sizeof(y->reason), "already on %s", m->version);
		}
	}
	json_decref(site);
	if (json_array_size(problems)) {
		json_t *first =
		    json_array_get(json_object_get(json_array_get(problems, 0), "issues"), 0);
		sw_http_reply_json(
		    req, 422,
		    json_pack("{so so}", "error",
			      json_sprintf("preflight failed: %s %s%s",
					   json_string_value(json_object_get(
					       json_array_get(problems, 0), "name")),
					   json_string_value(json_object_get(first, "message")),
					   json_array_size(problems) > 1 ? " (and more)" : ""),
			      "problems", problems));
		upgrade_destroy(u);
		goto out;
	}
	json_decref(problems);
	qsort(u->sys, u->nsys, sizeof(*u->sys), name_cmp);
	u->s = s;
	u->id = now_ms();
	if (s->upgrade && u->id <= s->upgrade->id)
		u->id = s->upgrade->id + 1;
	snprintf(u->version, sizeof(u->version), "%s", m->version);
	snprintf(u->min_version, sizeof(u->min_version), "%s", m->min_version);
	sw_install_version(s->dir, u->from, sizeof(u->from));
	snprintf(u->sha, sizeof(u->sha), "%s", m->package_sha256);
	u->size = m->package_size;
	snprintf(u->state, sizeof(u->state), "running");
	snprintf(u->server_step, sizeof(u->server_step), "pending");
	u->parallel = r.parallel;
	u->stop_timeout_ms = r.stop_timeout_ms;
	u->max_failures = r.max_failures;
	snprintf(u->on_stuck, sizeof(u->on_stuck), "%s", r.on_stuck);
	u->started_at = now_ms();
	for (size_t i = 0; i < u->nsys; i++)
		u->sys[i].u = u;
	if (index_build(u)) {
		sw_http_reply_error(req, 500, "out of memory");
		upgrade_destroy(u);
		goto out;
	}
	if (run_insert(u, err, sizeof(err))) {
		sw_http_reply_error(req, 500, "the upgrade journal: %s", err);
		upgrade_destroy(u);
		goto out;
	}
	upgrade_free(s);
	s->upgrade = u;
	sw_info("upgrade %" PRId64 ": %s → %s on %zu systems, parallel %u, stop timeout %u ms, "
		"on stuck %s",
		u->id, u->from, u->version, u->nsys, u->parallel, u->stop_timeout_ms, u->on_stuck);
	sw_http_reply_json(req, 201, run_json(u));
	tick_start(u);
out:
	free(list);
	sw_pkg_manifest_free(m);
	json_decref(j);
}

void upgrade_action(struct sw_http_req *req, void *arg)
{
	struct server *s = arg;
	struct upgrade *u = s->upgrade;
	const char *action = sw_http_req_tail(req);

	if (!u) {
		sw_http_reply_error(req, 404, "no upgrade has run on this site");
		return;
	}
	if (strcmp(action, "resume") == 0) {
		if (is_active_state(u->state)) {
			sw_http_reply_json(req, 200, run_json(u));
			return;
		}
		if (strcmp(u->state, "interrupted") != 0 && strcmp(u->state, "failed") != 0 &&
		    strcmp(u->state, "deferred") != 0) {
			sw_http_reply_error(req, 409,
					    "upgrade %" PRId64 " is %s: nothing to resume", u->id,
					    u->state);
			return;
		}
		snprintf(u->state, sizeof(u->state), "%s",
			 u->rollback ? "rolling-back" : "running");
		u->reason[0] = '\0';
		u->halted = 0;
		u->finished_at = 0;
		if (strcmp(u->server_step, "failed") == 0)
			snprintf(u->server_step, sizeof(u->server_step), "pending");
		for (size_t i = 0; i < u->nsys; i++) {
			struct usys *y = &u->sys[i];
			if (y->state == Y_FAILED || y->state == Y_UNCHANGED ||
			    y->state == Y_DEFERRED) {
				y->state = Y_PENDING;
				y->step[0] = '\0';
				sys_save(y);
			} else if (y->state == Y_ACTIVE) {
				continue_system(y);
			}
		}
		run_save(u);
		sw_info("upgrade %" PRId64 " to %s resumed", u->id, u->version);
		sw_http_reply_json(req, 200, run_json(u));
		tick_start(u);
		return;
	}
	if (strcmp(action, "rollback") == 0) {
		if (u->rollback && is_active_state(u->state)) {
			sw_http_reply_json(req, 200, run_json(u));
			return;
		}
		if (u->rollback && strcmp(u->state, "rolled-back") == 0) {
			sw_http_reply_error(req, 409, "upgrade %" PRId64 " is already rolled back",
					    u->id);
			return;
		}
		u->rollback = 1;
		u->halted = 0;
		u->reason[0] = '\0';
		u->finished_at = 0;
		snprintf(u->state, sizeof(u->state), "rolling-back");
		for (size_t i = 0; i < u->nsys; i++) {
			struct usys *y = &u->sys[i];
			struct system *sys = sw_strmap_get(s->systems, y->name);
			int moved = sys && strcmp(sys->version, y->from) != 0;

			if (y->state == Y_ACTIVE && y->busy)
				continue; /* its answer arrives, then it is rolled back below */
			y->catchup = 0;
			y->state = moved ? Y_PENDING : Y_UNCHANGED;
			y->step[0] = '\0';
			y->started_at = y->finished_at = 0;
			if (!moved)
				snprintf(y->reason, sizeof(y->reason), "still on %s", y->from);
			sys_save(y);
		}
		/* The server returns last, after the systems. */
		snprintf(u->server_step, sizeof(u->server_step), "done");
		run_save(u);
		sw_info("upgrade %" PRId64 ": rolling back to %s", u->id, u->from);
		sw_http_reply_json(req, 200, run_json(u));
		tick_start(u);
		return;
	}
	sw_http_reply_error(req, 404, "unknown action %s: resume or rollback", action);
}
