/*
 * The upgrade run: rolls a signed package out to the site server and then to every
 * site system, and never waits without a bound.
 *
 * The run has a machine of its own (`upgrade_run_enter`: running, rolling-back, then an
 * outcome), the site server's part another (upgrade_self.c), and each system one
 * (usys.c). This file drives them: it feeds each system's machine the answers of its
 * agent and the changes of the site, does what the machine asks (a request with its
 * deadline, a role removed or restored, the run halted), journals, and schedules up to
 * `parallel` systems at a time, metering servers one at a time so metering stays
 * available.
 *
 * No completion runs inside the call that asked for it: an event known at once (a
 * system that is no longer enrolled, a request that could not start) is queued and
 * delivered on the loop's next turn, and only timers drive the run, so nothing here
 * re-enters itself.
 *
 * Before a leg (a run, a resume, a rollback) touches anything its worst-case wall time
 * is known: the step table's deadlines, the number of systems, `parallel` and the stop
 * timeout give it (usys_run_bound_ms). It is shown with the run and a run never exceeds
 * it; a deferred system caught up after the run ends has its own bound.
 */
#include "upgrade.h"

#include "error.h"
#include "install.h"
#include "json.h"
#include "log.h"
#include "util.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const uself_names[] = {"pending", "staged",	  "backed-up",	   "switched",	 "done",
				   "failed",  "restored", "switched-back", "rolled-back"};

/* An event for a system, delivered on the loop's next turn. */
struct uevent_msg {
	struct uevent_msg *next;
	size_t index;
	unsigned gen;
	enum yevent ev;
	char why[300];
};

static int64_t now_ms(void)
{
	return sw_now_ms();
}

void upgrade_destroy(struct upgrade *u)
{
	if (!u)
		return;
	for (size_t i = 0; i < u->nsys; i++) {
		json_decref(u->sys[i].times);
		json_decref(u->sys[i].removed);
	}
	while (u->queue) {
		struct uevent_msg *m = u->queue;
		u->queue = m->next;
		free(m);
	}
	sw_strmap_free(u->index);
	free(u->sys);
	free(u);
}

int upgrade_index_build(struct upgrade *u)
{
	u->queue_tail = &u->queue;
	if (!(u->index = sw_strmap_new()))
		return SW_ENOMEM;
	for (size_t i = 0; i < u->nsys; i++)
		if (sw_strmap_set(u->index, u->sys[i].name, &u->sys[i]))
			return SW_ENOMEM;
	return 0;
}

static void on_timer_closed(uv_handle_t *h)
{
	struct upgrade *u = h->data;

	if (h == (uv_handle_t *)&u->kick)
		upgrade_destroy(u);
}

void upgrade_free(struct server *s)
{
	struct upgrade *u = s->upgrade;

	s->upgrade = NULL;
	if (!u)
		return;
	/* At shutdown the loop has closed every handle already. */
	if (u->timers_started && !uv_is_closing((uv_handle_t *)&u->kick)) {
		uv_close((uv_handle_t *)&u->tick, on_timer_closed);
		uv_close((uv_handle_t *)&u->kick, on_timer_closed);
	} else {
		upgrade_destroy(u);
	}
}

int upgrade_is_active(const struct upgrade *u)
{
	return u->state == SW_RUN_RUNNING || u->state == SW_RUN_ROLLING_BACK;
}

size_t upgrade_count(const struct upgrade *u, enum sw_sys_state st)
{
	size_t n = 0;

	for (size_t i = 0; i < u->nsys; i++)
		n += u->sys[i].state == st;
	return n;
}

void upgrade_run_enter(struct upgrade *u, enum sw_run_state state)
{
	if (u->state != state)
		sw_info("upgrade %" PRId64 " to %s: %s", u->id, u->version,
			sw_run_state_name(state));
	u->state = state;
	ujournal_run_save(u);
}

