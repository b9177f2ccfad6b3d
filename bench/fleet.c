/*
 * fleet: simulated agents, for the agents' channel at scale.
 *
 *   fleet enroll --site DIR --url URL --out DIR --count N [--prefix NAME] [--parallel K]
 *   fleet run --url URL --ids DIR... [--from I] [--count N] [--duration S] [--hold MS]
 *
 * `enroll` makes identities through the site server's own API, as `siteward-agent init`
 * does: a token (with the site's admin certificate), a key and a certificate request,
 * the enrollment; each identity's certificate and key go to the out folder as
 * NAME.crt and NAME.key, its name to `names` there, the site CA to `ca.crt`.
 *
 * `run` connects identities [from, from+count) of those folders (in their order), each with a
 * client and a connection of its own, and has each do what an agent's channel does: a poll the
 * server holds, a heartbeat on the poll when the interval the server sets comes round, every
 * command answered at once (on the next poll, as 200 with a small body), and after a
 * failure jittered exponential backoff from 1 s, up to four heartbeat intervals or 60 s,
 * a 503's Retry-After taken as the least wait. Once a second it prints one line:
 *
 *   t=12.0 connected=4998 polls=1250 heartbeats=625 commands=3 failed=2 503=1 other=1
 *
 * (connected: the identities whose last poll was answered 200; the counts are of that
 * second), and at the end, or on SIGINT or SIGTERM, a JSON summary line.
 * A tool, not a daemon: one libuv loop; every request has its deadline.
 */
#include "error.h"
#include "http_client.h"
#include "json.h"
#include "pki.h"
#include "util.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <uv.h>

#define BACKOFF_FIRST_MS 1000u
#define BACKOFF_MAX_MS	 60000u
#define CONNECT_MS	 5000u
#define REQUEST_MS	 10000u

struct sim {
	struct fleet *f;
	char name[64];
	struct sw_http_client *client;
	uv_timer_t timer;
	json_t *answers; /* for the next poll */
	int64_t hb_due;	 /* sw_mono_ms() */
	unsigned hb_s, backoff_ms;
	int connected, in_flight, hb_sent;
};

struct fleet {
	uv_loop_t *loop;
	char url[512];
	unsigned from, count, hold_ms;
	double duration_s;
	struct sim *sims;
	uv_timer_t tick;
	uv_signal_t sigint, sigterm;
	int64_t started;
	unsigned connected, connected_max, stopping;
	int64_t all_connected_at; /* ms from start when every one first was, or -1 */
	/* this second's counts, and the run's */
	uint64_t polls, beats, commands, failed, busy, other;
	uint64_t total_polls, total_commands, total_failed, total_busy;
	char last_error[256];
};

static void poll_now(struct sim *s);

static void on_timer(uv_timer_t *t)
{
	poll_now(t->data);
}

static unsigned backoff_cap(const struct sim *s)
{
	unsigned cap = s->hb_s * 4000u;

	return cap < BACKOFF_MAX_MS ? cap : BACKOFF_MAX_MS;
}

static void set_connected(struct sim *s, int up)
{
	if (s->connected == up)
		return;
	s->connected = up;
	if (up)
		s->f->connected++;
	else
		s->f->connected--;
}

/* An answer an agent would give: a service's state for a service command, else {}. */
static void answer(struct sim *s, const json_t *cmd)
{
	const char *id = json_string_value(json_object_get(cmd, "id"));
	const char *path = json_string_value(json_object_get(cmd, "path"));
	const char *body = "{}";

	if (path && strncmp(path, "/v1/services/", 13) == 0)
		body = "{\"name\":\"work\",\"role\":\"test\",\"state\":\"running\",\"pid\":1,"
		       "\"wants_running\":true,\"restarts\":0,\"reason\":\"running\"}";
	json_array_append_new(
	    s->answers, json_pack("{ss si ss}", "id", id ? id : "", "status", 200, "body", body));
	s->f->commands++;
}

