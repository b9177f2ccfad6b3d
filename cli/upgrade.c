/*
 * siteward upgrade check|run|status|resume|rollback: the site upgrade, which runs in
 * the server. The CLI starts it and follows it; it can be stopped or killed at any time
 * without harm, and `status` or `resume` picks the run up again from any terminal.
 */
#include "cli.h"

#include "proto.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Exit statuses of run, resume and rollback. */
#define EXIT_DEFERRED 3 /* finished; some systems are deferred and will catch up */
#define EXIT_FAILED   4 /* the run stopped, or systems failed */

#define POLL_MS	       300
#define LOST_SERVER_MS 60000 /* the server may restart itself during a run */
/* A run is followed on its event stream, opened again every STREAM_MS (no wait without
 * a bound) and given up after STREAM_IDLE_MS without a byte: the server sends a
 * keep-alive every 5 s. A broken stream is opened again after a pause that doubles from
 * RECONNECT_MIN_MS to RECONNECT_MAX_MS. */
#define STREAM_MS	 600000
#define STREAM_IDLE_MS	 15000
#define RECONNECT_MIN_MS 200
#define RECONNECT_MAX_MS 1000

static void upgrade_usage(void)
{
	cli_error("usage: siteward upgrade check FILE [run options]\n"
		  "       siteward upgrade run FILE [--parallel N] [--stop-timeout S] "
		  "[--on-stuck defer|kill|remove-role|fail] [--max-failures N] [--strict]\n"
		  "       siteward upgrade status [--follow]|resume|rollback");
}

static const char *str(const json_t *j, const char *key)
{
	const char *s = json_string_value(json_object_get(j, key));

	return s ? s : "";
}

static long long num(const json_t *j, const char *key)
{
	return (long long)json_integer_value(json_object_get(j, key));
}

static void print_issues(const char *name, const char *version, const json_t *issues)
{
	json_t *i;
	size_t k;

	if (!json_array_size(issues)) {
		printf("%-20s %-10s ok\n", name, version);
		return;
	}
	json_array_foreach(issues, k, i)
	    printf("%-20s %-10s %-7s %s\n", k ? "" : name, k ? "" : version, str(i, "level"),
		   str(i, "message"));
}

/* Uploads the package file into the site's store, which verifies it; its hash names
 * it to check and run (`sha` holds 65). The server reads no path of ours. */
static int upload(struct cli *c, const char *file, char *sha)
{
	json_t *reply;
	const char *s;

	if (access(file, R_OK) != 0) {
		cli_error("%s: no such package file", file);
		return 1;
	}
	if (client_upload(c, "/v1/packages", file, &reply))
		return 1;
	s = json_string_value(json_object_get(reply, "sha256"));
	if (!s || strlen(s) != 64) {
		cli_error("the server's answer to the upload names no package");
		json_decref(reply);
		return 1;
	}
	memcpy(sha, s, 65);
	json_decref(reply);
	return 0;
}

/* The options of a run, which check takes too so that its bound is the run's. */
struct run_opts {
	const char *file, *on_stuck;
	long long parallel, max_failures, stop_ms;
	int strict;
};

static int parse_uint(const char *s, long long min, long long max, long long *out);

/* 0, or the exit status of a usage error. */
static int run_opts_parse(int argc, char **argv, struct run_opts *o)
{
	*o = (struct run_opts){
	    .on_stuck = "defer", .parallel = 5, .max_failures = -1, .stop_ms = 30000};
	for (int k = 0; k < argc; k++) {
		const char *a = argv[k];
		int has = k + 1 < argc;

		if (strcmp(a, "--strict") == 0) {
			o->strict = 1;
		} else if (strcmp(a, "--parallel") == 0 && has) {
			if (parse_uint(argv[++k], 1, 1000, &o->parallel)) {
				cli_error("--parallel takes a number from 1 to 1000");
				return 2;
			}
		} else if (strcmp(a, "--stop-timeout") == 0 && has) {
			double sec;
			if (sw_number_parse(argv[++k], 0.1, 3600, &sec)) {
				cli_error("--stop-timeout takes seconds, from 0.1 to 3600");
				return 2;
			}
			o->stop_ms = (long long)(sec * 1000);
		} else if (strcmp(a, "--on-stuck") == 0 && has) {
			o->on_stuck = argv[++k];
		} else if (strcmp(a, "--max-failures") == 0 && has) {
			if (parse_uint(argv[++k], 0, 1000000, &o->max_failures)) {
				cli_error("--max-failures takes a number");
				return 2;
			}
		} else if (!o->file && a[0] != '-') {
			o->file = a;
		} else {
			upgrade_usage();
			return 2;
		}
	}
	if (!o->file) {
		upgrade_usage();
		return 2;
	}
	return 0;
}

