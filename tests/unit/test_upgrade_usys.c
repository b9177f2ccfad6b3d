/* One system's machine in an upgrade run (server/usys.c), driven with events and a clock
 * of the test's own: every step, every event, every policy. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "../../server/upgrade.h"

#include <string.h>

#define OLD "1.0.0"
#define NEW "2.0.0"

struct fixture {
	struct upgrade u;
	struct usys y;
	struct yact act;
	json_t *services;
	int64_t now;
};

static struct fixture *fx_new(int on_stuck, int rollback)
{
	struct fixture *f = calloc(1, sizeof(*f));

	snprintf(f->u.version, sizeof(f->u.version), NEW);
	f->u.o.parallel = 5;
	f->u.o.stop_timeout_ms = 5000;
	f->u.o.max_failures = -1;
	f->u.o.on_stuck = on_stuck;
	f->u.o.rollback = rollback;
	f->y.u = &f->u;
	snprintf(f->y.name, sizeof(f->y.name), "m1");
	snprintf(f->y.from, sizeof(f->y.from), OLD);
	f->y.times = json_object();
	f->y.removed = json_array();
	f->services = json_pack("[{ss ss ss}]", "name", "meter", "role", "software-metering",
				"state", "running");
	f->now = 1000000;
	return f;
}

static void fx_free(struct fixture *f)
{
	json_decref(f->y.times);
	json_decref(f->y.removed);
	json_decref(f->services);
	json_decref(f->act.remove);
	free(f);
}

static void ev(struct fixture *f, enum yevent e, const struct yinfo *in)
{
	struct yinfo info = in ? *in : (struct yinfo){0};

	json_decref(f->act.remove);
	info.services = f->services;
	usys_event(&f->y, &f->u.o, e, &info, f->now, &f->act);
	if (f->act.call)
		f->y.busy = 1; /* as the driver does when it sends */
}

static void answer(struct fixture *f, const char *json)
{
	json_t *reply = json_loads(json, 0, NULL);

	assert_non_null(reply);
	ev(f, YE_ANSWER, &(struct yinfo){.reply = reply});
	json_decref(reply);
}

static void fail_call(struct fixture *f, enum yevent e, const char *why)
{
	ev(f, e, &(struct yinfo){.why = why});
}

#define RUNNING_NEW                                                                                \
	"{\"version\": \"" NEW "\", \"services\": [{\"name\": \"meter\", \"state\": "              \
	"\"running\"}]}"

/* Up to `step` on the happy path. */
static void walk_to(struct fixture *f, enum ystep step)
{
	ev(f, YE_BEGIN, NULL);
	if (step == YS_STOP)
		return;
	answer(f, "{}");
	if (f->u.o.rollback) {
		assert_int_equal(f->y.step, YS_ROLLBACK);
		if (step == YS_ROLLBACK)
			return;
	} else {
		assert_int_equal(f->y.step, YS_STAGE);
		if (step == YS_STAGE)
			return;
		answer(f, "{}");
		assert_int_equal(f->y.step, YS_SWITCH);
		if (step == YS_SWITCH)
			return;
	}
	answer(f, "{}");
	assert_int_equal(f->y.step, YS_WAIT);
	if (step == YS_WAIT)
		return;
	answer(f, f->u.o.rollback ? "{\"version\": \"" OLD "\"}" : "{\"version\": \"" NEW "\"}");
	assert_int_equal(f->y.step, YS_START);
	if (step == YS_START)
		return;
	answer(f, "{}");
	assert_int_equal(f->y.step, YS_VERIFY);
}

static void test_happy_path(void **state)
{
	struct fixture *f = fx_new(STUCK_DEFER, 0);

	(void)state;
	ev(f, YE_BEGIN, NULL);
	assert_int_equal(f->y.state, SW_SYS_ACTIVE);
	assert_int_equal(f->y.step, YS_STOP);
	assert_true(f->act.call);
	assert_int_equal(f->y.attempts, 1);
	/* the stop's deadline is the stop timeout */
	assert_int_equal(f->y.deadline - f->now, 5000);
	f->now += 1200;
	answer(f, "{}");
	assert_int_equal(f->y.step, YS_STAGE);
	assert_int_equal(json_integer_value(json_object_get(f->y.times, "stop")), 1200);
	answer(f, "{}");
	assert_int_equal(f->y.step, YS_SWITCH);
	answer(f, "{}");
	assert_int_equal(f->y.step, YS_WAIT);
	/* still the old version: it polls on */
	answer(f, "{\"version\": \"" OLD "\"}");
	assert_int_equal(f->y.step, YS_WAIT);
	assert_false(f->act.call);
	f->now += 300;
	ev(f, YE_TICK, NULL);
	assert_true(f->act.call);
	answer(f, "{\"version\": \"" NEW "\"}");
	assert_int_equal(f->y.step, YS_START);
	answer(f, "{}");
	assert_int_equal(f->y.step, YS_VERIFY);
	answer(f, RUNNING_NEW);
	assert_int_equal(f->y.state, SW_SYS_UPGRADED);
	assert_int_equal(f->y.step, YS_DONE);
	assert_true(f->act.finished);
	assert_string_equal(f->y.reason, "");
	fx_free(f);
}

