/*
 * The meter's API. A grant, a check-in or a denial is answered only once its journal
 * record is on disk: the handler returns with the request suspended, and the journal's
 * flush replies. A checkout that may wait joins its product's queue and is answered
 * when a license is given to it or when its wait is over (long-poll).
 */
#include "meter.h"

#include "borrow.h"

#include "error.h"
#include "json.h"
#include "log.h"
#include "pki.h"
#include "strmap.h"
#include "ticket.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "version.h"

/* A request answered later: after its journal record is durable, or a queued checkout. */
struct call {
	struct call *prev, *next; /* in m->calls while queued */
	struct meter *m;
	struct sw_http_req *req;
	unsigned status;
	json_t *reply;
	struct waiter w;
	uv_timer_t timer;
	int queued, has_timer;
};

static void call_closed(uv_handle_t *h)
{
	free(h->data);
}

static void call_free(struct call *c)
{
	json_decref(c->reply);
	c->reply = NULL;
	if (c->has_timer) {
		uv_timer_stop(&c->timer);
		uv_close((uv_handle_t *)&c->timer, call_closed);
	} else {
		free(c);
	}
}

static void call_unqueue(struct call *c)
{
	struct meter *m = c->m;

	if (!c->queued)
		return;
	if (c->prev)
		c->prev->next = c->next;
	else
		m->calls = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->queued = 0;
}

static void on_durable(void *arg, int rc)
{
	struct call *c = arg;

	if (rc) {
		sw_http_reply_error(c->req, 503, "license server cannot write its journal");
	} else {
		sw_http_reply_json(c->req, c->status, c->reply);
		c->reply = NULL;
	}
	call_free(c);
}

/* Replies with `body` once everything journaled so far is on disk; takes `body`. */
static void reply_durable(struct call *c, unsigned status, json_t *body)
{
	struct meter *m = c->m;

	c->status = status;
	c->reply = body;
	if (journal_wait(m->journal, on_durable, c)) {
		sw_http_reply_error(c->req, 500, "out of memory");
		call_free(c);
	}
}

static struct call *call_new(struct meter *m, struct sw_http_req *req)
{
	struct call *c = calloc(1, sizeof(*c));

	if (!c) {
		sw_http_reply_error(req, 500, "out of memory");
		return NULL;
	}
	c->m = m;
	c->req = req;
	return c;
}

static json_t *granted_json(const struct lease_table *t, const struct lease *l)
{
	return json_pack("{sb ss ss sI}", "granted", 1, "lease", l->id, "product", l->product,
			 "ttl_ms", (json_int_t)t->ttl_ms);
}

static json_t *denied_json(const char *product, const char *reason, unsigned queue_position)
{
	json_t *j = json_pack("{sb ss ss}", "granted", 0, "product", product, "reason", reason);

	if (j && queue_position)
		json_object_set_new(j, "queue_position", json_integer(queue_position));
	return j;
}

static const char *caller(struct sw_http_req *req)
{
	const struct sw_identity *id = sw_http_req_identity(req);

	return id ? id->cn : "";
}

/* A license freed for a queued checkout. */
static void on_granted(struct waiter *w, struct lease *l)
{
	struct call *c = w->arg;

	call_unqueue(c);
	uv_timer_stop(&c->timer);
	sw_info("lease %s of %s granted to %s@%s after %lld ms in the queue", l->id, l->product,
		l->user, l->host, (long long)l->wait_ms);
	/* If the caller has gone, the lease is never renewed and simply expires. */
	reply_durable(c, 200, granted_json(c->m->table, l));
}

static void on_wait_over(uv_timer_t *t)
{
	struct call *c = t->data;
	struct meter *m = c->m;
	char reason[METER_REASON_MAX], product[METER_NAME_MAX + 1];

	call_unqueue(c);
	snprintf(product, sizeof(product), "%s", c->w.product->def.name);
	lease_waiter_cancel(m->table, &c->w, 1, sw_now_ms(), reason, sizeof(reason));
	reply_durable(c, 200, denied_json(product, reason, 0));
}

/* A ticket verified before: checking a signature on every checkout would cost more than
 * the checkout. Bounded: past this many, the memory starts again. */
