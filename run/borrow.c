/*
 * Borrowed licenses (lib/borrow.h): a license lent to this user on this machine until a
 * time, for use away from the site's network.
 *
 *   siteward-run borrow PRODUCT --for DURATION   asks the license servers in turn
 *   siteward-run return PRODUCT                  gives it back: free at once at the site
 *   siteward-run borrowed [--json]               lists what this user holds here
 *
 * The signed text is kept in the user's own state folder,
 * $XDG_STATE_HOME/siteward/borrowed/SYSTEM/PRODUCT.lic (~/.local/state/...). A file the
 * user can write is read as hostile: it is believed only for its signature, and only
 * for this system, this user and this machine, until it expires by the later of this
 * clock and the agent's clock mark (lib/clockmark.h), so a clock set back does not
 * extend it.
 *
 * Before a checkout, a borrowed license that covers PROGRAM is asked about at the
 * license server that lent it: one that answers may say it was written off (siteward
 * license reclaim) or has ended, and the file goes. One that does not answer leaves the
 * decision to the signed text.
 */
#include "run.h"

#include "borrow.h"
#include "clock.h"
#include "clockmark.h"
#include "error.h"
#include "http_client.h"
#include "json.h"
#include "paths.h"
#include "pki.h"
#include "ticket.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define ASK_MS	 5000 /* one license server's answer */
#define SUFFIX	 ".lic"
#define LIST_MAX 256 /* borrowed licenses listed */

/* A borrowed license as read from its file. */
struct held {
	char path[PATH_MAX + 128];
	char *text;
	struct sw_borrow b;
};

static void held_free(struct held *h)
{
	free(h->text);
	h->text = NULL;
}

/* The folder of this user's borrowed licenses on this system; 0, or SW_ENOTFOUND when
 * the user has no home. */
static int borrow_dir(const struct run *r, char *out, size_t len)
{
	const char *state = getenv("XDG_STATE_HOME"), *home = getenv("HOME");
	struct passwd *pw;
	int n;

	if (state && state[0] == '/') {
		n = snprintf(out, len, "%s/siteward/borrowed/%s", state, r->conf.host);
	} else {
		if (!home || home[0] != '/')
			home = (pw = getpwuid(getuid())) ? pw->pw_dir : NULL;
		if (!home || home[0] != '/')
			return SW_ENOTFOUND;
		n = snprintf(out, len, "%s/.local/state/siteward/borrowed/%s", home, r->conf.host);
	}
	return n > 0 && (size_t)n < len ? 0 : SW_ETOOBIG;
}

static int mkdirs(char *path)
{
	for (char *p = path + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		int rc = mkdir(path, 0700);
		*p = '/';
		if (rc < 0 && errno != EEXIST)
			return SW_EIO;
	}
	return mkdir(path, 0700) < 0 && errno != EEXIST ? SW_EIO : 0;
}

/* Reads one file: a regular file of this user, at most SW_BORROW_MAX bytes. */
static int held_read(const char *path, struct held *h, char *err, size_t errlen)
{
	struct stat st;
	ssize_t n;
	int fd;

	memset(h, 0, sizeof(*h));
	snprintf(h->path, sizeof(h->path), "%s", path);
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (fd < 0) {
		sw_seterr(err, errlen, "%s: %s", path, strerror(errno));
		return errno == ENOENT ? SW_ENOTFOUND : SW_EIO;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > SW_BORROW_MAX ||
	    !(h->text = malloc(SW_BORROW_MAX + 1))) {
		close(fd);
		sw_seterr(err, errlen, "%s: not a borrowed license", path);
		return SW_EINVAL;
	}
	n = read(fd, h->text, SW_BORROW_MAX);
	close(fd);
	if (n < 0)
		n = 0;
	while (n > 0 && (h->text[n - 1] == '\n' || h->text[n - 1] == '\r'))
		n--;
	h->text[n] = '\0';
	if (sw_borrow_parse(h->text, (size_t)n, &h->b, err, errlen)) {
		held_free(h);
		return SW_EINVAL;
	}
	return 0;
}

