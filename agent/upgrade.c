/*
 * The agent's half of a site upgrade, driven by the site server through the agent's
 * API: stop the role services, stage a signed package as versions/V, switch `current`
 * to it and re-execute into it (or back), start the services again.
 *
 * Services the upgrade stopped are named in upgrade-stopped.json until it starts them
 * again, so neither a heartbeat's roles nor a re-executed agent starts them early.
 * A staging runs its download on the loop and its checks and unpacking on libuv's
 * thread pool, so heartbeats and other calls are answered meanwhile.
 */
#include "agent.h"

#include "error.h"
#include "install.h"
#include "json.h"
#include "log.h"
#include "pkg.h"
#include "proto.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#define STOPPED_FILE	 "upgrade-stopped.json"
#define KEY_FILE	 "signing.pub" /* the site's package key, from the server */
#define KEY_MAX		 (16 * 1024)
#define MAX_WAIT_MS	 (3600 * 1000)
#define START_WAIT_MS	 30000		  /* a start without a deadline answers by then */
#define DOWNLOAD_MS	 (10 * 60 * 1000) /* a download without a deadline */
#define PACKAGE_MAX	 SW_STAGE_PACKAGE_MAX
#define DISK_FACTOR	 3    /* the package, its unpacked tree, and room to spare */
#define RESTART_DELAY_MS 200  /* lets the 202 go out before the API closes */
#define RESTART_DRAIN_MS 5000 /* the longest a restart waits for the channel's answers */
#define AGENT_PROG	 "siteward-agent"
#define PKG_REFUSED	 "package refused: "
#define PKG_REFUSED_LEN	 17
#define URL_MAX		 SW_STAGE_URL_MAX

struct stage;

struct upgrade {
	json_t *held;	     /* names in STOPPED_FILE; NULL when there is no such file */
	struct stage *stage; /* the staging under way */
	uv_timer_t restart_timer;
	int64_t restart_asked; /* sw_mono_ms() when the restart was asked for */
	int restarting;
};

/* A stop or start waiting for its services to settle. */
enum op_kind { OP_STOP, OP_START };

struct op_item {
	struct op *op;
	char name[64];
	char role[64];
	enum sw_svc_state state;
	int removed; /* its role went away while the operation ran */
	char reason[200];
	int wants_running;
};

struct op {
	struct agent *a;
	struct sw_http_req *req;
	enum op_kind kind;
	int pending;
	size_t n;
	struct op_item items[];
};

struct stage {
	struct agent *a;
	struct sw_http_req *req; /* NULL once answered early (the agent is shutting down) */
	char version[SW_PKG_VERSION_MAX + 1];
	char sha256[65];
	char url[URL_MAX + 1];
	uint64_t size, resumed_from;
	int64_t deadline_ms;
	unsigned timeout_ms;
	char *pub; /* the site's package key (PEM) */
	char part[PATH_MAX], dest[PATH_MAX], hashfile[PATH_MAX];
	uv_work_t work;
	unsigned status; /* of the answer, set by the work */
	char err[600];
};

static void path_in(char *out, size_t len, const char *dir, const char *name)
{
	if (sw_path_join(out, len, dir, name))
		out[0] = '\0';
}

int64_t upgrade_disk_free(const char *dir)
{
	struct statvfs vfs;

	if (statvfs(dir, &vfs) < 0)
		return SW_EIO;
	return (int64_t)vfs.f_bavail * (int64_t)vfs.f_frsize;
}

/* -- services held stopped ---------------------------------------------------------- */

static ssize_t held_index(const json_t *held, const char *name)
{
	size_t i;
	json_t *n;

	json_array_foreach(held, i, n)
	{
		if (strcmp(json_string_value(n), name) == 0)
			return (ssize_t)i;
	}
	return -1;
}

static void held_load(struct agent *a)
{
	char path[PATH_MAX], *text;
	size_t len, i;
	json_t *j = NULL, *names, *n;

	path_in(path, sizeof(path), a->dir, STOPPED_FILE);
	if (sw_file_read(path, 64 * 1024, &text, &len, NULL, 0))
		return;
	j = json_loadb(text, len, 0, NULL);
	free(text);
	a->upgrade->held = json_array();
	names = json_object_get(j, "services");
	json_array_foreach(names, i, n)
	{
		if (json_is_string(n) && sw_name_valid(json_string_value(n)) &&
		    held_index(a->upgrade->held, json_string_value(n)) < 0)
			json_array_append(a->upgrade->held, n);
	}
	json_decref(j);
	if (json_array_size(a->upgrade->held))
		sw_info("services stopped for an upgrade stay stopped until it starts them");
}

