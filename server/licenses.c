/*
 * Who holds which license across the site, and taking licenses back. Each request goes
 * to every metering server at once, each with its own deadline; a server that does not
 * answer within it is named in the answer, never waited for longer.
 */
#include "server.h"

#include "error.h"
#include "json.h"
#include "log.h"
#include "product.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FANOUT_DEFAULT_MS 3000
#define FANOUT_MIN_MS	  100
#define FANOUT_MAX_MS	  30000

struct fanout;

struct leg {
	struct fanout *f;
	size_t i;
};

struct fanout {
	struct server *s;
	struct sw_http_req *req;
	int reclaim;
	json_t *names;	  /* the metering servers asked, by system name */
	json_t **answers; /* per server: its answer, or NULL */
	char (*errors)[256];
	int64_t *ms;
	struct leg *legs;
	size_t n, pending;
	int64_t t0;
	char outcome[256]; /* a reclaim's, for the audit log */
};

static void fanout_free(struct fanout *f)
{
	for (size_t i = 0; i < f->n; i++)
		json_decref(f->answers[i]);
	json_decref(f->names);
	free(f->answers);
	free(f->errors);
	free(f->ms);
	free(f->legs);
	free(f);
}

static int by_product_then_time(const void *a, const void *b)
{
	const json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
	int c = strcmp(json_string_value(json_object_get(x, "product")),
		       json_string_value(json_object_get(y, "product")));
	json_int_t tx = json_integer_value(json_object_get(x, "granted_at")) +
			json_integer_value(json_object_get(x, "since"));
	json_int_t ty = json_integer_value(json_object_get(y, "granted_at")) +
			json_integer_value(json_object_get(y, "since"));

	return c ? c : (tx > ty) - (tx < ty);
}

/* `key` of every answer, each element tagged with the server that holds it and its
 * products given back in order, then by time. */
static json_t *gather(struct fanout *f, const char *key)
{
	json_t *out = json_array(), *v;
	json_t **all = NULL;
	size_t n = 0, cap = 0, i;

	for (size_t k = 0; out && k < f->n; k++) {
		json_t *arr = json_object_get(f->answers[k], key);

		json_array_foreach(arr, i, v)
		{
			if (!json_is_object(v) || !json_is_string(json_object_get(v, "product")))
				continue;
			if (n == cap) {
				json_t **m = realloc(all, (cap = cap ? 2 * cap : 256) * sizeof(*m));
				if (!m)
					goto fail;
				all = m;
			}
			json_object_set(v, "server", json_array_get(f->names, k));
			all[n++] = v;
		}
	}
	if (n)
		qsort(all, n, sizeof(*all), by_product_then_time);
	for (i = 0; out && i < n; i++)
		if (json_array_append(out, all[i]))
			goto fail;
	free(all);
	return out;
fail:
	free(all);
	json_decref(out);
	return NULL;
}

/* --- loans written off --- */

struct wo_job {
	char lease[33], system[64], product[64];
	int64_t until_ms;
	char err[256];
	int rc;
};

static void wo_store(struct sw_db *db, void *arg)
{
	struct wo_job *j = arg;
	struct sw_db_val v[] = {SW_DB_TEXT(j->lease), SW_DB_TEXT(j->system), SW_DB_TEXT(j->product),
				SW_DB_INT(j->until_ms), SW_DB_INT(sw_now_ms())};

	/* the ended ones go as a new one comes: the table holds loans that still run */
	j->rc = sw_db_exec(db, "DELETE FROM written_off WHERE until_ms < ?", v + 4, 1, NULL, NULL,
			   NULL, j->err, sizeof(j->err));
	if (!j->rc)
		j->rc = sw_db_exec(db,
				   "INSERT INTO written_off (lease, system, product, until_ms) "
				   "VALUES (?, ?, ?, ?) ON CONFLICT (lease) DO NOTHING",
				   v, 4, NULL, NULL, NULL, j->err, sizeof(j->err));
}

static void wo_stored(struct server *s, void *arg)
{
	struct wo_job *j = arg;

	(void)s;
	if (j->rc)
		sw_warn("loan %s written off, but not stored (%s): %s is told until the site "
			"server restarts, and by its license server until the loan ends",
			j->lease, j->err, j->system);
	free(j);
}