static void test_rollback_path(void **state)
{
	struct fixture *f = fx_new(STUCK_DEFER, 1);

	(void)state;
	walk_to(f, YS_VERIFY);
	/* a rollback's stop always escalates */
	assert_true(f->y.kill);
	answer(f, "{\"version\": \"" OLD "\", \"services\": []}");
	assert_int_equal(f->y.state, SW_SYS_ROLLED_BACK);
	fx_free(f);
}

static void test_frozen_agent_at_stop_is_deferred(void **state)
{
	struct fixture *f = fx_new(STUCK_DEFER, 0);

	(void)state;
	ev(f, YE_BEGIN, NULL);
	f->now += 5000;
	fail_call(f, YE_TIMEOUT, "no answer after 5.0 s");
	/* an agent that does not answer is not asked to restart anything */
	assert_int_equal(f->y.state, SW_SYS_DEFERRED);
	assert_false(f->act.call);
	assert_string_equal(f->y.reason, "agent not answering: no answer after 5.0 s");
	assert_int_equal(f->y.deferred_at, f->now);
	fx_free(f);
}

static void test_stuck_service_restarts_old_then_defers(void **state)
{
	struct fixture *f = fx_new(STUCK_DEFER, 0);

	(void)state;
	ev(f, YE_BEGIN, NULL);
	answer(f,
	       "{\"failed\": [{\"service\": \"meter\", \"reason\": \"stuck: survived SIGKILL\"}]}");
	assert_int_equal(f->y.state, SW_SYS_ACTIVE);
	assert_int_equal(f->y.step, YS_RESTART);
	assert_true(f->act.call);
	/* whatever the restart's answer, the outcome is the one decided */
	fail_call(f, YE_TIMEOUT, "no answer");
	assert_int_equal(f->y.state, SW_SYS_DEFERRED);
	assert_string_equal(f->y.reason, "meter: stuck: survived SIGKILL");
	fx_free(f);
}

static void test_remove_role_policy(void **state)
{
	struct fixture *f = fx_new(STUCK_REMOVE_ROLE, 0);

	(void)state;
	ev(f, YE_BEGIN, NULL);
	answer(f, "{\"failed\": [{\"service\": \"meter\", \"reason\": \"timed out\"}]}");
	assert_non_null(f->act.remove);
	assert_string_equal(json_string_value(json_array_get(f->act.remove, 0)),
			    "software-metering");
	assert_int_equal(json_array_size(f->y.removed), 1);
	/* stopped again, this time with SIGKILL after the grace */
	assert_int_equal(f->y.step, YS_STOP);
	assert_true(f->y.kill);
	assert_true(f->act.call);
	answer(f, "{}");
	answer(f, "{}");
	answer(f, "{}");
	answer(f, "{\"version\": \"" NEW "\"}");
	answer(f, "{}");
	/* verify leaves out the removed role's services */
	answer(f, "{\"version\": \"" NEW "\", \"services\": [{\"name\": \"meter\", \"role\": "
		  "\"software-metering\", \"state\": \"stopped\"}]}");
	assert_int_equal(f->y.step, YS_RESTORE);
	assert_true(f->act.restore);
	answer(f, RUNNING_NEW);
	assert_int_equal(f->y.state, SW_SYS_UPGRADED);
	assert_string_equal(f->y.reason,
			    "role software-metering removed for the upgrade, then restored");
	fx_free(f);
}