static json_t *run_opts_body(const struct run_opts *o, const char *sha)
{
	return json_pack("{ss si si ss si sb}", "package", sha, "parallel", (int)o->parallel,
			 "stop_timeout_ms", (int)o->stop_ms, "on_stuck", o->on_stuck,
			 "max_failures", (int)o->max_failures, "strict", o->strict);
}

static int do_check(struct cli *c, int argc, char **argv)
{
	char path[65];
	json_t *reply, *y, *body;
	struct run_opts o;
	size_t i;
	int rc;

	if ((rc = run_opts_parse(argc, argv, &o)))
		return rc;
	if (upload(c, o.file, path))
		return 1;
	body = run_opts_body(&o, path);
	rc = client_call(c, "POST", "/v1/upgrades/check", body, &reply);
	json_decref(body);
	if (rc)
		return 1;
	if (c->json) {
		print_json(reply);
	} else {
		printf("package %s (upgrades from %s), %lld bytes\n", str(reply, "version"),
		       str(reply, "min_version"), num(reply, "size"));
		printf("%-20s %-10s %s\n", "SYSTEM", "VERSION", "CHECK");
		print_issues("site server", "", json_object_get(reply, "site"));
		json_array_foreach(json_object_get(reply, "systems"), i, y)
		    print_issues(str(y, "name"), str(y, "version"), json_object_get(y, "issues"));
		printf("%lld errors, %lld warnings\n", num(reply, "errors"),
		       num(reply, "warnings"));
		if (num(reply, "bound_ms")) {
			char b[32];
			snprintf(b, sizeof(b), "%.0f s", num(reply, "bound_ms") / 1000.0);
			printf("a run with these options takes at most %s\n", b);
		}
	}
	int ok = json_is_true(json_object_get(reply, "ok"));
	json_decref(reply);
	return ok ? 0 : 1;
}

static void fmt_secs(char *out, size_t len, long long ms)
{
	snprintf(out, len, "%.1f s", ms / 1000.0);
}

/* The run's bound, known before it began, beside the time it has taken. */
static void print_bound(const json_t *run)
{
	long long bound = num(run, "bound_ms"), leg = num(run, "leg_started_at");
	long long end = num(run, "finished_at") ? num(run, "finished_at") : sw_now_ms();
	char a[32], b[32];

	if (!bound)
		return;
	fmt_secs(a, sizeof(a), end - leg);
	fmt_secs(b, sizeof(b), bound);
	printf("time: %s of at most %s\n", a, b);
}

static void print_report(const json_t *run)
{
	const json_t *counts = json_object_get(run, "counts");
	json_t *y;
	size_t i;
	char t[32];

	fmt_secs(t, sizeof(t), num(run, "elapsed_ms"));
	int back = strcmp(str(run, "mode"), "rollback") == 0;

	printf("upgrade %lld%s, %s → %s: %s in %s (%lld upgraded, %lld deferred, %lld failed",
	       num(run, "id"), back ? " (rollback)" : "", str(run, back ? "version" : "from"),
	       str(run, back ? "from" : "version"), str(run, "state"), t, num(counts, "upgraded"),
	       num(counts, "deferred"), num(counts, "failed"));
	if (num(counts, "rolled_back"))
		printf(", %lld rolled back", num(counts, "rolled_back"));
	printf(")%s%s\n", *str(run, "reason") ? ": " : "", str(run, "reason"));
	print_bound(run);
	printf("site server: %s\n", str(json_object_get(run, "server"), "step"));
	printf("%-20s %-10s %-10s %-12s %8s  %-36s %s\n", "SYSTEM", "FROM", "NOW", "OUTCOME",
	       "TIME", "STEPS", "REASON");
	json_array_foreach(json_object_get(run, "systems"), i, y)
	{
		char steps[256] = "";
		const char *k;
		json_t *v;

		json_object_foreach(json_object_get(y, "times"), k, v)
		{
			size_t n = strlen(steps);
			snprintf(steps + n, sizeof(steps) - n, "%s%s %.1f", n ? " " : "", k,
				 (double)json_integer_value(v) / 1000.0);
		}
		fmt_secs(t, sizeof(t), num(y, "elapsed_ms"));
		printf("%-20s %-10s %-10s %-12s %8s  %-36s %s\n", str(y, "name"), str(y, "from"),
		       str(y, "version"), str(y, "state"), t, steps, str(y, "reason"));
	}
}

