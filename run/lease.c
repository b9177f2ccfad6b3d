/*
 * The protocol with the metering servers: checkout with failover in list order, the
 * heartbeats that keep a lease, and the check-in that returns it.
 *
 * A lease belongs to the server that granted it. A heartbeat that cannot reach it is
 * retried at the same pace and a later one keeps the same lease: a run never checks
 * out a second license (FlexNet's leak after a short network loss).
 */
#include "run.h"

#include "error.h"
#include "http_client.h"
#include "json.h"
#include "product.h"
#include "util.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define REQUEST_MS	  5000	/* one server's answer to a checkout */
#define LONGPOLL_SLACK_MS 10000 /* beyond wait_ms, for a server that holds the request */
#define CHECKIN_MS	  5000	/* the check-in at exit */
#define TTL_MAX_MS	  (7 * 86400000LL)
#define HEARTBEAT_MIN_MS  200
#define HEARTBEAT_MAX_MS  3600000u
#define RECLAIM_GRACE_MS  15000 /* a stopped program's time to end before SIGKILL */

static void ask(struct run *r);

static int post(struct run *r, const char *path, json_t *msg, unsigned timeout_ms, sw_http_done cb)
{
	char url[RUN_URL_MAX + 32];
	char *body = msg ? sw_json_dump(msg) : NULL;
	int rc = SW_ENOMEM;

	json_decref(msg);
	if (body) {
		snprintf(url, sizeof(url), "%s%s", r->conf.meters[r->lease.meter], path);
		rc = sw_http_client_request_to(r->http, r->conf.meter_names[r->lease.meter], "POST",
					       url, body, strlen(body), timeout_ms, cb, r);
	}
	free(body);
	return rc;
}

/* A server's {"error"} as a person reads it, or the bare status. */
static void answer_error(const struct sw_http_result *res, char *out, size_t outlen)
{
	json_t *a = NULL;
	const char *e = NULL;
	char text[400];

	if (sw_json_parse_object(res->body, res->len, &a, NULL, 0) == 0)
		sw_json_str(a, "error", 300, 0, &e, NULL, 0);
	run_printable(text, sizeof(text), e ? e : "no reason given");
	snprintf(out, outlen, "HTTP %ld: %s", res->status, text);
	json_decref(a);
}

static unsigned heartbeat_interval(const struct lease *l)
{
	unsigned ms = l->ttl_ms / 3;

	if (ms < HEARTBEAT_MIN_MS)
		ms = HEARTBEAT_MIN_MS;
	return ms > HEARTBEAT_MAX_MS ? HEARTBEAT_MAX_MS : ms;
}

/* Reads a 200 answer to a checkout into the lease; fails on anything malformed. */
static int decide(struct run *r, const struct sw_http_result *res, char *why, size_t whylen)
{
	struct lease *l = &r->lease;
	json_t *a = NULL, *granted, *id;
	const char *product = NULL, *reason = NULL;
	int64_t ttl = 0;
	int rc = SW_EPROTO;

	if (sw_json_parse_object(res->body, res->len, &a, why, whylen))
		goto out;
	if (json_is_true(json_object_get(a, "version_needed"))) {
		if (r->has_version) {
			snprintf(why, whylen, "asks for the version it was given");
			goto out;
		}
		l->version_asked = 1;
		rc = 0;
		goto out;
	}
	if (json_is_false(json_object_get(a, "metered"))) {
		l->outcome = LEASE_UNMETERED;
		rc = 0;
		goto out;
	}
	granted = json_object_get(a, "granted");
	if (!json_is_boolean(granted)) {
		snprintf(why, whylen, "neither 'granted' nor 'metered': false");
		goto out;
	}
	if (sw_json_str(a, "product", 200, 0, &product, why, whylen))
		goto out;
	if (json_is_false(granted)) {
		int64_t pos = 0;

		if (sw_json_str(a, "reason", 400, 0, &reason, why, whylen) ||
		    sw_json_int(a, "queue_position", 1, INT32_MAX, 0, &pos, why, whylen))
			goto out;
		l->queue_position = (unsigned)pos;
		run_printable(l->product, sizeof(l->product), product ? product : "");
		run_printable(l->reason, sizeof(l->reason), reason ? reason : "no license free");
		l->outcome = LEASE_DENIED;
		rc = 0;
		goto out;
	}
	id = json_object_get(a, "lease");
	if (!(json_is_integer(id) || (json_is_string(id) && json_string_length(id) <= 256))) {
		snprintf(why, whylen, "a grant without a 'lease'");
		goto out;
	}
	if (sw_json_int(a, "ttl_ms", 1, TTL_MAX_MS, 1, &ttl, why, whylen))
		goto out;
	run_printable(l->product, sizeof(l->product), product ? product : "");
	l->id = json_incref(id);
	l->ttl_ms = (unsigned)ttl;
	l->outcome = LEASE_GRANTED;
	rc = 0;
out:
	json_decref(a);
	return rc;
}