static void test_remove_role_unreachable_defers(void **state)
{
	struct fixture *f = fx_new(STUCK_REMOVE_ROLE, 0);

	(void)state;
	ev(f, YE_BEGIN, NULL);
	fail_call(f, YE_UNREACHABLE, "unreachable: connection refused");
	assert_non_null(f->act.remove);
	assert_int_equal(f->y.state, SW_SYS_DEFERRED);
	assert_string_equal(f->y.reason, "role software-metering removed; agent not answering: "
					 "unreachable: connection refused");
	fx_free(f);
}

static void test_fail_policy_halts(void **state)
{
	struct fixture *f = fx_new(STUCK_FAIL, 0);

	(void)state;
	ev(f, YE_BEGIN, NULL);
	answer(f, "{\"failed\": [{\"service\": \"meter\"}]}");
	assert_true(f->act.halt);
	assert_int_equal(f->y.step, YS_RESTART);
	answer(f, "{}");
	assert_int_equal(f->y.state, SW_SYS_FAILED);
	assert_string_equal(f->y.reason, "meter: did not stop");
	fx_free(f);
}

static void test_kill_policy(void **state)
{
	struct fixture *f = fx_new(STUCK_KILL, 0);

	(void)state;
	ev(f, YE_BEGIN, NULL);
	assert_true(f->y.kill);
	/* SIGKILL was sent: what survives it fails the system */
	answer(f, "{\"failed\": [{\"service\": \"meter\", \"reason\": \"stuck\"}]}");
	answer(f, "{}");
	assert_int_equal(f->y.state, SW_SYS_FAILED);
	fx_free(f);
	/* an agent that does not answer cannot kill anything: caught up later */
	f = fx_new(STUCK_KILL, 0);
	ev(f, YE_BEGIN, NULL);
	fail_call(f, YE_TIMEOUT, "no answer after 9.0 s");
	assert_int_equal(f->y.state, SW_SYS_DEFERRED);
	fx_free(f);
}

static void test_stage_asked_again_within_its_deadline(void **state)
{
	struct fixture *f = fx_new(STUCK_DEFER, 0);
	int64_t deadline;

	(void)state;
	walk_to(f, YS_STAGE);
	deadline = f->y.deadline;
	assert_int_equal(deadline - f->now, STAGE_BASE_MS + MARGIN_MS);
	/* the agent restarted under the download: asked again */
	fail_call(f, YE_UNREACHABLE, "connection dropped after 3.0 s");
	assert_int_equal(f->y.state, SW_SYS_ACTIVE);
	assert_int_equal(f->y.step, YS_STAGE);
	assert_false(f->act.call);
	ev(f, YE_TICK, NULL);
	assert_false(f->act.call); /* not before a tick has passed */
	f->now += TICK_MS;
	ev(f, YE_TICK, NULL);
	assert_true(f->act.call);
	/* the next call gets what is left of the step, not a new one */
	f->now += 1000;
	assert_int_equal(ystep_call_ms(&f->y, f->now), deadline - f->now);
	/* at the deadline it is the step's timeout: the policy */
	f->now = deadline;
	fail_call(f, YE_UNREACHABLE, "unreachable: connection refused");
	assert_int_equal(f->y.state, SW_SYS_DEFERRED);
	assert_string_equal(f->y.reason,
			    "agent not answering while staging: unreachable: connection refused");
	fx_free(f);
}

/* An agent still staging from before (a server restarted under it) answers 503: the
 * step is asked again while its deadline lasts, not failed. */
static void test_busy_agent_asked_again(void **state)
{
	struct fixture *f = fx_new(STUCK_DEFER, 0);
	int64_t deadline;

	(void)state;
	walk_to(f, YS_STAGE);
	fail_call(f, YE_BUSY, "stage: version 2.0.0 is being staged; try again when it is done");
	assert_int_equal(f->y.state, SW_SYS_ACTIVE);
	assert_int_equal(f->y.step, YS_STAGE);
	assert_false(f->act.call);
	f->now += TICK_MS;
	ev(f, YE_TICK, NULL);
	assert_true(f->act.call);
	answer(f, "{\"version\": \"" NEW "\", \"staged\": true}");
	assert_int_equal(f->y.step, YS_SWITCH);
	/* busy to the end of a step is that step's timeout, with what the agent said */
	fx_free(f);
	f = fx_new(STUCK_DEFER, 0);
	walk_to(f, YS_STAGE);
	deadline = f->y.deadline;
	f->now = deadline;
	fail_call(f, YE_BUSY, "version 2.0.0 is being staged");
	/* it answers: its services come back on the old version before the outcome */
	assert_int_equal(f->y.step, YS_RESTART);
	answer(f, "{}");
	assert_int_equal(f->y.state, SW_SYS_DEFERRED);
	assert_string_equal(f->y.reason, "version 2.0.0 is being staged");
	fx_free(f);
}