static int wo_add(struct server *s, const char *lease, const char *system, int64_t until_ms)
{
	struct written_off *w = sw_strmap_get(s->written_off, lease);

	if (w)
		return 0;
	if (!(w = calloc(1, sizeof(*w))))
		return SW_ENOMEM;
	snprintf(w->system, sizeof(w->system), "%s", system);
	w->until_ms = until_ms;
	if (sw_strmap_set(s->written_off, lease, w)) {
		free(w);
		return SW_ENOMEM;
	}
	return 0;
}

/* Each loan among what a reclaim took back, remembered and stored. */
static void written_off_add(struct server *s, const json_t *items)
{
	const json_t *o;
	size_t i;

	json_array_foreach(items, i, o)
	{
		const char *lease = json_string_value(json_object_get(o, "lease"));
		const char *host = json_string_value(json_object_get(o, "host"));
		const char *product = json_string_value(json_object_get(o, "product"));
		json_int_t until = json_integer_value(json_object_get(o, "borrowed_until"));
		struct wo_job *j;

		if (!lease || !host || !product || until <= 0 || strlen(lease) != 32 ||
		    !sw_name_valid(host) || wo_add(s, lease, host, until))
			continue;
		if (!(j = calloc(1, sizeof(*j))))
			continue;
		snprintf(j->lease, sizeof(j->lease), "%s", lease);
		snprintf(j->system, sizeof(j->system), "%s", host);
		snprintf(j->product, sizeof(j->product), "%.63s", product);
		j->until_ms = until;
		if (dbq_push(s, 0, wo_store, wo_stored, j))
			free(j);
	}
}

static int wo_row(void *arg, int ncols, const struct sw_db_val *row)
{
	(void)ncols;
	return wo_add(arg, row[0].s, row[1].s, row[2].i);
}

int licenses_load(struct server *s, char *err, size_t errlen)
{
	struct sw_db_val now[] = {SW_DB_INT(sw_now_ms())};

	if (!(s->written_off = sw_strmap_new()))
		return SW_ENOMEM;
	return sw_db_exec(s->db,
			  "SELECT lease, system, until_ms FROM written_off WHERE until_ms >= ?",
			  now, 1, wo_row, s, NULL, err, errlen);
}

static void wo_free(const char *key, void *value, void *arg)
{
	(void)key, (void)arg;
	free(value);
}

void licenses_free(struct server *s)
{
	if (s->written_off)
		sw_strmap_each(s->written_off, wo_free, NULL);
	sw_strmap_free(s->written_off);
	s->written_off = NULL;
}

struct wo_collect {
	const char *system;
	int64_t now;
	json_t *out;
};

static void wo_collect(const char *key, void *value, void *arg)
{
	const struct written_off *w = value;
	struct wo_collect *c = arg;

	if (w->until_ms < c->now || strcmp(w->system, c->system) != 0)
		return;
	if (!c->out)
		c->out = json_array();
	json_array_append_new(c->out, json_string(key));
}

json_t *licenses_written_off(struct server *s, const char *system)
{
	struct wo_collect c = {system, sw_now_ms(), NULL};

	if (s->written_off && sw_strmap_count(s->written_off))
		sw_strmap_each(s->written_off, wo_collect, &c);
	return c.out;
}