void upgrade_finish(struct upgrade *u)
{
	size_t deferred = upgrade_count(u, SW_SYS_DEFERRED),
	       failed = upgrade_count(u, SW_SYS_FAILED);
	enum sw_run_state st;

	if (u->o.rollback)
		st = u->halted ? SW_RUN_FAILED : SW_RUN_ROLLED_BACK;
	else if (u->halted || failed)
		st = SW_RUN_FAILED;
	else if (deferred)
		st = SW_RUN_DEFERRED;
	else
		st = SW_RUN_DONE;
	if (!u->reason[0] && failed)
		snprintf(u->reason, sizeof(u->reason), "%zu system%s failed", failed,
			 failed == 1 ? "" : "s");
	u->finished_at = now_ms();
	if (u->state != st)
		sw_info("upgrade %" PRId64 " to %s: %s", u->id, u->version, sw_run_state_name(st));
	u->state = st;
	/* queued after the systems' last rows: a finished run's journal has every outcome */
	ujournal_run_save(u);
	sw_info("upgrade %" PRId64 " to %s: %s in %.1f s of a bound of %.1f s (%zu upgraded, %zu "
		"deferred, %zu failed)%s%s",
		u->id, u->version, sw_run_state_name(st), (u->finished_at - u->leg_at) / 1000.0,
		u->bound_ms / 1000.0, upgrade_count(u, SW_SYS_UPGRADED), deferred, failed,
		u->reason[0] ? ": " : "", u->reason);
}

void upgrade_halt(struct upgrade *u, const char *fmt, ...)
{
	va_list ap;

	if (u->halted)
		return;
	u->halted = 1;
	va_start(ap, fmt);
	vsnprintf(u->reason, sizeof(u->reason), fmt, ap);
	va_end(ap);
	sw_warn("upgrade %" PRId64 " stops: %s", u->id, u->reason);
	for (size_t i = 0; i < u->nsys; i++) {
		if (u->sys[i].state == SW_SYS_PENDING) {
			u->sys[i].state = SW_SYS_UNCHANGED;
			snprintf(u->sys[i].reason, sizeof(u->sys[i].reason), "the run stopped");
			ujournal_sys_save(&u->sys[i], 0);
		}
	}
	ujournal_run_save(u);
}

static void budget_check(struct upgrade *u)
{
	size_t bad = upgrade_count(u, SW_SYS_DEFERRED) + upgrade_count(u, SW_SYS_FAILED);

	if (u->o.max_failures >= 0 && bad > (size_t)u->o.max_failures)
		upgrade_halt(u, "more than %d systems deferred or failed", u->o.max_failures);
}

/* --- events and calls --- */

static void post(struct usys *y, enum yevent ev, const char *why)
{
	struct upgrade *u = y->u;
	struct uevent_msg *m = calloc(1, sizeof(*m));

	if (!m) {
		sw_err("upgrade: %s: out of memory for an event", y->name);
		return;
	}
	m->index = (size_t)(y - u->sys);
	m->gen = y->gen;
	m->ev = ev;
	snprintf(m->why, sizeof(m->why), "%s", why ? why : "");
	*u->queue_tail = m;
	u->queue_tail = &m->next;
	upgrade_kick(u);
}

static void apply(struct usys *y, enum yevent ev, const struct yinfo *in);

static void roles_changed(struct server *s, struct reg_op *op)
{
	struct system *sys = sw_strmap_get(s->systems, op->name);

	if (op->rc)
		sw_err("upgrade: %s: cannot %s roles: %s", op->name, op->add ? "restore" : "remove",
		       op->err);
	else if (sys && !s->stopping)
		control_push_roles(s, sys, NULL, NULL, 0, 5000);
	json_decref(op->roles);
	free(op);
}

/* Roles of `y` added (restore) or removed, as its machine asked, through the write queue
 * ahead of the row naming its next step; the agent hears of it at once, or from its
 * next heartbeat. */
static void roles_change(struct usys *y, const json_t *roles, int add)
{
	struct server *s = y->u->s;
	struct reg_op *op = calloc(1, sizeof(*op));

	if (!op || !(op->roles = json_deep_copy(roles))) {
		sw_err("upgrade: %s: out of memory for a change of roles", y->name);
		free(op);
		return;
	}
	op->kind = REG_ROLES;
	op->add = add;
	snprintf(op->name, sizeof(op->name), "%s", y->name);
	op->done = roles_changed;
	if (registry_submit(s, op)) {
		if (op->rc != SW_ENOTFOUND)
			sw_err("upgrade: %s: cannot %s roles: %s", y->name,
			       add ? "restore" : "remove", op->err);
		json_decref(op->roles);
		free(op);
	}
}

