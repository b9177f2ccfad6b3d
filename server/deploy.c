/*
 * Software distribution (siteward deploy): a Debian package installed on, or removed
 * from, every member of a collection, with the upgrade engine's guarantees: every call
 * has its deadline, the worst case is said before anything starts, a failure budget
 * halts a bad package, a system that is away is deferred with the reason and catches up
 * when it is back, and a system that joins the collection later gets the package too.
 *
 *   POST /v1/content               a .deb (the body): read, stored by its hash in
 *                                  packages/, and its manifest signed with the site's
 *                                  package key, which agents check before they act
 *   GET  /v1/content/SHA           the package, with ranges (agents)
 *   POST /v1/deployments           {"sha256" | "remove": PACKAGE, "collection",
 *                                   "parallel", "max_failures", "window"}
 *   GET  /v1/deployments[/ID]      every deployment, or one with its systems
 *   POST /v1/deployments/ID/cancel
 *
 * A deployment stays active until it is cancelled (or halted by its failure budget):
 * every few seconds its collection is worked out again, and systems not yet done are
 * started, at most `parallel` at once, in the window if it has one. What each system
 * does is in agent/deploy.c; what it answered, and why, is kept in the database, so a
 * restarted server goes on where it was (a call in flight is asked again: installing
 * what is installed is answered at once).
 */
#include "server.h"

#include "deb.h"
#include "dpkgdb.h"
#include "error.h"
#include "json.h"
#include "log.h"
#include "pki.h"
#include "util.h"
#include "work.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define TICK_MS	   1000
#define RESOLVE_MS 5000 /* a collection's members worked out again */
#define CATCHUP_MS 3000 /* a deferred system is tried again no sooner */
#define FETCH_BYTES_MS                                                                             \
	256			 /* a download: [deploy] fetch_base_s, and a millisecond per       \
				    this many bytes (256 kB/s) */
#define BACKOFF_MAX_MS	  300000 /* a system deferred again and again: tried every 5 min */
#define CALL_MARGIN_MS	  5000	 /* for the answer to travel, and the checks around dpkg */
#define UNANSWERED_MAX	  3	 /* calls without an answer before the system has failed */
#define PARALLEL_MAX	  1000
#define CONTENT_MAX	  ((int64_t)2 << 30)
#define STORE_BASE_MS	  10000
#define STORE_BYTES_MS	  4096
#define DEPLOYMENTS_SHOWN 100
#define DP_PREFIX_V4	  24 /* a distribution point serves its own subnet: this… */
#define DP_PREFIX_V6	  64 /* …or this many leading bits in common */

enum dstate { D_PENDING, D_RUNNING, D_DONE, D_DEFERRED, D_FAILED, D_SKIPPED };
static const char *const dstate_names[] = {"pending",  "running", "done",
					   "deferred", "failed",  "skipped"};
/* A deployment: starting systems; halted by its failure budget; cancelled. */
enum depstate { DEP_ACTIVE, DEP_HALTED, DEP_CANCELLED };
static const char *const depstate_names[] = {"active", "halted", "cancelled"};

/* The index of `name` in `names`, or `def` when it is none of them. */
static int state_parse(const char *name, const char *const *names, size_t n, int def)
{
	for (size_t i = 0; name && i < n; i++)
		if (strcmp(name, names[i]) == 0)
			return (int)i;
	return def;
}

struct dsys {
	char name[64];
	enum dstate state;
	char reason[600];
	int64_t attempts, updated_at;
	int64_t retry_at; /* sw_mono_ms(): a deferred system is tried no sooner */
	int unanswered;
};

struct dep {
	struct dep *next;
	struct server *s;
	int64_t id;
	char action[8], package[101], version[101], arch[33], sha[65];
	int64_t size;
	char *manifest, *signature;
	char collection[64], window[16], reason[300], created_by[128];
	enum depstate state;
	int64_t parallel, max_failures, created_at;
	int win_from, win_to; /* minutes after midnight, the server's local time; -1: none */
	struct dsys *sys;
	size_t nsys, cap, running;
	int resolving;
	int64_t resolved_at; /* sw_mono_ms() */
};

struct deploys {
	struct dep *head;
	int64_t next_id;
	unsigned fetch_ms, lock_wait_ms, install_ms; /* [deploy]: each system's bounds */
	uv_timer_t tick;
};

/* --- the deployment's numbers --- */

/* One download's bound. */
static int64_t fetch_ms(const struct server *s, const struct dep *d)
{
	return strcmp(d->action, "install") == 0 ? s->deploys->fetch_ms + d->size / FETCH_BYTES_MS
						 : 0;
}

/* What one system may take: the download (twice when a distribution point is tried
 * first, the site server after it), dpkg's lock, dpkg, and the call's margin. */
static int64_t per_system_ms(const struct server *s, const struct dep *d, int via_dp)
{
	const struct deploys *ds = s->deploys;

	return fetch_ms(s, d) * (via_dp ? 2 : 1) + ds->lock_wait_ms + ds->install_ms +
	       CALL_MARGIN_MS;
}

static int window_parse(const char *w, int *from, int *to)
{
	int h1, m1, h2, m2, n = 0;

	*from = *to = -1;
	if (!w || !*w)
		return 0;
	if (sscanf(w, "%2d:%2d-%2d:%2d%n", &h1, &m1, &h2, &m2, &n) != 4 || (size_t)n != strlen(w) ||
	    h1 < 0 || h1 > 23 || h2 < 0 || h2 > 24 || m1 < 0 || m1 > 59 || m2 < 0 || m2 > 59 ||
	    (h2 == 24 && m2) || h1 * 60 + m1 == h2 * 60 + m2)
		return SW_EINVAL;
	*from = h1 * 60 + m1;
	*to = h2 * 60 + m2;
	return 0;
}

