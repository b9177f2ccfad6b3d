/*
 * The agents' channels: each agent holds one connection to the site server open and
 * asks it for work (POST /v1/agent/poll); the server keeps that request until it has a
 * command for the agent, or the agent's hold runs out, and answers with the commands.
 * The agent runs them and brings their answers on its next poll. Nothing dials an
 * agent, so a managed machine opens no port.
 *
 * A poll may carry the agent's heartbeat: it is answered at once, with the heartbeat's
 * reply and any commands, and the agent's next poll is the one held. So one connection
 * carries all the agent says and is told.
 *
 * A command has an id and a deadline. It goes out once, and again only on a poll that
 * shows the agent neither answered nor runs it (the poll that carried it was lost); the
 * agent remembers the ids it has seen, so it runs each at most once. Whatever happens,
 * the caller hears once: the answer, or at the deadline that there was none.
 */
#include "server.h"

#include "error.h"
#include "json.h"
#include "log.h"
#include "proto.h"
#include "util.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The longest a poll is held; the agent asks for less. */
#define HOLD_MAX_MS 60000
/* A channel polled within this much is taken as connected. */
#define CONNECTED_MS (HOLD_MAX_MS + 15000)
/* The agent is asked to give up on a command this much before the caller does. */
#define AGENT_MARGIN_MS 300
/* How often the loop's lateness is sampled, and how late it may run before polls are
 * shed: answered 503 with a Retry-After drawn between the two bounds below. */
#define LAG_SAMPLE_MS	    250
#define LAG_SHED_MS	    2000
#define SHED_RETRY_MIN_S    2
#define SHED_RETRY_SPREAD_S 9

struct chan_cmd {
	struct chan_cmd *next;
	struct server *s;
	char system[64];
	char id[40];
	char method[8];
	char *path, *body; /* body: JSON text, or NULL */
	int64_t deadline;  /* sw_mono_ms() when the caller gives up */
	unsigned timeout_ms;
	int sent;     /* went out in a poll's answer */
	int finished; /* the caller has heard */
	uv_timer_t timer;
	sw_http_done done;
	void *arg;
	struct sw_http_result res; /* what the caller hears */
};

struct chan {
	struct server *s;
	char system[64];
	struct sw_http_req *held; /* the agent's poll, waiting for work */
	uv_timer_t hold;
	struct chan_cmd *cmds; /* not finished: queued or sent */
	json_t *heartbeat;     /* the reply to the held poll's heartbeat, or NULL */
	int64_t polled_at;     /* sw_mono_ms() of its last poll, 0: never */
	int closing;
};

static uint64_t next_id;

static void cmd_closed(uv_handle_t *h)
{
	struct chan_cmd *c = h->data;

	free(c->path);
	free(c->body);
	free(c->res.body);
	free(c);
}

static void chan_unlink(struct chan *ch, struct chan_cmd *c)
{
	for (struct chan_cmd **p = &ch->cmds; *p; p = &(*p)->next) {
		if (*p == c) {
			*p = c->next;
			return;
		}
	}
}

static struct chan *chan_of(struct server *s, const char *system)
{
	struct system *sys = sw_strmap_get(s->systems, system);

	return sys ? sys->chan : NULL;
}

/* The caller hears, once, on the loop's next turn at the earliest: `c` leaves its
 * channel now. */
static void cmd_finish_later(struct chan_cmd *c);

static void on_cmd_timer(uv_timer_t *t)
{
	struct chan_cmd *c = t->data;
	struct chan *ch = chan_of(c->s, c->system);

	if (!c->finished) { /* the deadline */
		if (ch)
			chan_unlink(ch, c);
		c->res.status = 0;
		c->res.code = SW_ETIMEDOUT;
		snprintf(c->res.error, sizeof(c->res.error),
			 c->sent ? "no answer after %.1f s"
				 : "not connected: the command was "
				   "not delivered within %.1f s",
			 c->timeout_ms / 1000.0);
		c->finished = 1;
	}
	c->done(&c->res, c->arg);
	uv_close((uv_handle_t *)&c->timer, cmd_closed);
}

static void cmd_finish_later(struct chan_cmd *c)
{
	c->finished = 1;
	uv_timer_start(&c->timer, on_cmd_timer, 0, 0);
}

static void cmd_fail(struct chan_cmd *c, int code, const char *why)
{
	c->res.status = 0;
	c->res.code = code;
	snprintf(c->res.error, sizeof(c->res.error), "%s", why);
	cmd_finish_later(c);
}