#define TICKETS_KEPT 4096

struct ticket_seen {
	char user[65];
	uint32_t uid;
	char host[64];
	char signer[41]; /* the agent certificate's serial */
	int64_t expires_ms;
};

static void ticket_seen_free(const char *key, void *value, void *arg)
{
	(void)key, (void)arg;
	free(value);
}

/* The user a checkout is for. A machine's metering client (its key readable by every
 * user there) must show the user ticket its agent issued (lib/ticket.h); its agent,
 * the site server and administrators say whom they ask for. */
static int checkout_user(struct meter *m, struct sw_http_req *req, char *user, size_t usersize,
			 uint32_t *uid, char *err, size_t errlen)
{
	const struct sw_identity *id = sw_http_req_identity(req);
	const char *text = sw_http_req_header(req, SW_TICKET_HEADER);
	struct ticket_seen *seen;
	struct sw_identity signer;
	struct sw_ticket t;
	int64_t now = sw_now_ms();
	char why[300];

	if (strcmp(id->role, SW_PKI_ROLE_CLIENT) != 0)
		return 0;
	if (!text) {
		sw_seterr(err, errlen,
			  "no user ticket: siteward-run asks the machine's siteward-agent for one; "
			  "is the agent on %s running and of this version?",
			  id->cn);
		return SW_EDENIED;
	}
	if (!m->tickets_ca && sw_pki_verifier_new(m->ca_pem, &m->tickets_ca, why, sizeof(why))) {
		sw_seterr(err, errlen, "cannot check user tickets: %s", why);
		return SW_ENOMEM;
	}
	if (!m->tickets && !(m->tickets = sw_strmap_new()))
		return SW_ENOMEM;
	seen = sw_strmap_get(m->tickets, text);
	if (!seen) {
		if (sw_ticket_verify(m->tickets_ca, text, strlen(text), now, &t, &signer, why,
				     sizeof(why))) {
			sw_seterr(err, errlen, "user ticket refused: %s", why);
			return SW_EDENIED;
		}
		if (sw_strmap_count(m->tickets) >= TICKETS_KEPT) {
			sw_strmap_each(m->tickets, ticket_seen_free, NULL);
			sw_strmap_free(m->tickets);
			if (!(m->tickets = sw_strmap_new()))
				return SW_ENOMEM;
		}
		if (!(seen = calloc(1, sizeof(*seen))) || sw_strmap_set(m->tickets, text, seen)) {
			free(seen);
			return SW_ENOMEM;
		}
		snprintf(seen->user, sizeof(seen->user), "%s", t.user);
		seen->uid = t.uid;
		snprintf(seen->host, sizeof(seen->host), "%s", t.host);
		snprintf(seen->signer, sizeof(seen->signer), "%s", signer.serial);
		seen->expires_ms = t.expires_ms;
	}
	/* checked at every use: a ticket another machine's client shows is not its own */
	if (strcmp(seen->host, id->cn) != 0) {
		sw_seterr(err, errlen, "user ticket refused: it is for %s, not for %s", seen->host,
			  id->cn);
		return SW_EDENIED;
	}
	if (seen->expires_ms <= now || lease_revoked(m->table, seen->signer)) {
		sw_seterr(err, errlen, "user ticket refused: %s",
			  seen->expires_ms <= now
			      ? "expired"
			      : "its signer's certificate is revoked (its system "
				"was removed)");
		return SW_EDENIED;
	}
	snprintf(user, usersize, "%s", seen->user);
	if (uid)
		*uid = seen->uid;
	return 0;
}

void api_free(struct meter *m)
{
	if (m->tickets)
		sw_strmap_each(m->tickets, ticket_seen_free, NULL);
	sw_strmap_free(m->tickets);
	sw_pki_verifier_free(m->tickets_ca);
	m->tickets = NULL;
	m->tickets_ca = NULL;
	sw_metrics_free(m->metrics);
	m->metrics = NULL;
}