static int held_path(const struct run *r, const char *product, char *out, size_t len, char *err,
		     size_t errlen)
{
	char dir[PATH_MAX];

	if (!sw_name_valid(product)) {
		sw_seterr(err, errlen, "'%.64s' is not a product name", product);
		return SW_EINVAL;
	}
	if (borrow_dir(r, dir, sizeof(dir))) {
		sw_seterr(err, errlen,
			  "this user has no home folder to keep a borrowed license in");
		return SW_ENOTFOUND;
	}
	if (snprintf(out, len, "%s/%s%s", dir, product, SUFFIX) >= (int)len) {
		sw_seterr(err, errlen, "%s: path too long", dir);
		return SW_ETOOBIG;
	}
	return 0;
}

/* When a time is, for a person: "2026-12-21 14:00 UTC" in local time. */
static void when(int64_t ms, char *out, size_t len)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;

	if (!localtime_r(&t, &tm) || !strftime(out, len, "%Y-%m-%d %H:%M %Z", &tm))
		snprintf(out, len, "%lld", (long long)ms);
}

/* 1 if the agent was told by the site server that the loan was written off. */
static int written_off(const struct run *r, const char *lease)
{
	char path[PATH_MAX + 32], *text = NULL;
	json_t *list = NULL, *v;
	size_t len, i;
	int found = 0;

	sw_path_join(path, sizeof(path), r->conf.dir, "written-off.json");
	if (sw_file_read(path, 1024 * 1024, &text, &len, NULL, 0) == 0 &&
	    (list = json_loadb(text, len, 0, NULL)))
		json_array_foreach(list, i, v) found |=
		    json_is_string(v) && strcmp(json_string_value(v), lease) == 0;
	json_decref(list);
	free(text);
	return found;
}

/* The signed text checked as it stands here now: 0, or SW_EDENIED with the reason;
 * *expired when it is genuine but over: past its end, or written off. */
static int check_offline(const struct run *r, const char *text, struct sw_borrow *b,
			 int64_t *behind_ms, int *expired, char *err, size_t errlen)
{
	char mark[PATH_MAX + 16], machine[SW_BORROW_MACHINE_LEN + 1], *ca = NULL;
	struct sw_pki_verifier *v = NULL;
	struct sw_identity signer;
	size_t len;
	int64_t now;
	int rc;

	*behind_ms = 0;
	*expired = 0;
	if ((rc = sw_file_read(r->conf.ca, 256 * 1024, &ca, &len, err, errlen)) ||
	    (rc = sw_pki_verifier_new(ca, &v, err, errlen)))
		goto out;
	if ((rc = sw_borrow_verify(v, text, strlen(text), b, &signer, err, errlen)))
		goto out;
	sw_path_join(mark, sizeof(mark), r->conf.dir, SW_CLOCKMARK_FILE);
	now = sw_clockmark_trusted(mark, behind_ms);
	sw_borrow_machine(machine);
	rc = sw_borrow_valid(b, r->conf.host, (uint32_t)getuid(), machine, now, err, errlen);
	*expired = rc && b->expires_ms <= now;
	if (!rc && written_off(r, b->lease)) {
		sw_seterr(err, errlen, "it was written off by the site (siteward license reclaim)");
		rc = SW_EDENIED;
		*expired = 1;
	}
out:
	sw_pki_verifier_free(v);
	free(ca);
	return rc;
}

/* --- talking to a license server --- */

struct answer {
	int done;
	long status; /* 0: no answer */
	json_t *body;
	char error[400];
};

static void on_answer(const struct sw_http_result *res, void *arg)
{
	struct answer *a = arg;
	const char *e = NULL;
	char text[300];

	a->done = 1;
	a->status = res->status;
	if (res->status == 0) {
		snprintf(a->error, sizeof(a->error), "%s", res->error);
		return;
	}
	if (sw_json_parse_object(res->body, res->len, &a->body, NULL, 0))
		a->body = NULL;
	if (res->status != 200) {
		sw_json_str(a->body, "error", 300, 0, &e, NULL, 0);
		run_printable(text, sizeof(text), e ? e : "no reason given");
		snprintf(a->error, sizeof(a->error), "HTTP %ld: %s", res->status, text);
	} else if (!a->body) {
		snprintf(a->error, sizeof(a->error), "a malformed answer");
	}
}