/* Writes the held names, or removes the file when there are none. */
static void held_save(struct agent *a)
{
	char path[PATH_MAX], *text;
	json_t *j;

	path_in(path, sizeof(path), a->dir, STOPPED_FILE);
	if (!a->upgrade->held || json_array_size(a->upgrade->held) == 0) {
		json_decref(a->upgrade->held);
		a->upgrade->held = NULL;
		if (unlink(path) < 0 && errno != ENOENT)
			sw_warn("cannot remove %s: %s", path, strerror(errno));
		return;
	}
	j = json_pack("{sO}", "services", a->upgrade->held);
	text = j ? sw_json_dump(j) : NULL;
	json_decref(j);
	if (!text || sw_file_write_atomic(path, text, strlen(text), 0600, NULL, 0))
		sw_warn("cannot record the services stopped for the upgrade in %s", path);
	free(text);
}

int upgrade_holds(const struct agent *a, const char *name)
{
	return a->upgrade && a->upgrade->held && held_index(a->upgrade->held, name) >= 0;
}

/* -- stop and start ----------------------------------------------------------------- */

/* A request that waited past its caller's deadline is not acted on, as with service
 * commands (api.c). */
static int expired(struct sw_http_req *req, int64_t deadline_ms)
{
	if (!deadline_ms || sw_now_ms() <= deadline_ms)
		return 0;
	sw_warn("ignoring %s that expired %lld ms before it arrived", sw_http_req_path(req),
		(long long)(sw_now_ms() - deadline_ms));
	sw_http_reply_error(req, 410, "the request expired before it arrived; not applied");
	return 1;
}

static unsigned wait_ms(int64_t deadline_ms, unsigned otherwise)
{
	int64_t left;

	if (!deadline_ms)
		return otherwise;
	left = deadline_ms - sw_now_ms();
	return left < 0 ? 0 : left > MAX_WAIT_MS ? MAX_WAIT_MS : (unsigned)left;
}

static int stopped(const struct op_item *it)
{
	return it->removed || it->state == SW_SVC_STOPPED;
}

static void op_reply(struct op *op)
{
	struct agent *a = op->a;
	json_t *body;

	if (op->kind == OP_STOP) {
		json_t *ok = json_array(), *failed = json_array();

		for (size_t i = 0; i < op->n; i++) {
			struct op_item *it = &op->items[i];
			ssize_t k;

			if (stopped(it)) {
				json_array_append_new(ok, json_string(it->name));
				continue;
			}
			json_array_append_new(failed, json_pack("{ss ss}", "service", it->name,
								"reason", it->reason));
			/* a service the stop gave up on runs on, and is no longer held */
			if (it->wants_running && a->upgrade->held &&
			    (k = held_index(a->upgrade->held, it->name)) >= 0)
				json_array_remove(a->upgrade->held, (size_t)k);
		}
		/* While the agent shuts down its services are being forgotten one by one;
		 * the file keeps what the stop meant. */
		if (!a->stopping)
			held_save(a);
		body = json_pack("{so so}", "stopped", ok, "failed", failed);
	} else {
		json_t *list = json_array();

		for (size_t i = 0; i < op->n; i++)
			json_array_append_new(
			    list,
			    json_pack("{ss ss ss ss sb}", "name", op->items[i].name, "role",
				      op->items[i].role, "state",
				      op->items[i].removed ? "removed"
							   : sw_svc_state_name(op->items[i].state),
				      "reason", op->items[i].reason, "wants_running",
				      op->items[i].wants_running));
		body = json_pack("{so}", "services", list);
	}
	sw_http_reply_json(op->req, 200, body);
	free(op);
}

static void op_done_one(struct op *op)
{
	if (--op->pending == 0)
		op_reply(op);
}

static void on_op_settled(struct service *svc, void *arg)
{
	struct op_item *it = arg;
	enum sw_svc_state st;

	if (!svc) {
		it->removed = 1;
		snprintf(it->reason, sizeof(it->reason), "the service's role was removed");
		op_done_one(it->op);
		return;
	}
	st = service_state(svc);
	it->state = st;
	it->wants_running = service_wants_running(svc);
	json_t *j = service_json(svc);
	const char *reason = json_string_value(json_object_get(j, "reason"));
	if (st == SW_SVC_STOPPING || st == SW_SVC_STARTING)
		snprintf(it->reason, sizeof(it->reason), "not settled by the deadline: %s",
			 reason ? reason : "");
	else
		snprintf(it->reason, sizeof(it->reason), "%s", reason ? reason : "");
	json_decref(j);
	op_done_one(it->op);
}

static struct op *op_new(struct agent *a, struct sw_http_req *req, enum op_kind kind, size_t n)
{
	struct op *op = calloc(1, sizeof(*op) + n * sizeof(op->items[0]));

