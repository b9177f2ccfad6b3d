/* Finding the site and calling its server with the admin certificate. */
#include "cli.h"

#include "conf.h"
#include "error.h"
#include "http_client.h"
#include "json.h"
#include "paths.h"
#include "pki.h"
#include "proto.h"
#include "sse.h"
#include "util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

void cli_error(const char *fmt, ...)
{
	va_list ap;

	fputs("siteward: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

void print_json(const json_t *j)
{
	char *s = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);

	if (s)
		puts(s);
	free(s);
}

int client_setup(struct cli *c, const char *site)
{
	char path[PATH_MAX + 32], err[512], host[256];
	struct sw_conf *conf = NULL;
	const char *listen;
	unsigned port;

	if (!site) {
		cli_error("no site: pass --site DIR or set SITEWARD_SITE");
		return 2;
	}
	if (!realpath(site, c->site)) {
		cli_error("%s: no such site folder", site);
		return 1;
	}
	sw_path_conf(c->site, SW_PATH_SERVER_DIR, "siteward.conf", path, sizeof(path));
	if (sw_conf_load(path, &conf, err, sizeof(err))) {
		cli_error("%s", err);
		return 1;
	}
	/* an administrator's folder (siteward admin add) names the server as its machine
	 * reaches it; a site folder has the address the server listens on */
	listen = sw_conf_get(conf, "client", "server", "");
	if (!*listen)
		listen = sw_conf_get(conf, "server", "listen", "");
	if (sw_hostport_parse(listen, host, sizeof(host), &port, 0, err, sizeof(err))) {
		cli_error("%s: [server] listen: %s", path, err);
		sw_conf_free(conf);
		return 1;
	}
	/* A server listening on every address is reached on the loopback one. */
	if (strcmp(host, "0.0.0.0") == 0)
		snprintf(host, sizeof(host), "127.0.0.1");
	else if (strcmp(host, "::") == 0)
		snprintf(host, sizeof(host), "::1");
	snprintf(c->url, sizeof(c->url), strchr(host, ':') ? "https://[%s]:%u" : "https://%s:%u",
		 host, port);
	sw_conf_free(conf);
	return 0;
}

/* `s` made printable, each line on its own when `lines` (a log keeps its lines). */
static json_t *printable_string(const char *s, int lines)
{
	size_t n = strlen(s), o = 0;
	char *out = malloc(4 * n + 1);
	json_t *j;

	if (!out)
		return NULL;
	if (!lines) {
		sw_printable(out, 4 * n + 1, s);
	} else {
		out[0] = '\0';
		for (const char *p = s;; p++) {
			size_t len = strcspn(p, "\n");
			char *line = strndup(p, len);

			if (!line) {
				free(out);
				return NULL;
			}
			o += sw_printable(out + o, 4 * len + 1, line);
			free(line);
			p += len;
			if (!*p)
				break;
			out[o++] = '\n';
			out[o] = '\0';
		}
	}
	j = json_string(out);
	free(out);
	return j;
}

/* A copy of the server's answer for a person's terminal: every string in it, a name,
 * a reason, a fact or an error, much of it first written by an agent on a machine of
 * the fleet, has its control characters shown (sw_printable), so none can move the
 * cursor, clear the screen or fake a line. --json prints the answer exact. */
static json_t *printable_copy(const json_t *j, int lines)
{
	const char *key;
	json_t *out, *v;
	size_t i;

	if (json_is_string(j))
		return printable_string(json_string_value(j), lines);
	if (json_is_array(j)) {
		out = json_array();
		json_array_foreach(j, i, v) json_array_append_new(out, printable_copy(v, lines));
		return out;
	}
	if (json_is_object(j)) {
		out = json_object();
		json_object_foreach((json_t *)j, key, v)
		{
			json_t *k = printable_string(key, 0);

			if (k)
				json_object_set_new(
				    out, json_string_value(k),
				    printable_copy(v, strcmp(key, "log") == 0 ||
							  strcmp(key, "log_tail") == 0));
			json_decref(k);
		}
		return out;
	}
	return json_copy((json_t *)j);
}

/* The files of the admin certificate and the site's CA. */
struct tls_files {
	char ca[PATH_MAX + 16], crt[PATH_MAX + 16], key[PATH_MAX + 16];
};

static struct sw_http_client_opts client_opts(const struct cli *c, struct tls_files *f)
{
	sw_path_join(f->ca, sizeof(f->ca), c->site, "ca.crt");
	sw_path_join(f->crt, sizeof(f->crt), c->site, "admin.crt");
	sw_path_join(f->key, sizeof(f->key), c->site, "admin.key");
	return (struct sw_http_client_opts){.ca_file = f->ca,
					    .cert_file = f->crt,
					    .key_file = f->key,
					    .connect_timeout_ms =
						c->timeout_ms < 5000 ? c->timeout_ms : 5000,
					    .peer_role = SW_PKI_ROLE_SERVER};
}

/* An answer's body as an object: printable for a terminal unless --json; its error in
 * `err` unless 2xx. 0, or 1 with `err` set when it is not JSON. */
static int answer(const struct cli *c, const char *text, long status, json_t **reply, char *err,
		  size_t errlen)
{
	int rc = sw_json_parse_object(text, strlen(text), reply, err, errlen);

	if (rc) {
		char why[512];
		snprintf(why, sizeof(why), "%s", err);
		sw_seterr(err, errlen, "the server's answer is not JSON: %s", why);
		return 1;
	}
	if (status < 200 || status > 299) {
		const char *msg = NULL;
		sw_json_str(*reply, "error", 1000, 0, &msg, NULL, 0);
		/* an error is printed whatever the output: an agent's words may be in it */
		sw_printable(err, errlen, msg ? msg : "the server refused the request");
	}
	if (!c->json) {
		json_t *shown = printable_copy(*reply, 0);

		json_decref(*reply);
		*reply = shown;
	}
	return 0;
}

/* One call with a body of `len` bytes (JSON text, or a package), waiting `timeout_ms`. */
static int request(const struct cli *c, const char *method, const char *path, const char *text,
		   size_t len, unsigned timeout_ms, long *status, json_t **reply, char *err,
		   size_t errlen)
{
	char url[1024];
	struct tls_files files;
	char *resp = NULL;
	int rc;

	*reply = NULL;
	*status = 0;
	snprintf(url, sizeof(url), "%s%s", c->url, path);
	/* The server answers within the timeout it is given (the reason for a slow agent
	 * included); the CLI's own deadline is a little longer, for a slow server. */
	struct sw_http_client_opts o = client_opts(c, &files);
	/* A server shedding load closes a new connection before any TLS work, so nothing
	 * was sent: asked again shortly, within the CLI's own deadline. */
	int64_t until = sw_mono_ms() + c->timeout_ms;
	while ((rc = sw_http_fetch_len(&o, method, url, text, len, timeout_ms + CLI_MARGIN_MS,
				       status, &resp, err, errlen)) == SW_EBUSY &&
	       sw_mono_ms() + 500 < until)
		usleep(200000 + sw_random_u32() % 300000);
	if (rc) {
		char why[512];
		snprintf(why, sizeof(why), "%s", err);
		sw_seterr(err, errlen, "server %s: %s", c->url, why);
		*status = 0;
		return 1;
	}
	rc = answer(c, resp, *status, reply, err, errlen);
	free(resp);
	if (rc)
		return 1;
	return *status < 200 || *status > 299 ? 1 : 0;
}

/* A stream being followed, on a loop of its own. */
struct following {
	const struct cli *c;
	const struct client_stream *cs;
	struct sw_sse_parser parser;
	int done, stopped;
	struct sw_http_result res; /* body: the caller's copy below */
	char *body;
	char bad[300]; /* an event that is no JSON object */
};

static int on_stream_event(const struct sw_sse_event *ev, void *arg)
{
	struct following *f = arg;
	json_t *data, *shown;
	int rc;

	if (sw_json_parse_object(ev->data, ev->len, &data, f->bad, sizeof(f->bad))) {
		f->stopped = 1;
		return 1;
	}
	if (!f->c->json) {
		shown = printable_copy(data, 0);
		json_decref(data);
		data = shown;
	}
	rc = f->cs->on_event(ev->type, data, f->cs->arg);
	json_decref(data);
	if (rc)
		f->stopped = 1;
	return rc;
}

static int on_stream_data(const char *data, size_t len, void *arg)
{
	struct following *f = arg;

	/* a stream broken past its bounds is given up, as one the server ended */
	return sw_sse_feed(&f->parser, data, len, f->bad, sizeof(f->bad));
}

static void on_stream_done(const struct sw_http_result *res, void *arg)
{
	struct following *f = arg;

	f->done = 1;
	f->res = *res;
	f->body = strdup(res->body);
}

static void on_stream_tick(uv_timer_t *t)
{
	struct following *f = t->data;

	f->cs->on_tick(f->cs->arg);
}

int client_stream(const struct cli *c, const char *path, unsigned total_ms, unsigned idle_ms,
		  const struct client_stream *cs, long *status, json_t **reply, char *err,
		  size_t errlen)
{
	struct following f = {.c = c, .cs = cs};
	struct sw_http_client *client = NULL;
	struct tls_files files;
	struct sw_http_client_opts o = client_opts(c, &files);
	char url[1024];
	uv_loop_t loop;
	uv_timer_t tick;
	int rc;

	*status = 0;
	*reply = NULL;
	snprintf(url, sizeof(url), "%s%s", c->url, path);
	if (uv_loop_init(&loop) < 0) {
		sw_seterr(err, errlen, "out of memory");
		return 1;
	}
	/* an event as large as the largest answer the CLI takes */
	sw_sse_parser_init(&f.parser, SW_HTTP_CLIENT_MAX_BODY, on_stream_event, &f);
	uv_timer_init(&loop, &tick);
	tick.data = &f;
	if (cs->on_tick && cs->tick_ms)
		uv_timer_start(&tick, on_stream_tick, cs->tick_ms, cs->tick_ms);
	rc = sw_http_client_new(&loop, &o, &client);
	if (!rc)
		rc = sw_http_client_stream(client, url, "text/event-stream", total_ms, idle_ms,
					   on_stream_data, on_stream_done, &f);
	while (!rc && !f.done)
		uv_run(&loop, UV_RUN_ONCE);
	sw_http_client_free(client);
	uv_close((uv_handle_t *)&tick, NULL);
	uv_run(&loop, UV_RUN_DEFAULT);
	uv_loop_close(&loop);
	sw_sse_parser_cleanup(&f.parser);
	if (rc) {
		sw_seterr(err, errlen, "server %s: %s", c->url, sw_strerror(rc));
		return 1;
	}
	if (f.res.streamed) {
		free(f.body);
		if (f.bad[0]) {
			sw_seterr(err, errlen, "server %s: the event stream: %s", c->url, f.bad);
			return 2;
		}
		if (f.res.status == 0)
			sw_seterr(err, errlen, "server %s: %s", c->url, f.res.error);
		else
			err[0] = '\0';
		return 0;
	}
	if (f.res.status == 0) {
		sw_seterr(err, errlen, "server %s: %s", c->url, f.res.error);
		free(f.body);
		return 1;
	}
	*status = f.res.status;
	if (!f.body || answer(c, f.body, *status, reply, err, errlen)) {
		if (!f.body)
			sw_seterr(err, errlen, "out of memory");
		*reply = NULL;
	}
	free(f.body);
	return 1;
}

int client_request(const struct cli *c, const char *method, const char *path, json_t *body,
		   long *status, json_t **reply, char *err, size_t errlen)
{
	char *text = body ? sw_json_dump(body) : NULL;
	int rc;

	if (body && !text) {
		sw_seterr(err, errlen, "out of memory");
		*reply = NULL;
		*status = 0;
		return 1;
	}
	rc = request(c, method, path, text, text ? strlen(text) : 0, c->timeout_ms, status, reply,
		     err, errlen);
	free(text);
	return rc;
}

int client_upload(const struct cli *c, const char *path, const char *file, json_t **reply)
{
	char err[1100];
	char *data = NULL;
	size_t len = 0;
	long status;
	int rc;

	*reply = NULL;
	if (sw_file_read(file, (size_t)SW_STAGE_PACKAGE_MAX, &data, &len, err, sizeof(err))) {
		cli_error("%s", err);
		return 1;
	}
	/* the server reads it all and verifies it before it answers: a moment per 4 MB */
	rc = request(c, "POST", path, data, len, c->timeout_ms + (unsigned)(len / 4000), &status,
		     reply, err, sizeof(err));
	free(data);
	if (rc) {
		cli_error("%s", err);
		json_decref(*reply);
		*reply = NULL;
	}
	return rc;
}

int client_call(const struct cli *c, const char *method, const char *path, json_t *body,
		json_t **reply)
{
	char err[1100];
	long status;

	if (client_request(c, method, path, body, &status, reply, err, sizeof(err))) {
		cli_error("%s", err);
		json_decref(*reply);
		*reply = NULL;
		return 1;
	}
	return 0;
}

int cli_parse_since(const char *s, long long *ms)
{
	struct tm tm;
	char *end;
	long days;

	memset(&tm, 0, sizeof(tm));
	end = strptime(s, "%Y-%m-%d", &tm);
	if (end && !*end) {
		*ms = (long long)timegm(&tm) * 1000;
		return 0;
	}
	days = strtol(s, &end, 10);
	if (days >= 0 && days < 100000 && strcmp(end, "d") == 0) {
		*ms = sw_now_ms() / 86400000 * 86400000 - (long long)days * 86400000;
		return 0;
	}
	return SW_EINVAL;
}