static json_t *cmd_json(const struct chan_cmd *c, const struct system *sys)
{
	int64_t left = c->deadline - sw_mono_ms() - AGENT_MARGIN_MS;
	/* on the agent's clock, as it last told of it */
	json_int_t deadline = sw_now_ms() + (left > 0 ? left : 0) + sys->clock_skew_ms;

	return json_pack("{ss ss ss ss* sI}", "id", c->id, "method", c->method, "path", c->path,
			 "body", c->body, "deadline", deadline);
}

/* Answers the held poll with every command not sent yet. */
static void chan_flush(struct chan *ch)
{
	struct system *sys = sw_strmap_get(ch->s->systems, ch->system);
	json_t *cmds;

	if (!ch->held || !sys || !(cmds = json_array()))
		return;
	for (struct chan_cmd *c = ch->cmds; c; c = c->next) {
		if (!c->sent) {
			json_array_append_new(cmds, cmd_json(c, sys));
			c->sent = 1;
		}
	}
	uv_timer_stop(&ch->hold);
	sw_http_reply_json(ch->held, 200,
			   json_pack("{so so*}", "commands", cmds, "heartbeat", ch->heartbeat));
	ch->heartbeat = NULL;
	ch->held = NULL;
}

static void on_hold(uv_timer_t *t)
{
	chan_flush(t->data);
}

static void hold_closed(uv_handle_t *h)
{
	free(h->data);
}

static struct chan *chan_get(struct server *s, struct system *sys)
{
	struct chan *ch = sys->chan;

	if (ch)
		return ch;
	if (!(ch = calloc(1, sizeof(*ch))))
		return NULL;
	ch->s = s;
	snprintf(ch->system, sizeof(ch->system), "%s", sys->name);
	uv_timer_init(s->loop, &ch->hold);
	ch->hold.data = ch;
	sys->chan = ch;
	return ch;
}

int channel_connected(const struct server *s, const struct system *sys)
{
	const struct chan *ch = sys->chan;

	return ch && (ch->held || (ch->polled_at && sw_mono_ms() - ch->polled_at < CONNECTED_MS));
}

int channel_call(struct server *s, struct system *sys, const char *method, const char *path,
		 json_t *body, unsigned timeout_ms, sw_http_done done, void *arg)
{
	static int64_t started; /* ids differ from one run of the server to the next */
	struct chan *ch = chan_get(s, sys);
	struct chan_cmd *c = calloc(1, sizeof(*c));

	if (!started)
		started = sw_now_ms();

	if (!ch || !c || !(c->path = strdup(path)) || (body && !(c->body = sw_json_dump(body)))) {
		json_decref(body);
		if (c)
			free(c->path);
		free(c);
		return SW_ENOMEM;
	}
	json_decref(body);
	c->s = s;
	snprintf(c->system, sizeof(c->system), "%s", sys->name);
	snprintf(c->id, sizeof(c->id), "%" PRId64 "-%" PRIu64, started, ++next_id);
	snprintf(c->method, sizeof(c->method), "%s", method);
	c->timeout_ms = timeout_ms;
	c->deadline = sw_mono_ms() + timeout_ms;
	c->done = done;
	c->arg = arg;
	uv_timer_init(s->loop, &c->timer);
	c->timer.data = c;
	uv_timer_start(&c->timer, on_cmd_timer, timeout_ms, 0);
	struct chan_cmd **tail = &ch->cmds; /* in the order they were asked for */
	while (*tail)
		tail = &(*tail)->next;
	*tail = c;
	chan_flush(ch);
	return 0;
}

/* An answer the agent brought: the command it names is done. */
static void take_answer(struct chan *ch, const json_t *a)
{
	const char *id = json_string_value(json_object_get(a, "id"));
	const char *text = json_string_value(json_object_get(a, "body"));
	json_int_t status = json_integer_value(json_object_get(a, "status"));

	for (struct chan_cmd *c = ch->cmds; c; c = c->next) {
		if (strcmp(c->id, id) != 0)
			continue;
		chan_unlink(ch, c);
		c->res.status = (long)status;
		c->res.body = strdup(text ? text : "");
		c->res.len = c->res.body ? strlen(c->res.body) : 0;
		if (!c->res.body) {
			cmd_fail(c, SW_ENOMEM, "out of memory for the agent's answer");
			return;
		}
		cmd_finish_later(c);
		return;
	}
}

static int in_list(const json_t *ids, const char *id)
{
	const json_t *v;
	size_t i;

	json_array_foreach(ids, i, v)
	{
		if (json_is_string(v) && strcmp(json_string_value(v), id) == 0)
			return 1;
	}
	return 0;
}

/* How late the loop runs: as the timer last found it, or, when the timer is itself
 * overdue (the loop was held up, and socket events come first), that much. */