static void apply(struct usys *y, enum yevent ev, const struct yinfo *in)
{
	struct upgrade *u = y->u;
	struct system *sys = sw_strmap_get(u->s->systems, y->name);
	struct yinfo info = *in;
	struct yact act;

	info.services = sys ? sys->services : NULL;
	usys_event(y, &u->o, ev, &info, now_ms(), &act);
	if (act.remove) {
		roles_change(y, act.remove, 0);
		json_decref(act.remove);
	}
	if (act.restore)
		roles_change(y, y->removed, 1);
	/* a step's call is made once the row naming the step is stored */
	if (y->dirty)
		ujournal_sys_save(y, act.call);
	else if (act.call)
		upgrade_call_step(y);
	if (act.halt)
		upgrade_halt(u, "%s: %s", y->name, y->reason);
	if (act.finished && ev <= YE_TICK &&
	    (y->state == SW_SYS_DEFERRED || y->state == SW_SYS_FAILED))
		budget_check(u);
	if (act.finished) {
		/* a finished run's outcome may change with it */
		if (!upgrade_is_active(u))
			u->catchups = 1;
		upgrade_kick(u);
	}
}

struct ucall {
	struct server *s;
	int64_t id; /* the run it belongs to, in case the run changed meanwhile */
	size_t index;
	unsigned gen;
};

static void on_call(const struct sw_http_result *res, void *arg)
{
	struct ucall *c = arg;
	struct upgrade *u = c->s->upgrade;
	struct usys *y;
	json_t *reply = NULL;
	char why[400];

	/* At shutdown answers are cancelled: the journal keeps the step, resume redoes it. */
	if (c->s->stopping || !u || u->id != c->id || c->index >= u->nsys)
		goto out;
	y = &u->sys[c->index];
	if (y->gen != c->gen || !y->busy)
		goto out; /* the answer of a call the machine no longer waits for */
	if (res->status == 0) {
		apply(y, res->code == SW_ETIMEDOUT ? YE_TIMEOUT : YE_UNREACHABLE,
		      &(struct yinfo){.why = res->error});
	} else if (res->status >= 200 && res->status < 300 &&
		   sw_json_parse_object(res->body, res->len, &reply, NULL, 0) == 0) {
		apply(y, YE_ANSWER, &(struct yinfo){.reply = reply});
	} else {
		control_error(res, why, sizeof(why));
		apply(y, res->status == 503 ? YE_BUSY : YE_REFUSED, &(struct yinfo){.why = why});
	}
out:
	json_decref(reply);
	free(c);
}

/* A time on the agent's clock: `at` on ours. */
static json_int_t agent_time(const struct system *sys, int64_t at)
{
	return at + sys->clock_skew_ms;
}

static json_t *step_body(struct usys *y, const struct system *sys, int64_t now)
{
	struct upgrade *u = y->u;
	unsigned limit = (unsigned)(y->deadline - now), margin;
	char url[600];

	switch (y->step) {
	case YS_STOP:
		/* The stop bound covers the whole call: the services get it less the time
		 * an answer needs to come back (over the channel, at most the hold of the
		 * poll it waits for, too). A kill adds SIGKILL's own bounded wait. */
		margin =
		    u->o.stop_timeout_ms / 5 < MARGIN_MS ? u->o.stop_timeout_ms / 5 : MARGIN_MS;
		margin += SW_POLL_ANSWER_MS;
		if (margin > u->o.stop_timeout_ms / 2)
			margin = u->o.stop_timeout_ms / 2;
		return json_pack("{si sb sI}", "grace_ms", (int)(u->o.stop_timeout_ms - margin),
				 "kill", y->kill, "deadline_ms",
				 agent_time(sys, now + limit - margin / 2));
	case YS_STAGE:
		snprintf(url, sizeof(url), "https://%s/v1/packages/%s", u->s->listen, u->sha);
		return json_pack("{ss ss sI ss sI}", "version", u->version, "sha256", u->sha,
				 "size", (json_int_t)u->size, "url", url, "deadline_ms",
				 agent_time(sys, y->deadline - MARGIN_MS));
	case YS_SWITCH:
	case YS_ROLLBACK: return json_pack("{ss}", "version", usys_target(y));
	case YS_START:
	case YS_RESTART:
		return json_pack("{sI}", "deadline_ms", agent_time(sys, y->deadline - MARGIN_MS));
	default: return NULL;
	}
}

