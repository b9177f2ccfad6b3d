/*
 * A distribution point: the agent of a system with the role distribution-point serves
 * the site's content (packages of deployments) to the other agents near it, so a
 * deployment to many machines does not fetch every copy from the site server.
 *
 *   GET /v1/content/SHA   the package named by its SHA-256, with ranges; agents only
 *
 * It listens on [distribution] listen (every address, port 8472, when it does not
 * say), with the agent's own certificate: clients check it is this system, and it
 * takes only agents' certificates of the site's CA. Content is a pull-through cache in
 * <dir>/dp-cache: a package asked for and not there is fetched from the site server
 * (resuming, bounded), kept only when its bytes have the hash it is named by, and then
 * served to every request that waited for it. Requests wait at most FETCH_MS; the
 * client's own bound is shorter, and it falls back to the site server. A removed
 * system is refused: the site server's heartbeat replies list the certificates it
 * revoked, so one is refused here within a heartbeat of its removal.
 */
#include "agent.h"

#include "error.h"
#include "log.h"
#include "proto.h"
#include "strmap.h"
#include "util.h"
#include "work.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DP_PORT	    "8472"
#define FETCH_MS    (30 * 60 * 1000) /* one package from the site server */
#define CONTENT_MAX ((uint64_t)2 << 30)
#define WAITERS_MAX 1024

struct fetch {
	struct fetch *next;
	struct dp *dp;
	char sha[65], part[PATH_MAX + 80], path[PATH_MAX + 80];
	struct sw_http_req *waiters[WAITERS_MAX];
	size_t nwaiters;
	char got[65], err[300];
	int rc;
};

struct dp {
	struct agent *a;
	struct sw_http_server *http;
	char listen[300], dir[PATH_MAX + 16];
	struct fetch *fetches;
	struct sw_strmap *revoked; /* the serials of removed systems' certificates */
	int closing;		  /* the role was removed: it stops once its downloads have ended */
	uint64_t served, fetched; /* bytes sent to agents, and from the site server */
};

static void serve(struct dp *dp, struct sw_http_req *req, const char *path, const char *sha)
{
	char who[128];
	uint64_t sent = 0;

	/* the request is the server's once answered */
	snprintf(who, sizeof(who), "%s", sw_http_req_identity(req)->cn);
	if (sw_http_reply_path(req, path, &sent) == 0) {
		dp->served += sent;
		sw_info("distribution point: %.12s to %s (%" PRIu64 " bytes; %" PRIu64
			" served in all, %" PRIu64 " fetched from the site server)",
			sha, who, sent, dp->served, dp->fetched);
	}
}