static void test_stage_refused_fails_and_restarts(void **state)
{
	struct fixture *f = fx_new(STUCK_DEFER, 0);

	(void)state;
	walk_to(f, YS_STAGE);
	fail_call(f, YE_REFUSED, "not enough space");
	assert_int_equal(f->y.step, YS_RESTART);
	answer(f, "{}");
	assert_int_equal(f->y.state, SW_SYS_FAILED);
	assert_string_equal(f->y.reason, "stage: not enough space");
	fx_free(f);
}

static void test_switch_without_answer_waits(void **state)
{
	struct fixture *f = fx_new(STUCK_DEFER, 0);

	(void)state;
	walk_to(f, YS_SWITCH);
	/* it may have restarted before answering: the wait tells */
	fail_call(f, YE_TIMEOUT, "no answer after 10.0 s");
	assert_int_equal(f->y.step, YS_WAIT);
	assert_true(f->act.call);
	fx_free(f);
}

static void test_wait_deadline_fails_without_restart(void **state)
{
	struct fixture *f = fx_new(STUCK_DEFER, 0);

	(void)state;
	walk_to(f, YS_WAIT);
	answer(f, "{\"version\": \"" OLD "\"}");
	f->now += RETURN_TIMEOUT_MS - 1;
	ev(f, YE_TICK, NULL);
	assert_int_equal(f->y.state, SW_SYS_ACTIVE);
	fail_call(f, YE_UNREACHABLE, "unreachable");
	f->now += 1;
	ev(f, YE_TICK, NULL);
	assert_int_equal(f->y.state, SW_SYS_FAILED);
	/* past the switch: no restart of the old version */
	assert_false(f->act.call);
	assert_string_equal(f->y.reason,
			    "wait: did not come back on version " NEW " within 30 s; it runs " OLD);
	fx_free(f);
}

static void test_start_asked_again_then_fails(void **state)
{
	struct fixture *f = fx_new(STUCK_DEFER, 0);

	(void)state;
	walk_to(f, YS_START);
	fail_call(f, YE_UNREACHABLE, "connection dropped after 0.1 s");
	assert_int_equal(f->y.step, YS_START);
	f->now = f->y.deadline;
	ev(f, YE_TICK, NULL);
	assert_int_equal(f->y.state, SW_SYS_FAILED);
	assert_string_equal(f->y.reason, "start: connection dropped after 0.1 s");
	fx_free(f);
}

static void test_verify_deadline_says_what_is_wrong(void **state)
{
	struct fixture *f = fx_new(STUCK_DEFER, 0);

	(void)state;
	walk_to(f, YS_VERIFY);
	answer(f, "{\"version\": \"" NEW "\", \"services\": [{\"name\": \"meter\", \"state\": "
		  "\"failed\", \"reason\": \"exit status 1\"}]}");
	assert_int_equal(f->y.state, SW_SYS_ACTIVE);
	f->now += VERIFY_TIMEOUT_MS;
	ev(f, YE_TICK, NULL);
	assert_int_equal(f->y.state, SW_SYS_FAILED);
	assert_string_equal(f->y.reason, "verify: after 10 s: meter is failed: exit status 1");
	fx_free(f);
}

/* Every step, and the site's events at it. */
static const enum ystep every_step[] = {YS_STOP, YS_STAGE, YS_SWITCH, YS_WAIT, YS_START, YS_VERIFY};

static void test_removed_at_every_step(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(every_step) / sizeof(*every_step); i++) {
		struct fixture *f = fx_new(STUCK_REMOVE_ROLE, 0);
		unsigned gen;
		char want[100];

		walk_to(f, every_step[i]);
		gen = f->y.gen;
		ev(f, YE_REMOVED, NULL);
		assert_int_equal(f->y.state, SW_SYS_REMOVED);
		assert_int_not_equal(f->y.gen, gen); /* the answer in flight is dropped */
		assert_false(f->act.call);
		assert_null(f->act.remove);
		assert_false(f->act.restore);
		assert_false(f->act.halt);
		snprintf(want, sizeof(want), "removed from the site at step %s",
			 ystep_name(every_step[i]));
		assert_string_equal(f->y.reason, want);
		/* a late answer changes nothing */
		answer(f, RUNNING_NEW);
		assert_int_equal(f->y.state, SW_SYS_REMOVED);
		fx_free(f);
	}
}

