/* The agent's own HTTPS API, which only the site server may call. */
#include "agent.h"

#include "util.h"

#include <stdio.h>

#include "version.h"

static void get_status(struct sw_http_req *req, void *arg)
{
	struct agent *a = arg;

	sw_http_reply_json(req, 200,
			   json_pack("{ss ss sI sI}", "name", a->name, "version", SW_VERSION,
				     "uptime_ms", (json_int_t)(sw_mono_ms() - a->started_ms),
				     "last_heartbeat", (json_int_t)a->last_heartbeat_ok));
}

static const struct sw_http_route routes[] = {
    {"GET", "/v1/status", SW_HTTP_SERVER, get_status, 0},
};

int api_start(struct agent *a, char *err, size_t errlen)
{
	struct sw_http_server_opts o = {
	    .listen = a->listen,
	    .cert_pem = a->cert_pem,
	    .key_pem = a->key_pem,
	    .ca_pem = a->ca_pem,
	    .routes = routes,
	    .nroutes = SW_ARRAY_LEN(routes),
	    .arg = a,
	};

	return sw_http_server_start(a->loop, &o, &a->http, err, errlen);
}