static int exit_status(const json_t *run)
{
	enum sw_run_state state = sw_run_state_parse(str(run, "state"));

	if (state == SW_RUN_DONE || state == SW_RUN_ROLLED_BACK)
		return 0;
	if (state == SW_RUN_DEFERRED)
		return EXIT_DEFERRED;
	return EXIT_FAILED;
}

static int following(const char *state)
{
	enum sw_run_state st = sw_run_state_parse(state);

	return st == SW_RUN_RUNNING || st == SW_RUN_ROLLING_BACK;
}

/* Prints what changed since `last` (plain lines), or one live line in a terminal. */
static void progress(const json_t *run, json_t *last, int live)
{
	const json_t *counts = json_object_get(run, "counts");
	json_t *y;
	size_t i;

	if (live) {
		long long n = num(counts, "systems");
		long long parallel = num(json_object_get(run, "options"), "parallel");
		long long waves = parallel > 0 ? (n + parallel - 1) / parallel : 1, wave = waves;
		char t[32];

		json_array_foreach(json_object_get(run, "systems"), i, y)
		{
			enum sw_sys_state st = sw_sys_state_parse(str(y, "state"));
			if ((st == SW_SYS_PENDING || st == SW_SYS_ACTIVE) &&
			    (long long)i / (parallel > 0 ? parallel : 1) + 1 < wave) {
				wave = (long long)i / (parallel > 0 ? parallel : 1) + 1;
				break;
			}
		}
		fmt_secs(t, sizeof(t), num(run, "elapsed_ms"));
		fprintf(stderr,
			"\r\033[Kwave %lld/%lld: %lld upgraded, %lld active, %lld deferred, %lld "
			"failed, %lld pending, %s (server: %s)",
			wave, waves, num(counts, "upgraded") + num(counts, "rolled_back"),
			num(counts, "active"), num(counts, "deferred"), num(counts, "failed"),
			num(counts, "pending"), t, str(json_object_get(run, "server"), "step"));
		fflush(stderr);
		return;
	}
	const char *server = str(json_object_get(run, "server"), "step");
	if (strcmp(server, str(last, "server")) != 0) {
		fprintf(stderr, "upgrade: site server: %s\n", server);
		json_object_set_new(last, "server", json_string(server));
	}
	json_array_foreach(json_object_get(run, "systems"), i, y)
	{
		char was[200], now[200];
		const char *name = str(y, "name");

		snprintf(now, sizeof(now), "%s %s", str(y, "state"), str(y, "step"));
		snprintf(was, sizeof(was), "%s", str(last, name));
		if (strcmp(was, now) == 0)
			continue;
		json_object_set_new(last, name, json_string(now));
		enum sw_sys_state st = sw_sys_state_parse(str(y, "state"));
		if (st == SW_SYS_ACTIVE)
			fprintf(stderr, "upgrade: %s: %s\n", name, str(y, "step"));
		else if (st != SW_SYS_PENDING)
			fprintf(stderr, "upgrade: %s: %s%s%s\n", name, str(y, "state"),
				*str(y, "reason") ? ": " : "", str(y, "reason"));
	}
}

/* Polls the run until it ends, for a server that answers no event stream; `*run` is
 * the latest answer. 0 when the run has ended, 1 after an error said. */
static int follow_poll(struct cli *c, json_t **run, json_t *last, int live)
{
	int64_t lost_since = 0;
	char err[1100];
	long status;

	while (following(str(*run, "state"))) {
		json_t *next = NULL;
		struct timespec ts = {0, POLL_MS * 1000000L};

		if (!c->json)
			progress(*run, last, live);
		nanosleep(&ts, NULL);
		if (client_request(c, "GET", "/v1/upgrades/current", NULL, &status, &next, err,
				   sizeof(err))) {
			json_decref(next);
			if (status != 0) {
				cli_error("%s", err);
				return 1;
			}
			if (!lost_since)
				lost_since = sw_mono_ms();
			if (sw_mono_ms() - lost_since > LOST_SERVER_MS) {
				cli_error(
				    "%s; the upgrade goes on in the server: see `siteward upgrade "
				    "status`",
				    err);
				return 1;
			}
			continue;
		}
		lost_since = 0;
		json_decref(*run);
		*run = next;
	}
	return 0;
}

