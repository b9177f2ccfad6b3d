/*
 * POST /v1/deploy {"manifest", "signature", "path", "fetch_ms", "lock_wait_ms",
 * "install_ms", "deadline_ms"}: a Debian package installed or removed for the site
 * server (siteward deploy). The manifest says what (install: the package, version,
 * architecture, SHA-256 and size; remove: the package) and is acted on only when the
 * site's package key signed it. Each step has its bound from the server:
 *
 *   1. already so (installed at that version, or not installed): done at once;
 *   2. the package fetched into <dir>/content/SHA.part, resuming what an earlier try
 *      left, and kept only when its hash and its control fields are the signed ones;
 *   3. dpkg's locks (lock-frontend, lock) free: a lock another program holds is waited
 *      for, up to lock_wait_ms, then the answer is "deferred", naming the holder;
 *   4. dpkg run, its process group killed at install_ms;
 *   5. dpkg's database read again: done only when the package is as asked.
 *
 * The answer is {"state": "done" | "deferred" | "failed", "reason", "output"}: the
 * server's engine decides what comes next. [deploy] root runs dpkg on another root
 * (dpkg --root), and [deploy] dpkg names the program.
 */
#include "agent.h"

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
#include <unistd.h>

#define KEY_FILE       "signing.pub" /* the site's package key, as agent/upgrade.c keeps it */
#define KEY_MAX	       4096
#define LOCK_POLL_MS   250
#define CHECK_BASE_MS  10000 /* the hash and the control fields: this, and… */
#define CHECK_BYTES_MS 4096  /* …a millisecond per this many bytes */
#define MANIFEST_MAX   4096

struct job {
	struct job *next, **prev; /* every deployment under way (deploy_stop()) */
	struct agent *a;
	struct sw_http_req *req;
	char manifest[MANIFEST_MAX + 1], *signature, *pub;
	char action[8], package[SW_DPKG_NAME_MAX + 1], version[SW_DPKG_VERSION_MAX + 1];
	char arch[SW_DPKG_ARCH_MAX + 1], sha[65], path[128];
	int64_t size, fetch_ms, lock_wait_ms, install_ms, t0, lock_since;
	char root[PATH_MAX], admindir[PATH_MAX + 16], dpkg[PATH_MAX];
	char part[PATH_MAX + 96], deb[PATH_MAX + 96];
	/* the distribution point the server named, tried before the site server */
	char dp_name[64], dp_url[320], from[400];
	int via_dp, tried_server;
	uv_timer_t timer;
	int timer_open, lock_waiting;
	/* the check on the thread pool */
	char got_sha[65];
	struct sw_deb_info info;
	int rc;
	char err[400];
};

static struct job *jobs;

static void job_closed(uv_handle_t *h)
{
	struct job *j = h->data;

	if ((*j->prev = j->next))
		j->next->prev = j->prev;
	free(j->signature);
	free(j->pub);
	free(j);
}

static void job_free(struct job *j)
{
	if (j->timer_open)
		uv_close((uv_handle_t *)&j->timer, job_closed);
	else
		job_closed((uv_handle_t *)&j->timer);
}

