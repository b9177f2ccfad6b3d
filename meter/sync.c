/*
 * Talking to the site server: the product configuration every 10 s (cached on disk, so
 * the meter starts and serves with the server down) and pending usage every 5 s in
 * batches. Every call has the client's connect bound and a total bound; a record leaves
 * the pending set only after a 200 that covered it, and ingestion is idempotent by id,
 * so a retried batch is harmless.
 */
#include "meter.h"

#include "error.h"
#include "json.h"
#include "log.h"
#include "pki.h"
#include "strmap.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CONNECT_TIMEOUT_MS 5000
#define REQUEST_TIMEOUT_MS 10000
#define CONFIG_INTERVAL_MS 10000
#define UPLOAD_INTERVAL_MS 5000
#define CONFIG_MAX	   SW_HTTP_CLIENT_MAX_BODY

struct cache_job {
	uv_work_t work;
	char path[PATH_MAX + 32];
	char *text;
	int rc;
	char err[256];
};

/* Logs only changes between reachable and not, so a server away for days costs one
 * line, not one per call. */
static void server_state(struct meter *m, int ok, const char *what, const char *why)
{
	if (ok && !m->server_reachable)
		sw_info("site server %s reached again", m->server);
	else if (!ok && m->server_reachable)
		sw_warn("site server %s: %s: %s; serving from the cached configuration and "
			"keeping usage on disk",
			m->server, what, why);
	m->server_reachable = ok;
}

static int apply_config(struct meter *m, const char *text, size_t len, char *err, size_t errlen)
{
	struct meter_config conf;
	int rc;

	if ((rc = lease_config_parse(text, len, &conf, err, errlen)))
		return rc;
	lease_configure(m->table, &conf, sw_now_ms(), sw_mono_ms());
	if (conf.poll_ms)
		m->poll_ms = conf.poll_ms;
	lease_config_cleanup(&conf);
	return 0;
}

/* Up to this many serials in one push: a removal revokes two. */
#define PUSH_MAX_REVOKED 64

int sync_revoked(struct meter *m, const char *body, size_t len, char *err, size_t errlen)
{
	json_t *j = NULL, *arr, *v;
	size_t i, n = 0;
	int rc = 0;

	if (len == 0)
		return 0;
	if ((rc = sw_json_parse_object(body, len, &j, err, errlen)))
		return rc;
	arr = json_object_get(j, "revoked");
	if (!arr)
		goto out;
	if (!json_is_array(arr) || json_array_size(arr) > PUSH_MAX_REVOKED) {
		sw_seterr(err, errlen, "'revoked' must be an array of at most %d serials",
			  PUSH_MAX_REVOKED);
		rc = SW_EINVAL;
		goto out;
	}
	json_array_foreach(arr, i, v)
	{
		const char *s = json_string_value(v);
		size_t sl = s ? strlen(s) : 0;

		/* as the configuration's list is checked (lease.c) */
		if (!s || sl == 0 || sl > 40 || sl != json_string_length(v) ||
		    strspn(s, "0123456789abcdef") != sl) {
			sw_seterr(err, errlen,
				  "revoked[%zu] must be a certificate serial in lowercase hex", i);
			rc = SW_EINVAL;
			goto out;
		}
	}
	if ((!m->table->revoked && !(m->table->revoked = sw_strmap_new())) ||
	    (!m->pushed_revoked && !(m->pushed_revoked = sw_strmap_new()))) {
		sw_seterr(err, errlen, "out of memory");
		rc = SW_ENOMEM;
		goto out;
	}
	json_array_foreach(arr, i, v)
	{
		const char *s = json_string_value(v);

		if (sw_strmap_get(m->table->revoked, s))
			continue;
		if (sw_strmap_set(m->table->revoked, s, (void *)1) ||
		    (sw_strmap_count(m->pushed_revoked) < METER_MAX_REVOKED &&
		     sw_strmap_set(m->pushed_revoked, s, (void *)1))) {
			sw_seterr(err, errlen, "out of memory");
			rc = SW_ENOMEM;
			goto out;
		}
		n++;
	}
	m->push_seq++;
	if (n)
		sw_info("the site server revoked %zu certificate%s: refused from now on", n,
			n == 1 ? "" : "s");
out:
	json_decref(j);
	return rc;
}

static void keep_pushed(const char *serial, void *value, void *arg)
{
	struct meter *m = arg;

	(void)value;
	if (m->table->revoked)
		sw_strmap_set(m->table->revoked, serial, (void *)1);
}