static void finish(struct fanout *f)
{
	json_t *servers = json_array(), *unreachable = json_array(), *items, *reply;
	size_t total = 0;

	for (size_t i = 0; servers && unreachable && i < f->n; i++) {
		const char *name = json_string_value(json_array_get(f->names, i));
		json_t *o = json_pack("{ss ss sI}", "system", name, "state",
				      f->answers[i] ? "answered" : "unreachable", "ms",
				      (json_int_t)f->ms[i]);

		if (!f->answers[i]) {
			json_object_set_new(o, "error", json_string(f->errors[i]));
			json_array_append_new(unreachable, json_string(name));
		}
		json_array_append_new(servers, o);
	}
	items = gather(f, f->reclaim ? "reclaimed" : "leases");
	if (!servers || !unreachable || !items) {
		sw_http_reply_error(f->req, 500, "out of memory");
		goto out;
	}
	total = json_array_size(items);
	reply = json_pack("{sO sO sI}", "servers", servers, "unreachable", unreachable,
			  "elapsed_ms", (json_int_t)(sw_mono_ms() - f->t0));
	if (f->reclaim) {
		written_off_add(f->s, items);
		json_object_set(reply, "reclaimed", items);
		json_object_set_new(reply, "outcome",
				    json_sprintf("%s: %zu license%s taken back%s", f->outcome,
						 total, total == 1 ? "" : "s",
						 json_array_size(unreachable)
						     ? " (some metering servers did not answer)"
						     : ""));
	} else {
		json_t *queue = gather(f, "queue");

		json_object_set(reply, "leases", items);
		json_object_set_new(reply, "queue", queue ? queue : json_array());
	}
	sw_http_reply_json(f->req, 200, reply);
out:
	json_decref(servers);
	json_decref(unreachable);
	json_decref(items);
	fanout_free(f);
}

static void on_answer(const struct sw_http_result *res, void *arg)
{
	struct leg *leg = arg;
	struct fanout *f = leg->f;
	size_t i = leg->i;
	char why[256];

	f->ms[i] = sw_mono_ms() - f->t0;
	if (res->status == 200 &&
	    sw_json_parse_object(res->body, res->len, &f->answers[i], why, sizeof(why)) == 0) {
		/* answered */
	} else if (res->status) {
		json_t *e = NULL;

		if (sw_json_parse_object(res->body, res->len, &e, why, sizeof(why)) == 0 &&
		    json_is_string(json_object_get(e, "error")))
			snprintf(f->errors[i], sizeof(f->errors[i]), "HTTP %ld: %s", res->status,
				 json_string_value(json_object_get(e, "error")));
		else
			snprintf(f->errors[i], sizeof(f->errors[i]), "HTTP %ld", res->status);
		json_decref(e);
	} else {
		snprintf(f->errors[i], sizeof(f->errors[i]), "%s", res->error);
	}
	if (!f->answers[i])
		sw_info("license %s: metering server %s: %s", f->reclaim ? "reclaim" : "status",
			json_string_value(json_array_get(f->names, i)), f->errors[i]);
	if (--f->pending == 0)
		finish(f);
}

/* Asks every metering server `path` (with `body` for a POST, a reclaim whose audit
 * `outcome` begins so) at once. */
static void fanout_start(struct server *s, struct sw_http_req *req, int reclaim, const char *path,
			 const char *body, const char *outcome)
{
	const char *t = sw_http_req_query(req, "timeout_ms");
	int64_t timeout = FANOUT_DEFAULT_MS;
	struct fanout *f;
	json_t *urls, *names;

	if (t && sw_int_parse(t, FANOUT_MIN_MS, FANOUT_MAX_MS, &timeout)) {
		sw_http_reply_error(req, 400, "timeout_ms must be %d to %d", FANOUT_MIN_MS,
				    FANOUT_MAX_MS);
		return;
	}
	urls = metering_meter_urls(s, &names);
	f = calloc(1, sizeof(*f));
	if (!f || !urls || !names)
		goto oom;
	f->s = s;
	f->req = req;
	f->reclaim = reclaim;
	f->names = names;
	names = NULL;
	f->n = json_array_size(urls);
	f->t0 = sw_mono_ms();
	if (outcome)
		snprintf(f->outcome, sizeof(f->outcome), "%s", outcome);
	if (f->n == 0) {
		json_decref(urls);
		finish(f);
		return;
	}
	f->answers = calloc(f->n, sizeof(*f->answers));
	f->errors = calloc(f->n, sizeof(*f->errors));
	f->ms = calloc(f->n, sizeof(*f->ms));
	f->legs = calloc(f->n, sizeof(*f->legs));
	if (!f->answers || !f->errors || !f->ms || !f->legs)
		goto oom;
	f->pending = f->n;
	for (size_t i = 0; i < f->n; i++) {
		char url[600];

		f->legs[i] = (struct leg){f, i};
		snprintf(url, sizeof(url), "%s%s", json_string_value(json_array_get(urls, i)),
			 path);
		if (sw_http_client_request_to(
			s->agents, json_string_value(json_array_get(f->names, i)),
			reclaim ? "POST" : "GET", url, body, body ? strlen(body) : 0,
			(unsigned)timeout, on_answer, &f->legs[i])) {
			struct sw_http_result res = {.status = 0};

			snprintf(res.error, sizeof(res.error), "out of memory");
			on_answer(&res, &f->legs[i]);
		}
	}
	json_decref(urls);
	return;
oom:
	json_decref(urls);
	json_decref(names);
	if (f)
		fanout_free(f);
	sw_http_reply_error(req, 500, "out of memory");
}