static void answer(struct job *j, const char *state, const char *output, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void answer(struct job *j, const char *state, const char *output, const char *fmt, ...)
{
	char reason[800];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	sw_info("deploy: %s %s: %s: %s", j->action, j->package, state, reason);
	sw_http_reply_json(j->req, 200,
			   json_pack("{ss ss ss sI}", "state", state, "reason", reason, "output",
				     output ? output : "", "elapsed_ms",
				     (json_int_t)(sw_mono_ms() - j->t0)));
	job_free(j);
}

/* The version of `package` installed (dpkg's database under the root), "" if none. */
static int installed(struct job *j, char *version, size_t len, char *err, size_t errlen)
{
	struct sw_dpkg_list l = {0};
	char status[PATH_MAX + 32];
	int rc;

	version[0] = '\0';
	snprintf(status, sizeof(status), "%s/status", j->admindir);
	if ((rc = sw_dpkg_read(status, &l, err, errlen)))
		return rc;
	for (size_t i = 0; i < l.n; i++)
		if (strcmp(l.v[i].name, j->package) == 0 &&
		    (!j->arch[0] || strcmp(l.v[i].arch, j->arch) == 0 ||
		     strcmp(j->action, "remove") == 0))
			snprintf(version, len, "%s", l.v[i].version);
	sw_dpkg_list_free(&l);
	return 0;
}

/* The pid holding a lock on `path` (F_GETLK, as dpkg and apt take theirs), 0: none. */
static pid_t lock_holder(const char *path)
{
	struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	pid_t pid = 0;

	if (fd < 0)
		return 0;
	if (fcntl(fd, F_GETLK, &fl) == 0 && fl.l_type != F_UNLCK)
		pid = fl.l_pid ? fl.l_pid : -1;
	close(fd);
	return pid;
}

static void comm_of(pid_t pid, char *out, size_t len)
{
	char path[64];
	FILE *f;

	snprintf(out, len, "unknown");
	snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
	if (pid > 0 && (f = fopen(path, "re"))) {
		if (fgets(out, (int)len, f))
			out[strcspn(out, "\n")] = '\0';
		fclose(f);
	}
}

/* --- 4, 5: dpkg, and what it left --- */

static void ran(const struct exec_result *r, void *arg)
{
	struct job *j = arg;
	const char *out = r->tail && *r->tail ? r->tail : r->head;
	char now[SW_DPKG_VERSION_MAX + 1], err[300];

	if (r->abandoned) {
		answer(j, "deferred", out,
		       "the agent stopped while dpkg ran; dpkg runs on, and the next try sees "
		       "what it did");
		return;
	}
	if (r->timed_out) {
		answer(j, "failed", out, "dpkg did not finish within %" PRId64 " s; killed",
		       j->install_ms / 1000);
		return;
	}
	if (installed(j, now, sizeof(now), err, sizeof(err))) {
		answer(j, "failed", out, "dpkg's database does not read after dpkg ran: %s", err);
		return;
	}
	if (strcmp(j->action, "install") == 0 ? strcmp(now, j->version) == 0 : !now[0]) {
		if (strcmp(j->action, "install") == 0)
			answer(j, "done", out, "installed %s %s (%s)", j->package, j->version,
			       j->from);
		else
			answer(j, "done", out, "removed %s", j->package);
		return;
	}
	/* a lock taken between our look and dpkg's own */
	if (r->status && out && strstr(out, "lock"))
		answer(j, "deferred", out, "dpkg found its database locked (exit %" PRId64 ")",
		       r->status);
	else if (r->signo)
		answer(j, "failed", out, "dpkg was killed by signal %" PRId64, r->signo);
	else
		answer(j, "failed", out, "dpkg exited %" PRId64 "; %s is %s%s", r->status,
		       j->package, now[0] ? "at " : "not installed", now);
}

static void run_dpkg(struct job *j)
{
	static char *env[] = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
			      "LANG=C.UTF-8", "HOME=/", "DEBIAN_FRONTEND=noninteractive", NULL};
	char root_arg[PATH_MAX + 16], *argv[8], err[400];
	int n = 0;

	argv[n++] = j->dpkg;
	if (strcmp(j->root, "/") != 0) {
		snprintf(root_arg, sizeof(root_arg), "--root=%s", j->root);
		argv[n++] = root_arg;
	}
	if (strcmp(j->action, "install") == 0) {
		argv[n++] = "--force-confdef";
		argv[n++] = "--force-confold";
		argv[n++] = "-i";
		argv[n++] = j->deb;
	} else {
		argv[n++] = "-r";
		argv[n++] = j->package;
	}
	argv[n] = NULL;
	if (exec_spawn(j->a, argv, env, j->install_ms, ran, j, err, sizeof(err)))
		answer(j, "failed", NULL, "%s", err);
}

/* --- 3: dpkg's locks --- */

static void try_locks(uv_timer_t *t)
{
	struct job *j = t->data;

	j->lock_waiting = 0;
	static const char *const names[] = {"lock-frontend", "lock"};
	char path[PATH_MAX + 32], comm[64];

	for (size_t i = 0; i < SW_ARRAY_LEN(names); i++) {
		pid_t pid;

		snprintf(path, sizeof(path), "%s/%s", j->admindir, names[i]);
		if (!(pid = lock_holder(path)))
			continue;
		if (sw_mono_ms() - j->lock_since < j->lock_wait_ms) {
			j->lock_waiting = 1;
			uv_timer_start(&j->timer, try_locks, LOCK_POLL_MS, 0);
			return;
		}
		comm_of(pid, comm, sizeof(comm));
		answer(j, "deferred", NULL,
		       "dpkg's lock %s is held by pid %d (%s); waited %" PRId64
		       " s; tried again later",
		       path, (int)pid, comm, j->lock_wait_ms / 1000);
		return;
	}
	run_dpkg(j);
}

static void locks(struct job *j)
{
	j->lock_since = sw_mono_ms();
	try_locks(&j->timer);
}

/* --- 2: the package, fetched and checked --- */

static void fetch_from(struct job *j, int dp);