/* The step's request, once the row naming the step is stored (ujournal.c). */
void upgrade_call_step(struct usys *y)
{
	struct server *s = y->u->s;
	struct system *sys = sw_strmap_get(s->systems, y->name);
	const char *path, *method = ystep_request(y->step, &path);
	int64_t now = now_ms();
	struct ucall *c;

	if (!method)
		return;
	y->gen++;
	if (!sys) {
		post(y, YE_REMOVED, NULL);
		return;
	}
	if (y->serial[0] && strcmp(y->serial, sys->serial) != 0) {
		post(y, YE_REENROLLED, NULL);
		return;
	}
	if (!(c = calloc(1, sizeof(*c)))) {
		post(y, YE_UNREACHABLE, "out of memory");
		return;
	}
	c->s = s;
	c->id = y->u->id;
	c->index = (size_t)(y - y->u->sys);
	c->gen = y->gen;
	y->busy = 1;
	y->next_poll = now + TICK_MS;
	if (control_call(s, sys, method, path, step_body(y, sys, now), ystep_call_ms(y, now),
			 on_call, c)) {
		free(c);
		post(y, YE_UNREACHABLE, "its address cannot be used");
	}
}

/* --- the site's changes --- */

void upgrade_system_removed(struct server *s, const char *name)
{
	struct usys *y = s->upgrade ? sw_strmap_get(s->upgrade->index, name) : NULL;

	if (y)
		post(y, YE_REMOVED, NULL);
}

void upgrade_system_enrolled(struct server *s, struct system *sys)
{
	struct usys *y = s->upgrade ? sw_strmap_get(s->upgrade->index, sys->name) : NULL;

	if (y && strcmp(y->serial, sys->serial) != 0) {
		if (y->state == SW_SYS_PENDING)
			snprintf(y->serial, sizeof(y->serial), "%s", sys->serial);
		else
			post(y, YE_REENROLLED, NULL);
	}
}

void upgrade_role_changed(struct server *s, struct system *sys, const char *role, int add)
{
	struct usys *y = s->upgrade ? sw_strmap_get(s->upgrade->index, sys->name) : NULL;

	if (y)
		apply(y, YE_ROLE, &(struct yinfo){.role = role, .add = add});
}

/* --- scheduling --- */

static int is_metering(struct server *s, const char *name)
{
	struct system *sys = sw_strmap_get(s->systems, name);

	return sys && registry_has_role(sys, METERING_ROLE);
}

/* The roles when a leg begins decide its order, and so its bound; a server that comes
 * back from its own switch reads them again. */
static void mark_metering(struct upgrade *u)
{
	for (size_t i = 0; i < u->nsys; i++)
		u->sys[i].metering = is_metering(u->s, u->sys[i].name);
}

void upgrade_leg_begin(struct upgrade *u)
{
	size_t metering = 0, others = 0;

	mark_metering(u);
	for (size_t i = 0; i < u->nsys; i++) {
		struct usys *y = &u->sys[i];

		if (y->state == SW_SYS_PENDING || y->state == SW_SYS_ACTIVE)
			y->metering ? metering++ : others++;
	}
	u->leg_at = now_ms();
	u->bound_ms = usys_run_bound_ms(&u->o, metering, others, upgrade_self_bound_ms(u));
	sw_info("upgrade %" PRId64 ": %zu systems to %s, at most %.0f s", u->id, metering + others,
		u->o.rollback ? "roll back" : "upgrade", u->bound_ms / 1000.0);
}

void upgrade_sys_begin(struct usys *y)
{
	struct system *sys = sw_strmap_get(y->u->s->systems, y->name);

	if (sys && !y->serial[0])
		snprintf(y->serial, sizeof(y->serial), "%s", sys->serial);
	sw_info("upgrade: %s: %s %s → %s%s", y->name,
		y->u->o.rollback ? "rolling back" : "upgrading", sys ? sys->version : y->from,
		usys_target(y), y->catchup ? " (it is back)" : "");
	apply(y, YE_BEGIN, &(struct yinfo){0});
}

