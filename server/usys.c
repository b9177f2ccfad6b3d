/*
 * One system's machine in an upgrade run: the step table and every decision, as pure
 * functions of (system, event, now). The driver in upgrade.c sends the requests,
 * journals and changes roles as `struct yact` says; tests/unit/test_upgrade_usys.c feeds
 * this file events with a clock of its own.
 *
 * A system goes drain → stop → stage → switch → wait → start → verify [→ restore] → done;
 * a rollback goes drain → stop → rollback → wait → start → verify → done. A system whose
 * services cannot be stopped gets the run's policy; one that fails before its switch gets
 * its services back on the old version (the restart step) before its outcome.
 *
 * What each event does at each step, beyond the table:
 *   removed      any step: the answer in flight is dropped, the outcome is "removed"
 *                (nothing is restored: the machine is no longer the site's)
 *   re-enrolled  any step: the answer in flight is dropped (it is another agent now) and
 *                the system is deferred, to be upgraded when the new agent reports
 *   role change  no step changes; a role the remove-role policy took away and the
 *                administrator changes since is the administrator's, and not restored
 *   agent restart  shows as a dropped connection: steps that are safe to ask again (stage,
 *                start) ask again within their deadline; stop gets the policy, switch
 *                and rollback go on to wait, the polls poll
 *   server killed  the journal holds the step; resume asks the step again (every step
 *                is idempotent on the agent) or, at wait, waits again
 */
#include "upgrade.h"

#include "log.h"
#include "proto.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *const yevent_names[] = {"begin", "answer", "refused", "timeout",	 "unreachable",
				    "busy",  "tick",   "removed", "re-enrolled", "role"};

/* What a transport outcome leads to. */
enum yon {
	ON_NEXT,  /* as a good answer would */
	ON_STUCK, /* the services cannot be stopped: the run's policy */
	ON_FAIL,  /* the step failed */
	ON_RETRY, /* ask again on a later tick, while the step's deadline lasts */
	ON_POLL,  /* a poll: ask again on the next tick */
	ON_END,	  /* the restart step: end in the outcome decided before it */
};

struct ystep_def {
	const char *name;
	const char *method, *path; /* the request; NULL: none */
	unsigned timeout_ms;	   /* the step's deadline; 0: from the run's options */
	int poll;		   /* asked every tick until it is good or the deadline passes */
	enum yon refused, timeout, unreachable;
};

/* The deadline of every wait sits here, beside the wait. */
static const struct ystep_def steps[YS_COUNT] = {
    [YS_NONE] = {"", NULL, NULL, 0, 0, ON_FAIL, ON_FAIL, ON_FAIL},
    [YS_DRAIN] = {"drain", NULL, NULL, 0, 0, ON_FAIL, ON_FAIL, ON_FAIL},
    [YS_STOP] = {"stop", "POST", "/v1/upgrade/stop", 0, 0, ON_STUCK, ON_STUCK, ON_STUCK},
    [YS_STAGE] = {"stage", "POST", "/v1/upgrade/stage", 0, 0, ON_FAIL, ON_STUCK, ON_RETRY},
    /* No answer may mean it restarted before answering: the wait tells. */
    [YS_SWITCH] = {"switch", "POST", "/v1/upgrade/switch", SWITCH_TIMEOUT_MS, 0, ON_FAIL, ON_NEXT,
		   ON_NEXT},
    [YS_WAIT] = {"wait", "GET", "/v1/status", RETURN_TIMEOUT_MS, 1, ON_POLL, ON_POLL, ON_POLL},
    [YS_START] = {"start", "POST", "/v1/upgrade/start", START_TIMEOUT_MS + MARGIN_MS, 0, ON_FAIL,
		  ON_FAIL, ON_RETRY},
    [YS_VERIFY] = {"verify", "GET", "/v1/status", VERIFY_TIMEOUT_MS, 1, ON_POLL, ON_POLL, ON_POLL},
    [YS_RESTORE] = {"restore", "GET", "/v1/status", START_TIMEOUT_MS, 1, ON_POLL, ON_POLL, ON_POLL},
    [YS_ROLLBACK] = {"rollback", "POST", "/v1/upgrade/rollback", SWITCH_TIMEOUT_MS, 0, ON_FAIL,
		     ON_NEXT, ON_NEXT},
    [YS_RESTART] = {"restart", "POST", "/v1/upgrade/start", START_TIMEOUT_MS + MARGIN_MS, 0, ON_END,
		    ON_END, ON_END},
    [YS_DONE] = {"done", NULL, NULL, 0, 0, ON_FAIL, ON_FAIL, ON_FAIL},
};