static void check_run(void *arg)
{
	struct job *j = arg;
	uint64_t size = 0;

	if ((j->rc = sw_file_sha256(j->part, j->got_sha, &size, j->err, sizeof(j->err))))
		return;
	if (strcmp(j->got_sha, j->sha) != 0) {
		sw_seterr(j->err, sizeof(j->err),
			  "the package fetched has SHA-256 %.16s…, not the signed %.16s…: refused "
			  "(damaged or tampered with on the way)",
			  j->got_sha, j->sha);
		j->rc = SW_EDENIED;
		return;
	}
	if ((j->rc = sw_deb_read(j->part, &j->info, j->err, sizeof(j->err))))
		return;
	if (strcmp(j->info.pkg.name, j->package) || strcmp(j->info.pkg.version, j->version)) {
		sw_seterr(j->err, sizeof(j->err), "the package is %s %s, not the signed %s %s",
			  j->info.pkg.name, j->info.pkg.version, j->package, j->version);
		j->rc = SW_EDENIED;
	}
}

static void check_done(void *arg, int timed_out)
{
	struct job *j = arg;

	if (timed_out) {
		answer(j, "failed", NULL, "checking the package did not finish in time");
		return;
	}
	if (j->a->stopping) {
		answer(j, "deferred", NULL, "the agent is stopping");
		return;
	}
	if (j->rc) {
		unlink(j->part); /* a new try fetches it whole */
		if (j->via_dp && !j->tried_server) {
			/* what the distribution point gave is not the package: the site's own */
			snprintf(j->from, sizeof(j->from),
				 "from the site server; distribution point "
				 "%s: %.300s",
				 j->dp_name, j->err);
			sw_warn("deploy: %s", j->from);
			fetch_from(j, 0);
			return;
		}
		answer(j, "failed", NULL, "%s", j->err);
		return;
	}
	if (rename(j->part, j->deb)) {
		answer(j, "failed", NULL, "cannot keep %s: %s", j->deb, strerror(errno));
		return;
	}
	locks(j);
}

static void check(struct job *j)
{
	unsigned bound = CHECK_BASE_MS + (unsigned)(j->size / CHECK_BYTES_MS);

	if (sw_work_start(j->a->loop, bound, check_run, check_done, NULL, j))
		answer(j, "failed", NULL, "cannot check the package now");
}

static void fetched(const struct sw_http_download_result *res, void *arg)
{
	struct job *j = arg;

	if (j->a->stopping) {
		answer(j, "deferred", NULL, "the agent is stopping");
		return;
	}
	if (j->via_dp &&
	    (res->status < 200 || res->status > 299 || res->size != (uint64_t)j->size)) {
		snprintf(j->from, sizeof(j->from),
			 "from the site server; distribution point %s: %.300s", j->dp_name,
			 res->status ? (res->len ? res->body : "refused") : res->error);
		sw_warn("deploy: %s", j->from);
		fetch_from(j, 0);
		return;
	}
	if (res->status != 200 && res->status != 206) {
		answer(j, "deferred", NULL,
		       "the download stopped at %" PRIu64 " of %" PRId64
		       " bytes (%s); the next try resumes it",
		       res->size, j->size,
		       res->status ? (res->len ? res->body : "refused") : res->error);
		return;
	}
	if (res->size != (uint64_t)j->size) {
		answer(j, "deferred", NULL,
		       "the download stopped at %" PRIu64 " of %" PRId64
		       " bytes; the next try resumes it",
		       res->size, j->size);
		return;
	}
	if (res->resumed_from)
		sw_info("deploy: %s resumed from byte %" PRIu64, j->package, res->resumed_from);
	check(j);
}

/* The client to distribution points: agents' certificates, each checked to be the
 * system the server named. */
static struct sw_http_client *dp_client(struct agent *a)
{
	if (!a->dp_client && agent_client_new(a, SW_PKI_ROLE_AGENT, 0, &a->dp_client))
		a->dp_client = NULL;
	return a->dp_client;
}

/* From the distribution point (`dp`), or from the site server; resuming either way:
 * the bytes are the package's, whoever sent them, and the hash tells. */
static void fetch_from(struct job *j, int dp)
{
	char url[700];
	int rc;

	j->via_dp = dp;
	if (dp && !dp_client(j->a))
		j->via_dp = dp = 0;
	if (!dp) {
		j->tried_server = 1;
		if (!j->from[0])
			snprintf(j->from, sizeof(j->from), "from the site server");
		snprintf(url, sizeof(url), "%s%s", j->a->server, j->path);
		rc = sw_http_client_download(j->a->bulk, url, j->part, (uint64_t)j->size,
					     (unsigned)j->fetch_ms, fetched, j);
	} else {
		snprintf(j->from, sizeof(j->from), "from distribution point %s", j->dp_name);
		snprintf(url, sizeof(url), "%s%s", j->dp_url, j->path);
		rc = sw_http_client_download_to(j->a->dp_client, j->dp_name, url, j->part,
						(uint64_t)j->size, (unsigned)j->fetch_ms, fetched,
						j);
	}
	if (rc)
		answer(j, "failed", NULL, "cannot start the download into %s", j->part);
}