/* Agents come back to a restarted server by themselves (the server's own switch ended
 * every channel): a system is begun once its agent has polled, or once the grace has
 * passed since the server started, so no step's deadline is spent on the reconnect. */
int64_t upgrade_reconnect_grace_ms(const struct server *s)
{
	return (int64_t)s->heartbeat_s * 2000 + RECONNECT_GRACE_MS;
}

static int reconnecting(const struct upgrade *u, const struct usys *y)
{
	const struct server *s = u->s;
	const struct system *sys = sw_strmap_get(s->systems, y->name);

	return sys && !channel_connected(s, sys) &&
	       sw_mono_ms() - s->started_ms < upgrade_reconnect_grace_ms(s);
}

static void drive(struct upgrade *u)
{
	size_t active = 0;
	int metering_busy = 0;
	int64_t now = now_ms();

	/* While the server's own part is in flight (a restore, its re-exec), nothing else
	 * moves: a rollback that finished here would be reported before the server returns. */
	if (u->state == SW_RUN_INTERRUPTED || u->self_busy || u->s->stopping)
		return;
	if (u->state == SW_RUN_RUNNING && u->self != SELF_DONE) {
		if (!u->halted)
			upgrade_self_step(u);
		return;
	}
	for (size_t i = 0; i < u->nsys; i++) {
		struct usys *y = &u->sys[i];

		if (y->state != SW_SYS_ACTIVE)
			continue;
		apply(y, YE_TICK, &(struct yinfo){0});
		if (y->state == SW_SYS_ACTIVE) {
			active++;
			metering_busy |= y->metering;
		}
	}
	if (upgrade_is_active(u) && !u->halted && now > u->leg_at + u->bound_ms + TICK_MS)
		/* cannot happen while every step keeps its deadline: said loudly if it does */
		upgrade_halt(u, "the run passed its bound of %.0f s", u->bound_ms / 1000.0);
	for (size_t i = 0; i < u->nsys && !u->halted && upgrade_is_active(u); i++) {
		struct usys *y = &u->sys[i];

		if (active >= u->o.parallel)
			break;
		if (y->state != SW_SYS_PENDING || (y->metering && metering_busy) ||
		    reconnecting(u, y))
			continue;
		metering_busy |= y->metering;
		active++;
		upgrade_sys_begin(y);
	}
	if (active == 0 && upgrade_is_active(u) &&
	    (u->halted || upgrade_count(u, SW_SYS_PENDING) == 0)) {
		/* The server returns last, asked again on every tick until it is back (a
		 * return waiting for the write queue may have its database restored). */
		if (u->o.rollback && !u->halted &&
		    (u->self == SELF_DONE || u->self == SELF_RESTORED)) {
			upgrade_self_step(u);
			return;
		}
		upgrade_finish(u);
	} else if (active == 0 && !upgrade_is_active(u) && u->catchups) {
		/* catch-ups done: the run's outcome may have changed */
		u->catchups = 0;
		upgrade_finish(u);
	}
	/* A finished run waits for heartbeats, not for the clock. */
	if (active == 0 && !upgrade_is_active(u))
		uv_timer_stop(&u->tick);
}

static void on_tick(uv_timer_t *t)
{
	drive(t->data);
}

static void on_kick(uv_timer_t *t)
{
	struct upgrade *u = t->data;
	struct uevent_msg *m = u->queue;

	u->queue = NULL;
	u->queue_tail = &u->queue;
	while (m) {
		struct uevent_msg *next = m->next;
		struct usys *y = m->index < u->nsys ? &u->sys[m->index] : NULL;

		if (y && y->gen == m->gen)
			apply(y, m->ev, &(struct yinfo){.why = m->why});
		free(m);
		m = next;
	}
	drive(u);
}