static void on_reply(const struct sw_http_result *res, void *arg)
{
	struct sim *s = arg;
	struct fleet *f = s->f;
	json_t *j = NULL, *cmd, *hb;
	unsigned wait;
	size_t i;

	s->in_flight = 0;
	if (f->stopping)
		return;
	if (res->status == 200 && sw_json_parse_object(res->body, res->len, &j, NULL, 0) == 0 &&
	    json_is_array(json_object_get(j, "commands"))) {
		f->polls++;
		set_connected(s, 1);
		s->backoff_ms = 0;
		if ((hb = json_object_get(j, "heartbeat"))) {
			json_int_t iv =
			    json_integer_value(json_object_get(hb, "heartbeat_interval"));
			if (iv >= 1 && iv <= 3600)
				s->hb_s = (unsigned)iv;
		}
		if (s->hb_sent) {
			s->hb_due = sw_mono_ms() + s->hb_s * 1000;
			f->beats++;
		}
		s->hb_sent = 0;
		json_array_foreach(json_object_get(j, "commands"), i, cmd) answer(s, cmd);
		json_decref(j);
		uv_timer_start(&s->timer, on_timer, 0, 0);
		return;
	}
	json_decref(j);
	set_connected(s, 0);
	s->hb_due = 0; /* the first poll that gets through tells the server all */
	f->failed++;
	if (res->status == 503)
		f->busy++;
	else
		f->other++;
	if (res->status)
		snprintf(f->last_error, sizeof(f->last_error), "%ld: %.200s", res->status,
			 res->body);
	else
		snprintf(f->last_error, sizeof(f->last_error), "%s", res->error);
	s->backoff_ms = s->backoff_ms ? s->backoff_ms * 2 : BACKOFF_FIRST_MS;
	if (s->backoff_ms > backoff_cap(s))
		s->backoff_ms = backoff_cap(s);
	wait = s->backoff_ms / 2 + sw_random_u32() % (s->backoff_ms / 2 + 1);
	if (res->retry_after_s && wait < res->retry_after_s * 1000u)
		wait =
		    res->retry_after_s * 1000u + sw_random_u32() % (res->retry_after_s * 500u + 1);
	uv_timer_start(&s->timer, on_timer, wait, 0);
}

static void poll_now(struct sim *s)
{
	struct fleet *f = s->f;
	int64_t now = sw_mono_ms();
	unsigned hold = f->hold_ms;
	char url[600], *body;
	json_t *msg;

	if (s->in_flight || f->stopping)
		return;
	s->hb_sent = now >= s->hb_due;
	if (json_array_size(s->answers))
		hold = 250;
	else if (!s->hb_sent && s->hb_due - now < hold)
		hold = (unsigned)(s->hb_due - now);
	msg = json_pack("{sO s[] si}", "answers", s->answers, "running", "hold_ms", (int)hold);
	if (msg && s->hb_sent)
		json_object_set_new(msg, "heartbeat",
				    json_pack("{ss sI s{}}", "version", "0.1.0", "now",
					      (json_int_t)sw_now_ms(), "facts"));
	body = msg ? sw_json_dump(msg) : NULL;
	json_decref(msg);
	json_array_clear(s->answers);
	snprintf(url, sizeof(url), "%s/v1/agent/poll", f->url);
	if (body && sw_http_client_request(s->client, "POST", url, body, strlen(body),
					   hold + REQUEST_MS, on_reply, s) == 0)
		s->in_flight = 1;
	else
		uv_timer_start(&s->timer, on_timer, BACKOFF_FIRST_MS, 0);
	free(body);
}

static void report(struct fleet *f, int final)
{
	double t = (sw_mono_ms() - f->started) / 1000.0;

	if (!final) {
		printf("t=%.1f connected=%u polls=%" PRIu64 " heartbeats=%" PRIu64
		       " commands=%" PRIu64 " failed=%" PRIu64 " 503=%" PRIu64 " other=%" PRIu64
		       "%s%s\n",
		       t, f->connected, f->polls, f->beats, f->commands, f->failed, f->busy,
		       f->other, f->failed ? " last: " : "", f->failed ? f->last_error : "");
	} else {
		struct rusage ru;
		getrusage(RUSAGE_SELF, &ru);
		printf(
		    "{\"seconds\":%.1f,\"count\":%u,\"connected\":%u,\"all_connected_at_s\":%.1f,"
		    "\"polls\":%" PRIu64 ",\"commands\":%" PRIu64 ",\"failed\":%" PRIu64
		    ",\"busy\":%" PRIu64 ",\"rss_mib\":%.0f}\n",
		    t, f->count, f->connected,
		    f->all_connected_at < 0 ? -1.0 : f->all_connected_at / 1000.0, f->total_polls,
		    f->total_commands, f->total_failed, f->total_busy, ru.ru_maxrss / 1024.0);
	}
	fflush(stdout);
}

static void stop(struct fleet *f)
{
	if (f->stopping)
		return;
	f->stopping = 1;
	report(f, 1);
	uv_stop(f->loop);
}

static void on_tick(uv_timer_t *t)
{
	struct fleet *f = t->data;

	f->total_polls += f->polls;
	f->total_commands += f->commands;
	f->total_failed += f->failed;
	f->total_busy += f->busy;
	if (f->connected == f->count && f->all_connected_at < 0)
		f->all_connected_at = sw_mono_ms() - f->started;
	report(f, 0);
	f->polls = f->beats = f->commands = f->failed = f->busy = f->other = 0;
	if (f->duration_s > 0 && sw_mono_ms() - f->started >= f->duration_s * 1000)
		stop(f);
}

static void on_signal(uv_signal_t *h, int signum)
{
	(void)signum;
	stop(h->data);
}