static int window_open(const struct dep *d)
{
	time_t t = time(NULL);
	struct tm tm;
	int m;

	if (d->win_from < 0)
		return 1;
	localtime_r(&t, &tm);
	m = tm.tm_hour * 60 + tm.tm_min;
	return d->win_from < d->win_to ? m >= d->win_from && m < d->win_to
				       : m >= d->win_from || m < d->win_to;
}

/* --- the database --- */

struct save_job {
	int64_t id;
	json_t *dep;	 /* the deployment's row, NULL: unchanged */
	json_t *systems; /* [{name, state, reason, attempts, updated_at}] */
	char err[300];
};

static void save_run(struct sw_db *db, void *arg)
{
	struct save_job *j = arg;
	json_t *o = j->dep, *y;
	size_t i;
	int rc = sw_db_begin(db, j->err, sizeof(j->err));

#define S(k) SW_DB_TEXT(json_string_value(json_object_get(o, k)))
#define I(k) SW_DB_INT(json_integer_value(json_object_get(o, k)))
	if (!rc && o) {
		struct sw_db_val v[] = {SW_DB_INT(j->id), S("action"),	  S("package"),
					S("version"),	  S("arch"),	  S("sha256"),
					I("size"),	  S("manifest"),  S("signature"),
					S("collection"),  I("parallel"),  I("max_failures"),
					S("window"),	  S("state"),	  S("reason"),
					I("created_at"),  S("created_by")};

		rc = sw_db_exec(
		    db,
		    "INSERT INTO deployments (id, action, package, version, arch, sha256, "
		    "size, manifest, signature, collection, parallel, max_failures, "
		    "time_window, state, reason, created_at, created_by) VALUES (?, ?, ?, "
		    "?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE "
		    "SET state = excluded.state, reason = excluded.reason",
		    v, (int)SW_ARRAY_LEN(v), NULL, NULL, NULL, j->err, sizeof(j->err));
	}
	json_array_foreach(j->systems, i, y)
	{
		o = y;
		struct sw_db_val v[] = {SW_DB_INT(j->id), S("name"),	 S("state"),
					S("reason"),	  I("attempts"), I("updated_at")};

		if (rc)
			break;
		rc = sw_db_exec(
		    db,
		    "INSERT INTO deployment_systems (deployment, system, state, reason, "
		    "attempts, updated_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT "
		    "(deployment, system) DO UPDATE SET state = excluded.state, reason = "
		    "excluded.reason, attempts = excluded.attempts, updated_at = "
		    "excluded.updated_at",
		    v, (int)SW_ARRAY_LEN(v), NULL, NULL, NULL, j->err, sizeof(j->err));
	}
#undef S
#undef I
	if (rc)
		sw_db_rollback(db);
	else if (sw_db_commit(db, j->err, sizeof(j->err)))
		rc = SW_EIO;
	if (rc)
		sw_err("deployment %" PRId64 ": cannot record it: %s", j->id, j->err);
}

static void save_done(struct server *s, void *arg)
{
	struct save_job *j = arg;

	(void)s;
	json_decref(j->dep);
	json_decref(j->systems);
	free(j);
}

static json_t *dep_row(const struct dep *d)
{
	return json_pack("{ss ss ss ss ss sI ss ss ss sI sI ss ss ss sI ss}", "action", d->action,
			 "package", d->package, "version", d->version, "arch", d->arch, "sha256",
			 d->sha, "size", (json_int_t)d->size, "manifest", d->manifest, "signature",
			 d->signature, "collection", d->collection, "parallel",
			 (json_int_t)d->parallel, "max_failures", (json_int_t)d->max_failures,
			 "window", d->window, "state", depstate_names[d->state], "reason",
			 d->reason, "created_at", (json_int_t)d->created_at, "created_by",
			 d->created_by);
}

static json_t *sys_row(const struct dsys *y)
{
	return json_pack("{ss ss ss sI sI}", "name", y->name, "state", dstate_names[y->state],
			 "reason", y->reason, "attempts", (json_int_t)y->attempts, "updated_at",
			 (json_int_t)y->updated_at);
}

/* Writes the deployment (with `whole`) and the systems given (all when `only` is
 * SIZE_MAX, none when it is SIZE_MAX - 1) through the write queue. */
static void save(struct dep *d, int whole, size_t only)
{
	struct save_job *j = calloc(1, sizeof(*j));

	if (!j || !(j->systems = json_array())) {
		free(j);
		sw_err("deployment %" PRId64 ": out of memory recording it", d->id);
		return;
	}
	j->id = d->id;
	if (whole)
		j->dep = dep_row(d);
	if (only == SIZE_MAX)
		for (size_t i = 0; i < d->nsys; i++)
			json_array_append_new(j->systems, sys_row(&d->sys[i]));
	else if (only < d->nsys)
		json_array_append_new(j->systems, sys_row(&d->sys[only]));
	if (dbq_push(d->s, DBQ_SLOW_MS, save_run, save_done, j))
		save_done(d->s, j);
}