void upgrade_timers_start(struct upgrade *u)
{
	if (!u->timers_started) {
		uv_timer_init(u->s->loop, &u->tick);
		uv_timer_init(u->s->loop, &u->kick);
		u->tick.data = u->kick.data = u;
		u->timers_started = 1;
	}
	uv_timer_start(&u->tick, on_tick, TICK_MS, TICK_MS);
	upgrade_kick(u);
}

/* What changes the run is journaled, and the journal says so here: the generation
 * moves on and the changed part notes it, so that watchers (the API's event streams, a
 * floor up) are sent what changed, each change once, however many come at a time. */
void upgrade_changed(struct upgrade *u, struct usys *y)
{
	struct server *s = u->s;

	s->upgrade_gen++;
	if (y)
		y->changed_gen = s->upgrade_gen;
	else
		u->changed_gen = s->upgrade_gen;
	if (s->upgrade == u && s->upgrade_watch)
		s->upgrade_watch(s);
}

void upgrade_kick(struct upgrade *u)
{
	if (!u->timers_started)
		upgrade_timers_start(u);
	else
		uv_timer_start(&u->kick, on_kick, 0, 0);
}

void upgrade_heard(struct server *s, struct system *sys)
{
	struct upgrade *u = s->upgrade;
	struct usys *y;

	/* Deferred systems are caught up once the run has finished, each within a bound
	 * of its own, so the run's bound holds. A run stopped by its policy or budget
	 * leaves them alone; one that merely finished with failures does not. */
	if (!u || u->o.rollback || u->halted ||
	    (u->state != SW_RUN_DEFERRED && u->state != SW_RUN_FAILED))
		return;
	y = sw_strmap_get(u->index, sys->name);
	if (!y || y->state != SW_SYS_DEFERRED)
		return;
	if (strcmp(sys->version, u->version) == 0 && !json_array_size(y->removed)) {
		y->state = SW_SYS_UPGRADED;
		y->reason[0] = '\0';
		y->finished_at = now_ms();
		ujournal_sys_save(y, 0);
		sw_info("upgrade: %s upgraded: it reports %s", y->name, u->version);
		u->catchups = 1;
		upgrade_kick(u);
	} else if (now_ms() - y->deferred_at >= CATCHUP_DELAY_MS) {
		y->catchup = 1;
		y->step = YS_NONE;
		snprintf(y->serial, sizeof(y->serial), "%s", sys->serial);
		u->catchups = 1;
		upgrade_sys_begin(y);
		upgrade_timers_start(u);
	}
}

static void collect(const char *key, void *value, void *arg)
{
	struct system ***at = arg;

	(void)key;
	*(*at)++ = value;
}

struct system **upgrade_systems_list(struct server *s)
{
	struct system **list = calloc(sw_strmap_count(s->systems) + 1, sizeof(*list)), **at = list;

	if (list)
		sw_strmap_each(s->systems, collect, &at);
	return list;
}

int upgrade_load(struct server *s, char *err, size_t errlen)
{
	struct upgrade *u;
	char running[SW_PKG_VERSION_MAX + 1];
	int rc;

	if ((rc = ujournal_load(s, &u, err, errlen)) || !u)
		return rc;
	s->upgrade = u;
	sw_install_version(s->dir, running, sizeof(running));
	if (u->state == SW_RUN_RUNNING && u->self == SELF_SWITCHED &&
	    strcmp(running, u->version) == 0) {
		/* Restarted by the run itself: go on, within the bound it began with. */
		sw_info("upgrade %" PRId64 " to %s: resuming after the server's own switch", u->id,
			u->version);
		mark_metering(u);
		upgrade_timers_start(u);
	} else if (u->state == SW_RUN_ROLLING_BACK && u->self == SELF_SWITCHED_BACK &&
		   strcmp(running, u->from) == 0) {
		upgrade_self_enter(u, SELF_ROLLED_BACK);
		upgrade_finish(u);
	} else if (upgrade_is_active(u)) {
		/* A crash in the middle: the administrator resumes it. */
		for (size_t i = 0; i < u->nsys; i++)
			u->sys[i].busy = 0;
		upgrade_run_enter(u, SW_RUN_INTERRUPTED);
		sw_warn("upgrade %" PRId64 " to %s was interrupted; `siteward upgrade resume` "
			"continues it",
			u->id, u->version);
	}
	return 0;
}