	if (!op)
		return NULL;
	op->a = a;
	op->req = req;
	op->kind = kind;
	for (size_t i = 0; i < n; i++)
		op->items[i].op = op;
	/* one more than the waits, so waits that settle at once cannot answer early */
	op->pending = 1;
	return op;
}

static void op_wait(struct op *op, struct service *svc, unsigned timeout_ms)
{
	struct op_item *it = &op->items[op->n++];

	snprintf(it->name, sizeof(it->name), "%s", service_name(svc));
	snprintf(it->role, sizeof(it->role), "%s", service_role(svc));
	it->state = SW_SVC_UNKNOWN;
	it->wants_running = service_wants_running(svc);
	op->pending++;
	service_wait(svc, timeout_ms, on_op_settled, it);
}

static size_t count_services(struct agent *a)
{
	size_t n = 0;

	for (struct service *s = supervisor_first(a->sup); s; s = supervisor_next(s))
		n++;
	return n;
}

void upgrade_post_stop(struct sw_http_req *req, void *arg)
{
	struct agent *a = arg;
	int64_t grace_ms = -1, deadline_ms = 0;
	char err[200];
	json_t *j = sw_http_req_json(req), *k;
	struct service *svc, *next;
	struct op *op;
	unsigned timeout;
	int kill = 1;

	if (!j)
		return;
	k = json_object_get(j, "kill");
	if (k && !json_is_boolean(k))
		snprintf(err, sizeof(err), "kill must be true or false");
	if ((k && !json_is_boolean(k)) ||
	    sw_json_int(j, "grace_ms", 0, MAX_WAIT_MS, 0, &grace_ms, err, sizeof(err)) ||
	    sw_json_int(j, "deadline_ms", 0, INT64_MAX / 2, 0, &deadline_ms, err, sizeof(err))) {
		sw_http_reply_error(req, 400, "%s", err);
		json_decref(j);
		return;
	}
	kill = !k || json_is_true(k);
	json_decref(j);
	if (expired(req, deadline_ms))
		return;
	op = op_new(a, req, OP_STOP, count_services(a));
	if (!op) {
		sw_http_reply_error(req, 500, "out of memory");
		return;
	}
	/* The names go on record before any is stopped: an agent that dies mid-stop must
	 * not start them again when it comes back. */
	if (!a->upgrade->held)
		a->upgrade->held = json_array();
	for (svc = supervisor_first(a->sup); svc; svc = supervisor_next(svc))
		if (service_wants_running(svc) &&
		    held_index(a->upgrade->held, service_name(svc)) < 0)
			json_array_append_new(a->upgrade->held, json_string(service_name(svc)));
	held_save(a);
	sw_info("upgrade: stopping every service (grace %s, %s)",
		grace_ms < 0 ? "each service's own" : "as asked",
		kill ? "then SIGKILL" : "no SIGKILL");
	/* Without a deadline the supervisor's own bounds (grace, SIGKILL, "stuck") settle
	 * every service. */
	timeout = wait_ms(deadline_ms, MAX_WAIT_MS);
	for (svc = supervisor_first(a->sup); svc; svc = next) {
		next = supervisor_next(svc);
		if (!service_wants_running(svc))
			continue;
		service_stop_with(svc, grace_ms, kill);
		op_wait(op, svc, timeout);
	}
	op_done_one(op);
}

void upgrade_post_start(struct sw_http_req *req, void *arg)
{
	struct agent *a = arg;
	int64_t deadline_ms = 0;
	char err[200];
	json_t *j = sw_http_req_json(req), *held;
	struct service *svc;
	struct op *op;
	unsigned timeout;
	size_t i;
	json_t *n;

	if (!j)
		return;
	if (sw_json_int(j, "deadline_ms", 0, INT64_MAX / 2, 0, &deadline_ms, err, sizeof(err))) {
		sw_http_reply_error(req, 400, "%s", err);
		json_decref(j);
		return;
	}
	json_decref(j);
	if (expired(req, deadline_ms))
		return;
	op = op_new(a, req, OP_START, count_services(a));
	if (!op) {
		sw_http_reply_error(req, 500, "out of memory");
		return;
	}
	timeout = wait_ms(deadline_ms, START_WAIT_MS);
	held = a->upgrade->held;
	if (!held) {
		/* nothing held: the answer says how the services are, and changes nothing;
		 * one whose role went is no longer one of them */
		for (svc = supervisor_first(a->sup); svc; svc = supervisor_next(svc))
			if (!service_removing(svc))
				op_wait(op, svc, timeout);
		op_done_one(op);
		return;
	}
	/* Released before the starts, so nothing that runs meanwhile holds them back. */
	a->upgrade->held = NULL;
	held_save(a);
	sw_info("upgrade: starting the services it stopped");
	json_array_foreach(held, i, n)
	{
		svc = supervisor_find(a->sup, json_string_value(n));
		if (!svc || service_removing(svc))
			continue; /* its role is no longer wanted */
		service_start(svc);
		op_wait(op, svc, timeout);
	}
	json_decref(held);
	op_done_one(op);
}