static const char *more(const struct run *r)
{
	return r->lease.meter + 1 < r->conf.nmeters ? "; trying the next metering server" : "";
}

static void on_checkout(const struct sw_http_result *res, void *arg)
{
	struct run *r = arg;
	struct lease *l = &r->lease;
	const char *url = r->conf.meters[l->meter];
	char why[400];

	if (l->closing)
		return;
	if (res->status == 0) {
		if (r->verbose)
			fprintf(stderr, "siteward-run: %s: %s\n", url, res->error);
	} else if (res->status == 200) {
		int bad = decide(r, res, why, sizeof(why));

		if (!bad && l->version_asked) {
			/* The product depends on the version: the same server, asked again. */
			l->version_asked = 0;
			run_version(r);
			ask(r);
			return;
		}
		if (!bad && l->outcome == LEASE_DENIED && !l->waiting_pass) {
			if (r->verbose)
				fprintf(stderr, "siteward-run: %s: denied: %s\n", url, l->reason);
			if (l->denied_at < 0) {
				l->denied_at = l->meter;
				snprintf(l->denial, sizeof(l->denial), "%s", l->reason);
				snprintf(l->denied_product, sizeof(l->denied_product), "%s",
					 l->product);
				l->denied_position = l->queue_position;
			}
			l->outcome = LEASE_PENDING;
			l->meter++;
			ask(r);
			return;
		}
		if (l->outcome != LEASE_PENDING) {
			if (r->verbose && l->outcome == LEASE_UNMETERED)
				fprintf(stderr, "siteward-run: %s: %s is not metered\n", url,
					r->exe);
			if (r->verbose && l->outcome == LEASE_GRANTED) {
				char *id = json_dumps(l->id, JSON_ENCODE_ANY);
				fprintf(stderr, "siteward-run: %s: lease %s for %s, %u ms\n", url,
					id ? id : "?", l->product, l->ttl_ms);
				free(id);
			}
			return;
		}
		l->answered = 1;
		snprintf(l->reason, sizeof(l->reason), "%s: malformed answer: %s", url, why);
		fprintf(stderr, "siteward-run: %s%s\n", l->reason, more(r));
	} else {
		answer_error(res, why, sizeof(why));
		/* 503 is a server that cannot serve now (one draining for an upgrade): like
		 * one that does not answer, it leaves the decision to the others. */
		if (res->status != 503)
			l->answered = 1;
		snprintf(l->reason, sizeof(l->reason), "%s: %s", url, why);
		if (res->status != 503 || r->verbose)
			fprintf(stderr, "siteward-run: %s%s\n", l->reason, more(r));
	}
	l->meter++;
	ask(r);
}

/* The first denial, when every server has denied (and any wait has passed). */
static void deny(struct run *r)
{
	struct lease *l = &r->lease;

	if (l->outcome != LEASE_DENIED) {
		snprintf(l->reason, sizeof(l->reason), "%s", l->denial);
		snprintf(l->product, sizeof(l->product), "%s", l->denied_product);
		l->queue_position = l->denied_position;
	}
	l->outcome = LEASE_DENIED;
	l->meter = l->denied_at;
}

/* Asks the current server, or ends the checkout when none is left. */
static void ask(struct run *r)
{
	struct lease *l = &r->lease;
	/* every server is asked at once first; the wait is spent in one queue */
	unsigned wait = l->waiting_pass ? r->wait_ms : 0;
	unsigned timeout = wait ? wait + LONGPOLL_SLACK_MS : REQUEST_MS;

	if (l->waiting_pass && l->meter != l->denied_at) {
		deny(r);
		return;
	}
	if (l->meter >= r->conf.nmeters && l->denied_at >= 0) {
		if (r->wait_ms && !l->waiting_pass) {
			l->waiting_pass = 1;
			l->meter = l->denied_at;
			ask(r);
		} else {
			deny(r);
		}
		return;
	}
	for (; l->meter < r->conf.nmeters; l->meter++) {
		json_t *msg = json_pack("{ss ss sI ss sI}", "exe", r->exe, "user", r->user, "pid",
					(json_int_t)getpid(), "client", r->client, "wait_ms",
					(json_int_t)wait);
		/* a renamed copy is still recognised by its build ID */
		if (msg && r->build_id[0])
			json_object_set_new(msg, "build_id", json_string(r->build_id));
		if (msg && r->has_version)
			json_object_set_new(msg, "version", json_string(r->version));
		if (r->verbose)
			fprintf(stderr, "siteward-run: asking %s for %s\n",
				r->conf.meters[l->meter], r->exe);
		if (post(r, "/v1/checkout", msg, timeout, on_checkout) == 0)
			return;
	}
	if (l->denied_at >= 0) {
		ask(r); /* every server asked: the denial, or the wait, decides */
		return;
	}
	l->outcome = l->answered ? LEASE_FAILED : LEASE_OFFLINE;
}