static void test_removed_in_other_states(void **state)
{
	struct fixture *f = fx_new(STUCK_DEFER, 0);

	(void)state;
	ev(f, YE_REMOVED, NULL);
	assert_int_equal(f->y.state, SW_SYS_REMOVED);
	assert_string_equal(f->y.reason, "removed from the site before its turn");
	fx_free(f);
	f = fx_new(STUCK_DEFER, 0);
	f->y.state = SW_SYS_DEFERRED;
	snprintf(f->y.reason, sizeof(f->y.reason), "agent not answering");
	ev(f, YE_REMOVED, NULL);
	assert_string_equal(f->y.reason, "removed from the site; it was deferred: agent not "
					 "answering");
	fx_free(f);
	/* an upgraded system keeps its outcome */
	f = fx_new(STUCK_DEFER, 0);
	f->y.state = SW_SYS_UPGRADED;
	ev(f, YE_REMOVED, NULL);
	assert_int_equal(f->y.state, SW_SYS_UPGRADED);
	fx_free(f);
}

static void test_reenrolled_at_every_step(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(every_step) / sizeof(*every_step); i++) {
		struct fixture *f = fx_new(STUCK_DEFER, 0);

		walk_to(f, every_step[i]);
		ev(f, YE_REENROLLED, NULL);
		assert_int_equal(f->y.state, SW_SYS_DEFERRED);
		assert_false(f->act.call);
		assert_non_null(strstr(f->y.reason, "enrolled again at step"));
		answer(f, RUNNING_NEW); /* the old agent's answer */
		assert_int_equal(f->y.state, SW_SYS_DEFERRED);
		fx_free(f);
		/* in a rollback it is left alone, and said so */
		f = fx_new(STUCK_DEFER, 1);
		walk_to(f, every_step[i] == YS_STAGE || every_step[i] == YS_SWITCH ? YS_ROLLBACK
										   : every_step[i]);
		ev(f, YE_REENROLLED, NULL);
		assert_int_equal(f->y.state, SW_SYS_FAILED);
		assert_non_null(strstr(f->y.reason, "not rolled back"));
		fx_free(f);
	}
	/* one upgraded before is upgraded again when the new agent reports */
	struct fixture *f = fx_new(STUCK_DEFER, 0);
	f->y.state = SW_SYS_UPGRADED;
	ev(f, YE_REENROLLED, NULL);
	assert_int_equal(f->y.state, SW_SYS_DEFERRED);
	fx_free(f);
	/* one not started yet just goes on */
	f = fx_new(STUCK_DEFER, 0);
	ev(f, YE_REENROLLED, NULL);
	assert_int_equal(f->y.state, SW_SYS_PENDING);
	fx_free(f);
}

static void test_role_changes_at_every_step(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(every_step) / sizeof(*every_step); i++) {
		struct fixture *f = fx_new(STUCK_REMOVE_ROLE, 0);
		enum ystep at;

		walk_to(f, every_step[i]);
		at = f->y.step;
		json_array_append_new(f->y.removed, json_string("software-metering"));
		/* a role the run did not remove: nothing changes */
		ev(f, YE_ROLE, &(struct yinfo){.role = "test", .add = 1});
		assert_int_equal(json_array_size(f->y.removed), 1);
		/* the administrator's word on a role the run removed is the latest */
		ev(f, YE_ROLE, &(struct yinfo){.role = "software-metering", .add = 1});
		assert_int_equal(json_array_size(f->y.removed), 0);
		assert_int_equal(f->y.step, at);
		assert_int_equal(f->y.state, SW_SYS_ACTIVE);
		assert_false(f->act.call);
		fx_free(f);
	}
}

