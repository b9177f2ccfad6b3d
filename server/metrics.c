/*
 * GET /metrics: the site server in Prometheus text format, for an admin certificate or
 * a scrape certificate (siteward cert scrape). Counters are counted where their events
 * happen; what is a count of the site's state (systems by health, an upgrade's systems
 * by state, the write queue's length) is worked out at each scrape, and licenses in
 * use against each product's count are read from the database through the write
 * queue, so a scrape never reads the database on the loop.
 */
#include "server.h"
#include "upgrade.h"

#include "error.h"
#include "log.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What registry_health() says, in the order shown. */
static const char *const health_names[] = {"ok", "late", "offline", "enrolled"};
#define NHEALTH (sizeof(health_names) / sizeof(health_names[0]))
#define NYSTATE (SW_SYS_REMOVED + 1)

static struct sw_gauge *systems_by_health[NHEALTH];
static struct sw_gauge *upgrade_systems[NYSTATE];
static struct sw_gauge *upgrade_running, *dbq_queued;
static struct sw_gauge *ca_end, *ca_phase_g, *ca_trusting, *ca_reissued;

int metrics_open(struct server *s, char *err, size_t errlen)
{
	struct sw_metrics *m = sw_metrics_new();

	if (!(s->metrics = m)) {
		sw_seterr(err, errlen, "out of memory");
		return SW_ENOMEM;
	}
	for (size_t i = 0; i < NHEALTH; i++) {
		const char *const l[] = {"health", health_names[i], NULL};

		systems_by_health[i] = sw_metrics_gauge(
		    m, "siteward_systems",
		    "Enrolled systems by health: ok, late (no heartbeat for 3 intervals), offline "
		    "(10 intervals), enrolled (never heard from).",
		    l);
	}
	s->mx_heartbeats = sw_metrics_counter(m, "siteward_heartbeats_received_total",
					      "Heartbeats heard from agents.", NULL);
	s->mx_usage_records =
	    sw_metrics_counter(m, "siteward_usage_records_received_total",
			       "Usage records received from agents and license servers, in "
			       "batches stored (duplicates included).",
			       NULL);
	s->mx_content_bytes =
	    sw_metrics_counter(m, "siteward_content_bytes_served_total",
			       "Bytes of deployments' packages the site server has sent (to agents "
			       "and distribution points), as the answers were started.",
			       NULL);
	s->mx_db_job =
	    sw_metrics_histogram(m, "siteward_db_job_duration_seconds",
				 "Time a job of the database write queue took on its connection.",
				 NULL, sw_metrics_latency_us, sw_metrics_latency_n, 1e6);
	s->mx_db_wait = sw_metrics_histogram(
	    m, "siteward_db_queue_wait_seconds",
	    "Time a job of the database write queue waited behind the jobs before it.", NULL,
	    sw_metrics_latency_us, sw_metrics_latency_n, 1e6);
	dbq_queued = sw_metrics_gauge(m, "siteward_db_queue_length",
				      "Jobs of the database write queue not yet started.", NULL);
	upgrade_running =
	    sw_metrics_gauge(m, "siteward_upgrade_running",
			     "1 while a site upgrade (or its rollback) runs, else 0.", NULL);
	for (size_t i = 0; i < NYSTATE; i++) {
		const char *const l[] = {"state", sw_sys_state_name(i), NULL};

		upgrade_systems[i] = sw_metrics_gauge(
		    m, "siteward_upgrade_systems",
		    "Systems of the latest site upgrade by state (all 0 when there was none).", l);
	}
	ca_end =
	    sw_metrics_gauge(m, "siteward_ca_expiry_timestamp_seconds",
			     "When the issuing site CA ends (Unix time): alert well before.", NULL);
	ca_phase_g = sw_metrics_gauge(
	    m, "siteward_ca_rotation_phase",
	    "A rotation of the site's CA: 0 none, 1 introducing the new CA, 2 reissuing under it.",
	    NULL);
	ca_trusting = sw_metrics_gauge(m, "siteward_ca_rotation_systems_trusting",
				       "Systems that trust every CA of the site.", NULL);
	ca_reissued = sw_metrics_gauge(m, "siteward_ca_rotation_systems_reissued",
				       "Systems holding a certificate of the issuing CA.", NULL);
	if (sw_metrics_error(m)) {
		sw_seterr(err, errlen, "metrics: %s", sw_metrics_error(m));
		return SW_EINVAL;
	}
	return 0;
}

void metrics_free(struct server *s)
{
	sw_metrics_free(s->metrics);
	s->metrics = NULL;
}

struct health_count {
	const struct server *s;
	int64_t now;
	int64_t n[NHEALTH];
};