/* POSTs `msg` (taken) to license server `i` and waits for the answer, which the
 * request's deadline bounds. Each call has a client of its own, gone before it returns:
 * the checkout and the heartbeats that may follow use the run's client alone (sharing
 * it, a run could wait for ever on a check-in whose transfer never started). */
static void ask(struct run *r, int i, const char *path, json_t *msg, struct answer *a)
{
	struct sw_http_client_opts ho;
	char url[RUN_URL_MAX + 32], header[SW_TICKET_MAX + 32],
	    *body = msg ? sw_json_dump(msg) : NULL;
	struct sw_http_client *http = NULL;

	memset(a, 0, sizeof(*a));
	json_decref(msg);
	run_http_opts(r, &ho);
	snprintf(url, sizeof(url), "%s%s", r->conf.meters[i], path);
	if (r->ticket)
		snprintf(header, sizeof(header), "%s: %s", SW_TICKET_HEADER, r->ticket);
	if (!body || sw_http_client_new(r->loop, &ho, &http) ||
	    (r->ticket && sw_http_client_header(http, header)) ||
	    sw_http_client_request_to(http, r->conf.meter_names[i], "POST", url, body, strlen(body),
				      ASK_MS, on_answer, a)) {
		snprintf(a->error, sizeof(a->error), "out of memory");
		free(body);
		sw_http_client_free(http);
		return;
	}
	free(body);
	while (!a->done)
		uv_run(r->loop, UV_RUN_ONCE);
	sw_http_client_free(http);
}

static void answer_free(struct answer *a)
{
	json_decref(a->body);
	a->body = NULL;
}

/* The license server of that name among this machine's, or -1. */
static int meter_named(const struct run *r, const char *name)
{
	for (int i = 0; i < r->conf.nmeters; i++)
		if (r->conf.meter_names[i] && strcmp(r->conf.meter_names[i], name) == 0)
			return i;
	return -1;
}

/* --- siteward-run borrow --- */

