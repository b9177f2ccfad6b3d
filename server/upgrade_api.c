/*
 * The upgrade's HTTP handlers: a package's upload, check, run, status, resume and
 * rollback. An upload is verified off the loop and stored by its hash; run and check
 * name a stored package by that hash, verify it again, then go on from package_store's
 * answer; the request waits, suspended, meanwhile. No path on the server is named.
 */
#include "upgrade.h"

#include "error.h"
#include "install.h"
#include "json.h"
#include "log.h"
#include "proto.h"
#include "util.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* One system of the run, as the API shows it. */
static json_t *system_json(const struct upgrade *u, const struct usys *y, int64_t now)
{
	struct system *sys = sw_strmap_get(u->s->systems, y->name);
	int64_t end = y->finished_at ? y->finished_at : now;

	return json_pack(
	    "{ss ss ss ss ss ss si sO sO sI}", "name", y->name, "from", y->from, "version",
	    sys ? sys->version : "", "state", sw_sys_state_name(y->state), "step",
	    ystep_name(y->step), "reason", y->reason, "attempts", y->attempts, "times", y->times,
	    "removed_roles", y->removed, "elapsed_ms",
	    (json_int_t)(y->started_at && end > y->started_at ? end - y->started_at : 0));
}

/* The run without its systems: its state, options, bound, counts and the server's step. */
static json_t *summary_json(const struct upgrade *u, int64_t now)
{
	return json_pack(
	    "{sI ss ss ss ss ss so sI sI sI sI sI sI s{ss ss} s{si si si si si si si si}}", "id",
	    (json_int_t)u->id, "version", u->version, "from", u->from, "state",
	    sw_run_state_name(u->state), "reason", u->reason, "mode",
	    u->o.rollback ? "rollback" : "upgrade", "options", ujournal_options(u), "started_at",
	    (json_int_t)u->started_at, "finished_at", (json_int_t)u->finished_at, "elapsed_ms",
	    (json_int_t)((u->finished_at ? u->finished_at : now) - u->started_at), "leg_started_at",
	    (json_int_t)u->leg_at, "bound_ms", (json_int_t)u->bound_ms, "deadline_at",
	    (json_int_t)(u->leg_at + u->bound_ms), "server", "step", uself_names[u->self], "backup",
	    u->backup, "counts", "systems", (int)u->nsys, "pending",
	    (int)upgrade_count(u, SW_SYS_PENDING), "active", (int)upgrade_count(u, SW_SYS_ACTIVE),
	    "upgraded", (int)upgrade_count(u, SW_SYS_UPGRADED), "deferred",
	    (int)upgrade_count(u, SW_SYS_DEFERRED), "failed", (int)upgrade_count(u, SW_SYS_FAILED),
	    "rolled_back", (int)upgrade_count(u, SW_SYS_ROLLED_BACK), "removed",
	    (int)upgrade_count(u, SW_SYS_REMOVED));
}

static json_t *run_json(const struct upgrade *u)
{
	json_t *systems = json_array(), *run;
	int64_t now = sw_now_ms();

	for (size_t i = 0; i < u->nsys; i++)
		json_array_append_new(systems, system_json(u, &u->sys[i], now));
	run = summary_json(u, now);
	json_object_set_new(run, "systems", systems);
	return run;
}

/* --- the run followed as an event stream --- */

/*
 * GET /v1/upgrades/current with "Accept: text/event-stream" follows the run: `run`, the
 * whole run as the plain GET answers it; then, at most every WATCH_COALESCE_MS, what
 * changed since the last batch: a `system` event for each system that changed (one of
 * the run's `systems`, whole) and a `summary` (the run without its systems: state,
 * counts, the server's step); once the run has ended, `run` whole again and `end`, and
 * the stream closes. Deltas, not the whole run each time: a run over 15,000 systems is
 * some 4 MB, and a watcher needs only what moved. A stream that ends before `end` (the
 * server restarting in its own upgrade) is opened again by its client, which starts
 * over from `run`.
 */