const char *ystep_name(enum ystep step)
{
	return step < YS_COUNT ? steps[step].name : "";
}

enum ystep ystep_parse(const char *name)
{
	for (int i = 0; i < YS_COUNT; i++)
		if (strcmp(name, steps[i].name) == 0)
			return (enum ystep)i;
	return YS_NONE;
}

enum sw_sys_state ystate_parse(const char *name)
{
	enum sw_sys_state st = sw_sys_state_parse(name);

	return st == SW_SYS_UNKNOWN ? SW_SYS_PENDING : st;
}

const char *ystep_request(enum ystep step, const char **path)
{
	*path = steps[step].path;
	return steps[step].method;
}

const char *usys_target(const struct usys *y)
{
	return y->u->o.rollback ? y->from : y->u->version;
}

static unsigned stop_ms(const struct usys *y, const struct uopts *o)
{
	return o->stop_timeout_ms + (y->kill ? KILL_EXTRA_MS : 0);
}

/* A download at 256 kB/s at the least, from a slow link's or a large package's agent. */
static unsigned stage_ms(const struct uopts *o)
{
	uint64_t ms = STAGE_BASE_MS + o->package_size / STAGE_BYTES_MS + MARGIN_MS;

	return ms > 24 * 3600 * 1000u ? 24 * 3600 * 1000u : (unsigned)ms;
}

static unsigned step_ms(const struct usys *y, const struct uopts *o, enum ystep step)
{
	if (step == YS_STOP)
		return stop_ms(y, o);
	if (step == YS_STAGE)
		return stage_ms(o);
	return steps[step].timeout_ms;
}

unsigned ystep_call_ms(const struct usys *y, int64_t now)
{
	int64_t left = y->deadline - now;

	if (left < 1)
		left = 1;
	return (unsigned)(steps[y->step].poll && left > POLL_TIMEOUT_MS ? POLL_TIMEOUT_MS : left);
}

void usys_enter(struct usys *y, const struct uopts *o, enum ystep step, int64_t now)
{
	if (y->step != YS_NONE && y->step_at) {
		json_t *was = json_object_get(y->times, steps[y->step].name);
		json_int_t spent = now - y->step_at + (was ? json_integer_value(was) : 0);
		json_object_set_new(y->times, steps[y->step].name, json_integer(spent));
	}
	if (step != y->step)
		sw_info("upgrade: %s: %s", y->name, steps[step].name);
	y->step = step;
	y->step_at = now;
	y->deadline = now + step_ms(y, o, step);
	y->next_poll = now;
	y->last[0] = '\0';
	y->dirty = 1;
}