static int cmd_borrow(struct run *r, int argc, char **argv)
{
	const char *product = NULL, *span_arg = NULL;
	char path[PATH_MAX + 128], err[600], denial[600] = "", last[600] = "", until[64];
	char client[33], machine[SW_BORROW_MACHINE_LEN + 1];
	struct held old;
	int64_t for_s = 0, behind;
	int unknown = 0, expired;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--for") == 0 && i + 1 < argc)
			span_arg = argv[++i];
		else if (argv[i][0] != '-' && !product)
			product = argv[i];
		else
			goto usage;
	}
	if (!product || !span_arg)
		goto usage;
	if (sw_duration_parse(span_arg, SW_BORROW_MIN_S, SW_BORROW_LIMIT_S, &for_s)) {
		fprintf(stderr,
			"siteward-run: --for takes a duration of 1 minute to 90 days, like 8h or "
			"14d\n");
		return RUN_EX_USAGE;
	}
	if (held_path(r, product, path, sizeof(path), err, sizeof(err))) {
		fprintf(stderr, "siteward-run: %s\n", err);
		return RUN_EX_USAGE;
	}
	if (held_read(path, &old, err, sizeof(err)) == 0) {
		int good =
		    check_offline(r, old.text, &old.b, &behind, &expired, err, sizeof(err)) == 0;

		when(old.b.expires_ms, until, sizeof(until));
		held_free(&old);
		if (good) {
			fprintf(stderr,
				"siteward-run: you hold a borrowed license of %s until %s; "
				"'siteward-run return %s' gives it back first\n",
				product, until, product);
			return RUN_EX_TEMPFAIL;
		}
	}
	if (r->conf.nmeters == 0) {
		fprintf(stderr, "siteward-run: no license server to borrow from: borrowing needs "
				"the site's network and the agent's user ticket\n");
		return RUN_EX_TEMPFAIL;
	}
	if (sw_random_hex(client, 16)) {
		fprintf(stderr, "siteward-run: out of resources\n");
		return RUN_EX_SOFTWARE;
	}
	sw_borrow_machine(machine);
	for (int i = 0; i < r->conf.nmeters; i++) {
		struct answer a;
		const char *text;
		struct sw_borrow b;

		ask(r, i, "/v1/borrow",
		    json_pack("{ss sI ss ss}", "product", product, "for_s", (json_int_t)for_s,
			      "client", client, "machine", machine),
		    &a);
		if (a.status == 404) {
			unknown = 1;
		} else if (a.status != 200 || !a.body) {
			snprintf(last, sizeof(last), "%s: %s", r->conf.meters[i], a.error);
		} else if (!json_is_true(json_object_get(a.body, "granted"))) {
			const char *why = json_string_value(json_object_get(a.body, "reason"));

			if (!denial[0])
				run_printable(denial, sizeof(denial),
					      why ? why : "no license free");
		} else if (!(text = json_string_value(json_object_get(a.body, "borrow"))) ||
			   check_offline(r, text, &b, &behind, &expired, err, sizeof(err))) {
			/* lent, but not in a form this machine can check: given back at once */
			const char *lease = json_string_value(json_object_get(a.body, "lease"));
			json_t *back =
			    json_pack("{ss ss}", "client", client, "lease", lease ? lease : "");

			snprintf(last, sizeof(last),
				 "%s lent a license this machine cannot check: %s",
				 r->conf.meters[i], text ? err : "no signed text");
			answer_free(&a);
			ask(r, i, "/v1/checkin", back, &a);
		} else {
			char dir[PATH_MAX], *line = NULL;
			int rc = SW_ENOMEM;

			snprintf(dir, sizeof(dir), "%s", path);
			*strrchr(dir, '/') = '\0';
			if (mkdirs(dir)) {
				sw_seterr(err, sizeof(err), "cannot create %s: %s", dir,
					  strerror(errno));
				rc = SW_EIO;
			} else if (asprintf(&line, "%s\n", text) >= 0) {
				rc = sw_file_write_atomic(path, line, strlen(line), 0600, err,
							  sizeof(err));
			} else {
				line = NULL;
			}
			free(line);
			if (rc) {
				fprintf(
				    stderr,
				    "siteward-run: borrowed %s, but cannot keep it (%s); giving "
				    "it back\n",
				    product, err);
				answer_free(&a);
				ask(r, i, "/v1/checkin",
				    json_pack("{ss ss}", "client", client, "lease", b.lease), &a);
				answer_free(&a);
				return RUN_EX_CONFIG;
			}
			when(b.expires_ms, until, sizeof(until));
			printf("borrowed %s until %s from license server %s\n"
			       "it runs with no network until then; 'siteward-run return %s' "
			       "gives it back early\n",
			       b.product.name, until, b.meter, product);
			answer_free(&a);
			return 0;
		}
		answer_free(&a);
	}
	if (denial[0]) {
		fprintf(stderr, "siteward-run: denied: %s\n", denial);
		return RUN_EX_TEMPFAIL;
	}
	if (unknown && !last[0]) {
		fprintf(stderr, "siteward-run: the site has no product %s\n", product);
		return RUN_EX_USAGE;
	}
	fprintf(stderr, "siteward-run: no license server lent %s (last: %s)\n", product, last);
	return RUN_EX_TEMPFAIL;
usage:
	fprintf(stderr, "usage: siteward-run borrow PRODUCT --for DURATION\n");
	return RUN_EX_USAGE;
}

/* --- siteward-run return --- */