#define WATCH_COALESCE_MS 200
#define WATCH_RETRY_S	  5 /* told to a watcher refused at the limit */

struct watcher {
	struct watcher *next, **pprev;
	struct server *s;
	struct sw_http_stream *st;
	int64_t run_id; /* the run it was sent whole */
};

static void watcher_unlink(struct watcher *w)
{
	struct server *s = w->s;

	*w->pprev = w->next;
	if (w->next)
		w->next->pprev = w->pprev;
	free(w);
	if (!s->watchers) {
		sw_http_event_free(s->watch_run);
		s->watch_run = NULL;
	}
}

static void watcher_ended(struct sw_http_stream *st, enum sw_http_stream_end why, void *arg)
{
	(void)st, (void)why;
	watcher_unlink(arg);
}

/* `j` (taken) as the event `name`, made once for every watcher it goes to. */
static struct sw_http_event *event_new(const char *name, json_t *j)
{
	struct sw_http_event *ev = NULL;
	char *text = j ? sw_json_dump(j) : NULL;

	if (text)
		sw_http_event_new(name, text, strlen(text), &ev);
	free(text);
	json_decref(j);
	return ev;
}

/* The run whole, as a `run` event: the one made for the last watcher when nothing
 * changed since, and within a batch's time (a fleet of watchers opening their streams
 * again after the server's restart has it made a few times, not once each). */
static struct sw_http_event *run_event(struct server *s, struct upgrade *u)
{
	int64_t now = sw_mono_ms();

	if (!s->watch_run || s->watch_run_gen != s->upgrade_gen ||
	    now - s->watch_run_ms >= WATCH_COALESCE_MS) {
		sw_http_event_free(s->watch_run);
		s->watch_run = event_new("run", run_json(u));
		s->watch_run_gen = s->upgrade_gen;
		s->watch_run_ms = now;
	}
	return s->watch_run;
}

/* The run has ended: it whole, then `end`, and the stream closes once they are out. */
static void watcher_finish(struct watcher *w, struct sw_http_event *run)
{
	int rc = run ? sw_http_stream_send_event(w->st, run) : SW_ENOMEM;

	if (rc == 0)
		rc = sw_http_stream_send(w->st, "end", "{}", 2);
	if (rc == SW_ETOOBIG || rc == SW_EBUSY)
		return; /* dropped, or the server stops: watcher_ended follows */
	sw_http_stream_close(w->st);
	watcher_unlink(w);
}

/* A batch: what changed since the last, to every watcher; the run whole to one that
 * was sent another run; and the end once the run is over. Each event is made once and
 * shared by the streams it goes to. */
static void on_watch_timer(uv_timer_t *t)
{
	struct server *s = t->data;
	struct upgrade *u = s->upgrade;
	uint64_t since = s->watch_gen;
	int64_t now = sw_now_ms();
	struct sw_http_event *summary = NULL, **systems = NULL, *run;
	struct watcher *w, *next;

	s->watch_sent_ms = sw_mono_ms();
	s->watch_gen = s->upgrade_gen;
	if (!u || !s->watchers)
		return;
	if (!upgrade_is_active(u)) {
		run = run_event(s, u);
		for (w = s->watchers; w; w = next) {
			next = w->next;
			watcher_finish(w, run);
		}
		return;
	}
	if (!(systems = calloc(u->nsys + 1, sizeof(*systems))) ||
	    !(summary = event_new("summary", summary_json(u, now))))
		goto out;
	for (size_t i = 0; i < u->nsys; i++)
		if (u->sys[i].changed_gen > since)
			systems[i] = event_new("system", system_json(u, &u->sys[i], now));
	for (w = s->watchers; w; w = next) {
		next = w->next;
		if (w->run_id != u->id) { /* a new run since it was sent one */
			if ((run = run_event(s, u)) && sw_http_stream_send_event(w->st, run) == 0)
				w->run_id = u->id;
			continue;
		}
		for (size_t i = 0; i < u->nsys; i++)
			if (systems[i] && sw_http_stream_send_event(w->st, systems[i]))
				break;
		sw_http_stream_send_event(w->st, summary);
	}
out:
	for (size_t i = 0; systems && i < u->nsys; i++)
		sw_http_event_free(systems[i]);
	free(systems);
	sw_http_event_free(summary);
}

