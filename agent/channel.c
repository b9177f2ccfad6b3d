/*
 * The agent's channel to the site server, the only way the server reaches it: the agent
 * asks the server for work (POST /v1/agent/poll) on the connection it keeps, runs each
 * command through the routes of api.c (sw_http_local), and brings the answers on
 * its next poll. While commands run, or answers are on their way, it asks to be held
 * only briefly, so answers go out and are taken soon; otherwise the server holds the
 * poll until there is work, or the next heartbeat is due.
 *
 * Heartbeats ride on polls: on the interval, or on the first poll after a change. The
 * agent's client keeps one connection to the server, so a usage upload started by a
 * heartbeat's reply goes on it too, between polls.
 *
 * A command runs at most once: the ids seen lately are remembered (until well past
 * their deadlines), and one that arrives past its deadline is refused, not run. A
 * server that is away is asked again with jittered exponential backoff.
 */
#include "agent.h"

#include "error.h"
#include "json.h"
#include "log.h"
#include "proto.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HOLD_IDLE_MS	 25000
#define HOLD_RUNNING_MS	 SW_POLL_ANSWER_MS
#define BACKOFF_FIRST_MS 1000u
#define BACKOFF_MAX_MS	 60000u
#define SEEN_MAX	 512
#define SEEN_KEEP_MS	 600000 /* an id is remembered this long past its deadline */

struct seen {
	char id[SW_COMMAND_ID_MAX + 1];
	int64_t until; /* sw_now_ms() */
};

struct channel {
	struct agent *a;
	uv_timer_t timer;
	int in_flight, stopping, closed;
	unsigned backoff_ms;
	char said[256];	 /* why the last poll failed, as logged: a new reason is logged too */
	json_t *pending; /* answers for the next poll */
	json_t *sent;	 /* answers in the poll in flight: back to pending if it fails */
	json_t *running; /* ids of the commands being run */
	int64_t hb_due;	 /* sw_mono_ms() when the next heartbeat goes; 0: on the first poll */
	int hb_sent;	 /* the poll in flight carries one */
	struct seen seen[SEEN_MAX];
	size_t seen_next;
};

struct run {
	struct channel *ch;
	char id[SW_COMMAND_ID_MAX + 1];
};

static void poll_now(struct channel *ch);

/* Once stopped, the channel goes when nothing in flight can call back into it. */
static void maybe_free(struct channel *ch)
{
	if (!ch->closed || ch->in_flight || json_array_size(ch->running))
		return;
	json_decref(ch->pending);
	json_decref(ch->sent);
	json_decref(ch->running);
	free(ch);
}

static void on_timer(uv_timer_t *t)
{
	poll_now(t->data);
}

static void schedule(struct channel *ch, unsigned ms)
{
	if (!ch->stopping)
		uv_timer_start(&ch->timer, on_timer, ms, 0);
}

static int seen_before(struct channel *ch, const char *id, int64_t deadline)
{
	int64_t now = sw_now_ms();

	for (size_t i = 0; i < SEEN_MAX; i++)
		if (ch->seen[i].until > now && strcmp(ch->seen[i].id, id) == 0)
			return 1;
	snprintf(ch->seen[ch->seen_next].id, sizeof(ch->seen[0].id), "%s", id);
	ch->seen[ch->seen_next].until = deadline + SEEN_KEEP_MS;
	ch->seen_next = (ch->seen_next + 1) % SEEN_MAX;
	return 0;
}

static void answer(struct channel *ch, const char *id, unsigned status, const char *body)
{
	json_array_append_new(
	    ch->pending, json_pack("{ss si ss}", "id", id, "status", (int)status, "body", body));
}

static void not_running(struct channel *ch, const char *id)
{
	json_t *v;
	size_t i;

	json_array_foreach(ch->running, i, v)
	{
		if (strcmp(json_string_value(v), id) == 0) {
			json_array_remove(ch->running, i);
			return;
		}
	}
}

static void on_answered(void *arg, unsigned status, char *body)
{
	struct run *r = arg;
	struct channel *ch = r->ch;

	answer(ch, r->id, status, body);
	not_running(ch, r->id);
	free(body);
	free(r);
	if (ch->stopping)
		maybe_free(ch);
	else if (!ch->in_flight)
		schedule(ch, 0);
}