/* -- staging ---------------------------------------------------------------------- */

static void stage_free(struct stage *st)
{
	free(st->pub);
	free(st);
}

/* Answers a staging and forgets it. */
static void stage_reply(struct stage *st, unsigned status, json_t *body)
{
	struct agent *a = st->a;

	if (a->upgrade && a->upgrade->stage == st)
		a->upgrade->stage = NULL;
	if (st->req)
		sw_http_reply_json(st->req, status, body);
	else
		json_decref(body);
	stage_free(st);
}

static void stage_fail(struct stage *st, unsigned status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void stage_fail(struct stage *st, unsigned status, const char *fmt, ...)
{
	char msg[700];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	sw_warn("staging version %s: %s", st->version, msg);
	stage_reply(st, status, json_pack("{ss}", "error", msg));
}

static int file_sha256(const char *path, char out[65], char *err, size_t errlen)
{
	unsigned char buf[65536], d[32];
	gnutls_hash_hd_t h;
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0) {
		sw_seterr(err, errlen, "cannot read %s: %s", path, strerror(errno));
		return SW_EIO;
	}
	if (gnutls_hash_init(&h, GNUTLS_DIG_SHA256) < 0) {
		close(fd);
		sw_seterr(err, errlen, "cannot compute a SHA-256");
		return SW_ECRYPTO;
	}
	while ((n = read(fd, buf, sizeof(buf))) > 0 || (n < 0 && errno == EINTR))
		if (n > 0)
			gnutls_hash(h, buf, (size_t)n);
	gnutls_hash_deinit(h, d);
	close(fd);
	if (n < 0) {
		sw_seterr(err, errlen, "cannot read %s: %s", path, strerror(errno));
		return SW_EIO;
	}
	for (int i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", d[i]);
	return 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path) < 0 && errno != ENOENT ? -1 : 0;
}

static int rm_tree(const char *path)
{
	return nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS) < 0 && errno != ENOENT ? -1 : 0;
}

/* On the thread pool: the package's hash, then its verification and unpacking. Only
 * files are touched here; the answer is made on the loop. */
static void stage_work(uv_work_t *w)
{
	struct stage *st = w->data;
	struct sw_pkg_manifest *m = NULL;
	char hex[65], e[512];
	int rc;

	if ((rc = file_sha256(st->part, hex, e, sizeof(e)))) {
		st->status = 500;
		snprintf(st->err, sizeof(st->err), "%s", e);
		return;
	}
	if (strcmp(hex, st->sha256) != 0) {
		unlink(st->part);
		st->status = 422;
		snprintf(st->err, sizeof(st->err),
			 PKG_REFUSED "its SHA-256 is %s, not the %s announced", hex, st->sha256);
		return;
	}
	/* A package holds one version: staged under another name it would run as one
	 * thing and report another. */
	rc = sw_pkg_verify(st->part, st->pub, &m, e, sizeof(e));
	if (!rc && strcmp(m->version, st->version) != 0) {
		rc = SW_EDENIED;
		snprintf(e, sizeof(e), "it holds version %s, not %s", m->version, st->version);
	}
	sw_pkg_manifest_free(m);
	if (rc)
		goto refused;
	/* The record goes first: a tree without it is never taken for this package. */
	unlink(st->hashfile);
	if (rm_tree(st->dest)) {
		st->status = 500;
		snprintf(st->err, sizeof(st->err), "cannot remove the earlier %s: %s", st->dest,
			 strerror(errno));
		return;
	}
	rc = sw_pkg_extract(st->part, st->pub, st->dest, e, sizeof(e));
refused:
	if (rc == SW_EDENIED || rc == SW_EINVAL || rc == SW_ETOOBIG) {
		unlink(st->part); /* it has the announced hash: fetching it again cannot help */
		st->status = 422;
		snprintf(st->err, sizeof(st->err), "%s%s",
			 strncmp(e, PKG_REFUSED, PKG_REFUSED_LEN) ? PKG_REFUSED : "", e);
		return;
	}
	if (rc) {
		st->status = 500;
		snprintf(st->err, sizeof(st->err), "cannot unpack the package: %s", e);
		return;
	}
	if (sw_file_write_atomic(st->hashfile, st->sha256, 64, 0644, e, sizeof(e))) {
		st->status = 500;
		snprintf(st->err, sizeof(st->err), "cannot record the package's hash: %s", e);
		return;
	}
	unlink(st->part);
	st->status = 200;
}