static int cmd_return(struct run *r, int argc, char **argv)
{
	char path[PATH_MAX + 128], err[600], until[64];
	struct answer a;
	struct held h;
	int i, rc;

	if (argc != 2 || argv[1][0] == '-') {
		fprintf(stderr, "usage: siteward-run return PRODUCT\n");
		return RUN_EX_USAGE;
	}
	if (held_path(r, argv[1], path, sizeof(path), err, sizeof(err))) {
		fprintf(stderr, "siteward-run: %s\n", err);
		return RUN_EX_USAGE;
	}
	if ((rc = held_read(path, &h, err, sizeof(err)))) {
		if (rc == SW_ENOTFOUND)
			fprintf(stderr, "siteward-run: you hold no borrowed license of %s here\n",
				argv[1]);
		else
			fprintf(stderr, "siteward-run: %s\n", err);
		return RUN_EX_USAGE;
	}
	when(h.b.expires_ms, until, sizeof(until));
	if ((i = meter_named(r, h.b.meter)) < 0) {
		fprintf(stderr,
			"siteward-run: license server %s, which lent %s, is not one this machine "
			"can reach now; the license stays borrowed until %s\n",
			h.b.meter, argv[1], until);
		held_free(&h);
		return RUN_EX_TEMPFAIL;
	}
	ask(r, i, "/v1/checkin", json_pack("{ss ss}", "client", h.b.client, "lease", h.b.lease),
	    &a);
	if (a.status == 200 || a.status == 404) {
		unlink(path);
		if (a.status == 200)
			printf("returned %s to license server %s: it is free at once\n", argv[1],
			       h.b.meter);
		else
			printf("the loan of %s had already ended at license server %s (expired "
			       "or written off); forgotten here\n",
			       argv[1], h.b.meter);
		rc = 0;
	} else {
		fprintf(stderr,
			"siteward-run: cannot return %s to license server %s (%s); it stays "
			"borrowed until %s: try again on the site's network\n",
			argv[1], h.b.meter, a.error, until);
		rc = a.status ? RUN_EX_SOFTWARE : RUN_EX_TEMPFAIL;
	}
	answer_free(&a);
	held_free(&h);
	return rc;
}

/* --- siteward-run borrowed --- */

/* Calls fn on each borrowed license file of this user here; stops when it returns
 * nonzero and returns that. */