static void test_resume_at_every_step(void **state)
{
	static const enum ystep all[] = {YS_STOP,   YS_STAGE,	YS_SWITCH,   YS_WAIT,	YS_START,
					 YS_VERIFY, YS_RESTORE, YS_ROLLBACK, YS_RESTART};
	(void)state;
	for (size_t i = 0; i < sizeof(all) / sizeof(*all); i++) {
		struct fixture *f = fx_new(STUCK_DEFER, all[i] == YS_ROLLBACK);

		/* as the journal gives it back after the server was killed */
		f->y.state = SW_SYS_ACTIVE;
		f->y.step = all[i];
		f->y.attempts = 1;
		ev(f, YE_BEGIN, NULL);
		assert_int_equal(f->y.step, all[i]);
		assert_int_equal(f->y.attempts, 1);
		assert_true(f->act.call);
		assert_int_equal(f->act.restore, all[i] == YS_RESTORE);
		assert_true(f->y.deadline > f->now);
		fx_free(f);
	}
}

static void test_catchup_kills_and_defers_again(void **state)
{
	struct fixture *f = fx_new(STUCK_REMOVE_ROLE, 0);

	(void)state;
	f->y.state = SW_SYS_DEFERRED;
	f->y.catchup = 1;
	ev(f, YE_BEGIN, NULL);
	assert_true(f->y.kill);
	assert_int_equal(f->y.attempts, 1);
	fail_call(f, YE_TIMEOUT, "no answer after 9.0 s");
	/* a catch-up gets no policy of its own: it waits for the next return */
	assert_null(f->act.remove);
	assert_int_equal(f->y.state, SW_SYS_DEFERRED);
	fx_free(f);
}

static void test_bounds(void **state)
{
	struct uopts o = {.parallel = 10, .stop_timeout_ms = 5000, .on_stuck = STUCK_DEFER};
	int64_t t = usys_bound_ms(&o);

	(void)state;
	/* the longest path is the sum of the table's deadlines along it */
	assert_true(t >= 5000 + KILL_EXTRA_MS + STAGE_BASE_MS + SWITCH_TIMEOUT_MS +
			     RETURN_TIMEOUT_MS + START_TIMEOUT_MS + VERIFY_TIMEOUT_MS);
	o.on_stuck = STUCK_REMOVE_ROLE;
	assert_true(usys_bound_ms(&o) >= t + 5000 + KILL_EXTRA_MS);
	o.on_stuck = STUCK_DEFER;
	/* the staging step's deadline grows with the package: 256 kB/s at the least */
	o.package_size = 256 * 1000 * 60;
	assert_int_equal(usys_bound_ms(&o) - t, 60 * 1000);
	o.package_size = 0;
	/* one wave when they all fit */
	assert_int_equal(usys_run_bound_ms(&o, 0, 10, 0), t + TICK_MS);
	assert_int_equal(usys_run_bound_ms(&o, 0, 10, 7000), t + TICK_MS + 7000);
	/* metering servers one at a time */
	assert_int_equal(usys_run_bound_ms(&o, 3, 0, 0), 3 * t + TICK_MS);
	/* more systems never lower it */
	for (size_t m = 0; m < 4; m++)
		for (size_t k = 1; k < 40; k++)
			assert_true(usys_run_bound_ms(&o, m, k + 1, 0) >=
				    usys_run_bound_ms(&o, m, k, 0));
	assert_int_equal(usys_run_bound_ms(&o, 0, 0, 0), TICK_MS);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_happy_path),
	    cmocka_unit_test(test_rollback_path),
	    cmocka_unit_test(test_frozen_agent_at_stop_is_deferred),
	    cmocka_unit_test(test_stuck_service_restarts_old_then_defers),
	    cmocka_unit_test(test_remove_role_policy),
	    cmocka_unit_test(test_remove_role_unreachable_defers),
	    cmocka_unit_test(test_fail_policy_halts),
	    cmocka_unit_test(test_kill_policy),
	    cmocka_unit_test(test_stage_asked_again_within_its_deadline),
	    cmocka_unit_test(test_busy_agent_asked_again),
	    cmocka_unit_test(test_stage_refused_fails_and_restarts),
	    cmocka_unit_test(test_switch_without_answer_waits),
	    cmocka_unit_test(test_wait_deadline_fails_without_restart),
	    cmocka_unit_test(test_start_asked_again_then_fails),
	    cmocka_unit_test(test_verify_deadline_says_what_is_wrong),
	    cmocka_unit_test(test_removed_at_every_step),
	    cmocka_unit_test(test_removed_in_other_states),
	    cmocka_unit_test(test_reenrolled_at_every_step),
	    cmocka_unit_test(test_role_changes_at_every_step),
	    cmocka_unit_test(test_resume_at_every_step),
	    cmocka_unit_test(test_catchup_kills_and_defers_again),
	    cmocka_unit_test(test_bounds),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