void lease_checkout(struct run *r)
{
	r->lease.outcome = LEASE_PENDING;
	r->lease.meter = 0;
	r->lease.denied_at = -1;
	ask(r);
}

static void on_grace_over(uv_timer_t *t)
{
	struct run *r = t->data;

	if (r->child.pid > 0 && !r->child.exited) {
		fprintf(stderr,
			"siteward-run: %s did not end within %d s of the reclaim; killing it\n",
			r->exe, RECLAIM_GRACE_MS / 1000);
		kill(r->child.pid, SIGKILL);
	}
}

/* The server took the license back: PROGRAM is told with the product's signal, then
 * stopped, or left to run unlicensed with the rest of its run recorded. */
static void reclaimed(struct run *r, const json_t *note)
{
	struct lease *l = &r->lease;
	struct sw_product p;
	const char *policy = json_string_value(json_object_get(note, "on_reclaim"));
	const char *sig = json_string_value(json_object_get(note, "signal"));
	const char *why = json_string_value(json_object_get(note, "reason"));
	char reason[300], product[256];
	int signo;

	sw_product_init(&p);
	run_printable(reason, sizeof(reason), why ? why : "no reason given");
	snprintf(product, sizeof(product), "%s", l->product[0] ? l->product : r->exe);
	if (!policy || sw_reclaim_policy_parse(policy, &p.on_reclaim))
		p.on_reclaim = SW_RECLAIM_STOP;
	snprintf(p.reclaim_signal, sizeof(p.reclaim_signal), "%s", sig ? sig : "");
	if (sw_product_reclaim_signo(&p, &signo))
		signo = p.on_reclaim == SW_RECLAIM_STOP ? SIGTERM : 0;
	l->reclaimed = 1;
	l->reclaimed_ms = sw_now_ms();
	uv_timer_stop(&l->timer);
	if (r->child.pid <= 0 || r->child.exited)
		return;
	if (p.on_reclaim == SW_RECLAIM_RUN) {
		l->run_unlicensed = 1;
		fprintf(stderr,
			"siteward-run: the license for %s was taken back (%s); %s runs on "
			"unlicensed, and the rest of this run is recorded\n",
			product, reason, r->exe);
	} else {
		fprintf(stderr,
			"siteward-run: the license for %s was taken back (%s); stopping %s "
			"(signal %s, then SIGKILL after %d s)\n",
			product, reason, r->exe, signo ? sigabbrev_np(signo) : "none",
			RECLAIM_GRACE_MS / 1000);
		uv_timer_init(r->loop, &l->kill_timer);
		l->kill_timer.data = r;
		l->kill_timer_on = 1;
		uv_timer_start(&l->kill_timer, on_grace_over, RECLAIM_GRACE_MS, 0);
	}
	if (signo > 0)
		kill(r->child.pid, signo);
}