static int each_held(const struct run *r, int (*fn)(const struct run *, const char *, void *),
		     void *arg)
{
	char dir[PATH_MAX], path[PATH_MAX + 300];
	struct dirent *e;
	size_t n = 0;
	int rc = 0;
	DIR *d;

	if (borrow_dir(r, dir, sizeof(dir)) || !(d = opendir(dir)))
		return 0;
	while (!rc && (e = readdir(d)) && n++ < LIST_MAX) {
		size_t len = strlen(e->d_name);

		if (len <= strlen(SUFFIX) || strcmp(e->d_name + len - strlen(SUFFIX), SUFFIX) != 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		rc = fn(r, path, arg);
	}
	closedir(d);
	return rc;
}

static int list_one(const struct run *r, const char *path, void *arg)
{
	json_t *list = arg, *o;
	char err[600], until[64];
	struct held h;
	int64_t behind;
	int good, expired;

	if (held_read(path, &h, err, sizeof(err)))
		return 0;
	good = check_offline(r, h.text, &h.b, &behind, &expired, err, sizeof(err)) == 0;
	when(h.b.expires_ms, until, sizeof(until));
	o = json_pack("{ss ss sI ss ss sb}", "product", h.b.product.name, "lease", h.b.lease,
		      "expires_ms", (json_int_t)h.b.expires_ms, "until", until, "meter", h.b.meter,
		      "valid", good);
	if (o && !good)
		json_object_set_new(o, "refused", json_string(err));
	json_array_append_new(list, o);
	held_free(&h);
	return 0;
}

static int cmd_borrowed(struct run *r, int argc, char **argv)
{
	json_t *list = json_array(), *o;
	int as_json = argc == 2 && strcmp(argv[1], "--json") == 0;
	size_t i;

	if ((argc != 1 && !as_json) || !list) {
		json_decref(list);
		fprintf(stderr, "usage: siteward-run borrowed [--json]\n");
		return RUN_EX_USAGE;
	}
	each_held(r, list_one, list);
	if (as_json) {
		char *text = sw_json_dump(list);
		printf("%s\n", text ? text : "[]");
		free(text);
	} else if (!json_array_size(list)) {
		printf("no borrowed licenses here\n");
	} else {
		printf("%-24s %-24s %-20s %s\n", "PRODUCT", "UNTIL", "LICENSE SERVER", "STATE");
		json_array_foreach(list, i, o)
		{
			const char *refused = json_string_value(json_object_get(o, "refused"));

			printf("%-24s %-24s %-20s %s\n",
			       json_string_value(json_object_get(o, "product")),
			       json_string_value(json_object_get(o, "until")),
			       json_string_value(json_object_get(o, "meter")),
			       refused ? refused : "valid");
		}
	}
	json_decref(list);
	return 0;
}

int borrow_is_command(const char *s)
{
	return strcmp(s, "borrow") == 0 || strcmp(s, "return") == 0 || strcmp(s, "borrowed") == 0;
}

int borrow_command(struct run *r, int argc, char **argv)
{
	if (strcmp(argv[0], "borrow") == 0)
		return cmd_borrow(r, argc, argv);
	if (strcmp(argv[0], "return") == 0)
		return cmd_return(r, argc, argv);
	return cmd_borrowed(r, argc, argv);
}

/* --- a run under a borrowed license --- */

struct cover {
	struct run *r;
	struct held h;
	int found;
};

static int covers_one(const struct run *cr, const char *path, void *arg)
{
	struct cover *c = arg;
	struct run *r = c->r;
	const struct sw_product *v[1];
	struct sw_program prog = {r->exe, r->build_id, r->has_version ? r->version : NULL};
	unsigned need = 0;
	char err[600];

	(void)cr;
	if (held_read(path, &c->h, err, sizeof(err)))
		return 0;
	v[0] = &c->h.b.product;
	if (!sw_product_match(v, 1, &prog, &need) && (need & SW_PRODUCT_NEED_VERSION)) {
		run_version(r);
		prog.version = r->version;
	}
	if (sw_product_match(v, 1, &prog, &need))
		return c->found = 1;
	held_free(&c->h);
	return 0;
}

int borrow_covers(struct run *r)
{
	struct cover c = {.r = r};
	char err[600], until[64], span[48];
	const char *product;
	int64_t behind;
	int i, expired, rc;

	if (!each_held(r, covers_one, &c))
		return 0;
	product = c.h.b.product.name;
	/* the license server that lent it knows whether it still stands */
	if ((i = meter_named(r, c.h.b.meter)) >= 0) {
		struct answer a;
		const char *state, *reason;

		ask(r, i, "/v1/borrow/check",
		    json_pack("{ss ss}", "client", c.h.b.client, "lease", c.h.b.lease), &a);
		state =
		    a.status == 200 ? json_string_value(json_object_get(a.body, "state")) : NULL;
		reason = json_string_value(json_object_get(a.body, "reason"));
		if (state && strcmp(state, "held") == 0) {
			if (r->verbose)
				fprintf(stderr,
					"siteward-run: %s runs under the license of %s borrowed "
					"from %s\n",
					r->exe, product, c.h.b.meter);
			answer_free(&a);
			held_free(&c.h);
			return 1;
		}
		if (state) {
			run_printable(err, sizeof(err), reason ? reason : "");
			fprintf(stderr,
				"siteward-run: the borrowed license of %s %s%s%s; asking for a "
				"license\n",
				product,
				strcmp(state, "written_off") == 0
				    ? "was written off by the site"
				    : "has ended at its license server (returned or expired)",
				err[0] ? ": " : "", err);
			unlink(c.h.path);
			answer_free(&a);
			held_free(&c.h);
			return 0;
		}
		if (r->verbose)
			fprintf(stderr,
				"siteward-run: %s: %s; checking the borrowed license here\n",
				r->conf.meters[i], a.error);
		answer_free(&a);
	}
	rc = check_offline(r, c.h.text, &c.h.b, &behind, &expired, err, sizeof(err));
	if (behind > SW_CLOCK_WARN_MS) {
		sw_clock_span(behind, span, sizeof(span));
		fprintf(stderr,
			"siteward-run: this machine's clock is %s behind the time it last reached; "
			"the borrowed license of %s is counted by that time\n",
			span, product);
	}
	if (rc) {
		fprintf(stderr, "siteward-run: the borrowed license of %s is refused: %s\n",
			product, err);
		if (expired)
			unlink(c.h.path); /* genuine and over: nothing more to learn from it */
		held_free(&c.h);
		return 0;
	}
	if (r->verbose) {
		when(c.h.b.expires_ms, until, sizeof(until));
		fprintf(stderr, "siteward-run: %s runs under the license of %s borrowed until %s\n",
			r->exe, product, until);
	}
	held_free(&c.h);
	return 1;
}