static int64_t loop_lag_ms(const struct server *s)
{
	int64_t overdue = sw_mono_ms() - s->lag_due;

	return overdue > s->lag_ms ? overdue : s->lag_ms;
}

int channel_admit(struct server *s, struct sw_http_req *req)
{
	if (s->stopping) {
		sw_http_reply_error(req, 503, "the site server is stopping");
		return SW_EBUSY;
	}
	/* The loop runs late: whatever costs it, a poll put off costs the least. Answers it
	 * carries come again with the agent's next poll. */
	if (loop_lag_ms(s) > LAG_SHED_MS) {
		s->polls_shed++;
		sw_http_reply_busy(req, SHED_RETRY_MIN_S + sw_random_u32() % SHED_RETRY_SPREAD_S,
				   "the site server is busy; come back later");
		return SW_EBUSY;
	}
	return 0;
}

struct chan *channel_polled(struct server *s, struct system *sys, struct sw_http_req *req)
{
	struct chan *ch = chan_get(s, sys);

	if (!ch) {
		sw_http_reply_error(req, 503, "out of memory");
		return NULL;
	}
	if (ch->held) { /* the agent came back on another connection */
		sw_http_reply_error(ch->held, 409, "another poll of %s replaced this one",
				    sys->name);
		ch->held = NULL;
		uv_timer_stop(&ch->hold);
	}
	ch->polled_at = sw_mono_ms();
	return ch;
}

void channel_hold(struct chan *ch, struct sw_http_req *req, const struct sw_poll *poll,
		  json_t *heartbeat)
{
	json_t *a;
	size_t i;

	if (poll->has_heartbeat) {
		json_decref(ch->heartbeat);
		ch->heartbeat = heartbeat;
	}
	json_array_foreach(poll->answers, i, a) take_answer(ch, a);
	/* sent, neither answered nor running: the reply that carried it was lost */
	for (struct chan_cmd *c = ch->cmds; c; c = c->next) {
		if (c->sent && !in_list(poll->running, c->id))
			c->sent = 0;
	}
	ch->held = req;
	if (ch->heartbeat) {
		chan_flush(ch);
		return;
	}
	for (struct chan_cmd *c = ch->cmds; c; c = c->next) {
		if (!c->sent) {
			chan_flush(ch);
			return;
		}
	}
	uv_timer_start(&ch->hold, on_hold,
		       poll->hold_ms < HOLD_MAX_MS ? (uint64_t)poll->hold_ms : HOLD_MAX_MS, 0);
}

void channel_forget(struct server *s, struct system *sys)
{
	struct chan *ch = sys->chan;

	if (!ch)
		return;
	sys->chan = NULL;
	if (ch->held)
		sw_http_reply_error(ch->held, s->stopping ? 503 : 403, "%s",
				    s->stopping ? "the site server is stopping"
						: "the system was removed");
	while (ch->cmds) {
		struct chan_cmd *c = ch->cmds;

		ch->cmds = c->next;
		cmd_fail(c, s->stopping ? SW_EBUSY : SW_ENOTFOUND,
			 s->stopping ? "the site server is stopping" : "the system was removed");
	}
	json_decref(ch->heartbeat);
	ch->heartbeat = NULL;
	uv_close((uv_handle_t *)&ch->hold, hold_closed);
}

static void forget_each(const char *key, void *value, void *arg)
{
	(void)key;
	channel_forget(arg, value);
}

static void on_lag(uv_timer_t *t)
{
	struct server *s = t->data;
	int64_t now = sw_mono_ms();

	s->lag_ms = now > s->lag_due ? now - s->lag_due : 0;
	s->lag_due = now + LAG_SAMPLE_MS;
	if (s->lag_ms > s->lag_peak_ms)
		s->lag_peak_ms = s->lag_ms;
	if (s->polls_shed && now - s->shed_reported >= 1000) { /* once a second at most */
		s->shed_reported = now;
		sw_warn("shedding load: %" PRIu64 " polls answered 503 (the loop ran up to %" PRId64
			" ms late)",
			s->polls_shed, s->lag_peak_ms);
		s->polls_shed = 0;
		s->lag_peak_ms = 0;
	}
}

void channel_start(struct server *s)
{
	uv_timer_init(s->loop, &s->lag_timer);
	s->lag_timer.data = s;
	s->lag_due = sw_mono_ms() + LAG_SAMPLE_MS;
	uv_timer_start(&s->lag_timer, on_lag, LAG_SAMPLE_MS, LAG_SAMPLE_MS);
}

void channel_stop(struct server *s)
{
	uv_timer_stop(&s->lag_timer);
	sw_strmap_each(s->systems, forget_each, s);
}