static void run_command(struct channel *ch, const json_t *cmd)
{
	const char *id = json_string_value(json_object_get(cmd, "id"));
	const char *body = json_string_value(json_object_get(cmd, "body"));
	int64_t deadline = json_integer_value(json_object_get(cmd, "deadline"));
	struct sw_http_local_req in = {.method = json_string_value(json_object_get(cmd, "method")),
				       .path = json_string_value(json_object_get(cmd, "path")),
				       .body = body,
				       .len = body ? strlen(body) : 0,
				       .peer = "site server"};
	struct run *r;

	if (seen_before(ch, id, deadline))
		return; /* running, or answered: its answer is on its way */
	if (sw_now_ms() > deadline) {
		sw_warn("not running %s %s: it expired %lld ms before it arrived", in.method,
			in.path, (long long)(sw_now_ms() - deadline));
		answer(ch, id, 410,
		       "{\"error\":\"the command expired before it arrived; not run\"}");
		return;
	}
	if (!(r = calloc(1, sizeof(*r)))) {
		answer(ch, id, 503, "{\"error\":\"the agent is out of memory\"}");
		return;
	}
	r->ch = ch;
	snprintf(r->id, sizeof(r->id), "%s", id);
	snprintf(in.identity.cn, sizeof(in.identity.cn), "site server");
	snprintf(in.identity.role, sizeof(in.identity.role), "%s", SW_PKI_ROLE_SERVER);
	json_array_append_new(ch->running, json_string(id));
	if (api_local(ch->a, &in, on_answered, r)) {
		not_running(ch, id);
		free(r);
		answer(ch, id, 503, "{\"error\":\"the agent is out of memory\"}");
	}
}

/* Never wait longer than four heartbeat intervals, so a returning server hears from
 * every agent soon, but never hammer it either. */
static unsigned backoff_cap(const struct agent *a)
{
	unsigned cap = a->heartbeat_s * 4000u;

	return cap < BACKOFF_MAX_MS ? cap : BACKOFF_MAX_MS;
}

static void on_reply(const struct sw_http_result *res, void *arg)
{
	struct channel *ch = arg;
	struct agent *a = ch->a;
	json_t *j = NULL, *cmd;
	int hb_sent = ch->hb_sent;
	char err[256];
	size_t i;

	ch->in_flight = 0;
	ch->hb_sent = 0;
	if (ch->stopping) {
		maybe_free(ch);
		return;
	}
	if (res->status == 200 && sw_json_parse_object(res->body, res->len, &j, NULL, 0) == 0 &&
	    sw_proto_commands_check(j, err, sizeof(err)) == 0 &&
	    (!hb_sent || heartbeat_took(a, json_object_get(j, "heartbeat")) == 0)) {
		if (hb_sent)
			sw_counter_inc(a->mx_hb_sent);
		json_array_clear(ch->sent);
		if (ch->backoff_ms)
			sw_info("channel to %s open again", a->server);
		ch->said[0] = '\0';
		ch->backoff_ms = 0;
		if (hb_sent)
			ch->hb_due = sw_mono_ms() + a->heartbeat_s * 1000;
		json_array_foreach(json_object_get(j, "commands"), i, cmd) run_command(ch, cmd);
		json_decref(j);
		schedule(ch, 0);
		return;
	}
	json_decref(j);
	if (hb_sent)
		sw_counter_inc(a->mx_hb_failed);
	/* the answers go again on the next poll; the server matches them by id */
	json_array_extend(ch->pending, ch->sent);
	json_array_clear(ch->sent);
	char why[sizeof(ch->said)];
	if (res->status)
		snprintf(why, sizeof(why), "refused (%ld): %.200s", res->status, res->body);
	else
		snprintf(why, sizeof(why), "%s", res->error);
	if (!ch->backoff_ms || strcmp(why, ch->said) != 0)
		sw_warn("channel to %s: %s; retrying with backoff", a->server, why);
	snprintf(ch->said, sizeof(ch->said), "%s", why);
	ch->hb_due = 0; /* the first poll that gets through tells the server all */
	ch->backoff_ms = ch->backoff_ms ? ch->backoff_ms * 2 : BACKOFF_FIRST_MS;
	if (ch->backoff_ms > backoff_cap(a))
		ch->backoff_ms = backoff_cap(a);
	/* jittered, so a fleet that lost its server does not come back all at once; a busy
	 * server's Retry-After is the least wait */
	unsigned wait = ch->backoff_ms / 2 + (unsigned)(sw_random_u32() % (ch->backoff_ms / 2 + 1));
	if (res->retry_after_s && wait < res->retry_after_s * 1000u)
		wait = res->retry_after_s * 1000u +
		       (unsigned)(sw_random_u32() % (res->retry_after_s * 500u + 1));
	schedule(ch, wait);
}