/* A system's new state and reason; recorded when either changed. */
static void set_state(struct dep *d, size_t i, enum dstate st, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void set_state(struct dep *d, size_t i, enum dstate st, const char *fmt, ...)
{
	struct dsys *y = &d->sys[i];
	char reason[sizeof(y->reason)];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	if (y->state == st && strcmp(y->reason, reason) == 0)
		return;
	if (st != y->state && (st == D_DONE || st == D_FAILED))
		sw_info("deployment %" PRId64 ": %s %s%s%s", d->id, y->name, dstate_names[st],
			*reason ? ": " : "", reason);
	y->state = st;
	snprintf(y->reason, sizeof(y->reason), "%s", reason);
	y->updated_at = sw_now_ms();
	save(d, 0, i);
}

static void set_dep_state(struct dep *d, enum depstate state, const char *reason)
{
	d->state = state;
	snprintf(d->reason, sizeof(d->reason), "%s", reason);
	sw_info("deployment %" PRId64 " %s%s%s", d->id, depstate_names[state], *reason ? ": " : "",
		reason);
	save(d, 1, SIZE_MAX - 1);
}

/* --- the engine --- */

static size_t find_sys(const struct dep *d, const char *name)
{
	for (size_t i = 0; i < d->nsys; i++)
		if (strcmp(d->sys[i].name, name) == 0)
			return i;
	return SIZE_MAX;
}

static int add_sys(struct dep *d, const char *name, enum dstate st, const char *reason)
{
	if (d->nsys == d->cap) {
		size_t cap = d->cap ? d->cap * 2 : 16;
		struct dsys *v = realloc(d->sys, cap * sizeof(*v));

		if (!v)
			return SW_ENOMEM;
		d->sys = v;
		d->cap = cap;
	}
	memset(&d->sys[d->nsys], 0, sizeof(d->sys[0]));
	snprintf(d->sys[d->nsys].name, sizeof(d->sys[0].name), "%s", name);
	snprintf(d->sys[d->nsys].reason, sizeof(d->sys[0].reason), "%s", reason);
	d->sys[d->nsys].state = st;
	d->sys[d->nsys].updated_at = sw_now_ms();
	d->nsys++;
	return 0;
}

static void on_members(struct server *s, const json_t *members, int rc, const char *err, void *arg)
{
	struct dep *d = arg;
	size_t i, k;
	json_t *m;

	d->resolving = 0;
	d->resolved_at = sw_mono_ms();
	if (s->stopping || d->state != DEP_ACTIVE)
		return;
	if (rc) {
		sw_warn("deployment %" PRId64 ": the members of %s: %s", d->id, d->collection, err);
		return;
	}
	json_array_foreach(members, i, m)
	{
		const char *name = json_string_value(m);

		if (find_sys(d, name) != SIZE_MAX)
			continue;
		if (add_sys(d, name, D_PENDING, "joined the collection") == 0) {
			sw_info("deployment %" PRId64 ": %s joined %s", d->id, name, d->collection);
			save(d, 0, d->nsys - 1);
		}
	}
	/* one that left the collection before it was started is no longer aimed at */
	for (k = 0; k < d->nsys; k++) {
		int member = 0;

		if (d->sys[k].state != D_PENDING && d->sys[k].state != D_DEFERRED)
			continue;
		json_array_foreach(members, i, m) member |=
		    strcmp(json_string_value(m), d->sys[k].name) == 0;
		if (!member)
			set_state(d, k, D_SKIPPED, "no longer a member of %s", d->collection);
	}
}

/* How long a system its agent deferred waits before it is asked again: doubling with
 * each try (a dpkg lock held for hours is asked about a few times an hour). */
static int64_t backoff(const struct dsys *y)
{
	int64_t ms = CATCHUP_MS;

	for (int64_t k = 1; k < y->attempts && ms < BACKOFF_MAX_MS; k++)
		ms *= 2;
	return ms < BACKOFF_MAX_MS ? ms : BACKOFF_MAX_MS;
}

struct leg {
	struct dep *d;
	char name[64];
	unsigned timeout_ms;
};

static void on_answer(const struct sw_http_result *res, void *arg)
{
	struct leg *leg = arg;
	struct dep *d = leg->d;
	size_t i = find_sys(d, leg->name);
	json_t *a = NULL;
	char why[500];

	if (d->running)
		d->running--;
	if (d->s->stopping || i == SIZE_MAX || d->sys[i].state != D_RUNNING) {
		free(leg);
		return;
	}
	if (res->status == 200 && sw_json_parse_object(res->body, res->len, &a, NULL, 0) == 0) {
		int st = state_parse(json_string_value(json_object_get(a, "state")), dstate_names,
				     SW_ARRAY_LEN(dstate_names), D_FAILED);
		const char *r = json_string_value(json_object_get(a, "reason"));

		d->sys[i].unanswered = 0;
		if (st == D_DONE) {
			set_state(d, i, D_DONE, "%s", r ? r : "");
		} else if (st == D_DEFERRED) {
			d->sys[i].retry_at = sw_mono_ms() + backoff(&d->sys[i]);
			set_state(d, i, D_DEFERRED, "%s", r ? r : "deferred by its agent");
		} else {
			set_state(d, i, D_FAILED, "%s", r ? r : "its agent gave no reason");
		}
	} else if (res->status == 0 && ++d->sys[i].unanswered < UNANSWERED_MAX) {
		/* away, or went away mid-run: it is asked again when it is back */
		d->sys[i].retry_at = sw_mono_ms() + backoff(&d->sys[i]);
		set_state(d, i, D_DEFERRED,
			  "no answer from its agent (%s); asked again when it is back", res->error);
	} else {
		control_error(res, why, sizeof(why));
		set_state(d, i, D_FAILED, "%s%s", res->status ? "its agent refused it: " : "", why);
	}
	json_decref(a);
	free(leg);
}

/* --- distribution points --- */

struct dp_pick {
	struct server *s;
	const struct system *target, *best;
	int bits;
	uint32_t tie;
};

static void consider(const char *key, void *value, void *arg)
{
	struct dp_pick *p = arg;
	const struct system *dp = value;
	char both[140];
	uint32_t tie = 2166136261u;
	int bits;

	(void)key;
	if (dp == p->target || !dp->dp_address[0] || !registry_has_role(dp, DP_ROLE) ||
	    !channel_connected(p->s, dp))
		return;
	bits = sw_addr_common_bits(dp->address, p->target->address);
	if (bits < (strchr(dp->address, '.') ? DP_PREFIX_V4 : DP_PREFIX_V6))
		return;
	/* among those as near, each system has its own, spread evenly (FNV-1a) */
	snprintf(both, sizeof(both), "%s/%s", p->target->name, dp->name);
	for (const char *c = both; *c; c++)
		tie = (tie ^ (unsigned char)*c) * 16777619u;
	if (!p->best || bits > p->bits || (bits == p->bits && tie < p->tie)) {
		p->best = dp;
		p->bits = bits;
		p->tie = tie;
	}
}

/* The distribution point nearest `sys` (sharing its subnet), or NULL: the site server. */
static const struct system *nearest_dp(struct server *s, const struct system *sys)
{
	struct dp_pick p = {.s = s, .target = sys};

	sw_strmap_each(s->systems, consider, &p);
	return p.best;
}

static void start(struct dep *d, size_t i, struct system *sys)
{
	struct server *s = d->s;
	struct deploys *ds = s->deploys;
	struct leg *leg = calloc(1, sizeof(*leg));
	const struct system *dp = strcmp(d->action, "install") == 0 ? nearest_dp(s, sys) : NULL;
	int64_t bound = per_system_ms(s, d, dp != NULL);
	char path[100], url[320];
	json_t *body;

	if (!leg)
		return;
	snprintf(path, sizeof(path), "/v1/content/%s", d->sha);
	body =
	    json_pack("{ss ss ss sI sI sI sI}", "manifest", d->manifest, "signature", d->signature,
		      "path", path, "fetch_ms", (json_int_t)fetch_ms(s, d), "lock_wait_ms",
		      (json_int_t)ds->lock_wait_ms, "install_ms", (json_int_t)ds->install_ms,
		      "deadline_ms", (json_int_t)(sw_now_ms() + bound + sys->clock_skew_ms));
	if (body && dp) {
		snprintf(url, sizeof(url), "https://%s", dp->dp_address);
		json_object_set_new(body, "dp", json_pack("{ss ss}", "name", dp->name, "url", url));
	}
	leg->d = d;
	snprintf(leg->name, sizeof(leg->name), "%s", sys->name);
	d->sys[i].attempts++;
	set_state(d, i, D_RUNNING, "%s %s, at most %" PRId64 " s",
		  strcmp(d->action, "install") == 0 ? "installing" : "removing", d->package,
		  (bound + 999) / 1000);
	d->running++;
	if (control_call(s, sys, "POST", "/v1/deploy", body, (unsigned)bound, on_answer, leg)) {
		d->running--;
		free(leg);
		d->sys[i].retry_at = sw_mono_ms() + CATCHUP_MS;
		set_state(d, i, D_DEFERRED, "cannot call its agent now");
	}
}

static void tick_one(struct server *s, struct dep *d)
{
	int64_t now = sw_mono_ms(), failed = 0;
	int open;
	size_t i;

	if (d->state != DEP_ACTIVE)
		return;
	if (!d->resolving && (!d->resolved_at || now - d->resolved_at >= RESOLVE_MS)) {
		d->resolving = 1;
		if (collections_resolve(s, d->collection, on_members, d))
			d->resolving = 0;
	}
	for (i = 0; i < d->nsys; i++)
		failed += d->sys[i].state == D_FAILED;
	if (failed > d->max_failures) {
		char why[200];

		snprintf(why, sizeof(why),
			 "%" PRId64 " systems failed, more than --max-failures %" PRId64
			 " allows; no more are started",
			 failed, d->max_failures);
		set_dep_state(d, DEP_HALTED, why);
		return;
	}
	open = window_open(d);
	for (i = 0; i < d->nsys && d->running < (size_t)d->parallel; i++) {
		struct dsys *y = &d->sys[i];
		struct system *sys;

		if (y->state != D_PENDING && !(y->state == D_DEFERRED && now >= y->retry_at))
			continue;
		if (!open) {
			set_state(d, i, y->state, "waiting for the window %s", d->window);
			continue;
		}
		if (!(sys = sw_strmap_get(s->systems, y->name))) {
			set_state(d, i, D_SKIPPED, "no longer enrolled");
			continue;
		}
		if (!channel_connected(s, sys)) {
			y->retry_at = now + CATCHUP_MS;
			set_state(
			    d, i, D_DEFERRED,
			    "its agent is not connected; it gets the package when it is back");
			continue;
		}
		start(d, i, sys);
	}
}

static void on_tick(uv_timer_t *t)
{
	struct server *s = t->data;

	if (s->stopping)
		return;
	for (struct dep *d = s->deploys->head; d; d = d->next)
		tick_one(s, d);
}

/* --- loading --- */

static struct dep *dep_new(struct server *s)
{
	struct dep *d = calloc(1, sizeof(*d));

	if (d) {
		d->s = s;
		d->win_from = d->win_to = -1;
	}
	return d;
}

static void dep_free(struct dep *d)
{
	free(d->manifest);
	free(d->signature);
	free(d->sys);
	free(d);
}

static int load_dep_row(void *arg, int ncols, const struct sw_db_val *row)
{
	struct server *s = arg;
	struct dep *d = dep_new(s), **tail;

	(void)ncols;
	if (!d)
		return SW_ENOMEM;
	d->id = row[0].i;
	snprintf(d->action, sizeof(d->action), "%s", row[1].s);
	snprintf(d->package, sizeof(d->package), "%s", row[2].s);
	snprintf(d->version, sizeof(d->version), "%s", row[3].s);
	snprintf(d->arch, sizeof(d->arch), "%s", row[4].s);
	snprintf(d->sha, sizeof(d->sha), "%s", row[5].s);
	d->size = row[6].i;
	d->manifest = strdup(row[7].s);
	d->signature = strdup(row[8].s);
	snprintf(d->collection, sizeof(d->collection), "%s", row[9].s);
	d->parallel = row[10].i;
	d->max_failures = row[11].i;
	snprintf(d->window, sizeof(d->window), "%s", row[12].s);
	window_parse(d->window, &d->win_from, &d->win_to);
	d->state = state_parse(row[13].s, depstate_names, SW_ARRAY_LEN(depstate_names), DEP_HALTED);
	snprintf(d->reason, sizeof(d->reason), "%s", row[14].s);
	d->created_at = row[15].i;
	snprintf(d->created_by, sizeof(d->created_by), "%s", row[16].s);
	if (!d->manifest || !d->signature) {
		dep_free(d);
		return SW_ENOMEM;
	}
	if (d->id >= s->deploys->next_id)
		s->deploys->next_id = d->id + 1;
	for (tail = &s->deploys->head; *tail; tail = &(*tail)->next)
		;
	*tail = d;
	return 0;
}

static int load_sys_row(void *arg, int ncols, const struct sw_db_val *row)
{
	struct server *s = arg;
	struct dep *d;

	(void)ncols;
	for (d = s->deploys->head; d && d->id != row[0].i; d = d->next)
		;
	if (!d)
		return 0;
	if (add_sys(d, row[1].s, D_PENDING, row[3].s))
		return SW_ENOMEM;
	d->sys[d->nsys - 1].state =
	    (enum dstate)state_parse(row[2].s, dstate_names, SW_ARRAY_LEN(dstate_names), D_PENDING);
	/* a call in flight when the server stopped is made again */
	if (d->sys[d->nsys - 1].state == D_RUNNING)
		d->sys[d->nsys - 1].state = D_PENDING;
	d->sys[d->nsys - 1].attempts = row[4].i;
	d->sys[d->nsys - 1].updated_at = row[5].i;
	return 0;
}

int deploy_load(struct server *s, char *err, size_t errlen)
{
	struct deploys *ds = calloc(1, sizeof(*ds));
	unsigned fetch_s, lock_wait_s, install_s;
	int rc;

	if (!ds)
		return SW_ENOMEM;
	s->deploys = ds;
	ds->next_id = 1;
	if ((rc = sw_conf_get_uint(s->conf, "deploy", "fetch_base_s", 30, 1, 3600, &fetch_s, err,
				   errlen)) ||
	    (rc = sw_conf_get_uint(s->conf, "deploy", "lock_wait_s", 60, 0, 3600, &lock_wait_s, err,
				   errlen)) ||
	    (rc = sw_conf_get_uint(s->conf, "deploy", "install_timeout_s", 600, 5, 86400,
				   &install_s, err, errlen)))
		return rc;
	ds->fetch_ms = fetch_s * 1000;
	ds->lock_wait_ms = lock_wait_s * 1000;
	ds->install_ms = install_s * 1000;
	if ((rc = sw_db_exec(s->db,
			     "SELECT id, action, package, version, arch, sha256, size, manifest, "
			     "signature, collection, parallel, max_failures, time_window, state, "
			     "reason, created_at, created_by FROM deployments ORDER BY id",
			     NULL, 0, load_dep_row, s, NULL, err, errlen)) ||
	    (rc = sw_db_exec(s->db,
			     "SELECT deployment, system, state, reason, attempts, updated_at FROM "
			     "deployment_systems ORDER BY deployment, system",
			     NULL, 0, load_sys_row, s, NULL, err, errlen)))
		return rc;
	uv_timer_init(s->loop, &ds->tick);
	ds->tick.data = s;
	uv_timer_start(&ds->tick, on_tick, TICK_MS, TICK_MS);
	uv_unref((uv_handle_t *)&ds->tick); /* closed with the loop's other handles */
	return 0;
}

void deploy_free(struct server *s)
{
	struct deploys *ds = s->deploys;

	if (!ds)
		return;
	while (ds->head) {
		struct dep *d = ds->head;

		ds->head = d->next;
		dep_free(d);
	}
	free(ds);
	s->deploys = NULL;
}

/* --- content: packages in the store --- */

static int content_path(const struct server *s, const char *sha, const char *ext, char *out,
			size_t len)
{
	char name[128];

	snprintf(name, sizeof(name), "packages/%s.%s", sha, ext);
	return sw_path_join(out, len, s->dir, name);
}

struct store_job {
	struct server *s;
	struct sw_http_req *req;
	char src[PATH_MAX], deb[PATH_MAX], meta[PATH_MAX];
	char *key;
	struct sw_deb_info info;
	char sha[65];
	uint64_t size;
	json_t *out;
	int rc;
	char err[600];
};

/* On the thread pool: reads the package, hashes it, signs its manifest, stores both. */
static void store_run(void *arg)
{
	struct store_job *t = arg;
	char tmp[PATH_MAX + 8], have[65], *manifest = NULL, *sig = NULL, *text = NULL;
	json_t *m = NULL, *meta = NULL;

	if ((t->rc = sw_deb_read(t->src, &t->info, t->err, sizeof(t->err))) ||
	    (t->rc = sw_file_sha256(t->src, t->sha, &t->size, t->err, sizeof(t->err))))
		return;
	m = json_pack("{ss ss ss ss ss sI}", "action", "install", "package", t->info.pkg.name,
		      "version", t->info.pkg.version, "arch", t->info.pkg.arch, "sha256", t->sha,
		      "size", (json_int_t)t->size);
	if (!m || !(manifest = json_dumps(m, JSON_COMPACT | JSON_SORT_KEYS))) {
		t->rc = SW_ENOMEM;
		goto out;
	}
	if ((t->rc = sw_pki_sign(t->key, manifest, strlen(manifest), &sig, t->err, sizeof(t->err))))
		goto out;
	content_path(t->s, t->sha, "deb", t->deb, sizeof(t->deb));
	content_path(t->s, t->sha, "json", t->meta, sizeof(t->meta));
	snprintf(tmp, sizeof(tmp), "%s.new", t->deb);
	/* one stored before is kept only when it is still what it is named for */
	if ((sw_file_sha256(t->deb, have, NULL, NULL, 0) || strcmp(have, t->sha) != 0) &&
	    ((t->rc = sw_file_copy(t->src, tmp, t->err, sizeof(t->err))) || rename(tmp, t->deb))) {
		unlink(tmp);
		if (!t->rc) {
			sw_seterr(t->err, sizeof(t->err), "%s: %s", t->deb, strerror(errno));
			t->rc = SW_EIO;
		}
		goto out;
	}
	meta = json_pack("{ss ss}", "manifest", manifest, "signature", sig);
	if (!meta || !(text = json_dumps(meta, JSON_COMPACT))) {
		t->rc = SW_ENOMEM;
		goto out;
	}
	if ((t->rc =
		 sw_file_write_atomic(t->meta, text, strlen(text), 0644, t->err, sizeof(t->err))))
		goto out;
	t->out = json_pack("{ss ss ss ss sI sb}", "sha256", t->sha, "package", t->info.pkg.name,
			   "version", t->info.pkg.version, "arch", t->info.pkg.arch, "size",
			   (json_int_t)t->size, "scripts", t->info.has_scripts);
out:
	json_decref(m);
	json_decref(meta);
	free(manifest);
	free(sig);
	free(text);
}

static void store_done(void *arg, int timed_out)
{
	struct store_job *t = arg;

	if (timed_out)
		sw_http_reply_error(t->req, 503,
				    "storing the package did not finish in time; try again");
	else if (t->rc)
		sw_http_reply_error(t->req, t->rc == SW_EINVAL ? 400 : 500, "package refused: %s",
				    t->err);
	else {
		sw_info("content: %s %s (%s) stored as %.12s", t->info.pkg.name,
			t->info.pkg.version, t->info.pkg.arch, t->sha);
		sw_http_reply_json(t->req, 200, t->out);
		t->out = NULL;
	}
}

static void store_release(void *arg)
{
	struct store_job *t = arg;

	json_decref(t->out);
	free(t->key);
	free(t);
}

void deploy_content_post(struct sw_http_req *req, void *arg)
{
	struct server *s = arg;
	const char *file = sw_http_req_body_file(req);
	struct store_job *t;
	char dir[PATH_MAX];
	struct stat st;
	unsigned bound = STORE_BASE_MS;

	if (!file) {
		sw_http_reply_error(req, 500, "the upload was not stored");
		return;
	}
	if (!(t = calloc(1, sizeof(*t)))) {
		sw_http_reply_error(req, 500, "out of memory");
		return;
	}
	t->s = s;
	t->req = req;
	snprintf(t->src, sizeof(t->src), "%s", file);
	if (sw_pem_read(s->dir, "signing.key", &t->key, t->err, sizeof(t->err))) {
		sw_http_reply_error(req, 500,
				    "the site's package key is not on the server (%s); packages "
				    "cannot be signed for distribution",
				    t->err);
		store_release(t);
		return;
	}
	sw_path_join(dir, sizeof(dir), s->dir, "packages");
	mkdir(dir, 0755);
	if (stat(file, &st) == 0)
		bound += (unsigned)((uint64_t)st.st_size / STORE_BYTES_MS);
	if (sw_work_start(s->loop, bound, store_run, store_done, store_release, t)) {
		sw_http_reply_error(req, 503, "cannot store the package now; try again");
		store_release(t);
	}
}

void deploy_content_get(struct sw_http_req *req, void *arg)
{
	struct server *s = arg;
	const char *sha = sw_http_req_tail(req);
	char path[PATH_MAX];
	uint64_t sent = 0;

	if (strlen(sha) != 64 || strspn(sha, "0123456789abcdef") != 64) {
		sw_http_reply_error(req, 400, "content is named by its SHA-256");
		return;
	}
	content_path(s, sha, "deb", path, sizeof(path));
	if (sw_http_reply_path(req, path, &sent) == 0)
		sw_counter_add(s->mx_content_bytes, sent);
}

/* --- the API --- */

static json_t *dep_json(const struct server *s, const struct dep *d, int with_systems)
{
	size_t counts[SW_ARRAY_LEN(dstate_names)] = {0};
	json_t *o =
	    json_pack("{sI ss ss ss ss ss sI ss sI sI ss ss sI ss sI}", "id", (json_int_t)d->id,
		      "action", d->action, "package", d->package, "version", d->version, "arch",
		      d->arch, "collection", d->collection, "parallel", (json_int_t)d->parallel,
		      "window", d->window, "max_failures", (json_int_t)d->max_failures, "size",
		      (json_int_t)d->size, "state", depstate_names[d->state], "reason", d->reason,
		      "created_at", (json_int_t)d->created_at, "created_by", d->created_by,
		      "per_system_s", (json_int_t)((per_system_ms(s, d, 1) + 999) / 1000));
	json_t *c = json_object(), *list = json_array();

	if (d->sha[0])
		json_object_set_new(o, "sha256", json_string(d->sha));
	for (size_t i = 0; i < d->nsys; i++) {
		counts[d->sys[i].state]++;
		if (with_systems)
			json_array_append_new(
			    list,
			    json_pack("{ss ss ss sI sI}", "system", d->sys[i].name, "state",
				      dstate_names[d->sys[i].state], "reason", d->sys[i].reason,
				      "attempts", (json_int_t)d->sys[i].attempts, "updated_at",
				      (json_int_t)d->sys[i].updated_at));
	}
	for (size_t k = 0; k < SW_ARRAY_LEN(dstate_names); k++)
		json_object_set_new(c, dstate_names[k], json_integer((json_int_t)counts[k]));
	json_object_set_new(o, "counts", c);
	if (with_systems)
		json_object_set_new(o, "systems", list);
	else
		json_decref(list);
	return o;
}

static struct dep *dep_find(struct server *s, const char *id_text)
{
	char *end;
	long long id = strtoll(id_text, &end, 10);

	if (end == id_text || *end)
		return NULL;
	for (struct dep *d = s->deploys->head; d; d = d->next)
		if (d->id == id)
			return d;
	return NULL;
}

void deploy_get(struct sw_http_req *req, void *arg)
{
	struct server *s = arg;
	const char *tail = sw_http_req_tail(req);
	json_t *list;
	struct dep *d;
	size_t n = 0;

	if (tail && *tail) {
		if (!(d = dep_find(s, tail))) {
			sw_http_reply_error(
			    req, 404, "no deployment %s (siteward deploy status lists them)", tail);
			return;
		}
		sw_http_reply_json(req, 200, dep_json(s, d, 1));
		return;
	}
	list = json_array();
	for (d = s->deploys->head; d; d = d->next)
		n++;
	/* the latest ones */
	for (d = s->deploys->head; d; d = d->next, n--)
		if (n <= DEPLOYMENTS_SHOWN)
			json_array_append_new(list, dep_json(s, d, 0));
	sw_http_reply_json(req, 200, json_pack("{so}", "deployments", list));
}

/* POST /v1/deployments/ID/cancel */
void deploy_action(struct sw_http_req *req, void *arg)
{
	struct server *s = arg;
	char id[32];
	const char *tail = sw_http_req_tail(req), *slash = strchr(tail, '/');
	struct dep *d;

	if (!slash || strcmp(slash, "/cancel") != 0 || (size_t)(slash - tail) >= sizeof(id)) {
		sw_http_reply_error(req, 404, "POST /v1/deployments/ID/cancel is the one action");
		return;
	}
	snprintf(id, sizeof(id), "%.*s", (int)(slash - tail), tail);
	if (!(d = dep_find(s, id))) {
		sw_http_reply_error(req, 404, "no deployment %s", id);
		return;
	}
	if (d->state != DEP_CANCELLED) {
		char why[200];

		snprintf(why, sizeof(why), "cancelled by %s", sw_http_req_identity(req)->cn);
		set_dep_state(d, DEP_CANCELLED, why);
		for (size_t i = 0; i < d->nsys; i++)
			if (d->sys[i].state == D_PENDING || d->sys[i].state == D_DEFERRED)
				set_state(d, i, D_SKIPPED, "the deployment was cancelled");
	}
	sw_http_reply_json(req, 200, dep_json(s, d, 1));
}

struct create {
	struct server *s;
	struct sw_http_req *req;
	struct dep *d;
};

static void on_first_members(struct server *s, const json_t *members, int rc, const char *err,
			     void *arg)
{
	struct create *c = arg;
	struct dep *d = c->d, **tail;
	size_t i, rounds;
	json_t *m, *o;

	if (rc || s->stopping) {
		sw_http_reply_error(c->req, rc ? sw_http_status(rc) : 503, "%s",
				    rc ? err : "the server is stopping");
		dep_free(d);
		free(c);
		return;
	}
	json_array_foreach(members, i, m)
	{
		if (add_sys(d, json_string_value(m), D_PENDING, "")) {
			sw_http_reply_error(c->req, 500, "out of memory");
			dep_free(d);
			free(c);
			return;
		}
	}
	d->id = s->deploys->next_id++;
	d->resolved_at = sw_mono_ms();
	for (tail = &s->deploys->head; *tail; tail = &(*tail)->next)
		;
	*tail = d;
	save(d, 1, SIZE_MAX);
	rounds = (d->nsys + (size_t)d->parallel - 1) / (size_t)d->parallel;
	sw_info("deployment %" PRId64 ": %s %s %s on %s (%zu systems, %" PRId64
		" at once, at most %" PRId64 " s each)",
		d->id, d->action, d->package, d->version, d->collection, d->nsys, d->parallel,
		(per_system_ms(s, d, 1) + 999) / 1000);
	o = dep_json(s, d, 1);
	/* the worst case for the members as they stand, all of them answering slowly */
	json_object_set_new(
	    o, "bound_s",
	    json_integer((json_int_t)rounds * ((per_system_ms(s, d, 1) + 999) / 1000)));
	sw_http_reply_json(c->req, 200, o);
	free(c);
	on_tick(&s->deploys->tick); /* the first ones start now */
}

static const char *str(const json_t *o, const char *key)
{
	const char *v = json_string_value(json_object_get(o, key));

	return v ? v : "";
}

/* The stored manifest and signature of content `sha`, into `d`. */
static int content_manifest(struct server *s, struct dep *d, const char *sha, char *err,
			    size_t errlen)
{
	char path[PATH_MAX], *text = NULL;
	json_t *meta = NULL, *m = NULL;
	size_t len;
	int rc;

	content_path(s, sha, "json", path, sizeof(path));
	if (sw_file_read(path, 64 * 1024, &text, &len, err, errlen)) {
		sw_seterr(err, errlen, "no content %.12s on this server (upload it first)", sha);
		return SW_ENOTFOUND;
	}
	rc = SW_EINVAL;
	if (!(meta = json_loadb(text, len, 0, NULL)) ||
	    !json_is_string(json_object_get(meta, "manifest")) ||
	    !(m = json_loads(json_string_value(json_object_get(meta, "manifest")), 0, NULL))) {
		sw_seterr(err, errlen, "the stored manifest of %.12s does not read", sha);
		goto out;
	}
	d->manifest = strdup(json_string_value(json_object_get(meta, "manifest")));
	d->signature = strdup(str(meta, "signature"));
	snprintf(d->package, sizeof(d->package), "%s", str(m, "package"));
	snprintf(d->version, sizeof(d->version), "%s", str(m, "version"));
	snprintf(d->arch, sizeof(d->arch), "%s", str(m, "arch"));
	snprintf(d->sha, sizeof(d->sha), "%s", sha);
	d->size = json_integer_value(json_object_get(m, "size"));
	rc = d->manifest && d->signature ? 0 : SW_ENOMEM;
out:
	json_decref(meta);
	json_decref(m);
	free(text);
	return rc;
}

/* A removal's manifest, signed now. */
static int removal_manifest(struct server *s, struct dep *d, const char *package, char *err,
			    size_t errlen)
{
	json_t *m = json_pack("{ss ss sI}", "action", "remove", "package", package, "issued",
			      (json_int_t)sw_now_ms());
	char *key = NULL;
	int rc;

	if (!m || !(d->manifest = json_dumps(m, JSON_COMPACT | JSON_SORT_KEYS))) {
		json_decref(m);
		return SW_ENOMEM;
	}
	json_decref(m);
	snprintf(d->package, sizeof(d->package), "%s", package);
	if ((rc = sw_pem_read(s->dir, "signing.key", &key, err, errlen)))
		return rc;
	rc = sw_pki_sign(key, d->manifest, strlen(d->manifest), &d->signature, err, errlen);
	free(key);
	return rc;
}

void deploy_post(struct sw_http_req *req, void *arg)
{
	struct server *s = arg;
	const char *sha = NULL, *removal = NULL, *coll = NULL, *window = NULL;
	struct create *c = NULL;
	struct dep *d = dep_new(s);
	char err[400];
	json_t *j;
	int rc;

	if (!(j = sw_http_req_json(req))) {
		if (d)
			dep_free(d);
		return;
	}
	if (!d || !(c = calloc(1, sizeof(*c)))) {
		sw_http_reply_error(req, 500, "out of memory");
		goto fail;
	}
	d->parallel = 10;
	d->max_failures = 0;
	if (sw_json_str(j, "sha256", 64, 0, &sha, err, sizeof(err)) ||
	    sw_json_str(j, "remove", 100, 0, &removal, err, sizeof(err)) ||
	    sw_json_str(j, "collection", 63, 1, &coll, err, sizeof(err)) ||
	    sw_json_str(j, "window", 11, 0, &window, err, sizeof(err)) ||
	    sw_json_int(j, "parallel", 1, PARALLEL_MAX, 0, &d->parallel, err, sizeof(err)) ||
	    sw_json_int(j, "max_failures", 0, 1000000, 0, &d->max_failures, err, sizeof(err))) {
		sw_http_reply_error(req, 400, "%s", err);
		goto fail;
	}
	if (!sw_name_valid(coll)) {
		sw_http_reply_error(req, 400, "not a collection name");
		goto fail;
	}
	if (!sha == !removal) {
		sw_http_reply_error(req, 400, "a deployment takes sha256 (install) or remove");
		goto fail;
	}
	if (window_parse(window, &d->win_from, &d->win_to)) {
		sw_http_reply_error(req, 400, "the window is HH:MM-HH:MM (22:00-06:00), not %s",
				    window);
		goto fail;
	}
	if (removal && !sw_dpkg_name_valid(removal)) {
		sw_http_reply_error(req, 400, "%s is not a Debian package name", removal);
		goto fail;
	}
	snprintf(d->action, sizeof(d->action), "%s", sha ? "install" : "remove");
	snprintf(d->collection, sizeof(d->collection), "%s", coll);
	snprintf(d->window, sizeof(d->window), "%s", window ? window : "");
	d->state = DEP_ACTIVE;
	snprintf(d->created_by, sizeof(d->created_by), "%s", sw_http_req_identity(req)->cn);
	d->created_at = sw_now_ms();
	rc = sha ? content_manifest(s, d, sha, err, sizeof(err))
		 : removal_manifest(s, d, removal, err, sizeof(err));
	if (rc) {
		sw_http_reply_error(req, sw_http_status(rc), "%s", err);
		goto fail;
	}
	c->s = s;
	c->req = req;
	c->d = d;
	if (collections_resolve(s, d->collection, on_first_members, c)) {
		sw_http_reply_error(req, 500, "out of memory");
		goto fail;
	}
	json_decref(j);
	return;
fail:
	if (d)
		dep_free(d);
	free(c);
	json_decref(j);
}