/* Set as the server's upgrade_watch: the run changed. The batch goes on the loop's next
 * turn, or WATCH_COALESCE_MS after the last one, whichever is later. */
static void watch_changed(struct server *s)
{
	int64_t now, due;

	if (!s->watchers || s->stopping || uv_is_active((uv_handle_t *)&s->watch_timer))
		return;
	now = sw_mono_ms();
	due = s->watch_sent_ms + WATCH_COALESCE_MS;
	/* a timer counts from the loop's time, which stands still during a turn: brought
	 * up to now, so that a busy turn does not bring the batch that much early */
	uv_update_time(s->loop);
	uv_timer_start(&s->watch_timer, on_watch_timer, due > now ? (uint64_t)(due - now) : 0, 0);
}

/* Answers GET /v1/upgrades/current with an event stream that follows the run. */
static void watch(struct sw_http_req *req, struct server *s)
{
	struct upgrade *u = s->upgrade;
	struct watcher *w = calloc(1, sizeof(*w));
	struct sw_http_event *run;
	int rc;

	if (!w) {
		sw_http_reply_error(req, 500, "out of memory");
		return;
	}
	if ((rc = sw_http_stream_open(req, watcher_ended, w, &w->st))) {
		if (rc == SW_EBUSY)
			sw_http_reply_busy(req, WATCH_RETRY_S,
					   "too many watchers of the upgrade: poll GET "
					   "/v1/upgrades/current instead, or come back later");
		else /* no stream this way: the plain answer */
			sw_http_reply_json(req, 200, run_json(u));
		free(w);
		return;
	}
	if (!s->watch_timer_init) {
		uv_timer_init(s->loop, &s->watch_timer);
		s->watch_timer.data = s;
		s->watch_timer_init = 1;
	}
	s->upgrade_watch = watch_changed;
	w->s = s;
	w->run_id = u->id;
	w->next = s->watchers;
	if (w->next)
		w->next->pprev = &w->next;
	w->pprev = &s->watchers;
	s->watchers = w;
	/* what changed before this is in it; what changes after comes with the next batch */
	run = run_event(s, u);
	if (!upgrade_is_active(u))
		watcher_finish(w, run);
	else if (!run || sw_http_stream_send_event(w->st, run)) {
		sw_http_stream_close(w->st); /* out of memory: the client asks again */
		watcher_unlink(w);
	}
}

void upgrade_get(struct sw_http_req *req, void *arg)
{
	struct server *s = arg;
	const char *accept = sw_http_req_header(req, "Accept");

	if (!s->upgrade) {
		sw_http_reply_error(req, 404, "no upgrade has run on this site");
		return;
	}
	if (accept && strstr(accept, "text/event-stream")) {
		watch(req, s);
		return;
	}
	sw_http_reply_json(req, 200, run_json(s->upgrade));
}

/* A request of run or check, while its package is being stored. */
struct pending {
	struct sw_http_req *req;
	struct sw_upgrade_req r;
	char package[PATH_MAX];
	int check;
};

static int is_busy(struct server *s, struct sw_http_req *req)
{
	struct upgrade *u = s->upgrade;

	if (s->upgrade_starting) {
		sw_http_reply_error(req, 409,
				    "an upgrade is starting: see `siteward upgrade status`");
		return 1;
	}
	if (u && (upgrade_is_active(u) || u->state == SW_RUN_INTERRUPTED)) {
		sw_http_reply_error(req, 409,
				    "upgrade %" PRId64
				    " to %s is %s: see `siteward upgrade status`, "
				    "or `siteward upgrade resume`",
				    u->id, u->version, sw_run_state_name(u->state));
		return 1;
	}
	return 0;
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(((const struct usys *)a)->name, ((const struct usys *)b)->name);
}