static void finish(struct usys *y, const struct uopts *o, enum sw_sys_state st, int64_t now,
		   struct yact *act, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static void finish(struct usys *y, const struct uopts *o, enum sw_sys_state st, int64_t now,
		   struct yact *act, const char *fmt, ...)
{
	va_list ap;

	if (fmt) {
		va_start(ap, fmt);
		vsnprintf(y->reason, sizeof(y->reason), fmt, ap);
		va_end(ap);
	}
	if (y->state == SW_SYS_ACTIVE)
		usys_enter(y, o,
			   st == SW_SYS_UPGRADED || st == SW_SYS_ROLLED_BACK ? YS_DONE : y->step,
			   now);
	y->state = st;
	y->busy = 0;
	y->finished_at = now;
	if (st == SW_SYS_DEFERRED)
		y->deferred_at = now;
	y->dirty = 1;
	act->finished = 1;
	sw_info("upgrade: %s %s%s%s", y->name, sw_sys_state_name(st), y->reason[0] ? ": " : "",
		y->reason);
}

/* Ends in `st` for `why`, once the old version's services are back up where the agent
 * can be asked; `why` may be y->reason itself. */
static void restart_then(struct usys *y, const struct uopts *o, enum sw_sys_state st,
			 const char *why, int64_t now, struct yact *act)
{
	if (why != y->reason)
		snprintf(y->reason, sizeof(y->reason), "%s", why);
	if (!y->reachable) {
		finish(y, o, st, now, act, NULL);
		return;
	}
	y->then = st;
	usys_enter(y, o, YS_RESTART, now);
	act->call = 1;
}

static void begin_step(struct usys *y, const struct uopts *o, enum ystep step, int64_t now,
		       struct yact *act)
{
	usys_enter(y, o, step, now);
	act->call = steps[step].method != NULL;
}

static int has_string(const json_t *array, const char *s)
{
	json_t *v;
	size_t i;

	json_array_foreach(array, i, v) if (s && json_is_string(v) &&
					    strcmp(json_string_value(v), s) == 0) return 1;
	return 0;
}

json_t *usys_roles_of(const json_t *services, const json_t *failed)
{
	json_t *roles = json_array(), *svc, *f;
	size_t i, k;

	json_array_foreach(services, i, svc)
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
		if (wanted && role && !has_string(roles, role))
			json_array_append_new(roles, json_string(role));
	}
	return roles;
}

int usys_services_running(const json_t *services, const json_t *except, char *why, size_t len)
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
		if (sw_svc_state_parse(state) != SW_SVC_RUNNING) {
			snprintf(why, len, "%s is %s%s%s",
				 json_string_value(json_object_get(svc, "name")),
				 state ? state : "unknown", reason && *reason ? ": " : "",
				 reason ? reason : "");
			return 0;
		}
	}
	return 1;
}

static void join_roles(const json_t *roles, char *out, size_t len)
{
	json_t *r;
	size_t i;

	out[0] = '\0';
	json_array_foreach(roles, i, r)
	{
		size_t at = strlen(out);
		snprintf(out + at, len - at, "%s%s", i ? ", " : "", json_string_value(r));
	}
}

/* The services of `y` could not be stopped, for `why`: the run's policy decides. */
static void stuck(struct usys *y, const struct uopts *o, const char *why, const json_t *failed,
		  const json_t *services, int64_t now, struct yact *act)
{
	if (y->catchup) {
		restart_then(y, o, SW_SYS_DEFERRED, why, now, act);
		return;
	}
	if (o->on_stuck == STUCK_REMOVE_ROLE && !json_array_size(y->removed)) {
		json_t *roles = usys_roles_of(services, failed);
		char names[300];

		if (json_array_size(roles)) {
			json_array_extend(y->removed, roles);
			act->remove = roles;
			join_roles(roles, names, sizeof(names));
			sw_info("upgrade: %s: %s; role %s removed until it is upgraded", y->name,
				why, names);
			if (y->reachable) {
				/* Without the role its services go; what remains stops with
				 * SIGKILL after the grace period. */
				y->kill = 1;
				begin_step(y, o, YS_STOP, now, act);
				return;
			}
			finish(y, o, SW_SYS_DEFERRED, now, act, "role %s removed; %s", names, why);
			return;
		}
		json_decref(roles);
	}
	if (o->on_stuck == STUCK_FAIL) {
		act->halt = 1;
		restart_then(y, o, SW_SYS_FAILED, why, now, act);
		return;
	}
	/* SIGKILL needs the agent: one that does not answer is caught up when it does, its
	 * services then killed after the stop timeout as this policy asks. */
	restart_then(y, o,
		     o->on_stuck == STUCK_KILL && y->reachable ? SW_SYS_FAILED : SW_SYS_DEFERRED,
		     why, now, act);
}

/* A step failed for a reason that is not about stopping: the system keeps its old
 * version (or, past the switch, reports how far it got). */
