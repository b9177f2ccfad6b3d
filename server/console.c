/*
 * The web console: a second listener of the site server, for administrators' browsers.
 *
 * It serves the console's files (read once at start, held in memory) and the same API
 * routes as the API's port, so that the page's calls are same-origin; only
 * administrators' routes, and only administrators' certificates. The browser sends its
 * client certificate with any request, a foreign page's too, so a change here must
 * carry a header that only a script of this origin can set (a custom header makes the
 * browser ask first, and that question is never answered) and no foreign Origin.
 */
#include "server.h"

#include "error.h"
#include "install.h"
#include "json.h"
#include "log.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The header a change must carry, set by the console's own script. */
#define CONSOLE_HEADER "X-Siteward-Console"
/* The console's files are small: a larger one is a mistake in the install tree. */
#define CONSOLE_FILE_MAX (1024 * 1024)

/* The files the console serves, by the path under its folder; nothing else is read,
 * so no request names a file of the server's disk. */
static const struct {
	const char *name, *type;
	int optional; /* the chart library: without it, the page draws no charts */
} files[] = {
    {"index.html", "text/html; charset=utf-8", 0},
    {"app.js", "text/javascript; charset=utf-8", 0},
    {"lib.js", "text/javascript; charset=utf-8", 0},
    {"site.js", "text/javascript; charset=utf-8", 0},
    {"systems.js", "text/javascript; charset=utf-8", 0},
    {"metering.js", "text/javascript; charset=utf-8", 0},
    {"upgrades.js", "text/javascript; charset=utf-8", 0},
    {"audit.js", "text/javascript; charset=utf-8", 0},
    {"style.css", "text/css; charset=utf-8", 0},
    {"icon.svg", "image/svg+xml", 0},
    {"vendor/uplot.js", "text/javascript; charset=utf-8", 1},
    {"vendor/uplot.css", "text/css; charset=utf-8", 1},
};
#define NFILES SW_ARRAY_LEN(files)

struct console {
	char dir[PATH_MAX];
	char version[17]; /* the start of the hash of every file: the assets' path */
	char *data[NFILES];
	size_t len[NFILES];
	char etag[NFILES][20];
	struct sw_http_route *routes;
	size_t nroutes;
};

/* Every answer of the console's port: the page runs only its own scripts, loads nothing
 * from elsewhere, is framed by no one, and no other site may embed what it serves. */
static const char *const security_headers[] = {
    "Content-Security-Policy",
    "default-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options",
    "nosniff",
    "Referrer-Policy",
    "no-referrer",
    "X-Frame-Options",
    "DENY",
    "Cross-Origin-Opener-Policy",
    "same-origin",
    "Cross-Origin-Resource-Policy",
    "same-origin",
    NULL,
};

/* The folder of the console's files: beside the program in an install tree (make
 * install, a package, an upgrade's versions/V), else the source tree's for a program
 * run from its build folder. */
static int console_find(struct console *c, char *err, size_t errlen)
{
	char exe[PATH_MAX], path[PATH_MAX + 64], *slash;

	if (sw_install_self(exe, sizeof(exe)) == 0 && (slash = strrchr(exe, '/'))) {
		*slash = '\0';
		snprintf(path, sizeof(path), "%s/../share/siteward/console/index.html", exe);
		if (access(path, R_OK) == 0) {
			snprintf(path, sizeof(path), "%s/../share/siteward/console", exe);
			if (!realpath(path, c->dir))
				snprintf(c->dir, sizeof(c->dir), "%s", path);
			return 0;
		}
	}
#ifdef SW_CONSOLE_SRC
	snprintf(path, sizeof(path), "%s/index.html", SW_CONSOLE_SRC);
	if (access(path, R_OK) == 0) {
		snprintf(c->dir, sizeof(c->dir), "%s", SW_CONSOLE_SRC);
		return 0;
	}
#endif
	sw_seterr(err, errlen,
		  "the console's files are not installed (looked for share/siteward/console "
		  "beside %s)",
		  exe);
	return SW_ENOTFOUND;
}

/* Reads every file once; index.html names the assets under the hash of them all, so a
 * browser may keep those for good and asks again only for the page. */