static void stage_after(uv_work_t *w, int status)
{
	struct stage *st = w->data;

	if (status == UV_ECANCELED) {
		st->status = 503;
		snprintf(st->err, sizeof(st->err), "the agent is shutting down");
	}
	if (st->status != 200) {
		stage_fail(st, st->status, "%s", st->err);
		return;
	}
	sw_info("staged version %s (%" PRIu64 " bytes, %" PRIu64 " of them from an earlier "
		"download)",
		st->version, st->size, st->resumed_from);
	stage_reply(st, 200,
		    json_pack("{ss sb sI sI}", "version", st->version, "staged", 1, "bytes",
			      (json_int_t)st->size, "resumed_from", (json_int_t)st->resumed_from));
}

static void stage_unpack(struct stage *st)
{
	st->work.data = st;
	if (uv_queue_work(st->a->loop, &st->work, stage_work, stage_after) < 0)
		stage_fail(st, 500, "cannot queue the package's checks");
}

static void on_downloaded(const struct sw_http_download_result *res, void *arg)
{
	struct stage *st = arg;

	if (!st->req) {
		stage_free(st);
		return;
	}
	st->resumed_from = res->resumed_from;
	if (res->status == 0 && res->code == SW_ETOOBIG) {
		unlink(st->part);
		stage_fail(st, 502, "download failed: %s", res->error);
		return;
	}
	if (res->status == 0) {
		/* SW_EIO: the part could not be written here */
		unsigned status = res->code == SW_EIO ? 500 : sw_http_gateway_status(res->code);

		stage_fail(st, status, "download failed: %s", res->error);
		return;
	}
	if (res->status != 200 && res->status != 206) {
		json_t *j = json_loadb(res->body, res->len, 0, NULL);
		const char *why = json_string_value(json_object_get(j, "error"));

		stage_fail(st, 502, "download failed: %s answered %ld: %.200s", st->url,
			   res->status, why ? why : res->body);
		json_decref(j);
		return;
	}
	if (res->size != st->size) {
		stage_fail(st, 502,
			   "download incomplete: %" PRIu64 " of %" PRIu64
			   " bytes; a new staging resumes it",
			   res->size, st->size);
		return;
	}
	stage_unpack(st);
}

static void stage_download(struct stage *st)
{
	struct stat sb;
	int rc;

	if (stat(st->part, &sb) == 0 && (uint64_t)sb.st_size == st->size) {
		st->resumed_from = st->size; /* complete already: only the checks are left */
		stage_unpack(st);
		return;
	}
	st->timeout_ms = wait_ms(st->deadline_ms, DOWNLOAD_MS);
	if (st->timeout_ms == 0) {
		stage_fail(st, 504, "download timed out after 0 s");
		return;
	}
	sw_info("staging version %s from %s", st->version, st->url);
	rc = sw_http_client_download(st->a->bulk, st->url, st->part, st->size, st->timeout_ms,
				     on_downloaded, st);
	if (rc)
		stage_fail(st, 500, "cannot download into %s: %s", st->part, sw_strerror(rc));
}

static void on_key(const struct sw_http_result *res, void *arg)
{
	struct stage *st = arg;
	char path[PATH_MAX], err[300];
	const char *pem = NULL;
	json_t *j = NULL;

	if (!st->req) {
		stage_free(st);
		return;
	}
	if (res->status != 200) {
		if (res->status)
			stage_fail(st, 502,
				   "cannot get the site's package key from the server: it "
				   "answered %ld: %.200s",
				   res->status, res->body);
		else
			stage_fail(st, 502, "cannot get the site's package key from the server: %s",
				   res->error);
		return;
	}
	if (sw_json_parse_object(res->body, res->len, &j, NULL, 0) ||
	    sw_json_str(j, "pem", KEY_MAX, 1, &pem, NULL, 0) ||
	    strncmp(pem, "-----BEGIN PUBLIC KEY-----", 26) != 0) {
		json_decref(j);
		stage_fail(st, 502, "the server's package key is not a PEM public key");
		return;
	}
	path_in(path, sizeof(path), st->a->dir, KEY_FILE);
	st->pub = strdup(pem);
	json_decref(j);
	if (!st->pub) {
		stage_fail(st, 500, "out of memory");
		return;
	}
	if (sw_file_write_atomic(path, st->pub, strlen(st->pub), 0644, err, sizeof(err))) {
		stage_fail(st, 500, "cannot keep the site's package key: %s", err);
		return;
	}
	sw_info("kept the site's package key in %s", path);
	stage_download(st);
}

/* 1 if versions/V is what runs, or what `current` names. */
static int version_in_use(const struct agent *a, const char *version)
{
	char cur[PATH_MAX], link[PATH_MAX], want[SW_PKG_VERSION_MAX + 16];
	ssize_t n;

	if (strcmp(version, a->version) == 0)
		return 1;
	path_in(cur, sizeof(cur), a->dir, SW_INSTALL_CURRENT);
	n = readlink(cur, link, sizeof(link) - 1);
	if (n <= 0)
		return 0;
	link[n] = '\0';
	snprintf(want, sizeof(want), SW_INSTALL_VERSIONS "/%s", version);
	return strcmp(link, want) == 0;
}