static void step_failed(struct usys *y, const struct uopts *o, const char *why, int64_t now,
			struct yact *act)
{
	char reason[400];
	int switched = y->step >= YS_WAIT && y->step != YS_RESTART;

	snprintf(reason, sizeof(reason), "%s: %s", steps[y->step].name, why);
	if (o->on_stuck == STUCK_FAIL)
		act->halt = 1;
	if (switched)
		finish(y, o, SW_SYS_FAILED, now, act, "%s", reason);
	else
		restart_then(y, o, SW_SYS_FAILED, reason, now, act);
}

static void on_answer(struct usys *y, const struct uopts *o, const struct yinfo *in, int64_t now,
		      struct yact *act)
{
	const json_t *reply = in->reply;
	const char *version = json_string_value(json_object_get(reply, "version"));
	const json_t *services = json_object_get(reply, "services");
	char why[300];

	switch (y->step) {
	case YS_STOP: {
		const json_t *failed = json_object_get(reply, "failed");
		if (json_array_size(failed)) {
			const json_t *f = json_array_get(failed, 0);
			const char *svc = json_string_value(json_object_get(f, "service"));
			const char *r = json_string_value(json_object_get(f, "reason"));
			char msg[400];
			snprintf(msg, sizeof(msg), "%s: %s", svc ? svc : "a service",
				 r ? r : "did not stop");
			stuck(y, o, msg, failed, in->services, now, act);
		} else {
			begin_step(y, o, o->rollback ? YS_ROLLBACK : YS_STAGE, now, act);
		}
		break;
	}
	case YS_STAGE: begin_step(y, o, YS_SWITCH, now, act); break;
	case YS_SWITCH:
	case YS_ROLLBACK: begin_step(y, o, YS_WAIT, now, act); break;
	case YS_WAIT:
		if (version && strcmp(version, usys_target(y)) == 0)
			begin_step(y, o, YS_START, now, act);
		else
			snprintf(y->last, sizeof(y->last), "; it runs %s", version ? version : "?");
		break;
	case YS_START: begin_step(y, o, YS_VERIFY, now, act); break;
	case YS_VERIFY:
		if (!version || strcmp(version, usys_target(y)) != 0)
			snprintf(y->last, sizeof(y->last), "it runs %s, not %s",
				 version ? version : "?", usys_target(y));
		else if (!usys_services_running(services, o->rollback ? NULL : y->removed, why,
						sizeof(why)))
			snprintf(y->last, sizeof(y->last), "%s", why);
		else if (!o->rollback && json_array_size(y->removed)) {
			begin_step(y, o, YS_RESTORE, now, act);
			act->restore = 1;
		} else
			finish(y, o, o->rollback ? SW_SYS_ROLLED_BACK : SW_SYS_UPGRADED, now, act,
			       "%s", "");
		break;
	case YS_RESTORE:
		if (json_array_size(services) &&
		    usys_services_running(services, NULL, why, sizeof(why))) {
			char names[300];
			join_roles(y->removed, names, sizeof(names));
			/* The removed roles stay in the report: they came back after it. */
			finish(y, o, SW_SYS_UPGRADED, now, act,
			       "role %s removed for the upgrade, then restored", names);
		} else {
			snprintf(y->last, sizeof(y->last), "%s",
				 json_array_size(services) ? why
							   : "the restored role's services are "
							     "not running");
		}
		break;
	case YS_RESTART: finish(y, o, y->then, now, act, NULL); break;
	default: break;
	}
}

/* A poll step whose deadline passed. */
static void poll_expired(struct usys *y, const struct uopts *o, int64_t now, struct yact *act)
{
	char why[400];

	if (y->step == YS_WAIT)
		snprintf(why, sizeof(why), "did not come back on version %s within %u s%s",
			 usys_target(y), RETURN_TIMEOUT_MS / 1000, y->last);
	else
		snprintf(why, sizeof(why), "after %u s: %s", steps[y->step].timeout_ms / 1000,
			 y->last[0] ? y->last : "no answer from its agent");
	step_failed(y, o, why, now, act);
}