/* The run as its event stream rebuilds it: `run` whole, a `system` in its place, the
 * `summary` over the run's own fields. */
struct follow {
	struct cli *c;
	json_t *run, *last;
	int live, ended;
	int64_t run_at; /* when the run's own fields last came: the live line's clock goes on */
};

static void replace_system(json_t *run, json_t *y)
{
	json_t *systems = json_object_get(run, "systems"), *x;
	size_t i;

	json_array_foreach(systems, i, x) if (strcmp(str(x, "name"), str(y, "name")) == 0)
	{
		json_array_set(systems, i, y);
		return;
	}
	json_array_append(systems, y);
}

static int on_run_event(const char *type, json_t *data, void *arg)
{
	struct follow *f = arg;
	const char *key;
	json_t *v;

	if (strcmp(type, "end") == 0) {
		f->ended = 1;
		return 1;
	}
	if (strcmp(type, "run") == 0) {
		json_decref(f->run);
		f->run = json_incref(data);
	} else if (strcmp(type, "system") == 0) {
		replace_system(f->run, data);
		return 0;
	} else if (strcmp(type, "summary") == 0) {
		json_object_foreach(data, key, v) json_object_set(f->run, key, v);
	} else {
		return 0; /* an event of a later server */
	}
	f->run_at = sw_mono_ms();
	if (!f->c->json && following(str(f->run, "state")))
		progress(f->run, f->last, f->live);
	return 0;
}

/* Between events the live line's time goes on, as it did when each poll brought it. */
static void on_run_tick(void *arg)
{
	struct follow *f = arg;
	json_t *shown;

	if (!f->live || !following(str(f->run, "state")))
		return;
	shown = json_copy(f->run);
	json_object_set_new(shown, "elapsed_ms",
			    json_integer(num(f->run, "elapsed_ms") + sw_mono_ms() - f->run_at));
	progress(shown, f->last, 1);
	json_decref(shown);
}

/* Follows the run's event stream until the run ends: 0, the final run in `*run`; 1
 * after an error said; 2 when the server answers no stream (an older one, or one at its
 * limit of watchers), with what it answered, if anything, in `*run`: the caller polls.
 * A stream that breaks (the server restarts itself in its own upgrade) is opened again
 * after a growing pause, within LOST_SERVER_MS of the server answering last. */
static int follow_stream(struct cli *c, json_t **run, json_t *last, int live)
{
	struct follow f = {.c = c, .run = *run, .last = last, .live = live};
	struct client_stream cs = {
	    .on_event = on_run_event, .on_tick = on_run_tick, .tick_ms = POLL_MS, .arg = &f};
	int64_t lost_since = 0;
	unsigned pause_ms = 0;
	char err[1100];
	int rc = 0;

	f.run_at = sw_mono_ms();
	for (;;) {
		json_t *reply = NULL;
		long status;
		int got = client_stream(c, "/v1/upgrades/current", STREAM_MS, STREAM_IDLE_MS, &cs,
					&status, &reply, err, sizeof(err));

		if (got == 2) {
			cli_error("%s", err);
			rc = 1;
			break;
		} else if (got == 0) {
			if (f.ended)
				break;
			/* it ran and ended: the server stops, or the stream's own deadline */
			lost_since = 0;
			pause_ms = 0;
		} else if (status == 0) {
			if (!lost_since)
				lost_since = sw_mono_ms();
			if (sw_mono_ms() - lost_since > LOST_SERVER_MS) {
				cli_error(
				    "%s; the upgrade goes on in the server: see `siteward upgrade "
				    "status`",
				    err);
				rc = 1;
				break;
			}
		} else if ((status >= 200 && status < 300 && reply) || status == 503) {
			if (reply) {
				json_decref(f.run);
				f.run = reply;
			}
			rc = 2;
			break;
		} else {
			json_decref(reply);
			cli_error("%s", err);
			rc = 1;
			break;
		}
		pause_ms = pause_ms
			       ? (pause_ms * 2 > RECONNECT_MAX_MS ? RECONNECT_MAX_MS : pause_ms * 2)
			       : RECONNECT_MIN_MS;
		struct timespec ts = {pause_ms / 1000, (long)(pause_ms % 1000) * 1000000L};
		nanosleep(&ts, NULL);
	}
	*run = f.run;
	return rc;
}