static void post_checkout(struct sw_http_req *req, void *arg)
{
	struct meter *m = arg;
	struct checkout_req r;
	struct checkout_out out;
	struct call *c = NULL;
	char err[400];
	json_t *j;
	int rc;

	if (m->stopping) {
		/* Another metering server can answer at once; a grant here would be cut. */
		sw_http_reply_error(req, 503, "license server shutting down; ask again");
		return;
	}
	if (!(j = sw_http_req_json(req)))
		return;
	if (proto_checkout_parse(j, &r, err, sizeof(err))) {
		json_decref(j);
		sw_http_reply_error(req, 400, "%s", err);
		return;
	}
	json_decref(j);
	if ((rc = checkout_user(m, req, r.user, sizeof(r.user), NULL, err, sizeof(err)))) {
		sw_info("checkout by %s refused: %s", caller(req), err);
		sw_http_reply_error(req, sw_http_status(rc), "%s", err);
		return;
	}
	if (!(c = call_new(m, req)))
		return;
	c->w.granted = on_granted;
	c->w.arg = c;
	if (lease_checkout(m->table, &r, caller(req), sw_now_ms(), sw_mono_ms(), &c->w, &out)) {
		sw_http_reply_error(req, 500, "cannot grant a lease: out of memory");
		call_free(c);
		return;
	}
	switch (out.result) {
	case CHECKOUT_NEED_VERSION:
		sw_http_reply_json(req, 200, json_pack("{sb}", "version_needed", 1));
		call_free(c);
		break;
	case CHECKOUT_UNMETERED:
		/* Without a product table yet (first start with the site server away), "not
		 * metered" could let a product run unrecorded: the client asks elsewhere or
		 * follows its offline policy instead. */
		if (!m->config_text) {
			sw_http_reply_error(req, 503,
					    "no product table yet; ask another "
					    "license server");
			call_free(c);
			break;
		}
		sw_http_reply_json(req, 200, json_pack("{sb}", "metered", 0));
		call_free(c);
		break;
	case CHECKOUT_GRANTED:
		sw_debug("lease %s of %s granted to %s@%s", out.lease->id, out.lease->product,
			 r.user, caller(req));
		reply_durable(c, 200, granted_json(m->table, out.lease));
		break;
	case CHECKOUT_DENIED:
		sw_info("checkout of %s by %s@%s denied: %s", out.product->def.name, r.user,
			caller(req), out.reason);
		reply_durable(c, 200,
			      denied_json(out.product->def.name, out.reason, out.queue_position));
		break;
	case CHECKOUT_QUEUED:
		uv_timer_init(m->loop, &c->timer);
		c->timer.data = c;
		c->has_timer = 1;
		c->queued = 1;
		c->next = m->calls;
		if (m->calls)
			m->calls->prev = c;
		m->calls = c;
		uv_timer_start(&c->timer, on_wait_over, (uint64_t)r.wait_ms, 0);
		break;
	}
}