static void on_outcome(struct usys *y, const struct uopts *o, enum yon on, const char *why,
		       const struct yinfo *in, int64_t now, struct yact *act)
{
	char msg[400];

	switch (on) {
	case ON_NEXT: on_answer(y, o, &(struct yinfo){.reply = NULL}, now, act); break;
	case ON_STUCK:
		/* an agent that answered said why itself */
		if (y->reachable)
			snprintf(msg, sizeof(msg), "%s", why);
		else
			snprintf(msg, sizeof(msg), "agent not answering%s: %s",
				 y->step == YS_STAGE ? " while staging" : "", why);
		stuck(y, o, msg, NULL, in->services, now, act);
		break;
	case ON_FAIL: step_failed(y, o, why, now, act); break;
	case ON_RETRY:
		snprintf(y->last, sizeof(y->last), "%s", why);
		y->next_poll = now + TICK_MS;
		break;
	case ON_POLL:
		/* at the wait it is away, as expected: what it last said stays */
		if (y->step != YS_WAIT)
			snprintf(y->last, sizeof(y->last), "%s", why);
		break;
	case ON_END: finish(y, o, y->then, now, act, NULL); break;
	}
}

void usys_event(struct usys *y, const struct uopts *o, enum yevent ev, const struct yinfo *in,
		int64_t now, struct yact *act)
{
	const struct ystep_def *d = &steps[y->step];

	memset(act, 0, sizeof(*act));
	switch (ev) {
	case YE_BEGIN:
		if (y->state == SW_SYS_ACTIVE && y->step != YS_NONE && y->step != YS_DRAIN) {
			/* resume: the step again, every one idempotent on the agent */
			begin_step(y, o, y->step, now, act);
			act->restore = y->step == YS_RESTORE;
			return;
		}
		y->state = SW_SYS_ACTIVE;
		y->attempts++;
		y->reason[0] = '\0';
		y->finished_at = 0;
		y->busy = 0;
		if (!y->started_at)
			y->started_at = now;
		y->reachable = 1;
		y->kill = y->catchup || o->on_stuck == STUCK_KILL || o->rollback;
		y->dirty = 1;
		/* Metering servers drain by going one at a time (the scheduler sees to it):
		 * while one is stopped, clients fail over to the others. */
		usys_enter(y, o, YS_DRAIN, now);
		begin_step(y, o, YS_STOP, now, act);
		return;
	case YE_ANSWER:
		if (y->state != SW_SYS_ACTIVE)
			return;
		y->busy = 0;
		y->reachable = 1;
		on_answer(y, o, in, now, act);
		return;
	case YE_REFUSED:
	case YE_TIMEOUT:
	case YE_UNREACHABLE:
	case YE_BUSY:
		if (y->state != SW_SYS_ACTIVE)
			return;
		y->busy = 0;
		y->reachable = ev == YE_REFUSED || ev == YE_BUSY;
		if (ev == YE_REFUSED)
			on_outcome(y, o, d->refused, in->why, in, now, act);
		else {
			/* busy: what it is asked is under way there, or it is going away */
			enum yon on = ev == YE_TIMEOUT ? d->timeout
				      : ev == YE_BUSY  ? (d->poll ? ON_POLL : ON_RETRY)
						       : d->unreachable;
			/* a step asked again ends at its own deadline, as a timeout */
			if (on == ON_RETRY && now + TICK_MS >= y->deadline)
				on = d->timeout;
			on_outcome(y, o, on, in->why, in, now, act);
		}
		return;
	case YE_TICK:
		if (y->state != SW_SYS_ACTIVE || y->busy)
			return;
		if (d->poll && now >= y->deadline)
			poll_expired(y, o, now, act);
		else if (d->method && now >= y->deadline)
			/* a step that was being asked again ran out of time */
			on_outcome(y, o, d->timeout, y->last[0] ? y->last : "no answer", in, now,
				   act);
		else if (d->method && now >= y->next_poll)
			act->call = 1;
		return;
	case YE_REMOVED:
		if (y->state == SW_SYS_UPGRADED || y->state == SW_SYS_ROLLED_BACK ||
		    y->state == SW_SYS_REMOVED)
			return;
		y->gen++;
		if (y->state == SW_SYS_ACTIVE)
			finish(y, o, SW_SYS_REMOVED, now, act, "removed from the site at step %s",
			       d->name);
		else if (y->state == SW_SYS_PENDING)
			finish(y, o, SW_SYS_REMOVED, now, act,
			       "removed from the site before its turn");
		else {
			char was[sizeof(y->reason)];
			snprintf(was, sizeof(was), "%s", y->reason);
			finish(y, o, SW_SYS_REMOVED, now, act,
			       "removed from the site; it was %s%s%s", sw_sys_state_name(y->state),
			       was[0] ? ": " : "", was);
		}
		return;
	case YE_REENROLLED:
		if (y->state == SW_SYS_PENDING || y->state == SW_SYS_UNCHANGED ||
		    y->state == SW_SYS_ROLLED_BACK)
			return;
		y->gen++;
		if (o->rollback) {
			if (y->state == SW_SYS_ACTIVE)
				finish(y, o, SW_SYS_FAILED, now, act,
				       "enrolled again at step %s; not rolled back", d->name);
			return;
		}
		if (y->state == SW_SYS_ACTIVE)
			finish(y, o, SW_SYS_DEFERRED, now, act,
			       "enrolled again at step %s; upgraded when it reports", d->name);
		else if (y->state != SW_SYS_DEFERRED)
			finish(y, o, SW_SYS_DEFERRED, now, act,
			       "enrolled again; upgraded when it reports");
		y->catchup = 0;
		return;
	case YE_ROLE:
		for (size_t i = 0; i < json_array_size(y->removed); i++) {
			if (strcmp(json_string_value(json_array_get(y->removed, i)), in->role) ==
			    0) {
				json_array_remove(y->removed, i);
				y->dirty = 1;
				sw_info("upgrade: %s: role %s %s by the administrator: it is not "
					"restored after the upgrade",
					y->name, in->role, in->add ? "added" : "removed");
				break;
			}
		}
		return;
	case YE_COUNT: break;
	}
}

