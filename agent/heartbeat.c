/* Heartbeats: the agent reports its facts on the interval the server sets, and while
 * the server is away retries with capped exponential backoff. An agent with a channel
 * sends them on its polls instead (channel.c); what goes and what the reply does is the
 * same either way. */
#include "agent.h"

#include "json.h"
#include "log.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BACKOFF_FIRST_MS 1000u
#define BACKOFF_MAX_MS	 60000u

static void send_heartbeat(uv_timer_t *t);

static void schedule(struct agent *a, unsigned delay_ms)
{
	uv_timer_start(&a->heartbeat_timer, send_heartbeat, delay_ms, 0);
}

/* Never wait longer than four intervals, so a returning server hears from every agent
 * soon, but never hammer it either. */
static unsigned backoff_cap(const struct agent *a)
{
	unsigned cap = a->heartbeat_s * 4000u;

	return cap < BACKOFF_MAX_MS ? cap : BACKOFF_MAX_MS;
}

int heartbeat_took(struct agent *a, const json_t *j)
{
	int64_t interval = a->heartbeat_s;
	json_t *roles;

	if (!json_is_object(j) ||
	    sw_json_int(j, "heartbeat_interval", 1, 3600, 0, &interval, NULL, 0) != 0)
		return -1;
	/* The reply carries the roles the server wants: an agent that was away catches up
	 * here, with no call from the server needed. */
	if ((roles = json_object_get(j, "roles")))
		roles_apply(a, roles);
	usage_meters_save(a, json_object_get(j, "meters"));
	passive_products_version(a->passive, json_object_get(j, "products_version"));
	a->heartbeat_s = (unsigned)interval;
	a->last_heartbeat_ok = sw_now_ms();
	usage_upload(a);
	return 0;
}

json_t *heartbeat_body(struct agent *a)
{
	json_t *msg = json_pack("{ss so sO so}", "version", a->version, "facts", facts_collect(a),
				"roles", a->roles, "services", supervisor_json(a->sup));

	/* the server learns this agent's clock error from it, for deadlines it sends */
	if (msg)
		json_object_set_new(msg, "now", json_integer(sw_now_ms()));
	if (msg && !a->use_channel)
		json_object_set_new(msg, "address", json_string(a->listen));
	if (msg && supervisor_find(a->sup, "meter") && a->meter_listen[0])
		json_object_set_new(msg, "meter_address", json_string(a->meter_listen));
	return msg;
}

static void on_reply(const struct sw_http_result *res, void *arg)
{
	struct agent *a = arg;
	json_t *j = NULL;

	a->in_flight = 0;
	if (a->stopping)
		return;
	if (res->status == 200 && sw_json_parse_object(res->body, res->len, &j, NULL, 0) == 0 &&
	    heartbeat_took(a, j) == 0) {
		json_decref(j);
		if (!a->server_reachable)
			sw_info("server %s reached", a->server);
		a->server_reachable = 1;
		a->backoff_ms = 0;
		/* A change while this heartbeat was on its way is reported at once. */
		schedule(a, a->changed ? 100 : a->heartbeat_s * 1000u);
		a->changed = 0;
		return;
	}
	json_decref(j);
	if (a->server_reachable || a->backoff_ms == 0) {
		if (res->status)
			sw_warn("server %s refused the heartbeat (%ld): %.200s", a->server,
				res->status, res->body);
		else
			sw_warn("server %s: %s; retrying with backoff", a->server, res->error);
	}
	a->server_reachable = 0;
	a->backoff_ms = a->backoff_ms ? a->backoff_ms * 2 : BACKOFF_FIRST_MS;
	if (a->backoff_ms > backoff_cap(a))
		a->backoff_ms = backoff_cap(a);
	schedule(a, a->backoff_ms);
}

static void send_heartbeat(uv_timer_t *t)
{
	struct agent *a = t->data;
	char url[400], *body;
	json_t *msg = heartbeat_body(a);

	body = msg ? sw_json_dump(msg) : NULL;
	json_decref(msg);
	snprintf(url, sizeof(url), "%s/v1/heartbeat", a->server);
	if (body && sw_http_client_request(a->client, "POST", url, body, strlen(body),
					   a->request_timeout_ms, on_reply, a) == 0) {
		a->in_flight = 1;
	} else {
		sw_err("cannot build a heartbeat; retrying");
		schedule(a, BACKOFF_FIRST_MS);
	}
	free(body);
}

void heartbeat_start(struct agent *a)
{
	uv_timer_init(a->loop, &a->heartbeat_timer);
	a->heartbeat_timer.data = a;
	a->server_reachable = 1;
	if (!a->use_channel)
		schedule(a, 0);
}

void heartbeat_soon(struct agent *a)
{
	if (a->use_channel) {
		channel_soon(a);
		return;
	}
	/* While the server is away the backoff decides; a change waits for it. */
	if (!a->server_reachable)
		return;
	if (a->in_flight)
		a->changed = 1;
	else
		schedule(a, 100);
}

void heartbeat_stop(struct agent *a)
{
	uv_timer_stop(&a->heartbeat_timer);
}