static enum sw_sys_state initial_state(const struct system *sys, const struct sw_pkg_manifest *m,
				       char *reason, size_t len)
{
	if (strcmp(sys->version, m->version) == 0) {
		snprintf(reason, len, "already on %s", m->version);
		return SW_SYS_UPGRADED;
	}
	return SW_SYS_PENDING;
}

/* The package's migrations that the site database has not run. */
static int migrates(struct server *s, const struct sw_pkg_manifest *m)
{
	int version = 0;

	sw_db_schema_version(s->db, &version, NULL, 0);
	for (size_t i = 0; i < m->nmigrations; i++) {
		const char *base = strrchr(m->migrations[i], '/');
		if (atoi(base ? base + 1 : m->migrations[i]) > version)
			return 1;
	}
	return 0;
}

static void opts_from(const struct sw_upgrade_req *r, struct uopts *o)
{
	memset(o, 0, sizeof(*o));
	o->parallel = r->parallel;
	o->stop_timeout_ms = r->stop_timeout_ms;
	o->max_failures = r->max_failures;
	o->on_stuck = strcmp(r->on_stuck, "kill") == 0		? STUCK_KILL
		      : strcmp(r->on_stuck, "remove-role") == 0 ? STUCK_REMOVE_ROLE
		      : strcmp(r->on_stuck, "fail") == 0	? STUCK_FAIL
								: STUCK_DEFER;
}

/* What a run of `m` with these options would be bounded by, were it started now. */
static int64_t bound_preview(struct server *s, const struct sw_upgrade_req *r,
			     const struct sw_pkg_manifest *m)
{
	struct upgrade u = {.s = s, .size = m->package_size, .self_migrations = migrates(s, m)};
	struct system **list = upgrade_systems_list(s), *sys;
	size_t metering = 0, others = 0;

	opts_from(r, &u.o);
	u.o.package_size = m->package_size;
	snprintf(u.version, sizeof(u.version), "%s", m->version);
	for (size_t i = 0; list && (sys = list[i]); i++) {
		if (strcmp(sys->version, m->version) == 0)
			continue;
		registry_has_role(sys, METERING_ROLE) ? metering++ : others++;
	}
	free(list);
	return usys_run_bound_ms(&u.o, metering, others, upgrade_self_bound_ms(&u));
}

/* A run whose rows are on their way to the journal. */
struct begin {
	struct sw_http_req *req;
	char on_stuck[16];
};

static void run_begun(struct upgrade *u, int rc, const char *err, void *arg)
{
	struct begin *b = arg;
	struct server *s = u->s;

	s->upgrade_starting = 0;
	if (rc) {
		sw_http_reply_error(b->req, 500, "the upgrade journal: %s", err);
		upgrade_destroy(u);
		free(b);
		return;
	}
	upgrade_free(s);
	s->upgrade = u;
	/* what the site did while the rows were written: the machines hear of it now */
	for (size_t i = 0; i < u->nsys && !s->stopping; i++) {
		struct system *sys = sw_strmap_get(s->systems, u->sys[i].name);
		if (!sys)
			upgrade_system_removed(s, u->sys[i].name);
		else
			upgrade_system_enrolled(s, sys);
	}
	sw_info("upgrade %" PRId64 ": %s → %s on %zu systems, parallel %u, stop timeout %u ms, "
		"on stuck %s, at most %.0f s",
		u->id, u->from, u->version, u->nsys, u->o.parallel, u->o.stop_timeout_ms,
		b->on_stuck, u->bound_ms / 1000.0);
	sw_http_reply_json(b->req, 201, run_json(u));
	/* a server stopping meanwhile resumes the journaled run when it starts again */
	if (!s->stopping)
		upgrade_timers_start(u);
	free(b);
}