static int console_load(struct console *c, char *err, size_t errlen)
{
	char path[PATH_MAX + 64], hex[65], sub[256], *all = NULL;
	size_t total = 0;
	int rc;

	for (size_t i = 0; i < NFILES; i++) {
		sw_path_join(path, sizeof(path), c->dir, files[i].name);
		if (files[i].optional && access(path, R_OK) != 0) {
			sw_warn("console: %s is missing; the console draws no charts (run "
				"scripts/install-deps)",
				path);
			continue;
		}
		if ((rc = sw_file_read(path, CONSOLE_FILE_MAX, &c->data[i], &c->len[i], sub,
				       sizeof(sub)))) {
			sw_seterr(err, errlen, "console: %s", sub);
			return rc;
		}
		sw_sha256_hex(c->data[i], c->len[i], hex);
		snprintf(c->etag[i], sizeof(c->etag[i]), "\"%.16s\"", hex);
		char *grown = realloc(all, total + 16);
		if (!grown) {
			free(all);
			return SW_ENOMEM;
		}
		all = grown;
		memcpy(all + total, hex, 16);
		total += 16;
	}
	sw_sha256_hex(all, total, hex);
	free(all);
	snprintf(c->version, sizeof(c->version), "%.16s", hex);
	/* "@V@" in the page stands for the assets' version */
	char *page = c->data[0], *out, *at;
	size_t n = 0;
	for (at = page; (at = strstr(at, "@V@")); at += 3)
		n++;
	if (!(out = malloc(c->len[0] + n * 16 + 1)))
		return SW_ENOMEM;
	char *w = out;
	for (at = page; *at;) {
		if (strncmp(at, "@V@", 3) == 0) {
			memcpy(w, c->version, 16);
			w += 16;
			at += 3;
		} else {
			*w++ = *at++;
		}
	}
	*w = '\0';
	free(page);
	c->data[0] = out;
	c->len[0] = (size_t)(w - out);
	sw_sha256_hex(out, c->len[0], hex);
	snprintf(c->etag[0], sizeof(c->etag[0]), "\"%.16s\"", hex);
	return 0;
}

static void send_file(struct server *s, struct sw_http_req *req, size_t i, int immutable)
{
	const struct console *c = s->console;
	const char *match = sw_http_req_header(req, "If-None-Match");
	const char *const headers[] = {
	    "ETag", c->etag[i], "Cache-Control",
	    /* the page is asked again each time (it names the assets' version); an asset's
	     * path changes with its content */
	    immutable ? "private, max-age=31536000, immutable" : "no-cache", NULL};

	if (match && strstr(match, c->etag[i])) {
		sw_http_reply_static(req, 304, files[i].type, "", 0, headers);
		return;
	}
	sw_http_reply_static(req, 200, files[i].type, c->data[i], c->len[i], headers);
}

/* GET /: the page. */
static void console_page(struct sw_http_req *req, void *arg)
{
	send_file(arg, req, 0, 0);
}

/* GET /s/VERSION/NAME: an asset of this version; another version's is gone. */
static void console_asset(struct sw_http_req *req, void *arg)
{
	struct server *s = arg;
	const struct console *c = s->console;
	const char *tail = sw_http_req_tail(req);

	if (strncmp(tail, c->version, 16) == 0 && tail[16] == '/')
		for (size_t i = 1; i < NFILES; i++)
			if (c->data[i] && strcmp(tail + 17, files[i].name) == 0) {
				send_file(s, req, i, 1);
				return;
			}
	sw_http_reply_error(req, 404, "no such file in this version of the console");
}

/* A refusal of the console's own is recorded as the routes' refusals are. */
static unsigned refuse(struct server *s, struct sw_http_req *req, char *msg, size_t len,
		       const char *fmt, const char *what)
{
	const struct sw_identity *id = sw_http_req_identity(req);

	snprintf(msg, len, fmt, what);
	if (id && strcmp(id->role, SW_PKI_ROLE_ADMIN) == 0) {
		json_t *j = json_pack("{ss}", "error", msg);
		char *text = j ? sw_json_dump(j) : NULL;

		json_decref(j);
		if (text)
			admins_audit(s, req, 403, text, 0);
		free(text);
	}
	sw_warn("console: %s %s from %s refused: %s", sw_http_req_method(req),
		sw_http_req_path(req), sw_http_req_peer(req), msg);
	return 403;
}

/* The console's rule, before any handler: administrators' certificates only (machines
 * keep the API's port), and a change only from the console's own page. */