static void count_health(const char *key, void *value, void *arg)
{
	struct health_count *hc = arg;
	const char *h = registry_health(hc->s, value, hc->now);

	(void)key;
	for (size_t i = 0; i < NHEALTH; i++)
		if (strcmp(h, health_names[i]) == 0)
			hc->n[i]++;
}

/* The gauges that are counts of the site's state, as of now. */
static void state_now(struct server *s)
{
	struct health_count hc = {.s = s, .now = sw_now_ms()};
	int64_t by_state[NYSTATE] = {0};
	const struct upgrade *u = s->upgrade;

	sw_strmap_each(s->systems, count_health, &hc);
	for (size_t i = 0; i < NHEALTH; i++)
		sw_gauge_set(systems_by_health[i], hc.n[i]);
	sw_gauge_set(dbq_queued, (int64_t)dbq_length(s));
	for (size_t i = 0; u && i < u->nsys; i++)
		if ((size_t)u->sys[i].state < NYSTATE)
			by_state[u->sys[i].state]++;
	for (size_t i = 0; i < NYSTATE; i++)
		sw_gauge_set(upgrade_systems[i], by_state[i]);
	sw_gauge_set(upgrade_running,
		     u && (u->state == SW_RUN_RUNNING || u->state == SW_RUN_ROLLING_BACK) ? 1 : 0);
	struct ca_summary ca;

	ca_summarize(s, &ca);
	sw_gauge_set(ca_end, ca.not_after / 1000);
	sw_gauge_set(ca_phase_g, (int64_t)ca.phase);
	sw_gauge_set(ca_trusting, (int64_t)ca.trusting);
	sw_gauge_set(ca_reissued, (int64_t)ca.reissued);
}

/* A scrape waiting for the licenses in use, read by the write queue. */
struct scrape {
	struct sw_http_req *req;
	struct sw_metrics *products; /* this scrape's: the product table changes */
	int rc;
	char err[256];
};

static int license_row(void *arg, int ncols, const struct sw_db_val *row)
{
	struct scrape *sc = arg;
	const char *const l[] = {"product", row[0].s ? row[0].s : "", NULL};

	(void)ncols;
	sw_gauge_set(sw_metrics_gauge(sc->products, "siteward_licenses",
				      "Licenses of each product of the site.", l),
		     row[1].i);
	sw_gauge_set(sw_metrics_gauge(sc->products, "siteward_licenses_in_use",
				      "Licenses of each product in use, as its license servers "
				      "last reported.",
				      l),
		     row[2].i);
	return 0;
}

static void licenses_run(struct sw_db *db, void *arg)
{
	struct scrape *sc = arg;

	sc->rc =
	    sw_db_exec(db,
		       "SELECT p.name, p.licenses, "
		       "(SELECT COALESCE(SUM(a.in_use), 0) FROM allotments a "
		       "WHERE a.product = p.name OR substr(a.product, 1, length(p.name) + 9) = "
		       "p.name || '/reserve:') "
		       "FROM products p ORDER BY p.name",
		       NULL, 0, license_row, sc, NULL, sc->err, sizeof(sc->err));
}

static void licenses_done(struct server *s, void *arg)
{
	struct scrape *sc = arg;
	char *text = NULL, *more = NULL;
	size_t len, more_len = 0;

	state_now(s);
	if (sc->rc)
		sw_warn("metrics: cannot read licenses in use: %s", sc->err);
	if (sw_metrics_render(s->metrics, &text, &len) ||
	    (!sc->rc && sw_metrics_render(sc->products, &more, &more_len))) {
		free(text);
		sw_http_reply_error(sc->req, 500, "out of memory");
		goto out;
	}
	if (more_len) {
		char *all = realloc(text, len + more_len + 1);

		if (!all) {
			free(text);
			sw_http_reply_error(sc->req, 500, "out of memory");
			goto out;
		}
		memcpy(all + len, more, more_len + 1);
		text = all;
	}
	sw_http_reply_text(sc->req, 200, SW_METRICS_CONTENT_TYPE, text);
out:
	free(more);
	sw_metrics_free(sc->products);
	free(sc);
}

void metrics_get(struct sw_http_req *req, void *arg)
{
	struct server *s = arg;
	struct scrape *sc = calloc(1, sizeof(*sc));

	if (!sc || !(sc->products = sw_metrics_new())) {
		free(sc);
		sw_http_reply_error(req, 500, "out of memory");
		return;
	}
	sc->req = req;
	if (dbq_push(s, DBQ_SLOW_MS, licenses_run, licenses_done, sc)) {
		sw_metrics_free(sc->products);
		free(sc);
		sw_http_reply_error(req, 500, "out of memory");
	}
}