static void run_start(struct server *s, struct pending *p, struct sw_pkg_manifest *m)
{
	struct sw_http_req *req = p->req;
	json_t *site, *problems = json_array();
	struct system **list = NULL, *sys;
	struct upgrade *u = NULL;
	struct begin *b;
	int strict = p->r.strict;

	/* Another run may have begun while the package was verified. */
	if (is_busy(s, req))
		goto out;
	/* Preflight from what the server knows; errors stop the run before any system is
	 * touched, warnings only with strict. */
	site = preflight_site(s, m);
	if (preflight_count(site, "error") || (strict && preflight_count(site, "warning")))
		json_array_append_new(problems,
				      json_pack("{ss sO}", "name", "site server", "issues", site));
	json_decref(site);
	u = calloc(1, sizeof(*u));
	if (!u || !(u->sys = calloc(sw_strmap_count(s->systems) + 1, sizeof(*u->sys)))) {
		sw_http_reply_error(req, 500, "out of memory");
		goto out;
	}
	list = upgrade_systems_list(s);
	for (size_t i = 0; list && (sys = list[i]); i++) {
		json_t *issues =
		    preflight_system(s, m, sys, json_object_get(sys->facts, "disk_free"));
		struct usys *y = &u->sys[u->nsys++];

		if (preflight_count(issues, "error") ||
		    (strict && preflight_count(issues, "warning")))
			json_array_append_new(
			    problems, json_pack("{ss sO}", "name", sys->name, "issues", issues));
		json_decref(issues);
		y->u = u;
		snprintf(y->name, sizeof(y->name), "%s", sys->name);
		snprintf(y->from, sizeof(y->from), "%s", sys->version);
		snprintf(y->serial, sizeof(y->serial), "%s", sys->serial);
		y->times = json_object();
		y->removed = json_array();
		y->state = initial_state(sys, m, y->reason, sizeof(y->reason));
	}
	if (json_array_size(problems)) {
		json_t *first = json_array_get(problems, 0);
		json_t *issue = json_array_get(json_object_get(first, "issues"), 0);
		sw_http_reply_json(
		    req, 422,
		    json_pack("{so sO}", "error",
			      json_sprintf("preflight failed: %s %s%s",
					   json_string_value(json_object_get(first, "name")),
					   json_string_value(json_object_get(issue, "message")),
					   json_array_size(problems) > 1 ? " (and more)" : ""),
			      "problems", problems));
		goto out;
	}
	qsort(u->sys, u->nsys, sizeof(*u->sys), name_cmp);
	u->s = s;
	u->id = sw_now_ms();
	if (s->upgrade && u->id <= s->upgrade->id)
		u->id = s->upgrade->id + 1;
	snprintf(u->version, sizeof(u->version), "%s", m->version);
	snprintf(u->min_version, sizeof(u->min_version), "%s", m->min_version);
	sw_install_version(s->dir, u->from, sizeof(u->from));
	snprintf(u->sha, sizeof(u->sha), "%s", m->package_sha256);
	u->size = m->package_size;
	u->state = SW_RUN_RUNNING;
	u->self = SELF_PENDING;
	u->self_migrations = migrates(s, m);
	opts_from(&p->r, &u->o);
	u->o.package_size = m->package_size;
	u->started_at = sw_now_ms();
	for (size_t i = 0; i < u->nsys; i++)
		u->sys[i].u = u;
	if (upgrade_index_build(u)) {
		sw_http_reply_error(req, 500, "out of memory");
		goto out;
	}
	/* Its bound is known, and journaled, before anything is touched. */
	upgrade_leg_begin(u);
	if (!(b = calloc(1, sizeof(*b)))) {
		sw_http_reply_error(req, 500, "out of memory");
		goto out;
	}
	b->req = req;
	snprintf(b->on_stuck, sizeof(b->on_stuck), "%s", p->r.on_stuck);
	if (ujournal_run_begin(u, run_begun, b)) {
		free(b);
		sw_http_reply_error(req, 500, "out of memory");
		goto out;
	}
	s->upgrade_starting = 1;
	u = NULL;
out:
	upgrade_destroy(u);
	json_decref(problems);
	free(list);
	sw_pkg_manifest_free(m);
}