int64_t usys_bound_ms(const struct uopts *o)
{
	int64_t stop = (int64_t)o->stop_timeout_ms + KILL_EXTRA_MS;
	int64_t polls = 3 * (POLL_TIMEOUT_MS + TICK_MS);
	int64_t t;

	if (o->rollback)
		t = stop + SWITCH_TIMEOUT_MS + RETURN_TIMEOUT_MS + START_TIMEOUT_MS + MARGIN_MS +
		    VERIFY_TIMEOUT_MS;
	else
		/* the remove-role policy stops twice; the restart step comes only on paths
		 * that end before the stage, which are shorter */
		t = stop * (o->on_stuck == STUCK_REMOVE_ROLE ? 2 : 1) + stage_ms(o) +
		    SWITCH_TIMEOUT_MS + RETURN_TIMEOUT_MS + START_TIMEOUT_MS + MARGIN_MS +
		    VERIFY_TIMEOUT_MS + START_TIMEOUT_MS;
	/* each step's answer is taken on the loop's next turn, and a tick may pass first */
	return t + polls + YS_COUNT * TICK_MS;
}

int64_t usys_run_bound_ms(const struct uopts *o, size_t metering, size_t others, int64_t self_ms)
{
	int64_t t = usys_bound_ms(o), p = o->parallel ? o->parallel : 1, sys;

	/* While a metering server is in flight (they go one at a time) the run takes at
	 * most metering × t. While none is and systems wait, every slot is busy with the
	 * others: at most others × t / p. Then what is in flight ends within t. */
	if (metering + others == 0)
		sys = 0;
	else if (others == 0)
		sys = (int64_t)metering * t;
	else if (metering == 0 && (int64_t)others <= p)
		sys = t;
	else
		sys = (int64_t)metering * t + ((int64_t)others * t + p - 1) / p + t;
	return self_ms + sys + TICK_MS;
}