/* Follows the run until it ends, by its event stream or, from a server without one, by
 * polling; the server may restart itself along the way. */
static int follow(struct cli *c, json_t *run)
{
	int live = !c->json && isatty(2);
	json_t *last = json_object();
	int rc = 0;

	if (run && !c->json && following(str(run, "state"))) {
		char b[32];
		fmt_secs(b, sizeof(b), num(run, "bound_ms"));
		fprintf(stderr, "upgrade %lld: %lld systems, at most %s\n", num(run, "id"),
			num(json_object_get(run, "counts"), "systems"), b);
	}
	if (run && following(str(run, "state"))) {
		if (!c->json)
			progress(run, last, live);
		rc = follow_stream(c, &run, last, live);
		if (rc == 2)
			rc = follow_poll(c, &run, last, live);
	}
	if (rc) {
		json_decref(run);
		json_decref(last);
		return 1;
	}
	if (live)
		fprintf(stderr, "\r\033[K");
	else if (!c->json && run)
		progress(run, last, 0);
	json_decref(last);
	if (c->json)
		print_json(run);
	else
		print_report(run);
	if (sw_run_state_parse(str(run, "state")) == SW_RUN_INTERRUPTED && !c->json)
		fprintf(stderr, "siteward: the upgrade was interrupted; `siteward upgrade resume` "
				"continues it\n");
	rc = exit_status(run);
	json_decref(run);
	return rc;
}

static int parse_uint(const char *s, long long min, long long max, long long *out)
{
	int64_t v;

	if (sw_int_parse(s, min, max, &v))
		return -1;
	*out = v;
	return 0;
}

static int do_run(struct cli *c, int argc, char **argv)
{
	char path[65], err[1100];
	json_t *reply = NULL, *body;
	struct run_opts o;
	long status;
	int rc;

	if ((rc = run_opts_parse(argc, argv, &o)))
		return rc;
	if (upload(c, o.file, path))
		return 1;
	body = run_opts_body(&o, path);
	rc = client_request(c, "POST", "/v1/upgrades", body, &status, &reply, err, sizeof(err));
	json_decref(body);
	if (rc) {
		json_t *p, *i;
		size_t k, n;

		if (c->json && reply && json_object_get(reply, "problems"))
			print_json(reply);
		else if (reply)
			json_array_foreach(json_object_get(reply, "problems"), k, p)
			    json_array_foreach(json_object_get(p, "issues"), n, i)
				fprintf(stderr, "  %s: %s: %s\n", str(p, "name"), str(i, "level"),
					str(i, "message"));
		cli_error("%s", err);
		json_decref(reply);
		return 1;
	}
	return follow(c, reply);
}

static int do_action(struct cli *c, const char *action)
{
	char path[64];
	json_t *reply;

	json_t *body = json_object();
	int rc;

	snprintf(path, sizeof(path), "/v1/upgrades/current/%s", action);
	rc = client_call(c, "POST", path, body, &reply);
	json_decref(body);
	if (rc)
		return 1;
	return follow(c, reply);
}

static int do_status(struct cli *c, int follow_it)
{
	json_t *run;

	if (client_call(c, "GET", "/v1/upgrades/current", NULL, &run))
		return 1;
	/* a run under way is followed on its event stream to its end, as run does */
	if (follow_it)
		return follow(c, run);
	if (c->json)
		print_json(run);
	else
		print_report(run);
	json_decref(run);
	return 0;
}

int cmd_upgrade(struct cli *c, int argc, char **argv)
{
	if (argc < 1) {
		upgrade_usage();
		return 2;
	}
	if (strcmp(argv[0], "check") == 0)
		return do_check(c, argc - 1, argv + 1);
	if (strcmp(argv[0], "run") == 0)
		return do_run(c, argc - 1, argv + 1);
	if (strcmp(argv[0], "status") == 0 && argc == 1)
		return do_status(c, 0);
	if (strcmp(argv[0], "status") == 0 && argc == 2 && strcmp(argv[1], "--follow") == 0)
		return do_status(c, 1);
	if ((strcmp(argv[0], "resume") == 0 || strcmp(argv[0], "rollback") == 0) && argc == 1)
		return do_action(c, argv[0]);
	upgrade_usage();
	return 2;
}