static void on_heartbeat(const struct sw_http_result *res, void *arg)
{
	struct run *r = arg;
	struct lease *l = &r->lease;
	const char *url = r->conf.meters[l->meter];
	json_t *a = NULL, *lost, *v;
	char why[400];
	int64_t ttl = 0;
	size_t i;

	l->heartbeating = 0;
	if (l->closing)
		return;
	if (res->status == 0)
		snprintf(why, sizeof(why), "%s", res->error);
	else if (res->status != 200)
		answer_error(res, why, sizeof(why));
	else if (sw_json_parse_object(res->body, res->len, &a, why, sizeof(why)) == 0 &&
		 sw_json_int(a, "ttl_ms", 1, TTL_MAX_MS, 0, &ttl, why, sizeof(why)) == 0)
		why[0] = '\0';
	if (why[0]) {
		if (!l->failing && r->verbose)
			fprintf(stderr,
				"siteward-run: heartbeat to %s failed: %s; retrying every %u ms "
				"with the same lease\n",
				url, why, heartbeat_interval(l));
		l->failing = 1;
		goto out;
	}
	if (l->failing && r->verbose)
		fprintf(stderr, "siteward-run: %s answers again\n", url);
	l->failing = 0;
	json_array_foreach(json_object_get(a, "reclaimed"), i, v)
	{
		if (json_equal(json_object_get(v, "lease"), l->id)) {
			reclaimed(r, v);
			goto out;
		}
	}
	/* the product has an idle limit: the next heartbeats say how long PROGRAM idled */
	v = json_object_get(json_object_get(a, "idle_limit_s"), json_string_value(l->id));
	l->idle_limit_s = json_is_integer(v) ? json_integer_value(v) : 0;
	lost = json_object_get(a, "lost");
	json_array_foreach(lost, i, v)
	{
		if (!json_equal(v, l->id))
			continue;
		l->lost = 1;
		uv_timer_stop(&l->timer);
		fprintf(stderr,
			"siteward-run: %s no longer holds the license for %s (the lease expired "
			"there); %s keeps running\n",
			url, l->product[0] ? l->product : r->exe, r->exe);
		goto out;
	}
	if (ttl > 0 && (unsigned)ttl != l->ttl_ms) {
		l->ttl_ms = (unsigned)ttl;
		uv_timer_set_repeat(&l->timer, heartbeat_interval(l));
	}
out:
	json_decref(a);
}

static void on_tick(uv_timer_t *t)
{
	struct run *r = t->data;
	struct lease *l = &r->lease;
	unsigned timeout = heartbeat_interval(l);
	json_t *msg;

	/* One heartbeat at a time: a slow server does not get a queue of them. */
	if (l->heartbeating || l->lost || l->reclaimed)
		return;
	if (timeout < 1000)
		timeout = 1000;
	if (timeout > REQUEST_MS)
		timeout = REQUEST_MS;
	msg = json_pack("{ss s[O]}", "client", r->client, "leases", l->id);
	if (msg && l->idle_limit_s > 0) {
		int64_t now = sw_mono_ms();

		idle_sample(r, now);
		json_object_set_new(
		    msg, "idle_s",
		    json_pack("{sI}", json_string_value(l->id), (json_int_t)idle_seconds(r, now)));
	}
	if (post(r, "/v1/heartbeat", msg, timeout, on_heartbeat) == 0)
		l->heartbeating = 1;
}

void lease_heartbeat_start(struct run *r)
{
	struct lease *l = &r->lease;
	unsigned ms = heartbeat_interval(l);

	uv_timer_init(r->loop, &l->timer);
	l->timer.data = r;
	l->timer_on = 1;
	uv_timer_start(&l->timer, on_tick, ms, ms);
	idle_sample(r, sw_mono_ms());
}

static void on_checkin(const struct sw_http_result *res, void *arg)
{
	struct run *r = arg;
	struct lease *l = &r->lease;
	char why[400];

	l->checking_in = 0;
	if (l->closing || res->status == 200 || !r->verbose)
		return;
	if (res->status)
		answer_error(res, why, sizeof(why));
	else
		snprintf(why, sizeof(why), "%s", res->error);
	fprintf(stderr, "siteward-run: check-in at %s failed: %s; the lease expires there\n",
		r->conf.meters[l->meter], why);
}

void lease_checkin(struct run *r)
{
	struct lease *l = &r->lease;

	if (l->timer_on)
		uv_timer_stop(&l->timer);
	if (l->kill_timer_on)
		uv_timer_stop(&l->kill_timer);
	/* a lease taken back is no longer this run's to return */
	if (l->reclaimed)
		return;
	if (post(r, "/v1/checkin", json_pack("{ss sO}", "client", r->client, "lease", l->id),
		 CHECKIN_MS, on_checkin) == 0)
		l->checking_in = 1;
}

int lease_busy(const struct run *r)
{
	return r->lease.checking_in;
}

void lease_cleanup(struct lease *l)
{
	l->closing = 1;
	if (l->timer_on) {
		uv_close((uv_handle_t *)&l->timer, NULL);
		l->timer_on = 0;
	}
	if (l->kill_timer_on) {
		uv_close((uv_handle_t *)&l->kill_timer, NULL);
		l->kill_timer_on = 0;
	}
	json_decref(l->id);
	l->id = NULL;
}