/* A renewal went in place of a poll: the channel goes on (on a new client, if it
 * renewed). */
static void on_renewed(void *arg)
{
	struct channel *ch = arg;

	ch->in_flight = 0;
	if (ch->stopping)
		maybe_free(ch);
	else
		schedule(ch, 0);
}

static void poll_now(struct channel *ch)
{
	struct agent *a = ch->a;
	int64_t now = sw_mono_ms();
	int hb = a->changed || now >= ch->hb_due;
	unsigned hold = HOLD_IDLE_MS;
	char url[400], *body;
	json_t *msg;

	if (ch->in_flight || ch->stopping)
		return;
	/* between polls, so the renewal has the one connection to itself */
	if (renew_wanted(a) && renew_send(a, on_renewed, ch) == 0) {
		ch->in_flight = 1;
		return;
	}
	json_array_extend(ch->sent, ch->pending);
	json_array_clear(ch->pending);
	if (json_array_size(ch->running) || json_array_size(ch->sent))
		hold = HOLD_RUNNING_MS;
	else if (!hb && ch->hb_due - now < hold)
		hold = (unsigned)(ch->hb_due - now);
	msg = json_pack("{sO sO si}", "answers", ch->sent, "running", ch->running, "hold_ms",
			(int)hold);
	if (msg && hb) {
		json_object_set_new(msg, "heartbeat", heartbeat_body(a));
		a->changed = 0;
		ch->hb_sent = 1;
	}
	body = msg ? sw_json_dump(msg) : NULL;
	json_decref(msg);
	snprintf(url, sizeof(url), "%s/v1/agent/poll", ch->a->server);
	if (body && sw_http_client_request(ch->a->client, "POST", url, body, strlen(body),
					   hold + ch->a->request_timeout_ms, on_reply, ch) == 0) {
		ch->in_flight = 1;
	} else {
		json_array_extend(ch->pending, ch->sent);
		json_array_clear(ch->sent);
		a->changed |= ch->hb_sent;
		ch->hb_sent = 0;
		schedule(ch, BACKOFF_FIRST_MS);
	}
	free(body);
}

void channel_soon(struct agent *a)
{
	struct channel *ch = a->channel;

	a->changed = 1;
	/* a poll in flight is held at most until the next heartbeat; then the change goes */
	if (ch && !ch->in_flight && !ch->backoff_ms)
		schedule(ch, 0);
}

int channel_unsent(const struct agent *a)
{
	const struct channel *ch = a->channel;

	return ch && (json_array_size(ch->pending) || json_array_size(ch->sent) ||
		      json_array_size(ch->running));
}

int channel_open(const struct agent *a)
{
	const struct channel *ch = a->channel;

	return ch && !ch->backoff_ms && !ch->said[0] && ch->hb_due != 0;
}

int channel_start(struct agent *a)
{
	struct channel *ch = calloc(1, sizeof(*ch));

	if (!ch || !(ch->pending = json_array()) || !(ch->sent = json_array()) ||
	    !(ch->running = json_array())) {
		if (ch) {
			json_decref(ch->pending);
			json_decref(ch->sent);
		}
		free(ch);
		return SW_ENOMEM;
	}
	ch->a = a;
	uv_timer_init(a->loop, &ch->timer);
	ch->timer.data = ch;
	a->channel = ch;
	schedule(ch, 0);
	return 0;
}

static void channel_closed(uv_handle_t *h)
{
	struct channel *ch = h->data;

	ch->closed = 1;
	maybe_free(ch);
}

void channel_stop(struct agent *a)
{
	struct channel *ch = a->channel;

	if (!ch)
		return;
	a->channel = NULL;
	ch->stopping = 1;
	uv_close((uv_handle_t *)&ch->timer, channel_closed);
}