static int staged_as(const char *hashfile, const char *sha256)
{
	char *text = NULL;
	size_t len;
	int same;

	if (sw_file_read(hashfile, 1024, &text, &len, NULL, 0))
		return 0;
	same = len >= 64 && strncmp(text, sha256, 64) == 0;
	free(text);
	return same;
}

void upgrade_post_stage(struct sw_http_req *req, void *arg)
{
	struct agent *a = arg;
	const char *version = NULL, *sha = NULL, *url = NULL;
	int64_t size = 0, deadline_ms = 0, avail;
	struct sw_stage_req sr;
	char err[200], versions[PATH_MAX], name[SW_PKG_VERSION_MAX + 16],
	    url_key[sizeof(a->server) + 32];
	json_t *j = sw_http_req_json(req);
	struct stage *st;
	struct stat sb;

	if (!j)
		return;
	if (sw_proto_stage_req_parse(j, &sr, err, sizeof(err))) {
		sw_http_reply_error(req, 400, "%s", err);
		json_decref(j);
		return;
	}
	version = sr.version;
	sha = sr.sha256;
	url = sr.url;
	size = sr.size;
	deadline_ms = sr.deadline_ms;
	st = calloc(1, sizeof(*st));
	if (!st) {
		sw_http_reply_error(req, 500, "out of memory");
		json_decref(j);
		return;
	}
	st->a = a;
	st->req = req;
	snprintf(st->version, sizeof(st->version), "%s", version);
	snprintf(st->sha256, sizeof(st->sha256), "%s", sha);
	snprintf(st->url, sizeof(st->url), "%s", url);
	st->size = (uint64_t)size;
	st->deadline_ms = deadline_ms;
	json_decref(j);
	if (expired(req, deadline_ms)) {
		stage_free(st);
		return;
	}
	path_in(versions, sizeof(versions), a->dir, SW_INSTALL_VERSIONS);
	snprintf(name, sizeof(name), ".%s.part", st->version);
	path_in(st->part, sizeof(st->part), versions, name);
	snprintf(name, sizeof(name), ".%s.sha256", st->version);
	path_in(st->hashfile, sizeof(st->hashfile), versions, name);
	path_in(st->dest, sizeof(st->dest), versions, st->version);
	if (!st->part[0] || !st->hashfile[0] || !st->dest[0]) {
		stage_free(st);
		sw_http_reply_error(req, 400, "the agent's folder name is too long");
		return;
	}
	if (sw_install_has(a->dir, st->version) && staged_as(st->hashfile, st->sha256)) {
		sw_http_reply_json(req, 200,
				   json_pack("{ss sb sI sI}", "version", st->version, "staged", 1,
					     "bytes", (json_int_t)st->size, "resumed_from",
					     (json_int_t)0));
		stage_free(st);
		return;
	}
	if (a->upgrade->stage) {
		sw_http_reply_error(req, 503,
				    "version %s is being staged; try again when it is done",
				    a->upgrade->stage->version);
		stage_free(st);
		return;
	}
	if (sw_install_has(a->dir, st->version) && version_in_use(a, st->version)) {
		sw_http_reply_error(req, 409,
				    "version %s is in use here and was staged from another "
				    "package; it is not replaced",
				    st->version);
		stage_free(st);
		return;
	}
	avail = upgrade_disk_free(a->dir);
	if (avail >= 0 && (uint64_t)avail < st->size * DISK_FACTOR) {
		sw_http_reply_error(req, 507,
				    "not enough disk space: need %" PRIu64 " bytes, have %" PRId64,
				    st->size * DISK_FACTOR, avail);
		stage_free(st);
		return;
	}
	if (mkdir(versions, 0755) < 0 && errno != EEXIST) {
		sw_http_reply_error(req, 500, "cannot create %s: %s", versions, strerror(errno));
		stage_free(st);
		return;
	}
	/* A part larger than the package is not a beginning of it. */
	if (stat(st->part, &sb) == 0 && (uint64_t)sb.st_size > st->size)
		unlink(st->part);
	a->upgrade->stage = st;
	if (sw_pem_read(a->dir, KEY_FILE, &st->pub, NULL, 0) == 0) {
		stage_download(st);
		return;
	}
	/* The first staging fetches the key the packages are checked against. */
	snprintf(url_key, sizeof(url_key), "%s/v1/site/signing-key", a->server);
	if (sw_http_client_request(a->client, "GET", url_key, NULL, 0, a->request_timeout_ms,
				   on_key, st))
		stage_fail(st, 500, "cannot ask the server for the site's package key");
}