static void fetch(struct job *j)
{
	char dir[PATH_MAX + 16];
	struct stat st;

	snprintf(dir, sizeof(dir), "%s/content", j->a->dir);
	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		answer(j, "failed", NULL, "cannot create %s: %s", dir, strerror(errno));
		return;
	}
	snprintf(j->part, sizeof(j->part), "%s/%s.part", dir, j->sha);
	snprintf(j->deb, sizeof(j->deb), "%s/%s.deb", dir, j->sha);
	/* fetched and checked by an earlier try: checked again, as a file here may change */
	if (stat(j->deb, &st) == 0 && rename(j->deb, j->part) == 0) {
		snprintf(j->from, sizeof(j->from), "fetched by an earlier try");
		check(j);
		return;
	}
	if (stat(j->part, &st) == 0 && (uint64_t)st.st_size > (uint64_t)j->size)
		unlink(j->part); /* larger than the package: not a beginning of it */
	fetch_from(j, j->dp_name[0] != '\0');
}

/* --- 1: the manifest, checked; already so? --- */

static void go(struct job *j)
{
	char now[SW_DPKG_VERSION_MAX + 1], err[300];
	json_t *m = NULL;
	const char *v;

	if (sw_pki_verify_signature(j->pub, j->manifest, strlen(j->manifest), j->signature, err,
				    sizeof(err))) {
		answer(j, "failed", NULL,
		       "the deployment is not signed with the site's package key: %s", err);
		return;
	}
	if (!(m = json_loads(j->manifest, 0, NULL)) || !json_is_object(m)) {
		answer(j, "failed", NULL, "the signed manifest does not read");
		json_decref(m);
		return;
	}
#define FIELD(k, dst)                                                                              \
	snprintf(dst, sizeof(dst), "%s", (v = json_string_value(json_object_get(m, k))) ? v : "")
	FIELD("action", j->action);
	FIELD("package", j->package);
	FIELD("version", j->version);
	FIELD("arch", j->arch);
	FIELD("sha256", j->sha);
#undef FIELD
	j->size = json_integer_value(json_object_get(m, "size"));
	json_decref(m);
	if (!sw_dpkg_name_valid(j->package) ||
	    (strcmp(j->action, "remove") != 0 &&
	     (strcmp(j->action, "install") != 0 || strlen(j->sha) != 64 ||
	      strspn(j->sha, "0123456789abcdef") != 64 || j->size <= 0 || !j->version[0]))) {
		answer(j, "failed", NULL,
		       "the signed manifest is not a deployment this agent knows");
		return;
	}
	if (installed(j, now, sizeof(now), err, sizeof(err))) {
		answer(j, "failed", NULL, "%s", err);
		return;
	}
	if (strcmp(j->action, "remove") == 0) {
		if (!now[0])
			answer(j, "done", NULL, "%s is not installed", j->package);
		else
			locks(j);
		return;
	}
	if (strcmp(now, j->version) == 0) {
		answer(j, "done", NULL, "%s %s is installed already", j->package, j->version);
		return;
	}
	fetch(j);
}

static void on_key(const struct sw_http_result *res, void *arg)
{
	struct job *j = arg;
	char path[PATH_MAX + 16], err[300];
	const char *pem = NULL;
	json_t *k = NULL;

	if (res->status != 200 || sw_json_parse_object(res->body, res->len, &k, NULL, 0) ||
	    sw_json_str(k, "pem", KEY_MAX, 1, &pem, NULL, 0) ||
	    strncmp(pem, "-----BEGIN PUBLIC KEY-----", 26) != 0 || !(j->pub = strdup(pem))) {
		json_decref(k);
		answer(j, "deferred", NULL, "cannot get the site's package key from the server: %s",
		       res->status ? "not a PEM public key" : res->error);
		return;
	}
	json_decref(k);
	snprintf(path, sizeof(path), "%s/%s", j->a->dir, KEY_FILE);
	if (sw_file_write_atomic(path, j->pub, strlen(j->pub), 0644, err, sizeof(err)))
		sw_warn("deploy: cannot keep the site's package key: %s", err);
	go(j);
}

