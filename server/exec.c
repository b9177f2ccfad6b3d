/*
 * POST /v1/exec {"collection", "argv", "timeout_s"}: a command run on every member of a
 * collection (siteward exec), administrators only, recorded in the audit log as every
 * change is. The members are worked out as they stand; each gets the command over its
 * agent's channel with the timeout and a margin as its deadline, all at once; the answer
 * comes when the last has answered or its deadline has passed, with each system's exit
 * status or signal, how long it ran, and the first and last KiB of its output. A system
 * whose agent does not answer is named with the reason; nothing waits longer.
 */
#include "server.h"

#include "error.h"
#include "json.h"
#include "log.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXEC_MAX_S	 3600
#define EXEC_MARGIN_MS	 5000 /* beyond the command's own timeout: the call there and back */
#define EXEC_ARGS_MAX	 256
#define EXEC_SYSTEMS_MAX 10000

struct run;

struct leg {
	struct run *r;
	size_t i;
};

struct run {
	struct server *s;
	struct sw_http_req *req;
	char collection[64];
	json_t *argv;
	int64_t timeout_s;
	json_t *results; /* per member: its outcome, filled as answers come */
	struct leg *legs;
	size_t n, pending;
	int64_t t0;
};

static void run_free(struct run *r)
{
	json_decref(r->argv);
	json_decref(r->results);
	free(r->legs);
	free(r);
}

static void finish(struct run *r)
{
	size_t ok = 0, failed = 0, i;
	json_t *o;

	json_array_foreach(r->results, i, o)
	{
		if (json_is_true(json_object_get(o, "ok")))
			ok++;
		else
			failed++;
	}
	sw_info("exec on %s: %zu system%s, %zu exited 0, %zu did not, in %lld ms", r->collection,
		r->n, r->n == 1 ? "" : "s", ok, failed, (long long)(sw_mono_ms() - r->t0));
	sw_http_reply_json(r->req, 200,
			   json_pack("{ss sO sI sO sI sI sI}", "collection", r->collection, "argv",
				     r->argv, "timeout_s", (json_int_t)r->timeout_s, "systems",
				     r->results, "ok", (json_int_t)ok, "failed", (json_int_t)failed,
				     "elapsed_ms", (json_int_t)(sw_mono_ms() - r->t0)));
	run_free(r);
}

static void on_answer(const struct sw_http_result *res, void *arg)
{
	struct leg *leg = arg;
	struct run *r = leg->r;
	json_t *o = json_array_get(r->results, leg->i), *a = NULL;
	char why[400];

	if (res->status == 200 && sw_json_parse_object(res->body, res->len, &a, NULL, 0) == 0 &&
	    json_is_true(json_object_get(a, "started"))) {
		int timed_out = json_is_true(json_object_get(a, "timed_out"));
		int64_t ex = json_integer_value(json_object_get(a, "exit"));
		int64_t sig = json_integer_value(json_object_get(a, "signal"));
		static const char *const keep[] = {"exit", "signal", "elapsed_ms",
						   "head", "tail",   "bytes"};

		for (size_t k = 0; k < SW_ARRAY_LEN(keep); k++)
			if (json_object_get(a, keep[k]))
				json_object_set(o, keep[k], json_object_get(a, keep[k]));
		json_object_set_new(o, "state",
				    json_string(timed_out ? "timed out"
						: sig	  ? "killed"
							  : "exited"));
		json_object_set_new(o, "ok", json_boolean(!timed_out && !sig && ex == 0));
	} else {
		if (res->status == 200)
			snprintf(why, sizeof(why), "not started: %s",
				 json_string_value(json_object_get(a, "error"))
				     ? json_string_value(json_object_get(a, "error"))
				     : "the agent gave no reason");
		else
			control_error(res, why, sizeof(why));
		json_object_set_new(o, "state",
				    json_string(res->status == 200 ? "failed" : "unreachable"));
		json_object_set_new(o, "error", json_string(why));
		json_object_set_new(o, "ok", json_false());
	}
	json_decref(a);
	if (--r->pending == 0)
		finish(r);
}