static void fetch_end(struct fetch *f, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fetch_end(struct fetch *f, int status, const char *fmt, ...)
{
	struct dp *dp = f->dp;
	struct fetch **pp;
	char why[400] = "";
	va_list ap;

	if (fmt) {
		va_start(ap, fmt);
		vsnprintf(why, sizeof(why), fmt, ap);
		va_end(ap);
		sw_warn("distribution point: %.12s: %s", f->sha, why);
	}
	for (size_t i = 0; i < f->nwaiters; i++)
		if (status == 200)
			serve(dp, f->waiters[i], f->path, f->sha);
		else
			sw_http_reply_error(f->waiters[i], status,
					    "the distribution point has not got it: %s", why);
	for (pp = &dp->fetches; *pp; pp = &(*pp)->next)
		if (*pp == f) {
			*pp = f->next;
			break;
		}
	free(f);
	if (dp->closing && !dp->fetches)
		dp_stop(dp->a);
}

static void check_run(void *arg)
{
	struct fetch *f = arg;

	f->rc = sw_file_sha256(f->part, f->got, NULL, f->err, sizeof(f->err));
}

static void check_done(void *arg, int timed_out)
{
	struct fetch *f = arg;

	if (timed_out || f->rc) {
		fetch_end(f, 502, "%s", timed_out ? "its hash took too long" : f->err);
		return;
	}
	if (strcmp(f->got, f->sha) != 0) {
		unlink(f->part);
		fetch_end(f, 502, "the site server's copy does not have the hash it is named by");
		return;
	}
	if (rename(f->part, f->path)) {
		fetch_end(f, 500, "cannot keep it: %s", strerror(errno));
		return;
	}
	fetch_end(f, 200, NULL);
}

static void fetched(const struct sw_http_download_result *res, void *arg)
{
	struct fetch *f = arg;

	if (f->dp->a->stopping) {
		fetch_end(f, 503, "the agent is stopping");
		return;
	}
	if (res->status != 200 && res->status != 206) {
		fetch_end(f, 502, "from the site server: %s",
			  res->status ? (res->len ? res->body : "refused") : res->error);
		return;
	}
	f->dp->fetched += res->size - res->resumed_from;
	if (sw_work_start(f->dp->a->loop, 60000, check_run, check_done, NULL, f))
		fetch_end(f, 500, "cannot check it now");
}

static void dp_get(struct sw_http_req *req, void *arg)
{
	struct dp *dp = arg;
	const char *sha = sw_http_req_tail(req);
	char path[PATH_MAX + 80], url[600];
	struct fetch *f;
	struct stat st;

	if (strlen(sha) != 64 || strspn(sha, "0123456789abcdef") != 64) {
		sw_http_reply_error(req, 400, "content is named by its SHA-256");
		return;
	}
	snprintf(path, sizeof(path), "%s/%s.deb", dp->dir, sha);
	if (stat(path, &st) == 0) {
		serve(dp, req, path, sha);
		return;
	}
	for (f = dp->fetches; f && strcmp(f->sha, sha) != 0; f = f->next)
		;
	if (f) {
		if (f->nwaiters == WAITERS_MAX) {
			sw_http_reply_busy(req, 5,
					   "too many wait for this package here; ask again");
			return;
		}
		f->waiters[f->nwaiters++] = req;
		return;
	}
	if (!(f = calloc(1, sizeof(*f)))) {
		sw_http_reply_error(req, 500, "out of memory");
		return;
	}
	f->dp = dp;
	snprintf(f->sha, sizeof(f->sha), "%s", sha);
	snprintf(f->path, sizeof(f->path), "%s", path);
	snprintf(f->part, sizeof(f->part), "%s/%s.part", dp->dir, sha);
	f->waiters[f->nwaiters++] = req;
	f->next = dp->fetches;
	dp->fetches = f;
	snprintf(url, sizeof(url), "%s/v1/content/%s", dp->a->server, sha);
	sw_info("distribution point: fetching %.12s from the site server for %s", sha,
		sw_http_req_identity(req)->cn);
	if (sw_http_client_download(dp->a->bulk, url, f->part, CONTENT_MAX, FETCH_MS, fetched, f))
		fetch_end(f, 500, "cannot start its download");
}

static const struct sw_http_route routes[] = {
    {"GET", "/v1/content/*", SW_HTTP_AGENT, dp_get, 0},
};

static int dp_is_revoked(void *arg, const char *serial)
{
	const struct dp *dp = arg;

	return dp->revoked && sw_strmap_get(dp->revoked, serial) != NULL;
}

void dp_revoked(struct agent *a, const json_t *list)
{
	struct sw_strmap *map;
	char err[200];

	if (!a->dp || !list)
		return;
	if (sw_proto_revoked_parse(list, &map, err, sizeof(err))) {
		sw_strmap_free(map);
		sw_warn("distribution point: the site server's list of revoked certificates: %s; "
			"keeping the one before",
			err);
		return;
	}
	sw_strmap_free(a->dp->revoked);
	a->dp->revoked = map;
}

static int dp_open(struct agent *a, char *err, size_t errlen)
{
	const char *listen = sw_conf_get(a->conf, "distribution", "listen", "0.0.0.0:" DP_PORT);
	struct dp *dp = calloc(1, sizeof(*dp));
	struct sw_http_server_opts o = {.cert_pem = a->cert_pem,
					.key_pem = a->key_pem,
					.ca_pem = a->ca_pem,
					.routes = routes,
					.nroutes = SW_ARRAY_LEN(routes),
					.is_revoked = dp_is_revoked,
					.max_connections = 2000};
	int rc;

	if (!dp)
		return SW_ENOMEM;
	dp->a = a;
	snprintf(dp->listen, sizeof(dp->listen), "%s", listen);
	snprintf(dp->dir, sizeof(dp->dir), "%s/dp-cache", a->dir);
	if (mkdir(dp->dir, 0700) < 0 && errno != EEXIST) {
		sw_seterr(err, errlen, "cannot create %s: %s", dp->dir, strerror(errno));
		free(dp);
		return SW_EIO;
	}
	o.listen = dp->listen;
	o.arg = dp;
	if ((rc = sw_http_server_start(a->loop, &o, &dp->http, err, errlen))) {
		free(dp);
		return rc;
	}
	a->dp = dp;
	sw_info("distribution point: serving content on %s (port %u)", dp->listen,
		sw_http_server_port(dp->http));
	return 0;
}

void dp_stop(struct agent *a)
{
	struct dp *dp = a->dp;

	if (!dp)
		return;
	/* a download in flight calls back: the point stops when the last has */
	if (dp->fetches) {
		dp->closing = 1;
		return;
	}
	sw_http_server_stop(dp->http);
	sw_strmap_free(dp->revoked);
	free(dp);
	a->dp = NULL;
}

void dp_update(struct agent *a, int wanted)
{
	char err[300];

	if (wanted && a->dp && a->dp->closing) {
		a->dp->closing = 0; /* the role is back before it stopped */
	} else if (wanted && !a->dp && !a->stopping) {
		if (dp_open(a, err, sizeof(err)))
			sw_err("distribution point: cannot serve: %s", err);
	} else if (!wanted && a->dp) {
		sw_info("distribution point: role removed; no longer serving");
		dp_stop(a);
	}
}

const char *dp_address(const struct agent *a)
{
	return a->dp && !a->dp->closing ? a->dp->listen : NULL;
}