/* A configuration just applied replaced the list of revoked serials: those pushed since
 * its fetch began go back in; once a fetch begun after the last push is applied, the
 * site server's list has them all. */
static void pushed_after_config(struct meter *m)
{
	if (!m->pushed_revoked)
		return;
	if (m->fetch_seq == m->push_seq) {
		sw_strmap_free(m->pushed_revoked);
		m->pushed_revoked = NULL;
		return;
	}
	if (!m->table->revoked)
		m->table->revoked = sw_strmap_new();
	sw_strmap_each(m->pushed_revoked, keep_pushed, m);
}

void sync_load_cache(struct meter *m)
{
	char path[PATH_MAX + 32], err[256];
	char *text = NULL;
	size_t len;

	snprintf(path, sizeof(path), "%s/config.json", m->data_dir);
	if (sw_file_read(path, CONFIG_MAX, &text, &len, err, sizeof(err))) {
		sw_info("no cached configuration (%s): no products until the server answers", err);
		return;
	}
	if (apply_config(m, text, len, err, sizeof(err))) {
		sw_warn("%s: ignoring the cached configuration: %s", path, err);
		free(text);
		return;
	}
	sw_info("configuration from cache: %u products", m->table->nproducts);
	m->config_text = text;
}

static void cache_work(uv_work_t *w)
{
	struct cache_job *job = w->data;

	job->rc = sw_file_write_atomic(job->path, job->text, strlen(job->text), 0600, job->err,
				       sizeof(job->err));
}

static void cache_done(uv_work_t *w, int status)
{
	struct cache_job *job = w->data;

	if (job->rc)
		sw_warn("cannot cache the configuration: %s", job->err);
	free(job->text);
	free(job);
}

/* The cache is written on the thread pool: the loop never waits for a disk. */
static void cache_write(struct meter *m, const char *text)
{
	struct cache_job *job = calloc(1, sizeof(*job));

	if (!job || !(job->text = strdup(text))) {
		free(job);
		return;
	}
	snprintf(job->path, sizeof(job->path), "%s/config.json", m->data_dir);
	job->work.data = job;
	if (uv_queue_work(m->loop, &job->work, cache_work, cache_done)) {
		free(job->text);
		free(job);
	}
}

static void fetch_config(uv_timer_t *t);

static void on_config(const struct sw_http_result *res, void *arg)
{
	struct meter *m = arg;
	char err[256], why[300];

	m->config_in_flight = 0;
	if (m->stopping)
		return;
	if (m->config_again) {
		/* the site server changed products while this fetch was on its way */
		m->config_again = 0;
		uv_timer_start(&m->config_timer, fetch_config, 0,
			       uv_timer_get_repeat(&m->config_timer));
	}
	if (res->status != 200) {
		if (res->status)
			snprintf(why, sizeof(why), "HTTP %ld %.200s", res->status, res->body);
		else
			snprintf(why, sizeof(why), "%s", res->error);
		server_state(m, 0, "POST /v1/meter/config", why);
		return;
	}
	server_state(m, 1, NULL, NULL);
	if (m->config_text && strcmp(m->config_text, res->body) == 0)
		return;
	if (apply_config(m, res->body, res->len, err, sizeof(err))) {
		sw_warn("site server sent a configuration the meter refuses: %s", err);
		return;
	}
	pushed_after_config(m);
	sw_info("configuration from the site server: %u products, lease ttl %lld ms",
		m->table->nproducts, (long long)m->table->ttl_ms);
	/* the site server sets how often shares are worked out */
	if (m->poll_ms && uv_timer_get_repeat(&m->config_timer) != (uint64_t)m->poll_ms)
		uv_timer_start(&m->config_timer, fetch_config, (uint64_t)m->poll_ms,
			       (uint64_t)m->poll_ms);
	free(m->config_text);
	m->config_text = strdup(res->body);
	if (m->config_text)
		cache_write(m, m->config_text);
}

static void fetch_config(uv_timer_t *t)
{
	struct meter *m = t->data;
	char url[400];

	if (m->config_in_flight || m->stopping)
		return;
	/* What this server has of each product, from which the site server works out
	 * every server's share by demand. */
	json_t *report = json_object();
	for (struct product *p = m->table->products; p; p = p->next)
		if (!p->removed)
			lease_pools_report(m->table, p, report);
	json_t *msg = json_pack("{so}", "products", report);
	char *body = msg ? sw_json_dump(msg) : NULL;
	json_decref(msg);
	snprintf(url, sizeof(url), "%s/v1/meter/config", m->server);
	if (body && sw_http_client_request(m->client, "POST", url, body, strlen(body),
					   REQUEST_TIMEOUT_MS, on_config, m) == 0) {
		m->config_in_flight = 1;
		m->fetch_seq = m->push_seq;
	}
	free(body);
}