static void post_heartbeat(struct sw_http_req *req, void *arg)
{
	struct meter *m = arg;
	struct heartbeat_req *r = NULL;
	json_t *j, *j2, *renewed = NULL, *lost = NULL, *reclaimed = NULL, *idle = NULL;
	int64_t wall = sw_now_ms(), mono = sw_mono_ms();
	char err[256];

	if (!(j = sw_http_req_json(req)))
		return;
	if (!(r = malloc(sizeof(*r)))) {
		sw_http_reply_error(req, 500, "out of memory");
		goto out;
	}
	if (proto_heartbeat_parse(j, r, err, sizeof(err))) {
		sw_http_reply_error(req, 400, "%s", err);
		goto out;
	}
	renewed = json_array();
	lost = json_array();
	reclaimed = json_array();
	idle = json_object();
	if (!renewed || !lost || !reclaimed || !idle) {
		sw_http_reply_error(req, 500, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < r->nleases; i++) {
		const char *id = r->leases[i];
		int rc = lease_renew(m->table, id, r->client, caller(req), wall, mono);
		json_t *note;
		int64_t limit;

		/* A program idle past its product's limit loses its license now, and its
		 * client is told in this answer. */
		if (!rc && r->idle_s[i] >= 0)
			lease_idle_check(m->table, id, r->idle_s[i], wall, mono);
		if ((note = lease_reclaimed_json(m->table, id, r->client))) {
			json_array_append_new(reclaimed, note);
			continue;
		}
		json_array_append_new(rc ? lost : renewed, json_string(id));
		/* the client reports its program's idleness only where it is asked to */
		if (!rc && (limit = lease_idle_limit(m->table, id)) > 0)
			json_object_set_new(idle, id, json_integer(limit));
	}
	j2 = json_pack("{sO sO sI}", "renewed", renewed, "lost", lost, "ttl_ms",
		       (json_int_t)m->table->ttl_ms);
	if (j2 && json_array_size(reclaimed))
		json_object_set(j2, "reclaimed", reclaimed);
	if (j2 && json_object_size(idle))
		json_object_set(j2, "idle_limit_s", idle);
	sw_http_reply_json(req, 200, j2);
out:
	json_decref(renewed);
	json_decref(lost);
	json_decref(reclaimed);
	json_decref(idle);
	json_decref(j);
	free(r);
}

static void post_checkin(struct sw_http_req *req, void *arg)
{
	struct meter *m = arg;
	struct checkin_req r;
	struct call *c;
	char err[256];
	json_t *j;
	int rc;

	if (!(j = sw_http_req_json(req)))
		return;
	rc = proto_checkin_parse(j, &r, err, sizeof(err));
	json_decref(j);
	if (rc) {
		sw_http_reply_error(req, 400, "%s", err);
		return;
	}
	rc = lease_checkin(m->table, r.lease, r.client, caller(req), sw_now_ms(), sw_mono_ms());
	if (rc == SW_ENOTFOUND) {
		sw_http_reply_error(req, sw_http_status(rc),
				    "no lease %s here (expired or never granted)", r.lease);
		return;
	}
	if (rc) {
		sw_http_reply_error(req, sw_http_status(rc), "lease %s belongs to another client",
				    r.lease);
		return;
	}
	if ((c = call_new(m, req)))
		reply_durable(c, 200, json_pack("{sb}", "released", 1));
}

/* A license lent out: the lease, and the text that carries it signed for offline use. */
static json_t *borrowed_json(struct meter *m, const struct lease *l, const struct product *p,
			     const struct borrow_req *r, char *err, size_t errlen)
{
	struct sw_identity me;
	struct sw_borrow b;
	char *text = NULL;
	json_t *j = NULL;

	memset(&b, 0, sizeof(b));
	if (sw_pki_cert_identity(m->cert_pem, &me, err, errlen))
		return NULL;
	/* a license server enrolled before meter certificates serves with its agent's, which
	 * a machine could not tell from another machine's: it lends nothing */
	if (strcmp(me.role, SW_PKI_ROLE_METER) != 0) {
		sw_seterr(err, errlen,
			  "this license server has no meter certificate to sign a loan with; "
			  "ask another, or renew its system's certificates");
		return NULL;
	}
	snprintf(b.lease, sizeof(b.lease), "%s", l->id);
	snprintf(b.client, sizeof(b.client), "%s", l->client);
	snprintf(b.meter, sizeof(b.meter), "%s", me.cn);
	snprintf(b.host, sizeof(b.host), "%s", l->host);
	snprintf(b.user, sizeof(b.user), "%s", l->user);
	snprintf(b.machine, sizeof(b.machine), "%s", r->machine);
	b.uid = r->uid;
	b.issued_ms = l->granted_at;
	b.expires_ms = l->borrow_until;
	b.product = p->def;
	if (sw_borrow_make(m->key_pem, m->cert_pem, &b, &text, err, errlen) == 0)
		j = json_pack("{sb ss ss sI ss}", "granted", 1, "lease", l->id, "product",
			      l->product, "expires_ms", (json_int_t)l->borrow_until, "borrow",
			      text);
	free(text);
	return j;
}

static void post_borrow(struct sw_http_req *req, void *arg)
{
	struct meter *m = arg;
	struct borrow_req r;
	struct checkout_out out;
	struct call *c;
	char err[400];
	json_t *j, *reply;
	int rc;

	if (m->stopping) {
		sw_http_reply_error(req, 503, "license server shutting down; ask again");
		return;
	}
	if (!(j = sw_http_req_json(req)))
		return;
	rc = proto_borrow_parse(j, &r, err, sizeof(err));
	json_decref(j);
	if (rc) {
		sw_http_reply_error(req, 400, "%s", err);
		return;
	}
	if ((rc = checkout_user(m, req, r.user, sizeof(r.user), &r.uid, err, sizeof(err)))) {
		sw_info("borrow by %s refused: %s", caller(req), err);
		sw_http_reply_error(req, sw_http_status(rc), "%s", err);
		return;
	}
	if (!r.user[0]) {
		sw_http_reply_error(req, 400, "a borrow names its user");
		return;
	}
	if (lease_borrow(m->table, &r, caller(req), sw_now_ms(), sw_mono_ms(), &out)) {
		sw_http_reply_error(req, 500, "cannot lend a license: out of memory");
		return;
	}
	if (out.result == CHECKOUT_UNMETERED) {
		sw_http_reply_error(req, 404, "no product %s here", r.product);
		return;
	}
	if (out.result == CHECKOUT_DENIED) {
		sw_info("borrow of %s by %s@%s denied: %s", r.product, r.user, caller(req),
			out.reason);
		if ((c = call_new(m, req)))
			reply_durable(c, 200, denied_json(out.product->def.name, out.reason, 0));
		return;
	}
	if (!(reply = borrowed_json(m, out.lease, out.product, &r, err, sizeof(err)))) {
		/* not lent after all: the license goes back at once */
		lease_checkin(m->table, out.lease->id, out.lease->client, caller(req), sw_now_ms(),
			      sw_mono_ms());
		sw_http_reply_error(req, 503, "%s", err);
		return;
	}
	sw_info("lease %s of %s lent to %s@%s until %lld", out.lease->id, out.lease->product,
		r.user, caller(req), (long long)out.lease->borrow_until);
	if ((c = call_new(m, req)))
		reply_durable(c, 200, reply);
	else
		json_decref(reply);
}

/* The holder of a borrowed license asks what became of it: lent out still, written off
 * by an administrator, or gone. */
static void post_borrow_check(struct sw_http_req *req, void *arg)
{
	static const char *const states[] = {
	    [BORROW_HELD] = "held", [BORROW_WRITTEN_OFF] = "written_off", [BORROW_GONE] = "gone"};
	struct meter *m = arg;
	struct checkin_req r;
	char err[256];
	json_t *j, *note = NULL, *reply;
	enum borrow_state st;

	if (!(j = sw_http_req_json(req)))
		return;
	if (proto_checkin_parse(j, &r, err, sizeof(err))) {
		json_decref(j);
		sw_http_reply_error(req, 400, "%s", err);
		return;
	}
	json_decref(j);
	st = lease_borrow_state(m->table, r.lease, r.client, caller(req), &note);
	reply = json_pack("{ss}", "state", states[st]);
	if (reply && note)
		json_object_set_new(reply, "reason", json_incref(json_object_get(note, "reason")));
	json_decref(note);
	sw_http_reply_json(req, 200, reply);
}

static void get_health(struct sw_http_req *req, void *arg)
{
	struct meter *m = arg;
	const char *role = sw_http_req_identity(req)->role;
	uint64_t flushes, records, max_batch;
	json_t *h, *products;

	journal_stats(m->journal, &flushes, &records, &max_batch);
	h = json_pack("{ss ss sI sI sI sI s{sI sI sI}}", "status",
		      journal_failing(m->journal) ? "degraded: cannot write the journal" : "ok",
		      "version", SW_VERSION, "uptime_ms",
		      (json_int_t)(sw_mono_ms() - m->started_ms), "leases",
		      (json_int_t)m->table->nleases, "waiting", (json_int_t)m->table->nwaiting,
		      "pending_usage", (json_int_t)m->table->nusage, "journal", "flushes",
		      (json_int_t)flushes, "records", (json_int_t)records, "max_batch",
		      (json_int_t)max_batch);
	/* each product's share here, so an administrator sees where the licenses are; not
	 * to the machines' clients, whose users may read their keys */
	if (strcmp(role, SW_PKI_ROLE_ADMIN) == 0 || strcmp(role, SW_PKI_ROLE_SERVER) == 0) {
		products = json_object();
		for (struct product *p = m->table->products; p; p = p->next)
			if (!p->removed)
				json_object_set_new(products, p->def.name,
						    json_pack("{sI sI sI}", "allotment",
							      (json_int_t)p->def.allotment,
							      "in_use", (json_int_t)p->in_use,
							      "waiting", (json_int_t)p->nwait));
		json_object_set_new(h, "products", products);
	}
	sw_http_reply_json(req, 200, h);
}

static struct sw_gauge *mx_leases, *mx_waiting, *mx_pending_usage;

int api_metrics_open(struct meter *m, char *err, size_t errlen)
{
	static const uint64_t batch[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096};
	struct sw_metrics *x = sw_metrics_new();

	if (!(m->metrics = x)) {
		sw_seterr(err, errlen, "out of memory");
		return SW_ENOMEM;
	}
	for (size_t i = 0; i < DENY_N; i++) {
		const char *const l[] = {"reason", deny_reason_names[i], NULL};

		m->table->mx_denied[i] = sw_metrics_counter(x, "siteward_meter_denials_total",
							    "Checkouts denied, by reason.", l);
	}
	mx_leases =
	    sw_metrics_gauge(x, "siteward_meter_leases", "Leases held, all products.", NULL);
	mx_waiting = sw_metrics_gauge(x, "siteward_meter_waiting",
				      "Checkouts queued for a license, all products.", NULL);
	mx_pending_usage = sw_metrics_gauge(
	    x, "siteward_meter_usage_pending",
	    "Usage records not yet accepted by the site server (waiting for upload).", NULL);
	journal_set_metrics(
	    m->journal,
	    sw_metrics_counter(x, "siteward_meter_journal_fsyncs_total",
			       "Journal writes made durable with fdatasync (appends and "
			       "compactions).",
			       NULL),
	    sw_metrics_histogram(x, "siteward_meter_journal_records_per_fsync",
				 "Records each journal append carried to disk in one fdatasync "
				 "(group commit).",
				 NULL, batch, SW_ARRAY_LEN(batch), 1));
	if (sw_metrics_error(x)) {
		sw_seterr(err, errlen, "metrics: %s", sw_metrics_error(x));
		return SW_EINVAL;
	}
	return 0;
}

/* Products are this scrape's own series: the table changes with the configuration,
 * and holds at most SW_PRODUCT_MAX of them. */
static int products_render(const struct meter *m, char **text, size_t *len)
{
	struct sw_metrics *x = sw_metrics_new();
	int rc;

	if (!x)
		return SW_ENOMEM;
	for (struct product *p = m->table->products; p; p = p->next) {
		const char *const l[] = {"product", p->def.name, NULL};

		if (p->removed)
			continue;
		sw_gauge_set(sw_metrics_gauge(x, "siteward_meter_licenses",
					      "Licenses of each product this license server holds "
					      "(its share of the site's).",
					      l),
			     p->def.allotment);
		sw_gauge_set(sw_metrics_gauge(x, "siteward_meter_licenses_site",
					      "Licenses of each product in the whole site.", l),
			     p->def.licenses);
		sw_gauge_set(sw_metrics_gauge(x, "siteward_meter_leases_in_use",
					      "Leases in use, by product.", l),
			     p->in_use);
		sw_gauge_set(sw_metrics_gauge(x, "siteward_meter_queue_length",
					      "Checkouts queued for a license, by product.", l),
			     p->nwait);
	}
	rc = sw_metrics_error(x) ? SW_ENOMEM : sw_metrics_render(x, text, len);
	sw_metrics_free(x);
	return rc;
}

static void get_metrics(struct sw_http_req *req, void *arg)
{
	struct meter *m = arg;
	char *text = NULL, *more = NULL, *all;
	size_t len, more_len;

	sw_gauge_set(mx_leases, (int64_t)m->table->nleases);
	sw_gauge_set(mx_waiting, (int64_t)m->table->nwaiting);
	sw_gauge_set(mx_pending_usage, (int64_t)m->table->nusage);
	if (sw_metrics_render(m->metrics, &text, &len) || products_render(m, &more, &more_len) ||
	    !(all = realloc(text, len + more_len + 1))) {
		free(text);
		free(more);
		sw_http_reply_error(req, 500, "out of memory");
		return;
	}
	memcpy(all + len, more, more_len + 1);
	free(more);
	sw_http_reply_text(req, 200, SW_METRICS_CONTENT_TYPE, all);
}

static void get_leases(struct sw_http_req *req, void *arg)
{
	struct meter *m = arg;
	const char *product = sw_http_req_query(req, "product");
	json_t *j = lease_list_json(m->table, product && *product ? product : NULL, sw_now_ms(),
				    sw_mono_ms());

	if (!j) {
		sw_http_reply_error(req, 500, "out of memory");
		return;
	}
	json_object_set_new(j, "now", json_integer(sw_now_ms()));
	sw_http_reply_json(req, 200, j);
}

/* An administrator's reclaim, through the site server: the leases are released and
 * journaled before the answer, and each client is told at its next heartbeat. */
static void post_reclaim(struct sw_http_req *req, void *arg)
{
	struct meter *m = arg;
	struct reclaim_req r;
	struct call *c;
	char err[256];
	json_t *j, *out;
	int rc;

	if (!(j = sw_http_req_json(req)))
		return;
	rc = proto_reclaim_parse(j, &r, err, sizeof(err));
	json_decref(j);
	if (rc) {
		sw_http_reply_error(req, 400, "%s", err);
		return;
	}
	if (!(out = json_array())) {
		sw_http_reply_error(req, 500, "out of memory");
		return;
	}
	lease_reclaim(m->table, &r, sw_now_ms(), sw_mono_ms(), out);
	if ((c = call_new(m, req)))
		reply_durable(c, 200, json_pack("{so}", "reclaimed", out));
	else
		json_decref(out);
}

/* The site server's push: products changed, or certificates were revoked. */
static void post_refresh(struct sw_http_req *req, void *arg)
{
	char err[160];
	size_t len;
	const char *body = sw_http_req_body(req, &len);

	if (sync_revoked(arg, body, len, err, sizeof(err))) {
		sw_http_reply_error(req, 400, "%s", err);
		return;
	}
	sync_refresh(arg);
	sw_http_reply_json(req, 202, json_object());
}

/* Metering clients hold a 'client' certificate of their machine, or its agent's. */
#define ANY_SITE_CERT (SW_HTTP_ADMIN | SW_HTTP_AGENT | SW_HTTP_SERVER | SW_HTTP_CLIENT)

const struct sw_http_route api_routes[] = {
    {"GET", "/v1/health", ANY_SITE_CERT, get_health, 0},
    {"GET", "/v1/leases", SW_HTTP_ADMIN | SW_HTTP_SERVER, get_leases, 0},
    {"POST", "/v1/config/refresh", SW_HTTP_SERVER, post_refresh, 0},
    {"POST", "/v1/reclaim", SW_HTTP_SERVER, post_reclaim, METER_MAX_BODY},
    {"POST", "/v1/checkout", ANY_SITE_CERT, post_checkout, METER_MAX_BODY},
    {"POST", "/v1/heartbeat", ANY_SITE_CERT, post_heartbeat, METER_MAX_BODY},
    {"POST", "/v1/checkin", ANY_SITE_CERT, post_checkin, METER_MAX_BODY},
    {"POST", "/v1/borrow", ANY_SITE_CERT, post_borrow, METER_MAX_BODY},
    {"POST", "/v1/borrow/check", ANY_SITE_CERT, post_borrow_check, METER_MAX_BODY},
    {"GET", "/metrics", SW_HTTP_ADMIN | SW_HTTP_SERVER | SW_HTTP_SCRAPE, get_metrics, 0},
};
const size_t api_nroutes = SW_ARRAY_LEN(api_routes);

void api_shutdown(struct meter *m)
{
	while (m->calls) {
		struct call *c = m->calls;

		call_unqueue(c);
		lease_waiter_cancel(m->table, &c->w, 0, sw_now_ms(), NULL, 0);
		sw_http_reply_error(c->req, 503, "license server shutting down; ask again");
		call_free(c);
	}
}