static void on_members(struct server *s, const json_t *members, int rc, const char *err, void *arg)
{
	struct run *r = arg;
	size_t i;

	if (rc) {
		sw_http_reply_error(r->req, sw_http_status(rc), "%s", err);
		run_free(r);
		return;
	}
	r->n = json_array_size(members);
	if (r->n > EXEC_SYSTEMS_MAX) {
		sw_http_reply_error(r->req, 400,
				    "collection %s has %zu members; exec runs on at "
				    "most %d",
				    r->collection, r->n, EXEC_SYSTEMS_MAX);
		run_free(r);
		return;
	}
	r->results = json_array();
	r->legs = calloc(r->n ? r->n : 1, sizeof(*r->legs));
	if (!r->results || !r->legs) {
		sw_http_reply_error(r->req, 500, "out of memory");
		run_free(r);
		return;
	}
	r->t0 = sw_mono_ms();
	r->pending = r->n + 1; /* one for this loop, so that no answer finishes it early */
	for (i = 0; i < r->n; i++) {
		const char *name = json_string_value(json_array_get(members, i));
		struct system *sys = sw_strmap_get(s->systems, name);
		unsigned timeout_ms = (unsigned)(r->timeout_s * 1000 + EXEC_MARGIN_MS);
		json_t *o = json_pack("{ss}", "system", name);

		json_array_append_new(r->results, o);
		r->legs[i].r = r;
		r->legs[i].i = i;
		if (sys) {
			json_int_t deadline = sw_now_ms() + timeout_ms + sys->clock_skew_ms;
			json_t *body =
			    json_pack("{sO sI sI}", "argv", r->argv, "timeout_ms",
				      (json_int_t)r->timeout_s * 1000, "deadline_ms", deadline);

			if (control_call(s, sys, "POST", "/v1/exec", body, timeout_ms, on_answer,
					 &r->legs[i]) == 0)
				continue;
		}
		json_object_set_new(o, "state", json_string("unreachable"));
		json_object_set_new(
		    o, "error", json_string(sys ? "cannot call its agent" : "no longer enrolled"));
		json_object_set_new(o, "ok", json_false());
		r->pending--;
	}
	if (--r->pending == 0)
		finish(r);
}

void exec_post(struct sw_http_req *req, void *arg)
{
	struct server *s = arg;
	const char *coll = NULL;
	struct run *r = NULL;
	const json_t *argv, *v;
	char err[300];
	json_t *j;
	size_t i;
	int rc;

	if (!(j = sw_http_req_json(req)))
		return;
	if (!(r = calloc(1, sizeof(*r)))) {
		sw_http_reply_error(req, 500, "out of memory");
		goto out;
	}
	r->s = s;
	r->req = req;
	r->timeout_s = 60;
	argv = json_object_get(j, "argv");
	if (sw_json_str(j, "collection", 63, 1, &coll, err, sizeof(err)) ||
	    sw_json_int(j, "timeout_s", 1, EXEC_MAX_S, 0, &r->timeout_s, err, sizeof(err))) {
		sw_http_reply_error(req, 400, "%s", err);
		goto fail;
	}
	if (!sw_name_valid(coll)) {
		sw_http_reply_error(req, 400, "not a collection name");
		goto fail;
	}
	if (!json_is_array(argv) || !json_array_size(argv) ||
	    json_array_size(argv) > EXEC_ARGS_MAX) {
		sw_http_reply_error(req, 400,
				    "argv is the command and its arguments: 1 to %d "
				    "strings",
				    EXEC_ARGS_MAX);
		goto fail;
	}
	json_array_foreach(argv, i, v) if (!json_is_string(v) ||
					   strlen(json_string_value(v)) != json_string_length(v))
	{
		sw_http_reply_error(req, 400, "argv[%zu] is not a string", i);
		goto fail;
	}
	snprintf(r->collection, sizeof(r->collection), "%s", coll);
	r->argv = json_incref((json_t *)argv);
	if ((rc = collections_resolve(s, r->collection, on_members, r))) {
		sw_http_reply_error(req, 500, "out of memory");
		goto fail;
	}
	r = NULL;
	goto out;
fail:
	if (r)
		run_free(r);
out:
	json_decref(j);
}