static void upload(uv_timer_t *t);

/* The server refused a batch for its content (400): a record in it that it will never
 * take must not hold back the others. Batches are halved until that record goes alone;
 * then it is kept aside in usage-rejected.jsonl, with the reason in the log, and
 * dropped from the journal. */
static void refused(struct meter *m, const struct sw_http_result *res)
{
	size_t n = m->uploading.n;

	if (n > 1) {
		m->upload_batch = n / 2;
		sw_warn("the site server refused %zu usage records (%.200s); sending %zu at a "
			"time to find the one it refuses",
			n, res->body, m->upload_batch);
		lease_usage_done(m->table, &m->uploading, 0);
	} else {
		char path[PATH_MAX + 32];
		/* the one record: the array without its brackets */
		const char *line = m->uploading.json + 1;
		size_t len = m->uploading.len - 2;
		int fd;

		snprintf(path, sizeof(path), "%s/usage-rejected.jsonl", m->data_dir);
		fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
		if (fd < 0 || write(fd, line, len) < 0 || write(fd, "\n", 1) < 0 ||
		    fdatasync(fd) < 0) {
			/* not kept: it stays in the journal, and is tried again later */
			sw_err("%s: %s; the refused usage record stays queued", path,
			       strerror(errno));
			lease_usage_done(m->table, &m->uploading, 0);
		} else {
			sw_warn("the site server refuses a usage record for good (%.200s); kept "
				"aside in %s",
				res->body, path);
			lease_usage_done(m->table, &m->uploading, 1);
		}
		if (fd >= 0)
			close(fd);
	}
	usage_batch_cleanup(&m->uploading);
	uv_timer_start(&m->upload_timer, upload, 0, UPLOAD_INTERVAL_MS);
}

static void on_upload(const struct sw_http_result *res, void *arg)
{
	struct meter *m = arg;
	json_t *j = NULL;
	int64_t accepted = 0, duplicates = 0;
	char why[300];
	int ok = 0;

	m->upload_in_flight = 0;
	if (res->status == 200 && sw_json_parse_object(res->body, res->len, &j, NULL, 0) == 0 &&
	    sw_json_int(j, "accepted", 0, INT64_MAX, 1, &accepted, NULL, 0) == 0 &&
	    sw_json_int(j, "duplicates", 0, INT64_MAX, 0, &duplicates, NULL, 0) == 0)
		ok = 1;
	json_decref(j);
	if (m->uploading.n && !ok && res->status == 400 && !m->stopping) {
		refused(m, res);
		return;
	}
	if (m->uploading.n) {
		if (ok)
			sw_debug("uploaded %zu usage records (%lld new, %lld duplicates)",
				 m->uploading.n, (long long)accepted, (long long)duplicates);
		lease_usage_done(m->table, &m->uploading, ok);
		usage_batch_cleanup(&m->uploading);
	}
	if (ok && m->upload_batch < METER_UPLOAD_BATCH)
		m->upload_batch = m->upload_batch * 2 < METER_UPLOAD_BATCH ? m->upload_batch * 2
									   : METER_UPLOAD_BATCH;
	if (m->stopping)
		return;
	if (!ok) {
		if (res->status)
			snprintf(why, sizeof(why), "HTTP %ld %.200s", res->status, res->body);
		else
			snprintf(why, sizeof(why), "%s", res->error);
		server_state(m, 0, "POST /v1/usage", why);
		return;
	}
	server_state(m, 1, NULL, NULL);
	/* A backlog (the server was away, or a busy meter) drains batch after batch, not
	 * one per interval; what is left of a batch waits for the tick or the interval, so a
	 * busy meter does not send a trickle of uploads of a record or two, each a
	 * transaction on the site server. */
	if (m->table->nusage >= m->upload_batch)
		uv_timer_start(&m->upload_timer, upload, 0, UPLOAD_INTERVAL_MS);
}

static void on_usage_durable(void *arg, int rc)
{
	struct meter *m = arg;

	m->upload_waiting = 0;
	/* called at once when nothing was pending: then the interval decides, no spin */
	if (rc == 0 && !m->in_upload && !m->stopping && !m->upload_in_flight)
		uv_timer_start(&m->upload_timer, upload, 0, UPLOAD_INTERVAL_MS);
}