void deploy_post(struct sw_http_req *req, void *arg)
{
	struct agent *a = arg;
	const char *manifest = NULL, *sig = NULL, *path = NULL;
	int64_t deadline = 0;
	struct job *j = NULL;
	char err[300] = "", url[400];
	json_t *b;

	if (!(b = sw_http_req_json(req)))
		return;
	if (!(j = calloc(1, sizeof(*j)))) {
		sw_http_reply_error(req, 500, "out of memory");
		goto out;
	}
	j->a = a;
	j->req = req;
	j->t0 = sw_mono_ms();
	j->fetch_ms = 60000;
	j->lock_wait_ms = 60000;
	j->install_ms = 600000;
	if (sw_json_str(b, "manifest", MANIFEST_MAX, 1, &manifest, err, sizeof(err)) ||
	    sw_json_str(b, "signature", 200, 1, &sig, err, sizeof(err)) ||
	    sw_json_str(b, "path", 100, 1, &path, err, sizeof(err)) ||
	    sw_json_int(b, "fetch_ms", 0, 86400000, 0, &j->fetch_ms, err, sizeof(err)) ||
	    sw_json_int(b, "lock_wait_ms", 0, 3600000, 0, &j->lock_wait_ms, err, sizeof(err)) ||
	    sw_json_int(b, "install_ms", 1000, 86400000, 0, &j->install_ms, err, sizeof(err)) ||
	    sw_json_int(b, "deadline_ms", 0, INT64_MAX / 2, 0, &deadline, err, sizeof(err))) {
		sw_http_reply_error(req, 400, "%s", err);
		free(j);
		goto out;
	}
	if (strncmp(path, "/v1/content/", 12) != 0 || strstr(path, "..")) {
		sw_http_reply_error(req, 400,
				    "the package's path is not one of the site's content");
		free(j);
		goto out;
	}
	if (deadline && sw_now_ms() > deadline) {
		sw_http_reply_error(req, 410, "the request expired before it arrived; not run");
		free(j);
		goto out;
	}
	const json_t *dp = json_object_get(b, "dp");
	const char *dp_name = NULL, *dp_url = NULL;

	if (dp && (sw_json_str(dp, "name", 63, 1, &dp_name, err, sizeof(err)) ||
		   sw_json_str(dp, "url", 300, 1, &dp_url, err, sizeof(err)) ||
		   strncmp(dp_url, "https://", 8) != 0 || !sw_name_valid(dp_name))) {
		sw_http_reply_error(req, 400, "dp: %s", err[0] ? err : "not a distribution point");
		free(j);
		goto out;
	}
	if (dp) {
		snprintf(j->dp_name, sizeof(j->dp_name), "%s", dp_name);
		snprintf(j->dp_url, sizeof(j->dp_url), "%s", dp_url);
	}
	snprintf(j->manifest, sizeof(j->manifest), "%s", manifest);
	snprintf(j->path, sizeof(j->path), "%s", path);
	snprintf(j->root, sizeof(j->root), "%s", sw_conf_get(a->conf, "deploy", "root", "/"));
	snprintf(j->admindir, sizeof(j->admindir), "%s/var/lib/dpkg",
		 strcmp(j->root, "/") == 0 ? "" : j->root);
	snprintf(j->dpkg, sizeof(j->dpkg), "%s", sw_conf_get(a->conf, "deploy", "dpkg", "dpkg"));
	uv_timer_init(a->loop, &j->timer);
	j->timer.data = j;
	j->timer_open = 1;
	if ((j->next = jobs))
		jobs->prev = &j->next;
	j->prev = &jobs;
	jobs = j;
	if (!(j->signature = strdup(sig))) {
		answer(j, "failed", NULL, "out of memory");
		goto out;
	}
	if (sw_pem_read(a->dir, KEY_FILE, &j->pub, NULL, 0) == 0) {
		go(j);
		goto out;
	}
	/* the first deployment (or upgrade) here fetches the key they are checked with */
	snprintf(url, sizeof(url), "%s/v1/site/signing-key", a->server);
	if (sw_http_client_request(a->client, "GET", url, NULL, 0, a->request_timeout_ms, on_key,
				   j))
		answer(j, "deferred", NULL, "cannot ask the server for the site's package key");
out:
	json_decref(b);
}

void deploy_stop(struct agent *a)
{
	struct job *j, *next;

	for (j = jobs; j; j = next) {
		next = j->next;
		if (j->a == a && j->lock_waiting) {
			j->lock_waiting = 0;
			uv_timer_stop(&j->timer);
			answer(j, "deferred", NULL, "the agent stopped while dpkg's lock was held");
		}
	}
}