/* A staging under way is answered now; its download or unpacking ends later, answered
 * by no one, and a new staging resumes from what it left. */
static void stage_abandon(struct agent *a, const char *why)
{
	struct stage *st = a->upgrade->stage;

	if (st && st->req) {
		sw_http_reply_error(st->req, 503, "%s; stage again", why);
		st->req = NULL;
		a->upgrade->stage = NULL;
	}
}

/* -- switch, rollback, re-exec ------------------------------------------------------ */

static void on_restart_timer(uv_timer_t *t)
{
	struct agent *a = t->data;

	/* Answers owed over the channel are taken first (the switch's own among them), so
	 * the server hears them from this process rather than waiting out their deadlines;
	 * for a bounded time, as a server away must not hold the restart. */
	if (channel_unsent(a) && sw_mono_ms() - a->upgrade->restart_asked < RESTART_DRAIN_MS) {
		uv_timer_start(&a->upgrade->restart_timer, on_restart_timer, 50, 0);
		return;
	}
	sw_info("restarting as %s", a->restart_exe);
	uv_stop(a->loop);
}

/* The main loop winds down as on SIGTERM, services left running; then upgrade_exec. */
static void restart_soon(struct agent *a, struct sw_http_req *req, const char *version)
{
	a->upgrade->restarting = 1;
	/* answered before the delay, so that the answer too goes out */
	stage_abandon(a, "the agent is restarting");
	sw_http_reply_json(req, 202, json_pack("{ss sb}", "version", version, "restarting", 1));
	a->upgrade->restart_asked = sw_mono_ms();
	uv_timer_start(&a->upgrade->restart_timer, on_restart_timer, RESTART_DELAY_MS, 0);
}

static int version_arg(struct sw_http_req *req, char *out, size_t len)
{
	json_t *j = sw_http_req_json(req);
	const char *v = NULL;
	char err[200];

	if (!j)
		return -1;
	if (sw_json_str(j, "version", SW_PKG_VERSION_MAX, 1, &v, err, sizeof(err)) ||
	    !sw_version_valid(v)) {
		sw_http_reply_error(req, 400, "%s", v ? "not a valid version" : err);
		json_decref(j);
		return -1;
	}
	snprintf(out, len, "%s", v);
	json_decref(j);
	return 0;
}

static int not_restarting(struct agent *a, struct sw_http_req *req)
{
	if (!a->upgrade->restarting)
		return 1;
	sw_http_reply_error(req, 409, "the agent is restarting already");
	return 0;
}

void upgrade_post_switch(struct sw_http_req *req, void *arg)
{
	struct agent *a = arg;
	char v[SW_PKG_VERSION_MAX + 1], exe[PATH_MAX], rel[PATH_MAX], err[300];

	if (version_arg(req, v, sizeof(v)))
		return;
	if (strcmp(v, a->version) == 0) {
		sw_http_reply_json(req, 200, json_pack("{ss sb}", "version", v, "restarting", 0));
		return;
	}
	if (!not_restarting(a, req))
		return;
	if (a->upgrade->stage && strcmp(a->upgrade->stage->version, v) == 0) {
		sw_http_reply_error(req, 503,
				    "version %s is being staged; try again when it is done", v);
		return;
	}
	if (!sw_install_has(a->dir, v)) {
		sw_http_reply_error(req, 409, "version %s is not staged", v);
		return;
	}
	snprintf(rel, sizeof(rel), SW_INSTALL_VERSIONS "/%s/bin/" AGENT_PROG, v);
	path_in(exe, sizeof(exe), a->dir, rel);
	if (access(exe, X_OK) < 0) {
		sw_http_reply_error(req, 409, "version %s has no bin/" AGENT_PROG " to run", v);
		return;
	}
	if (sw_install_switch(a->dir, v, err, sizeof(err)) ||
	    sw_install_exe(a->dir, AGENT_PROG, a->restart_exe, sizeof(a->restart_exe))) {
		sw_http_reply_error(req, 500, "cannot switch to version %s: %s", v, err);
		return;
	}
	snprintf(a->restart_back, sizeof(a->restart_back), "%s", a->version);
	sw_info("upgrade: switched to version %s", v);
	restart_soon(a, req, v);
}

void upgrade_post_rollback(struct sw_http_req *req, void *arg)
{
	struct agent *a = arg;
	char v[SW_PKG_VERSION_MAX + 1], err[300];
	int rc;

	if (version_arg(req, v, sizeof(v)))
		return;
	if (strcmp(v, a->version) == 0) {
		sw_http_reply_json(req, 200, json_pack("{ss sb}", "version", v, "restarting", 0));
		return;
	}
	if (!not_restarting(a, req))
		return;
	rc = sw_install_switch_back(a->dir, v, AGENT_PROG, a->restart_exe, sizeof(a->restart_exe),
				    err, sizeof(err));
	if (rc) {
		a->restart_exe[0] = '\0';
		sw_http_reply_error(req, sw_http_status(rc), "%s", err);
		return;
	}
	a->restart_back[0] = '\0';
	sw_info("upgrade: rolling back to version %s", v);
	restart_soon(a, req, v);
}