static void on_stored(struct server *s, int rc, struct sw_pkg_manifest *m, const char *err,
		      void *arg)
{
	struct pending *p = arg;

	if (rc)
		sw_http_reply_error(p->req,
				    rc == SW_EDENIED || rc == SW_EINVAL ? 422 : sw_http_status(rc),
				    "package refused: %s", err);
	else if (p->check)
		preflight_probe(s, p->req, m, p->r.strict, bound_preview(s, &p->r, m));
	else
		run_start(s, p, m);
	free(p);
}

static void store_request(struct sw_http_req *req, struct server *s, int check)
{
	json_t *j = sw_http_req_json(req);
	struct pending *p;
	char err[600];
	int rc;

	if (!j)
		return;
	if (!check && is_busy(s, req))
		goto out;
	if (!(p = calloc(1, sizeof(*p)))) {
		sw_http_reply_error(req, 500, "out of memory");
		goto out;
	}
	if (sw_proto_upgrade_req_parse(j, &p->r, err, sizeof(err))) {
		sw_http_reply_error(req, 400, "%s", err);
		free(p);
		goto out;
	}
	p->req = req;
	p->check = check;
	/* only a package in the site's store, by its hash (sw_proto_upgrade_req_parse) */
	package_path(s, p->r.package, p->package, sizeof(p->package));
	if (access(p->package, F_OK) != 0) {
		sw_http_reply_error(req, 404,
				    "no package %.64s in the site's store: upload it first (POST "
				    "/v1/packages, as `siteward upgrade check FILE` does)",
				    p->r.package);
		free(p);
		goto out;
	}
	p->r.package = p->package;
	/* verified again, as every time a run or a check reads it; not copied again */
	if ((rc = package_store(s, p->package, on_stored, p))) {
		sw_http_reply_error(req, sw_http_status(rc),
				    "package refused: cannot verify it now");
		free(p);
	}
out:
	json_decref(j);
}

static void on_uploaded(struct server *s, int rc, struct sw_pkg_manifest *m, const char *err,
			void *arg)
{
	struct sw_http_req *req = arg;

	if (rc)
		sw_http_reply_error(req,
				    rc == SW_EDENIED || rc == SW_EINVAL ? 422 : sw_http_status(rc),
				    "package refused: %s", err);
	else
		sw_http_reply_json(req, 200,
				   json_pack("{ss ss ss sI}", "sha256", m->package_sha256,
					     "version", m->version, "min_version", m->min_version,
					     "size", (json_int_t)m->package_size));
	sw_pkg_manifest_free(m);
}

/* The upload is in a file of its own (SW_HTTP_BODY_FILE), removed once this is
 * answered: the package is verified and copied into the store by its hash first. */
void upgrade_package_post(struct sw_http_req *req, void *arg)
{
	const char *file = sw_http_req_body_file(req);
	int rc;

	if (!file) {
		sw_http_reply_error(req, 500, "the upload was not stored");
		return;
	}
	if ((rc = package_store(arg, file, on_uploaded, req)))
		sw_http_reply_error(req, sw_http_status(rc),
				    "package refused: cannot verify it now");
}

void upgrade_post(struct sw_http_req *req, void *arg)
{
	store_request(req, arg, 0);
}

void upgrade_check(struct sw_http_req *req, void *arg)
{
	store_request(req, arg, 1);
}