/* GET /v1/licenses[?product=P][&timeout_ms=N] */
void licenses_get(struct sw_http_req *req, void *arg)
{
	const char *product = sw_http_req_query(req, "product");
	char path[128] = "/v1/leases";

	if (product && *product) {
		if (!sw_name_valid(product)) {
			sw_http_reply_error(req, 400, "product must be a product's name");
			return;
		}
		snprintf(path, sizeof(path), "/v1/leases?product=%s", product);
	}
	fanout_start(arg, req, 0, path, NULL, NULL);
}

static int printable(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return 0;
	return 1;
}

static int printable_field(const json_t *j, const char *key, size_t max, const char **out,
			   char *err, size_t errlen)
{
	int rc;

	if ((rc = sw_json_str(j, key, max, 0, out, err, errlen)))
		return rc;
	if (*out && (!**out || !printable(*out))) {
		sw_seterr(err, errlen, "field '%s' must be a name", key);
		return SW_EINVAL;
	}
	return 0;
}

/* POST /v1/licenses/reclaim {lease | user | host, product}: every license in use that
 * matches is taken back where it is held, and its client told at its next heartbeat. */
void licenses_reclaim(struct sw_http_req *req, void *arg)
{
	static const char *const known[] = {"lease", "user", "host", "product", NULL};
	const struct sw_identity *id = sw_http_req_identity(req);
	const char *lease = NULL, *user = NULL, *host = NULL, *product = NULL, *key;
	char err[256];
	json_t *j, *v, *body = NULL;
	char *text = NULL;

	if (!(j = sw_http_req_json(req)))
		return;
	json_object_foreach(j, key, v)
	{
		size_t i;

		for (i = 0; known[i] && strcmp(known[i], key) != 0; i++)
			;
		if (!known[i]) {
			sw_http_reply_error(req, 400, "unknown field '%.64s'", key);
			goto out;
		}
	}
	if (printable_field(j, "lease", 32, &lease, err, sizeof(err)) ||
	    printable_field(j, "user", 64, &user, err, sizeof(err)) ||
	    printable_field(j, "host", 127, &host, err, sizeof(err)) ||
	    printable_field(j, "product", SW_PRODUCT_NAME_MAX, &product, err, sizeof(err))) {
		sw_http_reply_error(req, 400, "%s", err);
		goto out;
	}
	if (lease && (strlen(lease) != 32 || strspn(lease, "0123456789abcdef") != 32)) {
		sw_http_reply_error(req, 400,
				    "a lease is 32 lowercase hex digits, as "
				    "'siteward license status' shows it");
		goto out;
	}
	if (!lease && !user && !host) {
		sw_http_reply_error(req, 400, "name a lease, a user or a host to reclaim");
		goto out;
	}
	body = json_pack("{ss}", "by", id ? id->cn : "");
	if (lease)
		json_object_set_new(body, "lease", json_string(lease));
	if (user)
		json_object_set_new(body, "user", json_string(user));
	if (host)
		json_object_set_new(body, "host", json_string(host));
	if (product)
		json_object_set_new(body, "product", json_string(product));
	if (!body || !(text = sw_json_dump(body))) {
		sw_http_reply_error(req, 500, "out of memory");
		goto out;
	}
	/* the outcome names what was asked for; finish() adds what was taken */
	snprintf(err, sizeof(err), "reclaim%s%s%s%s%s%s%s%s", lease ? " lease " : "",
		 lease ? lease : "", user ? " user " : "", user ? user : "", host ? " host " : "",
		 host ? host : "", product ? " of " : "", product ? product : "");
	fanout_start(arg, req, 1, "/v1/reclaim", text, err);
out:
	free(text);
	json_decref(body);
	json_decref(j);
}
