/*
 * The agent's metrics, written as a file for node_exporter's textfile collector: the
 * agent opens no port on the machines it manages, so nothing can scrape it, and the
 * machine's node_exporter (already there on a monitored fleet) serves the file with
 * its own. Every METRICS_INTERVAL_MS the loop sets what it knows, and the thread pool
 * counts the usage cache, writes a new file and renames it over the old one, so a
 * slow disk delays no heartbeat and the collector never reads half a file.
 */
#include "agent.h"

#include "error.h"
#include "log.h"
#include "metrics.h"
#include "proto.h"
#include "util.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define METRICS_INTERVAL_MS 15000

/* The roles an agent knows (roles.c), each shown 0 or 1. */
static const char *const known_roles[] = {"software-metering", "test"};
#define NROLES	   (sizeof(known_roles) / sizeof(known_roles[0]))
#define NSVCSTATES (SW_SVC_UNKNOWN + 1)

struct agent_metrics {
	struct agent *a;
	struct sw_metrics *reg;
	char path[PATH_MAX];
	char cache[PATH_MAX + 16];
	uv_timer_t timer;
	uv_work_t work;
	int busy, closing, timer_open;
	struct sw_gauge *channel_open, *usage_pending, *roles[NROLES];
	struct sw_gauge *services[NSVCSTATES];
	int rc;
	char err[300];
};

/* Usage records in the cache: what waits for upload (siteward-run's offline runs and
 * passive metering's, both written there). */
static int64_t cache_count(const char *dir)
{
	int64_t n = 0;
	struct dirent *de;
	DIR *d;
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

	if (dfd < 0 || !(d = fdopendir(dfd))) {
		if (dfd >= 0)
			close(dfd);
		return 0;
	}
	while ((de = readdir(d))) {
		size_t len = strlen(de->d_name);

		if (len > 5 && strcmp(de->d_name + len - 5, ".json") == 0)
			n++;
	}
	closedir(d);
	return n;
}

static void write_run(uv_work_t *w)
{
	struct agent_metrics *x = w->data;
	char *text;
	size_t len;

	sw_gauge_set(x->usage_pending, cache_count(x->cache));
	if ((x->rc = sw_metrics_render(x->reg, &text, &len))) {
		snprintf(x->err, sizeof(x->err), "out of memory");
		return;
	}
	x->rc = sw_file_write_atomic(x->path, text, len, 0644, x->err, sizeof(x->err));
	free(text);
}

static void write_done(uv_work_t *w, int status)
{
	struct agent_metrics *x = w->data;

	x->busy = 0;
	if (x->rc && !x->closing)
		sw_warn("metrics: %s", x->err);
	if (x->closing && !x->timer_open) {
		sw_metrics_free(x->reg);
		free(x);
	}
}

static void on_tick(uv_timer_t *t)
{
	struct agent_metrics *x = t->data;
	struct agent *a = x->a;
	int64_t by_state[NSVCSTATES] = {0};
	size_t i;
	json_t *r;

	if (x->busy)
		return; /* the disk is slow: the next tick writes what is new then */
	sw_gauge_set(x->channel_open, channel_open(a));
	for (struct service *s = supervisor_first(a->sup); s; s = supervisor_next(s))
		by_state[service_state(s)]++;
	for (i = 0; i < NSVCSTATES; i++)
		sw_gauge_set(x->services[i], by_state[i]);
	for (i = 0; i < NROLES; i++) {
		size_t k;
		int has = 0;

		json_array_foreach(a->roles, k, r) has |=
		    json_is_string(r) && strcmp(json_string_value(r), known_roles[i]) == 0;
		sw_gauge_set(x->roles[i], has);
	}
	x->work.data = x;
	if (uv_queue_work(a->loop, &x->work, write_run, write_done) == 0)
		x->busy = 1;
}

static int registry(struct agent_metrics *x)
{
	struct sw_metrics *m = x->reg;
	struct agent *a = x->a;
	size_t i;

	a->mx_hb_sent = sw_metrics_counter(m, "siteward_agent_heartbeats_sent_total",
					   "Heartbeats the site server took.", NULL);
	a->mx_hb_failed = sw_metrics_counter(
	    m, "siteward_agent_heartbeats_failed_total",
	    "Heartbeats that did not reach the site server, or were refused.", NULL);
	x->channel_open = sw_metrics_gauge(
	    m, "siteward_agent_channel_open",
	    "1 while the channel to the site server works, 0 while it backs off.", NULL);
	for (i = 0; i < NSVCSTATES; i++) {
		const char *const l[] = {"state", sw_svc_state_name((enum sw_svc_state)i), NULL};

		x->services[i] = sw_metrics_gauge(m, "siteward_agent_services",
						  "Role services supervised here, by state.", l);
	}
	for (i = 0; i < NROLES; i++) {
		const char *const l[] = {"role", known_roles[i], NULL};

		x->roles[i] = sw_metrics_gauge(m, "siteward_agent_role",
					       "1 for each role the site server wants here.", l);
	}
	x->usage_pending = sw_metrics_gauge(
	    m, "siteward_agent_usage_pending",
	    "Usage records in the usage cache (offline and passive metering), waiting for "
	    "upload.",
	    NULL);
	return sw_metrics_error(m) ? SW_EINVAL : 0;
}

int metrics_start(struct agent *a)
{
	struct agent_metrics *x;
	const char *file = sw_conf_get(a->conf, "metrics", "file", NULL);
	char dir[PATH_MAX + 16];

	if (file && !file[0])
		return 0; /* turned off */
	if (!(x = calloc(1, sizeof(*x))) || !(x->reg = sw_metrics_new())) {
		free(x);
		return SW_ENOMEM;
	}
	x->a = a;
	snprintf(x->cache, sizeof(x->cache), "%s/usage-cache", a->dir);
	if (file) {
		snprintf(x->path, sizeof(x->path), "%s", file);
	} else {
		snprintf(dir, sizeof(dir), "%s/metrics", a->dir);
		mkdir(dir, 0755);
		snprintf(x->path, sizeof(x->path), "%s/siteward_agent.prom", dir);
	}
	if (registry(x)) {
		sw_err("metrics: %s", sw_metrics_error(x->reg));
		sw_metrics_free(x->reg);
		free(x);
		return SW_EINVAL;
	}
	uv_timer_init(a->loop, &x->timer);
	x->timer.data = x;
	x->timer_open = 1;
	/* the first file soon, so a collector has one minutes before the agent settles */
	uv_timer_start(&x->timer, on_tick, 1000, METRICS_INTERVAL_MS);
	a->metrics = x;
	return 0;
}

static void timer_closed(uv_handle_t *h)
{
	struct agent_metrics *x = h->data;

	x->timer_open = 0;
	if (!x->busy) {
		sw_metrics_free(x->reg);
		free(x);
	}
}

void metrics_stop(struct agent *a)
{
	struct agent_metrics *x = a->metrics;

	if (!x)
		return;
	a->metrics = NULL;
	/* the counters are observed no more: the channel is stopped first */
	a->mx_hb_sent = a->mx_hb_failed = NULL;
	x->closing = 1;
	uv_timer_stop(&x->timer);
	uv_close((uv_handle_t *)&x->timer, timer_closed);
}
