/*
 * Packages on the site server: the administrator's package verified and stored in
 * packages/ by its hash, served to agents (with ranges, so a cut download resumes), and
 * the site's signing key they check it with. Verification reads the whole package, so
 * it runs on the thread pool with a deadline: a large package delays no heartbeat.
 */
#include "upgrade.h"

#include "error.h"
#include "log.h"
#include "util.h"
#include "work.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Verification and copy: a fixed part, and a millisecond per this many bytes. */
#define STORE_BASE_MS  10000
#define STORE_BYTES_MS 4096 /* 4 MB/s, read twice */

int site_path(const struct server *s, char *out, size_t len, const char *fmt, const char *arg)
{
	char name[PATH_MAX];

	snprintf(name, sizeof(name), fmt, arg);
	return sw_path_join(out, len, s->dir, name);
}

int package_path(const struct server *s, const char *sha, char *out, size_t len)
{
	return site_path(s, out, len, "packages/%s.pkg", sha);
}

void package_signing_key(struct sw_http_req *req, void *arg)
{
	struct server *s = arg;
	char err[300], *pem = NULL;

	if (sw_pem_read(s->dir, "signing.pub", &pem, err, sizeof(err))) {
		sw_http_reply_error(req, 500, "%s", err);
		return;
	}
	sw_http_reply_json(req, 200, json_pack("{ss}", "pem", pem));
	free(pem);
}

void package_get(struct sw_http_req *req, void *arg)
{
	struct server *s = arg;
	const char *sha = sw_http_req_tail(req);
	char path[PATH_MAX];

	if (strlen(sha) != 64 || strspn(sha, "0123456789abcdef") != 64) {
		sw_http_reply_error(req, 400, "a package is named by its SHA-256");
		return;
	}
	package_path(s, sha, path, sizeof(path));
	sw_http_reply_path(req, path, NULL);
}

struct store {
	struct server *s;
	package_done done;
	void *arg;
	char src[PATH_MAX], dir[PATH_MAX], path[PATH_MAX];
	char *pub;
	struct sw_pkg_manifest *m;
	int rc;
	unsigned bound_ms;
	char err[600];
};

/* On the thread pool: nothing here touches the server. */
static void store_run(void *arg)
{
	struct store *t = arg;
	char tmp[PATH_MAX + 8];

	if ((t->rc = sw_pkg_verify(t->src, t->pub, &t->m, t->err, sizeof(t->err))))
		return;
	snprintf(t->path, sizeof(t->path), "%s/%s.pkg", t->dir, t->m->package_sha256);
	if (access(t->path, R_OK) == 0)
		return;
	snprintf(tmp, sizeof(tmp), "%s.new", t->path);
	if ((t->rc = sw_file_copy(t->src, tmp, t->err, sizeof(t->err))) || rename(tmp, t->path)) {
		unlink(tmp);
		if (!t->rc) {
			snprintf(t->err, sizeof(t->err), "%s: %s", t->path, strerror(errno));
			t->rc = SW_EIO;
		}
	}
}

static void store_done(void *arg, int timed_out)
{
	struct store *t = arg;

	if (timed_out) {
		snprintf(t->err, sizeof(t->err),
			 "verifying and storing it did not finish within %u s", t->bound_ms / 1000);
		t->done(t->s, SW_ETIMEDOUT, NULL, t->err, t->arg);
		return;
	}
	t->done(t->s, t->rc, t->rc ? NULL : t->m, t->rc ? t->err : NULL, t->arg);
	t->m = NULL; /* the callee's now */
}

static void store_release(void *arg)
{
	struct store *t = arg;

	sw_pkg_manifest_free(t->m);
	free(t->pub);
	free(t);
}

int package_store(struct server *s, const char *src, package_done done, void *arg)
{
	struct store *t = calloc(1, sizeof(*t));
	char err[300];
	struct stat st;
	int rc;

	if (!t)
		return SW_ENOMEM;
	t->s = s;
	t->done = done;
	t->arg = arg;
	snprintf(t->src, sizeof(t->src), "%s", src);
	site_path(s, t->dir, sizeof(t->dir), "packages", NULL);
	mkdir(t->dir, 0755);
	if ((rc = sw_pem_read(s->dir, "signing.pub", &t->pub, err, sizeof(err)))) {
		sw_err("packages: %s", err);
		store_release(t);
		return rc;
	}
	t->bound_ms = STORE_BASE_MS;
	if (stat(src, &st) == 0 && st.st_size > 0)
		t->bound_ms += (unsigned)((uint64_t)st.st_size / STORE_BYTES_MS);
	if ((rc = sw_work_start(s->loop, t->bound_ms, store_run, store_done, store_release, t)))
		store_release(t);
	return rc;
}