static void resume(struct sw_http_req *req, struct upgrade *u)
{
	struct server *s = u->s;

	if (upgrade_is_active(u)) {
		sw_http_reply_json(req, 200, run_json(u));
		return;
	}
	if (u->state != SW_RUN_INTERRUPTED && u->state != SW_RUN_FAILED &&
	    u->state != SW_RUN_DEFERRED) {
		sw_http_reply_error(req, 409, "upgrade %" PRId64 " is %s: nothing to resume", u->id,
				    sw_run_state_name(u->state));
		return;
	}
	u->state = u->o.rollback ? SW_RUN_ROLLING_BACK : SW_RUN_RUNNING;
	u->reason[0] = '\0';
	u->halted = 0;
	u->finished_at = 0;
	if (u->self == SELF_FAILED)
		u->self = SELF_PENDING;
	for (size_t i = 0; i < u->nsys; i++) {
		struct usys *y = &u->sys[i];
		if (y->state == SW_SYS_FAILED || y->state == SW_SYS_UNCHANGED ||
		    y->state == SW_SYS_DEFERRED ||
		    (y->state == SW_SYS_REMOVED && sw_strmap_get(s->systems, y->name))) {
			y->state = SW_SYS_PENDING;
			y->step = YS_NONE;
			y->serial[0] = '\0';
			ujournal_sys_save(y, 0);
		}
	}
	upgrade_leg_begin(u);
	upgrade_run_enter(u, u->state);
	sw_info("upgrade %" PRId64 " to %s resumed", u->id, u->version);
	/* Systems caught in a step go on from it: every step is idempotent on the agent. */
	for (size_t i = 0; i < u->nsys; i++)
		if (u->sys[i].state == SW_SYS_ACTIVE)
			upgrade_sys_begin(&u->sys[i]);
	sw_http_reply_json(req, 200, run_json(u));
	upgrade_timers_start(u);
}

static void rollback(struct sw_http_req *req, struct upgrade *u)
{
	struct server *s = u->s;

	if (u->o.rollback && upgrade_is_active(u)) {
		sw_http_reply_json(req, 200, run_json(u));
		return;
	}
	if (u->o.rollback && u->state == SW_RUN_ROLLED_BACK) {
		sw_http_reply_error(req, 409, "upgrade %" PRId64 " is already rolled back", u->id);
		return;
	}
	u->o.rollback = 1;
	u->halted = 0;
	u->reason[0] = '\0';
	u->finished_at = 0;
	for (size_t i = 0; i < u->nsys; i++) {
		struct usys *y = &u->sys[i];
		struct system *sys = sw_strmap_get(s->systems, y->name);
		/* one caught in a step may have its services stopped: it goes through the
		 * rollback's steps too, and the answer it waits for is dropped */
		int moved =
		    sys && (strcmp(sys->version, y->from) != 0 || y->state == SW_SYS_ACTIVE);

		if (y->state == SW_SYS_REMOVED)
			continue;
		y->gen++;
		y->busy = 0;
		y->catchup = 0;
		y->state = moved ? SW_SYS_PENDING : SW_SYS_UNCHANGED;
		y->step = YS_NONE;
		y->started_at = y->finished_at = 0;
		if (!moved)
			snprintf(y->reason, sizeof(y->reason), "still on %s", y->from);
		ujournal_sys_save(y, 0);
	}
	/* The server returns last, after the systems. */
	u->self = SELF_DONE;
	upgrade_leg_begin(u);
	upgrade_run_enter(u, SW_RUN_ROLLING_BACK);
	sw_info("upgrade %" PRId64 ": rolling back to %s", u->id, u->from);
	sw_http_reply_json(req, 200, run_json(u));
	upgrade_timers_start(u);
}

void upgrade_action(struct sw_http_req *req, void *arg)
{
	struct server *s = arg;
	const char *action = sw_http_req_tail(req);

	if (!s->upgrade)
		sw_http_reply_error(req, 404, "no upgrade has run on this site");
	else if (strcmp(action, "resume") == 0)
		resume(req, s->upgrade);
	else if (strcmp(action, "rollback") == 0)
		rollback(req, s->upgrade);
	else
		sw_http_reply_error(req, 404, "unknown action %s: resume or rollback", action);
}
