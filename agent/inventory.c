/*
 * The machine's inventory (lib/inventory.h) for the site server: the whole of it once,
 * then only what changed. It is collected on the thread pool, with a deadline, after the
 * first heartbeat the server answers, when dpkg's status file changes (an inotify watch
 * on its folder, settled for a moment so one dpkg run is one delta), and once a day for
 * what no watch sees (a disk added, an address changed).
 *
 * What the site acknowledged is kept in <dir>/inventory.json ({"seq", "inventory"}): the
 * next delta is from there. A server that does not have that one (restored, or the
 * system removed and enrolled again) answers 409, and the whole inventory goes instead.
 */
#include "agent.h"

#include "error.h"
#include "inventory.h"
#include "json.h"
#include "log.h"
#include "util.h"
#include "work.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SETTLE_MS     2000		    /* after dpkg's status file changed */
#define DAILY_MS      (24 * 3600 * 1000ULL) /* the full pass no watch replaces */
#define RETRY_MS      60000		    /* after an upload failed */
#define COLLECT_BOUND 60000		    /* a collection's deadline on the thread pool */
#define STATE_MAX     (64 * 1024 * 1024)

struct inventory {
	struct agent *a;
	char status[PATH_MAX]; /* dpkg's status file */
	char state[PATH_MAX + 32];
	uv_fs_event_t watch;
	uv_timer_t settle, daily;
	int watching, open;
	json_t *acked; /* the inventory the site has, NULL for none */
	int64_t seq;
	int busy;    /* a collection or an upload is under way */
	int again;   /* something changed meanwhile: collect once more after */
	int full;    /* send the whole inventory next */
	int started; /* the first collection was asked for */
	int stopping;
};

struct collect_job {
	struct inventory *inv;
	char status[PATH_MAX];
	json_t *result;
	char err[PATH_MAX + 128];
	int rc;
};

struct upload {
	struct inventory *inv;
	json_t *sent; /* the inventory this upload brings the site to */
	int64_t seq;
	size_t bytes;
	int full;
};

static void collect(struct inventory *inv);
static void on_timer(uv_timer_t *t);

static void state_load(struct inventory *inv)
{
	char *text = NULL, err[PATH_MAX + 128];
	size_t len = 0;
	json_t *j = NULL;
	int64_t seq = 0;

	if (sw_file_read(inv->state, STATE_MAX, &text, &len, err, sizeof(err)))
		return;
	/* the agent's own file; checked all the same, and a bad one is a fresh start */
	if (sw_json_parse_object(text, len, &j, NULL, 0) == 0 &&
	    sw_json_int(j, "seq", 1, INT64_MAX / 2, 1, &seq, NULL, 0) == 0 &&
	    sw_inv_check(json_object_get(j, "inventory"), 0, err, sizeof(err)) == 0) {
		inv->acked = json_incref(json_object_get(j, "inventory"));
		inv->seq = seq;
	}
	json_decref(j);
	free(text);
}

static void state_save(struct inventory *inv)
{
	char err[PATH_MAX + 128], *text;
	json_t *j = json_pack("{sI sO}", "seq", (json_int_t)inv->seq, "inventory", inv->acked);

	text = j ? sw_json_dump(j) : NULL;
	json_decref(j);
	if (!text || sw_file_write_atomic(inv->state, text, strlen(text), 0600, err, sizeof(err)))
		sw_warn("inventory: cannot keep what the site has (%s); the next upload is the "
			"whole inventory",
			text ? err : "out of memory");
	free(text);
}

static void on_uploaded(const struct sw_http_result *res, void *arg)
{
	struct upload *u = arg;
	struct inventory *inv = u->inv;

	if (res->status == 200 && !inv->stopping) {
		json_decref(inv->acked);
		inv->acked = json_incref(u->sent);
		inv->seq = u->seq;
		inv->full = 0;
		state_save(inv);
		sw_info("inventory: %s sent (%zu bytes), the site has version %lld",
			u->full ? "the whole inventory" : "a delta", u->bytes, (long long)u->seq);
		inv->busy = 0;
		if (inv->again) {
			inv->again = 0;
			collect(inv);
		}
	} else if (res->status == 409 && !inv->stopping && !u->full) {
		/* the site has another version than ours: the whole, at once */
		sw_info("inventory: the site server has no version %lld; sending the whole "
			"inventory",
			(long long)inv->seq);
		inv->full = 1;
		inv->busy = 0;
		collect(inv);
	} else if (!inv->stopping) {
		sw_warn("inventory: not sent (%s); trying again in %d s",
			res->status ? "refused" : res->error, RETRY_MS / 1000);
		inv->busy = 0;
		uv_timer_start(&inv->settle, on_timer, RETRY_MS, 0);
	}
	json_decref(u->sent);
	free(u);
}