static unsigned console_admit(void *arg, struct sw_http_req *req, char *msg, size_t len)
{
	struct server *s = arg;
	const struct sw_identity *id = sw_http_req_identity(req);
	const char *method = sw_http_req_method(req), *mark, *origin, *host;
	char own[320];

	if (id && strcmp(id->role, SW_PKI_ROLE_ADMIN) != 0) {
		snprintf(msg, len,
			 "rejected: the console admits administrators' certificates only, not %s "
			 "%s certificate",
			 id->role[0] == 'a' ? "an" : "a", id->role);
		return 403;
	}
	if (strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0)
		return 0;
	mark = sw_http_req_header(req, CONSOLE_HEADER);
	if (!mark || strcmp(mark, "1") != 0)
		return refuse(s, req, msg, len,
			      "rejected: a change on the console's port needs the header %s: 1, "
			      "which only the console's own page sends",
			      CONSOLE_HEADER);
	/* A browser says which page made the request; it must be the console's own. */
	origin = sw_http_req_header(req, "Origin");
	host = sw_http_req_header(req, "Host");
	snprintf(own, sizeof(own), "https://%s", host ? host : "");
	if (origin && (!host || strcmp(origin, own) != 0)) {
		char shown[200];

		sw_printable(shown, sizeof(shown), origin);
		return refuse(s, req, msg, len,
			      "rejected: a change from another site's page (Origin %s) is refused",
			      shown);
	}
	return 0;
}

/* The console's routes, then the API's administrators' routes with their levels (the
 * other roles dropped). */
static int console_routes(struct console *c)
{
	size_t napi;
	const struct sw_http_route *api = api_route_table(&napi);
	const unsigned admins = SW_HTTP_ADMIN | SW_HTTP_OPERATOR | SW_HTTP_VIEWER;

	if (!(c->routes = calloc(napi + 2, sizeof(*c->routes))))
		return SW_ENOMEM;
	c->routes[c->nroutes++] = (struct sw_http_route){"GET", "/", SW_HTTP_OPEN, console_page, 0};
	c->routes[c->nroutes++] =
	    (struct sw_http_route){"GET", "/s/*", SW_HTTP_OPEN, console_asset, 0};
	for (size_t i = 0; i < napi; i++) {
		if (!(api[i].roles & admins))
			continue;
		c->routes[c->nroutes] = api[i];
		c->routes[c->nroutes++].roles &= admins | SW_HTTP_BODY_FILE;
	}
	return 0;
}

int console_start(struct server *s, const struct sw_http_server_opts *api, char *err, size_t errlen)
{
	const char *listen = sw_conf_get(s->conf, "console", "listen", "");
	struct console *c;
	char sub[512];
	int rc;

	if (!listen[0])
		return 0;
	if (!(c = calloc(1, sizeof(*c))))
		return SW_ENOMEM;
	s->console = c;
	if ((rc = console_find(c, sub, sizeof(sub))) || (rc = console_load(c, sub, sizeof(sub)))) {
		/* the API serves on: a console that cannot start is not the site's outage */
		sw_warn("%s; no console", sub);
		console_free(s);
		return 0;
	}
	if ((rc = console_routes(c)))
		return rc;
	struct sw_http_server_opts o = *api;
	o.listen = listen;
	o.routes = c->routes;
	o.nroutes = c->nroutes;
	/* a few browsers, not a fleet */
	o.max_connections = 256;
	o.max_handshakes = 32;
	o.max_streams = 64;
	/* the API's port counts its routes under these names; these are not counted */
	o.metrics = NULL;
	o.headers = security_headers;
	o.admit = console_admit;
	if ((rc = sw_http_server_start(s->loop, &o, &s->console_http, sub, sizeof(sub)))) {
		/* as above: the API serves on, and the log says what to change */
		sw_warn("[console] listen = %s: %s; no console (free the port, or change the "
			"setting in siteward.conf)",
			listen, sub);
		s->console_http = NULL;
		console_free(s);
		return 0;
	}
	sw_info("console on %s (port %u), files from %s, version %s", listen,
		sw_http_server_port(s->console_http), c->dir, c->version);
	return 0;
}

void console_stop(struct server *s)
{
	sw_http_server_stop(s->console_http);
	s->console_http = NULL;
}

void console_free(struct server *s)
{
	struct console *c = s->console;

	if (!c)
		return;
	for (size_t i = 0; i < NFILES; i++)
		free(c->data[i]);
	free(c->routes);
	free(c);
	s->console = NULL;
}