/* "DIR/NAME" of the identities [from, from+count) of the folders, in their order. */
static char **read_ids(char *const *dirs, int ndirs, unsigned from, unsigned count, unsigned *n)
{
	char **ids = calloc(count ? count : 1, sizeof(*ids));
	char path[PATH_MAX + 16], line[128];
	unsigned seen = 0;

	*n = 0;
	for (int d = 0; ids && d < ndirs && *n < count; d++) {
		FILE *fp;

		snprintf(path, sizeof(path), "%s/names", dirs[d]);
		if (!(fp = fopen(path, "re"))) {
			fprintf(stderr, "fleet: cannot read %s\n", path);
			continue;
		}
		while (*n < count && fgets(line, sizeof(line), fp)) {
			line[strcspn(line, "\n")] = '\0';
			if (!line[0] || seen++ < from)
				continue;
			snprintf(path, sizeof(path), "%s/%s", dirs[d], line);
			if (!(ids[(*n)++] = strdup(path)))
				break;
		}
		fclose(fp);
	}
	return ids;
}

static int run_main(int argc, char **argv)
{
	static const struct option lo[] = {
	    {"url", required_argument, NULL, 'u'},
	    {"ids", required_argument, NULL, 'i'},
	    {"from", required_argument, NULL, 'f'},
	    {"count", required_argument, NULL, 'c'},
	    {"duration", required_argument, NULL, 'd'},
	    {"hold", required_argument, NULL, 'H'},
	    {NULL, 0, NULL, 0},
	};
	struct fleet f = {.count = 1000, .hold_ms = 25000, .all_connected_at = -1};
	char ca[PATH_MAX + 16], crt[PATH_MAX + 80], key[PATH_MAX + 80], *dirs[64], **ids;
	struct rlimit rl;
	int opt, ndirs = 0;

	while ((opt = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (opt) {
		case 'u': snprintf(f.url, sizeof(f.url), "%s", optarg); break;
		case 'i':
			if (ndirs < 64)
				dirs[ndirs++] = optarg;
			break;
		case 'f': f.from = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'c': f.count = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'd': f.duration_s = strtod(optarg, NULL); break;
		case 'H': f.hold_ms = (unsigned)strtoul(optarg, NULL, 10); break;
		default: return 2;
		}
	}
	if (!f.url[0] || !ndirs || f.count == 0) {
		fprintf(stderr, "usage: fleet run --url URL --ids DIR... [--from I] [--count N] "
				"[--duration S] [--hold MS]\n");
		return 2;
	}
	if (!(ids = read_ids(dirs, ndirs, f.from, f.count, &f.count)) || f.count == 0)
		return 1;
	/* a connection each, and curl's own descriptors */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	signal(SIGPIPE, SIG_IGN);
	f.loop = uv_default_loop();
	f.sims = calloc(f.count, sizeof(*f.sims));
	if (!f.sims)
		return 1;
	snprintf(ca, sizeof(ca), "%s/ca.crt", dirs[0]);
	f.started = sw_mono_ms();
	for (unsigned i = 0; i < f.count; i++) {
		struct sim *s = &f.sims[i];
		snprintf(crt, sizeof(crt), "%s.crt", ids[i]);
		snprintf(key, sizeof(key), "%s.key", ids[i]);
		struct sw_http_client_opts o = {.ca_file = ca,
						.cert_file = crt,
						.key_file = key,
						.connect_timeout_ms = CONNECT_MS,
						.peer_role = SW_PKI_ROLE_SERVER,
						.max_host_connections = 1};
		s->f = &f;
		s->hb_s = 15;
		snprintf(s->name, sizeof(s->name), "%s", strrchr(ids[i], '/') + 1);
		if (sw_http_client_new(f.loop, &o, &s->client) || !(s->answers = json_array())) {
			fprintf(stderr, "fleet: out of memory at identity %u\n", i);
			return 1;
		}
		uv_timer_init(f.loop, &s->timer);
		s->timer.data = s;
		/* spread the first polls over a second, as agents started at once would be */
		uv_timer_start(&s->timer, on_timer, sw_random_u32() % 1000, 0);
	}
	for (unsigned i = 0; i < f.count; i++)
		free(ids[i]);
	free(ids);
	uv_timer_init(f.loop, &f.tick);
	f.tick.data = &f;
	uv_timer_start(&f.tick, on_tick, 1000, 1000);
	uv_signal_init(f.loop, &f.sigint);
	uv_signal_init(f.loop, &f.sigterm);
	f.sigint.data = f.sigterm.data = &f;
	uv_signal_start(&f.sigint, on_signal, SIGINT);
	uv_signal_start(&f.sigterm, on_signal, SIGTERM);
	uv_run(f.loop, UV_RUN_DEFAULT);
	/* the process ends here: the kernel closes the connections */
	return 0;
}

/* -- enroll ---------------------------------------------------------------------------- */

static int fetch_json(const struct sw_http_client_opts *o, const char *url, const char *body,
		      json_t **out)
{
	char err[256], *resp = NULL;
	long status;
	int rc = sw_http_fetch(o, "POST", url, body, REQUEST_MS, &status, &resp, err, sizeof(err));

	if (rc || status != 200 || sw_json_parse_object(resp, strlen(resp), out, NULL, 0)) {
		fprintf(stderr, "fleet: %s: %s\n", url, rc ? err : resp ? resp : "no answer");
		free(resp);
		return -1;
	}
	free(resp);
	return 0;
}

static int enroll_main(int argc, char **argv)
{
	static const struct option lo[] = {
	    {"site", required_argument, NULL, 's'},   {"url", required_argument, NULL, 'u'},
	    {"out", required_argument, NULL, 'o'},    {"count", required_argument, NULL, 'c'},
	    {"prefix", required_argument, NULL, 'p'}, {NULL, 0, NULL, 0},
	};
	const char *site = NULL, *url = NULL, *out = NULL, *prefix = "sim";
	char ca[PATH_MAX + 16], crt[PATH_MAX + 16], key[PATH_MAX + 16], path[PATH_MAX + 80];
	char name[64], u[600], *k = NULL, *csr = NULL, *body = NULL, *ca_pem = NULL;
	unsigned count = 0;
	FILE *names;
	int opt;

	while ((opt = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (opt) {
		case 's': site = optarg; break;
		case 'u': url = optarg; break;
		case 'o': out = optarg; break;
		case 'c': count = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'p': prefix = optarg; break;
		default: return 2;
		}
	}
	if (!site || !url || !out || !count) {
		fprintf(stderr, "usage: fleet enroll --site DIR --url URL --out DIR --count N "
				"[--prefix NAME]\n");
		return 2;
	}
	snprintf(ca, sizeof(ca), "%s/ca.crt", site);
	snprintf(crt, sizeof(crt), "%s/admin.crt", site);
	snprintf(key, sizeof(key), "%s/admin.key", site);
	struct sw_http_client_opts admin = {
	    .ca_file = ca, .cert_file = crt, .key_file = key, .peer_role = SW_PKI_ROLE_SERVER};
	struct sw_http_client_opts open = {.ca_file = ca, .peer_role = SW_PKI_ROLE_SERVER};
	if ((mkdir(out, 0755) < 0 && errno != EEXIST) ||
	    sw_file_read(ca, 64 * 1024, &ca_pem, NULL, NULL, 0))
		return 1;
	snprintf(path, sizeof(path), "%s/ca.crt", out);
	if (sw_file_write_atomic(path, ca_pem, strlen(ca_pem), 0644, NULL, 0))
		return 1;
	free(ca_pem);
	snprintf(path, sizeof(path), "%s/names", out);
	if (!(names = fopen(path, "ae")))
		return 1;
	for (unsigned i = 0; i < count; i++) {
		json_t *tok = NULL, *req, *rep = NULL;
		const char *cert;

		snprintf(name, sizeof(name), "%s%05u", prefix, i);
		snprintf(u, sizeof(u), "%s/v1/tokens", url);
		if (fetch_json(&admin, u, "{\"ttl\":600}", &tok))
			return 1;
		if (sw_pki_key_generate(&k, NULL, 0) || sw_pki_csr_create(k, name, &csr, NULL, 0))
			return 1;
		req = json_pack("{sO ss ss}", "token", json_object_get(tok, "token"), "name", name,
				"csr", csr);
		body = req ? sw_json_dump(req) : NULL;
		json_decref(req);
		json_decref(tok);
		snprintf(u, sizeof(u), "%s/v1/enroll", url);
		if (!body || fetch_json(&open, u, body, &rep))
			return 1;
		cert = json_string_value(json_object_get(rep, "certificate"));
		snprintf(path, sizeof(path), "%s/%s.crt", out, name);
		if (!cert || sw_file_write_atomic(path, cert, strlen(cert), 0644, NULL, 0))
			return 1;
		snprintf(path, sizeof(path), "%s/%s.key", out, name);
		if (sw_file_write_atomic(path, k, strlen(k), 0600, NULL, 0))
			return 1;
		fprintf(names, "%s\n", name);
		json_decref(rep);
		free(body);
		free(csr);
		free(k);
		body = csr = k = NULL;
	}
	fclose(names);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "enroll") == 0)
		return enroll_main(argc - 1, argv + 1);
	if (argc > 1 && strcmp(argv[1], "run") == 0)
		return run_main(argc - 1, argv + 1);
	fprintf(stderr, "usage: fleet enroll ... | fleet run ... (see bench/fleet.c)\n");
	return 2;
}