/* Nothing but stdin, stdout and stderr may reach the new image: a socket that did would
 * keep the API's port bound and the new agent could not listen on it. libuv, libcurl
 * and libmicrohttpd open theirs close-on-exec; this makes sure of every descriptor. */
static void cloexec_all(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;

	if (!d)
		return;
	while ((de = readdir(d))) {
		int fd = atoi(de->d_name);

		if (fd > 2 && fd != dirfd(d))
			fcntl(fd, F_SETFD, fcntl(fd, F_GETFD) | FD_CLOEXEC);
	}
	closedir(d);
}

int upgrade_exec(struct agent *a)
{
	char exe[PATH_MAX], err[300];

	char interval[16];

	cloexec_all();
	/* The next program starts with the interval the server set, not the default, so
	 * its backoff stays short if the server is away when it starts. */
	snprintf(interval, sizeof(interval), "%u", a->heartbeat_s);
	setenv(HEARTBEAT_ENV, interval, 1);
	execv(a->restart_exe, a->argv);
	sw_err("cannot run %s: %s", a->restart_exe, strerror(errno));
	if (a->restart_back[0]) {
		/* a failed switch goes back to the version that ran */
		if (sw_install_switch_back(a->dir, a->restart_back, AGENT_PROG, exe, sizeof(exe),
					   err, sizeof(err)) == 0) {
			sw_warn("switched back to version %s", a->restart_back);
			execv(exe, a->argv);
			sw_err("cannot run %s: %s", exe, strerror(errno));
		} else {
			sw_err("cannot switch back to version %s: %s", a->restart_back, err);
		}
	} else if (a->self_exe[0]) {
		/* a failed rollback runs on as the version that ran */
		if (sw_install_has(a->dir, a->version))
			sw_install_switch(a->dir, a->version, err, sizeof(err));
		execv(a->self_exe, a->argv);
		sw_err("cannot run %s: %s", a->self_exe, strerror(errno));
	}
	return SW_EIO;
}

/* -- status and life cycle -------------------------------------------------------- */

static int cmp_versions(const void *x, const void *y)
{
	return sw_version_cmp(json_string_value(*(json_t *const *)x),
			      json_string_value(*(json_t *const *)y));
}

json_t *upgrade_status(const struct agent *a)
{
	char path[PATH_MAX], *text = NULL;
	json_t *staged = json_array(), *rec = NULL, *prev = NULL, *list[256];
	size_t n = 0;
	struct dirent *de;
	DIR *d;

	path_in(path, sizeof(path), a->dir, SW_INSTALL_VERSIONS);
	d = opendir(path);
	while (d && (de = readdir(d)) && n < SW_ARRAY_LEN(list))
		if (de->d_name[0] != '.' && sw_install_has(a->dir, de->d_name))
			list[n++] = json_string(de->d_name);
	if (d)
		closedir(d);
	qsort(list, n, sizeof(list[0]), cmp_versions);
	for (size_t i = 0; i < n; i++)
		json_array_append_new(staged, list[i]);
	path_in(path, sizeof(path), a->dir, SW_INSTALL_RECORD);
	if (sw_file_read(path, 64 * 1024, &text, NULL, NULL, 0) == 0 &&
	    sw_json_parse_object(text, strlen(text), &rec, NULL, 0) == 0) {
		prev = json_object_get(rec, "previous");
		if (!json_is_string(prev))
			prev = NULL;
	}
	free(text);
	json_t *j = json_pack("{so sO}", "staged", staged, "previous", prev ? prev : json_null());
	json_decref(rec);
	return j;
}

int upgrade_init(struct agent *a)
{
	a->upgrade = calloc(1, sizeof(*a->upgrade));
	if (!a->upgrade)
		return SW_ENOMEM;
	uv_timer_init(a->loop, &a->upgrade->restart_timer);
	a->upgrade->restart_timer.data = a;
	held_load(a);
	return 0;
}

void upgrade_stop(struct agent *a)
{
	if (!a->upgrade)
		return;
	stage_abandon(a, "the agent is shutting down");
	uv_timer_stop(&a->upgrade->restart_timer);
	uv_close((uv_handle_t *)&a->upgrade->restart_timer, NULL);
}

void upgrade_free(struct agent *a)
{
	if (!a->upgrade)
		return;
	json_decref(a->upgrade->held);
	free(a->upgrade);
	a->upgrade = NULL;
}