static void upload(struct inventory *inv, json_t *now)
{
	struct agent *a = inv->a;
	char url[400], *body = NULL;
	struct upload *u = calloc(1, sizeof(*u));
	json_t *msg = NULL;
	int same = 0;

	if (!u)
		goto fail;
	u->inv = inv;
	u->sent = json_incref(now);
	u->seq = inv->seq + 1;
	if (inv->acked && !inv->full) {
		json_t *d = sw_inv_delta(inv->acked, now, &same);

		if (same) {
			/* nothing new: nothing sent */
			json_decref(u->sent);
			free(u);
			inv->busy = 0;
			if (inv->again) {
				inv->again = 0;
				collect(inv);
			}
			return;
		}
		if (!d)
			goto fail;
		json_object_set_new(d, "from", json_integer(inv->seq));
		msg = d;
	} else {
		msg = json_pack("{sO sO}", "hardware", json_object_get(now, "hardware"), "packages",
				json_object_get(now, "packages"));
		u->full = 1;
	}
	if (!msg)
		goto fail;
	json_object_set_new(msg, "seq", json_integer(u->seq));
	body = sw_json_dump(msg);
	json_decref(msg);
	if (!body)
		goto fail;
	u->bytes = strlen(body);
	snprintf(url, sizeof(url), "%s/v1/inventory", a->server);
	if (sw_http_client_request(a->client, "POST", url, body, u->bytes, a->request_timeout_ms,
				   on_uploaded, u) != 0)
		goto fail;
	free(body);
	return;
fail:
	free(body);
	if (u)
		json_decref(u->sent);
	free(u);
	inv->busy = 0;
	sw_warn("inventory: cannot send it: out of memory");
}

static void collect_run(void *arg)
{
	struct collect_job *j = arg;

	j->rc = sw_inv_collect("", j->status, &j->result, j->err, sizeof(j->err));
}

static void collect_done(void *arg, int timed_out)
{
	struct collect_job *j = arg;
	struct inventory *inv = j->inv;

	if (inv->stopping)
		return;
	if (timed_out || j->rc) {
		sw_warn("inventory: not collected (%s); trying again in %d s",
			timed_out ? "it took longer than a minute" : j->err, RETRY_MS / 1000);
		inv->busy = 0;
		uv_timer_start(&inv->settle, on_timer, RETRY_MS, 0);
		return;
	}
	upload(inv, j->result);
}

static void collect_release(void *arg)
{
	struct collect_job *j = arg;

	json_decref(j->result);
	free(j);
}

static void collect(struct inventory *inv)
{
	struct collect_job *j;

	if (inv->stopping)
		return;
	if (inv->busy) {
		inv->again = 1;
		return;
	}
	if (!(j = calloc(1, sizeof(*j))))
		return;
	j->inv = inv;
	snprintf(j->status, sizeof(j->status), "%s", inv->status);
	inv->busy = 1;
	if (sw_work_start(inv->a->loop, COLLECT_BOUND, collect_run, collect_done, collect_release,
			  j)) {
		inv->busy = 0;
		free(j);
	}
}

static void on_timer(uv_timer_t *t)
{
	collect(t->data);
}

static void on_change(uv_fs_event_t *h, const char *filename, int events, int status)
{
	struct inventory *inv = h->data;
	const char *base = strrchr(inv->status, '/');

	(void)events;
	/* dpkg writes status-new, then renames it over status */
	if (status < 0 || !filename || strcmp(filename, base ? base + 1 : inv->status) != 0)
		return;
	uv_timer_start(&inv->settle, on_timer, SETTLE_MS, 0);
}

int inventory_start(struct agent *a)
{
	struct inventory *inv = calloc(1, sizeof(*inv));
	char dir[PATH_MAX];
	char *slash;

	if (!inv)
		return SW_ENOMEM;
	inv->a = a;
	a->inventory = inv;
	snprintf(inv->status, sizeof(inv->status), "%s",
		 sw_conf_get(a->conf, "inventory", "dpkg_status", "/var/lib/dpkg/status"));
	sw_path_join(inv->state, sizeof(inv->state), a->dir, "inventory.json");
	state_load(inv);
	uv_timer_init(a->loop, &inv->settle);
	uv_timer_init(a->loop, &inv->daily);
	inv->settle.data = inv->daily.data = inv;
	inv->open = 1;
	uv_timer_start(&inv->daily, on_timer, DAILY_MS, DAILY_MS);
	snprintf(dir, sizeof(dir), "%s", inv->status);
	if ((slash = strrchr(dir, '/')))
		*(slash == dir ? slash + 1 : slash) = '\0';
	uv_fs_event_init(a->loop, &inv->watch);
	inv->watch.data = inv;
	if (uv_fs_event_start(&inv->watch, on_change, dir, 0) == 0)
		inv->watching = 1;
	else
		sw_warn("inventory: cannot watch %s; packages installed or removed are seen at "
			"the daily pass",
			dir);
	return 0;
}

void inventory_heard(struct agent *a)
{
	struct inventory *inv = a->inventory;

	if (inv && !inv->started) {
		inv->started = 1;
		collect(inv);
	}
}

void inventory_stop(struct agent *a)
{
	struct inventory *inv = a->inventory;

	if (!inv || !inv->open)
		return;
	inv->stopping = 1;
	inv->open = 0;
	uv_close((uv_handle_t *)&inv->settle, NULL);
	uv_close((uv_handle_t *)&inv->daily, NULL);
	uv_close((uv_handle_t *)&inv->watch, NULL);
}

void inventory_free(struct agent *a)
{
	struct inventory *inv = a->inventory;

	if (!inv)
		return;
	json_decref(inv->acked);
	free(inv);
	a->inventory = NULL;
}
