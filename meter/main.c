/*
 * siteward-meter: the license server of the software-metering role (SMS's
 * SMS_License_Server), run by the agent as the role's `meter` service.
 *
 * For now it answers its health endpoint on the site's mutual TLS with the agent's
 * certificate; licensing comes with the metering feature.
 */
#include "conf.h"
#include "error.h"
#include "http_server.h"
#include "log.h"
#include "util.h"

#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "version.h"

struct meter {
	uv_loop_t *loop;
	char dir[PATH_MAX];
	char listen[300];
	char *ca_pem, *cert_pem, *key_pem;
	struct sw_http_server *http;
	uv_signal_t sigint, sigterm;
	int64_t started_ms;
};

static void get_health(struct sw_http_req *req, void *arg)
{
	struct meter *m = arg;

	sw_http_reply_json(req, 200,
			   json_pack("{ss ss sI}", "status", "ok", "version", SW_VERSION,
				     "uptime_ms", (json_int_t)(sw_mono_ms() - m->started_ms)));
}

static const struct sw_http_route routes[] = {
    {"GET", "/v1/health", SW_HTTP_ADMIN | SW_HTTP_AGENT | SW_HTTP_SERVER, get_health, 0},
};

static void on_signal(uv_signal_t *h, int signum)
{
	struct meter *m = h->data;

	sw_info("signal %d: shutting down", signum);
	uv_stop(m->loop);
}

static int read_in(const char *dir, const char *name, char **out, char *err, size_t errlen)
{
	char path[PATH_MAX + 64];

	sw_path_join(path, sizeof(path), dir, name);
	return sw_file_read(path, 64 * 1024, out, NULL, err, errlen);
}

/* The meter listens where [meter] listen says, or one port above the agent. */
static int configure(struct meter *m, const char *dir, char *err, size_t errlen)
{
	char path[PATH_MAX + 64], host[256];
	struct sw_conf *conf = NULL;
	const char *listen;
	unsigned port;
	int rc;

	if (!realpath(dir, m->dir)) {
		snprintf(err, errlen, "%s: no such agent folder", dir);
		return SW_ENOTFOUND;
	}
	sw_path_join(path, sizeof(path), m->dir, "agent.conf");
	if ((rc = sw_conf_load(path, &conf, err, errlen)))
		return rc;
	listen = sw_conf_get(conf, "meter", "listen", NULL);
	if (listen) {
		snprintf(m->listen, sizeof(m->listen), "%s", listen);
	} else {
		rc = sw_hostport_parse(sw_conf_get(conf, "agent", "listen", ""), host, sizeof(host),
				       &port, 0, err, errlen);
		if (!rc && port == 65535)
			rc = SW_EINVAL;
		if (rc) {
			snprintf(err, errlen, "%s: set [meter] listen", path);
			sw_conf_free(conf);
			return SW_EINVAL;
		}
		snprintf(m->listen, sizeof(m->listen), strchr(host, ':') ? "[%s]:%u" : "%s:%u",
			 host, port + 1);
	}
	sw_conf_free(conf);
	if ((rc = read_in(m->dir, "ca.crt", &m->ca_pem, err, errlen)) ||
	    (rc = read_in(m->dir, "agent.crt", &m->cert_pem, err, errlen)) ||
	    (rc = read_in(m->dir, "agent.key", &m->key_pem, err, errlen)))
		return rc;
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"dir", required_argument, NULL, 'd'},
	    {"version", no_argument, NULL, 'V'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct meter m;
	const char *dir = getenv("SITEWARD_AGENT");
	char err[512];
	int opt, rc;

	memset(&m, 0, sizeof(m));
	sw_log_init("siteward-meter", SW_LOG_INFO);
	while ((opt = getopt_long(argc, argv, "d:h", longopts, NULL)) != -1) {
		switch (opt) {
		case 'd': dir = optarg; break;
		case 'V': printf("siteward-meter %s\n", SW_VERSION); return 0;
		case 'h': printf("usage: siteward-meter --dir AGENT-DIR\n"); return 0;
		default: fprintf(stderr, "usage: siteward-meter --dir AGENT-DIR\n"); return 2;
		}
	}
	if (!dir || optind != argc) {
		fprintf(stderr, "usage: siteward-meter --dir AGENT-DIR\n");
		return 2;
	}
	m.loop = uv_default_loop();
	m.started_ms = sw_mono_ms();
	rc = configure(&m, dir, err, sizeof(err));
	if (!rc) {
		struct sw_http_server_opts o = {.listen = m.listen,
						.cert_pem = m.cert_pem,
						.key_pem = m.key_pem,
						.ca_pem = m.ca_pem,
						.routes = routes,
						.nroutes = SW_ARRAY_LEN(routes),
						.arg = &m};
		rc = sw_http_server_start(m.loop, &o, &m.http, err, sizeof(err));
	}
	if (rc) {
		fprintf(stderr, "siteward-meter: %s\n", err);
		rc = 1;
		goto out;
	}
	signal(SIGPIPE, SIG_IGN);
	uv_signal_init(m.loop, &m.sigint);
	uv_signal_init(m.loop, &m.sigterm);
	m.sigint.data = m.sigterm.data = &m;
	uv_signal_start(&m.sigint, on_signal, SIGINT);
	uv_signal_start(&m.sigterm, on_signal, SIGTERM);
	sw_info("listening on %s, version %s", m.listen, SW_VERSION);
	uv_run(m.loop, UV_RUN_DEFAULT);
	sw_http_server_stop(m.http);
	uv_close((uv_handle_t *)&m.sigint, NULL);
	uv_close((uv_handle_t *)&m.sigterm, NULL);
	uv_run(m.loop, UV_RUN_DEFAULT);
out:
	free(m.ca_pem);
	free(m.cert_pem);
	free(m.key_pem);
	uv_loop_close(m.loop);
	return rc;
}