static void upload(uv_timer_t *t)
{
	struct meter *m = t->data;
	struct usage_batch b;
	char url[400], head[64], *body = NULL;
	size_t hlen;

	if (m->upload_in_flight || m->stopping)
		return;
	if (!lease_usage_take(m->table, journal_durable_seq(m->journal), m->upload_batch, &b)) {
		/* Usage pending but not yet durable (a compaction renumbers it): upload as
		 * soon as the journal has it on disk, not at the next interval. */
		if (m->table->nusage > 0 && !m->upload_waiting) {
			m->in_upload = 1;
			m->upload_waiting = 1; /* the callback, even an immediate one, clears it */
			if (journal_wait(m->journal, on_usage_durable, m))
				m->upload_waiting = 0;
			m->in_upload = 0;
		}
		return;
	}
	/* {"now":N,"records":[...]}, the array being the records' own texts joined */
	hlen = (size_t)snprintf(head, sizeof(head),
				"{\"now\":%lld,\"records\":", (long long)sw_now_ms());
	body = malloc(hlen + b.len + 2);
	if (body) {
		memcpy(body, head, hlen);
		memcpy(body + hlen, b.json, b.len);
		memcpy(body + hlen + b.len, "}", 2);
	}
	snprintf(url, sizeof(url), "%s/v1/usage", m->server);
	if (body && sw_http_client_request(m->client, "POST", url, body, hlen + b.len + 1,
					   REQUEST_TIMEOUT_MS, on_upload, m) == 0) {
		m->upload_in_flight = 1;
		m->uploading = b;
	} else {
		lease_usage_done(m->table, &b, 0);
		usage_batch_cleanup(&b);
	}
	free(body);
}

void sync_usage_tick(struct meter *m)
{
	/* A busy meter makes a batch in well under the interval: send it now rather than
	 * let the journal and memory fill with records nobody has. A server that is away
	 * is left to the interval. */
	if (!m->client || m->stopping || m->upload_in_flight || m->upload_waiting ||
	    !m->server_reachable || m->table->nusage < METER_UPLOAD_BATCH)
		return;
	uv_timer_start(&m->upload_timer, upload, 0, UPLOAD_INTERVAL_MS);
}

void sync_refresh(struct meter *m)
{
	if (!m->client || m->stopping)
		return;
	if (m->config_in_flight)
		m->config_again = 1;
	else
		uv_timer_start(&m->config_timer, fetch_config, 0,
			       uv_timer_get_repeat(&m->config_timer));
}

int sync_start(struct meter *m, char *err, size_t errlen)
{
	struct sw_http_client_opts o = {.ca_file = m->ca_file,
					.cert_file = m->cert_file,
					.key_file = m->key_file,
					.connect_timeout_ms = CONNECT_TIMEOUT_MS,
					.peer_role = SW_PKI_ROLE_SERVER};
	int rc;

	if ((rc = sw_http_client_new(m->loop, &o, &m->client))) {
		sw_seterr(err, errlen, "cannot start the HTTP client: %s", sw_strerror(rc));
		return rc;
	}
	m->server_reachable = 1;
	m->upload_batch = METER_UPLOAD_BATCH;
	uv_timer_init(m->loop, &m->config_timer);
	uv_timer_init(m->loop, &m->upload_timer);
	m->config_timer.data = m->upload_timer.data = m;
	uv_timer_start(&m->config_timer, fetch_config, 0,
		       m->poll_ms ? (uint64_t)m->poll_ms : CONFIG_INTERVAL_MS);
	uv_timer_start(&m->upload_timer, upload, UPLOAD_INTERVAL_MS, UPLOAD_INTERVAL_MS);
	return 0;
}

void sync_stop(struct meter *m)
{
	if (!m->client)
		return;
	uv_timer_stop(&m->config_timer);
	uv_timer_stop(&m->upload_timer);
	uv_close((uv_handle_t *)&m->config_timer, NULL);
	uv_close((uv_handle_t *)&m->upload_timer, NULL);
	/* Cancels the calls in flight; their callbacks put records back as pending. */
	sw_http_client_free(m->client);
	m->client = NULL;
	free(m->config_text);
	m->config_text = NULL;
	sw_strmap_free(m->pushed_revoked);
	m->pushed_revoked = NULL;
}
